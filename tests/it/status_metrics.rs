//! What monitoring sees of a running daemon against a real etcd:
//! status.json and `liveconf status` (text, json, nagios; exit 0/1/2/3;
//! `--max-age`), the Prometheus metrics on `--metrics-addr`, and the
//! systemd notifications (READY=1 after the first render, STATUS=,
//! WATCHDOG=1, STOPPING=1) on NOTIFY_SOCKET.

use crate::common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};
use common::{Fx, Run};
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// A check that fails, printing "bad config" on stderr, when the staged file contains "bad".
const BAD_CHECK: &str =
    "check_cmd = \"if grep -q bad {{src}}; then echo bad config >&2; exit 1; fi\"\n";

/// Resource `x`: `v=<value of /app/x/v>` into out/x.conf, plus `extra` lines.
fn resource_x(fx: &Fx, extra: &str) {
    fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app/x\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
}

fn daemon_args(fx: &Fx, etcd: &Etcd, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--confdir",
        &fx.dir.path().display().to_string(),
        "--endpoints",
        &etcd.endpoints(),
        "--state-dir",
        &fx.path("state").display().to_string(),
        "--wait",
        "0s",
        "--node-name",
        "app1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn daemon(fx: &Fx, etcd: &Etcd, extra: &[&str]) -> Daemon {
    let args = daemon_args(fx, etcd, extra);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    Daemon::start(&refs, &fx.path("daemon.log"))
}

/// `liveconf status --state-dir DIR ARGS`.
fn status_cmd(state_dir: &Path, args: &[&str]) -> Run {
    Run::from(
        Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .arg("status")
            .arg("--state-dir")
            .arg(state_dir)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .expect("run liveconf status"),
    )
}

/// `liveconf status --format json ARGS`, parsed.
fn status_json_cmd(state_dir: &Path, args: &[&str]) -> (i32, Value) {
    let mut all = vec!["--format", "json"];
    all.extend_from_slice(args);
    let r = status_cmd(state_dir, &all);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "status --format json is not JSON ({e}):\n{}\n{}",
            r.stdout, r.stderr
        )
    });
    (r.code, v)
}

/// status.json, or Null while it does not exist (or is being replaced).
fn status_file(fx: &Fx) -> Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or(Value::Null)
}

fn wait_status(fx: &Fx, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    wait_for(what, LIMIT, || cond(&status_file(fx)));
    status_file(fx)
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The mod revision of KEY in etcd.
fn mod_revision(etcd: &Etcd, key: &str) -> i64 {
    let out = etcd.ctl(&["get", key, "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    v["kvs"][0]["mod_revision"]
        .as_i64()
        .unwrap_or_else(|| panic!("no mod_revision for {key}: {out}"))
}

// ------------------------------------------------------------ metrics scraping

/// One HTTP GET over a plain TCP connection: (status code, headers, body), or
/// None while nothing listens.
fn http_get(port: u16, path: &str) -> Option<(u16, String, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, head.to_string(), body.to_string()))
}

/// A parsed scrape of `/metrics`.
struct Scrape {
    text: String,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Scrape {
        let mut samples = Vec::new();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, parse_labels(rest.trim_end_matches('}'))),
                None => (series, BTreeMap::new()),
            };
            samples.push((name.to_string(), labels, value));
        }
        Scrape { text, samples }
    }

    /// The value of the series NAME with exactly these labels.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let want: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && *l == want)
            .map(|(_, _, v)| *v)
    }

    /// Panics (showing the scrape) unless the series exists.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape:\n{}", self.text))
    }

    /// Every series of NAME whose labels include `label=value`.
    fn series(&self, name: &str, label: &str, value: &str) -> Vec<&BTreeMap<String, String>> {
        self.samples
            .iter()
            .filter(|(n, l, _)| n == name && l.get(label).map(String::as_str) == Some(value))
            .map(|(_, l, _)| l)
            .collect()
    }
}

/// `k="v",k2="v2"` (values may hold escaped quotes).
fn parse_labels(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s;
    while let Some((k, after)) = rest.split_once("=\"") {
        let mut val = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, n)) = chars.next() {
                        val.push(match n {
                            'n' => '\n',
                            o => o,
                        });
                    }
                }
                '"' => {
                    end = i + 1;
                    break;
                }
                c => val.push(c),
            }
        }
        out.insert(k.trim_start_matches(',').trim().to_string(), val);
        rest = &after[end..];
    }
    out
}

fn scrape(port: u16) -> Scrape {
    let (code, head, body) =
        http_get(port, "/metrics").unwrap_or_else(|| panic!("no answer on port {port}"));
    assert_eq!(code, 200, "GET /metrics: {head}\n{body}");
    Scrape::parse(body)
}

