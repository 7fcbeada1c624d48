//! The Prometheus rules and Grafana dashboard in `contrib/`, checked with
//! Debian's `prometheus` package: `promtool check rules` and `promtool test
//! rules` (the unit tests in `contrib/prometheus/tests/`, at least one case
//! per alert where it fires and one where it stays silent), then a real
//! Prometheus on loopback scraping two real daemons: a broken check fires
//! `LiveconfResourceFailing` naming the host and the resource, the fix
//! resolves it, a killed daemon fires `LiveconfDaemonDown`, every rule
//! evaluates without error, and every dashboard query evaluates and names
//! only metrics liveconf exports (read from the daemons' own `/metrics`).
//! One daemon's template looks a name up (dnsmasq on loopback), so the
//! DNS series, which exist only on such a host, are real ones too. Every
//! `liveconf` command the alerts and the README's alerts section
//! recommend is one liveconf accepts.

use crate::common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

use crate::srv_follow::Dnsmasq;
use common::Fx;
use common::etcd::{Daemon, free_port, http_get_metrics, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

fn contrib(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contrib")
        .join(rel)
}

fn require(program: &str) {
    assert!(
        common::have(program),
        "{program} is required for this test: apt-get install prometheus \
         (scripts/test and .ci/run install it)"
    );
}

fn expect_success(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn seq(v: &Yaml) -> &[Yaml] {
    v.as_sequence().map(Vec::as_slice).unwrap_or(&[])
}

fn field<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

/// Every rule of the shipped rules file.
fn rules() -> Vec<Yaml> {
    let doc = yaml(&contrib("prometheus/liveconf.rules.yml"));
    seq(&doc["groups"])
        .iter()
        .flat_map(|g| seq(&g["rules"]).iter().cloned())
        .collect()
}

fn names_of(kind: &str) -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|r| field(r, kind).map(str::to_string))
        .collect()
}

