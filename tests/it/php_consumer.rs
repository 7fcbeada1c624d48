//! The MediaWiki side, with real `php`: `contrib/php/LiveconfConfig.php`
//! reading files that `liveconf render --once` installs.
//!
//! One long-lived php process per test plays the application: APCu and
//! opcache live in the process, so the reads it answers (one per line on
//! its stdin) are what successive requests of one php-fpm pool see.
//! - JSON + APCu: a change liveconf installed is seen on the next read; a
//!   truncated, invalid or missing file leaves the last good data in
//!   service and reports the error; the sha256 it exposes is the one
//!   `status.json` records for the resource.
//! - PHP include + opcache: under the README's settings
//!   (`validate_timestamps=1`, `revalidate_freq=0`; or any settings with
//!   APCu, where an inode change invalidates the script) the next read sees
//!   the change; with `validate_timestamps=0` alone opcache serves the old
//!   file, as the README warns.
//! - The revision: a file read between liveconf's rename and its
//!   status.json write has none yet; the next read after status.json
//!   records it has it (load() and includePhp() alike), kept in APCu.

use crate::common;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::Fx;
use serde_json::Value;

/// The php side: one command per line, one JSON answer per line.
const DRIVER: &str = r#"<?php
require $argv[1];
LiveconfConfig::setStatusFile($argv[2]);
echo json_encode([
    'apcu' => function_exists('apcu_enabled') && apcu_enabled(),
    'opcache' => function_exists('opcache_get_status') && opcache_get_status(false) !== false,
]), "\n";
while (($line = fgets(STDIN)) !== false) {
    [$cmd, $path] = explode(' ', trim($line), 2);
    $errors = [];
    $data = null;
    try {
        if ($cmd === 'json') {
            $data = LiveconfConfig::load($path, function (LiveconfConfigError $e, string $p) use (&$errors) {
                $errors[] = $e->getMessage();
            });
        } elseif ($cmd === 'php') {
            $data = LiveconfConfig::includePhp($path);
        } elseif ($cmd === 'age') {
            // As if installed long ago (opcache caches only files older
            // than opcache.file_update_protection).
            touch($path, time() - 10);
        }
        $out = [
            'data' => $data,
            'meta' => LiveconfConfig::meta($path),
            'errors' => $errors,
            'cached' => function_exists('opcache_is_script_cached') && opcache_is_script_cached($path),
        ];
    } catch (Throwable $e) {
        $out = ['exception' => get_class($e) . ': ' . $e->getMessage()];
    }
    echo json_encode($out), "\n";
}
"#;

struct Php {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    /// What the process said about itself: APCu and opcache enabled.
    hello: Value,
}

