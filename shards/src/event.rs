//! What the shards tell the application, and what it asks of them.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::{CloseReason, SendError, StartError};
use crate::id::SessionId;
use crate::packet::Packet;

/// An event from the shards to the application side.
#[derive(Debug, Clone)]
pub enum EngineEvent {
    /// A session opened.
    Opened {
        /// The session.
        id: SessionId,
        /// The peer's address.
        peer: SocketAddr,
        /// Our address.
        local: SocketAddr,
        /// `"tcp"` or `"websocket"`.
        protocol: &'static str,
    },
    /// A session closed. Sent exactly once per opened session.
    Closed {
        /// The session.
        id: SessionId,
        /// Why.
        reason: CloseReason,
    },
    /// A one-way packet or a request arrived (and no inline handler took it).
    Message {
        /// The session it came from.
        id: SessionId,
        /// The packet.
        packet: Packet,
    },
    /// A listener started (sent by the API layer, after binding).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A packet accepted by `send` could not be queued after all.
    SendFailed {
        /// The target session.
        id: SessionId,
        /// The packet's message id.
        message_id: u32,
        /// Why.
        error: SendError,
    },
}

/// The reply channel of a request.
pub type ReplyTx = flume::Sender<Result<Packet, SendError>>;

/// Commands to a shard, from the API or from another shard.
pub(crate) enum Command {
    /// Queue a packet for a session. With `wait`, wait for room until the
    /// deadline and report the outcome; without, a full queue is reported
    /// as a `SendFailed` event.
    Send {
        id: SessionId,
        packet: Packet,
        wait: Option<(std::time::Instant, flume::Sender<Result<(), SendError>>)>,
        /// Bytes the sender reserved in the slot table for this packet
        /// (0 for none); the shard releases them once it has queued or
        /// refused the packet.
        reserved: usize,
    },
    /// Send a request and complete `reply` with its response.
    Request {
        id: SessionId,
        packet: Packet,
        timeout: Duration,
        reply: ReplyTx,
    },
    /// A request of the peer's will not be answered (its responder was
    /// dropped): a draining session need not wait for it.
    Abandon { id: SessionId },
    /// Queue a packet for every session of this shard; reply with the count.
    Broadcast {
        packet: Packet,
        reply: flume::Sender<usize>,
    },
    /// Close a session.
    Close {
        id: SessionId,
        reason: CloseReason,
        reply: flume::Sender<bool>,
    },
    /// Answer `reply` (with `true`) once the session has closed, without
    /// closing it; `false` at once if it is not open. Lets a client notice a
    /// dropped connection without polling.
    WatchClose { id: SessionId, reply: flume::Sender<bool> },
    /// Start accepting on a listening socket.
    Listen {
        listener: std::net::TcpListener,
        accept: crate::proto::Accept,
    },
    /// Open an outgoing connection.
    Connect {
        addr: SocketAddr,
        timeout: Duration,
        dial: crate::proto::Dial,
        reply: flume::Sender<Result<SessionId, StartError>>,
    },
    /// Serve QUIC on this shard's socket of listener `index`.
    #[cfg(feature = "quic")]
    ListenQuic {
        socket: std::net::UdpSocket,
        index: usize,
        config: std::sync::Arc<quinn_proto::ServerConfig>,
    },
    /// Open an outgoing QUIC connection.
    #[cfg(feature = "quic")]
    ConnectQuic {
        addr: SocketAddr,
        timeout: Duration,
        config: quinn_proto::ClientConfig,
        server_name: String,
        reply: flume::Sender<Result<SessionId, StartError>>,
    },
    /// A datagram another shard received for a QUIC connection of ours.
    #[cfg(feature = "quic")]
    QuicDatagram {
        listener: usize,
        datagram: crate::proto::quic::endpoint::Relayed,
    },
    /// List open sessions.
    Sessions { reply: flume::Sender<Vec<SessionId>> },
    /// Stop listening and admitting connections; answer once the shard's
    /// listeners are gone. The first phase of a stop: every shard does this
    /// before any shard closes a session, so no connection is accepted by a
    /// shard still listening while another is already closing.
    Unlisten { reply: flume::Sender<()> },
    /// One session's counters (`None`: not open).
    SessionStats {
        id: SessionId,
        reply: flume::Sender<Option<crate::stats::SessionStats>>,
    },
    /// Stop listening, close every session, then end the shard. With a
    /// drain deadline, sessions first finish what is in flight (pending
    /// requests, queued output, packets already read) and close as they go
    /// quiet; whatever is still open at the deadline is closed then.
    Stop {
        drain_until: Option<std::time::Instant>,
        reply: flume::Sender<()>,
    },
}
