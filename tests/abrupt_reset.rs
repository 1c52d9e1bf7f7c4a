//! A peer that resets its connection (SO_LINGER 0) during the handshake,
//! mid-header, mid-payload or with a request outstanding: exactly one
//! `ConnectionClosed` per established session, the pending request fails
//! at once, the shard's session count returns to 0, and the server goes on.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::{CloseReason, TransportError};
use msgtrans::event::ServerEvent;
use msgtrans::protocol::WebSocketServerConfig;
use msgtrans::TlsServerConfig;
use tokio::io::AsyncWriteExt;

/// Resets `c`: the kernel sends RST instead of FIN.
fn reset(c: RawClient) {
    let std = c.stream.into_std().unwrap();
    socket2::SockRef::from(&std).set_linger(Some(Duration::ZERO)).unwrap();
    drop(std);
}

async fn all_sessions_gone(server: &msgtrans::TransportServer) {
    within(GUARD, "session count back to 0", async {
        while server.session_count().await != 0 || server.sessions_per_shard().iter().any(|n| *n != 0) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// Exactly one close for `id`, and no other close in what has arrived.
async fn exactly_one_close(events: &mut Events, id: msgtrans::SessionId) -> CloseReason {
    let reason = events.closed(id).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let again = events
        .try_wait_for(|e| match e {
            ServerEvent::ConnectionClosed { session_id, .. } if *session_id == id => Some(()),
            _ => None,
        })
        .await;
    assert!(again.is_none(), "a second ConnectionClosed for {id}");
    reason
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_mid_header_and_mid_payload_close_once_with_a_reason() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let packet = wire(&one_way(1, 0, b"", vec![3u8; 1000]));
    for cut in [7, 16 + 500] {
        let mut c = RawClient::connect(addr(&server)).await;
        let id = events.established(c.local_addr()).await;
        c.stream.write_all(&packet[..cut]).await.unwrap();
        c.stream.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        reset(c);
        let reason = exactly_one_close(&mut events, id).await;
        assert_eq!(reason, CloseReason::PeerResetMidFrame, "cut at {cut}");
        all_sessions_gone(&server).await;
    }
    // The server goes on.
    let mut c = RawClient::connect(addr(&server)).await;
    let p = one_way(2, 0, b"", b"alive".to_vec());
    c.send(&p).await;
    assert_eq!(c.recv().await, p);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_with_a_request_outstanding_fails_it_at_once() {
    let server = within(
        GUARD,
        "build",
        builder().request_timeout(Duration::from_secs(60)).build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let s = server.clone();
    let pending = tokio::spawn(async move { s.request(id, b"answer me").await });
    c.recv().await; // the request reached the peer
    reset(c);
    let r = within(GUARD, "request fails at once", pending).await.unwrap();
    assert!(matches!(r, Err(TransportError::ConnectionClosed(_))), "{r:?}");
    exactly_one_close(&mut events, id).await;
    all_sessions_gone(&server).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_during_a_websocket_or_tls_handshake_leaves_no_session() {
    let (tls, _) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let server = start_inline_echo(
        builder()
            .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws"))
            .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls)),
    )
    .await;
    let mut events = pump_events(&server);
    // Half an upgrade request, then RST.
    let mut ws = RawClient::connect(server.ws_addr().unwrap()).await;
    ws.stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpg")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    reset(ws);
    // Half a TLS ClientHello, then RST.
    let mut tls = RawClient::connect(server.addr_of("wss").unwrap()).await;
    tls.stream
        .write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    reset(tls);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(server.session_count().await, 0);
    let stray = events
        .try_wait_for(|e| match e {
            ServerEvent::ConnectionEstablished { .. } | ServerEvent::ConnectionClosed { .. } => Some(e.clone()),
            _ => None,
        })
        .await;
    assert!(stray.is_none(), "no session was established, so none closes: {stray:?}");
    // Plain TCP still works.
    let mut c = RawClient::connect(addr(&server)).await;
    let p = one_way(3, 0, b"", b"after".to_vec());
    c.send(&p).await;
    assert_eq!(c.recv().await, p);
    server.stop().await;
}
