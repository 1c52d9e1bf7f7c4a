//! Events, the message context, and request results, with MsgTrans 1.0's
//! names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use msgtrans_shards::{CompressionType, Engine, EngineEvent, IntoPayload, Packet, PacketType};

use crate::error::{CloseReason, TransportError};
use crate::SessionId;

/// Facts about one connection.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// The session.
    pub session_id: SessionId,
    /// Our address.
    pub local_addr: SocketAddr,
    /// The peer's address.
    pub peer_addr: SocketAddr,
    /// `"tcp"`, `"websocket"` or `"quic"`.
    pub protocol: String,
    /// When the session opened.
    pub established_at: SystemTime,
    /// The peer's certificate chain, leaf first, in DER, as verified
    /// against the listener's client CA (empty when the listener asks for
    /// none: `TlsServerConfig::with_client_ca_pem`).
    pub peer_certificates: Vec<Vec<u8>>,
}

/// Events a server reports.
#[derive(Debug, Clone)]
pub enum ServerEvent {
    /// A client connected.
    ConnectionEstablished {
        /// The new session.
        session_id: SessionId,
        /// Its addresses.
        info: ConnectionInfo,
    },
    /// A session ended. Exactly one per established session.
    ConnectionClosed {
        /// The session.
        session_id: SessionId,
        /// Why it ended.
        reason: CloseReason,
    },
    /// A one-way packet or a request arrived. Requests are answered with
    /// [`TransportContext::respond`].
    MessageReceived {
        /// The sender.
        session_id: SessionId,
        /// The message.
        context: TransportContext,
    },
    /// Kept so MsgTrans 1.0 `match`es compile; never emitted. Per-message
    /// confirmations would double event traffic; failures arrive as
    /// [`ServerEvent::TransportError`].
    MessageSent {
        /// The session.
        session_id: SessionId,
        /// The message.
        message_id: u32,
    },
    /// A packet that `send` accepted could not be delivered (the session
    /// closed first, or its queue was full).
    TransportError {
        /// The session concerned.
        session_id: Option<SessionId>,
        /// What went wrong.
        error: TransportError,
    },
    /// A listener is accepting connections.
    ServerStarted {
        /// Its address.
        address: SocketAddr,
    },
    /// The server stopped; the last event.
    ServerStopped,
}

/// Events a client reports.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// The connection is open.
    Connected {
        /// Its addresses.
        info: ConnectionInfo,
    },
    /// The connection ended.
    Disconnected {
        /// Why.
        reason: CloseReason,
    },
    /// A one-way packet or a request from the server arrived.
    MessageReceived(TransportContext),
    /// Kept so MsgTrans 1.0 `match`es compile; never emitted (see
    /// [`ServerEvent::MessageSent`]).
    MessageSent {
        /// The message.
        message_id: u32,
    },
    /// A packet that `send` accepted could not be delivered; or, with
    /// `auto_reconnect`, the client gave up reopening a connection
    /// (`ReconnectFailed`); or, last before the stream ends, a stop gave up
    /// on events nobody took (`EventsLost`).
    Error {
        /// What went wrong.
        error: TransportError,
    },
}

/// One received message.
#[derive(Clone)]
pub struct TransportContext {
    /// The session it came from.
    pub peer: Option<SessionId>,
    /// Its message id.
    pub message_id: u32,
    /// Its business type.
    pub biz_type: u8,
    /// Its extension header, if non-empty.
    pub ext_header: Option<Bytes>,
    /// Its payload.
    pub data: Bytes,
    /// When it was received (MsgTrans 1.0's reception time): when its shard
    /// took it from the connection's read buffer, normally just after
    /// reading it; under backpressure (a full event queue or outbound
    /// queue) when the session resumed. Packets taken in one batch share
    /// one reading.
    pub timestamp: Instant,
    packet_type: PacketType,
    compression: CompressionType,
    engine: Option<Arc<Engine>>,
}

