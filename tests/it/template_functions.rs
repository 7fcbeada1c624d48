//! Every template function and filter of SPEC.md ("Template functions"),
//! and `format = "json" | "php"`, through the real binary and a YAML key file.

use crate::common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Fx, Run, php, yaml_str};

/// A fixture with one resource `app` (keys `["/"]`, no prefix) rendering
/// `templates/app.tera` into `out/app.conf`. It may render from no keys
/// (`allow_empty`): many of these templates read none (`getenv`,
/// `lookup_ip`...); the guard itself is tested in `guards.rs`.
fn app(keys_yaml: &str, template: &str) -> Fx {
    let fx = Fx::new();
    fx.keys(keys_yaml).template("app.tera", template).resource(
        "app",
        r#"[template]
src = "app.tera"
dest = "{out}/app.conf"
keys = ["/"]
allow_empty = true
"#,
    );
    fx
}

/// Renders once, expects success, returns out/app.conf.
fn render_app(fx: &Fx) -> String {
    fx.once().expect_code(0);
    fx.read("out/app.conf")
}

/// Expects a failed render (exit 2) that wrote nothing into out/.
fn expect_render_failure(fx: &Fx, run: &Run) {
    run.expect_code(2);
    assert_eq!(
        fx.out_files(),
        Vec::<String>::new(),
        "a failed render wrote files"
    );
}

/// Whether `text` mentions `key` as a whole key (not only as the start of a longer key).
fn mentions_key(text: &str, key: &str) -> bool {
    text.match_indices(key).any(|(i, _)| {
        !text[i + key.len()..].starts_with(|c: char| c.is_alphanumeric() || "/-_.".contains(c))
    })
}

// ---------------------------------------------------------------- getv / get / exists

#[test]
fn getv_returns_value_or_default() {
    let fx = app(
        "/app/name: web01\n/app/empty: \"\"\n",
        concat!(
            "name={{ getv(key=\"/app/name\") }}\n",
            "nolead={{ getv(key=\"app/name\") }}\n",
            "dflt={{ getv(key=\"/app/missing\", default=\"fallback\") }}\n",
            "unused={{ getv(key=\"/app/name\", default=\"fallback\") }}\n",
            "empty=[{{ getv(key=\"/app/empty\", default=\"fallback\") }}]\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        "name=web01\nnolead=web01\ndflt=fallback\nunused=web01\nempty=[]\n"
    );
}

#[test]
fn getv_missing_key_fails_naming_resource_key_and_line_and_writes_nothing() {
    let fx = Fx::new();
    fx.keys("/app/name: web01\n")
        .template(
            "webapp.conf.tera",
            "# generated\nname = {{ getv(key=\"/app/name\") }}\nport = {{ getv(key=\"/app/port\") }}\n",
        )
        .resource(
            "webapp",
            "[template]\nsrc = \"webapp.conf.tera\"\ndest = \"{out}/webapp.conf\"\nkeys = [\"/app\"]\n",
        );
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["webapp", "/app/port", "webapp.conf.tera", "line 3"]);

    // An existing destination keeps its content, and no stage file is left.
    std::fs::write(fx.path("out/webapp.conf"), "previous\n").unwrap();
    fx.once()
        .expect_code(2)
        .expect_stderr(&["webapp", "/app/port"]);
    assert_eq!(fx.read("out/webapp.conf"), "previous\n");
    assert_eq!(fx.out_files(), vec!["webapp.conf"]);
}

#[test]
fn get_returns_key_and_value_and_fails_when_missing() {
    let fx = app(
        "/app/name: web01\n",
        "{% set p = get(key=\"/app/name\") %}{{ p.key }} = {{ p.value }}\n",
    );
    assert_eq!(render_app(&fx), "/app/name = web01\n");

    let fx = app(
        "/app/name: web01\n",
        "{% set p = get(key=\"/app/nope\") %}{{ p.value }}\n",
    );
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "/app/nope"]);
}

#[test]
fn exists_is_true_only_for_keys_holding_a_value() {
    let fx = app(
        "/app/name: web01\n/app/empty: \"\"\n",
        concat!(
            "{{ exists(key=\"/app/name\") }} {{ exists(key=\"/app/empty\") }} ",
            "{{ exists(key=\"/app/nope\") }} {{ exists(key=\"/app\") }}\n",
            "{% if exists(key=\"/app/nope\") %}yes{% else %}no{% endif %}\n",
        ),
    );
    assert_eq!(render_app(&fx), "true true false false\nno\n");
}

// ---------------------------------------------------------------- gets / getvs

const POOLS: &str = "\
/pools/eqiad/mw2: \"20\"
/pools/eqiad/mw10: \"100\"
/pools/eqiad/mw1: \"10\"
/pools/codfw/mw3: \"30\"
/pools/top: t
/poolsx/a: \"nope\"
";

