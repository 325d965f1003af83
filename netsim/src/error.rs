//! Errors of a simulated run.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(transparent)]
    Topology(#[from] crate::topology::TopologyError),
    #[error(transparent)]
    Net(#[from] shoal_net::NetError),
    #[error(transparent)]
    Bundle(#[from] shoal_bundle::Error),
    #[error(transparent)]
    Seed(#[from] shoal_seed::seed::SeedError),
    #[error(transparent)]
    Agent(#[from] shoal_node::agent::AgentError),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Stuck(String),
}
