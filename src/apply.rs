//! One batch through the data path: render → compare → stage → check →
//! rename → reload, for a set of resources against one snapshot.
//!
//! Both drivers use this: `render --once` calls it once, the daemon once per
//! coalesced batch. Each resource ends with an [`Outcome`]; one failing
//! resource never stops the others. Reload commands run after every file of
//! the batch is in place, and a command shared by several resources runs
//! once.
//!
//! The batch itself is async, but nothing blocking runs on the runtime's
//! workers: each render (Tera or Go, DNS look-ups included), each install
//! step that touches the disk (compare, stage + fsync, rename + fsync of
//! the directory) and the owed-reload marker writes run on tokio's blocking
//! pool, one after another, with owned data (the snapshot and the template
//! set clone in O(1)). A panic there fails that resource, nothing else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::hooks::{self, HookFailure};
use crate::install::{Comparison, Staged, Target};
use crate::owed::Owed;
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
    /// Where the driver keeps its owed reloads ([`Owed`]): a marker file
    /// per resource whose reload is due, until the reload succeeds, so a
    /// crash (or a stop during `reload_splay`) between install and reload
    /// leaves it owed to the next run. `None` (`--noop`): memory only.
    pub owed_dir: Option<PathBuf>,
    /// Told of every install as it happens (the daemon's status then
    /// matches the file on disk while the reload still runs).
    pub installs: Option<InstallHook>,
    /// Resources whose guards are lifted (`render --once --force NAME`):
    /// installed even from no keys or beyond `max_shrink` (see
    /// [`crate::guard`]).
    pub force: Vec<String>,
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
/// A resource whose reload is owed (a previous reload failed or never ran)
/// runs its reload command even when its file is unchanged.
pub async fn apply(
    resources: &[&Resource],
    snapshot: &Snapshot,
    templates: &TemplateSet,
    opts: &Options,
    owed: &Owed,
) -> Vec<Outcome> {
    let mut outcomes = Vec::with_capacity(resources.len());
    let mut reloads = Reloads::default();
    // Shared by the batch's render threads.
    let templates = Arc::new(templates.clone());
    for res in resources {
        let t = target(res, opts);
        let out = apply_one(res, &t, snapshot, &templates, opts, owed).await;
        let rendered = out.sha256.is_some();
        outcomes.push(out);
        if !rendered {
            continue;
        }
        let out = &outcomes[outcomes.len() - 1];
        // Its own steps are done (reloads come after the whole batch).
        if let Some(hook) = &opts.installs {
            (hook.0)(out);
        }
        // An owed reload is for the file on disk: it runs when this render
        // changed nothing, and also when its install or check failed (the
        // file that is installed still needs it).
        let owed_now =
            matches!(out.result, Ok(Action::Unchanged) | Err(_)) && owed.is_owed(&res.name);
        if (out.result == Ok(Action::Installed) || owed_now) && reloads_run(opts) {
            reloads.add(res, &t.dest, outcomes.len() - 1, opts);
        }
    }
    reloads.run(&mut outcomes, opts, owed).await;
    outcomes
}

/// Whether this batch runs reload commands at all.
fn reloads_run(opts: &Options) -> bool {
    !opts.noop && !opts.no_reload
}

/// One resource's own steps: render, then install (compare, stage, check,
/// rename). A render failure leaves `sha256` empty.
async fn apply_one(
    res: &Resource,
    t: &Target,
    snapshot: &Snapshot,
    templates: &Arc<TemplateSet>,
    opts: &Options,
    owed: &Owed,
) -> Outcome {
    // From its install on, the reload is owed (until it succeeds).
    let owes = (res.reload_cmd.is_some() && reloads_run(opts)).then(|| owed.clone());
    let job = Front {
        res: res.clone(),
        target: t.clone(),
        snapshot: snapshot.clone(),
        templates: templates.clone(),
        env: opts.env.clone(),
        popts: PrepareOpts {
            noop: opts.noop,
            diff: opts.diff,
            preview: opts.dest_root.is_some(),
        },
        forced: opts.force.contains(&res.name),
        // Without a check nothing comes between staging and the rename:
        // the same trip to the blocking pool does both.
        commit: res.check_cmd.is_none().then(|| owes.clone()),
    };
    let (front, render_time) = match off_runtime("rendering", move || job.run()).await {
        Ok(r) => r,
        Err(e) => (Err(failed(Step::Render)(e)), Duration::ZERO),
    };
    let mut out = Outcome {
        name: res.name.clone(),
        dest: t.dest.clone(),
        revision: snapshot.revision(),
        sha256: None,
        changed: None,
        diff: None,
        result: Ok(Action::Unchanged),
        render_time,
    };
    let (sha256, prepared) = match front {
        Ok(r) => r,
        Err(f) => {
            out.result = Err(f);
            return out;
        }
    };
    out.sha256 = Some(sha256);
    out.changed = prepared.changed;
    out.diff = prepared.diff;
    out.result = install_rest(res, t, prepared.next, owes).await;
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
    out
}

