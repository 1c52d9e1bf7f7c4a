//! Proves the per-shard counters behind `server.stats()` and
//! `server.session_stats()` move as traffic, relays, requests, queueing and
//! closes happen, per shard and per protocol, and that the total is their sum.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::packet::{Packet, PacketType};
use msgtrans::protocol::{TcpClientConfig, TcpServerConfig, WebSocketClientConfig, WebSocketServerConfig};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer};
use msgtrans::{CloseKind, CloseReason, Protocol, SessionId, StatsSnapshot, TlsClientConfig, TlsServerConfig};
use tokio::io::AsyncReadExt;

/// Polls `server.stats()` until `cond` holds. Counters are stored by their
/// shard without synchronising with the reader, so a test waits for a value
/// rather than expecting it at one instant.
async fn eventually(server: &TransportServer, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) -> StatsSnapshot {
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let s = server.stats();
        if cond(&s) {
            return s;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: never held; last {s:#?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_traffic_is_counted_per_shard_per_session_and_in_total() {
    let (server, mut events) = start_events_echo(builder()).await;
    let mut clients = connect_covering_shards(&server, &mut events).await;
    const N: u64 = 10;
    let p = one_way(7, 1, b"", vec![0xab; 100]);
    let len = wire(&p).len() as u64;
    for (c, _) in clients.iter_mut() {
        for _ in 0..N {
            c.send(&p).await;
        }
        for _ in 0..N {
            assert_eq!(c.recv().await.payload, p.payload);
        }
    }
    let n = clients.len() as u64;
    let s = eventually(&server, "echoes counted", |s| {
        s.total.protocol(Protocol::Tcp).bytes_out == n * N * len
    })
    .await;
    let tcp = s.total.protocol(Protocol::Tcp);
    assert_eq!((tcp.msgs_in, tcp.msgs_out), (n * N, n * N));
    assert_eq!(tcp.bytes_in, n * N * len);
    assert_eq!(s.total.msgs_in, tcp.msgs_in, "no other protocol carried traffic");
    assert_eq!(s.total.protocol(Protocol::WebSocket).msgs_in, 0);
    assert_eq!((s.total.queued_bytes, s.total.queued_packets), (0, 0));
    assert_eq!(s.total.sessions_open, clients.len());
    assert_eq!(s.shards.len(), server.shards());
    for shard in &s.shards {
        let mine = clients.iter().filter(|(_, id)| id.shard() == shard.shard).count() as u64;
        assert_eq!(shard.sessions_open as u64, mine, "shard {}", shard.shard);
        assert_eq!(shard.sessions_total, mine, "shard {}", shard.shard);
        assert_eq!(shard.protocol(Protocol::Tcp).msgs_in, mine * N, "shard {}", shard.shard);
    }
    // Buffers are taken, given back and taken again.
    assert!(s.total.pool.misses > 0 && s.total.pool.hits > 0, "{:?}", s.total.pool);

    for (_, id) in &clients {
        let ss = server.session_stats(*id).await.expect("session is open");
        assert_eq!(ss.id, *id);
        assert_eq!(ss.protocol, Protocol::Tcp);
        assert_eq!((ss.msgs_in, ss.msgs_out), (N, N));
        assert_eq!((ss.bytes_in, ss.bytes_out), (N * len, N * len));
        assert_eq!((ss.queued_bytes, ss.queued_packets, ss.requests_in_flight), (0, 0, 0));
    }
    let (c, id) = clients.pop().unwrap();
    drop(c);
    events.closed(id).await;
    assert!(
        server.session_stats(id).await.is_none(),
        "a closed session has no stats"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_dropped_by_the_application_go_home_as_remote_returns() {
    let server = within(GUARD, "build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    events.established(c.local_addr()).await;
    for i in 1..=3 {
        // Over 1 KiB: smaller payloads are plain allocations, not pooled
        // buffers (the pool's round trip costs more than malloc at 64 B).
        c.send(&one_way(i, 0, b"", vec![b'd'; 2048])).await;
        // The event (and its pooled payload) is dropped here, off the shard.
        events
            .wait_for("message", |e| {
                matches!(e, msgtrans::ServerEvent::MessageReceived { .. }).then_some(())
            })
            .await;
    }
    eventually(&server, "remote returns", |s| s.total.pool.remote_returns >= 3).await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_are_counted_by_reason() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let a = addr(&server);

    let c = RawClient::connect(a).await;
    let id = events.established(c.local_addr()).await;
    drop(c);
    assert_eq!(events.closed(id).await, CloseReason::PeerClosed);

    let c = RawClient::connect(a).await;
    let id = events.established(c.local_addr()).await;
    server.close_session(id).await.unwrap();
    assert_eq!(events.closed(id).await, CloseReason::LocalClose);

    let mut c = RawClient::connect(a).await;
    let id = events.established(c.local_addr()).await;
    c.write(&[9u8; 16]).await; // version 9
    assert!(matches!(events.closed(id).await, CloseReason::ProtocolError(_)));

    // A close is counted before its event is sent, so it shows at once.
    let s = server.stats().total;
    assert_eq!(s.closes_of(CloseKind::PeerClosed), 1);
    assert_eq!(s.closes_of(CloseKind::LocalClose), 1);
    assert_eq!(s.closes_of(CloseKind::ProtocolError), 1);
    assert_eq!(s.closes_total(), 3);

    let c = RawClient::connect(a).await;
    events.established(c.local_addr()).await;
    server.stop().await;
    let s = server.stats().total;
    assert_eq!(s.closes_of(CloseKind::Shutdown), 1);
    assert_eq!(s.closes_total(), 4);
    assert_eq!((s.sessions_open, s.sessions_total), (0, 4));
}

async fn connected(cfg: impl msgtrans::protocol::ClientProtocolConfig) -> TransportClient {
    let mut c = TransportClientBuilder::new().with_protocol(cfg).build().await.unwrap();
    within(GUARD, "connect", c.connect()).await.expect("connect");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_protocol_is_counted_under_its_own_name() {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let trust = || TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap();
    let b = builder()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls.clone()))
        .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws"))
        .with_protocol(
            WebSocketServerConfig::new("127.0.0.1:0")
                .unwrap()
                .with_path("/ws")
                .with_tls(tls),
        );
    let server = start_inline_echo(b).await;
    let port = |p| server.addr_of(p).unwrap().port();
    let clients = [
        connected(TcpClientConfig::new(&addr(&server).to_string()).unwrap()).await,
        connected(
            TcpClientConfig::new(&format!("localhost:{}", port("tcp+tls")))
                .unwrap()
                .with_tls(trust()),
        )
        .await,
        connected(WebSocketClientConfig::new(&format!("ws://127.0.0.1:{}/ws", port("websocket"))).unwrap()).await,
        connected(
            WebSocketClientConfig::new(&format!("wss://localhost:{}/ws", port("wss")))
                .unwrap()
                .with_tls(trust()),
        )
        .await,
    ];
    for c in &clients {
        let r = within(GUARD, "request", c.request(b"which protocol?")).await.unwrap();
        assert_eq!(r.data.as_deref(), Some(&b"which protocol?"[..]));
    }
    let wanted = [Protocol::Tcp, Protocol::TcpTls, Protocol::WebSocket, Protocol::Wss];
    // A session counts the bytes it wrote just after the socket took them,
    // so a client can hold its response a moment before they are counted:
    // wait for the bytes as well as the packets.
    let s = eventually(&server, "one request per protocol", |s| {
        wanted.iter().all(|p| {
            let t = s.total.protocol(*p);
            t.msgs_out == 1 && t.bytes_out > 0
        })
    })
    .await;
    for p in wanted {
        let t = s.total.protocol(p);
        assert_eq!((t.msgs_in, t.msgs_out), (1, 1), "{}", p.label());
        assert!(t.bytes_in > 0 && t.bytes_out > 0, "{}", p.label());
    }
    assert_eq!(s.total.protocol(Protocol::Quic), Default::default());
    for c in &clients {
        c.stop().await;
    }
    server.stop().await;
}

/// Forwards every packet to the session whose id is its payload.
fn forward(ctx: &mut msgtrans::Inline<'_>) {
    let target = SessionId::from(u64::from_be_bytes(ctx.payload().try_into().expect("8-byte id")));
    let _ = ctx.send_to(target, ctx.to_packet());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_relays_and_doorbell_wakeups_are_counted() {
    let server = within(GUARD, "build", builder().handler(forward).build())
        .await
        .unwrap();
    let mut events = pump_events(&server);
    let mut clients = connect_covering_shards(&server, &mut events).await;
    let from = clients.iter().position(|(_, id)| id.shard() == 0).unwrap();
    let to = clients.iter().position(|(_, id)| id.shard() == 1).unwrap();
    let target = clients[to].1;
    let before = server.stats();
    const N: u64 = 5;
    for i in 0..N {
        let p = one_way(i as u32 + 1, 0, b"", target.as_u64().to_be_bytes().to_vec());
        clients[from].0.send(&p).await;
        // One at a time: the target shard goes back to sleep in between.
        let got = clients[to].0.recv().await;
        assert_eq!(got.header.message_id, i as u32 + 1);
    }
    let s = eventually(&server, "relays counted", |s| {
        s.shards[1].cross_shard_in - before.shards[1].cross_shard_in == N
    })
    .await;
    assert_eq!(s.shards[0].cross_shard_out - before.shards[0].cross_shard_out, N);
    assert_eq!(s.shards[1].cross_shard_out, before.shards[1].cross_shard_out);
    assert_eq!(s.total.cross_shard_in, s.total.cross_shard_out);
    assert!(
        s.shards[1].wakeups > before.shards[1].wakeups,
        "a relay to a sleeping shard rings its doorbell"
    );
    assert!(s.shards[1].mesh_in - before.shards[1].mesh_in >= N);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_and_timeouts_are_counted() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;

    // Unanswered: in flight until it times out.
    let s2 = server.clone();
    let lost = tokio::spawn(async move { s2.request_with_timeout(id, b"?", Duration::from_millis(300)).await });
    assert_eq!(c.recv().await.header.packet_type, PacketType::Request);
    eventually(&server, "one in flight", |s| s.total.requests_in_flight == 1).await;
    assert_eq!(server.session_stats(id).await.unwrap().requests_in_flight, 1);
    assert!(lost.await.unwrap().is_err());
    let s = eventually(&server, "timed out", |s| s.total.request_timeouts == 1).await;
    assert_eq!(s.total.requests_in_flight, 0);

    // Answered: in flight until the response arrives.
    let s2 = server.clone();
    let answered = tokio::spawn(async move { s2.request_with_timeout(id, b"!", GUARD).await });
    let req = c.recv().await;
    eventually(&server, "one in flight", |s| s.total.requests_in_flight == 1).await;
    let mut resp = Packet::new(PacketType::Response, req.header.message_id);
    resp.set_payload(b"answer".to_vec());
    c.send(&resp).await;
    assert!(answered.await.unwrap().is_ok());
    let s = eventually(&server, "answered", |s| s.total.requests_in_flight == 0).await;
    assert_eq!(s.total.request_timeouts, 1);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_queue_depth_rises_while_the_peer_stalls_and_falls_as_it_reads() {
    let server = start_inline_echo(builder().max_outbound_bytes(1 << 20)).await;
    let mut events = pump_events(&server);
    let c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let chunk = vec![7u8; 64 * 1024];
    // The peer reads nothing, so once the kernel's socket buffers are full
    // (several MiB on loopback) the session's own queue stays non-empty.
    // Sends the queue has no room for are refused, which is fine here.
    let mut s = server.stats();
    for _ in 0..4096 {
        let _ = server.try_send(id, &chunk);
        tokio::time::sleep(Duration::from_millis(1)).await;
        s = server.stats();
        if s.total.queued_bytes > 0 && s.total.queued_packets > 0 {
            break;
        }
    }
    assert!(s.total.queued_bytes > 0 && s.total.queued_packets > 0, "{s:#?}");
    assert!(s.shards[id.shard()].queued_bytes > 0);
    let ss = server.session_stats(id).await.unwrap();
    assert!(ss.queued_bytes > 0 && ss.queued_packets > 0, "{ss:?}");

    // Now the peer reads everything: the queue empties while the session stays open.
    let mut stream = c.stream;
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 256 * 1024];
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let s = eventually(&server, "queue drained", |s| {
        s.total.queued_bytes == 0 && s.total.queued_packets == 0
    })
    .await;
    assert_eq!(s.total.sessions_open, 1);
    server.stop().await;
    reader.abort();
}

/// Connections that come and go (each sends a packet, reads its echo and
/// hangs up, or hangs up at once) leave their buffers to the next ones: a
/// session that ends holding its read buffer gives it back to the pool.
/// Before, each such session freed it, and the next one took a fresh
/// buffer (a pool miss, zeroed to 256 KiB), so misses grew with the
/// connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_sessions_give_their_buffers_back() {
    let server = start_inline_echo(builder().shards(1)).await;
    const N: u64 = 200;
    for i in 0..N {
        let mut c = RawClient::connect(addr(&server)).await;
        if i % 2 == 0 {
            let p = one_way(i as u32, 0, b"", format!("hello {i}"));
            c.send(&p).await;
            assert_eq!(c.recv().await, p);
        }
        drop(c);
        // One at a time: each session is gone before the next one opens.
        eventually(&server, "session closed", |s| {
            s.total.sessions_total == i + 1 && s.total.sessions_open == 0
        })
        .await;
    }
    let pool = server.stats().total.pool;
    assert!(
        pool.misses < 20,
        "{N} sessions in turn missed the pool {} times: {pool:?}",
        pool.misses
    );
    server.stop().await;
}
