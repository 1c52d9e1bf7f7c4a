//! The session handler: MsgTrans 2.0's `SessionHandler` shape (connected,
//! message, request with a [`Responder`], disconnected), run inline on the
//! shard that owns the session, like the closure handler.
//!
//! It is carried by the same hook as the closure handler ([`InlineHandler`]
//! with its open and close callbacks), so the per-message path is the same:
//! no task, no channel, no lock. Only a [`Responder`] answered from another
//! thread crosses the mesh, once, to the owning shard.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;

use crate::error::{CloseReason, CodecError, SendError};
use crate::event::Command;
use crate::id::SessionId;
use crate::mesh::Mesh;
use crate::packet::{FixedHeader, IntoPayload, Packet, PacketType};
pub use crate::session::handler::Connected;
use crate::session::handler::{Inline, InlineHandler, Undelivered};

/// Application code that serves sessions on their shard.
///
/// Every method runs on the shard that owns the session, between socket
/// reads, so none may block. For one session, `on_connected` runs first and
/// once, then its messages and requests in the order they arrived, then
/// `on_disconnected` once. Sending from any of them never blocks or
/// deadlocks, to the session being served or any other.
pub trait SessionHandler: Send + Sync + 'static {
    /// A session opened. Runs before any of its packets is handled.
    fn on_connected(&self, session: &mut Connected<'_>) {
        let _ = session;
    }
    /// A one-way packet (or a response nobody waits for) arrived; its
    /// payload is already decompressed.
    fn on_message(&self, ctx: &mut Inline<'_>);
    /// A request arrived. Answer it through `responder`, at once
    /// ([`Responder::respond_inline`]) or later from any thread
    /// ([`Responder::respond`]). Dropping the responder leaves the request
    /// unanswered (the peer's own timeout ends it); a graceful shutdown
    /// then no longer waits for it.
    fn on_request(&self, ctx: &mut Inline<'_>, responder: Responder);
    /// A session ended. Runs once, after its last packet was handled.
    fn on_disconnected(&self, session_id: SessionId, reason: &CloseReason) {
        let _ = (session_id, reason);
    }
    /// A packet sent from this process could not be delivered (see
    /// [`InlineHandler::on_undelivered`]). The default reports it as an
    /// event.
    fn on_undelivered(&self, ctx: &mut Undelivered<'_>) {
        ctx.report();
    }
}

/// The way to answer one request. Not `Clone`: answering consumes it, so a
/// request cannot be answered twice. `Send`, so it can be answered from any
/// thread. The response keeps the request's id, biz type, extension header
/// and compression.
pub struct Responder {
    session: SessionId,
    header: FixedHeader,
    ext_header: Bytes,
    home: Arc<Home>,
    answered: bool,
}

/// What a responder needs to reach its session's shard from anywhere.
/// One per shard thread, so the requests of a busy shard do not contend on
/// one reference count shared with the others.
struct Home {
    mesh: Arc<Mesh>,
    max_payload: u32,
}

impl std::fmt::Debug for Responder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Responder")
            .field("session", &self.session)
            .field("message_id", &self.header.message_id)
            .finish()
    }
}

thread_local! {
    static HOME: RefCell<Option<Arc<Home>>> = const { RefCell::new(None) };
}

impl Responder {
    fn new(ctx: &Inline<'_>) -> Self {
        let home = HOME.with(|h| {
            let mut h = h.borrow_mut();
            match h.as_ref() {
                Some(home) if Arc::ptr_eq(&home.mesh, &ctx.ctx.mesh) => Arc::clone(home),
                _ => {
                    let home = Arc::new(Home {
                        mesh: Arc::clone(&ctx.ctx.mesh),
                        max_payload: ctx.ctx.cfg.frame.max_payload,
                    });
                    *h = Some(Arc::clone(&home));
                    home
                }
            }
        });
        let mut header = ctx.header().clone();
        header.packet_type = PacketType::Response;
        let ext = ctx.ext_header();
        Self {
            session: ctx.session_id(),
            header,
            ext_header: if ext.is_empty() {
                Bytes::new()
            } else {
                Bytes::copy_from_slice(ext)
            },
            home,
            answered: false,
        }
    }

