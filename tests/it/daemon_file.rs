//! The daemon without etcd: the file backend watches its key files, and
//! `--watch-confdir` picks up new resources and template edits.

use crate::common;

use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

/// Replaces the key file atomically, as an editor or a deploy tool would.
fn write_keys(fx: &Fx, yaml: &str) {
    let tmp = fx.path("keys.yaml.new");
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, fx.path("keys.yaml")).unwrap();
}

fn start(fx: &Fx, extra: &[&str]) -> Daemon {
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
    Daemon::start(&args, &fx.path("daemon.log"))
}

#[test]
fn key_file_edits_reach_the_files_and_a_broken_key_file_is_ignored() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let d = start(&fx, &[]);
    let dest = fx.path("out/x.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == "name=alpha\n"
    });

    write_keys(&fx, "app:\n  name: beta\n");
    wait_for("edit reaches the file", LIMIT, || {
        read_or_empty(&dest) == "name=beta\n"
    });

    // A key file that does not parse: reported, and the last good keys stay.
    write_keys(&fx, "app: [unclosed\n");
    wait_for("the bad key file is reported", LIMIT, || {
        d.log().contains("invalid key file")
    });
    assert_eq!(read_or_empty(&dest), "name=beta\n");
    assert!(!d.log().contains("render failed"), "{}", d.log());
    // ... and monitoring sees it: the backend is unavailable until fixed.
    let connected = || -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(&read_or_empty(&fx.path("state/status.json")))
            .unwrap_or_default()["connected"]
            .clone()
    };
    wait_for("status shows the key file unusable", LIMIT, || {
        connected() == false
    });

    write_keys(&fx, "app:\n  name: gamma\n");
    wait_for("recovery", LIMIT, || read_or_empty(&dest) == "name=gamma\n");
    wait_for("status shows the key file usable again", LIMIT, || {
        connected() == true
    });
}

#[test]
fn watch_confdir_adds_resources_and_applies_template_edits() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let _d = start(&fx, &["--watch-confdir"]);
    let dest = fx.path("out/x.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == "name=alpha\n"
    });

    fx.template("x.tera", "NAME={{ getv(key=\"/name\") }}\n");
    wait_for("template edit applied", LIMIT, || {
        read_or_empty(&dest) == "NAME=alpha\n"
    });

    fx.template("y.tera", "y {{ getv(key=\"/name\") }}\n");
    fx.resource(
        "y",
        "[template]\nsrc = \"y.tera\"\ndest = \"{out}/y.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    wait_for("new resource rendered", LIMIT, || {
        read_or_empty(&fx.path("out/y.conf")) == "y alpha\n"
    });
}

#[test]
fn json_logs_are_one_object_per_line() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "{{ getv(key=\"/nope\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let run = fx.run(&["render", "--once", "--log-format", "json"]);
    run.expect_code(2);
    let mut saw_failure = false;
    for line in run.stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        if v["resource"] == "x" && v["step"] == "render" {
            saw_failure = true;
            assert_eq!(v["level"], "ERROR");
            assert!(
                v["message"].as_str().unwrap_or("").contains("/nope"),
                "{line}"
            );
        }
    }
    assert!(saw_failure, "{}", run.stderr);
}

