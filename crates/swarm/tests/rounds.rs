//! The swarm core driven by a tiny round-based network: every host's requests are
//! answered after a local or a cross-datacenter delay, uploads are capped per
//! round. Shows completion, the datacenter crossing count, bans and resumption.

use shoal_swarm::{Action, BitSet, Config, Swarm};
use std::collections::HashMap;
use std::time::Duration;

const ROUND: Duration = Duration::from_millis(10);

struct Net {
    dcs: Vec<usize>,
    swarms: Vec<Option<Swarm>>, // None: the seed (holds everything, decides nothing)
    /// (deliver at round, from, to, chunk, good)
    in_flight: Vec<(u64, usize, usize, u32, bool)>,
    /// Pieces that entered each datacenter, per chunk.
    crossings: HashMap<(usize, u32), u32>,
    uploads: Vec<u64>,
    liar: Option<usize>,
    /// `Have`s delivered to a host of another datacenter.
    haves_across: u64,
}

fn host(i: usize) -> String {
    format!("host{i}")
}

impl Net {
    /// Host 0 is the seed in dc 0; the others are spread over `dcs` datacenters.
    fn new(agents: usize, dcs: usize, chunks: usize, cfg: &Config) -> Self {
        let n = agents + 1;
        let dc_of: Vec<usize> = (0..n).map(|i| if i == 0 { 0 } else { i % dcs }).collect();
        let mut swarms = Vec::new();
        for i in 0..n {
            if i == 0 {
                swarms.push(None);
                continue;
            }
            let mut s = Swarm::new(
                Config {
                    dc: format!("dc{}", dc_of[i]),
                    ..cfg.clone()
                },
                &host(i),
                vec![1000; chunks],
                BitSet::new(chunks),
            );
            for (j, dc) in dc_of.iter().enumerate() {
                if j != i {
                    s.add_peer(j as u64, &host(j), &format!("dc{dc}"), j == 0);
                }
            }
            s.peer_bitfield(0, |_| true);
            let members: Vec<String> = (1..n)
                .filter(|&j| j != i && dc_of[j] == dc_of[i])
                .map(host)
                .collect();
            s.set_members(members.iter().map(String::as_str));
            swarms.push(Some(s));
        }
        Net {
            dcs: dc_of,
            swarms,
            in_flight: Vec::new(),
            crossings: HashMap::new(),
            uploads: vec![0; n],
            liar: None,
            haves_across: 0,
        }
    }

    fn has(&self, host: usize, chunk: u32) -> bool {
        match &self.swarms[host] {
            None => true,
            Some(s) => s.have().get(chunk as usize),
        }
    }

    /// Runs until every agent completes or `max_rounds` pass; returns rounds used.
    fn run(&mut self, max_rounds: u64, per_round_upload: u64) -> u64 {
        for round in 0..max_rounds {
            let now = ROUND * round as u32;
            // Deliver what is due.
            let due: Vec<_> = self
                .in_flight
                .iter()
                .filter(|d| d.0 <= round)
                .cloned()
                .collect();
            self.in_flight.retain(|d| d.0 > round);
            for (_, from, to, chunk, good) in due {
                let s = self.swarms[to].as_mut().unwrap();
                let was = s.have().get(chunk as usize);
                s.on_piece(now, from as u64, chunk, good);
                if good && !was && self.dcs[from] != self.dcs[to] {
                    *self.crossings.entry((self.dcs[to], chunk)).or_default() += 1;
                }
            }
            let mut served = vec![0u64; self.swarms.len()];
            for i in 1..self.swarms.len() {
                let s = self.swarms[i].as_mut().unwrap();
                s.tick(now);
                let mut actions = Vec::new();
                while let Some(a) = s.poll_action() {
                    actions.push(a);
                }
                for a in actions {
                    match a {
                        Action::Request { peer, chunk } => {
                            let p = peer as usize;
                            if !self.has(p, chunk) {
                                self.swarms[i]
                                    .as_mut()
                                    .unwrap()
                                    .on_failed(peer, chunk, true);
                            } else if served[p] >= per_round_upload {
                                // Busy this round: the request is turned away
                                // (a real node queues it); not held against it.
                                self.swarms[i].as_mut().unwrap().on_dropped(peer, chunk);
                            } else {
                                served[p] += 1;
                                self.uploads[p] += 1;
                                let delay = if self.dcs[p] == self.dcs[i] { 1 } else { 4 };
                                let good = self.liar != Some(p);
                                self.in_flight.push((round + delay, p, i, chunk, good));
                            }
                        }
                        Action::Have { chunk, across } => {
                            for j in 1..self.swarms.len() {
                                if j != i && (across || self.dcs[j] == self.dcs[i]) {
                                    self.haves_across += u64::from(self.dcs[j] != self.dcs[i]);
                                    self.swarms[j].as_mut().unwrap().peer_have(i as u64, chunk);
                                }
                            }
                        }
                        // Haves here arrive after one round anyway.
                        Action::Tell { .. }
                        | Action::Full { .. }
                        | Action::Cancel { .. }
                        | Action::Ban { .. }
                        | Action::Complete => {}
                    }
                }
            }
            if self.swarms.iter().flatten().all(|s| s.is_complete()) {
                return round;
            }
        }
        max_rounds
    }

