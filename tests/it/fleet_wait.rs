//! `liveconf fleet wait` against a real etcd and three `liveconf render
//! --report` daemons (one per "host", each with its own confdir, state dir
//! and files): after a put it returns once every host's file holds the
//! change; a host whose check fails is named with the check's error; a
//! host whose report disappears during the wait is named as gone; with
//! nothing changed (or only keys no resource reads) it returns at once.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};
use common::{Fx, Run};
use nix::sys::signal::Signal;

const LIMIT: Duration = Duration::from_secs(20);

/// One host: its daemon and its confdir/state/out directories (dropped
/// after the daemon, so a failing test still shows the daemon's log).
struct Host {
    d: Daemon,
    name: String,
    fx: Fx,
}

impl Host {
    fn file(&self) -> String {
        read_or_empty(&self.fx.path("out/x.conf"))
    }
}

/// Starts `liveconf render --report` as NAME, rendering `v={{/app/x/v}}`
/// into out/x.conf, with the resource's `extra` lines.
fn start_host(etcd: &Etcd, name: &str, ttl: &str, extra: &str) -> Host {
    start_host_with(etcd, name, ttl, extra, |_| {})
}

/// `start_host`, with `more` (other resources) added to its confdir first.
fn start_host_with(
    etcd: &Etcd,
    name: &str,
    ttl: &str,
    extra: &str,
    more: impl FnOnce(&Fx),
) -> Host {
    let fx = Fx::new();
    more(&fx);
    fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app/x\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
    Host {
        d: run_daemon(etcd, &fx, name, ttl),
        name: name.to_string(),
        fx,
    }
}

/// `liveconf render --report` as NAME on the host whose confdir and state
/// are in `fx`.
fn run_daemon(etcd: &Etcd, fx: &Fx, name: &str, ttl: &str) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &endpoints,
            "--state-dir",
            &state,
            "--node-name",
            name,
            "--report",
            "--report-ttl",
            ttl,
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    )
}

/// The check host3 runs: refuses a file holding "bad", saying why.
const REFUSE_BAD: &str =
    "check_cmd = \"if grep -q bad {{src}}; then echo 'refusing a bad value' >&2; exit 1; fi\"\n";

