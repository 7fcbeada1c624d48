//! The observer: one place that keeps every outside view of the daemon in
//! step — `status.json`, the Prometheus metrics, systemd (`READY=1`,
//! `STATUS=`, the watchdog) and the fleet report — and logs outcomes.
//!
//! The event loop calls it once per happening (a backend event, an install,
//! a batch's end, a heartbeat, a reload of the configuration) and it updates
//! each sink that cares. It owns the in-memory [`Status`]; `reload_owed`
//! comes from [`Owed`] when the file is saved. It must never decide what to
//! render or retry, and never wait on the network or a command (status.json
//! is a small local write; the report goes to the publisher task over a
//! channel).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::apply::{self, Action, Outcome};
use crate::fleet::{Report, ResourceReport};
use crate::metrics::Metrics;
use crate::owed::Owed;
use crate::resource::Resource;
use crate::status::Status;

use super::outcome_log::OutcomeLog;

/// How often status.json is refreshed while nothing happens, so its age
/// tells monitoring the daemon is alive.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

/// What the daemon heard from its backend.
pub(crate) enum Heard {
    /// Key changes, the mirror now at `revision`.
    Changes { count: usize, revision: i64 },
    /// A complete view at `revision`; `missed`: keys a resync found the
    /// watch had missed.
    Snapshot { revision: i64, missed: usize },
    /// The backend has sent everything up to `revision`.
    Progress { revision: i64 },
    /// Connected to `endpoint`.
    Connected { endpoint: String },
    /// The backend is unavailable: why, what happens meanwhile, and what
    /// it is trying to reach (its endpoints, its key files).
    Disconnected {
        reason: String,
        then: &'static str,
        trying: String,
    },
}

/// The configured resources, as the sinks need them.
#[derive(Default)]
struct Configured {
    /// Name and watched prefixes of each resource, in order (the report).
    resources: Vec<(String, Vec<String>)>,
    /// Resources whose file did not load (failed at `load`).
    failures: Vec<Outcome>,
}

/// What systemd has been told, and the current *round*: the renders of
/// every resource that follow a start or a reload, summed up in one log
/// line when each resource has been attempted.
#[derive(Default)]
struct Systemd {
    ready_sent: bool,
    /// The summary line's opening while a round is open ("first render
    /// done", "render after reload done").
    round: Option<&'static str>,
    /// Resources whose steps have completed at least once in this round
    /// (for READY=1 and the summary).
    attempted: BTreeSet<String>,
    /// Resources whose batch has reported an outcome in this round. One
    /// that is attempted (installed) but not reported is in flight (its
    /// reload runs or waits out its splay): not failing, whatever its old
    /// status.
    reported: BTreeSet<String>,
    /// Resources whose file was installed (or would be, `--noop`) in this
    /// round.
    changed: BTreeSet<String>,
}

/// What happens next to a resource that failed.
pub(crate) enum Next {
    /// Retried after this delay.
    Retry(Duration),
    /// Not retried: only a change of its template can fix it; says what
    /// it waits for.
    Parked(String),
}

/// status.json on disk.
struct StatusFile {
    dir: PathBuf,
    /// `--noop`: never written (the host's status is not ours).
    noop: bool,
    dirty: bool,
    written: Instant,
    /// The last write error, logged once until it changes.
    error: Option<String>,
}

pub(crate) struct Observer {
    status: Status,
    file: StatusFile,
    owed: Owed,
    configured: Configured,
    systemd: Systemd,
    metrics: Option<Arc<Metrics>>,
    report: Option<watch::Sender<Report>>,
    /// The DNS dependencies, shown in status.json, /metrics and the fleet
    /// report.
    dns: Option<Arc<crate::dnsdeps::Tracker>>,
    /// What the log said of failing resources (quiet while a failure
    /// only repeats itself).
    outcome_log: OutcomeLog,
}

