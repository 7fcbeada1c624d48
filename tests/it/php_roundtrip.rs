//! The `php` filter and `format = "php"` produce PHP that the real `php`
//! binary reads back as exactly the data, for every nasty value: no value
//! can end a string and become code.

use crate::common;

use serde_json::{Map, Value, json};

use common::{Fx, php, php_lint, yaml_str};

/// Strings that break naive PHP quoting, by name.
const NASTY: &[(&str, &str)] = &[
    ("single_quote", "it's"),
    ("double_quote", "say \"hi\""),
    ("backslashes", "C:\\path\\to\\file"),
    ("trailing_backslash", "ends with \\"),
    ("only_backslash", "\\"),
    ("backslash_quote", "\\'"),
    ("two_backslashes_quote", "\\\\'"),
    ("inject", "'];system('id');//"),
    ("inject_after_backslash", "\\'];system('id');//"),
    ("inject_double", "\"];system(\"id\");//"),
    ("php_open", "<?php system('id'); ?>"),
    ("php_close", "?>"),
    ("newlines", "a\nb\r\nc\rd\n"),
    ("nul", "a\0b"),
    ("nul_only", "\0"),
    ("e_acute", "é"),
    ("cjk", "日本"),
    ("emoji", "😀 ok"),
    ("interpolation", "$x {$y} ${z}"),
    ("tab", "\t"),
    ("empty", ""),
    ("heredoc", "<<<EOT\nx\nEOT;\n"),
    ("looks_like_int", "12"),
    ("looks_like_float", "1.5"),
    ("looks_like_bool", "true"),
    ("looks_like_null", "null"),
    ("padded", " padded "),
];

