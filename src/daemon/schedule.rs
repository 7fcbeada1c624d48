//! What the daemon renders when: coalescing windows and retries.
//!
//! A change marks a resource *pending*. It becomes ready once its keys have
//! been quiet for `wait.min`, or `wait.max` after the first change, whichever
//! comes first (consul-template's quiescence); a mark that ignores the
//! window (first render, SIGHUP, retry) is ready at once. A failed resource
//! is retried after an exponential backoff (1 s to 60 s, jittered). Every
//! method takes the time as an argument, so one clock decides.
//!
//! Pure bookkeeping: it never reads a clock, spawns, or knows what a
//! resource is beyond its name; whether a reload is owed is not its
//! business ([`crate::owed`]).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use crate::backend::Backoff;
use crate::resource::Wait;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Pending {
    first: Instant,
    last: Instant,
    /// Ignore the coalescing window.
    now: bool,
}

#[derive(Clone, Debug)]
struct Retry {
    backoff: Backoff,
    due: Instant,
}

/// Pending renders and retries, by resource name. A *busy* resource (its
/// batch is running) is never handed out again until it is done: what
/// changed meanwhile waits, pending, for the next batch.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    pending: BTreeMap<String, Pending>,
    retries: BTreeMap<String, Retry>,
    busy: BTreeSet<String>,
}

impl Pending {
    fn ready_at(&self, wait: Wait) -> Instant {
        if self.now || wait.is_off() {
            return self.last;
        }
        (self.last + wait.min).min(self.first + wait.max)
    }
}

impl Schedule {
    /// Marks `name` pending at `at`; `now` skips the coalescing window.
    pub fn mark(&mut self, name: &str, now: bool, at: Instant) {
        self.pending
            .entry(name.to_string())
            .and_modify(|p| {
                p.last = at;
                p.now |= now;
            })
            .or_insert(Pending {
                first: at,
                last: at,
                now,
            });
    }

    /// When the next resource becomes ready or the next retry is due.
    pub fn next_deadline(&self, wait: impl Fn(&str) -> Wait) -> Option<Instant> {
        let idle = |n: &&String| !self.busy.contains(*n);
        let pending = self
            .pending
            .iter()
            .filter(|(n, _)| idle(n))
            .map(|(n, p)| p.ready_at(wait(n)));
        let retries = self
            .retries
            .iter()
            .filter(|(n, _)| idle(n))
            .map(|(_, r)| r.due);
        pending.chain(retries).min()
    }

    /// `name`'s batch started: hand it out no more until [`Schedule::done`].
    pub fn start(&mut self, name: &str) {
        self.busy.insert(name.to_string());
    }

    /// `name`'s batch ended (record its outcome with `succeeded`/`failed`).
    pub fn done(&mut self, name: &str) {
        self.busy.remove(name);
    }

    /// Whether no batch is running.
    pub fn is_idle(&self) -> bool {
        self.busy.is_empty()
    }

    /// Whether `name`'s batch is running.
    pub fn is_busy(&self, name: &str) -> bool {
        self.busy.contains(name)
    }

    /// Takes `name` now if it is pending or has a retry scheduled (to join
    /// a batch that shares its reload command); false when idle or busy.
    pub fn take_early(&mut self, name: &str) -> bool {
        if self.busy.contains(name) {
            return false;
        }
        let pending = self.pending.remove(name).is_some();
        pending || self.retries.contains_key(name)
    }