    fn max_crossing_ratio(&self, dcs: usize, chunks: usize) -> f64 {
        (1..dcs)
            .map(|dc| {
                let n: u32 = (0..chunks as u32)
                    .map(|c| self.crossings.get(&(dc, c)).copied().unwrap_or(0))
                    .sum();
                n as f64 / chunks as f64
            })
            .fold(0.0, f64::max)
    }
}

/// Windows of 4 and a 2 s patience: what the round net's runs use.
fn small_windows() -> Config {
    Config {
        window: 4,
        local_window: 4,
        seed_window: 4,
        cross_dc_patience: Duration::from_secs(2),
        ..Config::default()
    }
}

#[test]
fn locality_brings_each_chunk_into_each_datacenter_about_once() {
    let (agents, dcs, chunks) = (24, 3, 200);
    let cfg = small_windows();
    let mut net = Net::new(agents, dcs, chunks, &cfg);
    let rounds = net.run(5_000, 4);
    assert!(rounds < 5_000, "did not complete");
    let ratio = net.max_crossing_ratio(dcs, chunks);

    let plain = Config {
        locality: false,
        ..cfg
    };
    let mut bt = Net::new(agents, dcs, chunks, &plain);
    let bt_rounds = bt.run(5_000, 4);
    assert!(bt_rounds < 5_000, "bittorrent mode did not complete");
    let bt_ratio = bt.max_crossing_ratio(dcs, chunks);
    println!(
        "locality: {rounds} rounds, {ratio:.2} copies into the worst remote dc; \
         random: {bt_rounds} rounds, {bt_ratio:.2} copies; seed uploads {} vs {} pieces",
        net.uploads[0], bt.uploads[0]
    );
    assert!(
        ratio <= 1.1,
        "each chunk should enter each datacenter about once: {ratio}"
    );
    assert!(
        bt_ratio > 2.0 * ratio,
        "locality should cut crossings: {bt_ratio} vs {ratio}"
    );
    // Agents serve each other: the seed sends far less than everyone receives.
    assert!(net.uploads[0] < (agents * chunks / 4) as u64);
}

#[test]
fn a_lying_peer_is_banned_and_everyone_completes() {
    let cfg = Config {
        window: 4,
        local_window: 4,
        ..Config::default()
    };
    let mut net = Net::new(8, 1, 50, &cfg);
    net.liar = Some(3);
    let rounds = net.run(5_000, 4);
    assert!(rounds < 5_000, "did not complete despite the liar");
    for (i, s) in net.swarms.iter().enumerate() {
        if let Some(s) = s
            && i != 3
        {
            assert!(
                s.stats.pieces_bad == 0 || s.is_banned(3),
                "host {i} kept the liar"
            );
        }
    }
    let banned = net
        .swarms
        .iter()
        .flatten()
        .filter(|s| s.is_banned(3))
        .count();
    assert!(banned > 0, "somebody must have caught the liar");
}

#[test]
fn a_restarted_host_fetches_only_what_it_lacks() {
    let chunks = 40;
    let mut have = BitSet::new(chunks);
    for i in 0..30 {
        have.set(i);
    }
    let mut s = Swarm::new(Config::default(), "me", vec![1000; chunks], have);
    s.set_members([]);
    s.add_peer(1, "seed", "", true);
    s.peer_bitfield(1, |_| true);
    let mut asked = Vec::new();
    let mut now = Duration::ZERO;
    while !s.is_complete() {
        s.tick(now);
        while let Some(a) = s.poll_action() {
            if let Action::Request { peer, chunk } = a {
                asked.push(chunk);
                s.on_piece(now, peer, chunk, true);
            }
        }
        now += ROUND;
    }
    asked.sort();
    assert_eq!(asked, (30..40).collect::<Vec<u32>>());
    assert_eq!(s.stats.bytes_in, 10_000);
}

#[test]
fn timeouts_cancel_and_shrink_the_window() {
    let mut s = Swarm::new(
        Config {
            window: 4,
            local_window: 4,
            request_timeout: Duration::from_secs(1),
            ..Config::default()
        },
        "me",
        vec![1000; 10],
        BitSet::new(10),
    );
    s.add_peer(1, "slow", "", false);
    s.peer_bitfield(1, |_| true);
    s.tick(Duration::ZERO);
    let requests = std::iter::from_fn(|| s.poll_action()).count();
    assert_eq!(requests, 4);
    s.tick(Duration::from_secs(2));
    let actions: Vec<_> = std::iter::from_fn(|| s.poll_action()).collect();
    let cancels = actions
        .iter()
        .filter(|a| matches!(a, Action::Cancel { .. }))
        .count();
    let again = actions
        .iter()
        .filter(|a| matches!(a, Action::Request { .. }))
        .count();
    assert_eq!(cancels, 4);
    assert_eq!(again, 2, "window halves after a timeout");
    assert_eq!(s.stats.timeouts, 4);
}