fn three_hosts(etcd: &Etcd, ttl: &str, host3_extra: &str) -> Vec<Host> {
    let hosts = vec![
        start_host(etcd, "host1", ttl, ""),
        start_host(etcd, "host2", ttl, ""),
        start_host(etcd, "host3", ttl, host3_extra),
    ];
    // The reports exist (a wait needs live hosts to wait for).
    wait_for("three fleet reports", LIMIT, || {
        etcd.ctl(&["get", "/liveconf/fleet/", "--prefix", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            == 3
    });
    hosts
}

fn wait_cmd(etcd: &Etcd, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_liveconf"));
    c.args(["fleet", "wait", "--endpoints", &etcd.endpoints()])
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    c
}

/// `etcdctl ARGS -w json` (a put or a delete): the revision it made.
fn write(etcd: &Etcd, args: &[&str]) -> i64 {
    let mut all = args.to_vec();
    all.extend_from_slice(&["-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&etcd.ctl(&all)).expect("etcdctl json");
    v["header"]["revision"].as_i64().expect("header.revision")
}

/// `liveconf fleet wait ARGS`, and how long it took.
fn fleet_wait(etcd: &Etcd, args: &[&str]) -> (Run, Duration) {
    let start = Instant::now();
    let out = wait_cmd(etcd, args)
        .output()
        .expect("run liveconf fleet wait");
    (Run::from(out), start.elapsed())
}

#[test]
fn a_put_then_fleet_wait_returns_when_every_host_has_the_change() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let hosts = three_hosts(&etcd, "30s", "");

    // The first renders: the wait returns once all three have v=1.
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(0);
    for h in &hosts {
        assert_eq!(h.file(), "v=1\n", "{}", h.name);
    }

    // A put, then the wait: when it returns, every file holds the change.
    let rev = write(&etcd, &["put", "/app/x/v", "2"]);
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s"]);
    let files: Vec<String> = hosts.iter().map(Host::file).collect();
    r.expect_code(0);
    assert_eq!(files, ["v=2\n", "v=2\n", "v=2\n"], "{}", r.stdout);
    // The revision waited for is etcd's when the wait began: the put's,
    // or later (the hosts' reports are writes too).
    let waited: i64 = r
        .stdout
        .strip_prefix("3 hosts reflect revision ")
        .and_then(|rest| rest.split([';', ' ']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(waited >= rev, "{}", r.stdout);

    // Nothing changed since: it returns at once, saying so.
    let (r, took) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("(all there when the wait began)"),
        "{}",
        r.stdout
    );
    assert!(took < Duration::from_secs(5), "took {took:?}");
    // A change to keys no resource reads is nothing to wait for either:
    // the hosts' x keeps its older revision and is not behind.
    let other = write(&etcd, &["put", "/other/key", "1"]);
    let (r, took) = fleet_wait(&etcd, &["--timeout", "20s", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], true, "{}", r.stdout);
    assert!(v["revision"].as_i64() >= Some(other), "{}", r.stdout);
    // Nobody was slow: no "slowest" with 0 seconds.
    assert_eq!(v["slowest"], serde_json::Value::Null, "{}", r.stdout);
    assert_eq!(v["hosts"].as_array().map(Vec::len), Some(3), "{}", r.stdout);
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // A host held back (SIGSTOP) when the wait begins: the wait says what
    // it waits for, and returns once that host's report says it caught up.
    hosts[2].d.signal(Signal::SIGSTOP);
    write(&etcd, &["put", "/app/x/v", "3"]);
    let (waiter, said) = wait_saying(&etcd);
    // (host1 and host2 may not have rendered the put yet either.)
    assert!(
        said.starts_with("waiting up to 20s (--timeout) for ")
            && said.contains("host3 (behind: x at revision "),
        "{said}"
    );
    hosts[2].d.signal(Signal::SIGCONT);
    let r = Run::from(waiter.wait_with_output().expect("fleet wait"));
    let files: Vec<String> = hosts.iter().map(Host::file).collect();
    r.expect_code(0);
    assert_eq!(files, ["v=3\n", "v=3\n", "v=3\n"], "{}", r.stdout);
    assert!(
        r.stdout.contains("; the slowest, host3, after "),
        "{}",
        r.stdout
    );

    // A delete leaves no mod_revision behind: a host that has not seen it
    // is still behind (found in etcd's history), named when time is up.
    let (r, del) = a_delete_host2_has_not_seen_is_named(&etcd, &hosts, false);
    assert!(
        r.stdout.contains("host1: reflects revision"),
        "{}",
        r.stdout
    );
    // Resumed, it catches up and the same wait succeeds.
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s", "--revision", &del.to_string()]);
    r.expect_code(0);

    // Narrowed to hosts that do not exist: refused (exit 3), not a pass.
    let (r, _) = fleet_wait(&etcd, &["--hosts", "db*"]);
    r.expect_code(3);
    assert!(
        r.stderr.contains("no live host matches --hosts \"db*\""),
        "{}",
        r.stderr
    );
    let (r, _) = fleet_wait(&etcd, &["--resource", "nope"]);
    r.expect_code(3);
    assert!(
        r.stderr.contains("no live host reports resource nope"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_host_whose_check_fails_is_named_with_the_checks_error() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let hosts = three_hosts(&etcd, "30s", REFUSE_BAD);
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);

    let rev = write(&etcd, &["put", "/app/x/v", "bad"]);
    let (r, took) = fleet_wait(&etcd, &["--timeout", "5s"]);
    r.expect_code(1);
    assert!(took >= Duration::from_secs(5), "took {took:?}");
    let lines: Vec<&str> = r.stdout.lines().collect();
    let host3: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("host3: "))
        .collect();
    assert!(
        host3
            .iter()
            .any(|l| l.starts_with("host3: failing: x (check: ")
                && l.contains("refusing a bad value")),
        "{}",
        r.stdout
    );
    assert!(
        host3
            .iter()
            .any(|l| l.starts_with("host3: behind: x at revision ")
                && l.ends_with(&format!("its keys changed at {rev}"))),
        "{}",
        r.stdout
    );
    for h in ["host1", "host2"] {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&format!("{h}: reflects revision "))),
            "{}",
            r.stdout
        );
    }
    assert!(
        lines.last().is_some_and(
            |l| l.starts_with("timed out after 5s (--timeout): 1 of 3 hosts not at revision ")
        ),
        "{}",
        r.stdout
    );
    // What it says is true of the files: host3 kept its last good one.
    assert_eq!(hosts[2].file(), "v=1\n");
    assert_eq!(hosts[0].file(), "v=bad\n");
    // The others alone are there: narrowed to them, the wait passes.
    fleet_wait(&etcd, &["--timeout", "20s", "--hosts", "host[12]"])
        .0
        .expect_code(0);
    // In JSON, the same verdict.
    let (r, _) = fleet_wait(&etcd, &["--timeout", "1s", "--format", "json"]);
    r.expect_code(1);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v["ok"], false);
    assert_eq!(v["timed_out"], true);
    let h3 = v["hosts"]
        .as_array()
        .and_then(|a| a.iter().find(|h| h["node"] == "host3"))
        .expect("host3 in the JSON");
    assert!(
        h3["problems"][0]
            .as_str()
            .is_some_and(|p| p.contains("refusing a bad value")),
        "{}",
        r.stdout
    );
}