#[test]
fn reload_splay_delays_only_the_reload() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\nother:\n  name: one\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    let marker = fx.path("reloaded");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nreload_splay = \"3s\"\nreload_cmd = \"echo $(cat {{{{dest}}}}) >> {}\"\n",
            marker.display()
        ),
    );
    fx.resource(
        "y",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/y.conf\"\nprefix = \"/other\"\nkeys = [\"/\"]\n",
    );
    let d = start(&fx, &[]);
    let x = fx.path("out/x.conf");
    let y = fx.path("out/y.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&x) == "name=alpha\n" && read_or_empty(&y) == "name=one\n"
    });
    wait_for("the first (splayed) reload", LIMIT, || {
        read_or_empty(&marker) == "name=alpha\n"
    });

    // The file is installed at once; the daemon keeps working while the
    // reload waits out its splay.
    write_keys(&fx, "app:\n  name: beta\nother:\n  name: one\n");
    wait_for("x installed", LIMIT, || read_or_empty(&x) == "name=beta\n");
    write_keys(&fx, "app:\n  name: beta\nother:\n  name: two\n");
    wait_for("y rendered during x's splay", LIMIT, || {
        read_or_empty(&y) == "name=two\n"
    });
    wait_for("the splayed reload ran", LIMIT, || {
        read_or_empty(&marker) == "name=alpha\nname=beta\n"
    });
    assert!(d.log().contains("reload_splay"), "{}", d.log());
}

/// A reload that failed before the daemon (re)started is run by its first
/// batch, although the file itself is already up to date.
#[test]
fn a_reload_owed_from_before_a_restart_is_run() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    let ok = fx.path("reload-works");
    let log = fx.path("reloads");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nreload_cmd = \"test -e {} && echo reloaded >> {}\"\n",
            ok.display(),
            log.display()
        ),
    );
    fx.once().expect_code(2);
    assert_eq!(read_or_empty(&fx.path("out/x.conf")), "name=alpha\n");
    std::fs::write(&ok, "").unwrap();

    let _d = start(&fx, &[]);
    wait_for("the owed reload", LIMIT, || {
        read_or_empty(&log) == "reloaded\n"
    });
    wait_for("status healthy, nothing owed", LIMIT, || {
        let s: serde_json::Value =
            serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default();
        s["resources"]["x"]["healthy"] == true && s["resources"]["x"].get("reload_owed").is_none()
    });
}

/// A resource file broken and reloaded (SIGHUP) fails at `load` in the
/// metrics too, where alerts look.
#[test]
fn a_resource_broken_by_a_reload_is_unhealthy_in_the_metrics() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let port = common::etcd::free_port();
    let d = start(&fx, &["--metrics-addr", &format!("127.0.0.1:{port}")]);
    let healthy =
        || common::etcd::http_get_metric(port, "liveconf_resource_healthy{resource=\"x\"}");
    wait_for("x healthy", LIMIT, || healthy() == Some(1.0));
    std::fs::write(fx.path("conf.d/x.toml"), "[template]\nbogus = 1\n").unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("x unhealthy after the reload", LIMIT, || {
        healthy() == Some(0.0)
    });
    // Its destination stays on record (and on disk).
    let st: serde_json::Value =
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default();
    assert_eq!(
        st["resources"]["x"]["dest"],
        fx.path("out/x.conf").display().to_string(),
        "{st:#}"
    );
    assert_eq!(read_or_empty(&fx.path("out/x.conf")), "name=alpha\n");
}

fn status_of(fx: &Fx) -> serde_json::Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
}

/// x renders /app/name; its reload appends to `reloads` once `release`
/// exists (it writes its pid to `started` first). `extra` adds lines.
fn blocking_reload(fx: &Fx, extra: &str) {
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncommand_timeout = \"60s\"\nreload_cmd = \"echo $$ > {started}; while [ ! -e {release} ]; do sleep 0.02; done; echo reloaded >> {log}\"\n{extra}",
            started = fx.path("started").display(),
            release = fx.path("release").display(),
            log = fx.path("reloads").display(),
        ),
    );
}

