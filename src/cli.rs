//! The command line: clap definitions, settings and exit codes, and the
//! small commands (`status`, `fleet`, `generate`). `render` goes to
//! [`crate::once`] or [`crate::daemon`]. Errors become one message and an
//! exit code here; nothing below this module exits the process.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::anyhow;
use clap::{Args, Parser, Subcommand};

use crate::apply::Options;
use crate::resource;
use crate::settings::{BackendKind, Layer, LogFormat, Settings};
use crate::store::{Change, Key, Val};

/// Prints a line on stdout; a closed pipe (`liveconf status | head`) is
/// not an error worth a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit codes (also listed in `--help`).
pub mod exit {
    /// Everything rendered and is in sync (or was installed, checked and reloaded).
    pub const OK: u8 = 0;
    /// `--noop`/`--diff` with `--exit-code`: some file would change.
    pub const CHANGES: u8 = 1;
    /// One or more resources failed (load, render, check, install or reload).
    pub const FAILED: u8 = 2;
    /// Invalid settings, command line or conf.d directory.
    pub const CONFIG: u8 = 3;
    /// The backend could not be read (etcd unreachable, key file invalid).
    pub const BACKEND: u8 = 4;
}

const EXIT_CODES_HELP: &str = "\
Exit codes:
  0  everything rendered and is in sync, or was installed, checked and reloaded
  1  with --noop/--diff and --exit-code: some file would change
  2  one or more resources failed (load, render, check, install or reload); each is named
  3  invalid settings, command line or conf.d directory
  4  the backend could not be read (etcd unreachable, key file missing or invalid)";

/// liveconf keeps configuration files in step with live state in etcd.
#[derive(Parser, Debug)]
#[command(name = "liveconf", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Render every resource; without --once, keep watching and re-render on change.
    #[command(after_help = EXIT_CODES_HELP)]
    Render(RenderArgs),
    /// Parse every resource and render it in memory; write nothing.
    #[command(after_help = EXIT_CODES_HELP)]
    Check(CheckArgs),
    /// Report the last outcome of every resource (from status.json), like a monitoring plugin.
    #[command(after_help = STATUS_CODES_HELP)]
    Status(StatusArgs),
    /// List the hosts that are stale, failing, missing a file, gone, or whose files diverge from their peers.
    #[command(after_help = FLEET_CODES_HELP)]
    Fleet(FleetArgs),
    /// Write the man page or shell completions (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

const STATUS_CODES_HELP: &str = "\
Exit codes (monitoring-plugin convention):
  0  OK: every resource healthy, the backend heard from within --max-age
  1  WARNING: backend unavailable, or last event older than --max-age
  2  CRITICAL: a resource is failing or not rendered yet, the daemon that wrote
     status.json is not running, or last event older than twice --max-age
  3  UNKNOWN: status.json missing or unreadable";

const FLEET_CODES_HELP: &str = "\
Exit codes:
  0  every host is in sync
  1  some host is stale, failing, missing a file, gone or diverging (each is listed)
  3  invalid settings or command line (or --forget of a host that is alive)
  4  etcd could not be read";

/// `liveconf status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// WARNING when the backend was last heard from longer ago than this, CRITICAL at twice it.
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    pub format: StatusFormat,
    #[command(flatten)]
    pub common: Common,
}

/// Output formats of `liveconf status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum StatusFormat {
    /// For people.
    Text,
    /// For scripts.
    Json,
    /// One line and exit code, for Nagios/Icinga.
    Nagios,
}

/// `liveconf fleet`.
#[derive(Args, Debug)]
pub struct FleetArgs {
    /// A host behind the newest change of its keys for longer than this is stale.
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub max_lag: String,
    /// Remove NODE's registration (a host that is gone for good).
    #[arg(long, value_name = "NODE")]
    pub forget: Option<String>,
    /// Output as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `liveconf generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write: man, bash, zsh or fish.
    pub what: String,
    /// With `man`: the page of this subcommand (render, check, status,
    /// fleet), as liveconf-SUBCOMMAND(1).
    pub subcommand: Option<String>,
}

