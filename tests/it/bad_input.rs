//! Bad input: one clear error naming the file, line, resource or key; a
//! non-zero exit; nothing written (the destination keeps its content).

use crate::common;

use common::Fx;

/// A fixture with one resource `x` whose destination already holds "previous".
fn fixture(resource: &str, template: &str) -> Fx {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n  doc: 'not json'\n");
    fx.template("x.tera", template);
    fx.resource("x", resource);
    std::fs::write(fx.path("out/x.conf"), "previous\n").unwrap();
    fx
}

const GOOD: &str =
    "[template]\nsrc = \"x.tera\"\ndest = \"{out}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n";

fn assert_untouched(fx: &Fx) {
    assert_eq!(fx.read("out/x.conf"), "previous\n");
    assert_eq!(fx.out_files(), ["x.conf"], "something was written");
}

#[test]
fn malformed_toml_names_file_and_line() {
    let fx = fixture("[template]\nsrc = \"x.tera\"\ndest = \n", "x");
    let run = fx.once();
    run.expect_code(2)
        .expect_stderr(&["conf.d/x.toml", "line 3"]);
    assert_untouched(&fx);
}

#[test]
fn unknown_field_is_refused() {
    let fx = fixture(&format!("{GOOD}destination = \"/tmp/typo\"\n"), "x");
    fx.once().expect_code(2).expect_stderr(&[
        "conf.d/x.toml",
        "line 6",
        "unknown field `destination`",
    ]);
    assert_untouched(&fx);
}

#[test]
fn missing_template_table_is_refused() {
    let fx = fixture("src = \"x.tera\"\n", "x");
    let run = fx.once();
    // Fields without the heading, or an empty file: no [template].
    run.expect_code(2)
        .expect_stderr(&["conf.d/x.toml", "no [template] table", "heading"]);
    std::fs::write(fx.path("conf.d/x.toml"), "# nothing here\n").unwrap();
    fx.once()
        .expect_code(2)
        .expect_stderr(&["conf.d/x.toml", "no [template] table"]);
    assert_untouched(&fx);
}

/// `..` in `dest` is refused: it could lead a `--dest-root` preview out of
/// its directory.
#[test]
fn dest_with_dot_dot_is_refused() {
    let fx = fixture(&GOOD.replace("{out}/x.conf", "/../escaped.conf"), "x");
    let root = fx.path("preview");
    fx.run(&["render", "--once", "--dest-root", root.to_str().unwrap()])
        .expect_code(2)
        .expect_stderr(&["conf.d/x.toml", "must not contain `..`"]);
    assert!(!fx.dir.path().join("escaped.conf").exists());
    assert!(!std::path::Path::new("/escaped.conf").exists());
    assert_untouched(&fx);
}

#[test]
fn bad_mode_unknown_owner_and_missing_src_are_refused() {
    for (extra, needle) in [
        ("mode = \"0689\"\n", "not an octal number"),
        ("owner = \"no-such-user-liveconf\"\n", "no such user"),
        ("group = \"no-such-group-liveconf\"\n", "no such group"),
    ] {
        let fx = fixture(&format!("{GOOD}{extra}"), "x");
        fx.once()
            .expect_code(2)
            .expect_stderr(&["conf.d/x.toml", needle]);
        assert_untouched(&fx);
    }
    let fx = fixture(&GOOD.replace("x.tera", "nope.tera"), "x");
    fx.once()
        .expect_code(2)
        .expect_stderr(&["conf.d/x.toml", "nope.tera", "does not exist"]);
    assert_untouched(&fx);
}

#[test]
fn template_syntax_error_names_template_and_line() {
    let fx = fixture(GOOD, "line one\nline two {% if %}\n");
    fx.once()
        .expect_code(2)
        .expect_stderr(&["x: render failed", "template x.tera line 2"]);
    assert_untouched(&fx);
}

#[test]
fn missing_key_names_key_and_writes_nothing() {
    let fx = fixture(GOOD, "{{ getv(key=\"/nope\") }}\n");
    fx.once().expect_code(2).expect_stderr(&[
        "x: render failed",
        "key /nope not found",
        "/app/nope",
    ]);
    assert_untouched(&fx);
}

