//! Turning key trees into data, and data into JSON or PHP source.
//!
//! [`tree`] builds the nested map of a subtree of a snapshot (what the
//! `tree` template function and `format = "json" | "php"` resources use).
//! [`php_literal`] writes any template value as a PHP literal that PHP reads
//! back as exactly the same data: strings are single-quoted with `\` and `'`
//! escaped, so no value can end the string and become code.

use std::fmt::Write as _;

use serde_json::{Map, Value as Json};
use tera::Value;
use tera::value::{Key as TeraKey, ValueKind};

use crate::keypath;

/// Why a tree or an encoding could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A key holds a value and also has keys below it.
    #[error("key {leaf} is both a value and a directory (it has {child} below it)")]
    LeafAndDir {
        /// The key with a value (relative).
        leaf: String,
        /// A key below it (relative).
        child: String,
    },
    /// The base of the tree is itself a key with a value (and nothing is
    /// below it). The caller names the base.
    #[error("is a single key, not a directory (read it with getv)")]
    SingleKey,
    /// A key nested deeper than any configuration needs (and than the
    /// encoders' recursion should ever see).
    #[error("key {key:.200} is {depth} levels deep; trees are limited to {MAX_TREE_DEPTH} levels")]
    TooDeep {
        /// The key (relative).
        key: String,
        /// Its depth.
        depth: usize,
    },
    /// A value asked to be decoded is not JSON.
    #[error("value of key {key} is not valid JSON: {message}")]
    BadJson {
        /// The key (relative).
        key: String,
        /// What the parser said.
        message: String,
    },
    /// A value is not UTF-8 text.
    #[error("value of key {key} is not valid UTF-8")]
    NotUtf8 {
        /// The key (relative).
        key: String,
    },
    /// A value PHP has no literal for (or would read back differently).
    #[error("cannot write {what} as PHP: {why}")]
    NotPhp {
        /// The value, briefly.
        what: String,
        /// Why not.
        why: &'static str,
    },
}

/// How leaves are turned into data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Decode {
    /// Values stay strings, exactly as stored.
    #[default]
    String,
    /// Each value is parsed as JSON.
    Json,
}

/// The value of a stored key as text, or an error naming the key.
pub fn value_str<'a>(rel_key: &str, v: &'a [u8]) -> Result<&'a str, EncodeError> {
    std::str::from_utf8(v).map_err(|_| EncodeError::NotUtf8 {
        key: rel_key.to_string(),
    })
}

/// Decodes one leaf.
pub fn decode_leaf(rel_key: &str, v: &[u8], decode: Decode) -> Result<Json, EncodeError> {
    let s = value_str(rel_key, v)?;
    match decode {
        Decode::String => Ok(Json::String(s.to_string())),
        Decode::Json => serde_json::from_str(s).map_err(|e| EncodeError::BadJson {
            key: rel_key.to_string(),
            message: e.to_string(),
        }),
    }
}

/// The deepest key a tree (`tree`, `format`) may hold.
pub const MAX_TREE_DEPTH: usize = 100;

/// Builds a nested map from `(relative key, value)` pairs given in key
/// order. A key that holds a value and also has keys below it is an error
/// naming both; so is the base key itself (`/`) holding a value.
pub fn build_tree<'a, I>(entries: I, decode: Decode) -> Result<Json, EncodeError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    let mut root = Map::new();
    let mut leaves: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut first_leaf_is_base = false;
    let mut dir_paths: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (rel, v) in entries {
        if rel == "/" {
            first_leaf_is_base = true;
            continue;
        }
        if first_leaf_is_base {
            return Err(EncodeError::LeafAndDir {
                leaf: "/".into(),
                child: rel.to_string(),
            });
        }
        let depth = rel.matches('/').count();
        if depth > MAX_TREE_DEPTH {
            return Err(EncodeError::TooDeep {
                key: rel.to_string(),
                depth,
            });
        }
        let value = decode_leaf(rel, v, decode)?;
        let parts: Vec<&str> = rel.strip_prefix('/').unwrap_or(rel).split('/').collect();
        let Some((last, dirs)) = parts.split_last() else {
            continue;
        };
        let mut node = &mut root;
        let mut walked = String::new();
        for d in dirs {
            walked.push('/');
            walked.push_str(d);
            dir_paths.insert(walked.clone());
            if leaves.contains(&walked) {
                return Err(EncodeError::LeafAndDir {
                    leaf: walked,
                    child: rel.to_string(),
                });
            }
            let entry = node
                .entry((*d).to_string())
                .or_insert_with(|| Json::Object(Map::new()));
            node = match entry {
                Json::Object(m) => m,
                _ => {
                    return Err(EncodeError::LeafAndDir {
                        leaf: walked,
                        child: rel.to_string(),
                    });
                }
            };
        }
        if node.contains_key(*last) {
            return Err(EncodeError::LeafAndDir {
                leaf: rel.to_string(),
                child: format!("{rel}/..."),
            });
        }
        node.insert((*last).to_string(), value);
        leaves.insert(rel.to_string());
    }
    // Keys arrive in byte order, where `a-b` sorts before the directory `a`:
    // sort every directory level by name (decoded values keep their order).
    sort_dirs(&mut root, "", &dir_paths);
    if first_leaf_is_base && root.is_empty() {
        return Err(EncodeError::SingleKey);
    }
    Ok(Json::Object(root))
}