fn unit_test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(contrib("prometheus/tests"))
        .expect("contrib/prometheus/tests")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no contrib/prometheus/tests/*.yml");
    files
}

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_cover_every_alert() {
    require("promtool");
    let rules_file = contrib("prometheus/liveconf.rules.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules_file)
        .output()
        .expect("run promtool");
    expect_success("promtool check rules", &out);

    let files = unit_test_files();
    let out = Command::new("promtool")
        .args(["test", "rules"])
        .args(&files)
        .output()
        .expect("run promtool");
    expect_success("promtool test rules contrib/prometheus/tests/*.yml", &out);

    // Every alert has a case where it fires and one where it must not.
    let (mut fires, mut silent) = (BTreeSet::new(), BTreeSet::new());
    for f in &files {
        for test in seq(&yaml(f)["tests"]) {
            for case in seq(&test["alert_rule_test"]) {
                let name = field(case, "alertname").unwrap_or_default().to_string();
                if seq(&case["exp_alerts"]).is_empty() {
                    silent.insert(name);
                } else {
                    fires.insert(name);
                }
            }
        }
    }
    let alerts = names_of("alert");
    assert!(alerts.len() >= 8, "alerts: {alerts:?}");
    for a in &alerts {
        assert!(
            fires.contains(a) && silent.contains(a),
            "{a}: the unit tests need a case where it fires ({}) and one where it stays silent ({})",
            fires.contains(a),
            silent.contains(a)
        );
    }
}

/// The spans between backticks in `text` (inline code; fenced blocks are
/// left to the caller).
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The README's "Alerts and dashboard" section, without its fenced blocks.
fn readme_alerts_section() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let start = readme
        .find("\n### Alerts and dashboard\n")
        .expect("README: ### Alerts and dashboard");
    let mut out = String::new();
    let mut fenced = false;
    for line in readme[start + 1..].lines().skip(1) {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        let underline = line.len() >= 3 && line.chars().all(|c| c == '-' || c == '=');
        if !fenced && (line.starts_with("## ") || line.starts_with("### ") || underline) {
            break;
        }
        if !fenced {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Found by a new-user trial: the divergence alert and the README told
/// operators to run `liveconf check --diff NAME`, which does not exist
/// (`error: unexpected argument '--diff' found`). Every `liveconf ...`
/// command quoted in the rules' annotations and in the README's alerts
/// section must parse: each is run with `--help` appended, which clap
/// answers (exit 0) only once every argument before it is known.
/// Placeholders (`{{ $labels.resource }}`, NAME, NODE) become a word.
#[test]
fn every_liveconf_command_the_alerts_and_readme_recommend_parses() {
    let mut texts = Vec::new();
    for r in rules() {
        if let Some(a) = r.get("annotations").and_then(Yaml::as_mapping) {
            for v in a.values() {
                texts.push(v.as_str().unwrap_or_default().to_string());
            }
        }
    }
    let readme = readme_alerts_section();
    texts.push(readme.clone());
    let mut commands = BTreeSet::new();
    for text in &texts {
        for span in code_spans(text) {
            if span.starts_with("liveconf ") {
                commands.insert(span);
            }
        }
    }
    // The extraction works: the alert table's commands are among them.
    for want in [
        "liveconf status",
        "liveconf fleet",
        "liveconf fleet --forget NODE",
        "liveconf render --once --diff --only NAME",
    ] {
        assert!(
            commands.contains(want),
            "{want:?} not found among {commands:?}"
        );
    }
    assert!(
        readme.contains("| `LiveconfFleetDiverging` |"),
        "the README's alert table"
    );
    let mut bad = Vec::new();
    for cmd in &commands {
        let args: Vec<String> = cmd
            .replace("{{ $labels.resource }}", "x")
            .replace("{{ $labels.node }}", "x")
            .split_whitespace()
            .skip(1)
            .map(|w| {
                if w.len() > 1 && w.chars().all(|c| c.is_ascii_uppercase()) {
                    "x".to_string()
                } else {
                    w.to_string()
                }
            })
            .collect();
        assert!(
            args.iter()
                .all(|a| !a.contains(['{', '}', '$', '|', '<', '>', '`'])),
            "{cmd:?}: a placeholder or shell syntax this test does not know"
        );
        let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(&args)
            .arg("--help")
            .output()
            .expect("run liveconf");
        if !out.status.success() {
            bad.push(format!(
                "`{cmd}` (run as liveconf {} --help): {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "commands recommended by contrib/prometheus/liveconf.rules.yml or the README \
         that liveconf does not accept:\n{}",
        bad.join("\n")
    );
}

// ------------------------------------------------------------------ HTTP

/// One HTTP/1.0 GET (so no chunked body): status code and body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

// ------------------------------------------------------------ Prometheus

/// A `prometheus` server on a loopback port with its own config and data
/// directory (the Debian package's service plays no part); killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, config: &str) -> Prometheus {
        let port = free_port();
        let cfg = dir.join("prometheus.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("prometheus.log");
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::from(f.try_clone().unwrap()))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, port, log };
        wait_for("prometheus ready", LIMIT, || {
            http_get(p.port, "/-/ready").is_some_and(|(code, _)| code == 200)
        });
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// GET an API path; the parsed JSON body (any status).
    fn api(&self, path: &str) -> Value {
        let (code, body) = http_get(self.port, path)
            .unwrap_or_else(|| panic!("no answer from prometheus for {path}\n{}", self.log()));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {code} {e}: {body}"))
    }

    /// An instant query: its result, or Prometheus's error.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let v = self.api(&format!("/api/v1/query?query={}", url_encode(expr)));
        if v["status"] != "success" {
            return Err(format!("{}: {}", v["errorType"], v["error"]));
        }
        match &v["data"]["result"] {
            Value::Array(a) => Ok(a.clone()),
            other => Ok(vec![other.clone()]),
        }
    }

    /// The active (pending or firing) alerts.
    fn alerts(&self) -> Vec<Value> {
        let v = self.api("/api/v1/alerts");
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["alerts"].as_array().cloned().unwrap_or_default()
    }

    /// The firing alert `name` whose labels include every `labels` pair.
    fn firing(&self, name: &str, labels: &[(&str, &str)]) -> Option<Value> {
        self.alerts().into_iter().find(|a| {
            a["state"] == "firing"
                && a["labels"]["alertname"] == name
                && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
        })
    }

    fn wait_firing(&self, name: &str, labels: &[(&str, &str)]) -> Value {
        let mut found = None;
        let limit = LIMIT;
        let start = std::time::Instant::now();
        while found.is_none() {
            found = self.firing(name, labels);
            assert!(
                start.elapsed() < limit,
                "timed out after {limit:?} waiting for {name} {labels:?} to fire; alerts: {}\n{}",
                Value::Array(self.alerts()),
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        found.unwrap()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- prometheus log ----\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --------------------------------------------------------------- daemons

/// Resource `x`: `v=<key /app/v>` into out/x.conf; its check rejects "bad".
/// With `dns` (a nameserver's address), also resource `d`, which looks up
/// the TXT record flag.prom.test there: the host exports the DNS series.
fn host(fx: &Fx, port: u16, node: &str, dns: Option<&str>) -> Daemon {
    fx.keys("app:\n  v: \"1\"\n");
    fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
         check_cmd = \"if grep -q bad {{src}}; then echo bad config >&2; exit 1; fi\"\n",
    );
    if dns.is_some() {
        fx.template(
            "d.tera",
            "flag={{ lookup_txt(name=\"flag.prom.test\") | join(sep=\",\") }}\n",
        );
        fx.resource(
            "d",
            "[template]\nsrc = \"d.tera\"\ndest = \"{out}/d.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
        );
    }
    let confdir = fx.dir.path().display().to_string();
    let keys = fx.path("keys.yaml").display().to_string();
    let state = fx.path("state").display().to_string();
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--confdir",
        &confdir,
        "--file",
        &keys,
        "--state-dir",
        &state,
        "--wait",
        "0s",
        "--metrics-addr",
        &addr,
        "--node-name",
        node,
    ];
    if let Some(server) = dns {
        args.extend(["--dns-server", server]);
    }
    Daemon::start(&args, &fx.path("daemon.log"))
}

/// dnsmasq on a loopback port answering the TXT record flag.prom.test
/// (for `host`'s resource `d`); killed on drop.
fn dnsmasq() -> Dnsmasq {
    Dnsmasq::start_with(
        free_port(),
        &[],
        &[
            "--local=/test/".to_string(),
            "--local-ttl=60".to_string(),
            "--txt-record=flag.prom.test,on".to_string(),
        ],
    )
}

/// Replaces the key file atomically, as a deploy tool would.
fn write_keys(fx: &Fx, yaml: &str) {
    let tmp = fx.path("keys.yaml.new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, fx.path("keys.yaml")).unwrap();
}

/// The metric names a daemon's `/metrics` exports (sample names, so
/// `_total`, `_bucket`, `_sum` and `_count` included).
fn exported(port: u16) -> BTreeSet<String> {
    let text = http_get_metrics(port).expect("scrape");
    let body = text
        .split_once("\r\n\r\n")
        .map_or(text.as_str(), |(_, b)| b);
    body.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

// ----------------------------------------------------------------- PromQL

/// The metric names a PromQL expression selects: identifiers outside
/// strings, label matchers, ranges and grouping lists that are neither
/// functions nor keywords.
fn metric_names(expr: &str) -> BTreeSet<String> {
    // Blank out strings, {label matchers} and [ranges].
    let mut s = String::new();
    let (mut quote, mut brace, mut bracket) = (None, 0, false);
    for c in expr.chars() {
        if let Some(q) = quote {
            if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => {
                quote = Some(c);
                s.push(' ');
            }
            '{' => brace += 1,
            '}' => {
                brace -= 1;
                s.push(' ');
            }
            '[' => bracket = true,
            ']' => {
                bracket = false;
                s.push(' ');
            }
            _ if brace > 0 || bracket => {}
            _ => s.push(c),
        }
    }
    const LISTS: [&str; 6] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    // Keywords, and aggregations (`count by (x) (...)`: not followed by "(").
    const WORDS: [&str; 17] = [
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let b = s.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_digit() {
            // Numbers and durations (0.99, 1e9, 5m).
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            let word = &s[start..i];
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            let call = j < b.len() && b[j] == b'(';
            if call && LISTS.contains(&word) {
                // A label list: skip it.
                i = j + s[j..].find(')').expect("closing parenthesis") + 1;
            } else if !call && !LISTS.contains(&word) && !WORDS.contains(&word) {
                names.insert(word.to_string());
            }
        } else {
            i += 1;
        }
    }
    names
}

/// Grafana's variables, replaced the way "All" does.
fn grafana_expr(expr: &str) -> String {
    let e = expr
        .replace("$__rate_interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$resource", ".*")
        .replace("$dc", ".*");
    assert!(!e.contains('$'), "unknown dashboard variable in {expr}");
    e
}

fn panels(v: &Value, out: &mut Vec<Value>) {
    for p in v["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        panels(p, out);
    }
}

/// The dashboard's queries: (where, PromQL), Grafana's variables left in.
fn dashboard_queries() -> Vec<(String, String)> {
    let path = contrib("grafana/liveconf.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dash: Value = serde_json::from_str(&text).expect("contrib/grafana/liveconf.json is JSON");
    let mut all = Vec::new();
    panels(&dash, &mut all);
    let mut ids = BTreeSet::new();
    let mut queries = Vec::new();
    for p in &all {
        let id = p["id"].as_i64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap_or_default().to_string();
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        assert!(!targets.is_empty(), "panel {title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.is_empty(), "panel {title}: empty query");
            queries.push((format!("panel {title:?}"), expr.to_string()));
        }
    }
    // The variables' label_values(SELECTOR, LABEL) as the series query
    // Grafana sends for them; query_result(EXPR) as EXPR.
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let q = var["query"]["query"].as_str().expect("variable query");
        if let Some(expr) = q
            .strip_prefix("query_result(")
            .and_then(|r| r.strip_suffix(')'))
        {
            queries.push((format!("variable {}", var["name"]), expr.to_string()));
            continue;
        }
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|r| r.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {}: {q}", var["name"]));
        let (sel, label) = inner
            .rsplit_once(',')
            .expect("label_values(SELECTOR, LABEL)");
        queries.push((
            format!("variable {}", var["name"]),
            format!("count by ({}) ({sel})", label.trim()),
        ));
    }
    queries
}

/// Found by a new-user trial: the dashboard's "failing" count showed 1 for
/// a host restarted during an etcd outage (nothing rendered, step "none"),
/// which LiveconfResourceFailing deliberately leaves to
/// LiveconfEtcdUnreachable. Each state of "Hosts by state" (and its
/// history) that has an alert reads what that alert reads: the same
/// recording rule or expression (contrib/prometheus/tests/ checks what it
/// holds).
#[test]
fn the_dashboards_host_states_read_what_their_alerts_read() {
    let text = std::fs::read_to_string(contrib("grafana/liveconf.json")).unwrap();
    let dash: Value = serde_json::from_str(&text).unwrap();
    let mut all = Vec::new();
    panels(&dash, &mut all);
    let alert_expr = |name: &str| {
        rules()
            .iter()
            .find(|r| field(r, "alert") == Some(name))
            .and_then(|r| field(r, "expr").map(str::to_string))
            .unwrap_or_else(|| panic!("no alert {name}"))
    };
    for (state, alert, reads) in [
        (
            "failing",
            "LiveconfResourceFailing",
            "liveconf:resource_failing_reported:step",
        ),
        (
            "diverging",
            "LiveconfFleetDiverging",
            "last_over_time(liveconf:resource_diverging:bool",
        ),
    ] {
        assert!(
            alert_expr(alert).contains(reads),
            "{alert} reads {reads}: {}",
            alert_expr(alert)
        );
        let mut seen = 0;
        for p in all.iter().filter(|p| {
            p["title"]
                .as_str()
                .is_some_and(|t| t.starts_with("Hosts by state"))
        }) {
            for t in p["targets"].as_array().into_iter().flatten() {
                if t["legendFormat"] == state {
                    seen += 1;
                    let expr = t["expr"].as_str().unwrap_or_default();
                    assert!(
                        expr.contains(reads),
                        "{:?} / {state} does not read what {alert} reads ({reads}): {expr}",
                        p["title"]
                    );
                }
            }
        }
        assert_eq!(seen, 2, "\"Hosts by state\" and its history show {state}");
    }
}

/// Every dashboard query evaluates; a result about a host (an `instance`
/// label) also names it by its `node`, as the alerts do (a new-user trial:
/// the tables showed addresses while every alert named node names).
fn dashboard_evaluates_and_names_nodes(prom: &Prometheus) {
    for (what, expr) in dashboard_queries() {
        let e = grafana_expr(&expr);
        let results = prom
            .query(&e)
            .unwrap_or_else(|err| panic!("{what}: {e}\n{err}"));
        for r in results {
            let labels = &r["metric"];
            if labels.get("instance").is_some() {
                assert!(
                    labels["node"].as_str().is_some_and(|n| !n.is_empty()),
                    "{what} shows a host without its node name: {r}\n{e}"
                );
            }
        }
    }
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = metric_names(
        r#"topk by (instance, job, resource) (1, label_replace(increase(liveconf_check_failures_total{dc=~"$dc"}[5m]) > 0, "step", "check", "", ""))
           or on (instance, job) (liveconf:resource_revision:max offset 5m) - on (dc, resource) group_right liveconf_resource_revision
           unless count_values without () ("revision", up{job="liveconf"}) * 1e9 > bool 0.5"#,
    );
    let want: BTreeSet<String> = [
        "liveconf:resource_revision:max",
        "liveconf_check_failures_total",
        "liveconf_resource_revision",
        "up",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(names, want);
}

#[test]
fn a_real_prometheus_alerts_on_two_daemons_and_evaluates_the_dashboard() {
    require("prometheus");
    let (fa, fb) = (Fx::new(), Fx::new());
    let (pa, pb) = (free_port(), free_port());
    // Host b's templates look a name up, so it exports the DNS series
    // (they exist only on such a host) and the dashboard's DNS queries
    // are checked against real ones.
    let dns = dnsmasq();
    let _a = host(&fa, pa, "mw-a", None);
    let mut b = host(&fb, pb, "mw-b", Some(&dns.addr()));
    for port in [pa, pb] {
        wait_for("daemon rendered x", LIMIT, || {
            common::etcd::http_get_metric(port, "liveconf_resource_healthy{resource=\"x\"}")
                == Some(1.0)
        });
    }
    wait_for("host b resolved flag.prom.test", LIMIT, || {
        common::etcd::http_get_metric(pb, "liveconf_resource_healthy{resource=\"d\"}") == Some(1.0)
    });
    assert_eq!(fb.read("out/d.conf"), "flag=on\n");
    let (ia, ib) = (format!("127.0.0.1:{pa}"), format!("127.0.0.1:{pb}"));

    // The shipped rules, with every `for` and `keep_firing_for` cut to 0s
    // so the test takes seconds (promtool's unit tests cover the
    // durations).
    let dir = tempfile::tempdir().unwrap();
    let shipped = std::fs::read_to_string(contrib("prometheus/liveconf.rules.yml")).unwrap();
    let mut fast = String::new();
    for line in shipped.lines() {
        let cut = ["for: ", "keep_firing_for: "].into_iter().find_map(|k| {
            line.split_once(k)
                .filter(|(indent, _)| indent.trim().is_empty())
                .map(|(indent, _)| format!("{indent}{k}0s"))
        });
        fast.push_str(cut.as_deref().unwrap_or(line));
        fast.push('\n');
    }
    assert!(fast.contains("for: 0s"));
    let rules_file = dir.path().join("liveconf.rules.yml");
    std::fs::write(&rules_file, fast).unwrap();
    let prom = Prometheus::start(
        dir.path(),
        &format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n\
             scrape_configs:\n  - job_name: liveconf\n    static_configs:\n\
             \x20     - targets: ['{ia}', '{ib}']\n        labels:\n          dc: test\n",
            rules_file.display()
        ),
    );
    wait_for("both daemons scraped", LIMIT, || {
        prom.query("up{job=\"liveconf\"} == 1")
            .is_ok_and(|r| r.len() == 2)
    });
    assert!(
        prom.firing("LiveconfResourceFailing", &[]).is_none(),
        "{:?}",
        prom.alerts()
    );

    // Host a's check rejects the new file: firing, naming a and x.
    write_keys(&fa, "app:\n  v: bad\n");
    let alert = prom.wait_firing(
        "LiveconfResourceFailing",
        &[("instance", &ia), ("resource", "x"), ("step", "check")],
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap_or_default();
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    // By its node name (not only its address: every host of a dc would
    // read the same), with its address in the description.
    assert_eq!(alert["labels"]["node"], "mw-a", "{alert}");
    for text in [summary, description] {
        assert!(
            text.contains("mw-a") && text.contains(" x "),
            "the alert's text names the host and the resource: {alert}"
        );
    }
    assert!(description.contains(&ia), "{alert}");
    assert!(description.contains("liveconf status"), "{alert}");
    // The dashboard while a host fails: its tables name it by node.
    dashboard_evaluates_and_names_nodes(&prom);
    assert!(
        prom.firing("LiveconfResourceFailing", &[("instance", &ib)])
            .is_none(),
        "host b is fine: {:?}",
        prom.alerts()
    );

    // Fixed: resolved (resolved alerts leave /api/v1/alerts).
    write_keys(&fa, "app:\n  v: \"2\"\n");
    wait_for("LiveconfResourceFailing resolved", LIMIT, || {
        !prom
            .alerts()
            .iter()
            .any(|a| a["labels"]["alertname"] == "LiveconfResourceFailing")
    });

    // Every rule evaluated without error.
    let alerts = names_of("alert");
    let recorded = names_of("record");
    wait_for("every rule evaluated", LIMIT, || {
        let v = prom.api("/api/v1/rules");
        let rules: Vec<&Value> = v["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        rules.len() == alerts.len() + recorded.len() && rules.iter().all(|r| r["health"] == "ok")
    });

    // The dashboard: every query evaluates, and names only metrics the
    // daemons export, `up`, or a recording rule of the shipped rules.
    let mut known = exported(pa);
    known.extend(exported(pb));
    for name in [
        "liveconf_resource_healthy",
        "liveconf_render_duration_seconds_bucket",
        "liveconf_dns_failing",
        "liveconf_dns_answer_age_seconds",
        "liveconf_dns_ttl_seconds",
    ] {
        assert!(known.contains(name), "{name} not exported: {known:?}");
    }
    let queries = dashboard_queries();
    assert!(queries.len() >= 20, "{} queries", queries.len());
    let mut raw_names = BTreeSet::new();
    for (what, expr) in &queries {
        for name in metric_names(expr) {
            assert!(
                known.contains(&name) || recorded.contains(&name) || name == "up",
                "{what} names {name}, which liveconf does not export: {expr}"
            );
            if known.contains(&name) {
                raw_names.insert(name);
            }
        }
    }
    dashboard_evaluates_and_names_nodes(&prom);
    // The Host variable shows node names (its regex takes `node` as the
    // text and `instance` as the value of each series).
    let var = dashboard_queries()
        .into_iter()
        .find(|(what, _)| what == "variable \"instance\"")
        .expect("the Host variable")
        .1;
    let hosts: BTreeSet<(String, String)> = prom
        .query(&grafana_expr(&var))
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["metric"]["node"].as_str().unwrap_or_default().to_string(),
                r["metric"]["instance"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String)> = [("mw-a", &ia), ("mw-b", &ib)]
        .iter()
        .map(|(n, i)| (n.to_string(), i.to_string()))
        .collect();
    assert_eq!(hosts, want, "the Host variable: {var}");
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(contrib("grafana/liveconf.json")).unwrap())
            .unwrap();
    let regex = dash["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == "instance")
        .and_then(|v| v["regex"].as_str())
        .unwrap_or_default();
    assert!(
        regex.contains(r#"instance="(?<value>"#) && regex.contains(r#"node="(?<text>"#),
        "the Host variable's regex shows node names, filters on instances: {regex}"
    );
    // The rules, too, select only exported metrics (and their own records).
    for r in rules() {
        let expr = field(&r, "expr").unwrap_or_default();
        for name in metric_names(expr) {
            assert!(
                known.contains(&name) || recorded.contains(&name) || name == "up",
                "rule {:?} names {name}, which liveconf does not export",
                field(&r, "alert").or(field(&r, "record"))
            );
        }
    }
    // The DNS row reads host b's real series (its answer age and TTL).
    let (what, dns_expr) = queries
        .iter()
        .find(|(what, _)| what.contains("last good DNS answer"))
        .expect("the DNS answer age panel");
    let r = prom.query(&grafana_expr(dns_expr)).unwrap();
    assert!(
        r.iter().any(|s| s["metric"]["name"] == "flag.prom.test"),
        "{what}: {dns_expr}: {r:?}"
    );
    // And what the dashboard reads has been scraped.
    for name in &raw_names {
        let r = prom.query(&format!("count({name})")).unwrap();
        assert!(!r.is_empty(), "no {name} in prometheus");
    }

    // Host b's daemon dies: LiveconfDaemonDown names it.
    let _ = b.child.kill();
    let _ = b.child.wait();
    let alert = prom.wait_firing("LiveconfDaemonDown", &[("instance", &ib)]);
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .is_some_and(|s| s.contains("mw-b")),
        "a dead daemon is still named by its node name: {alert}"
    );
    assert!(
        prom.firing("LiveconfDaemonDown", &[("instance", &ia)])
            .is_none()
    );
}
