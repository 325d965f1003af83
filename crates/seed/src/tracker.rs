//! The tracker: releases announced (signed manifests), hosts seen, and their
//! reported status. Its per-host state is a few strings and counters, never a
//! per-chunk map, so it holds large fleets.

use crate::peers::{Candidate, Roster};
use shoal_bundle::Hash;
use shoal_bundle::signing::{TrustedKey, open_signed};
use shoal_node::Control;
use shoal_proto::{
    FleetState, Hello, HostReport, HostStatus, LogEntry, Msg, PeerInfo, ReleaseAd, Role,
    RolloutProgress,
};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
// tokio's clock, so a simulated fleet (netsim) can run in virtual time.
use tokio::time::Instant;

/// Hosts not heard from for this long are left out of peer lists.
const STALE_S: u64 = 60;

struct HostEntry {
    dc: String,
    role: Role,
    addr: Option<String>,
    last_seen: Instant,
    status: HostStatus,
}

/// Deploy log lines kept in memory (the file keeps them all).
const LOG_KEPT: usize = 10_000;
/// The longest a deploy lock may be taken for without renewal.
const MAX_LOCK_TTL_S: u32 = 600;
/// How far a lock claim's issue time may be from the tracker's clock.
const LOCK_CLAIM_SKEW_S: u64 = 300;
const NOT_HOLDER: &str = "only the holder of the deploy lock may do this (take it with a rollout)";

#[derive(Default)]
struct State {
    releases: Vec<(ReleaseAd, Arc<Vec<u8>>)>,
    hosts: BTreeMap<String, HostEntry>,
    lock: Option<DeployLock>,
    target: Option<String>,
    log: VecDeque<LogEntry>,
    rollout: Option<RolloutProgress>,
    /// How many releases were announced when the target was last set.
    target_at: usize,
}

/// One rollout at a time per cluster. A holder renews it while it runs; a
/// holder that died loses it when the time-to-live runs out.
struct DeployLock {
    token: u64,
    holder: String,
    purpose: String,
    since_unix: u64,
    expires: Instant,
}

/// How long a release's ranked hosts are reused for peer lists.
const ROSTER_TTL: Duration = Duration::from_secs(1);

struct CachedRoster {
    id: Hash,
    hosts: usize,
    built: Instant,
    roster: Arc<Roster>,
    addrs: Arc<Vec<String>>,
}

pub struct Tracker {
    roster_cache: Mutex<Option<CachedRoster>>,
    trusted: Vec<TrustedKey>,
    state: Mutex<State>,
    policy: Mutex<PeerPolicy>,
    /// The deploy log's file (JSON lines), if any.
    log_file: Option<PathBuf>,
}

pub use crate::peers::PeerPolicy;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Manifest(#[from] shoal_bundle::error::ManifestError),
    #[error("release {tag:?} was announced with id {existing}, not {new}")]
    TagConflict {
        tag: String,
        existing: Hash,
        new: Hash,
    },
}

impl Tracker {
    pub fn new(trusted: Vec<TrustedKey>) -> Self {
        Tracker {
            trusted,
            state: Mutex::new(State::default()),
            policy: Mutex::new(PeerPolicy::default()),
            roster_cache: Mutex::new(None),
            log_file: None,
        }
    }

    /// Keeps the deploy log in `path` as JSON lines, reading back what it holds.
    pub fn with_log(mut self, path: PathBuf) -> Self {
        if let Ok(text) = std::fs::read_to_string(&path) {
            let st = self.state.get_mut().expect("tracker lock");
            for line in text.lines() {
                match serde_json::from_str::<LogEntry>(line) {
                    Ok(e) => st.log.push_back(e),
                    Err(e) => {
                        tracing::warn!(file = %path.display(), error = %e, "skipping a deploy log line")
                    }
                }
            }
            while st.log.len() > LOG_KEPT {
                st.log.pop_front();
            }
        }
        self.log_file = Some(path);
        self
    }

    /// The last `n` deploy log lines.
    pub fn log(&self, n: usize) -> Vec<LogEntry> {
        let st = self.state.lock().expect("tracker lock");
        st.log
            .iter()
            .skip(st.log.len().saturating_sub(n))
            .cloned()
            .collect()
    }

    /// The release the fleet should run (as the last rollout set it).
    pub fn target(&self) -> Option<String> {
        self.state.lock().expect("tracker lock").target.clone()
    }

