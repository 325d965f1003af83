//! The agent daemon: registers with the tracker, reports its state, learns of
//! every announced release, joins its swarm on its own, and installs (and, if
//! configured, activates) what it fetched. A restarted agent resumes from its
//! store: chunks it holds are never fetched again, in any release.

use crate::config::AgentConfig;
use crate::node::{Node, NodeError, NodeOptions};
use shoal_bundle::assemble::InstallOptions;
use shoal_bundle::signing::{TrustedKey, open_signed};
use shoal_bundle::{ChunkStore, Root};
use shoal_net::{Identity, Tuning};
use shoal_proto::{HostStatus, MAX_CONTROL, MAX_MANIFEST, Msg, Role};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    #[error(transparent)]
    Bundle(#[from] shoal_bundle::Error),
    #[error("cannot serve metrics on {addr}: {cause}")]
    Metrics {
        addr: std::net::SocketAddr,
        cause: std::io::Error,
    },
    #[error("the identity file is for host {found:?}, the config says {configured:?}")]
    WrongIdentity { found: String, configured: String },
}

/// The window of requests in flight per peer: the path's bandwidth-delay
/// product in average chunks, within sane bounds.
pub fn window_for(bandwidth: u64, rtt: Duration, chunk: u64) -> usize {
    let bdp = bandwidth as f64 * rtt.as_secs_f64();
    ((bdp / chunk as f64).ceil() as usize).clamp(8, 128)
}

/// Starts an agent on a UDP socket bound to `cfg.listen`; it runs until the
/// process (or its tokio runtime) ends.
pub async fn start(cfg: AgentConfig) -> Result<Arc<Node>, AgentError> {
    let identity = Identity::load(&cfg.identity)?;
    let tuning = tuning(&cfg);
    let endpoint = shoal_net::endpoint(&identity, cfg.listen, &tuning)?;
    start_on(cfg, identity, endpoint).await
}

/// A restart after the newest release was installed but before `current`
/// was switched to it (a crash, a SIGKILL) would leave the host on the older
/// tree for good, since an installed release is not fetched again: switch to
/// it now. Only when it is newer than `current` (by its signed counter), not
/// marked bad, and either never activated or the last activation recorded
/// (the record is written just before the switch); a release that was current
/// and then rolled back from stays where the operator left it.
fn finish_activation(root: &Root, newest: &(u64, String)) -> Result<(), AgentError> {
    let (counter, tag) = newest;
    let current = root.current()?;
    if current.as_deref() == Some(tag.as_str()) || root.bad()?.iter().any(|t| t == tag) {
        return Ok(());
    }
    if let Some(c) = &current
        && root
            .manifest(c, None)
            .is_ok_and(|v| v.freshness.counter >= *counter)
    {
        return Ok(());
    }
    let history = root.history()?;
    if history.iter().any(|t| t == tag) && history.last() != Some(tag) {
        return Ok(());
    }
    tracing::warn!(%tag, "switching to the newest installed release (its activation was interrupted)");
    shoal_bundle::activate::activate(root, tag)?;
    Ok(())
}

/// The transport tuning for the path the config describes.
pub fn tuning(cfg: &AgentConfig) -> Tuning {
    Tuning::for_path(cfg.path_bandwidth, Duration::from_millis(cfg.path_rtt_ms))
        .with_path_mtu(cfg.path_mtu)
}

