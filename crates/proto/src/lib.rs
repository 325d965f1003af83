//! The wire protocol: every message is a frame of a 4-byte big-endian length and a
//! postcard body. The first message on every connection is [`Hello`], which
//! carries [`PROTOCOL_VERSION`]; a peer that speaks another version is refused.
//!
//! Limits are checked on the length prefix, before anything is allocated: a
//! frame may not exceed the limit of the stream it arrives on ([`MAX_CONTROL`]
//! for control and tracker streams, [`MAX_PIECE`] for chunk data, and
//! [`MAX_MANIFEST`] only where a manifest is expected).

use serde::{Deserialize, Serialize};
use shoal_bundle::Hash;

pub mod checks;

pub const PROTOCOL_VERSION: u32 = 9;
/// Control messages: bitfields of up to ~8 million chunks, peer lists, status.
pub const MAX_CONTROL: usize = 1 << 20;
/// Peers a tracker lists at most in one `Peers` answer. A crosser's list
/// shorter than this was not cut: it names every crosser of every other
/// datacenter.
pub const MAX_PEERS: usize = 64;
/// A chunk's compressed bytes (the largest chunk's zstd bound) plus headers.
pub const MAX_PIECE: usize = 4 << 20 | 64 << 10;
/// A signed manifest.
pub const MAX_MANIFEST: usize = shoal_bundle::manifest::MAX_MANIFEST_BYTES + (64 << 10);

pub type ChunkIx = u32;

/// First message of every connection, both ways.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub version: u32,
    pub role: Role,
    pub host: String,
    pub dc: String,
    /// Where this host accepts peer connections (agents and seeds).
    pub listen: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    Agent,
    Seed,
    /// A command-line client (status, announce).
    Client,
}

/// A release the tracker knows of.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseAd {
    pub tag: String,
    pub id: Hash,
    pub chunks: u32,
    pub bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub host: String,
    pub dc: String,
    pub role: Role,
    pub addr: String,
}

/// What a host reports about itself.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostStatus {
    pub staged: Vec<String>,
    pub current: Option<String>,
    pub transfer: Option<Transfer>,
    pub totals: Totals,
    /// Releases that failed their switch, restart or health check here; no
    /// rollback without a tag picks them.
    pub bad: Vec<String>,
    /// The last audit of the current release.
    pub audit: Option<AuditSummary>,
    /// The rollout step running now, e.g. "activating v2".
    pub busy: Option<String>,
    /// Announced releases this host refused to take, and why (an older
    /// release announced as new, an expired one).
    pub refused: Vec<String>,
}

/// One audit of a host's current release.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditSummary {
    pub tag: Option<String>,
    pub clean: bool,
    /// What differs from the manifest (the first few), or why the audit failed.
    pub problems: Vec<String>,
    pub problem_count: u64,
    pub at_unix: u64,
}

/// A rollout step for one agent. Sent as [`Msg::Order`]: postcard bytes signed
/// by a deploy key, because switching releases is a release decision, not a
/// transport one (any cluster member can connect; only the deploy key orders).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub host: String,
    pub action: Action,
    /// Which rollout this step belongs to (for logs).
    pub rollout: String,
    pub issued_unix: u64,
    pub expires_unix: u64,
    /// Random; an agent refuses an order it has already carried out.
    pub nonce: u64,
}

impl Order {
    /// The bytes that are signed and sent.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to a Vec cannot fail")
    }

    /// Decodes untrusted bytes, refusing trailing ones (what was signed must be
    /// all there is).
    pub fn decode(bytes: &[u8]) -> Result<Order, ProtoError> {
        decode_exact(bytes)
    }
}

/// What a deploy-lock request claims; signed by a deploy key, so only a
/// holder of one can lock the cluster, set its target or write its log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockClaim {
    pub token: u64,
    pub holder: String,
    pub purpose: String,
    pub ttl_s: u32,
    pub issued_unix: u64,
}

