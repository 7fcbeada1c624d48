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
use crate::settings::{Layer, Settings};
use crate::store::{Change, Key, Val};

/// Prints a line on stdout; a closed pipe (`liveconf status | head`) is
/// not an error worth a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// Exit codes, and the tables that explain them: `--help`, the man pages'
/// EXIT STATUS and the README's table are written from these.
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

    /// An exit code and what it means.
    pub type Code = (u8, &'static str);

    /// `render` and `check` (and liveconf as a whole).
    pub const RENDER: &[Code] = &[
        (
            OK,
            "everything rendered and is in sync, or was installed, checked and reloaded; the daemon also exits 0 after SIGTERM/SIGINT",
        ),
        (
            CHANGES,
            "with --noop/--diff and --exit-code: some file would change",
        ),
        (
            FAILED,
            "one or more resources failed (load, render, check, install or reload); each is named in the log",
        ),
        (
            CONFIG,
            "invalid settings, command line or conf.d directory (missing, empty, unknown --only)",
        ),
        (
            BACKEND,
            "the backend could not be read (etcd unreachable, key file missing or invalid)",
        ),
    ];

    /// `status`, the monitoring-plugin convention.
    pub const STATUS: &[Code] = &[
        (
            0,
            "OK: every resource healthy, the backend heard from within --max-age",
        ),
        (
            1,
            "WARNING: backend unavailable, or last event older than --max-age",
        ),
        (
            2,
            "CRITICAL: a resource is failing or not rendered yet, the daemon that wrote status.json is not running, or last event older than twice --max-age",
        ),
        (3, "UNKNOWN: status.json missing or unreadable"),
    ];

    /// `fleet`.
    pub const FLEET: &[Code] = &[
        (OK, "every host is in sync"),
        (
            CHANGES,
            "some host is stale, failing, missing a file, gone or diverging (each is listed)",
        ),
        (
            CONFIG,
            "invalid settings or command line (or --forget of a host that is alive)",
        ),
        (BACKEND, "etcd could not be read"),
    ];

    /// `fleet wait`.
    pub const FLEET_WAIT: &[Code] = &[
        (
            OK,
            "every live host reflects the revision, for every resource whose keys changed up to it",
        ),
        (
            CHANGES,
            "--timeout passed with hosts behind, failing, owing a reload or missing a file, or a host went away during the wait, or was already gone when it began (without --allow-gone); each host and resource is listed",
        ),
        (
            CONFIG,
            "invalid settings or command line: no live host reports (within --hosts), an unknown --resource, a --revision etcd has not reached or has compacted",
        ),
        (BACKEND, "etcd could not be read"),
    ];

    /// `keys import` and `keys export`.
    pub const KEYS: &[Code] = &[
        (
            OK,
            "the keys were written, or exported; with --dry-run, the difference was printed",
        ),
        (
            FAILED,
            "export: no keys under PREFIX, or a key no key file can hold (named)",
        ),
        (
            CONFIG,
            "invalid settings or command line, or a key file that cannot be read or holds no keys",
        ),
        (
            BACKEND,
            "etcd could not be read or written (after a partial import, run it again)",
        ),
    ];

    /// The table as `--help` shows it, under `title`, wrapped at 79 columns.
    pub fn help(title: &str, codes: &[Code]) -> String {
        let mut out = format!("{title}:");
        for (code, text) in codes {
            out.push_str(&format!("\n  {code}  "));
            let mut col = 5;
            for (i, word) in text.split(' ').enumerate() {
                if i > 0 && col + 1 + word.len() > 79 {
                    out.push_str("\n     ");
                    col = 5;
                } else if i > 0 {
                    out.push(' ');
                    col += 1;
                }
                out.push_str(word);
                col += word.len();
            }
        }
        out
    }

    /// The table in Markdown, flags in backticks (the README's).
    pub fn markdown(codes: &[Code]) -> String {
        let mut out = String::from("| code | meaning |\n| --- | --- |\n");
        for (code, text) in codes {
            out.push_str(&format!("| {code} | {} |\n", backtick_flags(text)));
        }
        out
    }

    /// `--flag` words in backticks: `--noop/--diff` → `` `--noop`/`--diff` ``.
    pub(crate) fn backtick_flags(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(i) = rest.find("--") {
            out.push_str(&rest[..i]);
            let flag = &rest[i..];
            let end = 2 + flag[2..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(flag.len() - 2);
            out.push('`');
            out.push_str(&flag[..end]);
            out.push('`');
            rest = &flag[end..];
        }
        out.push_str(rest);
        out
    }
}

/// liveconf keeps configuration files in step with live state in etcd.
#[derive(Parser, Debug)]
#[command(
    name = "liveconf",
    version,
    about,
    long_about = LONG_ABOUT,
    after_help = exit::help("Exit codes", exit::RENDER)
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// What `liveconf --help` and liveconf(1) say liveconf is.
const LONG_ABOUT: &str = "\
liveconf keeps configuration files in step with live state in etcd (v3). Each \
resource (a file in CONFDIR/conf.d/) names a template, a destination and the \
key prefixes it reads; liveconf renders it from one consistent snapshot, \
installs the file atomically after its check command passes, runs its reload \
command, and records in status.json which etcd revision every file reflects.

liveconf render --once does this once and exits; liveconf render keeps \
watching etcd and re-renders what depends on the keys that changed. Keys can \
also come from YAML, JSON or TOML key files (--backend file), and liveconf \
keys import writes such a file into etcd as the file backend reads it.";

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Render every resource; without --once, keep watching and re-render on change.
    #[command(after_help = exit::help("Exit codes", exit::RENDER))]
    Render(RenderArgs),
    /// Parse every resource and render it in memory; write nothing.
    #[command(after_help = exit::help("Exit codes", exit::RENDER))]
    Check(CheckArgs),
    /// Report the last outcome of every resource (from status.json), like a monitoring plugin.
    #[command(after_help = exit::help("Exit codes (monitoring-plugin convention)", exit::STATUS))]
    Status(StatusArgs),
    /// List the hosts that are stale, failing, missing a file, gone, or whose files diverge from their peers.
    #[command(
        after_help = exit::help("Exit codes", exit::FLEET),
        args_conflicts_with_subcommands = true
    )]
    Fleet(FleetArgs),
    /// Copy keys between key files (YAML, JSON, TOML) and etcd, flattened as the file backend reads them.
    #[command(after_help = exit::help("Exit codes", exit::KEYS))]
    Keys(KeysArgs),
    /// Write the man pages or shell completions (for packaging).
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// `liveconf status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// WARNING when the backend was last heard from longer ago than this, CRITICAL at twice it.
    // A negative value is read as one (and refused as such), not as a flag.
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
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
    // A negative value is read as one (and refused as such), not as a flag.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        default_value = "10s"
    )]
    pub max_lag: String,
    /// Remove NODE's registration (a host that is gone for good).
    #[arg(long, value_name = "NODE")]
    pub forget: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FleetFormat::Text)]
    pub format: FleetFormat,
    /// Deprecated spelling of --format json (warns).
    #[arg(long, hide = true, conflicts_with = "format")]
    pub json: bool,
    #[command(flatten)]
    pub common: Common,
    #[command(subcommand)]
    pub action: Option<FleetAction>,
}

