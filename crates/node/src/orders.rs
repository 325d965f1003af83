//! Rollout orders on an agent: the deploy host's signed requests to switch
//! this host to a release (or back), and to audit it.
//!
//! Switching runs the operator's hooks around the one atomic switch of
//! `current`: `depool`, the drain wait, the switch, `restart`, `health`,
//! `repool` (`--emergency` skips depool, drain and repool). When the switch,
//! the restart or the health check fails, the host goes back to the release it
//! ran before, restarts on it, is repooled, and the failed release is marked
//! bad here so that no later rollback without a named release picks it.
//!
//! Orders are signed by a deploy key the agent trusts, name this host, expire
//! within minutes and are carried out at most once: holding a cluster
//! certificate lets a host fetch and serve, not decide what a fleet runs.

use crate::config::{Hook, Hooks};
use crate::hooks;
use shoal_bundle::activate::{activate, previous, set_bad};
use shoal_bundle::audit::audit_release;
use shoal_bundle::signing::{TrustedKey, verify_order};
use shoal_bundle::{Hash, Root};
use shoal_proto::{Action, AuditSummary, HookRun, Msg, Order, OrderReport, Restart};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How far ahead of this host's clock an order may have been issued.
const CLOCK_SKEW_S: u64 = 120;
/// The longest an order may stay valid.
const MAX_ORDER_LIFE_S: u64 = 3600;
/// Present under the root while a graceful switch has the host depooled.
const DEPOOLED_MARKER: &str = ".depooled";
/// Problems listed in an audit summary (the count covers all).
const PROBLEMS_LISTED: usize = 10;

pub struct Orders {
    host: String,
    dc: String,
    root: Root,
    trusted: Vec<TrustedKey>,
    hooks: Hooks,
    /// One order at a time: a second waits for the first.
    running: tokio::sync::Mutex<()>,
    /// Nonces of orders carried out, until they expire.
    seen: Mutex<HashMap<u64, u64>>,
    busy: Mutex<Option<String>>,
    /// Orders issued before this process started may have been carried out
    /// by an earlier one (whose nonces are gone): refused.
    started_unix: u64,
    last_audit: Mutex<Option<AuditSummary>>,
    /// When an audit last found the current release intact.
    last_good_audit: Mutex<Option<u64>>,
    durations: crate::metrics::Durations,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The release a hook is about, for its environment.
struct Rel {
    tag: String,
    id: String,
    dir: String,
}

impl Orders {
    pub fn new(host: &str, dc: &str, root: Root, trusted: Vec<TrustedKey>, hooks: Hooks) -> Self {
        Orders {
            host: host.to_string(),
            dc: dc.to_string(),
            root,
            trusted,
            hooks,
            running: tokio::sync::Mutex::new(()),
            seen: Mutex::new(HashMap::new()),
            busy: Mutex::new(None),
            started_unix: unix_now(),
            last_audit: Mutex::new(None),
            last_good_audit: Mutex::new(None),
            durations: Default::default(),
        }
    }

    /// The step running now, for the status report.
    pub fn busy(&self) -> Option<String> {
        self.busy.lock().expect("busy lock").clone()
    }

    pub fn durations(&self) -> &crate::metrics::Durations {
        &self.durations
    }

    pub fn last_good_audit(&self) -> Option<u64> {
        *self.last_good_audit.lock().expect("audit lock")
    }

    pub fn last_audit(&self) -> Option<AuditSummary> {
        self.last_audit.lock().expect("audit lock").clone()
    }

    /// Answers `Order` and `Audit`.
    pub async fn handle(&self, msg: Msg) -> Msg {
        match msg {
            Msg::Order {
                order,
                key,
                signature,
            } => match self.open(&order, &key, &signature) {
                Ok(o) => {
                    let start = tokio::time::Instant::now();
                    let report = self.carry_out(o).await;
                    let outcome = if report.ok { "ok" } else { "failed" };
                    self.durations
                        .activations
                        .get_or_create(&vec![("outcome".to_string(), outcome.to_string())])
                        .observe(start.elapsed().as_secs_f64());
                    Msg::OrderDone(Box::new(report))
                }
                Err(message) => {
                    tracing::error!(%message, "refusing a rollout order");
                    Msg::Error { message }
                }
            },
            Msg::Audit => Msg::Audited(Box::new(self.audit().await)),
            other => Msg::Error {
                message: format!("{} is not a rollout request", other.name()),
            },
        }
    }

