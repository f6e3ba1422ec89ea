//! A small tmpfs for full-disk tests, shared by the integration tests (cli/tests/support) and
//! the metadata store's unit tests (included with `#[path]`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted on a fresh directory, unmounted on drop.
pub struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts one of `size` (needs root, as the test command has), or None with the reason on
    /// stderr where mounting is not permitted. Under CI (CI=true) that is a failure instead:
    /// the test command runs as root there and must check what needs a full disk.
    pub fn mount_or_skip(size: &str, test: &str) -> Option<SmallFs> {
        match SmallFs::mount(size) {
            Ok(fs) => Some(fs),
            Err(reason) if std::env::var_os("CI").is_none() => {
                eprintln!("SKIPPED {test}: no small filesystem: {reason}");
                None
            }
            Err(reason) => panic!("{test}: no small filesystem under CI: {reason}"),
        }
    }

    fn mount(size: &str) -> Result<SmallFs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(SmallFs { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the filesystem with one file, whose path is returned (remove it to free space).
    pub fn fill(&self) -> PathBuf {
        let path = self.dir.path().join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 4096];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}
