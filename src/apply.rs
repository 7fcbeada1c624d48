//! One batch through the data path: render → compare → stage → check →
//! rename → reload, for a set of resources against one snapshot.
//!
//! Both drivers use this: `render --once` calls it once, the daemon once per
//! coalesced batch. Each resource ends with an [`Outcome`]; one failing
//! resource never stops the others. Reload commands run after every file of
//! the batch is in place, and a command shared by several resources runs
//! once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hooks;
use crate::install::{Comparison, Target};
use crate::render;
use crate::resource::Resource;
use crate::store::Snapshot;
use crate::templates::TemplateSet;

/// How a batch is applied.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Render and compare only: write nothing, run nothing.
    pub noop: bool,
    /// With `noop`, also produce a unified diff of each change.
    pub diff: bool,
    /// Write every destination below this directory instead of `/`.
    pub dest_root: Option<PathBuf>,
    /// Skip reload commands (checks still run).
    pub no_reload: bool,
    /// DNS for `lookup_srv`, output size limit.
    pub env: crate::render::Env,
    /// Random delay before reloads for resources that set none.
    pub reload_splay: Duration,
    /// Turns true when the daemon is stopping: a reload still waiting out
    /// its splay is then left owed (its marker stays) instead of run.
    pub stopping: Option<tokio::sync::watch::Receiver<bool>>,
    /// Where each resource whose reload is due gets a marker file until the
    /// reload succeeds: a crash (or a stop during `reload_splay`) between
    /// install and reload leaves the reload owed to the next run.
    pub owed_dir: Option<PathBuf>,
    /// Told of every install as it happens (the daemon's status then
    /// matches the file on disk while the reload still runs).
    pub installs: Option<InstallHook>,
}

/// Called with each resource's outcome as soon as its own steps are done
/// (installed, unchanged or failed), before the batch's reloads.
#[derive(Clone)]
pub struct InstallHook(pub std::sync::Arc<dyn Fn(&Outcome) + Send + Sync>);

impl std::fmt::Debug for InstallHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InstallHook")
    }
}

/// The resources whose reload is owed, from the marker files in `dir`.
pub fn owed_markers(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn mark_owed(opts: &Options, names: &[String]) {
    if let Some(dir) = &opts.owed_dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
            tracing::warn!("cannot record owed reloads in {}: {e}", dir.display());
            return;
        }
        for n in names {
            if let Err(e) = std::fs::write(dir.join(n), b"") {
                tracing::warn!(
                    "cannot record the owed reload of {n} in {}: {e}",
                    dir.display()
                );
            }
        }
    }
}

/// Whether `name`'s reload is owed (its marker exists in `dir`).
pub fn is_owed(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

/// The owed reloads of `resources` (markers in `dir`, when given, plus
/// `also`); a marker of a resource that has no reload command any more is
/// removed, as nothing can pay it.
pub fn owed_reloads(
    dir: Option<&Path>,
    resources: &[Resource],
    also: std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut owed = also;
    if let Some(dir) = dir {
        owed.extend(owed_markers(dir));
        for r in resources.iter().filter(|r| r.reload_cmd.is_none()) {
            if owed.remove(&r.name) {
                clear_owed(Some(dir), std::slice::from_ref(&r.name));
            }
        }
    }
    owed.retain(|n| {
        resources
            .iter()
            .any(|r| &r.name == n && r.reload_cmd.is_some())
    });
    owed
}

/// The reload of `names` succeeded: nothing is owed any more.
pub fn clear_owed(dir: Option<&Path>, names: &[String]) {
    if let Some(dir) = dir {
        for n in names {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
}

/// The step at which a resource failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Reading the resource file.
    Load,
    /// Rendering the template.
    Render,
    /// Comparing, staging or renaming.
    Install,
    /// The check command.
    Check,
    /// The reload command.
    Reload,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Load => "load",
            Step::Render => "render",
            Step::Install => "install",
            Step::Check => "check",
            Step::Reload => "reload",
        })
    }
}

/// What happened to a resource that did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The destination already matched.
    Unchanged,
    /// A new file was installed (and checked, and reloaded).
    Installed,
    /// `noop`: the destination would change.
    WouldChange,
}

/// A failure: which step, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The step.
    pub step: Step,
    /// One message.
    pub message: String,
}

/// The result of one resource in one batch.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The resource name.
    pub name: String,
    /// The path written (under `dest_root` when given).
    pub dest: PathBuf,
    /// The revision of the snapshot rendered.
    pub revision: i64,
    /// sha256 of the rendered content, when it rendered.
    pub sha256: Option<String>,
    /// What changed, for the log ("content", "mode 0600 → 0644"...).
    pub changed: Option<String>,
    /// The unified diff (`noop` + `diff`).
    pub diff: Option<String>,
    /// Success or failure.
    pub result: Result<Action, Failure>,
    /// How long the render took.
    pub render_time: Duration,
    /// The reload was not run (the daemon stopped during its splay): it
    /// stays owed to the next run.
    pub reload_pending: bool,
}

