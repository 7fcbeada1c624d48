//! Batch planning: which ready resources run now, grouped how.
//!
//! Resources that share a reload command (after substitution) form a
//! *reload group*; every other resource is a group of its own. When some
//! resources are ready, each of their groups gets one batch, which also
//! pulls in the group's members that are pending or retrying (so the shared
//! command runs once for all of them) and holds the whole group busy while
//! it runs. A group with a batch running gets no second one: its ready
//! members join it as *late* members, held with it and released (pending,
//! to render at once) when it ends.
//!
//! Pure: the time is an argument of every call ([`Schedule`] keeps the
//! windows and retries), nothing is spawned, read or logged here. It must
//! never look at files, snapshots or outcomes beyond "succeeded or failed".

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::schedule::Schedule;
use crate::resource::Wait;

/// What the planner knows of a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Member {
    /// The resource's name.
    pub name: String,
    /// Its reload group: the reload command, or the resource alone.
    pub group: String,
    /// Whether it has a reload command (only those join a batch early).
    pub reloads: bool,
    /// Its own coalescing window, if it sets one.
    pub wait: Option<Wait>,
}

/// One batch to start now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Its reload group.
    pub group: String,
    /// The resources to apply, in order.
    pub names: Vec<String>,
    /// Every member of the group, held busy until the batch ends.
    pub held: Vec<String>,
}

/// The reload groups of the configured resources, and what is pending,
/// retrying or running.
#[derive(Debug)]
pub(crate) struct Planner {
    schedule: Schedule,
    members: Vec<Member>,
    default_wait: Wait,
    /// Per group: members that became ready while its batch ran.
    late: BTreeMap<String, Vec<String>>,
    /// Members that failed in a way no render can fix (a template that
    /// does not parse): not retried, and changes of their keys ignored,
    /// until the next [`Planner::configure`] (templates read again).
    parked: BTreeSet<String>,
}

impl Default for Planner {
    fn default() -> Planner {
        Planner {
            schedule: Schedule::default(),
            members: Vec::new(),
            default_wait: Wait::OFF,
            late: BTreeMap::new(),
            parked: BTreeSet::new(),
        }
    }
}

impl Planner {
    /// The resources after a (re)load: what was pending is forgotten (the
    /// caller marks everything again), so are retries of removed
    /// resources; a running batch stays busy until it reports.
    pub(crate) fn configure(&mut self, members: Vec<Member>, default_wait: Wait) {
        self.members = members;
        self.default_wait = default_wait;
        self.schedule.clear_pending();
        self.parked.clear();
        let names: Vec<&str> = self.members.iter().map(|m| m.name.as_str()).collect();
        self.schedule.retain(&names);
    }

    /// Whether `name` is a configured resource.
    pub(crate) fn is_member(&self, name: &str) -> bool {
        self.members.iter().any(|m| m.name == name)
    }

    /// `name` changed at `at` (`now`: render without waiting out its window).
    /// A parked member ignores it.
    pub(crate) fn mark(&mut self, name: &str, now: bool, at: Instant) {
        if !self.parked.contains(name) {
            self.schedule.mark(name, now, at);
        }
    }

    /// Every resource, at once (first view, SIGHUP), parked ones aside.
    pub(crate) fn mark_all(&mut self, at: Instant) {
        for m in &self.members {
            if !self.parked.contains(&m.name) {
                self.schedule.mark(&m.name, true, at);
            }
        }
    }

