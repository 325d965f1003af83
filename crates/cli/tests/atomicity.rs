//! The switch of `current` is atomic for readers: while one thread flips `current`
//! between two releases as fast as it can (library calls, plus some real
//! `shoal activate` / `shoal rollback` runs), reader threads that resolve `current`
//! once per request and then read two files from the resolved tree never see the
//! two files from different releases, never a partial file, and never a missing
//! `current`.

mod support;

use shoal_bundle::{Root, activate};
use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::{Env, current_name, run_ok};

/// Size of each of the two files: several pages, so a read is not trivially atomic.
const FILE_LEN: usize = 24 * 1024;
const READERS: usize = 3;
const RUN_FOR: Duration = Duration::from_secs(4);

#[derive(Default)]
struct Counts {
    reads: AtomicU64,
    mixed: AtomicU64,
    torn: AtomicU64,
    missing: AtomicU64,
    read_errors: AtomicU64,
    saw_v1: AtomicU64,
    saw_v2: AtomicU64,
    /// The control reader, which looks `current` up again for each file.
    naive_reads: AtomicU64,
    naive_mixed: AtomicU64,
}

/// The version a file's bytes stand for, or None when they are not FILE_LEN copies
/// of one version digit (a torn or partial read).
fn version_of(bytes: &[u8]) -> Option<u8> {
    let first = *bytes.first()?;
    (bytes.len() == FILE_LEN && matches!(first, b'1' | b'2') && bytes.iter().all(|&b| b == first))
        .then_some(first)
}

fn reader(root: &Path, stop: &AtomicBool, c: &Counts) {
    let current = root.join("current");
    while !stop.load(Ordering::Relaxed) {
        // One request: resolve `current` once, then read both files from that tree.
        let dir = match fs::canonicalize(&current) {
            Ok(d) => d,
            Err(_) => {
                c.missing.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let (a, b) = match (fs::read(dir.join("a.txt")), fs::read(dir.join("b.txt"))) {
            (Ok(a), Ok(b)) => (a, b),
            _ => {
                c.read_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        c.reads.fetch_add(1, Ordering::Relaxed);
        match (version_of(&a), version_of(&b)) {
            (Some(va), Some(vb)) if va != vb => {
                c.mixed.fetch_add(1, Ordering::Relaxed);
            }
            (Some(b'1'), Some(_)) => {
                c.saw_v1.fetch_add(1, Ordering::Relaxed);
            }
            (Some(_), Some(_)) => {
                c.saw_v2.fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                c.torn.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The control: a request that goes through `current` for each file may see
/// one file of each release. It shows that the switches do race with the reads;
/// it is reported, not asserted (it is a matter of timing).
fn naive_reader(root: &Path, stop: &AtomicBool, c: &Counts) {
    let current = root.join("current");
    while !stop.load(Ordering::Relaxed) {
        let (Ok(a), Ok(b)) = (
            fs::read(current.join("a.txt")),
            fs::read(current.join("b.txt")),
        ) else {
            continue;
        };
        c.naive_reads.fetch_add(1, Ordering::Relaxed);
        if let (Some(va), Some(vb)) = (version_of(&a), version_of(&b))
            && va != vb
        {
            c.naive_mixed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[test]
fn readers_never_see_a_mixed_or_missing_release() {
    let env = Env::new();
    for v in ["1", "2"] {
        let src = env.path(&format!("src-v{v}"));
        fs::create_dir_all(&src).unwrap();
        let body = v.repeat(FILE_LEN);
        fs::write(src.join("a.txt"), &body).unwrap();
        fs::write(src.join("b.txt"), &body).unwrap();
        env.pack(&src, &format!("v{v}"));
    }
    let root_dir = env.path("root");
    env.install_ok("v1", &root_dir, &["--activate"]);
    env.install_ok("v2", &root_dir, &["--activate"]);
    assert_eq!(current_name(&root_dir).as_deref(), Some("v2"));

    let root = Root::new(&root_dir);
    let stop = Arc::new(AtomicBool::new(false));
    let counts = Arc::new(Counts::default());
    let readers: Vec<_> = (0..READERS)
        .map(|_| {
            let (stop, counts, dir) = (stop.clone(), counts.clone(), root_dir.clone());
            std::thread::spawn(move || reader(&dir, &stop, &counts))
        })
        .collect();
    let control = {
        let (stop, counts, dir) = (stop.clone(), counts.clone(), root_dir.clone());
        std::thread::spawn(move || naive_reader(&dir, &stop, &counts))
    };

    let start = Instant::now();
    let (mut lib_switches, mut cli_switches, mut i) = (0u64, 0u64, 0u64);
    let root_arg = root_dir.display().to_string();
    while start.elapsed() < RUN_FOR {
        i += 1;
        let before = root.current().unwrap();
        if i % 100 == 0 {
            // Now and then the real command, both ways.
            if i % 200 == 0 {
                run_ok(&["rollback", "--root", &root_arg]);
            } else {
                let to = if before.as_deref() == Some("v1") {
                    "v2"
                } else {
                    "v1"
                };
                run_ok(&["activate", to, "--root", &root_arg]);
            }
            cli_switches += 1;
        } else if i % 2 == 0 {
            let to = activate::rollback(&root).unwrap();
            assert_ne!(Some(&to), before.as_ref(), "rollback stayed put");
            lib_switches += 1;
        } else {
            let to = if before.as_deref() == Some("v1") {
                "v2"
            } else {
                "v1"
            };
            assert!(activate::activate(&root, to).unwrap(), "{to} was current");
            lib_switches += 1;
        }
        assert_ne!(
            root.current().unwrap(),
            before,
            "switch {i} changed nothing"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader panicked");
    }
    control.join().expect("control reader panicked");
    let elapsed = start.elapsed();

    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let c = &*counts;
    println!(
        "atomicity: {:.1} s, {} switches ({} library, {} CLI), {} reads by {READERS} readers \
         ({} of v1, {} of v2): {} mixed, {} torn, {} missing current, {} read errors; \
         control reader resolving `current` per file: {} of {} requests mixed",
        elapsed.as_secs_f64(),
        lib_switches + cli_switches,
        lib_switches,
        cli_switches,
        get(&c.reads),
        get(&c.saw_v1),
        get(&c.saw_v2),
        get(&c.mixed),
        get(&c.torn),
        get(&c.missing),
        get(&c.read_errors),
        get(&c.naive_mixed),
        get(&c.naive_reads),
    );
    assert_eq!(get(&c.mixed), 0, "a request saw files of both releases");
    assert_eq!(get(&c.torn), 0, "a request saw a partial file");
    assert_eq!(get(&c.missing), 0, "`current` could not be resolved");
    assert_eq!(
        get(&c.read_errors),
        0,
        "a file of a resolved release was missing"
    );
    assert!(
        lib_switches + cli_switches >= 300,
        "too few switches to mean anything"
    );
    assert!(cli_switches >= 3, "too few CLI switches");
    assert!(get(&c.reads) >= 3000, "too few reads to mean anything");
    assert!(
        get(&c.saw_v1) > 0 && get(&c.saw_v2) > 0,
        "readers never saw both releases"
    );
    assert!(root.history().unwrap().len() <= 400, "history is compacted");
    support::audit_clean(&root_dir, None);
    assert!(support::leftovers(&root_dir).is_empty());
}
