//! The content-addressed chunk store: `STORE/chunks/ab/<hash>` holds the
//! zstd-compressed bytes of the chunk whose plain bytes hash to `<hash>`.
//! Packed manifests live in `STORE/manifests/<tag dir name>.manifest`.
//!
//! Writes go to a temporary name and are renamed into place, so a reader never sees
//! half a chunk under its name; reads verify anyway ([`crate::chunk::decode_chunk`]).

use crate::chunk::{compressed_bound, decode_chunk};
use crate::error::{ChunkError, IoContext, Result};
use crate::hash::Hash;
use crate::manifest::ChunkRef;
use crate::tag;
use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug)]
pub struct ChunkStore {
    dir: PathBuf,
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

impl ChunkStore {
    /// Opens a store, creating its directories.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        for sub in ["chunks", "manifests"] {
            fs::create_dir_all(dir.join(sub)).at(dir.join(sub))?;
        }
        // All 256 fan-out directories up front: no mkdir or stat per chunk written.
        for b in 0..=255u8 {
            let d = dir.join("chunks").join(format!("{b:02x}"));
            match fs::create_dir(&d) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e).at(&d),
                _ => {}
            }
        }
        Ok(ChunkStore { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn chunk_path(&self, hash: &Hash) -> PathBuf {
        let hex = hash.to_hex();
        self.dir.join("chunks").join(&hex[..2]).join(hex)
    }

    pub fn manifest_path(&self, tag: &str) -> PathBuf {
        self.dir
            .join("manifests")
            .join(format!("{}.manifest", tag::dir_name(tag)))
    }

    pub fn contains(&self, hash: &Hash) -> bool {
        self.chunk_path(hash).exists()
    }

    /// Stores compressed bytes under `hash`. The caller vouches that they are the
    /// chunk's (the packer made them, or [`decode_chunk`] checked them).
    pub fn put_compressed(&self, hash: &Hash, compressed: &[u8]) -> Result<()> {
        let path = self.chunk_path(hash);
        write_atomically(&path, compressed, false)
    }

    /// The compressed bytes of a chunk, refusing more than its bound allows.
    pub fn read_compressed(&self, want: &ChunkRef) -> Result<Vec<u8>> {
        let path = self.chunk_path(&want.hash);
        let file = match fs::File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ChunkError::Missing(want.hash).into());
            }
            r => r.at(&path)?,
        };
        let bound = compressed_bound(want.len);
        let mut buf = Vec::new();
        // Read one byte past the bound so an oversized file is seen without reading it all.
        file.take(bound + 1).read_to_end(&mut buf).at(&path)?;
        if buf.len() as u64 > bound {
            return Err(ChunkError::Oversized {
                hash: want.hash,
                size: fs::metadata(&path).map(|m| m.len()).unwrap_or(bound + 1),
                bound,
                len: want.len,
            }
            .into());
        }
        Ok(buf)
    }

    /// The verified plain bytes of a chunk.
    pub fn get(
        &self,
        want: &ChunkRef,
        decompressor: &mut zstd::bulk::Decompressor<'_>,
    ) -> Result<Vec<u8>> {
        let compressed = self.read_compressed(want)?;
        Ok(decode_chunk(want, &compressed, decompressor)?)
    }

    /// Every chunk hash in the store.
    pub fn list(&self) -> Result<Vec<Hash>> {
        Ok(self.files()?.into_iter().filter_map(|(_, h)| h).collect())
    }

    /// Deletes every chunk not in `keep` and every leftover temporary file.
    /// Returns (chunks removed, bytes freed).
    pub fn retain(&self, keep: &HashSet<Hash>) -> Result<(u64, u64)> {
        let (mut n, mut bytes) = (0, 0);
        for (path, hash) in self.files()? {
            if hash.is_some_and(|h| keep.contains(&h)) {
                continue;
            }
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            fs::remove_file(&path).at(&path)?;
            n += 1;
            bytes += len;
        }
        Ok((n, bytes))
    }

    /// Every file under `chunks/`, with the hash its name stands for (None for
    /// temporary files and strays).
    fn files(&self) -> Result<Vec<(PathBuf, Option<Hash>)>> {
        let mut out = Vec::new();
        let top = self.dir.join("chunks");
        for sub in fs::read_dir(&top).at(&top)? {
            let sub = sub.at(&top)?.path();
            if !sub.is_dir() {
                continue;
            }
            for f in fs::read_dir(&sub).at(&sub)? {
                let f = f.at(&sub)?;
                let hash = f.file_name().to_str().and_then(|s| s.parse().ok());
                out.push((f.path(), hash));
            }
        }
        Ok(out)
    }
}

/// Writes `bytes` to a temporary file beside `path` and renames it into place.
/// With `durable`, the file and its directory are fsynced.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8], durable: bool) -> Result<()> {
    let dir = path.parent().expect("store paths have a parent");
    let tmp = dir.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        TMP_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut f = fs::File::create(&tmp).at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        if durable {
            f.sync_all().at(&tmp)?;
        }
        fs::rename(&tmp, path).at(path)?;
        if durable {
            fsync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir).and_then(|d| d.sync_all()).at(dir)
}