#[test]
fn gets_and_getvs_are_sorted_by_key_and_star_does_not_cross_slash() {
    let fx = app(
        POOLS,
        concat!(
            "{% for p in gets(pattern=\"/pools/eqiad/*\") %}{{ p.key }}={{ p.value }};{% endfor %}\n",
            "{{ getvs(pattern=\"/pools/eqiad/*\") | join(sep=\",\") }}\n",
            "{% for p in gets(pattern=\"/pools/*\") %}{{ p.key }};{% endfor %}\n",
            "{{ getvs(pattern=\"/pools/*\") | join(sep=\",\") }}\n",
            "{% for p in gets(pattern=\"/pools/*/mw*\") %}{{ p.key }};{% endfor %}\n",
            "{{ getvs(pattern=\"pools/codfw/mw?\") | join(sep=\",\") }}\n",
            "{{ getvs(pattern=\"/pools/eqiad/mw1\") | join(sep=\",\") }}\n",
            "{{ gets(pattern=\"/nothing/*\") | length }} {{ getvs(pattern=\"/nothing/*\") | length }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "/pools/eqiad/mw1=10;/pools/eqiad/mw10=100;/pools/eqiad/mw2=20;\n",
            "10,100,20\n",
            "/pools/top;\n",
            "t\n",
            "/pools/codfw/mw3;/pools/eqiad/mw1;/pools/eqiad/mw10;/pools/eqiad/mw2;\n",
            "30\n",
            "10\n",
            "0 0\n",
        )
    );
}

// ---------------------------------------------------------------- ls / lsdir

const SVC: &str = "\
/svc/c/y/z: \"3\"
/svc/a/x: \"1\"
/svc/b: \"2\"
/svcx/q: \"9\"
";

#[test]
fn ls_and_lsdir_list_sorted_children() {
    let fx = app(
        SVC,
        concat!(
            "ls=[{{ ls(path=\"/svc\") | join(sep=\",\") }}]\n",
            "slash=[{{ ls(path=\"/svc/\") | join(sep=\",\") }}]\n",
            "lsdir=[{{ lsdir(path=\"/svc\") | join(sep=\",\") }}]\n",
            "deeper=[{{ ls(path=\"/svc/c\") | join(sep=\",\") }}]\n",
            "leaf=[{{ ls(path=\"/svc/b\") | join(sep=\",\") }}]\n",
            "partial=[{{ ls(path=\"/sv\") | join(sep=\",\") }}]\n",
            "missing=[{{ ls(path=\"/nothing\") | join(sep=\",\") }}][{{ lsdir(path=\"/nothing\") | join(sep=\",\") }}]\n",
            "root=[{{ ls(path=\"/\") | join(sep=\",\") }}]\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "ls=[a,b,c]\n",
            "slash=[a,b,c]\n",
            "lsdir=[a,c]\n",
            "deeper=[y]\n",
            "leaf=[]\n",
            "partial=[]\n",
            "missing=[][]\n",
            "root=[svc,svcx]\n",
        )
    );
}

/// Child names must be sorted as names, not in the order of the full keys:
/// `/svc/db1.x/w` sorts before `/svc/db1/w` (`.` < `/`), but `db1` < `db1.x`.
#[test]
fn ls_sorts_names_whose_keys_sort_differently() {
    let fx = app(
        "/svc/db1/w: \"1\"\n/svc/db1.x/w: \"2\"\n/svc/db1-y: \"3\"\n",
        "{{ ls(path=\"/svc\") | join(sep=\",\") }}\n{{ lsdir(path=\"/svc\") | join(sep=\",\") }}\n",
    );
    assert_eq!(render_app(&fx), "db1,db1-y,db1.x\ndb1,db1.x\n");
}

/// A leaf that also has children must appear once in `ls`, even when a
/// sibling's key sorts between them (`/svc/a`, `/svc/a-b`, `/svc/a/x`).
#[test]
fn ls_lists_each_child_once() {
    let fx = app(
        "/svc/a: \"1\"\n/svc/a-b: \"2\"\n/svc/a/x: \"3\"\n",
        "{{ ls(path=\"/svc\") | join(sep=\",\") }}\n{{ lsdir(path=\"/svc\") | join(sep=\",\") }}\n",
    );
    assert_eq!(render_app(&fx), "a,a-b\na\n");
}

// ---------------------------------------------------------------- tree

#[test]
fn tree_builds_nested_maps_and_decodes_json_on_request() {
    let fx = app(
        concat!(
            "/cfg/flag: \"true\"\n",
            "/cfg/db/port: \"5432\"\n",
            "/cfg/db/host: db1\n",
            "/j/a: '{\"v\": [1, \"x\"], \"w\": 10}'\n",
            "/j/b: '\"s\"'\n",
            "/j/c: 'null'\n",
            "/j/n/d: '2.5'\n",
        ),
        concat!(
            "{{ tree(prefix=\"/cfg\") | json_encode }}\n",
            "{{ tree(prefix=\"/cfg/db\") | json_encode }}\n",
            "{% set t = tree(prefix=\"/cfg\") %}{{ t.db.host }}:{{ t.db.port }} {{ t.flag }}\n",
            "{{ tree(prefix=\"/j\", decode=\"json\") | json_encode }}\n",
            "{% set j = tree(prefix=\"/j\", decode=\"json\") %}{{ j.a.w + 1 }} {{ j.n.d * 2 }}\n",
            "{{ tree(prefix=\"/nothing\") | json_encode }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "{\"db\":{\"host\":\"db1\",\"port\":\"5432\"},\"flag\":\"true\"}\n",
            "{\"host\":\"db1\",\"port\":\"5432\"}\n",
            "db1:5432 true\n",
            "{\"a\":{\"v\":[1,\"x\"],\"w\":10},\"b\":\"s\",\"c\":null,\"n\":{\"d\":2.5}}\n",
            "11 5.0\n",
            "{}\n",
        )
    );
}

#[test]
fn tree_refuses_a_key_that_is_both_leaf_and_directory_naming_both() {
    let fx = app(
        "/ld/a: \"1\"\n/ld/a/x: \"2\"\n",
        "{{ tree(prefix=\"/ld\") | json_encode }}\n",
    );
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "/a/x"]);
    assert!(
        mentions_key(&run.stderr, "/a"),
        "the leaf /a is not named:\n{}",
        run.stderr
    );
}

