//! `--noop`, `--diff`, `--exit-code`, `--set`/`--unset`, `--only`,
//! `--dest-root` and `liveconf check`.

use crate::common;

use common::Fx;

fn pools() -> Fx {
    let fx = Fx::new();
    fx.keys(
        "conftool:\n  pools:\n    mw1: '{\"weight\": 10, \"pooled\": \"yes\"}'\n    mw2: '{\"weight\": 5, \"pooled\": \"no\"}'\n",
    );
    fx.template(
        "pool.tera",
        "{% for kv in gets(pattern=\"/*\") %}{% set s = kv.value | json_decode %}{% if s.pooled == \"yes\" %}server {{ kv.key | replace(from=\"/\", to=\"\") }} weight={{ s.weight }};\n{% endif %}{% endfor %}",
    );
    fx.resource(
        "pool",
        "[template]\nsrc = \"pool.tera\"\ndest = \"{out}/pool.conf\"\nprefix = \"/conftool/pools\"\nkeys = [\"/\"]\n",
    );
    // A file that reads no key that exists: it says it may.
    fx.template("other.tera", "fixed\n");
    fx.resource(
        "other",
        "[template]\nsrc = \"other.tera\"\ndest = \"{out}/other.conf\"\nkeys = [\"/unrelated\"]\nallow_empty = true\n",
    );
    fx
}

#[test]
fn noop_changes_nothing_and_exit_code_reports_pending_changes() {
    let fx = pools();
    let marker = fx.path("ran");
    fx.resource(
        "pool",
        &format!(
            "[template]\nsrc = \"pool.tera\"\ndest = \"{{out}}/pool.conf\"\nprefix = \"/conftool/pools\"\nkeys = [\"/\"]\ncheck_cmd = \"touch {m}\"\nreload_cmd = \"touch {m}\"\n",
            m = marker.display()
        ),
    );
    fx.run(&["render", "--once", "--noop"])
        .expect_code(0)
        .expect_stderr(&["would change"]);
    assert!(fx.out_files().is_empty());
    assert!(!marker.exists(), "a command ran under --noop");
    fx.run(&["render", "--once", "--noop", "--exit-code"])
        .expect_code(1);

    fx.run(&["render", "--once"]).expect_code(0);
    assert!(marker.exists());
    fx.run(&["render", "--once", "--noop", "--exit-code"])
        .expect_code(0);
}

#[test]
fn diff_prints_a_unified_diff() {
    let fx = pools();
    fx.run(&["render", "--once"]).expect_code(0);
    assert_eq!(fx.read("out/pool.conf"), "server mw1 weight=10;\n");
    fx.keys(
        "conftool:\n  pools:\n    mw1: '{\"weight\": 10, \"pooled\": \"yes\"}'\n    mw2: '{\"weight\": 5, \"pooled\": \"yes\"}'\n",
    );
    let run = fx.run(&["render", "--once", "--diff", "--exit-code"]);
    run.expect_code(1);
    let dest = fx.path("out/pool.conf").display().to_string();
    assert!(
        run.stdout.contains(&format!("--- {dest}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains(&format!("+++ {dest}")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("\n server mw1 weight=10;\n+server mw2 weight=5;\n"),
        "{}",
        run.stdout
    );
    assert_eq!(
        fx.read("out/pool.conf"),
        "server mw1 weight=10;\n",
        "--diff wrote the file"
    );
}

#[test]
fn set_and_unset_preview_an_etcdctl_put_without_touching_the_backend() {
    let fx = pools();
    fx.run(&["render", "--once"]).expect_code(0);
    let keys_before = fx.read("keys.yaml");
    let run = fx.run(&[
        "render",
        "--once",
        "--diff",
        "--set",
        "/conftool/pools/mw3={\"weight\": 1, \"pooled\": \"yes\"}",
        "--unset",
        "/conftool/pools/mw1",
    ]);
    run.expect_code(0);
    assert!(
        run.stdout
            .contains("-server mw1 weight=10;\n+server mw3 weight=1;\n"),
        "{}",
        run.stdout
    );
    assert!(
        !run.stdout.contains("other.conf"),
        "an unrelated file would change:\n{}",
        run.stdout
    );
    assert_eq!(fx.read("out/pool.conf"), "server mw1 weight=10;\n");
    assert_eq!(fx.read("keys.yaml"), keys_before);
    assert!(!run.stderr.contains("WARN"), "{}", run.stderr);

    // A key no resource reads (a forgotten prefix), or an unset of a key
    // that does not exist, changes nothing: the preview says why.
    fx.run(&[
        "render",
        "--once",
        "--diff",
        "--exit-code",
        "--set",
        "/pools/mw3=x",
    ])
    .expect_code(0)
    .expect_stderr(&["--set /pools/mw3", "no resource reads this key"]);
    fx.run(&["render", "--once", "--diff", "--unset", "/conftool/pools"])
        .expect_code(0)
        .expect_stderr(&["--unset /conftool/pools", "no such key"]);

    // --set is a preview only.
    fx.run(&["render", "--once", "--set", "/a=b"])
        .expect_code(3)
        .expect_stderr(&["--set/--unset only preview"]);
    fx.run(&["render", "--once", "--noop", "--set", "novalue"])
        .expect_code(3)
        .expect_stderr(&["KEY=VALUE"]);
}

#[test]
fn only_renders_the_named_resources() {
    let fx = pools();
    fx.run(&["render", "--once", "--only", "other"])
        .expect_code(0);
    assert_eq!(fx.out_files(), ["other.conf"]);
    fx.run(&["render", "--once", "--only", "nope"])
        .expect_code(3)
        .expect_stderr(&["--only nope", "no resource nope", "other, pool"]);
}

#[test]
fn dest_root_writes_below_a_directory() {
    let fx = pools();
    let root = fx.path("preview");
    let run = fx.run(&["render", "--once", "--dest-root", root.to_str().unwrap()]);
    run.expect_code(0);
    let inner = root.join(fx.path("out/pool.conf").strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(inner).unwrap(),
        "server mw1 weight=10;\n"
    );
    assert!(fx.out_files().is_empty(), "wrote outside --dest-root");
}

/// A preview writes the destinations and nothing else: the host's status
/// (here named by liveconf.toml, as in production) is left alone and the
/// tree stays clean for `diff -r` against golden files.
#[test]
fn dest_root_leaves_the_status_alone_unless_a_state_dir_is_given() {
    let fx = pools();
    let config = fx.path("liveconf.toml");
    let state = fx.path("state");
    std::fs::write(
        &config,
        format!("state_dir = {:?}\n", state.display().to_string()),
    )
    .unwrap();
    let root = fx.path("preview");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["render", "--once", "--config"])
        .arg(&config)
        .arg("--confdir")
        .arg(fx.dir.path())
        .arg("--file")
        .arg(fx.path("keys.yaml"))
        .arg("--dest-root")
        .arg(&root)
        .output()
        .unwrap();
    common::Run::from(out).expect_code(0);
    let mut files: Vec<String> = walk(&root)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["other.conf", "pool.conf"],
        "preview tree: {files:?}"
    );
    assert!(
        !state.join("status.json").exists(),
        "the host's status was overwritten"
    );

    // Named on the command line, the state dir is written (where named).
    fx.run(&["render", "--once", "--dest-root", root.to_str().unwrap()])
        .expect_code(0);
    assert!(state.join("status.json").exists());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            found.extend(walk(&p));
        } else {
            found.push(p);
        }
    }
    found
}

