//! Free-space checks before assembly.

use crate::error::{Error, Result};
use std::path::Path;

/// Bytes available to unprivileged writers on the filesystem holding `path`.
pub(crate) fn available(path: &Path) -> Result<u64> {
    let st = rustix::fs::statvfs(path).map_err(|e| Error::Io {
        path: path.to_path_buf(),
        cause: e.into(),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Refuses when writing `needed` bytes would leave less than `reserve` free.
pub(crate) fn ensure(path: &Path, needed: u64, reserve: u64) -> Result<()> {
    let available = available(path)?;
    if available.saturating_sub(needed) < reserve || needed > available {
        return Err(Error::InsufficientSpace {
            path: path.to_path_buf(),
            needed,
            available,
            reserve,
        });
    }
    Ok(())
}

/// What a file of `len` bytes takes on disk, at the usual 4 KiB block size.
pub(crate) fn on_disk(len: u64) -> u64 {
    len.div_ceil(4096) * 4096
}
