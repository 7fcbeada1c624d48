//! Filesystem attacks on the install path: symlinks at the destination, at
//! the backup names and at stage-file names never get written through; the
//! stage file is private (0600) while its content is written; a destination
//! directory someone else can write to is reported.

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::Fx;
use common::etcd::wait_for;
use common::hardening::{Rng, assert_no_panic, file_daemon, stage_files, write_atomic};

const VICTIM: &str = "precious victim content\n";

fn simple(fx: &Fx, value: &str, extra: &str) {
    fx.keys(&format!("app:\n  v: \"{value}\"\n"));
    fx.template("x.tera", "v={{ getv(key=\"/v\") }}\n");
    fx.resource(
        "x",
        &format!(
            "[template]\nsrc = \"x.tera\"\ndest = \"{{out}}/x.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\n{extra}"
        ),
    );
}

/// A victim file outside out/, with a known content and mode.
fn victim(fx: &Fx, name: &str) -> std::path::PathBuf {
    let v = fx.path(name);
    std::fs::write(&v, VICTIM).unwrap();
    std::fs::set_permissions(&v, std::fs::Permissions::from_mode(0o640)).unwrap();
    v
}

fn assert_victim_untouched(v: &std::path::Path) {
    let meta = std::fs::symlink_metadata(v).expect("victim still exists");
    assert!(meta.is_file(), "victim {} is no longer a file", v.display());
    assert_eq!(meta.mode() & 0o7777, 0o640, "victim mode changed");
    assert_eq!(
        std::fs::read_to_string(v).unwrap(),
        VICTIM,
        "victim written"
    );
}

