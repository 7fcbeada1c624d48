//! Fleet consistency against a real etcd: several `liveconf render --report`
//! daemons (one per "host", each with its own confdir, state dir and files)
//! and `liveconf fleet`, which names the hosts that are stale, failing, gone
//! or diverging, and forgets a host only when told to.

use crate::common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};
use common::{Fx, Run};
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

const TEMPLATE: &str = "v={{ getv(key=\"/v\") }}\n";

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

/// Writes resource `x` (`TEMPLATE` of /app/x/v, or `template`) with `extra` lines.
fn confdir(fx: &Fx, template: &str, extra: &str) {
    fx.template("x.tera", template);
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app/x\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
}

/// Starts `liveconf render --report --node-name NAME --report-ttl TTL --wait 0s`.
fn start_host(etcd: &Etcd, name: &str, ttl: &str, template: &str, extra: &str) -> Host {
    start_host_with(etcd, name, ttl, template, extra, &[], None)
}

/// Like [`start_host`], with more arguments and an optional CONFDIR/liveconf.toml.
fn start_host_with(
    etcd: &Etcd,
    name: &str,
    ttl: &str,
    template: &str,
    extra: &str,
    args: &[&str],
    settings: Option<&str>,
) -> Host {
    let fx = Fx::new();
    confdir(&fx, template, extra);
    if let Some(toml) = settings {
        std::fs::write(fx.path("liveconf.toml"), toml).unwrap();
    }
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    let mut all = vec![
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
    ];
    all.extend_from_slice(args);
    let d = Daemon::start(&all, &fx.path("daemon.log"));
    Host {
        name: name.to_string(),
        fx,
        d,
    }
}

fn three_hosts(etcd: &Etcd, ttl: &str, host3_template: &str, host3_extra: &str) -> Vec<Host> {
    vec![
        start_host(etcd, "host1", ttl, TEMPLATE, ""),
        start_host(etcd, "host2", ttl, TEMPLATE, ""),
        start_host(etcd, "host3", ttl, host3_template, host3_extra),
    ]
}

/// `liveconf fleet --endpoints E ARGS`.
fn fleet(etcd: &Etcd, args: &[&str]) -> Run {
    fleet_as(etcd, &[], args)
}

fn fleet_as(etcd: &Etcd, auth: &[&str], args: &[&str]) -> Run {
    Run::from(
        Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .arg("fleet")
            .args(["--endpoints", &etcd.endpoints()])
            .args(auth)
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .expect("run liveconf fleet"),
    )
}

