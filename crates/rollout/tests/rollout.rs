//! Rollouts over real agents on loopback: batches and pauses seen in the hook
//! log, a failed health check, emergency mode, fleet rollback, the deploy lock.

mod support;

use shoal_rollout::{Goal, RolloutError};
use std::collections::{BTreeMap, BTreeSet};
use support::{Fleet, opts};

/// Hosts depooled at once, at most, going through the log in time order.
fn max_depooled(lines: &[(f64, String, String, String)]) -> usize {
    let mut out = BTreeSet::new();
    let mut max = 0;
    for (_, host, phase, _) in lines {
        match phase.as_str() {
            "depool" => {
                out.insert(host.clone());
            }
            "repool" => {
                out.remove(host);
            }
            _ => {}
        }
        max = max.max(out.len());
    }
    max
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_hosts_in_batches_of_three_with_pauses_then_a_fleet_rollback() {
    let f = Fleet::on_v1_with_v2_staged(12).await;
    f.clear_hook_log();
    let o = opts("3");
    let r = f.rollout(Goal::Deploy("v2".into()), &o).await.unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.batches_run, 4);
    for (h, _) in &f.agents {
        assert_eq!(f.current(h).as_deref(), Some("v2"), "{h}");
    }
    let lines = f.hook_lines();
    for l in &lines {
        println!("{:8.3} {} {} {}", l.0, l.1, l.2, l.3);
    }
    assert_eq!(
        lines.len(),
        12 * 4,
        "depool, restart, health, repool on each host"
    );
    // Every hook saw the release it replaces.
    let prev = f.hook_previous();
    assert_eq!(prev.len(), 48);
    assert!(prev.iter().all(|(_, _, p)| p == "v1"), "{prev:?}");
    assert!(
        max_depooled(&lines) <= 3,
        "more than 3 hosts out of the pool at once"
    );
    // Per host: depool, drain, restart, health, repool, in this order.
    let batch_of: BTreeMap<&str, usize> = r
        .hosts
        .iter()
        .map(|h| (h.report.host.as_str(), h.batch))
        .collect();
    for (h, _) in &f.agents {
        let mine: Vec<&(f64, String, String, String)> =
            lines.iter().filter(|l| &l.1 == h).collect();
        let phases: Vec<&str> = mine.iter().map(|l| l.2.as_str()).collect();
        assert_eq!(phases, ["depool", "restart", "health", "repool"], "{h}");
        assert!(mine[1].0 - mine[0].0 >= 0.1, "{h} did not drain for 100 ms");
        assert!(mine.iter().all(|l| l.3 == "v2"));
    }
    // Between batches: the pause (400 ms) from the last repool of one to the
    // first depool of the next.
    for b in 0..3 {
        let in_batch = |k: usize, phase: &str| -> Vec<f64> {
            lines
                .iter()
                .filter(|l| batch_of[l.1.as_str()] == k && l.2 == phase)
                .map(|l| l.0)
                .collect()
        };
        let last_repool = in_batch(b, "repool").into_iter().fold(0.0, f64::max);
        let next_depool = in_batch(b + 1, "depool")
            .into_iter()
            .fold(f64::MAX, f64::min);
        assert!(
            next_depool - last_repool >= 0.4,
            "batch {} started {:.3} s after batch {b} ended",
            b + 1,
            next_depool - last_repool
        );
    }
    // The deploy log on the tracker has a line per host and the summary.
    let log = f.seed.tracker.log(100);
    assert!(
        log.iter()
            .any(|e| e.rollout == r.rollout && e.result == "completed")
    );
    assert_eq!(
        log.iter()
            .filter(|e| e.rollout == r.rollout && e.host.is_some())
            .count(),
        12
    );
    assert_eq!(f.seed.tracker.target().as_deref(), Some("v2"));

    // Fleet rollback: every host back on v1, no transfer, the same hooks.
    f.clear_hook_log();
    let back = f.rollout(Goal::Rollback(None), &opts("50%")).await.unwrap();
    assert!(back.ok, "{back:#?}");
    assert_eq!(back.batches_run, 2);
    for (h, _) in &f.agents {
        assert_eq!(f.current(h).as_deref(), Some("v1"), "{h}");
    }
    assert!(max_depooled(&f.hook_lines()) <= 6);
    assert_eq!(f.seed.tracker.target().as_deref(), Some("v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_health_check_reverts_the_host_and_stops_the_rollout() {
    let f = Fleet::on_v1_with_v2_staged(12).await;
    // Batches interleave datacenters: h00-h02, then h03-h05, ...
    f.fail_health("h05", "v2");
    f.clear_hook_log();
    let r = f
        .rollout(Goal::Deploy("v2".into()), &opts("3"))
        .await
        .unwrap();
    assert!(!r.ok);
    assert_eq!(r.failures, 1);
    assert_eq!(r.batches_run, 2, "stopped after the failing batch");
    assert!(
        r.stopped.as_deref().unwrap().contains("max-failures 1"),
        "{r:?}"
    );
    let failed: Vec<_> = r.hosts.iter().filter(|h| !h.report.ok).collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].report.host, "h05");
    assert_eq!(failed[0].report.failed.as_deref(), Some("health"));
    assert_eq!(failed[0].report.after.as_deref(), Some("v1"));
    // The five hosts switched before the stop went back.
    let back: BTreeSet<&str> = r
        .rolled_back
        .iter()
        .map(|h| h.report.host.as_str())
        .collect();
    assert_eq!(back, BTreeSet::from(["h00", "h01", "h02", "h03", "h04"]));
    assert!(
        r.rolled_back.iter().all(|h| h.report.ok),
        "{:#?}",
        r.rolled_back
    );
    for (h, _) in &f.agents {
        assert_eq!(f.current(h).as_deref(), Some("v1"), "{h}");
    }
    assert_eq!(f.root("h05").bad().unwrap(), ["v2"]);
    // The rolled-back hosts abandoned v2 too: no rollback returns to it there.
    assert_eq!(f.root("h00").bad().unwrap(), ["v2"]);
    assert!(f.root("h09").bad().unwrap().is_empty(), "never switched");
    let lines = f.hook_lines();
    // h05: switched, failed its health check, restarted on v1, repooled.
    let h05: Vec<(&str, &str)> = lines
        .iter()
        .filter(|l| l.1 == "h05")
        .map(|l| (l.2.as_str(), l.3.as_str()))
        .collect();
    assert_eq!(
        h05,
        [
            ("depool", "v2"),
            ("restart", "v2"),
            ("health", "v2"),
            ("restart", "v1"),
            ("health", "v1"),
            ("repool", "v1")
        ]
    );
    // Hosts of later batches were never touched.
    assert!(!lines.iter().any(|l| l.1 == "h06"));
    assert_eq!(max_depooled(&lines), max_depooled(&lines).min(3));

    // With no failure limit the rollout goes on past the failing host.
    let mut o = opts("4");
    o.max_failures = 0;
    o.interval = std::time::Duration::ZERO;
    let r = f.rollout(Goal::Deploy("v2".into()), &o).await.unwrap();
    assert_eq!(r.failures, 1);
    assert!(r.stopped.is_none());
    assert!(!r.ok, "one host does not run v2");
    assert_eq!(r.running["h05"].as_deref(), Some("v1"));
    for (h, _) in f.agents.iter().filter(|(h, _)| h != "h05") {
        assert_eq!(f.current(h).as_deref(), Some("v2"), "{h}");
        assert!(
            f.root(h).bad().unwrap().is_empty(),
            "{h}: named and healthy, no longer bad"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_mode_skips_depool_and_drain_but_still_batches() {
    let f = Fleet::on_v1_with_v2_staged(6).await;
    f.clear_hook_log();
    let mut o = opts("2");
    o.emergency = true;
    o.drain = std::time::Duration::from_secs(30); // ignored in emergency mode
    let r = f.rollout(Goal::Deploy("v2".into()), &o).await.unwrap();
    assert!(r.ok, "{r:#?}");
    assert_eq!(r.batches_run, 3);
    let lines = f.hook_lines();
    let phases: BTreeSet<&str> = lines.iter().map(|l| l.2.as_str()).collect();
    assert_eq!(phases, BTreeSet::from(["restart", "health"]));
    // Still two at a time: restarts of batch k+1 begin after batch k is done.
    let batch_of: BTreeMap<&str, usize> = r
        .hosts
        .iter()
        .map(|h| (h.report.host.as_str(), h.batch))
        .collect();
    for b in 0..2 {
        let last = lines
            .iter()
            .filter(|l| batch_of[l.1.as_str()] == b)
            .map(|l| l.0)
            .fold(0.0, f64::max);
        let next = lines
            .iter()
            .filter(|l| batch_of[l.1.as_str()] == b + 1)
            .map(|l| l.0)
            .fold(f64::MAX, f64::min);
        assert!(next - last >= 0.4, "batch {} overlapped batch {b}", b + 1);
    }
    assert!(r.elapsed_s < 20.0, "no 30 s drain in emergency mode");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_concurrent_rollouts_exactly_one_proceeds() {
    let f = Fleet::on_v1_with_v2_staged(3).await;
    let mut a = opts("1");
    a.who = "alice@deploy1".into();
    let mut b = opts("1");
    b.who = "bob@deploy2".into();
    let (ra, rb) = tokio::join!(
        f.rollout(Goal::Deploy("v2".into()), &a),
        f.rollout(Goal::Deploy("v2".into()), &b)
    );
    let (won, lost, winner) = match (ra, rb) {
        (Ok(w), Err(l)) => (w, l, "alice@deploy1"),
        (Err(l), Ok(w)) => (w, l, "bob@deploy2"),
        (a, b) => panic!("expected exactly one to proceed: {a:?} / {b:?}"),
    };
    assert!(won.ok);
    match lost {
        RolloutError::Locked(m) => {
            assert!(
                m.contains(winner) && m.contains("deploy v2") && m.contains("since"),
                "{m}"
            )
        }
        e => panic!("expected the lock to refuse: {e}"),
    }
    // The lock is free again once the winner is done.
    assert!(
        f.rollout(Goal::Rollback(None), &opts("100%"))
            .await
            .unwrap()
            .ok
    );
}

/// An agent obeys only orders signed by a trusted deploy key, addressed to
/// it, unexpired, and not seen before; holding a cluster certificate is not
/// enough to switch a host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_refuse_forged_misaddressed_expired_and_replayed_orders() {
    use shoal_proto::{Action, MAX_CONTROL, Msg, Order, Restart};
    use std::time::Duration;
    let f = Fleet::start(2).await;
    let id = f.root("h00").installed_id("v1").unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let order = |host: &str, issued: u64, expires: u64, nonce: u64| Order {
        host: host.into(),
        action: Action::Activate {
            tag: "v1".into(),
            id,
            restart: Restart::Emergency,
            drain_ms: 0,
            abandon: None,
        },
        rollout: "test".into(),
        issued_unix: issued,
        expires_unix: expires,
        nonce,
    };
    let signed = |o: &Order, key: &shoal_bundle::signing::DeployKey| {
        let bytes = o.encode();
        let (key, signature) = key.sign_order(&bytes);
        Msg::Order {
            order: bytes,
            key,
            signature,
        }
    };
    let client = f.client();
    let addr = f.agents[0].1.endpoint.local_addr().unwrap();
    let conn = client.connect(addr, "h00").await.unwrap();
    let send = |m: Msg| {
        let conn = &conn;
        async move { conn.request(&m, MAX_CONTROL, Duration::from_secs(10)).await }
    };
    let deploy = f.key();
    let stranger = shoal_bundle::signing::DeployKey::generate().unwrap();
    let refused = |r: Result<Msg, shoal_node::NodeError>, why: &str| match r {
        Err(e) => assert!(e.to_string().contains(why), "{e}"),
        Ok(m) => panic!("expected a refusal ({why}), got {m:?}"),
    };
    refused(
        send(signed(&order("h00", now, now + 60, 1), &stranger)).await,
        "not signed by a trusted deploy key",
    );
    // A valid signature over other bytes.
    let Msg::Order { key, signature, .. } = signed(&order("h00", now, now + 60, 2), &deploy) else {
        unreachable!()
    };
    let tampered = Msg::Order {
        order: order("h00", now, now + 3000, 2).encode(),
        key,
        signature,
    };
    refused(send(tampered).await, "not signed by a trusted deploy key");
    refused(
        send(signed(&order("h01", now, now + 60, 3), &deploy)).await,
        "is for",
    );
    refused(
        send(signed(&order("h00", now - 600, now - 300, 4), &deploy)).await,
        "expired",
    );
    refused(
        send(signed(&order("h00", now + 3600, now + 3660, 5), &deploy)).await,
        "future",
    );
    refused(
        send(signed(&order("h00", now, now + 7200, 7), &deploy)).await,
        "at most",
    );
    // A release by a tag it does not have, or under another id: checked, not switched.
    let other = |tag: &str, id, nonce| {
        let mut o = order("h00", now, now + 60, nonce);
        o.action = Action::Activate {
            tag: tag.into(),
            id,
            restart: Restart::Emergency,
            drain_ms: 0,
            abandon: None,
        };
        o
    };
    for (o, why) in [
        (other("v9", id, 8), "not installed"),
        (
            other("v1", shoal_bundle::Hash::of(b"another"), 9),
            "the order names",
        ),
    ] {
        match send(signed(&o, &deploy)).await.unwrap() {
            Msg::OrderDone(r) => {
                assert!(!r.ok && r.failed.as_deref() == Some("check"), "{r:?}");
                assert!(r.message.contains(why), "{r:?}");
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(f.current("h00"), None, "nothing switched yet");
    let good = signed(&order("h00", now, now + 60, 6), &deploy);
    match send(good.clone()).await.unwrap() {
        Msg::OrderDone(r) => assert!(
            r.ok && r.switched && r.after.as_deref() == Some("v1"),
            "{r:?}"
        ),
        m => panic!("{m:?}"),
    }
    refused(send(good).await, "replay");
    assert_eq!(f.current("h00").as_deref(), Some("v1"));
    assert_eq!(f.current("h01"), None, "no order reached h01");
    conn.close();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_lets_the_running_batch_finish_and_starts_no_other() {
    let f = Fleet::on_v1_with_v2_staged(6).await;
    let mut o = opts("2");
    o.canary = vec!["h04".into()];
    // Interrupted as the second batch (the first after the canary) starts.
    let r = f
        .rollout_stopping_at(Goal::Deploy("v2".into()), &o, 1)
        .await
        .unwrap();
    assert!(!r.ok);
    assert!(
        r.stopped.as_deref().unwrap().contains("interrupted"),
        "{r:?}"
    );
    assert_eq!(r.batches_run, 2, "the running batch finishes");
    assert_eq!(
        r.hosts[0].report.host, "h04",
        "the canary goes first, alone"
    );
    assert_eq!(r.hosts[0].batch, 0);
    let on_v2: Vec<&str> = r
        .running
        .iter()
        .filter(|(_, t)| t.as_deref() == Some("v2"))
        .map(|(h, _)| h.as_str())
        .collect();
    assert_eq!(on_v2.len(), 3, "canary + one batch of two: {:?}", r.running);
    assert!(
        r.rolled_back.is_empty(),
        "an interrupt is no failure: nothing is rolled back"
    );
    for (h, t) in &r.running {
        assert_eq!(&f.current(h), t, "the report says what {h} runs");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_whose_repool_failed_on_the_new_release_is_rolled_back_too() {
    let f = Fleet::on_v1_with_v2_staged(6).await;
    // h01 runs v2 healthily but cannot rejoin the pool: a failure, and the
    // rollout must not leave it on v2 when it stops.
    f.fail_repool("h01", "v2");
    let r = f
        .rollout(Goal::Deploy("v2".into()), &opts("3"))
        .await
        .unwrap();
    assert!(!r.ok);
    let h01 = r.hosts.iter().find(|h| h.report.host == "h01").unwrap();
    assert_eq!(h01.report.failed.as_deref(), Some("repool"), "{h01:?}");
    let back: BTreeSet<&str> = r
        .rolled_back
        .iter()
        .map(|h| h.report.host.as_str())
        .collect();
    assert!(back.contains("h01"), "{:?}", r.rolled_back);
    for (h, _) in &f.agents {
        assert_eq!(f.current(h).as_deref(), Some("v1"), "{h}");
    }
    // The rolled-back hosts marked v2 bad: a later rollback does not go forward to it.
    assert_eq!(f.root("h00").bad().unwrap(), ["v2"]);
    let again = f
        .rollout(Goal::Rollback(None), &opts("100%"))
        .await
        .unwrap();
    for (h, _) in &f.agents {
        assert_ne!(
            f.current(h).as_deref(),
            Some("v2"),
            "{h} went forward to the failed release: {again:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupt_below_the_failure_limit_rolls_nothing_back() {
    let f = Fleet::on_v1_with_v2_staged(6).await;
    f.fail_health("h00", "v2");
    let mut o = opts("2");
    o.max_failures = 3;
    let r = f
        .rollout_stopping_at(Goal::Deploy("v2".into()), &o, 1)
        .await
        .unwrap();
    assert_eq!(r.failures, 1);
    assert!(
        r.stopped.as_deref().unwrap().contains("interrupted"),
        "{r:?}"
    );
    assert!(r.rolled_back.is_empty(), "{:?}", r.rolled_back);
    let on_v2 = r
        .running
        .values()
        .filter(|t| t.as_deref() == Some("v2"))
        .count();
    assert_eq!(on_v2, 3, "batch 1 less h00, and batch 2: {:?}", r.running);
}
