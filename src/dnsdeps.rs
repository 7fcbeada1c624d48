//! DNS answers as live state: every look-up a render made is a dependency
//! of its resource, looked up again when its TTL runs out, and the
//! resources that used it are rendered again only when the answer changed.
//!
//! One [`Tracker`] per daemon holds one entry per [`Query`] (record type +
//! name), shared by every resource whose last render asked for it: a render
//! is answered from the entry (no query on the wire), and one look-up per
//! entry and interval serves them all. [`run`] is the task that looks each
//! entry up again when it is due (on the DNS thread: it only awaits) and
//! hands the daemon the names of the resources whose answer changed.
//!
//! What a render sees of an entry (its [`View`]) is what decides a
//! re-render:
//! - a good answer (records sorted, so another order is the same answer),
//!   kept through timeouts, SERVFAIL and unreachable nameservers for up to
//!   `dns_max_stale`, retried with backoff meanwhile;
//! - a real negative answer (NXDOMAIN, NODATA): the render fails, naming
//!   the name and the reason;
//! - no good answer for longer than `dns_max_stale`: the render fails;
//! - no good answer yet (the first look-up failed): the render fails.
//!
//! `render --once` and `check` have a tracker of their own for the run
//! ([`Live::one_shot`]), with no task looking names up again: each name and
//! type is asked once per run, its answer (or failure) shared by every
//! render of the run.
//!
//! Never decides what to render beyond naming resources; never blocks a
//! runtime worker (the lock is held for map operations only).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::mpsc::UnboundedSender;

use crate::dns::{self, Answer, DnsConfig, DnsError, Query, Records};

/// The intervals of the settings `dns_min_interval`, `dns_max_interval`
/// and `dns_max_stale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// The shortest time between two look-ups of a name (TTLs below it are
    /// raised to it; the first retry after a failure).
    pub min: Duration,
    /// The longest (TTLs above it are lowered to it; the longest backoff).
    pub max: Duration,
    /// How long the last good answer serves while look-ups fail.
    pub max_stale: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            min: Duration::from_secs(5),
            max: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
        }
    }
}

/// The last good answer of an entry.
#[derive(Clone, Debug)]
struct Good {
    records: Records,
    /// When it was (last) received.
    at: Instant,
    /// When it is due to be looked up again (its TTL, clamped): staleness
    /// counts from here at the latest.
    expires: Instant,
}

/// One look-up, shared by the resources whose last render asked for it.
#[derive(Debug)]
struct Entry {
    good: Option<Good>,
    /// The TTL of the last answer, in seconds: a good one's, a negative
    /// one's when the nameserver gave one (the SOA's negative-caching TTL).
    ttl: Option<u32>,
    /// A real negative answer (NXDOMAIN, NODATA), until a good one.
    negative: Option<DnsError>,
    /// The last failure to get an answer, and when; cleared by any answer.
    error: Option<(DnsError, std::time::SystemTime)>,
    /// Consecutive failures to get an answer (the backoff).
    failures: u32,
    /// The first failure to get an answer since the last good one:
    /// staleness counts from here (or from the good answer's expiry).
    failing_since: Option<Instant>,
    /// When to look it up again; `None` while a look-up is under way.
    due: Option<Instant>,
    /// The resources whose last render used it.
    resources: BTreeSet<String>,
    /// What the renders were last shown (a change of it re-renders).
    shown: View,
}

/// What a render sees of an entry: a change of it re-renders.
#[derive(Clone, Debug, PartialEq, Eq)]
enum View {
    Good(Records),
    Negative(String),
    Stale,
    Unresolved,
}

impl Entry {
    fn new() -> Entry {
        Entry {
            good: None,
            ttl: None,
            negative: None,
            error: None,
            failures: 0,
            failing_since: None,
            due: None,
            resources: BTreeSet::new(),
            shown: View::Unresolved,
        }
    }

    /// Since when the good answer has not been renewed: the first failed
    /// look-up since it came, or its expiry (a look-up hung past it),
    /// whichever is earlier. Never while look-ups succeed.
    fn unrenewed_since(&self) -> Option<Instant> {
        let g = self.good.as_ref()?;
        Some(self.failing_since.map_or(g.expires, |f| f.min(g.expires)))
    }

    /// When the good answer turns stale.
    fn stale_at(&self, max_stale: Duration) -> Option<Instant> {
        self.unrenewed_since().map(|t| later(t, max_stale))
    }

