//! Pack then install gives back the same tree: generated trees of nested and empty
//! directories, empty, tiny, chunk-sharing and chunk-spanning files, executable bits,
//! symlinks of every sort and names beyond ASCII. Packing is canonical, unchanged
//! files of a later release are hard-linked, and names shoal cannot represent are
//! refused.

mod common;

use common::{Fixture, make_executable, snapshot, write_tree};
use proptest::collection::{btree_map, vec};
use proptest::prelude::*;
use shoal_bundle::Error;
use shoal_bundle::activate::activate;
use shoal_bundle::assemble::load_from_store;
use shoal_bundle::audit::audit_release;
use shoal_bundle::pack::{PackOptions, pack};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;

#[derive(Clone, Debug)]
enum Body {
    Bytes(Vec<u8>),
    /// Incompressible bytes drawn from a seed (cheap to generate in bulk).
    Random {
        seed: u64,
        len: usize,
    },
    Repeat {
        byte: u8,
        len: usize,
    },
}

impl Body {
    fn render(&self) -> Vec<u8> {
        match self {
            Body::Bytes(b) => b.clone(),
            Body::Random { seed, len } => {
                let mut out = vec![0; *len];
                blake3::Hasher::new()
                    .update(&seed.to_le_bytes())
                    .finalize_xof()
                    .fill(&mut out);
                out
            }
            Body::Repeat { byte, len } => vec![*byte; *len],
        }
    }
}

#[derive(Clone, Debug)]
enum Node {
    File { body: Body, exec: bool },
    Dir(BTreeMap<String, Node>),
    Link(String),
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z0-9_.-]{1,8}",
        // Names that sort around '/' ("a-b" and "a.b" fall between "a" and "a/x"),
        // unicode, and whitespace.
        2 => prop::sample::select(vec![
            "a", "a-b", "a.b", "a b", "a+", "a0", "b", "-", "...", ".hidden", "é", "e\u{301}",
            "日本語", "🦀", "Ωmega", "x y z", "new\nline", "tab\there", "ß",
        ])
        .prop_map(String::from),
        1 => "[a-zé日ß🦀 .+-]{1,6}",
    ]
    .prop_filter("not . or ..", |n| n != "." && n != "..")
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => Just(Body::Bytes(vec![])),
        6 => vec(any::<u8>(), 1..100).prop_map(Body::Bytes),
        2 => (any::<u64>(), 100usize..20_000).prop_map(|(seed, len)| Body::Random { seed, len }),
        // More than 200 KiB: spans several chunks.
        1 => (any::<u64>(), 200_000usize..700_000)
            .prop_map(|(seed, len)| Body::Random { seed, len }),
        1 => (any::<u8>(), 1usize..300_000).prop_map(|(byte, len)| Body::Repeat { byte, len }),
    ]
}

