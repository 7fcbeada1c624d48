//! The daemon against a real etcd: puts and deletes reach files, only the
//! dependent resources re-render, bursts coalesce, SIGHUP and SIGTERM.

use crate::common;

use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// Confdir with resources `a` (prefix /app/a) and `b` (prefix /app/b,
/// which renders a default from no keys: `allow_empty`).
fn two_resources(fx: &Fx, extra: &str) {
    fx.template("a.tera", "a={{ getv(key=\"/x\") }}\n");
    fx.template("b.tera", "b={{ getv(key=\"/x\", default=\"none\") }}\n");
    for n in ["a", "b"] {
        let empty = if n == "b" { "allow_empty = true\n" } else { "" };
        fx.resource(
            n,
            &format!(
                "[template]\nsrc = \"{n}.tera\"\ndest = \"{{out}}/{n}.conf\"\nprefix = \"/app/{n}\"\nkeys = [\"/\"]\n{empty}{extra}"
            ),
        );
    }
}

fn daemon(fx: &Fx, etcd: &Etcd, extra: &[&str]) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    let mut args = vec![
        "--confdir",
        &confdir,
        "--endpoints",
        &endpoints,
        "--state-dir",
        &state,
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args, &fx.path("daemon.log"))
}

#[test]
fn puts_and_deletes_reach_the_files_and_unrelated_keys_render_nothing() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    let fx = Fx::new();
    two_resources(&fx, "");
    let d = daemon(&fx, &etcd, &["--wait", "0s"]);
    let a = fx.path("out/a.conf");
    let b = fx.path("out/b.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&a) == "a=1\n" && read_or_empty(&b) == "b=none\n"
    });

    etcd.put("/app/a/x", "2");
    wait_for("put reaches a.conf", LIMIT, || read_or_empty(&a) == "a=2\n");

    etcd.put("/app/b/x", "7");
    wait_for("put reaches b.conf", LIMIT, || read_or_empty(&b) == "b=7\n");
    etcd.del("/app/b/x");
    wait_for("delete reaches b.conf", LIMIT, || {
        read_or_empty(&b) == "b=none\n"
    });
    let rev = etcd.revision();
    wait_for("the delete's render logged", LIMIT, || {
        d.log().contains(&format!("b: rendered revision {rev}"))
    });

    // A change under b's prefix does not re-render a; keys nobody watches render nothing.
    let a_renders = d.count("a: rendered");
    let b_renders = d.count("b: rendered");
    etcd.put("/elsewhere/x", "1");
    etcd.put("/app/bx", "1");
    etcd.put("/app/b/x", "8");
    wait_for("b re-rendered", LIMIT, || read_or_empty(&b) == "b=8\n");
    wait_for("b's render logged", LIMIT, || {
        d.count("b: rendered") == b_renders + 1
    });
    assert_eq!(
        d.count("a: rendered"),
        a_renders,
        "a re-rendered:\n{}",
        d.log()
    );
    assert_eq!(
        d.count("b: rendered"),
        b_renders + 1,
        "unrelated keys rendered:\n{}",
        d.log()
    );

    // A required key disappears: the resource fails, the old file stays.
    etcd.del("/app/a/x");
    wait_for("failure logged", LIMIT, || d.count("a: render failed") >= 1);
    assert_eq!(read_or_empty(&a), "a=2\n");
    let status = || -> serde_json::Value {
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
    };
    wait_for("status shows a failing", LIMIT, || {
        status()["resources"]["a"]["healthy"] == false
    });
    assert_eq!(status()["resources"]["a"]["error"]["step"], "render");
    assert_eq!(status()["resources"]["b"]["healthy"], true);

    // And recovers when it comes back.
    etcd.put("/app/a/x", "3");
    wait_for("recovery", LIMIT, || read_or_empty(&a) == "a=3\n");
}

