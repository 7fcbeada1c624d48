//! confd's settings file: which format a settings file is in, and
//! confd's `confd.toml` read as confd reads it and mapped onto a [`Layer`]
//! (the rules are in the documentation of [`super`]).

use std::path::{Path, PathBuf};

use super::{BackendKind, Layer, Password, SettingsError, defs};
use crate::resource::toml_error;

/// For an "unknown field `nodes`" error on a key that is confd's: how to
/// get the file read as confd's.
pub(super) fn confd_hint(message: &str) -> String {
    let key = message
        .split_once("unknown field `")
        .and_then(|(_, rest)| rest.split_once('`'))
        .map(|(k, _)| k.to_ascii_lowercase());
    match key {
        Some(k) if confd_only(&k) => format!(
            " (`{k}` is a setting of confd's: liveconf reads a file as confd's settings when it \
             is named confd.toml, or when it is not named liveconf.toml and uses none of \
             liveconf's own keys)"
        ),
        _ => String::new(),
    }
}

/// How confd types a setting (BurntSushi/toml refuses any other type).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    Int,
    /// A list of strings (a single string is taken as a list of one).
    List,
}

/// Every key confd's `confd.toml` has (lower case: confd matches names
/// regardless of case), from confd's `config.go`, `backends/config.go` and
/// `resource/template/resource.go`.
const CONFD_KEYS: &[(&str, Kind)] = &[
    ("backend", Kind::Str),
    ("confdir", Kind::Str),
    ("nodes", Kind::List),
    ("prefix", Kind::Str),
    ("scheme", Kind::Str),
    ("srv_domain", Kind::Str),
    ("srv_record", Kind::Str),
    ("client_cert", Kind::Str),
    ("client_key", Kind::Str),
    ("client_cakeys", Kind::Str),
    ("client_insecure", Kind::Bool),
    ("basic_auth", Kind::Bool),
    ("username", Kind::Str),
    ("password", Kind::Str),
    ("file", Kind::List),
    ("filter", Kind::Str),
    ("log-level", Kind::Str),
    ("interval", Kind::Int),
    ("watch", Kind::Bool),
    ("noop", Kind::Bool),
    ("sync-only", Kind::Bool),
    ("keepstagefile", Kind::Bool),
    ("onetime", Kind::Bool),
    ("auth_token", Kind::Str),
    ("auth_type", Kind::Str),
    ("app_id", Kind::Str),
    ("user_id", Kind::Str),
    ("role_id", Kind::Str),
    ("secret_id", Kind::Str),
    ("path", Kind::Str),
    ("table", Kind::Str),
    ("separator", Kind::Str),
];

/// A key both confd's settings file and `liveconf.toml` have, for the
/// same setting.
fn shared_key(key: &str) -> bool {
    defs::def(key).is_some_and(|d| d.confd == Some(key))
}

/// confd's backends liveconf cannot read.
const CONFD_OTHER_BACKENDS: &[&str] = &[
    "etcd",
    "consul",
    "vault",
    "redis",
    "zookeeper",
    "dynamodb",
    "ssm",
    "rancher",
    "env",
];

/// confd's default confdir (a confd file that sets none means this one).
pub const CONFD_CONFDIR: &str = "/etc/confd";

/// confd's SRV record for the etcdv3 backend when only `srv_domain` is
/// given (`_BACKEND._tcp.DOMAIN`).
const CONFD_SRV_RECORD: &str = "_etcdv3._tcp";

/// A key of confd's settings file (lower case).
#[cfg(test)]
pub(super) fn confd_key(key: &str) -> bool {
    confd_kind(key).is_some()
}

fn confd_kind(key: &str) -> Option<Kind> {
    CONFD_KEYS.iter().find(|(k, _)| *k == key).map(|(_, t)| *t)
}

/// A key (lower case) only confd's settings file has.
fn confd_only(key: &str) -> bool {
    confd_kind(key).is_some() && !shared_key(key)
}

/// A key (exactly as written) only `liveconf.toml` has.
fn liveconf_only(key: &str) -> bool {
    defs::def(key).is_some() && !shared_key(key)
}

/// Which format a settings file is written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileFormat {
    /// liveconf's own `liveconf.toml` (strict).
    Liveconf,
    /// confd's `confd.toml`.
    Confd,
}

/// The top-level keys of a settings file, with their spans, in file order;
/// None when the text is not a TOML table (the strict reader says why).
type Entries = Vec<(toml::Spanned<String>, toml::Spanned<toml::Value>)>;

fn entries(text: &str) -> Option<Entries> {
    let map: std::collections::BTreeMap<toml::Spanned<String>, toml::Spanned<toml::Value>> =
        toml::from_str(text).ok()?;
    let mut v: Entries = map.into_iter().collect();
    v.sort_by_key(|(k, _)| k.span().start);
    Some(v)
}