fn link_target() -> impl Strategy<Value = String> {
    prop_oneof![
        // Relative, usually dangling, sometimes leaving the release.
        "(\\.\\./){0,3}[a-zé]{1,8}(/[a-z]{1,5}){0,2}",
        // Absolute, to outside the release.
        "/[a-z]{1,8}(/[a-z0-9]{1,8}){0,2}",
        Just("/etc/hostname".to_string()),
        // A sibling's name: sometimes an entry of the tree.
        name(),
        Just(".".to_string()),
        Just("..".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Node> {
    prop_oneof![
        6 => (body(), any::<bool>()).prop_map(|(body, exec)| Node::File { body, exec }),
        2 => link_target().prop_map(Node::Link),
        1 => Just(Node::Dir(BTreeMap::new())),
    ]
}

/// A tree, plus a directory of many tiny files that share chunks.
fn tree() -> impl Strategy<Value = BTreeMap<String, Node>> {
    let node = leaf().prop_recursive(4, 64, 8, |inner| {
        btree_map(name(), inner, 0..8).prop_map(Node::Dir)
    });
    (
        btree_map(name(), node, 0..10),
        vec((vec(any::<u8>(), 0..40), any::<bool>()), 0..300),
    )
        .prop_map(|(mut top, tiny)| {
            if !tiny.is_empty() {
                let files = tiny
                    .into_iter()
                    .enumerate()
                    .map(|(i, (b, exec))| {
                        let node = Node::File {
                            body: Body::Bytes(b),
                            exec,
                        };
                        (format!("t{i:04}"), node)
                    })
                    .collect();
                top.insert("many tiny".to_string(), Node::Dir(files));
            }
            top
        })
}

fn write_nodes(dir: &Path, nodes: &BTreeMap<String, Node>) {
    for (name, node) in nodes {
        let p = dir.join(name);
        match node {
            Node::File { body, exec } => {
                fs::write(&p, body.render()).unwrap();
                let mode = if *exec { 0o755 } else { 0o644 };
                fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
            }
            Node::Dir(children) => {
                fs::create_dir(&p).unwrap();
                write_nodes(&p, children);
            }
            Node::Link(target) => symlink(target, &p).unwrap(),
        }
    }
}

fn non_empty_files(nodes: &BTreeMap<String, Node>) -> u64 {
    nodes
        .values()
        .map(|n| match n {
            Node::File { body, .. } => u64::from(!body.render().is_empty()),
            Node::Dir(children) => non_empty_files(children),
            Node::Link(_) => 0,
        })
        .sum()
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn pack_install_round_trip(tree in tree()) {
        let fx = Fixture::new();
        let src = fx.src("tree");
        write_nodes(&src, &tree);
        let want = snapshot(&src);

        let packed = fx.pack(&src, "v1");
        let installed = fx.install("v1").unwrap();
        prop_assert_eq!(&installed.id, &packed.id);
        prop_assert_eq!(installed.files, packed.files);
        prop_assert_eq!(installed.bytes, packed.bytes);
        let got = snapshot(&fx.root.release_dir("v1"));
        prop_assert!(got == want, "installed tree differs from the source");
        prop_assert!(activate(&fx.root, "v1").unwrap());
        let audit = audit_release(&fx.root, None).unwrap();
        prop_assert!(audit.is_clean(), "audit: {:?}", audit);
        prop_assert_eq!(audit.entries_checked, want.len() as u64);
        prop_assert_eq!(audit.bytes_hashed, packed.bytes);

        // Canonical: packing again gives the same release and stores nothing new.
        let again = fx.pack(&src, "v1");
        prop_assert_eq!(&again.id, &packed.id);
        prop_assert_eq!(again.new_chunks, 0);

        // The same tree under another tag links every non-empty file from v1.
        fx.pack(&src, "v2");
        let second = fx.install("v2").unwrap();
        prop_assert_eq!(second.files_linked, non_empty_files(&tree));
        prop_assert_eq!(second.chunks_read, 0);
        prop_assert_eq!(second.bytes_written, 0);
        prop_assert!(snapshot(&fx.root.release_dir("v2")) == want);
        prop_assert!(audit_release(&fx.root, Some("v2")).unwrap().is_clean());
        prop_assert!(snapshot(&fx.root.release_dir("v1")) == want);
    }
}

#[test]
fn non_utf8_names_are_refused() {
    let fx = Fixture::new();
    let src = fx.src("bad");
    write_tree(&src, &[("ok.txt", b"fine"), ("sub/also-ok", b"fine")]);
    let bad = OsStr::from_bytes(b"bad\xff");
    fs::write(src.join("sub").join(bad), b"x").unwrap();
    let opts = PackOptions::new("v1");
    // The same refusal every time, and nothing written to the store.
    for _ in 0..2 {
        let err = pack(&src, &fx.store, &fx.key, &opts, &|_| {}).unwrap_err();
        match &err {
            Error::Unpackable { path, reason } => {
                assert_eq!(path.file_name(), Some(bad), "{err}");
                assert!(reason.contains("UTF-8"), "{err}");
            }
            other => panic!("expected Unpackable, got {other:?}"),
        }
        assert!(err.to_string().contains("UTF-8"));
    }
    assert!(!fx.store.manifest_path("v1").exists());
    assert!(fx.store.list().unwrap().is_empty());

    // A non-UTF-8 directory name.
    fs::remove_file(src.join("sub").join(bad)).unwrap();
    fs::create_dir(src.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
    let err = pack(&src, &fx.store, &fx.key, &opts, &|_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Unpackable { reason, .. } if reason.contains("UTF-8")),
        "{err:?}"
    );

    // A non-UTF-8 symlink target.
    fs::remove_dir(src.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
    symlink(OsStr::from_bytes(b"/tmp/\xfe"), src.join("link")).unwrap();
    let err = pack(&src, &fx.store, &fx.key, &opts, &|_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Unpackable { path, reason }
            if path.ends_with("link") && reason.contains("UTF-8")),
        "{err:?}"
    );
    assert!(err.to_string().contains("symlink target"));

    // With the bad names gone the same tree packs.
    fs::remove_file(src.join("link")).unwrap();
    fx.pack(&src, "v1");
}

/// Writes the same tree in two creation orders.
fn canonical_tree(dir: &Path, reverse: bool) {
    let mut files: Vec<(String, Vec<u8>)> = vec![
        ("a".into(), b"first".to_vec()),
        ("a-b".into(), b"between a and a/".to_vec()),
        ("b/c/d.txt".into(), vec![7; 100_000]),
        ("b/big".into(), {
            let mut v = vec![0; 300_000];
            blake3::Hasher::new()
                .update(b"canonical")
                .finalize_xof()
                .fill(&mut v);
            v
        }),
        ("é/日本".into(), b"unicode".to_vec()),
        ("empty".into(), vec![]),
    ];
    if reverse {
        files.reverse();
    }
    for (p, body) in &files {
        write_tree(dir, &[(p.as_str(), body.as_slice())]);
    }
    fs::create_dir_all(dir.join("empty-dir")).unwrap();
    symlink("../outside", dir.join("b/up")).unwrap();
    make_executable(&dir.join("a"));
}

#[test]
fn same_tree_gives_same_release_id() {
    let one = Fixture::new();
    let src1 = one.src("tree");
    canonical_tree(&src1, false);
    let first = one.pack(&src1, "v1");
    let second = one.pack(&src1, "v1");
    assert_eq!(first.id, second.id);
    assert_eq!(second.new_chunks, 0);

    // Another store, another deploy key, the tree written in another order.
    let two = Fixture::new();
    let src2 = two.src("elsewhere");
    canonical_tree(&src2, true);
    let third = two.pack(&src2, "v1");
    assert_eq!(first.id, third.id);
    let m1 = load_from_store(&one.store, "v1", &one.trusted()).unwrap();
    let m2 = load_from_store(&two.store, "v1", &two.trusted()).unwrap();
    assert_eq!(m1.manifest.encode(), m2.manifest.encode());
    assert_eq!(m1.id, m2.id);
    assert_eq!(m1.id.to_hex(), first.id);

    // One changed bit gives another release.
    make_executable(&src2.join("empty"));
    assert_ne!(two.pack(&src2, "v1").id, first.id);
}

#[test]
fn second_release_links_unchanged_files() {
    let fx = Fixture::new();
    let src = fx.src("tree");
    let big = {
        let mut v = vec![0; 500_000];
        blake3::Hasher::new()
            .update(b"big")
            .finalize_xof()
            .fill(&mut v);
        v
    };
    write_tree(
        &src,
        &[
            ("app/main", b"#!/bin/sh\nexec app\n"),
            ("app/lib/big.so", &big),
            ("app/conf", b"version = 1\n"),
            ("docs/readme", b"read me\n"),
            ("docs/removed", b"only in v1\n"),
            ("tool", b"same bytes, exec bit changes\n"),
            ("empty", b""),
        ],
    );
    make_executable(&src.join("app/main"));
    symlink("/etc/hostname", src.join("hostname")).unwrap();
    fx.pack(&src, "v1");
    fx.install("v1").unwrap();
    activate(&fx.root, "v1").unwrap();
    let v1_dir = fx.root.release_dir("v1");
    let v1_before = snapshot(&v1_dir);

    // v2: one file edited, one removed, one added, one only changes its exec bit.
    fs::write(src.join("app/conf"), b"version = 2\n").unwrap();
    fs::remove_file(src.join("docs/removed")).unwrap();
    fs::write(src.join("docs/new"), b"new in v2\n").unwrap();
    make_executable(&src.join("tool"));
    let want = snapshot(&src);
    fx.pack(&src, "v2");
    let r = fx.install("v2").unwrap();
    // main, big.so and readme are linked; conf, new and tool are written.
    assert_eq!(r.files_linked, 3, "{r:?}");
    assert_eq!(r.bytes_linked, (19 + big.len() + 8) as u64, "{r:?}");
    assert!(r.bytes_written < 100, "{r:?}");

    let v2_dir = fx.root.release_dir("v2");
    assert_eq!(snapshot(&v2_dir), want);
    let ino = |p: &Path| fs::symlink_metadata(p).unwrap().ino();
    for same in ["app/main", "app/lib/big.so", "docs/readme"] {
        assert_eq!(ino(&v1_dir.join(same)), ino(&v2_dir.join(same)), "{same}");
    }
    assert_ne!(ino(&v1_dir.join("tool")), ino(&v2_dir.join("tool")));

    // Both audit clean, and v1's tree is exactly as before.
    assert!(audit_release(&fx.root, Some("v2")).unwrap().is_clean());
    assert!(audit_release(&fx.root, Some("v1")).unwrap().is_clean());
    assert_eq!(snapshot(&v1_dir), v1_before);
    let tool_mode = fs::metadata(v1_dir.join("tool"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(tool_mode & 0o111, 0, "v1's tool must stay non-executable");
    assert_eq!(fx.root.current().unwrap().as_deref(), Some("v1"));

    activate(&fx.root, "v2").unwrap();
    assert!(audit_release(&fx.root, None).unwrap().is_clean());
}
