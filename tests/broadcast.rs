//! Proves `broadcast` reaches every open session on every shard exactly
//! once and reports how many sessions it reached.

mod common;

use common::*;
use msgtrans::packet::{Packet, PacketType};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_client_on_every_shard_exactly_once() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut clients = connect_covering_shards(&server, &mut events).await;
    // A few more, so some shard has several sessions.
    for _ in 0..3 {
        let c = RawClient::connect(addr(&server)).await;
        let id = events.established(c.local_addr()).await;
        clients.push((c, id));
    }

    let mut p = Packet::one_way(4242, b"to everyone".to_vec());
    p.set_biz_type(9);
    p.set_ext_header(b"all".to_vec());
    let reached = within(GUARD, "broadcast", server.broadcast(p.clone()))
        .await
        .expect("broadcast");
    assert_eq!(reached, clients.len(), "broadcast count");

    // Then one packet per session: a duplicate broadcast would arrive before it.
    for (_, id) in &clients {
        server.send(*id, b"after").await.expect("send");
    }
    for (c, id) in clients.iter_mut() {
        let got = c.recv().await;
        assert_eq!(got, p, "client of {id} (shard {})", id.shard());
        let next = c.recv().await;
        assert_eq!(next.header.packet_type, PacketType::OneWay);
        assert_eq!(&next.payload[..], b"after", "client of {id} got the broadcast twice");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_counts_only_open_sessions() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut clients = connect_covering_shards(&server, &mut events).await;
    let (gone, gone_id) = clients.pop().unwrap();
    drop(gone);
    events.closed(gone_id).await;
    let reached = server
        .broadcast(Packet::one_way(1, b"x".to_vec()))
        .await
        .expect("broadcast");
    assert_eq!(reached, clients.len());
    for (c, _) in clients.iter_mut() {
        assert_eq!(&c.recv().await.payload[..], b"x");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_with_no_sessions_reaches_none() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    assert_eq!(server.broadcast(Packet::one_way(1, b"x".to_vec())).await.unwrap(), 0);
    server.stop().await;
}
