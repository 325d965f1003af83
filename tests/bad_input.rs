//! Bad input never panics and never changes the target root.
//!
//! Every case starts from a root with a good release "v1" installed and active, then
//! tries to install a "v2" the way the CLI does (`load_from_store` + `install`) from a
//! forged manifest, a damaged store, or a root that cannot take it. Each must fail with
//! a typed error whose message names what is wrong, and afterwards the root must be
//! exactly as it was: `current` still on v1, v1 audits clean, no partial tree, no v2
//! directory or manifest, nothing else changed.

mod common;

use common::{Fixture, make_executable, snapshot, write_tree};
use shoal_bundle::activate::activate;
use shoal_bundle::assemble::{InstallOptions, InstallReport, install, load_from_store};
use shoal_bundle::audit::audit_release;
use shoal_bundle::chunk::{ChunkParams, compress, compressed_bound};
use shoal_bundle::error::{ChunkError, ManifestError};
use shoal_bundle::manifest::{ChunkRef, Entry, EntryKind, MANIFEST_VERSION, Manifest};
use shoal_bundle::signing::{DeployKey, SIGNED_VERSION, SignedManifest};
use shoal_bundle::{Error, Hash, Result};
use std::fs;
use std::path::Path;

type Snapshot = Vec<(String, String, Vec<u8>, bool)>;

/// A root with "v1" installed and activated, and a snapshot of the whole root.
struct Setup {
    fx: Fixture,
    before: Snapshot,
    v1_chunks: Vec<Hash>,
}

fn setup() -> Setup {
    let fx = Fixture::new();
    let src = fx.src("v1");
    write_tree(
        &src,
        &[
            ("bin/app", b"#!/bin/sh\necho v1\n"),
            ("etc/app.conf", b"mode = production\n"),
            ("README", b"release one\n"),
            ("empty", b""),
        ],
    );
    make_executable(&src.join("bin/app"));
    fs::create_dir(src.join("var")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("hostname")).unwrap();
    fx.pack(&src, "v1");
    fx.install("v1").unwrap();
    assert!(activate(&fx.root, "v1").unwrap());
    let v1_chunks = load_from_store(&fx.store, "v1", &fx.trusted())
        .unwrap()
        .manifest
        .chunks
        .iter()
        .map(|c| c.hash)
        .collect();
    let before = snapshot(fx.root.path());
    Setup {
        fx,
        before,
        v1_chunks,
    }
}

/// Installs a tag from the fixture's store as the CLI does: read and verify the
/// signed manifest the store holds, then assemble.
fn attempt_tag(fx: &Fixture, tag: &str, opts: InstallOptions) -> Result<InstallReport> {
    let release = load_from_store(&fx.store, tag, &fx.trusted())?;
    install(&fx.root, &fx.store, &release, opts)
}

fn attempt(fx: &Fixture) -> Result<InstallReport> {
    attempt_tag(fx, "v2", InstallOptions::default())
}

