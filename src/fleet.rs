//! Fleet consistency: each daemon's report in etcd, and `liveconf fleet`.
//!
//! With `--report`, a daemon keeps two keys per host:
//! - `/liveconf/fleet/<node>`: its report (per resource: revision rendered,
//!   sha256, healthy, watched prefixes), attached to a lease of
//!   `report_ttl` (default [`crate::settings::DEFAULT_REPORT_TTL`]) kept alive while the daemon runs — it disappears when
//!   the host dies;
//! - `/liveconf/registry/<node>`: a registration without a lease, so a host
//!   whose report vanished is reported *gone*, not forgotten, until an
//!   operator runs `liveconf fleet --forget <node>`.
//!
//! A role that lets the host write exactly these two keys is enough.
//! `liveconf fleet` reads every report and registration and names the hosts
//! that are stale, failing, gone, or whose content diverges from their peers.

use std::collections::BTreeMap;
use std::time::Duration;

use etcd_client::{Client, GetOptions, PutOptions, SortOrder, SortTarget};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::backend::etcd::{Connection, EtcdError, describe, range_of};
use crate::backend::{Backoff, Outage, Say};
use crate::settings::Settings;

/// Where reports live.
pub const REPORT_PREFIX: &str = "/liveconf/fleet/";
/// Where registrations live.
pub const REGISTRY_PREFIX: &str = "/liveconf/registry/";

/// Why the fleet's keys could not be read or written. (etcd's errors are
/// part of the message, as [`describe`] words them, not separate causes.)
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// No etcd endpoint answered.
    #[error(transparent)]
    Connect(#[from] EtcdError),
    /// A request to etcd failed.
    #[error("{}", describe(.0))]
    Request(etcd_client::Error),
    /// The host's registration could not be written.
    #[error("cannot register {key}: {}", describe(error))]
    Register {
        /// The registry key.
        key: String,
        /// What etcd said.
        error: etcd_client::Error,
    },
    /// The host's report could not be written.
    #[error("cannot publish {key}: {}", describe(error))]
    Publish {
        /// The report key.
        key: String,
        /// What etcd said.
        error: etcd_client::Error,
    },
    /// The report could not be encoded.
    #[error("{0}")]
    Encode(serde_json::Error),
    /// etcd let the report's lease expire (the keep-alives came too late).
    #[error("the report's lease expired")]
    LeaseExpired,
    /// A request got no answer in time: the endpoint hangs (a stopped
    /// proxy, say); the publisher moves to the next one.
    #[error("no answer to the {what} within {}s", .after.as_secs_f64())]
    NoAnswer {
        /// Which request.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
}

impl From<etcd_client::Error> for FleetError {
    fn from(e: etcd_client::Error) -> FleetError {
        FleetError::Request(e)
    }
}

/// One resource in a host's report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceReport {
    /// The revision the installed file reflects.
    pub revision: Option<i64>,
    /// sha256 of the installed content.
    pub sha256: Option<String>,
    /// Whether the last attempt succeeded.
    pub healthy: bool,
    /// Unix time of the last success.
    pub updated: Option<u64>,
    /// The absolute prefixes it depends on.
    pub watched: Vec<String>,
    /// The last error, if failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its file is installed and its reload has not succeeded since (the
    /// reload is running, waiting out its splay, or failed): the service
    /// does not run this file yet. Absent when false (and from older
    /// reports).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reload_owed: bool,
}

impl ResourceReport {
    /// The newest change under the resource's watched prefixes, from the
    /// per-prefix newest mod revisions.
    pub(crate) fn newest_change(&self, latest: &BTreeMap<String, i64>) -> i64 {
        self.watched
            .iter()
            .filter_map(|w| latest.get(w))
            .max()
            .copied()
            .unwrap_or(0)
    }
}

/// A host's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node name.
    pub node: String,
    /// The newest revision the daemon has seen.
    pub revision: i64,
    /// Per resource.
    pub resources: BTreeMap<String, ResourceReport>,
    /// The DNS names this host's renders use that fail to answer (absent
    /// from older reports).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<DnsReport>,
}

