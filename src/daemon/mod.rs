//! The daemon: `liveconf render` without `--once`.
//!
//! One task owns everything mutable: the key mirror, the resources, the
//! plan of what is pending and retrying. It reacts to backend events
//! (changes update the mirror in place and mark only the dependent
//! resources pending), to its own timers (coalescing windows, retries,
//! heartbeats), to a reload trigger (SIGHUP, a changed configuration
//! directory) and to its shutdown future. Batches go through the same
//! [`apply`](crate::apply::apply) as `render --once`, always from a complete
//! snapshot: nothing renders before the first full view has arrived.
//!
//! The parts, each on its own: [`plan`] (pure: which ready resources run
//! now, in which reload group), [`schedule`] (pure: windows and retries),
//! [`mirror`] (the keys and who depends on them), [`batch`] (a batch on its
//! own task), [`observer`] (status.json, metrics, systemd, fleet report),
//! [`reload`] (SIGHUP), and `backend::supervise` (the watcher task). This
//! file is the loop that ties them; it never waits for a command, and it
//! installs no signal handler: the caller hands it a shutdown future and a
//! reload channel ([`signals`] has the OS ones).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::apply::{Options, Outcome, Step};
use crate::backend::supervise::Supervisor;
use crate::backend::{self, Event};
use crate::owed::Owed;
use crate::resource::Resource;
use crate::settings::{BackendKind, Layer, Settings};
use crate::status::Status;
use crate::templates::TemplateSet;

mod batch;
mod mirror;
mod observer;
mod outcome_log;
mod plan;
mod reload;
mod schedule;
pub(crate) mod signals;
#[cfg(test)]
mod tests;

use batch::{BatchDone, BatchMsg};
use mirror::Mirror;
use observer::{HEARTBEAT, Heard, Next, Observer};
use plan::{Member, Planner};
use reload::Trigger;
pub use signals::Control;

/// Where the settings came from, to read them again on SIGHUP.
#[derive(Clone, Debug)]
pub struct Source {
    /// `--config`, if given.
    pub config: Option<PathBuf>,
    /// The command-line layer.
    pub flags: Layer,
    /// `--only`.
    pub only: Vec<String>,
}

/// Why the daemon could not run; the command line picks the exit code.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The process could not be set up (a signal handler).
    #[error("{0}")]
    Setup(String),
    /// The settings or the configuration directory cannot run a daemon.
    #[error(transparent)]
    Config(anyhow::Error),
}

/// A running batch, as a stop names it.
struct Running {
    /// The resources it applies.
    names: Vec<String>,
    /// How many of them are through their own steps (render, check,
    /// install): all of them, and the batch is at its reload.
    applied: usize,
}

struct Daemon {
    source: Source,
    settings: Settings,
    /// The settings the daemon started with: what a setting that needs a
    /// restart still has, whatever reloads loaded since.
    started_with: Settings,
    /// The batches running, by reload group (what a stop waits for).
    running: BTreeMap<String, Running>,
    opts: Options,
    resources: Vec<Resource>,
    templates: Arc<TemplateSet>,
    mirror: Mirror,
    planner: Planner,
    observer: Observer,
    owed: Owed,
    /// Where running batches report.
    batches: UnboundedSender<BatchMsg>,
    backend: Supervisor,
    /// The DNS names the renders looked up (see [`crate::dnsdeps`]).
    dns: Arc<crate::dnsdeps::Tracker>,
}

