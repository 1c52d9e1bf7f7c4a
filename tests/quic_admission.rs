//! QUIC address validation and stateless resets: past the half-open
//! threshold a new connection answers a Retry first and is then served;
//! a server that shares its predecessor's reset key tells that server's
//! peers at once that their connections are gone.

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use common::*;
use msgtrans::event::ClientEvent;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{TransportClientBuilder, TransportServer};
use msgtrans::{CloseReason, TlsServerConfig};
use tokio::net::UdpSocket;

async fn quic_server(tls: &TlsServerConfig, cfg: impl FnOnce(QuicServerConfig) -> QuicServerConfig) -> TransportServer {
    let quic = cfg(QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls.clone()));
    start_inline_echo(builder().with_protocol(quic)).await
}

fn client_to(addr: SocketAddr, pem: &str) -> TransportClientBuilder {
    TransportClientBuilder::new().with_protocol(
        QuicClientConfig::new(&addr.to_string())
            .unwrap()
            .with_server_name("localhost")
            .with_ca_cert_pem(pem.as_bytes())
            .unwrap()
            .with_max_idle_timeout(std::time::Duration::from_secs(120)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_threshold_a_new_connection_answers_a_retry_and_is_served() {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let server = quic_server(&tls, |c| c.with_retry_after_handshakes(Some(0))).await;
    for i in 0..3u8 {
        let mut c = client_to(server.quic_addr().unwrap(), &pem).build().await.unwrap();
        within(GUARD, "connect", c.connect()).await.unwrap();
        let r = within(GUARD, "request", c.request(&[i])).await.unwrap();
        assert_eq!(r.data.as_deref(), Some(&[i][..]));
    }
    assert!(
        server.stats().total.quic_retries >= 3,
        "every connection was asked to retry"
    );
    server.stop().await;
}

/// A UDP relay standing between a client and a server, whose upstream can
/// be switched: the server behind it "restarts" without a word to the
/// client, as a killed process would.
async fn relay(upstream: SocketAddr) -> (SocketAddr, Arc<Mutex<SocketAddr>>) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = sock.local_addr().unwrap();
    let up = Arc::new(Mutex::new(upstream));
    let current = Arc::clone(&up);
    tokio::spawn(async move {
        let mut client = None;
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            let server = *current.lock().unwrap();
            let to = if from == server {
                match client {
                    Some(c) => c,
                    None => continue,
                }
            } else if from.port() != server.port() {
                client = Some(from);
                server
            } else {
                // A datagram from the server it switched away from.
                continue;
            };
            let _ = sock.send_to(&buf[..n], to).await;
        }
    });
    (addr, up)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_with_the_same_reset_key_resets_the_old_connections_at_once() {
    let key = [7u8; 32];
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let first = quic_server(&tls, |c| c.with_stateless_reset_key(key)).await;
    let (front, upstream) = relay(first.quic_addr().unwrap()).await;
    let mut client = client_to(front, &pem).build().await.unwrap();
    let mut events = client.subscribe_events();
    within(GUARD, "connect", client.connect()).await.unwrap();
    let r = within(GUARD, "request", client.request(b"before")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"before"[..]));
    // The "restart": a new server with the same key takes the relay's
    // traffic; the first one is never heard from again.
    let second = quic_server(&tls, |c| c.with_stateless_reset_key(key)).await;
    *upstream.lock().unwrap() = second.quic_addr().unwrap();
    // The client's next packet meets a server that does not know it; the
    // reset it gets back is one the client can verify, so the connection
    // ends now, not at its 120 s idle timeout.
    let _ = client.send(b"after").await;
    let reason = within(GUARD, "disconnect", async {
        while let Some(ev) = events.next().await {
            if let ClientEvent::Disconnected { reason } = ev {
                return reason;
            }
        }
        panic!("the event stream ended without a disconnect");
    })
    .await;
    assert_eq!(reason, CloseReason::Io(std::io::ErrorKind::ConnectionReset));
    first.stop().await;
    second.stop().await;
}