#[test]
fn a_burst_of_puts_converges_with_few_reloads() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "0");
    let fx = Fx::new();
    let reloads = fx.path("reloads");
    two_resources(
        &fx,
        &format!("reload_cmd = \"echo r >> {}\"\n", reloads.display()),
    );
    let _d = daemon(&fx, &etcd, &[]);
    let a = fx.path("out/a.conf");
    wait_for("initial render", LIMIT, || read_or_empty(&a) == "a=0\n");

    // 1,000 puts in a tight loop.
    let endpoint = etcd.live_endpoint();
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        for i in 1..=1000 {
            c.put("/app/a/x", i.to_string(), None).await.unwrap();
        }
    });
    let last = etcd
        .ctl(&["get", "/app/a/x", "--print-value-only"])
        .trim()
        .to_string();
    wait_for("final state", LIMIT, || {
        read_or_empty(&a) == format!("a={last}\n")
    });
    let n = read_or_empty(&reloads).lines().count();
    assert!(n >= 2, "no reload after the burst");
    assert!(n < 100, "{n} reloads for 1,000 puts");
}

#[test]
fn sighup_adds_a_resource_without_restarting() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    etcd.put("/app/c/x", "3");
    let fx = Fx::new();
    two_resources(&fx, "");
    let d = daemon(&fx, &etcd, &["--wait", "0s"]);
    wait_for("initial render", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "a=1\n"
    });

    fx.template("c.tera", "c={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "c",
        "[template]\nsrc = \"c.tera\"\ndest = \"{out}/c.conf\"\nprefix = \"/app/c\"\nkeys = [\"/\"]\n",
    );
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("new resource rendered", LIMIT, || {
        read_or_empty(&fx.path("out/c.conf")) == "c=3\n"
    });
    etcd.put("/app/c/x", "4");
    wait_for("new resource follows etcd", LIMIT, || {
        read_or_empty(&fx.path("out/c.conf")) == "c=4\n"
    });
    etcd.put("/app/a/x", "2");
    wait_for("old resource still follows etcd", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "a=2\n"
    });

    // Removing a resource (here: breaking its file) keeps the watch: no
    // new snapshot, and the others still follow etcd.
    let snapshots = d.count("new snapshot and watch");
    std::fs::write(fx.path("conf.d/c.toml"), "[template]\nbogus = 1\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the broken resource reported", LIMIT, || {
        d.count("c: load failed") >= 1
    });
    etcd.put("/app/a/x", "3");
    wait_for("a still follows etcd", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "a=3\n"
    });
    assert_eq!(d.count("new snapshot and watch"), snapshots, "{}", d.log());
    assert_eq!(read_or_empty(&fx.path("out/c.conf")), "c=4\n");
}

#[test]
fn sigterm_mid_burst_stops_cleanly_without_stage_files() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "0");
    let fx = Fx::new();
    // A slow check keeps a stage file on disk for a while during each install.
    two_resources(&fx, "check_cmd = \"sleep 0.2\"\n");
    let mut d = daemon(&fx, &etcd, &["--wait", "0s"]);
    wait_for("initial render", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "a=0\n"
    });
    for i in 1..=20 {
        etcd.put("/app/a/x", &i.to_string());
    }
    wait_for("an install under way", LIMIT, || {
        common::list(&fx.path("out"))
            .iter()
            .any(|f| f.ends_with(".liveconf-tmp"))
            || d.count("a: rendered") > 1
    });
    assert_eq!(
        d.stop(),
        Some(0),
        "daemon did not exit cleanly:\n{}",
        d.log()
    );
    let files = common::list(&fx.path("out"));
    assert_eq!(files, ["a.conf", "b.conf"], "left behind: {files:?}");
    let a = read_or_empty(&fx.path("out/a.conf"));
    assert!(a.starts_with("a="), "{a}");
}

