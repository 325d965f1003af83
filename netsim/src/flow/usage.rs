//! How well the transfers in flight use the hosts' links, for the timeline
//! (`RUST_LOG=shoal_netsim::timeline=debug`).
//!
//! A swarm can keep every upload slot busy and still leave links idle: the
//! rate of a transfer is its share of the busiest link it crosses, so an
//! uplink whose transfers all go to crowded downlinks runs below capacity,
//! and a host that nobody is sending to waits however fast the rest go.
//! This counts both: how many transfers each unfinished host receives at
//! once, and what share of the links' capacity is used; and, for the seed,
//! whose uplink sets the lower bound, how crowded the hosts it sends to are.

/// One moment's use of the hosts' links.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkUse {
    /// Unfinished hosts by the transfers they are receiving: `[k]` holds
    /// those with `k`, the last entry those with [`LinkUse::CROWDED`] or more.
    pub receiving: [usize; LinkUse::CROWDED + 1],
    /// Mean share of an unfinished host's downlink in use.
    pub down: f64,
    /// Mean share of an agent's uplink in use (every agent, finished or not).
    pub up: f64,
    /// The seed's transfers by the transfers their downloader receives at
    /// once, the seed's included (indexed like `receiving`).
    pub seed_to: [usize; LinkUse::CROWDED + 1],
    /// Share of the seed's uplink in use.
    pub seed_up: f64,
}

impl LinkUse {
    /// Transfers at once from which a host counts as crowded.
    pub const CROWDED: usize = 11;

    /// `flows`: each transfer's uploader, downloader and rate; `up_cap` and
    /// `down_cap`: each host's link capacities (host 0, the seed, is left
    /// out of both means); `unfinished`: whether a host still lacks pieces.
    pub fn measure(
        flows: impl IntoIterator<Item = (usize, usize, f64)>,
        up_cap: &[f64],
        down_cap: &[f64],
        unfinished: impl Fn(usize) -> bool,
    ) -> LinkUse {
        let n = up_cap.len();
        let flows: Vec<(usize, usize, f64)> = flows.into_iter().collect();
        let (mut count, mut down, mut up) = (vec![0usize; n], vec![0.0; n], vec![0.0; n]);
        for &(from, to, rate) in &flows {
            count[to] += 1;
            down[to] += rate;
            up[from] += rate;
        }
        let mut u = LinkUse::default();
        for &(from, to, _) in &flows {
            if from == 0 {
                u.seed_to[count[to].min(Self::CROWDED)] += 1;
            }
        }
        if let Some(&cap) = up_cap.first() {
            u.seed_up = up[0] / cap;
        }
        let mut waiting = 0;
        for x in 1..n {
            if unfinished(x) {
                u.receiving[count[x].min(Self::CROWDED)] += 1;
                u.down += down[x] / down_cap[x];
                waiting += 1;
            }
            u.up += up[x] / up_cap[x];
        }
        u.down /= waiting.max(1) as f64;
        u.up /= n.saturating_sub(1).max(1) as f64;
        u
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_unfinished_hosts_transfers_and_the_links_in_use() {
        // Seed 0 and agents 1..=3, links of 10. Agent 1 receives two
        // transfers at 5 each (full); agent 2 receives nothing; agent 3 has
        // finished and sends one of them.
        let caps = [10.0; 4];
        let flows = [(0, 1, 5.0), (3, 1, 5.0)];
        let u = LinkUse::measure(flows, &caps, &caps, |x| x != 3);
        let mut receiving = [0; LinkUse::CROWDED + 1];
        receiving[0] = 1;
        receiving[2] = 1;
        assert_eq!(u.receiving, receiving);
        // Downlinks of agents 1 and 2: full and idle.
        assert!((u.down - 0.5).abs() < 1e-9, "{}", u.down);
        // Uplinks of the three agents: only agent 3's, half used.
        assert!((u.up - 0.5 / 3.0).abs() < 1e-9, "{}", u.up);
        // The seed sends one transfer, to a host receiving two, at half
        // its uplink.
        let mut seed_to = [0; LinkUse::CROWDED + 1];
        seed_to[2] = 1;
        assert_eq!(u.seed_to, seed_to);
        assert!((u.seed_up - 0.5).abs() < 1e-9, "{}", u.seed_up);
    }

    #[test]
    fn the_seeds_transfers_count_by_how_crowded_their_downloader_is() {
        // Seed 0 sends to 1 (alone there) and to 2, which also receives
        // from 3 and 4; links of 10.
        let caps = [10.0; 5];
        let flows = [(0, 1, 5.0), (0, 2, 3.0), (3, 2, 3.0), (4, 2, 4.0)];
        let u = LinkUse::measure(flows, &caps, &caps, |x| x < 3);
        let mut seed_to = [0; LinkUse::CROWDED + 1];
        seed_to[1] = 1;
        seed_to[3] = 1;
        assert_eq!(u.seed_to, seed_to);
        assert!((u.seed_up - 0.8).abs() < 1e-9, "{}", u.seed_up);
    }

    #[test]
    fn a_crowded_host_counts_in_the_last_entry() {
        let caps = [10.0; 3];
        let flows = (0..20).map(|_| (2, 1, 0.1));
        let u = LinkUse::measure(flows, &caps, &caps, |x| x == 1);
        assert_eq!(u.receiving[LinkUse::CROWDED], 1);
        assert_eq!(u.receiving.iter().sum::<usize>(), 1);
    }
}
