//! `liveconf fleet wait`: block until every live host's files reflect a
//! revision, or say who is not there.
//!
//! The target is a revision (etcd's current one when the command starts,
//! or `--revision N`). A resource on a host *reflects* it when the
//! revision its file was rendered from is at or after the newest change
//! of its keys up to the target — a put (the newest `mod_revision` under
//! its watched prefixes, read at the target revision) or a delete (found
//! in etcd's recent history, see [`DELETE_WINDOW`]) — and its last
//! attempt succeeded. A resource whose keys did not change keeps its older
//! revision and is not behind: this is `liveconf fleet`'s own rule
//! ([`ResourceReport::newest_change`]), with the newest change bounded by
//! the target.
//!
//! The reports are read once, then *watched* (an etcd watch on
//! [`REPORT_PREFIX`] from the read's revision + 1): every report a host
//! publishes is judged as it arrives, so the wait ends within a report's
//! round trip of the last host getting there. A host whose report goes
//! away during the wait (its daemon stopped, or its lease expired) is
//! *gone*. Prints nothing, picks no exit code (`cli.rs` does).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use etcd_client::{Client, EventType, GetOptions, WatchOptions};
use serde::Serialize;
use tokio::time::Instant;

use crate::backend::etcd::{Connection, EtcdError, describe, range_of};
use crate::backend::etcd_watch::{PROGRESS_EVERY, alive};
use crate::fleet::{
    FleetError, HostState, REGISTRY_PREFIX, REPORT_PREFIX, Report, ResourceReport, newest_put,
    parse_report, report_node,
};

/// How far back (in revisions before the target) etcd's history is read
/// for deletes under the watched prefixes: a delete leaves no
/// `mod_revision` to range over. Older deletes are not looked for (a host
/// that missed one is `liveconf fleet`'s *diverging*).
pub const DELETE_WINDOW: i64 = 10_000;

/// What to wait for.
#[derive(Clone, Debug)]
pub struct WaitFor {
    /// The revision to reflect; `None`: etcd's current one.
    pub revision: Option<i64>,
    /// Give up (and name who is not there) after this long.
    pub timeout: Duration,
    /// Only these resources (empty: every resource).
    pub resources: Vec<String>,
    /// Only the hosts whose node name matches this glob.
    pub hosts: Option<String>,
    /// Hosts already gone when the wait begins are accepted (otherwise
    /// they fail it, named, once every live host is there).
    pub allow_gone: bool,
}

/// Why `fleet wait` could not wait.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// etcd could not be read.
    #[error(transparent)]
    Fleet(#[from] FleetError),
    /// `--hosts` is not a glob.
    #[error("--hosts {pattern:?} is not a valid glob: {source}")]
    Glob {
        /// The pattern.
        pattern: String,
        /// Why.
        source: globset::Error,
    },
    /// `--revision` is newer than anything etcd holds.
    #[error(
        "--revision {asked} is newer than etcd's current revision {current}: give a revision etcd has reached (leave --revision out to wait for the current one)"
    )]
    Future {
        /// The revision asked for.
        asked: i64,
        /// etcd's revision.
        current: i64,
    },
    /// `--revision` is older than etcd's history.
    #[error(
        "--revision {asked} has been compacted in etcd: the keys as they were then cannot be read; give a newer revision (or leave --revision out)"
    )]
    Compacted {
        /// The revision asked for.
        asked: i64,
    },
    /// No live host publishes a report (in the `--hosts` scope).
    #[error("{0}")]
    NoHosts(String),
    /// A `--resource` no live host reports.
    #[error(
        "no live host reports resource {name}{known}: check the name (liveconf fleet lists what the hosts report)"
    )]
    UnknownResource {
        /// The name given.
        name: String,
        /// ", known: a, b" (empty when nothing is known).
        known: String,
    },
    /// The endpoint in use failed (no answer within the request timeout,
    /// a closed watch): the wait moves to the next one. Never returned by
    /// [`wait`], which names the endpoints when none is left.
    #[error("{0}")]
    Lost(String),
}

/// How long to pause between two rounds of the endpoints when none
/// answered.
const ROUND_PAUSE: Duration = Duration::from_millis(500);

impl From<etcd_client::Error> for WaitError {
    fn from(e: etcd_client::Error) -> WaitError {
        WaitError::Fleet(FleetError::Request(e))
    }
}

