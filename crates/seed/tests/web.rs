//! The seed's read-only fleet page over real HTTP on loopback, during a real
//! distribution to agents in two datacenters: the JSON and the event stream
//! follow it to every host live, and nothing but GET and HEAD gets through.

mod support;

use shoal_node::agent;
use shoal_seed::seed::Seed;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};
use support::{agent_config, cluster_and_seed};

/// One HTTP/1.1 request; returns (status, head, body).
fn http(addr: SocketAddr, method: &str, path: &str, host: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn fleet(addr: SocketAddr) -> serde_json::Value {
    let host = format!("127.0.0.1:{}", addr.port());
    let (status, _, body) = http(addr, "GET", "/api/fleet", &host);
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_follows_a_distribution_and_refuses_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    let cfg = cluster_and_seed(&d, "web = \"127.0.0.1:0\"");
    let seed = Seed::start(&cfg).await.unwrap();
    let web = seed.web.expect("the page is served");
    let src = d.join("src");
    let spec = shoal_sample::Spec {
        files: 40,
        mean_file: 2000,
        binaries: vec![1 << 20],
        seed: 3,
    };
    shoal_sample::generate(&src, &spec).unwrap();
    seed.publish(&src, "v1").unwrap();
    let mut agents = Vec::new();
    for (host, dc) in [("a1", "dc1"), ("a2", "dc1"), ("b1", "dc2"), ("b2", "dc2")] {
        agents.push(
            agent::start(agent_config(&d, host, dc, seed.local_addr(), ""))
                .await
                .unwrap(),
        );
    }

    let seen = tokio::task::spawn_blocking(move || {
        let start = Instant::now();
        loop {
            let v = fleet(web);
            // The first agent can be live before the last one has said hello.
            let listed = v["hosts"].as_array().map_or(0, Vec::len);
            if v["all_live"] == true && listed == 4 {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "not all live after 60 s: {v:#}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    })
    .await
    .unwrap();
    assert_eq!(seen["release"], "v1");
    let hosts: Vec<&str> = seen["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(
        hosts,
        ["a1", "a2", "b1", "b2"],
        "agents only, by datacenter"
    );
    for dc in seen["dcs"].as_array().unwrap() {
        assert_eq!(dc["verified"], 2, "{dc}");
        assert_eq!(dc["chunks_have"], dc["chunks_total"], "{dc}");
    }
    assert_eq!(seen["counts"]["live"], 4);

    let port = web.port();
    let me = format!("127.0.0.1:{port}");
    tokio::task::spawn_blocking(move || {
        // The page, its script and chart, with the security headers.
        let (status, head, body) = http(web, "GET", "/", &me);
        assert_eq!(status, 200);
        assert!(body.contains("<script src=\"/app.js\""), "{body}");
        let head = head.to_ascii_lowercase();
        assert!(
            head.contains("content-security-policy: default-src 'none'"),
            "{head}"
        );
        assert!(head.contains("x-content-type-options: nosniff"));
        let (status, _, js) = http(web, "GET", "/app.js", &me);
        assert_eq!(status, 200);
        assert!(js.contains("new EventSource(\"/events\")"));
        let (status, _, svg) = http(web, "GET", "/chart.svg", &me);
        assert_eq!(status, 200);
        assert!(svg.contains("v1 (4/4)"), "{svg}");
        assert_eq!(http(web, "HEAD", "/", &format!("localhost:{port}")).0, 200);

        // Nothing that could change anything gets through, on any path.
        for method in [
            "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT",
        ] {
            for path in [
                "/",
                "/api/fleet",
                "/events",
                "/chart.svg",
                "/api/deploy",
                "/x",
            ] {
                let (status, head, _) = http(web, method, path, &me);
                assert_eq!(status, 405, "{method} {path}: {head}");
                assert!(
                    head.to_ascii_lowercase().contains("allow: get, head"),
                    "{head}"
                );
            }
        }
        assert_eq!(http(web, "GET", "/api/deploy", &me).0, 404);
        // A foreign Host (DNS rebinding) is refused.
        assert_eq!(
            http(web, "GET", "/api/fleet", &format!("evil.example:{port}")).0,
            421
        );
        assert_eq!(http(web, "GET", "/api/fleet", "127.0.0.1:1").0, 421);

        // The event stream: its first event is the latest view.
        let mut s = TcpStream::connect(web).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /events HTTP/1.1\r\nHost: {me}\r\n\r\n").unwrap();
        let mut got = String::new();
        let mut buf = [0u8; 65536];
        while !got.contains("\n\n") || !got.contains("event: fleet") {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "the stream ended: {got}");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        assert!(
            got.to_ascii_lowercase()
                .contains("content-type: text/event-stream")
        );
        let data = got
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("a data line");
        let v: serde_json::Value = serde_json::from_str(data).unwrap();
        assert_eq!(v["all_live"], true);
    })
    .await
    .unwrap();
    // The tracker still has exactly the one release it was given.
    assert_eq!(seed.tracker.releases().len(), 1);
    drop(agents);
}