/// The reload commands a batch runs after all its files are in place: each
/// distinct command (after substitution) once, for every resource sharing
/// it, after the longest splay and with the longest timeout among them.
#[derive(Default)]
struct Reloads(BTreeMap<String, ReloadGroup>);

#[derive(Default)]
struct ReloadGroup {
    /// Indices into the batch's outcomes.
    idx: Vec<usize>,
    splay: Duration,
    timeout: Duration,
}

impl Reloads {
    fn add(&mut self, res: &Resource, dest: &Path, i: usize, opts: &Options) {
        let Some(cmd) = &res.reload_cmd else { return };
        let g = self
            .0
            .entry(hooks::substitute(cmd, dest, dest))
            .or_default();
        g.idx.push(i);
        g.splay = g.splay.max(res.reload_splay.unwrap_or(opts.reload_splay));
        g.timeout = g.timeout.max(res.command_timeout);
    }

    /// Runs each command; a success pays what its resources owed, a failure
    /// fails them at `reload` (and they stay owed).
    async fn run(self, outcomes: &mut [Outcome], opts: &Options, owed: &Owed) {
        for (cmd, g) in self.0 {
            let names: Vec<String> = g.idx.iter().map(|&i| outcomes[i].name.clone()).collect();
            if !g.splay.is_zero() {
                // In the daemon the batch waits on its own task, its reload
                // group held: other resources keep flowing meanwhile.
                let d = g.splay.mul_f64(rand::random::<f64>());
                tracing::info!(resources = %names.join(","), command = %cmd, "reload in {:.1}s (reload_splay)", d.as_secs_f64());
                if !wait_splay(d, opts.stopping.clone()).await {
                    tracing::info!(
                        resources = %names.join(","),
                        "stopping: reload left owed to the next start"
                    );
                    continue;
                }
            }
            match run_reload(&cmd, g.timeout, &names).await {
                Ok(()) => {
                    let (owed, n) = (owed.clone(), names.clone());
                    if let Err(e) =
                        off_runtime("clearing owed reloads", move || owed.clear(&n)).await
                    {
                        tracing::warn!(resources = %names.join(","), "{e}");
                    }
                }
                Err(e) => {
                    for i in g.idx {
                        // A resource that already failed (an owed reload run
                        // for the file on disk) keeps its own failure as its
                        // verdict; the reload's is logged, and stays owed.
                        if outcomes[i].result.is_ok() {
                            outcomes[i].result = Err(Failure {
                                step: Step::Reload,
                                message: e.to_string(),
                            });
                        }
                    }
                }
            }
        }
    }
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

async fn run_reload(cmd: &str, timeout: Duration, names: &[String]) -> Result<(), HookFailure> {
    match hooks::run(hooks::Kind::Reload, &names.join(","), cmd, timeout).await {
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
            Err(e)
        }
    }
}

/// Warns (once per directory and process) when a destination directory can
/// be written by someone other than root and us: they could swap the file
/// between our rename and its readers.
fn check_directory(name: &str, dest: &Path) {
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
        resource = %name,
        "{}: destination directory {} is writable by another user (owner uid {}, mode {:04o}): they could replace {} behind liveconf's back",
        name,
        dir.display(),
        meta.uid(),
        meta.mode() & 0o7777,
        dest.display()
    );
}

/// Blocking work that did not complete: it panicked (or was cancelled).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("internal error: {what} failed: {why}")]
pub struct OffRuntimeError {
    /// What was being done ("rendering", "installing"...).
    what: String,
    /// The panic's message.
    why: String,
}

