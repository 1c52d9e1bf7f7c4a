//! Per-send options and whole-packet sends, seen from the wire: the server's
//! `send_to_session` / `request_to_session` with a full `Packet`, its
//! `send_with_options` / `request_with_options`, and the client's
//! `send_with_options`. Every option shows up in the bytes a raw peer reads.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use msgtrans::error::TransportError;
use msgtrans::event::ServerEvent;
use msgtrans::packet::{CompressionType, Packet, PacketType};
use msgtrans::transport::TransportOptions;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_session_puts_the_whole_packet_on_the_wire() {
    let (server, mut events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let mut p = Packet::one_way(4242, b"as is".to_vec());
    p.set_biz_type(200);
    p.set_ext_header(b"route=a".to_vec());
    p.set_priority(true);
    server.send_to_session(id, p.clone()).await.unwrap();
    assert_eq!(c.recv().await, p);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_to_session_returns_the_response_with_its_biz_type_and_ext_header() {
    let (server, mut events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let mut req = Packet::request(0, b"question".to_vec());
    req.set_biz_type(42);
    req.set_ext_header(b"trace=1".to_vec());
    let s = server.clone();
    let pending = tokio::spawn(async move { s.request_to_session(id, req).await });

    let got = c.recv().await;
    assert_eq!(got.packet_type(), PacketType::Request);
    assert_eq!((got.biz_type(), &got.ext_header[..]), (42, &b"trace=1"[..]));
    // The peer answers with its own biz type and extension header: the
    // server hands both back (MsgTrans 1.0 reset the biz type to 0).
    let mut resp = Packet::response(got.message_id(), b"answer".to_vec());
    resp.set_biz_type(43);
    resp.set_ext_header(b"trace=2".to_vec());
    c.send(&resp).await;
    let r = within(GUARD, "response", pending).await.unwrap().unwrap();
    assert_eq!(
        (r.biz_type(), &r.ext_header[..], &r.payload[..]),
        (43, &b"trace=2"[..], &b"answer"[..])
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_clients_answer_keeps_the_requests_biz_type_and_ext_header() {
    let server = within(GUARD, "build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut client = msgtrans::TransportClientBuilder::new()
        .with_protocol(msgtrans::TcpClientConfig::new(&addr(&server).to_string()).unwrap())
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", client.connect()).await.unwrap();
    let mut stream = client.subscribe_events();
    tokio::spawn(async move {
        while let Ok(ev) = stream.recv().await {
            if let msgtrans::ClientEvent::MessageReceived(ctx) = ev {
                let answer = [&b"re: "[..], &ctx.data].concat();
                let _ = ctx.respond(answer);
            }
        }
    });
    let id = events
        .wait_for("client session", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    let mut req = Packet::request(0, b"ping".to_vec());
    req.set_biz_type(17);
    req.set_ext_header(b"ctx".to_vec());
    let r = within(GUARD, "request_to_session", server.request_to_session(id, req))
        .await
        .unwrap();
    assert_eq!(
        (r.biz_type(), &r.ext_header[..], &r.payload[..]),
        (17, &b"ctx"[..], &b"re: ping"[..])
    );
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_send_and_request_with_options_apply_every_option() {
    let (server, mut events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let body = "an option-laden payload ".repeat(40);

    let opts = TransportOptions::new()
        .with_biz_type(5)
        .with_ext_header(Bytes::from_static(b"e"))
        .with_compression(CompressionType::Zstd)
        .with_message_id(777);
    let sent = server
        .send_with_options(id, Bytes::from(body.clone()), opts)
        .await
        .unwrap();
    assert_eq!(sent.message_id, 777);
    let p = c.recv().await;
    assert_eq!(
        (p.packet_type(), p.message_id(), p.biz_type(), &p.ext_header[..]),
        (PacketType::OneWay, 777, 5, &b"e"[..])
    );
    assert_eq!(p.compression(), CompressionType::Zstd);
    assert_eq!(zstd::bulk::decompress(&p.payload, 1 << 20).unwrap(), body.as_bytes());

    let opts = TransportOptions::new()
        .with_biz_type(6)
        .with_compression(CompressionType::Zlib)
        .with_timeout(Duration::from_secs(30));
    let s = server.clone();
    let b = body.clone();
    let pending = tokio::spawn(async move { s.request_with_options(id, Bytes::from(b), opts).await });
    let q = c.recv().await;
    assert_eq!(
        (q.packet_type(), q.biz_type(), q.compression()),
        (PacketType::Request, 6, CompressionType::Zlib)
    );
    let mut resp = Packet::response(q.message_id(), q.payload.clone());
    resp.set_compression(CompressionType::Zlib);
    c.send(&resp).await;
    // The response's payload comes back inflated.
    let r = within(GUARD, "request_with_options", pending).await.unwrap().unwrap();
    assert_eq!(r, body.as_bytes());

    // The timeout option replaces the server's 30 s default.
    let opts = TransportOptions::new().with_timeout(Duration::from_millis(100));
    let r = within(
        GUARD,
        "timeout",
        server.request_with_options(id, Bytes::from_static(b"?"), opts),
    )
    .await;
    match r {
        Err(TransportError::Timeout { duration, .. }) => assert_eq!(duration, Duration::from_millis(100)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_send_with_options_arrives_with_every_option() {
    let server = within(GUARD, "build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut client = msgtrans::TransportClientBuilder::new()
        .with_protocol(msgtrans::TcpClientConfig::new(&addr(&server).to_string()).unwrap())
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", client.connect()).await.unwrap();
    let body = "client side options ".repeat(50);
    let opts = TransportOptions::new()
        .with_biz_type(99)
        .with_ext_header(Bytes::from_static(b"hdr"))
        .with_compression(CompressionType::Zlib)
        .with_message_id(31);
    client.send_with_options(Bytes::from(body.clone()), opts).await.unwrap();
    let ctx = events
        .wait_for("message", |e| match e {
            ServerEvent::MessageReceived { context, .. } => Some(context.clone()),
            _ => None,
        })
        .await;
    assert_eq!((ctx.message_id, ctx.biz_type), (31, 99));
    assert_eq!(ctx.ext_header.as_deref(), Some(&b"hdr"[..]));
    assert_eq!(
        (ctx.compression(), &ctx.data[..]),
        (CompressionType::Zlib, body.as_bytes())
    );
    client.stop().await;
    server.stop().await;
}
