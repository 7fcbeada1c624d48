//! Resource limits: a write that fails midway (RLIMIT_FSIZE on the daemon),
//! the `max_output_bytes` ceiling on rendered output, and hooks that print
//! megabytes, die from a signal, or hang with a background process.

use crate::common;

use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use common::Fx;
use common::hardening::{assert_no_panic, pgrep, poll, spawn_daemon, stage_files, status};

const LIMIT: Duration = Duration::from_secs(30);

/// `NAME` renders `/app/v` LINES times (one value per line) into out/NAME.conf.
fn lines_resource(fx: &Fx, name: &str, lines: usize, extra: &str) {
    fx.template(
        &format!("{name}.tera"),
        &format!(
            "{{% set v = getv(key=\"/v\") %}}{{% for i in range(end={lines}) %}}{{{{ v }}}}\n{{% endfor %}}"
        ),
    );
    fx.resource(
        name,
        &format!(
            "[template]\nsrc = \"{name}.tera\"\ndest = \"{{out}}/{name}.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
}

fn expected_lines(v: &str, lines: usize) -> String {
    format!("{v}\n").repeat(lines)
}

// ------------------------------------------------------------ RLIMIT_FSIZE

/// The daemon may not write files larger than 64 KiB (soft limit; the hard
/// limit stays unlimited so the test can lift it again without privileges).
/// Its ~1 MB output fails with EFBIG part-way through the stage file: the
/// error names the resource and the cause, the destination keeps its old
/// content, the stage file is gone. `prlimit` then lifts the limit on the
/// running daemon, and its retry (backoff 1s, 2s, ...) installs the file.
#[test]
fn a_write_that_fails_midway_leaves_the_destination_and_no_stage_file_and_is_retried() {
    assert!(
        common::have("prlimit"),
        "prlimit (util-linux) is required for this test"
    );
    let fx = Fx::new();
    fx.keys("app:\n  v: a-line-of-forty-bytes-written-many-times\n");
    lines_resource(&fx, "big-file", 25_000, "");
    let dest = fx.path("out/big-file.conf");
    std::fs::write(&dest, "old content\n").unwrap();
    let want = expected_lines("a-line-of-forty-bytes-written-many-times", 25_000);
    assert!(want.len() > 1_000_000);

    let mut cmd = fx.cmd(&["render", "--wait", "0s"]);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs in the child.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::resource::setrlimit(
                nix::sys::resource::Resource::RLIMIT_FSIZE,
                64 * 1024,
                nix::sys::resource::RLIM_INFINITY,
            )
            .map_err(std::io::Error::from)
        });
    }
    let mut d = spawn_daemon(cmd, &fx.path("daemon.log"));
    common::etcd::wait_for("the install failure in status.json", LIMIT, || {
        status(&fx)["resources"]["big-file"]["error"]["step"] == "install"
    });
    let st = status(&fx);
    let message = st["resources"]["big-file"]["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    println!("status.json error: {message}");
    assert!(
        message.contains("File too large"),
        "status.json does not name the cause: {message}"
    );
    assert_eq!(st["resources"]["big-file"]["healthy"], false);
    // status.json and the log line are written by the same event, in no
    // promised order: wait for the line rather than read the log at once.
    common::etcd::wait_for("a log line naming the cause", LIMIT, || {
        d.log().contains("File too large")
    });
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("File too large"))
        .unwrap_or_else(|| panic!("no log line names the cause:\n{log}"));
    println!("log: {line}");
    assert!(
        line.contains("big-file") && line.contains("install"),
        "the log line does not name the resource and step: {line}"
    );
    assert_no_panic("daemon", &log);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "old content\n");
    assert!(
        poll(Duration::from_secs(5), || stage_files(&fx.path("out"))
            .is_empty()),
        "stage file left after the failed write: {:?}",
        common::list(&fx.path("out"))
    );
    assert!(d.exited().is_none(), "the daemon exited:\n{log}");

    // Space is back: lift the limit of the running daemon.
    let pid = d.child.id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--fsize=unlimited"])
        .output()
        .expect("run prlimit");
    assert!(
        out.status.success(),
        "prlimit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    common::etcd::wait_for(
        "the retry to install the file",
        Duration::from_secs(60),
        || std::fs::read_to_string(&dest).is_ok_and(|s| s == want),
    );
    common::etcd::wait_for("status.json healthy again", LIMIT, || {
        status(&fx)["resources"]["big-file"]["healthy"] == true
    });
    assert!(stage_files(&fx.path("out")).is_empty());
    assert_eq!(d.stop(), Some(0));
}