    /// A signed claim on the deploy lock: taken when free or expired, renewed
    /// by its holder (same token), refused otherwise with who holds it.
    fn take_lock(&self, st: &mut State, claim: &[u8], key: &[u8; 32], signature: &[u8]) -> Msg {
        let refuse = |message: String| Msg::Error { message };
        if let Err(e) = shoal_bundle::signing::verify_for(
            shoal_bundle::signing::Signs::Lock,
            claim,
            key,
            signature,
            &self.trusted,
        ) {
            return refuse(format!(
                "the deploy lock needs a claim signed by a trusted deploy key: {e}"
            ));
        }
        let c = match shoal_proto::LockClaim::decode(claim) {
            Ok(c) => c,
            Err(e) => return refuse(e.to_string()),
        };
        if c.issued_unix.abs_diff(unix_now()) > LOCK_CLAIM_SKEW_S {
            return refuse("the lock claim is stale or from the future (check the clocks)".into());
        }
        let ttl = Duration::from_secs(u64::from(c.ttl_s.clamp(1, MAX_LOCK_TTL_S)));
        if let Some(l) = &st.lock
            && l.token != c.token
            && l.expires > Instant::now()
        {
            return refuse(format!(
                "the deploy lock is held by {} ({}) since {}; it expires in {} s unless renewed",
                l.holder,
                l.purpose,
                utc(l.since_unix),
                l.expires
                    .saturating_duration_since(Instant::now())
                    .as_secs()
            ));
        }
        match &mut st.lock {
            Some(l) if l.token == c.token => l.expires = Instant::now() + ttl,
            _ => {
                tracing::info!(holder = %c.holder, purpose = %c.purpose, "deploy lock taken");
                st.lock = Some(DeployLock {
                    token: c.token,
                    holder: c.holder,
                    purpose: c.purpose,
                    since_unix: unix_now(),
                    expires: Instant::now() + ttl,
                });
            }
        }
        Msg::Ok
    }

    /// Whether `token` names the lock held now.
    fn holds(st: &State, token: u64) -> bool {
        st.lock
            .as_ref()
            .is_some_and(|l| l.token == token && l.expires > Instant::now())
    }

    fn record(&self, st: &mut State, entry: LogEntry) -> Msg {
        if let Some(path) = &self.log_file {
            let line = serde_json::to_string(&entry).expect("a log entry serializes");
            let written = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .and_then(|mut f| writeln!(f, "{line}"));
            if let Err(e) = written {
                return Msg::Error {
                    message: format!("cannot write the deploy log {}: {e}", path.display()),
                };
            }
        }
        st.log.push_back(entry);
        if st.log.len() > LOG_KEPT {
            st.log.pop_front();
        }
        Msg::Ok
    }

    pub fn set_policy(&self, policy: PeerPolicy) {
        *self.policy.lock().expect("policy lock") = policy;
    }

    /// Adds a release; its manifest must be signed by a trusted deploy key.
    pub fn announce(&self, signed: Vec<u8>) -> Result<ReleaseAd, TrackerError> {
        let v = open_signed(&signed, &self.trusted)?;
        // Agents would refuse it; saying so here tells whoever announced it.
        if v.freshness.expires_unix <= unix_now() {
            return Err(TrackerError::Manifest(
                shoal_bundle::error::ManifestError::Expired {
                    tag: v.manifest.tag,
                    expired_unix: v.freshness.expires_unix,
                },
            ));
        }
        let ad = ReleaseAd {
            tag: v.manifest.tag.clone(),
            id: v.id,
            chunks: v.manifest.chunks.len() as u32,
            bytes: v.manifest.stream_len(),
        };
        let mut st = self.state.lock().expect("tracker lock");
        if let Some((old, _)) = st.releases.iter().find(|(a, _)| a.tag == ad.tag) {
            if old.id == ad.id {
                return Ok(ad);
            }
            return Err(TrackerError::TagConflict {
                tag: ad.tag,
                existing: old.id,
                new: ad.id,
            });
        }
        tracing::info!(tag = %ad.tag, id = %ad.id, "release announced");
        st.releases.push((ad.clone(), Arc::new(signed)));
        Ok(ad)
    }

