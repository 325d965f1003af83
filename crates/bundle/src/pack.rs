//! Packing: a release directory into chunks in a store plus a signed manifest.
//!
//! One thread walks the canonical stream (reading files, hashing each, cutting
//! chunks with FastCDC); rayon's workers hash and compress the chunks and write the
//! new ones, so both cores stay busy and memory holds only the chunks in flight.

use crate::Progress;
use crate::chunk::{ChunkParams, compress};
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::manifest::{ChunkRef, Entry, EntryKind, MANIFEST_VERSION, Manifest};
use crate::scan::{Found, StreamReader, scan};
use crate::signing::{DeployKey, Freshness};
use crate::store::{ChunkStore, write_atomically};
use crate::tag;
use fastcdc::v2020::StreamCDC;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashSet;
use std::path::Path;

#[derive(Clone, Debug)]
pub struct PackOptions {
    pub tag: String,
    pub chunking: ChunkParams,
    /// zstd level for new chunks.
    pub level: i32,
    /// The release counter; by default the packing time in milliseconds, and
    /// always above the last one this store signed.
    pub counter: Option<u64>,
    /// How long agents may take the release as new.
    pub valid_for: std::time::Duration,
}

/// How long a release may be taken as new, unless packed with another.
pub const DEFAULT_VALID_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

impl PackOptions {
    pub fn new(tag: impl Into<String>) -> Self {
        PackOptions {
            tag: tag.into(),
            chunking: ChunkParams::default(),
            level: 1,
            counter: None,
            valid_for: DEFAULT_VALID_FOR,
        }
    }
}

/// The store's last release counter (`STORE/counter`), if it signed any.
fn last_counter(store: &ChunkStore) -> Result<Option<u64>> {
    let path = store.dir().join("counter");
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().parse().ok()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).at(&path),
    }
}

