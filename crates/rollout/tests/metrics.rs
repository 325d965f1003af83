//! Metrics over HTTP: an agent and the seed serve Prometheus text; after a
//! distribution, a rollout and an audit, the counters moved by what the nodes
//! themselves counted and the hooks ran.

mod support;

use shoal_rollout::Goal;
use std::sync::atomic::Ordering;
use std::time::Duration;
use support::{Fleet, opts, sample, scrape};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_and_seed_metrics_follow_a_distribution_a_rollout_and_an_audit() {
    let f = Fleet::start(3).await;
    let node = f.agents[0].1.clone();
    let manifest = f.root("h00").manifest("v1", None).unwrap().manifest;
    let unique: std::collections::HashSet<_> = manifest.chunks.iter().map(|c| c.hash).collect();

    let text = tokio::task::spawn_blocking({
        let a = f.agent_metrics;
        move || scrape(a)
    })
    .await
    .unwrap();
    println!("{text}");
    // Chunks: exactly what the agent verified and stored, at least every chunk once.
    let verified = sample(&text, "shoal_chunks_verified_total", None).unwrap();
    assert_eq!(
        verified as u64,
        node.counters.chunks_fetched.load(Ordering::Relaxed)
    );
    assert!(
        verified as usize >= unique.len(),
        "{verified} < {}",
        unique.len()
    );
    assert_eq!(
        sample(&text, "shoal_chunks_rejected_total", None),
        Some(0.0)
    );
    // Bytes down, summed over peer datacenters, are the node's own count, and
    // at least the release's compressed chunks.
    let down = sample(&text, "shoal_bytes_down_total", None).unwrap() as u64;
    assert_eq!(down, node.counters.bytes_down.load(Ordering::Relaxed));
    let store = shoal_bundle::ChunkStore::open(f.root("h00").store_dir()).unwrap();
    let mut seen = std::collections::HashSet::new();
    let compressed: u64 = manifest
        .chunks
        .iter()
        .filter(|c| seen.insert(c.hash))
        .map(|c| store.read_compressed(c).unwrap().len() as u64)
        .sum();
    assert!(
        down >= compressed && down <= 2 * compressed,
        "{down} bytes down for {compressed} bytes of chunks"
    );
    assert_eq!(
        sample(&text, "shoal_release", Some(r#"tag="v1",state="staged""#)),
        Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "shoal_hook_duration_seconds_count", None).is_none_or(|n| n == 0.0));

    // A rollout: every hook once on h00, one activation that went well.
    let r = f
        .rollout(Goal::Deploy("v1".into()), &opts("100%"))
        .await
        .unwrap();
    assert!(r.ok);
    // And a fleet audit.
    let client = f.client();
    let audits = shoal_rollout::audit::audit_fleet(
        &client,
        f.seed.local_addr(),
        "seed",
        Duration::from_secs(30),
        Duration::from_secs(30),
    )
    .await
    .unwrap();
    client.close().await;
    assert_eq!(audits.len(), 3);
    assert!(audits.iter().all(|a| a.clean()), "{audits:?}");
    let text = tokio::task::spawn_blocking({
        let a = f.agent_metrics;
        move || scrape(a)
    })
    .await
    .unwrap();
    assert_eq!(
        sample(&text, "shoal_release", Some(r#"tag="v1",state="current""#)),
        Some(1.0),
        "{text}"
    );
    for phase in ["depool", "restart", "health", "repool"] {
        assert_eq!(
            sample(
                &text,
                "shoal_hook_duration_seconds_count",
                Some(&format!("phase=\"{phase}\""))
            ),
            Some(1.0),
            "{phase}: {text}"
        );
    }
    assert_eq!(
        sample(
            &text,
            "shoal_activation_duration_seconds_count",
            Some(r#"outcome="ok""#)
        ),
        Some(1.0)
    );
    let since = sample(&text, "shoal_seconds_since_clean_audit", None).expect("audited");
    assert!((0.0..60.0).contains(&since), "{since}");

    // The seed: it uploaded what the agents took from it, and sees the fleet on v1.
    let text = tokio::task::spawn_blocking({
        let a = f.seed_metrics;
        move || scrape(a)
    })
    .await
    .unwrap();
    let up = sample(&text, "shoal_bytes_up_total", None).unwrap() as u64;
    assert_eq!(up, f.seed.node.counters.bytes_up.load(Ordering::Relaxed));
    assert!(up > 0);
    assert_eq!(sample(&text, "shoal_tracker_releases", None), Some(1.0));
    assert_eq!(sample(&text, "shoal_tracker_agents", None), Some(3.0));
    // Agents report every 100 ms; the tracker's view follows.
    let mut on_v1 = 0.0;
    for _ in 0..50 {
        let text = tokio::task::spawn_blocking({
            let a = f.seed_metrics;
            move || scrape(a)
        })
        .await
        .unwrap();
        on_v1 = sample(&text, "shoal_fleet_current", Some(r#"tag="v1""#)).unwrap_or(0.0);
        if on_v1 == 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(on_v1, 3.0);
}
