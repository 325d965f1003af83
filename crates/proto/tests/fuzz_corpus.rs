//! Replays the fuzz targets' committed seeds (`fuzz/corpus/<target>/`; the
//! larger corpora a campaign grows stay in `fuzz/work/`) and their regressions (`fuzz/regressions/<target>/`,
//! every input that once failed) through the same checks the fuzz targets
//! run, on the stable toolchain, so a regression fails the ordinary suite.

use shoal_bundle::signing::DeployKey;
use shoal_proto::checks;
use std::path::{Path, PathBuf};

fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz");
    let mut out = Vec::new();
    for dir in ["corpus", "regressions"] {
        if let Ok(items) = std::fs::read_dir(fuzz.join(dir).join(target)) {
            out.extend(items.flatten().map(|e| e.path()).filter(|p| p.is_file()));
        }
    }
    out.sort();
    assert!(!out.is_empty(), "no corpus for {target}");
    out
}

fn replay(target: &str, check: impl Fn(&[u8])) -> usize {
    let files = inputs(target);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&data)));
        assert!(r.is_ok(), "{target}: {} fails its check", f.display());
    }
    files.len()
}

#[test]
fn every_corpus_input_passes_its_check() {
    let key = [DeployKey::generate().unwrap().public()];
    let n = replay("manifest", checks::manifest)
        + replay("envelope", |d| checks::envelope(d, &key))
        + replay("wire", checks::wire)
        + replay("path", checks::path)
        + replay("chunk", checks::chunk);
    assert!(n >= 30, "only {n} inputs");
}

/// The envelope check does catch what it is for: an envelope that verifies
/// under the trusted key makes it panic.
#[test]
fn the_envelope_check_can_fail() {
    let key = DeployKey::generate().unwrap();
    let envelope = std::fs::read(&inputs("envelope")[0]).unwrap();
    assert!(
        shoal_bundle::signing::open_signed(&envelope, &[key.public()]).is_err(),
        "the seed is signed by a key nobody here trusts"
    );
    let m =
        shoal_bundle::manifest::Manifest::decode(&std::fs::read(&inputs("manifest")[0]).unwrap())
            .unwrap();
    let (mine, _) = key.sign(&m, shoal_bundle::signing::Freshness::default());
    let r = std::panic::catch_unwind(|| checks::envelope(&mine, &[key.public()]));
    assert!(
        r.is_err(),
        "an envelope signed by the trusted key passed unnoticed"
    );
}
