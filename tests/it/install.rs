//! Install semantics of `render --once`: compare, stage, check, rename, reload.

use crate::common;

use std::os::unix::fs::MetadataExt;

use common::Fx;

fn simple(fx: &Fx, extra: &str) {
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "name={{ getv(key=\"/name\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
}

#[test]
fn unchanged_content_is_not_touched_and_runs_no_command() {
    let fx = Fx::new();
    let marker = fx.path("ran");
    simple(
        &fx,
        &format!(
            "check_cmd = \"echo check >> {m}\"\nreload_cmd = \"echo reload >> {m}\"\n",
            m = marker.display()
        ),
    );
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/x.conf"), "name=alpha\n");
    assert_eq!(fx.read("ran"), "check\nreload\n");
    let before = std::fs::metadata(fx.path("out/x.conf")).unwrap();

    fx.once().expect_code(0);
    let after = std::fs::metadata(fx.path("out/x.conf")).unwrap();
    assert_eq!(before.ino(), after.ino(), "file was replaced");
    assert_eq!(before.mtime_nsec(), after.mtime_nsec());
    assert_eq!(before.mtime(), after.mtime());
    assert_eq!(
        fx.read("ran"),
        "check\nreload\n",
        "a command ran for an unchanged file"
    );
}

#[test]
fn failing_check_keeps_destination_and_leaves_no_stage_file() {
    let fx = Fx::new();
    simple(&fx, "check_cmd = \"grep -q beta {{src}}\"\n");
    std::fs::write(fx.path("out/x.conf"), "previous good content\n").unwrap();
    let before = std::fs::read(fx.path("out/x.conf")).unwrap();

    let run = fx.once();
    run.expect_code(2)
        .expect_stderr(&["x", "check", "grep -q beta", "exited with status 1"]);
    assert_eq!(std::fs::read(fx.path("out/x.conf")).unwrap(), before);
    assert_eq!(fx.out_files(), ["x.conf"], "stage file left behind");

    // The check sees the staged file, not the destination.
    fx.keys("app:\n  name: beta\n");
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/x.conf"), "name=beta\n");
    assert_eq!(fx.out_files(), ["x.conf"]);
}

#[test]
fn check_command_gets_src_and_dest() {
    let fx = Fx::new();
    let log = fx.path("args");
    simple(
        &fx,
        &format!(
            "check_cmd = \"echo {{{{src}}}} {{{{ .dest }}}} > {}\"\n",
            log.display()
        ),
    );
    fx.once().expect_code(0);
    let args = fx.read("args");
    let mut parts = args.split_whitespace();
    let src = parts.next().unwrap();
    let dest = parts.next().unwrap();
    assert_eq!(dest, fx.path("out/x.conf").display().to_string());
    assert!(
        src.starts_with(&fx.path("out/.x.conf.").display().to_string()),
        "{src}"
    );
    assert!(src.ends_with(".liveconf-tmp"), "{src}");
}

#[test]
fn failing_reload_is_reported_after_install() {
    let fx = Fx::new();
    simple(&fx, "reload_cmd = \"echo cannot reload >&2; exit 7\"\n");
    let run = fx.once();
    run.expect_code(2)
        .expect_stderr(&["x", "reload", "exited with status 7", "cannot reload"]);
    assert_eq!(fx.read("out/x.conf"), "name=alpha\n");
    let status: serde_json::Value = serde_json::from_str(&fx.read("state/status.json")).unwrap();
    assert_eq!(status["resources"]["x"]["healthy"], false);
    assert_eq!(status["resources"]["x"]["error"]["step"], "reload");
}

