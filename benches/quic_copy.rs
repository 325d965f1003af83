//! The transport baseline for the swarm: a plain file copy over one QUIC stream on
//! loopback, with shoal's own transport set-up, so that whatever shoal loses against
//! it is shoal's (requests, verification, decompression, file writes), not QUIC's.
//!
//! Two endpoints made by `shoal_net::endpoint` from identities of one cluster CA
//! (`shoal_net::cluster`), both with `Tuning::default()` (the windows and socket
//! buffers every shoal seed and default agent uses), each driven by its own tokio
//! runtime (as a seed and an agent are two processes). Per round: the client
//! connects (mutual TLS 1.3 handshake included in the time), opens one
//! unidirectional stream, reads the file from disk in 1 MiB blocks and writes each to
//! the stream, then finishes it; the server reads the stream to its end and writes
//! what it gets to a file. The time runs from the connect to both sides being done
//! (the server has written the last byte, the client has seen it acknowledged).
//! The source is read once before timing (hot page cache); nothing is fsynced.
//!
//! ```text
//! cargo bench --bench quic_copy                   # 256 MiB of generated mixed data
//! cargo bench --bench quic_copy -- FILE           # or QUIC_COPY_FILE=FILE
//! ```
//!
//! Environment: `QUIC_COPY_FILE` (the file to copy), `QUIC_COPY_ROUNDS` (default 3;
//! the median round is reported), `QUIC_COPY_TMP` (parent of the work directory,
//! default `$SHOAL_BENCH_TMP` or `/var/tmp`). Prints one JSON line on stdout:
//! `{"baseline_quic_copy_mb_s": X, "bytes": N, ...}` with MB = 10^6 bytes; progress
//! goes to stderr. The received copy of the first round is checked with BLAKE3.

use anyhow::{Context, Result, bail, ensure};
use shoal_net::quinn;
use shoal_net::{Identity, Tuning};
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Read and write size on the client (the brief's "1 MiB blocks").
const BLOCK: usize = 1 << 20;
/// Size of the generated default file.
const DEFAULT_BYTES: u64 = 256 << 20;

fn main() -> Result<()> {
    // `cargo bench` appends `--bench` (and passes filters); the first argument that is
    // not an option is the file.
    let arg = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let given = arg
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("QUIC_COPY_FILE").map(PathBuf::from));
    let rounds: usize = match std::env::var("QUIC_COPY_ROUNDS") {
        Ok(v) => v
            .parse()
            .context("QUIC_COPY_ROUNDS must be a positive integer")?,
        Err(_) => 3,
    };
    ensure!(rounds > 0, "QUIC_COPY_ROUNDS must be a positive integer");
    let parent = std::env::var_os("QUIC_COPY_TMP")
        .or_else(|| std::env::var_os("SHOAL_BENCH_TMP"))
        .map_or_else(|| PathBuf::from("/var/tmp"), PathBuf::from);
    std::fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
    let work = tempfile::Builder::new()
        .prefix("quic-copy.")
        .tempdir_in(&parent)
        .with_context(|| format!("creating a work directory in {}", parent.display()))?;

    let generated = given.is_none();
    let src = match given {
        Some(p) => p,
        None => {
            let p = work.path().join("source.bin");
            eprintln!("quic_copy: generating {DEFAULT_BYTES} bytes of mixed data");
            generate(&p, DEFAULT_BYTES)?;
            p
        }
    };
    let bytes = std::fs::metadata(&src)
        .with_context(|| format!("reading {}", src.display()))?
        .len();
    // Hot cache, as for every contender in scripts/bench-swarm.sh.
    let src_hash = hash_file(&src)?;

    let cluster = work.path().join("cluster");
    shoal_net::cluster::init(&cluster)?;
    let (sid, cid) = (cluster.join("server.id"), cluster.join("client.id"));
    shoal_net::cluster::issue(&cluster, "server", "dc1", &sid)?;
    shoal_net::cluster::issue(&cluster, "client", "dc1", &cid)?;
    let (sid, cid) = (Identity::load(&sid)?, Identity::load(&cid)?);

    let tuning = Tuning::default();
    let runtime = |name: &str| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name(name)
            .build()
            .context("starting a tokio runtime")
    };
    let (server_rt, client_rt) = (runtime("server")?, runtime("client")?);
    let loopback: SocketAddr = "127.0.0.1:0".parse()?;
    let server_ep = {
        let _g = server_rt.enter();
        shoal_net::endpoint(&sid, loopback, &tuning)?
    };
    let client_ep = {
        let _g = client_rt.enter();
        shoal_net::endpoint(&cid, loopback, &tuning)?
    };
    let server_addr = server_ep.local_addr()?;

    let mut secs = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let dest = work.path().join(format!("received.{round}"));
        let server = server_rt.spawn(receive(server_ep.clone(), dest.clone()));
        let t0 = Instant::now();
        let sent = client_rt.block_on(send(&client_ep, server_addr, &src))?;
        let (got, conn) = server_rt.block_on(server).context("server task")??;
        let dt = t0.elapsed();
        conn.close(0u32.into(), b"done");
        ensure!(
            sent == bytes && got == bytes,
            "sent {sent} and received {got} of {bytes} bytes"
        );
        if round == 0 {
            ensure!(
                hash_file(&dest)? == src_hash,
                "the received copy differs from {}",
                src.display()
            );
        }
        std::fs::remove_file(&dest).with_context(|| format!("removing {}", dest.display()))?;
        eprintln!(
            "quic_copy: round {}/{rounds}: {bytes} bytes in {:.3} s, {:.1} MB/s",
            round + 1,
            dt.as_secs_f64(),
            mb_s(bytes, dt)
        );
        secs.push(dt);
    }
    client_ep.close(0u32.into(), b"done");
    server_ep.close(0u32.into(), b"done");
    let mut sorted = secs.clone();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let line = serde_json::json!({
        "baseline_quic_copy_mb_s": round1(mb_s(bytes, median)),
        "bytes": bytes,
        "seconds": (median.as_secs_f64() * 1e4).round() / 1e4,
        "rounds_mb_s": secs.iter().map(|d| round1(mb_s(bytes, *d))).collect::<Vec<_>>(),
        // The generated file is gone with the work directory: name it only when given.
        "file": if generated { None } else { Some(&src) },
        "generated": generated,
    });
    println!("{line}");
    Ok(())
}

