//! Our WebSocket client against our server: one-way sends, requests both
//! ways, and a broadcast that reaches TCP and WebSocket sessions alike.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::packet::Packet;
use msgtrans::protocol::{TcpClientConfig, WebSocketClientConfig};
use msgtrans::transport::TransportClientBuilder;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_sends_requests_and_gets_echoes() {
    let (server, _events) = start_events_echo(ws_builder()).await;
    let client = ws_client(&server).await;
    let mut events = client.subscribe_events();
    client.send(b"over websocket").await.unwrap();
    let echo = within(GUARD, "echo", async {
        loop {
            if let Some(ClientEvent::MessageReceived(ctx)) = events.next().await {
                return ctx;
            }
        }
    })
    .await;
    assert_eq!(&echo.data[..], b"over websocket");
    let r = within(GUARD, "request", client.request(b"ask")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"ask"[..]));
    client.stop().await;
    server.stop().await;
}

/// The same over the shard ring on both ends: a plain WebSocket session's
/// socket moves onto the ring after the upgrade, on the server and on the
/// client, and big messages (several reads each) arrive whole and in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_and_server_on_the_shard_ring_exchange_requests_whole() {
    let server = start_inline_echo(ws_builder().tcp_ring(true)).await;
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    let mut client = TransportClientBuilder::new()
        .with_protocol(WebSocketClientConfig::new(&url).unwrap())
        .tcp_ring(true)
        .build()
        .await
        .unwrap();
    within(GUARD, "ws connect", client.connect()).await.unwrap();
    for i in 0..50u32 {
        let body: Vec<u8> = (0..(i as usize * 997) % 70_000).map(|k| (k as u32 ^ i) as u8).collect();
        let r = within(GUARD, "request", client.request(&body)).await.unwrap();
        assert_eq!(r.data.as_deref(), Some(&body[..]), "request {i}");
    }
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_requests_a_websocket_client_and_broadcasts_to_every_transport() {
    let server = within(GUARD, "build", ws_builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let ws = ws_client(&server).await;
    let ws_id = events
        .wait_for("ws session", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, info } if info.protocol == "websocket" => {
                Some(*session_id)
            }
            _ => None,
        })
        .await;
    let mut tcp = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&addr(&server).to_string()).unwrap())
        .build()
        .await
        .unwrap();
    within(GUARD, "tcp connect", tcp.connect()).await.unwrap();
    events
        .wait_for("tcp session", |e| match e {
            ServerEvent::ConnectionEstablished { info, .. } if info.protocol == "tcp" => Some(()),
            _ => None,
        })
        .await;

    // The WebSocket client answers the server's requests.
    let mut ws_events = ws.subscribe_events();
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = ws_events.recv().await {
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
    let r = within(GUARD, "server request", server.request(ws_id, b"status?"))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"re: status?"[..]));

    let mut tcp_events = tcp.subscribe_events();
    let reached = server.broadcast(Packet::one_way(77, b"to all".to_vec())).await.unwrap();
    assert_eq!(reached, 2);
    let on_ws = within(GUARD, "broadcast on ws", got.recv()).await.unwrap();
    assert_eq!(&on_ws[..], b"to all");
    let on_tcp = within(GUARD, "broadcast on tcp", async {
        loop {
            if let Some(ClientEvent::MessageReceived(ctx)) = tcp_events.next().await {
                return ctx.data;
            }
        }
    })
    .await;
    assert_eq!(&on_tcp[..], b"to all");
    ws.shutdown(Duration::from_secs(1)).await;
    tcp.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_fails_connect_with_an_error() {
    let server = start_inline_echo(ws_builder()).await;
    let url = format!("ws://{}/elsewhere", server.ws_addr().unwrap());
    let mut c = TransportClientBuilder::new()
        .with_protocol(WebSocketClientConfig::new(&url).unwrap())
        .build()
        .await
        .unwrap();
    let err = within(GUARD, "connect", c.connect()).await.unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");
    server.stop().await;
}
