//! Assembly: a verified release directory from a manifest and a chunk store.
//!
//! The tree is built under `releases/.partial-<name>-<pid>`, a name no release can
//! have. Every chunk is verified as it is decoded, every file's hash is computed
//! over the bytes actually written (or, for a file hard-linked from the current
//! release, over the linked file), the filesystem is synced, and only then is the
//! directory renamed to `releases/<name>`. Any failure removes the partial tree and
//! leaves every installed release and `current` as they were.
//!
//! Assembly never follows a symlink: the manifest is validated so that every
//! parent is a directory this code created, files are created with `O_EXCL`, and
//! symlinks are written as data.

use crate::Progress;
use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::layout::{PARTIAL_PREFIX, Root, remove_tree};
use crate::manifest::{EntryKind, Manifest};
use crate::signing::{TrustedKey, Verified, open_signed};
use crate::space;
use crate::store::{ChunkStore, fsync_dir, write_atomically};
use crate::tag;
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// Chunks decoded in parallel before the writer takes them (about 8 MiB).
const BATCH_BYTES: u64 = 8 << 20;

#[derive(Clone, Copy)]
pub struct InstallOptions<'a> {
    /// Bytes that must stay free on the root's filesystem after assembly.
    pub reserve: u64,
    /// Hard-link files unchanged since the current release instead of writing them.
    pub link_unchanged: bool,
    pub progress: Progress<'a>,
}

impl Default for InstallOptions<'_> {
    fn default() -> Self {
        InstallOptions {
            reserve: 64 << 20,
            link_unchanged: true,
            progress: &crate::no_progress,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct InstallReport {
    pub tag: String,
    pub id: String,
    pub dir: String,
    pub files: u64,
    pub bytes: u64,
    pub bytes_written: u64,
    pub files_linked: u64,
    pub bytes_linked: u64,
    pub chunks_read: u64,
    /// The same release was already installed; nothing was written.
    pub already_installed: bool,
}

/// Reads and verifies the signed manifest the store holds for `tag`.
pub fn load_from_store(store: &ChunkStore, tag: &str, trusted: &[TrustedKey]) -> Result<Verified> {
    tag::validate(tag)?;
    let path = store.manifest_path(tag);
    let signed = match fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::NoSuchRelease(
                tag.to_string(),
                store.dir().display().to_string(),
            ));
        }
        r => r.at(&path)?,
    };
    let verified = open_signed(&signed, trusted)?;
    if verified.manifest.tag != tag {
        return Err(crate::error::ManifestError::Inconsistent(format!(
            "{} holds the manifest of {:?}, not {tag:?}",
            path.display(),
            verified.manifest.tag
        ))
        .into());
    }
    Ok(verified)
}

/// Assembles and verifies a release whose manifest has been verified; does not activate it.
pub fn install(
    root: &Root,
    store: &ChunkStore,
    release: &Verified,
    opts: InstallOptions,
) -> Result<InstallReport> {
    let m = &release.manifest;
    let _lock = root.lock()?;
    let final_dir = root.release_dir(&m.tag);
    let mut report = InstallReport {
        tag: m.tag.clone(),
        id: release.id.to_hex(),
        dir: final_dir.display().to_string(),
        files: m.files().count() as u64,
        bytes: m.stream_len(),
        bytes_written: 0,
        files_linked: 0,
        bytes_linked: 0,
        chunks_read: 0,
        already_installed: false,
    };
    if final_dir.is_dir() {
        let installed = root.installed_id(&m.tag)?;
        if installed != release.id {
            return Err(Error::TagConflict {
                tag: m.tag.clone(),
                installed,
                wanted: release.id,
            });
        }
        report.already_installed = true;
        return Ok(report);
    }

    let plan = Plan::new(root, m, opts.link_unchanged)?;
    space::ensure(root.path(), plan.disk_needed, opts.reserve)?;

    let tmp = root.releases_dir().join(format!(
        "{PARTIAL_PREFIX}{}-{}",
        tag::dir_name(&m.tag),
        std::process::id()
    ));
    let built = build(store, m, &plan, &tmp, opts.progress, &mut report).and_then(|()| {
        // One syncfs covers every file and directory written, far cheaper than
        // an fsync per file on trees of many small files.
        let dir = fs::File::open(&tmp).at(&tmp)?;
        rustix::fs::syncfs(&dir).map_err(|e| Error::Io {
            path: tmp.clone(),
            cause: e.into(),
        })?;
        // The manifest goes first: a release directory always has its manifest.
        write_atomically(&root.manifest_file(&m.tag), &release.signed_bytes, true)?;
        fs::rename(&tmp, &final_dir).at(&final_dir)?;
        fsync_dir(&root.releases_dir())?;
        root.raise_newest(release.freshness.counter)
    });
    if let Err(e) = built {
        let _ = remove_tree(&tmp);
        if !final_dir.exists() {
            let _ = fs::remove_file(root.manifest_file(&m.tag));
        }
        return Err(e);
    }
    tracing::info!(tag = %m.tag, id = %release.id, "release installed");
    Ok(report)
}

