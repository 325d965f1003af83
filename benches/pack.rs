//! shoal's hot paths against the plain tools they replace, measured in the same run
//! on the same generated tree (about 100 MB: 5,000 small source files and two
//! binaries, a fifth of the `bench` preset so `cargo bench` stays near two minutes).
//!
//! - `pack`: [`shoal_bundle::pack::pack`] into a fresh store (scan, per-file BLAKE3,
//!   FastCDC, per-chunk BLAKE3 and zstd -1, one file per new chunk, signed manifest)
//!   vs zstd level 1 over the files' bytes concatenated in sorted path order, written
//!   to one file (what `tar | zstd -1` does, without the tar headers). The baseline
//!   runs twice: single-threaded streaming, and 2 MiB blocks compressed on rayon's
//!   workers (as `zstd -T0` splits its input into jobs); the crate is built without
//!   its `zstdmt` feature, so `Encoder::multithread` is not available.
//! - `audit`: [`shoal_bundle::audit::audit_tree`] on an installed copy vs what
//!   `find | sort | xargs b3sum` does: walk, then hash file after file with
//!   `Hasher::update_mmap_rayon` (reads small files, maps and splits large ones).
//! - `decode_chunk`: [`shoal_bundle::chunk::decode_chunk`] (bounded decompression,
//!   length check, BLAKE3 check) on the tree's own 32 KiB-average chunks vs
//!   `zstd::bulk::decompress`, and vs a reused `Decompressor` without the hash check.
//!
//! Everything is hot-cache: the tree is generated (and read once) before timing.
//! Whole-command numbers on the full 517 MB tree come from `scripts/bench.sh`.

use criterion::{
    BatchSize, BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group,
    criterion_main, measurement::WallTime,
};
use rayon::prelude::*;
use shoal_bundle::assemble::{InstallOptions, install, load_from_store};
use shoal_bundle::chunk::decode_chunk;
use shoal_bundle::manifest::ChunkRef;
use shoal_bundle::pack::{PackOptions, pack};
use shoal_bundle::signing::DeployKey;
use shoal_bundle::{ChunkStore, Root};
use shoal_sample::Spec;
use std::fs;
use std::hint::black_box;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A fifth of the `bench` preset: ~100 MB, 5,000 small files, two binaries.
fn spec() -> Spec {
    Spec {
        files: 5_000,
        mean_file: 5_000,
        binaries: vec![48 << 20, 24 << 20],
        seed: 7,
    }
}

/// The generated tree and everything derived from it, built once for all groups.
struct Setup {
    dir: tempfile::TempDir,
    src: PathBuf,
    key: DeployKey,
    /// Regular files in sorted path order (the canonical stream's order).
    files: Vec<PathBuf>,
    bytes: u64,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("shoal-bench-")
            .tempdir_in(bench_tmp())
            .expect("temporary directory");
        let src = dir.path().join("tree");
        shoal_sample::generate(&src, &spec()).expect("generating the tree");
        let files = regular_files(&src);
        // One read warms the page cache for every contender.
        let bytes = files
            .iter()
            .map(|p| fs::read(p).unwrap().len() as u64)
            .sum();
        Setup {
            dir,
            src,
            key: DeployKey::generate().expect("key"),
            files,
            bytes,
        }
    }
}

/// `SHOAL_BENCH_TMP`, else /var/tmp (disk-backed, unlike a tmpfs /tmp).
fn bench_tmp() -> PathBuf {
    std::env::var_os("SHOAL_BENCH_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp"))
}

/// Every regular file under `dir`, not following symlinks, sorted by path bytes.
fn regular_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(d).unwrap() {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                walk(&e.path(), out);
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort_unstable_by(|a, b| {
        a.as_os_str()
            .as_encoded_bytes()
            .cmp(b.as_os_str().as_encoded_bytes())
    });
    out
}

fn group<'a>(
    c: &'a mut Criterion,
    name: &str,
    bytes: u64,
    secs: u64,
) -> BenchmarkGroup<'a, WallTime> {
    let mut g = c.benchmark_group(name);
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(secs))
        .throughput(Throughput::Bytes(bytes));
    g
}

/// zstd -1 over the concatenated files, one thread.
fn zstd_stream(files: &[PathBuf], out: &Path) -> u64 {
    let sink = BufWriter::with_capacity(1 << 20, fs::File::create(out).unwrap());
    let mut enc = zstd::stream::Encoder::new(sink, 1).unwrap();
    for p in files {
        let mut f = fs::File::open(p).unwrap();
        std::io::copy(&mut f, &mut enc).unwrap();
    }
    let mut sink = enc.finish().unwrap();
    sink.flush().unwrap();
    sink.get_ref().metadata().unwrap().len()
}

/// zstd -1 over the concatenated files cut into 2 MiB jobs compressed in parallel
/// (independent frames, as zstdmt's jobs are), written in order.
fn zstd_blocks_parallel(files: &[PathBuf], out: &Path) -> u64 {
    const JOB: usize = 2 << 20;
    const WAVE: usize = 8; // jobs in flight: bounds memory like zstdmt does
    let mut sink = BufWriter::with_capacity(1 << 20, fs::File::create(out).unwrap());
    let mut jobs: Vec<Vec<u8>> = Vec::with_capacity(WAVE);
    let mut cur = Vec::with_capacity(JOB);
    let flush = |jobs: &mut Vec<Vec<u8>>, sink: &mut BufWriter<fs::File>| {
        let frames: Vec<Vec<u8>> = jobs
            .par_iter()
            .map_init(
                || zstd::bulk::Compressor::new(1).unwrap(),
                |c, j| c.compress(j).unwrap(),
            )
            .collect();
        for f in frames {
            sink.write_all(&f).unwrap();
        }
        jobs.clear();
    };
    for p in files {
        let mut data: &[u8] = &fs::read(p).unwrap();
        while !data.is_empty() {
            let n = (JOB - cur.len()).min(data.len());
            cur.extend_from_slice(&data[..n]);
            data = &data[n..];
            if cur.len() == JOB {
                jobs.push(std::mem::replace(&mut cur, Vec::with_capacity(JOB)));
                if jobs.len() == WAVE {
                    flush(&mut jobs, &mut sink);
                }
            }
        }
    }
    if !cur.is_empty() {
        jobs.push(cur);
    }
    flush(&mut jobs, &mut sink);
    sink.flush().unwrap();
    sink.get_ref().metadata().unwrap().len()
}

