//! Peer connections, chunk serving and the routing of swarm messages to sessions.

use crate::session::{SessionEvent, spawn_session};
use crate::slots::{Class, Permit, UploadSlots};
use shoal_bundle::assemble::InstallOptions;
use shoal_bundle::chunk::decode_chunk;
use shoal_bundle::manifest::ChunkRef;
use shoal_bundle::signing::{TrustedKey, Verified};
use shoal_bundle::{ChunkStore, Hash, Root};
use shoal_net::{NetError, recv_msg, send_msg};
use shoal_proto::{Hello, MAX_CONTROL, Msg, PROTOCOL_VERSION, Role, bits_to_bytes, check_hello};
use shoal_swarm::{BitSet, TokenBucket};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
// tokio's clock, so a simulated fleet (netsim) can run in virtual time.
use tokio::time::Instant;

/// How long `Have`s wait to be sent together: briefly inside a datacenter
/// (chunks spread hop by hop there), longer across, where peers fetch only
/// what no host of their own datacenter holds. Every pair of hosts keeps a
/// connection, so each batch across costs a packet and its ACK per pair: on
/// `3dc-48`, 2 s instead of 500 ms took the bytes into each remote
/// datacenter from 1.30 to 1.24 F, with no loss of time.
const HAVE_BATCH_LOCAL: Duration = Duration::from_millis(5);
const HAVE_BATCH_REMOTE: Duration = Duration::from_millis(2000);
/// Chunks per batched `Have`, well within a control frame.
const HAVE_BATCH_MAX: usize = 8192;

/// `Have`s waiting to be sent to one peer.
struct HaveBatch {
    chunks: HashMap<Hash, Vec<u32>>,
    len: usize,
    due: Instant,
}

impl Default for HaveBatch {
    fn default() -> Self {
        HaveBatch {
            chunks: HashMap::new(),
            len: 0,
            due: Instant::now(),
        }
    }
}

impl HaveBatch {
    fn pending(&self) -> bool {
        self.len > 0
    }

    fn len(&self) -> usize {
        self.len
    }

    fn add(&mut self, id: Hash, chunks: Vec<u32>, delay: Duration) {
        if self.len == 0 {
            self.due = Instant::now() + delay;
        }
        self.len += chunks.len();
        self.chunks.entry(id).or_default().extend(chunks);
    }

    async fn flush(&mut self, send: &mut quinn::SendStream) -> Result<(), NetError> {
        self.len = 0;
        for (id, chunks) in self.chunks.drain() {
            send_msg(send, &Msg::Have { id, chunks }).await?;
        }
        Ok(())
    }
}

/// How long a tracker request may take.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// How long a manifest request waits for a release this host is about to
/// know (see `Node::known_soon`); well inside the asker's `REQUEST_DEADLINE`.
const MANIFEST_WAIT: Duration = Duration::from_secs(2);
/// Send priority of piece streams: below control traffic (default 0).
const PIECE_PRIORITY: i32 = -1;

