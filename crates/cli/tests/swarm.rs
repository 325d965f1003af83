//! The swarm as separate processes on loopback: a seed (tracker + first source)
//! and agent daemons of the real `shoal` binary, observed through `shoal status
//! --json`, their roots and their logs. Each test prints its figures
//! (`cargo test -p shoal-cli --test swarm -- --nocapture`).

mod swarm_support;

use std::ffi::OsStr;
use std::time::{Duration, Instant};
use swarm_support::*;

/// Generous bound for a whole swarm to finish the ~7 MB sample release.
const FINISH: Duration = Duration::from_secs(40);
/// Bound for agents to finish once the seed is killed: agents in its datacenter
/// keep waiting on it until QUIC's 30 s idle timeout closes the connection.
const AFTER_KILL: Duration = Duration::from_secs(45);

fn report_u64(report: &serde_json::Value, field: &str) -> u64 {
    report[field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {field} in the pack report {report}"))
}

/// Every agent installs v1, agents serve each other, and each chunk enters dc2
/// about once.
#[test]
fn eight_agents_two_datacenters() {
    eight_agents(true);
}

fn eight_agents(bound_cross_dc: bool) {
    let _serial = serial();
    let lab = Lab::new();
    // As in production, the agents run before the release exists: the seed
    // starts empty, the agents register, then the release is packed into the
    // running seed's store.
    let (seed, _) = lab.start_seed("seed.toml", None);
    let agents: Vec<AgentSpec> = (1..=8)
        .map(|i| {
            let dc = if i <= 4 { "dc1" } else { "dc2" };
            lab.agent(&format!("agent{i}"), dc, "")
        })
        .collect();
    let procs: Vec<Proc> = agents.iter().map(|a| lab.start_agent(a)).collect();
    let hosts: Vec<&str> = agents.iter().map(|a| a.host.as_str()).collect();
    lab.wait_registered(&hosts, FINISH);
    let t0 = Instant::now();
    let report = lab.publish("v1");
    let stored = report_u64(&report, "new_bytes_stored");
    let all: Vec<&Proc> = std::iter::once(&seed).chain(procs.iter()).collect();
    let refs: Vec<&AgentSpec> = agents.iter().collect();
    lab.wait_current(&refs, "v1", FINISH, &all);
    let took = t0.elapsed();
    // The seed reports its own counters every 500 ms: let them settle.
    std::thread::sleep(Duration::from_millis(1200));
    let st = lab.status().expect("status");

    let mut received = 0;
    let mut cross_into_dc2 = 0;
    for a in &agents {
        let h = &st[&a.host];
        let (down, cross) = (total(h, "bytes_down"), total(h, "bytes_down_cross_dc"));
        println!(
            "{} ({}): down {down} B, cross-dc {cross} B, up {} B, chunks {}",
            a.host,
            a.dc,
            total(h, "bytes_up"),
            total(h, "chunks_fetched")
        );
        received += down;
        if a.dc == "dc2" {
            cross_into_dc2 += cross;
        }
        assert!(audit_clean(&a.root), "{} does not audit clean", a.host);
    }
    let seed_up = total(&st["seed"], "bytes_up");
    let seed_share = seed_up as f64 / received as f64;
    let cross_ratio = cross_into_dc2 as f64 / stored as f64;
    println!(
        "eight_agents_two_datacenters: release stored {stored} B ({} chunks); all 8 current = v1 in {took:.1?}",
        report_u64(&report, "chunks")
    );
    println!(
        "  agents received {received} B in all; the seed uploaded {seed_up} B = {:.1}% of that ({:.2} copies)",
        seed_share * 100.0,
        seed_up as f64 / stored as f64
    );
    println!(
        "  bytes into dc2 across datacenters: {cross_into_dc2} B = {cross_ratio:.2} x the release's stored size"
    );
    assert!(
        received >= 8 * stored * 9 / 10,
        "agents received {received} B, less than 8 copies of {stored} B"
    );
    assert!(
        seed_share < 0.6,
        "the seed uploaded {:.1}% of what agents received: agents do not serve each other enough",
        seed_share * 100.0
    );
    if bound_cross_dc {
        assert!(
            cross_ratio <= 1.5,
            "{cross_ratio:.2} x the release crossed into dc2"
        );
    }
}

/// The chunks held by the union of the agents' stores, out of the seed's.
fn held_together(lab: &Lab, agents: &[AgentSpec]) -> (usize, usize) {
    let all: std::collections::HashSet<String> =
        chunk_names(&lab.path("seed-store")).into_iter().collect();
    let mut union = std::collections::HashSet::new();
    for a in agents {
        union.extend(chunk_names(&a.root.join("store")));
    }
    (union.intersection(&all).count(), all.len())
}

#[test]
fn seed_killed_after_one_full_copy() {
    let _serial = serial();
    let lab = Lab::new();
    let (seed, report) = lab.start_seed("seed.toml", Some("v1"));
    let chunks = report_u64(&report.expect("pack report"), "chunks");
    // 3 MB/s per agent (the limit counts chunks' plain bytes): each needs about
    // 6 s for the 19 MB release.
    let agents: Vec<AgentSpec> = (1..=6)
        .map(|i| {
            let dc = if i <= 3 { "dc1" } else { "dc2" };
            lab.agent(&format!("agent{i}"), dc, "download_limit = 3000000")
        })
        .collect();
    let t0 = Instant::now();
    let procs: Vec<Proc> = agents.iter().map(|a| lab.start_agent(a)).collect();
    let all: Vec<&Proc> = std::iter::once(&seed).chain(procs.iter()).collect();
    // One full copy among the agents: as many chunks fetched as the release has,
    // and every chunk in some agent's store.
    let (fetched, st) = wait_for("the agents to hold one full copy together", FINISH, || {
        let st = lab.status();
        let fetched: u64 = st.as_ref().map_or(0, |st| {
            agents
                .iter()
                .filter_map(|a| st.get(&a.host))
                .map(|h| total(h, "chunks_fetched"))
                .sum()
        });
        let (held, distinct) = held_together(&lab, &agents);
        if fetched >= chunks && held == distinct {
            Ok((fetched, st.expect("status")))
        } else {
            Err(format!(
                "{fetched} chunks fetched, {held} of {distinct} held\n{}",
                describe(st.as_ref(), &all)
            ))
        }
    });
    seed.kill();
    let killed_at = t0.elapsed();
    let done_before: Vec<&str> = agents
        .iter()
        .filter(|a| current(&a.root).is_some())
        .map(|a| a.host.as_str())
        .collect();
    println!(
        "seed_killed_after_one_full_copy: {chunks} chunks; seed SIGKILLed at {killed_at:.1?}, when the agents had fetched {fetched} chunks in all"
    );
    for a in &agents {
        let h = &st[&a.host];
        println!(
            "  {} ({}): {} chunks held at the kill, {} B down so far",
            a.host,
            a.dc,
            chunk_names(&a.root.join("store")).len(),
            total(h, "bytes_down")
        );
    }
    assert!(
        done_before.len() < agents.len(),
        "every agent finished before the seed was killed; the test proves nothing"
    );
    println!("  already complete at the kill: {done_before:?}");
    // The tracker is gone with the seed: watch the roots. Agents in the seed's
    // datacenter wait for the dead seed until QUIC's idle timeout (30 s).
    let mut finished: Vec<Option<Duration>> = vec![None; agents.len()];
    wait_for("every agent to finish without the seed", AFTER_KILL, || {
        for (a, f) in agents.iter().zip(finished.iter_mut()) {
            if f.is_none() && current(&a.root).as_deref() == Some("v1") {
                *f = Some(t0.elapsed().saturating_sub(killed_at));
            }
        }
        let left: Vec<&str> = agents
            .iter()
            .zip(&finished)
            .filter(|(_, f)| f.is_none())
            .map(|(a, _)| a.host.as_str())
            .collect();
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("not done: {left:?}\n{}", describe(None, &all)))
        }
    });
    for (a, f) in agents.iter().zip(&finished) {
        println!(
            "  {} ({}) current = v1 {:.1?} after the kill",
            a.host,
            a.dc,
            f.expect("finished")
        );
    }
    for a in &agents {
        assert!(audit_clean(&a.root), "{} does not audit clean", a.host);
    }
}