impl Observer {
    /// Starts from the status on record (read by the caller): revision and
    /// sha256 stay, for information, but this process has not connected
    /// yet, nor rendered anything, so a previous run's "healthy" must not
    /// pass for this one's.
    pub(crate) fn new(mut status: Status, state_dir: &Path, noop: bool, owed: Owed) -> Observer {
        status.daemon_pid = (!noop).then(std::process::id);
        status.started = Some(crate::status::now());
        status.connected = false;
        status.endpoint = None;
        status.connected_at = None;
        status.backend_error = None;
        status.config_error = None;
        status.stopped = None;
        status.moved_to = None;
        for r in status.resources.values_mut() {
            r.healthy = false;
            r.error = None;
        }
        Observer {
            status,
            file: StatusFile {
                dir: state_dir.to_path_buf(),
                noop,
                dirty: true,
                written: Instant::now(),
                error: None,
            },
            owed,
            configured: Configured::default(),
            systemd: Systemd::default(),
            metrics: None,
            report: None,
            dns: None,
            outcome_log: OutcomeLog::default(),
        }
    }

    /// The DNS dependencies to show from now on.
    pub(crate) fn follow_dns(&mut self, tracker: Arc<crate::dnsdeps::Tracker>) {
        if let Some(m) = &self.metrics {
            m.follow_dns(tracker.clone());
        }
        self.dns = Some(tracker);
    }

    /// The configuration was (re)loaded: `resources` run, `failures` did
    /// not load. A resource not rendered yet is listed (and not healthy)
    /// from the start: a daemon that never reaches etcd must not look fine.
    pub(crate) fn configured(
        &mut self,
        settings: &crate::settings::Settings,
        resources: &[Resource],
        failures: Vec<Outcome>,
        dest_root: Option<&Path>,
    ) {
        if self.file.dir != settings.state_dir {
            self.moved(&settings.state_dir);
        }
        self.file.dir = settings.state_dir.clone();
        self.status.node = settings.node_name.clone();
        self.status.backend = crate::backend::open(settings).name().to_string();
        self.configured = Configured {
            resources: resources
                .iter()
                .map(|r| (r.name.clone(), r.watched.clone()))
                .collect(),
            failures,
        };
        let names = self.names();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        self.status.retain(&names);
        self.outcome_log.retain(|n| names.contains(&n));
        for r in resources {
            self.status
                .resources
                .entry(r.name.clone())
                .or_insert_with(|| crate::status::ResourceStatus {
                    dest: apply::dest_path(&r.dest, dest_root),
                    ..Default::default()
                });
        }
        if let Some(m) = &self.metrics {
            m.configured(&names);
            m.record(&self.configured.failures, crate::status::now() as f64);
            m.config_load_failed(false);
        }
        self.status.record(&self.configured.failures);
        // Loaded: whatever failed to load before no longer counts.
        self.status.config_loaded = Some(crate::status::now());
        self.status.config_error = None;
        self.file.dirty = true;
        // Every resource renders again: a new round.
        let sd = &mut self.systemd;
        sd.round = Some(if sd.ready_sent {
            "render after reload done"
        } else {
            "first render done"
        });
        sd.attempted.clear();
        sd.reported.clear();
        sd.changed.clear();
    }

    /// The state directory moved (SIGHUP): status.json is written in `to`
    /// from now on, and the one left in the old directory says so (a
    /// pointer, no daemon pid) instead of looking like a live daemon's.
    fn moved(&mut self, to: &Path) {
        if self.file.noop {
            return;
        }
        let from = self.file.dir.clone();
        match self.status.write_moved(&from, to) {
            Ok(()) => tracing::info!(
                "state_dir changed: status.json is written to {} from now on; {} is left behind, pointing there",
                to.display(),
                from.join(crate::status::STATUS_FILE).display()
            ),
            Err(e) => tracing::warn!(
                "state_dir changed to {}; the old status could not be marked as left behind: {e}",
                to.display()
            ),
        }
        self.file.dirty = true;
    }

    /// A reload failed: the daemon goes on with the configuration it has,
    /// and monitoring (status.json, `liveconf status`, the metrics) says
    /// so until a reload succeeds.
    pub(crate) fn config_failed(&mut self, e: crate::status::ConfigError) {
        tracing::error!("{}", e.sentence(self.status.config_loaded));
        self.status.config_error = Some(e);
        self.file.dirty = true;
        if let Some(m) = &self.metrics {
            m.config_load_failed(true);
        }
    }

