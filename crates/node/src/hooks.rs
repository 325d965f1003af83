//! Running the operator's rollout hooks: each a `/bin/sh -c` command with a
//! timeout (the process is killed when it runs over) and, for health checks,
//! retries. A hook's output goes to the agent's log, its last lines into the
//! error a failure reports.

use crate::config::Hook;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// What one hook did, over all its attempts.
#[derive(Debug)]
pub struct HookOutcome {
    pub ok: bool,
    pub attempts: u32,
    pub elapsed: Duration,
    /// Why the last attempt failed: exit status or timeout, and its output's tail.
    pub error: Option<String>,
}

/// Lines of a failed hook's output kept in the error.
const TAIL_LINES: usize = 5;

/// Runs `hook` with `env` until an attempt succeeds or its retries are spent.
pub async fn run(phase: &str, hook: &Hook, env: &[(String, String)]) -> HookOutcome {
    let start = Instant::now();
    let timeout = Duration::from_secs_f64(hook.timeout_s.max(0.0));
    let delay = Duration::from_secs_f64(hook.retry_delay_s.max(0.0));
    let mut attempts = 0;
    loop {
        attempts += 1;
        let error = attempt(phase, hook, env, timeout).await.err();
        let last = error.is_none() || attempts > hook.retries;
        if last {
            if let Some(e) = &error {
                tracing::warn!(phase, attempts, error = %e, "hook failed");
            }
            return HookOutcome {
                ok: error.is_none(),
                attempts,
                elapsed: start.elapsed(),
                error,
            };
        }
        tracing::info!(phase, attempts, error = ?error, "hook failed; retrying");
        tokio::time::sleep(delay).await;
    }
}

async fn attempt(
    phase: &str,
    hook: &Hook,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<(), String> {
    use tokio::io::AsyncReadExt;
    // Its own process group, so a timeout kills what the hook started too.
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&hook.command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", hook.command))?;
    let pid = child.id();
    let read = |pipe: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Some(p) = pipe {
                let _ = p.take(OUTPUT_KEPT).read_to_end(&mut buf).await;
            }
            buf
        })
    };
    let out = read(child.stdout.take().map(|p| Box::new(p) as _));
    let err = read(child.stderr.take().map(|p| Box::new(p) as _));
    let status = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("{:?}: {e}", hook.command)),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            return Err(format!("{:?} timed out after {timeout:?}", hook.command));
        }
    };
    // A hook that starts a daemon (`app &`) leaves our pipes open in it: take
    // what came soon after the exit, not wait for the daemon to end.
    let collect = |h: tokio::task::JoinHandle<Vec<u8>>| async move {
        match tokio::time::timeout(OUTPUT_GRACE, h).await {
            Ok(Ok(buf)) => String::from_utf8_lossy(&buf).into_owned(),
            _ => String::new(),
        }
    };
    let text = collect(out).await + &collect(err).await;
    for line in text.lines() {
        tracing::info!(phase, "hook: {line}");
    }
    if status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    Err(format!(
        "{:?} exited with {}{}",
        hook.command,
        status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

/// Output kept of one attempt, per stream.
const OUTPUT_KEPT: u64 = 64 << 10;
/// How long after a hook exits its output is still read.
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(command: &str, timeout_s: f64, retries: u32) -> Hook {
        Hook {
            command: command.into(),
            timeout_s,
            retries,
            retry_delay_s: 0.01,
        }
    }

    #[tokio::test]
    async fn success_failure_timeout_retries_and_environment() {
        let env = vec![("SHOAL_TAG".to_string(), "v2".to_string())];
        let ok = run("health", &hook("test \"$SHOAL_TAG\" = v2", 5.0, 0), &env).await;
        assert!(ok.ok && ok.attempts == 1, "{ok:?}");
        let bad = run("health", &hook("echo boom; exit 3", 5.0, 2), &env).await;
        assert!(!bad.ok);
        assert_eq!(bad.attempts, 3);
        let e = bad.error.unwrap();
        assert!(e.contains("boom") && e.contains('3'), "{e}");
        let slow = Instant::now();
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        // A hung hook is killed with what it started.
        let cmd = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let hung = run("restart", &hook(&cmd, 0.2, 0), &env).await;
        assert!(!hung.ok && hung.error.unwrap().contains("timed out"));
        assert!(
            slow.elapsed() < Duration::from_secs(5),
            "the hung hook is killed"
        );
        // A hook that starts a daemon and exits succeeds at once.
        let started = Instant::now();
        let daemon = run("restart", &hook("sleep 5 & echo started", 10.0, 0), &env).await;
        assert!(daemon.ok, "{daemon:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "waited for the daemon's pipes"
        );
        tokio::time::sleep(Duration::from_millis(1300)).await;
        assert!(
            !marker.exists(),
            "the hung hook's child survived the timeout"
        );
        // Succeeds on the third attempt: a service that takes a moment to come up.
        let f = dir.path().join("n");
        let cmd = format!("echo x >> {0}; test $(wc -l < {0}) -ge 3", f.display());
        let flaky = run("health", &hook(&cmd, 5.0, 5), &env).await;
        assert!(flaky.ok && flaky.attempts == 3, "{flaky:?}");
    }
}
