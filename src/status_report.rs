//! `liveconf status`: judging status.json like a monitoring plugin.
//!
//! OK when every resource is healthy and the backend was heard from within
//! `--max-age`; WARNING when the backend is unavailable, the last event is
//! older than `--max-age`, or the daemon's last reload of its configuration
//! failed; CRITICAL when a resource is failing, the daemon is not running
//! (stopped cleanly or not) or the last event is older than twice
//! `--max-age`; UNKNOWN when there is no readable status, or the daemon
//! moved its status to another state directory (saying which). (Exit codes
//! 0/1/2/3, as Nagios and Icinga expect.) Each problem is said in words
//! that tell what happened: stopped cleanly at T, never connected since the
//! start at T (and why), the configuration that failed to load.

use std::path::Path;
use std::time::Duration;

use crate::status::Status;

/// The verdict.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    pub code: u8,
    /// One line.
    pub summary: String,
    /// The status read, if any.
    pub status: Option<Status>,
    /// Seconds since the last event, if known.
    pub age: Option<u64>,
}

const NAMES: [&str; 4] = ["OK", "WARNING", "CRITICAL", "UNKNOWN"];

fn ago(secs: u64) -> String {
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// Reads `DIR/status.json` and judges it at time `now`.
pub fn evaluate(state_dir: &Path, max_age: Option<Duration>, now: u64) -> Verdict {
    let status = match Status::read(state_dir) {
        Ok(s) => s,
        Err(e) => {
            return Verdict {
                code: 3,
                summary: format!("{e} (has liveconf run on this host?)"),
                status: None,
                age: None,
            };
        }
    };
    // Left behind by a daemon whose state_dir changed: nothing here is
    // current, the status lives on elsewhere.
    if let Some(to) = &status.moved_to {
        return Verdict {
            code: 3,
            summary: format!(
                "this status was left behind at {}: the daemon writes its status to {} since its state_dir changed; run liveconf status --state-dir {} (or point the monitoring there)",
                crate::status::format_time(status.updated),
                to.display(),
                to.display()
            ),
            age: None,
            status: Some(status),
        };
    }
    // Never heard from the backend: the age runs from the daemon's start.
    let heard = status
        .last_event
        .or(status.started)
        .unwrap_or(status.updated);
    let age = now.saturating_sub(heard);
    let failing: Vec<String> = status
        .resources
        .iter()
        .filter(|(_, r)| !r.healthy)
        .map(|(n, r)| match &r.error {
            Some(e) => format!("{n} ({}: {})", e.step, first_line(&e.message)),
            None => format!("{n} (not rendered yet)"),
        })
        .collect();
    let total = status.resources.len();
    // DNS names failing to answer while their last good answer still
    // serves: the files are fine for now (a failing one fails its
    // resources, counted above).
    let dns_errors: Vec<String> = status
        .dns
        .iter()
        .filter(|d| !d.failing)
        .filter_map(|d| {
            let e = d.error.as_deref()?;
            Some(format!(
                "{} {} ({}): {}; last good answer {} old",
                d.kind,
                d.name,
                d.resources.join(", "),
                first_line(e),
                ago(d.age.unwrap_or(0))
            ))
        })
        .collect();
    let follows = if status.backend == "file" {
        "the key files"
    } else {
        "etcd"
    };
    // What describes the daemon counts only when a daemon wrote the file.
    let daemon = status.daemon_pid.is_some();
    let stopped = status.stopped.filter(|_| daemon);
    let never_connected = daemon && !status.connected && status.connected_at.is_none();
    let mut code = 0u8;
    let mut parts = Vec::new();
    if !failing.is_empty() {
        code = 2;
        parts.push(format!(
            "{} of {total} resources failing: {}",
            failing.len(),
            failing.join("; ")
        ));
    } else {
        parts.push(format!(
            "{} healthy",
            crate::logging::count(total, "resource")
        ));
    }
    if let (Some(pid), Some(t)) = (status.daemon_pid, stopped) {
        code = 2;
        parts.push(format!(
            "the liveconf daemon (pid {pid}) stopped cleanly at {}: files no longer follow {follows} until it runs again",
            crate::status::format_time(t)
        ));
    } else if let Some(pid) = status.daemon_pid
        && !daemon_running(pid)
    {
        code = 2;
        parts.push(format!(
            "the liveconf daemon (pid {pid}) is not running: files no longer follow {follows}"
        ));
    }
    if let Some(e) = status
        .config_error
        .as_ref()
        .filter(|_| daemon && stopped.is_none())
    {
        code = code.max(1);
        // The file's error cut like every other message; the advice whole.
        let shown = crate::status::ConfigError {
            message: first_line(&e.message).into_owned(),
            ..e.clone()
        };
        parts.push(shown.sentence(status.config_loaded));
    }
    if !dns_errors.is_empty() && daemon && stopped.is_none() {
        code = code.max(1);
        parts.push(format!("DNS look-ups failing: {}", dns_errors.join("; ")));
    }
    let why = status
        .backend_error
        .as_deref()
        .filter(|_| daemon)
        .map(|e| format!(": {}", first_line(e)))
        .unwrap_or_default();
    if stopped.is_some() {
        // Not connected because it stopped: nothing more to say.
    } else if never_connected {
        code = code.max(1);
        parts.push(format!(
            "never connected to the {} backend since the start{}{why}",
            status.backend,
            status
                .started
                .map(|t| format!(" at {}", crate::status::format_time(t)))
                .unwrap_or_default()
        ));
    } else if !status.connected {
        code = code.max(1);
        parts.push(format!("{} backend unavailable{why}", status.backend));
    }
    if let Some(max) = max_age {
        let max = max.as_secs();
        if age > 2 * max {
            code = 2;
            parts.push(format!("older than twice --max-age {}", ago(max)));
        } else if age > max {
            code = code.max(1);
            parts.push(format!("older than --max-age {}", ago(max)));
        }
    }
    let revision = if status.last_event.is_none() && status.started.is_some() {
        // No event at all: the age counts from the start.
        format!(
            "revision {}, no event since the start {} ago",
            status.revision,
            ago(age)
        )
    } else if stopped.is_some() {
        format!(
            "revision {} when it stopped, last event {} ago",
            status.revision,
            ago(age)
        )
    } else {
        format!("revision {}, last event {} ago", status.revision, ago(age))
    };
    parts.insert(
        parts.len() - usize::from(age > max_age.map(|m| m.as_secs()).unwrap_or(u64::MAX)),
        revision,
    );
    Verdict {
        code,
        summary: parts.join("; "),
        status: Some(status),
        age: Some(age),
    }
}

/// Whether `pid` is a running liveconf (the same program as this one, so a
/// recycled pid does not count). Works unprivileged: EPERM means it exists.
pub(crate) fn daemon_running(pid: u32) -> bool {
    use nix::errno::Errno;
    use nix::sys::signal::kill;
    use nix::unistd::Pid;
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    if raw <= 0 {
        return false;
    }
    match kill(Pid::from_raw(raw), None) {
        Ok(()) | Err(Errno::EPERM) => {}
        Err(_) => return false,
    }
    // A zombie (killed, not yet reaped) is not running.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        && let Some(state) = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
        && matches!(state, 'Z' | 'X')
    {
        return false;
    }
    let comm = |p: &str| std::fs::read_to_string(format!("/proc/{p}/comm"));
    match (comm(&pid.to_string()), comm("self")) {
        (Ok(theirs), Ok(ours)) => theirs == ours,
        // No /proc to tell: trust the signal check.
        _ => true,
    }
}

/// How much of a message the one-line views (the summary, the table)
/// show; the JSON output keeps every message whole.
const SHOWN: usize = 200;

/// The first line of `s`, cut at a word boundary within [`SHOWN`]
/// characters, with "…" when anything is left out (the rest of the line,
/// or more lines).
fn first_line(s: &str) -> std::borrow::Cow<'_, str> {
    let s = s.trim();
    let line = s.lines().next().unwrap_or("");
    let more = line.len() < s.len();
    let Some((cut, _)) = line.char_indices().nth(SHOWN) else {
        return if more {
            format!("{line} …").into()
        } else {
            line.into()
        };
    };
    // The last space at or before the cut, unless that leaves too little.
    let head = &line[..cut];
    let head = match head.rfind(char::is_whitespace) {
        Some(i) if i >= SHOWN / 2 => &head[..i],
        _ => head,
    };
    format!("{}…", head.trim_end_matches([' ', ',', ';', ':'])).into()
}

