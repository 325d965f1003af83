//! One strategy's distribution in virtual time: the tracker's peer lists
//! (`shoal_seed::peers`), each agent's reading of them (`shoal_node::listing`)
//! and each agent's [`Swarm`] are the production code; what they would send
//! travels as timed events, and each piece as a flow whose rate follows from
//! the links it shares ([`super::fluid`]).
//!
//! Time advances in fixed steps. Within a step, events (a request arriving, a
//! `Have`, a piece delivered) are handled at their own times; what they tell a
//! host's swarm is queued as that host's calls ([`Op`], each with its time),
//! and at the step's end every host that saw an event takes its calls and
//! schedules once, as the agent's session does after a batch of events, with
//! the hosts spread over the machine's cores; uploaders with a free slot then
//! start their next queued request. Flows then advance by one step at their current
//! rates; a flow that ends inside the step ends at its exact time.

use super::calendar::Calendar;
use super::fluid::{Fluid, Links};
use super::usage::LinkUse;
use crate::strategy::Strategy;
use crate::topology::{HostRole, Topology};
use shoal_proto::PeerInfo;
use shoal_swarm::{Action, BitSet, ChunkIx, Config, PeerStates, Swarm};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;

/// What one run is asked to do.
#[derive(Clone, Debug)]
pub struct Params {
    /// Bytes of each piece on the wire (the last one may be shorter).
    pub piece: u64,
    pub step: Duration,
    pub time_limit: Duration,
    pub seed: u64,
    /// Threads that run the hosts' decisions each step; the result does not
    /// depend on it.
    pub threads: usize,
    /// Bytes of the signed manifest, which every agent fetches before it
    /// joins the swarm, down its datacenter's binary tree as the agent does
    /// (`shoal_node::agent::fetch_manifest`); 0: every agent joins at once.
    pub manifest: u64,
}

/// The bytes of a chunk the production swarm is tuned for: windows, slots and
/// timeouts are given in requests of about this size, so the flow model
/// scales them to its pieces to keep the same bytes in flight.
const TUNED_CHUNK: f64 = 32.0 * 1024.0;
/// The agent's and seed's upload slots (`upload_slots` in their configs).
const SLOTS: usize = 32;
/// How often each host's swarm ticks (timeouts, patience). The agent ticks
/// every 50 ms; ticking ten thousand swarms that often buys nothing here,
/// since a tick only matters once a timeout or a patience of seconds is due.
const TICK: Duration = Duration::from_secs(1);
/// Fewer dirty hosts than this schedule on one thread: a thread costs more
/// than their decisions.
const PARALLEL_FROM: usize = 64;
/// How long an uploader holds new pieces back while a manifest goes out from
/// it (the node's `MANIFEST_FIRST_MAX`).
const MANIFEST_FIRST: Duration = Duration::from_millis(500);
/// The release's name in the rendezvous order of the manifest tree.
const RELEASE: &str = "flow-release";
/// The node's `LOCAL_WAIT_MAX`: a local request that waited this long is
/// served before requests from across.
const LOCAL_WAIT_MAX: Duration = Duration::from_secs(1);

/// What one strategy's run measured.
#[derive(Clone, Debug, Default)]
pub struct Measured {
    /// Seconds until each target held every piece, indexed like `Topology::targets`.
    pub verified_at: Vec<Option<f64>>,
    /// Per host (seed first): bytes sent and received.
    pub sent: Vec<u64>,
    pub received: Vec<u64>,
    /// Per datacenter: bytes that entered it from another one.
    pub wan_in: Vec<u64>,
    pub wan_out: Vec<u64>,
    /// Virtual seconds simulated.
    pub simulated_s: f64,
    pub events: u64,
}

enum Kind {
    Connect {
        a: usize,
        b: usize,
    },
    Bitfield {
        from: usize,
        to: usize,
    },
    Have {
        from: usize,
        chunk: ChunkIx,
        dc: usize,
    },
    Request {
        from: usize,
        to: usize,
        chunk: ChunkIx,
    },
    Cancel {
        from: usize,
        to: usize,
        chunk: ChunkIx,
    },
    Piece {
        from: usize,
        to: usize,
        chunk: ChunkIx,
    },
    Busy {
        from: usize,
        to: usize,
        chunk: ChunkIx,
    },
    /// `from` told the peers of its datacenter whether it is full.
    Full {
        from: usize,
        full: bool,
    },
    /// The first bytes of a piece from `from` reached `to`.
    Started {
        from: usize,
        to: usize,
        chunk: ChunkIx,
    },
    /// `from` asks `to` for the manifest.
    GetManifest {
        from: usize,
        to: usize,
    },
    /// The manifest reached `to`, which joins the swarm.
    Manifest {
        to: usize,
    },
}

