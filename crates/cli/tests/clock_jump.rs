//! Fault injection: an agent daemon's wall clock jumps (libfaketime, the
//! `faketime` package, moves CLOCK_REALTIME of that one process and leaves the
//! monotonic clock alone, as an NTP step or a wrong RTC does). shoal's timers
//! run on the monotonic clock, so a jump of hours in either direction during a
//! fetch changes nothing; a jump past a release's expiry makes the host refuse
//! it as frozen (and keep its good release live), and once the clock is right
//! again the host takes the release without a restart. (The first run of this
//! test found the refusal permanent for the life of the process.)

mod swarm_support;

use shoal_sample::Rng;
use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use std::time::Duration;
use swarm_support::*;

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Sets the jumping agent's clock offset (a libfaketime spec, e.g. "+6h").
fn set_clock(file: &Path, offset: &str) {
    let tmp = file.with_extension("tmp");
    fs::write(&tmp, format!("{offset}\n")).unwrap();
    fs::rename(&tmp, file).unwrap();
    // libfaketime reads the file again at most once a second.
    std::thread::sleep(Duration::from_millis(1200));
}

#[test]
fn an_agents_clock_jumping_neither_breaks_a_fetch_nor_freezes_it_for_good() {
    assert!(
        Path::new(FAKETIME).exists(),
        "{FAKETIME} is missing: `apt-get install faketime` (.ci/run does)"
    );
    let _serial = serial();
    let lab = Lab::new();
    let (seed, _) = lab.start_seed("seed.toml", Some("v1"));
    let steady = lab.agent("steady", "dc1", "");
    let _steady = lab.start_agent(&steady);
    // The jumping host fetches at 500 kB/s, so a delta takes seconds.
    let jumpy = lab.agent("jumpy", "dc2", "download_limit = 500000");
    let clock = lab.path("jumpy.clock");
    fs::write(&clock, "+0\n").unwrap();
    let env: [(&str, &OsStr); 4] = [
        ("LD_PRELOAD", OsStr::new(FAKETIME)),
        ("FAKETIME_TIMESTAMP_FILE", clock.as_os_str()),
        ("FAKETIME_CACHE_DURATION", OsStr::new("1")),
        ("FAKETIME_DONT_FAKE_MONOTONIC", OsStr::new("1")),
    ];
    let proc = lab.start_agent_env(&jumpy, &env);
    let procs = [&seed, &proc];
    let both = [&steady, &jumpy];
    lab.wait_current(&both, "v1", Duration::from_secs(60), &procs);

    // Jumps of six hours forward, then twelve back, then home, during a fetch.
    // Edited files travel as small patches, so v2 also brings 3 MB of fresh
    // random bytes: about six seconds at jumpy's rate, time for three jumps.
    lab.edit(20, 1);
    let mut rng = Rng::new(7);
    let noise: Vec<u8> = (0..3_000_000 / 8)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    fs::write(lab.tree.join("noise.bin"), noise).unwrap();
    lab.publish("v2");
    wait_for(
        "jumpy to start fetching v2",
        Duration::from_secs(30),
        || {
            let st = lab.status().ok_or("no status")?;
            match st.get("jumpy").map(|h| &h["transfer"]) {
                Some(t) if !t.is_null() => Ok(()),
                other => Err(format!("transfer: {other:?}")),
            }
        },
    );
    for offset in ["+6h", "-6h", "+0"] {
        assert_ne!(
            current(&jumpy.root).as_deref(),
            Some("v2"),
            "jumpy finished v2 before the clock jumped to {offset}; the test proves nothing"
        );
        set_clock(&clock, offset);
    }
    lab.wait_current(&both, "v2", Duration::from_secs(60), &procs);
    assert_intact(&jumpy.root, "v1", "after jumps during a fetch");
    println!("clock-jump: v2 fetched and live through jumps of +6 h, -12 h, +6 h");

    // Forty days forward: v3 (valid for 30) looks expired to this host alone.
    set_clock(&clock, "+40d");
    lab.edit(20, 2);
    lab.publish("v3");
    lab.wait_current(&[&steady], "v3", Duration::from_secs(60), &procs);
    let why = wait_for("jumpy to refuse v3", Duration::from_secs(30), || {
        let st = lab.status().ok_or("no status")?;
        let refused = st
            .get("jumpy")
            .and_then(|h| h["refused"].as_array().cloned())
            .unwrap_or_default();
        match refused
            .iter()
            .filter_map(|r| r.as_str())
            .find(|r| r.contains("v3"))
        {
            Some(r) => Ok(r.to_string()),
            None => Err(format!("refused: {refused:?}")),
        }
    });
    assert!(
        why.contains("expired"),
        "refused v3 for another reason: {why}"
    );
    assert_eq!(current(&jumpy.root).as_deref(), Some("v2"));
    assert_intact(&jumpy.root, "v2", "while v3 looked expired");
    println!("clock-jump: +40 d: jumpy refused v3 ({why}) and kept v2 live");

    // The clock is put right: the host takes v3 without a restart.
    set_clock(&clock, "+0");
    lab.wait_current(&both, "v3", Duration::from_secs(60), &procs);
    assert_intact(&jumpy.root, "v2", "after the clock was put right");
    assert!(
        proc.exited().is_none(),
        "jumpy exited:\n{}",
        proc.log_tail(20)
    );
    println!("clock-jump: clock put right: jumpy took v3 without a restart");
}