/// A neighbour is asked for a few pieces at a time, a peer across for a
/// window sized to its long round trip; with locality off too, since the
/// window follows where the peer is.
#[test]
fn neighbours_get_the_local_window_and_peers_across_the_full_one() {
    for locality in [true, false] {
        let mut s = Swarm::new(
            Config {
                dc: "a".into(),
                locality,
                window: 6,
                local_window: 2,
                cross_window: 64,
                cross_dc_patience: Duration::ZERO,
                ..Config::default()
            },
            "me",
            vec![1000; 40],
            BitSet::new(40),
        );
        s.add_peer(1, "near", "a", false);
        s.add_peer(2, "far", "b", false);
        s.set_members(["me"]);
        s.peer_bitfield(1, |c| c < 20);
        s.peer_bitfield(2, |c| c >= 20);
        s.tick(Duration::from_secs(1));
        let mut asked: HashMap<u64, usize> = HashMap::new();
        while let Some(a) = s.poll_action() {
            if let Action::Request { peer, .. } = a {
                *asked.entry(peer).or_default() += 1;
            }
        }
        assert_eq!(asked.get(&1), Some(&2), "locality {locality}: {asked:?}");
        assert_eq!(asked.get(&2), Some(&6), "locality {locality}: {asked:?}");
    }
}

/// A swarm of 40 chunks whose one peer (1, in this datacenter) holds them
/// all; a window of 4 there and a `Busy` backoff of 100 ms.
fn one_holder() -> Swarm {
    let mut s = Swarm::new(
        Config {
            local_window: 4,
            busy_backoff: Duration::from_millis(100),
            ..Config::default()
        },
        "me",
        vec![1000; 40],
        BitSet::new(40),
    );
    s.add_peer(1, "holder", "", false);
    s.peer_bitfield(1, |_| true);
    s
}

/// The chunks a swarm asks for when it ticks at `now`.
fn asked(s: &mut Swarm, now: Duration) -> Vec<u32> {
    s.tick(now);
    std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Request { chunk, .. } => Some(chunk),
            _ => None,
        })
        .collect()
}

/// A peer that says `Busy` is asked for half as many pieces at a time, once
/// per burst of `Busy`s, and for one more per piece it delivers, back up to
/// its window.
#[test]
fn busy_halves_a_window_once_per_burst_and_pieces_grow_it_back() {
    let mut s = one_holder();
    let first = asked(&mut s, Duration::ZERO);
    assert_eq!(first.len(), 4);
    for &c in &first {
        s.on_busy(Duration::ZERO, 1, c);
    }
    assert!(
        asked(&mut s, Duration::from_millis(50)).is_empty(),
        "backing off"
    );
    let second = asked(&mut s, Duration::from_millis(200));
    assert_eq!(second.len(), 2, "four Busys at once halve the window once");
    let t = Duration::from_millis(210);
    for &c in &second {
        s.on_piece(t, 1, c, true);
    }
    assert_eq!(asked(&mut s, t).len(), 4, "two pieces grew it back to 4");
    assert_eq!(s.stats.busy, 4);
}

#[test]
fn a_late_piece_that_grows_a_full_window_gets_the_peer_asked_again() {
    let mut s = one_holder();
    let first = asked(&mut s, Duration::ZERO);
    assert_eq!(first.len(), 4);
    // Two Busys halve the window to 2, and the two requests still out fill it.
    s.on_busy(Duration::ZERO, 1, first[0]);
    s.on_busy(Duration::ZERO, 1, first[1]);
    assert!(asked(&mut s, Duration::from_millis(50)).is_empty(), "full");
    // The piece of a request that was answered Busy comes after all (its
    // answer crossed the Busy): the window grows to 3 with 2 out.
    s.on_piece(Duration::from_millis(60), 1, first[0], true);
    assert_eq!(
        asked(&mut s, Duration::from_millis(200)).len(),
        1,
        "the room the piece made is used"
    );
}

/// The chunks a swarm asks of peer 9 (the one in another datacenter) at `now`.
/// Requests to local peers are answered at once when `answer_local`.
fn remote_requests_with(s: &mut Swarm, now: Duration, answer_local: bool) -> Vec<u32> {
    s.tick(now);
    let actions: Vec<Action> = std::iter::from_fn(|| s.poll_action()).collect();
    let mut remote = Vec::new();
    for a in actions {
        match a {
            Action::Request { peer: 9, chunk } => remote.push(chunk),
            Action::Request { peer, chunk } if answer_local => s.on_piece(now, peer, chunk, true),
            _ => {}
        }
    }
    remote
}

fn remote_requests(s: &mut Swarm, now: Duration) -> Vec<u32> {
    remote_requests_with(s, now, true)
}

