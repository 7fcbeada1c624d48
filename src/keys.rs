//! `liveconf keys import` and `liveconf keys export`: key files ⇄ etcd.
//!
//! Import reads key files exactly as the file backend does
//! ([`crate::backend::file::load`]: the same key names, the same text for
//! every scalar), so `render --backend file --file F` and a render from an
//! etcd that `keys import F` filled see the same keys. It compares them with
//! what etcd holds ([`plan`]), and writes only what differs, in
//! transactions of at most [`MAX_TXN_OPS`] operations ([`apply`]).
//!
//! Export reads a subtree at one revision and writes it as nested maps
//! ([`export`]) that the file backend (and import) read back as the same
//! keys and values; a subtree no key file can hold (a key that holds a value
//! and has keys below it, bytes that are not text) is refused, naming the
//! key.
//!
//! Nothing here prints or picks an exit code (`cli.rs` does).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::backend::etcd::{Connection, EtcdError};
use crate::backend::file::FileBackendError;
use crate::store::{Key, Snapshot, Val, roots};

/// Most operations in one transaction: etcd's default `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Most bytes of keys and values in one transaction: below etcd's default
/// `--max-request-bytes` (1.5 MiB) with room for the request's framing. A
/// single larger value goes in a transaction of its own.
pub const MAX_TXN_BYTES: usize = 1024 * 1024;

/// Why keys could not be imported or exported.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// A key file could not be read or parsed.
    #[error(transparent)]
    Input(#[from] FileBackendError),
    /// The key files hold no key at all.
    #[error(
        "{files} hold no keys: there is nothing to import (to delete keys, use etcdctl del --prefix)"
    )]
    NoKeys {
        /// The files, comma-separated.
        files: String,
    },
    /// `--prune` would cover the whole keyspace.
    #[error(
        "--prune would remove keys anywhere in etcd, as the files' keys share no top-level key: give --prefix to name the subtree they replace, or import without --prune"
    )]
    PruneEverything,
    /// A prefix that is not an absolute key path.
    #[error("prefix {0:?} must start with /: give it as etcdctl shows it, e.g. /conftool/v1")]
    Relative(String),
    /// etcd could not be read or written.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The user may not read part of the subtree.
    #[error("{0}")]
    Denied(String),
    /// A transaction failed after earlier ones were written.
    #[error(
        "etcd refused transaction {batch} of {batches} ({why}); {written} of {total} changes were written before it: run the import again to write the rest (it writes only what still differs)"
    )]
    Partial {
        /// The failed transaction, from 1.
        batch: usize,
        /// How many there are.
        batches: usize,
        /// Changes written by earlier transactions.
        written: usize,
        /// All changes.
        total: usize,
        /// What etcd said.
        why: String,
    },
    /// The user may not write there.
    #[error(
        "etcd refused to write{user} ({why}) after {written} changes: grant the user's role readwrite on {scope} (etcdctl role grant-permission ROLE --prefix=true readwrite {scope}), or import with a user that has it"
    )]
    WriteDenied {
        /// " as user U", or "".
        user: String,
        /// What etcd said.
        why: String,
        /// Where the import writes.
        scope: String,
        /// Changes written before.
        written: usize,
    },
    /// A key the key-file format cannot hold.
    #[error("cannot export {key}: {why}")]
    NotExportable {
        /// The key.
        key: String,
        /// Why, and what to do.
        why: String,
    },
    /// Nothing under the prefix.
    #[error(
        "no keys under {0} in etcd: nothing to export (check the prefix; `etcdctl get --prefix --keys-only {0}` lists what is there)"
    )]
    NothingUnder(String),
}

