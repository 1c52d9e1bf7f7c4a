//! Proves an inline handler can send from the shard with `ctx.send_to`: to
//! its own session, to another session on the same shard and to a session
//! on the other shard, under load from both directions at once, without
//! deadlock or loss; and that a send to a closed session is refused.

mod common;

use std::collections::HashMap;

use common::*;
use msgtrans::packet::Packet;
use msgtrans::transport::TransportServer;
use msgtrans::{Inline, SessionId};

/// Target meaning "the sender itself" (0 is a valid id: shard 0, slot 0).
const SELF: u64 = u64::MAX;
/// Biz type of the handler's error report.
const ERR_BIZ: u8 = 0xEE;

/// Routes by the first 8 payload bytes (a target session id; `u64::MAX`
/// means the sender itself). The rest of the payload is forwarded as a one-way packet
/// with the same id and biz type. A request is answered "ok" or "err".
/// A failed one-way forward is reported to the sender with biz type 0xEE.
fn router(ctx: &mut Inline<'_>) {
    let payload = ctx.payload();
    let raw = u64::from_be_bytes(payload[..8].try_into().expect("8-byte target"));
    let target = if raw == SELF {
        ctx.session_id()
    } else {
        SessionId::new(raw)
    };
    let mut fwd = Packet::one_way(ctx.header().message_id, payload[8..].to_vec());
    fwd.set_biz_type(ctx.header().biz_type);
    let result = ctx.send_to(target, fwd);
    if ctx.is_request() {
        ctx.respond(if result.is_ok() { b"ok" } else { b"err" });
    } else if let Err(e) = result {
        let mut report = Packet::one_way(ctx.header().message_id, e.to_string().into_bytes());
        report.set_biz_type(ERR_BIZ);
        let me = ctx.session_id();
        ctx.send_to(me, report).expect("send_to self");
    }
}

fn routed(id: u32, target: Option<SessionId>, body: &[u8]) -> Packet {
    let mut payload = target.map_or(SELF, |t| t.as_u64()).to_be_bytes().to_vec();
    payload.extend_from_slice(body);
    let mut p = Packet::one_way(id, payload);
    p.set_biz_type(5);
    p
}

async fn router_server() -> (TransportServer, Events) {
    let server = within(GUARD, "server build", builder().handler(router).build())
        .await
        .unwrap();
    let events = pump_events(&server);
    (server, events)
}

