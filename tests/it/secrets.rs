//! Secrets: the etcd password (and the auth tokens etcd hands out for it)
//! never appear in logs — even at debug/trace level —, status.json, the
//! Prometheus metrics or error messages; a password file others can read is
//! warned about; TLS verification has no off switch.

use crate::common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};
use common::hardening::{assert_no_panic, p, status};
use common::tls::{Pki, https_url};
use common::{Fx, Run};

const LIMIT: Duration = Duration::from_secs(30);
const ROOT_PW: &str = "r00t-Pw-4b1d9e";
const PASSWORD: &str = "Lc-s3cret-Pw-7c1e2a";
const WRONG: &str = "Wr0ng-guess-Pw-55d0f3";

// --------------------------------------------------------------- helpers

/// Users root and liveconf (read on /app/ only); auth on.
fn enable_auth(etcd: &Etcd) {
    etcd.enable_auth(ROOT_PW, PASSWORD);
}

fn as_root(etcd: &Etcd, args: &[&str]) {
    etcd.ctl_as_root(ROOT_PW, args);
}

fn password_file(fx: &Fx, name: &str, password: &str, mode: u32) -> String {
    let f = fx.path(name);
    std::fs::write(&f, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
    f.display().to_string()
}

/// Resource `a` (x=<value of /app/a/x>) and `denied` (a prefix the role cannot read).
fn resources(fx: &Fx) {
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "a",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/a.conf\"\nprefix = \"/app/a\"\nkeys = [\"/\"]\n",
    );
    fx.resource(
        "denied",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/denied.conf\"\nprefix = \"/other\"\nkeys = [\"/\"]\n",
    );
}

fn args(fx: &Fx, etcd: &Etcd, pw_file: &str) -> Vec<String> {
    [
        "--confdir",
        &p(fx, ""),
        "--state-dir",
        &p(fx, "state"),
        "--endpoints",
        &etcd.endpoints(),
        "--username",
        "liveconf",
        "--password-file",
        pw_file,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

fn once(extra: &[String]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args([
            "render",
            "--once",
            "--connect-timeout",
            "3s",
            "--request-timeout",
            "3s",
        ])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

fn daemon(fx: &Fx, extra: &[String]) -> Daemon {
    let mut all: Vec<&str> = vec!["--wait", "0s"];
    all.extend(extra.iter().map(String::as_str));
    Daemon::start(&all, &fx.path("daemon.log"))
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    Some(String::from_utf8_lossy(&raw).into_owned())
}

/// An etcd "simple" auth token: 16 ASCII letters, a dot, digits.
fn find_simple_token(text: &str) -> Option<String> {
    let b = text.as_bytes();
    let mut i = 0;
    while i + 18 <= b.len() {
        let letters = b[i..i + 16].iter().all(u8::is_ascii_alphabetic);
        let boundary = i == 0 || !b[i - 1].is_ascii_alphanumeric();
        if letters && boundary && b[i + 16] == b'.' && b[i + 17].is_ascii_digit() {
            let end = (i + 17..b.len())
                .find(|&j| !b[j].is_ascii_digit())
                .unwrap_or(b.len());
            if end == b.len() || !b[end].is_ascii_alphanumeric() {
                return Some(text[i..end].to_string());
            }
        }
        i += 1;
    }
    None
}

/// Panics if `text` holds any password of this test or an auth token.
fn assert_no_secret(what: &str, text: &str) {
    for secret in [PASSWORD, WRONG, ROOT_PW] {
        assert!(
            !text.contains(secret),
            "{what} shows a password ({secret}):\n{text:.4000}"
        );
    }
    if let Some(t) = find_simple_token(text) {
        panic!("{what} shows something like an etcd auth token ({t}):\n{text:.4000}");
    }
}

/// A real auth token for `liveconf` from this etcd (what liveconf holds
/// in memory while it runs), to check the token detector against.
fn real_token(etcd: &Etcd) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let c = etcd_client::Client::connect([etcd.endpoints()], None)
            .await
            .expect("connect");
        c.auth_client()
            .authenticate("liveconf".into(), PASSWORD.into())
            .await
            .expect("authenticate")
            .token()
            .to_string()
    })
}

// ----------------------------------------------------------------- tests

