//! One release being fetched: feeds the swarm core with what peers say and do,
//! carries out its actions over QUIC, and assembles the release once every chunk
//! is held.

use crate::node::{Known, Node};
use shoal_bundle::chunk::{self, decode_chunk, decode_patched};
use shoal_bundle::manifest::ChunkRef;
use shoal_bundle::patch;
use shoal_bundle::{Hash, activate, assemble};
use shoal_net::{recv_msg_noting, send_msg};
use shoal_proto::{MAX_PIECE, Msg, bit};
use shoal_swarm::{Action, Swarm};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

const TICK: Duration = Duration::from_millis(50);

pub(crate) enum SessionEvent {
    PeerUp {
        peer: u64,
        host: String,
        dc: String,
        local: bool,
        seed: bool,
    },
    PeerDown {
        peer: u64,
    },
    Bitfield {
        peer: u64,
        bits: Vec<u8>,
    },
    Have {
        peer: u64,
        chunks: Vec<u32>,
    },
    /// The answer to a request began to arrive.
    Started {
        peer: u64,
        chunk: u32,
    },
    Piece {
        peer: u64,
        chunk: u32,
        outcome: Outcome,
    },
    /// What the tracker's peer list says of this datacenter's crossers and
    /// of the seed's datacenter.
    Members(crate::listing::SwarmView),
}

pub(crate) enum Outcome {
    /// Verified and stored.
    Good,
    /// Bytes that do not match the chunk's name, or an answer that breaks
    /// protocol.
    Bad,
    /// The peer does not have it.
    Lacks,
    /// The peer failed it: no answer in time, or its stream refused or reset.
    Failed,
    /// Its upload queue is full.
    Busy,
    /// Not the peer's doing: its connection is gone.
    Dropped,
    /// Our store could not keep a verified chunk (disk full, I/O error):
    /// fetching more would only throw it away, so the session pauses.
    StoreFailed(String),
}

pub(crate) fn spawn_session(
    node: Arc<Node>,
    known: Arc<Known>,
    tx: mpsc::UnboundedSender<SessionEvent>,
    rx: mpsc::UnboundedReceiver<SessionEvent>,
) {
    tokio::spawn(async move {
        let id = known.release.id;
        let tag = known.release.manifest.tag.clone();
        match run(node.clone(), known, tx, rx).await {
            Ok(()) => tracing::info!(%tag, "release fetched, verified and installed"),
            Err(e) => tracing::error!(%tag, error = %e, "release could not be installed"),
        }
        node.session_done(id);
    });
}