// --------------------------------------------------------- max_output_bytes

#[test]
fn output_above_max_output_bytes_is_refused_and_nothing_is_written() {
    let fx = Fx::new();
    std::fs::write(fx.path("liveconf.toml"), "max_output_bytes = 1000\n").unwrap();
    fx.keys("app:\n  v: \"123456789\"\n"); // 10 bytes per line
    lines_resource(&fx, "at-limit", 100, ""); // exactly 1000 bytes
    lines_resource(&fx, "over-limit", 101, ""); // 1010 bytes
    lines_resource(&fx, "over-limit-existing", 5000, "");
    std::fs::write(fx.path("out/over-limit-existing.conf"), "old\n").unwrap();

    let r = fx.once();
    r.expect_code(2);
    assert_no_panic("render --once", &r.stderr);
    // The limit is inclusive: exactly 1000 bytes is fine.
    assert_eq!(
        fx.read("out/at-limit.conf"),
        expected_lines("123456789", 100)
    );
    for (name, size) in [("over-limit", 1010), ("over-limit-existing", 50_000)] {
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{name}: render failed")))
            .unwrap_or_else(|| panic!("no failure line for {name}:\n{}", r.stderr));
        println!("{line}");
        assert!(
            line.contains(&size.to_string())
                && line.contains("1000")
                && line.contains("max_output_bytes"),
            "the error does not give the size, the limit and the setting: {line}"
        );
        let st = status(&fx);
        assert_eq!(st["resources"][name]["error"]["step"], "render", "{st:#}");
    }
    assert!(!fx.path("out/over-limit.conf").exists());
    assert_eq!(fx.read("out/over-limit-existing.conf"), "old\n");
    assert_eq!(
        fx.out_files(),
        ["at-limit.conf", "over-limit-existing.conf"],
        "something else was written"
    );
}

// ------------------------------------------------------------------- hooks

/// A check that prints 5 MB: the error in the log and in status.json keeps
/// the first 16 KiB of output and says it was truncated.
#[test]
fn a_hook_printing_megabytes_has_its_output_capped_in_log_and_status() {
    let fx = Fx::new();
    fx.keys("app:\n  v: new\n");
    lines_resource(
        &fx,
        "noisy",
        1,
        "check_cmd = \"head -c 5000000 /dev/zero | tr '\\\\0' x; exit 1\"\n",
    );
    std::fs::write(fx.path("out/noisy.conf"), "old\n").unwrap();
    let r = fx.once();
    r.expect_code(2);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("noisy: check failed"))
        .unwrap_or_else(|| panic!("no check failure line:\n{:.2000}", r.stderr));
    println!(
        "log line: {} bytes, ends with {:?}",
        line.len(),
        &line[line.len().saturating_sub(80)..]
    );
    assert!(line.contains("exited with status 1"), "{:.300}", line);
    assert!(line.contains("xxxxxxxx"), "the output is not shown at all");
    assert!(
        line.contains("truncated"),
        "truncation not said: {:.300}",
        line
    );
    assert!(
        line.len() < 20 * 1024,
        "log line is {} bytes: output not capped",
        line.len()
    );
    assert!(
        r.stderr.len() < 64 * 1024,
        "stderr is {} bytes in all",
        r.stderr.len()
    );
    let st = status(&fx);
    let message = st["resources"]["noisy"]["error"]["message"]
        .as_str()
        .unwrap_or_default();
    println!("status.json message: {} bytes", message.len());
    assert_eq!(st["resources"]["noisy"]["error"]["step"], "check");
    assert!(message.contains("truncated"), "{:.300}", message);
    assert!(
        message.len() < 20 * 1024,
        "status message is {} bytes",
        message.len()
    );
    assert!(
        std::fs::metadata(fx.path("state/status.json"))
            .unwrap()
            .len()
            < 64 * 1024,
        "status.json is not small"
    );
    assert_eq!(fx.read("out/noisy.conf"), "old\n");
    assert_eq!(fx.out_files(), ["noisy.conf"]);
}

