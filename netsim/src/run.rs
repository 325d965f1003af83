//! The scenario runner: for each strategy, a fresh simulated network, a seed
//! and one agent per target host (the real code, each on its own simulated
//! socket), then the release announced and watched until every host has
//! installed and verified it, then the delta release the same way.
//!
//! Each strategy runs in its own tokio runtime, dropped at the end, so nothing
//! one strategy spawned can disturb the next. The runtime is a current-thread
//! one with its clock paused: the network, quinn and every agent keep virtual
//! time, which moves only while all of them wait, so a saturated CPU slows the
//! run down but does not change what it measures (docs/netsim.md, "Virtual
//! time"). Disk work goes through `spawn_blocking`, which holds the clock.

use crate::net::{NetStats, Network};
use crate::prepare::{self, FIRST_TAG, Prepared, SECOND_TAG, Source};
use crate::strategy::Strategy;
use crate::topology::Topology;
use crate::{RunError, cpu};
use shoal_bundle::{Hash, Root};
use shoal_net::{Identity, Tuning};
use shoal_node::Node;
use shoal_node::agent;
use shoal_node::config::AgentConfig;
use shoal_seed::seed::{Seed, SeedConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
// Simulated time is tokio's (paused) clock; the CPU figures use the wall clock.
use tokio::time::Instant;

/// What to run.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub topology: Topology,
    pub source: Source,
    /// Percent of files the second release edits (none: no delta phase).
    pub delta: Option<f64>,
    pub strategies: Vec<Strategy>,
    /// A phase not finished by then is reported as unfinished.
    pub time_limit: Duration,
    /// Work directory (certificates, trees, every simulated host's root).
    pub work: PathBuf,
    /// Makes loss and jitter repeatable.
    pub seed: u64,
    /// Audit every host's active tree at the end.
    pub audit: bool,
    /// Keep the hosts' roots after each strategy (they are removed otherwise).
    pub keep: bool,
    /// After the last release (shoal strategy only), roll the whole fleet back
    /// to the first one with the real rollout code, from the deploy host, in
    /// batches of a quarter of the fleet, and time it.
    pub rollback: bool,
    /// A datacenter cut off from the others for a while during the first
    /// release (a fault to survive, not a measurement).
    pub cut: Option<Cut>,
}

/// Datacenter `dc` (an index into the topology's) loses every WAN link from
/// `at` after the announcement for `length`, then heals.
#[derive(Clone, Copy, Debug)]
pub struct Cut {
    pub dc: usize,
    pub at: Duration,
    pub length: Duration,
}

impl Cut {
    fn active(&self, elapsed: Duration) -> bool {
        elapsed >= self.at && elapsed < self.at + self.length
    }
}

/// The fleet rollback at the end of a run.
#[derive(Clone, Debug)]
pub struct RollbackRun {
    pub seconds: f64,
    pub batches: usize,
    /// Hosts whose `current` is the first release afterwards.
    pub hosts_back: usize,
    pub error: Option<String>,
}

/// Progress, for a progress bar or log lines.
#[derive(Clone, Debug)]
pub enum Event {
    Preparing,
    Prepared {
        plain_bytes: u64,
        bundle_bytes: u64,
    },
    Started {
        strategy: &'static str,
        phase: &'static str,
        hosts: usize,
    },
    Progress {
        strategy: &'static str,
        phase: &'static str,
        verified: usize,
        hosts: usize,
        elapsed: Duration,
    },
    Finished {
        strategy: &'static str,
        phase: &'static str,
        verified: usize,
        hosts: usize,
        elapsed: Duration,
    },
}

/// One phase (one release distributed) of one strategy.
#[derive(Clone, Debug, Default)]
pub struct Phase {
    /// Seconds from the announcement until each target host had it verified.
    pub verified_at: Vec<Option<f64>>,
    pub elapsed: Duration,
    pub net: NetStats,
}

impl Phase {
    pub fn t_all(&self) -> Option<f64> {
        self.verified_at
            .iter()
            .try_fold(0.0f64, |m, t| t.map(|t| m.max(t)))
    }

    pub fn verified(&self) -> usize {
        self.verified_at.iter().flatten().count()
    }
}

/// Everything measured for one strategy.
#[derive(Clone, Debug)]
pub struct StrategyRun {
    pub strategy: Strategy,
    pub first: Phase,
    pub delta: Option<Phase>,
    /// Hosts whose `current` is the last release and whose tree passed an audit.
    pub audited_ok: Option<usize>,
    pub audit_findings: Vec<String>,
    /// Share of all cores busy during the strategy's phases.
    pub cpu_busy: f64,
    pub rollback: Option<RollbackRun>,
}

