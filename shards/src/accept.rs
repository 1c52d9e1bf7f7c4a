//! The accept hook: the application's say on who may connect. Every
//! transport asks it, after the cheap checks (connection and per-address
//! limits) and the protocol handshake, before a session exists, with what
//! that handshake revealed: the addresses, the WebSocket request, the TLS
//! server name and ALPN. It answers through a [`Decision`], at once or
//! later from any thread (a token checked against a service), within the
//! handshake timeout; the shard never blocks on it.
//!
//! A refusal reaches the client in its transport's terms: an HTTP status
//! on WebSocket, a close on TCP (after the TLS handshake on TLS), an
//! application close on QUIC. Refusals are counted as
//! [`Refusal::Application`](crate::stats::Refusal::Application).

use std::net::SocketAddr;

use crate::stats::Protocol;

/// What the hook sees of a connection about to become a session.
#[derive(Debug, Clone)]
pub struct ConnectRequest {
    /// The peer's address.
    pub peer: SocketAddr,
    /// Our address.
    pub local: SocketAddr,
    /// The transport it arrived on.
    pub protocol: Protocol,
    /// The upgrade request, on WebSocket.
    pub websocket: Option<WsRequest>,
    /// What the TLS handshake agreed, under TLS and on QUIC.
    pub tls: Option<TlsInfo>,
}

/// A WebSocket upgrade request, as the hook sees it.
#[derive(Debug, Clone, Default)]
pub struct WsRequest {
    /// The request path, without the query.
    pub path: String,
    /// The query string after `?`, if any, as sent.
    pub query: Option<String>,
    /// Every header, in order, with its value as text (lossy UTF-8).
    pub headers: Vec<(String, String)>,
    /// The subprotocols the client offered.
    pub subprotocols: Vec<String>,
}

impl WsRequest {
    /// The first header called `name` (ignoring case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What a TLS handshake agreed.
#[derive(Debug, Clone, Default)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI).
    pub server_name: Option<String>,
    /// The application protocol agreed (ALPN).
    pub alpn: Option<Vec<u8>>,
    /// The client's certificate chain, leaf first, in DER, as verified
    /// against the listener's client CA (empty when none is required).
    pub peer_certificates: Vec<Vec<u8>>,
}

/// The hook's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The connection becomes a session.
    Accept,
    /// The connection is refused. `status` is the HTTP status a WebSocket
    /// client gets (401 or 403, say; other transports close), `reason` the
    /// body of that response and the reason a QUIC close carries.
    Refuse {
        /// HTTP status for WebSocket (400–599; anything else is sent as 403).
        status: u16,
        /// Why, for the client (kept short: it is sent as is).
        reason: String,
    },
}

impl Verdict {
    /// A refusal with `status` and `reason`.
    pub fn refuse(status: u16, reason: impl Into<String>) -> Self {
        Verdict::Refuse {
            status,
            reason: reason.into(),
        }
    }
}

/// The way to answer one connect request: once, at once or later, from any
/// thread. Dropped unanswered, it refuses (403): a hook that fails closes
/// the door rather than opening it.
#[derive(Debug)]
pub struct Decision {
    tx: Option<flume::Sender<Verdict>>,
}

impl Decision {
    pub(crate) fn new(tx: flume::Sender<Verdict>) -> Self {
        Self { tx: Some(tx) }
    }

    /// Answers with `verdict`.
    pub fn decide(mut self, verdict: Verdict) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(verdict);
        }
    }

    /// Lets the connection in.
    pub fn accept(self) {
        self.decide(Verdict::Accept)
    }

    /// Refuses the connection (see [`Verdict::Refuse`]).
    pub fn refuse(self, status: u16, reason: impl Into<String>) {
        self.decide(Verdict::refuse(status, reason))
    }
}

impl Drop for Decision {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            let _ = tx.send(Verdict::refuse(403, "refused"));
        }
    }
}

/// Decides who may connect. Runs on the shard that accepted the
/// connection, so `on_connect` must not block: answer `decision` at once,
/// or hand it to a task of your own and answer there.
pub trait AcceptHook: Send + Sync + 'static {
    /// Called once per connection, after its handshake and before it
    /// becomes a session.
    fn on_connect(&self, request: &ConnectRequest, decision: Decision);
}

/// A closure that decides at once.
impl<F> AcceptHook for F
where
    F: Fn(&ConnectRequest) -> Verdict + Send + Sync + 'static,
{
    fn on_connect(&self, request: &ConnectRequest, decision: Decision) {
        decision.decide(self(request))
    }
}
