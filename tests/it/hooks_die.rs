//! Hooks die with liveconf: no process of a check or reload command
//! outlives a daemon or a `render --once` killed with SIGKILL, and what a
//! run left behind anyway (its guard killed too) is ended and logged by
//! the next start.
//!
//! Every process of a test's hook carries a marker unique to the test in
//! its command line: the hook runs `sleep` through a symlink named after
//! the marker, so even a shell that execs its last command leaves it
//! visible.

use crate::common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::Fx;
use common::etcd::{Daemon, wait_for};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const LIMIT: Duration = Duration::from_secs(20);
/// How long a killed liveconf's hook may outlive it.
const GONE_WITHIN: Duration = Duration::from_secs(3);

/// A marker no other process has, and a `sleep` whose path holds it.
fn marked_sleep(fx: &Fx) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("hookmark{}x{nanos}", std::process::id());
    let sleep = ["/bin/sleep", "/usr/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep");
    std::fs::create_dir_all(fx.path("bin")).unwrap();
    let link = fx.path("bin").join(&marker);
    std::os::unix::fs::symlink(sleep, &link).unwrap();
    (marker, link.display().to_string())
}

/// Live processes whose command line holds `marker`.
fn marked(marker: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(marker) && state(*pid) != Some('Z')
        })
        .collect()
}

/// Field 3 of /proc/PID/stat (the state), and field 5 (the process group).
fn state(pid: i32) -> Option<char> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

fn pgrp(pid: i32) -> Option<i32> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    s[s.rfind(')')? + 1..]
        .split_whitespace()
        .nth(2)?
        .parse()
        .ok()
}

/// Waits (bounded) until no process holds `marker`; kills the survivors
/// before failing, so a failure leaks nothing.
fn assert_all_gone(marker: &str, what: &str, within: Duration) {
    let start = Instant::now();
    let mut left = marked(marker);
    while !left.is_empty() && start.elapsed() < within {
        std::thread::sleep(Duration::from_millis(20));
        left = marked(marker);
    }
    for pid in &left {
        let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
    }
    assert!(
        left.is_empty(),
        "{what}: processes of the hook still alive {within:?} after: {left:?}"
    );
    println!("{what}: all gone after {:?}", start.elapsed());
}

/// `x` renders a constant; its reload is `reload` (`{sleep}` replaced).
fn hung_reload(fx: &Fx, sleep: &str, reload: &str) {
    fx.keys("app:\n  v: one\n");
    fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
    let reload = reload.replace("{sleep}", &format!("'{sleep}'"));
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncommand_timeout = \"120s\"\nreload_cmd = \"{reload}\"\n"
        ),
    );
}

fn start(fx: &Fx, log: &str) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let keys = fx.path("keys.yaml").display().to_string();
    let state = fx.path("state").display().to_string();
    let args = [
        "--confdir",
        &confdir,
        "--file",
        &keys,
        "--state-dir",
        &state,
        "--wait",
        "0s",
    ];
    Daemon::start(&args, &fx.path(log))
}

fn wait_running(marker: &str, n: usize) {
    wait_for("the hung reload running", LIMIT, || {
        marked(marker).len() >= n
    });
}

fn sigkilled_daemon_leaves_nothing(reload: &str, processes: usize) {
    let fx = Fx::new();
    let (marker, sleep) = marked_sleep(&fx);
    hung_reload(&fx, &sleep, reload);
    let mut d = start(&fx, "daemon.log");
    wait_running(&marker, processes);
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert_all_gone(&marker, "SIGKILLed daemon", GONE_WITHIN);
}

/// A daemon SIGKILLed while its reload hangs: the reload goes too.
#[test]
fn a_sigkilled_daemon_takes_its_hung_reload_with_it() {
    sigkilled_daemon_leaves_nothing("{sleep} 300", 1);
}

/// ... and the reload's own children, in the background or not.
#[test]
fn a_sigkilled_daemon_takes_the_reloads_children_with_it() {
    sigkilled_daemon_leaves_nothing("{sleep} 300 & {sleep} 301 & wait", 2);
}