impl Php {
    /// Starts the driver with these `-d` settings.
    fn start(fx: &Fx, settings: &[&str]) -> Php {
        assert!(
            common::have("php"),
            "php is required for this test (scripts/test installs php-cli and php-apcu)"
        );
        let driver = fx.path("driver.php");
        std::fs::write(&driver, DRIVER).unwrap();
        let lib = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("contrib/php/LiveconfConfig.php");
        let mut cmd = Command::new("php");
        for s in settings {
            cmd.args(["-d", s]);
        }
        let mut child = cmd
            .arg(&driver)
            .arg(&lib)
            .arg(fx.path("state/status.json"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start php");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut php = Php {
            child,
            stdin,
            lines,
            hello: Value::Null,
        };
        php.hello = php.answer();
        php
    }

    fn answer(&mut self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("php answered within 20 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("php said {line:?}: {e}"))
    }

    /// One read ("request"): `json PATH`, `php PATH` or `age PATH`.
    fn ask(&mut self, cmd: &str, path: &std::path::Path) -> Value {
        writeln!(self.stdin, "{cmd} {}", path.display()).expect("write to php");
        self.stdin.flush().unwrap();
        self.answer()
    }
}

impl Drop for Php {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A confdir with `db-json` (format json) and `db-php` (format php) of /db.
fn fixture() -> Fx {
    let fx = Fx::new();
    fx.resource(
        "db-json",
        "[template]\nformat = \"json\"\ndest = \"{out}/db.json\"\nprefix = \"/db\"\nkeys = [\"/\"]\n",
    )
    .resource(
        "db-php",
        "[template]\nformat = \"php\"\ndest = \"{out}/db.php\"\nprefix = \"/db\"\nkeys = [\"/\"]\ncheck_cmd = \"php -l {{src}}\"\n",
    );
    fx
}

/// Puts `serial` (and a section's loads) into the key file and installs
/// the files with `render --once`.
fn install(fx: &Fx, serial: u32) {
    fx.keys(&format!(
        "db:\n  serial: \"{serial}\"\n  sectionLoads:\n    s1:\n      db1163: \"0\"\n      db1184: \"{}\"\n",
        100 + serial
    ));
    fx.once().expect_code(0);
}

fn serial(v: &Value) -> &Value {
    &v["data"]["serial"]
}

/// The revision status.json records for `resource`.
fn status_revision(fx: &Fx, resource: &str) -> i64 {
    let v: Value = serde_json::from_str(&fx.read("state/status.json")).expect("status.json");
    v["resources"][resource]["revision"]
        .as_i64()
        .expect("revision in status.json")
}

/// The sha256 status.json records for `resource`.
fn status_sha(fx: &Fx, resource: &str) -> String {
    let v: Value = serde_json::from_str(&fx.read("state/status.json")).expect("status.json");
    v["resources"][resource]["sha256"]
        .as_str()
        .expect("sha256 in status.json")
        .to_string()
}

#[test]
fn json_apcu_sees_each_install_on_the_next_read_and_keeps_the_last_good_copy() {
    let fx = fixture();
    install(&fx, 1);
    let path = fx.path("out/db.json");
    let mut php = Php::start(&fx, &["apc.enable_cli=1"]);
    assert_eq!(
        php.hello["apcu"], true,
        "APCu is not enabled: {}",
        php.hello
    );

    let r = php.ask("json", &path);
    assert_eq!(serial(&r), "1", "{r}");
    assert_eq!(r["meta"]["sha256"], status_sha(&fx, "db-json"), "{r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");

    // Installed by liveconf (a rename, usually within the same second as
    // the last one): the very next read has it.
    for n in 2..=4 {
        install(&fx, n);
        let r = php.ask("json", &path);
        assert_eq!(serial(&r), n.to_string().as_str(), "{r}");
        assert_eq!(r["meta"]["sha256"], status_sha(&fx, "db-json"), "{r}");
        assert_eq!(r["meta"]["error"], Value::Null, "{r}");
        // The revision liveconf recorded for this file (the template
        // writes none).
        assert_eq!(r["data"]["revision"], Value::Null, "{r}");
        assert_eq!(
            r["meta"]["revision"],
            status_revision(&fx, "db-json"),
            "{r}"
        );
    }
    let good = php.ask("json", &path)["data"].clone();

    // Truncated in place (not liveconf's doing): the last good copy is
    // served, and the error reported on each read.
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    for _ in 0..2 {
        let r = php.ask("json", &path);
        assert_eq!(r["data"], good, "{r}");
        let errors = r["errors"].as_array().expect("errors");
        assert_eq!(errors.len(), 1, "{r}");
        let e = errors[0].as_str().unwrap();
        assert!(e.contains("not valid JSON"), "{e}");
        assert!(e.contains("serving the last good copy"), "{e}");
        assert_eq!(
            r["meta"]["error"].as_str(),
            Some(e.split("; serving").next().unwrap()),
            "{r}"
        );
    }
    // Valid JSON that is no document, then no file at all: the same.
    std::fs::write(&path, "42").unwrap();
    let r = php.ask("json", &path);
    assert_eq!(r["data"], good, "{r}");
    assert!(
        r["errors"][0]
            .as_str()
            .unwrap()
            .contains("not an object or array"),
        "{r}"
    );
    std::fs::remove_file(&path).unwrap();
    let r = php.ask("json", &path);
    assert_eq!(r["data"], good, "{r}");
    assert!(
        r["errors"][0].as_str().unwrap().contains("cannot open it"),
        "{r}"
    );

    // liveconf puts the file back, then a change: served, no error.
    fx.once().expect_code(0);
    let r = php.ask("json", &path);
    assert_eq!(r["data"], good, "{r}");
    assert_eq!(r["errors"], serde_json::json!([]), "{r}");
    install(&fx, 5);
    assert_eq!(serial(&php.ask("json", &path)), "5");

    // A process that never had a good copy has nothing to serve: an exception.
    std::fs::write(&path, "{").unwrap();
    let mut fresh = Php::start(&fx, &["apc.enable_cli=1"]);
    let r = fresh.ask("json", &path);
    assert!(
        r["exception"].as_str().is_some_and(
            |e| e.starts_with("LiveconfConfigError: ") && e.contains("no good copy to serve")
        ),
        "{r}"
    );
}

#[test]
fn php_include_sees_each_install_under_the_documented_opcache_settings() {
    let fx = fixture();
    install(&fx, 1);
    let path = fx.path("out/db.php");

    // validate_timestamps=1, revalidate_freq=0 (no APCu): opcache checks
    // the file's mtime on each include.
    let mut php = Php::start(
        &fx,
        &[
            "opcache.enable_cli=1",
            "opcache.validate_timestamps=1",
            "opcache.revalidate_freq=0",
            "apc.enable_cli=0",
        ],
    );
    assert_eq!(
        php.hello["opcache"], true,
        "opcache is not enabled: {}",
        php.hello
    );
    php.ask("age", &path);
    let r = php.ask("php", &path);
    assert_eq!(serial(&r), "1", "{r}");
    assert_eq!(r["cached"], true, "opcache did not cache the file: {r}");
    install(&fx, 2);
    assert_eq!(serial(&php.ask("php", &path)), "2");
    drop(php);

    // With APCu, any opcache settings, even validate_timestamps=0 and no
    // update protection: the loader sees the new inode and invalidates.
    let mut php = Php::start(
        &fx,
        &[
            "opcache.enable_cli=1",
            "opcache.validate_timestamps=0",
            "opcache.file_update_protection=0",
            "apc.enable_cli=1",
        ],
    );
    let r = php.ask("php", &path);
    assert_eq!(serial(&r), "2", "{r}");
    assert_eq!(r["cached"], true, "{r}");
    assert_eq!(r["meta"]["sha256"], status_sha(&fx, "db-php"), "{r}");
    for n in 3..=4 {
        install(&fx, n);
        let r = php.ask("php", &path);
        assert_eq!(serial(&r), n.to_string().as_str(), "{r}");
        assert_eq!(r["meta"]["sha256"], status_sha(&fx, "db-php"), "{r}");
        assert_eq!(r["meta"]["revision"], status_revision(&fx, "db-php"), "{r}");
    }
    drop(php);

    // What the README warns of: validate_timestamps=0 without the
    // loader's invalidation (no APCu) serves the old file after a change.
    let mut php = Php::start(
        &fx,
        &[
            "opcache.enable_cli=1",
            "opcache.validate_timestamps=0",
            "opcache.file_update_protection=0",
            "apc.enable_cli=0",
        ],
    );
    assert_eq!(serial(&php.ask("php", &path)), "4");
    install(&fx, 5);
    assert!(fx.read("out/db.php").contains("'5'"));
    assert_eq!(
        serial(&php.ask("php", &path)),
        "4",
        "opcache served the new file"
    );
}

/// Replaces status.json as liveconf does (a new file renamed into place).
fn put_status(fx: &Fx, body: &str) {
    common::hardening::write_atomic(&fx.path("state/status.json"), body.as_bytes());
}

/// liveconf renames a file into place and writes status.json a few ms
/// later: a read in between finds the file not recorded yet. The revision
/// is then null (the template writes none), and the next read after
/// status.json records the file has it, stored in APCu: once known, it no
/// longer depends on status.json. The same for `load()` and `includePhp()`;
/// the files are aged (mtime 10 s back) so that no same-second ("racy")
/// check re-reads them.
#[test]
fn revision_read_before_status_json_records_the_file_is_filled_in_on_a_later_read() {
    let fx = fixture();
    install(&fx, 1);
    let mut php = Php::start(
        &fx,
        &[
            "apc.enable_cli=1",
            "opcache.enable_cli=1",
            "opcache.validate_timestamps=0",
            "opcache.file_update_protection=0",
        ],
    );
    assert_eq!(
        php.hello["apcu"], true,
        "APCu is not enabled: {}",
        php.hello
    );
    let files = [
        ("json", fx.path("out/db.json"), "db-json"),
        ("php", fx.path("out/db.php"), "db-php"),
    ];
    for (cmd, path, resource) in &files {
        let r = php.ask(cmd, path);
        assert_eq!(serial(&r), "1", "{r}");
        assert_eq!(r["meta"]["revision"], status_revision(&fx, resource), "{r}");
    }

    // The window: the new files are in place, status.json still records
    // the old ones.
    let before = fx.read("state/status.json");
    install(&fx, 2);
    let after = fx.read("state/status.json");
    // (The file backend's revision stays 1: the sha256 tells them apart.)
    let recorded: Value = serde_json::from_str(&before).expect("status.json");
    for (_, _, resource) in &files {
        assert_ne!(
            recorded["resources"][resource]["sha256"].as_str(),
            Some(status_sha(&fx, resource).as_str())
        );
    }
    put_status(&fx, &before);
    for (cmd, path, _) in &files {
        php.ask("age", path);
        for _ in 0..2 {
            let r = php.ask(cmd, path);
            assert_eq!(serial(&r), "2", "{r}");
            assert_eq!(
                r["meta"]["revision"],
                Value::Null,
                "{cmd}: not recorded yet: {r}"
            );
        }
    }

    // liveconf writes status.json: the next read has the revision.
    put_status(&fx, &after);
    for (cmd, path, resource) in &files {
        let r = php.ask(cmd, path);
        assert_eq!(serial(&r), "2", "{r}");
        assert_eq!(r["meta"]["sha256"], status_sha(&fx, resource), "{r}");
        assert_eq!(
            r["meta"]["revision"],
            status_revision(&fx, resource),
            "{cmd}: read after status.json recorded the file: {r}"
        );
    }

    // Kept in the APCu entry: status.json is not looked at again.
    let revisions: Vec<i64> = files
        .iter()
        .map(|(_, _, resource)| status_revision(&fx, resource))
        .collect();
    std::fs::remove_file(fx.path("state/status.json")).unwrap();
    for ((cmd, path, _), revision) in files.iter().zip(&revisions) {
        let r = php.ask(cmd, path);
        assert_eq!(serial(&r), "2", "{r}");
        assert_eq!(r["meta"]["revision"], *revision, "{cmd}: {r}");
    }
}
