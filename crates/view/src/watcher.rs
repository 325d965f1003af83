//! Successive tracker snapshots to [`FleetView`]s: the state of each host,
//! rates from the change of counters between snapshots, the completion curve
//! since the followed release appeared, and errors as they first show.

use crate::chart::{self, Chart, ChartError, Line};
use crate::model::{DcView, FleetView, HostState, HostView, RolloutView};
use shoal_proto::{FleetState, HostReport, LogEntry, Role, RolloutProgress};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

/// Errors kept for the view.
const ERRORS_KEPT: usize = 8;
/// Rates are measured over at least this long (snapshots closer than this
/// keep the last rates, so a burst of refreshes does not make them jump).
const RATE_WINDOW_S: f64 = 0.5;

pub struct Watcher {
    stale_after_s: u64,
    /// The release to follow, when the viewer named one.
    pinned: Option<String>,
    following: Option<String>,
    since: Instant,
    curve: Vec<(f64, usize)>,
    /// Per host: (cross-dc bytes down, cross-dc bytes up, chunks rejected).
    counters: HashMap<String, (u64, u64, u64)>,
    counters_at: Option<Instant>,
    rates: BTreeMap<String, (f64, f64)>,
    /// Hosts whose rejected-chunk count rose at the last measurement.
    rejected_now: Vec<(String, u64)>,
    errors: VecDeque<String>,
    /// Conditions reported and still present, so each is reported once.
    active: BTreeSet<String>,
    last_log_ms: u64,
}

impl Watcher {
    /// Hosts not heard from for `stale_after_s` are unreachable; `release`
    /// pins the view to one release instead of the tracker's focus.
    pub fn new(stale_after_s: u64, release: Option<String>) -> Watcher {
        Watcher {
            stale_after_s,
            pinned: release,
            following: None,
            since: Instant::now(),
            curve: Vec::new(),
            counters: HashMap::new(),
            counters_at: None,
            rates: BTreeMap::new(),
            rejected_now: Vec::new(),
            errors: VecDeque::new(),
            active: BTreeSet::new(),
            last_log_ms: 0,
        }
    }

    /// The view of one snapshot (and the deploy log's recent lines).
    pub fn observe(
        &mut self,
        state: &FleetState,
        log: &[LogEntry],
        now: Instant,
        unix_ms: u64,
    ) -> FleetView {
        let release = self.pinned.clone().or_else(|| state.focus.clone());
        if release != self.following {
            self.following = release.clone();
            self.since = now;
            self.curve.clear();
        }
        let ad = release
            .as_ref()
            .and_then(|r| state.releases.iter().find(|a| &a.tag == r));
        let (release_chunks, release_bytes) = ad.map_or((0, 0), |a| (a.chunks, a.bytes));
        let mut agents: Vec<&HostReport> = state
            .hosts
            .iter()
            .filter(|h| h.role == Role::Agent)
            .collect();
        agents.sort_by(|a, b| (&a.dc, &a.host).cmp(&(&b.dc, &b.host)));

        self.measure_rates(&agents, now);
        let rollout = state.rollout.as_ref().map(rollout_view);
        let switching: BTreeSet<&str> = match (&state.rollout, &rollout) {
            (Some(p), Some(v)) if !p.done && p.phase == "batch" => {
                v.batch_hosts.iter().map(String::as_str).collect()
            }
            _ => BTreeSet::new(),
        };

        let mut hosts = Vec::with_capacity(agents.len());
        let mut dcs: BTreeMap<String, DcView> = BTreeMap::new();
        let mut conditions = Vec::new();
        for h in &agents {
            let v = self.host_view(h, release.as_deref(), release_chunks, &switching);
            let d = dcs.entry(h.dc.clone()).or_insert_with(|| DcView {
                dc: h.dc.clone(),
                ..Default::default()
            });
            d.hosts += 1;
            if v.verified {
                d.verified += 1;
            }
            if v.state == HostState::Live {
                d.live += 1;
            }
            d.chunks_have += u64::from(v.chunks_have);
            d.chunks_total += u64::from(v.chunks_total);
            if let Some(c) = host_condition(h, &v, release.as_deref()) {
                conditions.push(c);
            }
            for r in &h.status.refused {
                conditions.push(format!("{}: refused a release: {r}", h.host));
            }
            hosts.push(v);
        }
        for d in dcs.values_mut() {
            if release_chunks > 0 {
                let per_chunk = release_bytes as f64 / f64::from(release_chunks);
                d.bytes_have = (d.chunks_have as f64 * per_chunk).round() as u64;
            }
            d.bytes_total = release_bytes * d.hosts as u64;
            if let Some(&(i, o)) = self.rates.get(&d.dc) {
                d.rate_in_bps = i;
                d.rate_out_bps = o;
            }
        }
        self.note_errors(conditions, log, unix_ms);

        let verified: usize = dcs.values().map(|d| d.verified).sum();
        let elapsed_s = now.saturating_duration_since(self.since).as_secs_f64();
        if self.curve.last().map(|&(_, n)| n) != Some(verified) {
            self.curve.push((elapsed_s, verified));
        }
        let mut counts: BTreeMap<String, usize> = HostState::ALL
            .iter()
            .map(|s| (s.name().to_string(), 0))
            .collect();
        for h in &hosts {
            *counts.entry(h.state.name().to_string()).or_default() += 1;
        }
        FleetView {
            all_live: !hosts.is_empty() && hosts.iter().all(|h| h.state == HostState::Live),
            release,
            target: state.target.clone(),
            release_bytes,
            release_chunks,
            at_unix_ms: unix_ms,
            elapsed_s,
            dcs: dcs.into_values().collect(),
            hosts,
            counts,
            rollout,
            errors: self.errors.iter().cloned().collect(),
            curve: self.curve.clone(),
        }
    }