async fn run(
    node: Arc<Node>,
    known: Arc<Known>,
    tx: mpsc::UnboundedSender<SessionEvent>,
    mut rx: mpsc::UnboundedReceiver<SessionEvent>,
) -> Result<(), shoal_bundle::Error> {
    let id = known.release.id;
    let manifest = &known.release.manifest;
    let lens: Vec<u32> = manifest.chunks.iter().map(|c| c.len).collect();
    let have = known.have.lock().expect("have lock").clone();
    // Chunks this host lacks are asked for as patches against the chunk at
    // the same place in the release it holds (a deploy usually edits a few
    // files, so the patch is a small part of the chunk).
    let bases: Arc<Vec<Option<ChunkRef>>> = Arc::new(match node.base_release(&id) {
        Some(base) => patch::bases(manifest, &base.release.manifest),
        None => Vec::new(),
    });
    let cfg = shoal_swarm::Config {
        dc: node.opts.dc.clone(),
        ..node.opts.swarm.clone()
    };
    let mut swarm = Swarm::new(cfg, &node.opts.host, lens, have);
    swarm.advance(node.now());
    let mut tasks: HashMap<(u64, u32), AbortHandle> = HashMap::new();
    let mut cross: HashMap<u64, bool> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    let mut complete = swarm.is_complete();
    let mut fatal: Option<String> = None;
    while !complete {
        tokio::select! {
            ev = rx.recv() => {
                let Some(ev) = ev else { break };
                swarm.advance(node.now());
                let mut st = Apply { node: &node, known: &known, swarm: &mut swarm, tasks: &mut tasks, cross: &mut cross, fatal: &mut fatal };
                st.apply(ev);
                // Take whatever else is queued before scheduling once: with many
                // peers, `Have` messages arrive far faster than pieces.
                for _ in 0..1024 {
                    match rx.try_recv() {
                        Ok(ev) => st.apply(ev),
                        Err(_) => break,
                    }
                }
            }
            _ = ticker.tick() => swarm.tick(node.now()),
        }
        // The store cannot keep chunks: stop asking for any (the swarm keeps
        // what it knows of the peers) and try again after a while.
        if let Some(why) = fatal.take() {
            tracing::error!(tag = %manifest.tag, error = %why, "cannot keep fetched chunks; will try again in {RETRY:?}");
            let now = node.now();
            swarm.pause(now, now + RETRY);
        }
        swarm.schedule(node.now());
        while let Some(action) = swarm.poll_action() {
            match action {
                Action::Request { peer, chunk } => {
                    let Some(p) = node.peer(peer) else {
                        swarm.on_dropped(peer, chunk);
                        continue;
                    };
                    let cref = manifest.chunks[chunk as usize];
                    let base = bases.get(chunk as usize).copied().flatten();
                    let is_cross = cross.get(&peer).copied().unwrap_or(false);
                    let node = node.clone();
                    let tx = tx.clone();
                    let handle = tokio::spawn(async move {
                        let want = Want {
                            id,
                            chunk,
                            cref,
                            base,
                        };
                        let started = || {
                            let _ = tx.send(SessionEvent::Started { peer, chunk });
                        };
                        let outcome = fetch(&node, &p.conn, &p.dc, want, is_cross, started).await;
                        let _ = tx.send(SessionEvent::Piece {
                            peer,
                            chunk,
                            outcome,
                        });
                    });
                    tasks.insert((peer, chunk), handle.abort_handle());
                }
                Action::Cancel { peer, chunk } => {
                    if let Some(h) = tasks.remove(&(peer, chunk)) {
                        h.abort();
                    }
                }
                Action::Ban { peer, reason } => {
                    node.counters.peers_banned.fetch_add(1, Ordering::Relaxed);
                    let host = node.peer(peer).map(|p| p.host.clone()).unwrap_or_default();
                    tracing::warn!(peer = %host, %reason, "peer banned from this swarm");
                }
                Action::Have { chunk, across } => node.broadcast_have(
                    Msg::Have {
                        id,
                        chunks: vec![chunk],
                    },
                    across,
                ),
                Action::Tell { peer, chunk } => node.tell_now(
                    peer,
                    Msg::Have {
                        id,
                        chunks: vec![chunk],
                    },
                ),
                Action::Full { full } => node.tell_neighbours(Msg::Full { full }),
                Action::Complete => complete = true,
            }
        }
        let total = manifest.chunks.len() as u32;
        node.set_transfer(shoal_proto::Transfer {
            tag: manifest.tag.clone(),
            chunks_have: total - swarm.missing() as u32,
            chunks_total: total,
            bytes_down: node.counters.bytes_down.load(Ordering::Relaxed),
            bytes_up: node.counters.bytes_up.load(Ordering::Relaxed),
            bytes_down_cross_dc: node.counters.bytes_down_cross_dc.load(Ordering::Relaxed),
        });
    }
    for (_, h) in tasks {
        h.abort();
    }
    tracing::info!(tag = %manifest.tag, stats = ?swarm.stats, "swarm session ended");
    if !complete {
        return Ok(());
    }
    // Every chunk is in the store and verified: assemble, verify, activate.
    let Some(root) = node.opts.root.clone() else {
        return Ok(());
    };
    let store = node.opts.store.clone();
    let opts = node.opts.install;
    let auto = node.opts.auto_activate;
    // A full disk or another local failure leaves the last good release
    // live (install removes what it wrote); try again until the install
    // works or a newer release made this one moot.
    loop {
        let (dir, store, release) = (root.clone(), store.clone(), known.release.clone());
        let done = tokio::task::spawn_blocking(move || {
            let root = dir;
            assemble::install(&root, &store, &release, opts)?;
            // Releases fetched at once may finish in any order: switch only to
            // one at least as new as every release installed here.
            let newest = root.newest_counter()?;
            if auto && newest.is_none_or(|n| release.freshness.counter >= n) {
                activate::activate(&root, &release.manifest.tag)?;
            }
            Ok::<_, shoal_bundle::Error>(())
        })
        .await
        .map_err(|e| shoal_bundle::Error::Io {
            path: node.opts.store.dir().to_path_buf(),
            cause: std::io::Error::other(e.to_string()),
        })?;
        let Err(e) = done else { break };
        let superseded = root
            .newest_counter()
            .is_ok_and(|n| n.is_some_and(|n| n > known.release.freshness.counter));
        if superseded || node.is_closed() {
            return Err(e);
        }
        tracing::error!(tag = %manifest.tag, error = %e, "release could not be installed; will try again in {RETRY:?}");
        tokio::time::sleep(RETRY).await;
    }
    node.mark_installed(id);
    Ok(())
}

