//! `shoal bench --model flow` through the real binary: the run restarts
//! itself once with malloc's huge pages asked for (`src/huge_pages.rs`),
//! prints one report, and leaves a tunable the user set alone; a reader
//! that stops early ends it quietly (`src/out.rs`).

mod support;

use serde_json::Value;
use std::process::Output;

const HUGE: &str = "GLIBC_TUNABLES";

/// A flow run of a 4 MiB release over the demo topology, shoal and central.
fn flow_bench() -> std::process::Command {
    support::cmd(&[
        "bench",
        "--model",
        "flow",
        "--topology",
        "demo",
        "--size",
        "4MiB",
        "--strategy",
        "shoal,central",
        "--json",
    ])
}

fn bench(tunables: Option<&str>) -> Output {
    let mut c = flow_bench();
    c.env("RUST_LOG", "shoal::huge_pages=debug");
    match tunables {
        Some(t) => c.env(HUGE, t),
        None => c.env_remove(HUGE),
    };
    let out = c.output().expect("running shoal");
    support::assert_ok(&out, &["bench"]);
    out
}

/// The one JSON report on stdout: every host of every strategy verified.
fn report(out: &Output) -> Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: Value = serde_json::from_str(stdout.trim()).expect("stdout is one JSON object");
    let strategies = v["strategies"].as_array().expect("strategies");
    assert_eq!(strategies.len(), 2, "{stdout}");
    for s in strategies {
        assert_eq!(s["hosts_verified"], s["hosts_total"], "{s}");
    }
    v
}

#[test]
fn a_flow_run_restarts_once_with_huge_pages_and_reports_once() {
    let out = bench(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if cfg!(all(target_os = "linux", target_env = "gnu")) {
        assert_eq!(
            stderr
                .matches("restarting with malloc's huge pages")
                .count(),
            1,
            "{stderr}"
        );
        // The restarted run saw the tunable and went on.
        assert!(
            stderr.contains("malloc's huge pages as set")
                && stderr.contains("glibc.malloc.hugetlb=1"),
            "{stderr}"
        );
    }
    let v = report(&out);
    assert_eq!(v["model"], "flow");
}

#[test]
fn a_tunable_the_user_set_is_kept_and_the_run_does_not_restart() {
    let out = bench(Some("glibc.malloc.hugetlb=0"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("restarting"), "{stderr}");
    assert!(
        stderr.contains("malloc's huge pages as set") && stderr.contains("glibc.malloc.hugetlb=0"),
        "{stderr}"
    );
    report(&out);
}

#[test]
fn a_reader_that_stops_early_ends_the_run_quietly() {
    // As `shoal bench ... --json | head -c 0` would: the pipe's reader is
    // gone before the report is written.
    let mut c = flow_bench();
    c.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().expect("running shoal");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("waiting for shoal");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}
