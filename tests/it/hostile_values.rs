//! Hostile values and keys: whatever an etcd writer puts in a value, it is
//! data — never template code, never PHP or JSON structure, never shell.
//! Values that cannot be text, huge values, huge prefixes and odd key names
//! render exactly or are refused with an error naming the key; liveconf
//! never crashes.

use crate::common;

use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};
use common::hardening::{assert_no_panic, file_daemon, p, status, unique};
use common::{Fx, Run, yaml_str};

const LIMIT: Duration = Duration::from_secs(30);

// ------------------------------------------------------------ etcd helpers

/// Writes raw byte keys and values to etcd with the etcd client, `per_txn`
/// puts per transaction.
fn put_raw(endpoint: &str, pairs: &[(Vec<u8>, Vec<u8>)], per_txn: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = etcd_client::Client::connect([endpoint], None)
            .await
            .expect("connect to etcd");
        for chunk in pairs.chunks(per_txn.max(1)) {
            let ops: Vec<etcd_client::TxnOp> = chunk
                .iter()
                .map(|(k, v)| etcd_client::TxnOp::put(k.clone(), v.clone(), None))
                .collect();
            c.txn(etcd_client::Txn::new().and_then(ops))
                .await
                .expect("etcd txn");
        }
    });
}

fn put1(endpoint: &str, key: &[u8], value: &[u8]) {
    put_raw(endpoint, &[(key.to_vec(), value.to_vec())], 1);
}

/// `liveconf render --once` against etcd.
fn once_etcd(fx: &Fx, endpoint: &str, extra: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["render", "--once", "--confdir"])
        .arg(fx.dir.path())
        .arg("--state-dir")
        .arg(fx.path("state"))
        .args(["--endpoints", endpoint])
        .args(["--connect-timeout", "5s", "--request-timeout", "20s"])
        .args(extra)
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

fn etcd_daemon(fx: &Fx, endpoint: &str) -> Daemon {
    let confdir = p(fx, "");
    let state = p(fx, "state");
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--state-dir",
            &state,
            "--endpoints",
            endpoint,
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    )
}

fn resource(fx: &Fx, name: &str, body: &str) {
    fx.resource(name, &format!("[template]\n{body}"));
}

// ------------------------------------------------- template syntax in values

