//! Daemon settings: `liveconf.toml` (or confd's `confd.toml`) overlaid by
//! command-line flags.
//!
//! Every option can come from the file; a flag given on the command line
//! always wins. Relative paths in the file are relative to the file's own
//! directory; relative paths on the command line, to the working directory.
//! Unknown keys in a `liveconf.toml` are an error naming the file and line.
//!
//! # confd's settings file
//!
//! `--config FILE` also reads confd's `confd.toml`, so liveconf can replace
//! confd without touching its settings. FILE is read as confd's when
//!
//! * it is named `confd.toml`; or
//! * it is not named `liveconf.toml`, has at least one key only confd knows
//!   (`nodes`, `client_cert`, `log-level`, `interval`, `watch`,
//!   `basic_auth`..., or a `backend` liveconf has no such name for, such as
//!   `"etcdv3"`), and none of the keys only liveconf knows (`endpoints`,
//!   `ca_file`, `state_dir`, `log_level`...).
//!
//! Anything else is read as a `liveconf.toml`, strictly: a file named
//! `liveconf.toml` with a typo, or one mixing both formats, fails with the
//! file and line of the offending key.
//!
//! A confd file is read as confd reads it (setting names in any case,
//! unknown keys ignored) and mapped onto the same [`Layer`] (see
//! [`confd_layer`]); the differences that remain are carried in
//! [`Settings`]: the global prefix replaces a resource's prefix
//! ([`PrefixRule::Replace`](crate::resource::PrefixRule)), an inline
//! `password` (kept in memory only), `noop` and `sync-only`. Settings
//! liveconf cannot honour become warnings naming the file and line
//! ([`Settings::warnings`]); a backend other than etcd v3 or key files is
//! one error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::resource::{Wait, parse_duration, toml_error};

mod confd;
mod defs;

use confd::{ConfdExtras, FileFormat, confd_hint, confd_layer, detect};

pub use defs::{Layer, SETTINGS, flag_args, log_reload_effects, markdown_table};

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
/// Default lease of the fleet report (`report_ttl`): a host that stops
/// reporting is gone this long after its last keep-alive.
pub const DEFAULT_REPORT_TTL: Duration = Duration::from_secs(30);
/// Where owed-reload markers live, below the state directory.
pub const OWED_DIR: &str = "reloads-owed";
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

/// A password given inline (confd's `password`): kept in memory only, and
/// never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(p: impl Into<String>) -> Password {
        Password(p.into())
    }

    /// The password itself, for the one place that authenticates.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
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

impl BackendKind {
    /// Its name, as in `backend = "..."`.
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Etcd => "etcd",
            BackendKind::File => "file",
        }
    }
}

impl Layer {
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
        Layer::from_text(path, &text)
    }

    /// Parses `text` (the content of `path`) as a `liveconf.toml`.
    fn from_text(path: &Path, text: &str) -> Result<Layer, SettingsError> {
        let mut layer: Layer = toml::from_str(text).map_err(|e| SettingsError {
            where_: path.display().to_string(),
            message: format!(
                "{}{}",
                did_you_mean(&toml_error(text, &e)),
                confd_hint(e.message())
            ),
        })?;
        layer.resolve_paths(&base_dir(path));
        Ok(layer)
    }
}

/// "unknown field `wiat`, expected one of `confdir`, ..." becomes "unknown
/// field `wiat` (did you mean `wait`?)" when one of the expected keys is
/// close; anything else (nothing close) is left as it is, the list included.
fn did_you_mean(message: &str) -> String {
    let Some((head, expected)) = message.split_once(", expected one of ") else {
        return message.to_string();
    };
    let Some((_, written)) = head.rsplit_once("unknown field `") else {
        return message.to_string();
    };
    let written = written.trim_end_matches('`');
    let w = written.to_ascii_lowercase();
    let nearest = expected
        .split(", ")
        .map(|f| f.trim().trim_matches('`'))
        .map(|f| (f, strsim::jaro_winkler(&w, f)))
        .filter(|(_, score)| *score >= 0.8)
        .max_by(|a, b| a.1.total_cmp(&b.1));
    match nearest {
        Some((f, _)) => format!("{head} (did you mean `{f}`?)"),
        None => message.to_string(),
    }
}

/// The settings only etcd uses: on the command line with the file
/// backend, each is an error ([`Settings::load`]).
pub const ETCD_ONLY: &[&str] = &[
    "endpoints",
    "srv_domain",
    "srv_record",
    "ca_file",
    "cert_file",
    "key_file",
    "username",
    "password_file",
    "connect_timeout",
    "request_timeout",
];

/// The settings only the file backend uses.
pub const FILE_ONLY: &[&str] = &["file"];

