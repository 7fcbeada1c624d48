//! The guards against a fleet-wide bad render: a resource whose keys are
//! all absent is not installed (`allow_empty` opts out), a render smaller
//! than `max_shrink` allows is refused with both sizes, `render --once
//! --force NAME` confirms it on a host (and the daemon then recovers);
//! `check` and `--diff` report both. Also what `check` says of templates
//! no resource uses, and unknown resource fields.

use crate::common;

use std::path::Path;
use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(30);

/// An upstream of servers, one line each (the pool's keys: `/eqiad/NAME`
/// holds the weight).
const POOL_TEMPLATE: &str = "# pool {{ resource }}\n\
{% for kv in gets(pattern=\"/eqiad/*\") %}server {{ kv.key | basename }}.eqiad.wmnet:443 weight={{ kv.value }} max_fails=3 fail_timeout=10s;\n{% endfor %}";

/// The servers `mw1001`... `mw(1000+n)`.
fn servers(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("mw{}", 1000 + i)).collect()
}

/// What [`POOL_TEMPLATE`] renders for `servers` (resource `pool`).
fn pool_file(servers: &[String]) -> String {
    let mut s = "# pool pool\n".to_string();
    for n in servers {
        s.push_str(&format!(
            "server {n}.eqiad.wmnet:443 weight=10 max_fails=3 fail_timeout=10s;\n"
        ));
    }
    s
}

/// The key file (YAML) holding `servers` under `/pools/eqiad`.
fn pool_keys(servers: &[String]) -> String {
    let mut s = "pools:\n  eqiad:\n".to_string();
    for n in servers {
        s.push_str(&format!("    {n}: \"10\"\n"));
    }
    if servers.is_empty() {
        s = "pools: {}\n".to_string();
    }
    s
}