#[test]
fn check_renders_in_memory_and_writes_nothing() {
    let fx = pools();
    fx.run(&["check"])
        .expect_code(0)
        .expect_stderr(&["all of 2 resources render"]);
    assert!(fx.out_files().is_empty());
    assert!(!fx.path("state/status.json").exists());

    fx.template("other.tera", "{{ getv(key=\"/missing\") }}");
    fx.run(&["check"]).expect_code(2).expect_stderr(&[
        "other: render failed",
        "/missing",
        "1 of 2 resources failed",
    ]);
    assert!(fx.out_files().is_empty());
}

#[test]
fn status_json_records_every_resource() {
    let fx = pools();
    fx.run(&["render", "--once"]).expect_code(0);
    let status: serde_json::Value = serde_json::from_str(&fx.read("state/status.json")).unwrap();
    let pool = &status["resources"]["pool"];
    assert_eq!(pool["healthy"], true);
    assert_eq!(pool["revision"], 1);
    let content = std::fs::read(fx.path("out/pool.conf")).unwrap();
    use sha2::Digest;
    assert_eq!(pool["sha256"], hex::encode(sha2::Sha256::digest(&content)));
}

#[test]
fn unwritable_state_dir_is_only_a_warning_for_once() {
    let fx = pools();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args([
            "render",
            "--once",
            "--state-dir",
            "/proc/liveconf-cannot-write",
        ])
        .arg("--confdir")
        .arg(fx.dir.path())
        .arg("--file")
        .arg(fx.path("keys.yaml"))
        .output()
        .unwrap();
    let run = common::Run::from(out);
    run.expect_code(0).expect_stderr(&["status not saved"]);
    assert_eq!(fx.read("out/pool.conf"), "server mw1 weight=10;\n");
}

#[test]
fn help_lists_exit_codes() {
    let fx = Fx::new();
    let run = fx.run(&["render", "--help"]);
    run.expect_code(0);
    assert!(run.stdout.contains("Exit codes:"), "{}", run.stdout);
    assert!(run.stdout.contains("--exit-code"), "{}", run.stdout);

    // Each subcommand's help shows the options it uses, not the daemon's.
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["status", "--help"])
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains("--state-dir") && status.contains("--max-age"),
        "{status}"
    );
    assert!(
        !status.contains("--endpoints") && !status.contains("--wait"),
        "{status}"
    );

    // Man pages for packaging: the main one and one per subcommand.
    for (args, title) in [
        (&["generate", "man"][..], ".TH LIVECONF 1"),
        (&["generate", "man", "render"][..], ".TH LIVECONF-RENDER 1"),
        (&["generate", "man", "fleet"][..], ".TH LIVECONF-FLEET 1"),
        (
            &["generate", "man", "keys-import"][..],
            ".TH LIVECONF-KEYS-IMPORT 1",
        ),
        (
            &["generate", "man", "resources"][..],
            ".TH LIVECONF-RESOURCES 5",
        ),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        let page = String::from_utf8_lossy(&out.stdout);
        assert!(page.contains(title), "{args:?}: {page}");
    }
}

/// With a relative `--dest-root`, `{{src}}` and `{{dest}}` are still
/// absolute: a check command that changes directory finds both files.
#[test]
fn check_command_paths_are_absolute_under_a_relative_dest_root() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    let seen = fx.path("seen");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"/etc/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\ncheck_cmd = \"cd / && cat {{{{src}}}} && echo {{{{dest}}}} > {}\"\n",
            seen.display()
        ),
    );
    let out = fx
        .cmd(&["render", "--once", "--dest-root", "preview"])
        .current_dir(fx.dir.path())
        .output()
        .unwrap();
    // `cat {{src}}` after `cd /` fails the check if src were relative.
    common::Run::from(out).expect_code(0);
    let dest = fx.dir.path().join("preview/etc/x.conf");
    assert_eq!(
        std::fs::read_to_string(&seen).unwrap().trim(),
        dest.display().to_string()
    );
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "name=alpha\n");
}
