//! liveconf against a secured etcd, as operators deploy it: TLS with client
//! certificates, etcd users and roles (password file, token expiry), and
//! endpoint discovery through DNS SRV records — against real etcd, real
//! dnsmasq and the real binary. Certificates are generated at test time.

use crate::common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};
use common::tls::{Pki, https_url};
use common::{Fx, Run};

const LIMIT: Duration = Duration::from_secs(20);

const ROOT: &str = "root:r00t-Pw";
const PASSWORD: &str = "Lc-s3cret-Pw";
const WRONG_PASSWORD: &str = "Wr0ng-guess-Pw";

/// Resource `NAME`: `x=<value of PREFIX/x>` into out/NAME.conf.
fn resource(fx: &Fx, name: &str, prefix: &str) {
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        name,
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/{name}.conf\"\nprefix = \"{prefix}\"\nkeys = [\"/\"]\n"
        ),
    );
}

fn base_args(fx: &Fx) -> Vec<String> {
    vec![
        "--confdir".into(),
        fx.dir.path().display().to_string(),
        "--state-dir".into(),
        fx.path("state").display().to_string(),
    ]
}

/// `liveconf render --once` against etcd (no --file), with short timeouts.
fn once(fx: &Fx, args: &[String]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["render", "--once"])
        .args(base_args(fx))
        .args(["--connect-timeout", "3s", "--request-timeout", "3s"])
        .args(args)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

/// The daemon (`liveconf render`), coalescing off.
fn daemon(fx: &Fx, args: &[String]) -> Daemon {
    let mut all = base_args(fx);
    all.extend(["--wait".into(), "0s".into()]);
    all.extend_from_slice(args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    Daemon::start(&refs, &fx.path("daemon.log"))
}

/// Waits until the daemon has its watch in place (so a later put is seen
/// through the watch, not through the initial snapshot).
fn wait_watching(d: &Daemon) {
    wait_for("the daemon watching etcd", LIMIT, || {
        d.log().lines().any(|l| l.contains(" connected"))
    });
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// Asserts a failed run printed exactly one non-empty line on stderr (and
/// nothing on stdout), without a panic; returns that line (also printed, so
/// `--nocapture` shows the exact messages).
fn single_error_line(what: &str, r: &Run) -> String {
    assert!(
        !r.stderr.contains("panicked") && !r.stderr.contains("backtrace"),
        "{what}: liveconf panicked:\n{}",
        r.stderr
    );
    let lines: Vec<&str> = r.stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{what}: expected one error line, got:\n{}",
        r.stderr
    );
    assert_eq!(r.stdout, "", "{what}: unexpected stdout");
    println!("[{what}] exit {}: {}", r.code, lines[0]);
    lines[0].to_string()
}

// ---------------------------------------------------------------- TLS

/// A single etcd member serving https and requiring client certificates of `pki`.
fn tls_etcd(pki: &Pki) -> (Etcd, String) {
    let flags = pki.etcd_flags();
    let etcd = Etcd::cluster(1, &refs(&flags));
    let url = https_url(&etcd);
    pki.wait_healthy(&url);
    (etcd, url)
}

#[test]
fn tls_with_client_certificates_renders_once_and_the_daemon_follows_puts() {
    let pki = Pki::new("main");
    let (etcd, url) = tls_etcd(&pki);
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "tls", "/app/tls");

    let mut args = strings(&["--endpoints", &url]);
    args.extend(pki.liveconf_flags());
    once(&fx, &args).expect_code(0);
    assert_eq!(fx.read("out/tls.conf"), "x=1\n");

    // An http:// endpoint is upgraded to https when TLS files are given.
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "2"]);
    let mut http_args = strings(&["--endpoints", &url.replace("https://", "http://")]);
    http_args.extend(pki.liveconf_flags());
    once(&fx, &http_args).expect_code(0);
    assert_eq!(fx.read("out/tls.conf"), "x=2\n");

    let d = daemon(&fx, &args);
    wait_watching(&d);
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "3"]);
    let out = fx.path("out/tls.conf");
    wait_for("a put over TLS reaches the file", LIMIT, || {
        read_or_empty(&out) == "x=3\n"
    });
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "4"]);
    wait_for("a second put reaches the file", LIMIT, || {
        read_or_empty(&out) == "x=4\n"
    });
    assert_eq!(d.count("backend unavailable:"), 0, "{}", d.log());
}

