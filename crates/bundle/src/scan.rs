//! Walks a release directory into sorted entries, and reads its canonical stream.

use crate::error::{Error, IoContext, Result};
use crate::hash::Hash;
use crate::manifest::validate_path;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub(crate) enum Found {
    Dir,
    File { executable: bool, size: u64 },
    Symlink { target: String },
}

pub(crate) struct FoundEntry {
    pub path: String,
    pub kind: Found,
}

/// Every entry under `root`, sorted by path bytes. Symlinks are read, never followed.
pub(crate) fn scan(root: &Path) -> Result<Vec<FoundEntry>> {
    let meta = fs::metadata(root).at(root)?;
    if !meta.is_dir() {
        return Err(Error::NotADirectory(root.to_path_buf()));
    }
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    out.sort_unstable_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<FoundEntry>) -> Result<()> {
    for item in fs::read_dir(dir).at(dir)? {
        let item = item.at(dir)?;
        let abs = item.path();
        let unpackable = |reason: &str| Error::Unpackable {
            path: abs.clone(),
            reason: reason.to_string(),
        };
        let name = item
            .file_name()
            .into_string()
            .map_err(|_| unpackable("file name is not UTF-8; shoal packs UTF-8 names only"))?;
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        validate_path(&path).map_err(unpackable)?;
        let ft = item.file_type().at(&abs)?;
        let kind = if ft.is_dir() {
            Found::Dir
        } else if ft.is_file() {
            let m = item.metadata().at(&abs)?;
            Found::File {
                executable: m.permissions().mode() & 0o111 != 0,
                size: m.len(),
            }
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).at(&abs)?;
            let target = target
                .into_os_string()
                .into_string()
                .map_err(|_| unpackable("symlink target is not UTF-8"))?;
            Found::Symlink { target }
        } else {
            let what = if ft.is_fifo() {
                "a FIFO"
            } else if ft.is_socket() {
                "a socket"
            } else {
                "a device"
            };
            return Err(unpackable(&format!(
                "is {what}; only files, directories and symlinks can be packed"
            )));
        };
        let is_dir = matches!(kind, Found::Dir);
        out.push(FoundEntry {
            path: path.clone(),
            kind,
        });
        if is_dir {
            walk(&abs, &path, out)?;
        }
    }
    Ok(())
}

/// The canonical stream: the files' bytes one after another, hashing each file as
/// it passes. A file whose length differs from what the scan saw is an error.
pub(crate) struct StreamReader<'p> {
    files: Vec<(PathBuf, u64)>,
    next: usize,
    current: Option<(io::Take<fs::File>, blake3::Hasher, PathBuf)>,
    pub hashes: Vec<Hash>,
    /// The first error, with its path (Read can only return io::Error).
    pub failure: Option<Error>,
    progress: crate::Progress<'p>,
}

impl<'p> StreamReader<'p> {
    pub fn new(files: Vec<(PathBuf, u64)>, progress: crate::Progress<'p>) -> Self {
        let n = files.len();
        StreamReader {
            files,
            next: 0,
            current: None,
            hashes: Vec::with_capacity(n),
            failure: None,
            progress,
        }
    }

    fn fail(&mut self, e: Error) -> io::Error {
        let msg = e.to_string();
        self.failure.get_or_insert(e);
        io::Error::other(msg)
    }

    /// Ends the current file: checks it is not longer than scanned, records its hash.
    fn finish_current(&mut self) -> io::Result<()> {
        if let Some((take, hasher, path)) = self.current.take() {
            let mut file = take.into_inner();
            let mut probe = [0u8; 1];
            match file.read(&mut probe) {
                Ok(0) => {}
                Ok(_) => return Err(self.fail(Error::ChangedWhilePacking(path))),
                Err(e) => return Err(self.fail(Error::Io { path, cause: e })),
            }
            self.hashes.push(hasher.finalize().into());
        }
        Ok(())
    }
}

impl Read for StreamReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if let Some((take, hasher, path)) = &mut self.current {
                let want_more = take.limit() > 0;
                let n = match take.read(buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let path = path.clone();
                        return Err(self.fail(Error::Io { path, cause: e }));
                    }
                };
                if n > 0 {
                    hasher.update(&buf[..n]);
                    (self.progress)(n as u64);
                    return Ok(n);
                }
                if want_more {
                    let path = path.clone();
                    return Err(self.fail(Error::ChangedWhilePacking(path)));
                }
                self.finish_current()?;
            }
            let Some((path, size)) = self.files.get(self.next).cloned() else {
                return Ok(0);
            };
            self.next += 1;
            let file = match fs::File::open(&path) {
                Ok(f) => f,
                Err(e) => return Err(self.fail(Error::Io { path, cause: e })),
            };
            self.current = Some((file.take(size), blake3::Hasher::new(), path));
        }
    }
}