/// Reads key files as the file backend does, each key placed under
/// `prefix` (normalised; `""` for none): the keys to import, sorted.
pub fn read_files(files: &[PathBuf], prefix: &str) -> Result<BTreeMap<Key, Val>, KeysError> {
    let snap = crate::backend::file::load(files, 1)?;
    if snap.is_empty() {
        return Err(KeysError::NoKeys {
            files: files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(snap
        .iter()
        .map(|(k, v)| {
            let key: Key = if prefix.is_empty() {
                k.clone()
            } else {
                Key::from(crate::keypath::absolute(prefix, &k))
            };
            (key, v.clone())
        })
        .collect())
}

/// The subtree an import compares with etcd (and `--prune` empties of
/// keys the files do not hold): `prefix` when given, else the deepest one
/// that holds every key of the files (`/conftool/v1` for a file holding
/// `conftool: {v1: {...}}`; the key itself for a file of one key), so a
/// prune never reaches beyond what the files describe.
pub fn scope(prefix: &str, wanted: &BTreeMap<Key, Val>) -> Vec<String> {
    if !prefix.is_empty() {
        return vec![prefix.to_string()];
    }
    let mut common: Option<Vec<&str>> = None;
    for k in wanted.keys() {
        let parts: Vec<&str> = k.strip_prefix('/').unwrap_or(k).split('/').collect();
        common = Some(match common {
            None => parts,
            Some(c) => c
                .iter()
                .zip(&parts)
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| *a)
                .collect(),
        });
    }
    match common.unwrap_or_default().as_slice() {
        // Nothing in common: each top-level key (which --prune refuses).
        [] | [""] => roots(
            &wanted
                .keys()
                .map(|k| {
                    let rest = k.strip_prefix('/').unwrap_or(k);
                    format!("/{}", rest.split('/').next().unwrap_or(""))
                })
                .collect::<Vec<_>>(),
        ),
        common => vec![format!("/{}", common.join("/"))],
    }
}

/// What an import changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Keys etcd does not hold yet.
    pub add: Vec<(Key, Val)>,
    /// Keys etcd holds with another value: (key, old, new).
    pub change: Vec<(Key, Val, Val)>,
    /// Keys in the scope the files do not hold, removed (`--prune`): (key, old).
    pub remove: Vec<(Key, Val)>,
    /// Keys in the scope the files do not hold, kept (no `--prune`).
    pub extra: usize,
    /// Keys etcd already holds with the same value.
    pub unchanged: usize,
}

impl Plan {
    /// Whether nothing would be written.
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.change.is_empty() && self.remove.is_empty()
    }

    /// How many writes (puts and deletes).
    pub fn writes(&self) -> usize {
        self.add.len() + self.change.len() + self.remove.len()
    }

    /// The plan as a diff, one line per key in key order: `+ KEY = VALUE`,
    /// `~ KEY = NEW (was OLD)`, `- KEY (was OLD)`; values quoted as JSON
    /// strings.
    pub fn diff(&self) -> String {
        let mut lines: Vec<(&str, String)> = Vec::new();
        for (k, v) in &self.add {
            lines.push((k, format!("+ {k} = {}", quote(v))));
        }
        for (k, old, new) in &self.change {
            lines.push((k, format!("~ {k} = {} (was {})", quote(new), quote(old))));
        }
        for (k, old) in &self.remove {
            lines.push((k, format!("- {k} (was {})", quote(old))));
        }
        lines.sort_by(|a, b| a.0.cmp(b.0));
        lines.into_iter().map(|(_, l)| l + "\n").collect()
    }
}

/// A value as a JSON string (escapes visible); bytes that are not UTF-8 as
/// U+FFFD.
fn quote(v: &[u8]) -> String {
    serde_json::to_string(&String::from_utf8_lossy(v)).unwrap_or_default()
}

/// Compares the keys to import with `current` (etcd's keys under `scope`).
pub fn plan(
    wanted: &BTreeMap<Key, Val>,
    current: &Snapshot,
    scope: &[String],
    prune: bool,
) -> Plan {
    let mut p = Plan::default();
    for (k, v) in wanted {
        match current.get(k) {
            None => p.add.push((k.clone(), v.clone())),
            Some(old) if *old == **v => p.unchanged += 1,
            Some(old) => p.change.push((k.clone(), Val::from(old), v.clone())),
        }
    }
    for (k, v) in current.under(scope) {
        if !wanted.contains_key(k) {
            if prune {
                p.remove.push((Key::from(k), Val::from(v)));
            } else {
                p.extra += 1;
            }
        }
    }
    p
}

/// Reads etcd's keys under `scope` at one revision; refuses a subtree the
/// user may not read (the diff would be wrong).
pub async fn read_scope(
    conn: &Connection,
    client: &mut etcd_client::Client,
    scope: &[String],
) -> Result<Snapshot, KeysError> {
    let snap = conn.snapshot(client, scope, None).await?;
    if let Some((_, why)) = snap.unreadable().iter().next() {
        return Err(KeysError::Denied(why.clone()));
    }
    Ok(snap)
}

