//! Update attacks, after The Update Framework's threat model, over real agents:
//! an older release announced as new is refused (rollback attack) while an
//! operator's rollback to an installed release still works; an expired
//! release is refused by a host that comes back late (freeze attack), and the
//! tracker will not announce one.

mod support;

use shoal_rollout::Goal;
use std::time::Duration;
use support::{Fleet, opts};

fn installed(f: &Fleet, host: &str, tag: &str) -> bool {
    f.root(host).installed().unwrap().iter().any(|t| t == tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn older_and_expired_releases_are_refused_as_new() {
    let mut f = Fleet::on_v1_with_v2_staged(3).await;
    let r = f
        .rollout(Goal::Deploy("v2".into()), &opts("100%"))
        .await
        .unwrap();
    assert!(r.ok, "{r:#?}");
    let newest = f.root("h00").newest_counter().unwrap().expect("a counter");

    // Rollback attack: a validly signed release whose counter is below what
    // the hosts installed, announced as if new.
    f.publish_with("v2-replayed", Some(1), Duration::from_secs(3600))
        .expect("the tracker lists it");
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (h, node) in &f.agents {
        assert!(
            !installed(&f, h, "v2-replayed"),
            "{h} took an older release"
        );
        assert!(node.fetching().is_empty(), "{h} is fetching it");
        assert_eq!(f.current(h).as_deref(), Some("v2"), "{h}");
        assert_eq!(f.root(h).newest_counter().unwrap(), Some(newest));
    }
    // Each host tells the tracker what it refused and why, for the live views.
    for h in f
        .seed
        .tracker
        .fleet()
        .iter()
        .filter(|h| h.host.starts_with('h'))
    {
        assert!(
            h.status
                .refused
                .iter()
                .any(|r| r.contains("v2-replayed") && r.contains("not newer")),
            "{}: {:?}",
            h.host,
            h.status.refused
        );
    }

    // An operator's rollback names an installed older release: that is allowed.
    let back = f
        .rollout(Goal::Rollback(Some("v1".into())), &opts("100%"))
        .await
        .unwrap();
    assert!(back.ok, "{back:#?}");
    for (h, _) in &f.agents {
        assert_eq!(f.current(h).as_deref(), Some("v1"), "{h}");
    }

    // Freeze attack: h02 is away while v3 (valid for 2 s) is distributed;
    // when it comes back, v3 has expired and it refuses it. A fourth host
    // that joins then refuses it too.
    f.agents[2].1.shutdown().await;
    f.publish_with("v3", None, Duration::from_secs(2))
        .expect("fresh when announced");
    let start = std::time::Instant::now();
    while !(installed(&f, "h00", "v3") && installed(&f, "h01", "v3")) {
        assert!(start.elapsed() < Duration::from_secs(30), "v3 not staged");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(start.elapsed())).await;
    f.agents.remove(2);
    f.start_agent(2).await;
    f.start_agent(3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for h in ["h02", "h03"] {
        assert!(!installed(&f, h, "v3"), "{h} took an expired release");
    }
    assert!(
        installed(&f, "h03", "v1"),
        "h03 joined and took the fresh releases"
    );

    // The tracker refuses to announce what has already expired.
    let e = f
        .publish_with("v4", None, Duration::ZERO)
        .expect_err("an expired release is not announced");
    assert!(e.to_string().contains("expired"), "{e}");
}