fn bench_pack(c: &mut Criterion, s: &Setup) {
    let mut g = group(c, "pack", s.bytes, 6);
    // Stores are kept until the group ends: on ext4 without a journal, creating files
    // right after deleting thousands is slow (freed inodes are skipped for 60-300 s),
    // which would bill each iteration for the previous one's cleanup.
    let mut stores = Vec::new();
    g.bench_function("shoal_pack", |b| {
        b.iter_batched(
            || {
                let d = tempfile::tempdir_in(s.dir.path()).unwrap();
                let store = ChunkStore::open(d.path().join("store")).unwrap();
                (d, store)
            },
            |(d, store)| {
                let r = pack(
                    &s.src,
                    &store,
                    &s.key,
                    &PackOptions::new("bench/1"),
                    &|_| {},
                )
                .unwrap();
                black_box(r.new_bytes_stored);
                stores.push(d);
            },
            BatchSize::PerIteration,
        )
    });
    let out = s.dir.path().join("baseline.zst");
    g.bench_function("zstd1_single_thread", |b| {
        b.iter(|| black_box(zstd_stream(&s.files, &out)))
    });
    g.bench_function("zstd1_2MiB_jobs_rayon", |b| {
        b.iter(|| black_box(zstd_blocks_parallel(&s.files, &out)))
    });
    g.finish();
    drop(stores);
    let _ = fs::remove_file(out);
}

fn bench_audit(c: &mut Criterion, s: &Setup) {
    let store = ChunkStore::open(s.dir.path().join("store")).unwrap();
    pack(
        &s.src,
        &store,
        &s.key,
        &PackOptions::new("bench/1"),
        &|_| {},
    )
    .unwrap();
    let release = load_from_store(&store, "bench/1", &[s.key.public()]).unwrap();
    let root = Root::new(s.dir.path().join("root"));
    install(&root, &store, &release, InstallOptions::default()).unwrap();
    let installed = root.release_dir("bench/1");
    let m = &release.manifest;

    let mut g = group(c, "audit", s.bytes, 4);
    g.bench_function("shoal_audit_tree", |b| {
        b.iter(|| {
            let r = shoal_bundle::audit::audit_tree(&installed, m).unwrap();
            assert!(r.is_clean());
            black_box(r.bytes_hashed)
        })
    });
    // b3sum over `find -type f | sort`: the walk is part of its job too.
    g.bench_function("b3sum_like", |b| {
        b.iter(|| {
            let mut acc = 0u8;
            for p in regular_files(&installed) {
                let mut h = blake3::Hasher::new();
                h.update_mmap_rayon(&p).unwrap();
                acc ^= h.finalize().as_bytes()[0];
            }
            black_box(acc)
        })
    });
    g.finish();
}

fn bench_decode(c: &mut Criterion, s: &Setup) {
    // The tree's own chunks (32 KiB average), as a target decodes them.
    let store = ChunkStore::open(s.dir.path().join("store")).unwrap();
    let r = pack(
        &s.src,
        &store,
        &s.key,
        &PackOptions::new("bench/dec"),
        &|_| {},
    )
    .unwrap();
    let release = load_from_store(&store, "bench/dec", &[s.key.public()]).unwrap();
    // About 32 MB of chunks: text and binary, in stream order from the middle.
    let all = &release.manifest.chunks;
    let start = all.len() / 3;
    let mut chunks: Vec<(ChunkRef, Vec<u8>)> = Vec::new();
    let mut plain = 0u64;
    for cr in &all[start..] {
        if plain >= 32 << 20 {
            break;
        }
        chunks.push((*cr, store.read_compressed(cr).unwrap()));
        plain += u64::from(cr.len);
    }
    black_box(r);

    let mut g = group(c, "decode_chunk", plain, 3);
    g.bench_function("shoal_decode_chunk", |b| {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        b.iter(|| {
            for (cr, z) in &chunks {
                black_box(decode_chunk(cr, z, &mut d).unwrap());
            }
        })
    });
    g.bench_function("zstd_bulk_decompress", |b| {
        b.iter(|| {
            for (cr, z) in &chunks {
                black_box(zstd::bulk::decompress(z, cr.len as usize).unwrap());
            }
        })
    });
    g.bench_function("zstd_reused_ctx_no_hash", |b| {
        let mut d = zstd::bulk::Decompressor::new().unwrap();
        b.iter(|| {
            for (cr, z) in &chunks {
                black_box(d.decompress(z, cr.len as usize).unwrap());
            }
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    let s = Setup::new();
    eprintln!(
        "tree: {} regular files, {} bytes, in {}",
        s.files.len(),
        s.bytes,
        s.dir.path().display()
    );
    bench_pack(c, &s);
    bench_audit(c, &s);
    bench_decode(c, &s);
}

criterion_group!(pack_benches, benches);
criterion_main!(pack_benches);