    fn view(&self, now: Instant, max_stale: Duration) -> View {
        if let Some(n) = &self.negative {
            return View::Negative(n.to_string());
        }
        match (&self.good, self.stale_at(max_stale)) {
            (Some(g), Some(t)) if now <= t => View::Good(g.records.clone()),
            (Some(_), _) => View::Stale,
            (None, _) => View::Unresolved,
        }
    }

    /// The last failure to get an answer, in words (never empty).
    fn last_error(&self) -> String {
        self.error
            .as_ref()
            .map(|(e, _)| e.to_string())
            .unwrap_or_else(|| "the look-up has not answered".into())
    }

    /// What a render gets.
    fn result(&self, now: Instant, max_stale: Duration) -> Result<Records, DnsError> {
        match self.view(now, max_stale) {
            View::Good(r) => Ok(r),
            View::Negative(_) => Err(self.negative.clone().unwrap_or(DnsError::NoAnswer)),
            View::Stale => Err(DnsError::Stale {
                age: secs(
                    self.unrenewed_since()
                        .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)),
                ),
                limit: secs(max_stale),
                last: self.last_error(),
            }),
            View::Unresolved => Err(self
                .error
                .as_ref()
                .map(|(e, _)| e.clone())
                .unwrap_or(DnsError::NoAnswer)),
        }
    }
}

/// A duration in whole seconds as people read it ("1h 2m 5s").
fn secs(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// What [`Tracker::take_due`] found.
struct Due {
    queries: Vec<Query>,
    next: Option<Instant>,
    stale: Vec<String>,
    dns: DnsConfig,
}

#[derive(Default)]
struct State {
    dns: DnsConfig,
    timing: Timing,
    entries: BTreeMap<Query, Entry>,
    /// What each resource's last render looked up.
    uses: HashMap<String, BTreeSet<Query>>,
    /// What each render under way has looked up so far.
    rendering: HashMap<String, BTreeSet<Query>>,
    /// The look-ups whose answer each resource's last render could not use
    /// (no address of the family it asked for: NODATA for it), and why.
    unusable: HashMap<String, BTreeMap<Query, String>>,
    /// The same, for each render under way.
    unusable_rendering: HashMap<String, BTreeMap<Query, String>>,
}

/// The daemon's DNS dependencies (see the module documentation).
#[derive(Default)]
pub struct Tracker {
    state: Mutex<State>,
    wake: tokio::sync::Notify,
    /// Look-ups sent to the nameserver (first and refreshes).
    asked: AtomicU64,
}

impl std::fmt::Debug for Tracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracker")
    }
}

/// One dependency as status.json, `liveconf status` and /metrics show it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DepStatus {
    /// The name looked up.
    pub name: String,
    /// The record type ("A/AAAA", "SRV", "TXT", "URI").
    #[serde(rename = "type")]
    pub kind: String,
    /// The resources whose last render used it.
    pub resources: Vec<String>,
    /// The last good answer, in one line; absent when there is none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
    /// Seconds since the last good answer was received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age: Option<u64>,
    /// The TTL of the last answer, in seconds: a good answer's; a
    /// negative answer's (NXDOMAIN, NODATA) when the nameserver sent an
    /// SOA (its negative-caching TTL); absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<u32>,
    /// The renders that use it fail: a real negative answer, or no good
    /// answer for longer than `dns_max_stale`, or none yet.
    pub failing: bool,
    /// The last look-up got no answer (a timeout, SERVFAIL, an
    /// unreachable nameserver), whether or not the last good answer still
    /// serves (`failing` says whether the renders fail).
    /// `liveconf_dns_failing` is 1 when either is true (or the answer
    /// could not be used).
    #[serde(default)]
    pub lookup_failing: bool,
    /// The last error (a failure to get an answer, or a negative answer);
    /// absent once a good answer came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When that error happened (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_at: Option<u64>,
}