    pub fn releases(&self) -> Vec<ReleaseAd> {
        let st = self.state.lock().expect("tracker lock");
        st.releases.iter().map(|(a, _)| a.clone()).collect()
    }

    /// Everything a live view shows: hosts, target, releases, the rollout.
    pub fn state(&self) -> FleetState {
        let st = self.state.lock().expect("tracker lock");
        let focus = match &st.target {
            Some(t) if st.target_at >= st.releases.len() => Some(t.clone()),
            _ => st.releases.last().map(|(a, _)| a.tag.clone()),
        };
        // A rollout whose holder died (its lock lapsed or was released without
        // a last report) is not running any more, whatever it last said.
        let rollout = st.rollout.clone().map(|mut r| {
            let held = st.lock.as_ref().is_some_and(|l| l.expires > Instant::now());
            if !r.done && !held {
                r.done = true;
                r.phase = "abandoned: its deploy lock lapsed".into();
            }
            r
        });
        FleetState {
            hosts: Self::reports(&st),
            target: st.target.clone(),
            releases: st.releases.iter().map(|(a, _)| a.clone()).collect(),
            focus,
            rollout,
        }
    }

    /// Every host the tracker knows, for `shoal status`.
    pub fn fleet(&self) -> Vec<HostReport> {
        Self::reports(&self.state.lock().expect("tracker lock"))
    }

    fn reports(st: &State) -> Vec<HostReport> {
        st.hosts
            .iter()
            .map(|(host, h)| HostReport {
                host: host.clone(),
                dc: h.dc.clone(),
                role: h.role,
                addr: h.addr.clone(),
                last_seen_s: h.last_seen.elapsed().as_secs(),
                status: h.status.clone(),
            })
            .collect()
    }

    /// Live hosts that may hold `id`'s chunks, chosen by [`crate::peers`].
    fn peers(&self, st: &State, from: &Hello, id: Hash) -> Msg {
        let policy = self.policy.lock().expect("policy lock").clone();
        let (roster, addrs) = self.roster(st, id);
        // A fresh random order for every request (RandomState is keyed randomly).
        let shuffle = std::hash::BuildHasher::hash_one(&std::hash::RandomState::new(), 0u8);
        let listing = roster.list(&from.host, &from.dc, &policy, shuffle);
        Msg::Peers {
            id,
            peers: listing
                .peers
                .into_iter()
                .map(|i| {
                    let c = roster.host(i);
                    PeerInfo {
                        host: c.host.clone(),
                        dc: c.dc.clone(),
                        role: c.role,
                        addr: addrs[i].clone(),
                    }
                })
                .collect(),
            crossers: listing.crossers,
        }
    }

    /// The live hosts of a release, ranked: built at most once a second (or
    /// when a host joins), since a fleet asks for peers every few seconds
    /// and building it ranks every host.
    fn roster(&self, st: &State, id: Hash) -> (Arc<Roster>, Arc<Vec<String>>) {
        let mut cache = self.roster_cache.lock().expect("roster lock");
        if let Some(c) = cache.as_ref()
            && c.id == id
            && c.hosts == st.hosts.len()
            && c.built.elapsed() < ROSTER_TTL
        {
            return (c.roster.clone(), c.addrs.clone());
        }
        let mut addrs = Vec::new();
        let candidates = st
            .hosts
            .iter()
            .filter(|(_, h)| {
                h.role != Role::Client
                    && h.last_seen.elapsed().as_secs() < STALE_S
                    && h.addr.is_some()
            })
            .map(|(host, h)| {
                addrs.push(h.addr.clone().unwrap_or_default());
                Candidate {
                    host: host.clone(),
                    dc: h.dc.clone(),
                    role: h.role,
                }
            })
            .collect();
        let roster = Arc::new(Roster::new(candidates, &id));
        let addrs = Arc::new(addrs);
        *cache = Some(CachedRoster {
            id,
            hosts: st.hosts.len(),
            built: Instant::now(),
            roster: roster.clone(),
            addrs: addrs.clone(),
        });
        (roster, addrs)
    }

    fn touch(&self, st: &mut State, from: &Hello) {
        let e = st
            .hosts
            .entry(from.host.clone())
            .or_insert_with(|| HostEntry {
                dc: from.dc.clone(),
                role: from.role,
                addr: None,
                last_seen: Instant::now(),
                status: HostStatus::default(),
            });
        e.dc = from.dc.clone();
        e.role = from.role;
        e.addr = from.listen.clone();
        e.last_seen = Instant::now();
    }
}