/// The whole run.
pub struct Outcome {
    pub prepared: Prepared,
    pub runs: Vec<StrategyRun>,
    pub cpu_busy: f64,
    pub cores: usize,
}

/// Prepares once, then runs every strategy in turn.
pub fn run(s: &Scenario, on: &(dyn Fn(Event) + Sync)) -> Result<Outcome, RunError> {
    on(Event::Preparing);
    let prepared = prepare::prepare(&s.topology, &s.work, &s.source, s.delta)?;
    on(Event::Prepared {
        plain_bytes: prepared.first.plain_bytes,
        bundle_bytes: prepared.first.bundle_bytes,
    });
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu0 = cpu::process_time();
    let wall0 = std::time::Instant::now();
    let mut runs = Vec::new();
    for &k in &s.strategies {
        let dir = s.work.join(k.name());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .map_err(|cause| RunError::Io {
                path: dir.clone(),
                cause,
            })?;
        let result = rt.block_on(run_strategy(s, &prepared, k, &dir, on));
        rt.shutdown_timeout(Duration::from_secs(2));
        if !s.keep {
            let _ = std::fs::remove_dir_all(&dir);
        }
        runs.push(result?);
    }
    let cpu_busy = cpu::busy(cpu0, wall0, cores);
    Ok(Outcome {
        prepared,
        runs,
        cpu_busy,
        cores,
    })
}

struct Fleet {
    net: Arc<Network>,
    seed: Seed,
    seed_store: shoal_bundle::ChunkStore,
    agents: Vec<(Arc<Node>, Root)>,
}

async fn run_strategy(
    s: &Scenario,
    p: &Prepared,
    k: Strategy,
    dir: &Path,
    on: &(dyn Fn(Event) + Sync),
) -> Result<StrategyRun, RunError> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let fleet = start_fleet(s, p, k, dir).await?;
    let cpu0 = cpu::process_time();
    let wall0 = std::time::Instant::now();
    let first = distribute(s, p, &fleet, k, FIRST_TAG, "release", on).await?;
    let mut last_tag = FIRST_TAG;
    let delta = match &p.delta {
        Some(_) if first.t_all().is_some() => {
            last_tag = SECOND_TAG;
            Some(distribute(s, p, &fleet, k, SECOND_TAG, "delta", on).await?)
        }
        _ => None,
    };
    let cpu_busy = cpu::busy(cpu0, wall0, cores);
    let (audited_ok, audit_findings) = if s.audit {
        let (ok, findings) = audit_fleet(&fleet, last_tag).await;
        (Some(ok), findings)
    } else {
        (None, Vec::new())
    };
    let rollback = if s.rollback && k == Strategy::Shoal && last_tag == SECOND_TAG {
        Some(fleet_rollback(s, p, &fleet).await)
    } else {
        None
    };
    stop_fleet(fleet).await;
    Ok(StrategyRun {
        strategy: k,
        first,
        delta,
        audited_ok,
        audit_findings,
        cpu_busy,
        rollback,
    })
}