/// Runs `f` on tokio's blocking pool, so a slow disk or a hung DNS look-up
/// never holds a runtime worker (the event loop, status heartbeats and the
/// watchdog run there). A panic in `f` comes back as an error naming `what`.
async fn off_runtime<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, OffRuntimeError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        let why = if e.is_panic() {
            let p = e.into_panic();
            p.downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".to_string())
        } else {
            e.to_string()
        };
        OffRuntimeError {
            what: what.to_string(),
            why,
        }
    })
}

/// A failure at `step`, from any error.
fn failed<E: std::fmt::Display>(step: Step) -> impl Fn(E) -> Failure {
    move |e| Failure {
        step,
        message: e.to_string(),
    }
}

/// What one resource's apply does on the blocking pool, in one trip:
/// render, the empty guard, compare and stage, and (`commit`) the rename.
struct Front {
    res: Resource,
    target: Target,
    snapshot: Snapshot,
    templates: Arc<TemplateSet>,
    env: crate::render::Env,
    popts: PrepareOpts,
    /// `--force` for this resource.
    forced: bool,
    /// `Some(owes)`: no check runs, so commit here and mark the reload
    /// owed to `owes`; `None`: stop at the stage file (a check comes next).
    commit: Option<Option<Owed>>,
}

impl Front {
    /// The content's sha256 and where its install stands, or the render's
    /// failure; and how long the render took.
    fn run(self) -> (Result<(String, Prepared), Failure>, Duration) {
        let start = std::time::Instant::now();
        let rendered = render::render(&self.res, &self.snapshot, &self.templates, &self.env);
        let took = start.elapsed();
        // The empty guard's finding (cheap: one range look-up per prefix).
        let empty = crate::guard::empty_prefixes(&self.res, &self.snapshot);
        let content = match rendered {
            Ok(c) => c,
            Err(e) => {
                let mut f = failed(Step::Render)(e);
                // A missing key is most likely the keys being absent: say so.
                if let Some(p) = &empty
                    && self.snapshot.unreadable_among(&self.res.watched).is_none()
                {
                    f.message.push_str(&crate::guard::empty_hint(p));
                }
                return (Err(f), took);
            }
        };
        let sha256 = hex::encode(Sha256::digest(&content));
        let guard = Guard {
            res: self.res,
            empty,
            forced: self.forced,
        };
        let mut prepared = prepare(&guard.res.name, &self.target, &content, &self.popts, &guard);
        if let Some(owes) = self.commit
            && matches!(prepared.next, Ok(Next::Stage(_)))
        {
            let next = std::mem::replace(&mut prepared.next, Ok(Next::Unchanged));
            if let Ok(Next::Stage(staged)) = next {
                prepared.next = commit(staged, &guard.res.name, owes).map(|()| Next::Installed);
            }
        }
        (Ok((sha256, prepared)), took)
    }
}

/// Renames the stage file into place; once it is, the reload is owed.
fn commit(staged: Staged, name: &str, owes: Option<Owed>) -> Result<(), Failure> {
    let done = staged.commit().map_err(failed(Step::Install));
    if let (Ok(()), Some(owed)) = (&done, owes) {
        owed.mark(&[name.to_string()]);
    }
    done
}

/// The disk steps of an install before its check: compare, and (noop) the
/// diff, or the stage file, written and fsynced.
struct Prepared {
    /// What differs, once the comparison found something.
    changed: Option<String>,
    /// `noop` + `diff`: the diff.
    diff: Option<String>,
    /// Where the install stands, or why it failed.
    next: Result<Next, Failure>,
}

enum Next {
    Unchanged,
    WouldChange,
    /// Staged, waiting for the check and the rename.
    Stage(Staged),
    /// Renamed into place already (no check to run).
    Installed,
}

/// What the guards need to judge a change ([`crate::guard`]).
struct Guard {
    res: Resource,
    /// The empty guard's finding.
    empty: Option<Vec<String>>,
    /// `--force`: install it anyway (with a warning).
    forced: bool,
}

