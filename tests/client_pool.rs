//! Proves `connection_pool(n)`: the client opens n connections spread over
//! its shards, the server sees n sessions, requests take the connections in
//! turn so every one carries the same share, and a connection that drops is
//! skipped rather than failing the calls that would have used it.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;
use msgtrans::event::ServerEvent;
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer};
use msgtrans::SessionId;
use tokio::sync::mpsc;

const POOL: usize = 4;
const CLIENT_SHARDS: usize = 2;

/// A server that answers every request and reports which session sent it.
async fn recording_server() -> (TransportServer, mpsc::UnboundedReceiver<SessionId>, Events) {
    let server = within(GUARD, "server build", builder().build())
        .await
        .expect("server build");
    let mut stream = server.subscribe_events();
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (other_tx, other) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = stream.recv().await {
            match ev {
                ServerEvent::MessageReceived { session_id, context } if context.is_request() => {
                    let _ = seen_tx.send(session_id);
                    let data = context.data.clone();
                    let _ = context.respond(data);
                }
                other => {
                    let _ = other_tx.send(other);
                }
            }
        }
    });
    (server, seen, Events::from_receiver(other))
}

async fn pooled_client(server: &TransportServer) -> TransportClient {
    let mut c = within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr(server).to_string()).unwrap())
            .shards(CLIENT_SHARDS)
            .connection_pool(POOL)
            .build(),
    )
    .await
    .expect("client build");
    within(GUARD, "connect", c.connect()).await.expect("connect");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_opens_n_connections_spread_over_the_client_shards() {
    let (server, _seen, mut events) = recording_server().await;
    let c = pooled_client(&server).await;
    let ids = c.session_ids();
    assert_eq!(ids.len(), POOL, "client sessions: {ids:?}");
    let shards: HashSet<usize> = ids.iter().map(|id| id.shard()).collect();
    assert_eq!(shards, (0..CLIENT_SHARDS).collect(), "client shards used: {shards:?}");
    let mut on_server = HashSet::new();
    for _ in 0..POOL {
        on_server.insert(
            events
                .wait_for("ConnectionEstablished", |e| match e {
                    ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
                    _ => None,
                })
                .await,
        );
    }
    assert_eq!(on_server.len(), POOL);
    assert_eq!(server.session_count().await, POOL);
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_take_the_pooled_connections_in_turn() {
    let (server, mut seen, _events) = recording_server().await;
    let c = pooled_client(&server).await;
    let rounds = 5;
    for i in 0..POOL * rounds {
        let msg = format!("r{i}");
        let r = within(GUARD, "request", c.request(msg.as_bytes()))
            .await
            .expect("request");
        assert_eq!(r.data.as_deref(), Some(msg.as_bytes()));
    }
    let mut per_session: HashMap<SessionId, usize> = HashMap::new();
    for _ in 0..POOL * rounds {
        let id = within(GUARD, "request record", seen.recv()).await.unwrap();
        *per_session.entry(id).or_default() += 1;
    }
    assert_eq!(per_session.len(), POOL, "sessions used: {per_session:?}");
    assert!(
        per_session.values().all(|&n| n == rounds),
        "each connection should carry {rounds} requests: {per_session:?}"
    );
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_pool_connection_is_skipped() {
    let (server, mut seen, mut events) = recording_server().await;
    let c = pooled_client(&server).await;
    let victim = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    server.close_session(victim).await.expect("close_session");
    within(GUARD, "client noticing the drop", async {
        while c.session_ids().len() == POOL {
            tokio::task::yield_now().await;
        }
    })
    .await;
    for i in 0..(POOL - 1) * 3 {
        let msg = format!("s{i}");
        let r = within(GUARD, "request", c.request(msg.as_bytes())).await;
        assert!(r.is_ok(), "request {i} failed: {r:?}");
    }
    let mut used = HashSet::new();
    for _ in 0..(POOL - 1) * 3 {
        used.insert(within(GUARD, "request record", seen.recv()).await.unwrap());
    }
    assert!(!used.contains(&victim));
    assert_eq!(used.len(), POOL - 1);
    c.stop().await;
    server.stop().await;
}

/// A pool bigger than the client's connection limit opens in full: the
/// client raises its own limit to the pool rather than refusing its own
/// connections (it did, at 10,000, for `connection_pool(12_500)`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_larger_than_the_clients_connection_limit_opens_in_full() {
    let (server, _seen, _events) = recording_server().await;
    let limits = msgtrans::transport::Limits {
        max_connections: 2,
        max_connections_per_shard: Some(1),
        ..Default::default()
    };
    let mut c = within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr(&server).to_string()).unwrap())
            .shards(CLIENT_SHARDS)
            .limits(limits)
            .connection_pool(6)
            .build(),
    )
    .await
    .expect("client build");
    within(GUARD, "connect", c.connect()).await.expect("connect");
    assert_eq!(c.session_ids().len(), 6);
    for i in 0..6u8 {
        let r = within(GUARD, "request", c.request(&[i])).await.expect("request");
        assert_eq!(r.data.as_deref(), Some(&[i][..]));
    }
    c.stop().await;
    server.stop().await;
}
