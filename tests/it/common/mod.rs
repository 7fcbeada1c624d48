//! Shared test fixtures: a confdir in a temporary directory, a key file,
//! and the real `liveconf` binary run against them.
#![allow(dead_code)]

pub mod etcd;
pub mod hardening;
pub mod tls;

use std::path::{Path, PathBuf};
use std::process::Output;

/// A temporary confdir (`conf.d/`, `templates/`), key file and state dir.
pub struct Fx {
    pub dir: tempfile::TempDir,
}

impl Fx {
    pub fn new() -> Fx {
        let dir = tempfile::tempdir().expect("tempdir");
        for d in ["conf.d", "templates", "out", "state"] {
            std::fs::create_dir_all(dir.path().join(d)).expect("mkdir");
        }
        std::fs::write(dir.path().join("keys.yaml"), "{}\n").expect("write keys");
        Fx { dir }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes the key file (YAML).
    pub fn keys(&self, yaml: &str) -> &Self {
        std::fs::write(self.path("keys.yaml"), yaml).expect("write keys");
        self
    }

    pub fn template(&self, name: &str, body: &str) -> &Self {
        let p = self.path("templates").join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, body).expect("write template");
        self
    }

    /// Writes `conf.d/NAME.toml`; `{out}` in the text is replaced by the out/ directory.
    pub fn resource(&self, name: &str, toml: &str) -> &Self {
        let text = toml.replace("{out}", &self.path("out").display().to_string());
        std::fs::write(self.path("conf.d").join(format!("{name}.toml")), text)
            .expect("write resource");
        self
    }

    /// A `liveconf` command with --confdir, --file and --state-dir set.
    pub fn cmd(&self, args: &[&str]) -> std::process::Command {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"));
        c.args(args)
            .arg("--confdir")
            .arg(self.dir.path())
            .arg("--file")
            .arg(self.path("keys.yaml"))
            .arg("--state-dir")
            .arg(self.path("state"))
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `liveconf ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Run {
        let out = self.cmd(args).output().expect("run liveconf");
        Run::from(out)
    }

    /// `render --once`.
    pub fn once(&self) -> Run {
        self.run(&["render", "--once"])
    }

    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    /// Names of the files in `out/` (stage files included).
    pub fn out_files(&self) -> Vec<String> {
        list(&self.path("out"))
    }
}

pub fn list(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// A finished command.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Panics with the output unless the exit code is `code`.
    pub fn expect_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit {code}, got {}\nstdout:\n{}\nstderr:\n{}",
            self.code, self.stdout, self.stderr
        );
        self
    }

    /// Panics unless stderr contains every needle.
    pub fn expect_stderr(&self, needles: &[&str]) -> &Self {
        for n in needles {
            assert!(
                self.stderr.contains(n),
                "stderr lacks {n:?}:\n{}",
                self.stderr
            );
        }
        self
    }
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Runs PHP code with `php -r`, returning stdout; panics on failure.
pub fn php(code: &str, args: &[&str]) -> String {
    assert!(
        have("php"),
        "php is required for this test (scripts/test installs php-cli)"
    );
    let out = std::process::Command::new("php")
        .arg("-r")
        .arg(code)
        .args(args)
        .output()
        .expect("run php");
    assert!(
        out.status.success(),
        "php failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `s` as a YAML double-quoted scalar, for writing any text (quotes,
/// backslashes, control characters, NUL as `\0`) into a key file.
pub fn yaml_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\0' => o.push_str("\\0"),
            '\n' => o.push_str("\\n"),
            '\r' => o.push_str("\\r"),
            '\t' => o.push_str("\\t"),
            c if c.is_control() || c == '\u{feff}' => o.push_str(&format!("\\u{:04X}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Runs `php -l FILE` and panics unless PHP reports no syntax error.
pub fn php_lint(file: &Path) {
    assert!(
        have("php"),
        "php is required for this test (scripts/test installs php-cli)"
    );
    let out = std::process::Command::new("php")
        .arg("-l")
        .arg(file)
        .output()
        .expect("run php -l");
    assert!(
        out.status.success(),
        "php -l {} failed: {}{}",
        file.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