/// The plan's writes in transactions: at most [`MAX_TXN_OPS`] operations
/// and (unless one value alone is larger) [`MAX_TXN_BYTES`] each, in key
/// order.
pub fn batches(plan: &Plan) -> Vec<Vec<etcd_client::TxnOp>> {
    use etcd_client::TxnOp;
    let mut ops: Vec<(&str, usize, TxnOp)> = Vec::with_capacity(plan.writes());
    for (k, v) in &plan.add {
        ops.push((
            k,
            k.len() + v.len(),
            TxnOp::put(k.as_bytes(), v.to_vec(), None),
        ));
    }
    for (k, _, v) in &plan.change {
        ops.push((
            k,
            k.len() + v.len(),
            TxnOp::put(k.as_bytes(), v.to_vec(), None),
        ));
    }
    for (k, _) in &plan.remove {
        ops.push((k, k.len(), TxnOp::delete(k.as_bytes(), None)));
    }
    ops.sort_by(|a, b| a.0.cmp(b.0));
    let mut out: Vec<Vec<TxnOp>> = Vec::new();
    let mut bytes = 0;
    for (_, size, op) in ops {
        let full = out.last().is_none_or(|b| {
            b.len() >= MAX_TXN_OPS || (!b.is_empty() && bytes + size > MAX_TXN_BYTES)
        });
        if full {
            out.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(b) = out.last_mut() {
            b.push(op);
        }
    }
    out
}

/// Writes the plan; returns (transactions, the revision of the last one).
/// `scope` is where the writes go, for the message when the user may not
/// write there.
pub async fn apply(
    conn: &Connection,
    client: &mut etcd_client::Client,
    plan: &Plan,
    scope: &[String],
) -> Result<(usize, i64), KeysError> {
    let batches = batches(plan);
    let total = plan.writes();
    let count = batches.len();
    let mut written = 0;
    let mut revision = 0;
    for (i, ops) in batches.into_iter().enumerate() {
        let n = ops.len();
        let txn = etcd_client::Txn::new().and_then(ops);
        let fail = |why: String| KeysError::Partial {
            batch: i + 1,
            batches: count,
            written,
            total,
            why,
        };
        match tokio::time::timeout(conn.request_timeout, client.txn(txn)).await {
            Ok(Ok(r)) => {
                revision = r.header().map(|h| h.revision()).unwrap_or(revision);
            }
            Ok(Err(etcd_client::Error::GRpcStatus(st)))
                if st.code() == tonic::Code::PermissionDenied =>
            {
                return Err(KeysError::WriteDenied {
                    user: conn
                        .username
                        .as_deref()
                        .map(|u| format!(" as user {u}"))
                        .unwrap_or_default(),
                    why: st.message().to_string(),
                    scope: scope.join(" and "),
                    written,
                });
            }
            Ok(Err(e)) if written == 0 => {
                return Err(EtcdError::Unavailable {
                    endpoints: conn.endpoints.join(","),
                    message: crate::backend::etcd::describe(&e),
                }
                .into());
            }
            Ok(Err(e)) => return Err(fail(crate::backend::etcd::describe(&e))),
            Err(_) => {
                return Err(fail(format!(
                    "no answer within {}",
                    humantime::format_duration(conn.request_timeout)
                )));
            }
        }
        written += n;
    }
    Ok((count, revision))
}

/// Export formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A YAML key file.
    Yaml,
    /// A JSON key file.
    Json,
}

/// A key file's tree: a value, or named children.
enum Node {
    Leaf(String),
    Dir(BTreeMap<String, Node>),
}

impl serde::Serialize for Node {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Node::Leaf(v) => s.serialize_str(v),
            Node::Dir(m) => s.collect_map(m),
        }
    }
}

