//! QUIC configuration (MsgTrans 1.0's names; options that take effect only).

use std::net::SocketAddr;
use std::time::Duration;

use msgtrans_shards::proto::quic::{QuicConnectConfig, QuicListenConfig, QuicTransport, ALPN};

use crate::tls::{TlsClientConfig, TlsServerConfig};

use super::{parse_addr, ClientProtocolConfig, ConfigError, ListenerConfig, ServerProtocolConfig, TargetConfig};

pub use msgtrans_shards::proto::quic::{
    DEFAULT_QUIC_IDLE_TIMEOUT, DEFAULT_QUIC_KEEP_ALIVE, DEFAULT_QUIC_MAX_BIDI_STREAMS, DEFAULT_QUIC_MAX_UNI_STREAMS,
    DEFAULT_QUIC_RECEIVE_WINDOW, DEFAULT_QUIC_STREAM_WINDOW,
};

/// The transport options both QUIC configs share, as builder methods.
macro_rules! transport_options {
    () => {
        /// Closes a connection silent for `timeout` (default
        /// [`DEFAULT_QUIC_IDLE_TIMEOUT`]); negotiated, the smaller side wins.
        pub fn with_max_idle_timeout(mut self, timeout: Duration) -> Self {
            self.transport.idle_timeout = timeout;
            self
        }
        /// Sends a PING after this much quiet (default none), so a quiet
        /// connection outlives the idle timeout.
        pub fn with_keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
            self.transport.keep_alive = interval;
            self
        }
        /// Bidirectional streams the peer may open at once (default 16).
        pub fn with_max_concurrent_streams(mut self, n: u32) -> Self {
            self.transport.max_bidi_streams = n;
            self
        }
        /// Unidirectional streams the peer may open at once (default 100;
        /// MsgTrans 1.0.0–1.0.2 use one per packet).
        pub fn with_max_concurrent_uni_streams(mut self, n: u32) -> Self {
            self.transport.max_uni_streams = n;
            self
        }
        /// Bytes the peer may send on one stream ahead of our reads
        /// (default 2 MiB).
        pub fn with_stream_receive_window(mut self, bytes: u32) -> Self {
            self.transport.stream_window = bytes;
            self
        }
        /// Bytes the peer may send on all streams ahead of our reads
        /// (default 8 MiB).
        pub fn with_receive_window(mut self, bytes: u32) -> Self {
            self.transport.receive_window = bytes;
            self
        }
    };
}

/// A QUIC listener. Every shard has its own UDP socket on this address
/// (`SO_REUSEPORT`) and its own endpoint. Clients with ALPN `msgtrans/1`
/// (MsgTrans 2.0) and without ALPN (1.0) are served on the same port; any
/// other ALPN is refused. Connection limits, the handshake timeout and the
/// session limits are the server's, as for every transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicServerConfig {
    /// Address to listen on; port 0 picks a free port.
    pub bind_address: SocketAddr,
    /// The certificate. `None`: a self-signed one for `localhost` and
    /// `127.0.0.1` is made when the server starts, as MsgTrans 1.0 does
    /// (`TransportServer::quic_certificate_pem` gives it to clients).
    pub tls: Option<TlsServerConfig>,
    /// QUIC transport settings.
    pub transport: QuicTransport,
    /// The stateless-reset key (`None`, the default: random per run).
    pub stateless_reset_key: Option<[u8; 32]>,
    /// Half-open handshakes on a shard past which new connections must
    /// answer a Retry (default 256; `None`: never; 0: always).
    pub retry_after_handshakes: Option<usize>,
    cert_pem: Option<String>,
    key_pem: Option<String>,
}

