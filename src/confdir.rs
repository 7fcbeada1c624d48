//! The configuration directory: every resource of `conf.d/`, loaded.
//!
//! Each `*.toml` is parsed on its own ([`resource::load`]): a bad file fails
//! that resource only. Two resources writing the same destination are
//! refused (the second one named). `--only` restricts the set, and an
//! unknown name is an error listing the known ones.

use crate::resource::{self, Resource};
use crate::settings::Settings;

/// The directory itself cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfDirError(pub String);

/// The resources of conf.d, loaded; the ones that failed to load come back
/// as outcomes.
pub struct Loaded {
    /// Resources that loaded.
    pub resources: Vec<Resource>,
    /// Load failures.
    pub failed: Vec<resource::ResourceError>,
}

/// Loads conf.d (restricted to `only` when not empty).
pub fn load(s: &Settings, only: &[String]) -> Result<Loaded, ConfDirError> {
    let conf_d = s.conf_d();
    let files = resource::list(&conf_d).map_err(|e| {
        ConfDirError(format!(
            "cannot read resource directory {}: {e}",
            conf_d.display()
        ))
    })?;
    warn_nested(&conf_d);
    let names: Vec<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for o in only {
        if !names.contains(o) {
            return Err(ConfDirError(format!(
                "--only {o}: no resource {o} in {} (there are: {})",
                conf_d.display(),
                names.join(", ")
            )));
        }
    }
    let templates_dir = s.templates_dir();
    let mut loaded = Loaded {
        resources: Vec::new(),
        failed: Vec::new(),
    };
    for (file, name) in files.iter().zip(&names) {
        if !only.is_empty() && !only.contains(name) {
            continue;
        }
        match resource::load(file, &templates_dir, &s.prefix, s.prefix_rule) {
            Ok(r) => match loaded.resources.iter().find(|o| o.dest == r.dest) {
                Some(other) => loaded.failed.push(resource::ResourceError {
                    name: r.name.clone(),
                    file: r.file.clone(),
                    message: format!(
                        "dest {} is also the destination of resource {} ({}); each file must have one owner",
                        r.dest.display(),
                        other.name,
                        other.file.display()
                    ),
                }),
                None => loaded.resources.push(r),
            },
            Err(e) => loaded.failed.push(e),
        }
    }
    if loaded.resources.is_empty() && loaded.failed.is_empty() {
        return Err(ConfDirError(format!(
            "no resource in {} (add NAME.toml files with a [template] table)",
            conf_d.display()
        )));
    }
    Ok(loaded)
}

/// confd also reads `*toml` in subdirectories of conf.d; liveconf reads
/// conf.d itself only. Say so for each such file rather than skip it quietly.
fn warn_nested(conf_d: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(conf_d) else {
        return;
    };
    let mut stack: Vec<std::path::PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for p in entries.filter_map(|e| e.ok()).map(|e| e.path()) {
            if p.is_dir() {
                // Bounded: a symlink loop must not keep us here.
                seen += 1;
                if seen < 1000 {
                    stack.push(p);
                }
            } else if p.to_string_lossy().ends_with("toml") {
                tracing::warn!(
                    "{} is not read: liveconf reads resources from {} itself, not its subdirectories (confd reads both); move it up to use it",
                    p.display(),
                    conf_d.display()
                );
            }
        }
    }
}

/// Every absolute prefix the resources watch, sorted, without repeats.
pub fn watched(resources: &[Resource]) -> Vec<String> {
    let mut w: Vec<String> = resources.iter().flat_map(|r| r.watched.clone()).collect();
    w.sort();
    w.dedup();
    w
}
