//! The daemon through `etcd grpc-proxy` (etcd 3.4), which does not answer
//! the watch stream's progress requests: a quiet spell longer than the
//! liveness bound must not be taken for an outage (an answered unary read
//! on the same channel proves the connection alive), a change after it
//! still arrives, and a proxy that stops answering is still reported
//! unavailable within the bound.

use crate::common;

use std::path::{Path, PathBuf};
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

/// A running `etcd grpc-proxy start` on a loopback port; killed (and
/// resumed first, if stopped) when dropped.
struct Proxy {
    child: Option<Child>,
    port: u16,
    backends: String,
    log: PathBuf,
}

impl Proxy {
    /// A proxy in front of `backends` (etcd client URLs, comma-separated),
    /// on a free port, logging to `dir/NAME.log`; returns once it accepts.
    fn start(backends: &str, dir: &Path, name: &str) -> Proxy {
        let mut p = Proxy {
            child: None,
            port: free_port(),
            backends: backends.to_string(),
            log: dir.join(format!("{name}.log")),
        };
        p.restart();
        p
    }

    /// Starts the proxy again, on the same port.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "proxy already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("proxy log");
        let child = Command::new("etcd")
            .args([
                "grpc-proxy",
                "start",
                &format!("--endpoints={}", self.backends),
                &format!("--listen-addr=127.0.0.1:{}", self.port),
            ])
            .env("ETCD_UNSUPPORTED_ARCH", "")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd grpc-proxy");
        self.child = Some(child);
        let port = self.port;
        wait_for("the proxy answers", LIMIT, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> nix::unistd::Pid {
        let id = self.child.as_ref().map(|c| c.id()).expect("proxy running");
        nix::unistd::Pid::from_raw(id as i32)
    }

    /// SIGKILL, as abrupt as a crash.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(c.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = read_or_empty(&self.log);
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            eprintln!("---- grpc-proxy {} log (last lines) ----", self.url());
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
        self.kill();
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
    let proxy = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy");
    let proxy_url = proxy.url();
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
    // Found by a new-user trial: behind a proxy the last event stopped
    // moving in a quiet spell, so `liveconf status --max-age` went WARNING
    // and CRITICAL. The liveness read counts as hearing from etcd.
    let out = Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["status", "--state-dir", &state, "--max-age", "15s"])
        .output()
        .expect("run liveconf status");
    assert!(
        out.status.success(),
        "status after {}s of quiet through a proxy: {}{}",
        QUIET.as_secs(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    etcd.put("/app/v", "2");
    wait_for("the put after the quiet spell", LIMIT, || {
        read_or_empty(&dest) == "v=2\n"
    });
    assert!(!unavailable(&d), "{}", d.log());

    // A proxy that stops answering (connection open, nothing said).
    nix::sys::signal::kill(proxy.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
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
    // The log line comes first; status.json at the end of the same turn.
    wait_for("status.json saying not connected", LIMIT, || {
        status(&fx)["connected"] == false
    });
    drop(proxy);
}

// ------------------------------------------------- fleets behind proxies

/// One host: its confdir, state and files, and its daemon (dropped first,
/// so a failing test still shows the daemon's log).
struct Host {
    d: Daemon,
    fx: Fx,
}

impl Host {
    /// `liveconf render` of resource `app` (`v={{ /app/v }}`) through
    /// `endpoints`, with `extra` arguments.
    fn start(endpoints: &str, extra: &[&str]) -> Host {
        let fx = Fx::new();
        app_resource(&fx);
        let confdir = fx.dir.path().display().to_string();
        let state = fx.path("state").display().to_string();
        let mut args = vec![
            "--confdir",
            &confdir,
            "--endpoints",
            endpoints,
            "--state-dir",
            &state,
            "--wait",
            "0s",
            "--request-timeout",
            REQUEST_TIMEOUT,
        ];
        args.extend_from_slice(extra);
        let d = Daemon::start(&args, &fx.path("daemon.log"));
        Host { d, fx }
    }

    fn file(&self) -> String {
        read_or_empty(&self.fx.path("out/app.conf"))
    }

    fn status(&self) -> serde_json::Value {
        status(&self.fx)
    }

    /// The endpoint status.json names while connected.
    fn on(&self) -> Option<String> {
        let s = self.status();
        (s["connected"] == true)
            .then(|| s["endpoint"].as_str().map(str::to_string))
            .flatten()
    }
}

fn app_resource(fx: &Fx) {
    fx.template("app.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.resource(
        "app",
        "[template]\nsrc = \"app.tera\"\ndest = \"{out}/app.conf\"\nkeys = [\"/app\"]\n",
    );
}

/// Waits until every host's file says `v=VALUE`.
fn wait_all(hosts: &[Host], value: &str, what: &str) {
    let want = format!("v={value}\n");
    wait_for(what, LIMIT, || hosts.iter().all(|h| h.file() == want));
}

/// A gauge of etcd's own `/metrics` (e.g. `etcd_debugging_mvcc_watcher_total`).
fn etcd_gauge(etcd: &Etcd, name: &str) -> i64 {
    etcd.members[0]
        .server_metrics()
        .lines()
        .find_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            (series == name)
                .then(|| value.parse::<f64>().ok())
                .flatten()
        })
        .unwrap_or_else(|| panic!("etcd's /metrics has no {name}")) as i64
}

/// Six daemons behind two proxies, each given both (three list one first,
/// three the other): a quiet spell longer than the liveness bound is no
/// outage for any of them, etcd sees one watcher per proxy (the proxies
/// coalesce the hosts' identical watches), and when one proxy is killed its
/// daemons move to the other within the bound and lose no update, while
/// the other proxy's daemons notice nothing.
#[test]
fn daemons_behind_two_proxies_ride_out_quiet_and_fail_over_when_one_dies() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let watchers = || etcd_gauge(&etcd, "etcd_debugging_mvcc_watcher_total");
    let alone = watchers();
    let mut a = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy-a");
    let b = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy-b");
    let (ua, ub) = (a.url(), b.url());
    // What the proxies watch on their own (nothing from a host yet): wait
    // for both to have answered a request, then for the count to settle.
    etcd.ctl_at(&ua, &["get", "/app/v"]);
    etcd.ctl_at(&ub, &["get", "/app/v"]);
    let base = watchers();
    // The proxy's own watchers, each.
    let own = (base - alone) / 2;