/// Runs the daemon until `shutdown` resolves; `Ok` after a clean stop.
/// Each [`Control::Reload`] on `controls` reads settings, conf.d and
/// templates again (what SIGHUP does); a [`Control::StopAgain`] while
/// stopping is answered in the log with what the stop waits for.
pub async fn run(
    settings: Settings,
    source: Source,
    opts: Options,
    shutdown: impl Future<Output = ()>,
    mut controls: UnboundedReceiver<Control>,
) -> Result<(), DaemonError> {
    let (batch_tx, mut batch_rx) = unbounded_channel::<BatchMsg>();
    let (event_tx, mut events) = unbounded_channel::<Event>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut d = Daemon::new(settings, source, opts, batch_tx, event_tx, stop_rx)?;
    let publisher = d.start_sinks().await?;
    // DNS answers are looked up again when due; the resources whose
    // answer changed come back here.
    let (dns_tx, mut dns_rx) = unbounded_channel::<Vec<String>>();
    let dns_task = tokio::spawn(crate::dnsdeps::run(d.dns.clone(), dns_tx));
    d.backend.restart(&d.settings, d.watched(), 0);
    // Until it answers, status names what is being tried.
    d.observer.reconnecting(d.backend.backend().describe());
    let (conf_tx, mut conf_rx) = unbounded_channel::<()>();
    let mut _confdir_watcher = d.watch_confdir(conf_tx.clone());
    tracing::info!(
        resources = d.resources.len(),
        backend = d.backend.backend().name(),
        "liveconf started"
    );
    let watchdog = sd_notify::watchdog_enabled().map(|t| (t / 2).max(Duration::from_millis(10)));
    let mut heartbeat = tokio::time::interval(watchdog.unwrap_or(HEARTBEAT).min(HEARTBEAT));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        let deadline = d.next_deadline();
        tokio::select! {
            Some(ev) = events.recv() => {
                d.on_event(ev);
                // Drain what else is queued: one batch for the lot.
                while let Ok(ev) = events.try_recv() {
                    d.on_event(ev);
                }
            }
            _ = sleep_until(deadline) => {}
            Some(msg) = batch_rx.recv() => {
                d.on_batch_msg(msg);
                // A batch's installs and its end often come together.
                while let Ok(msg) = batch_rx.try_recv() {
                    d.on_batch_msg(msg);
                }
            }
            Some(names) = dns_rx.recv() => d.mark_names(&names),
            _ = heartbeat.tick() => {
                let current = d.backend.backend().idle_is_current();
                d.observer.tick(watchdog.is_some(), current);
            }
            () = &mut shutdown => break,
            Some(c) = controls.recv() => match c {
                Control::Reload => {
                    d.reload(Trigger::Signal);
                    _confdir_watcher = d.watch_confdir(conf_tx.clone());
                }
                // Not stopping yet: nothing to say.
                Control::StopAgain(_) => {}
            },
            Some(()) = conf_rx.recv() => {
                // Let an editor finish, then reload once.
                while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), conf_rx.recv()).await {}
                tracing::info!("configuration directory changed: reloading");
                d.reload(Trigger::ConfDir);
                _confdir_watcher = d.watch_confdir(conf_tx.clone());
            }
        }
        d.run_ready();
        d.observer
            .flush(d.mirror.view().is_some(), d.planner.is_settled());
    }
    dns_task.abort();
    d.stop(stop_tx, batch_rx, controls, publisher).await;
    Ok(())
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

impl Daemon {
    fn new(
        settings: Settings,
        source: Source,
        mut opts: Options,
        batches: UnboundedSender<BatchMsg>,
        events: UnboundedSender<Event>,
        stopping: watch::Receiver<bool>,
    ) -> Result<Daemon, DaemonError> {
        // What `check` refuses, and what the daemon could never run with,
        // is a configuration error (exit 3), not a backend to retry forever.
        reload::check(&settings, opts.noop).map_err(|m| DaemonError::Config(anyhow::anyhow!(m)))?;
        // Hooks a killed liveconf left running end before any of ours runs.
        if !opts.noop {
            crate::hooks::adopt_state_dir(&settings.state_dir);
        }
        let status = Status::read(&settings.state_dir).unwrap_or_default();
        // Reloads owed from before (a run that died, stopped or failed
        // between install and reload) run in the first batch, even for
        // unchanged files.
        let owed = Owed::open(opts.owed_dir.as_deref(), status.reloads_owed());
        let observer = Observer::new(status, &settings.state_dir, opts.noop, owed.clone());
        // Reloads waiting out their splay give up (left owed) when the
        // daemon stops, instead of holding the stop.
        opts.stopping = Some(stopping);
        // Installs travel on the batches' channel, so each arrives before
        // its batch's end.
        opts.installs = Some(batch::install_hook(batches.clone()));
        let dns = crate::dnsdeps::Tracker::new(opts.env.dns.clone(), settings.dns_timing());
        opts.env.live = Some(crate::dnsdeps::Live(dns.clone()));
        let mut observer = observer;
        observer.follow_dns(dns.clone());
        let mut d = Daemon {
            dns,
            backend: Supervisor::new(&settings, events),
            source,
            started_with: settings.clone(),
            running: BTreeMap::new(),
            settings,
            opts,
            resources: Vec::new(),
            templates: Arc::new(TemplateSet::empty()),
            mirror: Mirror::default(),
            planner: Planner::default(),
            observer,
            owed,
            batches,
        };
        d.load().map_err(DaemonError::Config)?;
        d.owed.configure(d.opts.owed_dir.as_deref(), &d.resources);
        d.remove_stale_stages();
        Ok(d)
    }

