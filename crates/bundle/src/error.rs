//! Typed errors. Every error that concerns a file names it.

use crate::hash::Hash;
use std::io;
use std::path::{Path, PathBuf};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {cause}", path.display())]
    Io { path: PathBuf, cause: io::Error },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Chunk(#[from] ChunkError),
    #[error("{}: not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("{}: {reason}", path.display())]
    Unpackable { path: PathBuf, reason: String },
    #[error("{}: file changed while it was being packed", .0.display())]
    ChangedWhilePacking(PathBuf),
    #[error("no release {0:?} in {1}")]
    NoSuchRelease(String, String),
    #[error("release {tag:?} is already installed with id {installed}, not {wanted}")]
    TagConflict {
        tag: String,
        installed: Hash,
        wanted: Hash,
    },
    #[error(
        "not enough free space in {}: the release needs {needed} bytes, {available} are free and {reserve} must stay free",
        path.display()
    )]
    InsufficientSpace {
        path: PathBuf,
        needed: u64,
        available: u64,
        reserve: u64,
    },
    #[error("file {path:?} does not match the manifest after assembly ({reason})")]
    FileMismatch { path: String, reason: String },
    #[error("{}: not a shoal root (no releases/ directory)", .0.display())]
    NoRoot(PathBuf),
    #[error("no current release in {}", .0.display())]
    NoCurrent(PathBuf),
    #[error("no earlier release to roll back to in {}", .0.display())]
    NothingToRollBack(PathBuf),
    #[error(
        "release counter {counter} is not above {last}, the last this store signed: agents would refuse it as an old release"
    )]
    CounterNotNewer { counter: u64, last: u64 },
    #[error("cannot get random bytes from the OS: {0}")]
    Random(String),
    #[error("{}: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
}

/// Why a manifest was refused. Raised before anything is written to disk.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {0} bytes, more than the limit of {1}")]
    TooLarge(usize, usize),
    #[error("manifest cannot be decoded: {0}")]
    Decode(String),
    #[error("unsupported {what} format version {found} (this shoal reads version {supported})")]
    UnsupportedVersion {
        what: &'static str,
        found: u32,
        supported: u32,
    },
    #[error("manifest is signed by key {0}, which is not trusted")]
    UntrustedKey(String),
    #[error("manifest signature is missing or invalid")]
    BadSignature,
    #[error(
        "release {tag:?} expired at Unix time {expired_unix}: refusing it as a new release (it could be a replay that keeps this host on old code); pack the tree again under a new tag to ship it"
    )]
    Expired { tag: String, expired_unix: u64 },
    #[error(
        "release {tag:?} (counter {counter}) is not newer than the newest release this host installed (counter {newest}): refusing an older release announced as new; to go back, roll back to an installed release"
    )]
    NotNewer {
        tag: String,
        counter: u64,
        newest: u64,
    },
    #[error("invalid tag {0:?}: {1}")]
    BadTag(String, &'static str),
    #[error("manifest entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
    #[error("manifest is inconsistent: {0}")]
    Inconsistent(String),
}

/// Why a chunk was refused. The chunk is never used.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk {0} is missing from the store")]
    Missing(Hash),
    #[error("chunk {hash}: compressed size {size} exceeds the bound {bound} for {len} bytes")]
    Oversized {
        hash: Hash,
        size: u64,
        bound: u64,
        len: u32,
    },
    #[error("chunk {hash}: does not decompress within its recorded length {len}: {reason}")]
    Undecodable {
        hash: Hash,
        len: u32,
        reason: String,
    },
    #[error("chunk {hash}: decompressed to {got} bytes, the manifest records {len}")]
    WrongLength { hash: Hash, got: usize, len: u32 },
    #[error("chunk {hash}: bytes hash to {got}, not to the chunk's name")]
    WrongHash { hash: Hash, got: Hash },
}

/// Adds the path to an `io::Error`.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|source| Error::Io {
            path: path.as_ref().to_path_buf(),
            cause: source,
        })
    }
}
