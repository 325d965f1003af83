//! Deploy keys and signed manifests.
//!
//! The deploy key (ed25519) signs the release id together with the release's
//! [`Freshness`]: a counter that only grows from one release to the next, and
//! an expiry. The id stays the hash of the manifest alone (the same tree gives
//! the same id), while the signature also vouches for which release is newer
//! and until when it may be taken, as The Update Framework's timestamp and
//! snapshot roles do: an agent refuses an older release announced as new
//! (rollback attack) and an expired one (freeze attack). Agents pin the public
//! keys they trust; transport trust (the cluster CA) is separate and is not
//! consulted here.
//! Key files are one line of text: `shoal-deploy-secret-v1 <hex>` and
//! `shoal-deploy-key-v1 <hex>`.

use crate::error::{Error, IoContext, ManifestError, Result};
use crate::hash::Hash;
use crate::manifest::{MAX_MANIFEST_BYTES, Manifest, check_version};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub const SIGNED_VERSION: u32 = 2;
const SECRET_PREFIX: &str = "shoal-deploy-secret-v1 ";
const PUBLIC_PREFIX: &str = "shoal-deploy-key-v1 ";
/// Domain separation: a shoal signature can never be replayed as another protocol's.
const CONTEXT: &[u8] = b"shoal release manifest v2\0";
/// Rollout orders are signed under their own context, so an order's signature
/// can never pass for a manifest's, nor the reverse.
const ORDER_CONTEXT: &[u8] = b"shoal rollout order v1\0";
const LOCK_CONTEXT: &[u8] = b"shoal deploy lock v1\0";

/// What a detached deploy-key signature is for; each has its own context.
#[derive(Clone, Copy, Debug)]
pub enum Signs {
    /// A rollout order to one agent.
    Order,
    /// A claim on the cluster's deploy lock.
    Lock,
}

impl Signs {
    fn context(self) -> &'static [u8] {
        match self {
            Signs::Order => ORDER_CONTEXT,
            Signs::Lock => LOCK_CONTEXT,
        }
    }
}

/// Which release is newer, and until when a release may be newly taken;
/// signed with the release id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Grows with every release packed (by default the packing time in
    /// milliseconds, and always above the store's last).
    pub counter: u64,
    /// After this Unix time no agent takes the release as new (one already
    /// installed can still be switched to by an operator).
    pub expires_unix: u64,
}

/// The envelope stored beside chunks and sent to agents.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SignedManifest {
    pub version: u32,
    /// The canonical manifest encoding; its BLAKE3 is the release id.
    #[serde(with = "serde_bytes")]
    pub manifest: Vec<u8>,
    pub freshness: Freshness,
    /// The public key that signed (must be one the reader trusts).
    pub key: [u8; 32],
    /// 64 signature bytes (serde has no 64-byte arrays).
    #[serde(with = "serde_bytes")]
    pub signature: Vec<u8>,
}

/// A manifest whose signature, key and contents have all been checked.
#[derive(Clone, Debug)]
pub struct Verified {
    pub manifest: Manifest,
    pub id: Hash,
    pub freshness: Freshness,
    /// The envelope as received, to store beside the installed release.
    pub signed_bytes: Vec<u8>,
}

#[derive(Clone)]
pub struct DeployKey(SigningKey);

impl DeployKey {
    pub fn generate() -> Result<Self> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
        Ok(DeployKey(SigningKey::from_bytes(&seed)))
    }

    pub fn public(&self) -> TrustedKey {
        TrustedKey(self.0.verifying_key())
    }

    /// Writes the secret key (mode 0600) to `path` and the public key to `path.pub`.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .at(path)?;
        writeln!(f, "{SECRET_PREFIX}{}", hex(self.0.as_bytes())).at(path)?;
        self.public().save(&pub_path(path))
    }

    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_key_line(path, SECRET_PREFIX)?;
        Ok(DeployKey(SigningKey::from_bytes(&bytes)))
    }

    /// Signs a manifest and its freshness, returning the envelope's bytes and
    /// the release id.
    pub fn sign(&self, manifest: &Manifest, freshness: Freshness) -> (Vec<u8>, Hash) {
        let encoded = manifest.encode();
        let id = Hash::of(&encoded);
        let signature = self.0.sign(&signed_message(&id, &freshness));
        let env = SignedManifest {
            version: SIGNED_VERSION,
            manifest: encoded,
            freshness,
            key: self.0.verifying_key().to_bytes(),
            signature: signature.to_bytes().to_vec(),
        };
        (postcard::to_stdvec(&env).expect("Vec output"), id)
    }
}

