//! The manifest: every entry of a release tree and the chunks of its byte stream.
//!
//! The canonical stream is the concatenation of the regular files' contents in
//! sorted path order. Each file records its `offset` in that stream; the chunks,
//! in stream order, cover it exactly. The encoding (postcard) is canonical: the same
//! tree and chunking give the same bytes, so the hash of the encoding is the
//! release id.
//!
//! A manifest from anywhere else is untrusted: [`Manifest::decode`] bounds what it
//! reads and [`Manifest::validate`] refuses any entry that could write outside the
//! release directory (`..`, absolute paths, a path through a symlink or a file),
//! duplicates, and streams whose offsets do not add up.

use crate::chunk::ChunkParams;
use crate::error::ManifestError;
use crate::hash::Hash;
use crate::tag;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// The manifest format this code writes and reads.
pub const MANIFEST_VERSION: u32 = 1;
/// The largest encoded manifest accepted (a 275,000-file tree takes about 30 MB).
pub const MAX_MANIFEST_BYTES: usize = 256 << 20;
const MAX_PATH: usize = 4096;
const MAX_COMPONENT: usize = 255;
const MAX_LINK_TARGET: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always first, so a reader can refuse an unknown version before decoding more.
    pub version: u32,
    pub tag: String,
    pub chunking: ChunkParams,
    /// Sorted by path (bytewise), no duplicates; every directory is listed.
    pub entries: Vec<Entry>,
    /// The chunks of the canonical stream, in stream order.
    pub chunks: Vec<ChunkRef>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative, `/`-separated, UTF-8.
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    Dir,
    File {
        executable: bool,
        size: u64,
        /// Position of the file's first byte in the canonical stream.
        offset: u64,
        /// BLAKE3 of the whole file.
        hash: Hash,
    },
    /// The target is data: kept exactly, never followed.
    Symlink {
        target: String,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    /// BLAKE3 of the chunk's plain bytes.
    pub hash: Hash,
    /// Plain length; bounds decompression.
    pub len: u32,
}

impl Manifest {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to a Vec cannot fail")
    }

    /// Decodes and validates untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge(bytes.len(), MAX_MANIFEST_BYTES));
        }
        check_version("manifest", bytes, MANIFEST_VERSION)?;
        let (m, rest): (Manifest, _) =
            postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::Decode(format!(
                "{} trailing bytes",
                rest.len()
            )));
        }
        m.validate()?;
        // Canonical: a manifest that re-encodes differently is not the one that was hashed.
        if m.encode() != bytes {
            return Err(ManifestError::Decode("encoding is not canonical".into()));
        }
        Ok(m)
    }

    /// The release id: BLAKE3 of the canonical encoding.
    pub fn id(&self) -> Hash {
        Hash::of(&self.encode())
    }

    /// Total bytes of the canonical stream (all regular files).
    pub fn stream_len(&self) -> u64 {
        self.chunks.iter().map(|c| u64::from(c.len)).sum()
    }

    pub fn files(&self) -> impl Iterator<Item = (&str, bool, u64, u64, Hash)> {
        self.entries.iter().filter_map(|e| match e.kind {
            EntryKind::File {
                executable,
                size,
                offset,
                hash,
            } => Some((e.path.as_str(), executable, size, offset, hash)),
            _ => None,
        })
    }

    /// Stream offset of every chunk, plus the end.
    pub fn chunk_offsets(&self) -> Vec<u64> {
        let mut out = Vec::with_capacity(self.chunks.len() + 1);
        let mut at = 0u64;
        out.push(0);
        for c in &self.chunks {
            at += u64::from(c.len);
            out.push(at);
        }
        out
    }

    /// Checks everything a hostile manifest could get wrong.
    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.version != MANIFEST_VERSION {
            return Err(ManifestError::UnsupportedVersion {
                what: "manifest",
                found: self.version,
                supported: MANIFEST_VERSION,
            });
        }
        tag::validate(&self.tag)?;
        self.chunking.validate()?;
        let mut prev: Option<&Entry> = None;
        // Directories listed so far. A parent sorts before its children, though
        // not always right before them (`d-x` sorts between `d` and `d/x`).
        let mut dirs: HashSet<&str> = HashSet::new();
        let mut stream_at = 0u64;
        for e in &self.entries {
            let bad = |reason: &str| ManifestError::BadEntry {
                path: e.path.clone(),
                reason: reason.to_string(),
            };
            validate_path(&e.path).map_err(bad)?;
            if let Some(p) = prev
                && p.path.as_bytes() >= e.path.as_bytes()
            {
                return Err(bad(if p.path == e.path {
                    "duplicate path"
                } else {
                    "entries are not in sorted order"
                }));
            }
            // The parent must be the root or a directory listed earlier: this rules
            // out paths that pass through a symlink or a file.
            if let Some((parent, _)) = e.path.rsplit_once('/')
                && !dirs.contains(parent)
            {
                return Err(bad("parent is not a directory of the release"));
            }
            match &e.kind {
                EntryKind::Dir => {
                    dirs.insert(&e.path);
                }
                EntryKind::File {
                    size, offset, hash, ..
                } => {
                    // Empty files have no chunks to check them by: pin their hash here.
                    if *size == 0 && *hash != Hash::of(b"") {
                        return Err(bad("empty file with the hash of non-empty content"));
                    }
                    if *offset != stream_at {
                        return Err(bad("file offset does not follow the previous file"));
                    }
                    stream_at = stream_at
                        .checked_add(*size)
                        .ok_or_else(|| bad("file size overflows"))?;
                }
                EntryKind::Symlink { target } => {
                    if target.is_empty() || target.len() > MAX_LINK_TARGET || target.contains('\0')
                    {
                        return Err(bad("symlink target is empty, too long or has a NUL"));
                    }
                }
            }
            prev = Some(e);
        }
        for c in &self.chunks {
            if c.len == 0 || c.len > self.chunking.max {
                return Err(ManifestError::Inconsistent(format!(
                    "chunk {} has length {}, outside 1..={}",
                    c.hash, c.len, self.chunking.max
                )));
            }
        }
        if self.stream_len() != stream_at {
            return Err(ManifestError::Inconsistent(format!(
                "chunks cover {} bytes but the files hold {stream_at}",
                self.stream_len()
            )));
        }
        Ok(())
    }
}

