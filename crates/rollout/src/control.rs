//! The rollout loop: lock, wait for staging, batches of signed orders, the
//! failure limit and the rollback of switched hosts, the deploy log.

use crate::plan::{BatchSize, batches};
use serde::Serialize;
use shoal_bundle::Hash;
use shoal_bundle::signing::{DeployKey, Signs};
use shoal_node::NodeError;
use shoal_node::client::{Client, Conn, unexpected};
use shoal_proto::{
    Action, HostReport, LockClaim, LogEntry, MAX_CONTROL, Msg, Order, OrderReport, Restart, Role,
    RolloutProgress,
};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
// tokio's clock, so a simulated fleet (netsim) can run in virtual time.
use tokio::sync::watch;
use tokio::time::Instant;

/// The deploy lock's time-to-live; it is renewed at a third of it.
const LOCK_TTL_S: u32 = 60;
/// How long a tracker request may take.
const TRACKER_DEADLINE: Duration = Duration::from_secs(10);
/// How often staging progress is read.
const STAGE_POLL: Duration = Duration::from_millis(250);

#[derive(Clone, Debug)]
pub enum Goal {
    /// Switch the fleet to this (announced, staged) release.
    Deploy(String),
    /// Switch the fleet to this kept release, or each host to the one it ran
    /// before (skipping releases marked bad there).
    Rollback(Option<String>),
}

#[derive(Clone, Debug)]
pub struct Options {
    pub batch: BatchSize,
    /// Pause after the canaries and between batches.
    pub interval: Duration,
    pub canary: Vec<String>,
    /// Failures at which the rollout stops and rolls back (0: never stop).
    pub max_failures: usize,
    /// How long a depooled host drains before its switch.
    pub drain: Duration,
    /// Skip depool, drain and repool: restart at once. Disruptive.
    pub emergency: bool,
    /// How long to wait for every live host to stage the release.
    pub stage_timeout: Duration,
    /// How long one host's order (hooks included) may take.
    pub host_timeout: Duration,
    /// Hosts the tracker has not heard from for longer are left out (and
    /// reported) rather than waited for.
    pub live_within: Duration,
    /// Who runs the rollout, for the lock and the log (user@host).
    pub who: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            batch: BatchSize::Percent(10.0),
            interval: Duration::from_secs(5),
            canary: Vec::new(),
            max_failures: 1,
            drain: Duration::from_secs(5),
            emergency: false,
            stage_timeout: Duration::from_secs(600),
            host_timeout: Duration::from_secs(300),
            live_within: Duration::from_secs(30),
            who: "shoal".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RolloutError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("{0}")]
    Locked(String),
    #[error("the tracker knows no release {0:?}: {1}")]
    NotAnnounced(String, String),
    #[error("{tag} was not staged on {} host(s) after {waited:?}: {}", hosts.len(), hosts.join(", "))]
    NotStaged {
        tag: String,
        hosts: Vec<String>,
        waited: Duration,
    },
    #[error("no live agent to switch")]
    NoHosts,
    #[error("interrupted {0}")]
    Interrupted(String),
}

/// One host's part in the rollout.
#[derive(Clone, Debug, Serialize)]
pub struct HostResult {
    pub dc: String,
    /// Index of its batch (0 is the canaries when there are any).
    pub batch: usize,
    pub millis: u64,
    #[serde(flatten)]
    pub report: OrderReport,
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub rollout: String,
    pub goal: String,
    pub tag: Option<String>,
    /// Every host in the rollout runs the goal's release.
    pub ok: bool,
    pub stopped: Option<String>,
    pub batches_planned: usize,
    pub batches_run: usize,
    pub failures: usize,
    pub hosts: Vec<HostResult>,
    /// Hosts switched back after the rollout stopped.
    pub rolled_back: Vec<HostResult>,
    /// Hosts left out, and why.
    pub skipped: BTreeMap<String, String>,
    /// What every agent runs at the end, as far as this rollout knows.
    pub running: BTreeMap<String, Option<String>>,
    pub elapsed_s: f64,
}

/// Per-datacenter staging progress.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DcProgress {
    pub dc: String,
    pub hosts: usize,
    pub staged: usize,
    pub chunks_have: u64,
    pub chunks_total: u64,
}

