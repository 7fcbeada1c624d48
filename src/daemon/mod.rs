//! The daemon: `liveconf render` without `--once`.
//!
//! One task owns everything mutable: the key mirror, the resources, what is
//! pending and what must be retried. It reacts to backend events (changes
//! update the mirror in place and mark only the dependent resources
//! pending), to its own timers (coalescing windows, retries) and to signals
//! (SIGTERM/SIGINT stop, SIGHUP reloads). Batches go through the same
//! [`apply`](crate::apply::apply) as `render --once`, always from a complete
//! snapshot: nothing renders before the first full view has arrived.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use std::sync::Arc;

use tokio::sync::watch;

use crate::apply::{self, Action, Options, Outcome, Step};
use crate::backend::{self, Event, SnapshotReason};
use crate::deps::Deps;
use crate::fleet::{Report, ResourceReport};
use crate::install;
use crate::metrics::Metrics;
use crate::resource::{Resource, Wait};
use crate::schedule::Schedule;
use crate::settings::{BackendKind, Layer, Settings};
use crate::status::Status;
use crate::store::Snapshot;
use crate::templates::TemplateSet;

mod reload;

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

/// What running batches tell the daemon.
enum BatchMsg {
    /// A file was installed (the batch goes on: check of others, reloads).
    Installed(Outcome),
    /// The batch ended.
    Done(BatchDone),
}

/// A batch's report: the names it held busy (its whole reload group) and
/// the outcome of each resource it applied.
struct BatchDone {
    group: String,
    held: Vec<String>,
    outcomes: Vec<Outcome>,
}

