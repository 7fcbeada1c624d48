//! End-to-end benchmarks against a real etcd on loopback.
//!
//!     cargo bench --bench e2e                 # every scenario
//!     cargo bench --bench e2e -- floor prop   # some of them
//!     LIVECONF_BENCH_FLEET=200 cargo bench --bench e2e -- fleet
//!
//! Scenarios: floor (bare watch), prop (put → file, 1k and 100k keys,
//! CPU per change, RSS, etcd Range requests and bytes per change), idle
//! (an idle daemon's RSS at 1k and 100k keys, just after start and after
//! some changes; LIVECONF_BENCH_SMAPS=1 prints it by mapping too), rss1m
//! (RSS at 1,000,000 keys), burst (2,000 puts, default wait), once
//! (`render --once` over 100k keys), fleet (N daemons, one etcd).
//! Results are printed as Markdown rows for BENCHMARKS.md.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType, Txn, TxnOp, WatchOptions};

const BIN: &str = env!("CARGO_BIN_EXE_liveconf");

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct Etcd {
    child: Child,
    url: String,
    metrics: String,
    _dir: tempfile::TempDir,
}

impl Etcd {
    fn start() -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let (c, p, m) = (free_port(), free_port(), free_port());
        let url = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("etcd")
            .args(["--name", "bench", "--data-dir"])
            .arg(dir.path().join("data"))
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
            .args(["--listen-metrics-urls", &format!("http://127.0.0.1:{m}")])
            .args(["--quota-backend-bytes", "8589934592"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd");
        let e = Etcd {
            child,
            url,
            metrics: format!("127.0.0.1:{m}"),
            _dir: dir,
        };
        let start = Instant::now();
        while http_get(&e.metrics, "/health").is_none() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "etcd did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        e
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sum of a Prometheus counter over the lines matching every needle.
    fn counter(&self, name: &str, needles: &[&str]) -> f64 {
        let body = http_get(&self.metrics, "/metrics").unwrap_or_default();
        body.lines()
            .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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

/// Resident memory of a process in MiB: (total, anonymous, file-backed),
/// from /proc/PID/smaps_rollup.
fn rss_split(pid: u32) -> (f64, f64, f64) {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        rollup
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
            .unwrap_or(0.0)
    };
    let (rss, anon) = (field("Rss:"), field("Anonymous:"));
    (rss, anon, rss - anon)
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
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Loads `n` keys `/bench/k0000000…` with 64-byte values, in transactions.
async fn load_keys(c: &mut Client, n: usize) {
    let value = "v".repeat(64);
    let mut i = 0;
    while i < n {
        let ops: Vec<TxnOp> = (i..(i + 128).min(n))
            .map(|k| TxnOp::put(format!("/bench/k{k:07}"), value.clone(), None))
            .collect();
        i += ops.len();
        c.txn(Txn::new().and_then(ops)).await.expect("load txn");
    }
}

/// Connects, empties /bench, loads `keys` keys and sets /bench/target.
fn prepare(rt: &tokio::runtime::Runtime, etcd: &Etcd, keys: usize, target: Option<&str>) -> Client {
    rt.block_on(async {
        let mut c = Client::connect([etcd.url.clone()], None)
            .await
            .expect("connect");
        c.delete(
            "/bench/",
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await
        .expect("clear");
        load_keys(&mut c, keys).await;
        if let Some(t) = target {
            c.put("/bench/target", t, None).await.expect("put");
        }
        c
    })
}

/// A confdir with one resource reading one key of /bench.
fn confdir(dir: &Path, dest: &Path, template: &str, extra: &str) {
    confdir_src(dir, dest, "t.tera", template, extra)
}

/// A confdir with one resource whose template is `templates/SRC` (a `.tmpl`
/// name makes it a Go template, as confd's are).
fn confdir_src(dir: &Path, dest: &Path, src: &str, template: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("conf.d")).expect("mkdir");
    std::fs::create_dir_all(dir.join("templates")).expect("mkdir");
    std::fs::write(dir.join("templates").join(src), template).expect("write");
    std::fs::write(
        dir.join("conf.d/bench.toml"),
        format!(
            "[template]\nsrc = \"{src}\"\ndest = \"{}\"\nprefix = \"/bench\"\nkeys = [\"/\"]\n{extra}",
            dest.display()
        ),
    )
    .expect("write");
}

fn start_daemon(confdir: &Path, state: &Path, endpoint: &str, extra: &[&str]) -> Child {
    Command::new(BIN)
        .arg("render")
        .arg("--confdir")
        .arg(confdir)
        .arg("--state-dir")
        .arg(state)
        .args(["--endpoints", endpoint, "--log-level", "warn"])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start liveconf")
}

/// Waits (inotify on the directory, bounded) until `path` holds `want`.
fn wait_content(
    rx: &std::sync::mpsc::Receiver<()>,
    path: &Path,
    want: &str,
    limit: Duration,
) -> bool {
    let start = Instant::now();
    loop {
        if std::fs::read_to_string(path)
            .map(|s| s == want)
            .unwrap_or(false)
        {
            return true;
        }
        let left = limit.saturating_sub(start.elapsed());
        if left.is_zero() {
            return false;
        }
        let _ = rx.recv_timeout(left.min(Duration::from_millis(50)));
    }
}

fn dir_watcher(dir: &Path) -> (notify::RecommendedWatcher, std::sync::mpsc::Receiver<()>) {
    use notify::Watcher;
    let (tx, rx) = std::sync::mpsc::channel();
    let mut w = notify::recommended_watcher(move |_res: notify::Result<notify::Event>| {
        let _ = tx.send(());
    })
    .expect("inotify");
    w.watch(dir, notify::RecursiveMode::NonRecursive)
        .expect("watch");
    (w, rx)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
}

fn floor(etcd: &Etcd, iterations: usize) -> (Duration, Duration) {
    rt().block_on(async {
        let mut c = Client::connect([etcd.url.clone()], None)
            .await
            .expect("connect");
        let mut w = c
            .watch("/floor/", Some(WatchOptions::new().with_prefix()))
            .await
            .expect("watch");
        let mut put = c.clone();
        let _ = w.message().await; // created
        let mut lat = Vec::new();
        for i in 0..iterations {
            let t = Instant::now();
            put.put("/floor/x", i.to_string(), None).await.expect("put");
            loop {
                let r = w.message().await.expect("watch").expect("stream");
                if r.events().iter().any(|e| {
                    e.event_type() == EventType::Put
                        && e.kv()
                            .map(|kv| kv.value() == i.to_string().as_bytes())
                            .unwrap_or(false)
                }) {
                    break;
                }
            }
            lat.push(t.elapsed());
        }
        (pct(&mut lat.clone(), 0.5), pct(&mut lat, 0.99))
    })
}

struct Prop {
    p50: Duration,
    p99: Duration,
    cpu_per_change: Duration,
    rss_mib: f64,
    ranges_per_change: f64,
    bytes_per_change: f64,
}

/// Which template engine the propagation benchmark's resource uses.
#[derive(Clone, Copy)]
enum Engine {
    Tera,
    /// confd's Go text/template, `{{getv "/target"}}`.
    Go,
}

fn propagation(etcd: &Etcd, keys: usize, iterations: usize, engine: Engine) -> Prop {
    let rt = rt();
    let mut c = prepare(&rt, etcd, keys, Some("start"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let dest = out.join("target.conf");
    match engine {
        Engine::Tera => confdir(dir.path(), &dest, "{{ getv(key=\"/target\") }}", ""),
        Engine::Go => confdir_src(dir.path(), &dest, "t.tmpl", "{{getv \"/target\"}}", ""),
    }
    let (_w, rx) = dir_watcher(&out);
    let mut d = start_daemon(
        dir.path(),
        &dir.path().join("state"),
        &etcd.url,
        &["--wait", "0s"],
    );
    assert!(
        wait_content(&rx, &dest, "start", Duration::from_secs(120)),
        "initial render"
    );
    let rss = rss_mib(d.id());
    // Warm up.
    for i in 0..20 {
        let v = format!("warm{i}");
        rt.block_on(c.put("/bench/target", v.clone(), None))
            .expect("put");
        assert!(wait_content(&rx, &dest, &v, Duration::from_secs(10)));
    }
    let ranges0 = etcd.counter("grpc_server_handled_total", &["grpc_method=\"Range\""]);
    let bytes0 = etcd.counter("etcd_network_client_grpc_sent_bytes_total", &[]);
    let cpu0 = cpu_time(d.id());
    let mut lat = Vec::new();
    for i in 0..iterations {
        let v = format!("value-{i}");
        let t = Instant::now();
        rt.block_on(c.put("/bench/target", v.clone(), None))
            .expect("put");
        assert!(
            wait_content(&rx, &dest, &v, Duration::from_secs(10)),
            "propagation {i}"
        );
        lat.push(t.elapsed());
    }
    let cpu = cpu_time(d.id()) - cpu0;
    let ranges = etcd.counter("grpc_server_handled_total", &["grpc_method=\"Range\""]) - ranges0;
    let bytes = etcd.counter("etcd_network_client_grpc_sent_bytes_total", &[]) - bytes0;
    let _ = d.kill();
    let _ = d.wait();
    Prop {
        p50: pct(&mut lat.clone(), 0.5),
        p99: pct(&mut lat, 0.99),
        cpu_per_change: cpu / iterations as u32,
        rss_mib: rss,
        ranges_per_change: ranges / iterations as f64,
        // Bytes etcd sent to all clients, including the benchmark's own put responses.
        bytes_per_change: bytes / iterations as f64,
    }
}

/// Resident memory of a process by mapping, from /proc/PID/smaps: one line
/// per object (file name, or `[heap]`, `[stack]`, `[anon]`...) and
/// permissions, largest first, in KiB (resident, of which anonymous).
fn rss_by_mapping(pid: u32) -> String {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut by: Vec<((String, String), (u64, u64))> = Vec::new();
    let mut cur: Option<usize> = None;
    for line in smaps.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let kb = || f.get(1).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match f.first() {
            Some(&"Rss:") => cur.iter().for_each(|&i| by[i].1.0 += kb()),
            Some(&"Anonymous:") => cur.iter().for_each(|&i| by[i].1.1 += kb()),
            Some(r) if r.contains('-') && f.len() >= 5 && !r.ends_with(':') => {
                let name = f.get(5..).map(|p| p.join(" ")).unwrap_or_default();
                let name = match name.rsplit('/').next() {
                    Some(n) if !n.is_empty() => n.to_string(),
                    _ => "[anon]".to_string(),
                };
                let key = (name, f[1].to_string());
                cur = Some(by.iter().position(|(k, _)| *k == key).unwrap_or_else(|| {
                    by.push((key, (0, 0)));
                    by.len() - 1
                }));
            }
            _ => {}
        }
    }
    by.retain(|(_, (rss, _))| *rss > 0);
    by.sort_by_key(|(_, (rss, _))| std::cmp::Reverse(*rss));
    by.iter()
        .map(|((name, perms), (rss, anon))| {
            format!("    {rss:>6} KiB (anon {anon:>5})  {perms}  {name}\n")
        })
        .collect()
}

/// What `idle` measures of one daemon: RSS (total, anonymous, file-backed,
/// MiB) 10 s after its initial render and 40 s after 20 changes, the put →
/// file time of the change that follows, and (with LIVECONF_BENCH_SMAPS
/// set) both RSS by mapping.
struct IdleRss {
    start: (f64, f64, f64),
    after: (f64, f64, f64),
    first: Duration,
    by_mapping: Option<(String, String)>,
}

/// RSS of an idle daemon over `keys` keys, just after start (10 s after
/// the initial render: READY's release and two heartbeats) and 40 s after
/// 20 changes.
fn rss_at(etcd: &Etcd, keys: usize) -> IdleRss {
    let rt = rt();
    let c = prepare(&rt, etcd, keys, Some("ready"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let dest = out.join("target.conf");
    confdir(dir.path(), &dest, "{{ getv(key=\"/target\") }}", "");
    let (_w, rx) = dir_watcher(&out);
    let mut d = start_daemon(
        dir.path(),
        &dir.path().join("state"),
        &etcd.url,
        &["--wait", "0s"],
    );
    assert!(
        wait_content(&rx, &dest, "ready", Duration::from_secs(600)),
        "initial render"
    );
    let smaps = std::env::var_os("LIVECONF_BENCH_SMAPS").is_some();
    std::thread::sleep(Duration::from_secs(10));
    let start = rss_split(d.id());
    let start_map = smaps.then(|| rss_by_mapping(d.id()));
    // Idle after some work: 20 changes propagated.
    let mut c = c;
    for i in 0..20 {
        let v = format!("idle{i}");
        rt.block_on(c.put("/bench/target", v.clone(), None))
            .expect("put");
        assert!(wait_content(&rx, &dest, &v, Duration::from_secs(10)));
    }
    // Quiet for longer than liveconf::memory::IDLE_RELEASE (30 s) plus a
    // heartbeat (5 s): what the changes mapped is released again.
    std::thread::sleep(Duration::from_secs(40));
    let after = rss_split(d.id());
    let by_mapping = start_map.map(|s| (s, rss_by_mapping(d.id())));
    // The first change after the release maps its code back in.
    let t = Instant::now();
    rt.block_on(c.put("/bench/target", "after-idle", None))
        .expect("put");
    assert!(wait_content(
        &rx,
        &dest,
        "after-idle",
        Duration::from_secs(10)
    ));
    let first = t.elapsed();
    let _ = d.kill();
    let _ = d.wait();
    IdleRss {
        start,
        after,
        first,
        by_mapping,
    }
}

fn burst(etcd: &Etcd, puts: usize) -> (Duration, usize, usize) {
    let rt = rt();
    let c = prepare(&rt, etcd, 1000, Some("start"));
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    let dest = out.join("target.conf");
    let reloads = dir.path().join("reloads");
    confdir(
        dir.path(),
        &dest,
        "{{ getv(key=\"/target\") }}",
        &format!("reload_cmd = \"echo r >> {}\"\n", reloads.display()),
    );
    let (_w, rx) = dir_watcher(&out);
    let maddr = format!("127.0.0.1:{}", free_port());
    let mut d = start_daemon(
        dir.path(),
        &dir.path().join("state"),
        &etcd.url,
        &["--metrics-addr", &maddr],
    );
    assert!(
        wait_content(&rx, &dest, "start", Duration::from_secs(60)),
        "initial render"
    );
    let installs = || -> f64 {
        http_get(&maddr, "/metrics")
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("liveconf_installs_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let start_wait = Instant::now();
    while std::fs::read_to_string(&reloads)
        .map(|s| s.is_empty())
        .unwrap_or(true)
    {
        assert!(
            start_wait.elapsed() < Duration::from_secs(10),
            "initial reload"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let installs_before = installs();
    let reloads_before = std::fs::read_to_string(&reloads)
        .unwrap_or_default()
        .lines()
        .count();
    let last = format!("burst-{}", puts - 1);
    let t_first = Instant::now();
    let t_last = rt.block_on(async move {
        let mut handles = Vec::new();
        // 8 concurrent writers, each with its share of the puts, in order.
        for w in 0..8 {
            let mut c = c.clone();
            handles.push(tokio::spawn(async move {
                for i in (w..puts - 1).step_by(8) {
                    c.put("/bench/target", format!("burst-{i}"), None)
                        .await
                        .expect("put");
                }
            }));
        }
        for h in handles {
            h.await.expect("writer");
        }
        let mut c = c;
        c.put("/bench/target", format!("burst-{}", puts - 1), None)
            .await
            .expect("put");
        Instant::now()
    });
    assert!(
        wait_content(&rx, &dest, &last, Duration::from_secs(30)),
        "burst converged"
    );
    let converge = t_last.elapsed();
    // Let the last reload land, then count.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let replacements = (installs() - installs_before) as usize;
    let reloads_after = std::fs::read_to_string(&reloads)
        .unwrap_or_default()
        .lines()
        .count();
    let _ = d.kill();
    let _ = d.wait();
    println!(
        "  (the 2,000 puts took {} from the first to the last)",
        ms(t_last - t_first)
    );
    (converge, replacements, reloads_after - reloads_before)
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

fn once(etcd: &Etcd, keys: usize) -> (Duration, f64) {
    prepare(&rt(), etcd, keys, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let dest = dir.path().join("all.conf");
    confdir(
        dir.path(),
        &dest,
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }} {{ kv.value }}\n{% endfor %}",
        "",
    );
    let t = Instant::now();
    let st = Command::new(BIN)
        .arg("render")
        .arg("--once")
        .arg("--confdir")
        .arg(dir.path())
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--endpoints", &etcd.url, "--log-level", "warn"])
        .status()
        .expect("run once");
    let wall = t.elapsed();
    assert!(st.success(), "render --once failed");
    let lines = count_lines(&dest);
    assert_eq!(lines, keys, "render --once output");
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .expect("rusage");
    (wall, usage.max_rss() as f64 / 1024.0)
}

/// A command `once2glob` times: its name, how to make it, the file it writes.
type Tool<'a> = (&'static str, Box<dyn Fn() -> Command + 'a>, Option<PathBuf>);

/// The runs of one tool: wall times and peak RSS (MiB).
struct Runs {
    name: &'static str,
    walls: Vec<Duration>,
    rss: Vec<f64>,
}

/// One run of a child process: wall time and peak RSS (MiB, from wait4's
/// rusage), and whether it exited 0.
fn timed(cmd: &mut Command) -> (Duration, f64, bool) {
    let t = Instant::now();
    let child = cmd.spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our child, not yet reaped; both pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let wall = t.elapsed();
    assert_eq!(r, pid, "wait4");
    // The child is reaped: forget the handle so nothing waits for it again.
    std::mem::forget(child);
    let ok = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    (wall, usage.ru_maxrss as f64 / 1024.0, ok)
}

/// Min and median of `v`.
fn min_median(v: &mut [Duration]) -> (Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2])
}

/// `render --once` of a template listing every key of /bench with two
/// `gets` globs (`/*` and `/*/*`), in Tera and as a Go template, against
/// reading the same keys with `etcdctl get --prefix /bench -w protobuf`
/// and against confd `-onetime` with the same Go template (when
/// LIVECONF_BENCH_CONFD, default /tmp/confd, exists). The tools run in
/// turn, `reps` rounds, so each ratio compares runs made at the same time.
/// Returns each tool's runs.
fn once2glob(etcd: &Etcd, keys: usize, reps: usize) -> Vec<Runs> {
    prepare(&rt(), etcd, keys, None);
    let dir = tempfile::tempdir().expect("tempdir");
    let tera = dir.path().join("tera");
    let go = dir.path().join("go");
    let confd = dir.path().join("confd");
    let out = |d: &Path| d.join("all.conf");
    confdir(
        &tera,
        &out(&tera),
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }} {{ kv.value }}\n{% endfor %}\
         {% for kv in gets(pattern=\"/*/*\") %}{{ kv.key }} {{ kv.value }}\n{% endfor %}",
        "",
    );
    let go_template = "{{range gets \"/*\"}}{{.Key}} {{.Value}}\n{{end}}\
                       {{range gets \"/*/*\"}}{{.Key}} {{.Value}}\n{{end}}";
    confdir_src(&go, &out(&go), "t.tmpl", go_template, "");
    confdir_src(&confd, &out(&confd), "t.tmpl", go_template, "");
    let confd_bin = std::env::var("LIVECONF_BENCH_CONFD").unwrap_or_else(|_| "/tmp/confd".into());
    let has_confd = Path::new(&confd_bin).is_file();
    if !has_confd {
        println!("  (no confd at {confd_bin}: confd skipped; set LIVECONF_BENCH_CONFD)");
    }
    let liveconf = |d: &Path| {
        let mut c = Command::new(BIN);
        c.args(["render", "--once", "--confdir"])
            .arg(d)
            .arg("--state-dir")
            .arg(d.join("state"))
            .args(["--endpoints", &etcd.url, "--log-level", "warn"]);
        c
    };
    let mut tools: Vec<Tool> = vec![
        (
            "etcdctl get --prefix /bench -w protobuf",
            Box::new(|| {
                let mut c = Command::new("/usr/bin/etcdctl");
                c.env("ETCDCTL_API", "3")
                    .args([
                        "--endpoints",
                        &etcd.url,
                        "get",
                        "--prefix",
                        "/bench",
                        "-w",
                        "protobuf",
                    ])
                    .stdout(Stdio::null());
                c
            }),
            None,
        ),
        (
            "liveconf render --once (Tera)",
            Box::new(|| liveconf(&tera)),
            Some(out(&tera)),
        ),
        (
            "liveconf render --once (Go template)",
            Box::new(|| liveconf(&go)),
            Some(out(&go)),
        ),
    ];
    if has_confd {
        tools.push((
            "confd -onetime (Go template)",
            Box::new(|| {
                let mut c = Command::new(&confd_bin);
                c.args([
                    "-onetime", "-backend", "etcdv3", "-node", &etcd.url, "-confdir",
                ])
                .arg(&confd)
                .args(["-log-level", "error"]);
                c
            }),
            Some(out(&confd)),
        ));
    }
    let mut results: Vec<Runs> = tools
        .iter()
        .map(|(name, _, _)| Runs {
            name,
            walls: Vec::new(),
            rss: Vec::new(),
        })
        .collect();
    for _ in 0..reps {
        for (i, (name, cmd, dest)) in tools.iter().enumerate() {
            if let Some(d) = dest {
                let _ = std::fs::remove_file(d);
            }
            let (wall, rss, ok) = timed(&mut cmd());
            assert!(ok, "{name} failed");
            if let Some(d) = dest {
                assert_eq!(count_lines(d), keys, "{name} output");
            }
            results[i].walls.push(wall);
            results[i].rss.push(rss);
        }
    }
    // Every renderer wrote the same bytes.
    let outputs: Vec<Vec<u8>> = tools
        .iter()
        .filter_map(|(_, _, d)| d.as_ref())
        .map(|d| std::fs::read(d).expect("output"))
        .collect();
    assert!(outputs.windows(2).all(|w| w[0] == w[1]), "outputs differ");
    results
}

/// The fleet: each put's latency (put → all files), in order; the first
/// render of all; etcd's CPU; how many rendered their first file.
fn fleet(etcd: &Etcd, n: usize, puts: usize) -> (Vec<Duration>, Duration, f64, usize) {
    let rt = rt();
    let mut c = prepare(&rt, etcd, 1000, Some("start"));
    // LIVECONF_BENCH_DIR=/dev/shm puts every host's files on tmpfs: 200
    // simulated hosts otherwise share one disk and queue on its fsyncs,
    // which real hosts (one disk each) do not.
    let root = match std::env::var_os("LIVECONF_BENCH_DIR") {
        Some(d) => tempfile::tempdir_in(d).expect("tempdir"),
        None => tempfile::tempdir().expect("tempdir"),
    };
    let out = root.path().join("out");
    std::fs::create_dir_all(&out).expect("mkdir");
    // Events carry the path: only the file that changed is read again.
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
        confdir(
            &root.path().join(format!("host{i}")),
            dest,
            "{{ getv(key=\"/target\") }}",
            "",
        );
    }
    let has = |p: &Path, want: &str| {
        std::fs::read_to_string(p)
            .map(|s| s == want)
            .unwrap_or(false)
    };
    // Waits until every destination holds `want`, reading only files that
    // events name (and every remaining file once, at the start).
    let wait_all = |want: &str, limit: Duration| -> bool {
        let mut left: std::collections::HashSet<PathBuf> =
            dests.iter().filter(|d| !has(d, want)).cloned().collect();
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
    // All started at the same moment.
    let started = Instant::now();
    let mut daemons: Vec<Child> = (0..n)
        .map(|i| {
            let dir = root.path().join(format!("host{i}"));
            start_daemon(&dir, &dir.join("state"), &etcd.url, &["--wait", "0s"])
        })
        .collect();
    assert!(
        wait_all("start", Duration::from_secs(120)),
        "not every daemon rendered its first file"
    );
    let first_render = started.elapsed();
    let rendered_first = dests.iter().filter(|d| d.exists()).count();
    while prx.try_recv().is_ok() {}
    let cpu0 = cpu_time(etcd.pid());
    let t0 = Instant::now();
    let mut lat = Vec::new();
    for i in 0..puts {
        let v = format!("fleet-{i}");
        let t = Instant::now();
        rt.block_on(c.put("/bench/target", v.clone(), None))
            .expect("put");
        assert!(
            wait_all(&v, Duration::from_secs(30)),
            "fleet did not converge"
        );
        lat.push(t.elapsed());
        // Let the fleet settle (status writes) before the next put.
        std::thread::sleep(Duration::from_millis(200));
        while prx.try_recv().is_ok() {}
    }
    let etcd_cpu = (cpu_time(etcd.pid()) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    for d in &mut daemons {
        let _ = d.kill();
    }
    for d in &mut daemons {
        let _ = d.wait();
    }
    (lat, first_render, etcd_cpu * 100.0, rendered_first)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let want = |s: &str| args.is_empty() || args.iter().any(|a| a == s);
    println!(
        "liveconf end-to-end benchmarks ({} CPUs)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let etcd = Etcd::start();
    if want("floor") {
        let (p50, p99) = floor(&etcd, 300);
        println!(
            "| floor: put → bare etcd-client watch event | p50 {} | p99 {} |",
            ms(p50),
            ms(p99)
        );
    }
    for (name, engine) in [("prop", Engine::Tera), ("propgo", Engine::Go)] {
        if !want(name) {
            continue;
        }
        let label = match engine {
            Engine::Tera => "Tera",
            Engine::Go => "Go template",
        };
        for keys in [1_000, 100_000] {
            let p = propagation(&etcd, keys, 300, engine);
            println!(
                "| propagation ({label}), {keys} keys, wait off | p50 {} | p99 {} | CPU/change {} | RSS {:.1} MiB | Range/change {:.3} | etcd bytes sent/change {:.0} |",
                ms(p.p50),
                ms(p.p99),
                ms(p.cpu_per_change),
                p.rss_mib,
                p.ranges_per_change,
                p.bytes_per_change
            );
        }
    }
    if want("idle") {
        for keys in [1_000, 100_000] {
            let r = rss_at(&etcd, keys);
            let ((s, sa, sf), (a, aa, af)) = (r.start, r.after);
            println!(
                "| idle daemon RSS, {keys} keys | 10 s after start {s:.1} MiB (anonymous {sa:.1}, file-backed {sf:.1}) | 40 s after 20 changes {a:.1} MiB (anonymous {aa:.1}, file-backed {af:.1}) | next change put → file {} |",
                ms(r.first)
            );
            if let Some((start, after)) = r.by_mapping {
                println!(
                    "  by mapping, 10 s after start:\n{start}  by mapping, 40 s after 20 changes:\n{after}"
                );
            }
        }
    }
    if want("rss1m") {
        let (rss, anon, file) = rss_at(&etcd, 1_000_000).after;
        println!(
            "| RSS after initial sync, 1,000,000 keys | {rss:.1} MiB | anonymous {anon:.1} MiB | file-backed {file:.1} MiB |"
        );
    }
    if want("burst") {
        let (converge, replacements, reloads) = burst(&etcd, 2000);
        println!(
            "| burst: 2,000 puts, default wait 100ms:1s | converged {} after the last put | {replacements} file replacements | {reloads} reloads |",
            ms(converge)
        );
    }
    if want("once") {
        let (wall, rss) = once(&etcd, 100_000);
        println!(
            "| render --once, 100,000 keys, template iterating all | {} wall | peak RSS {rss:.1} MiB |",
            ms(wall)
        );
    }
    if want("once2glob") {
        let reps: usize = std::env::var("LIVECONF_BENCH_REPS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5);
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "  (load average before: {})",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
        let mut results = once2glob(&etcd, 100_000, reps);
        let (base_min, base) = min_median(&mut results[0].walls.clone());
        for Runs { name, walls, rss } in &mut results {
            let (min, med) = min_median(walls);
            rss.sort_by(f64::total_cmp);
            println!(
                "| {name}, 100,000 keys, {reps} runs | wall min {} median {} | {:.2}× / {:.2}× etcdctl (min / median) | peak RSS median {:.1} MiB (max {:.1}) |",
                ms(min),
                ms(med),
                min.as_secs_f64() / base_min.as_secs_f64(),
                med.as_secs_f64() / base.as_secs_f64(),
                rss[rss.len() / 2],
                rss[rss.len() - 1],
            );
        }
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "  (load average after: {})",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    if want("fleet") {
        let n: usize = std::env::var("LIVECONF_BENCH_FLEET")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(200);
        // LIVECONF_BENCH_PUTS: more puts, a p99 that is not just the max.
        let puts: usize = std::env::var("LIVECONF_BENCH_PUTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30);
        let (lat, first, cpu, rendered) = fleet(&etcd, n, puts);
        // The first put after start also maps back the code pages every
        // daemon released at READY: shown apart, and counted in p50/p99.
        let first_put = lat.first().copied().unwrap_or_default();
        let mut all = lat.clone();
        println!(
            "| fleet: {n} daemons, put → all {n} files ({puts} puts) | p50 {} | p99 {} | max {} | first put {} | first render of all {rendered}/{n} in {} | etcd CPU {cpu:.0}% of one core |",
            ms(pct(&mut all.clone(), 0.5)),
            ms(pct(&mut all, 0.99)),
            ms(lat.iter().max().copied().unwrap_or_default()),
            ms(first_put),
            ms(first)
        );
    }
}