#[test]
fn a_symlink_at_the_destination_is_replaced_never_written_through() {
    let fx = Fx::new();
    simple(&fx, "one", "mode = \"0644\"\nbackup = true\n");
    let dest = fx.path("out/x.conf");
    let v = victim(&fx, "victim");
    let missing = fx.path("must-not-be-created");

    // 1. The destination is a symlink to a victim file.
    std::os::unix::fs::symlink(&v, &dest).unwrap();
    fx.once().expect_code(0);
    assert!(std::fs::symlink_metadata(&dest).unwrap().is_file());
    assert_eq!(fx.read("out/x.conf"), "v=one\n");
    assert_victim_untouched(&v);

    // 2. Swapped for a dangling symlink between two renders: the target is
    //    not created.
    std::fs::remove_file(&dest).unwrap();
    std::os::unix::fs::symlink(&missing, &dest).unwrap();
    simple(&fx, "two", "mode = \"0644\"\nbackup = true\n");
    fx.once().expect_code(0);
    assert!(
        !missing.exists(),
        "the dangling symlink's target was created"
    );
    assert_eq!(fx.read("out/x.conf"), "v=two\n");

    // 3. A symlink to a directory.
    std::fs::remove_file(&dest).unwrap();
    let dir = common::hardening::mkdir(&fx, "victim-dir");
    std::os::unix::fs::symlink(&dir, &dest).unwrap();
    simple(&fx, "three", "mode = \"0644\"\nbackup = true\n");
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/x.conf"), "v=three\n");
    assert!(
        common::list(&dir).is_empty(),
        "something was written into the directory"
    );

    // 4. Backups (`backup = true`): symlinks at DEST.bak and at the
    //    predictable temporary backup name are replaced too.
    assert!(
        !fx.path("out/x.conf.bak").exists(),
        "no backup of a symlink is kept"
    );
    std::os::unix::fs::symlink(&v, fx.path("out/x.conf.bak")).unwrap();
    std::os::unix::fs::symlink(&v, fx.path("out/x.conf.bak.liveconf-tmp")).unwrap();
    simple(&fx, "four", "mode = \"0644\"\nbackup = true\n");
    fx.once().expect_code(0);
    assert_eq!(fx.read("out/x.conf"), "v=four\n");
    assert_eq!(fx.read("out/x.conf.bak"), "v=three\n");
    assert!(
        std::fs::symlink_metadata(fx.path("out/x.conf.bak"))
            .unwrap()
            .is_file()
    );
    assert_victim_untouched(&v);

    // 5. The daemon, with the destination swapped for a symlink while it runs.
    let mut d = file_daemon(&fx, &[]);
    wait_for("first render", Duration::from_secs(20), || {
        d.log().contains("first render done")
    });
    std::fs::remove_file(&dest).unwrap();
    std::os::unix::fs::symlink(&v, &dest).unwrap();
    write_atomic(&fx.path("keys.yaml"), b"app:\n  v: five\n");
    wait_for(
        "the symlink replaced by the daemon",
        Duration::from_secs(20),
        || {
            std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file())
                && std::fs::read_to_string(&dest).is_ok_and(|s| s == "v=five\n")
        },
    );
    assert_victim_untouched(&v);
    assert_eq!(d.stop(), Some(0));
    assert!(stage_files(&fx.path("out")).is_empty());
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Hundreds of symlinks to a victim, at names of the stage-file pattern
/// (`.x.conf.XXXXXXXX.liveconf-tmp`): renders never write through them
/// (stage files are created with O_EXCL under a fresh random name), and the
/// daemon's start-up clean-up removes the links, not their target.
#[test]
fn symlinks_planted_at_stage_names_never_redirect_the_write() {
    const PLANTED: usize = 400;
    const RENDERS: usize = 25;
    let fx = Fx::new();
    simple(&fx, "r0", "mode = \"0600\"\n");
    let v = victim(&fx, "victim");
    let mut rng = Rng::new(0x5eed_1234);
    let mut planted = Vec::new();
    while planted.len() < PLANTED {
        let name: String = (0..8)
            .map(|_| ALNUM[rng.below(ALNUM.len() as u64) as usize] as char)
            .collect();
        let link = fx.path(&format!("out/.x.conf.{name}.liveconf-tmp"));
        if std::os::unix::fs::symlink(&v, &link).is_ok() {
            planted.push(link);
        }
    }
    // Also the names a naive implementation would use.
    for n in [
        ".x.conf.tmp",
        "x.conf.tmp",
        ".x.conf.liveconf-tmp",
        "x.conf.new",
        ".x.conf.swp",
    ] {
        std::os::unix::fs::symlink(&v, fx.path(&format!("out/{n}"))).unwrap();
    }
    for i in 0..RENDERS {
        simple(&fx, &format!("r{i}"), "mode = \"0600\"\n");
        fx.once().expect_code(0);
        assert_eq!(fx.read("out/x.conf"), format!("v=r{i}\n"));
        assert_victim_untouched(&v);
    }
    assert!(
        planted
            .iter()
            .all(|l| std::fs::symlink_metadata(l).is_ok_and(|m| m.file_type().is_symlink())),
        "render --once touched a planted link"
    );
    // The daemon removes stage-named leftovers at start: the links go, the
    // victim stays.
    let mut d = file_daemon(&fx, &[]);
    wait_for(
        "the stage-named links removed",
        Duration::from_secs(20),
        || {
            planted
                .iter()
                .all(|l| std::fs::symlink_metadata(l).is_err())
        },
    );
    let log = d.log();
    assert!(
        log.contains(&format!("removed {PLANTED} stage file(s)")),
        "removal not logged:\n{log}"
    );
    assert_eq!(d.stop(), Some(0));
    assert_victim_untouched(&v);
    println!(
        "{PLANTED} planted stage-name symlinks, {RENDERS} renders: victim untouched, links removed by the daemon's start"
    );
}