    fn host_view(
        &self,
        h: &HostReport,
        release: Option<&str>,
        release_chunks: u32,
        switching: &BTreeSet<&str>,
    ) -> HostView {
        let s = &h.status;
        let is = |t: &Option<String>| release.is_some() && t.as_deref() == release;
        let staged = release.is_some_and(|r| s.staged.iter().any(|t| t == r));
        let transfer = s
            .transfer
            .as_ref()
            .filter(|t| release == Some(t.tag.as_str()));
        let (have, total) = if staged || is(&s.current) {
            (release_chunks, release_chunks)
        } else if let Some(t) = transfer {
            (t.chunks_have, t.chunks_total)
        } else {
            (0, release_chunks)
        };
        let bad = release.is_some_and(|r| s.bad.iter().any(|t| t == r));
        let audit_failed = s.audit.as_ref().is_some_and(|a| !a.clean);
        let (state, note) = if h.last_seen_s > self.stale_after_s {
            (
                HostState::Unreachable,
                Some(format!("not heard from for {} s", h.last_seen_s)),
            )
        } else if bad {
            (
                HostState::Failed,
                Some(format!("{} failed here", release.unwrap_or("-"))),
            )
        } else if audit_failed {
            let a = s.audit.as_ref().expect("audit_failed implies an audit");
            (
                HostState::Failed,
                Some(format!(
                    "audit of {} found {} problem(s)",
                    a.tag.as_deref().unwrap_or("-"),
                    a.problem_count
                )),
            )
        } else if let Some(b) = &s.busy {
            (HostState::Switching, Some(b.clone()))
        } else if is(&s.current) {
            (HostState::Live, None)
        } else if switching.contains(h.host.as_str()) {
            (
                HostState::Switching,
                Some("in the batch switching now".into()),
            )
        } else if staged {
            (HostState::Staged, None)
        } else if transfer.is_some() {
            (HostState::Fetching, None)
        } else {
            (
                HostState::Stale,
                Some(format!(
                    "runs {}",
                    s.current.as_deref().unwrap_or("nothing")
                )),
            )
        };
        HostView {
            host: h.host.clone(),
            dc: h.dc.clone(),
            state,
            current: s.current.clone(),
            verified: (staged || is(&s.current))
                && !matches!(state, HostState::Failed | HostState::Unreachable),
            chunks_have: have,
            chunks_total: total,
            last_seen_s: h.last_seen_s,
            note,
        }
    }

