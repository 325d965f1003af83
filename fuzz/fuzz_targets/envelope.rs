//! See `shoal_proto::checks::envelope`: no envelope passes without the
//! trusted key's signature (a fresh key, whose secret no input can know).
#![no_main]

use shoal_bundle::signing::{DeployKey, TrustedKey};
use std::sync::OnceLock;

fn trusted() -> &'static [TrustedKey] {
    static KEYS: OnceLock<Vec<TrustedKey>> = OnceLock::new();
    KEYS.get_or_init(|| vec![DeployKey::generate().expect("a key").public()])
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_proto::checks::envelope(data, trusted()));
