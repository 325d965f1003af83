//! The flow-level model: its timing against what the links allow, its
//! sharing of a bottleneck, and the real swarm decisions at a scale the packet
//! model cannot run on one machine.

use shoal_netsim::bound::lower_bound;
use shoal_netsim::flow::{self, FlowScenario, Params, engine};
use shoal_netsim::strategy::Strategy;
use shoal_netsim::topology::Topology;
use std::time::Duration;

fn topo(text: &str) -> Topology {
    Topology::parse(text).expect("test topology parses")
}

/// One target behind a seed: `hosts` targets in one datacenter, 80 Mbit/s
/// (10 MB/s) links, 5 ms one way.
fn one_dc(hosts: usize) -> Topology {
    topo(&format!(
        r#"
name = "one-dc"
[network]
intra_dc_ms = 5.0
inter_dc_ms = 20.0
[seed]
dc = "a"
upload_mbit = 80
download_mbit = 80
[[dc]]
name = "a"
hosts = {hosts}
upload_mbit = 80
download_mbit = 80
wan_in_mbit = 1000
wan_out_mbit = 1000
"#
    ))
}

fn params(piece: u64) -> Params {
    Params {
        piece,
        step: Duration::from_millis(1),
        time_limit: Duration::from_secs(600),
        seed: 1,
        threads: 1,
        manifest: 0,
    }
}

#[test]
fn a_run_is_the_same_on_one_thread_and_on_several() {
    // Hosts decide in parallel within a step (the engine's schedule_dirty);
    // 200 hosts put well over the parallel threshold's 64 to work at once.
    let t = Topology::builtin("5dc-200").expect("shipped");
    let f = 2 << 20;
    let run = |threads| {
        let p = Params {
            piece: 64 << 10,
            step: Duration::from_millis(2),
            threads,
            ..params(0)
        };
        engine::simulate(&t, f, Strategy::Shoal, &p, &|_, _| {})
    };
    let (one, four) = (run(1), run(4));
    assert_eq!(one.verified_at.iter().flatten().count(), 200);
    assert_eq!(one.verified_at, four.verified_at);
    assert_eq!(one.sent, four.sent);
    assert_eq!(one.wan_in, four.wan_in);
    assert_eq!(one.events, four.events);
}

#[test]
fn a_transfer_takes_the_time_its_link_and_latency_allow() {
    // 20 MB at 10 MB/s: 2 s, plus the tracker's and the handshake's round
    // trips and the pieces' one-way latency (tens of ms).
    let t = one_dc(1);
    let f = 20_000_000;
    let m = engine::simulate(&t, f, Strategy::Central, &params(256 << 10), &|_, _| {});
    let took = m.verified_at[0].expect("the target finished");
    let model = f as f64 / 10e6;
    assert!(
        (took - model).abs() / model < 0.10,
        "took {took:.3} s, the link allows {model:.3} s"
    );
    assert_eq!(m.received[1], f, "every byte arrived once");
    assert_eq!(m.sent[0], f);
}

#[test]
fn agents_join_down_the_manifest_tree() {
    // 7 agents of one datacenter fetch a 2 MB manifest as the agent does: the
    // first from the tracker, two from it, four from those two (a binary
    // tree three deep, each parent sending to its two children at once), and
    // only then join and fetch the 64 KiB release.
    let t = one_dc(7);
    let (f, manifest) = (64 << 10, 2_000_000u64);
    let rate = 10e6 / flow::wire_factor(&t);
    let with = engine::simulate(
        &t,
        f,
        Strategy::Shoal,
        &Params {
            manifest,
            ..params(64 << 10)
        },
        &|_, _| {},
    );
    let without = engine::simulate(&t, f, Strategy::Shoal, &params(64 << 10), &|_, _| {});
    let tree = 5.0 * manifest as f64 / rate;
    let (a, b) = (last(&with), last(&without));
    assert!(b < 0.15, "without a manifest the release takes {b:.3} s");
    assert!(
        a >= tree && a < tree + 0.15,
        "last agent done at {a:.3} s; the tree takes {tree:.3} s"
    );
    // One copy leaves the deploy host; every agent receives one.
    assert!(
        with.sent[0] >= manifest && with.sent[0] < 2 * manifest,
        "the deploy host sent {} bytes",
        with.sent[0]
    );
    for (x, &r) in with.received.iter().enumerate().skip(1) {
        // Sums of floats: within a byte.
        assert!(r + 1 >= manifest + f, "agent {x} received {r} bytes");
    }
}

#[test]
fn hosts_behind_one_uplink_share_it() {
    // Central: four targets share the seed's 10 MB/s, so each gets 2.5 MB/s
    // and all finish together, at four times one target's time.
    let t = one_dc(4);
    let f = 10_000_000;
    let m = engine::simulate(&t, f, Strategy::Central, &params(256 << 10), &|_, _| {});
    let times: Vec<f64> = m.verified_at.iter().map(|t| t.expect("finished")).collect();
    let model = 4.0 * f as f64 / 10e6;
    for &x in &times {
        assert!(
            (x - model).abs() / model < 0.10,
            "{times:?} against {model}"
        );
    }
    // shoal on the same hosts: the seed sends each byte about once and the
    // targets pass pieces on, so it is far faster than central.
    let s = engine::simulate(&t, f, Strategy::Shoal, &params(64 << 10), &|_, _| {});
    let slowest = s
        .verified_at
        .iter()
        .map(|t| t.expect("finished"))
        .fold(0.0, f64::max);
    assert!(
        slowest < model / 2.0,
        "shoal {slowest:.2} s, central {model:.2} s"
    );
    assert!(s.sent[0] < f * 3 / 2, "seed sent {} of {f}", s.sent[0]);
}