/// A file to write from chunks.
struct ToWrite<'m> {
    path: &'m str,
    executable: bool,
    size: u64,
    offset: u64,
    hash: Hash,
}

/// What to write, what to link, which chunks to read.
struct Plan<'m> {
    write: Vec<ToWrite<'m>>,
    /// (new path, existing file in the current release).
    link: HashMap<&'m str, PathBuf>,
    needed: Vec<bool>,
    disk_needed: u64,
}

impl<'m> Plan<'m> {
    fn new(root: &Root, m: &'m Manifest, link_unchanged: bool) -> Result<Self> {
        let mut sources: HashMap<(Hash, bool), PathBuf> = HashMap::new();
        if link_unchanged
            && let Some(cur) = root.current()?
            && cur != m.tag
            && let Ok(prev) = root.manifest(&cur, None)
        {
            let dir = root.release_dir(&cur);
            for (path, exec, size, _, hash) in prev.manifest.files() {
                if size > 0 {
                    sources.insert((hash, exec), dir.join(path));
                }
            }
        }
        // A file whose content and mode match one in the current release is linked
        // from it, after re-hashing the source: a tree edited in place since it was
        // installed must not leak into the new release nor block it, so a source
        // that no longer matches is simply not used.
        let candidates: Vec<(&str, &PathBuf, Hash)> = m
            .files()
            .filter(|&(_, _, size, _, _)| size > 0)
            .filter_map(|(path, exec, size, _, hash)| {
                let src = sources.get(&(hash, exec))?;
                fs::symlink_metadata(src)
                    .is_ok_and(|md| md.is_file() && md.len() == size)
                    .then_some((path, src, hash))
            })
            .collect();
        let verified: Vec<bool> = candidates
            .par_iter()
            .map(|(path, src, want)| {
                let ok = crate::audit::hash_file(src, 0).is_ok_and(|h| h == *want);
                if !ok {
                    tracing::warn!(source = %src.display(), "current release differs from its manifest; writing {path} from chunks");
                }
                ok
            })
            .collect();
        let link: HashMap<&str, PathBuf> = candidates
            .into_iter()
            .zip(verified)
            .filter(|(_, ok)| *ok)
            .map(|((path, src, _), _)| (path, src.clone()))
            .collect();
        let mut write = Vec::new();
        let mut disk_needed = 0;
        for e in &m.entries {
            match e.kind {
                EntryKind::File {
                    executable,
                    size,
                    offset,
                    hash,
                } if size > 0 && !link.contains_key(e.path.as_str()) => {
                    disk_needed += space::on_disk(size);
                    write.push(ToWrite {
                        path: &e.path,
                        executable,
                        size,
                        offset,
                        hash,
                    });
                }
                _ => disk_needed += 4096,
            }
        }
        let offsets = m.chunk_offsets();
        let mut needed = vec![false; m.chunks.len()];
        for f in &write {
            let first = offsets.partition_point(|&o| o <= f.offset) - 1;
            let end = f.offset + f.size;
            for (i, n) in needed.iter_mut().enumerate().skip(first) {
                if offsets[i] >= end {
                    break;
                }
                *n = true;
            }
        }
        Ok(Plan {
            write,
            link,
            needed,
            disk_needed,
        })
    }
}

