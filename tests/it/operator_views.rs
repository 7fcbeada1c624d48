//! What an operator sees of the daemon: a configuration that fails to load
//! on SIGHUP (status.json, `liveconf status`, `/metrics`), a clean stop and
//! a backend never reached (said as such), one summary line per start and
//! reload instead of a line per unchanged file, a template syntax error
//! waiting for the template instead of being retried, and `liveconf fleet`
//! saying what it waits for.

use crate::common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::etcd::{Daemon, Etcd, free_port, http_get_metric, read_or_empty, wait_for};
use common::{Fx, Run};
use nix::sys::signal::Signal;
use serde_json::Value;

const LIMIT: Duration = Duration::from_secs(20);

/// A daemon on `fx` (file backend, `--wait 0s`) with `extra` arguments.
fn start(fx: &Fx, log: &str, extra: &[&str]) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let keys = fx.path("keys.yaml").display().to_string();
    let state = fx.path("state").display().to_string();
    let mut args = vec![
        "--confdir",
        &confdir,
        "--file",
        &keys,
        "--state-dir",
        &state,
        "--wait",
        "0s",
    ];
    args.extend_from_slice(extra);
    Daemon::start(&args, &fx.path(log))
}

/// Resource NAME: template `src` over /app into out/NAME.conf.
fn resource(fx: &Fx, name: &str, src: &str) {
    fx.resource(
        name,
        &format!(
            "[template]\nsrc = \"{src}\"\ndest = \"{{out}}/{name}.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n"
        ),
    );
}

/// `liveconf status --state-dir DIR ARGS`.
fn status(state_dir: &Path, args: &[&str]) -> Run {
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

fn status_json(fx: &Fx) -> Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
}

