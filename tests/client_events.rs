//! Proves the client's event streams (`events()` and `subscribe_events()`)
//! never drop an event silently: events wait for a late subscriber, a small
//! queue slows reading instead of losing messages, clones share one queue
//! (each event once), and events a stop has to give up on are reported as
//! `EventsLost` with their exact count before the stream ends.

mod common;

use std::collections::HashSet;

use common::*;
use msgtrans::error::TransportError;
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::{ClientEventStream, TransportClient, TransportClientBuilder, TransportServer};
use msgtrans::SessionId;

async fn client(server: &TransportServer, capacity: usize, pool: usize) -> TransportClient {
    let mut c = within(
        GUARD,
        "client build",
        TransportClientBuilder::new()
            .with_protocol(TcpClientConfig::new(&addr(server).to_string()).unwrap())
            .event_capacity(capacity)
            .connection_pool(pool)
            .build(),
    )
    .await
    .expect("client build");
    within(GUARD, "connect", c.connect()).await.expect("connect");
    c
}

async fn server_session(events: &mut Events) -> SessionId {
    events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await
}

async fn next_message(events: &mut ClientEventStream) -> String {
    loop {
        match within(GUARD, "client event", events.recv())
            .await
            .expect("stream ended")
        {
            ClientEvent::MessageReceived(ctx) => return ctx.as_text_lossy(),
            ClientEvent::Connected { .. } => continue,
            other => panic!("unexpected event {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_before_the_first_subscriber_wait_for_it() {
    let (server, mut sev) = start_events_echo(builder()).await;
    let c = client(&server, 1024, 1).await;
    let sid = server_session(&mut sev).await;
    for i in 0..50 {
        server.send(sid, format!("m{i}").as_bytes()).await.expect("send");
    }
    let mut events = c.events().await.expect("events");
    assert!(matches!(
        within(GUARD, "first event", events.recv()).await,
        Ok(ClientEvent::Connected { .. })
    ));
    for i in 0..50 {
        assert_eq!(next_message(&mut events).await, format!("m{i}"));
    }
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tiny_event_queue_slows_reading_but_loses_no_message() {
    let (server, mut sev) = start_events_echo(builder()).await;
    let c = client(&server, 2, 1).await;
    let sid = server_session(&mut sev).await;
    let n = 2000;
    let s = server.clone();
    let sender = tokio::spawn(async move {
        for i in 0..n {
            s.send(sid, format!("m{i}").as_bytes()).await.expect("send");
        }
    });
    let mut events = c.subscribe_events();
    for i in 0..n {
        assert_eq!(next_message(&mut events).await, format!("m{i}"), "message {i}");
    }
    within(GUARD, "sender", sender).await.unwrap();
    c.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clones_of_the_stream_share_it_and_see_each_event_once() {
    let (server, mut sev) = start_events_echo(builder()).await;
    let c = client(&server, 8, 1).await;
    let sid = server_session(&mut sev).await;
    let n = 1000;
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let mut events = c.subscribe_events();
            tokio::spawn(async move {
                let mut got = Vec::new();
                while let Ok(ev) = events.recv().await {
                    if let ClientEvent::MessageReceived(ctx) = ev {
                        if ctx.is_request() {
                            let _ = ctx.respond(&b"ok"[..]);
                        } else {
                            got.push(ctx.as_text_lossy());
                        }
                    }
                }
                got
            })
        })
        .collect();
    for i in 0..n {
        server.send(sid, format!("m{i}").as_bytes()).await.expect("send");
    }
    // The client reads a request after every earlier message on the same
    // connection, so once a reader has answered it, all are in the queue.
    within(GUARD, "fence request", server.request(sid, b"fence"))
        .await
        .expect("fence");
    c.shutdown(std::time::Duration::from_secs(5)).await;
    let mut all = Vec::new();
    for r in readers {
        all.extend(within(GUARD, "reader", r).await.unwrap());
    }
    let distinct: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(distinct.len(), all.len(), "an event was delivered twice");
    assert_eq!(distinct, (0..n).map(|i| format!("m{i}")).collect::<HashSet<_>>());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_after_stop_with_every_event_and_no_loss_report() {
    let server = start_inline_echo(builder()).await;
    let c = client(&server, 1024, 1).await;
    let mut events = c.subscribe_events();
    c.stop().await;
    assert!(matches!(events.recv().await, Ok(ClientEvent::Connected { .. })));
    assert!(matches!(events.recv().await, Ok(ClientEvent::Disconnected { .. })));
    let end = events.recv().await;
    assert!(end.is_err(), "expected the end of the stream, got {end:?}");
    server.stop().await;
}

/// Takes about 5 s: a stop waits that long for the application to make room
/// before it gives events up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_a_stop_gives_up_on_are_reported_as_events_lost() {
    let server = start_inline_echo(builder()).await;
    // Room for one event: the first Connected. The second connection's
    // Connected and both Disconnected events wait, and nobody reads.
    let pool = 2;
    let c = client(&server, 1, pool).await;
    let mut events = c.subscribe_events();
    c.stop().await;
    let mut delivered = 0u64;
    let lost = loop {
        match within(GUARD, "client event", events.recv()).await {
            Ok(ClientEvent::Error {
                error: TransportError::EventsLost { count },
            }) => break count,
            Ok(ClientEvent::Connected { .. }) | Ok(ClientEvent::Disconnected { .. }) => delivered += 1,
            Ok(other) => panic!("unexpected event {other:?}"),
            Err(_) => panic!("stream ended without reporting the events it lost"),
        }
    };
    assert!(lost >= 1, "{lost}");
    assert_eq!(
        delivered + lost,
        2 * pool as u64,
        "each connection's open and close is delivered or counted"
    );
    assert!(events.recv().await.is_err(), "EventsLost is the last event");
    server.stop().await;
}