fn names(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// The root is exactly as `setup` left it.
fn assert_unchanged(s: &Setup) {
    let root = &s.fx.root;
    assert_eq!(root.current().unwrap().as_deref(), Some("v1"));
    let audit = audit_release(root, None).unwrap();
    assert_eq!(audit.tag, "v1");
    assert!(audit.is_clean(), "v1 no longer audits clean: {audit:?}");
    // No `.partial-*`, no `.gc-*`, no v2.
    assert_eq!(names(&root.releases_dir()), ["v1"]);
    assert_eq!(names(&root.manifests_dir()), ["v1.manifest"]);
    assert!(!root.release_dir("v2").exists());
    assert!(!root.manifest_file("v2").exists());
    assert_eq!(root.installed().unwrap(), ["v1"]);
    assert_eq!(root.history().unwrap(), ["v1"]);
    assert!(
        snapshot(root.path()) == s.before,
        "the root's contents changed"
    );
}

/// Checks the error's variant and that its message holds every word, then that the
/// root is unchanged.
fn expect_refused(
    s: &Setup,
    result: Result<InstallReport>,
    variant: impl Fn(&Error) -> bool,
    words: &[&str],
) -> Error {
    let err = match result {
        Ok(r) => panic!("bad input was installed: {r:?}"),
        Err(e) => e,
    };
    assert!(variant(&err), "unexpected error variant: {err:?}");
    let msg = err.to_string();
    for w in words {
        assert!(msg.contains(w), "error {msg:?} does not mention {w:?}");
    }
    assert_unchanged(s);
    err
}

// ---------------------------------------------------------------------------
// Forged manifests

fn file(path: &str, offset: u64, body: &[u8]) -> Entry {
    Entry {
        path: path.into(),
        kind: EntryKind::File {
            executable: false,
            size: body.len() as u64,
            offset,
            hash: Hash::of(body),
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

/// A "v2" manifest built by hand whose stream is `stream`, stored in the store as
/// one real chunk, so that the only thing wrong with it is what a test puts there.
fn forged(fx: &Fixture, entries: Vec<Entry>, stream: &[u8]) -> Manifest {
    let mut chunks = Vec::new();
    if !stream.is_empty() {
        let hash = Hash::of(stream);
        let mut c = zstd::bulk::Compressor::new(1).unwrap();
        fx.store
            .put_compressed(&hash, &compress(&mut c, stream).unwrap())
            .unwrap();
        chunks.push(ChunkRef {
            hash,
            len: stream.len() as u32,
        });
    }
    Manifest {
        version: MANIFEST_VERSION,
        tag: "v2".into(),
        chunking: ChunkParams::default(),
        entries,
        chunks,
    }
}

/// A well-formed hand-made v2: a directory, files in and beside it, a symlink to
/// outside. The forgeries below are variations of it.
fn good_v2(fx: &Fixture) -> Manifest {
    forged(
        fx,
        vec![
            dir("d"),
            file("d/x", 0, b"hello"),
            link("l", "/tmp"),
            file("z", 5, b"world"),
        ],
        b"helloworld",
    )
}

/// A counter above anything packed in the fixture, and no expiry in sight.
fn fresh() -> shoal_bundle::signing::Freshness {
    shoal_bundle::signing::Freshness {
        counter: u64::MAX / 2,
        expires_unix: u64::MAX,
    }
}

/// Puts envelope bytes where `shoal pack` would have put v2's signed manifest.
fn put_envelope(fx: &Fixture, bytes: &[u8]) {
    fs::write(fx.store.manifest_path("v2"), bytes).unwrap();
}

fn put_signed(fx: &Fixture, m: &Manifest) -> Vec<u8> {
    let (bytes, _) = fx.key.sign(m, fresh());
    put_envelope(fx, &bytes);
    bytes
}

fn bad_entry(path: &'static str, reason: &'static str) -> impl Fn(&Error) -> bool {
    move |e| {
        matches!(e, Error::Manifest(ManifestError::BadEntry { path: p, reason: r })
            if p == path && r.contains(reason))
    }
}

/// The control for every forgery: the unforged manifest installs and audits clean.
#[test]
fn hand_made_manifest_installs() {
    let s = setup();
    put_signed(&s.fx, &good_v2(&s.fx));
    let r = attempt(&s.fx).unwrap();
    assert_eq!(r.files, 2);
    assert!(audit_release(&s.fx.root, Some("v2")).unwrap().is_clean());
    let d = s.fx.root.release_dir("v2");
    assert_eq!(fs::read(d.join("d/x")).unwrap(), b"hello");
    assert_eq!(fs::read_link(d.join("l")).unwrap(), Path::new("/tmp"));
}

#[test]
fn dot_dot_in_path() {
    let s = setup();
    let m = forged(&s.fx, vec![file("../escape", 0, b"pwned")], b"pwned");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("../escape", ".."),
        &["../escape", "'..'"],
    );
    assert!(
        !s.fx
            .root
            .releases_dir()
            .parent()
            .unwrap()
            .join("escape")
            .exists()
    );

    // Also in the middle of a path, under a real directory.
    let m = forged(
        &s.fx,
        vec![dir("a"), file("a/../../escape", 0, b"pwned")],
        b"pwned",
    );
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("a/../../escape", ".."),
        &["a/../../escape"],
    );
}

#[test]
fn absolute_path() {
    let s = setup();
    let target = s.fx.dir.path().join("escape");
    let target = target.to_str().unwrap();
    let m = forged(&s.fx, vec![file(target, 0, b"pwned")], b"pwned");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        move |e| {
            matches!(e, Error::Manifest(ManifestError::BadEntry { path, reason })
                if path == target && reason.contains("absolute"))
        },
        &[target, "absolute"],
    );
    assert!(!Path::new(target).exists());
}

#[test]
fn path_through_a_symlink() {
    let s = setup();
    // A symlink to outside the release, then a file and a directory "inside" it.
    let outside = s.fx.dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    let out = outside.to_str().unwrap();
    let m = forged(
        &s.fx,
        vec![link("l", out), file("l/x", 0, b"pwned")],
        b"pwned",
    );
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("l/x", "parent"),
        &["l/x", "parent"],
    );

    let m = forged(&s.fx, vec![link("l", out), dir("l/d")], b"");
    put_signed(&s.fx, &m);
    expect_refused(&s, attempt(&s.fx), bad_entry("l/d", "parent"), &["l/d"]);

    // A relative symlink to a directory of the release is no way through either.
    let m = forged(
        &s.fx,
        vec![dir("d"), link("l", "d"), file("l/x", 0, b"pwned")],
        b"pwned",
    );
    put_signed(&s.fx, &m);
    expect_refused(&s, attempt(&s.fx), bad_entry("l/x", "parent"), &["l/x"]);
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn path_under_a_regular_file() {
    let s = setup();
    let m = forged(&s.fx, vec![file("f", 0, b"a"), file("f/x", 1, b"b")], b"ab");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("f/x", "parent"),
        &["f/x", "parent"],
    );

    // A path whose parent is not listed at all.
    let m = forged(&s.fx, vec![file("nodir/x", 0, b"a")], b"a");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("nodir/x", "parent"),
        &["nodir/x"],
    );
}