pub enum Event<'a> {
    Staging(&'a [DcProgress]),
    Batch {
        index: usize,
        of: usize,
        hosts: &'a [String],
        canary: bool,
    },
    Host(&'a HostResult),
    Pause(Duration),
    RollingBack(usize),
}

/// A live agent as the tracker listed it.
#[derive(Clone, Debug)]
struct Target {
    host: String,
    dc: String,
    addr: Option<SocketAddr>,
    current: Option<String>,
}

struct Rollout<'a> {
    client: &'a Client,
    tracker: Arc<Conn>,
    key: &'a DeployKey,
    opts: &'a Options,
    /// The deploy lock's token: it authorises target and log changes.
    token: u64,
    /// Set when a renewal of the lock was refused.
    lost: Arc<AtomicBool>,
    id: String,
    purpose: String,
    conns: tokio::sync::Mutex<HashMap<String, Arc<Conn>>>,
    /// The batches, once planned (for progress reports).
    plan: std::sync::Mutex<Vec<Vec<String>>>,
}

/// Runs a rollout to its end (or until `stop` turns true between batches).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    client: &Client,
    tracker_addr: SocketAddr,
    tracker_host: &str,
    key: &DeployKey,
    goal: Goal,
    opts: &Options,
    stop: watch::Receiver<bool>,
    on_event: &mut (dyn FnMut(Event) + Send),
) -> Result<Report, RolloutError> {
    let tracker = Arc::new(client.connect(tracker_addr, tracker_host).await?);
    let token = random_u64();
    let purpose = match &goal {
        Goal::Deploy(t) => format!("deploy {t}"),
        Goal::Rollback(Some(t)) => format!("rollback to {t}"),
        Goal::Rollback(None) => "rollback".to_string(),
    };
    match tracker
        .request(
            &lock_claim(key, token, &opts.who, &purpose),
            MAX_CONTROL,
            TRACKER_DEADLINE,
        )
        .await
    {
        Ok(_) => {}
        Err(NodeError::Peer { message, .. }) => return Err(RolloutError::Locked(message)),
        Err(e) => return Err(e.into()),
    }
    // Renewed at a third of its life; a renewal the tracker refuses (another
    // rollout took the lock while this one could not reach it) stops this one
    // before its next batch.
    let lost = Arc::new(AtomicBool::new(false));
    let renew = {
        let tracker = tracker.clone();
        let lost = lost.clone();
        let key_bytes = key.clone();
        let who = opts.who.clone();
        let purpose = purpose.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(u64::from(LOCK_TTL_S / 3))).await;
                let m = lock_claim(&key_bytes, token, &who, &purpose);
                match tracker.request(&m, MAX_CONTROL, TRACKER_DEADLINE).await {
                    Ok(_) => {}
                    Err(NodeError::Peer { message, .. }) => {
                        tracing::error!(%message, "the deploy lock was lost");
                        lost.store(true, Ordering::Relaxed);
                        break;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the deploy lock; retrying"),
                }
            }
        })
    };
    let r = Rollout {
        client,
        tracker: tracker.clone(),
        key,
        opts,
        token,
        lost,
        id: format!("{}-{:04x}", unix_ms() / 1000, random_u64() & 0xffff),
        purpose: purpose.clone(),
        conns: tokio::sync::Mutex::new(HashMap::new()),
        plan: std::sync::Mutex::new(Vec::new()),
    };
    r.log(None, &purpose, "started").await;
    let result = r.run(goal, stop, on_event).await;
    let summary = match &result {
        Ok(rep) if rep.ok => "completed".to_string(),
        Ok(rep) => format!(
            "stopped: {}",
            rep.stopped.as_deref().unwrap_or("hosts failed")
        ),
        Err(e) => format!("failed: {e}"),
    };
    r.log(None, &purpose, &summary).await;
    r.progress(&summary, None, true).await;
    renew.abort();
    let _ = tracker
        .request(&Msg::Unlock { token }, MAX_CONTROL, TRACKER_DEADLINE)
        .await;
    for c in r.conns.lock().await.values() {
        c.close();
    }
    tracker.close();
    result
}

