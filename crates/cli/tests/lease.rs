//! `shoal exec`: a job keeps the tree it started on across activations and
//! garbage collection; the tree goes once the job is gone, and a killed
//! holder's lease is recognised as dead.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};
use support::{Env, cmd, current_name, run_ok};

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A release whose `version` file says `tag`.
fn release(env: &Env, root: &Path, tag: &str) {
    let src = env.path(&format!("src-{tag}"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("version"), tag).unwrap();
    fs::write(src.join("common"), "the same in every release").unwrap();
    env.pack(&src, tag);
    env.install_ok(tag, root, &["--activate"]);
}

fn releases(root: &Path) -> serde_json::Value {
    let out = run_ok(&[
        OsStr::new("releases"),
        "--root".as_ref(),
        root.as_os_str(),
        "--json".as_ref(),
    ]);
    serde_json::from_str(&out).unwrap()
}

fn gc_keep_1(root: &Path) -> serde_json::Value {
    let out = run_ok(&[
        OsStr::new("gc"),
        "--root".as_ref(),
        root.as_os_str(),
        "--keep".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
    ]);
    serde_json::from_str(&out).unwrap()
}

/// Starts `shoal exec` with a job that reads `version` when it starts and
/// again once `go` appears, into `out`.
fn job(env: &Env, root: &Path, name: &str) -> Child {
    let go = env.path(&format!("{name}.go"));
    let out = env.path(&format!("{name}.out"));
    let script = format!(
        "cat version > {out}; echo >> {out}; while [ ! -e {go} ]; do sleep 0.02; done; cat version >> {out}; echo >> {out}; pwd >> {out}",
        out = out.display(),
        go = go.display()
    );
    cmd(&[
        OsStr::new("exec"),
        "--root".as_ref(),
        root.as_os_str(),
        "--".as_ref(),
        "sh".as_ref(),
        "-c".as_ref(),
        script.as_ref(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .expect("starting shoal exec")
}

#[test]
fn a_job_keeps_its_tree_across_activations_and_gc_until_it_exits() {
    let env = Env::new();
    let root = env.path("root");
    release(&env, &root, "v1");
    let mut child = job(&env, &root, "job");
    let out = env.path("job.out");
    wait_until("the job to start", || {
        fs::read_to_string(&out).is_ok_and(|s| s.starts_with("v1\n"))
    });
    let r = releases(&root);
    let leases = r["leases"].as_array().unwrap();
    assert_eq!(leases.len(), 1, "{r}");
    assert_eq!(leases[0]["tag"], "v1");
    assert_eq!(leases[0]["live"], true);

    // Two activations and a collection that would otherwise remove v1.
    release(&env, &root, "v2");
    release(&env, &root, "v3");
    assert_eq!(current_name(&root).as_deref(), Some("v3"));
    let g = gc_keep_1(&root);
    assert!(g["removed"].as_array().unwrap().is_empty(), "{g}");
    assert!(root.join("releases/v1").is_dir());

    fs::write(env.path("job.go"), "").unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    let text = fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "v1");
    assert_eq!(lines[1], "v1", "the job read another release: {text}");
    assert!(
        lines[2].ends_with("releases/v1"),
        "ran outside its release: {text}"
    );

    // Gone with the job: no lease left, and v1 is collected.
    assert!(releases(&root)["leases"].as_array().unwrap().is_empty());
    let g = gc_keep_1(&root);
    assert_eq!(g["removed"], serde_json::json!(["v1"]), "{g}");
}

#[test]
fn the_lease_lives_as_long_as_the_job_even_when_shoal_exec_is_killed() {
    let env = Env::new();
    let root = env.path("root");
    release(&env, &root, "v1");
    let mut child = job(&env, &root, "job");
    wait_until("the job to start", || {
        fs::read_to_string(env.path("job.out")).is_ok_and(|s| s.starts_with("v1"))
    });
    child.kill().unwrap(); // SIGKILL: shoal exec cannot remove the lease file
    child.wait().unwrap();
    // The job runs on and holds the lease: its tree must stay.
    let leases = releases(&root)["leases"].clone();
    assert_eq!(leases.as_array().unwrap().len(), 1, "{leases}");
    assert_eq!(leases[0]["live"], true, "the job still runs: {leases}");
    release(&env, &root, "v2");
    release(&env, &root, "v3");
    let g = gc_keep_1(&root);
    assert!(g["removed"].as_array().unwrap().is_empty(), "{g}");
    // The job ends: the lease is dead, its file is cleared and v1 collected.
    fs::write(env.path("job.go"), "").unwrap();
    wait_until("the job to end", || {
        fs::read_to_string(env.path("job.out")).is_ok_and(|s| s.contains("releases/v1"))
    });
    wait_until("the lease to read dead", || {
        releases(&root)["leases"][0]["live"] == false
    });
    let g = gc_keep_1(&root);
    assert_eq!(g["removed"], serde_json::json!(["v1"]), "{g}");
    assert!(
        releases(&root)["leases"].as_array().unwrap().is_empty(),
        "the dead lease is cleared"
    );
}

#[test]
fn exec_without_a_current_release_is_a_clear_error() {
    let env = Env::new();
    let root = env.path("root");
    let src = env.path("src");
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join("f"), "x").unwrap();
    env.pack(&src, "v1");
    env.install_ok("v1", &root, &[]);
    let out = cmd(&[
        OsStr::new("exec"),
        "--root".as_ref(),
        root.as_os_str(),
        "--".as_ref(),
        "true".as_ref(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no current release"), "{err}");
}