/// The file went in but the service never reloaded it: the next run owes
/// that reload even though the file is now unchanged, and stays failing
/// until the reload succeeds.
#[test]
fn a_failed_reload_is_owed_to_the_next_run() {
    let fx = Fx::new();
    let ok = fx.path("reload-works");
    let log = fx.path("reloads");
    simple(
        &fx,
        &format!(
            "reload_cmd = \"test -e {} && echo reloaded >> {}\"\n",
            ok.display(),
            log.display()
        ),
    );
    fx.once().expect_code(2);
    let status =
        || -> serde_json::Value { serde_json::from_str(&fx.read("state/status.json")).unwrap() };
    assert_eq!(status()["resources"]["x"]["reload_owed"], true);
    // The installed file's revision and hash are known even so.
    assert!(
        status()["resources"]["x"]["sha256"].is_string(),
        "{:#}",
        status()
    );
    // Unchanged file, reload still failing: still a failure.
    fx.once().expect_code(2).expect_stderr(&["x", "reload"]);
    assert!(!log.exists());
    // --no-reload does not pay it, nor forget it.
    fx.run(&["render", "--once", "--no-reload"]).expect_code(0);
    assert_eq!(
        status()["resources"]["x"]["reload_owed"],
        true,
        "{:#}",
        status()
    );
    // A new render whose check fails: the file on disk still gets its
    // owed reload attempted (and it still fails here).
    simple(
        &fx,
        &format!(
            "check_cmd = \"false\"\nreload_cmd = \"test -e {} && echo reloaded >> {}\"\n",
            ok.display(),
            log.display()
        ),
    );
    fx.keys("app:\n  name: beta\n");
    fx.once().expect_code(2).expect_stderr(&["x", "check"]);
    assert_eq!(
        status()["resources"]["x"]["reload_owed"],
        true,
        "{:#}",
        status()
    );
    std::fs::write(&ok, "").unwrap();
    fx.once().expect_code(2).expect_stderr(&["x", "check"]);
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "reloaded\n");
    assert!(
        status()["resources"]["x"].get("reload_owed").is_none(),
        "{:#}",
        status()
    );
    std::fs::remove_file(&log).unwrap();
    std::fs::remove_file(&ok).unwrap();
    fx.keys("app:\n  name: alpha\n");
    simple(
        &fx,
        &format!(
            "reload_cmd = \"test -e {} && echo reloaded >> {}\"\n",
            ok.display(),
            log.display()
        ),
    );
    fx.once().expect_code(0);
    // (alpha is what is installed: nothing to do, nothing owed.)
    assert!(!log.exists());
    assert!(
        status()["resources"]["x"].get("reload_owed").is_none(),
        "{:#}",
        status()
    );
}

#[test]
fn no_reload_skips_reload_but_not_check() {
    let fx = Fx::new();
    let marker = fx.path("ran");
    simple(
        &fx,
        &format!(
            "check_cmd = \"echo check >> {m}\"\nreload_cmd = \"echo reload >> {m}\"\n",
            m = marker.display()
        ),
    );
    fx.run(&["render", "--once", "--no-reload"]).expect_code(0);
    assert_eq!(fx.read("ran"), "check\n");
}

#[test]
fn shared_reload_runs_once_per_batch() {
    let fx = Fx::new();
    let marker = fx.path("reloads");
    fx.keys("app:\n  a: \"1\"\n  b: \"2\"\n");
    fx.template("v.tera", "{{ getv(key=\"/a\") }}{{ getv(key=\"/b\") }}\n");
    for name in ["one", "two", "three"] {
        fx.resource(
            name,
            &format!(
                "[template]\nsrc = \"v.tera\"\ndest = \"{{out}}/{name}\"\nprefix = \"/app\"\nkeys = [\"/\"]\nreload_cmd = \"echo r >> {}\"\n",
                marker.display()
            ),
        );
    }
    fx.once().expect_code(0);
    assert_eq!(fx.read("reloads"), "r\n");
}

#[test]
fn symlinked_destination_is_replaced_and_its_target_untouched() {
    let fx = Fx::new();
    simple(&fx, "");
    let target = fx.path("elsewhere");
    std::fs::write(&target, "precious\n").unwrap();
    std::os::unix::fs::symlink(&target, fx.path("out/x.conf")).unwrap();

    fx.once().expect_code(0);
    let meta = std::fs::symlink_metadata(fx.path("out/x.conf")).unwrap();
    assert!(meta.file_type().is_file(), "destination is still a symlink");
    assert_eq!(fx.read("out/x.conf"), "name=alpha\n");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
}

