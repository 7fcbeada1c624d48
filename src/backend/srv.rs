//! Following etcd's SRV record while the daemon runs.
//!
//! With `srv_domain`, the endpoints are whatever DNS says. The watcher
//! ([`super::etcd_watch`]) already looks the record up again after each
//! failure; this module also looks it up while all is well, every TTL of
//! the answer (clamped to [`MIN_INTERVAL`] … [`MAX_INTERVAL`]), so a
//! member added to or removed from DNS is added to or removed from the
//! daemon's endpoints without a restart. A [`Follower`] runs the look-ups
//! on a task of its own (a slow nameserver never holds up the watch) and
//! hands each new set over on a channel; the watcher keeps its connection
//! when its endpoint is still in the set and moves to the new set's first
//! one when it is not. Every change is logged once, one line per endpoint
//! added or removed, whoever noticed it first (the follower, or the
//! watcher's look-up after a failure). A failed look-up keeps the last set
//! (logged once per distinct error).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::etcd::Connection;

/// The shortest wait between two look-ups (an answer with a TTL of 0, as
/// dnsmasq gives its own records, is asked again this often).
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);
/// The longest wait between two look-ups, whatever the TTL.
pub const MAX_INTERVAL: Duration = Duration::from_secs(300);

/// The wait before the next look-up of an answer with this TTL.
pub fn interval(ttl_secs: u32) -> Duration {
    Duration::from_secs(u64::from(ttl_secs)).clamp(MIN_INTERVAL, MAX_INTERVAL)
}

/// The endpoints in `new` and not in `old`, and those in `old` and not in
/// `new`.
pub fn diff(old: &[String], new: &[String]) -> (Vec<String>, Vec<String>) {
    let added = new.iter().filter(|e| !old.contains(e)).cloned().collect();
    let removed = old.iter().filter(|e| !new.contains(e)).cloned().collect();
    (added, removed)
}

/// The set of endpoints last logged, shared by the follower and the
/// watcher so each change is said once.
#[derive(Clone)]
pub struct Known {
    name: String,
    set: Arc<Mutex<Vec<String>>>,
}

impl Known {
    /// The set `conn` starts with, for the record `name`.
    pub fn new(name: String, endpoints: &[String]) -> Known {
        Known {
            name,
            set: Arc::new(Mutex::new(endpoints.to_vec())),
        }
    }

    /// `endpoints` is the set DNS gives now: logs what was added and
    /// removed since the last set logged, one line each.
    pub fn note(&self, endpoints: &[String]) {
        let Ok(mut set) = self.set.lock() else { return };
        let (added, removed) = diff(&set, endpoints);
        for e in &added {
            tracing::info!(
                endpoint = %e,
                "etcd discovery (SRV {}): endpoint added", self.name
            );
        }
        for e in &removed {
            tracing::info!(
                endpoint = %e,
                "etcd discovery (SRV {}): endpoint removed", self.name
            );
        }
        *set = endpoints.to_vec();
    }
}

/// The task that looks the SRV record up on its TTL; stopped when dropped.
pub struct Follower {
    task: JoinHandle<()>,
    /// Each new set of endpoints, as a connection to use.
    pub updates: watch::Receiver<Connection>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Follower {
    /// Follows the SRV record `conn` was discovered from (`None` when its
    /// endpoints are not discovered).
    pub fn start(conn: &Connection, known: Known) -> Option<Follower> {
        let name = conn.srv_name()?;
        let (tx, updates) = watch::channel(conn.clone());
        let mut current = conn.clone();
        let task = tokio::spawn(async move {
            let mut wait = current.srv_ttl.map_or(MIN_INTERVAL, interval);
            let mut said: Option<String> = None;
            loop {
                tokio::time::sleep(wait).await;
                // One look-up of the record, whose TTL says when to look
                // again (the targets' addresses, when resolved through
                // dns_server, are asked again with it).
                let mut next = current.clone();
                match next.rediscover().await {
                    Ok(changed) => {
                        wait = next.srv_ttl.map_or(MIN_INTERVAL, interval);
                        said = None;
                        if changed {
                            known.note(&next.endpoints);
                            current = next;
                            if tx.send(current.clone()).is_err() {
                                return;
                            }
                        }
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        if said.as_deref() != Some(&msg) {
                            tracing::warn!(
                                "etcd discovery (SRV {name}): {msg}; keeping the endpoints {}",
                                current.endpoints.join(",")
                            );
                            said = Some(msg);
                        }
                        wait = MIN_INTERVAL;
                    }
                }
            }
        });
        Some(Follower { task, updates })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ttl_is_clamped() {
        assert_eq!(interval(0), MIN_INTERVAL);
        assert_eq!(interval(60), Duration::from_secs(60));
        assert_eq!(interval(86_400), MAX_INTERVAL);
    }

    #[test]
    fn a_diff_names_what_was_added_and_removed() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            diff(&s(&["a", "b"]), &s(&["b", "c"])),
            (s(&["c"]), s(&["a"]))
        );
        assert_eq!(diff(&s(&["a"]), &s(&["a"])), (vec![], vec![]));
    }
}