/// What `liveconf fleet` does besides listing the hosts.
#[derive(Subcommand, Debug)]
pub enum FleetAction {
    /// Wait until every live host's files reflect a revision (etcd's current one by default): run it after each `etcdctl put` to know the change is everywhere.
    #[command(after_help = exit::help("Exit codes", exit::FLEET_WAIT))]
    Wait(Box<FleetWaitArgs>),
}

/// `liveconf fleet wait`.
#[derive(Args, Debug)]
pub struct FleetWaitArgs {
    /// The revision to wait for [default: etcd's current revision when the command starts].
    #[arg(long, value_name = "N")]
    pub revision: Option<i64>,
    /// Give up after this long, naming every host and resource not there.
    // A negative value is read as one (and refused as such), not as a flag.
    #[arg(
        long,
        value_name = "DURATION",
        allow_hyphen_values = true,
        default_value = "60s"
    )]
    pub timeout: String,
    /// Only this resource (repeatable).
    #[arg(long, value_name = "NAME")]
    pub resource: Vec<String>,
    /// Only the hosts whose node name matches this glob (mw14*).
    #[arg(long, value_name = "GLOB")]
    pub hosts: Option<String>,
    /// Accept hosts already gone (registered, without a live report) when the wait begins: without it they fail the wait, named, once every live host is there (their files may be stale). A host removed on purpose is better forgotten: liveconf fleet --forget NODE.
    #[arg(long)]
    pub allow_gone: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = FleetFormat::Text)]
    pub format: FleetFormat,
    #[command(flatten)]
    pub common: Common,
}

