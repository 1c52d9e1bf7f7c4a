//! A QUIC server builder with a fresh self-signed certificate, and our
//! client trusting it.

use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};
use msgtrans::TlsServerConfig;

use super::{within, GUARD, SHARDS};

/// A server builder listening for QUIC on an ephemeral port, and the PEM
/// of its certificate for clients to trust.
pub fn quic_builder() -> (TransportServerBuilder, String) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let b = TransportServerBuilder::new()
        .shards(SHARDS)
        .pin_shards(false)
        .with_protocol(QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls));
    (b, pem)
}

/// A client config for `server`'s QUIC port, trusting `pem`.
pub fn client_config(server: &TransportServer, pem: &str) -> QuicClientConfig {
    let port = server.quic_addr().unwrap().port();
    QuicClientConfig::new(&format!("localhost:{port}"))
        .unwrap()
        .with_ca_cert_pem(pem)
        .unwrap()
}

/// A client connected with `cfg`.
pub async fn quic_client(cfg: QuicClientConfig) -> TransportClient {
    let mut c = TransportClientBuilder::new().with_protocol(cfg).build().await.unwrap();
    within(GUARD, "quic connect", c.connect()).await.expect("connect");
    c
}
