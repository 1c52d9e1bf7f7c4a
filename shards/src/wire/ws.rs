//! WebSocket frames (RFC 6455), as sessions read them: one MsgTrans packet
//! per binary message, on the same batched session driver as TCP. The
//! upgrade is the WebSocket driver's (`proto::ws::handshake`).
//!
//! Frame headers are parsed by `tungstenite` (`FrameHeader::parse`); the
//! payloads are unmasked and decoded in place in the session's read buffer,
//! so a small message costs no allocation. Only fragmented messages are
//! copied, to be reassembled. A text message is delivered as a one-way
//! packet whose payload is the text, as MsgTrans 1.0 does.

use std::io::Cursor;

use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

use crate::codec::{self, FrameLimits, FrameRef};
use crate::config::EngineConfig;
use crate::error::{CloseReason, CodecError, Violation};
use crate::packet::{FixedHeader, PacketType};
use crate::wire::{Wire, OP_CLOSE};

/// The longest WebSocket frame header.
pub(crate) const MAX_HEADER: usize = 14;

/// Close codes this crate sends (RFC 6455 §7.4.1).
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// The peer broke the protocol (unmasked client frame, bad opcode...).
    pub const PROTOCOL: u16 = 1002;
    /// A text message that is not UTF-8.
    pub const INVALID_DATA: u16 = 1007;
    /// The peer abused the session (floods, unanswered requests).
    pub const POLICY: u16 = 1008;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// The largest message a session accepts: the largest packet the frame
/// limits allow.
pub(crate) fn max_message(cfg: &EngineConfig) -> usize {
    codec::HEADER_LEN + cfg.frame.max_ext_header as usize + cfg.frame.max_payload as usize
}

/// Parses the frame header at the start of `buf` and checks it against the
/// protocol and the limits. `Ok(None)`: more bytes needed. `Err(code)`: the
/// session must close with that code.
pub(crate) fn frame_header(
    buf: &[u8],
    wire: Wire,
    cfg: &EngineConfig,
    reassembled: usize,
) -> Result<Option<(usize, usize, FrameHeader)>, u16> {
    let mut cur = Cursor::new(buf);
    let (h, len) = match FrameHeader::parse(&mut cur) {
        Ok(Some(x)) => x,
        Ok(None) => return Ok(None),
        Err(_) => return Err(close_code::PROTOCOL),
    };
    if h.rsv1 || h.rsv2 || h.rsv3 {
        // No extension was negotiated.
        return Err(close_code::PROTOCOL);
    }
    // Clients must mask every frame; servers must mask none (§5.1).
    if (wire == Wire::WsServer) != h.mask.is_some() {
        return Err(close_code::PROTOCOL);
    }
    if let OpCode::Control(_) = h.opcode {
        if len > 125 || !h.is_final {
            return Err(close_code::PROTOCOL);
        }
    } else if (reassembled as u64).saturating_add(len) > max_message(cfg) as u64
        || cfg.ws_max_frame.is_some_and(|max| len > max as u64)
    {
        return Err(close_code::TOO_BIG);
    }
    Ok(Some((cur.position() as usize, len as usize, h)))
}

/// Writes a close frame with `code` and names the reason the session ends.
pub(crate) fn fail(out: &mut Vec<u8>, wire: Wire, code: u16) -> CloseReason {
    wire.control(out, OP_CLOSE, &code.to_be_bytes());
    CloseReason::WebSocket(code)
}

/// Closes with 1008 for an abuse of the session.
pub(crate) fn violated(out: &mut Vec<u8>, wire: Wire, v: Violation) -> CloseReason {
    fail(out, wire, close_code::POLICY);
    CloseReason::PolicyViolation(v)
}

/// Writes the close frame that fits `reason` (1008 for a policy violation,
/// 1002 for a bad packet) and passes the reason on.
pub(crate) fn closing(out: &mut Vec<u8>, wire: Wire, reason: CloseReason) -> CloseReason {
    match reason {
        CloseReason::PolicyViolation(v) => violated(out, wire, v),
        CloseReason::ProtocolError(e) => fail_with(out, wire, MessageError::Packet(e)),
        other => other,
    }
}

/// What a message's content was wrong with.
pub(crate) enum MessageError {
    /// A binary message that is not exactly one valid packet.
    Packet(CodecError),
    /// A text message that is not UTF-8.
    Utf8,
}

