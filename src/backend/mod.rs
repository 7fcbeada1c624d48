//! Backends: where keys come from.
//!
//! A backend hands the rest of liveconf [`Snapshot`]s (one consistent view
//! at one revision) and, for the daemon, a stream of [`Event`]s: changes at
//! a revision, fresh snapshots (after a compaction, a resync or a key file
//! edit), connection changes. `etcd` is the production backend; `file`
//! reads YAML/JSON/TOML key files (demos, tests, CI).

use std::time::Duration;

use crate::store::{Change, Snapshot};

pub mod etcd;
pub mod etcd_watch;
pub mod file;

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

/// Reads one snapshot of `watched` from the configured backend (for
/// `render --once` and `check`; the daemon runs a watcher instead).
pub async fn snapshot(
    s: &crate::settings::Settings,
    watched: &[String],
) -> Result<Snapshot, BackendError> {
    match s.backend {
        crate::settings::BackendKind::File => Ok(file::load(&s.files, 1)?),
        crate::settings::BackendKind::Etcd => Ok(etcd::snapshot_once(s, watched).await?),
    }
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

    /// How many delays were taken since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
