//! QUIC endpoints that both accept and make connections, and `connect`.
//!
//! Every endpoint serves with the host's certificate and requires one from each
//! client; its default client configuration presents the same certificate and accepts
//! only servers whose certificate chains to the cluster CA and names the host dialled.

use crate::error::NetError;
use crate::identity::Identity;
use crate::tuning::Tuning;
use quinn_proto::RandomConnectionIdGenerator;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::Arc;

/// Binds `listen` and returns an endpoint for `id`. Must be called inside a tokio
/// runtime. The UDP socket buffers are raised to `tuning.socket_buffer` first: the
/// Linux default holds fewer than 100 QUIC packets, which drops bursts at 1 Gbit/s.
pub fn endpoint(
    id: &Identity,
    listen: SocketAddr,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, NetError> {
    let sock_err = |source| NetError::Socket {
        addr: listen,
        cause: source,
    };
    let runtime = quinn::default_runtime().ok_or(NetError::NoRuntime)?;
    let socket = bind_socket(listen, tuning.socket_buffer)?;
    let socket = runtime.wrap_udp_socket(socket).map_err(sock_err)?;
    endpoint_with_socket(id, socket, tuning)
}

/// Binds a UDP socket on `listen` with SO_RCVBUF and SO_SNDBUF raised to `buffer`
/// bytes where the kernel allows (see [`endpoint`]).
pub fn bind_socket(listen: SocketAddr, buffer: usize) -> Result<UdpSocket, NetError> {
    let socket = UdpSocket::bind(listen).map_err(|source| NetError::Socket {
        addr: listen,
        cause: source,
    })?;
    raise_buffers(&socket, buffer);
    Ok(socket)
}

/// quinn's default largest UDP payload accepted from peers.
const QUINN_MAX_UDP_PAYLOAD: u16 = 1472;

/// Bytes of the connection IDs this endpoint hands out, which every packet
/// sent to it carries: 4 instead of quinn's 8, 0.3% of a full packet. A
/// host holds hundreds of connections, not billions, and quinn draws again
/// on a clash; nothing here routes by connection ID (no load balancer
/// between hosts).
pub const CID_LEN: usize = 4;

/// An endpoint for `id` over a caller-supplied socket (a simulated network, say).
/// Must be called inside a tokio runtime.
pub fn endpoint_with_socket(
    id: &Identity,
    socket: Arc<dyn quinn::AsyncUdpSocket>,
    tuning: &Tuning,
) -> Result<quinn::Endpoint, NetError> {
    let runtime = quinn::default_runtime().ok_or(NetError::NoRuntime)?;
    let transport = Arc::new(tuning.transport()?);
    let mut server = quinn::ServerConfig::with_crypto(id.server_crypto());
    server.transport_config(transport.clone());
    let mut client = quinn::ClientConfig::new(id.client_crypto());
    client.transport_config(transport);
    let addr = socket.local_addr().ok();
    let mut config = quinn::EndpointConfig::default();
    config.cid_generator(|| Box::new(RandomConnectionIdGenerator::new(CID_LEN)));
    // What peers may send us: quinn's default is 1472 bytes (a 1500-byte
    // Ethernet path over IPv4), and a peer's packets never exceed it.
    if let Some(m) = tuning.path_mtu.filter(|&m| m > QUINN_MAX_UDP_PAYLOAD) {
        config
            .max_udp_payload_size(m)
            .map_err(|e| NetError::Config(format!("path MTU {m}: {e}")))?;
    }
    let mut ep = quinn::Endpoint::new_with_abstract_socket(config, Some(server), socket, runtime)
        .map_err(|source| NetError::Socket {
        addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
        cause: source,
    })?;
    ep.set_default_client_config(client);
    Ok(ep)
}

/// Connects to `addr`, requiring the server's certificate to name `server_host`.
/// Gives up after the idle timeout if the peer never answers.
pub async fn connect(
    ep: &quinn::Endpoint,
    addr: SocketAddr,
    server_host: &str,
) -> Result<quinn::Connection, NetError> {
    let connecting = ep
        .connect(addr, server_host)
        .map_err(|source| NetError::Connect {
            addr,
            cause: source,
        })?;
    connecting.await.map_err(|source| NetError::Handshake {
        addr,
        host: server_host.to_string(),
        cause: source,
    })
}

/// Asks for `want` bytes of SO_RCVBUF and SO_SNDBUF. Linux silently caps the request at
/// net.core.{r,w}mem_max; then try the privileged variant, and if the buffer is still
/// short, warn (a small buffer costs speed, not correctness).
fn raise_buffers(socket: &UdpSocket, want: usize) {
    use rustix::net::sockopt;
    let fd = socket.as_fd();
    raise_one(
        "SO_RCVBUF",
        "net.core.rmem_max",
        want,
        |v| sockopt::set_socket_recv_buffer_size(fd, v),
        |v| sockopt::set_socket_recv_buffer_size_force(fd, v),
        || sockopt::socket_recv_buffer_size(fd),
    );
    raise_one(
        "SO_SNDBUF",
        "net.core.wmem_max",
        want,
        |v| sockopt::set_socket_send_buffer_size(fd, v),
        |v| sockopt::set_socket_send_buffer_size_force(fd, v),
        || sockopt::socket_send_buffer_size(fd),
    );
}

fn raise_one(
    opt: &str,
    sysctl: &str,
    want: usize,
    set: impl Fn(usize) -> rustix::io::Result<()>,
    force: impl Fn(usize) -> rustix::io::Result<()>,
    get: impl Fn() -> rustix::io::Result<usize>,
) {
    // Linux stores and reports twice what it granted (it counts its own overhead).
    let factor = if cfg!(target_os = "linux") { 2 } else { 1 };
    let granted = || get().map(|got| got / factor).unwrap_or(0);
    let enough = || granted() >= want;
    if let Err(e) = set(want) {
        tracing::debug!("{opt} {want}: {e}");
    }
    if enough() {
        return;
    }
    // Succeeds only with CAP_NET_ADMIN; otherwise the warning below says what to do.
    let _ = force(want);
    if !enough() {
        tracing::warn!(
            "{opt} is {} bytes, wanted {want}; raise {sysctl} for full speed on long paths",
            granted()
        );
    }
}

/// The address an endpoint is bound to (the port the OS chose when `configured`
/// asked for port 0).
pub fn local_addr(ep: &quinn::Endpoint, configured: SocketAddr) -> Result<SocketAddr, NetError> {
    ep.local_addr().map_err(|cause| NetError::Socket {
        addr: configured,
        cause,
    })
}
