//! Turns what a run measured into the report: per strategy, per datacenter and
//! per host, against the lower bound of the topology.

use crate::bound::lower_bound;
use crate::report::{CrossParts, DcResult, DeltaInfo, HostResult, Report, StrategyResult};
use crate::run::{Outcome, Phase, Scenario, StrategyRun};
use crate::strategy::Strategy;
use crate::topology::Topology;
use std::collections::BTreeMap;

pub fn report(s: &Scenario, o: &Outcome) -> Report {
    let topo = &s.topology;
    let f = o.prepared.first.bundle_bytes;
    let bound = lower_bound(topo, f);
    let strategies = o
        .runs
        .iter()
        .map(|r| strategy_result(topo, s.time_limit.as_secs_f64(), r, f, bound.t_lb_s))
        .collect();
    // The delta figures of shoal (or of the first strategy that ran one).
    let delta_run = o
        .runs
        .iter()
        .find(|r| r.strategy == Strategy::Shoal && r.delta.is_some())
        .or_else(|| o.runs.iter().find(|r| r.delta.is_some()));
    let delta = match (&o.prepared.delta, delta_run.and_then(|r| r.delta.as_ref())) {
        (Some(d), Some(phase)) => {
            let per_host: Vec<u64> = phase.net.hosts[1..].iter().map(|h| h.recv_bytes).collect();
            let mean = per_host.iter().sum::<u64>() as f64 / per_host.len().max(1) as f64;
            Some(DeltaInfo {
                percent: d.percent,
                files_changed: d.files_changed,
                changed_plain_bytes: d.changed_plain_bytes,
                changed_compressed_bytes: d.changed_compressed_bytes,
                new_chunks: d.new_chunks,
                new_chunk_bytes: d.new_chunk_bytes,
                per_host_mean_bytes: mean,
                per_host_max_bytes: per_host.iter().copied().max().unwrap_or(0),
                ratio_to_changed: mean / d.changed_compressed_bytes.max(1) as f64,
            })
        }
        _ => None,
    };
    Report {
        topology: topo.name.clone(),
        hosts_total: topo.targets().len(),
        release_bytes: o.prepared.first.plain_bytes,
        bundle_bytes: f,
        chunks: o.prepared.first.chunks,
        delta,
        strategies,
        cpu_busy: o.cpu_busy,
        cores: o.cores,
        bound: Some(bound),
        model: "packet".into(),
    }
}

pub(crate) fn strategy_result(
    topo: &Topology,
    time_limit_s: f64,
    r: &StrategyRun,
    f: u64,
    t_lb: f64,
) -> StrategyResult {
    let p = &r.first;
    let t_all = p.t_all();
    let mut cross_in = BTreeMap::new();
    let mut cross_ratio = BTreeMap::new();
    let mut cross_parts = BTreeMap::new();
    for (i, dc) in topo.dcs.iter().enumerate() {
        let d = p.net.dcs.get(i).cloned().unwrap_or_default();
        cross_in.insert(dc.name.clone(), d.wan_in_bytes);
        cross_ratio.insert(dc.name.clone(), d.wan_in_bytes as f64 / f.max(1) as f64);
        cross_parts.insert(dc.name.clone(), CrossParts::of(&d));
    }
    let targets = topo.targets();
    let per_dc = topo
        .dcs
        .iter()
        .enumerate()
        .map(|(i, dc)| {
            let times: Vec<Option<f64>> = targets
                .iter()
                .zip(&p.verified_at)
                .filter(|(h, _)| h.dc == i)
                .map(|(_, t)| *t)
                .collect();
            let done: Vec<f64> = times.iter().flatten().copied().collect();
            DcResult {
                dc: dc.name.clone(),
                hosts: times.len(),
                verified: done.len(),
                t_first_s: done.iter().copied().reduce(f64::min),
                t_last_s: (done.len() == times.len())
                    .then(|| done.iter().copied().fold(0.0, f64::max)),
            }
        })
        .collect();
    let per_host = targets
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let net = p.net.hosts.get(i + 1).cloned().unwrap_or_default();
            HostResult {
                host: h.name.clone(),
                dc: topo.dcs[h.dc].name.clone(),
                t_verified_s: p.verified_at[i],
                bytes_in: net.recv_bytes,
                bytes_out: net.sent_bytes,
            }
        })
        .collect();
    StrategyResult {
        strategy: r.strategy.name().to_string(),
        t_all_s: t_all,
        t_lb_s: t_lb,
        ratio_to_lb: t_all.map(|t| t / t_lb),
        seed_upload_bytes: p.net.hosts.first().map_or(0, |h| h.sent_bytes),
        hosts_verified: p.verified(),
        hosts_total: targets.len(),
        cross_dc_bytes_in: cross_in,
        cross_dc_ratio: cross_ratio,
        cross_dc_in_parts: cross_parts,
        per_dc,
        per_host,
        time_limit_s,
        cpu_busy: r.cpu_busy,
        curve: curve(p),
        delta_t_all_s: r.delta.as_ref().and_then(Phase::t_all),
        audit_ok: r.audited_ok,
        audit_findings: r.audit_findings.clone(),
        rollback_s: r.rollback.as_ref().map(|b| b.seconds),
        rollback_hosts_back: r.rollback.as_ref().map(|b| b.hosts_back),
        rollback_error: r.rollback.as_ref().and_then(|b| b.error.clone()),
    }
}

/// Hosts verified over time, as steps from (0, 0).
fn curve(p: &Phase) -> Vec<(f64, usize)> {
    let mut times: Vec<f64> = p.verified_at.iter().flatten().copied().collect();
    times.sort_by(f64::total_cmp);
    let mut out = vec![(0.0, 0)];
    out.extend(times.into_iter().enumerate().map(|(i, t)| (t, i + 1)));
    out
}
