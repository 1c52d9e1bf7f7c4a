//! The labels counters are split by: the protocol a session speaks, and the
//! kind of reason it closed for. Both are small dense enums so that a
//! shard's counters are plain arrays indexed by them.

use crate::error::CloseReason;
use crate::wire::Wire;

/// The protocol a session speaks, as counted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Packets back to back over plain TCP.
    Tcp,
    /// Packets back to back over TLS over TCP.
    TcpTls,
    /// One packet per WebSocket binary message (`ws://`).
    WebSocket,
    /// WebSocket over TLS (`wss://`).
    Wss,
    /// QUIC (always under TLS).
    Quic,
}

impl Protocol {
    /// Number of protocols, the length of per-protocol arrays.
    pub const COUNT: usize = 5;
    /// Every protocol, in index order.
    pub const ALL: [Protocol; Self::COUNT] = [
        Protocol::Tcp,
        Protocol::TcpTls,
        Protocol::WebSocket,
        Protocol::Wss,
        Protocol::Quic,
    ];

    /// Index into per-protocol arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in events, metrics labels and JSON (the same names
    /// `TransportServer::addr_of` takes).
    pub const fn label(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::TcpTls => "tcp+tls",
            Protocol::WebSocket => "websocket",
            Protocol::Wss => "wss",
            Protocol::Quic => "quic",
        }
    }

    /// The protocol of a session framed by `wire`, under TLS or not.
    pub(crate) fn of(wire: Wire, tls: bool) -> Self {
        match (wire, tls) {
            (Wire::Tcp, false) => Protocol::Tcp,
            (Wire::Tcp, true) => Protocol::TcpTls,
            #[cfg(feature = "websocket")]
            (Wire::WsServer | Wire::WsClient, false) => Protocol::WebSocket,
            #[cfg(feature = "websocket")]
            (Wire::WsServer | Wire::WsClient, true) => Protocol::Wss,
            #[cfg(feature = "quic")]
            (Wire::Quic, _) => Protocol::Quic,
        }
    }
}

/// A [`CloseReason`] without its details: what close counters are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseKind {
    /// [`CloseReason::PeerClosed`].
    PeerClosed,
    /// [`CloseReason::PeerResetMidFrame`].
    PeerResetMidFrame,
    /// [`CloseReason::Io`], any error kind.
    Io,
    /// [`CloseReason::ProtocolError`], any codec error.
    ProtocolError,
    /// [`CloseReason::LocalClose`].
    LocalClose,
    /// [`CloseReason::Shutdown`].
    Shutdown,
    /// [`CloseReason::IdleTimeout`].
    IdleTimeout,
    /// [`CloseReason::SlowConsumer`].
    SlowConsumer,
    /// [`CloseReason::WebSocket`], any close code.
    WebSocket,
    /// [`CloseReason::HandshakeTimeout`].
    HandshakeTimeout,
    /// [`CloseReason::ConnectionLimit`].
    ConnectionLimit,
    /// [`CloseReason::PolicyViolation`], any violation.
    PolicyViolation,
}

impl CloseKind {
    /// Number of kinds, the length of per-kind arrays.
    pub const COUNT: usize = 12;
    /// Every kind, in index order.
    pub const ALL: [CloseKind; Self::COUNT] = [
        CloseKind::PeerClosed,
        CloseKind::PeerResetMidFrame,
        CloseKind::Io,
        CloseKind::ProtocolError,
        CloseKind::LocalClose,
        CloseKind::Shutdown,
        CloseKind::IdleTimeout,
        CloseKind::SlowConsumer,
        CloseKind::WebSocket,
        CloseKind::HandshakeTimeout,
        CloseKind::ConnectionLimit,
        CloseKind::PolicyViolation,
    ];

    /// The kind of `reason`. The match is exhaustive on purpose: a new
    /// `CloseReason` does not compile until it has a counter.
    pub fn of(reason: &CloseReason) -> Self {
        match reason {
            CloseReason::PeerClosed => CloseKind::PeerClosed,
            CloseReason::PeerResetMidFrame => CloseKind::PeerResetMidFrame,
            CloseReason::Io(_) => CloseKind::Io,
            CloseReason::ProtocolError(_) => CloseKind::ProtocolError,
            CloseReason::LocalClose => CloseKind::LocalClose,
            CloseReason::Shutdown => CloseKind::Shutdown,
            CloseReason::IdleTimeout => CloseKind::IdleTimeout,
            CloseReason::SlowConsumer => CloseKind::SlowConsumer,
            CloseReason::WebSocket(_) => CloseKind::WebSocket,
            CloseReason::HandshakeTimeout => CloseKind::HandshakeTimeout,
            CloseReason::ConnectionLimit => CloseKind::ConnectionLimit,
            CloseReason::PolicyViolation(_) => CloseKind::PolicyViolation,
        }
    }

    /// Index into per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in metrics labels and JSON.
    pub const fn label(self) -> &'static str {
        match self {
            CloseKind::PeerClosed => "peer_closed",
            CloseKind::PeerResetMidFrame => "peer_reset_mid_frame",
            CloseKind::Io => "io",
            CloseKind::ProtocolError => "protocol_error",
            CloseKind::LocalClose => "local_close",
            CloseKind::Shutdown => "shutdown",
            CloseKind::IdleTimeout => "idle_timeout",
            CloseKind::SlowConsumer => "slow_consumer",
            CloseKind::WebSocket => "websocket",
            CloseKind::HandshakeTimeout => "handshake_timeout",
            CloseKind::ConnectionLimit => "connection_limit",
            CloseKind::PolicyViolation => "policy_violation",
        }
    }
}

