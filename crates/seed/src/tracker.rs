//! The tracker: releases announced (signed manifests), hosts seen, and their
//! reported status. Its per-host state is a few strings and counters, never a
//! per-chunk map, so it holds large fleets.

use shoal_bundle::Hash;
use shoal_bundle::signing::{TrustedKey, open_signed};
use shoal_node::Control;
use shoal_proto::{Hello, HostReport, HostStatus, Msg, PeerInfo, ReleaseAd, Role};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Peers handed out per request.
const PEER_LIST: usize = 64;
/// Hosts not heard from for this long are left out of peer lists.
const STALE_S: u64 = 60;

struct HostEntry {
    dc: String,
    role: Role,
    addr: Option<String>,
    last_seen: Instant,
    status: HostStatus,
}

#[derive(Default)]
struct State {
    releases: Vec<(ReleaseAd, Arc<Vec<u8>>)>,
    hosts: BTreeMap<String, HostEntry>,
}

pub struct Tracker {
    trusted: Vec<TrustedKey>,
    state: Mutex<State>,
    policy: Mutex<PeerPolicy>,
}

/// Whom the tracker lists as peers. Only `Swarm` is for production; the others
/// let netsim run the usual alternatives over the same code and network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum PeerPolicy {
    /// Live hosts, the asker's datacenter first.
    #[default]
    Swarm,
    /// Live hosts in random order, datacenters ignored (a classic BitTorrent tracker).
    Random,
    /// Only the seeds: every host fetches everything from the deploy host.
    SeedOnly,
    /// These hosts (one per datacenter) get only the seeds; every other host
    /// gets only the proxy of its datacenter.
    Proxies(std::collections::BTreeSet<String>),
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Manifest(#[from] shoal_bundle::error::ManifestError),
    #[error("release {tag:?} was announced with id {existing}, not {new}")]
    TagConflict {
        tag: String,
        existing: Hash,
        new: Hash,
    },
}

impl Tracker {
    pub fn new(trusted: Vec<TrustedKey>) -> Self {
        Tracker {
            trusted,
            state: Mutex::new(State::default()),
            policy: Mutex::new(PeerPolicy::default()),
        }
    }

    pub fn set_policy(&self, policy: PeerPolicy) {
        *self.policy.lock().expect("policy lock") = policy;
    }

    /// Adds a release; its manifest must be signed by a trusted deploy key.
    pub fn announce(&self, signed: Vec<u8>) -> Result<ReleaseAd, TrackerError> {
        let v = open_signed(&signed, &self.trusted)?;
        let ad = ReleaseAd {
            tag: v.manifest.tag.clone(),
            id: v.id,
            chunks: v.manifest.chunks.len() as u32,
            bytes: v.manifest.stream_len(),
        };
        let mut st = self.state.lock().expect("tracker lock");
        if let Some((old, _)) = st.releases.iter().find(|(a, _)| a.tag == ad.tag) {
            if old.id == ad.id {
                return Ok(ad);
            }
            return Err(TrackerError::TagConflict {
                tag: ad.tag,
                existing: old.id,
                new: ad.id,
            });
        }
        tracing::info!(tag = %ad.tag, id = %ad.id, "release announced");
        st.releases.push((ad.clone(), Arc::new(signed)));
        Ok(ad)
    }

    pub fn releases(&self) -> Vec<ReleaseAd> {
        let st = self.state.lock().expect("tracker lock");
        st.releases.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Every host the tracker knows, for `shoal status`.
    pub fn fleet(&self) -> Vec<HostReport> {
        let st = self.state.lock().expect("tracker lock");
        st.hosts
            .iter()
            .map(|(host, h)| HostReport {
                host: host.clone(),
                dc: h.dc.clone(),
                role: h.role,
                addr: h.addr.clone(),
                last_seen_s: h.last_seen.elapsed().as_secs(),
                status: h.status.clone(),
            })
            .collect()
    }

    /// Live hosts that may hold `id`'s chunks, the asker's datacenter first.
    fn peers(&self, st: &State, from: &Hello, id: Hash) -> Msg {
        let policy = self.policy.lock().expect("policy lock").clone();
        let admit = |host: &String, h: &HostEntry| match &policy {
            PeerPolicy::Swarm | PeerPolicy::Random => true,
            PeerPolicy::SeedOnly => h.role == Role::Seed,
            PeerPolicy::Proxies(proxies) if proxies.contains(&from.host) => h.role == Role::Seed,
            PeerPolicy::Proxies(proxies) => proxies.contains(host) && h.dc == from.dc,
        };
        // A fresh random order for every request (RandomState is keyed randomly).
        let shuffle = std::hash::RandomState::new();
        let mut list: Vec<(u64, PeerInfo)> = st
            .hosts
            .iter()
            .filter(|(host, h)| {
                *host != &from.host
                    && h.role != Role::Client
                    && h.last_seen.elapsed().as_secs() < STALE_S
                    && h.addr.is_some()
                    && admit(host, h)
            })
            .map(|(host, h)| {
                let order = match policy {
                    PeerPolicy::Random => std::hash::BuildHasher::hash_one(&shuffle, host),
                    _ => u64::from(h.dc != from.dc),
                };
                (
                    order,
                    PeerInfo {
                        host: host.clone(),
                        dc: h.dc.clone(),
                        role: h.role,
                        addr: h.addr.clone().unwrap_or_default(),
                    },
                )
            })
            .collect();
        list.sort_by_key(|a| a.0);
        Msg::Peers {
            id,
            peers: list.into_iter().take(PEER_LIST).map(|(_, p)| p).collect(),
        }
    }

    fn touch(&self, st: &mut State, from: &Hello) {
        let e = st
            .hosts
            .entry(from.host.clone())
            .or_insert_with(|| HostEntry {
                dc: from.dc.clone(),
                role: from.role,
                addr: None,
                last_seen: Instant::now(),
                status: HostStatus::default(),
            });
        e.dc = from.dc.clone();
        e.role = from.role;
        e.addr = from.listen.clone();
        e.last_seen = Instant::now();
    }
}

impl Control for Tracker {
    fn hello(&self, from: &Hello) {
        if from.role != Role::Client {
            let mut st = self.state.lock().expect("tracker lock");
            self.touch(&mut st, from);
        }
    }

    fn handle(&self, from: &Hello, msg: Msg) -> Msg {
        match msg {
            Msg::Announce { signed } => match self.announce(signed) {
                Ok(_) => Msg::Ok,
                Err(e) => Msg::Error {
                    message: e.to_string(),
                },
            },
            other => {
                let mut st = self.state.lock().expect("tracker lock");
                match other {
                    Msg::Status(status) => {
                        self.touch(&mut st, from);
                        if let Some(h) = st.hosts.get_mut(&from.host) {
                            h.status = status;
                        }
                        Msg::Releases {
                            releases: st.releases.iter().map(|(a, _)| a.clone()).collect(),
                        }
                    }
                    Msg::GetManifest { id } => match st.releases.iter().find(|(a, _)| a.id == id) {
                        Some((_, signed)) => {
                            tracing::debug!(host = %from.host, "manifest sent by the tracker");
                            Msg::Manifest {
                                signed: signed.as_ref().clone(),
                            }
                        }
                        None => Msg::Error {
                            message: format!("no release {id}"),
                        },
                    },
                    Msg::GetPeers { id } => self.peers(&st, from, id),
                    Msg::GetFleet => {
                        drop(st);
                        Msg::Fleet {
                            hosts: self.fleet(),
                        }
                    }
                    m => Msg::Error {
                        message: format!("{} is not a tracker request", m.name()),
                    },
                }
            }
        }
    }
}