/// Waits until a scrape satisfies `cond`; returns that scrape.
fn wait_scrape(port: u16, what: &str, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    let start = Instant::now();
    loop {
        if let Some((200, _, body)) = http_get(port, "/metrics") {
            let s = Scrape::parse(body);
            if cond(&s) {
                return s;
            }
            assert!(
                start.elapsed() < LIMIT,
                "timed out waiting for {what}; last scrape:\n{}",
                s.text
            );
        } else {
            assert!(
                start.elapsed() < LIMIT,
                "timed out waiting for {what}: /metrics does not answer"
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

const X: [(&str, &str); 1] = [("resource", "x")];

// ------------------------------------------------------------------ tests

#[test]
fn status_after_a_healthy_render_then_after_a_failing_check() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, BAD_CHECK);
    let state = fx.path("state");
    let dest = fx.path("out/x.conf");
    let d = daemon(&fx, &etcd, &[]);

    let st = wait_status(&fx, "status.json with x healthy and etcd connected", |s| {
        s["resources"]["x"]["healthy"] == true && s["connected"] == true
    });
    assert_eq!(read_or_empty(&dest), "v=1\n");
    let rev1 = mod_revision(&etcd, "/app/x/v");
    let x = &st["resources"]["x"];
    assert_eq!(st["node"], "app1", "{st:#}");
    assert_eq!(st["backend"], "etcd", "{st:#}");
    assert_eq!(st["endpoint"], etcd.endpoints().as_str(), "{st:#}");
    assert_eq!(x["dest"], dest.display().to_string().as_str(), "{st:#}");
    assert!(x["revision"].as_i64().unwrap() >= rev1, "{st:#}");
    assert_eq!(x["sha256"], sha256_hex(b"v=1\n").as_str(), "{st:#}");
    assert!(x["error"].is_null(), "{st:#}");
    let t = now();
    let ok = x["last_success"].as_u64().expect("last_success");
    assert!(ok + 60 >= t && ok <= t + 1, "last_success {ok}, now {t}");

    let r = status_cmd(&state, &[]);
    r.expect_code(0);
    assert!(
        r.stdout.starts_with("OK: 1 resource healthy"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("node app1, backend etcd (connected"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("ok") && l.contains(" x ")),
        "{}",
        r.stdout
    );
    let r = status_cmd(&state, &["--format", "nagios"]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("LIVECONF OK - "), "{}", r.stdout);
    assert!(
        r.stdout.contains("| resources=1 failing=0 age="),
        "{}",
        r.stdout
    );
    assert_eq!(r.stdout.lines().count(), 1, "nagios output is one line");
    let (code, j) = status_json_cmd(&state, &[]);
    assert_eq!((code, j["state"].as_str()), (0, Some("OK")), "{j:#}");

    // A put whose rendering the check rejects.
    etcd.put("/app/x/v", "bad");
    let st = wait_status(&fx, "status.json with x failing", |s| {
        s["resources"]["x"]["healthy"] == false
    });
    let x = &st["resources"]["x"];
    assert_eq!(x["error"]["step"], "check", "{st:#}");
    let msg = x["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("bad config"), "check output missing: {st:#}");
    // The file, and what status says it reflects, are the last good ones.
    assert_eq!(read_or_empty(&dest), "v=1\n");
    assert_eq!(x["sha256"], sha256_hex(b"v=1\n").as_str(), "{st:#}");
    assert!(
        x["revision"].as_i64().unwrap() < mod_revision(&etcd, "/app/x/v"),
        "{st:#}"
    );

    let r = status_cmd(&state, &["--format", "nagios"]);
    r.expect_code(2);
    assert!(
        r.stdout
            .starts_with("LIVECONF CRITICAL - 1 of 1 resources failing: x (check: "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("bad config"), "{}", r.stdout);
    assert!(r.stdout.contains("failing=1"), "{}", r.stdout);
    let r = status_cmd(&state, &[]);
    r.expect_code(2);
    assert!(r.stdout.starts_with("CRITICAL:"), "{}", r.stdout);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains("FAIL") && l.contains(" x ")),
        "{}",
        r.stdout
    );
    let (code, j) = status_json_cmd(&state, &[]);
    assert_eq!(code, 2, "{j:#}");
    assert_eq!(j["state"], "CRITICAL", "{j:#}");
    assert_eq!(j["code"], 2, "{j:#}");
    assert_eq!(j["status"]["resources"]["x"]["healthy"], false, "{j:#}");
    assert_eq!(
        j["status"]["resources"]["x"]["error"]["step"], "check",
        "{j:#}"
    );
    assert!(j["summary"].as_str().unwrap().contains("x (check"), "{j:#}");

    drop(d);
}

/// A daemon that died leaves a status.json that still looks healthy; the
/// files no longer follow etcd, and `liveconf status` must say so.
#[test]
fn a_daemon_that_died_is_critical_until_a_render_replaces_its_status() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "");
    let state = fx.path("state");
    let mut d = daemon(&fx, &etcd, &[]);
    wait_status(&fx, "x healthy", |s| s["resources"]["x"]["healthy"] == true);
    status_cmd(&state, &["--format", "nagios"]).expect_code(0);

    d.child.kill().expect("SIGKILL the daemon");
    d.child.wait().expect("reap the daemon");
    let r = status_cmd(&state, &["--format", "nagios"]);
    r.expect_code(2);
    assert!(
        r.stdout.starts_with("LIVECONF CRITICAL - ") && r.stdout.contains("is not running"),
        "{}",
        r.stdout
    );

    // A one-shot render takes over the status: nothing is expected to run.
    let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .arg("render")
        .args(daemon_args(&fx, &etcd, &["--once"]))
        .output()
        .expect("render --once");
    Run::from(out).expect_code(0);
    status_cmd(&state, &["--format", "nagios"]).expect_code(0);
}

/// A daemon that has never reached etcd renders nothing: its resources are
/// listed as not rendered (status and metrics), and the age of "never
/// heard from the backend" runs from its start.
#[test]
fn a_daemon_that_never_reached_etcd_is_visible_and_becomes_critical() {
    let fx = Fx::new();
    resource_x(&fx, "");
    let state = fx.path("state");
    // A previous run left a healthy status: it must not pass for this one's.
    write_status(&state, 1, true);
    let port = free_port();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let _d = Daemon::start(
        &[
            "--confdir",
            &fx.dir.path().display().to_string(),
            "--endpoints",
            &dead,
            "--state-dir",
            &state.display().to_string(),
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
        &fx.path("daemon.log"),
    );
    let st = wait_status(&fx, "x listed by this daemon", |s| {
        s["resources"]["x"].is_object() && s["daemon_pid"].is_u64()
    });
    assert_eq!(st["resources"]["x"]["healthy"], false, "{st:#}");
    assert_eq!(st["connected"], false, "{st:#}");
    let r = status_cmd(&state, &["--format", "nagios"]);
    r.expect_code(2);
    assert!(r.stdout.contains("x (not rendered yet)"), "{}", r.stdout);
    let s = wait_scrape(port, "x's series", |s| {
        s.get("liveconf_resource_healthy", &X).is_some()
    });
    assert_eq!(s.value("liveconf_resource_healthy", &X), 0.0);
    assert_eq!(s.value("liveconf_reload_failures_total", &X), 0.0);
    wait_scrape(
        port,
        "seconds since last event growing from the start",
        |s| s.value("liveconf_backend_seconds_since_last_event", &[]) >= 1.0,
    );
    let start = Instant::now();
    loop {
        let (_, j) = status_json_cmd(&state, &["--max-age", "1s"]);
        if j["summary"]
            .as_str()
            .is_some_and(|t| t.contains("older than twice --max-age"))
        {
            break;
        }
        assert!(start.elapsed() < LIMIT, "age never grew: {j:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn etcd_down_is_a_warning_and_an_old_last_event_becomes_critical() {
    let mut etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "");
    let state = fx.path("state");
    let dest = fx.path("out/x.conf");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = daemon(&fx, &etcd, &["--metrics-addr", &addr]);
    wait_status(&fx, "x healthy, etcd connected", |s| {
        s["resources"]["x"]["healthy"] == true && s["connected"] == true
    });

    // A healthy running daemon is well within --max-age 1m.
    let r = status_cmd(&state, &["--max-age", "1m", "--format", "nagios"]);
    r.expect_code(0);
    assert!(r.stdout.starts_with("LIVECONF OK"), "{}", r.stdout);
    wait_scrape(port, "backend connected", |s| {
        s.get("liveconf_backend_connected", &[]) == Some(1.0)
    });

    etcd.members[0].stop();
    let st = wait_status(&fx, "status.json saying etcd is unavailable", |s| {
        s["connected"] == false
    });
    assert_eq!(st["resources"]["x"]["healthy"], true, "{st:#}");
    assert_eq!(read_or_empty(&dest), "v=1\n");

    let r = status_cmd(&state, &["--format", "nagios"]);
    r.expect_code(1);
    assert!(r.stdout.starts_with("LIVECONF WARNING - "), "{}", r.stdout);
    assert!(
        r.stdout.contains("etcd backend unavailable"),
        "{}",
        r.stdout
    );
    status_cmd(&state, &[]).expect_code(1);

    let m = wait_scrape(port, "backend disconnected in metrics", |s| {
        s.get("liveconf_backend_connected", &[]) == Some(0.0)
    });
    assert!(
        m.value("liveconf_backend_reconnects_total", &[]) >= 1.0,
        "{}",
        m.text
    );
    assert_eq!(m.value("liveconf_resource_healthy", &X), 1.0);

    // The age of the last event grows while etcd is away...
    let age = |args: &[&str]| -> (i32, u64, Value) {
        let (code, j) = status_json_cmd(&state, args);
        let a = j["age_seconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("no age_seconds: {j:#}"));
        (code, a, j)
    };
    let (_, a1, _) = age(&[]);
    let start = Instant::now();
    loop {
        let (_, a2, _) = age(&[]);
        if a2 > a1 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "age stuck at {a1}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let since = |s: &Scrape| s.value("liveconf_backend_seconds_since_last_event", &[]);
    let s1 = since(&scrape(port));
    wait_scrape(port, "seconds since last event growing", |s| since(s) > s1);

    // ... and past twice --max-age it is CRITICAL, saying why.
    let start = Instant::now();
    let (code, a, j) = loop {
        let (code, a, j) = age(&["--max-age", "1s"]);
        if code == 2 {
            break (code, a, j);
        }
        assert!(
            code == 1,
            "with etcd down and --max-age 1s: expected WARNING until CRITICAL, got {j:#}"
        );
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never CRITICAL: {j:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!((code, j["state"].as_str()), (2, Some("CRITICAL")), "{j:#}");
    assert!(a > 2, "CRITICAL at age {a}s with --max-age 1s: {j:#}");
    let summary = j["summary"].as_str().unwrap();
    assert!(
        summary.contains("older than twice --max-age 1s"),
        "{summary}"
    );
    assert!(summary.contains("etcd backend unavailable"), "{summary}");
    let r = status_cmd(&state, &["--max-age", "1s", "--format", "nagios"]);
    r.expect_code(2);
    assert!(r.stdout.starts_with("LIVECONF CRITICAL - "), "{}", r.stdout);

    // etcd back: connected again, OK again.
    etcd.members[0].start();
    wait_status(&fx, "status.json saying etcd is back", |s| {
        s["connected"] == true
    });
    // Connecting is hearing from etcd: the last event is now, not the
    // outage's age (found behind a grpc-proxy, which answers no progress
    // requests: `--max-age` warned for 15-20 s after each failover).
    let (code, a, j) = age(&["--max-age", "2s"]);
    assert_eq!(
        code, 0,
        "last event {a}s old right after reconnecting: {j:#}"
    );
    let r = status_cmd(&state, &["--max-age", "1m", "--format", "nagios"]);
    r.expect_code(0);
    wait_scrape(port, "backend connected again", |s| {
        s.get("liveconf_backend_connected", &[]) == Some(1.0)
    });
    drop(d);
}

/// Writes a status.json by hand: one healthy resource, last event `age` seconds ago.
fn write_status(dir: &Path, age: u64, connected: bool) {
    let t = now();
    let body = serde_json::json!({
        "node": "app9",
        "backend": "etcd",
        "connected": connected,
        "endpoint": "http://127.0.0.1:2379",
        "revision": 42,
        "last_event": t - age,
        "updated": t,
        "resources": {
            "x": {
                "dest": "/srv/x.conf",
                "healthy": true,
                "last_attempt": t - age,
                "last_success": t - age,
                "revision": 40,
                "sha256": sha256_hex(b"v=1\n"),
                "error": null
            }
        }
    });
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("status.json"), body.to_string()).unwrap();
}

#[test]
fn max_age_judges_the_age_of_the_last_event() {
    let fx = Fx::new();
    let state = fx.path("state");

    // No status at all: UNKNOWN.
    let r = status_cmd(&state, &["--max-age", "1m", "--format", "nagios"]);
    r.expect_code(3);
    assert!(r.stdout.starts_with("LIVECONF UNKNOWN - "), "{}", r.stdout);
    assert!(r.stdout.contains("status.json"), "{}", r.stdout);

    let nagios = |max: &str| status_cmd(&state, &["--max-age", max, "--format", "nagios"]);

    write_status(&state, 10, true);
    let r = nagios("1m");
    r.expect_code(0);
    assert!(r.stdout.starts_with("LIVECONF OK - "), "{}", r.stdout);
    assert!(r.stdout.contains("revision 42"), "{}", r.stdout);

    // Older than --max-age: WARNING.
    write_status(&state, 90, true);
    let r = nagios("1m");
    r.expect_code(1);
    assert!(r.stdout.starts_with("LIVECONF WARNING - "), "{}", r.stdout);
    assert!(r.stdout.contains("older than --max-age 1m"), "{}", r.stdout);
    // Without --max-age the age alone is no problem.
    status_cmd(&state, &["--format", "nagios"]).expect_code(0);
    // A larger --max-age accepts it.
    nagios("5m").expect_code(0);
    let (code, j) = status_json_cmd(&state, &["--max-age", "1m"]);
    assert_eq!((code, j["state"].as_str()), (1, Some("WARNING")), "{j:#}");
    let a = j["age_seconds"].as_u64().unwrap();
    assert!((90..=110).contains(&a), "age_seconds {a}, expected ~90");

    // Older than twice --max-age: CRITICAL.
    write_status(&state, 150, true);
    let r = nagios("1m");
    r.expect_code(2);
    assert!(r.stdout.starts_with("LIVECONF CRITICAL - "), "{}", r.stdout);
    assert!(
        r.stdout.contains("older than twice --max-age 1m"),
        "{}",
        r.stdout
    );
    nagios("80s").expect_code(1); // 150 s is between 80 s and 160 s
    nagios("2m").expect_code(1);
    nagios("3m").expect_code(0);

    // Disconnected but recent: WARNING, whatever the age.
    write_status(&state, 5, false);
    nagios("1m").expect_code(1);

    // A --max-age that is not a duration is a usage error, named.
    let r = nagios("soon");
    assert_ne!(r.code, 0, "{}", r.stdout);
    assert!(r.stderr.contains("--max-age"), "{}", r.stderr);
}

#[test]
fn metrics_follow_puts_and_failures() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, BAD_CHECK);
    let dest = fx.path("out/x.conf");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = daemon(&fx, &etcd, &["--metrics-addr", &addr]);

    let m0 = wait_scrape(port, "x rendered and etcd connected", |s| {
        s.get("liveconf_resource_healthy", &X) == Some(1.0)
            && s.get("liveconf_backend_connected", &[]) == Some(1.0)
    });
    assert_eq!(read_or_empty(&dest), "v=1\n");
    let installs0 = m0.value("liveconf_installs_total", &X);
    assert!(installs0 >= 1.0, "{}", m0.text);
    let events0 = m0.value("liveconf_watch_events_total", &[]);

    // Three puts, through the watch.
    for v in ["2", "3", "4"] {
        etcd.put("/app/x/v", v);
    }
    let rev = mod_revision(&etcd, "/app/x/v");
    let m = wait_scrape(port, "the last put's revision in the metrics", |s| {
        s.get("liveconf_resource_revision", &X) == Some(rev as f64)
    });
    assert_eq!(read_or_empty(&dest), "v=4\n");
    assert_eq!(m.value("liveconf_resource_healthy", &X), 1.0);
    assert!(
        m.value("liveconf_installs_total", &X) > installs0,
        "{}",
        m.text
    );
    assert!(
        m.value("liveconf_renders_total", &X) >= m.value("liveconf_installs_total", &X),
        "{}",
        m.text
    );
    assert!(
        m.value("liveconf_watch_events_total", &[]) >= events0 + 3.0,
        "{}",
        m.text
    );
    assert_eq!(m.value("liveconf_backend_connected", &[]), 1.0);
    assert!(
        m.value("liveconf_backend_revision", &[]) >= rev as f64,
        "{}",
        m.text
    );
    let t = now() as f64;
    let ok = m.value("liveconf_resource_last_success_timestamp_seconds", &X);
    assert!(ok <= t + 1.0 && ok > t - 60.0, "last success {ok}, now {t}");
    let ev = m.value("liveconf_backend_last_event_timestamp_seconds", &[]);
    assert!(ev <= t + 1.0 && ev > t - 60.0, "last event {ev}, now {t}");
    // Exactly one content series, carrying the installed file's sha256.
    let content = m.series("liveconf_resource_content", "resource", "x");
    assert_eq!(content.len(), 1, "{}", m.text);
    assert_eq!(content[0]["sha256"], sha256_hex(b"v=4\n"), "{}", m.text);
    assert_eq!(content[0]["dest"], dest.display().to_string(), "{}", m.text);
    // Render time: one histogram for the host, a sum of seconds per resource.
    assert!(
        m.value("liveconf_render_duration_seconds_count", &[]) >= 2.0,
        "{}",
        m.text
    );
    assert!(
        m.get("liveconf_render_duration_seconds_bucket", &[("le", "+Inf")])
            .is_some(),
        "{}",
        m.text
    );
    assert!(
        m.value("liveconf_render_seconds_total", &X) > 0.0,
        "{}",
        m.text
    );
    // The version, and the node name the shipped alerts name the host by.
    assert!(
        m.samples.iter().any(|(n, l, v)| n == "liveconf_build_info"
            && l.get("version").map(String::as_str) == Some(env!("CARGO_PKG_VERSION"))
            && l.get("node").is_some_and(|node| !node.is_empty())
            && *v == 1.0),
        "{}",
        m.text
    );
    assert_eq!(m.get("liveconf_reloads_total", &X), Some(0.0), "{}", m.text);
    assert_eq!(
        m.get("liveconf_resource_reload_owed", &X),
        Some(0.0),
        "{}",
        m.text
    );
    // Counters exist from the start, at 0, so increase() sees the first failure.
    assert_eq!(m.get("liveconf_check_failures_total", &X), Some(0.0));
    for family in [
        "liveconf_resource_healthy",
        "liveconf_resource_last_success_timestamp_seconds",
        "liveconf_resource_revision",
        "liveconf_resource_content",
        "liveconf_render_duration_seconds",
        "liveconf_resource_reload_owed",
        "liveconf_build_info",
        "liveconf_backend_connected",
        "liveconf_backend_revision",
        "liveconf_backend_seconds_since_last_event",
        // Counters: the family is named without _total in the HELP line.
        "liveconf_renders",
        "liveconf_installs",
        "liveconf_reloads",
        "liveconf_render_seconds",
        "liveconf_watch_events",
        "liveconf_backend_reconnects",
    ] {
        assert!(
            m.text.contains(&format!("# HELP {family} ")),
            "no # HELP for {family}:\n{}",
            m.text
        );
        assert!(
            m.text.contains(&format!("# TYPE {family} ")),
            "no # TYPE for {family}:\n{}",
            m.text
        );
    }

    // A check failure.
    etcd.put("/app/x/v", "bad");
    let m = wait_scrape(port, "x unhealthy after the failing check", |s| {
        s.get("liveconf_resource_healthy", &X) == Some(0.0)
    });
    assert!(
        m.value("liveconf_check_failures_total", &X) >= 1.0,
        "{}",
        m.text
    );
    // The file still reflects the last good revision and content.
    assert_eq!(read_or_empty(&dest), "v=4\n");
    assert_eq!(m.value("liveconf_resource_revision", &X), rev as f64);
    let content = m.series("liveconf_resource_content", "resource", "x");
    assert_eq!(content.len(), 1, "{}", m.text);
    assert_eq!(content[0]["sha256"], sha256_hex(b"v=4\n"), "{}", m.text);
    assert_eq!(
        m.get("liveconf_render_failures_total", &X),
        Some(0.0),
        "{}",
        m.text
    );

    // Anything but /metrics is a 404.
    let (code, _, _) = http_get(port, "/").expect("GET /");
    assert_eq!(code, 404);
    drop(d);
}

/// CPU time (user + system, in clock ticks) the process has used so far.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after ")".
    f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
}

/// SPEC: "A failed render, check or reload is retried (with backoff), not
/// forgotten until the next change" — and the next change is rendered too.
#[test]
fn a_failing_check_is_retried_and_a_later_fix_is_rendered() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, BAD_CHECK);
    let dest = fx.path("out/x.conf");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = daemon(&fx, &etcd, &["--metrics-addr", &addr]);
    wait_scrape(port, "x rendered", |s| {
        s.get("liveconf_resource_healthy", &X) == Some(1.0)
    });
    etcd.put("/app/x/v", "bad");
    wait_scrape(port, "x failing", |s| {
        s.get("liveconf_resource_healthy", &X) == Some(0.0)
    });
    // Long enough for the first retry (backoff from 1s) to be due.
    std::thread::sleep(Duration::from_secs(2));
    let pid = d.child.id();
    let t0 = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - t0;
    etcd.put("/app/x/v", "5");
    let rendered = {
        let start = Instant::now();
        while read_or_empty(&dest) != "v=5\n" && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        read_or_empty(&dest)
    };
    let m = scrape(port);
    let failures = m.get("liveconf_check_failures_total", &X).unwrap_or(0.0);
    assert!(
        rendered == "v=5\n" && failures >= 2.0 && used < 50,
        "after a failed check: the fix put 3s later rendered: {:?} (file {rendered:?}); \
         check failures (retries) {failures}; CPU used while failing: {used} ticks in 1s\n{}",
        rendered == "v=5\n",
        d.log()
    );
}

/// The metrics body is OpenMetrics (`# EOF`, counters' HELP/TYPE without
/// `_total`), so it must be announced as such: a Prometheus that trusts the
/// `text/plain; version=0.0.4` header parses it with the classic parser, where
/// `# TYPE liveconf_installs counter` does not describe `liveconf_installs_total`.
#[test]
fn metrics_content_type_matches_the_body() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _d = daemon(&fx, &etcd, &["--metrics-addr", &addr]);
    wait_scrape(port, "x rendered", |s| {
        s.get("liveconf_resource_healthy", &X) == Some(1.0)
    });
    let (_, head, body) = http_get(port, "/metrics").unwrap();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    if body.trim_end().ends_with("# EOF") {
        assert!(
            ctype.starts_with("application/openmetrics-text"),
            "OpenMetrics body served as {ctype:?}"
        );
    } else {
        assert!(
            body.contains("# TYPE liveconf_installs_total counter"),
            "classic text format needs TYPE lines naming the samples:\n{body}"
        );
    }
}

// ------------------------------------------------------------------ systemd

/// A NOTIFY_SOCKET in a temporary directory, read with a short timeout.
struct Notify {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    sock: UnixDatagram,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let sock = UnixDatagram::bind(&path).expect("bind notify socket");
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        Notify {
            _dir: dir,
            path,
            sock,
        }
    }

    /// The next datagram, if one comes within 50ms.
    fn recv(&self) -> Option<String> {
        let mut buf = [0u8; 4096];
        match self.sock.recv(&mut buf) {
            Ok(n) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
            Err(_) => None,
        }
    }
}

/// `liveconf render ARGS` with these environment variables (and NOTIFY_SOCKET
/// and the WATCHDOG_* variables removed unless given).
fn daemon_with_env(args: &[String], log: &Path, env: &[(&str, &str)]) -> Daemon {
    let f = std::fs::File::create(log).expect("daemon log");
    let mut c = Command::new(env!("CARGO_BIN_EXE_liveconf"));
    c.arg("render")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env("NO_COLOR", "1")
        .stdout(Stdio::from(f.try_clone().unwrap()))
        .stderr(Stdio::from(f));
    for (k, v) in env {
        c.env(k, v);
    }
    Daemon {
        child: c.spawn().expect("start liveconf"),
        log: log.to_path_buf(),
    }
}

/// A restarted daemon whose first render finds the file unchanged: READY=1's
/// STATUS must not call the resource failing because its batch has not
/// reported yet (the previous run's verdict no longer counts, and the new
/// one is in flight).
#[test]
fn systemd_ready_does_not_count_a_resource_still_in_flight_as_failing() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "");
    let dest = fx.path("out/x.conf");
    let mut first = daemon(&fx, &etcd, &[]);
    wait_for("first run renders", LIMIT, || {
        read_or_empty(&dest) == "v=1\n"
    });
    first.stop();

    let n = Notify::new();
    let socket = n.path.display().to_string();
    let started = Instant::now();
    let d = daemon_with_env(
        &daemon_args(&fx, &etcd, &[]),
        &fx.path("daemon2.log"),
        &[("NOTIFY_SOCKET", &socket)],
    );
    let mut ready = None;
    while ready.is_none() {
        assert!(started.elapsed() < LIMIT, "no READY=1\n{}", d.log());
        if let Some(m) = n.recv()
            && m.lines().any(|l| l == "READY=1")
        {
            ready = Some(m);
        }
    }
    let ready = ready.unwrap_or_default();
    let status = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= with READY=1: {ready}"));
    assert!(status.contains("1 resource, 0 failing"), "{status}");
}

