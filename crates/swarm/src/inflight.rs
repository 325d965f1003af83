//! Requests in flight: one short list of them all, and a count per chunk.
//! The scheduler asks "is this chunk in flight?" for every chunk it sends
//! for, so that is one small integer per chunk; everything else (the
//! requests for a chunk that arrived, one peer's requests, the expired ones)
//! is a walk of the list, which holds no more than the host's windows (tens
//! to a few hundred requests). A vector per chunk cost an allocation per
//! request and 24 bytes per chunk in every swarm of the flow model.

use crate::swarm::{ChunkIx, PeerId};
use std::time::Duration;

pub(crate) struct InFlight {
    /// (chunk, peer, sent at), in the order they were sent.
    reqs: Vec<(ChunkIx, PeerId, Duration)>,
    per_chunk: Vec<u32>,
}

impl InFlight {
    pub fn new(chunks: usize) -> Self {
        InFlight {
            reqs: Vec::new(),
            per_chunk: vec![0; chunks],
        }
    }

    pub fn contains(&self, c: ChunkIx) -> bool {
        self.per_chunk[c as usize] > 0
    }

    /// Requests for `c`.
    #[cfg(test)]
    pub fn count(&self, c: ChunkIx) -> usize {
        self.per_chunk[c as usize] as usize
    }

    /// Whether `peer` was asked for `c` (false for a chunk out of range).
    pub fn has(&self, c: ChunkIx, peer: PeerId) -> bool {
        self.per_chunk.get(c as usize).is_some_and(|&n| n > 0)
            && self.reqs.iter().any(|&(rc, p, _)| rc == c && p == peer)
    }

    pub fn push(&mut self, c: ChunkIx, peer: PeerId, at: Duration) {
        self.per_chunk[c as usize] += 1;
        self.reqs.push((c, peer, at));
    }

    /// Takes every request for `c`, in the order they were sent.
    pub fn take(&mut self, c: ChunkIx) -> Vec<(PeerId, Duration)> {
        let mut taken = Vec::new();
        if self.per_chunk[c as usize] == 0 {
            return taken;
        }
        self.per_chunk[c as usize] = 0;
        self.reqs.retain(|&(rc, p, at)| {
            if rc == c {
                taken.push((p, at));
            }
            rc != c
        });
        taken
    }

    /// Removes `peer`'s request for `c`; returns (whether it was there, whether
    /// `c` has no request left).
    pub fn remove(&mut self, c: ChunkIx, peer: PeerId) -> (bool, bool) {
        if self.per_chunk[c as usize] == 0 {
            return (false, true);
        }
        let Some(i) = self
            .reqs
            .iter()
            .position(|&(rc, p, _)| rc == c && p == peer)
        else {
            return (false, false);
        };
        // In order: `take` and the walks by chunk keep the order sent.
        self.reqs.remove(i);
        self.per_chunk[c as usize] -= 1;
        (true, self.per_chunk[c as usize] == 0)
    }

    /// Every request as (chunk, peer, sent at), sorted by chunk and, for
    /// one chunk, in the order sent: callers act on them in that order, so
    /// what they do does not depend on when each was sent.
    pub fn by_chunk(&self) -> Vec<(ChunkIx, PeerId, Duration)> {
        let mut all = self.reqs.clone();
        all.sort_by_key(|&(c, ..)| c);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_follow_pushes_takes_and_removes() {
        let t = Duration::ZERO;
        let mut f = InFlight::new(4);
        f.push(2, 10, t);
        f.push(1, 11, t);
        f.push(2, 12, t);
        assert!(f.contains(2) && f.count(2) == 2 && f.count(1) == 1);
        assert!(!f.contains(0));
        assert!(f.has(2, 12) && f.has(1, 11) && !f.has(1, 10) && !f.has(0, 10) && !f.has(9, 10));
        assert_eq!(f.remove(2, 99), (false, false), "no such request");
        assert_eq!(f.remove(2, 10), (true, false));
        assert_eq!(f.remove(2, 12), (true, true));
        assert_eq!(f.remove(2, 12), (false, true), "already gone");
        f.push(3, 13, t);
        f.push(3, 14, t);
        assert_eq!(
            f.by_chunk().iter().map(|r| (r.0, r.1)).collect::<Vec<_>>(),
            [(1, 11), (3, 13), (3, 14)]
        );
        assert_eq!(f.take(3), [(13, t), (14, t)], "in the order sent");
        assert!(!f.contains(3) && f.take(3).is_empty());
        assert_eq!(f.by_chunk().len(), 1);
    }
}