#[test]
fn duplicate_paths() {
    let s = setup();
    let m = forged(&s.fx, vec![file("a", 0, b"x"), file("a", 1, b"y")], b"xy");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("a", "duplicate"),
        &["\"a\"", "duplicate"],
    );

    // The same path as a directory and as a symlink.
    let m = forged(&s.fx, vec![dir("a"), link("a", "/tmp")], b"");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("a", "duplicate"),
        &["duplicate"],
    );
}

#[test]
fn unsorted_entries() {
    let s = setup();
    let m = forged(&s.fx, vec![file("b", 0, b"x"), file("a", 1, b"y")], b"xy");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        bad_entry("a", "sorted"),
        &["\"a\"", "sorted"],
    );

    // `d/x` must come after `d-x` (bytewise: '-' < '/').
    let m = forged(
        &s.fx,
        vec![dir("d"), file("d/x", 0, b"x"), file("d-x", 1, b"y")],
        b"xy",
    );
    put_signed(&s.fx, &m);
    expect_refused(&s, attempt(&s.fx), bad_entry("d-x", "sorted"), &["d-x"]);
}

#[test]
fn unknown_manifest_version() {
    let s = setup();
    let mut m = good_v2(&s.fx);
    m.version = MANIFEST_VERSION + 1;
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| {
            matches!(e, Error::Manifest(ManifestError::UnsupportedVersion { what: "manifest", found, .. })
                if *found == MANIFEST_VERSION + 1)
        },
        &["manifest format version 2"],
    );
}

fn decode_envelope(bytes: &[u8]) -> SignedManifest {
    postcard::from_bytes(bytes).unwrap()
}

fn encode_envelope(env: &SignedManifest) -> Vec<u8> {
    postcard::to_stdvec(env).unwrap()
}

#[test]
fn unknown_envelope_version() {
    let s = setup();
    let mut env = decode_envelope(&put_signed(&s.fx, &good_v2(&s.fx)));
    env.version = SIGNED_VERSION + 1;
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| {
            matches!(e, Error::Manifest(ManifestError::UnsupportedVersion { what: "signed manifest", found, .. })
                if *found == SIGNED_VERSION + 1)
        },
        &["signed manifest format version 3"],
    );
}

fn bad_signature(e: &Error) -> bool {
    matches!(e, Error::Manifest(ManifestError::BadSignature))
}

