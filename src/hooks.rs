//! Check and reload commands: `/bin/sh -c`, a timeout, captured output.
//!
//! Each command runs in its own process group, led by a guard process
//! ([`crate::hookguard`]) that ends the group when liveconf dies (any
//! signal, SIGKILL included) or drops the hook; a timeout kills the whole
//! group. Each running command is recorded in the state directory, so the
//! next start ends one whose guard was killed too. Its output (stdout and
//! stderr, interleaved) goes to an unlinked temporary file rather than a
//! pipe — a daemon the command leaves behind cannot make liveconf wait —
//! and only the first [`OUTPUT_CAP`] bytes are kept for logs and status.
//! Only paths chosen by liveconf are substituted into a command; values
//! from etcd never reach a shell.

use std::io::{Read, Seek};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

/// How much of a command's output is kept.
pub const OUTPUT_CAP: usize = 16 * 1024;

/// How a command ended, when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFailure {
    /// The command as run.
    pub command: String,
    /// "exited with status 1", "killed by signal 9", "timed out after 30s"...
    pub how: String,
    /// The start of its output.
    pub output: String,
}

impl std::fmt::Display for HookFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` {}", self.command, self.how)?;
        let out = self.output.trim();
        if !out.is_empty() {
            write!(f, ": {out}")?;
        }
        Ok(())
    }
}

/// Quotes `s` for the shell when it holds anything but plain path characters.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Replaces `{{src}}`, `{{dest}}` (and confd's `{{.src}}`, spaces allowed
/// inside the braces) with the shell-quoted paths, made absolute (a
/// relative `--dest-root` must not break a command that changes directory).
pub fn substitute(cmd: &str, src: &Path, dest: &Path) -> String {
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    let src = shell_quote(&abs(src).to_string_lossy());
    let dest = shell_quote(&abs(dest).to_string_lossy());
    let mut out = String::with_capacity(cmd.len() + 64);
    let mut rest = cmd;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find("}}") {
            Some(end) => {
                let name = after[..end].trim().trim_start_matches('.');
                match name {
                    "src" => out.push_str(&src),
                    "dest" => out.push_str(&dest),
                    _ => out.push_str(&rest[start..start + 2 + end + 2]),
                }
                rest = &after[end + 2..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

fn read_capped(mut f: std::fs::File) -> String {
    let _ = f.rewind();
    let mut buf = Vec::with_capacity(1024);
    let _ = f.by_ref().take(OUTPUT_CAP as u64 + 1).read_to_end(&mut buf);
    let truncated = buf.len() > OUTPUT_CAP;
    buf.truncate(OUTPUT_CAP);
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    if truncated {
        s.push_str(" [output truncated]");
    }
    s
}

/// Which of a resource's commands a hook is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Check,
    Reload,
}

impl Kind {
    fn field(self) -> &'static str {
        match self {
            Kind::Check => "check_cmd",
            Kind::Reload => "reload_cmd",
        }
    }
}

/// Runs `command` (the `kind` of the resources `of`, named in the record
/// of running hooks) with `/bin/sh -c` under a guard, killing its process
/// group after `timeout`. Dropping the future ends the group too.
pub async fn run(
    kind: Kind,
    of: &str,
    command: &str,
    timeout: Duration,
) -> Result<(), HookFailure> {
    let fail = |how: String, output: String| HookFailure {
        command: command.to_string(),
        how,
        output,
    };
    let start_err = |e: std::io::Error| fail(format!("could not start: {e}"), String::new());
    let out = tempfile::tempfile().map_err(start_err)?;
    let err = out.try_clone().map_err(start_err)?;
    let keep = out.try_clone().map_err(start_err)?;
    let (mut child, _lifeline) = {
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let lifeline = crate::hookguard::install(&mut cmd).map_err(start_err)?;
        // The command (and the guard's end of the pipe it holds) is
        // dropped here, right after the spawn.
        (cmd.spawn().map_err(start_err)?, lifeline)
    };
    let pgid = child.id();
    let _record = match pgid {
        Some(pg) => {
            let (what, cmd) = (format!("{} of {of}", kind.field()), command.to_string());
            tokio::task::spawn_blocking(move || crate::hookguard::record(pg, &what, &cmd))
                .await
                .ok()
                .flatten()
        }
        None => None,
    };
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(fail(format!("could not be waited for: {e}"), String::new())),
        Err(_) => {
            if let Some(pg) = pgid {
                let pg = nix::unistd::Pid::from_raw(pg as i32);
                let _ = nix::sys::signal::killpg(pg, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = child.wait().await;
            return Err(fail(
                format!("timed out after {}", humantime::format_duration(timeout)),
                read_capped(keep),
            ));
        }
    };
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    };
    Err(fail(how, read_capped(keep)))
}

/// Takes this process's hooks' records under `state_dir`, first ending
/// (and logging) what a killed liveconf left running there. Called at the
/// start of the daemon and of `render --once`.
pub(crate) fn adopt_state_dir(state_dir: &Path) {
    crate::hookguard::adopt(state_dir);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitution_accepts_confd_spellings_and_quotes() {
        let s = substitute(
            "php -l {{src}} && cmp {{ .src }} {{.dest}} {{other}}",
            Path::new("/srv/.x.tmp"),
            Path::new("/srv/my file"),
        );
        assert_eq!(
            s,
            "php -l /srv/.x.tmp && cmp /srv/.x.tmp '/srv/my file' {{other}}"
        );
    }

    #[tokio::test]
    async fn reports_status_and_output() {
        assert!(
            run(Kind::Check, "t", "true", Duration::from_secs(5))
                .await
                .is_ok()
        );
        let e = run(
            Kind::Check,
            "t",
            "echo broken >&2; exit 3",
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert_eq!(e.how, "exited with status 3");
        assert_eq!(e.output.trim(), "broken");
    }

    /// The processes of the group `$$` (written to `file`) belongs to, by
    /// then the hook's; waits (bounded) until none is left alive.
    fn wait_group_gone(file: &Path) {
        let sh: i32 = std::fs::read_to_string(file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let pgid = crate::hookguard::stat(sh).map(|s| s.pgrp);
        let alive = || {
            pgid.is_some_and(|pg| {
                std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|p| p.parse::<i32>().ok())
                        .and_then(crate::hookguard::stat)
                        .is_some_and(|s| s.pgrp == pg && s.state != 'Z')
                })
            })
        };
        let start = std::time::Instant::now();
        while alive() {
            assert!(
                start.elapsed() < Duration::from_secs(3),
                "the hook's group survived"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pid = tmp.path().join("pid");
        let cmd = format!("echo $$ > {}; sleep 30 & sleep 30", pid.display());
        let e = run(Kind::Reload, "t", &cmd, Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(e.how.starts_with("timed out"), "{e}");
        wait_group_gone(&pid);
    }

    #[tokio::test]
    async fn a_dropped_hook_ends_its_process_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pid = tmp.path().join("pid");
        let cmd = format!(
            "sleep 30 & echo $$ > {}.new; mv {0}.new {0}; sleep 30",
            pid.display()
        );
        tokio::select! {
            _ = run(Kind::Reload, "t", &cmd, Duration::from_secs(60)) => panic!("ended"),
            () = async {
                while !pid.exists() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            } => {}
        }
        wait_group_gone(&pid);
    }

    #[tokio::test]
    async fn a_shell_killed_by_a_signal_is_reported_with_that_signal() {
        for (cmd, how) in [
            ("kill -TERM $$", "was killed by signal 15"),
            ("kill -9 $$", "was killed by signal 9"),
            ("echo out; exit 0", ""),
        ] {
            let r = run(Kind::Check, "t", cmd, Duration::from_secs(5)).await;
            match r {
                Err(e) => assert_eq!(e.how, how, "{cmd}"),
                Ok(()) => assert_eq!(how, "", "{cmd}"),
            }
        }
    }
}
