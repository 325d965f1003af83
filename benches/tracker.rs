//! The tracker at fleet scale: one tracker takes the control messages of
//! thousands of simulated agents (their `Hello`, their periodic `Status`,
//! their `GetPeers`; no chunk data), each message encoded to a wire frame and
//! decoded again as it would be off a QUIC stream, and handled by the real
//! `Tracker`. Reported per configuration (hosts, release size): the tracker's
//! memory per host (resident set growth while registering, each
//! configuration in a fresh process), CPU per `Status` (the announce every
//! agent sends each poll), the time to hand out one peer list, and the bytes
//! of each message. The release sizes differ by 16x in chunks: per-host cost
//! must not follow them (the tracker keeps counts per host, never bitfields).
//!
//! ```text
//! cargo bench --bench tracker                  # 1,000 and 10,000 hosts
//! TRACKER_HOSTS=10000,50000 cargo bench --bench tracker
//! ```
//!
//! Prints one JSON line per configuration on stdout and a table on stderr.
//! Memory per host is only meaningful for large fleets: for a few thousand
//! hosts the growth fits in heap the pack left free. CPU time has the kernel's
//! tick resolution (10 ms), so the wall time per `Status` is reported too.

use anyhow::{Context, Result, ensure};
use shoal_bundle::pack::{PackOptions, pack};
use shoal_bundle::signing::DeployKey;
use shoal_bundle::{ChunkStore, no_progress};
use shoal_node::Control;
use shoal_proto::{Hello, HostStatus, Msg, PROTOCOL_VERSION, Role, Totals, Transfer};
use shoal_seed::tracker::Tracker;
use std::time::{Duration, Instant};

const DCS: usize = 10;
/// Peer lists timed per configuration.
const PEER_ASKS: usize = 2_000;

/// Encodes `msg` to a frame and decodes it again, as the wire would; returns
/// the message and the frame's length.
fn wire(msg: &Msg) -> Result<(Msg, usize)> {
    let frame = msg.to_frame();
    let back = Msg::from_body(&frame[4..]).context("decoding a frame")?;
    Ok((back, frame.len()))
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn hello(i: usize) -> Hello {
    Hello {
        version: PROTOCOL_VERSION,
        role: Role::Agent,
        host: format!("host-{i:05}"),
        dc: format!("dc{}", i % DCS + 1),
        listen: Some(format!(
            "10.{}.{}.{}:7420",
            i % DCS,
            (i / 250) % 250,
            i % 250
        )),
    }
}

fn status(chunks: u32, have: u32, round: u64) -> Msg {
    Msg::Status(Box::new(HostStatus {
        staged: vec!["v1".into()],
        current: Some("v1".into()),
        transfer: Some(Transfer {
            tag: "v2".into(),
            chunks_have: have,
            chunks_total: chunks,
            bytes_down: round << 20,
            bytes_up: round << 19,
            bytes_down_cross_dc: round << 16,
        }),
        totals: Totals {
            bytes_down: round << 20,
            chunks_fetched: u64::from(have),
            ..Totals::default()
        },
        ..HostStatus::default()
    }))
}

/// One configuration, in this process.
fn one(hosts: usize, release_bytes: u64) -> Result<serde_json::Value> {
    let dir = tempfile::tempdir()?;
    let src = dir.path().join("src");
    shoal_sample::generate(&src, &shoal_sample::Spec::sized(release_bytes, 1))?;
    let store = ChunkStore::open(dir.path().join("store"))?;
    let key = DeployKey::generate()?;
    let report = pack(&src, &store, &key, &PackOptions::new("v2"), &no_progress)?;
    let signed = std::fs::read(store.manifest_path("v2"))?;
    let chunks = report.chunks as u32;

    let tracker = Tracker::new(vec![key.public()]);
    let deploy = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Client,
        host: "deploy".into(),
        dc: "dc1".into(),
        listen: None,
    };
    let (announce, announce_bytes) = wire(&Msg::Announce { signed })?;
    ensure!(
        tracker.handle(&deploy, announce) == Msg::Ok,
        "the release was not announced"
    );

    let rss0 = rss_bytes();
    let wall0 = Instant::now();
    let hellos: Vec<Hello> = (0..hosts).map(hello).collect();
    let mut status_bytes = 0;
    let mut reply_bytes = 0;
    for (i, h) in hellos.iter().enumerate() {
        tracker.hello(h);
        let (m, n) = wire(&status(chunks, (i as u32) % chunks, 1))?;
        status_bytes = n;
        let reply = tracker.handle(h, m);
        ensure!(matches!(reply, Msg::Releases { .. }), "status: {reply:?}");
        reply_bytes = wire(&reply)?.1;
    }
    let register = wall0.elapsed();
    let rss1 = rss_bytes();
    ensure!(tracker.fleet().len() == hosts, "not every host registered");
    let per_host_memory = rss1.saturating_sub(rss0) as f64 / hosts as f64;

    // A steady round: every host's periodic Status once.
    let cpu1 = shoal_netsim::cpu::process_time();
    let t = Instant::now();
    for (i, h) in hellos.iter().enumerate() {
        let (m, _) = wire(&status(chunks, ((i as u32) + 7) % chunks, 2))?;
        let reply = tracker.handle(h, m);
        wire(&reply)?;
    }
    let round_wall = t.elapsed();
    let round_cpu = shoal_netsim::cpu::process_time().saturating_sub(cpu1);

    // Peer lists for a spread of askers.
    let id = tracker.releases()[0].id;
    let mut times: Vec<Duration> = Vec::with_capacity(PEER_ASKS);
    let mut peers_bytes = 0;
    let mut listed = 0;
    for k in 0..PEER_ASKS.min(hosts) {
        let h = &hellos[k * hosts / PEER_ASKS.min(hosts)];
        let t = Instant::now();
        let (m, _) = wire(&Msg::GetPeers { id })?;
        let reply = tracker.handle(h, m);
        let (reply, n) = wire(&reply)?;
        times.push(t.elapsed());
        peers_bytes = n;
        if let Msg::Peers { peers, .. } = reply {
            listed = peers.len();
            ensure!(
                peers.iter().take(listed.min(8)).all(|p| p.dc == h.dc),
                "the peer list does not start in the asker's datacenter"
            );
        }
    }
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Ok(serde_json::json!({
        "hosts": hosts,
        "release_bytes": release_bytes,
        "chunks": chunks,
        "register_s": register.as_secs_f64(),
        "memory_per_host_bytes": per_host_memory.round(),
        "tracker_rss_bytes": rss1,
        "status_cpu_us": round_cpu.as_secs_f64() * 1e6 / hosts as f64,
        "status_wall_us": round_wall.as_secs_f64() * 1e6 / hosts as f64,
        "status_round_s": round_wall.as_secs_f64(),
        "peers_p50_us": pct(0.5),
        "peers_p99_us": pct(0.99),
        "peers_listed": listed,
        "bytes": {
            "announce": announce_bytes,
            "status": status_bytes,
            "status_reply": reply_bytes,
            "peers_reply": peers_bytes,
        },
    }))
}

