//! Baseline 4 (2.0): TCP echo server on the published msgtrans 2.0.0-beta.3.
//!
//! Written the way msgtrans 2.0's README and examples/echo_server.rs (passive,
//! byte-for-byte mode) write one: a `SessionHandler` passed to
//! `TransportServerBuilder::build`; a one-way message is echoed through the
//! `SessionSender` (same payload and biz_type; the transport allocates the
//! message id), a request is answered through its `Responder`. Only TCP is
//! configured (the load generator speaks TCP).
//!
//! Runtime: `#[tokio::main]` as in the README (multi-thread; one worker per
//! CPU in the affinity mask, so one under `taskset -c 0`). `--shards` is
//! accepted and ignored: msgtrans 2.0 has no sharding knob.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use msgtrans::{
    Packet, Responder, SendOptions, SessionHandler, SessionId, SessionSender, TcpServerConfig,
    TransportServerBuilder,
};

const NAME: &str = "msgtrans2";

fn usage() -> String {
    format!(
        "msgtrans2-server: TCP echo server on the published msgtrans 2.0.0-beta.3 (baseline 4)\n\n\
         USAGE:\n    msgtrans2-server [--addr ADDR] [--shards N]\n\n\
         OPTIONS:\n    --addr ADDR   listen address  [default: 127.0.0.1:8001]\n    \
         --shards N    accepted and ignored (msgtrans 2.0 has no shards)\n    \
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

struct Echo;

#[async_trait]
impl SessionHandler for Echo {
    async fn on_message(&self, session_id: SessionId, packet: Packet, sender: SessionSender) {
        let biz_type = packet.biz_type();
        if let Err(e) = sender
            .send_data_with_options(packet.into_payload(), SendOptions::new().biz_type(biz_type))
            .await
        {
            eprintln!("msgtrans2-server: send_data({session_id}): {e}");
        }
    }

    async fn on_request(&self, session_id: SessionId, request: Packet, responder: Responder) {
        if let Err(e) = responder.respond(request.into_payload()).await {
            eprintln!("msgtrans2-server: respond({session_id}): {e}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = args();
    let tcp_config = TcpServerConfig::new(&addr)?;
    let server = TransportServerBuilder::new()
        .max_connections(10000)
        .protocol(tcp_config)
        .build(Arc::new(Echo))
        .await?;

    let server_for_serve = server.clone();
    let serve = tokio::spawn(async move { server_for_serve.serve().await });
    wait_listening(&addr, &serve).await;
    serve.await??;
    Ok(())
}