#[test]
fn mode_owner_and_group_are_applied() {
    let fx = Fx::new();
    // As root (CI), hand the file to another user; otherwise to ourselves.
    let (uid, gid) = if nix::unistd::geteuid().is_root() {
        (65534, 65534)
    } else {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    };
    simple(&fx, &format!("mode = \"0640\"\nuid = {uid}\ngid = {gid}\n"));
    fx.once().expect_code(0);
    let meta = std::fs::metadata(fx.path("out/x.conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!((meta.uid(), meta.gid()), (uid, gid));

    // A mode change alone is an install.
    std::fs::set_permissions(
        fx.path("out/x.conf"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    fx.once()
        .expect_code(0)
        .expect_stderr(&["mode 0666 → 0640"]);
    let meta = std::fs::metadata(fx.path("out/x.conf")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
}

#[test]
fn owner_by_name_is_resolved() {
    let fx = Fx::new();
    simple(&fx, "owner = \"root\"\ngroup = \"root\"\nmode = \"644\"\n");
    if nix::unistd::geteuid().is_root() {
        fx.once().expect_code(0);
        let meta = std::fs::metadata(fx.path("out/x.conf")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o777), (0, 0, 0o644));
    } else {
        fx.once()
            .expect_code(2)
            .expect_stderr(&["cannot set owner"]);
        assert_eq!(fx.out_files(), Vec::<String>::new());
    }
}

#[test]
fn one_resource_failing_does_not_stop_the_others() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("good.tera", "ok {{ getv(key=\"/name\") }}\n");
    fx.template("bad.tera", "{{ getv(key=\"/missing\") }}\n");
    fx.resource(
        "a-bad",
        "[template]\nsrc = \"bad.tera\"\ndest = \"{out}/bad\"\nprefix = \"/app\"\nkeys = [\"/\"]\n",
    );
    fx.resource("b-good", "[template]\nsrc = \"good.tera\"\ndest = \"{out}/good\"\nprefix = \"/app\"\nkeys = [\"/\"]\n");
    fx.resource("c-broken", "[template]\nsrc = \"good.tera\"\n");
    let run = fx.once();
    run.expect_code(2).expect_stderr(&[
        "a-bad",
        "/missing",
        "c-broken",
        "missing dest",
        "2 of 3 resources failed",
    ]);
    assert_eq!(fx.read("out/good"), "ok alpha\n");
    assert_eq!(fx.out_files(), ["good"]);
}

#[test]
fn backup_keeps_previous_file() {
    let fx = Fx::new();
    simple(&fx, "backup = true\n");
    std::fs::write(fx.path("out/x.conf"), "old\n").unwrap();
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/x.conf"), "name=alpha\n");
    assert_eq!(fx.read("out/x.conf.bak"), "old\n");
}

#[test]
fn hung_check_is_killed_at_command_timeout() {
    let fx = Fx::new();
    simple(
        &fx,
        "check_cmd = \"sleep 60\"\ncommand_timeout = \"300ms\"\n",
    );
    std::fs::write(fx.path("out/x.conf"), "old\n").unwrap();
    let started = std::time::Instant::now();
    fx.once()
        .expect_code(2)
        .expect_stderr(&["timed out after 300ms"]);
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert_eq!(fx.read("out/x.conf"), "old\n");
    assert_eq!(fx.out_files(), ["x.conf"]);
}

#[test]
fn missing_destination_directory_is_an_error_unless_created() {
    let fx = Fx::new();
    fx.keys("app:\n  name: alpha\n");
    fx.template("x.tera", "x\n");
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/sub/dir/x.conf\"\nkeys = [\"/\"]\n",
    );
    fx.once()
        .expect_code(2)
        .expect_stderr(&["x", "sub/dir", "does not exist", "create_dest_dirs"]);
    assert!(!fx.path("out/sub").exists());
    fx.resource(
        "x",
        "[template]\nsrc = \"x.tera\"\ndest = \"{out}/sub/dir/x.conf\"\nkeys = [\"/\"]\ncreate_dest_dirs = true\n",
    );
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/sub/dir/x.conf"), "x\n");
}