/// Options each subcommand accepts (through the shared common options) but
/// does not use: hidden from its --help, man page and completions.
const UNUSED: [(&str, &[&str]); 3] = [
    (
        "check",
        &[
            "state_dir",
            "metrics_addr",
            "wait",
            "node_name",
            "resync_interval",
            "reload_splay",
            "watch_confdir",
            "report",
            "report_ttl",
        ],
    ),
    (
        "status",
        &[
            "backend",
            "endpoints",
            "srv_domain",
            "srv_record",
            "prefix",
            "file",
            "ca_file",
            "cert_file",
            "key_file",
            "username",
            "password_file",
            "metrics_addr",
            "wait",
            "node_name",
            "connect_timeout",
            "request_timeout",
            "resync_interval",
            "dns_server",
            "reload_splay",
            "watch_confdir",
            "report",
            "report_ttl",
        ],
    ),
    (
        "fleet",
        &[
            "backend",
            "file",
            "state_dir",
            "metrics_addr",
            "wait",
            "node_name",
            "resync_interval",
            "reload_splay",
            "watch_confdir",
            "report",
            "report_ttl",
        ],
    ),
];

/// The command-line definition, with each subcommand's unused common
/// options hidden.
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    for (sub, hidden) in UNUSED {
        cmd = cmd.mut_subcommand(sub, |mut c| {
            for id in hidden {
                c = c.mut_arg(*id, |a| a.hide(true));
            }
            c
        });
    }
    cmd
}

/// Options every command takes.
#[derive(Args, Debug, Default, Clone)]
pub struct Common {
    /// Settings file [default: CONFDIR/liveconf.toml, when it exists].
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// Configuration directory holding conf.d/ and templates/ [default: /etc/liveconf].
    #[arg(long, value_name = "DIR", global = true)]
    pub confdir: Option<PathBuf>,
    /// Where keys come from [default: file when --file is given, else etcd].
    #[arg(long, value_enum, global = true)]
    pub backend: Option<BackendKind>,
    /// etcd endpoints, comma-separated (e.g. https://etcd1:2379,https://etcd2:2379).
    #[arg(long, value_name = "URL[,URL...]", global = true)]
    pub endpoints: Option<String>,
    /// Discover etcd endpoints from DNS SRV records of this domain.
    #[arg(long, value_name = "DOMAIN", global = true)]
    pub srv_domain: Option<String>,
    /// SRV record name to look up under --srv-domain [default: _etcd-client-ssl._tcp].
    #[arg(long, value_name = "NAME", global = true)]
    pub srv_record: Option<String>,
    /// Global key prefix, joined in front of every resource's prefix.
    #[arg(long, value_name = "P", global = true)]
    pub prefix: Option<String>,
    /// Key file for the file backend (YAML, JSON or TOML); repeatable.
    #[arg(long, value_name = "PATH", global = true)]
    pub file: Vec<PathBuf>,
    /// CA certificate to verify etcd's certificate.
    #[arg(long, value_name = "FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, value_name = "FILE", global = true)]
    pub cert_file: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, value_name = "FILE", global = true)]
    pub key_file: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, global = true)]
    pub username: Option<String>,
    /// File holding the etcd password.
    #[arg(long, value_name = "FILE", global = true)]
    pub password_file: Option<PathBuf>,
    /// State directory (status.json) [default: /var/lib/liveconf].
    #[arg(long, value_name = "DIR", global = true)]
    pub state_dir: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (off unless given).
    #[arg(long, value_name = "ADDR", global = true)]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log level: error, warn, info, debug, trace (or a tracing filter).
    #[arg(long, value_name = "LEVEL", global = true)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum, global = true)]
    pub log_format: Option<LogFormat>,
    /// Coalescing window MIN[:MAX] for every resource ("0s" turns it off) [default: 100ms:1s].
    #[arg(long, value_name = "MIN[:MAX]", global = true)]
    pub wait: Option<String>,
    /// This host's name in status and fleet reports [default: the hostname].
    #[arg(long, value_name = "NAME", global = true)]
    pub node_name: Option<String>,
    /// Limit for connecting to etcd [default: 5s].
    #[arg(long, value_name = "DURATION", global = true)]
    pub connect_timeout: Option<String>,
    /// Limit for each etcd request [default: 10s].
    #[arg(long, value_name = "DURATION", global = true)]
    pub request_timeout: Option<String>,
    /// Period of the resync safety net: a fresh snapshot compared with the mirror ("0s" off) [default: 10m].
    #[arg(long, value_name = "DURATION", global = true)]
    pub resync_interval: Option<String>,
    /// Nameserver for SRV look-ups, IP:PORT [default: /etc/resolv.conf].
    #[arg(long, value_name = "ADDR", global = true)]
    pub dns_server: Option<std::net::SocketAddr>,
    /// Random delay up to DURATION before each reload command [default: 0s].
    #[arg(long, value_name = "DURATION", global = true)]
    pub reload_splay: Option<String>,
    /// Reload automatically when conf.d/ or templates/ change (as on SIGHUP).
    #[arg(long, global = true)]
    pub watch_confdir: bool,
    /// Publish this host's per-resource revision and sha256 under /liveconf/fleet/NODE (daemon).
    #[arg(long, global = true)]
    pub report: bool,
    /// Lease of the fleet report: a dead host is reported gone this long after it died [default: 30s].
    #[arg(long, value_name = "DURATION", global = true)]
    pub report_ttl: Option<String>,
}