/// Replaces the key file atomically.
fn write_keys(fx: &Fx, yaml: &str) {
    let tmp = fx.path("keys.yaml.new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, fx.path("keys.yaml")).unwrap();
}

#[test]
fn a_configuration_that_fails_to_load_on_sighup_is_shown_until_a_reload_succeeds() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    resource(&fx, "x", "x.tera");
    let settings = fx.path("liveconf.toml");
    std::fs::write(&settings, "# liveconf\nlog_level = \"info\"\n").unwrap();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = start(&fx, "daemon.log", &["--metrics-addr", &addr]);
    let state = fx.path("state");
    wait_for("first render", LIMIT, || {
        read_or_empty(&fx.path("out/x.conf")) == "name=alpha\n"
    });
    wait_for("status OK and the gauge at 0", LIMIT, || {
        status(&state, &[]).code == 0
            && http_get_metric(port, "liveconf_config_load_failed") == Some(0.0)
    });

    // A syntax error on line 3, then SIGHUP.
    std::fs::write(&settings, "# liveconf\nlog_level = \"info\"\nwait = \n").unwrap();
    d.signal(Signal::SIGHUP);
    wait_for("status.json records the failed load", LIMIT, || {
        status_json(&fx)["config_error"].is_object()
    });
    let e = &status_json(&fx)["config_error"];
    assert_eq!(e["file"], settings.display().to_string(), "{e}");
    assert_eq!(e["trigger"], "SIGHUP", "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("line 3"),
        "{e}"
    );
    let r = status(&state, &[]);
    r.expect_code(1);
    let want = format!(
        "{} could not be loaded at SIGHUP (line 3",
        settings.display()
    );
    assert!(r.stdout.starts_with("WARNING: "), "{}", r.stdout);
    assert!(r.stdout.contains(&want), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("; still running on the configuration loaded at ")
            && r.stdout.contains("; fix it and send SIGHUP again"),
        "{}",
        r.stdout
    );
    assert_eq!(
        http_get_metric(port, "liveconf_config_load_failed"),
        Some(1.0)
    );
    assert!(d.log().contains(&want), "{}", d.log());

    // Fixed: the next SIGHUP clears it everywhere.
    std::fs::write(&settings, "log_level = \"info\"\n").unwrap();
    d.signal(Signal::SIGHUP);
    wait_for("the failed load cleared", LIMIT, || {
        status_json(&fx).get("config_error").is_none()
            && http_get_metric(port, "liveconf_config_load_failed") == Some(0.0)
    });
    status(&state, &[]).expect_code(0);

    // conf.d failing as a whole (no resource left): the same.
    std::fs::rename(fx.path("conf.d/x.toml"), fx.path("x.toml.off")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_for("status.json records conf.d failing to load", LIMIT, || {
        status_json(&fx)["config_error"].is_object()
    });
    let r = status(&state, &[]);
    r.expect_code(1);
    assert!(
        r.stdout.contains(&format!(
            "{} could not be loaded at SIGHUP (no resource in",
            fx.path("conf.d").display()
        )),
        "{}",
        r.stdout
    );
    // The daemon still runs its resource on the configuration it has.
    write_keys(&fx, "app:\n  name: beta\n");
    wait_for("x still follows its keys", LIMIT, || {
        read_or_empty(&fx.path("out/x.conf")) == "name=beta\n"
    });
    std::fs::rename(fx.path("x.toml.off"), fx.path("conf.d/x.toml")).unwrap();
    d.signal(Signal::SIGHUP);
    wait_for("conf.d loads again", LIMIT, || {
        status_json(&fx).get("config_error").is_none()
    });
}

#[test]
fn status_says_the_daemon_stopped_cleanly() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    resource(&fx, "x", "x.tera");
    let mut d = start(&fx, "daemon.log", &[]);
    let state = fx.path("state");
    wait_for("status OK", LIMIT, || status(&state, &[]).code == 0);
    assert_eq!(d.stop(), Some(0));
    let r = status(&state, &[]);
    r.expect_code(2);
    assert!(
        r.stdout.contains("stopped cleanly at ")
            && r.stdout
                .contains("files no longer follow the key files until it runs again"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("unavailable"), "{}", r.stdout);
    assert!(!r.stdout.contains("is not running"), "{}", r.stdout);
}

#[test]
fn status_says_a_daemon_never_connected_and_why() {
    let fx = Fx::new();
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    resource(&fx, "x", "x.tera");
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state");
    let state_arg = state.display().to_string();
    // Nothing listens there.
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    let _d = Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &endpoint,
            "--state-dir",
            &state_arg,
        ],
        &fx.path("daemon.log"),
    );
    wait_for("the failed connection in status.json", LIMIT, || {
        status_json(&fx)["backend_error"].is_string()
    });
    let r = status(&state, &[]);
    assert!(r.code >= 1, "{}", r.stdout);
    assert!(
        r.stdout
            .contains("never connected to the etcd backend since the start at "),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("127.0.0.1"), "{}", r.stdout);
    assert!(!r.stdout.contains("last event"), "{}", r.stdout);
    assert!(
        r.stdout.contains("no event since the start"),
        "{}",
        r.stdout
    );
}

#[test]
fn start_and_sighup_log_one_summary_instead_of_a_line_per_unchanged_file() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    for n in ["a", "b", "c"] {
        resource(&fx, n, "x.tera");
    }
    let mut first = start(&fx, "first.log", &[]);
    wait_for("first run's summary", LIMIT, || {
        first
            .log()
            .contains("first render done: 3 resources, 3 changed, 0 failing")
    });
    first.stop();

    // Files unchanged: a restart and a SIGHUP log one summary line each.
    let d = start(&fx, "second.log", &[]);
    wait_for("the restart's summary", LIMIT, || {
        d.log()
            .contains("first render done: 3 resources, 0 changed, 0 failing")
    });
    d.signal(Signal::SIGHUP);
    wait_for("the reload's summary", LIMIT, || {
        d.log()
            .contains("render after reload done: 3 resources, 0 changed, 0 failing")
    });
    assert_eq!(d.count("unchanged"), 0, "{}", d.log());
    assert_eq!(d.count("done: "), 2, "{}", d.log());
}

