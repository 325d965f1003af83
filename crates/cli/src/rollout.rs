//! The fleet's rollout commands: deploy, rollback, log, audit (fleet-wide),
//! and `exec` with its lease.

use crate::commands::emit;
use crate::{Remote, RolloutArgs};
use anyhow::{Context, Result, bail};
use shoal_bundle::Root;
use shoal_bundle::signing::DeployKey;
use shoal_net::Identity;
use shoal_node::client::Client;
use shoal_proto::{MAX_CONTROL, Msg};
use shoal_rollout::{Event, Goal, Options, Report};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The tracker's address and name, and the identity to reach it with.
pub fn resolve(r: &Remote) -> Result<(SocketAddr, String, Identity)> {
    let (Some(addr), Some(host), Some(identity)) = (r.tracker, &r.tracker_host, &r.identity) else {
        bail!("--tracker ADDR, --tracker-host NAME and --identity FILE are all needed");
    };
    let id = Identity::load(identity).with_context(|| format!("loading {}", identity.display()))?;
    Ok((addr, host.clone(), id))
}

pub fn deploy(goal: Goal, remote: &Remote, args: &RolloutArgs, json: bool) -> Result<ExitCode> {
    let (addr, tracker_host, id) = resolve(remote)?;
    let key_path = args.key.as_ref().context(
        "--key FILE (the deploy key's secret) is needed: agents obey only signed orders",
    )?;
    let key =
        DeployKey::load(key_path).with_context(|| format!("loading {}", key_path.display()))?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let opts = Options {
        batch: args.batch,
        interval: args.interval,
        canary: args.canary.clone(),
        max_failures: args.max_failures,
        drain: args.drain,
        emergency: args.emergency,
        stage_timeout: args.stage_timeout,
        host_timeout: args.host_timeout,
        who: format!("{user}@{}", id.host),
        ..Default::default()
    };
    if args.emergency && !json {
        eprintln!(
            "EMERGENCY rollout: hosts are not depooled or drained; requests in flight may fail"
        );
    }
    let report = runtime()?.block_on(async {
        let client = Client::new(&id, addr)?;
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!(
                    "interrupted: no new batch starts; the running one finishes (Ctrl-C again to quit now)"
                );
                let _ = tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("quitting: hosts of the running batch finish on their own");
                    std::process::exit(130);
                }
            }
        });
        let mut view = crate::progress::RolloutView::new(json);
        let mut on_event = |e: Event| view.event(e);
        let r = shoal_rollout::run(
            &client,
            addr,
            &tracker_host,
            &key,
            goal,
            &opts,
            rx,
            &mut on_event,
        )
        .await;
        view.finish();
        client.close().await;
        r
    })?;
    emit(json, &report, || report_text(&report))?;
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn host_line(h: &shoal_rollout::HostResult) -> String {
    let r = &h.report;
    match &r.failed {
        None => format!(
            "{:<16} ok      {} -> {} ({} ms)",
            r.host,
            r.before.as_deref().unwrap_or("-"),
            r.after.as_deref().unwrap_or("-"),
            h.millis
        ),
        Some(phase) => format!(
            "{:<16} FAILED  at {phase}: {} (now on {})",
            r.host,
            r.message,
            r.after.as_deref().unwrap_or("-")
        ),
    }
}

fn report_text(r: &Report) -> String {
    let mut s = format!(
        "{} {} ({}): {} in {:.1} s, {} of {} batch(es), {} failure(s)\n",
        r.goal,
        r.tag
            .as_deref()
            .unwrap_or("to each host's previous release"),
        r.rollout,
        if r.ok { "complete" } else { "NOT complete" },
        r.elapsed_s,
        r.batches_run,
        r.batches_planned,
        r.failures
    );
    if let Some(why) = &r.stopped {
        s.push_str(&format!("stopped: {why}\n"));
    }
    for h in &r.rolled_back {
        s.push_str(&format!("rolled back: {}\n", host_line(h)));
    }
    for (host, why) in &r.skipped {
        s.push_str(&format!("skipped {host}: {why}\n"));
    }
    let mut by_release: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (host, rel) in &r.running {
        by_release
            .entry(rel.as_deref().unwrap_or("(nothing)"))
            .or_default()
            .push(host);
    }
    for (rel, hosts) in by_release {
        s.push_str(&format!(
            "runs {rel}: {} host(s): {}\n",
            hosts.len(),
            hosts.join(", ")
        ));
    }
    s
}

