//! Garbage collection of releases and of unused chunks in `ROOT/store`.
//!
//! Kept: the current release, the one a rollback would go to, the N most recently
//! installed, and any release a lease holds. Only finished releases are counted:
//! partial and half-deleted trees are never candidates for the N, so a run of
//! failed installs cannot push every good release out.

use crate::error::{IoContext, Result};
use crate::hash::Hash;
use crate::layout::{GC_PREFIX, Root, remove_tree};
use crate::releases::list;
use crate::store::ChunkStore;
use crate::tag;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;

#[derive(Clone, Debug, Default, Serialize)]
pub struct GcReport {
    pub removed: Vec<String>,
    pub kept: Vec<String>,
    pub chunks_removed: u64,
    pub chunk_bytes_freed: u64,
}

/// Removes releases beyond what must be kept. A release a live lease holds
/// (`shoal exec`) is always kept; dead leases are cleared.
pub fn gc(root: &Root, keep_newest: usize) -> Result<GcReport> {
    let _lock = root.lock_existing()?;
    let leased = crate::lease::live_tags_pruning(root)?;
    let releases = list(root)?;
    let newest: HashSet<&str> = releases
        .iter()
        .rev()
        .take(keep_newest)
        .map(|r| r.tag.as_str())
        .collect();
    let mut report = GcReport::default();
    for r in &releases {
        if r.current || r.previous || newest.contains(r.tag.as_str()) || leased.contains(&r.tag) {
            report.kept.push(r.tag.clone());
            continue;
        }
        // Rename first: an interrupted removal leaves a `.gc-` name, never a
        // release with part of its files.
        let dir = root.release_dir(&r.tag);
        let doomed = root.releases_dir().join(format!(
            "{GC_PREFIX}{}-{}",
            tag::dir_name(&r.tag),
            std::process::id()
        ));
        fs::rename(&dir, &doomed).at(&dir)?;
        let man = root.manifest_file(&r.tag);
        fs::remove_file(&man).at(&man)?;
        remove_tree(&doomed)?;
        tracing::info!(tag = %r.tag, "release removed");
        report.removed.push(r.tag.clone());
    }
    let store_dir = root.store_dir();
    if store_dir.is_dir() {
        let mut live: HashSet<Hash> = HashSet::new();
        for tag in &report.kept {
            live.extend(
                root.manifest(tag, None)?
                    .manifest
                    .chunks
                    .iter()
                    .map(|c| c.hash),
            );
        }
        let (n, bytes) = ChunkStore::open(store_dir)?.retain(&live)?;
        report.chunks_removed = n;
        report.chunk_bytes_freed = bytes;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activate::{activate, rollback};
    use crate::testutil::Env;

    #[test]
    fn keeps_current_previous_newest_and_leased() {
        let env = Env::new();
        for t in ["v1", "v2", "v3", "v4", "v5"] {
            env.release(t, &[("a", t), ("shared", "same in all")]);
        }
        activate(&env.root, "v3").unwrap();
        let lease = crate::lease::take(&env.root, "a long job").unwrap();
        activate(&env.root, "v1").unwrap();
        activate(&env.root, "v2").unwrap();
        // current v2, previous v1, newest 1 = v5, leased v3; v4 goes.
        let report = gc(&env.root, 1).unwrap();
        assert_eq!(report.removed, vec!["v4".to_string()]);
        let mut left = env.root.installed().unwrap();
        left.sort();
        assert_eq!(left, ["v1", "v2", "v3", "v5"]);
        assert!(!env.root.release_dir("v4").exists());
        assert!(!env.root.manifest_file("v4").exists());
        // Rollback still works after gc.
        assert_eq!(rollback(&env.root).unwrap(), "v1");
        // Once the job is gone, its release is not kept any more.
        drop(lease);
        activate(&env.root, "v5").unwrap();
        let report = gc(&env.root, 1).unwrap();
        assert_eq!(report.removed, ["v2", "v3"]);
    }

    #[test]
    fn refuses_a_root_that_does_not_exist() {
        let env = Env::new();
        let nowhere = Root::new(env.dir.path().join("typo"));
        assert!(matches!(gc(&nowhere, 1), Err(crate::Error::NoRoot(_))));
        assert!(!nowhere.path().exists());
    }
}
