//! A delta travels as patches: every new chunk of a release that edits 1% of
//! its files finds a base in the previous release, and the patches against
//! those bases, plus the manifest's patch, come to about what changed.

mod common;

use common::Fixture;
use shoal_bundle::assemble::load_from_store;
use shoal_bundle::chunk::decode_patched;
use shoal_bundle::patch;
use shoal_sample::{Spec, edit, generate};
use std::collections::HashSet;

#[test]
fn a_one_percent_delta_travels_as_patches_about_the_size_of_its_edits() {
    let fx = Fixture::new();
    let src = fx.src("tree");
    let spec = Spec {
        files: 4_000,
        mean_file: 5_000,
        binaries: vec![4 << 20],
        seed: 5,
    };
    let stats = generate(&src, &spec).unwrap();
    fx.pack(&src, "v1");
    let edited = edit(&src, &stats, 1.0, 9).unwrap();
    fx.pack(&src, "v2");
    let mut changed = 0usize;
    for f in &edited {
        changed += zstd::bulk::compress(&std::fs::read(src.join(f)).unwrap(), 1)
            .unwrap()
            .len();
    }
    let v1 = load_from_store(&fx.store, "v1", &fx.trusted()).unwrap();
    let v2 = load_from_store(&fx.store, "v2", &fx.trusted()).unwrap();
    let old: HashSet<_> = v1.manifest.chunks.iter().map(|c| c.hash).collect();
    let bases = patch::bases(&v2.manifest, &v1.manifest);
    assert_eq!(bases.len(), v2.manifest.chunks.len());

    let mut d = zstd::bulk::Decompressor::new().unwrap();
    let (mut new_chunks, mut whole, mut patched) = (0, 0, 0);
    for (c, base) in v2.manifest.chunks.iter().zip(&bases) {
        if old.contains(&c.hash) {
            assert!(base.is_none(), "a chunk the old release has needs no base");
            continue;
        }
        new_chunks += 1;
        let base = base.expect("every edited chunk lies in a file v1 has");
        assert!(old.contains(&base.hash));
        let base_plain = fx.store.get(&base, &mut d).unwrap();
        let plain = fx.store.get(c, &mut d).unwrap();
        let p = patch::make(&base_plain, &plain).unwrap();
        // The receiver's side: rebuilt and verified against the name.
        assert_eq!(decode_patched(c, &base_plain, &p).unwrap(), plain);
        whole += fx.store.read_compressed(c).unwrap().len();
        patched += p.len();
    }
    let m = patch::make(&v1.signed_bytes, &v2.signed_bytes).unwrap();
    assert_eq!(
        patch::apply(&v1.signed_bytes, &m, v2.signed_bytes.len()).unwrap(),
        v2.signed_bytes
    );
    println!(
        "{} files edited ({changed} bytes compressed whole): {new_chunks} new chunks, \
         {whole} bytes whole, {patched} as patches; manifest {} bytes, patch {}",
        edited.len(),
        v2.signed_bytes.len(),
        m.len()
    );
    assert!(new_chunks >= edited.len() / 2);
    assert!(patched * 5 < whole, "patches {patched} vs whole {whole}");
    assert!(m.len() * 5 < v2.signed_bytes.len());
    assert!(
        patched + m.len() < changed * 13 / 10,
        "patches {patched} + manifest {} against {changed} changed",
        m.len()
    );
}

#[test]
fn a_patch_against_the_wrong_base_or_with_flipped_bits_is_refused() {
    let fx = Fixture::new();
    let src = fx.src("tree");
    let spec = Spec {
        files: 300,
        mean_file: 5_000,
        binaries: vec![],
        seed: 6,
    };
    let stats = generate(&src, &spec).unwrap();
    fx.pack(&src, "v1");
    edit(&src, &stats, 2.0, 1).unwrap();
    fx.pack(&src, "v2");
    let v1 = load_from_store(&fx.store, "v1", &fx.trusted()).unwrap();
    let v2 = load_from_store(&fx.store, "v2", &fx.trusted()).unwrap();
    let bases = patch::bases(&v2.manifest, &v1.manifest);
    let (i, base) = bases
        .iter()
        .enumerate()
        .find_map(|(i, b)| Some((i, (*b)?)))
        .expect("a new chunk");
    let c = v2.manifest.chunks[i];
    let mut d = zstd::bulk::Decompressor::new().unwrap();
    let base_plain = fx.store.get(&base, &mut d).unwrap();
    let p = patch::make(&base_plain, &fx.store.get(&c, &mut d).unwrap()).unwrap();
    // Another chunk as the base: rebuilt bytes that do not hash to the name.
    let other = v1
        .manifest
        .chunks
        .iter()
        .find(|o| o.hash != base.hash)
        .unwrap();
    let other_plain = fx.store.get(other, &mut d).unwrap();
    assert!(decode_patched(&c, &other_plain, &p).is_err());
    let mut bad = p.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    assert!(decode_patched(&c, &base_plain, &bad).is_err());
    assert!(decode_patched(&c, &base_plain, &p[..p.len() - 3]).is_err());
    assert!(decode_patched(&c, &base_plain, &p).is_ok());
}
