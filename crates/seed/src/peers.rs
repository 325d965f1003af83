//! Whom the tracker lists as a host's peers for a release. The one place a peer
//! list is chosen: the tracker answers `GetPeers` with it, and netsim's flow
//! model hands the same lists to thousands of simulated hosts.
//!
//! A list holds at most [`PEER_LIST`] hosts, so its cost does not grow with the
//! fleet. With the `Swarm` policy each datacenter has, per release, up to
//! [`CROSSERS`] *crossers*: its agents ranked highest by rendezvous hashing on
//! the release id, the same for every asker. Only crossers get peers in other
//! datacenters (and the seed, unless it is in the asker's datacenter), so the
//! boundary is crossed by a few hosts that every host of the datacenter
//! agrees on, however many hosts it has; the others learn the crossers' names,
//! list a few of them and fill their list with a stable sample of their own
//! datacenter. In a datacenter of up to
//! `CROSSERS` agents every agent is a crosser, and a fleet of up to
//! `PEER_LIST` hosts gets everyone listed.

use shoal_proto::Role;
use shoal_swarm::{host_key, mix, release_rank as rank};
use std::collections::{BTreeMap, BTreeSet};

/// Peers handed out per request (a list shorter than this holds every
/// crosser of the other datacenters: agents rely on that, see
/// `shoal_node::listing::SwarmView::meshed`).
pub const PEER_LIST: usize = shoal_proto::MAX_PEERS;
/// Hosts per datacenter that bring a release's chunks into it. Enough to fill
/// a datacenter's WAN link with host-sized downlinks, few enough that each
/// fits in every local host's list next to a sample of the others.
pub const CROSSERS: usize = 16;
/// Of a crosser's list, at least this many entries are left for its own
/// datacenter's other hosts (when it has that many), which it feeds.
const LOCAL_RESERVE: usize = PEER_LIST / 4;
/// Crossers in the list of a host that is none: it learns them all by name
/// (`Listing::crossers`) but connects to a few, so a crosser is not every
/// host's peer (its `Have`s would go to the whole datacenter).
const CROSSERS_LISTED: usize = 4;

/// Whom the tracker lists as peers. Only `Swarm` is for production; the others
/// let netsim run the usual alternatives over the same code and network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Crossers and a sample of the asker's datacenter; crossers also get
    /// crossers of other datacenters.
    #[default]
    Swarm,
    /// Live hosts in random order, datacenters ignored (a classic BitTorrent tracker).
    Random,
    /// Only the seeds: every host fetches everything from the deploy host.
    SeedOnly,
    /// These hosts (one per datacenter) get only the seeds; every other host
    /// gets only the proxy of its datacenter.
    Proxies(BTreeSet<String>),
}

/// One host that may be listed.
#[derive(Clone, Debug)]
pub struct Candidate {
    pub host: String,
    pub dc: String,
    pub role: Role,
}

/// A release's live hosts, grouped once so that each list costs about
/// `PEER_LIST` times the size of one datacenter, not a sort of the fleet.
pub struct Roster {
    hosts: Vec<Candidate>,
    keys: Vec<u64>,
    /// Agents of each datacenter, highest rank for the release first.
    agents: BTreeMap<String, Vec<usize>>,
    seeds: Vec<usize>,
    by_name: BTreeMap<String, usize>,
}

/// A host's list: indices into the roster, and its datacenter's crossers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Listing {
    pub peers: Vec<usize>,
    pub crossers: Vec<String>,
}

