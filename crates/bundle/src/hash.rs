//! The 32-byte BLAKE3 digest that names chunks, files and releases.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Hash(pub [u8; 32]);

impl Hash {
    pub fn of(bytes: &[u8]) -> Self {
        Hash(*blake3::hash(bytes).as_bytes())
    }

    pub fn to_hex(&self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }
}

impl From<blake3::Hash> for Hash {
    fn from(h: blake3::Hash) -> Self {
        Hash(*h.as_bytes())
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", &self.to_hex()[..16])
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a 64-digit hex BLAKE3 hash: {0:?}")]
pub struct BadHash(pub String);

impl FromStr for Hash {
    type Err = BadHash;
    fn from_str(s: &str) -> Result<Self, BadHash> {
        blake3::Hash::from_hex(s)
            .map(Hash::from)
            .map_err(|_| BadHash(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let h = Hash::of(b"shoal");
        assert_eq!(h.to_hex().parse::<Hash>().unwrap(), h);
        assert!("zz".parse::<Hash>().is_err());
    }
}