/// The freshness a new release is signed with, and the store's counter raised
/// to it (so the next release packed here is newer even if the clock is not).
fn next_freshness(store: &ChunkStore, opts: &PackOptions) -> Result<Freshness> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    // Packs into one store at once take turns here, so no two get one counter.
    let lock_path = store.dir().join("counter.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .at(&lock_path)?;
    lock.lock().at(&lock_path)?;
    let last = last_counter(store)?;
    if let (Some(c), Some(l)) = (opts.counter, last)
        && c <= l
    {
        return Err(Error::CounterNotNewer {
            counter: c,
            last: l,
        });
    }
    let counter = opts
        .counter
        .unwrap_or_else(|| (now.as_millis() as u64).max(last.map_or(0, |l| l.saturating_add(1))));
    if last.is_none_or(|l| counter > l) {
        let path = store.dir().join("counter");
        write_atomically(&path, format!("{counter}\n").as_bytes(), true)?;
    }
    Ok(Freshness {
        counter,
        expires_unix: (now + opts.valid_for).as_secs(),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct PackReport {
    pub id: String,
    pub tag: String,
    /// The release counter and expiry it was signed with.
    pub counter: u64,
    pub expires_unix: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    /// Bytes of all regular files.
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks this pack added to the store.
    pub new_chunks: u64,
    /// Compressed bytes this pack added to the store.
    pub new_bytes_stored: u64,
    pub manifest: String,
}

/// Bytes that [`pack`] will read, for a progress bar's length.
pub fn stream_size(src: &Path) -> Result<u64> {
    Ok(scan(src)?
        .iter()
        .map(|e| match e.kind {
            Found::File { size, .. } => size,
            _ => 0,
        })
        .sum())
}

pub fn pack(
    src: &Path,
    store: &ChunkStore,
    key: &DeployKey,
    opts: &PackOptions,
    progress: Progress,
) -> Result<PackReport> {
    tag::validate(&opts.tag)?;
    opts.chunking.validate()?;
    let found = scan(src)?;
    let files: Vec<_> = found
        .iter()
        .filter_map(|e| match e.kind {
            Found::File { size, .. } => Some((src.join(&e.path), size)),
            _ => None,
        })
        .collect();

    let mut reader = StreamReader::new(files, progress);
    let c = opts.chunking;
    let cut = StreamCDC::new(&mut reader, c.min as usize, c.avg as usize, c.max as usize);
    let level = opts.level;
    let results: Vec<std::result::Result<(usize, ChunkRef, u64), Error>> = cut
        .enumerate()
        .par_bridge()
        .map_init(
            || zstd::bulk::Compressor::new(level),
            |comp, (i, chunk)| {
                let chunk = chunk.map_err(|e| Error::Io {
                    path: src.to_path_buf(),
                    cause: e.into(),
                })?;
                let hash = Hash::of(&chunk.data);
                let r = ChunkRef {
                    hash,
                    len: chunk.data.len() as u32,
                };
                if store.contains(&hash) {
                    return Ok((i, r, 0));
                }
                let comp = comp.as_mut().map_err(|e| Error::Io {
                    path: store.dir().into(),
                    cause: std::io::Error::other(e.to_string()),
                })?;
                let z = compress(comp, &chunk.data).at(store.chunk_path(&hash))?;
                store.put_compressed(&hash, &z)?;
                Ok((i, r, z.len() as u64))
            },
        )
        .collect();
    if let Some(e) = reader.failure.take() {
        return Err(e);
    }
    let mut chunks = Vec::with_capacity(results.len());
    for r in results {
        chunks.push(r?);
    }
    chunks.sort_unstable_by_key(|(i, _, _)| *i);
    let mut seen = HashSet::new();
    let (mut new_chunks, mut new_bytes) = (0, 0);
    for (_, r, stored) in &chunks {
        if *stored > 0 && seen.insert(r.hash) {
            new_chunks += 1;
            new_bytes += stored;
        }
    }

    let mut hashes = reader.hashes.into_iter();
    let mut offset = 0u64;
    let (mut n_files, mut n_dirs, mut n_links) = (0, 0, 0);
    let entries: Vec<Entry> = found
        .into_iter()
        .map(|e| {
            let kind = match e.kind {
                Found::Dir => {
                    n_dirs += 1;
                    EntryKind::Dir
                }
                Found::Symlink { target } => {
                    n_links += 1;
                    EntryKind::Symlink { target }
                }
                Found::File { executable, size } => {
                    n_files += 1;
                    let k = EntryKind::File {
                        executable,
                        size,
                        offset,
                        hash: hashes.next().expect("one hash per file"),
                    };
                    offset += size;
                    k
                }
            };
            Entry { path: e.path, kind }
        })
        .collect();
    let manifest = Manifest {
        version: MANIFEST_VERSION,
        tag: opts.tag.clone(),
        chunking: opts.chunking,
        entries,
        chunks: chunks.into_iter().map(|(_, r, _)| r).collect(),
    };
    manifest.validate()?;
    let freshness = next_freshness(store, opts)?;
    let (signed, id) = key.sign(&manifest, freshness);
    let path = store.manifest_path(&opts.tag);
    write_atomically(&path, &signed, true)?;
    Ok(PackReport {
        id: id.to_hex(),
        tag: opts.tag.clone(),
        files: n_files,
        dirs: n_dirs,
        symlinks: n_links,
        bytes: offset,
        chunks: manifest.chunks.len() as u64,
        new_chunks,
        new_bytes_stored: new_bytes,
        manifest: path.display().to_string(),
        counter: freshness.counter,
        expires_unix: freshness.expires_unix,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_grow_per_store_and_a_low_one_is_refused() {
        let env = crate::testutil::Env::new();
        let src = env.dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(src.join("a"), "a").unwrap();
        let mut o = PackOptions::new("v1");
        o.counter = Some(10);
        assert_eq!(
            pack(&src, &env.store, &env.key, &o, &|_| {})
                .unwrap()
                .counter,
            10
        );
        let mut o = PackOptions::new("v2");
        o.counter = Some(10);
        assert!(matches!(
            pack(&src, &env.store, &env.key, &o, &|_| {}),
            Err(Error::CounterNotNewer {
                counter: 10,
                last: 10
            })
        ));
        // By default: the time in milliseconds, above the last.
        let r = pack(&src, &env.store, &env.key, &PackOptions::new("v3"), &|_| {}).unwrap();
        assert!(r.counter > 1_700_000_000_000, "{}", r.counter);
        assert!(
            r.expires_unix > r.counter / 1000,
            "expires after it was packed"
        );
    }
}
