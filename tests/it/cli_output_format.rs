//! One convention for machine output: `--format json` on `status` and
//! `fleet`; `fleet --json` still works, hidden, with one deprecation
//! warning.

use crate::common;

use common::Run;
use common::etcd::Etcd;

fn fleet(etcd: &Etcd, args: &[&str]) -> Run {
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .arg("fleet")
        .args(args)
        .arg("--endpoints")
        .arg(etcd.endpoints())
        .arg("--confdir")
        .arg(empty.path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run liveconf");
    Run::from(out)
}

#[test]
fn fleet_and_status_take_format_json_and_fleet_json_is_deprecated() {
    let etcd = Etcd::start();
    let r = fleet(&etcd, &["--format", "json"]);
    r.expect_code(0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("JSON");
    assert_eq!(v, serde_json::json!([]));
    assert!(!r.stderr.contains("deprecated"), "{}", r.stderr);

    let old = fleet(&etcd, &["--json"]);
    old.expect_code(0);
    assert_eq!(old.stdout, r.stdout);
    assert_eq!(
        old.stderr.matches("--json is deprecated").count(),
        1,
        "{}",
        old.stderr
    );
    assert!(old.stderr.contains("use --format json"), "{}", old.stderr);

    fleet(&etcd, &["--json", "--format", "text"]).expect_code(3);
    let text = fleet(&etcd, &[]);
    text.expect_code(0);
    assert!(text.stdout.contains("0 hosts"), "{}", text.stdout);

    // --help shows --format on both, and not the old spelling.
    for sub in ["fleet", "status"] {
        let help = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        assert!(help.contains("--format <FORMAT>"), "{sub}: {help}");
        assert!(!help.contains("--json"), "{sub}: {help}");
    }
}
