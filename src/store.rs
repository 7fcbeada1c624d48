//! The key store: every key liveconf knows, at one revision.
//!
//! A [`Snapshot`] is an immutable, ordered map from absolute key
//! (`/conftool/v1/pools/eqiad/appserver/mw1001`) to the value's bytes, tagged
//! with the backend revision it reflects. The daemon's is built on a
//! persistent B-tree ([`imbl::OrdMap`]): cloning a snapshot is O(1) and
//! applying one event is O(log n), so the daemon can hand renderers a
//! consistent view while the watcher keeps updating its own copy. A one-shot
//! run's (`render --once`, `check`) is a sorted list made from the decoded
//! range answer without copying a key or value ([`Snapshot::from_sorted`]);
//! its first change turns it into a tree. Nothing here does I/O.

use std::sync::Arc;

use imbl::OrdMap;

/// A key, always absolute and starting with `/`.
pub type Key = Arc<str>;
/// A value exactly as stored (etcd values are bytes; templates see them as UTF-8).
pub type Val = Arc<[u8]>;

/// One key and its value in a [`Snapshot::from_sorted`] list.
pub type Entry = (Box<str>, Box<[u8]>);

/// One consistent view of the keyspace at one revision.
#[derive(Clone, Default)]
pub struct Snapshot {
    revision: i64,
    keys: Keys,
    /// Prefixes the backend refused to read (prefix → why), e.g. outside
    /// the etcd user's role. Resources depending on them fail; others render.
    unreadable: std::sync::Arc<std::collections::BTreeMap<String, String>>,
}

/// The keys of a snapshot: a tree, or a sorted list that never changes.
#[derive(Clone)]
enum Keys {
    /// Persistent B-tree: O(1) clones, O(log n) changes.
    Tree(OrdMap<Key, Val>),
    /// Sorted by key, each key once; turned into a tree by the first change.
    Flat(Arc<Vec<Entry>>),
}

impl Default for Keys {
    fn default() -> Self {
        Keys::Tree(OrdMap::new())
    }
}

impl PartialEq for Snapshot {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision
            && self.unreadable == other.unreadable
            && self.len() == other.len()
            && self.entries().eq(other.entries())
    }
}

impl Eq for Snapshot {}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        struct Entries<'a>(&'a Snapshot);
        impl std::fmt::Debug for Entries<'_> {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_map()
                    .entries(
                        self.0
                            .entries()
                            .map(|(k, v)| (k, String::from_utf8_lossy(v))),
                    )
                    .finish()
            }
        }
        f.debug_struct("Snapshot")
            .field("revision", &self.revision)
            .field("keys", &Entries(self))
            .field("unreadable", &self.unreadable)
            .finish()
    }
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

/// Keys and values of a snapshot in key order, borrowed.
pub struct Entries<'a>(EntriesOf<'a>);

enum EntriesOf<'a> {
    Tree(imbl::ordmap::RangedIter<'a, Key, Val, imbl::shared_ptr::DefaultSharedPtr>),
    Flat(std::slice::Iter<'a, Entry>),
}

impl<'a> Iterator for Entries<'a> {
    type Item = (&'a str, &'a [u8]);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.0 {
            EntriesOf::Tree(i) => i.next().map(|(k, v)| (&**k, &**v)),
            EntriesOf::Flat(i) => i.next().map(|(k, v)| (&**k, &**v)),
        }
    }
}

impl Snapshot {
    /// An empty snapshot at `revision`.
    pub fn new(revision: i64) -> Self {
        Snapshot {
            revision,
            keys: Keys::default(),
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
            keys: Keys::Tree(keys),
            unreadable: Default::default(),
        }
    }