#[test]
fn waits_for_a_progressing_assignee_but_not_a_silent_one() {
    let chunks = 64;
    let cfg = Config {
        window: 64,
        local_window: 64,
        cross_window: 64, // this host's whole share goes out in the first round
        cross_dc_patience: Duration::from_secs(3),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
    s.add_peer(1, "neighbour", "", false); // same datacenter, holds nothing yet
    s.set_members(["neighbour"]);
    s.add_peer(9, "far", "far", false); // another datacenter, holds everything
    s.peer_bitfield(9, |_| true);
    let mine = remote_requests(&mut s, Duration::ZERO);
    assert!(
        !mine.is_empty() && mine.len() < chunks,
        "rendezvous splits the work: {}",
        mine.len()
    );
    for &c in &mine {
        s.on_piece(Duration::ZERO, 9, c, true);
    }
    // The neighbour keeps announcing chunks: even long past the patience, its
    // share is not fetched across a second time.
    let theirs: Vec<u32> = (0..chunks as u32).filter(|c| !mine.contains(c)).collect();
    for (k, &c) in theirs.iter().take(theirs.len() / 2).enumerate() {
        let t = Duration::from_secs(1 + k as u64);
        s.peer_have(1, c);
        let r = remote_requests(&mut s, t);
        assert!(
            r.is_empty(),
            "fetched {r:?} across at {t:?} while the assignee progressed (k={k})"
        );
    }
    // It goes quiet: after the patience, the rest comes across from here.
    let quiet_from = Duration::from_secs(1 + (theirs.len() / 2) as u64);
    assert!(remote_requests(&mut s, quiet_from + Duration::from_secs(1)).is_empty());
    let late = remote_requests(&mut s, quiet_from + Duration::from_secs(4));
    assert_eq!(late.len(), theirs.len() - theirs.len() / 2);
}

#[test]
fn a_peer_that_keeps_timing_out_stops_blocking() {
    let cfg = Config {
        window: 4,
        local_window: 4,
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; 4], BitSet::new(4));
    s.add_peer(1, "dead-neighbour", "", false);
    s.set_members([]);
    s.peer_bitfield(1, |_| true);
    s.add_peer(9, "far", "far", false);
    s.peer_bitfield(9, |_| true);
    // Everything goes to the local holder, which never answers.
    assert!(remote_requests_with(&mut s, Duration::ZERO, false).is_empty());
    assert!(remote_requests_with(&mut s, Duration::from_secs(2), false).is_empty());
    // The second round of timeouts drops it: the far peer is asked now.
    let far = remote_requests_with(&mut s, Duration::from_secs(4), false);
    assert_eq!(far.len(), 4, "{far:?}");
    assert_eq!(s.peer_count(), 1);
}

/// Requests sent at `now`, by peer, without answering them.
fn requests_at(s: &mut Swarm, now: Duration) -> Vec<(u64, u32)> {
    s.tick(now);
    let mut out = Vec::new();
    while let Some(a) = s.poll_action() {
        if let Action::Request { peer, chunk } = a {
            out.push((peer, chunk));
        }
    }
    out
}

/// A swarm in datacenter `dc` with one neighbour-less view: the seed in
/// `seed_dc` and one agent in `other_dc`, both connected.
fn homed(dc: &str, seed_dc: &str, other_dc: &str, chunks: usize) -> Swarm {
    let cfg = Config {
        dc: dc.into(),
        window: 64,
        local_window: 64,
        seed_window: 64,
        cross_window: 64,
        cross_dc_patience: Duration::from_secs(3),
        ..Config::default()
    };
    let mut s = Swarm::new(
        cfg,
        &format!("in-{dc}"),
        vec![1000; chunks],
        BitSet::new(chunks),
    );
    s.set_members([]);
    s.add_peer(1, "seed", seed_dc, true);
    s.peer_bitfield(1, |_| true);
    s.add_peer(2, &format!("in-{other_dc}"), other_dc, false);
    s
}

#[test]
fn the_seed_sends_each_chunk_into_one_home_datacenter() {
    let chunks = 64;
    // Two datacenters, the seed in the first: each asks the seed for its own
    // chunks only, and together they ask for every chunk exactly once.
    let mut a = homed("a", "a", "b", chunks);
    let mut b = homed("b", "a", "a", chunks);
    let from_seed = |s: &mut Swarm| -> Vec<u32> {
        let r = requests_at(s, Duration::ZERO);
        assert!(r.iter().all(|&(p, _)| p == 1), "{r:?}");
        let mut c: Vec<u32> = r.into_iter().map(|(_, c)| c).collect();
        c.sort_unstable();
        c
    };
    let (ra, rb) = (from_seed(&mut a), from_seed(&mut b));
    assert!(
        ra.len() > chunks / 4 && rb.len() > chunks / 4,
        "{ra:?} {rb:?}"
    );
    let mut all: Vec<u32> = ra.iter().chain(&rb).copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..chunks as u32).collect::<Vec<_>>(), "a partition");

    // A chunk homed across comes from the agent that took it from the seed.
    let c = rb[0];
    a.peer_have(2, c);
    assert_eq!(requests_at(&mut a, Duration::from_secs(1)), vec![(2, c)]);

    // The other datacenter goes quiet (cut off, dead): after the patience
    // its chunks are taken from the seed here.
    let late = requests_at(&mut a, Duration::from_secs(5));
    let mut late: Vec<u32> = late.into_iter().map(|(_, c)| c).collect();
    late.sort_unstable();
    assert_eq!(late, rb[1..].to_vec());

    // A seed with no other datacenter live sends this one everything.
    let mut alone = homed("a", "b", "a", chunks);
    assert_eq!(from_seed(&mut alone).len(), chunks);
}

