//! A client's side of TLS: which servers it trusts, under which name, and
//! optionally the certificate it presents itself.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

#[cfg(feature = "tls")]
use msgtrans_shards::proto::tls::ClientTls;

use super::{pem_certificates, provider, read_pem, tls_error};
use crate::protocol::ConfigError;

/// How a client checks the server.
#[derive(Clone, Default)]
pub struct TlsClientConfig {
    roots: Vec<CertificateDer<'static>>,
    server_name: Option<String>,
    skip_verification: bool,
    /// The certificate chain and key presented to servers that ask.
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
}

impl std::fmt::Debug for TlsClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsClientConfig")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("skip_verification", &self.skip_verification)
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl PartialEq for TlsClientConfig {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
            && self.server_name == other.server_name
            && self.skip_verification == other.skip_verification
            && self.identity.as_ref().map(|i| &i.0) == other.identity.as_ref().map(|i| &i.0)
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
        self.roots.extend(pem_certificates(pem, "CA")?);
        Ok(self)
    }

    /// Trusts the CA certificates in this PEM file.
    pub fn with_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let pem = read_pem(path.as_ref())?;
        self.with_ca_pem(&pem)
    }

    /// Presents this certificate chain and key (PEM) to servers that ask
    /// for a client certificate (mutual TLS).
    pub fn with_client_cert_pem(mut self, cert_chain: &[u8], key: &[u8]) -> Result<Self, ConfigError> {
        let certs = pem_certificates(cert_chain, "client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("client key PEM: {e}")))?;
        self.identity = Some((certs, Arc::new(key)));
        Ok(self)
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
        let builder = if self.skip_verification {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider())))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for c in &self.roots {
                roots.add(c.clone()).map_err(tls_error)?;
            }
            builder.with_root_certificates(roots)
        };
        let config = match &self.identity {
            None => builder.with_no_client_auth(),
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(tls_error)?,
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
