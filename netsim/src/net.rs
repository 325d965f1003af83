//! The packet-level network model: links, queues, latency, jitter and loss.
//!
//! The model keeps time in one of two clocks. [`Network::new`] runs in
//! wall-clock time on its own thread. [`Network::new_virtual`] runs as a task
//! of a paused current-thread tokio runtime: quinn, the agents and the engine
//! all read tokio's clock, which only moves when every task waits, so CPU time
//! costs no simulated time and a busy machine no longer slows the network
//! down (DESIGN.md, "netsim runs in real time", and docs/netsim.md). A datagram
//! from host `s` in datacenter `a` to host `d` in datacenter `b` crosses
//! `s`'s uplink, then (if `a != b`) `a`'s WAN-out link, the one-way latency
//! plus jitter and `b`'s WAN-in link (if `a == b`: the intra-DC latency plus
//! jitter), then `d`'s downlink, and lands in `d`'s socket.
//!
//! Every link is a FIFO server at its rate with a drop-tail queue of
//! `rate x queue time` bytes. Because a FIFO link's departure time is known the
//! moment a packet joins it, each link is just the time its backlog drains
//! (`busy`), and a packet costs one event per hop: its arrival at the next one.
//! Arrivals from many senders meet at WAN links and downlinks, so they must be
//! handled in time order: a discrete-event engine (a binary heap). In real
//! time it sleeps on a condvar on its own thread: tokio's 1 ms timers are too
//! coarse for 0.25 ms intra-DC latency and the 0.1-1 ms a packet takes to
//! serialise. In virtual time every task wakes on tokio's 1 ms ticks anyway;
//! the engine computes each hop at its exact time and hands a datagram over at
//! the tick nearest to its arrival, so latency is off by at most half a tick
//! and never accumulates over hops.
//!
//! The uplink is the exception: a host's sends are already in time order, so its
//! hop is computed in [`crate::socket::SimSocket::try_send`], and instead of
//! dropping it pushes back (`WouldBlock`) like a NIC behind a socket send buffer.
//! Real loss happens at shared queues and by the random loss rate, drawn from
//! a seeded generator so that runs repeat.

use crate::topology::Topology;
use serde::Serialize;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::Waker;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Events due this soon are handled now: it batches work, and a sleeping
/// thread wakes tens of microseconds late anyway (Linux timer slack).
const EARLY_NS: u64 = 50_000;
/// At most this many events per turn before deliveries and wake-ups go out.
const BATCH: usize = 4096;
/// A queue always holds at least this many full-size datagrams.
const MIN_QUEUE_PACKETS: u64 = 4;
/// A socket's receive queue, like a generous SO_RCVBUF.
pub(crate) const RECV_QUEUE_BYTES: usize = 8 << 20;
/// The engine's `sleep_until` while it is awake: senders need not notify it.
const AWAKE: u64 = 0;
/// In virtual time, events this close to the current tick are handled on it:
/// half of tokio's 1 ms tick, so each arrival lands on the nearest tick.
const HALF_TICK_NS: u64 = 500_000;