/// How long a session waits after its store or its install failed (a full
/// disk, say) before it tries again.
const RETRY: std::time::Duration = std::time::Duration::from_secs(10);

/// The session's state that events change.
struct Apply<'a> {
    node: &'a Node,
    known: &'a Known,
    swarm: &'a mut Swarm,
    tasks: &'a mut HashMap<(u64, u32), AbortHandle>,
    cross: &'a mut HashMap<u64, bool>,
    /// Set when the store fails: the session ends with this error.
    fatal: &'a mut Option<String>,
}

impl Apply<'_> {
    fn apply(&mut self, ev: SessionEvent) {
        let swarm = &mut *self.swarm;
        match ev {
            SessionEvent::PeerUp {
                peer,
                host,
                dc,
                local,
                seed,
            } => {
                self.cross.insert(peer, !local);
                swarm.add_peer(peer, &host, &dc, seed);
            }
            SessionEvent::PeerDown { peer } => {
                swarm.remove_peer(peer);
                self.cross.remove(&peer);
            }
            SessionEvent::Bitfield { peer, bits } => swarm.peer_bitfield(peer, |i| bit(&bits, i)),
            SessionEvent::Have { peer, chunks } => {
                for chunk in chunks {
                    swarm.peer_have(peer, chunk);
                }
            }
            SessionEvent::Members(view) => {
                view.apply(swarm);
            }
            SessionEvent::Started { peer, chunk } => {
                swarm.on_started(self.node.now(), peer, chunk);
            }
            SessionEvent::Piece {
                peer,
                chunk,
                outcome,
            } => {
                self.tasks.remove(&(peer, chunk));
                let now = self.node.now();
                match outcome {
                    Outcome::Good => {
                        // An endgame can bring the same chunk from two peers:
                        // it counts as fetched once.
                        let new = self
                            .known
                            .have
                            .lock()
                            .expect("have lock")
                            .set(chunk as usize);
                        if new {
                            self.node
                                .counters
                                .chunks_fetched
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        swarm.on_piece(now, peer, chunk, true);
                    }
                    Outcome::Bad => {
                        self.node
                            .counters
                            .chunks_rejected
                            .fetch_add(1, Ordering::Relaxed);
                        swarm.on_piece(now, peer, chunk, false);
                    }
                    Outcome::Lacks => swarm.on_failed(peer, chunk, true),
                    Outcome::Busy => swarm.on_busy(self.node.now(), peer, chunk),
                    Outcome::Failed => swarm.on_failed(peer, chunk, false),
                    Outcome::Dropped => swarm.on_dropped(peer, chunk),
                    Outcome::StoreFailed(why) => {
                        swarm.on_dropped(peer, chunk);
                        *self.fatal = Some(why);
                    }
                }
            }
        }
    }
}

/// One chunk to fetch: its place, its name and length, and the chunk held
/// here to ask for it as a patch against.
struct Want {
    id: Hash,
    chunk: u32,
    cref: ChunkRef,
    base: Option<ChunkRef>,
}

