//! The deploy host's rollout: switching a fleet to a release without an outage.
//!
//! Staging a release everywhere is the swarm's job; this crate does the other
//! half. [`run`] takes the cluster's deploy lock at the tracker, waits until
//! every live agent has the release installed and verified, then sends each
//! host a signed order to switch, batch by batch ([`plan`]): the canaries
//! first and alone, a pause, then batches of a size or a percentage, with a
//! pause between them. Each agent runs its hooks around the switch (see
//! `shoal_node::orders`) and answers with what happened. A failed host goes
//! back to its previous release by itself; when failures reach the limit, the
//! rollout stops and rolls back every host it switched. An interrupt stops
//! new batches and lets the running one finish. Every step goes to the deploy
//! log the tracker keeps.

pub mod audit;
pub mod control;
pub mod plan;
pub mod stale;

pub use control::{Event, Goal, HostResult, Options, Report, RolloutError, run};
pub use plan::BatchSize;