async fn start_fleet(
    s: &Scenario,
    p: &Prepared,
    k: Strategy,
    dir: &Path,
) -> Result<Fleet, RunError> {
    let topo = &s.topology;
    let net = Network::new_virtual(topo, s.seed);
    let rtt = topo.max_rtt();
    let seed_host = topo.seed();
    let seed_store = prepare::seed_store(&p.master, &dir.join("seed-store"))?;
    let seed_cfg = SeedConfig {
        host: seed_host.name.clone(),
        dc: topo.dcs[seed_host.dc].name.clone(),
        store: seed_store.dir().to_path_buf(),
        key: p.cluster.join("deploy.key"),
        trust: Vec::new(),
        identity: p.identities[0].clone(),
        listen: seed_host.addr,
        advertise: None,
        upload_limit: 0,
        upload_slots: 32,
        deploy_log: None,
        metrics: None,
        web: None,
        locality: k.locality(),
        path_mtu: topo.mtu,
    };
    let identity = Identity::load(&p.identities[0])?;
    let tuning = Tuning::for_path(seed_host.upload, rtt).with_path_mtu(seed_cfg.path_mtu);
    let ep = shoal_net::endpoint_with_socket(&identity, net.socket(0), &tuning)?;
    let seed = Seed::start_on(&seed_cfg, ep).await?;
    seed.tracker.set_policy(k.policy(topo));
    let mut agents = Vec::new();
    for (i, h) in topo.hosts.iter().enumerate().skip(1) {
        let cfg = AgentConfig {
            host: h.name.clone(),
            dc: topo.dcs[h.dc].name.clone(),
            root: dir.join("hosts").join(&h.name),
            identity: p.identities[i].clone(),
            trust: vec![p.cluster.join("deploy.key.pub")],
            tracker: seed_host.addr,
            tracker_host: seed_host.name.clone(),
            listen: h.addr,
            advertise: None,
            auto_activate: true,
            upload_limit: 0,
            download_limit: 0,
            upload_slots: 32,
            reserve: 0,
            path_bandwidth: h.download.max(h.upload),
            path_rtt_ms: rtt.as_millis().max(1) as u64,
            // The topology's MTU is every path's, as an operator's would be.
            path_mtu: topo.mtu,
            poll_ms: 100,
            locality: k.locality(),
            fault_corrupt_uploads: false,
            metrics: None,
            hooks: Default::default(),
        };
        let root = Root::new(&cfg.root);
        let identity = Identity::load(&cfg.identity)?;
        let ep = shoal_net::endpoint_with_socket(&identity, net.socket(i), &agent::tuning(&cfg))?;
        agents.push((agent::start_on(cfg, identity, ep).await?, root));
    }
    // Start the clock only once every host has registered, so each strategy
    // is timed from the same state.
    let deadline = Instant::now() + Duration::from_secs(30);
    while seed.tracker.fleet().len() < topo.hosts.len() {
        if Instant::now() > deadline {
            return Err(RunError::Stuck(format!(
                "{}: only {} of {} hosts registered with the tracker in 30 s",
                k.name(),
                seed.tracker.fleet().len(),
                topo.hosts.len()
            )));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(Fleet {
        net,
        seed,
        seed_store,
        agents,
    })
}

/// Announces `tag` and waits until every agent verified it or time runs out.
async fn distribute(
    s: &Scenario,
    p: &Prepared,
    fleet: &Fleet,
    k: Strategy,
    tag: &str,
    phase: &'static str,
    on: &(dyn Fn(Event) + Sync),
) -> Result<Phase, RunError> {
    let hosts = fleet.agents.len();
    on(Event::Started {
        strategy: k.name(),
        phase,
        hosts,
    });
    prepare::add_manifest(&p.master, &fleet.seed_store, tag)?;
    fleet.net.reset_stats();
    let t0 = Instant::now();
    let id: Hash = fleet.seed.announce(tag)?;
    let mut verified_at: Vec<Option<f64>> = vec![None; hosts];
    let mut last_report = t0;
    let cut = s.cut.filter(|_| phase == "release");
    let mut is_cut = false;
    loop {
        if let Some(c) = cut
            && c.active(t0.elapsed()) != is_cut
        {
            is_cut = !is_cut;
            fleet.net.set_dc_cut(c.dc, is_cut);
            tracing::info!(dc = c.dc, cut = is_cut, "datacenter WAN links");
        }
        for (i, (node, _)) in fleet.agents.iter().enumerate() {
            if verified_at[i].is_none()
                && let Some(at) = node.installed_at(&id)
            {
                verified_at[i] = Some(at.saturating_duration_since(t0).as_secs_f64());
            }
        }
        let done = verified_at.iter().flatten().count();
        let elapsed = t0.elapsed();
        if done == hosts || elapsed > s.time_limit {
            if let Some(c) = cut.filter(|_| is_cut) {
                fleet.net.set_dc_cut(c.dc, false);
            }
            on(Event::Finished {
                strategy: k.name(),
                phase,
                verified: done,
                hosts,
                elapsed,
            });
            return Ok(Phase {
                verified_at,
                elapsed,
                net: fleet.net.stats(),
            });
        }
        if last_report.elapsed() >= Duration::from_millis(200) {
            last_report = Instant::now();
            if tracing::enabled!(target: "shoal_netsim::timeline", tracing::Level::DEBUG) {
                timeline(fleet, elapsed, done);
            }
            on(Event::Progress {
                strategy: k.name(),
                phase,
                verified: done,
                hosts,
                elapsed,
            });
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// One line of what the fleet holds and what crossed the network so far
/// (`RUST_LOG=shoal_netsim::timeline=debug`), to see where a run loses time.
fn timeline(fleet: &Fleet, elapsed: Duration, verified: usize) {
    let net = fleet.net.stats();
    let (mut have, mut total) = (0u64, 0u64);
    for (node, _) in &fleet.agents {
        if let Some(t) = node.transfer() {
            have += u64::from(t.chunks_have);
            total += u64::from(t.chunks_total);
        }
    }
    let seed_up = net.hosts.first().map_or(0, |h| h.sent_bytes);
    let recv: u64 = net.hosts.iter().skip(1).map(|h| h.recv_bytes).sum();
    let wan: Vec<u64> = net.dcs.iter().map(|d| d.wan_in_bytes >> 20).collect();
    let small: Vec<u64> = net.dcs.iter().map(|d| d.wan_in_small_bytes >> 10).collect();
    tracing::debug!(
        target: "shoal_netsim::timeline",
        t = format!("{:.1}", elapsed.as_secs_f64()),
        verified,
        chunks = format!("{have}/{total}"),
        seed_up_mib = seed_up >> 20,
        recv_mib = recv >> 20,
        wan_in_mib = ?wan,
        wan_in_small_kib = ?small,
        dropped_queue = net.dropped_queue,
        dropped_loss = net.dropped_loss,
        "timeline"
    );
}

/// Checks every host: `current` is `tag` and its tree matches the manifest.
async fn audit_fleet(fleet: &Fleet, tag: &str) -> (usize, Vec<String>) {
    let roots: Vec<Root> = fleet.agents.iter().map(|(_, r)| r.clone()).collect();
    let tag = tag.to_string();
    let checked = tokio::task::spawn_blocking(move || {
        let mut ok = 0;
        let mut findings = Vec::new();
        for root in roots {
            let name = root.path().display().to_string();
            match root.current() {
                Ok(Some(t)) if t == tag => {}
                other => {
                    findings.push(format!("{name}: current is {other:?}, not {tag}"));
                    continue;
                }
            }
            match shoal_bundle::audit::audit_release(&root, Some(&tag)) {
                Ok(r) if r.modified.is_empty() && r.missing.is_empty() && r.extra.is_empty() => {
                    ok += 1
                }
                Ok(r) => findings.push(format!(
                    "{name}: {} modified, {} missing, {} extra",
                    r.modified.len(),
                    r.missing.len(),
                    r.extra.len()
                )),
                Err(e) => findings.push(format!("{name}: {e}")),
            }
        }
        (ok, findings)
    })
    .await;
    checked.unwrap_or_else(|e| (0, vec![format!("audit task failed: {e}")]))
}

/// `shoal rollback` of the whole fleet, run from the deploy host's endpoint
/// (as the command would run there), over the simulated network.
async fn fleet_rollback(s: &Scenario, p: &Prepared, fleet: &Fleet) -> RollbackRun {
    let seed_host = s.topology.seed();
    let client = shoal_node::client::Client::on(fleet.seed.node.endpoint.clone(), &seed_host.name);
    let opts = shoal_rollout::Options {
        batch: shoal_rollout::BatchSize::Percent(25.0),
        interval: Duration::ZERO,
        drain: Duration::ZERO,
        stage_timeout: Duration::from_secs(30),
        host_timeout: Duration::from_secs(30),
        who: "netsim@deploy-host".into(),
        ..Default::default()
    };
    let (_stop, rx) = tokio::sync::watch::channel(false);
    let t0 = Instant::now();
    let result = match shoal_bundle::signing::DeployKey::load(&p.cluster.join("deploy.key")) {
        Ok(key) => shoal_rollout::run(
            &client,
            seed_host.addr,
            &seed_host.name,
            &key,
            shoal_rollout::Goal::Rollback(None),
            &opts,
            rx,
            &mut |_| {},
        )
        .await
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    let seconds = t0.elapsed().as_secs_f64();
    let hosts_back = fleet
        .agents
        .iter()
        .filter(|(_, root)| root.current().ok().flatten().as_deref() == Some(FIRST_TAG))
        .count();
    match result {
        Ok(r) => RollbackRun {
            seconds,
            batches: r.batches_run,
            hosts_back,
            error: (!r.ok).then(|| {
                r.stopped
                    .unwrap_or_else(|| format!("{} failure(s)", r.failures))
            }),
        },
        Err(e) => RollbackRun {
            seconds,
            batches: 0,
            hosts_back,
            error: Some(e),
        },
    }
}

async fn stop_fleet(fleet: Fleet) {
    let mut set = tokio::task::JoinSet::new();
    for (node, _) in fleet.agents {
        set.spawn(async move { node.shutdown().await });
    }
    let seed = fleet.seed.node.clone();
    set.spawn(async move { seed.shutdown().await });
    while set.join_next().await.is_some() {}
    fleet.net.shutdown();
}
