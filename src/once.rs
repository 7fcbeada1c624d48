//! The `render --once` and `check` drivers: one snapshot, one batch.
//!
//! `render --once` sends every resource through [`apply::apply`] against a
//! single snapshot (with `--set`/`--unset` overlaid), reports each outcome,
//! records status.json (a warning if it cannot) and turns the outcomes into
//! an exit code. `check` renders in memory only.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crate::apply::{self, Action, Options, Outcome, Step};
use crate::backend;
use crate::confdir::{self, ConfDirError};
use crate::guard;
use crate::owed::Owed;
use crate::resource::Resource;
use crate::settings::Settings;
use crate::status::Status;
use crate::store::{Change, Snapshot};
use crate::templates::TemplateSet;

/// How a run ended; the command line turns it into an exit code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Everything rendered and is in sync, or was installed and reloaded.
    Ok,
    /// With `--exit-code`: some file would change.
    Changes,
    /// One or more resources failed; each was named in the log.
    Failed,
}

/// Why a run could not start: the configuration directory or the backend.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// conf.d cannot be used (missing, empty, unknown `--only`).
    #[error(transparent)]
    ConfDir(#[from] ConfDirError),
    /// The keys could not be read.
    #[error(transparent)]
    Backend(#[from] backend::BackendError),
}

/// `render --once`: one snapshot, one batch through [`apply`], status, verdict.
pub async fn render(
    s: &Settings,
    only: &[String],
    opts: &Options,
    overlay: Vec<Change>,
    exit_code_flag: bool,
    status_dir: Option<&Path>,
) -> Result<Verdict, RunError> {
    mark("start");
    huge_heap();
    // The lists `gets` hands the templates are kept (not freed item by
    // item when a template is done with them) and forgotten at exit.
    crate::functions::keep_values(true);
    // Hooks a killed liveconf left running end before any of ours runs.
    if let Some(dir) = status_dir.filter(|_| !opts.noop) {
        crate::hooks::adopt_state_dir(dir);
    }
    let loaded = confdir::load(s, only)?;
    check_forced(&loaded, &opts.force, only)?;
    let templates = TemplateSet::load(&s.templates_dir());
    if only.is_empty() {
        // Nothing renders them, so nothing else would say it.
        for (name, p) in templates.unused_broken(&loaded.resources) {
            tracing::warn!("{}", unused_broken(&templates, &name, &p));
        }
    }
    mark("loaded");
    let mut snap = backend::snapshot(s, &confdir::watched(&loaded.resources)).await?;
    mark("snapshot");
    apply_overlay(&mut snap, overlay, &loaded.resources);
    let recorder = Recorder::new(status_dir.filter(|_| !opts.noop));
    // A reload that failed (or never ran) in an earlier run is still owed,
    // even when the file is now unchanged.
    let owed = Owed::open(opts.owed_dir.as_deref(), recorder.owed_on_record());
    owed.configure(opts.owed_dir.as_deref(), &loaded.resources);
    let mut run_opts = opts.clone();
    run_opts.installs = recorder.install_hook(&owed);
    // One look-up per DNS name and type for the whole run.
    let dns = run_opts.env.dns.clone();
    run_opts
        .env
        .live
        .get_or_insert_with(|| crate::dnsdeps::Live::one_shot(&dns));
    let refs: Vec<&Resource> = loaded.resources.iter().collect();
    let mut outcomes = apply::apply(&refs, &snap, &templates, &run_opts, &owed).await;
    mark("applied");
    drop(run_opts);
    for e in &loaded.failed {
        outcomes.push(Outcome::load_failure(
            &e.name,
            PathBuf::new(),
            snap.revision(),
            e.to_string(),
        ));
    }
    report(&outcomes, opts);
    recorder.finish(s, only.is_empty(), &snap, &outcomes, &owed);
    // The process ends next: freeing the snapshot key by key (tens of
    // milliseconds at 100,000 keys) would only delay the exit.
    std::mem::forget(snap);
    crate::functions::forget_kept();
    mark("done");
    Ok(verdict(&outcomes, exit_code_flag))
}

/// Backs what a one-shot run allocates with transparent huge pages.
///
/// A one-shot run touches its memory once, fresh from the kernel: at
/// 100,000 keys, ~80 MiB (the range answer, the decoded keys, one map per
/// key for a template, the output), and a 4 KiB page fault each (~3 µs in
/// a VM) was a third of its CPU. Here the C heap gets 256 MiB of address
/// space at its top at once, advised `MADV_HUGEPAGE` (the kernel then maps
/// 2 MiB at a time; only what is touched counts, at most 2 MiB more), and
/// serves buffers up to 32 MiB itself rather than from `mmap` (which would
/// not be advised); nothing is given back before the exit. When THP is off
/// (`never`) or the heap cannot grow, this only costs the `mallopt`s.
fn huge_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt, mallinfo2, malloc, free, sbrk(0) and madvise are
    // called as glibc documents them: the block is written within its size
    // and freed once, and MADV_HUGEPAGE changes no memory's contents (on a
    // range that is not all mapped it fails, harmlessly).
    unsafe {
        const PAD: usize = 256 << 20;
        const HUGE: usize = 2 << 20;
        // Never shrink the heap: what came back would not be advised.
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TOP_PAD, PAD as libc::c_int);
        // One request larger than all the heap's free memory, served from
        // the heap: it grows by the request and the pad.
        libc::mallopt(libc::M_MMAP_MAX, 0);
        let free = libc::mallinfo2().fordblks;
        let block = libc::malloc(free + 4096);
        libc::mallopt(libc::M_MMAP_MAX, 65536);
        if block.is_null() {
            return;
        }
        // Used, so that the compiler keeps the malloc and free.
        std::ptr::write_volatile(block.cast::<u8>(), 0);
        let end = libc::sbrk(0) as usize;
        libc::free(block);
        // The pad's whole huge pages: glibc wrote its block's headers
        // below `end - PAD`, nothing touched the rest.
        let start = (end.saturating_sub(PAD) + HUGE - 1) & !(HUGE - 1);
        let stop = end & !(HUGE - 1);
        if stop > start {
            libc::madvise(
                start as *mut libc::c_void,
                stop - start,
                libc::MADV_HUGEPAGE,
            );
        }
    }
}