impl Control for Tracker {
    fn hello(&self, from: &Hello) {
        if from.role != Role::Client {
            let mut st = self.state.lock().expect("tracker lock");
            self.touch(&mut st, from);
        }
    }

    fn handle(&self, from: &Hello, msg: Msg) -> Msg {
        match msg {
            Msg::Announce { signed } => match self.announce(signed) {
                Ok(_) => Msg::Ok,
                Err(e) => Msg::Error {
                    message: e.to_string(),
                },
            },
            other => {
                let mut st = self.state.lock().expect("tracker lock");
                match other {
                    Msg::Status(status) => {
                        self.touch(&mut st, from);
                        if let Some(h) = st.hosts.get_mut(&from.host) {
                            h.status = *status;
                        }
                        Msg::Releases {
                            releases: st.releases.iter().map(|(a, _)| a.clone()).collect(),
                        }
                    }
                    Msg::GetManifest { id } => manifest(st, from, id, None),
                    Msg::GetManifestPatch { id, base } => manifest(st, from, id, Some(base)),
                    Msg::GetPeers { id } => self.peers(&st, from, id),
                    Msg::GetFleet => {
                        drop(st);
                        Msg::Fleet(Box::new(self.state()))
                    }
                    Msg::Lock {
                        claim,
                        key,
                        signature,
                    } => self.take_lock(&mut st, &claim, &key, &signature),
                    Msg::Unlock { token } => {
                        if st.lock.as_ref().is_some_and(|l| l.token == token) {
                            tracing::info!("deploy lock released");
                            st.lock = None;
                        }
                        Msg::Ok
                    }
                    // Answers with the release, whose id the orders name.
                    Msg::SetTarget { token, tag } if Self::holds(&st, token) => {
                        match st.releases.iter().find(|(a, _)| a.tag == tag) {
                            Some((ad, _)) => {
                                let ad = ad.clone();
                                st.target = Some(tag);
                                st.target_at = st.releases.len();
                                Msg::Releases { releases: vec![ad] }
                            }
                            None => Msg::Error {
                                message: format!("no release {tag:?} was announced"),
                            },
                        }
                    }
                    Msg::GetRelease { tag } => match st.releases.iter().find(|(a, _)| a.tag == tag)
                    {
                        Some((ad, _)) => Msg::Releases {
                            releases: vec![ad.clone()],
                        },
                        None => Msg::Error {
                            message: format!("no release {tag:?} was announced"),
                        },
                    },
                    Msg::Record { token, entry } if Self::holds(&st, token) => {
                        self.record(&mut st, *entry)
                    }
                    Msg::Progress { token, progress } if Self::holds(&st, token) => {
                        st.rollout = Some(*progress);
                        Msg::Ok
                    }
                    Msg::SetTarget { .. } | Msg::Record { .. } | Msg::Progress { .. } => {
                        Msg::Error {
                            message: NOT_HOLDER.into(),
                        }
                    }
                    Msg::GetLog { last } => {
                        drop(st);
                        Msg::Log {
                            entries: self.log(last as usize),
                        }
                    }
                    m => Msg::Error {
                        message: format!("{} is not a tracker request", m.name()),
                    },
                }
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `2026-12-01 22:08:42 UTC`.
pub fn utc(unix: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix as i64) {
        Ok(t) => format!(
            "{}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => format!("{unix} (unix time)"),
    }
}

/// The answer to `GetManifest` (no `base`) or `GetManifestPatch`: the
/// manifest patched against `base` or compressed, built after the lock is
/// released because compressing takes milliseconds.
fn manifest(
    st: std::sync::MutexGuard<'_, State>,
    from: &Hello,
    id: Hash,
    base: Option<Hash>,
) -> Msg {
    let find = |want: Hash| {
        st.releases
            .iter()
            .find(|(a, _)| a.id == want)
            .map(|(_, signed)| signed.clone())
    };
    let (signed, base_signed) = (find(id), base.and_then(find));
    drop(st);
    let Some(signed) = signed else {
        return Msg::Error {
            message: format!("no release {id}"),
        };
    };
    tracing::debug!(host = %from.host, patch = base_signed.is_some(), "manifest sent by the tracker");
    shoal_proto::manifest_answer(
        id,
        &signed,
        base.zip(base_signed.as_deref())
            .map(|(b, k)| (b, k.as_slice())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_bundle::signing::{DeployKey, Signs};

    fn hello() -> Hello {
        Hello {
            version: shoal_proto::PROTOCOL_VERSION,
            role: Role::Client,
            host: "ops".into(),
            dc: "dc1".into(),
            listen: None,
        }
    }

    fn lock(key: &DeployKey, token: u64, holder: &str, ttl_s: u32) -> Msg {
        let claim = shoal_proto::LockClaim {
            token,
            holder: holder.into(),
            purpose: "deploy v2".into(),
            ttl_s,
            issued_unix: unix_now(),
        }
        .encode();
        let (key, signature) = key.sign_for(Signs::Lock, &claim);
        Msg::Lock {
            claim,
            key,
            signature,
        }
    }

    fn error(m: Msg) -> String {
        match m {
            Msg::Error { message } => message,
            other => panic!("expected an error, got {other:?}"),
        }
    }

    #[test]
    fn the_deploy_lock_needs_a_deploy_key_names_its_holder_and_expires() {
        let deploy = DeployKey::generate().unwrap();
        let stranger = DeployKey::generate().unwrap();
        let t = Tracker::new(vec![deploy.public()]);
        let h = hello();
        assert!(
            error(t.handle(&h, lock(&stranger, 1, "mallory", 60))).contains("trusted deploy key")
        );
        assert_eq!(t.handle(&h, lock(&deploy, 1, "alice@d1", 1)), Msg::Ok);
        let held = error(t.handle(&h, lock(&deploy, 2, "bob@d2", 60)));
        assert!(
            held.contains("alice@d1") && held.contains("deploy v2") && held.contains("since"),
            "{held}"
        );
        // Only the holder's token sets the target or writes the log.
        assert!(
            error(t.handle(
                &h,
                Msg::SetTarget {
                    token: 2,
                    tag: "v1".into()
                }
            ))
            .contains("holder")
        );
        let entry = Box::new(LogEntry {
            at_unix_ms: 0,
            rollout: "r".into(),
            who: "bob".into(),
            what: "forged".into(),
            host: None,
            result: "ok".into(),
        });
        assert!(
            error(t.handle(
                &h,
                Msg::Record {
                    token: 2,
                    entry: entry.clone()
                }
            ))
            .contains("holder")
        );
        assert_eq!(t.handle(&h, Msg::Record { token: 1, entry }), Msg::Ok);
        // Not renewed: after its time-to-live another rollout may take it.
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(t.handle(&h, lock(&deploy, 2, "bob@d2", 60)), Msg::Ok);
        assert!(
            error(t.handle(
                &h,
                Msg::Record {
                    token: 1,
                    entry: Box::new(LogEntry {
                        at_unix_ms: 0,
                        rollout: "r".into(),
                        who: "alice".into(),
                        what: "late".into(),
                        host: None,
                        result: "ok".into(),
                    }),
                }
            ))
            .contains("holder")
        );
        assert_eq!(t.log(10).len(), 1);
    }

    #[test]
    fn rollout_progress_is_the_holders_and_lapses_with_its_lock() {
        let deploy = DeployKey::generate().unwrap();
        let t = Tracker::new(vec![deploy.public()]);
        let h = hello();
        let progress = |token| Msg::Progress {
            token,
            progress: Box::new(RolloutProgress {
                rollout: "r1".into(),
                phase: "batch".into(),
                batches: vec![vec!["web-01".into()]],
                current: Some(0),
                ..Default::default()
            }),
        };
        assert!(error(t.handle(&h, progress(5))).contains("holder"));
        assert!(t.state().rollout.is_none());
        assert_eq!(t.handle(&h, lock(&deploy, 5, "alice@d1", 60)), Msg::Ok);
        assert_eq!(t.handle(&h, progress(5)), Msg::Ok);
        let r = t.state().rollout.unwrap();
        assert_eq!((r.phase.as_str(), r.done), ("batch", false));
        // The holder went away without a last report.
        assert_eq!(t.handle(&h, Msg::Unlock { token: 5 }), Msg::Ok);
        let r = t.state().rollout.unwrap();
        assert!(r.done && r.phase.starts_with("abandoned"), "{r:?}");
    }
}
