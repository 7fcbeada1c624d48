//! Owed reloads: the one place that knows which resources' reload is due
//! and has not succeeded, and keeps that fact on disk.
//!
//! A reload is owed from the moment its file is installed until the reload
//! command succeeds. The fact is a marker file per resource in
//! `STATE_DIR/reloads-owed/` (written before the reload runs, removed when it
//! succeeds), so it survives a crash, a SIGKILL or a stop in between: the next
//! run, daemon or `render --once`, reloads even though the file compares
//! equal. `status.json`'s `reload_owed` and the daemon's retry schedule are
//! views of it, refreshed from here.

use std::path::Path;

use crate::resource::Resource;

/// The resources whose reload is owed, from the marker files in `dir`.
pub fn markers(dir: &Path) -> std::collections::BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// A reload of `names` is due: a marker each, written before the reload
/// runs (or waits out its splay), so a crash or a stop leaves it owed.
pub fn mark(dir: Option<&Path>, names: &[String]) {
    if let Some(dir) = dir {
        if let Err(e) = std::fs::create_dir_all(dir) {
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
}

/// Whether `name`'s reload is owed (its marker exists in `dir`).
pub fn is_owed(dir: &Path, name: &str) -> bool {
    dir.join(name).exists()
}

/// The owed reloads of `resources` (markers in `dir`, when given, plus
/// `also`); a marker of a resource that has no reload command any more is
/// removed, as nothing can pay it.
pub fn owed(
    dir: Option<&Path>,
    resources: &[Resource],
    also: std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut owed = also;
    if let Some(dir) = dir {
        owed.extend(markers(dir));
        for r in resources.iter().filter(|r| r.reload_cmd.is_none()) {
            if owed.remove(&r.name) {
                clear(Some(dir), std::slice::from_ref(&r.name));
            }
        }
    }
    owed.retain(|n| {
        resources
            .iter()
            .any(|r| &r.name == n && r.reload_cmd.is_some())
    });
    owed
}

/// The reload of `names` succeeded: nothing is owed any more.
pub fn clear(dir: Option<&Path>, names: &[String]) {
    if let Some(dir) = dir {
        for n in names {
            let _ = std::fs::remove_file(dir.join(n));
        }
    }
}
