//! `shoal config check` on the shipped examples (every key they use is known
//! and valid) and on broken configs of every kind; the agent and the seed
//! refuse a broken config with the same messages.

mod support;

use std::ffi::OsStr;
use std::fs;
use std::path::Path;
use support::{cmd, run};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// The shipped example with its absolute paths moved into `dir` (and the
/// files it names created there).
fn example(name: &str, dir: &Path) -> String {
    let text = fs::read_to_string(repo().join("dist").join(name)).unwrap();
    for sub in ["etc/shoal", "var/lib"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    for f in ["agent.id", "seed.id", "deploy.key", "deploy.key.pub"] {
        fs::write(dir.join("etc/shoal").join(f), "x").unwrap();
    }
    let d = dir.display().to_string();
    text.replace("\"/etc/shoal/", &format!("\"{d}/etc/shoal/"))
        .replace("\"/var/lib/", &format!("\"{d}/var/lib/"))
        // Optional keys shown commented out are checked too.
        .replace("# advertise = ", "advertise = ")
}

fn check(path: &Path) -> (bool, serde_json::Value, String) {
    let out = run(&[
        OsStr::new("config"),
        "check".as_ref(),
        path.as_os_str(),
        "--json".as_ref(),
    ]);
    let text = run(&[OsStr::new("config"), "check".as_ref(), path.as_os_str()]);
    (
        out.status.success(),
        serde_json::from_slice(&out.stdout).unwrap_or_default(),
        String::from_utf8_lossy(&text.stdout).into_owned(),
    )
}

#[test]
fn the_shipped_examples_are_valid_and_use_only_known_keys() {
    let dir = tempfile::tempdir().unwrap();
    for (name, kind) in [("agent.toml", "agent"), ("seed.toml", "seed")] {
        let path = dir.path().join(name);
        fs::write(&path, example(name, dir.path())).unwrap();
        let (ok, v, text) = check(&path);
        assert!(ok, "{name}: {v}\n{text}");
        assert_eq!(v["kind"], kind);
    }
}

#[test]
fn broken_configs_of_every_kind_are_reported_with_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let good = example("agent.toml", dir.path());
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "invalid TOML",
            good.replace("host = \"web-17\"", "host = web-17"),
            "",
        ),
        (
            "unknown key",
            format!("colour = \"blue\"\n{good}"),
            "colour",
        ),
        (
            "missing key",
            good.replace("tracker_host = \"seed\"", ""),
            "tracker_host",
        ),
        (
            "wrong type",
            good.replace("upload_slots = 32", "upload_slots = \"many\""),
            "upload_slots",
        ),
        (
            "below minimum",
            good.replace("poll_ms = 1000", "poll_ms = 1"),
            "poll_ms",
        ),
        (
            "bad address",
            good.replace("\"10.0.0.1:7400\"", "\"10.0.0.1\""),
            "tracker",
        ),
        (
            "missing file",
            good.replace("agent.id", "nowhere.id"),
            "identity",
        ),
        (
            "missing trusted key",
            good.replace("deploy.key.pub", "gone.pub"),
            "trust[0]",
        ),
        (
            "unknown hook",
            good.replace("[hooks.repool]", "[hooks.reboot]"),
            "hooks.reboot",
        ),
        (
            "hook without a command",
            good.replace("command = \"systemctl restart app.service\"", ""),
            "hooks.restart.command",
        ),
        (
            "bad hook timeout",
            good.replace("timeout_s = 5", "timeout_s = 0"),
            "hooks.health.timeout_s",
        ),
        (
            "empty host",
            good.replace("host = \"web-17\"", "host = \"\""),
            "host",
        ),
        (
            "hooks with auto_activate",
            good.replace("auto_activate = false", "auto_activate = true"),
            "auto_activate",
        ),
    ];
    for (what, text, key) in &cases {
        let path = dir.path().join("broken.toml");
        fs::write(&path, text).unwrap();
        let (ok, v, human) = check(&path);
        assert!(!ok, "{what}: accepted\n{text}");
        let keys: Vec<&str> = v["problems"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["key"].as_str().unwrap())
            .collect();
        assert!(keys.contains(key), "{what}: no problem at {key:?}: {v}");
        if !key.is_empty() {
            assert!(human.contains(&format!("  {key}: ")), "{what}: {human}");
        }
    }
    // Several problems at once are all listed.
    let path = dir.path().join("many.toml");
    fs::write(
        &path,
        "colour = 1\n".to_string()
            + &good
                .replace("poll_ms = 1000", "poll_ms = 1")
                .replace("upload_slots = 32", "upload_slots = 0"),
    )
    .unwrap();
    let (_, v, _) = check(&path);
    assert_eq!(v["problems"].as_array().unwrap().len(), 3, "{v}");
    // The agent refuses it with the same messages.
    let out = cmd(&[OsStr::new("agent"), "--config".as_ref(), path.as_os_str()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in ["poll_ms", "upload_slots", "colour"] {
        assert!(err.contains(&format!("  {key}: ")), "{err}");
    }
    // And the seed too.
    let seed = dir.path().join("seed.toml");
    fs::write(
        &seed,
        example("seed.toml", dir.path())
            .replace("listen = \"0.0.0.0:7400\"", "listen = \"nowhere\""),
    )
    .unwrap();
    let (ok, v, _) = check(&seed);
    assert!(!ok && v["problems"][0]["key"] == "listen", "{v}");
    let out = cmd(&[
        OsStr::new("seed"),
        "--serve".as_ref(),
        "--config".as_ref(),
        seed.as_os_str(),
    ])
    .output()
    .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("  listen: "),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn completions_and_man_pages_come_from_the_command_line_definition() {
    let out = run(&[OsStr::new("completions"), "bash".as_ref()]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("deploy") && text.contains("--max-failures"),
        "incomplete bash completion"
    );
    let dir = tempfile::tempdir().unwrap();
    let out = run(&[OsStr::new("man"), "--out".as_ref(), dir.path().as_os_str()]);
    assert!(out.status.success());
    let page = fs::read_to_string(dir.path().join("shoal-deploy.1")).unwrap();
    assert!(page.contains(".TH") && page.contains("emergency"), "{page}");
    assert!(dir.path().join("shoal.1").is_file());
}
