//! Property tests (proptest) for the parsers and encoders that untrusted or
//! hand-written input goes through:
//!
//! - the resource parser (`resource::load`) never panics, and its errors
//!   name the file, in one line;
//! - the key-file parser (`backend::file::load`) never panics, on any text
//!   in any of its formats; every scalar of a valid document becomes one key;
//! - key path arithmetic (`keypath`): `absolute`/`relative` round-trip,
//!   `normalize_prefix` is idempotent and canonical;
//! - the PHP encoder: any JSON value, encoded by `php_literal(to_tera(v))`,
//!   is read back by the real `php` as exactly `json_decode(JSON, true)`
//!   (one php process per case, 32 values per case);
//! - the JSON encoders: `format = "json"` documents and the
//!   `json_decode | json_encode` filters round-trip through serde_json.
//!
//! 64 cases per property by default; `PROPTEST_CASES=5000 cargo test --test
//! properties -- --nocapture` runs longer. Every failure found became a
//! plain `#[test]` at the end of this file.

use crate::common;

use std::path::Path;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Value as Json, json};

use liveconf::encode;
use liveconf::keypath;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: cases(),
        // Failures become plain regression tests below, not files.
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `test` over `strategy`, panicking with the minimal failing input.
fn check<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let start = std::time::Instant::now();
    match runner().run(&strategy, test) {
        Ok(()) => println!(
            "property {name}: {} cases passed in {:.1}s",
            cases(),
            start.elapsed().as_secs_f64()
        ),
        Err(e) => panic!("property {name} failed: {e}"),
    }
}

// ------------------------------------------------------------- strategies

/// Strings that break quoting: quotes, backslashes, NUL, PHP tags,
/// interpolation, numeric-looking text, non-ASCII; or anything at all.
fn nasty_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("'"),
        Just("\\"),
        Just("\0"),
        Just("?>"),
        Just("<?php"),
        Just("\""),
        Just("$x"),
        Just("{$y}"),
        Just("${z}"),
        Just("\n"),
        Just("\r\n"),
        Just("é"),
        Just("😀"),
        Just("日本"),
        Just("'];"),
        Just("//"),
        Just("/*"),
        Just("#"),
        Just("0"),
        Just("1"),
        Just("-1"),
        Just("01"),
        Just("1.5"),
        Just("1e3"),
        Just(" "),
        Just("\u{2028}"),
        Just("\u{feff}"),
        Just("\u{7f}"),
        Just("true"),
        Just("null"),
    ];
    prop_oneof![
        3 => proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat()),
        2 => any::<String>(),
        1 => "[a-z0-9]{0,6}",
    ]
}

/// Whether serde_json (as liveconf builds it, without `float_roundtrip`)
/// parses the shortest text of `f` back to `f`.
fn serde_reads_exactly(f: f64) -> bool {
    serde_json::from_str::<f64>(&serde_json::to_string(&f).unwrap()).is_ok_and(|g| g == f)
}

fn json_leaf(serde_exact_floats: bool) -> impl Strategy<Value = Json> {
    let floats = any::<f64>().prop_filter("finite (and read back exactly, when asked)", move |f| {
        f.is_finite() && (!serde_exact_floats || serde_reads_exactly(*f))
    });
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        prop_oneof![Just(i64::MIN), Just(i64::MAX), Just(0i64), Just(-1i64)].prop_map(|i| json!(i)),
        floats.prop_map(|f| json!(f)),
        prop_oneof![
            Just(0.1f64),
            Just(-0.0),
            Just(1e300),
            Just(5e-324),
            Just(f64::MAX),
            Just(1.0),
            Just(1e16)
        ]
        .prop_map(|f| json!(f)),
        nasty_string().prop_map(Json::String),
    ]
}

/// Nested maps and lists of leaves (any finite float).
fn json_value() -> impl Strategy<Value = Json> {
    json_value_with(false)
}

fn json_value_with(serde_exact_floats: bool) -> impl Strategy<Value = Json> {
    json_leaf(serde_exact_floats).prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Json::Array),
            proptest::collection::vec((nasty_string(), inner), 0..5)
                .prop_map(|kv| Json::Object(kv.into_iter().collect())),
        ]
    })
}

