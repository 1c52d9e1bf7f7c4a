//! TLS settings (rustls with the ring provider): certificates for TCP and
//! WebSocket listeners and clients (the `tls` feature) and for QUIC (the
//! `quic` feature, which always runs TLS 1.3). Clients verify the server's
//! certificate by default; turning that off takes
//! [`TlsClientConfig::dangerous_skip_verification`].

use std::path::Path;
use std::sync::Arc;

#[cfg(feature = "tls")]
use msgtrans_shards::proto::tls::ClientTls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

use crate::protocol::ConfigError;

fn tls_error(reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Tls {
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server certificate and key.
#[derive(Clone)]
pub struct TlsServerConfig {
    pub(crate) config: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServerConfig")
    }
}

impl PartialEq for TlsServerConfig {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}
impl Eq for TlsServerConfig {}

impl TlsServerConfig {
    /// A certificate chain and private key, both PEM.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("certificate PEM: {e}")))?;
        if certs.is_empty() {
            return Err(tls_error("no certificate in the PEM"));
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("private key PEM: {e}")))?;
        let config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(tls_error)?;
        Ok(Self {
            config: Arc::new(config),
        })
    }

    /// A certificate chain file and a private key file, both PEM.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let read = |p: &Path| std::fs::read(p).map_err(|e| tls_error(format!("{}: {e}", p.display())));
        Self::from_pem(&read(cert_chain.as_ref())?, &read(key.as_ref())?)
    }

    /// A fresh self-signed certificate for `names` (for local development
    /// and tests). Returns the config and the certificate's PEM, which a
    /// client passes to [`TlsClientConfig::with_ca_pem`] to trust it.
    pub fn self_signed(names: &[&str]) -> Result<(Self, String), ConfigError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).map_err(tls_error)?;
        let cert_pem = cert.cert.pem();
        let cfg = Self::from_pem(cert_pem.as_bytes(), cert.signing_key.serialize_pem().as_bytes())?;
        Ok((cfg, cert_pem))
    }
}

/// How a client checks the server.
#[derive(Clone, Default)]
pub struct TlsClientConfig {
    roots: Vec<CertificateDer<'static>>,
    server_name: Option<String>,
    skip_verification: bool,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("skip_verification", &self.skip_verification)
            .finish()
    }
}

impl PartialEq for TlsClientConfig {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
            && self.server_name == other.server_name
            && self.skip_verification == other.skip_verification
    }
}
impl Eq for TlsClientConfig {}

impl TlsClientConfig {
    /// Verifies the server against the CAs added with `with_ca_*` (none
    /// yet: add the CA that signed your server's certificate).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates in this PEM.
    pub fn with_ca_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        let certs = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| tls_error(format!("CA PEM: {e}")))?;
        if certs.is_empty() {
            return Err(tls_error("no certificate in the CA PEM"));
        }
        self.roots.extend(certs);
        Ok(self)
    }

    /// Trusts the CA certificates in this PEM file.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let pem = std::fs::read(path.as_ref()).map_err(|e| tls_error(format!("{}: {e}", path.as_ref().display())))?;
        self.with_ca_pem(&pem)
    }

    /// The name the certificate must carry (default: the host the client
    /// connects to).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Accepts any certificate. Only for tests against throwaway servers:
    /// anyone on the path can then read and change the traffic.
    pub fn dangerous_skip_verification(mut self) -> Self {
        self.skip_verification = true;
        self
    }

    /// The engine's settings for a TCP or WebSocket client under TLS.
    #[cfg(feature = "tls")]
    pub(crate) fn build(&self, default_name: &str) -> Result<ClientTls, ConfigError> {
        let (config, server_name) = self.rustls(default_name)?;
        Ok(ClientTls { config, server_name })
    }

    /// The rustls client config, and the name the server's certificate
    /// must carry.
    pub(crate) fn rustls(
        &self,
        default_name: &str,
    ) -> Result<(Arc<rustls::ClientConfig>, ServerName<'static>), ConfigError> {
        let name = self.server_name.as_deref().unwrap_or(default_name);
        let server_name =
            ServerName::try_from(name.to_string()).map_err(|e| tls_error(format!("server name {name:?}: {e}")))?;
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let config = if self.skip_verification {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for c in &self.roots {
                roots.add(c.clone()).map_err(tls_error)?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok((Arc::new(config), server_name))
    }
}

/// Accepts every certificate but still checks the handshake signatures, so
/// the session keys belong to whoever holds the certificate's key.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