#[test]
fn agent_killed_and_restarted_fetches_nothing_twice() {
    let _serial = serial();
    let lab = Lab::new();
    let (seed, _) = lab.start_seed("seed.toml", Some("v1"));
    let distinct = chunk_names(&lab.path("seed-store")).len();
    let helpers = [
        lab.agent("agent1", "dc1", ""),
        lab.agent("agent2", "dc1", ""),
    ];
    // The victim fetches at 2 MB/s (of chunks' plain bytes): about 10 s for the release.
    let victim = lab.agent("agent3", "dc1", "download_limit = 2000000");
    let helper_procs: Vec<Proc> = helpers.iter().map(|a| lab.start_agent(a)).collect();
    let first = lab.start_agent(&victim);
    let store = victim.root.join("store");
    wait_for(
        "the victim to fetch 30% of the chunks",
        FINISH,
        || match chunk_names(&store).len() {
            n if n * 10 >= distinct * 3 => Ok(()),
            n => Err(format!("{n} of {distinct}\n{}", first.log_tail(20))),
        },
    );
    first.kill();
    let before = chunk_names(&store).len();
    assert!(
        before < distinct && current(&victim.root).is_none(),
        "the victim finished ({before} of {distinct} chunks) before it was killed"
    );
    let t_restart = Instant::now();
    let second = lab.start_agent(&victim);
    let mut all: Vec<&Proc> = vec![&seed, &second];
    all.extend(helper_procs.iter());
    let mut everyone: Vec<&AgentSpec> = helpers.iter().collect();
    everyone.push(&victim);
    let st = lab.wait_current(&everyone, "v1", FINISH, &all);
    let h = &st[&victim.host];
    let fetched = total(h, "chunks_fetched") as usize;
    println!(
        "agent_killed_and_restarted_fetches_nothing_twice: {distinct} distinct chunks; {before} in the store at the SIGKILL; \
         the restarted agent fetched {fetched} ({} B) and finished {:.1?} after its restart",
        total(h, "bytes_down"),
        t_restart.elapsed()
    );
    assert!(
        audit_clean(&victim.root),
        "the restarted agent does not audit clean"
    );
    assert_eq!(
        before + fetched,
        distinct,
        "chunks held before the kill + fetched after the restart != the release's chunks"
    );
    assert_eq!(chunk_names(&store).len(), distinct);
}

