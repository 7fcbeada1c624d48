//! Prometheus metrics, served on `--metrics-addr` (off unless given).
//!
//! The daemon records every batch outcome and backend event here; an HTTP
//! server answers `GET /metrics` in the text exposition format. Names follow
//! Prometheus conventions (`_total` counters, `_seconds` units, `# HELP`).
//!
//! Only the daemon's observer records here; this module must never decide
//! anything from what it counts, nor block the caller (every update is an
//! atomic or a short lock). Owed reloads are read from [`Owed`] at each
//! scrape.
//!
//! Sized for a fleet of hundreds of hosts: every series is per host, and
//! the per-resource ones are gauges and counters only (13 series per
//! resource; see the README's "Metrics"). Render time is one histogram per host (few
//! buckets) plus a per-resource sum of seconds: with `renders_total` that
//! gives each resource's mean render time, and the histogram the host's
//! distribution, without a bucket series per resource.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::apply::{Action, Outcome, Step};
use crate::owed::Owed;

/// Buckets of the render-time histogram, in seconds. From BENCHMARKS.md: a
/// template reading a few keys renders in microseconds and one iterating
/// 1,000 keys in 0.75 ms (under 1 ms: the usual case); 100 ms is the
/// fleet's propagation budget; iterating 100,000 keys takes 0.44 s (under
/// 0.5 s); past 2.5 s a render outlasts the default coalescing window
/// (`wait` 1 s) several times over.
pub const RENDER_BUCKETS: [f64; 6] = [0.001, 0.005, 0.025, 0.1, 0.5, 2.5];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Res {
    resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResInfo {
    resource: String,
    dest: String,
    sha256: String,
}

/// A DNS dependency: the name a template looked up and the record type.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Dep {
    name: String,
    r#type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Build {
    version: String,
    /// The host's `node_name`, as `liveconf fleet` and status name it, so
    /// alerts can name the host the same way (an `instance` is an address).
    node: String,
}

type FGauge = Gauge<f64, AtomicU64>;
type FCounter = Counter<f64, AtomicU64>;

/// Every metric liveconf exports.
pub struct Metrics {
    registry: Registry,
    healthy: Family<Res, Gauge>,
    last_success: Family<Res, FGauge>,
    revision: Family<Res, Gauge>,
    info: Family<ResInfo, Gauge>,
    info_current: std::sync::Mutex<std::collections::HashMap<String, ResInfo>>,
    configured: std::sync::Mutex<std::collections::BTreeSet<String>>,
    renders: Family<Res, Counter>,
    installs: Family<Res, Counter>,
    render_failures: Family<Res, Counter>,
    check_failures: Family<Res, Counter>,
    install_failures: Family<Res, Counter>,
    reload_failures: Family<Res, Counter>,
    reloads: Family<Res, Counter>,
    reload_owed: Family<Res, Gauge>,
    owed: std::sync::Mutex<Option<Owed>>,
    render_seconds_total: Family<Res, FCounter>,
    render_seconds: Histogram,
    build_info: Family<Build, Gauge>,
    connected: Gauge,
    config_load_failed: Gauge,
    backend_revision: Gauge,
    last_event: FGauge,
    since_last_event: FGauge,
    events: Counter,
    reconnects: Counter,
    resync_differences: Counter,
    dns: std::sync::Mutex<Option<Arc<crate::dnsdeps::Tracker>>>,
    dns_age: Family<Dep, Gauge>,
    dns_ttl: Family<Dep, Gauge>,
    dns_failing: Family<Dep, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new("")
    }
}