    let ab = format!("{ua},{ub}");
    let ba = format!("{ub},{ua}");
    let hosts: Vec<Host> = (0..6)
        .map(|i| Host::start(if i % 2 == 0 { &ab } else { &ba }, &[]))
        .collect();
    wait_all(&hosts, "1", "every file installed");
    wait_for("every daemon connected", LIMIT, || {
        hosts.iter().all(|h| h.on().is_some())
    });
    let on_a: Vec<usize> = (0..hosts.len())
        .filter(|&i| hosts[i].on().as_deref() == Some(ua.as_str()))
        .collect();
    assert_eq!(on_a, vec![0, 2, 4], "each daemon uses its first endpoint");

    // The proxies coalesce: six hosts watching /app are one watcher per
    // proxy in etcd, not six.
    wait_for("one etcd watcher per proxy", LIMIT, || {
        watchers() == base + 2
    });

    // The quiet spell: nobody says unavailable, everybody stays connected.
    let quiet = Instant::now();
    while quiet.elapsed() < QUIET {
        for h in &hosts {
            assert!(
                !unavailable(&h.d),
                "unavailable in a quiet spell:\n{}",
                h.d.log()
            );
            assert!(h.on().is_some(), "status not connected: {}", h.status());
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    etcd.put("/app/v", "2");
    wait_all(&hosts, "2", "the put after the quiet spell");
    assert_eq!(
        watchers(),
        base + 2,
        "etcd's watchers after the quiet spell"
    );

    // Proxy A dies; a put made at once reaches every file, and A's daemons
    // are on B within the liveness bound.
    a.kill();
    let killed = Instant::now();
    etcd.put("/app/v", "3");
    wait_all(&hosts, "3", "the put after proxy A died");
    wait_for("A's daemons connected to B", BOUND, || {
        hosts.iter().all(|h| h.on().as_deref() == Some(ub.as_str()))
    });
    eprintln!("daemons moved from proxy A to B in {:?}", killed.elapsed());
    for (i, h) in hosts.iter().enumerate() {
        if on_a.contains(&i) {
            assert!(
                h.d.log().contains(&ua),
                "the lost proxy is not named:\n{}",
                h.d.log()
            );
            // Said in an operator's words, not only h2's ("stream closed
            // because of a broken pipe").
            assert!(
                h.d.log().contains("the connection was lost"),
                "the outage line does not say the connection was lost:\n{}",
                h.d.log()
            );
        } else {
            assert!(
                !unavailable(&h.d),
                "B's daemon saw an outage:\n{}",
                h.d.log()
            );
        }
    }
    etcd.put("/app/v", "4");
    wait_all(&hosts, "4", "a put after the failover");
    wait_for("one etcd watcher left for the hosts, B's", LIMIT, || {
        watchers() == alone + own + 1
    });
}

/// `liveconf ARGS` (no confdir), through `endpoint`.
fn liveconf<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> common::Run {
    common::Run::from(
        Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .output()
            .expect("run liveconf"),
    )
}

/// `liveconf fleet --max-lag 1s --format json` through `endpoint`: the
/// exit code and each node's problems.
fn fleet(endpoint: &str) -> (i32, Vec<(String, Vec<String>)>, String) {
    let r = liveconf(&[
        "fleet",
        "--endpoints",
        endpoint,
        "--max-lag",
        "1s",
        "--format",
        "json",
    ]);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap_or_default();
    let hosts = v
        .as_array()
        .map(|a| {
            a.iter()
                .map(|h| {
                    let node = h["node"].as_str().unwrap_or_default().to_string();
                    let problems = h["problems"]
                        .as_array()
                        .map(|p| {
                            p.iter()
                                .map(|x| x.as_str().unwrap_or_default().to_string())
                                .collect()
                        })
                        .unwrap_or_default();
                    (node, problems)
                })
                .collect()
        })
        .unwrap_or_default();
    (
        r.code,
        hosts,
        format!("exit {}\n{}\n{}", r.code, r.stdout, r.stderr),
    )
}

/// The fleet report through a proxy: three daemons publish under a 2 s
/// lease kept alive through the proxy, so for many times the lease
/// `liveconf fleet` (through the proxy too) names every host, in sync; a
/// change reaches every host and the fleet says so. `render --once`,
/// `check` and `--noop --diff --exit-code` work through the proxy as well.
#[test]
fn fleet_reports_render_once_and_check_through_a_proxy() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let proxy = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy");
    let url = proxy.url();
    let names = ["h1", "h2", "h3"];
    let hosts: Vec<Host> = names
        .iter()
        .map(|n| Host::start(&url, &["--report", "--node-name", n, "--report-ttl", "2s"]))
        .collect();
    wait_all(&hosts, "1", "every file installed");
    let in_sync = |hosts: &[(String, Vec<String>)]| {
        let named: Vec<&str> = hosts.iter().map(|(n, _)| n.as_str()).collect();
        named == names && hosts.iter().all(|(_, p)| p.is_empty())
    };
    let mut last = String::new();
    wait_for("fleet names every host in sync", LIMIT, || {
        let (code, hosts, out) = fleet(&url);
        last = out;
        code == 0 && in_sync(&hosts)
    });
    // Four lease lifetimes: every report stays (kept alive through the proxy).
    let kept = Instant::now();
    while kept.elapsed() < Duration::from_secs(8) {
        let (code, hosts, out) = fleet(&url);
        assert!(
            code == 0 && in_sync(&hosts),
            "a report lapsed through the proxy:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    etcd.put("/app/v", "2");
    wait_all(&hosts, "2", "the change on every host");
    wait_for(
        "fleet names every host in sync after the change",
        LIMIT,
        || {
            let (code, hosts, out) = fleet(&url);
            last = out;
            code == 0 && in_sync(&hosts)
        },
    );
    for h in &hosts {
        assert!(!h.d.log().contains("fleet report:"), "{}", h.d.log());
    }

    // One-shot commands through the proxy.
    let fx = Fx::new();
    app_resource(&fx);
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let common = [
        "--confdir",
        &confdir,
        "--endpoints",
        &url,
        "--state-dir",
        &state,
    ];
    let with = |first: &[&'static str]| -> Vec<String> {
        first
            .iter()
            .chain(common.iter())
            .map(|s| s.to_string())
            .collect()
    };
    liveconf(&with(&["render", "--once"])).expect_code(0);
    assert_eq!(fx.read("out/app.conf"), "v=2\n");
    liveconf(&with(&["check"])).expect_code(0);
    etcd.put("/app/v", "3");
    let r = liveconf(&with(&[
        "render",
        "--once",
        "--noop",
        "--diff",
        "--exit-code",
    ]));
    r.expect_code(1);
    assert!(r.stdout.contains("+v=3"), "{}", r.stdout);
    liveconf(&with(&["render", "--once"])).expect_code(0);
    assert_eq!(fx.read("out/app.conf"), "v=3\n");
}

/// A daemon behind a proxy that goes away while keys change and etcd is
/// compacted past the daemon's revision: when the proxy is back (same
/// address) the watch it resumes is compacted, the daemon takes a new
/// snapshot through the proxy and its file is right; the periodic resync
/// through the proxy finds nothing missing; later changes still arrive.
#[test]
fn compaction_behind_a_proxy_takes_a_new_snapshot_through_it() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let mut proxy = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy");
    let h = Host::start(&proxy.url(), &["--resync-interval", "2s"]);
    wait_all(std::slice::from_ref(&h), "1", "the file installed");
    wait_for("connected", LIMIT, || h.on().is_some());

    proxy.kill();
    wait_for("status connected=false", LIMIT, || {
        h.status()["connected"] == false
    });
    let direct = etcd.members[0].url();
    etcd.put_at(&direct, "/app/v", "2");
    etcd.put_at(&direct, "/app/v", "3");
    let rev = etcd.revision_at(&direct);
    etcd.ctl_at(&direct, &["compact", &rev.to_string()]);
    assert_eq!(h.file(), "v=1\n");

    proxy.restart();
    wait_all(
        std::slice::from_ref(&h),
        "3",
        "the file after the compaction",
    );
    wait_for("the compaction logged", LIMIT, || {
        h.d.log().contains("compacted")
    });
    wait_for(
        "status: the file reflects the compacted revision",
        LIMIT,
        || h.status()["resources"]["app"]["revision"] == rev,
    );
    // Two resyncs through the proxy (etcd serves their reads).
    let ranges = etcd.members[0].grpc_ok("Range");
    wait_for("two resyncs", LIMIT, || {
        etcd.members[0].grpc_ok("Range") >= ranges + 2
    });
    etcd.put("/app/v", "4");
    wait_all(
        std::slice::from_ref(&h),
        "4",
        "a change after the new snapshot",
    );
    assert!(!h.d.log().contains("RESYNC FOUND"), "{}", h.d.log());
}

/// A real outage behind a proxy: the proxy stays up but the member it
/// forwards to is killed (three members, so the cluster keeps its quorum).
/// The daemon on that proxy sees it within the liveness bound (the read
/// that proves liveness reaches etcd, not just the proxy), moves to the
/// next proxy, and a put made meanwhile reaches the file.
#[test]
fn a_member_dying_behind_its_proxy_moves_the_daemon_to_the_next_proxy() {
    let mut etcd = Etcd::cluster(3, &[]);
    etcd.put("/app/v", "1");
    let a = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy-a");
    let b = Proxy::start(&etcd.members[1].url(), etcd.dir.path(), "proxy-b");
    let (ua, ub) = (a.url(), b.url());
    let h = Host::start(&format!("{ua},{ub}"), &[]);
    wait_all(std::slice::from_ref(&h), "1", "the file installed");
    wait_for("connected through proxy A", LIMIT, || {
        h.on().as_deref() == Some(ua.as_str())
    });

    etcd.members[0].stop();
    let killed = Instant::now();
    // The two others keep a quorum once they have elected a leader; a put
    // before that fails with "request timed out, possibly due to previous
    // leader failure".
    etcd.wait_healthy();
    etcd.put_at(&etcd.members[2].url(), "/app/v", "2");
    wait_for(
        "connected through proxy B",
        BOUND + Duration::from_secs(6),
        || h.on().as_deref() == Some(ub.as_str()),
    );
    eprintln!(
        "moved to proxy B {:?} after member 0 died",
        killed.elapsed()
    );
    wait_all(std::slice::from_ref(&h), "2", "the put made while moving");
    assert!(h.d.log().contains(&ua), "{}", h.d.log());
}

/// Found while testing the proxy path: a proxy that hangs (SIGSTOP, not
/// killed) held the fleet report's lease keep-alive until HTTP/2 keep-alive
/// dropped the connection (~13 s), so a report with a short `report_ttl`
/// lapsed and `fleet` called a healthy host gone. The keep-alive's answer
/// is bounded: the report moves to the next proxy before its lease ends.
#[test]
fn a_hung_proxy_does_not_let_the_fleet_report_lapse() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let stuck = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "stuck");
    let other = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "other");
    let endpoints = format!("{},{}", stuck.url(), other.url());
    let host = Host::start(
        &endpoints,
        &["--report", "--node-name", "h1", "--report-ttl", "6s"],
    );
    wait_all(std::slice::from_ref(&host), "1", "the file installed");
    let direct = etcd.members[0].url();
    let reported = || {
        let (code, hosts, _) = fleet(&direct);
        code == 0 && hosts.len() == 1 && hosts[0].1.is_empty()
    };
    wait_for("fleet names h1 in sync", LIMIT, reported);
    nix::sys::signal::kill(stuck.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    // Three lease lifetimes with the first proxy hung: the report never
    // lapses (read from etcd directly, not through either proxy).
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(18) {
        let (code, hosts, out) = fleet(&direct);
        assert!(
            code == 0 && hosts.len() == 1 && hosts[0].1.is_empty(),
            "the report lapsed {:.1}s after the proxy hung:\n{out}\n{}",
            start.elapsed().as_secs_f64(),
            host.d.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        host.d.log().contains("no answer to the lease keep-alive"),
        "{}",
        host.d.log()
    );
}

/// Found by the issue-11 trial: after a failover a host stayed on the
/// second proxy for good, so a restarted proxy never got its hosts back
/// (and the survivor kept twice its share). A host goes back to its first
/// endpoint once that answers again, without an outage line, and loses no
/// put on the way.
#[test]
fn a_host_goes_back_to_its_first_proxy_once_it_answers_again() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let mut a = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy-a");
    let b = Proxy::start(&etcd.members[0].url(), etcd.dir.path(), "proxy-b");
    let (ua, ub) = (a.url(), b.url());
    let h = Host::start(&format!("{ua},{ub}"), &[]);
    wait_all(std::slice::from_ref(&h), "1", "the file installed");
    wait_for("connected through proxy A", LIMIT, || {
        h.on().as_deref() == Some(ua.as_str())
    });

    a.kill();
    etcd.put("/app/v", "2");
    wait_all(
        std::slice::from_ref(&h),
        "2",
        "the put made while A is down",
    );
    wait_for("connected through proxy B", BOUND, || {
        h.on().as_deref() == Some(ub.as_str())
    });
    let outages = h.d.count("backend unavailable");

    a.restart();
    let back = Instant::now();
    // HOME_EVERY (30 s) drawn between half and one and a half times.
    wait_for("back on proxy A", Duration::from_secs(45) + LIMIT, || {
        h.on().as_deref() == Some(ua.as_str())
    });
    eprintln!("back on proxy A {:?} after it restarted", back.elapsed());
    assert!(
        h.d.log().contains(&format!(
            "etcd at {ua} answers again: moving back to it from {ub}"
        )),
        "the move back is not logged:\n{}",
        h.d.log()
    );
    assert_eq!(
        h.d.count("backend unavailable"),
        outages,
        "the move back was taken for an outage:\n{}",
        h.d.log()
    );
    etcd.put("/app/v", "3");
    wait_all(std::slice::from_ref(&h), "3", "a put after the move back");
}