/// Refuses connection flags the chosen backend cannot use: each names the
/// flags, the backend, where the backend was chosen, and what to do.
fn flags_fit_backend(
    backend: BackendKind,
    flags: &Layer,
    file: &Layer,
    config: Option<&Path>,
) -> Result<(), SettingsError> {
    let (useless, other) = match backend {
        BackendKind::File => (ETCD_ONLY, BackendKind::Etcd),
        BackendKind::Etcd => (FILE_ONLY, BackendKind::File),
    };
    let given: Vec<String> = useless
        .iter()
        .filter_map(|n| defs::def(n))
        .filter(|d| d.given(flags))
        .filter_map(|d| d.parsed_flag().map(|(long, _, _)| format!("--{long}")))
        .collect();
    if given.is_empty() {
        return Ok(());
    }
    let them = match given.as_slice() {
        [one] => format!("{one} has"),
        [init @ .., last] => format!("{} and {last} have", init.join(", ")),
        [] => unreachable!(),
    };
    let (name, other_name) = (backend.name(), other.name());
    let file_name = config
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the settings file".into());
    let what = use_of(other);
    let message = if flags.backend == Some(backend) {
        format!(
            "{them} no effect with --backend {name}: drop {}, or give --backend {other_name} {what}",
            given.join(" and ")
        )
    } else if file.backend == Some(backend) {
        format!(
            "{them} no effect with backend = \"{name}\" (from {file_name}): add --backend {other_name} {what}"
        )
    } else if backend == BackendKind::File && flags.file.is_none() {
        format!(
            "{them} no effect with the file backend (chosen because {file_name} sets file): add --backend {other_name} {what}"
        )
    } else if backend == BackendKind::File {
        format!(
            "{them} no effect with the file backend (chosen because --file is given): drop --file {what}, or drop {}",
            given.join(" and ")
        )
    } else {
        format!("{them} no effect with the {name} backend: add --backend {other_name} {what}")
    };
    Err(SettingsError {
        where_: "command line".into(),
        message,
    })
}

/// What choosing `backend` is for, in a message: "to use etcd".
fn use_of(backend: BackendKind) -> &'static str {
    match backend {
        BackendKind::Etcd => "to use etcd",
        BackendKind::File => "to read key files",
    }
}

/// The line (1-based) where the top-level `key = ...` is written in `text`.
fn key_line(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|r| r.trim_start().starts_with('='))
        })
        .map(|i| i + 1)
}

/// "line N: message", when the line is known.
fn at_line(line: Option<usize>, message: String) -> String {
    match line {
        Some(n) => format!("line {n}: {message}"),
        None => message,
    }
}

/// A duration setting that does not parse: its key (and its whole value,
/// when the duration was a part of it), then the error's own plain words.
fn bad_duration(
    key: &str,
    value: &str,
    e: &crate::resource::DurationError,
    line: Option<usize>,
) -> String {
    if e.input() == value {
        at_line(line, format!("{key} = {e}"))
    } else {
        at_line(line, format!("{key} = {value:?}: {e}"))
    }
}

/// The directory relative paths in the settings file at `path` start from.
fn base_dir(path: &Path) -> PathBuf {
    path.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// A settings file, read in its format.
struct FileSettings {
    layer: Layer,
    /// Present when the file is confd's.
    confd: Option<ConfdExtras>,
}

fn read_settings_file(path: &Path) -> Result<FileSettings, SettingsError> {
    let text = std::fs::read_to_string(path).map_err(|e| SettingsError {
        where_: path.display().to_string(),
        message: format!("cannot read: {e}"),
    })?;
    Ok(match detect(path, &text) {
        FileFormat::Liveconf => FileSettings {
            layer: Layer::from_text(path, &text)?,
            confd: None,
        },
        FileFormat::Confd => {
            let (layer, extras) = confd_layer(path, &text)?;
            FileSettings {
                layer,
                confd: Some(extras),
            }
        }
    })
}

/// What a batch takes from the settings (see [`Settings::batch`]); the
/// rest of a batch's options comes from the command line and the driver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchSettings {
    /// Nameserver for `lookup_srv`, output limit.
    pub env: crate::render::Env,
    /// Random delay before reloads, for resources that set none.
    pub reload_splay: Duration,
    /// Where owed-reload markers live (none for a run that changes nothing).
    pub owed_dir: Option<PathBuf>,
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
    pub dns_min_interval: Duration,
    pub dns_max_interval: Duration,
    pub dns_max_stale: Duration,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub max_output_bytes: usize,
    /// How `prefix` combines with a resource's own: joined (liveconf), or
    /// replacing it (settings read from a confd.toml, as confd does).
    pub prefix_rule: crate::resource::PrefixRule,
    /// The etcd password given inline (confd's `password`); a
    /// `password_file` wins over it.
    pub password: Option<Password>,
    /// Change nothing, run no command (confd's `noop = true`; the same as
    /// `render --noop`).
    pub noop: bool,
    /// Run no reload command (confd's `sync-only = true`; the same as
    /// `render --no-reload`).
    pub no_reload: bool,
    /// Settings in the file that cannot be honoured, one line each naming
    /// the file and line. [`Settings::load`] does not log them (logging is
    /// set up from the settings): the caller does, with
    /// [`Settings::log_warnings`].
    pub warnings: Warnings,
}

/// What reading the settings has to say once logging is set up: settings
/// that cannot be honoured (the list itself, logged as warnings), and what
/// the command line changed in the file's settings besides replacing a
/// value (`notes`, logged at info: its endpoints replacing the file's SRV
/// discovery, say).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Warnings {
    /// The warnings, one line each naming the file and line.
    pub warn: Vec<String>,
    /// Said at info.
    pub notes: Vec<String>,
}

