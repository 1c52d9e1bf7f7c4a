//! QUIC on the shards, our client against our server: requests both ways,
//! one-way echoes in order, broadcast across shards, payloads up to 4 MiB,
//! a push before the client has written anything, certificate checks, and
//! idle close against keep-alive.

mod common;

use std::time::Duration;

use common::quic::{client_config, quic_builder, quic_client};
use common::*;
use msgtrans::error::CloseReason;
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::packet::Packet;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServerBuilder};
use msgtrans::TlsServerConfig;

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

async fn quic_session(events: &mut Events) -> msgtrans::SessionId {
    events
        .wait_for("quic established", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, info } if info.protocol == "quic" => Some(*session_id),
            _ => None,
        })
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_both_ways_and_broadcast_across_shards() {
    let (b, pem) = quic_builder();
    let (server, mut events) = start_events_echo(b).await;
    let mut clients = Vec::new();
    let mut ids = Vec::new();
    // Enough clients that both shards own some (the kernel hashes each
    // client's address to one shard's socket, so 8 all landed on one
    // shard about once in 128 runs): at least 8, more until both do.
    while ids.len() < 8
        || (ids
            .iter()
            .map(|id: &msgtrans::SessionId| id.shard())
            .collect::<std::collections::HashSet<_>>()
            .len()
            < SHARDS
            && ids.len() < 64)
    {
        let c = quic_client(client_config(&server, &pem)).await;
        let r = within(GUARD, "request", c.request(b"over quic")).await.unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"over quic"[..]));
        ids.push(quic_session(&mut events).await);
        clients.push(c);
    }
    let shards: std::collections::HashSet<_> = ids.iter().map(|id| id.shard()).collect();
    assert_eq!(
        shards.len(),
        SHARDS,
        "{} clients landed on one shard: {ids:?}",
        ids.len()
    );
    let mut got: Vec<_> = clients.iter().map(answer).collect();
    for id in &ids {
        let r = within(GUARD, "server request", server.request(*id, b"ping"))
            .await
            .unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"re: ping"[..]));
    }
    assert_eq!(
        server.broadcast(Packet::one_way(5, b"all".to_vec())).await.unwrap(),
        clients.len()
    );
    for rx in got.iter_mut() {
        assert_eq!(&within(GUARD, "broadcast", rx.recv()).await.unwrap()[..], b"all");
    }
    for c in &clients {
        c.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_echoes_arrive_in_order_for_every_size() {
    let (b, pem) = quic_builder();
    let server = start_inline_echo(b.max_payload(8 << 20)).await;
    let client = quic_client(client_config(&server, &pem)).await;
    let mut rx = answer(&client);
    let sizes = [0usize, 1, 1000, 1199, 1200, 65_535, 65_536, 1 << 20, 4 << 20];
    for (i, &n) in sizes.iter().enumerate() {
        let payload: Vec<u8> = (0..n).map(|b| (b as u8) ^ i as u8).collect();
        client.send(&payload).await.unwrap();
        let got = within(GUARD, "echo", rx.recv()).await.unwrap();
        assert_eq!(got.len(), n);
        assert!(got[..] == payload[..], "payload of {n} bytes changed");
    }
    for i in 0..2000u32 {
        client.send(&i.to_be_bytes()).await.unwrap();
    }
    for i in 0..2000u32 {
        let got = within(GUARD, "ordered echo", rx.recv()).await.unwrap();
        assert_eq!(&got[..], &i.to_be_bytes(), "echo {i} out of order");
    }
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_pushes_before_the_client_writes() {
    let (b, pem) = quic_builder();
    let (server, mut events) = start_events_echo(b).await;
    let client = quic_client(client_config(&server, &pem)).await;
    let mut rx = answer(&client);
    let id = quic_session(&mut events).await;
    server.send(id, b"first word").await.unwrap();
    assert_eq!(&within(GUARD, "push", rx.recv()).await.unwrap()[..], b"first word");
    let r = within(GUARD, "server request", server.request(id, b"q")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"re: q"[..]));
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusting_client_is_refused_and_the_dangerous_opt_out_connects() {
    let (b, _pem) = quic_builder();
    let server = start_inline_echo(b).await;
    let port = server.quic_addr().unwrap().port();
    let plain = QuicClientConfig::new(&format!("localhost:{port}")).unwrap();
    let mut c = TransportClientBuilder::new()
        .with_protocol(plain)
        .build()
        .await
        .unwrap();
    let err = within(GUARD, "untrusted connect", c.connect()).await;
    assert!(err.is_err(), "a client that trusts no CA must not connect");
    c.stop().await;
    let skip = QuicClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .dangerous_skip_verification();
    let c = quic_client(skip).await;
    let r = within(GUARD, "request", c.request(b"insecure")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"insecure"[..]));
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_closes_at_the_idle_timeout_unless_kept_alive() {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let idle = Duration::from_millis(600);
    let b = TransportServerBuilder::new()
        .shards(SHARDS)
        .pin_shards(false)
        .with_protocol(
            QuicServerConfig::new("127.0.0.1:0")
                .unwrap()
                .with_tls(tls)
                .with_max_idle_timeout(idle),
        );
    let (server, mut events) = start_events_echo(b).await;
    let quiet = quic_client(client_config(&server, &pem)).await;
    let quiet_id = quic_session(&mut events).await;
    let kept = quic_client(client_config(&server, &pem).with_keep_alive_interval(Some(idle / 4))).await;
    let kept_id = quic_session(&mut events).await;
    let reason = within(idle * 2 + GUARD, "idle close", events.closed(quiet_id)).await;
    assert_eq!(reason, CloseReason::IdleTimeout);
    tokio::time::sleep(idle * 2).await;
    assert!(
        server.active_sessions().await.contains(&kept_id),
        "keep-alive did not keep the session"
    );
    let r = within(GUARD, "request", kept.request(b"still here")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"still here"[..]));
    quiet.stop().await;
    kept.stop().await;
    server.stop().await;
}
