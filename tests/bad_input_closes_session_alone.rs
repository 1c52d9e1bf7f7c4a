//! Proves a peer that sends an invalid header (wrong version, unknown packet
//! type or compression, payload or extension header over the limit) loses
//! its own session with `ProtocolError(<exact CodecError>)`, while another
//! session on the same server keeps being served.

mod common;

use common::*;
use msgtrans::error::{CloseReason, CodecError};
use msgtrans::event::ServerEvent;
use msgtrans::packet::Packet;

const MAX_PAYLOAD: u32 = 1024;
const MAX_EXT: u16 = 64;

/// A valid header (one-way, id 9, payload length `len`) to corrupt.
fn header(payload_len: u32) -> Vec<u8> {
    let mut h = wire(&Packet::one_way(9, vec![0u8; 0]));
    h[10..14].copy_from_slice(&payload_len.to_be_bytes());
    h
}

/// Opens a good session and a bad one, has the bad one send `bad`, and checks
/// that only the bad one ends, with `want` as its reason.
async fn bad_bytes_close_only_their_session(bad: Vec<u8>, want: CodecError) {
    let server = start_inline_echo(builder().max_payload(MAX_PAYLOAD).max_ext_header(MAX_EXT)).await;
    let mut events = pump_events(&server);
    let mut good = RawClient::connect(addr(&server)).await;
    let good_id = events.established(good.local_addr()).await;
    let mut evil = RawClient::connect(addr(&server)).await;
    let evil_id = events.established(evil.local_addr()).await;

    // The good session works before...
    let ping = one_way(1, 2, b"e", b"before".to_vec());
    good.send(&ping).await;
    assert_eq!(good.recv().await, ping);

    evil.write(&bad).await;
    let echoed = evil.expect_closed().await;
    assert!(
        echoed.is_empty(),
        "server answered bad input with {} bytes",
        echoed.len()
    );
    assert_eq!(events.closed(evil_id).await, CloseReason::ProtocolError(want));

    // ...and after, on whichever shard either session lives.
    for i in 0..10u32 {
        let p = one_way(100 + i, 3, b"", format!("after {i}").into_bytes());
        good.send(&p).await;
        assert_eq!(good.recv().await, p);
    }
    let mut req = Packet::request(55, b"still there?".to_vec());
    req.set_biz_type(4);
    good.send(&req).await;
    let resp = good.recv().await;
    assert_eq!((resp.header.message_id, &resp.payload[..]), (55, &b"still there?"[..]));
    let sessions = server.active_sessions().await;
    assert_eq!(sessions, vec![good_id], "only the good session is left open");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_version_2_closes_that_session_with_unsupported_version() {
    let mut h = header(0);
    h[0] = 2;
    bad_bytes_close_only_their_session(h, CodecError::UnsupportedVersion(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packet_type_7_closes_that_session_with_unknown_packet_type() {
    let mut h = header(0);
    h[2] = 7;
    bad_bytes_close_only_their_session(h, CodecError::UnknownPacketType(7)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compression_3_closes_that_session_with_unknown_compression() {
    let mut h = header(0);
    h[1] = 3;
    bad_bytes_close_only_their_session(h, CodecError::UnknownCompression(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_len_one_over_the_maximum_closes_that_session_before_the_body_arrives() {
    // Only the header is sent: the limit must be checked on the declared length.
    bad_bytes_close_only_their_session(
        header(MAX_PAYLOAD + 1),
        CodecError::PayloadTooLarge {
            len: MAX_PAYLOAD + 1,
            max: MAX_PAYLOAD,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ext_header_len_one_over_the_maximum_closes_that_session() {
    let mut h = header(0);
    h[8..10].copy_from_slice(&(MAX_EXT + 1).to_be_bytes());
    bad_bytes_close_only_their_session(
        h,
        CodecError::ExtHeaderTooLarge {
            len: MAX_EXT + 1,
            max: MAX_EXT,
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_of_exactly_the_maximum_is_accepted() {
    let server = start_inline_echo(builder().max_payload(MAX_PAYLOAD)).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let p = one_way(1, 0, b"", vec![0x5A; MAX_PAYLOAD as usize]);
    c.send(&p).await;
    assert_eq!(c.recv().await, p);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_frames_before_a_bad_header_in_the_same_read_are_still_delivered_as_events() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let mut bytes = Vec::new();
    for i in 0..3u32 {
        bytes.extend_from_slice(&wire(&one_way(i + 1, 1, b"", format!("valid {i}").into_bytes())));
    }
    let mut bad = header(0);
    bad[0] = 9;
    bytes.extend_from_slice(&bad);
    c.write(&bytes).await;
    let mut got = Vec::new();
    loop {
        match events.next().await.expect("event stream ended") {
            ServerEvent::MessageReceived { session_id, context } if session_id == id => {
                got.push(context.as_text_lossy())
            }
            ServerEvent::ConnectionClosed { session_id, reason } if session_id == id => {
                assert_eq!(reason, CloseReason::ProtocolError(CodecError::UnsupportedVersion(9)));
                break;
            }
            _ => {}
        }
    }
    assert_eq!(got, ["valid 0", "valid 1", "valid 2"]);
    c.expect_closed().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_replies_to_valid_frames_before_a_bad_header_are_written_before_the_close() {
    let server = start_inline_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let good = one_way(1, 1, b"", b"valid".to_vec());
    let mut bytes = wire(&good);
    let mut bad = header(0);
    bad[0] = 9;
    bytes.extend_from_slice(&bad);
    c.write(&bytes).await;
    let got = c.expect_closed().await;
    assert_eq!(got, wire(&good), "the echo of the valid frame was lost");
    server.stop().await;
}