/// A call into one host's swarm, made at the step's end with the rest of
/// that host's (see `Sim::schedule_dirty`). None of them answers the engine,
/// so deferring them within a step changes nothing but where they run.
enum Op {
    Connect {
        peer: usize,
        seed: bool,
        at: Duration,
    },
    Bitfield {
        from: usize,
        at: Duration,
    },
    Have {
        from: usize,
        chunk: ChunkIx,
        at: Duration,
    },
    Lacks {
        from: usize,
        chunk: ChunkIx,
        at: Duration,
    },
    Busy {
        from: usize,
        chunk: ChunkIx,
        at: Duration,
    },
    Piece {
        from: usize,
        chunk: ChunkIx,
        at: Duration,
    },
    Started {
        from: usize,
        chunk: ChunkIx,
        at: Duration,
    },
    Tick {
        at: Duration,
    },
}

impl Op {
    fn apply(self, s: &mut Swarm, topo: &Topology, have: &[BitSet]) {
        match self {
            Op::Connect { peer, seed, at } => {
                s.advance(at);
                let h = &topo.hosts[peer];
                s.add_peer(peer as u64, &h.name, &topo.dcs[h.dc].name, seed);
            }
            Op::Bitfield { from, at } => {
                s.advance(at);
                let have = &have[from];
                s.peer_bitfield(from as u64, |i| have.get(i));
            }
            Op::Have { from, chunk, at } => {
                s.advance(at);
                s.peer_have(from as u64, chunk);
            }
            Op::Lacks { from, chunk, at } => {
                s.advance(at);
                s.on_failed(from as u64, chunk, true);
            }
            Op::Busy { from, chunk, at } => s.on_busy(at, from as u64, chunk),
            Op::Started { from, chunk, at } => s.on_started(at, from as u64, chunk),
            Op::Piece { from, chunk, at } => s.on_piece(at, from as u64, chunk, true),
            Op::Tick { at } => {
                if !s.is_complete() {
                    s.tick(at);
                }
            }
        }
    }
}

/// An uploader's waiting requests, kept as the node's upload slots keep
/// them (`crates/node/src/slots.rs`): requests from another datacenter in a
/// queue of their own, served first unless a local one has waited
/// `LOCAL_WAIT_MAX`; each queue answers `Busy` past the uploader's slots.
#[derive(Clone, Default)]
struct Waiting {
    cross: VecDeque<(usize, ChunkIx)>,
    /// With when each began to wait.
    local: VecDeque<(usize, ChunkIx, Duration)>,
}

impl Waiting {
    fn len(&self) -> usize {
        self.cross.len() + self.local.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn of_class(&self, cross: bool) -> usize {
        if cross {
            self.cross.len()
        } else {
            self.local.len()
        }
    }

    fn push(&mut self, cross: bool, (from, chunk): (usize, ChunkIx), now: Duration) {
        if cross {
            self.cross.push_back((from, chunk));
        } else {
            self.local.push_back((from, chunk, now));
        }
    }

    /// The next request to serve. A neighbour that said it is full
    /// (`full`, by host) waits behind those with room, unless all are full.
    fn pop(&mut self, now: Duration, full: &[bool]) -> Option<(usize, ChunkIx)> {
        let local = |q: &mut VecDeque<(usize, ChunkIx, Duration)>| {
            let i = q.iter().position(|&(from, ..)| !full[from]).unwrap_or(0);
            q.remove(i).map(|(from, chunk, _)| (from, chunk))
        };
        let overdue = self
            .local
            .front()
            .is_some_and(|&(.., at)| now.saturating_sub(at) >= LOCAL_WAIT_MAX);
        if overdue {
            return local(&mut self.local);
        }
        self.cross.pop_front().or_else(|| local(&mut self.local))
    }

    /// Takes a cancelled request out; false if it is not waiting here.
    fn remove(&mut self, from: usize, chunk: ChunkIx) -> bool {
        if let Some(i) = self.cross.iter().position(|&r| r == (from, chunk)) {
            self.cross.remove(i);
            return true;
        }
        if let Some(i) = self
            .local
            .iter()
            .position(|&(f, c, _)| (f, c) == (from, chunk))
        {
            self.local.remove(i);
            return true;
        }
        false
    }
}

struct Flow {
    from: usize,
    to: usize,
    load: Load,
    left: f64,
}

/// What a flow carries.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Load {
    Piece(ChunkIx),
    Manifest,
}

