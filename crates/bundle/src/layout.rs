//! The target layout under a root (default `/var/lib/shoal`):
//!
//! ```text
//! ROOT/store/                      chunks shared by all releases
//! ROOT/releases/<tag dir name>/    finished, verified, read-only trees
//! ROOT/releases/.partial-*/        assembly in progress (never a release name)
//! ROOT/releases/.gc-*/             a release being deleted
//! ROOT/manifests/<name>.manifest   the signed manifest of each installed release
//! ROOT/current -> releases/<name>  the live release
//! ROOT/history                     one activated tag per line, oldest first
//! ROOT/bad                         releases that failed a rollout step here
//! ROOT/leases/<n>.lease            a running `shoal exec` job's hold on a release
//! ROOT/.lock                       held while the layout is being changed
//! ```
//!
//! A release exists when its directory under `releases/` does; its manifest is
//! written before the directory is renamed there. Anything `.`-prefixed under
//! `releases/` is leftover work, removed by [`Root::lock`]'s cleanup.

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::signing::{TrustedKey, Verified, open_signed};
use crate::tag;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub struct Root {
    path: PathBuf,
}

/// Holds the root's lock; dropping it releases the lock.
pub struct RootLock {
    _file: fs::File,
}

pub(crate) const PARTIAL_PREFIX: &str = ".partial-";
pub(crate) const GC_PREFIX: &str = ".gc-";

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Root { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn store_dir(&self) -> PathBuf {
        self.path.join("store")
    }
    pub fn releases_dir(&self) -> PathBuf {
        self.path.join("releases")
    }
    pub fn manifests_dir(&self) -> PathBuf {
        self.path.join("manifests")
    }
    pub fn current_link(&self) -> PathBuf {
        self.path.join("current")
    }
    pub fn history_file(&self) -> PathBuf {
        self.path.join("history")
    }
    /// The highest release counter this host installed (kept when releases
    /// are removed: an older release stays refused as new).
    pub fn newest_file(&self) -> PathBuf {
        self.path.join("newest")
    }
    pub fn bad_file(&self) -> PathBuf {
        self.path.join("bad")
    }
    pub fn leases_dir(&self) -> PathBuf {
        self.path.join("leases")
    }
    pub fn release_dir(&self, tag: &str) -> PathBuf {
        self.releases_dir().join(tag::dir_name(tag))
    }
    pub fn manifest_file(&self, tag: &str) -> PathBuf {
        self.manifests_dir()
            .join(format!("{}.manifest", tag::dir_name(tag)))
    }

    /// Creates the layout if needed, takes the exclusive lock (waiting for another
    /// shoal process to finish), and removes what interrupted work left behind.
    pub fn lock(&self) -> Result<RootLock> {
        self.lock_inner(true)
    }

    /// Like [`Root::lock`], but refuses a root that was never set up, so a
    /// mistyped `--root` is an error rather than a new empty layout.
    pub fn lock_existing(&self) -> Result<RootLock> {
        self.lock_inner(false)
    }

    fn lock_inner(&self, create: bool) -> Result<RootLock> {
        if !create && !self.releases_dir().is_dir() {
            return Err(crate::Error::NoRoot(self.path.clone()));
        }
        for d in [self.releases_dir(), self.manifests_dir()] {
            fs::create_dir_all(&d).at(&d)?;
        }
        let lock_path = self.path.join(".lock");
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .at(&lock_path)?;
        file.lock().at(&lock_path)?;
        let lock = RootLock { _file: file };
        self.clean_leftovers()?;
        Ok(lock)
    }

    /// Removes partial and half-deleted release directories, temporary files, and
    /// manifests whose release directory never appeared. Call only under the lock.
    fn clean_leftovers(&self) -> Result<()> {
        let rel = self.releases_dir();
        for item in fs::read_dir(&rel).at(&rel)? {
            let item = item.at(&rel)?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(PARTIAL_PREFIX) || name.starts_with(GC_PREFIX) {
                tracing::info!(dir = %item.path().display(), "removing leftover");
                remove_tree(&item.path())?;
            }
        }
        let man = self.manifests_dir();
        for item in fs::read_dir(&man).at(&man)? {
            let item = item.at(&man)?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            let orphan = match name.strip_suffix(".manifest") {
                Some(stem) => !rel.join(stem).is_dir(),
                None => name.starts_with(".tmp-"),
            };
            if orphan {
                fs::remove_file(item.path()).at(item.path())?;
            }
        }
        for item in fs::read_dir(&self.path).at(&self.path)? {
            let item = item.at(&self.path)?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            // A new `current` link or a history rewrite that never got renamed.
            if name.starts_with(".current-") || name.starts_with(".tmp-") {
                fs::remove_file(item.path()).at(item.path())?;
            }
        }
        Ok(())
    }

    /// Tags of all finished releases (unordered).
    pub fn installed(&self) -> Result<Vec<String>> {
        let rel = self.releases_dir();
        let mut out = Vec::new();
        let items = match fs::read_dir(&rel) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            r => r.at(&rel)?,
        };
        for item in items {
            let item = item.at(&rel)?;
            if let Some(tag) = item.file_name().to_str().and_then(tag::from_dir_name)
                && self.manifest_file(&tag).is_file()
            {
                out.push(tag);
            }
        }
        Ok(out)
    }

    /// Reads and re-verifies the manifest of an installed release.
    pub fn manifest(&self, tag: &str, trusted: Option<&[TrustedKey]>) -> Result<Verified> {
        let path = self.manifest_file(tag);
        let bytes = match fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(crate::Error::NoSuchRelease(
                    tag.to_string(),
                    self.path.display().to_string(),
                ));
            }
            r => r.at(&path)?,
        };
        match trusted {
            Some(keys) => Ok(open_signed(&bytes, keys)?),
            None => Ok(open_installed(&bytes)?),
        }
    }

    /// The tag `current` points to, if any.
    pub fn current(&self) -> Result<Option<String>> {
        let link = self.current_link();
        match fs::read_link(&link) {
            Ok(target) => Ok(target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(tag::from_dir_name)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&link),
        }
    }

    /// Tags in activation order, oldest first.
    pub fn history(&self) -> Result<Vec<String>> {
        read_tags(&self.history_file())
    }

    /// Releases marked bad on this host (a rollout step failed on them).
    pub fn bad(&self) -> Result<Vec<String>> {
        read_tags(&self.bad_file())
    }

    /// The highest release counter installed here, if any release was.
    pub fn newest_counter(&self) -> Result<Option<u64>> {
        let path = self.newest_file();
        match fs::read_to_string(&path) {
            Ok(s) => s.trim().parse().map(Some).map_err(|_| Error::Io {
                path: path.clone(),
                cause: io::Error::new(io::ErrorKind::InvalidData, "not a release counter"),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }

    /// Raises the highest installed counter to `counter` (never lowers it).
    pub fn raise_newest(&self, counter: u64) -> Result<()> {
        if self.newest_counter()?.is_some_and(|n| n >= counter) {
            return Ok(());
        }
        crate::store::write_atomically(&self.newest_file(), format!("{counter}\n").as_bytes(), true)
    }

    /// The id of an installed release (its signature was checked at install).
    pub fn installed_id(&self, tag: &str) -> Result<Hash> {
        Ok(self.manifest(tag, None)?.id)
    }
}

/// A file of one tag per line (lines that are no valid tag are skipped); a
/// missing file is an empty list.
fn read_tags(path: &Path) -> Result<Vec<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(s
            .lines()
            .filter(|l| tag::validate(l).is_ok())
            .map(String::from)
            .collect()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).at(path),
    }
}

/// Opens a manifest that was verified when its release was installed: the signature
/// was checked then against keys that may since have rotated, so only the contents
/// are re-validated here.
fn open_installed(bytes: &[u8]) -> Result<Verified, crate::error::ManifestError> {
    let env = crate::signing::decode_envelope(bytes)?;
    let manifest = crate::manifest::Manifest::decode(&env.manifest)?;
    Ok(Verified {
        id: Hash::of(&env.manifest),
        freshness: env.freshness,
        manifest,
        signed_bytes: bytes.to_vec(),
    })
}

/// Removes a tree, making read-only directories writable first.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(_) => {
            // A directory without write permission (for non-root users) blocks
            // removal of its entries: open them up and try again.
            fn open_up(p: &Path) {
                if let Ok(m) = fs::symlink_metadata(p)
                    && m.is_dir()
                {
                    let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
                    if let Ok(rd) = fs::read_dir(p) {
                        for e in rd.flatten() {
                            open_up(&e.path());
                        }
                    }
                }
            }
            open_up(path);
            fs::remove_dir_all(path).at(path)
        }
    }
}