/// Answers requests that are not about chunks (the tracker's).
pub trait Control: Send + Sync {
    /// A host said Hello on a connection.
    fn hello(&self, from: &Hello);
    /// A request from `from`; the answer goes back on the same stream.
    fn handle(&self, from: &Hello, msg: Msg) -> Msg;
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Proto(#[from] shoal_proto::ProtoError),
    #[error(transparent)]
    Bundle(#[from] shoal_bundle::Error),
    #[error("{host}: {message}")]
    Peer { host: String, message: String },
    /// No answer in time: what the peer did is unknown.
    #[error("{host} did not answer {what}")]
    Timeout { host: String, what: String },
    #[error("connection lost: {0}")]
    Connection(#[from] quinn::ConnectionError),
}

pub struct NodeOptions {
    pub host: String,
    pub dc: String,
    pub role: Role,
    /// Where fetched releases are assembled (agents).
    pub root: Option<Root>,
    pub store: ChunkStore,
    pub trusted: Vec<TrustedKey>,
    /// The address peers should dial.
    pub advertise: Option<SocketAddr>,
    pub auto_activate: bool,
    pub upload_limit: u64,
    pub download_limit: u64,
    pub upload_slots: usize,
    /// This host's link speed (bytes/s): each connection to a host of its own
    /// datacenter holds its bytes in flight to twice that path's
    /// bandwidth-delay product ([`shoal_net::send_window_for`]). 0: as the
    /// endpoint's tuning allows.
    pub link_bandwidth: u64,
    pub install: InstallOptions<'static>,
    pub swarm: shoal_swarm::Config,
    /// A request not answered in this time is given up (slow retrieval).
    pub request_timeout: Duration,
    pub fault_corrupt_uploads: bool,
}

/// Bytes moved, for reports and tests.
#[derive(Default, Debug)]
pub struct Counters {
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    pub bytes_down_cross_dc: AtomicU64,
    pub bytes_up_cross_dc: AtomicU64,
    pub chunks_fetched: AtomicU64,
    /// Chunks that arrived as patches against a chunk held here.
    pub chunks_patched: AtomicU64,
    /// Manifests that arrived as patches against one held here.
    pub manifests_patched: AtomicU64,
    pub chunks_rejected: AtomicU64,
    pub peers_banned: AtomicU64,
    /// `Have` messages received (a seed gets none: see `broadcast_have`).
    pub haves_in: AtomicU64,
    /// Chunk bytes (up, down) per peer datacenter, for metrics.
    pub by_dc: Mutex<std::collections::BTreeMap<String, (u64, u64)>>,
}

impl Counters {
    pub fn add_dc(&self, dc: &str, up: u64, down: u64) {
        let mut m = self.by_dc.lock().expect("counters lock");
        match m.get_mut(dc) {
            Some(e) => {
                e.0 += up;
                e.1 += down;
            }
            None => {
                m.insert(dc.to_string(), (up, down));
            }
        }
    }
}

/// A release this node knows: being fetched, or held whole.
pub(crate) struct Known {
    pub release: Verified,
    /// Chunks held (all of them once complete).
    pub have: Mutex<BitSet>,
}

/// What a peer's writer task is handed: a message, sent in order (`Have`s
/// wait for their batch), or a `Have` that goes at once with its batch.
pub(crate) enum Out {
    Msg(Msg),
    HaveNow(Msg),
}

pub(crate) struct Peer {
    pub host: String,
    pub dc: String,
    pub role: Role,
    pub conn: quinn::Connection,
    pub ctl: mpsc::UnboundedSender<Out>,
    /// This node opened the connection (rather than accepted it).
    pub dialed: bool,
    /// The peer said it is full (`Msg::Full`): its requests wait behind
    /// those of hosts with room (`UploadSlots::release`).
    pub full: Arc<AtomicBool>,
}

#[derive(Default)]
struct State {
    peers: HashMap<u64, Arc<Peer>>,
    by_host: HashMap<String, u64>,
    releases: HashMap<Hash, Arc<Known>>,
    sessions: HashMap<Hash, mpsc::UnboundedSender<SessionEvent>>,
    /// (peer, release) pairs whose bitfield has arrived.
    bitfields_from: HashSet<(u64, Hash)>,
    transfer: Option<shoal_proto::Transfer>,
}

pub struct Node {
    pub opts: NodeOptions,
    pub endpoint: quinn::Endpoint,
    control: Option<Arc<dyn Control>>,
    state: Mutex<State>,
    /// Upload slots; past `upload_slots` waiting requests (of each class:
    /// from this datacenter, from others) a request is answered `Busy` so its
    /// asker turns to another holder.
    slots: UploadSlots,
    up: Mutex<TokenBucket>,
    pub(crate) down: Mutex<TokenBucket>,
    epoch: Instant,
    next_peer: AtomicU64,
    pub counters: Counters,
    /// Hosts being dialled now, so a redial does not open a second connection.
    dialing: Mutex<HashSet<String>>,
    /// Set by `shutdown`: background loops end.
    closed: std::sync::atomic::AtomicBool,
    /// When each release fetched by this node was installed and verified.
    installed: tokio::sync::watch::Sender<HashMap<Hash, Instant>>,
    /// An agent's rollout orders (switch, audit); none on a seed.
    orders: std::sync::OnceLock<Arc<crate::orders::Orders>>,
    /// Manifests being sent from here now; see [`ManifestFirst`].
    manifests_out: tokio::sync::watch::Sender<usize>,
    /// Notified whenever a release becomes known here.
    known_added: tokio::sync::Notify,
}

impl Node {
    /// Starts accepting connections on `endpoint`.
    pub fn start(
        opts: NodeOptions,
        endpoint: quinn::Endpoint,
        control: Option<Arc<dyn Control>>,
    ) -> Arc<Node> {
        let node = Arc::new(Node {
            slots: UploadSlots::new(opts.upload_slots),
            up: Mutex::new(TokenBucket::new(opts.upload_limit, 1 << 20)),
            down: Mutex::new(TokenBucket::new(opts.download_limit, 1 << 20)),
            opts,
            endpoint,
            control,
            state: Mutex::new(State::default()),
            epoch: Instant::now(),
            next_peer: AtomicU64::new(1),
            counters: Counters::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
            dialing: Mutex::new(HashSet::new()),
            installed: tokio::sync::watch::Sender::new(HashMap::new()),
            orders: std::sync::OnceLock::new(),
            manifests_out: tokio::sync::watch::Sender::new(0),
            known_added: tokio::sync::Notify::new(),
        });
        let n = node.clone();
        tokio::spawn(async move {
            while let Some(incoming) = n.endpoint.accept().await {
                let n = n.clone();
                tokio::spawn(async move {
                    if let Err(e) = n.clone().accept(incoming).await {
                        tracing::debug!(error = %e, "incoming connection refused");
                    }
                });
            }
        });
        node
    }

    /// Lets this node carry out rollout orders (agents).
    pub fn set_orders(&self, orders: Arc<crate::orders::Orders>) {
        let _ = self.orders.set(orders);
    }

    pub fn orders(&self) -> Option<&Arc<crate::orders::Orders>> {
        self.orders.get()
    }

    /// Whether `shutdown` was called.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Relaxed)
    }

    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    pub fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            role: self.opts.role,
            host: self.opts.host.clone(),
            dc: self.opts.dc.clone(),
            listen: self.opts.advertise.map(|a| a.to_string()),
        }
    }