#[test]
fn a_template_syntax_error_waits_for_the_template_and_a_missing_key_for_the_key() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("ok.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.template("broken.tera", "name={{ getv(key=\"/name\") \n");
    fx.template("later.tera", "later={{ getv(key=\"/later\") }}\n");
    resource(&fx, "ok", "ok.tera");
    resource(&fx, "broken", "broken.tera");
    resource(&fx, "later", "later.tera");
    let d = start(&fx, "daemon.log", &[]);
    let state = fx.path("state");
    wait_for("the syntax error reported, once", LIMIT, || {
        d.count("broken: render failed") == 1
    });
    let template = fx.path("templates/broken.tera");
    assert!(
        d.log().contains(&format!(
            "not retried until {} is fixed and liveconf gets SIGHUP",
            template.display()
        )),
        "{}",
        d.log()
    );
    // A missing key is retried as before (its batch may report after the
    // broken one's).
    wait_for("the missing key retried", LIMIT, || {
        d.log()
            .lines()
            .any(|l| l.contains("later: render failed") && l.contains("retrying in"))
    });
    let r = status(&state, &[]);
    r.expect_code(2);
    assert!(r.stdout.contains("broken (render: "), "{}", r.stdout);

    // Keys change, and time passes beyond the first retries (status.json's
    // heartbeat marks it): the broken one is not rendered again.
    let failed_at = status_json(&fx)["resources"]["broken"]["last_attempt"]
        .as_u64()
        .expect("last_attempt");
    write_keys(&fx, "app:\n  name: beta\n  later: here\n");
    wait_for("the key change rendered", LIMIT, || {
        read_or_empty(&fx.path("out/ok.conf")) == "name=beta\n"
            && read_or_empty(&fx.path("out/later.conf")) == "later=here\n"
    });
    wait_for("four seconds of status heartbeats", LIMIT, || {
        status_json(&fx)["updated"].as_u64().unwrap_or(0) >= failed_at + 4
    });
    assert_eq!(d.count("broken: render failed"), 1, "{}", d.log());
    assert_eq!(
        status_json(&fx)["resources"]["broken"]["last_attempt"].as_u64(),
        Some(failed_at)
    );

    // Fixed, and SIGHUP: rendered.
    fx.template("broken.tera", "fixed={{ getv(key=\"/name\") }}\n");
    d.signal(Signal::SIGHUP);
    wait_for("the fixed template rendered", LIMIT, || {
        read_or_empty(&fx.path("out/broken.conf")) == "fixed=beta\n"
    });
}

#[test]
fn with_watch_confdir_a_template_syntax_error_waits_for_the_template_to_change() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("broken.tera", "name={% if %}\n");
    resource(&fx, "broken", "broken.tera");
    let d = start(&fx, "daemon.log", &["--watch-confdir"]);
    let template = fx.path("templates/broken.tera");
    wait_for("the syntax error reported", LIMIT, || {
        d.log()
            .contains(&format!("not retried until {} changes", template.display()))
    });
    fx.template("broken.tera", "name={{ getv(key=\"/name\") }}\n");
    wait_for("the fixed template rendered", LIMIT, || {
        read_or_empty(&fx.path("out/broken.conf")) == "name=alpha\n"
    });
}

#[test]
fn fleet_says_which_hosts_it_waits_for() {
    let etcd = Etcd::start();
    etcd.put("/app/x/v", "1");
    let endpoints = etcd.endpoints();
    let mut hosts = Vec::new();
    for name in ["host1", "host2"] {
        let fx = Fx::new();
        fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
        fx.resource(
            "x",
            "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app/x\"\nkeys = [\"/\"]\n",
        );
        let confdir = fx.dir.path().display().to_string();
        let state = fx.path("state").display().to_string();
        let d = Daemon::start(
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
                "--wait",
                "0s",
            ],
            &fx.path("daemon.log"),
        );
        hosts.push((d, fx));
    }
    let fleet = |args: &[&str]| {
        Run::from(
            Command::new(env!("CARGO_BIN_EXE_liveconf"))
                .arg("fleet")
                .args(["--endpoints", &endpoints])
                .args(args)
                .env_remove("RUST_LOG")
                .env("NO_COLOR", "1")
                .output()
                .expect("run liveconf fleet"),
        )
    };
    wait_for("both hosts in sync", LIMIT, || {
        let r = fleet(&["--max-lag", "0s"]);
        r.code == 0 && r.stdout.contains("2 hosts, 0 with problems")
    });

    // host2 stops processing; a change reaches host1 only.
    hosts[1].0.signal(Signal::SIGSTOP);
    etcd.put("/app/x/v", "2");
    let got: Value =
        serde_json::from_str(&etcd.ctl(&["get", "/app/x/v", "-w", "json"])).expect("etcdctl json");
    let rev = got["kvs"][0]["mod_revision"]
        .as_i64()
        .expect("mod_revision");
    wait_for("host1 renders the change", LIMIT, || {
        read_or_empty(&hosts[0].1.path("out/x.conf")) == "v=2\n"
    });
    let r = fleet(&["--max-lag", "1s"]);
    r.expect_code(1);
    let want = "waiting up to 1s (--max-lag) for host2 (x at revision ";
    let line = r
        .stderr
        .lines()
        .find(|l| l.starts_with(want))
        .unwrap_or_else(|| panic!("no {want:?} line:\n{}", r.stderr));
    assert!(
        line.ends_with(&format!(" < {rev}) to catch up...")),
        "{line}"
    );
    assert!(r.stdout.contains("host2: stale: x"), "{}", r.stdout);

    // Caught up: no wait, nothing said.
    hosts[1].0.signal(Signal::SIGCONT);
    wait_for("host2 catches up", LIMIT, || {
        let r = fleet(&["--max-lag", "0s"]);
        r.code == 0
    });
    let r = fleet(&["--max-lag", "30s"]);
    r.expect_code(0);
    assert!(!r.stderr.contains("waiting"), "{}", r.stderr);
}

