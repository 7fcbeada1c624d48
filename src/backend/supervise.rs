//! Backend supervision for the daemon: one watcher task at a time for the
//! configured backend, started, replaced and stopped here.
//!
//! The watcher itself ([`Backend::watch`]) connects, retries with backoff
//! (etcd: the next endpoint each time) and reports `Connected`/
//! `Disconnected` as events; it never gives up. The supervisor decides only
//! *which* watcher runs: a new one when the connection identity changes or
//! prefixes it does not cover must be watched (a SIGHUP), none once the
//! daemon stops. It must never interpret events (the daemon does) nor block.
//!
//! A new connection to the same SRV record (a new `dns_server`, say) keeps
//! the connected watcher until the new one has found its endpoints: a
//! look-up that fails through the new settings then keeps the connection
//! in use and its endpoints, as a failed look-up while running does.

use tokio::sync::mpsc::UnboundedSender;
use tokio::task::JoinHandle;

use super::{Backend, Event, Handover};
use crate::settings::Settings;

/// The running watcher of the configured backend.
pub(crate) struct Supervisor {
    backend: Box<dyn Backend>,
    /// The newest watcher (maybe still finding its endpoints).
    task: Option<JoinHandle<()>>,
    /// The watcher it replaces, while it has not taken over yet.
    handover: Handover,
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
            handover: Handover::default(),
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
        self.replace(settings, watched, after, false);
    }

    /// [`Supervisor::restart`] for new connection settings, while the
    /// watcher in use is `connected`: when the endpoints come from the
    /// same SRV record before and after, the watcher in use keeps running
    /// (and delivering) until the new one has found its endpoints. Whether
    /// it does: then the daemon keeps its view and its status, as nothing
    /// changed yet.
    pub(crate) fn reconnect(
        &mut self,
        settings: &Settings,
        watched: Vec<String>,
        after: i64,
        connected: bool,
    ) -> bool {
        let new = super::open(settings);
        let keep = connected
            && self.task.is_some()
            && new.discovery().is_some()
            && new.discovery() == self.backend.discovery()
            && self.covers(&watched);
        self.replace(settings, watched, after, keep);
        keep
    }

    fn replace(&mut self, settings: &Settings, watched: Vec<String>, after: i64, keep: bool) {
        let handover = if keep {
            // The watcher in use: the one an earlier handover still keeps
            // (its replacement never found its endpoints: stopped now),
            // else the newest.
            let old = match self.handover.release() {
                Some(old) => {
                    if let Some(t) = self.task.take() {
                        t.abort();
                    }
                    Some(old)
                }
                None => self.task.take().map(|t| t.abort_handle()),
            };
            old.map(Handover::of).unwrap_or_default()
        } else {
            self.stop();
            Handover::default()
        };
        self.backend = super::open(settings);
        self.watching = watched.clone();
        self.handover = handover.clone();
        self.task = Some(tokio::spawn(self.backend.watch_replacing(
            watched,
            after,
            self.tx.clone(),
            handover,
        )));
    }

    /// The backend being watched.
    pub(crate) fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// Stops the watcher (dropping its connection), and the one it was
    /// to replace.
    pub(crate) fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
        self.handover.take_over();
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}
