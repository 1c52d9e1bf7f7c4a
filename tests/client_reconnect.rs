//! Proves `auto_reconnect` and `retry_strategy`: when the server goes away,
//! requests in flight fail at once with `ConnectionClosed`, calls made while
//! disconnected fail at once with `NotConnected`, `Disconnected` and then
//! (once the server is back on the same port) `Connected` are reported, and
//! requests succeed again. A client that runs out of attempts reports
//! `ReconnectFailed` and stays down until `connect()`; `connect()` itself
//! retries as the strategy says.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use msgtrans::error::{StartError, TransportError};
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::protocol::{TcpClientConfig, TcpServerConfig};
use msgtrans::transport::{
    ClientEventStream, TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder,
};
use msgtrans::RetryConfig;

/// Quick retries, so a restart is noticed soon; many of them, so the test's
/// restart always comes before the client gives up.
fn patient() -> RetryConfig {
    RetryConfig {
        max_retries: 1000,
        initial_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        backoff_multiplier: 2.0,
    }
}

async fn client(addr: SocketAddr, retry: RetryConfig, auto: bool) -> TransportClient {
    within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr.to_string()).unwrap())
            .retry_strategy(retry)
            .auto_reconnect(auto)
            .build(),
    )
    .await
    .expect("client build")
}

/// A server on `addr` that echoes requests, except a request whose payload
/// is `hold`, which it never answers.
async fn holding_server(addr: SocketAddr) -> TransportServer {
    let server = within(
        GUARD,
        "server build",
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
            .shards(SHARDS)
            .pin_shards(false)
            .build(),
    )
    .await
    .expect("server build");
    let mut events = server.subscribe_events();
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let ServerEvent::MessageReceived { context, .. } = ev {
                if context.is_request() && &context.data[..] != b"hold" {
                    let data = context.data.clone();
                    let _ = context.respond(data);
                }
            }
        }
    });
    server
}

/// The next event that is not a received message.
async fn next_lifecycle(events: &mut ClientEventStream) -> ClientEvent {
    loop {
        match within(GUARD, "client event", events.recv())
            .await
            .expect("stream ended")
        {
            ClientEvent::MessageReceived(_) => continue,
            other => return other,
        }
    }
}

