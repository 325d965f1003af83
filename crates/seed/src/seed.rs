//! `shoal seed`: pack (reusing the store), sign, announce to the tracker it runs,
//! and serve chunks until stopped.

use crate::tracker::Tracker;
use serde::Deserialize;
use shoal_bundle::assemble::{InstallOptions, load_from_store};
use shoal_bundle::pack::{PackOptions, PackReport, pack};
use shoal_bundle::signing::{DeployKey, TrustedKey};
use shoal_bundle::{ChunkStore, tag};
use shoal_net::{Identity, Tuning};
use shoal_node::{Control, Node, NodeOptions};
use shoal_proto::Role;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `seed.toml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedConfig {
    pub host: String,
    pub dc: String,
    pub store: PathBuf,
    /// The deploy key's secret file (signs what this seed packs).
    pub key: PathBuf,
    /// Deploy public keys the tracker accepts announcements from.
    pub trust: Vec<PathBuf>,
    pub identity: PathBuf,
    pub listen: SocketAddr,
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    #[serde(default)]
    pub upload_limit: u64,
    #[serde(default = "default_slots")]
    pub upload_slots: usize,
    /// The deploy log (JSON lines; default `STORE/deploy.log`).
    #[serde(default)]
    pub deploy_log: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9465).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Serve the read-only fleet page on this loopback address.
    #[serde(default)]
    pub web: Option<SocketAddr>,
    /// Serve requests from other datacenters first (as agents with
    /// `locality` do). Off: every asker is alike, as netsim's `bittorrent`
    /// strategy runs it.
    #[serde(default = "default_locality")]
    pub locality: bool,
    /// The path MTU as UDP payload bytes, if every path to the agents
    /// carries it (see the agent's `path_mtu`); 0: probe.
    #[serde(default)]
    pub path_mtu: u16,
}

fn default_slots() -> usize {
    32
}

fn default_locality() -> bool {
    true
}

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Checked(#[from] shoal_node::config::ConfigError),
    #[error("cannot serve the fleet page on {addr}: {cause}")]
    Web {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {cause}")]
    Metrics {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Bundle(#[from] shoal_bundle::Error),
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    #[error(transparent)]
    Tracker(#[from] crate::tracker::TrackerError),
}

impl SeedConfig {
    /// Reads and checks `seed.toml`; an invalid one is refused with every problem.
    pub fn load(path: &Path) -> Result<Self, SeedError> {
        let text = shoal_node::config::read_checked(path, shoal_node::check::Which::Seed)?;
        toml::from_str(&text).map_err(|e| SeedError::Config {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

pub struct Seed {
    pub node: Arc<Node>,
    pub tracker: Arc<Tracker>,
    /// Where the fleet page is served, when it is.
    pub web: Option<SocketAddr>,
    key: DeployKey,
    store: ChunkStore,
    trusted: Vec<TrustedKey>,
}

impl Seed {
    /// Starts the tracker and the seed node, and announces every release in the store.
    pub async fn start(cfg: &SeedConfig) -> Result<Seed, SeedError> {
        let identity = Identity::load(&cfg.identity)?;
        let tuning = Tuning::default().with_path_mtu(cfg.path_mtu);
        let endpoint = shoal_net::endpoint(&identity, cfg.listen, &tuning)?;
        Self::start_on(cfg, endpoint).await
    }

    /// Starts on an endpoint the caller made (netsim's simulated network).
    pub async fn start_on(
        cfg: &SeedConfig,
        endpoint: shoal_net::quinn::Endpoint,
    ) -> Result<Seed, SeedError> {
        let key = DeployKey::load(&cfg.key)?;
        let mut trusted = cfg
            .trust
            .iter()
            .map(|p| TrustedKey::load(p))
            .collect::<Result<Vec<_>, _>>()?;
        if !trusted.contains(&key.public()) {
            trusted.push(key.public());
        }
        let store = ChunkStore::open(&cfg.store)?;
        let listen = shoal_net::local_addr(&endpoint, cfg.listen)?;
        let log = cfg
            .deploy_log
            .clone()
            .unwrap_or_else(|| cfg.store.join("deploy.log"));
        let tracker = Arc::new(Tracker::new(trusted.clone()).with_log(log));
        let opts = NodeOptions {
            host: cfg.host.clone(),
            dc: cfg.dc.clone(),
            role: Role::Seed,
            root: None,
            store: store.clone(),
            trusted: trusted.clone(),
            advertise: Some(cfg.advertise.unwrap_or(listen)),
            auto_activate: false,
            upload_limit: cfg.upload_limit,
            download_limit: 0,
            upload_slots: cfg.upload_slots,
            // The deploy host's connections keep the tuning's windows. Its
            // uplink carries every datacenter's first copies and is the link
            // that binds; a connection held to a small window inside its
            // datacenter lost its share of that uplink's queue to the ones
            // across (in the simulation, fanout's proxy beside the seed took
            // 463 s instead of 302 s at 10 Mbit/s, and shoal 36.4 s instead
            // of 34.4 s).
            link_bandwidth: 0,
            install: InstallOptions::default(),
            swarm: shoal_node::SwarmConfig {
                locality: cfg.locality,
                ..shoal_node::SwarmConfig::default()
            },
            request_timeout: Duration::from_secs(15),
            fault_corrupt_uploads: false,
        };
        let control: Arc<dyn Control> = tracker.clone();
        let node = Node::start(opts, endpoint, Some(control));
        // The seed reports to its own tracker like any host, so it is in peer
        // lists and `shoal status` shows what it uploaded.
        tracker.hello(&node.hello());
        let (n, t) = (node.clone(), tracker.clone());
        tokio::spawn(async move {
            loop {
                let status = shoal_proto::HostStatus {
                    staged: t.releases().into_iter().map(|r| r.tag).collect(),
                    totals: n.totals(),
                    ..Default::default()
                };
                t.handle(&n.hello(), shoal_proto::Msg::Status(Box::new(status)));
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        let mut seed = Seed {
            node,
            tracker,
            web: None,
            key,
            store,
            trusted,
        };
        seed.announce_stored()?;
        if let Some(addr) = cfg.metrics {
            let (n, t) = (Arc::downgrade(&seed.node), Arc::downgrade(&seed.tracker));
            let text = Arc::new(move || match (n.upgrade(), t.upgrade()) {
                (Some(n), Some(t)) => metrics_text(&n, &t),
                _ => String::new(),
            });
            shoal_node::metrics::serve(addr, text)
                .await
                .map_err(|cause| SeedError::Metrics { addr, cause })?;
        }
        if let Some(addr) = cfg.web {
            let bound = crate::web::serve(addr, Arc::downgrade(&seed.tracker))
                .await
                .map_err(|cause| SeedError::Web { addr, cause })?;
            tracing::info!(addr = %bound, "serving the fleet page");
            seed.web = Some(bound);
        }
        Ok(seed)
    }

    /// Keeps announcing what appears in the store: `shoal pack` into a running
    /// seed's store publishes the release within a second (the manifest is
    /// written after every chunk, so a manifest means a complete release).
    pub fn watch_store(self: &Arc<Self>) {
        let seed = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let Some(seed) = seed.upgrade() else { break };
                if let Err(e) = seed.announce_stored() {
                    tracing::warn!(error = %e, "announcing from the store");
                }
            }
        });
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.node.endpoint.local_addr().expect("bound endpoint")
    }

    /// Announces and serves every release whose manifest is in the store.
    fn announce_stored(&self) -> Result<(), SeedError> {
        let dir = self.store.dir().join("manifests");
        let Ok(items) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        for item in items.flatten() {
            let name = item.file_name();
            let Some(t) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".manifest"))
                .and_then(tag::from_dir_name)
            else {
                continue;
            };
            match load_from_store(&self.store, &t, &self.trusted) {
                Ok(v) if self.node.knows(&v.id) => {}
                Ok(v) => match self.tracker.announce(v.signed_bytes.clone()) {
                    Ok(_) => self.node.add_complete(v),
                    // An expired (or conflicting) release in the store is not
                    // announced; the others still are.
                    Err(e) => {
                        tracing::warn!(tag = %t, error = %e, "not announcing a stored release")
                    }
                },
                Err(e) => tracing::warn!(tag = %t, error = %e, "not serving a stored release"),
            }
        }
        Ok(())
    }

    /// Packs `dir` as `tag`, signs it, announces it and starts serving it.
    pub fn publish(&self, dir: &Path, tag: &str) -> Result<PackReport, SeedError> {
        let report = pack(dir, &self.store, &self.key, &PackOptions::new(tag), &|_| {})?;
        self.announce(tag)?;
        Ok(report)
    }

    /// Announces and serves release `tag`, already packed into the store.
    pub fn announce(&self, tag: &str) -> Result<shoal_bundle::Hash, SeedError> {
        let v = load_from_store(&self.store, tag, &self.trusted)?;
        let id = v.id;
        self.tracker.announce(v.signed_bytes.clone())?;
        self.node.add_complete(v);
        Ok(id)
    }
}

/// The seed's metrics: the node's, and what the tracker knows of the fleet.
fn metrics_text(node: &Node, tracker: &Tracker) -> String {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let mut reg = prometheus_client::registry::Registry::default();
    shoal_node::metrics::node_metrics(&mut reg, node);
    let releases: Gauge = Gauge::default();
    releases.set(tracker.releases().len() as i64);
    reg.register("shoal_tracker_releases", "Releases announced", releases);
    let current: Family<shoal_node::metrics::Labels, Gauge> = Family::default();
    let mut hosts = 0;
    for h in tracker.fleet().iter().filter(|h| h.role == Role::Agent) {
        hosts += 1;
        let tag = h.status.current.clone().unwrap_or_else(|| "none".into());
        current.get_or_create(&vec![("tag".to_string(), tag)]).inc();
    }
    reg.register(
        "shoal_fleet_current",
        "Agents by the release they run",
        current,
    );
    let agents: Gauge = Gauge::default();
    agents.set(hosts);
    reg.register("shoal_tracker_agents", "Agents the tracker knows", agents);
    shoal_node::metrics::render(&reg)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example uses every key of `seed.toml` and parses.
    #[test]
    fn the_shipped_example_parses_and_uses_every_key() {
        let text =
            include_str!("../../../dist/seed.toml").replace("# advertise = ", "advertise = ");
        let cfg: SeedConfig = toml::from_str(&text).expect("dist/seed.toml parses");
        assert_eq!(cfg.metrics, Some("127.0.0.1:9465".parse().unwrap()));
        let table: toml::Table = text.parse().unwrap();
        for k in shoal_node::check::SEED {
            assert!(
                table.contains_key(k.name),
                "dist/seed.toml lacks {}",
                k.name
            );
        }
    }
}
