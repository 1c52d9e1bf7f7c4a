//! Per-protocol configuration, with MsgTrans 1.0's names. Only options that
//! take effect are offered.
//!
//! Plain TCP is always built; WebSocket and QUIC come with the `websocket`
//! and `quic` features, and their config types are absent without them.

#[cfg(feature = "quic")]
#[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
pub mod quic;
mod tcp;
#[cfg(feature = "websocket")]
mod websocket;

#[cfg(feature = "quic")]
pub use quic::{QuicClientConfig, QuicServerConfig};
pub use tcp::{TcpClientConfig, TcpServerConfig};
#[cfg(feature = "websocket")]
#[cfg_attr(docsrs, doc(cfg(feature = "websocket")))]
pub use websocket::{WebSocketClientConfig, WebSocketServerConfig};

use std::net::SocketAddr;

/// An invalid configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The address is not `IP:PORT`.
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        /// What was given.
        address: String,
        /// Why it was refused.
        reason: String,
    },
    /// TLS material could not be loaded or used.
    #[error("TLS: {reason}")]
    Tls {
        /// What went wrong.
        reason: String,
    },
    /// The option needs a Cargo feature this build leaves out (a
    /// `wss://` URL without `tls`, say). Options whose types belong to a
    /// feature are absent at compile time instead; this is for what only
    /// shows in a value.
    #[error("{what} needs msgtrans's `{feature}` feature, which this build leaves out")]
    FeatureDisabled {
        /// What asked for it.
        what: String,
        /// The Cargo feature to turn on.
        feature: &'static str,
    },
    /// A value is out of range.
    #[error("invalid value for {field}: {reason}")]
    InvalidValue {
        /// The option.
        field: &'static str,
        /// Why it was refused.
        reason: String,
    },
}

pub(crate) fn parse_addr(s: &str) -> Result<SocketAddr, ConfigError> {
    use std::net::ToSocketAddrs;
    if let Ok(a) = s.parse() {
        return Ok(a);
    }
    // Unlike 1.0, host names ("localhost:8001") resolve too.
    s.to_socket_addrs()
        .map_err(|e| ConfigError::InvalidAddress {
            address: s.into(),
            reason: e.to_string(),
        })?
        .next()
        .ok_or_else(|| ConfigError::InvalidAddress {
            address: s.into(),
            reason: "resolves to no address".into(),
        })
}

/// A server-side protocol configuration accepted by
/// [`crate::transport::TransportServerBuilder::with_protocol`].
pub trait ServerProtocolConfig: Send + 'static {
    /// Turns the config into what the builder stores.
    fn into_listener(self) -> ListenerConfig;
}

/// A client-side protocol configuration accepted by
/// [`crate::transport::TransportClientBuilder::with_protocol`].
pub trait ClientProtocolConfig: Send + 'static {
    /// Turns the config into what the builder stores.
    fn into_target(self) -> TargetConfig;
}

/// A listener the server will open. Non-exhaustive: its variants follow
/// the crate's features.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ListenerConfig {
    /// TCP.
    Tcp(TcpServerConfig),
    /// WebSocket.
    #[cfg(feature = "websocket")]
    WebSocket(WebSocketServerConfig),
    /// QUIC.
    #[cfg(feature = "quic")]
    Quic(QuicServerConfig),
}

/// Where and how a client connects. Non-exhaustive: its variants follow
/// the crate's features.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TargetConfig {
    /// TCP.
    Tcp(TcpClientConfig),
    /// WebSocket.
    #[cfg(feature = "websocket")]
    WebSocket(WebSocketClientConfig),
    /// QUIC.
    #[cfg(feature = "quic")]
    Quic(QuicClientConfig),
}
