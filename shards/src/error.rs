//! Error and close-reason types. Each variant says which side caused it.

use std::fmt;
use std::io;

use crate::id::SessionId;

/// The peer sent bytes that are not a valid packet. The session that received
/// them is closed; nothing else is affected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Peer: the header's version byte is not 1.
    #[error("unsupported wire version {0} (only 1 is spoken)")]
    UnsupportedVersion(u8),
    /// Peer: packet type byte is not 0 (one-way), 1 (request) or 2 (response).
    #[error("unknown packet type {0}")]
    UnknownPacketType(u8),
    /// Peer: compression byte is not 0 (none), 1 (zstd) or 2 (zlib).
    #[error("unknown compression {0}")]
    UnknownCompression(u8),
    /// Peer: the payload decompresses to more than the payload limit (a
    /// decompression bomb, or a peer with a larger limit than ours).
    #[error("payload decompresses to more than the maximum of {max} bytes")]
    DecompressedTooLarge {
        /// Configured maximum payload.
        max: u32,
    },
    /// Peer: the payload is not a whole, valid stream of the compression
    /// its header names (truncated, corrupt, trailing bytes, or empty).
    #[error("payload is not valid {0:?} data")]
    CorruptCompressed(crate::header::CompressionType),
    /// Peer: the payload is compressed, and this build has no
    /// decompressor (msgtrans without its `compression` feature).
    #[error("payload is {0:?}-compressed, and this build has no compression (the `compression` feature is off)")]
    CompressionNotBuilt(crate::header::CompressionType),
    /// Peer: a WebSocket binary message that does not hold exactly one packet.
    #[error("a WebSocket message of {message} bytes does not hold exactly one packet")]
    NotOnePacket {
        /// The message's length.
        message: u32,
    },
    /// Peer: on a QUIC stream, the u32 length before a packet is not the
    /// length its own header gives.
    #[error("a QUIC length prefix of {prefix} bytes disagrees with its packet of {packet}")]
    PrefixMismatch {
        /// The length prefix.
        prefix: u32,
        /// The packet's length by its header.
        packet: u32,
    },
    /// Peer (or local, when encoding): payload longer than the configured maximum.
    #[error("payload of {len} bytes exceeds the maximum of {max}")]
    PayloadTooLarge {
        /// Declared length.
        len: u32,
        /// Configured maximum.
        max: u32,
    },
    /// Peer (or local, when encoding): extension header longer than the configured maximum.
    #[error("extension header of {len} bytes exceeds the maximum of {max}")]
    ExtHeaderTooLarge {
        /// Declared length.
        len: u16,
        /// Configured maximum.
        max: u16,
    },
}

/// Why a session ended. Reported once per session in its close event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// Peer: closed its side cleanly between packets.
    PeerClosed,
    /// Peer: the connection ended inside a packet (EOF or reset mid-frame).
    PeerResetMidFrame,
    /// Peer: the connection was reset or failed with an I/O error.
    Io(io::ErrorKind),
    /// Peer: sent bytes that are not a valid packet.
    ProtocolError(CodecError),
    /// Local: the application closed the session (`close_session`, `disconnect`).
    LocalClose,
    /// Local: the server or client was stopped.
    Shutdown,
    /// Peer: nothing was sent or received for the idle timeout.
    IdleTimeout,
    /// Peer: read nothing for the write timeout while output waited.
    SlowConsumer,
    /// Peer: broke the WebSocket protocol; the session was closed with this
    /// code (1002 protocol error, 1007 invalid text, 1009 message too big;
    /// see `proto::ws::close_code`).
    WebSocket(u16),
    /// Peer: the handshake (WebSocket upgrade, TLS) did not finish in time.
    HandshakeTimeout,
    /// Local: refused because the connection limit was reached.
    ConnectionLimit,
    /// Peer: abused the session (see [`Violation`]); closed with WebSocket
    /// code 1008 on WebSocket sessions.
    PolicyViolation(Violation),
}

