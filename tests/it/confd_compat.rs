//! confd drop-in: unchanged confd resources and Go templates render exactly
//! what the real confd 0.17 rendered (`tests/confd-golden/expected/`), from
//! the file backend and from a real etcd; a Go-template resource lives in the
//! daemon like a Tera one.

use crate::common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Fx;
use common::etcd::{Daemon, Etcd, read_or_empty, wait_for};

const LIMIT: Duration = Duration::from_secs(20);

fn golden() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/confd-golden")
}

#[test]
fn the_golden_set_matches_confd_byte_for_byte_with_the_file_backend() {
    let out = std::process::Command::new("bash")
        .arg(golden().join("check.sh"))
        .arg(env!("CARGO_BIN_EXE_liveconf"))
        .output()
        .expect("run check.sh");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check.sh failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("confd-golden: 24/24 match"), "{stdout}");
}

/// The golden confdir copied to `dir/conf` with `@OUT@` → `dir/out`.
fn golden_confdir(dir: &Path) -> PathBuf {
    let conf = dir.join("conf");
    for sub in ["conf.d", "templates"] {
        std::fs::create_dir_all(conf.join(sub)).unwrap();
        for e in std::fs::read_dir(golden().join("confdir").join(sub)).unwrap() {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            let text = text.replace("@OUT@", &dir.join("out").display().to_string());
            std::fs::write(conf.join(sub).join(e.file_name()), text).unwrap();
        }
    }
    std::fs::create_dir_all(dir.join("out")).unwrap();
    conf
}

fn golden_env(cmd: &mut std::process::Command) {
    // env.sh, as check.sh sources it.
    cmd.env("GOLDEN_A_REGION", "eu-central")
        .env("GOLDEN_A_TIER", "premium")
        .env_remove("GOLDEN_A_UNSET");
}

#[test]
fn the_golden_set_matches_confd_byte_for_byte_from_etcd() {
    let etcd = Etcd::start();
    let flat: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(golden().join("keys.flat.json")).unwrap())
            .unwrap();
    for (k, v) in &flat {
        etcd.put_raw(k, v.as_str().unwrap());
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = golden_confdir(dir.path());
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
    cmd.args(["render", "--once", "--no-reload", "--endpoints"])
        .arg(etcd.endpoints())
        .arg("--confdir")
        .arg(&conf)
        .arg("--state-dir")
        .arg(dir.path().join("state"));
    golden_env(&mut cmd);
    let out = cmd.output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    // confd fails three resources; so must liveconf, naming them.
    assert_eq!(out.status.code(), Some(2), "{log}");
    let errors = std::fs::read_to_string(golden().join("expected/ERRORS.txt")).unwrap();
    let failing: Vec<&str> = errors
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(failing.len(), 3);
    for name in &failing {
        assert!(log.contains(&format!("{name}: render failed")), "{log}");
        assert!(!dir.path().join(format!("out/{name}.out")).exists());
    }
    let mut compared = 0;
    for e in std::fs::read_dir(golden().join("expected")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "out") {
            let got = dir.path().join("out").join(p.file_name().unwrap());
            assert_eq!(
                std::fs::read(&got).unwrap_or_default(),
                std::fs::read(&p).unwrap(),
                "{} differs from confd's",
                got.display()
            );
            compared += 1;
        }
    }
    assert_eq!(compared, 21);
}

#[test]
fn a_go_template_resource_follows_etcd_in_the_daemon_and_reports_like_tera() {
    let etcd = Etcd::start();
    etcd.put("/svc/web/hosts/h1", "10.0.0.1");
    etcd.put("/svc/db/master", "db1");
    let fx = Fx::new();
    // An unchanged confd resource (capitalised field, a field liveconf does
    // not know) and a Tera one next to it.
    fx.template(
        "web.tmpl",
        "{{range gets \"/hosts/*\"}}server {{base .Key}} {{.Value}};\n{{end}}",
    );
    fx.resource(
        "web",
        "[template]\nSrc = \"web.tmpl\"\ndest = \"{out}/web.conf\"\nprefix = \"/svc/web\"\nkeys = [\"/hosts\"]\nmode = \"0644\"\nfoo = 1\n",
    );
    fx.template("db.tera", "master={{ getv(key=\"/master\") }}\n");
    fx.resource(
        "db",
        "[template]\nsrc = \"db.tera\"\ndest = \"{out}/db.conf\"\nprefix = \"/svc/db\"\nkeys = [\"/\"]\n",
    );
    let confdir = fx.dir.path().display().to_string();
    let state = fx.path("state").display().to_string();
    let endpoints = etcd.endpoints();
    let d = Daemon::start(
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
    );
    let web = fx.path("out/web.conf");
    let db = fx.path("out/db.conf");
    wait_for("initial render", LIMIT, || {
        read_or_empty(&web) == "server h1 10.0.0.1;\n" && read_or_empty(&db) == "master=db1\n"
    });
    assert!(
        d.log().contains("unknown field `foo`") && d.log().contains("line 7"),
        "the ignored confd field is named with its line: {}",
        d.log()
    );

    etcd.put("/svc/web/hosts/h2", "10.0.0.2");
    wait_for("put reaches web.conf", LIMIT, || {
        read_or_empty(&web) == "server h1 10.0.0.1;\nserver h2 10.0.0.2;\n"
    });
    etcd.del("/svc/web/hosts/h1");
    wait_for("delete reaches web.conf", LIMIT, || {
        read_or_empty(&web) == "server h2 10.0.0.2;\n"
    });
    let rev = etcd.revision();
    wait_for("status.json records the revision", LIMIT, || {
        let s = read_or_empty(&fx.path("state/status.json"));
        let v: serde_json::Value = serde_json::from_str(&s).unwrap_or_default();
        v["resources"]["web"]["revision"] == serde_json::json!(rev)
    });
    // The Tera resource was not re-rendered by web's changes.
    assert_eq!(d.count("db: rendered"), 1, "{}", d.log());
    let web_renders = d.count("web: rendered");
    etcd.put("/svc/db/master", "db2");
    wait_for("put reaches db.conf", LIMIT, || {
        read_or_empty(&db) == "master=db2\n"
    });
    assert_eq!(d.count("web: rendered"), web_renders, "{}", d.log());

    // A key the template reads that then disappears fails the render and
    // keeps the file.
    fx.template("web.tmpl", "{{getv \"/hosts/h9\"}}\n");
    d.signal(nix::sys::signal::Signal::SIGHUP);
    wait_for("the render failure is logged", LIMIT, || {
        d.log().contains("key does not exist: /hosts/h9")
    });
    assert_eq!(read_or_empty(&web), "server h2 10.0.0.2;\n");
}

