//! Consecutive releases share almost all chunks: editing 1% of the files of a
//! 20,000-file tree must add at most 3% of the first release's stored bytes.

mod common;

use common::Fixture;
use shoal_sample::{Spec, edit, generate};

#[test]
fn one_percent_edit_adds_under_three_percent() {
    let fx = Fixture::new();
    let src = fx.src("tree");
    // The benchmark tree's shape (20,000 small source files and a few binaries),
    // with smaller binaries to spare CI's disk.
    let spec = Spec {
        files: 20_000,
        mean_file: 5_000,
        binaries: vec![96 << 20, 64 << 20, 32 << 20],
        seed: 11,
    };
    let stats = generate(&src, &spec).unwrap();
    let v1 = fx.pack(&src, "v1");
    let edited = edit(&src, &stats, 1.0, 3).unwrap();
    assert_eq!(edited.len(), 200);
    let v2 = fx.pack(&src, "v2");
    let ratio = v2.new_bytes_stored as f64 / v1.new_bytes_stored as f64;
    println!(
        "v1 stored {} bytes in {} chunks; v2 (200 files edited) added {} bytes in {} chunks = {:.2}%",
        v1.new_bytes_stored,
        v1.chunks,
        v2.new_bytes_stored,
        v2.new_chunks,
        100.0 * ratio
    );
    assert!(v2.new_chunks > 0, "edits must produce new chunks");
    assert!(ratio <= 0.03, "delta stored {:.2}% > 3%", 100.0 * ratio);
    // And the delta installs from only its new chunks' neighbourhood.
    fx.install("v1").unwrap();
    shoal_bundle::activate::activate(&fx.root, "v1").unwrap();
    let i2 = fx.install("v2").unwrap();
    println!(
        "install v2: {} chunks read of {}, {} bytes written, {} files linked",
        i2.chunks_read, v2.chunks, i2.bytes_written, i2.files_linked
    );
    assert!(i2.chunks_read <= 2 * v2.new_chunks + 10);
    assert_eq!(i2.files_linked as usize, stats.files - edited.len());
}
