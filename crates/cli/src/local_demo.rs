//! `shoal demo --local`: the whole job on one host with an embedded sample release:
//! pack, install, verify, activate, ship a 1% delta, audit, catch tampering, roll
//! back, collect garbage, and print what each step did and cost.
//!
//! `shoal demo` without `--local` runs the fleet version (`demo.rs`).

use crate::commands::audit_text;
use anyhow::{Context, Result, bail};
use serde::Serialize;
use shoal_bundle::assemble::{InstallOptions, install, load_from_store};
use shoal_bundle::pack::{PackOptions, PackReport, pack};
use shoal_bundle::signing::DeployKey;
use shoal_bundle::{ChunkStore, Root, activate, audit, gc};
use shoal_sample::{Spec, edit, generate};
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

#[derive(Serialize)]
struct Step {
    step: String,
    seconds: f64,
    detail: String,
}

#[derive(Serialize, Default)]
struct Report {
    steps: Vec<Step>,
    release_bytes: u64,
    first_stored_bytes: u64,
    delta_stored_bytes: u64,
    delta_written_bytes: u64,
    audits_clean: u32,
    tamper_detected: bool,
    ok: bool,
}

pub fn run(dir: Option<&Path>, json: bool) -> Result<ExitCode> {
    let tmp;
    let work = match dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.to_path_buf()
        }
        None => {
            tmp = tempfile::tempdir().context("creating a work directory")?;
            tmp.path().to_path_buf()
        }
    };
    let mut r = Report::default();
    let mut step = |name: &str, t: Instant, detail: String| {
        if !json {
            // A closed pipe ends the run at the report's first write.
            let _ = crate::out::print(format_args!(
                "{:<34} {:>7.2}s  {detail}\n",
                name,
                t.elapsed().as_secs_f64()
            ));
        }
        r.steps.push(Step {
            step: name.into(),
            seconds: t.elapsed().as_secs_f64(),
            detail,
        });
    };
    if !json {
        crate::out::print(format_args!("shoal demo in {}\n\n", work.display()))?;
    }

    let t = Instant::now();
    let src = work.join("src");
    let _ = std::fs::remove_dir_all(&src);
    let spec = Spec::demo();
    let stats = generate(&src, &spec).context("generating the sample release")?;
    step(
        "generate sample release",
        t,
        format!("{} files, {} bytes", stats.files, stats.bytes),
    );

    let keyfile = work.join("deploy.key");
    let _ = std::fs::remove_file(&keyfile);
    let _ = std::fs::remove_file(work.join("deploy.key.pub"));
    let key = DeployKey::generate()?;
    key.save(&keyfile)?;
    let trusted = [key.public()];
    let store_dir = work.join("store");
    let _ = std::fs::remove_dir_all(&store_dir);
    let store = ChunkStore::open(&store_dir)?;

    let t = Instant::now();
    let v1 = pack(&src, &store, &key, &PackOptions::new("demo/v1"), &|_| {})?;
    step("pack + sign demo/v1", t, pack_detail(&v1, t));
    r.release_bytes = v1.bytes;
    r.first_stored_bytes = v1.new_bytes_stored;

    let root_dir = work.join("target-root");
    let _ = std::fs::remove_dir_all(&root_dir);
    let root = Root::new(&root_dir);
    let opts = InstallOptions::default();

    let t = Instant::now();
    let rel = load_from_store(&store, "demo/v1", &trusted)?;
    let i1 = install(&root, &store, &rel, opts)?;
    activate::activate(&root, "demo/v1")?;
    step(
        "install + verify + activate v1",
        t,
        format!("{} bytes written, current -> demo/v1", i1.bytes_written),
    );

    let t = Instant::now();
    let edited = edit(&src, &stats, 1.0, 2).context("editing the sample")?;
    let v2 = pack(&src, &store, &key, &PackOptions::new("demo/v2"), &|_| {})?;
    r.delta_stored_bytes = v2.new_bytes_stored;
    step(
        "edit 1% of files, pack demo/v2",
        t,
        format!(
            "{} files edited; {} new chunks, {} bytes stored ({:.2}% of v1)",
            edited.len(),
            v2.new_chunks,
            v2.new_bytes_stored,
            100.0 * v2.new_bytes_stored as f64 / v1.new_bytes_stored.max(1) as f64
        ),
    );

    let t = Instant::now();
    let rel = load_from_store(&store, "demo/v2", &trusted)?;
    let i2 = install(&root, &store, &rel, opts)?;
    activate::activate(&root, "demo/v2")?;
    r.delta_written_bytes = i2.bytes_written;
    step(
        "install + verify + activate v2",
        t,
        format!(
            "{} chunks read, {} bytes written, {} files hard-linked",
            i2.chunks_read, i2.bytes_written, i2.files_linked
        ),
    );

    let t = Instant::now();
    let a = audit::audit_release(&root, None)?;
    if a.is_clean() {
        r.audits_clean += 1;
    }
    step("audit current (v2)", t, first_line(&audit_text(&a)));

    // Tamper with v1's tree the way a stray hand edit would, and catch it.
    let t = Instant::now();
    let victim = root.release_dir("demo/v1").join("VERSION");
    std::fs::remove_file(&victim)?;
    std::fs::write(&victim, "hand edit\n")?;
    let a = audit::audit_release(&root, Some("demo/v1"))?;
    r.tamper_detected = !a.is_clean();
    step("audit tampered v1", t, first_line(&audit_text(&a)));

    let t = Instant::now();
    let back = activate::rollback(&root)?;
    let a = audit::audit_release(&root, None);
    step(
        "rollback",
        t,
        format!(
            "current -> {back}; its audit: {}",
            if a.as_ref().is_ok_and(|a| a.is_clean()) {
                "clean"
            } else {
                "DIFFERS (tampered above)"
            }
        ),
    );
    activate::activate(&root, "demo/v2")?;

    let t = Instant::now();
    let g = gc::gc(&root, 1)?;
    step(
        "gc --keep 1",
        t,
        format!("kept {:?}, removed {:?}", g.kept, g.removed),
    );
    let a = audit::audit_release(&root, None)?;
    if a.is_clean() {
        r.audits_clean += 1;
    }

    r.ok = r.audits_clean == 2 && r.tamper_detected;
    if json {
        crate::out::print(format_args!("{}\n", serde_json::to_string(&r)?))?;
    } else {
        crate::out::print(format_args!(
            "\nrelease {} bytes; stored {} compressed; delta stored {} ({:.2}%), delta written {} ({:.2}%)\n",
            r.release_bytes,
            r.first_stored_bytes,
            r.delta_stored_bytes,
            100.0 * r.delta_stored_bytes as f64 / r.first_stored_bytes.max(1) as f64,
            r.delta_written_bytes,
            100.0 * r.delta_written_bytes as f64 / r.release_bytes.max(1) as f64
        ))?;
        crate::out::print(format_args!(
            "audits clean: {}/2, tampering detected: {}  => {}\n",
            r.audits_clean,
            r.tamper_detected,
            if r.ok { "OK" } else { "FAILED" }
        ))?;
    }
    if !r.ok {
        bail!("the demo did not end as expected");
    }
    Ok(ExitCode::SUCCESS)
}

fn pack_detail(p: &PackReport, t: Instant) -> String {
    format!(
        "{} files, {} chunks, {} bytes -> {} stored ({:.0} MB/s)",
        p.files,
        p.chunks,
        p.bytes,
        p.new_bytes_stored,
        p.bytes as f64 / 1e6 / t.elapsed().as_secs_f64()
    )
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().to_string()
}
