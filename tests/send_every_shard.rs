//! Proves `server.send` reaches a session whatever shard owns it: raw
//! clients are connected until every shard has one, and each receives the
//! packet addressed to it (and no other).

mod common;

use common::*;
use msgtrans::packet::PacketType;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_reaches_a_session_on_every_shard() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut clients = connect_covering_shards(&server, &mut events).await;
    let shards: std::collections::HashSet<_> = clients.iter().map(|(_, id)| id.shard()).collect();
    assert_eq!(shards.len(), server.shards());

    let mut sent = Vec::new();
    for (_, id) in &clients {
        let payload = format!("for {id} on shard {}", id.shard());
        let r = within(GUARD, "server.send", server.send(*id, payload.as_bytes()))
            .await
            .expect("send");
        assert_eq!(r.peer, Some(*id));
        sent.push((r.message_id, payload));
    }
    // A second round, so each client must see its own two packets in order.
    for (i, (_, id)) in clients.iter().enumerate() {
        let payload = format!("second {i}");
        let r = server.send(*id, payload.as_bytes()).await.expect("send");
        sent.push((r.message_id, payload));
    }
    let n = clients.len();
    for (i, (c, id)) in clients.iter_mut().enumerate() {
        for (mid, payload) in [&sent[i], &sent[n + i]] {
            let p = c.recv().await;
            assert_eq!(p.header.packet_type, PacketType::OneWay, "client of {id}");
            assert_eq!(p.header.message_id, *mid, "client of {id}");
            assert_eq!(
                &p.payload[..],
                payload.as_bytes(),
                "client of {id} got another session's packet"
            );
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_to_a_closed_session_on_any_shard_is_session_not_found() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let clients = connect_covering_shards(&server, &mut events).await;
    let mut ids = Vec::new();
    for (c, id) in clients {
        drop(c);
        events.closed(id).await;
        ids.push(id);
    }
    for id in ids {
        match server.send(id, b"too late").await {
            Err(msgtrans::TransportError::SessionNotFound(got)) => assert_eq!(got, id),
            other => panic!(
                "send to closed {id} on shard {}: expected SessionNotFound, got {other:?}",
                id.shard()
            ),
        }
    }
    server.stop().await;
}