    /// When something next becomes ready (a window closes, a retry is due).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let (members, default) = (&self.members, self.default_wait);
        self.schedule
            .next_deadline(|n| wait_of(members, default, n))
    }

    /// The batches to start at `at`, their groups held busy from now on.
    pub(crate) fn take(&mut self, at: Instant) -> Vec<Batch> {
        let (members, default) = (&self.members, self.default_wait);
        let ready = self
            .schedule
            .take_ready(at, |n| wait_of(members, default, n));
        if ready.is_empty() {
            return Vec::new();
        }
        let running: BTreeSet<&str> = self
            .members
            .iter()
            .filter(|m| self.schedule.is_busy(&m.name))
            .map(|m| m.group.as_str())
            .collect();
        let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut deferred: Vec<(String, String)> = Vec::new();
        for m in self.members.iter().filter(|m| ready.contains(&m.name)) {
            if running.contains(m.group.as_str()) {
                deferred.push((m.group.clone(), m.name.clone()));
            } else {
                groups
                    .entry(m.group.clone())
                    .or_default()
                    .push(m.name.clone());
            }
        }
        for (group, name) in deferred {
            self.schedule.mark(&name, true, at);
            self.schedule.start(&name);
            self.late.entry(group).or_default().push(name);
        }
        self.join_early(&mut groups);
        groups
            .into_iter()
            .map(|(group, names)| self.hold(group, names))
            .collect()
    }

    /// Members of a group about to run that are pending or retrying join
    /// its batch now, so the shared reload command runs once for them all.
    fn join_early(&mut self, groups: &mut BTreeMap<String, Vec<String>>) {
        for m in &self.members {
            let Some(names) = groups.get_mut(&m.group) else {
                continue;
            };
            if m.reloads && !names.contains(&m.name) && self.schedule.take_early(&m.name) {
                names.push(m.name.clone());
            }
        }
    }

    /// The whole group is held while its batch runs.
    fn hold(&mut self, group: String, names: Vec<String>) -> Batch {
        let held: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.group == group)
            .map(|m| m.name.clone())
            .collect();
        for name in &held {
            self.schedule.start(name);
        }
        Batch { group, names, held }
    }

    /// A batch of `group` ended: its members (and late members) are free
    /// again. Record each outcome with `succeeded`/`failed`.
    pub(crate) fn finished(&mut self, group: &str, held: &[String]) {
        for name in held {
            self.schedule.done(name);
        }
        for name in self.late.remove(group).unwrap_or_default() {
            self.schedule.done(&name);
        }
    }

    /// `name` succeeded: no retry.
    pub(crate) fn succeeded(&mut self, name: &str) {
        self.schedule.succeeded(name);
    }

    /// `name` failed at `at`: retried after the returned delay.
    pub(crate) fn failed(&mut self, name: &str, at: Instant) -> Duration {
        self.schedule.failed(name, at)
    }

    /// `name` failed in a way only a change of its template can fix: no
    /// retry, and changes of its keys are ignored, until the templates are
    /// read again ([`Planner::configure`]).
    pub(crate) fn park(&mut self, name: &str) {
        self.schedule.forget(name);
        self.parked.insert(name.to_string());
    }

    /// Whether no batch is running.
    pub(crate) fn is_idle(&self) -> bool {
        self.schedule.is_idle()
    }

    /// Whether nothing is waiting to render or rendering.
    pub(crate) fn is_settled(&self) -> bool {
        self.schedule.is_settled()
    }
}

