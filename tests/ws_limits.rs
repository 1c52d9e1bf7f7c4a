//! The limits hold on WebSocket sessions too: an extra connection gets 503
//! (over the total limit and over a shard's),
//! a silent session is closed for idleness, and a graceful shutdown lets an
//! answered request finish before the close.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::CloseReason;
use msgtrans::event::{ClientEvent, ServerEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_extra_websocket_connection_gets_503() {
    let server = start_inline_echo(ws_builder().max_connections(1)).await;
    let first = ws_client(&server).await;
    let mut extra = tokio::net::TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
    extra.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = String::new();
    within(GUARD, "503", extra.read_to_string(&mut head)).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    let r = within(GUARD, "first still served", first.request(b"ok?"))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"ok?"[..]));
    first.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_shard_limit_holds_on_every_shard_with_503_for_the_rest() {
    let server = start_inline_echo(ws_builder().max_connections(100).max_connections_per_shard(1)).await;
    let mut inside = Vec::new();
    let mut refused = 0;
    // Connections land on shards by the kernel's hash; keep connecting until
    // both shards are full and a few more have been refused.
    for _ in 0..64 {
        let mut c = tokio::net::TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
        c.write_all(UPGRADE.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = within(GUARD, "upgrade answer", c.read(&mut b)).await.unwrap();
            assert!(n > 0, "closed without an answer: {:?}", String::from_utf8_lossy(&head));
            head.push(b[0]);
        }
        let head = String::from_utf8_lossy(&head).into_owned();
        if head.starts_with("HTTP/1.1 101") {
            inside.push(c);
        } else {
            assert!(head.starts_with("HTTP/1.1 503"), "{head}");
            refused += 1;
        }
        if inside.len() == SHARDS && refused >= 4 {
            break;
        }
    }
    assert_eq!(inside.len(), SHARDS, "exactly one session per shard");
    assert_eq!(server.sessions_per_shard(), vec![1; SHARDS]);
    assert!(refused >= 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_websocket_session_is_closed_for_idleness() {
    let server = start_inline_echo(ws_builder().idle_timeout(Some(Duration::from_millis(300)))).await;
    let mut events = pump_events(&server);
    let client = ws_client(&server).await;
    let id = events
        .wait_for("established", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    assert_eq!(events.closed(id).await, CloseReason::IdleTimeout);
    let mut ce = client.subscribe_events();
    let gone = within(GUARD, "client sees the close", async {
        loop {
            if let Some(ClientEvent::Disconnected { .. }) = ce.next().await {
                return;
            }
        }
    });
    gone.await;
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_lets_a_websocket_request_finish() {
    let server = within(GUARD, "build", ws_builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let client = ws_client(&server).await;
    let id = events
        .wait_for("established", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    // The client answers requests after a pause, so the answer arrives
    // while the shutdown is already draining.
    let mut ce = client.subscribe_events();
    tokio::spawn(async move {
        while let Ok(ev) = ce.recv().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                if ctx.is_request() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = ctx.respond(b"late but fine".to_vec());
                }
            }
        }
    });
    let s = server.clone();
    let request = tokio::spawn(async move { s.request(id, b"still there?").await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    within(GUARD, "shutdown", server.shutdown(Duration::from_secs(10))).await;
    let r = within(GUARD, "request", request)
        .await
        .unwrap()
        .expect("finished during the drain");
    assert_eq!(r.data.as_deref(), Some(&b"late but fine"[..]));
    client.stop().await;
}