impl LockClaim {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("serializing to a Vec cannot fail")
    }

    pub fn decode(bytes: &[u8]) -> Result<LockClaim, ProtoError> {
        decode_exact(bytes)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Switch to this installed release.
    Activate {
        tag: String,
        id: Hash,
        restart: Restart,
        drain_ms: u64,
        /// Going back from this release because its rollout failed: once
        /// switched, mark it bad here so no later rollback returns to it.
        abandon: Option<String>,
    },
    /// Switch back to the release this host ran before, skipping bad ones.
    Rollback { restart: Restart, drain_ms: u64 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Restart {
    /// depool, drain, switch, restart, health, repool.
    Graceful,
    /// switch, restart, health: no depool and no drain. Disruptive.
    Emergency,
}

/// What an agent did with an [`Order`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderReport {
    pub host: String,
    pub ok: bool,
    /// Whether `current` moved (false when the release was already current).
    pub switched: bool,
    /// The release current before the order and after it.
    pub before: Option<String>,
    pub after: Option<String>,
    /// The phase that failed (`switch`, `restart`, `health`, ...) and why.
    pub failed: Option<String>,
    pub message: String,
    pub hooks: Vec<HookRun>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HookRun {
    pub phase: String,
    pub ok: bool,
    pub attempts: u32,
    pub millis: u64,
}

/// One line of the deploy log the tracker keeps.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at_unix_ms: u64,
    pub rollout: String,
    /// Who ran it: the operator's user and host.
    pub who: String,
    pub what: String,
    /// The host a per-host line is about.
    pub host: Option<String>,
    pub result: String,
}

/// Counters since the process started.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub bytes_down_cross_dc: u64,
    /// Chunk bytes sent to hosts in other datacenters.
    pub bytes_up_cross_dc: u64,
    pub chunks_fetched: u64,
    pub chunks_rejected: u64,
    pub peers_banned: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub tag: String,
    pub chunks_have: u32,
    pub chunks_total: u32,
    pub bytes_down: u64,
    pub bytes_up: u64,
    pub bytes_down_cross_dc: u64,
}

/// What the tracker knows of the fleet (`GetFleet`'s answer).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetState {
    pub hosts: Vec<HostReport>,
    /// The release the last rollout aimed the fleet at.
    pub target: Option<String>,
    /// Every announced release, oldest first.
    pub releases: Vec<ReleaseAd>,
    /// The release live views follow: the newest announced one, unless a
    /// rollout set the target after it was announced (a rollback), then the
    /// target.
    pub focus: Option<String>,
    /// The running (or last) rollout.
    pub rollout: Option<RolloutProgress>,
}

/// Where a rollout is, as its lock holder tells the tracker, so that live
/// views show the batch switching now and the next.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutProgress {
    pub rollout: String,
    /// "deploy v2", "rollback".
    pub purpose: String,
    pub who: String,
    /// "staging", "batch", "pause", "rolling back", "completed", "stopped: ...".
    pub phase: String,
    /// The hosts of each batch, in order (canaries first).
    pub batches: Vec<Vec<String>>,
    /// The batch running now, or the last one that ran.
    pub current: Option<u32>,
    pub done: bool,
    pub at_unix_ms: u64,
}

/// The tracker's view of one host, for `shoal status`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReport {
    pub host: String,
    pub dc: String,
    pub role: Role,
    pub addr: Option<String>,
    /// Seconds since the tracker last heard from it.
    pub last_seen_s: u64,
    pub status: HostStatus,
}

