//! The rollout commands as separate processes: `shoal deploy` over agent
//! daemons with hooks, `shoal status --check` until a stale host catches up,
//! `shoal log`, and `shoal audit --tracker` finding a tampered tree.

mod swarm_support;

use serde_json::Value;
use std::ffi::OsString;
use std::fs;
use std::time::Duration;
use swarm_support::*;

const WAIT: Duration = Duration::from_secs(60);

fn remote(lab: &Lab) -> Vec<OsString> {
    vec![
        "--tracker".into(),
        format!("127.0.0.1:{}", lab.port).into(),
        "--tracker-host".into(),
        "seed".into(),
        "--identity".into(),
        lab.observer.clone().into(),
    ]
}

fn shoal(lab: &Lab, args: &[&str]) -> std::process::Output {
    let mut v: Vec<OsString> = args.iter().map(OsString::from).collect();
    v.extend(remote(lab));
    run(&v)
}

fn deploy(lab: &Lab, tag: &str, extra: &[&str]) -> (bool, Value) {
    let key = lab.cluster.join("deploy.key");
    let mut args = vec![
        "deploy",
        tag,
        "--key",
        key.to_str().unwrap(),
        "--batch",
        "1",
        "--interval",
        "100ms",
        "--drain",
        "50ms",
        "--json",
    ];
    args.extend(extra);
    let out = shoal(lab, &args);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "deploy printed no JSON: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), v)
}

fn check(lab: &Lab) -> bool {
    shoal(lab, &["status", "--check", "--json"])
        .status
        .success()
}

#[test]
fn deploy_status_check_log_and_fleet_audit() {
    let _serial = serial();
    let lab = Lab::new();
    let (seed, _) = lab.start_seed("seed.toml", Some("v1"));
    let hooks = lab.path("hooks.log");
    let hook = |phase: &str| {
        format!(
            "[hooks.{phase}]\ncommand = \"echo $SHOAL_HOST {phase} $SHOAL_TAG $SHOAL_PREVIOUS_TAG >> {}\"\n",
            hooks.display()
        )
    };
    let extra = format!(
        "{}{}{}{}",
        hook("depool"),
        hook("restart"),
        hook("health"),
        hook("repool")
    );
    let agents: Vec<AgentSpec> = ["a1", "a2", "a3"]
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let a = lab.agent(h, &format!("dc{}", i % 2 + 1), &extra);
            // Staged only: deploys switch them.
            let text = fs::read_to_string(&a.config).unwrap();
            fs::write(
                &a.config,
                text.replace("auto_activate = true", "auto_activate = false"),
            )
            .unwrap();
            a
        })
        .collect();
    let mut procs: Vec<Proc> = agents[..2].iter().map(|a| lab.start_agent(a)).collect();
    wait_for("a1 and a2 to stage v1", WAIT, || {
        let st = lab.status().ok_or("no status")?;
        let staged = ["a1", "a2"].iter().all(|h| {
            st.get(*h)
                .is_some_and(|s| s["staged"].to_string().contains("v1"))
        });
        if staged {
            Ok(())
        } else {
            Err(format!("{st:?}"))
        }
    });
    assert!(!check(&lab), "nothing is active yet");
    let (ok, report) = deploy(&lab, "v1", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["batches_run"], 2, "{report}");
    assert_eq!(current(&agents[0].root).as_deref(), Some("v1"));
    let log = fs::read_to_string(&hooks).unwrap();
    assert!(
        log.contains("a1 depool v1") && log.contains("a2 repool v1"),
        "{log}"
    );
    wait_for("status --check to pass", WAIT, || {
        if check(&lab) {
            Ok(())
        } else {
            Err("not converged".to_string())
        }
    });

    // A third host joins late: it stages v1 but runs nothing, so it is stale
    // until a deploy switches it.
    procs.push(lab.start_agent(&agents[2]));
    wait_for("a3 to stage v1", WAIT, || {
        let st = lab.status().ok_or("no status")?;
        match st.get("a3") {
            Some(s) if s["staged"].to_string().contains("v1") => Ok(()),
            s => Err(format!("{s:?}")),
        }
    });
    assert!(!check(&lab), "a3 runs nothing: --check must fail");
    let st = shoal(&lab, &["status", "--json"]);
    let v: Value = serde_json::from_slice(&st.stdout).unwrap();
    let a3 = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "a3")
        .unwrap();
    assert_eq!(a3["stale"], true, "{a3}");
    let (ok, report) = deploy(&lab, "v1", &[]);
    assert!(ok, "{report}");
    assert_eq!(report["skipped"]["a1"], "already on v1", "{report}");
    assert_eq!(report["batches_run"], 1, "only a3 switches: {report}");
    wait_for("status --check to pass again", WAIT, || {
        if check(&lab) {
            Ok(())
        } else {
            Err("not converged".to_string())
        }
    });

    // The deploy log names both rollouts and every switched host.
    let out = shoal(&lab, &["log", "--json"]);
    assert!(out.status.success());
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entries = log["entries"].as_array().unwrap();
    let completed = entries
        .iter()
        .filter(|e| e["result"] == "completed")
        .count();
    assert_eq!(completed, 2, "{log}");
    for h in ["a1", "a2", "a3"] {
        assert!(
            entries.iter().any(|e| e["host"] == h),
            "{h} not in the log: {log}"
        );
    }

    // Fleet audit: clean, then one tampered file on a2 is found.
    let out = shoal(&lab, &["audit", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let victim = fs::read_dir(agents[1].root.join("current"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.is_file())
        .expect("a file in a2's release");
    let mut perm = fs::metadata(&victim).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    fs::set_permissions(&victim, perm).unwrap();
    fs::write(&victim, "tampered").unwrap();
    let out = shoal(&lab, &["audit", "--json"]);
    assert!(
        !out.status.success(),
        "a tampered tree must fail the fleet audit"
    );
    let a: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = a["hosts"].as_array().unwrap();
    let bad: Vec<&Value> = hosts.iter().filter(|h| h["clean"] != true).collect();
    assert_eq!(bad.len(), 1, "{a}");
    assert_eq!(bad[0]["host"], "a2");
    // ... and status marks it until it is fixed.
    wait_for("status to mark a2's failed audit", WAIT, || {
        let st = lab.status().ok_or("no status")?;
        match st.get("a2") {
            Some(h) if h["marks"].to_string().contains("audit") => Ok(()),
            h => Err(format!("{h:?}")),
        }
    });
    drop(procs);
    drop(seed);
}
