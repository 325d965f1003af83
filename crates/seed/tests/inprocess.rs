//! A seed and agents in one process, over real QUIC on loopback: every agent
//! installs the release, agents serve each other, and a second release costs only
//! its new chunks.

use shoal_bundle::Root;
use shoal_bundle::audit::audit_release;
use shoal_node::agent;
use shoal_node::config::AgentConfig;
use shoal_seed::seed::{Seed, SeedConfig};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

fn agent_config(dir: &Path, host: &str, dc: &str, tracker: std::net::SocketAddr) -> AgentConfig {
    let cluster = dir.join("cluster");
    let identity = dir.join(format!("{host}.identity"));
    shoal_net::cluster::issue(&cluster, host, dc, &identity).unwrap();
    AgentConfig {
        host: host.into(),
        dc: dc.into(),
        root: dir.join(host),
        identity,
        trust: vec![cluster.join("deploy.key.pub")],
        tracker,
        tracker_host: "seed".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        auto_activate: true,
        upload_limit: 0,
        download_limit: 0,
        upload_slots: 16,
        reserve: 0,
        path_bandwidth: 125_000_000,
        path_rtt_ms: 1,
        path_mtu: 0,
        poll_ms: 200,
        locality: true,
        fault_corrupt_uploads: false,
        metrics: None,
        hooks: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_fetch_from_each_other_and_deltas_cost_only_new_chunks() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = d.join("cluster");
    shoal_net::cluster::init(&cluster).unwrap();
    shoal_net::cluster::issue(&cluster, "seed", "dc1", &d.join("seed.identity")).unwrap();
    let cfg = SeedConfig {
        host: "seed".into(),
        dc: "dc1".into(),
        store: d.join("seed-store"),
        key: cluster.join("deploy.key"),
        trust: vec![],
        identity: d.join("seed.identity"),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        upload_limit: 0,
        upload_slots: 16,
        deploy_log: None,
        metrics: None,
        web: None,
        locality: true,
        path_mtu: 0,
    };
    let seed = Seed::start(&cfg).await.unwrap();
    let src = d.join("src");
    let spec = shoal_sample::Spec {
        files: 300,
        mean_file: 4000,
        binaries: vec![3 << 20],
        seed: 5,
    };
    let stats = shoal_sample::generate(&src, &spec).unwrap();
    let v1 = seed.publish(&src, "v1").unwrap();

    let mut agents = Vec::new();
    for i in 0..4 {
        let dc = if i % 2 == 0 { "dc1" } else { "dc2" };
        let cfg = agent_config(d, &format!("agent{i}"), dc, seed.local_addr());
        agents.push((cfg.root.clone(), agent::start(cfg).await.unwrap()));
    }
    wait_for(&agents, "v1", Duration::from_secs(60)).await;
    let received: u64 = agents
        .iter()
        .map(|(_, n)| n.counters.bytes_down.load(Ordering::Relaxed))
        .sum();
    let seed_up = seed.node.counters.bytes_up.load(Ordering::Relaxed);
    println!(
        "v1: {} bytes; agents received {received}, the seed uploaded {seed_up}",
        v1.new_bytes_stored
    );
    assert!(received >= 4 * v1.new_bytes_stored * 9 / 10);
    assert!(seed_up < received, "agents must serve each other");
    // Agents tell each other of every chunk, and never the seed, which holds
    // them all: each `Have` would cost the seed's uplink an acknowledgement.
    let haves = |n: &shoal_node::Node| n.counters.haves_in.load(Ordering::Relaxed);
    // (Summed: an agent that fetched everything before its neighbours
    // joined may hear none.)
    assert!(agents.iter().map(|(_, n)| haves(n)).sum::<u64>() > 0);
    assert_eq!(haves(&seed.node), 0, "the seed was told of chunks");

    // A 1% delta: each agent fetches patches of the new chunks against the
    // chunks it holds, and the manifest as a patch.
    let edited = shoal_sample::edit(&src, &stats, 1.0, 9).unwrap();
    let before: Vec<u64> = agents
        .iter()
        .map(|(_, n)| n.counters.bytes_down.load(Ordering::Relaxed))
        .collect();
    let v2 = seed.publish(&src, "v2").unwrap();
    wait_for(&agents, "v2", Duration::from_secs(60)).await;
    let changed: u64 = edited
        .iter()
        .map(|f| {
            zstd::bulk::compress(&std::fs::read(src.join(f)).unwrap(), 1)
                .unwrap()
                .len() as u64
        })
        .sum();
    for ((_, n), b) in agents.iter().zip(before) {
        let fetched = n.counters.bytes_down.load(Ordering::Relaxed) - b;
        let patched = n.counters.chunks_patched.load(Ordering::Relaxed);
        println!(
            "v2: fetched {fetched} bytes ({patched} of {} new chunks as patches) for {} new \
             bytes stored, {changed} bytes of edited files compressed",
            v2.new_chunks, v2.new_bytes_stored
        );
        // An endgame may bring a chunk from two peers, both as patches, so
        // patches can outnumber new chunks; a chunk fetched whole instead
        // (about 12 KB here) would break the byte bound below.
        assert!(
            patched >= v2.new_chunks as u64,
            "every new chunk as a patch: {patched} of {}",
            v2.new_chunks
        );
        assert!(
            fetched <= changed,
            "fetched {fetched} for edits of {changed} compressed"
        );
        assert!(n.counters.manifests_patched.load(Ordering::Relaxed) >= 1);
    }
}

async fn wait_for(
    agents: &[(std::path::PathBuf, std::sync::Arc<shoal_node::Node>)],
    tag: &str,
    limit: Duration,
) {
    let start = Instant::now();
    loop {
        let done = agents
            .iter()
            .all(|(root, _)| Root::new(root).current().ok().flatten().as_deref() == Some(tag));
        if done {
            break;
        }
        assert!(
            start.elapsed() < limit,
            "agents did not all reach {tag} in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (root, _) in agents {
        let a = audit_release(&Root::new(root), None).unwrap();
        assert!(a.is_clean(), "{a:?}");
    }
}