struct Daemon {
    source: Source,
    settings: Settings,
    opts: Options,
    resources: Vec<Resource>,
    load_failures: Vec<Outcome>,
    templates: Arc<TemplateSet>,
    deps: Deps,
    mirror: Option<Snapshot>,
    schedule: Schedule,
    status: Status,
    status_dirty: bool,
    status_error: Option<String>,
    status_written: Instant,
    metrics: Option<Arc<Metrics>>,
    report: Option<watch::Sender<Report>>,
    ready_sent: bool,
    /// Where running batches report their outcomes.
    batches: UnboundedSender<BatchMsg>,
    /// Each resource's reload group key (same order as `resources`).
    group_of: Vec<String>,
    /// Resources whose steps this daemon has completed at least once (for
    /// READY=1).
    attempted: BTreeSet<String>,
    /// Resources whose batch has reported an outcome in this run. One that
    /// is attempted (installed) but not reported is in flight (its reload
    /// runs or waits out its splay): not failing, whatever its old status.
    reported: BTreeSet<String>,
    /// Resources that joined a reload group (SIGHUP) while its batch ran:
    /// held with it, released (and rendered) when it ends.
    late_members: BTreeMap<String, Vec<String>>,
    /// The prefixes the running backend watches (may be more than needed
    /// after a reload removed resources: the watch is kept).
    watching: Vec<String>,
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

/// Runs the daemon until SIGTERM/SIGINT; `Ok` after a clean stop.
pub async fn run(settings: Settings, source: Source, opts: Options) -> Result<(), DaemonError> {
    use tokio::signal::unix::{SignalKind, signal};
    let sig = |k| {
        signal(k).map_err(|e| DaemonError::Setup(format!("cannot install signal handler: {e}")))
    };
    let mut sigterm = sig(SignalKind::terminate())?;
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sighup = sig(SignalKind::hangup())?;

    let (batch_tx, mut batch_rx) = unbounded_channel::<BatchMsg>();
    let mut d = Daemon::new(settings, source, opts, batch_tx).map_err(DaemonError::Config)?;
    d.remove_stale_stages();
    if let Some(addr) = d.settings.metrics_addr {
        let m = Arc::new(Metrics::new());
        crate::metrics::serve(addr, m.clone()).await.map_err(|e| {
            DaemonError::Config(anyhow::anyhow!("cannot serve metrics on {addr}: {e}"))
        })?;
        let names: Vec<&str> = d
            .resources
            .iter()
            .map(|r| r.name.as_str())
            .chain(d.load_failures.iter().map(|o| o.name.as_str()))
            .collect();
        m.configured(&names);
        m.record(&d.load_failures, crate::status::now() as f64);
        m.heard(d.status.last_event.or(d.status.started).unwrap_or(0) as f64);
        d.metrics = Some(m);
    }
    let mut _publisher = None;
    if d.settings.report {
        if d.settings.backend != BackendKind::Etcd {
            return Err(DaemonError::Config(anyhow::anyhow!(
                "--report publishes to etcd: it needs the etcd backend"
            )));
        }
        let conn = backend::etcd::Connection::from_settings(&d.settings)
            .await
            .map_err(|e| DaemonError::Config(e.into()))?;
        let (rtx, rrx) = watch::channel(d.build_report());
        _publisher = Some(tokio::spawn(crate::fleet::publish(
            conn,
            d.settings.node_name.clone(),
            d.settings.report_ttl,
            rrx,
        )));
        d.report = Some(rtx);
    }
    let watchdog = sd_notify::watchdog_enabled().map(|t| (t / 2).max(Duration::from_millis(10)));
    let mut heartbeat = tokio::time::interval(watchdog.unwrap_or(HEARTBEAT).min(HEARTBEAT));
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (stop_tx, stop_rx) = watch::channel(false);
    d.opts.stopping = Some(stop_rx);
    // Installs travel on the batches' channel, so each arrives before its
    // batch's end.
    let install_tx = d.batches.clone();
    d.opts.installs = Some(apply::InstallHook(Arc::new(move |o: &Outcome| {
        let _ = install_tx.send(BatchMsg::Installed(o.clone()));
    })));
    let (tx, mut rx) = unbounded_channel();
    let mut backend = d.spawn_backend(tx.clone());
    let (conf_tx, mut conf_rx) = unbounded_channel::<()>();
    let mut _confdir_watcher = d.watch_confdir(conf_tx.clone());
    tracing::info!(
        resources = d.resources.len(),
        backend = backend::open(&d.settings).name(),
        "liveconf started"
    );

    loop {
        let deadline = d.next_deadline();
        tokio::select! {
            ev = rx.recv() => {
                if let Some(ev) = ev {
                    d.on_event(ev);
                    // Drain what else is queued: one batch for the lot.
                    while let Ok(ev) = rx.try_recv() {
                        d.on_event(ev);
                    }
                }
            }
            _ = sleep_until(deadline) => {}
            Some(msg) = batch_rx.recv() => d.on_batch_msg(msg),
            _ = heartbeat.tick() => {
                if watchdog.is_some() {
                    let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                }
                d.heartbeat();
            }
            _ = sigterm.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = sigint.recv() => { tracing::info!("SIGINT: stopping"); break; }
            _ = sighup.recv() => {
                tracing::info!("SIGHUP: reloading settings, resources and templates");
                d.reload(&tx, &mut backend);
                _confdir_watcher = d.watch_confdir(conf_tx.clone());
            }
            Some(()) = conf_rx.recv() => {
                // Let an editor finish, then reload once.
                while let Ok(Some(())) = tokio::time::timeout(Duration::from_millis(200), conf_rx.recv()).await {}
                tracing::info!("configuration directory changed: reloading");
                d.reload(&tx, &mut backend);
                _confdir_watcher = d.watch_confdir(conf_tx.clone());
            }
        }
        d.run_ready();
        d.write_status();
        d.notify_systemd();
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    // Reloads waiting out their splay give up (left owed) instead of
    // holding the stop.
    let _ = stop_tx.send(true);
    // Let running batches finish (each command is bounded by its
    // command_timeout): no stage file is left, every outcome is recorded.
    while !d.schedule.is_idle() {
        match batch_rx.recv().await {
            Some(msg) => d.on_batch_msg(msg),
            None => break,
        }
    }
    backend.abort();
    if let Some(p) = _publisher {
        // Closing the report channel makes the publisher revoke its lease
        // (a stopped host is gone, not in sync); bounded, then abandoned.
        d.report = None;
        let abort = p.abort_handle();
        if tokio::time::timeout(Duration::from_secs(3), p)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    d.status.connected = false;
    d.status_dirty = true;
    d.write_status();
    Ok(())
}

/// How often status.json is refreshed while nothing happens, so its age
/// tells monitoring the daemon is alive.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

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
        opts: Options,
        batches: UnboundedSender<BatchMsg>,
    ) -> anyhow::Result<Daemon> {
        let mut d = Daemon {
            source,
            settings,
            opts,
            resources: Vec::new(),
            load_failures: Vec::new(),
            templates: Arc::new(TemplateSet::empty()),
            deps: Deps::default(),
            mirror: None,
            schedule: Schedule::default(),
            status: Status::default(),
            status_dirty: true,
            status_error: None,
            status_written: Instant::now(),
            metrics: None,
            report: None,
            ready_sent: false,
            batches,
            late_members: BTreeMap::new(),
            attempted: BTreeSet::new(),
            reported: BTreeSet::new(),
            group_of: Vec::new(),
            watching: Vec::new(),
        };
        d.status = Status::read(&d.settings.state_dir).unwrap_or_default();
        d.status.daemon_pid = (!d.opts.noop).then(std::process::id);
        d.status.started = Some(crate::status::now());
        // This process has not connected yet, whatever the last one said,
        // nor rendered anything: a previous run's "healthy" must not pass
        // for this one's (revision and sha256 stay, for information).
        d.status.connected = false;
        d.status.endpoint = None;
        for r in d.status.resources.values_mut() {
            r.healthy = false;
            r.error = None;
        }
        d.load()?;
        // Reloads that failed before a restart are still owed: the first
        // batch runs them even for unchanged files.
        d.adopt_owed_reloads();
        Ok(d)
    }

    /// Reloads owed from before (status.json, or the marker left by a run
    /// that died or stopped between install and reload) are scheduled: the
    /// next batch runs them even for unchanged files. At start and after a
    /// configuration reload (a resource may come back).
    fn adopt_owed_reloads(&mut self) {
        let owed = crate::owed::owed(
            self.opts.owed_dir.as_deref(),
            &self.resources,
            self.status.reloads_owed(),
        );
        let now = Instant::now();
        let owed_now = self.schedule.reloads_owed();
        for name in owed {
            if !owed_now.contains(&name) {
                self.schedule.failed(&name, true, now);
            }
            if let Some(st) = self.status.resources.get_mut(&name) {
                st.reload_owed = true;
            }
        }
    }

    /// (Re)loads conf.d and templates for the current settings.
    fn load(&mut self) -> anyhow::Result<()> {
        let loaded = crate::confdir::load(&self.settings, &self.source.only)?;
        self.templates = Arc::new(TemplateSet::load(&self.settings.templates_dir()));
        self.load_failures = loaded
            .failed
            .iter()
            .map(|e| Outcome::load_failure(&e.name, PathBuf::new(), 0, e.to_string()))
            .collect();
        for e in &loaded.failed {
            tracing::error!(resource = %e.name, step = %Step::Load, "{}: load failed: {e}", e.name);
        }
        self.resources = loaded.resources;
        let root = self.opts.dest_root.as_deref();
        self.group_of = self
            .resources
            .iter()
            .map(|r| Self::reload_group(r, root))
            .collect();
        self.deps = Deps::new(&self.resources);
        self.status.node = self.settings.node_name.clone();
        self.status.backend = backend::open(&self.settings).name().to_string();
        let mut names: Vec<&str> = self.resources.iter().map(|r| r.name.as_str()).collect();
        names.extend(self.load_failures.iter().map(|o| o.name.as_str()));
        self.status.retain(&names);
        // A resource not rendered yet is listed (and not healthy) from the
        // start: a daemon that never reaches etcd must not look fine.
        for r in &self.resources {
            self.status
                .resources
                .entry(r.name.clone())
                .or_insert_with(|| crate::status::ResourceStatus {
                    dest: apply::dest_path(&r.dest, self.opts.dest_root.as_deref()),
                    ..Default::default()
                });
        }
        let failures = self.load_failures.clone();
        if let Some(m) = &self.metrics {
            m.configured(&names);
            m.record(&failures, crate::status::now() as f64);
        }
        self.status.record(&failures);
        self.status_dirty = true;
        Ok(())
    }

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
        let n = install::remove_stale_stages(&status);
        if n > 0 {
            tracing::info!("removed {n} temporary status file(s) left by an interrupted run");
        }
        for r in &self.resources {
            let dest = apply::dest_path(&r.dest, self.opts.dest_root.as_deref());
            let n = install::remove_stale_stages(&dest);
            if n > 0 {
                tracing::warn!(resource = %r.name, "removed {n} stage file(s) left next to {} by an interrupted run", dest.display());
            }
        }
    }

