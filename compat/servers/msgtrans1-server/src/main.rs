//! Baseline 4 (1.0): TCP echo server on the published msgtrans 1.0.10.
//!
//! Written the way msgtrans 1.0.10's README and examples/echo_server.rs
//! (passive, byte-for-byte mode) write one: `TransportServerBuilder` with a
//! `TcpServerConfig`, `subscribe_events()`, and one task draining the
//! `ServerEvent` broadcast channel. A one-way `MessageReceived` is echoed with
//! `send_to_session` (same payload, biz_type and message_id) from a spawned
//! task, as the example does; a request is answered with `context.respond`.
//! Only TCP is configured (the load generator speaks TCP).
//!
//! Runtime: `#[tokio::main]` as in the README (multi-thread; one worker per
//! CPU in the affinity mask, so one under `taskset -c 0`). `--shards` is
//! accepted and ignored: msgtrans 1.0 has no sharding knob.

use std::time::Duration;

use msgtrans::{
    event::ServerEvent, packet::Packet, protocol::TcpServerConfig, tokio,
    transport::TransportServerBuilder,
};
use tokio::sync::broadcast::error::RecvError;

const NAME: &str = "msgtrans1";

fn usage() -> String {
    format!(
        "msgtrans1-server: TCP echo server on the published msgtrans 1.0.10 (baseline 4)\n\n\
         USAGE:\n    msgtrans1-server [--addr ADDR] [--shards N]\n\n\
         OPTIONS:\n    --addr ADDR   listen address  [default: 127.0.0.1:8001]\n    \
         --shards N    accepted and ignored (msgtrans 1.0 has no shards)\n    \
         -h, --help    print this help\n"
    )
}

fn args() -> String {
    let mut addr = "127.0.0.1:8001".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("-h" | "--help", _) => {
                print!("{}", usage());
                std::process::exit(0);
            }
            ("--addr", Some(v)) => addr = v,
            ("--shards", Some(_)) => {}
            (other, _) => {
                eprintln!("error: bad argument {other:?}\n\n{}", usage());
                std::process::exit(2);
            }
        }
    }
    addr
}

/// `serve()` binds and then blocks, with no "bound" signal, so readiness is
/// observed from outside: a plain connect that succeeds once the listener is
/// up (that probe connection is closed at once, before any frame). If
/// `serve()` returns first (e.g. the bind failed), that is the answer.
async fn wait_listening<T>(addr: &str, serve: &tokio::task::JoinHandle<T>) {
    for _ in 0..500 {
        if serve.is_finished() {
            return;
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() && !serve.is_finished() {
            println!("listening tcp {addr} shards=1 path={NAME}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    eprintln!("error: {addr} not accepting after 5 s");
    std::process::exit(1);
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = args();
    let tcp_config = TcpServerConfig::new(&addr)?;
    let transport = TransportServerBuilder::new()
        .max_connections(10000)
        .with_protocol(tcp_config)
        .build()
        .await?;

    // Subscribe before serving so nothing is missed (README).
    let mut events = transport.subscribe_events();
    let transport_for_echo = transport.clone();
    tokio::spawn(async move {
        let transport = transport_for_echo;
        loop {
            // The README/example loop is `while let Ok(event) = events.recv()`,
            // which silently stops echoing on the first `Lagged`. Report a lag
            // instead (the events are lost either way) and keep going.
            let event = match events.recv().await {
                Ok(event) => event,
                Err(RecvError::Lagged(n)) => {
                    eprintln!("msgtrans1-server: event channel lagged, {n} events lost");
                    continue;
                }
                Err(RecvError::Closed) => break,
            };
            if let ServerEvent::MessageReceived { session_id, mut context } = event {
                let payload = std::mem::take(&mut context.data);
                if context.is_request() {
                    context.respond(payload);
                } else {
                    let (message_id, biz_type) = (context.message_id, context.biz_type);
                    let transport = transport.clone();
                    tokio::spawn(async move {
                        let mut packet = Packet::one_way(message_id, payload);
                        packet.set_biz_type(biz_type);
                        if let Err(e) = transport.send_to_session(session_id, packet).await {
                            eprintln!("msgtrans1-server: send_to_session({session_id}): {e}");
                        }
                    });
                }
            }
        }
    });

    let transport_for_serve = transport.clone();
    let serve = tokio::spawn(async move { transport_for_serve.serve().await });
    wait_listening(&addr, &serve).await;
    serve.await??;
    Ok(())
}
