//! A session's outbound queue is bounded, and a slow consumer meets the
//! policy the caller chose: `try_send` fails at once, `send` waits for room
//! up to the send timeout, and a peer that stops reading for the write
//! timeout is closed as a slow consumer. Other sessions are unaffected.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::{CloseReason, TransportError};

const LIMIT: usize = 256 * 1024;
const CHUNK: usize = 64 * 1024;

/// A raw client with a tiny receive buffer, so the kernel soon stops
/// taking bytes for it when it does not read.
async fn tiny_window_client(server: &msgtrans::TransportServer) -> RawClient {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr(server).into()).unwrap();
    s.set_nonblocking(true).unwrap();
    let std: std::net::TcpStream = s.into();
    RawClient::from_stream(tokio::net::TcpStream::from_std(std).unwrap())
}

/// Sends with `try_send` until the queue refuses, twice in a row with a
/// pause between (the kernel's buffers take a while to fill); returns how
/// many packets fit.
async fn fill(server: &msgtrans::TransportServer, id: msgtrans::SessionId) -> usize {
    let chunk = vec![0x5Au8; CHUNK];
    let mut accepted = 0;
    let mut refusals = 0;
    within(GUARD, "fill the queue", async {
        while refusals < 2 {
            match server.try_send(id, &chunk) {
                Ok(_) => {
                    accepted += 1;
                    refusals = 0;
                }
                Err(TransportError::Backpressure(s)) => {
                    assert_eq!(s, id);
                    refusals += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("unexpected {e:?}"),
            }
            // Bounded: the kernel holds a few MiB at most.
            assert!(accepted < 4096, "no backpressure after {accepted} sends of 64 KiB");
            // Let the shard publish how full the queue is.
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
    accepted
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_send_fails_at_once_and_send_waits_for_room() {
    let server = within(
        GUARD,
        "build",
        builder()
            .max_outbound_bytes(LIMIT)
            .send_timeout(Duration::from_millis(300))
            .write_timeout(None)
            .build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut slow = tiny_window_client(&server).await;
    let slow_id = events.established(slow.local_addr()).await;
    let mut healthy = RawClient::connect(addr(&server)).await;
    let healthy_id = events.established(healthy.local_addr()).await;

    let fitted = fill(&server, slow_id).await;
    // `send` of another chunk waits for room; none appears, so it fails
    // after the timeout.
    let r = within(
        UNDER_DEFAULT,
        "send on a full queue (send_timeout 300 ms, default 5 s)",
        server.send(slow_id, &[0x5Au8; CHUNK]),
    )
    .await;
    assert!(
        matches!(r, Err(TransportError::Backpressure(s)) if s == slow_id),
        "{r:?}"
    );

    // The healthy session is unaffected.
    let p = one_way(9, 1, b"", b"still fine".to_vec());
    server.send_to_session(healthy_id, p.clone()).await.unwrap();
    assert_eq!(healthy.recv().await, p);

    // Once the slow peer reads, a waiting send goes through.
    let waiting = {
        let s = server.clone();
        tokio::spawn(async move { s.send(slow_id, b"after the drain").await })
    };
    let mut got = 0;
    while got <= fitted {
        let p = slow.recv().await;
        got += 1;
        if &p.payload[..] == b"after the drain" {
            break;
        }
    }
    within(GUARD, "waiting send", waiting)
        .await
        .unwrap()
        .expect("room appeared");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_reading_is_closed_as_a_slow_consumer() {
    let server = within(
        GUARD,
        "build",
        builder()
            .max_outbound_bytes(LIMIT)
            .write_timeout(Some(Duration::from_millis(400)))
            .build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut slow = tiny_window_client(&server).await;
    let slow_id = events.established(slow.local_addr()).await;
    fill(&server, slow_id).await;
    assert_eq!(events.closed(slow_id).await, CloseReason::SlowConsumer);
    let _ = slow.expect_closed().await;
    server.stop().await;
}
