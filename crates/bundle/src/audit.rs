//! Audit: re-hash an installed tree and compare it with its manifest.
//!
//! The tree is walked without following symlinks; every file is hashed again
//! (in parallel across files, and across cores within a large file), so the report
//! speaks of the bytes on disk, not of a label.

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::layout::Root;
use crate::manifest::{EntryKind, Manifest};
use rayon::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Files at least this large are hashed on several cores, a block at a time.
const PARALLEL_FROM: u64 = 256 << 10;
/// Read size for large files: enough for BLAKE3's multi-threading to pay off,
/// small enough that memory stays flat whatever the file size (no mmap, whose
/// touched pages would count against the process).
const BLOCK: usize = 1 << 20;

#[derive(Clone, Debug, Default, Serialize)]
pub struct AuditReport {
    pub tag: String,
    pub id: String,
    pub dir: String,
    pub entries_checked: u64,
    pub bytes_hashed: u64,
    pub modified: Vec<Finding>,
    pub missing: Vec<String>,
    pub extra: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Finding {
    pub path: String,
    pub reason: String,
}

impl AuditReport {
    pub fn is_clean(&self) -> bool {
        self.modified.is_empty() && self.missing.is_empty() && self.extra.is_empty()
    }
}

/// Audits an installed release, or the current one when `tag` is None.
pub fn audit_release(root: &Root, tag: Option<&str>) -> Result<AuditReport> {
    let tag = match tag {
        Some(t) => t.to_string(),
        None => root
            .current()?
            .ok_or_else(|| Error::NoCurrent(root.path().to_path_buf()))?,
    };
    let v = root.manifest(&tag, None)?;
    let dir = root.release_dir(&tag);
    let mut report = audit_tree(&dir, &v.manifest)?;
    report.tag = tag;
    report.id = v.id.to_hex();
    Ok(report)
}

enum Seen {
    Dir,
    File { executable: bool, size: u64 },
    Symlink,
    Other,
}

/// Compares the tree at `dir` with `m`.
pub fn audit_tree(dir: &Path, m: &Manifest) -> Result<AuditReport> {
    let top = fs::symlink_metadata(dir).at(dir)?;
    if !top.is_dir() {
        return Err(Error::NotADirectory(dir.to_path_buf()));
    }
    let mut seen = HashMap::new();
    walk(dir, "", &mut seen)?;
    let mut report = AuditReport {
        tag: m.tag.clone(),
        dir: dir.display().to_string(),
        ..Default::default()
    };
    let mut to_hash = Vec::new();
    for e in &m.entries {
        report.entries_checked += 1;
        let Some(actual) = seen.remove(e.path.as_str()) else {
            report.missing.push(e.path.clone());
            continue;
        };
        let mut differs = |reason: String| {
            report.modified.push(Finding {
                path: e.path.clone(),
                reason,
            })
        };
        match (&e.kind, actual) {
            (EntryKind::Dir, Seen::Dir) => {}
            (EntryKind::Symlink { target }, Seen::Symlink) => {
                let p = dir.join(&e.path);
                let now = fs::read_link(&p).at(&p)?;
                if now.as_os_str() != target.as_str() {
                    differs(format!(
                        "symlink points to {:?}, not {target:?}",
                        now.display()
                    ));
                }
            }
            (
                EntryKind::File {
                    executable,
                    size,
                    hash,
                    ..
                },
                Seen::File {
                    executable: x,
                    size: s,
                },
            ) => {
                if *size != s {
                    differs(format!("size is {s}, not {size}"));
                } else if *executable != x {
                    differs(format!(
                        "executable bit is {}",
                        if x { "set" } else { "clear" }
                    ));
                } else {
                    to_hash.push((e.path.as_str(), *size, *hash));
                }
            }
            (want, _) => differs(format!("is not a {}", kind_name(want))),
        }
    }
    let hashed: Vec<(Option<Finding>, u64)> = to_hash
        .par_iter()
        .map(|(path, size, want)| {
            let p = dir.join(path);
            let got = hash_file(&p, *size)?;
            let f = (got != *want).then(|| Finding {
                path: path.to_string(),
                reason: "content differs from the manifest".into(),
            });
            Ok((f, *size))
        })
        .collect::<Result<_>>()?;
    for (f, size) in hashed {
        report.bytes_hashed += size;
        report.modified.extend(f);
    }
    report.extra = seen.into_keys().collect();
    report.extra.sort();
    report.modified.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(report)
}

fn kind_name(k: &EntryKind) -> &'static str {
    match k {
        EntryKind::Dir => "directory",
        EntryKind::File { .. } => "regular file",
        EntryKind::Symlink { .. } => "symlink",
    }
}

