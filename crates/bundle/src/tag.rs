//! Release tags (`release/2026-11-21/1`) and the directory names they map to.
//!
//! A tag may contain `/`, so it is percent-encoded into one path component. Tags may
//! not start with `.`, so no release directory name can be mistaken for the `.`-prefixed
//! names that partial work uses.

use crate::error::ManifestError;

const MAX_TAG: usize = 128;

fn plain(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-' | b'+' | b'@')
}

/// Checks a tag: 1 to 128 characters from `A-Za-z0-9._-+@:/`, not starting with `.`
/// or `/`, with no empty, `.` or `..` segment.
pub fn validate(tag: &str) -> Result<(), ManifestError> {
    let bad = |why| Err(ManifestError::BadTag(tag.to_string(), why));
    if tag.is_empty() || tag.len() > MAX_TAG {
        return bad("must be 1 to 128 characters");
    }
    if !tag.bytes().all(|c| plain(c) || c == b'/' || c == b':') {
        return bad("may only contain A-Z a-z 0-9 . _ - + @ : /");
    }
    if tag.starts_with('.') {
        return bad("may not start with '.'");
    }
    if tag
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return bad("has an empty, '.' or '..' segment");
    }
    Ok(())
}

/// The directory name of a (valid) tag.
pub fn dir_name(tag: &str) -> String {
    let mut out = String::with_capacity(tag.len() + 8);
    for c in tag.bytes() {
        if plain(c) {
            out.push(c as char);
        } else {
            out.push_str(&format!("%{c:02X}"));
        }
    }
    out
}

/// The tag a directory name stands for, if it is one [`dir_name`] produces.
pub fn from_dir_name(name: &str) -> Option<String> {
    let b = name.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    let tag = String::from_utf8(out).ok()?;
    (validate(&tag).is_ok() && dir_name(&tag) == name).then_some(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags() {
        for ok in ["v1", "release/2026-11-21/1", "a:b@c+d_e.f"] {
            validate(ok).unwrap();
            assert_eq!(from_dir_name(&dir_name(ok)).as_deref(), Some(ok));
            assert!(!dir_name(ok).contains('/'));
        }
        for bad in ["", ".hidden", "/abs", "a//b", "a/../b", "a/", "sp ace", "é"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
        assert_eq!(from_dir_name(".partial-x"), None);
        assert_eq!(from_dir_name("a%2"), None);
    }
}
