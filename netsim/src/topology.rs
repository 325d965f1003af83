//! Topologies: datacenters, their hosts and links, read from TOML
//! (`netsim/topologies/*.toml`).
//!
//! Bandwidths are given in Mbit/s (as operators quote them) and stored in bytes
//! per second; latencies are one-way, in milliseconds. Each host gets a fixed
//! simulated address, so a topology always yields the same fleet.

use serde::Deserialize;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::Path;
use std::time::Duration;

/// The port every simulated host listens on.
pub const PORT: u16 = 4433;

#[derive(Debug, thiserror::Error)]
pub enum TopologyError {
    #[error("{path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("{path}: {message}")]
    Parse { path: String, message: String },
    #[error("topology {name:?}: {message}")]
    Invalid { name: String, message: String },
}

/// The file as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologyFile {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub network: NetworkFile,
    pub seed: SeedFile,
    pub dc: Vec<DcFile>,
    /// One-way latency overrides between pairs of datacenters.
    #[serde(default)]
    pub path: Vec<PathFile>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    /// One-way latency between two hosts of one datacenter.
    pub intra_dc_ms: f64,
    /// One-way latency between datacenters (unless a `[[path]]` says otherwise).
    pub inter_dc_ms: f64,
    /// Each packet's latency varies uniformly by up to this much (order is kept).
    #[serde(default)]
    pub jitter_ms: f64,
    /// Probability that a packet is lost inside a datacenter / between two.
    #[serde(default)]
    pub loss_intra: f64,
    #[serde(default)]
    pub loss_inter: f64,
    /// Queue depth of host links and of WAN links, as time at the link's rate;
    /// a packet that would wait longer is dropped.
    #[serde(default = "default_host_queue")]
    pub host_queue_ms: f64,
    #[serde(default = "default_wan_queue")]
    pub wan_queue_ms: f64,
    /// Largest UDP payload the network carries.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
}