impl Rollout<'_> {
    async fn run(
        &self,
        goal: Goal,
        mut stop: watch::Receiver<bool>,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Report, RolloutError> {
        let start = Instant::now();
        let (hosts, prior_target) = self.fleet().await?;
        let mut skipped = BTreeMap::new();
        let mut live = Vec::new();
        for h in hosts.into_iter().filter(|h| h.role == Role::Agent) {
            if Duration::from_secs(h.last_seen_s) > self.opts.live_within {
                skipped.insert(h.host.clone(), format!("not seen for {} s", h.last_seen_s));
            } else {
                live.push(h);
            }
        }
        if live.is_empty() {
            return Err(RolloutError::NoHosts);
        }
        let tag = match &goal {
            Goal::Deploy(t) | Goal::Rollback(Some(t)) => Some(t.clone()),
            Goal::Rollback(None) => None,
        };
        if let Goal::Deploy(t) = &goal {
            self.progress("staging", None, false).await;
            live = self.wait_staged(t, live, &stop, on_event).await?;
        }
        // The release (and its id) the fleet should now run.
        let id = match &tag {
            Some(t) => Some(self.set_target(t).await?),
            None => None,
        };
        let targets: Vec<Target> = live
            .iter()
            .map(|h| Target {
                host: h.host.clone(),
                dc: h.dc.clone(),
                addr: h.addr.as_deref().and_then(|a| a.parse().ok()),
                current: h.status.current.clone(),
            })
            .collect();
        let mut running: BTreeMap<String, Option<String>> = targets
            .iter()
            .map(|t| (t.host.clone(), t.current.clone()))
            .collect();
        let mut to_switch = Vec::new();
        for t in &targets {
            match &tag {
                Some(tag) if t.current.as_deref() == Some(tag) => {
                    skipped.insert(t.host.clone(), format!("already on {tag}"));
                }
                _ => to_switch.push((t.host.clone(), t.dc.clone())),
            }
        }
        let plan = batches(&to_switch, &self.opts.canary, self.opts.batch);
        *self.plan.lock().expect("plan lock") = plan.clone();
        let has_canary = plan
            .first()
            .is_some_and(|b| b.iter().any(|h| self.opts.canary.contains(h)));
        let by_host: HashMap<&str, &Target> =
            targets.iter().map(|t| (t.host.as_str(), t)).collect();
        let restart = if self.opts.emergency {
            Restart::Emergency
        } else {
            Restart::Graceful
        };
        let drain_ms = if self.opts.emergency {
            0
        } else {
            self.opts.drain.as_millis() as u64
        };
        let action = match (&tag, id) {
            (Some(tag), Some(id)) => Action::Activate {
                tag: tag.clone(),
                id,
                restart,
                drain_ms,
                abandon: None,
            },
            _ => Action::Rollback { restart, drain_ms },
        };
        let mut results: Vec<HostResult> = Vec::new();
        let mut failures = 0;
        let mut stopped = None;
        let mut limit_reached = false;
        let mut batches_run = 0;
        for (i, batch) in plan.iter().enumerate() {
            if *stop.borrow() {
                stopped = Some(format!("interrupted before batch {}", i + 1));
                break;
            }
            if self.lost.load(Ordering::Relaxed) {
                stopped = Some(format!(
                    "the deploy lock was taken by another rollout before batch {}",
                    i + 1
                ));
                break;
            }
            on_event(Event::Batch {
                index: i,
                of: plan.len(),
                hosts: batch,
                canary: i == 0 && has_canary,
            });
            self.progress("batch", Some(i), false).await;
            let done = self.order_batch(batch, &by_host, &action, i).await;
            batches_run += 1;
            for r in done {
                on_event(Event::Host(&r));
                if !r.report.ok {
                    failures += 1;
                }
                running.insert(r.report.host.clone(), r.report.after.clone());
                results.push(r);
            }
            if self.opts.max_failures > 0 && failures >= self.opts.max_failures {
                limit_reached = true;
                stopped = Some(format!(
                    "{failures} failed host(s) reached --max-failures {}",
                    self.opts.max_failures
                ));
                break;
            }
            if i + 1 < plan.len() && !self.opts.interval.is_zero() {
                on_event(Event::Pause(self.opts.interval));
                self.progress("pause", Some(i), false).await;
                tokio::select! {
                    _ = tokio::time::sleep(self.opts.interval) => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            }
        }
        // Stopped at the failure limit: every host this rollout moved, or may
        // have moved (it did not answer in time), goes back to the release it
        // ran before, which marks the abandoned one bad there.
        let mut rolled_back = Vec::new();
        if limit_reached {
            let mut back: Vec<(String, String)> = Vec::new();
            let mut ids: HashMap<String, Hash> = HashMap::new();
            for r in &results {
                let moved = r.report.switched && r.report.after != r.report.before;
                let unknown = r.report.failed.as_deref() == Some("timeout");
                let Some(before) = by_host
                    .get(r.report.host.as_str())
                    .and_then(|t| t.current.clone())
                else {
                    if moved {
                        skipped.insert(
                            r.report.host.clone(),
                            "switched, and had no earlier release to go back to".into(),
                        );
                    }
                    continue;
                };
                if (moved || unknown) && r.report.after.as_deref() != Some(before.as_str()) {
                    if !ids.contains_key(&before) {
                        match self.release_id(&before).await {
                            Ok(id) => {
                                ids.insert(before.clone(), id);
                            }
                            Err(e) => {
                                skipped.insert(
                                    r.report.host.clone(),
                                    format!("cannot go back to {before}: {e}"),
                                );
                                continue;
                            }
                        }
                    }
                    back.push((r.report.host.clone(), r.dc.clone()));
                }
            }
            if !back.is_empty() {
                on_event(Event::RollingBack(back.len()));
                *self.plan.lock().expect("plan lock") = batches(&back, &[], self.opts.batch);
                self.progress("rolling back", None, false).await;
                for (i, batch) in batches(&back, &[], self.opts.batch).iter().enumerate() {
                    let jobs = batch
                        .iter()
                        .filter_map(|h| by_host.get(h.as_str()))
                        .map(|t| {
                            let before = t.current.clone().unwrap_or_default();
                            let action = Action::Activate {
                                id: ids[&before],
                                tag: before,
                                restart,
                                drain_ms,
                                abandon: tag
                                    .clone()
                                    .or_else(|| running.get(&t.host).cloned().flatten()),
                            };
                            self.order_one(t, action, i)
                        });
                    for r in futures_util::future::join_all(jobs).await {
                        self.log_result(&r, "rollback").await;
                        on_event(Event::Host(&r));
                        running.insert(r.report.host.clone(), r.report.after.clone());
                        rolled_back.push(r);
                    }
                }
            }
            // The fleet's target is what it ran before.
            let before = prior_target.or_else(|| common(targets.iter().map(|t| t.current.clone())));
            if let Some(t) = before {
                let _ = self.set_target(&t).await;
            }
        }
        if tag.is_none()
            && stopped.is_none()
            && let Some(t) = common(running.values().cloned())
        {
            let _ = self.set_target(&t).await;
        }
        let ok = stopped.is_none()
            && failures == 0
            && match &tag {
                Some(t) => running.values().all(|r| r.as_deref() == Some(t.as_str())),
                None => true,
            };
        Ok(Report {
            rollout: self.id.clone(),
            goal: match &goal {
                Goal::Deploy(_) => "deploy".into(),
                Goal::Rollback(_) => "rollback".into(),
            },
            tag,
            ok,
            stopped,
            batches_planned: plan.len(),
            batches_run,
            failures,
            hosts: results,
            rolled_back,
            skipped,
            running,
            elapsed_s: start.elapsed().as_secs_f64(),
        })
    }

    async fn fleet(&self) -> Result<(Vec<HostReport>, Option<String>), RolloutError> {
        match self
            .tracker
            .request(&Msg::GetFleet, MAX_CONTROL, TRACKER_DEADLINE)
            .await?
        {
            Msg::Fleet(f) => Ok((f.hosts, f.target)),
            other => Err(unexpected(&self.tracker.host, "GetFleet", &other).into()),
        }
    }

    /// The id of an announced release.
    async fn release_id(&self, tag: &str) -> Result<Hash, RolloutError> {
        self.ask_release(tag, Msg::GetRelease { tag: tag.into() })
            .await
    }

    /// Sets the fleet's target (as the lock's holder); returns its id.
    async fn set_target(&self, tag: &str) -> Result<Hash, RolloutError> {
        let m = Msg::SetTarget {
            token: self.token,
            tag: tag.into(),
        };
        self.ask_release(tag, m).await
    }

    /// A tracker request answered with one release.
    async fn ask_release(&self, tag: &str, m: Msg) -> Result<Hash, RolloutError> {
        match self
            .tracker
            .request(&m, MAX_CONTROL, TRACKER_DEADLINE)
            .await
        {
            Ok(Msg::Releases { releases }) if releases.len() == 1 => Ok(releases[0].id),
            Ok(other) => Err(unexpected(&self.tracker.host, m.name(), &other).into()),
            Err(NodeError::Peer { message, .. }) => {
                Err(RolloutError::NotAnnounced(tag.into(), message))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until every live host has `tag` installed; returns them.
    async fn wait_staged(
        &self,
        tag: &str,
        mut live: Vec<HostReport>,
        stop: &watch::Receiver<bool>,
        on_event: &mut (dyn FnMut(Event) + Send),
    ) -> Result<Vec<HostReport>, RolloutError> {
        let start = Instant::now();
        let names: Vec<String> = live.iter().map(|h| h.host.clone()).collect();
        loop {
            let mut by_dc: BTreeMap<String, DcProgress> = BTreeMap::new();
            for h in &live {
                let p = by_dc.entry(h.dc.clone()).or_insert_with(|| DcProgress {
                    dc: h.dc.clone(),
                    ..Default::default()
                });
                p.hosts += 1;
                if h.status.staged.iter().any(|s| s == tag) {
                    p.staged += 1;
                } else if let Some(t) = h.status.transfer.as_ref().filter(|t| t.tag == tag) {
                    p.chunks_have += u64::from(t.chunks_have);
                    p.chunks_total += u64::from(t.chunks_total);
                }
            }
            let progress: Vec<DcProgress> = by_dc.into_values().collect();
            on_event(Event::Staging(&progress));
            let missing: Vec<String> = live
                .iter()
                .filter(|h| !h.status.staged.iter().any(|s| s == tag))
                .map(|h| h.host.clone())
                .collect();
            if missing.is_empty() {
                return Ok(live);
            }
            if *stop.borrow() {
                return Err(RolloutError::Interrupted(format!(
                    "while {} host(s) were still staging {tag}; nothing was switched",
                    missing.len()
                )));
            }
            if start.elapsed() >= self.opts.stage_timeout {
                return Err(RolloutError::NotStaged {
                    tag: tag.into(),
                    hosts: missing,
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(STAGE_POLL).await;
            let (hosts, _) = self.fleet().await?;
            live = hosts
                .into_iter()
                .filter(|h| names.contains(&h.host))
                .collect();
        }
    }

    /// Sends one batch's orders at once and waits for every answer.
    async fn order_batch(
        &self,
        batch: &[String],
        by_host: &HashMap<&str, &Target>,
        action: &Action,
        index: usize,
    ) -> Vec<HostResult> {
        let jobs = batch
            .iter()
            .filter_map(|h| by_host.get(h.as_str()))
            .map(|t| self.order_one(t, action.clone(), index));
        // Every order of a batch runs at once.
        let done = futures_util::future::join_all(jobs).await;
        for r in &done {
            self.log_result(r, &format!("batch {}", index + 1)).await;
        }
        done
    }

    async fn order_one(&self, t: &Target, action: Action, batch: usize) -> HostResult {
        let start = Instant::now();
        let report = self.order(t, action).await;
        HostResult {
            dc: t.dc.clone(),
            batch,
            millis: start.elapsed().as_millis() as u64,
            report,
        }
    }

    async fn log_result(&self, r: &HostResult, what: &str) {
        let rep = &r.report;
        let result = match &rep.failed {
            None => format!(
                "ok: {} -> {} in {} ms",
                rep.before.as_deref().unwrap_or("-"),
                rep.after.as_deref().unwrap_or("-"),
                r.millis
            ),
            Some(phase) => format!(
                "failed at {phase}: {}; now on {}",
                rep.message,
                rep.after.as_deref().unwrap_or("unknown")
            ),
        };
        self.log(Some(&rep.host), what, &result).await;
    }

    /// One host's order; every error becomes a failed report.
    async fn order(&self, t: &Target, action: Action) -> OrderReport {
        let failed = |phase: &str, message: String| OrderReport {
            host: t.host.clone(),
            before: t.current.clone(),
            after: t.current.clone(),
            failed: Some(phase.into()),
            message,
            ..Default::default()
        };
        let conn = match self.conn(t).await {
            Ok(c) => c,
            Err(e) => return failed("unreachable", e.to_string()),
        };
        let issued = unix_ms() / 1000;
        let life = (self.opts.host_timeout.as_secs() + 60).min(3600);
        let order = Order {
            host: t.host.clone(),
            action,
            rollout: self.id.clone(),
            issued_unix: issued,
            expires_unix: issued + life,
            nonce: random_u64(),
        };
        let bytes = order.encode();
        let (key, signature) = self.key.sign_order(&bytes);
        let m = Msg::Order {
            order: bytes,
            key,
            signature,
        };
        match conn.request(&m, MAX_CONTROL, self.opts.host_timeout).await {
            Ok(Msg::OrderDone(r)) => *r,
            Ok(other) => failed(
                "protocol",
                format!("answered the order with {}", other.name()),
            ),
            Err(NodeError::Peer { message, .. }) => failed("refused", message),
            // It may be switching still: what it runs is unknown.
            Err(e @ NodeError::Timeout { .. }) => OrderReport {
                after: None,
                ..failed("timeout", e.to_string())
            },
            Err(e) => failed("unreachable", e.to_string()),
        }
    }

    async fn conn(&self, t: &Target) -> Result<Arc<Conn>, NodeError> {
        if let Some(c) = self.conns.lock().await.get(&t.host) {
            return Ok(c.clone());
        }
        let addr = t.addr.ok_or_else(|| NodeError::Peer {
            host: t.host.clone(),
            message: "the tracker has no address for it".into(),
        })?;
        let c = Arc::new(self.client.connect(addr, &t.host).await?);
        self.conns.lock().await.insert(t.host.clone(), c.clone());
        Ok(c)
    }

    /// Tells the tracker where this rollout is, for live views (best effort).
    async fn progress(&self, phase: &str, current: Option<usize>, done: bool) {
        let progress = RolloutProgress {
            rollout: self.id.clone(),
            purpose: self.purpose.clone(),
            who: self.opts.who.clone(),
            phase: phase.to_string(),
            batches: self.plan.lock().expect("plan lock").clone(),
            current: current.map(|c| c as u32),
            done,
            at_unix_ms: unix_ms(),
        };
        let m = Msg::Progress {
            token: self.token,
            progress: Box::new(progress),
        };
        if let Err(e) = self
            .tracker
            .request(&m, MAX_CONTROL, TRACKER_DEADLINE)
            .await
        {
            tracing::debug!(error = %e, "cannot report rollout progress");
        }
    }

    async fn log(&self, host: Option<&str>, what: &str, result: &str) {
        let entry = LogEntry {
            at_unix_ms: unix_ms(),
            rollout: self.id.clone(),
            who: self.opts.who.clone(),
            what: what.to_string(),
            host: host.map(String::from),
            result: result.to_string(),
        };
        let m = Msg::Record {
            token: self.token,
            entry: Box::new(entry),
        };
        if let Err(e) = self
            .tracker
            .request(&m, MAX_CONTROL, TRACKER_DEADLINE)
            .await
        {
            tracing::warn!(error = %e, "cannot write the deploy log");
        }
    }
}

/// A claim on the deploy lock, signed by the deploy key (taking and renewing
/// send the same, with a fresh issue time).
fn lock_claim(key: &DeployKey, token: u64, holder: &str, purpose: &str) -> Msg {
    let claim = LockClaim {
        token,
        holder: holder.to_string(),
        purpose: purpose.to_string(),
        ttl_s: LOCK_TTL_S,
        issued_unix: unix_ms() / 1000,
    }
    .encode();
    let (key, signature) = key.sign_for(Signs::Lock, &claim);
    Msg::Lock {
        claim,
        key,
        signature,
    }
}

/// The value every item shares, if they all share one.
fn common(mut items: impl Iterator<Item = Option<String>>) -> Option<String> {
    let first = items.next()??;
    items
        .all(|x| x.as_deref() == Some(first.as_str()))
        .then_some(first)
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn random_u64() -> u64 {
    let mut b = [0u8; 8];
    // Without randomness the nonce is still unique enough for this process.
    if getrandom::fill(&mut b).is_err() {
        return unix_ms() ^ u64::from(std::process::id()) << 40;
    }
    u64::from_le_bytes(b)
}