impl Guard {
    /// The refusal of a change from `old` (the installed content, when
    /// read) to `content`, as the failure to report; `None` lets it
    /// through. A change of mode or owner only is not judged.
    fn judge(&self, t: &Target, old: Option<&[u8]>, content: &[u8], noop: bool) -> Option<Failure> {
        if old == Some(content) {
            return None;
        }
        let refusal = crate::guard::judge(
            &self.res,
            self.empty.as_deref(),
            old.map(|o| o.len() as u64),
            content.len() as u64,
        )?;
        if self.forced {
            tracing::warn!(resource = %self.res.name, "{}", refusal.forced(&self.res, noop));
            return None;
        }
        let installed = std::fs::symlink_metadata(&t.dest).is_ok();
        Some(Failure {
            step: Step::Render,
            message: refusal.message(&self.res, installed, noop),
        })
    }
}

fn prepare(name: &str, t: &Target, content: &[u8], opts: &PrepareOpts, guard: &Guard) -> Prepared {
    let mut p = Prepared {
        changed: None,
        diff: None,
        next: Ok(Next::Unchanged),
    };
    let (what, old) = match t.compare(content) {
        Err(e) => {
            p.next = Err(failed(Step::Install)(e));
            return p;
        }
        Ok(Comparison::Same) => return p,
        Ok(Comparison::Differs { what, old }) => (what, old),
    };
    p.changed = Some(what.clone());
    let refused = guard.judge(t, old.as_deref(), content, opts.noop);
    if opts.noop {
        if opts.diff {
            let mut diff = unified_diff(old.as_deref(), content, &t.dest);
            if diff.is_empty() {
                // Same bytes, other metadata (a confd `mode = "644"` file
                // is mode 0204): say so on stdout too, not only in the log.
                let p = t.dest.display();
                diff = format!("--- {p}\n+++ {p}\n# {what} (content unchanged)\n");
            }
            p.diff = Some(diff);
        }
        // A preview shows the change, and that it would be refused.
        p.next = refused.map_or(Ok(Next::WouldChange), Err);
        return p;
    }
    if let Some(f) = refused {
        p.next = Err(f);
        return p;
    }
    if !opts.preview {
        check_directory(name, &t.dest);
    }
    p.next = t
        .stage(content)
        .map(Next::Stage)
        .map_err(failed(Step::Install));
    p
}

/// What [`prepare`] needs of the [`Options`].
struct PrepareOpts {
    noop: bool,
    diff: bool,
    preview: bool,
}

