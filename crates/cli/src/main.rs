//! `shoal`: the command line. Thin: parse arguments, call the libraries, show
//! progress on a terminal, print a report or one JSON object.

mod bench;
mod commands;
mod demo;
mod fleet;
mod huge_pages;
mod local_demo;
mod ops;
mod out;
mod progress;
mod rollout;
mod watch;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "shoal",
    version,
    about = "Peer-to-peer, content-addressed release distribution"
)]
struct Cli {
    /// Print one JSON object instead of text, and no progress bars.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole job on a generated sample release over a simulated fleet of
    /// 3 datacenters x 4 hosts (in this process), with a report.
    Demo {
        /// Work directory, kept afterwards (default: a temporary one, removed).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The one-host walk-through instead: pack, install, delta, audit,
        /// tamper, rollback, gc.
        #[arg(long)]
        local: bool,
    },
    /// Distribute a release over a simulated fleet with each strategy in turn
    /// and compare them with the physical limit (T_lb).
    Bench {
        /// A topology file, or a shipped one: demo, 3dc-48, 3dc-48-10m, 5dc-200, ci,
        /// 10dc-1000, 10dc-10000 (the last two for --model flow).
        #[arg(long)]
        topology: String,
        /// Generate a sample release of this size (e.g. 64MiB; default 64MiB).
        #[arg(long, conflicts_with = "tree")]
        size: Option<String>,
        /// Distribute this directory instead.
        #[arg(long)]
        tree: Option<PathBuf>,
        /// Then distribute a second release that edits this percent of files.
        #[arg(long)]
        delta: Option<f64>,
        /// Comma-separated: shoal, central, fanout, bittorrent, or all.
        #[arg(long, default_value = "all")]
        strategy: String,
        /// Seconds a strategy may take per release before it is reported unfinished.
        #[arg(long, default_value_t = 600)]
        time_limit: u64,
        /// Write an SVG chart of hosts verified over time here.
        #[arg(long)]
        chart: Option<PathBuf>,
        /// Work directory (default: a temporary one in /dev/shm, removed afterwards).
        #[arg(long)]
        workdir: Option<PathBuf>,
        /// Seed for loss and jitter.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Keep every simulated host's root in the work directory.
        #[arg(long)]
        keep: bool,
        /// Cut a datacenter off during the first release, then heal it:
        /// DC:AT:LENGTH in seconds from the announcement, e.g. dc3:2:30.
        #[arg(long, value_name = "DC:AT:LENGTH")]
        cut: Option<String>,
        /// `packet`: real QUIC over the simulated network, in virtual time
        /// (CPU work takes no simulated time; a busy machine only runs longer).
        /// `flow`: the same swarm decisions with flows in virtual time, for
        /// fleets of thousands (the release counts as --size bytes of
        /// incompressible data; no --tree, --delta or --cut).
        #[arg(long, default_value = "packet", value_parser = ["packet", "flow"])]
        model: String,
        /// Flow model: bytes per piece (default: F/512, at least 32 KiB).
        #[arg(long)]
        piece: Option<String>,
        /// Flow model: bytes of the signed manifest each agent fetches before
        /// it joins (default: 35 bytes per 32 KiB of --size; the packet
        /// model's 64 MiB sample tree has one of 343 KB; 0: agents join at once).
        #[arg(long)]
        manifest: Option<String>,
    },
    /// Write a deterministic sample release tree (for trying shoal and for benchmarks).
    Sample {
        /// Where to write the tree.
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "demo")]
        preset: Preset,
        /// Instead of writing a tree, edit this percent of the small files of the
        /// tree already at --out (as the next release would).
        #[arg(long)]
        edit: Option<f64>,
        /// Seed for the edit.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// The cluster's CA and host identities.
    Cluster {
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run the deploy host: the tracker, and a seed serving every release in its
    /// store (and any packed into it later). With DIR and --tag, pack and
    /// announce that release first; with --serve, only serve.
    Seed {
        #[arg(required_unless_present = "serve", requires = "tag")]
        dir: Option<PathBuf>,
        #[arg(long, requires = "dir")]
        tag: Option<String>,
        /// Serve the releases in the store without packing a new one.
        #[arg(long, conflicts_with = "dir")]
        serve: bool,
        #[arg(long)]
        config: PathBuf,
    },
    /// Run an agent: join every announced release's swarm, fetch, verify, install.
    Agent {
        #[arg(long)]
        config: PathBuf,
    },
    /// Show every host the tracker knows: datacenter, last seen, releases,
    /// transfer, and what is stale (off the fleet's target release, not seen
    /// lately, failed its last audit).
    Status {
        #[command(flatten)]
        remote: Remote,
        /// Exit 1 unless every live agent runs the target release.
        #[arg(long)]
        check: bool,
        /// Seconds without a report after which a host counts as not seen.
        #[arg(long, default_value_t = 30)]
        stale_after: u64,
        /// Keep watching: a full-screen live view on a terminal (q quits),
        /// one line per change otherwise, one JSON view per line with --json.
        #[arg(long, conflicts_with = "check")]
        watch: bool,
        /// How often --watch asks the tracker.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration, requires = "watch")]
        every: std::time::Duration,
        /// The release --watch measures hosts against (default: the newest
        /// announced, or the target a later rollback set).
        #[arg(long, requires = "watch")]
        release: Option<String>,
        /// With --watch: exit 0 once every agent is live on the release.
        #[arg(long, requires = "watch")]
        until_live: bool,
    },
    /// Switch the fleet to a release in batches once every live agent has it
    /// staged and verified, running each agent's hooks around the switch.
    Deploy {
        tag: String,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// Show the deploy log the tracker keeps: who ran what, when, per host.
    Log {
        #[command(flatten)]
        remote: Remote,
        /// The last N lines.
        #[arg(long, default_value_t = 50)]
        last: u32,
    },
    /// Run a command from the current release's directory (resolved, not
    /// through `current`), holding a lease on it until the command exits: no
    /// garbage collection removes a leased release.
    Exec {
        #[arg(long)]
        root: PathBuf,
        /// The command and its arguments (after `--`).
        #[arg(required = true, last = true)]
        command: Vec<String>,
    },
    /// Check an agent or seed config: every problem, with its key and why.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Write the man pages (shoal.1 and one per subcommand) into DIR, or print
    /// shoal.1 without --out.
    Man {
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Deploy keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// Pack a release directory into the store and sign its manifest.
    Pack {
        dir: PathBuf,
        #[arg(long)]
        tag: String,
        #[arg(long)]
        store: PathBuf,
        /// The deploy key's secret file.
        #[arg(long)]
        key: PathBuf,
        /// Average chunk size in bytes (min is half, max four times).
        #[arg(long, default_value_t = 32 * 1024)]
        chunk_avg: u32,
        /// zstd level for new chunks (1 packs as fast as `tar | zstd -1`).
        #[arg(long, default_value_t = 1)]
        level: i32,
        /// How long agents may take the release as new (after that they
        /// refuse it: a stale release cannot be replayed as current).
        #[arg(long, default_value = "30days", value_parser = humantime::parse_duration)]
        valid_for: std::time::Duration,
        /// The release counter (default: now in milliseconds, above the
        /// store's last); agents take only releases newer than any they have.
        #[arg(long)]
        counter: Option<u64>,
    },
    /// Assemble and verify a release from a store into ROOT/releases/.
    Install {
        tag: String,
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        root: PathBuf,
        /// Trusted deploy public key(s) (FILE.pub); repeat for several.
        #[arg(long, required = true)]
        trust: Vec<PathBuf>,
        /// Switch `current` to the release once it is verified.
        #[arg(long)]
        activate: bool,
        /// Bytes that must stay free on the root's filesystem afterwards.
        #[arg(long, default_value_t = 64 << 20)]
        reserve: u64,
        /// Write every file instead of hard-linking unchanged ones from the current release.
        #[arg(long)]
        no_link: bool,
    },
    /// Switch `current` to an installed release.
    Activate {
        tag: String,
        #[arg(long)]
        root: PathBuf,
    },
    /// Switch back to an earlier release: on this host (--root), or across
    /// the fleet (--tracker), in batches with hooks, to TAG or to each host's
    /// previous good release. No transfer.
    Rollback {
        /// A kept release to go to (fleet only; default: each host's previous).
        tag: Option<String>,
        #[arg(long, conflicts_with = "tracker", required_unless_present = "tracker")]
        root: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
        #[command(flatten)]
        rollout: RolloutArgs,
    },
    /// List installed releases and the leases on them.
    Releases {
        #[arg(long)]
        root: PathBuf,
    },
    /// Re-hash a release against its manifest: an installed one here (--root,
    /// default current), or every agent's current release (--tracker).
    Audit {
        tag: Option<String>,
        #[arg(long, conflicts_with = "tracker", required_unless_present = "tracker")]
        root: Option<PathBuf>,
        #[command(flatten)]
        remote: Remote,
    },
    /// Remove old releases and unused chunks, keeping current, previous and the N newest.
    Gc {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        keep: usize,
    },
}

/// How to reach the cluster: the tracker on the deploy host, with a cluster
/// identity.
#[derive(clap::Args, Clone, Debug)]
pub struct Remote {
    /// The tracker's address.
    #[arg(long)]
    pub tracker: Option<std::net::SocketAddr>,
    /// The tracker's host name (as in its certificate).
    #[arg(long, requires = "tracker")]
    pub tracker_host: Option<String>,
    /// A cluster identity to connect with (`shoal cluster issue`).
    #[arg(long, requires = "tracker")]
    pub identity: Option<PathBuf>,
}

/// How a fleet switches.
#[derive(clap::Args, Clone, Debug)]
pub struct RolloutArgs {
    /// Hosts switched at once: a count (3) or a share of the fleet (10%).
    #[arg(long, default_value = "10%")]
    pub batch: shoal_rollout::BatchSize,
    /// Pause after the canaries and between batches (e.g. 30s, 2m).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: std::time::Duration,
    /// Hosts switched first, alone, before a pause (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub canary: Vec<String>,
    /// Stop and roll back every switched host once this many hosts failed (0: never).
    #[arg(long, default_value_t = 1)]
    pub max_failures: usize,
    /// How long a depooled host drains before its switch.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub drain: std::time::Duration,
    /// DISRUPTIVE: no depool, no drain: switch and restart at once (still in
    /// batches). For urgent reverts.
    #[arg(long)]
    pub emergency: bool,
    /// How long to wait for every live agent to stage the release.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub stage_timeout: std::time::Duration,
    /// How long one host's switch (hooks included) may take.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub host_timeout: std::time::Duration,
    /// The deploy key's secret file: orders to agents are signed with it.
    #[arg(long)]
    pub key: Option<PathBuf>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Preset {
    /// About 2,000 files, 20 MB.
    Demo,
    /// About 20,000 small files and four binaries, 500 MB.
    Bench,
}

#[derive(Subcommand)]
enum ClusterCommand {
    /// Create DIR with the cluster CA (ca.crt, ca.key) and the deploy key pair.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a host identity (certificate, key and CA in one file) signed by the CA in DIR.
    Issue {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        host: String,
        #[arg(long)]
        dc: String,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Exit 1 when the config has problems; lists them all. Relative paths are
    /// taken from the working directory, as the programs take them.
    Check {
        file: PathBuf,
        /// Which program the file is for (default: told by its keys).
        #[arg(long, value_enum)]
        kind: Option<ConfigKind>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum ConfigKind {
    Agent,
    Seed,
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new deploy key pair: FILE (secret, mode 0600) and FILE.pub.
    New {
        #[arg(long)]
        out: PathBuf,
    },
}

/// The command-line definition, for completions and man pages.
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(code) => code,
        Err(e) if out::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            if cli_json_requested() {
                // Nothing more to say if even this cannot be written.
                let _ = out::print(format_args!(
                    "{}\n",
                    serde_json::json!({ "error": format!("{e:#}") })
                ));
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cli_json_requested() -> bool {
    std::env::args().any(|a| a == "--json")
}