impl Outcome {
    /// A resource that failed before rendering (bad resource file).
    pub fn load_failure(name: &str, dest: PathBuf, revision: i64, message: String) -> Outcome {
        Outcome {
            name: name.to_string(),
            dest,
            revision,
            sha256: None,
            changed: None,
            diff: None,
            result: Err(Failure {
                step: Step::Load,
                message,
            }),
            render_time: Duration::ZERO,
            reload_pending: false,
        }
    }
}

/// The path a destination is written to, under `dest_root` when given.
/// (Resource loading refuses `..` in `dest`; only normal components are
/// joined here, so the result is always below `dest_root`.)
pub fn dest_path(dest: &Path, dest_root: Option<&Path>) -> PathBuf {
    match dest_root {
        Some(root) => {
            let mut p = root.to_path_buf();
            p.extend(dest.components().filter_map(|c| match c {
                std::path::Component::Normal(n) => Some(n),
                _ => None,
            }));
            p
        }
        None => dest.to_path_buf(),
    }
}

/// The install target for `res` under `opts`.
pub fn target(res: &Resource, opts: &Options) -> Target {
    let preview = opts.dest_root.is_some();
    Target {
        dest: dest_path(&res.dest, opts.dest_root.as_deref()),
        mode: res.mode,
        // A preview under --dest-root belongs to whoever runs it.
        uid: if preview { None } else { res.uid },
        gid: if preview { None } else { res.gid },
        create_dirs: res.create_dest_dirs || preview,
        backup: res.backup,
    }
}

fn unified_diff(old: Option<&[u8]>, new: &[u8], path: &Path) -> String {
    let old = String::from_utf8_lossy(old.unwrap_or_default());
    let new = String::from_utf8_lossy(new);
    let p = path.display().to_string();
    similar::TextDiff::from_lines(&*old, &*new)
        .unified_diff()
        .context_radius(3)
        .header(&p, &p)
        .to_string()
}

/// Applies `resources` against `snapshot`; returns one outcome each, in order.
/// Resources named in `reload_owed` run their reload command even when
/// their file is unchanged (a previous reload failed and is being retried).
pub async fn apply(
    resources: &[&Resource],
    snapshot: &Snapshot,
    templates: &TemplateSet,
    opts: &Options,
    reload_owed: &std::collections::BTreeSet<String>,
) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(resources.len());
    // reload command → (indices of outcomes, longest splay)
    let mut reloads: BTreeMap<String, (Vec<usize>, Duration, Duration)> = BTreeMap::new();
    for res in resources {
        let t = target(res, opts);
        let start = std::time::Instant::now();
        let rendered = render::render(res, snapshot, templates, &opts.env);
        let mut out = Outcome {
            name: res.name.clone(),
            dest: t.dest.clone(),
            revision: snapshot.revision(),
            sha256: None,
            changed: None,
            diff: None,
            result: Ok(Action::Unchanged),
            render_time: start.elapsed(),
            reload_pending: false,
        };
        let content = match rendered {
            Ok(c) => c,
            Err(message) => {
                out.result = Err(Failure {
                    step: Step::Render,
                    message,
                });
                outcomes.push(out);
                continue;
            }
        };
        out.sha256 = Some(hex::encode(Sha256::digest(&content)));
        out.result = install_one(res, &t, &content, opts, &mut out).await;
        if out.result == Ok(Action::Installed) {
            // Logged here, before any reload runs, so the log reads in the
            // order things happened.
            tracing::info!(
                resource = %out.name, revision = out.revision,
                "{}: rendered revision {}: installed {} ({}) ({:.1}ms)",
                out.name, out.revision, out.dest.display(),
                out.changed.as_deref().unwrap_or(""),
                out.render_time.as_secs_f64() * 1000.0
            );
        }
        // Its own steps are done (reloads come after the whole batch).
        if let Some(hook) = &opts.installs {
            (hook.0)(&out);
        }
        // An owed reload is for the file on disk: it runs when this render
        // changed nothing, and also when this render failed (the file that
        // is installed still needs it).
        let owed =
            reload_owed.contains(&res.name) && matches!(out.result, Ok(Action::Unchanged) | Err(_));
        if (out.result == Ok(Action::Installed) || owed)
            && !opts.noop
            && !opts.no_reload
            && let Some(cmd) = &res.reload_cmd
        {
            let cmd = hooks::substitute(cmd, &t.dest, &t.dest);
            let splay = res.reload_splay.unwrap_or(opts.reload_splay);
            let e = reloads
                .entry(cmd)
                .or_insert((Vec::new(), Duration::ZERO, Duration::ZERO));
            e.0.push(outcomes.len());
            e.1 = e.1.max(splay);
            e.2 = e.2.max(res.command_timeout);
        }
        outcomes.push(out);
    }
    for (cmd, (idx, splay, timeout)) in reloads {
        let names: Vec<String> = idx.iter().map(|&i| outcomes[i].name.clone()).collect();
        mark_owed(opts, &names);
        if !splay.is_zero() {
            // In the daemon the batch waits on its own task, its reload
            // group held: other resources keep flowing meanwhile.
            let d = splay.mul_f64(rand::random::<f64>());
            tracing::info!(resources = %names.join(","), command = %cmd, "reload in {:.1}s (reload_splay)", d.as_secs_f64());
            if !wait_splay(d, opts.stopping.clone()).await {
                tracing::info!(
                    resources = %names.join(","),
                    "stopping: reload left owed to the next start"
                );
                for &i in &idx {
                    outcomes[i].reload_pending = true;
                }
                continue;
            }
        }
        let result = run_reload(&cmd, timeout, &names).await;
        if result.is_ok() {
            clear_owed(opts.owed_dir.as_deref(), &names);
        }
        if let Err(message) = result {
            for i in idx {
                // A resource that already failed (an owed reload run for
                // the file on disk) keeps its own failure as its verdict;
                // the reload's is logged, and stays owed.
                if outcomes[i].result.is_ok() {
                    outcomes[i].result = Err(Failure {
                        step: Step::Reload,
                        message: message.clone(),
                    });
                }
            }
        }
    }
    outcomes
}

