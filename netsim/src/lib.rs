//! netsim: simulated datacenters carrying real QUIC packets.
//!
//! Each simulated host gets a quinn endpoint over [`socket::SimSocket`], a UDP
//! socket whose datagrams travel through [`net::Network`]: host uplinks and
//! downlinks, each datacenter's WAN links in and out, per-path latency, jitter
//! and loss, with drop-tail queues. The real seed, tracker, agent and swarm code
//! runs unchanged on top, in one process, in virtual time: a paused tokio clock
//! that quinn, the agents and the network all read, which moves only when every
//! task waits. CPU work takes no simulated time, so a saturated machine makes a
//! run take longer but does not change its figures (the wall-clock mode of
//! [`net::Network::new`] remains for the model's own tests).
//!
//! - [`topology`]: the TOML topologies under `netsim/topologies/`.
//! - [`bound`]: the lower bound T_lb of DESIGN.md, from a topology.
//! - [`net`], [`socket`]: the packet-level network model.
//! - [`strategy`]: shoal and the usual alternatives, on the same code.
//! - [`prepare`], [`run`]: certificates, trees and bundles; the runner.
//! - [`report`], [`chart`]: the table, JSON and SVG of a run.
//! - [`flow`]: the same swarm decisions for up to 10,000 hosts in virtual
//!   time, with flows instead of packets.

pub mod bound;
pub mod chart;
pub mod cpu;
mod error;
pub mod flow;
pub mod net;
pub mod prepare;
pub mod report;
pub mod run;
pub mod socket;
pub mod strategy;
pub mod summary;
pub mod topology;

pub use error::RunError;