    /// Makes a release known and held whole (a seed's packed release, an agent's
    /// installed one): it is offered to every peer.
    pub fn add_complete(&self, release: Verified) {
        let n = release.manifest.chunks.len();
        let id = release.id;
        let known = Arc::new(Known {
            release,
            have: Mutex::new(BitSet::full(n)),
        });
        let peers: Vec<Arc<Peer>> = {
            let mut st = self.state.lock().expect("state lock");
            st.releases.insert(id, known.clone());
            st.peers.values().cloned().collect()
        };
        self.known_added.notify_waiters();
        for p in peers {
            let _ = p.ctl.send(Out::Msg(bitfield_msg(id, &known)));
        }
    }

    /// Starts fetching a release unless it is known already. Returns whether it started.
    pub fn fetch(self: &Arc<Self>, release: Verified) -> bool {
        let id = release.id;
        let have = BitSet::new(release.manifest.chunks.len());
        let known = Arc::new(Known {
            release,
            have: Mutex::new(have),
        });
        {
            let mut have = known.have.lock().expect("have lock");
            for (i, c) in known.release.manifest.chunks.iter().enumerate() {
                if self.opts.store.contains(&c.hash) {
                    have.set(i);
                }
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let peers: Vec<(u64, Arc<Peer>)> = {
            let mut st = self.state.lock().expect("state lock");
            if st.releases.contains_key(&id) {
                return false;
            }
            st.releases.insert(id, known.clone());
            st.sessions.insert(id, tx.clone());
            st.peers.iter().map(|(k, v)| (*k, v.clone())).collect()
        };
        self.known_added.notify_waiters();
        for (pid, p) in peers {
            let _ = tx.send(SessionEvent::PeerUp {
                peer: pid,
                host: p.host.clone(),
                dc: p.dc.clone(),
                local: p.dc == self.opts.dc,
                seed: p.role == Role::Seed,
            });
            let _ = p.ctl.send(Out::Msg(bitfield_msg(id, &known)));
        }
        spawn_session(self.clone(), known, tx, rx);
        true
    }

    /// The release a new one most likely changes a little: the newest other
    /// release held whole here. Its chunks are the bases of patches and its
    /// signed manifest the base of the new manifest's patch.
    pub(crate) fn base_release(&self, not: &Hash) -> Option<Arc<Known>> {
        let st = self.state.lock().expect("state lock");
        st.releases
            .iter()
            .filter(|(id, k)| {
                *id != not && {
                    let have = k.have.lock().expect("have lock");
                    have.count() == have.len()
                }
            })
            .max_by_key(|(_, k)| k.release.freshness.counter)
            .map(|(_, k)| k.clone())
    }

    /// The channel into a release's session, if it is being fetched.
    fn session(&self, id: &Hash) -> Option<mpsc::UnboundedSender<SessionEvent>> {
        self.state
            .lock()
            .expect("state lock")
            .sessions
            .get(id)
            .cloned()
    }

    /// Tells a release's session which other agents of this datacenter fetch
    /// `id`, and whether the seed's datacenter has agents other than this host.
    pub fn set_members(&self, id: Hash, view: crate::listing::SwarmView) {
        if let Some(s) = self.session(&id) {
            let _ = s.send(SessionEvent::Members(view));
        }
    }

    pub(crate) fn mark_installed(&self, id: Hash) {
        self.installed.send_modify(|m| {
            m.insert(id, Instant::now());
        });
    }

    /// When this node finished installing and verifying release `id` it fetched.
    pub fn installed_at(&self, id: &Hash) -> Option<Instant> {
        self.installed.borrow().get(id).copied()
    }

    /// Waits until release `id` is installed and verified here; returns when.
    pub async fn wait_installed(&self, id: Hash) -> Instant {
        let mut rx = self.installed.subscribe();
        let seen = rx.wait_for(|m| m.contains_key(&id)).await;
        // The sender lives as long as `self`, so the wait cannot fail.
        seen.ok()
            .and_then(|m| m.get(&id).copied())
            .unwrap_or_else(Instant::now)
    }

    pub(crate) fn session_done(&self, id: Hash) {
        let mut st = self.state.lock().expect("state lock");
        st.sessions.remove(&id);
        st.transfer = None;
    }

    pub(crate) fn set_transfer(&self, t: shoal_proto::Transfer) {
        self.state.lock().expect("state lock").transfer = Some(t);
    }

    pub fn totals(&self) -> shoal_proto::Totals {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        shoal_proto::Totals {
            bytes_up: get(&c.bytes_up),
            bytes_down: get(&c.bytes_down),
            bytes_down_cross_dc: get(&c.bytes_down_cross_dc),
            bytes_up_cross_dc: get(&c.bytes_up_cross_dc),
            chunks_fetched: get(&c.chunks_fetched),
            chunks_rejected: get(&c.chunks_rejected),
            peers_banned: get(&c.peers_banned),
        }
    }

    pub fn transfer(&self) -> Option<shoal_proto::Transfer> {
        self.state.lock().expect("state lock").transfer.clone()
    }

    /// The release `id`, waiting up to [`MANIFEST_WAIT`] for it to become
    /// known here. Hosts below this one in the datacenter's manifest tree ask
    /// as soon as they learn of a release, usually before this host has its
    /// manifest: answering once it arrives saves each level of the tree a
    /// poll and a round trip to the tracker.
    async fn known_soon(&self, id: &Hash) -> Option<Arc<Known>> {
        let deadline = Instant::now() + MANIFEST_WAIT;
        loop {
            let added = self.known_added.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            if let Some(k) = self.known(id) {
                return Some(k);
            }
            if tokio::time::timeout_at(deadline, added).await.is_err() {
                return None;
            }
        }
    }

    fn known(&self, id: &Hash) -> Option<Arc<Known>> {
        self.state
            .lock()
            .expect("state lock")
            .releases
            .get(id)
            .cloned()
    }

    pub fn knows(&self, id: &Hash) -> bool {
        self.state
            .lock()
            .expect("state lock")
            .releases
            .contains_key(id)
    }

    pub fn fetching(&self) -> Vec<Hash> {
        self.state
            .lock()
            .expect("state lock")
            .sessions
            .keys()
            .copied()
            .collect()
    }

    pub fn peer_count(&self) -> usize {
        self.state.lock().expect("state lock").peers.len()
    }

    pub(crate) fn peer(&self, id: u64) -> Option<Arc<Peer>> {
        self.state
            .lock()
            .expect("state lock")
            .peers
            .get(&id)
            .cloned()
    }

    pub fn peer_id(&self, host: &str) -> Option<u64> {
        self.state
            .lock()
            .expect("state lock")
            .by_host
            .get(host)
            .copied()
    }

    /// Tells the peers that may fetch from us that we hold a chunk: those of
    /// this datacenter, and those across only if `across` (see
    /// `Action::Have`). Never seeds, which hold every chunk and fetch none:
    /// each `Have` is a packet the seed must acknowledge, on the uplink that
    /// bounds the transfer.
    pub(crate) fn broadcast_have(&self, msg: Msg, across: bool) {
        self.send_control(msg, |p| {
            p.role != Role::Seed && (across || p.dc == self.opts.dc)
        });
    }

    /// Tells the peers of this datacenter, at once, whether this host is
    /// full (see `Action::Full`).
    pub(crate) fn tell_neighbours(&self, msg: Msg) {
        self.send_control(msg, |p| p.dc == self.opts.dc);
    }

    /// Queues `msg` on the control stream of every peer `to` picks.
    fn send_control(&self, msg: Msg, to: impl Fn(&Peer) -> bool) {
        let peers: Vec<Arc<Peer>> = self
            .state
            .lock()
            .expect("state lock")
            .peers
            .values()
            .filter(|p| to(p))
            .cloned()
            .collect();
        for p in peers {
            let _ = p.ctl.send(Out::Msg(msg.clone()));
        }
    }

    /// Tells one peer at once that we hold a chunk (see `Action::Tell`).
    pub(crate) fn tell_now(&self, peer: u64, msg: Msg) {
        if let Some(p) = self.peer(peer) {
            let _ = p.ctl.send(Out::HaveNow(msg));
        }
    }

    /// Connects to a peer unless already connected; returns its peer id.
    pub async fn connect(self: &Arc<Self>, addr: SocketAddr, host: &str) -> Result<u64, NodeError> {
        // Another task dialling the same host: wait for its connection rather
        // than open a second one (or fail), and dial ourselves if it fails.
        let deadline = Instant::now() + REQUEST_DEADLINE;
        loop {
            if let Some(id) = self.peer_id(host) {
                return Ok(id);
            }
            if self
                .dialing
                .lock()
                .expect("dialing lock")
                .insert(host.to_string())
            {
                break;
            }
            if Instant::now() > deadline {
                return Err(NodeError::Peer {
                    host: host.to_string(),
                    message: "still being dialled by another task".into(),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let result = self.clone().dial(addr, host).await;
        self.dialing.lock().expect("dialing lock").remove(host);
        result
    }

    async fn dial(self: Arc<Self>, addr: SocketAddr, host: &str) -> Result<u64, NodeError> {
        let conn = shoal_net::connect(&self.endpoint, addr, host).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        send_msg(&mut send, &Msg::Hello(self.hello())).await?;
        let hello =
            match tokio::time::timeout(Duration::from_secs(10), recv_msg(&mut recv, MAX_CONTROL))
                .await
            {
                Ok(r) => r?,
                Err(_) => None,
            };
        let hello = check_hello(hello.unwrap_or(Msg::Ok))?;
        let mut hello = hello;
        hello.dc = shoal_net::peer_name(&conn)?.dc;
        if hello.host != host {
            conn.close(2u32.into(), b"wrong host");
            return Err(NodeError::Peer {
                host: host.to_string(),
                message: format!("answered as {}", hello.host),
            });
        }
        Ok(self.register(conn, hello, send, recv, true))
    }

    /// Handles a connection someone opened to us.
    async fn accept(self: Arc<Self>, incoming: quinn::Incoming) -> Result<(), NodeError> {
        // The TLS handshake refuses any client without a cluster certificate
        // before a byte of the protocol is read.
        let conn = incoming.await?;
        let (mut send, mut recv) =
            match tokio::time::timeout(Duration::from_secs(10), conn.accept_bi()).await {
                Ok(r) => r?,
                Err(_) => {
                    conn.close(1u32.into(), b"no hello");
                    return Ok(());
                }
            };
        let first = recv_msg(&mut recv, MAX_CONTROL).await?;
        let mut hello = match check_hello(first.unwrap_or(Msg::Ok)) {
            Ok(h) => h,
            Err(e) => {
                conn.close(1u32.into(), b"protocol");
                return Err(e.into());
            }
        };
        // The certificate, not the message, says who this is and where it runs.
        let name = shoal_net::peer_name(&conn)?;
        if name.host != hello.host {
            conn.close(1u32.into(), b"hello names another host");
            return Err(NodeError::Peer {
                host: name.host,
                message: format!("said hello as {}", hello.host),
            });
        }
        hello.dc = name.dc;
        send_msg(&mut send, &Msg::Hello(self.hello())).await?;
        if let Some(c) = &self.control {
            c.hello(&hello);
        }
        self.register(conn, hello, send, recv, false);
        Ok(())
    }

    /// Records a connected peer and starts its reader, writer and request server.
    fn register(
        self: Arc<Self>,
        conn: quinn::Connection,
        hello: Hello,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
        dialed: bool,
    ) -> u64 {
        let id = self.next_peer.fetch_add(1, Ordering::Relaxed);
        // Inside a datacenter many hosts send to one at once, and windows
        // grown by loss-based congestion control overflow its queue.
        if self.opts.link_bandwidth > 0 && hello.dc == self.opts.dc {
            conn.set_send_window(shoal_net::send_window_for(
                self.opts.link_bandwidth,
                shoal_net::LOCAL_RTT,
            ));
        }
        let (ctl, mut ctl_rx) = mpsc::unbounded_channel::<Out>();
        let peer = Arc::new(Peer {
            host: hello.host.clone(),
            dc: hello.dc.clone(),
            role: hello.role,
            conn: conn.clone(),
            ctl,
            dialed,
            full: Arc::default(),
        });
        let mut replaced = None;
        let (releases, sessions) = {
            let mut st = self.state.lock().expect("state lock");
            // Two hosts that dial each other at once end up with two
            // connections; both keep the one dialed by the smaller host name
            // and close the other, so each pair shares exactly one. A second
            // connection dialed the same way as the first is a redial (the
            // first may be dead without a word): it replaces the first.
            if hello.role != Role::Client
                && let Some(&old) = st.by_host.get(&hello.host)
                && let Some(old_peer) = st.peers.get(&old)
            {
                let canonical = self.opts.host < hello.host;
                if old_peer.dialed != dialed && old_peer.dialed == canonical {
                    drop(st);
                    conn.close(0u32.into(), b"duplicate connection");
                    return old;
                }
                replaced = Some(old_peer.conn.clone());
            }
            st.peers.insert(id, peer.clone());
            if hello.role == Role::Client {
                // A command-line client (status, deploy, audit) only sends
                // requests: it is no swarm peer and stands for no host's
                // peer connection.
                (Vec::new(), Vec::new())
            } else {
                st.by_host.insert(hello.host.clone(), id);
                (
                    st.releases
                        .iter()
                        .map(|(k, v)| (*k, v.clone()))
                        .collect::<Vec<_>>(),
                    st.sessions.values().cloned().collect::<Vec<_>>(),
                )
            }
        };
        if let Some(old) = replaced {
            old.close(0u32.into(), b"duplicate connection");
        }
        tracing::debug!(peer = %hello.host, dc = %hello.dc, "peer connected");
        for s in sessions {
            let _ = s.send(SessionEvent::PeerUp {
                peer: id,
                host: hello.host.clone(),
                dc: hello.dc.clone(),
                local: hello.dc == self.opts.dc,
                seed: hello.role == Role::Seed,
            });
        }
        for (rid, known) in releases {
            let _ = peer.ctl.send(Out::Msg(bitfield_msg(rid, &known)));
        }
        // Writer: control messages in order, `Have`s batched.
        let delay = if hello.dc == self.opts.dc {
            HAVE_BATCH_LOCAL
        } else {
            HAVE_BATCH_REMOTE
        };
        let whom = hello.host.clone();
        let me = self.opts.host.clone();
        tokio::spawn(async move {
            let mut batch = HaveBatch::default();
            loop {
                let m = tokio::select! {
                    m = ctl_rx.recv() => match m {
                        Some(m) => m,
                        None => break,
                    },
                    _ = tokio::time::sleep_until(batch.due), if batch.pending() => {
                        if batch.flush(&mut send).await.is_err() {
                            break;
                        }
                        continue;
                    }
                };
                let (m, now) = match m {
                    Out::Msg(m) => (m, false),
                    Out::HaveNow(m) => (m, true),
                };
                tracing::trace!(me = %me, peer = %whom, msg = m.name(), now, "control out");
                let sent = match m {
                    Msg::Have { id, chunks } => {
                        // What waits in the batch goes along.
                        batch.add(id, chunks, delay);
                        if !now && batch.len() < HAVE_BATCH_MAX {
                            continue;
                        }
                        batch.flush(&mut send).await
                    }
                    m => send_msg(&mut send, &m).await,
                };
                if sent.is_err() {
                    break;
                }
            }
        });
        // Reader: bitfields and haves.
        let n = self.clone();
        let p = peer.clone();
        tokio::spawn(async move {
            loop {
                match recv_msg(&mut recv, MAX_CONTROL).await {
                    Ok(Some(m)) => {
                        tracing::trace!(me = %n.opts.host, peer = %p.host, pid = id, msg = m.name(), "control in");
                        if let Err(why) = n.on_control(id, &p, m) {
                            tracing::warn!(peer = %p.host, why, "closing connection");
                            p.conn.close(1u32.into(), why.as_bytes());
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e @ NetError::Proto(_)) => {
                        tracing::warn!(peer = %p.host, error = %e, "closing connection");
                        p.conn.close(1u32.into(), b"bad control message");
                        break;
                    }
                    // Gone: closed (a duplicate, a shutdown), timed out or reset.
                    Err(e) => {
                        tracing::debug!(peer = %p.host, error = %e, "peer disconnected");
                        break;
                    }
                }
            }
            n.unregister(id);
        });
        // Requests the peer opens.
        let n = self.clone();
        let from = hello;
        // Whether the asker said it is full, read by the upload slots.
        let full = peer.full.clone();
        tokio::spawn(async move {
            while let Ok((send, recv)) = conn.accept_bi().await {
                let n = n.clone();
                let from = from.clone();
                let full = full.clone();
                let conn = conn.clone();
                tokio::spawn(async move {
                    if let Err(e) = n.serve(&from, full, send, recv).await {
                        tracing::warn!(peer = %from.host, error = %e, "closing connection");
                        conn.close(1u32.into(), b"bad request");
                    }
                });
            }
        });
        id
    }

    fn unregister(&self, id: u64) {
        let sessions = {
            let mut st = self.state.lock().expect("state lock");
            if let Some(p) = st.peers.remove(&id)
                && st.by_host.get(&p.host) == Some(&id)
            {
                st.by_host.remove(&p.host);
            }
            st.bitfields_from.retain(|(p, _)| *p != id);
            st.sessions.values().cloned().collect::<Vec<_>>()
        };
        for s in sessions {
            let _ = s.send(SessionEvent::PeerDown { peer: id });
        }
    }

    /// A control message from a peer. Err closes the connection.
    fn on_control(&self, pid: u64, peer: &Peer, m: Msg) -> Result<(), &'static str> {
        match m {
            Msg::Bitfield { id, bits } => {
                let (first, known, session) = {
                    let mut st = self.state.lock().expect("state lock");
                    (
                        st.bitfields_from.insert((pid, id)),
                        st.releases.get(&id).cloned(),
                        st.sessions.get(&id).cloned(),
                    )
                };
                if let Some(known) = &known {
                    if bits.len() != known.release.manifest.chunks.len().div_ceil(8) {
                        return Err("bitfield of the wrong length");
                    }
                    // Answer a peer's first bitfield with ours, so peers that
                    // learned of a release at different times still meet.
                    if first {
                        let _ = peer.ctl.send(Out::Msg(bitfield_msg(id, known)));
                    }
                }
                if let Some(s) = session {
                    let _ = s.send(SessionEvent::Bitfield { peer: pid, bits });
                }
                Ok(())
            }
            Msg::Have { id, chunks } => {
                self.counters.haves_in.fetch_add(1, Ordering::Relaxed);
                let (known, session) = {
                    let st = self.state.lock().expect("state lock");
                    (st.releases.get(&id).cloned(), st.sessions.get(&id).cloned())
                };
                if let Some(known) = known {
                    let n = known.release.manifest.chunks.len();
                    if chunks.iter().any(|&c| c as usize >= n) {
                        return Err("have for a chunk the release does not have");
                    }
                }
                if let Some(s) = session {
                    let _ = s.send(SessionEvent::Have { peer: pid, chunks });
                }
                Ok(())
            }
            Msg::Full { full } => {
                peer.full.store(full, Ordering::Relaxed);
                Ok(())
            }
            _ => Err("unexpected message on the control stream"),
        }
    }

    /// One request stream: a chunk, or a request for the control handler.
    /// Err only for a protocol violation (which closes the connection); a peer
    /// that cancels a request by stopping or resetting its stream ends just that
    /// request.
    async fn serve(
        &self,
        from: &Hello,
        full: Arc<AtomicBool>,
        mut send: quinn::SendStream,
        mut recv: quinn::RecvStream,
    ) -> Result<(), NodeError> {
        let msg = match recv_msg(&mut recv, MAX_CONTROL).await {
            Ok(Some(m)) => m,
            Ok(None) => return Ok(()),
            Err(NetError::Proto(e)) => return Err(e.into()),
            Err(_) => return Ok(()),
        };
        // A piece holds an upload slot until the peer has all its bytes, so a
        // busy uplink carries a few pieces at a time and each finishes soon
        // (and can be passed on), instead of every request crawling at once.
        // Pieces yield to control traffic (manifests, tracker answers) on the
        // same connection.
        let mut slot = None;
        let reply = match msg {
            Msg::Request { .. } | Msg::RequestPatch { .. } => {
                let (id, chunk, base) = match msg {
                    Msg::RequestPatch {
                        id,
                        chunk,
                        base,
                        base_len,
                    } => (
                        id,
                        chunk,
                        Some(ChunkRef {
                            hash: base,
                            len: base_len,
                        }),
                    ),
                    Msg::Request { id, chunk } => (id, chunk, None),
                    _ => unreachable!("matched above"),
                };
                let _ = send.set_priority(PIECE_PRIORITY);
                // Without locality (a classic BitTorrent client, as
                // `--strategy bittorrent` runs it) every asker is alike.
                let class = if from.dc != self.opts.dc && self.opts.swarm.locality {
                    Class::Cross
                } else {
                    Class::Local
                };
                let (reply, permit) = self.piece(id, chunk, base, class, full).await;
                if let Msg::Piece { data, .. } | Msg::Patch { data, .. } = &reply {
                    self.counters.add_dc(&from.dc, data.len() as u64, 0);
                    if from.dc != self.opts.dc {
                        self.counters
                            .bytes_up_cross_dc
                            .fetch_add(data.len() as u64, Ordering::Relaxed);
                    }
                }
                slot = permit;
                reply
            }
            // Any host that holds a release's manifest hands it on, so the
            // deploy host's uplink carries it a few times, not once per host.
            Msg::GetManifest { id } | Msg::GetManifestPatch { id, .. }
                if self.control.is_none() =>
            {
                let base = match msg {
                    Msg::GetManifestPatch { base, .. } => self.known(&base).map(|k| (base, k)),
                    _ => None,
                };
                match self.known_soon(&id).await {
                    Some(k) => {
                        tracing::debug!(peer = %from.host, patch = base.is_some(), "manifest handed on");
                        shoal_proto::manifest_answer(
                            id,
                            &k.release.signed_bytes,
                            base.as_ref()
                                .map(|(b, k)| (*b, k.release.signed_bytes.as_slice())),
                        )
                    }
                    None => Msg::Error {
                        message: format!("no release {id} here"),
                    },
                }
            }
            m @ (Msg::Order { .. } | Msg::Audit) if self.orders.get().is_some() => {
                let orders = self.orders.get().expect("checked").clone();
                orders.handle(m).await
            }
            other => match &self.control {
                Some(c) => c.handle(from, other),
                None => {
                    return Err(NodeError::Peer {
                        host: from.host.clone(),
                        message: format!("sent {} to a node that is no tracker", other.name()),
                    });
                }
            },
        };
        let _first = matches!(
            reply,
            Msg::Manifest { .. } | Msg::ManifestPatch { .. } | Msg::ManifestCompressed { .. }
        )
        .then(|| ManifestFirst::new(&self.manifests_out));
        if send_msg(&mut send, &reply).await.is_err() {
            return Ok(()); // cancelled, or the connection is gone
        }
        let _ = send.finish();
        // Wait until the peer has the bytes (or goes away) before dropping the stream.
        let _ = send.stopped().await;
        drop(slot);
        Ok(())
    }

    /// The compressed bytes of a chunk, within the upload slots and rate, and
    /// the slot it holds.
    async fn piece(
        &self,
        id: Hash,
        chunk: u32,
        base: Option<ChunkRef>,
        class: Class,
        full: Arc<AtomicBool>,
    ) -> (Msg, Option<Permit<'_>>) {
        let cref = {
            let st = self.state.lock().expect("state lock");
            st.releases
                .get(&id)
                .and_then(|k| k.release.manifest.chunks.get(chunk as usize).copied())
        };
        let Some(cref) = cref else {
            return (Msg::Reject { id, chunk }, None);
        };
        let Some(permit) = self.slots.acquire(class, full).await else {
            return (Msg::Busy { id, chunk }, None);
        };
        // A manifest going out from here goes first (see ManifestFirst).
        let mut out = self.manifests_out.subscribe();
        let _ = tokio::time::timeout(MANIFEST_FIRST_MAX, out.wait_for(|n| *n == 0)).await;
        let Ok(mut data) = self.opts.store.read_compressed(&cref) else {
            return (Msg::Reject { id, chunk }, None);
        };
        if self.opts.fault_corrupt_uploads {
            // Keep it a valid frame of the right length: only the hash check can tell.
            let mut d = zstd::bulk::Decompressor::new().expect("zstd context");
            if let Ok(mut plain) = d.decompress(&data, cref.len as usize) {
                if let Some(b) = plain.first_mut() {
                    *b ^= 0xff;
                }
                data = zstd::bulk::compress(&plain, 1).unwrap_or(data);
            }
        }
        let reply = match base.and_then(|b| self.patch(&cref, &data, &b)) {
            Some(patch) => Msg::Patch {
                id,
                chunk,
                data: patch,
            },
            None => Msg::Piece { id, chunk, data },
        };
        let (Msg::Piece { data, .. } | Msg::Patch { data, .. }) = &reply else {
            unreachable!("built above")
        };
        let n = data.len() as u64;
        let wait = self.up.lock().expect("bucket lock").take(self.now(), n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        self.counters.bytes_up.fetch_add(n, Ordering::Relaxed);
        (reply, Some(permit))
    }

    /// The chunk whose stored bytes are `data` as a patch against `base`, if
    /// this node holds the base and the patch is smaller than `data`. A chunk
    /// whose stored bytes do not verify is sent as it is: a corrupt store is
    /// the asker's hash check to find, not a reason to patch from bad bytes.
    fn patch(&self, cref: &ChunkRef, data: &[u8], base: &ChunkRef) -> Option<Vec<u8>> {
        thread_local! {
            static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        if base.len > shoal_bundle::chunk::MAX_CHUNK || !self.opts.store.contains(&base.hash) {
            return None;
        }
        let (target, base_plain) = DECOMPRESSOR.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            let d = d.as_mut()?;
            let target = decode_chunk(cref, data, d).ok()?;
            let base_plain = self.opts.store.get(base, d).ok()?;
            Some((target, base_plain))
        })?;
        let patch = shoal_bundle::patch::make(&base_plain, &target).ok()?;
        (patch.len() < data.len()).then_some(patch)
    }
}

/// The longest a piece waits for manifests going out from the same host.
const MANIFEST_FIRST_MAX: Duration = Duration::from_millis(500);

/// Held while a manifest is sent: new pieces wait (up to
/// [`MANIFEST_FIRST_MAX`]) until it is gone. quinn orders streams within a
/// connection, not across them, so a manifest of hundreds of KB would get one
/// connection's share of a busy uplink, and the hosts waiting for it, below
/// it in the datacenter's manifest tree, could not even start: in the 48-host
/// simulation they joined up to 8 s late. Bounded, so a peer asking for
/// manifests again and again only slows this host's uploads.
struct ManifestFirst<'a>(&'a tokio::sync::watch::Sender<usize>);

impl<'a> ManifestFirst<'a> {
    fn new(out: &'a tokio::sync::watch::Sender<usize>) -> Self {
        out.send_modify(|n| *n += 1);
        ManifestFirst(out)
    }
}

impl Drop for ManifestFirst<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n -= 1);
    }
}

fn bitfield_msg(id: Hash, known: &Known) -> Msg {
    let have = known.have.lock().expect("have lock");
    Msg::Bitfield {
        id,
        bits: bits_to_bytes(have.iter(), have.len()),
    }
}

impl Node {
    /// Sends one request on a new stream of peer `id`'s connection and reads the
    /// answer. A peer that does not answer within `REQUEST_DEADLINE` is taken
    /// for dead: its connection is closed, so callers reconnect at once instead
    /// of waiting for the idle timeout.
    pub async fn request(&self, id: u64, m: &Msg, limit: usize) -> Result<Msg, NodeError> {
        let peer = self.peer(id).ok_or_else(|| NodeError::Peer {
            host: format!("peer {id}"),
            message: "not connected".into(),
        })?;
        let exchange = async {
            let (mut send, mut recv) = peer.conn.open_bi().await?;
            send_msg(&mut send, m).await?;
            let _ = send.finish();
            recv_msg(&mut recv, limit)
                .await?
                .ok_or_else(|| NodeError::Peer {
                    host: peer.host.clone(),
                    message: format!("closed the stream without answering {}", m.name()),
                })
        };
        match tokio::time::timeout(REQUEST_DEADLINE, exchange).await {
            Ok(r) => r,
            Err(_) => {
                peer.conn.close(3u32.into(), b"no answer");
                Err(NodeError::Peer {
                    host: peer.host.clone(),
                    message: format!("did not answer {} in {REQUEST_DEADLINE:?}", m.name()),
                })
            }
        }
    }

    /// What QUIC sent on this node's connections, in its datacenter and
    /// across (`RUST_LOG=shoal_node::quic=debug`): where overhead and
    /// retransmissions go.
    fn log_quic_totals(&self) {
        let peers: Vec<Arc<Peer>> = {
            let st = self.state.lock().expect("state lock");
            st.peers.values().cloned().collect()
        };
        // [local, cross]: UDP bytes sent, lost bytes, lost packets, stream
        // frames, datagrams, ACK frames, MAX_STREAMS/MAX_STREAM_DATA/MAX_DATA frames.
        let mut t = [[0u64; 7]; 2];
        for p in peers {
            let s = p.conn.stats();
            let k = usize::from(p.dc != self.opts.dc);
            t[k][0] += s.udp_tx.bytes;
            t[k][1] += s.path.lost_bytes;
            t[k][2] += s.path.lost_packets;
            t[k][3] += s.frame_tx.stream;
            t[k][4] += s.udp_tx.datagrams;
            t[k][5] += s.frame_tx.acks;
            t[k][6] +=
                s.frame_tx.max_streams_bidi + s.frame_tx.max_stream_data + s.frame_tx.max_data;
        }
        // Chunk bytes this node served, to set against what QUIC sent.
        let (mut chunks_local, mut chunks_cross) = (0u64, 0u64);
        for (dc, (up, _)) in self.counters.by_dc.lock().expect("counters lock").iter() {
            if *dc == self.opts.dc {
                chunks_local += up;
            } else {
                chunks_cross += up;
            }
        }
        tracing::debug!(
            target: "shoal_node::quic",
            host = %self.opts.host,
            chunks_local,
            chunks_cross,
            local_udp_tx = t[0][0],
            local_lost_bytes = t[0][1],
            local_lost_packets = t[0][2],
            local_stream_frames = t[0][3],
            cross_udp_tx = t[1][0],
            cross_lost_bytes = t[1][1],
            cross_lost_packets = t[1][2],
            cross_stream_frames = t[1][3],
            local_datagrams = t[0][4],
            local_ack_frames = t[0][5],
            local_credit_frames = t[0][6],
            cross_datagrams = t[1][4],
            cross_ack_frames = t[1][5],
            cross_credit_frames = t[1][6],
            "quic totals"
        );
    }

    /// Closes every connection with a word to the peers, so they notice at once.
    pub async fn shutdown(&self) {
        self.closed.store(true, Ordering::Relaxed);
        if tracing::enabled!(target: "shoal_node::quic", tracing::Level::DEBUG) {
            self.log_quic_totals();
        }
        self.endpoint.close(0u32.into(), b"shutting down");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
    }
}