/// While a reload runs, status.json already describes the file on disk
/// (and says the reload is owed); a daemon killed (SIGKILL) before the
/// reload finished leaves it owed, and the next start runs it.
#[test]
fn a_reload_cut_short_by_a_kill_is_run_by_the_next_start() {
    use sha2::Digest;
    let fx = Fx::new();
    blocking_reload(&fx, "");
    std::fs::write(fx.path("release"), "").unwrap();
    let mut d = start(&fx, &[]);
    let dest = fx.path("out/x.conf");
    wait_for("initial render and reload", LIMIT, || {
        read_or_empty(&fx.path("reloads")) == "reloaded\n"
    });
    std::fs::remove_file(fx.path("release")).unwrap();
    std::fs::remove_file(fx.path("started")).unwrap();

    write_keys(&fx, "app:\n  name: beta\n");
    wait_for("the reload of beta running", LIMIT, || {
        fx.path("started").exists()
    });
    assert_eq!(read_or_empty(&dest), "name=beta\n");
    let sha = hex::encode(sha2::Sha256::digest(b"name=beta\n"));
    wait_for(
        "status describes the installed file, reload owed",
        LIMIT,
        || {
            let x = &status_of(&fx)["resources"]["x"];
            x["sha256"] == sha.as_str() && x["reload_owed"] == true
        },
    );

    // SIGKILL the daemon and its reload (its own process group).
    let _ = d.child.kill();
    let _ = d.child.wait();
    let pid: i32 = read_or_empty(&fx.path("started")).trim().parse().unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_eq!(read_or_empty(&fx.path("reloads")), "reloaded\n");

    std::fs::write(fx.path("release"), "").unwrap();
    let _d = start(&fx, &[]);
    wait_for("the owed reload run by the next start", LIMIT, || {
        read_or_empty(&fx.path("reloads")) == "reloaded\nreloaded\n"
    });
    wait_for("nothing owed any more", LIMIT, || {
        let x = &status_of(&fx)["resources"]["x"];
        x["healthy"] == true && x.get("reload_owed").is_none()
    });
}

/// A reload waiting out its `reload_splay` when the daemon is stopped is
/// owed, not lost: the next start runs it.
#[test]
fn a_splayed_reload_pending_at_sigterm_is_run_by_the_next_start() {
    let fx = Fx::new();
    blocking_reload(&fx, "reload_splay = \"1h\"\n");
    std::fs::write(fx.path("release"), "").unwrap();
    let mut d = start(&fx, &[]);
    wait_for("installed, reload waiting out its splay", LIMIT, || {
        read_or_empty(&fx.path("out/x.conf")) == "name=alpha\n" && d.count("reload_splay") >= 1
    });
    wait_for("status says the reload is owed", LIMIT, || {
        status_of(&fx)["resources"]["x"]["reload_owed"] == true
    });
    assert_eq!(d.stop(), Some(0), "{}", d.log());
    assert_eq!(read_or_empty(&fx.path("reloads")), "");

    // Next start, without the splay: the owed reload runs.
    blocking_reload(&fx, "");
    let _d = start(&fx, &[]);
    wait_for("the owed reload", LIMIT, || {
        read_or_empty(&fx.path("reloads")) == "reloaded\n"
    });
}

/// Settings derived once at start-up (the render limit, the DNS server,
/// the reload splay) follow a SIGHUP; those a running daemon cannot change
/// are named in the log instead of being silently kept.
#[test]
fn sighup_applies_render_settings_and_names_those_needing_a_restart() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    std::fs::write(fx.path("liveconf.toml"), "max_output_bytes = 1000\n").unwrap();
    let d = start(&fx, &[]);
    let dest = fx.path("out/x.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == "name=alpha\n"
    });

    std::fs::write(
        fx.path("liveconf.toml"),
        "max_output_bytes = 5\nmetrics_addr = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the reload is logged", LIMIT, || {
        d.log().contains("configuration reloaded")
    });
    assert!(
        d.log()
            .contains("metrics_addr changed from none to 127.0.0.1:1: needs a restart"),
        "{}",
        d.log()
    );
    write_keys(&fx, "app:\n  name: beta\n");
    wait_for("the new limit refuses the render", LIMIT, || {
        d.log().contains("limit of 5 bytes")
    });
    assert_eq!(read_or_empty(&dest), "name=alpha\n");
}

