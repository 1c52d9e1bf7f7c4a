//! The inline handler: application code that runs on the shard for every
//! message, so the fast path (echo, request → response, routing) never
//! leaves the core.

use std::net::SocketAddr;

use crate::codec::{self, FrameRef};
use crate::error::SendError;
use crate::id::SessionId;
use crate::packet::{FixedHeader, Packet, PacketType};
use crate::session::{SessionCtx, SessionState};

/// Runs on a shard for every one-way packet and request a session receives.
///
/// It must not block: it is called between socket reads. Sending from it
/// never blocks or deadlocks, whether to the session it serves, another
/// session on this shard, or a session on another shard.
pub trait InlineHandler: Send + Sync + 'static {
    /// Handles one packet.
    fn on_message(&self, ctx: &mut Inline<'_>);
    /// A session opened; runs before any of its packets is handled.
    fn on_open(&self, session: &mut Connected<'_>) {
        let _ = session;
    }
    /// A session whose `on_open` ran has ended.
    fn on_close(&self, session_id: SessionId, reason: &crate::error::CloseReason) {
        let _ = (session_id, reason);
    }
    /// A packet sent from this process (by a handler or through the API)
    /// was accepted, then could not be delivered: its target closed first,
    /// its queue was full, or the target's cluster node is down or reported
    /// it. Runs on a shard of this process; it may answer whoever sent the
    /// packet. The default reports it as a `SendFailed` event.
    fn on_undelivered(&self, ctx: &mut Undelivered<'_>) {
        ctx.report();
    }
}

impl<F> InlineHandler for F
where
    F: Fn(&mut Inline<'_>) + Send + Sync + 'static,
{
    fn on_message(&self, ctx: &mut Inline<'_>) {
        self(ctx)
    }
}

/// What an inline handler sees: the packet, borrowed from the read buffer,
/// and ways to answer.
pub struct Inline<'a> {
    pub(crate) id: SessionId,
    pub(crate) frame: &'a FrameRef<'a>,
    pub(crate) out: &'a mut Vec<u8>,
    pub(crate) ctx: &'a SessionCtx,
    pub(crate) st: &'a SessionState,
}

impl<'a> Inline<'a> {
    /// The session the packet came from.
    #[inline]
    pub fn session_id(&self) -> SessionId {
        self.id
    }
    /// The packet, borrowed.
    #[inline]
    pub fn frame(&self) -> &'a FrameRef<'a> {
        self.frame
    }
    /// The header. It borrows the read buffer, not the context, so it
    /// can be passed straight back to [`Inline::write`].
    #[inline]
    pub fn header(&self) -> &'a FixedHeader {
        &self.frame.header
    }
    /// The payload, borrowed; already decompressed if it arrived
    /// compressed (the header's compression byte says how it travelled).
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        self.frame.payload
    }
    /// The extension header, borrowed.
    #[inline]
    pub fn ext_header(&self) -> &'a [u8] {
        self.frame.ext_header
    }
    /// Whether the packet is a request (expects [`Inline::respond`]).
    #[inline]
    pub fn is_request(&self) -> bool {
        self.frame.header.packet_type == PacketType::Request
    }
    /// An owned copy of the packet.
    pub fn to_packet(&self) -> Packet {
        self.frame.to_packet()
    }
    /// Answers the request with `payload`, keeping its id, biz type and
    /// extension header.
    #[inline]
    pub fn respond(&mut self, payload: &[u8]) {
        let mut h = self.frame.header.clone();
        h.packet_type = PacketType::Response;
        let ext = self.frame.ext_header;
        self.write(&h, ext, payload);
    }
    /// Writes one frame to this session. Never blocks: the bytes join the
    /// session's outbound queue, and the session stops reading from its peer
    /// while that queue is over its limit. `payload` is the plain payload: a
    /// header whose compression byte is set has it compressed (above the
    /// compression threshold).
    #[inline(always)]
    pub fn write(&mut self, header: &FixedHeader, ext_header: &[u8], payload: &[u8]) {
        self.ctx
            .prepare_out(self.out, codec::encoded_len(ext_header.len(), payload.len()));
        self.st.note_sent(self.ctx, header);
        // Lengths come from a decoded frame or from slices the caller owns;
        // the only failure is a slice over 4 GiB, which no frame can be.
        let _ = self
            .st
            .wire
            .write_packet(&self.ctx.cfg, self.out, header, ext_header, payload);
    }
    /// Sends `packet` to any session, on this shard or another. Sending to
    /// the session being served is the same as [`Inline::write`].
    ///
    /// # Errors
    /// [`SendError::SessionNotFound`] if the target is not open (checked at
    /// once for every shard); a full target queue is reported as a
    /// `SendFailed` event, since the target may live on another core.
    pub fn send_to(&mut self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        if target == self.id {
            self.write(&packet.header, &packet.ext_header, &packet.payload);
            return Ok(());
        }
        self.ctx.route_send(target, packet)
    }
    /// Queues `packet` for every other open session: on every shard and,
    /// in a cluster, on every node. Never blocks; a session whose queue is
    /// full, or a node that does not confirm, is reported like a failed
    /// send ([`InlineHandler::on_undelivered`], or an event for a node).
    pub fn broadcast_others(&mut self, packet: Packet) {
        self.ctx.route_broadcast(packet, Some(self.id));
    }
}