/// How a peer abused its session, for [`CloseReason::PolicyViolation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// Peer: sent more packets with neither payload nor extension header
    /// within one second than `max_empty_packets_per_sec` allows.
    #[error("more than {max} empty packets in one second")]
    EmptyPacketFlood {
        /// The configured limit per second.
        max: usize,
    },
    /// Peer: sent more WebSocket pings, pongs and tiny continuation frames
    /// (under 64 bytes, not the last of their message) within one second
    /// than `max_empty_packets_per_sec` allows; they share its budget with
    /// empty packets. Without a cap, a peer could keep a session busy for
    /// ever without sending a message.
    #[error("more than {max} pings, pongs or tiny fragments in one second")]
    ControlFrameFlood {
        /// The configured limit per second.
        max: usize,
    },
    /// Peer: has more requests waiting for the application's answer than
    /// `max_unanswered_requests` allows.
    #[error("more than {max} requests left unanswered")]
    UnansweredRequests {
        /// The configured limit.
        max: usize,
    },
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PeerClosed => f.write_str("peer closed the connection"),
            Self::PeerResetMidFrame => f.write_str("connection ended in the middle of a packet"),
            Self::Io(kind) => write!(f, "I/O error: {kind}"),
            Self::ProtocolError(e) => write!(f, "protocol error: {e}"),
            Self::LocalClose => f.write_str("closed by the application"),
            Self::Shutdown => f.write_str("transport shut down"),
            Self::IdleTimeout => f.write_str("idle timeout"),
            Self::SlowConsumer => f.write_str("slow consumer: output did not move within the write timeout"),
            Self::WebSocket(code) => write!(f, "websocket closed with code {code}"),
            Self::HandshakeTimeout => f.write_str("handshake timeout"),
            Self::ConnectionLimit => f.write_str("connection limit reached"),
            Self::PolicyViolation(v) => write!(f, "policy violation: {v}"),
        }
    }
}

/// A send, request or session operation that did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Local: no open session has this id (never existed, or already closed).
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    /// Peer or local: the session closed before the request was answered.
    #[error("connection closed before completion: {0}")]
    ConnectionClosed(CloseReason),
    /// Peer: the session's outbound queue is full because its peer reads
    /// slower than it is sent to.
    #[error("outbound queue of {0} is full")]
    Backpressure(SessionId),
    /// Peer: no response arrived within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// Peer: the session already has the maximum number of requests waiting
    /// for a response.
    #[error("{0} has too many requests in flight")]
    TooManyRequests(SessionId),
    /// Local: the packet is larger than the configured maximum.
    #[error(transparent)]
    Encode(#[from] CodecError),
    /// Local: the engine has stopped; nothing more can be sent.
    #[error("transport stopped")]
    Stopped,
    /// Cluster: the node that owns the session is down (silent past the
    /// node timeout, or restarted). A message reported with this was not
    /// confirmed: it may have reached the node just before it went.
    #[error("cluster node {0} is down")]
    NodeDown(u8),
    /// Cluster: this node has no connection to the cluster's broker (and
    /// had none within the node timeout, for a message already accepted).
    #[error("the cluster's broker cannot be reached")]
    ClusterUnreachable,
}

/// Why the engine, a listener or a connection could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Local: io_uring is unavailable (old kernel, seccomp, or
    /// `kernel.io_uring_disabled`). Run on Linux ≥ 5.8 with io_uring allowed.
    #[error("io_uring is unavailable ({0}); msgtrans needs Linux >= 5.8 with io_uring enabled (check sysctl kernel.io_uring_disabled and any seccomp profile)")]
    IoUringUnavailable(io::Error),
    /// Local: the locked-memory limit is too low for the shards' io_uring
    /// buffers. Raise `ulimit -l` or lower the configured `io_memory`.
    #[error("cannot lock memory for io_uring ({0}); raise `ulimit -l` (RLIMIT_MEMLOCK) or lower the shard io_memory setting")]
    LockedMemory(io::Error),
    /// Local: zero shards requested, or more than the 256 a session id can name.
    #[error("invalid shard count {0}: must be between 1 and 256")]
    InvalidShardCount(usize),
    /// Local: a shard thread could not be started.
    #[error("failed to start shard {shard}: {source}")]
    Shard {
        /// The shard index.
        shard: usize,
        /// The cause.
        source: io::Error,
    },
    /// Local: another socket (another server, or anything else) already
    /// holds the address; msgtrans never shares a port it did not open.
    #[error("cannot listen on {addr}: address already in use")]
    AddrInUse {
        /// The address.
        addr: std::net::SocketAddr,
    },
    /// Local: binding or listening failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Peer or network: the connection could not be established.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: io::Error,
    },
    /// Local: the TLS settings cannot serve this protocol (QUIC needs TLS
    /// 1.3), or a transport setting is out of range.
    #[error("invalid TLS or transport settings: {reason}")]
    Tls {
        /// What is wrong.
        reason: String,
    },
    /// Local or network: the cluster could not be joined (no broker could
    /// be reached, or the cluster settings are invalid).
    #[error("cannot join the cluster: {reason}")]
    Cluster {
        /// What is wrong.
        reason: String,
    },
    /// Local: a helper thread (the client's reconnect supervisor) could
    /// not be started.
    #[error("failed to start the {name} thread: {source}")]
    Thread {
        /// Which thread.
        name: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// Local: the engine has stopped.
    #[error("transport stopped")]
    Stopped,
}

impl StartError {
    /// An outgoing connection refused by our own connection limit.
    pub(crate) fn connection_limit(addr: std::net::SocketAddr) -> Self {
        StartError::Connect {
            addr,
            source: io::Error::other(CloseReason::ConnectionLimit.to_string()),
        }
    }
}