fn sort_dirs(map: &mut Map<String, Json>, path: &str, dirs: &std::collections::HashSet<String>) {
    map.sort_keys();
    for (k, v) in map.iter_mut() {
        let p = format!("{path}/{k}");
        if let Json::Object(m) = v
            && dirs.contains(&p)
        {
            sort_dirs(m, &p, dirs);
        }
    }
}

/// The nested map of `entries` (absolute keys in key order, each once:
/// see [`crate::store::Snapshot::under`]), named relative to the absolute `base`.
/// `decode` applies to every leaf.
pub fn tree<'a, I>(entries: I, base: &str, decode: Decode) -> Result<Json, EncodeError>
where
    I: IntoIterator<Item = (&'a str, &'a [u8])>,
{
    build_tree(
        entries
            .into_iter()
            .map(|(k, v)| (keypath::relative(base, k).unwrap_or(k), v)),
        decode,
    )
}

/// Sorts every object's keys, recursively (objects decoded from values
/// otherwise keep their document order).
pub fn sort_keys(v: &mut Json) {
    match v {
        Json::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Json::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// JSON text of a tree: sorted keys, two-space indent, trailing newline.
pub fn json_document(v: &Json) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

/// A PHP file that returns the data: `<?php return [...];`.
pub fn php_document(v: &Value) -> Result<String, EncodeError> {
    let mut s = String::from(
        "<?php\n// Generated by liveconf. Do not edit: changes are overwritten.\nreturn ",
    );
    write_php(&mut s, v, 0)?;
    s.push_str(";\n");
    Ok(s)
}

/// A PHP literal for `v` (arrays, single-quoted strings, ints, floats, bools, null).
pub fn php_literal(v: &Value) -> Result<String, EncodeError> {
    let mut s = String::new();
    write_php(&mut s, v, 0)?;
    Ok(s)
}

/// A single-quoted PHP string: only `\` and `'` need escaping there.
pub fn php_string(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\\' || c == '\'' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
}

fn brief(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 40 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

fn write_php_int(out: &mut String, v: &Value) -> Result<(), EncodeError> {
    match v.as_i64() {
        Some(i) if i == i64::MIN => {
            // `-9223372036854775808` is parsed by PHP as -(float), so spell it as an expression.
            out.push_str("PHP_INT_MIN");
            Ok(())
        }
        Some(i) => {
            let _ = write!(out, "{i}");
            Ok(())
        }
        None => Err(EncodeError::NotPhp {
            what: brief(v),
            why: "integer out of PHP's 64-bit range",
        }),
    }
}

fn write_php_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NAN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "INF" } else { "-INF" });
    } else {
        // `{:?}` is the shortest text that reads back as the same f64, and
        // always has a `.` or an exponent, so PHP reads a float, not an int.
        let _ = write!(out, "{f:?}");
    }
}

fn write_key(out: &mut String, k: &TeraKey<'_>) -> Result<(), EncodeError> {
    match k {
        TeraKey::Bool(b) => out.push_str(if *b { "1" } else { "0" }),
        TeraKey::U64(_) | TeraKey::I64(_) | TeraKey::U128(_) | TeraKey::I128(_) => {
            write_php_int(out, &k.as_value())?
        }
        TeraKey::String(_) | TeraKey::Str(_) => php_string(out, k.as_str().unwrap_or_default()),
        _ => php_string(out, &k.as_value().to_string()),
    }
    Ok(())
}

fn indent(out: &mut String, depth: usize) {
    for _ in 0..depth {
        out.push_str("    ");
    }
}

fn write_php(out: &mut String, v: &Value, depth: usize) -> Result<(), EncodeError> {
    match v.kind() {
        ValueKind::Undefined => {
            return Err(EncodeError::NotPhp {
                what: "an undefined value".into(),
                why: "it has no value (a misspelt variable?)",
            });
        }
        ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.as_bool() == Some(true) {
            "true"
        } else {
            "false"
        }),
        ValueKind::I64 | ValueKind::U64 | ValueKind::I128 | ValueKind::U128 => {
            write_php_int(out, v)?
        }
        ValueKind::F64 => write_php_float(out, v.as_f64().unwrap_or(f64::NAN)),
        ValueKind::String => php_string(out, v.as_str().unwrap_or_default()),
        ValueKind::Bytes => {
            let b = v.as_bytes().unwrap_or_default();
            match std::str::from_utf8(b) {
                Ok(s) => php_string(out, s),
                Err(_) => {
                    return Err(EncodeError::NotPhp {
                        what: "a byte string".into(),
                        why: "it is not UTF-8",
                    });
                }
            }
        }
        ValueKind::Array => {
            let items = v.as_array().unwrap_or_default();
            if items.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push_str("[\n");
            for item in items {
                indent(out, depth + 1);
                write_php(out, item, depth + 1)?;
                out.push_str(",\n");
            }
            indent(out, depth);
            out.push(']');
        }
        ValueKind::Map => {
            let Some(map) = v.as_map() else {
                return Ok(());
            };
            if map.is_empty() {
                out.push_str("[]");
                return Ok(());
            }
            out.push_str("[\n");
            for (k, item) in map.iter() {
                indent(out, depth + 1);
                write_key(out, k)?;
                out.push_str(" => ");
                write_php(out, item, depth + 1)?;
                out.push_str(",\n");
            }
            indent(out, depth);
            out.push(']');
        }
        _ => {
            return Err(EncodeError::NotPhp {
                what: brief(v),
                why: "PHP has no literal for this kind of value",
            });
        }
    }
    Ok(())
}

