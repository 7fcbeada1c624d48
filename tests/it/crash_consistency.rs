//! Crash consistency: the daemon is killed with SIGKILL at random moments
//! while it installs a multi-megabyte file that changes on every render.
//! After every kill the destination is a complete old or new version (its
//! sha256 is one of the versions rendered so far), and the next start
//! removes every stage file the kill left behind.
//!
//! `cargo test --test crash_consistency -- --nocapture` prints the seed and
//! the counts (kills, stage files found and removed). Set
//! `LIVECONF_CRASH_KILLS=2000` for a longer run and `LIVECONF_CRASH_SEED=N`
//! to replay the delays of a run.

use crate::common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::Fx;
use common::hardening::{Rng, poll, sha256_hex, spawn_daemon, stage_files, write_atomic};

/// Lines in the rendered file: with ~45-byte lines, about 2.3 MB.
const LINES: usize = 50_000;

/// What the template renders for value `v`, computed independently of liveconf.
fn expected(v: &str) -> Vec<u8> {
    let mut out = String::with_capacity(LINES * (v.len() + 8));
    for i in 0..LINES {
        out.push_str(v);
        out.push(' ');
        out.push_str(&i.to_string());
        out.push('\n');
    }
    out.into_bytes()
}

fn keys_yaml(v: &str) -> String {
    format!("app:\n  v: \"{v}\"\n")
}