/// stderr a closed pipe (`liveconf render 2>&1 | head`): log lines that
/// cannot be written are dropped; the daemon renders on and stops cleanly
/// (exit 0), never a panic (exit 101).
#[test]
fn a_closed_stderr_never_stops_the_daemon() {
    use std::process::{Command, Stdio};
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .arg("render")
        .arg("--confdir")
        .arg(fx.dir.path())
        .arg("--file")
        .arg(fx.path("keys.yaml"))
        .arg("--state-dir")
        .arg(fx.path("state"))
        .args(["--wait", "0s", "--log-level", "debug"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start liveconf");
    // The reader goes away at once: every log line meets a closed pipe.
    drop(child.stderr.take());
    let dest = fx.path("out/x.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == "name=alpha\n"
    });
    write_keys(&fx, "app:\n  name: beta\n");
    wait_for(
        "a change rendered with nobody reading the log",
        LIMIT,
        || read_or_empty(&dest) == "name=beta\n",
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code();
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0));
}

/// SIGTERM while a reload runs: one line says the daemon waits for it,
/// naming it; a second SIGTERM (or SIGINT) is answered the same way, not
/// ignored in silence; the stop is clean once the reload ends.
#[test]
fn a_stop_during_a_reload_says_what_it_waits_for() {
    use nix::sys::signal::Signal;
    let fx = Fx::new();
    blocking_reload(&fx, "");
    let mut d = start(&fx, &[]);
    wait_for("the reload running", LIMIT, || fx.path("started").exists());
    d.signal(Signal::SIGTERM);
    wait_for("the stop says what it waits for", LIMIT, || {
        d.log()
            .lines()
            .any(|l| l.contains("stopping: waiting for the reload of x (`echo $$"))
    });
    d.signal(Signal::SIGTERM);
    d.signal(Signal::SIGINT);
    for sig in ["SIGTERM", "SIGINT"] {
        wait_for(&format!("{sig} again answered"), LIMIT, || {
            d.log().lines().any(|l| {
                l.contains(&format!(
                    "{sig}: already stopping: waiting for the reload of x"
                ))
            })
        });
    }
    assert_eq!(d.exited(), None, "it waits for the reload");
    std::fs::write(fx.path("release"), "").unwrap();
    let start = std::time::Instant::now();
    let code = loop {
        if let Some(code) = d.exited() {
            break code;
        }
        assert!(start.elapsed() < LIMIT, "{}", d.log());
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(0), "{}", d.log());
    assert_eq!(read_or_empty(&fx.path("reloads")), "reloaded\n");
}

/// Found by the fleet wait trial: SIGTERM while a check runs named "the
/// reload of x"; the stop names the step the batch is in.
#[test]
fn a_stop_during_a_check_names_the_check_not_the_reload() {
    use nix::sys::signal::Signal;
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncommand_timeout = \"60s\"\ncheck_cmd = \"touch {started}; while [ ! -e {release} ]; do sleep 0.02; done\"\nreload_cmd = \"true\"\n",
            started = fx.path("started").display(),
            release = fx.path("release").display(),
        ),
    );
    let mut d = start(&fx, &[]);
    wait_for("the check running", LIMIT, || fx.path("started").exists());
    d.signal(Signal::SIGTERM);
    wait_for("the stop says what it waits for", LIMIT, || {
        d.log().lines().any(|l| {
            l.contains("stopping: waiting for the render, check and install of x to finish")
        })
    });
    assert!(!d.log().contains("the reload of x"), "{}", d.log());
    std::fs::write(fx.path("release"), "").unwrap();
    wait_for("the stop", LIMIT, || d.exited().is_some());
    assert_eq!(d.exited(), Some(Some(0)), "{}", d.log());
    assert_eq!(read_or_empty(&fx.path("out/x.conf")), "name=alpha\n");
}