/// A TOML basic string for any text.
fn toml_quote(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn toml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        nasty_string().prop_map(|s| toml_quote(&s)),
        prop_oneof![
            Just("x.tera"),
            Just("/srv/out.conf"),
            Just("/"),
            Just("json"),
            Just("php"),
            Just("string"),
            Just("../../etc/passwd"),
            Just("/etc/passwd"),
            Just("root"),
            Just("no-such-user-xyz"),
        ]
        .prop_map(toml_quote),
        "(0o|0|-|\\+|)[0-9]{0,6}".prop_map(|s| toml_quote(&s)),
        "(0o|0|-|)[0-9]{0,6}",
        "(0|1|-1|1\\.5|99999999999|18446744073709551616|1e400)(ns|us|ms|s|m|h|d|w|y|)(:[0-9]{0,4}(ms|s|m|h|)|)"
            .prop_map(|s| toml_quote(&s)),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        any::<bool>().prop_map(|b| b.to_string()),
        proptest::collection::vec(nasty_string(), 0..4)
            .prop_map(|v| format!("[{}]", v.iter().map(|s| toml_quote(s)).collect::<Vec<_>>().join(", "))),
        Just("{ a = 1 }".to_string()),
        Just("[[[]]]".to_string()),
        "[ -~]{0,12}",
    ]
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("src"),
        Just("dest"),
        Just("prefix"),
        Just("keys"),
        Just("mode"),
        Just("owner"),
        Just("group"),
        Just("uid"),
        Just("gid"),
        Just("check_cmd"),
        Just("reload_cmd"),
        Just("format"),
        Just("decode"),
        Just("command_timeout"),
        Just("create_dest_dirs"),
        Just("backup"),
        Just("wait"),
        Just("reload_splay"),
        Just("unknown_field"),
        Just("\"quoted key\""),
    ]
    .prop_map(str::to_string)
}

/// Text shaped like a resource file (a `[template]` table with known and
/// unknown fields and odd values), or arbitrary text.
fn resource_text() -> impl Strategy<Value = String> {
    let fields = proptest::collection::vec((field_name(), toml_value()), 0..12);
    let shaped = (
        prop_oneof![
            Just("[template]\n"),
            Just(""),
            Just("[other]\n"),
            Just("[[template]]\n"),
            Just("template = 1\n"),
        ],
        fields,
        prop_oneof![
            Just(""),
            Just("\n[extra]\nx = 1\n"),
            Just("\n[template.sub]\n"),
            Just("\u{0}"),
            Just("\"")
        ],
    )
        .prop_map(|(head, fields, tail)| {
            let mut s = head.to_string();
            for (k, v) in fields {
                s.push_str(&format!("{k} = {v}\n"));
            }
            s.push_str(tail);
            s
        });
    prop_oneof![
        6 => shaped,
        1 => any::<String>(),
        1 => "\\PC{0,200}",
    ]
}

/// Stems a resource file could have.
fn resource_stem() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("x".to_string()),
        Just("with space".to_string()),
        Just("ünïcödé".to_string()),
        Just("a.b".to_string()),
        Just("-dash".to_string()),
        "[a-z]{1,8}",
    ]
}

// --------------------------------------------------------- resource parser

fn load_resource(stem: &str, text: &str, global_prefix: &str) -> Result<(), TestCaseError> {
    let d = tempfile::tempdir().unwrap();
    let templates = d.path().join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("x.tera"), "x\n").unwrap();
    let conf_d = d.path().join("conf.d");
    std::fs::create_dir_all(&conf_d).unwrap();
    let path = conf_d.join(format!("{stem}.toml"));
    std::fs::write(&path, text).unwrap();
    match liveconf::resource::load(
        &path,
        &templates,
        global_prefix,
        liveconf::resource::PrefixRule::Join,
    ) {
        Ok(r) => {
            prop_assert_eq!(&r.file, &path);
            prop_assert!(r.dest.is_absolute(), "dest {:?} is not absolute", r.dest);
            prop_assert!(!r.keys.is_empty());
        }
        Err(e) => {
            let msg = e.to_string();
            prop_assert_eq!(&e.file, &path);
            prop_assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {}",
                msg
            );
            prop_assert!(!msg.contains('\n'), "error is not one line: {:?}", msg);
        }
    }
    Ok(())
}

#[test]
fn the_resource_parser_never_panics_and_its_errors_name_the_file_in_one_line() {
    check(
        "resource::load",
        (resource_stem(), resource_text(), nasty_string()),
        |(stem, text, prefix)| load_resource(&stem, &text, &prefix),
    );
}

// --------------------------------------------------------- key-file parser

