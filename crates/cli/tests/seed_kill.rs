//! Fault injection: the seed (the deploy host's daemon, which also runs the
//! tracker) SIGKILLed at random moments of a distribution, from just after
//! the release is packed to just before the last agent has it, and started
//! again. After every kill each agent's `current` is the last good release or
//! the new one, whole and auditing clean, with the last good one still
//! installed; once the seed is back, every agent converges to the new release.
//!
//! Trials: 4 by default (CI), `SHOAL_SEED_KILL_TRIALS=50` for the long run;
//! kill delays come from a seeded generator (`SHOAL_SEED_KILL_SEED`, 1).

mod swarm_support;

use shoal_sample::Rng;
use std::time::{Duration, Instant};
use swarm_support::*;

#[test]
fn sigkill_of_the_seed_during_distribution_loses_nothing() {
    let trials = env_u64("SHOAL_SEED_KILL_TRIALS", 4);
    let rng_seed = env_u64("SHOAL_SEED_KILL_SEED", 1);
    let _serial = serial();
    let lab = Lab::new();
    let (mut seed, _) = lab.start_seed("seed.toml", Some("v1"));
    // Three agents at 4 MB/s each, two in the seed's datacenter and one
    // across, so a delta takes a few seconds and crosses datacenters.
    let agents: Vec<AgentSpec> = [("a1", "dc1"), ("a2", "dc1"), ("b1", "dc2")]
        .iter()
        .map(|(h, dc)| lab.agent(h, dc, "download_limit = 4000000"))
        .collect();
    let procs: Vec<Proc> = agents.iter().map(|a| lab.start_agent(a)).collect();
    let everyone: Vec<&AgentSpec> = agents.iter().collect();
    let watch: Vec<&Proc> = procs.iter().collect();
    lab.wait_current(&everyone, "v1", Duration::from_secs(60), &watch);

    let edit = |n: u64| lab.edit(20, n);
    // One uninterrupted delta, to size the window the kills are drawn from.
    edit(1000);
    let t = Instant::now();
    lab.publish("v2");
    lab.wait_current(&everyone, "v2", Duration::from_secs(60), &watch);
    let full = t.elapsed();
    println!(
        "seed-kill: an uninterrupted delta takes {} ms",
        full.as_millis()
    );

    let mut rng = Rng::new(rng_seed);
    let mut good = "v2".to_string();
    let mut recovery = Vec::new();
    let mut done_at_kill = 0usize;
    let started = Instant::now();
    for trial in 0..trials {
        let tag = format!("v{}", trial + 3);
        edit(trial + 1);
        lab.publish(&tag);
        let d = Duration::from_micros(rng.below(full.as_micros() as u64));
        std::thread::sleep(d);
        seed.kill();
        let what = format!(
            "trial {trial} ({tag}, seed killed after {} ms)",
            d.as_millis()
        );
        for a in &agents {
            assert_intact(&a.root, &good, &format!("{what}, {}", a.host));
            let cur = current(&a.root).unwrap();
            assert!(cur == good || cur == tag, "{what}: {} is on {cur}", a.host);
            done_at_kill += usize::from(cur == tag);
        }
        // Down for a moment, as a crashed daemon restarted by systemd would be.
        std::thread::sleep(Duration::from_millis(500));
        let back = Instant::now();
        seed = lab.start_seed("seed.toml", None).0;
        let mut watch: Vec<&Proc> = procs.iter().collect();
        watch.push(&seed);
        lab.wait_current(&everyone, &tag, Duration::from_secs(90), &watch);
        let took = back.elapsed();
        recovery.push(took);
        for a in &agents {
            assert_intact(
                &a.root,
                &good,
                &format!("{what}, {} after the restart", a.host),
            );
        }
        for p in &procs {
            assert!(
                p.exited().is_none(),
                "{what}: {} exited\n{}",
                p.name,
                p.log_tail(20)
            );
        }
        println!(
            "seed-kill: {what}: every agent on {tag} {:.1} s after the restart",
            took.as_secs_f64()
        );
        good = tag;
    }
    let worst = recovery.iter().max().copied().unwrap_or_default();
    println!(
        "seed-kill: {trials} trials in {:.1} s (seed {rng_seed}); {done_at_kill} of {} agent-trials \
         already had the release at the kill; every agent converged after every restart (slowest \
         {:.1} s); no current broken, no good release lost",
        started.elapsed().as_secs_f64(),
        trials as usize * agents.len(),
        worst.as_secs_f64()
    );
}