#[test]
fn systemd_ready_after_the_first_render_then_status_watchdog_and_stopping() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    // A first render that takes noticeable time.
    resource_x(&fx, "check_cmd = \"sleep 0.5\"\n");
    let dest = fx.path("out/x.conf");
    let n = Notify::new();
    let socket = n.path.display().to_string();
    let started = Instant::now();
    let mut d = daemon_with_env(
        &daemon_args(&fx, &etcd, &[]),
        &fx.path("daemon.log"),
        &[("NOTIFY_SOCKET", &socket), ("WATCHDOG_USEC", "200000")],
    );

    let mut messages: Vec<(Instant, String)> = Vec::new();
    let mut file_at_ready = None;
    while file_at_ready.is_none() {
        assert!(
            started.elapsed() < LIMIT,
            "no READY=1 within {LIMIT:?}; got {messages:?}\n{}",
            d.log()
        );
        if let Some(m) = n.recv() {
            if m.lines().any(|l| l == "READY=1") {
                // Look at the file the moment READY=1 arrives.
                file_at_ready = Some(read_or_empty(&dest));
            }
            messages.push((Instant::now(), m));
        }
    }
    let ready_after = started.elapsed();
    assert_eq!(
        file_at_ready.as_deref(),
        Some("v=1\n"),
        "READY=1 before the first render installed the file"
    );
    assert!(
        ready_after >= Duration::from_millis(500),
        "READY=1 after {ready_after:?}, before the 0.5s check could have run"
    );
    let ready_msg = &messages.last().unwrap().1;
    let status_line = ready_msg
        .lines()
        .chain(messages.iter().flat_map(|(_, m)| m.lines()))
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_else(|| panic!("no STATUS= line by READY=1: {messages:?}"))
        .to_string();
    assert!(
        status_line.contains("1 resource, 0 failing"),
        "{status_line}"
    );
    assert!(status_line.contains("revision "), "{status_line}");

    // WATCHDOG=1, repeatedly, at least every WATCHDOG_USEC (200ms).
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(1500) {
        if let Some(m) = n.recv() {
            messages.push((Instant::now(), m));
        }
    }
    let watchdogs: Vec<Instant> = messages
        .iter()
        .filter(|(at, m)| *at >= window && m.lines().any(|l| l == "WATCHDOG=1"))
        .map(|(at, _)| *at)
        .collect();
    assert!(
        watchdogs.len() >= 5,
        "{} WATCHDOG=1 in 1.5s with WATCHDOG_USEC=200000: {messages:?}",
        watchdogs.len()
    );
    assert_eq!(
        messages
            .iter()
            .filter(|(_, m)| m.lines().any(|l| l == "READY=1"))
            .count(),
        1,
        "READY=1 sent more than once: {messages:?}"
    );

    // A change updates the STATUS= line.
    etcd.put("/app/x/v", "2");
    let rev = mod_revision(&etcd, "/app/x/v");
    let want = format!("revision {rev}");
    let start = Instant::now();
    loop {
        if let Some(m) = n.recv() {
            if m.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains(&want))
            {
                break;
            }
        }
        assert!(start.elapsed() < LIMIT, "no STATUS= with {want}");
    }
    assert_eq!(read_or_empty(&dest), "v=2\n");

    // SIGTERM: STOPPING=1, exit 0.
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    let mut stopping = false;
    while let Some(m) = n.recv() {
        stopping |= m.lines().any(|l| l == "STOPPING=1");
    }
    assert!(stopping, "no STOPPING=1 on SIGTERM");
}

