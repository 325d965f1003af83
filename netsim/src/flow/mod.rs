//! The flow-level model: the swarm's production decisions for fleets far
//! larger than one machine can run as QUIC endpoints, in virtual time.
//!
//! The packet-level runner ([`crate::run`]) is faithful but runs every host's
//! QUIC, hashing and disk work on this machine (in virtual time, so slowly
//! rather than wrongly), so a 2-core machine holds tens of hosts. At a thousand
//! hosts and more, what decides a swarm is which chunk is asked for, from
//! whom, and how the datacenter boundary is crossed: the tracker's peer lists,
//! the agent's reading of them and the [`shoal_swarm::Swarm`] of each host.
//! Those run here unchanged; bytes move as flows whose rates share the links
//! ([`fluid`]), and messages arrive after the topology's latency ([`engine`]).
//!
//! What it leaves out, on purpose: packet loss and congestion control
//! dynamics (rates are the max-min fair share at once), the CPU (hashing,
//! decompression, writing the tree: a host counts as done when it holds
//! every piece), and connection limits. The manifest's transfer is in: an
//! agent joins the swarm once its datacenter's manifest tree brought it. Pieces are
//! larger than real chunks at scale (`--piece`), with windows and slots
//! scaled to keep the same bytes in flight.

mod calendar;
pub mod engine;
pub mod fixed;
pub mod fluid;
mod usage;

use crate::bound::lower_bound;
use crate::net::{DcStats, HostStats, NetStats};
use crate::report::Report;
use crate::run::{Phase, StrategyRun};
use crate::strategy::Strategy;
use crate::summary::strategy_result;
use crate::topology::{HostRole, Topology};
pub use engine::{Measured, Params};
use shoal_proto::Role;
use shoal_seed::peers::{Candidate, Roster};
use std::time::Duration;

/// One flow-level run: a topology, a release of `bundle_bytes`, strategies.
#[derive(Clone, Debug)]
pub struct FlowScenario {
    pub topology: Topology,
    /// F: the bytes every target must receive.
    pub bundle_bytes: u64,
    /// Bytes per piece; `None`: [`default_piece`].
    pub piece: Option<u64>,
    /// Bytes of the signed manifest; `None`: [`default_manifest`].
    pub manifest: Option<u64>,
    pub strategies: Vec<Strategy>,
    pub time_limit: Duration,
    pub seed: u64,
}

/// Pieces of about real chunk size for small releases; for large ones, at
/// most about 512 pieces, so ten thousand hosts stay within two minutes.
/// Finer is closer to the agent, whose 32 KB chunks are passed on almost at
/// once, while a piece is passed on only when whole: at 10,000 hosts 4 MiB
/// pieces of a 1 GiB release gave 1.92 x T_lb, 2 MiB 1.60 (docs/netsim.md).
pub fn default_piece(f: u64) -> u64 {
    (f / 512).max(32 << 10)
}

/// The manifest of a release of `f` bytes in the packer's chunks of about
/// 32 KiB, each listed by its BLAKE3 name and length (35 bytes in postcard),
/// with no file entries (a flow release is one incompressible stream): 1.1 MB
/// at 1 GiB. A real tree's file entries add to it: the 64 MiB sample tree of
/// the packet model (about 4,500 files) has a 343 KB manifest.
pub fn default_manifest(f: u64) -> u64 {
    f.div_ceil(32 << 10) * 35
}

/// The time step: a quarter of a piece's time on the slowest host link,
/// within 1 to 100 ms. A piece's start waits for a step boundary, so this
/// costs up to a quarter of a piece's time per hop; smaller steps cost
/// simulation time in proportion (every busy host schedules once a step).
pub fn step_for(topo: &Topology, piece: u64) -> Duration {
    let slowest = topo
        .hosts
        .iter()
        .map(|h| h.upload.min(h.download))
        .min()
        .unwrap_or(1)
        .max(1);
    let t = piece as f64 / slowest as f64 / 4.0;
    Duration::from_secs_f64(t.clamp(0.001, 0.1))
}