/// `v` with every object's keys sorted: the order `format = "php"` writes,
/// and (since `json_decode` keeps a document's order) the order the
/// documents are stored in.
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut pairs: Vec<(String, Value)> = m.into_iter().collect();
            pairs.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(pairs.into_iter().map(|(k, v)| (k, sorted(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// The document: every kind of JSON value, nasty strings as values and as
/// keys. Objects have sorted keys.
fn nasty_doc() -> Value {
    sorted(nasty_doc_unsorted())
}

fn nasty_doc_unsorted() -> Value {
    let strings: Map<String, Value> = NASTY
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    let as_keys: Map<String, Value> = NASTY
        .iter()
        .enumerate()
        .map(|(i, (_, v))| (v.to_string(), json!(i)))
        .collect();
    json!({
        "strings": strings,
        "nasty_keys": as_keys,
        "numeric_keys": {"0": "zero", "1": "one", "10": "ten", "-1": "minus one", "01": "zero one"},
        "ints": [i64::MAX, i64::MIN, -1, 0, 1],
        "floats": [0.1, 1e300, -2.5e-10, 1.0, -0.0, 100.0, 5e-324, f64::MAX, -1.5],
        "bools": [true, false],
        "null": null,
        "nested": {"a": {"b": {"c": [1, [2, [3, [[]]]], {"d": {}}]}}},
        "empty_map": {},
        "empty_list": [],
        "list_of_maps": [{"x": 1}, {"y": [null, "s"]}, {}],
    })
}

/// PHP: `$argv[1]` is the expected data as JSON, `$argv[2]` the generated
/// file, `$argv[3]` a key to select from what it returns ("" for none).
/// Prints whether the data is identical (`===`), both sides as JSON, and
/// whatever including the file printed (as hex).
const COMPARE: &str = r#"
$want = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
ob_start();
$got = include $argv[2];
$printed = ob_get_clean();
if ($argv[3] !== '') { $got = $got[$argv[3]]; }
$flags = JSON_PRESERVE_ZERO_FRACTION | JSON_UNESCAPED_UNICODE | JSON_UNESCAPED_SLASHES | JSON_THROW_ON_ERROR;
echo var_export($got === $want, true), "\n";
echo json_encode($want, $flags), "\n";
echo json_encode($got, $flags), "\n";
echo bin2hex($printed), "\n";
"#;

/// Lints `file`, includes it and checks it returns exactly the data in `want_json`.
fn assert_php_returns(fx: &Fx, file: &str, want_json: &str, select: &str) {
    let path = fx.path(file);
    let want_json = &serde_json::to_string(&sorted(
        serde_json::from_str(want_json).expect("want is JSON"),
    ))
    .expect("serialize");
    php_lint(&path);
    let want_path = fx.path("want.json");
    std::fs::write(&want_path, want_json).unwrap();
    let out = php(
        COMPARE,
        &[want_path.to_str().unwrap(), path.to_str().unwrap(), select],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "unexpected php output:\n{out}");
    assert_eq!(
        lines[3], "",
        "including {file} printed something (code ran?): {}",
        lines[3]
    );
    assert_eq!(
        lines[2], lines[1],
        "{file} does not return the data (got, want as JSON)"
    );
    assert_eq!(
        lines[0], "true",
        "{file} returns data that is == but not === (types or order differ)"
    );
}

const FILTER_TEMPLATE: &str = "<?php return {{ getv(key=\"/doc\") | json_decode | php }};\n";

/// A fixture with the document in `/doc`, a template using the `php`
/// filter (resource `filter`) and a `format = "php"` resource with
/// `decode = "json"` (resource `format`).
fn doc_fixture(doc_text: &str) -> Fx {
    let fx = Fx::new();
    fx.keys(&format!("/doc: {}\n", yaml_str(doc_text)))
        .template("doc.php.tera", FILTER_TEMPLATE)
        .resource(
            "filter",
            "[template]\nsrc = \"doc.php.tera\"\ndest = \"{out}/filter.php\"\nkeys = [\"/doc\"]\n",
        )
        .resource(
            "format",
            "[template]\nformat = \"php\"\ndecode = \"json\"\ndest = \"{out}/format.php\"\nkeys = [\"/doc\"]\n",
        );
    fx
}

#[test]
fn php_filter_and_format_php_round_trip_nasty_data() {
    let doc_text = serde_json::to_string(&nasty_doc()).unwrap();
    let fx = doc_fixture(&doc_text);
    fx.once().expect_code(0);
    assert_php_returns(&fx, "out/filter.php", &doc_text, "");
    assert_php_returns(&fx, "out/format.php", &doc_text, "doc");
}

#[test]
fn nasty_strings_round_trip_one_by_one() {
    // Each string alone as the whole document, so a failure names the value.
    for (name, s) in NASTY {
        let doc_text =
            serde_json::to_string(&sorted(json!({ "v": s, "list": [s], "key": { *s: s } })))
                .unwrap();
        let fx = doc_fixture(&doc_text);
        let run = fx.once();
        assert_eq!(run.code, 0, "{name}: {}", run.stderr);
        assert_php_returns(&fx, "out/filter.php", &doc_text, "");
        assert_php_returns(&fx, "out/format.php", &doc_text, "doc");
    }
}

/// Key file entries `/s/NAME: VALUE` for every nasty string, plus YAML
/// scalars that are not strings in YAML; and the map PHP must read back.
fn string_keys() -> (String, String) {
    let mut yaml = String::new();
    let mut want = Map::new();
    for (name, s) in NASTY {
        if *name == "nul" {
            // Written by hand to check the key file backend keeps a NUL given as "\0".
            yaml.push_str("/s/nul: \"a\\0b\"\n");
        } else {
            yaml.push_str(&format!("/s/{name}: {}\n", yaml_str(s)));
        }
        want.insert(name.to_string(), json!(s));
    }
    // Unquoted YAML scalars are stored as their text, and stay strings.
    yaml.push_str("/s/yaml_int: 12\n/s/yaml_bool: true\n/s/yaml_null: ~\n");
    want.insert("yaml_int".into(), json!("12"));
    want.insert("yaml_bool".into(), json!("true"));
    want.insert("yaml_null".into(), json!(""));
    (yaml, serde_json::to_string(&Value::Object(want)).unwrap())
}

#[test]
fn values_stay_strings_through_format_php_and_the_php_filter() {
    let (yaml, want) = string_keys();
    let fx = Fx::new();
    fx.keys(&yaml)
        .template(
            "strings.php.tera",
            concat!(
                "<?php\nreturn [\n",
                "{% for k in ls(path=\"/s\") %}    {{ k | php }} => {{ getv(key=\"/s/\" ~ k) | php }},\n{% endfor %}",
                "];\n",
            ),
        )
        .resource(
            "filter",
            "[template]\nsrc = \"strings.php.tera\"\ndest = \"{out}/filter.php\"\nkeys = [\"/s\"]\n",
        )
        .resource(
            "format",
            "[template]\nformat = \"php\"\ndest = \"{out}/format.php\"\nkeys = [\"/s\"]\n",
        );
    fx.once().expect_code(0);
    assert_php_returns(&fx, "out/filter.php", &want, "");
    assert_php_returns(&fx, "out/format.php", &want, "s");

    // The injection attempt is one string, and running the file runs nothing.
    let code = "$r = include $argv[1]; echo $r['s']['inject'], '|', bin2hex($r['s']['nul']);";
    let out = php(code, &[fx.path("out/format.php").to_str().unwrap()]);
    assert_eq!(out, "'];system('id');//|610062");
    assert!(!out.contains("uid="), "{out}");
}

#[test]
fn an_integer_php_cannot_represent_is_an_error_and_writes_nothing() {
    let doc_text = r#"{"ok": 1, "big": 18446744073709551615}"#;
    let fx = doc_fixture(doc_text);
    let run = fx.once();
    run.expect_code(2);
    assert_eq!(
        fx.out_files(),
        Vec::<String>::new(),
        "a failed render wrote files"
    );
    for res in ["filter", "format"] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{res}: ")))
            .unwrap_or_else(|| panic!("no error for resource {res}:\n{}", run.stderr));
        assert!(
            line.contains("18446744073709551615") && line.contains("PHP"),
            "the error does not name the value and the problem: {line}"
        );
    }

    // An existing file is left as it was.
    std::fs::write(fx.path("out/format.php"), "<?php return [];\n").unwrap();
    fx.once().expect_code(2);
    assert_eq!(fx.read("out/format.php"), "<?php return [];\n");
}
