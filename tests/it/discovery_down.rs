//! etcd that cannot be found or reached, as a new user meets it (a
//! trial with real dnsmasq, etcd members and `srv_domain` in
//! liveconf.toml): the daemon with `--report` starts while the SRV
//! nameserver is down; `--endpoints` or `--srv-domain` on the command line
//! is what a run uses, whatever the file says; an outage of every member is
//! said once, not at every retry.

use crate::common;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::srv_follow::{BlackHole, Dnsmasq, RECORD};
use common::Fx;
use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// One resource, `plain`, rendering `/app/v` into out/plain.conf.
fn plain(fx: &Fx) {
    fx.template("plain.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.resource(
        "plain",
        "[template]\nsrc = \"plain.tera\"\ndest = \"{out}/plain.conf\"\nkeys = [\"/app\"]\n",
    );
}

/// liveconf.toml in the fixture's confdir: SRV discovery of RECORD
/// through `dns_server`, and `more`; its path.
fn srv_settings(fx: &Fx, dns_server: &str, more: &str) -> String {
    let path = fx.path("liveconf.toml");
    std::fs::write(
        &path,
        format!(
            "srv_domain = \"example.test\"\nsrv_record = \"_etcd-client._tcp\"\n\
             dns_server = \"{dns_server}\"\nstate_dir = \"state\"\nwait = \"0s\"\n{more}"
        ),
    )
    .unwrap();
    path.display().to_string()
}

/// `liveconf ARGS`: exit code and stderr.
fn run(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run liveconf");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Whether `node`'s fleet report is in etcd.
fn reported(etcd: &Etcd, node: &str) -> bool {
    !etcd
        .ctl(&[
            "get",
            &format!("/liveconf/fleet/{node}"),
            "--print-value-only",
        ])
        .trim()
        .is_empty()
}

/// `--report` while the SRV nameserver does not answer (the trial: exit 3,
/// "invalid settings", where without `--report` the daemon waits for
/// etcd): the daemon runs, says etcd and the report are unavailable, and
/// once the nameserver answers it renders and publishes the report, with
/// no restart.
#[test]
fn report_with_the_srv_nameserver_down_at_start_runs_and_publishes_once_it_answers() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let hole = BlackHole::start(None, RECORD);
    let port = hole.port;
    let fx = Fx::new();
    plain(&fx);
    let config = srv_settings(&fx, &hole.addr(), "");
    let mut d = Daemon::start(
        &["--config", &config, "--report", "--node-name", "xtest"],
        &fx.path("daemon.log"),
    );
    wait_for("the report's failure said, or an exit", LIMIT, || {
        d.exited().is_some() || d.log().contains("fleet report:")
    });
    assert_eq!(d.exited(), None, "the daemon exited:\n{}", d.log());
    wait_for("etcd said unavailable", LIMIT, || {
        d.log().contains("backend unavailable")
    });
    let log = d.log();
    assert!(log.contains("discovery failed"), "{log}");

    assert!(hole.asked() > 0, "the nameserver was never asked");
    // The nameserver answers, on the same address.
    drop(hole);
    let _dns = Dnsmasq::start(port, &[etcd.members[0].client_port]);
    wait_for("the file rendered", LIMIT, || {
        read_or_empty(&fx.path("out/plain.conf")) == "v=1\n"
    });
    wait_for("the report published", LIMIT, || reported(&etcd, "xtest"));
    assert_eq!(d.exited(), None, "the daemon exited:\n{}", d.log());
    assert_eq!(d.count("fleet report:"), 2, "{}", d.log());
    assert_eq!(d.count("fleet report: published again"), 1, "{}", d.log());
}