#[test]
fn the_password_and_auth_tokens_never_appear_in_logs_status_or_metrics() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    as_root(&etcd, &["put", "/other/x", "1"]);
    let fx = Fx::new();
    resources(&fx);
    let pw = password_file(&fx, "password", PASSWORD, 0o600);
    let base = args(&fx, &etcd, &pw);
    // The token detector finds a real token (so finding none means something).
    let token = real_token(&etcd);
    assert_eq!(
        find_simple_token(&format!("token={token} x")),
        Some(token.clone()),
        "etcd's token format changed: {token}"
    );

    // render --once at the most verbose level there is.
    let mut a = base.clone();
    a.extend(["--log-level".to_string(), "trace".to_string()]);
    let r = once(&a);
    r.expect_code(2); // `denied` cannot be read
    assert_eq!(fx.read("out/a.conf"), "x=1\n");
    assert_no_secret("render --once --log-level trace (stderr)", &r.stderr);
    assert_no_secret("render --once (stdout)", &r.stdout);
    assert_no_secret(
        "status.json after --once",
        &read_or_empty(&fx.path("state/status.json")),
    );
    println!(
        "render --once --log-level trace: {} log lines, no secret",
        r.stderr.lines().count()
    );

    // The daemon at debug level, with metrics, following puts.
    let port = free_port();
    let mut a = base.clone();
    a.extend(
        [
            "--log-level",
            "debug",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut d = daemon(&fx, &a);
    wait_for("the daemon watching", LIMIT, || {
        d.log().contains("first render done")
    });
    as_root(&etcd, &["put", "/app/a/x", "2"]);
    wait_for("a put reaches the file", LIMIT, || {
        read_or_empty(&fx.path("out/a.conf")) == "x=2\n"
    });
    let metrics = http_get(port, "/metrics").expect("metrics answer");
    assert!(metrics.contains("200"), "{metrics}");
    assert_no_secret("/metrics", &metrics);
    let st = read_or_empty(&fx.path("state/status.json"));
    assert!(
        st.contains("permission denied"),
        "the denied resource is not reported:\n{st}"
    );
    assert_no_secret("status.json (daemon)", &st);
    assert_eq!(d.stop(), Some(0));
    let log = d.log();
    assert!(
        log.contains("DEBUG"),
        "the daemon did not log at debug level:\n{log}"
    );
    assert_no_secret("daemon log (--log-level debug)", &log);
    assert_no_panic("daemon", &log);
    println!(
        "daemon --log-level debug: {} log lines; status.json and /metrics ({} bytes): no secret",
        log.lines().count(),
        metrics.len()
    );
}

#[test]
fn a_wrong_password_is_reported_without_showing_any_password() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    let fx = Fx::new();
    resources(&fx);
    std::fs::write(fx.path("out/a.conf"), "old\n").unwrap();
    let pw = password_file(&fx, "password", WRONG, 0o600);
    let base = args(&fx, &etcd, &pw);

    let mut a = base.clone();
    a.extend(["--log-level".to_string(), "trace".to_string()]);
    let r = once(&a);
    r.expect_code(4);
    let line = r
        .stderr
        .lines()
        .find(|l| l.to_lowercase().contains("authentication"))
        .unwrap_or_else(|| panic!("authentication failure not named:\n{}", r.stderr));
    println!("{line}");
    assert_no_secret("wrong password, render --once --log-level trace", &r.stderr);
    assert_eq!(fx.read("out/a.conf"), "old\n");

    let port = free_port();
    let mut a = base.clone();
    a.extend(
        [
            "--log-level",
            "debug",
            "--metrics-addr",
            &format!("127.0.0.1:{port}"),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let mut d = daemon(&fx, &a);
    wait_for("the daemon reporting the failure", LIMIT, || {
        d.log().to_lowercase().contains("authentication")
    });
    let metrics = http_get(port, "/metrics").unwrap_or_default();
    assert_no_secret("/metrics (wrong password)", &metrics);
    assert_no_secret(
        "status.json (wrong password)",
        &read_or_empty(&fx.path("state/status.json")),
    );
    assert!(d.exited().is_none(), "the daemon gave up:\n{}", d.log());
    d.stop();
    assert_no_secret("daemon log (wrong password)", &d.log());
    assert_eq!(fx.read("out/a.conf"), "old\n");
}

/// The warning fires for any group or other permission bit, and not for
/// 0600/0400; it names the file and never the password.
#[test]
fn a_password_file_readable_by_others_is_warned_about() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    for (mode, warned) in [
        (0o644, true),
        (0o640, true),
        (0o604, true),
        (0o660, true),
        (0o600, false),
        (0o400, false),
    ] {
        let fx = Fx::new();
        fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
        fx.resource(
            "a",
            "[template]\nsrc = \"x.tera\"\ndest = \"{out}/a.conf\"\nprefix = \"/app/a\"\nkeys = [\"/\"]\n",
        );
        let pw = password_file(&fx, "password", PASSWORD, mode);
        let r = once(&args(&fx, &etcd, &pw));
        r.expect_code(0);
        let warning = r
            .stderr
            .lines()
            .find(|l| l.contains("WARN") && l.contains("password file"));
        match (warned, warning) {
            (true, Some(l)) => {
                println!("{mode:04o}: {l}");
                assert!(l.contains(&pw) && l.contains("readable"), "{l}");
            }
            (true, None) => panic!("{mode:04o}: no warning:\n{}", r.stderr),
            (false, Some(l)) => panic!("{mode:04o}: unexpected warning: {l}"),
            (false, None) => {}
        }
        assert_no_secret("password file warning", &r.stderr);
    }
}

/// There is no option that turns certificate verification off: no such
/// flag in any `--help`, no such key accepted in liveconf.toml, and a
/// server certificate from a CA liveconf was not given is refused (with or
/// without `--ca-file`).
#[test]
fn tls_verification_cannot_be_turned_off() {
    let bin = env!("CARGO_BIN_EXE_liveconf");
    for sub in [
        &[][..],
        &["render"][..],
        &["check"][..],
        &["status"][..],
        &["fleet"][..],
    ] {
        let out = Command::new(bin).args(sub).arg("--help").output().unwrap();
        let help = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(out.status.success(), "{sub:?} --help failed");
        for word in [
            "insecure",
            "skip-verify",
            "skip_verify",
            "no-verify",
            "noverify",
            "danger",
            "accept-invalid",
            "tls-skip",
        ] {
            assert!(
                !help.contains(word),
                "`liveconf {sub:?} --help` mentions {word:?}:\n{help}"
            );
        }
    }
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let flags = pki.etcd_flags();
    let refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let etcd = Etcd::cluster(1, &refs);
    let url = https_url(&etcd);
    pki.wait_healthy(&url);
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "1"]);
    let fx = Fx::new();
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "tls",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/tls.conf\"\nprefix = \"/app/tls\"\nkeys = [\"/\"]\n",
    );
    std::fs::write(fx.path("out/tls.conf"), "old\n").unwrap();
    let base: Vec<String> = [
        "--confdir",
        &p(&fx, ""),
        "--state-dir",
        &p(&fx, "state"),
        "--endpoints",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let client: Vec<String> = vec![
        "--cert-file".into(),
        pki.file("client.pem"),
        "--key-file".into(),
        pki.file("client-key.pem"),
    ];

    // Keys that would turn verification off elsewhere are unknown here.
    for key in [
        "insecure_skip_verify = true",
        "tls_insecure = true",
        "insecure = true",
        "verify = false",
    ] {
        std::fs::write(fx.path("liveconf.toml"), format!("{key}\n")).unwrap();
        let r = once(&base);
        r.expect_code(3);
        let name = key.split_whitespace().next().unwrap();
        assert!(
            r.stderr.contains(name),
            "{key}: not named as an error:\n{}",
            r.stderr
        );
        assert_eq!(fx.read("out/tls.conf"), "old\n");
    }
    std::fs::remove_file(fx.path("liveconf.toml")).unwrap();

    // The wrong CA.
    let mut a = base.clone();
    a.extend(["--ca-file".into(), other.file("ca.pem")]);
    a.extend(client.clone());
    let r = once(&a);
    r.expect_code(4);
    println!("wrong CA: {}", r.stderr.trim());
    let l = r.stderr.to_lowercase();
    assert!(
        l.contains("certificate") || l.contains("tls"),
        "{}",
        r.stderr
    );
    assert_eq!(fx.read("out/tls.conf"), "old\n");

    // No CA given: the system roots do not know this CA either.
    let mut a = base.clone();
    a.extend(client.clone());
    let r = once(&a);
    assert_ne!(
        r.code, 0,
        "connected without verifying the certificate:\n{}",
        r.stderr
    );
    println!("no CA file: exit {}: {}", r.code, r.stderr.trim());
    assert_eq!(fx.read("out/tls.conf"), "old\n");

    // And the right CA works (the failures above were the CA's).
    let mut a = base.clone();
    a.extend(pki.liveconf_flags());
    once(&a).expect_code(0);
    assert_eq!(fx.read("out/tls.conf"), "x=1\n");
}

