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
    let child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&hook.command)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", hook.command))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(format!("{:?}: {e}", hook.command)),
        // Dropping the future kills the child (kill_on_drop).
        Err(_) => return Err(format!("{:?} timed out after {timeout:?}", hook.command)),
    };
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    for line in text.lines() {
        tracing::info!(phase, "hook: {line}");
    }
    if out.status.success() {
        return Ok(());
    }
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join(" | ");
    Err(format!(
        "{:?} exited with {}{}",
        hook.command,
        out.status,
        if tail.is_empty() {
            String::new()
        } else {
            format!(": {tail}")
        }
    ))
}

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
        let hung = run("restart", &hook("sleep 30", 0.2, 0), &env).await;
        assert!(!hung.ok && hung.error.unwrap().contains("timed out"));
        assert!(
            slow.elapsed() < Duration::from_secs(5),
            "the hung hook is killed"
        );
        // Succeeds on the third attempt: a service that takes a moment to come up.
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("n");
        let cmd = format!("echo x >> {0}; test $(wc -l < {0}) -ge 3", f.display());
        let flaky = run("health", &hook(&cmd, 5.0, 5), &env).await;
        assert!(flaky.ok && flaky.attempts == 3, "{flaky:?}");
    }
}
