//! QUIC config options no other test covers, each shown to do what its doc
//! says: a server certificate from PEM strings, the client's ALPN, server
//! name, connect timeout, target address and idle timeout.

mod common;

use std::time::{Duration, Instant};

use common::*;
use msgtrans::error::CloseReason;
use msgtrans::event::ServerEvent;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{
    RetryConfig, TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder,
};

/// A server whose certificate (for `localhost`) comes from PEM strings,
/// the way MsgTrans 1.0 configures QUIC.
async fn pem_server() -> (TransportServer, Events, String) {
    pem_server_with(TransportServerBuilder::new()).await
}

/// [`pem_server`] on a builder of the test's own, with one shard.
async fn pem_server_with(b: TransportServerBuilder) -> (TransportServer, Events, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
    let quic = QuicServerConfig::new("127.0.0.1:0")
        .unwrap()
        .with_cert_pem(cert_pem.clone())
        .unwrap()
        .with_key_pem(key_pem)
        .unwrap();
    let b = b.shards(1).pin_shards(false).with_protocol(quic);
    let (server, events) = start_events_echo(b).await;
    (server, events, cert_pem)
}

fn config(server: &TransportServer, pem: &str) -> QuicClientConfig {
    QuicClientConfig::new(&format!("localhost:{}", server.quic_addr().unwrap().port()))
        .unwrap()
        .with_ca_cert_pem(pem)
        .unwrap()
}

/// One connect attempt (no retries), bounded by the hang guard.
async fn connect(cfg: QuicClientConfig) -> Result<TransportClient, msgtrans::TransportError> {
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .retry_strategy(RetryConfig::none())
        .build()
        .await
        .unwrap();
    within(GUARD, "quic connect", c.connect()).await?;
    Ok(c)
}