    /// Per-datacenter cross-dc bytes per second since the last measurement.
    fn measure_rates(&mut self, agents: &[&HostReport], now: Instant) {
        let dt = self
            .counters_at
            .map(|at| now.saturating_duration_since(at).as_secs_f64());
        if dt.is_some_and(|dt| dt < RATE_WINDOW_S) {
            return;
        }
        let mut rates: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        let mut counters = HashMap::with_capacity(agents.len());
        for h in agents {
            let t = &h.status.totals;
            let c = (
                t.bytes_down_cross_dc,
                t.bytes_up_cross_dc,
                t.chunks_rejected,
            );
            let r = rates.entry(h.dc.clone()).or_default();
            if let (Some(dt), Some(prev)) = (dt, self.counters.get(&h.host)) {
                // A restarted agent counts from 0 again: no negative rates.
                r.0 += c.0.saturating_sub(prev.0) as f64 / dt;
                r.1 += c.1.saturating_sub(prev.1) as f64 / dt;
            }
            counters.insert(h.host.clone(), c);
        }
        self.rejected_now = counters
            .iter()
            .filter_map(|(host, c)| {
                // A host seen for the first time reports nothing: its count
                // may be from long ago.
                let before = self.counters.get(host).map_or(c.2, |p| p.2);
                (c.2 > before).then(|| (host.clone(), c.2))
            })
            .collect();
        self.counters = counters;
        self.counters_at = Some(now);
        self.rates = rates;
    }

    /// Adds conditions that are new since the last snapshot, and failed lines
    /// of the deploy log, to the error list.
    fn note_errors(&mut self, conditions: Vec<String>, log: &[LogEntry], unix_ms: u64) {
        let stamp = clock(unix_ms);
        let mut now_active = BTreeSet::new();
        for c in conditions {
            if !self.active.contains(&c) {
                self.push_error(format!("{stamp} {c}"));
            }
            now_active.insert(c);
        }
        self.active = now_active;
        for (host, n) in std::mem::take(&mut self.rejected_now) {
            self.push_error(format!(
                "{stamp} {host}: {n} corrupt chunk(s) rejected so far (the sender was banned)"
            ));
        }
        let seen = self.last_log_ms;
        for e in log.iter().filter(|e| e.at_unix_ms > seen) {
            if e.result.starts_with("failed") || e.result.starts_with("stopped") {
                self.push_error(format!(
                    "{} {}{}: {}",
                    clock(e.at_unix_ms),
                    e.host
                        .as_deref()
                        .map(|h| format!("{h}: "))
                        .unwrap_or_default(),
                    e.what,
                    e.result
                ));
            }
        }
        if let Some(last) = log.iter().map(|e| e.at_unix_ms).max() {
            self.last_log_ms = self.last_log_ms.max(last);
        }
    }

    fn push_error(&mut self, e: String) {
        self.errors.push_back(e);
        while self.errors.len() > ERRORS_KEPT {
            self.errors.pop_front();
        }
    }

    /// The completion chart of `view` (one of this watcher's).
    pub fn chart_svg(view: &FleetView) -> Result<String, ChartError> {
        let hosts = view.hosts.len();
        let verified = view.curve.last().map_or(0, |&(_, n)| n);
        let release = view.release.as_deref().unwrap_or("no release");
        chart::hosts_over_time_svg(&Chart {
            title: format!("{release}: hosts verified over time (live)"),
            hosts,
            lines: vec![Line {
                name: format!("{release} ({verified}/{hosts})"),
                points: chart::steps(&view.curve, Some(view.elapsed_s)),
            }],
            bound: None,
        })
    }
}

/// What is wrong with a host, as an error line (None when nothing is).
fn host_condition(h: &HostReport, v: &HostView, release: Option<&str>) -> Option<String> {
    match v.state {
        HostState::Unreachable => Some(format!("{}: unreachable", h.host)),
        HostState::Failed => {
            let mut s = format!("{}: {}", h.host, v.note.as_deref().unwrap_or("failed"));
            if let Some(p) = h
                .status
                .audit
                .as_ref()
                .filter(|a| !a.clean)
                .and_then(|a| a.problems.first())
            {
                s.push_str(&format!(" ({p})"));
            } else if release.is_some() {
                s.push_str(&format!(
                    "; now on {}",
                    h.status.current.as_deref().unwrap_or("nothing")
                ));
            }
            Some(s)
        }
        _ => None,
    }
}

