//! Hooks die with liveconf: the guard process between liveconf and each
//! check or reload command, and the record of running hooks that lets the
//! next start end what a killed run left behind.
//!
//! **The guard.** [`hooks::run`](crate::hooks::run) spawns `/bin/sh -c CMD`
//! in a new process group; [`install`] makes the child std forks for it
//! fork once more before the exec: the grandchild goes on to exec the
//! shell, the child stays behind as the guard — the leader of the hook's
//! process group, the process liveconf waits for, without an exec of its
//! own (so it works from the unit tests' binary as from liveconf's). The
//! guard holds the read end of a pipe whose only write end is liveconf's
//! (close-on-exec, closed by the guard and by every other guard). When
//! liveconf dies — any signal, SIGKILL included — the kernel closes that
//! end, the guard reads end-of-file, sends SIGTERM to the group, and once
//! the shell has ended (or after [`GRACE_MS`]) SIGKILL to what is left,
//! itself included. Dropping the write end (a hook future dropped while
//! its command runs) does the same. The guard ignores SIGTERM, passes the
//! shell's end on as its own (the same exit status, or death by the same
//! signal, without a core dump) and closes every other descriptor
//! liveconf had.
//!
//! Not `PR_SET_PDEATHSIG`: it fires when the *thread* that forked the
//! child exits (tokio's blocking threads exit when idle), not the process,
//! and reaches only the direct child. End-of-file on a pipe is a property
//! of the process and needs no particular thread.
//!
//! **The record.** A guard can itself be killed (by hand, by the OOM
//! killer) before it acts. So each running hook is also recorded in
//! `STATE_DIR/hooks-running/PGID-START.json` (the group, its leader's start time
//! from `/proc/PID/stat` and the boot id against PID reuse, the liveconf
//! that ran it, the command), removed when the hook ends. At start
//! ([`adopt`]: the daemon, `render --once`), every record whose liveconf
//! is gone and whose group still has live members is killed (SIGKILL to
//! the group) and logged. A SIGHUP that moves the state directory moves
//! this process's records along ([`relocate`]), so a kill after it still
//! leaves them where the next start looks. A group is the unit throughout: a process that
//! leaves it (`setsid`, a daemon an init script starts) is left alone, as
//! the `command_timeout` kill leaves it.
//!
//! Everything the guard runs after the fork is a raw system call: the
//! process it forked from had other threads, so no allocation, no lock.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::libc;
use serde::{Deserialize, Serialize};

/// How long the guard lets a hook end after SIGTERM before SIGKILL.
pub(crate) const GRACE_MS: i32 = 1000;

/// The directory under the state directory holding running hooks' records.
pub(crate) const RECORD_DIR: &str = "hooks-running";

/// The hook's lifeline: liveconf's end of the guard's pipe. The guard ends
/// the hook's process group when this is dropped, or when liveconf dies.
pub(crate) struct Lifeline {
    _write: OwnedFd,
}

/// Makes `cmd` (already `process_group(0)`, its stdio set) run under a
/// guard. Keep the returned [`Lifeline`] while the hook runs; the child's
/// pid is the guard's, and the process group's id.
pub(crate) fn install(cmd: &mut tokio::process::Command) -> io::Result<Lifeline> {
    let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // std's set-up in the child writes fds 0-2: the guard's end must not
    // be one of them (`try_clone` duplicates to 3 or above).
    let read = if read.as_raw_fd() <= 2 {
        read.try_clone()?
    } else {
        read
    };
    // SAFETY: the closure runs in the forked child, where only
    // async-signal-safe calls are allowed: `become_guard` makes only raw
    // system calls (no allocation, no lock) and captures a plain integer.
    // `read` stays open in this process until after `spawn` (it is
    // dropped with the command, which holds it in the closure).
    unsafe {
        cmd.pre_exec(move || become_guard(read.as_raw_fd()));
    }
    Ok(Lifeline { _write: write })
}

/// In the forked child: forks the command (which returns, and std execs
/// it) and becomes its guard (which never returns).
fn become_guard(live: RawFd) -> io::Result<()> {
    // SAFETY: raw system calls only; see the module comment.
    unsafe {
        reset_caught_signals();
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            return Ok(());
        }
        guard(pid, live)
    }
}

/// Signals liveconf catches go back to their default action (what an exec
/// does): the guard must never run liveconf's handlers, which would write
/// to liveconf's own descriptors. Ignored signals stay ignored.
unsafe fn reset_caught_signals() {
    for sig in 1..=64 {
        // SAFETY: sigaction with valid pointers; errors (SIGKILL, reserved
        // signals) are ignored.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                set_disposition(sig, libc::SIG_DFL);
            }
        }
    }
}

