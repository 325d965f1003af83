//! The distribution strategies compared on the same simulated network. Each is
//! the real seed, tracker and agent code; they differ only in whom the tracker
//! lists as peers and whether agents prefer their own datacenter.

use crate::topology::{HostRole, Topology};
use shoal_seed::tracker::PeerPolicy;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// shoal as shipped: locality-aware swarm.
    Shoal,
    /// Every host fetches everything from the deploy host (an rsync-style deploy).
    Central,
    /// The deploy host feeds one proxy per datacenter, which feeds its hosts.
    Fanout,
    /// The same swarm with locality off and peers in random order (a classic
    /// BitTorrent client and tracker).
    Bittorrent,
}

impl Strategy {
    pub const ALL: [Strategy; 4] = [
        Strategy::Shoal,
        Strategy::Central,
        Strategy::Fanout,
        Strategy::Bittorrent,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Shoal => "shoal",
            Strategy::Central => "central",
            Strategy::Fanout => "fanout",
            Strategy::Bittorrent => "bittorrent",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// Parses a comma-separated list (`all` for every strategy).
    pub fn parse_list(s: &str) -> Result<Vec<Strategy>, String> {
        if s == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k = Strategy::parse(part).ok_or_else(|| {
                format!("unknown strategy {part:?} (shoal, central, fanout, bittorrent, all)")
            })?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
        if out.is_empty() {
            return Err("no strategy given".into());
        }
        Ok(out)
    }

    /// Whether agents prefer their own datacenter.
    pub fn locality(self) -> bool {
        self == Strategy::Shoal
    }

    /// Whom the tracker lists.
    pub fn policy(self, topo: &Topology) -> PeerPolicy {
        match self {
            Strategy::Shoal => PeerPolicy::Swarm,
            Strategy::Bittorrent => PeerPolicy::Random,
            Strategy::Central => PeerPolicy::SeedOnly,
            Strategy::Fanout => PeerPolicy::Proxies(proxies(topo).into_iter().collect()),
        }
    }
}

/// The first target host of each datacenter.
pub fn proxies(topo: &Topology) -> Vec<String> {
    (0..topo.dcs.len())
        .filter_map(|dc| {
            topo.hosts
                .iter()
                .find(|h| h.dc == dc && h.role == HostRole::Target)
                .map(|h| h.name.clone())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_fanout_has_one_proxy_per_datacenter() {
        assert_eq!(Strategy::parse_list("all").unwrap().len(), 4);
        assert_eq!(
            Strategy::parse_list("shoal, central,shoal").unwrap(),
            vec![Strategy::Shoal, Strategy::Central]
        );
        assert!(Strategy::parse_list("rsync").unwrap_err().contains("rsync"));
        let topo = Topology::builtin("3dc-48").unwrap();
        assert_eq!(proxies(&topo), vec!["dc1-01", "dc2-01", "dc3-01"]);
    }
}
