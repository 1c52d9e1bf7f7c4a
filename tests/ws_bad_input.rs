//! WebSocket bad input, spoken with raw bytes: each closes that session
//! alone, with the right close code or HTTP status, and another session
//! on the same server keeps echoing.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::error::{CloseReason, CodecError};
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends `request` and returns the response head.
async fn http(server: &TransportServer, request: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(GUARD, "response head", s.read(&mut b)).await.unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    (s, String::from_utf8(head).unwrap())
}

/// An upgraded raw connection.
async fn upgraded(server: &TransportServer) -> TcpStream {
    let (s, head) = http(server, UPGRADE).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{head}"
    );
    s
}

/// A client frame: FIN + opcode, masked unless `mask` is None.
fn frame(opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}

const MASK: Option<[u8; 4]> = Some([1, 2, 3, 4]);

/// Reads one server frame: (opcode byte, payload).
async fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    within(GUARD, "frame head", s.read_exact(&mut h)).await.unwrap();
    assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.unwrap();
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.unwrap();
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    within(GUARD, "frame body", s.read_exact(&mut p)).await.unwrap();
    (h[0], p)
}

/// Expects a close frame with `code`, then the end of the connection.
async fn expect_close(s: &mut TcpStream, code: u16) {
    let (op, body) = read_frame(s).await;
    assert_eq!(op, 0x88, "a close frame");
    assert_eq!(&body[..2], &code.to_be_bytes(), "close code");
    let mut rest = Vec::new();
    let _ = within(GUARD, "close", s.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
}

/// A working neighbour: echoes a packet over its own upgraded connection.
async fn neighbour_still_echoes(s: &mut TcpStream) {
    let p = wire(&one_way(3, 1, b"", b"neighbour".to_vec()));
    s.write_all(&frame(2, &p, MASK)).await.unwrap();
    let (op, body) = read_frame(s).await;
    assert_eq!(op, 0x82);
    assert_eq!(body, p);
}

/// Plain WebSocket sessions run on glommio's streams or, with
/// `tcp_ring(true)`, on the shard's ring: each case runs on both.
const PATHS: [bool; 2] = [false, true];

async fn case(build: impl Fn() -> TransportServerBuilder, bad: Vec<u8>, code: u16, reason: CloseReason) {
    for ring in PATHS {
        let server = start_inline_echo(build().tcp_ring(ring)).await;
        let mut events = pump_events(&server);
        let mut good = upgraded(&server).await;
        let mut evil = upgraded(&server).await;
        let evil_id = events.established(evil.local_addr().unwrap()).await;
        evil.write_all(&bad).await.unwrap();
        expect_close(&mut evil, code).await;
        assert_eq!(events.closed(evil_id).await, reason, "ring {ring}");
        neighbour_still_echoes(&mut good).await;
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmasked_client_frame_closes_with_1002() {
    let p = wire(&one_way(1, 0, b"", b"naked".to_vec()));
    case(ws_builder, frame(2, &p, None), 1002, CloseReason::WebSocket(1002)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_closes_with_1009_from_its_header_alone() {
    // Only the header is sent: the limit is checked before the body arrives.
    let mut bad = frame(2, &vec![0u8; 2000], MASK);
    bad.truncate(8);
    // The largest message is the largest packet: 16 + 0 + 1024 bytes here.
    case(
        || ws_builder().max_payload(1024).max_ext_header(0),
        bad,
        1009,
        CloseReason::WebSocket(1009),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_over_the_frame_limit_closes_with_1009_even_inside_a_small_message() {
    // One fragment of 200 bytes over a 128-byte frame limit; the message
    // itself would be small enough.
    let mut bad = frame(2, &[0u8; 200], MASK);
    bad[0] &= 0x7F; // not final
    case(
        || ws_builder().max_ws_frame_size(128),
        bad,
        1009,
        CloseReason::WebSocket(1009),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    case(
        ws_builder,
        frame(1, &[0xC3, 0x28], MASK),
        1007,
        CloseReason::WebSocket(1007),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_message_that_is_not_a_packet_closes_with_a_protocol_error() {
    let mut p = wire(&one_way(1, 0, b"", b"v2".to_vec()));
    p[0] = 2;
    case(
        ws_builder,
        frame(2, &p, MASK),
        1002,
        CloseReason::ProtocolError(CodecError::UnsupportedVersion(2)),
    )
    .await;
    // A message holding a packet and a stray byte is not one packet either.
    let mut p = wire(&one_way(1, 0, b"", b"extra".to_vec()));
    p.push(0);
    let len = p.len() as u32;
    case(
        ws_builder,
        frame(2, &p, MASK),
        1002,
        CloseReason::ProtocolError(CodecError::NotOnePacket { message: len }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_path_gets_404_and_plain_http_gets_400() {
    let server = start_inline_echo(ws_builder()).await;
    let (_, head) = http(&server, &UPGRADE.replace("GET /ws ", "GET /other ")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "{head}");
    let (_, head) = http(&server, "GET /ws HTTP/1.1\r\nHost: test\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    let (_, head) = http(&server, "not http at all\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_says_nothing_is_dropped_after_the_handshake_timeout() {
    let server = start_inline_echo(ws_builder().handshake_timeout(Duration::from_millis(300))).await;
    let mut silent = TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
    let mut good = upgraded(&server).await;
    let mut rest = Vec::new();
    let n = within(
        UNDER_DEFAULT,
        "dropped (handshake_timeout 300 ms, default 10 s)",
        silent.read_to_end(&mut rest),
    )
    .await
    .unwrap_or(0);
    assert_eq!(n, 0, "nothing is sent to a peer that never asked");
    assert!(server.stats().iter().map(|s| s.handshake_failures).sum::<u64>() >= 1);
    neighbour_still_echoes(&mut good).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_pong_and_close_is_echoed() {
    for ring in PATHS {
        let server = start_inline_echo(ws_builder().tcp_ring(ring)).await;
        let mut events = pump_events(&server);
        let mut s = upgraded(&server).await;
        let id = events.established(s.local_addr().unwrap()).await;
        s.write_all(&frame(9, b"are you there", MASK)).await.unwrap();
        assert_eq!(read_frame(&mut s).await, (0x8A, b"are you there".to_vec()));
        s.write_all(&frame(8, &1000u16.to_be_bytes(), MASK)).await.unwrap();
        expect_close(&mut s, 1000).await;
        assert_eq!(events.closed(id).await, CloseReason::PeerClosed, "ring {ring}");
        server.stop().await;
    }
}

/// Frames a client writes together with its upgrade request (the last one
/// cut short) reach the session as its first input, on either path: on
/// the ring they are the bytes the handshake read past its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_upgrade_request_are_answered_on_both_paths() {
    for ring in PATHS {
        let server = start_inline_echo(ws_builder().tcp_ring(ring)).await;
        let mut s = TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
        let first = wire(&one_way(1, 0, b"", b"with the request".to_vec()));
        let second = wire(&one_way(2, 0, b"x", vec![9u8; 3000]));
        let second_frame = frame(2, &second, MASK);
        let (head, tail) = second_frame.split_at(40);
        let mut burst = UPGRADE.as_bytes().to_vec();
        burst.extend_from_slice(&frame(2, &first, MASK));
        burst.extend_from_slice(head);
        s.write_all(&burst).await.unwrap();
        let mut resp = Vec::new();
        let mut b = [0u8; 1];
        while !resp.ends_with(b"\r\n\r\n") {
            within(GUARD, "response head", s.read_exact(&mut b)).await.unwrap();
            resp.push(b[0]);
        }
        assert!(resp.starts_with(b"HTTP/1.1 101"), "ring {ring}");
        assert_eq!(read_frame(&mut s).await, (0x82, first), "ring {ring}");
        s.write_all(tail).await.unwrap();
        assert_eq!(read_frame(&mut s).await, (0x82, second), "ring {ring}");
        server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fragmented_message_is_reassembled() {
    for ring in PATHS {
        let server = start_inline_echo(ws_builder().tcp_ring(ring)).await;
        let mut s = upgraded(&server).await;
        let p = wire(&one_way(4, 2, b"ext", vec![7u8; 300]));
        let (a, b) = p.split_at(100);
        let mut first = frame(2, a, MASK);
        first[0] &= 0x7F; // not final
        s.write_all(&first).await.unwrap();
        s.write_all(&frame(9, b"ping between fragments", MASK)).await.unwrap();
        s.write_all(&frame(0, b, MASK)).await.unwrap(); // continuation, final
        assert_eq!(read_frame(&mut s).await.0, 0x8A);
        assert_eq!(read_frame(&mut s).await, (0x82, p), "ring {ring}");
        server.stop().await;
    }
}