unsafe fn set_disposition(sig: libc::c_int, handler: libc::sighandler_t) {
    // SAFETY: a zeroed sigaction with a handler and an empty mask is valid.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = handler;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(sig, &act, std::ptr::null_mut());
    }
}

/// The guard: waits for the command or for liveconf's end of the pipe.
unsafe fn guard(child: libc::pid_t, live: RawFd) -> ! {
    // SAFETY: raw system calls on our own descriptors and processes.
    unsafe {
        libc::prctl(
            libc::PR_SET_NAME,
            c"liveconf-hook".as_ptr() as libc::c_ulong,
            0,
            0,
            0,
        );
        close_all_but(live);
        set_disposition(libc::SIGTERM, libc::SIG_IGN);
        // Wakes the guard when the command ends; without pidfds (Linux
        // before 5.3) it looks every 100 ms.
        let pidfd = libc::syscall(libc::SYS_pidfd_open, child, 0) as libc::c_int;
        loop {
            let mut fds = [
                libc::pollfd {
                    fd: live,
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: pidfd,
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            let (n, timeout) = if pidfd >= 0 { (2, -1) } else { (1, 100) };
            let r = libc::poll(fds.as_mut_ptr(), n, timeout);
            if let Some(status) = reap(child) {
                relay(status);
            }
            if r > 0 && fds[0].revents != 0 {
                end_group(child, pidfd);
            }
            if r < 0 && *libc::__errno_location() != libc::EINTR {
                libc::poll(std::ptr::null_mut(), 0, 100);
            }
        }
    }
}

/// The command's wait status, once it has ended.
unsafe fn reap(child: libc::pid_t) -> Option<libc::c_int> {
    let mut status = 0;
    // SAFETY: waitpid on our own child with a valid pointer.
    let r = unsafe { libc::waitpid(child, &mut status, libc::WNOHANG) };
    if r == child {
        Some(status)
    } else if r < 0 && unsafe { *libc::__errno_location() } == libc::ECHILD {
        // Cannot happen (nobody else waits for it); end as a failure.
        Some(255 << 8)
    } else {
        None
    }
}

/// liveconf is gone (or dropped the hook): SIGTERM to the group, then
/// SIGKILL to what is left once the command ended or the grace ran out.
unsafe fn end_group(child: libc::pid_t, pidfd: libc::c_int) -> ! {
    // SAFETY: signals to our own process group; poll with a valid array.
    unsafe {
        libc::kill(0, libc::SIGTERM);
        let mut waited = 0;
        while waited < GRACE_MS && reap(child).is_none() {
            let mut fd = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            libc::poll(&mut fd, 1, 20);
            waited += 20;
        }
        libc::kill(0, libc::SIGKILL);
        libc::_exit(128 + libc::SIGKILL)
    }
}

/// Ends the guard as the command ended: its exit status, or death by its
/// signal (no core dump of the guard's copy of liveconf).
unsafe fn relay(status: libc::c_int) -> ! {
    // SAFETY: raw system calls on ourselves.
    unsafe {
        if libc::WIFSIGNALED(status) {
            let sig = libc::WTERMSIG(status);
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
            set_disposition(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(128 + sig)
        }
        libc::_exit(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            1
        })
    }
}

/// Closes every descriptor but 0-2 (the command's stdio) and `keep`: the
/// guard must hold none of liveconf's sockets, files or, above all, the
/// write ends of other hooks' pipes.
unsafe fn close_all_but(keep: RawFd) {
    // SAFETY: closing descriptors of this (single-threaded) process.
    unsafe {
        let below =
            keep <= 3 || libc::syscall(libc::SYS_close_range, 3u32, (keep - 1) as u32, 0u32) == 0;
        let above = libc::syscall(libc::SYS_close_range, (keep + 1) as u32, u32::MAX, 0u32) == 0;
        if !(below && above) {
            // Linux before 5.9.
            let mut lim: libc::rlimit = std::mem::zeroed();
            let top = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
                lim.rlim_cur.min(1 << 16) as RawFd
            } else {
                1024
            };
            for fd in 3..top {
                if fd != keep {
                    libc::close(fd);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The record of running hooks.

/// Where this process records its running hooks (set by [`adopt`]).
static RECORDS: Mutex<Option<PathBuf>> = Mutex::new(None);

/// One running hook, as recorded in `STATE_DIR/hooks-running/PGID-START.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Record {
    /// The guard's pid: the hook's process group.
    pub pgid: i32,
    /// The guard's start time (clock ticks after boot, `/proc/PID/stat`).
    pub start: u64,
    /// `/proc/sys/kernel/random/boot_id` when it started.
    pub boot: String,
    /// The liveconf that ran it, and that process's start time.
    pub owner: i32,
    pub owner_start: u64,
    /// "reload_cmd of NAME", "check_cmd of NAME".
    pub what: String,
    pub command: String,
}

/// A record on disk, removed when dropped (the hook ended): by its file
/// name, in the directory records are kept in at that moment, so a record
/// moved with the state directory ([`relocate`]) is the one removed.
#[derive(Debug)]
pub(crate) struct Recorded(String);

impl Drop for Recorded {
    fn drop(&mut self) {
        let name = std::mem::take(&mut self.0);
        let remove = move || {
            // Under the lock: a move in progress has either not yet
            // reached this record or is done with it.
            let Ok(dir) = RECORDS.lock() else { return };
            if let Some(dir) = dir.as_ref() {
                let _ = std::fs::remove_file(dir.join(&name));
            }
        };
        // Off the runtime's workers, like every other file operation.
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn_blocking(remove)),
            Err(_) => remove(),
        }
    }
}

/// Records the hook whose guard is `pgid`, when a state directory was
/// adopted. Best effort: the guard protects without it. Blocking (a file
/// write): call it off the runtime's workers.
pub(crate) fn record(pgid: u32, what: &str, command: &str) -> Option<Recorded> {
    let pgid = pgid as i32;
    let rec = Record {
        pgid,
        start: stat(pgid)?.start,
        boot: boot_id(),
        owner: std::process::id() as i32,
        owner_start: own_start(),
        what: what.to_string(),
        command: command.to_string(),
    };
    // The start time in the name: a record removed late never removes
    // the record of a later group that got the same id.
    let name = format!("{pgid}-{}.json", rec.start);
    // Written under the lock, so a move of the state directory never
    // leaves it behind.
    let records = RECORDS.lock().ok()?;
    let dir = records.as_ref()?;
    let path = dir.join(&name);
    let written = std::fs::create_dir_all(dir)
        .and_then(|()| std::fs::write(&path, serde_json::to_vec(&rec).unwrap_or_default()));
    match written {
        Ok(()) => Some(Recorded(name)),
        Err(e) => {
            static WARNED: AtomicBool = AtomicBool::new(false);
            if !WARNED.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "cannot record running hooks in {}: {e} (a hook whose guard is killed with liveconf would not be ended at the next start)",
                    dir.display()
                );
            }
            None
        }
    }
}

/// The state directory moved (SIGHUP with a new `state_dir`): records of
/// this process's running hooks move to `STATE_DIR/hooks-running` (written
/// there, then removed from the old one, which is removed once empty), and
/// new ones are written there; hooks a liveconf that is gone left recorded
/// in the new directory are ended first, as at start. Records of other
/// running liveconfs stay where they are. Returns how many were moved.
/// Blocking: call it off the runtime's workers.
pub(crate) fn relocate(state_dir: &Path) -> usize {
    let new = state_dir.join(RECORD_DIR);
    let Ok(mut records) = RECORDS.lock() else {
        return 0;
    };
    let Some(old) = records.clone() else {
        // Nothing adopted (noop): nothing recorded, nothing to move.
        return 0;
    };
    if old == new {
        return 0;
    }
    end_leftovers(&new);
    *records = Some(new.clone());
    let me = std::process::id() as i32;
    let mut moved = 0;
    for entry in std::fs::read_dir(&old).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        match serde_json::from_slice::<Record>(&bytes) {
            Ok(rec) if rec.owner == me => {}
            _ => continue,
        }
        let to = new.join(entry.file_name());
        let written = std::fs::create_dir_all(&new).and_then(|()| std::fs::write(&to, &bytes));
        match written {
            Ok(()) => {
                let _ = std::fs::remove_file(&path);
                moved += 1;
            }
            Err(e) => {
                // Left where it was: a next start there still finds it.
                tracing::warn!(
                    "state_dir changed: cannot move the record of a running hook to {}: {e}; it stays in {}",
                    new.display(),
                    old.display()
                );
            }
        }
    }
    let _ = std::fs::remove_dir(&old);
    if moved > 0 {
        tracing::info!(
            "state_dir changed: the records of {} moved from {} to {}",
            crate::logging::count(moved, "running hook"),
            old.display(),
            new.display()
        );
    }
    moved
}