/// Which format the settings file at `path` is in (the rule in the module
/// documentation).
pub fn detect(path: &Path, text: &str) -> FileFormat {
    match path.file_name().and_then(|n| n.to_str()) {
        Some("confd.toml") => return FileFormat::Confd,
        Some("liveconf.toml") => return FileFormat::Liveconf,
        _ => {}
    }
    let Some(entries) = entries(text) else {
        return FileFormat::Liveconf;
    };
    let confd = entries.iter().any(|(k, v)| {
        let lower = k.get_ref().to_ascii_lowercase();
        confd_only(&lower)
            || (lower == "backend"
                && v.get_ref()
                    .as_str()
                    .is_some_and(|b| b != "etcd" && b != "file"))
    });
    let liveconf = entries.iter().any(|(k, _)| liveconf_only(k.get_ref()));
    if confd && !liveconf {
        FileFormat::Confd
    } else {
        FileFormat::Liveconf
    }
}

/// What a confd settings file says beyond what a [`Layer`] holds.
#[derive(Clone, Debug, Default)]
pub struct ConfdExtras {
    /// `password` (with `basic_auth = true`).
    pub password: Option<Password>,
    /// `noop = true`.
    pub noop: bool,
    /// `sync-only = true`.
    pub sync_only: bool,
    /// The file names a backend liveconf cannot read: this error, raised
    /// unless `--backend` chooses one.
    pub backend_error: Option<String>,
    /// One line per setting that cannot be honoured ("FILE line N: ...").
    pub warnings: Vec<String>,
}

/// 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// Splits confd's full SRV name (`_etcd-client._tcp.example.com`) into
/// liveconf's record (`_etcd-client._tcp`) and domain (`example.com`).
fn split_srv_name(name: &str) -> Option<(String, String)> {
    let labels: Vec<&str> = name.trim_end_matches('.').split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    let n = labels
        .iter()
        .take_while(|l| l.starts_with('_'))
        .count()
        .max(1);
    if n >= labels.len() {
        return None;
    }
    Some((labels[..n].join("."), labels[n..].join(".")))
}

