//! The file backend: keys from YAML, JSON or TOML files.
//!
//! Nested maps become `/`-separated keys (`{a: {b: 1}}` → `/a/b = "1"`),
//! lists become numbered children (`/a/0`, `/a/1`), scalars become their
//! text (`true`, `1.5`, `null` → empty string). Several files merge in the
//! order given; a later file's key replaces an earlier one's. The format is
//! chosen by extension (`.yaml`/`.yml`, `.json`, `.toml`).

use std::path::{Path, PathBuf};

use crate::store::{Key, Snapshot, Val};

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum FileBackendError {
    /// The file could not be read.
    #[error("cannot read key file {}: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid in its format.
    #[error("invalid key file {}: {message}", path.display())]
    Parse {
        /// The key file.
        path: PathBuf,
        /// What the parser said (with line and column).
        message: String,
    },
    /// The extension does not say which format the file is in.
    #[error("key file {}: unknown format (use .yaml, .yml, .json or .toml)", path.display())]
    UnknownFormat {
        /// The key file.
        path: PathBuf,
    },
}

/// Reads every file and merges their keys into one snapshot at `revision`.
pub fn load(paths: &[PathBuf], revision: i64) -> Result<Snapshot, FileBackendError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for path in paths {
        read_one(path, &mut pairs)?;
    }
    Ok(Snapshot::from_pairs(
        revision,
        pairs
            .into_iter()
            .map(|(k, v)| (Key::from(k), Val::from(v.into_bytes()))),
    ))
}

fn read_one(path: &Path, out: &mut Vec<(String, String)>) -> Result<(), FileBackendError> {
    let text = std::fs::read_to_string(path).map_err(|source| FileBackendError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |message: String| FileBackendError::Parse {
        path: path.to_path_buf(),
        message,
    };
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    // A truncated file (an editor or a deploy caught half-way) must not
    // read as "no keys": that would empty every rendered file.
    if text.trim().is_empty() {
        return Err(parse_err(if ext == "toml" {
            "the file is empty (a TOML key file must hold at least one key)".into()
        } else {
            "the file is empty (write {} for a key file that holds no keys)".into()
        }));
    }
    let not_a_map =
        |what: &str| parse_err(format!("the top level must be a map of keys, not {what}"));
    match ext.as_str() {
        "yaml" | "yml" => {
            let mut v: serde_yaml_ng::Value =
                serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            // `<<: *defaults` merges, as YAML users expect (not a key "<<").
            v.apply_merge()
                .map_err(|e| parse_err(format!("merge key `<<`: {e}")))?;
            match &v {
                serde_yaml_ng::Value::Mapping(_) => {}
                serde_yaml_ng::Value::Null => return Err(not_a_map("an empty document")),
                serde_yaml_ng::Value::Sequence(_) => return Err(not_a_map("a list")),
                _ => return Err(not_a_map("a single value")),
            }
            flatten_yaml(String::new(), &v, out).map_err(|e| parse_err(e.to_string()))
        }
        "json" => {
            let v: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| parse_err(e.to_string()))?;
            match &v {
                serde_json::Value::Object(_) => {}
                serde_json::Value::Array(_) => return Err(not_a_map("a list")),
                serde_json::Value::Null => return Err(not_a_map("null")),
                _ => return Err(not_a_map("a single value")),
            }
            flatten_json(String::new(), &v, out);
            Ok(())
        }
        "toml" => {
            let v: toml::Table = toml::from_str(&text)
                .map_err(|e| parse_err(crate::resource::toml_error(&text, &e)))?;
            if v.is_empty() {
                return Err(parse_err("the file holds no keys (only comments?)".into()));
            }
            flatten_toml(String::new(), &toml::Value::Table(v), out);
            Ok(())
        }
        _ => Err(FileBackendError::UnknownFormat {
            path: path.to_path_buf(),
        }),
    }
}

fn child(base: &str, name: &str) -> String {
    format!("{base}/{}", name.trim_matches('/'))
}

fn leaf(path: String, value: String, out: &mut Vec<(String, String)>) {
    out.push((if path.is_empty() { "/".into() } else { path }, value));
}

/// A YAML map key that cannot name a key (a list, a map, null).
#[derive(Debug, thiserror::Error)]
#[error("under {under}: a map key must be a string, number or bool, not {key}")]
struct BadYamlKey {
    /// The map it is in.
    under: String,
    /// The key, as YAML values print.
    key: String,
}