/// Credentials written into an endpoint URL (`http://user:password@host`,
/// as many tools accept) are not used for authentication, and the URL is
/// shown as given: in the log, in errors, and in the world-readable
/// status.json.
#[test]
fn credentials_in_an_endpoint_url_are_never_shown() {
    let etcd = Etcd::start();
    etcd.put("/app/a/x", "1");
    let fx = Fx::new();
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "a",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/a.conf\"\nprefix = \"/app/a\"\nkeys = [\"/\"]\n",
    );
    let url = etcd
        .endpoints()
        .replace("http://", &format!("http://liveconf:{PASSWORD}@"));
    let a: Vec<String> = [
        "--confdir",
        &p(&fx, ""),
        "--state-dir",
        &p(&fx, "state"),
        "--endpoints",
        &url,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = once(&a);
    assert_no_secret("render --once with credentials in the URL", &r.stderr);
    assert_no_secret("status.json", &read_or_empty(&fx.path("state/status.json")));
    let dead = format!("http://liveconf:{PASSWORD}@127.0.0.1:{}", free_port());
    let a: Vec<String> = [
        "--confdir",
        &p(&fx, ""),
        "--state-dir",
        &p(&fx, "state"),
        "--endpoints",
        &dead,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let r = once(&a);
    assert_no_secret("connection error with credentials in the URL", &r.stderr);
    let _ = status(&fx);
}