/// `liveconf fleet --max-lag 1s --json`: (exit code, node → problems).
fn fleet_json(etcd: &Etcd) -> (i32, BTreeMap<String, Vec<String>>, Run) {
    let r = fleet(etcd, &["--max-lag", "1s", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
        panic!(
            "fleet --json is not JSON ({e}): exit {}\n{}\n{}",
            r.code, r.stdout, r.stderr
        )
    });
    let hosts = v
        .as_array()
        .expect("fleet --json: an array")
        .iter()
        .map(|h| {
            (
                h["node"].as_str().unwrap().to_string(),
                h["problems"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    (r.code, hosts, r)
}

/// The hosts `fleet` names, with their problems (hosts without problems left out).
fn with_problems(hosts: &BTreeMap<String, Vec<String>>) -> BTreeMap<&str, &Vec<String>> {
    hosts
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .map(|(n, p)| (n.as_str(), p))
        .collect()
}

/// The reports under /liveconf/fleet/, read with etcdctl: node → report.
fn reports(etcd: &Etcd, auth: &[&str]) -> BTreeMap<String, Value> {
    let mut args = auth.to_vec();
    args.extend_from_slice(&["get", "/liveconf/fleet/", "--prefix"]);
    let out = etcd.ctl(&args);
    let lines: Vec<&str> = out.lines().collect();
    lines
        .chunks(2)
        .filter_map(|kv| {
            let node = kv[0].strip_prefix("/liveconf/fleet/")?;
            Some((node.to_string(), serde_json::from_str(kv.get(1)?).ok()?))
        })
        .collect()
}

/// Waits until the reports of `nodes` say x is healthy at a revision >= `rev`.
fn wait_reports(etcd: &Etcd, nodes: &[&str], rev: i64) -> BTreeMap<String, Value> {
    wait_reports_as(etcd, &[], nodes, rev)
}

fn wait_reports_as(
    etcd: &Etcd,
    auth: &[&str],
    nodes: &[&str],
    rev: i64,
) -> BTreeMap<String, Value> {
    let ok = |r: &BTreeMap<String, Value>| {
        nodes.iter().all(|n| {
            let x = &r.get(*n).unwrap_or(&Value::Null)["resources"]["x"];
            x["healthy"] == true && x["revision"].as_i64().unwrap_or(0) >= rev
        })
    };
    let start = Instant::now();
    loop {
        let r = reports(etcd, auth);
        if ok(&r) {
            return r;
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for healthy reports of {nodes:?} at revision >= {rev}: {r:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The mod revision of KEY.
fn mod_revision(etcd: &Etcd, key: &str) -> i64 {
    let out = etcd.ctl(&["get", key, "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    v["kvs"][0]["mod_revision"].as_i64().expect("mod_revision")
}

/// Waits (bounded) until `fleet --max-lag 1s` exits 0; returns its output.
fn wait_fleet_ok(etcd: &Etcd, what: &str) -> Run {
    let start = Instant::now();
    loop {
        let r = fleet(etcd, &["--max-lag", "1s"]);
        if r.code == 0 {
            return r;
        }
        assert!(
            start.elapsed() < LIMIT,
            "timed out waiting for {what}: fleet exit {}\n{}{}",
            r.code,
            r.stdout,
            r.stderr
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Asserts the text output lists exactly these hosts, all in sync.
fn assert_all_in_sync(r: &Run, nodes: &[&str]) {
    r.expect_code(0);
    let mut want: Vec<String> = nodes.iter().map(|n| format!("{n}: in sync")).collect();
    want.push(format!(
        "{} host{}, 0 with problems",
        nodes.len(),
        if nodes.len() == 1 { "" } else { "s" }
    ));
    let got: Vec<&str> = r.stdout.lines().collect();
    assert_eq!(got, want, "fleet output:\n{}{}", r.stdout, r.stderr);
}

#[test]
fn a_stopped_host_is_stale_and_a_host_whose_check_fails_is_failing() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // A long report lease: a SIGSTOPped host keeps its report (stale, not gone).
    let hosts = three_hosts(
        &etcd,
        "30s",
        TEMPLATE,
        "check_cmd = \"! grep -q bad {{src}}\"\n",
    );
    let rev0 = mod_revision(&etcd, "/app/x/v");
    wait_reports(&etcd, &["host1", "host2", "host3"], rev0);
    for h in &hosts {
        assert_eq!(h.file(), "v=1\n", "{}", h.name);
    }
    assert_all_in_sync(
        &fleet(&etcd, &["--max-lag", "1s"]),
        &["host1", "host2", "host3"],
    );

    // host2 stops processing; a change reaches the two others only.
    hosts[1].d.signal(Signal::SIGSTOP);
    etcd.put("/app/x/v", "2");
    let rev = mod_revision(&etcd, "/app/x/v");
    wait_reports(&etcd, &["host1", "host3"], rev);
    for h in [&hosts[0], &hosts[2]] {
        assert_eq!(h.file(), "v=2\n", "{}", h.name);
    }
    let (code, found, r) = fleet_json(&etcd);
    let named = with_problems(&found);
    assert_eq!(
        named.keys().copied().collect::<Vec<_>>(),
        ["host2"],
        "{}",
        r.stdout
    );
    assert_eq!(named["host2"].len(), 1, "{}", r.stdout);
    assert!(
        named["host2"][0].starts_with("stale: x at revision "),
        "{}",
        r.stdout
    );
    assert_eq!(code, 1, "{}", r.stdout);
    assert_eq!(found.len(), 3, "{}", r.stdout);
    let r = fleet(&etcd, &["--max-lag", "1s"]);
    r.expect_code(1);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("host2: stale: x")),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("3 hosts, 1 with problems"),
        "{}",
        r.stdout
    );
    assert_eq!(hosts[1].file(), "v=1\n");

    // host2 resumes and catches up.
    hosts[1].d.signal(Signal::SIGCONT);
    let r = wait_fleet_ok(&etcd, "host2 catching up after SIGCONT");
    assert_all_in_sync(&r, &["host1", "host2", "host3"]);
    assert_eq!(hosts[1].file(), "v=2\n");

    // A value host3's check rejects: host3, and only host3, is failing.
    etcd.put("/app/x/v", "bad");
    let rev = mod_revision(&etcd, "/app/x/v");
    wait_reports(&etcd, &["host1", "host2"], rev);
    wait_for("host3 reporting x failing", LIMIT, || {
        reports(&etcd, &[])["host3"]["resources"]["x"]["healthy"] == false
    });
    let (code, found, r) = fleet_json(&etcd);
    let named = with_problems(&found);
    assert_eq!(
        named.keys().copied().collect::<Vec<_>>(),
        ["host3"],
        "{}",
        r.stdout
    );
    assert!(
        named["host3"].iter().any(|p| p.starts_with("failing: x")),
        "{}",
        r.stdout
    );
    // Any other problem of host3's is its being behind (its file is the last good one).
    for p in named["host3"] {
        assert!(
            p.starts_with("failing: x") || p.starts_with("stale: x"),
            "{}",
            r.stdout
        );
    }
    assert_eq!(code, 1, "{}", r.stdout);
    assert_eq!(hosts[2].file(), "v=2\n");
    assert_eq!(hosts[0].file(), "v=bad\n");
    // A failing host is not waited for: `--max-lag` is for hosts that can
    // catch up (it waited the whole minute for host3 before).
    let r = fleet(&etcd, &["--max-lag", "60s"]);
    r.expect_code(1);
    assert!(!r.stderr.contains("waiting up to"), "{}", r.stderr);
    assert!(
        r.stdout.lines().any(|l| l.starts_with("host3: failing: x")),
        "{}",
        r.stdout
    );
}

#[test]
fn a_dead_host_is_gone_until_forgotten() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // report_ttl = "3s" in liveconf.toml: `--report-ttl 3s` is ignored (see
    // report_ttl_flag_sets_the_lease below).
    let mut hosts: Vec<Host> = ["host1", "host2", "host3"]
        .iter()
        .map(|n| {
            start_host_with(
                &etcd,
                n,
                "3s",
                TEMPLATE,
                "",
                &[],
                Some("report_ttl = \"3s\"\n"),
            )
        })
        .collect();
    wait_reports(
        &etcd,
        &["host1", "host2", "host3"],
        mod_revision(&etcd, "/app/x/v"),
    );
    assert_all_in_sync(
        &fleet(&etcd, &["--max-lag", "1s"]),
        &["host1", "host2", "host3"],
    );

    // host3 dies: no SIGTERM, no clean-up.
    let _ = hosts[2].d.child.kill();
    let _ = hosts[2].d.child.wait();
    let killed = Instant::now();
    let (code, found, r) = loop {
        let (code, found, r) = fleet_json(&etcd);
        if !found["host3"].is_empty() {
            break (code, found, r);
        }
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "host3 still reported alive 15s after it died with a 3s report lease:\n{}",
            r.stdout
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        found["host3"],
        ["gone (registered, no live report)"],
        "{}",
        r.stdout
    );
    assert_eq!(
        with_problems(&found).keys().copied().collect::<Vec<_>>(),
        ["host3"],
        "{}",
        r.stdout
    );
    assert_eq!(code, 1, "{}", r.stdout);
    // Not forgotten: still gone a while later.
    std::thread::sleep(Duration::from_secs(1));
    let r = fleet(&etcd, &["--max-lag", "1s"]);
    r.expect_code(1);
    assert!(r.stdout.contains("host3: gone"), "{}", r.stdout);

    // A live host cannot be forgotten (it would vanish, never to be
    // reported gone).
    let r = fleet(&etcd, &["--forget", "host1"]);
    assert_ne!(r.code, 0, "forgot a live host: {}", r.stdout);
    assert!(r.stderr.contains("host1 is alive"), "{}", r.stderr);

    // Until an operator says so.
    let r = fleet(&etcd, &["--forget", "host3"]);
    r.expect_code(0);
    assert_eq!(r.stdout.trim(), "forgot host3");
    assert_all_in_sync(&fleet(&etcd, &["--max-lag", "1s"]), &["host1", "host2"]);
    let r = fleet(&etcd, &["--forget", "host3"]);
    assert_ne!(r.code, 0, "forgetting an unknown host succeeded");
    assert!(r.stderr.contains("host3"), "{}", r.stderr);
}

#[test]
fn a_host_rendering_different_content_at_the_same_revision_is_diverging() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // host3 has a host-specific template.
    let hosts = three_hosts(&etcd, "30s", "v={{ getv(key=\"/v\") }} # host3\n", "");
    wait_reports(
        &etcd,
        &["host1", "host2", "host3"],
        mod_revision(&etcd, "/app/x/v"),
    );
    // A change: every host renders it, at that change's revision.
    etcd.put("/app/x/v", "2");
    let rev = mod_revision(&etcd, "/app/x/v");
    let reps = wait_reports(&etcd, &["host1", "host2", "host3"], rev);
    for n in ["host1", "host2", "host3"] {
        assert_eq!(reps[n]["resources"]["x"]["revision"], rev, "{reps:#?}");
    }
    assert_eq!(hosts[0].file(), "v=2\n");
    assert_eq!(hosts[2].file(), "v=2 # host3\n");

    let (code, found, r) = fleet_json(&etcd);
    let named = with_problems(&found);
    assert_eq!(
        named.keys().copied().collect::<Vec<_>>(),
        ["host3"],
        "{}",
        r.stdout
    );
    assert_eq!(named["host3"].len(), 1, "{}", r.stdout);
    let line = &named["host3"][0];
    assert!(
        line.starts_with("diverging: x content ")
            && line.ends_with(" differs from the majority's (2 of the 3 hosts rendering it)"),
        "{}",
        r.stdout
    );
    assert_eq!(code, 1, "{}", r.stdout);
    let r = fleet(&etcd, &["--max-lag", "1s"]);
    r.expect_code(1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("host3: diverging: x")),
        "{}",
        r.stdout
    );
}

/// The same divergence, on hosts that started at different times and have
/// seen no change of /app/x since: their files reflect the same data (the
/// same mod revision of every key they read), yet each report carries the
/// revision of its own start-up snapshot, so no two hosts are compared.
#[test]
fn divergence_is_found_without_waiting_for_a_change() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let rev0 = mod_revision(&etcd, "/app/x/v");
    // Started one after the other, as hosts are.
    let mut hosts = Vec::new();
    for (n, t) in [
        ("host1", TEMPLATE),
        ("host2", TEMPLATE),
        ("host3", "v={{ getv(key=\"/v\") }} # host3\n"),
    ] {
        hosts.push(start_host(&etcd, n, "30s", t, ""));
        wait_reports(&etcd, &[n], rev0);
    }
    assert_eq!(hosts[2].file(), "v=1 # host3\n");
    let (code, found, r) = fleet_json(&etcd);
    assert_eq!(
        with_problems(&found).keys().copied().collect::<Vec<_>>(),
        ["host3"],
        "host3's x differs from its two peers' for the same data:\n{}",
        r.stdout
    );
    assert_eq!(code, 1, "{}", r.stdout);
}

// ------------------------------------------------------------------ auth

const ROOT_PASSWORD: &str = "r00t-Fleet-Pw";
const HOST1_PASSWORD: &str = "h0st1-Fleet-Pw";

#[test]
fn a_host_allowed_to_write_only_its_own_keys_publishes_its_report() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // host1 may read what it renders and write its own two fleet keys, no more.
    etcd.ctl(&["role", "add", "host1"]);
    for key in ["/liveconf/fleet/host1", "/liveconf/registry/host1"] {
        etcd.ctl(&["role", "grant-permission", "host1", "readwrite", key]);
    }
    etcd.ctl(&[
        "role",
        "grant-permission",
        "host1",
        "--prefix=true",
        "read",
        "/app/x",
    ]);
    etcd.ctl(&["user", "add", &format!("host1:{HOST1_PASSWORD}")]);
    etcd.ctl(&["user", "grant-role", "host1", "host1"]);
    etcd.ctl(&["user", "add", &format!("root:{ROOT_PASSWORD}")]);
    etcd.ctl(&["user", "grant-role", "root", "root"]);
    etcd.ctl(&["auth", "enable"]);
    let root_user = format!("root:{ROOT_PASSWORD}");
    let as_root = ["--user", root_user.as_str()];

    let pw_dir = tempfile::tempdir().unwrap();
    let pw_file = |name: &str, pw: &str| {
        use std::os::unix::fs::PermissionsExt;
        let p = pw_dir.path().join(name);
        std::fs::write(&p, format!("{pw}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p.display().to_string()
    };
    let host1_pw = pw_file("host1", HOST1_PASSWORD);
    let root_pw = pw_file("root", ROOT_PASSWORD);

    // The role really is that narrow: host1 cannot write another host's report.
    let denied = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["--endpoints", &etcd.endpoints()])
        .args(["--user", &format!("host1:{HOST1_PASSWORD}")])
        .args(["put", "/liveconf/fleet/host2", "{}"])
        .output()
        .unwrap();
    assert!(!denied.status.success(), "host1 could write host2's report");

    let h = start_host_with(
        &etcd,
        "host1",
        "30s",
        TEMPLATE,
        "",
        &["--username", "host1", "--password-file", &host1_pw],
        None,
    );
    let rev0 = {
        let mut a = as_root.to_vec();
        a.extend_from_slice(&["get", "/app/x/v", "-w", "json"]);
        let v: Value = serde_json::from_str(&etcd.ctl(&a)).unwrap();
        v["kvs"][0]["mod_revision"].as_i64().unwrap()
    };
    wait_reports_as(&etcd, &as_root, &["host1"], rev0);
    assert_eq!(h.file(), "v=1\n");

    let root_auth = ["--username", "root", "--password-file", root_pw.as_str()];
    let r = fleet_as(&etcd, &root_auth, &["--max-lag", "1s"]);
    assert_all_in_sync(&r, &["host1"]);

    // It keeps publishing: a change shows up in its report.
    let mut put = as_root.to_vec();
    put.extend_from_slice(&["put", "/app/x/v", "2"]);
    etcd.ctl(&put);
    let mut get = as_root.to_vec();
    get.extend_from_slice(&["get", "/app/x/v", "-w", "json"]);
    let v: Value = serde_json::from_str(&etcd.ctl(&get)).unwrap();
    let rev = v["kvs"][0]["mod_revision"].as_i64().unwrap();
    wait_reports_as(&etcd, &as_root, &["host1"], rev);
    assert_eq!(h.file(), "v=2\n");
    assert_all_in_sync(
        &fleet_as(&etcd, &root_auth, &["--max-lag", "1s"]),
        &["host1"],
    );
    assert_eq!(
        h.d.count("fleet report:"),
        0,
        "the report was refused:\n{}",
        h.d.log()
    );
    assert!(!h.d.log().contains(HOST1_PASSWORD), "password logged");
}

/// The granted TTL of the lease attached to NODE's report.
fn report_lease_ttl(etcd: &Etcd, node: &str) -> i64 {
    let out = etcd.ctl(&["get", &format!("/liveconf/fleet/{node}"), "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    let lease = v["kvs"][0]["lease"]
        .as_i64()
        .expect("report without a lease");
    let out = etcd.ctl(&["lease", "timetolive", &format!("{lease:x}"), "-w", "json"]);
    let v: Value = serde_json::from_str(&out).expect("etcdctl json");
    v["granted-ttl"].as_i64().expect("granted-ttl")
}

#[test]
fn report_ttl_in_liveconf_toml_sets_the_lease() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let _h = start_host_with(
        &etcd,
        "host1",
        "7s",
        TEMPLATE,
        "",
        &[],
        Some("report_ttl = \"7s\"\n"),
    );
    wait_reports(&etcd, &["host1"], mod_revision(&etcd, "/app/x/v"));
    assert_eq!(report_lease_ttl(&etcd, "host1"), 7);
}

#[test]
fn report_ttl_flag_sets_the_lease() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let _h = start_host(&etcd, "host1", "7s", TEMPLATE, "");
    wait_reports(&etcd, &["host1"], mod_revision(&etcd, "/app/x/v"));
    assert_eq!(
        report_lease_ttl(&etcd, "host1"),
        7,
        "lease of a daemon started with --report-ttl 7s"
    );
}

#[test]
fn a_host_that_never_installed_its_file_is_missing_and_failing() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let _hosts = three_hosts(&etcd, "30s", TEMPLATE, "check_cmd = \"false\"\n");
    wait_reports(&etcd, &["host1", "host2"], mod_revision(&etcd, "/app/x/v"));
    let start = Instant::now();
    let (code, found, r) = loop {
        let (code, found, r) = fleet_json(&etcd);
        if found.get("host3").is_some_and(|p| p.len() >= 2) {
            break (code, found, r);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "{}", r.stdout);
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(code, 1, "{}", r.stdout);
    let named = with_problems(&found);
    assert_eq!(
        named.keys().copied().collect::<Vec<_>>(),
        ["host3"],
        "{}",
        r.stdout
    );
    let problems = named["host3"];
    assert!(
        problems.iter().any(|p| p.starts_with("failing: x (check:")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p == "missing: x has never been installed on this host"),
        "{problems:?}"
    );
}

/// A host stopped cleanly (SIGTERM, `systemctl stop`) no longer keeps its
/// files in step: it is reported gone at once, not after its report's
/// lease (here a minute) runs out.
#[test]
fn a_cleanly_stopped_host_is_gone_at_once() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    // (Read before the host starts: its own report puts move the revision.)
    let rev = etcd.revision();
    let mut h = start_host(&etcd, "host9", "60s", TEMPLATE, "");
    wait_reports(&etcd, &["host9"], rev);
    assert_eq!(h.d.stop(), Some(0), "{}", h.d.log());
    let (_, found, r) = fleet_json(&etcd);
    assert_eq!(
        found["host9"],
        ["gone (registered, no live report)"],
        "{}",
        r.stdout
    );
}
