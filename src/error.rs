//! The API's error type. One variant per cause; each says which side caused it.

use std::time::Duration;

pub use msgtrans_shards::{CloseReason, CodecError, SendError, StartError, Violation};

use crate::protocol::ConfigError;
use crate::SessionId;

/// What went wrong with a transport operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    /// Local: no open session has this id (never existed, or already closed).
    #[error("session {0} not found")]
    SessionNotFound(SessionId),
    /// Peer or local: the connection closed before the operation completed.
    #[error("connection closed: {0}")]
    ConnectionClosed(CloseReason),
    /// Peer: no response within the request timeout.
    #[error("{operation} timed out after {duration:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The timeout that applied.
        duration: Duration,
    },
    /// Peer: the session's outbound queue is full (its peer reads too slowly).
    #[error("outbound queue of {0} is full")]
    Backpressure(SessionId),
    /// Peer: the session already has the maximum number of requests waiting
    /// for responses (`max_inflight_requests`).
    #[error("{0} has too many requests in flight")]
    TooManyRequests(SessionId),
    /// Local: the packet breaks a size limit.
    #[error("packet rejected: {0}")]
    Packet(#[from] CodecError),
    /// Local: the client has no open connection (call `connect()` first).
    #[error("not connected")]
    NotConnected,
    /// Local: the server or client has been stopped.
    #[error("transport stopped")]
    Stopped,
    /// Network or peer: a dropped connection could not be reopened within
    /// the retry strategy's attempts (`auto_reconnect`); the client stays
    /// disconnected until `connect()` is called again.
    #[error("reconnect failed after {attempts} attempts: {last_error}")]
    ReconnectFailed {
        /// Attempts made (the retry strategy's `max_retries`).
        attempts: usize,
        /// Why the last attempt failed.
        last_error: String,
    },
    /// Local: a stop had to give up on events the application did not take
    /// in time (its event queue stayed full). Reported once, as the last
    /// event before the stream ends, so no loss goes unnoticed.
    #[error("{count} events were given up at stop because the event queue stayed full")]
    EventsLost {
        /// How many.
        count: u64,
    },
    /// Local: invalid configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Local or network: a listener, shard or connection could not start;
    /// the [`StartError`] says which and why (`AddrInUse`, `Connect`, ...).
    /// Shared, so that this error stays `Clone` while its cause (an
    /// `io::Error`) is not: match on `err.as_ref()`.
    #[error(transparent)]
    Start(std::sync::Arc<StartError>),
    /// Cluster: the node that owns the session is down (silent past the
    /// node timeout, or restarted). A message reported with this was not
    /// confirmed: it may have reached the node just before it went.
    #[error("cluster node {0} is down")]
    NodeDown(u8),
    /// Cluster: this node cannot reach the cluster's broker.
    #[error("the cluster's broker cannot be reached")]
    ClusterUnreachable,
}

impl TransportError {
    pub(crate) fn from_send(e: SendError, timeout: Duration) -> Self {
        match e {
            SendError::SessionNotFound(id) => Self::SessionNotFound(id),
            SendError::ConnectionClosed(r) => Self::ConnectionClosed(r),
            SendError::Backpressure(id) => Self::Backpressure(id),
            SendError::Timeout => Self::Timeout {
                operation: "request",
                duration: timeout,
            },
            SendError::Encode(c) => Self::Packet(c),
            SendError::Stopped => Self::Stopped,
            SendError::TooManyRequests(id) => Self::TooManyRequests(id),
            SendError::NodeDown(n) => Self::NodeDown(n),
            SendError::ClusterUnreachable => Self::ClusterUnreachable,
        }
    }
}

impl From<SendError> for TransportError {
    fn from(e: SendError) -> Self {
        Self::from_send(e, Duration::ZERO)
    }
}

impl From<StartError> for TransportError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Stopped => Self::Stopped,
            other => Self::Start(std::sync::Arc::new(other)),
        }
    }
}

/// The result type of this crate (MsgTrans 1.0's `msgtrans::Result`).
pub type Result<T, E = TransportError> = std::result::Result<T, E>;