#[test]
fn a_home_that_brings_nothing_new_stalls_nobody() {
    let chunks = 64;
    let mut a = homed("a", "a", "b", chunks);
    let mine: Vec<u32> = requests_at(&mut a, Duration::ZERO)
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    for &c in &mine {
        a.on_piece(Duration::ZERO, 1, c, true);
    }
    // The other datacenter stays live (it keeps copying this host's chunks)
    // but never gets one of its own from the seed, as if it could not reach
    // it: once no new chunk has appeared for the patience, the seed is
    // asked for the rest here.
    let mut asked = Vec::new();
    for (k, &c) in mine.iter().enumerate().take(5) {
        let t = Duration::from_millis(500 * k as u64);
        a.peer_have(2, c);
        asked.extend(requests_at(&mut a, t));
    }
    assert!(asked.is_empty(), "{asked:?}");
    let rest = requests_at(&mut a, Duration::from_secs(5));
    assert_eq!(rest.len(), chunks - mine.len(), "{rest:?}");
    assert!(rest.iter().all(|&(p, _)| p == 1));
}

/// A peer that claims every chunk and fails every request at once (resets
/// its streams) is banned after a run of failures, and the chunks come from
/// an honest peer instead.
#[test]
fn a_peer_whose_requests_always_fail_is_banned() {
    let mut s = Swarm::new(Config::default(), "me", vec![1000; 64], BitSet::new(64));
    s.add_peer(1, "breaks", "", false);
    s.peer_bitfield(1, |_| true);
    s.add_peer(2, "honest", "", false);
    s.peer_bitfield(2, |_| true);
    let mut now = Duration::ZERO;
    let mut from_honest = 0;
    for _ in 0..2000 {
        s.tick(now);
        while let Some(a) = s.poll_action() {
            if let Action::Request { peer, chunk } = a {
                if peer == 1 {
                    s.on_failed(1, chunk, false);
                } else {
                    from_honest += 1;
                    s.on_piece(now, peer, chunk, true);
                }
            }
        }
        if s.missing() == 0 {
            break;
        }
        now += Duration::from_millis(10);
    }
    assert!(s.is_banned(1), "the failing peer was not banned");
    assert_eq!(
        s.missing(),
        0,
        "the release did not complete from the honest peer"
    );
    assert_eq!(from_honest, 64);
}

#[test]
fn a_host_that_is_no_crosser_leaves_every_crossing_to_the_crossers() {
    let chunks = 64;
    let cfg = Config {
        window: 64,
        local_window: 64,
        cross_window: 64,
        cross_dc_patience: Duration::from_secs(3),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
    s.add_peer(1, "crosser", "", false);
    s.set_members(["crosser"]);
    s.set_crosser(false);
    s.add_peer(9, "far", "far", false);
    s.peer_bitfield(9, |_| true);
    // As a crosser it would take its rendezvous share; as none, nothing,
    // while the crosser shows progress.
    for t in 0..3 {
        let now = Duration::from_millis(900 * t);
        s.peer_have(1, t as u32);
        assert!(remote_requests(&mut s, now).is_empty(), "at {now:?}");
    }
    // The crosser goes quiet: past the patience, this host takes over.
    let late = remote_requests(&mut s, Duration::from_secs(6));
    assert!(!late.is_empty());
}

#[test]
fn a_busy_peer_is_left_alone_for_a_while_and_its_chunk_goes_elsewhere() {
    let cfg = Config {
        window: 1,
        local_window: 1,
        busy_backoff: Duration::from_millis(100),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; 1], BitSet::new(1));
    s.set_members([]);
    s.add_peer(1, "popular", "", false);
    s.peer_have(1, 0);
    s.schedule(Duration::ZERO);
    assert_eq!(s.poll_action(), Some(Action::Request { peer: 1, chunk: 0 }));
    s.on_busy(Duration::from_millis(10), 1, 0);
    // Nobody else has it yet, and the busy peer is not asked again at once.
    s.schedule(Duration::from_millis(20));
    assert_eq!(s.poll_action(), None);
    let states = |s: &Swarm, ms| s.peer_states(Duration::from_millis(ms));
    let st = states(&s, 20);
    assert_eq!((st.peers, st.backing_off, st.requests), (1, 1, 0));
    // Another holder appears: it gets the request.
    s.add_peer(2, "other", "", false);
    s.peer_have(2, 0);
    s.schedule(Duration::from_millis(30));
    assert_eq!(s.poll_action(), Some(Action::Request { peer: 2, chunk: 0 }));
    let st = states(&s, 30);
    assert_eq!(
        (st.peers, st.backing_off, st.window_full, st.requests),
        (2, 1, 1, 1)
    );
    // Past the backoff, the busy peer may be asked again (an endgame copy).
    s.schedule(Duration::from_millis(200));
    assert_eq!(s.poll_action(), Some(Action::Request { peer: 1, chunk: 0 }));
    let st = states(&s, 200);
    assert_eq!((st.backing_off, st.window_full, st.requests), (0, 2, 2));
}

