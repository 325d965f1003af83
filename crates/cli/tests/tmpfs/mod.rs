//! A small real filesystem for the full-disk tests: a tmpfs of a given size,
//! mounted in a temporary directory for the test's life (mounting needs root;
//! without it `mount` says so and the caller skips).
#![allow(dead_code)] // not every test uses every helper

use std::fs;
use std::path::PathBuf;
use std::process::Command;

/// A tmpfs mounted for the test's life, unmounted on drop (before its directory goes).
pub struct Tmpfs {
    pub mnt: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs with `options` (e.g. `size=8m`), or says why it cannot.
    pub fn mount(options: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).map_err(|e| e.to_string())?;
        mount(&["-t", "tmpfs", "-o", options, "tmpfs"], &mnt)?;
        Ok(Tmpfs { mnt, _dir: dir })
    }

    /// Bytes free for unprivileged writers (statvfs f_bavail * f_frsize).
    pub fn available(&self) -> u64 {
        let v = self.statfs("%a %S");
        v[0] * v[1]
    }

    /// Bytes in use (statvfs (f_blocks - f_bfree) * f_frsize).
    pub fn used(&self) -> u64 {
        let v = self.statfs("%b %f %S");
        (v[0] - v[1]) * v[2]
    }

    /// The numbers `stat -f -c FORMAT` prints for the mount.
    fn statfs(&self, format: &str) -> Vec<u64> {
        let out = Command::new("stat")
            .args(["-f", "-c", format])
            .arg(&self.mnt)
            .output()
            .expect("stat -f");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|x| x.parse().expect("a number from stat -f"))
            .collect()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.mnt)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
        }
    }
}

impl Tmpfs {
    /// Changes the size limit of the mounted filesystem (e.g. `size=64m`).
    pub fn resize(&self, options: &str) -> Result<(), String> {
        mount(&["-o", &format!("remount,{options}")], &self.mnt)
    }
}

/// Runs `mount ARGS DIR`; Err says why it failed.
fn mount(args: &[&str], dir: &std::path::Path) -> Result<(), String> {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run mount: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "mount {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}