/// What can be observed of the stage file's mode, and when:
/// - while its content is being written (size below the final size) its
///   mode is 0600 — even under umask 000 and whatever the final mode —
///   so nobody else can open it and read a partial or secret file;
/// - once complete, it gets the final mode and owner *before* the check
///   runs, so `check_cmd` sees the final mode (`stat` in the check: 644 for
///   a 0644 resource, 600 for a 0600 one) and the rename never changes it.
#[test]
fn the_stage_file_is_private_while_written_and_has_the_final_mode_at_check_time() {
    for (mode, want_at_check) in [("0600", "600"), ("0644", "644"), ("0640", "640")] {
        let fx = Fx::new();
        let seen_at_check = fx.path("state/mode-at-check");
        // ~20 MB: long enough to watch the stage file being written.
        fx.template(
            "big.tera",
            "{% set v = getv(key=\"/v\") %}{% for i in range(end=100000) %}{{ v }}\n{% endfor %}",
        );
        let value = "x".repeat(199);
        fx.keys(&format!("app:\n  v: r0{value}\n"));
        fx.resource(
            "big",
            &format!(
                "[template]\nsrc = \"big.tera\"\ndest = \"{{out}}/big.conf\"\nprefix = \"/app\"\nkeys = [\"/\"]\nmode = \"{mode}\"\n\
                 check_cmd = \"stat -c %a {{{{src}}}} > {}\"\n",
                seen_at_check.display()
            ),
        );
        let out_dir = fx.path("out");
        let mut partial_samples = 0usize;
        let mut complete_samples = 0usize;
        for attempt in 0..10 {
            let final_len = (value.len() + 3) * 100_000;
            let stop = Arc::new(AtomicBool::new(false));
            let watcher = {
                let stop = stop.clone();
                let out_dir = out_dir.clone();
                std::thread::spawn(move || {
                    let mut samples: Vec<(u32, u64)> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        for n in stage_files(&out_dir) {
                            if let Ok(m) = std::fs::symlink_metadata(out_dir.join(&n)) {
                                samples.push((m.mode() & 0o7777, m.len()));
                            }
                        }
                    }
                    samples
                })
            };
            let mut cmd = fx.cmd(&["render", "--once"]);
            // SAFETY: umask is async-signal-safe.
            unsafe {
                cmd.pre_exec(|| {
                    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
                    Ok(())
                });
            }
            let r = common::Run::from(cmd.output().unwrap());
            stop.store(true, Ordering::Relaxed);
            let samples = watcher.join().unwrap();
            r.expect_code(0);
            assert_eq!(
                std::fs::read_to_string(&seen_at_check).unwrap().trim(),
                want_at_check,
                "mode {mode}: the mode check_cmd saw"
            );
            let meta = std::fs::metadata(fx.path("out/big.conf")).unwrap();
            assert_eq!(meta.len() as usize, final_len);
            assert_eq!(format!("{:o}", meta.mode() & 0o7777), want_at_check);
            for (m, len) in &samples {
                if (*len as usize) < final_len {
                    partial_samples += 1;
                    assert_eq!(
                        *m, 0o600,
                        "mode {mode}: a stage file with {len} of {final_len} bytes had mode {m:04o}"
                    );
                } else {
                    complete_samples += 1;
                    assert!(
                        *m == 0o600 || format!("{m:o}") == want_at_check,
                        "mode {mode}: a complete stage file had mode {m:04o}"
                    );
                }
                if mode == "0600" {
                    assert_eq!(*m, 0o600, "a 0600 resource's stage file had mode {m:04o}");
                }
            }
            if partial_samples >= 3 {
                break;
            }
            // Next attempt: new content, so the file is staged again.
            fx.keys(&format!("app:\n  v: r{}{value}\n", attempt + 1));
        }
        println!(
            "mode {mode}: {partial_samples} samples of a partly written stage file (all 0600), {complete_samples} of a complete one; check_cmd saw {want_at_check}"
        );
        assert!(
            partial_samples > 0,
            "mode {mode}: never caught the stage file while it was written; the test proved nothing"
        );
    }
}