/// A DNS name a host's renders use whose last look-up failed (or whose
/// answer fails them: NXDOMAIN, no good answer within `dns_max_stale`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsReport {
    /// The name.
    pub name: String,
    /// The record type ("A/AAAA", "SRV", "TXT", "URI").
    #[serde(rename = "type")]
    pub kind: String,
    /// The resources whose renders use it.
    pub resources: Vec<String>,
    /// The last error, one line.
    pub error: String,
    /// Its resources fail (otherwise the last good answer still serves).
    pub failing: bool,
}

impl DnsReport {
    /// "dns: TYPE NAME (resources): ERROR; what follows", as `liveconf
    /// fleet` names the host.
    pub(crate) fn problem(&self) -> String {
        format!(
            "dns: {} {} ({}): {}; {}",
            self.kind,
            self.name,
            self.resources.join(", "),
            self.error,
            if self.failing {
                "its resources fail (files kept)"
            } else {
                "the last good answer still serves"
            }
        )
    }
}

/// The first wait before publishing again after a failed attempt; it
/// doubles with each failure, up to [`retry_cap`].
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// The longest wait between two attempts to publish: a sixth of the
/// report's TTL (5 s with the default 30 s), between 1 s and 30 s. A host
/// whose endpoint comes back has its report published again well before
/// the old lease lapses (a report that did lapse is back within this), and
/// a new report ends the wait at once anyway (see [`publish`]).
fn retry_cap(ttl: Duration) -> Duration {
    (ttl / 6).clamp(Duration::from_secs(1), Duration::from_secs(30))
}

/// The shortest lease of a report, in seconds.
const MIN_LEASE_SECS: u64 = 2;

/// The report's lease in whole seconds (etcd's unit): `report_ttl` rounded
/// up, at least [`MIN_LEASE_SECS`]. (It was rounded down, and below 2 s
/// silently raised: `--report-ttl 2500ms` gave a 2 s lease, shorter than
/// asked.)
fn lease_secs(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0));
    i64::try_from(secs.max(MIN_LEASE_SECS)).unwrap_or(i64::MAX)
}

/// Puts the report under `lease`, bounded by `limit`.
async fn put_report(
    client: &mut Client,
    key: &str,
    body: String,
    lease: i64,
    limit: Duration,
) -> Result<(), FleetError> {
    let put = client.put(key, body, Some(PutOptions::new().with_lease(lease)));
    tokio::time::timeout(limit, put)
        .await
        .map_err(|_| FleetError::NoAnswer {
            what: "report's put",
            after: limit,
        })?
        .map_err(|error| FleetError::Publish {
            key: key.to_string(),
            error,
        })?;
    Ok(())
}

/// The report as published.
fn encode(rx: &mut watch::Receiver<Report>) -> Result<String, FleetError> {
    serde_json::to_string(&*rx.borrow_and_update()).map_err(FleetError::Encode)
}

