//! One function per subcommand.

use crate::{Cli, Command, KeyCommand, Preset, demo, progress::bytes_bar};
use anyhow::{Context, Result};
use serde::Serialize;
use shoal_bundle::assemble::{InstallOptions, install, load_from_store};
use shoal_bundle::chunk::ChunkParams;
use shoal_bundle::pack::{PackOptions, pack, stream_size};
use shoal_bundle::signing::{DeployKey, TrustedKey, pub_path};
use shoal_bundle::{ChunkStore, Root, activate, audit, gc, releases};
use std::path::Path;
use std::process::ExitCode;

/// Prints `value` as JSON, or `text` for people.
pub fn emit<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> std::io::Result<()> {
    if json {
        crate::out::print(format_args!(
            "{}\n",
            serde_json::to_string(value).expect("serializable")
        ))
    } else {
        crate::out::print(text())
    }
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        Command::Demo { dir, local: true } => crate::local_demo::run(dir.as_deref(), json),
        Command::Demo { dir, local: false } => demo::run(dir.as_deref(), json),
        Command::Bench {
            topology,
            size,
            tree,
            delta,
            strategy,
            time_limit,
            chart,
            workdir,
            seed,
            keep,
            cut,
            model,
            piece,
            manifest,
        } => crate::bench::run(
            crate::bench::BenchArgs {
                topology,
                size,
                tree,
                delta,
                strategy,
                time_limit,
                chart,
                workdir,
                seed,
                keep,
                cut,
                model,
                piece,
                manifest,
            },
            json,
        ),
        Command::Cluster { command } => crate::fleet::cluster(command, json),
        Command::Seed {
            dir, tag, config, ..
        } => crate::fleet::seed(dir, tag, &config, json),
        Command::Agent { config } => crate::fleet::agent(&config),
        Command::Status {
            remote,
            watch: true,
            stale_after,
            every,
            release,
            until_live,
            ..
        } => crate::watch::run(
            &remote,
            crate::watch::Options {
                every,
                release,
                stale_after,
                until_live,
                json,
            },
        ),
        Command::Status {
            remote,
            check,
            stale_after,
            ..
        } => crate::fleet::status(&remote, check, stale_after, json),
        Command::Deploy {
            tag,
            remote,
            rollout,
        } => crate::rollout::deploy(shoal_rollout::Goal::Deploy(tag), &remote, &rollout, json),
        Command::Log { remote, last } => crate::rollout::log(&remote, last, json),
        Command::Exec { root, command } => crate::rollout::exec(&root, &command),
        Command::Config {
            command: crate::ConfigCommand::Check { file, kind },
        } => crate::ops::config_check(&file, kind, json),
        Command::Completions { shell } => {
            let mut cmd = crate::command();
            clap_complete::generate(shell, &mut cmd, "shoal", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Command::Man { out } => crate::ops::man(out.as_deref()),
        Command::Rollback {
            tag,
            root: None,
            remote,
            rollout,
        } => crate::rollout::deploy(shoal_rollout::Goal::Rollback(tag), &remote, &rollout, json),
        Command::Audit {
            root: None, remote, ..
        } => crate::rollout::audit(&remote, json),
        Command::Sample {
            out,
            preset,
            edit,
            seed,
        } => {
            let spec = match preset {
                Preset::Demo => shoal_sample::Spec::demo(),
                Preset::Bench => shoal_sample::Spec::bench(),
            };
            let value = match edit {
                None => {
                    let stats = shoal_sample::generate(&out, &spec)
                        .with_context(|| format!("writing a sample tree to {}", out.display()))?;
                    serde_json::json!({"dir": out, "files": stats.files, "bytes": stats.bytes})
                }
                Some(pct) => {
                    let stats = shoal_sample::Stats {
                        small_files: shoal_sample::small_files(&out, &spec),
                        ..Default::default()
                    };
                    let edited = shoal_sample::edit(&out, &stats, pct, seed)
                        .with_context(|| format!("editing the sample tree in {}", out.display()))?;
                    serde_json::json!({"dir": out, "edited": edited.len()})
                }
            };
            emit(json, &value, || format!("{value}\n"))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Key {
            command: KeyCommand::New { out },
        } => {
            let key = DeployKey::generate().context("generating a key")?;
            key.save(&out)
                .with_context(|| format!("writing deploy key {}", out.display()))?;
            let public = pub_path(&out);
            emit(
                json,
                &serde_json::json!({
                    "secret": out, "public": public, "fingerprint": key.public().fingerprint()
                }),
                || {
                    format!(
                        "wrote {} (secret) and {} (public)\nfingerprint {}\n",
                        out.display(),
                        public.display(),
                        key.public().fingerprint()
                    )
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Pack {
            dir,
            tag,
            store,
            key,
            chunk_avg,
            level,
            valid_for,
            counter,
        } => {
            let key = DeployKey::load(&key).context("loading the deploy key")?;
            let store = ChunkStore::open(&store).context("opening the store")?;
            let mut opts = PackOptions::new(&tag);
            opts.chunking = ChunkParams::with_avg(chunk_avg);
            opts.level = level;
            opts.valid_for = valid_for;
            opts.counter = counter;
            let bar = bytes_bar(json, stream_size(&dir).unwrap_or(0), "packing");
            let report = pack(&dir, &store, &key, &opts, &|n| bar.inc(n))
                .with_context(|| format!("packing {} as {tag}", dir.display()))?;
            bar.finish_and_clear();
            emit(json, &report, || {
                format!(
                    "packed {} as {}: {} files, {} bytes, {} chunks ({} new, {} bytes stored)\nid {}\n",
                    dir.display(),
                    report.tag,
                    report.files,
                    report.bytes,
                    report.chunks,
                    report.new_chunks,
                    report.new_bytes_stored,
                    report.id
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Install {
            tag,
            store,
            root,
            trust,
            activate: then_activate,
            reserve,
            no_link,
        } => {
            let trusted = load_trusted(&trust)?;
            let store = ChunkStore::open(&store).context("opening the store")?;
            let root = Root::new(&root);
            let release = load_from_store(&store, &tag, &trusted)
                .with_context(|| format!("reading release {tag} from {}", store.dir().display()))?;
            let bar = bytes_bar(json, release.manifest.stream_len(), "installing");
            let opts = InstallOptions {
                reserve,
                link_unchanged: !no_link,
                progress: &|n| bar.inc(n),
            };
            let report = install(&root, &store, &release, opts)
                .with_context(|| format!("installing {tag} into {}", root.path().display()))?;
            bar.finish_and_clear();
            let activated = if then_activate {
                activate::activate(&root, &tag).with_context(|| format!("activating {tag}"))?
            } else {
                false
            };
            #[derive(Serialize)]
            struct Out<'a> {
                #[serde(flatten)]
                report: &'a shoal_bundle::assemble::InstallReport,
                activated: bool,
            }
            emit(
                json,
                &Out {
                    report: &report,
                    activated,
                },
                || {
                    let mut s = if report.already_installed {
                        format!("{} is already installed in {}\n", tag, report.dir)
                    } else {
                        format!(
                            "installed {} into {}: {} files, {} bytes ({} written, {} linked from the current release), verified\n",
                            tag,
                            report.dir,
                            report.files,
                            report.bytes,
                            report.bytes_written,
                            report.bytes_linked
                        )
                    };
                    if activated {
                        s.push_str(&format!("activated {tag}\n"));
                    }
                    s
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Activate { tag, root } => {
            let root = Root::new(&root);
            let changed = activate::activate(&root, &tag)
                .with_context(|| format!("activating {tag} in {}", root.path().display()))?;
            emit(
                json,
                &serde_json::json!({"current": tag, "changed": changed}),
                || {
                    if changed {
                        format!("current -> {tag}\n")
                    } else {
                        format!("{tag} was already current\n")
                    }
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rollback {
            tag,
            root: Some(root),
            ..
        } => {
            if tag.is_some() {
                anyhow::bail!(
                    "on one host, `shoal activate TAG --root ROOT` switches to a named release"
                );
            }
            let root = Root::new(&root);
            let from = root.current()?;
            let to = activate::rollback(&root)
                .with_context(|| format!("rolling back in {}", root.path().display()))?;
            emit(
                json,
                &serde_json::json!({"from": from, "current": to}),
                || {
                    format!(
                        "current -> {to} (was {})\n",
                        from.as_deref().unwrap_or("none")
                    )
                },
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Releases { root } => {
            let root = Root::new(&root);
            let list = releases::list(&root)
                .with_context(|| format!("listing releases in {}", root.path().display()))?;
            let leases = shoal_bundle::lease::list(&root)
                .with_context(|| format!("listing leases in {}", root.path().display()))?;
            let value = serde_json::json!({ "releases": list, "leases": leases });
            emit(json, &value, || {
                let mut s = format!(
                    "{:<2} {:<32} {:<16} {:>8} {:>14}\n",
                    "", "TAG", "ID", "FILES", "BYTES"
                );
                for r in &list {
                    let mark = if r.current {
                        "*"
                    } else if r.previous {
                        "<"
                    } else {
                        ""
                    };
                    s.push_str(&format!(
                        "{:<2} {:<32} {:<16} {:>8} {:>14}\n",
                        mark,
                        r.tag,
                        &r.id[..16],
                        r.files,
                        r.bytes
                    ));
                }
                s.push_str("(* current, < previous: where rollback goes)\n");
                let bad = root.bad().unwrap_or_default();
                if !bad.is_empty() {
                    s.push_str(&format!(
                        "marked bad here (no rollback picks them): {}\n",
                        bad.join(", ")
                    ));
                }
                for l in &leases {
                    s.push_str(&format!(
                        "lease on {}: pid {} since {} {}: {}\n",
                        l.tag,
                        l.pid,
                        shoal_seed::tracker::utc(l.since_unix),
                        if l.live {
                            "(running)"
                        } else {
                            "(DEAD: holder gone)"
                        },
                        l.command
                    ));
                }
                s
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Audit {
            tag,
            root: Some(root),
            ..
        } => {
            let root = Root::new(&root);
            let report = audit::audit_release(&root, tag.as_deref())
                .with_context(|| format!("auditing {}", root.path().display()))?;
            emit(json, &report, || audit_text(&report))?;
            Ok(if report.is_clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Gc { root, keep } => {
            let root = Root::new(&root);
            let report = gc::gc(&root, keep)
                .with_context(|| format!("collecting garbage in {}", root.path().display()))?;
            emit(json, &report, || {
                format!(
                    "removed {} release(s) {:?}, kept {:?}, freed {} chunk(s) ({} bytes)\n",
                    report.removed.len(),
                    report.removed,
                    report.kept,
                    report.chunks_removed,
                    report.chunk_bytes_freed
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn load_trusted(paths: &[impl AsRef<Path>]) -> Result<Vec<TrustedKey>> {
    paths
        .iter()
        .map(|p| {
            TrustedKey::load(p.as_ref())
                .with_context(|| format!("loading trusted key {}", p.as_ref().display()))
        })
        .collect()
}

pub fn audit_text(r: &shoal_bundle::audit::AuditReport) -> String {
    let mut s = format!(
        "audit {} ({}): {} entries, {} bytes hashed: {}\n",
        r.tag,
        &r.id[..16.min(r.id.len())],
        r.entries_checked,
        r.bytes_hashed,
        if r.is_clean() { "clean" } else { "DIFFERS" }
    );
    for f in &r.modified {
        s.push_str(&format!("  modified {}: {}\n", f.path, f.reason));
    }
    for p in &r.missing {
        s.push_str(&format!("  missing  {p}\n"));
    }
    for p in &r.extra {
        s.push_str(&format!("  extra    {p}\n"));
    }
    s
}
