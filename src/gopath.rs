//! Go's `path` package semantics (`Clean`, `Base`, `Dir`), which confd's
//! templates and store rely on: `base`/`dir` in Go templates, `basename`/
//! `dirname` in Tera, and the names confd's store gives keys.

/// Go's `path.Clean`: the shortest path equivalent to `p` (no `//`, `.` or
/// inner `..`, no trailing `/`); `""` is `"."`.
pub fn clean(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let b = p.as_bytes();
    let rooted = b[0] == b'/';
    let n = b.len();
    let mut out: Vec<u8> = Vec::with_capacity(n);
    let (mut r, mut dotdot) = (0, 0);
    if rooted {
        out.push(b'/');
        r = 1;
        dotdot = 1;
    }
    while r < n {
        if b[r] == b'/' || (b[r] == b'.' && (r + 1 == n || b[r + 1] == b'/')) {
            // An empty element or a `.` element.
            r += 1;
        } else if b[r] == b'.' && b[r + 1] == b'.' && (r + 2 == n || b[r + 2] == b'/') {
            r += 2;
            if out.len() > dotdot {
                out.pop();
                while out.len() > dotdot && out.last() != Some(&b'/') {
                    out.pop();
                }
                // Drop the separator before the removed element too.
                if out.len() > dotdot {
                    out.pop();
                }
            } else if !rooted {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(b"..");
                dotdot = out.len();
            }
        } else {
            if (rooted && out.len() != 1) || (!rooted && !out.is_empty()) {
                out.push(b'/');
            }
            while r < n && b[r] != b'/' {
                out.push(b[r]);
                r += 1;
            }
        }
    }
    if out.is_empty() {
        return ".".into();
    }
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Go's `path.Base`: the last element (`"/"` for `"/"`, `"."` for `""`).
pub fn base(p: &str) -> String {
    if p.is_empty() {
        return ".".into();
    }
    let p = p.trim_end_matches('/');
    let last = match p.rfind('/') {
        Some(i) => &p[i + 1..],
        None => p,
    };
    if last.is_empty() {
        "/".into()
    } else {
        last.into()
    }
}

/// Go's `path.Dir`: everything but the last element, cleaned.
pub fn dir(p: &str) -> String {
    let d = match p.rfind('/') {
        Some(i) => &p[..=i],
        None => "",
    };
    clean(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_matches_go() {
        for (i, o) in [
            ("", "."),
            ("/", "/"),
            ("abc", "abc"),
            ("abc/", "abc"),
            ("a//b", "a/b"),
            ("/a/./b/", "/a/b"),
            ("/a/b/..", "/a"),
            ("/a/b/../..", "/"),
            ("/../a", "/a"),
            ("a/../..", ".."),
            ("../../a", "../../a"),
            ("a/b/../../..", ".."),
            ("abc/def/../ghi", "abc/ghi"),
            ("//a//b//", "/a/b"),
            (".", "."),
            ("./", "."),
        ] {
            assert_eq!(clean(i), o, "clean({i:?})");
        }
    }

    #[test]
    fn base_and_dir_match_go() {
        for (i, b, d) in [
            ("", ".", "."),
            ("/", "/", "/"),
            ("a", "a", "."),
            ("/a", "a", "/"),
            ("/a/b/", "b", "/a/b"),
            ("/a/b", "b", "/a"),
            ("a/b//", "b", "a/b"),
            ("//a//b", "b", "/a"),
        ] {
            assert_eq!(base(i), b, "base({i:?})");
            assert_eq!(dir(i), d, "dir({i:?})");
        }
    }

    /// The tables of Go's `path` tests (`path_test.go`: cleantests,
    /// basetests, dirtests) and the package examples.
    #[test]
    fn go_test_tables() {
        for (i, o) in [
            // Already clean.
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            ("..", ".."),
            ("../..", "../.."),
            ("/abc", "/abc"),
            // Trailing slashes.
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            // Doubled slashes.
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            // `.` elements.
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            // `..` elements.
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            // Combinations.
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            // ExampleClean.
            ("a/c/b/..", "a/c"),
            ("/../a/b/../././/c", "/a/c"),
            // Non-ASCII elements are copied unchanged.
            ("/é//ü/./x/..", "/é/ü"),
        ] {
            assert_eq!(clean(i), o, "clean({i:?})");
            assert_eq!(clean(o), o, "clean is idempotent on {o:?}");
        }
        for (i, o) in [
            (".", "."),
            ("/.", "."),
            ("////", "/"),
            ("x/", "x"),
            ("abc", "abc"),
            ("abc/def", "def"),
            ("a/b/.x", ".x"),
            ("a/b/c.", "c."),
            ("a/b/c.x", "c.x"),
            // Base does not clean: the last element of "a/b/.." is "..".
            ("a/b/..", ".."),
        ] {
            assert_eq!(base(i), o, "base({i:?})");
        }
        for (i, o) in [
            (".", "."),
            ("/.", "/"),
            ("////", "/"),
            ("/foo", "/"),
            ("x/", "x"),
            ("abc", "."),
            ("abc/def", "abc"),
            ("abc////def", "abc"),
            ("a/b/.x", "a/b"),
            ("a/b/c.", "a/b"),
            ("a/b/c.x", "a/b"),
            ("/a/", "/a"),
            ("a/", "a"),
            ("../x", ".."),
            ("a/../../x", ".."),
        ] {
            assert_eq!(dir(i), o, "dir({i:?})");
        }
    }
}