struct Sim<'a> {
    topo: &'a Topology,
    dc: Vec<usize>,
    lens: Vec<u64>,
    swarms: Vec<Option<Swarm>>,
    /// Whether each host still has its swarm: read for every call into one,
    /// where a look at the swarm itself was a cache miss per call.
    live: Vec<bool>,
    /// Calls into each host's swarm since the last `schedule_dirty`.
    ops: Vec<Vec<Op>>,
    have: Vec<BitSet>,
    peers: Vec<Vec<usize>>,
    queue: Vec<Waiting>,
    busy: Vec<usize>,
    /// Hosts that told their neighbours they are full (`Action::Full`).
    full: Vec<bool>,
    slots: usize,
    pending: Vec<usize>,
    is_pending: Vec<bool>,
    flows: Vec<Flow>,
    links: Vec<Links>,
    rates: Vec<f64>,
    cancelled: HashSet<(usize, usize, ChunkIx)>,
    /// Whether the strategy minds datacenters (the uploaders' queues do too).
    locality: bool,
    /// Bytes of the manifest; 0 when hosts join at once.
    manifest: f64,
    /// When the timeline last logged, and the seed's bytes sent by then.
    traced: (Duration, f64),
    /// Hosts holding the manifest (the seed from the start).
    joined: Vec<bool>,
    /// Manifest requests each host holds until it has the manifest itself
    /// (the node's `known_soon`).
    held: Vec<Vec<usize>>,
    /// The peers each host connects to once both have joined.
    pairs: Vec<Vec<usize>>,
    /// Manifests going out from each host, and since when the oldest has.
    manifests_out: Vec<usize>,
    manifest_since: Vec<Duration>,
    fluid: Fluid,
    events: Calendar<Kind>,
    dirty: Vec<bool>,
    dirty_list: Vec<usize>,
    /// Where each host of `dirty_list` stands in it, in `schedule_dirty`.
    dirty_pos: Vec<usize>,
    /// Threads that run the dirty hosts' schedules.
    threads: usize,
    verified_at: Vec<Option<f64>>,
    done: usize,
    sent: Vec<f64>,
    received: Vec<f64>,
    wan_in: Vec<f64>,
    wan_out: Vec<f64>,
    handled: u64,
}

/// What one thread's share of the hosts decided in a step: per host, its
/// range of `actions` and whether it now holds every piece.
#[derive(Default)]
struct Decided {
    hosts: Vec<(usize, std::ops::Range<usize>, bool)>,
    actions: Vec<Action>,
}

