//! The seed's fleet page in headless Chromium (Debian's chromium, driven by
//! playwright-core from `tests/web/page.mjs`) during a real distribution over
//! loopback: one page load, updated by its event stream, shows per-datacenter
//! progress moving and ending complete; a screenshot is left in
//! `target/tmp/fleet-page.png`.
//!
//! Needs node, `npm ci --prefix crates/cli/tests/web` and /usr/bin/chromium
//! (`.ci/run` installs them); without them the test fails and says so.

mod swarm_support;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use swarm_support::*;

fn free_tcp_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a TCP socket");
    l.local_addr().expect("local address").port()
}

#[test]
fn the_page_shows_progress_moving_and_ending_complete() {
    let web_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/web");
    assert!(
        web_dir.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix {}` first (and install Debian's chromium)",
        web_dir.display()
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: apt-get install chromium (or set CHROMIUM)"
    );

    let _serial = serial();
    let lab = Lab::new();
    let web_port = free_tcp_port();
    lab.write_seed_config(
        "seed.toml",
        &lab.cluster.join("deploy.key"),
        lab.port,
        &format!("web = \"127.0.0.1:{web_port}\""),
    );
    let (_seed, _) = lab.start_seed("seed.toml", Some("v1"));
    // Each agent takes its copy at 2 MB/s: the page has seconds to watch.
    let specs: Vec<AgentSpec> = [("a1", "dc1"), ("a2", "dc1"), ("b1", "dc2"), ("b2", "dc2")]
        .iter()
        .map(|(h, dc)| lab.agent(h, dc, "download_limit = 2000000"))
        .collect();
    wait_for("the fleet page", std::time::Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", web_port))
            .map(|_| ())
            .map_err(|e| e.to_string())
    });
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fleet-page.png");
    let _ = std::fs::remove_file(&shot);
    let browser = std::process::Command::new("node")
        .arg(web_dir.join("page.mjs"))
        .arg(format!("http://127.0.0.1:{web_port}/"))
        .arg(&shot)
        .arg("90000")
        .env("CHROMIUM", &chromium)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running node (install Node.js)");
    // The page is open (and stays open) before the agents start.
    std::thread::sleep(std::time::Duration::from_secs(2));
    let agents: Vec<Proc> = specs.iter().map(|a| lab.start_agent(a)).collect();
    let out = browser.wait_with_output().expect("waiting for node");
    assert!(
        out.status.success(),
        "page.mjs failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        agents
            .iter()
            .map(|a| a.log_tail(10))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let seen: Value = serde_json::from_slice(&out.stdout).expect("page.mjs prints JSON");
    let fin = &seen["final"];
    assert_eq!(
        fin["allLive"], true,
        "the page never showed all live: {fin:#}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "script errors");
    assert_eq!(fin["connection"], "open");
    assert_eq!(fin["release"], "v1");

    // Progress moved: some datacenter was seen part-way, and each one's bar
    // only went up, from below 1 to 1, within the one page load.
    let samples = seen["samples"].as_array().unwrap();
    let fractions = |dc: &str| -> Vec<f64> {
        samples
            .iter()
            .filter_map(|s| {
                s["dcs"]
                    .as_array()?
                    .iter()
                    .find(|d| d["dc"] == dc)
                    .and_then(|d| d["fraction"].as_f64())
            })
            .collect()
    };
    let mut part_way = false;
    for dc in ["dc1", "dc2"] {
        let f = fractions(dc);
        assert!(!f.is_empty(), "{dc} never appeared: {samples:?}");
        assert!(f[0] < 1.0, "{dc} was complete at the first look: {f:?}");
        assert_eq!(*f.last().unwrap(), 1.0, "{dc}: {f:?}");
        assert!(f.windows(2).all(|w| w[1] >= w[0]), "{dc} went back: {f:?}");
        part_way |= f.iter().any(|&x| x > 0.0 && x < 1.0);
    }
    assert!(part_way, "no datacenter was seen part-way");
    let first_updates = samples[0]["updates"].as_u64().unwrap_or(0);
    let last_updates = fin["updates"].as_u64().unwrap();
    assert!(
        last_updates >= first_updates + 3,
        "the page was not updated live ({first_updates} -> {last_updates} events)"
    );
    for d in fin["dcs"].as_array().unwrap() {
        assert_eq!(d["verified"], 2, "{d}");
        assert_eq!(d["live"], 2, "{d}");
        assert_eq!(d["bar"], 1.0, "{d}");
    }
    let states: Vec<&str> = fin["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["live"; 4]);
    assert!(
        fin["chart"]["width"].as_u64().unwrap_or(0) > 0,
        "{}",
        fin["chart"]
    );

    let png = std::fs::read(&shot).expect("the screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    eprintln!("screenshot: {}", shot.display());

    // The page refuses a change even from a browser-like client.
    let post = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
        .arg(format!("http://127.0.0.1:{web_port}/api/fleet"))
        .output();
    if let Ok(p) = post {
        assert_eq!(String::from_utf8_lossy(&p.stdout), "405");
    }
    drop(agents);
}