impl DeployKey {
    /// Signs a rollout order's bytes: the public key and the 64 signature bytes.
    pub fn sign_order(&self, order: &[u8]) -> ([u8; 32], Vec<u8>) {
        self.sign_for(Signs::Order, order)
    }

    /// Signs `bytes` for `what`: the public key and the 64 signature bytes.
    pub fn sign_for(&self, what: Signs, bytes: &[u8]) -> ([u8; 32], Vec<u8>) {
        let sig = self.0.sign(&[what.context(), bytes].concat());
        (self.0.verifying_key().to_bytes(), sig.to_bytes().to_vec())
    }
}

/// Checks a rollout order's signature against the trusted deploy keys.
pub fn verify_order(
    order: &[u8],
    key: &[u8; 32],
    signature: &[u8],
    trusted: &[TrustedKey],
) -> Result<(), ManifestError> {
    verify_for(Signs::Order, order, key, signature, trusted)
}

/// Checks a detached signature made for `what` against the trusted deploy keys.
pub fn verify_for(
    what: Signs,
    bytes: &[u8],
    key: &[u8; 32],
    signature: &[u8],
    trusted: &[TrustedKey],
) -> Result<(), ManifestError> {
    let order = bytes;
    let key = VerifyingKey::from_bytes(key).map_err(|_| ManifestError::BadSignature)?;
    if !trusted.iter().any(|t| t.0 == key) {
        return Err(ManifestError::UntrustedKey(hex(key.as_bytes())));
    }
    let signature = Signature::from_slice(signature).map_err(|_| ManifestError::BadSignature)?;
    key.verify_strict(&[what.context(), order].concat(), &signature)
        .map_err(|_| ManifestError::BadSignature)
}

/// A public deploy key that an agent trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrustedKey(pub VerifyingKey);

impl TrustedKey {
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = read_key_line(path, PUBLIC_PREFIX)?;
        VerifyingKey::from_bytes(&bytes)
            .map(TrustedKey)
            .map_err(|_| Error::BadKey {
                path: path.to_path_buf(),
                reason: "not a valid ed25519 public key".into(),
            })
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        fs::write(path, format!("{PUBLIC_PREFIX}{}\n", hex(self.0.as_bytes()))).at(path)
    }

    pub fn fingerprint(&self) -> String {
        hex(self.0.as_bytes())
    }
}

/// `FILE.pub` for a secret key `FILE`.
pub fn pub_path(path: &Path) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    s.into()
}

fn signed_message(id: &Hash, f: &Freshness) -> Vec<u8> {
    [
        CONTEXT,
        &id.0,
        &f.counter.to_be_bytes(),
        &f.expires_unix.to_be_bytes(),
    ]
    .concat()
}

impl Verified {
    /// Whether a host may take this release as a new one: it has not
    /// expired, and it is newer than every release the host installed
    /// (`newest`, the highest counter it took). An operator's rollback to a
    /// release already installed does not ask this.
    pub fn check_fresh(&self, now_unix: u64, newest: Option<u64>) -> Result<(), ManifestError> {
        let f = self.freshness;
        if f.expires_unix <= now_unix {
            return Err(ManifestError::Expired {
                tag: self.manifest.tag.clone(),
                expired_unix: f.expires_unix,
            });
        }
        if let Some(n) = newest
            && f.counter <= n
        {
            return Err(ManifestError::NotNewer {
                tag: self.manifest.tag.clone(),
                counter: f.counter,
                newest: n,
            });
        }
        Ok(())
    }
}

