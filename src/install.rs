//! Installing a rendered file: compare, stage, (check), rename.
//!
//! The sequence never exposes a partial file: content is written to a stage
//! file created with `O_EXCL` and mode 0600 in the destination's directory,
//! fsynced, given its final mode and owner, and only then renamed over the
//! destination (which replaces a symlink rather than writing through it);
//! the directory is fsynced after. A stage file is removed on every failure
//! path (dropping a [`Staged`] deletes it). Stage files are named
//! `.DEST.XXXXXXXX.liveconf-tmp`, so one left by a killed process can be
//! recognised and removed.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Suffix of stage files.
pub const STAGE_SUFFIX: &str = ".liveconf-tmp";

/// What the destination should look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Where the file goes (already under `--dest-root` when one is given).
    pub dest: PathBuf,
    /// Mode; `None` keeps the current file's mode (0644 for a new file).
    pub mode: Option<u32>,
    /// Owner; `None` is not compared or changed.
    pub uid: Option<u32>,
    /// Group; `None` is not compared or changed.
    pub gid: Option<u32>,
    /// Create missing parent directories.
    pub create_dirs: bool,
    /// Keep the previous file as `DEST.bak`.
    pub backup: bool,
}

/// How the destination compares with the rendered content.
#[derive(Debug, PartialEq, Eq)]
pub enum Comparison {
    /// Content, mode, owner and group all match: nothing to do.
    Same,
    /// Something differs (`old` is the current content, when there is a regular file).
    Differs {
        /// What differs, for the log.
        what: String,
        /// The current content.
        old: Option<Vec<u8>>,
    },
}

/// Why a file could not be compared or installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The destination has no parent directory (it is `/`).
    #[error("{} has no parent directory", .0.display())]
    NoParent(PathBuf),
    /// The destination's directory is missing and may not be created.
    #[error(
        "destination directory {} does not exist (create it, or set create_dest_dirs = true)",
        .0.display()
    )]
    NoDirectory(PathBuf),
    /// Something other than a file (or a symlink) is at the destination.
    #[error("destination {} is not a regular file", .0.display())]
    NotAFile(PathBuf),
    /// A step on the file system failed.
    #[error("{step} {}: {source}", path.display())]
    Io {
        /// What was being done ("cannot write", "cannot fsync directory"...).
        step: &'static str,
        /// To what.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The stage file's owner could not be set.
    #[error(
        "cannot set owner {}:{} on {}: {source}",
        uid.map(|u| u.to_string()).unwrap_or_default(),
        gid.map(|g| g.to_string()).unwrap_or_default(),
        path.display()
    )]
    Owner {
        /// The owner asked for.
        uid: Option<u32>,
        /// The group asked for.
        gid: Option<u32>,
        /// The stage file.
        path: PathBuf,
        /// Why it failed.
        source: nix::Error,
    },
}

fn io_err(step: &'static str, path: &Path, source: std::io::Error) -> InstallError {
    InstallError::Io {
        step,
        path: path.to_path_buf(),
        source,
    }
}

impl Target {
    fn dir(&self) -> Result<&Path, InstallError> {
        self.dest
            .parent()
            .ok_or_else(|| InstallError::NoParent(self.dest.clone()))
    }

    /// The mode the file will get.
    fn wanted_mode(&self, current: Option<&std::fs::Metadata>) -> u32 {
        self.mode
            .or_else(|| current.filter(|m| m.is_file()).map(|m| m.mode() & 0o7777))
            .unwrap_or(0o644)
    }

    /// Compares the destination with `content` (and mode, owner, group).
    pub fn compare(&self, content: &[u8]) -> Result<Comparison, InstallError> {
        let meta = match std::fs::symlink_metadata(&self.dest) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let dir = self.dir()?;
                if !self.create_dirs && !dir.is_dir() {
                    return Err(InstallError::NoDirectory(dir.to_path_buf()));
                }
                return Ok(Comparison::Differs {
                    what: "new file".into(),
                    old: None,
                });
            }
            Err(e) => return Err(io_err("cannot inspect", &self.dest, e)),
        };
        if meta.file_type().is_symlink() {
            // Never read through it: it may point at a FIFO, a device or a
            // secret. It is simply replaced.
            return Ok(Comparison::Differs {
                what: "destination is a symlink, to be replaced by a file".into(),
                old: None,
            });
        }
        if !meta.is_file() {
            return Err(InstallError::NotAFile(self.dest.clone()));
        }
        let mut what = Vec::new();
        let old = if meta.len() as usize == content.len() {
            let old =
                std::fs::read(&self.dest).map_err(|e| io_err("cannot read", &self.dest, e))?;
            if old != content {
                what.push("content".to_string());
            }
            Some(old)
        } else {
            what.push("content".to_string());
            std::fs::read(&self.dest).ok()
        };
        let mode = self.wanted_mode(Some(&meta));
        if meta.mode() & 0o7777 != mode {
            what.push(format!("mode {:04o} → {mode:04o}", meta.mode() & 0o7777));
        }
        if let Some(uid) = self.uid
            && meta.uid() != uid
        {
            what.push(format!("owner {} → {uid}", meta.uid()));
        }
        if let Some(gid) = self.gid
            && meta.gid() != gid
        {
            what.push(format!("group {} → {gid}", meta.gid()));
        }
        if what.is_empty() {
            Ok(Comparison::Same)
        } else {
            Ok(Comparison::Differs {
                what: what.join(", "),
                old,
            })
        }
    }

    /// Writes `content` to a new stage file next to the destination, with
    /// the final mode and owner, fsynced. Nothing is visible at `dest` yet.
    pub fn stage(&self, content: &[u8]) -> Result<Staged, InstallError> {
        let dir = self.dir()?;
        if self.create_dirs && !dir.is_dir() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("cannot create directory", dir, e))?;
        }
        let current = std::fs::symlink_metadata(&self.dest).ok();
        let mode = self.wanted_mode(current.as_ref());
        let name = self
            .dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // tempfile opens with O_CREAT|O_EXCL and the mode given here (0600),
        // under a random name: a symlink planted at a guessable name cannot
        // redirect the write.
        let mut tmp = tempfile::Builder::new()
            .prefix(&format!(".{name}."))
            .suffix(STAGE_SUFFIX)
            .rand_bytes(8)
            .permissions(std::fs::Permissions::from_mode(0o600))
            .tempfile_in(dir)
            .map_err(|e| io_err("cannot create a stage file in", dir, e))?;
        let path = tmp.path().to_path_buf();
        let f: &mut File = tmp.as_file_mut();
        f.write_all(content)
            .and_then(|_| f.sync_all())
            .map_err(|e| io_err("cannot write", &path, e))?;
        if self.uid.is_some() || self.gid.is_some() {
            nix::unistd::fchown(
                &*f,
                self.uid.map(nix::unistd::Uid::from_raw),
                self.gid.map(nix::unistd::Gid::from_raw),
            )
            .map_err(|source| InstallError::Owner {
                uid: self.uid,
                gid: self.gid,
                path: path.clone(),
                source,
            })?;
        }
        // chmod after chown: chown clears set-id bits.
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_err("cannot set mode on", &path, e))?;
        Ok(Staged {
            tmp,
            target: self.clone(),
        })
    }
}

