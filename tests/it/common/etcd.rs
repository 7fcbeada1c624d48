//! Real etcd servers on loopback for the integration tests, and a running
//! `liveconf render` daemon to test against them.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A free loopback port (bound then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Waits until `cond` holds, polling every 20ms, for at most `limit`.
pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One etcd member.
pub struct Member {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
    pub extra: Vec<String>,
    cluster: String,
    state: &'static str,
    child: Option<Child>,
    log: PathBuf,
}

impl Member {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn scheme(&self) -> &'static str {
        if self.extra.iter().any(|a| a.starts_with("--cert-file")) {
            "https"
        } else {
            "http"
        }
    }

    /// Starts (or restarts) the member.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} already running", self.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("etcd log");
        let scheme = self.scheme();
        let client = format!("{scheme}://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen-client-urls")
            .arg(&client)
            .arg("--advertise-client-urls")
            .arg(&client)
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(&self.cluster)
            .arg("--initial-cluster-state")
            .arg(self.state)
            .arg("--initial-cluster-token")
            .arg("liveconf-test")
            .args(&self.extra)
            .env("ETCD_UNSUPPORTED_ARCH", "")
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start etcd (is etcd-server installed? scripts/test installs it)");
        self.child = Some(child);
    }

    /// Stops the member (SIGKILL: as abrupt as a crash or a partition).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Sends `sig` to the running member (SIGSTOP freezes it: it keeps its
    /// connections and answers nothing).
    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(c) = &self.child {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), sig);
        }
    }

    /// The member's Prometheus metrics (`GET /metrics` on its client port,
    /// plain HTTP only).
    pub fn server_metrics(&self) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.client_port))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.name));
        s.set_read_timeout(Some(Duration::from_secs(10))).ok();
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .expect("send metrics request");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read metrics");
        assert!(out.starts_with("HTTP/1.0 200"), "GET /metrics: {out:.200}");
        out
    }

    /// How many `method` requests (`Range`, `Put`, `Watch`...) the member
    /// answered successfully, from its `grpc_server_handled_total` metric.
    pub fn grpc_ok(&self, method: &str) -> u64 {
        let needle = format!("grpc_code=\"OK\",grpc_method=\"{method}\",");
        self.server_metrics()
            .lines()
            .filter(|l| l.starts_with("grpc_server_handled_total{") && l.contains(&needle))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            eprintln!("---- etcd {} log (last lines) ----", self.name);
            tail.iter().rev().for_each(|l| eprintln!("{l}"));
        }
        self.stop();
    }
}

/// An etcd cluster of one or more members, each in its own data dir.
pub struct Etcd {
    // Members first: fields drop in order, and a member stops (and shows
    // its log on a failure) before the directory holding its data and log
    // is removed.
    pub members: Vec<Member>,
    pub dir: tempfile::TempDir,
}

impl Etcd {
    /// A single-member etcd.
    pub fn start() -> Etcd {
        Self::cluster(1, &[])
    }

    /// `n` members; `extra` flags are passed to every member.
    pub fn cluster(n: usize, extra: &[&str]) -> Etcd {
        let mut etcd = Self::configure(n, extra);
        for m in &mut etcd.members {
            m.start();
        }
        if !extra.iter().any(|a| a.starts_with("--cert-file")) {
            etcd.wait_healthy();
        }
        etcd
    }

    /// `n` members with their ports and data dirs chosen, none started yet
    /// (start them with [`Member::start`], e.g. to have a daemon wait for an
    /// etcd that is not there yet).
    pub fn configure(n: usize, extra: &[&str]) -> Etcd {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
        let cluster = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let members: Vec<Member> = ports
            .iter()
            .enumerate()
            .map(|(i, (c, p))| Member {
                name: format!("m{i}"),
                client_port: *c,
                peer_port: *p,
                data_dir: dir.path().join(format!("m{i}")),
                extra: extra.iter().map(|s| s.to_string()).collect(),
                cluster: cluster.clone(),
                state: "new",
                child: None,
                log: dir.path().join(format!("m{i}.log")),
            })
            .collect();
        Etcd { members, dir }
    }

    /// Comma-separated client URLs of every member.
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// An endpoint of a running member.
    pub fn live_endpoint(&self) -> String {
        self.members
            .iter()
            .find(|m| m.is_running())
            .map(|m| m.url())
            .expect("no running member")
    }