/// Sleeps `d`; false if the daemon began stopping first.
async fn wait_splay(d: Duration, stopping: Option<tokio::sync::watch::Receiver<bool>>) -> bool {
    let Some(mut stop) = stopping else {
        tokio::time::sleep(d).await;
        return true;
    };
    if *stop.borrow() {
        return false;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stop.wait_for(|s| *s) => false,
    }
}

async fn run_reload(cmd: &str, timeout: Duration, names: &[String]) -> Result<(), String> {
    match hooks::run(cmd, timeout).await {
        Ok(()) => {
            tracing::info!(resources = %names.join(","), command = %cmd, "reloaded");
            Ok(())
        }
        Err(e) => {
            tracing::error!(
                resources = %names.join(","),
                "reload failed: {}",
                crate::logging::one_line(&e.to_string())
            );
            Err(e.to_string())
        }
    }
}

/// Warns (once per directory and process) when a destination directory can
/// be written by someone other than root and us: they could swap the file
/// between our rename and its readers.
fn check_directory(res: &Resource, dest: &Path) {
    use std::os::unix::fs::MetadataExt;
    static WARNED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    let Some(dir) = dest.parent() else { return };
    let Ok(meta) = std::fs::metadata(dir) else {
        return;
    };
    let me = nix::unistd::geteuid().as_raw();
    let other_writer = meta.mode() & 0o002 != 0
        || (meta.mode() & 0o020 != 0 && meta.gid() != 0)
        || (meta.uid() != 0 && meta.uid() != me);
    if !other_writer {
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if warned.iter().any(|d| d == dir) {
        return;
    }
    warned.push(dir.to_path_buf());
    tracing::warn!(
        resource = %res.name,
        "{}: destination directory {} is writable by another user (owner uid {}, mode {:04o}): they could replace {} behind liveconf's back",
        res.name,
        dir.display(),
        meta.uid(),
        meta.mode() & 0o7777,
        dest.display()
    );
}

async fn install_one(
    res: &Resource,
    t: &Target,
    content: &[u8],
    opts: &Options,
    out: &mut Outcome,
) -> Result<Action, Failure> {
    let fail = |step: Step| move |message: String| Failure { step, message };
    let (what, old) = match t.compare(content).map_err(fail(Step::Install))? {
        Comparison::Same => return Ok(Action::Unchanged),
        Comparison::Differs { what, old } => (what, old),
    };
    out.changed = Some(what.clone());
    if opts.noop {
        if opts.diff {
            let mut diff = unified_diff(old.as_deref(), content, &t.dest);
            if diff.is_empty() {
                // Same bytes, other metadata (a confd `mode = "644"` file
                // is mode 0204): say so on stdout too, not only in the log.
                let p = t.dest.display();
                diff = format!("--- {p}\n+++ {p}\n# {what} (content unchanged)\n");
            }
            out.diff = Some(diff);
        }
        return Ok(Action::WouldChange);
    }
    if opts.dest_root.is_none() {
        check_directory(res, &t.dest);
    }
    let staged = t.stage(content).map_err(fail(Step::Install))?;
    if let Some(check) = &res.check_cmd {
        let cmd = hooks::substitute(check, staged.path(), &t.dest);
        hooks::run(&cmd, res.command_timeout)
            .await
            .map_err(|e| fail(Step::Check)(e.to_string()))?;
    }
    staged.commit().map_err(fail(Step::Install))?;
    Ok(Action::Installed)
}
