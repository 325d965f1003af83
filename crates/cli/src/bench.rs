//! `shoal bench`: distribute one release over a simulated fleet with each
//! strategy in turn and compare them with the physical limit.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_netsim::prepare::Source;
use shoal_netsim::report::Report;
use shoal_netsim::run::{Cut, Event, Scenario};
use shoal_netsim::strategy::Strategy;
use shoal_netsim::topology::Topology;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

pub struct BenchArgs {
    pub topology: String,
    pub size: Option<String>,
    pub tree: Option<PathBuf>,
    pub delta: Option<f64>,
    pub strategy: String,
    pub time_limit: u64,
    pub chart: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub seed: u64,
    pub keep: bool,
    pub cut: Option<String>,
    pub model: String,
    pub piece: Option<String>,
    pub manifest: Option<String>,
}

/// `dc3:2:30`: datacenter dc3 cut off 2 s after the announcement, for 30 s.
pub fn parse_cut(s: &str, topo: &Topology) -> Result<Cut> {
    let parts: Vec<&str> = s.split(':').collect();
    let [dc, at, length] = parts[..] else {
        bail!("--cut {s:?}: expected DC:AT:LENGTH, e.g. dc3:2:30");
    };
    let Some(dc_ix) = topo.dcs.iter().position(|d| d.name == dc) else {
        let names: Vec<&str> = topo.dcs.iter().map(|d| d.name.as_str()).collect();
        bail!(
            "--cut {s:?}: no datacenter {dc:?} in the topology ({})",
            names.join(", ")
        );
    };
    let secs = |v: &str, what: &str| -> Result<Duration> {
        let f: f64 = v
            .parse()
            .with_context(|| format!("--cut {s:?}: {what} {v:?} is not a number of seconds"))?;
        if !f.is_finite() || f < 0.0 {
            bail!("--cut {s:?}: {what} must be zero or more seconds");
        }
        Ok(Duration::from_secs_f64(f))
    };
    Ok(Cut {
        dc: dc_ix,
        at: secs(at, "AT")?,
        length: secs(length, "LENGTH")?,
    })
}

/// A topology file, or the name of a shipped one.
pub fn load_topology(arg: &str) -> Result<Topology> {
    let path = Path::new(arg);
    if path.exists() {
        return Topology::load(path).map_err(Into::into);
    }
    let name = arg.strip_suffix(".toml").unwrap_or(arg);
    let name = name.rsplit('/').next().unwrap_or(name);
    Topology::builtin(name).with_context(|| {
        format!("no topology file {arg:?} and no shipped topology of that name (demo, 3dc-48, 3dc-48-10m, 5dc-200, ci, 10dc-1000, 10dc-10000)")
    })
}

/// `64MiB`, `100MB`, `1GiB`, `12345`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("size {s:?}: not a number"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        u => bail!("size {s:?}: unknown unit {u:?} (B, KB, KiB, MB, MiB, GB, GiB)"),
    };
    let v = n * mult;
    if !(1024.0..=64e9).contains(&v) {
        bail!("size {s:?}: must be between 1 KiB and 64 GB");
    }
    Ok(v as u64)
}

/// A work directory: in memory when /dev/shm is there (simulated hosts' disks
/// must not be the bottleneck, and every chunk is fsynced).
pub fn work_dir(given: Option<&Path>) -> Result<(PathBuf, Option<tempfile::TempDir>)> {
    if let Some(d) = given {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        return Ok((d.to_path_buf(), None));
    }
    let shm = Path::new("/dev/shm");
    let tmp = if shm.is_dir() {
        tempfile::Builder::new()
            .prefix("shoal-netsim-")
            .tempdir_in(shm)
            .or_else(|_| tempfile::Builder::new().prefix("shoal-netsim-").tempdir())
    } else {
        tempfile::Builder::new().prefix("shoal-netsim-").tempdir()
    }
    .context("creating a work directory")?;
    Ok((tmp.path().to_path_buf(), Some(tmp)))
}

/// A progress bar of hosts verified, on a terminal only.
pub struct Progress {
    bar: Mutex<Option<ProgressBar>>,
    quiet: bool,
}

impl Progress {
    pub fn new(json: bool) -> Self {
        Progress {
            bar: Mutex::new(None),
            quiet: json || !std::io::stderr().is_terminal(),
        }
    }

    pub fn on(&self, e: Event) {
        let mut bar = self.bar.lock().expect("bar lock");
        match e {
            Event::Preparing => {
                tracing::info!("preparing certificates, release trees and bundles");
            }
            Event::Prepared {
                plain_bytes,
                bundle_bytes,
            } => tracing::info!(plain_bytes, bundle_bytes, "release packed"),
            Event::Started {
                strategy,
                phase,
                hosts,
            } => {
                let b = if self.quiet {
                    ProgressBar::with_draw_target(Some(hosts as u64), ProgressDrawTarget::hidden())
                } else {
                    let b = ProgressBar::new(hosts as u64);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{msg:>20} [{bar:30}] {pos}/{len} hosts verified, {elapsed}",
                        )
                        .expect("valid template")
                        .progress_chars("=> "),
                    );
                    b
                };
                b.set_message(format!("{strategy} {phase}"));
                *bar = Some(b);
            }
            Event::Progress { verified, .. } => {
                if let Some(b) = bar.as_ref() {
                    b.set_position(verified as u64);
                }
            }
            Event::Finished {
                strategy,
                phase,
                verified,
                hosts,
                elapsed,
            } => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                tracing::info!(
                    strategy,
                    phase,
                    verified,
                    hosts,
                    seconds = elapsed.as_secs_f64(),
                    "phase finished"
                );
            }
        }
    }
}

