//! The flow engine's pending events, earliest first, in the engine's steps.
//!
//! The engine handles, step after step, every event due before the step's
//! end, and nearly every event is due within a few steps of being made (a
//! latency, a piece's last bytes). One heap of them all held hundreds of
//! thousands at ten thousand hosts, and every pop walked its height through
//! memory no cache held. Here an event due in a later step waits in that
//! step's bucket, a plain vector, which is sorted once when its step comes
//! and then read in order; only events made for the step already open go
//! to a heap, a small one. Pops come out in the same order as from one
//! heap: by time, then by the order pushed.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

pub struct Calendar<T> {
    /// Nanoseconds per bucket: the engine's step.
    width: u64,
    /// The open buckets' events (every bucket up to `open`), sorted latest
    /// first, so the earliest is popped off the end.
    run: Vec<Entry<T>>,
    /// Events made for an open bucket after it was sorted, including late
    /// ones (due before it began).
    now: BinaryHeap<Entry<T>>,
    open: u64,
    /// Buckets `open + 1`, `open + 2`, ... in order.
    later: VecDeque<Vec<Entry<T>>>,
    /// Emptied buckets, kept for their allocations.
    spare: Vec<Vec<Entry<T>>>,
    seq: u64,
}

struct Entry<T> {
    at: u64,
    seq: u64,
    item: T,
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl<T> Ord for Entry<T> {
    // Reversed: the heap pops the earliest event first, and a vector
    // sorted in this order ends with it.
    fn cmp(&self, o: &Self) -> Ordering {
        (o.at, o.seq).cmp(&(self.at, self.seq))
    }
}

fn nanos(t: Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

impl<T> Calendar<T> {
    /// Buckets of `width` (the engine's step; at least a nanosecond).
    pub fn new(width: Duration) -> Self {
        Calendar {
            width: nanos(width).max(1),
            run: Vec::new(),
            now: BinaryHeap::new(),
            open: 0,
            later: VecDeque::new(),
            spare: Vec::new(),
            seq: 0,
        }
    }

    pub fn push(&mut self, at: Duration, item: T) {
        self.seq += 1;
        let at = nanos(at);
        let e = Entry {
            at,
            seq: self.seq,
            item,
        };
        let bucket = at / self.width;
        if bucket <= self.open {
            self.now.push(e);
            return;
        }
        let i = (bucket - self.open - 1) as usize;
        while self.later.len() <= i {
            let v = self.spare.pop().unwrap_or_default();
            self.later.push_back(v);
        }
        self.later[i].push(e);
    }

    /// The earliest event due before `end`, with its time.
    pub fn pop_before(&mut self, end: Duration) -> Option<(Duration, T)> {
        let end = nanos(end);
        // The last bucket with a time before `end`: open every one up to it.
        let last = end.saturating_sub(1) / self.width;
        if self.open < last {
            while self.open < last {
                self.open += 1;
                if let Some(mut v) = self.later.pop_front() {
                    if self.run.is_empty() {
                        std::mem::swap(&mut self.run, &mut v);
                    } else {
                        self.run.append(&mut v);
                    }
                    self.spare.push(v);
                }
            }
            self.run.extend(self.now.drain());
            self.run.sort_unstable();
        }
        // The earlier of the two heads (the greater, in `Entry`'s order).
        let from_run = match (self.run.last(), self.now.peek()) {
            (Some(r), Some(h)) => r > h,
            (r, _) => r.is_some(),
        };
        let head = if from_run {
            self.run.last()
        } else {
            self.now.peek()
        }?;
        if head.at >= end {
            return None;
        }
        let e = if from_run {
            self.run.pop()
        } else {
            self.now.pop()
        }?;
        Some((Duration::from_nanos(e.at), e.item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Against one heap of everything: the same events, in the same
        /// order, at every step, with events pushed between steps (some
        /// due in the past, as a piece that ended early in a step is).
        #[test]
        fn pops_as_one_heap_would(
            width in 1u64..50,
            rounds in proptest::collection::vec(
                (1u64..120, proptest::collection::vec((0u64..400, any::<bool>()), 0..20)),
                1..30,
            ),
        ) {
            let mut cal = Calendar::new(Duration::from_nanos(width));
            let mut all: Vec<(u64, u64)> = Vec::new();
            let mut end = 0u64;
            let mut n = 0u64;
            for (advance, pushes) in rounds {
                for (delta, past) in pushes {
                    let at = if past { end.saturating_sub(delta) } else { end + delta };
                    n += 1;
                    cal.push(Duration::from_nanos(at), n);
                    all.push((at, n));
                }
                end += advance;
                all.sort();
                let due: Vec<(u64, u64)> = all.iter().copied().filter(|e| e.0 < end).collect();
                all.retain(|e| e.0 >= end);
                let mut got = Vec::new();
                while let Some((at, item)) = cal.pop_before(Duration::from_nanos(end)) {
                    got.push((nanos(at), item));
                }
                prop_assert_eq!(got, due);
            }
        }
    }
}