/// Why a connection was refused before it became a session: what refusal
/// counters are split by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// The total or per-shard connection limit (handshakes included), or
    /// the server is stopping.
    ConnectionLimit,
    /// `max_connections_per_ip`: the address holds its share already.
    PerAddress,
    /// `max_connects_per_ip_per_sec`: the address connects too often.
    ConnectRate,
    /// A WebSocket `Origin` not on the allow-list.
    Origin,
    /// A WebSocket upgrade without the bearer token.
    Unauthorized,
    /// The application's accept hook refused it.
    Application,
}

impl Refusal {
    /// Number of kinds, the length of per-kind arrays.
    pub const COUNT: usize = 6;
    /// Every kind, in index order.
    pub const ALL: [Refusal; Self::COUNT] = [
        Refusal::ConnectionLimit,
        Refusal::PerAddress,
        Refusal::ConnectRate,
        Refusal::Origin,
        Refusal::Unauthorized,
        Refusal::Application,
    ];

    /// Index into per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in metrics labels and JSON.
    pub const fn label(self) -> &'static str {
        match self {
            Refusal::ConnectionLimit => "connection_limit",
            Refusal::PerAddress => "per_address",
            Refusal::ConnectRate => "connect_rate",
            Refusal::Origin => "origin",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Application => "application",
        }
    }
}

/// Why the kernel failed an `accept` on a listening socket: what accept
/// failure counters are split by. The connection is not lost: it stays in
/// the listen backlog, and the shard tries again after a short back-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcceptFailure {
    /// `EMFILE` or `ENFILE`: the process's (`RLIMIT_NOFILE`) or the
    /// system's open-files limit is reached.
    FdLimit,
    /// `ENOBUFS` or `ENOMEM`: the kernel had no memory for the socket.
    Memory,
    /// Anything else (a connection reset before it was accepted, say).
    Other,
}

impl AcceptFailure {
    /// Number of kinds, the length of per-kind arrays.
    pub const COUNT: usize = 3;
    /// Every kind, in index order.
    pub const ALL: [AcceptFailure; Self::COUNT] = [AcceptFailure::FdLimit, AcceptFailure::Memory, AcceptFailure::Other];

    /// The kind of `e`, an error `accept` returned.
    pub fn of(e: &std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(libc::EMFILE | libc::ENFILE) => AcceptFailure::FdLimit,
            Some(libc::ENOBUFS | libc::ENOMEM) => AcceptFailure::Memory,
            _ => AcceptFailure::Other,
        }
    }

    /// Index into per-kind arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The name used in metrics labels and JSON.
    pub const fn label(self) -> &'static str {
        match self {
            AcceptFailure::FdLimit => "fd_limit",
            AcceptFailure::Memory => "memory",
            AcceptFailure::Other => "other",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_sits_at_its_index() {
        for (i, k) in CloseKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i, "{k:?}");
        }
        for (i, p) in Protocol::ALL.iter().enumerate() {
            assert_eq!(p.index(), i, "{p:?}");
        }
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r:?}");
        }
        for (i, a) in AcceptFailure::ALL.iter().enumerate() {
            assert_eq!(a.index(), i, "{a:?}");
        }
    }

    #[test]
    fn labels_are_distinct() {
        let mut l: Vec<_> = CloseKind::ALL.iter().map(|k| k.label()).collect();
        l.sort_unstable();
        l.dedup();
        assert_eq!(l.len(), CloseKind::COUNT);
        let mut p: Vec<_> = Protocol::ALL.iter().map(|k| k.label()).collect();
        p.sort_unstable();
        p.dedup();
        assert_eq!(p.len(), Protocol::COUNT);
        let mut r: Vec<_> = Refusal::ALL.iter().map(|k| k.label()).collect();
        r.sort_unstable();
        r.dedup();
        assert_eq!(r.len(), Refusal::COUNT);
        let mut a: Vec<_> = AcceptFailure::ALL.iter().map(|k| k.label()).collect();
        a.sort_unstable();
        a.dedup();
        assert_eq!(a.len(), AcceptFailure::COUNT);
    }

    #[test]
    fn accept_failures_are_split_by_errno() {
        let of = |n| AcceptFailure::of(&std::io::Error::from_raw_os_error(n));
        assert_eq!(of(libc::EMFILE), AcceptFailure::FdLimit);
        assert_eq!(of(libc::ENFILE), AcceptFailure::FdLimit);
        assert_eq!(of(libc::ENOBUFS), AcceptFailure::Memory);
        assert_eq!(of(libc::ENOMEM), AcceptFailure::Memory);
        assert_eq!(of(libc::ECONNABORTED), AcceptFailure::Other);
        let no_errno = std::io::Error::other("no errno");
        assert_eq!(AcceptFailure::of(&no_errno), AcceptFailure::Other);
    }

    #[test]
    fn details_do_not_split_a_kind() {
        use std::io::ErrorKind;
        assert_eq!(
            CloseKind::of(&CloseReason::Io(ErrorKind::BrokenPipe)),
            CloseKind::of(&CloseReason::Io(ErrorKind::ConnectionReset))
        );
        assert_eq!(CloseKind::of(&CloseReason::WebSocket(1009)), CloseKind::WebSocket);
    }
}