/// Publishes the latest report (from `rx`) under a lease, re-publishing on
/// change and after reconnecting. Runs until `rx`'s sender is dropped (it
/// then revokes the lease: the host is gone at once) or it is aborted.
///
/// After a failed attempt it waits (backing off up to [`retry_cap`]) and
/// tries the next endpoint, but a new report ends the wait at once: the
/// daemon rendered, so etcd answers it again, and the report must follow
/// the file. (Found by a new-user trial: behind a grpc-proxy that had been
/// away, files were right as soon as the daemon reconnected while the
/// report waited out its own backoff, up to 30 s: `fleet wait` took that
/// long, or called the host gone when its lease lapsed meanwhile.)
///
/// The connection is made from `settings` at the first attempt, SRV
/// discovery included, and a discovery that fails is retried like any
/// failed attempt: the daemon runs and renders meanwhile, and the report
/// follows once etcd can be found. (Found by a new-user trial: the daemon
/// made it before starting, and exited 3, "invalid settings", when the SRV
/// nameserver was down, where without `--report` it waited for etcd.) With
/// discovery, the record is looked up again after each failure. A failure
/// that goes on is said once, then at most every
/// [`crate::backend::REMIND_EVERY`].
pub async fn publish(
    settings: Settings,
    node: String,
    ttl: Duration,
    mut rx: watch::Receiver<Report>,
) {
    let ttl_secs = lease_secs(ttl);
    let lease_ttl = Duration::from_secs(ttl_secs.unsigned_abs());
    if lease_ttl != ttl {
        // Said once: the lease is not what was asked for.
        tracing::warn!(
            "report_ttl {}: the report's lease is {ttl_secs}s (etcd leases are whole seconds, at least {MIN_LEASE_SECS})",
            humantime::format_duration(ttl)
        );
    }
    // A keep-alive is sent every third of the TTL. Answers need not pair
    // with requests (etcd's grpc-proxy answers at its own pace), so the
    // lease counts as kept while any answer came within two periods; after
    // that (an endpoint that hangs: a stopped proxy) a third of the TTL is
    // left to re-publish through the next endpoint before the report lapses.
    let silence = (lease_ttl / 3 * 2).max(Duration::from_secs(1));
    let report_key = format!("{REPORT_PREFIX}{node}");
    let registry_key = format!("{REGISTRY_PREFIX}{node}");
    let mut backoff = Backoff::new(RETRY_FIRST, retry_cap(lease_ttl));
    let mut idx = 0usize;
    // Failed attempts since the report was last published (said once,
    // then reminded at most every minute).
    let mut outage = Outage::default();
    let mut conn: Option<Connection> = None;
    loop {
        // The endpoint tried, once etcd is found.
        let mut tried: Option<String> = None;
        let result: Result<(), FleetError> = async {
            let again = outage.is_on();
            let conn = connection(&settings, &mut conn, again).await?;
            let endpoint = conn.endpoints[idx % conn.endpoints.len().max(1)].clone();
            tried = Some(endpoint.clone());
            let mut client = conn.connect_to(&endpoint).await?;
            let lease = client.lease_grant(ttl_secs, None).await?.id();
            // The report first: through a grpc-proxy the keep-alive
            // stream's first answer takes up to half a second (the proxy
            // keeps leases alive at its own pace), and the lease has its
            // whole TTL ahead of it.
            let mut last_sent = encode(&mut rx)?;
            put_report(&mut client, &report_key, last_sent.clone(), lease, silence).await?;
            backoff.reset();
            let failed = outage.over();
            if failed > 0 {
                tracing::info!(
                    "fleet report: published again through {endpoint} after {failed} failed attempt{}",
                    if failed == 1 { "" } else { "s" }
                );
            }
            let reg =
                serde_json::json!({"node": node, "registered": crate::status::now()}).to_string();
            client
                .put(registry_key.as_str(), reg, None)
                .await
                .map_err(|error| FleetError::Register {
                    key: registry_key.clone(),
                    error,
                })?;
            let (mut keeper, mut responses) = client.lease_keep_alive(lease).await?;
            let mut ticker = tokio::time::interval((lease_ttl / 3).max(Duration::from_millis(500)));
            let mut last_answer = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    changed = rx.changed() => {
                        if changed.is_err() {
                            // The daemon is stopping: drop the report now, so
                            // the host shows as gone at once, not after the
                            // lease.
                            let _ = tokio::time::timeout(
                                Duration::from_secs(2),
                                client.lease_revoke(lease),
                            )
                            .await;
                            return Ok(());
                        }
                        let body = encode(&mut rx)?;
                        if body != last_sent {
                            put_report(&mut client, &report_key, body.clone(), lease, silence)
                                .await?;
                            last_sent = body;
                        }
                    },
                    _ = ticker.tick() => {
                        if last_answer.elapsed() > silence {
                            return Err(FleetError::NoAnswer { what: "lease keep-alive", after: silence });
                        }
                        tokio::time::timeout(silence, keeper.keep_alive())
                            .await
                            .map_err(|_| FleetError::NoAnswer { what: "lease keep-alive", after: silence })??;
                    }
                    answer = responses.message() => match answer {
                        Ok(Some(r)) if r.ttl() > 0 => last_answer = tokio::time::Instant::now(),
                        Ok(_) => return Err(FleetError::LeaseExpired),
                        Err(e) => return Err(e.into()),
                    },
                }
            }
        }
        .await;
        let Err(e) = result else { return };
        let said = match tried {
            Some(endpoint) => format!("fleet report: {e} (through {endpoint}); retrying"),
            None => format!("fleet report: {e}; retrying"),
        };
        match outage.failed() {
            Say::First => tracing::warn!("{said}"),
            Say::Again(lasted) => tracing::warn!("{said} (not published {lasted})"),
            Say::Quiet => tracing::debug!("{said} (failed attempt {})", outage.failures()),
        }
        idx += 1;
        // The report as it is now goes out with the next attempt: only a
        // newer one (the daemon rendered: etcd answers it) ends the wait
        // early, and not sooner than a fraction of a second after this
        // failure.
        rx.mark_unchanged();
        let failed_at = tokio::time::Instant::now();
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            changed = rx.changed() => {
                if changed.is_err() {
                    return;
                }
                tokio::time::sleep_until(failed_at + RETRY_FIRST / 2).await;
            }
        }
    }
}

