/// A fixed-size set of chunk indexes.
///
/// Up to [`INLINE`] words live inside the set itself: a swarm keeps one set
/// per peer and looks at them in every schedule, and at fleet scale (10,000
/// hosts, 256 pieces) the load through a separate heap block per peer was
/// the simulator's largest cost; at 512 pieces it still cost 15% of the
/// CPU time, hence room for 512.
#[derive(Clone, Debug)]
pub struct BitSet {
    words: Words,
    len: usize,
}

/// Words that fit in [`Words::Inline`]: 512 chunks.
const INLINE: usize = 8;

#[derive(Clone, Debug)]
enum Words {
    Inline([u64; INLINE]),
    Heap(Box<[u64]>),
}

impl BitSet {
    pub fn new(len: usize) -> Self {
        let n = len.div_ceil(64);
        let words = if n <= INLINE {
            Words::Inline([0; INLINE])
        } else {
            Words::Heap(vec![0; n].into_boxed_slice())
        };
        BitSet { words, len }
    }

    fn slice(&self) -> &[u64] {
        let n = self.len.div_ceil(64);
        match &self.words {
            Words::Inline(w) => &w[..n],
            Words::Heap(w) => w,
        }
    }

    fn slice_mut(&mut self) -> &mut [u64] {
        let n = self.len.div_ceil(64);
        match &mut self.words {
            Words::Inline(w) => &mut w[..n],
            Words::Heap(w) => w,
        }
    }

    pub fn full(len: usize) -> Self {
        let mut b = BitSet::new(len);
        for i in 0..len {
            b.set(i);
        }
        b
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn get(&self, i: usize) -> bool {
        i < self.len && self.slice()[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was clear. Out of range is ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let was = self.get(i);
        self.slice_mut()[i / 64] |= 1 << (i % 64);
        !was
    }

    /// Clears bit `i`; returns whether it was set.
    pub fn clear(&mut self, i: usize) -> bool {
        let was = self.get(i);
        if was {
            self.slice_mut()[i / 64] &= !(1 << (i % 64));
        }
        was
    }

    /// Makes room for indexes up to `len` (new ones clear); never shrinks.
    pub fn grow(&mut self, len: usize) {
        if len <= self.len {
            return;
        }
        let mut b = BitSet::new(len);
        let n = self.words();
        b.slice_mut()[..n].copy_from_slice(self.slice());
        *self = b;
    }

    /// Bits `64*i .. 64*i+64` as one word (bit `k` of it is index `64*i+k`).
    pub fn word(&self, i: usize) -> u64 {
        self.slice()[i]
    }

    /// Number of words.
    pub fn words(&self) -> usize {
        self.slice().len()
    }

    pub fn any(&self) -> bool {
        self.slice().iter().any(|&w| w != 0)
    }

    /// A set with every bit of `0..len` that `self` lacks.
    pub fn complement(&self) -> BitSet {
        let mut b = BitSet::new(self.len);
        for i in 0..self.len {
            if !self.get(i) {
                b.set(i);
            }
        }
        b
    }

    pub fn count(&self) -> usize {
        self.slice().iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}

impl PartialEq for BitSet {
    fn eq(&self, o: &Self) -> bool {
        self.len == o.len && self.slice() == o.slice()
    }
}

impl Eq for BitSet {}

#[cfg(test)]
mod tests {
    use super::BitSet;

    #[test]
    fn inline_and_heap_sets_behave_alike() {
        for len in [0, 1, 63, 64, 65, 256, 257, 512, 513, 1000] {
            let mut b = BitSet::new(len);
            assert_eq!(b.words(), len.div_ceil(64));
            assert!(!b.any());
            for i in (0..len).step_by(3) {
                assert!(b.set(i), "{len}: {i} was clear");
                assert!(!b.set(i), "{len}: {i} was set");
            }
            assert!(!b.set(len), "{len}: out of range");
            assert_eq!(b.count(), len.div_ceil(3));
            let c = b.complement();
            assert_eq!(b.count() + c.count(), len);
            assert!((0..len).all(|i| b.get(i) != c.get(i)));
            assert_eq!(BitSet::full(len).count(), len);
            for i in (0..len).step_by(3) {
                assert!(b.clear(i));
            }
            assert_eq!(b, BitSet::new(len));
            assert_ne!(BitSet::new(len), BitSet::new(len + 1));
            // Growing keeps what was set, across the inline/heap boundary.
            let mut g = BitSet::new(len);
            g.set(len.saturating_sub(1));
            g.grow(len + 600);
            assert_eq!(g.len(), len + 600);
            assert_eq!(g.count(), usize::from(len > 0));
            assert_eq!(len > 0, g.get(len.saturating_sub(1)));
            assert!(g.set(len + 599));
        }
    }
}