/// How a wait ended.
#[derive(Clone, Debug, Serialize)]
pub struct Waited {
    /// The revision waited for.
    pub revision: i64,
    /// Every live host reflects it, and none went away.
    pub ok: bool,
    /// The wait ended at `--timeout` (hosts still behind or failing).
    pub timed_out: bool,
    /// How long the command waited, in seconds.
    pub elapsed_seconds: f64,
    /// The host that got there last and when (seconds after the wait
    /// began); none when every host was already there.
    pub slowest: Option<Slowest>,
    /// Every host waited for, with what keeps it from the revision (none
    /// when it is there).
    pub hosts: Vec<HostWait>,
    /// Registered hosts without a live report when the wait began: not
    /// waited for; unless `--allow-gone`, also among `hosts` as gone (and
    /// the wait is not ok).
    pub not_waited_for: Vec<String>,
    /// Timed out with etcd not answering a read at the end: the hosts
    /// above are as its last answer had them (they may be there by now).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub etcd_silent: Option<String>,
}

/// How long the read that tells whether etcd still answers at a timeout
/// may take (the wait is already over its `--timeout`).
const LAST_READ: Duration = Duration::from_secs(1);

/// The host that took longest.
#[derive(Clone, Debug, Serialize)]
pub struct Slowest {
    /// The node.
    pub node: String,
    /// Seconds after the wait began.
    pub seconds: f64,
}

/// One host's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct HostWait {
    /// The node, and each problem ("behind: ...", "failing: ...",
    /// "missing: ...", "gone: ...").
    #[serde(flatten)]
    pub state: HostState,
    /// Seconds after the wait began that it reflected the revision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
}

/// Where a host stands.
struct Tracked {
    /// When it was first seen reflecting the revision (reset if it stops).
    done_at: Option<Duration>,
}

/// The wait's state: the reports as etcd holds them, the newest change of
/// each watched prefix, the hosts followed.
struct Fleet {
    target: i64,
    hosts: Option<globset::GlobMatcher>,
    resources: Vec<String>,
    reports: BTreeMap<String, Report>,
    /// Newest change (put or delete) up to the target, per watched prefix.
    newest: BTreeMap<String, i64>,
    tracked: BTreeMap<String, Tracked>,
}

impl Fleet {
    fn in_scope(&self, node: &str) -> bool {
        self.hosts.as_ref().is_none_or(|g| g.is_match(node))
    }

    fn wanted(&self, name: &str) -> bool {
        self.resources.is_empty() || self.resources.iter().any(|r| r == name)
    }

    /// The watched prefixes of the resources waited for whose newest
    /// change is not known yet.
    fn unknown_prefixes(&self) -> Vec<String> {
        let mut out = BTreeSet::new();
        for (node, r) in &self.reports {
            if !self.in_scope(node) {
                continue;
            }
            for (name, res) in &r.resources {
                if self.wanted(name) {
                    out.extend(
                        res.watched
                            .iter()
                            .filter(|w| !self.newest.contains_key(*w))
                            .cloned(),
                    );
                }
            }
        }
        out.into_iter().collect()
    }

    /// What keeps `res` (resource `name`) from reflecting the target.
    fn problems(&self, name: &str, res: &ResourceReport) -> Vec<String> {
        let newest = res.newest_change(&self.newest);
        let rev = res.revision.unwrap_or(0);
        let mut out = res.failing_and_missing(name);
        if rev < newest {
            out.push(format!(
                "behind: {name} at revision {rev}, its keys changed at {newest}"
            ));
        }
        out
    }

    /// Each followed host's problems (none: it is there), gone hosts
    /// included.
    fn judge(&self) -> BTreeMap<String, Vec<String>> {
        let mut out = BTreeMap::new();
        for node in self.tracked.keys() {
            let problems = match self.reports.get(node) {
                None => vec![
                    "gone: its report disappeared during the wait (its daemon stopped, or lost etcd for longer than report_ttl)"
                        .to_string(),
                ],
                Some(r) => r
                    .resources
                    .iter()
                    .filter(|(name, _)| self.wanted(name))
                    .flat_map(|(name, res)| self.problems(name, res))
                    .collect(),
            };
            out.insert(node.clone(), problems);
        }
        out
    }