/// The connection the report goes through: made at the first attempt
/// (SRV discovery included: an error until it finds etcd); with
/// discovery, the record is looked up `again` after a failure (a failed
/// look-up keeps the last endpoints).
async fn connection<'a>(
    settings: &Settings,
    conn: &'a mut Option<Connection>,
    again: bool,
) -> Result<&'a Connection, FleetError> {
    match conn {
        Some(c) => {
            if again
                && c.discovers()
                && let Err(e) = c.rediscover().await
            {
                tracing::debug!(
                    "fleet report: {e}; keeping the endpoints {}",
                    c.endpoints.join(",")
                );
            }
            Ok(c)
        }
        None => Ok(conn.insert(Connection::from_settings(settings).await?)),
    }
}

/// What `liveconf fleet` found about one host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HostState {
    /// The node.
    pub node: String,
    /// Each problem, starting with "stale", "failing", "reload owed", "missing", "diverging", "dns" or "gone".
    pub problems: Vec<String>,
}

/// How often `examine` reads the reports again while hosts catch up.
const CATCH_UP_POLL: Duration = Duration::from_millis(500);

/// Reads every report and registration; names the hosts with problems.
/// A resource is stale when its revision is behind the newest change
/// under its watched prefixes, `max_lag` after first being seen behind.
/// While it waits for hosts to catch up it says so on stderr (which hosts,
/// how far behind, for how long at most), and it stops waiting as soon as
/// they have.
pub async fn examine(conn: &Connection, max_lag: Duration) -> Result<Vec<HostState>, FleetError> {
    let mut client = conn.connect().await?;
    let (mut reports, mut registered) = read_all(&mut client).await?;
    let latest = latest_revisions(&mut client, &reports).await?;
    let mut stale = behind(&reports, &latest);
    let waited = catching_up(&reports, &stale);
    if !waited.is_empty() && !max_lag.is_zero() {
        // Give hosts `max_lag` to catch up before calling them stale.
        eprintln!("{}", waiting_line(&reports, &waited, &latest, max_lag));
        let deadline = tokio::time::Instant::now() + max_lag;
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(CATCH_UP_POLL.min(deadline - now)).await;
            (reports, registered) = read_all(&mut client).await?;
            // Behind what was already there when first looked at.
            let still = behind(&reports, &latest);
            stale.retain(|x| still.contains(x));
            if catching_up(&reports, &stale).is_empty() {
                break;
            }
        }
    }
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for node in registered.iter().chain(reports.keys()) {
        hosts.entry(node.clone()).or_default();
    }
    let mut problem = |node: &str, p: String| hosts.entry(node.to_string()).or_default().push(p);
    for node in &registered {
        if !reports.contains_key(node) {
            problem(node, "gone (registered, no live report)".into());
        }
    }
    for (node, name) in &stale {
        let res = &reports[node].resources[name];
        problem(
            node,
            format!(
                "stale: {name} at revision {} behind its keys",
                res.revision.unwrap_or(0)
            ),
        );
    }
    failing_and_missing(&reports, &mut problem);
    for (node, r) in &reports {
        for d in &r.dns {
            problem(node, d.problem());
        }
    }
    diverging(&reports, &latest, &mut problem);
    Ok(hosts
        .into_iter()
        .map(|(node, problems)| HostState { node, problems })
        .collect())
}

