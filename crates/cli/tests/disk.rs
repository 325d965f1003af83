//! Installs that cannot finish for lack of room or of permission fail cleanly: exit
//! code 2, one `error:` line that says what went wrong and where, and the root as it
//! was (`current` still v1 and clean, no partial tree, no stray manifest).
//!
//! The full-disk cases use a real small filesystem (an 8 MiB tmpfs), and the
//! permission case runs the CLI as user `nobody`; both need root. Without root, or
//! when mounting or `setpriv` is not possible, the tests print why and pass without
//! checking anything.

mod support;
mod tmpfs;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use support::{Env, audit_clean, chmod, current_name, installed, is_root, leftovers};
use tmpfs::Tmpfs;

/// Skips the test (returning from it) with a message when `r` is an Err.
macro_rules! or_skip {
    ($r:expr) => {
        match $r {
            Ok(v) => v,
            Err(why) => {
                println!("SKIPPED: {why}");
                return;
            }
        }
    };
}

/// A small tree: `n` files of `len` bytes filled with `fill`, in two directories.
fn small_tree(dir: &Path, n: usize, len: usize, fill: u8) {
    for i in 0..n {
        let p = dir.join(format!("d{}/f{i:03}.txt", i % 2));
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        let mut body = vec![fill; len];
        body[..8].copy_from_slice(format!("{i:08}").as_bytes());
        fs::write(p, body).unwrap();
    }
}

/// An Env with v1 (a small tree) packed, and `v2` packed from `make_v2`.
fn env_with(make_v2: impl FnOnce(&Path)) -> Env {
    let env = Env::new();
    let v1 = env.path("src-v1");
    small_tree(&v1, 20, 3000, b'1');
    env.pack(&v1, "v1");
    let v2 = env.path("src-v2");
    fs::create_dir_all(&v2).unwrap();
    make_v2(&v2);
    env.pack(&v2, "v2");
    env
}

/// The command failed with exit code 2 and exactly one line, `error: ...`, on
/// stderr, containing every one of `needles`. Returns that line.
fn assert_clean_failure(out: &Output, needles: &[&str]) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "exit status {}; stderr: {stderr}",
        out.status
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "want one error line, got: {stderr}");
    let line = lines[0];
    assert!(line.starts_with("error: "), "not an error line: {line}");
    for n in needles {
        assert!(line.contains(n), "{line:?} does not mention {n:?}");
    }
    line.to_string()
}

/// v1 is still the only release, current, clean, with nothing left behind.
fn assert_still_v1(root: &Path) {
    assert_eq!(current_name(root).as_deref(), Some("v1"));
    audit_clean(root, None);
    assert_eq!(leftovers(root), Vec::<String>::new(), "left behind");
    assert_eq!(installed(root), ["v1"]);
}

/// A root on a fresh 8 MiB tmpfs (with extra mount options) with v1 installed and current.
fn tmpfs_root(env: &Env, extra_opts: &str) -> Result<(Tmpfs, PathBuf), String> {
    let disk = Tmpfs::mount(&format!("size=8m{extra_opts}"))?;
    let root = disk.mnt.join("root");
    env.install_ok("v1", &root, &["--activate", "--reserve", "0"]);
    audit_clean(&root, None);
    Ok((disk, root))
}

#[test]
fn release_larger_than_the_disk_is_refused_up_front() {
    // 12 MiB of binary in v2 cannot fit in 8 MiB: the free-space check refuses it
    // before anything is written.
    let env = env_with(|d| {
        shoal_sample::generate(
            d,
            &shoal_sample::Spec {
                files: 50,
                mean_file: 2000,
                binaries: vec![12 << 20],
                seed: 3,
            },
        )
        .unwrap();
    });
    let (disk, root) = or_skip!(tmpfs_root(&env, ""));
    let before = disk.available();
    let out = env.install("v2", &root, &["--activate", "--reserve", "0"]);
    let line = assert_clean_failure(
        &out,
        &["not enough free space", &root.display().to_string()],
    );
    println!("disk, up-front refusal: {line}");
    assert_still_v1(&root);
    assert_eq!(disk.available(), before, "the refused install used space");
}

