//! The transport's errors: one enum, with the file or address involved in the message.

use std::net::SocketAddr;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{0} already exists; refusing to overwrite a cluster CA")]
    Exists(PathBuf),
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidName {
        what: &'static str,
        value: String,
        reason: String,
    },
    #[error("generating a certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("deploy key: {0}")]
    DeployKey(#[from] shoal_bundle::Error),
    #[error("TLS configuration: {0}")]
    Tls(String),
    #[error("transport configuration: {0}")]
    Config(String),
    #[error("no tokio runtime: endpoints must be created inside one")]
    NoRuntime,
    #[error("UDP socket {addr}: {cause}")]
    Socket {
        addr: SocketAddr,
        cause: std::io::Error,
    },
    #[error("connecting to {addr}: {cause}")]
    Connect {
        addr: SocketAddr,
        cause: quinn::ConnectError,
    },
    #[error("handshake with {host} at {addr}: {cause}")]
    Handshake {
        addr: SocketAddr,
        host: String,
        cause: quinn::ConnectionError,
    },
    #[error("peer presented no usable certificate: {0}")]
    PeerCert(String),
    #[error("writing a frame: {0}")]
    Write(#[from] quinn::WriteError),
    #[error("reading a frame: {0}")]
    Read(#[from] quinn::ReadError),
    #[error("stream ended inside a frame: {got} of {expected} bytes")]
    Truncated { expected: usize, got: usize },
    #[error(transparent)]
    Proto(#[from] shoal_proto::ProtoError),
}

/// Attaches a path to an I/O error.
pub(crate) trait IoAt<T> {
    fn at(self, path: &std::path::Path) -> Result<T, NetError>;
}

impl<T> IoAt<T> for std::io::Result<T> {
    fn at(self, path: &std::path::Path) -> Result<T, NetError> {
        self.map_err(|source| NetError::Io {
            path: path.to_path_buf(),
            cause: source,
        })
    }
}