/// Output formats of `liveconf fleet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FleetFormat {
    /// For people.
    Text,
    /// For scripts.
    Json,
}

/// `liveconf keys`.
#[derive(Args, Debug)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub action: KeysAction,
}

/// What `liveconf keys` does.
#[derive(Subcommand, Debug)]
pub enum KeysAction {
    /// Write the keys of key files into etcd (only those that differ), in transactions of at most 128 operations.
    #[command(after_help = exit::help("Exit codes", exit::KEYS))]
    Import(KeysImportArgs),
    /// Print the keys under PREFIX as a key file that `keys import` and the file backend read back as the same keys.
    #[command(after_help = exit::help("Exit codes", exit::KEYS))]
    Export(KeysExportArgs),
}

/// `liveconf keys import`.
#[derive(Args, Debug)]
pub struct KeysImportArgs {
    /// Key files (YAML, JSON or TOML), merged in this order as the file backend merges them.
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,
    /// Print what would be added, changed and (with --prune) removed; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove the keys the files do not hold, under --prefix (without it, under the deepest prefix that holds every key of the files).
    #[arg(long)]
    pub prune: bool,
    #[command(flatten)]
    pub common: Common,
}

/// `liveconf keys export`.
#[derive(Args, Debug)]
pub struct KeysExportArgs {
    /// The subtree to export, absolute (e.g. /conftool/v1); its keys are written with their full names.
    #[arg(value_name = "PREFIX")]
    pub subtree: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = crate::keys::Format::Yaml)]
    pub format: crate::keys::Format,
    #[command(flatten)]
    pub common: Common,
}

/// `liveconf generate`.
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write: man (one page), man-pages (every page, into a
    /// directory), bash, zsh, fish, settings (the README's settings table)
    /// or exit-codes (the README's exit code table).
    pub what: String,
    /// With `man`: the page, named without `liveconf-` (render, keys-import,
    /// resources...; none for liveconf(1)); with `man-pages`: the directory.
    pub subcommand: Option<String>,
}

/// The command-line definition, with each subcommand's unused settings
/// hidden (from its --help, man page and completions; each setting says
/// which subcommands use it: `render`, or `keys_import` for `keys import`).
pub fn command() -> clap::Command {
    use clap::CommandFactory;
    let cmd = hide_unused_settings(Cli::command(), "");
    // `keys import --prefix` places the file's keys; it is not the global
    // prefix of the resources.
    cmd.mut_subcommand("keys", |k| {
        k.mut_subcommand("import", |i| {
            i.mut_arg("prefix", |a| {
                a.help(
                    "Import under this prefix: the file's key /a/b becomes P/a/b (the settings file's prefix does not apply)",
                )
            })
        })
    })
}

/// The name a setting's `used_by` gives the subcommand `name` below
/// `parent` ("" at the top): `render`, `keys_import`.
pub fn settings_name(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}_{name}")
    }
}

/// Hides, in every subcommand below `cmd` that takes settings, the flags
/// of the settings it does not use.
fn hide_unused_settings(mut cmd: clap::Command, parent: &str) -> clap::Command {
    let subs: Vec<(String, bool)> = cmd
        .get_subcommands()
        .map(|c| {
            (
                c.get_name().to_string(),
                c.get_arguments().any(|a| a.get_id() == "config"),
            )
        })
        .collect();
    for (sub, with_settings) in subs {
        let name = settings_name(parent, &sub);
        let unused: Vec<&str> = if with_settings {
            crate::settings::SETTINGS
                .iter()
                .filter(|d| d.parsed_flag().is_some() && !d.used_by.contains(&name.as_str()))
                .map(|d| d.name)
                .collect()
        } else {
            Vec::new()
        };
        cmd = cmd.mut_subcommand(&sub, |mut c| {
            for id in unused {
                c = c.mut_arg(id, |a| a.hide(true));
            }
            hide_unused_settings(c, &name)
        });
    }
    cmd
}