/// Messages between agents, seeds and the tracker. Byte fields are serde byte
/// strings: postcard encodes them exactly as it does a `Vec<u8>` (length, then
/// bytes), but copies them in one go instead of element by element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    Hello(Hello),
    // --- tracker ---
    /// Seed to tracker: a new release (the signed manifest).
    Announce {
        signed: Vec<u8>,
    },
    /// Tracker to agent (pushed, and in answer to Hello): every known release.
    Releases {
        releases: Vec<ReleaseAd>,
    },
    GetManifest {
        id: Hash,
    },
    Manifest {
        signed: Vec<u8>,
    },
    GetPeers {
        id: Hash,
    },
    Peers {
        id: Hash,
        peers: Vec<PeerInfo>,
        /// The hosts of the asker's datacenter that bring this release's
        /// chunks into it (the asker among them or not). Empty: every listed
        /// agent of the datacenter may.
        crossers: Vec<String>,
    },
    Status(Box<HostStatus>),
    GetFleet,
    Fleet(Box<FleetState>),
    // --- peers ---
    /// Opens a swarm on a peer connection: the sender's chunks of that release.
    Bitfield {
        id: Hash,
        bits: Vec<u8>,
    },
    /// Chunks the sender now holds. Batched: one message every few
    /// milliseconds to a peer in the same datacenter, less often across (a
    /// message per chunk per peer would cost more WAN bytes than the chunks).
    ///
    /// The chunks travel sorted, each as its distance from the one before
    /// ([`gaps`]): a batch's chunks lie a few apart, so most take one byte
    /// instead of the two or three of their indices.
    Have {
        id: Hash,
        #[serde(with = "gaps")]
        chunks: Vec<ChunkIx>,
    },
    Request {
        id: Hash,
        chunk: ChunkIx,
    },
    /// The chunk's compressed bytes, as stored.
    Piece {
        id: Hash,
        chunk: ChunkIx,
        data: Vec<u8>,
    },
    /// The sender does not have the chunk, or will not serve it now.
    Reject {
        id: Hash,
        chunk: ChunkIx,
    },
    /// The sender's upload queue is full: ask someone else, or later.
    Busy {
        id: Hash,
        chunk: ChunkIx,
    },
    Cancel {
        id: Hash,
        chunk: ChunkIx,
    },
    // --- either ---
    Error {
        message: String,
    },
    Ok,
    // --- rollout (added in protocol 3) ---
    /// Takes (or renews, with the same token) the cluster's deploy lock: a
    /// [`LockClaim`] signed by a deploy key.
    Lock {
        #[serde(with = "serde_bytes")]
        claim: Vec<u8>,
        key: [u8; 32],
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    /// The lock's holder names it by its token (a secret only it and the
    /// tracker know), here and in `SetTarget` and `Record`.
    Unlock {
        token: u64,
    },
    /// The release the fleet should run, as `shoal status` compares it.
    SetTarget {
        token: u64,
        tag: String,
    },
    Record {
        token: u64,
        entry: Box<LogEntry>,
    },
    /// An announced release by its tag (answered with `Releases`).
    GetRelease {
        tag: String,
    },
    GetLog {
        last: u32,
    },
    Log {
        entries: Vec<LogEntry>,
    },
    Order {
        #[serde(with = "serde_bytes")]
        order: Vec<u8>,
        key: [u8; 32],
        #[serde(with = "serde_bytes")]
        signature: Vec<u8>,
    },
    OrderDone(Box<OrderReport>),
    Audit,
    Audited(Box<AuditSummary>),
    // --- live views (added in protocol 4) ---
    /// The lock holder's rollout progress.
    Progress {
        token: u64,
        progress: Box<RolloutProgress>,
    },
    // --- patches (added in protocol 6) ---
    /// A chunk, as a patch against `base` (a chunk the asker holds, of
    /// `base_len` plain bytes) if the sender holds that too. Answered with
    /// `Patch`, or with `Piece` when the sender lacks the base or a patch would
    /// not be smaller, or with `Reject` or `Busy` as a `Request` is.
    RequestPatch {
        id: Hash,
        chunk: ChunkIx,
        base: Hash,
        base_len: u32,
    },
    /// The chunk as a zstd frame with the base's plain bytes as its prefix
    /// (`shoal_bundle::patch`).
    Patch {
        id: Hash,
        chunk: ChunkIx,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
    },
    /// A release's signed manifest, as a patch against the signed manifest of
    /// release `base` if the sender has it ([`manifest_answer`]).
    GetManifestPatch {
        id: Hash,
        base: Hash,
    },
    ManifestPatch {
        id: Hash,
        base: Hash,
        #[serde(with = "serde_bytes")]
        patch: Vec<u8>,
    },
    /// A release's signed manifest compressed with zstd, to a host with no
    /// base for a patch ([`manifest_answer`]).
    ManifestCompressed {
        #[serde(with = "serde_bytes")]
        zstd: Vec<u8>,
    },
    // --- fullness (added in protocol 8) ---
    /// On a peer's control stream: the sender has so many pieces arriving
    /// that its downlink has no room (`full`), or has room again. The
    /// receiver's upload slots serve hosts with room first
    /// (`shoal_swarm::Config::full_at`).
    Full {
        full: bool,
    },
}