/// One client per shard: `(client on shard 0, client on shard 1, ...)`.
fn one_per_shard(clients: Vec<(RawClient, SessionId)>) -> Vec<(RawClient, SessionId)> {
    let mut by_shard: HashMap<usize, (RawClient, SessionId)> = HashMap::new();
    for (c, id) in clients {
        by_shard.entry(id.shard()).or_insert((c, id));
    }
    let mut v: Vec<_> = by_shard.into_iter().collect();
    v.sort_by_key(|(s, _)| *s);
    v.into_iter().map(|(_, c)| c).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_send_to_its_own_session_completes() {
    let (server, mut events) = router_server().await;
    let mut clients = connect_covering_shards(&server, &mut events).await;
    for (c, id) in clients.iter_mut() {
        for i in 0..3u32 {
            let body = format!("to myself {i}");
            c.send(&routed(i + 1, None, body.as_bytes())).await;
            let got = c.recv().await;
            assert_eq!(&got.payload[..], body.as_bytes(), "session {id}");
            assert_eq!((got.header.message_id, got.header.biz_type), (i + 1, 5));
        }
        // Explicitly naming its own id takes the same path.
        c.send(&routed(9, Some(*id), b"by id")).await;
        assert_eq!(&c.recv().await.payload[..], b"by id");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_send_to_a_session_on_the_other_shard_completes_both_ways() {
    let (server, mut events) = router_server().await;
    let mut v = one_per_shard(connect_covering_shards(&server, &mut events).await);
    assert_eq!(v.len(), 2);
    let (b_client, b) = v.pop().unwrap();
    let (a_client, a) = v.pop().unwrap();
    let (mut a_client, mut b_client) = (a_client, b_client);
    assert_ne!(a.shard(), b.shard());

    a_client.send(&routed(1, Some(b), b"a->b")).await;
    let got = b_client.recv().await;
    assert_eq!((&got.payload[..], got.header.message_id), (&b"a->b"[..], 1));
    b_client.send(&routed(2, Some(a), b"b->a")).await;
    let got = a_client.recv().await;
    assert_eq!((&got.payload[..], got.header.message_id), (&b"b->a"[..], 2));

    // A request forwarded across shards: the sender gets "ok", the target the body.
    let mut req = routed(3, Some(b), b"req a->b");
    req.set_packet_type(msgtrans::PacketType::Request);
    a_client.send(&req).await;
    assert_eq!(&a_client.recv().await.payload[..], b"ok");
    assert_eq!(&b_client.recv().await.payload[..], b"req a->b");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_shard_sends_in_both_directions_at_once_all_arrive_in_order() {
    const N: u32 = 5_000;
    let (server, mut events) = router_server().await;
    let mut v = one_per_shard(connect_covering_shards(&server, &mut events).await);
    let (b_client, b) = v.pop().unwrap();
    let (a_client, a) = v.pop().unwrap();
    let batch = |target: SessionId, tag: &str| {
        let mut bytes = Vec::new();
        for i in 0..N {
            bytes.extend_from_slice(&wire(&routed(i + 1, Some(target), format!("{tag} {i}").as_bytes())));
        }
        bytes
    };
    let (a_bytes, b_bytes) = (batch(b, "from a"), batch(a, "from b"));
    let run = |client: RawClient, bytes: Vec<u8>, tag: &'static str| {
        tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            let (mut r, mut w) = client.into_split();
            let writer = tokio::spawn(async move {
                w.write_all(&bytes).await.expect("write");
                w
            });
            for i in 0..N {
                let p = r.recv().await;
                assert_eq!(&p.payload[..], format!("{tag} {i}").as_bytes(), "lost or reordered");
                assert_eq!(p.header.message_id, i + 1);
            }
            writer.await.unwrap();
        })
    };
    // a receives what b sent, and the other way round.
    let ra = run(a_client, a_bytes, "from b");
    let rb = run(b_client, b_bytes, "from a");
    within(GUARD * 3, "cross-shard storm", async {
        ra.await.unwrap();
        rb.await.unwrap();
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_send_to_another_session_on_the_same_shard_completes() {
    let (server, mut events) = router_server().await;
    let mut clients: Vec<(RawClient, SessionId)> = Vec::new();
    let pair = loop {
        assert!(clients.len() < 64, "no two sessions landed on one shard");
        let c = RawClient::connect(addr(&server)).await;
        let id = events.established(c.local_addr()).await;
        if let Some(i) = clients.iter().position(|(_, o)| o.shard() == id.shard()) {
            break (clients.swap_remove(i), (c, id));
        }
        clients.push((c, id));
    };
    let ((mut a_client, a), (mut b_client, b)) = pair;
    a_client.send(&routed(1, Some(b), b"neighbour")).await;
    assert_eq!(&b_client.recv().await.payload[..], b"neighbour");
    b_client.send(&routed(2, Some(a), b"back")).await;
    assert_eq!(&a_client.recv().await.payload[..], b"back");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_send_to_a_closed_session_is_refused_on_either_shard() {
    let (server, mut events) = router_server().await;
    let mut clients = connect_covering_shards(&server, &mut events).await;
    // Close one session, then send to it from a session on each shard.
    let (gone_client, gone) = clients.remove(0);
    drop(gone_client);
    events.closed(gone).await;
    let mut v = one_per_shard(clients);
    let extra = RawClient::connect(addr(&server)).await;
    let extra_id = events.established(extra.local_addr()).await;
    v.push((extra, extra_id));
    for (c, id) in v.iter_mut() {
        c.send(&routed(7, Some(gone), b"nobody")).await;
        let report = c.recv().await;
        assert_eq!(report.header.biz_type, ERR_BIZ, "session {id} on shard {}", id.shard());
        assert!(
            String::from_utf8_lossy(&report.payload).contains("not found"),
            "{:?}",
            report.payload
        );
    }
    server.stop().await;
}