#[test]
fn disk_filled_during_assembly_fails_with_enospc() {
    // v2 (~5 MiB) fits in the free space when the install checks it; a filler then
    // takes all that is left as soon as the partial tree appears, so the install's
    // writes meet a genuinely full disk. The race is retried if the install wins.
    let env = env_with(|d| {
        shoal_sample::generate(
            d,
            &shoal_sample::Spec {
                files: 800,
                mean_file: 5000,
                binaries: vec![1 << 20],
                seed: 4,
            },
        )
        .unwrap();
    });
    let (disk, root) = or_skip!(tmpfs_root(&env, ""));
    let filler = disk.mnt.join("filler");
    let mut won = None;
    for attempt in 1..=8 {
        let stop = Arc::new(AtomicBool::new(false));
        let filled = Arc::new(AtomicBool::new(false));
        let th = {
            let (stop, filled) = (stop.clone(), filled.clone());
            let (releases, filler) = (root.join("releases"), filler.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let partial = fs::read_dir(&releases).is_ok_and(|rd| {
                        rd.flatten()
                            .any(|e| e.file_name().to_string_lossy().starts_with(".partial-"))
                    });
                    if partial {
                        let mut f = fs::File::create(&filler).unwrap();
                        let block = vec![0xa5u8; 256 << 10];
                        loop {
                            if let Err(e) = f.write_all(&block) {
                                assert_eq!(e.raw_os_error(), Some(28), "filler: {e}");
                                break;
                            }
                        }
                        filled.store(true, Ordering::Relaxed);
                        return;
                    }
                    std::thread::sleep(Duration::from_micros(200));
                }
            })
        };
        let out = env.install("v2", &root, &["--activate", "--reserve", "0"]);
        stop.store(true, Ordering::Relaxed);
        th.join().unwrap();
        if !out.status.success() {
            assert!(filled.load(Ordering::Relaxed), "failed without a full disk");
            won = Some((attempt, out));
            break;
        }
        // The install finished before the disk filled: undo and try again.
        println!("disk, attempt {attempt}: the install won the race");
        let _ = fs::remove_file(&filler);
        support::run_ok(&["activate", "v1", "--root", root.to_str().unwrap()]);
        remove_release(&root, "v2");
    }
    let Some((attempt, out)) = won else {
        panic!("could not fill the disk during assembly in 8 attempts");
    };
    let line = assert_clean_failure(&out, &["No space left on device", "installing v2"]);
    println!("disk, filled during assembly (attempt {attempt}): {line}");
    assert_still_v1(&root);
    // With the room back, the same command succeeds.
    fs::remove_file(&filler).unwrap();
    env.install_ok("v2", &root, &["--activate", "--reserve", "0"]);
    assert_eq!(current_name(&root).as_deref(), Some("v2"));
    audit_clean(&root, None);
}

#[test]
fn exact_fit_fails_on_the_manifest_and_leaves_nothing() {
    // v2 is one file; the disk is pre-filled so the free space equals exactly what
    // the free-space check counts for it. Its data then fits to the last block and
    // the first byte beyond (the manifest) meets a full disk.
    let size = (1 << 20) + 100;
    let env = env_with(|d| {
        let mut rng = shoal_sample::Rng::new(9);
        let body: Vec<u8> = (0..size).map(|_| rng.next_u64() as u8).collect();
        fs::write(d.join("big.bin"), body).unwrap();
    });
    let (disk, root) = or_skip!(tmpfs_root(&env, ""));
    let needed = (size as u64).div_ceil(4096) * 4096;
    let filler = disk.mnt.join("filler");
    let spare = disk.available() - needed;
    fs::write(&filler, vec![0u8; spare as usize]).unwrap();
    assert_eq!(
        disk.available(),
        needed,
        "could not pre-fill the disk exactly"
    );
    let out = env.install("v2", &root, &["--activate", "--reserve", "0"]);
    let line = assert_clean_failure(&out, &["No space left on device", "installing v2"]);
    println!("disk, exact fit: {line}");
    assert_still_v1(&root);
    assert_eq!(disk.available(), needed, "the failed install kept space");
    fs::remove_file(&filler).unwrap();
    env.install_ok("v2", &root, &["--activate", "--reserve", "0"]);
    audit_clean(&root, None);
}

#[test]
fn out_of_inodes_fails_with_enospc() {
    // Room for the bytes but not for the files: the free-space check counts bytes,
    // so the install starts and creating files meets ENOSPC.
    let env = env_with(|d| small_tree(d, 400, 500, b'2'));
    let (_fs, root) = or_skip!(tmpfs_root(&env, ",nr_inodes=128"));
    let out = env.install("v2", &root, &["--activate", "--reserve", "0"]);
    let line = assert_clean_failure(&out, &["No space left on device", "installing v2"]);
    println!("disk, out of inodes: {line}");
    assert_still_v1(&root);
}

/// Removes an installed, non-current release the way `gc` does.
fn remove_release(root: &Path, tag: &str) {
    let r = shoal_bundle::Root::new(root);
    let _lock = r.lock().unwrap();
    let doomed = r.releases_dir().join(format!(".gc-test-{tag}"));
    fs::rename(r.release_dir(tag), &doomed).unwrap();
    fs::remove_file(r.manifest_file(tag)).unwrap();
    fs::remove_dir_all(&doomed).unwrap();
}

