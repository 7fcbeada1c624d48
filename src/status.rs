//! `status.json`: the last outcome of every resource, written atomically.
//!
//! The file is what `liveconf status` and monitoring read: per resource,
//! whether it is healthy, when it last succeeded, the last error (step and
//! message), the revision its file reflects and the sha256 of its content;
//! globally, the backend and its current revision.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::apply::{Action, Outcome, Step};

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
    /// The reload command failed and has not succeeded since: the service
    /// may still run an older file. Kept across restarts so the next run
    /// (daemon or `render --once`) reloads even if the file is unchanged.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reload_owed: bool,
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
    /// Per resource.
    pub resources: BTreeMap<String, ResourceStatus>,
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Status {
    /// Reads `DIR/status.json`; a missing or unreadable file is an empty status.
    pub fn read(state_dir: &Path) -> Result<Status, String> {
        let p = state_dir.join(STATUS_FILE);
        let text =
            std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
        serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a valid status file: {e}", p.display()))
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
                    // A splayed reload still to run is owed until it does.
                    entry.reload_owed = o.reload_pending;
                }
                Err(f) => {
                    entry.healthy = false;
                    if f.step == Step::Reload {
                        // The file is in place; only the service lags.
                        entry.reload_owed = true;
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

    /// `o`'s file was just installed (its batch may still be running its
    /// reload, due when `reload_due`): the entry describes what is on disk.
    /// A resource "not rendered yet" (no error on record) is healthy now; a
    /// reload failure, if any, is recorded when the batch ends.
    pub fn installed(&mut self, o: &Outcome, reload_due: bool) {
        let entry = self.resources.entry(o.name.clone()).or_default();
        entry.dest = o.dest.clone();
        entry.revision = Some(o.revision);
        entry.sha256 = o.sha256.clone();
        let at = now();
        entry.last_attempt = Some(at);
        if entry.error.is_none() {
            // Healthy means its last attempt succeeded: say when, so a
            // status written between the install and the batch's end is
            // consistent (healthy with a last_success).
            entry.healthy = true;
            entry.last_success = Some(at);
        }
        entry.reload_owed |= reload_due;
    }

    /// Makes `reload_owed` follow the owed-reload markers in `dir` for the
    /// resources of `outcomes` (the markers are the truth: `--no-reload`,
    /// a failing check or a stop can leave a reload owed).
    pub fn owed_from_markers(&mut self, dir: Option<&Path>, outcomes: &[Outcome]) {
        let Some(dir) = dir else { return };
        for o in outcomes {
            if let Some(entry) = self.resources.get_mut(&o.name) {
                entry.reload_owed = crate::owed::is_owed(dir, &o.name);
            }
        }
    }

    /// The resources whose last reload failed and is still owed.
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

    /// Writes `DIR/status.json` atomically (stage, fsync, rename).
    pub fn write(&mut self, state_dir: &Path) -> Result<(), String> {
        self.updated = now();
        std::fs::create_dir_all(state_dir)
            .map_err(|e| format!("cannot create state directory {}: {e}", state_dir.display()))?;
        let mut tmp = tempfile::Builder::new()
            .prefix(".status.json.")
            .suffix(crate::install::STAGE_SUFFIX)
            .rand_bytes(8)
            .tempfile_in(state_dir)
            .map_err(|e| format!("cannot write in {}: {e}", state_dir.display()))?;
        let body = serde_json::to_vec_pretty(self).map_err(|e| e.to_string())?;
        // No fsync: the rename is atomic (readers see the old or the new
        // status, never a mix); after a power cut the daemon rewrites it
        // within seconds. Skipping it keeps status off the disk's queue.
        tmp.write_all(&body)
            .and_then(|_| tmp.write_all(b"\n"))
            .map_err(|e| format!("cannot write {}: {e}", tmp.path().display()))?;
        // Monitoring runs as another user: the status is world-readable
        // (it holds no secret: errors never include credentials).
        use std::os::unix::fs::PermissionsExt;
        let _ = tmp
            .as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644));
        let dest = state_dir.join(STATUS_FILE);
        tmp.persist(&dest)
            .map_err(|e| format!("cannot replace {}: {}", dest.display(), e.error))?;
        Ok(())
    }
}