#[test]
fn start_summary_follows_and_counts_every_guard_refusal() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "# static\n");
    for n in ["haproxy", "nginx"] {
        fx.resource(
            n,
            &format!(
                "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/{n}.conf\"\nprefix = \"/app/pool\"\nkeys = [\"/web\"]\n"
            ),
        );
    }
    let d = start(&fx, "d.log", &[]);
    wait_for("the first render's summary", LIMIT, || {
        d.log().contains("first render done")
    });
    let log = d.log();
    let summary = log.find("first render done").unwrap();
    assert!(
        log[summary..].contains("2 resources, 0 changed, 2 failing (haproxy, nginx)"),
        "{log}"
    );
    for n in ["haproxy", "nginx"] {
        let refused = log
            .lines()
            .position(|l| {
                l.contains(&format!("{n}: ")) && l.contains("no keys under /app/pool/web")
            })
            .unwrap_or_else(|| panic!("{n}'s refusal: {log}"));
        let summary = log
            .lines()
            .position(|l| l.contains("first render done"))
            .unwrap();
        assert!(refused < summary, "{n}'s refusal after the summary: {log}");
    }
}

#[test]
fn render_once_leaves_a_running_daemons_status_json_alone() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    resource(&fx, "a", "x.tera");
    let d = start(&fx, "d.log", &[]);
    wait_for("the first render's summary", LIMIT, || {
        d.log().contains("first render done")
    });
    let pid = status_json(&fx)["daemon_pid"].as_u64();
    assert!(pid.is_some(), "{}", status_json(&fx));
    let r = fx.run(&["render", "--once", "--force", "a"]);
    r.expect_code(0);
    assert!(
        r.stderr.contains("belongs to the running liveconf daemon"),
        "{}",
        r.stderr
    );
    let s = status_json(&fx);
    assert_eq!(s["daemon_pid"].as_u64(), pid, "{s}");
    assert!(s["started"].is_u64(), "{s}");
}
