/// A fixed-size set of chunk indexes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BitSet {
    words: Vec<u64>,
    len: usize,
}

impl BitSet {
    pub fn new(len: usize) -> Self {
        BitSet {
            words: vec![0; len.div_ceil(64)],
            len,
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
        i < self.len && self.words[i / 64] & (1 << (i % 64)) != 0
    }

    /// Sets bit `i`; returns whether it was clear. Out of range is ignored.
    pub fn set(&mut self, i: usize) -> bool {
        if i >= self.len {
            return false;
        }
        let was = self.get(i);
        self.words[i / 64] |= 1 << (i % 64);
        !was
    }

    /// Clears bit `i`; returns whether it was set.
    pub fn clear(&mut self, i: usize) -> bool {
        let was = self.get(i);
        if was {
            self.words[i / 64] &= !(1 << (i % 64));
        }
        was
    }

    /// Bits `64*i .. 64*i+64` as one word (bit `k` of it is index `64*i+k`).
    pub fn word(&self, i: usize) -> u64 {
        self.words[i]
    }

    /// Number of words.
    pub fn words(&self) -> usize {
        self.words.len()
    }

    pub fn any(&self) -> bool {
        self.words.iter().any(|&w| w != 0)
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
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    pub fn iter(&self) -> impl Iterator<Item = bool> + '_ {
        (0..self.len).map(|i| self.get(i))
    }
}