/// Traffic counters, in UDP payload bytes (what quinn hands to the socket).
#[derive(Clone, Debug, Default, Serialize)]
pub struct NetStats {
    pub hosts: Vec<HostStats>,
    pub dcs: Vec<DcStats>,
    /// Lost by the random loss rate.
    pub dropped_loss: u64,
    /// Dropped by a full queue: a WAN link, a downlink or a socket's receive queue.
    pub dropped_queue: u64,
    /// Dropped at the WAN links of a datacenter cut off by [`Network::set_dc_cut`].
    pub dropped_cut: u64,
    /// Larger than the topology's MTU (path MTU probes, for instance).
    pub dropped_mtu: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct HostStats {
    /// Left the host's uplink.
    pub sent_bytes: u64,
    /// Delivered to the host's socket.
    pub recv_bytes: u64,
    pub sent_packets: u64,
    pub recv_packets: u64,
}

/// Datagrams below this many bytes are counted apart at a WAN link: chunk
/// data travels in full-sized packets, acknowledgements and most control
/// messages in small ones.
pub const SMALL_DATAGRAM: usize = 600;

#[derive(Clone, Debug, Default, Serialize)]
pub struct DcStats {
    /// Passed through the datacenter's inbound WAN link (entered the datacenter).
    pub wan_in_bytes: u64,
    /// Of those, in datagrams shorter than [`SMALL_DATAGRAM`] that are not
    /// handshakes: acknowledgements and control messages rather than chunk
    /// data (and a chunk's last, short packet).
    pub wan_in_small_bytes: u64,
    /// Of those, in datagrams that start with a QUIC long header: the
    /// handshakes of connections into or out of the datacenter.
    pub wan_in_handshake_bytes: u64,
    /// Passed through its outbound WAN link.
    pub wan_out_bytes: u64,
    /// Dropped at the inbound / outbound WAN link (full queue or cut).
    pub wan_in_dropped: u64,
    pub wan_out_dropped: u64,
}

/// The simulated network. Dropping the last `Arc` stops its engine thread;
/// sockets keep working afterwards but carry nothing.
pub struct Network {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Network")
            .field("hosts", &self.shared.hosts.len())
            .finish_non_exhaustive()
    }
}

