//! The template set: every file under `templates/`, compiled once.
//!
//! Each file is first parsed on its own, so a syntax error is reported
//! against the resources that use that template (naming the template and
//! line) and does not stop the others. The files that parse are then
//! compiled into one Tera instance (so `include`/`extends` work), with
//! liveconf's functions registered and HTML escaping off for every name.
//!
//! Every file is also parsed as a Go template (confd's engine, see
//! [`crate::gotemplate`]), on its own and named by its base name as confd
//! names it; a resource uses one or the other according to its engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::gotemplate::{self, GoTemplate, GoTemplateError};

/// Why a template cannot be used, on one line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateProblem {
    /// No such file under the templates directory.
    #[error("template {name} not found in {}", dir.display())]
    NotFound {
        /// The template, as the resource names it.
        name: String,
        /// The templates directory.
        dir: PathBuf,
    },
    /// The file (or the templates directory) could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Unreadable {
        /// What could not be read.
        path: PathBuf,
        /// Why.
        source: Arc<std::io::Error>,
    },
    /// Tera refused it: a syntax error, or a missing include or parent
    /// (see [`describe`]).
    #[error("{0}")]
    Tera(String),
    /// It does not parse as a Go template.
    #[error(transparent)]
    Go(#[from] GoTemplateError),
}

/// The compiled templates, and the ones that failed to compile.
#[derive(Clone)]
pub struct TemplateSet {
    tera: Arc<tera::Tera>,
    broken: BTreeMap<String, TemplateProblem>,
    /// Every file parsed as a Go template, or why it does not parse.
    go: Arc<BTreeMap<String, Result<GoTemplate, TemplateProblem>>>,
    dir: PathBuf,
}

/// A fresh Tera with liveconf's functions and no autoescaping.
pub fn new_tera() -> tera::Tera {
    let mut tera = tera::Tera::new();
    tera.autoescape_on(Vec::<&'static str>::new());
    crate::functions::register(&mut tera);
    tera
}

/// Tera's error, flattened to one line: "template T line L, column C: message".
pub fn describe(e: &tera::Error) -> String {
    let mut s = match e.kind() {
        tera::ErrorKind::SyntaxError(r) | tera::ErrorKind::RenderingError(r) => {
            let sp = r.span();
            format!(
                "template {} line {}, column {}: {}",
                r.filename(),
                sp.start_line,
                sp.start_col + 1,
                r.message().trim()
            )
        }
        _ => one_report_line(&e.to_string()),
    };
    crate::logging::push_causes(&mut s, std::error::Error::source(e));
    s.replace('\n', " ")
}

/// Tera's multi-line report ("error: MESSAGE", "--> FILE:LINE:COL", source
/// and carets) as "template FILE line L, column C: MESSAGE". Text that is
/// not such a report is returned trimmed.
fn one_report_line(report: &str) -> String {
    let mut lines = report.lines().map(str::trim);
    let message = lines
        .next()
        .unwrap_or("")
        .trim_start_matches("error:")
        .trim();
    let location = lines.find_map(|l| l.strip_prefix("-->")).map(str::trim);
    match location.and_then(|l| {
        let mut parts = l.rsplitn(3, ':');
        let col: usize = parts.next()?.parse().ok()?;
        let line = parts.next()?;
        Some(format!(
            "template {} line {line}, column {col}: {message}",
            parts.next()?
        ))
    }) {
        Some(s) => s,
        None => report.trim().replace('\n', " "),
    }
}

fn unreadable(path: &Path, e: std::io::Error) -> TemplateProblem {
    TemplateProblem::Unreadable {
        path: path.to_path_buf(),
        source: Arc::new(e),
    }
}

/// Templates under `dir` (recursively, following symlinks, skipping
/// dot-files) into `out`; symlinks that lead nowhere into `dangling`.
fn collect(
    dir: &Path,
    base: &Path,
    out: &mut Vec<(String, PathBuf)>,
    dangling: &mut Vec<(String, PathBuf)>,
) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let rel = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if path.is_dir() {
            collect(&path, base, out, dangling)?;
        } else if path.is_file() {
            out.push((rel, path));
        } else if let Ok(target) = std::fs::read_link(&path) {
            dangling.push((rel, target));
        }
    }
    Ok(())
}

