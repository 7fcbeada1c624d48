//! A connection flag the chosen backend cannot use is an error naming the
//! flag, the backend and where the backend was chosen (exit 3), never
//! silently dropped: `--endpoints` while liveconf.toml says
//! `backend = "file"`, `--file` while it says `backend = "etcd"`.

use crate::common;

use common::Run;

/// A confdir whose liveconf.toml says `settings`, with one resource
/// rendering the key /app/name from keys.yaml.
fn confdir(settings: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::create_dir_all(p.join("conf.d")).unwrap();
    std::fs::create_dir_all(p.join("templates")).unwrap();
    std::fs::create_dir_all(p.join("out")).unwrap();
    std::fs::write(p.join("liveconf.toml"), settings).unwrap();
    std::fs::write(p.join("keys.yaml"), "app:\n  name: alpha\n").unwrap();
    std::fs::write(p.join("templates/x.tera"), "{{ getv(key=\"/name\") }}\n").unwrap();
    std::fs::write(
        p.join("conf.d/x.toml"),
        format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{}\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
            p.join("out/x.conf").display()
        ),
    )
    .unwrap();
    dir
}

fn run(dir: &std::path::Path, args: &[&str]) -> Run {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(args)
        .arg("--config")
        .arg(dir.join("liveconf.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .env_remove("RUST_LOG")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

#[test]
fn endpoints_with_backend_file_is_an_error_naming_both() {
    let dir = confdir("backend = \"file\"\nfile = [\"keys.yaml\"]\n");
    let toml = dir.path().join("liveconf.toml").display().to_string();
    let want = format!(
        "--endpoints has no effect with backend = \"file\" (from {toml}): add --backend etcd to use etcd"
    );
    for args in [
        &["render", "--once", "--endpoints", "http://127.0.0.1:1"][..],
        &["render", "--endpoints", "http://127.0.0.1:1"][..],
        &["check", "--endpoints", "http://127.0.0.1:1"][..],
    ] {
        let r = run(dir.path(), args);
        r.expect_code(3).expect_stderr(&[&want]);
        assert_eq!(
            r.stderr.lines().count(),
            1,
            "{args:?}: one line\n{}",
            r.stderr
        );
    }
    // Every etcd-only flag, named together.
    run(
        dir.path(),
        &[
            "check",
            "--ca-file",
            "/ca.pem",
            "--username",
            "u",
            "--srv-domain",
            "example.com",
        ],
    )
    .expect_code(3)
    .expect_stderr(&[
        "--srv-domain, --ca-file and --username have no effect with backend = \"file\"",
    ]);
    assert!(
        !dir.path().join("out/x.conf").exists(),
        "something rendered"
    );

    // Without the flag the file backend renders; with --backend etcd the
    // flag is used (and etcd, unreachable here, is exit 4).
    run(dir.path(), &["render", "--once"]).expect_code(0);
    run(
        dir.path(),
        &[
            "check",
            "--backend",
            "etcd",
            "--endpoints",
            "http://127.0.0.1:1",
            "--connect-timeout",
            "1s",
        ],
    )
    .expect_code(4)
    // Nothing listens there: said, with what to check (second trial).
    .expect_stderr(&[
        "127.0.0.1:1",
        "nothing listens there: is etcd (or its grpc-proxy) running at this address",
    ]);
    // fleet always reads etcd: the flag is used there.
    run(
        dir.path(),
        &[
            "fleet",
            "--endpoints",
            "http://127.0.0.1:1",
            "--connect-timeout",
            "1s",
        ],
    )
    .expect_code(4);
}

#[test]
fn file_with_backend_etcd_is_an_error_naming_both() {
    let dir = confdir("backend = \"etcd\"\nendpoints = [\"http://127.0.0.1:1\"]\n");
    let toml = dir.path().join("liveconf.toml").display().to_string();
    let keys = dir.path().join("keys.yaml").display().to_string();
    run(dir.path(), &["render", "--once", "--file", &keys])
        .expect_code(3)
        .expect_stderr(&[&format!(
            "--file has no effect with backend = \"etcd\" (from {toml}): add --backend file to read key files"
        )]);
    // Saying which backend makes it work.
    run(
        dir.path(),
        &["render", "--once", "--backend", "file", "--file", &keys],
    )
    .expect_code(0);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out/x.conf")).unwrap(),
        "alpha\n"
    );
}
