//! Client certificates (mutual TLS) on TCP+TLS, WSS and QUIC, and a server
//! certificate swapped while the server runs. The peers are our client and
//! python's `ssl` module.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};

use common::*;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig, WebSocketClientConfig, WebSocketServerConfig};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};
use msgtrans::{ConnectRequest, TcpClientConfig, TcpServerConfig, TlsClientConfig, TlsServerConfig, Verdict};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa, KeyPair};

/// A CA, and a client certificate it signed: (CA PEM, cert PEM, key PEM, cert DER).
struct Pki {
    ca: String,
    cert: String,
    key: String,
    der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let mut leaf = CertificateParams::new(vec!["client.example".to_string()]).unwrap();
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca).unwrap();
    Pki {
        ca: ca.pem(),
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().to_vec(),
    }
}

fn server_tls(clients: &Pki) -> (TlsServerConfig, String) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    (tls.with_client_ca_pem(clients.ca.as_bytes()).unwrap(), pem)
}

fn client_tls(server_pem: &str, identity: Option<&Pki>) -> TlsClientConfig {
    let t = TlsClientConfig::new().with_ca_pem(server_pem.as_bytes()).unwrap();
    match identity {
        Some(p) => t.with_client_cert_pem(p.cert.as_bytes(), p.key.as_bytes()).unwrap(),
        None => t,
    }
}

/// Connects and makes one request; `Err` if either fails.
async fn try_request(client: TransportClientBuilder) -> Result<TransportClient, String> {
    let mut c = client.build().await.map_err(|e| e.to_string())?;
    within(GUARD, "connect", c.connect()).await.map_err(|e| e.to_string())?;
    let r = within(GUARD, "request", c.request(b"who"))
        .await
        .map_err(|e| e.to_string())?;
    assert_eq!(r.data.as_deref(), Some(&b"who"[..]));
    Ok(c)
}

fn tcp_client(port: u16, tls: TlsClientConfig) -> TransportClientBuilder {
    TransportClientBuilder::new().with_protocol(
        TcpClientConfig::new(&format!("localhost:{port}"))
            .unwrap()
            .with_tls(tls),
    )
}

fn python() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

