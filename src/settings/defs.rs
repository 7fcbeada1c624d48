//! Every setting, defined once.
//!
//! One entry of the [`settings!`] table below is everything liveconf knows
//! about a setting: its `liveconf.toml` key (also its name in logs, and the
//! [`Layer`] field), its command-line flag and help, the subcommands that
//! use it, its confd.toml key, its default and meaning as the README's
//! settings table shows them, the [`Settings`] field it resolves to, and
//! what a SIGHUP does with a new value ([`Effect`]). From the table come
//! [`Layer`], its overlay, its reading from the command line, the clap
//! arguments ([`flag_args`]), the README table ([`markdown_table`]) and
//! [`reload_effects`].
//!
//! Adding a setting is one entry here, one field in [`Settings`] and its
//! resolution in [`Settings::load`]: the compiler names the last two (the
//! entry compares the field; the struct literal in `load` is exhaustive),
//! and the unit tests name the README and the SIGHUP walk in
//! `tests/it/sighup_settings.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::builder::ValueParser;
use serde::Deserialize;

use super::{BackendKind, LogFormat, Settings};

/// What a SIGHUP does with a changed setting; the daemon logs it, one line
/// per changed setting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Used from the next batch, the next timer or the next status write.
    Apply,
    /// Part of how the backend connects: a new connection (and snapshot)
    /// with the new value, when the backend in use reads it.
    Reconnect,
    /// Bound, started or set up once: the running daemon keeps the old
    /// value until it is restarted.
    Restart,
}

impl Effect {
    /// The README's word for it.
    pub fn word(self) -> &'static str {
        match self {
            Effect::Apply => "applied",
            Effect::Reconnect => "new connection",
            Effect::Restart => "restart",
        }
    }
}

/// One setting.
pub struct Def {
    /// The `liveconf.toml` key, the [`Layer`] field and the clap id.
    pub name: &'static str,
    /// The [`Settings`] field it resolves to (the tests check that every
    /// field is one).
    #[cfg_attr(not(test), allow(dead_code))]
    pub field: &'static str,
    /// The flag as a usage line: `--name <VALUE>`, `--name <VALUE>...`
    /// (repeatable), `--name` (a switch), or "" (no flag).
    pub flag: &'static str,
    /// `--help` text.
    pub help: &'static str,
    /// The default, as the README says it.
    pub default: &'static str,
    /// The meaning, as the README says it.
    pub doc: &'static str,
    /// What a SIGHUP does with a new value.
    pub sighup: Effect,
    /// confd.toml's key for the same setting, if it has one.
    pub confd: Option<&'static str>,
    /// The subcommands that use it (its flag is hidden from the others).
    pub used_by: &'static [&'static str],
    parser: fn() -> ValueParser,
    changed: fn(&Settings, &Settings) -> bool,
    given: fn(&Layer) -> bool,
    show: fn(&Settings) -> String,
}

/// How a flag takes values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagKind {
    /// `--name <VALUE>`, once.
    Value,
    /// `--name <VALUE>...`, repeatable.
    Repeat,
    /// `--name`, on or absent.
    Switch,
}

impl Def {
    /// `--name` without the dashes, the value name and how it takes
    /// values; None for a setting without a flag.
    pub fn parsed_flag(&self) -> Option<(&'static str, Option<&'static str>, FlagKind)> {
        let rest = self.flag.strip_prefix("--")?;
        match rest.split_once(" <") {
            None => Some((rest, None, FlagKind::Switch)),
            Some((long, v)) => match v.strip_suffix(">...") {
                Some(value) => Some((long, Some(value), FlagKind::Repeat)),
                None => Some((long, v.strip_suffix('>'), FlagKind::Value)),
            },
        }
    }

    /// The clap argument, for a setting with a flag.
    pub fn arg(&self) -> Option<clap::Arg> {
        use clap::ArgAction;
        let (long, value, kind) = self.parsed_flag()?;
        let mut a = clap::Arg::new(self.name)
            .long(long)
            .help(self.help)
            .global(true)
            .value_parser((self.parser)())
            .action(match kind {
                FlagKind::Value => ArgAction::Set,
                FlagKind::Repeat => ArgAction::Append,
                FlagKind::Switch => ArgAction::SetTrue,
            });
        if let Some(v) = value {
            a = a.value_name(v);
        }
        Some(a)
    }

    /// Whether `old` and `new` differ in this setting.
    pub fn changed(&self, old: &Settings, new: &Settings) -> bool {
        (self.changed)(old, new)
    }

    /// Whether `layer` sets this setting.
    pub fn given(&self, layer: &Layer) -> bool {
        (self.given)(layer)
    }

    /// Its value in `s`, as the log shows it (see [`Shown`]).
    pub fn show(&self, s: &Settings) -> String {
        (self.show)(s)
    }
}

/// A setting's value as a log line shows it: strings and paths quoted,
/// durations as they are written in liveconf.toml, no secret (a password
/// is `***`, an endpoint's credentials too).
pub trait Shown {
    /// The value, for a log line.
    fn shown(&self) -> String;
}

