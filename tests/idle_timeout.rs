//! A session that moves no bytes for the idle timeout is closed with
//! `CloseReason::IdleTimeout`; a session that keeps talking is not.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::CloseReason;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_peer_is_closed_for_idleness_while_a_talking_one_stays() {
    let idle = Duration::from_millis(400);
    let server = start_inline_echo(builder().idle_timeout(Some(idle))).await;
    let mut events = pump_events(&server);
    let mut silent = RawClient::connect(addr(&server)).await;
    let silent_id = events.established(silent.local_addr()).await;
    let mut talker = RawClient::connect(addr(&server)).await;
    let talker_id = events.established(talker.local_addr()).await;

    // The talker sends every 100 ms (a quarter of the timeout) for 1.2 s,
    // three timeouts' worth, and gets every echo.
    for i in 0..12u32 {
        let p = one_way(i, 0, b"", b"still here".to_vec());
        talker.send(&p).await;
        assert_eq!(talker.recv().await, p);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(silent.expect_closed().await.is_empty());
    assert_eq!(events.closed(silent_id).await, CloseReason::IdleTimeout);

    // The talker was never closed: it still echoes.
    let p = one_way(99, 0, b"", b"last".to_vec());
    talker.send(&p).await;
    assert_eq!(talker.recv().await, p);
    assert!(server.active_sessions().await.contains(&talker_id));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_idle_timeout_means_silent_sessions_stay_open() {
    let server = start_inline_echo(builder().idle_timeout(None)).await;
    let mut events = pump_events(&server);
    let mut silent = RawClient::connect(addr(&server)).await;
    let id = events.established(silent.local_addr()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(server.active_sessions().await.contains(&id));
    let p = one_way(1, 0, b"", b"awake".to_vec());
    silent.send(&p).await;
    assert_eq!(silent.recv().await, p);
    server.stop().await;
}
