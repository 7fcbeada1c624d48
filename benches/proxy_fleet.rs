//! The fleet on the proxy path: N `liveconf render` daemons behind P
//! `etcd grpc-proxy` processes in front of one etcd, all on loopback.
//!
//!     LIVECONF_BENCH_FLEET=1000 cargo bench --bench proxy_fleet
//!
//! Settings (environment): `LIVECONF_BENCH_FLEET` (daemons, default 1000),
//! `LIVECONF_BENCH_PROXIES` (default 4), `LIVECONF_BENCH_PUTS` (default 20),
//! `LIVECONF_BENCH_DIR` (where every host's confdir, state and file live;
//! default `/dev/shm`, so N simulated hosts do not queue on one disk's
//! fsyncs as real hosts, one disk each, would not), `LIVECONF_BENCH_QUIET`
//! (seconds of the idle window, default 30).
//!
//! Daemon i lists every proxy, starting with proxy i mod P (as a fleet
//! spreads its hosts over its data centre's proxies). Measured: the time
//! until every host rendered its first file; etcd's watchers and watch
//! streams with the whole fleet watching (the proxies coalesce: one per
//! proxy and prefix, not one per host); CPU of etcd and of each proxy
//! (from /proc) while idle and while puts flow; put → last of the N files
//! (p50, p99, max over the puts); the daemons' total RSS. Printed as
//! Markdown rows for BENCHMARKS.md.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_liveconf");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// A gauge or counter of a Prometheus text page (the sum of its series).
fn metric(body: &str, name: &str) -> f64 {
    body.lines()
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// CPU time (user + system) of a process, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

fn pct(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// CPU use of each process over a window, in % of one core.
struct CpuWindow {
    start: Instant,
    before: Vec<Duration>,
}

impl CpuWindow {
    fn start(pids: &[u32]) -> CpuWindow {
        CpuWindow {
            start: Instant::now(),
            before: pids.iter().map(|&p| cpu_time(p)).collect(),
        }
    }

    fn percent(&self, pids: &[u32]) -> Vec<f64> {
        let wall = self.start.elapsed().as_secs_f64();
        pids.iter()
            .zip(&self.before)
            .map(|(&p, &b)| (cpu_time(p).saturating_sub(b)).as_secs_f64() / wall * 100.0)
            .collect()
    }
}

fn start_etcd(dir: &Path) -> (Proc, String, String) {
    let (c, p, m) = (free_port(), free_port(), free_port());
    let url = format!("http://127.0.0.1:{c}");
    let peer = format!("http://127.0.0.1:{p}");
    let metrics = format!("127.0.0.1:{m}");
    let child = Command::new("etcd")
        .args(["--name", "bench", "--data-dir"])
        .arg(dir.join("etcd"))
        .args([
            "--listen-client-urls",
            &url,
            "--advertise-client-urls",
            &url,
        ])
        .args([
            "--listen-peer-urls",
            &peer,
            "--initial-advertise-peer-urls",
            &peer,
        ])
        .args(["--initial-cluster", &format!("bench={peer}")])
        .args(["--listen-metrics-urls", &format!("http://{metrics}")])
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd");
    let e = Proc(child);
    let start = Instant::now();
    while http_get(&metrics, "/health").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "etcd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (e, url, metrics)
}

fn start_proxy(backend: &str) -> (Proc, String) {
    let port = free_port();
    let child = Command::new("etcd")
        .args([
            "grpc-proxy",
            "start",
            &format!("--endpoints={backend}"),
            &format!("--listen-addr=127.0.0.1:{port}"),
        ])
        .env("ETCD_UNSUPPORTED_ARCH", "")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start etcd grpc-proxy");
    let p = Proc(child);
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "grpc-proxy did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (p, format!("http://127.0.0.1:{port}"))
}

fn etcdctl(endpoint: &str, args: &[&str]) {
    let ok = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args)
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(ok, "etcdctl {args:?}");
}

fn main() {
    let n = env_usize("LIVECONF_BENCH_FLEET", 1000);
    let proxies_n = env_usize("LIVECONF_BENCH_PROXIES", 4).max(1);
    let puts = env_usize("LIVECONF_BENCH_PUTS", 20).max(1);
    let quiet = Duration::from_secs(env_usize("LIVECONF_BENCH_QUIET", 30) as u64);
    let base = std::env::var_os("LIVECONF_BENCH_DIR").unwrap_or_else(|| "/dev/shm".into());
    let root = tempfile::tempdir_in(&base).expect("tempdir");
    println!(
        "liveconf fleet behind grpc-proxy: {n} daemons, {proxies_n} proxies, {} CPUs, in {}",
        std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1),
        root.path().display()
    );

    let (etcd, etcd_url, etcd_metrics) = start_etcd(root.path());
    etcdctl(&etcd_url, &["put", "/bench/target", "start"]);
    let etcd_gauges = || {
        let body = http_get(&etcd_metrics, "/metrics").unwrap_or_default();
        (
            metric(&body, "etcd_debugging_mvcc_watcher_total"),
            metric(&body, "etcd_debugging_mvcc_watch_stream_total"),
        )
    };
    let (w_alone, s_alone) = etcd_gauges();
    let proxies: Vec<(Proc, String)> = (0..proxies_n).map(|_| start_proxy(&etcd_url)).collect();
    for (_, url) in &proxies {
        etcdctl(url, &["get", "/bench/target"]);
    }
    std::thread::sleep(Duration::from_secs(1));
    let (w_proxies, s_proxies) = etcd_gauges();

    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let (ptx, prx) = std::sync::mpsc::channel::<PathBuf>();
    let _w = {
        use notify::Watcher;
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res {
                for p in ev.paths {
                    let _ = ptx.send(p);
                }
            }
        })
        .expect("inotify");
        w.watch(&out, notify::RecursiveMode::NonRecursive)
            .expect("watch");
        w
    };
    let dests: Vec<PathBuf> = (0..n).map(|i| out.join(format!("host{i}.conf"))).collect();
    for (i, dest) in dests.iter().enumerate() {
        let dir = root.path().join(format!("host{i}"));
        std::fs::create_dir_all(dir.join("conf.d")).expect("mkdir");
        std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
        std::fs::write(dir.join("templates/t.tera"), "{{ getv(key=\"/target\") }}").expect("write");
        std::fs::write(
            dir.join("conf.d/bench.toml"),
            format!(
                "[template]\nsrc = \"t.tera\"\ndest = \"{}\"\nprefix = \"/bench\"\nkeys = [\"/\"]\n",
                dest.display()
            ),
        )
        .expect("write");
    }
    let has = |p: &Path, want: &str| {
        std::fs::read_to_string(p)
            .map(|s| s == want)
            .unwrap_or(false)
    };
    // Until every destination holds `want`: reads only files that events
    // name (and every remaining one when events pause).
    let wait_all = |want: &str, limit: Duration| -> bool {
        let mut left: HashSet<PathBuf> = dests.iter().filter(|d| !has(d, want)).cloned().collect();
        let deadline = Instant::now() + limit;
        while !left.is_empty() {
            if Instant::now() > deadline {
                return false;
            }
            if let Ok(p) = prx.recv_timeout(Duration::from_millis(100)) {
                if left.contains(&p) && has(&p, want) {
                    left.remove(&p);
                }
            } else {
                left.retain(|d| !has(d, want));
            }
        }
        true
    };

    let started = Instant::now();
    let daemons: Vec<Proc> = (0..n)
        .map(|i| {
            let dir = root.path().join(format!("host{i}"));
            let endpoints: Vec<&str> = (0..proxies_n)
                .map(|k| proxies[(i + k) % proxies_n].1.as_str())
                .collect();
            let child = Command::new(BIN)
                .arg("render")
                .arg("--confdir")
                .arg(&dir)
                .arg("--state-dir")
                .arg(dir.join("state"))
                .args(["--endpoints", &endpoints.join(",")])
                .args(["--log-level", "warn", "--wait", "0s"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start liveconf");
            Proc(child)
        })
        .collect();
    let all_started = wait_all("start", Duration::from_secs(900));
    let first_render = started.elapsed();
    let rendered = dests.iter().filter(|d| has(d, "start")).count();
    let alive = daemons
        .iter()
        .filter(|d| std::fs::metadata(format!("/proc/{}", d.pid())).is_ok())
        .count();
    println!(
        "| first render: {rendered}/{n} files in {:.1} s ({alive} daemons alive) |",
        first_render.as_secs_f64()
    );
    assert!(all_started, "not every daemon rendered its first file");
    while prx.try_recv().is_ok() {}

    let watched = || {
        let (w, s) = etcd_gauges();
        (w - w_alone, s - s_alone)
    };
    // The proxies' watches settle (coalescing merges watchers that caught up).
    std::thread::sleep(Duration::from_secs(3));
    let (w_fleet, s_fleet) = watched();
    let rss: f64 = daemons.iter().map(|d| rss_mib(d.pid())).sum();
    let mut pids = vec![etcd.pid()];
    pids.extend(proxies.iter().map(|(p, _)| p.pid()));
    let label = |i: usize| {
        if i == 0 {
            "etcd".to_string()
        } else {
            format!("proxy {i}")
        }
    };

    // Idle: nothing changes; the daemons' liveness reads flow.
    let idle = CpuWindow::start(&pids);
    std::thread::sleep(quiet);
    let idle_cpu = idle.percent(&pids);
    let (w_idle, _) = watched();

    let busy = CpuWindow::start(&pids);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut c = rt
        .block_on(etcd_client::Client::connect([etcd_url.clone()], None))
        .expect("connect");
    let mut lat = Vec::new();
    for i in 0..puts {
        let v = format!("fleet-{i}");
        let t = Instant::now();
        rt.block_on(c.put("/bench/target", v.clone(), None))
            .expect("put");
        assert!(
            wait_all(&v, Duration::from_secs(60)),
            "the fleet did not converge on put {i}"
        );
        lat.push(t.elapsed());
        std::thread::sleep(Duration::from_millis(300));
        while prx.try_recv().is_ok() {}
    }
    let busy_cpu = busy.percent(&pids);
    let max = lat.iter().max().copied().unwrap_or_default();
    let (p50, p99) = (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    println!(
        "| {n} daemons, {proxies_n} proxies: put → last of {n} files ({puts} puts) | p50 {} | p99 {} | max {} |",
        ms(p50),
        ms(p99),
        ms(max)
    );
    println!(
        "| etcd watchers / watch streams: alone {w_alone} / {s_alone}; with the {proxies_n} proxies {w_proxies} / {s_proxies}; with the fleet {} / {} (the fleet's own: {} / {}), {} watchers after the idle window |",
        w_alone + w_fleet,
        s_alone + s_fleet,
        w_alone + w_fleet - w_proxies,
        s_alone + s_fleet - s_proxies,
        w_alone + w_idle
    );
    for (i, (idle, busy)) in idle_cpu.iter().zip(&busy_cpu).enumerate() {
        println!(
            "| CPU of {}: idle {idle:.1}% of one core, during the puts {busy:.1}% |",
            label(i)
        );
    }
    println!(
        "| daemons' RSS: {rss:.0} MiB in all, {:.1} MiB each |",
        rss / n as f64
    );
    println!("| load average at the end: {} |", load.trim());
    drop(daemons);
}
