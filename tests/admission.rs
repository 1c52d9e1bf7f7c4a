//! Who may connect, before any TLS or WebSocket work: per-address caps and
//! connect rates, and TLS handshakes holding a place under the connection
//! limit. Each test plays the hostile peer from one loopback address and a
//! well-behaved client from another, which is served throughout.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::*;
use msgtrans::transport::TransportServer;
use msgtrans::{Packet, Refusal, TcpServerConfig};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};

/// Files this process has open.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// A TCP connection from loopback address `from` (127.0.0.x plays a client).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    within(GUARD, "connect", s.connect(to)).await.unwrap()
}

/// Whether the server closes `s` at once (EOF or reset) rather than keeping it.
async fn closed_by_server(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A request answered over a raw connection from `from`.
async fn served_from(from: [u8; 4], server: &TransportServer) -> RawClient {
    let mut c = RawClient::from_stream(connect_from(from, addr(server)).await);
    c.send(&Packet::request(7, b"ping".to_vec())).await;
    let reply = c.recv().await;
    assert_eq!(&reply.payload[..], b"ping");
    c
}

/// The server's `/metrics` page.
async fn metrics_page(server: &TransportServer) -> String {
    let mut s = TcpStream::connect(server.metrics_addr().unwrap()).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut s, b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    let mut page = String::new();
    within(GUARD, "metrics", s.read_to_string(&mut page)).await.unwrap();
    page
}

fn refusals(server: &TransportServer, why: Refusal) -> u64 {
    server.stats().total.refusals_of(why)
}

#[tokio::test]
async fn one_address_holds_at_most_its_share_while_another_is_served() {
    let metrics = SocketAddr::from(([127, 0, 0, 1], 0));
    let server = start_inline_echo(builder().max_connections_per_ip(3).metrics(metrics)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(served_from([127, 0, 0, 2], &server).await);
    }
    // The fourth from the same address is closed at once...
    let mut extra = connect_from([127, 0, 0, 2], addr(&server)).await;
    assert!(
        closed_by_server(&mut extra).await,
        "a fourth connection from 127.0.0.2 was kept"
    );
    assert_eq!(refusals(&server, Refusal::PerAddress), 1);
    // The refusal is on /metrics, by reason.
    let page = metrics_page(&server).await;
    let per_address: u64 = page
        .lines()
        .filter(|l| {
            l.starts_with("msgtrans_connections_refused_by_reason_total{") && l.contains("reason=\"per_address\"")
        })
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_address, 1, "{page}");
    // ...while another address is served.
    let _other = served_from([127, 0, 0, 3], &server).await;
    // A connection that ends gives its place back.
    drop(held.pop());
    let t0 = Instant::now();
    loop {
        let mut s = RawClient::from_stream(connect_from([127, 0, 0, 2], addr(&server)).await);
        s.send(&Packet::request(8, b"again".to_vec())).await;
        let mut b = bytes::BytesMut::new();
        if let Ok(Some(p)) = read_packet_from(&mut s.stream, &mut b).await {
            assert_eq!(&p.payload[..], b"again");
            break;
        }
        assert!(t0.elapsed() < GUARD, "the freed place never came back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn connects_faster_than_the_rate_are_refused_and_other_addresses_are_not() {
    let server = start_inline_echo(builder().max_connects_per_ip_per_sec(4)).await;
    let mut kept = Vec::new();
    let mut refused = 0;
    for _ in 0..10 {
        let mut c = RawClient::from_stream(connect_from([127, 0, 0, 4], addr(&server)).await);
        c.send(&Packet::request(1, b"x".to_vec())).await;
        let mut b = bytes::BytesMut::new();
        match tokio::time::timeout(Duration::from_secs(5), read_packet_from(&mut c.stream, &mut b)).await {
            Ok(Ok(Some(_))) => kept.push(c),
            _ => refused += 1,
        }
    }
    // A burst of one second's worth (4) gets through; the rest are refused
    // (a slow machine may refill a token or two meanwhile).
    assert!(refused >= 4, "only {refused} of 10 quick connects were refused");
    assert_eq!(refusals(&server, Refusal::ConnectRate), refused);
    let _other = served_from([127, 0, 0, 5], &server).await;
    server.stop().await;
}

#[tokio::test]
async fn silent_tls_peers_cannot_hold_more_places_than_the_limit() {
    let (tls, pem) = msgtrans::TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let b = msgtrans::transport::TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
        .shards(SHARDS)
        .pin_shards(false)
        .max_connections(10)
        .handshake_timeout(Duration::from_millis(1500));
    let server = start_inline_echo(b).await;
    let tls_addr = server.addr_of("tcp+tls").unwrap();
    let fds_before = open_fds();
    // 40 peers connect and never say a word: 10 are held (each until the
    // handshake timeout), the other 30 are closed at once.
    let mut silent = Vec::new();
    for i in 0..40u8 {
        silent.push(connect_from([127, 0, 1, i + 1], tls_addr).await);
    }
    // Well inside the handshake timeout: the refused ones are closed
    // already, the held ones still wait (each read below gives up at once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut closed_at_once = 0;
    for s in &mut silent {
        let mut b = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(5), s.read(&mut b)).await {
            closed_at_once += 1;
        }
    }
    assert_eq!(
        closed_at_once, 30,
        "handshakes past max_connections must be refused at once"
    );
    assert_eq!(refusals(&server, Refusal::ConnectionLimit), 30);
    // Once the handshake timeout frees the places, every socket the attack
    // cost the server is gone (ours too, once dropped): the process holds
    // what it held before the attack.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    drop(silent);
    let t0 = std::time::Instant::now();
    while open_fds() > fds_before && t0.elapsed() < GUARD {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        open_fds() <= fds_before,
        "{} open files, {fds_before} before",
        open_fds()
    );
    // And a real client connects.
    let mut client = msgtrans::transport::TransportClientBuilder::new()
        .with_protocol(
            msgtrans::TcpClientConfig::new(&format!("localhost:{}", tls_addr.port()))
                .unwrap()
                .with_tls(msgtrans::TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap()),
        )
        .build()
        .await
        .unwrap();
    within(GUARD, "tls connect", client.connect()).await.unwrap();
    let r = within(GUARD, "request", client.request(b"after")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"after"[..]));
    assert_eq!(
        server.stats().total.sessions_open,
        1,
        "the silent peers hold nothing now"
    );
    server.stop().await;
}