#[test]
fn manifest_changed_after_signing() {
    let s = setup();
    let good = good_v2(&s.fx);
    let mut env = decode_envelope(&put_signed(&s.fx, &good));
    // A valid manifest, but not the one that was signed: `z` now says "w0rld".
    let mut changed = forged(
        &s.fx,
        vec![
            dir("d"),
            file("d/x", 0, b"hello"),
            link("l", "/tmp"),
            file("z", 5, b"w0rld"),
        ],
        b"hellow0rld",
    );
    changed.tag = good.tag.clone();
    env.manifest = changed.encode();
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature"]);

    // One flipped byte inside the signed manifest bytes of the raw envelope.
    let mut bytes = put_signed(&s.fx, &good);
    let encoded = good.encode();
    let at = bytes
        .windows(encoded.len())
        .position(|w| w == encoded)
        .expect("the envelope holds the manifest");
    bytes[at + encoded.len() - 3] ^= 0x01;
    put_envelope(&s.fx, &bytes);
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature"]);
}

#[test]
fn corrupted_signature() {
    let s = setup();
    let mut env = decode_envelope(&put_signed(&s.fx, &good_v2(&s.fx)));
    env.signature[10] ^= 0x40;
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature"]);
}

#[test]
fn missing_signature() {
    let s = setup();
    let mut env = decode_envelope(&put_signed(&s.fx, &good_v2(&s.fx)));
    env.signature.clear();
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature", "missing"]);

    // 64 zero bytes are no signature either.
    env.signature = vec![0; 64];
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature"]);
}

#[test]
fn signed_by_an_untrusted_key() {
    let s = setup();
    let stranger = DeployKey::generate().unwrap();
    let (bytes, _) = stranger.sign(&good_v2(&s.fx), fresh());
    put_envelope(&s.fx, &bytes);
    let fp = stranger.public().fingerprint();
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| matches!(e, Error::Manifest(ManifestError::UntrustedKey(k)) if *k == fp),
        &["not trusted", &fp],
    );

    // A trusted key's name on a stranger's signature.
    let mut env = decode_envelope(&bytes);
    env.key = s.fx.key.public().0.to_bytes();
    put_envelope(&s.fx, &encode_envelope(&env));
    expect_refused(&s, attempt(&s.fx), bad_signature, &["signature"]);
}

#[test]
fn truncated_or_garbage_envelope() {
    let s = setup();
    let bytes = put_signed(&s.fx, &good_v2(&s.fx));
    for bad in [
        &bytes[..bytes.len() / 2],
        &bytes[..1],
        &[][..],
        &[2, 0xff, 0xff][..],
    ] {
        put_envelope(&s.fx, bad);
        expect_refused(
            &s,
            attempt(&s.fx),
            |e| matches!(e, Error::Manifest(ManifestError::Decode(_))),
            &["cannot be decoded"],
        );
    }
}

#[test]
fn manifest_stored_under_another_tag() {
    let s = setup();
    // Correctly signed, but it is v1's manifest (another tree) in v2's place.
    let mut m = good_v2(&s.fx);
    m.tag = "v1".into();
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| matches!(e, Error::Manifest(ManifestError::Inconsistent(_))),
        &["\"v1\"", "\"v2\""],
    );
}

#[test]
fn file_hash_disagrees_with_chunks() {
    let s = setup();
    let mut m = good_v2(&s.fx);
    let EntryKind::File { hash, .. } = &mut m.entries[1].kind else {
        unreachable!()
    };
    *hash = Hash::of(b"something else");
    put_signed(&s.fx, &m);
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| matches!(e, Error::FileMismatch { path, .. } if path == "d/x"),
        &["d/x", "hashes to"],
    );
}

#[test]
fn empty_file_with_wrong_hash() {
    let s = setup();
    let mut m = good_v2(&s.fx);
    m.entries.push(Entry {
        path: "zz-empty".into(),
        kind: EntryKind::File {
            executable: false,
            size: 0,
            offset: 10,
            hash: Hash::of(b"not empty"),
        },
    });
    put_signed(&s.fx, &m);
    let result = attempt(&s.fx);
    if result.is_ok() {
        let audit = audit_release(&s.fx.root, Some("v2")).unwrap();
        panic!("installed a tree that does not match its manifest; audit says {audit:?}");
    }
    expect_refused(&s, result, |_| true, &["zz-empty"]);
}

