//! The swarm's decisions, with no sockets and no clock of their own.
//!
//! A driver (the QUIC agent in production, the simulators in `netsim/`) feeds a
//! [`Swarm`] events — a peer joined, announced chunks, delivered or failed a piece;
//! time passed — and carries out the [`Action`]s it returns. Because nothing here
//! does I/O or reads the time, the same decisions are measured at any scale, in
//! real or virtual time.
//!
//! - which chunk: rarest first among the peer's chunks, then endgame duplicates;
//! - from whom: peers in the own datacenter first; a chunk crosses from another
//!   datacenter only when no peer here has it, and then only by the host the
//!   chunk is assigned to by rendezvous hashing over this datacenter's hosts (the
//!   others wait for it, for a bounded patience), so each chunk enters each
//!   datacenter about once and the crossing work is spread over its hosts;
//! - when: up to a per-peer window of requests in flight, halved for a peer whose
//!   request timed out; a peer that sent a bad piece is banned.

mod bitset;
mod inflight;
mod peers;
mod rate;
mod swarm;

pub use bitset::BitSet;
pub use rate::TokenBucket;
pub use swarm::{
    Action, ChunkIx, Config, PeerId, PeerStates, Stats, Swarm, chunk_group, host_key, mix,
    release_rank,
};
