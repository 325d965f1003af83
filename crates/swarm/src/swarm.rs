//! One host's view of one release's swarm.

use crate::bitset::BitSet;
use crate::inflight::InFlight;
use crate::peers::{Peer, Peers, Slot};
use std::collections::{HashMap, VecDeque};
use std::time::Duration;

/// In `Swarm::assigned`: the chunk is this host's to bring across.
const SELF: u32 = u32::MAX;

/// Timeout rounds in a row after which a peer is treated as gone.
const UNRESPONSIVE_STRIKES: u32 = 2;
/// Requests in a row that the peer failed (its stream refused or reset while
/// the connection stays up) after which it is banned from the swarm: a peer
/// that claims every chunk and fails every request would otherwise be asked
/// again and again, ahead of honest peers further away. Above the windows of
/// peers inside a datacenter, and a lost connection does not count (the
/// driver reports those with `on_dropped`).
const FAILURES_BEFORE_BAN: u32 = 64;

/// Chosen by the driver; unique per connection.
pub type PeerId = u64;
pub type ChunkIx = u32;

#[derive(Clone, Debug)]
pub struct Config {
    /// This host's datacenter: peers in it are local.
    pub dc: String,
    /// Prefer the own datacenter and assign each chunk's crossing to one host.
    /// Off: every peer is equal and chosen at random (a classic BitTorrent client).
    pub locality: bool,
    /// Requests in flight to one peer of another datacenter; size it to the
    /// path's bandwidth-delay product divided by the chunk size.
    pub window: usize,
    /// Requests in flight to one peer of this datacenter. A round trip there
    /// is under a millisecond, so a few pieces keep any link busy; and a
    /// chunk fresh from the seed has one holder, which every neighbour asks
    /// at once. With 16 each, a 16-host datacenter asked a holder for up to
    /// 240 pieces against its 32 slots and 32 waiting places: on `3dc-48`
    /// each host answered about 3,000 `Busy`s per 64 MiB release, each a
    /// request, an answer, their acknowledgements and a pause for the asker.
    pub local_window: usize,
    /// Requests in flight to a seed (kept lower, so agents serve each other).
    pub seed_window: usize,
    /// Requests in flight across datacenters, all remote peers together: the
    /// datacenter's link is one path, and a host that just joined must not put
    /// the whole release in flight before its neighbours are known.
    pub cross_window: usize,
    /// A request older than this is cancelled and the peer's window halved.
    pub request_timeout: Duration,
    /// How long to wait for the host a chunk is assigned to before fetching it
    /// across datacenters oneself.
    pub cross_dc_patience: Duration,
    /// Extra requests per chunk once every missing chunk is in flight.
    pub endgame_duplicates: usize,
    /// How long a peer that answered `Busy` (its upload queue full) is not
    /// asked again.
    pub busy_backoff: Duration,
    /// Pieces arriving at once from which this host is full: it tells its
    /// neighbours ([`Action::Full`]), whose upload slots then serve hosts
    /// with room first. A download's rate is its share of the busiest link
    /// it crosses, so past a few transfers a host's downlink is full and each
    /// more one holds an uploader's slot at a crawl while hosts with room
    /// wait for it: in the flow model at 2 MiB pieces, hosts receiving eleven
    /// or more at once held the slots that a fifth of the hosts, told `Busy`
    /// by most of their neighbours, needed (docs/netsim.md). 320 chunks of
    /// 32 KB are 10 MiB, the flow model's 5 pieces of 2 MiB; the agent's
    /// windows keep fewer than that in flight on `3dc-48`.
    pub full_at: usize,
    /// Seeds random choices, so hosts do not all pick alike.
    pub seed: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            dc: String::new(),
            locality: true,
            window: 16,
            local_window: 4,
            seed_window: 8,
            cross_window: 16,
            request_timeout: Duration::from_secs(10),
            cross_dc_patience: Duration::from_secs(10),
            endgame_duplicates: 1,
            busy_backoff: Duration::from_millis(100),
            full_at: 320,
            seed: 0,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Request {
        peer: PeerId,
        chunk: ChunkIx,
    },
    Cancel {
        peer: PeerId,
        chunk: ChunkIx,
    },
    /// Close the connection and never use this peer in this swarm again.
    Ban {
        peer: PeerId,
        reason: String,
    },
    /// Tell the peers we now hold this chunk: those of this datacenter
    /// always, those across only if `across`.
    Have {
        chunk: ChunkIx,
        /// False only for a chunk fetched from a neighbour (an agent of this
        /// datacenter) when locality is on and the swarm is meshed (see
        /// `Swarm::set_meshed`): the chunk was already here,
        /// and whoever brought it told every crosser across. They fetch
        /// each chunk across once, from one holder, so a second holder's
        /// word is bytes on the boundary for nothing (on packet `3dc-48`,
        /// 0.025 F into each remote datacenter).
        across: bool,
    },
    /// Tell this peer at once, not with the next batch of `Have`s: it is the
    /// host of another datacenter most likely to bring `chunk` across, and
    /// no agent it knows of holds it yet (it just came from the seed).
    Tell {
        peer: PeerId,
        chunk: ChunkIx,
    },
    /// Tell the peers of this datacenter that this host is full (`full`:
    /// so many pieces are arriving that its downlink has no room) or has
    /// room again: their upload slots serve hosts with room first.
    Full {
        full: bool,
    },
    /// Every chunk is held.
    Complete,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub bytes_in: u64,
    pub bytes_in_cross_dc: u64,
    pub pieces_bad: u64,
    pub requests: u64,
    pub timeouts: u64,
    pub duplicates: u64,
    /// Requests across datacenters for chunks assigned to this host, and for
    /// chunks assigned to another host that kept us waiting.
    pub cross_assigned: u64,
    pub cross_taken_over: u64,
    /// Of those, chunks whose assignee was not connected.
    pub cross_taken_unconnected: u64,
    /// Requests answered `Busy` (the peer's upload queue was full).
    pub busy: u64,
    /// Times this host told its neighbours it was full.
    pub full: u64,
    /// Endgame requests (a second peer asked for a chunk in flight), and
    /// those across datacenters.
    pub endgame: u64,
    pub endgame_cross: u64,
}