/// The answer to `GetManifest` or `GetManifestPatch` from a host holding the
/// signed manifest of `id` and, maybe, that of the asker's base: a patch when
/// it has the base and the patch is smaller, the manifest compressed
/// otherwise. Compressed, a manifest is about 30% smaller (paths and sizes
/// compress, hashes do not): the deploy host sends one to each datacenter
/// from the uplink that bounds a deploy, and every host receives one.
pub fn manifest_answer(id: Hash, signed: &[u8], base: Option<(Hash, &[u8])>) -> Msg {
    if let Some((base, base_signed)) = base
        && let Ok(patch) = shoal_bundle::patch::make(base_signed, signed)
        && patch.len() < signed.len()
    {
        return Msg::ManifestPatch { id, base, patch };
    }
    // A patch against nothing is plain zstd.
    match shoal_bundle::patch::make(&[], signed) {
        Ok(zstd) if zstd.len() < signed.len() => Msg::ManifestCompressed { zstd },
        _ => Msg::Manifest {
            signed: signed.to_vec(),
        },
    }
}

/// The signed manifest bytes in an answer to `GetManifest` or
/// `GetManifestPatch`, rebuilt against `base` (the asker's own signed
/// manifest of that release) if it came as a patch. Unverified: the caller
/// checks them as it checks a manifest sent whole.
pub fn manifest_from(reply: Msg, base: Option<(Hash, &[u8])>) -> Option<Vec<u8>> {
    match reply {
        Msg::Manifest { signed } => Some(signed),
        Msg::ManifestPatch { base: b, patch, .. } => {
            let (want, base_signed) = base?;
            if b != want {
                return None;
            }
            shoal_bundle::patch::apply(base_signed, &patch, MAX_MANIFEST).ok()
        }
        // Bounded like a patch: a frame that declares gigabytes is refused.
        Msg::ManifestCompressed { zstd } => {
            shoal_bundle::patch::apply(&[], &zstd, MAX_MANIFEST).ok()
        }
        _ => None,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    #[error("frame of {0} bytes exceeds the limit of {1}")]
    TooLarge(usize, usize),
    #[error("malformed message: {0}")]
    Malformed(String),
    #[error("peer speaks protocol version {0}, this shoal speaks {PROTOCOL_VERSION}")]
    Version(u32),
    #[error("unexpected message: {0}")]
    Unexpected(String),
}

impl Msg {
    /// The frame: length prefix and body.
    pub fn to_frame(&self) -> Vec<u8> {
        let body = postcard::to_stdvec(self).expect("serializing to a Vec cannot fail");
        let mut out = Vec::with_capacity(4 + body.len());
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    pub fn from_body(body: &[u8]) -> Result<Self, ProtoError> {
        decode_exact(body)
    }

    /// A short name for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Msg::Hello(_) => "Hello",
            Msg::Announce { .. } => "Announce",
            Msg::Releases { .. } => "Releases",
            Msg::GetManifest { .. } => "GetManifest",
            Msg::Manifest { .. } => "Manifest",
            Msg::GetPeers { .. } => "GetPeers",
            Msg::Peers { .. } => "Peers",
            Msg::Status(_) => "Status",
            Msg::GetFleet => "GetFleet",
            Msg::Fleet(_) => "Fleet",
            Msg::Lock { .. } => "Lock",
            Msg::Unlock { .. } => "Unlock",
            Msg::SetTarget { .. } => "SetTarget",
            Msg::GetRelease { .. } => "GetRelease",
            Msg::Record { .. } => "Record",
            Msg::GetLog { .. } => "GetLog",
            Msg::Log { .. } => "Log",
            Msg::Order { .. } => "Order",
            Msg::OrderDone(_) => "OrderDone",
            Msg::Audit => "Audit",
            Msg::Audited(_) => "Audited",
            Msg::Progress { .. } => "Progress",
            Msg::RequestPatch { .. } => "RequestPatch",
            Msg::Patch { .. } => "Patch",
            Msg::GetManifestPatch { .. } => "GetManifestPatch",
            Msg::ManifestPatch { .. } => "ManifestPatch",
            Msg::ManifestCompressed { .. } => "ManifestCompressed",
            Msg::Bitfield { .. } => "Bitfield",
            Msg::Have { .. } => "Have",
            Msg::Request { .. } => "Request",
            Msg::Piece { .. } => "Piece",
            Msg::Reject { .. } => "Reject",
            Msg::Busy { .. } => "Busy",
            Msg::Cancel { .. } => "Cancel",
            Msg::Full { .. } => "Full",
            Msg::Error { .. } => "Error",
            Msg::Ok => "Ok",
        }
    }
}