/// BLAKE3 of a file; large ones are read in blocks and hashed on several cores.
/// `size` is a hint (0 when unknown).
pub fn hash_file(path: &Path, size: u64) -> Result<Hash> {
    use std::io::Read;
    let mut f = fs::File::open(path).at(path)?;
    let size = if size == 0 {
        f.metadata().at(path)?.len()
    } else {
        size
    };
    if size < PARALLEL_FROM {
        let mut buf = Vec::with_capacity(size as usize);
        f.read_to_end(&mut buf).at(path)?;
        return Ok(Hash::of(&buf));
    }
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; BLOCK];
    loop {
        let mut filled = 0;
        while filled < BLOCK {
            let n = f.read(&mut buf[filled..]).at(path)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        if filled == 0 {
            break;
        }
        h.update_rayon(&buf[..filled]);
    }
    Ok(h.finalize().into())
}

fn walk(dir: &Path, prefix: &str, out: &mut HashMap<String, Seen>) -> Result<()> {
    for item in fs::read_dir(dir).at(dir)? {
        let item = item.at(dir)?;
        let name = item.file_name().to_string_lossy().into_owned();
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let md = fs::symlink_metadata(item.path()).at(item.path())?;
        let ft = md.file_type();
        let seen = if ft.is_dir() {
            walk(&item.path(), &path, out)?;
            Seen::Dir
        } else if ft.is_file() {
            Seen::File {
                executable: md.permissions().mode() & 0o111 != 0,
                size: md.len(),
            }
        } else if ft.is_symlink() {
            Seen::Symlink
        } else {
            Seen::Other
        };
        out.insert(path, seen);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;

    #[test]
    fn finds_modified_missing_and_extra() {
        let env = Env::new();
        let big = "x".repeat(300 << 10); // above PARALLEL_FROM
        env.release(
            "v1",
            &[
                ("a", "alpha"),
                ("d/b", "beta"),
                ("d/c", "gamma"),
                ("big", &big),
            ],
        );
        let clean = audit_release(&env.root, Some("v1")).unwrap();
        assert!(clean.is_clean(), "{clean:?}");
        assert_eq!(clean.bytes_hashed, 14 + (300 << 10));

        let dir = env.root.release_dir("v1");
        let rewrite = |p: &str, body: &str| {
            let p = dir.join(p);
            fs::remove_file(&p).unwrap();
            fs::write(&p, body).unwrap();
        };
        rewrite("a", "ALPHA"); // same size, other bytes
        rewrite("big", &"y".repeat(300 << 10));
        fs::remove_file(dir.join("d/b")).unwrap();
        fs::write(dir.join("d/intruder"), "x").unwrap();
        fs::set_permissions(dir.join("d/c"), fs::Permissions::from_mode(0o755)).unwrap();
        let r = audit_release(&env.root, Some("v1")).unwrap();
        assert!(!r.is_clean());
        let modified: Vec<_> = r.modified.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(modified, ["a", "big", "d/c"]);
        assert_eq!(r.missing, ["d/b"]);
        assert_eq!(r.extra, ["d/intruder"]);
    }
}