/// Decodes an untrusted envelope: bounded size, known version, a trusted key, a
/// valid signature over the release id, then a valid manifest.
pub fn open_signed(bytes: &[u8], trusted: &[TrustedKey]) -> Result<Verified, ManifestError> {
    if bytes.len() > MAX_MANIFEST_BYTES + 1024 {
        return Err(ManifestError::TooLarge(bytes.len(), MAX_MANIFEST_BYTES));
    }
    check_version("signed manifest", bytes, SIGNED_VERSION)?;
    let env = decode_envelope(bytes)?;
    let key = VerifyingKey::from_bytes(&env.key).map_err(|_| ManifestError::BadSignature)?;
    if !trusted.iter().any(|t| t.0 == key) {
        return Err(ManifestError::UntrustedKey(hex(&env.key)));
    }
    let signature =
        Signature::from_slice(&env.signature).map_err(|_| ManifestError::BadSignature)?;
    let id = Hash::of(&env.manifest);
    key.verify_strict(&signed_message(&id, &env.freshness), &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    let manifest = Manifest::decode(&env.manifest)?;
    Ok(Verified {
        manifest,
        id,
        freshness: env.freshness,
        signed_bytes: bytes.to_vec(),
    })
}

/// The envelope before releases carried their freshness (format 1).
#[derive(Deserialize)]
struct SignedManifestV1 {
    #[allow(dead_code)] // read to get past it
    version: u32,
    #[serde(with = "serde_bytes")]
    manifest: Vec<u8>,
    key: [u8; 32],
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// Decodes an envelope, refusing trailing bytes (what was signed must be all
/// there is). Format 1 (no freshness) still decodes, as counter 0 that never
/// expires, so releases installed before an upgrade stay readable; only
/// [`open_signed`] decides what is acceptable as new, and it takes format 2.
pub(crate) fn decode_envelope(bytes: &[u8]) -> Result<SignedManifest, ManifestError> {
    if bytes.first() == Some(&1) {
        let (v1, rest): (SignedManifestV1, _) =
            postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
        if !rest.is_empty() {
            return Err(ManifestError::Decode(format!(
                "{} trailing bytes after the signed manifest",
                rest.len()
            )));
        }
        return Ok(SignedManifest {
            version: 1,
            manifest: v1.manifest,
            freshness: Freshness {
                counter: 0,
                expires_unix: u64::MAX,
            },
            key: v1.key,
            signature: v1.signature,
        });
    }
    let (env, rest): (SignedManifest, _) =
        postcard::take_from_bytes(bytes).map_err(|e| ManifestError::Decode(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ManifestError::Decode(format!(
            "{} trailing bytes after the signed manifest",
            rest.len()
        )));
    }
    Ok(env)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn read_key_line(path: &Path, prefix: &str) -> Result<[u8; 32]> {
    let text = fs::read_to_string(path).at(path)?;
    let bad = |reason: &str| Error::BadKey {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let hexpart = text.trim().strip_prefix(prefix).ok_or_else(|| {
        bad(&format!(
            "expected a line starting with {:?}",
            prefix.trim()
        ))
    })?;
    let mut out = [0u8; 32];
    if hexpart.len() != 64 {
        return Err(bad("expected 64 hex digits"));
    }
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&hexpart[2 * i..2 * i + 2], 16)
            .map_err(|_| bad("expected 64 hex digits"))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_verify_only_under_their_own_context_and_key() {
        let k = DeployKey::generate().unwrap();
        let other = DeployKey::generate().unwrap();
        let (key, sig) = k.sign_order(b"activate v2");
        let trusted = [k.public()];
        assert!(verify_order(b"activate v2", &key, &sig, &trusted).is_ok());
        assert!(verify_order(b"activate v3", &key, &sig, &trusted).is_err());
        assert!(matches!(
            verify_order(b"activate v2", &key, &sig, &[other.public()]),
            Err(ManifestError::UntrustedKey(_))
        ));
        // A lock claim's signature over the same bytes does not pass as an order's.
        let (_, lock_sig) = k.sign_for(Signs::Lock, b"activate v2");
        assert!(verify_order(b"activate v2", &key, &lock_sig, &trusted).is_err());
        assert!(verify_for(Signs::Lock, b"activate v2", &key, &lock_sig, &trusted).is_ok());
        // A manifest signature over the same bytes does not pass as an order's.
        let id = Hash::of(b"activate v2");
        let manifest_sig = k.0.sign(&signed_message(&id, &FRESH));
        assert!(verify_order(&id.0, &key, &manifest_sig.to_bytes(), &trusted).is_err());
    }
    use crate::chunk::ChunkParams;
    use crate::manifest::MANIFEST_VERSION;

    const FRESH: Freshness = Freshness {
        counter: 7,
        expires_unix: u64::MAX,
    };

    fn sample() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            tag: "v1".into(),
            chunking: ChunkParams::default(),
            entries: vec![],
            chunks: vec![],
        }
    }

    #[test]
    fn sign_open_and_refuse() {
        let k = DeployKey::generate().unwrap();
        let other = DeployKey::generate().unwrap();
        let (bytes, id) = k.sign(&sample(), FRESH);
        let v = open_signed(&bytes, &[other.public(), k.public()]).unwrap();
        assert_eq!(v.id, id);
        assert_eq!(v.manifest, sample());
        assert_eq!(v.freshness, FRESH);

        assert!(matches!(
            open_signed(&bytes, &[other.public()]),
            Err(ManifestError::UntrustedKey(_))
        ));
        // A signature made by the trusted key over another manifest.
        let mut env: SignedManifest = postcard::from_bytes(&bytes).unwrap();
        let mut m2 = sample();
        m2.tag = "v2".into();
        env.manifest = m2.encode();
        let forged = postcard::to_stdvec(&env).unwrap();
        assert!(matches!(
            open_signed(&forged, &[k.public()]),
            Err(ManifestError::BadSignature)
        ));
        // The freshness is signed too: a relay cannot make a release look
        // newer, or extend its life.
        for f in [
            Freshness {
                counter: 8,
                ..FRESH
            },
            Freshness {
                expires_unix: 1,
                ..FRESH
            },
        ] {
            let mut env: SignedManifest = postcard::from_bytes(&bytes).unwrap();
            env.freshness = f;
            assert!(matches!(
                open_signed(&postcard::to_stdvec(&env).unwrap(), &[k.public()]),
                Err(ManifestError::BadSignature)
            ));
        }
        // Missing signature.
        env.signature.clear();
        let unsigned = postcard::to_stdvec(&env).unwrap();
        assert!(matches!(
            open_signed(&unsigned, &[k.public()]),
            Err(ManifestError::BadSignature)
        ));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deploy.key");
        let k = DeployKey::generate().unwrap();
        k.save(&path).unwrap();
        let again = DeployKey::load(&path).unwrap();
        assert_eq!(again.public(), k.public());
        assert_eq!(TrustedKey::load(&pub_path(&path)).unwrap(), k.public());
        assert!(DeployKey::load(&pub_path(&path)).is_err());
        assert!(k.save(&path).is_err(), "never overwrites a key");
    }

    #[test]
    fn only_unexpired_newer_releases_are_fresh() {
        let k = DeployKey::generate().unwrap();
        let f = Freshness {
            counter: 100,
            expires_unix: 5_000,
        };
        let v = open_signed(&k.sign(&sample(), f).0, &[k.public()]).unwrap();
        assert!(v.check_fresh(4_999, None).is_ok());
        assert!(v.check_fresh(4_999, Some(99)).is_ok());
        assert!(matches!(
            v.check_fresh(5_000, None),
            Err(ManifestError::Expired {
                expired_unix: 5_000,
                ..
            })
        ));
        for newest in [100, 101] {
            assert!(matches!(
                v.check_fresh(0, Some(newest)),
                Err(ManifestError::NotNewer { counter: 100, .. })
            ));
        }
    }

    #[test]
    fn format_1_envelopes_still_read_as_installed_but_are_not_taken_as_new() {
        #[derive(Serialize)]
        struct V1<'a> {
            version: u32,
            #[serde(with = "serde_bytes")]
            manifest: &'a [u8],
            key: [u8; 32],
            #[serde(with = "serde_bytes")]
            signature: &'a [u8],
        }
        let k = DeployKey::generate().unwrap();
        let m = sample().encode();
        let sig =
            k.0.sign(&[b"shoal release manifest v1\0".as_slice(), &Hash::of(&m).0].concat());
        let bytes = postcard::to_stdvec(&V1 {
            version: 1,
            manifest: &m,
            key: k.public().0.to_bytes(),
            signature: &sig.to_bytes(),
        })
        .unwrap();
        let env = decode_envelope(&bytes).unwrap();
        assert_eq!(env.manifest, m);
        assert_eq!(env.freshness.counter, 0);
        assert!(matches!(
            open_signed(&bytes, &[k.public()]),
            Err(ManifestError::UnsupportedVersion { found: 1, .. })
        ));
    }
}