fn rollout_view(p: &RolloutProgress) -> RolloutView {
    let current = p.current.map(|c| c as usize);
    let batch_hosts = current
        .and_then(|c| p.batches.get(c))
        .cloned()
        .unwrap_or_default();
    let next = match (current, p.done) {
        (_, true) => None,
        (None, false) => Some(0),
        (Some(c), false) => Some(c + 1),
    };
    RolloutView {
        rollout: p.rollout.clone(),
        purpose: p.purpose.clone(),
        who: p.who.clone(),
        phase: p.phase.clone(),
        done: p.done,
        batch: current.map(|c| c + 1),
        batches: p.batches.len(),
        batch_hosts,
        next_hosts: next
            .and_then(|n| p.batches.get(n))
            .cloned()
            .unwrap_or_default(),
    }
}

/// The wall clock in Unix milliseconds, as `Watcher::observe` takes it.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// "HH:MM:SS" (UTC) of a Unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{AuditSummary, HostStatus, ReleaseAd, Totals, Transfer};
    use std::time::Duration;

    fn agent(host: &str, dc: &str, status: HostStatus) -> HostReport {
        HostReport {
            host: host.into(),
            dc: dc.into(),
            role: Role::Agent,
            addr: None,
            last_seen_s: 0,
            status,
        }
    }

    fn ad(tag: &str) -> ReleaseAd {
        ReleaseAd {
            tag: tag.into(),
            id: shoal_bundle::Hash([7; 32]),
            chunks: 10,
            bytes: 1000,
        }
    }

    fn fetching(have: u32, down_x: u64, up_x: u64) -> HostStatus {
        HostStatus {
            current: Some("v1".into()),
            transfer: Some(Transfer {
                tag: "v2".into(),
                chunks_have: have,
                chunks_total: 10,
                bytes_down: 0,
                bytes_up: 0,
                bytes_down_cross_dc: down_x,
            }),
            totals: Totals {
                bytes_down_cross_dc: down_x,
                bytes_up_cross_dc: up_x,
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn fleet(hosts: Vec<HostReport>) -> FleetState {
        FleetState {
            hosts,
            target: Some("v1".into()),
            releases: vec![ad("v1"), ad("v2")],
            focus: Some("v2".into()),
            rollout: None,
        }
    }

    #[test]
    fn states_progress_rates_and_errors() {
        let mut w = Watcher::new(10, None);
        let t0 = Instant::now();
        let live = HostStatus {
            current: Some("v2".into()),
            staged: vec!["v1".into(), "v2".into()],
            ..Default::default()
        };
        let staged = HostStatus {
            current: Some("v1".into()),
            staged: vec!["v1".into(), "v2".into()],
            ..Default::default()
        };
        let bad = HostStatus {
            current: Some("v1".into()),
            bad: vec!["v2".into()],
            ..Default::default()
        };
        let mut gone = agent("e", "dc2", HostStatus::default());
        gone.last_seen_s = 30;
        let old = HostStatus {
            current: Some("v0".into()),
            ..Default::default()
        };
        let hosts = vec![
            agent("a", "dc1", live.clone()),
            agent("b", "dc1", fetching(4, 0, 0)),
            agent("c", "dc2", staged),
            agent("d", "dc2", bad),
            gone,
            agent("f", "dc2", old),
        ];
        let v = w.observe(&fleet(hosts.clone()), &[], t0, 3_600_000);
        let state = |h: &str| v.hosts.iter().find(|x| x.host == h).unwrap().state;
        assert_eq!(state("a"), HostState::Live);
        assert_eq!(state("b"), HostState::Fetching);
        assert_eq!(state("c"), HostState::Staged);
        assert_eq!(state("d"), HostState::Failed);
        assert_eq!(state("e"), HostState::Unreachable);
        assert_eq!(state("f"), HostState::Stale);
        assert_eq!(v.release.as_deref(), Some("v2"));
        let dc1 = &v.dcs[0];
        assert_eq!((dc1.hosts, dc1.verified, dc1.live), (2, 1, 1));
        assert_eq!((dc1.chunks_have, dc1.chunks_total), (14, 20));
        assert_eq!(dc1.bytes_have, 1400);
        assert!(!v.all_live);
        assert_eq!(v.counts["failed"], 1);
        assert_eq!(v.curve, vec![(0.0, 2)]);
        // Two conditions, each reported once, stamped 01:00:00.
        assert_eq!(v.errors.len(), 2, "{:?}", v.errors);
        assert!(
            v.errors
                .iter()
                .any(|e| e == "01:00:00 d: v2 failed here; now on v1")
        );
        assert!(v.errors.iter().any(|e| e == "01:00:00 e: unreachable"));

        // One second later b has moved 2000 bytes in across the boundary, and
        // c sent 500 out; a deploy log line failed.
        let mut hosts2 = hosts.clone();
        hosts2[1] = agent("b", "dc1", fetching(10, 2000, 0));
        hosts2[2].status.totals.bytes_up_cross_dc = 500;
        hosts2[0].status.audit = Some(AuditSummary {
            tag: Some("v2".into()),
            clean: false,
            problems: vec!["bin/app: content differs".into()],
            problem_count: 1,
            at_unix: 0,
        });
        let log = vec![LogEntry {
            at_unix_ms: 3_601_000,
            rollout: "r".into(),
            who: "me".into(),
            what: "batch 1".into(),
            host: Some("d".into()),
            result: "failed at health: exit 1; now on v1".into(),
        }];
        let v = w.observe(
            &fleet(hosts2.clone()),
            &log,
            t0 + Duration::from_secs(1),
            3_601_000,
        );
        assert_eq!(v.dcs[0].rate_in_bps, 2000.0);
        assert_eq!(v.dcs[1].rate_out_bps, 500.0);
        assert_eq!(
            v.dcs[0].verified, 0,
            "b holds every chunk, not installed; a is failed now"
        );
        assert_eq!(
            v.errors.last().map(String::as_str),
            Some("01:00:01 d: batch 1: failed at health: exit 1; now on v1")
        );
        assert!(
            v.errors
                .iter()
                .any(|e| e.contains("a: audit of v2 found 1 problem(s) (bin/app: content differs)"))
        );
        assert_eq!(v.errors.len(), 4, "{:?}", v.errors);
        // The same log line and the same conditions add nothing; a condition
        // that went away and came back is reported again.
        let n = w
            .observe(
                &fleet(hosts.clone()),
                &log,
                t0 + Duration::from_secs(2),
                3_602_000,
            )
            .errors
            .len();
        assert_eq!(n, 4);
        let again = w.observe(&fleet(hosts2), &log, t0 + Duration::from_secs(3), 3_603_000);
        assert_eq!(again.errors.len(), 5, "{:?}", again.errors);
        assert!(again.errors[4].starts_with("01:00:03 a: audit of v2"));
    }

    #[test]
    fn the_rollout_batch_now_and_next() {
        let mut w = Watcher::new(10, Some("v2".into()));
        let staged = HostStatus {
            current: Some("v1".into()),
            staged: vec!["v2".into()],
            ..Default::default()
        };
        let live = HostStatus {
            current: Some("v2".into()),
            ..Default::default()
        };
        let mut f = fleet(vec![
            agent("a", "dc1", live.clone()),
            agent("b", "dc1", staged.clone()),
            agent("c", "dc2", staged.clone()),
        ]);
        f.rollout = Some(RolloutProgress {
            rollout: "r1".into(),
            purpose: "deploy v2".into(),
            who: "me@here".into(),
            phase: "batch".into(),
            batches: vec![vec!["a".into()], vec!["b".into()], vec!["c".into()]],
            current: Some(1),
            done: false,
            at_unix_ms: 0,
        });
        let v = w.observe(&f, &[], Instant::now(), 0);
        let r = v.rollout.as_ref().unwrap();
        assert_eq!((r.batch, r.batches), (Some(2), 3));
        assert_eq!(r.batch_hosts, vec!["b".to_string()]);
        assert_eq!(r.next_hosts, vec!["c".to_string()]);
        assert_eq!(v.hosts[1].state, HostState::Switching);
        assert_eq!(v.hosts[2].state, HostState::Staged);

        for h in &mut f.hosts {
            h.status = live.clone();
        }
        if let Some(p) = f.rollout.as_mut() {
            p.done = true;
            p.phase = "completed".into();
        }
        let v = w.observe(&f, &[], Instant::now(), 0);
        assert!(v.all_live);
        assert!(v.rollout.as_ref().unwrap().next_hosts.is_empty());
        assert_eq!(v.curve.last().map(|p| p.1), Some(3));
        let svg = Watcher::chart_svg(&v).unwrap();
        assert!(svg.contains("v2 (3/3)"), "{svg}");
    }
}