    /// Follows every live host in scope (with `--resource`, the hosts
    /// reporting one of them); records when each got there.
    fn update(&mut self, elapsed: Duration) -> BTreeMap<String, Vec<String>> {
        let live: Vec<String> = self
            .reports
            .iter()
            .filter(|(n, r)| {
                self.in_scope(n)
                    && (self.resources.is_empty() || r.resources.keys().any(|k| self.wanted(k)))
            })
            .map(|(n, _)| n.clone())
            .collect();
        for node in live {
            self.tracked
                .entry(node)
                .or_insert(Tracked { done_at: None });
        }
        let judged = self.judge();
        for (node, problems) in &judged {
            if let Some(t) = self.tracked.get_mut(node) {
                if problems.is_empty() {
                    t.done_at.get_or_insert(elapsed);
                } else {
                    t.done_at = None;
                }
            }
        }
        judged
    }
}

/// Waits as `what` says; returns how it ended (errors: etcd could not be
/// read, or the request cannot be waited for).
pub async fn wait(conn: &Connection, what: &WaitFor) -> Result<Waited, WaitError> {
    let started = Instant::now();
    let deadline = started + what.timeout;
    let hosts = what
        .hosts
        .as_deref()
        .map(|p| {
            globset::Glob::new(p)
                .map(|g| g.compile_matcher())
                .map_err(|source| WaitError::Glob {
                    pattern: p.to_string(),
                    source,
                })
        })
        .transpose()?;
    let (mut link, reports, current) = Link::open(conn).await?;
    let limit = conn.request_timeout;
    let target = match what.revision {
        Some(n) if n > current => return Err(WaitError::Future { asked: n, current }),
        Some(n) => n,
        None => current,
    };
    let mut fleet = Fleet {
        target,
        hosts,
        resources: what.resources.clone(),
        reports,
        newest: BTreeMap::new(),
        tracked: BTreeMap::new(),
    };
    check_scope(&fleet).map_err(|e| match e {
        WaitError::NoHosts(m) => WaitError::NoHosts(m.replacen(
            "--hosts",
            &format!("--hosts {:?}", what.hosts.as_deref().unwrap_or_default()),
            1,
        )),
        e => e,
    })?;
    // Each step through the endpoint is bounded; one that fails moves the
    // wait to the next endpoint (the watch below resumes from the revision
    // reached, so nothing read now is lost).
    let not_waited_for = loop {
        match bounded(limit, gone_before(&mut link.client, &fleet)).await {
            Ok(v) => break v,
            Err(e) => {
                link.recover(e, deadline).await?;
            }
        }
    };
    loop {
        let explicit = what.revision.is_some();
        match learn_newest(&mut link.client, &mut fleet, explicit, limit).await {
            Ok(()) => break,
            Err(e) => {
                link.recover(e, deadline).await?;
            }
        }
    }
    let mut judged = fleet.update(Duration::ZERO);
    let mut said = false;
    let mut watch_from = current + 1;
    let mut timed_out = false;
    loop {
        if settled(&judged) {
            break;
        }
        if !said {
            eprintln!("{}", waiting_line(&judged, target, what.timeout));
            said = true;
        }
        let mut follow = Follow {
            fleet: &mut fleet,
            watch_from: &mut watch_from,
            judged: &mut judged,
            started,
            deadline,
        };
        match follow.run(&mut link).await {
            Ok(Followed::Settled) => break,
            Ok(Followed::TimedOut) => {
                timed_out = true;
                break;
            }
            Ok(Followed::Again) => {}
            Err(e) => {
                // Another endpoint (or none before the deadline: an
                // error naming them): the reports as they are now, and
                // the watch from there.
                let (reports, rev) = link.recover(e, deadline).await?;
                fleet.reports = reports;
                watch_from = rev + 1;
            }
        }
    }
    let hosts: Vec<HostWait> = judged
        .into_iter()
        .map(|(node, problems)| HostWait {
            seconds: fleet
                .tracked
                .get(&node)
                .and_then(|t| t.done_at)
                .filter(|_| problems.is_empty())
                .map(|d| d.as_secs_f64()),
            state: HostState { node, problems },
        })
        .collect();
    // A host gone when the wait began whose report came back during it was
    // followed like any other (and judged above): it is no longer gone.
    let not_waited_for: Vec<String> = not_waited_for
        .into_iter()
        .filter(|n| !fleet.tracked.contains_key(n))
        .collect();
    let mut hosts = hosts;
    if !what.allow_gone {
        // Their files may be stale (a daemon killed keeps the service on
        // its last files): named, not waited for.
        for node in &not_waited_for {
            hosts.push(HostWait {
                state: HostState {
                    node: node.clone(),
                    problems: vec![format!(
                        "gone: no live report when the wait began (its daemon stopped, or lost etcd for longer than report_ttl): its files may be stale; --allow-gone accepts it, liveconf fleet --forget {node} forgets a host removed on purpose"
                    )],
                },
                seconds: None,
            });
        }
        hosts.sort_by(|a, b| a.state.node.cmp(&b.state.node));
    }
    let ok = hosts.iter().all(|h| h.state.problems.is_empty());
    let opts = GetOptions::new().with_count_only();
    let etcd_silent = match timed_out && !ok {
        true => match tokio::time::timeout(LAST_READ, link.client.get(REPORT_PREFIX, Some(opts)))
            .await
        {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(link.conn.explain(describe(&e))),
            Err(_) => Some(format!(
                "a read got no answer within {}",
                humantime::format_duration(LAST_READ)
            )),
        }
        .map(|why| format!("etcd at {}: {why}", link.endpoint())),
        false => None,
    };
    let slowest = hosts
        .iter()
        .filter_map(|h| h.seconds.map(|s| (h, s)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        // All there when the wait began: nobody was slow.
        .filter(|(_, s)| *s > 0.0)
        .map(|(h, s)| Slowest {
            node: h.state.node.clone(),
            seconds: s,
        });
    Ok(Waited {
        revision: target,
        ok,
        timed_out: timed_out && !ok,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        slowest,
        hosts,
        not_waited_for,
        etcd_silent,
    })
}

/// How one watch of the reports ended.
enum Followed {
    /// Nothing more can happen (see [`settled`]).
    Settled,
    /// `--timeout` expired.
    TimedOut,
    /// The watch was cancelled (compacted past its start): the reports
    /// were read again, watch again from there.
    Again,
}

/// One watch of the reports, from `watch_from`, judging each report as it
/// comes.
struct Follow<'f> {
    fleet: &'f mut Fleet,
    watch_from: &'f mut i64,
    judged: &'f mut BTreeMap<String, Vec<String>>,
    started: Instant,
    deadline: Instant,
}

impl Follow<'_> {
    /// Errors: the endpoint failed ([`WaitError::Lost`], or what etcd
    /// said), or the wait cannot go on.
    async fn run(&mut self, link: &mut Link<'_>) -> Result<Followed, WaitError> {
        let conn = link.conn;
        let limit = conn.request_timeout;
        learn_newest(&mut link.client, self.fleet, false, limit).await?;
        *self.judged = self.fleet.update(self.started.elapsed());
        if settled(self.judged) {
            return Ok(Followed::Settled);
        }
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(*self.watch_from);
        let watched = tokio::time::timeout(limit, link.client.watch(REPORT_PREFIX, Some(opts)));
        let mut stream = match watched.await {
            Ok(r) => r?,
            Err(_) => return Err(no_answer(limit)),
        };
        // A quiet watch is asked nothing (etcd 3.4's grpc-proxy never
        // answers progress requests): a read on the same connection, as
        // the daemon's watcher does, tells a quiet fleet from a dead or
        // hung endpoint.
        let mut ticker = tokio::time::interval_at(Instant::now() + PROGRESS_EVERY, PROGRESS_EVERY);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_message = Instant::now();
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = tokio::time::sleep_until(self.deadline) => return Ok(Followed::TimedOut),
                _ = ticker.tick() => {
                    if last_message.elapsed() >= PROGRESS_EVERY {
                        if alive(conn, &mut link.client, REPORT_PREFIX).await.is_none() {
                            return Err(WaitError::Lost(format!(
                                "the watch was quiet for {}s and a read got no answer within {}",
                                last_message.elapsed().as_secs(),
                                humantime::format_duration(limit)
                            )));
                        }
                        last_message = Instant::now();
                    }
                    continue;
                }
            };
            last_message = Instant::now();
            let resp = match msg {
                Ok(Some(resp)) => resp,
                Ok(None) => return Err(WaitError::Lost("the watch stream was closed".into())),
                Err(e) => return Err(WaitError::Lost(conn.explain(describe(&e)))),
            };
            if resp.canceled() {
                // Compacted past the resume point: read again.
                let (reports, rev) = bounded(limit, read_reports(&mut link.client)).await?;
                self.fleet.reports = reports;
                *self.watch_from = rev + 1;
                return Ok(Followed::Again);
            }
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                *self.watch_from = (*self.watch_from).max(kv.mod_revision() + 1);
                match ev.event_type() {
                    EventType::Put => {
                        if let Some((node, r)) = parse_report(kv.key(), kv.value()) {
                            self.fleet.reports.insert(node, r);
                        }
                    }
                    EventType::Delete => {
                        if let Some(node) = report_node(kv.key()) {
                            self.fleet.reports.remove(&node);
                        }
                    }
                }
            }
            if resp.events().is_empty() {
                continue;
            }
            learn_newest(&mut link.client, self.fleet, false, limit).await?;
            *self.judged = self.fleet.update(self.started.elapsed());
            if settled(self.judged) {
                return Ok(Followed::Settled);
            }
        }
    }
}

