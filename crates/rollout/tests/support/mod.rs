//! A seed and agents in one process over real QUIC on loopback, with hooks
//! that append timestamped lines to one log file.

#![allow(dead_code)]

use shoal_bundle::Root;
use shoal_bundle::signing::DeployKey;
use shoal_node::agent;
use shoal_node::client::Client;
use shoal_node::config::{AgentConfig, Hook, Hooks};
use shoal_rollout::{Event, Goal, Options, Report, RolloutError};
use shoal_seed::seed::{Seed, SeedConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Fleet {
    /// Where h00 and the seed serve Prometheus metrics.
    pub agent_metrics: std::net::SocketAddr,
    pub seed_metrics: std::net::SocketAddr,
    pub dir: tempfile::TempDir,
    pub seed: Seed,
    pub agents: Vec<(String, Arc<shoal_node::Node>)>,
    pub src: PathBuf,
    pub stats: shoal_sample::Stats,
    pub hook_log: PathBuf,
}

/// A hook line: `<ns since epoch> <host> <phase> <tag>`.
fn logging_hook(log: &Path, phase: &str, extra: &str) -> Hook {
    Hook {
        command: format!(
            "printf '%s %s %s %s %s\\n' \"$(date +%s%N)\" \"$SHOAL_HOST\" {phase} \"$SHOAL_TAG\" \"$SHOAL_PREVIOUS_TAG\" >> {}{extra}",
            log.display()
        ),
        timeout_s: 10.0,
        retries: 0,
        retry_delay_s: 0.05,
    }
}

pub fn agent_config(
    dir: &Path,
    host: &str,
    dc: &str,
    tracker: std::net::SocketAddr,
) -> AgentConfig {
    let cluster = dir.join("cluster");
    let identity = dir.join(format!("{host}.identity"));
    if !identity.exists() {
        shoal_net::cluster::issue(&cluster, host, dc, &identity).unwrap();
    }
    let log = dir.join("hooks.log");
    // Health fails while `fail-<host>-<tag>` exists.
    let health = logging_hook(
        &log,
        "health",
        &format!(
            " && test ! -e {}/fail-\"$SHOAL_HOST\"-\"$SHOAL_TAG\"",
            dir.display()
        ),
    );
    AgentConfig {
        host: host.into(),
        dc: dc.into(),
        root: dir.join(host),
        identity,
        trust: vec![cluster.join("deploy.key.pub")],
        tracker,
        tracker_host: "seed".into(),
        listen: "127.0.0.1:0".parse().unwrap(),
        advertise: None,
        auto_activate: false,
        upload_limit: 0,
        download_limit: 0,
        upload_slots: 16,
        reserve: 0,
        path_bandwidth: 125_000_000,
        path_rtt_ms: 1,
        path_mtu: 0,
        poll_ms: 100,
        locality: true,
        fault_corrupt_uploads: false,
        metrics: None,
        hooks: Hooks {
            depool: Some(logging_hook(&log, "depool", "")),
            restart: Some(logging_hook(&log, "restart", "")),
            health: Some(health),
            // Repool fails while `failrepool-<host>-<tag>` exists.
            repool: Some(logging_hook(
                &log,
                "repool",
                &format!(
                    " && test ! -e {}/failrepool-\"$SHOAL_HOST\"-\"$SHOAL_TAG\"",
                    dir.display()
                ),
            )),
        },
    }
}

impl Fleet {
    /// `n` agents over three datacenters, release v1 staged everywhere.
    pub async fn start(n: usize) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cluster = d.join("cluster");
        shoal_net::cluster::init(&cluster).unwrap();
        shoal_net::cluster::issue(&cluster, "seed", "dc1", &d.join("seed.identity")).unwrap();
        shoal_net::cluster::issue(&cluster, "deployer", "dc1", &d.join("deployer.identity"))
            .unwrap();
        let cfg = SeedConfig {
            host: "seed".into(),
            dc: "dc1".into(),
            store: d.join("seed-store"),
            key: cluster.join("deploy.key"),
            trust: vec![],
            identity: d.join("seed.identity"),
            listen: "127.0.0.1:0".parse().unwrap(),
            advertise: None,
            upload_limit: 0,
            upload_slots: 16,
            deploy_log: None,
            metrics: None,
            web: None,
            locality: true,
            path_mtu: 0,
        };
        let cfg = SeedConfig {
            metrics: Some(free_tcp()),
            ..cfg
        };
        let seed = Seed::start(&cfg).await.unwrap();
        let src = d.join("src");
        let spec = shoal_sample::Spec {
            files: 40,
            mean_file: 2000,
            binaries: vec![200_000],
            seed: 3,
        };
        let stats = shoal_sample::generate(&src, &spec).unwrap();
        let mut fleet = Fleet {
            agent_metrics: free_tcp(),
            seed_metrics: cfg.metrics.unwrap(),
            hook_log: d.join("hooks.log"),
            dir,
            seed,
            agents: Vec::new(),
            src,
            stats,
        };
        fleet.publish("v1");
        for i in 0..n {
            fleet.start_agent(i).await;
        }
        fleet.wait_staged("v1").await;
        fleet
    }

    /// `n` agents running v1 (deployed by a rollout), with v2 staged.
    pub async fn on_v1_with_v2_staged(n: usize) -> Fleet {
        let mut f = Fleet::start(n).await;
        let first = f
            .rollout(Goal::Deploy("v1".into()), &opts("100%"))
            .await
            .unwrap();
        assert!(first.ok, "{first:#?}");
        f.publish("v2");
        f.wait_staged("v2").await;
        f
    }

    pub fn host(i: usize) -> String {
        format!("h{i:02}")
    }

    pub async fn start_agent(&mut self, i: usize) {
        let mut cfg = agent_config(
            self.dir.path(),
            &Self::host(i),
            &format!("dc{}", i % 3 + 1),
            self.seed.local_addr(),
        );
        if i != 0 {
            let node = agent::start(cfg).await.unwrap();
            self.agents.push((Self::host(i), node));
            return;
        }
        // A port found free can be taken by a parallel test before the agent
        // binds it (CI saw AddrInUse once): pick it now, and again if taken.
        let mut tries = 0;
        let node = loop {
            let addr = free_tcp();
            cfg.metrics = Some(addr);
            match agent::start(cfg.clone()).await {
                Ok(node) => {
                    self.agent_metrics = addr;
                    break node;
                }
                Err(agent::AgentError::Metrics { .. }) if tries < 5 => tries += 1,
                Err(e) => panic!("starting {}: {e}", Self::host(i)),
            }
        };
        self.agents.push((Self::host(i), node));
    }

    pub fn publish(&mut self, tag: &str) {
        if tag != "v1" {
            shoal_sample::edit(&self.src, &self.stats, 5.0, tag.len() as u64).unwrap();
        }
        self.seed.publish(&self.src, tag).unwrap();
    }

    /// Publishes an edit of the tree as `tag` with its own release counter
    /// and validity; returns what announcing it said. With a counter, it is
    /// packed into a store of its own (as another deploy host, or an old
    /// backup, would have) and then copied into the seed's: the seed's store
    /// refuses to sign a counter below its last.
    pub fn publish_with(
        &mut self,
        tag: &str,
        counter: Option<u64>,
        valid_for: Duration,
    ) -> Result<shoal_bundle::Hash, shoal_seed::seed::SeedError> {
        shoal_sample::edit(&self.src, &self.stats, 5.0, tag.len() as u64 + 7).unwrap();
        let seed_store = self.dir.path().join("seed-store");
        let dir = match counter {
            Some(_) => self.dir.path().join(format!("store-{tag}")),
            None => seed_store.clone(),
        };
        let store = shoal_bundle::ChunkStore::open(dir.clone()).unwrap();
        let mut o = shoal_bundle::pack::PackOptions::new(tag);
        o.counter = counter;
        o.valid_for = valid_for;
        shoal_bundle::pack::pack(&self.src, &store, &self.key(), &o, &|_| {}).unwrap();
        if dir != seed_store {
            copy_tree(&dir.join("chunks"), &seed_store.join("chunks"));
            let m = format!("manifests/{tag}.manifest");
            std::fs::copy(dir.join(&m), seed_store.join(&m)).unwrap();
        }
        self.seed.announce(tag)
    }

    pub fn root(&self, host: &str) -> Root {
        Root::new(self.dir.path().join(host))
    }

    pub fn current(&self, host: &str) -> Option<String> {
        self.root(host).current().unwrap()
    }

    pub async fn wait_staged(&self, tag: &str) {
        let start = Instant::now();
        while !self
            .agents
            .iter()
            .all(|(h, _)| self.root(h).installed().unwrap().iter().any(|t| t == tag))
        {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "{tag} not staged in 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The tracker hears of it at the agents' next report.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    pub fn client(&self) -> Client {
        let id = shoal_net::Identity::load(&self.dir.path().join("deployer.identity")).unwrap();
        Client::new(&id, self.seed.local_addr()).unwrap()
    }

    pub fn key(&self) -> DeployKey {
        DeployKey::load(&self.dir.path().join("cluster").join("deploy.key")).unwrap()
    }

    pub fn fail_repool(&self, host: &str, tag: &str) {
        std::fs::write(self.dir.path().join(format!("failrepool-{host}-{tag}")), "").unwrap();
    }

    pub fn fail_health(&self, host: &str, tag: &str) {
        std::fs::write(self.dir.path().join(format!("fail-{host}-{tag}")), "").unwrap();
    }

    pub async fn rollout(&self, goal: Goal, opts: &Options) -> Result<Report, RolloutError> {
        self.rollout_stopping_at(goal, opts, usize::MAX).await
    }

    /// A rollout that is interrupted (as by Ctrl-C) once batch `stop_at` starts.
    pub async fn rollout_stopping_at(
        &self,
        goal: Goal,
        opts: &Options,
        stop_at: usize,
    ) -> Result<Report, RolloutError> {
        let client = self.client();
        let (tx, rx) = tokio::sync::watch::channel(false);
        let r = shoal_rollout::run(
            &client,
            self.seed.local_addr(),
            "seed",
            &self.key(),
            goal,
            opts,
            rx,
            &mut |e: Event| {
                if let Event::Batch { index, .. } = e
                    && index >= stop_at
                {
                    let _ = tx.send(true);
                }
            },
        )
        .await;
        client.close().await;
        r
    }

    /// The previous release each hook line named, by (host, phase).
    pub fn hook_previous(&self) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(&self.hook_log).unwrap_or_default();
        text.lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[1].into(),
                    f[2].into(),
                    f.get(4).unwrap_or(&"").to_string(),
                )
            })
            .collect()
    }

    /// The hook log: (seconds since the first line, host, phase, tag).
    pub fn hook_lines(&self) -> Vec<(f64, String, String, String)> {
        let text = std::fs::read_to_string(&self.hook_log).unwrap_or_default();
        let mut lines: Vec<(u128, String, String, String)> = text
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                (
                    f[0].parse().unwrap(),
                    f[1].into(),
                    f[2].into(),
                    f.get(3).unwrap_or(&"").to_string(),
                )
            })
            .collect();
        lines.sort_by_key(|l| l.0);
        let t0 = lines.first().map_or(0, |l| l.0);
        lines
            .into_iter()
            .map(|(t, h, p, tag)| ((t - t0) as f64 / 1e9, h, p, tag))
            .collect()
    }

    pub fn clear_hook_log(&self) {
        let _ = std::fs::remove_file(&self.hook_log);
    }
}