/// The revision resource `app` is at in `node`'s fleet report, read from
/// etcd at `endpoint` (none: no report, or no such resource yet).
fn reported_revision(etcd: &Etcd, endpoint: &str, node: &str) -> Option<i64> {
    let out = etcd.ctl_at(
        endpoint,
        &[
            "get",
            &format!("/liveconf/fleet/{node}"),
            "--print-value-only",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
    v["resources"]["app"]["revision"].as_i64()
}

/// Found by a new-user trial (reports 2–10 s behind the files behind a
/// proxy, `etcdctl put && liveconf fleet wait` ~10 s): after its proxy was
/// away (restarted, or not up yet when the daemons started), a daemon's
/// file was right as soon as it reconnected, but its fleet report came
/// seconds later: the report's publisher waited out its own reconnection
/// backoff (up to 30 s), blind to the daemon having reached etcd again —
/// and the report's lease could lapse meanwhile, so `fleet wait` called a
/// healthy host gone. A new report to publish ends that wait: the report
/// follows the file within a second.
#[test]
fn a_report_follows_the_file_at_once_when_its_proxy_comes_back() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let direct = etcd.members[0].url();
    let mut proxy = Proxy::start(&direct, etcd.dir.path(), "proxy");
    let h = Host::start(&proxy.url(), &["--report", "--node-name", "h1"]);
    wait_all(std::slice::from_ref(&h), "1", "the file installed");
    let first = etcd.revision_at(&direct);
    wait_for("h1's report", LIMIT, || {
        reported_revision(&etcd, &direct, "h1").is_some()
    });

    proxy.kill();
    wait_for("status connected=false", LIMIT, || {
        h.status()["connected"] == false
    });
    etcd.put_at(&direct, "/app/v", "2");
    let changed = etcd.revision_at(&direct);
    assert!(changed > first);
    // Long enough for a publisher that backs off on its own to be in a
    // wait of 8 s or more (0.5 s doubling each failed attempt); shorter
    // than the report's lease (30 s).
    std::thread::sleep(Duration::from_secs(15));
    assert!(h.file() == "v=1\n" && reported_revision(&etcd, &direct, "h1") < Some(changed));

    proxy.restart();
    // The daemon connects again at once (its own backoff is not under
    // test here).
    h.d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_all(
        std::slice::from_ref(&h),
        "2",
        "the change installed once the proxy is back",
    );
    let installed = Instant::now();
    wait_for("the report at the change's revision", LIMIT, || {
        reported_revision(&etcd, &direct, "h1") >= Some(changed)
    });
    let lag = installed.elapsed();
    eprintln!("the report followed the file after {lag:?}");
    assert!(
        lag < Duration::from_secs(1),
        "the report came {lag:?} after the file:\n{}",
        h.d.log()
    );
}

/// A host behind `endpoint` as NODE whose resource `app` has a check that
/// takes `check_secs` seconds, reporting to the fleet.
fn slow_host(endpoint: &str, node: &str, check_secs: u64) -> Host {
    let fx = Fx::new();
    fx.template("app.tera", "v={{ getv(key=\"/app/v\") }}\n");
    fx.resource(
        "app",
        &format!(
            "[template]\nsrc = \"app.tera\"\ndest = \"{{out}}/app.conf\"\nkeys = [\"/app\"]\ncheck_cmd = \"sleep {check_secs}\"\n"
        ),
    );
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let d = Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            endpoint,
            "--state-dir",
            &state,
            "--wait",
            "0s",
            "--request-timeout",
            REQUEST_TIMEOUT,
            "--report",
            "--node-name",
            node,
        ],
        &fx.path("daemon.log"),
    );
    Host { d, fx }
}