/// Connects, sends the whole file on one unidirectional stream, and waits until the
/// server has acknowledged all of it. Returns the bytes sent.
async fn send(ep: &quinn::Endpoint, addr: SocketAddr, src: &Path) -> Result<u64> {
    let conn = shoal_net::connect(ep, addr, "server").await?;
    let mut stream = conn.open_uni().await?;
    let mut file = File::open(src).with_context(|| format!("opening {}", src.display()))?;
    let mut buf = vec![0u8; BLOCK];
    let mut sent = 0u64;
    loop {
        let n = fill(&mut file, &mut buf).with_context(|| format!("reading {}", src.display()))?;
        if n == 0 {
            break;
        }
        stream.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    stream.finish()?;
    if let Some(code) = stream.stopped().await? {
        bail!("the server stopped the stream with code {code}");
    }
    Ok(sent)
}

/// Accepts one connection and one stream, and writes the stream to `dest`. Returns the
/// bytes received and the connection (kept open until the caller has stopped the clock).
async fn receive(ep: quinn::Endpoint, dest: PathBuf) -> Result<(u64, quinn::Connection)> {
    let incoming = ep.accept().await.context("endpoint closed")?;
    let conn = incoming.await?;
    let mut stream = conn.accept_uni().await?;
    let file = File::create(&dest).with_context(|| format!("creating {}", dest.display()))?;
    let mut out = BufWriter::with_capacity(BLOCK, file);
    let mut got = 0u64;
    while let Some(chunk) = stream.read_chunk(BLOCK, true).await? {
        out.write_all(&chunk.bytes)
            .with_context(|| format!("writing {}", dest.display()))?;
        got += chunk.bytes.len() as u64;
    }
    out.flush()
        .with_context(|| format!("writing {}", dest.display()))?;
    Ok((got, conn))
}

/// Reads until `buf` is full or the file ends.
fn fill(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn hash_file(p: &Path) -> Result<blake3::Hash> {
    let mut h = blake3::Hasher::new();
    h.update_mmap(p)
        .with_context(|| format!("reading {}", p.display()))?;
    Ok(h.finalize())
}

fn mb_s(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / 1e6 / d.as_secs_f64().max(1e-9)
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// Writes `len` bytes of mixed data in 64 KiB blocks: a third incompressible
/// (pseudo-random), a third text-like (words from a small vocabulary), a third
/// long runs (zeros or a repeated short pattern), as a release's binaries, sources
/// and padding are. zstd -1 shrinks it to roughly half.
fn generate(p: &Path, len: u64) -> Result<()> {
    const WORDS: &[&str] = &[
        "fn ", "let ", "struct ", "impl ", "return ", "match ", "self", "=> ", "{\n", "}\n",
        "release", "chunk", "manifest", "stream", "peer", "swarm", "(", ")", ";\n", "    ",
    ];
    let mut out = BufWriter::with_capacity(BLOCK, File::create(p)?);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        // xorshift64*
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut block = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        match next() % 3 {
            0 => {
                for c in block.chunks_mut(8) {
                    let r = next().to_le_bytes();
                    c.copy_from_slice(&r[..c.len()]);
                }
            }
            1 => {
                let mut i = 0;
                while i < block.len() {
                    let w = WORDS[(next() % WORDS.len() as u64) as usize].as_bytes();
                    let k = w.len().min(block.len() - i);
                    block[i..i + k].copy_from_slice(&w[..k]);
                    i += k;
                }
            }
            _ => {
                let pat = next().to_le_bytes();
                let zero = next() % 2 == 0;
                for (i, b) in block.iter_mut().enumerate() {
                    *b = if zero { 0 } else { pat[i % 8] };
                }
            }
        }
        let k = (block.len() as u64).min(left) as usize;
        out.write_all(&block[..k])?;
        left -= k as u64;
    }
    out.flush()?;
    Ok(())
}