    /// The metrics endpoint and the fleet report publisher, when enabled.
    async fn start_sinks(&mut self) -> Result<Option<JoinHandle<()>>, DaemonError> {
        if let Some(addr) = self.settings.metrics_addr {
            self.observer.serve_metrics(addr).await.map_err(|e| {
                DaemonError::Config(anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
            })?;
        }
        if !self.settings.report {
            return Ok(None);
        }
        if self.settings.backend != BackendKind::Etcd {
            return Err(DaemonError::Config(anyhow::anyhow!(
                "--report publishes to etcd: it needs the etcd backend"
            )));
        }
        // The publisher finds etcd itself, retrying: a nameserver or etcd
        // down at start is not a settings error.
        Ok(Some(tokio::spawn(crate::fleet::publish(
            self.settings.clone(),
            self.settings.node_name.clone(),
            self.settings.report_ttl,
            self.observer.report_to(),
        ))))
    }

    /// Stops: reloads waiting out their splay give up (left owed), running
    /// batches finish (each command is bounded by its command_timeout: no
    /// stage file is left, every outcome is recorded), the watch and the
    /// fleet report end, status.json says so. What it waits for is said
    /// once, and again at each stop signal meanwhile.
    async fn stop(
        mut self,
        stop_tx: watch::Sender<bool>,
        mut batch_rx: UnboundedReceiver<BatchMsg>,
        mut controls: UnboundedReceiver<Control>,
        publisher: Option<JoinHandle<()>>,
    ) {
        self.observer.stopping();
        let _ = stop_tx.send(true);
        if !self.planner.is_idle() {
            tracing::info!(
                "stopping: waiting for {} to finish",
                self.describe_running()
            );
        }
        while !self.planner.is_idle() {
            tokio::select! {
                msg = batch_rx.recv() => match msg {
                    Some(msg) => self.on_batch_msg(msg),
                    None => break,
                },
                Some(c) = controls.recv() => match c {
                    Control::StopAgain(sig) => tracing::info!(
                        "{sig}: already stopping: waiting for {} to finish",
                        self.describe_running()
                    ),
                    Control::Reload => tracing::info!(
                        "SIGHUP ignored: stopping, waiting for {} to finish",
                        self.describe_running()
                    ),
                },
            }
        }
        self.backend.stop();
        if let Some(p) = publisher {
            // Closing the report channel makes the publisher revoke its
            // lease (a stopped host is gone, not in sync); bounded, then
            // abandoned.
            self.observer.close_report();
            let abort = p.abort_handle();
            if tokio::time::timeout(Duration::from_secs(3), p)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        self.observer.stopped();
    }

    /// What the running batches are doing, to name them: "the render,
    /// check and install of x, y" until each of a batch's resources is
    /// through its own steps, then "the reload of x, y (`cmd`)" for a group
    /// that shares a reload command, "the batch of z" otherwise.
    fn describe_running(&self) -> String {
        let parts: Vec<String> = self
            .running
            .iter()
            .map(|(group, r)| {
                let names = r.names.join(", ");
                match group.strip_prefix("cmd:") {
                    _ if r.applied < r.names.len() => {
                        format!("the render, check and install of {names}")
                    }
                    Some(cmd) => format!("the reload of {names} (`{cmd}`)"),
                    None => format!("the batch of {names}"),
                }
            })
            .collect();
        if parts.is_empty() {
            "the running batches".into()
        } else {
            parts.join("; ")
        }
    }

    /// (Re)loads conf.d and templates for the current settings.
    fn load(&mut self) -> anyhow::Result<()> {
        let loaded = crate::confdir::load(&self.settings, &self.source.only)?;
        self.templates = Arc::new(TemplateSet::load(&self.settings.templates_dir()));
        for e in &loaded.failed {
            tracing::error!(resource = %e.name, step = %Step::Load, "{}: load failed: {e}", e.name);
        }
        let failures = loaded
            .failed
            .iter()
            .map(|e| Outcome::load_failure(&e.name, PathBuf::new(), 0, e.to_string()))
            .collect();
        self.resources = loaded.resources;
        let root = self.opts.dest_root.as_deref();
        let members = self
            .resources
            .iter()
            .map(|r| Member {
                name: r.name.clone(),
                group: reload_group(r, root),
                reloads: r.reload_cmd.is_some(),
                wait: r.wait,
            })
            .collect();
        self.planner.configure(members, self.settings.wait);
        self.dns
            .retain(&self.resources.iter().map(|r| r.name.clone()).collect());
        self.mirror.configure(&self.resources, self.watched());
        self.observer
            .configured(&self.settings, &self.resources, failures, root);
        Ok(())
    }

    /// The root prefixes the resources read.
    fn watched(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .resources
            .iter()
            .flat_map(|r| r.watched.clone())
            .collect();
        w.sort();
        w.dedup();
        backend::etcd::roots(&w)
    }

    fn remove_stale_stages(&self) {
        let status = self.settings.state_dir.join(crate::status::STATUS_FILE);
        let n = crate::install::remove_stale_stages(&status);
        if n > 0 {
            tracing::info!("removed {n} temporary status file(s) left by an interrupted run");
        }
        for r in &self.resources {
            let dest = crate::apply::dest_path(&r.dest, self.opts.dest_root.as_deref());
            let n = crate::install::remove_stale_stages(&dest);
            if n > 0 {
                tracing::warn!(resource = %r.name, "removed {n} stage file(s) left next to {} by an interrupted run", dest.display());
            }
        }
    }

    /// Watches conf.d/ and templates/ when `watch_confdir` is on.
    fn watch_confdir(&self, tx: UnboundedSender<()>) -> Option<notify::RecommendedWatcher> {
        use notify::Watcher;
        if !self.settings.watch_confdir {
            return None;
        }
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !ev.kind.is_access()
            {
                let _ = tx.send(());
            }
        })
        .map_err(|e| tracing::error!("cannot watch the configuration directory: {e}"))
        .ok()?;
        for dir in [self.settings.conf_d(), self.settings.templates_dir()] {
            if let Err(e) = w.watch(&dir, notify::RecursiveMode::Recursive) {
                tracing::warn!("cannot watch {}: {e}", dir.display());
            }
        }
        Some(w)
    }

