//! Owed reloads: the one owner of the fact "this resource's reload is due
//! and has not succeeded", kept in memory and on disk.
//!
//! A reload is owed from the moment its file is installed until the reload
//! command succeeds. [`Owed`] is a set of resource names shared by the
//! driver and its running batches (a cheap clone of one handle), backed by
//! a marker file per resource in `STATE_DIR/reloads-owed/`: written when
//! the reload becomes owed, removed when it succeeds. So the fact survives
//! a crash, a SIGKILL or a stop in between, and the next run, daemon or
//! `render --once`, reloads even though the file compares equal.
//!
//! The drivers ask this module and nothing else: `apply` marks and clears,
//! a batch reads [`Owed::is_owed`], and `status.json`'s `reload_owed` is
//! derived from it when the file is written; the metrics read it at each
//! scrape (`liveconf_resource_reload_owed`, and `liveconf_reloads_total`
//! from the reloads it saw paid). This module must never decide
//! when a reload runs, nor touch anything but its marker directory.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::resource::Resource;

/// The owed reloads of this process: the set in memory is the truth, the
/// marker files persist it (when there is a directory: not under `--noop`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Owed {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    dir: Option<PathBuf>,
    names: BTreeSet<String>,
    /// Per resource: reloads that succeeded in this process (the metrics'
    /// `liveconf_reloads_total`).
    paid: BTreeMap<String, u64>,
}

impl Owed {
    /// The owed reloads recorded in `dir` (none without a directory), plus
    /// `legacy`: names a status.json written by an older liveconf says are
    /// owed, adopted (given a marker) so nothing owed is forgotten.
    pub(crate) fn open(dir: Option<&Path>, legacy: BTreeSet<String>) -> Owed {
        let owed = Owed::default();
        {
            let mut inner = owed.lock();
            inner.dir = dir.map(Path::to_path_buf);
            if let Some(dir) = dir {
                inner.names = markers(dir);
            }
        }
        let new: Vec<String> = legacy.into_iter().filter(|n| !owed.is_owed(n)).collect();
        owed.mark(&new);
        owed
    }

    /// Follows a (re)loaded configuration: markers are read again from
    /// `dir`, and a resource that has no reload command any more owes
    /// nothing (its marker is removed: nothing could pay it). When `dir`
    /// moved with the state directory, what is owed moves with it: each
    /// marker is written in the new directory, then removed from the old
    /// one (so a later switch back finds no stale debt there and runs no
    /// spurious reload).
    pub(crate) fn configure(&self, dir: Option<&Path>, resources: &[Resource]) {
        let old = {
            let mut inner = self.lock();
            let old = inner.dir.clone();
            inner.dir = dir.map(Path::to_path_buf);
            old
        };
        let moved = old.as_deref() != dir;
        if let Some(dir) = dir {
            let on_disk = markers(dir);
            let carried: Vec<String> = if moved {
                self.names().difference(&on_disk).cloned().collect()
            } else {
                Vec::new()
            };
            self.lock().names.extend(on_disk);
            self.mark(&carried);
        }
        if let (true, Some(old)) = (moved, old) {
            for n in self.names() {
                // Kept where the new marker could not be written: the
                // debt must stay on disk somewhere.
                if dir.is_some_and(|d| d.join(&n).exists()) {
                    let _ = std::fs::remove_file(old.join(&n));
                }
            }
            // Gone when nothing else is left in it.
            let _ = std::fs::remove_dir(&old);
        }
        let unpayable: Vec<String> = resources
            .iter()
            .filter(|r| r.reload_cmd.is_none() && self.is_owed(&r.name))
            .map(|r| r.name.clone())
            .collect();
        self.forget(&unpayable);
    }

    /// A reload of `names` is due: owed from now on, a marker each (a
    /// marker that cannot be written is warned about; the reload stays owed
    /// in memory). Touches the disk: call it off the async workers.
    pub(crate) fn mark(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let dir = {
            let mut inner = self.lock();
            inner.names.extend(names.iter().cloned());
            inner.dir.clone()
        };
        let Some(dir) = dir else { return };
        if let Err(e) = std::fs::create_dir_all(&dir) {
            tracing::warn!("cannot record owed reloads in {}: {e}", dir.display());
            return;
        }
        for n in names {
            if let Err(e) = std::fs::write(dir.join(n), b"") {
                tracing::warn!(
                    "cannot record the owed reload of {n} in {}: {e}",
                    dir.display()
                );
            }
        }
    }

    /// The reload of `names` succeeded: nothing is owed any more, and each
    /// counts one reload more ([`Owed::reloads`]). Touches the disk: call it
    /// off the async workers.
    pub(crate) fn clear(&self, names: &[String]) {
        {
            let mut inner = self.lock();
            for n in names {
                *inner.paid.entry(n.clone()).or_default() += 1;
            }
        }
        self.forget(names);
    }