impl Roster {
    /// `hosts`: the live hosts that may be listed (clients excluded by the caller).
    pub fn new(hosts: Vec<Candidate>, release: &impl std::fmt::Display) -> Roster {
        let keys: Vec<u64> = hosts.iter().map(|h| host_key(&h.host)).collect();
        let mut agents: BTreeMap<String, Vec<(u64, usize)>> = BTreeMap::new();
        let mut seeds = Vec::new();
        let mut by_name = BTreeMap::new();
        for (i, h) in hosts.iter().enumerate() {
            by_name.insert(h.host.clone(), i);
            match h.role {
                Role::Seed => seeds.push(i),
                Role::Agent => agents
                    .entry(h.dc.clone())
                    .or_default()
                    .push((rank(&h.host, release), i)),
                Role::Client => {}
            }
        }
        let agents = agents
            .into_iter()
            .map(|(dc, mut v)| {
                v.sort_unstable_by(|a, b| b.cmp(a));
                (dc, v.into_iter().map(|(_, i)| i).collect())
            })
            .collect();
        Roster {
            hosts,
            keys,
            agents,
            seeds,
            by_name,
        }
    }

    pub fn host(&self, i: usize) -> &Candidate {
        &self.hosts[i]
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The crossers of a datacenter, highest rank first.
    pub fn crossers(&self, dc: &str) -> &[usize] {
        self.agents
            .get(dc)
            .map_or(&[][..], |v| &v[..v.len().min(CROSSERS)])
    }

    /// The list for `asker` (a host of datacenter `dc`, listed in the roster
    /// or not). `shuffle` seeds the `Random` policy's order; the other
    /// policies give the same list for the same roster.
    pub fn list(&self, asker: &str, dc: &str, policy: &PeerPolicy, shuffle: u64) -> Listing {
        let me = self.by_name.get(asker).copied();
        let others = |v: &mut dyn Iterator<Item = usize>| -> Vec<usize> {
            v.filter(|&i| Some(i) != me).collect()
        };
        match policy {
            PeerPolicy::Swarm => self.swarm_list(me, asker, dc),
            PeerPolicy::Random => {
                let mut all: Vec<(u64, usize)> = (0..self.hosts.len())
                    .filter(|&i| Some(i) != me)
                    .map(|i| (mix(self.keys[i] ^ shuffle), i))
                    .collect();
                all.sort_unstable();
                Listing {
                    peers: all.into_iter().take(PEER_LIST).map(|(_, i)| i).collect(),
                    crossers: Vec::new(),
                }
            }
            PeerPolicy::SeedOnly => Listing {
                peers: others(&mut self.seeds.iter().copied()),
                crossers: Vec::new(),
            },
            PeerPolicy::Proxies(proxies) if proxies.contains(asker) => Listing {
                peers: others(&mut self.seeds.iter().copied()),
                crossers: Vec::new(),
            },
            PeerPolicy::Proxies(proxies) => Listing {
                peers: others(
                    &mut self
                        .agents
                        .get(dc)
                        .into_iter()
                        .flatten()
                        .copied()
                        .filter(|&i| proxies.contains(&self.hosts[i].host)),
                ),
                crossers: Vec::new(),
            },
        }
    }

    fn swarm_list(&self, me: Option<usize>, asker: &str, dc: &str) -> Listing {
        let crossers = self.crossers(dc);
        let i_cross = crossers.is_empty() || me.is_some_and(|m| crossers.contains(&m));
        let mut peers: Vec<usize> = Vec::with_capacity(PEER_LIST);
        let push = |peers: &mut Vec<usize>, i: usize| {
            if Some(i) != me && peers.len() < PEER_LIST && !peers.contains(&i) {
                peers.push(i);
            }
        };
        // A stable sample, different for each asker: repeated lists add no
        // new connections, and the datacenter's hosts form a well-mixed graph.
        let salt = host_key(asker);
        let sample = |from: &mut dyn Iterator<Item = usize>| -> Vec<usize> {
            let mut v: Vec<(u64, usize)> = from.map(|i| (mix(self.keys[i] ^ salt), i)).collect();
            v.sort_unstable();
            v.into_iter().map(|(_, i)| i).collect()
        };
        // Only crossers take chunks from the seed or from other datacenters.
        if i_cross {
            for &s in &self.seeds {
                push(&mut peers, s);
            }
            for &c in crossers {
                push(&mut peers, c);
            }
        } else {
            for c in sample(&mut crossers.iter().copied())
                .into_iter()
                .take(CROSSERS_LISTED)
            {
                push(&mut peers, c);
            }
        }
        let locals: &[usize] = self.agents.get(dc).map_or(&[], |v| &v[crossers.len()..]);
        if i_cross {
            let reserve = locals.len().min(LOCAL_RESERVE);
            let room = PEER_LIST.saturating_sub(peers.len() + reserve);
            let remote = sample(
                &mut self
                    .agents
                    .iter()
                    .filter(|(d, _)| d.as_str() != dc)
                    .flat_map(|(d, _)| self.crossers(d).iter().copied()),
            );
            for i in remote.into_iter().take(room) {
                push(&mut peers, i);
            }
        }
        for i in sample(&mut locals.iter().copied()) {
            if peers.len() >= PEER_LIST {
                break;
            }
            push(&mut peers, i);
        }
        Listing {
            peers,
            crossers: crossers
                .iter()
                .map(|&i| self.hosts[i].host.clone())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(dcs: usize, per_dc: usize) -> Vec<Candidate> {
        mixed(&vec![per_dc; dcs], 1)
    }

    #[test]
    fn a_small_fleet_lists_everyone_and_every_agent_crosses() {
        let r = Roster::new(fleet(3, 16), &"rel");
        for i in 1..r.len() {
            let h = r.host(i).clone();
            let l = r.list(&h.host, &h.dc, &PeerPolicy::Swarm, 0);
            assert_eq!(l.peers.len(), 48, "{}", h.host);
            assert!(!l.peers.contains(&i));
            assert_eq!(l.crossers.len(), 16);
            assert!(l.crossers.contains(&h.host));
        }
    }

    /// A fleet of datacenters of the given sizes, with `seeds` seeds in dc0.
    fn mixed(sizes: &[usize], seeds: usize) -> Vec<Candidate> {
        let mut v: Vec<Candidate> = (0..seeds)
            .map(|s| Candidate {
                host: format!("seed{s}"),
                dc: "dc0".into(),
                role: Role::Seed,
            })
            .collect();
        for (d, &n) in sizes.iter().enumerate() {
            for h in 0..n {
                v.push(Candidate {
                    host: format!("dc{d}-{h:04}"),
                    dc: format!("dc{d}"),
                    role: Role::Agent,
                });
            }
        }
        v
    }

    /// What `SwarmView::meshed` relies on: a crosser's list shorter than
    /// `PEER_LIST` names every crosser of every other datacenter, and then
    /// so does the list of every crosser of its datacenter.
    #[test]
    fn a_short_list_names_every_crosser_across_and_its_datacenter_agrees() {
        let fleets: [(&[usize], usize); 10] = [
            (&[16, 16, 16], 1),
            (&[40, 40], 1),
            (&[20, 20, 20], 1),
            (&[12, 12, 12, 12], 1),
            (&[16, 16, 16, 16, 16], 1),
            (&[100; 10], 1),
            (&[1, 1], 1),
            (&[3, 200, 20], 2),
            (&[16, 2, 30], 2),
            (&[5, 5, 5, 5, 5, 5, 5, 5], 1),
        ];
        let mut meshed = Vec::new();
        for (sizes, seeds) in fleets {
            let r = Roster::new(mixed(sizes, seeds), &"rel");
            let mut short_by_dc: BTreeMap<String, BTreeSet<bool>> = BTreeMap::new();
            for i in seeds..r.len() {
                let h = r.host(i).clone();
                let l = r.list(&h.host, &h.dc, &PeerPolicy::Swarm, 0);
                if !l.crossers.contains(&h.host) {
                    continue;
                }
                let short = l.peers.len() < PEER_LIST;
                short_by_dc.entry(h.dc.clone()).or_default().insert(short);
                if short {
                    let dcs = (0..sizes.len()).map(|d| format!("dc{d}"));
                    for d in dcs.filter(|d| *d != h.dc) {
                        for &c in r.crossers(&d) {
                            assert!(l.peers.contains(&c), "{} misses {}", h.host, r.host(c).host);
                        }
                    }
                }
            }
            for (dc, v) in &short_by_dc {
                assert_eq!(v.len(), 1, "{sizes:?}: crossers of {dc} disagree");
            }
            meshed.push(short_by_dc.values().all(|v| v.contains(&true)));
        }
        // Every crosser's list is short up to 3 x 20 (and 4 x 12, 8 x 5);
        // the 64 crossers across no longer fit at 5 x 16, nor at 10 x 100.
        // With 200 hosts beside a datacenter, its crossers' lists are full.
        assert_eq!(
            meshed,
            [
                true, true, true, true, false, false, true, false, true, true
            ]
        );
    }

    /// Host `i`'s list as its agent reads it: the peers and its view.
    fn view_of(
        r: &Roster,
        i: usize,
    ) -> (
        Listing,
        Vec<shoal_proto::PeerInfo>,
        shoal_node::listing::SwarmView,
    ) {
        let h = r.host(i);
        let l = r.list(&h.host, &h.dc, &PeerPolicy::Swarm, 0);
        let infos: Vec<shoal_proto::PeerInfo> = l
            .peers
            .iter()
            .map(|&p| {
                let c = r.host(p);
                shoal_proto::PeerInfo {
                    host: c.host.clone(),
                    dc: c.dc.clone(),
                    role: c.role,
                    addr: String::new(),
                }
            })
            .collect();
        let view = shoal_node::listing::swarm_view(&infos, &l.crossers, &h.host, &h.dc);
        (l, infos, view)
    }

    /// A fleet keeps its groups from one release to the next, so its
    /// crossers keep their connections across: each release's new groups
    /// would be dialled on top of the last ones.
    #[test]
    fn a_fleet_keeps_its_groups_from_release_to_release() {
        let groups = |release: &str| {
            let r = Roster::new(mixed(&[16, 16, 16], 1), &release);
            (1..r.len())
                .map(|i| view_of(&r, i).2.groups.expect("grouped"))
                .collect::<Vec<_>>()
        };
        let first = groups("rel");
        assert_eq!(first.len(), 48);
        assert_eq!(first, groups("rel2"));
        assert_eq!(first, groups("another release"));
    }

    /// What crossers in groups rely on: every crosser of a meshed fleet
    /// works out the same groups from its own list, of even sizes in each
    /// datacenter, and dials across only its own group.
    #[test]
    fn every_crosser_of_a_meshed_fleet_agrees_on_the_groups() {
        use shoal_node::listing::GROUP_SIZE;
        let fleets: [(&[usize], usize, Option<usize>); 7] = [
            (&[16, 16, 16], 1, Some(16 / GROUP_SIZE)),
            (&[12, 12, 12, 12], 1, Some(12 / GROUP_SIZE)),
            (&[20, 9, 20], 2, Some(9 / GROUP_SIZE)),
            (&[40, 40], 1, Some(CROSSERS / GROUP_SIZE)),
            // A datacenter too small for two groups: none anywhere.
            (&[16, 2, 30], 2, None),
            // One datacenter: nothing to cross.
            (&[16], 1, None),
            // Not meshed: lists are full.
            (&[100; 10], 1, None),
        ];
        for (sizes, seeds, want) in fleets {
            let r = Roster::new(mixed(sizes, seeds), &"rel");
            let mut seen = BTreeSet::new();
            for i in seeds..r.len() {
                let h = r.host(i).clone();
                let (l, infos, view) = view_of(&r, i);
                if !l.crossers.contains(&h.host) {
                    assert_eq!(view.groups, None);
                    continue;
                }
                let Some(g) = &view.groups else {
                    assert_eq!(want, None, "{sizes:?}: {} has no groups", h.host);
                    continue;
                };
                assert_eq!(Some(g.count as usize), want, "{sizes:?}");
                assert_eq!(g.of.get(&h.host), Some(&g.mine));
                for p in &infos {
                    let across = p.dc != h.dc && p.role == Role::Agent;
                    let same = g.of.get(&p.host) == Some(&g.mine);
                    assert_eq!(view.dials(p, &h.dc), !across || same, "{p:?}");
                }
                seen.insert(g.of.clone());
            }
            assert!(seen.len() <= 1, "{sizes:?}: crossers disagree: {seen:#?}");
            let (Some(count), Some(of)) = (want, seen.first()) else {
                assert_eq!(want, None, "{sizes:?}: no crosser has groups");
                continue;
            };
            // Every crosser has a group, and each datacenter's groups differ
            // in size by one at most. Groups are dealt round the order of the
            // names: the first `count` in it are in different groups.
            for d in 0..sizes.len() {
                let mut per = vec![0usize; count];
                let mut names: Vec<&str> = r
                    .crossers(&format!("dc{d}"))
                    .iter()
                    .map(|&c| r.host(c).host.as_str())
                    .collect();
                for h in &names {
                    per[of[*h] as usize] += 1;
                }
                let (lo, hi) = (per.iter().min().unwrap(), per.iter().max().unwrap());
                assert!(hi - lo <= 1 && *lo >= 1, "{sizes:?} dc{d}: {per:?}");
                names.sort_by_key(|h| host_key(h));
                let first: BTreeSet<u32> = names[..count].iter().map(|h| of[*h]).collect();
                assert_eq!(first.len(), count, "{sizes:?} dc{d}: {names:?}");
            }
        }
    }

    #[test]
    fn a_large_datacenter_agrees_on_its_crossers_and_only_they_look_across() {
        let r = Roster::new(fleet(10, 1000), &"rel");
        let mut listed_in = vec![0usize; r.len()];
        let mut crossers_seen = BTreeSet::new();
        for i in 1..r.len() {
            let h = r.host(i).clone();
            let l = r.list(&h.host, &h.dc, &PeerPolicy::Swarm, 0);
            assert!(l.peers.len() <= PEER_LIST);
            assert_eq!(l.crossers.len(), CROSSERS);
            crossers_seen.insert((h.dc.clone(), l.crossers.clone()));
            let remote = l
                .peers
                .iter()
                .filter(|&&p| r.host(p).dc != h.dc && r.host(p).role == Role::Agent)
                .count();
            let crosses = l.crossers.contains(&h.host);
            if crosses {
                assert!(remote >= 16, "{}: {remote} remote peers", h.host);
            } else {
                assert_eq!(remote, 0, "{} is no crosser", h.host);
                assert!(!l.peers.contains(&0), "only crossers get the seed");
                // A few crossers of its datacenter are listed, the rest is local.
                let listed = l
                    .crossers
                    .iter()
                    .filter(|c| l.peers.iter().any(|&p| &r.host(p).host == *c));
                assert_eq!(listed.count(), CROSSERS_LISTED);
            }
            for p in l.peers {
                listed_in[p] += 1;
            }
        }
        // One crosser set per datacenter, whoever asks.
        assert_eq!(crossers_seen.len(), 10);
        // Non-crossers are listed by others too, so nobody is left out.
        assert!(listed_in[1..].iter().all(|&n| n > 0));
    }

    #[test]
    fn the_other_policies_list_as_before() {
        let r = Roster::new(fleet(2, 40), &"rel");
        let h = r.host(5).clone();
        let random = r.list(&h.host, &h.dc, &PeerPolicy::Random, 1);
        assert_eq!(random.peers.len(), PEER_LIST);
        assert_ne!(
            random.peers,
            r.list(&h.host, &h.dc, &PeerPolicy::Random, 2).peers
        );
        let seeds = r.list(&h.host, &h.dc, &PeerPolicy::SeedOnly, 0);
        assert_eq!(seeds.peers, vec![0]);
        let proxies: BTreeSet<String> = ["dc0-0000".to_string(), "dc1-0000".to_string()].into();
        let p = PeerPolicy::Proxies(proxies);
        assert_eq!(r.list("dc0-0000", "dc0", &p, 0).peers, vec![0]);
        let l = r.list(&h.host, &h.dc, &p, 0);
        assert_eq!(l.peers.len(), 1);
        assert_eq!(r.host(l.peers[0]).host, "dc0-0000");
    }
}