pub fn run(args: BenchArgs, json: bool) -> Result<std::process::ExitCode> {
    let topology = load_topology(&args.topology)?;
    let report = if args.model == "flow" {
        flow(&args, topology, json)?
    } else {
        packet(&args, topology, json)?
    };
    if let Some(path) = &args.chart {
        let svg = shoal_netsim::chart::hosts_over_time_svg(&report)?;
        std::fs::write(path, svg).with_context(|| format!("writing {}", path.display()))?;
    }
    if json {
        crate::out::print(format_args!("{}\n", report.to_json()))?;
    } else {
        crate::out::print(report.render_table())?;
        if let Some(path) = &args.chart {
            crate::out::print(format_args!("chart: {}\n", path.display()))?;
        }
    }
    let all = report
        .strategies
        .iter()
        .all(|s| s.hosts_verified == s.hosts_total);
    Ok(if all {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

/// The flow-level model: virtual time, no sockets, no files.
fn flow(args: &BenchArgs, topology: Topology, json: bool) -> Result<Report> {
    if args.tree.is_some() || args.delta.is_some() || args.cut.is_some() {
        bail!("--model flow takes --size only (no --tree, --delta or --cut)");
    }
    let size = args.size.as_deref().map_or(Ok(64 << 20), parse_size)?;
    let piece = args.piece.as_deref().map(parse_size).transpose()?;
    let manifest = match args.manifest.as_deref() {
        Some("0") => Some(0),
        m => m.map(parse_size).transpose()?,
    };
    let strategies = Strategy::parse_list(&args.strategy).map_err(anyhow::Error::msg)?;
    // Before anything is run or written: the run may start over from here.
    crate::huge_pages::restart_with_huge_pages();
    let hosts = topology.targets().len() as u64;
    let scenario = shoal_netsim::flow::FlowScenario {
        topology,
        bundle_bytes: size,
        piece,
        manifest,
        strategies,
        time_limit: Duration::from_secs(args.time_limit.max(1)),
        seed: args.seed,
    };
    let quiet = json || !std::io::stderr().is_terminal();
    let bar = if quiet {
        ProgressBar::with_draw_target(Some(hosts), ProgressDrawTarget::hidden())
    } else {
        let b = ProgressBar::new(hosts);
        b.set_style(
            ProgressStyle::with_template("{msg:>28} [{bar:30}] {pos}/{len} hosts, {elapsed}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        b
    };
    let started = std::time::Instant::now();
    let report = shoal_netsim::flow::run(&scenario, &|k, t, done| {
        bar.set_message(format!("{} at {t:.0} s simulated", k.name()));
        bar.set_position(done as u64);
    });
    bar.finish_and_clear();
    tracing::info!(
        seconds = started.elapsed().as_secs_f64(),
        "flow model finished"
    );
    Ok(report)
}

/// The packet-level model: real QUIC over the simulated network.
fn packet(args: &BenchArgs, topology: Topology, json: bool) -> Result<Report> {
    let source = match (&args.size, &args.tree) {
        (Some(_), Some(_)) => bail!("give --size or --tree, not both"),
        (None, Some(t)) => Source::Tree(t.clone()),
        (Some(s), None) => Source::Size(parse_size(s)?),
        (None, None) => Source::Size(64 << 20),
    };
    let strategies = Strategy::parse_list(&args.strategy).map_err(anyhow::Error::msg)?;
    let cut = args
        .cut
        .as_deref()
        .map(|c| parse_cut(c, &topology))
        .transpose()?;
    let (work, _guard) = work_dir(args.workdir.as_deref())?;
    let scenario = Scenario {
        topology,
        source,
        delta: args.delta,
        strategies,
        time_limit: Duration::from_secs(args.time_limit.max(1)),
        work,
        seed: args.seed,
        audit: false,
        rollback: true,
        keep: args.keep,
        cut,
    };
    simulate(&scenario, json)
}

/// Runs a scenario on its own thread (each strategy builds its own runtime)
/// and summarises it.
pub fn simulate(scenario: &Scenario, json: bool) -> Result<Report> {
    let progress = Progress::new(json);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| shoal_netsim::run::run(scenario, &|e| progress.on(e)))
            .join()
            .map_err(|_| anyhow::anyhow!("the simulation thread panicked"))
    })??;
    Ok(shoal_netsim::summary::report(scenario, &outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("100MB").unwrap(), 100_000_000);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("1").is_err());
        assert!(parse_size("-5MB").is_err());
    }

    #[test]
    fn topologies_by_name_or_path() {
        assert_eq!(load_topology("demo").unwrap().targets().len(), 12);
        assert_eq!(
            load_topology("netsim/topologies/3dc-48.toml")
                .unwrap()
                .targets()
                .len(),
            48
        );
        assert!(load_topology("nowhere").is_err());
    }
}
