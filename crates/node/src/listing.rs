//! What an agent's swarm takes from a tracker peer list: who else in this
//! datacenter may bring chunks across its boundary, and whether this host is
//! one of them. Shared with netsim's
//! flow model, which hands the tracker's lists to simulated swarms.

use shoal_proto::{MAX_PEERS, PeerInfo, Role};
use std::collections::BTreeMap;

/// Crossers per group when a meshed fleet's crossers are grouped (see
/// [`Groups`]). Four: on packet `3dc-48` groups of four took the bytes into
/// each remote datacenter from 1.14 to 1.09–1.10 F for about 1% more time;
/// groups of three or two crossed a little less but took 2–3% longer
/// (docs/netsim.md).
pub const GROUP_SIZE: usize = 4;

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
    /// In a meshed fleet, how its crossers split into groups; None when not
    /// meshed or a datacenter has too few crossers to form two groups.
    pub groups: Option<Groups>,
}

/// A meshed fleet's crossers in groups: each datacenter's crossers, dealt
/// round an order of their names into the same number of groups
/// of about [`GROUP_SIZE`], and every chunk belongs to one group
/// (`shoal_swarm::chunk_group`). A chunk is brought into each datacenter by
/// a crosser of its group there, so a crosser connects across only to the
/// crossers of its own group: on 3 datacenters of 16 hosts, 8 connections
/// across each instead of 32, and each connection's handshake, keep-alives
/// and acknowledgements cross the boundary that much less often.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Groups {
    /// How many groups each datacenter's crossers form.
    pub count: u32,
    /// This host's group.
    pub mine: u32,
    /// The group of every crosser: this datacenter's and the others'.
    pub of: BTreeMap<String, u32>,
}

impl SwarmView {
    /// Hands this view to a swarm: the agent's session and netsim's flow
    /// model both do.
    pub fn apply(&self, swarm: &mut shoal_swarm::Swarm) {
        swarm.set_members(self.members.iter().map(String::as_str));
        swarm.set_crosser(self.crosser);
        swarm.set_meshed(self.meshed);
        swarm.set_groups(self.groups.as_ref().map(|g| {
            let of = g.of.iter().map(|(h, &x)| (h.as_str(), x));
            (g.count, of)
        }));
    }

    /// Whether this host connects to `p` of the list: any host of its own
    /// datacenter or a seed, and across only the crossers of its group.
    pub fn dials(&self, p: &PeerInfo, dc: &str) -> bool {
        match &self.groups {
            Some(g) if p.dc != dc && p.role == Role::Agent => g.of.get(&p.host) == Some(&g.mine),
            _ => true,
        }
    }
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
    let meshed = crosser && peers.len() < MAX_PEERS;
    // Only the tracker's crossers are grouped: with none named (locality
    // off) there is nothing to group.
    let groups = (meshed && !crossers.is_empty())
        .then(|| groups(peers, crossers, host, dc))
        .flatten();
    SwarmView {
        members,
        crosser,
        meshed,
        groups,
    }
}

/// Every crosser's group, from a meshed list: it names every crosser of the
/// other datacenters, and `crossers` those of this one, so every crosser of
/// the fleet works out the same groups.
fn groups(peers: &[PeerInfo], crossers: &[String], host: &str, dc: &str) -> Option<Groups> {
    let mut by_dc: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    by_dc.insert(dc, crossers.iter().map(String::as_str).collect());
    for p in peers.iter().filter(|p| p.role == Role::Agent && p.dc != dc) {
        by_dc.entry(p.dc.as_str()).or_default().push(&p.host);
    }
    let fewest = by_dc.values().map(Vec::len).min()?;
    let count = fewest / GROUP_SIZE;
    if by_dc.len() < 2 || count < 2 {
        return None;
    }
    let mut of = BTreeMap::new();
    for hosts in by_dc.values_mut() {
        // An order of the names alone, not of the release: a fleet keeps its
        // groups, and so its connections across, from one release to the
        // next. (Ranked by release, every release dealt new groups, each
        // crosser dialled its new group on top of the connections it held:
        // 11 KB more per host on a 1% delta, and in time a full mesh.)
        // Dealt round that order, not cut into runs of it: groups of
        // neighbours in the order the manifest tree reaches hosts left a
        // late group's chunks waiting in every datacenter at once.
        hosts.sort_by_key(|h| shoal_swarm::host_key(h));
        for (i, h) in hosts.iter().enumerate() {
            of.insert(h.to_string(), (i % count) as u32);
        }
    }
    Some(Groups {
        count: count as u32,
        mine: *of.get(host)?,
        of,
    })
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