#[test]
fn tree_decode_json_names_the_invalid_key() {
    let fx = app(
        "/j/good: '1'\n/j/broken: '{nope'\n",
        "{{ tree(prefix=\"/j\", decode=\"json\") | json_encode }}\n",
    );
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "broken", "JSON"]);
}

// ---------------------------------------------------------------- getenv

#[test]
fn getenv_reads_the_environment_with_a_default() {
    let fx = app(
        "{}\n",
        concat!(
            "{{ getenv(name=\"LIVECONF_T_VAR\") }}|",
            "{{ getenv(name=\"LIVECONF_T_UNSET\", default=\"fallback\") }}|",
            "{{ getenv(name=\"LIVECONF_T_VAR\", default=\"unused\") }}\n",
        ),
    );
    let out = fx
        .cmd(&["render", "--once"])
        .env("LIVECONF_T_VAR", "hello <world>")
        .env_remove("LIVECONF_T_UNSET")
        .output()
        .unwrap();
    Run::from(out).expect_code(0);
    assert_eq!(
        fx.read("out/app.conf"),
        "hello <world>|fallback|hello <world>\n"
    );
}

#[test]
fn getenv_without_default_fails_when_unset() {
    let fx = app("{}\n", "x={{ getenv(name=\"LIVECONF_T_UNSET\") }}\n");
    let out = fx
        .cmd(&["render", "--once"])
        .env_remove("LIVECONF_T_UNSET")
        .output()
        .unwrap();
    let run = Run::from(out);
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "LIVECONF_T_UNSET"]);
}

// ---------------------------------------------------------------- DNS

#[test]
fn lookup_ip_of_localhost_has_127_0_0_1_sorted() {
    let fx = app(
        "{}\n",
        "{{ lookup_ip(host=\"localhost\") | join(sep=\" \") }}\n",
    );
    let out = render_app(&fx);
    let ips: Vec<std::net::IpAddr> = out
        .split_whitespace()
        .map(|s| {
            s.parse()
                .unwrap_or_else(|e| panic!("{s:?} is not an address: {e}"))
        })
        .collect();
    assert!(ips.contains(&"127.0.0.1".parse().unwrap()), "{out:?}");
    let mut sorted = ips.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(ips, sorted, "addresses not sorted or repeated");
}

/// A UDP DNS server on 127.0.0.1 that answers every query with NXDOMAIN,
/// counting the queries.
fn nxdomain_server() -> (SocketAddr, Arc<AtomicUsize>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let addr = sock.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            let q = &buf[..n];
            if n < 12 {
                continue;
            }
            // The question: labels up to the root label, then type and class.
            let mut i = 12;
            while i < n && q[i] != 0 {
                i += 1 + q[i] as usize;
            }
            let end = (i + 5).min(n);
            let mut r = Vec::with_capacity(end);
            r.extend_from_slice(&q[0..2]); // id
            r.push(0x80 | (q[2] & 0x79) | 0x04); // QR, opcode and RD as asked, AA
            r.push(0x80 | 3); // RA, NXDOMAIN
            r.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
            r.extend_from_slice(&q[12..end]);
            counter.fetch_add(1, Ordering::SeqCst);
            let _ = sock.send_to(&r, peer);
        }
    });
    (addr, seen)
}

#[test]
fn lookup_srv_of_a_name_that_does_not_exist_is_a_clear_error() {
    let (dns, queries) = nxdomain_server();
    let name = "_etcd-client._tcp.no-such-cluster.example.org";
    let fx = app(
        "{}\n",
        &format!("{{{{ lookup_srv(name=\"{name}\") | length }}}}\n"),
    );
    std::fs::write(
        fx.path("liveconf.toml"),
        format!("dns_server = \"{dns}\"\n"),
    )
    .unwrap();
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "lookup_srv", name]);
    assert!(
        run.stderr.to_lowercase().contains("no srv record"),
        "the error does not say the name has no record:\n{}",
        run.stderr
    );
    assert!(
        queries.load(Ordering::SeqCst) >= 1,
        "the configured dns_server was not asked"
    );
}

// ---------------------------------------------------------------- json_decode / json_encode