fn flatten_yaml(
    path: String,
    v: &serde_yaml_ng::Value,
    out: &mut Vec<(String, String)>,
) -> Result<(), BadYamlKey> {
    use serde_yaml_ng::Value as Y;
    match v {
        Y::Mapping(m) => {
            for (k, v) in m {
                let name = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    other => {
                        return Err(BadYamlKey {
                            under: if path.is_empty() { "/" } else { &path }.to_string(),
                            key: format!("{other:?}"),
                        });
                    }
                };
                flatten_yaml(child(&path, &name), v, out)?;
            }
        }
        Y::Sequence(s) => {
            for (i, v) in s.iter().enumerate() {
                flatten_yaml(child(&path, &i.to_string()), v, out)?;
            }
        }
        Y::String(s) => leaf(path, s.clone(), out),
        Y::Number(n) => leaf(path, number_text(n), out),
        Y::Bool(b) => leaf(path, b.to_string(), out),
        Y::Null => leaf(path, String::new(), out),
        Y::Tagged(t) => flatten_yaml(path, &t.value, out)?,
    }
    Ok(())
}

/// A YAML number as confd's file backend writes it: integers in decimal,
/// floats as Go's `strconv.FormatFloat(f, 'f', -1, 64)` (shortest, never an
/// exponent: `2.0` → `2`, `1e3` → `1000`, `1.10` → `1.1`).
fn number_text(n: &serde_yaml_ng::Number) -> String {
    match n.as_f64() {
        Some(f) if n.is_f64() => {
            if f.is_nan() {
                "NaN".into()
            } else if f.is_infinite() {
                if f > 0.0 { "+Inf" } else { "-Inf" }.into()
            } else {
                // Rust's Display of f64 is the shortest round-trip form
                // without an exponent, as Go's 'f' with precision -1.
                format!("{f}")
            }
        }
        _ => n.to_string(),
    }
}

fn flatten_json(path: String, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    use serde_json::Value as J;
    match v {
        J::Object(m) => m
            .iter()
            .for_each(|(k, v)| flatten_json(child(&path, k), v, out)),
        J::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten_json(child(&path, &i.to_string()), v, out)),
        J::String(s) => leaf(path, s.clone(), out),
        J::Number(n) => leaf(path, n.to_string(), out),
        J::Bool(b) => leaf(path, b.to_string(), out),
        J::Null => leaf(path, String::new(), out),
    }
}

fn flatten_toml(path: String, v: &toml::Value, out: &mut Vec<(String, String)>) {
    use toml::Value as T;
    match v {
        T::Table(m) => m
            .iter()
            .for_each(|(k, v)| flatten_toml(child(&path, k), v, out)),
        T::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten_toml(child(&path, &i.to_string()), v, out)),
        T::String(s) => leaf(path, s.clone(), out),
        T::Integer(n) => leaf(path, n.to_string(), out),
        T::Float(n) => leaf(path, n.to_string(), out),
        T::Boolean(b) => leaf(path, b.to_string(), out),
        T::Datetime(d) => leaf(path, d.to_string(), out),
    }
}

/// Quiet period after a key file event before the files are read again, so
/// an editor's write-rename-chmod sequence is read once, complete.
pub const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// Key files as a [`super::Backend`].
pub struct FileBackend {
    /// The key files, merged in this order.
    files: Vec<PathBuf>,
}

impl FileBackend {
    /// The key files the settings name.
    pub fn new(s: &crate::settings::Settings) -> FileBackend {
        FileBackend {
            files: s.files.clone(),
        }
    }
}

impl super::Backend for FileBackend {
    fn name(&self) -> &'static str {
        "file"
    }

    fn describe(&self) -> String {
        self.files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn identity(&self) -> String {
        format!("file {:?}", self.files)
    }

    fn while_unavailable(&self) -> &'static str {
        "waiting for the key file to be fixed"
    }

    fn idle_is_current(&self) -> bool {
        true
    }

    fn snapshot<'a>(
        &'a self,
        _watched: &'a [String],
    ) -> super::BoxFuture<'a, Result<Snapshot, super::BackendError>> {
        Box::pin(async move { Ok(load(&self.files, 1)?) })
    }

    fn check(&self) -> Result<(), super::BackendError> {
        // A missing or broken key file may be fixed any time: the watcher
        // waits for it (exit 4 for a one-shot run, not a settings error).
        Ok(())
    }

    fn watch(
        &self,
        _watched: Vec<String>,
        after: i64,
        tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
    ) -> super::BoxFuture<'static, ()> {
        Box::pin(run(self.files.clone(), after, tx))
    }
}