#[test]
fn a_resource_in_a_conf_d_subdirectory_is_named_not_silently_skipped() {
    let fx = Fx::new();
    fx.keys("a: \"1\"\n");
    fx.template("t.tmpl", "{{getv \"/a\"}}\n");
    fx.resource(
        "top",
        "[template]\nsrc = \"t.tmpl\"\ndest = \"{out}/top\"\nkeys = [\"/a\"]\n",
    );
    std::fs::create_dir_all(fx.path("conf.d/team")).unwrap();
    std::fs::write(
        fx.path("conf.d/team/nested.toml"),
        "[template]\nsrc = \"t.tmpl\"\ndest = \"/tmp/x\"\nkeys = [\"/a\"]\n",
    )
    .unwrap();
    let out = fx.cmd(&["render", "--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(read_or_empty(&fx.path("out/top")), "1\n");
    assert!(
        log.contains("team/nested.toml is not read"),
        "the nested resource is named: {log}"
    );
}

#[test]
fn confd_style_resource_errors_name_the_line_and_the_key() {
    let fx = Fx::new();
    fx.keys("svc:\n  zk: \"{not json\"\n");
    fx.template("j.tmpl", "{{$d := json (getv \"/svc/zk\")}}{{$d.host}}\n");
    fx.resource(
        "j",
        "[template]\nsrc = \"j.tmpl\"\ndest = \"{out}/j\"\nkeys = [\"/svc\"]\n",
    );
    fx.resource(
        "t",
        "[template]\nsrc = \"j.tmpl\"\ndest = \"{out}/t\"\n\nkeys = \"/svc\"\n[other]\nx = 1\n",
    );
    let out = fx.cmd(&["render", "--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{log}");
    let line = |name: &str| {
        log.lines()
            .find(|l| l.contains(&format!("{name}: ")) && l.contains("failed"))
            .unwrap_or_else(|| panic!("no failure for {name}: {log}"))
            .to_string()
    };
    // The bad JSON is named by its key, and the template line is given.
    let j = line("j");
    assert!(
        j.contains("line 1") && j.contains("value of key /svc/zk is not valid JSON"),
        "{j}"
    );
    // A wrong type in a confd-style resource names the field and its line.
    let t = line("t");
    assert!(t.contains("line 5: keys:"), "{t}");
    assert!(
        log.contains("t.toml line 6: `other` outside [template] is ignored"),
        "{log}"
    );
    assert!(!fx.path("out/j").exists());
}

#[test]
fn a_mode_only_change_shows_in_the_diff_on_stdout() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fx::new();
    fx.keys("a: \"1\"\n");
    fx.template("m.tmpl", "{{getv \"/a\"}}\n");
    fx.resource(
        "m",
        "[template]\nsrc = \"m.tmpl\"\ndest = \"{out}/m\"\nkeys = [\"/a\"]\nmode = \"644\"\n",
    );
    // What confd leaves for mode = "644": the right bytes, mode 0204.
    let dest = fx.path("out/m");
    std::fs::write(&dest, "1\n").unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o204)).unwrap();
    let out = fx
        .cmd(&["render", "--once", "--noop", "--diff", "--exit-code"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("mode 0204 → 0644") && stdout.contains("content unchanged"),
        "the diff says why the file would change: {stdout:?}"
    );
}

#[test]
fn explain_names_what_does_not_parse_and_json_of_the_wrong_shape_names_its_key() {
    let fx = Fx::new();
    fx.keys("n:\n  keepalive: \"64\"\n");
    fx.template("bad.tmpl", "{{range gets \"/n/*\"}}\n");
    fx.resource(
        "bad",
        "[template]\nsrc = \"bad.tmpl\"\ndest = \"{out}/bad\"\nkeys = [\"/n\"]\n",
    );
    fx.template(
        "obj.tmpl",
        "{{$d := json (getv \"/n/keepalive\")}}{{$d.pooled}}\n",
    );
    fx.resource(
        "obj",
        "[template]\nsrc = \"obj.tmpl\"\ndest = \"{out}/obj\"\nkeys = [\"/n\"]\n",
    );
    let out = fx.cmd(&["check", "--explain"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("bad: Go template bad.tmpl") && stdout.contains("does not parse"),
        "{stdout}"
    );
    let out = fx.cmd(&["render", "--once"]).output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("value of key /n/keepalive is JSON but not an object"),
        "{log}"
    );
}
