//! The properties the fuzz targets (`fuzz/`) check on arbitrary bytes, in one
//! place so that the replay of the fuzz corpora in the ordinary test suite
//! (`crates/proto/tests/fuzz_corpus.rs`) checks exactly the same. Each
//! function panics when a property fails; a returned value never means
//! failure.

use crate::{LockClaim, MAX_CONTROL, Msg, Order, frame_len};
use shoal_bundle::Hash;
use shoal_bundle::chunk::decode_chunk;
use shoal_bundle::manifest::{ChunkRef, Manifest, validate_path};
use shoal_bundle::signing::{TrustedKey, open_signed};
use std::path::{Component, Path};

/// The manifest decoder: what it accepts is valid and canonical.
pub fn manifest(data: &[u8]) {
    if let Ok(m) = Manifest::decode(data) {
        m.validate().expect("a decoded manifest is valid");
        let back = Manifest::decode(&m.encode()).expect("its own encoding decodes");
        assert_eq!(back, m);
    }
}

/// The signed envelope: nothing passes without a signature by `trusted`
/// (a key whose secret no input can know).
pub fn envelope(data: &[u8], trusted: &[TrustedKey]) {
    if let Ok(v) = open_signed(data, trusted) {
        panic!("a forged envelope was accepted: {}", v.id);
    }
}

/// Every wire decoder: what decodes encodes back to the same value, and the
/// frame length check never lets more than the limit through.
pub fn wire(data: &[u8]) {
    if let Ok(m) = Msg::from_body(data) {
        let frame = m.to_frame();
        let prefix: [u8; 4] = frame[..4].try_into().expect("4 bytes");
        assert_eq!(frame_len(prefix, usize::MAX).ok(), Some(frame.len() - 4));
        assert_eq!(Msg::from_body(&frame[4..]).expect("re-decodes"), m);
    }
    if let Ok(o) = Order::decode(data) {
        assert_eq!(Order::decode(&o.encode()).expect("re-decodes"), o);
    }
    if let Ok(c) = LockClaim::decode(data) {
        assert_eq!(LockClaim::decode(&c.encode()).expect("re-decodes"), c);
    }
    if let Some(prefix) = data.first_chunk::<4>()
        && let Ok(n) = frame_len(*prefix, MAX_CONTROL)
    {
        assert!(n <= MAX_CONTROL);
    }
}

/// Path validation: what it accepts is a plain relative path that stays
/// inside the directory it is joined to.
pub fn path(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if validate_path(s).is_ok() {
        assert!(!s.is_empty() && !s.starts_with('/') && !s.contains('\0'));
        for c in Path::new(s).components() {
            assert!(matches!(c, Component::Normal(_)), "{s:?} has {c:?}");
        }
        assert!(
            Path::new("/release").join(s).starts_with("/release/"),
            "{s:?}"
        );
        assert_eq!(
            s.split('/').count(),
            Path::new(s).components().count(),
            "{s:?}"
        );
    }
}

/// Bounded decompression: the first 3 bytes are the length the manifest
/// records (up to 16 MiB), the 4th names a wrong hash, the rest is the
/// compressed chunk. Never more output than the length, and only the chunk
/// whose hash it is named by is accepted.
pub fn chunk(data: &[u8]) {
    let Some(head) = data.first_chunk::<4>() else {
        return;
    };
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]);
    let compressed = &data[4..];
    let mut d = zstd::bulk::Decompressor::new().expect("zstd context");
    if let Ok(plain) = zstd::bulk::decompress(compressed, len as usize) {
        assert!(plain.len() <= len as usize);
        let want = ChunkRef {
            hash: Hash::of(&plain),
            len,
        };
        if let Ok(out) = decode_chunk(&want, compressed, &mut d) {
            assert_eq!(out, plain);
            assert_eq!(out.len(), len as usize);
        }
    }
    let wrong = ChunkRef {
        hash: Hash([head[3]; 32]),
        len,
    };
    if let Ok(out) = decode_chunk(&wrong, compressed, &mut d) {
        panic!("{} bytes accepted under a made-up name", out.len());
    }
}