/// Closes for a bad message: 1007 for bad text, 1002 and the codec error
/// for a bad packet.
pub(crate) fn fail_with(out: &mut Vec<u8>, wire: Wire, e: MessageError) -> CloseReason {
    match e {
        MessageError::Utf8 => fail(out, wire, close_code::INVALID_DATA),
        MessageError::Packet(c) => {
            fail(out, wire, close_code::PROTOCOL);
            CloseReason::ProtocolError(c)
        }
    }
}

/// Continuation frames shorter than this, other than the last of their
/// message, count against the session's budget of chatter.
const TINY_FRAGMENT: usize = 64;

/// Whether a frame carries no message worth its cost: a ping, a pong, or a
/// tiny fragment in the middle of a message. A peer may send only so many
/// a second (`note_empty`'s budget), or it could keep the session busy for
/// ever without a message.
pub(crate) fn is_chatter(h: &FrameHeader, len: usize) -> bool {
    match h.opcode {
        OpCode::Control(Control::Ping | Control::Pong) => true,
        OpCode::Data(Data::Continue) => !h.is_final && len < TINY_FRAGMENT,
        _ => false,
    }
}

/// What a frame amounts to.
pub(crate) enum Step {
    /// Nothing to deliver yet (control frame, or part of a message).
    Continue,
    /// A ping: its payload is owed back in a pong.
    Ping,
    /// The frame is a whole message; `true` if text.
    Message(bool),
    /// The frame completed a fragmented message, now in `frag`.
    Reassembled,
}

/// Handles control frames and fragmentation for one frame whose payload
/// (already unmasked) is `payload`.
pub(crate) fn classify(
    h: &FrameHeader,
    frag: &mut Option<(Vec<u8>, bool)>,
    payload: &[u8],
    out: &mut Vec<u8>,
    wire: Wire,
) -> Result<Step, CloseReason> {
    match h.opcode {
        OpCode::Control(Control::Ping) => Ok(Step::Ping),
        OpCode::Control(Control::Pong) => Ok(Step::Continue),
        OpCode::Control(Control::Close) => {
            // Echo the peer's code (§5.5.1), then end the session.
            let code = payload
                .get(..2)
                .unwrap_or(&close_code::NORMAL.to_be_bytes()[..])
                .to_vec();
            wire.control(out, OP_CLOSE, &code);
            Err(CloseReason::PeerClosed)
        }
        OpCode::Data(Data::Continue) => match frag {
            None => Err(fail(out, wire, close_code::PROTOCOL)),
            Some((buf, _)) => {
                buf.extend_from_slice(payload);
                Ok(if h.is_final { Step::Reassembled } else { Step::Continue })
            }
        },
        OpCode::Data(d @ (Data::Binary | Data::Text)) => {
            if frag.is_some() {
                return Err(fail(out, wire, close_code::PROTOCOL));
            }
            let text = d == Data::Text;
            if h.is_final {
                Ok(Step::Message(text))
            } else {
                *frag = Some((payload.to_vec(), text));
                Ok(Step::Continue)
            }
        }
        _ => Err(fail(out, wire, close_code::PROTOCOL)),
    }
}

/// The packet a whole message carries.
pub(crate) fn message_frame<'a>(msg: &'a [u8], text: bool, limits: &FrameLimits) -> Result<FrameRef<'a>, MessageError> {
    if text {
        std::str::from_utf8(msg).map_err(|_| MessageError::Utf8)?;
        let mut header = FixedHeader::new(PacketType::OneWay, 0);
        header.payload_len = msg.len() as u32;
        if msg.len() > limits.max_payload as usize {
            return Err(MessageError::Packet(CodecError::PayloadTooLarge {
                len: header.payload_len,
                max: limits.max_payload,
            }));
        }
        return Ok(FrameRef {
            header,
            ext_header: &[],
            payload: msg,
        });
    }
    match codec::decode_ref(msg, limits).map_err(MessageError::Packet)? {
        Some((frame, n)) if n == msg.len() => Ok(frame),
        _ => Err(MessageError::Packet(CodecError::NotOnePacket {
            message: u32::try_from(msg.len()).unwrap_or(u32::MAX),
        })),
    }
}