/// Starts an agent on an endpoint the caller made (netsim gives each simulated
/// host one over its simulated network).
pub async fn start_on(
    cfg: AgentConfig,
    identity: Identity,
    endpoint: quinn::Endpoint,
) -> Result<Arc<Node>, AgentError> {
    if identity.host != cfg.host {
        return Err(AgentError::WrongIdentity {
            found: identity.host.clone(),
            configured: cfg.host.clone(),
        });
    }
    let trusted = cfg
        .trust
        .iter()
        .map(|p| TrustedKey::load(p))
        .collect::<Result<Vec<_>, _>>()?;
    let root = Root::new(&cfg.root);
    drop(root.lock()?); // creates the layout and cleans what a crash left
    let store = ChunkStore::open(root.store_dir())?;
    let rtt = Duration::from_millis(cfg.path_rtt_ms);
    let listen = shoal_net::local_addr(&endpoint, cfg.listen)?;
    let window = window_for(cfg.path_bandwidth, rtt, 32 << 10);
    let swarm = shoal_swarm::Config {
        locality: cfg.locality,
        window,
        // A seed is often the only source at first: a fixed small window would
        // cap every agent at a few MB/s on a long path, a full one would make
        // agents lean on the seed instead of on each other.
        seed_window: (window / 4).max(8),
        // The hosts of a datacenter share the crossing; a quarter of the path's
        // window each fills the link with a few hosts fetching.
        cross_window: (window / 4).max(16),
        seed: shoal_swarm::host_key(&cfg.host),
        ..Default::default()
    };
    let opts = NodeOptions {
        host: cfg.host.clone(),
        dc: cfg.dc.clone(),
        role: Role::Agent,
        root: Some(root.clone()),
        store,
        trusted: trusted.clone(),
        advertise: Some(cfg.advertise.unwrap_or(listen)),
        auto_activate: cfg.auto_activate,
        upload_limit: cfg.upload_limit,
        download_limit: cfg.download_limit,
        upload_slots: cfg.upload_slots,
        link_bandwidth: cfg.path_bandwidth,
        install: InstallOptions {
            reserve: cfg.reserve,
            ..Default::default()
        },
        swarm,
        request_timeout: Duration::from_secs(15),
        fault_corrupt_uploads: cfg.fault_corrupt_uploads,
    };
    let node = Node::start(opts, endpoint, None);
    let orders = Arc::new(crate::orders::Orders::new(
        &cfg.host,
        &cfg.dc,
        root.clone(),
        trusted.clone(),
        cfg.hooks.clone(),
    ));
    node.set_orders(orders.clone());
    // A crash mid-rollout may have left the host depooled.
    tokio::spawn(async move { orders.recover().await });
    // The newest installed release, by its signed counter.
    let mut newest: Option<(u64, String)> = None;
    for tag in root.installed()? {
        // Installed releases were verified when installed; serve them.
        match root.manifest(&tag, None) {
            Ok(v) => {
                if newest
                    .as_ref()
                    .is_none_or(|(c, _)| v.freshness.counter > *c)
                {
                    newest = Some((v.freshness.counter, tag.clone()));
                }
                node.add_complete(v);
            }
            Err(e) => tracing::warn!(%tag, error = %e, "not serving an installed release"),
        }
    }
    if cfg.auto_activate
        && let Some(newest) = newest
        && let Err(e) = finish_activation(&root, &newest)
    {
        tracing::error!(tag = %newest.1, error = %e, "cannot finish an interrupted activation");
    }
    if let Some(addr) = cfg.metrics {
        let n = Arc::downgrade(&node);
        let text = Arc::new(move || {
            n.upgrade()
                .map(|n| crate::metrics::agent_text(&n))
                .unwrap_or_default()
        });
        crate::metrics::serve(addr, text)
            .await
            .map_err(|cause| AgentError::Metrics { addr, cause })?;
    }
    let book = Arc::new(AddressBook::default());
    tokio::spawn(redial_loop(node.clone(), book.clone(), cfg.poll_ms));
    tokio::spawn(tracker_loop(node.clone(), cfg, root, trusted, book));
    Ok(node)
}

/// Peers' addresses as the tracker last listed them, so lost connections are
/// redialled even while the tracker is down.
#[derive(Default)]
struct AddressBook(std::sync::Mutex<std::collections::BTreeMap<String, std::net::SocketAddr>>);

/// While a release is being fetched, dials every known peer not connected.
async fn redial_loop(node: Arc<Node>, book: Arc<AddressBook>, poll_ms: u64) {
    let poll = Duration::from_millis(poll_ms.max(50));
    while !node.is_closed() {
        tokio::time::sleep(poll).await;
        if node.fetching().is_empty() {
            continue;
        }
        let peers: Vec<(String, std::net::SocketAddr)> = book
            .0
            .lock()
            .expect("book lock")
            .iter()
            .filter(|(host, _)| node.peer_id(host).is_none())
            .map(|(h, a)| (h.clone(), *a))
            .collect();
        for (host, addr) in peers {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(e) = node.connect(addr, &host).await {
                    tracing::debug!(peer = %host, error = %e, "cannot reach peer");
                }
            });
        }
    }
}

/// Reports to the tracker and acts on what it says, reconnecting when needed.
async fn tracker_loop(
    node: Arc<Node>,
    cfg: AgentConfig,
    root: Root,
    trusted: Vec<TrustedKey>,
    book: Arc<AddressBook>,
) {
    let poll = Duration::from_millis(cfg.poll_ms.max(50));
    let mut seen = Seen::default();
    while !node.is_closed() {
        let tracker = match node.connect(cfg.tracker, &cfg.tracker_host).await {
            Ok(id) => id,
            Err(_) if node.is_closed() => break,
            Err(e) => {
                tracing::warn!(tracker = %cfg.tracker, error = %e, "tracker unreachable; retrying");
                tokio::time::sleep(poll).await;
                continue;
            }
        };
        while !node.is_closed() {
            let r = poll_once(&node, tracker, &root, &trusted, &book, &mut seen).await;
            if let Err(e) = r {
                if node.is_closed() {
                    break;
                }
                tracing::warn!(error = %e, "tracker request failed");
                if node.peer(tracker).is_none() {
                    break; // the connection is gone: reconnect
                }
            }
            tokio::time::sleep(poll).await;
        }
    }
}