#[test]
fn a_pause_cancels_what_is_in_flight_asks_nothing_and_keeps_every_peer() {
    // The agent's store is full: it pauses for longer than the request
    // timeout, ticking all along (the first version issued requests while
    // paused that nobody sent; their timeouts struck both peers off for
    // good and the agent never finished).
    let cfg = Config {
        window: 4,
        local_window: 4,
        request_timeout: Duration::from_secs(1),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; 16], BitSet::new(16));
    s.set_members([]);
    for p in [1, 2] {
        s.add_peer(p, &host(p as usize), "", false);
        s.peer_bitfield(p, |_| true);
    }
    let first = requests_at(&mut s, Duration::ZERO);
    assert_eq!(first.len(), 8);
    s.pause(Duration::from_millis(10), Duration::from_secs(5));
    let cancelled: Vec<(u64, u32)> = std::iter::from_fn(|| s.poll_action())
        .filter_map(|a| match a {
            Action::Cancel { peer, chunk } => Some((peer, chunk)),
            _ => None,
        })
        .collect();
    let mut expected = first.clone();
    expected.sort();
    let mut got = cancelled;
    got.sort();
    assert_eq!(got, expected, "every request in flight is cancelled");
    let mut t = Duration::from_millis(50);
    while t < Duration::from_secs(5) {
        assert_eq!(requests_at(&mut s, t), [], "asked at {t:?} while paused");
        t += Duration::from_millis(50);
    }
    assert_eq!(s.peer_count(), 2, "a pause strikes no peer off");
    assert_eq!(s.stats.timeouts, 0);
    // Past the pause it picks up where it was: full windows at both peers.
    let again = requests_at(&mut s, Duration::from_secs(5));
    assert_eq!(again.len(), 8, "{again:?}");
    for (peer, chunk) in again {
        s.on_piece(Duration::from_secs(5), peer, chunk, true);
    }
    let mut t = Duration::from_secs(5);
    while !s.is_complete() {
        t += Duration::from_millis(50);
        for (peer, chunk) in requests_at(&mut s, t) {
            s.on_piece(t, peer, chunk, true);
        }
        assert!(t < Duration::from_secs(10), "never completed");
    }
}

#[test]
fn a_chunk_from_a_neighbour_is_announced_across_only_when_its_bringer_reached_every_crosser() {
    let chunks = 3;
    for (locality, meshed) in [(true, false), (true, true), (false, true)] {
        let cfg = Config {
            dc: "a".into(),
            locality,
            ..Config::default()
        };
        let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
        s.set_members([]);
        s.set_meshed(meshed);
        s.add_peer(1, "seed", "a", true);
        s.peer_bitfield(1, |_| true);
        s.add_peer(2, "neighbour", "a", false);
        s.peer_bitfield(2, |i| i == 0);
        s.add_peer(3, "b1", "b", false);
        s.peer_bitfield(3, |i| i == 1);
        // Chunk 0 from the neighbour, 1 from across, 2 from the seed.
        for (peer, chunk) in [(2, 0), (3, 1), (1, 2)] {
            s.on_piece(Duration::ZERO, peer, chunk, true);
        }
        let across: Vec<(u32, bool)> = std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Have { chunk, across } => Some((chunk, across)),
                _ => None,
            })
            .collect();
        let neighbours_only = locality && meshed;
        assert_eq!(
            across,
            vec![(0, !neighbours_only), (1, true), (2, true)],
            "locality {locality}, meshed {meshed}"
        );
    }
}