fn default_host_queue() -> f64 {
    20.0
}
fn default_wan_queue() -> f64 {
    50.0
}
fn default_mtu() -> u16 {
    1452
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedFile {
    pub dc: String,
    pub upload_mbit: f64,
    pub download_mbit: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DcFile {
    pub name: String,
    /// Number of target hosts (the seed is extra).
    pub hosts: usize,
    pub upload_mbit: f64,
    pub download_mbit: f64,
    pub wan_in_mbit: f64,
    pub wan_out_mbit: f64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PathFile {
    pub a: String,
    pub b: String,
    pub one_way_ms: f64,
}

/// A checked topology with every host laid out.
#[derive(Clone, Debug)]
pub struct Topology {
    pub name: String,
    pub description: String,
    pub dcs: Vec<Dc>,
    /// Index 0 is the seed; targets follow, datacenter by datacenter.
    pub hosts: Vec<Host>,
    pub intra_dc: Duration,
    pub jitter: Duration,
    pub loss_intra: f64,
    pub loss_inter: f64,
    pub host_queue: Duration,
    pub wan_queue: Duration,
    pub mtu: u16,
    /// One-way latency between datacenters `a` and `b`: `inter[a][b]`.
    pub inter: Vec<Vec<Duration>>,
}

#[derive(Clone, Debug)]
pub struct Dc {
    pub name: String,
    /// Bytes per second.
    pub wan_in: u64,
    pub wan_out: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostRole {
    Seed,
    Target,
}

#[derive(Clone, Debug)]
pub struct Host {
    pub name: String,
    /// Index into `Topology::dcs`.
    pub dc: usize,
    pub role: HostRole,
    pub addr: SocketAddr,
    /// Bytes per second.
    pub upload: u64,
    pub download: u64,
}

/// Mbit/s to bytes per second.
pub fn mbit(v: f64) -> u64 {
    (v * 1e6 / 8.0).round() as u64
}

fn ms(v: f64) -> Duration {
    Duration::from_secs_f64(v / 1e3)
}

impl Topology {
    pub fn load(path: &Path) -> Result<Topology, TopologyError> {
        let text = std::fs::read_to_string(path).map_err(|cause| TopologyError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Self::parse(&text).map_err(|e| match e {
            TopologyError::Parse { message, .. } => TopologyError::Parse {
                path: path.display().to_string(),
                message,
            },
            e => e,
        })
    }

    /// Parses and checks a topology's TOML text.
    pub fn parse(text: &str) -> Result<Topology, TopologyError> {
        let file: TopologyFile = toml::from_str(text).map_err(|e| TopologyError::Parse {
            path: "<topology>".into(),
            message: e.to_string(),
        })?;
        Self::from_file(file)
    }

    /// One of the topologies shipped in `netsim/topologies/`, by name.
    pub fn builtin(name: &str) -> Option<Topology> {
        let text = match name {
            "demo" => include_str!("../topologies/demo.toml"),
            "3dc-48" => include_str!("../topologies/3dc-48.toml"),
            "3dc-48-10m" => include_str!("../topologies/3dc-48-10m.toml"),
            "5dc-200" => include_str!("../topologies/5dc-200.toml"),
            "ci" => include_str!("../topologies/ci.toml"),
            "10dc-1000" => include_str!("../topologies/10dc-1000.toml"),
            "10dc-10000" => include_str!("../topologies/10dc-10000.toml"),
            _ => return None,
        };
        Some(Self::parse(text).expect("shipped topologies parse"))
    }

    pub fn from_file(f: TopologyFile) -> Result<Topology, TopologyError> {
        let bad = |message: String| TopologyError::Invalid {
            name: f.name.clone(),
            message,
        };
        if f.dc.is_empty() {
            return Err(bad("no datacenters".into()));
        }
        if f.dc.len() > 250 {
            return Err(bad("more than 250 datacenters".into()));
        }
        let n = &f.network;
        for (what, v) in [
            ("intra_dc_ms", n.intra_dc_ms),
            ("inter_dc_ms", n.inter_dc_ms),
            ("jitter_ms", n.jitter_ms),
            ("host_queue_ms", n.host_queue_ms),
            ("wan_queue_ms", n.wan_queue_ms),
        ] {
            if !(v.is_finite() && (0.0..10_000.0).contains(&v)) {
                return Err(bad(format!("{what} = {v}: must be between 0 and 10000")));
            }
        }
        for (what, v) in [("loss_intra", n.loss_intra), ("loss_inter", n.loss_inter)] {
            if !(0.0..0.5).contains(&v) {
                return Err(bad(format!("{what} = {v}: must be in [0, 0.5)")));
            }
        }
        if !(1200..=65_000).contains(&n.mtu) {
            return Err(bad(format!("mtu = {}: QUIC needs 1200 to 65000", n.mtu)));
        }
        let rate = |what: &str, v: f64| {
            if v.is_finite() && v > 0.01 && v < 1e6 {
                Ok(mbit(v))
            } else {
                Err(bad(format!("{what} = {v} Mbit/s: out of range")))
            }
        };
        let mut dcs = Vec::new();
        for d in &f.dc {
            if d.name.is_empty() || dcs.iter().any(|x: &Dc| x.name == d.name) {
                return Err(bad(format!(
                    "datacenter name {:?} empty or repeated",
                    d.name
                )));
            }
            if d.hosts > 60_000 {
                return Err(bad(format!("{}: more than 60000 hosts", d.name)));
            }
            dcs.push(Dc {
                name: d.name.clone(),
                wan_in: rate("wan_in_mbit", d.wan_in_mbit)?,
                wan_out: rate("wan_out_mbit", d.wan_out_mbit)?,
            });
        }
        let dc_ix = |name: &str| {
            dcs.iter()
                .position(|d| d.name == name)
                .ok_or_else(|| bad(format!("unknown datacenter {name:?}")))
        };
        let seed_dc = dc_ix(&f.seed.dc)?;
        let mut hosts = vec![Host {
            name: "seed".into(),
            dc: seed_dc,
            role: HostRole::Seed,
            addr: addr(0, 0),
            upload: rate("seed upload_mbit", f.seed.upload_mbit)?,
            download: rate("seed download_mbit", f.seed.download_mbit)?,
        }];
        for (i, d) in f.dc.iter().enumerate() {
            for k in 0..d.hosts {
                hosts.push(Host {
                    name: format!("{}-{:02}", d.name, k + 1),
                    dc: i,
                    role: HostRole::Target,
                    addr: addr(i + 1, k),
                    upload: rate("upload_mbit", d.upload_mbit)?,
                    download: rate("download_mbit", d.download_mbit)?,
                });
            }
        }
        if hosts.len() < 2 {
            return Err(bad("no target hosts".into()));
        }
        let mut inter = vec![vec![ms(n.inter_dc_ms); dcs.len()]; dcs.len()];
        for (i, row) in inter.iter_mut().enumerate() {
            row[i] = ms(n.intra_dc_ms);
        }
        for p in &f.path {
            let (a, b) = (dc_ix(&p.a)?, dc_ix(&p.b)?);
            if !(p.one_way_ms.is_finite() && (0.0..10_000.0).contains(&p.one_way_ms)) {
                return Err(bad(format!("path {}-{}: bad one_way_ms", p.a, p.b)));
            }
            inter[a][b] = ms(p.one_way_ms);
            inter[b][a] = ms(p.one_way_ms);
        }
        Ok(Topology {
            name: f.name.clone(),
            description: f.description.clone(),
            dcs,
            hosts,
            intra_dc: ms(n.intra_dc_ms),
            jitter: ms(n.jitter_ms),
            loss_intra: n.loss_intra,
            loss_inter: n.loss_inter,
            host_queue: ms(n.host_queue_ms),
            wan_queue: ms(n.wan_queue_ms),
            mtu: n.mtu,
            inter,
        })
    }

    pub fn seed(&self) -> &Host {
        &self.hosts[0]
    }

    pub fn targets(&self) -> &[Host] {
        &self.hosts[1..]
    }

    /// One-way latency from datacenter `a` to `b` (same datacenter: intra-DC).
    pub fn latency(&self, a: usize, b: usize) -> Duration {
        self.inter[a][b]
    }

    /// The host at `addr`, if any.
    pub fn host_by_addr(&self, addr: SocketAddr) -> Option<usize> {
        self.hosts.iter().position(|h| h.addr == addr)
    }

    /// The highest round-trip time between two hosts (for sizing windows).
    pub fn max_rtt(&self) -> Duration {
        self.inter
            .iter()
            .flatten()
            .max()
            .copied()
            .unwrap_or_default()
            * 2
    }
}

/// `10.<dc+1>.<k/250>.<k%250+1>`; the seed is `10.0.0.1`.
fn addr(dc1: usize, k: usize) -> SocketAddr {
    let ip = Ipv4Addr::new(10, dc1 as u8, (k / 250) as u8, (k % 250 + 1) as u8);
    SocketAddr::V4(SocketAddrV4::new(ip, PORT))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_topologies_parse_with_distinct_addresses() {
        for name in ["demo", "3dc-48", "3dc-48-10m", "5dc-200", "ci"] {
            let t = Topology::builtin(name).unwrap();
            let mut addrs: Vec<_> = t.hosts.iter().map(|h| h.addr).collect();
            addrs.sort();
            addrs.dedup();
            assert_eq!(addrs.len(), t.hosts.len(), "{name}");
            assert_eq!(t.seed().role, HostRole::Seed);
        }
        assert_eq!(Topology::builtin("3dc-48").unwrap().targets().len(), 48);
        assert_eq!(Topology::builtin("3dc-48-10m").unwrap().targets().len(), 48);
        assert_eq!(Topology::builtin("5dc-200").unwrap().targets().len(), 200);
        assert_eq!(Topology::builtin("demo").unwrap().targets().len(), 12);
    }

    #[test]
    fn bad_topologies_are_refused_with_a_reason() {
        let good = include_str!("../topologies/demo.toml");
        let cases = [
            (good.replace("mtu = 1452", "mtu = 500"), "mtu"),
            (
                good.replace("loss_inter = 0.0001", "loss_inter = 0.9"),
                "loss_inter",
            ),
            (
                good.replacen("dc = \"dc1\"", "dc = \"nowhere\"", 1),
                "unknown datacenter",
            ),
            (
                good.replacen("wan_in_mbit = 200", "wan_in_mbit = -1", 1),
                "wan_in_mbit",
            ),
            (format!("{good}\nbogus = 1\n"), "bogus"),
        ];
        for (text, want) in cases {
            assert_ne!(text, good, "case {want} did not change the file");
            let err = Topology::parse(&text).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
    }
}
