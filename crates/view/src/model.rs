//! The picture every live view draws, as plain data (serialized as JSON for the
//! web page's event stream).

use serde::{Deserialize, Serialize};

/// Where a host is with the release the view follows. One state per host, the
/// first that applies in this order: a host that cannot be heard from is
/// `Unreachable` whatever it last said, and a failed one stays `Failed` even
/// while it is switching back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Not heard from within the view's stale-after time.
    Unreachable,
    /// The release failed its switch, restart or health check here (marked
    /// bad), or the last audit of the host's tree found problems.
    Failed,
    /// A rollout step runs on it now, or its batch is switching.
    Switching,
    /// `current` is the release.
    Live,
    /// Installed and verified, not current.
    Staged,
    /// Taking the release's chunks from the swarm.
    Fetching,
    /// None of the above: it runs another release and is not getting this one.
    Stale,
}

impl HostState {
    pub const ALL: [HostState; 7] = [
        HostState::Fetching,
        HostState::Staged,
        HostState::Switching,
        HostState::Live,
        HostState::Failed,
        HostState::Stale,
        HostState::Unreachable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            HostState::Unreachable => "unreachable",
            HostState::Failed => "failed",
            HostState::Switching => "switching",
            HostState::Live => "live",
            HostState::Staged => "staged",
            HostState::Fetching => "fetching",
            HostState::Stale => "stale",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub host: String,
    pub dc: String,
    pub state: HostState,
    pub current: Option<String>,
    /// Holds the release installed and verified (staged or live), and is not
    /// failed or unreachable.
    pub verified: bool,
    /// Chunks of the release held (all of them once it is staged).
    pub chunks_have: u32,
    pub chunks_total: u32,
    pub last_seen_s: u64,
    /// Why it is failed, unreachable or stale; what it is doing when switching.
    pub note: Option<String>,
}

/// One datacenter's progress with the release, and its WAN traffic.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct DcView {
    pub dc: String,
    pub hosts: usize,
    /// Hosts holding a verified copy (staged or live).
    pub verified: usize,
    pub live: usize,
    pub chunks_have: u64,
    pub chunks_total: u64,
    /// The release's bytes held across the datacenter's hosts, counted by
    /// chunks (each chunk as the release's average chunk size).
    pub bytes_have: u64,
    pub bytes_total: u64,
    /// Chunk bytes per second entering from other datacenters, and leaving
    /// to them, over the last two snapshots.
    pub rate_in_bps: f64,
    pub rate_out_bps: f64,
}

impl DcView {
    /// Fraction of the release's chunks held, 0..=1 (1 for an empty one).
    pub fn fraction(&self) -> f64 {
        if self.chunks_total == 0 {
            if self.hosts == 0 || self.verified == self.hosts {
                1.0
            } else {
                0.0
            }
        } else {
            self.chunks_have as f64 / self.chunks_total as f64
        }
    }
}

/// The rollout the tracker last heard of.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RolloutView {
    pub rollout: String,
    pub purpose: String,
    pub who: String,
    pub phase: String,
    pub done: bool,
    /// 1-based number of the batch running now (or last run), and of all.
    pub batch: Option<usize>,
    pub batches: usize,
    pub batch_hosts: Vec<String>,
    pub next_hosts: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FleetView {
    /// The release this view measures hosts against.
    pub release: Option<String>,
    /// The release the last rollout set as the fleet's target.
    pub target: Option<String>,
    pub release_bytes: u64,
    pub release_chunks: u32,
    pub at_unix_ms: u64,
    /// Seconds since this view began following `release`.
    pub elapsed_s: f64,
    pub dcs: Vec<DcView>,
    pub hosts: Vec<HostView>,
    /// Hosts per state name, every state present (0 when none).
    pub counts: std::collections::BTreeMap<String, usize>,
    pub rollout: Option<RolloutView>,
    /// The most recent errors, newest last.
    pub errors: Vec<String>,
    /// Every agent is live on the release (and there is at least one).
    pub all_live: bool,
    /// (seconds, hosts verified) each time the count changed.
    pub curve: Vec<(f64, usize)>,
}