/// A destination directory that another user can write to is reported
/// (they could replace the file behind liveconf's back); a directory only
/// root can write to is not.
#[test]
fn a_destination_directory_writable_by_another_user_is_reported() {
    let is_root = nix::unistd::geteuid().is_root();
    // (name, mode, chown to (uid, gid), warning expected)
    type Case = (&'static str, u32, Option<(u32, u32)>, bool);
    let mut cases: Vec<Case> = vec![
        ("world-writable", 0o777, None, true),
        ("sticky-world-writable", 0o1777, None, true),
        ("private", 0o755, None, false),
    ];
    if is_root {
        cases.push(("owned-by-nobody", 0o755, Some((65534, 0)), true));
        cases.push(("group-writable-nogroup", 0o775, Some((0, 65534)), true));
        cases.push(("group-writable-root", 0o775, Some((0, 0)), false));
    } else {
        println!("not root: the chown cases are skipped");
    }
    for (name, mode, owner, warned) in cases {
        let fx = Fx::new();
        simple(&fx, "one", "");
        let out = fx.path("out");
        if let Some((uid, gid)) = owner {
            nix::unistd::chown(
                &out,
                Some(nix::unistd::Uid::from_raw(uid)),
                Some(nix::unistd::Gid::from_raw(gid)),
            )
            .unwrap();
        }
        std::fs::set_permissions(&out, std::fs::Permissions::from_mode(mode)).unwrap();
        let r = fx.once();
        r.expect_code(0);
        assert_no_panic(name, &r.stderr);
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains("WARN") && l.contains("writable by another user"));
        match (warned, line) {
            (true, Some(l)) => {
                println!("{name}: {l}");
                assert!(
                    l.contains(&out.display().to_string()) && l.contains("x"),
                    "{name}: the warning does not name the directory and resource: {l}"
                );
            }
            (true, None) => panic!("{name}: no warning:\n{}", r.stderr),
            (false, Some(l)) => panic!("{name}: unexpected warning: {l}"),
            (false, None) => {}
        }
        assert_eq!(fx.read("out/x.conf"), "v=one\n");
    }
}

/// Runs `render ARGS` and kills it if it has not finished after `limit`.
fn run_bounded(fx: &Fx, args: &[&str], limit: Duration) -> Option<common::Run> {
    let mut child = fx
        .cmd(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run liveconf");
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return Some(common::Run::from(child.wait_with_output().unwrap()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Whoever can write the destination directory can plant a symlink to a
/// FIFO at the destination. Comparing reads the old content *through* the
/// symlink (`std::fs::read(dest)` in `Target::compare`), which blocks
/// forever on a FIFO with no writer: the install never happens, and in the
/// daemon the whole batch (every resource) stops. (A symlink to /dev/zero
/// reads until memory runs out.)
#[test]
fn a_symlink_at_the_destination_to_a_fifo_never_hangs_the_install() {
    let fx = Fx::new();
    simple(&fx, "one", "");
    let fifo = fx.path("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    std::os::unix::fs::symlink(&fifo, fx.path("out/x.conf")).unwrap();
    let r = run_bounded(&fx, &["render", "--once"], Duration::from_secs(15))
        .expect("render --once hung on a symlink to a FIFO at the destination (killed after 15 s)");
    r.expect_code(0);
    assert!(
        std::fs::symlink_metadata(fx.path("out/x.conf"))
            .unwrap()
            .is_file()
    );
    assert_eq!(fx.read("out/x.conf"), "v=one\n");
}

/// `--diff` prints the current content of the destination. When the
/// destination is a symlink someone planted, that is the content of the
/// symlink's target — any file the operator running liveconf (root) can
/// read, such as /etc/shadow — shown on stdout.
#[test]
fn diff_never_shows_the_content_behind_a_symlinked_destination() {
    let fx = Fx::new();
    simple(&fx, "one", "");
    let secret = fx.path("secret");
    std::fs::write(&secret, "root:$6$very-secret-hash:19000:0:99999:7:::\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::symlink(&secret, fx.path("out/x.conf")).unwrap();
    let r = fx.run(&["render", "--once", "--diff"]);
    r.expect_code(0);
    assert!(
        r.stdout.contains("+v=one"),
        "the diff does not show the new content:\n{}",
        r.stdout
    );
    assert!(
        !r.stdout.contains("very-secret-hash") && !r.stderr.contains("very-secret-hash"),
        "--diff disclosed the content of the symlink's target:\n{}",
        r.stdout
    );
}
