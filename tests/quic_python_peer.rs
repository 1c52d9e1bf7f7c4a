//! An independent QUIC peer: python `aioquic` (tests/peers/quic_check.py,
//! installed into .venv by scripts/setup-peers.sh) against our server.
//! ALPN `msgtrans/1` and no ALPN are served on one port, a wrong ALPN is
//! refused, per-packet unidirectional streams (MsgTrans 1.0.0–1.0.2) are
//! answered in kind, a malformed packet closes that connection alone, a
//! silent peer is closed at the idle timeout, a vanished one too (its
//! pending request fails then), a peer whose address changes
//! keeps its connection (datagrams relayed across shards), and the peer
//! sees exactly the transport limits we configure on our server and, with
//! aioquic as the server (tests/peers/quic_server.py), on our client.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;
use msgtrans::event::ServerEvent;
use msgtrans::protocol::QuicServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::CloseReason;
use msgtrans::TlsServerConfig;

/// The virtualenv's python, with aioquic.
fn python() -> PathBuf {
    let python = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    assert!(python.exists(), "run ./scripts/setup-peers.sh (scripts/test.sh does)");
    python
}

fn peer_script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(name)
}

struct Peer {
    server: TransportServer,
    ca: PathBuf,
}

async fn serve(quic: impl FnOnce(QuicServerConfig) -> QuicServerConfig, b: TransportServerBuilder) -> Peer {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let cfg = quic(QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls));
    let server = start_inline_echo(b.shards(SHARDS).pin_shards(false).with_protocol(cfg)).await;
    Peer::new(server, pem)
}

/// A peer whose server reports events to the test.
async fn serve_with_events(b: TransportServerBuilder) -> (Peer, Events) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let cfg = QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls);
    let (server, events) = start_events_echo(b.shards(SHARDS).pin_shards(false).with_protocol(cfg)).await;
    (Peer::new(server, pem), events)
}

impl Peer {
    fn new(server: TransportServer, pem: String) -> Peer {
        let ca = std::env::temp_dir().join(format!(
            "msgtrans-quic-ca-{}-{}.pem",
            std::process::id(),
            server.quic_addr().unwrap().port()
        ));
        std::fs::write(&ca, pem).unwrap();
        Peer { server, ca }
    }

    /// Runs one case of quic_check.py; returns its output, failing the
    /// test with it if the script failed.
    async fn run(&self, case: &str, extra: &[&str]) -> String {
        let mut cmd = Command::new(python());
        cmd.arg(peer_script("quic_check.py"))
            .arg(self.server.quic_addr().unwrap().to_string())
            .arg(case)
            .arg("--cafile")
            .arg(&self.ca)
            .args(extra);
        let out = within(GUARD * 3, case, tokio::task::spawn_blocking(move || cmd.output()))
            .await
            .unwrap()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{case}: {text}");
        text
    }

