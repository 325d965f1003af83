//! A node facing broken or hostile peers over real QUIC: oversized, garbled and
//! out-of-protocol messages close that connection and nothing else; a
//! well-behaved peer is served before and after.

use shoal_bundle::assemble::InstallOptions;
use shoal_bundle::pack::{PackOptions, pack};
use shoal_bundle::signing::open_signed;
use shoal_bundle::{ChunkStore, Hash};
use shoal_net::{Identity, Tuning, recv_msg, send_msg};
use shoal_node::{Node, NodeOptions};
use shoal_proto::{Hello, MAX_PIECE, Msg, PROTOCOL_VERSION, Role};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    _dir: tempfile::TempDir,
    node: Arc<Node>,
    client: Identity,
    id: Hash,
    /// The release, when [`setup_unknown`] left it out of the node.
    withheld: Option<shoal_bundle::signing::Verified>,
}

async fn setup() -> Setup {
    let mut s = setup_unknown().await;
    s.node.add_complete(s.withheld.take().expect("withheld"));
    s
}

/// A node that does not know the release yet: the test adds it.
async fn setup_unknown() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let cluster = d.join("cluster");
    shoal_net::cluster::init(&cluster).unwrap();
    for h in ["node", "client"] {
        shoal_net::cluster::issue(&cluster, h, "dc1", &d.join(h)).unwrap();
    }
    let key = shoal_bundle::signing::DeployKey::load(&cluster.join("deploy.key")).unwrap();
    let src = d.join("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("a"), "hello ".repeat(10_000)).unwrap();
    let store = ChunkStore::open(d.join("store")).unwrap();
    pack(&src, &store, &key, &PackOptions::new("v1"), &|_| {}).unwrap();
    let release = open_signed(
        &std::fs::read(store.manifest_path("v1")).unwrap(),
        &[key.public()],
    )
    .unwrap();
    let id = release.id;
    let identity = Identity::load(&d.join("node")).unwrap();
    let ep = shoal_net::endpoint(
        &identity,
        "127.0.0.1:0".parse().unwrap(),
        &Tuning::default(),
    )
    .unwrap();
    let node = Node::start(options(store, key.public()), ep, None);
    Setup {
        client: Identity::load(&d.join("client")).unwrap(),
        _dir: dir,
        node,
        id,
        withheld: Some(release),
    }
}

fn options(store: ChunkStore, key: shoal_bundle::signing::TrustedKey) -> NodeOptions {
    NodeOptions {
        host: "node".into(),
        dc: "dc1".into(),
        role: Role::Agent,
        root: None,
        store,
        trusted: vec![key],
        advertise: None,
        auto_activate: false,
        upload_limit: 0,
        download_limit: 0,
        upload_slots: 4,
        link_bandwidth: 0,
        install: InstallOptions::default(),
        swarm: Default::default(),
        request_timeout: Duration::from_secs(5),
        fault_corrupt_uploads: false,
    }
}

/// Connects as `client` and says Hello; returns the connection and its control stream.
async fn hello(s: &Setup) -> (quinn::Connection, quinn::SendStream, quinn::RecvStream) {
    let ep = shoal_net::endpoint(
        &s.client,
        "127.0.0.1:0".parse().unwrap(),
        &Tuning::default(),
    )
    .unwrap();
    let addr = s.node.endpoint.local_addr().unwrap();
    let conn = shoal_net::connect(&ep, addr, "node").await.unwrap();
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let h = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Agent,
        host: "client".into(),
        dc: "dc1".into(),
        listen: None,
    };
    send_msg(&mut send, &Msg::Hello(h)).await.unwrap();
    let answer = recv_msg(&mut recv, 1 << 16).await.unwrap();
    assert!(matches!(answer, Some(Msg::Hello(_))));
    (conn, send, recv)
}

/// A well-behaved request for chunk 0 succeeds.
async fn fetch_ok(s: &Setup) {
    let (conn, _send, _recv) = hello(s).await;
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send_msg(&mut send, &Msg::Request { id: s.id, chunk: 0 })
        .await
        .unwrap();
    let _ = send.finish();
    let reply = recv_msg(&mut recv, MAX_PIECE).await.unwrap();
    assert!(
        matches!(reply, Some(Msg::Piece { chunk: 0, .. })),
        "{reply:?}"
    );
}

async fn expect_closed(conn: &quinn::Connection, what: &str) {
    let closed = tokio::time::timeout(Duration::from_secs(5), conn.closed()).await;
    assert!(
        closed.is_ok(),
        "{what}: the node did not close the connection"
    );
}