impl Shown for String {
    fn shown(&self) -> String {
        // An endpoint URL with credentials (refused, but never logged).
        match self.split_once("://") {
            Some((scheme, rest)) if rest.contains('@') => {
                format!(
                    "{:?}",
                    format!("{scheme}://***@{}", rest.rsplit('@').next().unwrap_or(""))
                )
            }
            _ => format!("{self:?}"),
        }
    }
}

impl Shown for PathBuf {
    fn shown(&self) -> String {
        format!("{:?}", self.display().to_string())
    }
}

impl Shown for std::time::Duration {
    fn shown(&self) -> String {
        format!("\"{}\"", humantime::format_duration(*self))
    }
}

impl Shown for crate::resource::Wait {
    fn shown(&self) -> String {
        let (min, max) = (
            humantime::format_duration(self.min),
            humantime::format_duration(self.max),
        );
        if self.is_off() {
            "\"0s\"".into()
        } else {
            format!("\"{min}:{max}\"")
        }
    }
}

impl Shown for BackendKind {
    fn shown(&self) -> String {
        format!("{:?}", self.name())
    }
}

impl Shown for LogFormat {
    fn shown(&self) -> String {
        match self {
            LogFormat::Text => "\"text\"".into(),
            LogFormat::Json => "\"json\"".into(),
        }
    }
}

impl Shown for super::Password {
    fn shown(&self) -> String {
        "***".into()
    }
}

impl Shown for crate::resource::PrefixRule {
    fn shown(&self) -> String {
        match self {
            crate::resource::PrefixRule::Join => "joined".into(),
            crate::resource::PrefixRule::Replace => "replacing (confd.toml)".into(),
        }
    }
}

macro_rules! shown_plain {
    ($($t:ty),*) => {$(
        impl Shown for $t {
            fn shown(&self) -> String {
                self.to_string()
            }
        }
    )*};
}
shown_plain!(bool, usize, SocketAddr);

impl<T: Shown> Shown for Option<T> {
    fn shown(&self) -> String {
        match self {
            Some(v) => v.shown(),
            None => "none".into(),
        }
    }
}

impl<T: Shown> Shown for Vec<T> {
    fn shown(&self) -> String {
        format!(
            "[{}]",
            self.iter().map(Shown::shown).collect::<Vec<_>>().join(", ")
        )
    }
}

/// The shortest `dns_min_interval`: a name with TTL 0 is asked at most
/// once a second.
pub const DNS_MIN_FLOOR: std::time::Duration = std::time::Duration::from_secs(1);

/// Refuses DNS intervals that cannot hold: a `dns_min_interval` below
/// [`DNS_MIN_FLOOR`], or longer than `dns_max_interval`. `min_text` and
/// `max_text` are the values as written (`None`: the default). The error
/// is the setting to blame (its line) and what is wrong.
pub fn check_dns_intervals(
    min: std::time::Duration,
    max: std::time::Duration,
    min_text: Option<&str>,
    max_text: Option<&str>,
) -> Result<(), (&'static str, String)> {
    let shown = |d: std::time::Duration, text: Option<&str>| match text {
        Some(t) => format!("{t:?}"),
        None => format!("\"{}\" (its default)", humantime::format_duration(d)),
    };
    if min < DNS_MIN_FLOOR {
        return Err((
            "dns_min_interval",
            format!(
                "dns_min_interval = {} is below 1s: a name whose TTL is 0 would be asked that \
                 often; write at least \"1s\"",
                shown(min, min_text)
            ),
        ));
    }
    if min > max {
        let key = if min_text.is_some() {
            "dns_min_interval"
        } else {
            "dns_max_interval"
        };
        return Err((
            key,
            format!(
                "dns_min_interval = {} is longer than dns_max_interval = {}: a name is looked \
                 up again no sooner than the first and no later than the second; make \
                 dns_min_interval at most dns_max_interval",
                shown(min, min_text),
                shown(max, max_text)
            ),
        ));
    }
    Ok(())
}

/// `dns_server` as written: an IP address alone (port 53) or `IP:PORT`
/// (`[IPv6]:PORT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DnsServer(pub SocketAddr);

impl std::str::FromStr for DnsServer {
    type Err = String;

    fn from_str(v: &str) -> Result<DnsServer, String> {
        let t = v.trim();
        let bare = t
            .strip_prefix('[')
            .and_then(|r| r.strip_suffix(']'))
            .unwrap_or(t);
        if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
            return Ok(DnsServer(SocketAddr::new(ip, 53)));
        }
        t.parse::<SocketAddr>().map(DnsServer).map_err(|_| {
            format!(
                "{v:?} is not a nameserver address: write IP or IP:PORT, like \"127.0.0.1\" \
                 (port 53), \"127.0.0.1:5353\" or \"[::1]:53\" (a name cannot be used: the \
                 nameserver is what resolves names)"
            )
        })
    }
}

impl std::fmt::Display for DnsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<'de> Deserialize<'de> for DnsServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<DnsServer, D::Error> {
        let v = String::deserialize(d)?;
        v.parse()
            .map_err(|e: String| serde::de::Error::custom(format!("dns_server = {e}")))
    }
}

impl FlagValue for DnsServer {
    fn parser() -> ValueParser {
        ValueParser::new(|v: &str| v.parse::<DnsServer>())
    }
    fn from_flag(m: &clap::ArgMatches, id: &str) -> Option<Self> {
        m.try_get_one::<DnsServer>(id).ok().flatten().copied()
    }
}

