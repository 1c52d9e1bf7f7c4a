//! A session's outbound queue is bounded: sends to a peer that stops
//! reading are refused with a typed error once the queue is full, instead
//! of growing without limit, and other sessions are unaffected.

mod common;

use common::*;
use msgtrans::error::TransportError;
use msgtrans::event::ServerEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_to_a_peer_that_never_reads_are_refused_with_backpressure() {
    const LIMIT: usize = 256 * 1024;
    let server = within(GUARD, "build", builder().max_outbound_bytes(LIMIT).build())
        .await
        .unwrap();
    let mut events = pump_events(&server);
    // The silent client never reads: once the kernel's buffers on both sides
    // are full, the session's queue fills up.
    let silent = RawClient::connect(addr(&server)).await;
    let silent_id = events.established(silent.local_addr()).await;
    let mut healthy = RawClient::connect(addr(&server)).await;
    let healthy_id = events.established(healthy.local_addr()).await;

    let chunk = vec![0x5Au8; 64 * 1024];
    let mut accepted = 0usize;
    let refused = within(GUARD, "backpressure", async {
        loop {
            // `send` accepts while the session is open; the shard refuses
            // what does not fit and says so with an event.
            server.send(silent_id, &chunk).await.expect("session is open");
            accepted += 1;
            if let Some(err) = events
                .try_wait_for(|e| match e {
                    ServerEvent::TransportError { session_id, error } if *session_id == Some(silent_id) => {
                        Some(error.clone())
                    }
                    _ => None,
                })
                .await
            {
                return err;
            }
            // Bounded: the kernel holds a few MiB at most, so refusals must
            // start long before this many sends.
            assert!(accepted < 4096, "no backpressure after {accepted} sends of 64 KiB");
        }
    })
    .await;
    assert!(
        matches!(refused, TransportError::Backpressure(id) if id == silent_id),
        "{refused:?}"
    );

    // The other session still works.
    let p = one_way(9, 1, b"", b"still fine".to_vec());
    server.send_to_session(healthy_id, p.clone()).await.unwrap();
    assert_eq!(healthy.recv().await, p);
    drop(silent);
}