impl QuicServerConfig {
    /// Listens on `bind_address` (`"127.0.0.1:8003"`; host names resolve).
    pub fn new(bind_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            bind_address: parse_addr(bind_address)?,
            tls: None,
            transport: QuicTransport::default(),
            stateless_reset_key: None,
            retry_after_handshakes: Some(msgtrans_shards::proto::quic::DEFAULT_QUIC_RETRY_AFTER_HANDSHAKES),
            cert_pem: None,
            key_pem: None,
        })
    }
    /// Makes stateless resets with `key` (keep it secret, and the same
    /// across restarts): after a restart, a peer of the previous run that
    /// sends is told at once that its connection is gone, instead of
    /// waiting for its idle timeout.
    pub fn with_stateless_reset_key(mut self, key: [u8; 32]) -> Self {
        self.stateless_reset_key = Some(key);
        self
    }
    /// Past `threshold` handshakes half open on a shard, new connections
    /// must first answer a Retry, proving they receive at their address
    /// (`None`: never; `Some(0)`: always). A flood of Initials from forged
    /// addresses then costs no state.
    pub fn with_retry_after_handshakes(mut self, threshold: Option<usize>) -> Self {
        self.retry_after_handshakes = threshold;
        self
    }
    /// Serves this certificate and key.
    pub fn with_tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// The certificate chain, PEM (MsgTrans 1.0's name; pair it with
    /// [`QuicServerConfig::with_key_pem`]). Checked once both are given; a
    /// server given only one of them fails to start rather than fall back
    /// to a self-signed certificate.
    pub fn with_cert_pem(mut self, pem: impl Into<String>) -> Result<Self, ConfigError> {
        self.cert_pem = Some(pem.into());
        self.load_pem()
    }
    /// The private key, PEM.
    pub fn with_key_pem(mut self, pem: impl Into<String>) -> Result<Self, ConfigError> {
        self.key_pem = Some(pem.into());
        self.load_pem()
    }
    fn load_pem(mut self) -> Result<Self, ConfigError> {
        if let (Some(c), Some(k)) = (&self.cert_pem, &self.key_pem) {
            self.tls = Some(TlsServerConfig::from_pem(c.as_bytes(), k.as_bytes())?);
        }
        Ok(self)
    }
    /// Replaces the address.
    pub fn with_bind_address(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.bind_address = addr.into();
        self
    }
    transport_options!();

    /// The engine's listener config; makes the self-signed certificate if
    /// none was given, and returns its PEM then.
    pub(crate) fn listen_config(&self) -> Result<(QuicListenConfig, Option<String>), ConfigError> {
        if self.cert_pem.is_some() != self.key_pem.is_some() {
            return Err(ConfigError::Tls {
                reason: "QUIC: with_cert_pem and with_key_pem go together; only one was given".into(),
            });
        }
        let (tls, pem) = match &self.tls {
            Some(t) => (t.clone(), None),
            None => {
                let (t, pem) = TlsServerConfig::self_signed(&["localhost", "127.0.0.1"])?;
                (t, Some(pem))
            }
        };
        Ok((
            QuicListenConfig {
                tls: tls.config,
                transport: self.transport.clone(),
                stateless_reset_key: self.stateless_reset_key,
                retry_after_handshakes: self.retry_after_handshakes,
            },
            pem,
        ))
    }
}

impl ServerProtocolConfig for QuicServerConfig {
    fn into_listener(self) -> ListenerConfig {
        ListenerConfig::Quic(self)
    }
}

/// Default QUIC connect timeout: 10 s, as for TCP.
pub const DEFAULT_QUIC_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A QUIC connection target. The server's certificate is verified against
/// the CAs given (`with_ca_cert_pem`, `with_tls`); turning that off takes
/// [`QuicClientConfig::dangerous_skip_verification`]. Offers ALPN
/// `msgtrans/1` unless told otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicClientConfig {
    /// The server's address.
    pub target_address: SocketAddr,
    /// How long `connect()` waits for the handshake.
    pub connect_timeout: Duration,
    /// How the server is verified.
    pub tls: TlsClientConfig,
    /// The host part of the target as given, for certificate checks.
    pub host: String,
    /// The ALPN offered (`None`: none, as MsgTrans 1.0 clients).
    pub alpn: Option<Vec<u8>>,
    /// QUIC transport settings.
    pub transport: QuicTransport,
}

impl QuicClientConfig {
    /// Connects to `target_address` (`"127.0.0.1:8003"`; host names resolve).
    pub fn new(target_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            target_address: parse_addr(target_address)?,
            connect_timeout: DEFAULT_QUIC_CONNECT_TIMEOUT,
            tls: TlsClientConfig::new(),
            host: target_address
                .rsplit_once(':')
                .map_or(target_address, |(h, _)| h)
                .trim_matches(['[', ']'])
                .to_string(),
            alpn: Some(ALPN.to_vec()),
            transport: QuicTransport::default(),
        })
    }
    /// Verifies the server as `tls` says.
    pub fn with_tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = tls;
        self
    }
    /// Trusts the CA certificates in this PEM (MsgTrans 1.0's name).
    pub fn with_ca_cert_pem(mut self, pem: impl AsRef<[u8]>) -> Result<Self, ConfigError> {
        self.tls = self.tls.with_ca_pem(pem.as_ref())?;
        Ok(self)
    }
    /// The name the certificate must carry (default: the target's host).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls = self.tls.with_server_name(name);
        self
    }
    /// Accepts any certificate. Only for tests against throwaway servers:
    /// anyone on the path can then read and change the traffic.
    pub fn dangerous_skip_verification(mut self) -> Self {
        self.tls = self.tls.dangerous_skip_verification();
        self
    }
    /// MsgTrans 1.0's name for [`QuicClientConfig::dangerous_skip_verification`].
    pub fn danger_skip_verification(self) -> Self {
        self.dangerous_skip_verification()
    }
    /// The ALPN to offer; `None` offers none, as MsgTrans 1.0 clients do.
    pub fn with_alpn(mut self, alpn: Option<&[u8]>) -> Self {
        self.alpn = alpn.map(<[u8]>::to_vec);
        self
    }
    /// Sets the connect timeout.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
    /// Replaces the target.
    pub fn with_target_address(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.target_address = addr.into();
        self
    }
    transport_options!();

    pub(crate) fn connect_config(&self) -> Result<QuicConnectConfig, ConfigError> {
        let (tls, server_name) = self.tls.rustls(&self.host)?;
        Ok(QuicConnectConfig {
            tls,
            server_name,
            alpn: self.alpn.clone(),
            transport: self.transport.clone(),
        })
    }
}

impl ClientProtocolConfig for QuicClientConfig {
    fn into_target(self) -> TargetConfig {
        TargetConfig::Quic(self)
    }
}