/// A neighbour that leaves may have been the bringer of a chunk announced
/// only here, its batch across not yet sent: the chunks it held are then
/// announced across after all, once; the others stay untold.
#[test]
fn chunks_told_only_here_go_across_when_a_neighbour_that_held_them_leaves() {
    let chunks = 4;
    let cfg = Config {
        dc: "a".into(),
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
    s.set_members([]);
    s.set_meshed(true);
    s.add_peer(2, "n1", "a", false);
    s.peer_bitfield(2, |i| i < 2);
    s.add_peer(3, "n2", "a", false);
    s.peer_bitfield(3, |i| i >= 2);
    s.add_peer(4, "b1", "b", false);
    for c in 0..4 {
        s.on_piece(Duration::ZERO, if c < 2 { 2 } else { 3 }, c, true);
    }
    let haves = |s: &mut Swarm| -> Vec<(u32, bool)> {
        std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Have { chunk, across } => Some((chunk, across)),
                _ => None,
            })
            .collect()
    };
    assert!(haves(&mut s).iter().all(|&(_, across)| !across));
    // A peer across leaving changes nothing.
    s.remove_peer(4);
    assert_eq!(haves(&mut s), vec![]);
    // n1 held chunks 0 and 1.
    s.remove_peer(2);
    assert_eq!(haves(&mut s), vec![(0, true), (1, true)]);
    s.add_peer(5, "n1", "a", false);
    s.remove_peer(5);
    assert_eq!(haves(&mut s), vec![], "told once");
    // No longer meshed: the rest goes across.
    s.set_meshed(false);
    assert_eq!(haves(&mut s), vec![(2, true), (3, true)]);
}

#[test]
fn a_meshed_swarm_completes_and_still_brings_each_chunk_in_about_once() {
    // Every host here lists every other, so each bringer reaches every
    // crosser across and the others tell only their neighbours.
    let (agents, dcs, chunks) = (24, 3, 200);
    let cfg = small_windows();
    let mut plain = Net::new(agents, dcs, chunks, &cfg);
    assert!(plain.run(5_000, 4) < 5_000, "did not complete");
    let mut net = Net::new(agents, dcs, chunks, &cfg);
    for s in net.swarms.iter_mut().flatten() {
        s.set_meshed(true);
    }
    let rounds = net.run(5_000, 4);
    assert!(rounds < 5_000, "did not complete");
    let ratio = net.max_crossing_ratio(dcs, chunks);
    assert!(ratio <= 1.1, "{ratio} copies into the worst remote dc");
    // Each chunk is announced across by about one host per datacenter
    // instead of by all eight.
    println!(
        "Haves across: {} meshed, {} not",
        net.haves_across, plain.haves_across
    );
    assert!(
        net.haves_across * 4 < plain.haves_across,
        "{} against {}",
        net.haves_across,
        plain.haves_across
    );
}

/// A chunk this host brought first (from the seed) is told at once to one
/// agent in each other datacenter, the one ranked highest for it there, so
/// that datacenter need not wait for the batched `Have`s; a chunk an agent
/// already held is left to the batch.
#[test]
fn a_fresh_chunk_is_told_at_once_to_each_other_datacenter() {
    let chunks = 64;
    let cfg = Config {
        dc: "a".into(),
        window: 64,
        local_window: 64,
        seed_window: 64,
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
    s.set_members([]);
    s.add_peer(1, "seed", "a", true);
    s.peer_bitfield(1, |_| true);
    s.add_peer(2, "neighbour", "a", false);
    for (id, host, dc) in [(3, "b1", "b"), (4, "b2", "b"), (5, "c1", "c")] {
        s.add_peer(id, host, dc, false);
    }
    let asked = requests_at(&mut s, Duration::ZERO);
    assert!(!asked.is_empty() && asked.iter().all(|&(p, _)| p == 1));
    let (mut told_b, mut told_c) = (Vec::new(), 0);
    for &(_, c) in &asked {
        s.on_piece(Duration::ZERO, 1, c, true);
        let tells: Vec<u64> = std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Tell { peer, chunk } => {
                    assert_eq!(chunk, c);
                    Some(peer)
                }
                _ => None,
            })
            .collect();
        // One agent per other datacenter, never a neighbour or the seed.
        assert_eq!(tells.iter().filter(|&&p| p == 3 || p == 4).count(), 1);
        assert_eq!(tells.iter().filter(|&&p| p == 5).count(), 1);
        assert_eq!(tells.len(), 2, "{tells:?}");
        told_b.extend(tells.iter().filter(|&&p| p != 5));
        told_c += 1;
    }
    // The rank differs by chunk, so both agents of b are told some.
    assert!(told_b.contains(&3) && told_b.contains(&4), "{told_b:?}");
    assert_eq!(told_c, asked.len());

    // A chunk an agent across held first is left to the batch.
    let c = (0..chunks as u32)
        .find(|c| !asked.iter().any(|&(_, a)| a == *c))
        .expect("a chunk homed across");
    s.peer_have(5, c);
    let r = requests_at(&mut s, Duration::from_secs(1));
    assert_eq!(r, vec![(5, c)]);
    s.on_piece(Duration::from_secs(1), 5, c, true);
    assert!(
        !std::iter::from_fn(|| s.poll_action()).any(|a| matches!(a, Action::Tell { .. })),
        "not fresh: no Tell"
    );
}

