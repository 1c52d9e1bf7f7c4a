//! Proves requests work both ways through the public API (client → server
//! answered by the server's event loop, server → client answered by the
//! client's event loop) and that many requests in flight on one connection
//! each get their own response, even when answered out of order.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use msgtrans::event::{ClientEvent, ServerEvent, TransportStatus};
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer};

async fn client_for(server: &TransportServer) -> TransportClient {
    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&addr(server).to_string()).unwrap())
        .request_timeout(Duration::from_secs(60))
        .build()
        .await
        .expect("client build");
    within(GUARD, "client connect", client.connect())
        .await
        .expect("connect");
    client
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_request_is_answered_by_the_server_event_loop() {
    let (server, _events) = start_events_echo(builder()).await;
    let client = client_for(&server).await;
    let r = within(GUARD, "client.request", client.request(b"what time is it?"))
        .await
        .expect("request");
    assert_eq!(r.status, TransportStatus::Completed);
    assert_eq!(r.data.as_deref(), Some(&b"what time is it?"[..]));
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_request_is_answered_by_the_client_event_loop() {
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let client = client_for(&server).await;
    let id = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    let mut client_events = client.subscribe_events();
    let answerer = tokio::spawn(async move {
        while let Ok(ev) = client_events.recv().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                if ctx.is_request() {
                    let reply = [b"answer to ".as_slice(), &ctx.data].concat();
                    ctx.respond(reply).expect("respond");
                }
            }
        }
    });
    for i in 0..10 {
        let q = format!("question {i}");
        let r = within(GUARD, "server.request", server.request(id, q.as_bytes()))
            .await
            .expect("request");
        assert_eq!(r.status, TransportStatus::Completed);
        assert_eq!(r.peer, Some(id));
        assert_eq!(r.data.as_deref(), Some(format!("answer to {q}").as_bytes()));
    }
    client.stop().await;
    answerer.abort();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_client_requests_each_get_their_own_response_even_answered_in_reverse() {
    const N: usize = 100;
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut stream = server.subscribe_events();
    // Hold every request until all N are in, then answer the last first.
    let responder = tokio::spawn(async move {
        let mut held = Vec::new();
        while held.len() < N {
            match stream.recv().await {
                Ok(ServerEvent::MessageReceived { context, .. }) if context.is_request() => held.push(context),
                Ok(_) => {}
                Err(_) => return,
            }
        }
        let mut ids = std::collections::HashSet::new();
        for ctx in held.into_iter().rev() {
            assert!(
                ids.insert(ctx.message_id),
                "two requests in flight share id {}",
                ctx.message_id
            );
            let reply = [b"re:".as_slice(), &ctx.data].concat();
            ctx.respond(reply).expect("respond");
        }
    });
    let client = Arc::new(client_for(&server).await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let c = Arc::clone(&client);
        tasks.spawn(async move {
            let q = format!("request number {i}");
            let r = c.request(q.as_bytes()).await.expect("request");
            (q, r)
        });
    }
    let mut seen = std::collections::HashSet::new();
    within(GUARD * 2, "100 concurrent requests", async {
        while let Some(res) = tasks.join_next().await {
            let (q, r) = res.unwrap();
            assert_eq!(
                r.data.as_deref(),
                Some(format!("re:{q}").as_bytes()),
                "response paired with the wrong request"
            );
            assert!(seen.insert(r.message_id), "two responses with id {}", r.message_id);
        }
    })
    .await;
    assert_eq!(seen.len(), N);
    within(GUARD, "responder", responder).await.unwrap();
    client.stop().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_concurrent_server_requests_to_one_client_each_get_their_own_response() {
    const N: usize = 100;
    let server = within(GUARD, "server build", builder().build()).await.unwrap();
    let mut events = pump_events(&server);
    let client = client_for(&server).await;
    let id = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    let mut client_events = client.subscribe_events();
    let answerer = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok(ev) = client_events.recv().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                if ctx.is_request() {
                    held.push(ctx);
                    if held.len() == N {
                        for ctx in held.drain(..).rev() {
                            let reply = [b"re:".as_slice(), &ctx.data].concat();
                            ctx.respond(reply).expect("respond");
                        }
                    }
                }
            }
        }
    });
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..N {
        let s = server.clone();
        tasks.spawn(async move {
            let q = format!("server asks {i}");
            let r = s.request(id, q.as_bytes()).await.expect("server.request");
            (q, r)
        });
    }
    within(GUARD * 2, "100 concurrent server requests", async {
        while let Some(res) = tasks.join_next().await {
            let (q, r) = res.unwrap();
            assert_eq!(r.data.as_deref(), Some(format!("re:{q}").as_bytes()));
        }
    })
    .await;
    client.stop().await;
    answerer.abort();
    server.stop().await;
}