/// "waiting up to 30s (--max-lag) for host2 (x at revision 120 < 130) to
/// catch up...": what `examine` waits for, on one line.
fn waiting_line(
    reports: &BTreeMap<String, Report>,
    stale: &[(String, String)],
    latest: &BTreeMap<String, i64>,
    max_lag: Duration,
) -> String {
    let mut by_node: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (node, name) in stale {
        let res = &reports[node].resources[name];
        by_node.entry(node).or_default().push(format!(
            "{name} at revision {} < {}",
            res.revision.unwrap_or(0),
            res.newest_change(latest)
        ));
    }
    let hosts = shown_hosts(
        by_node
            .iter()
            .map(|(node, what)| format!("{node} ({})", what.join(", "))),
        by_node.len(),
    );
    format!(
        "waiting up to {} (--max-lag) for {hosts} to catch up...",
        humantime::format_duration(max_lag),
    )
}

/// The first few of `total` hosts described by `each`, then "N more
/// hosts": how the "waiting up to ..." lines of `fleet` and `fleet wait`
/// name the hosts they wait for.
pub(crate) fn shown_hosts(each: impl Iterator<Item = String>, total: usize) -> String {
    const SHOWN: usize = 5;
    let mut hosts: Vec<String> = each.take(SHOWN).collect();
    if total > SHOWN {
        hosts.push(format!(
            "{} more",
            crate::logging::count(total - SHOWN, "host")
        ));
    }
    hosts.join(", ")
}

/// (node, resource) of every resource whose revision is behind the newest
/// change under its watched prefixes.
/// The resources of `behind` that may still catch up: those whose last
/// attempt succeeded. A failing one is retried with backoff and named as
/// failing: no use waiting `--max-lag` for it.
fn catching_up(
    reports: &BTreeMap<String, Report>,
    behind: &[(String, String)],
) -> Vec<(String, String)> {
    behind
        .iter()
        .filter(|(node, name)| {
            reports
                .get(node)
                .and_then(|r| r.resources.get(name))
                .is_some_and(|res| res.healthy)
        })
        .cloned()
        .collect()
}

fn behind(
    reports: &BTreeMap<String, Report>,
    latest: &BTreeMap<String, i64>,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for (node, r) in reports {
        for (name, res) in &r.resources {
            if res.revision.unwrap_or(0) < res.newest_change(latest) {
                out.push((node.clone(), name.clone()));
            }
        }
    }
    out
}

impl ResourceReport {
    /// "failing: NAME (STEP: ERROR)" when its last attempt failed
    /// ("failing: NAME (not rendered yet)" before its first attempt),
    /// "reload owed: NAME ..." when its file is installed but its reload
    /// has not run (yet), and "missing: NAME has never been installed on
    /// this host" when it has no file: what `fleet` and `fleet wait` say
    /// about resource `name`.
    pub(crate) fn failing_and_missing(&self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        if !self.healthy {
            // No error: its daemon lists it from the start, unhealthy until
            // its first render (a daemon that never reaches etcd must not
            // look fine); said as `liveconf status` says it.
            out.push(format!(
                "failing: {name} ({})",
                self.error.as_deref().unwrap_or("not rendered yet")
            ));
        } else if self.reload_owed {
            out.push(format!(
                "reload owed: {name} (its file is installed, its reload has not run yet)"
            ));
        }
        if self.sha256.is_none() {
            out.push(format!(
                "missing: {name} has never been installed on this host"
            ));
        }
        out
    }
}

