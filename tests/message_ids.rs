//! Proves message ids from `server.send` stay unique across clones of the
//! server used concurrently, and that events which arrive before anyone has
//! subscribed wait in the queue instead of being lost.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use msgtrans::event::ServerEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_ids_stay_unique_across_clones_sending_concurrently() {
    const PER_CLONE: u32 = 2_000;
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let (mut reader, _w) = c.into_split();

    let mut tasks = Vec::new();
    for clone_no in 0..3u32 {
        let s = server.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..PER_CLONE {
                let r = s.send(id, format!("{clone_no}/{i}").as_bytes()).await.expect("send");
                ids.push(r.message_id);
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            ids
        }));
    }
    let mut from_results = HashSet::new();
    for t in tasks {
        for mid in within(GUARD, "senders", t).await.unwrap() {
            assert_ne!(mid, 0, "0 means 'no id' to 1.0 peers");
            assert!(from_results.insert(mid), "message id {mid} returned twice");
        }
    }
    assert_eq!(from_results.len(), 3 * PER_CLONE as usize);

    // The ids on the wire are the ones send() returned.
    let mut on_wire = HashSet::new();
    for _ in 0..3 * PER_CLONE {
        let p = reader.recv().await;
        assert!(
            on_wire.insert(p.header.message_id),
            "id {} on the wire twice",
            p.header.message_id
        );
    }
    assert_eq!(on_wire, from_results);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_the_first_subscriber_are_delivered_once_it_subscribes() {
    const N: u32 = 100;
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut c = RawClient::connect(addr(&server)).await;
    let peer = c.local_addr();
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend_from_slice(&wire(&one_way(i + 1, 3, b"", format!("early {i}").into_bytes())));
    }
    c.write(&bytes).await;
    // Let the shards read everything while nobody listens (not a timing
    // assertion: the test passes however long delivery takes afterwards).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut stream = server.subscribe_events();
    let mut session = None;
    let mut got = Vec::new();
    within(GUARD, "100 early messages", async {
        while got.len() < N as usize {
            match stream.recv().await.expect("stream ended") {
                ServerEvent::ConnectionEstablished { session_id, info } if info.peer_addr == peer => {
                    session = Some(session_id)
                }
                ServerEvent::MessageReceived { session_id, context } => {
                    assert_eq!(Some(session_id), session, "message before its ConnectionEstablished");
                    got.push((context.message_id, context.as_text_lossy()));
                }
                _ => {}
            }
        }
    })
    .await;
    let want: Vec<_> = (0..N).map(|i| (i + 1, format!("early {i}"))).collect();
    assert_eq!(got, want);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_request_ids_differ_for_requests_in_flight_on_one_session() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    let mut pending = Vec::new();
    for i in 0..50u32 {
        let s = server.clone();
        pending.push(tokio::spawn(async move { s.request(id, &i.to_be_bytes()).await }));
    }
    let mut reqs = Vec::new();
    let mut ids = HashSet::new();
    for _ in 0..50 {
        let p = c.recv().await;
        assert!(
            ids.insert(p.header.message_id),
            "request id {} used twice while pending",
            p.header.message_id
        );
        reqs.push(p);
    }
    for p in reqs {
        let mut r = msgtrans::Packet::response(p.header.message_id, p.payload.clone());
        r.set_biz_type(p.header.biz_type);
        c.send(&r).await;
    }
    for (i, t) in pending.into_iter().enumerate() {
        let r = within(GUARD, "request", t).await.unwrap().expect("request");
        assert_eq!(r.data.as_deref(), Some(&(i as u32).to_be_bytes()[..]));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_event_queue_pauses_reading_instead_of_dropping_events() {
    const N: u32 = 1_000;
    let server = within(GUARD, "server build", builder().event_capacity(8).build())
        .await
        .unwrap();
    let mut c = RawClient::connect(addr(&server)).await;
    let mut bytes = Vec::new();
    for i in 0..N {
        bytes.extend_from_slice(&wire(&one_way(i + 1, 0, b"", format!("m{i}").into_bytes())));
    }
    c.write(&bytes).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = server.subscribe_events();
    let mut got = Vec::new();
    within(GUARD, "1,000 messages through an 8-event queue", async {
        while got.len() < N as usize {
            if let ServerEvent::MessageReceived { context, .. } = stream.recv().await.expect("stream ended") {
                got.push(context.message_id);
            }
        }
    })
    .await;
    assert_eq!(got, (1..=N).collect::<Vec<_>>());
    server.stop().await;
}
