//! TCP configuration.

use std::net::SocketAddr;
use std::time::Duration;

use crate::tls::{TlsClientConfig, TlsServerConfig};

use super::{parse_addr, ClientProtocolConfig, ConfigError, ListenerConfig, ServerProtocolConfig, TargetConfig};

/// A TCP listener. Every shard listens on this address (`SO_REUSEPORT`) and
/// every session has `TCP_NODELAY` set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpServerConfig {
    /// Address to listen on; port 0 picks a free port (see `local_addrs()`).
    pub bind_address: SocketAddr,
    /// Serve TLS on this listener.
    pub tls: Option<TlsServerConfig>,
}

impl TcpServerConfig {
    /// Listens on `bind_address` (`"127.0.0.1:8001"`; host names resolve).
    pub fn new(bind_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            bind_address: parse_addr(bind_address)?,
            tls: None,
        })
    }
    /// Serves TLS: every connection must complete a TLS handshake (within
    /// the server's handshake timeout) before its first packet.
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

impl ClientProtocolConfig for TcpClientConfig {
    fn into_target(self) -> TargetConfig {
        TargetConfig::Tcp(self)
    }
}
