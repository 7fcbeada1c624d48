//! etcd that cannot be found or reached, as a new user meets it (a
//! trial with real dnsmasq, etcd members and `srv_domain` in
//! liveconf.toml): `--endpoints` or `--srv-domain` on the command line is
//! what a run uses, whatever the file says.

use crate::common;

use std::process::Command;

use crate::srv_follow::{Dnsmasq, RECORD};
use common::Fx;
use common::etcd::{Etcd, free_port, read_or_empty};

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
