//! What a live view of the fleet shows, computed once for every kind of view.
//!
//! `shoal status --watch` (a terminal) and the seed's read-only web page both
//! poll the tracker's [`FleetState`](shoal_proto::FleetState) and hand it to a
//! [`Watcher`], which turns successive snapshots into a [`FleetView`]: each
//! host's state, per-datacenter progress and transfer rates, the rollout's
//! batch now and next, recent errors, and the completion-over-time curve that
//! [`chart`] draws the same way netsim draws its runs. Keeping this out of the
//! renderers means the terminal and the page cannot disagree about a host.

pub mod chart;
mod model;
mod watcher;

pub use model::{DcView, FleetView, HostState, HostView, RolloutView};
pub use watcher::{Watcher, clock, unix_ms};
