//! Which resources depend on a key.
//!
//! Each resource watches a few absolute prefixes. The index maps every
//! watched prefix to the resources watching it; a changed key is matched by
//! looking up each of its ancestors (`/a/b/c` → `/a/b/c`, `/a/b`, `/a`, the
//! root). The cost of a change is its depth plus the resources it affects —
//! not the size of the keyspace, nor the number of resources.

use std::collections::{BTreeSet, HashMap};

use crate::resource::Resource;

/// The prefix → resources index.
#[derive(Clone, Debug, Default)]
pub struct Deps {
    by_prefix: HashMap<String, Vec<usize>>,
}

impl Deps {
    /// Indexes `resources` by their watched prefixes (positions in the slice).
    pub fn new(resources: &[Resource]) -> Deps {
        let mut by_prefix: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in resources.iter().enumerate() {
            for w in &r.watched {
                let v = by_prefix.entry(w.clone()).or_default();
                if !v.contains(&i) {
                    v.push(i);
                }
            }
        }
        Deps { by_prefix }
    }

    /// Adds to `out` every resource that watches `key`.
    pub fn affected(&self, key: &str, out: &mut BTreeSet<usize>) {
        let mut cut = key.len();
        loop {
            if let Some(v) = self.by_prefix.get(&key[..cut]) {
                out.extend(v.iter().copied());
            }
            if cut == 0 {
                break;
            }
            cut = key[..cut].rfind('/').unwrap_or(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn res(watched: &[&str]) -> Resource {
        crate::resource::test_resource("r", watched)
    }

    #[test]
    fn keys_match_their_ancestors_only() {
        let deps = Deps::new(&[
            res(&["/a/b"]),
            res(&["/a/bc"]),
            res(&[""]),
            res(&["/a/b/c/d"]),
        ]);
        let hit = |k: &str| {
            let mut s = BTreeSet::new();
            deps.affected(k, &mut s);
            s.into_iter().collect::<Vec<_>>()
        };
        assert_eq!(hit("/a/b/c"), [0, 2]);
        assert_eq!(hit("/a/b"), [0, 2]);
        assert_eq!(hit("/a/bcd"), [2]);
        assert_eq!(hit("/a/bc/x"), [1, 2]);
        assert_eq!(hit("/a/b/c/d/e"), [0, 2, 3]);
    }
}
