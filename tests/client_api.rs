//! Proves the client's connection lifecycle and errors: nothing works
//! before `connect` (`NotConnected`), `connect`/`disconnect` drive
//! `is_connected` and the client events, a client can reconnect, and a
//! request the server never answers fails with `Timeout` after the
//! configured request timeout.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::{CloseReason, StartError, TransportError};
use msgtrans::event::ClientEvent;
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::{ClientEventStream, TransportClient, TransportClientBuilder};
use tokio::io::AsyncReadExt;

async fn client_to(addr: std::net::SocketAddr, timeout: Duration) -> TransportClient {
    within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr.to_string()).unwrap())
            .request_timeout(timeout)
            .build(),
    )
    .await
    .expect("client build")
}

async fn next_event(events: &mut ClientEventStream) -> ClientEvent {
    within(GUARD, "client event", events.recv())
        .await
        .expect("client event stream ended")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_before_connect_fails_with_not_connected() {
    let server = start_inline_echo(builder()).await;
    let client = client_to(addr(&server), Duration::from_secs(30)).await;
    assert!(!client.is_connected().await);
    assert_eq!(client.current_session_id().await, None);
    assert!(matches!(client.send(b"x").await, Err(TransportError::NotConnected)));
    assert!(matches!(client.request(b"x").await, Err(TransportError::NotConnected)));
    assert!(matches!(client.disconnect().await, Err(TransportError::NotConnected)));
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_builder_without_a_protocol_is_a_config_error() {
    let r = TransportClientBuilder::new().build().await;
    assert!(matches!(r, Err(TransportError::Config(_))), "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_to_a_closed_port_fails() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut client = client_to(port, Duration::from_secs(30)).await;
    let r = within(GUARD, "connect to closed port", client.connect()).await;
    assert!(
        matches!(&r, Err(TransportError::Start(e)) if matches!(**e, StartError::Connect { addr, .. } if addr == port)),
        "{r:?}"
    );
    assert!(!client.is_connected().await);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_send_and_disconnect_drive_is_connected_and_the_client_events() {
    let server = start_inline_echo(builder()).await;
    let mut client = client_to(addr(&server), Duration::from_secs(30)).await;
    let mut events = client.subscribe_events();
    within(GUARD, "connect", client.connect()).await.expect("connect");
    assert!(client.is_connected().await);
    let sid = client.current_session_id().await.expect("session id");
    match next_event(&mut events).await {
        ClientEvent::Connected { info } => {
            assert_eq!(info.session_id, sid);
            assert_eq!(info.peer_addr, addr(&server));
        }
        other => panic!("expected Connected, got {other:?}"),
    }
    // connect() on an open connection keeps it.
    within(GUARD, "second connect", client.connect())
        .await
        .expect("connect again");
    assert_eq!(client.current_session_id().await, Some(sid));

    let sent = client.send(b"echo me").await.expect("send");
    match next_event(&mut events).await {
        ClientEvent::MessageReceived(ctx) => {
            assert_eq!(&ctx.data[..], b"echo me");
            assert_eq!(ctx.message_id, sent.message_id);
            assert!(!ctx.is_request());
        }
        other => panic!("expected the echo, got {other:?}"),
    }
    let r = within(GUARD, "request", client.request(b"ping"))
        .await
        .expect("request");
    assert_eq!(r.data.as_deref(), Some(&b"ping"[..]));

    within(GUARD, "disconnect", client.disconnect())
        .await
        .expect("disconnect");
    match next_event(&mut events).await {
        ClientEvent::Disconnected { reason } => assert_eq!(reason, CloseReason::LocalClose),
        other => panic!("expected Disconnected, got {other:?}"),
    }
    assert!(!client.is_connected().await);
    assert!(matches!(client.send(b"x").await, Err(TransportError::NotConnected)));
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_connected_is_false_as_soon_as_disconnect_returns() {
    let server = start_inline_echo(builder()).await;
    let mut client = client_to(addr(&server), Duration::from_secs(30)).await;
    for round in 0..20 {
        within(GUARD, "connect", client.connect()).await.expect("connect");
        assert!(client.is_connected().await, "round {round}");
        within(GUARD, "disconnect", client.disconnect())
            .await
            .expect("disconnect");
        assert!(
            !client.is_connected().await,
            "round {round}: still connected after disconnect() returned"
        );
        assert!(
            matches!(client.send(b"x").await, Err(TransportError::NotConnected)),
            "round {round}: send accepted after disconnect() returned"
        );
    }
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_right_after_disconnect_opens_a_new_working_connection() {
    let server = start_inline_echo(builder()).await;
    let mut client = client_to(addr(&server), Duration::from_secs(30)).await;
    for round in 0..20 {
        within(GUARD, "connect", client.connect()).await.expect("connect");
        let sid = client.current_session_id().await;
        let q = format!("round {round}");
        let r = within(GUARD, "request", client.request(q.as_bytes())).await;
        assert_eq!(r.expect("request").data.as_deref(), Some(q.as_bytes()), "round {round}");
        within(GUARD, "disconnect", client.disconnect())
            .await
            .expect("disconnect");
        within(GUARD, "reconnect", client.connect()).await.expect("reconnect");
        let new_sid = client.current_session_id().await;
        let r = within(GUARD, "request after reconnect", client.request(b"again")).await;
        match r {
            Ok(r) => assert_eq!(r.data.as_deref(), Some(&b"again"[..]), "round {round}"),
            Err(e) => panic!("round {round}: request after reconnect failed: {e:?} (session before {sid:?}, after reconnect {new_sid:?})"),
        }
        assert_ne!(new_sid, sid, "round {round}: connect() kept the closing session");
        within(GUARD, "disconnect", client.disconnect())
            .await
            .expect("disconnect");
    }
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_server_never_answers_times_out_with_the_configured_duration() {
    // A raw server that reads everything and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let mut client = client_to(server_addr, Duration::from_millis(300)).await;
    within(GUARD, "connect", client.connect()).await.expect("connect");
    let r = within(GUARD, "request that times out", client.request(b"hello?")).await;
    match r {
        Err(TransportError::Timeout { operation, duration }) => {
            assert_eq!(operation, "request");
            assert_eq!(duration, Duration::from_millis(300));
        }
        other => panic!("expected Err(Timeout), got {other:?}"),
    }
    // A timeout fails the request, not the connection.
    assert!(client.is_connected().await);
    client.send(b"still here").await.expect("send after timeout");
    client.stop().await;
    sink.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_with_options_timeout_overrides_the_client_default() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        while s.read(&mut buf).await.map(|n| n > 0).unwrap_or(false) {}
    });
    let mut client = client_to(server_addr, Duration::from_secs(60)).await;
    within(GUARD, "connect", client.connect()).await.expect("connect");
    let opts = msgtrans::transport::TransportOptions::new().with_timeout(Duration::from_millis(200));
    let r = within(
        GUARD,
        "request_with_options",
        client.request_with_options(bytes::Bytes::from_static(b"?"), opts),
    )
    .await;
    match r {
        Err(TransportError::Timeout { duration, .. }) => assert_eq!(duration, Duration::from_millis(200)),
        other => panic!("expected Err(Timeout), got {other:?}"),
    }
    client.stop().await;
    sink.abort();
}

/// The request sweeper visits only sessions with something pending: one
/// whose requests were all answered leaves its list, and must rejoin it
/// when it asks again, or that request would never time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_after_answered_ones_still_times_out() {
    // A raw server that answers the first request, then never again.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let sink = tokio::spawn(async move {
        let (s, _) = listener.accept().await.unwrap();
        let mut s = RawClient::from_stream(s);
        let first = s.recv().await;
        let mut answer = msgtrans::packet::Packet::response(first.header.message_id, first.payload.to_vec());
        answer.set_biz_type(first.header.biz_type);
        s.send(&answer).await;
        while s.recv_or_eof().await.is_some() {}
    });
    let mut client = client_to(server_addr, Duration::from_millis(300)).await;
    within(GUARD, "connect", client.connect()).await.expect("connect");
    let r = within(GUARD, "answered request", client.request(b"one")).await;
    assert_eq!(
        r.expect("the first request is answered").data.as_deref(),
        Some(&b"one"[..])
    );
    // Several sweeps pass with nothing pending: the session leaves the list.
    tokio::time::sleep(Duration::from_millis(100)).await;
    match within(GUARD, "request that times out", client.request(b"two")).await {
        Err(TransportError::Timeout { duration, .. }) => assert_eq!(duration, Duration::from_millis(300)),
        other => panic!("expected Err(Timeout), got {other:?}"),
    }
    client.stop().await;
    sink.abort();
}
