//! `status.json`: the last outcome of every resource, written atomically.
//!
//! The file is what `liveconf status` and monitoring read: per resource,
//! whether it is healthy, when it last succeeded, the last error (step and
//! message), the revision its file reflects and the sha256 of its content;
//! globally, the backend and its current revision. `reload_owed` is a view
//! of [`Owed`], refreshed from it each time the file is saved.
//!
//! This module records and writes; it must never decide what to render or
//! reload, nor keep a fact of its own about owed reloads.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::{Action, Outcome, Step};
use crate::owed::Owed;

/// status.json could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// The file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a status file.
    #[error("{} is not a valid status file: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The state directory cannot be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file cannot be written or put in place.
    #[error("cannot {what} {}: {source}", path.display())]
    Write {
        /// "write in", "write", "replace".
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The status cannot be encoded (never expected).
    #[error("{0}")]
    Encode(#[from] serde_json::Error),
}

/// The status file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// A resource's last error.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// render, check, install, reload, load.
    pub step: Step,
    /// The message.
    pub message: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// One resource's status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceStatus {
    /// The destination path.
    pub dest: PathBuf,
    /// Whether the last attempt succeeded.
    pub healthy: bool,
    /// Last attempt (Unix seconds), if any.
    #[serde(default)]
    pub last_attempt: Option<u64>,
    /// Last success (Unix seconds), if any.
    pub last_success: Option<u64>,
    /// The revision the installed file reflects (of the last success).
    pub revision: Option<i64>,
    /// sha256 of the installed content (of the last success).
    pub sha256: Option<String>,
    /// The last error, cleared on success.
    pub error: Option<LastError>,
    /// The reload is owed (installed, or failed, and not succeeded since):
    /// the service may still run an older file. Derived from [`Owed`] when
    /// the file is saved (the marker files keep it across restarts); read
    /// back only to adopt what an older liveconf recorded here.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reload_owed: bool,
}

/// A configuration the daemon could not load when told to reload it: it
/// runs on the one it loaded before (`Status::config_loaded`) until a
/// reload succeeds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigError {
    /// What failed to load: the settings file, or the `conf.d/` directory.
    pub file: String,
    /// Why (one line).
    pub message: String,
    /// What asked for the reload: "SIGHUP", or "a change in the
    /// configuration directory" (`watch_confdir`).
    pub trigger: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// The whole status file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// This host's name.
    pub node: String,
    /// "etcd" or "file".
    pub backend: String,
    /// Whether the backend is reachable (the daemon's view).
    pub connected: bool,
    /// The endpoint in use, if any.
    pub endpoint: Option<String>,
    /// The newest revision seen.
    pub revision: i64,
    /// Last event or progress notification (Unix seconds).
    pub last_event: Option<u64>,
    /// When this file was written (Unix seconds).
    pub updated: u64,
    /// The pid of the `liveconf render` daemon writing this file; absent
    /// when `render --once` wrote it. `liveconf status` checks that this
    /// process still runs: a dead daemon leaves files that no longer follow
    /// etcd, which must not pass for healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon_pid: Option<u32>,
    /// When that daemon started (Unix seconds): until it hears from the
    /// backend, ages count from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<u64>,
    /// When the daemon's running configuration (settings, conf.d,
    /// templates) was loaded (Unix seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_loaded: Option<u64>,
    /// The last reload failed: the daemon runs on the configuration loaded
    /// at `config_loaded`. Cleared by the next successful reload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_error: Option<ConfigError>,
    /// When the daemon last connected to the backend (Unix seconds);
    /// absent while it has not connected since it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connected_at: Option<u64>,
    /// Why the backend is unavailable (its last error), while it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend_error: Option<String>,
    /// When the daemon stopped cleanly (SIGTERM, SIGINT), Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped: Option<u64>,
    /// The daemon writes its status in this other state directory now
    /// (`state_dir` changed on SIGHUP): this file is left behind, and
    /// `liveconf status` says where to look instead of judging it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathBuf>,
    /// Per resource.
    pub resources: BTreeMap<String, ResourceStatus>,
    /// The DNS names the daemon's renders looked up (their dependencies):
    /// answer, its age and TTL, the last error. See the README's "DNS as
    /// live state".
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<crate::dnsdeps::DepStatus>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `secs` (Unix seconds) as people read it: `2026-03-01T12:00:05Z`.
pub fn format_time(secs: u64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + std::time::Duration::from_secs(secs)).to_string()
}