/// Where a host's peers stand, at a moment: what a driver logs to see why a
/// host that lacks chunks its neighbours hold is not receiving any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStates {
    /// Peers not banned.
    pub peers: usize,
    /// Had nothing eligible at the last look.
    pub idle: usize,
    /// Left alone after a `Busy` until their backoff ends.
    pub backing_off: usize,
    /// With as many requests in flight as their window allows.
    pub window_full: usize,
    /// Requests in flight, all peers together.
    pub requests: usize,
}

impl std::ops::AddAssign for PeerStates {
    fn add_assign(&mut self, o: PeerStates) {
        self.peers += o.peers;
        self.idle += o.idle;
        self.backing_off += o.backing_off;
        self.window_full += o.window_full;
        self.requests += o.requests;
    }
}

pub struct Swarm {
    cfg: Config,
    my_key: u64,
    lens: Vec<u32>,
    have: BitSet,
    missing: usize,
    /// Requests in flight: (chunk, peer, sent at), and how many per chunk.
    inflight: InFlight,
    /// Those of them whose piece is arriving (see `on_started`).
    arriving: Vec<(PeerId, ChunkIx)>,
    /// What the neighbours were last told (see `Action::Full`).
    told_full: bool,
    /// In slots; their order never matters (`schedule` sorts what it asks).
    peers: Peers,
    /// Per chunk, how many live peers hold it.
    avail: Vec<Holders>,
    /// The driver's clock at the last event, for peers' progress times.
    now: Duration,
    /// Agents of this datacenter in the swarm (from the tracker), connected or
    /// not, with when they were first listed: crossing work is assigned over
    /// all of them, so hosts agree before every connection is up.
    members: HashMap<u64, Duration>,
    /// Whether the member list arrived; until then (for at most the patience,
    /// from `born`) nothing is fetched across, as everything would look
    /// assigned to this host.
    members_known: bool,
    born: Option<Duration>,
    /// This host's datacenter's key.
    my_dc: u64,
    /// When some agent last got a chunk no agent held before (first asked:
    /// now). If none has for the patience, chunks homed elsewhere are taken
    /// from the seed too: a home that cannot reach the seed stalls nobody.
    fresh_copy_at: Option<Duration>,
    /// This host may bring chunks into its datacenter (the tracker names a
    /// few crossers per datacenter; in a small one, every host).
    crosser: bool,
    /// Whoever brings a chunk into this datacenter is connected to every
    /// crosser across (see `set_meshed`).
    meshed: bool,
    /// Crossers in groups (see `set_groups`). None: one group of everyone.
    groups: Option<Groups>,
    /// Chunks announced to this datacenter only, because their bringer told
    /// the others: told across after all if a neighbour (perhaps that
    /// bringer, before its batch went out) leaves or the swarm stops being
    /// meshed (see `tell_untold_across`).
    untold_across: Vec<ChunkIx>,
    /// The other datacenters with an agent that showed progress within the
    /// patience, as of the last `schedule`: the homes chunks may have.
    live_dcs: Vec<u64>,
    /// `local_progress` and `live_dcs` are up to date for this `schedule`.
    progress_fresh: bool,
    /// Requests in flight to peers in other datacenters.
    cross_inflight: usize,
    /// Per chunk, the host of this datacenter that fetches it across, as an
    /// index into `assignees` ([`SELF`]: this host); recomputed when the
    /// datacenter's hosts change. Four bytes, not an `Option<u64>`'s
    /// sixteen: `eligible` reads it for every chunk a peer across offers.
    assigned: Vec<u32>,
    /// The keys of the hosts `assigned` names.
    assignees: Vec<u64>,
    assigned_stale: bool,
    /// When each local agent (by host key) last showed progress, as of the
    /// last `schedule`.
    local_progress: HashMap<u64, Duration>,
    /// Missing chunks not in flight. A bit set, so the chunks a peer can
    /// give are found a word (64 chunks) at a time.
    wanted: BitSet,
    /// When `tick` last let idle peers look again (for patience running out).
    woken_at: Duration,
    actions: VecDeque<Action>,
    /// Nothing is asked before this (the driver's store could not keep a
    /// chunk: a full disk); see `pause`.
    paused_until: Duration,
    /// Chunks back in the pool since the last `schedule`.
    returned: Vec<ChunkIx>,
    /// Peers that may be askable (see `nudge`): `schedule` looks at these
    /// only, as most events change one peer and a host may have hundreds.
    candidates: Vec<Slot>,
    /// The slots of the peers whose `idle` is set, so a chunk back in the
    /// pool wakes the idle peers that hold it without reading every peer's
    /// record (at 1,000 hosts, most of those reads were of peers not idle).
    /// It covers every slot in use (see `add_peer`).
    idle: BitSet,
    /// Candidates that only a `Busy` holds back, with when it ends: out of
    /// `candidates` (still `queued`) until then, as time alone frees them
    /// and each `schedule` would look at them again for nothing (a peer's
    /// backoff spans tens of the flow model's steps, each with a `schedule`).
    snoozed: Vec<(Duration, Slot)>,
    /// The earliest end among `snoozed`.
    snoozed_until: Duration,
    rng: u64,
    completed: bool,
    pub stats: Stats,
}

/// How many live peers hold a chunk. One record, not four vectors: every
/// `Have` and every chunk the scheduler considers reads several counts of
/// the same chunk, and at ten thousand swarms each vector was a cache miss.
#[derive(Clone, Copy, Debug, Default)]
struct Holders {
    all: u32,
    /// Those in this datacenter.
    local: u32,
    /// Seeds among all of them, and among those in this datacenter.
    seed: u32,
    seed_local: u32,
}

impl Holders {
    fn add(&mut self, local: bool, seed: bool) {
        self.all += 1;
        self.local += u32::from(local);
        self.seed += u32::from(seed);
        self.seed_local += u32::from(seed && local);
    }

    fn remove(&mut self, local: bool, seed: bool) {
        self.all -= 1;
        self.local -= u32::from(local);
        self.seed -= u32::from(seed);
        self.seed_local -= u32::from(seed && local);
    }
}