/// Found by the DNS trial: a resource failing the same way logged a full
/// ERROR line at every retry (5 in 11 s, ~50 in 22 s for 7 resources). The
/// first failure is an ERROR line, its repeats are at debug, and the first
/// success after them says the resource is healthy again.
#[test]
fn a_repeated_failure_is_one_error_line_and_recovery_is_one_line() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "later={{ getv(key=\"/later\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let d = start(&fx, &["--log-level", "debug"]);
    wait_for("two retries failing the same way", LIMIT, || {
        d.count("x: render failed again at revision 1 (the same error); retrying in") >= 2
    });
    let errors: Vec<String> = d
        .log()
        .lines()
        .filter(|l| l.contains("ERROR"))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{}", d.log());
    assert!(
        errors[0].contains("x: render failed at revision 1: ") && errors[0].contains("/app/later"),
        "{}",
        errors[0]
    );
    write_keys(&fx, "app:\n  name: alpha\n  later: here\n");
    wait_for("the file", LIMIT, || {
        read_or_empty(&fx.path("out/x.conf")) == "later=here\n"
    });
    wait_for("the recovery line", LIMIT, || {
        d.log().lines().any(|l| {
            l.contains("INFO") && l.contains("x: healthy again at revision 2 (failing for ")
        })
    });
}

/// The lines a SIGHUP logs about settings: each changed one with its old
/// and new value; a restart-only setting compared with the value the
/// daemon runs with (changed back: no restart needed any more; still
/// pending at a later SIGHUP: said again, on one line); node_name says
/// status.json follows at once and only the fleet report keeps the old
/// name.
#[test]
fn sighup_lines_show_values_and_compare_restart_settings_with_the_running_ones() {
    use nix::sys::signal::Signal;
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    let toml = |extra: &str| {
        std::fs::write(
            fx.path("liveconf.toml"),
            format!("log_level = \"info\"\nnode_name = \"n1\"\n{extra}"),
        )
        .unwrap()
    };
    toml("");
    let d = start(&fx, &[]);
    wait_for("initial render", LIMIT, || {
        read_or_empty(&fx.path("out/x.conf")) == "name=alpha\n"
    });
    let hup = |what: &str| {
        let offset = d.log().len();
        let n = d.count("configuration reloaded");
        d.signal(Signal::SIGHUP);
        wait_for(what, LIMIT, || d.count("configuration reloaded") > n);
        d.log()[offset..].to_string()
    };

    std::fs::write(
        fx.path("liveconf.toml"),
        "log_level = \"debug\"\nnode_name = \"n2\"\nreload_splay = \"2s\"\n",
    )
    .unwrap();
    let lines = hup("the first reload");
    for want in [
        "reload_splay changed from \"0s\" to \"2s\": applied",
        "log_level changed from \"info\" to \"debug\": needs a restart; the running daemon keeps \"info\" until then (systemctl restart liveconf)",
        "node_name changed from \"n1\" to \"n2\": status.json shows \"n2\" now; only the fleet report needs a restart, and keeps \"n1\" until then",
    ] {
        assert!(lines.contains(want), "{want:?} not in:\n{lines}");
    }
    wait_for("status.json shows the new name at once", LIMIT, || {
        let s: serde_json::Value =
            serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default();
        s["node"] == "n2"
    });

    // Nothing changed: what a restart still has to apply is said again.
    let lines = hup("an unchanged reload");
    assert!(
        lines.contains("still needs a restart: log_level, node_name")
            && !lines.contains("changed from"),
        "{lines}"
    );

    // log_level back to the running value: no restart needed for it.
    std::fs::write(
        fx.path("liveconf.toml"),
        "log_level = \"info\"\nnode_name = \"n2\"\nreload_splay = \"2s\"\n",
    )
    .unwrap();
    let lines = hup("log_level reverted");
    assert!(
        lines.contains(
            "log_level changed from \"debug\" back to \"info\", the value the daemon runs with: no restart needed for it any more"
        ) && lines.contains("still needs a restart: node_name")
            && !lines.contains("log_level changed from \"debug\" back to \"info\": needs a restart"),
        "{lines}"
    );
}