#[test]
fn a_host_with_as_many_pieces_arriving_as_full_at_says_it_is_full_and_then_has_room() {
    let cfg = Config {
        local_window: 4,
        full_at: 2,
        ..Config::default()
    };
    let mut s = Swarm::new(cfg, "me", vec![1000; 8], BitSet::new(8));
    s.set_members([]);
    s.add_peer(1, "a", "", false);
    s.peer_bitfield(1, |_| true);
    let asked = requests_at(&mut s, Duration::ZERO);
    assert_eq!(asked.len(), 4);
    let fulls = |s: &mut Swarm| -> Vec<bool> {
        std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Full { full } => Some(full),
                _ => None,
            })
            .collect()
    };
    let t = Duration::from_millis(1);
    // A piece not asked for (or out of range) does not count, and the same
    // piece starting twice counts once.
    s.on_started(t, 1, 100);
    s.on_started(t, 2, asked[0].1);
    s.on_started(t, asked[0].0, asked[0].1);
    s.on_started(t, asked[0].0, asked[0].1);
    assert_eq!(fulls(&mut s), [] as [bool; 0]);
    s.on_started(t, asked[1].0, asked[1].1);
    assert_eq!(fulls(&mut s), [true], "two arriving: full");
    s.on_started(t, asked[2].0, asked[2].1);
    assert_eq!(fulls(&mut s), [] as [bool; 0], "told once");
    s.on_piece(t, asked[0].0, asked[0].1, true);
    assert_eq!(fulls(&mut s), [] as [bool; 0], "still two arriving");
    s.on_busy(t, asked[1].0, asked[1].1);
    assert_eq!(fulls(&mut s), [false], "one arriving: room again");
    assert_eq!(s.stats.full, 1);
}

/// Crossers in two groups: this host (group 0) fetches across only chunks
/// of its group, and a chunk fresh from the seed is told, in each other
/// datacenter, to the crosser of the chunk's group. Without groups both go
/// to any crosser.
#[test]
fn with_crossers_in_groups_a_chunk_crosses_within_its_group() {
    use shoal_swarm::chunk_group;
    let chunks = 64;
    let of = [
        ("me", 0),
        ("a1", 0),
        ("a2", 1),
        ("b0", 0),
        ("b1", 1),
        ("c0", 0),
        ("c1", 1),
    ];
    for grouped in [true, false] {
        let cfg = Config {
            dc: "a".into(),
            ..Config::default()
        };
        let mut s = Swarm::new(cfg, "me", vec![1000; chunks], BitSet::new(chunks));
        s.set_members(["a1", "a2"]);
        s.set_meshed(true);
        s.set_groups(grouped.then_some((2, of)));
        s.add_peer(1, "seed", "a", true);
        s.peer_bitfield(1, |_| true);
        let names = ["b0", "b1", "c0", "c1"];
        for (i, h) in names.iter().enumerate() {
            s.add_peer(10 + i as u64, h, &h[..1], false);
        }
        // Across, b0 and b1 hold every chunk.
        s.peer_bitfield(10, |_| true);
        s.peer_bitfield(11, |_| true);
        s.schedule(Duration::from_secs(1));
        let asked: Vec<(u64, u32)> = std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Request { peer, chunk } => Some((peer, chunk)),
                _ => None,
            })
            .collect();
        let across: Vec<u32> = asked.iter().filter(|r| r.0 >= 10).map(|r| r.1).collect();
        assert!(
            !across.is_empty(),
            "grouped {grouped}: nothing asked across"
        );
        let outside = across.iter().filter(|&&c| chunk_group(c, 2) != 0).count();
        if grouped {
            assert_eq!(outside, 0, "asked across for another group's chunks");
        } else {
            assert!(
                outside > 0,
                "without groups every crosser shares the chunks"
            );
        }

        // Chunks fresh from the seed (the others' bitfields say none has
        // them): each is told to one crosser in b and one in c.
        let mut s = Swarm::new(
            Config {
                dc: "a".into(),
                ..Config::default()
            },
            "me",
            vec![1000; chunks],
            BitSet::new(chunks),
        );
        s.set_members(["a1", "a2"]);
        s.set_meshed(true);
        s.set_groups(grouped.then_some((2, of)));
        s.add_peer(1, "seed", "a", true);
        s.peer_bitfield(1, |_| true);
        for (i, h) in names.iter().enumerate() {
            s.add_peer(10 + i as u64, h, &h[..1], false);
        }
        let mine: Vec<u32> = (0..chunks as u32)
            .filter(|&c| chunk_group(c, 2) == 0)
            .collect();
        for &c in &mine {
            s.on_piece(Duration::ZERO, 1, c, true);
        }
        let told: Vec<(u64, u32)> = std::iter::from_fn(|| s.poll_action())
            .filter_map(|a| match a {
                Action::Tell { peer, chunk } => Some((peer, chunk)),
                _ => None,
            })
            .collect();
        assert_eq!(told.len(), 2 * mine.len(), "one crosser per datacenter");
        let to_other_group = told.iter().filter(|t| t.0 == 11 || t.0 == 13).count();
        if grouped {
            assert_eq!(to_other_group, 0, "{told:?}");
        } else {
            assert!(to_other_group > 0, "{told:?}");
        }
    }
}