/// A [`Layer`] field's type as a command-line value.
pub trait FlagValue: Sized {
    /// How clap parses one value.
    fn parser() -> ValueParser;
    /// The value given on the command line (None when not given).
    fn from_flag(m: &clap::ArgMatches, id: &str) -> Option<Self>;
}

macro_rules! scalar_flag {
    ($($t:ty),*) => {$(
        impl FlagValue for $t {
            fn parser() -> ValueParser {
                clap::value_parser!($t).into()
            }
            fn from_flag(m: &clap::ArgMatches, id: &str) -> Option<Self> {
                m.try_get_one::<$t>(id).ok().flatten().cloned()
            }
        }
    )*};
}
scalar_flag!(String, PathBuf, SocketAddr, BackendKind, LogFormat, usize);

impl FlagValue for bool {
    fn parser() -> ValueParser {
        clap::value_parser!(bool)
    }
    /// A switch: given means `true`, absent leaves the file's value.
    fn from_flag(m: &clap::ArgMatches, id: &str) -> Option<Self> {
        m.try_get_one::<bool>(id)
            .ok()
            .flatten()
            .copied()
            .filter(|on| *on)
    }
}

impl<T: FlagValue + Clone + Send + Sync + 'static> FlagValue for Vec<T> {
    fn parser() -> ValueParser {
        T::parser()
    }
    fn from_flag(m: &clap::ArgMatches, id: &str) -> Option<Self> {
        m.try_get_many::<T>(id)
            .ok()
            .flatten()
            .map(|v| v.cloned().collect())
    }
}

/// The table: see the module documentation. Each entry:
/// `key: LayerType => settings_field { ... }`.
macro_rules! settings {
    ($(
        $name:ident : $ty:ty => $field:ident {
            flag: $flag:literal,
            help: $help:literal,
            used_by: [$($cmd:ident),*],
            confd: $confd:expr,
            sighup: $effect:ident,
            default: $default:literal,
            doc: $doc:literal $(,)?
        }
    ),* $(,)?) => {
        /// One layer of settings (the file, or the flags): every setting,
        /// optional.
        #[derive(Clone, Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct Layer {
            $(
                #[doc = $help]
                pub $name: Option<$ty>,
            )*
        }

        /// Every setting, in `--help` order.
        pub const SETTINGS: &[Def] = &[$(
            Def {
                name: stringify!($name),
                field: stringify!($field),
                flag: $flag,
                help: $help,
                default: $default,
                doc: $doc,
                sighup: Effect::$effect,
                confd: $confd,
                used_by: &[$(stringify!($cmd)),*],
                parser: <$ty as FlagValue>::parser,
                changed: |a: &Settings, b: &Settings| a.$field != b.$field,
                given: |l: &Layer| l.$name.is_some(),
                show: |s: &Settings| Shown::shown(&s.$field),
            },
        )*];

        impl Layer {
            /// `self` with every setting `top` sets replaced by `top`'s.
            pub fn overlay(mut self, top: Layer) -> Layer {
                $(
                    if top.$name.is_some() {
                        self.$name = top.$name;
                    }
                )*
                self
            }

            /// The settings given on the command line (see [`flag_args`]).
            pub fn from_matches(m: &clap::ArgMatches) -> Layer {
                Layer {
                    $( $name: <$ty as FlagValue>::from_flag(m, stringify!($name)), )*
                }
            }
        }
    };
}

