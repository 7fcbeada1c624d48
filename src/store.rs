//! The key store: every key liveconf knows, at one revision.
//!
//! A [`Snapshot`] is an immutable, ordered map from absolute key
//! (`/conftool/v1/pools/eqiad/appserver/mw1001`) to the value's bytes, tagged
//! with the backend revision it reflects. It is built on a persistent B-tree
//! ([`imbl::OrdMap`]): cloning a snapshot is O(1) and applying one event is
//! O(log n), so the daemon can hand renderers a consistent view while the
//! watcher keeps updating its own copy. Nothing here does I/O.

use std::sync::Arc;

use imbl::OrdMap;

/// A key, always absolute and starting with `/`.
pub type Key = Arc<str>;
/// A value exactly as stored (etcd values are bytes; templates see them as UTF-8).
pub type Val = Arc<[u8]>;

/// One consistent view of the keyspace at one revision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    revision: i64,
    keys: OrdMap<Key, Val>,
    /// Prefixes the backend refused to read (prefix → why), e.g. outside
    /// the etcd user's role. Resources depending on them fail; others render.
    unreadable: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

/// One change to apply to a snapshot (what a watch event or `--set` says).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// The key now holds this value.
    Put(Key, Val),
    /// The key no longer exists.
    Delete(Key),
}

impl Change {
    /// The key this change touches.
    pub fn key(&self) -> &str {
        match self {
            Change::Put(k, _) | Change::Delete(k) => k,
        }
    }
}

impl Snapshot {
    /// An empty snapshot at `revision`.
    pub fn new(revision: i64) -> Self {
        Snapshot {
            revision,
            keys: OrdMap::new(),
            unreadable: Default::default(),
        }
    }