fn build(
    store: &ChunkStore,
    m: &Manifest,
    plan: &Plan,
    tmp: &Path,
    progress: Progress,
    report: &mut InstallReport,
) -> Result<()> {
    if tmp.exists() {
        remove_tree(tmp)?;
    }
    fs::create_dir(tmp).at(tmp)?;
    // Directories, symlinks, empty files and links, in path order (parents first).
    let mut linked = Vec::new();
    for e in &m.entries {
        let p = tmp.join(&e.path);
        match &e.kind {
            EntryKind::Dir => fs::create_dir(&p).at(&p)?,
            EntryKind::Symlink { target } => std::os::unix::fs::symlink(target, &p).at(&p)?,
            EntryKind::File {
                executable, size, ..
            } => {
                if let Some(src) = plan.link.get(e.path.as_str()) {
                    fs::hard_link(src, &p).at(&p)?;
                    linked.push((e, p));
                } else if *size == 0 {
                    seal(&create(&p)?, *executable).at(&p)?;
                }
            }
        }
    }
    // Linked files were re-hashed when planned (see `Plan::new`).
    for (e, _) in &linked {
        if let EntryKind::File { size, .. } = e.kind {
            report.files_linked += 1;
            report.bytes_linked += size;
            progress(size);
        }
    }

    let wanted: Vec<usize> = (0..m.chunks.len()).filter(|&i| plan.needed[i]).collect();
    report.chunks_read = wanted.len() as u64;
    let offsets = m.chunk_offsets();
    let (tx, rx) = mpsc::sync_channel::<Vec<(usize, Vec<u8>)>>(1);
    std::thread::scope(|s| {
        let writer = s.spawn(|| write_files(tmp, &plan.write, &offsets, rx, progress));
        let mut decode_err = None;
        let mut batch_start = 0;
        while batch_start < wanted.len() {
            let mut end = batch_start;
            let mut bytes = 0u64;
            while end < wanted.len() && bytes < BATCH_BYTES {
                bytes += u64::from(m.chunks[wanted[end]].len);
                end += 1;
            }
            let decoded: Result<Vec<(usize, Vec<u8>)>> = wanted[batch_start..end]
                .par_iter()
                .map_init(zstd::bulk::Decompressor::new, |d, &i| {
                    let d = d.as_mut().map_err(|e| Error::Io {
                        path: store.dir().into(),
                        cause: std::io::Error::other(e.to_string()),
                    })?;
                    Ok((i, store.get(&m.chunks[i], d)?))
                })
                .collect();
            match decoded {
                Ok(batch) => {
                    if tx.send(batch).is_err() {
                        break; // the writer failed; its error is reported below
                    }
                }
                Err(e) => {
                    decode_err = Some(e);
                    break;
                }
            }
            batch_start = end;
        }
        drop(tx);
        let written = writer.join().expect("writer thread panicked");
        match (decode_err, written) {
            (Some(e), _) | (None, Err(e)) => Err(e),
            (None, Ok(n)) => {
                report.bytes_written = n;
                Ok(())
            }
        }
    })
}

/// Writes the files from decoded chunks arriving in stream order, hashing what it writes.
fn write_files(
    tmp: &Path,
    files: &[ToWrite],
    offsets: &[u64],
    rx: mpsc::Receiver<Vec<(usize, Vec<u8>)>>,
    progress: Progress,
) -> Result<u64> {
    let mut fi = 0;
    let mut open: Option<(fs::File, blake3::Hasher, PathBuf)> = None;
    let mut written = 0u64;
    for batch in rx {
        for (ci, data) in batch {
            let (cstart, cend) = (offsets[ci], offsets[ci + 1]);
            while let Some(f) = files.get(fi) {
                if f.offset >= cend {
                    break;
                }
                let (from, to) = (f.offset.max(cstart), (f.offset + f.size).min(cend));
                let (file, hasher, path) = match &mut open {
                    Some(o) => o,
                    None => {
                        let p = tmp.join(f.path);
                        open.insert((create(&p)?, blake3::Hasher::new(), p))
                    }
                };
                let piece = &data[(from - cstart) as usize..(to - cstart) as usize];
                file.write_all(piece).at(&*path)?;
                hasher.update(piece);
                written += piece.len() as u64;
                if to < f.offset + f.size {
                    break; // the file goes on in the next chunk
                }
                let (file, hasher, path) = open.take().expect("file is open");
                check_hash(f.path, f.hash, hasher.finalize().into())?;
                seal(&file, f.executable).at(&path)?;
                fi += 1;
            }
            progress(cend - cstart);
        }
    }
    if fi != files.len() {
        return Err(Error::FileMismatch {
            path: files[fi].path.to_string(),
            reason: "the chunks ended before the file did".into(),
        });
    }
    Ok(written)
}

fn create(path: &Path) -> Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .mode(0o600)
        .open(path)
        .at(path)
}

/// Makes a finished file read-only, keeping the executable bit.
fn seal(file: &fs::File, executable: bool) -> std::io::Result<()> {
    let mode = if executable { 0o555 } else { 0o444 };
    file.set_permissions(fs::Permissions::from_mode(mode))
}

fn check_hash(path: &str, want: Hash, got: Hash) -> Result<()> {
    if want != got {
        return Err(Error::FileMismatch {
            path: path.to_string(),
            reason: format!("content hashes to {got}, the manifest says {want}"),
        });
    }
    Ok(())
}
