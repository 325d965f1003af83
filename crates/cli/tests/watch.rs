//! `shoal status --watch` over a real loopback distribution: the full-screen
//! view under a real terminal (a tmux pane) shows every host and follows them
//! to all-live; piped, it prints plain lines ending in the all-live state.

mod swarm_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use swarm_support::*;

/// A tmux server of this test's own (its socket in the lab), killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn new(dir: &Path) -> Tmux {
        let ok = Command::new("tmux").arg("-V").output();
        assert!(
            ok.is_ok_and(|o| o.status.success()),
            "this test drives the terminal view in tmux: install tmux (apt-get install tmux)"
        );
        Tmux {
            socket: dir.join("tmux.sock"),
        }
    }

    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running tmux");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "watch"])
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .output();
    }
}

#[test]
fn the_terminal_view_shows_every_host_until_all_are_live() {
    let _serial = serial();
    let lab = Lab::new();
    let (_seed, _) = lab.start_seed("seed.toml", Some("v1"));
    let hosts = [
        ("web-a1", "dc1"),
        ("web-a2", "dc1"),
        ("web-b1", "dc2"),
        ("web-b2", "dc2"),
    ];
    let tmux = Tmux::new(lab.dir.path());
    let cmd = format!(
        "{} status --watch --every 300ms --until-live --tracker 127.0.0.1:{} --tracker-host seed --identity {}; echo WATCH-EXIT=$?; sleep 120",
        bin(),
        lab.port,
        lab.observer.display()
    );
    tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "watch",
        "-x",
        "150",
        "-y",
        "40",
        "-e",
        "RUST_LOG=warn",
        &cmd,
    ]);
    // Slow enough (3 MB/s down per agent) that the view sees the transfer.
    let specs: Vec<AgentSpec> = hosts
        .iter()
        .map(|(h, dc)| lab.agent(h, dc, "download_limit = 3000000"))
        .collect();
    let agents: Vec<Proc> = specs.iter().map(|a| lab.start_agent(a)).collect();

    let start = Instant::now();
    let mut partial = None;
    // Whether some screen caught a host fetching, and a datacenter part-way.
    let mut saw_fetching = false;
    let mut saw_part_way = false;
    let last = loop {
        let screen = tmux.screen();
        saw_fetching |= (1..=4).any(|n| screen.contains(&format!("fetching {n} ")));
        saw_part_way |= screen
            .lines()
            .filter(|l| l.starts_with("│dc"))
            .any(|l| (1..100).any(|p| l.contains(&format!(" {p}% "))));
        let shows_all = hosts.iter().all(|(h, _)| screen.contains(h));
        if shows_all && screen.contains("every host live") {
            break screen;
        }
        if shows_all && partial.is_none() && screen.contains("release v1") {
            partial = Some(screen.clone());
        }
        if screen.contains("WATCH-EXIT=") {
            panic!("the view exited before every host was live:\n{screen}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "no all-live screen in 90 s; last screen:\n{screen}\n{}",
            agents
                .iter()
                .map(|a| a.log_tail(10))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "the first full screen:\n{}\nthe all-live screen:\n{last}",
        partial.as_deref().unwrap_or("-")
    );
    let partial = partial.expect("a screen with every host before all were live");
    assert!(saw_fetching, "no screen showed a host fetching");
    assert!(saw_part_way, "no screen showed a datacenter part-way");
    assert!(
        !partial.contains("every host live") && !partial.contains("4/4 live"),
        "the first full screen was already done:\n{partial}"
    );
    for want in [
        "release v1",
        "4/4 live",
        "datacenters",
        "dc1",
        "dc2",
        "2/2 verified 2 live",
        "100%",
        "live 4",
        "last errors",
    ] {
        assert!(last.contains(want), "missing {want:?} in:\n{last}");
    }
    // --until-live ends it with status 0, and the terminal is given back.
    let done = Instant::now();
    let after = loop {
        let s = tmux.screen();
        if s.contains("WATCH-EXIT=") || done.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(after.contains("WATCH-EXIT=0"), "{after}");
    assert!(
        !after.contains("datacenters"),
        "the alternate screen was left:\n{after}"
    );

    // Piped, the same command prints plain lines and stops at all-live.
    let piped = |extra: &[&str]| {
        let port = format!("127.0.0.1:{}", lab.port);
        let mut args = vec!["status", "--watch", "--every", "200ms", "--until-live"];
        args.extend(extra);
        args.extend(["--tracker", &port, "--tracker-host", "seed", "--identity"]);
        args.push(lab.observer.to_str().unwrap());
        let out = run(&args);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = piped(&[]);
    let line = text.lines().last().unwrap_or_default();
    assert!(
        line.contains("v1: dc1 2/2 verified 2 live 100%")
            && line.contains("dc2 2/2 verified 2 live 100%")
            && line.ends_with("4/4 live | every host live"),
        "{text}"
    );
    // With --json: one FleetView per line, the last one all live.
    let text = piped(&["--json"]);
    let v: serde_json::Value =
        serde_json::from_str(text.lines().last().unwrap_or_default()).expect("a JSON view");
    assert_eq!(v["all_live"], true);
    assert_eq!(v["counts"]["live"], 4);
    assert_eq!(v["dcs"].as_array().map(Vec::len), Some(2));
    drop(agents);
}
