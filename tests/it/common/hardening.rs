//! Helpers for the hardening tests (crash consistency, resource limits,
//! hostile values, filesystem attacks, secrets): a small seeded PRNG, stage
//! file listing, hashing, status.json access and a daemon started from any
//! prepared `Command` (so a test can set rlimits or extra flags).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use super::Fx;
use super::etcd::Daemon;

/// Suffix of liveconf's stage files.
pub const STAGE_SUFFIX: &str = ".liveconf-tmp";

/// xorshift64* — small, seedable, good enough to pick delays.
pub struct Rng(u64);

impl Rng {
    /// Seeded from `env` (a decimal seed, to reproduce a run) or the clock.
    /// The seed is printed so `--nocapture` shows it.
    pub fn from_env_or_time(env: &str) -> Rng {
        let seed = std::env::var(env)
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(0x9e37_79b9_7f4a_7c15)
                    ^ u64::from(std::process::id())
            });
        println!("PRNG seed {seed} (set {env}={seed} to reproduce)");
        Rng::new(seed)
    }

    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// Lowercase hex sha256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Names of the liveconf stage files (`*.liveconf-tmp`) in `dir`.
pub fn stage_files(dir: &Path) -> Vec<String> {
    super::list(dir)
        .into_iter()
        .filter(|n| n.ends_with(STAGE_SUFFIX))
        .collect()
}

/// Writes `path` atomically (write a sibling, then rename), as an operator's
/// tooling would, so a watcher never reads a half-written file.
pub fn write_atomic(path: &Path, data: &[u8]) {
    let tmp = path.with_extension("writing");
    std::fs::write(&tmp, data).expect("write temp");
    std::fs::rename(&tmp, path).expect("rename into place");
}

/// status.json of a fixture, parsed (`Null` when missing or unparsable).
pub fn status(fx: &Fx) -> serde_json::Value {
    std::fs::read_to_string(fx.path("state/status.json"))
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(serde_json::Value::Null)
}

/// Starts an already prepared `liveconf render ...` command as a daemon
/// (stdout and stderr to `log`, no colour), killed when dropped.
pub fn spawn_daemon(mut cmd: Command, log: &Path) -> Daemon {
    let f = std::fs::File::create(log).expect("daemon log");
    let child = cmd
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(f.try_clone().expect("log")))
        .stderr(Stdio::from(f))
        .spawn()
        .expect("start liveconf");
    Daemon {
        child,
        log: log.to_path_buf(),
    }
}

/// The file-backend daemon of a fixture (`render --wait 0s` + `extra`).
pub fn file_daemon(fx: &Fx, extra: &[&str]) -> Daemon {
    let mut args = vec!["render", "--wait", "0s"];
    args.extend_from_slice(extra);
    spawn_daemon(fx.cmd(&args), &fx.path("daemon.log"))
}

/// Polls `cond` every 10ms for at most `limit`; true when it held.
pub fn poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// PIDs of live processes whose command line contains `marker`, like
/// `pgrep -f` (read from /proc, so procps need not be installed); zombies,
/// whose command line is empty, do not match.
pub fn pgrep(marker: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmdline: String = String::from_utf8_lossy(&raw)
            .chars()
            .map(|c| if c == '\0' { ' ' } else { c })
            .collect();
        if cmdline.contains(marker) {
            pids.push(pid);
        }
    }
    pids
}

/// A name unique to this test process and call, for markers and files.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{tag}-{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Asserts no line of `text` looks like a panic or a backtrace.
pub fn assert_no_panic(what: &str, text: &str) {
    assert!(
        !text.contains("panicked")
            && !text.contains("RUST_BACKTRACE")
            && !text.contains("stack backtrace"),
        "{what}: liveconf panicked:\n{text}"
    );
}

/// The path of `rel` below a fixture, as a string.
pub fn p(fx: &Fx, rel: &str) -> String {
    fx.path(rel).display().to_string()
}

/// A directory under the fixture, created.
pub fn mkdir(fx: &Fx, rel: &str) -> PathBuf {
    let d = fx.path(rel);
    std::fs::create_dir_all(&d).expect("mkdir");
    d
}