    /// A backend event: data to the mirror (marking what it touches), the
    /// rest to the observer.
    fn on_event(&mut self, ev: Event) {
        let heard = match ev {
            Event::Changes { revision, changes } => {
                let count = changes.len();
                let Some(touched) = self.mirror.changes(revision, changes) else {
                    return;
                };
                self.mark(touched);
                let revision = self.mirror.view().map_or(revision, |m| m.revision());
                Heard::Changes { count, revision }
            }
            Event::Snapshot { snapshot, reason } => {
                let revision = snapshot.revision();
                let touched = self.mirror.snapshot(snapshot, reason);
                let missed = touched.missed;
                self.mark(touched);
                Heard::Snapshot { revision, missed }
            }
            Event::Progress { revision } => Heard::Progress { revision },
            Event::Connected { endpoint } => Heard::Connected { endpoint },
            Event::Disconnected { reason } => Heard::Disconnected {
                reason,
                then: self.backend.backend().while_unavailable(),
                trying: self.backend.backend().describe(),
            },
        };
        let revision = self.mirror.view().map(|m| m.revision());
        self.observer.heard(heard, revision);
    }

    fn mark(&mut self, touched: mirror::Touched) {
        let at = Instant::now();
        if touched.all {
            self.planner.mark_all(at);
        }
        for i in touched.resources {
            if let Some(r) = self.resources.get(i) {
                self.planner.mark(&r.name, touched.now, at);
            }
        }
    }

    /// The DNS answer these resources rendered from changed: each renders
    /// again, as after a change of its keys.
    fn mark_names(&mut self, names: &[String]) {
        let at = Instant::now();
        for n in names {
            if self.planner.is_member(n) {
                self.planner.mark(n, false, at);
            }
        }
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.mirror.view()?;
        self.planner.next_deadline()
    }

