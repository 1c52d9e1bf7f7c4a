//! Every `MetricsConfig` field does what its doc says: the request head
//! limit answers 431, the connection cap answers 503, and the timeout
//! closes a connection that says nothing.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::*;
use msgtrans::metrics::MetricsConfig;
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};

async fn server(cfg: impl FnOnce(MetricsConfig) -> MetricsConfig) -> TransportServer {
    let m = cfg(MetricsConfig::new("127.0.0.1:0".parse().unwrap()));
    start_inline_echo(
        TransportServerBuilder::new()
            .shards(1)
            .pin_shards(false)
            .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
            .metrics_config(m),
    )
    .await
}

/// The status line of the answer to `request`.
fn status(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    s.write_all(request).unwrap();
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    String::from_utf8_lossy(&resp).lines().next().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_request_refuses_a_longer_head_with_431() {
    let server = server(|mut m| {
        m.max_request = 256;
        m
    })
    .await;
    let addr = server.metrics_addr().unwrap();
    let small = status(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(small.contains("200"), "{small}");
    let big = format!("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n", "a".repeat(300));
    let refused = status(addr, big.as_bytes());
    assert!(
        refused.contains("431"),
        "a 300-byte header under a 256-byte limit: {refused}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_answers_503_over_the_cap() {
    let server = server(|mut m| {
        m.max_connections = 1;
        m
    })
    .await;
    let addr = server.metrics_addr().unwrap();
    // One connection holds the only slot by saying nothing yet.
    let mut holder = TcpStream::connect(addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let over = tokio::task::spawn_blocking(move || status(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"))
        .await
        .unwrap();
    assert!(over.contains("503"), "a second connection over a cap of 1: {over}");
    // The holder is still served, and once it is done the slot frees.
    holder.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut resp = Vec::new();
    holder.set_read_timeout(Some(GUARD)).unwrap();
    let _ = holder.read_to_end(&mut resp);
    assert!(String::from_utf8_lossy(&resp).starts_with("HTTP/1.1 200"));
    drop(holder);
    let mut again = String::new();
    for _ in 0..50 {
        again = status(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        if again.contains("200") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(again.contains("200"), "the slot did not free: {again}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_closes_a_connection_that_says_nothing() {
    let timeout = Duration::from_millis(300);
    let server = server(|mut m| {
        m.timeout = timeout;
        m
    })
    .await;
    let addr = server.metrics_addr().unwrap();
    let closed_after = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(GUARD)).unwrap();
        let started = Instant::now();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        started.elapsed()
    })
    .await
    .unwrap();
    // Well under the 5 s default: the configured timeout closed it.
    assert!(closed_after < UNDER_DEFAULT, "closed after {closed_after:?}");
    assert!(closed_after >= timeout / 2, "closed after {closed_after:?}");
    server.stop().await;
}