    /// The session that sent the request.
    pub fn session_id(&self) -> SessionId {
        self.session
    }

    /// The request's message id (the response's too).
    pub fn message_id(&self) -> u32 {
        self.header.message_id
    }

    /// Answers with biz type `biz_type` instead of the request's (a relay
    /// answers 255 when it could not reach the request's target).
    pub fn with_biz_type(mut self, biz_type: u8) -> Self {
        self.header.biz_type = biz_type;
        self
    }

    /// Answers now, on the shard: the response joins the batch being
    /// written, with no hop. `ctx` is the handler's context (any packet of
    /// any session on this shard will do; the response goes to the
    /// requester).
    pub fn respond_inline(mut self, ctx: &mut Inline<'_>, payload: &[u8]) {
        self.answered = true;
        if ctx.session_id() == self.session {
            ctx.write(&self.header, &self.ext_header, payload);
        } else {
            // Only fails if the requester is gone, which it then learns.
            let _ = ctx.send_to(self.session, self.packet(Bytes::copy_from_slice(payload)));
        }
    }

    /// Answers from any thread (a Tokio task, a worker pool): the response
    /// crosses the mesh to the session's shard. Also fine on the shard
    /// itself, e.g. from a task it spawned: it never waits.
    ///
    /// # Errors
    /// [`SendError::SessionNotFound`] if the requester has gone,
    /// [`SendError::Encode`] if the payload is over the payload limit,
    /// [`SendError::Stopped`] if the server has stopped.
    pub fn respond(mut self, payload: impl IntoPayload) -> Result<(), SendError> {
        let payload = payload.into_payload();
        let max = self.home.max_payload;
        if payload.len() > max as usize {
            return Err(SendError::Encode(CodecError::PayloadTooLarge {
                len: u32::try_from(payload.len()).unwrap_or(u32::MAX),
                max,
            }));
        }
        let shard = self.session.shard();
        let mesh = &self.home.mesh;
        if !mesh.is_live(self.session) {
            return Err(SendError::SessionNotFound(self.session));
        }
        let cmd = Command::Send {
            id: self.session,
            packet: self.packet(payload),
            wait: None,
            // One answer per request the session already counts: bounded
            // by `max_unanswered_requests`, so nothing to reserve.
            reserved: 0,
            report: None,
        };
        mesh.outboxes[shard].send(cmd).map_err(|_| SendError::Stopped)?;
        self.answered = true;
        Ok(())
    }

    fn packet(&self, payload: Bytes) -> Packet {
        let mut header = self.header.clone();
        header.payload_len = payload.len() as u32;
        Packet {
            header,
            ext_header: self.ext_header.clone(),
            payload,
        }
    }
}

impl Drop for Responder {
    /// An unanswered request is written off with its shard, so a graceful
    /// shutdown does not wait for an answer that will never come. The peer
    /// still learns nothing: its own timeout ends the request.
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let shard = self.session.shard();
        let mesh = &self.home.mesh;
        if mesh.is_live(self.session) {
            let _ = mesh.outboxes[shard].send(Command::Abandon { id: self.session });
        }
    }
}

/// Runs a [`SessionHandler`] through the inline hook.
pub struct SessionHandlerAdapter<H>(pub H);

impl<H: SessionHandler> InlineHandler for SessionHandlerAdapter<H> {
    fn on_message(&self, ctx: &mut Inline<'_>) {
        if ctx.is_request() {
            let responder = Responder::new(ctx);
            self.0.on_request(ctx, responder);
        } else {
            self.0.on_message(ctx);
        }
    }
    fn on_open(&self, session: &mut Connected<'_>) {
        self.0.on_connected(session);
    }
    fn on_close(&self, session_id: SessionId, reason: &CloseReason) {
        self.0.on_disconnected(session_id, reason);
    }
    fn on_undelivered(&self, ctx: &mut Undelivered<'_>) {
        self.0.on_undelivered(ctx);
    }
}