impl ConfigError {
    /// What happened and what to do, in one sentence: "FILE could not be
    /// loaded at SIGHUP (WHY); still running on the configuration loaded
    /// at T; fix it and send SIGHUP again". `loaded`: when the running
    /// configuration was loaded.
    pub fn sentence(&self, loaded: Option<u64>) -> String {
        let signal = self.trigger == "SIGHUP";
        format!(
            "{} could not be loaded {} ({}); still running on the configuration{}; {}",
            self.file,
            if signal {
                "at SIGHUP".to_string()
            } else {
                format!("after {}", self.trigger)
            },
            crate::logging::one_line(&self.message),
            loaded
                .map(|t| format!(" loaded at {}", format_time(t)))
                .unwrap_or_default(),
            if signal {
                "fix it and send SIGHUP again"
            } else {
                "fix it (liveconf reloads when the directory changes) or send SIGHUP"
            }
        )
    }
}

impl Status {
    /// Reads `DIR/status.json`; a missing or unreadable file is an empty status.
    pub fn read(state_dir: &Path) -> Result<Status, StatusError> {
        let path = state_dir.join(STATUS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(source) => return Err(StatusError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| StatusError::Parse { path, source })
    }

    /// Records the outcomes of a batch.
    pub fn record(&mut self, outcomes: &[Outcome]) {
        let t = now();
        for o in outcomes {
            let entry = self.resources.entry(o.name.clone()).or_default();
            // A load failure knows no destination: keep the one on record.
            if !o.dest.as_os_str().is_empty() {
                entry.dest = o.dest.clone();
            }
            entry.last_attempt = Some(t);
            match &o.result {
                // --noop: rendered fine; the file is not ours to change.
                Ok(Action::WouldChange) => {
                    entry.healthy = true;
                    entry.error = None;
                }
                Ok(_) => {
                    entry.healthy = true;
                    entry.last_success = Some(t);
                    entry.revision = Some(o.revision);
                    entry.sha256 = o.sha256.clone();
                    entry.error = None;
                }
                Err(f) => {
                    entry.healthy = false;
                    if f.step == Step::Reload {
                        // The file is in place; only the service lags.
                        entry.revision = Some(o.revision)
                            .filter(|_| o.sha256.is_some())
                            .or(entry.revision);
                        entry.sha256 = o.sha256.clone().or(entry.sha256.take());
                    }
                    entry.error = Some(LastError {
                        step: f.step,
                        message: f.message.clone(),
                        at: t,
                    });
                }
            }
        }
    }

    /// `o`'s own steps just ended (its batch may still be running its
    /// reload, or waiting out its splay): the entry describes what is on
    /// disk at once. A file installed, or found up to date, is a success of
    /// the render and install steps: an earlier render, install or check
    /// error is over, and a resource "not rendered yet" is healthy now. Only
    /// a reload failure stays (the reload is still owed: `reload_owed`);
    /// its new verdict is recorded when the batch ends. A failure is
    /// recorded as it is.
    pub fn installed(&mut self, o: &Outcome) {
        if !matches!(o.result, Ok(Action::Installed | Action::Unchanged)) {
            if o.result.is_err() {
                self.record(std::slice::from_ref(o));
            }
            return;
        }
        let entry = self.resources.entry(o.name.clone()).or_default();
        entry.dest = o.dest.clone();
        entry.revision = Some(o.revision);
        entry.sha256 = o.sha256.clone();
        let at = now();
        entry.last_attempt = Some(at);
        if entry.error.as_ref().is_some_and(|e| e.step != Step::Reload) {
            entry.error = None;
        }
        if entry.error.is_none() {
            // Healthy means its last attempt succeeded: say when, so a
            // status written between the install and the batch's end is
            // consistent (healthy with a last_success).
            entry.healthy = true;
            entry.last_success = Some(at);
        }
    }

    /// The owed reloads this status recorded when it was read (to adopt
    /// those of a status.json written before the marker files existed).
    pub fn reloads_owed(&self) -> std::collections::BTreeSet<String> {
        self.resources
            .iter()
            .filter(|(_, r)| r.reload_owed)
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Keeps only the named resources (drops those no longer configured).
    pub fn retain(&mut self, names: &[&str]) {
        self.resources.retain(|k, _| names.contains(&k.as_str()));
    }

    /// Writes `DIR/status.json` with `reload_owed` as `owed` says.
    pub fn save(&mut self, state_dir: &Path, owed: &Owed) -> Result<(), StatusError> {
        for (name, entry) in self.resources.iter_mut() {
            entry.reload_owed = owed.is_owed(name);
        }
        self.write(state_dir)
    }

    /// Writes `DIR/status.json` atomically (stage, rename) as it is: the
    /// status of whoever writes there now (never a pointer elsewhere).
    pub fn write(&mut self, state_dir: &Path) -> Result<(), StatusError> {
        self.moved_to = None;
        self.write_as_is(state_dir)
    }

    /// Leaves `DIR/status.json` behind when the daemon moves to the state
    /// directory `to`: the last status written there, marked as moved (no
    /// daemon pid, not connected, nothing owed: the owed-reload markers
    /// moved too), so monitoring still pointed at DIR is told where to look
    /// instead of judging a file nobody updates.
    pub fn write_moved(&self, state_dir: &Path, to: &Path) -> Result<(), StatusError> {
        let mut left = self.clone();
        left.daemon_pid = None;
        left.connected = false;
        for r in left.resources.values_mut() {
            r.reload_owed = false;
        }
        left.moved_to = Some(to.to_path_buf());
        left.write_as_is(state_dir)
    }

    fn write_as_is(&mut self, state_dir: &Path) -> Result<(), StatusError> {
        self.updated = now();
        if self.daemon_pid.is_none() {
            // What describes a daemon is not carried over by a one-shot
            // run (render --once) writing after it.
            self.config_loaded = None;
            self.config_error = None;
            self.connected_at = None;
            self.backend_error = None;
            self.stopped = None;
        }
        std::fs::create_dir_all(state_dir).map_err(|source| StatusError::CreateDir {
            path: state_dir.to_path_buf(),
            source,
        })?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".status.json.")
            .suffix(crate::install::STAGE_SUFFIX)
            .rand_bytes(8)
            .tempfile_in(state_dir)
            .map_err(|source| StatusError::Write {
                what: "write in",
                path: state_dir.to_path_buf(),
                source,
            })?;
        let body = serde_json::to_vec_pretty(self)?;
        // No fsync: the rename is atomic (readers see the old or the new
        // status, never a mix); after a power cut the daemon rewrites it
        // within seconds. Skipping it keeps status off the disk's queue.
        if let Err(source) = tmp.write_all(&body).and_then(|_| tmp.write_all(b"\n")) {
            return Err(StatusError::Write {
                what: "write",
                path: tmp.path().to_path_buf(),
                source,
            });
        }
        // Monitoring runs as another user: the status is world-readable
        // (it holds no secret: errors never include credentials).
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
        let dest = state_dir.join(STATUS_FILE);
        tmp.persist(&dest).map_err(|e| StatusError::Write {
            what: "replace",
            path: dest.clone(),
            source: e.error,
        })?;
        Ok(())
    }
}