#[test]
fn a_thousand_hosts_in_ten_datacenters_take_each_byte_across_once() {
    // The shipped 10 x 100 fleet with a small release, through the same entry
    // point as `shoal bench --model flow`.
    let t = Topology::builtin("10dc-1000").expect("shipped");
    let f = 2 << 20;
    let s = FlowScenario {
        topology: t.clone(),
        bundle_bytes: f,
        piece: Some(128 << 10),
        manifest: None,
        strategies: vec![Strategy::Shoal, Strategy::Bittorrent],
        time_limit: Duration::from_secs(300),
        seed: 1,
    };
    let r = flow::run(&s, &|_, _, _| {});
    assert_eq!(r.model, "flow");
    let t_lb = lower_bound(&t, f).t_lb_s;
    let shoal = &r.strategies[0];
    let bt = &r.strategies[1];
    assert_eq!(shoal.hosts_verified, 1000);
    assert_eq!(bt.hosts_verified, 1000);
    assert!(
        shoal.t_all_s.expect("done") >= t_lb,
        "never faster than T_lb"
    );
    for (dc, &ratio) in &shoal.cross_dc_ratio {
        if dc != "dc01" {
            assert!(ratio < 1.1, "{dc}: {ratio:.2} F entered");
        }
    }
    let cross =
        |s: &shoal_netsim::report::StrategyResult| -> u64 { s.cross_dc_bytes_in.values().sum() };
    assert!(
        cross(shoal) * 3 < cross(bt),
        "shoal {} against bittorrent {} bytes across",
        cross(shoal),
        cross(bt)
    );
    assert!(shoal.seed_upload_bytes < f * 3 / 2);
}

/// Seconds until the last target finished, if all did.
fn last(m: &engine::Measured) -> f64 {
    m.verified_at
        .iter()
        .map(|t| t.expect("every target finished"))
        .fold(0.0, f64::max)
}

#[test]
fn central_and_fanout_solved_whole_agree_with_the_stepped_engine() {
    // `bench --model flow` solves central and fanout as one flow per host
    // (flow::fixed); the engine moves the same strategies piece by piece
    // through the real swarm. They must tell the same story.
    let three = Topology::builtin("3dc-48").expect("shipped");
    // A proxy fed slower than it forwards: a 10 Mbit/s seed, 1 Gbit/s hosts.
    // Its hosts keep pace with it, a piece behind, not with their own links.
    let fed = topo(
        r#"
name = "slow-seed"
[network]
intra_dc_ms = 0.25
inter_dc_ms = 20.0
[seed]
dc = "a"
upload_mbit = 10
download_mbit = 10
[[dc]]
name = "a"
hosts = 1
upload_mbit = 1000
download_mbit = 1000
wan_in_mbit = 1000
wan_out_mbit = 1000
[[dc]]
name = "b"
hosts = 3
upload_mbit = 1000
download_mbit = 1000
wan_in_mbit = 1000
wan_out_mbit = 1000
"#,
    );
    let piece = 64 << 10;
    let p = Params {
        step: Duration::from_millis(5),
        ..params(piece)
    };
    for (t, f) in [(&three, 8_000_000u64), (&fed, 4_000_000)] {
        for k in [Strategy::Central, Strategy::Fanout] {
            let stepped = engine::simulate(t, f, k, &p, &|_, _| {});
            let whole = flow::fixed::simulate(t, f, k, piece, p.time_limit, 1, &|_, _| {});
            let (a, b) = (last(&stepped), last(&whole));
            assert!(
                (a - b).abs() / a < 0.03,
                "{} {}: engine {a:.3} s, solved {b:.3} s",
                t.name,
                k.name()
            );
            // Byte counts are sums of floats: equal to within a byte a host.
            let near = |a: &[u64], b: &[u64]| {
                a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.abs_diff(*y) <= 64)
            };
            let what = format!("{} {}", t.name, k.name());
            assert!(
                near(&stepped.wan_in, &whole.wan_in),
                "{what}: {:?} {:?}",
                stepped.wan_in,
                whole.wan_in
            );
            assert!(
                near(&stepped.sent, &whole.sent),
                "{what}: {:?} {:?}",
                stepped.sent,
                whole.sent
            );
        }
    }
    // No fanout host finishes before the proxy that feeds it.
    let m = flow::fixed::simulate(
        &fed,
        4_000_000,
        Strategy::Fanout,
        piece,
        p.time_limit,
        1,
        &|_, _| {},
    );
    let proxies = shoal_netsim::strategy::proxies(&fed);
    for (x, h) in fed.hosts.iter().enumerate().skip(1) {
        let proxy = fed
            .hosts
            .iter()
            .position(|q| q.dc == h.dc && proxies.contains(&q.name))
            .expect("every datacenter has a proxy");
        let (mine, its) = (m.verified_at[x - 1], m.verified_at[proxy - 1]);
        assert!(
            mine >= its,
            "{}: {mine:?} before its proxy's {its:?}",
            h.name
        );
    }
    // The slow seed binds: 4 hosts' worth (central) or 2 proxies' worth
    // (fanout) of 4 MB through 1.25 MB/s.
    let central = flow::fixed::simulate(
        &fed,
        4_000_000,
        Strategy::Central,
        piece,
        p.time_limit,
        1,
        &|_, _| {},
    );
    // Pieces go at the link's rate less QUIC framing.
    let want = 4.0 * 4e6 / (1.25e6 / flow::wire_factor(&fed));
    assert!(
        (last(&central) - want).abs() / want < 0.01,
        "{}",
        last(&central)
    );
}