#[test]
fn once_against_etcd_and_unreachable_etcd() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "5");
    let fx = Fx::new();
    two_resources(&fx, "");
    let confdir = fx.dir.path().display().to_string();
    let run = |endpoints: &str| {
        common::Run::from(
            std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
                .args([
                    "render",
                    "--once",
                    "--confdir",
                    &confdir,
                    "--endpoints",
                    endpoints,
                ])
                .args(["--state-dir", &fx.path("state").display().to_string()])
                .args(["--connect-timeout", "1s", "--request-timeout", "1s"])
                .output()
                .unwrap(),
        )
    };
    run(&etcd.endpoints()).expect_code(0);
    assert_eq!(fx.read("out/a.conf"), "a=5\n");

    let port = common::etcd::free_port();
    let dead = format!("http://127.0.0.1:{port}");
    let r = run(&dead);
    r.expect_code(4).expect_stderr(&[&dead]);
    assert_eq!(fx.read("out/a.conf"), "a=5\n");

    // One dead member listed first: the next endpoint serves the snapshot.
    etcd.put("/app/a/x", "6");
    let r = run(&format!("{dead},{}", etcd.endpoints()));
    r.expect_code(0).expect_stderr(&[&dead]);
    assert_eq!(fx.read("out/a.conf"), "a=6\n");
}

/// One resource's slow check command (it waits for the test's go-ahead)
/// does not hold up another resource, nor the status heartbeat.
#[test]
fn a_slow_check_does_not_hold_up_other_resources_or_status() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    etcd.put("/app/b/x", "1");
    let fx = Fx::new();
    let started = fx.path("check-started");
    let release = fx.path("release");
    fx.template("a.tera", "a={{ getv(key=\"/x\") }}\n");
    fx.template("b.tera", "b={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "a",
        "[template]\nsrc = \"a.tera\"\ndest = \"{out}/a.conf\"\nprefix = \"/app/a\"\nkeys = [\"/\"]\n",
    );
    fx.resource(
        "b",
        &format!(
            "[template]\nsrc = \"b.tera\"\ndest = \"{{out}}/b.conf\"\nprefix = \"/app/b\"\nkeys = [\"/\"]\ncommand_timeout = \"60s\"\ncheck_cmd = \"grep -q b=1 {{{{src}}}} || {{ touch {}; while [ ! -e {} ]; do sleep 0.05; done; }}\"\n",
            started.display(),
            release.display()
        ),
    );
    let d = daemon(&fx, &etcd, &["--wait", "0s"]);
    let (a, b) = (fx.path("out/a.conf"), fx.path("out/b.conf"));
    wait_for("initial render", LIMIT, || {
        read_or_empty(&a) == "a=1\n" && read_or_empty(&b) == "b=1\n"
    });

    etcd.put("/app/b/x", "2");
    wait_for("b's check running", LIMIT, || started.exists());
    etcd.put("/app/a/x", "2");
    wait_for("a updated while b's check runs", LIMIT, || {
        read_or_empty(&a) == "a=2\n"
    });
    let updated = || -> u64 {
        serde_json::from_str::<serde_json::Value>(&read_or_empty(&fx.path("state/status.json")))
            .unwrap_or_default()["updated"]
            .as_u64()
            .unwrap_or(0)
    };
    let before = updated();
    wait_for("status.json rewritten while b's check runs", LIMIT, || {
        updated() > before
    });
    assert!(!release.exists() && read_or_empty(&b) == "b=1\n");

    std::fs::write(&release, "").unwrap();
    wait_for("b installed once its check passes", LIMIT, || {
        read_or_empty(&b) == "b=2\n"
    });
    drop(d);
}