settings! {
    confdir: PathBuf => confdir {
        flag: "--confdir <DIR>",
        help: "Configuration directory holding conf.d/ and templates/ [default: /etc/liveconf]",
        used_by: [render, check, status, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("confdir"),
        sighup: Apply,
        default: "`/etc/liveconf`; with `--config FILE` alone, FILE's directory",
        doc: "holds `conf.d/` and `templates/`",
    },
    backend: BackendKind => backend {
        flag: "--backend <BACKEND>",
        help: "Where keys come from [default: file when --file is given, else etcd]",
        used_by: [render, check],
        confd: Some("backend"),
        sighup: Reconnect,
        default: "`file` when `file` is set, else `etcd`",
        doc: "`etcd` or `file`",
    },
    endpoints: Vec<String> => endpoints {
        flag: "--endpoints <URL[,URL...]>",
        help: "etcd endpoints, comma-separated (e.g. https://etcd1:2379,https://etcd2:2379)",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("nodes"),
        sighup: Reconnect,
        default: "`http://127.0.0.1:2379` when neither `endpoints` nor `srv_domain` is set",
        doc: "etcd URLs: a list in the file (entries may be comma-separated), a comma-separated \
              string on the command line. With `ca_file` or `cert_file` set, `http://` becomes \
              `https://`",
    },
    srv_domain: String => srv_domain {
        flag: "--srv-domain <DOMAIN>",
        help: "Discover etcd endpoints from DNS SRV records of this domain",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("srv_domain"),
        sighup: Reconnect,
        default: "none",
        doc: "discover endpoints from the SRV records `SRV_RECORD.SRV_DOMAIN`, added to \
              `endpoints`; `https` when TLS is configured or the record name contains `-ssl`",
    },
    srv_record: String => srv_record {
        flag: "--srv-record <NAME>",
        help: "SRV record name to look up under --srv-domain [default: _etcd-client-ssl._tcp]",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("srv_record"),
        sighup: Reconnect,
        default: "`_etcd-client-ssl._tcp`",
        doc: "SRV record name looked up under `srv_domain`",
    },
    prefix: String => prefix {
        flag: "--prefix <P>",
        help: "Global key prefix, joined in front of every resource's prefix",
        used_by: [render, check, fleet, keys_import],
        confd: Some("prefix"),
        sighup: Apply,
        default: "`\"\"`",
        doc: "global key prefix, joined in front of every resource's `prefix`",
    },
    file: Vec<PathBuf> => files {
        flag: "--file <PATH>...",
        help: "Key file for the file backend (YAML, JSON or TOML); repeatable",
        used_by: [render, check],
        confd: Some("file"),
        sighup: Reconnect,
        default: "none",
        doc: "key files for the `file` backend (see below)",
    },
    ca_file: PathBuf => ca_file {
        flag: "--ca-file <FILE>",
        help: "CA certificate to verify etcd's certificate",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("client_cakeys"),
        sighup: Reconnect,
        default: "none",
        doc: "CA certificate that verifies etcd",
    },
    cert_file: PathBuf => cert_file {
        flag: "--cert-file <FILE>",
        help: "Client certificate for etcd",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("client_cert"),
        sighup: Reconnect,
        default: "none",
        doc: "client certificate (always with `key_file`)",
    },
    key_file: PathBuf => key_file {
        flag: "--key-file <FILE>",
        help: "Client key for etcd",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("client_key"),
        sighup: Reconnect,
        default: "none",
        doc: "client key (always with `cert_file`)",
    },
    username: String => username {
        flag: "--username <USERNAME>",
        help: "etcd user name",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("username"),
        sighup: Reconnect,
        default: "none",
        doc: "etcd user; needs `password_file`",
    },
    password_file: PathBuf => password_file {
        flag: "--password-file <FILE>",
        help: "File holding the etcd password",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: None,
        sighup: Reconnect,
        default: "none",
        doc: "file holding the etcd password (trailing newline ignored)",
    },
    state_dir: PathBuf => state_dir {
        flag: "--state-dir <DIR>",
        help: "State directory (status.json) [default: /var/lib/liveconf]",
        used_by: [render, status],
        confd: None,
        sighup: Apply,
        default: "`/var/lib/liveconf`",
        doc: "where `status.json` is written (a new value moves the owed reloads there and \
              leaves the old `status.json` pointing to it, see [Status](#status))",
    },
    metrics_addr: SocketAddr => metrics_addr {
        flag: "--metrics-addr <ADDR>",
        help: "Serve Prometheus metrics on this address (off unless given)",
        used_by: [render],
        confd: None,
        sighup: Restart,
        default: "off",
        doc: "serve Prometheus metrics on `http://ADDR/metrics` (`\"127.0.0.1:9410\"`); see \
              [Metrics](#metrics)",
    },
    log_level: String => log_level {
        flag: "--log-level <LEVEL>",
        help: "Log level: error, warn, info, debug, trace (or a tracing filter)",
        used_by: [render, check, status, fleet, fleet_wait, keys_import, keys_export],
        confd: Some("log-level"),
        sighup: Restart,
        default: "`info`",
        doc: "`error`, `warn`, `info`, `debug` (liveconf's own detail; its libraries stay at \
              `warn`), `trace` (everything, gRPC frames included), or a filter such as \
              `warn,liveconf=trace`",
    },
    log_format: LogFormat => log_format {
        flag: "--log-format <LOG_FORMAT>",
        help: "Log format",
        used_by: [render, check, status, fleet, fleet_wait, keys_import, keys_export],
        confd: None,
        sighup: Restart,
        default: "`text`",
        doc: "`text` or `json` (one object per line)",
    },
    wait: String => wait {
        flag: "--wait <MIN[:MAX]>",
        help: "Coalescing window MIN[:MAX] for every resource (\"0s\" turns it off) [default: 100ms:1s]",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`100ms:1s`",
        doc: "daemon coalescing window for resources that set none (see \
              [`wait`](#resource-files))",
    },
    node_name: String => node_name {
        flag: "--node-name <NAME>",
        help: "This host's name in status and fleet reports [default: the hostname]",
        used_by: [render],
        confd: None,
        sighup: Restart,
        default: "the hostname",
        doc: "this host's name in `status.json` and fleet reports (after a SIGHUP, \
              `status.json` shows the new name; the fleet report keeps the old one until a \
              restart)",
    },
    connect_timeout: String => connect_timeout {
        flag: "--connect-timeout <DURATION>",
        help: "Limit for connecting to etcd [default: 5s]",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: None,
        sighup: Reconnect,
        default: "`5s`",
        doc: "time limit for connecting to etcd",
    },
    request_timeout: String => request_timeout {
        flag: "--request-timeout <DURATION>",
        help: "Limit for each etcd request [default: 10s]",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: None,
        sighup: Reconnect,
        default: "`10s`",
        doc: "time limit for each etcd request",
    },
    resync_interval: String => resync_interval {
        flag: "--resync-interval <DURATION>",
        help: "Period of the resync safety net: a fresh snapshot compared with the mirror (\"0s\" off) [default: 10m]",
        used_by: [render],
        confd: None,
        sighup: Reconnect,
        default: "`10m`",
        doc: "daemon: how often to take a fresh snapshot and compare it with the in-memory \
              mirror, in case a watch event was missed (`\"0s\"` turns it off)",
    },
    dns_server: DnsServer => dns_server {
        flag: "--dns-server <ADDR>",
        help: "Nameserver for SRV discovery and the templates' DNS look-ups, IP or IP:PORT [default: /etc/resolv.conf]",
        used_by: [render, check, fleet, fleet_wait, keys_import, keys_export],
        confd: None,
        sighup: Reconnect,
        default: "`/etc/resolv.conf`",
        doc: "`\"IP\"` (port 53) or `\"IP:PORT\"` (`\"[IPv6]:PORT\"`) of the nameserver for SRV discovery (the record, and its targets' \
              addresses: without it the system resolver finds them) and the templates' DNS \
              functions (`lookup_ip`, `lookup_srv`, `lookup_txt`...; a new value serves them \
              from the next render)",
    },
    dns_min_interval: String => dns_min_interval {
        flag: "--dns-min-interval <DURATION>",
        help: "Shortest time between two look-ups of a template's DNS name (TTLs below it are raised; at least 1s, at most --dns-max-interval) [default: 5s]",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`5s`",
        doc: "daemon: a name a template looked up is looked up again when its TTL runs out, \
              but never sooner than this (also the first retry after a failure); at least \
              `1s` and at most `dns_max_interval`, other values are refused; see \
              [DNS as live state](#dns-as-live-state)",
    },
    dns_max_interval: String => dns_max_interval {
        flag: "--dns-max-interval <DURATION>",
        help: "Longest time between two look-ups of a template's DNS name (TTLs above it are lowered; the longest retry backoff) [default: 5m]",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`5m`",
        doc: "daemon: a name a template looked up is looked up again at least this often (TTLs \
              above it are lowered to it), and failed look-ups back off up to it",
    },
    dns_max_stale: String => dns_max_stale {
        flag: "--dns-max-stale <DURATION>",
        help: "How long the last good DNS answer serves while look-ups fail before its resources fail [default: 1h]",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`1h`",
        doc: "daemon: while look-ups of a name fail (timeout, SERVFAIL, no nameserver), renders \
              use its last good answer for this long; then the resources using it fail at \
              render (their files stay)",
    },
    reload_splay: String => reload_splay {
        flag: "--reload-splay <DURATION>",
        help: "Random delay up to DURATION before each reload command [default: 0s]",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`0s`",
        doc: "default `reload_splay` for resources that set none",
    },
    watch_confdir: bool => watch_confdir {
        flag: "--watch-confdir",
        help: "Reload automatically when conf.d/ or templates/ change (as on SIGHUP)",
        used_by: [render],
        confd: None,
        sighup: Apply,
        default: "`false`",
        doc: "daemon: reload when `conf.d/` or `templates/` change, as on SIGHUP",
    },
    report: bool => report {
        flag: "--report",
        help: "Publish this host's per-resource revision and sha256 under /liveconf/fleet/NODE (daemon)",
        used_by: [render],
        confd: None,
        sighup: Restart,
        default: "`false`",
        doc: "daemon: publish this host's per-resource revision and sha256 for `liveconf \
              fleet`; see [Fleet](#fleet)",
    },
    report_ttl: String => report_ttl {
        flag: "--report-ttl <DURATION>",
        help: "Lease of the fleet report: a dead host is reported gone this long after it died [default: 30s]",
        used_by: [render],
        confd: None,
        sighup: Restart,
        default: "`30s`",
        doc: "lease of the fleet report: a dead host is reported gone this long after it died",
    },
    max_output_bytes: usize => max_output_bytes {
        flag: "",
        help: "Largest rendered output accepted, in bytes",
        used_by: [render, check],
        confd: None,
        sighup: Apply,
        default: "`67108864` (64 MiB)",
        doc: "a resource rendering more than this is refused (a runaway template never fills a \
              disk)",
    },
}

/// The setting named `name`.
pub fn def(name: &str) -> Option<&'static Def> {
    SETTINGS.iter().find(|d| d.name == name)
}