    /// Checks an order's signature, addressee, lifetime and freshness.
    fn open(&self, bytes: &[u8], key: &[u8; 32], signature: &[u8]) -> Result<Order, String> {
        verify_order(bytes, key, signature, &self.trusted)
            .map_err(|e| format!("order not signed by a trusted deploy key: {e}"))?;
        let o = Order::decode(bytes).map_err(|e| e.to_string())?;
        if o.host != self.host {
            return Err(format!(
                "the order is for {:?}, this is {:?}",
                o.host, self.host
            ));
        }
        let now = unix_now();
        if o.expires_unix < now {
            return Err(format!("the order expired {} s ago", now - o.expires_unix));
        }
        if o.issued_unix > now + CLOCK_SKEW_S {
            return Err("the order was issued in the future (check the clocks)".into());
        }
        if o.issued_unix + CLOCK_SKEW_S < self.started_unix {
            return Err("the order was issued before this agent started; send a new one".into());
        }
        if o.expires_unix.saturating_sub(o.issued_unix) > MAX_ORDER_LIFE_S {
            return Err(format!("orders may live {MAX_ORDER_LIFE_S} s at most"));
        }
        let mut seen = self.seen.lock().expect("seen lock");
        seen.retain(|_, exp| *exp >= now);
        if seen.insert(o.nonce, o.expires_unix).is_some() {
            return Err("the order was already carried out (a replay)".into());
        }
        Ok(o)
    }

    async fn carry_out(&self, o: Order) -> OrderReport {
        let _one = self.running.lock().await;
        let current = self.root.current().ok().flatten();
        // It may have waited for the order before it.
        if o.expires_unix < unix_now() {
            return self.refused(
                current,
                "the order expired while it waited for the one before".into(),
            );
        }
        let (tag, restart, drain_ms, named) = match &o.action {
            Action::Activate {
                tag,
                id,
                restart,
                drain_ms,
                ..
            } => {
                if let Err(message) = self.check_installed(tag, id) {
                    return self.refused(current, message);
                }
                (tag.clone(), *restart, *drain_ms, true)
            }
            Action::Rollback { restart, drain_ms } => {
                match previous(&self.root, current.as_deref()) {
                    Ok(Some(tag)) => (tag, *restart, *drain_ms, false),
                    Ok(None) => {
                        return self
                            .refused(current, "no earlier good release is kept here".into());
                    }
                    Err(e) => return self.refused(current, e.to_string()),
                }
            }
        };
        *self.busy.lock().expect("busy lock") = Some(format!("switching to {tag}"));
        // A crash between depool and repool would leave the host out of the
        // pool: the marker lets the next start put it back (`recover`).
        let marker = self.root.path().join(DEPOOLED_MARKER);
        let depools = restart == Restart::Graceful && self.hooks.depool.is_some();
        if depools && let Err(e) = std::fs::write(&marker, &tag) {
            tracing::warn!(error = %e, "cannot write the depool marker");
        }
        let report = self
            .switch(
                &o.rollout,
                &tag,
                restart,
                Duration::from_millis(drain_ms),
                named,
            )
            .await;
        if let Action::Activate {
            abandon: Some(failed),
            ..
        } = &o.action
            && report.ok
            && let Err(e) = set_bad(&self.root, failed, true)
        {
            tracing::warn!(tag = %failed, error = %e, "cannot mark the abandoned release bad");
        }
        if depools {
            let _ = std::fs::remove_file(&marker);
        }
        *self.busy.lock().expect("busy lock") = None;
        tracing::info!(
            rollout = %o.rollout,
            ok = report.ok,
            before = ?report.before,
            after = ?report.after,
            failed = ?report.failed,
            "rollout order carried out"
        );
        report
    }