/// `fleet wait --endpoints B,A` while B dies (`freeze`: SIGSTOP, else
/// SIGKILL) mid-wait, with the hosts behind A: the wait moves to A, says
/// so once, and ends 0 when the hosts are there.
fn fleet_wait_survives_losing_its_endpoint(freeze: bool) {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let direct = etcd.members[0].url();
    let a = Proxy::start(&direct, etcd.dir.path(), "proxy-a");
    let mut b = Proxy::start(&direct, etcd.dir.path(), "proxy-b");
    // The check takes 6 s: the wait is still running when B goes.
    let hosts = [slow_host(&a.url(), "h1", 6), slow_host(&a.url(), "h2", 6)];
    wait_all(&hosts, "1", "the file installed");
    wait_for("both reports", LIMIT, || {
        ["h1", "h2"]
            .iter()
            .all(|n| reported_revision(&etcd, &direct, n).is_some())
    });
    etcd.put_at(&direct, "/app/v", "2");
    let start = Instant::now();
    let waiter = spawn_fleet_wait(&format!("{},{}", b.url(), a.url()), "60s");
    std::thread::sleep(Duration::from_secs(2));
    if freeze {
        nix::sys::signal::kill(b.pid(), nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    } else {
        b.kill();
    }
    let r = common::Run::from(waiter.wait_with_output().expect("fleet wait"));
    let took = start.elapsed();
    b.kill(); // SIGCONT first when frozen
    eprintln!("fleet wait took {took:?}:\n{}\n{}", r.stdout, r.stderr);
    r.expect_code(0);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    for h in &hosts {
        assert_eq!(h.file(), "v=2\n");
    }
    assert_eq!(
        r.stderr.matches("moving to").count(),
        1,
        "one line when moving to A:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains(&a.url()), "{}", r.stderr);
}

/// Found by a new-user trial: `fleet wait --endpoints B,A` exited 4 within
/// a second of proxy B being killed (`tcp connect error ... Connection
/// refused`, no endpoint named), though A answered and the hosts got
/// there. The wait moves to A and goes on.
#[test]
fn fleet_wait_moves_to_the_next_endpoint_when_its_proxy_dies() {
    fleet_wait_survives_losing_its_endpoint(false);
}

/// The same with B frozen (SIGSTOP): it exited 4 after 25 s (`Timeout
/// expired: transport error`). The silent endpoint is found out by a
/// bounded read and the wait moves to A.
#[test]
fn fleet_wait_moves_to_the_next_endpoint_when_its_proxy_hangs() {
    fleet_wait_survives_losing_its_endpoint(true);
}

/// Both endpoints of `fleet wait` gone mid-wait: it tries them until
/// `--timeout`, then exits 4 naming each one and what failed.
#[test]
fn fleet_wait_names_its_endpoints_when_none_answers_again() {
    let etcd = Etcd::start();
    etcd.put("/app/v", "1");
    let direct = etcd.members[0].url();
    let mut a = Proxy::start(&direct, etcd.dir.path(), "proxy-a");
    let mut b = Proxy::start(&direct, etcd.dir.path(), "proxy-b");
    let host = slow_host(&direct, "h1", 6);
    wait_all(std::slice::from_ref(&host), "1", "the file installed");
    wait_for("h1's report", LIMIT, || {
        reported_revision(&etcd, &direct, "h1").is_some()
    });
    etcd.put_at(&direct, "/app/v", "2");
    let (ua, ub) = (a.url(), b.url());
    let start = Instant::now();
    let waiter = spawn_fleet_wait(&format!("{ub},{ua}"), "8s");
    std::thread::sleep(Duration::from_secs(2));
    b.kill();
    a.kill();
    let r = common::Run::from(waiter.wait_with_output().expect("fleet wait"));
    let took = start.elapsed();
    eprintln!("fleet wait took {took:?}:\n{}\n{}", r.stdout, r.stderr);
    r.expect_code(4);
    assert!(
        took >= Duration::from_secs(7) && took < Duration::from_secs(15),
        "took {took:?}"
    );
    let last = r.stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains(&format!("{ua}: ")) && last.contains(&format!("{ub}: ")),
        "{}",
        r.stderr
    );
}

/// `liveconf fleet wait --endpoints ENDPOINTS --timeout TIMEOUT`, started
/// (stdout and stderr piped).
fn spawn_fleet_wait(endpoints: &str, timeout: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args([
            "fleet",
            "wait",
            "--endpoints",
            endpoints,
            "--timeout",
            timeout,
            "--request-timeout",
            REQUEST_TIMEOUT,
        ])
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start fleet wait")
}