#[test]
fn lying_peer_is_banned() {
    let _serial = serial();
    let lab = Lab::new();
    let (seed, _) = lab.start_seed("seed.toml", Some("v1"));
    // The liar fetches honestly from the seed, then serves corrupted bytes. It is
    // named to sort first, so the honest agents (which dial hosts with smaller
    // names) connect to it, and it is local to them: they prefer it to the seed.
    let liar = lab.agent("agent0", "dc1", "fault_corrupt_uploads = true");
    let liar_proc = lab.start_agent(&liar);
    lab.wait_current(&[&liar], "v1", FINISH, &[&seed, &liar_proc]);
    let honest: Vec<AgentSpec> = (1..=5)
        .map(|i| lab.agent(&format!("agent{i}"), "dc1", ""))
        .collect();
    let procs: Vec<Proc> = honest.iter().map(|a| lab.start_agent(a)).collect();
    let mut all: Vec<&Proc> = vec![&seed, &liar_proc];
    all.extend(procs.iter());
    let refs: Vec<&AgentSpec> = honest.iter().collect();
    let st = lab.wait_current(&refs, "v1", FINISH, &all);
    println!(
        "lying_peer_is_banned: the liar uploaded {} B of corrupted chunks",
        total(&st[&liar.host], "bytes_up")
    );
    let mut banned_by = 0;
    for a in &honest {
        let h = &st[&a.host];
        let (rejected, banned) = (total(h, "chunks_rejected"), total(h, "peers_banned"));
        println!(
            "  {}: chunks_rejected {rejected}, peers_banned {banned}, down {} B, chunks {}",
            a.host,
            total(h, "bytes_down"),
            total(h, "chunks_fetched")
        );
        if rejected >= 1 && banned >= 1 {
            banned_by += 1;
        }
        assert!(audit_clean(&a.root), "{} does not audit clean", a.host);
    }
    println!("  {banned_by} of 5 honest agents rejected a chunk and banned the liar");
    assert!(banned_by >= 1, "no honest agent caught the liar");
}

