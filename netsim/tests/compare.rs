//! A small shoal-vs-central run over the simulated network (real seed, tracker,
//! agents and QUIC): every host ends verified, active and audited clean, the
//! fleet rolls back, and shoal moves fewer bytes across datacenters than
//! central does.

use shoal_netsim::prepare::Source;
use shoal_netsim::run::{Scenario, run};
use shoal_netsim::strategy::Strategy;
use shoal_netsim::summary::report;
use shoal_netsim::topology::Topology;
use std::time::Duration;

#[test]
fn shoal_crosses_less_than_central_and_every_host_verifies() {
    let work = tempfile::tempdir().unwrap();
    let scenario = Scenario {
        topology: Topology::builtin("ci").unwrap(),
        source: Source::Spec(shoal_sample::Spec {
            files: 300,
            mean_file: 4_000,
            binaries: vec![1 << 20],
            seed: 5,
        }),
        delta: Some(2.0),
        strategies: vec![Strategy::Shoal, Strategy::Central],
        time_limit: Duration::from_secs(60),
        work: work.path().to_path_buf(),
        seed: 3,
        audit: true,
        rollback: true,
        keep: false,
        cut: None,
    };
    let outcome = run(&scenario, &|_| {}).unwrap();
    let r = report(&scenario, &outcome);
    let hosts = scenario.topology.targets().len();
    let remote: Vec<&str> = scenario
        .topology
        .dcs
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != scenario.topology.seed().dc)
        .map(|(_, d)| d.name.as_str())
        .collect();
    // The fleet rolls back to the first release over the same network, from
    // the deploy host, with the real rollout code (shoal strategy only).
    let shoal = r.strategies.iter().find(|s| s.strategy == "shoal").unwrap();
    assert_eq!(
        shoal.rollback_hosts_back,
        Some(hosts),
        "{:?}",
        shoal.rollback_error
    );
    assert!(shoal.rollback_error.is_none(), "{:?}", shoal.rollback_error);
    assert!(
        r.strategies
            .iter()
            .find(|s| s.strategy == "central")
            .unwrap()
            .rollback_s
            .is_none()
    );
    for s in &r.strategies {
        assert_eq!(s.hosts_verified, hosts, "{}: {s:?}", s.strategy);
        assert_eq!(
            s.audit_ok,
            Some(hosts),
            "{}: {:?}",
            s.strategy,
            s.audit_findings
        );
        assert!(
            s.delta_t_all_s.is_some(),
            "{}: delta unfinished",
            s.strategy
        );
        assert!(
            s.t_all_s.unwrap() >= s.t_lb_s * 0.9,
            "{} beat the physical limit: {s:?}",
            s.strategy
        );
    }
    let (shoal, central) = (&r.strategies[0], &r.strategies[1]);
    let cross = |s: &shoal_netsim::report::StrategyResult| -> u64 {
        remote.iter().map(|d| s.cross_dc_bytes_in[*d]).sum()
    };
    println!(
        "cross-DC bytes: shoal {} central {}; seed upload: shoal {} central {}",
        cross(shoal),
        cross(central),
        shoal.seed_upload_bytes,
        central.seed_upload_bytes
    );
    assert!(cross(shoal) < cross(central));
    // central sends every host a full copy from the seed; shoal much less.
    assert!(central.seed_upload_bytes as f64 > hosts as f64 * r.bundle_bytes as f64 * 0.95);
    assert!(shoal.seed_upload_bytes < central.seed_upload_bytes);
    let d = r.delta.as_ref().expect("delta figures");
    assert!(d.new_chunks > 0 && d.per_host_mean_bytes > 0.0);
}