impl Metrics {
    /// A registry with every metric registered, for the host `node`
    /// (its `node_name`; `liveconf_build_info`'s `node` label).
    pub fn new(node: &str) -> Metrics {
        let mut registry = Registry::with_prefix("liveconf");
        let m = Metrics {
            registry: Registry::default(),
            healthy: Family::default(),
            last_success: Family::default(),
            revision: Family::default(),
            info: Family::default(),
            info_current: Default::default(),
            configured: Default::default(),
            renders: Family::default(),
            installs: Family::default(),
            render_failures: Family::default(),
            check_failures: Family::default(),
            install_failures: Family::default(),
            reload_failures: Family::default(),
            reloads: Family::default(),
            reload_owed: Family::default(),
            owed: Default::default(),
            render_seconds_total: Family::default(),
            render_seconds: Histogram::new(RENDER_BUCKETS),
            build_info: Family::default(),
            connected: Gauge::default(),
            config_load_failed: Gauge::default(),
            backend_revision: Gauge::default(),
            last_event: FGauge::default(),
            since_last_event: FGauge::default(),
            events: Counter::default(),
            reconnects: Counter::default(),
            resync_differences: Counter::default(),
            dns: Default::default(),
            dns_age: Family::default(),
            dns_ttl: Family::default(),
            dns_failing: Family::default(),
        };
        m.build_info
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").to_string(),
                node: node.to_string(),
            })
            .set(1);
        registry.register(
            "build_info",
            "The running liveconf's version and node name (labels version, node); always 1",
            m.build_info.clone(),
        );
        m.register_resource_metrics(&mut registry);
        m.register_backend_metrics(&mut registry);
        m.register_dns_metrics(&mut registry);
        Metrics { registry, ..m }
    }

    /// Per DNS dependency (the names the renders looked up): three gauges,
    /// read from the tracker at each scrape.
    fn register_dns_metrics(&self, r: &mut Registry) {
        r.register(
            "dns_answer_age_seconds",
            "Seconds since the last good answer for a name a template looked up (labels name, type)",
            self.dns_age.clone(),
        );
        r.register(
            "dns_ttl_seconds",
            "The TTL of the last answer for a name a template looked up",
            self.dns_ttl.clone(),
        );
        r.register(
            "dns_failing",
            "1 while the last look-up of the name failed or its renders fail (NXDOMAIN, no good answer within dns_max_stale), else 0",
            self.dns_failing.clone(),
        );
    }

    /// The DNS dependencies are read from `tracker` at each scrape.
    pub fn follow_dns(&self, tracker: Arc<crate::dnsdeps::Tracker>) {
        *self.dns.lock().unwrap_or_else(|e| e.into_inner()) = Some(tracker);
    }

    /// One set of series per current DNS dependency (a name no render
    /// uses any more loses its series).
    fn sync_dns(&self) {
        let Some(t) = self.dns.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        self.dns_age.clear();
        self.dns_ttl.clear();
        self.dns_failing.clear();
        for d in t.status() {
            let l = Dep {
                name: d.name,
                r#type: d.kind,
            };
            if let Some(age) = d.age {
                self.dns_age
                    .get_or_create(&l)
                    .set(i64::try_from(age).unwrap_or(i64::MAX));
            }
            // No TTL series for a negative answer without an SOA.
            if let Some(ttl) = d.ttl {
                self.dns_ttl.get_or_create(&l).set(i64::from(ttl));
            }
            self.dns_failing
                .get_or_create(&l)
                .set(i64::from(d.failing || d.error.is_some()));
        }
    }

    /// Per resource: health, content, counters, render time; render time
    /// of the host.
    fn register_resource_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "resource_healthy",
            "Whether the resource's last attempt succeeded (1) or failed (0)",
            m.healthy.clone(),
        );
        r.register(
            "resource_last_success_timestamp_seconds",
            "Unix time of the resource's last success",
            m.last_success.clone(),
        );
        r.register(
            "resource_revision",
            "The etcd revision the resource's installed file reflects",
            m.revision.clone(),
        );
        r.register(
            "resource_content",
            "The installed content of the resource (sha256 label); always 1",
            m.info.clone(),
        );
        r.register("renders", "Renders of the resource", m.renders.clone());
        r.register(
            "installs",
            "Files installed for the resource (content, mode or owner changed)",
            m.installs.clone(),
        );
        r.register(
            "render_failures",
            "Renders that failed (template error, missing key)",
            m.render_failures.clone(),
        );
        r.register(
            "check_failures",
            "check_cmd failures",
            m.check_failures.clone(),
        );
        r.register(
            "install_failures",
            "Failures to stage or rename the file",
            m.install_failures.clone(),
        );
        r.register(
            "reload_failures",
            "reload_cmd failures",
            m.reload_failures.clone(),
        );
        r.register(
            "reloads",
            "reload_cmd runs that succeeded for the resource (one run shared by several resources counts for each)",
            m.reloads.clone(),
        );
        r.register(
            "resource_reload_owed",
            "Whether the resource's file is installed but its reload has not succeeded yet (1) or not (0)",
            m.reload_owed.clone(),
        );
        r.register(
            "render_seconds",
            "Seconds spent rendering the resource (divided by renders_total: its mean render time)",
            m.render_seconds_total.clone(),
        );
        r.register(
            "render_duration_seconds",
            "Time to render a resource, every resource of the host",
            m.render_seconds.clone(),
        );
    }

    /// The backend: connection, revision, events, resyncs.
    fn register_backend_metrics(&self, r: &mut Registry) {
        let m = self;
        r.register(
            "config_load_failed",
            "Whether the last reload of the configuration failed (1: the daemon runs on the configuration loaded before) or not (0)",
            m.config_load_failed.clone(),
        );
        r.register(
            "backend_connected",
            "Whether the backend is reachable (1) or not (0)",
            m.connected.clone(),
        );
        r.register(
            "backend_revision",
            "The newest backend revision seen",
            m.backend_revision.clone(),
        );
        r.register(
            "backend_last_event_timestamp_seconds",
            "Unix time of the last watch event or progress notification",
            m.last_event.clone(),
        );
        r.register(
            "backend_seconds_since_last_event",
            "Seconds since the last watch event or progress notification",
            m.since_last_event.clone(),
        );
        r.register(
            "watch_events",
            "Key changes received from the backend",
            m.events.clone(),
        );
        r.register(
            "backend_reconnects",
            "Times the backend connection was lost",
            m.reconnects.clone(),
        );
        r.register(
            "resync_differences",
            "Resyncs that found keys the watch had missed",
            m.resync_differences.clone(),
        );
    }

    /// Records one batch.
    pub fn record(&self, outcomes: &[Outcome], now: f64) {
        for o in outcomes {
            let l = Res {
                resource: o.name.clone(),
            };
            if o.sha256.is_some() {
                let secs = o.render_time.as_secs_f64();
                self.renders.get_or_create(&l).inc();
                self.render_seconds_total.get_or_create(&l).inc_by(secs);
                self.render_seconds.observe(secs);
            }
            match &o.result {
                Ok(action) => {
                    self.healthy.get_or_create(&l).set(1);
                    self.last_success.get_or_create(&l).set(now);
                    self.revision.get_or_create(&l).set(o.revision);
                    if *action == Action::Installed {
                        self.installs.get_or_create(&l).inc();
                    }
                    if *action != Action::WouldChange {
                        self.content(o);
                    }
                }
                Err(f) => {
                    self.healthy.get_or_create(&l).set(0);
                    if f.step == Step::Reload && o.sha256.is_some() {
                        // The file is in place; only its reload failed.
                        self.revision.get_or_create(&l).set(o.revision);
                        self.content(o);
                        if o.changed.is_some() {
                            self.installs.get_or_create(&l).inc();
                        }
                    }
                    let c = match f.step {
                        Step::Render | Step::Load => &self.render_failures,
                        Step::Check => &self.check_failures,
                        Step::Install => &self.install_failures,
                        Step::Reload => &self.reload_failures,
                    };
                    c.get_or_create(&l).inc();
                }
            }
        }
    }

    /// A file just installed (its batch not finished): revision and content.
    pub fn installed(&self, o: &Outcome) {
        let l = Res {
            resource: o.name.clone(),
        };
        self.revision.get_or_create(&l).set(o.revision);
        self.content(o);
    }

    /// The content series of `o`'s installed file: one per resource.
    fn content(&self, o: &Outcome) {
        let Some(sha) = &o.sha256 else { return };
        self.set_content(&o.name, &o.dest.display().to_string(), sha);
    }

    fn set_content(&self, name: &str, dest: &str, sha256: &str) {
        let keep = ResInfo {
            resource: name.to_string(),
            dest: dest.to_string(),
            sha256: sha256.to_string(),
        };
        let mut current = self.info_current.lock().unwrap_or_else(|e| e.into_inner());
        if current.get(name) != Some(&keep) {
            if let Some(old) = current.insert(name.to_string(), keep.clone()) {
                self.info.remove(&old);
            }
            self.info.get_or_create(&keep).set(1);
        }
    }

    /// The installed files on record (status.json of the previous run),
    /// until this run renders them: their revision and content series exist
    /// from the start, so a restart does not make a host vanish from the
    /// fleet comparisons (or look like a host that never rendered) while it
    /// waits for its first snapshot. Only for configured resources that
    /// have no series yet.
    pub fn on_record(&self, status: &crate::status::Status) {
        let known = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        for (name, r) in &status.resources {
            let (Some(rev), Some(sha)) = (r.revision, &r.sha256) else {
                continue;
            };
            if !known.contains(name) {
                continue;
            }
            let l = Res {
                resource: name.clone(),
            };
            if self.revision.get(&l).is_some() {
                continue;
            }
            self.revision.get_or_create(&l).set(rev);
            self.set_content(name, &r.dest.display().to_string(), sha);
        }
    }

    /// The configured resources: each has its series from the start
    /// (healthy 0 until rendered, counters at 0, so alerts and `increase()`
    /// see them), and a resource no longer configured loses its series.
    pub fn configured(&self, names: &[&str]) {
        let mut known = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = known
            .iter()
            .filter(|n| !names.contains(&n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            let l = Res {
                resource: n.clone(),
            };
            self.healthy.remove(&l);
            self.last_success.remove(&l);
            self.revision.remove(&l);
            for c in self.counters() {
                c.remove(&l);
            }
            self.render_seconds_total.remove(&l);
            self.reload_owed.remove(&l);
            let mut current = self.info_current.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = current.remove(&n) {
                self.info.remove(&old);
            }
            known.remove(&n);
        }
        for n in names {
            let l = Res {
                resource: n.to_string(),
            };
            let _ = self.healthy.get_or_create(&l);
            let _ = self.reload_owed.get_or_create(&l);
            let _ = self.render_seconds_total.get_or_create(&l);
            for c in self.counters() {
                let _ = c.get_or_create(&l);
            }
            known.insert(n.to_string());
        }
    }

    fn counters(&self) -> [&Family<Res, Counter>; 7] {
        [
            &self.renders,
            &self.installs,
            &self.reloads,
            &self.render_failures,
            &self.check_failures,
            &self.install_failures,
            &self.reload_failures,
        ]
    }

    /// Owed reloads (and the reloads that paid them) are read from `owed`
    /// at each scrape.
    pub fn follow_owed(&self, owed: Owed) {
        *self.owed.lock().unwrap_or_else(|e| e.into_inner()) = Some(owed);
    }

    /// The owed-reload gauge and reload counter of each configured
    /// resource, from [`Owed`].
    fn sync_owed(&self) {
        let Some(owed) = self.owed.lock().unwrap_or_else(|e| e.into_inner()).clone() else {
            return;
        };
        let (owing, paid) = (owed.names(), owed.reloads());
        let known = self.configured.lock().unwrap_or_else(|e| e.into_inner());
        for n in known.iter() {
            let l = Res {
                resource: n.clone(),
            };
            self.reload_owed
                .get_or_create(&l)
                .set(i64::from(owing.contains(n)));
            let c = self.reloads.get_or_create(&l);
            let total = paid.get(n).copied().unwrap_or(0);
            // Counted by `Owed` since the start; the counter only catches up.
            let seen = c.get();
            if total > seen {
                c.inc_by(total - seen);
            }
        }
    }

    /// Key changes received.
    pub fn events(&self, n: usize) {
        self.events.inc_by(n as u64);
    }

    /// The newest revision.
    pub fn revision(&self, rev: i64) {
        self.backend_revision.set(rev);
    }

    /// An event or progress notification at `now` (Unix seconds).
    pub fn heard(&self, now: f64) {
        self.last_event.set(now);
    }

    /// A reload of the configuration failed (true) or succeeded (false).
    pub fn config_load_failed(&self, failed: bool) {
        self.config_load_failed.set(i64::from(failed));
    }

    /// Connection state changes.
    pub fn connected(&self, up: bool) {
        let was = self.connected.set(i64::from(up));
        if was == 1 && !up {
            self.reconnects.inc();
        }
    }

    /// A resync found differences.
    pub fn resync_difference(&self) {
        self.resync_differences.inc();
    }

    /// The text exposition.
    pub fn encode(&self) -> String {
        self.sync_owed();
        self.sync_dns();
        let last = self.last_event.get();
        if last > 0.0 {
            self.since_last_event
                .set((crate::status::now() as f64 - last).max(0.0));
        }
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Serves `GET /metrics` on `addr` until the process ends.
pub async fn serve(addr: SocketAddr, metrics: Arc<Metrics>) -> std::io::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use hyper::{Response, StatusCode};

    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving metrics on http://{addr}/metrics");
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let metrics = metrics.clone();
                        async move {
                            if req.uri().path() == "/metrics" {
                                Response::builder()
                                    .header(
                                        "content-type",
                                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                                    )
                                    .body(Full::new(Bytes::from(metrics.encode())))
                            } else {
                                Response::builder()
                                    .status(StatusCode::NOT_FOUND)
                                    .body(Full::new(Bytes::from_static(b"see /metrics\n")))
                            }
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Metrics;
    use crate::apply::{Action, Outcome};

    fn installed(name: &str) -> Outcome {
        Outcome {
            name: name.to_string(),
            dest: format!("/srv/{name}.conf").into(),
            revision: 1234,
            sha256: Some("0123456789abcdef".repeat(4)),
            changed: Some("content".into()),
            diff: None,
            result: Ok(Action::Installed),
            render_time: std::time::Duration::from_micros(700),
        }
    }

    /// Series (sample lines) of a scrape of a host with `n` resources, all
    /// rendered and installed; and its size in bytes.
    fn scrape(n: usize) -> (usize, usize) {
        let m = Metrics::new("n1");
        let names: Vec<String> = (0..n).map(|i| format!("resource-{i:03}")).collect();
        m.configured(&names.iter().map(String::as_str).collect::<Vec<_>>());
        m.record(&names.iter().map(|n| installed(n)).collect::<Vec<_>>(), 1.0);
        let text = m.encode();
        let series = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .count();
        (series, text.len())
    }

    /// The README's figure: 13 series per resource plus 18 per host (the
    /// render-time histogram's 6 buckets, +Inf, sum and count; build info;
    /// configuration state; 7 of the backend). Before the sizing for
    /// fleets (issue 15) 300 resources made 6,907 series, 3,300 of them
    /// histogram buckets.
    #[test]
    fn a_host_exports_13_series_per_resource_plus_18() {
        for n in [0, 1, 10, 300] {
            let (series, bytes) = scrape(n);
            eprintln!("{n} resources: {series} series, {bytes} bytes");
            assert_eq!(series, 13 * n + 18, "{n} resources");
        }
        let (_, bytes) = scrape(300);
        assert!(bytes < 300 * 1024, "{bytes} bytes at 300 resources");
    }

    #[test]
    fn build_info_names_the_version_and_the_node() {
        let text = Metrics::new("n1").encode();
        let want = format!(
            "liveconf_build_info{{version=\"{}\",node=\"n1\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&want), "{text}");
    }

    /// A restarted daemon exports the revision and content of the files on
    /// record before its first render, and only for configured resources;
    /// a render replaces them.
    #[test]
    fn files_on_record_have_their_series_until_the_first_render() {
        let m = Metrics::new("n1");
        m.configured(&["a", "b"]);
        let mut status = crate::status::Status::default();
        for (name, rev) in [("a", 7), ("gone", 9)] {
            status.resources.insert(
                name.to_string(),
                crate::status::ResourceStatus {
                    dest: format!("/etc/{name}").into(),
                    healthy: true,
                    revision: Some(rev),
                    sha256: Some(format!("sha-{name}")),
                    ..Default::default()
                },
            );
        }
        m.on_record(&status);
        let text = m.encode();
        assert!(
            text.contains("liveconf_resource_revision{resource=\"a\"} 7"),
            "{text}"
        );
        assert!(
            text.contains(
                "liveconf_resource_content{resource=\"a\",dest=\"/etc/a\",sha256=\"sha-a\"} 1"
            ),
            "{text}"
        );
        assert!(!text.contains("gone"), "{text}");
        assert!(!text.contains("resource_revision{resource=\"b\""), "{text}");
        m.record(&[installed("a")], 1.0);
        let text = m.encode();
        assert!(!text.contains("sha-a"), "{text}");
        assert!(
            !text.contains("resource_revision{resource=\"a\"} 7"),
            "{text}"
        );
    }

    #[test]
    fn owed_reloads_and_paid_reloads_come_from_owed() {
        let m = Metrics::new("n1");
        let owed = crate::owed::Owed::open(None, Default::default());
        m.follow_owed(owed.clone());
        m.configured(&["a", "b"]);
        owed.mark(&["a".to_string()]);
        let text = m.encode();
        assert!(
            text.contains("liveconf_resource_reload_owed{resource=\"a\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_resource_reload_owed{resource=\"b\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_reloads_total{resource=\"a\"} 0"),
            "{text}"
        );
        owed.clear(&["a".to_string()]);
        owed.mark(&["a".to_string()]);
        owed.clear(&["a".to_string()]);
        let text = m.encode();
        assert!(
            text.contains("liveconf_resource_reload_owed{resource=\"a\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_reloads_total{resource=\"a\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_reloads_total{resource=\"b\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn render_time_is_one_histogram_per_host_and_a_sum_per_resource() {
        let m = Metrics::new("n1");
        m.configured(&["a", "b"]);
        m.record(&[installed("a"), installed("b"), installed("a")], 1.0);
        let text = m.encode();
        assert!(
            text.contains("liveconf_render_duration_seconds_count 3"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_render_duration_seconds_bucket{le=\"0.001\"} 3"),
            "{text}"
        );
        assert!(
            !text.contains("liveconf_render_duration_seconds_bucket{resource"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_render_seconds_total{resource=\"a\"} 0.0014"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_renders_total{resource=\"a\"} 2"),
            "{text}"
        );
    }

    #[test]
    fn configured_resources_have_series_from_the_start_and_lose_them_when_removed() {
        let m = Metrics::new("n1");
        m.configured(&["a", "b"]);
        let text = m.encode();
        assert!(
            text.contains("liveconf_resource_healthy{resource=\"b\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("liveconf_reload_failures_total{resource=\"b\"} 0"),
            "{text}"
        );
        m.configured(&["a"]);
        let text = m.encode();
        assert!(!text.contains("resource=\"b\""), "{text}");
        assert!(text.contains("resource=\"a\""), "{text}");
    }
}