#[test]
fn invalid_json_names_the_key() {
    let fx = fixture(
        GOOD,
        "{{ getv(key=\"/doc\") | json_decode | json_encode }}\n",
    );
    fx.once()
        .expect_code(2)
        .expect_stderr(&["x: render failed", "value of key /doc is not valid JSON"]);
    assert_untouched(&fx);
}

#[test]
fn missing_destination_directory_writes_nothing() {
    let fx = fixture(&GOOD.replace("{out}/x.conf", "{out}/nodir/x.conf"), "x");
    fx.once()
        .expect_code(2)
        .expect_stderr(&["nodir", "does not exist"]);
    assert_untouched(&fx);
}

#[test]
fn unreadable_key_file_is_a_backend_error() {
    let fx = fixture(GOOD, "{{ getv(key=\"/name\") }}");
    std::fs::remove_file(fx.path("keys.yaml")).unwrap();
    let run = fx.once();
    run.expect_code(4)
        .expect_stderr(&["cannot read key file", "keys.yaml"]);
    assert_untouched(&fx);

    std::fs::write(fx.path("keys.yaml"), "app: [unclosed\n").unwrap();
    fx.once()
        .expect_code(4)
        .expect_stderr(&["invalid key file", "keys.yaml", "line"]);
    assert_untouched(&fx);
}

#[test]
fn invalid_settings_file_names_file_and_line() {
    let fx = fixture(GOOD, "x");
    std::fs::write(fx.path("liveconf.toml"), "prefix = \"/a\"\nwiat = \"1s\"\n").unwrap();
    fx.once()
        .expect_code(3)
        .expect_stderr(&["liveconf.toml", "line 2", "unknown field `wiat`"]);
    assert_untouched(&fx);
}

#[test]
fn errors_are_one_line_without_panics() {
    let fx = fixture(GOOD, "{{ getv(key=\"/nope\") }}\n");
    let run = fx.once();
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    assert!(!run.stderr.contains("RUST_BACKTRACE"), "{}", run.stderr);
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("render failed"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", run.stderr);
}

/// Connection settings that cannot work are settings errors (exit 3), not
/// "etcd unreachable" (exit 4), and name the setting.
#[test]
fn impossible_etcd_settings_exit_3() {
    let fx = fixture(GOOD, "x");
    for (args, needle) in [
        (&["--username", "u"][..], "password_file"),
        (&["--cert-file", "/nonexistent.pem"][..], "key_file"),
        (&["--ca-file", "/nonexistent-ca.pem"][..], "CA file"),
        (&["--endpoints", "ftp://127.0.0.1:1"][..], "http or https"),
    ] {
        // (Not `fx.run`: it gives --file, which --backend etcd refuses.)
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
            .args(["render", "--once", "--backend", "etcd", "--confdir"])
            .arg(fx.dir.path())
            .arg("--state-dir")
            .arg(fx.path("state"))
            .args(args)
            .env_remove("RUST_LOG")
            .output()
            .expect("run liveconf");
        common::Run::from(out)
            .expect_code(3)
            .expect_stderr(&[needle]);
    }
    assert_untouched(&fx);
}

#[test]
fn an_error_exit_with_stderr_a_broken_pipe_keeps_its_exit_code() {
    // stderr is a pipe nobody reads any more (`liveconf ... 2>&1 | head`
    // after head exits): the error message is lost, but the exit code must
    // still say what happened (3, invalid configuration), never a panic's 101.
    let dir = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["render", "--once", "--confdir"])
        .arg(dir.path().join("no-such-confdir"))
        .stderr(writer)
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
}

/// A negative duration given to `--timeout`, `--max-lag` or `--max-age`,
/// with or without `=`, is refused as such (exit 3), not read as an
/// unknown flag `-5` (found by the fleet wait trial).
#[test]
fn a_negative_duration_flag_is_refused_as_negative() {
    let fx = Fx::new();
    for args in [
        &["fleet", "wait", "--timeout", "-5s"][..],
        &["fleet", "wait", "--timeout=-5s"],
        &["fleet", "--max-lag", "-1s"],
        &["status", "--max-age", "-1m"],
    ] {
        let mut all = args.to_vec();
        all.extend(["--endpoints", "http://127.0.0.1:1"]);
        if args[0] == "status" {
            all.truncate(args.len());
        }
        fx.run(&all)
            .expect_code(3)
            .expect_stderr(&["is not a duration (it cannot be negative)"]);
    }
}
