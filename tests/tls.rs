//! TLS under TCP and WebSocket (rustls, ring): our client against our
//! server with requests both ways and broadcast; python `websockets` over
//! wss trusting a generated certificate; bursts of overlapping handshakes
//! all complete; an untrusting client is rejected; a plaintext or silent
//! client on a TLS port is closed, not hung.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::packet::Packet;
use msgtrans::protocol::{
    ClientProtocolConfig, TcpClientConfig, TcpServerConfig, WebSocketClientConfig, WebSocketServerConfig,
};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};
use msgtrans::{TlsClientConfig, TlsServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn tls_builder() -> (TransportServerBuilder, String) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let b = TransportServerBuilder::new()
        .shards(SHARDS)
        .pin_shards(false)
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls.clone()))
        .with_protocol(
            WebSocketServerConfig::new("127.0.0.1:0")
                .unwrap()
                .with_path("/ws")
                .with_tls(tls),
        );
    (b, pem)
}

async fn tls_client(server: &TransportServer, pem: &str) -> TransportClient {
    tls_client_on(server, pem, true).await
}

/// `epoll`: the client's sockets on its shard's epoll table (the default)
/// or on glommio's streams.
async fn tls_client_on(server: &TransportServer, pem: &str, epoll: bool) -> TransportClient {
    let port = server.addr_of("tcp+tls").unwrap().port();
    let cfg = TcpClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_tls(TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap());
    connected(cfg, epoll, "tls connect").await
}

/// A client of `cfg`, connected.
async fn connected(cfg: impl ClientProtocolConfig, epoll: bool, what: &str) -> TransportClient {
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .tcp_epoll(epoll)
        .build()
        .await
        .unwrap();
    within(GUARD, what, c.connect()).await.expect("connect");
    c
}

async fn wss_client(server: &TransportServer, pem: &str) -> TransportClient {
    wss_client_on(server, pem, true).await
}

async fn wss_client_on(server: &TransportServer, pem: &str, epoll: bool) -> TransportClient {
    let port = server.addr_of("wss").unwrap().port();
    let cfg = WebSocketClientConfig::new(&format!("wss://localhost:{port}/ws"))
        .unwrap()
        .with_tls(TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap());
    connected(cfg, epoll, "wss connect").await
}