impl Network {
    /// Starts the engine; `seed` makes loss and jitter repeatable.
    pub fn new(topo: &Topology, seed: u64) -> Arc<Network> {
        let shared = Arc::new(Shared::new(topo, seed, Clock::Real(Instant::now())));
        let engine = shared.clone();
        let thread = std::thread::Builder::new()
            .name("netsim-engine".into())
            .spawn(move || engine.run())
            .expect("spawn the netsim engine thread");
        Arc::new(Network {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Starts the engine as a task on the current tokio runtime, in tokio's
    /// clock. Meant for a current-thread runtime whose clock is paused
    /// (`start_paused`): simulated time then moves only when every task waits,
    /// so results do not depend on how fast the machine is. Everything that
    /// uses the network must read tokio's clock too. Panics outside a runtime.
    pub fn new_virtual(topo: &Topology, seed: u64) -> Arc<Network> {
        let clock = Clock::Virtual(tokio::time::Instant::now());
        let shared = Arc::new(Shared::new(topo, seed, clock));
        tokio::spawn(shared.clone().run_virtual());
        Arc::new(Network {
            shared,
            thread: Mutex::new(None),
        })
    }

    /// Whether this network keeps virtual time ([`Network::new_virtual`]).
    pub fn is_virtual(&self) -> bool {
        matches!(self.shared.clock, Clock::Virtual(_))
    }

    /// The socket of host `ix` (index into `topo.hosts`), bound to its address.
    /// Calling it again for the same host returns another handle on the same
    /// socket (one receive queue, one uplink), like `dup`: only one task should
    /// receive on it at a time. Panics if `ix` is not a host.
    pub fn socket(self: &Arc<Self>, ix: usize) -> Arc<crate::socket::SimSocket> {
        assert!(ix < self.shared.hosts.len(), "no host {ix}");
        Arc::new(crate::socket::SimSocket::new(self.shared.clone(), ix))
    }

    pub fn stats(&self) -> NetStats {
        let s = &self.shared;
        let c = &s.counters;
        NetStats {
            hosts: s
                .hosts
                .iter()
                .map(|h| HostStats {
                    sent_bytes: h.stats.sent_bytes.load(Relaxed),
                    recv_bytes: h.stats.recv_bytes.load(Relaxed),
                    sent_packets: h.stats.sent_packets.load(Relaxed),
                    recv_packets: h.stats.recv_packets.load(Relaxed),
                })
                .collect(),
            dcs: s
                .dcs
                .iter()
                .map(|d| DcStats {
                    wan_in_bytes: d.wan_in_bytes.load(Relaxed),
                    wan_in_small_bytes: d.wan_in_small_bytes.load(Relaxed),
                    wan_in_handshake_bytes: d.wan_in_handshake_bytes.load(Relaxed),
                    wan_out_bytes: d.wan_out_bytes.load(Relaxed),
                    wan_in_dropped: d.wan_in_dropped.load(Relaxed),
                    wan_out_dropped: d.wan_out_dropped.load(Relaxed),
                })
                .collect(),
            dropped_loss: c.dropped_loss.load(Relaxed),
            dropped_queue: c.dropped_queue.load(Relaxed),
            dropped_cut: c.dropped_cut.load(Relaxed),
            dropped_mtu: c.dropped_mtu.load(Relaxed),
        }
    }

    /// Zeroes every counter (between phases of a run).
    pub fn reset_stats(&self) {
        let s = &self.shared;
        for h in &s.hosts {
            for a in [
                &h.stats.sent_bytes,
                &h.stats.recv_bytes,
                &h.stats.sent_packets,
                &h.stats.recv_packets,
            ] {
                a.store(0, Relaxed);
            }
        }
        for d in &s.dcs {
            for a in [
                &d.wan_in_bytes,
                &d.wan_out_bytes,
                &d.wan_in_dropped,
                &d.wan_out_dropped,
            ] {
                a.store(0, Relaxed);
            }
        }
        let c = &s.counters;
        for a in [
            &c.dropped_loss,
            &c.dropped_queue,
            &c.dropped_cut,
            &c.dropped_mtu,
        ] {
            a.store(0, Relaxed);
        }
    }

    /// Cuts (true) or heals (false) every WAN link of datacenter `dc`: packets
    /// reaching its WAN links, in or out, are dropped while it is cut. Packets
    /// already past them are not recalled. An unknown `dc` is ignored.
    pub fn set_dc_cut(&self, dc: usize, cut: bool) {
        if let Some(d) = self.shared.dcs.get(dc) {
            d.cut.store(cut, Relaxed);
        }
    }

    /// Stops the engine thread; undelivered packets are discarded and sockets
    /// carry nothing from now on. Idempotent.
    pub fn shutdown(&self) {
        {
            let mut eng = lock(&self.shared.engine);
            eng.stopped = true;
            eng.heap.clear();
            eng.slab.clear();
            eng.free.clear();
        }
        self.shared.wake();
        let handle = lock(&self.thread).take();
        if let Some(h) = handle {
            // The engine only panics on a bug; its state is gone either way.
            let _ = h.join();
        }
        // Let blocked senders find out (they now get Ready and discard).
        let wakers: Vec<Waker> = {
            let mut eng = lock(&self.shared.engine);
            eng.writers.iter_mut().flat_map(std::mem::take).collect()
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Locks, recovering from poisoning: the state stays consistent between
/// statements that could panic, and a dead simulation should not cascade.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the engine thread, the sockets and the [`Network`] handle share.
pub(crate) struct Shared {
    clock: Clock,
    pub(crate) mtu: usize,
    pub(crate) hosts: Vec<HostShared>,
    dcs: Vec<DcShared>,
    pub(crate) counters: Counters,
    by_addr: HashMap<SocketAddr, u32>,
    pub(crate) engine: Mutex<Engine>,
    /// Wakes the engine: the thread's condvar in real time, the task's
    /// `Notify` in virtual time (one stored permit covers a wake-up sent
    /// between its last look and its wait).
    wake_engine: Condvar,
    wake_task: tokio::sync::Notify,
}

/// Where the network's time comes from; see the module docs.
enum Clock {
    Real(Instant),
    Virtual(tokio::time::Instant),
}

pub(crate) struct HostShared {
    pub(crate) addr: SocketAddr,
    pub(crate) ip: IpAddr,
    pub(crate) inbox: Mutex<Inbox>,
    /// A copy of the uplink's `busy` (ns), read without the engine lock.
    pub(crate) up_busy: AtomicU64,
    /// The uplink's queue limit (ns of backlog).
    pub(crate) up_limit: u64,
    pub(crate) stats: HostCounters,
}

#[derive(Default)]
pub(crate) struct HostCounters {
    pub(crate) sent_bytes: AtomicU64,
    pub(crate) recv_bytes: AtomicU64,
    pub(crate) sent_packets: AtomicU64,
    pub(crate) recv_packets: AtomicU64,
}

#[derive(Default)]
struct DcShared {
    cut: AtomicBool,
    wan_in_bytes: AtomicU64,
    wan_in_small_bytes: AtomicU64,
    wan_in_handshake_bytes: AtomicU64,
    wan_out_bytes: AtomicU64,
    wan_in_dropped: AtomicU64,
    wan_out_dropped: AtomicU64,
}

#[derive(Default)]
pub(crate) struct Counters {
    dropped_loss: AtomicU64,
    pub(crate) dropped_queue: AtomicU64,
    dropped_cut: AtomicU64,
    pub(crate) dropped_mtu: AtomicU64,
}

/// A socket's receive queue.
#[derive(Default)]
pub(crate) struct Inbox {
    pub(crate) queue: VecDeque<Datagram>,
    pub(crate) bytes: usize,
    pub(crate) waker: Option<Waker>,
}

pub(crate) struct Datagram {
    pub(crate) from: SocketAddr,
    pub(crate) data: Vec<u8>,
}

/// A FIFO link: `busy` is when everything it has accepted will have left.
#[derive(Clone, Copy)]
struct Link {
    /// Bytes per second.
    rate: u64,
    /// The longest backlog (ns at `rate`) a packet may join, itself included.
    limit: u64,
    busy: u64,
}

impl Link {
    fn new(rate: u64, queue: Duration, mtu: usize) -> Link {
        let rate = rate.max(1);
        let limit = u64::try_from(queue.as_nanos())
            .unwrap_or(u64::MAX)
            .max(tx_ns(mtu as u64 * MIN_QUEUE_PACKETS, rate));
        Link {
            rate,
            limit,
            busy: 0,
        }
    }

    /// A packet of `len` bytes arrives at `t`: when it will have left, or
    /// `None` if the queue is full (drop-tail).
    fn offer(&mut self, t: u64, len: usize) -> Option<u64> {
        let start = self.busy.max(t);
        let done = start + tx_ns(len as u64, self.rate);
        if done - t > self.limit {
            return None;
        }
        self.busy = done;
        Some(done)
    }
}

/// Time to serialise `bytes` at `rate` bytes/s, in ns.
fn tx_ns(bytes: u64, rate: u64) -> u64 {
    u64::try_from(u128::from(bytes) * 1_000_000_000 / u128::from(rate)).unwrap_or(u64::MAX)
}

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Where a packet is about to be, or a wake-up for a host's blocked senders.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    WanOut,
    WanIn,
    Down,
    Deliver,
    /// `slot` is a host whose uplink may have drained.
    UpWake,
}

/// `(time ns, sequence, slot, stage)`: the sequence keeps equal times in order.
type Event = Reverse<(u64, u64, u32, Stage)>;

struct Packet {
    src: u32,
    dst: u32,
    /// Lost in flight (drawn when sent, applied after the first shared hop).
    lost: bool,
    jitter: u64,
    data: Vec<u8>,
}

/// Everything the engine lock guards.
pub(crate) struct Engine {
    heap: BinaryHeap<Event>,
    seq: u64,
    /// Packets in flight; `free` lists the empty slots.
    slab: Vec<Packet>,
    free: Vec<u32>,
    up: Vec<Link>,
    down: Vec<Link>,
    wan_out: Vec<Link>,
    wan_in: Vec<Link>,
    host_dc: Vec<u32>,
    /// One-way latency between datacenters (ns), `lat[a * ndc + b]`.
    lat: Vec<u64>,
    ndc: usize,
    jitter: u64,
    loss_intra: f64,
    loss_inter: f64,
    rng: SplitMix,
    /// Last arrival per (src, dst) after the latency hop, so jitter keeps order.
    last_arrival: HashMap<u64, u64>,
    /// Tasks waiting for a host's uplink to drain, and whether a wake-up is booked.
    pub(crate) writers: Vec<Vec<Waker>>,
    wake_booked: Vec<bool>,
    /// When the engine thread will next look at the heap ([`AWAKE`] while it is
    /// working): a send due earlier must notify it.
    sleep_until: u64,
    pub(crate) stopped: bool,
}

/// What [`Shared::turn`] left to do.
enum Turn {
    Stopped,
    /// Datagrams and wake-ups to hand out (outside the engine lock).
    Flush,
    /// A full batch was handled; more may be due.
    Again,
    /// Nothing due; the next event's time, if any.
    Idle(Option<u64>),
}

/// The outcome of [`Shared::send`].
pub(crate) enum Sent {
    Accepted,
    WouldBlock,
}

impl Shared {
    fn new(topo: &Topology, seed: u64, clock: Clock) -> Shared {
        let mtu = usize::from(topo.mtu);
        let ndc = topo.dcs.len();
        let hosts = topo
            .hosts
            .iter()
            .map(|h| {
                let up = Link::new(h.upload, topo.host_queue, mtu);
                HostShared {
                    addr: h.addr,
                    ip: h.addr.ip(),
                    inbox: Mutex::new(Inbox::default()),
                    up_busy: AtomicU64::new(0),
                    up_limit: up.limit,
                    stats: HostCounters::default(),
                }
            })
            .collect();
        let mut lat = Vec::with_capacity(ndc * ndc);
        for a in 0..ndc {
            for b in 0..ndc {
                lat.push(ns(if a == b {
                    topo.intra_dc
                } else {
                    topo.latency(a, b)
                }));
            }
        }
        let engine = Engine {
            heap: BinaryHeap::new(),
            seq: 0,
            slab: Vec::new(),
            free: Vec::new(),
            up: topo
                .hosts
                .iter()
                .map(|h| Link::new(h.upload, topo.host_queue, mtu))
                .collect(),
            down: topo
                .hosts
                .iter()
                .map(|h| Link::new(h.download, topo.host_queue, mtu))
                .collect(),
            wan_out: topo
                .dcs
                .iter()
                .map(|d| Link::new(d.wan_out, topo.wan_queue, mtu))
                .collect(),
            wan_in: topo
                .dcs
                .iter()
                .map(|d| Link::new(d.wan_in, topo.wan_queue, mtu))
                .collect(),
            host_dc: topo.hosts.iter().map(|h| h.dc as u32).collect(),
            lat,
            ndc,
            jitter: ns(topo.jitter),
            loss_intra: topo.loss_intra,
            loss_inter: topo.loss_inter,
            rng: SplitMix(seed),
            last_arrival: HashMap::new(),
            writers: vec![Vec::new(); topo.hosts.len()],
            wake_booked: vec![false; topo.hosts.len()],
            sleep_until: AWAKE,
            stopped: false,
        };
        Shared {
            clock,
            mtu,
            by_addr: topo
                .hosts
                .iter()
                .enumerate()
                .map(|(i, h)| (h.addr, i as u32))
                .collect(),
            hosts,
            dcs: topo.dcs.iter().map(|_| DcShared::default()).collect(),
            counters: Counters::default(),
            engine: Mutex::new(engine),
            wake_engine: Condvar::new(),
            wake_task: tokio::sync::Notify::new(),
        }
    }

    /// Nanoseconds since the network started.
    pub(crate) fn now(&self) -> u64 {
        ns(match &self.clock {
            Clock::Real(epoch) => epoch.elapsed(),
            Clock::Virtual(epoch) => epoch.elapsed(),
        })
    }

    fn wake(&self) {
        match self.clock {
            Clock::Real(_) => self.wake_engine.notify_one(),
            Clock::Virtual(_) => self.wake_task.notify_one(),
        }
    }

    /// The host at `addr` (IPv4-mapped IPv6 addresses included).
    pub(crate) fn host_at(&self, addr: SocketAddr) -> Option<u32> {
        let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
        self.by_addr.get(&addr).copied()
    }

    /// Puts datagrams from host `src` on its uplink, all or none. `segments`
    /// yields the payloads, none larger than the MTU; `dst` is a host.
    pub(crate) fn send<'a>(
        &self,
        src: u32,
        dst: u32,
        segments: impl Iterator<Item = &'a [u8]>,
    ) -> Sent {
        let now = self.now();
        let mut guard = lock(&self.engine);
        let eng = &mut *guard;
        if eng.stopped {
            return Sent::Accepted;
        }
        let s = src as usize;
        let up = eng.up[s];
        if up.busy.saturating_sub(now) >= up.limit {
            return Sent::WouldBlock;
        }
        let (a, b) = (eng.host_dc[s], eng.host_dc[dst as usize]);
        let (mut bytes, mut packets) = (0, 0);
        let mut earliest = u64::MAX;
        for seg in segments {
            let start = eng.up[s].busy.max(now);
            let done = start + tx_ns(seg.len() as u64, eng.up[s].rate);
            eng.up[s].busy = done;
            bytes += seg.len() as u64;
            packets += 1;
            let loss = if a == b {
                eng.loss_intra
            } else {
                eng.loss_inter
            };
            let lost = loss > 0.0 && eng.rng.unit() < loss;
            let jitter = eng.jitter_draw();
            if lost && a == b {
                // Within a datacenter the first shared hop is the downlink:
                // the packet is lost on the way there.
                self.counters.dropped_loss.fetch_add(1, Relaxed);
                continue;
            }
            let pkt = Packet {
                src,
                dst,
                lost,
                jitter,
                data: seg.to_vec(),
            };
            let t = if a == b {
                let t = eng.after_latency(src, dst, jitter, done);
                eng.push_packet(t, pkt, Stage::Down);
                t
            } else {
                eng.push_packet(done, pkt, Stage::WanOut);
                done
            };
            earliest = earliest.min(t);
        }
        let busy = eng.up[s].busy;
        self.hosts[s].up_busy.store(busy, Relaxed);
        let st = &self.hosts[s].stats;
        st.sent_bytes.fetch_add(bytes, Relaxed);
        st.sent_packets.fetch_add(packets, Relaxed);
        if earliest < eng.sleep_until {
            eng.sleep_until = AWAKE;
            drop(guard);
            self.wake();
        }
        Sent::Accepted
    }

    /// Whether host `ix` may send now; if not, `waker` is woken once its uplink
    /// has drained to half its queue.
    pub(crate) fn poll_uplink(&self, ix: usize, waker: &Waker) -> bool {
        let h = &self.hosts[ix];
        let now = self.now();
        if h.up_busy.load(Relaxed).saturating_sub(now) < h.up_limit {
            return true;
        }
        let mut eng = lock(&self.engine);
        if eng.stopped {
            return true;
        }
        let up = eng.up[ix];
        if up.busy.saturating_sub(now) < up.limit {
            return true;
        }
        let w = &mut eng.writers[ix];
        if !w.iter().any(|x| x.will_wake(waker)) {
            w.push(waker.clone());
        }
        if !eng.wake_booked[ix] {
            eng.wake_booked[ix] = true;
            let t = up.busy - up.limit / 2;
            eng.push(t, ix as u32, Stage::UpWake);
            if t < eng.sleep_until {
                eng.sleep_until = AWAKE;
                drop(eng);
                self.wake();
            }
        }
        false
    }

    /// The engine thread (real time).
    fn run(self: Arc<Self>) {
        let mut out = Outbox::default();
        let mut eng = lock(&self.engine);
        loop {
            let next = match self.turn(&mut eng, &mut out, EARLY_NS) {
                Turn::Stopped => return,
                Turn::Flush => {
                    drop(eng);
                    self.flush(&mut out);
                    eng = lock(&self.engine);
                    continue;
                }
                Turn::Again => continue,
                Turn::Idle(next) => next,
            };
            eng = match next {
                // Wake a little early: events within EARLY_NS are handled together.
                Some(t) => {
                    let wait = t.saturating_sub(EARLY_NS + self.now());
                    let wait = Duration::from_nanos(wait);
                    self.wake_engine
                        .wait_timeout(eng, wait)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
                None => self
                    .wake_engine
                    .wait(eng)
                    .unwrap_or_else(|e| e.into_inner()),
            };
            eng.sleep_until = AWAKE;
        }
    }

    /// The engine task (virtual time).
    async fn run_virtual(self: Arc<Self>) {
        let Clock::Virtual(epoch) = self.clock else {
            return;
        };
        let mut out = Outbox::default();
        loop {
            let turn = self.turn(&mut lock(&self.engine), &mut out, HALF_TICK_NS);
            let next = match turn {
                Turn::Stopped => return,
                Turn::Flush => {
                    self.flush(&mut out);
                    continue;
                }
                // A long batch: let the hosts run before the next one.
                Turn::Again => {
                    tokio::task::yield_now().await;
                    continue;
                }
                Turn::Idle(next) => next,
            };
            match next {
                Some(t) => {
                    let at = epoch + Duration::from_nanos(t.saturating_sub(HALF_TICK_NS));
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.wake_task.notified() => {}
                    }
                }
                None => self.wake_task.notified().await,
            }
            lock(&self.engine).sleep_until = AWAKE;
        }
    }

    /// Handles the events due by `now + early`, at most [`BATCH`] of them.
    fn turn(&self, eng: &mut Engine, out: &mut Outbox, early: u64) -> Turn {
        if eng.stopped {
            return Turn::Stopped;
        }
        let horizon = self.now() + early;
        let mut n = 0;
        while let Some(&Reverse((t, _, slot, stage))) = eng.heap.peek() {
            if t > horizon || n == BATCH {
                break;
            }
            eng.heap.pop();
            n += 1;
            self.handle(eng, t, slot, stage, out);
        }
        if !out.is_empty() {
            return Turn::Flush;
        }
        if n == BATCH {
            return Turn::Again;
        }
        let next = eng.heap.peek().map(|Reverse((t, ..))| *t);
        eng.sleep_until = next.unwrap_or(u64::MAX);
        Turn::Idle(next)
    }

    /// One event at time `t`.
    fn handle(&self, eng: &mut Engine, t: u64, slot: u32, stage: Stage, out: &mut Outbox) {
        let c = &self.counters;
        if stage == Stage::UpWake {
            let ix = slot as usize;
            let up = eng.up[ix];
            if up.busy.saturating_sub(t) > up.limit / 2 {
                // More was sent since the wake-up was booked.
                eng.push(up.busy - up.limit / 2, slot, Stage::UpWake);
            } else {
                eng.wake_booked[ix] = false;
                out.wakers.append(&mut eng.writers[ix]);
            }
            return;
        }
        let p = &eng.slab[slot as usize];
        let (src, dst, len) = (p.src as usize, p.dst as usize, p.data.len());
        let (a, b) = (eng.host_dc[src] as usize, eng.host_dc[dst] as usize);
        match stage {
            Stage::WanOut => {
                let dc = &self.dcs[a];
                if dc.cut.load(Relaxed) {
                    dc.wan_out_dropped.fetch_add(1, Relaxed);
                    c.dropped_cut.fetch_add(1, Relaxed);
                    return eng.release(slot);
                }
                let Some(done) = eng.wan_out[a].offer(t, len) else {
                    dc.wan_out_dropped.fetch_add(1, Relaxed);
                    c.dropped_queue.fetch_add(1, Relaxed);
                    return eng.release(slot);
                };
                dc.wan_out_bytes.fetch_add(len as u64, Relaxed);
                if eng.slab[slot as usize].lost {
                    c.dropped_loss.fetch_add(1, Relaxed);
                    return eng.release(slot);
                }
                let jitter = eng.slab[slot as usize].jitter;
                let at = eng.after_latency(src as u32, dst as u32, jitter, done);
                eng.push(at, slot, Stage::WanIn);
            }
            Stage::WanIn => {
                let dc = &self.dcs[b];
                if dc.cut.load(Relaxed) {
                    dc.wan_in_dropped.fetch_add(1, Relaxed);
                    c.dropped_cut.fetch_add(1, Relaxed);
                    return eng.release(slot);
                }
                let Some(done) = eng.wan_in[b].offer(t, len) else {
                    dc.wan_in_dropped.fetch_add(1, Relaxed);
                    c.dropped_queue.fetch_add(1, Relaxed);
                    return eng.release(slot);
                };
                dc.wan_in_bytes.fetch_add(len as u64, Relaxed);
                // A long header (first bit set) is used only until a
                // connection's handshake is done (RFC 9000, 17.2); a
                // datagram starting with one may carry a short-header
                // packet after it, which is counted with it.
                if eng.slab[slot as usize]
                    .data
                    .first()
                    .is_some_and(|b| b & 0x80 != 0)
                {
                    dc.wan_in_handshake_bytes.fetch_add(len as u64, Relaxed);
                } else if len < SMALL_DATAGRAM {
                    dc.wan_in_small_bytes.fetch_add(len as u64, Relaxed);
                }
                eng.push(done, slot, Stage::Down);
            }
            Stage::Down => match eng.down[dst].offer(t, len) {
                Some(done) => eng.push(done, slot, Stage::Deliver),
                None => {
                    c.dropped_queue.fetch_add(1, Relaxed);
                    eng.release(slot);
                }
            },
            Stage::Deliver => {
                let data = std::mem::take(&mut eng.slab[slot as usize].data);
                eng.release(slot);
                out.datagrams.push((
                    dst as u32,
                    Datagram {
                        from: self.hosts[src].addr,
                        data,
                    },
                ));
            }
            // Handled above.
            Stage::UpWake => {}
        }
    }

    /// Hands datagrams to their sockets and wakes tasks, outside the engine lock.
    fn flush(&self, out: &mut Outbox) {
        let mut last: Option<(u32, MutexGuard<'_, Inbox>)> = None;
        for (dst, d) in out.datagrams.drain(..) {
            let h = &self.hosts[dst as usize];
            let inbox = match &mut last {
                Some((ix, g)) if *ix == dst => g,
                _ => {
                    if let Some((_, mut g)) = last.take()
                        && let Some(w) = g.waker.take()
                    {
                        drop(g);
                        out.wakers.push(w);
                    }
                    &mut last.insert((dst, lock(&h.inbox))).1
                }
            };
            let len = d.data.len();
            if inbox.bytes + len > RECV_QUEUE_BYTES {
                self.counters.dropped_queue.fetch_add(1, Relaxed);
                continue;
            }
            inbox.bytes += len;
            inbox.queue.push_back(d);
            h.stats.recv_bytes.fetch_add(len as u64, Relaxed);
            h.stats.recv_packets.fetch_add(1, Relaxed);
        }
        if let Some((_, mut g)) = last.take()
            && let Some(w) = g.waker.take()
        {
            drop(g);
            out.wakers.push(w);
        }
        out.wakers.drain(..).for_each(Waker::wake);
    }
}

#[derive(Default)]
struct Outbox {
    datagrams: Vec<(u32, Datagram)>,
    wakers: Vec<Waker>,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.wakers.is_empty()
    }
}

impl Engine {
    fn push(&mut self, t: u64, slot: u32, stage: Stage) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, slot, stage)));
    }

