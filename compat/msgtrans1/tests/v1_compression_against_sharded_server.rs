//! Compatibility: payload compression between the PUBLISHED msgtrans 1.0.10
//! client (built with its `zstd` and `flate2` features) and our
//! `sharded_server`, both ways, over TCP and WebSocket, for both server paths
//! (inline echo and `--events`).
//!
//! * 1.0 -> us: `send_with_options` / `request_with_options` with
//!   `with_compression(..)` make 1.0.10 compress the payload with its own
//!   code (`Packet::compress_payload`). Our server must inflate it before the
//!   echo sees it, or the echo would hand back compressed bytes.
//! * us -> 1.0: the echo answers compressed the same way. 1.0.10's
//!   `request_with_options` inflates responses itself; its one-way events
//!   hand over the payload as it arrived (a 1.0 quirk), so the test inflates
//!   those with 1.0's own `Packet::decompress_payload`.
//! * Payloads under our 256-byte threshold come back plain, which 1.0 reads
//!   as any uncompressed packet.

mod common;

use std::time::Duration;

use bytes::Bytes;
use msgtrans::event::{ClientEvent, TransportContext};
use msgtrans::packet::{CompressionType, Packet};
use msgtrans::protocol::{TcpClientConfig, WebSocketClientConfig};
use msgtrans::transport::client::{TransportClient, TransportClientBuilder};
use msgtrans::transport::TransportOptions;
use tokio::sync::broadcast;

use common::{Server, WAIT};

const ALGS: [CompressionType; 2] = [CompressionType::Zstd, CompressionType::Zlib];

/// `n` bytes of text that compress well.
fn text(n: usize) -> Vec<u8> {
    b"compressed by msgtrans 1.0.10, inflated by the shards. "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

async fn v1_client(server: &Server, ws: bool) -> TransportClient {
    let builder = TransportClientBuilder::new();
    let builder = if ws {
        let url = format!("ws://{}/ws", server.ws_addr());
        builder.with_protocol(
            WebSocketClientConfig::new(&url)
                .unwrap()
                .with_connect_timeout(Duration::from_secs(5)),
        )
    } else {
        builder.with_protocol(
            TcpClientConfig::new(&server.addr.to_string())
                .unwrap()
                .with_connect_timeout(Duration::from_secs(5))
                .with_nodelay(true),
        )
    };
    let mut client = builder.build().await.expect("build 1.0 client");
    client.connect().await.expect("1.0 client connect");
    client
}

async fn next_message(events: &mut broadcast::Receiver<ClientEvent>) -> TransportContext {
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("no event from the 1.0 client within the wait")
            .expect("1.0 client event channel closed or lagged");
        match ev {
            ClientEvent::MessageReceived(ctx) => return ctx,
            ClientEvent::MessageSent { .. } | ClientEvent::Connected { .. } => {}
            ClientEvent::Disconnected { reason } => panic!("1.0 client disconnected: {reason:?}"),
            ClientEvent::Error { error } => panic!("1.0 client error event: {error}"),
        }
    }
}

/// 1.0.10's own decoder applied to a payload that arrived as `alg`.
fn v1_inflate(alg: CompressionType, payload: &[u8]) -> Vec<u8> {
    let mut p = Packet::one_way(0, payload.to_vec());
    p.set_compression(alg);
    p.decompress_payload().expect("1.0 decompress_payload");
    p.payload
}

async fn exercise(server: &Server, ws: bool) {
    let client = v1_client(server, ws).await;
    let mut events = client.subscribe_events();
    for alg in ALGS {
        // Requests: 1.0 compresses, we inflate, echo, compress; 1.0 inflates.
        for n in [300, 64 * 1024] {
            let opts = TransportOptions::new().with_compression(alg).with_biz_type(7);
            let r = tokio::time::timeout(WAIT, client.request_with_options(Bytes::from(text(n)), opts))
                .await
                .expect("request within the wait")
                .unwrap_or_else(|e| panic!("{alg:?} request of {n} bytes: {e}"));
            assert!(r == text(n), "{alg:?} {n}-byte request came back different");
        }

        // One-way: the echo arrives compressed, and 1.0's decoder reads it.
        let plain = text(8000);
        client
            .send_with_options(
                Bytes::from(plain.clone()),
                TransportOptions::new()
                    .with_compression(alg)
                    .with_ext_header(Bytes::from_static(b"ext")),
            )
            .await
            .expect("1.0 send_with_options");
        let ctx = next_message(&mut events).await;
        assert!(
            ctx.data.len() < plain.len() / 4,
            "{alg:?} echo was {} bytes",
            ctx.data.len()
        );
        assert!(
            v1_inflate(alg, &ctx.data) == plain,
            "{alg:?} echo inflates to the original"
        );
        assert_eq!(
            ctx.ext_header.as_deref(),
            Some(&b"ext"[..]),
            "ext header is never compressed"
        );

        // Under the threshold: the echo comes back plain.
        client
            .send_with_options(Bytes::from(text(100)), TransportOptions::new().with_compression(alg))
            .await
            .expect("1.0 send_with_options");
        assert_eq!(next_message(&mut events).await.data, text(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_compressed_packets_both_ways_over_tcp() {
    for events in [false, true] {
        let server = Server::start(events);
        exercise(&server, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_compressed_packets_both_ways_over_websocket() {
    for events in [false, true] {
        let server = Server::start_tcp_ws(events);
        exercise(&server, true).await;
    }
}