/// The endpoint the wait reads through. When it fails, the wait moves to
/// the next one of the list, round-robin (as the daemon does), until one
/// answers or `--timeout` expires.
struct Link<'c> {
    conn: &'c Connection,
    /// Index of the endpoint in use in `conn.endpoints`.
    idx: usize,
    client: Client,
}

impl<'c> Link<'c> {
    /// The first endpoint, in the order given, that answers a read of the
    /// reports; that read and its revision.
    async fn open(
        conn: &'c Connection,
    ) -> Result<(Link<'c>, BTreeMap<String, Report>, i64), WaitError> {
        let mut failures: Vec<(String, String)> = Vec::new();
        for (idx, endpoint) in conn.endpoints.iter().enumerate() {
            match reach(conn, endpoint).await {
                Ok((client, reports, rev)) => {
                    if !failures.is_empty() {
                        tracing::warn!(
                            "etcd: using {endpoint}; unreachable: {}",
                            listed(&failures)
                        );
                    }
                    return Ok((Link { conn, idx, client }, reports, rev));
                }
                Err(e) => match endpoint_failure(conn, &e) {
                    Some(why) => failures.push((endpoint.clone(), why)),
                    None => return Err(e),
                },
            }
        }
        Err(WaitError::Fleet(FleetError::Connect(
            match failures.len() {
                1 => {
                    let (endpoints, message) = failures.remove(0);
                    EtcdError::Unavailable { endpoints, message }
                }
                _ => EtcdError::Unavailable {
                    endpoints: conn.endpoints.join(","),
                    message: format!("no endpoint answered ({})", listed(&failures)),
                },
            },
        )))
    }

