//! Fleet rollback at scale: 48 simulated hosts in 3 datacenters (40 ms RTT
//! between them) switched back to the previous release by the real rollout
//! code from the deploy host, in batches of a quarter of the fleet, with no
//! hooks: it must take under 5 seconds.

use shoal_netsim::prepare::Source;
use shoal_netsim::run::{Scenario, run};
use shoal_netsim::strategy::Strategy;
use shoal_netsim::summary::report;
use shoal_netsim::topology::Topology;
use std::time::Duration;

#[test]
fn forty_eight_hosts_roll_back_in_under_five_seconds() {
    let work = tempfile::tempdir().unwrap();
    let scenario = Scenario {
        topology: Topology::builtin("3dc-48").unwrap(),
        source: Source::Spec(shoal_sample::Spec {
            files: 60,
            mean_file: 2_000,
            binaries: vec![128 << 10],
            seed: 7,
        }),
        delta: Some(5.0),
        strategies: vec![Strategy::Shoal],
        time_limit: Duration::from_secs(120),
        work: work.path().to_path_buf(),
        seed: 1,
        audit: false,
        rollback: true,
        keep: false,
        cut: None,
    };
    let outcome = run(&scenario, &|_| {}).unwrap();
    let r = report(&scenario, &outcome);
    let s = &r.strategies[0];
    assert_eq!(s.hosts_verified, 48, "{s:?}");
    assert!(
        s.delta_t_all_s.is_some(),
        "the second release did not reach every host"
    );
    println!(
        "fleet rollback of 48 hosts: {:.2} s, {:?} back, error {:?}",
        s.rollback_s.unwrap_or(f64::NAN),
        s.rollback_hosts_back,
        s.rollback_error
    );
    assert_eq!(s.rollback_hosts_back, Some(48), "{:?}", s.rollback_error);
    assert!(s.rollback_error.is_none(), "{:?}", s.rollback_error);
    assert!(s.rollback_s.unwrap() < 5.0, "{:?}", s.rollback_s);
}
