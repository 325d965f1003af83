//! See `shoal_proto::checks::path`: the property this target checks on
//! arbitrary bytes, which the corpus replay test also runs.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| shoal_proto::checks::path(data));
