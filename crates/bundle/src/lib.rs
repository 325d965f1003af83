//! shoal's release bundles, on one host and with no networking.
//!
//! A release directory is packed into a [`manifest::Manifest`] (every entry with its
//! place in the tree's canonical byte stream) and content-addressed chunks of that
//! stream, cut by FastCDC, named by the BLAKE3 hash of their plain bytes and stored
//! zstd-compressed in a [`store::ChunkStore`]. The deploy key signs the manifest
//! ([`signing`]); its BLAKE3 hash is the release id.
//!
//! On a target, [`assemble`] rebuilds the tree under a name no finished release can
//! have, checks every chunk ([`chunk::decode_chunk`]) and every file hash, and only
//! then renames it into `releases/`. [`activate`] is the one place `current` is
//! switched. [`audit`] re-checks an installed tree against its manifest, [`gc`] drops
//! old releases and unused chunks.
//!
//! Where to look:
//! - a chunk is verified in [`chunk::decode_chunk`] (or [`chunk::decode_patched`]
//!   when it came as a [`patch`] against a chunk this host holds);
//! - an untrusted manifest is decoded, its signature checked and its paths validated
//!   in [`signing::open_signed`] and [`manifest::Manifest::validate`];
//! - `current` is switched in [`activate::switch_current`].

pub mod activate;
pub mod assemble;
pub mod audit;
pub mod chunk;
pub mod error;
pub mod gc;
pub mod hash;
pub mod layout;
pub mod lease;
pub mod manifest;
pub mod pack;
pub mod patch;
pub mod releases;
mod scan;
pub mod signing;
mod space;
pub mod store;
pub mod tag;
#[cfg(test)]
mod testutil;

pub use error::{Error, Result};
pub use hash::Hash;
pub use layout::Root;
pub use manifest::Manifest;
pub use store::ChunkStore;

/// Reports progress in bytes; shared between worker threads.
pub type Progress<'a> = &'a (dyn Fn(u64) + Sync);

/// A progress sink that ignores everything.
pub fn no_progress(_: u64) {}
