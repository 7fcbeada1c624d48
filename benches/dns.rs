//! DNS dependencies at scale (`cargo bench --bench dns`): a daemon whose
//! resources read names from a real dnsmasq on loopback.
//!
//! - `share`: 100 resources sharing 20 TXT names, every look-up due each
//!   second (`dns_min_interval` = `dns_max_interval` = 1s, TTL 1 s): the
//!   queries dnsmasq logs per interval (20 expected, not 100), and the
//!   renders (none after the first: the answers do not change).
//! - `idle`: CPU of that daemon with 20 dependencies at the default
//!   intervals (5 s..5 min; dnsmasq's TTL 1 s, so every 5 s), over 60 s.
//!
//! Prints one line per figure; BENCHMARKS.md ("DNS dependencies") has the
//! results. Needs dnsmasq (`scripts/ensure-deps dnsmasq`).

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_liveconf");
const NAMES: usize = 20;
const RESOURCES: usize = 100;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dnsmasq(dir: &Path, port: u16) -> Killed {
    let bin = if Path::new("/usr/sbin/dnsmasq").exists() {
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
        "--local=/test/",
        "--local-ttl=1",
        "--log-queries",
        &format!("--log-facility={}", dir.join("dnsmasq.log").display()),
        &format!("--pid-file={}", dir.join("dnsmasq.pid").display()),
    ]);
    for i in 0..NAMES {
        cmd.arg(format!("--txt-record=n{i}.bench.test,value-{i}"));
    }
    let child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start dnsmasq (scripts/ensure-deps dnsmasq)");
    let k = Killed(child);
    wait_for("dnsmasq", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    k
}

/// TXT queries dnsmasq logged so far.
fn queries(dir: &Path) -> usize {
    std::fs::read_to_string(dir.join("dnsmasq.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("query[TXT]"))
        .count()
}

/// A confdir with 100 resources, resource i reading name i % 20.
fn confdir(dir: &Path) -> PathBuf {
    let c = dir.join("confdir");
    for d in ["conf.d", "templates", "out"] {
        std::fs::create_dir_all(c.join(d)).unwrap();
    }
    std::fs::write(c.join("keys.yaml"), "app:\n  x: \"1\"\n").unwrap();
    for i in 0..RESOURCES {
        let n = i % NAMES;
        std::fs::write(
            c.join(format!("templates/r{i}.tera")),
            format!("v={{{{ lookup_txt(name=\"n{n}.bench.test\") | join(sep=\",\") }}}}\n"),
        )
        .unwrap();
        std::fs::write(
            c.join(format!("conf.d/r{i}.toml")),
            format!(
                "[template]\nsrc = \"r{i}.tera\"\ndest = \"{}/r{i}.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
                c.join("out").display()
            ),
        )
        .unwrap();
    }
    c
}

fn daemon(c: &Path, dns_port: u16, metrics: u16, intervals: &[&str]) -> Killed {
    let log = std::fs::File::create(c.join("daemon.log")).unwrap();
    let child = Command::new(BIN)
        .args(["render", "--confdir"])
        .arg(c)
        .arg("--file")
        .arg(c.join("keys.yaml"))
        .arg("--state-dir")
        .arg(c.join("state"))
        .args([
            "--backend",
            "file",
            "--wait",
            "0s",
            "--dns-server",
            &format!("127.0.0.1:{dns_port}"),
            "--metrics-addr",
            &format!("127.0.0.1:{metrics}"),
        ])
        .args(intervals)
        .env_remove("RUST_LOG")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start liveconf");
    let k = Killed(child);
    let out = c.join("out");
    wait_for("the first render", Duration::from_secs(60), || {
        std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0) == RESOURCES
    });
    k
}

/// `liveconf_renders_total`, summed over the resources.
fn renders(metrics: u16) -> f64 {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", metrics)) else {
        return 0.0;
    };
    let _ = write!(s, "GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n");
    let mut body = String::new();
    let _ = s.read_to_string(&mut body);
    body.lines()
        .filter(|l| l.starts_with("liveconf_renders_total{"))
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

fn share() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dns = dnsmasq(dir.path(), port);
    let c = confdir(dir.path());
    let metrics = free_port();
    let _d = daemon(
        &c,
        port,
        metrics,
        &["--dns-min-interval", "1s", "--dns-max-interval", "1s"],
    );
    // Let the first look-ups settle, then count over whole intervals.
    std::thread::sleep(Duration::from_secs(2));
    let (q0, r0) = (queries(dir.path()), renders(metrics));
    let secs = 20;
    std::thread::sleep(Duration::from_secs(secs));
    let (q1, r1) = (queries(dir.path()), renders(metrics));
    let per = (q1 - q0) as f64 / secs as f64;
    println!(
        "share: {RESOURCES} resources, {NAMES} names, 1 s interval: {per:.1} queries per interval over {secs} s ({} in all; one per resource would be {RESOURCES}); renders meanwhile: {}",
        q1 - q0,
        r1 - r0
    );
}

fn idle() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _dns = dnsmasq(dir.path(), port);
    let c = confdir(dir.path());
    let metrics = free_port();
    let d = daemon(&c, port, metrics, &[]);
    std::thread::sleep(Duration::from_secs(3));
    let pid = d.0.id();
    let (t0, c0, q0) = (Instant::now(), cpu_time(pid), queries(dir.path()));
    std::thread::sleep(Duration::from_secs(60));
    let (t1, c1, q1) = (Instant::now(), cpu_time(pid), queries(dir.path()));
    let wall = (t1 - t0).as_secs_f64();
    let cpu = (c1 - c0).as_secs_f64();
    println!(
        "idle: {NAMES} DNS dependencies ({RESOURCES} resources), default intervals (TTL 1 s -> every 5 s): CPU {:.3} % of one core ({:.0} ms in {wall:.0} s), {} queries",
        cpu / wall * 100.0,
        cpu * 1000.0,
        q1 - q0
    );
}

fn main() {
    // `cargo bench` passes --bench; names select what runs (all by default).
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |n: &str| args.is_empty() || args.iter().any(|a| a == n);
    if want("share") {
        share();
    }
    if want("idle") {
        idle();
    }
}
