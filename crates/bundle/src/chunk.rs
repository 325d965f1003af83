//! Chunk parameters, compression, and the one place a chunk is verified.

use crate::error::{ChunkError, ManifestError};
use crate::hash::Hash;
use crate::manifest::ChunkRef;
use serde::{Deserialize, Serialize};

/// FastCDC sizes, recorded in the manifest so a release can be re-chunked the same way.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkParams {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

/// The largest chunk any manifest may declare; bounds every buffer a chunk needs.
pub const MAX_CHUNK: u32 = 4 << 20;

impl Default for ChunkParams {
    /// 16/32/128 KiB: half casync's sizes, because many releases are mostly small
    /// files and an edit dirties the whole chunk around it (see the dedup test).
    fn default() -> Self {
        ChunkParams::with_avg(32 << 10)
    }
}

impl ChunkParams {
    /// min = avg/2, max = avg*4.
    pub fn with_avg(avg: u32) -> Self {
        ChunkParams {
            min: avg / 2,
            avg,
            max: avg.saturating_mul(4),
        }
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        let ok = self.min >= 64
            && self.min <= self.avg
            && self.avg <= self.max
            && self.avg >= 256
            && self.max >= 1024
            && self.max <= MAX_CHUNK
            && self.min.is_multiple_of(2)
            && self.avg.is_multiple_of(2)
            && self.max.is_multiple_of(2);
        if ok {
            Ok(())
        } else {
            Err(ManifestError::Inconsistent(format!(
                "chunk sizes {}/{}/{} are out of range",
                self.min, self.avg, self.max
            )))
        }
    }
}

/// The most compressed bytes a chunk of `len` plain bytes may take on disk or on the wire.
pub fn compressed_bound(len: u32) -> u64 {
    zstd::zstd_safe::compress_bound(len as usize) as u64
}

/// Compresses one chunk with its own zstd frame.
pub fn compress(
    compressor: &mut zstd::bulk::Compressor<'_>,
    plain: &[u8],
) -> std::io::Result<Vec<u8>> {
    compressor.compress(plain)
}

/// Decompresses and verifies a chunk: the output may not exceed the length the
/// manifest records (whatever the frame header claims), must have exactly that
/// length, and must hash to the chunk's name. Nothing else turns stored or received
/// bytes into plain chunk data.
pub fn decode_chunk(
    want: &ChunkRef,
    compressed: &[u8],
    decompressor: &mut zstd::bulk::Decompressor<'_>,
) -> Result<Vec<u8>, ChunkError> {
    check_size(want, compressed)?;
    let mut plain = Vec::with_capacity(want.len as usize);
    decompressor
        .decompress_to_buffer(compressed, &mut plain)
        .map_err(|e| ChunkError::Undecodable {
            hash: want.hash,
            len: want.len,
            reason: e.to_string(),
        })?;
    check_plain(want, plain)
}

/// Rebuilds a chunk sent as a patch against `base` (the plain bytes of another
/// chunk this host holds, see [`crate::patch`]) and verifies it as
/// [`decode_chunk`] does: bounded by the recorded length, exactly that length,
/// hashing to the chunk's name.
pub fn decode_patched(want: &ChunkRef, base: &[u8], patch: &[u8]) -> Result<Vec<u8>, ChunkError> {
    check_size(want, patch)?;
    let plain = crate::patch::apply(base, patch, want.len as usize).map_err(|reason| {
        ChunkError::Undecodable {
            hash: want.hash,
            len: want.len,
            reason,
        }
    })?;
    check_plain(want, plain)
}

/// Refuses received bytes larger than any encoding of the chunk could be.
fn check_size(want: &ChunkRef, received: &[u8]) -> Result<(), ChunkError> {
    let bound = compressed_bound(want.len);
    if received.len() as u64 > bound {
        return Err(ChunkError::Oversized {
            hash: want.hash,
            size: received.len() as u64,
            bound,
            len: want.len,
        });
    }
    Ok(())
}

fn check_plain(want: &ChunkRef, plain: Vec<u8>) -> Result<Vec<u8>, ChunkError> {
    if plain.len() != want.len as usize {
        return Err(ChunkError::WrongLength {
            hash: want.hash,
            got: plain.len(),
            len: want.len,
        });
    }
    let got = Hash::of(&plain);
    if got != want.hash {
        return Err(ChunkError::WrongHash {
            hash: want.hash,
            got,
        });
    }
    Ok(plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn codecs() -> (
        zstd::bulk::Compressor<'static>,
        zstd::bulk::Decompressor<'static>,
    ) {
        (
            zstd::bulk::Compressor::new(1).unwrap(),
            zstd::bulk::Decompressor::new().unwrap(),
        )
    }

    #[test]
    fn round_trip_and_refusals() {
        let (mut c, mut d) = codecs();
        let plain = b"hello hello hello hello".repeat(100);
        let r = ChunkRef {
            hash: Hash::of(&plain),
            len: plain.len() as u32,
        };
        let z = compress(&mut c, &plain).unwrap();
        assert_eq!(decode_chunk(&r, &z, &mut d).unwrap(), plain);

        // Wrong name.
        let other = ChunkRef {
            hash: Hash::of(b"x"),
            ..r
        };
        assert!(matches!(
            decode_chunk(&other, &z, &mut d),
            Err(ChunkError::WrongHash { .. })
        ));
        // Truncated.
        assert!(matches!(
            decode_chunk(&r, &z[..z.len() / 2], &mut d),
            Err(ChunkError::Undecodable { .. })
        ));
        // Shorter than recorded.
        let short = ChunkRef {
            len: r.len + 1,
            ..r
        };
        assert!(matches!(
            decode_chunk(&short, &z, &mut d),
            Err(ChunkError::WrongLength { .. })
        ));
    }

    #[test]
    fn bomb_is_bounded_by_recorded_length() {
        let (mut c, mut d) = codecs();
        // 64 MiB of zeros compresses to a few KiB; the manifest says 1 KiB.
        let bomb = compress(&mut c, &vec![0u8; 64 << 20]).unwrap();
        let r = ChunkRef {
            hash: Hash::of(&[0u8; 1024]),
            len: 1024,
        };
        assert!(matches!(
            decode_chunk(&r, &bomb, &mut d),
            Err(ChunkError::Undecodable { .. }) | Err(ChunkError::Oversized { .. })
        ));
    }
}