#[test]
fn a_host_whose_report_disappears_mid_wait_is_named_gone() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // A short lease: a stopped host's report expires within 3 s.
    let hosts = three_hosts(&etcd, "3s", "");
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);

    // host2 stops (SIGSTOP: no render, no keep-alive); a change follows.
    hosts[1].d.signal(Signal::SIGSTOP);
    etcd.put("/app/x/v", "2");
    let waiter = wait_cmd(&etcd, &["--timeout", "30s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleet wait");
    let start = Instant::now();
    let out = waiter.wait_with_output().expect("fleet wait");
    let took = start.elapsed();
    hosts[1].d.signal(Signal::SIGCONT);
    let r = Run::from(out);
    r.expect_code(1);
    // It ended when host2's report went away and the others had the
    // change, not at the timeout.
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        r.stdout.lines().any(|l| l.starts_with("host2: gone: ")),
        "{}",
        r.stdout
    );
    for h in ["host1", "host3"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{h}: reflects revision"))),
            "{}",
            r.stdout
        );
    }
    assert_eq!(hosts[0].file(), "v=2\n");
    assert_eq!(hosts[2].file(), "v=2\n");
}

#[test]
fn fleet_wait_waits_for_each_hosts_reload_and_names_a_failing_one() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // host3's reload takes 2 s, then copies the file it reloaded; it
    // fails (exit 3) once the value is "fail".
    let reload = "reload_cmd = \"sleep 2; if grep -q fail {{dest}}; then echo 'reload refused' >&2; exit 3; fi; cp {{dest}} {{dest}}.reloaded\"\n";
    // host3 also renders the key into a resource without a reload, in a
    // batch of its own that ends (and publishes the report) first.
    let hosts = [
        start_host(&etcd, "host1", "30s", ""),
        start_host(&etcd, "host2", "30s", ""),
        start_host_with(&etcd, "host3", "30s", reload, |fx| {
            fx.template("y.tera", "y={{ getv(key=\"/v\") }}\n");
            fx.resource(
                "y",
                "[template]\nsrc = \"y.tera\"\ndest = \"{out}/y.conf\"\nprefix = \"/app/x\"\nkeys = [\"/\"]\n",
            );
        }),
    ];
    wait_for("three fleet reports", LIMIT, || {
        etcd.ctl(&["get", "/liveconf/fleet/", "--prefix", "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .count()
            == 3
    });
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);
    let reloaded = hosts[2].fx.path("out/x.conf.reloaded");
    assert_eq!(read_or_empty(&reloaded), "v=1\n");

    // When the wait returns, host3's reload of the new file has run.
    write(&etcd, &["put", "/app/x/v", "2"]);
    let (r, took) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(0);
    assert_eq!(read_or_empty(&reloaded), "v=2\n", "after {took:?}");
    assert!(took >= Duration::from_secs(1), "took {took:?}");

    // A failing reload fails the wait, naming the reload's error.
    write(&etcd, &["put", "/app/x/v", "fail"]);
    let (r, _) = fleet_wait(&etcd, &["--timeout", "6s"]);
    r.expect_code(1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("host3: failing: x (reload: ") && l.contains("reload refused")),
        "{}",
        r.stdout
    );
    assert_eq!(read_or_empty(&reloaded), "v=2\n");
}

