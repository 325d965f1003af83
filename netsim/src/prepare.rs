//! What every strategy of a run shares, made once: the cluster's certificates,
//! the release trees, and their bundles packed into a master store that each
//! strategy's seed starts from (hard links, so no copy is paid per strategy).

use crate::RunError;
use crate::topology::Topology;
use shoal_bundle::assemble::load_from_store;
use shoal_bundle::pack::{PackOptions, pack};
use shoal_bundle::signing::{DeployKey, TrustedKey};
use shoal_bundle::{ChunkStore, Hash};
use shoal_sample::Spec;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// Where the release comes from.
#[derive(Clone, Debug)]
pub enum Source {
    /// A generated sample tree of about this many bytes.
    Size(u64),
    /// A generated sample tree from this spec.
    Spec(Spec),
    /// An existing directory.
    Tree(PathBuf),
}

/// A release packed into the master store.
#[derive(Clone, Debug)]
pub struct Release {
    pub tag: String,
    pub id: Hash,
    /// Bytes of all regular files.
    pub plain_bytes: u64,
    /// F: compressed bytes of its distinct chunks, what every host must receive.
    pub bundle_bytes: u64,
    pub chunks: usize,
}

/// The second release of a delta run, and what changed.
#[derive(Clone, Debug)]
pub struct Delta {
    pub release: Release,
    pub percent: f64,
    pub files_changed: usize,
    pub changed_plain_bytes: u64,
    /// The changed files compressed on their own, at the packer's level.
    pub changed_compressed_bytes: u64,
    /// Chunks of the second release that the first lacks.
    pub new_chunks: usize,
    pub new_chunk_bytes: u64,
}

pub struct Prepared {
    pub work: PathBuf,
    pub cluster: PathBuf,
    /// Identity file of each host, indexed like `Topology::hosts`.
    pub identities: Vec<PathBuf>,
    pub master: ChunkStore,
    pub trusted: Vec<TrustedKey>,
    pub first: Release,
    pub delta: Option<Delta>,
}

pub const FIRST_TAG: &str = "netsim/1";
pub const SECOND_TAG: &str = "netsim/2";

fn io(path: &Path) -> impl Fn(std::io::Error) -> RunError + '_ {
    move |cause| RunError::Io {
        path: path.to_path_buf(),
        cause,
    }
}