async fn echo_ok(c: &TransportClient, what: &[u8]) {
    let r = within(GUARD, "request", c.request(what)).await.expect("request");
    assert_eq!(r.data.as_deref(), Some(what));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_is_reconnected_to_and_serves_requests_again() {
    let first = holding_server("127.0.0.1:0".parse().unwrap()).await;
    let addr = addr(&first);
    let mut c = client(addr, patient(), true).await;
    let mut events = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    let first_sid = match next_lifecycle(&mut events).await {
        ClientEvent::Connected { info } => info.session_id,
        other => panic!("expected Connected, got {other:?}"),
    };
    echo_ok(&c, b"before").await;

    // A request the server holds is in flight when the server goes away.
    let c = std::sync::Arc::new(c);
    let c2 = std::sync::Arc::clone(&c);
    let held = tokio::spawn(async move { c2.request(b"hold").await });
    // Wait until the server has read it (its second message), so it is
    // really in flight when the server stops.
    within(GUARD, "held request reaching the server", async {
        while first.stats().iter().map(|s| s.msgs_in).sum::<u64>() < 2 {
            tokio::task::yield_now().await;
        }
    })
    .await;
    first.stop().await;
    let r = within(GUARD, "held request", held).await.unwrap();
    assert!(
        matches!(r, Err(TransportError::ConnectionClosed(_))),
        "in-flight request should fail with ConnectionClosed, got {r:?}"
    );
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));

    // Nothing is listening: calls fail at once, none waits for the reconnect.
    assert!(matches!(c.request(b"x").await, Err(TransportError::NotConnected)));
    assert!(matches!(c.send(b"x").await, Err(TransportError::NotConnected)));
    assert!(!c.is_connected().await);

    let second = start_inline_echo(
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
            .shards(SHARDS)
            .pin_shards(false),
    )
    .await;
    match next_lifecycle(&mut events).await {
        ClientEvent::Connected { info } => {
            assert_eq!(info.peer_addr, addr);
            assert_ne!(info.session_id, first_sid, "a reconnect is a new session");
        }
        other => panic!("expected Connected after the restart, got {other:?}"),
    }
    echo_ok(&c, b"after").await;
    assert!(c.is_connected().await);
    c.stop().await;
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_runs_out_of_attempts_reports_reconnect_failed_and_stays_down() {
    let server = start_inline_echo(builder()).await;
    let addr = addr(&server);
    let retry = RetryConfig {
        max_retries: 3,
        initial_delay: Duration::from_millis(5),
        max_delay: Duration::from_millis(20),
        backoff_multiplier: 2.0,
    };
    let mut c = client(addr, retry, true).await;
    let mut events = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Connected { .. }
    ));
    server.stop().await;
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));
    match next_lifecycle(&mut events).await {
        ClientEvent::Error {
            error: TransportError::ReconnectFailed { attempts, .. },
        } => assert_eq!(attempts, 3),
        other => panic!("expected ReconnectFailed, got {other:?}"),
    }
    assert!(matches!(c.request(b"x").await, Err(TransportError::NotConnected)));

    // After giving up, connect() is how the application tries again.
    let back = start_inline_echo(
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
            .shards(SHARDS)
            .pin_shards(false),
    )
    .await;
    within(GUARD, "connect again", c.connect())
        .await
        .expect("connect again");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Connected { .. }
    ));
    echo_ok(&c, b"again").await;
    c.stop().await;
    back.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_retries_until_the_server_is_up() {
    // Reserve a port, then free it: nothing listens there yet.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = client(addr, patient(), false).await;
    let connecting = tokio::spawn(async move {
        let r = c.connect().await;
        (c, r)
    });
    // Not a timing assertion: the server starts late so that the first
    // attempts fail; connect() must keep trying until it is up.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = start_inline_echo(
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
            .shards(SHARDS)
            .pin_shards(false),
    )
    .await;
    let (c, r) = within(GUARD, "connect with retries", connecting).await.unwrap();
    r.expect("connect should succeed once the server is up");
    echo_ok(&c, b"up").await;
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_connect_fails_at_the_first_refusal() {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut c = client(addr, RetryConfig::none(), false).await;
    let r = within(GUARD, "connect", c.connect()).await;
    assert!(
        matches!(&r, Err(TransportError::Start(e)) if matches!(**e, StartError::Connect { addr: a, .. } if a == addr)),
        "{r:?}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_the_server_closes_is_reopened_while_the_server_stays_up() {
    let (server, mut server_events) = start_events_echo(builder()).await;
    let mut c = client(addr(&server), patient(), true).await;
    let mut events = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Connected { .. }
    ));
    let first = c.current_session_id().await.unwrap();
    let on_server = server_events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    server.close_session(on_server).await.expect("close_session");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));
    match next_lifecycle(&mut events).await {
        ClientEvent::Connected { info } => assert_ne!(info.session_id, first),
        other => panic!("expected Connected, got {other:?}"),
    }
    echo_ok(&c, b"reopened").await;
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_connection_of_a_pool_is_watched_and_reopened() {
    let (server, mut server_events) = start_events_echo(builder()).await;
    let mut c = within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr(&server).to_string()).unwrap())
            .shards(2)
            .connection_pool(3)
            .retry_strategy(patient())
            .auto_reconnect(true)
            .build(),
    )
    .await
    .expect("client build");
    let mut events = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    let mut on_server = Vec::new();
    for _ in 0..3 {
        assert!(matches!(
            next_lifecycle(&mut events).await,
            ClientEvent::Connected { .. }
        ));
        on_server.push(
            server_events
                .wait_for("ConnectionEstablished", |e| match e {
                    ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
                    _ => None,
                })
                .await,
        );
    }
    let before = c.session_ids();
    // Each connection drops in turn, and each comes back.
    for id in on_server {
        server.close_session(id).await.expect("close_session");
        assert!(matches!(
            next_lifecycle(&mut events).await,
            ClientEvent::Disconnected { .. }
        ));
        assert!(matches!(
            next_lifecycle(&mut events).await,
            ClientEvent::Connected { .. }
        ));
    }
    let after = c.session_ids();
    assert_eq!(after.len(), 3, "{after:?}");
    assert!(after.iter().all(|id| !before.contains(id)), "{before:?} -> {after:?}");
    for i in 0..6 {
        echo_ok(&c, format!("pool {i}").as_bytes()).await;
    }
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_connection_is_reopened_too() {
    let (server, mut server_events) = start_events_echo(ws_builder()).await;
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    let mut c = within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(msgtrans::protocol::WebSocketClientConfig::new(&url).unwrap())
            .retry_strategy(patient())
            .auto_reconnect(true)
            .build(),
    )
    .await
    .expect("client build");
    let mut events = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Connected { .. }
    ));
    let id = server_events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    server.close_session(id).await.expect("close_session");
    assert!(matches!(
        next_lifecycle(&mut events).await,
        ClientEvent::Disconnected { .. }
    ));
    match next_lifecycle(&mut events).await {
        ClientEvent::Connected { info } => assert_eq!(info.protocol, "websocket"),
        other => panic!("expected Connected, got {other:?}"),
    }
    echo_ok(&c, b"ws again").await;
    c.stop().await;
    server.stop().await;
}