/// Reads the leading version number of a postcard encoding.
pub(crate) fn check_version(
    what: &'static str,
    bytes: &[u8],
    supported: u32,
) -> Result<(), ManifestError> {
    let (found, _): (u32, _) =
        postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
    if found != supported {
        return Err(ManifestError::UnsupportedVersion {
            what,
            found,
            supported,
        });
    }
    Ok(())
}

/// A relative path of plain components: no `..`, `.`, empty component, leading `/`
/// or NUL, within length limits.
pub fn validate_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if path.len() > MAX_PATH {
        return Err("path too long");
    }
    if path.starts_with('/') {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("path contains NUL");
    }
    for c in path.split('/') {
        match c {
            "" => return Err("empty path component"),
            "." | ".." => return Err("path component '.' or '..'"),
            _ if c.len() > MAX_COMPONENT => return Err("path component too long"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, offset: u64, size: u64) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                executable: false,
                size,
                offset,
                hash: Hash::of(b""),
            },
        }
    }
    fn dir(path: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Dir,
        }
    }
    fn link(path: &str, target: &str) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::Symlink {
                target: target.into(),
            },
        }
    }
    fn manifest(entries: Vec<Entry>, total: u32) -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            tag: "v1".into(),
            chunking: ChunkParams::default(),
            entries,
            chunks: if total > 0 {
                vec![ChunkRef {
                    hash: Hash::of(b"x"),
                    len: total,
                }]
            } else {
                vec![]
            },
        }
    }

    #[test]
    fn accepts_a_good_tree() {
        let m = manifest(
            vec![
                file("a", 0, 3),
                dir("d"),
                file("d-x", 3, 0),
                file("d/x", 3, 2),
                dir("d/y"),
                link("d/y/etc", "/etc/shared"),
                link("l", "../outside"),
            ],
            5,
        );
        m.validate().unwrap();
        assert_eq!(Manifest::decode(&m.encode()).unwrap(), m);
    }

    #[test]
    fn refuses_escapes_and_inconsistencies() {
        let cases: Vec<(Vec<Entry>, u32, &str)> = vec![
            (vec![file("../x", 0, 1)], 1, "'.' or '..'"),
            (vec![file("/etc/passwd", 0, 1)], 1, "absolute"),
            (vec![dir("a"), file("a/../../x", 0, 1)], 1, "'..'"),
            (vec![file("a//b", 0, 1)], 1, "empty path component"),
            (vec![link("l", "/tmp"), file("l/x", 0, 1)], 1, "parent"),
            (vec![file("f", 0, 1), file("f/x", 1, 1)], 2, "parent"),
            (vec![file("nodir/x", 0, 1)], 1, "parent"),
            (vec![file("a", 0, 1), file("a", 1, 1)], 2, "duplicate"),
            (vec![file("b", 0, 1), file("a", 1, 1)], 2, "sorted"),
            (vec![file("a", 0, 1), file("b", 5, 1)], 2, "offset"),
            (vec![file("a", 0, 1)], 9, "cover"),
            (vec![link("l", "")], 0, "symlink target"),
        ];
        for (entries, total, want) in cases {
            let err = manifest(entries.clone(), total).validate().unwrap_err();
            assert!(err.to_string().contains(want), "{entries:?}: {err}");
        }
    }

    #[test]
    fn refuses_unknown_version_and_garbage() {
        let mut m = manifest(vec![], 0);
        m.version = 99;
        let err = Manifest::decode(&m.encode()).unwrap_err();
        assert!(matches!(
            err,
            ManifestError::UnsupportedVersion { found: 99, .. }
        ));
        assert!(Manifest::decode(&[1, 0xff, 0xff, 0xff]).is_err());
        assert!(Manifest::decode(&[]).is_err());
        let mut bytes = manifest(vec![], 0).encode();
        bytes.push(0);
        assert!(Manifest::decode(&bytes).is_err());
    }
}
