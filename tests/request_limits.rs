//! Requests beyond the in-flight limit and packets beyond the size limits
//! are refused at once with typed errors; the session carries on.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::{CodecError, TransportError};
use msgtrans::packet::Packet;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_in_flight_limit_fails_with_too_many_requests() {
    let server = within(
        GUARD,
        "build",
        builder()
            .max_inflight_requests(4)
            .request_timeout(Duration::from_secs(60))
            .build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    // A raw client that never answers: every request stays pending.
    let mut silent = RawClient::connect(addr(&server)).await;
    let id = events.established(silent.local_addr()).await;
    let mut waiting = Vec::new();
    for i in 0..4u8 {
        let s = server.clone();
        waiting.push(tokio::spawn(async move { s.request(id, &[i]).await }));
    }
    // All four reached the peer, so all four are pending.
    for _ in 0..4 {
        silent.recv().await;
    }
    let fifth = within(GUARD, "fifth request", server.request(id, b"one too many")).await;
    assert!(
        matches!(fifth, Err(TransportError::TooManyRequests(s)) if s == id),
        "{fifth:?}"
    );
    // The session is fine: a one-way send still arrives.
    server.send(id, b"still open").await.unwrap();
    assert_eq!(&silent.recv().await.payload[..], b"still open");
    drop(silent);
    for w in waiting {
        let r = within(GUARD, "pending request", w).await.unwrap();
        assert!(matches!(r, Err(TransportError::ConnectionClosed(_))), "{r:?}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sending_more_than_the_size_limits_fails_before_anything_is_queued() {
    let server = within(GUARD, "build", builder().max_payload(1024).max_ext_header(8).build())
        .await
        .unwrap();
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let r = server.send(id, &[0u8; 1025]).await;
    assert!(
        matches!(
            r,
            Err(TransportError::Packet(CodecError::PayloadTooLarge {
                len: 1025,
                max: 1024
            }))
        ),
        "{r:?}"
    );
    let mut p = Packet::one_way(1, vec![1u8]);
    p.set_ext_header(vec![0u8; 9]);
    let r = server.send_to_session(id, p).await;
    assert!(
        matches!(
            r,
            Err(TransportError::Packet(CodecError::ExtHeaderTooLarge { len: 9, max: 8 }))
        ),
        "{r:?}"
    );
    let r = server.broadcast(Packet::one_way(1, vec![0u8; 2048])).await;
    assert!(matches!(r, Err(TransportError::Packet(_))), "{r:?}");
    // At the limit is fine.
    server.send(id, &[7u8; 1024]).await.unwrap();
    assert_eq!(c.recv().await.payload.len(), 1024);
    server.stop().await;
}
