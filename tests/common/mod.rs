//! Fixtures shared by the whole-system tests: a deploy key, a store, packing a
//! directory, installing into a root, and small trees written by hand.
#![allow(dead_code)] // each test binary uses a different subset

use shoal_bundle::assemble::{InstallOptions, InstallReport, install, load_from_store};
use shoal_bundle::pack::{PackOptions, PackReport, pack};
use shoal_bundle::signing::{DeployKey, TrustedKey};
use shoal_bundle::{ChunkStore, Result, Root};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: DeployKey,
    pub store: ChunkStore,
    pub root: Root,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = ChunkStore::open(dir.path().join("store")).unwrap();
        let root = Root::new(dir.path().join("root"));
        Fixture {
            key: DeployKey::generate().unwrap(),
            store,
            root,
            dir,
        }
    }

    pub fn trusted(&self) -> Vec<TrustedKey> {
        vec![self.key.public()]
    }

    /// A fresh source directory under the fixture.
    pub fn src(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join("src").join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn pack(&self, src: &Path, tag: &str) -> PackReport {
        pack(src, &self.store, &self.key, &PackOptions::new(tag), &|_| {}).unwrap()
    }

    pub fn install(&self, tag: &str) -> Result<InstallReport> {
        let release = load_from_store(&self.store, tag, &self.trusted())?;
        install(&self.root, &self.store, &release, InstallOptions::default())
    }
}

/// Writes `files` (path, contents) under `dir`, creating parents.
pub fn write_tree(dir: &Path, files: &[(&str, &[u8])]) {
    for (path, body) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, body).unwrap();
    }
}

pub fn make_executable(path: &Path) {
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// Every entry under `dir` (relative path, kind, contents or link target, exec bit),
/// sorted: two trees are the same release when these are equal.
pub fn snapshot(dir: &Path) -> Vec<(String, String, Vec<u8>, bool)> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, String, Vec<u8>, bool)>) {
        for e in fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push((rel, "dir".into(), vec![], false));
                walk(base, &p, out);
            } else if md.file_type().is_symlink() {
                let t = fs::read_link(&p).unwrap();
                out.push((
                    rel,
                    "link".into(),
                    t.to_string_lossy().into_owned().into_bytes(),
                    false,
                ));
            } else {
                let exec = md.permissions().mode() & 0o111 != 0;
                out.push((rel, "file".into(), fs::read(&p).unwrap(), exec));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
