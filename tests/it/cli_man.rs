//! The man pages: every page `generate man-pages` writes renders without a
//! warning (groff, or man), refers only to pages that are generated, and is
//! installed by the Debian package.

use crate::common;

use std::path::Path;

fn generate(dir: &Path) -> Vec<String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_liveconf"))
        .args(["generate", "man-pages"])
        .arg(dir)
        .output()
        .expect("run liveconf");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names: Vec<String> = common::list(dir);
    names.sort();
    names
}

#[test]
fn every_page_renders_without_warnings_and_refers_only_to_shipped_pages() {
    let dir = tempfile::tempdir().unwrap();
    let pages = generate(dir.path());
    for want in [
        "liveconf.1",
        "liveconf-render.1",
        "liveconf-check.1",
        "liveconf-status.1",
        "liveconf-fleet.1",
        "liveconf-keys.1",
        "liveconf-keys-import.1",
        "liveconf-keys-export.1",
        "liveconf-resources.5",
    ] {
        assert!(pages.iter().any(|p| p == want), "{want} not in {pages:?}");
    }

    let groff = common::have("groff");
    let man = common::have("man");
    for page in &pages {
        let path = dir.path().join(page);
        let out = if groff {
            std::process::Command::new("groff")
                .args(["-t", "-man", "-Tutf8", "-ww", "-z"])
                .arg(&path)
                .output()
        } else if man {
            std::process::Command::new("man")
                .args(["--warnings", "-l"])
                .arg(&path)
                .env("MANPAGER", "cat")
                .output()
        } else {
            eprintln!("neither groff nor man: not rendering {page}");
            continue;
        };
        let out = out.expect("run groff");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{page} renders with warnings:\n{stderr}"
        );

        // Every liveconf page it names (\fBname\fR(N)) is generated.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\\-", "-")
            .replace("\\fB", "")
            .replace("\\fR", "");
        let mut rest = text.as_str();
        while let Some(i) = rest.find("liveconf") {
            let from = &rest[i..];
            let end = from
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
                .unwrap_or(from.len());
            let after = &from[end..];
            if let Some(section) = after
                .strip_prefix('(')
                .and_then(|s| s.chars().next())
                .filter(char::is_ascii_digit)
            {
                let referred = format!("{}.{section}", &from[..end]);
                assert!(
                    pages.contains(&referred),
                    "{page} refers to {referred}, which is not generated ({pages:?})"
                );
            }
            rest = &from[end..];
        }
    }
    // The page the old liveconf(1) named.
    assert!(
        !std::fs::read_to_string(dir.path().join("liveconf.1"))
            .unwrap()
            .contains("help(1)")
    );
}

/// scripts/build-deb writes every page, gzipped, where the package's
/// assets take them: man1 for section 1, man5 for section 5.
#[test]
fn the_debian_package_installs_every_page() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = std::fs::read_to_string(root.join("scripts/build-deb")).unwrap();
    assert!(
        script.contains("generate man-pages target/assets/man"),
        "scripts/build-deb does not write every page with `generate man-pages`"
    );
    let cargo: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let assets: Vec<(String, String)> = cargo["package"]["metadata"]["deb"]["assets"]
        .as_array()
        .expect("[package.metadata.deb] assets")
        .iter()
        .map(|a| {
            (
                a[0].as_str().unwrap().to_string(),
                a[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for page in generate(dir.path()) {
        let section = page.rsplit('.').next().unwrap();
        let built = format!("target/assets/man/{page}.gz");
        let installed = assets.iter().find(|(src, _)| {
            let glob = globset::Glob::new(src).unwrap().compile_matcher();
            glob.is_match(&built)
        });
        let Some((_, dest)) = installed else {
            panic!("the package does not install {built}: add it to [package.metadata.deb] assets");
        };
        assert_eq!(
            dest.trim_end_matches('/'),
            format!("usr/share/man/man{section}"),
            "{page}"
        );
    }
}