impl Tracker {
    /// A tracker asking `dns`'s nameserver, with `timing`.
    pub fn new(dns: DnsConfig, timing: Timing) -> Arc<Tracker> {
        let t = Tracker::default();
        {
            let mut s = t.lock();
            s.dns = dns;
            s.timing = timing;
        }
        Arc::new(t)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// New settings (SIGHUP): another nameserver is asked for every name at
    /// once, each keeping its last good answer meanwhile (a new nameserver
    /// that does not answer is a failure like any other: the files stay
    /// as they are until `dns_max_stale`; one that answers otherwise
    /// re-renders what uses the name); new intervals apply from each
    /// entry's next look-up.
    pub fn configure(&self, dns: DnsConfig, timing: Timing) {
        let mut s = self.lock();
        if s.dns != dns {
            let now = Instant::now();
            for e in s.entries.values_mut() {
                if e.due.is_some() {
                    e.due = Some(now);
                }
            }
        }
        s.dns = dns;
        s.timing = timing;
        drop(s);
        self.wake.notify_one();
    }

    /// Forgets the resources not in `names` (removed by a reload).
    pub fn retain(&self, names: &BTreeSet<String>) {
        let mut s = self.lock();
        let gone: Vec<String> = s
            .uses
            .keys()
            .filter(|n| !names.contains(*n))
            .cloned()
            .collect();
        for n in gone {
            set_uses(&mut s, &n, BTreeSet::new());
            s.unusable.remove(&n);
        }
    }

    /// A render of `resource` starts: what it looks up replaces what its
    /// last render did once it [`finish`](Tracker::finish)es.
    pub fn begin(&self, resource: &str) {
        let mut s = self.lock();
        s.rendering.insert(resource.to_string(), BTreeSet::new());
        s.unusable_rendering
            .insert(resource.to_string(), BTreeMap::new());
    }

    /// The render of `resource` ended: when `ok`, its look-ups are its
    /// dependencies now; when it failed, they are added to its previous
    /// ones (a render stopped by one failing name did not get to ask for
    /// the others: they stay its dependencies until a render succeeds).
    pub fn finish(&self, resource: &str, ok: bool) {
        let mut s = self.lock();
        let mut used = s.rendering.remove(resource).unwrap_or_default();
        let mut unusable = s.unusable_rendering.remove(resource).unwrap_or_default();
        if !ok {
            if let Some(old) = s.uses.get(resource) {
                used.extend(old.iter().cloned());
            }
            if let Some(old) = s.unusable.get(resource) {
                for (q, why) in old {
                    unusable.entry(q.clone()).or_insert_with(|| why.clone());
                }
            }
        }
        unusable.retain(|q, _| used.contains(q));
        if unusable.is_empty() {
            s.unusable.remove(resource);
        } else {
            s.unusable.insert(resource.to_string(), unusable);
        }
        set_uses(&mut s, resource, used);
    }

    /// The render of `resource` could not use the answer to `q` (`why`:
    /// no address of the family it asked for): the dependency shows it
    /// failing until a render of `resource` uses it well.
    pub fn unusable(&self, resource: &str, q: &Query, why: &str) {
        let mut s = self.lock();
        s.unusable_rendering
            .entry(resource.to_string())
            .or_default()
            .insert(q.clone(), why.to_string());
    }

    /// `q` for a render of `resource`: the entry's answer, or (a name no
    /// render asked for yet) a look-up now. Blocks while it looks up: call
    /// it off the runtime's workers (renders run on the blocking pool).
    pub fn lookup(&self, resource: &str, q: &Query) -> Result<Records, DnsError> {
        let dns = {
            let mut s = self.lock();
            s.rendering
                .entry(resource.to_string())
                .or_default()
                .insert(q.clone());
            let max_stale = s.timing.max_stale;
            if let Some(e) = s.entries.get_mut(q) {
                e.resources.insert(resource.to_string());
                return e.result(Instant::now(), max_stale);
            }
            s.dns.clone()
        };
        self.asked.fetch_add(1, Ordering::Relaxed);
        let answer = dns::resolve_blocking(&dns, q);
        let mut s = self.lock();
        let (timing, now) = (s.timing, Instant::now());
        let e = s.entries.entry(q.clone()).or_insert_with(Entry::new);
        e.resources.insert(resource.to_string());
        // Another render may have filled it meanwhile: the newer answer wins.
        update(e, answer, now, &timing);
        e.shown = e.view(now, timing.max_stale);
        let r = e.result(now, timing.max_stale);
        drop(s);
        self.wake.notify_one();
        r
    }

    /// Look-ups sent to the nameserver since the start.
    pub fn asked(&self) -> u64 {
        self.asked.load(Ordering::Relaxed)
    }

    /// Every dependency, by name and type.
    pub fn status(&self) -> Vec<DepStatus> {
        let s = self.lock();
        let now = Instant::now();
        s.entries
            .iter()
            .map(|(q, e)| {
                let view = e.view(now, s.timing.max_stale);
                let unusable = e
                    .resources
                    .iter()
                    .find_map(|r| s.unusable.get(r).and_then(|m| m.get(q)));
                let error = e.error.as_ref().map(|(err, at)| (err.to_string(), *at));
                let (error, error_at) = match (&e.negative, error) {
                    (Some(n), _) => (Some(n.to_string()), None),
                    (None, None) if unusable.is_some() => (unusable.cloned(), None),
                    (None, Some((m, at))) => (
                        Some(m),
                        at.duration_since(std::time::UNIX_EPOCH)
                            .ok()
                            .map(|d| d.as_secs()),
                    ),
                    (None, None) => (None, None),
                };
                DepStatus {
                    name: q.name.clone(),
                    kind: q.kind.to_string(),
                    resources: e.resources.iter().cloned().collect(),
                    answer: e.good.as_ref().map(|g| g.records.summary()),
                    age: e
                        .good
                        .as_ref()
                        .map(|g| now.saturating_duration_since(g.at).as_secs()),
                    ttl: e.ttl,
                    failing: !matches!(view, View::Good(_)) || unusable.is_some(),
                    lookup_failing: e.error.is_some(),
                    error,
                    error_at,
                }
            })
            .collect()
    }

    /// The entries due at `now` (marked under way), when to look again (the
    /// next one due, or a good answer turning stale), and the resources
    /// whose answer turned stale meanwhile.
    fn take_due(&self, now: Instant) -> Due {
        let mut s = self.lock();
        let max_stale = s.timing.max_stale;
        let mut out = Due {
            queries: Vec::new(),
            next: None,
            stale: Vec::new(),
            dns: s.dns.clone(),
        };
        let mut soonest = |t: Instant| out.next = Some(out.next.map_or(t, |n: Instant| n.min(t)));
        for (q, e) in s.entries.iter_mut() {
            match e.due {
                Some(t) if t <= now => {
                    e.due = None;
                    out.queries.push(q.clone());
                }
                Some(t) => soonest(t),
                None => {}
            }
            if let Some(t) = e.stale_at(max_stale.saturating_add(Duration::from_millis(1))) {
                if t > now {
                    soonest(t);
                }
            }
            let view = e.view(now, max_stale);
            if view != e.shown {
                let users: Vec<String> = e.resources.iter().cloned().collect();
                if view == View::Stale {
                    tracing::error!(
                        dns = %q.name,
                        "DNS {} {}: no good answer for {} (dns_max_stale): {}: {} fail(s) at render, keeping their files",
                        q.kind,
                        q.name,
                        secs(max_stale),
                        e.last_error(),
                        users.join(", ")
                    );
                } else {
                    // A longer dns_max_stale (SIGHUP) made an old answer good again.
                    tracing::info!(
                        dns = %q.name,
                        "DNS {} {}: the last good answer serves again (dns_max_stale {}): rendering {} again",
                        q.kind,
                        q.name,
                        secs(max_stale),
                        users.join(", ")
                    );
                }
                e.shown = view;
                out.stale.extend(users);
            }
        }
        out
    }

    /// A look-up of `q` (asked from `dns`) came back: the resources to
    /// render again, when what they see changed.
    fn answered(
        &self,
        q: &Query,
        dns: &DnsConfig,
        answer: Result<Answer, DnsError>,
    ) -> Option<Vec<String>> {
        let mut s = self.lock();
        if s.dns != *dns {
            return None;
        }
        let timing = s.timing;
        let e = s.entries.get_mut(q)?;
        let now = Instant::now();
        let before = e.shown.clone();
        let had_error = e.error.as_ref().map(|(m, _)| m.to_string());
        let failures = e.failures;
        let good_age = e.good.as_ref().map(|g| now.saturating_duration_since(g.at));
        let before_records = e.good.as_ref().map(|g| g.records.clone());
        let was_negative = e.negative.clone();
        update(e, answer, now, &timing);
        let unrenewed = e
            .unrenewed_since()
            .map(|t| now.saturating_duration_since(t));
        let after = e.view(now, timing.max_stale);
        let resources: Vec<String> = e.resources.iter().cloned().collect();
        let what = format!("DNS {} {}", q.kind, q.name);
        let users = resources.join(", ");
        let changed = before != after;
        e.shown = after.clone();
        match (&after, &e.error) {
            (View::Good(r), None) if changed && was_negative.is_some() => {
                let back = match &was_negative {
                    Some(DnsError::NoSuchName { .. }) => "the name exists again".to_string(),
                    Some(DnsError::NotAvailable { .. }) => {
                        "the service is available again".to_string()
                    }
                    _ => format!("the name has {} records again", q.kind),
                };
                let answer = if before_records.as_ref() == Some(r) {
                    format!("the same answer as before ({})", r.summary())
                } else {
                    format!("answer {}", r.summary())
                };
                tracing::info!(dns = %q.name, "{what}: {back}, {answer}: rendering {users} again")
            }
            (View::Good(r), None) if changed && before_records.as_ref() == Some(r) => {
                tracing::info!(
                    dns = %q.name, "{what}: answered again after {} failed look-up(s), the answer unchanged ({}): rendering {users} again", failures, r.summary()
                )
            }
            (View::Good(r), None) if changed => tracing::info!(
                dns = %q.name, "{what}: answer changed to {}: rendering {users} again", r.summary()
            ),
            (View::Good(_), None) if failures > 0 => tracing::info!(
                dns = %q.name, "{what}: answered again after {} failed look-up(s); the answer is unchanged", failures
            ),
            (View::Negative(m), _) if changed => {
                tracing::warn!(dns = %q.name, "{what}: {m}: {users} fail(s) at render, keeping their files")
            }
            (View::Stale, Some((err, _))) if changed => tracing::error!(
                dns = %q.name,
                "{what}: no good answer for {} (dns_max_stale {}): {err}: {users} fail(s) at render, keeping their files",
                secs(unrenewed.unwrap_or_default()), secs(timing.max_stale)
            ),
            (_, Some((err, _))) if had_error.as_deref() != Some(&err.to_string()) => {
                tracing::warn!(
                    dns = %q.name,
                    "{what}: {err}: {}; retrying with backoff",
                    match good_age {
                        Some(a) => format!("keeping the last good answer (received {} ago)", secs(a)),
                        None => "no answer yet".to_string(),
                    }
                )
            }
            _ => {}
        }
        changed.then_some(resources)
    }
}

/// Records that `resource`'s last render used `used`; entries no resource
/// uses any more are dropped.
fn set_uses(s: &mut State, resource: &str, used: BTreeSet<Query>) {
    let old = s.uses.remove(resource).unwrap_or_default();
    for q in old.difference(&used) {
        if let Some(e) = s.entries.get_mut(q) {
            e.resources.remove(resource);
            if e.resources.is_empty() {
                s.entries.remove(q);
            }
        }
    }
    for q in &used {
        if let Some(e) = s.entries.get_mut(q) {
            e.resources.insert(resource.to_string());
        }
    }
    if !used.is_empty() {
        s.uses.insert(resource.to_string(), used);
    }
}

/// `t` + `d`, or far in the future when that is past what an `Instant`
/// holds (a setting of a thousand years must not panic the daemon).
fn later(t: Instant, d: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
    t.checked_add(d).or_else(|| t.checked_add(FAR)).unwrap_or(t)
}

/// `answer` into `e`, and when to look it up next.
fn update(e: &mut Entry, answer: Result<Answer, DnsError>, now: Instant, t: &Timing) {
    let clamp = |ttl: u32| Duration::from_secs(ttl.into()).clamp(t.min, t.max.max(t.min));
    match answer {
        Ok(a) => {
            e.ttl = Some(a.ttl);
            let due = later(now, clamp(a.ttl));
            e.good = Some(Good {
                records: a.records,
                at: now,
                expires: due,
            });
            e.negative = None;
            e.error = None;
            e.failures = 0;
            e.failing_since = None;
            e.due = Some(due);
        }
        Err(err) if err.is_answer() => {
            e.ttl = err.negative_ttl();
            e.negative = Some(err);
            e.error = None;
            e.failures = 0;
            e.failing_since = None;
            e.due = Some(later(now, clamp(0)));
        }
        Err(err) => {
            e.failures = e.failures.saturating_add(1);
            e.failing_since.get_or_insert(now);
            e.error = Some((err, std::time::SystemTime::now()));
            let backoff = t
                .min
                .saturating_mul(1u32 << e.failures.saturating_sub(1).min(16))
                .min(t.max.max(t.min));
            let mut next = later(now, backoff);
            // Never past the moment the good answer turns stale.
            if let Some(stale_at) =
                e.stale_at(t.max_stale.saturating_add(Duration::from_millis(10)))
            {
                if stale_at > now {
                    next = next.min(stale_at);
                }
            }
            e.due = Some(next);
        }
    }
}

/// Looks each dependency up again when it is due, each on its own (a slow
/// name holds up no other), and sends the names of the resources whose
/// answer changed on `changed`. Ends when `changed` is closed.
pub async fn run(tracker: Arc<Tracker>, changed: UnboundedSender<Vec<String>>) {
    loop {
        if changed.is_closed() {
            return;
        }
        let Due {
            queries,
            next,
            stale,
            dns,
        } = tracker.take_due(Instant::now());
        if !stale.is_empty() && changed.send(stale).is_err() {
            return;
        }
        for q in queries {
            let (tracker, changed, dns) = (tracker.clone(), changed.clone(), dns.clone());
            tracker.asked.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let answer = dns::resolve(&dns, &q).await;
                if let Some(names) = tracker.answered(&q, &dns, answer) {
                    let _ = changed.send(names);
                }
                tracker.wake.notify_one();
            });
        }
        let sleep = async {
            match next {
                Some(t) => tokio::time::sleep_until(tokio::time::Instant::from_std(t)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = sleep => {}
            () = tracker.wake.notified() => {}
            () = changed.closed() => return,
        }
    }
}

/// How a render's template functions look names up: directly (once), or
/// through the daemon's tracker for `resource` (recorded as its
/// dependency).
#[derive(Clone, Debug, Default)]
pub struct Lookups {
    /// The nameserver.
    pub dns: DnsConfig,
    /// The daemon's tracker and the resource rendering.
    pub live: Option<(Arc<Tracker>, String)>,
}

impl Lookups {
    /// The records of `q`, sorted.
    pub fn lookup(&self, q: &Query) -> Result<Records, DnsError> {
        match &self.live {
            Some((t, resource)) => t.lookup(resource, q),
            None => dns::resolve_blocking(&self.dns, q).map(|a| a.records),
        }
    }

