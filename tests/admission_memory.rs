//! A flood of refused connections leaves nothing behind: after the first
//! wave has warmed the allocator, further waves of the same attack add no
//! resident memory and no open files. This file is a test binary of its own
//! so that no other test shares the process whose memory it reads.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use msgtrans::Refusal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpSocket;

/// Refused connections per wave and kind; four waves run.
const WAVE: usize = 600;
/// How many of a wave's connects are in flight at once.
const IN_FLIGHT: usize = 50;
/// What three further waves may add to resident memory. Measured here: about
/// 100 KiB. A leak of 2 KiB per refused connection adds 3.6 MiB over 1,800
/// TCP refusals alone and fails this (checked by planting one).
const ALLOWED_GROWTH_KIB: u64 = 3 * 1024;

fn resident_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Connects from `from` and waits for the server to close the connection;
/// false when it was kept.
async fn refused(from: SocketAddr, to: SocketAddr) -> bool {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(from).unwrap();
    let mut s = within(GUARD, "connect", s.connect(to)).await.unwrap();
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Asks for a WebSocket upgrade from a foreign Origin and returns the
/// response's status line.
async fn foreign_upgrade(to: SocketAddr) -> String {
    let mut s = within(GUARD, "connect", tokio::net::TcpStream::connect(to))
        .await
        .unwrap();
    let req = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
               Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
               Origin: https://evil.example\r\n\r\n";
    s.write_all(req.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    within(GUARD, "refusal", s.read_to_end(&mut answer)).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// One wave: `WAVE` TCP connects over 127.0.0.2's cap and `WAVE` WebSocket
/// upgrades from a foreign Origin, `IN_FLIGHT` at a time.
async fn wave(tcp: SocketAddr, ws: SocketAddr) {
    let from = SocketAddr::from(([127, 0, 0, 2], 0));
    for _ in 0..WAVE / IN_FLIGHT {
        let chunk: Vec<_> = (0..IN_FLIGHT).map(|_| tokio::spawn(refused(from, tcp))).collect();
        for c in chunk {
            assert!(c.await.unwrap(), "a connection over the per-address cap was kept");
        }
        let chunk: Vec<_> = (0..IN_FLIGHT).map(|_| tokio::spawn(foreign_upgrade(ws))).collect();
        for c in chunk {
            assert_eq!(c.await.unwrap(), "HTTP/1.1 403 Forbidden");
        }
    }
}

#[tokio::test]
async fn waves_of_refused_connections_add_no_memory_and_no_files() {
    let server = start_inline_echo(builder().max_connections_per_ip(1)).await;
    let to = addr(&server);
    // A second server, without per-address caps, refuses foreign Origins.
    let browsers = start_inline_echo(
        builder().with_protocol(
            msgtrans::protocol::WebSocketServerConfig::new("127.0.0.1:0")
                .unwrap()
                .with_path("/ws")
                .with_allowed_origin("https://app.example"),
        ),
    )
    .await;
    let ws = browsers.ws_addr().unwrap();
    // The one place 127.0.0.2 may hold, held throughout.
    let mut held = RawClient::from_stream({
        let s = TcpSocket::new_v4().unwrap();
        s.bind(SocketAddr::from(([127, 0, 0, 2], 0))).unwrap();
        s.connect(to).await.unwrap()
    });
    held.send(&msgtrans::Packet::request(1, b"mine".to_vec())).await;
    assert_eq!(&held.recv().await.payload[..], b"mine");

    wave(to, ws).await;
    let fds_after_first = open_fds();
    let rss_after_first = resident_kib();
    for _ in 0..3 {
        wave(to, ws).await;
    }
    let rss_after_last = resident_kib();
    assert_eq!(server.stats().total.refusals_of(Refusal::PerAddress), (4 * WAVE) as u64);
    assert!(
        rss_after_last <= rss_after_first + ALLOWED_GROWTH_KIB,
        "resident memory grew from {rss_after_first} KiB to {rss_after_last} KiB over {} refused connections",
        6 * WAVE
    );
    // Sockets the server closed may linger on our side for a moment.
    let t0 = Instant::now();
    while open_fds() > fds_after_first && t0.elapsed() < GUARD {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        open_fds() <= fds_after_first,
        "{} open files, {fds_after_first} after the first wave",
        open_fds()
    );
    // The held connection and another address are served after the attack.
    held.send(&msgtrans::Packet::request(2, b"still".to_vec())).await;
    assert_eq!(&held.recv().await.payload[..], b"still");
    let mut other = RawClient::connect(to).await;
    other.send(&msgtrans::Packet::request(3, b"other".to_vec())).await;
    assert_eq!(&other.recv().await.payload[..], b"other");
    server.stop().await;
    browsers.stop().await;
}
