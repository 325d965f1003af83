//! Rates of the transfers in flight, from the capacities they share.
//!
//! Every transfer uses its uploader's uplink and its downloader's downlink,
//! and, across datacenters, the source's WAN out and the destination's WAN
//! in. Rates approach the max-min fair share (what TCP-like congestion control
//! converges to) by a few rounds of progressive filling, then are scaled so no
//! link carries more than its capacity: a few passes over the flows per step,
//! where exact water-filling would take one pass per bottleneck link.

/// A transfer's links: indices into the capacity table, 2 or 4 of them.
#[derive(Clone, Copy, Debug)]
pub struct Links {
    ids: [u32; 4],
    len: u8,
}

impl Links {
    pub fn new(ids: &[u32]) -> Links {
        let mut a = [0; 4];
        a[..ids.len()].copy_from_slice(ids);
        Links {
            ids: a,
            len: ids.len() as u8,
        }
    }
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.ids[..usize::from(self.len)]
            .iter()
            .map(|&i| i as usize)
    }
}

/// Reusable scratch space for [`Fluid::rates`].
pub struct Fluid {
    caps: Vec<f64>,
    count: Vec<u32>,
    share: Vec<f64>,
    held: Vec<f64>,
    held_n: Vec<u32>,
    load: Vec<f64>,
}

/// Rounds of progressive filling: each lets links whose flows are held back
/// elsewhere give the spare capacity to the rest.
const ROUNDS: usize = 3;

impl Fluid {
    /// `caps`: bytes per second of every link.
    pub fn new(caps: Vec<f64>) -> Fluid {
        let n = caps.len();
        Fluid {
            caps,
            count: vec![0; n],
            share: vec![0.0; n],
            held: vec![0.0; n],
            held_n: vec![0; n],
            load: vec![0.0; n],
        }
    }

    /// Bytes per second of link `l`.
    pub fn cap(&self, l: usize) -> f64 {
        self.caps[l]
    }

    /// Fills `rates` (bytes per second) for `flows`.
    pub fn rates(&mut self, flows: &[Links], rates: &mut Vec<f64>) {
        rates.clear();
        rates.resize(flows.len(), 0.0);
        self.count.fill(0);
        for f in flows {
            for l in f.iter() {
                self.count[l] += 1;
            }
        }
        for (l, s) in self.share.iter_mut().enumerate() {
            *s = self.caps[l] / f64::from(self.count[l].max(1));
        }
        self.assign(flows, rates);
        for _ in 1..ROUNDS {
            self.held.fill(0.0);
            self.held_n.fill(0);
            for (f, &r) in flows.iter().zip(rates.iter()) {
                for l in f.iter() {
                    if r < self.share[l] * 0.999 {
                        self.held[l] += r;
                        self.held_n[l] += 1;
                    }
                }
            }
            for l in 0..self.share.len() {
                let free = self.count[l] - self.held_n[l];
                if self.count[l] > 0 && free > 0 {
                    let s = (self.caps[l] - self.held[l]).max(0.0) / f64::from(free);
                    self.share[l] = self.share[l].max(s);
                }
            }
            self.assign(flows, rates);
        }
        // Rounds can overshoot a link whose held flows sped up too: scale back.
        self.load.fill(0.0);
        for (f, &r) in flows.iter().zip(rates.iter()) {
            for l in f.iter() {
                self.load[l] += r;
            }
        }
        for (f, r) in flows.iter().zip(rates.iter_mut()) {
            let k = f
                .iter()
                .map(|l| (self.caps[l] / self.load[l]).min(1.0))
                .fold(1.0, f64::min);
            *r *= k;
        }
    }

