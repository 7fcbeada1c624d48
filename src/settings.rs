//! Daemon settings: `liveconf.toml` overlaid by command-line flags.
//!
//! Every option can come from the file; a flag given on the command line
//! always wins. Relative paths in the file are relative to the file's own
//! directory; relative paths on the command line, to the working directory.
//! Unknown keys in the file are an error naming the file and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::resource::{Wait, parse_duration, toml_error};

/// Where things live when nothing says otherwise.
pub const DEFAULT_CONFDIR: &str = "/etc/liveconf";
/// Default state directory (status.json).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/liveconf";
/// Default coalescing window: long enough to fold a conftool batch of puts
/// into one render, short enough that a single put shows within a second.
pub const DEFAULT_WAIT: Wait = Wait {
    min: Duration::from_millis(100),
    max: Duration::from_secs(1),
};
/// Default period of the resync safety net.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(600);

/// A settings problem.
#[derive(Debug, thiserror::Error)]
#[error("{where_}: {message}")]
pub struct SettingsError {
    /// The file, or "command line".
    pub where_: String,
    /// What is wrong.
    pub message: String,
}

/// Which backend serves keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// etcd v3.
    #[default]
    Etcd,
    /// YAML/JSON/TOML key files.
    File,
}

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// One layer of settings (the file, or the flags): everything optional.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub confdir: Option<PathBuf>,
    pub backend: Option<BackendKind>,
    pub endpoints: Option<Vec<String>>,
    pub srv_domain: Option<String>,
    pub srv_record: Option<String>,
    pub dns_server: Option<SocketAddr>,
    pub prefix: Option<String>,
    pub file: Option<Vec<PathBuf>>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub metrics_addr: Option<SocketAddr>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    pub wait: Option<String>,
    pub node_name: Option<String>,
    pub resync_interval: Option<String>,
    pub watch_confdir: Option<bool>,
    pub report: Option<bool>,
    pub report_ttl: Option<String>,
    pub reload_splay: Option<String>,
    pub connect_timeout: Option<String>,
    pub request_timeout: Option<String>,
    pub max_output_bytes: Option<usize>,
}

macro_rules! overlay {
    ($base:ident, $top:ident, $($f:ident),*) => { $( if $top.$f.is_some() { $base.$f = $top.$f; } )* };
}

impl Layer {
    /// `self` with every field `top` sets replaced by `top`'s.
    pub fn overlay(mut self, top: Layer) -> Layer {
        overlay!(
            self,
            top,
            confdir,
            backend,
            endpoints,
            srv_domain,
            srv_record,
            dns_server,
            prefix,
            file,
            ca_file,
            cert_file,
            key_file,
            username,
            password_file,
            state_dir,
            metrics_addr,
            log_level,
            log_format,
            wait,
            node_name,
            resync_interval,
            watch_confdir,
            report,
            report_ttl,
            reload_splay,
            connect_timeout,
            request_timeout,
            max_output_bytes
        );
        self
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(x) = p
                && x.is_relative()
            {
                *x = base.join(&*x);
            }
        };
        fix(&mut self.confdir);
        fix(&mut self.ca_file);
        fix(&mut self.cert_file);
        fix(&mut self.key_file);
        fix(&mut self.password_file);
        fix(&mut self.state_dir);
        if let Some(files) = &mut self.file {
            for f in files.iter_mut() {
                if f.is_relative() {
                    *f = base.join(&*f);
                }
            }
        }
    }

    /// Reads a settings file.
    pub fn from_file(path: &Path) -> Result<Layer, SettingsError> {
        let err = |message: String| SettingsError {
            where_: path.display().to_string(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut layer: Layer = toml::from_str(&text).map_err(|e| err(toml_error(&text, &e)))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        layer.resolve_paths(&base);
        Ok(layer)
    }
}

/// Fully resolved settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The settings file that was read, if any.
    pub config_file: Option<PathBuf>,
    pub confdir: PathBuf,
    pub backend: BackendKind,
    pub endpoints: Vec<String>,
    pub srv_domain: Option<String>,
    pub srv_record: String,
    pub dns_server: Option<SocketAddr>,
    pub prefix: String,
    pub files: Vec<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub state_dir: PathBuf,
    pub metrics_addr: Option<SocketAddr>,
    pub log_level: String,
    pub log_format: LogFormat,
    pub wait: Wait,
    pub node_name: String,
    pub resync_interval: Duration,
    pub watch_confdir: bool,
    pub report: bool,
    pub report_ttl: Duration,
    pub reload_splay: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_output_bytes: usize,
}