/// Records this process's hooks under `state_dir`, and first ends the
/// hooks a liveconf that is gone left running there (each logged).
pub(crate) fn adopt(state_dir: &Path) {
    let dir = state_dir.join(RECORD_DIR);
    end_leftovers(&dir);
    if let Ok(mut d) = RECORDS.lock() {
        *d = Some(dir);
    }
}

/// Kills the process groups recorded in `dir` by liveconf processes that
/// are gone; returns their records. Records of running liveconfs (a
/// daemon while `render --once` starts) are left alone.
pub(crate) fn end_leftovers(dir: &Path) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let boot = boot_id();
    let mut procs: Option<Vec<(i32, Stat)>> = None;
    let mut ended = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let rec: Option<Record> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        if let Some(rec) = rec {
            let this_boot = rec.boot == boot;
            if this_boot && alive(rec.owner, rec.owner_start) {
                continue;
            }
            let procs = procs.get_or_insert_with(scan_proc);
            if this_boot && kill_group(&rec, procs) {
                tracing::warn!(
                    "killed {} left running by a previous liveconf (pid {}): process group {}, `{}`",
                    rec.what,
                    rec.owner,
                    rec.pgid,
                    crate::logging::one_line(&rec.command)
                );
                ended.push(rec);
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

/// SIGKILL to the recorded group if it still has live members and is the
/// same group (its leader, when still there, started when recorded; every
/// member started after it). True if it was killed.
fn kill_group(rec: &Record, procs: &[(i32, Stat)]) -> bool {
    if stat(rec.pgid).is_some_and(|s| s.start != rec.start) {
        return false;
    }
    let live = procs
        .iter()
        .any(|(_, s)| s.pgrp == rec.pgid && s.state != 'Z' && s.start >= rec.start);
    live && nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(rec.pgid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .is_ok()
}

/// What the records need of `/proc/PID/stat`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub start: u64,
}

pub(crate) fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is in parentheses and may hold anything.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub(crate) fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn alive(pid: i32, start: u64) -> bool {
    stat(pid).is_some_and(|s| s.start == start && s.state != 'Z')
}

fn own_start() -> u64 {
    static START: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *START.get_or_init(|| stat(std::process::id() as i32).map_or(0, |s| s.start))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn scan_proc() -> Vec<(i32, Stat)> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| Some((pid, stat(pid)?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::time::{Duration, Instant};

    #[test]
    fn stat_fields_survive_odd_command_names() {
        let line =
            "4242 (a) b (c) S 1 4240 4240 0 -1 4194560 1 2 3 4 5 6 7 8 20 0 1 0 987654 1000 100";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4240,
                start: 987654
            })
        );
        let me = stat(std::process::id() as i32).unwrap();
        assert_eq!(me.pgrp, nix::unistd::getpgrp().as_raw());
    }

    fn group_alive(pgid: i32) -> bool {
        scan_proc()
            .iter()
            .any(|(_, s)| s.pgrp == pgid && s.state != 'Z')
    }

    fn leftover(dir: &Path, owner: i32, owner_start: u64) -> (std::process::Child, Record) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id() as i32;
        let rec = Record {
            pgid,
            start: stat(pgid).unwrap().start,
            boot: boot_id(),
            owner,
            owner_start,
            what: "reload_cmd of x".into(),
            command: "sleep 30".into(),
        };
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join(format!("{pgid}.json")),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        (child, rec)
    }

    #[test]
    fn a_group_left_by_a_dead_liveconf_is_killed_and_its_record_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(RECORD_DIR);
        // Our own pid with another start time: a liveconf that is gone.
        let (mut child, rec) = leftover(&dir, std::process::id() as i32, own_start() + 1);
        assert_eq!(end_leftovers(&dir), vec![rec.clone()]);
        let start = Instant::now();
        while child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(3), "not killed");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(!group_alive(rec.pgid));
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_running_liveconfs_hooks_and_reused_pids_are_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(RECORD_DIR);
        let (mut mine, _) = leftover(&dir, std::process::id() as i32, own_start());
        assert!(end_leftovers(&dir).is_empty());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "record kept");
        let _ = mine.kill();
        let _ = mine.wait();
        std::fs::remove_dir_all(&dir).unwrap();

        // The recorded leader's pid now belongs to a process that started
        // at another time: not ours.
        let (mut other, mut rec) = leftover(&dir, std::process::id() as i32, own_start() + 1);
        rec.start += 1;
        std::fs::write(
            dir.join(format!("{}.json", rec.pgid)),
            serde_json::to_vec(&rec).unwrap(),
        )
        .unwrap();
        assert!(end_leftovers(&dir).is_empty());
        assert!(other.try_wait().unwrap().is_none(), "killed a stranger");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        let _ = other.kill();
        let _ = other.wait();
    }
}