/// What the poll loop remembers between polls.
#[derive(Default)]
struct Seen {
    /// Releases whose manifest no peer had yet, and since when.
    waiting: std::collections::HashMap<shoal_bundle::Hash, tokio::time::Instant>,
    /// When each fetching release's peer list was last asked for.
    listed: std::collections::HashMap<shoal_bundle::Hash, tokio::time::Instant>,
    /// Releases refused as not fresh, and why.
    refused: std::collections::BTreeMap<shoal_bundle::Hash, Refusal>,
}

/// A release refused as not fresh.
struct Refusal {
    why: String,
    at: tokio::time::Instant,
    /// Refused as expired by this host's clock, which may have been wrong (a
    /// jump forward): asked about again every `RECHECK_EXPIRED`. A release
    /// not newer than one installed stays refused.
    expired: bool,
}

const RECHECK_EXPIRED: std::time::Duration = std::time::Duration::from_secs(10);

async fn poll_once(
    node: &Arc<Node>,
    tracker: u64,
    root: &Root,
    trusted: &[TrustedKey],
    book: &AddressBook,
    seen: &mut Seen,
) -> Result<(), AgentError> {
    let Seen {
        waiting,
        listed,
        refused,
    } = seen;
    let orders = node.orders();
    let status = HostStatus {
        staged: root.installed()?,
        current: root.current()?,
        transfer: node.transfer(),
        totals: node.totals(),
        bad: root.bad()?,
        audit: orders.and_then(|o| o.last_audit()),
        busy: orders.and_then(|o| o.busy()),
        refused: refused.values().map(|r| r.why.clone()).collect(),
    };
    let reply = node
        .request(tracker, &Msg::Status(Box::new(status)), MAX_CONTROL)
        .await?;
    if let Msg::Releases { releases } = reply {
        let installed = root.installed()?;
        for ad in releases {
            let settled = refused
                .get(&ad.id)
                .is_some_and(|r| !r.expired || r.at.elapsed() < RECHECK_EXPIRED);
            if node.knows(&ad.id) || installed.contains(&ad.tag) || settled {
                continue;
            }
            let since = *waiting
                .entry(ad.id)
                .or_insert_with(tokio::time::Instant::now);
            let Some(signed) = fetch_manifest(node, tracker, ad.id, since).await? else {
                continue; // asked again at the next poll
            };
            waiting.remove(&ad.id);
            let waited_ms = since.elapsed().as_millis() as u64;
            match open_signed(&signed, trusted) {
                Ok(v) if v.id == ad.id => {
                    // Rollback and freeze attacks: an older release announced
                    // as new, or an expired one, is refused (loudly, once).
                    if let Err(e) = v.check_fresh(crate::orders::unix_now(), root.newest_counter()?)
                    {
                        if !refused.contains_key(&ad.id) {
                            tracing::error!(tag = %ad.tag, error = %e, "refusing release");
                        }
                        let expired =
                            matches!(e, shoal_bundle::error::ManifestError::Expired { .. });
                        let why = e.to_string();
                        let at = tokio::time::Instant::now();
                        refused.insert(ad.id, Refusal { why, at, expired });
                        continue;
                    }
                    if refused.remove(&ad.id).is_some() {
                        tracing::warn!(tag = %ad.tag, "no longer expired by this host's clock");
                    }
                    tracing::info!(
                        tag = %v.manifest.tag,
                        id = %v.id,
                        waited_ms,
                        "joining swarm"
                    );
                    node.fetch(v);
                }
                Ok(_) => tracing::error!(tag = %ad.tag, "tracker sent a manifest with another id"),
                Err(e) => tracing::error!(tag = %ad.tag, error = %e, "refusing release"),
            }
        }
    }
    // Peers of the releases being fetched, at once for a new one, then every
    // few seconds: who shares this datacenter decides who fetches what across
    // it. Not at every poll: a fleet's peer lists at a short poll interval
    // would take a large share of the deploy host's uplink.
    {
        let fetching = node.fetching();
        listed.retain(|id, _| fetching.contains(id));
        for id in fetching {
            if listed
                .get(&id)
                .is_some_and(|at| at.elapsed() < PEER_LIST_EVERY)
            {
                continue;
            }
            listed.insert(id, tokio::time::Instant::now());
            let reply = node
                .request(tracker, &Msg::GetPeers { id }, MAX_CONTROL)
                .await?;
            if let Msg::Peers {
                peers, crossers, ..
            } = reply
            {
                let view =
                    crate::listing::swarm_view(&peers, &crossers, &node.opts.host, &node.opts.dc);
                // Fetching hosts dial every peer they lack (`redial_loop`);
                // hosts that finished are dialled by those still fetching.
                // Across, with crossers in groups, only this host's group.
                let mut book = book.0.lock().expect("book lock");
                for p in peers {
                    if p.host != node.opts.host
                        && view.dials(&p, &node.opts.dc)
                        && let Ok(addr) = p.addr.parse()
                    {
                        book.insert(p.host, addr);
                    }
                }
                drop(book);
                node.set_members(id, view);
            }
        }
    }
    Ok(())
}