#[test]
fn json_decode_parses_values() {
    let fx = app(
        "/doc: '{\"a\": {\"x\": \"y\"}, \"b\": [1, 2.5, null, true]}'\n",
        concat!(
            "{% set d = getv(key=\"/doc\") | json_decode %}{{ d.a.x }} {{ d.b[0] + 1 }} {{ d.b[1] }} {{ d.b | length }} {{ d.b[3] }}\n",
            "{{ getv(key=\"/doc\") | json_decode | json_encode }}\n",
            "{{ \"[1, 2]\" | json_decode | length }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        "y 2 2.5 4 true\n{\"a\":{\"x\":\"y\"},\"b\":[1,2.5,null,true]}\n2\n"
    );
}

#[test]
fn json_decode_of_invalid_json_names_the_key() {
    let fx = app(
        "/good: '{}'\n/conf/bad: '{\"a\": 1,'\n",
        "{% set d = getv(key=\"/conf/bad\") | json_decode %}{{ d.a }}\n",
    );
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["app", "json_decode", "/conf/bad"]);
}

#[test]
fn json_encode_compact_and_pretty() {
    let fx = app(
        concat!(
            "/s: ",
            "\"<a href=\\\"x\\\">&'</a> \u{e9}\\\\\"\n",
            "/cfg/db/host: db1\n/cfg/db/port: \"5432\"\n/cfg/flag: \"true\"\n",
        ),
        concat!(
            "{{ getv(key=\"/s\") | json_encode }}\n",
            "{{ tree(prefix=\"/cfg\") | json_encode(pretty=true) }}\n",
            "{{ [1, \"a\", true, none] | json_encode }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "\"<a href=\\\"x\\\">&'</a> \u{e9}\\\\\"\n",
            "{\n  \"db\": {\n    \"host\": \"db1\",\n    \"port\": \"5432\"\n  },\n  \"flag\": \"true\"\n}\n",
            "[1,\"a\",true,null]\n",
        )
    );
}

// ---------------------------------------------------------------- php filter

#[test]
fn php_filter_writes_php_literals() {
    let fx = app(
        &format!(
            "/s: {}\n/evil: {}\n/doc: '{{\"a\": {{\"x\": \"y\"}}, \"b\": [1, 2.5, null, true], \"e\": {{}}, \"l\": []}}'\n",
            yaml_str("it's a \\ test"),
            yaml_str("'];system('id');//"),
        ),
        concat!(
            "{{ getv(key=\"/s\") | php }}\n",
            "{{ getv(key=\"/evil\") | php }}\n",
            "{{ 42 | php }} {{ -7 | php }} {{ 1.5 | php }} {{ 2.0 | php }} {{ true | php }} {{ false | php }} {{ none | php }}\n",
            "{{ getv(key=\"/doc\") | json_decode | php }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "'it\\'s a \\\\ test'\n",
            "'\\'];system(\\'id\\');//'\n",
            "42 -7 1.5 2.0 true false null\n",
            "[\n",
            "    'a' => [\n",
            "        'x' => 'y',\n",
            "    ],\n",
            "    'b' => [\n",
            "        1,\n",
            "        2.5,\n",
            "        null,\n",
            "        true,\n",
            "    ],\n",
            "    'e' => [],\n",
            "    'l' => [],\n",
            "]\n",
        )
    );
}

// ---------------------------------------------------------------- variables

#[test]
fn revision_and_resource_variables() {
    let fx = Fx::new();
    fx.keys("/a: \"1\"\n")
        .template("v.tera", "{{ resource }} at revision {{ revision }}\n")
        .resource(
            "pools-eqiad",
            "[template]\nsrc = \"v.tera\"\ndest = \"{out}/v.conf\"\nkeys = [\"/a\"]\n",
        );
    fx.once().expect_code(0);
    // The file backend reads every key file as one snapshot at revision 1.
    assert_eq!(fx.read("out/v.conf"), "pools-eqiad at revision 1\n");
}

// ---------------------------------------------------------------- prefixes and keys

const PREFIXED: &str = "\
/conftool/v1/mediawiki/ro: \"yes\"
/conftool/v1/mediawiki/pools/mw1: \"10\"
/conftool/v1/mediawiki/unwatched: \"secret\"
/conftool/v1/ro: \"wrong: global prefix only\"
/mediawiki/ro: \"wrong: resource prefix only\"
/ro: \"wrong: no prefix\"
";

#[test]
fn keys_are_relative_to_the_global_prefix_joined_with_the_resource_prefix() {
    let fx = Fx::new();
    fx.keys(PREFIXED)
        .template(
            "mw.tera",
            concat!(
                "{{ getv(key=\"/ro\") }}\n",
                "{% set g = get(key=\"/ro\") %}{{ g.key }}\n",
                "{% for p in gets(pattern=\"/pools/*\") %}{{ p.key }}={{ p.value }}{% endfor %}\n",
                "{{ ls(path=\"/\") | join(sep=\",\") }}\n",
                "{{ tree(prefix=\"/pools\") | json_encode }}\n",
                "{{ exists(key=\"/pools/mw1\") }}\n",
            ),
        )
        .resource(
            "mw",
            "[template]\nsrc = \"mw.tera\"\ndest = \"{out}/mw.conf\"\nprefix = \"/mediawiki\"\nkeys = [\"/ro\", \"/pools\"]\n",
        )
        .resource(
            "mwjson",
            "[template]\nformat = \"json\"\ndest = \"{out}/mw.json\"\nprefix = \"mediawiki/\"\nkeys = [\"/ro\", \"/pools\"]\n",
        );
    fx.run(&["render", "--once", "--prefix", "/conftool/v1"])
        .expect_code(0);
    assert_eq!(
        fx.read("out/mw.conf"),
        "yes\n/ro\n/pools/mw1=10\npools,ro\n{\"mw1\":\"10\"}\ntrue\n"
    );
    assert_eq!(
        fx.read("out/mw.json"),
        "{\n  \"pools\": {\n    \"mw1\": \"10\"\n  },\n  \"ro\": \"yes\"\n}\n"
    );
}

#[test]
fn a_key_outside_the_resource_keys_is_an_error() {
    let fx = Fx::new();
    fx.keys("/pool/a: \"1\"\n/pools/x: \"2\"\n/other: \"3\"\n")
        .template("ok.tera", "{{ ls(path=\"/\") | join(sep=\",\") }} {{ getvs(pattern=\"/*/*\") | join(sep=\",\") }}\n")
        .template("getv.tera", "{{ getv(key=\"/other\") }}\n")
        .template("prefixlike.tera", "{{ getv(key=\"/pools/x\") }}\n")
        .template("get.tera", "{% set g = get(key=\"/other\") %}{{ g.value }}\n")
        .template("exists.tera", "{{ exists(key=\"/other\") }}\n");
    for name in ["ok", "getv", "prefixlike", "get", "exists"] {
        fx.resource(
            name,
            &format!("[template]\nsrc = \"{name}.tera\"\ndest = \"{{out}}/{name}.conf\"\nkeys = [\"/pool\"]\n"),
        );
    }
    let run = fx.once();
    run.expect_code(2);
    // Only what `keys` covers is visible: not /pools (a longer name) nor /other.
    assert_eq!(fx.read("out/ok.conf"), "pool 1\n");
    assert_eq!(fx.out_files(), vec!["ok.conf"]);
    for (res, key) in [
        ("getv", "/other"),
        ("prefixlike", "/pools/x"),
        ("get", "/other"),
        ("exists", "/other"),
    ] {
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&format!("{res}.tera")))
            .unwrap_or_else(|| panic!("no error for resource {res}:\n{}", run.stderr));
        assert!(
            line.contains(res) && line.contains(key) && line.contains("keys"),
            "{line}"
        );
    }
}