    /// Nothing is owed for `names` any more: their reload can never run.
    fn forget(&self, names: &[String]) {
        if names.is_empty() {
            return;
        }
        let dir = {
            let mut inner = self.lock();
            for n in names {
                inner.names.remove(n);
            }
            inner.dir.clone()
        };
        if let Some(dir) = dir {
            for n in names {
                let _ = std::fs::remove_file(dir.join(n));
            }
        }
    }

    /// Whether `name`'s reload is owed.
    pub(crate) fn is_owed(&self, name: &str) -> bool {
        self.lock().names.contains(name)
    }

    /// Per resource, the reloads that succeeded in this process (a resource
    /// sharing its reload command with others counts each one it took part
    /// in); a resource that never reloaded is absent.
    pub(crate) fn reloads(&self) -> BTreeMap<String, u64> {
        self.lock().paid.clone()
    }

    /// Every owed reload.
    pub(crate) fn names(&self) -> BTreeSet<String> {
        self.lock().names.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The resources whose reload is owed, from the marker files in `dir`.
fn markers(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn resource(name: &str, reload: bool) -> Resource {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        std::fs::write(dir.path().join("t/t.tera"), "").unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        let reload = if reload {
            "reload_cmd = \"true\"\n"
        } else {
            ""
        };
        std::fs::write(
            &file,
            format!(
                "[template]\nsrc = \"t.tera\"\ndest = \"/tmp/{name}\"\nkeys = [\"/\"]\n{reload}"
            ),
        )
        .unwrap();
        crate::resource::load(
            &file,
            &dir.path().join("t"),
            "",
            crate::resource::PrefixRule::Join,
        )
        .unwrap()
    }

    #[test]
    fn marked_is_owed_on_disk_until_cleared_and_survives_a_restart() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("owed");
        let owed = Owed::open(Some(&dir), BTreeSet::new());
        owed.mark(&names(&["a", "b"]));
        assert!(owed.is_owed("a") && dir.join("a").exists());
        // The next process (a restart) finds both.
        let next = Owed::open(Some(&dir), BTreeSet::new());
        assert_eq!(next.names(), BTreeSet::from(["a".into(), "b".into()]));
        next.clear(&names(&["a"]));
        assert!(!next.is_owed("a") && !dir.join("a").exists());
        assert_eq!(markers(&dir), BTreeSet::from(["b".into()]));
    }

    #[test]
    fn a_status_json_owed_reload_is_adopted_and_a_resource_without_reload_owes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("owed");
        let owed = Owed::open(Some(&dir), BTreeSet::from(["x".into(), "y".into()]));
        assert!(dir.join("x").exists() && dir.join("y").exists());
        owed.configure(Some(&dir), &[resource("x", true), resource("y", false)]);
        assert_eq!(owed.names(), BTreeSet::from(["x".into()]));
        assert!(!dir.join("y").exists());
    }

    #[test]
    fn a_new_state_directory_takes_what_is_owed_along() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("old"), d.path().join("new"));
        let owed = Owed::open(Some(&old), BTreeSet::new());
        owed.mark(&names(&["a"]));
        std::fs::create_dir_all(&new).unwrap();
        std::fs::write(new.join("b"), "").unwrap();
        owed.configure(Some(&new), &[resource("a", true), resource("b", true)]);
        assert_eq!(markers(&new), BTreeSet::from(["a".into(), "b".into()]));
        assert_eq!(owed.names(), markers(&new));
        // Moved, not copied: the old directory owes nothing any more, so
        // switching back runs no spurious reload.
        assert!(markers(&old).is_empty() && !old.exists());
        owed.clear(&names(&["a", "b"]));
        owed.configure(Some(&old), &[resource("a", true), resource("b", true)]);
        assert!(owed.names().is_empty());
        assert!(markers(&new).is_empty() && markers(&old).is_empty());
    }

    #[test]
    fn a_cleared_reload_counts_and_a_forgotten_one_does_not() {
        let owed = Owed::open(None, BTreeSet::new());
        owed.mark(&names(&["a", "b"]));
        owed.clear(&names(&["a"]));
        owed.mark(&names(&["a"]));
        owed.clear(&names(&["a"]));
        owed.configure(None, &[resource("b", false)]);
        assert!(owed.names().is_empty());
        assert_eq!(owed.reloads(), BTreeMap::from([("a".into(), 2)]));
    }

    #[test]
    fn without_a_directory_it_is_kept_in_memory() {
        let owed = Owed::open(None, BTreeSet::from(["a".into()]));
        assert!(owed.is_owed("a"));
        owed.clear(&names(&["a"]));
        assert!(owed.names().is_empty());
    }
}