    /// Exact max-min fair rates (progressive filling to the end), with a
    /// ceiling of its own for each flow (`f64::INFINITY` for none): all rates
    /// grow together until a link fills or a flow reaches its ceiling, which
    /// freezes the flows concerned, and so on. One pass over the flows per
    /// bottleneck, so it is for runs with few flows or few distinct ones
    /// (see [`super::fixed`]); the stepped engine uses [`Fluid::rates`].
    pub fn exact(&mut self, flows: &[Links], ceiling: &[f64], rates: &mut Vec<f64>) {
        rates.clear();
        rates.resize(flows.len(), 0.0);
        let mut frozen = vec![false; flows.len()];
        // `load`: capacity left on each link; `count`: unfrozen flows on it.
        self.load.copy_from_slice(&self.caps);
        self.count.fill(0);
        for f in flows {
            for l in f.iter() {
                self.count[l] += 1;
            }
        }
        let mut left = flows.len();
        while left > 0 {
            let mut grow = f64::INFINITY;
            for (l, &n) in self.count.iter().enumerate() {
                if n > 0 {
                    grow = grow.min(self.load[l].max(0.0) / f64::from(n));
                }
            }
            for (i, &r) in rates.iter().enumerate() {
                if !frozen[i] {
                    grow = grow.min(ceiling[i] - r);
                }
            }
            if !grow.is_finite() {
                // Flows on no link and with no ceiling: nothing bounds them.
                break;
            }
            let grow = grow.max(0.0);
            for (i, f) in flows.iter().enumerate() {
                if !frozen[i] {
                    rates[i] += grow;
                    for l in f.iter() {
                        self.load[l] -= grow;
                    }
                }
            }
            // Freeze what is now at a full link or at its ceiling.
            for (i, f) in flows.iter().enumerate() {
                if frozen[i] {
                    continue;
                }
                let full = f.iter().any(|l| self.load[l] <= self.caps[l] * 1e-9);
                if full || rates[i] >= ceiling[i] * (1.0 - 1e-12) {
                    frozen[i] = true;
                    left -= 1;
                    for l in f.iter() {
                        self.count[l] -= 1;
                    }
                }
            }
        }
    }

    fn assign(&self, flows: &[Links], rates: &mut [f64]) {
        for (f, r) in flows.iter().zip(rates.iter_mut()) {
            *r = f
                .iter()
                .map(|l| self.share[l])
                .fold(f64::INFINITY, f64::min);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flows_share_a_bottleneck_and_take_what_others_leave() {
        // Link 0: 10 units shared by flows a and b; link 1: 2 units, only b.
        let mut f = Fluid::new(vec![10.0, 2.0, 100.0]);
        let flows = [Links::new(&[0, 2]), Links::new(&[0, 1])];
        let mut r = Vec::new();
        f.rates(&flows, &mut r);
        assert!((r[1] - 2.0).abs() < 1e-9, "{r:?}");
        assert!(
            (r[0] - 8.0).abs() < 1e-9,
            "b is held at 2, a takes the rest: {r:?}"
        );
    }

    #[test]
    fn exact_rates_fill_bottlenecks_in_turn_and_respect_ceilings() {
        // Link 0: 10 units shared by a, b and c; link 1: 2 units, only b;
        // c may not go past 1.
        let mut f = Fluid::new(vec![10.0, 2.0, 100.0]);
        let flows = [
            Links::new(&[0, 2]),
            Links::new(&[0, 1]),
            Links::new(&[0, 2]),
        ];
        let mut r = Vec::new();
        f.exact(&flows, &[f64::INFINITY, f64::INFINITY, 1.0], &mut r);
        let want = [7.0, 2.0, 1.0];
        for (got, want) in r.iter().zip(want) {
            assert!((got - want).abs() < 1e-9, "{r:?}");
        }
    }

    #[test]
    fn no_link_carries_more_than_its_capacity() {
        let caps: Vec<f64> = (0..20).map(|i| 1.0 + f64::from(i)).collect();
        let mut f = Fluid::new(caps.clone());
        let flows: Vec<Links> = (0..200u32)
            .map(|i| Links::new(&[i % 20, (i * 7 + 3) % 20, (i * 13 + 5) % 20]))
            .collect();
        let mut r = Vec::new();
        f.rates(&flows, &mut r);
        let mut load = [0.0; 20];
        for (fl, &x) in flows.iter().zip(&r) {
            assert!(x > 0.0);
            for l in fl.iter() {
                load[l] += x;
            }
        }
        for (l, (&got, &cap)) in load.iter().zip(&caps).enumerate() {
            assert!(got <= cap * (1.0 + 1e-9), "link {l}: {got} > {cap}");
        }
    }
}