#[test]
fn tls_failures_exit_4_with_one_clear_line_and_leave_the_file_alone() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let (etcd, url) = tls_etcd(&pki);
    pki.ctl(&etcd, &url, &["put", "/app/tls/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "tls", "/app/tls");
    let out = fx.path("out/tls.conf");
    std::fs::write(&out, "old\n").unwrap();
    let host_port = url.trim_start_matches("https://").to_string();

    // liveconf trusts a different CA: etcd's certificate is not verified.
    let r = once(
        &fx,
        &strings(&[
            "--endpoints",
            &url,
            "--ca-file",
            &other.file("ca.pem"),
            "--cert-file",
            &pki.file("client.pem"),
            "--key-file",
            &pki.file("client-key.pem"),
        ]),
    );
    r.expect_code(4);
    let line = single_error_line("untrusted CA", &r);
    assert!(line.contains(&host_port), "endpoint not named: {line}");
    let l = line.to_lowercase();
    assert!(
        l.contains("certificate") || l.contains("tls"),
        "no certificate/TLS problem named: {line}"
    );
    assert_eq!(read_or_empty(&out), "old\n");

    // Server trusted, but no client certificate: etcd refuses the handshake.
    let r = once(
        &fx,
        &strings(&["--endpoints", &url, "--ca-file", &pki.file("ca.pem")]),
    );
    r.expect_code(4);
    let line = single_error_line("no client certificate", &r);
    assert!(line.contains(&host_port), "endpoint not named: {line}");
    assert_eq!(read_or_empty(&out), "old\n");

    // A client certificate from a CA etcd does not trust.
    let r = once(
        &fx,
        &strings(&[
            "--endpoints",
            &url,
            "--ca-file",
            &pki.file("ca.pem"),
            "--cert-file",
            &other.file("client.pem"),
            "--key-file",
            &other.file("client-key.pem"),
        ]),
    );
    r.expect_code(4);
    let line = single_error_line("client certificate of another CA", &r);
    assert!(line.contains(&host_port), "endpoint not named: {line}");
    assert_eq!(read_or_empty(&out), "old\n");

    // And the right files still work (the failures above were the CA's, not the setup's).
    let mut good = strings(&["--endpoints", &url]);
    good.extend(pki.liveconf_flags());
    once(&fx, &good).expect_code(0);
    assert_eq!(read_or_empty(&out), "x=1\n");
}

/// etcd rejecting liveconf's client certificate (none given, or one from a
/// CA etcd does not trust) should say so, as the untrusted-CA case does.
#[test]
fn a_rejected_client_certificate_is_named_in_the_error() {
    let pki = Pki::new("main");
    let other = Pki::new("other");
    let (_etcd, url) = tls_etcd(&pki);
    let fx = Fx::new();
    resource(&fx, "tls", "/app/tls");
    let cases = [
        (
            "no client certificate",
            strings(&["--endpoints", &url, "--ca-file", &pki.file("ca.pem")]),
        ),
        (
            "client certificate of another CA",
            strings(&[
                "--endpoints",
                &url,
                "--ca-file",
                &pki.file("ca.pem"),
                "--cert-file",
                &other.file("client.pem"),
                "--key-file",
                &other.file("client-key.pem"),
            ]),
        ),
    ];
    for (what, args) in cases {
        let r = once(&fx, &args);
        r.expect_code(4);
        let line = single_error_line(what, &r).to_lowercase();
        assert!(
            line.contains("certificate") || line.contains("tls"),
            "{what}: no certificate/TLS problem named: {line}"
        );
    }
}

// ---------------------------------------------------------------- auth

/// Users root and liveconf (role liveconf-ro: read on prefix /app/ only), auth on.
fn enable_auth(etcd: &Etcd) {
    etcd.enable_auth(ROOT.trim_start_matches("root:"), PASSWORD);
}

/// `etcdctl --user root:... ARGS`.
fn as_root(etcd: &Etcd, args: &[&str]) -> String {
    etcd.ctl_as_root(ROOT.trim_start_matches("root:"), args)
}

/// A password file (0600, with a trailing newline, as `echo pw > file` writes it).
fn password_file(fx: &Fx, name: &str, password: &str) -> String {
    use std::os::unix::fs::PermissionsExt;
    let p = fx.path(name);
    std::fs::write(&p, format!("{password}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p.display().to_string()
}

fn auth_args(etcd: &Etcd, pw_file: &str) -> Vec<String> {
    strings(&[
        "--endpoints",
        &etcd.endpoints(),
        "--username",
        "liveconf",
        "--password-file",
        pw_file,
    ])
}

#[test]
fn etcd_auth_with_a_read_only_role_renders_and_follows_puts() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "a", "/app/a");
    let pw = password_file(&fx, "password", PASSWORD);
    let args = auth_args(&etcd, &pw);

    let r = once(&fx, &args);
    r.expect_code(0);
    assert!(
        !r.stderr.contains(PASSWORD),
        "password logged:\n{}",
        r.stderr
    );
    assert_eq!(fx.read("out/a.conf"), "x=1\n");

    let d = daemon(&fx, &args);
    wait_watching(&d);
    as_root(&etcd, &["put", "/app/a/x", "2"]);
    let out = fx.path("out/a.conf");
    wait_for("a put by root reaches the file", LIMIT, || {
        read_or_empty(&out) == "x=2\n"
    });
    assert!(!d.log().contains(PASSWORD), "password logged:\n{}", d.log());
}

#[test]
fn etcd_auth_failures_are_clear_and_never_show_the_password() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    as_root(&etcd, &["put", "/other/x", "1"]);

    // A resource outside the role's read permission.
    let fx = Fx::new();
    resource(&fx, "other", "/other");
    let pw = password_file(&fx, "password", PASSWORD);
    let r = once(&fx, &auth_args(&etcd, &pw));
    r.expect_code(2);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("other: render failed"))
        .unwrap_or_else(|| panic!("no failure line for resource other:\n{}", r.stderr));
    assert!(
        line.to_lowercase().contains("permission denied"),
        "no permission problem named: {line}"
    );
    assert!(!r.stderr.contains(PASSWORD));
    assert!(!fx.path("out/other.conf").exists());

    // Wrong password: exit 4, one line about authentication, no password shown.
    let fx = Fx::new();
    resource(&fx, "a", "/app/a");
    std::fs::write(fx.path("out/a.conf"), "old\n").unwrap();
    let bad = password_file(&fx, "password", WRONG_PASSWORD);
    let r = once(&fx, &auth_args(&etcd, &bad));
    r.expect_code(4);
    let line = single_error_line("wrong password", &r);
    assert!(
        line.to_lowercase().contains("authentication"),
        "authentication not named: {line}"
    );
    assert!(
        line.contains(&etcd.endpoints()),
        "endpoint not named: {line}"
    );
    for secret in [WRONG_PASSWORD, PASSWORD, "r00t-Pw"] {
        assert!(!r.stderr.contains(secret), "a password is shown: {line}");
    }
    assert_eq!(fx.read("out/a.conf"), "old\n");
}