/// Runs tests/peers/tls_check.py; returns its verdict line.
async fn python_ssl(port: u16, ca: &str, identity: Option<&Pki>) -> String {
    let dir = tempdir();
    let write = |name: &str, body: &str| {
        let p = dir.join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let ca = write("ca.pem", ca);
    let mut cmd = Command::new(python());
    cmd.arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/peers/tls_check.py"))
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(&ca);
    if let Some(p) = identity {
        cmd.arg(write("cert.pem", &p.cert)).arg(write("key.pem", &p.key));
    }
    let out = within(GUARD, "python ssl", tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "msgtrans-mtls-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_tls_serves_only_clients_with_a_certificate_from_the_client_ca() {
    let clients = pki();
    let strangers = pki();
    let (tls, server_pem) = server_tls(&clients);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let hook = move |req: &ConnectRequest| {
        log.lock()
            .unwrap()
            .push(req.tls.as_ref().unwrap().peer_certificates.clone());
        Verdict::Accept
    };
    let server = start_inline_echo(
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
            .shards(SHARDS)
            .pin_shards(false)
            .accept_hook(hook),
    )
    .await;
    let port = server.addr_of("tcp+tls").unwrap().port();
    // Ours, with its certificate: served, and the hook saw the chain.
    let _ok = try_request(tcp_client(port, client_tls(&server_pem, Some(&clients))))
        .await
        .unwrap();
    assert_eq!(seen.lock().unwrap().as_slice(), &[vec![clients.der.clone()]]);
    // Without one, or with one from another CA: the handshake fails.
    assert!(try_request(tcp_client(port, client_tls(&server_pem, None)))
        .await
        .is_err());
    assert!(try_request(tcp_client(port, client_tls(&server_pem, Some(&strangers))))
        .await
        .is_err());
    assert_eq!(seen.lock().unwrap().len(), 1, "refused handshakes never reach the hook");
    // python's ssl the same.
    assert!(python_ssl(port, &server_pem, Some(&clients))
        .await
        .contains("ok served"));
    assert!(python_ssl(port, &server_pem, None).await.contains("refused"));
    assert!(python_ssl(port, &server_pem, Some(&strangers))
        .await
        .contains("refused"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_quic_require_the_client_certificate_too() {
    let clients = pki();
    let (tls, server_pem) = server_tls(&clients);
    let server = start_inline_echo(
        builder()
            .with_protocol(
                WebSocketServerConfig::new("127.0.0.1:0")
                    .unwrap()
                    .with_path("/ws")
                    .with_tls(tls.clone()),
            )
            .with_protocol(QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls)),
    )
    .await;
    let wss = format!("wss://localhost:{}/ws", server.addr_of("wss").unwrap().port());
    let ws = |id: Option<&Pki>| {
        TransportClientBuilder::new().with_protocol(
            WebSocketClientConfig::new(&wss)
                .unwrap()
                .with_tls(client_tls(&server_pem, id)),
        )
    };
    let _ok = try_request(ws(Some(&clients))).await.unwrap();
    assert!(try_request(ws(None)).await.is_err());
    let quic_addr = server.quic_addr().unwrap().to_string();
    let quic = |id: Option<&Pki>| {
        TransportClientBuilder::new().with_protocol(
            QuicClientConfig::new(&quic_addr)
                .unwrap()
                .with_tls(client_tls(&server_pem, id).with_server_name("localhost")),
        )
    };
    let _ok = try_request(quic(Some(&clients))).await.unwrap();
    assert!(try_request(quic(None)).await.is_err());
    server.stop().await;
}

async fn start_tls(tls: TlsServerConfig) -> TransportServer {
    start_inline_echo(
        TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
            .shards(SHARDS)
            .pin_shards(false),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reloaded_certificate_serves_new_handshakes_and_open_sessions_carry_on() {
    let (tls, old_pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let server = start_tls(tls.clone()).await;
    let port = server.addr_of("tcp+tls").unwrap().port();
    let trusting = |pem: &str| tcp_client(port, TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap());
    let before = try_request(trusting(&old_pem)).await.unwrap();
    // A new certificate, from a clone of the config the server was built with.
    let next = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let new_pem = next.cert.pem();
    tls.reload_pem(new_pem.as_bytes(), next.signing_key.serialize_pem().as_bytes())
        .unwrap();
    let _after = try_request(trusting(&new_pem)).await.unwrap();
    assert!(
        try_request(trusting(&old_pem)).await.is_err(),
        "new handshakes use the new certificate"
    );
    let r = within(GUARD, "old session", before.request(b"still")).await.unwrap();
    assert_eq!(r.data.as_deref(), Some(&b"still"[..]));
    // A bad reload is refused and changes nothing.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let mismatched = tls.reload_pem(new_pem.as_bytes(), other.signing_key.serialize_pem().as_bytes());
    assert!(mismatched.is_err(), "a key that does not match its certificate");
    let _still_new = try_request(trusting(&new_pem)).await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_knows_its_peers_certificate() {
    let clients = pki();
    let (tls, server_pem) = server_tls(&clients);
    let server = TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
        .shards(SHARDS)
        .pin_shards(false)
        .build()
        .await
        .unwrap();
    let mut events = server.subscribe_events();
    let port = server.addr_of("tcp+tls").unwrap().port();
    let mut client = tcp_client(port, client_tls(&server_pem, Some(&clients)))
        .build()
        .await
        .unwrap();
    within(GUARD, "connect", client.connect()).await.unwrap();
    let info = within(GUARD, "established", async {
        loop {
            if let Ok(msgtrans::ServerEvent::ConnectionEstablished { info, .. }) = events.recv().await {
                return info;
            }
        }
    })
    .await;
    assert_eq!(info.peer_certificates, vec![clients.der.clone()]);
    client.stop().await;
    server.stop().await;
}
