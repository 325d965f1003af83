//! Writes the fuzz targets' seed corpora (`fuzz/corpus/<target>/`): real
//! encodings of every message kind, a packed manifest and its signed envelope,
//! chunks, and paths good and bad, so the fuzzers start from valid inputs.
//!
//! cargo run -p shoal-proto --example fuzz_seeds -- fuzz/corpus

use shoal_bundle::ChunkStore;
use shoal_bundle::pack::{PackOptions, pack};
use shoal_bundle::signing::DeployKey;
use shoal_proto::*;
use std::path::Path;

fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("corpus dir");
    std::fs::write(d.join(name), bytes).expect("seed file");
}

fn main() {
    let out = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fuzz/corpus".into());
    let out = Path::new(&out);
    let tmp = tempfile::tempdir().expect("temp dir");
    let tree = tmp.path().join("tree");
    std::fs::create_dir_all(tree.join("bin")).unwrap();
    std::fs::write(tree.join("bin/app"), b"#!/bin/sh\necho hello\n").unwrap();
    std::fs::write(tree.join("index.html"), "<p>hi</p>\n".repeat(50)).unwrap();
    std::os::unix::fs::symlink("../shared/config", tree.join("config")).unwrap();
    let store = ChunkStore::open(tmp.path().join("store")).unwrap();
    let key = DeployKey::generate().unwrap();
    pack(&tree, &store, &key, &PackOptions::new("v1"), &|_| {}).unwrap();
    let envelope = std::fs::read(store.manifest_path("v1")).unwrap();
    let v = shoal_bundle::signing::open_signed(&envelope, &[key.public()]).unwrap();
    put(out, "envelope", "v1", &envelope);
    put(out, "manifest", "v1", &v.manifest.encode());

    for (i, c) in v.manifest.chunks.iter().enumerate() {
        let compressed = store.read_compressed(c).unwrap();
        let len = c.len.to_be_bytes();
        let mut seed = vec![len[1], len[2], len[3], 0];
        seed.extend_from_slice(&compressed);
        put(out, "chunk", &format!("chunk{i}"), &seed);
    }
    let bomb = zstd::bulk::compress(&vec![0u8; 1 << 20], 19).unwrap();
    let mut seed = vec![0, 0, 16, 0];
    seed.extend_from_slice(&bomb);
    put(out, "chunk", "bomb", &seed);

    for (i, p) in [
        "index.html",
        "a/b/c",
        "../etc/passwd",
        "/abs",
        "a//b",
        "a/./b",
        "a/..",
        "ok/name with space",
        "dir/\u{e9}t\u{e9}",
    ]
    .iter()
    .enumerate()
    {
        put(out, "path", &format!("path{i}"), p.as_bytes());
    }

    let id = v.id;
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Agent,
        host: "web-01".into(),
        dc: "fra".into(),
        listen: Some("10.0.0.5:7401".into()),
    };
    let status = HostStatus {
        staged: vec!["v1".into()],
        current: Some("v1".into()),
        transfer: Some(Transfer {
            tag: "v1".into(),
            chunks_have: 3,
            chunks_total: 9,
            bytes_down: 100,
            bytes_up: 10,
            bytes_down_cross_dc: 50,
        }),
        busy: Some("activating v2".into()),
        ..Default::default()
    };
    let order = Order {
        host: "web-01".into(),
        action: Action::Activate {
            tag: "v1".into(),
            id,
            restart: Restart::Graceful,
            drain_ms: 100,
            abandon: None,
        },
        rollout: "r1".into(),
        issued_unix: 1,
        expires_unix: 2,
        nonce: 3,
    };
    let claim = LockClaim {
        token: 9,
        holder: "me@deploy".into(),
        purpose: "deploy v1".into(),
        ttl_s: 60,
        issued_unix: 1,
    };
    put(out, "wire", "order", &order.encode());
    put(out, "wire", "claim", &claim.encode());
    let msgs = vec![
        Msg::Hello(hello),
        Msg::Announce {
            signed: envelope.clone(),
        },
        Msg::GetManifest { id },
        Msg::GetPeers { id },
        Msg::Peers {
            id,
            peers: vec![PeerInfo {
                host: "web-02".into(),
                dc: "fra".into(),
                role: Role::Agent,
                addr: "10.0.0.6:7401".into(),
            }],
            crossers: vec!["web-02".into()],
        },
        Msg::Status(Box::new(status.clone())),
        Msg::GetFleet,
        Msg::Fleet(Box::new(FleetState {
            hosts: vec![HostReport {
                host: "web-01".into(),
                dc: "fra".into(),
                role: Role::Agent,
                addr: None,
                last_seen_s: 1,
                status,
            }],
            target: Some("v1".into()),
            ..Default::default()
        })),
        Msg::Bitfield {
            id,
            bits: vec![0b1010_0000],
        },
        Msg::Have {
            id,
            chunks: vec![3, 4],
        },
        Msg::Request { id, chunk: 3 },
        Msg::Piece {
            id,
            chunk: 0,
            data: vec![1, 2, 3],
        },
        Msg::Reject { id, chunk: 1 },
        Msg::Error {
            message: "no".into(),
        },
        Msg::Ok,
        Msg::Order {
            order: order.encode(),
            key: [1; 32],
            signature: vec![2; 64],
        },
        Msg::GetLog { last: 10 },
        Msg::Audit,
        Msg::Progress {
            token: 1,
            progress: Box::new(RolloutProgress {
                batches: vec![vec!["web-01".into()]],
                current: Some(0),
                ..Default::default()
            }),
        },
        Msg::RequestPatch {
            id,
            chunk: 3,
            base: id,
            base_len: 4096,
        },
        Msg::Patch {
            id,
            chunk: 3,
            data: vec![0x28, 0xb5, 0x2f, 0xfd],
        },
        Msg::GetManifestPatch { id, base: id },
        Msg::ManifestPatch {
            id,
            base: id,
            patch: vec![0x28, 0xb5, 0x2f, 0xfd],
        },
    ];
    for (i, m) in msgs.iter().enumerate() {
        put(
            out,
            "wire",
            &format!("{i:02}-{}", m.name()),
            &m.to_frame()[4..],
        );
    }
    println!("seeds written under {}", out.display());
}
