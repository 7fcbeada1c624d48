//! Backend supervision for the daemon: one watcher task at a time for the
//! configured backend, started, replaced and stopped here.
//!
//! The watcher itself ([`Backend::watch`]) connects, retries with backoff
//! (etcd: the next endpoint each time) and reports `Connected`/
//! `Disconnected` as events; it never gives up. The supervisor decides only
//! *which* watcher runs: a new one when the connection identity changes or
//! prefixes it does not cover must be watched (a SIGHUP), none once the
//! daemon stops. It must never interpret events (the daemon does) nor block.

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::{Backend, Event};
use crate::settings::Settings;

/// The running watcher of the configured backend.
pub(crate) struct Supervisor {
    backend: Box<dyn Backend>,
    task: Option<JoinHandle<()>>,
    /// The prefixes the running watcher watches (may be more than needed
    /// after a reload removed resources: the watch is kept).
    watching: Vec<String>,
    tx: UnboundedSender<Event>,
}

impl Supervisor {
    /// The supervisor of the backend `settings` name, sending its events
    /// to `tx`; nothing is watched until [`Supervisor::restart`].
    pub(crate) fn new(settings: &Settings, tx: UnboundedSender<Event>) -> Supervisor {
        Supervisor {
            backend: super::open(settings),
            task: None,
            watching: Vec::new(),
            tx,
        }
    }

    /// Whether the running watch covers every prefix of `watched` (fewer
    /// prefixes keep it: the extra events change keys nobody renders).
    pub(crate) fn covers(&self, watched: &[String]) -> bool {
        watched.iter().all(|w| {
            self.watching
                .iter()
                .any(|x| crate::store::is_at_or_below(w, x))
        })
    }

    /// (Re)starts the watcher: a new connection for `settings`, watching
    /// `watched` from a fresh first snapshot; `after`, the newest revision
    /// seen so far (see [`Backend::watch`]).
    pub(crate) fn restart(&mut self, settings: &Settings, watched: Vec<String>, after: i64) {
        self.stop();
        self.backend = super::open(settings);
        self.watching = watched.clone();
        self.task = Some(tokio::spawn(self.backend.watch(
            watched,
            after,
            self.tx.clone(),
        )));
    }

    /// The backend being watched.
    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Stops the watcher (dropping its connection).
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}