/// Values that look like template code are printed as they are, through
/// `getv`, `gets`, `tree | json_encode` and `format = "json"`.
#[test]
fn template_syntax_in_values_stays_literal_text() {
    let fx = Fx::new();
    let values = [
        ("getenv", "{{ getenv(name=\"HOME\") }}"),
        ("loop", "{% for i in range(end=3) %}LOOP{% endfor %}"),
        ("set", "{% set x = getv(key=\"/secret\") %}{{ x }}"),
        ("expr", "{{ 7 * 7 }}"),
        ("comment", "{# hidden #}shown"),
        ("raw", "{% raw %}{{ x }}{% endraw %}"),
        ("include", "{% include \"t.tera\" %}"),
        ("confd", "{{getv \"/secret\"}}"),
    ];
    let mut yaml = String::from("app:\n  secret: SECRET-VALUE\n");
    for (k, v) in &values {
        yaml.push_str(&format!("  {k}: {}\n", yaml_str(v)));
    }
    fx.keys(&yaml);
    let mut t = String::new();
    for (k, _) in &values {
        t.push_str(&format!("{k}=[{{{{ getv(key=\"/{k}\") }}}}]\n"));
    }
    t.push_str("{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}=[{{ kv.value }}]\n{% endfor %}");
    t.push_str("{{ tree(prefix=\"/\") | json_encode }}\n");
    fx.template("t.tera", &t);
    resource(
        &fx,
        "literal",
        "src = \"t.tera\"\ndest = \"{out}/literal.txt\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    resource(
        &fx,
        "literal-json",
        "format = \"json\"\ndest = \"{out}/literal.json\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    fx.once().expect_code(0);

    let mut sorted: Vec<(&str, &str)> = values.to_vec();
    sorted.push(("secret", "SECRET-VALUE"));
    sorted.sort();
    let mut want = String::new();
    for (k, v) in &values {
        want.push_str(&format!("{k}=[{v}]\n"));
    }
    for (k, v) in &sorted {
        want.push_str(&format!("/{k}=[{v}]\n"));
    }
    let map: Map<String, Value> = sorted
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    want.push_str(&serde_json::to_string(&Value::Object(map.clone())).unwrap());
    want.push('\n');
    let got = fx.read("out/literal.txt");
    assert_eq!(got, want);
    let home = std::env::var("HOME").unwrap_or_default();
    assert!(home.is_empty() || !got.contains(&format!("[{home}]")));
    assert!(!got.contains("LOOPLOOP") && !got.contains("[49]"));
    let parsed: Value = serde_json::from_str(&fx.read("out/literal.json")).unwrap();
    assert_eq!(parsed, Value::Object(map));
}

// ------------------------------------------------ PHP and JSON injection

/// Strings crafted to end a PHP or JSON string and inject code or
/// structure. Each one that PHP executed would create the marker file.
fn injections(marker: &str) -> Vec<(String, String)> {
    [
        ("php_quote", format!("'];touch('{marker}');//")),
        ("php_backslash_quote", format!("\\'];touch('{marker}');//")),
        (
            "php_double_backslash",
            format!("\\\\'];touch('{marker}');//"),
        ),
        ("php_trailing_backslash", "ends with \\".to_string()),
        ("php_close_open", format!("?><?php touch('{marker}'); ?>")),
        (
            "php_heredoc",
            format!("<<<EOT\n{{${{touch('{marker}')}}}}\nEOT;\n"),
        ),
        (
            "php_interpolation",
            format!("${{touch('{marker}')}} {{$x}}"),
        ),
        ("php_double_quote", format!("\"];touch(\"{marker}\");//")),
        ("php_comment", format!("*/ touch('{marker}'); /*")),
        ("php_nul", format!("a\0';touch('{marker}');//")),
        (
            "json_close",
            "\"}, \"admin\": true, \"x\": {\"y\": \"".to_string(),
        ),
        (
            "json_escape",
            "\\\", \"admin\": true, \"z\": \"".to_string(),
        ),
        (
            "json_unicode",
            "\u{2028}\u{2029}</script><script>alert(1)</script>".to_string(),
        ),
        ("json_control", "\u{1}\u{1f}\u{7f}\t\r\n".to_string()),
        ("looks_like_number", "12".to_string()),
        ("looks_like_json", "{\"admin\": true}".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

#[test]
fn php_and_json_injection_attempts_stay_strings() {
    let fx = Fx::new();
    let marker = std::env::temp_dir().join(unique("liveconf-php-pwned"));
    let marker_s = marker.display().to_string();
    let vals = injections(&marker_s);
    let mut yaml = String::from("app:\n");
    for (k, v) in &vals {
        yaml.push_str(&format!("  {k}: {}\n", yaml_str(v)));
    }
    // Injection strings as keys, too.
    yaml.push_str("keys:\n");
    for (i, (_, v)) in vals.iter().enumerate() {
        if !v.contains('/') && !v.contains('\0') {
            yaml.push_str(&format!("  {}: \"{i}\"\n", yaml_str(v)));
        }
    }
    fx.keys(&yaml);
    resource(
        &fx,
        "php-format",
        "format = \"php\"\ndest = \"{out}/format.php\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncheck_cmd = \"php -l {{src}}\"\n",
    );
    resource(
        &fx,
        "php-keys",
        "format = \"php\"\ndest = \"{out}/keys.php\"\nprefix = \"/keys\"\nkeys = [\"/\"]\ncheck_cmd = \"php -l {{src}}\"\n",
    );
    fx.template(
        "filter.php.tera",
        "<?php\nreturn [\n{% for kv in gets(pattern=\"/*\") %}  {{ kv.key | php }} => {{ kv.value | php }},\n{% endfor %}];\n",
    );
    resource(
        &fx,
        "php-filter",
        "src = \"filter.php.tera\"\ndest = \"{out}/filter.php\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncheck_cmd = \"php -l {{src}}\"\n",
    );
    fx.template(
        "enc.json.tera",
        "{\n{% for kv in gets(pattern=\"/*\") %}  {{ kv.key | json_encode }}: {{ kv.value | json_encode }}{% if not loop.last %},{% endif %}\n{% endfor %}}\n",
    );
    resource(
        &fx,
        "json-encode",
        "src = \"enc.json.tera\"\ndest = \"{out}/enc.json\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    resource(
        &fx,
        "json-format",
        "format = \"json\"\ndest = \"{out}/format.json\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    fx.once().expect_code(0);

    let by_name: Map<String, Value> = vals.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    let by_rel_key: Map<String, Value> = vals
        .iter()
        .map(|(k, v)| (format!("/{k}"), json!(v)))
        .collect();
    let keys_expected: Map<String, Value> = vals
        .iter()
        .enumerate()
        .filter(|(_, (_, v))| !v.contains('/') && !v.contains('\0'))
        .map(|(i, (_, v))| (v.clone(), json!(i.to_string())))
        .collect();

    // PHP: include each file and compare the data with what was stored,
    // in PHP itself (=== on arrays: same keys, same order, same types).
    for (file, want) in [
        ("out/format.php", &by_name),
        ("out/filter.php", &by_rel_key),
        ("out/keys.php", &keys_expected),
    ] {
        let want_file = fx.path(&format!("{}.expected.json", file.replace('/', "_")));
        std::fs::write(
            &want_file,
            serde_json::to_string(&Value::Object(want.clone())).unwrap(),
        )
        .unwrap();
        let verdict = common::php(
            "$got = include $argv[1]; $want = json_decode(file_get_contents($argv[2]), true);\
             ksort($got, SORT_STRING); ksort($want, SORT_STRING);\
             echo ($got === $want) ? 'same' : 'DIFFERENT: ' . var_export($got, true);",
            &[&p(&fx, file), &want_file.display().to_string()],
        );
        assert_eq!(verdict, "same", "{file}: PHP reads other data than stored");
        assert!(
            !marker.exists(),
            "{file}: a value was executed by PHP (marker {marker_s} created)"
        );
    }
    // JSON: both files parse, with exactly the stored strings (no key added).
    let enc: Value = serde_json::from_str(&fx.read("out/enc.json")).expect("enc.json parses");
    assert_eq!(enc, Value::Object(by_rel_key));
    let fmt: Value = serde_json::from_str(&fx.read("out/format.json")).expect("format.json parses");
    assert_eq!(fmt, Value::Object(by_name));
    assert!(enc.get("admin").is_none() && fmt.get("admin").is_none());
    let _ = std::fs::remove_file(&marker);
}

// ------------------------------------------------------- values and shells

/// Values never reach a shell: a resource with check and reload commands
/// renders values that would run `touch` if they were ever interpolated
/// into a command line — in `render --once` and in the daemon.
#[test]
fn values_never_reach_a_shell() {
    let fx = Fx::new();
    let marker = std::env::temp_dir().join(unique("liveconf-pwned"));
    let m = marker.display().to_string();
    let shelly = [
        format!("$(touch {m})"),
        format!("`touch {m}`"),
        format!("; touch {m}"),
        format!("' ; touch {m} ; '"),
        format!("\" ; touch {m} ; \""),
        format!("| touch {m}"),
        format!("\n touch {m}\n"),
        format!("&& touch {m}"),
    ];
    let yaml = |vals: &[String]| {
        let mut y = String::from("app:\n");
        for (i, v) in vals.iter().enumerate() {
            y.push_str(&format!("  v{i}: {}\n", yaml_str(v)));
        }
        y
    };
    fx.keys(&yaml(&shelly));
    fx.template(
        "s.tera",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    );
    // Not next to keys.yaml: the file backend's watcher would see the test
    // polling it (see crash_consistency.rs, the ignored settle test).
    let ran = common::hardening::mkdir(&fx, "hooks").join("ran");
    resource(
        &fx,
        "shell",
        &format!(
            "src = \"s.tera\"\ndest = \"{{out}}/shell.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n\
             check_cmd = \"test -s {{{{src}}}} && echo check >> {r}\"\n\
             reload_cmd = \"cat {{{{dest}}}} > /dev/null && echo reload >> {r}\"\n",
            r = ran.display()
        ),
    );
    fx.once().expect_code(0);
    assert_eq!(
        fx.read("hooks/ran"),
        "check\nreload\n",
        "the commands did not run"
    );
    assert!(fx.read("out/shell.conf").contains(&shelly[0]));
    assert!(!marker.exists(), "a value reached a shell: {m} exists");

    // The daemon, following changes to the values.
    let mut d = file_daemon(&fx, &[]);
    wait_for("the daemon's first render", LIMIT, || {
        d.log().contains("first render done")
    });
    let reversed: Vec<String> = shelly.iter().rev().cloned().collect();
    common::hardening::write_atomic(&fx.path("keys.yaml"), yaml(&reversed).as_bytes());
    wait_for("the changed values installed and reloaded", LIMIT, || {
        read_or_empty(&ran).lines().count() >= 4
    });
    assert!(read_or_empty(&fx.path("out/shell.conf")).starts_with(&format!("/v0={}", reversed[0])));
    assert!(!marker.exists(), "a value reached a shell: {m} exists");
    assert_eq!(d.stop(), Some(0));
}

// --------------------------------------------------- values that are not text

/// A value that is not UTF-8 fails the resources that read it with an error
/// naming the key; nothing is written for them; the daemon keeps running,
/// keeps serving the other resources, and renders once the value is fixed.
#[test]
fn a_value_that_is_not_utf8_is_refused_naming_the_key_and_the_daemon_keeps_running() {
    let etcd = Etcd::start();
    let url = etcd.endpoints();
    put1(&url, b"/bin/ok", b"fine");
    put1(&url, b"/bin/bad", b"caf\xe9 \xff\xfe");
    put1(&url, b"/other/x", b"1");
    let fx = Fx::new();
    fx.template("bad.tera", "{{ getv(key=\"/bad\") }}\n");
    resource(
        &fx,
        "reads-bad",
        "src = \"bad.tera\"\ndest = \"{out}/reads-bad.conf\"\nprefix = \"/bin\"\nkeys = [\"/\"]\n",
    );
    fx.template(
        "all.tera",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.value }}{% endfor %}\n",
    );
    resource(
        &fx,
        "gets-bad",
        "src = \"all.tera\"\ndest = \"{out}/gets-bad.conf\"\nprefix = \"/bin\"\nkeys = [\"/\"]\n",
    );
    resource(
        &fx,
        "json-bad",
        "format = \"json\"\ndest = \"{out}/json-bad.json\"\nprefix = \"/bin\"\nkeys = [\"/\"]\n",
    );
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    resource(
        &fx,
        "unrelated",
        "src = \"x.tera\"\ndest = \"{out}/unrelated.conf\"\nprefix = \"/other\"\nkeys = [\"/\"]\n",
    );
    std::fs::write(fx.path("out/reads-bad.conf"), "old\n").unwrap();

    let r = once_etcd(&fx, &url, &[]);
    r.expect_code(2);
    assert_no_panic("render --once", &r.stderr);
    for name in ["reads-bad", "gets-bad", "json-bad"] {
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{name}: render failed")))
            .unwrap_or_else(|| panic!("no failure for {name}:\n{}", r.stderr));
        println!("{line}");
        assert!(
            line.contains("/bad") && line.contains("UTF-8"),
            "{name}: the key or the cause is not named: {line}"
        );
    }
    assert_eq!(fx.read("out/reads-bad.conf"), "old\n");
    assert!(!fx.path("out/gets-bad.conf").exists());
    assert!(!fx.path("out/json-bad.json").exists());
    assert_eq!(fx.read("out/unrelated.conf"), "x=1\n");

    // The daemon: same refusal, still running, other resources still follow etcd.
    let mut d = etcd_daemon(&fx, &url);
    wait_for("the daemon's first render", LIMIT, || {
        d.log().contains("first render done")
    });
    etcd.put("/other/x", "2");
    wait_for("the unrelated resource follows etcd", LIMIT, || {
        read_or_empty(&fx.path("out/unrelated.conf")) == "x=2\n"
    });
    put1(&url, b"/bin/bad", b"\x80 still not text");
    std::thread::sleep(Duration::from_millis(300));
    assert!(d.exited().is_none(), "the daemon exited:\n{}", d.log());
    assert_eq!(fx.read("out/reads-bad.conf"), "old\n");
    let st = status(&fx);
    assert_eq!(st["resources"]["reads-bad"]["healthy"], false);
    assert!(
        st["resources"]["reads-bad"]["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("/bad"),
        "{st:#}"
    );
    // Fixed: every resource renders.
    etcd.put("/bin/bad", "café");
    wait_for("the fixed value rendered", LIMIT, || {
        read_or_empty(&fx.path("out/reads-bad.conf")) == "café\n"
            && read_or_empty(&fx.path("out/gets-bad.conf")) == "caféfine\n"
    });
    assert_no_panic("daemon", &d.log());
    assert_eq!(d.stop(), Some(0));
}

/// A key that is not UTF-8 is skipped with a warning naming it (lossily);
/// the rest of the prefix renders.
#[test]
fn a_key_that_is_not_utf8_is_skipped_with_a_warning_naming_it() {
    let etcd = Etcd::start();
    let url = etcd.endpoints();
    put1(&url, b"/nk/good", b"1");
    put1(&url, b"/nk/bad-\xff-key", b"2");
    let fx = Fx::new();
    resource(
        &fx,
        "nk",
        "format = \"json\"\ndest = \"{out}/nk.json\"\nprefix = \"/nk\"\nkeys = [\"/\"]\n",
    );
    let r = once_etcd(&fx, &url, &[]);
    r.expect_code(0);
    assert_no_panic("render --once", &r.stderr);
    let warn = r
        .stderr
        .lines()
        .find(|l| l.contains("not UTF-8"))
        .unwrap_or_else(|| panic!("no warning about the key:\n{}", r.stderr));
    println!("{warn}");
    assert!(warn.contains("/nk/bad-"), "key not named: {warn}");
    let v: Value = serde_json::from_str(&fx.read("out/nk.json")).unwrap();
    assert_eq!(v, json!({"good": "1"}));
}

// ----------------------------------------------------------- big and many

fn big_value(seed: u8, len: usize) -> Vec<u8> {
    // Printable, varied, no newline: easy to compare, not compressible to nothing.
    (0..len)
        .map(|i| b'!' + ((i as u64 * 7 + u64::from(seed) * 13 + (i as u64 >> 10)) % 90) as u8)
        .collect()
}

/// A 1.5 MiB value renders byte for byte, in `render --once` and when it
/// arrives through the daemon's watch. (etcd's default request limit is
/// exactly 1.5 MiB, so the test etcd allows 8 MiB.)
#[test]
fn a_value_of_one_and_a_half_mib_renders_exactly() {
    let etcd = Etcd::cluster(1, &["--max-request-bytes=8388608"]);
    let url = etcd.endpoints();
    let len = 3 * 1024 * 1024 / 2;
    let v1 = big_value(1, len);
    put1(&url, b"/large/v", &v1);
    let fx = Fx::new();
    fx.template("v.tera", "{{ getv(key=\"/v\") }}");
    resource(
        &fx,
        "large",
        "src = \"v.tera\"\ndest = \"{out}/large.conf\"\nprefix = \"/large\"\nkeys = [\"/\"]\n",
    );
    once_etcd(&fx, &url, &[]).expect_code(0);
    assert!(std::fs::read(fx.path("out/large.conf")).unwrap() == v1);

    let mut d = etcd_daemon(&fx, &url);
    wait_for("the daemon watching", LIMIT, || {
        d.log().contains("first render done")
    });
    let v2 = big_value(2, len);
    put1(&url, b"/large/v", &v2);
    wait_for("the second 1.5 MiB value installed", LIMIT, || {
        std::fs::read(fx.path("out/large.conf")).is_ok_and(|b| b == v2)
    });
    assert!(d.exited().is_none());
    assert_eq!(d.stop(), Some(0));
}

/// Several values near etcd's default size limit under one prefix (etcd
/// accepts each put: 1.5 MiB minus 4 KiB) add up to more than 4 MiB in one
/// range response page; the gRPC client's default 4 MiB decoding limit
/// then makes the whole snapshot fail, for every resource.
#[test]
fn several_large_values_under_one_prefix_render() {
    let etcd = Etcd::start(); // etcd's default --max-request-bytes (1.5 MiB)
    let url = etcd.endpoints();
    let len = 3 * 1024 * 1024 / 2 - 4096;
    let vals: Vec<Vec<u8>> = (0..3).map(|i| big_value(i, len)).collect();
    for (i, v) in vals.iter().enumerate() {
        put1(&url, format!("/large/v{i}").as_bytes(), v);
    }
    let fx = Fx::new();
    fx.template(
        "v.tera",
        "{% for v in getvs(pattern=\"/*\") %}{{ v }}\n{% endfor %}",
    );
    resource(
        &fx,
        "large",
        "src = \"v.tera\"\ndest = \"{out}/large.conf\"\nprefix = \"/large\"\nkeys = [\"/\"]\n",
    );
    let r = once_etcd(&fx, &url, &[]);
    println!("exit {}: {}", r.code, r.stderr.trim());
    r.expect_code(0);
    let mut want = Vec::new();
    for v in &vals {
        want.extend_from_slice(v);
        want.push(b'\n');
    }
    assert!(std::fs::read(fx.path("out/large.conf")).unwrap() == want);
}

/// 100,000 keys under one prefix (loaded with transactions), rendered by a
/// template (`gets`) and by `format = "json"`: every key, every value.
#[test]
fn one_hundred_thousand_keys_under_one_prefix_render() {
    let etcd = Etcd::cluster(1, &["--max-txn-ops=10000"]);
    let url = etcd.endpoints();
    const N: usize = 100_000;
    let started = Instant::now();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..N)
        .map(|i| {
            (
                format!("/many/k{i:06}").into_bytes(),
                format!("value-{i}").into_bytes(),
            )
        })
        .collect();
    put_raw(&url, &pairs, 10_000);
    println!("loaded {N} keys in {:?}", started.elapsed());
    let fx = Fx::new();
    fx.template(
        "many.tera",
        "{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    );
    resource(
        &fx,
        "many-template",
        "src = \"many.tera\"\ndest = \"{out}/many.txt\"\nprefix = \"/many\"\nkeys = [\"/\"]\n",
    );
    resource(
        &fx,
        "many-json",
        "format = \"json\"\ndest = \"{out}/many.json\"\nprefix = \"/many\"\nkeys = [\"/\"]\n",
    );
    let started = Instant::now();
    once_etcd(&fx, &url, &[]).expect_code(0);
    println!(
        "render --once of 2 resources over {N} keys: {:?}",
        started.elapsed()
    );
    let mut want = String::with_capacity(N * 24);
    for i in 0..N {
        want.push_str(&format!("/k{i:06}=value-{i}\n"));
    }
    assert!(fx.read("out/many.txt") == want, "many.txt differs");
    let v: Value = serde_json::from_str(&fx.read("out/many.json")).unwrap();
    let m = v.as_object().expect("an object");
    assert_eq!(m.len(), N);
    for i in [0, 1, 4999, 5000, 5001, 54321, N - 1] {
        assert_eq!(m[&format!("k{i:06}")], json!(format!("value-{i}")));
    }
    assert!(
        m.iter().enumerate().all(
            |(i, (k, v))| *k == format!("k{i:06}") && v.as_str() == Some(&format!("value-{i}"))
        )
    );
}

// ----------------------------------------------------------------- odd keys

/// Keys with `..`, `//`, `.`, spaces, tabs, quotes, glob characters,
/// percent-escapes and non-ASCII letters: each renders as exactly the key
/// it is (no normalisation, no path interpretation), through `format =
/// "json"`, `ls`, `gets` and `getv`; a key that is both a value and a
/// directory is refused naming both.
#[test]
fn keys_with_dots_slashes_spaces_and_unicode_render_as_written_or_are_refused_naming_the_key() {
    let etcd = Etcd::start();
    let url = etcd.endpoints();
    let keys: &[&str] = &[
        "/odd/dots/../x",
        "/odd/..",
        "/odd//double",
        "/odd/a/./b",
        "/odd/with space",
        "/odd/tab\tkey",
        "/odd/quote'\"q",
        "/odd/glob*?[x]{y}",
        "/odd/%2F",
        "/odd/ünï/ключ/日本",
        "/odd/trailing/",
    ];
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys
        .iter()
        .map(|k| (k.as_bytes().to_vec(), format!("val of {k}").into_bytes()))
        .collect();
    put_raw(&url, &pairs, 100);
    // A sibling prefix that must not leak in (`/odd` is not `/odd-sibling`).
    put1(&url, b"/odd-sibling/x", b"leak");
    let fx = Fx::new();
    resource(
        &fx,
        "odd-json",
        "format = \"json\"\ndest = \"{out}/odd.json\"\nprefix = \"/odd\"\nkeys = [\"/\"]\n",
    );
    let mut t = String::from(
        "{% for c in ls(path=\"/\") %}[{{ c }}]{% endfor %}\n{% for kv in gets(pattern=\"/*\") %}{{ kv.key }}={{ kv.value }}\n{% endfor %}",
    );
    for k in keys {
        let rel = k.strip_prefix("/odd").unwrap();
        if !rel.contains('`') {
            t.push_str(&format!("{{{{ getv(key=`{rel}`) }}}}\n"));
        }
    }
    fx.template("odd.tera", &t);
    resource(
        &fx,
        "odd-template",
        "src = \"odd.tera\"\ndest = \"{out}/odd.txt\"\nprefix = \"/odd\"\nkeys = [\"/\"]\n",
    );
    let r = once_etcd(&fx, &url, &[]);
    println!("{}", r.stderr);
    r.expect_code(0);
    assert_no_panic("render --once", &r.stderr);

    let v: Value = serde_json::from_str(&fx.read("out/odd.json")).unwrap();
    assert_eq!(
        v,
        json!({
            "": {"double": "val of /odd//double"},
            "%2F": "val of /odd/%2F",
            "..": "val of /odd/..",
            "a": {".": {"b": "val of /odd/a/./b"}},
            "dots": {"..": {"x": "val of /odd/dots/../x"}},
            "glob*?[x]{y}": "val of /odd/glob*?[x]{y}",
            "quote'\"q": "val of /odd/quote'\"q",
            "tab\tkey": "val of /odd/tab\tkey",
            "trailing": {"": "val of /odd/trailing/"},
            "with space": "val of /odd/with space",
            "ünï": {"ключ": {"日本": "val of /odd/ünï/ключ/日本"}}
        })
    );
    let txt = fx.read("out/odd.txt");
    let mut lines = txt.lines();
    assert_eq!(
        lines.next().unwrap(),
        "[][%2F][..][a][dots][glob*?[x]{y}][quote'\"q][tab\tkey][trailing][with space][ünï]"
    );
    let mut singles: Vec<&str> = keys
        .iter()
        .map(|k| k.strip_prefix("/odd").unwrap())
        .filter(|r| r.matches('/').count() == 1)
        .collect();
    singles.sort();
    for s in &singles {
        assert_eq!(lines.next().unwrap(), format!("{s}=val of /odd{s}"));
    }
    for k in keys {
        assert_eq!(
            lines.next().unwrap(),
            format!("val of {k}"),
            "getv of {k:?}"
        );
    }
    assert!(!txt.contains("leak"));

    // A key that is a value and a directory: refused, naming both.
    put1(&url, b"/odd/dots", b"I am a leaf too");
    let r = once_etcd(&fx, &url, &["--only", "odd-json"]);
    r.expect_code(2);
    assert_no_panic("render --once", &r.stderr);
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("odd-json: render failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    println!("{line}");
    assert!(
        line.contains("/dots") && line.contains("/dots/../x"),
        "{line}"
    );
}