impl Common {
    fn layer(&self) -> Layer {
        Layer {
            confdir: self.confdir.clone(),
            backend: self.backend,
            endpoints: self.endpoints.clone().map(|e| vec![e]),
            srv_domain: self.srv_domain.clone(),
            srv_record: self.srv_record.clone(),
            prefix: self.prefix.clone(),
            file: (!self.file.is_empty()).then(|| self.file.clone()),
            ca_file: self.ca_file.clone(),
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            username: self.username.clone(),
            password_file: self.password_file.clone(),
            state_dir: self.state_dir.clone(),
            metrics_addr: self.metrics_addr,
            log_level: self.log_level.clone(),
            log_format: self.log_format,
            wait: self.wait.clone(),
            node_name: self.node_name.clone(),
            connect_timeout: self.connect_timeout.clone(),
            request_timeout: self.request_timeout.clone(),
            max_output_bytes: None,
            resync_interval: self.resync_interval.clone(),
            dns_server: self.dns_server,
            reload_splay: self.reload_splay.clone(),
            watch_confdir: self.watch_confdir.then_some(true),
            report: self.report.then_some(true),
            report_ttl: self.report_ttl.clone(),
        }
    }
}

/// `liveconf render`.
#[derive(Args, Debug)]
pub struct RenderArgs {
    /// Render every resource once against one snapshot, then exit.
    #[arg(long)]
    pub once: bool,
    /// Render and compare only: change nothing, run no command.
    #[arg(long)]
    pub noop: bool,
    /// Print a unified diff of every file that would change (implies --noop).
    #[arg(long)]
    pub diff: bool,
    /// With --noop/--diff: exit 1 when some file would change.
    #[arg(long)]
    pub exit_code: bool,
    /// Only this resource (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Write every destination below DIR (/srv/x.json → DIR/srv/x.json); owner and group are not applied, reload commands are not run, and --once writes no status.json unless --state-dir is given.
    #[arg(long, value_name = "DIR")]
    pub dest_root: Option<PathBuf>,
    /// Skip reload commands (check commands still run).
    #[arg(long)]
    pub no_reload: bool,
    /// Preview: pretend KEY (absolute, as given to etcdctl) holds VALUE. Needs --once and --noop or --diff.
    #[arg(long, value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Preview: pretend KEY does not exist. Needs --once and --noop or --diff.
    #[arg(long, value_name = "KEY")]
    pub unset: Vec<String>,
    #[command(flatten)]
    pub common: Common,
}