    /// A snapshot of `entries` as they are, without a tree or a copy of
    /// any key or value: for a snapshot read once and rendered (a one-shot
    /// run). Entries in key order (as a range read returns them) are taken
    /// as they are; others are sorted, a later value for the same key
    /// winning. The first change ([`Snapshot::apply`]) turns it into a tree.
    pub fn from_sorted(revision: i64, mut entries: Vec<Entry>) -> Self {
        if !entries.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable: among equal keys, the later stays later.
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            let mut unique: Vec<Entry> = Vec::with_capacity(entries.len());
            for e in entries {
                match unique.last_mut() {
                    Some(last) if last.0 == e.0 => *last = e,
                    _ => unique.push(e),
                }
            }
            entries = unique;
        }
        Snapshot {
            revision,
            keys: Keys::Flat(Arc::new(entries)),
            unreadable: Default::default(),
        }
    }

    /// The tree of keys, made from the sorted list first if need be.
    fn tree(&mut self) -> &mut OrdMap<Key, Val> {
        if let Keys::Flat(f) = &self.keys {
            let tree = f
                .iter()
                .map(|(k, v)| (Key::from(&**k), Val::from(&**v)))
                .collect();
            self.keys = Keys::Tree(tree);
        }
        match &mut self.keys {
            Keys::Tree(t) => t,
            Keys::Flat(_) => unreachable!("made a tree just above"),
        }
    }

    /// Adds `(key, value)` pairs (a later value for the same key wins), e.g.
    /// one page of a range read.
    pub fn extend(&mut self, pairs: impl IntoIterator<Item = (Key, Val)>) {
        let tree = self.tree();
        for (k, v) in pairs {
            tree.insert(k, v);
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
        match &self.keys {
            Keys::Tree(t) => t.len(),
            Keys::Flat(f) => f.len(),
        }
    }

    /// Whether there is no key at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The value of `key`, if it exists.
    pub fn get(&self, key: &str) -> Option<&[u8]> {
        match &self.keys {
            Keys::Tree(t) => t.get(key).map(|v| &**v),
            Keys::Flat(f) => f
                .binary_search_by(|(k, _)| (**k).cmp(key))
                .ok()
                .map(|i| &*f[i].1),
        }
    }

    /// Applies one change; returns whether the snapshot actually changed.
    pub fn apply(&mut self, change: Change) -> bool {
        let tree = self.tree();
        match change {
            Change::Put(k, v) => match tree.insert(k, v.clone()) {
                Some(old) => old != v,
                None => true,
            },
            Change::Delete(k) => tree.remove(&*k).is_some(),
        }
    }

    /// Every key from `from` on, in key order.
    fn entries_from(&self, from: &str) -> Entries<'_> {
        Entries(match &self.keys {
            Keys::Tree(t) => EntriesOf::Tree(
                t.range::<_, str>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded)),
            ),
            Keys::Flat(f) => {
                let at = f.partition_point(|(k, _)| &**k < from);
                EntriesOf::Flat(f[at..].iter())
            }
        })
    }

    /// Every key and value, in key order.
    pub fn entries(&self) -> Entries<'_> {
        self.entries_from("")
    }

    /// Every key at or below `prefix` in key order: the key itself and the
    /// keys under `prefix/`. `prefix` "/" (or "") means everything.
    pub fn subtree<'a, 'p>(
        &'a self,
        prefix: &'p str,
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + use<'a, 'p> {
        let base = prefix.trim_end_matches('/');
        self.entries_from(base)
            .take_while(move |(k, _)| k.starts_with(base))
            // As `is_at_or_below`, for a key known to start with `base`.
            .filter(move |(k, _)| match k.as_bytes().get(base.len()) {
                None => !base.is_empty(),
                Some(&b) => b == b'/',
            })
    }

    /// Every key at or below one of `roots` (disjoint prefixes, see
    /// [`roots`]), root by root, as text and bytes.
    pub fn under<'a>(
        &'a self,
        roots: &'a [String],
    ) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        roots.iter().flat_map(move |r| self.subtree(r))
    }

    /// About the bytes of the keys and values at or below `roots`
    /// (disjoint, see [`roots`]) of a sorted-list snapshot (a one-shot
    /// run's): those of the keys in each root's range (which also holds
    /// keys such as `root!x`), summed from the lengths alone, without
    /// reading a key. `None` for a tree (it would cost the daemon a scan per
    /// render). What a template listing the keys writes, about.
    pub fn bytes_under(&self, roots: &[String]) -> Option<usize> {
        let Keys::Flat(f) = &self.keys else {
            return None;
        };
        let bytes = |r: &String| -> usize {
            let base = r.trim_end_matches('/');
            let lo = f.partition_point(|(k, _)| &**k < base);
            let hi = if base.is_empty() {
                f.len()
            } else {
                let end = format!("{base}0");
                f.partition_point(|(k, _)| **k < *end)
            };
            f[lo..hi.max(lo)]
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum()
        };
        Some(roots.iter().map(bytes).sum())
    }

    /// Every key, in order, with its value (shared with a tree snapshot's,
    /// copied from a sorted list's).
    pub fn iter(&self) -> impl Iterator<Item = (Key, Val)> + '_ {
        let (tree, flat) = match &self.keys {
            Keys::Tree(t) => (Some(t.iter().map(|(k, v)| (k.clone(), v.clone()))), None),
            Keys::Flat(f) => (
                None,
                Some(f.iter().map(|(k, v)| (Key::from(&**k), Val::from(&**v)))),
            ),
        };
        tree.into_iter().flatten().chain(flat.into_iter().flatten())
    }

    /// The keys that differ between `self` and `other`, restricted to keys
    /// at or below one of `prefixes`: what a resync found missed.
    pub fn diff_under(&self, other: &Snapshot, prefixes: &[String]) -> Vec<Key> {
        let mut out: Vec<Key> = Vec::new();
        for p in prefixes {
            let mine: Vec<_> = self.subtree(p).collect();
            let theirs: Vec<_> = other.subtree(p).collect();
            let (mut i, mut j) = (0, 0);
            while i < mine.len() || j < theirs.len() {
                match (mine.get(i), theirs.get(j)) {
                    (Some(a), Some(b)) if a.0 == b.0 => {
                        if a.1 != b.1 {
                            out.push(a.0.into());
                        }
                        i += 1;
                        j += 1;
                    }
                    (Some(a), Some(b)) if a.0 < b.0 => {
                        out.push(a.0.into());
                        i += 1;
                    }
                    (Some(_), Some(b)) => {
                        out.push(b.0.into());
                        j += 1;
                    }
                    (Some(a), None) => {
                        out.push(a.0.into());
                        i += 1;
                    }
                    (None, Some(b)) => {
                        out.push(b.0.into());
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
        let got: Vec<&str> = s.subtree("/a/b").map(|(k, _)| k).collect();
        assert_eq!(got, ["/a/b", "/a/b/c"]);
        let all: Vec<&str> = s.subtree("/").map(|(k, _)| k).collect();
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
        assert_eq!(frozen.get("/a").unwrap(), b"1");
        assert_eq!(s.get("/a").unwrap(), b"2");
    }

    fn flat(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot::from_sorted(
            1,
            pairs
                .iter()
                .map(|(k, v)| (Box::from(*k), Box::from(v.as_bytes())))
                .collect(),
        )
    }

    /// A sorted list answers as the tree of the same keys does, and its
    /// first change makes it one.
    #[test]
    fn a_sorted_list_reads_as_the_tree_and_changes_into_one() {
        let pairs = [
            ("/a/b", "1"),
            ("/a/b/c", "2"),
            ("/a/bc", "3"),
            ("/a/c", "4"),
            ("/b", "5"),
        ];
        let (t, mut f) = (snap(&pairs), flat(&pairs));
        assert_eq!(t, f);
        for p in [
            "/", "", "/a", "/a/b", "/a/b/", "/a/bc", "/b", "/c", "/a/b/c/d",
        ] {
            let a: Vec<_> = t.subtree(p).collect();
            let b: Vec<_> = f.subtree(p).collect();
            assert_eq!(a, b, "{p}");
        }
        for k in ["/a/b", "/a/bc", "/b", "/a", "/c", ""] {
            assert_eq!(t.get(k), f.get(k), "{k}");
        }
        assert_eq!(f.len(), 5);
        assert_eq!(t.iter().collect::<Vec<_>>(), f.iter().collect::<Vec<_>>());
        assert_eq!(
            t.diff_under(&flat(&pairs[1..]), &["/a".to_string()]),
            [Key::from("/a/b")]
        );
        let frozen = f.clone();
        assert!(f.apply(Change::Put("/a/c".into(), Val::from(&b"9"[..]))));
        assert!(f.apply(Change::Delete("/b".into())));
        assert_eq!(f.get("/a/c").unwrap(), b"9");
        assert_eq!(f.get("/b"), None);
        assert_eq!(frozen.get("/a/c").unwrap(), b"4");
        assert_eq!(f.len(), 4);
        // Only a sorted list says how many bytes it holds (a tree would scan).
        assert_eq!(frozen.bytes_under(&["/a/b".to_string()]), Some(12));
        assert_eq!(frozen.bytes_under(&["/".to_string()]), Some(26));
        assert_eq!(t.bytes_under(&["/".to_string()]), None);
        assert_eq!(f.bytes_under(&["/".to_string()]), None);
    }

    /// Entries out of order (nested roots read one after the other: `/a`
    /// then `/a!b`, whose keys sort between `/a` and `/a/x`) are sorted, a
    /// later value for a key winning.
    #[test]
    fn a_list_out_of_order_is_sorted() {
        let f = flat(&[("/a", "1"), ("/a/x", "2"), ("/a!b", "3"), ("/a/x", "4")]);
        let all: Vec<(&str, &[u8])> = f.entries().collect();
        assert_eq!(
            all,
            [("/a", &b"1"[..]), ("/a!b", &b"3"[..]), ("/a/x", &b"4"[..])]
        );
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
