//! Compatibility: the PUBLISHED `msgtrans` 2.0.0-beta.3 QUIC client (quinn,
//! ALPN `msgtrans/1`, one long-lived bidirectional stream with u32 length
//! prefixes) against our `sharded_server` example's QUIC listener, which
//! serves 2.0 (ALPN) and 1.0 (no ALPN) clients on one port. The client
//! verifies the example's self-signed QUIC certificate (its custom CA).
//! One-way echoes in order with their ids, options, sequential and
//! concurrent requests, and 1 MiB + 1 and 4 MiB both ways, on the inline
//! and the event-stream echo.

#[path = "../../msgtrans1/tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use msgtrans::{ClientEvent, ClientMessage, QuicClientConfig, SendOptions, TransportClient, TransportClientBuilder};
use tokio::sync::mpsc;

use common::{payload, Opts, Server, WAIT};

fn start(events: bool) -> Server {
    Server::start_with(Opts {
        events,
        quic: true,
        ..Opts::default()
    })
}

async fn v2_quic(server: &Server) -> (TransportClient, mpsc::UnboundedReceiver<Result<ClientMessage, String>>) {
    let pem = server.quic_cert_pem.clone().expect("quic certificate");
    let config = QuicClientConfig::new(&server.quic_addr().to_string())
        .expect("QuicClientConfig")
        .server_name("localhost")
        .ca_cert_pem(pem)
        .connect_timeout(Duration::from_secs(5));
    let mut client = TransportClientBuilder::new()
        .protocol(config)
        .build()
        .await
        .expect("build 2.0 quic client");
    let mut events = client.events().await.expect("2.0 client events()");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(ev) = events.next().await {
            let item = match ev {
                ClientEvent::Message(m) => Ok(m),
                ClientEvent::Connected { .. } | ClientEvent::MessageSent { .. } => continue,
                other => Err(format!("unexpected event: {other:?}")),
            };
            if tx.send(item).is_err() {
                break;
            }
        }
    });
    client.connect().await.expect("2.0 quic connect");
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Result<ClientMessage, String>>) -> ClientMessage {
    match tokio::time::timeout(WAIT, rx.recv()).await {
        Ok(Some(Ok(m))) => m,
        other => panic!("2.0 quic client: {other:?}"),
    }
}

async fn exercise(server: Server) {
    let (client, mut rx) = v2_quic(&server).await;
    let mut sent = Vec::new();
    for i in 0..100 {
        let p = payload("quic", i);
        sent.push((client.send(&p).await.expect("2.0 quic send").message_id, p));
    }
    for (k, (id, p)) in sent.iter().enumerate() {
        let m = next(&mut rx).await;
        assert_eq!(m.message_id(), *id, "echo #{k}: message id (order)");
        assert_eq!(&m.payload()[..], &p[..], "echo #{k}: payload");
    }
    let ext = Bytes::from_static(b"ext-header:v2;trace=quic");
    client
        .send_with_options(
            Bytes::from_static(b"quic with options"),
            SendOptions::new().biz_type(42).ext_header(ext.clone()),
        )
        .await
        .expect("2.0 quic send_with_options");
    let m = next(&mut rx).await;
    assert_eq!((m.biz_type(), m.ext_header()), (42, Some(&ext[..])));
    for i in 0..20 {
        let p = payload("quic-request", i);
        assert_eq!(&client.request(&p).await.expect("2.0 quic request")[..], &p[..]);
    }
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let c = Arc::clone(&client);
        tasks.spawn(async move {
            let p = payload("quic-concurrent", i * 5);
            assert_eq!(&c.request(&p).await.expect("concurrent request")[..], &p[..]);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("concurrent request task");
    }
    for size in [1024 * 1024 + 1, 4 * 1024 * 1024] {
        let big: Vec<u8> = (0..size).map(|k| (k % 251) as u8).collect();
        let r = client.request(&big).await.expect("2.0 quic big request");
        assert!(r[..] == big[..], "{size}-byte request: payload differs");
        let id = client.send(&big).await.expect("2.0 quic big send").message_id;
        let m = next(&mut rx).await;
        assert_eq!(m.message_id(), id);
        assert!(m.payload()[..] == big[..], "{size}-byte echo: payload differs");
    }
    assert_eq!(&client.request(b"last").await.expect("last request")[..], b"last");
    client.disconnect().await.expect("2.0 quic disconnect");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_quic_client_against_inline_echo() {
    exercise(start(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_quic_client_against_event_stream_echo() {
    exercise(start(true)).await;
}
