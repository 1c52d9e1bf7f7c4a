//! Proves `server.stop()` really stops: connected clients see EOF, every
//! session reports `ConnectionClosed { reason: Shutdown }`, the port is
//! free when `stop` returns, `serve()` returns, and the event stream ends
//! after `ServerStopped`.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use msgtrans::error::CloseReason;
use msgtrans::event::ServerEvent;
use msgtrans::protocol::TcpServerConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_every_session_with_shutdown_and_frees_the_port() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let port_addr = addr(&server);
    let mut stream = server.subscribe_events();
    // Connect until both shards have a session, taking events straight from
    // the stream so that the test sees the whole sequence up to its end.
    let mut clients = Vec::new();
    let mut ids = HashSet::new();
    let mut shards = HashSet::new();
    for _ in 0..64 {
        let c = RawClient::connect(port_addr).await;
        let peer = c.local_addr();
        let id = within(GUARD, "ConnectionEstablished", async {
            loop {
                if let ServerEvent::ConnectionEstablished { session_id, info } = stream.recv().await.expect("stream") {
                    if info.peer_addr == peer {
                        return session_id;
                    }
                }
            }
        })
        .await;
        ids.insert(id);
        shards.insert(id.shard());
        clients.push(c);
        if shards.len() == server.shards() {
            break;
        }
    }
    assert_eq!(shards.len(), server.shards(), "could not cover every shard");

    let waiter = server.clone();
    let serve = tokio::spawn(async move { waiter.serve().await });

    within(GUARD, "server.stop", server.stop()).await;

    // Nothing listens on the port any more (see also the strict check in
    // the_port_is_free_the_moment_stop_returns), and a plain listener (no
    // SO_REUSEPORT) can bind it.
    wait_until_nothing_listens_on(port_addr.port()).await;
    let l = std::net::TcpListener::bind(port_addr).unwrap_or_else(|e| panic!("bind {port_addr} after stop: {e}"));
    drop(l);
    match std::net::TcpStream::connect(port_addr) {
        Err(e) => assert_eq!(
            e.kind(),
            std::io::ErrorKind::ConnectionRefused,
            "connect after stop: {e}"
        ),
        Ok(_) => panic!("something still accepts on {port_addr} after stop()"),
    }

    for c in clients.iter_mut() {
        let leftover = c.expect_closed().await;
        assert!(leftover.is_empty());
    }

    let mut closed = HashSet::new();
    let mut saw_stopped = false;
    loop {
        match within(GUARD, "event stream after stop", stream.recv()).await {
            Ok(ServerEvent::ConnectionClosed { session_id, reason }) => {
                assert!(!saw_stopped, "ConnectionClosed after ServerStopped");
                assert_eq!(reason, CloseReason::Shutdown, "close reason of {session_id}");
                assert!(closed.insert(session_id), "two close events for {session_id}");
            }
            Ok(ServerEvent::ServerStopped) => {
                assert!(!saw_stopped, "ServerStopped twice");
                saw_stopped = true;
            }
            Ok(other) => panic!("unexpected event after stop: {other:?}"),
            Err(_) => break,
        }
    }
    assert!(saw_stopped, "the stream ended without ServerStopped");
    assert_eq!(closed, ids, "every session reports one ConnectionClosed");
    within(GUARD, "serve() after stop", serve)
        .await
        .unwrap()
        .expect("serve");

    // Operations after stop fail instead of hanging.
    let any = *ids.iter().next().unwrap();
    assert!(server.send(any, b"x").await.is_err());
    // stop() is idempotent.
    within(GUARD, "second stop", server.stop()).await;
}

/// Whether a TCP socket in LISTEN state is bound to `port` on 127.0.0.1 or
/// 0.0.0.0 in this network namespace (from /proc/net/tcp).
fn something_listens_on(port: u16) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        let local_port = f[1].rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
        local_port == Some(port) && f[3] == "0A"
    })
}

