//! `shutdown(deadline)`: new connections are refused at once, requests in
//! flight complete, everything the server read is delivered exactly once
//! and in order, and the server is gone within the deadline.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::event::ServerEvent;
use msgtrans::packet::{Packet, PacketType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_midway_delivers_every_accepted_message_once_in_order() {
    shutdown_midway(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_midway_over_websocket_delivers_every_accepted_message_once_in_order() {
    shutdown_midway(true).await;
}

/// 10,000 numbered packets, as raw TCP packets or one WebSocket binary
/// message each, with a shutdown beginning halfway. (QUIC's run is in
/// `quic_limits.rs`.)
async fn shutdown_midway(ws: bool) {
    const N: u32 = 10_000;
    let b = if ws { ws_builder() } else { builder() };
    let server = within(GUARD, "build", b.build()).await.unwrap();
    let port = if ws { server.ws_addr().unwrap() } else { addr(&server) };
    let mut stream = server.subscribe_events();
    let socket = if ws {
        common::ws_raw::upgraded(port).await
    } else {
        RawClient::connect(port).await.stream
    };
    let (_reader, mut writer) = socket.into_split();
    // The client writes 10,000 numbered packets in chunks, as fast as it can.
    let sender = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        for chunk in (0..N).collect::<Vec<_>>().chunks(100) {
            let bytes: Vec<u8> = chunk
                .iter()
                .flat_map(|i| {
                    let p = wire(&one_way(*i, 0, b"", i.to_be_bytes().to_vec()));
                    if ws {
                        common::ws_raw::client_frame(2, &p)
                    } else {
                        p
                    }
                })
                .collect();
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut seen = Vec::new();
    let mut shutdown = None;
    let mut closed = false;
    while let Ok(ev) = within(GUARD, "events", stream.recv()).await {
        match ev {
            ServerEvent::MessageReceived { context, .. } => {
                seen.push(u32::from_be_bytes(context.data[..4].try_into().unwrap()));
                if seen.len() == (N / 2) as usize {
                    let s = server.clone();
                    shutdown = Some(tokio::spawn(async move { s.shutdown(Duration::from_secs(3)).await }));
                    // New connections are refused from the moment shutdown starts.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let refused = match tokio::net::TcpStream::connect(port).await {
                        Err(_) => true,
                        Ok(mut c) => {
                            use tokio::io::AsyncReadExt;
                            let mut b = [0u8; 1];
                            matches!(within(GUARD, "refused", c.read(&mut b)).await, Ok(0) | Err(_))
                        }
                    };
                    assert!(refused, "a connection was accepted during shutdown");
                }
            }
            ServerEvent::ConnectionClosed { .. } => closed = true,
            _ => {}
        }
    }
    assert!(closed, "the session was closed");
    within(GUARD, "shutdown returns", shutdown.expect("shutdown started"))
        .await
        .unwrap();
    // Exactly once, in order: what was delivered is 0, 1, 2, ... with no gap.
    assert!(seen.len() >= (N / 2) as usize);
    assert!(
        seen.iter().enumerate().all(|(i, v)| *v == i as u32),
        "out of order or duplicated"
    );
    sender.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_completes_during_shutdown() {
    let server = within(GUARD, "build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut peer = RawClient::connect(addr(&server)).await;
    let id = events.established(peer.local_addr()).await;
    let s = server.clone();
    let request = tokio::spawn(async move { s.request(id, b"are you there?").await });
    let req = peer.recv().await;
    assert_eq!(req.header.packet_type, PacketType::Request);
    let s = server.clone();
    let shutdown = tokio::spawn(async move { s.shutdown(Duration::from_secs(10)).await });
    // The peer answers after shutdown has begun.
    tokio::time::sleep(Duration::from_millis(100)).await;
    peer.send(&Packet::response(req.header.message_id, b"yes".to_vec()))
        .await;
    let reply = within(GUARD, "request", request)
        .await
        .unwrap()
        .expect("answered during the drain");
    assert_eq!(reply.data.as_deref(), Some(&b"yes"[..]));
    // With nothing left in flight the session closes and shutdown ends
    // well before its deadline.
    assert!(peer.expect_closed().await.is_empty());
    within(GUARD, "shutdown", shutdown).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_is_closed_at_the_deadline() {
    let server = within(GUARD, "build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut peer = RawClient::connect(addr(&server)).await;
    let id = events.established(peer.local_addr()).await;
    let s = server.clone();
    let request = tokio::spawn(async move { s.request(id, b"hello?").await });
    peer.recv().await;
    within(GUARD, "shutdown", server.shutdown(Duration::from_millis(300))).await;
    let r = within(GUARD, "request", request).await.unwrap();
    assert!(matches!(r, Err(msgtrans::TransportError::ConnectionClosed(_))), "{r:?}");
    assert!(peer.expect_closed().await.is_empty());
}