pub fn opts(batch: &str) -> Options {
    Options {
        batch: batch.parse().unwrap(),
        interval: Duration::from_millis(400),
        drain: Duration::from_millis(100),
        stage_timeout: Duration::from_secs(60),
        host_timeout: Duration::from_secs(30),
        who: "test@deployer".into(),
        ..Default::default()
    }
}

/// Copies the files under `from` into `to`, keeping what `to` has.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let dest = to.join(e.file_name());
        if e.path().is_dir() {
            copy_tree(&e.path(), &dest);
        } else if !dest.exists() {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

/// A loopback TCP port that was free a moment ago.
pub fn free_tcp() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET /metrics` over plain HTTP/1.0: the body.
pub fn scrape(addr: std::net::SocketAddr) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(head.to_ascii_lowercase().contains("text/plain"), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}` (labels as written, in order), or
/// the sum over every sample of `name` when `labels` is None.
pub fn sample(text: &str, name: &str, labels: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, value) = line.rsplit_once(' ')?;
        let (n, l) = match series.split_once('{') {
            Some((n, l)) => (n, Some(l.trim_end_matches('}'))),
            None => (series, None),
        };
        if n != name {
            continue;
        }
        let v: f64 = value.parse().ok()?;
        match labels {
            Some(want) if l == Some(want) => return Some(v),
            Some(_) => {}
            None => found = Some(found.unwrap_or(0.0) + v),
        }
    }
    found
}
