//! Requests in flight, indexed by chunk. A vector, not a hash map: the
//! scheduler asks "is this chunk in flight?" for every candidate it looks at,
//! thousands of times per event on a large release.

use crate::swarm::{ChunkIx, PeerId};
use std::time::Duration;

pub(crate) struct InFlight {
    by_chunk: Vec<Vec<(PeerId, Duration)>>,
    /// Chunks with at least one request.
    live: usize,
}

impl InFlight {
    pub fn new(chunks: usize) -> Self {
        InFlight {
            by_chunk: vec![Vec::new(); chunks],
            live: 0,
        }
    }

    pub fn contains(&self, c: ChunkIx) -> bool {
        !self.by_chunk[c as usize].is_empty()
    }

    pub fn push(&mut self, c: ChunkIx, peer: PeerId, at: Duration) {
        let v = &mut self.by_chunk[c as usize];
        if v.is_empty() {
            self.live += 1;
        }
        v.push((peer, at));
    }

    /// Takes every request for `c`.
    pub fn take(&mut self, c: ChunkIx) -> Vec<(PeerId, Duration)> {
        let v = std::mem::take(&mut self.by_chunk[c as usize]);
        if !v.is_empty() {
            self.live -= 1;
        }
        v
    }

    /// Removes `peer`'s request for `c`; returns (whether it was there, whether
    /// `c` has no request left).
    pub fn remove(&mut self, c: ChunkIx, peer: PeerId) -> (bool, bool) {
        let v = &mut self.by_chunk[c as usize];
        if v.is_empty() {
            return (false, true);
        }
        let before = v.len();
        v.retain(|(p, _)| *p != peer);
        let removed = v.len() < before;
        if v.is_empty() {
            self.live -= 1;
        }
        (removed, v.is_empty())
    }

    /// Every (chunk, requests) with requests.
    pub fn iter(&self) -> impl Iterator<Item = (ChunkIx, &[(PeerId, Duration)])> {
        let live = self.live;
        self.by_chunk
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_empty())
            .take(live)
            .map(|(c, v)| (c as ChunkIx, v.as_slice()))
    }
}