/// Resources sharing a reload command reload once together, even when
/// their coalescing windows differ, and a failing shared reload is retried
/// for all of them at once.
#[test]
fn a_shared_reload_runs_once_for_resources_changed_together() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    etcd.put("/app/b/x", "1");
    let fx = Fx::new();
    let fail = fx.path("reload-fails");
    let log = fx.path("reloads");
    let reload = format!(
        "reload_cmd = \"echo reload >> {}; test ! -e {}\"\n",
        log.display(),
        fail.display()
    );
    fx.template("a.tera", "a={{ getv(key=\"/x\") }}\n");
    fx.template("b.tera", "b={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "a",
        &format!("[template]\nsrc = \"a.tera\"\ndest = \"{{out}}/a.conf\"\nprefix = \"/app/a\"\nkeys = [\"/\"]\nwait = \"0s\"\n{reload}"),
    );
    fx.resource(
        "b",
        &format!("[template]\nsrc = \"b.tera\"\ndest = \"{{out}}/b.conf\"\nprefix = \"/app/b\"\nkeys = [\"/\"]\nwait = \"30s:60s\"\n{reload}"),
    );
    let d = daemon(&fx, &etcd, &[]);
    let (a, b) = (fx.path("out/a.conf"), fx.path("out/b.conf"));
    wait_for("initial render", LIMIT, || {
        read_or_empty(&a) == "a=1\n" && read_or_empty(&b) == "b=1\n"
    });
    let both = "reloaded resources=a,b";
    wait_for("one initial reload for both", LIMIT, || d.count(both) == 1);

    // b changes first (a 30 s window), then a (no window): a's batch takes
    // b along, and the command runs once for both.
    etcd.put("/app/b/x", "2");
    etcd.put("/app/a/x", "2");
    wait_for("both files and one reload", LIMIT, || {
        read_or_empty(&a) == "a=2\n" && read_or_empty(&b) == "b=2\n" && d.count(both) == 2
    });

    // The shared reload fails: retried for both together, and recovers once.
    std::fs::write(&fail, "").unwrap();
    etcd.put("/app/a/x", "3");
    etcd.put("/app/b/x", "3");
    wait_for("the shared reload failing for both", LIMIT, || {
        d.count("reload failed") >= 2
    });
    std::fs::remove_file(&fail).unwrap();
    wait_for("one reload for both after recovery", LIMIT, || {
        d.count(both) == 3
    });
    assert_eq!(
        d.count("reloaded resources"),
        d.count(both),
        "a reload ran for one resource alone:\n{}",
        d.log()
    );
}

/// A reload group never runs two batches at once: a member that changes
/// while the group's reload runs waits for it, so the shared command never
/// overlaps itself (the command below records any overlap).
#[test]
fn a_shared_reload_never_overlaps_itself() {
    shared_reload_never_overlaps("");
}

/// The same with `reload_splay`: a batch waiting out its splay still holds
/// its reload group.
#[test]
fn a_splayed_shared_reload_never_overlaps_itself() {
    shared_reload_never_overlaps("reload_splay = \"300ms\"\n");
}

fn shared_reload_never_overlaps(extra: &str) {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    etcd.put("/app/b/x", "1");
    let fx = Fx::new();
    let (lock, release, log) = (fx.path("lock"), fx.path("release"), fx.path("reloads"));
    std::fs::write(&release, "").unwrap();
    let reload = format!(
        "reload_cmd = \"mkdir {lock} || echo OVERLAP >> {log}; echo start >> {log}; while [ ! -e {release} ]; do sleep 0.02; done; rmdir {lock}\"\ncommand_timeout = \"60s\"\n{extra}",
        lock = lock.display(),
        log = log.display(),
        release = release.display()
    );
    two_resources(&fx, &reload);
    let port = common::etcd::free_port();
    let d = daemon(
        &fx,
        &etcd,
        &[
            "--wait",
            "0s",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ],
    );
    wait_for("initial render and reload", LIMIT, || {
        read_or_empty(&fx.path("out/b.conf")) == "b=1\n" && read_or_empty(&log) == "start\n"
    });
    wait_for("the initial reload done", LIMIT, || !lock.exists());

    std::fs::remove_file(&release).unwrap();
    etcd.put("/app/a/x", "2");
    wait_for("a's reload running", LIMIT, || lock.exists());
    let events = || -> f64 {
        common::etcd::http_get_metric(port, "liveconf_watch_events_total").unwrap_or(0.0)
    };
    let before = events();
    etcd.put("/app/b/x", "2");
    wait_for("the daemon has b's change", LIMIT, || events() > before);
    std::fs::write(&release, "").unwrap();
    wait_for("b rendered and reloaded after a's reload", LIMIT, || {
        read_or_empty(&fx.path("out/b.conf")) == "b=2\n"
            && read_or_empty(&log).lines().count() >= 3
            && !lock.exists()
    });
    assert!(
        !read_or_empty(&log).contains("OVERLAP"),
        "{}\n{}",
        read_or_empty(&log),
        d.log()
    );
}
