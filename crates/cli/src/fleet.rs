//! The commands that run or query the swarm: cluster trust, seed, agent, status.

use crate::ClusterCommand;
use crate::commands::emit;
use anyhow::{Context, Result, bail};
use shoal_node::agent;
use shoal_node::config::AgentConfig;
use shoal_rollout::stale;
use shoal_seed::seed::{Seed, SeedConfig};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

pub fn cluster(cmd: ClusterCommand, json: bool) -> Result<ExitCode> {
    match cmd {
        ClusterCommand::Init { dir } => {
            shoal_net::cluster::init(&dir)
                .with_context(|| format!("creating the cluster in {}", dir.display()))?;
            emit(json, &serde_json::json!({ "dir": dir }), || {
                format!(
                    "cluster CA and deploy key written to {}\n(keep ca.key and deploy.key secret; ship deploy.key.pub to agents)\n",
                    dir.display()
                )
            })?;
        }
        ClusterCommand::Issue { dir, host, dc, out } => {
            shoal_net::cluster::issue(&dir, &host, &dc, &out)
                .with_context(|| format!("issuing an identity for {host}"))?;
            emit(
                json,
                &serde_json::json!({ "host": host, "dc": dc, "out": out }),
                || format!("identity for {host} ({dc}) written to {}\n", out.display()),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn seed(
    dir: Option<PathBuf>,
    tag: Option<String>,
    config: &Path,
    json: bool,
) -> Result<ExitCode> {
    let cfg = SeedConfig::load(config)?;
    runtime()?.block_on(async {
        let seed = std::sync::Arc::new(Seed::start(&cfg).await.context("starting the seed")?);
        seed.watch_store();
        if let (Some(dir), Some(tag)) = (dir, tag) {
            let r = seed
                .publish(&dir, &tag)
                .with_context(|| format!("packing and announcing {} as {tag}", dir.display()))?;
            emit(json, &r, || {
                format!(
                    "announced {} ({} files, {} bytes, {} chunks) id {}\n",
                    r.tag, r.files, r.bytes, r.chunks, r.id
                )
            })?;
        }
        if !json {
            crate::out::print(format_args!(
                "seed {} serving on {} ({} release(s)); Ctrl-C to stop\n",
                cfg.host,
                seed.local_addr(),
                seed.tracker.releases().len()
            ))?;
        }
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn agent(config: &Path) -> Result<ExitCode> {
    let cfg = AgentConfig::load(config)?;
    let host = cfg.host.clone();
    runtime()?.block_on(async {
        let node = agent::start(cfg)
            .await
            .with_context(|| format!("starting agent {host}"))?;
        tracing::info!(host, addr = ?node.endpoint.local_addr().ok(), "agent running");
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn status(
    remote: &crate::Remote,
    check: bool,
    stale_after: u64,
    json: bool,
) -> Result<ExitCode> {
    let (tracker, tracker_host, id) = crate::rollout::resolve(remote)?;
    let shoal_proto::FleetState { hosts, target, .. } = runtime()?.block_on(async {
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            agent::fleet(&id, tracker, &tracker_host),
        )
        .await
        .map_err(|_| anyhow::anyhow!("the tracker at {tracker} did not answer in 10 s"))?
        .with_context(|| format!("asking the tracker at {tracker}"))
    })?;
    if hosts.is_empty() && !json {
        bail!("the tracker knows no hosts yet");
    }
    let measure = stale::effective_target(&hosts, target.as_deref(), stale_after);
    let marks: Vec<stale::Marks> = hosts
        .iter()
        .map(|h| stale::marks(h, measure.as_deref(), stale_after))
        .collect();
    let converged = stale::converged(&hosts, target.as_deref(), stale_after);
    let mut value = hosts_json(&hosts);
    if let Some(list) = value.as_array_mut() {
        for (v, m) in list.iter_mut().zip(&marks) {
            v["stale"] = serde_json::json!(m.any());
            v["marks"] = serde_json::json!(m.notes);
        }
    }
    emit(
        json,
        &serde_json::json!({ "target": measure, "converged": converged, "hosts": value }),
        || {
            let mut s = format!(
                "target: {} ({})\n",
                measure.as_deref().unwrap_or("none"),
                if target.is_some() {
                    "set by the last rollout"
                } else {
                    "what most agents run; no rollout set one"
                }
            );
            s.push_str(&format!(
                "{:<1} {:<16} {:<8} {:<6} {:>6}  {:<20} {:<24} {}\n",
                "", "HOST", "DC", "ROLE", "SEEN", "CURRENT", "STAGED", "TRANSFER / NOTES"
            ));
            for (h, m) in hosts.iter().zip(&marks) {
                let mut notes = m.notes.clone();
                if let Some(t) = h.status.transfer.as_ref() {
                    notes.push(format!(
                        "{} {}/{} chunks, {} B down ({} B cross-dc), {} B up",
                        t.tag,
                        t.chunks_have,
                        t.chunks_total,
                        t.bytes_down,
                        t.bytes_down_cross_dc,
                        t.bytes_up
                    ));
                }
                if let Some(b) = &h.status.busy {
                    notes.push(b.clone());
                }
                if !h.status.bad.is_empty() {
                    notes.push(format!("bad here: {}", h.status.bad.join(",")));
                }
                notes.extend(h.status.refused.iter().map(|r| format!("refused: {r}")));
                s.push_str(&format!(
                    "{:<1} {:<16} {:<8} {:<6} {:>5}s  {:<20} {:<24} {}\n",
                    if m.any() { "!" } else { "" },
                    h.host,
                    h.dc,
                    format!("{:?}", h.role).to_lowercase(),
                    h.last_seen_s,
                    h.status.current.as_deref().unwrap_or("-"),
                    h.status.staged.join(","),
                    if notes.is_empty() {
                        "-".to_string()
                    } else {
                        notes.join("; ")
                    }
                ));
            }
            let stale = marks.iter().filter(|m| m.any()).count();
            s.push_str(&format!(
                "{stale} host(s) marked '!'; every live agent on the target: {}\n",
                if converged { "yes" } else { "no" }
            ));
            s
        },
    )?;
    Ok(if check && !converged {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn hosts_json(hosts: &[shoal_proto::HostReport]) -> serde_json::Value {
    hosts
        .iter()
        .map(|h| {
            serde_json::json!({
                "host": h.host,
                "dc": h.dc,
                "role": format!("{:?}", h.role).to_lowercase(),
                "addr": h.addr,
                "last_seen_s": h.last_seen_s,
                "current": h.status.current,
                "staged": h.status.staged,
                "bad": h.status.bad,
                "busy": h.status.busy,
                "refused": h.status.refused,
                "totals": {
                    "bytes_up": h.status.totals.bytes_up,
                    "bytes_down": h.status.totals.bytes_down,
                    "bytes_down_cross_dc": h.status.totals.bytes_down_cross_dc,
                    "chunks_fetched": h.status.totals.chunks_fetched,
                    "chunks_rejected": h.status.totals.chunks_rejected,
                    "peers_banned": h.status.totals.peers_banned,
                },
                "transfer": h.status.transfer.as_ref().map(|t| serde_json::json!({
                    "tag": t.tag, "chunks_have": t.chunks_have, "chunks_total": t.chunks_total,
                    "bytes_down": t.bytes_down, "bytes_up": t.bytes_up,
                    "bytes_down_cross_dc": t.bytes_down_cross_dc,
                })),
            })
        })
        .collect()
}
