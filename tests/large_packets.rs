//! Proves 8 MiB packets are echoed intact, alone and sixteen back to back
//! on one connection while the client reads concurrently (neither side
//! stalls on the other's full socket buffers).

mod common;

use std::time::Duration;

use common::*;
use msgtrans::packet::Packet;
use tokio::io::AsyncWriteExt;

const SIZE: usize = 8 * 1024 * 1024;

/// An 8 MiB payload whose bytes depend on their position and on `seed`, so
/// a shifted, truncated or swapped chunk is noticed.
fn payload(seed: u32) -> Vec<u8> {
    let mut v: Vec<u8> = (0..SIZE).map(|j| (j ^ (j >> 8) ^ (j >> 16)) as u8).collect();
    v[..4].copy_from_slice(&seed.to_be_bytes());
    let n = v.len();
    v[n - 4..].copy_from_slice(&seed.to_be_bytes());
    v
}

fn assert_same(got: &Packet, want: &Packet, what: &str) {
    assert_eq!(got.header, want.header, "{what}: header");
    assert_eq!(got.ext_header, want.ext_header, "{what}: ext header");
    if got.payload != want.payload {
        let at = got.payload.iter().zip(want.payload.iter()).position(|(a, b)| a != b);
        panic!(
            "{what}: payload differs (len {} vs {}, first difference at {at:?})",
            got.payload.len(),
            want.payload.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_8_mib_packet_is_echoed_intact() {
    let server = start_inline_echo(builder()).await;
    let c = RawClient::connect(addr(&server)).await;
    let p = one_way(1, 3, b"big", payload(1));
    let bytes = wire(&p);
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move { w.write_all(&bytes).await.map(|_| w) });
    let got = within(Duration::from_secs(60), "8 MiB echo", r.recv()).await;
    writer.await.unwrap().expect("write");
    assert_same(&got, &p, "8 MiB echo");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_8_mib_request_is_answered_intact_through_the_event_stream() {
    let (server, _events) = start_events_echo(builder()).await;
    let c = RawClient::connect(addr(&server)).await;
    let mut req = Packet::request(77, payload(2));
    req.set_ext_header(b"big-request".to_vec());
    let bytes = wire(&req);
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move { w.write_all(&bytes).await.map(|_| w) });
    let got = within(Duration::from_secs(60), "8 MiB response", r.recv()).await;
    writer.await.unwrap().expect("write");
    let mut want = req.clone();
    want.set_packet_type(msgtrans::PacketType::Response);
    assert_same(&got, &want, "8 MiB response");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_8_mib_packets_back_to_back_all_come_back_intact_without_stalling() {
    const N: u32 = 16;
    let server = start_inline_echo(builder()).await;
    let c = RawClient::connect(addr(&server)).await;
    let (mut r, mut w) = c.into_split();
    let writer = tokio::spawn(async move {
        for i in 0..N {
            let p = one_way(i + 1, i as u8, b"", payload(i));
            w.write_all(&wire(&p)).await.expect("write");
        }
        w
    });
    within(Duration::from_secs(60), "16 x 8 MiB echo", async {
        for i in 0..N {
            let got = r.recv().await;
            let want = one_way(i + 1, i as u8, b"", payload(i));
            assert_same(&got, &want, &format!("packet {i}"));
        }
    })
    .await;
    let _w = writer.await.unwrap();
    server.stop().await;
}