    /// The render could not use the answer to `q` (`why`): recorded on the
    /// dependency (the daemon; nothing for `render --once`).
    pub fn unusable(&self, q: &Query, why: &str) {
        if let Some((t, resource)) = &self.live {
            t.unusable(resource, q, why);
        }
    }
}

/// The tracker a render uses (in [`crate::render::Env`]); equal when it is
/// the same tracker.
#[derive(Clone, Debug)]
pub struct Live(pub Arc<Tracker>);

impl Live {
    /// The answers of one `render --once` or `check` run: each name and
    /// type is looked up once (its answer or its failure serves every
    /// render of the run), never again: nothing looks entries up again.
    pub fn one_shot(dns: &DnsConfig) -> Live {
        const RUN: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        Live(Tracker::new(
            dns.clone(),
            Timing {
                min: RUN,
                max: RUN,
                max_stale: RUN,
            },
        ))
    }
}

impl PartialEq for Live {
    fn eq(&self, other: &Live) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Live {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Kind;

    fn timing() -> Timing {
        Timing {
            min: Duration::from_secs(5),
            max: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
        }
    }

    fn entry() -> Entry {
        Entry::new()
    }

    fn txt(v: &[&str], ttl: u32) -> Result<Answer, DnsError> {
        Ok(Answer {
            records: Records::Txt(v.iter().map(|s| s.to_string()).collect()),
            ttl,
        })
    }

    #[test]
    fn ttl_is_clamped_and_failures_back_off_up_to_the_max_and_never_past_staleness() {
        let t = timing();
        let now = Instant::now();
        let mut e = entry();
        update(&mut e, txt(&["a"], 1), now, &t);
        assert_eq!(e.due, Some(now + t.min));
        update(&mut e, txt(&["a"], 100_000), now, &t);
        assert_eq!(e.due, Some(now + t.max));
        update(&mut e, txt(&["a"], 60), now, &t);
        assert_eq!(e.due, Some(now + Duration::from_secs(60)));
        let mut waits = Vec::new();
        for _ in 0..8 {
            update(&mut e, Err(DnsError::NoAnswer), now, &t);
            waits.push(e.due.unwrap() - now);
        }
        assert_eq!(waits[0], Duration::from_secs(5));
        assert_eq!(waits[1], Duration::from_secs(10));
        assert_eq!(waits[7], Duration::from_secs(300));
        // Still the good answer.
        assert_eq!(
            e.view(now, t.max_stale),
            View::Good(Records::Txt(vec!["a".into()]))
        );
        // Near staleness the next look-up is at the moment it turns stale.
        let old = now - t.max_stale + Duration::from_secs(2);
        e.failing_since = Some(old);
        update(&mut e, Err(DnsError::NoAnswer), now, &t);
        assert!(e.due.unwrap() - now <= Duration::from_secs(3));
        let later = now + Duration::from_secs(3);
        assert_eq!(e.view(later, t.max_stale), View::Stale);
        let err = e.result(later, t.max_stale).unwrap_err().to_string();
        assert!(err.contains("no answer") && err.contains("1h"), "{err}");
    }

    #[test]
    fn intervals_of_a_thousand_years_never_panic() {
        let huge = Duration::from_secs(1000 * 365 * 24 * 3600);
        let t = Timing {
            min: huge,
            max: huge,
            max_stale: huge,
        };
        let now = Instant::now();
        let mut e = entry();
        update(&mut e, txt(&["a"], u32::MAX), now, &t);
        assert!(e.due.unwrap() > now);
        for _ in 0..40 {
            update(&mut e, Err(DnsError::NoAnswer), now, &t);
        }
        assert!(e.due.unwrap() > now);
        let tr = Tracker::new(DnsConfig::default(), t);
        tr.lock().entries.insert(Query::new(Kind::Txt, "x"), e);
        let due = tr.take_due(now);
        assert!(due.queries.is_empty() && due.next.is_some());
    }

    #[test]
    fn a_negative_answer_fails_and_a_good_one_clears_it() {
        let t = timing();
        let now = Instant::now();
        let mut e = entry();
        update(&mut e, txt(&["a"], 1), now, &t);
        let q = Query::new(Kind::Txt, "flag.example.");
        assert_eq!(q.name, "flag.example");
        update(
            &mut e,
            Err(DnsError::NoSuchName {
                kind: Kind::Txt,
                name: q.name.clone(),
                ttl: None,
            }),
            now,
            &t,
        );
        let err = e.result(now, t.max_stale).unwrap_err().to_string();
        assert!(
            err.contains("NXDOMAIN") && err.contains("flag.example"),
            "{err}"
        );
        update(&mut e, txt(&["b"], 1), now, &t);
        assert_eq!(
            e.result(now, t.max_stale).unwrap(),
            Records::Txt(vec!["b".into()])
        );
    }

    #[test]
    fn resources_share_entries_and_unused_ones_are_dropped() {
        let tr = Tracker::new(DnsConfig::default(), timing());
        let q = Query::new(Kind::Txt, "x.example");
        {
            let mut s = tr.lock();
            let mut e = entry();
            update(&mut e, txt(&["v"], 30), Instant::now(), &timing());
            s.entries.insert(q.clone(), e);
        }
        for r in ["a", "b"] {
            tr.begin(r);
            assert_eq!(tr.lookup(r, &q).unwrap(), Records::Txt(vec!["v".into()]));
            tr.finish(r, true);
        }
        assert_eq!(tr.asked(), 0, "answered from the entry");
        assert_eq!(tr.status()[0].resources, ["a", "b"]);
        // a renders without it: b keeps it.
        tr.begin("a");
        tr.finish("a", true);
        assert_eq!(tr.status()[0].resources, ["b"]);
        tr.retain(&BTreeSet::new());
        assert!(tr.status().is_empty());
    }

    #[test]
    fn an_unchanged_or_reordered_answer_renders_nothing() {
        let tr = Tracker::new(DnsConfig::default(), timing());
        let q = Query::new(Kind::Txt, "x.example");
        let dns = DnsConfig::default();
        {
            let mut s = tr.lock();
            let mut e = entry();
            update(&mut e, txt(&["a", "b"], 30), Instant::now(), &timing());
            e.shown = e.view(Instant::now(), timing().max_stale);
            e.resources.insert("r".into());
            s.entries.insert(q.clone(), e);
        }
        assert_eq!(tr.answered(&q, &dns, txt(&["a", "b"], 30)), None);
        assert_eq!(tr.answered(&q, &dns, Err(DnsError::NoAnswer)), None);
        assert_eq!(tr.answered(&q, &dns, txt(&["a", "b"], 30)), None);
        assert_eq!(
            tr.answered(&q, &dns, txt(&["a", "c"], 30)),
            Some(vec!["r".to_string()])
        );
    }

    #[test]
    fn a_good_answer_turning_stale_is_found_without_a_look_up() {
        let t = Timing {
            max_stale: Duration::from_secs(10),
            ..timing()
        };
        let tr = Tracker::new(DnsConfig::default(), t);
        let q = Query::new(Kind::Txt, "x.example");
        let now = Instant::now();
        {
            let mut s = tr.lock();
            let mut e = entry();
            update(&mut e, txt(&["a"], 5), now - Duration::from_secs(20), &t);
            e.shown = View::Good(Records::Txt(vec!["a".into()]));
            e.due = None; // a look-up under way, hung
            e.resources.insert("r".into());
            s.entries.insert(q.clone(), e);
        }
        let due = tr.take_due(now);
        assert!(due.queries.is_empty());
        assert_eq!(due.stale, ["r"]);
        assert!(tr.take_due(now).stale.is_empty(), "said once");
    }

    /// Finding 1 of issue 12: a `dns_max_stale` shorter than the refresh
    /// interval must not fail a name whose look-ups all succeed.
    #[test]
    fn a_short_max_stale_never_fails_a_name_whose_look_ups_succeed() {
        let t = Timing {
            min: Duration::from_secs(5),
            max: Duration::from_secs(30),
            max_stale: Duration::from_secs(15),
        };
        let tr = Tracker::new(DnsConfig::default(), t);
        let q = Query::new(Kind::Txt, "flag.svc.test");
        let dns = DnsConfig::default();
        let t0 = Instant::now() - Duration::from_secs(100);
        {
            let mut s = tr.lock();
            let mut e = entry();
            update(&mut e, txt(&["readonly=true"], 100), t0, &t);
            e.shown = e.view(t0, t.max_stale);
            e.resources.insert("r".into());
            s.entries.insert(q.clone(), e);
        }
        // 16 s after the good answer, before its refresh (at 30 s): good.
        let at16 = t0 + Duration::from_secs(16);
        assert!(tr.take_due(at16).stale.is_empty());
        assert!(tr.lock().entries[&q].result(at16, t.max_stale).is_ok());
        // The refresh, the same answer: nothing to render.
        assert_eq!(tr.answered(&q, &dns, txt(&["readonly=true"], 100)), None);
        // Look-ups fail: good for max_stale from the first failure, then stale.
        let mut s = tr.lock();
        let e = s.entries.get_mut(&q).unwrap();
        let f = Instant::now();
        update(e, Err(DnsError::NoAnswer), f, &t);
        update(e, Err(DnsError::NoAnswer), f + Duration::from_secs(10), &t);
        assert!(e.result(f + Duration::from_secs(14), t.max_stale).is_ok());
        let err = e
            .result(f + Duration::from_secs(16), t.max_stale)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no good answer for 16s"), "{err}");
        // A hung look-up (no error at all) still says something.
        e.error = None;
        let err = e
            .result(f + Duration::from_secs(16), t.max_stale)
            .unwrap_err()
            .to_string();
        assert!(!err.ends_with(": "), "{err}");
    }

    /// Issue 12, finding 3: a render failing on one name keeps the
    /// resource's other names as its dependencies until a render succeeds.
    #[test]
    fn a_failed_render_keeps_the_previous_dependencies() {
        let tr = Tracker::new(DnsConfig::default(), timing());
        let (a, b) = (
            Query::new(Kind::Txt, "a.test"),
            Query::new(Kind::Txt, "b.test"),
        );
        {
            let mut s = tr.lock();
            for q in [&a, &b] {
                let mut e = entry();
                update(&mut e, txt(&["v"], 30), Instant::now(), &timing());
                s.entries.insert(q.clone(), e);
            }
        }
        let names =
            |tr: &Tracker| -> Vec<String> { tr.status().into_iter().map(|d| d.name).collect() };
        tr.begin("r");
        tr.lookup("r", &a).unwrap();
        tr.lookup("r", &b).unwrap();
        tr.finish("r", true);
        assert_eq!(names(&tr), ["a.test", "b.test"]);
        // Fails on a: b was not asked for, and stays.
        tr.begin("r");
        tr.lookup("r", &a).unwrap();
        tr.finish("r", false);
        assert_eq!(names(&tr), ["a.test", "b.test"]);
        assert_eq!(tr.status()[1].resources, ["r"]);
        // A good render without b drops it.
        tr.begin("r");
        tr.lookup("r", &a).unwrap();
        tr.finish("r", true);
        assert_eq!(names(&tr), ["a.test"]);
    }

    /// Issue 12, finding 4: an answer the render could not use (no address
    /// of the family asked for) shows the dependency failing.
    #[test]
    fn an_unusable_answer_shows_the_dependency_failing_until_a_good_render() {
        let tr = Tracker::new(DnsConfig::default(), timing());
        let q = Query::new(Kind::Ip, "v4only.test");
        {
            let mut s = tr.lock();
            let mut e = entry();
            let a = Answer {
                records: Records::Ip(vec!["10.0.0.1".parse().unwrap()]),
                ttl: 30,
            };
            update(&mut e, Ok(a), Instant::now(), &timing());
            s.entries.insert(q.clone(), e);
        }
        tr.begin("r");
        tr.lookup("r", &q).unwrap();
        tr.unusable("r", &q, "no IPv6 address for v4only.test");
        tr.finish("r", false);
        let d = &tr.status()[0];
        assert!(d.failing, "{d:?}");
        assert_eq!(d.error.as_deref(), Some("no IPv6 address for v4only.test"));
        tr.begin("r");
        tr.lookup("r", &q).unwrap();
        tr.finish("r", true);
        let d = &tr.status()[0];
        assert!(!d.failing && d.error.is_none(), "{d:?}");
    }
}
