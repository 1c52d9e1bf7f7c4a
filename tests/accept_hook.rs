//! The application's accept hook, the one gate every transport passes: it
//! sees what the handshake revealed, answers at once or later from another
//! thread, and a refusal reaches the client in its transport's terms while
//! everyone else is served.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig, WebSocketServerConfig};
use msgtrans::transport::{TransportClientBuilder, TransportServer};
use msgtrans::{AcceptHook, ConnectRequest, Decision, Packet, Protocol, Refusal, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::from((from, 0))).unwrap();
    within(GUARD, "connect", s.connect(to)).await.unwrap()
}

fn refused(server: &TransportServer) -> u64 {
    server.stats().total.refusals_of(Refusal::Application)
}

#[tokio::test]
async fn a_tcp_peer_the_hook_refuses_is_closed_and_others_are_served() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let hook = move |req: &ConnectRequest| {
        log.lock().unwrap().push((req.peer.ip(), req.protocol, req.local));
        if req.peer.ip() == std::net::IpAddr::from([127, 0, 0, 2]) {
            Verdict::refuse(403, "not you")
        } else {
            Verdict::Accept
        }
    };
    let server = start_inline_echo(builder().accept_hook(hook)).await;
    let mut bad = connect_from([127, 0, 0, 2], addr(&server)).await;
    let mut b = [0u8; 1];
    let n = within(GUARD, "refused close", bad.read(&mut b)).await.unwrap_or(0);
    assert_eq!(n, 0, "a refused peer is closed");
    let mut good = RawClient::from_stream(connect_from([127, 0, 0, 3], addr(&server)).await);
    good.send(&Packet::request(1, b"hello".to_vec())).await;
    assert_eq!(&good.recv().await.payload[..], b"hello");
    assert_eq!(refused(&server), 1);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert!(seen
        .iter()
        .all(|(_, p, local)| *p == Protocol::Tcp && *local == addr(&server)));
    server.stop().await;
}