    fn spawn_backend(&mut self, tx: UnboundedSender<Event>) -> JoinHandle<()> {
        let watched = self.watched();
        self.watching = watched.clone();
        tokio::spawn(backend::open(&self.settings).watch(watched, tx))
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

    fn mark(&mut self, idx: usize, now: bool) {
        if let Some(r) = self.resources.get(idx) {
            self.schedule.mark(&r.name, now, Instant::now());
        }
    }

    fn mark_all(&mut self) {
        let at = Instant::now();
        for r in &self.resources {
            self.schedule.mark(&r.name, true, at);
        }
    }

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Changes { revision, changes } => {
                let Some(mirror) = self.mirror.as_mut() else {
                    return;
                };
                if let Some(m) = &self.metrics {
                    m.events(changes.len());
                    m.heard(crate::status::now() as f64);
                }
                let mut hit = BTreeSet::new();
                for c in changes {
                    let key = c.key().to_string();
                    if mirror.apply(c) {
                        self.deps.affected(&key, &mut hit);
                    }
                }
                if revision > mirror.revision() {
                    mirror.set_revision(revision);
                }
                self.status.revision = mirror.revision();
                self.status.last_event = Some(crate::status::now());
                for i in hit {
                    self.mark(i, false);
                }
            }
            Event::Snapshot { snapshot, reason } => {
                self.status.revision = snapshot.revision();
                self.status.last_event = Some(crate::status::now());
                match self.mirror.take() {
                    None => {
                        tracing::info!(
                            revision = snapshot.revision(),
                            keys = snapshot.len(),
                            "initial snapshot"
                        );
                        self.mirror = Some(snapshot);
                        self.mark_all();
                    }
                    Some(old) => {
                        let roots = self.watched();
                        let diff = old.diff_under(&snapshot, &roots);
                        if reason == SnapshotReason::Resync && !diff.is_empty() {
                            if let Some(m) = &self.metrics {
                                m.resync_difference();
                            }
                            tracing::warn!(
                                revision = snapshot.revision(),
                                differing = diff.len(),
                                first = %diff[0],
                                "RESYNC FOUND {} KEY(S) THE WATCH MISSED; re-rendering what depends on them",
                                diff.len()
                            );
                        } else if reason != SnapshotReason::Resync {
                            tracing::info!(
                                revision = snapshot.revision(),
                                changed = diff.len(),
                                ?reason,
                                "new snapshot"
                            );
                        }
                        let mut hit = BTreeSet::new();
                        for k in &diff {
                            self.deps.affected(k, &mut hit);
                        }
                        self.mirror = Some(snapshot);
                        for i in hit {
                            self.mark(i, reason == SnapshotReason::Resync);
                        }
                    }
                }
                self.status_dirty = true;
            }
            Event::Progress { revision } => {
                // Liveness only: the mirror's revision moves with events.
                self.status.revision = self.status.revision.max(revision);
                self.status.last_event = Some(crate::status::now());
                // Written now, so status.json's age is the progress's age.
                self.status_dirty = true;
            }
            Event::Connected { endpoint } => {
                if !self.status.connected || self.status.endpoint.as_deref() != Some(&endpoint) {
                    tracing::info!(%endpoint, "connected");
                    if let Some(m) = &self.metrics {
                        m.connected(true);
                    }
                    self.status.connected = true;
                    self.status.endpoint = Some(endpoint);
                    self.status_dirty = true;
                }
            }
            Event::Disconnected { reason } => {
                let then = backend::open(&self.settings).while_unavailable();
                tracing::warn!(
                    "backend unavailable: {reason}; {then}, files keep their last good content"
                );
                self.status.connected = false;
                self.status_dirty = true;
                if let Some(m) = &self.metrics {
                    m.connected(false);
                }
            }
        }
        if let (Some(m), Some(mirror)) = (&self.metrics, &self.mirror) {
            m.revision(mirror.revision().max(self.status.revision));
            if let Some(t) = self.status.last_event {
                m.heard(t as f64);
            }
        }
    }

    /// The coalescing window of a resource: its own, or the global one.
    fn wait_of(resources: &[Resource], default: Wait, name: &str) -> Wait {
        resources
            .iter()
            .find(|r| r.name == name)
            .and_then(|r| r.wait)
            .unwrap_or(default)
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.mirror.as_ref()?;
        let (resources, default) = (&self.resources, self.settings.wait);
        self.schedule
            .next_deadline(|n| Self::wait_of(resources, default, n))
    }

    /// Starts a batch for every group of ready resources. Resources sharing
    /// a reload command form one group (and pull in group members that are
    /// pending or retrying, so the command runs once for all of them); every
    /// other resource is a group of its own, so one slow check or reload never
    /// delays the others, the watch, status or the watchdog.
    fn run_ready(&mut self) {
        let Some(mirror) = self.mirror.clone() else {
            return;
        };
        let (resources, default) = (&self.resources, self.settings.wait);
        let ready = self
            .schedule
            .take_ready(Instant::now(), |n| Self::wait_of(resources, default, n));
        if ready.is_empty() {
            return;
        }
        // A reload group with a batch running gets no second one: its ready
        // members wait (busy, so no deadline spins) for the next batch.
        // (Group keys were computed when the resources were loaded.)
        let members = || self.resources.iter().zip(self.group_of.iter());
        let running: BTreeSet<&String> = members()
            .filter(|(r, _)| self.schedule.is_busy(&r.name))
            .map(|(_, key)| key)
            .collect();
        let mut groups: BTreeMap<String, Vec<Resource>> = BTreeMap::new();
        let mut taken: BTreeSet<&str> = BTreeSet::new();
        let mut deferred: Vec<(String, String)> = Vec::new();
        for (r, key) in members().filter(|(r, _)| ready.contains(&r.name)) {
            if running.contains(key) {
                deferred.push((r.name.clone(), key.clone()));
                continue;
            }
            groups.entry(key.clone()).or_default().push(r.clone());
            taken.insert(&r.name);
        }
        let mut early: Vec<(String, Resource)> = Vec::new();
        for (r, key) in members() {
            if !taken.contains(r.name.as_str())
                && r.reload_cmd.is_some()
                && groups.contains_key(key)
            {
                early.push((key.clone(), r.clone()));
            }
        }
        let now = Instant::now();
        for (name, key) in deferred {
            self.schedule.mark(&name, true, now);
            self.schedule.start(&name);
            self.late_members.entry(key).or_default().push(name);
        }
        for (key, r) in early {
            if self.schedule.take_early(&r.name)
                && let Some(g) = groups.get_mut(&key)
            {
                g.push(r);
            }
        }
        let owed = self.schedule.reloads_owed();
        for (key, batch) in groups {
            // The whole group is held while its batch runs.
            let held: Vec<String> = self
                .resources
                .iter()
                .zip(self.group_of.iter())
                .filter(|(_, k)| **k == key)
                .map(|(r, _)| r.name.clone())
                .collect();
            for name in &held {
                self.schedule.start(name);
            }
            let (mirror, templates, opts, owed) = (
                mirror.clone(),
                self.templates.clone(),
                self.opts.clone(),
                owed.clone(),
            );
            let tx = self.batches.clone();
            let group = key;
            tokio::spawn(async move {
                let names: Vec<(String, PathBuf)> = batch
                    .iter()
                    .map(|r| (r.name.clone(), r.dest.clone()))
                    .collect();
                let revision = mirror.revision();
                let work = tokio::spawn(async move {
                    let refs: Vec<&Resource> = batch.iter().collect();
                    apply::apply(&refs, &mirror, &templates, &opts, &owed).await
                });
                let outcomes = match work.await {
                    Ok(o) => o,
                    // Never expected; if it happens the daemon records the
                    // failure and retries rather than losing the resources.
                    Err(e) => names
                        .into_iter()
                        .map(|(name, dest)| Outcome {
                            name,
                            dest,
                            revision,
                            sha256: None,
                            changed: None,
                            diff: None,
                            result: Err(apply::Failure {
                                step: Step::Render,
                                message: format!("internal error: {e}"),
                            }),
                            render_time: Duration::ZERO,
                            reload_pending: false,
                        })
                        .collect(),
                };
                let _ = tx.send(BatchMsg::Done(BatchDone {
                    group,
                    held,
                    outcomes,
                }));
            });
        }
    }

    /// Resources with the same reload command (after substitution) share a
    /// group; any other resource is alone in its own.
    fn reload_group(r: &Resource, dest_root: Option<&std::path::Path>) -> String {
        match &r.reload_cmd {
            Some(cmd) => {
                let dest = apply::dest_path(&r.dest, dest_root);
                format!("cmd:{}", crate::hooks::substitute(cmd, &dest, &dest))
            }
            None => format!("res:{}", r.name),
        }
    }

    /// A batch ended: retries, logs, status, metrics, fleet report.
    fn on_batch_msg(&mut self, msg: BatchMsg) {
        match msg {
            BatchMsg::Installed(o) => self.on_installed(&o),
            BatchMsg::Done(done) => self.on_batch_done(done),
        }
    }

    fn on_batch_done(&mut self, done: BatchDone) {
        let BatchDone {
            group,
            held,
            outcomes,
        } = done;
        for name in &held {
            self.schedule.done(name);
        }
        for name in self.late_members.remove(&group).unwrap_or_default() {
            self.schedule.done(&name);
        }
        // A resource removed by a reload while its batch ran is forgotten.
        let outcomes: Vec<Outcome> = outcomes
            .into_iter()
            .filter(|o| self.resources.iter().any(|r| r.name == o.name))
            .collect();
        if outcomes.is_empty() {
            return;
        }
        for o in &outcomes {
            self.attempted.insert(o.name.clone());
            self.reported.insert(o.name.clone());
        }
        let mut retry_in = BTreeMap::new();
        for o in &outcomes {
            match &o.result {
                Ok(_) => self.schedule.succeeded(&o.name),
                Err(f) => {
                    let delay =
                        self.schedule
                            .failed(&o.name, f.step == Step::Reload, Instant::now());
                    retry_in.insert(o.name.as_str(), delay);
                }
            }
        }
        self.log_outcomes(&outcomes, &retry_in);
        self.status.record(&outcomes);
        self.status
            .owed_from_markers(self.opts.owed_dir.as_deref(), &outcomes);
        self.status_dirty = true;
        if let Some(m) = &self.metrics {
            m.record(&outcomes, crate::status::now() as f64);
        }
        self.publish_report();
    }

    /// A file was just installed (its reload may still run): status and
    /// metrics describe what is on disk now, and the reload is owed until
    /// the batch reports.
    fn on_installed(&mut self, o: &Outcome) {
        self.attempted.insert(o.name.clone());
        if o.result != Ok(apply::Action::Installed) {
            return;
        }
        if self.status.resources.contains_key(&o.name) {
            let reloads = self
                .resources
                .iter()
                .any(|r| r.name == o.name && r.reload_cmd.is_some());
            self.status.installed(o, reloads && !self.opts.no_reload);
            self.status_dirty = true;
        }
        if let Some(m) = &self.metrics {
            m.installed(o);
        }
    }

    fn build_report(&self) -> Report {
        let mut r = Report {
            node: self.settings.node_name.clone(),
            revision: self.status.revision,
            resources: BTreeMap::new(),
        };
        for res in &self.resources {
            // A resource not attempted yet has nothing to report.
            let Some(st) = self.status.resources.get(&res.name) else {
                continue;
            };
            let st = Some(st);
            r.resources.insert(
                res.name.clone(),
                ResourceReport {
                    revision: st.and_then(|s| s.revision),
                    sha256: st.and_then(|s| s.sha256.clone()),
                    healthy: st.is_some_and(|s| s.healthy),
                    updated: st.and_then(|s| s.last_success),
                    watched: res.watched.clone(),
                    error: st
                        .and_then(|s| s.error.as_ref())
                        .map(|e| format!("{}: {}", e.step, e.message)),
                },
            );
        }
        r
    }

    fn publish_report(&self) {
        if let Some(tx) = &self.report {
            let r = self.build_report();
            tx.send_if_modified(|cur| {
                if *cur != r {
                    *cur = r;
                    true
                } else {
                    false
                }
            });
        }
    }

    /// Periodic: keep status.json fresh (its age is what `status --max-age` checks).
    fn heartbeat(&mut self) {
        if self.status.connected && backend::open(&self.settings).idle_is_current() {
            // The file watcher is alive: the view is current.
            let now = crate::status::now();
            self.status.last_event = Some(now);
            if let Some(m) = &self.metrics {
                m.heard(now as f64);
            }
        }
        if self.status_written.elapsed() >= HEARTBEAT - Duration::from_millis(100) {
            self.status_dirty = true;
        }
    }

    /// READY=1 once every resource has been attempted; STATUS= after each batch.
    fn notify_systemd(&mut self) {
        if self.mirror.is_none() {
            return;
        }
        // READY=1 once every resource has been rendered and installed (or
        // failed), not waiting for reloads still splayed; later STATUS=
        // lines when the renders settle, so they describe files, not
        // pending work.
        if self.ready_sent {
            if !self.schedule.is_settled() {
                return;
            }
        } else if !self
            .resources
            .iter()
            .all(|r| self.attempted.contains(&r.name))
        {
            return;
        }
        let failing: Vec<&str> = self
            .status
            .resources
            .iter()
            .filter(|(n, s)| {
                let in_flight = self.attempted.contains(*n) && !self.reported.contains(*n);
                !s.healthy && !in_flight
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let line = format!(
            "{}, {} failing{}; revision {}; {}",
            crate::logging::count(self.resources.len() + self.load_failures.len(), "resource"),
            failing.len(),
            if failing.is_empty() {
                String::new()
            } else {
                format!(" ({})", failing.join(", "))
            },
            self.status.revision,
            if self.status.connected {
                "connected"
            } else {
                "backend unavailable"
            }
        );
        let mut states = vec![sd_notify::NotifyState::Status(&line)];
        if !self.ready_sent {
            states.push(sd_notify::NotifyState::Ready);
            tracing::info!("first render done: {line}");
        }
        let _ = sd_notify::notify(&states);
        self.ready_sent = true;
    }

    /// One line per resource; a failure says when it is retried.
    fn log_outcomes(&self, outcomes: &[Outcome], retry_in: &BTreeMap<&str, Duration>) {
        for o in outcomes {
            let ms = o.render_time.as_secs_f64() * 1000.0;
            match &o.result {
                Ok(Action::Unchanged) => tracing::info!(
                    resource = %o.name, revision = o.revision,
                    "{}: rendered revision {}: unchanged ({ms:.1}ms)", o.name, o.revision
                ),
                // Logged by `apply` as it happened, before the reloads.
                Ok(Action::Installed) => {}
                Ok(Action::WouldChange) => tracing::info!(
                    resource = %o.name, revision = o.revision,
                    "{}: rendered revision {}: {} would change ({})",
                    o.name, o.revision, o.dest.display(), o.changed.as_deref().unwrap_or("")
                ),
                Err(f) => tracing::error!(
                    resource = %o.name, revision = o.revision, step = %f.step,
                    "{}: {} failed at revision {}: {}; retrying in {:.1}s",
                    o.name, f.step, o.revision, crate::logging::one_line(&f.message),
                    retry_in.get(o.name.as_str()).map_or(0.0, |d| d.as_secs_f64())
                ),
            }
        }
    }

    fn write_status(&mut self) {
        if !self.status_dirty || self.opts.noop {
            return;
        }
        self.status_dirty = false;
        self.status_written = Instant::now();
        match self.status.write(&self.settings.state_dir) {
            Ok(()) => self.status_error = None,
            Err(e) => {
                if self.status_error.as_deref() != Some(&e) {
                    tracing::warn!("status not saved: {e}");
                    self.status_error = Some(e);
                }
            }
        }
    }
}