/// `render --once` SIGKILLed while its reload hangs.
#[test]
fn a_sigkilled_render_once_takes_its_hung_reload_with_it() {
    let fx = Fx::new();
    let (marker, sleep) = marked_sleep(&fx);
    hung_reload(&fx, &sleep, "{sleep} 300 & {sleep} 301");
    let mut once = fx
        .cmd(&["render", "--once"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run liveconf");
    wait_running(&marker, 2);
    let _ = once.kill();
    let _ = once.wait();
    assert_all_gone(&marker, "SIGKILLed render --once", GONE_WITHIN);
}

/// A hook whose guard could not act (SIGKILLed with the daemon) is left running; the next start ends it and says so.
#[test]
fn a_hook_left_running_by_a_killed_run_is_ended_and_logged_by_the_next_start() {
    let fx = Fx::new();
    let (marker, sleep) = marked_sleep(&fx);
    hung_reload(&fx, &sleep, "{sleep} 300 & {sleep} 301");
    let mut d = start(&fx, "first.log");
    wait_running(&marker, 2);
    let records = fx.path("state/hooks-running");
    wait_for("the running reload recorded", LIMIT, || {
        common::list(&records).iter().any(|f| f.ends_with(".json"))
    });
    let pids = marked(&marker);
    let guard = pgrp(pids[0]).expect("the hook's process group");
    assert_ne!(guard, pids[0], "the command does not lead its group");
    let daemon = d.child.id();

    // The daemon stopped cannot see its guard die (nor remove the
    // record); then both are killed. (Stopping the guard instead would
    // not do: its group, orphaned with a stopped member when the daemon
    // dies, gets SIGHUP from the kernel.)
    let daemon_pid = Pid::from_raw(daemon as i32);
    kill(daemon_pid, Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(guard), Signal::SIGKILL).unwrap();
    let _ = d.child.kill();
    let _ = d.child.wait();
    let left = marked(&marker);
    assert!(
        !left.is_empty(),
        "nothing left running: the test cannot tell"
    );
    println!("left running by the killed daemon: {left:?}");

    // The next start reloads (the reload is owed), with a command that ends.
    hung_reload(&fx, &sleep, "true");
    let mut next = start(&fx, "next.log");
    // Within the start-up (a loaded machine may take a while to get there).
    assert_all_gone(&marker, "the next start", LIMIT);
    let expected =
        format!("killed reload_cmd of x left running by a previous liveconf (pid {daemon})");
    wait_for("the kill logged", LIMIT, || next.log().contains(&expected));
    wait_for("no record left", LIMIT, || {
        common::list(&records).iter().all(|f| !f.ends_with(".json"))
    });
    assert_eq!(next.stop(), Some(0), "{}", next.log());
}

/// A SIGHUP that moves `state_dir` takes the records of running hooks
/// along: a daemon then killed together with its hook's guard leaves the
/// hook to the next start in the *new* state directory, which ends it and
/// says so, and no record is left in either directory.
#[test]
fn a_new_state_dir_on_sighup_takes_the_running_hooks_records_along() {
    let fx = Fx::new();
    let (marker, sleep) = marked_sleep(&fx);
    hung_reload(&fx, &sleep, "{sleep} 300 & {sleep} 301");
    let config = fx.path("liveconf.toml");
    let settings = |state: &str| {
        let toml = format!(
            "backend = \"file\"\nfile = [{:?}]\nstate_dir = {:?}\nwait = \"0s\"\n",
            fx.path("keys.yaml").display().to_string(),
            fx.path(state).display().to_string()
        );
        std::fs::write(&config, toml).unwrap();
    };
    settings("state");
    let config_arg = config.display().to_string();
    let mut d = Daemon::start(&["--config", &config_arg], &fx.path("first.log"));
    wait_running(&marker, 2);
    let (old, new) = (
        fx.path("state/hooks-running"),
        fx.path("state2/hooks-running"),
    );
    let json = |dir: &Path| {
        common::list(dir)
            .into_iter()
            .filter(|f| f.ends_with(".json"))
            .collect::<Vec<_>>()
    };
    wait_for("the running reload recorded", LIMIT, || {
        json(&old).len() == 1
    });
    let recorded = json(&old);

    settings("state2");
    d.signal(Signal::SIGHUP);
    wait_for("the record moved to the new state dir", LIMIT, || {
        json(&new) == recorded && json(&old).is_empty()
    });
    wait_for("the move logged", LIMIT, || {
        d.log().contains("the records of 1 running hook moved")
    });

    // The daemon and the guard killed: only the record can end the hook.
    let pids = marked(&marker);
    let guard = pgrp(pids[0]).expect("the hook's process group");
    let daemon = d.child.id();
    kill(Pid::from_raw(daemon as i32), Signal::SIGSTOP).unwrap();
    kill(Pid::from_raw(guard), Signal::SIGKILL).unwrap();
    let _ = d.child.kill();
    let _ = d.child.wait();
    assert!(
        !marked(&marker).is_empty(),
        "nothing left running: the test cannot tell"
    );

    hung_reload(&fx, &sleep, "true");
    let mut next = Daemon::start(&["--config", &config_arg], &fx.path("next.log"));
    assert_all_gone(&marker, "the next start, in the new state dir", LIMIT);
    let expected =
        format!("killed reload_cmd of x left running by a previous liveconf (pid {daemon})");
    wait_for("the kill logged", LIMIT, || next.log().contains(&expected));
    wait_for("no record left", LIMIT, || {
        json(&new).is_empty() && json(&old).is_empty()
    });
    assert_eq!(next.stop(), Some(0), "{}", next.log());
}
