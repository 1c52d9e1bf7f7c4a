//! What the shards tell the application, and what it asks of them.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::error::{CloseReason, SendError};
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
        /// The peer's certificate chain, leaf first, in DER, as verified
        /// against the listener's client CA (empty without one).
        peer_certificates: Vec<Vec<u8>>,
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
        /// When the shard took it from the session's read buffer (one
        /// clock reading per batch; see `TransportContext::timestamp`).
        received: Instant,
    },
    /// A listener started (sent by the API layer, after binding).
    Listening {
        /// The bound address.
        addr: SocketAddr,
    },
    /// A broadcast that was not waited for did not reach every node: `node`
    /// did not confirm it.
    BroadcastIncomplete {
        /// The node.
        node: u8,
        /// Why.
        error: SendError,
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

/// Where the shards deliver events.
#[derive(Clone, Debug)]
pub struct EventSink {
    /// The bounded queue to the application.
    pub tx: flume::Sender<EngineEvent>,
    /// Whether connection open/close events are wanted. With an inline
    /// handler they are sent only once someone subscribes.
    pub lifecycle: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Rung once per shard turn in which events went into `tx`: the
    /// application waits on this, not on `tx` (see `turn_bell`).
    pub bell: std::sync::Arc<msgtrans_sync::waitlist::WaitList>,
}

/// Work for a shard that only a layer above the shard context knows how
/// to do (the drivers: listen, connect, a relayed QUIC datagram). This
/// layer cannot name the shard, so the work takes it as `&dyn Any`;
/// `Shard::task` builds one that downcasts it back.
pub(crate) struct Task(pub(crate) Box<TaskFn>);

/// The work of a [`Task`]: run once, with the shard.
pub(crate) type TaskFn = dyn FnOnce(&dyn std::any::Any) + Send;

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
        /// The cluster node the packet came from, which is told if it
        /// cannot be queued (`None`: sent on this node; a failure is this
        /// node's `SendFailed`).
        report: Option<u8>,
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
    /// Queue a packet for every session of this shard but `except`; reply
    /// with the count.
    Broadcast {
        packet: Packet,
        except: Option<SessionId>,
        reply: Option<flume::Sender<usize>>,
    },
    /// A packet for `id`, accepted on this node, was not delivered by the
    /// node that owns `id`: the inline handler's `on_undelivered` hears it
    /// (by default, a `SendFailed` event).
    Report {
        id: SessionId,
        packet: Packet,
        error: SendError,
    },
    /// Hand an event to the application (from the cluster layer).
    Event(EngineEvent),
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
    /// Work from a layer above the shard context: a driver's listen or
    /// connect, or a datagram relayed to the shard that owns its
    /// connection.
    Task(Task),
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