fn main() -> Result<()> {
    // A child runs one configuration, so each one's memory is measured from a
    // fresh heap.
    if let Ok(spec) = std::env::var("TRACKER_BENCH_ONE") {
        let (h, b) = spec
            .split_once(',')
            .context("TRACKER_BENCH_ONE=HOSTS,BYTES")?;
        let v = one(h.parse()?, b.parse()?)?;
        println!("{v}");
        return Ok(());
    }
    let hosts: Vec<usize> = std::env::var("TRACKER_HOSTS")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().context("TRACKER_HOSTS: a list of numbers"))
        .collect::<Result<_>>()?;
    let sizes = [4u64 << 20, 64 << 20];
    let exe = std::env::current_exe()?;
    eprintln!(
        "{:>7} {:>8} {:>7} {:>11} {:>13} {:>11} {:>11} {:>11} {:>9}",
        "hosts",
        "release",
        "chunks",
        "B per host",
        "status CPU us",
        "status round",
        "peers p50",
        "peers p99",
        "register"
    );
    for &n in &hosts {
        for &b in &sizes {
            let out = std::process::Command::new(&exe)
                .env("TRACKER_BENCH_ONE", format!("{n},{b}"))
                .output()?;
            ensure!(
                out.status.success(),
                "configuration {n} hosts, {b} bytes failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let line = String::from_utf8(out.stdout)?;
            let v: serde_json::Value = serde_json::from_str(line.trim())?;
            eprintln!(
                "{:>7} {:>6}Mi {:>7} {:>11} {:>13.2} {:>10.3}s {:>9.0}us {:>9.0}us {:>8.2}s",
                n,
                b >> 20,
                v["chunks"],
                v["memory_per_host_bytes"],
                v["status_cpu_us"].as_f64().unwrap_or(0.0),
                v["status_round_s"].as_f64().unwrap_or(0.0),
                v["peers_p50_us"].as_f64().unwrap_or(0.0),
                v["peers_p99_us"].as_f64().unwrap_or(0.0),
                v["register_s"].as_f64().unwrap_or(0.0),
            );
            println!("{}", line.trim());
        }
    }
    Ok(())
}
