//! `shoal demo`: the README's main command. On the `demo` topology (3 simulated
//! datacenters x 4 hosts, real QUIC over a simulated network, all in this
//! process) it packs a generated sample release, seeds it, lets the agents
//! distribute it, install, verify and activate it, ships a 1% delta the same
//! way, audits every host, and compares with every host fetching from the
//! deploy host (`central`). `--local` runs the one-host walk-through instead.

use crate::bench::{simulate, work_dir};
use anyhow::Result;
use shoal_netsim::prepare::Source;
use shoal_netsim::run::Scenario;
use shoal_netsim::strategy::Strategy;
use shoal_netsim::topology::Topology;
use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, Instant};

pub fn run(dir: Option<&Path>, json: bool) -> Result<ExitCode> {
    let started = Instant::now();
    let topology = Topology::builtin("demo").expect("the demo topology ships with shoal");
    let (work, _guard) = work_dir(dir)?;
    if !json {
        crate::out::print(format_args!(
            "shoal demo: {} ({} targets + the seed) in {}\n\n",
            topology.description,
            topology.targets().len(),
            work.display()
        ))?;
    }
    let scenario = Scenario {
        topology,
        source: Source::Spec(shoal_sample::Spec::demo()),
        delta: Some(1.0),
        strategies: vec![Strategy::Shoal, Strategy::Central],
        time_limit: Duration::from_secs(60),
        work,
        seed: 1,
        audit: true,
        rollback: true,
        keep: dir.is_some(),
        cut: None,
    };
    let report = simulate(&scenario, json)?;
    let ok = report.strategies.iter().all(|s| {
        s.hosts_verified == s.hosts_total
            && s.audit_ok == Some(s.hosts_total)
            && s.rollback_hosts_back.is_none_or(|n| n == s.hosts_total)
    });
    if json {
        crate::out::print(format_args!("{}\n", report.to_json()))?;
    } else {
        crate::out::print(report.render_table())?;
        crate::out::print(format_args!(
            "\n{} in {:.1} s\n",
            if ok {
                "every host verified, activated, audited clean and rolled back"
            } else {
                "NOT every host ended verified, active, clean and rolled back"
            },
            started.elapsed().as_secs_f64()
        ))?;
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