/// Exit codes and signals are reported as such.
#[test]
fn hook_exit_codes_and_killing_signals_are_reported() {
    let fx = Fx::new();
    fx.keys("app:\n  v: new\n");
    lines_resource(&fx, "check-killed", 1, "check_cmd = \"kill -9 $$\"\n");
    lines_resource(
        &fx,
        "reload-terminated",
        1,
        "reload_cmd = \"kill -TERM $$\"\n",
    );
    lines_resource(
        &fx,
        "check-exit",
        1,
        "check_cmd = \"echo nope >&2; exit 42\"\n",
    );
    let r = fx.once();
    r.expect_code(2);
    assert_no_panic("render --once", &r.stderr);
    for (name, step, how) in [
        ("check-killed", "check", "was killed by signal 9"),
        ("reload-terminated", "reload", "was killed by signal 15"),
        ("check-exit", "check", "exited with status 42"),
    ] {
        let st = status(&fx);
        let e = &st["resources"][name]["error"];
        println!("{name}: {}", e["message"]);
        assert_eq!(e["step"], step, "{name}: {st:#}");
        assert!(
            e["message"].as_str().unwrap_or_default().contains(how),
            "{name}: {how:?} not reported: {}",
            e["message"]
        );
        assert!(
            r.stderr
                .lines()
                .any(|l| l.contains(name) && l.contains(how)),
            "{name}: {how:?} not in the log:\n{}",
            r.stderr
        );
    }
    assert!(r.stderr.contains("nope"), "the hook's stderr is not shown");
    // A failed check keeps the file out; a failed reload leaves it installed.
    assert!(!fx.path("out/check-killed.conf").exists());
    assert!(!fx.path("out/check-exit.conf").exists());
    assert_eq!(fx.read("out/reload-terminated.conf"), "new\n");
}

/// A reload command that hangs, with a background process of its own:
/// at `command_timeout` the whole process group is killed — no process of
/// the command survives (pgrep on a marker unique to this run).
#[test]
fn a_hung_reload_is_killed_with_its_whole_process_group_at_command_timeout() {
    let fx = Fx::new();
    fx.keys("app:\n  v: new\n");
    // `sleep 299.<digits>`: a command line no other process has.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let marker = format!("sleep 299.{}{nanos}", std::process::id());
    assert!(pgrep(&marker).is_empty());
    lines_resource(
        &fx,
        "hung",
        1,
        &format!("reload_cmd = \"{marker} & {marker}\"\ncommand_timeout = \"2s\"\n"),
    );
    let started = Instant::now();
    let child = fx
        .cmd(&["render", "--once"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run liveconf");
    // While it hangs: the shell and both sleepers are there.
    let mut seen = 0;
    poll(Duration::from_secs(10), || {
        seen = seen.max(pgrep(&marker).len());
        seen >= 3
    });
    assert!(
        seen >= 2,
        "the hung command's processes were never seen (pgrep -f {marker:?}): the test cannot tell"
    );
    let out = child.wait_with_output().expect("wait for liveconf");
    let elapsed = started.elapsed();
    let r = common::Run::from(out);
    r.expect_code(2)
        .expect_stderr(&["hung", "reload", "timed out after 2s"]);
    println!(
        "render --once returned after {elapsed:?}; {seen} processes of the command seen while it hung"
    );
    assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    // SIGKILL is delivered at once; give the kernel a moment to reap.
    let survivors = {
        let mut s = pgrep(&marker);
        poll(Duration::from_secs(3), || {
            s = pgrep(&marker);
            s.is_empty()
        });
        s
    };
    for pid in &survivors {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        survivors.is_empty(),
        "processes of the hung command survived the timeout: {survivors:?}"
    );
    assert_eq!(fx.read("out/hung.conf"), "new\n");
}