/// The clap arguments of every setting that has a flag, in table order.
pub fn flag_args() -> impl Iterator<Item = clap::Arg> {
    SETTINGS.iter().filter_map(Def::arg)
}

/// What a confd.toml says that is no setting of liveconf's own, compared
/// on SIGHUP like the table's settings: (name in the log, [`Settings`]
/// field, effect, changed, shown).
type Extra = (
    &'static str,
    &'static str,
    Effect,
    fn(&Settings, &Settings) -> bool,
    fn(&Settings) -> String,
);
const CONFD_EXTRAS: &[Extra] = &[
    (
        "password",
        "password",
        Effect::Reconnect,
        |a, b| a.password != b.password,
        |s| s.password.shown(),
    ),
    (
        "noop",
        "noop",
        Effect::Restart,
        |a, b| a.noop != b.noop,
        |s| s.noop.shown(),
    ),
    (
        "sync-only",
        "no_reload",
        Effect::Restart,
        |a, b| a.no_reload != b.no_reload,
        |s| s.no_reload.shown(),
    ),
    (
        "prefix_rule",
        "prefix_rule",
        Effect::Apply,
        |a, b| a.prefix_rule != b.prefix_rule,
        |s| s.prefix_rule.shown(),
    ),
];

/// The [`Settings`] fields that are not settings: where they were read
/// from, and what reading them said.
#[cfg(test)]
const NOT_COMPARED: &[&str] = &["config_file", "warnings"];