#[test]
fn no_watchdog_messages_without_watchdog_usec() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "");
    let n = Notify::new();
    let socket = n.path.display().to_string();
    let _d = daemon_with_env(
        &daemon_args(&fx, &etcd, &[]),
        &fx.path("daemon.log"),
        &[("NOTIFY_SOCKET", &socket)],
    );
    let mut all = Vec::new();
    let start = Instant::now();
    while !all.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(start.elapsed() < LIMIT, "no READY=1: {all:?}");
        all.extend(n.recv());
    }
    let window = Instant::now();
    while window.elapsed() < Duration::from_millis(700) {
        all.extend(n.recv());
    }
    assert!(
        !all.iter().any(|m| m.contains("WATCHDOG=1")),
        "WATCHDOG=1 without WatchdogSec: {all:?}"
    );
}

/// Right after `systemctl start` returns (READY=1), the daemon has read a
/// full snapshot from etcd; `liveconf status` should not call etcd
/// unavailable then, nor should the STATUS= line sent with READY=1.
#[test]
fn at_ready_the_status_says_connected() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    resource_x(&fx, "check_cmd = \"sleep 0.3\"\n");
    let n = Notify::new();
    let socket = n.path.display().to_string();
    let d = daemon_with_env(
        &daemon_args(&fx, &etcd, &[]),
        &fx.path("daemon.log"),
        &[("NOTIFY_SOCKET", &socket)],
    );
    let start = Instant::now();
    let ready = loop {
        assert!(start.elapsed() < LIMIT, "no READY=1\n{}", d.log());
        if let Some(m) = n.recv()
            && m.lines().any(|l| l == "READY=1")
        {
            break m;
        }
    };
    let r = status_cmd(&fx.path("state"), &["--format", "nagios"]);
    let line = ready
        .lines()
        .find(|l| l.starts_with("STATUS="))
        .unwrap_or_default()
        .to_string();
    assert!(
        r.code == 0 && line.ends_with("; connected"),
        "right after READY=1:\n  liveconf status: exit {}: {}  STATUS= sent with READY=1: {line:?}",
        r.code,
        r.stdout
    );
}

/// READY=1 comes once every file of the first render is in place; a
/// reload waiting out a long `reload_splay` does not hold it back.
#[test]
fn ready_does_not_wait_for_a_splayed_reload() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let fx = Fx::new();
    let log = fx.path("reloads");
    resource_x(
        &fx,
        &format!(
            "reload_cmd = \"echo reloaded >> {}\"\nreload_splay = \"1h\"\n",
            log.display()
        ),
    );
    let n = Notify::new();
    let socket = n.path.display().to_string();
    let d = daemon_with_env(
        &daemon_args(&fx, &etcd, &[]),
        &fx.path("daemon.log"),
        &[("NOTIFY_SOCKET", &socket)],
    );
    let mut all = Vec::new();
    let start = Instant::now();
    while !all.iter().any(|m: &String| m.contains("READY=1")) {
        assert!(start.elapsed() < LIMIT, "no READY=1: {all:?}\n{}", d.log());
        all.extend(n.recv());
    }
    assert_eq!(read_or_empty(&fx.path("out/x.conf")), "v=1\n");
    assert!(!log.exists(), "the reload ran before its splay");
}
