//! Real QUIC on 127.0.0.1: cluster peers talk; hosts without this cluster's
//! certificate can neither connect nor serve; frames are bounded before allocation.

use shoal_net::quinn::crypto::rustls::QuicClientConfig;
use shoal_net::rustls::pki_types::pem::PemObject;
use shoal_net::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use shoal_net::{
    ALPN, Identity, NetError, PeerName, Tuning, cluster, connect, endpoint, peer_name, quinn,
    recv_msg, rustls, send_msg,
};
use shoal_proto::{Hello, MAX_CONTROL, MAX_PIECE, Msg, PROTOCOL_VERSION, ProtoError, Role};
use std::alloc::{GlobalAlloc, Layout, System};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tempfile::TempDir;
use tokio::time::timeout;

/// Records the largest single allocation, to show that a length prefix is never
/// trusted as an allocation size.
struct Tracking;
static LARGEST: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        LARGEST.fetch_max(l.size(), Ordering::Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LARGEST.fetch_max(new, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static ALLOC: Tracking = Tracking;

const LIMIT: Duration = Duration::from_secs(20);

fn local() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn new_cluster() -> TempDir {
    let d = tempfile::tempdir().unwrap();
    cluster::init(d.path()).unwrap();
    d
}

fn issue(c: &Path, host: &str, dc: &str) -> PathBuf {
    let out = c.join(format!("{host}.pem"));
    cluster::issue(c, host, dc, &out).unwrap();
    out
}

fn ident(c: &Path, host: &str, dc: &str) -> Identity {
    Identity::load(&issue(c, host, dc)).unwrap()
}

fn hello(host: &str) -> Msg {
    Msg::Hello(Hello {
        version: PROTOCOL_VERSION,
        role: Role::Agent,
        host: host.into(),
        dc: "dc1".into(),
        listen: None,
    })
}

/// A client configuration that trusts `ca` and presents the identity in `ident_file`
/// (or nothing), built by hand as an intruder would.
fn intruder_config(ca: &Path, ident_file: Option<&Path>) -> quinn::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(shoal_net::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots);
    let mut cfg = match ident_file {
        Some(f) => {
            let leaf = CertificateDer::pem_file_iter(f).unwrap().next().unwrap();
            let key = PrivateKeyDer::from_pem_file(f).unwrap();
            builder
                .with_client_auth_cert(vec![leaf.unwrap()], key)
                .unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = vec![ALPN.to_vec()];
    quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(cfg).unwrap()))
}

/// What a server saw from one incoming connection attempt.
#[derive(Debug)]
#[allow(dead_code)] // the fields are for the failure messages, read through Debug
enum Seen {
    HandshakeFailed(quinn::ConnectionError),
    NothingWithin,
    Connected,
    ReadMessage(Box<Msg>),
}

/// Serves one connection attempt on `ep` and reports whether a message got through.
fn serve_once(ep: quinn::Endpoint) -> tokio::task::JoinHandle<Seen> {
    tokio::spawn(async move {
        let Some(incoming) = ep.accept().await else {
            return Seen::NothingWithin;
        };
        let conn = match incoming.await {
            Ok(c) => c,
            Err(e) => return Seen::HandshakeFailed(e),
        };
        let Ok((_, mut recv)) = conn.accept_bi().await else {
            return Seen::Connected;
        };
        match recv_msg(&mut recv, MAX_CONTROL).await {
            Ok(Some(m)) => Seen::ReadMessage(Box::new(m)),
            _ => Seen::Connected,
        }
    })
}

/// Tries to connect with `cfg` and exchange a Hello; returns whether it worked.
async fn try_talk(ep: &quinn::Endpoint, cfg: quinn::ClientConfig, addr: SocketAddr) -> bool {
    let Ok(connecting) = ep.connect_with(cfg, addr, "a.test") else {
        return false;
    };
    let Ok(conn) = connecting.await else {
        return false;
    };
    // TLS 1.3 lets the client finish its handshake before the server has checked the
    // client's certificate, so a refusal may only show on the first stream.
    let Ok((mut send, mut recv)) = conn.open_bi().await else {
        return false;
    };
    if send_msg(&mut send, &hello("intruder")).await.is_err() {
        return false;
    }
    matches!(recv_msg(&mut recv, MAX_CONTROL).await, Ok(Some(_)))
}

/// A cluster and the endpoints of its hosts a.test (dc1) and b.test (dc2);
/// the cluster's directory must outlive them.
fn two_hosts() -> (TempDir, quinn::Endpoint, quinn::Endpoint) {
    two_hosts_with(&Tuning::default())
}

fn two_hosts_with(tuning: &Tuning) -> (TempDir, quinn::Endpoint, quinn::Endpoint) {
    let c = new_cluster();
    let a = ident(c.path(), "a.test", "dc1");
    let b = ident(c.path(), "b.test", "dc2");
    let ea = endpoint(&a, local(), tuning).unwrap();
    let eb = endpoint(&b, local(), tuning).unwrap();
    (c, ea, eb)
}

#[tokio::test]
async fn cluster_peers_exchange_hello_both_ways() {
    timeout(LIMIT, async {
        let (_c, ea, eb) = two_hosts();
        let addr = ea.local_addr().unwrap();

        let server = tokio::spawn(async move {
            let conn = ea.accept().await.unwrap().await.unwrap();
            let peer = peer_name(&conn).unwrap();
            let (mut send, mut recv) = conn.accept_bi().await.unwrap();
            let got = recv_msg(&mut recv, MAX_CONTROL).await.unwrap().unwrap();
            send_msg(&mut send, &hello("a.test")).await.unwrap();
            send.finish().unwrap();
            let end = recv_msg(&mut recv, MAX_CONTROL).await.unwrap();
            conn.closed().await;
            (peer, got, end)
        });

        let conn = connect(&eb, addr, "a.test").await.unwrap();
        assert_eq!(
            peer_name(&conn).unwrap(),
            PeerName {
                host: "a.test".into(),
                dc: "dc1".into()
            }
        );
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send_msg(&mut send, &hello("b.test")).await.unwrap();
        send.finish().unwrap();
        assert_eq!(
            recv_msg(&mut recv, MAX_CONTROL).await.unwrap(),
            Some(hello("a.test"))
        );
        // The server finished its side: a clean end between frames.
        assert_eq!(recv_msg(&mut recv, MAX_CONTROL).await.unwrap(), None);
        conn.close(0u32.into(), b"done");

        let (peer, got, end) = server.await.unwrap();
        assert_eq!(
            peer,
            PeerName {
                host: "b.test".into(),
                dc: "dc2".into()
            }
        );
        assert_eq!(got, hello("b.test"));
        assert_eq!(end, None);
        eb.wait_idle().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn client_with_foreign_certificate_is_refused() {
    timeout(LIMIT, async {
        let c = new_cluster();
        let other = new_cluster();
        let a = ident(c.path(), "a.test", "dc1");
        let ea = endpoint(&a, local(), &Tuning::default()).unwrap();
        let addr = ea.local_addr().unwrap();
        let server = serve_once(ea);

        // The intruder knows the cluster CA (it is public) but holds another CA's cert.
        let foreign = issue(other.path(), "b.test", "dc1");
        let cfg = intruder_config(&c.path().join("ca.crt"), Some(&foreign));
        let client = quinn::Endpoint::client(local()).unwrap();
        assert!(!try_talk(&client, cfg, addr).await);

        let seen = server.await.unwrap();
        assert!(matches!(seen, Seen::HandshakeFailed(_)), "{seen:?}");
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn client_without_certificate_is_refused() {
    timeout(LIMIT, async {
        let c = new_cluster();
        let a = ident(c.path(), "a.test", "dc1");
        let ea = endpoint(&a, local(), &Tuning::default()).unwrap();
        let addr = ea.local_addr().unwrap();
        let server = serve_once(ea);

        let cfg = intruder_config(&c.path().join("ca.crt"), None);
        let client = quinn::Endpoint::client(local()).unwrap();
        assert!(!try_talk(&client, cfg, addr).await);

        let seen = server.await.unwrap();
        assert!(matches!(seen, Seen::HandshakeFailed(_)), "{seen:?}");
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn server_with_foreign_certificate_or_wrong_name_is_refused() {
    timeout(LIMIT, async {
        let c = new_cluster();
        let other = new_cluster();
        let tuning = Tuning::default();
        let b = ident(c.path(), "b.test", "dc1");
        let eb = endpoint(&b, local(), &tuning).unwrap();

        // A server from another cluster, even under the expected name.
        let impostor = ident(other.path(), "a.test", "dc1");
        let ei = endpoint(&impostor, local(), &tuning).unwrap();
        let addr = ei.local_addr().unwrap();
        let server = serve_once(ei);
        let err = connect(&eb, addr, "a.test").await.unwrap_err();
        assert!(matches!(err, NetError::Handshake { .. }), "{err}");
        let seen = server.await.unwrap();
        assert!(matches!(seen, Seen::HandshakeFailed(_)), "{seen:?}");

        // A genuine cluster server reached under a name its certificate does not carry.
        let a = ident(c.path(), "a.test", "dc1");
        let ea = endpoint(&a, local(), &tuning).unwrap();
        let addr = ea.local_addr().unwrap();
        let server = serve_once(ea);
        let err = connect(&eb, addr, "c.test").await.unwrap_err();
        assert!(matches!(err, NetError::Handshake { .. }), "{err}");
        let seen = server.await.unwrap();
        assert!(matches!(seen, Seen::HandshakeFailed(_)), "{seen:?}");
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn recv_msg_refuses_oversized_garbled_and_truncated_frames() {
    timeout(LIMIT, async {
        let c = new_cluster();
        let tuning = Tuning::default();
        let ea = endpoint(&ident(c.path(), "a.test", "dc1"), local(), &tuning).unwrap();
        let eb = endpoint(&ident(c.path(), "b.test", "dc1"), local(), &tuning).unwrap();
        let addr = ea.local_addr().unwrap();
        let (client, server) = tokio::join!(connect(&eb, addr, "a.test"), async {
            ea.accept().await.unwrap().await.unwrap()
        });
        let client = client.unwrap();

        // Sends `bytes` on a fresh stream and reads it back through recv_msg.
        async fn case(
            client: &quinn::Connection,
            server: &quinn::Connection,
            bytes: &[u8],
            limit: usize,
        ) -> Result<Option<Msg>, NetError> {
            let mut send = client.open_uni().await.unwrap();
            send.write_all(bytes).await.unwrap();
            send.finish().unwrap();
            let mut recv = server.accept_uni().await.unwrap();
            recv_msg(&mut recv, limit).await
        }

        // A length far past the limit: refused from the prefix alone, nothing allocated.
        let before = LARGEST.load(Ordering::Relaxed);
        let huge = u32::MAX.to_be_bytes();
        let r = case(&client, &server, &huge, MAX_PIECE).await;
        assert!(
            matches!(r, Err(NetError::Proto(ProtoError::TooLarge(n, MAX_PIECE))) if n == u32::MAX as usize),
            "{r:?}"
        );
        let largest = LARGEST.load(Ordering::Relaxed);
        assert!(
            largest < 64 << 20,
            "an allocation of {largest} bytes (before: {before})"
        );

        // One byte over the limit is refused too.
        let over = (MAX_CONTROL as u32 + 1).to_be_bytes();
        let r = case(&client, &server, &over, MAX_CONTROL).await;
        assert!(
            matches!(r, Err(NetError::Proto(ProtoError::TooLarge(..)))),
            "{r:?}"
        );

        // A well-sized frame whose body is not a message.
        let r = case(&client, &server, &[0, 0, 0, 3, 0xff, 0xff, 0xff], MAX_CONTROL).await;
        assert!(
            matches!(r, Err(NetError::Proto(ProtoError::Malformed(_)))),
            "{r:?}"
        );

        // A valid message with trailing bytes inside its frame.
        let mut body = Msg::Ok.to_frame()[4..].to_vec();
        body.push(7);
        let mut framed = (body.len() as u32).to_be_bytes().to_vec();
        framed.extend_from_slice(&body);
        let r = case(&client, &server, &framed, MAX_CONTROL).await;
        assert!(
            matches!(r, Err(NetError::Proto(ProtoError::Malformed(_)))),
            "{r:?}"
        );

        // Ends inside the prefix and inside the body.
        let r = case(&client, &server, &[0, 0], MAX_CONTROL).await;
        assert!(
            matches!(
                r,
                Err(NetError::Truncated {
                    expected: 4,
                    got: 2
                })
            ),
            "{r:?}"
        );
        let r = case(&client, &server, &[0, 0, 0, 10, 1, 2, 3], MAX_CONTROL).await;
        assert!(
            matches!(
                r,
                Err(NetError::Truncated {
                    expected: 10,
                    got: 3
                })
            ),
            "{r:?}"
        );

        // An empty stream is a clean end, and a good frame still reads fine.
        assert!(matches!(
            case(&client, &server, &[], MAX_CONTROL).await,
            Ok(None)
        ));
        let r = case(&client, &server, &hello("b.test").to_frame(), MAX_CONTROL).await;
        assert_eq!(r.unwrap(), Some(hello("b.test")));
        client.close(0u32.into(), b"done");
    })
    .await
    .expect("timed out");
}

#[test]
fn tuning_covers_the_cross_datacenter_path() {
    let t = Tuning::for_path(125_000_000, Duration::from_millis(40));
    assert_eq!(
        Tuning::bdp(125_000_000, Duration::from_millis(40)),
        5_000_000
    );
    assert!(t.stream_window >= 5_000_000, "{t:?}");
    assert!(t.conn_window >= t.stream_window, "{t:?}");
    assert!(t.send_window >= 5_000_000, "{t:?}");
    assert!(t.max_streams >= 100, "{t:?}");
    assert!(t.keep_alive < t.idle_timeout / 2, "{t:?}");
    assert_eq!(Tuning::default(), t);
    t.transport().unwrap();
}

#[test]
fn sockets_get_larger_buffers() {
    use std::os::fd::AsFd;
    let want = 4 << 20;
    let s = shoal_net::bind_socket(local(), want).unwrap();
    // The kernel may cap the request at rmem_max without privileges; it must reach that.
    let cap = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .unwrap_or(want);
    let got = rustix::net::sockopt::socket_recv_buffer_size(s.as_fd()).unwrap() / 2;
    assert!(got >= want.min(cap), "SO_RCVBUF {got}, wanted {want}");
}

#[tokio::test]
async fn endpoint_outside_runtime_is_an_error() {
    let c = new_cluster();
    let a = ident(c.path(), "a.test", "dc1");
    let r = std::thread::spawn(move || endpoint(&a, local(), &Tuning::default()).err())
        .join()
        .unwrap();
    assert!(matches!(r, Some(NetError::NoRuntime)), "{r:?}");
}

/// Accepts one connection and echoes the messages of its first stream;
/// returns the connection's stats once the stream ends.
async fn echo_once(ep: quinn::Endpoint) -> quinn::ConnectionStats {
    let conn = ep.accept().await.unwrap().await.unwrap();
    let (mut send, mut recv) = conn.accept_bi().await.unwrap();
    while let Ok(Some(m)) = recv_msg(&mut recv, MAX_CONTROL).await {
        send_msg(&mut send, &m).await.unwrap();
    }
    let stats = conn.stats();
    conn.closed().await;
    stats
}

/// Also checks that each side asks the other, with QUIC's ACK-frequency
/// extension, to acknowledge less often (`Tuning::transport`).
#[tokio::test]
async fn a_connection_probes_the_path_mtu_once_and_asks_for_fewer_acks() {
    // Loopback carries any size, so the one probe, at 1452 bytes, succeeds.
    timeout(LIMIT, async {
        let (_c, ea, eb) = two_hosts();
        let addr = ea.local_addr().unwrap();
        let server = tokio::spawn(echo_once(ea));
        let conn = connect(&eb, addr, "a.test").await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        // Talk until the probe is answered (a few round trips on loopback).
        let mut mtu = 0;
        for _ in 0..200 {
            send_msg(&mut send, &hello("b.test")).await.unwrap();
            recv_msg(&mut recv, MAX_CONTROL).await.unwrap().unwrap();
            mtu = conn.stats().path.current_mtu;
            if mtu > 1200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stats = conn.stats().path;
        assert_eq!(mtu, 1452, "{stats:?}");
        assert_eq!(stats.sent_plpmtud_probes, 1, "{stats:?}");
        send.finish().unwrap();
        conn.close(0u32.into(), b"done");
        let theirs = server.await.unwrap();
        // The ACK_FREQUENCY frame is how the request travels (quinn sends
        // one once the handshake shows the peer supports it).
        for (side, s) in [("client", &conn.stats()), ("server", &theirs)] {
            assert!(s.frame_tx.ack_frequency >= 1, "{side} asked: {s:?}");
            assert!(s.frame_rx.ack_frequency >= 1, "{side} was asked: {s:?}");
        }
        eb.wait_idle().await;
    })
    .await
    .expect("timed out");
}

#[tokio::test]
async fn a_known_path_mtu_is_used_from_the_first_packet_without_a_probe() {
    // Loopback carries any size: below the probe's 1452, at it, and above
    // the 1472 bytes quinn accepts by default (jumbo frames).
    for known in [1200, 1452, 9000] {
        timeout(LIMIT, async {
            let (_c, ea, eb) = two_hosts_with(&Tuning::default().with_path_mtu(known));
            let addr = ea.local_addr().unwrap();
            let server = tokio::spawn(echo_once(ea));
            let conn = connect(&eb, addr, "a.test").await.unwrap();
            assert_eq!(conn.stats().path.current_mtu, known);
            let (mut send, mut recv) = conn.open_bi().await.unwrap();
            // Messages of several packets each: any probe would have gone out.
            let big = Msg::Have {
                id: shoal_bundle::hash::Hash([7; 32]),
                chunks: (0..30_000).step_by(3).collect(),
            };
            for _ in 0..20 {
                send_msg(&mut send, &big).await.unwrap();
                recv_msg(&mut recv, MAX_CONTROL).await.unwrap().unwrap();
            }
            let stats = conn.stats();
            assert_eq!(stats.path.current_mtu, known, "{stats:?}");
            assert_eq!(stats.path.sent_plpmtud_probes, 0, "{stats:?}");
            send.finish().unwrap();
            conn.close(0u32.into(), b"done");
            let theirs = server.await.unwrap().path;
            assert_eq!(theirs.sent_plpmtud_probes, 0, "{theirs:?}");
            assert_eq!(theirs.current_mtu, known, "{theirs:?}");
            eb.wait_idle().await;
        })
        .await
        .expect("timed out");
    }
}

/// Every packet carries the connection ID its receiver handed out; shoal's
/// are `CID_LEN` bytes, not quinn's 8. A relay between the two hosts reads
/// the source ID's length from each long header (the handshake's packets,
/// where each side names its own ID), both ways.
#[tokio::test]
async fn both_sides_hand_out_short_connection_ids() {
    timeout(LIMIT, async {
        let (_c, ea, eb) = two_hosts();
        let server = ea.local_addr().unwrap();
        let relay = tokio::net::UdpSocket::bind(local()).await.unwrap();
        let relay_addr = relay.local_addr().unwrap();
        let echo = tokio::spawn(echo_once(ea));
        // (from the server, source ID length) of each long-header datagram.
        let seen = Arc::new(std::sync::Mutex::new(Vec::<(bool, usize)>::new()));
        let relaying = tokio::spawn({
            let seen = seen.clone();
            async move {
                let mut client = None;
                let mut buf = vec![0u8; 65_536];
                loop {
                    let (n, from) = relay.recv_from(&mut buf).await.unwrap();
                    let d = &buf[..n];
                    // Long header: form bit, version (4), DCID length, DCID,
                    // SCID length.
                    if d[0] & 0x80 != 0
                        && let Some(&dcid) = d.get(5)
                        && let Some(&scid) = d.get(6 + dcid as usize)
                    {
                        seen.lock().unwrap().push((from == server, scid as usize));
                    }
                    let to = if from == server {
                        client.expect("the client speaks first")
                    } else {
                        client = Some(from);
                        server
                    };
                    relay.send_to(d, to).await.unwrap();
                }
            }
        });
        let conn = connect(&eb, relay_addr, "a.test").await.unwrap();
        let (mut send, mut recv) = conn.open_bi().await.unwrap();
        send_msg(&mut send, &hello("b.test")).await.unwrap();
        recv_msg(&mut recv, MAX_CONTROL).await.unwrap().unwrap();
        send.finish().unwrap();
        conn.close(0u32.into(), b"done");
        echo.await.unwrap();
        relaying.abort();
        let seen = seen.lock().unwrap().clone();
        for side in [false, true] {
            assert!(seen.iter().any(|s| s.0 == side), "server {side}: {seen:?}");
        }
        assert!(seen.iter().all(|s| s.1 == shoal_net::CID_LEN), "{seen:?}");
        eb.wait_idle().await;
    })
    .await
    .expect("timed out");
}