pub fn log(remote: &Remote, last: u32, json: bool) -> Result<ExitCode> {
    let (addr, tracker_host, id) = resolve(remote)?;
    let entries = runtime()?.block_on(async {
        let client = Client::new(&id, addr)?;
        let conn = client.connect(addr, &tracker_host).await?;
        let r = conn
            .request(&Msg::GetLog { last }, MAX_CONTROL, Duration::from_secs(10))
            .await;
        conn.close();
        client.close().await;
        match r? {
            Msg::Log { entries } => Ok(entries),
            other => Err(anyhow::anyhow!(
                "the tracker answered GetLog with {}",
                other.name()
            )),
        }
    })?;
    emit(json, &serde_json::json!({ "entries": entries }), || {
        let mut s = String::new();
        for e in &entries {
            s.push_str(&format!(
                "{} {} {} {}{}: {}\n",
                shoal_seed::tracker::utc(e.at_unix_ms / 1000),
                e.rollout,
                e.who,
                e.what,
                e.host
                    .as_deref()
                    .map(|h| format!(" {h}"))
                    .unwrap_or_default(),
                e.result
            ));
        }
        if s.is_empty() {
            s.push_str("the deploy log is empty\n");
        }
        s
    })?;
    Ok(ExitCode::SUCCESS)
}

pub fn audit(remote: &Remote, json: bool) -> Result<ExitCode> {
    let (addr, tracker_host, id) = resolve(remote)?;
    let audits = runtime()?.block_on(async {
        let client = Client::new(&id, addr)?;
        let r = shoal_rollout::audit::audit_fleet(
            &client,
            addr,
            &tracker_host,
            Duration::from_secs(30),
            Duration::from_secs(600),
        )
        .await;
        client.close().await;
        r.context("asking the fleet to audit")
    })?;
    let clean = audits.iter().all(|a| a.clean());
    emit(
        json,
        &serde_json::json!({ "clean": clean, "hosts": audits }),
        || {
            let mut s = String::new();
            for a in &audits {
                match (&a.summary, &a.error) {
                    (Some(x), _) if x.clean => s.push_str(&format!(
                        "{:<16} {:<8} clean      {}\n",
                        a.host,
                        a.dc,
                        x.tag.as_deref().unwrap_or("-")
                    )),
                    (Some(x), _) => {
                        s.push_str(&format!(
                            "{:<16} {:<8} DIFFERS    {} ({} problem(s))\n",
                            a.host,
                            a.dc,
                            x.tag.as_deref().unwrap_or("-"),
                            x.problem_count
                        ));
                        for p in &x.problems {
                            s.push_str(&format!("    {p}\n"));
                        }
                    }
                    (None, e) => s.push_str(&format!(
                        "{:<16} {:<8} UNREACHED  {}\n",
                        a.host,
                        a.dc,
                        e.as_deref().unwrap_or("")
                    )),
                }
            }
            let bad = audits.iter().filter(|a| !a.clean()).count();
            s.push_str(&format!(
                "{} host(s) audited: {}\n",
                audits.len(),
                if bad == 0 {
                    "all clean".to_string()
                } else {
                    format!("{bad} differ or did not answer")
                }
            ));
            s
        },
    )?;
    Ok(if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

pub fn exec(root: &Path, command: &[String]) -> Result<ExitCode> {
    let root = Root::new(root);
    let lease = shoal_bundle::lease::take(&root, &command.join(" "))
        .with_context(|| format!("taking a lease in {}", root.path().display()))?;
    lease
        .share_with_children()
        .context("passing the lease on to the command")?;
    // A relative program path means one inside the release.
    let program = Path::new(&command[0]);
    let program = if program.is_relative() && command[0].contains('/') {
        lease.dir.join(program)
    } else {
        program.to_path_buf()
    };
    let status = std::process::Command::new(&program)
        .args(&command[1..])
        .current_dir(&lease.dir)
        .env("SHOAL_TAG", &lease.tag)
        .env("SHOAL_DIR", &lease.dir)
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    drop(lease);
    use std::os::unix::process::ExitStatusExt;
    let code = status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