/// Every setting that differs between `old` and `new`, with what a SIGHUP
/// does with it, in table order (then confd.toml's own: `password`, `noop`,
/// `sync-only`, `prefix_rule`).
#[cfg(test)]
pub fn reload_effects(old: &Settings, new: &Settings) -> Vec<(&'static str, Effect)> {
    SETTINGS
        .iter()
        .filter(|d| d.changed(old, new))
        .map(|d| (d.name, d.sighup))
        .chain(
            CONFD_EXTRAS
                .iter()
                .filter(|(_, _, _, changed, _)| changed(old, new))
                .map(|(name, _, effect, _, _)| (*name, *effect)),
        )
        .collect()
}

/// Every setting, table and confd.toml's own alike: (name, effect,
/// changed, shown).
type Compared = (
    &'static str,
    Effect,
    Box<dyn Fn(&Settings, &Settings) -> bool>,
    Box<dyn Fn(&Settings) -> String>,
);

fn compared() -> Vec<Compared> {
    SETTINGS
        .iter()
        .map(|d| -> Compared {
            (
                d.name,
                d.sighup,
                Box::new(move |a, b| d.changed(a, b)),
                Box::new(move |s| d.show(s)),
            )
        })
        .chain(
            CONFD_EXTRAS
                .iter()
                .map(|&(name, _, effect, changed, show)| -> Compared {
                    (name, effect, Box::new(changed), Box::new(show))
                }),
        )
        .collect()
}

/// The lines a SIGHUP logs about the settings, with their level (true:
/// a warning): one per changed setting, naming its old and new value and
/// what the reload did with it, and one for the restart-only settings a
/// restart still has to apply. `old`: the settings loaded before this
/// reload; `running`: those the daemon started with (what a restart-only
/// setting still has); `reconnected`: whether the backend's connection
/// identity changed (a new connection was opened); a [`Effect::Reconnect`]
/// setting that did not change it is one the backend in use does not read.
pub fn reload_lines(
    old: &Settings,
    new: &Settings,
    running: &Settings,
    reconnected: bool,
) -> Vec<(bool, &'static str, String)> {
    const RESTART: &str = "systemctl restart liveconf";
    let mut lines = Vec::new();
    let mut still: Vec<&str> = Vec::new();
    for (name, effect, changed, show) in compared() {
        let pending = effect == Effect::Restart && changed(running, new);
        if !changed(old, new) {
            if pending {
                still.push(name);
            }
            continue;
        }
        let from_to = format!("{name} changed from {} to {}", show(old), show(new));
        let line = match effect {
            Effect::Apply => (false, format!("{from_to}: applied")),
            Effect::Reconnect if reconnected => (
                false,
                format!("{from_to}: reconnecting to the backend with the new value"),
            ),
            Effect::Reconnect => (
                false,
                format!(
                    "{from_to}: applied (the {} backend does not use it)",
                    new.backend.name()
                ),
            ),
            // status.json follows at once; only the fleet report, which
            // registered under the name it started with, does not.
            Effect::Restart if name == "node_name" && pending => (
                true,
                format!(
                    "{from_to}: status.json shows {} now; only the fleet report needs a restart, \
                     and keeps {} until then ({RESTART})",
                    show(new),
                    show(running)
                ),
            ),
            Effect::Restart if pending => (
                true,
                format!(
                    "{from_to}: needs a restart; the running daemon keeps {} until then \
                     ({RESTART})",
                    show(running)
                ),
            ),
            Effect::Restart => (
                false,
                format!(
                    "{name} changed from {} back to {}, the value the daemon runs with: no \
                     restart needed for it any more",
                    show(old),
                    show(new)
                ),
            ),
        };
        lines.push((line.0, name, line.1));
    }
    if !still.is_empty() {
        lines.push((
            true,
            "",
            format!(
                "still needs a restart: {} (changed by an earlier reload; the running daemon \
                 keeps the values it started with until {RESTART})",
                still.join(", ")
            ),
        ));
    }
    lines
}

/// Logs [`reload_lines`].
pub fn log_reload_effects(old: &Settings, new: &Settings, running: &Settings, reconnected: bool) {
    for (warn, name, line) in reload_lines(old, new, running, reconnected) {
        match (warn, name.is_empty()) {
            (true, false) => tracing::warn!(setting = name, "{line}"),
            (true, true) => tracing::warn!("{line}"),
            (false, _) => tracing::info!(setting = name, "{line}"),
        }
    }
}