/// `liveconf check`.
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Only this resource (repeatable).
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// List, for each Go-template (confd) resource, the functions it calls
    /// with their Tera equivalents, and whether a Tera version (.tera next to
    /// the .tmpl) exists; reads no keys, renders nothing.
    #[arg(long)]
    pub explain: bool,
    #[command(flatten)]
    pub common: Common,
}

/// A failure that maps to an exit code.
#[derive(Debug)]
pub struct Exit {
    /// The code.
    pub code: u8,
    /// The message (none when outcomes were already reported).
    pub error: Option<anyhow::Error>,
}

/// An invalid-configuration exit.
pub fn config_err(e: impl Into<anyhow::Error>) -> Exit {
    Exit {
        code: exit::CONFIG,
        error: Some(e.into()),
    }
}

/// A backend-unavailable exit; a backend error that is really a settings
/// mistake (a missing key file for TLS, a user without a password file, a
/// bad endpoint URL) is a configuration exit instead.
pub fn backend_err(e: impl Into<anyhow::Error>) -> Exit {
    use crate::backend::{BackendError, etcd::EtcdError};
    let e = e.into();
    let settings = e.chain().any(|c| {
        matches!(c.downcast_ref::<EtcdError>(), Some(EtcdError::Settings(_)))
            || matches!(
                c.downcast_ref::<BackendError>(),
                Some(BackendError::Etcd(EtcdError::Settings(_)))
            )
    });
    Exit {
        code: if settings {
            exit::CONFIG
        } else {
            exit::BACKEND
        },
        error: Some(e),
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // A write past RLIMIT_FSIZE must fail with EFBIG (reported, retried),
    // not kill the process with SIGXFSZ.
    // SAFETY: setting a signal's disposition to "ignore" before any thread
    // is started has no preconditions.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGXFSZ,
            nix::sys::signal::SigHandler::SigIgn,
        );
    }
    let cli = match command()
        .try_get_matches()
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                exit::CONFIG
            } else {
                exit::OK
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("liveconf: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = rt.block_on(run(cli));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Exit { code, error }) => {
            if let Some(e) = error {
                eprintln!("liveconf: {}", one_line(&e));
            }
            ExitCode::from(code)
        }
    }
}

/// An error and its causes as one line: "a: b: c".
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

async fn render(mut args: RenderArgs) -> Result<u8, Exit> {
    if args.diff {
        args.noop = true;
    }
    if args.exit_code && !args.noop {
        return Err(config_err(anyhow!(
            "--exit-code goes with --noop or --diff"
        )));
    }
    let overlay = parse_overlay(&args.set, &args.unset)?;
    if !(overlay.is_empty() || args.once && args.noop) {
        return Err(config_err(anyhow!(
            "--set/--unset only preview a change: use them with --once and --noop or --diff"
        )));
    }
    let s = settings(&args.common)?;
    // confd.toml's noop and sync-only.
    args.noop |= s.noop;
    args.no_reload |= s.no_reload;
    let opts = render_options(&args, &s);
    if args.once {
        // A preview (--dest-root) leaves the host's status alone and keeps
        // its own output tree clean for golden-file diffs, unless a state
        // dir is named on the command line.
        let status_dir = match (&opts.dest_root, &args.common.state_dir) {
            (Some(_), None) => None,
            _ => Some(s.state_dir.clone()),
        };
        return crate::once::render(
            &s,
            &args.only,
            &opts,
            overlay,
            args.exit_code,
            status_dir.as_deref(),
        )
        .await
        .map(verdict_code)
        .map_err(run_err);
    }
    let source = crate::daemon::Source {
        config: args.common.config.clone(),
        flags: args.common.layer(),
        only: args.only.clone(),
    };
    let started = crate::daemon::signals::install()
        .and_then(|(shutdown, reloads)| Ok(crate::daemon::run(s, source, opts, shutdown, reloads)));
    let run = match started {
        Ok(run) => run.await,
        Err(e) => Err(e),
    };
    match run {
        Ok(()) => Ok(exit::OK),
        Err(e @ crate::daemon::DaemonError::Setup(_)) => Err(Exit {
            code: exit::FAILED,
            error: Some(e.into()),
        }),
        Err(crate::daemon::DaemonError::Config(e)) => Err(config_err(e)),
    }
}