#[test]
fn a_host_already_gone_fails_the_wait_unless_allowed() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let hosts = three_hosts(&etcd, "30s", "");
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);

    // host2's daemon stops (its report withdrawn, its registration kept):
    // its files stay as they were, stale after the put.
    hosts[1].d.signal(Signal::SIGTERM);
    wait_for("host2's report withdrawn", LIMIT, || {
        etcd.ctl(&["get", "/liveconf/fleet/host2", "--keys-only"])
            .trim()
            .is_empty()
    });
    write(&etcd, &["put", "/app/x/v", "2"]);
    let (r, took) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(1);
    // Named once the live hosts are there, not at the timeout.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        r.stdout.lines().any(|l| l.starts_with("host2: gone: ")
            && l.contains("--allow-gone")
            && l.contains("liveconf fleet --forget host2")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("1 of 3 hosts not at revision ")),
        "{}",
        r.stdout
    );
    assert_eq!(hosts[0].file(), "v=2\n");
    assert_eq!(hosts[1].file(), "v=1\n");
    // Accepted: the wait passes, still warning about host2.
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s", "--allow-gone"]);
    r.expect_code(0);
    assert!(r.stderr.contains("host2"), "{}", r.stderr);
}

/// Found by the proxy trial: a host gone when the wait began whose daemon
/// came back during the wait (its proxy back, its report published again)
/// and rendered the change was printed twice, "host2: reflects revision N"
/// and "host2: gone: no live report when the wait began ... its files may
/// be stale", and failed the wait. A host back during the wait is waited
/// for like any other: here the wait passes.
#[test]
fn a_host_gone_when_the_wait_began_and_back_during_it_is_waited_for() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let mut hosts = three_hosts(&etcd, "30s", "");
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);

    hosts[1].d.stop();
    wait_for("host2's report withdrawn", LIMIT, || {
        etcd.ctl(&["get", "/liveconf/fleet/host2", "--keys-only"])
            .trim()
            .is_empty()
    });
    // host3 held back, so the wait is still on when host2 is back.
    hosts[2].d.signal(Signal::SIGSTOP);
    let rev = write(&etcd, &["put", "/app/x/v", "2"]);
    let (waiter, said) = wait_saying(&etcd);
    assert!(said.contains("host3 (behind: x at revision "), "{said}");
    assert!(!said.contains("host2"), "{said}");

    hosts[1].d = run_daemon(&etcd, &hosts[1].fx, "host2", "30s");
    wait_for("host2's file and report at the put", LIMIT, || {
        let report: serde_json::Value = serde_json::from_str(
            etcd.ctl(&["get", "/liveconf/fleet/host2", "--print-value-only"])
                .trim(),
        )
        .unwrap_or_default();
        hosts[1].file() == "v=2\n" && report["resources"]["x"]["revision"].as_i64() >= Some(rev)
    });
    hosts[2].d.signal(Signal::SIGCONT);
    let r = Run::from(waiter.wait_with_output().expect("fleet wait"));
    assert!(!r.stdout.contains("gone"), "{}", r.stdout);
    r.expect_code(0);
    assert!(
        r.stdout.starts_with("3 hosts reflect revision "),
        "{}",
        r.stdout
    );
}

/// Found by the fleet wait trial. A put of the value a key already holds
/// moves its mod revision: the hosts' files were never re-rendered for
/// it, so every wait after it timed out with every host "behind" (until
/// the next real change). And a delete after a compaction was not looked
/// for when the resource's other keys were older than the compaction (its
/// history read was refused whole): the wait passed at once while a host
/// still had the deleted key in its file.
#[test]
fn a_put_of_the_same_value_and_a_delete_after_a_compaction_are_waited_for() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let hosts = three_hosts(&etcd, "30s", "");
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);

    let same = write(&etcd, &["put", "/app/x/v", "1"]);
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(0);
    assert!(
        r.stdout.starts_with("3 hosts reflect revision "),
        "{}",
        r.stdout
    );
    let status: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(hosts[0].fx.path("state/status.json")).expect("status.json"),
    )
    .expect("status.json is JSON");
    assert!(
        status["resources"]["x"]["revision"].as_i64() >= Some(same),
        "{status}"
    );

    a_delete_host2_has_not_seen_is_named(&etcd, &hosts, true);
    let (r, _) = fleet_wait(&etcd, &["--timeout", "20s"]);
    r.expect_code(0);
    for h in &hosts {
        assert_eq!(h.file(), "v=1\n", "{}", h.name);
    }
}