/// The README's settings table.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| key | flag | default | on SIGHUP | meaning |\n| --- | --- | --- | --- | --- |\n",
    );
    for d in SETTINGS {
        let flag = match d.parsed_flag() {
            None => "none".to_string(),
            Some((long, _, FlagKind::Repeat)) => format!("`--{long}` (repeatable)"),
            Some((long, _, _)) => format!("`--{long}`"),
        };
        out.push_str(&format!(
            "| `{}` | {flag} | {} | {} | {} |\n",
            d.name,
            d.default,
            d.sighup.word(),
            d.doc
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A value for each setting that differs from the base settings below.
    fn sample(name: &str) -> &'static str {
        match name {
            "confdir" => "\"other\"",
            "backend" => "\"file\"",
            "endpoints" => "[\"http://127.0.0.1:2380\"]",
            "srv_domain" => "\"example.com\"",
            "srv_record" => "\"_etcd._tcp\"",
            "prefix" => "\"/p\"",
            "file" => "[\"b.yaml\"]",
            "ca_file" => "\"/ca.pem\"",
            "cert_file" => "\"/c.pem\"",
            "key_file" => "\"/k.pem\"",
            "username" => "\"u\"",
            "password_file" => "\"/pw\"",
            "state_dir" => "\"/s\"",
            "metrics_addr" => "\"127.0.0.1:9410\"",
            "log_level" => "\"debug\"",
            "log_format" => "\"json\"",
            "wait" => "\"1s\"",
            "node_name" => "\"n2\"",
            "connect_timeout" => "\"7s\"",
            "request_timeout" => "\"9s\"",
            "resync_interval" => "\"1m\"",
            "dns_server" => "\"127.0.0.1:53\"",
            "dns_min_interval" => "\"1s\"",
            "dns_max_interval" => "\"1m\"",
            "dns_max_stale" => "\"10m\"",
            "reload_splay" => "\"5s\"",
            "watch_confdir" => "true",
            "report" => "true",
            "report_ttl" => "\"1m\"",
            "max_output_bytes" => "10",
            other => panic!("setting {other}: add a sample value to this test"),
        }
    }

    fn load(dir: &Path, text: &str) -> Settings {
        let p = dir.join("liveconf.toml");
        std::fs::write(&p, text).unwrap();
        Settings::load(Some(&p), Layer::default()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    const ETCD_BASE: &str = "backend = \"etcd\"\nfile = [\"a.yaml\"]\nnode_name = \"n1\"\n";
    const FILE_BASE: &str = "backend = \"file\"\nfile = [\"a.yaml\"]\nnode_name = \"n1\"\n";

    /// Each setting, changed alone, is named by `reload_effects` with its
    /// effect; and it is `Reconnect` exactly when some backend's
    /// connection identity changes with it.
    #[test]
    fn each_setting_changed_alone_is_named_with_its_effect() {
        let dir = tempfile::tempdir().unwrap();
        for base in [ETCD_BASE, FILE_BASE] {
            let before = load(dir.path(), base);
            assert_eq!(reload_effects(&before, &before), []);
        }
        for d in SETTINGS {
            let mut identity_changed = false;
            for base in [ETCD_BASE, FILE_BASE] {
                let before = load(dir.path(), base);
                // The sample replaces the base's own line for the key.
                let text: String = base
                    .lines()
                    .filter(|l| !l.starts_with(&format!("{} ", d.name)))
                    .map(|l| format!("{l}\n"))
                    .chain([format!("{} = {}\n", d.name, sample(d.name))])
                    .collect();
                let after = load(dir.path(), &text);
                let effects = reload_effects(&before, &after);
                // (The file base already reads key files.)
                if base == ETCD_BASE || d.name != "backend" {
                    assert_eq!(effects, [(d.name, d.sighup)], "{}", d.name);
                }
                let (a, b) = (
                    crate::backend::open(&before).identity(),
                    crate::backend::open(&after).identity(),
                );
                identity_changed |= a != b;
            }
            assert_eq!(
                identity_changed,
                d.sighup == Effect::Reconnect,
                "{}: a setting is Reconnect exactly when it is part of a backend's connection \
                 identity",
                d.name
            );
        }
    }

    /// Every field of `Settings` is compared on SIGHUP (through the table
    /// or as one of confd.toml's own), or is listed as no setting.
    #[test]
    fn every_settings_field_is_compared_on_sighup() {
        let dir = tempfile::tempdir().unwrap();
        let s = load(dir.path(), ETCD_BASE);
        let debug = format!("{s:#?}");
        // `{:#?}` puts each top-level field on a line of its own, indented
        // by four spaces.
        let mut fields: Vec<&str> = debug
            .lines()
            .filter_map(|l| l.strip_prefix("    "))
            .filter(|l| !l.starts_with(' '))
            .filter_map(|l| l.split_once(": ").map(|(f, _)| f))
            .collect();
        let mut known: Vec<&str> = SETTINGS
            .iter()
            .map(|d| d.field)
            .chain(CONFD_EXTRAS.iter().map(|(_, f, _, _, _)| *f))
            .chain(NOT_COMPARED.iter().copied())
            .collect();
        fields.sort_unstable();
        known.sort_unstable();
        assert_eq!(
            fields, known,
            "each Settings field is a setting of the table in settings/defs.rs, one of \
             confd.toml's own (CONFD_EXTRAS), or listed in NOT_COMPARED"
        );
    }

    #[test]
    fn flags_are_named_after_their_key() {
        for d in SETTINGS {
            if let Some((long, _, _)) = d.parsed_flag() {
                assert_eq!(long, d.name.replace('_', "-"), "{}", d.name);
            } else {
                assert_eq!(d.flag, "", "{}: a flag is written `--name <VALUE>`", d.name);
            }
            assert!(
                !d.help.ends_with('.'),
                "{}: clap help ends without a period",
                d.name
            );
        }
    }

    #[test]
    fn confd_keys_are_confds() {
        for d in SETTINGS {
            if let Some(k) = d.confd {
                assert!(
                    super::super::confd::confd_key(k),
                    "{}: {k} is no key of confd.toml",
                    d.name
                );
            }
        }
    }

    /// Trial finding 6: `dns_server` takes an address alone (port 53) or
    /// with a port; anything else says the form expected.
    #[test]
    fn dns_server_takes_an_ip_alone_or_with_a_port() {
        let dir = tempfile::tempdir().unwrap();
        for (v, want) in [
            ("127.0.0.1", "127.0.0.1:53"),
            ("127.0.0.1:5353", "127.0.0.1:5353"),
            ("::1", "[::1]:53"),
            ("[::1]", "[::1]:53"),
            ("[fd00::1]:5353", "[fd00::1]:5353"),
        ] {
            let s = load(dir.path(), &format!("{FILE_BASE}dns_server = \"{v}\"\n"));
            assert_eq!(s.dns_server, Some(want.parse().unwrap()), "{v}");
        }
        let p = dir.path().join("liveconf.toml");
        for bad in ["ns1.example", "127.0.0.1:", "127.0.0.1:99999", "1.2.3"] {
            std::fs::write(&p, format!("{FILE_BASE}\ndns_server = \"{bad}\"\n")).unwrap();
            let e = Settings::load(Some(&p), Layer::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("line 5")
                    && e.contains(&format!(
                        "dns_server = \"{bad}\" is not a nameserver address: write IP or IP:PORT"
                    )),
                "{bad}: {e}"
            );
            assert!(!e.contains("invalid socket address syntax"), "{e}");
        }
        // The same on the command line.
        let m = clap::Command::new("t")
            .args(flag_args())
            .try_get_matches_from(["t", "--dns-server", "10.0.0.1"])
            .unwrap();
        assert_eq!(
            Layer::from_matches(&m).dns_server.map(|d| d.to_string()),
            Some("10.0.0.1:53".into())
        );
        let e = clap::Command::new("t")
            .args(flag_args())
            .try_get_matches_from(["t", "--dns-server", "ns1.example"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("write IP or IP:PORT"), "{e}");
    }

    /// Trial finding 7: a `dns_min_interval` above `dns_max_interval`, or
    /// below 1s, is refused (naming the line), not silently reconciled.
    #[test]
    fn dns_intervals_out_of_order_or_below_a_second_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("liveconf.toml");
        for (text, want) in [
            (
                "dns_min_interval = \"1m\"\ndns_max_interval = \"20s\"\n",
                "line 4: dns_min_interval = \"1m\" is longer than dns_max_interval = \"20s\"",
            ),
            (
                "dns_min_interval = \"10m\"\n",
                "line 4: dns_min_interval = \"10m\" is longer than dns_max_interval = \"5m\" (its default)",
            ),
            (
                "dns_min_interval = \"0s\"\n",
                "line 4: dns_min_interval = \"0s\" is below 1s",
            ),
            (
                "\ndns_min_interval = \"500ms\"\n",
                "line 5: dns_min_interval = \"500ms\" is below 1s",
            ),
        ] {
            std::fs::write(&p, format!("{FILE_BASE}{text}")).unwrap();
            let e = Settings::load(Some(&p), Layer::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        // From the command line: blamed on it.
        std::fs::write(&p, FILE_BASE).unwrap();
        let flags = Layer {
            dns_min_interval: Some("0s".into()),
            ..Layer::default()
        };
        let e = Settings::load(Some(&p), flags).unwrap_err().to_string();
        assert!(
            e.starts_with("command line: dns_min_interval = \"0s\" is below 1s"),
            "{e}"
        );
        // 1s, and equal intervals, are fine.
        let s = load(
            dir.path(),
            &format!("{FILE_BASE}dns_min_interval = \"1s\"\ndns_max_interval = \"1s\"\n"),
        );
        assert_eq!(s.dns_timing().min, std::time::Duration::from_secs(1));
    }

    /// The README's settings table is this table.
    #[test]
    fn the_readme_settings_table_is_generated_from_the_table() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's settings table differs from the definitions in src/settings/defs.rs; \
             replace it with the output of `liveconf generate settings`:\n{table}"
        );
        // The list of common options names every flag.
        let common = readme
            .split_once("Common options:")
            .and_then(|(_, rest)| rest.split_once("Each one matches a key"))
            .map(|(list, _)| list)
            .expect("README.md: the paragraph listing the common options");
        for d in SETTINGS {
            if let Some((long, value, _)) = d.parsed_flag() {
                assert!(
                    common.contains(&format!("`--{long} "))
                        || common.contains(&format!("`--{long}`")),
                    "README.md's common options lack --{long} ({value:?})"
                );
            }
        }
    }
}