fn load_keys(ext: &str, text: &str) -> Result<liveconf::store::Snapshot, String> {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join(format!("keys.{ext}"));
    std::fs::write(&p, text).unwrap();
    liveconf::backend::file::load(std::slice::from_ref(&p), 1).map_err(|e| {
        let m = e.to_string();
        assert!(
            m.contains(&p.display().to_string()),
            "error does not name the file: {m}"
        );
        m
    })
}

/// Some text in a key-file format: a serialised document, a mangled one, or junk.
fn key_file_text() -> impl Strategy<Value = (String, String)> {
    let ext = prop_oneof![Just("yaml"), Just("yml"), Just("json"), Just("toml")];
    (ext, json_value(), any::<String>(), 0usize..400, any::<u8>()).prop_map(
        |(ext, doc, junk, cut, pick)| {
            let doc = match doc {
                o @ Json::Object(_) => o,
                other => json!({ "k": other }),
            };
            let text = match ext {
                "json" => serde_json::to_string_pretty(&doc).unwrap(),
                "toml" => toml::to_string(&doc).unwrap_or_else(|_| junk.clone()),
                _ => serde_yaml_ng::to_string(&doc).unwrap_or_else(|_| junk.clone()),
            };
            let text = match pick % 4 {
                0 => text,
                1 => {
                    // Truncated at a character boundary.
                    let mut c = cut.min(text.len());
                    while !text.is_char_boundary(c) {
                        c -= 1;
                    }
                    text[..c].to_string()
                }
                2 => format!("{text}{junk}"),
                _ => junk,
            };
            (ext.to_string(), text)
        },
    )
}

#[test]
fn the_key_file_parser_never_panics_on_any_text() {
    check("backend::file::load", key_file_text(), |(ext, text)| {
        let _ = load_keys(&ext, &text);
        Ok(())
    });
}

fn scalar_leaves(v: &Json) -> usize {
    match v {
        Json::Array(a) => a.iter().map(scalar_leaves).sum(),
        Json::Object(m) => m.values().map(scalar_leaves).sum(),
        _ => 1,
    }
}