#[tokio::test]
async fn broken_peers_are_cut_off_and_the_node_keeps_serving() {
    let s = setup().await;
    fetch_ok(&s).await;

    // A frame announcing 4 GiB on the control stream.
    let (conn, mut send, _recv) = hello(&s).await;
    send.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    expect_closed(&conn, "oversized frame").await;

    // A body that is not a message.
    let (conn, mut send, _recv) = hello(&s).await;
    send.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    expect_closed(&conn, "garbled frame").await;

    // A valid message that has no business on the control stream.
    let (conn, mut send, _recv) = hello(&s).await;
    send_msg(&mut send, &Msg::GetFleet).await.unwrap();
    expect_closed(&conn, "out-of-protocol control message").await;

    // A tracker request to a node that is no tracker, on a request stream.
    let (conn, _send, _recv) = hello(&s).await;
    let (mut rs, _rr) = conn.open_bi().await.unwrap();
    send_msg(&mut rs, &Msg::GetFleet).await.unwrap();
    expect_closed(&conn, "tracker request to an agent").await;

    // A bitfield of the wrong length for a known release.
    let (conn, mut send, _recv) = hello(&s).await;
    send_msg(
        &mut send,
        &Msg::Bitfield {
            id: s.id,
            bits: vec![0; 4096],
        },
    )
    .await
    .unwrap();
    expect_closed(&conn, "bitfield of the wrong length").await;

    // Asking for a chunk the node does not have is answered, not punished.
    let (conn, _send, _recv) = hello(&s).await;
    let (mut rs, mut rr) = conn.open_bi().await.unwrap();
    send_msg(
        &mut rs,
        &Msg::Request {
            id: Hash::of(b"unknown"),
            chunk: 0,
        },
    )
    .await
    .unwrap();
    let _ = rs.finish();
    assert!(matches!(
        recv_msg(&mut rr, MAX_PIECE).await.unwrap(),
        Some(Msg::Reject { .. })
    ));

    // Still serving.
    fetch_ok(&s).await;
}

#[tokio::test]
async fn hello_must_name_the_certificate_holder() {
    let s = setup().await;
    let ep = shoal_net::endpoint(
        &s.client,
        "127.0.0.1:0".parse().unwrap(),
        &Tuning::default(),
    )
    .unwrap();
    let conn = shoal_net::connect(&ep, s.node.endpoint.local_addr().unwrap(), "node")
        .await
        .unwrap();
    let (mut send, _recv) = conn.open_bi().await.unwrap();
    let h = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Seed,
        host: "somebody-else".into(),
        dc: "dc9".into(),
        listen: None,
    };
    send_msg(&mut send, &Msg::Hello(h)).await.unwrap();
    expect_closed(&conn, "hello with another host's name").await;
    assert_eq!(s.node.peer_count(), 0);
}

/// Asks the node for the release's manifest on a new stream.
async fn ask_manifest(conn: &quinn::Connection, id: Hash) -> Option<Msg> {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    send_msg(&mut send, &Msg::GetManifest { id }).await.unwrap();
    let _ = send.finish();
    recv_msg(&mut recv, shoal_proto::MAX_MANIFEST)
        .await
        .unwrap()
}

/// A host below this one in the manifest tree asks before this host has the
/// manifest: the request is held and answered as soon as the release becomes
/// known here, not refused; one for a release that never comes is refused
/// after the bounded wait, and the node goes on serving.
#[tokio::test]
async fn a_manifest_asked_for_early_is_answered_once_it_arrives() {
    let mut s = setup_unknown().await;
    let (conn, _send, _recv) = hello(&s).await;
    let asked = tokio::time::Instant::now();
    let early = tokio::spawn({
        let conn = conn.clone();
        let id = s.id;
        async move { ask_manifest(&conn, id).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !early.is_finished(),
        "answered before the release was known"
    );
    s.node.add_complete(s.withheld.take().unwrap());
    let reply = early.await.unwrap();
    let took = asked.elapsed();
    assert!(
        matches!(
            reply,
            Some(Msg::Manifest { .. } | Msg::ManifestCompressed { .. })
        ),
        "{reply:?}"
    );
    assert!(took < Duration::from_secs(1), "held {took:?}");

    let never = Hash([7; 32]);
    let asked = tokio::time::Instant::now();
    let reply = ask_manifest(&conn, never).await;
    let took = asked.elapsed();
    assert!(matches!(reply, Some(Msg::Error { .. })), "{reply:?}");
    assert!(
        took >= Duration::from_millis(1500) && took < Duration::from_secs(4),
        "refused after {took:?}"
    );
    fetch_ok(&s).await;
}
