//! Backends: where keys come from.
//!
//! A backend hands the rest of liveconf [`Snapshot`]s (one consistent view
//! at one revision) and, for the daemon, a stream of [`Event`]s: changes at
//! a revision, fresh snapshots (after a compaction, a resync or a key file
//! edit), connection changes. `etcd` is the production backend; `file`
//! reads YAML/JSON/TOML key files (demos, tests, CI).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::settings::{BackendKind, Settings};
use crate::store::{Change, Snapshot};

pub mod etcd;
pub mod etcd_watch;
pub mod file;
pub(crate) mod srv;
pub(crate) mod supervise;

/// Why the backend could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A key file.
    #[error(transparent)]
    File(#[from] file::FileBackendError),
    /// etcd.
    #[error(transparent)]
    Etcd(#[from] etcd::EtcdError),
}

/// A future a backend hands back (the trait stays object-safe).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A place keys come from. The drivers know a backend only through this
/// trait: adding one is a new file, a [`BackendKind`] variant and one arm in
/// [`open`] — the compiler names each of them.
pub trait Backend: Send + Sync {
    /// Its name in status.json, logs and metrics (`etcd`, `file`).
    fn name(&self) -> &'static str;
    /// What it reads from, for status.json's `endpoint` after a one-shot
    /// run (the endpoints, the key files).
    fn describe(&self) -> String;
    /// Everything that makes up its connection. When this changes across a
    /// SIGHUP, the daemon drops the old connection and opens a new one. It
    /// may hold secrets: compare it, never log it.
    fn identity(&self) -> String;
    /// What the daemon does while the backend is unavailable, for its log.
    fn while_unavailable(&self) -> &'static str;
    /// Whether a live watcher means the view is current even without
    /// events (a key file watcher), so the daemon's heartbeat counts as
    /// hearing from the backend.
    fn idle_is_current(&self) -> bool;
    /// One consistent snapshot of `watched` (`render --once`, `check`).
    fn snapshot<'a>(
        &'a self,
        watched: &'a [String],
    ) -> BoxFuture<'a, Result<Snapshot, BackendError>>;
    /// Settings that can never work, found without connecting: what
    /// `check` and `render --once` refuse with exit 3 (an unreadable
    /// certificate, a user without a password, a bad endpoint URL). The
    /// daemon refuses them at start and on SIGHUP, keeping its running
    /// configuration, instead of retrying them forever.
    fn check(&self) -> Result<(), BackendError>;
    /// Watches `watched` until dropped or aborted, sending [`Event`]s;
    /// reconnects by itself (the daemon's watcher task). `after`: the
    /// newest revision the daemon has seen (from a backend it replaced);
    /// a backend that numbers its own revisions (key files) starts above
    /// it, so a revision never names two different contents.
    fn watch(
        &self,
        watched: Vec<String>,
        after: i64,
        tx: UnboundedSender<Event>,
    ) -> BoxFuture<'static, ()>;
    /// The SRV record the endpoints are discovered from, when they are
    /// (`None`: the endpoints are given, or there are none).
    fn discovery(&self) -> Option<String> {
        None
    }
    /// [`Backend::watch`], replacing the watcher `replaced` holds: a
    /// backend stops it when its own watch starts (by default, at once);
    /// etcd with SRV discovery only once it has found its endpoints, so a
    /// look-up that fails after a SIGHUP keeps the connection in use.
    fn watch_replacing(
        &self,
        watched: Vec<String>,
        after: i64,
        tx: UnboundedSender<Event>,
        replaced: Handover,
    ) -> BoxFuture<'static, ()> {
        replaced.take_over();
        self.watch(watched, after, tx)
    }
}

/// The watcher a new one replaces, stopped when the new one takes over
/// (see [`Backend::watch_replacing`]). Shared by the supervisor, which may
/// take the old watcher back (a newer SIGHUP) before the new one took over.
#[derive(Clone, Default)]
pub struct Handover(Arc<Mutex<Option<AbortHandle>>>);

impl Handover {
    /// The watcher `old` is replaced.
    pub fn of(old: AbortHandle) -> Handover {
        Handover(Arc::new(Mutex::new(Some(old))))
    }