/// Object keys that are plain path components.
fn plain_keys(v: &Json) -> Json {
    match v {
        Json::Array(a) => Json::Array(a.iter().map(plain_keys).collect()),
        Json::Object(m) => Json::Object(
            m.iter()
                .enumerate()
                .map(|(i, (k, v))| {
                    let k: String = k.chars().filter(|c| *c != '/' && !c.is_control()).collect();
                    (format!("{i}{k}"), plain_keys(v))
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

#[test]
fn every_scalar_of_a_valid_key_file_becomes_one_key() {
    check(
        "backend::file::load (valid documents)",
        (json_value(), prop_oneof![Just("json"), Just("yaml")]),
        |(doc, ext)| {
            let doc = plain_keys(&json!({ "root": doc }));
            let text = if ext == "json" {
                serde_json::to_string(&doc).unwrap()
            } else {
                serde_yaml_ng::to_string(&doc).unwrap()
            };
            let snap = load_keys(ext, &text).map_err(TestCaseError::fail)?;
            prop_assert_eq!(snap.len(), scalar_leaves(&doc), "{}", text);
            Ok(())
        },
    );
}

// ------------------------------------------------------------ key paths

fn path_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("/"),
        Just("//"),
        Just("."),
        Just(".."),
        Just("a"),
        Just("b-c"),
        Just(" "),
        Just("é"),
        Just("*"),
        Just("%2F"),
    ];
    prop_oneof![
        3 => proptest::collection::vec(piece, 0..8).prop_map(|v| v.concat()),
        1 => any::<String>(),
    ]
}

#[test]
fn key_paths_round_trip_and_prefixes_normalise_idempotently() {
    check(
        "keypath",
        (path_text(), path_text(), path_text()),
        |(prefix, key, other)| {
            let np = keypath::normalize_prefix(&prefix);
            // Canonical: "" or "/a/b" (no empty component, no trailing slash).
            prop_assert_eq!(keypath::normalize_prefix(&np), np.clone());
            prop_assert!(
                np.is_empty() || (np.starts_with('/') && !np.ends_with('/') && !np.contains("//"))
            );
            // Joining is normalising the concatenation.
            prop_assert_eq!(
                keypath::join_prefixes(&[&prefix, &other]),
                keypath::normalize_prefix(&format!("{prefix}/{other}"))
            );
            // absolute/relative round-trip for keys starting with '/'.
            let key = format!("/{key}");
            let abs = keypath::absolute(&np, &key);
            prop_assert_eq!(
                keypath::relative(&np, &abs),
                Some(key.as_str()),
                "abs {:?}",
                abs
            );
            // relative() only accepts keys at or below the prefix, whole
            // components (keys as etcd holds them: starting with '/'; for
            // the others see relative_to_the_root_always_starts_with_a_slash).
            let other = format!("/{other}");
            if let Some(rel) = keypath::relative(&np, &other) {
                prop_assert!(rel.starts_with('/'));
                prop_assert!(
                    other == np || other.starts_with(&format!("{np}/")) || np.is_empty(),
                    "{:?} is not below {:?} but relative gave {:?}",
                    other,
                    np,
                    rel
                );
                if rel != "/" {
                    prop_assert_eq!(keypath::absolute(&np, rel), other.clone());
                }
            }
            // A sibling with a longer name is never "below".
            if !np.is_empty() {
                let sibling = format!("{np}-old/x");
                prop_assert_eq!(keypath::relative(&np, &sibling), None);
            }
            // The literal directory of a glob is a wildcard-free prefix of it.
            let lit = keypath::glob_literal_dir(&other);
            prop_assert!(other.starts_with(lit));
            let wild = ['*', '?', '[', '{', '\\'];
            prop_assert!(
                !lit.contains(wild),
                "literal part {:?} of {:?} has a wildcard",
                lit,
                other
            );
            Ok(())
        },
    );
}

// ----------------------------------------------------------- PHP encoder

/// Writes a PHP file that returns the PHP literals of `vals` and compares
/// them (===) with `json_decode` of their JSON; returns php's verdict.
fn php_verdict(dir: &Path, vals: &[Json]) -> Result<String, String> {
    let mut src = String::from("<?php\n$got = [\n");
    for v in vals {
        let lit = encode::php_literal(&encode::to_tera(v))
            .map_err(|e| format!("php_literal({v}): {e}"))?;
        src.push_str(&lit);
        src.push_str(",\n");
    }
    src.push_str(
        "];\n$want = json_decode(file_get_contents($argv[1]), true, 4096);\n\
         if (!is_array($want)) { echo 'BAD JSON: ', json_last_error_msg(); exit; }\n\
         if (count($got) !== count($want)) { echo 'COUNT ', count($got), ' ', count($want); exit; }\n\
         $bad = [];\n\
         foreach ($want as $i => $w) { if ($got[$i] !== $w) { $bad[] = $i; } }\n\
         echo $bad ? 'DIFFERENT ' . json_encode($bad) . ' ' . var_export($got[$bad[0]], true) : 'same';\n",
    );
    let php_file = dir.join("values.php");
    let json_file = dir.join("values.json");
    std::fs::write(&php_file, src).unwrap();
    std::fs::write(
        &json_file,
        serde_json::to_string(&Json::Array(vals.to_vec())).unwrap(),
    )
    .unwrap();
    let out = std::process::Command::new("php")
        .arg(&php_file)
        .arg(&json_file)
        .output()
        .map_err(|e| format!("run php: {e}"))?;
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(s)
}

#[test]
fn any_json_value_round_trips_through_the_php_encoder_and_real_php() {
    assert!(
        common::have("php"),
        "php is required (scripts/test installs php-cli)"
    );
    let dir = tempfile::tempdir().unwrap();
    check(
        "php_literal(to_tera(v)) == json_decode(v) in php (32 values per case)",
        proptest::collection::vec(json_value(), 32),
        |vals| {
            let verdict = php_verdict(dir.path(), &vals).map_err(TestCaseError::fail)?;
            prop_assert_eq!(verdict.trim(), "same");
            Ok(())
        },
    );
}

#[test]
fn integers_php_cannot_represent_are_refused_not_rounded() {
    check(
        "php_literal refuses u64 > i64::MAX",
        (i64::MAX as u64 + 1)..=u64::MAX,
        |u| {
            let e = encode::php_literal(&encode::to_tera(&json!(u)));
            prop_assert!(e.is_err(), "{} encoded as {:?}", u, e);
            prop_assert!(e.unwrap_err().to_string().contains("range"));
            Ok(())
        },
    );
}

// ----------------------------------------------------------- JSON encoders

/// Compares pairs of JSON texts with PHP's `json_decode(.., true) ===`
/// (PHP parses numbers with correct rounding; serde_json as built here
/// does not always, so it cannot judge float exactness). Returns php's
/// verdict: "same", or the indices that differ.
fn php_json_same(dir: &Path, pairs: &[(String, String)]) -> String {
    let file = dir.join("pairs.json");
    let arr: Vec<Json> = pairs.iter().map(|(a, b)| json!([a, b])).collect();
    std::fs::write(&file, serde_json::to_string(&arr).unwrap()).unwrap();
    common::php(
        "$pairs = json_decode(file_get_contents($argv[1]), true);\
         $bad = [];\
         foreach ($pairs as $i => [$a, $b]) {\
           $x = json_decode($a, true, 4096); $y = json_decode($b, true, 4096);\
           if (json_last_error() !== 0 || $x !== $y) { $bad[] = $i; }\
         }\
         echo $bad ? 'DIFFERENT ' . json_encode($bad) : 'same';",
        &[&file.display().to_string()],
    )
}

/// `format = "json"` output (`json_document`) is exactly the data, as a
/// correct JSON parser (PHP's) reads it. 32 documents per php run.
#[test]
fn format_json_documents_are_exactly_the_data() {
    assert!(
        common::have("php"),
        "php is required (scripts/test installs php-cli)"
    );
    let dir = tempfile::tempdir().unwrap();
    check(
        "encode::json_document (32 values per case, judged by php)",
        proptest::collection::vec(json_value(), 32),
        |vals| {
            let pairs: Vec<(String, String)> = vals
                .iter()
                .map(|v| {
                    let doc = encode::json_document(v);
                    assert!(doc.ends_with('\n'));
                    (doc, serde_json::to_string(v).unwrap())
                })
                .collect();
            let verdict = php_json_same(dir.path(), &pairs);
            prop_assert_eq!(verdict.trim(), "same");
            Ok(())
        },
    );
}

/// A resource whose template re-encodes 32 stored JSON values with the
/// `json_decode | json_encode` filters, rendered by `render::render`.
struct JsonTemplate {
    _dir: tempfile::TempDir,
    res: liveconf::resource::Resource,
    templates: liveconf::templates::TemplateSet,
}

fn json_template() -> JsonTemplate {
    let dir = tempfile::tempdir().unwrap();
    let templates_dir = dir.path().join("templates");
    std::fs::create_dir_all(&templates_dir).unwrap();
    std::fs::write(
        templates_dir.join("rt.tera"),
        "[{% for v in getvs(pattern=\"/v/*\") %}{{ v | json_decode | json_encode }}{% if not loop.last %},\n{% endif %}{% endfor %}]",
    )
    .unwrap();
    let res_file = dir.path().join("rt.toml");
    std::fs::write(
        &res_file,
        "[template]\nsrc = \"rt.tera\"\ndest = \"/nonexistent/rt.json\"\nprefix = \"/p\"\nkeys = [\"/\"]\n",
    )
    .unwrap();
    let res = liveconf::resource::load(
        &res_file,
        &templates_dir,
        "",
        liveconf::resource::PrefixRule::Join,
    )
    .expect("resource");
    let templates = liveconf::templates::TemplateSet::load(&templates_dir);
    JsonTemplate {
        _dir: dir,
        res,
        templates,
    }
}

fn render_json_values(t: &JsonTemplate, vals: &[Json]) -> Result<String, String> {
    let snap = liveconf::store::Snapshot::from_pairs(
        1,
        vals.iter().enumerate().map(|(i, v)| {
            (
                format!("/p/v/{i:03}"),
                serde_json::to_string(v).unwrap().into_bytes(),
            )
        }),
    );
    let out = liveconf::render::render(
        &t.res,
        &snap,
        &t.templates,
        &liveconf::render::Env::default(),
    )
    .map_err(|e| e.to_string())?;
    String::from_utf8(out).map_err(|e| e.to_string())
}

fn json_filters_round_trip(name: &str, serde_exact_floats: bool) {
    assert!(
        common::have("php"),
        "php is required (scripts/test installs php-cli)"
    );
    let t = json_template();
    let dir = tempfile::tempdir().unwrap();
    check(
        name,
        proptest::collection::vec(json_value_with(serde_exact_floats), 32),
        |vals| {
            let out = render_json_values(&t, &vals).map_err(TestCaseError::fail)?;
            let want = serde_json::to_string(&Json::Array(vals)).unwrap();
            let verdict = php_json_same(dir.path(), &[(out.clone(), want.clone())]);
            prop_assert_eq!(
                verdict.trim(),
                "same",
                "liveconf wrote {} for {}",
                out,
                want
            );
            Ok(())
        },
    );
}

/// Values stored as JSON and re-encoded by a template with
/// `json_decode | json_encode` come out as the same data (strings, keys,
/// key order, integers, nesting). Floats are limited to those serde_json
/// reads back exactly: see the ignored test below for the others.
#[test]
fn json_decode_then_json_encode_in_a_template_round_trips() {
    json_filters_round_trip(
        "json_decode | json_encode (32 values per case, judged by php)",
        true,
    );
}

/// The same with any finite float: fails, because liveconf parses JSON
/// with serde_json built without `float_roundtrip`.
#[test]
fn json_decode_then_json_encode_round_trips_any_float() {
    json_filters_round_trip("json_decode | json_encode, any float", false);
}

// ------------------------------------------ regressions (plain, fixed inputs)

/// Deeply nested documents are refused with an error, not a stack overflow,
/// in every key-file format and in resource files.
#[test]
fn deeply_nested_documents_are_refused_not_overflowing_the_stack() {
    let n = 20_000;
    let open_close = "[".repeat(n) + &"]".repeat(n);
    for (ext, text) in [
        ("json", open_close.clone()),
        ("yaml", open_close.clone()),
        ("toml", format!("a = {open_close}")),
        (
            "toml",
            format!("a = {}1{}", "{b = ".repeat(n), "}".repeat(n)),
        ),
        ("toml", vec!["a"; 5_000].join(".") + " = 1"),
    ] {
        let e = load_keys(ext, &text).expect_err("a 20,000-deep document was accepted");
        assert!(e.contains("keys."), "{e}");
    }
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("deep.toml");
    std::fs::write(&p, format!("[template]\nkeys = {open_close}\n")).unwrap();
    let e = liveconf::resource::load(&p, d.path(), "", liveconf::resource::PrefixRule::Join)
        .unwrap_err();
    assert!(e.to_string().contains("deep.toml"), "{e}");
}

/// YAML aliases that expand exponentially ("billion laughs") are refused quickly.
#[test]
fn yaml_alias_bombs_are_refused_quickly() {
    let mut t = String::from(
        "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
    );
    let mut prev = 'a';
    for c in 'b'..='i' {
        t.push_str(&format!(
            "{c}: &{c} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"
        ));
        prev = c;
    }
    let start = std::time::Instant::now();
    let e = load_keys("yaml", &t).expect_err("a billion laughs were accepted");
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    println!("{e}");
}

/// Found by the json_decode | json_encode property: a float that changes by
/// one ULP on its way through liveconf. The expected text is what Rust's
/// correctly rounding parser and ryu agree on.
#[test]
fn json_decode_keeps_every_float_exactly() {
    for text in ["1.1957594196306473e-183", "-3.2453150407394235e-211"] {
        let f: f64 = text.parse().unwrap();
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            text,
            "not the shortest text"
        );
        let t = json_template();
        let out = render_json_values(&t, &[json!(f)]).unwrap();
        assert_eq!(
            out,
            format!("[{text}]"),
            "json_decode | json_encode changed {text}"
        );
    }
}

/// Found by the keypath property: with the root prefix (""), `relative`
/// returns a key that lacks the leading '/' as it is, although its
/// contract says the result always starts with '/'. End to end, `ls` then
/// lists such an etcd key (`noslash`) that `getv`/`exists` cannot reach
/// (they look up `/noslash`).
#[test]
fn relative_to_the_root_always_starts_with_a_slash() {
    // A key that is not a path is not below the root at all.
    assert!(keypath::relative("", "noslash").is_none_or(|r| r.starts_with('/')));
    assert_eq!(keypath::relative("", "/a"), Some("/a"));
}

/// Found while fuzzing the key-file parser: TOML key-file errors carry the
/// toml crate's multi-line snippet (source line, caret), so `render --once`
/// prints, and the daemon logs, one error over four lines. YAML and JSON
/// errors are one line; resource files (also TOML) are flattened to one.
#[test]
fn key_file_errors_are_one_line_in_every_format() {
    for (ext, text) in [
        ("yaml", "a: [1\n"),
        ("json", "{\"a\": [1\n"),
        ("toml", "a = [[[\n"),
    ] {
        let e = load_keys(ext, text).unwrap_err();
        assert!(e.contains("line"), "{ext}: no line number: {e}");
        assert!(
            !e.trim_end().contains('\n'),
            "{ext}: error spans lines:\n{e}"
        );
    }
}