    fn endpoint(&self) -> &str {
        self.conn
            .endpoints
            .get(self.idx)
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// After `e`: when it is the endpoint's failure, moves to the next
    /// endpoint that answers (round-robin, the failed one last), logging
    /// one line, and returns the reports read there and their revision;
    /// tries again until `deadline`, then fails naming every endpoint and
    /// what it did. Any other error is returned as it is.
    async fn recover(
        &mut self,
        e: WaitError,
        deadline: Instant,
    ) -> Result<(BTreeMap<String, Report>, i64), WaitError> {
        let Some(why) = endpoint_failure(self.conn, &e) else {
            return Err(e);
        };
        let failed = self.endpoint().to_string();
        tracing::debug!("fleet wait: {failed}: {why}");
        let mut failures = vec![(failed.clone(), why.clone())];
        let n = self.conn.endpoints.len();
        loop {
            for k in 1..=n {
                let idx = (self.idx + k) % n;
                let endpoint = self.conn.endpoints[idx].clone();
                match tokio::time::timeout_at(deadline, reach(self.conn, &endpoint)).await {
                    Err(_) => return Err(gave_up(self.conn, &failures)),
                    Ok(Ok((client, reports, rev))) => {
                        tracing::warn!(
                            "fleet wait: {failed}: {why}; moving to {endpoint} (resuming the watch of the reports from revision {rev})"
                        );
                        self.idx = idx;
                        self.client = client;
                        return Ok((reports, rev));
                    }
                    Ok(Err(e)) => match endpoint_failure(self.conn, &e) {
                        Some(m) => {
                            failures.retain(|(f, _)| *f != endpoint);
                            failures.push((endpoint, m));
                        }
                        None => return Err(e),
                    },
                }
            }
            if Instant::now() + ROUND_PAUSE >= deadline {
                return Err(gave_up(self.conn, &failures));
            }
            tokio::time::sleep(ROUND_PAUSE).await;
        }
    }
}

/// Connects to `endpoint` and reads the reports there (bounded by the
/// request timeout): only an answer proves the endpoint is there.
async fn reach(
    conn: &Connection,
    endpoint: &str,
) -> Result<(Client, BTreeMap<String, Report>, i64), WaitError> {
    let mut client = conn.connect_to(endpoint).await.map_err(FleetError::from)?;
    let (reports, rev) = bounded(conn.request_timeout, read_reports(&mut client)).await?;
    Ok((client, reports, rev))
}

/// "a: why; b: why".
fn listed(failures: &[(String, String)]) -> String {
    failures
        .iter()
        .map(|(e, m)| format!("{e}: {m}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// No endpoint answered until `--timeout`: each one and what it did last.
fn gave_up(conn: &Connection, failures: &[(String, String)]) -> WaitError {
    WaitError::Fleet(FleetError::Connect(EtcdError::Unavailable {
        endpoints: conn.endpoints.join(","),
        message: format!(
            "fleet wait lost etcd and no endpoint answered again before --timeout ({})",
            listed(failures)
        ),
    }))
}

/// Why the endpoint failed, when `e` is its failure (no answer, a lost
/// connection, etcd unavailable there) rather than the request's.
fn endpoint_failure(conn: &Connection, e: &WaitError) -> Option<String> {
    use etcd_client::Error as E;
    match e {
        WaitError::Lost(why) => Some(why.clone()),
        WaitError::Fleet(FleetError::Connect(EtcdError::Unavailable { message, .. })) => {
            Some(message.clone())
        }
        WaitError::Fleet(FleetError::Request(err)) => match err {
            E::GRpcStatus(st)
                if !matches!(
                    st.code(),
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::Aborted
                        | tonic::Code::Internal
                ) =>
            {
                None
            }
            E::GRpcStatus(_)
            | E::TransportError(_)
            | E::IoError(_)
            | E::WatchError(_)
            | E::EndpointError(_) => Some(conn.explain(describe(err))),
            _ => None,
        },
        _ => None,
    }
}

/// "no answer within 1s", as an endpoint failure.
fn no_answer(limit: Duration) -> WaitError {
    WaitError::Lost(format!(
        "no answer within {}",
        humantime::format_duration(limit)
    ))
}

/// `f`, or [`no_answer`] after `limit`.
async fn bounded<T>(
    limit: Duration,
    f: impl std::future::Future<Output = Result<T, WaitError>>,
) -> Result<T, WaitError> {
    tokio::time::timeout(limit, f)
        .await
        .unwrap_or_else(|_| Err(no_answer(limit)))
}

/// Nothing more can happen: every host present is there (a gone host
/// cannot get there unless it comes back, and the others are done).
fn settled(judged: &BTreeMap<String, Vec<String>>) -> bool {
    judged
        .values()
        .all(|p| p.is_empty() || p.iter().all(|p| p.starts_with("gone:")))
}

/// "waiting up to 60s (--timeout) for host2 (behind: x at ...), ... to
/// reflect revision 130...": what the wait is for, on one line (stderr).
fn waiting_line(judged: &BTreeMap<String, Vec<String>>, target: i64, timeout: Duration) -> String {
    let pending: Vec<(&String, &Vec<String>)> =
        judged.iter().filter(|(_, p)| !p.is_empty()).collect();
    let hosts = crate::fleet::shown_hosts(
        pending
            .iter()
            .map(|(node, p)| format!("{node} ({})", p.join("; "))),
        pending.len(),
    );
    format!(
        "waiting up to {} (--timeout) for {hosts} to reflect revision {target}...",
        humantime::format_duration(timeout),
    )
}

/// Every live report, and the revision they were read at.
async fn read_reports(client: &mut Client) -> Result<(BTreeMap<String, Report>, i64), WaitError> {
    let resp = client
        .get(REPORT_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    let rev = resp.header().map(|h| h.revision()).unwrap_or(0);
    let reports = resp
        .kvs()
        .iter()
        .filter_map(|kv| parse_report(kv.key(), kv.value()))
        .collect();
    Ok((reports, rev))
}

/// Refuses a wait on nothing: no live host in scope, or a `--resource`
/// no host in scope reports.
fn check_scope(fleet: &Fleet) -> Result<(), WaitError> {
    let live: Vec<&Report> = fleet
        .reports
        .iter()
        .filter(|(n, _)| fleet.in_scope(n))
        .map(|(_, r)| r)
        .collect();
    if live.is_empty() {
        return Err(WaitError::NoHosts(if fleet.reports.is_empty() {
            format!(
                "no host publishes a fleet report under {REPORT_PREFIX}: start the daemons with --report (report = true)"
            )
        } else {
            format!(
                "no live host matches --hosts (live: {})",
                fleet.reports.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        }));
    }
    let known: BTreeSet<&String> = live.iter().flat_map(|r| r.resources.keys()).collect();
    for name in &fleet.resources {
        if !known.contains(name) {
            return Err(WaitError::UnknownResource {
                name: name.clone(),
                known: if known.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (known: {})",
                        known
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
            });
        }
    }
    Ok(())
}

/// Registered hosts (in scope) without a live report: gone before the
/// wait began, so not waited for.
async fn gone_before(client: &mut Client, fleet: &Fleet) -> Result<Vec<String>, WaitError> {
    let resp = client
        .get(
            REGISTRY_PREFIX,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    Ok(resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            String::from_utf8_lossy(kv.key())
                .strip_prefix(REGISTRY_PREFIX)
                .map(str::to_string)
        })
        .filter(|n| fleet.in_scope(n) && !fleet.reports.contains_key(n))
        .collect())
}

/// Reads the newest change up to the target of every watched prefix not
/// known yet (hosts may appear during the wait). `explicit`: the target
/// came from `--revision` (a compacted one is the user's mistake).
async fn learn_newest(
    client: &mut Client,
    fleet: &mut Fleet,
    explicit: bool,
    limit: Duration,
) -> Result<(), WaitError> {
    let prefixes = fleet.unknown_prefixes();
    if prefixes.is_empty() {
        return Ok(());
    }
    let mut puts = BTreeMap::new();
    for w in &prefixes {
        let put = tokio::time::timeout(limit, newest_put(client, w, Some(fleet.target)));
        let rev = match put.await.map_err(|_| no_answer(limit))? {
            Ok(rev) => rev,
            Err(e) if explicit && e.to_string().contains("compacted") => {
                return Err(WaitError::Compacted {
                    asked: fleet.target,
                });
            }
            Err(e) => return Err(e.into()),
        };
        puts.insert(w.clone(), rev);
    }
    let floor = puts.values().copied().min().unwrap_or(0);
    let deletes = newest_deletes(client, &prefixes, floor, fleet.target, limit).await?;
    for (w, put) in puts {
        let del = deletes.get(&w).copied().unwrap_or(0);
        fleet.newest.insert(w, put.max(del));
    }
    Ok(())
}

/// `[start, end)` of a watched prefix's keys.
type KeyRange = (Vec<u8>, Vec<u8>);

/// The newest delete under each of `prefixes` in (`floor`, `target`] (at
/// most [`DELETE_WINDOW`] revisions back), read from etcd's history: a
/// watch of the whole keyspace from there, which ends at the first event
/// at or after `target` (every revision is some write's, so one is there).
/// History compacted away is not looked for: the read starts again from
/// the compaction revision.
async fn newest_deletes(
    client: &mut Client,
    prefixes: &[String],
    floor: i64,
    target: i64,
    limit: Duration,
) -> Result<BTreeMap<String, i64>, WaitError> {
    let mut out = BTreeMap::new();
    let mut from = (floor + 1).max(target - DELETE_WINDOW + 1).max(1);
    let ranges: Vec<(&String, KeyRange)> = prefixes.iter().map(|w| (w, range_of(w))).collect();
    while from <= target {
        match deletes_from(client, &ranges, from, target, limit, &mut out).await? {
            History::Read => break,
            History::CompactedAt(at) if at > from => {
                tracing::debug!(
                    "fleet wait: etcd's history is compacted at {at}; deletes before it not looked for"
                );
                from = at;
            }
            History::CompactedAt(_) => break,
        }
    }
    Ok(out)
}

/// How a read of etcd's history ended.
enum History {
    /// Read up to the target (or given up on, quietly: deletes unknown).
    Read,
    /// Refused: compacted up to this revision.
    CompactedAt(i64),
}

/// [`newest_deletes`]'s read of the history from `from`, into `out`.
async fn deletes_from(
    client: &mut Client,
    ranges: &[(&String, KeyRange)],
    from: i64,
    target: i64,
    limit: Duration,
    out: &mut BTreeMap<String, i64>,
) -> Result<History, WaitError> {
    let opts = WatchOptions::new()
        .with_all_keys()
        .with_start_revision(from);
    let mut stream = tokio::time::timeout(limit, client.watch(vec![0u8], Some(opts)))
        .await
        .map_err(|_| no_answer(limit))??;
    // Bounded: history replays at once; a stream that says nothing for
    // this long leaves deletes unknown rather than the wait stuck.
    const QUIET: Duration = Duration::from_secs(5);
    loop {
        let resp = match tokio::time::timeout(QUIET, stream.message()).await {
            Ok(Ok(Some(resp))) => resp,
            Ok(Ok(None)) | Ok(Err(_)) | Err(_) => {
                tracing::debug!("fleet wait: etcd's history from {from} could not be read whole");
                return Ok(History::Read);
            }
        };
        if resp.canceled() {
            return Ok(History::CompactedAt(resp.compact_revision()));
        }
        let mut reached = false;
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            let rev = kv.mod_revision();
            if rev >= target {
                reached = true;
            }
            if rev > target || ev.event_type() != EventType::Delete {
                continue;
            }
            for (w, (start, end)) in ranges {
                if kv.key() >= start.as_slice() && kv.key() < end.as_slice() {
                    let e = out.entry((*w).clone()).or_insert(0);
                    *e = (*e).max(rev);
                }
            }
        }
        if reached {
            return Ok(History::Read);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(revision: i64, healthy: bool, error: Option<&str>) -> ResourceReport {
        ResourceReport {
            revision: Some(revision),
            sha256: Some("aa".into()),
            healthy,
            updated: None,
            watched: vec!["/app/x".into()],
            error: error.map(str::to_string),
            reload_owed: false,
        }
    }

    fn fleet(reports: Vec<(&str, Vec<(&str, ResourceReport)>)>, newest: i64) -> Fleet {
        Fleet {
            target: 100,
            hosts: None,
            resources: Vec::new(),
            reports: reports
                .into_iter()
                .map(|(n, rs)| {
                    (
                        n.to_string(),
                        Report {
                            node: n.into(),
                            revision: 0,
                            resources: rs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
                            dns: Vec::new(),
                        },
                    )
                })
                .collect(),
            newest: BTreeMap::from([("/app/x".to_string(), newest)]),
            tracked: BTreeMap::new(),
        }
    }

    /// A resource whose keys last changed before its revision is there,
    /// however old that revision; one behind them, or failing, is not.
    #[test]
    fn only_resources_behind_their_keys_or_failing_are_waited_for() {
        let mut f = fleet(
            vec![
                ("mw1", vec![("x", res(40, true, None))]),
                ("mw2", vec![("x", res(30, true, None))]),
                ("mw3", vec![("x", res(40, false, Some("check: exit 1")))]),
            ],
            40,
        );
        let j = f.update(Duration::ZERO);
        assert!(j["mw1"].is_empty());
        assert_eq!(
            j["mw2"],
            ["behind: x at revision 30, its keys changed at 40"]
        );
        assert_eq!(j["mw3"], ["failing: x (check: exit 1)"]);
        assert!(!settled(&j));
        // A host that goes away is gone; with the others there, settled.
        f.reports.remove("mw2");
        f.reports.remove("mw3");
        let j = f.update(Duration::from_millis(5));
        assert!(j["mw2"][0].starts_with("gone: "), "{j:?}");
        assert!(settled(&j));
    }

    #[test]
    fn hosts_and_resources_narrow_the_wait() {
        let mut f = fleet(
            vec![
                (
                    "mw1",
                    vec![("x", res(30, true, None)), ("y", res(40, true, None))],
                ),
                ("db1", vec![("x", res(30, true, None))]),
            ],
            40,
        );
        f.hosts = Some(globset::Glob::new("mw*").unwrap().compile_matcher());
        f.resources = vec!["y".into()];
        let j = f.update(Duration::ZERO);
        assert_eq!(j.keys().collect::<Vec<_>>(), ["mw1"]);
        assert!(settled(&j), "{j:?}");
        // A host without the resource is not counted among those waited for.
        f.hosts = None;
        f.tracked.clear();
        let j = f.update(Duration::ZERO);
        assert_eq!(j.keys().collect::<Vec<_>>(), ["mw1"]);
        assert!(settled(&j), "{j:?}");
        f.resources = vec!["nope".into()];
        assert!(matches!(
            check_scope(&f),
            Err(WaitError::UnknownResource { .. })
        ));
    }
}
