//! Scratch folders for the workspace's tests, which leave nothing behind when they pass.
//!
//! [`Scratch::new`]`(prefix, name)` makes an empty folder `$TMPDIR/gradgym-<prefix>-<pid>-<name>/`
//! (a `/` in the name becomes `_` there)
//! and hands out the path `<that folder>/<name>`, which does not exist yet: a test writes its run
//! there, and whatever the command under test puts beside it (`<name>.partial`, a `.aside`
//! folder, a stray file) lands inside the same folder. Dropping the `Scratch` removes the folder
//! — unless the test is failing: on a panicking thread it stays, and its path goes to standard
//! error, so what the failed run wrote can be read.
//!
//! No run uses this module; it is public so that every crate's tests share one implementation.

use std::ops::Deref;
use std::path::{Path, PathBuf};

/// An emptied folder for one test, removed when dropped unless the test is failing.
#[derive(Debug)]
pub struct Scratch {
    folder: PathBuf,
    path: PathBuf,
}

impl Scratch {
    /// Makes `$TMPDIR/gradgym-<prefix>-<pid>-<name>/` (emptied when it exists already) and
    /// returns the guard of `<that folder>/<name>`, which does not exist.
    pub fn new(prefix: &str, name: &str) -> Scratch {
        // The path must stay inside the folder its guard removes.
        assert!(
            !name.is_empty()
                && Path::new(name)
                    .components()
                    .all(|c| matches!(c, std::path::Component::Normal(_))),
            "a scratch name is a relative path without `..`: {name:?}"
        );
        let folder = std::env::temp_dir().join(format!(
            "gradgym-{prefix}-{}-{}",
            std::process::id(),
            name.replace('/', "_")
        ));
        match std::fs::remove_dir_all(&folder) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("emptying {}: {e}", folder.display()),
        }
        std::fs::create_dir_all(&folder)
            .unwrap_or_else(|e| panic!("making {}: {e}", folder.display()));
        let path = folder.join(name);
        Scratch { folder, path }
    }

    /// The path a test writes to: `<folder>/<name>`, absent until the test makes it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The folder that holds [`Scratch::path`] and everything written beside it.
    pub fn folder(&self) -> &Path {
        &self.folder
    }
}

impl Deref for Scratch {
    type Target = PathBuf;
    fn deref(&self) -> &PathBuf {
        &self.path
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<std::ffi::OsStr> for Scratch {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.path.as_os_str()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept for a look: {}", self.folder.display());
        } else {
            // A folder a test made unreadable or removed itself is not a failure of the test.
            let _ = make_writable(&self.folder);
            let _ = std::fs::remove_dir_all(&self.folder);
        }
    }
}

/// Gives the owner write and search permission on every folder under `dir` (a test may have
/// taken them away to make a write fail), so that the tree can be removed.
fn make_writable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() {
        return Ok(());
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    std::fs::set_permissions(dir, perms)?;
    for entry in std::fs::read_dir(dir)? {
        make_writable(&entry?.path())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_passing_tests_scratch_is_removed_and_a_failing_tests_is_kept() {
        let scratch = Scratch::new("scratch", "passing");
        let folder = scratch.folder().to_path_buf();
        assert!(folder.is_dir() && !scratch.exists());
        std::fs::create_dir_all(scratch.join("a/b")).unwrap();
        std::fs::write(folder.join("passing.partial"), "beside").unwrap();
        drop(scratch);
        assert!(!folder.exists(), "{} left behind", folder.display());

        let kept = std::thread::spawn(|| {
            let scratch = Scratch::new("scratch", "failing");
            std::fs::write(scratch.path(), "evidence").unwrap();
            let folder = scratch.folder().to_path_buf();
            let _guard = scratch;
            std::panic::panic_any(folder);
        })
        .join()
        .unwrap_err();
        let folder = kept.downcast::<PathBuf>().unwrap();
        assert_eq!(
            std::fs::read_to_string(folder.join("failing")).unwrap(),
            "evidence"
        );
        std::fs::remove_dir_all(*folder).unwrap();
    }

    #[test]
    fn a_scratch_is_emptied_when_made() {
        let first = Scratch::new("scratch", "again");
        std::fs::write(first.path(), "old").unwrap();
        std::mem::forget(first);
        let second = Scratch::new("scratch", "again");
        assert!(!second.exists());
    }
}
