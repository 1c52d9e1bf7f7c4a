//! Proves that 10,000 one-way packets arriving in one write (many frames per
//! read) all come back in order and byte-exact, on the inline path and on
//! the events path, on the shard's epoll table (the default), on glommio's
//! streams (`tcp_epoll(false)`) and on the shard's own ring
//! (`tcp_ring(true)`).

mod common;

use common::*;
use tokio::io::AsyncWriteExt;

const COUNT: u32 = 10_000;

/// 10,000 distinct packets: varied payload lengths (0..=96), biz types,
/// and an extension header on every third one.
fn batch() -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..COUNT {
        let len = (i % 97) as usize;
        let payload: Vec<u8> = (0..len).map(|j| (i as usize * 31 + j) as u8).collect();
        let ext = if i % 3 == 0 {
            format!("ext-{i}").into_bytes()
        } else {
            Vec::new()
        };
        out.extend_from_slice(&wire(&one_way(i + 1, (i % 256) as u8, &ext, payload)));
    }
    out
}

async fn batch_comes_back_exact(server_addr: std::net::SocketAddr) {
    let sent = batch();
    let (mut reader, mut writer) = RawClient::connect(server_addr).await.into_split();
    let to_write = sent.clone();
    let w = tokio::spawn(async move {
        writer.write_all(&to_write).await.expect("write batch");
        writer
    });
    let got = within(
        GUARD * 3,
        "reading the echoed batch",
        reader.recv_exact_unguarded(sent.len()),
    )
    .await;
    let _writer = w.await.unwrap();
    if got != sent {
        let at = got.iter().zip(&sent).position(|(a, b)| a != b).unwrap();
        panic!("echo differs from what was sent at byte {at} of {}", sent.len());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_echo_returns_ten_thousand_packets_from_one_write_in_order_byte_exact() {
    let server = start_inline_echo(builder()).await;
    batch_comes_back_exact(addr(&server)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_echo_on_the_shard_ring_returns_ten_thousand_packets_in_order_byte_exact() {
    let server = start_inline_echo(builder().tcp_ring(true)).await;
    batch_comes_back_exact(addr(&server)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_echo_on_glommio_streams_returns_ten_thousand_packets_in_order_byte_exact() {
    let server = start_inline_echo(builder().tcp_epoll(false)).await;
    batch_comes_back_exact(addr(&server)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_echo_returns_ten_thousand_packets_from_one_write_in_order_byte_exact() {
    let (server, _events) = start_events_echo(builder()).await;
    batch_comes_back_exact(addr(&server)).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_echo_answers_a_batch_of_requests_each_with_its_own_id() {
    let (server, _events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let mut all = Vec::new();
    for i in 0..1000u32 {
        let mut p = msgtrans::Packet::request(i + 1, format!("req-{i}").into_bytes());
        p.set_biz_type(7);
        if i % 2 == 0 {
            p.set_ext_header(b"hdr".to_vec());
        }
        all.extend_from_slice(&wire(&p));
    }
    c.write(&all).await;
    for i in 0..1000u32 {
        let r = c.recv().await;
        assert_eq!(r.header.packet_type, msgtrans::PacketType::Response);
        assert_eq!(r.header.message_id, i + 1);
        assert_eq!(r.header.biz_type, 7);
        assert_eq!(&r.payload[..], format!("req-{i}").as_bytes());
        let ext: &[u8] = if i % 2 == 0 { b"hdr" } else { b"" };
        assert_eq!(&r.ext_header[..], ext);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_batch_still_gets_every_echo_then_eof() {
    // The shard ring, the epoll table (default), glommio's streams.
    for (ring, epoll) in [(true, true), (false, true), (false, false)] {
        half_close_after_batch(ring, epoll).await;
    }
}

async fn half_close_after_batch(ring: bool, epoll: bool) {
    let server = start_inline_echo(builder().tcp_ring(ring).tcp_epoll(epoll)).await;
    let sent = batch();
    let mut c = RawClient::connect(addr(&server)).await;
    c.stream.write_all(&sent).await.unwrap();
    c.stream.shutdown().await.unwrap();
    let got = c.expect_closed().await;
    assert_eq!(
        got.len(),
        sent.len(),
        "echoed bytes before EOF (tcp_ring {ring}, tcp_epoll {epoll})"
    );
    assert!(
        got == sent,
        "echo differs from what was sent (tcp_ring {ring}, tcp_epoll {epoll})"
    );
    server.stop().await;
}
