//! `stop` works in two phases: every shard stops listening before any shard
//! closes a session. So in the event stream no connection is established
//! after the first session was closed by the stop, even while clients keep
//! connecting throughout.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::*;
use msgtrans::error::CloseReason;
use msgtrans::event::ServerEvent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_connection_is_accepted_once_any_session_closed_for_the_stop() {
    for round in 0..5 {
        let server = within(GUARD, "server build", builder().handler(inline_echo).build())
            .await
            .unwrap();
        let mut stream = server.subscribe_events();
        let mut events = pump_events(&server);
        let held = connect_covering_shards(&server, &mut events).await;
        drop(events);

        let port = addr(&server);
        let done = Arc::new(AtomicBool::new(false));
        let stormer = {
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                let mut made = 0u32;
                while !done.load(Ordering::Relaxed) {
                    if tokio::net::TcpStream::connect(port).await.is_ok() {
                        made += 1;
                    }
                }
                made
            })
        };
        within(GUARD, "stop", server.stop()).await;
        done.store(true, Ordering::Relaxed);
        within(GUARD, "connect storm", stormer).await.unwrap();
        drop(held);

        let mut closed_for_stop = false;
        while let Ok(ev) = within(GUARD, "events until the stream ends", stream.recv()).await {
            match ev {
                ServerEvent::ConnectionClosed {
                    reason: CloseReason::Shutdown,
                    ..
                } => closed_for_stop = true,
                ServerEvent::ConnectionEstablished { session_id, .. } => assert!(
                    !closed_for_stop,
                    "round {round}: {session_id} was accepted after the stop had begun closing sessions"
                ),
                _ => {}
            }
        }
        assert!(
            closed_for_stop,
            "round {round}: the held sessions were closed by the stop"
        );
    }
}
