//! The metrics endpoint: `/metrics` is valid Prometheus text exposition as
//! python `prometheus_client`'s own parser reads it (from .venv, installed
//! by scripts/setup-peers.sh) and its numbers follow the traffic;
//! `/stats.json` matches `server.stats()`; bad requests get 400, 404, 405
//! or 431; and `stop()` frees the port.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;

use common::*;
use msgtrans::transport::TransportServer;
use serde_json::Value;

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/setup-peers.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

fn metrics_server() -> msgtrans::transport::TransportServerBuilder {
    builder().metrics("127.0.0.1:0".parse().unwrap())
}

/// Parses `/metrics` with prometheus_client; returns its families.
async fn scrape(server: &TransportServer) -> Value {
    let url = format!("http://{}/metrics", server.metrics_addr().unwrap());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/prom_check.py");
    let out = within(
        GUARD,
        "prom_check.py",
        tokio::task::spawn_blocking(move || Command::new(python()).arg(script).arg(url).output()),
    )
    .await
    .unwrap()
    .expect("run python");
    assert!(
        out.status.success(),
        "prometheus_client could not parse /metrics:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("prom_check.py prints JSON")
}

/// Sum of a family's samples whose labels include every `(key, value)` in `want`.
fn sum(families: &Value, family: &str, want: &[(&str, &str)]) -> f64 {
    let f = &families["families"][family];
    assert!(f.is_object(), "no family {family}");
    f["samples"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| want.iter().all(|(k, v)| s[1][k] == *v))
        .map(|s| s[2].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_client_parses_metrics_that_follow_the_traffic() {
    let server = start_inline_echo(metrics_server()).await;
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    events.established(c.local_addr()).await;
    let p = one_way(1, 0, b"", b"scraped".to_vec());
    for _ in 0..5 {
        c.send(&p).await;
        c.recv().await;
    }
    let gone = RawClient::connect(addr(&server)).await;
    let id = events.established(gone.local_addr()).await;
    drop(gone);
    events.closed(id).await;

    let m = scrape(&server).await;
    assert!(
        m["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{}",
        m["content_type"]
    );
    for (name, f) in m["families"].as_object().unwrap() {
        assert!(!f["help"].as_str().unwrap().is_empty(), "{name} has no HELP");
        let t = f["type"].as_str().unwrap();
        assert!(t == "counter" || t == "gauge", "{name} is typed {t}");
    }
    assert_eq!(sum(&m, "msgtrans_shards", &[]), 2.0);
    // The parser names a counter family without its `_total` suffix.
    assert_eq!(sum(&m, "msgtrans_messages_received", &[("protocol", "tcp")]), 5.0);
    assert_eq!(sum(&m, "msgtrans_messages_sent", &[("protocol", "tcp")]), 5.0);
    assert_eq!(sum(&m, "msgtrans_messages_received", &[("protocol", "websocket")]), 0.0);
    assert_eq!(
        sum(&m, "msgtrans_received_bytes", &[("protocol", "tcp")]),
        5.0 * wire(&p).len() as f64
    );
    assert_eq!(sum(&m, "msgtrans_sessions_open", &[]), 1.0);
    assert_eq!(sum(&m, "msgtrans_sessions_opened", &[]), 2.0);
    assert_eq!(sum(&m, "msgtrans_sessions_closed", &[("reason", "peer_closed")]), 1.0);
    assert_eq!(sum(&m, "msgtrans_sessions_closed", &[]), 1.0);
    for shard in ["0", "1"] {
        let samples = m["families"]["msgtrans_outbound_queue_bytes"]["samples"]
            .as_array()
            .unwrap();
        assert!(samples.iter().any(|s| s[1]["shard"] == shard), "shard {shard} missing");
    }
    server.stop().await;
}

/// One raw HTTP exchange: the status line and the body.
fn http(addr: SocketAddr, request: &[u8]) -> (String, Vec<u8>, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head");
    let head = String::from_utf8_lossy(&resp[..split]).into_owned();
    let status = head.lines().next().unwrap().to_owned();
    (status, resp[split + 4..].to_vec(), head)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_json_matches_stats_and_bad_requests_get_their_status() {
    let server = start_inline_echo(metrics_server()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    c.send(&one_way(1, 0, b"", b"x".to_vec())).await;
    c.recv().await;
    let a = server.metrics_addr().unwrap();
    let (status, body, head) =
        tokio::task::spawn_blocking(move || http(a, b"GET /stats.json HTTP/1.1\r\nHost: x\r\n\r\n"))
            .await
            .unwrap();
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(head.contains("Content-Type: application/json"), "{head}");
    let j: Value = serde_json::from_slice(&body).expect("valid JSON");
    let stats = server.stats();
    assert_eq!(j["shards"].as_array().unwrap().len(), stats.shards.len());
    assert_eq!(j["total"]["msgs_in"], stats.total.msgs_in);
    assert_eq!(j["total"]["protocols"]["tcp"]["msgs_out"], 1);
    assert_eq!(j["total"]["sessions_open"], 1);
    assert!(j["total"]["closes"]["peer_closed"].is_u64());

    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), "HTTP/1.1 200 OK"),
        (
            b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 405 Method Not Allowed",
        ),
        (
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "HTTP/1.1 404 Not Found",
        ),
        (b"GET\x01 / HTTP/1.1\r\n\r\n".to_vec(), "HTTP/1.1 400 Bad Request"),
        (
            format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(16 * 1024)).into_bytes(),
            "HTTP/1.1 431 Request Header Fields Too Large",
        ),
    ];
    for (req, want) in cases {
        let (status, body, head) = tokio::task::spawn_blocking(move || http(a, &req)).await.unwrap();
        assert_eq!(status, want);
        if want.contains("405") {
            assert!(head.contains("Allow: GET, HEAD"), "{head}");
        }
        if want.contains("200") {
            let page = String::from_utf8(body).unwrap();
            assert!(page.contains("<svg id=\"chart-rate\""), "the dashboard page");
            // Self-contained: nothing is loaded from elsewhere.
            assert!(!page.contains("src=") && !page.contains("href="), "external resources");
        }
    }
    // HEAD: the head of a 200, no body.
    let (status, body, _) = tokio::task::spawn_blocking(move || http(a, b"HEAD /metrics HTTP/1.1\r\n\r\n"))
        .await
        .unwrap();
    assert_eq!((status.as_str(), body.len()), ("HTTP/1.1 200 OK", 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_frees_the_metrics_port() {
    let server = start_inline_echo(metrics_server()).await;
    let a = server.metrics_addr().unwrap();
    assert!(TcpStream::connect(a).is_ok());
    server.stop().await;
    assert!(TcpStream::connect(a).is_err(), "nothing listens after stop");
    std::net::TcpListener::bind(a).expect("the port is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_metrics_port_fails_the_build() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let err = builder()
        .metrics(taken.local_addr().unwrap())
        .build()
        .await
        .expect_err("the port is in use");
    assert!(
        err.to_string().contains(&taken.local_addr().unwrap().to_string()),
        "{err}"
    );
}
