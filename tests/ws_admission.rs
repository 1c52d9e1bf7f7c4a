//! The WebSocket upgrade, strictly (RFC 6455 §4.2), and the listener's own
//! rules: an Origin allow-list against cross-site hijacking, a bearer
//! token, and a budget for frames that carry no message (pings, pongs,
//! tiny fragments). Each refusal is counted by reason; a well-behaved
//! client on the same server is served throughout.

mod common;

use std::time::Duration;

use common::ws_raw::{client_frame, read_frame, upgraded};
use common::*;
use msgtrans::protocol::WebSocketServerConfig;
use msgtrans::transport::TransportServer;
use msgtrans::{CloseKind, Packet, Refusal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// An upgrade request for `/ws` with these header lines (each ending CRLF).
fn request(first_line: &str, headers: &str) -> String {
    format!("{first_line}\r\n{headers}\r\n")
}

fn good_headers(extra: &str) -> String {
    format!(
        "Host: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Sec-WebSocket-Version: 13\r\n{extra}"
    )
}

/// Sends `req` and returns the response head.
async fn http(server: &TransportServer, req: &str) -> String {
    let mut s = TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(GUARD, "response head", s.read(&mut b)).await.unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    String::from_utf8(head).unwrap()
}

async fn ws_server(cfg: WebSocketServerConfig) -> TransportServer {
    start_inline_echo(builder().with_protocol(cfg)).await
}

fn ws_config() -> WebSocketServerConfig {
    WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws")
}

/// The server's neighbouring client still gets its echo.
async fn neighbour_served(server: &TransportServer) {
    let client = ws_client(server).await;
    let r = within(GUARD, "neighbour request", client.request(b"still here"))
        .await
        .unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"still here"[..]));
}