/// The rest of an install once [`Front`] has run: the check and the
/// rename of a staged file; once the file is in place, its reload is owed
/// to `owes`, if given.
async fn install_rest(
    res: &Resource,
    t: &Target,
    next: Result<Next, Failure>,
    owes: Option<Owed>,
) -> Result<Action, Failure> {
    let staged = match next? {
        Next::Unchanged => return Ok(Action::Unchanged),
        Next::WouldChange => return Ok(Action::WouldChange),
        Next::Installed => return Ok(Action::Installed),
        Next::Stage(staged) => staged,
    };
    if let Some(check) = &res.check_cmd {
        let cmd = hooks::substitute(check, staged.path(), &t.dest);
        let checked = hooks::run(hooks::Kind::Check, &res.name, &cmd, res.command_timeout).await;
        if let Err(e) = checked {
            // Dropping the stage file removes it: off the runtime too.
            let _ = off_runtime("removing the stage file", move || drop(staged)).await;
            return Err(failed(Step::Check)(e));
        }
    }
    let name = res.name.clone();
    off_runtime("installing", move || commit(staged, &name, owes))
        .await
        .map_err(failed(Step::Install))??;
    Ok(Action::Installed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn a_panic_off_the_runtime_is_an_error_not_a_crash() {
        let e = off_runtime("rendering", || -> u32 { panic!("boom") })
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "internal error: rendering failed: boom");
        assert_eq!(off_runtime("rendering", || 7).await, Ok(7));
    }

    /// A confdir with resources `a` and `b` writing under `dir/out`.
    fn confdir(dir: &Path) -> (Vec<Resource>, TemplateSet) {
        for d in ["conf.d", "templates", "out"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        std::fs::write(
            dir.join("templates/t.tera"),
            "{{ resource }}={{ getv(key=\"/x\") }}\n",
        )
        .unwrap();
        let mut resources = Vec::new();
        for n in ["a", "b"] {
            let file = dir.join(format!("conf.d/{n}.toml"));
            std::fs::write(
                &file,
                format!(
                    "[template]\nsrc = \"t.tera\"\ndest = \"{}/out/{n}.conf\"\nprefix = \"/{n}\"\nkeys = [\"/\"]\n",
                    dir.display()
                ),
            )
            .unwrap();
            resources.push(
                crate::resource::load(
                    &file,
                    &dir.join("templates"),
                    "",
                    crate::resource::PrefixRule::Join,
                )
                .unwrap(),
            );
        }
        (resources, TemplateSet::load(&dir.join("templates")))
    }

    #[tokio::test]
    async fn outcomes_keep_their_order_and_the_hook_hears_each_install() {
        let dir = tempfile::tempdir().unwrap();
        let (resources, templates) = confdir(dir.path());
        let refs: Vec<&Resource> = resources.iter().collect();
        let snap = Snapshot::from_pairs(5, [("/a/x", &b"1"[..]), ("/b/y", &b"2"[..])]);
        let heard = Arc::new(Mutex::new(Vec::new()));
        let h = heard.clone();
        let opts = Options {
            installs: Some(InstallHook(Arc::new(move |o: &Outcome| {
                h.lock().unwrap().push((o.name.clone(), o.result.clone()));
            }))),
            ..Options::default()
        };
        let none = Default::default();
        let out = apply(&refs, &snap, &templates, &opts, &none).await;
        let names: Vec<&str> = out.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(out[0].result, Ok(Action::Installed));
        assert_eq!(out[0].changed.as_deref(), Some("new file"));
        assert_eq!(
            out[0].sha256.as_deref(),
            Some(hex::encode(Sha256::digest(b"a=1\n")).as_str())
        );
        assert_eq!(out[1].result.as_ref().unwrap_err().step, Step::Render);
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out/a.conf")).unwrap(),
            "a=1\n"
        );
        // (As before: a render failure is not an install step, the hook
        // does not hear of it.)
        assert_eq!(
            *heard.lock().unwrap(),
            [("a".to_string(), out[0].result.clone())]
        );

        // Unchanged the second time; noop + diff shows a change without writing it.
        let out = apply(&refs[..1], &snap, &templates, &opts, &none).await;
        assert_eq!(out[0].result, Ok(Action::Unchanged));
        let snap = Snapshot::from_pairs(6, [("/a/x", &b"2"[..])]);
        let preview = Options {
            noop: true,
            diff: true,
            ..Options::default()
        };
        let out = apply(&refs[..1], &snap, &templates, &preview, &none).await;
        assert_eq!(out[0].result, Ok(Action::WouldChange));
        assert!(out[0].diff.as_deref().unwrap().contains("+a=2"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out/a.conf")).unwrap(),
            "a=1\n"
        );
    }

    #[tokio::test]
    async fn a_failed_check_leaves_no_stage_file() {
        let dir = tempfile::tempdir().unwrap();
        let (mut resources, templates) = confdir(dir.path());
        resources[0].check_cmd = Some("false".into());
        let snap = Snapshot::from_pairs(1, [("/a/x", &b"1"[..])]);
        let out = apply(
            &[&resources[0]],
            &snap,
            &templates,
            &Options::default(),
            &Default::default(),
        )
        .await;
        assert_eq!(out[0].result.as_ref().unwrap_err().step, Step::Check);
        assert!(crate::install::remove_stale_stages(&dir.path().join("out/a.conf")) == 0);
        assert_eq!(
            std::fs::read_dir(dir.path().join("out")).unwrap().count(),
            0
        );
    }

    #[tokio::test]
    async fn owed_markers_are_written_and_cleared_around_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        let (mut resources, templates) = confdir(dir.path());
        let owed_dir = dir.path().join("owed");
        let seen = dir.path().join("seen");
        // The reload sees its own marker, and leaves it to be cleared.
        resources[0].reload_cmd = Some(format!("ls {} > {}", owed_dir.display(), seen.display()));
        let snap = Snapshot::from_pairs(1, [("/a/x", &b"1"[..])]);
        let owed = Owed::open(Some(&owed_dir), Default::default());
        let out = apply(
            &[&resources[0]],
            &snap,
            &templates,
            &Options::default(),
            &owed,
        )
        .await;
        assert_eq!(out[0].result, Ok(Action::Installed));
        assert_eq!(std::fs::read_to_string(&seen).unwrap(), "a\n");
        assert!(!owed.is_owed("a"));
        assert_eq!(std::fs::read_dir(&owed_dir).unwrap().count(), 0);
    }
}
