//! Fault injection: a whole datacenter cut off from the others for 30 s in
//! the middle of a distribution (every WAN link of dc3 drops every packet),
//! then healed. The real seed, tracker and agents run unchanged over the
//! simulated network. The other datacenters must not wait for it, the cut
//! hosts must finish once it heals (their QUIC connections across the cut
//! time out in the meantime, so they must dial again), and every host must
//! end with the release verified, current and auditing clean.

use shoal_netsim::prepare::Source;
use shoal_netsim::run::{Cut, Scenario, run};
use shoal_netsim::strategy::Strategy;
use shoal_netsim::topology::Topology;
use std::time::Duration;

#[test]
fn a_datacenter_cut_off_for_30_s_catches_up_once_healed() {
    let work = tempfile::tempdir().unwrap();
    let topology = Topology::builtin("demo").unwrap();
    let dc = topology.dcs.iter().position(|d| d.name == "dc3").unwrap();
    let cut = Cut {
        dc,
        at: Duration::from_millis(300),
        length: Duration::from_secs(30),
    };
    let scenario = Scenario {
        topology: topology.clone(),
        source: Source::Spec(shoal_sample::Spec {
            files: 200,
            mean_file: 4_000,
            binaries: vec![8 << 20],
            seed: 5,
        }),
        delta: Some(5.0),
        strategies: vec![Strategy::Shoal],
        time_limit: Duration::from_secs(150),
        work: work.path().to_path_buf(),
        seed: 1,
        audit: true,
        rollback: false,
        keep: false,
        cut: Some(cut),
    };
    let outcome = run(&scenario, &|_| {}).unwrap();
    let r = &outcome.runs[0];
    let heal = (cut.at + cut.length).as_secs_f64();
    // Agents are the topology's hosts after the seed, in order.
    let hosts = &topology.hosts[1..];
    let mut cut_done = Vec::new();
    let mut other_done = Vec::new();
    for (h, at) in hosts.iter().zip(&r.first.verified_at) {
        let at = at.unwrap_or_else(|| panic!("{} never verified the release", h.name));
        if h.dc == dc {
            cut_done.push(at);
        } else {
            other_done.push(at);
        }
    }
    let last_other = other_done.iter().cloned().fold(0.0, f64::max);
    let first_cut = cut_done.iter().cloned().fold(f64::MAX, f64::min);
    let last_cut = cut_done.iter().cloned().fold(0.0, f64::max);
    println!(
        "partition: dc3 cut {:.1}-{heal:.1} s; the other {} hosts done by {last_other:.1} s; \
         dc3's {} hosts done {first_cut:.1}-{last_cut:.1} s ({:.1} s after the heal); \
         {} packets dropped at the cut",
        cut.at.as_secs_f64(),
        other_done.len(),
        cut_done.len(),
        last_cut - heal,
        r.first.net.dropped_cut,
    );
    assert!(
        first_cut > heal,
        "a dc3 host verified the release at {first_cut:.1} s, before the heal at {heal:.1} s: \
         the cut came too late to test anything"
    );
    assert!(
        r.first.net.dropped_cut > 0,
        "nothing was dropped at the cut"
    );
    assert!(
        last_other < heal,
        "the rest of the fleet waited for the cut datacenter (done at {last_other:.1} s)"
    );
    assert!(
        last_cut - heal < 60.0,
        "dc3 took {:.1} s after the heal",
        last_cut - heal
    );
    // The delta after the heal reaches everyone, and every tree audits clean.
    let delta = r.delta.as_ref().expect("the delta phase ran");
    assert_eq!(
        delta.verified(),
        hosts.len(),
        "delta: {:?}",
        delta.verified_at
    );
    assert_eq!(
        r.audited_ok,
        Some(hosts.len()),
        "audit findings: {:?}",
        r.audit_findings
    );
}