    fn check_installed(&self, tag: &str, id: &Hash) -> Result<(), String> {
        match self.root.installed_id(tag) {
            Ok(have) if have == *id => Ok(()),
            Ok(have) => Err(format!(
                "{tag} here is release {have}, the order names {id}"
            )),
            Err(_) => Err(format!("{tag} is not installed here")),
        }
    }

    fn refused(&self, current: Option<String>, message: String) -> OrderReport {
        OrderReport {
            host: self.host.clone(),
            ok: false,
            before: current.clone(),
            after: current,
            failed: Some("check".into()),
            message,
            ..Default::default()
        }
    }

    fn rel(&self, tag: Option<&str>) -> Option<Rel> {
        let tag = tag?;
        Some(Rel {
            tag: tag.to_string(),
            id: self
                .root
                .installed_id(tag)
                .map(|h| h.to_hex())
                .unwrap_or_default(),
            dir: self.root.release_dir(tag).display().to_string(),
        })
    }

    fn env(
        &self,
        phase: &str,
        rollout: &str,
        mode: Restart,
        now: Option<&Rel>,
        prev: Option<&Rel>,
        reverting: bool,
    ) -> Vec<(String, String)> {
        let mode = match mode {
            Restart::Graceful => "graceful",
            Restart::Emergency => "emergency",
        };
        let mut env: Vec<(String, String)> = [
            ("PHASE", phase.to_string()),
            ("HOST", self.host.clone()),
            ("DC", self.dc.clone()),
            ("ROOT", self.root.path().display().to_string()),
            ("ROLLOUT", rollout.to_string()),
            ("MODE", mode.to_string()),
            ("REVERTING", u8::from(reverting).to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (format!("SHOAL_{k}"), v))
        .collect();
        for (prefix, r) in [("SHOAL_", now), ("SHOAL_PREVIOUS_", prev)] {
            let field = |f: fn(&Rel) -> &String| r.map(|r| f(r).clone()).unwrap_or_default();
            env.push((format!("{prefix}TAG"), field(|r| &r.tag)));
            env.push((format!("{prefix}ID"), field(|r| &r.id)));
            env.push((format!("{prefix}DIR"), field(|r| &r.dir)));
        }
        env
    }

    /// Runs one hook (if configured), recording it; false when it failed.
    async fn hook(
        &self,
        r: &mut OrderReport,
        phase: &str,
        hook: Option<&Hook>,
        env: &[(String, String)],
    ) -> Result<(), String> {
        let Some(hook) = hook else {
            return Ok(());
        };
        let out = hooks::run(phase, hook, env).await;
        self.durations
            .hooks
            .get_or_create(&vec![("phase".to_string(), phase.to_string())])
            .observe(out.elapsed.as_secs_f64());
        r.hooks.push(HookRun {
            phase: phase.to_string(),
            ok: out.ok,
            attempts: out.attempts,
            millis: out.elapsed.as_millis() as u64,
        });
        match out.error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    async fn switch(
        &self,
        rollout: &str,
        tag: &str,
        mode: Restart,
        drain: Duration,
        named: bool,
    ) -> OrderReport {
        let before = self.root.current().ok().flatten();
        let mut r = OrderReport {
            host: self.host.clone(),
            before: before.clone(),
            after: before.clone(),
            ..Default::default()
        };
        if before.as_deref() == Some(tag) {
            r.ok = true;
            r.message = format!("{tag} was already current");
            return r;
        }
        let graceful = mode == Restart::Graceful;
        let new = self.rel(Some(tag));
        let old = self.rel(before.as_deref());
        let env = |phase: &str| self.env(phase, rollout, mode, new.as_ref(), old.as_ref(), false);
        if graceful {
            if let Err(e) = self
                .hook(&mut r, "depool", self.hooks.depool.as_ref(), &env("depool"))
                .await
            {
                // The load balancer may have half-acted: put the host back.
                let _ = self
                    .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env("repool"))
                    .await;
                r.failed = Some("depool".into());
                r.message = e;
                return r;
            }
            tokio::time::sleep(drain).await;
        }
        let root = self.root.clone();
        let t = tag.to_string();
        let switched = tokio::task::spawn_blocking(move || activate(&root, &t))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = switched {
            if graceful {
                let _ = self
                    .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env("repool"))
                    .await;
            }
            r.failed = Some("switch".into());
            r.message = e;
            return r;
        }
        r.switched = true;
        r.after = Some(tag.to_string());
        for (phase, hook) in [
            ("restart", &self.hooks.restart),
            ("health", &self.hooks.health),
        ] {
            if let Err(e) = self.hook(&mut r, phase, hook.as_ref(), &env(phase)).await {
                return self.revert(r, rollout, phase, e, mode, new, old).await;
            }
        }
        if graceful
            && let Err(e) = self
                .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env("repool"))
                .await
        {
            // The new release runs and is healthy; only the load balancer
            // refused. Not a reason to go back, but the rollout must know.
            r.failed = Some("repool".into());
            r.message = e;
            return r;
        }
        if named && let Err(e) = set_bad(&self.root, tag, false) {
            tracing::warn!(tag, error = %e, "cannot clear the bad mark");
        }
        r.ok = true;
        r
    }

