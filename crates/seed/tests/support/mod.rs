//! A cluster in a temporary directory for the in-process seed tests: its CA
//! and deploy key, the seed's config, and agent configs pointed at the seed.
#![allow(dead_code)] // not every test uses every helper

use shoal_node::config::AgentConfig;
use shoal_seed::seed::SeedConfig;
use std::net::SocketAddr;
use std::path::Path;

/// Creates `dir/cluster` (CA and deploy key) and the seed's identity; returns
/// a seed config (host "seed" in dc1, on loopback) with `extra` lines.
pub fn cluster_and_seed(dir: &Path, extra: &str) -> SeedConfig {
    let cluster = dir.join("cluster");
    shoal_net::cluster::init(&cluster).unwrap();
    shoal_net::cluster::issue(&cluster, "seed", "dc1", &dir.join("seed.identity")).unwrap();
    toml::from_str(&format!(
        "host = \"seed\"\ndc = \"dc1\"\nstore = {:?}\nkey = {:?}\ntrust = []\nidentity = {:?}\nlisten = \"127.0.0.1:0\"\n{extra}\n",
        dir.join("seed-store"),
        cluster.join("deploy.key"),
        dir.join("seed.identity")
    ))
    .unwrap()
}

/// Issues `host`'s identity and returns its agent config (root `dir/host`,
/// auto-activating, polling every 200 ms) with `extra` lines.
pub fn agent_config(
    dir: &Path,
    host: &str,
    dc: &str,
    tracker: SocketAddr,
    extra: &str,
) -> AgentConfig {
    let cluster = dir.join("cluster");
    let identity = dir.join(format!("{host}.identity"));
    shoal_net::cluster::issue(&cluster, host, dc, &identity).unwrap();
    let text = format!(
        "host = {host:?}\ndc = {dc:?}\nroot = {:?}\nidentity = {:?}\ntrust = [{:?}]\ntracker = \"{tracker}\"\ntracker_host = \"seed\"\nlisten = \"127.0.0.1:0\"\nauto_activate = true\npoll_ms = 200\nreserve = 0\n{extra}\n",
        dir.join(host),
        identity,
        cluster.join("deploy.key.pub")
    );
    toml::from_str(&text).unwrap()
}
