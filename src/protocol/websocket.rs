//! WebSocket configuration.

use std::net::SocketAddr;
use std::time::Duration;

#[cfg(feature = "tls")]
use crate::tls::{TlsClientConfig, TlsServerConfig};

use super::{parse_addr, ClientProtocolConfig, ConfigError, ListenerConfig, ServerProtocolConfig, TargetConfig};

/// A WebSocket listener: every shard listens on this address, upgrades
/// requests for `path` (others get 404, plain HTTP gets 400) and carries one
/// packet per binary message. The subprotocol `msgtrans.v1` is echoed when
/// a client offers it; clients that offer none are served too. A text
/// message arrives as a one-way packet whose payload is the text.
///
/// Message size is bounded by the server's `max_payload` and
/// `max_ext_header` (a bigger message closes the session with 1009); the
/// upgrade must finish within the server's handshake timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketServerConfig {
    /// Address to listen on.
    pub bind_address: SocketAddr,
    /// The request path that is upgraded (default `/`).
    pub path: String,
    /// Serve `wss://` (TLS, then the upgrade).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<TlsServerConfig>,
    /// Origins a browser page may connect from (default: any). See
    /// [`WebSocketServerConfig::with_allowed_origin`].
    pub allowed_origins: Vec<String>,
    /// The bearer token every upgrade must present (default: none). See
    /// [`WebSocketServerConfig::with_auth_token`].
    pub auth_token: Option<String>,
}

impl WebSocketServerConfig {
    /// Listens on `bind_address`, upgrading requests for `/`.
    pub fn new(bind_address: &str) -> Result<Self, ConfigError> {
        Ok(Self {
            bind_address: parse_addr(bind_address)?,
            path: "/".into(),
            #[cfg(feature = "tls")]
            tls: None,
            allowed_origins: Vec::new(),
            auth_token: None,
        })
    }
    /// Serves `wss://`: a TLS handshake, then the upgrade, both within the
    /// server's handshake timeout.
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn with_tls(mut self, tls: TlsServerConfig) -> Self {
        self.tls = Some(tls);
        self
    }
    /// Lets browser pages from `origin` (`"https://app.example"`) connect;
    /// call once per origin. Once any is set, an upgrade whose `Origin`
    /// is not on the list, or is `null`, gets 403. A request without an
    /// Origin header (not a browser, so carrying no ambient cookies) is
    /// still allowed. Without a list, any web page a user visits can open a
    /// session with the user's cookies (cross-site WebSocket hijacking).
    pub fn with_allowed_origin(mut self, origin: impl Into<String>) -> Self {
        self.allowed_origins.push(origin.into());
        self
    }
    /// Requires every upgrade to present `token`, in an
    /// `Authorization: Bearer` header or a `token` query parameter
    /// (`ws://host/ws?token=...`, for browsers, which cannot set headers).
    /// A missing or wrong token gets 401. Use it over `wss://`: in plain
    /// `ws://` the token crosses the network readable.
    pub fn with_auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }
    /// Upgrades only requests for `path` (must start with `/`).
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }
    /// Replaces the address.
    pub fn with_bind_address(mut self, addr: impl Into<SocketAddr>) -> Self {
        self.bind_address = addr.into();
        self
    }
}

impl WebSocketServerConfig {
    /// The engine's TLS for this listener (none without the `tls` feature).
    pub(crate) fn engine_tls(&self) -> Option<msgtrans_shards::proto::tls::ServerTls> {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().map(|t| t.config.clone());
        #[cfg(not(feature = "tls"))]
        None
    }
}

impl ServerProtocolConfig for WebSocketServerConfig {
    fn into_listener(self) -> ListenerConfig {
        ListenerConfig::WebSocket(self)
    }
}

/// A WebSocket connection target, from a `ws://host:port/path` URL. The
/// client offers the `msgtrans.v1` subprotocol, like MsgTrans 2.0 clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebSocketClientConfig {
    /// The URL as given.
    pub target_url: String,
    /// The server's address (resolved from the URL's host and port).
    pub address: SocketAddr,
    /// The `Host` header sent.
    pub host: String,
    /// The request path.
    pub path: String,
    /// How long `connect()` waits for TCP, TLS and the upgrade, each.
    pub connect_timeout: Duration,
    /// TLS for `wss://` URLs (verifying, with no CA until one is added).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub tls: Option<TlsClientConfig>,
}

impl WebSocketClientConfig {
    /// Connects to `target_url` (`ws://127.0.0.1:8002/ws`, or `wss://` for
    /// TLS; the port defaults to 80 or 443). A `wss://` client verifies the
    /// server: add its CA with `with_tls` (the `tls` feature).
    pub fn new(target_url: &str) -> Result<Self, ConfigError> {
        let bad = |reason: &str| ConfigError::InvalidAddress {
            address: target_url.into(),
            reason: reason.into(),
        };
        let (rest, secure) = match target_url.split_once("://") {
            Some(("ws", rest)) => (rest, false),
            Some(("wss", rest)) => (rest, true),
            _ => return Err(bad("must start with ws:// or wss://")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        #[cfg(not(feature = "tls"))]
        if secure {
            return Err(ConfigError::FeatureDisabled {
                what: "a wss:// URL".into(),
                feature: "tls",
            });
        }
        let with_port = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority.to_string()
        } else {
            format!("{authority}:{}", if secure { 443 } else { 80 })
        };
        Ok(Self {
            target_url: target_url.into(),
            address: parse_addr(&with_port)?,
            host: authority.into(),
            path: path.into(),
            connect_timeout: super::tcp::DEFAULT_CONNECT_TIMEOUT,
            #[cfg(feature = "tls")]
            tls: secure.then(TlsClientConfig::new),
        })
    }
    /// How a `wss://` client verifies the server (or, on a `ws://` URL,
    /// turns TLS on anyway).
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
}

impl WebSocketClientConfig {
    /// The engine's TLS for this connection (none without the `tls` feature).
    pub(crate) fn engine_tls(&self) -> Result<Option<msgtrans_shards::proto::tls::ClientTls>, ConfigError> {
        #[cfg(feature = "tls")]
        {
            let name = self.host.rsplit_once(':').map_or(self.host.as_str(), |(h, _)| h);
            self.tls.as_ref().map(|t| t.build(name)).transpose()
        }
        #[cfg(not(feature = "tls"))]
        Ok(None)
    }
}

impl ClientProtocolConfig for WebSocketClientConfig {
    fn into_target(self) -> TargetConfig {
        TargetConfig::WebSocket(self)
    }
}
