//! Proves a pending request fails with `ConnectionClosed` as soon as its
//! connection drops, on the server (`server.request`) and on the client
//! (`client.request`), instead of waiting for its (60 s) timeout.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::TransportError;
use msgtrans::packet::PacketType;
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::TransportClientBuilder;
use tokio::io::AsyncReadExt;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const HANG_GUARD: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_request_fails_with_connection_closed_when_the_client_disconnects() {
    let server = within(
        GUARD,
        "server build",
        builder().request_timeout(REQUEST_TIMEOUT).build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut raw = RawClient::connect(addr(&server)).await;
    let id = events.established(raw.local_addr()).await;

    let s = server.clone();
    let pending = tokio::spawn(async move { s.request(id, b"will you answer?").await });
    // The request reached the client, so it is pending on the server.
    let req = raw.recv().await;
    assert_eq!(req.header.packet_type, PacketType::Request);
    assert_eq!(&req.payload[..], b"will you answer?");
    drop(raw);

    let result = within(HANG_GUARD, "server.request after disconnect", pending)
        .await
        .unwrap();
    match result {
        Err(TransportError::ConnectionClosed(_)) => {}
        other => panic!("expected Err(ConnectionClosed), got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_request_with_explicit_timeout_also_fails_at_once_on_disconnect() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut raw = RawClient::connect(addr(&server)).await;
    let id = events.established(raw.local_addr()).await;
    let s = server.clone();
    let pending = tokio::spawn(async move { s.request_with_timeout(id, b"?", REQUEST_TIMEOUT).await });
    raw.recv().await;
    drop(raw);
    match within(HANG_GUARD, "request_with_timeout after disconnect", pending)
        .await
        .unwrap()
    {
        Err(TransportError::ConnectionClosed(_)) => {}
        other => panic!("expected Err(ConnectionClosed), got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_fails_with_connection_closed_when_the_server_closes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&server_addr.to_string()).unwrap())
        .request_timeout(REQUEST_TIMEOUT)
        .build()
        .await
        .unwrap();
    let (connected, accepted) = tokio::join!(client.connect(), listener.accept());
    connected.expect("client connect");
    let (mut sock, _) = accepted.unwrap();

    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let pending = tokio::spawn(async move { c.request(b"anyone there?").await });
    // Read the whole request (16-byte header + payload), then hang up.
    let mut got = vec![0u8; 16 + b"anyone there?".len()];
    within(GUARD, "raw server reads the request", sock.read_exact(&mut got))
        .await
        .unwrap();
    assert_eq!(got[2], PacketType::Request as u8);
    drop(sock);
    drop(listener);

    match within(HANG_GUARD, "client.request after the server closed", pending)
        .await
        .unwrap()
    {
        Err(TransportError::ConnectionClosed(_)) => {}
        other => panic!("expected Err(ConnectionClosed), got {other:?}"),
    }
    assert!(!client.is_connected().await);
    client.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_server_requests_fail_when_the_server_closes_the_session() {
    let server = within(
        GUARD,
        "server build",
        builder().request_timeout(REQUEST_TIMEOUT).build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut raw = RawClient::connect(addr(&server)).await;
    let id = events.established(raw.local_addr()).await;
    let s = server.clone();
    let pending = tokio::spawn(async move { s.request(id, b"x").await });
    raw.recv().await;
    server.close_session(id).await.expect("close_session");
    match within(HANG_GUARD, "server.request after close_session", pending)
        .await
        .unwrap()
    {
        Err(TransportError::ConnectionClosed(_)) => {}
        other => panic!("expected Err(ConnectionClosed), got {other:?}"),
    }
    raw.expect_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_server_requests_fail_when_the_server_stops() {
    let server = within(
        GUARD,
        "server build",
        builder().request_timeout(REQUEST_TIMEOUT).build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut raw = RawClient::connect(addr(&server)).await;
    let id = events.established(raw.local_addr()).await;
    let s = server.clone();
    let pending = tokio::spawn(async move { s.request(id, b"x").await });
    raw.recv().await;
    within(HANG_GUARD, "stop", server.stop()).await;
    match within(HANG_GUARD, "server.request after stop", pending).await.unwrap() {
        Err(TransportError::ConnectionClosed(msgtrans::CloseReason::Shutdown)) => {}
        other => panic!("expected Err(ConnectionClosed(Shutdown)), got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_client_requests_fail_when_the_client_disconnects() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = listener.local_addr().unwrap();
    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&server_addr.to_string()).unwrap())
        .request_timeout(REQUEST_TIMEOUT)
        .build()
        .await
        .unwrap();
    let (connected, accepted) = tokio::join!(client.connect(), listener.accept());
    connected.expect("client connect");
    let (mut sock, _) = accepted.unwrap();
    let client = std::sync::Arc::new(client);
    let c = client.clone();
    let pending = tokio::spawn(async move { c.request(b"q").await });
    let mut got = vec![0u8; 17];
    within(GUARD, "raw server reads the request", sock.read_exact(&mut got))
        .await
        .unwrap();
    within(HANG_GUARD, "disconnect", client.disconnect())
        .await
        .expect("disconnect");
    match within(HANG_GUARD, "client.request after disconnect", pending)
        .await
        .unwrap()
    {
        Err(TransportError::ConnectionClosed(msgtrans::CloseReason::LocalClose)) => {}
        other => panic!("expected Err(ConnectionClosed(LocalClose)), got {other:?}"),
    }
    client.stop().await;
}
