//! Activation and rollback: the atomic switch of `ROOT/current`.
//!
//! A new symlink is made under a temporary name and renamed over `current`;
//! rename(2) replaces the old link atomically, so every path lookup through
//! `current` sees the old release or the new one, never neither and never a mix
//! (as long as a request resolves `current` once). The root directory is then
//! fsynced so the switch survives a crash.

use crate::error::{Error, IoContext, Result};
use crate::layout::Root;
use crate::store::fsync_dir;
use crate::tag;
use std::fs;
use std::io::Write;
use std::path::Path;

/// History lines kept when the file is compacted.
const HISTORY_KEEP: usize = 200;

/// Points `current` at an installed release. The one place `current` is switched.
pub fn switch_current(root: &Root, tag: &str) -> Result<()> {
    let tmp = root.path().join(format!(".current-{}", std::process::id()));
    let _ = fs::remove_file(&tmp);
    let target = Path::new("releases").join(tag::dir_name(tag));
    std::os::unix::fs::symlink(&target, &tmp).at(&tmp)?;
    let link = root.current_link();
    if let Err(e) = fs::rename(&tmp, &link).at(&link) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    fsync_dir(root.path())
}

/// Activates an installed release. Returns false when it was already current.
pub fn activate(root: &Root, tag: &str) -> Result<bool> {
    tag::validate(tag)?;
    let _lock = root.lock_existing()?;
    ensure_installed(root, tag)?;
    if root.current()?.as_deref() == Some(tag) {
        return Ok(false);
    }
    record_then_switch(root, tag)?;
    tracing::info!(tag, "activated");
    Ok(true)
}

/// Switches back to the most recently active release other than the current one
/// that is still installed. No transfer, no assembly. Returns its tag.
pub fn rollback(root: &Root) -> Result<String> {
    let _lock = root.lock_existing()?;
    let current = root.current()?;
    let target = previous(root, current.as_deref())?
        .ok_or_else(|| Error::NothingToRollBack(root.path().to_path_buf()))?;
    record_then_switch(root, &target)?;
    tracing::info!(from = ?current, to = %target, "rolled back");
    Ok(target)
}

/// The release a rollback would go to: the most recently active one that is
/// still installed and not marked bad.
pub fn previous(root: &Root, current: Option<&str>) -> Result<Option<String>> {
    let installed = root.installed()?;
    let bad = root.bad()?;
    Ok(root
        .history()?
        .into_iter()
        .rev()
        .find(|t| Some(t.as_str()) != current && installed.contains(t) && !bad.contains(t)))
}

/// Marks a release bad on this host (or clears the mark), so that no rollback
/// without a named release goes to it. An operator may still name it.
pub fn set_bad(root: &Root, tag: &str, bad: bool) -> Result<()> {
    tag::validate(tag)?;
    let _lock = root.lock_existing()?;
    let mut marked = root.bad()?;
    if marked.iter().any(|t| t == tag) == bad {
        return Ok(());
    }
    marked.retain(|t| t != tag);
    if bad {
        marked.push(tag.to_string());
        tracing::warn!(tag, "release marked bad on this host");
    }
    let text: String = marked.iter().map(|l| format!("{l}\n")).collect();
    crate::store::write_atomically(&root.bad_file(), text.as_bytes(), true)
}

/// Records the activation, then switches. In this order a failure (a full disk,
/// say) leaves `current` where it was and the command reports exactly that; the
/// switch itself failing after the record undoes the record.
fn record_then_switch(root: &Root, tag: &str) -> Result<()> {
    let before = root.history()?;
    record(root, tag)?;
    if let Err(e) = switch_current(root, tag) {
        let text: String = before.iter().map(|l| format!("{l}\n")).collect();
        let _ = crate::store::write_atomically(&root.history_file(), text.as_bytes(), true);
        return Err(e);
    }
    Ok(())
}

fn ensure_installed(root: &Root, tag: &str) -> Result<()> {
    if root.release_dir(tag).is_dir() && root.manifest_file(tag).is_file() {
        Ok(())
    } else {
        Err(Error::NoSuchRelease(
            tag.to_string(),
            root.path().display().to_string(),
        ))
    }
}

/// Appends to the activation history, compacting it now and then.
fn record(root: &Root, tag: &str) -> Result<()> {
    let path = root.history_file();
    let mut lines = root.history()?;
    if lines.len() >= 2 * HISTORY_KEEP {
        lines.push(tag.to_string());
        let keep = lines.split_off(lines.len() - HISTORY_KEEP);
        let text: String = keep.iter().map(|l| format!("{l}\n")).collect();
        return crate::store::write_atomically(&path, text.as_bytes(), true);
    }
    let mut f = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .at(&path)?;
    writeln!(f, "{tag}").at(&path)?;
    f.sync_data().at(&path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::Env;

    #[test]
    fn activate_and_roll_back() {
        let env = Env::new();
        env.release("v1", &[("f", "1")]);
        env.release("v2", &[("f", "2")]);
        assert!(matches!(
            rollback(&env.root),
            Err(Error::NothingToRollBack(_))
        ));
        assert!(activate(&env.root, "v1").unwrap());
        assert!(!activate(&env.root, "v1").unwrap(), "already current");
        assert!(activate(&env.root, "v2").unwrap());
        let read = || fs::read_to_string(env.root.current_link().join("f")).unwrap();
        assert_eq!(read(), "2");
        assert_eq!(rollback(&env.root).unwrap(), "v1");
        assert_eq!(read(), "1");
        assert_eq!(rollback(&env.root).unwrap(), "v2");
        assert_eq!(read(), "2");
        // The link is relative, so the root can be moved or bind-mounted elsewhere.
        assert_eq!(
            fs::read_link(env.root.current_link()).unwrap(),
            Path::new("releases/v2")
        );
        assert!(matches!(
            activate(&env.root, "v9"),
            Err(Error::NoSuchRelease(..))
        ));
    }

    #[test]
    fn rollback_skips_releases_marked_bad() {
        let env = Env::new();
        for (t, c) in [("v1", "1"), ("v2", "2"), ("v3", "3")] {
            env.release(t, &[("f", c)]);
            activate(&env.root, t).unwrap();
        }
        set_bad(&env.root, "v2", true).unwrap();
        assert_eq!(env.root.bad().unwrap(), vec!["v2".to_string()]);
        assert_eq!(
            previous(&env.root, Some("v3")).unwrap().as_deref(),
            Some("v1")
        );
        assert_eq!(rollback(&env.root).unwrap(), "v1");
        // Named, a bad release can still be activated; clearing the mark makes
        // it a rollback target again.
        assert!(activate(&env.root, "v2").unwrap());
        set_bad(&env.root, "v2", false).unwrap();
        assert!(env.root.bad().unwrap().is_empty());
        assert_eq!(
            previous(&env.root, Some("v1")).unwrap().as_deref(),
            Some("v2")
        );
    }
}