impl TemplateSet {
    /// An empty set (for resources that use `format` only).
    pub fn empty() -> TemplateSet {
        TemplateSet {
            tera: Arc::new(new_tera()),
            broken: BTreeMap::new(),
            go: Arc::new(BTreeMap::new()),
            dir: PathBuf::new(),
        }
    }

    /// Loads every template under `dir`. A missing directory is an empty set.
    pub fn load(dir: &Path) -> TemplateSet {
        let mut files = Vec::new();
        let mut dangling = Vec::new();
        let mut broken = BTreeMap::new();
        if dir.is_dir()
            && let Err(e) = collect(dir, dir, &mut files, &mut dangling)
        {
            broken.insert(String::new(), unreadable(dir, e));
        }
        files.sort();
        let mut good: Vec<(String, String)> = Vec::new();
        let mut go = BTreeMap::new();
        for (name, path) in files {
            match std::fs::read_to_string(&path) {
                Ok(text) => {
                    let base = name.rsplit('/').next().unwrap_or(&name);
                    go.insert(
                        name.clone(),
                        gotemplate::parse(base, &text).map_err(Into::into),
                    );
                    let mut alone = new_tera();
                    match alone.add_raw_template(&name, &text) {
                        Err(e) if matches!(e.kind(), tera::ErrorKind::SyntaxError(_)) => {
                            broken.insert(name, TemplateProblem::Tera(describe(&e)));
                        }
                        _ => good.push((name, text)),
                    }
                }
                Err(e) => {
                    let why = unreadable(&path, e);
                    go.insert(name.clone(), Err(why.clone()));
                    broken.insert(name, why);
                }
            }
        }
        let mut tera = new_tera();
        if tera
            .add_raw_templates(good.iter().map(|(n, t)| (n.as_str(), t.as_str())))
            .is_err()
        {
            // An inheritance problem (missing parent, include cycle): add them
            // one by one so only the templates involved are marked broken.
            tera = new_tera();
            for (n, t) in &good {
                let mut trial = tera.clone();
                match trial.add_raw_template(n, t) {
                    Ok(()) => tera = trial,
                    Err(e2) => {
                        broken.insert(n.clone(), TemplateProblem::Tera(describe(&e2)));
                    }
                }
            }
        }
        // A symlink that leads nowhere (a copied example whose `lib` link
        // was relative) is named, and so is every error it explains. Tera
        // names the template it could not find only in its message text
        // (its `Template`'s includes and parents are private), so the
        // message is what is searched for the link's path.
        for (rel, target) in &dangling {
            tracing::warn!(
                "templates: {} is a symlink to {}, which does not exist",
                dir.join(rel).display(),
                target.display()
            );
            for problem in broken.values_mut() {
                let TemplateProblem::Tera(message) = problem else {
                    continue;
                };
                if message.contains(&format!("{rel}/")) || message.contains(&format!("`{rel}`")) {
                    message.push_str(&format!(
                        " ({} is a symlink to {}, which does not exist)",
                        dir.join(rel).display(),
                        target.display()
                    ));
                }
            }
        }
        TemplateSet {
            tera: Arc::new(tera),
            broken,
            go: Arc::new(go),
            dir: dir.to_path_buf(),
        }
    }

    /// The compiled Tera instance.
    pub fn tera(&self) -> &tera::Tera {
        &self.tera
    }

    /// The Go template `name`, or why it cannot be used.
    pub fn go(&self, name: &str) -> Result<&GoTemplate, TemplateProblem> {
        match self.go.get(name) {
            Some(Ok(t)) => Ok(t),
            Some(Err(e)) => Err(e.clone()),
            None => Err(self.not_found(name)),
        }
    }