/// How often a fetching agent asks the tracker for the release's peers.
const PEER_LIST_EVERY: Duration = Duration::from_secs(2);

/// How long an agent asks only its neighbours for a new release's manifest
/// before it may ask the tracker too.
const MANIFEST_PATIENCE: Duration = Duration::from_secs(10);

/// A new release's signed manifest. A manifest is hundreds of KB and the
/// deploy host's uplink is the scarcest link, so it travels down a binary tree
/// over this datacenter's agents, in a rendezvous order for the release that
/// every host computes alike from the tracker's list: the first host fetches
/// it from the tracker, every other host from its parent in the tree (or the
/// first host). A host still without it after `MANIFEST_PATIENCE` asks the
/// tracker.
/// The signature is checked by the caller, so a peer can only withhold it.
async fn fetch_manifest(
    node: &Arc<Node>,
    tracker: u64,
    id: shoal_bundle::Hash,
    since: tokio::time::Instant,
) -> Result<Option<Vec<u8>>, AgentError> {
    let rank = |host: &str| shoal_swarm::release_rank(host, &id);
    // Asked for as a patch against the newest release held here: a deploy
    // changes a few entries of a manifest of hundreds of KB.
    let base = node.base_release(&id);
    let base = base
        .as_ref()
        .map(|k| (k.release.id, k.release.signed_bytes.as_slice()));
    let get = match base {
        Some((b, _)) => Msg::GetManifestPatch { id, base: b },
        None => Msg::GetManifest { id },
    };
    if since.elapsed() < MANIFEST_PATIENCE {
        let mine = rank(&node.opts.host);
        let reply = node
            .request(tracker, &Msg::GetPeers { id }, MAX_CONTROL)
            .await?;
        // The hosts of this datacenter ahead of this one, first one first.
        let mut above: Vec<(u64, std::net::SocketAddr, String)> = match reply {
            Msg::Peers { peers, .. } => peers
                .into_iter()
                .filter(|p| p.role == Role::Agent && p.dc == node.opts.dc)
                .filter_map(|p| Some((rank(&p.host), p.addr.parse().ok()?, p.host)))
                .filter(|(r, ..)| *r > mine)
                .collect(),
            _ => Vec::new(),
        };
        above.sort_by_key(|(r, ..)| std::cmp::Reverse(*r));
        // This host's place in the order is `above.len()`; its parent in the
        // binary tree is half-way up, and the first host is asked next.
        if let Some(parent) = above.len().checked_sub(1).map(|me| me / 2) {
            let mut ask = vec![parent, 0];
            ask.dedup();
            for ix in ask {
                let (_, addr, host) = &above[ix];
                let pid = match node.peer_id(host) {
                    Some(pid) => pid,
                    None => match node.connect(*addr, host).await {
                        Ok(pid) => pid,
                        Err(_) => continue,
                    },
                };
                if let Ok(reply) = node.request(pid, &get, MAX_MANIFEST).await
                    && let Some(signed) = manifest_from(node, reply, base)
                {
                    return Ok(Some(signed));
                }
            }
            return Ok(None);
        }
    }
    let reply = node.request(tracker, &get, MAX_MANIFEST).await?;
    Ok(manifest_from(node, reply, base))
}

/// [`shoal_proto::manifest_from`], counting the patches.
fn manifest_from(
    node: &Node,
    reply: Msg,
    base: Option<(shoal_bundle::Hash, &[u8])>,
) -> Option<Vec<u8>> {
    if matches!(reply, Msg::ManifestPatch { .. }) {
        node.counters
            .manifests_patched
            .fetch_add(1, Ordering::Relaxed);
    }
    shoal_proto::manifest_from(reply, base)
}

/// Asks the tracker for its view of the fleet (as `shoal status` does), with a
/// client identity: the tracker answers only cluster members.
pub async fn fleet(
    identity: &Identity,
    tracker: std::net::SocketAddr,
    tracker_host: &str,
) -> Result<shoal_proto::FleetState, AgentError> {
    let client = crate::client::Client::new(identity, tracker)?;
    let conn = client.connect(tracker, tracker_host).await?;
    let reply = conn
        .request(&Msg::GetFleet, MAX_CONTROL, Duration::from_secs(10))
        .await;
    conn.close();
    client.close().await;
    match reply? {
        Msg::Fleet(f) => Ok(*f),
        other => Err(crate::client::unexpected(tracker_host, "GetFleet", &other).into()),
    }
}