impl std::ops::Deref for Warnings {
    type Target = Vec<String>;

    fn deref(&self) -> &Vec<String> {
        &self.warn
    }
}

impl Settings {
    /// What a render may use besides the snapshot: the nameserver for DNS
    /// look-ups and the output limit.
    pub fn render_env(&self) -> crate::render::Env {
        crate::render::Env {
            dns: crate::dns::DnsConfig {
                nameserver: self.dns_server,
            },
            live: None,
            max_output: self.max_output_bytes,
        }
    }

    /// How the daemon looks a template's DNS names up again
    /// (`dns_min_interval`, at least 100 ms; `dns_max_interval`, at least
    /// that; `dns_max_stale`).
    pub fn dns_timing(&self) -> crate::dnsdeps::Timing {
        let min = self.dns_min_interval.max(Duration::from_millis(100));
        crate::dnsdeps::Timing {
            min,
            max: self.dns_max_interval.max(min),
            max_stale: self.dns_max_stale,
        }
    }

    /// Where owed-reload markers live (`STATE_DIR/reloads-owed`).
    pub fn owed_dir(&self) -> PathBuf {
        self.state_dir.join(OWED_DIR)
    }

    /// Everything a batch (`apply::Options`) takes from the settings. The
    /// one place it is derived: at start-up and again on every SIGHUP, so
    /// a new value reaches the next batch. `noop`: the run changes nothing
    /// (then no owed-reload markers either).
    pub fn batch(&self, noop: bool) -> BatchSettings {
        BatchSettings {
            env: self.render_env(),
            reload_splay: self.reload_splay,
            owed_dir: (!noop).then(|| self.owed_dir()),
        }
    }

    /// `conf.d/` under the confdir.
    pub fn conf_d(&self) -> PathBuf {
        self.confdir.join("conf.d")
    }

    /// `templates/` under the confdir.
    pub fn templates_dir(&self) -> PathBuf {
        self.confdir.join("templates")
    }

    /// Logs [`Settings::warnings`], and their notes at info (once logging
    /// is set up).
    pub fn log_warnings(&self) {
        self.log_warnings_since(None);
    }

    /// [`Settings::log_warnings`] when settings are read again (SIGHUP):
    /// the notes the `running` settings had are not said again.
    pub fn log_warnings_since(&self, running: Option<&Settings>) {
        for w in self.warnings.iter() {
            tracing::warn!("{w}");
        }
        for n in &self.warnings.notes {
            if !running.is_some_and(|r| r.warnings.notes.contains(n)) {
                tracing::info!("{n}");
            }
        }
    }

    /// Loads the settings file (from `--config`, or `CONFDIR/liveconf.toml`
    /// when it exists) and overlays the command-line layer. A `--config`
    /// file may be confd's `confd.toml` (see the module documentation).
    ///
    /// For the commands that read keys through the configured backend
    /// (`render`, `check`, and the daemon on SIGHUP): a connection flag
    /// given on the command line that the chosen backend cannot use
    /// (`--endpoints` with the file backend, `--file` with etcd) is an
    /// error naming the flag, the backend and where it was chosen, never
    /// silently dropped.
    pub fn load(config: Option<&Path>, flags: Layer) -> Result<Settings, SettingsError> {
        Self::load_with(config, flags, true)
    }

    /// [`Settings::load`] for the commands that do not read keys through
    /// the configured backend: `status`, and `fleet` and `keys`, which
    /// always use etcd.
    pub fn load_any_backend(
        config: Option<&Path>,
        flags: Layer,
    ) -> Result<Settings, SettingsError> {
        Self::load_with(config, flags, false)
    }