/// Requests one chunk from a peer, verifies it and stores it.
async fn fetch(
    node: &Node,
    conn: &quinn::Connection,
    peer_dc: &str,
    want: Want,
    cross: bool,
    started: impl FnOnce(),
) -> Outcome {
    let Want {
        id,
        chunk,
        cref,
        base,
    } = want;
    // Only a base that is still in the store (gc may have taken it) and
    // still verifies; without one the chunk is asked for whole.
    let base_plain =
        base.and_then(|b| with_codecs(|d, _| node.opts.store.get(&b, d).ok()).flatten());
    let base = base.filter(|_| base_plain.is_some());
    let request = match base {
        Some(b) => Msg::RequestPatch {
            id,
            chunk,
            base: b.hash,
            base_len: b.len,
        },
        None => Msg::Request { id, chunk },
    };
    let exchange = async {
        let (mut send, mut recv) = conn.open_bi().await.ok()?;
        send_msg(&mut send, &request).await.ok()?;
        let _ = send.finish();
        Some(recv_msg_noting(&mut recv, MAX_PIECE, started).await)
    };
    let reply = match tokio::time::timeout(node.opts.request_timeout, exchange).await {
        Ok(Some(Ok(Some(m)))) => m,
        // A frame over the limit, or bytes that are no message: the peer
        // broke protocol, which is as bad as wrong bytes.
        Ok(Some(Err(shoal_net::NetError::Proto(_)))) => return Outcome::Bad,
        _ if conn.close_reason().is_some() => return Outcome::Dropped,
        _ => return Outcome::Failed,
    };
    let (data, patched) = match reply {
        Msg::Piece {
            id: i,
            chunk: c,
            data,
        } if i == id && c == chunk => (data, false),
        Msg::Patch {
            id: i,
            chunk: c,
            data,
        } if i == id && c == chunk && base.is_some() => (data, true),
        Msg::Reject { .. } => return Outcome::Lacks,
        Msg::Busy { .. } => return Outcome::Busy,
        // Another message, or a piece of another chunk.
        _ => return Outcome::Bad,
    };
    let n = data.len() as u64;
    // The cap is charged what actually arrived; the wait holds this request's
    // slot in the window, which slows the next ones.
    let wait = node.down.lock().expect("bucket lock").take(node.now(), n);
    if !wait.is_zero() {
        tokio::time::sleep(wait).await;
    }
    node.counters.bytes_down.fetch_add(n, Ordering::Relaxed);
    node.counters.add_dc(peer_dc, 0, n);
    if cross {
        node.counters
            .bytes_down_cross_dc
            .fetch_add(n, Ordering::Relaxed);
    }
    // The bytes to store: a piece as it came once it verifies; a patch rebuilt
    // against the base, verified, and compressed as the packer would.
    let stored = with_codecs(|d, comp| match &base_plain {
        Some(base_plain) if patched => {
            let plain = decode_patched(&cref, base_plain, &data).map_err(|_| Outcome::Bad)?;
            chunk::compress(comp, &plain).map_err(|_| Outcome::Failed)
        }
        _ => match decode_chunk(&cref, &data, d) {
            Ok(_) => Ok(data),
            Err(_) => Err(Outcome::Bad),
        },
    })
    .unwrap_or(Err(Outcome::Failed));
    let stored = match stored {
        Ok(s) => s,
        Err(o) => return o,
    };
    match node.opts.store.put_compressed(&cref.hash, &stored) {
        Ok(()) => {
            if patched {
                node.counters.chunks_patched.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Good
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot store a verified chunk");
            Outcome::StoreFailed(e.to_string())
        }
    }
}

/// Runs `f` with this thread's zstd contexts (None if they cannot be made).
fn with_codecs<T>(
    f: impl FnOnce(&mut zstd::bulk::Decompressor<'static>, &mut zstd::bulk::Compressor<'static>) -> T,
) -> Option<T> {
    type Codecs = (
        zstd::bulk::Decompressor<'static>,
        zstd::bulk::Compressor<'static>,
    );
    thread_local! {
        static CODECS: std::cell::RefCell<Option<Codecs>> = const { std::cell::RefCell::new(None) };
    }
    CODECS.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = zstd::bulk::Decompressor::new()
                .ok()
                .zip(zstd::bulk::Compressor::new(STORE_LEVEL).ok());
        }
        let (d, comp) = c.as_mut()?;
        Some(f(d, comp))
    })
}

/// zstd level of chunks rebuilt from patches: the packer's default.
const STORE_LEVEL: i32 = 1;