    /// Builds a snapshot from `(key, value)` pairs.
    pub fn from_pairs<I, K, V>(revision: i64, pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<Key>,
        V: Into<Val>,
    {
        let keys = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Snapshot {
            revision,
            keys,
            unreadable: Default::default(),
        }
    }

    /// Adds `(key, value)` pairs (a later value for the same key wins), e.g.
    /// one page of a range read.
    pub fn extend(&mut self, pairs: impl IntoIterator<Item = (Key, Val)>) {
        for (k, v) in pairs {
            self.keys.insert(k, v);
        }
    }

    /// Records that `prefix` could not be read, and why.
    pub fn mark_unreadable(&mut self, prefix: &str, why: String) {
        std::sync::Arc::make_mut(&mut self.unreadable).insert(prefix.to_string(), why);
    }

    /// The prefixes that could not be read.
    pub fn unreadable(&self) -> &std::collections::BTreeMap<String, String> {
        &self.unreadable
    }

    /// Why one of `prefixes` (or a prefix above or below it) is unreadable, if it is.
    pub fn unreadable_among(&self, prefixes: &[String]) -> Option<&str> {
        self.unreadable
            .iter()
            .find(|(u, _)| {
                prefixes
                    .iter()
                    .any(|p| is_at_or_below(p, u) || is_at_or_below(u, p))
            })
            .map(|(_, why)| why.as_str())
    }

    /// The backend revision this snapshot reflects.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Sets the revision (after applying the events of that revision).
    pub fn set_revision(&mut self, revision: i64) {
        self.revision = revision;
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<&Val> {
        self.keys.get(key)
    }

    /// Applies one change; returns whether the snapshot actually changed.
    pub fn apply(&mut self, change: Change) -> bool {
        match change {
            Change::Put(k, v) => match self.keys.insert(k, v.clone()) {
                Some(old) => old != v,
                None => true,
            },
            Change::Delete(k) => self.keys.remove(&*k).is_some(),
        }
    }

    /// Every key at or below `prefix` in key order: the key itself and the
    /// keys under `prefix/`. `prefix` "/" (or "") means everything.
    pub fn subtree<'a, 'p>(
        &'a self,
        prefix: &'p str,
    ) -> impl Iterator<Item = (&'a Key, &'a Val)> + use<'a, 'p> {
        let base = prefix.trim_end_matches('/');
        self.keys
            .range::<_, str>((std::ops::Bound::Included(base), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(base))
            .filter(move |(k, _)| is_at_or_below(k, base))
    }

    /// Every key at or below one of `roots` (disjoint prefixes, see
    /// [`roots`]), root by root, as text and bytes.
    pub fn under<'a>(
        &'a self,
        roots: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        roots
            .iter()
            .flat_map(move |r| self.subtree(r))
            .map(|(k, v)| (&**k, &**v))
    }

    /// Every key, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&Key, &Val)> {
        self.keys.iter()
    }

    /// The keys that differ between `self` and `other`, restricted to keys
    /// at or below one of `prefixes`: what a resync found missed.
    pub fn diff_under(&self, other: &Snapshot, prefixes: &[String]) -> Vec<Key> {
        let mut out = Vec::new();
        for p in prefixes {
            let mine: Vec<_> = self.subtree(p).collect();
            let theirs: Vec<_> = other.subtree(p).collect();
            let (mut i, mut j) = (0, 0);
            while i < mine.len() || j < theirs.len() {
                match (mine.get(i), theirs.get(j)) {
                    (Some(a), Some(b)) if a.0 == b.0 => {
                        if a.1 != b.1 {
                            out.push(a.0.clone());
                        }
                        i += 1;
                        j += 1;
                    }
                    (Some(a), Some(b)) if a.0 < b.0 => {
                        out.push(a.0.clone());
                        i += 1;
                    }
                    (Some(_), Some(b)) => {
                        out.push(b.0.clone());
                        j += 1;
                    }
                    (Some(a), None) => {
                        out.push(a.0.clone());
                        i += 1;
                    }
                    (None, Some(b)) => {
                        out.push(b.0.clone());
                        j += 1;
                    }
                    (None, None) => break,
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The prefixes with nested ones removed (`/a` covers `/a/b`), sorted:
/// each key below any of them is below exactly one.
pub fn roots(prefixes: &[String]) -> Vec<String> {
    let mut sorted: Vec<&String> = prefixes.iter().collect();
    sorted.sort();
    let mut out: Vec<String> = Vec::new();
    for p in sorted {
        if !out.iter().any(|r| is_at_or_below(p, r)) {
            out.push(p.clone());
        }
    }
    out
}

/// Whether `key` is `base` itself or lies below `base/` (so `/a/bc` is not below `/a/b`).
pub fn is_at_or_below(key: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    if base.is_empty() {
        // Everything under the root: keys are paths, so they start with `/`
        // (a key without one cannot be named by a template anyway).
        return key.starts_with('/');
    }
    match key.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
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

    #[test]
    fn subtree_respects_path_boundaries() {
        let s = snap(&[
            ("/a/b", "1"),
            ("/a/b/c", "2"),
            ("/a/bc", "3"),
            ("/a/c", "4"),
        ]);
        let got: Vec<&str> = s.subtree("/a/b").map(|(k, _)| &**k).collect();
        assert_eq!(got, ["/a/b", "/a/b/c"]);
        let all: Vec<&str> = s.subtree("/").map(|(k, _)| &**k).collect();
        assert_eq!(all.len(), 4);
    }

    #[test]
    fn nested_prefixes_merge() {
        let r = roots(&["/a/b".into(), "/a".into(), "/ab".into(), "/c/d".into()]);
        assert_eq!(r, ["/a", "/ab", "/c/d"]);
    }

    #[test]
    fn clones_are_independent() {
        let mut s = snap(&[("/a", "1")]);
        let frozen = s.clone();
        assert!(s.apply(Change::Put("/a".into(), Val::from(&b"2"[..]))));
        assert!(!s.apply(Change::Put("/a".into(), Val::from(&b"2"[..]))));
        assert_eq!(&**frozen.get("/a").unwrap(), b"1");
        assert_eq!(&**s.get("/a").unwrap(), b"2");
    }

    #[test]
    fn diff_finds_changed_added_and_removed_keys() {
        let a = snap(&[("/p/x", "1"), ("/p/y", "2"), ("/q/z", "9")]);
        let b = snap(&[("/p/x", "1"), ("/p/y", "3"), ("/p/w", "0")]);
        let d = a.diff_under(&b, &["/p".to_string()]);
        let d: Vec<&str> = d.iter().map(|k| &**k).collect();
        assert_eq!(d, ["/p/w", "/p/y"]);
    }
}
