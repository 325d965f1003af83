//! Central and fanout as whole-release flows, solved from one change of
//! rates to the next.
//!
//! These two strategies make no choice during a run: every target fetches
//! the release from the one peer the tracker lists (the seed for central; for
//! fanout its datacenter's proxy, and the proxies from the seed). Each target
//! then has one flow, whose rate is the max-min fair share of the links it
//! crosses ([`Fluid::exact`]). Rates change only when a flow starts or ends,
//! or when a fanout host catches up with its proxy and can go no faster
//! than the proxy receives. Solving those moments exactly gives what the
//! stepped engine gives (netsim/tests/flow.rs compares them) at any fleet
//! size. The engine pays for every piece and every step: central at 10,000
//! hosts is about a day of simulated time, out of its reach.

use super::Measured;
use super::fluid::{Fluid, Links};
use crate::strategy::Strategy;
use crate::topology::{HostRole, Topology};
use std::time::Duration;

struct Flow {
    from: usize,
    to: usize,
    links: Links,
    bytes: f64,
    moved: f64,
    /// When the source starts sending: after the tracker's answer, the
    /// handshake, the bitfield and the request.
    start: f64,
    done: bool,
}

/// A flow closer to its feeder than this (bytes) has caught up with it.
const CAUGHT_UP: f64 = 1.0;

