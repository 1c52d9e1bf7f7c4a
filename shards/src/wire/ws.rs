//! WebSocket frames (RFC 6455), as sessions read them: one MsgTrans packet
//! per binary message, on the same batched session driver as TCP. The
//! upgrade is the WebSocket driver's (`proto::ws::handshake`).
//!
//! Frame headers are parsed here ([`parse_header`]), not by `tungstenite`:
//! its `FrameHeader::parse` reads through an `io::Cursor` and returns its
//! whole error type, 22 ns a message of a 64 B echo's 150 ns of user time;
//! this one is a few compares on the bytes, and a test holds it to
//! tungstenite's answers. The payloads are unmasked and decoded in place
//! in the session's read buffer, so a small message costs no allocation.
//! Only fragmented messages are copied, to be reassembled. A text message
//! is delivered as a one-way packet whose payload is the text, as MsgTrans
//! 1.0 does.

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

/// Opcodes as a frame header carries them (RFC 6455 §5.2); `wire`'s
/// `OP_*` bytes add the FIN bit to them.
pub(crate) mod opcode {
    pub const CONTINUE: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// The fields of a frame header a session acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    /// The last frame of its message.
    pub is_final: bool,
    /// A defined opcode (data 0–2, control 8–10).
    pub opcode: u8,
    /// The masking key, on frames from a client.
    pub mask: Option<[u8; 4]>,
}

impl FrameHeader {
    fn is_control(&self) -> bool {
        self.opcode & 0x8 != 0
    }
}