/// A set of chunk indices on the wire: sorted, the first as it is and each
/// other as its distance from the one before, each a postcard varint. Across
/// datacenters every agent tells every peer of every chunk it gets, so the
/// `Have`s of a 1 GiB release of 32 KiB chunks cost each pair 32,768
/// indices; at 2.5 bytes an index (past 16,383 a varint takes three) and 144
/// peers across per crosser, that was about 18% of the release again into
/// every datacenter of `10dc-10000`, in indices alone. Decoded sets
/// come out sorted, so a decoded message encodes back to itself.
mod gaps {
    use super::ChunkIx;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(chunks: &[ChunkIx], s: S) -> Result<S::Ok, S::Error> {
        let mut sorted = chunks.to_vec();
        sorted.sort_unstable();
        let mut prev = 0;
        s.collect_seq(sorted.iter().map(|&c| {
            let gap = c - prev;
            prev = c;
            gap
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ChunkIx>, D::Error> {
        let gaps = Vec::<ChunkIx>::deserialize(d)?;
        let mut at: ChunkIx = 0;
        gaps.into_iter()
            .map(|gap| {
                at = at
                    .checked_add(gap)
                    .ok_or_else(|| D::Error::custom("chunk index beyond 2^32"))?;
                Ok(at)
            })
            .collect()
    }
}

/// Decodes untrusted postcard bytes that must be exactly one value.
fn decode_exact<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let (v, rest) =
        postcard::take_from_bytes::<T>(bytes).map_err(|e| ProtoError::Malformed(e.to_string()))?;
    if !rest.is_empty() {
        return Err(ProtoError::Malformed(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    Ok(v)
}

/// Reads a frame's length prefix and checks it against `limit`.
pub fn frame_len(prefix: [u8; 4], limit: usize) -> Result<usize, ProtoError> {
    let n = u32::from_be_bytes(prefix) as usize;
    if n > limit {
        return Err(ProtoError::TooLarge(n, limit));
    }
    Ok(n)
}

/// Checks a peer's Hello.
pub fn check_hello(m: Msg) -> Result<Hello, ProtoError> {
    match m {
        Msg::Hello(h) if h.version == PROTOCOL_VERSION => Ok(h),
        Msg::Hello(h) => Err(ProtoError::Version(h.version)),
        other => Err(ProtoError::Unexpected(format!(
            "{} before Hello",
            other.name()
        ))),
    }
}

/// A bitfield of `n` chunks, as sent in [`Msg::Bitfield`].
pub fn bits_to_bytes(bits: impl Iterator<Item = bool>, n: usize) -> Vec<u8> {
    let mut out = vec![0u8; n.div_ceil(8)];
    for (i, b) in bits.enumerate().take(n) {
        if b {
            out[i / 8] |= 1 << (i % 8);
        }
    }
    out
}

/// Whether chunk `i` is set in a received bitfield (false when out of range).
pub fn bit(bytes: &[u8], i: usize) -> bool {
    bytes.get(i / 8).is_some_and(|b| b & (1 << (i % 8)) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let msgs = [
            Msg::Hello(Hello {
                version: PROTOCOL_VERSION,
                role: Role::Agent,
                host: "h1".into(),
                dc: "dc1".into(),
                listen: Some("127.0.0.1:7000".into()),
            }),
            Msg::Request {
                id: Hash::of(b"r"),
                chunk: 7,
            },
            Msg::Piece {
                id: Hash::of(b"r"),
                chunk: 7,
                data: vec![1, 2, 3],
            },
            Msg::Full { full: true },
            Msg::Full { full: false },
        ];
        for m in msgs {
            let f = m.to_frame();
            let n = frame_len(f[..4].try_into().unwrap(), MAX_CONTROL).unwrap();
            assert_eq!(n, f.len() - 4);
            assert_eq!(Msg::from_body(&f[4..]).unwrap(), m);
        }
    }

    #[test]
    fn a_manifest_goes_as_a_patch_only_to_a_host_that_can_rebuild_it() {
        let old: Vec<u8> = (0..20_000u32).flat_map(|i| (i * 7).to_le_bytes()).collect();
        let mut new = old.clone();
        new[40_000..40_004].copy_from_slice(b"edit");
        let (id, base) = (Hash::of(&new), Hash::of(&old));
        let answer = manifest_answer(id, &new, Some((base, &old)));
        let Msg::ManifestPatch { patch, .. } = &answer else {
            panic!("{}", answer.name());
        };
        assert!(patch.len() < 200, "{}", patch.len());
        let frame = answer.to_frame();
        let answer = Msg::from_body(&frame[4..]).unwrap();
        assert_eq!(
            manifest_from(answer.clone(), Some((base, &old))),
            Some(new.clone())
        );
        // Against another base, or with none, the patch is useless.
        assert_eq!(manifest_from(answer.clone(), None), None);
        assert_eq!(manifest_from(answer, Some((id, &new))), None);
        // A sender without the base sends the whole manifest, compressed.
        let whole = manifest_answer(id, &new, None);
        let Msg::ManifestCompressed { zstd } = &whole else {
            panic!("{}", whole.name());
        };
        assert!(zstd.len() < new.len(), "{} of {}", zstd.len(), new.len());
        let frame = whole.to_frame();
        let whole = Msg::from_body(&frame[4..]).unwrap();
        assert_eq!(manifest_from(whole, Some((base, &old))), Some(new));
    }

    #[test]
    fn a_compressed_manifest_is_sent_whole_when_it_does_not_shrink_and_never_rebuilt_past_the_limit()
     {
        // Random bytes do not compress: they go as they are.
        let noise: Vec<u8> = (0..128u64)
            .flat_map(|i| Hash::of(&i.to_le_bytes()).0)
            .collect();
        let answer = manifest_answer(Hash::of(&noise), &noise, None);
        assert!(matches!(answer, Msg::Manifest { .. }), "{}", answer.name());
        assert_eq!(manifest_from(answer, None), Some(noise));
        // A small frame that expands past MAX_MANIFEST is refused, not rebuilt.
        let bomb = vec![0u8; MAX_MANIFEST + 1];
        let zstd = shoal_bundle::patch::make(&[], &bomb).unwrap();
        assert!(zstd.len() < 64 << 10);
        assert_eq!(manifest_from(Msg::ManifestCompressed { zstd }, None), None);
        let garbage = Msg::ManifestCompressed {
            zstd: vec![0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3],
        };
        assert_eq!(manifest_from(garbage, None), None);
    }

    #[test]
    fn refuses_oversized_garbled_and_foreign() {
        assert!(matches!(
            frame_len((MAX_CONTROL as u32 + 1).to_be_bytes(), MAX_CONTROL),
            Err(ProtoError::TooLarge(..))
        ));
        assert!(Msg::from_body(&[0xff, 0xff, 0xff]).is_err());
        let mut body = Msg::Ok.to_frame()[4..].to_vec();
        body.push(0);
        assert!(Msg::from_body(&body).is_err());
        let old = Msg::Hello(Hello {
            version: 0,
            role: Role::Seed,
            host: "x".into(),
            dc: "y".into(),
            listen: None,
        });
        assert!(matches!(check_hello(old), Err(ProtoError::Version(0))));
        assert!(matches!(
            check_hello(Msg::Ok),
            Err(ProtoError::Unexpected(_))
        ));
    }

    #[test]
    fn byte_fields_keep_postcards_vec_encoding() {
        // Variant 13, the 32 id bytes, chunk 7, then length 3 and the bytes:
        // what a plain Vec<u8> field gives, so peers of either build agree.
        let id = Hash::of(b"r");
        let body = Msg::Piece {
            id,
            chunk: 7,
            data: vec![1, 2, 3],
        }
        .to_frame()[4..]
            .to_vec();
        let want: Vec<u8> = [&[13u8][..], &id.0, &[7, 3, 1, 2, 3]].concat();
        assert_eq!(body, want);
    }

    #[test]
    fn bitfields() {
        let b = bits_to_bytes([true, false, true, true].into_iter(), 4);
        assert_eq!(b, vec![0b1101]);
        assert!(bit(&b, 0) && !bit(&b, 1) && bit(&b, 3));
        assert!(!bit(&b, 100));
    }

    #[test]
    fn haves_travel_as_sorted_gaps_and_come_back_sorted() {
        let id = Hash::of(b"r");
        let have = |chunks: Vec<ChunkIx>| Msg::Have { id, chunks };
        let back = |m: &Msg| Msg::from_body(&m.to_frame()[4..]).unwrap();
        // Any order, repeats kept: a set, given back sorted.
        assert_eq!(
            back(&have(vec![40_000, 7, 7, u32::MAX, 0])),
            have(vec![0, 7, 7, 40_000, u32::MAX])
        );
        assert_eq!(back(&have(vec![])), have(vec![]));
        // A batch of an agent of a large release: 200 chunks six apart past
        // index 16,384, where an index alone takes three bytes.
        let chunks: Vec<ChunkIx> = (0..200).map(|i| 20_000 + 6 * i).collect();
        let absolute = postcard::to_stdvec(&chunks).unwrap().len();
        let frame = have(chunks.clone()).to_frame().len();
        let gaps = frame - (have(vec![]).to_frame().len() - 1);
        // Both lists start with their length (200: two bytes).
        assert_eq!(absolute, 2 + 3 * 200);
        assert_eq!(gaps, 2 + 3 + 199, "one byte a chunk after the first");
        assert_eq!(back(&have(chunks.clone())), have(chunks));
    }

    #[test]
    fn a_have_whose_gaps_pass_the_largest_index_is_refused() {
        // A Have's body with `gaps` as its list, written by hand.
        let body = |gaps: &[u32]| {
            let mut b = postcard::to_stdvec(&Msg::Have {
                id: Hash::of(b"r"),
                chunks: vec![],
            })
            .unwrap();
            b.pop();
            b.extend(postcard::to_stdvec(gaps).unwrap());
            b
        };
        let err = Msg::from_body(&body(&[1 << 31, 1 << 31])).unwrap_err();
        assert!(matches!(err, ProtoError::Malformed(_)), "{err}");
        assert!(Msg::from_body(&body(&[1 << 31, (1 << 31) - 1])).is_ok());
    }
}