/// Polls `cond` about every 200µs (a stage file of a few MB lives for a
/// few milliseconds) for at most `limit`; true when it held.
fn tight_poll(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn kills_wanted() -> usize {
    std::env::var("LIVECONF_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

#[derive(Default, Debug)]
struct Counts {
    kills: usize,
    changes_through_watch: usize,
    kills_random_delay: usize,
    kills_at_stage_creation: usize,
    kills_just_after_stage_creation: usize,
    dest_newest: usize,
    dest_older: usize,
    kills_leaving_stage_files: usize,
    stage_files_left: usize,
    stage_files_removed_by_next_start: usize,
    removal_logged: usize,
    status_json_temp_files_left: usize,
}

#[test]
fn sigkill_at_random_moments_leaves_a_complete_old_or_new_file_and_no_stage_file_after_restart() {
    let started = Instant::now();
    let wanted = kills_wanted();
    let mut rng = Rng::from_env_or_time("LIVECONF_CRASH_SEED");
    let fx = Fx::new();
    fx.template(
        "big.tera",
        &format!(
            "{{% set v = getv(key=\"/v\") %}}{{% for i in range(end={LINES}) %}}{{{{ v }}}} {{{{ i }}}}\n{{% endfor %}}"
        ),
    );
    fx.resource(
        "big",
        "[template]\nsrc = \"big.tera\"\ndest = \"{out}/big.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nmode = \"0644\"\n",
    );
    let out_dir = fx.path("out");
    let dest = fx.path("out/big.conf");
    let state_dir = fx.path("state");

    // The key file lives in its own directory: the file backend watches the
    // key file's directory, and this test polls out/ and the log tightly.
    let keys_dir = fx.path("keys");
    std::fs::create_dir_all(&keys_dir).unwrap();
    let keys = keys_dir.join("keys.yaml");
    let daemon = || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
        cmd.arg("render")
            .arg("--confdir")
            .arg(fx.dir.path())
            .arg("--file")
            .arg(&keys)
            .arg("--state-dir")
            .arg(&state_dir)
            .args(["--wait", "0s"]);
        spawn_daemon(cmd, &fx.path("daemon.log"))
    };

    // Every version (value) ever handed to liveconf: the destination must
    // always be the complete rendering of one of them.
    let mut versions: HashSet<String> = HashSet::new();
    let mut generation = 0u64;
    let mut new_value = |rng: &mut Rng, versions: &mut HashSet<String>| -> String {
        generation += 1;
        let v = format!("generation-{generation:06}-{:016x}", rng.next_u64());
        versions.insert(v.clone());
        write_atomic(&keys, keys_yaml(&v).as_bytes());
        v
    };

    // A first clean start: the rendered bytes are exactly what the test expects.
    let first = new_value(&mut rng, &mut versions);
    {
        let mut d = daemon();
        assert!(
            poll(Duration::from_secs(30), || std::fs::read(&dest)
                .map(|b| b == expected(&first))
                .unwrap_or(false)),
            "first install never matched the expected bytes:\n{}",
            d.log()
        );
        assert_eq!(d.stop(), Some(0));
    }
    let bytes = expected(&first).len();
    println!("destination size: {bytes} bytes");

    let mut c = Counts::default();
    let mut newest = first;
    let mut left_by_last_kill: Vec<String> = Vec::new();
    // Longest random delay after the start: covers start-up, the initial
    // render and install, and some idle time after it.
    let max_delay_ms = 300;
    while c.kills < wanted {
        // Most kills interrupt the initial render of a changed key file (the
        // change is made while the daemon is down); one in four changes the
        // key file while the daemon runs, through the file watcher.
        let through_watch = rng.below(4) == 0;
        if !through_watch {
            newest = new_value(&mut rng, &mut versions);
        }
        let mut d = daemon();
        // The start removes what the previous kill left (before rendering).
        if !left_by_last_kill.is_empty() {
            let gone = tight_poll(Duration::from_secs(15), || {
                left_by_last_kill.iter().all(|n| !out_dir.join(n).exists())
            });
            assert!(
                gone,
                "the restarted daemon did not remove the stage files {left_by_last_kill:?} left by kill #{}:\n{}",
                c.kills,
                d.log()
            );
            c.stage_files_removed_by_next_start += left_by_last_kill.len();
            if poll(Duration::from_secs(2), || {
                d.log().contains("stage file(s) left next to")
            }) {
                c.removal_logged += 1;
            }
        }
        if through_watch {
            c.changes_through_watch += 1;
            newest = new_value(&mut rng, &mut versions);
        }
        match rng.below(3) {
            0 => {
                c.kills_random_delay += 1;
                std::thread::sleep(Duration::from_millis(rng.below(max_delay_ms)));
            }
            1 => {
                c.kills_at_stage_creation += 1;
                tight_poll(Duration::from_secs(3), || !stage_files(&out_dir).is_empty());
            }
            _ => {
                c.kills_just_after_stage_creation += 1;
                tight_poll(Duration::from_secs(3), || !stage_files(&out_dir).is_empty());
                std::thread::sleep(Duration::from_micros(rng.below(20_000)));
            }
        }
        let _ = d.child.kill(); // SIGKILL
        let _ = d.child.wait();
        c.kills += 1;

        match std::fs::read(&dest) {
            Ok(data) => {
                // Which version does it claim to be? Then it must be exactly that
                // version, complete (byte-for-byte equality; a hash would say no more).
                let claimed = data
                    .split(|&b| b == b' ')
                    .next()
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .unwrap_or_default();
                assert!(
                    versions.contains(&claimed) && data == expected(&claimed),
                    "after kill #{}: the destination ({} bytes, sha256 {}) is not a complete rendered version",
                    c.kills,
                    data.len(),
                    sha256_hex(&data)
                );
                if claimed == newest {
                    c.dest_newest += 1;
                } else {
                    c.dest_older += 1;
                }
            }
            Err(e) => panic!(
                "after kill #{}: the destination is gone ({e}); it was installed before",
                c.kills
            ),
        }
        left_by_last_kill = stage_files(&out_dir);
        if !left_by_last_kill.is_empty() {
            c.kills_leaving_stage_files += 1;
            c.stage_files_left += left_by_last_kill.len();
        }
        // status.json, when present, is always complete JSON.
        if let Ok(s) = std::fs::read_to_string(state_dir.join("status.json")) {
            assert!(
                serde_json::from_str::<serde_json::Value>(&s).is_ok(),
                "after kill #{}: status.json is not valid JSON:\n{s}",
                c.kills
            );
        }
    }

    // A last clean start: leftovers removed, the newest version installed.
    let mut d = daemon();
    let want = expected(&newest);
    assert!(
        poll(Duration::from_secs(30), || {
            d.log().contains("first render done")
                && std::fs::read(&dest).map(|b| b == want).unwrap_or(false)
                && stage_files(&out_dir).is_empty()
        }),
        "the daemon did not converge on the newest version after {} kills:\n{}",
        c.kills,
        d.log()
    );
    c.stage_files_removed_by_next_start += left_by_last_kill.len();
    assert_eq!(d.stop(), Some(0), "clean stop");
    assert_eq!(common::list(&out_dir), ["big.conf"]);
    c.status_json_temp_files_left = common::list(&state_dir)
        .iter()
        .filter(|n| n.starts_with(".status.json."))
        .count();

    println!(
        "crash consistency: {} SIGKILLs in {:.1}s ({} with the key changed while the daemon ran; {} after a random delay of 0-{max_delay_ms}ms, {} as a stage file appeared, {} 0-20ms after); \
         destination afterwards: {} newest, {} older complete version; \
         {} kills left {} stage files, {} removed by the next start ({} starts logged the removal); \
         {} .status.json.* temp files left in the state dir",
        c.kills,
        started.elapsed().as_secs_f64(),
        c.changes_through_watch,
        c.kills_random_delay,
        c.kills_at_stage_creation,
        c.kills_just_after_stage_creation,
        c.dest_newest,
        c.dest_older,
        c.kills_leaving_stage_files,
        c.stage_files_left,
        c.stage_files_removed_by_next_start,
        c.removal_logged,
        c.status_json_temp_files_left,
    );
    assert!(
        c.stage_files_left > 0,
        "no kill landed while a stage file existed: the test did not exercise a partial write"
    );
    assert_eq!(c.stage_files_left, c.stage_files_removed_by_next_start);
}

/// A kill can also land while status.json is being rewritten (a temporary
/// `.status.json.XXXXXXXX.liveconf-tmp` in the state dir, then rename). The
/// deterministic version: a leftover named exactly as a killed daemon
/// leaves it is removed by the next start.
#[test]
fn a_restart_removes_status_json_temp_files_left_by_a_kill() {
    let fx = Fx::new();
    fx.keys("app:\n  v: one\n");
    fx.template("x.tera", "{{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    // What Status::write leaves when killed between creating and renaming.
    let leftover = fx.path("state/.status.json.Ab3dE9xy.liveconf-tmp");
    std::fs::write(&leftover, "{\"node\": \"half-writ").unwrap();
    let mut d = common::hardening::file_daemon(&fx, &[]);
    assert!(
        poll(Duration::from_secs(20), || fx.path("out/x.conf").exists()
            && fx.path("state/status.json").exists()),
        "{}",
        d.log()
    );
    let removed = poll(Duration::from_secs(5), || !leftover.exists());
    d.stop();
    assert!(
        removed,
        "the temp file of status.json left by a killed daemon is still in the state dir: {:?}",
        common::list(&fx.path("state"))
    );
}

/// The file backend re-reads a key file after its directory has been quiet
/// for 50 ms. Any inotify event in that directory restarts the wait, and
/// read-only accesses count: while some process keeps reading *another* file
/// next to the key file (a monitoring agent, a backup, `tail -f` of a log in
/// /etc/liveconf), a change to the key file is never applied.
#[test]
fn a_key_file_change_is_applied_while_other_files_in_its_directory_are_read() {
    let fx = Fx::new();
    fx.keys("app:\n  v: one\n");
    fx.template("x.tera", "{{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    std::fs::write(fx.path("README"), "a file next to keys.yaml\n").unwrap();
    let mut d = common::hardening::file_daemon(&fx, &[]);
    let dest = fx.path("out/x.conf");
    assert!(
        poll(Duration::from_secs(20), || std::fs::read_to_string(&dest)
            .is_ok_and(|s| s == "one\n")),
        "{}",
        d.log()
    );
    // A reader of README, every 20 ms, for 10 s at most.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        let readme = fx.path("README");
        std::thread::spawn(move || {
            let start = Instant::now();
            while !stop.load(std::sync::atomic::Ordering::Relaxed)
                && start.elapsed() < Duration::from_secs(10)
            {
                let _ = std::fs::read(&readme);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    write_atomic(&fx.path("keys.yaml"), b"app:\n  v: two\n");
    let applied = poll(Duration::from_secs(5), || {
        std::fs::read_to_string(&dest).is_ok_and(|s| s == "two\n")
    });
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    reader.join().unwrap();
    // Once the reads stop, the change does arrive (it was delayed, not lost).
    let late = poll(Duration::from_secs(5), || {
        std::fs::read_to_string(&dest).is_ok_and(|s| s == "two\n")
    });
    d.stop();
    assert!(
        applied,
        "the key file change was not applied within 5 s while another file in its directory was read every 20 ms (applied after the reads stopped: {late})"
    );
}