/// Distributes a release of `f_bytes` with `strategy` over `topo`.
pub fn simulate(
    topo: &Topology,
    f_bytes: u64,
    strategy: Strategy,
    p: &Params,
    progress: &dyn Fn(f64, usize),
) -> Measured {
    let mut sim = Sim::new(topo, f_bytes, strategy, p);
    let targets = topo.targets().len();
    let mut now = Duration::ZERO;
    let mut step_no: u64 = 0;
    let ticks_every = (TICK.as_secs_f64() / p.step.as_secs_f64()).round().max(1.0) as u64;
    let trace_every = std::env::var("SHOAL_FLOW_TRACE_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ticks_every);
    while sim.done < targets && now < p.time_limit {
        let end = now + p.step;
        sim.handle_until(end);
        for x in 1..topo.hosts.len() {
            if (step_no + x as u64).is_multiple_of(ticks_every) {
                sim.call(x, Op::Tick { at: end });
            }
        }
        sim.schedule_dirty(end);
        sim.start_flows(end);
        sim.advance_flows(now, p.step);
        now = end;
        step_no += 1;
        if step_no.is_multiple_of(200) {
            progress(now.as_secs_f64(), sim.done);
        }
        if step_no.is_multiple_of(trace_every)
            && tracing::enabled!(target: "shoal_netsim::timeline", tracing::Level::DEBUG)
        {
            sim.timeline(now);
        }
    }
    progress(now.as_secs_f64(), sim.done);
    Measured {
        verified_at: sim.verified_at,
        sent: sim.sent.iter().map(|&b| b as u64).collect(),
        received: sim.received.iter().map(|&b| b as u64).collect(),
        wan_in: sim.wan_in.iter().map(|&b| b as u64).collect(),
        wan_out: sim.wan_out.iter().map(|&b| b as u64).collect(),
        simulated_s: now.as_secs_f64(),
        events: sim.handled,
    }
}

impl<'a> Sim<'a> {
    fn new(topo: &'a Topology, f_bytes: u64, strategy: Strategy, p: &Params) -> Sim<'a> {
        let n = topo.hosts.len();
        let dcs = topo.dcs.len();
        let piece = p.piece.max(1);
        let count = f_bytes.div_ceil(piece).max(1) as usize;
        let lens: Vec<u64> = (0..count)
            .map(|i| piece.min(f_bytes - piece * i as u64).max(1))
            .collect();
        // Same bytes in flight as the production swarm with its own chunks,
        // and at least two requests, so a round trip never idles a link.
        let scale = (piece as f64 / TUNED_CHUNK).max(1.0);
        let scaled = |k: usize| ((k as f64 / scale).round() as usize).max(2);
        let base = Config::default();
        let cfg = Config {
            locality: strategy.locality(),
            window: scaled(base.window),
            local_window: scaled(base.local_window),
            seed_window: scaled(base.seed_window),
            cross_window: scaled(base.cross_window),
            request_timeout: base.request_timeout.mul_f64(scale),
            full_at: scaled(base.full_at),

            ..base
        };
        let dc: Vec<usize> = topo.hosts.iter().map(|h| h.dc).collect();
        let plain: Vec<u32> = lens
            .iter()
            .map(|&l| l.min(u64::from(u32::MAX)) as u32)
            .collect();
        let mut swarms = Vec::with_capacity(n);
        let mut have = Vec::with_capacity(n);
        for (i, h) in topo.hosts.iter().enumerate() {
            if h.role == HostRole::Seed {
                swarms.push(None);
                have.push(BitSet::full(count));
            } else {
                let c = Config {
                    dc: topo.dcs[h.dc].name.clone(),
                    seed: p.seed ^ (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    ..cfg.clone()
                };
                swarms.push(Some(Swarm::new(
                    c,
                    &h.name,
                    plain.clone(),
                    BitSet::new(count),
                )));
                have.push(BitSet::new(count));
            }
        }
        let live = swarms.iter().map(Option::is_some).collect();
        let mut sim = Sim {
            topo,
            dc,
            lens,
            live,
            swarms,
            have,
            peers: vec![Vec::new(); n],
            queue: vec![Waiting::default(); n],
            busy: vec![0; n],
            full: vec![false; n],
            // Fewer, faster uploads than the agent's 32 for large pieces: a
            // piece is passed on only once whole, and each of k slots gets a
            // k-th of the uplink, so every hop through a datacenter costs k
            // piece times. Enough that an uplink shared with slower
            // downlinks stays full. 5 measured best (sweep in docs/netsim.md).
            slots: scaled(SLOTS).max(5),
            pending: Vec::new(),
            is_pending: vec![false; n],
            flows: Vec::new(),
            links: Vec::new(),
            rates: Vec::new(),
            cancelled: HashSet::new(),
            locality: strategy.locality(),
            manifest: p.manifest as f64,
            traced: (Duration::ZERO, 0.0),
            joined: (0..n).map(|x| x == 0).collect(),
            held: vec![Vec::new(); n],
            pairs: vec![Vec::new(); n],
            manifests_out: vec![0; n],
            manifest_since: vec![Duration::ZERO; n],
            fluid: Fluid::new(super::link_caps(topo)),
            events: Calendar::new(p.step),
            dirty: vec![false; n],
            ops: (0..n).map(|_| Vec::new()).collect(),
            dirty_list: Vec::new(),
            dirty_pos: vec![0; n],
            threads: p.threads.max(1),
            verified_at: vec![None; n - 1],
            done: 0,
            sent: vec![0.0; n],
            received: vec![0.0; n],
            wan_in: vec![0.0; dcs],
            wan_out: vec![0.0; dcs],
            handled: 0,
        };
        sim.ask_tracker(strategy, p.seed);
        sim
    }

    /// Pieces held in each datacenter, flows and queued requests.
    fn timeline(&mut self, now: Duration) {
        let mut held = vec![0usize; self.topo.dcs.len()];
        for (x, h) in self.have.iter().enumerate().skip(1) {
            held[self.dc[x]] += h.count();
        }
        // Pieces that have entered each datacenter (held by any of its hosts).
        let count = self.lens.len();
        let mut inside = vec![vec![false; count]; self.topo.dcs.len()];
        for (x, h) in self.have.iter().enumerate().skip(1) {
            for (i, seen) in inside[self.dc[x]].iter_mut().enumerate() {
                *seen |= h.get(i);
            }
        }
        let entered: Vec<usize> = inside
            .iter()
            .map(|d| d.iter().filter(|&&b| b).count())
            .collect();
        self.timeline_links(now, &entered);
        let queued: usize = self.queue.iter().map(Waiting::len).sum();
        // How much of the seed's uplink was used since the last line.
        let (t0, sent0) = self.traced;
        let span = now.saturating_sub(t0).as_secs_f64();
        let seed_busy = if span > 0.0 {
            (self.sent[0] - sent0) / span / self.fluid.cap(0)
        } else {
            0.0
        };
        self.traced = (now, self.sent[0]);
        tracing::debug!(
            target: "shoal_netsim::timeline",
            t = now.as_secs_f64(),
            done = self.done,
            flows = self.flows.len(),
            queued,
            seed_queue = self.queue[0].len(),
            held = ?held,
            entered = ?entered,
            seed_busy,
            "flow"
        );
    }

    /// How the transfers in flight use the hosts' links, and where the peers
    /// of the hosts that receive nothing stand: a host can lack pieces its
    /// datacenter holds (`entered`, per datacenter) and still get none, when
    /// every neighbour that has them has told it `Busy`.
    fn timeline_links(&mut self, now: Duration, entered: &[usize]) {
        let n = self.topo.hosts.len();
        let mut rates = Vec::new();
        self.fluid.rates(&self.links, &mut rates);
        let up: Vec<f64> = (0..n).map(|x| self.fluid.cap(x)).collect();
        let down: Vec<f64> = (0..n).map(|x| self.fluid.cap(n + x)).collect();
        let flows = self
            .flows
            .iter()
            .zip(&rates)
            .map(|(f, &r)| (f.from, f.to, r));
        let unfinished = |x: usize| self.verified_at[x - 1].is_none();
        let u = LinkUse::measure(flows, &up, &down, unfinished);
        let mut receiving = vec![false; n];
        for f in &self.flows {
            receiving[f.to] = true;
        }
        let (mut starved, mut lacking, mut peers) = (0usize, 0usize, PeerStates::default());
        for x in 1..n {
            if let Some(s) = self.swarms[x].as_ref().filter(|_| !receiving[x]) {
                starved += 1;
                lacking += entered[self.dc[x]].saturating_sub(self.have[x].count());
                peers += s.peer_states(now);
            }
        }
        let per = |v: usize| v as f64 / starved.max(1) as f64;
        tracing::debug!(
            target: "shoal_netsim::timeline",
            t = now.as_secs_f64(),
            receiving = ?u.receiving,
            down_used = u.down,
            up_used = u.up,
            seed_up = u.seed_up,
            seed_to = ?u.seed_to,
            starved,
            // Means over the starved hosts.
            lacking = per(lacking),
            peers = per(peers.peers),
            backing_off = per(peers.backing_off),
            idle = per(peers.idle),
            requests = per(peers.requests),
            "links"
        );
    }

    fn lat(&self, a: usize, b: usize) -> Duration {
        self.topo.latency(self.dc[a], self.dc[b])
    }

    fn push(&mut self, at: Duration, kind: Kind) {
        self.events.push(at, kind);
    }

    /// Queues a call into `x`'s swarm, if it still has one (a host with
    /// every chunk has none).
    fn call(&mut self, x: usize, op: Op) {
        if self.live[x] {
            self.ops[x].push(op);
            self.mark(x);
        }
    }

    fn mark(&mut self, x: usize) {
        if !self.dirty[x] {
            self.dirty[x] = true;
            self.dirty_list.push(x);
        }
    }

    /// Every target asks the tracker for peers once the release is announced,
    /// then dials each listed peer. The fleet does not change during a run,
    /// so the agent's later polls (every 2 s) would return the same list.
    fn ask_tracker(&mut self, strategy: Strategy, seed: u64) {
        let topo = self.topo;
        let roster = super::roster(topo);
        let policy = strategy.policy(topo);
        let mut connected: HashSet<(usize, usize)> = HashSet::new();
        for x in 1..topo.hosts.len() {
            let h = &topo.hosts[x];
            let dc_name = &topo.dcs[h.dc].name;
            let listing = roster.list(&h.name, dc_name, &policy, seed ^ x as u64);
            let infos: Vec<PeerInfo> = listing
                .peers
                .iter()
                .map(|&i| {
                    let c = roster.host(i);
                    PeerInfo {
                        host: c.host.clone(),
                        dc: c.dc.clone(),
                        role: c.role,
                        addr: String::new(),
                    }
                })
                .collect();
            let view = shoal_node::listing::swarm_view(&infos, &listing.crossers, &h.name, dc_name);
            let s = self.swarms[x].as_mut().expect("a target has a swarm");
            view.apply(s);
            for (&p, info) in listing.peers.iter().zip(&infos) {
                // As the agent dials: across, with groups, its own only.
                if !view.dials(info, dc_name) {
                    continue;
                }
                let key = (x.min(p), x.max(p));
                if connected.insert(key) {
                    self.pairs[x].push(p);
                    self.pairs[p].push(x);
                }
            }
        }
        if self.manifest <= 0.0 {
            for x in 1..topo.hosts.len() {
                self.joined[x] = true;
                // The tracker's answer takes a round trip to the seed; a
                // QUIC handshake one more to the peer.
                self.join(x, self.lat(x, 0) * 2);
            }
            return;
        }
        self.ask_manifests();
    }

    /// Each agent asks for the manifest as `fetch_manifest` does: its
    /// datacenter's agents in rendezvous order for the release, the first
    /// asking the tracker, every other its parent in a binary tree over that
    /// order. The asker has the tracker's answer to its poll and then to
    /// `GetPeers` (a round trip each) and dials its parent (one more).
    fn ask_manifests(&mut self) {
        let topo = self.topo;
        for d in 0..topo.dcs.len() {
            let mut order: Vec<usize> =
                (1..topo.hosts.len()).filter(|&x| self.dc[x] == d).collect();
            order.sort_by_key(|&x| {
                std::cmp::Reverse(shoal_swarm::release_rank(&topo.hosts[x].name, &RELEASE))
            });
            for (i, &x) in order.iter().enumerate() {
                let listed = self.lat(x, 0) * 4;
                let (from, at) = match i.checked_sub(1) {
                    None => (0, listed + self.lat(x, 0)),
                    Some(me) => {
                        let parent = order[me / 2];
                        (parent, listed + self.lat(x, parent) * 3)
                    }
                };
                self.push(at, Kind::GetManifest { from: x, to: from });
            }
        }
    }

    /// `x` holds the manifest at `now`: it dials every listed peer that has
    /// joined too (a peer that joins later dials it then).
    fn join(&mut self, x: usize, now: Duration) {
        for k in 0..self.pairs[x].len() {
            let p = self.pairs[x][k];
            if self.joined[p] {
                let at = now + self.lat(x, p) * 2;
                self.push(at, Kind::Connect { a: x, b: p });
            }
        }
    }

    /// Starts sending the manifest from `from` to `to` (with the step's flows).
    fn send_manifest(&mut self, from: usize, to: usize, now: Duration) {
        if self.manifests_out[from] == 0 {
            self.manifest_since[from] = now;
        }
        self.manifests_out[from] += 1;
        self.links.push(super::path(self.topo, from, to));
        self.flows.push(Flow {
            from,
            to,
            load: Load::Manifest,
            left: self.manifest,
        });
    }

    fn handle_until(&mut self, end: Duration) {
        while let Some((at, kind)) = self.events.pop_before(end) {
            self.handled += 1;
            self.handle(at, kind);
        }
    }

    fn handle(&mut self, now: Duration, kind: Kind) {
        match kind {
            Kind::Connect { a, b } => {
                self.peers[a].push(b);
                self.peers[b].push(a);
                for (me, other) in [(a, b), (b, a)] {
                    let seed = self.topo.hosts[other].role == HostRole::Seed;
                    if self.live[me] {
                        let op = Op::Connect {
                            peer: other,
                            seed,
                            at: now,
                        };
                        self.call(me, op);
                        // Each side opens with its bitfield.
                        let at = now + self.lat(other, me);
                        self.push(
                            at,
                            Kind::Bitfield {
                                from: other,
                                to: me,
                            },
                        );
                    }
                }
            }
            Kind::Bitfield { from, to } => {
                self.call(to, Op::Bitfield { from, at: now });
            }
            Kind::Have { from, chunk, dc } => {
                for k in 0..self.peers[from].len() {
                    let p = self.peers[from][k];
                    if self.dc[p] != dc {
                        continue;
                    }
                    self.call(
                        p,
                        Op::Have {
                            from,
                            chunk,
                            at: now,
                        },
                    );
                }
            }
            Kind::Request { from, to, chunk } => {
                let cross = self.locality && self.dc[to] != self.dc[from];
                let waiting = self.queue[to].of_class(cross);
                if self.have[to].get(chunk as usize) && waiting >= self.slots {
                    // As the node does: past its slots' worth of waiting
                    // requests of the asker's class, an uploader answers Busy.
                    let at = now + self.lat(to, from);
                    self.push(
                        at,
                        Kind::Busy {
                            from: to,
                            to: from,
                            chunk,
                        },
                    );
                } else if self.have[to].get(chunk as usize) {
                    self.cancelled.remove(&(to, from, chunk));
                    self.queue[to].push(cross, (from, chunk), now);
                    if !self.is_pending[to] {
                        self.is_pending[to] = true;
                        self.pending.push(to);
                    }
                } else {
                    // The uploader answers that it lacks the chunk.
                    let at = now + self.topo.latency(self.dc[to], self.dc[from]);
                    self.call(
                        from,
                        Op::Lacks {
                            from: to,
                            chunk,
                            at,
                        },
                    );
                }
            }
            Kind::Cancel { from, to, chunk } => {
                if !self.queue[to].remove(from, chunk) {
                    self.cancelled.insert((to, from, chunk));
                }
            }
            Kind::Busy { from, to, chunk } => {
                self.call(
                    to,
                    Op::Busy {
                        from,
                        chunk,
                        at: now,
                    },
                );
            }
            Kind::Full { from, full } => self.full[from] = full,
            Kind::Started { from, to, chunk } => {
                self.call(
                    to,
                    Op::Started {
                        from,
                        chunk,
                        at: now,
                    },
                );
            }
            Kind::Piece { from, to, chunk } => {
                self.call(
                    to,
                    Op::Piece {
                        from,
                        chunk,
                        at: now,
                    },
                );
            }
            Kind::GetManifest { from, to } => {
                if self.joined[to] {
                    self.send_manifest(to, from, now);
                } else {
                    self.held[to].push(from);
                }
            }
            Kind::Manifest { to } => {
                if !self.joined[to] {
                    tracing::debug!(
                        target: "shoal_netsim::timeline",
                        t = now.as_secs_f64(),
                        host = %self.topo.hosts[to].name,
                        "joined"
                    );
                    self.joined[to] = true;
                    for asker in std::mem::take(&mut self.held[to]) {
                        self.send_manifest(to, asker, now);
                    }
                    self.join(to, now);
                }
            }
        }
    }

    fn schedule_dirty(&mut self, now: Duration) {
        let list = std::mem::take(&mut self.dirty_list);
        for (i, &x) in list.iter().enumerate() {
            self.dirty_pos[x] = i;
        }
        // A host's schedule reads and changes its own swarm only, so the
        // dirty hosts decide on every core at once; their actions are then
        // applied in the list's order, exactly as one after the other would,
        // and a run gives the same result on any machine.
        let mut jobs: Vec<(usize, &mut Swarm, &mut Vec<Op>)> = Vec::with_capacity(list.len());
        // `dirty` first: a swarm is hundreds of bytes, and reading ten
        // thousand of them at every step to find the few dirty ones was a
        // cache miss each.
        for (x, (s, ops)) in self.swarms.iter_mut().zip(&mut self.ops).enumerate() {
            if self.dirty[x]
                && let Some(s) = s.as_mut()
            {
                jobs.push((x, s, ops));
            }
        }
        for &x in &list {
            self.dirty[x] = false;
        }
        let (topo, have) = (self.topo, &self.have);
        type Job<'a> = (usize, &'a mut Swarm, &'a mut Vec<Op>);
        // Each part's actions go to one vector, each host's a range of it:
        // a vector per host and step was an allocation each, and freeing
        // them fell in the serial part.
        let decide = |jobs: &mut [Job]| -> Decided {
            let mut d = Decided::default();
            for (x, s, ops) in jobs.iter_mut() {
                for op in ops.drain(..) {
                    op.apply(s, topo, have);
                }
                s.schedule(now);
                let start = d.actions.len();
                d.actions.extend(std::iter::from_fn(|| s.poll_action()));
                d.hosts.push((*x, start..d.actions.len(), s.is_complete()));
            }
            d
        };
        let threads = if jobs.len() < PARALLEL_FROM {
            1
        } else {
            self.threads
        };
        // Dealt out in turn, not in halves: hosts are numbered datacenter by
        // datacenter, and in a profile of 10dc-10000 the first half (the
        // seed's datacenter and four more) took 13% longer than the second,
        // which then waited at every step.
        let mut dealt: Vec<Vec<Job>> = (0..threads)
            .map(|_| Vec::with_capacity(jobs.len() / threads + 1))
            .collect();
        for (i, job) in jobs.into_iter().enumerate() {
            dealt[i % threads].push(job);
        }
        let parts: Vec<Decided> = std::thread::scope(|scope| {
            let mut parts = dealt.iter_mut();
            let first = parts.next();
            let others: Vec<_> = parts.map(|p| scope.spawn(|| decide(p))).collect();
            let mut all = vec![first.map(|p| decide(p)).unwrap_or_default()];
            for h in others {
                all.push(h.join().expect("a host's schedule panicked"));
            }
            all
        });
        let mut order: Vec<(usize, usize)> = parts
            .iter()
            .enumerate()
            .flat_map(|(k, d)| (0..d.hosts.len()).map(move |i| (k, i)))
            .collect();
        order.sort_unstable_by_key(|&(k, i)| self.dirty_pos[parts[k].hosts[i].0]);
        for (k, i) in order {
            let (x, ref range, complete) = parts[k].hosts[i];
            for a in &parts[k].actions[range.clone()] {
                self.act(x, now, a);
            }
            // As the agent ends its session: a host with every chunk only
            // uploads (from `have`), so its swarm has nothing left to decide
            // and the Haves of its peers need not reach it.
            if complete {
                self.swarms[x] = None;
                self.live[x] = false;
            }
        }
        self.dirty_list = list;
        self.dirty_list.clear();
    }

    fn act(&mut self, x: usize, now: Duration, a: &Action) {
        match *a {
            Action::Request { peer, chunk } => {
                let to = peer as usize;
                self.push(now + self.lat(x, to), Kind::Request { from: x, to, chunk });
            }
            Action::Cancel { peer, chunk } => {
                let to = peer as usize;
                self.push(now + self.lat(x, to), Kind::Cancel { from: x, to, chunk });
            }
            Action::Have { chunk, across } => {
                self.have[x].set(chunk as usize);
                let mut dcs: Vec<usize> = self.peers[x]
                    .iter()
                    .map(|&p| self.dc[p])
                    .filter(|&d| across || d == self.dc[x])
                    .collect();
                dcs.sort_unstable();
                dcs.dedup();
                for d in dcs {
                    let at = now + self.topo.latency(self.dc[x], d);
                    self.push(
                        at,
                        Kind::Have {
                            from: x,
                            chunk,
                            dc: d,
                        },
                    );
                }
            }
            Action::Full { full } => {
                let at = now + self.topo.latency(self.dc[x], self.dc[x]);
                self.push(at, Kind::Full { from: x, full });
            }
            Action::Complete => {
                if self.verified_at[x - 1].is_none() {
                    self.verified_at[x - 1] = Some(now.as_secs_f64());
                    self.done += 1;
                }
            }
            // Nobody lies in this model.
            Action::Ban { .. } => {}
            // `Have`s here reach every peer after the latency, unbatched.
            Action::Tell { .. } => {}
        }
    }

    fn start_flows(&mut self, now: Duration) {
        let pending = std::mem::take(&mut self.pending);
        for &u in &pending {
            self.is_pending[u] = false;
            // A manifest going out from here goes first, for a while.
            let manifest_first =
                self.manifests_out[u] > 0 && now < self.manifest_since[u] + MANIFEST_FIRST;
            while self.busy[u] < self.slots && !manifest_first {
                let Some((to, chunk)) = self.queue[u].pop(now, &self.full) else {
                    break;
                };
                self.busy[u] += 1;
                self.push(now + self.lat(u, to), Kind::Started { from: u, to, chunk });
                self.links.push(super::path(self.topo, u, to));
                self.flows.push(Flow {
                    from: u,
                    to,
                    load: Load::Piece(chunk),
                    left: self.lens[chunk as usize] as f64,
                });
            }
            if !self.queue[u].is_empty() {
                self.is_pending[u] = true;
                self.pending.push(u);
            }
        }
    }

    fn advance_flows(&mut self, now: Duration, step: Duration) {
        self.fluid.rates(&self.links, &mut self.rates);
        let dt = step.as_secs_f64();
        let mut i = self.flows.len();
        while i > 0 {
            i -= 1;
            let (from, to, load) = (self.flows[i].from, self.flows[i].to, self.flows[i].load);
            let aborted = match load {
                Load::Piece(chunk) => {
                    !self.cancelled.is_empty() && self.cancelled.remove(&(from, to, chunk))
                }
                Load::Manifest => false,
            };
            let rate = self.rates[i];
            let moved = (rate * dt).min(self.flows[i].left);
            self.account(from, to, moved);
            let finished = !aborted && moved >= self.flows[i].left - 0.5;
            if !aborted && !finished {
                self.flows[i].left -= moved;
                continue;
            }
            if finished {
                let took = if rate > 0.0 { moved / rate } else { dt };
                let at = now + Duration::from_secs_f64(took) + self.lat(from, to);
                let kind = match load {
                    Load::Piece(chunk) => Kind::Piece { from, to, chunk },
                    Load::Manifest => Kind::Manifest { to },
                };
                self.push(at, kind);
            }
            self.flows.swap_remove(i);
            self.links.swap_remove(i);
            match load {
                Load::Piece(_) => self.busy[from] -= 1,
                Load::Manifest => self.manifests_out[from] -= 1,
            }
            if !self.queue[from].is_empty() && !self.is_pending[from] {
                self.is_pending[from] = true;
                self.pending.push(from);
            }
        }
    }

    fn account(&mut self, from: usize, to: usize, bytes: f64) {
        self.sent[from] += bytes;
        self.received[to] += bytes;
        if self.dc[from] != self.dc[to] {
            self.wan_out[self.dc[from]] += bytes;
            self.wan_in[self.dc[to]] += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_serve_across_first_unless_a_neighbour_waited_long() {
        let mut w = Waiting::default();
        let t = Duration::from_millis;
        let none = [false; 8];
        w.push(false, (1, 10), t(0));
        w.push(true, (2, 20), t(100));
        w.push(false, (3, 30), t(200));
        assert_eq!((w.of_class(true), w.of_class(false)), (1, 2));
        // From across first, then the neighbours in order.
        assert_eq!(w.pop(t(300), &none), Some((2, 20)));
        assert_eq!(w.pop(t(300), &none), Some((1, 10)));
        w.push(true, (4, 40), t(400));
        // Host 3 has waited LOCAL_WAIT_MAX: it goes before the newer request from across.
        assert_eq!(w.pop(t(200) + LOCAL_WAIT_MAX, &none), Some((3, 30)));
        assert!(w.remove(4, 40), "a cancelled request leaves the queue");
        assert!(!w.remove(4, 40));
        assert!(w.is_empty());
        assert_eq!(w.pop(t(2000), &none), None);
    }

    #[test]
    fn a_neighbour_that_said_it_is_full_waits_behind_those_with_room() {
        let mut w = Waiting::default();
        let t = Duration::from_millis;
        let mut full = [false; 8];
        full[1] = true;
        full[5] = true;
        w.push(false, (1, 10), t(0));
        w.push(false, (2, 20), t(1));
        w.push(true, (5, 50), t(2));
        // Across, fullness is not told: first as before.
        assert_eq!(w.pop(t(3), &full), Some((5, 50)));
        assert_eq!(w.pop(t(3), &full), Some((2, 20)));
        // Only full hosts left: the first of them.
        assert_eq!(w.pop(t(3), &full), Some((1, 10)));
    }
}