/// Found by the fleet wait trial: etcd frozen during a short wait, the
/// timeout named the hosts as etcd last had them, with no word that etcd
/// had stopped answering. It says so now.
#[test]
fn a_timeout_with_etcd_frozen_says_etcd_did_not_answer() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let hosts = three_hosts(&etcd, "30s", "");
    fleet_wait(&etcd, &["--timeout", "20s"]).0.expect_code(0);
    hosts[1].d.signal(Signal::SIGSTOP);
    write(&etcd, &["put", "/app/x/v", "2"]);
    let streams = watch_streams(&etcd);
    let mut waiter = wait_cmd(&etcd, &["--timeout", "3s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleet wait");
    let mut stderr = BufReader::new(waiter.stderr.take().expect("stderr"));
    let mut said = String::new();
    stderr
        .read_line(&mut said)
        .expect("read fleet wait's stderr");
    assert!(said.contains("host2 (behind: x at revision "), "{said}");
    // Frozen once the wait watches the reports (its second watch stream,
    // after the one reading etcd's history for deletes): frozen before,
    // the wait cannot open its watch and says it lost etcd (exit 4).
    wait_for("the wait's watch of the reports", LIMIT, || {
        watch_streams(&etcd) >= streams + 2
    });
    etcd.members[0].signal(Signal::SIGSTOP);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).expect("the rest of stderr");
    let mut r = Run::from(waiter.wait_with_output().expect("fleet wait"));
    etcd.members[0].signal(Signal::SIGCONT);
    hosts[1].d.signal(Signal::SIGCONT);
    r.stderr = rest.clone();
    r.expect_code(1);
    assert!(
        r.stdout.contains("host2: behind: x at revision "),
        "{}",
        r.stdout
    );
    assert!(
        rest.contains(&format!(
            "etcd at {}: a read got no answer within 1s: the hosts above are as etcd last said",
            etcd.members[0].url()
        )),
        "{rest}"
    );
}

/// A key put (and waited for), etcd compacted when `compact`, host2 held
/// back (SIGSTOP) while the key is deleted: `fleet wait --timeout 2s`
/// names host2 behind the delete (exit 1). The wait, and the delete's
/// revision.
fn a_delete_host2_has_not_seen_is_named(etcd: &Etcd, hosts: &[Host], compact: bool) -> (Run, i64) {
    let extra = write(etcd, &["put", "/app/x/extra", "1"]);
    fleet_wait(etcd, &["--timeout", "20s"]).0.expect_code(0);
    if compact {
        etcd.ctl(&["compact", &etcd.revision().to_string()]);
    }
    hosts[1].d.signal(Signal::SIGSTOP);
    let del = write(etcd, &["del", "/app/x/extra"]);
    let (r, _) = fleet_wait(etcd, &["--timeout", "2s"]);
    hosts[1].d.signal(Signal::SIGCONT);
    r.expect_code(1);
    assert!(
        r.stdout.contains(&format!(
            "host2: behind: x at revision {extra}, its keys changed at {del}"
        )),
        "{}",
        r.stdout
    );
    (r, del)
}

/// How many watch streams etcd has seen opened.
fn watch_streams(etcd: &Etcd) -> u64 {
    etcd.members[0]
        .server_metrics()
        .lines()
        .filter(|l| {
            l.starts_with("grpc_server_started_total{") && l.contains("grpc_method=\"Watch\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// `fleet wait --timeout 20s`, started, and the first line it says on
/// stderr (what it waits for).
fn wait_saying(etcd: &Etcd) -> (std::process::Child, String) {
    let mut waiter = wait_cmd(etcd, &["--timeout", "20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleet wait");
    let mut said = String::new();
    BufReader::new(waiter.stderr.take().expect("stderr"))
        .read_line(&mut said)
        .expect("read fleet wait's stderr");
    (waiter, said)
}
