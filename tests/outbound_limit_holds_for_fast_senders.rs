//! `max_outbound_bytes` holds against a Tokio task that sends as fast as it
//! can, with no pacing, to a peer that does not read: sends accepted on
//! other threads reserve their bytes in the slot table until the shard
//! takes them, so they cannot pile up in the mesh beyond the limit (16 MiB
//! was once accepted against a 64 KiB limit). Every send that was accepted
//! is delivered, in order; none is refused later by the shard.

mod common;

use common::*;
use msgtrans::error::TransportError;
use msgtrans::event::ServerEvent;

const LIMIT: usize = 64 * 1024;
const CHUNK: usize = 1024;
/// 16 MiB offered, 256 times the limit.
const ATTEMPTS: usize = 16 * 1024;

/// The most the kernel can hold for a peer that does not read: the
/// sender's largest socket buffer, plus a receive window.
fn kernel_bytes() -> usize {
    let wmem = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem").unwrap_or_default();
    let max = wmem
        .split_whitespace()
        .nth(2)
        .and_then(|m| m.parse().ok())
        .unwrap_or(4 << 20);
    max + 64 * 1024
}

async fn tiny_window_client(server: &msgtrans::TransportServer) -> RawClient {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.set_recv_buffer_size(4096).unwrap();
    s.connect(&addr(server).into()).unwrap();
    s.set_nonblocking(true).unwrap();
    let std: std::net::TcpStream = s.into();
    RawClient::from_stream(tokio::net::TcpStream::from_std(std).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpaced_try_send_from_a_tokio_task_stays_within_the_limit_and_loses_nothing() {
    let server = within(
        GUARD,
        "build",
        builder().max_outbound_bytes(LIMIT).write_timeout(None).build(),
    )
    .await
    .unwrap();
    let mut events = pump_events(&server);
    let mut slow = tiny_window_client(&server).await;
    let slow_id = events.established(slow.local_addr()).await;

    let sender = {
        let server = server.clone();
        tokio::spawn(async move {
            let chunk = vec![0xA5u8; CHUNK];
            let mut accepted = Vec::new();
            for _ in 0..ATTEMPTS {
                match server.try_send(slow_id, &chunk) {
                    Ok(r) => accepted.push(r.message_id),
                    Err(TransportError::Backpressure(id)) => assert_eq!(id, slow_id),
                    Err(e) => panic!("unexpected {e:?}"),
                }
            }
            accepted
        })
    };
    let accepted = within(GUARD, "the unpaced sends", sender).await.unwrap();
    let wire_len = 16 + CHUNK;
    let accepted_bytes = accepted.len() * wire_len;
    assert!(accepted.len() < ATTEMPTS, "no backpressure at all");
    assert!(
        accepted_bytes <= LIMIT + wire_len + kernel_bytes(),
        "{accepted_bytes} bytes accepted against a {LIMIT}-byte limit"
    );

    // Everything accepted arrives, once, in order.
    for (n, want) in accepted.iter().enumerate() {
        let p = slow.recv().await;
        assert_eq!(p.header.message_id, *want, "packet {n} of {}", accepted.len());
        assert_eq!(p.payload.len(), CHUNK);
    }
    // And the shard refused none of them after the fact.
    let refused = events
        .try_wait_for(|e| match e {
            ServerEvent::TransportError { session_id, error } if *session_id == Some(slow_id) => {
                Some(format!("{error:?}"))
            }
            _ => None,
        })
        .await;
    assert_eq!(refused, None, "an accepted send was refused later");
    server.stop().await;
}
