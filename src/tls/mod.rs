//! TLS settings (rustls with the ring provider): certificates for TCP and
//! WebSocket listeners and clients (the `tls` feature) and for QUIC (the
//! `quic` feature, which always runs TLS 1.3). Clients verify the server's
//! certificate by default; turning that off takes
//! [`TlsClientConfig::dangerous_skip_verification`]. A server may require
//! client certificates ([`TlsServerConfig::with_client_ca_pem`]) and swap
//! its own certificate while it runs ([`TlsServerConfig::reload_pem`]).

mod client;
mod server;

use std::sync::Arc;

pub use client::TlsClientConfig;
pub use server::TlsServerConfig;

use crate::protocol::ConfigError;

fn tls_error(reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Tls {
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Certificates in a PEM, at least one.
fn pem_certificates(pem: &[u8], what: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(format!("{what} PEM: {e}")))?;
    if certs.is_empty() {
        return Err(tls_error(format!("no certificate in the {what} PEM")));
    }
    Ok(certs)
}

/// Reads a PEM file, naming it in the error.
fn read_pem(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path).map_err(|e| tls_error(format!("{}: {e}", path.display())))
}
