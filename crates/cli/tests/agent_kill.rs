//! Fault injection: the agent daemon SIGKILLed while it takes a release from
//! the swarm, at random moments and at aimed steps (fetching, assembling,
//! manifest verified and written, `current` switched). After every kill the
//! host's `current` exists and is a complete release that audits clean (the
//! old one or the new one, never a mix), every installed release is whole and
//! the last good one is still there; restarted, the agent converges to the
//! new release and leaves nothing behind. (The 200-trial run found a kill
//! between install and switch leaving the host on the old tree for good; the
//! agent now finishes such an activation when it starts.)
//!
//! Trials: 8 by default (CI), `SHOAL_AGENT_KILL_TRIALS=200` for the long run;
//! kill delays come from a seeded generator (`SHOAL_AGENT_KILL_SEED`, 1).

mod swarm_support;

use shoal_sample::Rng;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use swarm_support::*;

/// Where a kill can be aimed; the rest are drawn at random.
#[derive(Clone, Copy, Debug)]
enum Step {
    Assembling,
    ManifestWritten,
    /// The tree renamed into place, `current` not yet switched.
    Installed,
    Switched,
}
const STEPS: [Step; 4] = [
    Step::Assembling,
    Step::ManifestWritten,
    Step::Installed,
    Step::Switched,
];

/// What the root showed when the kill came.
fn phase(root: &Path, tag: &str) -> &'static str {
    if current(root).as_deref() == Some(tag) {
        return "activated";
    }
    if releases(root).iter().any(|r| r == tag) {
        return "installed";
    }
    if root.join(format!("manifests/{tag}.manifest")).exists() {
        return "verified";
    }
    let partial = fs::read_dir(root.join("releases")).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
    });
    if partial { "assembling" } else { "fetching" }
}

/// Spins (no sleep: the last steps take milliseconds) until `step` shows in
/// the root, or `limit` passes.
fn wait_for_step(root: &Path, tag: &str, step: Step, limit: Duration) {
    let start = Instant::now();
    let manifest = root.join(format!("manifests/{tag}.manifest"));
    while start.elapsed() < limit {
        let seen = match step {
            Step::Assembling => phase(root, tag) == "assembling",
            Step::ManifestWritten => manifest.exists(),
            Step::Installed => releases(root).iter().any(|r| r == tag),
            Step::Switched => current(root).as_deref() == Some(tag),
        };
        if seen {
            return;
        }
    }
}

/// `current` resolves to a whole release that audits clean, every installed
/// release is whole, and `keep` is still installed.
#[test]
fn sigkill_of_an_agent_during_distribution_never_breaks_current() {
    let trials = env_u64("SHOAL_AGENT_KILL_TRIALS", 8);
    let seed = env_u64("SHOAL_AGENT_KILL_SEED", 1);
    let _serial = serial();
    let lab = Lab::new();
    let (_seed_proc, _) = lab.start_seed("seed.toml", Some("v1"));
    // A healthy peer in the victim's datacenter and one in another, so the
    // victim fetches from the swarm and not only from the seed.
    let peers: Vec<AgentSpec> = [("peer-a", "dc1"), ("peer-b", "dc2")]
        .iter()
        .map(|(h, dc)| lab.agent(h, dc, ""))
        .collect();
    let _peers: Vec<Proc> = peers.iter().map(|a| lab.start_agent(a)).collect();
    // The victim fetches at 4 MB/s, so a delta takes a noticeable time.
    let victim = lab.agent("victim", "dc2", "download_limit = 4000000");
    let mut proc = lab.start_agent(&victim);
    let everyone: Vec<&AgentSpec> = peers.iter().chain([&victim]).collect();
    lab.wait_current(&everyone, "v1", Duration::from_secs(60), &[&proc]);

    let edit = |n: u64| lab.edit(10, n);
    // One uninterrupted delta, to size the window the kills are drawn from.
    edit(1000);
    let t = Instant::now();
    lab.publish("v2");
    lab.wait_current(&everyone, "v2", Duration::from_secs(60), &[&proc]);
    let full = t.elapsed();
    println!(
        "agent-kill: an uninterrupted delta takes {} ms",
        full.as_millis()
    );

    let mut rng = Rng::new(seed);
    let mut phases: std::collections::BTreeMap<&str, u32> = Default::default();
    let mut aimed = [0u32; 4];
    let started = Instant::now();
    let mut good = "v2".to_string();
    for trial in 0..trials {
        let tag = format!("v{}", trial + 3);
        edit(trial + 1);
        lab.publish(&tag);
        let when = if trial % 2 == 1 {
            let i = (trial / 2) as usize % STEPS.len();
            aimed[i] += 1;
            wait_for_step(&victim.root, &tag, STEPS[i], full * 3);
            format!("at {:?}", STEPS[i])
        } else {
            let d = Duration::from_micros(rng.below(full.as_micros() as u64));
            std::thread::sleep(d);
            format!("after {} ms", d.as_millis())
        };
        let at = phase(&victim.root, &tag);
        proc.kill();
        *phases.entry(at).or_default() += 1;
        let what = format!("trial {trial} ({tag}, kill {when}, while {at})");
        assert_intact(&victim.root, &good, &what);
        let cur = current(&victim.root).unwrap();
        assert!(cur == good || cur == tag, "{what}: current is {cur}");

        proc = lab.start_agent(&victim);
        lab.wait_current(&[&victim], &tag, Duration::from_secs(60), &[&proc]);
        assert_intact(&victim.root, &tag, &format!("{what}, restarted"));
        // The restart cleaned what the kill left (partial trees, orphan manifests).
        let left: Vec<String> = fs::read_dir(victim.root.join("releases"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        assert!(left.is_empty(), "{what}: left {left:?}");
        good = tag;
    }
    println!(
        "agent-kill: {trials} trials in {:.1} s (seed {seed}); kills while {phases:?}; \
         aimed at {STEPS:?}: {aimed:?}; every kill left a clean current and the last good \
         release, and every restart converged",
        started.elapsed().as_secs_f64()
    );
}
