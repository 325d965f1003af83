//! `shoal install v2 --activate` killed with SIGKILL at random moments: whatever the
//! moment, `current` exists and points to a complete, verified release (v1 or v2),
//! every finished release audits clean, and running the same command again
//! succeeds, cleans up what the killed run left and activates v2.
//!
//! Trials: 50 by default, `SHOAL_CRASH_TRIALS=N` to change. The kill delays are
//! drawn from a seeded generator (`SHOAL_CRASH_SEED`, default 1), uniformly over
//! the measured duration of a whole run, so the kills land in every phase:
//! startup, manifest check, assembly, sync, rename, switch; every third trial
//! instead kills as soon as it sees a given step happen (assembly begun, manifest
//! written, tree renamed into place, `current` switched), since the last steps
//! take only a few milliseconds of a run.

mod support;

use shoal_bundle::{Root, activate};
use shoal_sample::{Rng, Spec, Stats};
use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};
use support::{Env, audit_clean, current_name, installed, leftovers};

fn spec(binary: u64) -> Spec {
    Spec {
        files: 2500,
        mean_file: 6000,
        binaries: vec![binary],
        seed: 21,
    }
}

/// Brings the root back to "v1 installed and current, v2 not installed", the way
/// `gc` removes a release (rename to a `.gc-` name under the lock, then delete).
fn reset_to_v1(root_dir: &Path) {
    let root = Root::new(root_dir);
    activate::activate(&root, "v1").unwrap();
    let doomed = root.releases_dir().join(".gc-test-v2");
    {
        let _lock = root.lock().unwrap();
        let dir = root.release_dir("v2");
        if dir.exists() {
            fs::rename(&dir, &doomed).unwrap();
        }
        let _ = fs::remove_file(root.manifest_file("v2"));
    }
    if doomed.exists() {
        fs::remove_dir_all(&doomed).unwrap();
    }
    assert_eq!(installed(root_dir), ["v1"]);
    assert_eq!(current_name(root_dir).as_deref(), Some("v1"));
}

/// Steps of an install, in order, that a trial can aim its kill at.
#[derive(Clone, Copy, Debug)]
enum Step {
    /// The partial tree appeared: assembly has begun.
    Assembling,
    /// The manifest of v2 is in place, the tree not yet renamed.
    ManifestWritten,
    /// The tree is renamed into `releases/`, not yet current.
    Installed,
    /// `current` points to v2; the history is written after.
    Switched,
}
const STEPS: [Step; 4] = [
    Step::Assembling,
    Step::ManifestWritten,
    Step::Installed,
    Step::Switched,
];

/// Polls (without sleeping) until `step` is seen in the root or the child exits.
fn wait_for_step(root: &Path, step: Step, child: &mut std::process::Child) {
    let releases = root.join("releases");
    let manifest = root.join("manifests/v2.manifest");
    let current = root.join("current");
    let mut n = 0u64;
    loop {
        let seen = match step {
            Step::Assembling => fs::read_dir(&releases).is_ok_and(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
            }),
            Step::ManifestWritten => manifest.exists(),
            Step::Installed => releases.join("v2").exists(),
            Step::Switched => fs::read_link(&current).is_ok_and(|t| t.ends_with("v2")),
        };
        if seen {
            return;
        }
        n += 1;
        if n.is_multiple_of(64) && child.try_wait().unwrap().is_some() {
            return;
        }
    }
}

#[derive(Default, Debug)]
struct Tally {
    /// Trials aimed at each of STEPS.
    aimed: [u32; 4],
    /// `current` still v1 after the kill ...
    before_switch: u32,
    /// ... of which the run had not begun assembling (no trace of v2 at all),
    untouched: u32,
    /// ... left a partial tree,
    partial: u32,
    /// ... left the manifest of v2 written but its tree not renamed into place,
    orphan_manifest: u32,
    /// ... or had finished v2 but not switched to it.
    installed_not_active: u32,
    /// `current` is v2 after the kill ...
    after_switch: u32,
    /// ... of which the process had already exited when the kill came.
    exited_before_kill: u32,
}