/// The file backend's watcher: sends the initial snapshot, then a new one
/// whenever a key file changes and still parses. A file that fails to parse
/// is reported and ignored: the daemon keeps its last good view. Runs until
/// aborted. Revisions count from `after` + 1 (1 for a daemon that saw
/// none): a watcher that replaces another (new files on SIGHUP) goes on
/// from the last revision delivered.
pub async fn run(
    paths: Vec<PathBuf>,
    after: i64,
    tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
) {
    let (watcher, mut changed) = watch_key_files(&paths);
    let mut view = View::start(paths, after.max(0) + 1, tx);
    while changed.recv().await.is_some() {
        settle(&mut changed).await;
        view.reread();
    }
    drop(watcher);
}

/// A `notify` watcher on the directories of `paths` (editors and `mv`
/// replace files, which a watch on the file itself would lose), and the
/// channel that says "a key file changed". `None` when watching failed
/// (logged: changes will not be seen).
fn watch_key_files(
    paths: &[PathBuf],
) -> (
    Option<notify::RecommendedWatcher>,
    tokio::sync::mpsc::UnboundedReceiver<()>,
) {
    use notify::Watcher;

    let (ntx, nrx) = tokio::sync::mpsc::unbounded_channel::<()>();
    // Only changes to the key files themselves count: the directory may hold
    // other busy files (a log, say), and reads are not changes.
    let names: Vec<std::ffi::OsString> = paths
        .iter()
        .filter_map(|p| p.file_name().map(|n| n.to_os_string()))
        .collect();
    let mut watcher =
        match notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !ev.kind.is_access()
                && ev
                    .paths
                    .iter()
                    .any(|p| p.file_name().is_some_and(|n| names.iter().any(|k| k == n)))
            {
                let _ = ntx.send(());
            }
        }) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!("cannot watch key files: {e}; changes to them will not be seen");
                None
            }
        };
    let mut dirs: Vec<PathBuf> = paths
        .iter()
        .map(|p| match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        })
        .collect();
    dirs.sort();
    dirs.dedup();
    if let Some(w) = watcher.as_mut() {
        for d in &dirs {
            if let Err(e) = w.watch(d, notify::RecursiveMode::NonRecursive) {
                tracing::error!("cannot watch {}: {e}", d.display());
            }
        }
    }
    (watcher, nrx)
}

/// Lets a burst of events settle: returns once none came for [`SETTLE`],
/// or after a second at most.
async fn settle(changed: &mut tokio::sync::mpsc::UnboundedReceiver<()>) {
    let settle_until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while tokio::time::Instant::now() < settle_until
        && let Ok(Some(())) = tokio::time::timeout(SETTLE, changed.recv()).await
    {}
}

/// What the watcher has handed the daemon: the last snapshot that parsed
/// (revision 0 before any did), and the last error reported.
struct View {
    paths: Vec<PathBuf>,
    tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
    /// The key files, as status.json's endpoint.
    endpoint: String,
    revision: i64,
    last: Snapshot,
    last_error: Option<String>,
}