/// Makes everything under `path` readable (and directories searchable) by all.
fn open_to_all(path: &Path) {
    let md = fs::symlink_metadata(path).unwrap();
    if md.is_dir() {
        chmod(path, 0o755);
        for e in fs::read_dir(path).unwrap() {
            open_to_all(&e.unwrap().path());
        }
    } else if md.is_file() {
        use std::os::unix::fs::PermissionsExt;
        chmod(path, md.permissions().mode() | 0o444);
    }
}

/// `shoal ARGS` run as user and group 65534 (nobody) with no supplementary groups.
fn run_as_nobody(args: &[String]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(support::bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv")
}

#[test]
fn unprivileged_user_cannot_install_and_changes_nothing() {
    if !is_root() {
        println!("SKIPPED: not running as root, cannot switch to user nobody");
        return;
    }
    let env = env_with(|d| small_tree(d, 30, 2000, b'2'));
    // Everything nobody must read is readable: the temp dir, the store, the public
    // key. The root belongs to root with mode 0755, so nobody cannot write in it.
    chmod(env.dir.path(), 0o755);
    open_to_all(&env.store);
    open_to_all(&env.trust);
    let root = env.path("root");
    env.install_ok("v1", &root, &["--activate"]);
    chmod(&root, 0o755);
    let probe = run_as_nobody(&["--version".to_string()]);
    if !probe.status.success() {
        println!(
            "SKIPPED: cannot run shoal as nobody: {}",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return;
    }
    let before = support::snapshot(&root);

    let out = run_as_nobody(&env.install_args("v2", &root, &["--activate"]));
    let line = assert_clean_failure(&out, &["Permission denied", &root.display().to_string()]);
    println!("permission, install: {line}");
    assert_eq!(
        support::snapshot(&root),
        before,
        "the refused install changed the root"
    );
    assert_still_v1(&root);

    // Switching is refused just as cleanly.
    let root_arg = root.display().to_string();
    for args in [
        vec!["rollback".to_string(), "--root".into(), root_arg.clone()],
        vec![
            "activate".to_string(),
            "v1".into(),
            "--root".into(),
            root_arg.clone(),
        ],
    ] {
        let out = run_as_nobody(&args);
        let line = assert_clean_failure(&out, &["Permission denied", &root_arg]);
        println!("permission, {}: {line}", args[0]);
    }
    assert_eq!(support::snapshot(&root), before);
    assert_still_v1(&root);
}

#[test]
fn io_error_states_its_cause_once() {
    // Needs no privilege: a root that is a regular file cannot hold `releases/`.
    let env = env_with(|d| small_tree(d, 3, 100, b'2'));
    let root = env.path("not-a-dir");
    fs::write(&root, b"").unwrap();
    let out = env.install("v2", &root, &[]);
    let line = assert_clean_failure(&out, &["Not a directory"]);
    assert_eq!(
        line.matches("Not a directory").count(),
        1,
        "the cause is repeated: {line}"
    );
}

/// Fills the filesystem holding `path` with the file `path` until ENOSPC.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let block = vec![0x5au8; 64 << 10];
    loop {
        if let Err(e) = f.write_all(&block) {
            assert_eq!(e.raw_os_error(), Some(28), "filler: {e}");
            return;
        }
    }
}

#[test]
fn full_disk_during_activation_reports_what_happened() {
    let env = env_with(|d| small_tree(d, 20, 3000, b'2'));
    let (disk, root) = or_skip!(tmpfs_root(&env, ""));
    env.install_ok("v2", &root, &["--reserve", "0"]);
    // A history of exactly one page (41 valid lines, v1 last): the next line needs
    // a new block. Then nothing is left free.
    let mut history = "x".repeat(100) + "\n";
    history = history.repeat(39);
    history.push_str(&"y".repeat(4096 - history.len() - 4));
    history.push_str("\nv1\n");
    assert_eq!(history.len(), 4096);
    fs::write(root.join("history"), &history).unwrap();
    fill(&disk.mnt.join("filler"));

    let root_arg = root.display().to_string();
    let out = support::run(&["activate", "v2", "--root", &root_arg]);
    let cur = current_name(&root);
    println!(
        "disk, activation on a full disk: exit {:?}, current -> {cur:?}, stderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert_eq!(leftovers(&root), Vec::<String>::new(), "left behind");
    audit_clean(&root, None);
    // Either the switch is reported as done, or it did not happen.
    assert_eq!(
        out.status.success(),
        cur.as_deref() == Some("v2"),
        "the exit status says one thing, `current` another"
    );
}