    /// Every configured name, failures included.
    fn names(&self) -> Vec<String> {
        let c = &self.configured;
        c.resources
            .iter()
            .map(|(n, _)| n.clone())
            .chain(c.failures.iter().map(|o| o.name.clone()))
            .collect()
    }

    /// Serves the metrics on `addr`, starting from what is known now.
    pub(crate) async fn serve_metrics(&mut self, addr: SocketAddr) -> std::io::Result<()> {
        let m = Arc::new(Metrics::new(&self.status.node));
        m.follow_owed(self.owed.clone());
        if let Some(t) = &self.dns {
            m.follow_dns(t.clone());
        }
        crate::metrics::serve(addr, m.clone()).await?;
        let names = self.names();
        m.configured(&names.iter().map(String::as_str).collect::<Vec<_>>());
        m.on_record(&self.status);
        m.record(&self.configured.failures, crate::status::now() as f64);
        m.heard(self.status.last_event.or(self.status.started).unwrap_or(0) as f64);
        m.config_load_failed(self.status.config_error.is_some());
        self.metrics = Some(m);
        Ok(())
    }

    /// The fleet report from now on: its first value, then each change.
    pub(crate) fn report_to(&mut self) -> watch::Receiver<Report> {
        let (tx, rx) = watch::channel(self.build_report());
        self.report = Some(tx);
        rx
    }

    /// No more reports (the publisher revokes its lease when it sees this).
    pub(crate) fn close_report(&mut self) {
        self.report = None;
    }

    /// Something from the backend.
    pub(crate) fn heard(&mut self, what: Heard, mirror_revision: Option<i64>) {
        let now = crate::status::now();
        match what {
            Heard::Changes { count, revision } => {
                if let Some(m) = &self.metrics {
                    m.events(count);
                    m.heard(now as f64);
                }
                self.status.revision = revision;
                self.status.last_event = Some(now);
            }
            Heard::Snapshot { revision, missed } => {
                if let (Some(m), true) = (&self.metrics, missed > 0) {
                    m.resync_difference();
                }
                self.status.revision = revision;
                self.status.last_event = Some(now);
                self.file.dirty = true;
            }
            Heard::Progress { revision } => {
                // Liveness only: the mirror's revision moves with events.
                self.status.revision = self.status.revision.max(revision);
                self.status.last_event = Some(now);
                // Written now, so status.json's age is the progress's age.
                self.file.dirty = true;
            }
            Heard::Connected { endpoint } => self.connected(endpoint),
            Heard::Disconnected {
                reason,
                then,
                trying,
            } => {
                tracing::warn!(
                    "backend unavailable: {reason}; {then}, files keep their last good content"
                );
                self.status.backend_error = Some(reason);
                self.status.endpoint = Some(trying);
                self.set_connected(false);
            }
        }
        if let (Some(m), Some(rev)) = (&self.metrics, mirror_revision) {
            m.revision(rev.max(self.status.revision));
            if let Some(t) = self.status.last_event {
                m.heard(t as f64);
            }
        }
    }

    fn connected(&mut self, endpoint: String) {
        if self.status.connected && self.status.endpoint.as_deref() == Some(&endpoint) {
            return;
        }
        tracing::info!(%endpoint, "connected");
        self.set_connected(true);
        self.status.endpoint = Some(endpoint);
        let now = crate::status::now();
        self.status.connected_at = Some(now);
        // A watch etcd confirmed is hearing from etcd: after a failover
        // through a grpc-proxy (no progress answers) the last event would
        // otherwise stay as old as the last change or liveness read.
        self.status.last_event = Some(now);
        if let Some(m) = &self.metrics {
            m.heard(now as f64);
        }
        self.status.backend_error = None;
    }

    /// A new connection is being made (new connection settings on
    /// SIGHUP): not connected until it answers; status names what is
    /// tried (`trying`), not the connection that was dropped.
    pub(crate) fn reconnecting(&mut self, trying: String) {
        self.status.endpoint = Some(trying);
        self.status.backend_error = None;
        self.set_connected(false);
    }

