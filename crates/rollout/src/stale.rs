//! Which hosts a fleet view should flag: not on the target release, not heard
//! from lately, or with a failed last audit. `shoal status --check` is the
//! gate a pipeline waits on: it passes once every live agent runs the target.

use serde::Serialize;
use shoal_proto::{HostReport, Role};

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Marks {
    pub host: String,
    /// Runs another release than the target (or none).
    pub off_target: bool,
    /// Not heard from for longer than allowed: it may run anything.
    pub unseen: bool,
    pub audit_failed: bool,
    pub notes: Vec<String>,
}

impl Marks {
    pub fn any(&self) -> bool {
        self.off_target || self.unseen || self.audit_failed
    }
}

/// The marks of one agent against the fleet's `target` (when none is set, the
/// release most live agents run).
pub fn marks(h: &HostReport, target: Option<&str>, stale_after_s: u64) -> Marks {
    let mut m = Marks {
        host: h.host.clone(),
        off_target: false,
        unseen: false,
        audit_failed: false,
        notes: Vec::new(),
    };
    if h.role != Role::Agent {
        return m;
    }
    if h.last_seen_s > stale_after_s {
        m.unseen = true;
        m.notes.push(format!("not seen for {} s", h.last_seen_s));
    }
    if let Some(t) = target
        && h.status.current.as_deref() != Some(t)
    {
        m.off_target = true;
        m.notes.push(format!(
            "runs {} not {t}",
            h.status.current.as_deref().unwrap_or("nothing")
        ));
    }
    if let Some(a) = &h.status.audit
        && !a.clean
    {
        m.audit_failed = true;
        m.notes.push(format!(
            "audit of {} found {} problem(s)",
            a.tag.as_deref().unwrap_or("-"),
            a.problem_count
        ));
    }
    m
}

/// The release the fleet is measured against: the rollout's target, else
/// the one most live agents run.
pub fn effective_target(
    hosts: &[HostReport],
    target: Option<&str>,
    stale_after_s: u64,
) -> Option<String> {
    if let Some(t) = target {
        return Some(t.to_string());
    }
    let mut count: std::collections::BTreeMap<&str, usize> = Default::default();
    for h in hosts {
        if h.role == Role::Agent
            && h.last_seen_s <= stale_after_s
            && let Some(c) = &h.status.current
        {
            *count.entry(c).or_default() += 1;
        }
    }
    count
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(t, _)| t.to_string())
}

/// Whether every live agent runs the target (what `--check` tests).
pub fn converged(hosts: &[HostReport], target: Option<&str>, stale_after_s: u64) -> bool {
    let target = effective_target(hosts, target, stale_after_s);
    let mut live = hosts
        .iter()
        .filter(|h| h.role == Role::Agent && h.last_seen_s <= stale_after_s)
        .peekable();
    // No live agent is no converged fleet.
    live.peek().is_some() && live.all(|h| target.is_some() && h.status.current == target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_proto::{AuditSummary, HostStatus};

    fn host(name: &str, current: Option<&str>, seen: u64) -> HostReport {
        HostReport {
            host: name.into(),
            dc: "dc1".into(),
            role: Role::Agent,
            addr: None,
            last_seen_s: seen,
            status: HostStatus {
                current: current.map(String::from),
                ..Default::default()
            },
        }
    }

    #[test]
    fn off_target_unseen_and_failed_audits_are_marked() {
        let mut hosts = vec![
            host("a", Some("v2"), 1),
            host("b", Some("v1"), 1),
            host("c", Some("v2"), 500),
        ];
        assert!(!marks(&hosts[0], Some("v2"), 60).any());
        assert!(marks(&hosts[1], Some("v2"), 60).off_target);
        assert!(marks(&hosts[2], Some("v2"), 60).unseen);
        assert!(!converged(&hosts, Some("v2"), 60), "b is stale");
        hosts[1].status.current = Some("v2".into());
        assert!(
            converged(&hosts, Some("v2"), 60),
            "c is not live, so not waited for"
        );
        hosts[0].status.audit = Some(AuditSummary {
            tag: Some("v2".into()),
            clean: false,
            problem_count: 2,
            ..Default::default()
        });
        let m = marks(&hosts[0], Some("v2"), 60);
        assert!(m.audit_failed && m.notes[0].contains("2 problem"), "{m:?}");
        // Without a target, the majority's release is the measure.
        hosts[1].status.current = Some("v1".into());
        assert_eq!(effective_target(&hosts, None, 1000).as_deref(), Some("v2"));
        assert!(!converged(&hosts, None, 60));
        assert!(!converged(&[], Some("v2"), 60), "no live agent");
        assert!(!converged(&hosts[2..], Some("v2"), 60), "only a stale one");
    }
}