/// Distributes `f_bytes` over `topo` with `strategy` (central or fanout: a
/// strategy whose hosts each list one source). `piece`: how far behind its
/// proxy a fanout host stays, since a proxy forwards whole pieces.
pub fn simulate(
    topo: &Topology,
    f_bytes: u64,
    strategy: Strategy,
    piece: u64,
    time_limit: Duration,
    seed: u64,
    progress: &dyn Fn(f64, usize),
) -> Measured {
    let n = topo.hosts.len();
    let dcs = topo.dcs.len();
    let dc: Vec<usize> = topo.hosts.iter().map(|h| h.dc).collect();
    let lat = |a: usize, b: usize| topo.latency(dc[a], dc[b]).as_secs_f64();
    let roster = super::roster(topo);
    let policy = strategy.policy(topo);
    let f = f_bytes as f64;
    let mut flows = Vec::new();
    // Flows into each host, to find what a proxy holds.
    let mut into: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (x, h) in topo.hosts.iter().enumerate().skip(1) {
        let listing = roster.list(&h.name, &topo.dcs[h.dc].name, &policy, seed ^ x as u64);
        let k = listing.peers.len().max(1) as f64;
        for &p in &listing.peers {
            into[x].push(flows.len());
            flows.push(Flow {
                from: p,
                to: x,
                links: super::path(topo, p, x),
                bytes: f / k,
                moved: 0.0,
                start: 2.0 * lat(x, 0) + 4.0 * lat(x, p),
                done: false,
            });
        }
    }
    let mut fluid = Fluid::new(super::link_caps(topo));
    let is_seed = |x: usize| topo.hosts[x].role == HostRole::Seed;
    let piece = piece as f64;

    let mut m = Measured {
        verified_at: vec![None; n - 1],
        sent: vec![0; n],
        received: vec![0; n],
        wan_in: vec![0; dcs],
        wan_out: vec![0; dcs],
        ..Measured::default()
    };
    let (mut sent, mut received) = (vec![0.0; n], vec![0.0; n]);
    let (mut wan_in, mut wan_out) = (vec![0.0; dcs], vec![0.0; dcs]);
    let mut last_done = vec![0.0f64; n];
    let mut recv_rate = vec![0.0; n];
    let limit = time_limit.as_secs_f64();
    let mut t = 0.0;
    let mut done = 0;
    let (mut active, mut links, mut ceiling, mut rates) = (vec![], vec![], vec![], vec![]);
    loop {
        active.clear();
        active.extend((0..flows.len()).filter(|&i| !flows[i].done && flows[i].start <= t));
        links.clear();
        links.extend(active.iter().map(|&i| flows[i].links));
        // What a host holds and how fast it is receiving: sums over its flows.
        let holds = |x: usize| into[x].iter().map(|&i| flows[i].moved).sum::<f64>();
        // A feeder is complete once its last byte has arrived, not sent.
        let received_all = |x: usize| into[x].iter().all(|&i| flows[i].done);
        let complete = |x: usize| is_seed(x) || (received_all(x) && last_done[x] <= t);
        // A flow fed by a host still receiving may not pass what that host
        // holds, less a piece: caught up, it goes at most as fast as its
        // feeder. Feeders come from the seed, so two passes settle it.
        let mut feed = vec![0.0; active.len()];
        ceiling.clear();
        ceiling.resize(active.len(), f64::INFINITY);
        for pass in 0..2 {
            for (j, &i) in active.iter().enumerate() {
                let p = flows[i].from;
                if complete(p) {
                    continue;
                }
                let share = flows[i].bytes / f;
                let held = holds(p);
                if held < piece {
                    // Not one whole piece to forward yet.
                    ceiling[j] = 0.0;
                } else if flows[i].moved >= share * (held - piece) - CAUGHT_UP {
                    ceiling[j] = if pass == 0 { 0.0 } else { feed[j] * share };
                }
            }
            fluid.exact(&links, &ceiling, &mut rates);
            // The rate at which each active flow's feeder is receiving.
            recv_rate.fill(0.0);
            for (&i, &r) in active.iter().zip(&rates) {
                recv_rate[flows[i].to] += r;
            }
            for (j, &i) in active.iter().enumerate() {
                feed[j] = recv_rate[flows[i].from];
            }
        }
        // The next change: a flow starts or ends, a flow catches up with its
        // feeder, or the time limit.
        let mut dt = limit - t;
        for fl in flows.iter().filter(|fl| !fl.done && fl.start > t) {
            dt = dt.min(fl.start - t);
        }
        for (j, &i) in active.iter().enumerate() {
            let fl = &flows[i];
            if rates[j] > 0.0 {
                dt = dt.min((fl.bytes - fl.moved) / rates[j]);
            }
            if !complete(fl.from) && received_all(fl.from) {
                dt = dt.min(last_done[fl.from] - t);
            }
            if !complete(fl.from) && holds(fl.from) < piece && feed[j] > 0.0 {
                dt = dt.min((piece - holds(fl.from)) / feed[j]);
            }
            if !complete(fl.from) && ceiling[j].is_infinite() {
                let share = fl.bytes / f;
                let gap = share * (holds(fl.from) - piece).max(0.0) - fl.moved;
                let closing = rates[j] - feed[j] * share;
                if closing > 0.0 && gap > 0.0 {
                    dt = dt.min(gap / closing);
                }
            }
        }
        let dt = dt.max(0.0);
        m.events += 1;
        for (j, &i) in active.iter().enumerate() {
            let fl = &mut flows[i];
            let moved = (rates[j] * dt).min(fl.bytes - fl.moved);
            fl.moved += moved;
            let (a, b) = (fl.from, fl.to);
            sent[a] += moved;
            received[b] += moved;
            if dc[a] != dc[b] {
                wan_out[dc[a]] += moved;
                wan_in[dc[b]] += moved;
            }
            if fl.moved >= fl.bytes - 0.5 {
                fl.done = true;
                last_done[b] = last_done[b].max(t + dt + lat(a, b));
            }
        }
        t += dt;
        for x in 1..n {
            if m.verified_at[x - 1].is_none()
                && !into[x].is_empty()
                && into[x].iter().all(|&i| flows[i].done)
            {
                m.verified_at[x - 1] = Some(last_done[x]);
                done += 1;
            }
        }
        progress(t, done);
        let stuck = dt == 0.0 && active.is_empty() && !flows.iter().any(|fl| fl.start > t);
        if done == n - 1 || t >= limit || stuck || flows.iter().all(|fl| fl.done) {
            break;
        }
    }
    m.sent = sent.iter().map(|&b| b as u64).collect();
    m.received = received.iter().map(|&b| b as u64).collect();
    m.wan_in = wan_in.iter().map(|&b| b as u64).collect();
    m.wan_out = wan_out.iter().map(|&b| b as u64).collect();
    m.simulated_s = m
        .verified_at
        .iter()
        .flatten()
        .copied()
        .fold(t.min(limit), f64::max)
        .min(limit);
    m
}
