//! `liveconf keys import` / `keys export` against a real etcd: the
//! MediaWiki example imported renders byte for byte what the file backend
//! renders; `--dry-run` prints the difference and writes nothing; `--prune`
//! and `--prefix`; transactions of at most 128 operations; export → import
//! round trips, and the file backend reads an export as etcd holds it.

use crate::common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::Run;
use common::etcd::Etcd;

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `liveconf ARGS --endpoints E`, with an empty confdir (no liveconf.toml
/// of the machine running the tests).
fn liveconf(etcd: &Etcd, empty: &Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(args)
        .arg("--endpoints")
        .arg(etcd.endpoints())
        .arg("--confdir")
        .arg(empty)
        .env_remove("RUST_LOG")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

/// Every key under `prefix` and its value, as etcd holds them.
fn dump(etcd: &Etcd, prefix: &str) -> BTreeMap<String, Vec<u8>> {
    use base64::Engine as _;
    let out = etcd.ctl(&["get", prefix, "--prefix", "-w", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("etcdctl json");
    let b64 = base64::engine::general_purpose::STANDARD;
    v["kvs"]
        .as_array()
        .map(|kvs| {
            kvs.iter()
                .map(|kv| {
                    let k = b64.decode(kv["key"].as_str().unwrap()).unwrap();
                    let val = kv["value"]
                        .as_str()
                        .map(|s| b64.decode(s).unwrap())
                        .unwrap_or_default();
                    (String::from_utf8(k).unwrap(), val)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Every file below `dir`, relative path → content.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn the_example_imported_into_etcd_renders_what_the_file_backend_renders() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let keys = repo("examples/mediawiki/keys.yaml");
    let keys = keys.to_str().unwrap();

    let r = liveconf(&etcd, &empty, &["keys", "import", keys]);
    r.expect_code(0);
    assert!(
        r.stdout
            .contains("+ /conftool/v1/mediawiki-config/common/WMFMasterDatacenter = \"eqiad\"\n"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("wrote "), "{}", r.stdout);
    let imported = dump(&etcd, "/conftool");
    assert!(imported.len() > 50, "{imported:?}");

    // Importing again writes nothing.
    let before = etcd.revision();
    let r = liveconf(&etcd, &empty, &["keys", "import", keys]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("etcd already holds every key") && r.stdout.contains("nothing to write"),
        "{}",
        r.stdout
    );
    assert_eq!(etcd.revision(), before);

    // The same render from etcd and from the key file.
    let config = repo("examples/mediawiki/liveconf.toml");
    let config = config.to_str().unwrap();
    let from_etcd = tmp.path().join("etcd");
    let from_file = tmp.path().join("file");
    let render = |dest: &Path, extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(["render", "--once", "--config", config, "--dest-root"])
            .arg(dest)
            .args(extra)
            .env_remove("RUST_LOG")
            .output()
            .expect("run liveconf");
        Run::from(out).expect_code(0).stdout.clone()
    };
    let endpoints = etcd.endpoints();
    render(
        &from_etcd,
        &["--backend", "etcd", "--endpoints", endpoints.as_str()],
    );
    render(&from_file, &["--backend", "file", "--file", keys]);
    let (a, b) = (tree(&from_etcd), tree(&from_file));
    assert_eq!(a.len(), 7, "{:?}", a.keys());
    assert_eq!(a, b, "etcd and the key file rendered different files");
}

#[test]
fn dry_run_prints_the_difference_and_writes_nothing() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    etcd.put("/app/a", "old");
    etcd.put("/app/keep", "k");
    etcd.put("/app/gone", "x");
    etcd.put("/application/other", "not under /app");
    let file = tmp.path().join("app.yaml");
    std::fs::write(
        &file,
        "app:\n  a: new\n  b: 2.0\n  keep: k\n  list: [x, true]\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let before = dump(&etcd, "/");
    let rev = etcd.revision();

    let r = liveconf(&etcd, &empty, &["keys", "import", "--dry-run", file]);
    r.expect_code(0);
    assert_eq!(
        r.stdout.lines().take(4).collect::<Vec<_>>(),
        [
            "~ /app/a = \"new\" (was \"old\")",
            "+ /app/b = \"2\"",
            "+ /app/list/0 = \"x\"",
            "+ /app/list/1 = \"true\"",
        ],
        "{}",
        r.stdout
    );
    let last = r.stdout.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("dry run: 3 to add, 1 to change, 0 to remove, 1 unchanged")
            && last.contains("1 key under /app not in")
            && last.contains("--prune removes them")
            && last.contains("nothing was written"),
        "{last}"
    );
    assert_eq!(etcd.revision(), rev, "--dry-run wrote");
    assert_eq!(dump(&etcd, "/"), before);

    let r = liveconf(
        &etcd,
        &empty,
        &["keys", "import", "--dry-run", "--prune", file],
    );
    r.expect_code(0);
    assert!(
        r.stdout.contains("- /app/gone (was \"x\")\n"),
        "{}",
        r.stdout
    );
    assert!(!r.stdout.contains("/application"), "{}", r.stdout);
    assert_eq!(etcd.revision(), rev, "--dry-run --prune wrote");

    let r = liveconf(&etcd, &empty, &["keys", "import", "--prune", file]);
    r.expect_code(0);
    let after = dump(&etcd, "/");
    let text = |k: &str| {
        after
            .get(k)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(text("/app/a").as_deref(), Some("new"));
    assert_eq!(text("/app/b").as_deref(), Some("2"));
    assert_eq!(text("/app/list/1").as_deref(), Some("true"));
    assert_eq!(text("/app/gone"), None);
    assert_eq!(
        text("/application/other").as_deref(),
        Some("not under /app")
    );
    // One transaction: one revision.
    assert_eq!(etcd.revision(), rev + 1);

    // --prefix places the file's keys below it.
    let r = liveconf(
        &etcd,
        &empty,
        &["keys", "import", "--prefix", "/staging/v1", file],
    );
    r.expect_code(0);
    assert_eq!(
        dump(&etcd, "/staging")
            .get("/staging/v1/app/a")
            .map(Vec::as_slice),
        Some(&b"new"[..])
    );

    // A file that holds no keys is refused, even with --prune.
    std::fs::write(tmp.path().join("none.yaml"), "{}\n").unwrap();
    let none = tmp.path().join("none.yaml");
    let r = liveconf(
        &etcd,
        &empty,
        &[
            "keys",
            "import",
            "--prune",
            "--prefix",
            "/app",
            none.to_str().unwrap(),
        ],
    );
    r.expect_code(3).expect_stderr(&["hold no keys"]);
    assert!(dump(&etcd, "/app").contains_key("/app/a"));
}

#[test]
fn a_large_import_is_written_in_transactions_of_at_most_128_operations() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let mut yaml = String::from("big:\n");
    for i in 0..300 {
        yaml.push_str(&format!("  k{i:03}: 'v{i}'\n"));
    }
    let file = tmp.path().join("big.yaml");
    std::fs::write(&file, yaml).unwrap();
    let rev = etcd.revision();
    let r = liveconf(&etcd, &empty, &["keys", "import", file.to_str().unwrap()]);
    r.expect_code(0);
    assert!(r.stdout.contains("in 3 transactions"), "{}", r.stdout);
    assert_eq!(etcd.revision(), rev + 3);
    assert_eq!(dump(&etcd, "/big").len(), 300);
}

#[test]
fn export_then_import_round_trips_and_the_file_backend_reads_the_export() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let values = [
        ("/rt/plain", "x"),
        ("/rt/empty", ""),
        ("/rt/bool", "true"),
        ("/rt/yes", "yes"),
        ("/rt/float", "1.10"),
        ("/rt/int", "007"),
        ("/rt/nul", "null"),
        ("/rt/json", "{\"weight\": 10, \"pooled\": \"yes\"}"),
        ("/rt/lines", "a\nb\n"),
        ("/rt/spaces", "  lead and trail  "),
        ("/rt/dash", "- a"),
        ("/rt/quote", "it's \"q\" \\ back"),
        ("/rt/uni", "ünï ☃"),
        ("/rt/list/0", "first"),
        ("/rt/list/1", "second"),
        ("/rt/deep/er/still", "deep"),
        ("/rt/1.0", "a key named 1.0"),
    ];
    for (k, v) in values {
        if v.is_empty() {
            // (etcdctl reads an empty stdin as no value at all.)
            etcd.put(k, v);
        } else {
            etcd.put_raw(k, v);
        }
    }
    let before = dump(&etcd, "/rt");
    assert_eq!(before.len(), values.len());

    for (format, name) in [("yaml", "rt.yaml"), ("json", "rt.json")] {
        let r = liveconf(
            &etcd,
            &empty,
            &["keys", "export", "/rt", "--format", format],
        );
        r.expect_code(0);
        let file = tmp.path().join(name);
        std::fs::write(&file, &r.stdout).unwrap();

        // The file backend renders from the export what etcd renders.
        let conf = tmp.path().join(format!("conf-{format}"));
        std::fs::create_dir_all(conf.join("conf.d")).unwrap();
        std::fs::create_dir_all(conf.join("templates")).unwrap();
        std::fs::write(
            conf.join("conf.d/all.toml"),
            "[template]\nformat = \"json\"\ndest = \"/all.json\"\nprefix = \"/rt\"\nkeys = [\"/\"]\n",
        )
        .unwrap();
        let render = |dest: &Path, extra: &[&str]| {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
                .args(["render", "--once", "--confdir"])
                .arg(&conf)
                .arg("--dest-root")
                .arg(dest)
                .args(extra)
                .env_remove("RUST_LOG")
                .output()
                .expect("run liveconf");
            Run::from(out).expect_code(0);
        };
        let endpoints = etcd.endpoints();
        render(
            &tmp.path().join(format!("e-{format}")),
            &["--endpoints", &endpoints],
        );
        render(
            &tmp.path().join(format!("f-{format}")),
            &["--file", file.to_str().unwrap()],
        );
        assert_eq!(
            tree(&tmp.path().join(format!("e-{format}"))),
            tree(&tmp.path().join(format!("f-{format}"))),
            "{format}:\n{}",
            r.stdout
        );

        // Delete, import the export: etcd holds exactly what it held.
        etcd.ctl(&["del", "/rt", "--prefix"]);
        assert!(dump(&etcd, "/rt").is_empty());
        liveconf(&etcd, &empty, &["keys", "import", file.to_str().unwrap()]).expect_code(0);
        assert_eq!(dump(&etcd, "/rt"), before, "{format}:\n{}", r.stdout);
    }

    // What no key file can hold is refused, naming the key.
    etcd.put("/rt/plain/below", "x");
    liveconf(&etcd, &empty, &["keys", "export", "/rt"])
        .expect_code(2)
        .expect_stderr(&["/rt/plain holds a value and also has keys below it"]);
    liveconf(&etcd, &empty, &["keys", "export", "/nothing/here"])
        .expect_code(2)
        .expect_stderr(&["no keys under /nothing/here"]);
    liveconf(&etcd, &empty, &["keys", "export", "rt"])
        .expect_code(3)
        .expect_stderr(&["must start with /"]);
}

/// `keys` reads the connection settings as the other subcommands do, and
/// uses etcd even where the settings file chooses the file backend.
#[test]
fn keys_use_the_settings_files_connection_whatever_its_backend() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("liveconf.toml"),
        format!(
            "backend = \"file\"\nfile = [\"keys.yaml\"]\nendpoints = [\"{}\"]\nprefix = \"/ignored\"\n",
            etcd.endpoints()
        ),
    )
    .unwrap();
    std::fs::write(tmp.path().join("k.yaml"), "s:\n  a: '1'\n").unwrap();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(args)
            .arg("--confdir")
            .arg(tmp.path())
            .env_remove("RUST_LOG")
            .output()
            .expect("run liveconf");
        Run::from(out)
    };
    let k = tmp.path().join("k.yaml");
    run(&["keys", "import", k.to_str().unwrap()]).expect_code(0);
    // The settings file's prefix does not move the keys.
    assert_eq!(
        dump(&etcd, "/s").get("/s/a").map(Vec::as_slice),
        Some(&b"1"[..])
    );
    let r = run(&["keys", "export", "/s", "--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("json");
    assert_eq!(v, serde_json::json!({"s": {"a": "1"}}));
    // Its help says what --prefix means here.
    let help = run(&["keys", "import", "--help"]);
    assert!(
        help.stdout.contains("Import under this prefix"),
        "{}",
        help.stdout
    );
    assert!(!help.stdout.contains("--state-dir"), "{}", help.stdout);
}

/// A user who may read but not write the subtree is told which permission
/// to grant, and nothing is written.
#[test]
fn a_user_without_write_permission_is_told_what_to_grant() {
    let etcd = Etcd::start();
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    etcd.enable_auth("rootpw", "userpw");
    let pw = tmp.path().join("pw");
    std::fs::write(&pw, "userpw\n").unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let file = tmp.path().join("app.yaml");
    std::fs::write(&file, "app:\n  x:\n    a: '1'\n    b: '2'\n").unwrap();
    let r = liveconf(
        &etcd,
        &empty,
        &[
            "keys",
            "import",
            "--username",
            "liveconf",
            "--password-file",
            pw.to_str().unwrap(),
            file.to_str().unwrap(),
        ],
    );
    r.expect_code(4).expect_stderr(&[
        "etcd refused to write as user liveconf",
        "grant the user's role readwrite on /app/x",
    ]);
    assert_eq!(r.stderr.lines().count(), 1, "{}", r.stderr);
    assert!(
        etcd.ctl_as_root("rootpw", &["get", "/app", "--prefix", "--keys-only"])
            .trim()
            .is_empty()
    );
}