// ---------------------------------------------------------------------------
// A damaged store

/// `len` bytes that do not compress, different for every seed.
fn noise(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0; len];
    blake3::Hasher::new()
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Packs a real v2 that shares nothing with v1, spanning several chunks, and returns its chunks.
fn pack_v2(s: &Setup) -> Vec<ChunkRef> {
    let src = s.fx.src("v2");
    write_tree(
        &src,
        &[
            ("big.bin", &noise("big", 400 << 10)),
            ("bin/app", b"#!/bin/sh\necho v2\n"),
            ("etc/app.conf", b"mode = canary\n"),
            ("small.txt", &noise("small", 700)),
        ],
    );
    s.fx.pack(&src, "v2");
    let chunks = load_from_store(&s.fx.store, "v2", &s.fx.trusted())
        .unwrap()
        .manifest
        .chunks;
    assert!(chunks.len() >= 4, "v2 should span several chunks");
    for c in &chunks {
        assert!(
            !s.v1_chunks.contains(&c.hash),
            "v2 must need all its chunks"
        );
    }
    chunks
}

fn plain_of(s: &Setup, c: &ChunkRef) -> Vec<u8> {
    let mut d = zstd::bulk::Decompressor::new().unwrap();
    s.fx.store.get(c, &mut d).unwrap()
}

fn zstd_frame(plain: &[u8]) -> Vec<u8> {
    let mut c = zstd::bulk::Compressor::new(1).unwrap();
    compress(&mut c, plain).unwrap()
}

fn chunk_error(hash: Hash, want: fn(&ChunkError) -> bool) -> impl Fn(&Error) -> bool {
    move |e| {
        let Error::Chunk(c) = e else { return false };
        let named = match c {
            ChunkError::Missing(h) => *h,
            ChunkError::Oversized { hash, .. }
            | ChunkError::Undecodable { hash, .. }
            | ChunkError::WrongLength { hash, .. }
            | ChunkError::WrongHash { hash, .. } => *hash,
        };
        named == hash && want(c)
    }
}

#[test]
fn damaged_store_control() {
    let s = setup();
    pack_v2(&s);
    let r = attempt(&s.fx).unwrap();
    assert_eq!(r.files_linked, 0);
    assert!(audit_release(&s.fx.root, Some("v2")).unwrap().is_clean());
}

#[test]
fn chunk_bytes_do_not_match_name() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[1];
    let mut other = plain_of(&s, &c);
    other[100] ^= 0x01; // same length, other bytes
    fs::write(s.fx.store.chunk_path(&c.hash), zstd_frame(&other)).unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| matches!(e, ChunkError::WrongHash { .. })),
        &[&hex, "not to the chunk's name"],
    );
}

#[test]
fn chunk_decompresses_to_another_length() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[2];
    let plain = plain_of(&s, &c);
    fs::write(
        s.fx.store.chunk_path(&c.hash),
        zstd_frame(&plain[..plain.len() - 1]),
    )
    .unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| matches!(e, ChunkError::WrongLength { .. })),
        &[&hex, "decompressed to"],
    );
}

#[test]
fn truncated_chunk() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[0];
    let path = s.fx.store.chunk_path(&c.hash);
    let bytes = fs::read(&path).unwrap();
    fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| {
            matches!(
                e,
                ChunkError::Undecodable { .. } | ChunkError::WrongLength { .. }
            )
        }),
        &[&hex],
    );
}

#[test]
fn empty_chunk_file() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[0];
    fs::write(s.fx.store.chunk_path(&c.hash), b"").unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| {
            matches!(
                e,
                ChunkError::Undecodable { .. } | ChunkError::WrongLength { .. }
            )
        }),
        &[&hex],
    );
}

/// 64 MiB of zeros in one zstd frame: a few KiB on disk.
fn bomb() -> Vec<u8> {
    zstd_frame(&vec![0u8; 64 << 20])
}

#[test]
fn decompression_bomb_under_a_small_chunk() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = *chunks.iter().min_by_key(|c| c.len).unwrap();
    fs::write(s.fx.store.chunk_path(&c.hash), bomb()).unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| {
            matches!(
                e,
                ChunkError::Undecodable { .. } | ChunkError::Oversized { .. }
            )
        }),
        &[&hex],
    );
}

