//! What an agent's swarm takes from a tracker peer list: who else in this
//! datacenter may bring chunks across its boundary, and whether this host is
//! one of them. Shared with netsim's
//! flow model, which hands the tracker's lists to simulated swarms.

use shoal_proto::{MAX_PEERS, PeerInfo, Role};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SwarmView {
    /// The other agents of this datacenter that chunks are assigned to.
    pub members: Vec<String>,
    /// This host brings chunks into its datacenter.
    pub crosser: bool,
    /// This host is a crosser and its list was not cut at [`MAX_PEERS`], so
    /// it names every crosser of every other datacenter, and so does the
    /// list every crosser of this one gets from the same roster (their
    /// lists differ only in the sample of this datacenter, taken last):
    /// whichever host of this datacenter brings a chunk in is connected to
    /// every crosser across and tells them itself. (A host that is no
    /// crosser gets a short list of its own datacenter: it says nothing.)
    pub meshed: bool,
}

/// `crossers` as the tracker sent them; empty means every listed agent of
/// this datacenter (and this host) may cross.
pub fn swarm_view(peers: &[PeerInfo], crossers: &[String], host: &str, dc: &str) -> SwarmView {
    let members = if crossers.is_empty() {
        peers
            .iter()
            .filter(|p| p.dc == dc && p.role == Role::Agent && p.host != host)
            .map(|p| p.host.clone())
            .collect()
    } else {
        crossers.iter().filter(|h| *h != host).cloned().collect()
    };
    let crosser = crossers.is_empty() || crossers.iter().any(|h| h == host);
    SwarmView {
        members,
        crosser,
        meshed: crosser && peers.len() < MAX_PEERS,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(host: &str, dc: &str, role: Role) -> PeerInfo {
        PeerInfo {
            host: host.into(),
            dc: dc.into(),
            role,
            addr: String::new(),
        }
    }

    #[test]
    fn crossers_decide_members_and_an_empty_list_means_everyone() {
        let peers = vec![
            peer("seed", "a", Role::Seed),
            peer("a1", "a", Role::Agent),
            peer("a2", "a", Role::Agent),
            peer("b1", "b", Role::Agent),
        ];
        let all = swarm_view(&peers, &[], "a0", "a");
        assert_eq!(all.members, vec!["a1", "a2"]);
        assert!(all.crosser);
        let some = swarm_view(&peers, &["a1".into(), "a0".into()], "a0", "a");
        assert_eq!(some.members, vec!["a1"]);
        assert!(some.crosser);
        let not = swarm_view(&peers[1..], &["a1".into()], "a2", "a");
        assert_eq!(not.members, vec!["a1"]);
        assert!(!not.crosser);
        assert!(all.meshed && some.meshed);
        // A host that is no crosser has a short list of its own datacenter.
        assert!(!not.meshed);
        let full: Vec<PeerInfo> = (0..MAX_PEERS)
            .map(|i| peer(&format!("b{i}"), "b", Role::Agent))
            .collect();
        assert!(!swarm_view(&full, &[], "a0", "a").meshed);
        assert!(swarm_view(&full[1..], &[], "a0", "a").meshed);
    }
}
