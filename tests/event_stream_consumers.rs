//! Proves the server's event stream wakes every task that waits on it:
//! several tasks reading clones of one stream share its events (each event
//! reaches exactly one of them, none is lost), a task that stops waiting
//! does not leave the others asleep, and every waiting task sees the end of
//! the stream when the server stops.
//!
//! The shards wake the application once per turn through a bell that holds
//! every waiter's waker (`msgtrans_sync::waitlist`); a bell with room for
//! only one waker would strand the others here.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use msgtrans::event::ServerEvent;
use msgtrans::transport::ServerEventStream;
use tokio::sync::mpsc;

/// Forwards each received payload's id to `out` until the stream ends.
fn consumer(mut events: ServerEventStream, out: mpsc::UnboundedSender<u32>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let ServerEvent::MessageReceived { context, .. } = ev {
                let id = u32::from_be_bytes(context.data[..4].try_into().expect("4-byte payload"));
                out.send(id).expect("collector alive");
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_consumers_share_every_event_and_all_see_the_end() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let consumers: Vec<_> = (0..3)
        .map(|_| consumer(server.subscribe_events(), tx.clone()))
        .collect();
    drop(tx);

    const CLIENTS: u32 = 4;
    const EACH: u32 = 500;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(RawClient::connect(addr(&server)).await);
    }
    for round in 0..EACH {
        for (c, client) in clients.iter_mut().enumerate() {
            let id = round * CLIENTS + c as u32;
            client.send(&one_way(id + 1, 0, b"", id.to_be_bytes().to_vec())).await;
        }
        // Pauses let every consumer fall asleep between bursts, so the
        // wake-up path is what delivers most of them.
        if round % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let mut seen = HashSet::new();
    while seen.len() < (CLIENTS * EACH) as usize {
        let id = within(GUARD, "every event", rx.recv()).await.expect("consumers alive");
        assert!(seen.insert(id), "event {id} delivered twice");
    }

    server.stop().await;
    for c in consumers {
        within(GUARD, "a consumer sees the end of the stream", c).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_that_gives_up_waiting_does_not_strand_the_other() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut leaver = server.subscribe_events();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // The stayer sleeps first; then the leaver arms the bell after it and
    // goes away while asleep.
    let stayer = consumer(server.subscribe_events(), tx);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), leaver.recv())
            .await
            .is_err(),
        "no event yet"
    );
    drop(leaver);

    let mut client = RawClient::connect(addr(&server)).await;
    for id in 0..10u32 {
        client.send(&one_way(id + 1, 0, b"", id.to_be_bytes().to_vec())).await;
        let got = within(GUARD, "the remaining consumer is woken", rx.recv()).await;
        assert_eq!(got, Some(id));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.stop().await;
    within(GUARD, "the consumer sees the end", stayer).await.unwrap();
}

/// A message's `timestamp` is when the shard read it: after the client
/// sent it, before the application took it, and fresh for every read (the
/// shard reads the clock once per read batch, not once per message, so a
/// reading kept past its batch would show here as two equal stamps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_is_stamped_when_its_shard_read_it() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = server.subscribe_events();
    let mut client = RawClient::connect(addr(&server)).await;
    let mut stamps = Vec::new();
    for id in 1..=2u32 {
        let sent = std::time::Instant::now();
        client.send(&one_way(id, 0, b"", b"stamp".to_vec())).await;
        let context = within(GUARD, "message", async {
            loop {
                if let Ok(ServerEvent::MessageReceived { context, .. }) = events.recv().await {
                    return context;
                }
            }
        })
        .await;
        let taken = std::time::Instant::now();
        assert!(
            sent <= context.timestamp && context.timestamp <= taken,
            "stamped {:?} after sending, {:?} before it was taken",
            context.timestamp.checked_duration_since(sent),
            taken.checked_duration_since(context.timestamp)
        );
        stamps.push(context.timestamp);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        stamps[1] - stamps[0] >= Duration::from_millis(20),
        "the second read has its own stamp: {:?}",
        stamps[1] - stamps[0]
    );
    server.stop().await;
}
