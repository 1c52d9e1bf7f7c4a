//! Payload compression on the wire, spoken with raw bytes built the way
//! MsgTrans 1.0.10 builds them (`zstd::bulk::compress(.., 3)`,
//! `flate2::write::ZlibEncoder` at the default level, payload only):
//! compressed packets reach the handler and the event stream decompressed,
//! replies go out compressed the same way, small payloads stay plain, and a
//! decompression bomb closes its own session alone, over TCP and WebSocket.

mod common;

use std::io::{Read, Write};

use bytes::Bytes;
use common::*;
use msgtrans::error::{CloseReason, CodecError};
use msgtrans::packet::{CompressionType, Packet};
use msgtrans::transport::TransportOptions;
use msgtrans::Inline;

const ALGS: [CompressionType; 2] = [CompressionType::Zstd, CompressionType::Zlib];

/// Compresses like MsgTrans 1.0.10's `Packet::compress_payload`.
fn v1_compress(alg: CompressionType, data: &[u8]) -> Vec<u8> {
    match alg {
        CompressionType::Zstd => zstd::bulk::compress(data, 3).unwrap(),
        CompressionType::Zlib => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        CompressionType::None => data.to_vec(),
    }
}

/// Decompresses like MsgTrans 1.0.10's `Packet::decompress_payload`.
fn v1_decompress(alg: CompressionType, data: &[u8]) -> Vec<u8> {
    match alg {
        CompressionType::Zstd => zstd::bulk::decompress(data, 16 << 20).unwrap(),
        CompressionType::Zlib => {
            let mut out = Vec::new();
            flate2::read::ZlibDecoder::new(data).read_to_end(&mut out).unwrap();
            out
        }
        CompressionType::None => data.to_vec(),
    }
}

/// A packet as 1.0 puts it on the wire: the payload compressed, the header
/// and extension header not.
fn v1_packet(mut p: Packet, alg: CompressionType) -> Packet {
    let packed = v1_compress(alg, &p.payload);
    p.set_compression(alg);
    p.set_payload(packed);
    p
}