    /// Removes and returns the resources ready at `at` (due retries included).
    pub fn take_ready(&mut self, at: Instant, wait: impl Fn(&str) -> Wait) -> Vec<String> {
        let due: Vec<String> = self
            .retries
            .iter()
            .filter(|(n, r)| r.due <= at && !self.busy.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &due {
            self.mark(name, true, at);
        }
        let ready: Vec<String> = self
            .pending
            .iter()
            .filter(|(n, p)| p.ready_at(wait(n)) <= at && !self.busy.contains(*n))
            .map(|(n, _)| n.clone())
            .collect();
        for n in &ready {
            self.pending.remove(n);
        }
        ready
    }

    /// `name` succeeded: no retry.
    pub fn succeeded(&mut self, name: &str) {
        self.retries.remove(name);
    }

    /// `name` failed at `at`: schedules a retry and returns its delay.
    pub fn failed(&mut self, name: &str, at: Instant) -> Duration {
        let r = self.retries.entry(name.to_string()).or_insert(Retry {
            backoff: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            due: at,
        });
        let delay = r.backoff.next_delay();
        r.due = at + delay;
        delay
    }

    /// Forgets `name`'s pending render and retry (it waits for something
    /// a render cannot change).
    pub fn forget(&mut self, name: &str) {
        self.pending.remove(name);
        self.retries.remove(name);
    }

    /// Forgets what is pending (everything is about to be marked again).
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Forgets retries of resources that no longer exist (a running batch
    /// stays busy until it reports).
    pub fn retain(&mut self, names: &[&str]) {
        self.retries.retain(|n, _| names.contains(&n.as_str()));
        self.pending.retain(|n, _| names.contains(&n.as_str()));
    }

    /// Whether nothing is waiting to render or rendering.
    pub fn is_settled(&self) -> bool {
        self.pending.is_empty() && self.busy.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Wait = Wait {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    #[test]
    fn quiet_period_then_ceiling() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut s = Schedule::default();
        s.mark("a", false, ms(0));
        assert_eq!(s.next_deadline(|_| W), Some(ms(100)));
        assert!(s.take_ready(ms(99), |_| W).is_empty());
        // Changes every 50 ms keep postponing it, up to the ceiling.
        for i in 1..=30 {
            s.mark("a", false, ms(i * 50));
        }
        assert_eq!(s.next_deadline(|_| W), Some(ms(1000)));
        assert_eq!(s.take_ready(ms(1000), |_| W), ["a"]);
        assert!(s.is_settled());
    }

    #[test]
    fn a_busy_resource_waits_for_its_batch_to_end() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.mark("a", true, t0);
        assert_eq!(s.take_ready(t0, |_| W), ["a"]);
        s.start("a");
        // A change while a's batch runs: pending, but not handed out, and
        // no deadline that would spin the loop.
        s.mark("a", true, t0);
        assert!(s.take_ready(t0, |_| W).is_empty());
        assert_eq!(s.next_deadline(|_| W), None);
        assert!(!s.is_settled());
        assert!(!s.take_early("a"));
        s.done("a");
        assert_eq!(s.next_deadline(|_| W), Some(t0));
        assert_eq!(s.take_ready(t0, |_| W), ["a"]);
        // take_early: pending or retrying resources join a batch early.
        s.mark("b", false, t0);
        assert!(s.take_early("b"));
        assert!(!s.take_early("b"));
        s.failed("c", t0);
        assert!(s.take_early("c"));
    }

    #[test]
    fn immediate_marks_and_wait_off() {
        let t0 = Instant::now();
        let mut s = Schedule::default();
        s.mark("a", true, t0);
        s.mark("b", false, t0);
        assert_eq!(s.take_ready(t0, |_| W), ["a"]);
        assert_eq!(s.take_ready(t0, |_| Wait::OFF), ["b"]);
    }

    #[test]
    fn failures_are_retried_with_backoff() {
        // (Owed reloads are owed.rs's; its tests cover them.)
        let t0 = Instant::now();
        let mut s = Schedule::default();
        let d1 = s.failed("a", t0);
        assert!(d1 >= Duration::from_millis(500) && d1 <= Duration::from_secs(1));
        assert!(s.take_ready(t0, |_| W).is_empty());
        assert_eq!(s.take_ready(t0 + d1, |_| W), ["a"]);
        let d2 = s.failed("a", t0 + d1);
        assert!(d2 >= Duration::from_secs(1), "{d2:?}");
        s.succeeded("a");
        assert_eq!(s.next_deadline(|_| W), None);
    }
}