    /// Why `name` cannot be used (as a Tera template), if it cannot.
    pub fn problem(&self, name: &str) -> Option<TemplateProblem> {
        if let Some(e) = self.broken.get(name) {
            return Some(e.clone());
        }
        if !self.tera.contains_template(name) {
            return Some(self.not_found(name));
        }
        None
    }

    /// Every template under the directory that no resource in `resources`
    /// uses and that does not parse, with why, sorted by name: as a Go
    /// template for a `.tmpl` file (confd's convention), as Tera otherwise.
    /// (A used template's problem fails its resources at render instead.)
    pub fn unused_broken(
        &self,
        resources: &[crate::resource::Resource],
    ) -> Vec<(String, TemplateProblem)> {
        use crate::resource::{Engine, Source};
        let used: std::collections::BTreeSet<&str> = resources
            .iter()
            .filter_map(|r| match &r.source {
                Source::Template(name, _) => Some(name.as_str()),
                Source::Format(..) => None,
            })
            .collect();
        let names: std::collections::BTreeSet<&String> =
            self.go.keys().chain(self.broken.keys()).collect();
        names
            .into_iter()
            .filter(|n| !used.contains(n.as_str()))
            .filter_map(|n| {
                let problem = if n.is_empty() {
                    // The directory itself could not be read.
                    self.broken.get(n).cloned()
                } else if Engine::for_src(n) == Engine::Go {
                    self.go(n).err()
                } else {
                    self.problem(n)
                };
                Some((n.clone(), problem?))
            })
            .collect()
    }

    /// The templates directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn not_found(&self, name: &str) -> TemplateProblem {
        TemplateProblem::NotFound {
            name: name.to_string(),
            dir: self.dir.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_symlink_is_named_in_the_errors_it_causes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.tera"), "{% include \"lib/x.tera\" %}\n").unwrap();
        std::os::unix::fs::symlink("../../nowhere", dir.path().join("lib")).unwrap();
        let set = TemplateSet::load(dir.path());
        let p = set.problem("a.tera").unwrap().to_string();
        assert!(
            p.contains("lib/x.tera") && p.contains("is a symlink to ../../nowhere"),
            "{p}"
        );
    }

    #[test]
    fn unused_broken_templates_are_listed_in_their_own_engine() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w("used.tera", "{% if %}\n");
        w("ok.tera", "{{ 1 }}\n");
        w("bad.tera", "line 1\n{% for x in %}\n");
        w("ok.tmpl", "{{getv \"/x\"}}\n");
        w("bad.tmpl", "{{range}}\n");
        let set = TemplateSet::load(dir.path());
        let conf = dir.path().join("r.toml");
        std::fs::write(
            &conf,
            "[template]\nsrc = \"used.tera\"\ndest = \"/x\"\nkeys = [\"/\"]\n",
        )
        .unwrap();
        let r = crate::resource::load(&conf, dir.path(), "", Default::default()).unwrap();
        let found = set.unused_broken(&[r]);
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bad.tera", "bad.tmpl"]);
        assert!(
            found[0]
                .1
                .to_string()
                .starts_with("template bad.tera line 2"),
            "{}",
            found[0].1
        );
        assert!(
            found[1].1.to_string().contains("bad.tmpl:1"),
            "{}",
            found[1].1
        );
    }

    #[test]
    fn a_missing_include_is_one_line_naming_template_and_line() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("a.tera"),
            "x\n{% include \"lib/gone.tera\" %}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("b.tera"), "fine\n").unwrap();
        let set = TemplateSet::load(dir.path());
        let p = set.problem("a.tera").unwrap().to_string();
        assert!(!p.contains('\n'), "{p}");
        assert!(p.starts_with("template a.tera line 2, column"), "{p}");
        assert!(p.contains("lib/gone.tera"), "{p}");
        assert!(set.problem("b.tera").is_none());
    }
}