    async fn stop(self) {
        std::fs::remove_file(&self.ca).ok();
        self.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_with_and_without_alpn_is_served_and_a_wrong_alpn_is_refused() {
    let peer = serve(|c| c, TransportServerBuilder::new()).await;
    for case in ["request", "echo1m", "no-alpn", "wrong-alpn", "uni", "malformed"] {
        let out = peer.run(case, &[]).await;
        assert!(out.contains("ok "), "{case}: {out}");
    }
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_aioquic_client_is_closed_by_the_server_idle_timeout() {
    let idle = Duration::from_secs(1);
    let peer = serve(|c| c, TransportServerBuilder::new().idle_timeout(Some(idle))).await;
    let out = peer.run("idle", &["--expect-idle", "1"]).await;
    let took: f64 = out
        .split("after ")
        .nth(1)
        .and_then(|s| s.split('s').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    // Closed by the server's own timeout (between 1x and 2x), well before
    // aioquic's own 30 s idle timeout would end it.
    assert!((1.0..2.0 + 1.0).contains(&took), "closed after {took}s: {out}");
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_peer_is_closed_at_the_idle_timeout_and_its_pending_request_fails() {
    let idle = Duration::from_secs(1);
    let (peer, mut events) = serve_with_events(TransportServerBuilder::new().idle_timeout(Some(idle))).await;
    peer.run("vanish", &[]).await;
    let id = events
        .wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, .. } => Some(*session_id),
            _ => None,
        })
        .await;
    // The peer's process is gone and sent no close. A request to it, with
    // a timeout far beyond the idle timeout, fails when the idle timeout
    // closes the connection, not when its own timeout runs out.
    let started = std::time::Instant::now();
    let r = within(
        idle * 2 + GUARD,
        "pending request",
        peer.server
            .request_with_timeout(id, b"anyone?", Duration::from_secs(120)),
    )
    .await;
    assert!(r.is_err(), "a request to a vanished peer succeeded: {r:?}");
    assert!(
        started.elapsed() < idle * 3,
        "failed only after {:?}",
        started.elapsed()
    );
    assert_eq!(events.closed(id).await, CloseReason::IdleTimeout);
    assert_eq!(peer.server.session_count().await, 0);
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_changes_address_keeps_its_connection_across_shards() {
    let peer = serve(|c| c, TransportServerBuilder::new()).await;
    let out = peer.run("migrate", &[]).await;
    assert!(out.contains("ok "), "{out}");
    let relayed: u64 = peer.server.stats().iter().map(|s| s.quic_forwarded).sum();
    assert!(
        relayed > 0,
        "12 new ports all hashed to the owning shard? stats: {:?}",
        peer.server.stats()
    );
    peer.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_sees_the_transport_limits_we_configure_and_the_defaults() {
    let peer = serve(
        |c| {
            c.with_max_idle_timeout(Duration::from_secs(7))
                .with_max_concurrent_streams(3)
                .with_max_concurrent_uni_streams(5)
                .with_stream_receive_window(100_000)
                .with_receive_window(300_000)
        },
        TransportServerBuilder::new(),
    )
    .await;
    let out = peer.run("params", &[]).await;
    assert!(
        out.contains("params idle=7.0 bidi=3 uni=5 max_data=300000 stream_data=100000"),
        "{out}"
    );
    peer.stop().await;
    let peer = serve(|c| c, TransportServerBuilder::new()).await;
    let out = peer.run("params", &[]).await;
    use msgtrans::protocol::quic::*;
    let want = format!(
        "params idle={:.1} bidi={} uni={} max_data={} stream_data={}",
        DEFAULT_QUIC_IDLE_TIMEOUT.as_secs_f64(),
        DEFAULT_QUIC_MAX_BIDI_STREAMS,
        DEFAULT_QUIC_MAX_UNI_STREAMS,
        DEFAULT_QUIC_RECEIVE_WINDOW,
        DEFAULT_QUIC_STREAM_WINDOW
    );
    assert!(out.contains(&want), "{out} (wanted {want})");
    peer.stop().await;
}

/// aioquic as the server: it prints the transport parameters our client
/// sends, so the client's limits are seen on the wire by another stack.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aioquic_server_sees_the_transport_limits_our_client_configures() {
    use msgtrans::protocol::QuicClientConfig;
    use msgtrans::transport::{RetryConfig, TransportClientBuilder};
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let dir = std::env::temp_dir().join(format!("msgtrans-aioquic-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let mut child = Command::new(python())
        .arg(peer_script("quic_server.py"))
        .arg(&cert_path)
        .arg(&key_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let port_line = within(GUARD, "aioquic server port", lines.recv())
        .await
        .expect("a port line");
    let port: u16 = port_line
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .expect(&port_line);

    let cfg = QuicClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_ca_cert_pem(cert.cert.pem())
        .unwrap()
        .with_max_idle_timeout(Duration::from_secs(9))
        .with_max_concurrent_streams(4)
        .with_max_concurrent_uni_streams(6)
        .with_stream_receive_window(111_000)
        .with_receive_window(333_000);
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .retry_strategy(RetryConfig::none())
        .build()
        .await
        .unwrap();
    within(GUARD, "connect to aioquic", c.connect()).await.expect("connect");
    let params = within(GUARD, "params", lines.recv()).await.expect("a params line");
    assert_eq!(
        params,
        "params idle=9.0 bidi=4 uni=6 max_data=333000 stream_data=111000"
    );
    c.stop().await;
    drop(child.stdin.take());
    let _ = child.kill();
    let _ = child.wait();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aioquic_answers_a_retry_and_is_served() {
    let peer = serve(
        |c| c.with_retry_after_handshakes(Some(0)),
        TransportServerBuilder::new(),
    )
    .await;
    let out = peer.run("request", &[]).await;
    assert!(out.contains("ok "), "{out}");
    assert!(
        peer.server.stats().total.quic_retries >= 1,
        "the server asked for a Retry"
    );
    peer.stop().await;
}