    /// Stops the watcher replaced, unless that is done already (or it was
    /// taken back).
    pub fn take_over(&self) {
        if let Some(old) = self.release() {
            old.abort();
        }
    }

    /// Whether the watcher replaced still runs (the new one has not
    /// taken over).
    pub fn is_pending(&self) -> bool {
        self.0.lock().map(|h| h.is_some()).unwrap_or(false)
    }

    /// The watcher replaced, taken back (still running), when the new one
    /// has not taken over yet; the new one then stops nothing.
    pub fn release(&self) -> Option<AbortHandle> {
        match self.0.lock() {
            Ok(mut h) => h.take(),
            Err(e) => e.into_inner().take(),
        }
    }
}

/// How often a failure that goes on (etcd unavailable, the fleet report
/// not published) is said again, at most.
pub const REMIND_EVERY: Duration = Duration::from_secs(60);

/// A failure that repeats while it lasts (every endpoint down, a
/// nameserver that does not answer): said once when it starts, then at
/// most once every [`REMIND_EVERY`] while it goes on, so the log stays
/// quiet; the attempts in between are logged at debug only.
#[derive(Debug)]
pub struct Outage {
    /// When the first failure of this outage happened.
    since: Option<Instant>,
    /// When it was last said (`None`: to be said at the next failure).
    said: Option<Instant>,
    /// Failed attempts since it started.
    failures: u32,
    /// How often it is said again while it lasts.
    remind_every: Duration,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage::reminding_every(REMIND_EVERY)
    }
}

/// What to do with one more failure of an [`Outage`].
#[derive(Debug, PartialEq, Eq)]
pub enum Say {
    /// The outage starts: say it.
    First,
    /// A reminder is due: say it again, with how long it has lasted and
    /// how many attempts failed ("for 1m 2s, 14 failed attempts").
    Again(String),
    /// Said recently: debug only.
    Quiet,
}

impl Outage {
    /// An outage said again at most every `every` while it lasts.
    pub fn reminding_every(every: Duration) -> Outage {
        Outage {
            since: None,
            said: None,
            failures: 0,
            remind_every: every,
        }
    }