/// The keys of `snap` under `prefix` (absolute, normalised) as a key file
/// in `format`: nested maps from the root, so the file backend and
/// [`read_files`] read back exactly these keys and values.
pub fn export(snap: &Snapshot, prefix: &str, format: Format) -> Result<String, KeysError> {
    let mut root: BTreeMap<String, Node> = BTreeMap::new();
    let mut count = 0usize;
    for (k, v) in snap.subtree(prefix) {
        let not = |why: &str| KeysError::NotExportable {
            key: k.to_string(),
            why: why.to_string(),
        };
        let Some(rest) = k.strip_prefix('/') else {
            return Err(not(
                "it does not start with /, and a key file's keys always do",
            ));
        };
        let value = std::str::from_utf8(v).map_err(|_| {
            not("its value is not UTF-8 text, and a key file holds only text; copy it with etcdctl")
        })?;
        let parts: Vec<&str> = rest.split('/').collect();
        if format == Format::Yaml && parts.contains(&"<<") {
            return Err(not(
                "YAML reads a map key `<<` as a merge; export with --format json",
            ));
        }
        insert(&mut root, &parts, 0, value, k)?;
        count += 1;
    }
    if count == 0 {
        return Err(KeysError::NothingUnder(if prefix.is_empty() {
            "/".into()
        } else {
            prefix.to_string()
        }));
    }
    let tree = Node::Dir(root);
    Ok(match format {
        Format::Json => {
            let mut s = serde_json::to_string_pretty(&tree).unwrap_or_default();
            s.push('\n');
            s
        }
        Format::Yaml => serde_yaml_ng::to_string(&tree).unwrap_or_default(),
    })
}