/// Converts JSON data into a template value (maps keep sorted key order).
pub fn to_tera(v: &Json) -> Value {
    match v {
        Json::Null => Value::none(),
        Json::Bool(b) => Value::from(*b),
        Json::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                Value::from(n.as_f64().unwrap_or(f64::NAN))
            }
        }
        Json::String(s) => Value::from(s.as_str()),
        Json::Array(a) => Value::from(a.iter().map(to_tera).collect::<Vec<_>>()),
        Json::Object(m) => {
            let mut out = tera::Map::new();
            for (k, v) in m {
                out.insert(TeraKey::String(k.as_str().into()), to_tera(v));
            }
            Value::from(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Key, Snapshot, Val};

    #[test]
    fn a_key_deeper_than_the_limit_is_refused_by_name_not_by_stack_overflow() {
        let deep = "/x".repeat(20_000);
        let ok = "/y".repeat(MAX_TREE_DEPTH);
        let e = build_tree([(deep.as_str(), &b"v"[..])], Decode::String).unwrap_err();
        assert!(
            matches!(e, EncodeError::TooDeep { depth: 20_000, .. }),
            "{e}"
        );
        assert!(e.to_string().len() < 400, "{e}");
        assert!(build_tree([(ok.as_str(), &b"v"[..])], Decode::String).is_ok());
    }

    #[test]
    fn a_base_that_is_a_single_key_says_so() {
        let e = build_tree([("/", &b"v"[..])], Decode::String).unwrap_err();
        assert!(matches!(e, EncodeError::SingleKey), "{e}");
    }

    /// The tree of every key at or below `base`.
    fn tree_at(s: &Snapshot, base: &str, decode: Decode) -> Result<Json, EncodeError> {
        tree(s.under(&[base.to_string()]), base, decode)
    }

    fn snap(pairs: &[(&str, &str)]) -> Snapshot {
        Snapshot::from_pairs(
            1,
            pairs
                .iter()
                .map(|(k, v)| (Key::from(*k), Val::from(v.as_bytes()))),
        )
    }

    #[test]
    fn tree_nests_relative_to_base() {
        let s = snap(&[("/p/a/x", "1"), ("/p/a/y", "2"), ("/p/b", "3"), ("/q", "4")]);
        let t = tree_at(&s, "/p", Decode::String).unwrap();
        assert_eq!(t, serde_json::json!({"a": {"x": "1", "y": "2"}, "b": "3"}));
    }

    #[test]
    fn tree_levels_are_sorted_by_name() {
        // Byte order of full keys puts `/a-b` before `/a/x`; names sort `a` first.
        let s = snap(&[
            ("/p/a-b", "1"),
            ("/p/a/x", "2"),
            ("/p/a/w-z", "3"),
            ("/p/a/w/q", "4"),
        ]);
        let t = tree_at(&s, "/p", Decode::String).unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            r#"{"a":{"w":{"q":"4"},"w-z":"3","x":"2"},"a-b":"1"}"#
        );
    }

    #[test]
    fn tree_refuses_leaf_that_is_also_a_directory() {
        let s = snap(&[("/p/a", "1"), ("/p/a/x", "2")]);
        let e = tree_at(&s, "/p", Decode::String).unwrap_err().to_string();
        assert!(e.contains("/a") && e.contains("/a/x"), "{e}");
    }

    #[test]
    fn tree_decodes_json_and_names_bad_keys() {
        let s = snap(&[("/p/a", "{\"w\": 10}"), ("/p/b", "nope")]);
        let e = tree_at(&s, "/p", Decode::Json).unwrap_err().to_string();
        assert!(e.contains("/b"), "{e}");
        let s = snap(&[("/p/a", "{\"w\": 10}")]);
        assert_eq!(
            tree_at(&s, "/p", Decode::Json).unwrap(),
            serde_json::json!({"a": {"w": 10}})
        );
    }

    #[test]
    fn php_strings_cannot_escape() {
        let mut s = String::new();
        php_string(&mut s, "'];system('id');//\\");
        assert_eq!(s, r"'\'];system(\'id\');//\\'");
    }

    #[test]
    fn php_refuses_out_of_range_integers() {
        assert!(php_literal(&Value::from(u64::MAX)).is_err());
        assert_eq!(php_literal(&Value::from(i64::MIN)).unwrap(), "PHP_INT_MIN");
        assert_eq!(php_literal(&Value::from(1.0f64)).unwrap(), "1.0");
    }
}