/// A refused read should name what was refused: which prefix (and so which
/// resource) the role lacks.
#[test]

fn permission_denied_names_the_refused_prefix() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/other/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "other", "/other");
    let pw = password_file(&fx, "password", PASSWORD);
    let r = once(&fx, &auth_args(&etcd, &pw));
    r.expect_code(2);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("other: render failed"))
        .unwrap_or_else(|| panic!("no failure line for resource other:\n{}", r.stderr));
    assert!(
        line.contains("etcd refused to read /other"),
        "refused prefix not named: {line}"
    );
    assert!(line.contains("as user liveconf"), "user not named: {line}");
}

/// "One failing resource never stops the others": a resource whose prefix
/// the role may not read fails on its own; the readable ones still render,
/// with `--once` (exit 2, naming the failed resource) and in the daemon.
#[test]

fn a_resource_outside_the_roles_permission_does_not_stop_the_others() {
    let etcd = Etcd::start();
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/a/x", "1"]);
    as_root(&etcd, &["put", "/other/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "a", "/app/a");
    resource(&fx, "other", "/other");
    let pw = password_file(&fx, "password", PASSWORD);
    let args = auth_args(&etcd, &pw);

    let r = once(&fx, &args);
    r.expect_code(2);
    assert!(r.stderr.contains("other"), "{}", r.stderr);
    assert_eq!(fx.read("out/a.conf"), "x=1\n");

    std::fs::remove_file(fx.path("out/a.conf")).unwrap();
    let _d = daemon(&fx, &args);
    let out = fx.path("out/a.conf");
    wait_for(
        "the readable resource rendered by the daemon",
        LIMIT,
        || read_or_empty(&out) == "x=1\n",
    );
}

/// Simple auth tokens expire after `--auth-token-ttl` seconds without use.
/// The daemon's watch keeps running on its expired token; its requests on
/// the same connection (the resync snapshot, every 5 s here) must refresh
/// the token instead of dropping the connection, and a put after an idle
/// period longer than the TTL must still reach the file.
#[test]
fn expired_auth_tokens_are_refreshed_across_idle_periods() {
    let etcd = Etcd::cluster(1, &["--auth-token-ttl", "2"]);
    enable_auth(&etcd);
    as_root(&etcd, &["put", "/app/t/x", "1"]);
    let fx = Fx::new();
    resource(&fx, "t", "/app/t");
    let pw = password_file(&fx, "password", PASSWORD);
    let mut args = auth_args(&etcd, &pw);
    args.extend(strings(&["--resync-interval", "1s"]));
    let d = daemon(&fx, &args);
    let out = fx.path("out/t.conf");
    wait_for("initial render", LIMIT, || read_or_empty(&out) == "x=1\n");
    wait_watching(&d);

    // Proof that the TTL really expires idle tokens: a plain client (no
    // refresh) authenticated now is refused after the same idle period.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let endpoint = etcd.endpoints();
    let mut plain = rt.block_on(async {
        let opts = etcd_client::ConnectOptions::new().with_user("liveconf", PASSWORD);
        etcd_client::Client::connect([endpoint.as_str()], Some(opts))
            .await
            .expect("plain client")
    });

    // Idle, longer than the TTL: both tokens expire.
    std::thread::sleep(Duration::from_secs(4));
    // The daemon's resync snapshot (every 5 s tick here) presents its
    // expired token: etcd logs the refusal, so the refresh path really ran.
    let etcd_log = etcd.dir.path().join("m0.log");
    wait_for("etcd refusing the daemon's expired token", LIMIT, || {
        read_or_empty(&etcd_log).contains("invalid auth token")
    });

    let refused = rt.block_on(plain.get("/app/t/x", None));
    match refused {
        Err(e) => assert!(
            e.to_string().contains("invalid auth token"),
            "unexpected error: {e}"
        ),
        Ok(_) => panic!("the idle token did not expire: the test proves nothing"),
    }

    as_root(&etcd, &["put", "/app/t/x", "2"]);
    wait_for("a put after an idle period reaches the file", LIMIT, || {
        read_or_empty(&out) == "x=2\n"
    });
    assert_eq!(
        d.count("backend unavailable:"),
        0,
        "the daemon lost its connection over an expired token:\n{}",
        d.log()
    );
    assert!(!d.log().contains(PASSWORD));
}

// ---------------------------------------------------------------- SRV

/// dnsmasq on a loopback port serving the given `--srv-host` records.
struct Dnsmasq {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Dnsmasq {
    fn start(srv_hosts: &[String]) -> Dnsmasq {
        let args: Vec<String> = srv_hosts
            .iter()
            .map(|s| format!("--srv-host={s}"))
            .collect();
        Dnsmasq::start_with(None, &args)
    }

    /// dnsmasq with these options, on `port` (a free one when `None`).
    fn start_with(port: Option<u16>, options: &[String]) -> Dnsmasq {
        assert!(
            common::have("dnsmasq"),
            "dnsmasq is required (scripts/ensure-deps dnsmasq installs dnsmasq-base)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = port.unwrap_or_else(free_port);
        let log = std::fs::File::create(dir.path().join("dnsmasq.log")).unwrap();
        // Debian puts it in /usr/sbin, which a user's PATH may lack.
        let bin = if std::path::Path::new("/usr/sbin/dnsmasq").exists() {
            "/usr/sbin/dnsmasq"
        } else {
            "dnsmasq"
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "--no-daemon",
            &format!("--port={port}"),
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            &format!("--pid-file={}", dir.path().join("pid").display()),
        ]);
        cmd.args(options);
        let child = cmd
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start dnsmasq");
        let mut d = Dnsmasq { child, port, dir };
        // dnsmasq also answers over TCP on the same port: ready once it accepts.
        let log_path = d.dir.path().join("dnsmasq.log");
        wait_for("dnsmasq listening", LIMIT, || {
            if let Ok(Some(st)) = d.child.try_wait() {
                panic!("dnsmasq exited ({st}): {}", read_or_empty(&log_path));
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        d
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn srv_discovery_finds_etcd_and_lookup_srv_renders_targets() {
    let etcd = Etcd::start();
    let port = etcd.members[0].client_port;
    etcd.put("/app/srv/x", "1");
    let dns = Dnsmasq::start(&[format!("_etcd-client._tcp.example.test,127.0.0.1,{port}")]);

    // Discovery: no --endpoints, the SRV record points at etcd (plain http).
    let fx = Fx::new();
    resource(&fx, "srv", "/app/srv");
    let r = once(
        &fx,
        &strings(&[
            "--srv-domain",
            "example.test",
            "--srv-record",
            "_etcd-client._tcp",
            "--dns-server",
            &dns.addr(),
        ]),
    );
    r.expect_code(0);
    assert_eq!(fx.read("out/srv.conf"), "x=1\n");

    // A missing record: exit 4, one line naming the record.
    let r = once(
        &fx,
        &strings(&[
            "--srv-domain",
            "example.test",
            "--srv-record",
            "_nothing._tcp",
            "--dns-server",
            &dns.addr(),
        ]),
    );
    r.expect_code(4);
    let line = single_error_line("no SRV record", &r);
    assert!(
        line.contains("_nothing._tcp.example.test"),
        "record not named: {line}"
    );

    // lookup_srv in a template, with dns_server from liveconf.toml.
    let fx = Fx::new();
    std::fs::write(
        fx.path("liveconf.toml"),
        format!("dns_server = \"{}\"\n", dns.addr()),
    )
    .unwrap();
    fx.template(
        "members.tera",
        "{% for s in lookup_srv(name=\"_etcd-client._tcp.example.test\") %}member {{ s.target }}:{{ s.port }}\n{% endfor %}",
    );
    fx.resource(
        "members",
        "[template]\nsrc = \"members.tera\"\ndest = \"{out}/members.conf\"\nprefix = \"/app/srv\"\nkeys = [\"/\"]\n",
    );
    once(&fx, &strings(&["--endpoints", &etcd.endpoints()])).expect_code(0);
    assert_eq!(
        fx.read("out/members.conf"),
        format!("member 127.0.0.1:{port}\n")
    );
}

/// With `srv_domain` and `dns_server`, a daemon that cannot reach the SRV
/// record's target looks the record up again before each new attempt, so
/// it follows DNS to a live member without a SIGHUP or a restart; and the
/// target's address comes from the same nameserver (a name the system
/// resolver does not know).
#[test]
fn srv_discovery_is_looked_up_again_after_each_failure() {
    let etcd = Etcd::start();
    let port = etcd.members[0].client_port;
    etcd.put("/app/srv/x", "1");
    let dead = free_port();
    let dns = Dnsmasq::start_with(
        None,
        &[
            format!("--srv-host=_etcd-client._tcp.example.test,dead.example.test,{dead}"),
            "--address=/dead.example.test/127.0.0.1".into(),
        ],
    );
    let dns_port = dns.port;
    let fx = Fx::new();
    resource(&fx, "srv", "/app/srv");
    let d = daemon(
        &fx,
        &strings(&[
            "--srv-domain",
            "example.test",
            "--srv-record",
            "_etcd-client._tcp",
            "--dns-server",
            &dns.addr(),
        ]),
    );
    wait_for("the dead target reported", LIMIT, || {
        d.log().lines().any(|l| {
            l.contains("backend unavailable") && l.contains(&format!("dead.example.test:{dead}"))
        })
    });
    // DNS now names a live member, under a name only this nameserver knows.
    drop(dns);
    let _dns = Dnsmasq::start_with(
        Some(dns_port),
        &[
            format!("--srv-host=_etcd-client._tcp.example.test,etcd.example.test,{port}"),
            "--address=/etcd.example.test/127.0.0.1".into(),
        ],
    );
    let status = || -> serde_json::Value {
        serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
    };
    wait_for("connected to the member DNS names now", LIMIT, || {
        let s = status();
        read_or_empty(&fx.path("out/srv.conf")) == "x=1\n"
            && s["connected"] == true
            && s["endpoint"] == format!("http://etcd.example.test:{port}").as_str()
    });
    etcd.put("/app/srv/x", "2");
    wait_for("watching it", LIMIT, || {
        read_or_empty(&fx.path("out/srv.conf")) == "x=2\n"
    });
}

#[test]
fn srv_discovery_of_a_tls_etcd_uses_https_for_the_ssl_record() {
    let pki = Pki::new("main");
    let (etcd, url) = tls_etcd(&pki);
    let port = etcd.members[0].client_port;
    pki.ctl(&etcd, &url, &["put", "/app/srv/x", "s"]);
    let dns = Dnsmasq::start(&[format!(
        "_etcd-client-ssl._tcp.example.test,127.0.0.1,{port}"
    )]);
    let fx = Fx::new();
    resource(&fx, "srv", "/app/srv");
    // The default record is _etcd-client-ssl._tcp: https, with the client certificate.
    let mut args = strings(&["--srv-domain", "example.test", "--dns-server", &dns.addr()]);
    args.extend(pki.liveconf_flags());
    once(&fx, &args).expect_code(0);
    assert_eq!(fx.read("out/srv.conf"), "x=s\n");
}

/// A TLS etcd found by SRV through `dns_server`, whose target's address
/// comes from that nameserver: dialled by the address, verified by the
/// target's name (a name the certificate lacks is refused, whatever the
/// address).
#[test]
fn srv_targets_resolved_through_dns_server_are_verified_by_their_name() {
    let pki = Pki::new("main");
    let (etcd, url) = tls_etcd(&pki);
    let port = etcd.members[0].client_port;
    pki.ctl(&etcd, &url, &["put", "/app/srv/x", "n"]);
    let fx = Fx::new();
    resource(&fx, "srv", "/app/srv");
    for (target, code) in [("localhost", 0), ("etcd.example.test", 4)] {
        let dns = Dnsmasq::start_with(
            None,
            &[
                format!("--srv-host=_etcd-client-ssl._tcp.example.test,{target},{port}"),
                format!("--address=/{target}/127.0.0.1"),
            ],
        );
        let mut args = strings(&["--srv-domain", "example.test", "--dns-server", &dns.addr()]);
        args.extend(pki.liveconf_flags());
        let r = once(&fx, &args);
        r.expect_code(code);
        if code == 0 {
            assert_eq!(fx.read("out/srv.conf"), "x=n\n");
        } else {
            assert!(
                r.stderr.contains(&format!("https://{target}:{port}")),
                "{}",
                r.stderr
            );
        }
    }
}
