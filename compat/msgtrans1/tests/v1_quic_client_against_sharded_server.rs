//! Compatibility: the PUBLISHED `msgtrans` 1.0.10 QUIC client (quinn, no
//! ALPN, one long-lived bidirectional stream with u32 length prefixes)
//! against our `sharded_server` example's QUIC listener, which serves 1.0
//! (no ALPN) and 2.0 (ALPN `msgtrans/1`) clients on the same port. The
//! client verifies the server's self-signed certificate (written out by the
//! example), as it should by default. Same workout as the WebSocket test:
//! one-way echoes in order, options, sequential and concurrent requests,
//! 1 MiB and 4 MiB both ways, on the inline and the event-stream echo.

mod common;
#[path = "common/workout.rs"]
mod workout;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Opts, Server};
use msgtrans::protocol::QuicClientConfig;
use msgtrans::transport::client::{TransportClient, TransportClientBuilder};

async fn v1_quic_client(addr: SocketAddr, ca: &str) -> TransportClient {
    let config = QuicClientConfig::new(&addr.to_string())
        .expect("QuicClientConfig")
        .with_server_name("localhost")
        .with_ca_cert_pem(ca)
        .with_connect_timeout(Duration::from_secs(5));
    let mut client = TransportClientBuilder::new()
        .with_protocol(config)
        .build()
        .await
        .expect("build 1.0 quic client");
    client.connect().await.expect("1.0 quic client connect");
    assert!(client.is_connected().await);
    client
}

async fn exercise(addr: SocketAddr, ca: &str) {
    workout::exercise(v1_quic_client(addr, ca).await, "quic").await;
}

fn start(events: bool) -> Server {
    Server::start_with(Opts {
        events,
        quic: true,
        ..Opts::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_quic_client_against_inline_echo() {
    let server = start(false);
    exercise(server.quic_addr(), server.quic_cert_pem.as_deref().expect("quic certificate")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_quic_client_against_event_stream_echo() {
    let server = start(true);
    exercise(server.quic_addr(), server.quic_cert_pem.as_deref().expect("quic certificate")).await;
}