/// The coalescing window of a resource: its own, or the global one.
fn wait_of(members: &[Member], default: Wait, name: &str) -> Wait {
    members
        .iter()
        .find(|m| m.name == name)
        .and_then(|m| m.wait)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Wait = Wait {
        min: Duration::from_millis(100),
        max: Duration::from_secs(1),
    };

    /// a and b share `reload-1`, c has its own reload, d none.
    fn planner() -> Planner {
        let m = |name: &str, group: &str, reloads| Member {
            name: name.into(),
            group: group.into(),
            reloads,
            wait: None,
        };
        let mut p = Planner::default();
        p.configure(
            vec![
                m("a", "cmd:reload-1", true),
                m("b", "cmd:reload-1", true),
                m("c", "cmd:reload-2", true),
                m("d", "res:d", false),
            ],
            W,
        );
        p
    }

    fn batch(group: &str, names: &[&str], held: &[&str]) -> Batch {
        let v = |s: &[&str]| s.iter().map(|n| n.to_string()).collect();
        Batch {
            group: group.into(),
            names: v(names),
            held: v(held),
        }
    }

    #[test]
    fn every_group_gets_its_own_batch_holding_all_its_members() {
        let t0 = Instant::now();
        let mut p = planner();
        p.mark_all(t0);
        assert_eq!(
            p.take(t0),
            [
                batch("cmd:reload-1", &["a", "b"], &["a", "b"]),
                batch("cmd:reload-2", &["c"], &["c"]),
                batch("res:d", &["d"], &["d"]),
            ]
        );
        assert!(!p.is_idle());
        assert_eq!(p.next_deadline(), None);
        assert!(p.take(t0).is_empty());
    }

    #[test]
    fn a_member_pending_in_its_window_joins_its_groups_batch_early() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = planner();
        // b changed (window open until 100 ms), then a must run at once.
        p.mark("b", false, ms(0));
        p.mark("a", true, ms(10));
        assert_eq!(
            p.take(ms(10)),
            [batch("cmd:reload-1", &["a", "b"], &["a", "b"])]
        );
        // A retrying member joins too (once its group runs again).
        p.finished("cmd:reload-1", &["a".into(), "b".into()]);
        p.failed("b", ms(20));
        p.mark("a", true, ms(30));
        assert_eq!(
            p.take(ms(30)),
            [batch("cmd:reload-1", &["a", "b"], &["a", "b"])]
        );
    }

    #[test]
    fn a_group_with_a_batch_running_gets_no_second_one_until_it_ends() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = planner();
        p.mark("a", true, ms(0));
        let first = p.take(ms(0));
        assert_eq!(first, [batch("cmd:reload-1", &["a"], &["a", "b"])]);
        // b changes while a's batch runs: it waits, and so does a again.
        p.mark("b", true, ms(5));
        p.mark("a", false, ms(5));
        assert!(p.take(ms(500)).is_empty());
        assert_eq!(p.next_deadline(), None, "nothing to wake up for");
        // Other groups are not held up.
        p.mark("d", true, ms(6));
        assert_eq!(p.take(ms(6)), [batch("res:d", &["d"], &["d"])]);
        p.finished("res:d", &["d".into()]);
        // The batch ends: a and b are free, due at once, in one batch.
        p.finished("cmd:reload-1", &first[0].held);
        assert_eq!(p.next_deadline(), Some(ms(5)));
        assert_eq!(
            p.take(ms(500)),
            [batch("cmd:reload-1", &["a", "b"], &["a", "b"])]
        );
    }

    #[test]
    fn a_member_added_while_its_group_runs_waits_for_that_batch_then_runs() {
        let t0 = Instant::now();
        let mut p = planner();
        p.mark("a", true, t0);
        let first = p.take(t0);
        // A SIGHUP adds e to a's reload group while the batch runs.
        let mut more = p.members.clone();
        more.push(Member {
            name: "e".into(),
            group: "cmd:reload-1".into(),
            reloads: true,
            wait: None,
        });
        p.configure(more, W);
        p.mark_all(t0);
        // Only c and d may start; e is held with the running batch.
        let started: Vec<String> = p.take(t0).into_iter().map(|b| b.group).collect();
        assert_eq!(started, ["cmd:reload-2", "res:d"]);
        p.finished("cmd:reload-2", &["c".into()]);
        p.finished("res:d", &["d".into()]);
        assert_eq!(p.next_deadline(), None);
        p.finished("cmd:reload-1", &first[0].held);
        assert_eq!(
            p.take(t0),
            [batch("cmd:reload-1", &["a", "b", "e"], &["a", "b", "e"])]
        );
    }

    #[test]
    fn coalescing_windows_and_retries_follow_the_injected_clock() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut p = planner();
        let mut own = p.members.clone();
        own[3].wait = Some(Wait::OFF);
        p.configure(own, W);
        p.mark("c", false, ms(0));
        p.mark("c", false, ms(80));
        p.mark("d", false, ms(80));
        // d coalesces nothing (its own wait is off); c waits 100 ms of quiet.
        assert_eq!(p.next_deadline(), Some(ms(80)));
        assert_eq!(p.take(ms(80)), [batch("res:d", &["d"], &["d"])]);
        assert_eq!(p.next_deadline(), Some(ms(180)));
        assert!(p.take(ms(179)).is_empty());
        assert_eq!(p.take(ms(180)), [batch("cmd:reload-2", &["c"], &["c"])]);
        // c fails: retried after its backoff, not before.
        p.finished("cmd:reload-2", &["c".into()]);
        let delay = p.failed("c", ms(200));
        assert_eq!(p.next_deadline(), Some(ms(200) + delay));
        assert!(
            p.take(ms(200) + delay - Duration::from_millis(1))
                .is_empty()
        );
        assert_eq!(p.take(ms(200) + delay).len(), 1);
    }

    #[test]
    fn a_parked_member_is_not_retried_nor_marked_until_reconfigured() {
        let t0 = Instant::now();
        let mut p = planner();
        p.mark("d", true, t0);
        let b = p.take(t0);
        // A change arrives while d's batch runs; then d fails for good.
        p.mark("d", false, t0);
        p.finished("res:d", &b[0].held);
        p.park("d");
        assert_eq!(p.next_deadline(), None);
        assert!(p.take(t0 + Duration::from_secs(120)).is_empty());
        // Changes of its keys, even everything at once, leave it parked.
        p.mark("d", true, t0);
        p.mark_all(t0);
        let groups: Vec<String> = p.take(t0).into_iter().map(|b| b.group).collect();
        assert_eq!(groups, ["cmd:reload-1", "cmd:reload-2"]);
        p.finished("cmd:reload-1", &["a".into(), "b".into()]);
        p.finished("cmd:reload-2", &["c".into()]);
        // The templates read again (SIGHUP, templates/ changed): it runs.
        let members = p.members.clone();
        p.configure(members, W);
        p.mark_all(t0);
        assert!(p.take(t0).iter().any(|b| b.group == "res:d"));
    }

    #[test]
    fn a_reconfiguration_forgets_pending_work_and_removed_resources() {
        let t0 = Instant::now();
        let mut p = planner();
        p.mark("a", false, t0);
        p.failed("d", t0);
        let mut fewer = p.members.clone();
        fewer.truncate(2);
        p.configure(fewer, W);
        assert!(!p.is_member("d") && p.is_member("a"));
        assert_eq!(p.next_deadline(), None);
        assert!(p.is_settled());
    }
}