/// Resources whose last attempt failed, and resources never installed.
fn failing_and_missing(reports: &BTreeMap<String, Report>, problem: &mut impl FnMut(&str, String)) {
    for (node, r) in reports {
        for (name, res) in &r.resources {
            for p in res.failing_and_missing(name) {
                problem(node, p);
            }
        }
    }
}

/// Divergence: among the hosts that are up to date for a resource (their
/// revision is at or after the newest change of its keys), a sha256
/// unlike the majority's. When no content is held by more hosts than any
/// other (two hosts that disagree, a tie), there is no majority to blame
/// anyone against: every host is told so, with who has what. Revisions
/// differ between hosts for unrelated reasons, so they are not compared
/// directly.
fn diverging(
    reports: &BTreeMap<String, Report>,
    latest: &BTreeMap<String, i64>,
    problem: &mut impl FnMut(&str, String),
) {
    let mut groups: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (node, r) in reports {
        for (name, res) in &r.resources {
            if let (Some(rev), Some(sha)) = (res.revision, &res.sha256)
                && rev >= res.newest_change(latest)
                && res.healthy
            {
                groups
                    .entry(name.clone())
                    .or_default()
                    .entry(sha.clone())
                    .or_default()
                    .push(node.clone());
            }
        }
    }
    for (name, by_sha) in groups {
        if by_sha.len() < 2 {
            continue;
        }
        let total: usize = by_sha.values().map(Vec::len).sum();
        let majority = by_sha.values().map(Vec::len).max().unwrap_or(0);
        let ties = by_sha.values().filter(|v| v.len() == majority).count();
        if ties > 1 {
            let line = format!(
                "diverging: hosts disagree on {name} and no content is held by a majority: {}",
                who_has_what(&by_sha)
            );
            for node in by_sha.values().flatten() {
                problem(node, line.clone());
            }
            continue;
        }
        for (sha, nodes) in &by_sha {
            if nodes.len() < majority {
                for node in nodes {
                    problem(
                        node,
                        format!(
                            "diverging: {name} content {} differs from the majority's ({majority} of the {total} hosts rendering it)",
                            sha.chars().take(12).collect::<String>()
                        ),
                    );
                }
            }
        }
    }
}