/// `n` with thousands separators, as the messages write sizes.
fn thousands(n: usize) -> String {
    let d = n.to_string();
    let mut out = String::new();
    for (i, c) in d.chars().enumerate() {
        if i > 0 && (d.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The shrink message's sizes part for `old` → `new`.
fn shrink_text(old: &str, new: &str, limit: u8) -> String {
    let (o, n) = (old.len(), new.len());
    let pct = ((o - n) * 100).div_ceil(o);
    format!(
        "new render is {} bytes, {pct}% smaller than the installed {} bytes (max_shrink = {limit}%)",
        thousands(n),
        thousands(o)
    )
}

/// Resource `pool` reading `prefix` (keys `/eqiad`), with `extra` fields.
fn pool_resource(fx: &Fx, prefix: &str, extra: &str) {
    fx.template("pool.tera", POOL_TEMPLATE);
    fx.resource(
        "pool",
        &format!(
            "[template]\nsrc = \"pool.tera\"\ndest = \"{{out}}/pool.conf\"\nprefix = \"{prefix}\"\nkeys = [\"/eqiad\"]\n{extra}"
        ),
    );
}

fn status(fx: &Fx) -> serde_json::Value {
    serde_json::from_str(&read_or_empty(&fx.path("state/status.json"))).unwrap_or_default()
}

/// The error message status.json records for `name` ("" when healthy).
fn status_error(fx: &Fx, name: &str) -> String {
    status(fx)["resources"][name]["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[test]
fn a_mistyped_prefix_is_refused_and_allow_empty_renders() {
    let fx = Fx::new();
    let ten = servers(10);
    fx.keys(&pool_keys(&ten));
    pool_resource(&fx, "/pools", "");
    fx.once().expect_code(0);
    let dest = fx.path("out/pool.conf");
    assert_eq!(read_or_empty(&dest), pool_file(&ten));

    // `/pool` for `/pools`: nothing under it, so nothing is installed.
    pool_resource(&fx, "/pool", "");
    let conf = fx.path("conf.d/pool.toml");
    let message = format!(
        "no keys under /pool/eqiad (a mistyped prefix, or an empty keyspace?); the installed file is kept; \
         set allow_empty = true in {} if this resource may render from no keys",
        conf.display()
    );
    fx.once()
        .expect_code(2)
        .expect_stderr(&[&format!("pool: render failed: {message}")]);
    assert_eq!(read_or_empty(&dest), pool_file(&ten));
    assert!(
        status_error(&fx, "pool").starts_with(&message),
        "{}",
        status_error(&fx, "pool")
    );
    assert_eq!(status(&fx)["resources"]["pool"]["healthy"], false);

    // A first install from no keys is refused too.
    std::fs::remove_file(&dest).unwrap();
    fx.once()
        .expect_code(2)
        .expect_stderr(&["no keys under /pool/eqiad", "; nothing is installed;"]);
    assert!(!dest.exists());

    // A resource that may legitimately render from nothing says so.
    pool_resource(&fx, "/pool", "allow_empty = true\n");
    fx.once().expect_code(0);
    assert_eq!(read_or_empty(&dest), pool_file(&[]));
    // And a resource listing no keys (a confd template reading only the
    // environment) is not guarded.
    fx.template("env.tmpl", "host={{getenv \"NOPE\" \"none\"}}\n");
    fx.resource(
        "env",
        "[template]\nsrc = \"env.tmpl\"\ndest = \"{out}/env.conf\"\nkeys = []\n",
    );
    fx.once().expect_code(0);
    assert_eq!(read_or_empty(&fx.path("out/env.conf")), "host=none\n");
}

/// Both engines and `format` resources are guarded; a confd-style resource
/// file takes `allow_empty` in any case, as confd reads field names.
#[test]
fn go_templates_and_formats_are_guarded_too() {
    let fx = Fx::new();
    fx.keys("pools:\n  a: \"1\"\n");
    fx.template("t.tmpl", "{{range gets \"/*\"}}{{.Key}}\n{{end}}");
    for (name, body) in [("go", "src = \"t.tmpl\""), ("json", "format = \"json\"")] {
        fx.resource(
            name,
            &format!(
                "[template]\n{body}\ndest = \"{{out}}/{name}.out\"\nprefix = \"/pool\"\nkeys = [\"/\"]\n"
            ),
        );
    }
    let run = fx.once();
    run.expect_code(2).expect_stderr(&[
        "go: render failed: no keys under /pool (a mistyped prefix",
        "json: render failed: no keys under /pool (a mistyped prefix",
    ]);
    assert!(fx.out_files().is_empty(), "{:?}", fx.out_files());
    fx.resource(
        "go",
        "[template]\nSrc = \"t.tmpl\"\nDest = \"{out}/go.out\"\nPrefix = \"/pool\"\nKeys = [\"/\"]\nAllow_Empty = true\n",
    );
    fx.resource(
        "json",
        "[template]\nformat = \"json\"\ndest = \"{out}/json.out\"\nprefix = \"/pool\"\nkeys = [\"/\"]\nallow_empty = true\n",
    );
    fx.once().expect_code(0);
    assert_eq!(fx.out_files(), ["go.out", "json.out"]);
}

#[test]
fn a_shrink_beyond_max_shrink_is_refused_with_both_sizes_and_within_it_installed() {
    let fx = Fx::new();
    let forty = servers(40);
    fx.keys(&pool_keys(&forty));
    pool_resource(&fx, "/pools", "");
    fx.once().expect_code(0);
    let dest = fx.path("out/pool.conf");
    let installed = pool_file(&forty);
    assert_eq!(read_or_empty(&dest), installed);

    // 30 of 40 servers gone: 75% smaller, beyond the default 50%.
    let ten = servers(10);
    fx.keys(&pool_keys(&ten));
    let conf = fx.path("conf.d/pool.toml");
    let message = format!(
        "{}; the installed file is kept; if the change is deliberate run \
         `liveconf render --once --force pool` on this host, or raise max_shrink in {}",
        shrink_text(&installed, &pool_file(&ten), 50),
        conf.display()
    );
    fx.once()
        .expect_code(2)
        .expect_stderr(&[&format!("pool: render failed: {message}")]);
    assert_eq!(read_or_empty(&dest), installed);
    assert_eq!(status_error(&fx, "pool"), message);

    // A limit the resource raises lets it through; within the limit (25
    // of 40 servers: 38% smaller) the default does too.
    let twenty_five = servers(25);
    fx.keys(&pool_keys(&twenty_five));
    fx.once().expect_code(0);
    assert_eq!(read_or_empty(&dest), pool_file(&twenty_five));
    fx.keys(&pool_keys(&ten));
    pool_resource(&fx, "/pools", "max_shrink = \"70%\"\n");
    fx.once().expect_code(0);
    assert_eq!(read_or_empty(&dest), pool_file(&ten));
    // "off" turns it off; an unreadable limit fails the resource file.
    fx.keys(&pool_keys(&servers(1)));
    pool_resource(&fx, "/pools", "max_shrink = \"off\"\n");
    fx.once().expect_code(0);
    pool_resource(&fx, "/pools", "max_shrink = 50\n");
    fx.once()
        .expect_code(2)
        .expect_stderr(&["max_shrink must be a quoted percentage", "not 50"]);
}

#[test]
fn force_installs_a_refused_render_once_and_only_when_named() {
    let fx = Fx::new();
    let forty = servers(40);
    fx.keys(&pool_keys(&forty));
    pool_resource(&fx, "/pools", "");
    fx.once().expect_code(0);
    let dest = fx.path("out/pool.conf");
    let two = servers(2);
    fx.keys(&pool_keys(&two));
    fx.once().expect_code(2);

    // Named wrongly, or not with --once: refused before anything runs.
    fx.run(&["render", "--once", "--force", "nope"])
        .expect_code(3)
        .expect_stderr(&["--force nope: no resource nope"]);
    fx.run(&["render", "--force", "pool"])
        .expect_code(3)
        .expect_stderr(&["use it with --once"]);
    fx.run(&["render", "--once", "--force"])
        .expect_code(3)
        .expect_stderr(&["--force without NAME"]);
    assert_eq!(read_or_empty(&dest), pool_file(&forty));

    // A preview with --force shows it would be installed.
    fx.run(&["render", "--once", "--diff", "--force", "pool"])
        .expect_code(0)
        .expect_stderr(&["pool: --force: would install although new render is"]);
    fx.run(&["render", "--once", "--force", "--only", "pool"])
        .expect_code(0)
        .expect_stderr(&["pool: --force: installing although new render is"]);
    assert_eq!(read_or_empty(&dest), pool_file(&two));
    assert_eq!(status(&fx)["resources"]["pool"]["healthy"], true);
    // And from then on it is in sync.
    fx.once().expect_code(0);
}

/// A daemon against a real etcd: `start` the confdir's daemon.
fn daemon(fx: &Fx, etcd: &Etcd) -> Daemon {
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    Daemon::start(
        &[
            "--confdir",
            &confdir,
            "--endpoints",
            &endpoints,
            "--state-dir",
            &state,
            "--wait",
            "0s",
        ],
        &fx.path("daemon.log"),
    )
}

fn put_servers(etcd: &Etcd, servers: &[String]) {
    for n in servers {
        etcd.put(&format!("/pools/eqiad/{n}"), "10");
    }
}

#[test]
fn the_daemon_keeps_the_file_when_etcd_is_emptied_and_recovers() {
    let etcd = Etcd::start();
    let ten = servers(10);
    put_servers(&etcd, &ten);
    let fx = Fx::new();
    pool_resource(&fx, "/pools", "");
    let d = daemon(&fx, &etcd);
    let dest = fx.path("out/pool.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == pool_file(&ten)
    });

    // A wiped keyspace: every host would install an empty pool.
    etcd.ctl(&["del", "--prefix", "/pools"]);
    wait_for("status shows the refusal", LIMIT, || {
        status_error(&fx, "pool").starts_with(
            "no keys under /pools/eqiad (a mistyped prefix, or an empty keyspace?); the installed file is kept",
        )
    });
    assert_eq!(read_or_empty(&dest), pool_file(&ten));
    assert_eq!(status(&fx)["resources"]["pool"]["healthy"], false);
    assert!(
        d.log().contains("no keys under /pools/eqiad"),
        "{}",
        d.log()
    );

    // Keys back (and one more): the next render is installed.
    let eleven = servers(11);
    put_servers(&etcd, &eleven);
    wait_for("recovery", LIMIT, || {
        read_or_empty(&dest) == pool_file(&eleven)
            && status(&fx)["resources"]["pool"]["healthy"] == true
    });
    drop(d);
}

#[test]
fn a_forced_render_confirms_the_shrink_and_the_daemon_recovers() {
    let etcd = Etcd::start();
    let forty = servers(40);
    put_servers(&etcd, &forty);
    let fx = Fx::new();
    pool_resource(&fx, "/pools", "");
    let d = daemon(&fx, &etcd);
    let dest = fx.path("out/pool.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&dest) == pool_file(&forty)
    });

    // A deliberate depool of 36 of 40 servers, in one revision (a delete
    // of the range mw1005..mw1040).
    etcd.ctl(&["del", "/pools/eqiad/mw1005", "/pools/eqiad/mw1041"]);
    let four = servers(4);
    let sizes = shrink_text(&pool_file(&forty), &pool_file(&four), 50);
    wait_for("the daemon refuses the shrink", LIMIT, || {
        status_error(&fx, "pool").starts_with(&sizes)
    });
    assert_eq!(read_or_empty(&dest), pool_file(&forty));

    // Confirmed on this host...
    let endpoints = etcd.endpoints();
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
    c.args(["render", "--once", "--force", "pool", "--confdir"])
        .arg(fx.dir.path())
        .args(["--endpoints", &endpoints, "--state-dir"])
        .arg(fx.path("state-once"))
        .env_remove("RUST_LOG");
    let out = common::Run::from(c.output().unwrap());
    out.expect_code(0)
        .expect_stderr(&["pool: --force: installing although new render is"]);
    assert_eq!(read_or_empty(&dest), pool_file(&four));
    // ... the daemon's next attempt finds the file in sync.
    wait_for("the daemon recovers", Duration::from_secs(90), || {
        status(&fx)["resources"]["pool"]["healthy"] == true
    });
    assert_eq!(read_or_empty(&dest), pool_file(&four));
    drop(d);
}

#[test]
fn check_and_diff_report_both_guards_before_anything_is_installed() {
    let fx = Fx::new();
    let forty = servers(40);
    fx.keys(&pool_keys(&forty));
    pool_resource(&fx, "/pools", "");
    fx.once().expect_code(0);
    let dest = fx.path("out/pool.conf");
    fx.run(&["check"]).expect_code(0);

    let five = servers(5);
    fx.keys(&pool_keys(&five));
    // A second resource with a mistyped prefix.
    fx.resource(
        "typo",
        "[template]\nsrc = \"pool.tera\"\ndest = \"{out}/typo.conf\"\nprefix = \"/pool\"\nkeys = [\"/eqiad\"]\n",
    );
    let sizes = shrink_text(&pool_file(&forty), &pool_file(&five), 50);
    let run = fx.run(&["check"]);
    run.expect_code(2).expect_stderr(&[
        &format!("pool: would be refused: {sizes}; if the change is deliberate run `liveconf render --once --force pool`"),
        "typo: would be refused: no keys under /pool/eqiad (a mistyped prefix, or an empty keyspace?); set allow_empty = true",
        "2 of 2 resources failed: pool, typo",
    ]);

    // --diff shows the change, and that it would be refused.
    let run = fx.run(&["render", "--once", "--diff"]);
    run.expect_code(2).expect_stderr(&[
        &format!("pool: would be refused: {sizes}"),
        "typo: would be refused: no keys under /pool/eqiad",
    ]);
    assert!(
        run.stdout
            .contains("-server mw1040.eqiad.wmnet:443 weight=10 max_fails=3 fail_timeout=10s;"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("+++ "), "{}", run.stdout);
    assert!(
        !run.stderr.contains("render failed: would be refused"),
        "{}",
        run.stderr
    );
    assert_eq!(read_or_empty(&dest), pool_file(&forty));
    assert!(!fx.path("out/typo.conf").exists());
    // --noop too.
    fx.run(&["render", "--once", "--noop"])
        .expect_code(2)
        .expect_stderr(&["pool: would be refused: new render is"]);
}

#[test]
fn check_reports_a_broken_template_no_resource_uses() {
    let fx = Fx::new();
    fx.keys("app:\n  x: \"1\"\n");
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    // A Go template (confd's) is parsed as Go, any other file as Tera.
    fx.template("lib/good.tmpl", "{{getv \"/x\"}}\n");
    fx.run(&["check"]).expect_code(0);
    fx.template("old/unused.tera", "line one\nline two\n{% for x in %}\n");
    fx.template("old/unused.tmpl", "a\n{{range}}\n");
    let templates = fx.path("templates");
    let run = fx.run(&["check"]);
    run.expect_code(2).expect_stderr(&[
        &format!(
            "{}: no resource uses this template, and it does not parse: template old/unused.tera line 3",
            templates.join("old/unused.tera").display()
        ),
        &format!(
            "{}: no resource uses this template, and it does not parse: template: unused.tmpl:2",
            templates.join("old/unused.tmpl").display()
        ),
        "2 templates under",
    ]);
    assert!(run.stderr.contains("x: renders"), "{}", run.stderr);
    // `render` installs what it can, and warns.
    let run = fx.once();
    run.expect_code(0)
        .expect_stderr(&["WARN", "old/unused.tera: no resource uses this template"]);
    assert_eq!(fx.read("out/x.conf"), "x=1\n");
    // With --only, check looks at the named resources only.
    fx.run(&["check", "--only", "x"]).expect_code(0);
}

#[test]
fn an_unknown_field_names_the_one_probably_meant() {
    let fx = Fx::new();
    fx.keys("app:\n  x: \"1\"\n");
    fx.template("x.tera", "x={{ getv(key=\"/x\") }}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nchek_cmd = \"true\"\n",
    );
    let file = fx.path("conf.d/x.toml");
    fx.run(&["check"]).expect_code(2).expect_stderr(&[&format!(
        "{}: line 6: unknown field `chek_cmd` (did you mean `check_cmd`?)",
        file.display()
    )]);
    // A confd resource ignores it, as confd does, but says so the same way.
    fx.template("x.tmpl", "x={{getv \"/x\"}}\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tmpl\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nreload_comand = \"true\"\n",
    );
    fx.once().expect_code(0).expect_stderr(&[&format!(
        "{} line 6: unknown field `reload_comand` (did you mean `reload_cmd`?); it is ignored, as confd ignores it",
        file.display()
    )]);
    assert!(Path::new(&fx.path("out/x.conf")).exists());
}