/// An upgrade from a raw socket; returns the response head and body.
async fn upgrade(server: &TransportServer, target: &str, extra: &str) -> String {
    let mut s = TcpStream::connect(server.ws_addr().unwrap()).await.unwrap();
    let req = format!(
        "GET {target} HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let mut b = [0u8; 256];
    loop {
        let n = within(GUARD, "response", s.read(&mut b)).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[..n]);
        let text = String::from_utf8_lossy(&out);
        if text.starts_with("HTTP/1.1 101") && text.contains("\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn the_hook_sees_the_websocket_request_and_refuses_with_its_status() {
    let hook = |req: &ConnectRequest| {
        let ws = req.websocket.as_ref().expect("a WebSocket request");
        assert_eq!(req.protocol, Protocol::WebSocket);
        assert_eq!(ws.path, "/ws");
        match (ws.query.as_deref(), ws.header("X-Team"), ws.subprotocols.as_slice()) {
            (Some("user=ann"), Some("blue"), [p]) if p == "msgtrans.v1" => Verdict::Accept,
            _ => Verdict::refuse(401, "who are you?"),
        }
    };
    let server = start_inline_echo(
        builder()
            .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws"))
            .accept_hook(hook),
    )
    .await;
    let ok = upgrade(
        &server,
        "/ws?user=ann",
        "X-Team: blue\r\nSec-WebSocket-Protocol: msgtrans.v1\r\n",
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 101"), "{ok}");
    let no = upgrade(&server, "/ws?user=bob", "X-Team: blue\r\n").await;
    assert!(no.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{no}");
    assert!(no.ends_with("\r\n\r\nwho are you?"), "{no}");
    assert_eq!(refused(&server), 1);
    server.stop().await;
}

/// A hook that answers from another thread after a while: as a service
/// asked for each connection would.
struct Later(Duration);

impl AcceptHook for Later {
    fn on_connect(&self, req: &ConnectRequest, decision: Decision) {
        let (wait, allow) = (self.0, req.peer.ip() != std::net::IpAddr::from([127, 0, 0, 2]));
        std::thread::spawn(move || {
            std::thread::sleep(wait);
            if allow {
                decision.accept()
            } else {
                decision.refuse(403, "later, no")
            }
        });
    }
}

#[tokio::test]
async fn a_decision_may_come_later_from_another_thread() {
    let server = start_inline_echo(builder().accept_hook(Later(Duration::from_millis(200)))).await;
    let mut good = RawClient::from_stream(connect_from([127, 0, 0, 3], addr(&server)).await);
    good.send(&Packet::request(1, b"patience".to_vec())).await;
    assert_eq!(&good.recv().await.payload[..], b"patience");
    let mut bad = connect_from([127, 0, 0, 2], addr(&server)).await;
    let mut b = [0u8; 1];
    assert_eq!(within(GUARD, "refused", bad.read(&mut b)).await.unwrap_or(0), 0);
    server.stop().await;
}

/// A hook that keeps every decision and never answers.
struct Silent(Mutex<Vec<Decision>>);

impl AcceptHook for Silent {
    fn on_connect(&self, _req: &ConnectRequest, decision: Decision) {
        self.0.lock().unwrap().push(decision);
    }
}

#[tokio::test]
async fn a_hook_that_never_answers_refuses_at_the_handshake_timeout() {
    let b = builder()
        .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws"))
        .handshake_timeout(Duration::from_millis(300))
        .accept_hook(Silent(Mutex::new(Vec::new())));
    let server = start_inline_echo(b).await;
    let head = upgrade(&server, "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert_eq!(refused(&server), 1);
    assert_eq!(server.stats().total.sessions_open, 0);
    server.stop().await;
}

#[tokio::test]
async fn a_dropped_decision_refuses() {
    let hook = |_: &ConnectRequest, d: Decision| drop(d);
    struct Dropper<F>(F);
    impl<F: Fn(&ConnectRequest, Decision) + Send + Sync + 'static> AcceptHook for Dropper<F> {
        fn on_connect(&self, req: &ConnectRequest, d: Decision) {
            (self.0)(req, d)
        }
    }
    let b = builder()
        .with_protocol(WebSocketServerConfig::new("127.0.0.1:0").unwrap().with_path("/ws"))
        .accept_hook(Dropper(hook));
    let server = start_inline_echo(b).await;
    let head = upgrade(&server, "/ws", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    server.stop().await;
}

#[tokio::test]
async fn a_tls_peer_is_asked_with_its_server_name() {
    let (tls, pem) = msgtrans::TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&names);
    let hook = move |req: &ConnectRequest| {
        let tls = req.tls.as_ref().expect("TLS details");
        log.lock().unwrap().push((req.protocol, tls.server_name.clone()));
        Verdict::Accept
    };
    let server = start_inline_echo(
        msgtrans::transport::TransportServerBuilder::new()
            .with_protocol(msgtrans::TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
            .shards(SHARDS)
            .pin_shards(false)
            .accept_hook(hook),
    )
    .await;
    let port = server.addr_of("tcp+tls").unwrap().port();
    let mut client = TransportClientBuilder::new()
        .with_protocol(
            msgtrans::TcpClientConfig::new(&format!("localhost:{port}"))
                .unwrap()
                .with_tls(msgtrans::TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap()),
        )
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", client.connect()).await.unwrap();
    let r = within(GUARD, "request", client.request(b"sni")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"sni"[..]));
    assert_eq!(
        names.lock().unwrap().as_slice(),
        &[(Protocol::TcpTls, Some("localhost".to_string()))]
    );
    server.stop().await;
}

#[tokio::test]
async fn a_quic_connection_the_hook_refuses_is_closed_and_the_next_is_served() {
    let calls = Arc::new(Mutex::new(0));
    let count = Arc::clone(&calls);
    let hook = move |req: &ConnectRequest| {
        assert_eq!(req.protocol, Protocol::Quic);
        assert_eq!(
            req.tls.as_ref().and_then(|t| t.alpn.clone()),
            Some(b"msgtrans/1".to_vec())
        );
        let mut n = count.lock().unwrap();
        *n += 1;
        if *n == 1 {
            Verdict::refuse(403, "first one out")
        } else {
            Verdict::Accept
        }
    };
    let server = start_inline_echo(
        builder()
            .with_protocol(QuicServerConfig::new("127.0.0.1:0").unwrap())
            .accept_hook(hook),
    )
    .await;
    let pem = server.quic_certificate_pem().unwrap().to_string();
    let addr = server.quic_addr().unwrap().to_string();
    let quic = || {
        QuicClientConfig::new(&addr)
            .unwrap()
            .with_server_name("localhost")
            .with_ca_cert_pem(pem.as_bytes())
            .unwrap()
    };
    // The first is refused: its requests fail rather than hang.
    let mut first = TransportClientBuilder::new()
        .with_protocol(quic())
        .build()
        .await
        .unwrap();
    let outcome = within(GUARD, "refused connection", async {
        first.connect().await?;
        first.request(b"in?").await
    })
    .await;
    assert!(
        outcome.is_err(),
        "a refused QUIC connection served a request: {outcome:?}"
    );
    // The second is served.
    let mut second = TransportClientBuilder::new()
        .with_protocol(quic())
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", second.connect()).await.unwrap();
    let r = within(GUARD, "request", second.request(b"in!")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"in!"[..]));
    assert_eq!(refused(&server), 1);
    server.stop().await;
}