impl View {
    /// Reads the files a first time: hands over the snapshot, or reports
    /// them unreadable (the snapshot then waits for a fix).
    fn start(
        paths: Vec<PathBuf>,
        first: i64,
        tx: tokio::sync::mpsc::UnboundedSender<super::Event>,
    ) -> View {
        use super::{Event, SnapshotReason};
        let endpoint = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(",");
        let revision = first;
        let last = match load(&paths, revision) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.send(Event::Disconnected {
                    reason: e.to_string(),
                });
                Snapshot::new(0)
            }
        };
        if last.revision() > 0 {
            let _ = tx.send(Event::Snapshot {
                snapshot: last.clone(),
                reason: SnapshotReason::Initial,
            });
            let _ = tx.send(Event::Connected {
                endpoint: endpoint.clone(),
            });
        }
        View {
            paths,
            tx,
            endpoint,
            revision,
            last,
            last_error: None,
        }
    }

    /// Reads the files again after a change: a new snapshot when the keys
    /// differ, "connected" again when they parse once more, an error
    /// (once) when they do not.
    fn reread(&mut self) {
        use super::{Event, SnapshotReason};
        match load(&self.paths, self.revision + 1) {
            Ok(s) => {
                let recovered = self.last_error.take().is_some();
                let mut same = s.clone();
                same.set_revision(self.last.revision());
                if same == self.last {
                    if recovered && self.last.revision() > 0 {
                        self.connected();
                    }
                    return;
                }
                let first = self.last.revision() == 0;
                self.revision += 1;
                self.last = s.clone();
                let _ = self.tx.send(Event::Snapshot {
                    snapshot: s,
                    reason: if first {
                        SnapshotReason::Initial
                    } else {
                        SnapshotReason::FileChanged
                    },
                });
                self.connected();
            }
            Err(e) => {
                let msg = e.to_string();
                // Reported like a lost etcd connection: the daemon logs it
                // once, status and metrics show the backend unavailable.
                if self.last_error.as_deref() != Some(&msg) {
                    let _ = self.tx.send(Event::Disconnected {
                        reason: msg.clone(),
                    });
                    self.last_error = Some(msg);
                }
            }
        }
    }

    fn connected(&self) {
        let _ = self.tx.send(super::Event::Connected {
            endpoint: self.endpoint.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_str(name: &str, text: &str) -> Result<Snapshot, FileBackendError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        load(&[p], 1)
    }

    fn get(s: &Snapshot, k: &str) -> String {
        String::from_utf8(s.get(k).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn yaml_floats_read_as_confd_writes_them() {
        let y = load_str(
            "k.yaml",
            "a: 2.0\nb: 1e3\nc: 1.10\nd: 123456789.0\ne: 0.0000001\nf: 1e21\ng: .inf\nh: -0.0\ni: 7\n",
        )
        .unwrap();
        for (k, want) in [
            ("/a", "2"),
            ("/b", "1000"),
            ("/c", "1.1"),
            ("/d", "123456789"),
            ("/e", "0.0000001"),
            ("/f", "1000000000000000000000"),
            ("/g", "+Inf"),
            ("/h", "-0"),
            ("/i", "7"),
        ] {
            assert_eq!(get(&y, k), want, "{k}");
        }
    }

    #[test]
    fn nested_maps_become_keys_in_every_format() {
        let y = load_str("k.yaml", "a:\n  b: 1\n  c: [x, true]\n  d: null\n").unwrap();
        assert_eq!(get(&y, "/a/b"), "1");
        assert_eq!(get(&y, "/a/c/0"), "x");
        assert_eq!(get(&y, "/a/c/1"), "true");
        assert_eq!(get(&y, "/a/d"), "");
        let j = load_str("k.json", r#"{"a": {"b": 1.5, "s": "x\"y"}}"#).unwrap();
        assert_eq!(get(&j, "/a/b"), "1.5");
        assert_eq!(get(&j, "/a/s"), "x\"y");
        let t = load_str("k.toml", "[a]\nb = 2\n").unwrap();
        assert_eq!(get(&t, "/a/b"), "2");
    }

    #[test]
    fn empty_or_non_map_files_are_invalid_not_an_empty_keyspace() {
        for (name, text) in [
            ("e.yaml", ""),
            ("e.yaml", "# only a comment\n"),
            ("e.yaml", "- a\n- b\n"),
            ("e.yaml", "just text\n"),
            ("e.json", "  \n"),
            ("e.json", "null"),
            ("e.json", "\"str\""),
            ("e.json", "[1]"),
            ("e.toml", ""),
            ("e.toml", "# nothing\n"),
        ] {
            let e = load_str(name, text).expect_err(text).to_string();
            assert!(e.contains(name), "{e}");
        }
        assert!(load_str("e.json", "{}").unwrap().is_empty());
        let m = load_str(
            "m.yaml",
            "d: &d\n  w: '10'\n  p: 'yes'\ns:\n  mw1:\n    <<: *d\n    w: '20'\n",
        )
        .unwrap();
        assert_eq!(get(&m, "/s/mw1/w"), "20");
        assert_eq!(get(&m, "/s/mw1/p"), "yes");
        assert!(m.get("/s/mw1/<<").is_none());
        assert!(load_str("e.yaml", "{}\n").unwrap().is_empty());
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = load_str("bad.yaml", "a:\n  b: [1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.yaml") && e.contains("line"), "{e}");
        let e = load_str("bad.toml", "a = \n").unwrap_err().to_string();
        assert!(e.contains("bad.toml") && e.contains("line"), "{e}");
        let e = load(&[PathBuf::from("/nonexistent/k.yaml")], 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/k.yaml"), "{e}");
    }
}
