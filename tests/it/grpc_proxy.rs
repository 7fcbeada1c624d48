//! The daemon through `etcd grpc-proxy` (etcd 3.4), which does not answer
//! the watch stream's progress requests: a quiet spell longer than the
//! liveness bound must not be taken for an outage (an answered unary read
//! on the same channel proves the connection alive), a change after it
//! still arrives, and a proxy that stops answering is still reported
//! unavailable within the bound.

use crate::common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Fx;
use common::etcd::{Daemon, Etcd, free_port, read_or_empty, wait_for};

/// `--request-timeout` of the daemon: its liveness bound is two progress
/// periods (5 s each) plus this, 11 s.
const REQUEST_TIMEOUT: &str = "1s";
const BOUND: Duration = Duration::from_secs(11);
/// A quiet spell well past the bound (and the tick after it).
const QUIET: Duration = Duration::from_secs(20);
const LIMIT: Duration = Duration::from_secs(30);

/// A running grpc-proxy; killed (and resumed first, if stopped) when dropped.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn status(fx: &Fx) -> serde_json::Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
}

fn unavailable(d: &Daemon) -> bool {
    d.log().contains("backend unavailable")
}

#[test]
fn quiet_spell_through_grpc_proxy_is_not_an_outage() {
    let etcd = Etcd::start();
    let port = free_port();
    let proxy_log = std::fs::File::create(etcd.dir.path().join("proxy.log")).expect("log");
    let child = Command::new("etcd")
        .args([
            "grpc-proxy",
            "start",
            &format!("--endpoints={}", etcd.members[0].url()),
            &format!("--listen-addr=127.0.0.1:{port}"),
        ])
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .stdout(Stdio::from(proxy_log.try_clone().expect("log")))
        .stderr(Stdio::from(proxy_log))
        .spawn()
        .expect("start etcd grpc-proxy");
    let proxy = Proxy(child);
    let proxy_url = format!("http://127.0.0.1:{port}");
    wait_for("the proxy answers", LIMIT, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let fx = Fx::new();
    fx.template("app.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.resource(
        "app",
        "[template]\nsrc = \"app.tera\"\ndest = \"{out}/app.conf\"\nkeys = [\"/app\"]\n",
    );
    etcd.put("/app/v", "1");
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let d = Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &proxy_url,
            "--state-dir",
            &state,
            "--wait",
            "0s",
            "--request-timeout",
            REQUEST_TIMEOUT,
        ],
        &fx.path("daemon.log"),
    );
    let dest = fx.path("out/app.conf");
    wait_for("the file installed", LIMIT, || {
        read_or_empty(&dest) == "v=1\n"
    });
    wait_for("status connected", LIMIT, || {
        status(&fx)["connected"] == true
    });

    // The quiet spell: nothing changes, and nothing may say unavailable.
    let quiet = Instant::now();
    while quiet.elapsed() < QUIET {
        assert!(
            !unavailable(&d),
            "unavailable in a quiet spell:\n{}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(status(&fx)["connected"], true, "{}", d.log());

    etcd.put("/app/v", "2");
    wait_for("the put after the quiet spell", LIMIT, || {
        read_or_empty(&dest) == "v=2\n"
    });
    assert!(!unavailable(&d), "{}", d.log());

    // A proxy that stops answering (connection open, nothing said).
    let pid = nix::unistd::Pid::from_raw(proxy.0.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    let hung = Instant::now();
    wait_for("unavailable once the proxy hangs", LIMIT, || {
        unavailable(&d)
    });
    let took = hung.elapsed();
    eprintln!("hung proxy reported unavailable after {took:?}");
    assert!(
        took <= BOUND + Duration::from_secs(6),
        "took {took:?}\n{}",
        d.log()
    );
    assert!(d.log().contains(&proxy_url), "{}", d.log());
    assert_eq!(status(&fx)["connected"], false, "{}", d.log());
    drop(proxy);
}
