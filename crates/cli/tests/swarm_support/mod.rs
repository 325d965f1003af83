//! Helpers for the multi-process swarm tests: a cluster in a temporary
//! directory, seed and agent processes of the real `shoal` binary (killed when
//! dropped), `shoal status --json` snapshots, and checks on agents' roots.
#![allow(dead_code)] // not every test uses every helper

use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How often waits look again.
pub const POLL: Duration = Duration::from_millis(200);

/// The swarm tests start many processes each; on a 2-core machine they are run
/// one at a time (the test harness runs tests on parallel threads).
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_shoal")
}

/// Runs `shoal` to completion, whatever its exit status.
pub fn run<S: AsRef<OsStr>>(args: &[S]) -> Output {
    Command::new(bin())
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running shoal")
}

/// Runs `shoal`, panicking with its output unless it succeeds; returns stdout.
pub fn run_ok<S: AsRef<OsStr>>(args: &[S]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "shoal {} failed ({}):\nstdout: {}\nstderr: {}",
        args.iter()
            .map(|a| a.as_ref().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A UDP port that was free a moment ago.
pub fn free_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("binding a UDP socket");
    s.local_addr().expect("local address").port()
}

/// A path as a TOML string.
fn toml_path(p: &Path) -> String {
    format!("{:?}", p.to_str().expect("UTF-8 temp path"))
}

/// Polls `check` every [`POLL`] until it returns `Ok`, or panics after `limit`
/// with `what` and the last `Err` (a description of the state seen).
pub fn wait_for<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        let state = match check() {
            Ok(v) => return v,
            Err(state) => state,
        };
        if start.elapsed() >= limit {
            panic!("timed out after {limit:?} waiting for {what}\n{state}");
        }
        std::thread::sleep(POLL);
    }
}