/// With `LIVECONF_TIMING` set, prints to stderr how long after the first
/// mark `what` happened: a phase profile of a one-shot run (connect, each
/// page received and added, render, install).
pub fn mark(what: &str) {
    static T0: std::sync::OnceLock<Option<std::time::Instant>> = std::sync::OnceLock::new();
    if let Some(t0) =
        T0.get_or_init(|| std::env::var_os("LIVECONF_TIMING").map(|_| std::time::Instant::now()))
    {
        eprintln!("{:>8.1} ms  {what}", t0.elapsed().as_secs_f64() * 1e3);
    }
}

/// `--force NAME`: each NAME must be a resource of this run.
fn check_forced(
    loaded: &confdir::Loaded,
    force: &[String],
    only: &[String],
) -> Result<(), RunError> {
    let names: Vec<&str> = loaded
        .resources
        .iter()
        .map(|r| r.name.as_str())
        .chain(loaded.failed.iter().map(|e| e.name.as_str()))
        .collect();
    for f in force {
        if !names.contains(&f.as_str()) {
            let why = if only.is_empty() {
                format!(
                    "no resource {f} in conf.d (there are: {})",
                    names.join(", ")
                )
            } else {
                format!(
                    "{f} is not among the --only resources ({})",
                    only.join(", ")
                )
            };
            return Err(ConfDirError(format!("--force {f}: {why}")).into());
        }
    }
    Ok(())
}

/// The line for a template no resource uses that does not parse.
fn unused_broken(
    templates: &TemplateSet,
    name: &str,
    p: &crate::templates::TemplateProblem,
) -> String {
    format!(
        "{}: no resource uses this template, and it does not parse: {p}",
        templates.dir().join(name).display()
    )
}

/// Applies `--set`/`--unset` to the snapshot, warning about a key no
/// resource reads (most likely a missing global prefix or a typo, which the
/// preview must not pass off as "no change") or a delete of no key.
fn apply_overlay(snap: &mut Snapshot, overlay: Vec<Change>, resources: &[Resource]) {
    for c in overlay {
        let key = c.key();
        let read = resources.iter().any(|r| {
            r.watched
                .iter()
                .any(|w| crate::store::is_at_or_below(key, w))
        });
        if !read {
            tracing::warn!(
                "{} {key}: no resource reads this key (is the prefix right?); it cannot change any file",
                match c {
                    Change::Put(..) => "--set",
                    Change::Delete(_) => "--unset",
                }
            );
        }
        if let Change::Delete(_) = &c
            && read
            && snap.get(key).is_none()
        {
            tracing::warn!(
                "--unset {key}: no such key; it changes nothing (like etcdctl del without --prefix)"
            );
        }
        snap.apply(c);
    }
}