#[tokio::test]
async fn malformed_upgrades_get_the_status_rfc_6455_asks_for() {
    let server = ws_server(ws_config()).await;
    let cases: [(&str, String, &str); 6] = [
        ("GET /ws HTTP/1.1", good_headers("").replace(KEY, "abc"), "HTTP/1.1 400"),
        (
            "GET /ws HTTP/1.1",
            good_headers("").replace(KEY, "AAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
            "HTTP/1.1 400",
        ),
        ("GET /ws HTTP/1.0", good_headers(""), "HTTP/1.1 400"),
        (
            "GET /ws HTTP/1.1",
            good_headers("").replace("Host: test\r\n", ""),
            "HTTP/1.1 400",
        ),
        ("POST /ws HTTP/1.1", good_headers(""), "HTTP/1.1 405"),
        (
            "GET /ws HTTP/1.1",
            good_headers("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "HTTP/1.1 426",
        ),
    ];
    for (line, headers, want) in cases {
        let head = http(&server, &request(line, &headers)).await;
        assert!(head.starts_with(want), "{line} with {headers:?}: {head}");
        if want.ends_with("405") {
            assert!(head.contains("Allow: GET\r\n"), "{head}");
        }
        if want.ends_with("426") {
            assert!(head.contains("Sec-WebSocket-Version: 13\r\n"), "{head}");
        }
    }
    // A valid one is still upgraded.
    let head = http(&server, &request("GET /ws HTTP/1.1", &good_headers(""))).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn only_listed_origins_and_non_browsers_may_connect() {
    let server = ws_server(ws_config().with_allowed_origin("https://app.example")).await;
    let upgrade = |origin: Option<&str>| {
        let extra = origin.map(|o| format!("Origin: {o}\r\n")).unwrap_or_default();
        request("GET /ws HTTP/1.1", &good_headers(&extra))
    };
    assert!(http(&server, &upgrade(Some("https://app.example")))
        .await
        .starts_with("HTTP/1.1 101"));
    assert!(
        http(&server, &upgrade(None)).await.starts_with("HTTP/1.1 101"),
        "no Origin: not a browser"
    );
    for foreign in ["https://evil.example", "null", "https://app.example.evil"] {
        let head = http(&server, &upgrade(Some(foreign))).await;
        assert!(head.starts_with("HTTP/1.1 403"), "{foreign}: {head}");
    }
    assert_eq!(server.stats().total.refusals_of(Refusal::Origin), 3);
    neighbour_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_bearer_token_is_required_in_the_header_or_the_query() {
    let server = ws_server(ws_config().with_auth_token("s3cret")).await;
    let with = |line: &str, extra: &str| request(line, &good_headers(extra));
    let ok = [
        with("GET /ws HTTP/1.1", "Authorization: Bearer s3cret\r\n"),
        with("GET /ws?token=s3cret HTTP/1.1", ""),
        with("GET /ws?x=1&token=s3cr%65t HTTP/1.1", ""),
    ];
    for req in ok {
        let head = http(&server, &req).await;
        assert!(head.starts_with("HTTP/1.1 101"), "{req:?}: {head}");
    }
    let bad = [
        with("GET /ws HTTP/1.1", ""),
        with("GET /ws HTTP/1.1", "Authorization: Bearer s3cre\r\n"),
        with("GET /ws?token=wrong HTTP/1.1", ""),
        with("GET /ws HTTP/1.1", "Authorization: Basic czNjcmV0\r\n"),
    ];
    for req in bad {
        let head = http(&server, &req).await;
        assert!(head.starts_with("HTTP/1.1 401"), "{req:?}: {head}");
        assert!(head.contains("WWW-Authenticate: Bearer\r\n"), "{head}");
    }
    assert_eq!(server.stats().total.refusals_of(Refusal::Unauthorized), 4);
    server.stop().await;
}

/// A masked client frame with FIN clear: a fragment that is not the last.
fn fragment(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = client_frame(opcode, payload);
    f[0] &= 0x7F;
    f
}

/// Reads until the server's close frame; returns its code and how many
/// pongs came before it.
async fn close_code_after_pongs(s: &mut TcpStream) -> (u16, usize) {
    let mut pongs = 0;
    loop {
        let (op, payload) = read_frame(s).await.expect("a close frame before the end");
        match op & 0x0F {
            0xA => pongs += 1,
            0x8 => return (u16::from_be_bytes([payload[0], payload[1]]), pongs),
            other => panic!("unexpected opcode {other:#x}"),
        }
    }
}

#[tokio::test]
async fn endless_empty_fragments_close_the_session_with_1008() {
    let b = builder()
        .with_protocol(ws_config())
        .max_empty_packets_per_sec(100)
        .handshake_timeout(Duration::from_secs(5));
    let server = start_inline_echo(b).await;
    let mut s = upgraded(server.ws_addr().unwrap()).await;
    // A binary message begins, then 200,000 empty continuation frames.
    let mut burst = fragment(0x2, &[]);
    let empty = fragment(0x0, &[]);
    for _ in 0..200_000 {
        burst.extend_from_slice(&empty);
    }
    // The server may close before it has read it all.
    let _ = s.write_all(&burst).await;
    let (code, _) = close_code_after_pongs(&mut s).await;
    assert_eq!(code, 1008);
    // The close frame can reach us a moment before the shard has counted
    // the close (it counts once the session has ended).
    let mut closes = 0;
    for _ in 0..200 {
        closes = server.stats().total.closes_of(CloseKind::PolicyViolation);
        if closes > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(closes, 1);
    neighbour_served(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_ping_flood_gets_one_pong_per_batch_and_then_1008() {
    let b = builder().with_protocol(ws_config()).max_empty_packets_per_sec(100);
    let server = start_inline_echo(b).await;
    // Within the budget every ping is answered...
    let mut polite = upgraded(server.ws_addr().unwrap()).await;
    polite.write_all(&client_frame(0x9, b"hi")).await.unwrap();
    let (op, payload) = read_frame(&mut polite).await.unwrap();
    assert_eq!((op & 0x0F, payload.as_slice()), (0xA, &b"hi"[..]));
    // ...while a flood in one write is answered once, then closed.
    let mut flood = Vec::new();
    for i in 0..5_000u32 {
        flood.extend_from_slice(&client_frame(0x9, &i.to_be_bytes()));
    }
    let mut s = upgraded(server.ws_addr().unwrap()).await;
    let _ = s.write_all(&flood).await;
    let (code, pongs) = close_code_after_pongs(&mut s).await;
    assert_eq!(code, 1008);
    assert!(pongs < 10, "{pongs} pongs queued for 5,000 pings");
    // The polite session is unaffected.
    polite
        .write_all(&client_frame(0x2, &wire(&Packet::one_way(1, b"echo".to_vec()))))
        .await
        .unwrap();
    let (op, _) = read_frame(&mut polite).await.unwrap();
    assert_eq!(op, 0x82);
    server.stop().await;
}
