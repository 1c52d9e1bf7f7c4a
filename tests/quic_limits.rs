//! Limits on QUIC sessions: connection limits in total and per shard
//! (refused with CONNECTION_REFUSED, admitted again once a slot frees),
//! shutdown midway through 10,000 numbered messages, garbage datagrams,
//! and the UDP port freed on stop and refused while another server has it.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::event::ServerEvent;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{
    RetryConfig, TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder,
};
use msgtrans::TlsServerConfig;

fn quic_server(b: TransportServerBuilder, addr: &str) -> (TransportServerBuilder, String) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let b = b
        .shards(SHARDS)
        .pin_shards(false)
        .with_protocol(QuicServerConfig::new(addr).unwrap().with_tls(tls));
    (b, pem)
}

async fn try_client(server: &TransportServer, pem: &str) -> Result<TransportClient, msgtrans::TransportError> {
    let port = server.quic_addr().unwrap().port();
    let cfg = QuicClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_ca_cert_pem(pem)
        .unwrap()
        .with_connect_timeout(Duration::from_secs(5));
    // One attempt each: these tests count refusals, and a retried connect
    // to a port that has closed would wait out every attempt's timeout.
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .retry_strategy(RetryConfig::none())
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", c.connect()).await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_total_connection_limit_refuses_and_admits_again_once_a_slot_frees() {
    let (b, pem) = quic_server(TransportServerBuilder::new().max_connections(2), "127.0.0.1:0");
    let server = start_inline_echo(b).await;
    let a = try_client(&server, &pem).await.expect("first");
    let b2 = try_client(&server, &pem).await.expect("second");
    let refused = try_client(&server, &pem).await;
    assert!(refused.is_err(), "a third connection was admitted over the limit of 2");
    assert_eq!(server.session_count().await, 2);
    a.stop().await;
    // Admitted again once the slot is free (the close takes a moment).
    let mut again = None;
    for _ in 0..50 {
        if let Ok(c) = try_client(&server, &pem).await {
            again = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let again = again.expect("no connection admitted after one closed");
    let r = within(GUARD, "request", again.request(b"in")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"in"[..]));
    b2.stop().await;
    again.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_shard_limit_holds_on_every_shard() {
    let (b, pem) = quic_server(
        TransportServerBuilder::new().max_connections_per_shard(1),
        "127.0.0.1:0",
    );
    let server = start_inline_echo(b).await;
    let mut admitted = Vec::new();
    let mut refused = 0;
    for _ in 0..12 {
        match try_client(&server, &pem).await {
            Ok(c) => admitted.push(c),
            Err(_) => refused += 1,
        }
        assert!(
            server.sessions_per_shard().iter().all(|&n| n <= 1),
            "{:?}",
            server.sessions_per_shard()
        );
    }
    assert!(admitted.len() <= SHARDS, "{} admitted", admitted.len());
    assert!(refused >= 12 - SHARDS, "{refused} refused");
    for c in admitted {
        c.stop().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_midway_delivers_every_accepted_message_once_in_order() {
    const N: u32 = 10_000;
    let (b, pem) = quic_server(TransportServerBuilder::new(), "127.0.0.1:0");
    let server = within(GUARD, "build", b.build()).await.unwrap();
    let mut stream = server.subscribe_events();
    let client = try_client(&server, &pem).await.expect("connect");
    let sender = tokio::spawn(async move {
        for i in 0..N {
            if client.send(&i.to_be_bytes()).await.is_err() {
                break;
            }
        }
        client
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
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    assert!(
                        try_client(&server, &pem).await.is_err(),
                        "a connection was accepted during shutdown"
                    );
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
    assert!(seen.len() >= (N / 2) as usize);
    assert!(
        seen.iter().enumerate().all(|(i, v)| *v == i as u32),
        "out of order or duplicated"
    );
    within(GUARD, "sender", sender).await.unwrap().stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_datagrams_harm_nobody() {
    let (b, pem) = quic_server(TransportServerBuilder::new(), "127.0.0.1:0");
    let server = start_inline_echo(b).await;
    let client = try_client(&server, &pem).await.expect("connect");
    let target = server.quic_addr().unwrap();
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut x: u32 = 0x1234_5678;
    for i in 0..2000usize {
        let len = 1 + (i * 37) % 1400;
        let d: Vec<u8> = (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = junk.send_to(&d, target);
    }
    let r = within(GUARD, "request after junk", client.request(b"fine"))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"fine"[..]));
    let fresh = try_client(&server, &pem).await.expect("connect after junk");
    let r = within(GUARD, "fresh request", fresh.request(b"new")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"new"[..]));
    client.stop().await;
    fresh.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_udp_port_is_refused_while_held_and_free_after_stop() {
    let (b, _) = quic_server(TransportServerBuilder::new(), "127.0.0.1:0");
    let server = start_inline_echo(b).await;
    let addr = server.quic_addr().unwrap().to_string();
    let (b, _) = quic_server(TransportServerBuilder::new(), &addr);
    let second = within(GUARD, "second build", b.build()).await;
    let err = second.expect_err("a second server joined the QUIC port");
    assert!(err.to_string().contains("in use"), "{err}");
    server.stop().await;
    let (b, _) = quic_server(TransportServerBuilder::new(), &addr);
    let again = within(GUARD, "rebuild", b.build()).await.expect("port free after stop");
    again.stop().await;
}