// ---------------------------------------------------------------- no escaping

#[test]
fn html_templates_are_not_escaped() {
    let raw = "<script>alert(\"x\")</script> & 'q' &amp;";
    let fx = Fx::new();
    fx.keys(&format!("/v: {}\n", yaml_str(raw)))
        .template(
            "page.html",
            "{{ getv(key=\"/v\") }}\n{% set g = get(key=\"/v\") %}{{ g.value }}\n{{ \"<b>&</b>\" }}\n{{ getvs(pattern=\"/*\") | join(sep=\"<br>\") }}\n",
        )
        .resource(
            "page",
            "[template]\nsrc = \"page.html\"\ndest = \"{out}/page.html\"\nkeys = [\"/\"]\n",
        );
    fx.once().expect_code(0);
    assert_eq!(
        fx.read("out/page.html"),
        format!("{raw}\n{raw}\n<b>&</b>\n{raw}\n")
    );
}

// ---------------------------------------------------------------- format = "json" | "php"

const SVC_JSON: &str = "\
/svc/zeta: '{\"z\": 1, \"a\": [true, null, \"x\"]}'
/svc/alpha/w: '10'
/svc/alpha/s: '\"str\"'
/other: '1'
";

fn format_resource(fx: &Fx, name: &str, format: &str, decode: Option<&str>) {
    let decode = decode
        .map(|d| format!("decode = \"{d}\"\n"))
        .unwrap_or_default();
    fx.resource(
        name,
        &format!(
            "[template]\nformat = \"{format}\"\n{decode}dest = \"{{out}}/{name}.out\"\nkeys = [\"/svc\"]\n"
        ),
    );
}

#[test]
fn format_json_is_sorted_indented_and_ends_with_a_newline() {
    let fx = Fx::new();
    fx.keys(SVC_JSON);
    format_resource(&fx, "decoded", "json", Some("json"));
    format_resource(&fx, "strings", "json", None);
    fx.once().expect_code(0);
    assert_eq!(
        fx.read("out/decoded.out"),
        r#"{
  "svc": {
    "alpha": {
      "s": "str",
      "w": 10
    },
    "zeta": {
      "a": [
        true,
        null,
        "x"
      ],
      "z": 1
    }
  }
}
"#
    );
    assert_eq!(
        fx.read("out/strings.out"),
        r#"{
  "svc": {
    "alpha": {
      "s": "\"str\"",
      "w": "10"
    },
    "zeta": "{\"z\": 1, \"a\": [true, null, \"x\"]}"
  }
}
"#
    );
}

#[test]
fn format_json_decode_errors_name_the_key() {
    let fx = Fx::new();
    fx.keys("/svc/ok: '1'\n/svc/bad: 'not json'\n");
    format_resource(&fx, "decoded", "json", Some("json"));
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["decoded", "/svc/bad", "JSON"]);

    let fx = Fx::new();
    fx.keys("/svc/a: '1'\n/svc/a/b: '2'\n");
    format_resource(&fx, "both", "json", None);
    let run = fx.once();
    expect_render_failure(&fx, &run);
    run.expect_stderr(&["both", "/svc/a/b"]);
    assert!(
        mentions_key(&run.stderr, "/svc/a"),
        "the leaf /svc/a is not named:\n{}",
        run.stderr
    );
}

#[test]
fn format_php_returns_the_tree() {
    let fx = Fx::new();
    fx.keys(SVC_JSON);
    format_resource(&fx, "decoded", "php", Some("json"));
    format_resource(&fx, "strings", "php", None);
    fx.once().expect_code(0);

    let decoded = fx.read("out/decoded.out");
    assert!(decoded.starts_with("<?php\n"), "{decoded}");
    assert!(decoded.ends_with("];\n"), "{decoded}");
    assert!(
        decoded.contains(
            "return [\n    'svc' => [\n        'alpha' => [\n            's' => 'str',\n            'w' => 10,\n        ],\n"
        ),
        "{decoded}"
    );
    let code = "echo json_encode(include $argv[1]);";
    assert_eq!(
        php(code, &[fx.path("out/decoded.out").to_str().unwrap()]),
        r#"{"svc":{"alpha":{"s":"str","w":10},"zeta":{"a":[true,null,"x"],"z":1}}}"#
    );
    // Without decode every value is a string, even "10".
    assert_eq!(
        php(code, &[fx.path("out/strings.out").to_str().unwrap()]),
        r#"{"svc":{"alpha":{"s":"\"str\"","w":"10"},"zeta":"{\"z\": 1, \"a\": [true, null, \"x\"]}"}}"#
    );
    common::php_lint(&fx.path("out/decoded.out"));
    common::php_lint(&fx.path("out/strings.out"));
}

