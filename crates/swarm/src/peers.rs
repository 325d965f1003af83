//! One swarm's peers, in slots. The scheduler walks them for every batch of
//! events (which are idle, which hold a chunk back in the pool) and looks
//! one up for every chunk it considers, so they sit in one vector, read in
//! order, and the swarm names them by slot; the driver's ids are mapped to
//! slots once, as an event comes in. (In a hash map, ten thousand swarms'
//! peers cost the flow model a cache miss per peer visited.)

use crate::bitset::BitSet;
use crate::swarm::PeerId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::ops::{Index, IndexMut};
use std::time::Duration;

/// A peer's place in [`Peers`]; reused once the peer is removed.
pub(crate) type Slot = u32;

pub(crate) struct Peer {
    /// The driver's id, for the actions that name the peer.
    pub id: PeerId,
    pub local: bool,
    pub seed: bool,
    pub key: u64,
    /// Its datacenter's key ([`crate::host_key`] of the name).
    pub dc: u64,
    pub have: BitSet,
    pub inflight: usize,
    /// Requests it may have in flight now: halved when it times out or says
    /// `Busy`, one more per piece it delivers, up to `max_window`.
    pub window: usize,
    pub max_window: usize,
    pub banned: bool,
    /// No chunk was eligible from this peer at the last look; skip it until
    /// something changes.
    pub idle: bool,
    /// When it last showed progress (joined, announced a chunk, delivered one).
    pub progress_at: Duration,
    /// It is in `Swarm::candidates`.
    pub queued: bool,
    /// Ticks in a row in which its requests timed out without a delivery.
    pub strikes: u32,
    /// Requests in a row that failed without an answer.
    pub failures: u32,
    /// It said its upload queue was full: not asked until then.
    pub busy_until: Duration,
}

#[derive(Default)]
pub(crate) struct Peers {
    slots: Vec<Option<Peer>>,
    index: HashMap<PeerId, Slot, BuildHasherDefault<IdHasher>>,
    free: Vec<Slot>,
}

impl Peers {
    /// The slot of the peer with the driver's id `id`.
    pub fn slot(&self, id: PeerId) -> Option<Slot> {
        self.index.get(&id).copied()
    }

    pub fn contains(&self, id: PeerId) -> bool {
        self.index.contains_key(&id)
    }

    pub fn insert(&mut self, peer: Peer) -> Slot {
        let id = peer.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(peer);
                s
            }
            None => {
                self.slots.push(Some(peer));
                (self.slots.len() - 1) as Slot
            }
        };
        self.index.insert(id, slot);
        slot
    }

    /// Removes the peer with id `id`: its slot is free for the next one.
    pub fn remove(&mut self, id: PeerId) -> Option<(Slot, Peer)> {
        let slot = self.index.remove(&id)?;
        let peer = self.slots[slot as usize].take()?;
        self.free.push(slot);
        Some((slot, peer))
    }

    pub fn get(&self, slot: Slot) -> Option<&Peer> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, slot: Slot) -> Option<&mut Peer> {
        self.slots.get_mut(slot as usize).and_then(Option::as_mut)
    }

    pub fn by_id(&self, id: PeerId) -> Option<&Peer> {
        self.get(self.slot(id)?)
    }

    pub fn by_id_mut(&mut self, id: PeerId) -> Option<&mut Peer> {
        let slot = self.slot(id)?;
        self.get_mut(slot)
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut Peer)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(s, p)| Some((s as Slot, p.as_mut()?)))
    }

    pub fn slots(&self) -> impl Iterator<Item = (Slot, &Peer)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(s, p)| Some((s as Slot, p.as_ref()?)))
    }

    pub fn values(&self) -> impl Iterator<Item = &Peer> {
        self.slots.iter().flatten()
    }
}

impl Index<Slot> for Peers {
    type Output = Peer;
    fn index(&self, slot: Slot) -> &Peer {
        self.get(slot).expect("a slot in use")
    }
}

impl IndexMut<Slot> for Peers {
    fn index_mut(&mut self, slot: Slot) -> &mut Peer {
        self.get_mut(slot).expect("a slot in use")
    }
}

/// Hashes a peer id with one `mix`: ids are the driver's own numbers, not
/// an attacker's, and SipHash cost more than the lookups it guards.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = crate::mix(self.0 ^ u64::from(b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = crate::mix(self.0 ^ n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: PeerId) -> Peer {
        Peer {
            id,
            local: true,
            seed: false,
            key: id,
            dc: 0,
            have: BitSet::new(8),
            inflight: 0,
            window: 1,
            max_window: 1,
            banned: false,
            idle: false,
            progress_at: Duration::ZERO,
            queued: false,
            strikes: 0,
            failures: 0,
            busy_until: Duration::ZERO,
        }
    }

    #[test]
    fn a_removed_peer_is_gone_and_its_slot_serves_the_next() {
        let mut peers = Peers::default();
        let a = peers.insert(peer(100));
        let b = peers.insert(peer(200));
        assert_ne!(a, b);
        let (slot, gone) = peers.remove(100).expect("listed");
        assert_eq!((slot, gone.id), (a, 100));
        assert!(peers.by_id(100).is_none() && peers.get(a).is_none());
        assert!(peers.remove(100).is_none(), "removed once");
        let c = peers.insert(peer(300));
        assert_eq!(c, a, "the free slot is reused");
        assert_eq!(peers[c].id, 300);
        assert_eq!(peers.by_id(200).map(|p| p.id), Some(200));
        let mut ids: Vec<PeerId> = peers.values().map(|p| p.id).collect();
        ids.sort_unstable();
        assert_eq!(ids, [200, 300]);
    }
}