    /// One more failed attempt: whether to say it.
    pub fn failed(&mut self) -> Say {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Say {
        self.failures = self.failures.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        let Some(said) = self.said else {
            self.said = Some(now);
            return Say::First;
        };
        if now.saturating_duration_since(said) < self.remind_every {
            return Say::Quiet;
        }
        self.said = Some(now);
        let lasted = Duration::from_secs(now.saturating_duration_since(since).as_secs());
        Say::Again(format!(
            "for {}, {} failed attempts",
            humantime::format_duration(lasted),
            self.failures
        ))
    }

    /// Failed attempts since the outage started (0: none going on).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Whether an outage is going on.
    pub fn is_on(&self) -> bool {
        self.since.is_some()
    }

    /// How long it has lasted (zero: none going on).
    pub fn lasted(&self) -> Duration {
        self.since.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// The failure changed (another error): the next one is said at once,
    /// the outage going on.
    pub fn restate(&mut self) {
        self.said = None;
    }

    /// It worked: the outage (if any) is over; how many attempts failed.
    pub fn over(&mut self) -> u32 {
        let n = self.failures;
        *self = Outage::reminding_every(self.remind_every);
        n
    }
}

/// The backend the settings name.
pub fn open(s: &Settings) -> Box<dyn Backend> {
    match s.backend {
        BackendKind::File => Box::new(file::FileBackend::new(s)),
        BackendKind::Etcd => Box::new(etcd::EtcdBackend::new(s)),
    }
}

/// Reads one snapshot of `watched` from the configured backend (for
/// `render --once` and `check`; the daemon runs a watcher instead).
pub async fn snapshot(s: &Settings, watched: &[String]) -> Result<Snapshot, BackendError> {
    open(s).snapshot(watched).await
}

/// Why a whole snapshot is handed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotReason {
    /// The first view.
    Initial,
    /// etcd compacted past our revision: events were lost, so read everything again.
    Compacted,
    /// etcd went back to an older revision (restored from a backup or
    /// rebuilt): read everything again.
    Rewound,
    /// The periodic resync (insurance against a missed event).
    Resync,
    /// A key file changed.
    FileChanged,
}

/// What a backend tells the daemon.
#[derive(Clone, Debug)]
pub enum Event {
    /// Connected (or reconnected) to this endpoint.
    Connected {
        /// The endpoint URL (or key file list).
        endpoint: String,
    },
    /// The connection was lost or could not be made; the backend retries.
    Disconnected {
        /// Why.
        reason: String,
    },
    /// Keys changed at `revision`.
    Changes {
        /// The revision of these changes.
        revision: i64,
        /// The changes, in order.
        changes: Vec<Change>,
    },
    /// A complete view replacing the mirror.
    Snapshot {
        /// The view.
        snapshot: Snapshot,
        /// Why it was taken.
        reason: SnapshotReason,
    },
    /// The backend confirmed it has sent everything up to `revision`.
    Progress {
        /// The revision.
        revision: i64,
    },
}

/// Exponential backoff with full jitter.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// A backoff starting around `base`, never above `max`.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        Backoff {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next delay: uniformly random in [ceiling/2, ceiling], where the
    /// ceiling doubles each attempt up to `max`.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        ceiling.mul_f64(0.5 + rand::random::<f64>() / 2.0)
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_setting_is_part_of_the_identity_and_nothing_else() {
        use crate::settings::Layer;
        let dir = tempfile::tempdir().unwrap();
        let load = |f: &dyn Fn(&mut Layer)| {
            let mut l = Layer {
                confdir: Some(dir.path().to_path_buf()),
                endpoints: Some(vec!["http://127.0.0.1:2379".into()]),
                ..Layer::default()
            };
            f(&mut l);
            open(&Settings::load(None, l).unwrap()).identity()
        };
        let base = load(&|_| {});
        type Edit<'a> = (&'a str, &'a dyn Fn(&mut Layer));
        let connection: [Edit; 8] = [
            ("endpoints", &|l| {
                l.endpoints = Some(vec!["http://127.0.0.1:2380".into()])
            }),
            ("srv_domain", &|l| l.srv_domain = Some("example.com".into())),
            ("srv_record", &|l| l.srv_record = Some("_etcd._tcp".into())),
            ("dns_server", &|l| {
                l.dns_server = Some("127.0.0.1:53".parse().unwrap())
            }),
            ("connect_timeout", &|l| {
                l.connect_timeout = Some("7s".into())
            }),
            ("request_timeout", &|l| {
                l.request_timeout = Some("9s".into())
            }),
            ("username", &|l| l.username = Some("u".into())),
            ("ca_file", &|l| l.ca_file = Some("/ca.pem".into())),
        ];
        for (name, change) in connection {
            assert_ne!(load(change), base, "{name} must count as a new connection");
        }
        let other: [Edit; 3] = [
            ("wait", &|l| l.wait = Some("1s".into())),
            ("reload_splay", &|l| l.reload_splay = Some("5s".into())),
            ("max_output_bytes", &|l| l.max_output_bytes = Some(10)),
        ];
        for (name, change) in other {
            assert_eq!(load(change), base, "{name} is not part of the connection");
        }
    }

    #[test]
    fn an_outage_is_said_once_then_reminded_at_most_every_minute() {
        let mut o = Outage::default();
        let t0 = Instant::now();
        assert_eq!(o.failed_at(t0), Say::First);
        assert!(o.is_on());
        for s in 1..60 {
            assert_eq!(o.failed_at(t0 + Duration::from_secs(s)), Say::Quiet);
        }
        assert_eq!(
            o.failed_at(t0 + Duration::from_secs(61)),
            Say::Again("for 1m 1s, 61 failed attempts".into())
        );
        assert_eq!(o.failed_at(t0 + Duration::from_secs(100)), Say::Quiet);
        assert_eq!(o.over(), 62);
        assert!(!o.is_on());
        // The next outage is said at once.
        assert_eq!(o.failed_at(t0 + Duration::from_secs(101)), Say::First);
    }

    #[test]
    fn backoff_grows_to_its_cap_with_jitter() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
        for _ in 0..10 {
            b.next_delay();
        }
        let late = b.next_delay();
        assert!(
            late >= Duration::from_secs(1) && late <= Duration::from_secs(2),
            "{late:?}"
        );
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(100));
    }
}