/// Puts `value` at `parts` below `dir` (`depth` components of `key`
/// deep); a key that is both a value and a directory is refused, naming
/// both keys.
fn insert(
    dir: &mut BTreeMap<String, Node>,
    parts: &[&str],
    depth: usize,
    value: &str,
    key: &str,
) -> Result<(), KeysError> {
    let conflict = |other: &str| KeysError::NotExportable {
        key: key.to_string(),
        why: format!(
            "{other} holds a value and also has keys below it, which a key file cannot hold; rename or delete one of them, or export a prefix below it"
        ),
    };
    let Some((first, rest)) = parts.split_first() else {
        return Ok(());
    };
    if rest.is_empty() {
        if let Some(Node::Dir(_)) = dir.get(*first) {
            return Err(conflict(key));
        }
        dir.insert(first.to_string(), Node::Leaf(value.to_string()));
        return Ok(());
    }
    let entry = dir
        .entry(first.to_string())
        .or_insert_with(|| Node::Dir(BTreeMap::new()));
    match entry {
        Node::Dir(sub) => insert(sub, rest, depth + 1, value, key),
        Node::Leaf(_) => {
            // The value is the key made of the components up to this one.
            let all: Vec<&str> = key.trim_start_matches('/').split('/').collect();
            Err(conflict(&format!("/{}", all[..=depth].join("/"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot::from_pairs(
            1,
            pairs
                .iter()
                .map(|(k, v)| (Key::from(*k), Val::from(v.as_bytes()))),
        )
    }

    fn wanted(pairs: &[(&str, &str)]) -> BTreeMap<Key, Val> {
        snap(pairs)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    #[test]
    fn the_plan_adds_changes_and_prunes_only_in_scope() {
        let w = wanted(&[("/a/x", "1"), ("/a/y", "2"), ("/a/z", "3")]);
        let cur = snap(&[
            ("/a/x", "1"),
            ("/a/y", "old"),
            ("/a/gone", "g"),
            ("/ab/k", "k"),
        ]);
        let scope = scope("", &w);
        assert_eq!(scope, ["/a"]);
        assert_eq!(super::scope("/p", &w), ["/p"]);
        assert_eq!(
            super::scope("", &wanted(&[("/c/v1/x/a", "1"), ("/c/v1/y", "2")])),
            ["/c/v1"]
        );
        assert_eq!(super::scope("", &wanted(&[("/c/v1/x", "1")])), ["/c/v1/x"]);
        // No common component: each top-level key (which --prune refuses).
        assert_eq!(
            super::scope("", &wanted(&[("/a/x", "1"), ("/b", "2")])),
            ["/a", "/b"]
        );
        let p = plan(&w, &cur, &scope, false);
        assert_eq!(p.unchanged, 1);
        assert_eq!(p.add.len(), 1);
        assert_eq!(p.change.len(), 1);
        assert!(p.remove.is_empty());
        assert_eq!(p.extra, 1);
        let p = plan(&w, &cur, &scope, true);
        assert_eq!(p.remove.len(), 1);
        assert_eq!(
            p.diff(),
            "- /a/gone (was \"g\")\n~ /a/y = \"2\" (was \"old\")\n+ /a/z = \"3\"\n"
        );
    }

    #[test]
    fn batches_respect_etcds_limits() {
        let many: Vec<(String, String)> = (0..300)
            .map(|i| (format!("/k/{i:04}"), "v".to_string()))
            .collect();
        let pairs: Vec<(&str, &str)> = many.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let p = plan(&wanted(&pairs), &Snapshot::new(1), &["/k".into()], false);
        let b = batches(&p);
        assert_eq!(b.iter().map(Vec::len).collect::<Vec<_>>(), [128, 128, 44]);
        let big = "x".repeat(600 * 1024);
        let p = plan(
            &wanted(&[("/b/1", &big), ("/b/2", &big), ("/b/3", "small")]),
            &Snapshot::new(1),
            &["/b".into()],
            false,
        );
        assert_eq!(batches(&p).iter().map(Vec::len).collect::<Vec<_>>(), [1, 2]);
    }

    #[test]
    fn export_refuses_what_a_key_file_cannot_hold() {
        let s = snap(&[("/a/b", "1"), ("/a/b/c", "2")]);
        let e = export(&s, "/a", Format::Yaml).unwrap_err().to_string();
        assert!(
            e.contains("/a/b holds a value and also has keys below it"),
            "{e}"
        );
        let s = snap(&[("/a/<</c", "1")]);
        let e = export(&s, "/a", Format::Yaml).unwrap_err().to_string();
        assert!(e.contains("--format json"), "{e}");
        assert!(export(&s, "/a", Format::Json).is_ok());
        let e = export(&s, "/zz", Format::Json).unwrap_err().to_string();
        assert!(e.contains("no keys under /zz"), "{e}");
    }

    /// What export writes, the file backend reads back as the same keys.
    #[test]
    fn export_reads_back_through_the_file_backend() {
        let hostile = [
            ("/r/plain", "x"),
            ("/r/empty", ""),
            ("/r/bools/true", "true"),
            ("/r/bools/yes", "yes"),
            ("/r/nums/float", "1.10"),
            ("/r/nums/exp", "1e3"),
            ("/r/nums/int", "007"),
            ("/r/nums/hex", "0x1F"),
            ("/r/null", "null"),
            ("/r/tilde", "~"),
            ("/r/json", "{\"weight\": 10, \"pooled\": \"yes\"}"),
            ("/r/lines", "a\nb\n"),
            ("/r/trail", "a \n\n"),
            ("/r/lead", "  lead"),
            ("/r/dash", "- a"),
            ("/r/colon", "a: b"),
            ("/r/hash", "#c"),
            ("/r/quote", "it's \"q\""),
            ("/r/tab", "\t"),
            ("/r/nul", "a\0b"),
            ("/r/bom", "\u{feff}x"),
            ("/r/uni", "ünï ☃"),
            ("/r/star", "*alias"),
            ("/r/bang", "!tag"),
            ("/r/pct", "%x"),
            ("/r/at", "@x"),
            ("/r/back", "`x`"),
            ("/r/n/0", "list-looking"),
            ("/r/n/1", "second"),
            ("/r/trailing/", "slash"),
            ("/r//double", "d"),
            ("/r/true/k", "key named true"),
            ("/r/null/k", "k"),
            ("/r/1.0/k", "key named 1.0"),
            ("/r/~/k", "key named ~"),
            ("/r/ spaced /k", "spaced"),
        ];
        // (/r/null is a leaf and /r/null/k is below it: drop the leaf.)
        let hostile: Vec<(&str, &str)> = hostile
            .into_iter()
            .filter(|(k, _)| *k != "/r/null")
            .collect();
        let s = snap(&hostile);
        let dir = tempfile::tempdir().unwrap();
        for (format, name) in [(Format::Yaml, "k.yaml"), (Format::Json, "k.json")] {
            let text = export(&s, "/r", format).unwrap();
            let p = dir.path().join(name);
            std::fs::write(&p, &text).unwrap();
            let back =
                read_files(std::slice::from_ref(&p), "").unwrap_or_else(|e| panic!("{e}\n{text}"));
            let want = wanted(&hostile);
            assert_eq!(back, want, "{name}:\n{text}");
        }
    }
}
