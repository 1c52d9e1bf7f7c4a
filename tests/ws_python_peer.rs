//! An independent WebSocket client, python `websockets` (installed into
//! .venv by scripts/setup-peers.sh), speaks to our server: packets of
//! 0 B to 1 MiB echo intact, requests are answered, a text message comes
//! back as a one-way packet, and the `msgtrans.v1` subprotocol is echoed.

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