    fn load_with(
        config: Option<&Path>,
        flags: Layer,
        check_backend_flags: bool,
    ) -> Result<Settings, SettingsError> {
        let confdir_flag = flags.confdir.clone();
        let (file, config_file) = match config {
            Some(p) => (read_settings_file(p)?, Some(p.to_path_buf())),
            None => {
                let dir = confdir_flag
                    .clone()
                    .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFDIR));
                let p = dir.join("liveconf.toml");
                // `--confdir /etc/confd` alone reads /etc/confd/confd.toml,
                // as confd reads it by default.
                let confd_toml = dir.join("confd.toml");
                if p.is_file() {
                    (
                        FileSettings {
                            layer: Layer::from_file(&p)?,
                            confd: None,
                        },
                        Some(p),
                    )
                } else if confd_toml.is_file() {
                    (read_settings_file(&confd_toml)?, Some(confd_toml))
                } else {
                    (
                        FileSettings {
                            layer: Layer::default(),
                            confd: None,
                        },
                        None,
                    )
                }
            }
        };
        let from_flags = flags.clone();
        let from_file = file.layer.clone();
        let (file_layer, notes) = where_etcd_is(file.layer, &from_flags, config_file.as_deref());
        let l = file_layer.overlay(flags);
        let confd = file.confd;
        let where_ = config_file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "command line".into());
        let err = |message: String| SettingsError {
            where_: where_.clone(),
            message,
        };
        // A backend liveconf cannot read is an error unless the command
        // line chooses one.
        if from_flags.backend.is_none()
            && let Some(message) = confd.as_ref().and_then(|c| c.backend_error.clone())
        {
            return Err(err(message));
        }
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
        // The line of `key` in the settings file, when the value came from
        // there (a flag wins over the file).
        let line_of = |key: &str, flag: bool| {
            config_file
                .as_deref()
                .filter(|_| !flag)
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|text| key_line(&text, key))
        };
        // A duration setting: parsed, its error blamed and named, with its
        // line in the file.
        macro_rules! dur {
            ($key:ident, $default:expr) => {
                match &l.$key {
                    Some(s) => parse_duration(s).map_err(|e| {
                        let flag = from_flags.$key.is_some();
                        let key = stringify!($key);
                        err_from(flag, bad_duration(key, s, &e, line_of(key, flag)))
                    })?,
                    None => $default,
                }
            };
        }
        let wait = match &l.wait {
            Some(s) => Wait::parse(s).map_err(|e| {
                let flag = from_flags.wait.is_some();
                let message = match &e {
                    crate::resource::WaitError::Duration(d) => {
                        bad_duration("wait", s, d, line_of("wait", flag))
                    }
                    other => at_line(line_of("wait", flag), format!("wait: {other}")),
                };
                err_from(flag, message)
            })?,
            None => DEFAULT_WAIT,
        };
        let backend = l.backend.unwrap_or(if l.file.is_some() {
            BackendKind::File
        } else {
            BackendKind::Etcd
        });
        if check_backend_flags {
            flags_fit_backend(backend, &from_flags, &from_file, config_file.as_deref())?;
        }
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
        let dns_min_interval = dur!(dns_min_interval, Duration::from_secs(5));
        let dns_max_interval = dur!(dns_max_interval, Duration::from_secs(300));
        if let Err((key, message)) = defs::check_dns_intervals(
            dns_min_interval,
            dns_max_interval,
            l.dns_min_interval.as_deref(),
            l.dns_max_interval.as_deref(),
        ) {
            let flag = defs::def(key).is_some_and(|d| d.given(&from_flags));
            return Err(err_from(flag, at_line(line_of(key, flag), message)));
        }
        let node_name = match &l.node_name {
            Some(n) if n.trim().is_empty() => {
                let flag = from_flags.node_name.is_some();
                return Err(err_from(
                    flag,
                    at_line(
                        line_of("node_name", flag),
                        "node_name is empty: it names this host in status.json and the fleet \
                         report; give a name, or leave node_name out to use the hostname"
                            .into(),
                    ),
                ));
            }
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
            dns_server: l.dns_server.map(|d| d.0),
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
            resync_interval: dur!(resync_interval, DEFAULT_RESYNC),
            watch_confdir: l.watch_confdir.unwrap_or(false),
            report: l.report.unwrap_or(false),
            report_ttl: dur!(report_ttl, DEFAULT_REPORT_TTL),
            reload_splay: dur!(reload_splay, Duration::ZERO),
            dns_min_interval,
            dns_max_interval,
            dns_max_stale: dur!(dns_max_stale, Duration::from_secs(3600)),
            connect_timeout: dur!(connect_timeout, Duration::from_secs(5)),
            request_timeout: dur!(request_timeout, Duration::from_secs(10)),
            max_output_bytes: l.max_output_bytes.unwrap_or(crate::render::MAX_OUTPUT),
            prefix_rule: if confd.is_some() {
                crate::resource::PrefixRule::Replace
            } else {
                crate::resource::PrefixRule::Join
            },
            password: confd.as_ref().and_then(|c| c.password.clone()),
            noop: confd.as_ref().is_some_and(|c| c.noop),
            no_reload: confd.as_ref().is_some_and(|c| c.sync_only),
            warnings: Warnings {
                warn: confd.map(|c| c.warnings).unwrap_or_default(),
                notes,
            },
        })
    }
}