impl std::fmt::Debug for TransportContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportContext")
            .field("peer", &self.peer)
            .field("message_id", &self.message_id)
            .field("biz_type", &self.biz_type)
            .field("packet_type", &self.packet_type)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl TransportContext {
    pub(crate) fn new(id: SessionId, packet: Packet, received: Instant, engine: &Arc<Engine>) -> Self {
        let is_request = packet.header.packet_type == PacketType::Request;
        Self {
            peer: Some(id),
            message_id: packet.header.message_id,
            biz_type: packet.header.biz_type,
            ext_header: (!packet.ext_header.is_empty()).then_some(packet.ext_header),
            data: packet.payload,
            timestamp: received,
            packet_type: packet.header.packet_type,
            compression: packet.header.compression,
            engine: is_request.then(|| Arc::clone(engine)),
        }
    }

    /// Whether this is a request that expects [`TransportContext::respond`].
    pub fn is_request(&self) -> bool {
        self.packet_type == PacketType::Request
    }

    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.packet_type
    }

    /// How the payload travelled (`data` is always the plain payload).
    pub fn compression(&self) -> CompressionType {
        self.compression
    }

    /// The payload as text, with invalid UTF-8 replaced.
    pub fn as_text_lossy(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }

    /// Answers the request. The response keeps the request's id, biz type,
    /// extension header and compression (MsgTrans 1.0 reset the biz type to
    /// 0). Does not wait: the response is queued on the session's shard.
    ///
    /// # Errors
    /// [`TransportError::Stopped`] when called on a one-way message (there is
    /// nobody waiting), [`TransportError::SessionNotFound`] when the
    /// requester has gone, [`TransportError::Backpressure`] when its
    /// outbound queue is full (its peer does not read).
    pub fn respond(self, data: impl IntoPayload) -> Result<(), TransportError> {
        let (Some(engine), Some(id)) = (self.engine.as_ref(), self.peer) else {
            return Err(TransportError::Stopped);
        };
        let mut p = Packet::response(self.message_id, data);
        p.set_biz_type(self.biz_type);
        p.set_compression(self.compression);
        if let Some(ext) = self.ext_header {
            p.set_ext_header(ext);
        }
        engine.send(id, p).map_err(Into::into)
    }

    /// [`TransportContext::respond`] with a borrowed slice (MsgTrans 1.0 name).
    pub fn respond_bytes(self, data: &[u8]) -> Result<(), TransportError> {
        self.respond(data)
    }
}

/// How a send or request ended (MsgTrans 1.0's type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportStatus {
    /// Queued for sending.
    Sent,
    /// A response arrived.
    Completed,
}

/// The result of `send` or `request`.
#[derive(Debug, Clone)]
pub struct TransportResult {
    /// The session.
    pub peer: Option<SessionId>,
    /// The message id used.
    pub message_id: u32,
    /// When the result was produced.
    pub timestamp: Instant,
    /// The response payload (requests only).
    pub data: Option<Bytes>,
    /// How it ended.
    pub status: TransportStatus,
}

impl TransportResult {
    pub(crate) fn sent(peer: SessionId, message_id: u32) -> Self {
        Self {
            peer: Some(peer),
            message_id,
            timestamp: Instant::now(),
            data: None,
            status: TransportStatus::Sent,
        }
    }
    pub(crate) fn completed(peer: SessionId, response: Packet) -> Self {
        Self {
            peer: Some(peer),
            message_id: response.header.message_id,
            timestamp: Instant::now(),
            data: Some(response.payload),
            status: TransportStatus::Completed,
        }
    }
    /// Whether the message went out (sent or answered).
    pub fn is_sent(&self) -> bool {
        matches!(self.status, TransportStatus::Sent | TransportStatus::Completed)
    }
    /// Whether a response payload is present.
    pub fn has_response(&self) -> bool {
        self.data.is_some()
    }
}

/// Receiver side shared by the server and client event streams.
pub(crate) struct RawEvents {
    pub rx: flume::Receiver<EngineEvent>,
}

impl RawEvents {
    pub fn is_empty(&self) -> bool {
        self.rx.is_empty()
    }
    pub fn try_recv(&self) -> Option<EngineEvent> {
        self.rx.try_recv().ok()
    }
}

/// Error from an event stream whose transport has stopped and drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("event stream closed")]
pub struct EventStreamClosed;