    /// `etcdctl ARGS` against `endpoint`; returns stdout, panics on failure.
    pub fn ctl_at(&self, endpoint: &str, args: &[&str]) -> String {
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(endpoint)
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .expect("run etcdctl (is etcd-client installed?)");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `etcdctl ARGS` against any running member.
    pub fn ctl(&self, args: &[&str]) -> String {
        self.ctl_at(&self.live_endpoint(), args)
    }

    pub fn put(&self, key: &str, value: &str) {
        self.ctl(&["put", key, value]);
    }

    /// `put` with the value on etcdctl's stdin: any bytes, including a
    /// leading `-` or newlines.
    pub fn put_raw(&self, key: &str, value: &str) {
        use std::io::Write;
        let mut child = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg("--endpoints")
            .arg(self.live_endpoint())
            .arg("--command-timeout=10s")
            .args(["put", key])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("run etcdctl (is etcd-client installed?)");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(value.as_bytes())
            .expect("write value");
        assert!(
            child.wait().expect("etcdctl").success(),
            "etcdctl put {key}"
        );
    }

    pub fn del(&self, key: &str) {
        self.ctl(&["del", key]);
    }

    /// `put` through this endpoint.
    pub fn put_at(&self, endpoint: &str, key: &str, value: &str) {
        self.ctl_at(endpoint, &["put", key, value]);
    }

    /// `del` through this endpoint.
    pub fn del_at(&self, endpoint: &str, key: &str) {
        self.ctl_at(endpoint, &["del", key]);
    }

    /// The current revision, as this endpoint reports it.
    pub fn revision_at(&self, endpoint: &str) -> i64 {
        let out = self.ctl_at(
            endpoint,
            &[
                "get",
                "/",
                "--prefix",
                "--keys-only",
                "--limit=1",
                "-w",
                "json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// The current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&[
            "get",
            "/",
            "--prefix",
            "--keys-only",
            "--limit=1",
            "-w",
            "json",
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
        v["header"]["revision"].as_i64().expect("revision")
    }

    /// Turns auth on with two users: `root` (password `root_pw`, role root)
    /// and `liveconf` (password `user_pw`, role `liveconf-ro`: read on the
    /// prefix `/app/` only).
    pub fn enable_auth(&self, root_pw: &str, user_pw: &str) {
        self.ctl(&["role", "add", "liveconf-ro"]);
        self.ctl(&[
            "role",
            "grant-permission",
            "liveconf-ro",
            "--prefix=true",
            "read",
            "/app/",
        ]);
        self.ctl(&["user", "add", &format!("liveconf:{user_pw}")]);
        self.ctl(&["user", "grant-role", "liveconf", "liveconf-ro"]);
        self.ctl(&["user", "add", &format!("root:{root_pw}")]);
        self.ctl(&["user", "grant-role", "root", "root"]);
        self.ctl(&["auth", "enable"]);
    }

    /// `etcdctl --user root:ROOT_PW ARGS` (after [`Etcd::enable_auth`]).
    pub fn ctl_as_root(&self, root_pw: &str, args: &[&str]) -> String {
        let user = format!("root:{root_pw}");
        let mut all = vec!["--user", user.as_str()];
        all.extend_from_slice(args);
        self.ctl(&all)
    }

    /// Waits until every running member answers.
    pub fn wait_healthy(&self) {
        for m in self.members.iter().filter(|m| m.is_running()) {
            let url = m.url();
            wait_for(
                &format!("etcd {url} healthy"),
                Duration::from_secs(30),
                || {
                    Command::new("etcdctl")
                        .env("ETCDCTL_API", "3")
                        .arg("--endpoints")
                        .arg(&url)
                        .arg("--command-timeout=2s")
                        .args(["endpoint", "health"])
                        .output()
                        .map(|o| o.status.success())
                        .unwrap_or(false)
                },
            );
        }
    }
}

/// A running `liveconf render` daemon; killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `liveconf render ARGS`, logging to `log`.
    pub fn start(args: &[&str], log: &Path) -> Daemon {
        let f = std::fs::File::create(log).expect("daemon log");
        let child = Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .arg("render")
            .args(args)
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(f.try_clone().expect("log")))
            .stderr(Stdio::from(f))
            .spawn()
            .expect("start liveconf");
        Daemon {
            child,
            log: log.to_path_buf(),
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many log lines contain `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.log().lines().filter(|l| l.contains(needle)).count()
    }

    /// Whether the daemon is still running (`Some(code)` once it exited).
    pub fn exited(&mut self) -> Option<Option<i32>> {
        self.child.try_wait().ok().flatten().map(|st| st.code())
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig);
    }

    /// SIGTERM, then waits for the exit (bounded); returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- liveconf log ({}) ----\n{}",
                self.log.display(),
                self.log()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads a file, or "" when it does not exist (yet).
pub fn read_or_empty(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// The text of a liveconf `/metrics` endpoint (headers included), if it answers.
pub fn http_get_metrics(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the sample `series` (name and labels exactly as exported,
/// e.g. `liveconf_watch_events_total` or `liveconf_resource_healthy{resource="x"}`).
pub fn http_get_metric(port: u16, series: &str) -> Option<f64> {
    let name = series;
    let body = http_get_metrics(port)?;
    body.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        (series == name).then(|| value.parse().ok()).flatten()
    })
}