/// Options every command takes: `--config`, and a flag for each setting
/// (defined in `settings/defs.rs`).
#[derive(Debug, Default, Clone)]
pub struct Common {
    /// Settings file [default: CONFDIR/liveconf.toml, when it exists].
    pub config: Option<PathBuf>,
    /// The settings given on the command line.
    pub flags: Layer,
}

impl clap::FromArgMatches for Common {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        Ok(Common {
            config: m.get_one::<PathBuf>("config").cloned(),
            flags: Layer::from_matches(m),
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for Common {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        cmd.arg(
            clap::Arg::new("config")
                .long("config")
                .value_name("FILE")
                .help("Settings file [default: CONFDIR/liveconf.toml, when it exists]")
                .global(true)
                .value_parser(clap::value_parser!(PathBuf))
                .action(clap::ArgAction::Set),
        )
        .args(crate::settings::flag_args())
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
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
    /// With --once: install resource NAME even if a guard refuses it (no keys under its prefixes, or smaller than max_shrink allows), to confirm a deliberate change on this host; repeatable; without NAME, the --only resources.
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "")]
    pub force: Vec<String>,
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
    let rt = match runtime(&cli.command) {
        Ok(rt) => rt,
        Err(e) => {
            say_error(&format!("cannot start the async runtime: {e}"));
            return ExitCode::from(exit::FAILED);
        }
    };
    let result = rt.block_on(run(cli));
    match result {
        Ok(code) => ExitCode::from(code),
        Err(Exit { code, error }) => {
            if let Some(e) = error {
                say_error(&one_line(&e));
            }
            ExitCode::from(code)
        }
    }
}

/// The async runtime `command` runs on.
///
/// The daemon runs on one thread: its work is waiting (for etcd, timers,
/// hooks) and its blocking steps (a render with its install, a status
/// write...) go to tokio's blocking pool anyway. A change then crosses
/// threads once (to the blocking pool and back), where a multi-threaded
/// scheduler also moved it between its workers: 20 context switches per
/// change instead of 28, about 15 % less CPU per change, which is what a
/// fleet of daemons sharing a machine's CPUs pays (BENCHMARKS.md, "Fleet
/// simulation"). The other commands keep two workers: `render --once`
/// decodes a whole snapshot while the next page arrives.
fn runtime(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = if matches!(command, Command::Render(r) if !r.once) {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(2);
        b
    };
    b.enable_all().build()
}

/// Prints `liveconf: MESSAGE` on stderr; a closed stderr loses the line but
/// never turns an exit code into a panic (101).
fn say_error(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "liveconf: {message}");
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
    let force = forced(&args)?;
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
    let mut opts = render_options(&args, &s);
    opts.force = force;
    if args.once {
        // A preview (--dest-root) leaves the host's status alone and keeps
        // its own output tree clean for golden-file diffs, unless a state
        // dir is named on the command line.
        let status_dir = match (&opts.dest_root, &args.common.flags.state_dir) {
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
        flags: args.common.flags.clone(),
        only: args.only.clone(),
    };
    let started = crate::daemon::signals::install()
        .map(|(shutdown, reloads)| crate::daemon::run(s, source, opts, shutdown, reloads));
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

/// The resources `--force` names: its values, or the `--only` ones for a
/// bare `--force`. Only `render --once` lifts the guards, and only for
/// resources named.
fn forced(args: &RenderArgs) -> Result<Vec<String>, Exit> {
    if args.force.is_empty() {
        return Ok(Vec::new());
    }
    if !args.once {
        return Err(config_err(anyhow!(
            "--force installs a refused render once: use it with --once (the daemon never lifts its guards)"
        )));
    }
    let mut names: Vec<String> = Vec::new();
    for f in &args.force {
        if f.is_empty() {
            if args.only.is_empty() {
                return Err(config_err(anyhow!(
                    "--force without NAME lifts the guards of the --only resources: name them (--force NAME or --only NAME), it never applies to every resource"
                )));
            }
            names.extend(args.only.iter().cloned());
        } else {
            names.push(f.clone());
        }
    }
    names.sort();
    names.dedup();
    Ok(names)
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
        Command::Keys(args) => match args.action {
            KeysAction::Import(a) => keys_import(a).await,
            KeysAction::Export(a) => keys_export(a).await,
        },
        Command::Generate(args) => generate(args),
    }
}

/// The settings of a command that reads keys through the configured
/// backend (`render`, `check`), with logging set up.
fn settings(common: &Common) -> Result<Settings, Exit> {
    let s = Settings::load(common.config.as_deref(), common.flags.clone()).map_err(config_err)?;
    logging(&s)?;
    Ok(s)
}

/// The settings of a command that always uses etcd (`fleet`, `keys`),
/// whatever backend the settings file chooses, with logging set up.
fn etcd_settings(common: &Common) -> Result<Settings, Exit> {
    let s = Settings::load_any_backend(common.config.as_deref(), common.flags.clone())
        .map_err(config_err)?;
    logging(&s)?;
    Ok(s)
}

fn logging(s: &Settings) -> Result<(), Exit> {
    crate::logging::init(&s.log_level, s.log_format).map_err(|e| config_err(anyhow!(e)))?;
    s.log_warnings();
    Ok(())
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
    // What comes from the settings (the daemon derives it again on SIGHUP).
    let crate::settings::BatchSettings {
        env,
        reload_splay,
        owed_dir,
    } = s.batch(args.noop);
    Options {
        noop: args.noop,
        diff: args.diff,
        dest_root: args.dest_root.clone(),
        // A preview never reloads the real services.
        no_reload: args.no_reload || args.dest_root.is_some(),
        env,
        reload_splay,
        stopping: None,
        owed_dir,
        installs: None,
        force: Vec::new(),
    }
}

fn status_cmd(args: StatusArgs) -> Result<u8, Exit> {
    let s = Settings::load_any_backend(args.common.config.as_deref(), args.common.flags.clone())
        .map_err(config_err)?;
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
    if let Some(FleetAction::Wait(w)) = args.action {
        return fleet_wait_cmd(*w).await;
    }
    let s = etcd_settings(&args.common)?;
    let format = if args.json {
        tracing::warn!(
            "--json is deprecated and will go away: use --format json (the same output)"
        );
        FleetFormat::Json
    } else {
        args.format
    };
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
    if format == FleetFormat::Json {
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

async fn fleet_wait_cmd(args: FleetWaitArgs) -> Result<u8, Exit> {
    use crate::fleet_wait::WaitError;
    let s = etcd_settings(&args.common)?;
    let timeout = resource::parse_duration(&args.timeout)
        .map_err(|e| config_err(anyhow!("--timeout: {e}")))?;
    if let Some(n) = args.revision.filter(|n| *n < 1) {
        return Err(config_err(anyhow!(
            "--revision {n}: etcd revisions start at 1"
        )));
    }
    let conn = crate::backend::etcd::Connection::from_settings(&s)
        .await
        .map_err(backend_err)?;
    let what = crate::fleet_wait::WaitFor {
        revision: args.revision,
        timeout,
        resources: args.resource,
        hosts: args.hosts,
        allow_gone: args.allow_gone,
    };
    let w = match crate::fleet_wait::wait(&conn, &what).await {
        Ok(w) => w,
        Err(WaitError::Fleet(e)) => return Err(backend_err(anyhow!(e))),
        Err(e) => return Err(config_err(e)),
    };
    if args.allow_gone && !w.not_waited_for.is_empty() {
        tracing::warn!(
            "not waited for (registered, without a live report when the wait began; liveconf fleet lists them as gone): {}",
            w.not_waited_for.join(", ")
        );
    }
    if args.format == FleetFormat::Json {
        outln!("{}", serde_json::to_string_pretty(&w).unwrap_or_default());
    } else if w.ok {
        let hosts = crate::logging::count(w.hosts.len(), "host");
        let reflect = if w.hosts.len() == 1 {
            "reflects"
        } else {
            "reflect"
        };
        match &w.slowest {
            Some(sl) if sl.seconds > 0.0 => outln!(
                "{hosts} {reflect} revision {}; the slowest, {}, after {:.3}s",
                w.revision,
                sl.node,
                sl.seconds
            ),
            _ => outln!(
                "{hosts} {reflect} revision {} (all there when the wait began)",
                w.revision
            ),
        }
    } else {
        let mut bad = 0;
        for h in &w.hosts {
            if h.state.problems.is_empty() {
                outln!("{}: reflects revision {}", h.state.node, w.revision);
            } else {
                bad += 1;
                for p in &h.state.problems {
                    outln!("{}: {p}", h.state.node);
                }
            }
        }
        outln!(
            "{}{bad} of {} not at revision {}",
            if w.timed_out {
                format!(
                    "timed out after {} (--timeout): ",
                    humantime::format_duration(timeout)
                )
            } else {
                String::new()
            },
            crate::logging::count(w.hosts.len(), "host"),
            w.revision
        );
        if let Some(why) = &w.etcd_silent {
            tracing::warn!(
                "{why}: the hosts above are as etcd last said, at the end of the wait; they may be there by now"
            );
        }
    }
    Ok(if w.ok { exit::OK } else { exit::CHANGES })
}

/// Connects to etcd with the command's settings.
async fn etcd(
    s: &Settings,
) -> Result<(crate::backend::etcd::Connection, etcd_client::Client), Exit> {
    let conn = crate::backend::etcd::Connection::from_settings(s)
        .await
        .map_err(backend_err)?;
    let client = conn.connect().await.map_err(backend_err)?;
    Ok((conn, client))
}

/// The exit for a `keys` failure.
fn keys_err(e: crate::keys::KeysError) -> Exit {
    use crate::keys::KeysError as K;
    match e {
        K::Input(_) | K::NoKeys { .. } | K::PruneEverything | K::Relative(_) => config_err(e),
        K::Etcd(_) | K::Denied(_) | K::Partial { .. } | K::WriteDenied { .. } => backend_err(e),
        K::NotExportable { .. } | K::NothingUnder(_) => Exit {
            code: exit::FAILED,
            error: Some(e.into()),
        },
    }
}

/// A prefix as given on the command line: absolute, normalised.
fn absolute_prefix(p: &str) -> Result<String, Exit> {
    if !p.starts_with('/') {
        return Err(keys_err(crate::keys::KeysError::Relative(p.to_string())));
    }
    Ok(crate::keypath::normalize_prefix(p))
}

async fn keys_import(args: KeysImportArgs) -> Result<u8, Exit> {
    use crate::keys;
    let s = etcd_settings(&args.common)?;
    // Only a --prefix on the command line places the keys: a key file holds
    // absolute keys, as the file backend reads them.
    let prefix = match &args.common.flags.prefix {
        Some(p) => absolute_prefix(p)?,
        None => String::new(),
    };
    let wanted = keys::read_files(&args.files, &prefix).map_err(keys_err)?;
    let scope = keys::scope(&prefix, &wanted);
    if args.prune && (scope.len() != 1 || scope.iter().any(|r| r.is_empty() || r == "/")) {
        return Err(keys_err(keys::KeysError::PruneEverything));
    }
    let (conn, mut client) = etcd(&s).await?;
    let current = keys::read_scope(&conn, &mut client, &scope)
        .await
        .map_err(keys_err)?;
    let plan = keys::plan(&wanted, &current, &scope, args.prune);
    let files = args
        .files
        .iter()
        .map(|f| f.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let under = scope.join(", ");
    print!("{}", plan.diff());
    let kept = if plan.extra > 0 {
        format!(
            "; {} under {under} not in {files} kept (--prune removes them)",
            crate::logging::count(plan.extra, "key")
        )
    } else {
        String::new()
    };
    if plan.is_empty() {
        outln!(
            "etcd already holds every key of {files} ({} unchanged){kept}: nothing to write",
            plan.unchanged
        );
        return Ok(exit::OK);
    }
    // Where --prune removes, said where it does.
    let pruned = if args.prune {
        format!(" (under {under})")
    } else {
        String::new()
    };
    let counts = format!(
        "{} to add, {} to change, {} to remove{pruned}, {} unchanged",
        plan.add.len(),
        plan.change.len(),
        plan.remove.len(),
        plan.unchanged
    );
    if args.dry_run {
        outln!(
            "dry run: {counts}{kept}; nothing was written (run again without --dry-run to write it)"
        );
        return Ok(exit::OK);
    }
    let (txns, revision) = keys::apply(&conn, &mut client, &plan, &scope)
        .await
        .map_err(keys_err)?;
    outln!(
        "wrote {files} to etcd in {} (revision {revision}): {} added, {} changed, {} removed{pruned}, {} unchanged{kept}",
        crate::logging::count(txns, "transaction"),
        plan.add.len(),
        plan.change.len(),
        plan.remove.len(),
        plan.unchanged
    );
    Ok(exit::OK)
}

async fn keys_export(args: KeysExportArgs) -> Result<u8, Exit> {
    use crate::keys;
    let s = etcd_settings(&args.common)?;
    let prefix = absolute_prefix(&args.subtree)?;
    let (conn, mut client) = etcd(&s).await?;
    let snap = keys::read_scope(&conn, &mut client, std::slice::from_ref(&prefix))
        .await
        .map_err(keys_err)?;
    let text = keys::export(&snap, &prefix, args.format).map_err(keys_err)?;
    {
        use std::io::Write as _;
        let mut out = std::io::stdout().lock();
        if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
            return Err(Exit {
                code: exit::FAILED,
                error: Some(anyhow!("cannot write the export to stdout: {e}")),
            });
        }
    }
    tracing::info!(
        "exported {} under {prefix} at etcd revision {}",
        crate::logging::count(snap.len(), "key"),
        snap.revision()
    );
    Ok(exit::OK)
}

fn generate(args: GenerateArgs) -> Result<u8, Exit> {
    use std::io::Write as _;
    let mut cmd = command();
    let mut out = std::io::stdout();
    match args.what.as_str() {
        "man" => {
            let name = args.subcommand.as_deref().unwrap_or("liveconf");
            let Some(page) = crate::manpages::page(name) else {
                let names: Vec<String> = crate::manpages::pages()
                    .iter()
                    .map(|p| p.name.trim_start_matches("liveconf-").to_string())
                    .collect();
                return Err(config_err(anyhow!(
                    "generate man: no page {name:?}; name one of {}",
                    names.join(", ")
                )));
            };
            let _ = out.write_all(page.text.as_bytes());
        }
        "man-pages" => {
            let Some(dir) = args.subcommand.as_deref() else {
                return Err(config_err(anyhow!(
                    "generate man-pages: name the directory to write the pages into"
                )));
            };
            let dir = std::path::Path::new(dir);
            for page in crate::manpages::pages() {
                let path = dir.join(page.file_name());
                std::fs::write(&path, &page.text)
                    .map_err(|e| config_err(anyhow!("cannot write {}: {e}", path.display())))?;
                outln!("{}", path.display());
            }
        }
        // The README's settings table, from the definitions.
        "settings" => {
            let _ = out.write_all(crate::settings::markdown_table().as_bytes());
        }
        // The README's exit code table, from the constants.
        "exit-codes" => {
            let _ = out.write_all(exit::markdown(exit::RENDER).as_bytes());
        }
        shell => {
            let sh: clap_complete::Shell = shell.parse().map_err(|_| {
                config_err(anyhow!(
                    "generate: expected man, man-pages, bash, zsh, fish, settings or exit-codes, not {shell:?}"
                ))
            })?;
            clap_complete::generate(sh, &mut cmd, "liveconf", &mut out);
        }
    }
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common(args: &[&str]) -> Common {
        let m = command()
            .try_get_matches_from(args)
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        match <Cli as clap::FromArgMatches>::from_arg_matches(&m)
            .unwrap()
            .command
        {
            Command::Render(a) => a.common,
            Command::Check(a) => a.common,
            Command::Status(a) => a.common,
            Command::Fleet(a) => match a.action {
                Some(FleetAction::Wait(w)) => w.common,
                None => a.common,
            },
            Command::Keys(k) => match k.action {
                KeysAction::Import(a) => a.common,
                KeysAction::Export(a) => a.common,
            },
            Command::Generate(_) => panic!("no settings"),
        }
    }

    /// Each kind of flag lands in the settings layer as it is written:
    /// values, a comma-separated list kept whole, a repeatable flag, a
    /// switch; a flag not given leaves the file's value.
    #[test]
    fn flags_fill_the_settings_layer() {
        let c = common(&[
            "liveconf",
            "render",
            "--config",
            "/etc/x.toml",
            "--endpoints",
            "http://a:2379,http://b:2379",
            "--file",
            "k1.yaml",
            "--file",
            "k2.yaml",
            "--backend",
            "file",
            "--log-format",
            "json",
            "--dns-server",
            "127.0.0.1:53",
            "--watch-confdir",
            "--reload-splay",
            "5s",
        ]);
        assert_eq!(c.config, Some(PathBuf::from("/etc/x.toml")));
        let l = c.flags;
        assert_eq!(
            l.endpoints,
            Some(vec!["http://a:2379,http://b:2379".to_string()])
        );
        assert_eq!(
            l.file,
            Some(vec![PathBuf::from("k1.yaml"), PathBuf::from("k2.yaml")])
        );
        assert_eq!(l.backend, Some(crate::settings::BackendKind::File));
        assert_eq!(l.log_format, Some(crate::settings::LogFormat::Json));
        assert_eq!(l.dns_server, Some("127.0.0.1:53".parse().unwrap()));
        assert_eq!(l.watch_confdir, Some(true));
        assert_eq!(l.reload_splay.as_deref(), Some("5s"));
        assert_eq!(l.report, None);
        assert_eq!(l.prefix, None);
        assert_eq!(l.max_output_bytes, None);

        let none = common(&["liveconf", "check"]);
        assert!(none.config.is_none());
        assert_eq!(
            format!("{:?}", none.flags),
            format!("{:?}", Layer::default())
        );
    }

    /// Every setting with a flag has it on every subcommand that takes
    /// settings (hidden where unused), named after its key; the
    /// subcommands a setting names exist.
    #[test]
    fn every_flag_is_on_every_settings_subcommand() {
        let cmd = command();
        let subs = [
            ("render", vec!["render"]),
            ("check", vec!["check"]),
            ("status", vec!["status"]),
            ("fleet", vec!["fleet"]),
            ("fleet_wait", vec!["fleet", "wait"]),
            ("keys_import", vec!["keys", "import"]),
            ("keys_export", vec!["keys", "export"]),
        ];
        let find = |path: &[&str]| {
            path.iter()
                .try_fold(&cmd, |c, n| c.find_subcommand(n))
                .cloned()
        };
        for (sub, path) in &subs {
            let c = find(path).unwrap_or_else(|| panic!("no subcommand {path:?}"));
            for d in crate::settings::SETTINGS {
                let Some((long, _, _)) = d.parsed_flag() else {
                    continue;
                };
                let a = c
                    .get_arguments()
                    .find(|a| a.get_id() == d.name)
                    .unwrap_or_else(|| panic!("{sub}: no --{long}"));
                assert_eq!(a.get_long(), Some(long));
                assert_eq!(a.is_hide_set(), !d.used_by.contains(sub), "{sub} --{long}");
            }
        }
        for d in crate::settings::SETTINGS {
            for sub in d.used_by {
                assert!(
                    subs.iter().any(|(s, _)| s == sub),
                    "{}: no subcommand {sub}",
                    d.name
                );
            }
        }
    }

    /// The README's exit code table is the one `--help` and the man pages
    /// show.
    #[test]
    fn the_readme_exit_code_table_is_generated_from_the_constants() {
        let readme = include_str!("../README.md");
        let table = exit::markdown(exit::RENDER);
        assert!(
            readme.contains(&table),
            "README.md's exit code table differs from exit::RENDER in src/cli.rs; replace it \
             with the output of `liveconf generate exit-codes`:\n{table}"
        );
    }

    /// `fleet --json` still parses (hidden), and cannot be combined with
    /// `--format`.
    #[test]
    fn fleet_json_is_a_hidden_alias_of_format_json() {
        let fleet = |args: &[&str]| {
            let mut v = vec!["liveconf", "fleet"];
            v.extend_from_slice(args);
            command()
                .try_get_matches_from(v)
                .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
                .map(|c| match c.command {
                    Command::Fleet(a) => (a.format, a.json),
                    _ => unreachable!(),
                })
        };
        assert_eq!(fleet(&[]).unwrap(), (FleetFormat::Text, false));
        assert_eq!(
            fleet(&["--format", "json"]).unwrap(),
            (FleetFormat::Json, false)
        );
        assert_eq!(fleet(&["--json"]).unwrap(), (FleetFormat::Text, true));
        assert!(fleet(&["--json", "--format", "text"]).is_err());
        let cmd = command();
        let f = cmd.find_subcommand("fleet").unwrap();
        assert!(
            f.get_arguments()
                .any(|a| a.get_id() == "json" && a.is_hide_set())
        );
    }
}
