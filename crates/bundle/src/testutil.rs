//! Helpers for this crate's unit tests: pack a few files and install them.

use crate::assemble::{InstallOptions, install};
use crate::pack::{PackOptions, pack};
use crate::signing::{DeployKey, open_signed};
use crate::{ChunkStore, Root};
use std::fs;

pub struct Env {
    pub dir: tempfile::TempDir,
    pub key: DeployKey,
    pub store: ChunkStore,
    pub root: Root,
}

impl Env {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Env {
            key: DeployKey::generate().unwrap(),
            store: ChunkStore::open(dir.path().join("store")).unwrap(),
            root: Root::new(dir.path().join("root")),
            dir,
        }
    }

    /// Packs `files` as `tag` and installs it (not activated).
    pub fn release(&self, tag: &str, files: &[(&str, &str)]) {
        let src = self.dir.path().join("src").join(crate::tag::dir_name(tag));
        for (p, body) in files {
            let p = src.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, body).unwrap();
        }
        pack(
            &src,
            &self.store,
            &self.key,
            &PackOptions::new(tag),
            &|_| {},
        )
        .unwrap();
        let bytes = fs::read(self.store.manifest_path(tag)).unwrap();
        let v = open_signed(&bytes, &[self.key.public()]).unwrap();
        install(&self.root, &self.store, &v, InstallOptions::default()).unwrap();
    }
}