impl Settings {
    /// `conf.d/` under the confdir.
    pub fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    /// `templates/` under the confdir.
    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }

    /// Loads the settings file (from `--config`, or `CONFDIR/liveconf.toml`
    /// when it exists) and overlays the command-line layer.
    pub fn load(config: Option<&Path>, flags: Layer) -> Result<Settings, SettingsError> {
        let confdir_flag = flags.confdir.clone();
        let (file_layer, config_file) = match config {
            Some(p) => (Layer::from_file(p)?, Some(p.to_path_buf())),
            None => {
                let dir = confdir_flag
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
                let p = dir.join("liveconf.toml");
                if p.is_file() {
                    (Layer::from_file(&p)?, Some(p))
                } else {
                    (Layer::default(), None)
                }
            }
        };
        let from_flags = flags.clone();
        let l = file_layer.overlay(flags);
        let where_ = config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "command line".into());
        let err = |message: String| SettingsError {
            where_: where_.clone(),
            message,
        };
        // A bad value is blamed on where it came from: a flag wins over the
        // file, so a value the flags set came from the command line.
        let err_from = |flag: bool, message: String| SettingsError {
            where_: if flag {
                "command line".into()
            } else {
                where_.clone()
            },
            message,
        };
        let dur = |v: &Option<String>,
                   name: &str,
                   default: Duration,
                   flag: bool|
         -> Result<Duration, SettingsError> {
            match v {
                Some(s) => parse_duration(s).map_err(|e| err_from(flag, format!("{name}: {e}"))),
                None => Ok(default),
            }
        };
        let wait = match &l.wait {
            Some(s) => Wait::parse(s)
                .map_err(|e| err_from(from_flags.wait.is_some(), format!("wait: {e}")))?,
            None => DEFAULT_WAIT,
        };
        let backend = l.backend.unwrap_or(if l.file.is_some() {
            BackendKind::File
        } else {
            BackendKind::Etcd
        });
        let files = l.file.clone().unwrap_or_default();
        if backend == BackendKind::File && files.is_empty() {
            return Err(err(
                "the file backend needs at least one key file (--file PATH or file = [...])".into(),
            ));
        }
        let endpoints: Vec<String> = l
            .endpoints
            .clone()
            .unwrap_or_default()
            .iter()
            .flat_map(|e| e.split(','))
            .map(|e| e.trim().to_string())
            .filter(|e| !e.is_empty())
            .collect();
        let node_name = match &l.node_name {
            Some(n) => n.clone(),
            None => nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "localhost".into()),
        };
        Ok(Settings {
            config_file: config_file.clone(),
            // The settings file lives in its confdir: `--config DIR/liveconf.toml`
            // alone means conf.d/ and templates/ are in DIR too.
            confdir: l.confdir.clone().unwrap_or_else(|| {
                config_file
                    .as_ref()
                    .and_then(|p| p.parent())
                    .filter(|d| !d.as_os_str().is_empty())
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| {
                        PathBuf::from(if config_file.is_some() {
                            "."
                        } else {
                            DEFAULT_CONFDIR
                        })
                    })
            }),
            backend,
            endpoints,
            srv_domain: l.srv_domain.clone(),
            srv_record: l
                .srv_record
                .clone()
                .unwrap_or_else(|| "_etcd-client-ssl._tcp".into()),
            dns_server: l.dns_server,
            prefix: l.prefix.clone().unwrap_or_default(),
            files,
            ca_file: l.ca_file.clone(),
            cert_file: l.cert_file.clone(),
            key_file: l.key_file.clone(),
            username: l.username.clone(),
            password_file: l.password_file.clone(),
            state_dir: l
                .state_dir
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR)),
            metrics_addr: l.metrics_addr,
            log_level: l.log_level.clone().unwrap_or_else(|| "info".into()),
            log_format: l.log_format.unwrap_or_default(),
            wait,
            node_name,
            resync_interval: dur(
                &l.resync_interval,
                "resync_interval",
                DEFAULT_RESYNC,
                from_flags.resync_interval.is_some(),
            )?,
            watch_confdir: l.watch_confdir.unwrap_or(false),
            report: l.report.unwrap_or(false),
            report_ttl: dur(
                &l.report_ttl,
                "report_ttl",
                crate::fleet::LEASE_TTL,
                from_flags.report_ttl.is_some(),
            )?,
            reload_splay: dur(
                &l.reload_splay,
                "reload_splay",
                Duration::ZERO,
                from_flags.reload_splay.is_some(),
            )?,
            connect_timeout: dur(
                &l.connect_timeout,
                "connect_timeout",
                Duration::from_secs(5),
                from_flags.connect_timeout.is_some(),
            )?,
            request_timeout: dur(
                &l.request_timeout,
                "request_timeout",
                Duration::from_secs(10),
                from_flags.request_timeout.is_some(),
            )?,
            max_output_bytes: l.max_output_bytes.unwrap_or(crate::render::MAX_OUTPUT),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        std::fs::write(
            &p,
            "prefix = \"/from-file\"\nfile = [\"keys.yaml\"]\nwait = \"0s\"\n",
        )
        .unwrap();
        let flags = Layer {
            prefix: Some("/from-flag".into()),
            ..Layer::default()
        };
        let s = Settings::load(Some(&p), flags).unwrap();
        assert_eq!(s.prefix, "/from-flag");
        assert_eq!(s.files, vec![dir.path().join("keys.yaml")]);
        assert_eq!(s.backend, BackendKind::File);
        assert!(s.wait.is_off());
    }

    #[test]
    fn a_bad_value_is_blamed_on_where_it_came_from() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        std::fs::write(&p, "file = [\"keys.yaml\"]\nreload_splay = \"soon\"\n").unwrap();
        let e = Settings::load(Some(&p), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("liveconf.toml") && e.contains("reload_splay"),
            "{e}"
        );
        std::fs::write(&p, "file = [\"keys.yaml\"]\n").unwrap();
        let flags = Layer {
            wait: Some("5".into()),
            ..Layer::default()
        };
        let e = Settings::load(Some(&p), flags).unwrap_err().to_string();
        assert!(
            e.contains("command line") && !e.contains("liveconf.toml"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        std::fs::write(&p, "prefix = \"/x\"\nendpoint = \"http://x\"\n").unwrap();
        let e = Settings::load(Some(&p), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("liveconf.toml") && e.contains("line 2"), "{e}");
    }
}
