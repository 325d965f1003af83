//! Listing installed releases.

use crate::activate::previous;
use crate::error::Result;
use crate::layout::Root;
use serde::Serialize;
use std::time::UNIX_EPOCH;

#[derive(Clone, Debug, Serialize)]
pub struct ReleaseInfo {
    pub tag: String,
    pub id: String,
    pub files: u64,
    pub bytes: u64,
    /// Seconds since the epoch when it was installed.
    pub installed: u64,
    pub current: bool,
    /// Where `shoal rollback` would go.
    pub previous: bool,
}

/// Every installed release, oldest install first.
pub fn list(root: &Root) -> Result<Vec<ReleaseInfo>> {
    let current = root.current()?;
    let prev = previous(root, current.as_deref())?;
    let mut out = Vec::new();
    for tag in root.installed()? {
        let v = root.manifest(&tag, None)?;
        out.push(ReleaseInfo {
            id: v.id.to_hex(),
            files: v.manifest.files().count() as u64,
            bytes: v.manifest.stream_len(),
            installed: installed_at(root, &tag),
            current: current.as_deref() == Some(tag.as_str()),
            previous: prev.as_deref() == Some(tag.as_str()),
            tag,
        });
    }
    out.sort_by(|a, b| (a.installed, &a.tag).cmp(&(b.installed, &b.tag)));
    Ok(out)
}

/// The manifest is written once, just before the release is renamed into place.
fn installed_at(root: &Root, tag: &str) -> u64 {
    std::fs::metadata(root.manifest_file(tag))
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs())
}