    /// Starts a batch for every group of ready resources (see [`plan`]),
    /// each on its own task: one slow check or reload never delays the
    /// others, the watch, status or the watchdog.
    fn run_ready(&mut self) {
        let Some(mirror) = self.mirror.view().cloned() else {
            return;
        };
        for b in self.planner.take(Instant::now()) {
            let resources: Vec<Resource> = b
                .names
                .iter()
                .filter_map(|n| self.resources.iter().find(|r| &r.name == n))
                .cloned()
                .collect();
            self.running.insert(
                b.group.clone(),
                Running {
                    names: b.names.clone(),
                    applied: 0,
                },
            );
            let cx = batch::Context {
                mirror: mirror.clone(),
                templates: self.templates.clone(),
                opts: self.opts.clone(),
                owed: self.owed.clone(),
                tx: self.batches.clone(),
            };
            batch::spawn(b.group, b.held, resources, cx);
        }
    }

    fn on_batch_msg(&mut self, msg: BatchMsg) {
        match msg {
            BatchMsg::Installed(o) => {
                if let Some(r) = self
                    .running
                    .values_mut()
                    .find(|r| r.names.contains(&o.name))
                {
                    r.applied += 1;
                }
                self.observer.installed(&o)
            }
            BatchMsg::Done(done) => self.on_batch_done(done),
        }
    }

    /// A batch ended: its group is free, failures are retried, and the
    /// observer hears of every outcome.
    fn on_batch_done(&mut self, done: BatchDone) {
        let BatchDone {
            group,
            held,
            outcomes,
        } = done;
        self.planner.finished(&group, &held);
        self.running.remove(&group);
        // A resource removed by a reload while its batch ran is forgotten.
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .filter(|o| self.planner.is_member(&o.name))
            .collect();
        if outcomes.is_empty() {
            return;
        }
        let now = Instant::now();
        let mut next = std::collections::BTreeMap::new();
        for o in &outcomes {
            match &o.result {
                Ok(_) => self.planner.succeeded(&o.name),
                Err(f) => {
                    let then = match self
                        .broken_template(&o.name)
                        .filter(|_| f.step == Step::Render)
                    {
                        // Retrying, or rendering again on a key change,
                        // would fail the same way.
                        Some(src) => {
                            self.planner.park(&o.name);
                            Next::Parked(self.parked_until(&src))
                        }
                        None => Next::Retry(self.planner.failed(&o.name, now)),
                    };
                    next.insert(o.name.as_str(), then);
                }
            }
        }
        self.observer.batch_done(&outcomes, &next);
    }

    /// The template of resource `name`, when the templates as now loaded
    /// cannot render it whatever the keys (a syntax error, a missing
    /// include): only a change of templates/ can fix that.
    fn broken_template(&self, name: &str) -> Option<String> {
        let r = self.resources.iter().find(|r| r.name == name)?;
        match &r.source {
            crate::resource::Source::Template(src, crate::resource::Engine::Tera) => {
                self.templates.problem(src).map(|_| src.clone())
            }
            crate::resource::Source::Template(src, crate::resource::Engine::Go) => {
                self.templates.go(src).err().map(|_| src.clone())
            }
            crate::resource::Source::Format(..) => None,
        }
    }

    /// What a resource whose template `src` is broken waits for.
    fn parked_until(&self, src: &str) -> String {
        let dir = self.settings.templates_dir();
        if self.settings.watch_confdir {
            format!(
                "not retried until {} changes (a render cannot fix a template)",
                dir.join(src).display()
            )
        } else {
            format!(
                "not retried until {} is fixed and liveconf gets SIGHUP (a render cannot fix a template)",
                dir.join(src).display()
            )
        }
    }
}

/// Resources with the same reload command (after substitution) share a
/// group; any other resource is alone in its own.
fn reload_group(r: &Resource, dest_root: Option<&std::path::Path>) -> String {
    match &r.reload_cmd {
        Some(cmd) => {
            let dest = crate::apply::dest_path(&r.dest, dest_root);
            format!("cmd:{}", crate::hooks::substitute(cmd, &dest, &dest))
        }
        None => format!("res:{}", r.name),
    }
}