/// Ends a peer's idleness and makes it a candidate once (see `Swarm::nudge`;
/// a free function, so loops over the peers can call it).
fn wake(slot: Slot, p: &mut Peer, candidates: &mut Vec<Slot>, idle: &mut BitSet) {
    if p.idle {
        p.idle = false;
        idle.clear(slot as usize);
    }
    enqueue(slot, p, candidates);
}

/// Makes a peer a candidate once, idle or not.
fn enqueue(slot: Slot, p: &mut Peer, candidates: &mut Vec<Slot>) {
    if !p.queued && !p.banned {
        p.queued = true;
        candidates.push(slot);
    }
}

/// Rendezvous score of a host for a chunk: the highest score fetches it.
fn score(key: u64, chunk: ChunkIx) -> u64 {
    mix(key ^ (u64::from(chunk)).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// The fleet's crossers in groups, as this host knows them (`set_groups`).
#[derive(Debug, PartialEq, Eq)]
struct Groups {
    count: u32,
    /// Every crosser's group, by host key (this host's too, if it is one).
    of: HashMap<u64, u32>,
}

/// Which of `count` groups of crossers brings `chunk` into each datacenter
/// (see `Swarm::set_groups`): the same in every datacenter.
pub fn chunk_group(chunk: ChunkIx, count: u32) -> u32 {
    (score(GROUP_KEY, chunk) % u64::from(count.max(1))) as u32
}

/// Hashes chunks to groups apart from hosts' scores.
const GROUP_KEY: u64 = 0x6a09_e667_f3bc_c908;

/// SplitMix64's finaliser: spreads a key's bits for hashing and sampling.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A host's rank for a release: the highest-ranked agents of a datacenter
/// are its crossers and the roots of its manifest tree.
pub fn release_rank(host: &str, release: &impl std::fmt::Display) -> u64 {
    host_key(&format!("{host}\0{release}"))
}

/// A stable 64-bit key for a host name (FNV-1a, then mixed).
pub fn host_key(host: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    mix(h)
}

impl Swarm {
    /// `lens`: every chunk's plain length; `have`: the chunks already held (from
    /// the local store, so a restarted host fetches nothing twice).
    pub fn new(cfg: Config, my_host: &str, lens: Vec<u32>, have: BitSet) -> Self {
        let n = lens.len();
        let missing = n - have.count();
        let rng = mix(cfg.seed ^ host_key(my_host));
        let wanted = have.complement();
        let mut s = Swarm {
            my_key: host_key(my_host),
            my_dc: host_key(&cfg.dc),
            fresh_copy_at: None,
            cfg,
            lens,
            have,
            missing,
            inflight: InFlight::new(n),
            arriving: Vec::new(),
            told_full: false,
            peers: Peers::default(),
            avail: vec![Holders::default(); n],
            now: Duration::ZERO,
            members: HashMap::new(),
            members_known: false,
            born: None,
            crosser: true,
            meshed: false,
            groups: None,
            untold_across: Vec::new(),
            live_dcs: Vec::new(),
            progress_fresh: false,
            paused_until: Duration::ZERO,
            returned: Vec::new(),
            candidates: Vec::new(),
            idle: BitSet::new(0),
            snoozed: Vec::new(),
            snoozed_until: Duration::MAX,
            cross_inflight: 0,
            assigned: vec![SELF; n],
            assignees: Vec::new(),
            assigned_stale: true,
            local_progress: HashMap::new(),
            wanted,
            woken_at: Duration::ZERO,
            actions: VecDeque::new(),
            rng,
            completed: false,
            stats: Stats::default(),
        };
        s.check_complete();
        s
    }

    /// Where the peers stand at `now` (see [`PeerStates`]).
    pub fn peer_states(&self, now: Duration) -> PeerStates {
        let mut st = PeerStates::default();
        for p in self.peers.values().filter(|p| !p.banned) {
            st.peers += 1;
            st.idle += usize::from(p.idle);
            st.backing_off += usize::from(p.busy_until > now);
            st.window_full += usize::from(p.inflight >= p.window);
            st.requests += p.inflight;
        }
        st
    }

    pub fn have(&self) -> &BitSet {
        &self.have
    }
    pub fn missing(&self) -> usize {
        self.missing
    }
    pub fn is_complete(&self) -> bool {
        self.missing == 0
    }
    pub fn peer_count(&self) -> usize {
        self.peers.values().filter(|p| !p.banned).count()
    }
    pub fn is_banned(&self, peer: PeerId) -> bool {
        self.peers.by_id(peer).is_some_and(|p| p.banned)
    }

    /// The driver's clock now. Events without a time of their own (a peer
    /// joining, announcing, the member list) are stamped with the last time
    /// given, so the driver calls this before handing them over.
    pub fn advance(&mut self, now: Duration) {
        self.now = self.now.max(now);
    }

    /// The next thing to do, if any.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// A peer connected, from datacenter `dc` (local if it is this host's);
    /// `seed`: holds every chunk and should be spared where agents can serve.
    pub fn add_peer(&mut self, id: PeerId, host: &str, dc: &str, seed: bool) {
        if self.peers.contains(id) {
            return;
        }
        let local = dc == self.cfg.dc || !self.cfg.locality;
        // By where the peer is, not by `local`: with locality off every peer
        // counts as local, but its round trip does not shrink.
        let window = if seed {
            self.cfg.seed_window
        } else if dc == self.cfg.dc {
            self.cfg.local_window
        } else {
            self.cfg.window
        };
        let slot = self.peers.insert(Peer {
            id,
            local,
            seed,
            key: host_key(host),
            dc: host_key(dc),
            have: BitSet::new(self.lens.len()),
            inflight: 0,
            window,
            max_window: window,
            banned: false,
            idle: false,
            queued: false,
            progress_at: self.now,
            strikes: 0,
            failures: 0,
            busy_until: Duration::ZERO,
        });
        self.idle.grow(slot as usize + 1);
        self.nudge(slot);
        // A new host in this datacenter changes who each chunk is assigned to.
        if local {
            self.assigned_stale |= !seed;
            self.wake_all();
        }
    }

    /// The other agents of this datacenter in this swarm, as the tracker lists
    /// them (seeds excluded).
    pub fn set_members<'a>(&mut self, hosts: impl IntoIterator<Item = &'a str>) {
        let now = self.now;
        let was_known = std::mem::replace(&mut self.members_known, true);
        let old = std::mem::take(&mut self.members);
        for h in hosts {
            let k = host_key(h);
            if k != self.my_key {
                self.members.insert(k, old.get(&k).copied().unwrap_or(now));
            }
        }
        // The tracker repeats the list every poll; only a change matters.
        if !was_known
            || old.len() != self.members.len()
            || old.keys().any(|k| !self.members.contains_key(k))
        {
            self.assigned_stale = true;
            self.wake_all();
        }
    }

    /// Whether this host is one of its datacenter's crossers. One that is
    /// not leaves every chunk's crossing to the members, unless they keep it
    /// waiting past the patience.
    pub fn set_crosser(&mut self, yes: bool) {
        if self.crosser != yes {
            self.crosser = yes;
            self.assigned_stale = true;
            self.wake_all();
        }
    }

    /// Whether the host that brings a chunk into this datacenter is
    /// connected to every crosser of the others (the tracker's list had room
    /// for them all). Then a chunk fetched from a neighbour is announced to
    /// this datacenter only: its bringer told the others (`Action::Have`).
    /// Not known (the default): every chunk is announced across too, as in
    /// a large fleet a crosser across may hear of a chunk here only from a
    /// host that did not bring it.
    pub fn set_meshed(&mut self, yes: bool) {
        self.meshed = yes;
        if !yes {
            self.tell_untold_across(None);
        }
    }

    /// The fleet's crossers in `count` groups, each crosser's group by host
    /// name, this datacenter's and the others' (this host's among them):
    /// a chunk is brought into each datacenter by a crosser of its group
    /// ([`chunk_group`]), and this host is connected across to the
    /// crossers of its own group only. None (the default): no groups.
    pub fn set_groups<'a>(
        &mut self,
        groups: Option<(u32, impl IntoIterator<Item = (&'a str, u32)>)>,
    ) {
        let new = groups.map(|(count, of)| Groups {
            count,
            of: of.into_iter().map(|(h, g)| (host_key(h), g)).collect(),
        });
        if new != self.groups {
            self.groups = new;
            self.assigned_stale = true;
            self.wake_all();
        }
    }

    /// The group of `chunk`, of `self.groups`; None: no groups.
    fn group_of_chunk(&self, chunk: ChunkIx) -> Option<u32> {
        self.groups.as_ref().map(|g| chunk_group(chunk, g.count))
    }

    /// The group of the crosser `key`; None: no groups, or no crosser.
    fn group_of_host(&self, key: u64) -> Option<u32> {
        self.groups.as_ref().and_then(|g| g.of.get(&key).copied())
    }

    /// Announces across the chunks that were announced only here, of those
    /// `gone` held (all if None). A neighbour left (dead, cut off, banned):
    /// if it was a chunk's bringer, its word may not have gone out (`Have`s
    /// across wait for a batch of seconds), and the other datacenters would
    /// know of no holder here.
    fn tell_untold_across(&mut self, gone: Option<&BitSet>) {
        let mut keep = Vec::new();
        for chunk in std::mem::take(&mut self.untold_across) {
            if gone.is_some_and(|h| !h.get(chunk as usize)) {
                keep.push(chunk);
                continue;
            }
            self.actions.push_back(Action::Have {
                chunk,
                across: true,
            });
        }
        self.untold_across = keep;
    }

    /// A peer's full set of chunks (sent once, when the swarm opens).
    pub fn peer_bitfield(&mut self, id: PeerId, has: impl Fn(usize) -> bool) {
        let Some(slot) = self.peers.slot(id) else {
            return;
        };
        for i in 0..self.lens.len() {
            if has(i) {
                self.slot_has(slot, i as ChunkIx);
            }
        }
    }

    /// A peer now holds `chunk`.
    pub fn peer_have(&mut self, id: PeerId, chunk: ChunkIx) {
        if let Some(slot) = self.peers.slot(id) {
            self.slot_has(slot, chunk);
        }
    }

    fn slot_has(&mut self, slot: Slot, chunk: ChunkIx) {
        let p = &mut self.peers[slot];
        if p.banned || !p.have.set(chunk as usize) {
            return;
        }
        p.progress_at = self.now;
        let (local, seed) = (p.local, p.seed);
        let c = chunk as usize;
        let held = &mut self.avail[c];
        if !seed && held.all == held.seed && !self.have.get(c) {
            self.fresh_copy_at = Some(self.now);
        }
        // Only this peer can gain an eligible chunk: a chunk held here makes
        // fetching it across less eligible, never more.
        held.add(local, seed);
        // Even a chunk it cannot ask for now wakes the peer: a look at it
        // also catches what time made eligible (a crossing whose assignee
        // went quiet, a Busy that expired) sooner than the once-a-second
        // wake-up. (Waking only on useful chunks cost 3dc-48 1.39 → 1.47 ×
        // T_lb.) Not an agent of this datacenter, for a chunk this host
        // holds: what it may be asked for is just what it holds and this
        // host lacks, so the look would find nothing new. (Half the `Have`s
        // a host hears; at 1,000 hosts such looks were 20 million of the 25
        // million that found nothing to ask.)
        let p = &mut self.peers[slot];
        if !(p.local && !p.seed && self.have.get(c)) {
            wake(slot, p, &mut self.candidates, &mut self.idle);
        }
    }

    /// A peer disconnected: its requests go back into the pool.
    pub fn remove_peer(&mut self, id: PeerId) {
        self.drop_peer_requests(id, false);
        if let Some((slot, p)) = self.peers.remove(id) {
            if !p.banned {
                self.forget(&p.have, p.local, p.seed);
            }
            self.assigned_stale |= p.local && !p.seed;
            // The slot goes to the next peer to join, which must not find
            // itself listed by its predecessor.
            self.candidates.retain(|&s| s != slot);
            self.idle.clear(slot as usize);
            self.snoozed.retain(|&(_, s)| s != slot);
            // Not for a connection that another to the same host replaced.
            if p.local && !p.seed && !self.peers.values().any(|q| q.key == p.key) {
                self.tell_untold_across(Some(&p.have));
            }
        }
        self.wake_all();
    }

    /// A piece arrived from `peer` and the driver checked it: `good` means it
    /// hashed to its name and is stored.
    pub fn on_piece(&mut self, now: Duration, peer: PeerId, chunk: ChunkIx, good: bool) {
        self.now = self.now.max(now);
        self.end_request(peer, chunk);
        if !good {
            self.stats.pieces_bad += 1;
            self.ban(
                peer,
                format!("sent chunk {chunk} with bytes that do not match its hash"),
            );
            return;
        }
        let len = u64::from(self.lens[chunk as usize]);
        if let Some(slot) = self.peers.slot(peer) {
            let p = &mut self.peers[slot];
            p.strikes = 0;
            p.failures = 0;
            p.progress_at = now;
            p.window = (p.window + 1).min(p.max_window);
            // A window that grew has room, and a peer with room must be a
            // candidate. (`end_request` made it one only if the request was
            // still out: a piece may come after its request timed out.)
            if !p.idle {
                enqueue(slot, p, &mut self.candidates);
            }
        }
        let from = self.peers.by_id(peer);
        let local = from.is_none_or(|p| p.local);
        // From an agent of this datacenter that is still here; a piece from
        // a peer already gone (its connection closed as the piece was
        // stored) is announced across, as its source is not known.
        let from_neighbour = from.is_some_and(|p| p.local && !p.seed);
        if !self.have.set(chunk as usize) {
            self.stats.duplicates += 1;
            return;
        }
        self.stats.bytes_in += len;
        if !local {
            self.stats.bytes_in_cross_dc += len;
        }
        let held = self.avail[chunk as usize];
        let fresh = held.all == held.seed;
        if fresh {
            self.fresh_copy_at = Some(now);
        }
        self.wanted.clear(chunk as usize);
        self.missing -= 1;
        // Endgame duplicates still out for this chunk are no longer needed.
        {
            for (p, _) in self.inflight.take(chunk) {
                self.stop_arriving(p, chunk);
                if let Some(slot) = self.peers.slot(p) {
                    let pp = &mut self.peers[slot];
                    pp.inflight -= 1;
                    if !pp.local {
                        self.cross_inflight -= 1;
                    }
                    self.nudge(slot);
                }
                self.actions.push_back(Action::Cancel { peer: p, chunk });
            }
        }
        let across = !(self.cfg.locality && self.meshed && from_neighbour);
        if !across {
            self.untold_across.push(chunk);
        }
        self.actions.push_back(Action::Have { chunk, across });
        if fresh && self.cfg.locality {
            self.tell_crossers(chunk);
        }
        self.check_complete();
    }

    /// The answer to a request to `peer` began to arrive: the piece counts
    /// as arriving until its request ends (see [`Config::full_at`]).
    pub fn on_started(&mut self, now: Duration, peer: PeerId, chunk: ChunkIx) {
        self.now = self.now.max(now);
        if self.inflight.has(chunk, peer) && !self.arriving.contains(&(peer, chunk)) {
            self.arriving.push((peer, chunk));
            self.tell_fullness();
        }
    }

    /// The piece asked of `peer` no longer arrives (it came, or its request
    /// ended).
    fn stop_arriving(&mut self, peer: PeerId, chunk: ChunkIx) {
        let before = self.arriving.len();
        self.arriving.retain(|&r| r != (peer, chunk));
        if self.arriving.len() != before {
            self.tell_fullness();
        }
    }

    /// Tells the neighbours when this host becomes full or has room again;
    /// nothing with locality off (a classic BitTorrent client has no such
    /// message, and `--strategy bittorrent` measures one).
    fn tell_fullness(&mut self) {
        let full = self.cfg.locality && self.arriving.len() >= self.cfg.full_at;
        if full != self.told_full {
            self.told_full = full;
            self.stats.full += u64::from(full);
            self.actions.push_back(Action::Full { full });
        }
    }

    /// A request that ended without the chunk for a reason that is not the
    /// peer's doing (its connection went away, our store failed): the chunk is
    /// free to ask of anyone, and nothing is held against the peer.
    pub fn on_dropped(&mut self, peer: PeerId, chunk: ChunkIx) {
        self.end_request(peer, chunk);
    }

    /// This host cannot keep chunks for now (its store failed: a full disk):
    /// every request in flight is cancelled and nothing is asked before
    /// `until`. What is known of the peers stays, and no request can time
    /// out while none is sent, so the swarm picks up where it was. (Left to
    /// the driver, a pause that kept ticking issued requests nobody sent,
    /// and their timeouts struck every peer off.)
    pub fn pause(&mut self, now: Duration, until: Duration) {
        self.now = self.now.max(now);
        self.paused_until = self.paused_until.max(until);
        for (chunk, peer, _) in self.inflight.by_chunk() {
            self.end_request(peer, chunk);
            self.actions.push_back(Action::Cancel { peer, chunk });
        }
    }

    /// The peer's upload queue was full. Nothing is held against it, but it
    /// is left alone for `busy_backoff`: the chunk goes to whoever else holds
    /// it, as a queue behind one popular host would leave the rest idle. Its
    /// window halves, once for the `Busy`s of one burst: a host that many ask
    /// at once (the seed, by 48 agents at 8 each against its 96 places) told
    /// each of them `Busy` every backoff, and each answer cost the uplink that
    /// binds a request, an answer and their acknowledgements.
    pub fn on_busy(&mut self, now: Duration, peer: PeerId, chunk: ChunkIx) {
        self.now = self.now.max(now);
        self.end_request(peer, chunk);
        self.stats.busy += 1;
        if let Some(p) = self.peers.by_id_mut(peer) {
            if p.busy_until <= now {
                p.window = (p.window / 2).max(1);
            }
            p.busy_until = now + self.cfg.busy_backoff;
        }
    }

    /// The peer could not serve the chunk. `lacks`: it says it does not have it
    /// (so it is not asked again); otherwise it was busy or the stream failed.
    pub fn on_failed(&mut self, peer: PeerId, chunk: ChunkIx, lacks: bool) {
        self.end_request(peer, chunk);
        if !lacks && let Some(p) = self.peers.by_id_mut(peer) {
            p.failures += 1;
            if p.failures >= FAILURES_BEFORE_BAN {
                self.ban(
                    peer,
                    format!("{FAILURES_BEFORE_BAN} requests in a row failed"),
                );
                return;
            }
        }
        if lacks
            && let Some(p) = self.peers.by_id_mut(peer)
            && p.have.clear(chunk as usize)
        {
            self.avail[chunk as usize].remove(p.local, p.seed);
        }
    }

    /// Bans a peer for a protocol violation seen by the driver.
    pub fn ban(&mut self, peer: PeerId, reason: String) {
        let Some(p) = self.peers.by_id_mut(peer) else {
            return;
        };
        if p.banned {
            return;
        }
        p.banned = true;
        let (local, seed) = (p.local, p.seed);
        self.assigned_stale |= local && !seed;
        let held = std::mem::replace(&mut p.have, BitSet::new(0));
        self.forget(&held, local, seed);
        self.drop_peer_requests(peer, true);
        self.actions.push_back(Action::Ban { peer, reason });
        if local && !seed {
            self.tell_untold_across(Some(&held));
        }
        self.wake_all();
    }

    /// Time passed: time out stale requests, then issue new ones.
    pub fn tick(&mut self, now: Duration) {
        self.now = self.now.max(now);
        let timeout = self.cfg.request_timeout;
        let mut expired = Vec::new();
        for (chunk, peer, at) in self.inflight.by_chunk() {
            if now.saturating_sub(at) >= timeout {
                expired.push((peer, chunk));
            }
        }
        let mut slow = std::collections::BTreeSet::new();
        for (peer, chunk) in expired {
            self.stats.timeouts += 1;
            self.end_request(peer, chunk);
            slow.insert(peer);
            self.actions.push_back(Action::Cancel { peer, chunk });
        }
        // Halve once per tick, however many of its requests expired together. A
        // peer that keeps timing out is treated as gone (it may have died
        // without a word): its chunks no longer hold back fetching elsewhere.
        for peer in slow {
            if let Some(p) = self.peers.by_id_mut(peer) {
                p.window = (p.window / 2).max(1);
                p.strikes += 1;
                if p.strikes >= UNRESPONSIVE_STRIKES {
                    self.remove_peer(peer);
                }
            }
        }
        // Patience may have run out for chunks waiting on a stalled assignee;
        // a second's lateness is nothing against the patience, and looking
        // again at every tick would cost every idle peer a scan of the release.
        if now.saturating_sub(self.woken_at) >= Duration::from_secs(1) {
            self.woken_at = now;
            self.wake_all();
        }
        self.schedule(now);
    }

    /// Fills every peer's window with requests.
    pub fn schedule(&mut self, now: Duration) {
        if self.missing == 0 || now < self.paused_until {
            return;
        }
        let askable =
            |p: &Peer| !p.banned && !p.idle && p.inflight < p.window && p.busy_until <= now;
        if !self.returned.is_empty() {
            let returned = std::mem::take(&mut self.returned);
            for w in 0..self.idle.words() {
                let mut bits = self.idle.word(w);
                while bits != 0 {
                    let slot = (w * 64) as Slot + bits.trailing_zeros();
                    bits &= bits - 1;
                    let p = &mut self.peers[slot];
                    if returned.iter().any(|&c| p.have.get(c as usize)) {
                        wake(slot, p, &mut self.candidates, &mut self.idle);
                    }
                }
            }
            self.returned = returned;
            self.returned.clear();
        }
        if now >= self.snoozed_until {
            self.wake_snoozed(now);
        }
        // Every peer that can be asked is a candidate. None: the common case
        // once windows are full, and the driver schedules after every batch
        // of events.
        debug_assert!(self.peers.values().all(|p| p.queued || !askable(p)));
        debug_assert!(
            self.peers
                .slots()
                .all(|(s, p)| p.idle == self.idle.get(s as usize))
        );
        if self.candidates.is_empty() {
            return;
        }
        if self.assigned_stale {
            self.assign();
        }
        self.progress_fresh = false;
        // Candidates that cannot be asked now drop out, unless only their
        // Busy holds them back (it ends with time, not with an event): those
        // wait in `snoozed`.
        let mut candidates = std::mem::take(&mut self.candidates);
        let mut order: Vec<(bool, bool, usize, u64, PeerId, Slot)> =
            Vec::with_capacity(candidates.len());
        candidates.retain(|&slot| {
            let Some(p) = self.peers.get_mut(slot) else {
                return false;
            };
            if askable(p) {
                let id = p.id;
                let tiebreak = if self.cfg.locality {
                    mix(id ^ self.rng)
                } else {
                    mix(id ^ self.rng ^ now.as_nanos() as u64)
                };
                order.push((!p.local, p.seed, p.inflight, tiebreak, id, slot));
                p.queued = false;
            } else {
                p.queued = !p.banned && !p.idle && p.inflight < p.window;
                if p.queued {
                    self.snoozed.push((p.busy_until, slot));
                    self.snoozed_until = self.snoozed_until.min(p.busy_until);
                }
            }
            false
        });
        self.candidates = candidates;
        order.sort_unstable();
        for (.., slot) in order {
            while self.peers[slot].inflight < self.peers[slot].window {
                if !self.peers[slot].local && self.cross_inflight >= self.cfg.cross_window {
                    break;
                }
                let Some(chunk) = self.pick(now, slot) else {
                    self.peers[slot].idle = true;
                    self.idle.set(slot as usize);
                    break;
                };
                self.send_request(now, slot, chunk);
            }
            // Held back by the cross-datacenter window: asked again next time.
            let p = &self.peers[slot];
            if !p.idle && p.inflight < p.window {
                self.nudge(slot);
            }
        }
    }

    /// Snoozed peers whose `Busy` has ended are candidates again.
    fn wake_snoozed(&mut self, now: Duration) {
        let mut until = Duration::MAX;
        let candidates = &mut self.candidates;
        self.snoozed.retain(|&(end, slot)| {
            if end <= now {
                candidates.push(slot);
                false
            } else {
                until = until.min(end);
                true
            }
        });
        self.snoozed_until = until;
    }

    /// `id` may have something to be asked for: it is looked at in the next
    /// `schedule`, which looks at no other peer.
    fn nudge(&mut self, slot: Slot) {
        if let Some(p) = self.peers.get_mut(slot) {
            wake(slot, p, &mut self.candidates, &mut self.idle);
        }
    }

    /// Who showed progress lately, as of `now`: needed only for crossings,
    /// so computed on the first one a `schedule` considers, not on every call.
    fn refresh_progress(&mut self, now: Duration) {
        if self.progress_fresh {
            return;
        }
        self.progress_fresh = true;
        self.local_progress.clear();
        self.live_dcs.clear();
        let patience = self.cfg.cross_dc_patience;
        for p in self.peers.values().filter(|p| !p.banned && !p.seed) {
            if p.local {
                let e = self.local_progress.entry(p.key).or_insert(p.progress_at);
                *e = (*e).max(p.progress_at);
            } else if now.saturating_sub(p.progress_at) < patience && !self.live_dcs.contains(&p.dc)
            {
                self.live_dcs.push(p.dc);
            }
        }
    }

    fn send_request(&mut self, now: Duration, slot: Slot, chunk: ChunkIx) {
        if !self.peers[slot].local {
            self.refresh_progress(now);
        }
        let endgame = self.inflight.contains(chunk);
        self.wanted.clear(chunk as usize);
        let p = &mut self.peers[slot];
        let peer = p.id;
        self.inflight.push(chunk, peer, now);
        if endgame {
            self.stats.endgame += 1;
            self.stats.endgame_cross += u64::from(!p.local);
        }
        p.inflight += 1;
        if !p.local {
            self.cross_inflight += 1;
            match self.assignee(chunk) {
                None => self.stats.cross_assigned += 1,
                Some(k) => {
                    self.stats.cross_taken_over += 1;
                    if !self.local_progress.contains_key(&k) {
                        self.stats.cross_taken_unconnected += 1;
                    }
                }
            }
        }
        self.stats.requests += 1;
        self.actions.push_back(Action::Request { peer, chunk });
    }

    /// The chunk to ask `peer` for next: the rarest eligible one among a
    /// sample of the chunks it holds and nobody is fetching, from a random
    /// place (so hosts spread over different chunks), or an endgame duplicate.
    fn pick(&mut self, now: Duration, peer: Slot) -> Option<ChunkIx> {
        const SAMPLE: usize = 24;
        let words = self.wanted.words();
        let mut best: Option<(u32, ChunkIx)> = None;
        let mut found = 0;
        if words > 0 {
            let r = self.next_rand();
            let start = (r % words as u64) as usize;
            let rot = ((r >> 32) % 64) as u32;
            'scan: for k in 0..words {
                let w = (start + k) % words;
                let mut bits =
                    (self.wanted.word(w) & self.peers[peer].have.word(w)).rotate_right(rot);
                while bits != 0 {
                    let b = bits.trailing_zeros();
                    bits &= bits - 1;
                    let c = (w * 64 + ((b + rot) % 64) as usize) as ChunkIx;
                    if !self.eligible(now, peer, c) {
                        continue;
                    }
                    let rarity = self.avail[c as usize].all;
                    if best.is_none_or(|(r, _)| rarity < r) {
                        best = Some((rarity, c));
                    }
                    found += 1;
                    if found >= SAMPLE {
                        break 'scan;
                    }
                }
            }
        }
        if let Some((_, c)) = best {
            return Some(c);
        }
        self.endgame_pick(now, peer)
    }

    /// Once nothing is left to request, ask a second peer for chunks in flight.
    fn endgame_pick(&mut self, now: Duration, slot: Slot) -> Option<ChunkIx> {
        if self.wanted.any() {
            return None;
        }
        let peer = self.peers[slot].id;
        let limit = 1 + self.cfg.endgame_duplicates;
        let chunks: Vec<ChunkIx> = self
            .inflight
            .by_chunk()
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|reqs| reqs.len() < limit && !reqs.iter().any(|r| r.1 == peer))
            .map(|reqs| reqs[0].0)
            .collect();
        chunks.into_iter().find(|&c| self.eligible(now, slot, c))
    }

    /// May `chunk` be asked of `peer` now?
    fn eligible(&mut self, now: Duration, peer: Slot, chunk: ChunkIx) -> bool {
        let p = &self.peers[peer];
        if !p.have.get(chunk as usize) {
            return false;
        }
        let c = chunk as usize;
        if p.seed && self.cfg.locality {
            // Spare the seed, the scarcest uplink: it sends each chunk once,
            // into the chunk's home datacenter, and every other copy comes
            // from agents.
            if self.avail[c].all > self.avail[c].seed {
                return false;
            }
            return self.is_home(now, chunk) && self.crossing_is_mine(now, chunk);
        }
        if p.local {
            return true;
        }
        // Across datacenters: only if no agent here has it (a seed here is
        // spared for chunks that have no copy yet), and only by the host it
        // is assigned to, unless that host has kept us waiting too long.
        if self.avail[c].local > self.avail[c].seed_local {
            return false;
        }
        self.crossing_is_mine(now, chunk)
    }

    /// For a chunk this host brought first, the agent of each other
    /// datacenter that fetches it across, as far as this host can tell: the
    /// connected one ranked highest for the chunk, as `assign` ranks them
    /// there. Across datacenters `Have`s wait for a batch (seconds, so that
    /// a pair of hosts exchanges a packet per batch, not per chunk); these
    /// go at once, so the chunk does not sit in its home datacenter while the
    /// others wait for the batch (a 1% delta took 1.8 s instead of 0.4 s).
    fn tell_crossers(&mut self, chunk: ChunkIx) {
        let mut best: Vec<(u64, u64, PeerId)> = Vec::new();
        // With groups, only the crossers of the chunk's group bring it in.
        let group = self.group_of_chunk(chunk);
        for p in self.peers.values() {
            if p.local || p.seed || p.banned || p.have.get(chunk as usize) {
                continue;
            }
            if group.is_some() && self.group_of_host(p.key) != group {
                continue;
            }
            let id = p.id;
            let s = score(p.key, chunk);
            match best.iter_mut().find(|(dc, ..)| *dc == p.dc) {
                Some(b) if b.1 >= s => {}
                Some(b) => *b = (p.dc, s, id),
                None => best.push((p.dc, s, id)),
            }
        }
        best.sort_unstable_by_key(|&(.., id)| id);
        for (.., peer) in best {
            self.actions.push_back(Action::Tell { peer, chunk });
        }
    }

    /// Whether this datacenter is `chunk`'s home: the one that takes it from
    /// the seed, by rendezvous hashing over the datacenters with live agents.
    /// Spreading the seed's chunks over every datacenter, rather than
    /// sending them all into the seed's own, spreads the work of passing
    /// them on: each datacenter's agents then send each chunk to their
    /// neighbours and a share of it across, where the seed's datacenter
    /// would otherwise send every chunk to its neighbours and to every other
    /// datacenter (17 copies per chunk from 16 uplinks on `3dc-48`). A
    /// datacenter that went quiet (cut off, dead) is no home: the others
    /// take its chunks. Hosts that see different datacenters live may both
    /// ask the seed for a chunk; none is left without a home.
    fn is_home(&mut self, now: Duration, chunk: ChunkIx) -> bool {
        let fresh = *self.fresh_copy_at.get_or_insert(now);
        if now.saturating_sub(fresh) >= self.cfg.cross_dc_patience {
            return true;
        }
        self.refresh_progress(now);
        let mine = score(self.my_dc, chunk);
        self.live_dcs.iter().all(|&d| score(d, chunk) < mine)
    }

    /// Whether this host brings `chunk` into its datacenter (from another
    /// datacenter or from a seed): it is assigned here, or its assignee kept
    /// us waiting too long.
    fn crossing_is_mine(&mut self, now: Duration, chunk: ChunkIx) -> bool {
        let born = *self.born.get_or_insert(now);
        if !self.members_known && now.saturating_sub(born) < self.cfg.cross_dc_patience {
            return false;
        }
        self.refresh_progress(now);
        match self.assignee(chunk) {
            None => true,
            // Wait for the assigned host while it shows progress; one that went
            // quiet for the patience (dead, stuck, cut off) is not waited for.
            // A connected peer's own progress wins over its listing time.
            Some(key) => {
                let progress_at = self
                    .local_progress
                    .get(&key)
                    .or_else(|| self.members.get(&key))
                    .copied()
                    .unwrap_or(self.now);
                now.saturating_sub(progress_at) >= self.cfg.cross_dc_patience
            }
        }
    }

    /// Decides, for every chunk, which host of this datacenter fetches it
    /// across the boundary: rendezvous hashing over this host and the members
    /// the tracker listed (before it answered, the connected local agents), so
    /// hosts agree without talking. Connected agents that are not members do
    /// not count: in a large datacenter they are hosts that never cross.
    fn assign(&mut self) {
        let connected = self
            .peers
            .values()
            .filter(|p| !self.members_known && p.local && !p.banned && !p.seed)
            .map(|p| p.key);
        let mut keys: Vec<u64> = connected
            .chain(self.members.keys().copied())
            .filter(|&k| k != self.my_key)
            .collect();
        keys.sort_unstable();
        keys.dedup();
        // With groups, a chunk goes to the members of its group; this host
        // takes part only for its own group's chunks.
        let group_of: Vec<Option<u32>> = keys.iter().map(|&k| self.group_of_host(k)).collect();
        let my_group = self.group_of_host(self.my_key);
        for c in 0..self.lens.len() {
            let c = c as ChunkIx;
            let group = self.group_of_chunk(c);
            // A host that is no crosser never outranks the members, nor
            // does one outside the chunk's group.
            let mine = if self.crosser && (group.is_none() || group == my_group) {
                score(self.my_key, c)
            } else {
                0
            };
            self.assigned[c as usize] = keys
                .iter()
                .enumerate()
                .filter(|&(i, _)| group.is_none() || group_of[i] == group)
                .filter(|&(_, &k)| score(k, c) > mine || mine == 0)
                .max_by_key(|&(_, &k)| score(k, c))
                .map_or(SELF, |(i, _)| i as u32);
        }
        self.assignees = keys;
        self.assigned_stale = false;
    }

    /// The key of the host that brings `chunk` into this datacenter; None:
    /// this host.
    fn assignee(&self, chunk: ChunkIx) -> Option<u64> {
        match self.assigned[chunk as usize] {
            SELF => None,
            i => Some(self.assignees[i as usize]),
        }
    }

    fn end_request(&mut self, peer: PeerId, chunk: ChunkIx) {
        if !self.inflight.contains(chunk) {
            return;
        }
        self.stop_arriving(peer, chunk);
        let (removed, empty) = self.inflight.remove(chunk, peer);
        if removed && let Some(slot) = self.peers.slot(peer) {
            let p = &mut self.peers[slot];
            p.inflight -= 1;
            if !p.local {
                self.cross_inflight -= 1;
            }
            // Its window has room again.
            self.nudge(slot);
        }
        if empty && !self.have.get(chunk as usize) {
            self.wanted.set(chunk as usize);
            // Back in the pool: peers holding it may look again (at the next
            // `schedule`, once for every chunk returned since).
            self.returned.push(chunk);
        }
    }

    /// Removes every request to `peer`, cancelling them if `cancel`.
    fn drop_peer_requests(&mut self, peer: PeerId, cancel: bool) {
        let chunks: Vec<ChunkIx> = self
            .inflight
            .by_chunk()
            .into_iter()
            .filter(|r| r.1 == peer)
            .map(|r| r.0)
            .collect();
        for chunk in chunks {
            self.end_request(peer, chunk);
            if cancel {
                self.actions.push_back(Action::Cancel { peer, chunk });
            }
        }
    }

    /// Removes a departed or banned peer's chunks from the availability counts.
    fn forget(&mut self, have: &BitSet, local: bool, seed: bool) {
        for i in 0..have.len() {
            if have.get(i) {
                self.avail[i].remove(local, seed);
            }
        }
    }

    fn wake_all(&mut self) {
        for (slot, p) in self.peers.iter_mut() {
            wake(slot, p, &mut self.candidates, &mut self.idle);
        }
    }

    fn check_complete(&mut self) {
        if self.missing == 0 && !self.completed {
            self.completed = true;
            self.actions.push_back(Action::Complete);
        }
    }

    fn next_rand(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.rng)
    }
}