    /// Whether the backend is connected, as status.json says.
    pub(crate) fn is_connected(&self) -> bool {
        self.status.connected
    }

    fn set_connected(&mut self, up: bool) {
        self.status.connected = up;
        self.file.dirty = true;
        if let Some(m) = &self.metrics {
            m.connected(up);
        }
    }

    /// A resource's own steps are done (`o`), its batch still running (a
    /// reload to run, or to wait out its splay): what they did is what
    /// status describes now — a file installed or found up to date is a
    /// success (the reload, if any, owed meanwhile), a failure a failure —
    /// not the previous attempt's verdict until the batch ends.
    pub(crate) fn installed(&mut self, o: &Outcome) {
        // A failure here (a guard's refusal, an install or check failure)
        // counts once its batch reports it, as a render failure does: the
        // round's summary then follows its ERROR line and counts it.
        if o.result.is_ok() {
            self.systemd.attempted.insert(o.name.clone());
        }
        if matches!(o.result, Ok(Action::Installed | Action::WouldChange)) {
            self.systemd.changed.insert(o.name.clone());
        }
        if o.result == Ok(Action::WouldChange) {
            return;
        }
        if self.status.resources.contains_key(&o.name) {
            self.status.installed(o);
            self.file.dirty = true;
        }
        if o.result != Ok(Action::Installed) {
            return;
        }
        if let Some(m) = &self.metrics {
            m.installed(o);
        }
    }

    /// A batch ended with `outcomes` (what happens `next` to each
    /// failure): the log, status, metrics and the fleet report.
    pub(crate) fn batch_done(&mut self, outcomes: &[Outcome], next: &BTreeMap<&str, Next>) {
        for o in outcomes {
            self.systemd.attempted.insert(o.name.clone());
            self.systemd.reported.insert(o.name.clone());
        }
        self.outcome_log.log(outcomes, next);
        self.status.record(outcomes);
        self.file.dirty = true;
        if let Some(m) = &self.metrics {
            m.record(outcomes, crate::status::now() as f64);
        }
        self.publish_report();
        crate::memory::worked();
    }

    /// Periodic: the watchdog, and status.json kept fresh (its age is what
    /// `status --max-age` checks). `idle_is_current`: a live watcher means
    /// the view is current (a key file watcher).
    pub(crate) fn tick(&mut self, watchdog: bool, idle_is_current: bool) {
        if watchdog {
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
        }
        if self.status.connected && idle_is_current {
            let now = crate::status::now();
            self.status.last_event = Some(now);
            if let Some(m) = &self.metrics {
                m.heard(now as f64);
            }
        }
        if self.file.written.elapsed() >= HEARTBEAT - Duration::from_millis(100) {
            self.file.dirty = true;
        }
        crate::memory::idle_tick();
    }

    /// After each turn of the loop: status.json if anything changed, and
    /// systemd (`viewing`: a complete view has arrived; `settled`: nothing
    /// pending or running).
    pub(crate) fn flush(&mut self, viewing: bool, settled: bool) {
        self.write_status();
        if viewing {
            self.notify_systemd(settled);
            self.end_round();
        }
    }

    /// Whether every configured resource has been attempted in this round.
    fn all_attempted(&self) -> bool {
        let sd = &self.systemd;
        self.configured
            .resources
            .iter()
            .all(|(n, _)| sd.attempted.contains(n))
    }

    /// Once every resource of the round has been attempted: its one
    /// summary line (the per-resource "unchanged" lines are at debug).
    fn end_round(&mut self) {
        let Some(what) = self.systemd.round else {
            return;
        };
        if !self.all_attempted() {
            return;
        }
        self.systemd.round = None;
        tracing::info!("{what}: {}", self.status_line(true));
    }

    /// The daemon is stopping (running batches still finish).
    pub(crate) fn stopping(&self) {
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    }

