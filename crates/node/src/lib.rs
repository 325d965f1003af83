//! The long-running side of shoal: a [`Node`] holds the QUIC endpoint, the
//! connections to peers, the chunk store, and one swarm session per release being
//! fetched. Agents and seeds are both nodes: an agent also polls the tracker and
//! assembles what it fetched ([`agent`]); a seed also answers tracker requests
//! (through the [`Control`] trait, implemented by `shoal-seed`).
//!
//! Streams: the first bidirectional stream of a connection carries `Hello` both
//! ways, then the peers' `Bitfield` and `Have` messages. Every other stream is one
//! request and its answer: a chunk `Request` (answered by `Piece` or `Reject`) or
//! a tracker request. A malformed, oversized or out-of-protocol message closes
//! that connection; the node keeps running.

pub mod agent;
pub mod check;
pub mod client;
pub mod config;
pub mod hooks;
pub mod listing;
pub mod metrics;
mod node;
pub mod orders;
mod session;
mod slots;

pub use node::{Control, Counters, Node, NodeError, NodeOptions};
pub use shoal_swarm::Config as SwarmConfig;