#[test]
fn decompression_bomb_within_the_size_bound() {
    // Under the largest chunk the bomb is smaller than the compressed bound, so it is
    // read and must be stopped by the recorded length while decompressing.
    let s = setup();
    let chunks = pack_v2(&s);
    let c = *chunks.iter().max_by_key(|c| c.len).unwrap();
    let bomb = bomb();
    assert!((bomb.len() as u64) < compressed_bound(c.len));
    fs::write(s.fx.store.chunk_path(&c.hash), bomb).unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| matches!(e, ChunkError::Undecodable { .. })),
        &[&hex, "does not decompress within its recorded length"],
    );
}

#[test]
fn oversized_chunk_file() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[1];
    let bound = compressed_bound(c.len);
    fs::write(
        s.fx.store.chunk_path(&c.hash),
        noise("oversized", bound as usize + 1000),
    )
    .unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| matches!(e, ChunkError::Oversized { .. })),
        &[&hex, "exceeds the bound"],
    );
}

#[test]
fn missing_chunk() {
    let s = setup();
    let chunks = pack_v2(&s);
    let c = chunks[chunks.len() - 1];
    fs::remove_file(s.fx.store.chunk_path(&c.hash)).unwrap();
    let hex = c.hash.to_hex();
    expect_refused(
        &s,
        attempt(&s.fx),
        chunk_error(c.hash, |e| matches!(e, ChunkError::Missing(_))),
        &[&hex, "missing"],
    );
}

// ---------------------------------------------------------------------------
// A root that cannot take the release

#[test]
fn reserve_larger_than_the_disk() {
    let s = setup();
    pack_v2(&s);
    let opts = InstallOptions {
        reserve: u64::MAX / 4,
        ..Default::default()
    };
    expect_refused(
        &s,
        attempt_tag(&s.fx, "v2", opts),
        |e| matches!(e, Error::InsufficientSpace { reserve, .. } if *reserve == u64::MAX / 4),
        &["not enough free space", "must stay free"],
    );
}

#[test]
fn tag_installed_with_other_content() {
    let s = setup();
    let installed = s.fx.root.installed_id("v1").unwrap();
    let src = s.fx.src("v1-again");
    write_tree(&src, &[("README", b"release one, rebuilt differently\n")]);
    let wanted: Hash = s.fx.pack(&src, "v1").id.parse().unwrap();
    assert_ne!(installed, wanted);
    let installed_hex = installed.to_hex();
    expect_refused(
        &s,
        attempt_tag(&s.fx, "v1", InstallOptions::default()),
        |e| {
            matches!(e, Error::TagConflict { tag, installed: i, wanted: w }
                if tag == "v1" && *i == installed && *w == wanted)
        },
        &["\"v1\"", "already installed", &installed_hex],
    );
}

#[test]
fn envelope_with_trailing_bytes() {
    let s = setup();
    let mut bytes = put_signed(&s.fx, &good_v2(&s.fx));
    bytes.extend_from_slice(b"trailing garbage");
    put_envelope(&s.fx, &bytes);
    expect_refused(
        &s,
        attempt(&s.fx),
        |e| matches!(e, Error::Manifest(ManifestError::Decode(_))),
        &["trailing"],
    );
}

#[test]
fn modified_current_release_does_not_block_the_next() {
    let s = setup();
    let src = s.fx.src("v2");
    write_tree(&src, &[("README", b"release one\n"), ("new", b"in v2\n")]);
    s.fx.pack(&src, "v2");
    // Someone edits v1's README in place, keeping its size.
    let p = s.fx.root.release_dir("v1").join("README");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(&p, b"release 0ne\n").unwrap();
    let audit = audit_release(&s.fx.root, None).unwrap();
    assert_eq!(audit.modified.len(), 1, "{audit:?}");
    match attempt(&s.fx) {
        Ok(_) => assert!(audit_release(&s.fx.root, Some("v2")).unwrap().is_clean()),
        Err(e) => {
            let v1_readme = p.display().to_string();
            assert!(
                e.to_string().contains(&v1_readme),
                "the error blames the new release, not the modified {v1_readme}: {e}"
            );
        }
    }
}