/// The exit code for how a one-shot run ended.
fn verdict_code(v: crate::once::Verdict) -> u8 {
    match v {
        crate::once::Verdict::Ok => exit::OK,
        crate::once::Verdict::Changes => exit::CHANGES,
        crate::once::Verdict::Failed => exit::FAILED,
    }
}

/// The exit for a one-shot run that could not start.
fn run_err(e: crate::once::RunError) -> Exit {
    match e {
        crate::once::RunError::ConfDir(e) => config_err(e),
        crate::once::RunError::Backend(e) => backend_err(e),
    }
}

async fn check(args: CheckArgs) -> Result<u8, Exit> {
    let s = settings(&args.common)?;
    if args.explain {
        let loaded = crate::confdir::load(&s, &args.only).map_err(config_err)?;
        for e in &loaded.failed {
            tracing::error!(resource = %e.name, "{}: load failed: {e}", e.name);
        }
        print!(
            "{}",
            crate::explain::report(&loaded.resources, &s.templates_dir())
        );
        return Ok(if loaded.failed.is_empty() {
            exit::OK
        } else {
            exit::FAILED
        });
    }
    crate::once::check(&s, &args.only, &s.render_env())
        .await
        .map(verdict_code)
        .map_err(run_err)
}

async fn run(cli: Cli) -> Result<u8, Exit> {
    match cli.command {
        Command::Render(args) => render(args).await,
        Command::Check(args) => check(args).await,
        Command::Status(args) => status_cmd(args),
        Command::Fleet(args) => fleet_cmd(args).await,
        Command::Generate(args) => generate(args),
    }
}

fn settings(common: &Common) -> Result<Settings, Exit> {
    let s = Settings::load(common.config.as_deref(), common.layer()).map_err(config_err)?;
    crate::logging::init(&s.log_level, s.log_format).map_err(|e| config_err(anyhow!(e)))?;
    s.log_warnings();
    Ok(s)
}

fn parse_overlay(set: &[String], unset: &[String]) -> Result<Vec<Change>, Exit> {
    let mut changes = Vec::new();
    for kv in set {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| config_err(anyhow!("--set {kv:?}: expected KEY=VALUE")))?;
        if !k.starts_with('/') {
            return Err(config_err(anyhow!(
                "--set {kv:?}: KEY must be absolute (start with /), as given to etcdctl"
            )));
        }
        changes.push(Change::Put(Key::from(k), Val::from(v.as_bytes())));
    }
    for k in unset {
        if !k.starts_with('/') {
            return Err(config_err(anyhow!(
                "--unset {k:?}: KEY must be absolute (start with /)"
            )));
        }
        changes.push(Change::Delete(Key::from(k.as_str())));
    }
    Ok(changes)
}

fn render_options(args: &RenderArgs, s: &Settings) -> Options {
    Options {
        noop: args.noop,
        diff: args.diff,
        dest_root: args.dest_root.clone(),
        // A preview never reloads the real services.
        no_reload: args.no_reload || args.dest_root.is_some(),
        env: s.render_env(),
        reload_splay: s.reload_splay,
        stopping: None,
        owed_dir: (!args.noop).then(|| s.owed_dir()),
        installs: None,
    }
}

