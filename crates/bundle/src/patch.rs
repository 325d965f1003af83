//! Patches: a chunk or a manifest sent as the difference from one the receiver
//! already holds.
//!
//! Most deploys change a few files. Content-defined chunking keeps the chunks
//! away from the edits, but the chunk around each edit is new (tens of KB for
//! an edit of a few bytes), and so is the whole manifest (hundreds of KB: a
//! changed size moves the stream offset of every later file). A patch is a zstd
//! frame compressed with the old bytes as its reference prefix (zstd's
//! `--patch-from`), so it carries little more than what changed.
//!
//! A patch changes only how bytes travel: the receiver rebuilds the plain chunk
//! and checks it against its name exactly as it checks a piece
//! ([`crate::chunk::decode_patched`]); a rebuilt manifest goes through the same
//! signature and id checks as one sent whole.
//!
//! [`bases`] picks, for each chunk of a new release, the chunk of an older
//! release that covers the same files: the receiver names it in its request,
//! and a sender that also holds it may answer with a patch.

use crate::hash::Hash;
use crate::manifest::{ChunkRef, Manifest};
use std::collections::{HashMap, HashSet};
use zstd::zstd_safe;

/// zstd level of patches: they are small, so a better match finder costs little.
const PATCH_LEVEL: i32 = 3;

fn zstd_err(code: usize) -> std::io::Error {
    std::io::Error::other(zstd_safe::get_error_name(code))
}

/// The smallest window that keeps all of `base` in reach of the end of `target`.
fn window_log(base: usize, target: usize) -> u32 {
    let need = (base + target).max(1 << 10) as u64;
    (64 - (need - 1).leading_zeros()).clamp(10, 27)
}

/// `target` compressed against `base`: a zstd frame only a decoder given the
/// same `base` can read.
pub fn make(base: &[u8], target: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut cctx = zstd_safe::CCtx::create();
    cctx.set_parameter(zstd_safe::CParameter::CompressionLevel(PATCH_LEVEL))
        .map_err(zstd_err)?;
    cctx.set_parameter(zstd_safe::CParameter::WindowLog(window_log(
        base.len(),
        target.len(),
    )))
    .map_err(zstd_err)?;
    cctx.ref_prefix(base).map_err(zstd_err)?;
    let mut out = Vec::with_capacity(zstd_safe::compress_bound(target.len()));
    cctx.compress2(&mut out, target).map_err(zstd_err)?;
    Ok(out)
}

/// Rebuilds what [`make`] compressed, refusing to produce more than `limit`
/// bytes whatever the frame declares. The result is not verified: callers
/// check it as they check bytes sent whole.
pub fn apply(base: &[u8], patch: &[u8], limit: usize) -> Result<Vec<u8>, String> {
    let mut dctx = zstd_safe::DCtx::create();
    dctx.set_parameter(zstd_safe::DParameter::WindowLogMax(27))
        .map_err(|c| zstd_safe::get_error_name(c).to_string())?;
    dctx.ref_prefix(base)
        .map_err(|c| zstd_safe::get_error_name(c).to_string())?;
    let mut out = Vec::with_capacity(limit);
    dctx.decompress(&mut out, patch)
        .map_err(|c| zstd_safe::get_error_name(c).to_string())?;
    Ok(out)
}

/// For each chunk of `new` that `old` lacks, the chunk of `old` at the same
/// place in the same file: the one a patch is most likely small against.
/// The file that covers most of the new chunk decides; chunks of files that
/// `old` does not have get no base.
pub fn bases(new: &Manifest, old: &Manifest) -> Vec<Option<ChunkRef>> {
    let have: HashSet<Hash> = old.chunks.iter().map(|c| c.hash).collect();
    let old_files: HashMap<&str, (u64, u64)> = old
        .files()
        .filter(|f| f.2 > 0)
        .map(|(path, _, size, offset, _)| (path, (offset, size)))
        .collect();
    let old_ends = old.chunk_offsets();
    // Files of `new` in stream order (the stream is the files in path order).
    let files: Vec<(&str, u64, u64)> = new
        .files()
        .filter(|f| f.2 > 0)
        .map(|(path, _, size, offset, _)| (path, offset, size))
        .collect();
    let offsets = new.chunk_offsets();
    let mut first = 0;
    let mut out = Vec::with_capacity(new.chunks.len());
    for (i, c) in new.chunks.iter().enumerate() {
        let (start, end) = (offsets[i], offsets[i + 1]);
        if have.contains(&c.hash) {
            out.push(None);
            continue;
        }
        while first < files.len() && files[first].1 + files[first].2 <= start {
            first += 1;
        }
        let mut best: Option<(u64, u64)> = None; // (overlap, position in old)
        for &(path, offset, size) in files[first..].iter().take_while(|f| f.1 < end) {
            let Some(&(old_offset, old_size)) = old_files.get(path) else {
                continue;
            };
            let (lo, hi) = (start.max(offset), end.min(offset + size));
            let overlap = hi - lo;
            if best.is_none_or(|(o, _)| overlap > o) {
                let within = (lo + overlap / 2 - offset).min(old_size - 1);
                best = Some((overlap, old_offset + within));
            }
        }
        out.push(best.map(|(_, at)| {
            // The old chunk whose range holds `at`: the last start at or before it.
            let j = old_ends.partition_point(|&o| o <= at) - 1;
            old.chunks[j]
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_of_a_small_edit_is_small_and_rebuilds_the_target() {
        let base: Vec<u8> = (0..40_000u32)
            .flat_map(|i| (i.wrapping_mul(2_654_435_761) >> 13).to_le_bytes())
            .collect();
        let mut target = base.clone();
        target.splice(20_000..20_000, b"\n    edited_42();\n".iter().copied());
        let patch = make(&base, &target).unwrap();
        assert!(patch.len() < 200, "patch of {} bytes", patch.len());
        assert_eq!(apply(&base, &patch, target.len()).unwrap(), target);
        // Without the same base, or with too little room, it does not rebuild.
        let mut other = base.clone();
        other[30_000] ^= 1;
        assert_ne!(
            apply(&other, &patch, target.len()).ok(),
            Some(target.clone())
        );
        assert!(apply(&base, &patch, target.len() - 1).is_err());
        assert!(apply(&base, b"not a zstd frame", 1 << 20).is_err());
    }
}