/// Parses the frame header at the start of `buf`: the header, its length
/// and the payload's. `Ok(None)`: more bytes needed. Reserved bits (no
/// extension is negotiated) and undefined opcodes are protocol errors as
/// soon as the first two bytes are in, and so is a 64-bit length with its
/// top bit set (§5.2; tungstenite let it through to the size limit, which
/// closed with 1009 instead).
pub(crate) fn parse_header(buf: &[u8]) -> Result<Option<(FrameHeader, usize, u64)>, u16> {
    let Some(&[b0, b1]) = buf.first_chunk::<2>() else {
        return Ok(None);
    };
    let opcode = b0 & 0x0F;
    if b0 & 0x70 != 0 || !matches!(opcode, 0..=2 | 8..=10) {
        return Err(close_code::PROTOCOL);
    }
    let (len, at) = match b1 & 0x7F {
        126 => match buf.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return Ok(None),
        },
        127 => match buf.get(2..10).and_then(|b| b.first_chunk::<8>()) {
            Some(b) if b[0] & 0x80 != 0 => return Err(close_code::PROTOCOL),
            Some(b) => (u64::from_be_bytes(*b), 10),
            None => return Ok(None),
        },
        n => (u64::from(n), 2),
    };
    let (mask, at) = if b1 & 0x80 == 0 {
        (None, at)
    } else {
        match buf.get(at..at + 4).and_then(|b| b.first_chunk::<4>()) {
            Some(m) => (Some(*m), at + 4),
            None => return Ok(None),
        }
    };
    let h = FrameHeader {
        is_final: b0 & 0x80 != 0,
        opcode,
        mask,
    };
    Ok(Some((h, at, len)))
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
    let Some((h, hlen, len)) = parse_header(buf)? else {
        return Ok(None);
    };
    // Clients must mask every frame; servers must mask none (§5.1).
    if (wire == Wire::WsServer) != h.mask.is_some() {
        return Err(close_code::PROTOCOL);
    }
    if h.is_control() {
        if len > 125 || !h.is_final {
            return Err(close_code::PROTOCOL);
        }
    } else if (reassembled as u64).saturating_add(len) > max_message(cfg) as u64
        || cfg.ws_max_frame.is_some_and(|max| len > max as u64)
    {
        return Err(close_code::TOO_BIG);
    }
    Ok(Some((hlen, len as usize, h)))
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
        opcode::PING | opcode::PONG => true,
        opcode::CONTINUE => !h.is_final && len < TINY_FRAGMENT,
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
        opcode::PING => Ok(Step::Ping),
        opcode::PONG => Ok(Step::Continue),
        opcode::CLOSE => {
            // Echo the peer's code (§5.5.1), then end the session.
            let code = payload
                .get(..2)
                .unwrap_or(&close_code::NORMAL.to_be_bytes()[..])
                .to_vec();
            wire.control(out, OP_CLOSE, &code);
            Err(CloseReason::PeerClosed)
        }
        opcode::CONTINUE => match frag {
            None => Err(fail(out, wire, close_code::PROTOCOL)),
            Some((buf, _)) => {
                buf.extend_from_slice(payload);
                Ok(if h.is_final { Step::Reassembled } else { Step::Continue })
            }
        },
        opcode::BINARY | opcode::TEXT => {
            if frag.is_some() {
                return Err(fail(out, wire, close_code::PROTOCOL));
            }
            let text = h.opcode == opcode::TEXT;
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
///
/// Inlined: returned through memory, the header the codec had just built
/// byte by byte was read back in words, a stalled store forward that cost
/// 15% of the session driver's time at 64 B.
#[inline(always)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use tungstenite::protocol::frame::coding::OpCode;

    /// tungstenite's reading of `buf`, in `parse_header`'s terms.
    fn reference(buf: &[u8]) -> Result<Option<(FrameHeader, usize, u64)>, u16> {
        let mut cur = std::io::Cursor::new(buf);
        match tungstenite::protocol::frame::FrameHeader::parse(&mut cur) {
            Ok(None) => Ok(None),
            Err(_) => Err(close_code::PROTOCOL),
            Ok(Some((_, _))) if buf[0] & 0x70 != 0 => Err(close_code::PROTOCOL),
            Ok(Some((h, len))) => Ok(Some((
                FrameHeader {
                    is_final: h.is_final,
                    opcode: u8::from(h.opcode),
                    mask: h.mask,
                },
                cur.position() as usize,
                len,
            ))),
        }
    }

    #[test]
    fn headers_parse_as_tungstenite_parses_them_and_wait_for_their_last_byte() {
        let mut seen = 0;
        for b0 in 0..=255u8 {
            for (len_byte, ext) in [
                (0u8, &[][..]),
                (125, &[]),
                (126, &[0x01, 0x00]),
                (127, &[0, 0, 0, 1, 0, 0, 0, 0]),
            ] {
                for masked in [false, true] {
                    let mut buf = vec![b0, len_byte | if masked { 0x80 } else { 0 }];
                    buf.extend_from_slice(ext);
                    if masked {
                        buf.extend_from_slice(&[1, 2, 3, 4]);
                    }
                    buf.push(0xEE); // a payload byte: not part of the header
                    let whole = parse_header(&buf);
                    assert_eq!(whole, reference(&buf), "{buf:02x?}");
                    if let Ok(Some((h, hlen, _))) = whole {
                        seen += 1;
                        assert_eq!(h.opcode, u8::from(OpCode::from(b0 & 0x0F)));
                        // Every proper prefix of the header needs more bytes.
                        for cut in 0..hlen {
                            assert_eq!(parse_header(&buf[..cut]), Ok(None), "{:02x?}", &buf[..cut]);
                        }
                    }
                }
            }
        }
        // 2 × 6 defined opcodes (FIN or not) × 4 lengths × masked or not.
        assert_eq!(seen, 2 * 6 * 4 * 2);
    }

    #[test]
    fn a_64_bit_length_with_its_top_bit_set_is_a_protocol_error() {
        let mut buf = vec![0x82, 0x80 | 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
        buf.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(parse_header(&buf), Err(close_code::PROTOCOL));
        buf[2] = 0x7F;
        assert!(matches!(parse_header(&buf), Ok(Some((_, 14, len))) if len == 0x7F00_0000_0000_0000));
    }
}
