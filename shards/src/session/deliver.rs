//! Delivery of one decoded frame: a response to the request waiting for
//! it, anything else to the inline handler or, without one, to the
//! application's event queue (the session stops reading while that is
//! full: backpressure, never loss). Compressed payloads are inflated
//! first, bounded by the payload limit.

use super::ctx::SessionCtx;
use super::state::SessionState;
use crate::codec::FrameRef;
use crate::error::{CloseReason, CodecError};
use crate::event::EngineEvent;
use crate::packet::{CompressionType, PacketType};
use crate::session::handler::{Inline, InlineHandler};

pub(crate) type Stalled = Option<flume::r#async::SendFut<'static, EngineEvent>>;

/// Hands one packet to the handler or the application, its payload
/// decompressed first if its header says so; if the event queue is full
/// the event waits in `stalled` and the session reads no further.
///
/// # Errors
/// A packet that breaks the abuse policy (`PolicyViolation`), or a
/// compressed payload that is corrupt or inflates past the payload limit
/// (`ProtocolError`): the packet is not delivered and the session ends.
#[inline(always)]
pub(crate) fn deliver(
    ctx: &SessionCtx,
    handler: Option<&dyn InlineHandler>,
    st: &SessionState,
    stalled: &mut Stalled,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CloseReason> {
    st.note_received(frame, &ctx.cfg)
        .map_err(CloseReason::PolicyViolation)?;
    // The uncompressed fast path pays this one compare.
    if frame.header.compression != CompressionType::None {
        return deliver_compressed(ctx, handler, st, stalled, frame, out).map_err(CloseReason::ProtocolError);
    }
    deliver_plain(ctx, handler, st, stalled, frame, out);
    Ok(())
}

/// Decompresses into the ctx's buffer (bounded by the payload limit)
/// and delivers the plain payload. The header keeps its compression byte,
/// so the application can see how the packet travelled; its payload length
/// becomes the plain one.
#[cold]
fn deliver_compressed(
    ctx: &SessionCtx,
    handler: Option<&dyn InlineHandler>,
    st: &SessionState,
    stalled: &mut Stalled,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let FrameRef {
        mut header,
        ext_header,
        payload,
    } = frame.clone();
    let max = ctx.cfg.frame.max_payload;
    crate::compress::with_decompressed(header.compression, payload, max, |plain| {
        header.payload_len = plain.len() as u32;
        let frame = FrameRef {
            header,
            ext_header,
            payload: plain,
        };
        deliver_plain(ctx, handler, st, stalled, &frame, out)
    })
}

#[inline(always)]
fn deliver_plain(
    ctx: &SessionCtx,
    handler: Option<&dyn InlineHandler>,
    st: &SessionState,
    stalled: &mut Stalled,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) {
    if let Some(ev) = dispatch(ctx, handler, st, frame, out) {
        match ctx.sink.tx.try_send(ev) {
            Ok(()) => ctx.turn_bell.later(),
            Err(flume::TrySendError::Full(ev)) => *stalled = Some(ctx.sink.tx.clone().into_send_async(ev)),
            Err(flume::TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Routes one decoded frame. Returns the event to deliver, if any.
#[inline(always)]
fn dispatch(
    ctx: &SessionCtx,
    handler: Option<&dyn InlineHandler>,
    st: &SessionState,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) -> Option<EngineEvent> {
    if frame.header.packet_type == PacketType::Response {
        let waiting = st.pending.borrow_mut().remove(&frame.header.message_id);
        if let Some(p) = waiting {
            let _ = p.reply.send(Ok(ctx.to_packet(frame)));
            ctx.stats.requests_in_flight.add(-1);
            return None;
        }
        // An unmatched response (late, or unsolicited) is still delivered.
    }
    if let Some(h) = handler {
        h.on_message(&mut Inline {
            id: st.id,
            frame,
            out,
            ctx,
            st,
        });
        return None;
    }
    Some(EngineEvent::Message {
        id: st.id,
        packet: ctx.to_packet(frame),
        received: ctx.received_at(),
    })
}
