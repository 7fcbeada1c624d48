//! The MediaWiki example's `dbconfig.json` and `dbconfig.php` carry the same
//! data in the same order: PHP's strict `===` (which compares order) holds
//! between the decoded JSON and the included PHP array, and each section's
//! loads list its primary first, then the other hosts sorted — what
//! MediaWiki's LBFactoryMulti expects, whichever file an admin wires.
//! Rendered by the real binary from the example's key file, checked by real
//! `php`.

use crate::common;

use std::path::Path;

/// Renders the example (file backend) into a new directory, its key file
/// edited by `edits` (text replacements, each expected once); returns the
/// directory.
fn render_example(edits: &[(&str, &str)]) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let mut keys = std::fs::read_to_string(root.join("examples/mediawiki/keys.yaml")).unwrap();
    for (from, to) in edits {
        assert_eq!(keys.matches(from).count(), 1, "{from} in keys.yaml");
        keys = keys.replace(from, to);
    }
    let keys_file = out.path().join("keys.yaml");
    std::fs::write(&keys_file, keys).unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
    c.args(["render", "--once", "--no-reload", "--config"])
        .arg(root.join("examples/mediawiki/liveconf.toml"))
        .arg("--file")
        .arg(&keys_file)
        .arg("--dest-root")
        .arg(out.path())
        .arg("--state-dir")
        .arg(state.path())
        .env_remove("RUST_LOG");
    common::Run::from(c.output().expect("run liveconf")).expect_code(0);
    out
}

/// In PHP: the JSON decoded `===` the included array, and in both, each
/// section's loads are its primary then the other hosts sorted. Prints
/// `ok`, or one line per difference.
const CHECK: &str = r#"
$j = json_decode(file_get_contents($argv[1]), true, 512, JSON_THROW_ON_ERROR);
$p = include $argv[2];
$bad = [];
if ($j !== $p) {
    $bad[] = ($j == $p) ? "same data, different order (== but not ===)" : "different data";
}
foreach (['json' => $j, 'php' => $p] as $name => $doc) {
    foreach ($doc['sectionLoads'] as $s => $loads) {
        $hosts = array_map('strval', array_keys($loads));
        $primary = $doc['masters'][$s];
        if ($hosts[0] !== $primary) {
            $bad[] = "$name: section $s starts with $hosts[0], not its primary $primary";
        }
        $rest = array_slice($hosts, 1);
        $sorted = $rest;
        sort($sorted, SORT_STRING);
        if ($rest !== $sorted) {
            $bad[] = "$name: section $s: the hosts after the primary are not sorted: " . implode(',', $rest);
        }
    }
}
echo $bad ? implode("\n", $bad) : 'ok';
"#;

fn check(out: &Path) {
    let json = out.join("srv/mediawiki/dbconfig.json");
    let php = out.join("srv/mediawiki/wmf-config/dbconfig.php");
    common::php_lint(&php);
    let verdict = common::php(CHECK, &[json.to_str().unwrap(), php.to_str().unwrap()]);
    assert_eq!(
        verdict,
        "ok",
        "\n{}\n{}",
        std::fs::read_to_string(&json).unwrap(),
        std::fs::read_to_string(&php).unwrap()
    );
}

#[test]
fn dbconfig_json_and_php_are_strictly_equal_with_each_primary_first() {
    let out = render_example(&[]);
    // The example has a primary that is not first by name (s2: db1197, with
    // the former primary db1162 as a replica), so order is really tested.
    let json = std::fs::read_to_string(out.path().join("srv/mediawiki/dbconfig.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["masters"]["s2"], "db1197", "{json}");
    assert!(v["sectionLoads"]["s2"].get("db1162").is_some(), "{json}");
    check(out.path());
}

#[test]
fn after_a_failover_both_files_list_the_new_primary_first() {
    // s1 fails over to its last host by name; s3's primary moves too.
    let out = render_example(&[
        (r#"s1: "db1163""#, r#"s1: "db1232""#),
        (r#"s3: "db1157""#, r#"s3: "db1189""#),
    ]);
    let json = std::fs::read_to_string(out.path().join("srv/mediawiki/dbconfig.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let first = |s: &str| {
        v["sectionLoads"][s]
            .as_object()
            .and_then(|m| m.keys().next().cloned())
            .unwrap_or_default()
    };
    assert_eq!(first("s1"), "db1232", "{json}");
    assert_eq!(first("s3"), "db1189", "{json}");
    check(out.path());
}
