//! `agent.toml`: what an agent needs to run. Unknown keys are errors, so a typo
//! is caught before the agent starts.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// This host's name (must match its cluster certificate).
    pub host: String,
    /// Datacenter label.
    pub dc: String,
    /// The shoal root (`store/`, `releases/`, `current`).
    pub root: PathBuf,
    /// The identity file from `shoal cluster issue`.
    pub identity: PathBuf,
    /// Trusted deploy public keys.
    pub trust: Vec<PathBuf>,
    /// The tracker's address and host name.
    pub tracker: SocketAddr,
    pub tracker_host: String,
    /// Where to accept peer connections.
    pub listen: SocketAddr,
    /// The address peers should dial, if not `listen`.
    #[serde(default)]
    pub advertise: Option<SocketAddr>,
    /// Activate a release as soon as it is installed and verified.
    #[serde(default)]
    pub auto_activate: bool,
    /// Upload and download caps in bytes per second (0: none).
    #[serde(default)]
    pub upload_limit: u64,
    #[serde(default)]
    pub download_limit: u64,
    /// Pieces being uploaded at once; a piece holds its slot until the peer
    /// has all its bytes. As many requests from this datacenter, and as many
    /// from others, may wait for one (those from others are served first);
    /// past that a request is answered `Busy`.
    #[serde(default = "default_slots")]
    pub upload_slots: usize,
    /// Bytes to keep free on the root's filesystem.
    #[serde(default = "default_reserve")]
    pub reserve: u64,
    /// The path the window of requests in flight is sized for. The bandwidth
    /// is this host's link speed: it also bounds the bytes in flight of each
    /// connection inside the datacenter (twice its bandwidth-delay product).
    #[serde(default = "default_bandwidth")]
    pub path_bandwidth: u64,
    #[serde(default = "default_rtt")]
    pub path_rtt_ms: u64,
    /// The path MTU as UDP payload bytes (1452 on a 1500-byte Ethernet path
    /// over IPv6), if every path this host uses carries it: connections
    /// start at it and probe nothing. 0: start at 1200 and probe once.
    #[serde(default)]
    pub path_mtu: u16,
    /// How often to report to the tracker and look for new releases.
    #[serde(default = "default_poll")]
    pub poll_ms: u64,
    /// Prefer peers in the own datacenter and spread the crossing over its hosts.
    /// Off, every peer is equal and chosen at random (netsim's `bittorrent`
    /// strategy measures what that costs).
    #[serde(default = "default_locality")]
    pub locality: bool,
    /// Fault injection for tests: serve chunks with corrupted bytes.
    #[serde(default)]
    pub fault_corrupt_uploads: bool,
    /// Commands run around the switch of `current` during a rollout.
    #[serde(default)]
    pub hooks: Hooks,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9464).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
}

/// The rollout hooks, run in this order: `depool`, the drain wait, the switch,
/// `restart`, `health` (retried), `repool`. Each is optional. `--emergency`
/// rollouts skip `depool`, the drain and `repool`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    pub depool: Option<Hook>,
    pub restart: Option<Hook>,
    pub health: Option<Hook>,
    pub repool: Option<Hook>,
}

/// A command run by `/bin/sh -c`, with the release's tag, id and directory
/// (and the previous ones) in its environment.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Hook {
    pub command: String,
    /// Seconds one attempt may take before it is killed and counted failed.
    #[serde(default = "default_hook_timeout")]
    pub timeout_s: f64,
    /// Further attempts after a failed one (for health checks of a service
    /// that takes a moment to come up).
    #[serde(default)]
    pub retries: u32,
    /// Seconds between attempts.
    #[serde(default = "default_retry_delay")]
    pub retry_delay_s: f64,
}

fn default_hook_timeout() -> f64 {
    30.0
}
fn default_retry_delay() -> f64 {
    1.0
}

fn default_locality() -> bool {
    true
}
fn default_slots() -> usize {
    32
}
fn default_reserve() -> u64 {
    64 << 20
}
fn default_bandwidth() -> u64 {
    125_000_000
}
fn default_rtt() -> u64 {
    40
}
fn default_poll() -> u64 {
    1000
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}: {} problem(s):\n{}", path.display(), problems.len(), list(problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<crate::check::Problem>,
    },
}

fn list(problems: &[crate::check::Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Reads a config file and checks it (`shoal config check`'s rules): every
/// problem at once, or the text.
pub fn read_checked(path: &Path, which: crate::check::Which) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        cause: source,
    })?;
    let base = std::env::current_dir().unwrap_or_default();
    let problems = crate::check::check(&text, which, &base);
    if !problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        });
    }
    Ok(text)
}

impl AgentConfig {
    /// Reads and checks `agent.toml`; an invalid one is refused with every problem.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_checked(path, crate::check::Which::Agent)?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped example (`dist/agent.toml`) uses every key the struct
    /// reads, and the struct reads every key the checker knows.
    #[test]
    fn the_shipped_example_and_the_checker_agree_with_the_struct() {
        let text =
            include_str!("../../../dist/agent.toml").replace("# advertise = ", "advertise = ");
        let cfg: AgentConfig = toml::from_str(&text).expect("dist/agent.toml parses");
        assert_eq!(cfg.metrics, Some("127.0.0.1:9464".parse().unwrap()));
        assert!(cfg.hooks.depool.is_some() && cfg.hooks.health.is_some());
        let table: toml::Table = text.parse().unwrap();
        for k in crate::check::AGENT {
            if k.name != "fault_corrupt_uploads" {
                assert!(
                    table.contains_key(k.name),
                    "dist/agent.toml lacks {}",
                    k.name
                );
            }
        }
    }

    /// The README's `agent.toml` example is a valid config, hooks included.
    #[test]
    fn the_readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("# agent.toml\n")
            .expect("an agent.toml example");
        let block = &readme[start..];
        let block = &block[..block.find("```").expect("end of the block")];
        let cfg: AgentConfig = toml::from_str(block).expect("the example parses");
        assert_eq!(cfg.host, "web-17");
        assert!(!cfg.auto_activate);
        let health = cfg.hooks.health.expect("a health hook");
        assert_eq!(health.retries, 10);
        assert!(cfg.hooks.depool.is_some() && cfg.hooks.repool.is_some());
        assert!(
            toml::from_str::<AgentConfig>(&format!("{block}\n[hooks.typo]\ncommand = \"x\"\n"))
                .is_err()
        );
    }
}