    fn push_packet(&mut self, t: u64, p: Packet, stage: Stage) {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slab[s as usize] = p;
                s
            }
            None => {
                self.slab.push(p);
                (self.slab.len() - 1) as u32
            }
        };
        self.push(t, slot, stage);
    }

    fn release(&mut self, slot: u32) {
        self.slab[slot as usize].data = Vec::new();
        self.free.push(slot);
    }

    fn jitter_draw(&mut self) -> u64 {
        if self.jitter == 0 {
            0
        } else {
            (self.rng.unit() * self.jitter as f64) as u64
        }
    }

    /// When a packet from host `src` to `dst` that left its last private hop at
    /// `t` reaches the far side of the latency between their datacenters: never
    /// before the one sent ahead of it on the same pair of hosts.
    fn after_latency(&mut self, src: u32, dst: u32, jitter: u64, t: u64) -> u64 {
        let a = self.host_dc[src as usize] as usize;
        let b = self.host_dc[dst as usize] as usize;
        let at = t + self.lat[a * self.ndc + b] + jitter;
        if self.jitter == 0 {
            // Constant latency and FIFO links keep the order by themselves.
            return at;
        }
        let last = self
            .last_arrival
            .entry(u64::from(src) << 32 | u64::from(dst))
            .or_insert(0);
        *last = (*last).max(at);
        *last
    }
}

/// SplitMix64: tiny, fast and good enough for loss and jitter draws.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}