    /// After a failed restart or health check: back to the release before,
    /// restarted on it and repooled; the failed release is marked bad.
    #[allow(clippy::too_many_arguments)]
    async fn revert(
        &self,
        mut r: OrderReport,
        rollout: &str,
        phase: &str,
        error: String,
        mode: Restart,
        failed: Option<Rel>,
        before: Option<Rel>,
    ) -> OrderReport {
        r.failed = Some(phase.to_string());
        r.message = error;
        if let Some(f) = &failed
            && let Err(e) = set_bad(&self.root, &f.tag, true)
        {
            tracing::warn!(tag = %f.tag, error = %e, "cannot mark the release bad");
        }
        let Some(back) = before else {
            r.message += "; no earlier release to go back to";
            if mode == Restart::Graceful {
                let env = self.env("repool", rollout, mode, failed.as_ref(), None, true);
                if let Err(e) = self
                    .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env)
                    .await
                {
                    r.message += &format!("; repool: {e}");
                }
            }
            return r;
        };
        let root = self.root.clone();
        let t = back.tag.clone();
        match tokio::task::spawn_blocking(move || activate(&root, &t)).await {
            Ok(Ok(_)) => r.after = Some(back.tag.clone()),
            Ok(Err(e)) => r.message += &format!("; going back to {} failed: {e}", back.tag),
            Err(e) => r.message += &format!("; going back to {} failed: {e}", back.tag),
        }
        let env = |phase: &str| self.env(phase, rollout, mode, Some(&back), failed.as_ref(), true);
        for (name, hook) in [
            ("restart (revert)", &self.hooks.restart),
            ("health (revert)", &self.hooks.health),
        ] {
            if let Err(e) = self.hook(&mut r, name, hook.as_ref(), &env(name)).await {
                r.message += &format!("; {name}: {e}");
            }
        }
        if mode == Restart::Graceful
            && let Err(e) = self
                .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env("repool"))
                .await
        {
            r.message += &format!("; repool: {e}");
        }
        r
    }

    /// After a crash in the middle of a graceful switch (the marker is still
    /// there): if the service passes its health check on whatever release is
    /// current, repool the host; otherwise leave it out of the pool and say
    /// so. Returns whether the host was repooled.
    pub async fn recover(&self) -> bool {
        let _one = self.running.lock().await;
        let marker = self.root.path().join(DEPOOLED_MARKER);
        let Ok(tag) = std::fs::read_to_string(&marker) else {
            return false;
        };
        tracing::warn!(%tag, "an earlier run stopped between depool and repool; checking health");
        let current = self.root.current().ok().flatten();
        let now = self.rel(current.as_deref());
        let env = |phase: &str| {
            self.env(
                phase,
                "recovery",
                Restart::Graceful,
                now.as_ref(),
                None,
                false,
            )
        };
        let mut r = OrderReport::default();
        let repooled = match self
            .hook(&mut r, "health", self.hooks.health.as_ref(), &env("health"))
            .await
        {
            Err(e) => {
                tracing::error!(error = %e, "unhealthy after a crash mid-rollout: left out of the pool");
                false
            }
            Ok(()) => match self
                .hook(&mut r, "repool", self.hooks.repool.as_ref(), &env("repool"))
                .await
            {
                Ok(()) => {
                    tracing::info!(current = ?current, "repooled after a crash mid-rollout");
                    true
                }
                Err(e) => {
                    tracing::error!(error = %e, "repool after a crash mid-rollout failed");
                    false
                }
            },
        };
        if repooled {
            let _ = std::fs::remove_file(&marker);
        }
        repooled
    }

    /// Re-hashes the current release against its manifest.
    pub async fn audit(&self) -> AuditSummary {
        let root = self.root.clone();
        let result = tokio::task::spawn_blocking(move || {
            let tag = root.current()?;
            let report = match &tag {
                Some(_) => Some(audit_release(&root, None)?),
                None => None,
            };
            Ok::<_, shoal_bundle::Error>((tag, report))
        })
        .await;
        let mut s = AuditSummary {
            at_unix: unix_now(),
            ..Default::default()
        };
        match result {
            Ok(Ok((tag, Some(report)))) => {
                s.tag = tag;
                s.clean = report.is_clean();
                let problems: Vec<String> = report
                    .modified
                    .iter()
                    .map(|f| format!("modified {}: {}", f.path, f.reason))
                    .chain(report.missing.iter().map(|p| format!("missing {p}")))
                    .chain(report.extra.iter().map(|p| format!("extra {p}")))
                    .collect();
                s.problem_count = problems.len() as u64;
                s.problems = problems.into_iter().take(PROBLEMS_LISTED).collect();
            }
            Ok(Ok((_, None))) => {
                s.problems = vec!["no current release".into()];
                s.problem_count = 1;
            }
            Ok(Err(e)) => {
                s.problems = vec![e.to_string()];
                s.problem_count = 1;
            }
            Err(e) => {
                s.problems = vec![e.to_string()];
                s.problem_count = 1;
            }
        }
        if !s.clean {
            tracing::error!(tag = ?s.tag, problems = s.problem_count, "audit failed");
        }
        if s.clean {
            *self.last_good_audit.lock().expect("audit lock") = Some(s.at_unix);
        }
        *self.last_audit.lock().expect("audit lock") = Some(s.clone());
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Hook;

    fn hook(cmd: String) -> Option<Hook> {
        Some(Hook {
            command: cmd,
            timeout_s: 5.0,
            retries: 0,
            retry_delay_s: 0.1,
        })
    }

    #[tokio::test]
    async fn a_host_left_depooled_by_a_crash_is_repooled_when_healthy() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        drop(root.lock().unwrap());
        let log = dir.path().join("log");
        let sick = dir.path().join("sick");
        let hooks = Hooks {
            health: hook(format!(
                "echo health >> {0}; test ! -e {1}",
                log.display(),
                sick.display()
            )),
            repool: hook(format!("echo repool >> {}", log.display())),
            ..Default::default()
        };
        let o = Orders::new("h", "dc", root.clone(), Vec::new(), hooks);
        assert!(!o.recover().await, "no marker: nothing to do");
        assert!(!log.exists());
        let marker = root.path().join(DEPOOLED_MARKER);
        std::fs::write(&marker, "v2").unwrap();
        std::fs::write(&sick, "").unwrap();
        assert!(!o.recover().await, "unhealthy: stays out of the pool");
        assert_eq!(std::fs::read_to_string(&log).unwrap(), "health\n");
        assert!(marker.exists(), "still to be repooled");
        std::fs::remove_file(&sick).unwrap();
        assert!(o.recover().await);
        assert_eq!(
            std::fs::read_to_string(&log).unwrap(),
            "health\nhealth\nrepool\n"
        );
        assert!(!marker.exists());
    }
}
