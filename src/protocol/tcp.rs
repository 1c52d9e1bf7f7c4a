//! TCP configuration.

use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "tls")]
use crate::tls::{TlsClientConfig, TlsServerConfig};

use super::{parse_addr, ClientProtocolConfig, ConfigError, ListenerConfig, ServerProtocolConfig, TargetConfig};

/// A TCP listener. Every shard listens on this address (`SO_REUSEPORT`) and
/// every session has `TCP_NODELAY` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Address to listen on; port 0 picks a free port (see `local_addrs()`).
    pub bind_address: SocketAddr,
    /// Serve TLS on this listener.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<TlsServerConfig>,
}

impl TcpServerConfig {
    /// Listens on `bind_address` (`"127.0.0.1:8001"`; host names resolve).
    pub fn new(bind_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            bind_address: parse_addr(bind_address)?,
            #[cfg(feature = "tls")]
            tls: None,
        })
    }
    /// Serves TLS: every connection must complete a TLS handshake (within
    /// the server's handshake timeout) before its first packet.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Replaces the address.
    pub fn with_bind_address(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.bind_address = addr.into();
        self
    }
}

impl TcpServerConfig {
    /// The engine's TLS for this listener (none without the `tls` feature).
    pub(crate) fn engine_tls(&self) -> Option<msgtrans_shards::proto::tls::ServerTls> {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().map(|t| t.config.clone());
        #[cfg(not(feature = "tls"))]
        None
    }
}

impl ServerProtocolConfig for TcpServerConfig {
    fn into_listener(self) -> ListenerConfig {
        ListenerConfig::Tcp(self)
    }
}

/// Default TCP connect timeout: 10 s, MsgTrans 1.0's.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A TCP connection target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpClientConfig {
    /// The server's address.
    pub target_address: SocketAddr,
    /// How long `connect()` waits for the TCP handshake (and again for TLS).
    pub connect_timeout: Duration,
    /// Connect under TLS.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<TlsClientConfig>,
    /// The host part of the target as given, for certificate checks.
    pub host: String,
}

impl TcpClientConfig {
    /// Connects to `target_address` (`"127.0.0.1:8001"`; host names resolve).
    pub fn new(target_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            target_address: parse_addr(target_address)?,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: None,
            host: target_address
                .rsplit_once(':')
                .map_or(target_address, |(h, _)| h)
                .to_string(),
        })
    }
    /// Connects under TLS, verifying the server as `tls` says. The
    /// certificate must name the host given to `new` unless
    /// [`TlsClientConfig::with_server_name`] says otherwise.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = Some(tls);
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
}

impl TcpClientConfig {
    /// The engine's TLS for this connection (none without the `tls` feature).
    pub(crate) fn engine_tls(&self) -> Result<Option<msgtrans_shards::proto::tls::ClientTls>, ConfigError> {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().map(|t| t.build(&self.host)).transpose();
        #[cfg(not(feature = "tls"))]
        Ok(None)
    }
}

impl ClientProtocolConfig for TcpClientConfig {
    fn into_target(self) -> TargetConfig {
        TargetConfig::Tcp(self)
    }
}
