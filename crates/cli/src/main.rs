//! `shoal`: the command line. Thin: parse arguments, call the libraries, show
//! progress on a terminal, print a report or one JSON object.

mod bench;
mod commands;
mod demo;
mod fleet;
mod local_demo;
mod progress;

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
        /// A topology file, or a shipped one: demo, 3dc-48, 3dc-48-10m, 5dc-200, ci.
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
    /// Show every host the tracker knows: datacenter, last seen, releases, transfer.
    Status {
        /// The tracker's address.
        #[arg(long)]
        tracker: std::net::SocketAddr,
        /// The tracker's host name (as in its certificate).
        #[arg(long)]
        tracker_host: String,
        /// A cluster identity to connect with (`shoal cluster issue`).
        #[arg(long)]
        identity: PathBuf,
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
    /// Switch `current` back to the previously active release.
    Rollback {
        #[arg(long)]
        root: PathBuf,
    },
    /// List installed releases.
    Releases {
        #[arg(long)]
        root: PathBuf,
    },
    /// Re-hash an installed release (default: current) and compare it with its manifest.
    Audit {
        tag: Option<String>,
        #[arg(long)]
        root: PathBuf,
    },
    /// Remove old releases and unused chunks, keeping current, previous and the N newest.
    Gc {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        keep: usize,
    },
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
enum KeyCommand {
    /// Write a new deploy key pair: FILE (secret, mode 0600) and FILE.pub.
    New {
        #[arg(long)]
        out: PathBuf,
    },
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
        Err(e) => {
            if cli_json_requested() {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cli_json_requested() -> bool {
    std::env::args().any(|a| a == "--json")
}