/// What [`InlineHandler::on_undelivered`] sees: the packet that was not
/// delivered, where it was going and why, and a way to send.
pub struct Undelivered<'a> {
    pub(crate) target: SessionId,
    pub(crate) packet: &'a Packet,
    pub(crate) error: &'a SendError,
    pub(crate) ctx: &'a SessionCtx,
}

impl Undelivered<'_> {
    /// The session the packet was for.
    pub fn target(&self) -> SessionId {
        self.target
    }
    /// The packet.
    pub fn packet(&self) -> &Packet {
        self.packet
    }
    /// Why it was not delivered.
    pub fn error(&self) -> &SendError {
        self.error
    }
    /// Sends `packet` to any session (the packet's sender, say).
    ///
    /// # Errors
    /// As [`Inline::send_to`].
    pub fn send_to(&mut self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        self.ctx.route_send(target, packet)
    }
    /// Reports the failure as a `SendFailed` event, as the default does.
    pub fn report(&mut self) {
        self.ctx.send_failed(self.target, self.packet, self.error.clone());
    }
}

/// What [`InlineHandler::on_open`] (and `SessionHandler::on_connected`) sees: the new session, and a way
/// to send to it (a greeting) or to any other.
pub struct Connected<'a> {
    pub(crate) id: SessionId,
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
    pub(crate) protocol: &'static str,
    pub(crate) peer_certificates: &'a [Vec<u8>],
    pub(crate) ctx: &'a SessionCtx,
}

impl Connected<'_> {
    /// The new session.
    pub fn session_id(&self) -> SessionId {
        self.id
    }
    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
    /// Our address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
    /// `"tcp"` or `"websocket"`.
    pub fn protocol(&self) -> &'static str {
        self.protocol
    }
    /// The peer's certificate chain, leaf first, in DER, as verified
    /// against the listener's client CA (empty without one).
    pub fn peer_certificates(&self) -> &[Vec<u8>] {
        self.peer_certificates
    }
    /// Queues `packet` for the new session. It cannot be refused for room:
    /// the queue is empty, and one packet always fits an empty queue.
    ///
    /// # Errors
    /// [`SendError::Backpressure`] once earlier greetings have filled the
    /// outbound queue.
    pub fn send(&mut self, packet: Packet) -> Result<(), SendError> {
        self.ctx.route_send(self.id, packet)
    }
    /// Sends `packet` to any open session, on this shard or another.
    ///
    /// # Errors
    /// [`SendError::SessionNotFound`] if the target is not open.
    pub fn send_to(&mut self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        self.ctx.route_send(target, packet)
    }
}