/// Waits (hang guard only) until no listening socket is left on `port`.
async fn wait_until_nothing_listens_on(port: u16) {
    within(GUARD, "the old listeners to go away", async {
        while something_listens_on(port) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

fn builder_on(addr: std::net::SocketAddr) -> msgtrans::transport::TransportServerBuilder {
    msgtrans::transport::TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
        .shards(SHARDS)
        .pin_shards(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_server_can_listen_on_the_port_of_a_stopped_one() {
    let first = start_inline_echo(builder()).await;
    let port_addr = addr(&first);
    let mut c = RawClient::connect(port_addr).await;
    let p = one_way(1, 0, b"", b"first".to_vec());
    c.send(&p).await;
    assert_eq!(c.recv().await, p);
    within(GUARD, "stop", first.stop()).await;
    c.expect_closed().await;
    wait_until_nothing_listens_on(port_addr.port()).await;

    let second = start_inline_echo(builder_on(port_addr)).await;
    assert_eq!(addr(&second), port_addr);
    for i in 0..8u32 {
        let mut c = RawClient::connect(port_addr).await;
        let p = one_way(i, 0, b"", b"second".to_vec());
        c.send(&p).await;
        assert_eq!(c.recv().await, p);
    }
    second.stop().await;
}

/// stop() is documented to free the ports by the time it returns. Checked
/// over many start/stop rounds, since the leftover listener is only
/// sometimes still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_port_is_free_the_moment_stop_returns() {
    for round in 0..100 {
        let server = start_inline_echo(builder()).await;
        let port_addr = addr(&server);
        // Make both shards' accept loops busy with a connection each way.
        let mut c = RawClient::connect(port_addr).await;
        let p = one_way(1, 0, b"", b"x".to_vec());
        c.send(&p).await;
        assert_eq!(c.recv().await, p);
        within(GUARD, "stop", server.stop()).await;
        assert!(
            !something_listens_on(port_addr.port()),
            "round {round}: a socket still listens on {port_addr} after stop() returned"
        );
        let l = std::net::TcpListener::bind(port_addr);
        assert!(l.is_ok(), "round {round}: bind {port_addr} after stop: {:?}", l.err());
        drop(l);
        // A new server on the port serves every connection (none is handed
        // to a leftover listener and reset).
        let second = start_inline_echo(builder_on(port_addr)).await;
        for i in 0..4u32 {
            let mut c = RawClient::connect(port_addr).await;
            let p = one_way(i, 0, b"", b"again".to_vec());
            c.send(&p).await;
            assert_eq!(c.recv().await, p, "round {round}");
        }
        second.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_on_an_inline_handler_server_closes_its_clients() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let mut clients = connect_covering_shards(&server, &mut events).await;
    within(GUARD, "stop", server.stop()).await;
    for (c, id) in clients.iter_mut() {
        c.expect_closed().await;
        assert_eq!(events.closed(*id).await, CloseReason::Shutdown);
    }
    wait_until_nothing_listens_on(addr(&server).port()).await;
    let l = std::net::TcpListener::bind(addr(&server));
    assert!(l.is_ok(), "port still held after stop: {:?}", l.err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_of_a_server_with_no_sessions_ends_after_server_stopped() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut stream = server.subscribe_events();
    let started = within(GUARD, "ServerStarted", stream.recv()).await.expect("stream");
    assert!(matches!(started, ServerEvent::ServerStarted { address } if address == addr(&server)));
    server.stop().await;
    let ev = within(GUARD, "ServerStopped", stream.recv())
        .await
        .expect("ServerStopped before the end");
    assert!(matches!(ev, ServerEvent::ServerStopped), "got {ev:?}");
    assert!(within(GUARD, "end of stream", stream.recv()).await.is_err());
}

/// A server whose 4-event queue fills up, with `CLIENTS` raw clients that
/// each sent one packet nobody has read yet.
const CLIENTS: usize = 6;

async fn server_with_a_full_event_queue() -> (msgtrans::TransportServer, Vec<RawClient>) {
    let server = within(GUARD, "server build", builder().event_capacity(4).build())
        .await
        .unwrap();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RawClient::connect(addr(&server)).await);
    }
    for c in clients.iter_mut() {
        c.send(&one_way(1, 0, b"", b"unread".to_vec())).await;
    }
    // Let the shards run into the full queue (not a timing assertion).
    tokio::time::sleep(Duration::from_millis(200)).await;
    (server, clients)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_with_an_undrained_event_queue_still_closes_every_connection_and_counts_what_it_gave_up() {
    let (server, mut clients) = server_with_a_full_event_queue().await;
    // Nobody drains the queue while stop runs: stop still ends, within its
    // grace period, and every socket is closed.
    within(Duration::from_secs(30), "stop with a full event queue", server.stop()).await;
    for (i, c) in clients.iter_mut().enumerate() {
        let leftover = c.expect_closed().await;
        assert!(leftover.is_empty(), "client {i}");
    }
    // What could not be delivered is counted, not silently lost, and what
    // was delivered is consistent: a close for every announced session
    // whose close event found room, and ServerStopped last.
    let abandoned: u64 = server.stats().iter().map(|s| s.events_abandoned).sum();
    let mut stream = server.subscribe_events();
    let (mut opened, mut closed, mut last) = (HashSet::new(), HashSet::new(), None);
    while let Ok(ev) = within(GUARD, "draining events", stream.recv()).await {
        match &ev {
            ServerEvent::ConnectionEstablished { session_id, .. } => {
                opened.insert(*session_id);
            }
            ServerEvent::ConnectionClosed { session_id, .. } => {
                assert!(opened.contains(session_id), "close of a session never announced");
                assert!(closed.insert(*session_id));
            }
            _ => {}
        }
        last = Some(ev);
    }
    assert!(matches!(last, Some(ServerEvent::ServerStopped)), "last event: {last:?}");
    // Every session had an open and a close event: each was delivered or
    // counted as given up.
    assert_eq!(opened.len() + closed.len() + abandoned as usize, 2 * CLIENTS);
    assert!(abandoned > 0, "the queue was full, so something had to be given up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_while_the_application_drains_reports_every_close_and_server_stopped() {
    let (server, mut clients) = server_with_a_full_event_queue().await;
    let mut stream = server.subscribe_events();
    let drain = tokio::spawn(async move {
        let (mut opened, mut closed, mut stopped) = (HashSet::new(), HashSet::new(), false);
        while let Ok(ev) = stream.recv().await {
            match ev {
                ServerEvent::ConnectionEstablished { session_id, .. } => {
                    opened.insert(session_id);
                }
                ServerEvent::ConnectionClosed { session_id, reason } => {
                    assert_eq!(reason, CloseReason::Shutdown);
                    assert!(closed.insert(session_id), "two ConnectionClosed for {session_id}");
                }
                ServerEvent::ServerStopped => stopped = true,
                _ => {}
            }
        }
        (opened, closed, stopped)
    });
    within(Duration::from_secs(30), "stop", server.stop()).await;
    let (opened, closed, stopped) = within(GUARD, "drain", drain).await.unwrap();
    assert_eq!(opened.len(), CLIENTS, "ConnectionEstablished events");
    assert_eq!(closed, opened, "one ConnectionClosed per established session");
    assert!(stopped, "ServerStopped");
    for c in clients.iter_mut() {
        c.expect_closed().await;
    }
    assert_eq!(server.stats().iter().map(|s| s.events_abandoned).sum::<u64>(), 0);
}