/// "host1 has 0123456789ab, host2, host3 have ba9876543210": each content
/// (most hosts first) and the hosts holding it, a few named per content.
fn who_has_what(by_sha: &BTreeMap<String, Vec<String>>) -> String {
    const SHOWN: usize = 3;
    let mut contents: Vec<(&String, &Vec<String>)> = by_sha.iter().collect();
    contents.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(b.0)));
    contents
        .iter()
        .map(|(sha, nodes)| {
            let mut names = nodes
                .iter()
                .take(SHOWN)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if nodes.len() > SHOWN {
                names.push_str(&format!(" and {} more", nodes.len() - SHOWN));
            }
            format!(
                "{names} {} {}",
                if nodes.len() == 1 { "has" } else { "have" },
                sha.chars().take(12).collect::<String>()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

type Fleet = (BTreeMap<String, Report>, Vec<String>);

/// The node and report of one key under [`REPORT_PREFIX`]; an unreadable
/// report is logged (naming its key) and skipped.
pub(crate) fn parse_report(key: &[u8], value: &[u8]) -> Option<(String, Report)> {
    let key = String::from_utf8_lossy(key);
    let node = key.strip_prefix(REPORT_PREFIX)?;
    match serde_json::from_slice::<Report>(value) {
        Ok(r) => Some((node.to_string(), r)),
        Err(e) => {
            tracing::warn!("ignoring unreadable report {key}: {e}");
            None
        }
    }
}

/// The node of a key under [`REPORT_PREFIX`].
pub(crate) fn report_node(key: &[u8]) -> Option<String> {
    String::from_utf8_lossy(key)
        .strip_prefix(REPORT_PREFIX)
        .map(str::to_string)
}

async fn read_all(client: &mut Client) -> Result<Fleet, FleetError> {
    let mut reports = BTreeMap::new();
    let resp = client
        .get(REPORT_PREFIX, Some(GetOptions::new().with_prefix()))
        .await?;
    for kv in resp.kvs() {
        if let Some((node, r)) = parse_report(kv.key(), kv.value()) {
            reports.insert(node, r);
        }
    }
    let resp = client
        .get(
            REGISTRY_PREFIX,
            Some(GetOptions::new().with_prefix().with_keys_only()),
        )
        .await?;
    let registered = resp
        .kvs()
        .iter()
        .filter_map(|kv| {
            String::from_utf8_lossy(kv.key())
                .strip_prefix(REGISTRY_PREFIX)
                .map(str::to_string)
        })
        .collect();
    Ok((reports, registered))
}

/// The newest mod revision under each watched prefix of any report.
async fn latest_revisions(
    client: &mut Client,
    reports: &BTreeMap<String, Report>,
) -> Result<BTreeMap<String, i64>, FleetError> {
    let mut out = BTreeMap::new();
    for r in reports.values() {
        for res in r.resources.values() {
            for w in &res.watched {
                if !out.contains_key(w) {
                    out.insert(w.clone(), newest_put(client, w, None).await?);
                }
            }
        }
    }
    Ok(out)
}

/// The newest mod revision of the keys under the watched prefix `w` (0
/// when it holds none), as etcd holds them now or, with `at`, at that
/// revision.
pub(crate) async fn newest_put(
    client: &mut Client,
    w: &str,
    at: Option<i64>,
) -> Result<i64, etcd_client::Error> {
    let (start, end) = range_of(w);
    let mut opts = GetOptions::new()
        .with_range(end)
        .with_keys_only()
        .with_sort(SortTarget::Mod, SortOrder::Descend)
        .with_limit(1);
    if let Some(rev) = at {
        opts = opts.with_revision(rev);
    }
    let resp = client.get(start, Some(opts)).await?;
    Ok(resp.kvs().first().map(|kv| kv.mod_revision()).unwrap_or(0))
}

/// What `forget` found.
#[derive(Debug, PartialEq, Eq)]
pub enum Forgotten {
    /// The registration (and any report) was removed.
    Removed,
    /// Nothing was registered under that name.
    Unknown,
    /// The host is alive (its leased report is current): nothing removed,
    /// or it would vanish from `fleet` and never be reported gone.
    Alive,
}

/// Removes a host's registration and report (`liveconf fleet --forget`),
/// unless the host is alive.
pub async fn forget(conn: &Connection, node: &str) -> Result<Forgotten, FleetError> {
    let mut client = conn.connect().await?;
    let live = client.get(format!("{REPORT_PREFIX}{node}"), None).await?;
    if !live.kvs().is_empty() {
        return Ok(Forgotten::Alive);
    }
    let mut found = false;
    for key in [
        format!("{REGISTRY_PREFIX}{node}"),
        format!("{REPORT_PREFIX}{node}"),
    ] {
        let resp = client.delete(key, None).await?;
        found |= resp.deleted() > 0;
    }
    Ok(if found {
        Forgotten::Removed
    } else {
        Forgotten::Unknown
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_is_report_ttl_rounded_up_to_whole_seconds_at_least_two() {
        let ms = Duration::from_millis;
        assert_eq!(lease_secs(ms(30_000)), 30);
        assert_eq!(lease_secs(ms(2500)), 3);
        assert_eq!(lease_secs(ms(1000)), 2);
        assert_eq!(lease_secs(ms(0)), 2);
        assert_eq!(lease_secs(Duration::MAX), i64::MAX);
    }

    #[test]
    fn publishing_again_waits_at_most_a_sixth_of_the_ttl() {
        let s = Duration::from_secs;
        assert_eq!(retry_cap(s(30)), s(5));
        assert_eq!(retry_cap(s(2)), s(1));
        assert_eq!(retry_cap(s(3600)), s(30));
    }

    #[test]
    fn a_resource_its_daemon_has_not_rendered_yet_is_said_so() {
        let res = ResourceReport {
            revision: None,
            sha256: None,
            healthy: false,
            reload_owed: false,
            updated: None,
            watched: vec!["/app/x".into()],
            error: None,
        };
        assert_eq!(
            res.failing_and_missing("x"),
            [
                "failing: x (not rendered yet)",
                "missing: x has never been installed on this host"
            ]
        );
        let res = ResourceReport {
            error: Some("check: `false` exited with status 1".into()),
            ..res
        };
        assert_eq!(
            res.failing_and_missing("x")[0],
            "failing: x (check: `false` exited with status 1)"
        );
    }

    fn report(node: &str, sha: &str) -> (String, Report) {
        let mut r = Report {
            node: node.into(),
            revision: 10,
            resources: BTreeMap::new(),
            dns: Vec::new(),
        };
        r.resources.insert(
            "x".into(),
            ResourceReport {
                revision: Some(10),
                sha256: Some(sha.into()),
                healthy: true,
                reload_owed: false,
                updated: None,
                watched: vec!["/app/x".into()],
                error: None,
            },
        );
        (node.into(), r)
    }

    fn problems(reports: &[(String, Report)]) -> BTreeMap<String, Vec<String>> {
        let reports: BTreeMap<String, Report> = reports.iter().cloned().collect();
        let latest = BTreeMap::from([("/app/x".to_string(), 10)]);
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        diverging(&reports, &latest, &mut |n: &str, p: String| {
            out.entry(n.to_string()).or_default().push(p)
        });
        out
    }

    const A: &str = "aaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn two_hosts_that_disagree_are_told_there_is_no_majority() {
        let found = problems(&[report("mw1", A), report("mw2", B)]);
        let want = "diverging: hosts disagree on x and no content is held by a majority: \
                    mw1 has aaaaaaaaaaaa, mw2 has bbbbbbbbbbbb";
        assert_eq!(found["mw1"], [want]);
        assert_eq!(found["mw2"], [want]);
        // A tie of two against two: the same, each content's hosts named.
        let found = problems(&[
            report("mw1", A),
            report("mw2", B),
            report("mw3", A),
            report("mw4", B),
        ]);
        assert_eq!(found.len(), 4);
        assert!(
            found["mw4"][0].ends_with("mw1, mw3 have aaaaaaaaaaaa, mw2, mw4 have bbbbbbbbbbbb"),
            "{found:?}"
        );
        assert!(!found["mw4"][0].contains("majority's"), "{found:?}");
    }

    #[test]
    fn a_host_unlike_the_majority_is_blamed_alone() {
        let found = problems(&[report("mw1", A), report("mw2", A), report("mw3", B)]);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["mw3"], "{found:?}");
        assert_eq!(
            found["mw3"],
            [
                "diverging: x content bbbbbbbbbbbb differs from the majority's (2 of the 3 hosts rendering it)"
            ]
        );
    }

    #[test]
    fn the_wait_for_hosts_behind_says_who_how_far_and_how_long() {
        let mut behind_one = report("mw1", A);
        behind_one.1.resources.get_mut("x").unwrap().revision = Some(120);
        let reports: BTreeMap<String, Report> = [behind_one, report("mw2", A)].into();
        let latest = BTreeMap::from([("/app/x".to_string(), 130)]);
        let stale = behind(&reports, &latest);
        assert_eq!(
            waiting_line(&reports, &stale, &latest, Duration::from_secs(30)),
            "waiting up to 30s (--max-lag) for mw1 (x at revision 120 < 130), mw2 (x at revision 10 < 130) to catch up..."
        );
    }
}
