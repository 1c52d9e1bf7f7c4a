//! The driver's read half: room in the read buffer, how many bytes the
//! frame at its head needs, and decoding every whole frame in it, per wire
//! (packets back to back, length-prefixed on QUIC streams, one per
//! WebSocket message).

use std::rc::Rc;
#[cfg(feature = "websocket")]
use std::time::Instant;

use super::Driver;
use crate::codec;
use crate::error::CloseReason;
#[cfg(feature = "websocket")]
use crate::error::Violation;
use crate::session::deliver::deliver;
use crate::session::SessionCtx;
use crate::session_io::SessionIo;
use crate::wire::Wire;
#[cfg(feature = "quic")]
use crate::wire::QUIC_PREFIX;
#[cfg(feature = "websocket")]
use crate::wire::{ws, OP_PONG};

/// Free space below which the read buffer is compacted before a read.
const MIN_READ_SPACE: usize = 4096;

impl<S: SessionIo> Driver<S> {
    /// Makes room to read: reuses, compacts or grows the read buffer so the
    /// partial frame at its head fits whole.
    pub(super) fn prepare_read(&mut self) -> Result<(), CloseReason> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        }
        if self.rbuf.is_empty() {
            self.rbuf = self.ctx.buffers.get_read(self.ctx.cfg.read_buffer);
        }
        let need = self.need()?;
        if self.rbuf.len() < need {
            // The frame's length passed its limit check in `need`. It goes
            // into a pooled buffer (the tier's size, kept and reused), not
            // a realloc of this one: a buffer of the frame's odd size was
            // freed after use, as no tier keeps it, and on the shard ring,
            // whose reads land in 16 KiB buffers, every 64 KiB message then
            // took fresh heap pages (1.8 page faults per message). The
            // partial frame is copied once, to the new buffer's head.
            let held = self.rlen - self.rpos;
            let mut bigger = self.ctx.buffers.get_read(need);
            bigger[..held].copy_from_slice(&self.rbuf[self.rpos..self.rlen]);
            let old = std::mem::replace(&mut self.rbuf, bigger);
            self.ctx.buffers.put_read(old);
            self.rpos = 0;
            self.rlen = held;
        } else if self.rbuf.len() - self.rpos < need || self.rbuf.len() - self.rlen < MIN_READ_SPACE {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        Ok(())
    }

    /// Bytes the frame at the head of the read buffer needs in all, once
    /// its header is known and within the limits.
    pub(super) fn need(&mut self) -> Result<usize, CloseReason> {
        let buf = &self.rbuf[self.rpos..self.rlen];
        match self.st.wire {
            Wire::Tcp => match codec::decode_header(buf, &self.ctx.cfg.frame) {
                Ok(Some((_, frame_len))) => Ok(frame_len),
                Ok(None) => Ok(codec::HEADER_LEN),
                Err(e) => Err(CloseReason::ProtocolError(e)),
            },
            #[cfg(feature = "quic")]
            Wire::Quic => match quic_frame(buf, &self.ctx.cfg.frame) {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Ok(QUIC_PREFIX + codec::HEADER_LEN),
                Err(e) => Err(CloseReason::ProtocolError(e)),
            },
            #[cfg(feature = "websocket")]
            Wire::WsServer | Wire::WsClient => self.need_ws(),
        }
    }

    #[cfg(feature = "websocket")]
    fn need_ws(&mut self) -> Result<usize, CloseReason> {
        let buf = &self.rbuf[self.rpos..self.rlen];
        let mut out = self.st.out.borrow_mut();
        match ws::frame_header(
            buf,
            self.st.wire,
            &self.ctx.cfg,
            self.frag.as_ref().map_or(0, |f| f.0.len()),
        ) {
            Ok(Some((hlen, len, _))) => Ok(hlen + len),
            Ok(None) => Ok(ws::MAX_HEADER),
            Err(code) => Err(ws::fail(&mut out, self.st.wire, code)),
        }
    }

    pub(super) fn release_read_buffer(&mut self) {
        if self.rpos == self.rlen && !self.rbuf.is_empty() {
            self.ctx.buffers.put_read(std::mem::take(&mut self.rbuf));
            self.rpos = 0;
            self.rlen = 0;
        }
    }

    /// Decodes and dispatches every complete frame in the read buffer.
    pub(super) fn process(&mut self) -> Result<usize, CloseReason> {
        let ctx = Rc::clone(&self.ctx);
        ctx.new_read_batch();
        let frames = match self.st.wire {
            Wire::Tcp => self.process_tcp(&ctx),
            #[cfg(feature = "quic")]
            Wire::Quic => self.process_quic(&ctx),
            #[cfg(feature = "websocket")]
            Wire::WsServer | Wire::WsClient => self.process_ws(&ctx),
        };
        ctx.flush_outgoing();
        let frames = frames?;
        self.st.counters.received(&ctx.stats, frames as u64);
        Ok(frames)
    }

    /// Packets back to back: decoded where they lie in the read buffer.
    fn process_tcp(&mut self, ctx: &Rc<SessionCtx>) -> Result<usize, CloseReason> {
        let limits = ctx.cfg.frame;
        // Once per batch: the handler behind its `Arc`, found per packet,
        // cost 8 instructions a 64 B message (scripts/instructions.py).
        let handler = self.handler.as_deref();
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let Some((frame, n)) =
                codec::decode_ref(&self.rbuf[self.rpos..self.rlen], &limits).map_err(CloseReason::ProtocolError)?
            else {
                break;
            };
            frames += 1;
            self.rpos += n;
            deliver(ctx, handler, &self.st, &mut self.stalled, &frame, &mut out)?;
            if out.len() + self.st.in_flight.get() >= ctx.cfg.max_outbound_bytes {
                break;
            }
        }
        Ok(frames)
    }

    /// Length-prefixed packets (QUIC streams): decoded where they lie.
    #[cfg(feature = "quic")]
    fn process_quic(&mut self, ctx: &Rc<SessionCtx>) -> Result<usize, CloseReason> {
        let limits = ctx.cfg.frame;
        let handler = self.handler.as_deref();
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let buf = &self.rbuf[self.rpos..self.rlen];
            let Some(n) = quic_frame(buf, &limits).map_err(CloseReason::ProtocolError)? else {
                break;
            };
            if buf.len() < n {
                break;
            }
            let (frame, _) = codec::decode_ref(&buf[QUIC_PREFIX..n], &limits)
                .map_err(CloseReason::ProtocolError)?
                .expect("quic_frame checked the packet is whole");
            frames += 1;
            self.rpos += n;
            deliver(ctx, handler, &self.st, &mut self.stalled, &frame, &mut out)?;
            if out.len() + self.st.in_flight.get() >= ctx.cfg.max_outbound_bytes {
                break;
            }
        }
        Ok(frames)
    }

    /// One packet per WebSocket message: frames are unmasked in place and
    /// a whole message is decoded where it lies; only fragmented messages
    /// are copied, to be reassembled.
    #[cfg(feature = "websocket")]
    fn process_ws(&mut self, ctx: &Rc<SessionCtx>) -> Result<usize, CloseReason> {
        let wire = self.st.wire;
        let limits = ctx.cfg.frame;
        let handler = self.handler.as_deref();
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let buf = &self.rbuf[self.rpos..self.rlen];
            let frag_len = self.frag.as_ref().map_or(0, |f| f.0.len());
            let (hlen, len, h) = match ws::frame_header(buf, wire, &ctx.cfg, frag_len) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(code) => return Err(ws::fail(&mut out, wire, code)),
            };
            if buf.len() < hlen + len {
                break;
            }
            let (start, end) = (self.rpos + hlen, self.rpos + hlen + len);
            if let Some(mask) = h.mask {
                crate::wire::apply_mask(&mut self.rbuf[start..end], mask, 0);
            }
            self.rpos = end;
            if ws::is_chatter(&h, len) {
                let max = ctx.cfg.max_empty_packets_per_sec;
                if self.st.note_empty(max, Instant::now).is_err() {
                    return Err(ws::violated(&mut out, wire, Violation::ControlFrameFlood { max }));
                }
            }
            let payload = &self.rbuf[start..end];
            let message = match ws::classify(&h, &mut self.frag, payload, &mut out, wire)? {
                ws::Step::Continue => continue,
                ws::Step::Ping => {
                    // Of pings with no message between them only the latest
                    // is answered (RFC 6455 §5.5.3 allows it), so a ping
                    // flood cannot pile pongs up in the queue.
                    let pong = self.pong.get_or_insert_with(Vec::new);
                    pong.clear();
                    pong.extend_from_slice(payload);
                    continue;
                }
                ws::Step::Message(text) => (payload, text),
                ws::Step::Reassembled => {
                    flush_pong(&mut self.pong, &mut out, wire);
                    // The whole message is in `frag`; deliver it from there.
                    let (msg, text) = self.frag.take().expect("reassembled message");
                    frames += 1;
                    let frame = ws::message_frame(&msg, text, &limits).map_err(|e| ws::fail_with(&mut out, wire, e))?;
                    deliver(ctx, handler, &self.st, &mut self.stalled, &frame, &mut out)
                        .map_err(|r| ws::closing(&mut out, wire, r))?;
                    continue;
                }
            };
            flush_pong(&mut self.pong, &mut out, wire);
            frames += 1;
            let frame =
                ws::message_frame(message.0, message.1, &limits).map_err(|e| ws::fail_with(&mut out, wire, e))?;
            deliver(ctx, handler, &self.st, &mut self.stalled, &frame, &mut out)
                .map_err(|r| ws::closing(&mut out, wire, r))?;
            if out.len() + self.st.in_flight.get() >= ctx.cfg.max_outbound_bytes {
                break;
            }
        }
        flush_pong(&mut self.pong, &mut out, wire);
        Ok(frames)
    }
}

/// Writes the pong owed for the latest ping, if any: before the next
/// message is answered (so answers keep the order of what they answer) or
/// at the end of the batch.
#[cfg(feature = "websocket")]
fn flush_pong(pong: &mut Option<Vec<u8>>, out: &mut Vec<u8>, wire: Wire) {
    if let Some(p) = pong.take() {
        wire.control(out, OP_PONG, &p);
    }
}

/// The length of the length-prefixed packet at the start of `buf`,
/// prefix included, once its header is known: `Ok(None)` needs more bytes.
/// The prefix must agree with the packet's own header.
#[cfg(feature = "quic")]
fn quic_frame(buf: &[u8], limits: &codec::FrameLimits) -> Result<Option<usize>, crate::error::CodecError> {
    if buf.len() < QUIC_PREFIX + codec::HEADER_LEN {
        return Ok(None);
    }
    let prefix = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Some((_, frame_len)) = codec::decode_header(&buf[QUIC_PREFIX..], limits)? else {
        return Ok(None);
    };
    if prefix as usize != frame_len {
        return Err(crate::error::CodecError::PrefixMismatch {
            prefix,
            packet: frame_len as u32,
        });
    }
    Ok(Some(QUIC_PREFIX + frame_len))
}