async fn echo_ok(c: &TransportClient) {
    let r = within(GUARD, "request", c.request(b"ping")).await.expect("request");
    assert_eq!(r.data.as_deref(), Some(&b"ping"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_pem_strings_is_served_and_bad_or_half_pem_is_refused() {
    let (server, _events, pem) = pem_server().await;
    let c = connect(config(&server, &pem)).await.expect("trusting client");
    echo_ok(&c).await;
    c.stop().await;
    server.stop().await;
    // Checked as soon as both halves are there, whichever comes second.
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let base = || QuicServerConfig::new("127.0.0.1:0").unwrap();
    let bad_cert = base().with_cert_pem("not a certificate").unwrap();
    assert!(bad_cert.with_key_pem(cert.signing_key.serialize_pem()).is_err());
    let bad_key = base().with_key_pem("not a key").unwrap();
    assert!(bad_key.with_cert_pem(cert.cert.pem()).is_err());
    // Half a certificate does not quietly become a self-signed one.
    let half = base().with_cert_pem(cert.cert.pem()).unwrap();
    let r = TransportServerBuilder::new()
        .shards(1)
        .with_protocol(half)
        .build()
        .await;
    assert!(r.is_err(), "a server with a certificate and no key started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_alpn_none_is_served_as_msgtrans_1_and_another_alpn_is_refused() {
    let (server, _events, pem) = pem_server().await;
    let none = connect(config(&server, &pem).with_alpn(None)).await.expect("no ALPN");
    echo_ok(&none).await;
    none.stop().await;
    let h3 = connect(config(&server, &pem).with_alpn(Some(b"h3"))).await;
    assert!(h3.is_err(), "ALPN h3 was admitted");
    assert_eq!(server.session_count().await, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_server_name_decides_which_name_the_certificate_must_carry() {
    let (server, _events, pem) = pem_server().await;
    // Dialled by address: the name to check comes from with_server_name.
    let addr = server.quic_addr().unwrap();
    let by_ip = || {
        QuicClientConfig::new(&addr.to_string())
            .unwrap()
            .with_ca_cert_pem(&pem)
            .unwrap()
    };
    let named = connect(by_ip().with_server_name("localhost")).await.expect("localhost");
    echo_ok(&named).await;
    named.stop().await;
    let wrong = connect(by_ip().with_server_name("elsewhere.example")).await;
    assert!(
        wrong.is_err(),
        "a certificate for localhost passed as elsewhere.example"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_target_address_replaces_the_target() {
    let (server, _events, pem) = pem_server().await;
    // Configured for a port nobody serves, then pointed at the server.
    let cfg = QuicClientConfig::new("localhost:9")
        .unwrap()
        .with_ca_cert_pem(&pem)
        .unwrap()
        .with_server_name("localhost")
        .with_target_address(server.quic_addr().unwrap());
    let c = connect(cfg).await.expect("connect to the replaced target");
    echo_ok(&c).await;
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_bounds_a_connect_that_gets_no_answer() {
    // A UDP socket that is never read: the handshake gets no answer.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let cfg = QuicClientConfig::new(&silent.local_addr().unwrap().to_string())
        .unwrap()
        .dangerous_skip_verification()
        .with_connect_timeout(Duration::from_millis(400));
    let started = Instant::now();
    let r = connect(cfg).await;
    let took = started.elapsed();
    assert!(r.is_err(), "connected to a socket that never answers");
    // Well under the 10 s default.
    assert!(took < UNDER_DEFAULT, "gave up after {took:?}");
    assert!(took >= Duration::from_millis(300), "gave up after {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_idle_timeout_is_negotiated_and_closes_a_quiet_connection() {
    // The server keeps its 30 s default; the client asks for 500 ms, and
    // the smaller side wins on both ends.
    let (server, mut events, pem) = pem_server().await;
    let idle = Duration::from_millis(500);
    let c = connect(config(&server, &pem).with_max_idle_timeout(idle))
        .await
        .expect("connect");
    let id = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    let reason = within(UNDER_DEFAULT, "idle close", events.closed(id)).await;
    assert_eq!(reason, CloseReason::IdleTimeout);
    c.stop().await;
    server.stop().await;
}

/// What the server still holds for a client that has stopped reading
/// (its event queue is full), after 1 MiB was sent to it.
async fn held_for_a_stalled_client(window: Option<u32>) -> u64 {
    let (server, mut events, pem) = pem_server_with(TransportServerBuilder::new().max_outbound_bytes(8 << 20)).await;
    let mut cfg = config(&server, &pem);
    if let Some(w) = window {
        cfg = cfg.with_stream_receive_window(w).with_receive_window(w);
    }
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .event_capacity(1)
        .retry_strategy(RetryConfig::none())
        .build()
        .await
        .unwrap();
    // Subscribed and never read: once one event waits, the client stops
    // reading its connection.
    let stalled = c.subscribe_events();
    within(GUARD, "connect", c.connect()).await.unwrap();
    let id = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    let chunk = vec![7u8; 16 << 10];
    for _ in 0..64 {
        within(GUARD, "send", server.send(id, &chunk)).await.unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    let held = server.session_stats(id).await.expect("session").queued_bytes;
    drop(stalled);
    c.stop().await;
    server.stop().await;
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_receive_windows_bound_what_the_server_may_send_ahead() {
    // With the default windows (2 MiB per stream, 8 MiB in all) the whole
    // 1 MiB leaves the server and waits in the stalled client.
    let default = held_for_a_stalled_client(None).await;
    assert!(
        default < 64 << 10,
        "default windows: the server still holds {default} bytes"
    );
    // With 16 KiB windows the client grants little, and the rest stays
    // queued on the server.
    let small = held_for_a_stalled_client(Some(16 << 10)).await;
    assert!(small > 900 << 10, "16 KiB windows: the server holds only {small} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_to_a_port_nobody_serves_is_refused_at_once() {
    // Bound and released: nothing listens there now, so the kernel answers
    // "port unreachable".
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = QuicClientConfig::new(&format!("127.0.0.1:{port}"))
        .unwrap()
        .dangerous_skip_verification();
    let started = Instant::now();
    let r = connect(cfg).await;
    let took = started.elapsed();
    let err = r.expect_err("connected to a port nobody serves");
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    // The 10 s default connect timeout did not have to run out.
    assert!(took < UNDER_DEFAULT, "refused only after {took:?}");
}