/// Runs every strategy and reports them like a packet-level run.
pub fn run(s: &FlowScenario, progress: &dyn Fn(Strategy, f64, usize)) -> Report {
    let topo = &s.topology;
    let piece = s.piece.unwrap_or_else(|| default_piece(s.bundle_bytes));
    let params = Params {
        piece,
        step: step_for(topo, piece),
        time_limit: s.time_limit,
        seed: s.seed,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        manifest: s
            .manifest
            .unwrap_or_else(|| default_manifest(s.bundle_bytes)),
    };
    let bound = lower_bound(topo, s.bundle_bytes);
    let strategies = s
        .strategies
        .iter()
        .map(|&k| {
            let report = |t, done| progress(k, t, done);
            let m = match k {
                // One source per host: solved exactly, at any fleet size.
                Strategy::Central | Strategy::Fanout => fixed::simulate(
                    topo,
                    s.bundle_bytes,
                    k,
                    piece,
                    s.time_limit,
                    s.seed,
                    &report,
                ),
                Strategy::Shoal | Strategy::Bittorrent => {
                    engine::simulate(topo, s.bundle_bytes, k, &params, &report)
                }
            };
            let run = as_run(topo, k, &m);
            let mut r = strategy_result(
                topo,
                s.time_limit.as_secs_f64(),
                &run,
                s.bundle_bytes,
                bound.t_lb_s,
            );
            // Flows carry bytes, not datagrams: there is nothing to break down.
            r.cross_dc_in_parts.clear();
            r
        })
        .collect();
    Report {
        topology: topo.name.clone(),
        hosts_total: topo.targets().len(),
        release_bytes: s.bundle_bytes,
        bundle_bytes: s.bundle_bytes,
        chunks: s.bundle_bytes.div_ceil(piece.max(1)) as usize,
        bound: Some(bound),
        delta: None,
        strategies,
        cpu_busy: 0.0,
        cores: 0,
        model: "flow".into(),
    }
}

/// Bytes of a full QUIC packet that carry no piece: the short header (1),
/// quinn's 8-byte connection id, a 2-byte packet number, the AEAD tag (16)
/// and the STREAM frame's type, stream id, offset and length (8). The packet
/// model measured about 2.5% of framing in the bytes entering a datacenter.
const QUIC_FRAMING: u16 = 35;

/// Bytes on the wire per byte of piece or manifest, at the topology's MTU.
pub fn wire_factor(topo: &Topology) -> f64 {
    let mtu = f64::from(topo.mtu.max(QUIC_FRAMING + 1));
    mtu / (mtu - f64::from(QUIC_FRAMING))
}

/// Capacities of every link a transfer can use, in bytes of pieces per
/// second (the wire's rate less QUIC framing), indexed as [`path`] names
/// them: host uplinks, host downlinks, then each datacenter's WAN out and
/// WAN in.
fn link_caps(topo: &Topology) -> Vec<f64> {
    let w = wire_factor(topo);
    let mut caps = Vec::with_capacity(2 * topo.hosts.len() + 2 * topo.dcs.len());
    caps.extend(topo.hosts.iter().map(|h| h.upload as f64 / w));
    caps.extend(topo.hosts.iter().map(|h| h.download as f64 / w));
    caps.extend(topo.dcs.iter().map(|d| d.wan_out as f64 / w));
    caps.extend(topo.dcs.iter().map(|d| d.wan_in as f64 / w));
    caps
}

/// The links a transfer from host `from` to host `to` crosses: the uplink,
/// the downlink and, between datacenters, both WAN links.
fn path(topo: &Topology, from: usize, to: usize) -> fluid::Links {
    let (n, dcs) = (topo.hosts.len() as u32, topo.dcs.len() as u32);
    let (a, b) = (topo.hosts[from].dc as u32, topo.hosts[to].dc as u32);
    let (up, down) = (from as u32, n + to as u32);
    if a == b {
        fluid::Links::new(&[up, down])
    } else {
        fluid::Links::new(&[up, down, 2 * n + a, 2 * n + dcs + b])
    }
}

/// The tracker's roster of the whole fleet, as the seed builds it.
fn roster(topo: &Topology) -> Roster {
    let candidates = topo
        .hosts
        .iter()
        .map(|h| Candidate {
            host: h.name.clone(),
            dc: topo.dcs[h.dc].name.clone(),
            role: match h.role {
                HostRole::Seed => Role::Seed,
                HostRole::Target => Role::Agent,
            },
        })
        .collect();
    Roster::new(candidates, &"flow-release")
}

/// The report counts bytes on the wire, as the packet model's links do.
fn as_run(topo: &Topology, k: Strategy, m: &Measured) -> StrategyRun {
    let w = wire_factor(topo);
    let wire = |b: u64| (b as f64 * w).round() as u64;
    let hosts = m
        .sent
        .iter()
        .zip(&m.received)
        .map(|(&s, &r)| HostStats {
            sent_bytes: wire(s),
            recv_bytes: wire(r),
            ..HostStats::default()
        })
        .collect();
    let dcs = m
        .wan_in
        .iter()
        .zip(&m.wan_out)
        .map(|(&i, &o)| DcStats {
            wan_in_bytes: wire(i),
            wan_out_bytes: wire(o),
            ..DcStats::default()
        })
        .collect();
    StrategyRun {
        strategy: k,
        first: Phase {
            verified_at: m.verified_at.clone(),
            elapsed: Duration::from_secs_f64(m.simulated_s),
            net: NetStats {
                hosts,
                dcs,
                ..NetStats::default()
            },
        },
        delta: None,
        audited_ok: None,
        audit_findings: Vec::new(),
        cpu_busy: 0.0,
        rollback: None,
    }
}
