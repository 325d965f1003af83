//! What a live view sees of a rollout: the tracker holds the rollout's
//! progress (from its lock holder), and a view built on it shows the batch
//! switching now and the next one, hosts switching, then every host live.

mod support;

use shoal_rollout::Goal;
use shoal_view::{HostState, Watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Fleet, opts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_follows_the_batches_to_all_live() {
    let f = Fleet::on_v1_with_v2_staged(6).await;
    let tracker = f.seed.tracker.clone();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        tokio::spawn(async move {
            let mut w = Watcher::new(30, None);
            let mut seen = Vec::new();
            let mut switching = BTreeSet::new();
            while !done.load(Ordering::Relaxed) {
                let v = w.observe(&tracker.state(), &tracker.log(50), Instant::now(), 0);
                for h in v.hosts.iter().filter(|h| h.state == HostState::Switching) {
                    switching.insert(h.host.clone());
                }
                if let Some(r) = &v.rollout {
                    let s = (
                        r.phase.clone(),
                        r.batch,
                        r.batch_hosts.clone(),
                        r.next_hosts.clone(),
                    );
                    if seen.last() != Some(&s) {
                        seen.push(s);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (seen, switching)
        })
    };
    let r = f
        .rollout(Goal::Deploy("v2".into()), &opts("2"))
        .await
        .unwrap();
    assert!(r.ok, "{r:#?}");
    done.store(true, Ordering::Relaxed);
    let (seen, switching) = sampler.await.unwrap();
    for s in &seen {
        println!("{s:?}");
    }

    // The plan, in order, as the rollout ran it.
    let mut plan: Vec<Vec<String>> = vec![Vec::new(); r.batches_planned];
    for h in &r.hosts {
        plan[h.batch].push(h.report.host.clone());
    }
    for b in &mut plan {
        b.sort();
    }
    assert_eq!(plan.len(), 3);
    for (i, batch) in plan.iter().enumerate() {
        let shown = seen
            .iter()
            .find(|(phase, b, _, _)| phase == "batch" && *b == Some(i + 1))
            .unwrap_or_else(|| panic!("batch {} was never shown: {seen:?}", i + 1));
        let mut now = shown.2.clone();
        now.sort();
        assert_eq!(&now, batch, "batch {} hosts", i + 1);
        let mut next = shown.3.clone();
        next.sort();
        assert_eq!(next, plan.get(i + 1).cloned().unwrap_or_default());
    }
    assert!(seen.iter().any(|s| s.0 == "pause"), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.0, "completed", "{seen:?}");
    assert!(last.3.is_empty(), "nothing next once it is done");
    assert!(!switching.is_empty(), "no host was ever shown switching");

    // A fresh view now: v2 everywhere (the target set after v2 was announced).
    // The last host's Status may reach the tracker just after the rollout
    // ends: wait for it, boundedly.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (state, v) = loop {
        let state = f.seed.tracker.state();
        let v = Watcher::new(30, None).observe(&state, &[], Instant::now(), 0);
        if v.all_live || Instant::now() > deadline {
            break (state, v);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(state.focus.as_deref(), Some("v2"));
    assert!(v.all_live, "{v:#?}");
    assert!(v.rollout.unwrap().done);
}