    /// The daemon stopped: no longer connected, said in status.json.
    pub(crate) fn stopped(&mut self) {
        self.status.connected = false;
        self.status.stopped = Some(crate::status::now());
        self.file.dirty = true;
        self.write_status();
    }

    fn write_status(&mut self) {
        if !self.file.dirty || self.file.noop {
            return;
        }
        self.file.dirty = false;
        self.file.written = Instant::now();
        if let Some(t) = &self.dns {
            let before = dns_reports(&self.status.dns);
            self.status.dns = t.status();
            // A name failing (or answering again) reaches the fleet report.
            if dns_reports(&self.status.dns) != before {
                self.publish_report();
            }
        }
        match self.status.save(&self.file.dir, &self.owed) {
            Ok(()) => self.file.error = None,
            Err(e) => {
                let e = e.to_string();
                if self.file.error.as_deref() != Some(&e) {
                    tracing::warn!("status not saved: {e}");
                    self.file.error = Some(e);
                }
            }
        }
    }

    /// READY=1 once every resource has been rendered and installed (or
    /// failed), not waiting for reloads still splayed; later STATUS= lines
    /// when the renders settle, so they describe files, not pending work.
    fn notify_systemd(&mut self, settled: bool) {
        if self.systemd.ready_sent {
            if !settled {
                return;
            }
        } else if !self.all_attempted() {
            return;
        }
        let line = self.status_line(false);
        let mut states = vec![sd_notify::NotifyState::Status(&line)];
        if !self.systemd.ready_sent {
            states.push(sd_notify::NotifyState::Ready);
        }
        let _ = sd_notify::notify(&states);
        if !self.systemd.ready_sent {
            // Up: what starting touched need not stay resident.
            crate::memory::after_initial_sync();
        }
        self.systemd.ready_sent = true;
    }

    /// systemd's STATUS= line; `changed`: with the number of files this
    /// round changed (the round's summary line).
    fn status_line(&self, changed: bool) -> String {
        let sd = &self.systemd;
        let failing: Vec<&str> = self
            .status
            .resources
            .iter()
            .filter(|(n, s)| {
                let in_flight = sd.attempted.contains(*n) && !sd.reported.contains(*n);
                !s.healthy && !in_flight
            })
            .map(|(n, _)| n.as_str())
            .collect();
        let c = &self.configured;
        format!(
            "{}, {}{} failing{}; revision {}; {}",
            crate::logging::count(c.resources.len() + c.failures.len(), "resource"),
            if changed {
                format!("{} changed, ", sd.changed.len())
            } else {
                String::new()
            },
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
        )
    }

    fn build_report(&self) -> Report {
        let mut r = Report {
            node: self.status.node.clone(),
            revision: self.status.revision,
            resources: BTreeMap::new(),
            // Only what changes with a failure (not the answers' ages): the
            // report is published again only when it changes.
            dns: dns_reports(&self.status.dns),
        };
        for (name, watched) in &self.configured.resources {
            // A resource not attempted yet has nothing to report.
            let Some(st) = self.status.resources.get(name) else {
                continue;
            };
            r.resources.insert(
                name.clone(),
                ResourceReport {
                    revision: st.revision,
                    sha256: st.sha256.clone(),
                    healthy: st.healthy,
                    updated: st.last_success,
                    watched: watched.clone(),
                    error: st
                        .error
                        .as_ref()
                        .map(|e| format!("{}: {}", e.step, e.message)),
                    // From the one owner of that fact, as status.json's.
                    reload_owed: self.owed.is_owed(name),
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
}

/// The DNS names whose last look-up failed, as the fleet report carries
/// them: only what changes with a failure (not the answers' ages), so the
/// report is published again only when a name fails or recovers.
fn dns_reports(deps: &[crate::dnsdeps::DepStatus]) -> Vec<crate::fleet::DnsReport> {
    deps.iter()
        .filter_map(|d| {
            Some(crate::fleet::DnsReport {
                name: d.name.clone(),
                kind: d.kind.clone(),
                resources: d.resources.clone(),
                error: crate::logging::one_line(d.error.as_deref()?).to_string(),
                failing: d.failing,
            })
        })
        .collect()
}
