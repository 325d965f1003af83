//! A command-line client's side of the protocol (`shoal status`, `deploy`,
//! `rollback`, `audit`): a QUIC endpoint with a cluster identity that says
//! Hello as a `Client` and sends one request per stream, to the tracker or
//! straight to agents.

use crate::node::NodeError;
use shoal_net::{Identity, Tuning};
use shoal_proto::{Hello, Msg, Role};
use std::net::SocketAddr;
use std::time::Duration;

pub struct Client {
    endpoint: quinn::Endpoint,
    host: String,
}

/// One connection to a tracker or an agent.
pub struct Conn {
    conn: quinn::Connection,
    pub host: String,
}

impl Client {
    /// A client on an ephemeral UDP port of the address family of `toward`.
    pub fn new(identity: &Identity, toward: SocketAddr) -> Result<Client, NodeError> {
        let bind: SocketAddr = if toward.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let endpoint = shoal_net::endpoint(identity, bind, &Tuning::default())?;
        Ok(Client::on(endpoint, &identity.host))
    }

    /// A client on an endpoint the caller made (netsim's simulated network).
    pub fn on(endpoint: quinn::Endpoint, host: &str) -> Client {
        Client {
            endpoint,
            host: host.to_string(),
        }
    }

    /// Connects and exchanges Hello.
    pub async fn connect(&self, addr: SocketAddr, host: &str) -> Result<Conn, NodeError> {
        let conn = shoal_net::connect(&self.endpoint, addr, host).await?;
        let (mut send, mut recv) = conn.open_bi().await?;
        let hello = Hello {
            version: shoal_proto::PROTOCOL_VERSION,
            role: Role::Client,
            host: self.host.clone(),
            dc: String::new(),
            listen: None,
        };
        shoal_net::send_msg(&mut send, &Msg::Hello(hello)).await?;
        let answer = shoal_net::recv_msg(&mut recv, shoal_proto::MAX_CONTROL).await?;
        shoal_proto::check_hello(answer.unwrap_or(Msg::Ok))?;
        Ok(Conn {
            conn,
            host: host.to_string(),
        })
    }

    pub async fn close(&self) {
        self.endpoint.close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

impl Conn {
    /// One request and its answer, within `deadline`. An `Error` answer becomes
    /// an error naming the host.
    pub async fn request(
        &self,
        m: &Msg,
        limit: usize,
        deadline: Duration,
    ) -> Result<Msg, NodeError> {
        let exchange = async {
            let (mut send, mut recv) = self.conn.open_bi().await?;
            shoal_net::send_msg(&mut send, m).await?;
            let _ = send.finish();
            shoal_net::recv_msg(&mut recv, limit)
                .await
                .map_err(NodeError::from)
        };
        let peer = |message: String| NodeError::Peer {
            host: self.host.clone(),
            message,
        };
        match tokio::time::timeout(deadline, exchange).await {
            Err(_) => Err(NodeError::Timeout {
                host: self.host.clone(),
                what: format!("{} in {deadline:?}", m.name()),
            }),
            Ok(Err(e)) => Err(e),
            Ok(Ok(None)) => Err(peer(format!(
                "closed the stream without answering {}",
                m.name()
            ))),
            Ok(Ok(Some(Msg::Error { message }))) => Err(peer(message)),
            Ok(Ok(Some(reply))) => Ok(reply),
        }
    }

    pub fn close(&self) {
        self.conn.close(0u32.into(), b"done");
    }
}

/// Any other answer than the one asked for.
pub fn unexpected(host: &str, asked: &str, got: &Msg) -> NodeError {
    NodeError::Peer {
        host: host.to_string(),
        message: format!("answered {asked} with {}", got.name()),
    }
}
