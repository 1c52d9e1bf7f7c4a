//! A listener's side of TLS: its certificate, which can be swapped while
//! it serves, and optionally the CA its clients' certificates must chain to.

use std::path::Path;
use std::sync::{Arc, RwLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::PrivateKeyDer;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

use super::{pem_certificates, provider, read_pem, tls_error};
use crate::protocol::ConfigError;

/// The certificate a listener presents: read at each handshake, so a
/// reload reaches new handshakes while existing sessions carry on.
#[derive(Debug)]
struct Certificate(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0.read().unwrap_or_else(|e| e.into_inner())))
    }
}

/// A certificate chain and key, checked to belong together.
fn certified_key(cert_chain: &[u8], key: &[u8]) -> Result<Arc<CertifiedKey>, ConfigError> {
    let certs = pem_certificates(cert_chain, "certificate")?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_error(format!("private key PEM: {e}")))?;
    let signing = provider().key_provider.load_private_key(key).map_err(tls_error)?;
    let key = CertifiedKey::new(certs, signing);
    key.keys_match()
        .map_err(|e| tls_error(format!("the key does not match the certificate: {e}")))?;
    Ok(Arc::new(key))
}

/// A server certificate and key, and optionally the CA client
/// certificates must chain to. Clones share the certificate, so
/// [`TlsServerConfig::reload_pem`] on any clone reaches every listener
/// built from it.
#[derive(Clone)]
pub struct TlsServerConfig {
    pub(crate) config: Arc<rustls::ServerConfig>,
    certificate: Arc<Certificate>,
    client_roots: Option<Arc<rustls::RootCertStore>>,
}

impl std::fmt::Debug for TlsServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServerConfig")
            .field("client_certificates_required", &self.client_roots.is_some())
            .finish()
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
        let certificate = Arc::new(Certificate(RwLock::new(certified_key(cert_chain, key)?)));
        let config = Self::rustls(&certificate, None)?;
        Ok(Self {
            config,
            certificate,
            client_roots: None,
        })
    }

    /// A certificate chain file and a private key file, both PEM.
    pub fn from_pem_files(cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::from_pem(&read_pem(cert_chain.as_ref())?, &read_pem(key.as_ref())?)
    }

    /// A fresh self-signed certificate for `names` (for local development
    /// and tests). Returns the config and the certificate's PEM, which a
    /// client passes to [`TlsClientConfig::with_ca_pem`](super::TlsClientConfig::with_ca_pem) to trust it.
    pub fn self_signed(names: &[&str]) -> Result<(Self, String), ConfigError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let cert = rcgen::generate_simple_self_signed(names).map_err(tls_error)?;
        let cert_pem = cert.cert.pem();
        let cfg = Self::from_pem(cert_pem.as_bytes(), cert.signing_key.serialize_pem().as_bytes())?;
        Ok((cfg, cert_pem))
    }

    /// Requires every client to present a certificate that chains to a CA
    /// in this PEM (mutual TLS), on TCP+TLS, WSS and QUIC alike. A client
    /// with none, or with one that does not verify, fails the handshake
    /// with a TLS alert. The accept hook sees the verified chain
    /// ([`TlsInfo::peer_certificates`](crate::TlsInfo::peer_certificates)).
    pub fn with_client_ca_pem(mut self, pem: &[u8]) -> Result<Self, ConfigError> {
        let mut roots = self
            .client_roots
            .as_deref()
            .cloned()
            .unwrap_or_else(rustls::RootCertStore::empty);
        for c in pem_certificates(pem, "client CA")? {
            roots.add(c).map_err(tls_error)?;
        }
        let roots = Arc::new(roots);
        self.config = Self::rustls(&self.certificate, Some(&roots))?;
        self.client_roots = Some(roots);
        Ok(self)
    }

    /// [`TlsServerConfig::with_client_ca_pem`] from a file.
    pub fn with_client_ca_file(self, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let pem = read_pem(path.as_ref())?;
        self.with_client_ca_pem(&pem)
    }

    /// Swaps the certificate and key for new handshakes, without a
    /// restart; sessions already open carry on. Refused, and the old
    /// certificate kept, if the PEM is bad or the key does not match.
    pub fn reload_pem(&self, cert_chain: &[u8], key: &[u8]) -> Result<(), ConfigError> {
        let key = certified_key(cert_chain, key)?;
        *self.certificate.0.write().unwrap_or_else(|e| e.into_inner()) = key;
        Ok(())
    }

    /// [`TlsServerConfig::reload_pem`] from files.
    pub fn reload_pem_files(&self, cert_chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Result<(), ConfigError> {
        self.reload_pem(&read_pem(cert_chain.as_ref())?, &read_pem(key.as_ref())?)
    }

    fn rustls(
        certificate: &Arc<Certificate>,
        client_roots: Option<&Arc<rustls::RootCertStore>>,
    ) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let builder = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(tls_error)?;
        let builder = match client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::clone(roots), provider())
                    .build()
                    .map_err(tls_error)?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let resolver: Arc<dyn ResolvesServerCert> = certificate.clone();
        Ok(Arc::new(builder.with_cert_resolver(resolver)))
    }
}
