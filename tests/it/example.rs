//! The README's first command (`scripts/demo`) renders the bundled
//! MediaWiki example into a directory, and what it writes is valid.

use crate::common;

use std::path::Path;

#[test]
fn readme_demo_renders_the_mediawiki_example() {
    let out = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = std::process::Command::new(root.join("scripts/demo"))
        .env("DEMO_OUT", out.path())
        .output()
        .expect("run scripts/demo");
    let run = common::Run::from(run);
    run.expect_code(0);
    let o = |p: &str| out.path().join(p);

    for json in [
        "srv/mediawiki/dbconfig.json",
        "srv/mediawiki/read-only.json",
        "srv/mediawiki/mcrouter-servers.json",
        "srv/pools/eqiad-appserver.json",
    ] {
        let text = std::fs::read_to_string(o(json)).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{json}: {e}"));
        assert!(v.is_object(), "{json}");
        assert!(
            run.stdout.contains(json),
            "demo output does not list {json}"
        );
    }

    // The resource fed by DNS: "localhost" needs no nameserver.
    let mc: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(o("srv/mediawiki/mcrouter-servers.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(mc["name"], "localhost");
    assert_eq!(mc["servers"], serde_json::json!(["127.0.0.1:11213"]));

    let php = o("srv/mediawiki/wmf-config/dbconfig.php");
    let lint = std::process::Command::new("php")
        .arg("-l")
        .arg(&php)
        .output()
        .unwrap();
    assert!(
        lint.status.success(),
        "{}",
        String::from_utf8_lossy(&lint.stdout)
    );

    // The PHP file MediaWiki includes holds the same data as the JSON it parses.
    let same = common::php(
        "$j = json_decode(file_get_contents($argv[1]), true); $p = include $argv[2]; \
         echo ($j == $p) ? 'same' : 'differ';",
        &[
            o("srv/mediawiki/dbconfig.json").to_str().unwrap(),
            php.to_str().unwrap(),
        ],
    );
    assert_eq!(same, "same");

    let nginx = std::fs::read_to_string(o("etc/nginx/conf.d/appservers-upstream.conf")).unwrap();
    assert!(nginx.contains("upstream "), "{nginx}");
    assert!(nginx.contains("weight="), "{nginx}");
    let haproxy = std::fs::read_to_string(o("etc/haproxy/conf.d/appservers-backend.cfg")).unwrap();
    assert!(haproxy.contains("backend "), "{haproxy}");

    // Running it again changes nothing.
    let again = std::process::Command::new(root.join("scripts/demo"))
        .env("DEMO_OUT", out.path())
        .output()
        .unwrap();
    let again = common::Run::from(again);
    again.expect_code(0);
    assert!(!again.stderr.contains("installed"), "{}", again.stderr);
}