impl Verdict {
    /// `LIVECONF OK - summary | perfdata`.
    pub fn nagios(&self) -> String {
        let (resources, failing) = self
            .status
            .as_ref()
            .map(|s| {
                (
                    s.resources.len(),
                    s.resources.values().filter(|r| !r.healthy).count(),
                )
            })
            .unwrap_or((0, 0));
        let mut line = format!(
            "LIVECONF {} - {}",
            NAMES[self.code.min(3) as usize],
            self.summary
        );
        if let Some(age) = self.age {
            line.push_str(&format!(
                " | resources={resources} failing={failing} age={age}s"
            ));
        }
        line
    }

    /// The verdict and the whole status, as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(&serde_json::json!({
            "state": NAMES[self.code.min(3) as usize],
            "code": self.code,
            "summary": self.summary,
            "age_seconds": self.age,
            "status": self.status,
        }))
        .unwrap_or_default()
    }

    /// A table for people.
    pub fn text(&self) -> String {
        let mut out = format!("{}: {}\n", NAMES[self.code.min(3) as usize], self.summary);
        if let Some(s) = &self.status {
            let daemon = s.daemon_pid.is_some();
            out.push_str(&format!(
                "node {}, backend {} ({}{})\n",
                s.node,
                s.backend,
                if s.moved_to.is_some() {
                    "left behind; it used"
                } else if s.connected {
                    "connected"
                } else if daemon && s.stopped.is_some() {
                    "the daemon stopped; it used"
                } else if daemon && s.connected_at.is_none() {
                    "never connected"
                } else {
                    "unavailable"
                },
                s.endpoint
                    .as_deref()
                    .filter(|e| !e.is_empty())
                    .map(|e| if s.connected {
                        format!(" to {e}")
                    } else if s.moved_to.is_some() || daemon && s.stopped.is_some() {
                        format!(" {e}")
                    } else {
                        format!(": {e}")
                    })
                    .unwrap_or_default()
            ));
            for (name, r) in &s.resources {
                let rev = r
                    .revision
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| "-".into());
                let sha = r
                    .sha256
                    .as_deref()
                    .map(|h| h.chars().take(12).collect::<String>())
                    .unwrap_or_else(|| "-".into());
                out.push_str(&format!(
                    "  {:<4} {name:<24} revision {rev:<8} sha256 {sha:<12} {}{}\n",
                    if r.healthy { "ok" } else { "FAIL" },
                    r.dest.display(),
                    if r.reload_owed { " (reload owed)" } else { "" }
                ));
                if let Some(e) = &r.error {
                    out.push_str(&format!("       {}: {}\n", e.step, first_line(&e.message)));
                }
            }
            if !s.dns.is_empty() {
                out.push_str("DNS dependencies:\n");
            }
            for d in &s.dns {
                let age = d
                    .age
                    .map(|a| format!("{} old", ago(a)))
                    .unwrap_or_else(|| "no answer".into());
                out.push_str(&format!(
                    "  {:<4} {:<6} {:<32} {age}{}, used by {}\n",
                    if d.failing {
                        "FAIL"
                    } else if d.error.is_some() {
                        "WARN"
                    } else {
                        "ok"
                    },
                    d.kind,
                    d.name,
                    // No TTL for a negative answer without an SOA.
                    d.ttl.map(|t| format!(", ttl {t}s")).unwrap_or_default(),
                    d.resources.join(", ")
                ));
                if let Some(e) = &d.error {
                    out.push_str(&format!("       {}\n", first_line(e)));
                }
            }
        }
        out.trim_end().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::ResourceStatus;

    fn write(dir: &Path, healthy: bool, connected: bool, last_event: u64) {
        let mut s = Status {
            backend: "etcd".into(),
            connected,
            last_event: Some(last_event),
            ..Status::default()
        };
        s.resources.insert(
            "x".into(),
            ResourceStatus {
                healthy,
                ..ResourceStatus::default()
            },
        );
        s.write(dir).unwrap();
    }

    #[test]
    fn a_daemon_that_is_gone_is_critical() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), true, true, 1000);
        let mut s = Status::read(d.path()).unwrap();
        // Our own pid: the same program, running.
        s.daemon_pid = Some(std::process::id());
        s.write(d.path()).unwrap();
        assert_eq!(evaluate(d.path(), None, 1000).code, 0);
        // A process that exited, then one that is another program (a
        // recycled pid): both mean the daemon is gone.
        let mut done = std::process::Command::new("true").spawn().unwrap();
        let gone = done.id();
        done.wait().unwrap();
        let mut other = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        for pid in [gone, other.id()] {
            s.daemon_pid = Some(pid);
            s.write(d.path()).unwrap();
            let v = evaluate(d.path(), None, 1000);
            assert_eq!(v.code, 2, "{}", v.summary);
            assert!(v.summary.contains("is not running"), "{}", v.summary);
        }
        let _ = other.kill();
        let _ = other.wait();
        s.daemon_pid = None;
        s.write(d.path()).unwrap();
        assert_eq!(evaluate(d.path(), None, 1000).code, 0);
    }

    /// A status left behind by a daemon whose state_dir changed says where
    /// the live one is, whatever it recorded (a live pid, owed reloads).
    #[test]
    fn a_status_left_behind_points_to_the_new_state_dir() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), true, true, 1000);
        let mut s = Status::read(d.path()).unwrap();
        s.daemon_pid = Some(std::process::id());
        s.write_moved(d.path(), Path::new("/var/lib/liveconf-new"))
            .unwrap();
        let v = evaluate(d.path(), None, 1000);
        assert_eq!(v.code, 3, "{}", v.summary);
        assert!(
            v.summary
                .contains("writes its status to /var/lib/liveconf-new")
                && v.summary.contains("--state-dir /var/lib/liveconf-new"),
            "{}",
            v.summary
        );
        let left = Status::read(d.path()).unwrap();
        assert_eq!(left.daemon_pid, None);
        assert!(v.text().contains("left behind"), "{}", v.text());
        // Whoever writes there again (a daemon switched back, render
        // --once) makes it a live status again.
        let mut again = left.clone();
        again.connected = true;
        again.write(d.path()).unwrap();
        assert_eq!(Status::read(d.path()).unwrap().moved_to, None);
        assert_eq!(evaluate(d.path(), None, 1000).code, 0);
    }

    #[test]
    fn long_messages_are_cut_at_a_word_with_an_ellipsis() {
        let words = "word ".repeat(100);
        let cut = first_line(&words);
        assert!(cut.ends_with("word…"), "{cut}");
        assert!(cut.chars().count() <= SHOWN + 1, "{cut}");
        // One long word: cut inside it, still marked.
        let long = "x".repeat(300);
        assert_eq!(first_line(&long).chars().count(), SHOWN + 1);
        // More lines: the first, marked; a short line whole.
        assert_eq!(first_line("check failed\noutput"), "check failed …");
        assert_eq!(first_line("short message"), "short message");
        // The table shows it cut, the JSON whole.
        let d = tempfile::tempdir().unwrap();
        write(d.path(), false, true, 1000);
        let mut s = Status::read(d.path()).unwrap();
        let message = format!("render failed: {words}end");
        s.resources.get_mut("x").unwrap().error = Some(crate::status::LastError {
            step: crate::apply::Step::Render,
            message: message.clone(),
            at: 1000,
        });
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1000);
        assert!(
            v.text().contains("word word…\n") || v.text().ends_with("word word…"),
            "{}",
            v.text()
        );
        assert!(
            !v.text().contains("wo…") && !v.text().contains(" w…"),
            "{}",
            v.text()
        );
        assert!(v.json().contains(&message));
    }

    #[test]
    fn a_daemon_says_how_it_stopped_connected_and_loaded() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), true, false, 1000);
        let mut s = Status::read(d.path()).unwrap();
        s.daemon_pid = Some(std::process::id());
        s.started = Some(990);
        s.last_event = None;
        s.backend_error = Some("cannot connect to http://127.0.0.1:1: refused".into());
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1004);
        assert_eq!(v.code, 1, "{}", v.summary);
        assert!(
            v.summary.contains(
                "never connected to the etcd backend since the start at 1970-01-01T00:16:30Z: cannot connect"
            ),
            "{}",
            v.summary
        );
        assert!(
            v.summary.contains("no event since the start 14s ago"),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains("last event"), "{}", v.summary);

        // Connected once, then lost: unavailable, and why.
        s.connected_at = Some(995);
        s.last_event = Some(998);
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1004);
        assert!(
            v.summary
                .contains("etcd backend unavailable: cannot connect"),
            "{}",
            v.summary
        );

        // A reload that failed.
        s.connected = true;
        s.config_loaded = Some(990);
        s.config_error = Some(crate::status::ConfigError {
            file: "/etc/liveconf/liveconf.toml".into(),
            message: "line 3: expected a value".into(),
            trigger: "SIGHUP".into(),
            at: 1000,
        });
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1004);
        assert_eq!(v.code, 1, "{}", v.summary);
        assert!(
            v.summary.contains(
                "/etc/liveconf/liveconf.toml could not be loaded at SIGHUP (line 3: expected a value); \
                 still running on the configuration loaded at 1970-01-01T00:16:30Z; fix it and send SIGHUP again"
            ),
            "{}",
            v.summary
        );

        // A long settings-file error is cut at a word, the advice kept.
        let long = "unknown field `wiat`, expected one of ".to_string() + &"`confdir`, ".repeat(40);
        s.config_error.as_mut().unwrap().message = long.clone();
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1004);
        assert!(
            v.summary
                .contains(&format!("({}…)", first_line(&long).trim_end_matches('…'))),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains(&long), "{}", v.summary);
        assert!(
            v.summary.contains("fix it and send SIGHUP again"),
            "{}",
            v.summary
        );

        // Stopped cleanly: said so, and nothing about the connection.
        s.connected = false;
        s.config_error = None;
        s.stopped = Some(1002);
        s.write(d.path()).unwrap();
        let v = evaluate(d.path(), None, 1004);
        assert_eq!(v.code, 2, "{}", v.summary);
        assert!(
            v.summary.contains(&format!(
                "the liveconf daemon (pid {}) stopped cleanly at 1970-01-01T00:16:42Z",
                std::process::id()
            )),
            "{}",
            v.summary
        );
        assert!(!v.summary.contains("unavailable"), "{}", v.summary);

        // What describes a daemon is dropped when render --once writes.
        s.daemon_pid = None;
        s.write(d.path()).unwrap();
        let s = Status::read(d.path()).unwrap();
        assert_eq!((s.stopped, s.connected_at), (None, None));
    }

    #[test]
    fn verdicts_follow_health_connection_and_age() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(evaluate(d.path(), None, 100).code, 3);
        let max = Some(Duration::from_secs(60));
        write(d.path(), true, true, 1000);
        assert_eq!(evaluate(d.path(), max, 1030).code, 0);
        assert_eq!(evaluate(d.path(), max, 1090).code, 1);
        assert_eq!(evaluate(d.path(), max, 1200).code, 2);
        assert_eq!(evaluate(d.path(), None, 99999).code, 0);
        write(d.path(), true, false, 1000);
        assert_eq!(evaluate(d.path(), max, 1000).code, 1);
        write(d.path(), false, true, 1000);
        let v = evaluate(d.path(), max, 1000);
        assert_eq!(v.code, 2);
        assert!(
            v.nagios()
                .starts_with("LIVECONF CRITICAL - 1 of 1 resources failing"),
            "{}",
            v.nagios()
        );
    }
}
