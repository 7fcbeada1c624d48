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
        if b[r] == b'/' {
            r += 1;
        } else if b[r] == b'.' && (r + 1 == n || b[r + 1] == b'/') {
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
}