/// JSON has no infinity: `json_encode` refuses it instead of writing `null`.
#[test]
fn json_encode_refuses_a_non_finite_number() {
    let fx = app(
        "x: \"1e400\"\n",
        "{{ getv(key=\"/x\") | float | json_encode }}\n",
    );
    fx.once()
        .expect_code(2)
        .expect_stderr(&["json_encode", "inf", "no JSON form"]);
    assert!(fx.out_files().is_empty());
}

// ---------------------------------------------------------------- confd's helpers

/// One resource per template (`r0`, `r1`...), rendered in one run that must
/// fail (exit 2) for every one of them: resource `rN`'s error is one log
/// line containing every needle of `cases[N]`. Nothing is written.
fn expect_each_render_error(keys_yaml: &str, cases: &[(&str, &[&str])]) {
    let fx = Fx::new();
    fx.keys(keys_yaml);
    for (i, (template, _)) in cases.iter().enumerate() {
        fx.template(&format!("r{i}.tera"), template).resource(
            &format!("r{i}"),
            &format!(
                "[template]\nsrc = \"r{i}.tera\"\ndest = \"{{out}}/r{i}.conf\"\nkeys = [\"/\"]\n"
            ),
        );
    }
    let run = fx.once();
    expect_render_failure(&fx, &run);
    for (i, (template, needles)) in cases.iter().enumerate() {
        let marker = format!("r{i}: render failed");
        let line = run
            .stderr
            .lines()
            .find(|l| l.contains(&marker))
            .unwrap_or_else(|| panic!("no error for {template:?}:\n{}", run.stderr));
        for n in *needles {
            assert!(
                line.contains(n),
                "the error for {template:?} lacks {n:?}:\n{line}"
            );
        }
    }
}

