//! Key path arithmetic: joining prefixes, making keys relative, glob patterns.
//!
//! etcd keys are plain byte strings; liveconf treats them as `/`-separated
//! paths only where it must. Prefixes (the global `--prefix`, a resource's
//! `prefix`, its `keys`) are normalised: one leading `/`, no trailing `/`,
//! no empty components. Keys coming from the backend are never rewritten,
//! so a stored key containing `//` or `..` is looked up exactly as it is.

/// Normalises a prefix: `"a//b/"` → `"/a/b"`, `""` and `"/"` → `""` (the root).
pub fn normalize_prefix(p: &str) -> String {
    let mut out = String::with_capacity(p.len() + 1);
    for part in p.split('/').filter(|s| !s.is_empty()) {
        out.push('/');
        out.push_str(part);
    }
    out
}

/// Joins normalised prefixes: `join(&["/conftool/v1", "pools"])` → `"/conftool/v1/pools"`.
pub fn join_prefixes(parts: &[&str]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&normalize_prefix(p));
    }
    out
}

/// The absolute key for `key` relative to the normalised `prefix`:
/// exactly one `/` between them, the rest of `key` kept as written.
pub fn absolute(prefix: &str, key: &str) -> String {
    let rel = key.strip_prefix('/').unwrap_or(key);
    let mut out = String::with_capacity(prefix.len() + rel.len() + 1);
    out.push_str(prefix);
    out.push('/');
    out.push_str(rel);
    out
}

/// The key relative to `prefix` (always starting with `/`), or `None` when
/// `abs` is not at or below `prefix`.
pub fn relative<'a>(prefix: &str, abs: &'a str) -> Option<&'a str> {
    if prefix.is_empty() && !abs.starts_with('/') {
        // Not a path: no template can name it.
        return None;
    }
    let rest = abs.strip_prefix(prefix)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') || prefix.is_empty() {
        Some(rest)
    } else {
        None
    }
}

/// The longest part of a glob `pattern` free of wildcards, cut at a `/`:
/// only keys below it can match. `"/pools/*/mw*"` → `"/pools"`.
pub fn glob_literal_dir(pattern: &str) -> &str {
    let end = pattern
        .find(['*', '?', '[', '{', '\\'])
        .unwrap_or(pattern.len());
    match pattern[..end].rfind('/') {
        Some(i) if end < pattern.len() => &pattern[..i],
        _ if end == pattern.len() => pattern,
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_normalise() {
        assert_eq!(normalize_prefix("conftool//v1/"), "/conftool/v1");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(
            join_prefixes(&["/conftool/v1", "/pools/", ""]),
            "/conftool/v1/pools"
        );
    }

    #[test]
    fn absolute_and_relative_round_trip() {
        assert_eq!(absolute("/p", "/a/b"), "/p/a/b");
        assert_eq!(absolute("/p", "a//b"), "/p/a//b");
        assert_eq!(absolute("", "/a"), "/a");
        assert_eq!(relative("/p", "/p/a/b"), Some("/a/b"));
        assert_eq!(relative("/p", "/pq/a"), None);
        assert_eq!(relative("", "/a"), Some("/a"));
        assert_eq!(relative("/p", "/p"), Some("/"));
    }

    #[test]
    fn glob_literal_part() {
        assert_eq!(glob_literal_dir("/pools/*/mw*"), "/pools");
        assert_eq!(
            glob_literal_dir("/pools/eqiad/mw1001"),
            "/pools/eqiad/mw1001"
        );
        assert_eq!(glob_literal_dir("/mw*"), "");
        assert_eq!(glob_literal_dir("*"), "");
    }
}