/// Where etcd is counts as one setting: `--endpoints` on the command line
/// replaces the file's SRV discovery (`srv_domain`) as well as its
/// endpoints, and `--srv-domain` the file's endpoints as well as its
/// domain (the file's `srv_record` still names the record under it). So
/// an SRE's `--endpoints` is what a run uses, whatever the file discovers.
/// (Found by a new-user trial: with `srv_domain` in liveconf.toml and its
/// nameserver down, `fleet` and `render --once` given `--endpoints` still
/// looked the record up first, and failed.) `file` is the settings file's
/// layer; it comes back without what the flags replace, with a note for
/// each, said once in the log.
fn where_etcd_is(
    mut file: Layer,
    flags: &Layer,
    config_file: Option<&Path>,
) -> (Layer, Vec<String>) {
    let mut notes = Vec::new();
    let name = config_file
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "the settings file".into());
    if flags.endpoints.is_some()
        && flags.srv_domain.is_none()
        && let Some(domain) = file.srv_domain.take()
    {
        notes.push(format!(
            "--endpoints on the command line replaces the SRV discovery of {name} \
             (srv_domain = {domain:?}): this run uses the endpoints given"
        ));
    }
    if flags.srv_domain.is_some()
        && flags.endpoints.is_none()
        && let Some(endpoints) = file.endpoints.take()
    {
        notes.push(format!(
            "--srv-domain on the command line replaces the endpoints of {name} \
             ({}): this run uses the endpoints SRV discovery finds",
            endpoints
                .iter()
                .map(|e| match (e.split_once("://"), e.rsplit_once('@')) {
                    // Credentials never reach the log.
                    (Some((scheme, _)), Some((_, host))) => format!("{scheme}://***@{host}"),
                    _ => e.clone(),
                })
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    (file, notes)
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

    /// Where etcd is counts as one setting: `--endpoints` replaces the
    /// file's SRV discovery too, `--srv-domain` the file's endpoints too
    /// (the file's `srv_record` still names the record), both given keep
    /// both; each replacement is one note, without credentials.
    #[test]
    fn command_line_endpoints_and_srv_domain_replace_the_files_whole() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        std::fs::write(
            &p,
            "endpoints = [\"http://u:pw@10.0.0.1:2379\"]\nsrv_domain = \"file.test\"\n\
             srv_record = \"_etcd-client._tcp\"\n",
        )
        .unwrap();
        let load = |endpoints: Option<&str>, srv: Option<&str>| {
            let flags = Layer {
                endpoints: endpoints.map(|e| vec![e.to_string()]),
                srv_domain: srv.map(String::from),
                ..Layer::default()
            };
            Settings::load_any_backend(Some(&p), flags).unwrap()
        };
        let s = load(Some("http://127.0.0.1:2379"), None);
        assert_eq!(s.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.srv_domain, None);
        assert_eq!(s.warnings.notes.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings.notes[0].contains("srv_domain = \"file.test\""),
            "{:?}",
            s.warnings
        );
        let s = load(None, Some("flag.test"));
        assert!(s.endpoints.is_empty(), "{:?}", s.endpoints);
        assert_eq!(s.srv_domain.as_deref(), Some("flag.test"));
        assert_eq!(s.srv_record, "_etcd-client._tcp");
        assert_eq!(s.warnings.notes.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings.notes[0].contains("http://***@10.0.0.1:2379")
                && !s.warnings.notes[0].contains("pw"),
            "{:?}",
            s.warnings
        );
        let s = load(Some("http://127.0.0.1:2379"), Some("flag.test"));
        assert_eq!(s.endpoints, ["http://127.0.0.1:2379"]);
        assert_eq!(s.srv_domain.as_deref(), Some("flag.test"));
        assert!(s.warnings.notes.is_empty(), "{:?}", s.warnings);
        // Without either flag, the file's own.
        let s = load(None, None);
        assert_eq!(s.endpoints, ["http://u:pw@10.0.0.1:2379"]);
        assert_eq!(s.srv_domain.as_deref(), Some("file.test"));
        assert!(s.warnings.notes.is_empty(), "{:?}", s.warnings);
    }

    /// A duration that does not parse names the file, its line and how to
    /// write one, in plain words; an empty node_name is refused.
    #[test]
    fn bad_durations_and_an_empty_node_name_say_the_line_plainly() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        for (text, line, want) in [
            (
                "file = [\"k.yaml\"]\nreload_splay = \"soon\"\n",
                2,
                "reload_splay = \"soon\" is not a duration: write a number and a unit, like \"30s\"",
            ),
            (
                "file = [\"k.yaml\"]\n\nconnect_timeout = \"5sek\"\n",
                3,
                "connect_timeout = \"5sek\" is not a duration (\"sek\" is not a unit",
            ),
            (
                "file = [\"k.yaml\"]\nreload_splay = \"-5s\"\n",
                2,
                "reload_splay = \"-5s\" is not a duration (it cannot be negative)",
            ),
            (
                "wait = \"x:1s\"\nfile = [\"k.yaml\"]\n",
                1,
                "wait = \"x:1s\": \"x\" is not a duration",
            ),
            (
                "wait = \"2s:1s\"\nfile = [\"k.yaml\"]\n",
                1,
                "MAX must not be less than MIN",
            ),
            (
                "file = [\"k.yaml\"]\nnode_name = \" \"\n",
                2,
                "node_name is empty",
            ),
        ] {
            std::fs::write(&p, text).unwrap();
            let e = Settings::load(Some(&p), Layer::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("{}: line {line}: ", p.display())) && e.contains(want),
                "{text:?}: {e}"
            );
            assert!(!e.contains("expected number"), "{e}");
        }
        // From the command line: no line, blamed on the command line.
        std::fs::write(&p, "file = [\"k.yaml\"]\n").unwrap();
        let flags = Layer {
            node_name: Some(String::new()),
            ..Layer::default()
        };
        let e = Settings::load(Some(&p), flags).unwrap_err().to_string();
        assert!(e.starts_with("command line: node_name is empty"), "{e}");
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

    /// A connection flag the chosen backend cannot use is an error naming
    /// the flag, the backend and where it was chosen; the commands that
    /// always use etcd accept it.
    #[test]
    fn a_flag_the_backend_cannot_use_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        let file = p.display().to_string();
        let load = |text: &str, flags: Layer| {
            std::fs::write(&p, text).unwrap();
            Settings::load(Some(&p), flags.clone()).map_err(|e| e.to_string())
        };
        let endpoints = || Layer {
            endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
            ..Layer::default()
        };
        let e = load("backend = \"file\"\nfile = [\"k.yaml\"]\n", endpoints()).unwrap_err();
        assert_eq!(
            e,
            format!(
                "command line: --endpoints has no effect with backend = \"file\" (from {file}): add --backend etcd to use etcd"
            )
        );
        // Every etcd-only flag, named together.
        let many = Layer {
            ca_file: Some("/ca.pem".into()),
            request_timeout: Some("3s".into()),
            ..endpoints()
        };
        let e = load("file = [\"k.yaml\"]\n", many).unwrap_err();
        assert!(
            e.contains("--endpoints, --ca-file and --request-timeout have no effect with the file backend (chosen because")
                && e.contains("sets file): add --backend etcd"),
            "{e}"
        );
        // --backend etcd on the command line: fine, etcd it is.
        let s = load(
            "backend = \"file\"\nfile = [\"k.yaml\"]\n",
            Layer {
                backend: Some(BackendKind::Etcd),
                ..endpoints()
            },
        )
        .unwrap();
        assert_eq!(s.backend, BackendKind::Etcd);
        // The other way round: --file with backend = "etcd".
        let e = load(
            "backend = \"etcd\"\n",
            Layer {
                file: Some(vec!["k.yaml".into()]),
                ..Layer::default()
            },
        )
        .unwrap_err();
        assert!(
            e.contains("--file has no effect with backend = \"etcd\"")
                && e.contains("add --backend file to read key files"),
            "{e}"
        );
        // Both on the command line.
        let e = load(
            "",
            Layer {
                backend: Some(BackendKind::File),
                file: Some(vec!["k.yaml".into()]),
                ..endpoints()
            },
        )
        .unwrap_err();
        assert!(e.contains("with --backend file: drop --endpoints"), "{e}");
        // In the file itself, an etcd setting next to backend = "file" is
        // kept for a later switch, not an error.
        assert!(
            load(
                "backend = \"file\"\nfile = [\"k.yaml\"]\nendpoints = [\"http://e:2379\"]\n",
                Layer::default()
            )
            .is_ok()
        );
        // status, fleet and keys accept it.
        std::fs::write(&p, "backend = \"file\"\nfile = [\"k.yaml\"]\n").unwrap();
        assert!(Settings::load_any_backend(Some(&p), endpoints()).is_ok());
    }

    /// The etcd-only settings are connection settings the file backend
    /// ignores.
    #[test]
    fn etcd_only_settings_do_not_change_the_file_backends_connection() {
        for name in ETCD_ONLY {
            let d = defs::def(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(d.sighup, defs::Effect::Reconnect, "{name}");
            assert!(d.used_by.contains(&"render"), "{name}");
        }
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

    /// confd's settings file, as /etc/confd/confd.toml on a real host.
    const CONFD_TOML: &str = r#"backend = "etcdv3"
nodes = ["10.0.0.1:2379", "https://10.0.0.2:2379"]
scheme = "https"
prefix = "/production"
client_cert = "/etc/confd/ssl/client.crt"
client_key = "/etc/confd/ssl/client.key"
client_cakeys = "/etc/confd/ssl/ca.crt"
basic_auth = true
username = "confd"
password = "s3cret"
log-level = "warning"
interval = 60
watch = true
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn chmod(p: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_confd_toml_maps_to_the_same_settings() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "confd.toml", CONFD_TOML);
        chmod(&p, 0o600);
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        assert_eq!(s.backend, BackendKind::Etcd);
        // Nodes without a scheme use TLS when client certificates are set
        // (etcd's clientv3); `scheme` is for SRV-discovered nodes only.
        assert_eq!(
            s.endpoints,
            vec!["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        assert_eq!(s.prefix, "/production");
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Replace);
        assert_eq!(
            s.cert_file,
            Some(PathBuf::from("/etc/confd/ssl/client.crt"))
        );
        assert_eq!(s.key_file, Some(PathBuf::from("/etc/confd/ssl/client.key")));
        assert_eq!(s.ca_file, Some(PathBuf::from("/etc/confd/ssl/ca.crt")));
        assert_eq!(s.username.as_deref(), Some("confd"));
        assert_eq!(s.password, Some(Password::new("s3cret")));
        assert_eq!(s.password_file, None);
        assert_eq!(s.log_level, "warn");
        // confd's default confdir, not the file's directory.
        assert_eq!(s.confdir, PathBuf::from("/etc/confd"));
        assert!(!s.noop && !s.no_reload);
        // interval is the one setting not honoured: one warning, with its line.
        assert_eq!(s.warnings.len(), 1, "{:?}", s.warnings);
        assert!(
            s.warnings[0].contains("confd.toml line 12") && s.warnings[0].contains("interval"),
            "{:?}",
            s.warnings
        );
        // The password is never shown.
        assert!(!format!("{s:?}").contains("s3cret"));
        // A password in a file others can read is worth a warning.
        chmod(&p, 0o644);
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("line 10") && w.contains("chmod 600")),
            "{:?}",
            s.warnings
        );
    }

    #[tokio::test]
    async fn an_inline_password_authenticates_and_a_password_file_wins() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "confd.toml",
            "backend = \"etcdv3\"\nbasic_auth = true\nusername = \"u\"\npassword = \"p\"\n",
        );
        chmod(&p, 0o600);
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        // Connecting needs no password file: the inline password is used.
        assert!(
            crate::backend::etcd::Connection::from_settings(&s)
                .await
                .is_ok()
        );
        let flags = Layer {
            password_file: Some(dir.path().join("missing")),
            ..Layer::default()
        };
        let s = Settings::load(Some(&p), flags).unwrap();
        let e = crate::backend::etcd::Connection::from_settings(&s)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("cannot read password file"), "{e}");
    }

    #[test]
    fn confdir_alone_reads_its_confd_toml() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "confd.toml",
            "backend = \"etcdv3\"\nnodes = [\"127.0.0.1:2379\"]\nprefix = \"/prod\"\n",
        );
        let flags = Layer {
            confdir: Some(dir.path().to_path_buf()),
            ..Layer::default()
        };
        let s = Settings::load(None, flags).unwrap();
        assert_eq!(s.config_file, Some(dir.path().join("confd.toml")));
        assert_eq!(s.prefix, "/prod");
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Replace);
        assert_eq!(s.confdir, dir.path());
    }

    #[test]
    fn flags_win_over_a_confd_toml() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "confd.toml", CONFD_TOML);
        let flags = Layer {
            endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
            log_level: Some("debug".into()),
            confdir: Some(dir.path().to_path_buf()),
            ..Layer::default()
        };
        let s = Settings::load(Some(&p), flags).unwrap();
        assert_eq!(s.endpoints, vec!["http://127.0.0.1:2379"]);
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.confdir, dir.path());
    }

    #[test]
    fn an_unsupported_backend_is_one_error_naming_it_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for backend in ["consul", "vault", "redis", "zookeeper"] {
            let p = write(
                dir.path(),
                "confd.toml",
                &format!("nodes = [\"127.0.0.1:8500\"]\nbackend = \"{backend}\"\n"),
            );
            let e = Settings::load(Some(&p), Layer::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&p.display().to_string())
                    && e.contains("line 2")
                    && e.contains(&format!("backend \"{backend}\""))
                    && e.contains("etcd v3")
                    && e.contains("key files"),
                "{e}"
            );
        }
        // confd 0.17 reads etcd v3 for "etcd" and by default; a node
        // without a scheme and without client certificates is plain HTTP,
        // whatever `scheme` says (confd applies it to SRV results only).
        for text in [
            "nodes = [\"127.0.0.1:2379\"]\nscheme = \"https\"\n",
            "backend = \"etcd\"\nnodes = [\"127.0.0.1:2379\"]\n",
        ] {
            let p = write(dir.path(), "confd.toml", text);
            let s = Settings::load(Some(&p), Layer::default()).unwrap();
            assert_eq!(s.backend, BackendKind::Etcd, "{text}");
            assert_eq!(s.endpoints, vec!["http://127.0.0.1:2379"], "{text}");
        }
        // Under any name: a backend liveconf has no name for marks the file as confd's.
        let p = write(dir.path(), "settings.toml", "backend = \"consul\"\n");
        let e = Settings::load(Some(&p), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("settings.toml") && e.contains("backend \"consul\" is not supported"),
            "{e}"
        );
        // --backend on the command line wins over the file.
        let flags = Layer {
            backend: Some(BackendKind::Etcd),
            ..Layer::default()
        };
        assert!(Settings::load(Some(&p), flags).is_ok());
    }

    #[test]
    fn prefix_replaces_only_for_confd_files() {
        let dir = tempfile::tempdir().unwrap();
        let live = write(
            dir.path(),
            "liveconf.toml",
            "prefix = \"/production\"\nendpoints = [\"http://e:2379\"]\n",
        );
        let s = Settings::load(Some(&live), Layer::default()).unwrap();
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Join);
        // No --config: CONFDIR/liveconf.toml.
        let flags = Layer {
            confdir: Some(dir.path().to_path_buf()),
            ..Layer::default()
        };
        let s = Settings::load(None, flags).unwrap();
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Join);
        // Another name, confd's keys only: confd's.
        let other = write(
            dir.path(),
            "etcd.toml",
            "backend = \"etcdv3\"\nprefix = \"/production\"\n",
        );
        let s = Settings::load(Some(&other), Layer::default()).unwrap();
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Replace);
        assert_eq!(s.prefix, "/production");
        // Only keys both know, under another name: liveconf's.
        let shared = write(dir.path(), "shared.toml", "prefix = \"/production\"\n");
        let s = Settings::load(Some(&shared), Layer::default()).unwrap();
        assert_eq!(s.prefix_rule, crate::resource::PrefixRule::Join);
    }

    #[test]
    fn a_liveconf_toml_with_a_typo_still_fails_with_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        // Even when the typo is one of confd's keys.
        let p = write(
            dir.path(),
            "liveconf.toml",
            "prefix = \"/x\"\nlog-level = \"debug\"\n",
        );
        let e = Settings::load(Some(&p), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("liveconf.toml") && e.contains("line 2") && e.contains("confd.toml"),
            "{e}"
        );
        // A file mixing both formats is read strictly.
        let p = write(
            dir.path(),
            "mixed.toml",
            "endpoints = [\"http://e:2379\"]\nnodes = [\"e:2379\"]\n",
        );
        let e = Settings::load(Some(&p), Layer::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("mixed.toml") && e.contains("line 2"), "{e}");
    }

    #[test]
    fn confd_settings_liveconf_cannot_honour_are_warnings_with_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "confd.toml",
            "backend = \"etcdv3\"\nusername = \"u\"\nclient_insecure = true\n\
             table = \"t\"\nNoop = true\nsync-only = true\nbogus = 1\nwatch = false\n",
        );
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        // Without basic_auth confd ignores username; so does liveconf.
        assert_eq!(s.username, None);
        // Setting names match in any case, as in confd.
        assert!(s.noop && s.no_reload);
        let lines: Vec<&str> = s
            .warnings
            .iter()
            .map(|w| w.split(": ").next().unwrap_or(""))
            .collect();
        let file = p.display().to_string();
        assert_eq!(
            lines,
            [2, 3, 4, 6, 7].map(|l| format!("{file} line {l}")),
            "{:?}",
            s.warnings
        );
        assert!(s.warnings[0].contains("basic_auth"), "{:?}", s.warnings);
        assert!(s.warnings[4].contains("bogus"), "{:?}", s.warnings);
    }

    #[test]
    fn confd_srv_file_backend_and_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "confd.toml",
            "backend = \"etcdv3\"\nsrv_record = \"_etcd-client._tcp.example.com\"\n",
        );
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        assert_eq!(s.srv_record, "_etcd-client._tcp");
        assert_eq!(s.srv_domain.as_deref(), Some("example.com"));
        let p = write(
            dir.path(),
            "confd.toml",
            "backend = \"etcdv3\"\nsrv_domain = \"example.com\"\n",
        );
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        assert_eq!(s.srv_record, "_etcdv3._tcp");
        assert_eq!(s.srv_domain.as_deref(), Some("example.com"));

        let p = write(
            dir.path(),
            "confd.toml",
            "backend = \"file\"\nfile = [\"keys.yaml\"]\nconfdir = \"here\"\n",
        );
        let s = Settings::load(Some(&p), Layer::default()).unwrap();
        assert_eq!(s.backend, BackendKind::File);
        // Relative to the working directory, as confd reads them.
        assert_eq!(s.files, vec![PathBuf::from("keys.yaml")]);
        assert_eq!(s.confdir, PathBuf::from("here"));

        for (text, want) in [
            (
                "backend = \"etcdv3\"\ninterval = \"600\"\n",
                "`interval` must be an integer",
            ),
            (
                "backend = \"etcdv3\"\nlog-level = \"loud\"\n",
                "log-level \"loud\"",
            ),
            (
                "backend = \"etcdv3\"\nscheme = \"grpc\"\n",
                "scheme \"grpc\"",
            ),
            ("backend = \"etcdv3\"\nstate_dir = \"/s\"\n", "--state-dir"),
            (
                "backend = \"etcdv3\"\nprefix = \"/a\"\nPrefix = \"/b\"\n",
                "twice",
            ),
        ] {
            let p = write(dir.path(), "confd.toml", text);
            let e = Settings::load(Some(&p), Layer::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("confd.toml") && e.contains(want) && e.contains("line"),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn a_mistyped_key_of_liveconf_toml_says_which_was_meant() {
        let p = Path::new("/etc/liveconf/liveconf.toml");
        let e = Layer::from_text(p, "wiat = \"1s\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown field `wiat` (did you mean `wait`?)"),
            "{e}"
        );
        assert!(!e.contains("expected one of"), "{e}");
        // Nothing close: the list of keys stays.
        let e = Layer::from_text(p, "zzqx = 1\n").unwrap_err().to_string();
        assert!(e.contains("unknown field `zzqx`, expected one of `"), "{e}");
    }

    #[test]
    fn the_table_lists_every_key_of_liveconf_toml() {
        let e = toml::from_str::<Layer>("no_such_key = 1")
            .unwrap_err()
            .to_string();
        let mut listed: Vec<&str> = e
            .split("expected one of ")
            .nth(1)
            .unwrap_or("")
            .split(',')
            .map(|f| {
                f.trim()
                    .trim_matches(|c: char| c == '`' || c.is_whitespace())
            })
            .filter(|f| !f.is_empty())
            .collect();
        listed.sort_unstable();
        let mut ours: Vec<&str> = SETTINGS.iter().map(|d| d.name).collect();
        ours.sort_unstable();
        assert_eq!(listed, ours, "{e}");
    }
}