#[test]
fn base64_encode_and_decode_use_go_standard_encoding() {
    let fx = app(
        "/secret: aGVsbG8gd29ybGQ=\n/wrapped: \"aGVs\\r\\nbG8=\\n\"\n",
        concat!(
            "{{ getv(key=\"/secret\") | base64_decode }}|",
            "{{ \"hello world\" | base64_encode }}|",
            "{{ \"\" | base64_encode }}|{{ \"f\" | base64_encode }}|{{ \"fo\" | base64_encode }}|",
            "{{ \"??>\" | base64_encode }}|{{ \"???\" | base64_encode }}|{{ \"é\" | base64_encode }}\n",
            // Go ignores \r and \n, and does not check the unused bits of the last symbol.
            "{{ getv(key=\"/wrapped\") | base64_decode }}|{{ \"QR==\" | base64_decode }}|",
            "[{{ \"\" | base64_decode }}]|{{ \"w6k=\" | base64_decode }}\n",
            "{{ getv(key=\"/secret\") | base64_decode | base64_encode }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        "hello world|aGVsbG8gd29ybGQ=||Zg==|Zm8=|Pz8+|Pz8/|w6k=\nhello|A|[]|é\naGVsbG8gd29ybGQ=\n"
    );
}

#[test]
fn base64_decode_errors_name_the_filter_and_the_value() {
    expect_each_render_error(
        "/bad: 'not base64!'\n",
        &[
            (
                "{{ getv(key=\"/bad\") | base64_decode }}",
                &["base64_decode", "\"not base64!\"", "not valid base64"],
            ),
            // Unpadded (Go's StdEncoding requires the padding).
            (
                "{{ \"Zg\" | base64_decode }}",
                &["base64_decode", "\"Zg\"", "padding"],
            ),
            (
                "{{ \"Zg==Zg==\" | base64_decode }}",
                &["base64_decode", "\"Zg==Zg==\"", "padding"],
            ),
            // The URL-safe alphabet is not the standard one.
            (
                "{{ \"-_8=\" | base64_decode }}",
                &[
                    "base64_decode",
                    "\"-_8=\"",
                    "'-'",
                    "not in the standard base64 alphabet",
                ],
            ),
            // 0xff 0xfe: valid base64, not UTF-8 text.
            (
                "{{ \"//4=\" | base64_decode }}",
                &["base64_decode", "\"//4=\"", "not UTF-8"],
            ),
            (
                "{{ 42 | base64_encode }}",
                &["base64_encode", "expects a string", "42"],
            ),
        ],
    );
}

#[test]
fn file_exists_is_true_when_stat_succeeds() {
    let fx = Fx::new();
    std::fs::write(fx.path("present.txt"), "x").unwrap();
    std::os::unix::fs::symlink(fx.path("present.txt"), fx.path("link")).unwrap();
    std::os::unix::fs::symlink(fx.path("absent.txt"), fx.path("dangling")).unwrap();
    let template = ["present.txt", "link", "out", "absent.txt", "dangling"]
        .iter()
        .map(|f| {
            format!(
                "{{{{ file_exists(path={:?}) }}}}",
                fx.path(f).display().to_string()
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
        + " {{ file_exists(path=\"\") }}\n"
        + "{% if file_exists(path=\"/nonexistent/liveconf\") %}yes{% else %}no{% endif %}\n";
    fx.template("app.tera", &template).resource(
        "app",
        "[template]\nsrc = \"app.tera\"\ndest = \"{out}/app.conf\"\nkeys = [\"/\"]\nallow_empty = true\n",
    );
    assert_eq!(render_app(&fx), "true true true false false false\nno\n");
}

#[test]
fn sort_by_length_is_by_byte_length_and_stable() {
    let fx = app(
        "/r/1: ccc\n/r/2: a\n/r/3: bb\n/r/4: d\n/r/5: éé\n/r/6: ee\n/r/7: \"\"\n",
        concat!(
            "{{ getvs(pattern=\"/r/*\") | sort_by_length | join(sep=\",\") }}\n",
            "{% for s in [\"zz\", \"y\", \"xx\", \"w\"] | sort_by_length %}{{ s }} {% endfor %}\n",
            "[{{ [] | sort_by_length | join(sep=\",\") }}]\n",
        ),
    );
    // "éé" is 4 bytes; equal lengths keep their order (a, d; bb, ee; zz, xx).
    assert_eq!(render_app(&fx), ",a,d,bb,ee,ccc,éé\ny w zz xx \n[]\n");
}

/// confd's `sortKVByLength`: `{key, value}` pairs by the length of their key.
#[test]
fn sort_by_length_of_an_attribute_sorts_key_value_pairs() {
    let fx = app(
        "/routes/api/v2: b2\n/routes/a: a\n/routes/api: b\n/routes/zz: z\n",
        concat!(
            "{% for kv in gets(pattern=\"/routes/**\") | sort_by_length(attribute=\"key\") %}",
            "{{ kv.key }}={{ kv.value }} {% endfor %}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        "/routes/a=a /routes/zz=z /routes/api=b /routes/api/v2=b2 \n"
    );
}

#[test]
fn sort_by_length_refuses_what_is_not_a_list_of_strings() {
    expect_each_render_error(
        "{}\n",
        &[
            (
                "{{ [\"a\", 7] | sort_by_length }}",
                &["sort_by_length", "item 1", "7", "not a string"],
            ),
            (
                "{{ [{\"key\": \"a\"}, {\"value\": \"b\"}] | sort_by_length(attribute=\"key\") }}",
                &["sort_by_length", "item 1", "no string attribute \"key\""],
            ),
            (
                "{{ \"abc\" | sort_by_length }}",
                &["sort_by_length", "expects a list of strings", "\"abc\""],
            ),
        ],
    );
}

#[test]
fn parse_bool_accepts_what_go_strconv_accepts() {
    let fx = app(
        "/flags/on: \"true\"\n/flags/off: \"F\"\n",
        concat!(
            "{% for s in [\"1\", \"t\", \"T\", \"TRUE\", \"true\", \"True\", ",
            "\"0\", \"f\", \"F\", \"FALSE\", \"false\", \"False\"] %}",
            "{{ s | parse_bool }} {% endfor %}\n",
            "{% if getv(key=\"/flags/on\") | parse_bool %}on{% endif %}",
            "{% if not getv(key=\"/flags/off\") | parse_bool %} off{% endif %}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        "true true true true true true false false false false false false \non off\n"
    );
}

#[test]
fn parse_bool_refuses_anything_else_quoting_it() {
    expect_each_render_error(
        "/flag: \"yes\"\n",
        &[
            (
                "{{ getv(key=\"/flag\") | parse_bool }}",
                &[
                    "parse_bool",
                    "\"yes\"",
                    "not a boolean",
                    "1 t T TRUE true True",
                ],
            ),
            ("{{ \"tRuE\" | parse_bool }}", &["parse_bool", "\"tRuE\""]),
            ("{{ \" true\" | parse_bool }}", &["parse_bool", "\" true\""]),
            ("{{ \"\" | parse_bool }}", &["parse_bool", "\"\" is not"]),
            ("{{ 1 | parse_bool }}", &["parse_bool", "expects a string"]),
        ],
    );
}

#[test]
fn basename_and_dirname_follow_go_path_base_and_dir() {
    let cases = [
        // (input, path.Base, path.Dir)
        ("", ".", "."),
        ("/", "/", "/"),
        ("////", "/", "/"),
        (".", ".", "."),
        ("a", "a", "."),
        ("/a", "a", "/"),
        ("a/b", "b", "a"),
        ("a/b/", "b", "a/b"),
        ("/a/b/c", "c", "/a/b"),
        ("//a//b", "b", "/a"),
        // Dir splits at the last `/`, then cleans: Clean("a/b/") is "a/b".
        ("a/b/..", "..", "a/b"),
        ("/x/./y/../z.conf", "z.conf", "/x"),
        ("../x", "x", ".."),
    ];
    let template: String = cases
        .iter()
        .map(|(p, _, _)| format!("[{{{{ {p:?} | basename }}}}] [{{{{ {p:?} | dirname }}}}]\n"))
        .collect();
    let want: String = cases
        .iter()
        .map(|(_, b, d)| format!("[{b}] [{d}]\n"))
        .collect();
    let fx = app("{}\n", &template);
    assert_eq!(render_app(&fx), want);

    // The confd idiom: the last element of each key.
    let fx = app(
        "/services/web/host1: a\n/services/web/host2: b\n",
        "{% for kv in gets(pattern=\"/services/web/*\") %}{{ kv.key | basename }} in {{ kv.key | dirname }}\n{% endfor %}",
    );
    assert_eq!(
        render_app(&fx),
        "host1 in /services/web\nhost2 in /services/web\n"
    );

    expect_each_render_error(
        "{}\n",
        &[
            ("{{ 3 | basename }}", &["basename", "expects a string"]),
            ("{{ [\"/a\"] | dirname }}", &["dirname", "expects a string"]),
        ],
    );
}

#[test]
fn format_is_go_printf() {
    let fx = app(
        "/port: \"8080\"\n/weight: \"2.5\"\n/name: web01\n",
        concat!(
            "{{ format(fmt=\"%05d|%-6s|%6.2f|%x|%X|%o|%b|%q|%t|%c|%U|%+d|%e|%g\", ",
            "args=[42, \"ab\", 3.14159, 255, \"hi\", 8, 5, \"a\\\"b\", true, 65, 9731, 7, 1234.5678, 0.000012]) }}\n",
            // %v prints floats as Go does; lists and maps as Go's %v.
            "{{ format(fmt=\"%v %v %v %v %v\", args=[1000000.0, 2.5, [1, \"x\"], {\"b\": 2, \"a\": \"y\"}, none]) }}\n",
            "{{ format(fmt=\"%[2]s=%[1]d\", args=[1, \"one\"]) }} {{ format(fmt=\"100%%\") }} {{ format(fmt=\"%*d|%-*d|\", args=[4, 7, 3, 1]) }}\n",
            // The filter: the input is the only argument.
            "{{ getv(key=\"/port\") | int | format(fmt=\"%06d\") }} {{ getv(key=\"/weight\") | float | format(fmt=\"%.3f\") }} ",
            "{{ getv(key=\"/name\") | format(fmt=\"%-8s|\") }} {{ getv(key=\"/name\") | format(fmt=\"%q\") }}\n",
            // A `%!` in an argument or after `%%` is text, not an error.
            "{{ format(fmt=\"%s %%!\", args=[\"50%!\"]) }}\n",
        ),
    );
    assert_eq!(
        render_app(&fx),
        concat!(
            "00042|ab    |  3.14|ff|6869|10|101|\"a\\\"b\"|true|A|U+2603|+7|1.234568e+03|1.2e-05\n",
            "1e+06 2.5 [1 x] map[a:y b:2] <nil>\n",
            "one=1 100%    7|1  |\n",
            "008080 2.500 web01   | \"web01\"\n",
            "50%! %!\n",
        )
    );
}

/// Where Go's printf writes `%!d(string=abc)`, `%!s(MISSING)`... into the
/// output, `format` fails the render instead, naming the problem.
#[test]
fn format_refuses_what_go_would_print_as_an_error_marker() {
    expect_each_render_error(
        "/port: \"80\"\n",
        &[
            (
                "{{ format(fmt=\"%d\", args=[getv(key=\"/port\")]) }}",
                &[
                    "format",
                    "\"%d\"",
                    "%d cannot print string=80",
                    "%!d(string=80)",
                ],
            ),
            (
                "{{ format(fmt=\"%s:%d\", args=[\"web\"]) }}",
                &["format", "\"%s:%d\"", "%d has no argument (1 given)"],
            ),
            (
                "{{ format(fmt=\"%s\", args=[\"a\", \"b\"]) }}",
                &["format", "more arguments than directives", "string=b"],
            ),
            (
                "{{ format(fmt=\"50%\") }}",
                &["format", "\"50%\"", "ends inside a directive", "%%"],
            ),
            (
                "{{ format(fmt=\"%z\", args=[1]) }}",
                &["format", "%z cannot print int=1"],
            ),
            (
                "{{ format(fmt=\"%[3]d\", args=[1]) }}",
                &["format", "bad argument index"],
            ),
            // gotmpl would truncate 2.5 to 2; Go refuses.
            (
                "{{ 2.5 | format(fmt=\"%d\") }}",
                &[
                    "format",
                    "%d needs an integer",
                    "float 2.5",
                    "%!d(float64=2.5)",
                ],
            ),
            (
                "{{ undefined_thing | format(fmt=\"%v\") }}",
                &["format", "undefined"],
            ),
            (
                "{{ format(fmt=\"%s\", args=\"x\") }}",
                &["format", "args must be a list", "\"x\""],
            ),
        ],
    );
}

/// confd's `div` and `mod` are Tera's `//` and `%` (`/` always gives a float).
#[test]
fn integer_division_is_floor_division() {
    let fx = app(
        "/workers: \"7\"\n",
        concat!(
            "{{ 7 / 2 }} {{ 6 / 2 }} {{ 7 // 2 }} {{ 7 % 2 }} {{ 6 // 2 }}\n",
            "{{ getv(key=\"/workers\") | int // 2 }} {{ getv(key=\"/workers\") | int % 4 }}\n",
            // Euclidean for a negative dividend (Go truncates: -3 and -1).
            "{{ -7 // 2 }} {{ -7 % 2 }} {{ 7 // -2 }} {{ 7 % -2 }}\n",
        ),
    );
    assert_eq!(render_app(&fx), "3.5 3.0 3 1 3\n3 3\n-4 1 -3 1\n");

    expect_each_render_error(
        "/zero: \"0\"\n",
        &[(
            "{{ 7 // getv(key=\"/zero\") | int }}",
            &["Cannot divide by 0"],
        )],
    );
}