/// status.json during a one-shot run (when it keeps one: not under
/// `--noop`, nor for a `--dest-root` preview without `--state-dir`).
/// Each install is written as it happens, so a run killed during a long
/// reload or a splay leaves a status that matches the files on disk (with
/// the reload owed); the whole batch is recorded at the end.
struct Recorder {
    dir: Option<PathBuf>,
    status: Arc<Mutex<Status>>,
}

impl Recorder {
    fn new(dir: Option<&Path>) -> Recorder {
        let mut status = dir
            .map(|d| Status::read(d).unwrap_or_default())
            .unwrap_or_default();
        // A running daemon's status.json is its own: left alone (it
        // rewrites it from what it knows), said once.
        let daemon = status
            .daemon_pid
            .filter(|&p| p != std::process::id() && crate::status_report::daemon_running(p));
        if let (Some(pid), Some(d)) = (daemon, dir) {
            tracing::info!(
                "{} belongs to the running liveconf daemon (pid {pid}): left to it, not rewritten by this run",
                d.join(crate::status::STATUS_FILE).display()
            );
        }
        let dir = dir.filter(|_| daemon.is_none());
        // A one-shot run's status: no daemon to vouch for, read just now.
        status.daemon_pid = None;
        status.started = None;
        status.last_event = Some(crate::status::now());
        Recorder {
            dir: dir.map(Path::to_path_buf),
            status: Arc::new(Mutex::new(status)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Status> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the status file on record says is owed.
    fn owed_on_record(&self) -> BTreeSet<String> {
        self.lock().reloads_owed()
    }

    /// Writes each install as it happens.
    fn install_hook(&self, owed: &Owed) -> Option<apply::InstallHook> {
        let dir = self.dir.clone()?;
        let (shared, owed) = (self.status.clone(), owed.clone());
        Some(apply::InstallHook(Arc::new(move |o: &Outcome| {
            if o.result != Ok(Action::Installed) {
                return;
            }
            let mut st = shared.lock().unwrap_or_else(|e| e.into_inner());
            st.installed(o);
            let _ = st.save(&dir, &owed);
        })))
    }

    /// Records the batch (`all`: every resource ran, so others are dropped).
    fn finish(&self, s: &Settings, all: bool, snap: &Snapshot, outcomes: &[Outcome], owed: &Owed) {
        let Some(dir) = &self.dir else { return };
        let mut status = self.lock();
        status.node = s.node_name.clone();
        // Written by a one-shot run from now on: no daemon to watch for.
        status.daemon_pid = None;
        status.started = None;
        let source = backend::open(s);
        status.backend = source.name().to_string();
        status.connected = true;
        status.endpoint = Some(source.describe());
        status.revision = snap.revision();
        status.last_event = Some(crate::status::now());
        if all {
            let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
            status.retain(&names);
        }
        status.record(outcomes);
        if let Err(e) = status.save(dir, owed) {
            tracing::warn!("status not saved: {e}");
        }
    }
}

/// Logs each outcome and prints diffs to stdout.
pub fn report(outcomes: &[Outcome], opts: &Options) {
    for o in outcomes {
        match &o.result {
            Ok(Action::Unchanged) => tracing::debug!(
                resource = %o.name, revision = o.revision,
                "{}: {} in sync", o.name, o.dest.display()
            ),
            // Logged by `apply` as it happened, before the reloads.
            Ok(Action::Installed) => {}
            Ok(Action::WouldChange) => {
                tracing::info!(
                    resource = %o.name, revision = o.revision,
                    "{}: {} would change ({})", o.name, o.dest.display(),
                    o.changed.as_deref().unwrap_or("")
                );
                if let (true, Some(d)) = (opts.diff, &o.diff) {
                    use std::io::Write as _;
                    let _ = write!(std::io::stdout(), "{d}");
                }
            }
            Err(f) => {
                // A guard's refusal in a preview says so itself.
                let step = if f.message.starts_with(guard::WOULD_BE_REFUSED) {
                    String::new()
                } else {
                    format!("{} failed: ", f.step)
                };
                tracing::error!(
                    resource = %o.name, revision = o.revision, step = %f.step,
                    "{}: {step}{}", o.name, crate::logging::one_line(&f.message)
                );
                // The change a guard refuses is shown too.
                if let (true, Some(d)) = (opts.diff, &o.diff) {
                    use std::io::Write as _;
                    let _ = write!(std::io::stdout(), "{d}");
                }
            }
        }
    }
    let failed: Vec<&str> = outcomes
        .iter()
        .filter(|o| o.result.is_err())
        .map(|o| o.name.as_str())
        .collect();
    if !failed.is_empty() {
        tracing::error!(
            "{} of {} resources failed: {}",
            failed.len(),
            outcomes.len(),
            failed.join(", ")
        );
    }
}

/// The verdict of a `render --once` run.
pub fn verdict(outcomes: &[Outcome], exit_code_flag: bool) -> Verdict {
    if outcomes.iter().any(|o| o.result.is_err()) {
        Verdict::Failed
    } else if exit_code_flag && outcomes.iter().any(|o| o.result == Ok(Action::WouldChange)) {
        Verdict::Changes
    } else {
        Verdict::Ok
    }
}

/// `liveconf check`: parse and render everything in memory; write nothing.
pub async fn check(
    s: &Settings,
    only: &[String],
    env: &crate::render::Env,
) -> Result<Verdict, RunError> {
    huge_heap();
    let loaded = confdir::load(s, only)?;
    let templates = TemplateSet::load(&s.templates_dir());
    let snap = backend::snapshot(s, &confdir::watched(&loaded.resources)).await?;
    // One look-up per DNS name and type for the whole run.
    let mut env = env.clone();
    env.live
        .get_or_insert_with(|| crate::dnsdeps::Live::one_shot(&env.dns));
    let env = &env;
    let mut failed: Vec<&str> = Vec::new();
    for e in &loaded.failed {
        tracing::error!(resource = %e.name, step = %Step::Load, "{}: load failed: {e}", e.name);
        failed.push(&e.name);
    }
    for r in &loaded.resources {
        let empty = guard::empty_prefixes(r, &snap);
        match crate::render::render(r, &snap, &templates, env) {
            Ok(bytes) => {
                // What the daemon would do with it: the guards judge a
                // change from the installed file.
                let refusal = guard::installed_size(&r.dest, &bytes).and_then(|installed| {
                    guard::judge(r, empty.as_deref(), installed, bytes.len() as u64)
                });
                match refusal {
                    None => tracing::info!(
                        resource = %r.name, revision = snap.revision(),
                        "{}: renders ({} bytes)", r.name, bytes.len()
                    ),
                    Some(refusal) => {
                        tracing::error!(
                            resource = %r.name, revision = snap.revision(), step = %Step::Render,
                            "{}: {}", r.name, refusal.message(r, true, true)
                        );
                        failed.push(&r.name);
                    }
                }
            }
            Err(e) => {
                let hint = empty
                    .filter(|_| snap.unreadable_among(&r.watched).is_none())
                    .map(|p| guard::empty_hint(&p))
                    .unwrap_or_default();
                tracing::error!(resource = %r.name, revision = snap.revision(), step = %Step::Render, "{}: render failed: {e}{hint}", r.name);
                failed.push(&r.name);
            }
        }
    }
    // Templates no resource uses: `check` is where CI sees them. (With
    // --only, only the named resources are checked.)
    let mut broken = 0;
    if only.is_empty() {
        for (name, p) in templates.unused_broken(&loaded.resources) {
            tracing::error!("{}", unused_broken(&templates, &name, &p));
            broken += 1;
        }
    }
    let total = loaded.resources.len() + loaded.failed.len();
    if broken > 0 {
        tracing::error!(
            "{} under {} that no resource uses {}: fix or remove {}",
            crate::logging::count(broken, "template"),
            templates.dir().display(),
            if broken == 1 {
                "does not parse"
            } else {
                "do not parse"
            },
            if broken == 1 { "it" } else { "them" }
        );
    }
    if !failed.is_empty() {
        failed.sort_unstable();
        tracing::error!(
            "{} of {total} resources failed: {}",
            failed.len(),
            failed.join(", ")
        );
        Ok(Verdict::Failed)
    } else if broken > 0 {
        Ok(Verdict::Failed)
    } else {
        tracing::info!("all of {} render", crate::logging::count(total, "resource"));
        Ok(Verdict::Ok)
    }
}