/// Makes certificates, trees and bundles under `work`.
pub fn prepare(
    topo: &Topology,
    work: &Path,
    source: &Source,
    delta: Option<f64>,
) -> Result<Prepared, RunError> {
    std::fs::create_dir_all(work).map_err(io(work))?;
    let cluster = work.join("cluster");
    shoal_net::cluster::init(&cluster)?;
    let ids = work.join("identities");
    std::fs::create_dir_all(&ids).map_err(io(&ids))?;
    let mut identities = Vec::with_capacity(topo.hosts.len());
    for h in &topo.hosts {
        let out = ids.join(format!("{}.pem", h.name));
        shoal_net::cluster::issue(&cluster, &h.name, &topo.dcs[h.dc].name, &out)?;
        identities.push(out);
    }
    let key = DeployKey::load(&cluster.join("deploy.key"))?;
    let trusted = vec![key.public()];
    let master = ChunkStore::open(work.join("master-store"))?;

    let (tree, stats) = match source {
        Source::Tree(dir) => (dir.clone(), None),
        Source::Size(bytes) => {
            let dir = work.join("release-1");
            let spec = Spec::sized(*bytes, 1);
            let st = shoal_sample::generate(&dir, &spec).map_err(io(&dir))?;
            (dir, Some((spec, st)))
        }
        Source::Spec(spec) => {
            let dir = work.join("release-1");
            let st = shoal_sample::generate(&dir, spec).map_err(io(&dir))?;
            (dir, Some((spec.clone(), st)))
        }
    };
    let opts = PackOptions::new(FIRST_TAG);
    pack(&tree, &master, &key, &opts, &|_| {})?;
    let first = describe(&master, FIRST_TAG, &trusted)?;

    let delta = match delta {
        None => None,
        Some(percent) => {
            let Some((spec, st)) = stats else {
                return Err(RunError::Usage(
                    "--delta needs a generated release (--size), not --tree".into(),
                ));
            };
            let dir = work.join("release-2");
            shoal_sample::generate(&dir, &spec).map_err(io(&dir))?;
            let changed = shoal_sample::edit(&dir, &st, percent, 2).map_err(io(&dir))?;
            let mut plain = 0u64;
            let mut compressed = 0u64;
            for rel in &changed {
                let p = dir.join(rel);
                let body = std::fs::read(&p).map_err(io(&p))?;
                plain += body.len() as u64;
                compressed += zstd::bulk::compress(&body, opts.level)
                    .map_err(io(&p))?
                    .len() as u64;
            }
            let mut opts2 = PackOptions::new(SECOND_TAG);
            opts2.level = opts.level;
            pack(&dir, &master, &key, &opts2, &|_| {})?;
            let old: HashSet<Hash> = load_from_store(&master, FIRST_TAG, &trusted)?
                .manifest
                .chunks
                .iter()
                .map(|c| c.hash)
                .collect();
            let release = describe(&master, SECOND_TAG, &trusted)?;
            let (new_chunks, new_chunk_bytes) = describe_new(&master, SECOND_TAG, &trusted, &old)?;
            Some(Delta {
                release,
                percent,
                files_changed: changed.len(),
                changed_plain_bytes: plain,
                changed_compressed_bytes: compressed,
                new_chunks,
                new_chunk_bytes,
            })
        }
    };
    Ok(Prepared {
        work: work.to_path_buf(),
        cluster,
        identities,
        master,
        trusted,
        first,
        delta,
    })
}

fn describe(store: &ChunkStore, tag: &str, trusted: &[TrustedKey]) -> Result<Release, RunError> {
    let v = load_from_store(store, tag, trusted)?;
    let plain_bytes = v.manifest.stream_len();
    let (chunks, bundle_bytes) = describe_new(store, tag, trusted, &HashSet::new())?;
    Ok(Release {
        tag: tag.to_string(),
        id: v.id,
        plain_bytes,
        bundle_bytes,
        chunks,
    })
}

/// Distinct chunks of `tag` not in `old`, and their compressed bytes.
fn describe_new(
    store: &ChunkStore,
    tag: &str,
    trusted: &[TrustedKey],
    old: &HashSet<Hash>,
) -> Result<(usize, u64), RunError> {
    let v = load_from_store(store, tag, trusted)?;
    let mut seen = HashSet::new();
    let mut bytes = 0;
    for c in &v.manifest.chunks {
        if old.contains(&c.hash) || !seen.insert(c.hash) {
            continue;
        }
        let p = store.chunk_path(&c.hash);
        bytes += std::fs::metadata(&p).map_err(io(&p))?.len();
    }
    Ok((seen.len(), bytes))
}

/// Gives a strategy's seed its own store holding the master's chunks (hard
/// links) but no manifests: releases are announced when the run says so.
pub fn seed_store(master: &ChunkStore, dir: &Path) -> Result<ChunkStore, RunError> {
    let store = ChunkStore::open(dir)?;
    for hash in master.list()? {
        let (from, to) = (master.chunk_path(&hash), store.chunk_path(&hash));
        // Another filesystem (no hard links): copy.
        if let Err(e) = std::fs::hard_link(&from, &to)
            && e.kind() != std::io::ErrorKind::AlreadyExists
        {
            std::fs::copy(&from, &to).map_err(io(&to))?;
        }
    }
    Ok(store)
}

/// Makes release `tag` known to a seed store (its manifest copied in).
pub fn add_manifest(master: &ChunkStore, store: &ChunkStore, tag: &str) -> Result<(), RunError> {
    let (from, to) = (master.manifest_path(tag), store.manifest_path(tag));
    std::fs::copy(&from, &to).map_err(io(&to))?;
    Ok(())
}