/// Text that compresses well, `n` bytes.
fn text(n: usize) -> Vec<u8> {
    b"msgtrans compresses this sentence very well. "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

/// Business type the handler answers with a description of what it saw.
const DESCRIBE: u8 = 9;

/// The inline echo, plus: a request of biz type [`DESCRIBE`] is answered,
/// uncompressed, with what the handler was handed.
fn describing_echo(ctx: &mut Inline<'_>) {
    if ctx.header().biz_type == DESCRIBE {
        let mut h = ctx.header().clone();
        let seen = format!(
            "{:?} {} {}",
            h.compression,
            ctx.payload().len(),
            String::from_utf8_lossy(&ctx.payload()[..20])
        );
        h.packet_type = msgtrans::PacketType::Response;
        h.compression = CompressionType::None;
        ctx.write(&h, &[], seen.as_bytes());
        return;
    }
    inline_echo(ctx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_inline_handler_sees_the_plain_payload_and_replies_go_out_compressed() {
    let server = within(GUARD, "build", builder().handler(describing_echo).build())
        .await
        .unwrap();
    let mut c = RawClient::connect(addr(&server)).await;
    let body = text(4000);
    for alg in ALGS {
        let mut req = Packet::request(1, body.clone());
        req.set_biz_type(DESCRIBE);
        c.send(&v1_packet(req, alg)).await;
        let seen = c.recv().await;
        let want = format!("{alg:?} 4000 {}", String::from_utf8_lossy(&body[..20]));
        assert_eq!(seen.payload_as_string().unwrap(), want);

        // The echo hands back the header it got: the reply is compressed
        // the same way, and 1.0's decoder gets the payload back.
        let p = v1_packet(one_way(7, 3, b"ext!", body.clone()), alg);
        c.send(&p).await;
        let back = c.recv().await;
        assert_eq!(back.compression(), alg);
        assert!(
            back.payload.len() < 400,
            "{alg:?} reply was {} bytes",
            back.payload.len()
        );
        assert_eq!(v1_decompress(alg, &back.payload), body);
        assert_eq!((back.biz_type(), &back.ext_header[..]), (3, &b"ext!"[..]));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_sees_the_plain_payload_and_responses_keep_the_compression() {
    let (server, _events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let body = text(10_000);
    for alg in ALGS {
        c.send(&v1_packet(Packet::request(5, body.clone()), alg)).await;
        let resp = c.recv().await;
        assert_eq!((resp.message_id(), resp.compression()), (5, alg));
        // Had the application been handed compressed bytes, the echo would
        // have compressed them again and one decompression would not do.
        assert_eq!(v1_decompress(alg, &resp.payload), body);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_under_the_threshold_or_that_would_not_shrink_go_out_plain() {
    let (server, mut events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let zstd = TransportOptions::new().with_compression(CompressionType::Zstd);

    // The default threshold is 256 bytes.
    server
        .send_with_options(id, Bytes::from(text(255)), zstd.clone())
        .await
        .unwrap();
    let small = c.recv().await;
    assert_eq!((small.compression(), small.payload.len()), (CompressionType::None, 255));
    assert_eq!(small.payload, text(255));

    server
        .send_with_options(id, Bytes::from(text(256)), zstd.clone())
        .await
        .unwrap();
    let big = c.recv().await;
    assert_eq!(big.compression(), CompressionType::Zstd);
    assert_eq!(v1_decompress(CompressionType::Zstd, &big.payload), text(256));

    // Random bytes do not shrink: sent as they are rather than grown.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let zlib = TransportOptions::new().with_compression(CompressionType::Zlib);
    server
        .send_with_options(id, Bytes::from(noise.clone()), zlib)
        .await
        .unwrap();
    let plain = c.recv().await;
    assert_eq!(plain.compression(), CompressionType::None);
    assert!(plain.payload == noise, "sent as it is");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_threshold_is_configurable() {
    let (server, mut events) = start_events_echo(builder().compression_threshold(1024)).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let opts = TransportOptions::new().with_compression(CompressionType::Zlib);
    server
        .send_with_options(id, Bytes::from(text(1023)), opts.clone())
        .await
        .unwrap();
    assert_eq!(c.recv().await.compression(), CompressionType::None);
    server
        .send_with_options(id, Bytes::from(text(1024)), opts)
        .await
        .unwrap();
    assert_eq!(c.recv().await.compression(), CompressionType::Zlib);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_client_compresses_requests_and_gets_plain_responses() {
    let (server, _events) = start_events_echo(ws_builder()).await;
    // Over WebSocket, and over TCP.
    let ws = ws_client(&server).await;
    let mut tcp = msgtrans::TransportClientBuilder::new()
        .with_protocol(msgtrans::TcpClientConfig::new(&addr(&server).to_string()).unwrap())
        .build()
        .await
        .unwrap();
    within(GUARD, "tcp connect", tcp.connect()).await.unwrap();
    for client in [&ws, &tcp] {
        for alg in ALGS {
            let opts = TransportOptions::new().with_compression(alg).with_biz_type(4);
            let r = within(
                GUARD,
                "request",
                client.request_with_options(Bytes::from(text(5000)), opts),
            )
            .await
            .unwrap();
            assert_eq!(r, text(5000));
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clients_threshold_is_configurable() {
    let server = within(GUARD, "build", builder().handler(describing_echo).build())
        .await
        .unwrap();
    let mut c = msgtrans::TransportClientBuilder::new()
        .with_protocol(msgtrans::TcpClientConfig::new(&addr(&server).to_string()).unwrap())
        .compression_threshold(1024)
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", c.connect()).await.unwrap();
    let opts = TransportOptions::new()
        .with_compression(CompressionType::Zlib)
        .with_biz_type(DESCRIBE);
    for (n, want) in [(1023, CompressionType::None), (1024, CompressionType::Zlib)] {
        let seen = within(
            GUARD,
            "request",
            c.request_with_options(Bytes::from(text(n)), opts.clone()),
        )
        .await
        .unwrap();
        let seen = String::from_utf8(seen.to_vec()).unwrap();
        assert!(
            seen.starts_with(&format!("{want:?} {n} ")),
            "{n} bytes went out as {seen}"
        );
    }
    c.stop().await;
    server.stop().await;
}

/// A packet whose payload inflates to 8 MiB of zeros from a few KiB.
fn bomb(alg: CompressionType) -> Packet {
    v1_packet(Packet::one_way(66, vec![0u8; 8 << 20]), alg)
}

const MAX_PAYLOAD: u32 = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_over_tcp_closes_that_session_alone() {
    for alg in ALGS {
        let server = start_inline_echo(builder().max_payload(MAX_PAYLOAD)).await;
        let mut events = pump_events(&server);
        let mut good = RawClient::connect(addr(&server)).await;
        let good_id = events.established(good.local_addr()).await;
        let mut evil = RawClient::connect(addr(&server)).await;
        let evil_id = events.established(evil.local_addr()).await;

        let b = bomb(alg);
        assert!(
            b.payload.len() < MAX_PAYLOAD as usize,
            "the bomb passes the length check"
        );
        evil.send(&b).await;
        assert!(evil.expect_closed().await.is_empty(), "a bomb gets no answer");
        assert_eq!(
            events.closed(evil_id).await,
            CloseReason::ProtocolError(CodecError::DecompressedTooLarge { max: MAX_PAYLOAD })
        );

        // The neighbour carries on, compressed packets and all.
        let p = v1_packet(one_way(2, 1, b"", text(MAX_PAYLOAD as usize)), alg);
        good.send(&p).await;
        assert_eq!(
            v1_decompress(alg, &good.recv().await.payload),
            text(MAX_PAYLOAD as usize)
        );
        assert_eq!(server.active_sessions().await, vec![good_id]);
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_compressed_payload_closes_that_session() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let mut evil = RawClient::connect(addr(&server)).await;
    let evil_id = events.established(evil.local_addr()).await;
    let mut p = Packet::one_way(1, text(300));
    p.set_compression(CompressionType::Zlib);
    evil.send(&p).await;
    evil.expect_closed().await;
    assert_eq!(
        events.closed(evil_id).await,
        CloseReason::ProtocolError(CodecError::CorruptCompressed(CompressionType::Zlib))
    );
    server.stop().await;
}

/// A raw WebSocket client (tungstenite, blocking) on `server`'s `/ws`.
fn raw_ws(server: &msgtrans::TransportServer) -> tungstenite::WebSocket<std::net::TcpStream> {
    let addr = server.ws_addr().unwrap();
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(GUARD)).unwrap();
    tungstenite::client(format!("ws://{addr}/ws"), s).unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bomb_over_websocket_closes_with_1002_and_the_neighbour_carries_on() {
    for alg in ALGS {
        let server = start_inline_echo(ws_builder().max_payload(MAX_PAYLOAD)).await;
        let mut events = pump_events(&server);
        let good = ws_client(&server).await;
        let mut evil = raw_ws(&server);
        let evil_id = events.established(evil.get_ref().local_addr().unwrap()).await;
        let wire_bytes = wire(&bomb(alg));
        let code = tokio::task::spawn_blocking(move || {
            evil.send(tungstenite::Message::Binary(wire_bytes.into())).unwrap();
            loop {
                match evil.read() {
                    Ok(tungstenite::Message::Close(Some(f))) => return u16::from(f.code),
                    Ok(_) => continue,
                    Err(e) => panic!("no close frame: {e}"),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(code, 1002);
        assert_eq!(
            events.closed(evil_id).await,
            CloseReason::ProtocolError(CodecError::DecompressedTooLarge { max: MAX_PAYLOAD })
        );
        let opts = TransportOptions::new().with_compression(alg);
        let r = within(
            GUARD,
            "neighbour request",
            good.request_with_options(Bytes::from(text(4096)), opts),
        )
        .await
        .unwrap();
        assert_eq!(r, text(4096));
        server.stop().await;
    }
}