#[test]
fn foreign_certificate_and_foreign_key_are_refused() {
    let _serial = serial();
    let lab = Lab::new();
    // (a) A certificate from another cluster's CA.
    let foreign = lab.path("foreign");
    run_ok(&[
        OsStr::new("cluster"),
        "init".as_ref(),
        "--dir".as_ref(),
        foreign.as_os_str(),
    ]);
    let foreign_observer = lab.path("foreign-observer.id");
    let intruder_id = lab.path("intruder.id");
    for (host, out) in [("observer", &foreign_observer), ("intruder", &intruder_id)] {
        run_ok(&[
            OsStr::new("cluster"),
            "issue".as_ref(),
            "--dir".as_ref(),
            foreign.as_os_str(),
            "--host".as_ref(),
            host.as_ref(),
            "--dc".as_ref(),
            "dc1".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
    }
    let (seed, _) = lab.start_seed("seed.toml", Some("v1"));
    // It trusts the right deploy key: only its certificate can keep it out.
    let intruder = lab.agent_with(
        "intruder",
        "dc1",
        &intruder_id,
        &[lab.cluster.join("deploy.key.pub")],
        "",
    );
    let member = lab.agent("agent1", "dc1", "");
    let t0 = Instant::now();
    let intruder_proc = lab.start_agent(&intruder);
    let member_proc = lab.start_agent(&member);
    lab.wait_current(
        &[&member],
        "v1",
        FINISH,
        &[&seed, &member_proc, &intruder_proc],
    );
    let started = Instant::now();
    let out = run(&[
        OsStr::new("status"),
        "--tracker".as_ref(),
        format!("127.0.0.1:{}", lab.port).as_ref(),
        "--tracker-host".as_ref(),
        "seed".as_ref(),
        "--identity".as_ref(),
        foreign_observer.as_os_str(),
        "--json".as_ref(),
    ]);
    println!(
        "foreign_certificate_and_foreign_key_are_refused: (a) status with a foreign certificate: {} in {:.1?}: {}",
        out.status,
        started.elapsed(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(
        !out.status.success(),
        "the tracker answered a foreign certificate"
    );
    // Give the intruder as long as the member needed, and at least 5 s.
    std::thread::sleep(Duration::from_secs(5).saturating_sub(t0.elapsed()));
    let st = lab.status().expect("status");
    assert!(
        intruder_proc.exited().is_none(),
        "the intruder agent exited"
    );
    println!(
        "  hosts the tracker knows after {:.1?}: {:?}; the intruder holds {} chunks, releases {:?}",
        t0.elapsed(),
        st.keys().collect::<Vec<_>>(),
        chunk_names(&intruder.root.join("store")).len(),
        releases(&intruder.root)
    );
    let log = intruder_proc.log();
    println!(
        "  intruder log: {}",
        log.lines().last().unwrap_or("(empty)")
    );
    assert!(
        !st.contains_key("intruder"),
        "the tracker lists the intruder"
    );
    assert!(current(&intruder.root).is_none() && releases(&intruder.root).is_empty());
    assert!(chunk_names(&intruder.root.join("store")).is_empty());
    intruder_proc.kill();
    member_proc.kill();
    seed.kill();

    // (b) A seed signing with a deploy key the agents do not trust.
    let rogue_key = lab.path("rogue.key");
    run_ok(&[
        OsStr::new("key"),
        "new".as_ref(),
        "--out".as_ref(),
        rogue_key.as_os_str(),
    ]);
    lab.write_seed_config("rogue.toml", &rogue_key, lab.port, "");
    let (rogue, _) = lab.start_seed("rogue.toml", Some("v1"));
    let agents: Vec<AgentSpec> = (2..=4)
        .map(|i| lab.agent(&format!("agent{i}"), "dc1", ""))
        .collect();
    let t1 = Instant::now();
    let procs: Vec<Proc> = agents.iter().map(|a| lab.start_agent(a)).collect();
    let mut all: Vec<&Proc> = vec![&rogue];
    all.extend(procs.iter());
    // Every agent has reported to the tracker (so it saw the release)...
    wait_for("every agent to report", FINISH, || {
        let st = lab.status();
        match &st {
            Some(s) if agents.iter().all(|a| s.contains_key(&a.host)) => Ok(()),
            _ => Err(describe(st.as_ref(), &all)),
        }
    });
    // ...and each has seen the manifest and refused it (hosts that wait for a
    // neighbour to hand the manifest on ask the tracker after a patience),
    // with nothing staged anywhere.
    wait_for("every agent to refuse the release", FINISH, || {
        let silent: Vec<&str> = procs
            .iter()
            .filter(|p| !p.log().contains("refusing release"))
            .map(|p| p.name.as_str())
            .collect();
        if silent.is_empty() {
            Ok(())
        } else {
            Err(format!("no refusal logged yet by {silent:?}"))
        }
    });
    let st = lab.status().expect("status");
    println!(
        "  (b) after {:.1?} with a seed signing with a foreign key:",
        t1.elapsed()
    );
    for a in &agents {
        let h = &st[&a.host];
        let log = procs
            .iter()
            .find(|p| p.name == a.host)
            .expect("its process")
            .log();
        let refusals: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("refusing release"))
            .collect();
        println!(
            "  {}: current {}, staged {}, chunks fetched {}, {} refusals logged; first: {}",
            a.host,
            h["current"],
            h["staged"],
            total(h, "chunks_fetched"),
            refusals.len(),
            refusals.first().map_or("-", |l| l.trim())
        );
        assert!(
            h["current"].is_null(),
            "{} activated {}",
            a.host,
            h["current"]
        );
        assert_eq!(
            h["staged"],
            serde_json::json!([]),
            "{} staged a release",
            a.host
        );
        assert!(releases(&a.root).is_empty() && current(&a.root).is_none());
        assert!(
            chunk_names(&a.root.join("store")).is_empty(),
            "{} fetched chunks",
            a.host
        );
        assert!(!refusals.is_empty(), "{} logged no refusal:\n{log}", a.host);
    }
}

#[test]
fn delta_fetches_only_new_chunks() {
    let _serial = serial();
    let lab = Lab::new();
    let (seed, report) = lab.start_seed("seed.toml", Some("v1"));
    let v1_stored = report_u64(&report.expect("pack report"), "new_bytes_stored");
    let agents: Vec<AgentSpec> = (1..=4)
        .map(|i| {
            let dc = if i <= 2 { "dc1" } else { "dc2" };
            lab.agent(&format!("agent{i}"), dc, "")
        })
        .collect();
    let procs: Vec<Proc> = agents.iter().map(|a| lab.start_agent(a)).collect();
    let refs: Vec<&AgentSpec> = agents.iter().collect();
    {
        let mut all: Vec<&Proc> = vec![&seed];
        all.extend(procs.iter());
        lab.wait_current(&refs, "v1", FINISH, &all);
    }
    // Agents report every 200 ms; take the totals once they no longer move.
    std::thread::sleep(Duration::from_millis(600));
    let before = lab.status().expect("status");

    seed.kill();
    run_ok(&[
        OsStr::new("sample"),
        "--out".as_ref(),
        lab.tree.as_os_str(),
        "--edit".as_ref(),
        "1".as_ref(),
        "--seed".as_ref(),
        "3".as_ref(),
    ]);
    let t0 = Instant::now();
    let (seed2, report) = lab.start_seed("seed.toml", Some("v2"));
    let report = report.expect("pack report");
    let new_stored = report_u64(&report, "new_bytes_stored");
    let v2_stored = report_u64(&report, "bytes");
    let mut all: Vec<&Proc> = vec![&seed2];
    all.extend(procs.iter());
    let after = lab.wait_current(&refs, "v2", Duration::from_secs(50), &all);
    println!(
        "delta_fetches_only_new_chunks: v1 stored {v1_stored} B; v2 ({v2_stored} B of files) added {new_stored} B \
         ({} new chunks of {}); every agent current = v2 {:.1?} after the seed restarted",
        report["new_chunks"],
        report["chunks"],
        t0.elapsed()
    );
    for a in &agents {
        let fetched = total(&after[&a.host], "bytes_down") - total(&before[&a.host], "bytes_down");
        let chunks =
            total(&after[&a.host], "chunks_fetched") - total(&before[&a.host], "chunks_fetched");
        println!(
            "  {} ({}): fetched {fetched} B in {chunks} chunks for v2 = {:.2}% of v1's stored size, {:.2} x the new bytes",
            a.host,
            a.dc,
            fetched as f64 * 100.0 / v1_stored as f64,
            fetched as f64 / new_stored as f64
        );
        assert!(audit_clean(&a.root), "{} does not audit clean", a.host);
        assert!(
            fetched <= 2 * new_stored,
            "{} fetched {fetched} B for a delta of {new_stored} B",
            a.host
        );
    }
}
