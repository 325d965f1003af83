//! Prometheus metrics (the text exposition format) on a local address:
//! `GET /metrics`. Values are read at scrape time from the counters the node
//! keeps anyway, so serving metrics costs nothing between scrapes.

use crate::node::Node;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

pub type Labels = Vec<(String, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

fn seconds_histogram() -> Histogram {
    // 10 ms to about 80 s.
    Histogram::new(exponential_buckets(0.01, 2.0, 14))
}

/// Durations an agent records as it carries out rollout orders.
#[derive(Clone)]
pub struct Durations {
    /// Per hook phase (`depool`, `restart`, ...), every attempt included.
    pub hooks: Hist,
    /// From the order's arrival to its answer (hooks, drain and switch).
    pub activations: Hist,
}

impl Default for Durations {
    fn default() -> Self {
        Durations {
            hooks: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
            activations: Family::new_with_constructor(seconds_histogram as fn() -> Histogram),
        }
    }
}

fn counter(v: u64) -> Counter {
    let c = Counter::default();
    c.inc_by(v);
    c
}

/// What every node exports: bytes per peer datacenter, chunks, bans.
pub fn node_metrics(reg: &mut Registry, node: &Node) {
    let c = &node.counters;
    let up: Family<Labels, Counter> = Family::default();
    let down: Family<Labels, Counter> = Family::default();
    for (dc, (u, d)) in c.by_dc.lock().expect("counters lock").iter() {
        let l = vec![("peer_dc".to_string(), dc.clone())];
        up.get_or_create(&l).inc_by(*u);
        down.get_or_create(&l).inc_by(*d);
    }
    reg.register(
        "shoal_bytes_up",
        "Chunk bytes sent, by the receiving peer's datacenter",
        up,
    );
    reg.register(
        "shoal_bytes_down",
        "Chunk bytes received, by the sending peer's datacenter",
        down,
    );
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    reg.register(
        "shoal_chunks_verified",
        "Chunks received and verified that this host did not hold yet",
        counter(get(&c.chunks_fetched)),
    );
    reg.register(
        "shoal_chunks_rejected",
        "Chunks received whose bytes did not match their name",
        counter(get(&c.chunks_rejected)),
    );
    reg.register(
        "shoal_peers_banned",
        "Peers banned from a swarm for sending bad chunks",
        counter(get(&c.peers_banned)),
    );
    let peers: Gauge = Gauge::default();
    peers.set(node.peer_count() as i64);
    reg.register("shoal_peers_connected", "Peer connections open now", peers);
}

/// An agent's: the node's, its releases, rollout durations, the last audit.
pub fn agent_text(node: &Node) -> String {
    let mut reg = Registry::default();
    node_metrics(&mut reg, node);
    if let Some(root) = &node.opts.root {
        let releases: Family<Labels, Gauge> = Family::default();
        let current = root.current().ok().flatten();
        for tag in root.installed().unwrap_or_default() {
            let state = if current.as_deref() == Some(tag.as_str()) {
                "current"
            } else {
                "staged"
            };
            releases
                .get_or_create(&vec![
                    ("tag".to_string(), tag.clone()),
                    ("state".to_string(), state.to_string()),
                ])
                .set(1);
        }
        reg.register(
            "shoal_release",
            "Releases installed here (state: current or staged), value 1",
            releases,
        );
    }
    if let Some(o) = node.orders() {
        let d = o.durations();
        reg.register(
            "shoal_hook_duration_seconds",
            "Rollout hook run time, all attempts, by phase",
            d.hooks.clone(),
        );
        reg.register(
            "shoal_activation_duration_seconds",
            "Rollout order time, hooks and drain included, by outcome",
            d.activations.clone(),
        );
        if let Some(at) = o.last_good_audit() {
            let g: Gauge<f64, std::sync::atomic::AtomicU64> = Gauge::default();
            g.set(crate::orders::unix_now().saturating_sub(at) as f64);
            reg.register(
                "shoal_seconds_since_clean_audit",
                "Seconds since the last audit that found the current release intact",
                g,
            );
        }
    }
    render(&reg)
}

pub fn render(reg: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, reg).expect("writing to a String cannot fail");
    out
}

/// Serves `GET /metrics` on `addr` with what `text` renders; returns the
/// bound address (port 0 picks one).
pub async fn serve(
    addr: SocketAddr,
    text: Arc<dyn Fn() -> String + Send + Sync>,
) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = text.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics server stopped");
        }
    });
    tracing::info!(addr = %bound, "serving metrics at /metrics");
    Ok(bound)
}