/// A complete file waiting to replace the destination. Dropping it removes it.
pub struct Staged {
    tmp: tempfile::NamedTempFile,
    target: Target,
}

impl Staged {
    /// The stage file's path (what `{{src}}` means in `check_cmd`).
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the stage file over the destination and fsyncs the directory.
    pub fn commit(self) -> Result<(), InstallError> {
        let dest = &self.target.dest;
        // Only a regular file is kept as DEST.bak: a symlink at DEST may have
        // been planted, and a backup must never preserve (or follow) it.
        if self.target.backup && std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_file()) {
            let bak = PathBuf::from(format!("{}.bak", dest.display()));
            let tmp_bak = PathBuf::from(format!("{}.bak{STAGE_SUFFIX}", dest.display()));
            let _ = std::fs::remove_file(&tmp_bak);
            std::fs::hard_link(dest, &tmp_bak)
                .and_then(|_| std::fs::rename(&tmp_bak, &bak))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp_bak);
                    io_err("cannot keep a backup as", &bak, e)
                })?;
        }
        self.tmp
            .persist(dest)
            .map_err(|e| io_err("cannot rename the stage file over", dest, e.error))?;
        if let Some(dir) = dest.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io_err("cannot fsync directory", dir, e))?;
        }
        Ok(())
    }
}

/// Removes stage files left in `dir` for `dest_name` by a killed process.
/// Returns how many were removed.
pub fn remove_stale_stages(dest: &Path) -> usize {
    let (Some(dir), Some(name)) = (dest.parent(), dest.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        let fname = e.file_name();
        let fname = fname.to_string_lossy();
        if fname.starts_with(&prefix)
            && fname.ends_with(STAGE_SUFFIX)
            && fname.len() == prefix.len() + 8 + STAGE_SUFFIX.len()
            && std::fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(dest: PathBuf) -> Target {
        Target {
            dest,
            mode: Some(0o640),
            uid: None,
            gid: None,
            create_dirs: false,
            backup: true,
        }
    }

    #[test]
    fn stage_then_commit_replaces_and_backs_up() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.conf");
        std::fs::write(&dest, "old").unwrap();
        let t = target(dest.clone());
        assert!(matches!(
            t.compare(b"new").unwrap(),
            Comparison::Differs { .. }
        ));
        let staged = t.stage(b"new").unwrap();
        let meta = std::fs::metadata(staged.path()).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        assert_eq!(
            std::fs::read(dir.path().join("x.conf.bak")).unwrap(),
            b"old"
        );
        assert_eq!(t.compare(b"new").unwrap(), Comparison::Same);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn dropped_stage_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = target(dir.path().join("x.conf"));
        let staged = t.stage(b"data").unwrap();
        assert!(staged.path().exists());
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn missing_directory_is_an_error_unless_created() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = target(dir.path().join("sub/x.conf"));
        let e = t.compare(b"x").unwrap_err().to_string();
        assert!(e.contains("create_dest_dirs"), "{e}");
        t.create_dirs = true;
        t.stage(b"x").unwrap().commit().unwrap();
        assert_eq!(std::fs::read(dir.path().join("sub/x.conf")).unwrap(), b"x");
    }

    #[test]
    fn stale_stages_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x.conf");
        std::fs::write(dir.path().join(".x.conf.abcdefgh.liveconf-tmp"), "partial").unwrap();
        std::fs::write(dir.path().join(".x.conf.keep"), "other").unwrap();
        assert_eq!(remove_stale_stages(&dest), 1);
        assert!(dir.path().join(".x.conf.keep").exists());
    }
}
