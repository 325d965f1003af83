//! Leases: a job started with `shoal exec` holds the release that was current
//! when it started, so garbage collection never removes a tree a running
//! process still reads, however many activations happen meanwhile.
//!
//! A lease is a small file under `ROOT/leases/` that its holder keeps locked
//! (flock) for as long as it runs. The kernel drops the lock when the holder
//! exits, however it exits, so a crashed holder's lease reads as dead, and a
//! recycled pid cannot make a dead lease look live.

use crate::error::{Error, IoContext, Result};
use crate::layout::Root;
use serde::Serialize;
use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// A held lease; dropping it ends the lease.
pub struct Lease {
    _file: fs::File,
    path: PathBuf,
    pub tag: String,
    /// The release's directory, resolved: the job runs here, not via `current`.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize)]
pub struct LeaseInfo {
    pub tag: String,
    pub pid: u32,
    pub since_unix: u64,
    pub command: String,
    /// False when the holder is gone (crashed or killed without cleaning up).
    pub live: bool,
    #[serde(skip)]
    pub file: PathBuf,
}

/// Takes a lease on the current release for `command` (a description for
/// `shoal releases`). Under the root lock, so a collection cannot remove the
/// release between reading `current` and the lease appearing.
pub fn take(root: &Root, command: &str) -> Result<Lease> {
    let _lock = root.lock_existing()?;
    let tag = root
        .current()?
        .ok_or_else(|| Error::NoCurrent(root.path().to_path_buf()))?;
    let dir = root.leases_dir();
    fs::create_dir_all(&dir).at(&dir)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let (since, nanos) = (now.as_secs(), now.subsec_nanos());
    let name = format!("{}-{since}-{nanos}", std::process::id());
    // Written and locked under a name listings skip, then renamed: a lease is
    // never seen unlocked (that would read as dead).
    let tmp = dir.join(format!(".{name}"));
    let path = dir.join(format!("{name}.lease"));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .at(&tmp)?;
    f.lock().at(&tmp)?;
    let command = command.replace('\n', " ");
    writeln!(f, "{tag}\n{}\n{since}\n{command}", std::process::id()).at(&tmp)?;
    f.sync_data().at(&tmp)?;
    fs::rename(&tmp, &path).at(&path)?;
    Ok(Lease {
        _file: f,
        path,
        dir: root.release_dir(&tag),
        tag,
    })
}

impl Lease {
    /// Lets the processes this one starts hold the lease too: the locked file
    /// stays open in them (it is opened close-on-exec), so the lease lives as
    /// long as the job does even when `shoal exec` itself is killed.
    pub fn share_with_children(&self) -> Result<()> {
        rustix::io::fcntl_setfd(&self._file, rustix::io::FdFlags::empty())
            .map_err(std::io::Error::from)
            .at(&self.path)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Every lease file, live or dead.
pub fn list(root: &Root) -> Result<Vec<LeaseInfo>> {
    let dir = root.leases_dir();
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).at(&dir),
    };
    let mut out = Vec::new();
    for e in entries {
        let path = e.at(&dir)?.path();
        if path.extension().and_then(|x| x.to_str()) != Some("lease") {
            continue;
        }
        let f = match fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue, // just ended
            Err(e) => return Err(e).at(&path),
        };
        let live = match f.try_lock_shared() {
            Ok(()) => false,
            Err(fs::TryLockError::WouldBlock) => true,
            Err(fs::TryLockError::Error(e)) => return Err(e).at(&path),
        };
        let text = fs::read_to_string(&path).unwrap_or_default();
        let mut lines = text.lines();
        let tag = lines.next().unwrap_or_default().to_string();
        let pid = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let since_unix = lines.next().and_then(|l| l.parse().ok()).unwrap_or(0);
        let command = lines.next().unwrap_or_default().to_string();
        out.push(LeaseInfo {
            tag,
            pid,
            since_unix,
            command,
            live,
            file: path,
        });
    }
    out.sort_by_key(|l| (l.since_unix, l.pid));
    Ok(out)
}

/// Tags held by live leases; dead lease files are removed on the way. Call
/// under the root lock.
pub(crate) fn live_tags_pruning(root: &Root) -> Result<std::collections::HashSet<String>> {
    let mut live = std::collections::HashSet::new();
    for l in list(root)? {
        if l.live {
            live.insert(l.tag);
        } else {
            tracing::info!(tag = %l.tag, pid = l.pid, "removing a dead lease");
            let _ = fs::remove_file(&l.file);
        }
    }
    Ok(live)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activate::activate;
    use crate::testutil::Env;

    #[test]
    fn a_lease_is_live_while_held_and_dead_once_dropped() {
        let env = Env::new();
        env.release("v1", &[("f", "1")]);
        assert!(matches!(take(&env.root, "job"), Err(Error::NoCurrent(_))));
        activate(&env.root, "v1").unwrap();
        let lease = take(&env.root, "job --flag").unwrap();
        assert_eq!(lease.tag, "v1");
        assert_eq!(lease.dir, env.root.release_dir("v1"));
        let l = list(&env.root).unwrap();
        assert_eq!(l.len(), 1);
        assert!(l[0].live);
        assert_eq!(
            (l[0].command.as_str(), l[0].pid),
            ("job --flag", std::process::id())
        );
        // A holder that vanished without removing its file: the lock is gone.
        let stale = env.root.leases_dir().join("1-2-3.lease");
        fs::write(&stale, "v1\n1\n2\ncrashed job\n").unwrap();
        let l = list(&env.root).unwrap();
        assert_eq!(l.iter().filter(|l| l.live).count(), 1);
        assert!(!l.iter().find(|l| l.command == "crashed job").unwrap().live);
        let live = live_tags_pruning(&env.root).unwrap();
        assert!(live.contains("v1"));
        assert!(!stale.exists(), "a dead lease is pruned");
        drop(lease);
        assert!(list(&env.root).unwrap().is_empty());
    }
}