/// A running `shoal` process, SIGKILLed and reaped when dropped. Its stdout and
/// stderr go to files next to its config.
pub struct Proc {
    pub name: String,
    child: Mutex<Option<Child>>,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Proc {
    pub fn spawn<S: AsRef<OsStr>>(name: &str, dir: &Path, args: &[S]) -> Proc {
        Self::spawn_env(name, dir, args, &[])
    }

    /// `spawn` with extra environment variables.
    pub fn spawn_env<S: AsRef<OsStr>>(
        name: &str,
        dir: &Path,
        args: &[S],
        env: &[(&str, &OsStr)],
    ) -> Proc {
        // Several runs of a host (restarts) append to the same log files.
        let stdout = dir.join(format!("{name}.stdout"));
        let stderr = dir.join(format!("{name}.stderr"));
        let open = |p: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .expect("opening a log file")
        };
        // The seed's stdout is read for its pack report: start each run's afresh.
        let _ = fs::remove_file(&stdout);
        let child = Command::new(bin())
            .args(args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("SHOAL_SWARM_LOG")
                    .unwrap_or_else(|_| "warn,shoal_node=info,shoal_seed=info".into()),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(open(&stdout))
            .stderr(open(&stderr))
            .spawn()
            .expect("starting shoal");
        Proc {
            name: name.to_string(),
            child: Mutex::new(Some(child)),
            stdout,
            stderr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child().as_ref().expect("running").id()
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// SIGKILL, then reap.
    pub fn kill(&self) {
        if let Some(mut c) = self.child().take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Whether it exited on its own (and how).
    pub fn exited(&self) -> Option<std::process::ExitStatus> {
        self.child()
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        let from = lines.len().saturating_sub(n);
        format!(
            "--- {} (stderr, last {n} lines)\n{}",
            self.name,
            lines[from..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An agent's files.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub host: String,
    pub dc: String,
    pub root: PathBuf,
    pub config: PathBuf,
}

/// A cluster in a temporary directory: its CA and deploy key, the seed's config
/// (listening on a fixed loopback port, so a restarted seed is found again), a
/// status identity, and the release tree `tree/`.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub cluster: PathBuf,
    pub port: u16,
    pub tree: PathBuf,
    pub observer: PathBuf,
}

impl Lab {
    pub fn new() -> Lab {
        let mut dir = tempfile::tempdir().expect("temp dir");
        // SHOAL_KEEP_SWARM=1 keeps the directory (configs, logs, roots) for a look.
        if std::env::var_os("SHOAL_KEEP_SWARM").is_some() {
            dir.disable_cleanup(true);
            eprintln!("swarm test directory kept: {}", dir.path().display());
        }
        let d = dir.path();
        let cluster = d.join("cluster");
        run_ok(&[
            OsStr::new("cluster"),
            "init".as_ref(),
            "--dir".as_ref(),
            cluster.as_os_str(),
        ]);
        let port = free_port();
        let lab = Lab {
            cluster,
            port,
            tree: d.join("tree"),
            observer: d.join("observer.id"),
            dir,
        };
        lab.issue("seed", "dc1", &lab.path("seed.id"));
        lab.issue("observer", "dc1", &lab.observer);
        lab.write_seed_config("seed.toml", &lab.cluster.join("deploy.key"), port, "");
        run_ok(&[OsStr::new("sample"), "--out".as_ref(), lab.tree.as_os_str()]);
        lab
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn issue(&self, host: &str, dc: &str, out: &Path) {
        run_ok(&[
            OsStr::new("cluster"),
            "issue".as_ref(),
            "--dir".as_ref(),
            self.cluster.as_os_str(),
            "--host".as_ref(),
            host.as_ref(),
            "--dc".as_ref(),
            dc.as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
    }

    /// Writes a seed config `name` (host "seed", dc1) signing with `key`.
    pub fn write_seed_config(&self, name: &str, key: &Path, port: u16, extra: &str) -> PathBuf {
        let path = self.path(name);
        let store = self.path(&format!("{}-store", name.trim_end_matches(".toml")));
        fs::write(
            &path,
            format!(
                "host = \"seed\"\ndc = \"dc1\"\nstore = {}\nkey = {}\ntrust = []\nidentity = {}\nlisten = \"127.0.0.1:{port}\"\n{extra}\n",
                toml_path(&store),
                toml_path(key),
                toml_path(&self.path("seed.id")),
            ),
        )
        .expect("writing the seed config");
        path
    }

    /// Issues an identity for `host` and writes its config (tracker: this lab's
    /// seed; `extra` lines appended, e.g. `download_limit = 1000000`).
    pub fn agent(&self, host: &str, dc: &str, extra: &str) -> AgentSpec {
        let identity = self.path(&format!("{host}.id"));
        self.issue(host, dc, &identity);
        self.agent_with(
            host,
            dc,
            &identity,
            &[self.cluster.join("deploy.key.pub")],
            extra,
        )
    }

    /// An agent config with the given identity file and trusted keys.
    pub fn agent_with(
        &self,
        host: &str,
        dc: &str,
        identity: &Path,
        trust: &[PathBuf],
        extra: &str,
    ) -> AgentSpec {
        let root = self.path(&format!("{host}-root"));
        let config = self.path(&format!("{host}.toml"));
        let trust = trust
            .iter()
            .map(|p| toml_path(p))
            .collect::<Vec<_>>()
            .join(", ");
        fs::write(
            &config,
            format!(
                "host = \"{host}\"\ndc = \"{dc}\"\nroot = {}\nidentity = {}\ntrust = [{trust}]\ntracker = \"127.0.0.1:{}\"\ntracker_host = \"seed\"\nlisten = \"127.0.0.1:0\"\nauto_activate = true\npoll_ms = 200\nreserve = 0\n{extra}\n",
                toml_path(&root),
                toml_path(identity),
                self.port,
            ),
        )
        .expect("writing an agent config");
        AgentSpec {
            host: host.into(),
            dc: dc.into(),
            root,
            config,
        }
    }

    pub fn start_agent(&self, a: &AgentSpec) -> Proc {
        self.start_agent_env(a, &[])
    }

    /// `start_agent` with extra environment variables.
    pub fn start_agent_env(&self, a: &AgentSpec, env: &[(&str, &OsStr)]) -> Proc {
        Proc::spawn_env(
            &a.host,
            self.dir.path(),
            &[
                OsStr::new("agent"),
                "--config".as_ref(),
                a.config.as_os_str(),
            ],
            env,
        )
    }

    /// Starts `shoal seed [tree --tag TAG] --config CONFIG --json`; with a tag,
    /// waits for its pack report (the first line of its stdout) and returns it.
    pub fn start_seed(&self, config: &str, tag: Option<&str>) -> (Proc, Option<Value>) {
        let cfg = self.path(config);
        let mut args: Vec<&OsStr> = vec![OsStr::new("seed")];
        match tag {
            Some(tag) => args.extend([self.tree.as_os_str(), "--tag".as_ref(), tag.as_ref()]),
            None => args.push("--serve".as_ref()),
        }
        args.extend([OsStr::new("--config"), cfg.as_os_str(), "--json".as_ref()]);
        let seed = Proc::spawn(config.trim_end_matches(".toml"), self.dir.path(), &args);
        let Some(tag) = tag else {
            return (seed, None);
        };
        let report = wait_for(
            &format!("the seed's pack report for {tag}"),
            Duration::from_secs(30),
            || {
                if let Some(st) = seed.exited() {
                    panic!("the seed exited ({st})\n{}", seed.log_tail(30));
                }
                let out = seed.stdout_text();
                match out.lines().next().filter(|_| out.contains('\n')) {
                    Some(line) => {
                        Ok(serde_json::from_str::<Value>(line).expect("pack report JSON"))
                    }
                    None => Err(seed.log_tail(30)),
                }
            },
        );
        assert_eq!(report["tag"], tag, "{report}");
        (seed, Some(report))
    }

    /// Packs the lab's tree as `tag` into the running seed's store (`seed.toml`'s),
    /// which the seed announces within a second; returns the pack report.
    pub fn publish(&self, tag: &str) -> Value {
        let out = run_ok(&[
            OsStr::new("pack"),
            self.tree.as_os_str(),
            "--tag".as_ref(),
            tag.as_ref(),
            "--store".as_ref(),
            self.path("seed-store").as_os_str(),
            "--key".as_ref(),
            self.cluster.join("deploy.key").as_os_str(),
            "--json".as_ref(),
        ]);
        serde_json::from_str(out.trim()).expect("pack report JSON")
    }

    /// Edits `percent` of the lab tree's files (`shoal sample --edit`), drawn
    /// from `seed`: the next release is a delta.
    pub fn edit(&self, percent: u32, seed: u64) {
        run_ok(&[
            OsStr::new("sample"),
            "--out".as_ref(),
            self.tree.as_os_str(),
            "--edit".as_ref(),
            percent.to_string().as_ref(),
            "--seed".as_ref(),
            seed.to_string().as_ref(),
        ]);
    }

    /// Waits until the tracker lists every one of `hosts`.
    pub fn wait_registered(&self, hosts: &[&str], within: Duration) {
        wait_for("every agent to register", within, || {
            let st = self.status().ok_or_else(|| "no status".to_string())?;
            match hosts.iter().find(|h| !st.contains_key(**h)) {
                None => Ok(()),
                Some(h) => Err(format!("{h} not registered")),
            }
        });
    }

    /// `shoal status --json` through the tracker, as a map host -> report; None
    /// when the command fails (tracker not up yet, or restarting).
    pub fn status(&self) -> Option<BTreeMap<String, Value>> {
        self.status_with(&self.observer)
    }

    pub fn status_with(&self, identity: &Path) -> Option<BTreeMap<String, Value>> {
        let out = run(&[
            OsStr::new("status"),
            "--tracker".as_ref(),
            format!("127.0.0.1:{}", self.port).as_ref(),
            "--tracker-host".as_ref(),
            "seed".as_ref(),
            "--identity".as_ref(),
            identity.as_os_str(),
            "--json".as_ref(),
        ]);
        if !out.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        Some(
            v["hosts"]
                .as_array()?
                .iter()
                .map(|h| {
                    (
                        h["host"].as_str().unwrap_or_default().to_string(),
                        h.clone(),
                    )
                })
                .collect(),
        )
    }

    /// Waits until the tracker reports every agent with `current == tag`, and
    /// returns that status snapshot (its totals are final: an agent activates
    /// only after every chunk is fetched).
    pub fn wait_current(
        &self,
        agents: &[&AgentSpec],
        tag: &str,
        limit: Duration,
        procs: &[&Proc],
    ) -> BTreeMap<String, Value> {
        wait_for(
            &format!("every agent to report current = {tag}"),
            limit,
            || {
                let st = self.status();
                let done = st.as_ref().is_some_and(|st| {
                    agents.iter().all(|a| {
                        st.get(&a.host).is_some_and(|h| h["current"] == tag)
                            && current(&a.root).as_deref() == Some(tag)
                    })
                });
                match st {
                    Some(st) if done => Ok(st),
                    st => Err(describe(st.as_ref(), procs)),
                }
            },
        )
    }
}

/// The last status and every process's log tail, for a failure message.
pub fn describe(status: Option<&BTreeMap<String, Value>>, procs: &[&Proc]) -> String {
    let mut s = String::new();
    match status {
        Some(st) => {
            for (host, h) in st {
                s.push_str(&format!(
                    "{host}: current {} staged {} totals {} transfer {}\n",
                    h["current"], h["staged"], h["totals"], h["transfer"]
                ));
            }
        }
        None => s.push_str("(no status)\n"),
    }
    for p in procs {
        s.push_str(&p.log_tail(15));
        s.push('\n');
    }
    s
}

/// The release `ROOT/current` points at.
pub fn current(root: &Path) -> Option<String> {
    let target = fs::read_link(root.join("current")).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Entries of `ROOT/releases/` (finished releases; not `.partial-*`).
pub fn releases(root: &Path) -> Vec<String> {
    fs::read_dir(root.join("releases"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

/// `shoal audit --root ROOT` exits 0.
pub fn audit_clean(root: &Path) -> bool {
    let out = run(&[OsStr::new("audit"), "--root".as_ref(), root.as_os_str()]);
    if !out.status.success() {
        eprintln!(
            "audit of {} failed: {}{}",
            root.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out.status.success()
}

/// The chunk names in a store directory (`STORE/chunks/<2 hex>/<64 hex>`), not
/// counting temporary files.
pub fn chunk_names(store: &Path) -> Vec<String> {
    let mut names = Vec::new();
    let Ok(dirs) = fs::read_dir(store.join("chunks")) else {
        return names;
    };
    for d in dirs.flatten() {
        let Ok(files) = fs::read_dir(d.path()) else {
            continue;
        };
        for f in files.flatten() {
            let n = f.file_name().to_string_lossy().into_owned();
            if n.len() == 64 && n.bytes().all(|b| b.is_ascii_hexdigit()) {
                names.push(n);
            }
        }
    }
    names
}

/// A counter from a host's status totals.
pub fn total(h: &Value, field: &str) -> u64 {
    h["totals"][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no totals.{field} in {h}"))
}

/// A number from the environment (trial counts, seeds), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `current` resolves to a release that audits clean, every installed release
/// is whole, and `keep` (the last good release) is still installed.
pub fn assert_intact(root: &Path, keep: &str, what: &str) {
    let cur = current(root).unwrap_or_else(|| panic!("{what}: `current` is missing"));
    assert!(
        fs::canonicalize(root.join("current")).is_ok_and(|p| p.is_dir()),
        "{what}: current -> {cur} does not resolve"
    );
    assert!(
        audit_clean(root),
        "{what}: current ({cur}) does not audit clean"
    );
    for r in releases(root) {
        let out = run(&[
            OsStr::new("audit"),
            "--root".as_ref(),
            root.as_os_str(),
            r.as_ref(),
        ]);
        assert!(out.status.success(), "{what}: installed {r} is not whole");
    }
    assert!(
        releases(root).iter().any(|r| r == keep),
        "{what}: the last good release {keep} was lost"
    );
}
