//! Helpers shared by the CLI's robustness tests (atomicity, crash, disk): running
//! the real `shoal` binary, a key and a store made through it, and checks on a
//! target root's layout.
#![allow(dead_code)] // each test binary uses a different subset

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `shoal` binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// A `shoal` command with the given arguments, not yet run.
pub fn cmd<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(bin());
    c.args(args);
    c.env_remove("RUST_LOG");
    c
}

/// Runs `shoal` and returns its output, whatever the exit status.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    cmd(args).output().expect("running shoal")
}

/// Runs `shoal`, panicking with its stderr unless it succeeds; returns stdout.
pub fn run_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = run(args);
    assert_ok(&out, args);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn assert_ok<S: AsRef<OsStr>>(out: &Output, args: &[S]) {
    assert!(
        out.status.success(),
        "shoal {} failed ({}):\nstdout: {}\nstderr: {}",
        show(args),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn show<S: AsRef<OsStr>>(args: &[S]) -> String {
    args.iter()
        .map(|a| a.as_ref().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A work directory with a deploy key and a store, both made by the CLI.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    pub trust: PathBuf,
    pub store: PathBuf,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("deploy.key");
        run_ok(&[
            OsStr::new("key"),
            "new".as_ref(),
            "--out".as_ref(),
            key.as_os_str(),
        ]);
        let trust = PathBuf::from(format!("{}.pub", key.display()));
        assert!(trust.is_file(), "no public key at {}", trust.display());
        let store = dir.path().join("store");
        Env {
            key,
            trust,
            store,
            dir,
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Packs `src` into the store as `tag` through the CLI.
    pub fn pack(&self, src: &Path, tag: &str) {
        run_ok(&[
            OsStr::new("pack"),
            src.as_os_str(),
            "--tag".as_ref(),
            tag.as_ref(),
            "--store".as_ref(),
            self.store.as_os_str(),
            "--key".as_ref(),
            self.key.as_os_str(),
        ]);
    }

    /// Arguments of `shoal install TAG --store S --root R --trust K.pub` plus `extra`.
    pub fn install_args(&self, tag: &str, root: &Path, extra: &[&str]) -> Vec<String> {
        let mut v = vec![
            "install".to_string(),
            tag.to_string(),
            "--store".into(),
            self.store.display().to_string(),
            "--root".into(),
            root.display().to_string(),
            "--trust".into(),
            self.trust.display().to_string(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    }

    pub fn install(&self, tag: &str, root: &Path, extra: &[&str]) -> Output {
        run(&self.install_args(tag, root, extra))
    }

    pub fn install_ok(&self, tag: &str, root: &Path, extra: &[&str]) -> String {
        run_ok(&self.install_args(tag, root, extra))
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

/// The tag `ROOT/current` points to (its target's last component), if it exists.
pub fn current_target(root: &Path) -> Option<PathBuf> {
    fs::read_link(root.join("current")).ok()
}

/// The release `current` points to, as a directory name under `releases/`.
pub fn current_name(root: &Path) -> Option<String> {
    current_target(root).map(|t| {
        t.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    })
}

/// Everything interrupted or failed work could leave behind: `.`-prefixed entries
/// under `releases/`, temporary and orphan manifests, temporary `current` links and
/// temporary files in the root (from rewriting the history).
pub fn leftovers(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let rel = root.join("releases");
    let names = |d: &Path| -> Vec<String> {
        fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    for n in names(&rel) {
        if n.starts_with('.') {
            out.push(format!("releases/{n}"));
        }
    }
    for n in names(&root.join("manifests")) {
        let orphan = match n.strip_suffix(".manifest") {
            Some(stem) => !rel.join(stem).is_dir(),
            None => true,
        };
        if orphan {
            out.push(format!("manifests/{n}"));
        }
    }
    for n in names(root) {
        if n.starts_with(".current-") || n.starts_with(".tmp-") {
            out.push(n);
        }
    }
    out.sort();
    out
}

/// Release directory names under `releases/` that are not leftovers.
pub fn installed(root: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(root.join("releases"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `shoal audit --root R [TAG]`: panics unless it exits 0 (clean).
pub fn audit_clean(root: &Path, tag: Option<&str>) {
    let mut args = vec![
        "audit".to_string(),
        "--root".into(),
        root.display().to_string(),
    ];
    args.extend(tag.map(String::from));
    let out = run(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "shoal {} is not clean:\nstdout: {}\nstderr: {}",
        show(&args),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// chmod `path` to `mode`.
pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Whether the tests run as root (uid 0), read from /proc without libc.
pub fn is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Every path under `dir` (not following symlinks) with its kind, size, mode and
/// modification time: equal snapshots mean nothing under `dir` changed.
pub fn snapshot(dir: &Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = fs::symlink_metadata(&p) else {
                continue;
            };
            let rel = p.strip_prefix(base).unwrap_or(&p).display().to_string();
            let link = if md.file_type().is_symlink() {
                fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            out.push(format!(
                "{rel} mode={:o} size={} mtime={}.{} ino={} -> {link}",
                md.mode(),
                md.len(),
                md.mtime(),
                md.mtime_nsec(),
                md.ino()
            ));
            if md.is_dir() {
                walk(base, &p, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
