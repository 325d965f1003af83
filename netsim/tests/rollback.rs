//! Fleet rollback at scale: 48 simulated hosts in 3 datacenters (40 ms RTT
//! between them) switched back to the previous release by the real rollout
//! code from the deploy host, in batches of a quarter of the fleet, with no
//! hooks: it must take under 5 seconds. The same run checks that crossers
//! in groups keep the connections across datacenters down.

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
    // Crossers in groups (`shoal_node::listing::Groups`): each of a remote
    // datacenter's 16 hosts dials across only its own group, not all 32
    // crossers of the other two. Every connection into a datacenter brings
    // it at least one Initial padded to 1,200 bytes, so a full mesh would
    // bring 16 x 32 x 1,200 bytes of handshakes or more.
    let seed_dc = &scenario.topology.dcs[scenario.topology.seed().dc].name;
    for (dc, parts) in &s.cross_dc_in_parts {
        if dc != seed_dc {
            println!("handshakes into {dc}: {} bytes", parts.handshake_bytes);
            assert!(
                parts.handshake_bytes < 16 * 32 * 1200,
                "{dc}: {} bytes of handshakes came in: a full mesh across",
                parts.handshake_bytes
            );
        }
    }
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