/// confd's log levels (logrus) as liveconf's.
fn confd_log_level(level: &str) -> Option<&'static str> {
    Some(match level.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => "error",
        "warn" | "warning" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

/// Reads confd's settings (`text`, the content of `path`) into a [`Layer`]
/// and what a layer cannot hold.
///
/// | confd | liveconf |
/// | --- | --- |
/// | `backend = "etcdv3"` / `"file"` | `backend = "etcd"` / `"file"`; any other backend is an error |
/// | `nodes` (`scheme` completes those without one) | `endpoints` |
/// | `srv_domain`, `srv_record` (a full name) | `srv_domain`, `srv_record` (split) |
/// | `prefix` | `prefix`, replacing each resource's prefix |
/// | `client_cakeys`, `client_cert`, `client_key` | `ca_file`, `cert_file`, `key_file` |
/// | `basic_auth`, `username`, `password` | `username` and an in-memory password |
/// | `confdir` (default `/etc/confd`) | `confdir` |
/// | `log-level` | `log_level` |
/// | `file` | `file` |
/// | `noop`, `sync-only` | `render --noop`, `render --no-reload` |
/// | `watch` | accepted: the daemon always watches |
/// | `interval`, and the rest | warned about and ignored |
pub fn confd_layer(path: &Path, text: &str) -> Result<(Layer, ConfdExtras), SettingsError> {
    let file = path.display().to_string();
    let err = |line: usize, message: String| SettingsError {
        where_: file.clone(),
        message: format!("line {line}: {message}"),
    };
    let entries = entries(text).ok_or_else(|| SettingsError {
        where_: file.clone(),
        message: match toml::from_str::<toml::Table>(text) {
            Err(e) => toml_error(text, &e),
            Ok(_) => "not a TOML table".into(),
        },
    })?;
    let mut extras = ConfdExtras::default();
    let mut notes: Vec<(usize, String)> = Vec::new();
    let mut warn = |line: usize, message: String| notes.push((line, message));

    // Each known key once, type-checked as confd would.
    let mut known: std::collections::BTreeMap<&'static str, (usize, toml::Value)> =
        Default::default();
    for (k, v) in entries {
        let line = line_of(text, k.span().start);
        let written = k.into_inner();
        let lower = written.to_ascii_lowercase();
        let Some((name, kind)) = CONFD_KEYS.iter().find(|(n, _)| *n == lower).copied() else {
            if let Some(d) = defs::def(&written).filter(|_| liveconf_only(&written)) {
                let instead = match (d.confd, d.parsed_flag()) {
                    (Some(theirs), _) => format!("confd's name for it is `{theirs}`"),
                    (None, Some((long, _, _))) => format!(
                        "give it on the command line (--{long}) or write a liveconf.toml instead"
                    ),
                    (None, None) => "write a liveconf.toml instead".to_string(),
                };
                return Err(err(
                    line,
                    format!(
                        "`{written}` is a liveconf setting, but this file is read as confd's \
                         settings: {instead}"
                    ),
                ));
            }
            warn(
                line,
                format!("unknown setting `{written}` is ignored (confd ignores it too)"),
            );
            continue;
        };
        let value = v.into_inner();
        let ok = match kind {
            Kind::Str => value.is_str(),
            Kind::Bool => value.is_bool(),
            Kind::Int => value.is_integer(),
            Kind::List => {
                value.is_str()
                    || value
                        .as_array()
                        .is_some_and(|a| a.iter().all(toml::Value::is_str))
            }
        };
        if !ok {
            let want = match kind {
                Kind::Str => "a string",
                Kind::Bool => "true or false",
                Kind::Int => "an integer",
                Kind::List => "a list of strings",
            };
            return Err(err(line, format!("`{written}` must be {want}")));
        }
        if let Some((first, _)) = known.insert(name, (line, value)) {
            return Err(err(
                line,
                format!(
                    "`{written}` is given twice (also line {first}; confd matches setting \
                     names regardless of case)"
                ),
            ));
        }
    }
    let line = |k: &str| known.get(k).map(|(l, _)| *l).unwrap_or(0);
    // Empty strings are confd's "not set"; values are taken as written (a
    // password may begin or end with a space).
    let string = |k: &str| {
        known
            .get(k)
            .and_then(|(_, v)| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let flag = |k: &str| known.get(k).and_then(|(_, v)| v.as_bool()).unwrap_or(false);
    let list = |k: &str| -> Vec<String> {
        match known.get(k).map(|(_, v)| v) {
            Some(toml::Value::String(s)) => vec![s.clone()],
            Some(toml::Value::Array(a)) => a
                .iter()
                .filter_map(toml::Value::as_str)
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => Vec::new(),
        }
    };

    let mut layer = Layer::default();
    let backend = string("backend");
    layer.backend = match backend.as_deref() {
        // confd 0.17 reads etcd v3 for "etcd" too, and "etcd" is its
        // default ("etcd v2 has been deprecated and etcdv3 is now the client
        // for both the etcd and etcdv3 backends").
        Some("etcdv3") | Some("etcd") | None => Some(BackendKind::Etcd),
        Some("file") => Some(BackendKind::File),
        other => {
            let (name, at) = match other {
                Some(b) => (b, format!("line {}: ", line("backend"))),
                None => ("etcd", String::new()),
            };
            let what = match other {
                Some("etcd") => {
                    "backend \"etcd\" is etcd's v2 API in confd's releases (up to 0.16)".to_string()
                }
                Some(b) if CONFD_OTHER_BACKENDS.contains(&b) => {
                    format!("backend {b:?} is not supported")
                }
                Some(b) => format!("backend {b:?} is not a backend confd or liveconf knows"),
                None => {
                    "no backend is set, and confd's default, \"etcd\", is etcd's v2 API".to_string()
                }
            };
            extras.backend_error = Some(format!(
                "{at}{what}: liveconf reads etcd v3 (backend = \"etcdv3\") or key files \
                 (backend = \"file\"){}",
                if name == "etcd" {
                    "; keys written with etcdctl's v3 API (its default since etcd 3.4) need \
                     backend = \"etcdv3\""
                } else {
                    ""
                }
            ));
            None
        }
    };

    // confd applies `scheme` only to nodes found through DNS SRV; a node
    // written without a scheme is dialled over TLS when client
    // certificates are configured, plain HTTP otherwise (etcd's clientv3).
    if let Some(scheme) = string("scheme")
        && scheme != "http"
        && scheme != "https"
    {
        return Err(err(
            line("scheme"),
            format!("scheme {scheme:?}: expected \"http\" or \"https\""),
        ));
    }
    let tls = string("client_cert").is_some() || string("client_cakeys").is_some();
    let nodes: Vec<String> = list("nodes")
        .into_iter()
        .map(|n| {
            if n.contains("://") {
                n
            } else if tls {
                format!("https://{n}")
            } else {
                format!("http://{n}")
            }
        })
        .collect();
    layer.endpoints = (!nodes.is_empty()).then_some(nodes);

    // confd: a full SRV name in srv_record wins; srv_domain alone means
    // `_etcdv3._tcp.DOMAIN`.
    if let Some(record) = string("srv_record") {
        let (rec, domain) = split_srv_name(&record).ok_or_else(|| {
            err(
                line("srv_record"),
                format!(
                    "srv_record {record:?}: expected a full SRV name such as \
                     \"_etcd-client._tcp.example.com\""
                ),
            )
        })?;
        layer.srv_record = Some(rec);
        layer.srv_domain = Some(domain);
    } else if let Some(domain) = string("srv_domain") {
        layer.srv_domain = Some(domain);
        layer.srv_record = Some(CONFD_SRV_RECORD.into());
    }

    layer.prefix = string("prefix");
    layer.confdir = Some(PathBuf::from(
        string("confdir").unwrap_or_else(|| CONFD_CONFDIR.into()),
    ));
    layer.ca_file = string("client_cakeys").map(PathBuf::from);
    layer.cert_file = string("client_cert").map(PathBuf::from);
    layer.key_file = string("client_key").map(PathBuf::from);

    let files: Vec<PathBuf> = list("file").into_iter().map(PathBuf::from).collect();
    layer.file = (!files.is_empty()).then_some(files);

    if let Some(level) = string("log-level") {
        let mapped = confd_log_level(&level).ok_or_else(|| {
            err(
                line("log-level"),
                format!(
                    "log-level {level:?}: expected one of confd's levels: panic, fatal, error, \
                     warning, info, debug"
                ),
            )
        })?;
        layer.log_level = Some(mapped.into());
    }

    let (username, password) = (string("username"), string("password"));
    if flag("basic_auth") {
        match &username {
            Some(u) => {
                layer.username = Some(u.clone());
                extras.password = password.map(Password::new);
            }
            None => warn(
                line("basic_auth"),
                "basic_auth = true without a username: no authentication".into(),
            ),
        }
    } else {
        for k in ["username", "password"] {
            if string(k).is_some() {
                warn(
                    line(k),
                    format!("`{k}` is ignored: confd uses it only with basic_auth = true"),
                );
            }
        }
    }
    if extras.password.is_some() {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            warn(
                line("password"),
                format!(
                    "the file holds a password and is readable by others (mode {:04o}); \
                     chmod 600 it",
                    meta.permissions().mode() & 0o7777
                ),
            );
        }
    }

    extras.noop = flag("noop");
    extras.sync_only = flag("sync-only");
    if extras.sync_only {
        warn(
            line("sync-only"),
            "sync-only = true skips reload commands (as --no-reload); check commands still \
             run: liveconf has no way to skip them"
                .into(),
        );
    }
    if known.contains_key("interval") {
        warn(
            line("interval"),
            "`interval` is ignored: liveconf watches etcd and renders each change as it \
             happens (no polling)"
                .into(),
        );
    }
    if flag("client_insecure") {
        warn(
            line("client_insecure"),
            "client_insecure = true is not honoured: liveconf always verifies etcd's \
             certificate (give its CA in client_cakeys)"
                .into(),
        );
    }
    if flag("onetime") {
        warn(
            line("onetime"),
            "onetime = true is ignored: run `liveconf render --once` instead".into(),
        );
    }
    if flag("keepstagefile") {
        warn(
            line("keepstagefile"),
            "keepstagefile = true is ignored: liveconf never keeps staged files".into(),
        );
    }
    if let Some(filter) = string("filter")
        && filter != "*"
    {
        warn(
            line("filter"),
            format!(
                "filter {filter:?} is ignored: liveconf reads the key files listed in `file` \
                 and does not search directories"
            ),
        );
    }
    for (k, owner) in [
        ("auth_token", "vault"),
        ("auth_type", "vault"),
        ("app_id", "vault"),
        ("user_id", "vault"),
        ("role_id", "vault"),
        ("secret_id", "vault"),
        ("path", "vault"),
        ("table", "dynamodb"),
        ("separator", "redis"),
    ] {
        if string(k).is_some() {
            warn(
                line(k),
                format!("`{k}` is a setting of confd's {owner} backend; ignored"),
            );
        }
    }

    // In file order.
    notes.sort_by_key(|(line, _)| *line);
    extras.warnings = notes
        .into_iter()
        .map(|(line, message)| format!("{file} line {line}: {message}"))
        .collect();

    // Relative paths stay relative to the working directory, as confd
    // reads them (liveconf's own file resolves them against its directory).
    if layer.backend == Some(BackendKind::File) {
        for f in layer.file.iter().flatten() {
            if f.is_dir() {
                return Err(err(
                    line("file"),
                    format!(
                        "file {}: is a directory; liveconf reads key files, not directories \
                         (list the files)",
                        f.display()
                    ),
                ));
            }
        }
    }
    Ok((layer, extras))
}
