//! An independent WebSocket client, python `websockets` (installed into
//! .venv by scripts/setup-peers.sh), speaks to our server: packets of
//! 0 B to 1 MiB echo intact, requests are answered, a text message comes
//! back as a one-way packet, the `msgtrans.v1` subprotocol is echoed, and
//! the origin allow-list and bearer token admit and refuse as they should.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::*;

fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run ./scripts/setup-peers.sh (scripts/test.sh does)",
        p.display()
    );
    p
}

async fn run_case(url: String, case: &'static str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ws_check.py");
    let out = within(
        GUARD * 3,
        case,
        tokio::task::spawn_blocking(move || Command::new(python()).arg(script).arg(&url).arg(case).output()),
    )
    .await
    .unwrap()
    .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "case {case} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("ok"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_is_served_by_the_inline_echo() {
    let server = start_inline_echo(ws_builder()).await;
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    for case in ["sizes", "requests", "text", "subprotocol"] {
        run_case(url.clone(), case).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_client_is_served_by_the_event_stream_echo() {
    let (server, _events) = start_events_echo(ws_builder()).await;
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    for case in ["sizes", "requests", "text", "subprotocol"] {
        run_case(url.clone(), case).await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_meets_the_origin_allow_list_and_the_bearer_token() {
    let ws = msgtrans::protocol::WebSocketServerConfig::new("127.0.0.1:0")
        .unwrap()
        .with_path("/ws")
        .with_allowed_origin("https://app.example")
        .with_auth_token("s3cret");
    let server = start_inline_echo(builder().with_protocol(ws)).await;
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    run_case(url, "admission").await;
    let total = server.stats().total;
    assert_eq!(total.refusals_of(msgtrans::Refusal::Origin), 1);
    assert_eq!(total.refusals_of(msgtrans::Refusal::Unauthorized), 2);
    server.stop().await;
}