fn status_cmd(args: StatusArgs) -> Result<u8, Exit> {
    let s =
        Settings::load(args.common.config.as_deref(), args.common.layer()).map_err(config_err)?;
    let max_age = args
        .max_age
        .as_deref()
        .map(resource::parse_duration)
        .transpose()
        .map_err(|e| config_err(anyhow!("--max-age: {e}")))?;
    let report = crate::status_report::evaluate(&s.state_dir, max_age, crate::status::now());
    let out = match args.format {
        StatusFormat::Nagios => report.nagios(),
        StatusFormat::Json => report.json(),
        StatusFormat::Text => report.text(),
    };
    outln!("{out}");
    Ok(report.code)
}

async fn fleet_cmd(args: FleetArgs) -> Result<u8, Exit> {
    let s = settings(&args.common)?;
    let max_lag = resource::parse_duration(&args.max_lag)
        .map_err(|e| config_err(anyhow!("--max-lag: {e}")))?;
    let conn = crate::backend::etcd::Connection::from_settings(&s)
        .await
        .map_err(backend_err)?;
    if let Some(node) = &args.forget {
        use crate::fleet::Forgotten;
        return match crate::fleet::forget(&conn, node)
            .await
            .map_err(|e| backend_err(anyhow!(e)))?
        {
            Forgotten::Removed => {
                outln!("forgot {node}");
                Ok(exit::OK)
            }
            Forgotten::Unknown => Err(config_err(anyhow!("no host {node} in the fleet registry"))),
            Forgotten::Alive => Err(config_err(anyhow!(
                "host {node} is alive (its report is current); stop its daemon first, then forget it"
            ))),
        };
    }
    let hosts = crate::fleet::examine(&conn, max_lag)
        .await
        .map_err(|e| backend_err(anyhow!(e)))?;
    let bad = hosts.iter().filter(|h| !h.problems.is_empty()).count();
    if args.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&hosts).unwrap_or_default()
        );
    } else {
        for h in &hosts {
            if h.problems.is_empty() {
                outln!("{}: in sync", h.node);
            } else {
                for p in &h.problems {
                    outln!("{}: {p}", h.node);
                }
            }
        }
        outln!(
            "{}, {bad} with problems",
            crate::logging::count(hosts.len(), "host")
        );
    }
    Ok(if bad > 0 { exit::CHANGES } else { exit::OK })
}

fn generate(args: GenerateArgs) -> Result<u8, Exit> {
    let mut cmd = command();
    let mut out = std::io::stdout();
    match args.what.as_str() {
        "man" => {
            let page = match &args.subcommand {
                None => cmd,
                Some(sub) => {
                    let name = match sub.as_str() {
                        "render" => "liveconf-render",
                        "check" => "liveconf-check",
                        "status" => "liveconf-status",
                        "fleet" => "liveconf-fleet",
                        _ => {
                            return Err(config_err(anyhow!(
                                "generate man: no subcommand {sub:?} (render, check, status, fleet)"
                            )));
                        }
                    };
                    let Some(c) = cmd.find_subcommand(sub).cloned() else {
                        return Err(config_err(anyhow!("generate man: no subcommand {sub:?}")));
                    };
                    c.name(name).bin_name(name)
                }
            };
            clap_mangen::Man::new(page)
                .render(&mut out)
                .map_err(|e| config_err(anyhow!("cannot write the man page: {e}")))?
        }
        shell => {
            let sh: clap_complete::Shell = shell.parse().map_err(|_| {
                config_err(anyhow!(
                    "generate: expected man, bash, zsh or fish, not {shell:?}"
                ))
            })?;
            clap_complete::generate(sh, &mut cmd, "liveconf", &mut out);
        }
    }
    Ok(exit::OK)
}