/// Answers every request on `client` with "re: " + its payload; forwards
/// one-way payloads to the returned channel.
fn answer(client: &TransportClient) -> tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes> {
    let mut events = client.subscribe_events();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                if ctx.is_request() {
                    let reply = [b"re: ".as_slice(), &ctx.data].concat();
                    ctx.respond(reply).unwrap();
                } else {
                    let _ = tx.send(ctx.data.clone());
                }
            }
        }
    });
    rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_and_wss_carry_requests_both_ways_and_broadcast() {
    let (b, pem) = tls_builder();
    let (server, mut events) = start_events_echo(b).await;
    let tcp = tls_client(&server, &pem).await;
    let wss = wss_client(&server, &pem).await;
    for c in [&tcp, &wss] {
        let r = within(GUARD, "request", c.request(b"over tls")).await.unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"over tls"[..]));
    }
    let mut ids = Vec::new();
    for proto in ["tcp", "websocket"] {
        ids.push(
            events
                .wait_for("established", |e| match e {
                    ServerEvent::ConnectionEstablished { session_id, info } if info.protocol == proto => {
                        Some(*session_id)
                    }
                    _ => None,
                })
                .await,
        );
    }
    let mut got = [answer(&tcp), answer(&wss)];
    for id in &ids {
        let r = within(GUARD, "server request", server.request(*id, b"ping"))
            .await
            .unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"re: ping"[..]));
    }
    assert_eq!(server.broadcast(Packet::one_way(5, b"all".to_vec())).await.unwrap(), 2);
    for rx in got.iter_mut() {
        assert_eq!(&within(GUARD, "broadcast", rx.recv()).await.unwrap()[..], b"all");
    }
    tcp.stop().await;
    wss.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_over_wss_trusting_the_generated_certificate() {
    let (b, pem) = tls_builder();
    let server = start_inline_echo(b).await;
    let dir = std::env::temp_dir().join(format!("msgtrans-tls-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    std::fs::write(&ca, &pem).unwrap();
    let url = format!("wss://localhost:{}/ws", server.addr_of("wss").unwrap().port());
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python");
    assert!(python.exists(), "run ./scripts/setup-peers.sh (scripts/test.sh does)");
    for case in ["sizes", "text"] {
        let (py, script, url, ca) = (
            python.clone(),
            root.join("tests/peers/ws_check.py"),
            url.clone(),
            ca.clone(),
        );
        let out = within(
            GUARD * 3,
            case,
            tokio::task::spawn_blocking(move || {
                Command::new(py)
                    .arg(script)
                    .arg(url)
                    .arg(case)
                    .arg("--cafile")
                    .arg(ca)
                    .output()
            }),
        )
        .await
        .unwrap()
        .unwrap();
        assert!(
            out.status.success(),
            "{case}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    std::fs::remove_dir_all(&dir).ok();
    server.stop().await;
}

/// Handshakes that overlap: every WSS and TLS client of a burst finishes
/// its TLS and WebSocket handshakes and is answered. Each client's last
/// handshake bytes and its first request can reach the server in one
/// read or apart, and the server's sessions share the shards' epoll
/// tables, so a readiness edge lost between handshake and session would
/// leave a client waiting here until the guard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_tls_and_wss_handshakes_all_complete() {
    let (b, pem) = tls_builder();
    let server = start_inline_echo(b).await;
    for round in 0..3 {
        let clients = (0..16).map(|i| {
            let (server, pem) = (&server, pem.as_str());
            async move {
                let c = if i % 2 == 0 {
                    wss_client(server, pem).await
                } else {
                    tls_client(server, pem).await
                };
                let body = format!("round {round} client {i}");
                let r = within(GUARD, "request", c.request(body.as_bytes())).await.unwrap();
                assert_eq!(r.data.as_deref(), Some(body.as_bytes()));
                c
            }
        });
        // The clients stay connected until the whole burst is answered.
        let _clients = within(GUARD, "a burst of handshakes", futures_util::future::join_all(clients)).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_does_not_trust_the_certificate_is_rejected_unless_it_says_dangerous() {
    let (b, _pem) = tls_builder();
    let server = start_inline_echo(b).await;
    let port = server.addr_of("tcp+tls").unwrap().port();
    let verifying = TcpClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_tls(TlsClientConfig::new());
    let mut c = TransportClientBuilder::new()
        .with_protocol(verifying)
        .build()
        .await
        .unwrap();
    let err = within(GUARD, "connect", c.connect()).await.unwrap_err();
    assert!(err.to_string().to_lowercase().contains("certificate"), "{err}");
    c.stop().await;

    let reckless = TcpClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_tls(TlsClientConfig::new().dangerous_skip_verification());
    let mut c = TransportClientBuilder::new()
        .with_protocol(reckless)
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", c.connect()).await.expect("skips verification");
    let r = within(GUARD, "request", c.request(b"hi")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"hi"[..]));
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_and_silent_clients_on_a_tls_port_are_closed_not_hung() {
    let (b, pem) = tls_builder();
    let server = start_inline_echo(b.handshake_timeout(Duration::from_millis(300))).await;
    let addr = server.addr_of("tcp+tls").unwrap();
    let good = tls_client(&server, &pem).await;
    // A plaintext MsgTrans client: its header is not a TLS record.
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain
        .write_all(&wire(&one_way(1, 0, b"", b"plain".to_vec())))
        .await
        .unwrap();
    let mut sink = Vec::new();
    let _ = within(GUARD, "plaintext closed", plain.read_to_end(&mut sink)).await;
    // A client that connects and says nothing: dropped at the handshake timeout.
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut sink = Vec::new();
    let _ = within(
        UNDER_DEFAULT,
        "silent closed (handshake_timeout 300 ms, default 10 s)",
        silent.read_to_end(&mut sink),
    )
    .await;
    // Both are counted, though not necessarily before their clients see
    // the close: the failed handshake drops the socket, then counts.
    let failures = || server.stats().iter().map(|s| s.handshake_failures).sum::<u64>();
    within(GUARD, "two handshake failures counted", async {
        while failures() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // The trusted client never noticed.
    let r = within(GUARD, "request", good.request(b"fine")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"fine"[..]));
    good.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_responses_over_tls_arrive_whole() {
    // The last TLS records of a big write must be flushed even when the
    // socket was busy at that moment (a stall we once had). On the epoll
    // table (the default) and on glommio's streams, both ends; and with
    // the shard ring on, which takes plain sessions only (TLS ones stay
    // on the table).
    for (ring, epoll) in [(false, true), (false, false), (true, true)] {
        large_responses_arrive_whole(ring, epoll).await;
    }
}

async fn large_responses_arrive_whole(ring: bool, epoll: bool) {
    let (b, pem) = tls_builder();
    let server = start_inline_echo(b.tcp_ring(ring).tcp_epoll(epoll)).await;
    let tcp = tls_client_on(&server, &pem, epoll).await;
    let wss = wss_client_on(&server, &pem, epoll).await;
    let big: Vec<u8> = (0..4 * 1024 * 1024).map(|k| (k % 251) as u8).collect();
    let mut echoes = [answer(&tcp), answer(&wss)];
    for round in 0..5 {
        for (c, rx) in [&tcp, &wss].into_iter().zip(echoes.iter_mut()) {
            let r = within(GUARD, "4 MiB request", c.request(&big)).await.unwrap();
            assert!(
                r.data.as_deref() == Some(&big[..]),
                "round {round}, tcp_ring {ring}, tcp_epoll {epoll}"
            );
            c.send(&big).await.unwrap();
            let echo = within(GUARD, "4 MiB echo", rx.recv()).await.unwrap();
            assert!(echo[..] == big[..], "round {round}, tcp_ring {ring}, tcp_epoll {epoll}");
        }
    }
    tcp.stop().await;
    wss.stop().await;
    server.stop().await;
}