#[test]
fn sigkill_during_install_never_breaks_current() {
    let trials: u32 = std::env::var("SHOAL_CRASH_TRIALS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let seed: u64 = std::env::var("SHOAL_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);

    let env = Env::new();
    // v1: a tree of ~2,500 small files (15 MB) and a 6 MiB binary. v2: the same tree with
    // 30% of the small files edited and a different binary, so an install both
    // hard-links unchanged files from v1 and writes several MB of new ones.
    let src1 = env.path("src-v1");
    let stats: Stats = shoal_sample::generate(&src1, &spec(6 << 20)).unwrap();
    let src2 = env.path("src-v2");
    let stats2 = shoal_sample::generate(&src2, &spec(8 << 20)).unwrap();
    assert_eq!(stats.small_files, stats2.small_files);
    shoal_sample::edit(&src2, &stats2, 30.0, 5).unwrap();
    env.pack(&src1, "v1");
    env.pack(&src2, "v2");

    let root = env.path("root");
    env.install_ok("v1", &root, &["--activate"]);
    audit_clean(&root, None);

    let args = env.install_args("v2", &root, &["--activate"]);
    // The full duration of an uninterrupted run, best of three.
    let mut full = Duration::MAX;
    for _ in 0..3 {
        let t = Instant::now();
        support::run_ok(&args);
        full = full.min(t.elapsed());
        reset_to_v1(&root);
    }
    println!(
        "crash: an uninterrupted `shoal install v2 --activate` takes {} ms",
        full.as_millis()
    );

    let mut rng = Rng::new(seed);
    let mut tally = Tally::default();
    let started = Instant::now();
    for trial in 0..trials {
        let mut child = support::cmd(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        // Two trials in three kill at a random moment in [0, full). Every third one
        // kills as soon as it sees a step happen, aiming at the short final steps
        // (a few milliseconds in all) that uniform delays seldom hit.
        let when = if trial % 3 == 2 {
            let step = STEPS[(trial / 3) as usize % STEPS.len()];
            tally.aimed[(trial / 3) as usize % STEPS.len()] += 1;
            wait_for_step(&root, step, &mut child);
            format!("at {step:?}")
        } else {
            let delay = Duration::from_micros(rng.below(full.as_micros() as u64));
            std::thread::sleep(delay);
            format!("after {} us", delay.as_micros())
        };
        let exited = child.try_wait().unwrap();
        child.kill().unwrap(); // SIGKILL; no error if it has already exited
        let status = child.wait().unwrap();
        let killed_at = t0.elapsed();
        let what = format!(
            "trial {trial} (kill {when}, {} us after spawn, {status})",
            killed_at.as_micros()
        );

        // `current` exists, names v1 or v2, and resolves to a clean tree.
        let cur = current_name(&root).unwrap_or_else(|| panic!("{what}: `current` is missing"));
        assert!(cur == "v1" || cur == "v2", "{what}: current -> {cur}");
        let resolved = fs::canonicalize(root.join("current"))
            .unwrap_or_else(|e| panic!("{what}: current does not resolve: {e}"));
        assert!(resolved.is_dir(), "{what}: current is not a directory");
        audit_clean(&root, None);
        // Every finished release is whole (it is renamed into place only when verified).
        let finished = installed(&root);
        for name in finished.iter().filter(|n| **n != cur) {
            audit_clean(&root, Some(name));
        }
        if let Some(status) = exited {
            assert!(
                status.success(),
                "{what}: the run failed by itself: {status}"
            );
            assert_eq!(cur, "v2", "{what}: exited successfully without activating");
            tally.exited_before_kill += 1;
        }
        if cur == "v1" {
            tally.before_switch += 1;
            let traces = leftovers(&root);
            if finished.iter().any(|n| n == "v2") {
                tally.installed_not_active += 1;
            } else if traces.is_empty() {
                tally.untouched += 1;
            } else if traces.iter().any(|t| t == "manifests/v2.manifest") {
                tally.orphan_manifest += 1;
            } else {
                tally.partial += 1;
            }
        } else {
            tally.after_switch += 1;
        }

        // Running the command again finishes the job and leaves nothing behind.
        support::run_ok(&args);
        assert_eq!(current_name(&root).as_deref(), Some("v2"), "{what}: rerun");
        assert_eq!(leftovers(&root), Vec::<String>::new(), "{what}: rerun left");
        assert_eq!(installed(&root), ["v1", "v2"], "{what}: rerun");
        audit_clean(&root, None);

        reset_to_v1(&root);
    }
    println!(
        "crash: {trials} trials in {:.1} s (seed {seed}, {:?} aimed at {:?}): {} killed \
         before the switch ({} before any trace of v2, {} with a partial tree left, {} with \
         an orphan manifest, {} with v2 installed but not active), {} after the switch ({} of which had already exited)",
        started.elapsed().as_secs_f64(),
        tally.aimed,
        STEPS,
        tally.before_switch,
        tally.untouched,
        tally.partial,
        tally.orphan_manifest,
        tally.installed_not_active,
        tally.after_switch,
        tally.exited_before_kill,
    );
    assert_eq!(tally.before_switch + tally.after_switch, trials);
}

/// Activation appends to `ROOT/history` and now and then compacts it by writing a
/// new file beside it (`ROOT/.tmp-*`) and renaming it over. A run killed in
/// between must not leave that file behind for good: the next run cleans it, as
/// it cleans every other leftover.
#[test]
fn sigkill_during_history_compaction_leaves_nothing_for_good() {
    let env = Env::new();
    for v in ["1", "2"] {
        let src = env.path(&format!("src-v{v}"));
        fs::create_dir_all(&src).unwrap();
        fs::write(src.join("f.txt"), v).unwrap();
        env.pack(&src, &format!("v{v}"));
    }
    let root = env.path("root");
    env.install_ok("v1", &root, &["--activate"]);
    env.install_ok("v2", &root, &[]);
    let root_arg = root.display().to_string();
    let mut caught = None;
    for attempt in 1..=200 {
        // 400 lines: the next activation compacts the history.
        support::run_ok(&["activate", "v1", "--root", &root_arg]);
        let lines: String = (0..400).map(|i| format!("v{}\n", 1 + i % 2)).collect();
        fs::write(root.join("history"), lines).unwrap();
        let mut child = support::cmd(&["activate", "v2", "--root", &root_arg])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let tmp_in_root = || {
            fs::read_dir(&root)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".tmp-"))
        };
        let mut n = 0u32;
        while !tmp_in_root() {
            n += 1;
            if n.is_multiple_of(64) && child.try_wait().unwrap().is_some() {
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        if tmp_in_root() {
            caught = Some(attempt);
            break;
        }
    }
    let Some(attempt) = caught else {
        println!("crash, history: no kill landed inside the compaction in 200 attempts");
        return;
    };
    println!("crash, history: killed during compaction at attempt {attempt}");
    // Any later run that takes the lock should clean up.
    support::run_ok(&["activate", "v1", "--root", &root_arg]);
    let left: Vec<String> = fs::read_dir(&root)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "left in the root for good: {left:?}");
}