/// `--endpoints` on the command line replaces liveconf.toml's SRV
/// discovery for that run (the trial: with the file's nameserver down,
/// `fleet` and `render --once --noop` given `--endpoints` exited 4,
/// "discovery failed"), said once at info.
#[test]
fn command_line_endpoints_replace_the_files_srv_discovery() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let ep = etcd.members[0].url();
    let fx = Fx::new();
    plain(&fx);
    // Nothing listens there: every look-up fails.
    let config = srv_settings(&fx, &format!("127.0.0.1:{}", free_port()), "");
    let note = "--endpoints on the command line replaces the SRV discovery of";

    let (code, err) = run(&[
        "render",
        "--once",
        "--noop",
        "--config",
        &config,
        "--endpoints",
        &ep,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("discovery failed"), "{err}");
    assert_eq!(err.matches(note).count(), 1, "{err}");

    let (code, err) = run(&["fleet", "--config", &config, "--endpoints", &ep]);
    assert_eq!(code, Some(0), "{err}");
    assert!(!err.contains("discovery failed"), "{err}");

    // A real run records what it read: the endpoints given.
    let (code, err) = run(&["render", "--once", "--config", &config, "--endpoints", &ep]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(read_or_empty(&fx.path("out/plain.conf")), "v=1\n");
    let status: serde_json::Value =
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap();
    assert_eq!(status["endpoint"], ep.as_str(), "{status:#}");
}

/// The converse: `--srv-domain` on the command line replaces the file's
/// `endpoints` (it no longer adds to them): a dead endpoint in the file is
/// never tried, and status.json names only the SRV record.
#[test]
fn command_line_srv_domain_replaces_the_files_endpoints() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let dns = Dnsmasq::start(free_port(), &[etcd.members[0].client_port]);
    let dead = format!("http://127.0.0.1:{}", free_port());
    let fx = Fx::new();
    plain(&fx);
    let config = fx.path("liveconf.toml");
    std::fs::write(
        &config,
        format!("endpoints = [\"{dead}\"]\nstate_dir = \"state\"\n"),
    )
    .unwrap();
    let (code, err) = run(&[
        "render",
        "--once",
        "--config",
        &config.display().to_string(),
        "--srv-domain",
        "example.test",
        "--srv-record",
        "_etcd-client._tcp",
        "--dns-server",
        &dns.addr(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(read_or_empty(&fx.path("out/plain.conf")), "v=1\n");
    // Named only in the note that says it is replaced.
    assert!(
        !err.lines()
            .any(|l| l.contains(&dead) && !l.contains("replaces the endpoints of")),
        "the file's endpoint was tried:\n{err}"
    );
    assert_eq!(
        err.matches("--srv-domain on the command line replaces the endpoints of")
            .count(),
        1,
        "{err}"
    );
    let status: serde_json::Value =
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap();
    assert_eq!(status["endpoint"], format!("SRV {RECORD}"), "{status:#}");
}

/// Every endpoint down (the trial: `backend unavailable` and `fleet
/// report: ... retrying` every 3-7 s, about 20 lines in 25 s, each naming
/// the endpoint it tried): each outage is said once (a reminder at most
/// every minute), and its end once.
#[test]
fn an_outage_of_every_endpoint_is_said_once_and_its_end_once() {
    let mut etcd = Etcd::configure(1, &[]);
    let ep = etcd.members[0].url();
    // Port 1, where nothing listens (a free port could be another test's
    // etcd by the time it is dialled).
    let endpoints = format!("http://127.0.0.1:1,{ep},http://127.0.0.2:1");
    let fx = Fx::new();
    plain(&fx);
    let mut d = Daemon::start(
        &[
            "--confdir",
            &fx.dir.path().display().to_string(),
            "--state-dir",
            &fx.path("state").display().to_string(),
            "--endpoints",
            &endpoints,
            "--wait",
            "0s",
            "--report",
            "--node-name",
            "outage",
            // Retried every second at most, as fast as the report retries.
            "--report-ttl",
            "6s",
        ],
        &fx.path("daemon.log"),
    );
    wait_for("the outage said", LIMIT, || {
        d.count("backend unavailable") > 0 && d.count("fleet report:") > 0
    });
    // A while of retries: still one line each (no reminder before a minute).
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(d.exited(), None, "{}", d.log());
        assert_eq!(d.count("backend unavailable"), 1, "{}", d.log());
        assert_eq!(d.count("fleet report:"), 1, "{}", d.log());
        std::thread::sleep(Duration::from_millis(100));
    }

    etcd.members[0].start();
    etcd.wait_healthy();
    etcd.put("/app/v", "1");
    wait_for("the file rendered", LIMIT, || {
        read_or_empty(&fx.path("out/plain.conf")) == "v=1\n"
    });
    wait_for("the report published", LIMIT, || reported(&etcd, "outage"));
    wait_for("the report's return said", LIMIT, || {
        d.count("fleet report: published again") == 1
    });
    assert_eq!(d.count("INFO connected"), 1, "{}", d.log());
    assert_eq!(d.count("backend unavailable"), 1, "{}", d.log());
    assert_eq!(d.count("fleet report:"), 2, "{}", d.log());
}
