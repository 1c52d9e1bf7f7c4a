//! Records: what one node tells another, one after another on the link's
//! byte stream. Each is `u32` length, a kind byte, then the kind's fields;
//! packets travel in msgtrans's own wire format, so a record costs its
//! packet's wire length plus a few bytes (`uplink::RECORD_OVERHEAD` bounds
//! it). Pure functions over bytes: no link state, no I/O.

use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use msgtrans_shards::codec::{self, FrameLimits};
use msgtrans_shards::{CloseReason, CodecError, Packet, SendError, SessionId};

/// One message of the link protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Queue `packet` for `target`.
    Send { target: SessionId, packet: Packet },
    /// Send a request to `target`; answer with [`Record::Response`] `corr`.
    Request {
        corr: u64,
        target: SessionId,
        timeout_ms: u32,
        packet: Packet,
    },
    /// The outcome of request `corr`.
    Response {
        corr: u64,
        result: Result<Packet, SendError>,
    },
    /// Queue `packet` for every session but `except`; with a `corr`,
    /// answer with [`Record::BroadcastDone`].
    Broadcast {
        corr: Option<u64>,
        except: Option<SessionId>,
        packet: Packet,
    },
    /// How many sessions broadcast `corr` reached.
    BroadcastDone { corr: u64, reached: u64 },
    /// A [`Record::Send`] for `target` could not be queued.
    Undelivered {
        target: SessionId,
        error: SendError,
        packet: Packet,
    },
}

const SEND: u8 = 1;
const REQUEST: u8 = 2;
const RESPONSE: u8 = 3;
const BROADCAST: u8 = 4;
const BROADCAST_DONE: u8 = 5;
const UNDELIVERED: u8 = 6;

/// A record that cannot be read: the peer runs other code, or the stream
/// is corrupt. The link is reset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The kind byte names no record.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The record ends before its fields do.
    #[error("record truncated")]
    Truncated,
    /// The packet inside is not valid.
    #[error("packet in record: {0}")]
    Packet(#[from] CodecError),
}

/// Any packet a peer's engine accepted is read back: the receiving engine
/// applies its own limits when it delivers.
const ANY_SIZE: FrameLimits = FrameLimits {
    max_payload: u32::MAX,
    max_ext_header: u16::MAX,
};

fn put_packet(out: &mut BytesMut, p: &Packet) {
    // Lengths were checked against u32/u16 when the packet was accepted.
    let _ = codec::encode(p, out);
}

impl Record {
    /// Appends the record to `out`; returns its length there.
    pub fn encode(&self, out: &mut BytesMut) -> usize {
        let start = out.len();
        out.put_u32(0);
        match self {
            Record::Send { target, packet } => {
                out.put_u8(SEND);
                out.put_u64(target.as_u64());
                put_packet(out, packet);
            }
            Record::Request {
                corr,
                target,
                timeout_ms,
                packet,
            } => {
                out.put_u8(REQUEST);
                out.put_u64(*corr);
                out.put_u64(target.as_u64());
                out.put_u32(*timeout_ms);
                put_packet(out, packet);
            }
            Record::Response { corr, result } => {
                out.put_u8(RESPONSE);
                out.put_u64(*corr);
                match result {
                    Ok(p) => {
                        out.put_u8(0);
                        put_packet(out, p);
                    }
                    Err(e) => put_error(out, e),
                }
            }
            Record::Broadcast { corr, except, packet } => {
                out.put_u8(BROADCAST);
                out.put_u64(corr.unwrap_or(0));
                out.put_u64(except.map_or(0, |e| e.as_u64()));
                put_packet(out, packet);
            }
            Record::BroadcastDone { corr, reached } => {
                out.put_u8(BROADCAST_DONE);
                out.put_u64(*corr);
                out.put_u64(*reached);
            }
            Record::Undelivered { target, error, packet } => {
                out.put_u8(UNDELIVERED);
                out.put_u64(target.as_u64());
                put_error(out, error);
                put_packet(out, packet);
            }
        }
        let len = out.len() - start;
        out[start..start + 4].copy_from_slice(&((len - 4) as u32).to_be_bytes());
        len
    }

    /// Takes the first whole record off `buf`; `None` until one is whole.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Record>, RecordError> {
        match whole(buf) {
            Some(len) => {
                buf.advance(4);
                Self::parse(&mut buf.split_to(len).freeze()).map(Some)
            }
            None => Ok(None),
        }
    }

    /// [`Record::decode`] from shared bytes: the record's packet shares
    /// `buf`'s memory.
    pub fn decode_shared(buf: &mut Bytes) -> Result<Option<Record>, RecordError> {
        match whole(buf) {
            Some(len) => {
                buf.advance(4);
                Self::parse(&mut buf.split_to(len)).map(Some)
            }
            None => Ok(None),
        }
    }

    fn parse(b: &mut Bytes) -> Result<Record, RecordError> {
        let kind = get_u8(b)?;
        let record = match kind {
            SEND => Record::Send {
                target: SessionId::new(get_u64(b)?),
                packet: get_packet(b)?,
            },
            REQUEST => Record::Request {
                corr: get_u64(b)?,
                target: SessionId::new(get_u64(b)?),
                timeout_ms: get_u32(b)?,
                packet: get_packet(b)?,
            },
            RESPONSE => {
                let corr = get_u64(b)?;
                let result = match b.first() {
                    Some(0) => {
                        b.advance(1);
                        Ok(get_packet(b)?)
                    }
                    _ => Err(get_error(b)?),
                };
                Record::Response { corr, result }
            }
            BROADCAST => {
                let corr = get_u64(b)?;
                let except = get_u64(b)?;
                Record::Broadcast {
                    corr: (corr != 0).then_some(corr),
                    except: (except != 0).then(|| SessionId::new(except)),
                    packet: get_packet(b)?,
                }
            }
            BROADCAST_DONE => Record::BroadcastDone {
                corr: get_u64(b)?,
                reached: get_u64(b)?,
            },
            UNDELIVERED => Record::Undelivered {
                target: SessionId::new(get_u64(b)?),
                error: get_error(b)?,
                packet: get_packet(b)?,
            },
            k => return Err(RecordError::UnknownKind(k)),
        };
        Ok(record)
    }
}

/// The length of the record at the front of `buf`, if it is all there.
fn whole(buf: &[u8]) -> Option<usize> {
    let len = u32::from_be_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    (buf.len() >= 4 + len).then_some(len)
}

fn get_u8(b: &mut Bytes) -> Result<u8, RecordError> {
    (b.remaining() >= 1).then(|| b.get_u8()).ok_or(RecordError::Truncated)
}
fn get_u32(b: &mut Bytes) -> Result<u32, RecordError> {
    (b.remaining() >= 4).then(|| b.get_u32()).ok_or(RecordError::Truncated)
}
fn get_u64(b: &mut Bytes) -> Result<u64, RecordError> {
    (b.remaining() >= 8).then(|| b.get_u64()).ok_or(RecordError::Truncated)
}

/// The packet at the front of `b`, sharing `b`'s memory (no copy).
fn get_packet(b: &mut Bytes) -> Result<Packet, RecordError> {
    let (header, frame_len) = codec::decode_header(b, &ANY_SIZE)?.ok_or(RecordError::Truncated)?;
    if b.len() < frame_len {
        return Err(RecordError::Truncated);
    }
    let mut frame = b.split_to(frame_len);
    frame.advance(codec::HEADER_LEN);
    let ext_header = frame.split_to(header.ext_header_len as usize);
    Ok(Packet {
        header,
        ext_header,
        payload: frame,
    })
}

// Error codes on the wire. 0 is "no error" in a response.
const E_SESSION_NOT_FOUND: u8 = 1;
const E_CONNECTION_CLOSED: u8 = 2;
const E_BACKPRESSURE: u8 = 3;
const E_TIMEOUT: u8 = 4;
const E_TOO_MANY_REQUESTS: u8 = 5;
const E_PAYLOAD_TOO_LARGE: u8 = 6;
const E_EXT_HEADER_TOO_LARGE: u8 = 7;
const E_STOPPED: u8 = 8;
const E_NODE_DOWN: u8 = 9;
const E_UNREACHABLE: u8 = 10;

/// Every error carries one `u64` after its code: a session id, a size, a
/// node, or 0, so that a reader needs no table of field layouts.
fn put_error(out: &mut BytesMut, e: &SendError) {
    let (code, a, b) = match e {
        SendError::SessionNotFound(id) => (E_SESSION_NOT_FOUND, id.as_u64(), 0),
        SendError::ConnectionClosed(r) => (E_CONNECTION_CLOSED, close_code(r), 0),
        SendError::Backpressure(id) => (E_BACKPRESSURE, id.as_u64(), 0),
        SendError::Timeout => (E_TIMEOUT, 0, 0),
        SendError::TooManyRequests(id) => (E_TOO_MANY_REQUESTS, id.as_u64(), 0),
        SendError::Encode(CodecError::PayloadTooLarge { len, max }) => (E_PAYLOAD_TOO_LARGE, *len as u64, *max as u64),
        SendError::Encode(CodecError::ExtHeaderTooLarge { len, max }) => {
            (E_EXT_HEADER_TOO_LARGE, *len as u64, *max as u64)
        }
        // Encoding fails only on sizes; any other codec error is the
        // sender's to have caught.
        SendError::Encode(_) => (E_PAYLOAD_TOO_LARGE, 0, 0),
        SendError::Stopped => (E_STOPPED, 0, 0),
        SendError::NodeDown(n) => (E_NODE_DOWN, *n as u64, 0),
        SendError::ClusterUnreachable => (E_UNREACHABLE, 0, 0),
    };
    out.put_u8(code);
    out.put_u64(a);
    out.put_u64(b);
}

fn get_error(b: &mut Bytes) -> Result<SendError, RecordError> {
    let code = get_u8(b)?;
    let x = get_u64(b)?;
    let y = get_u64(b)?;
    Ok(match code {
        E_SESSION_NOT_FOUND => SendError::SessionNotFound(SessionId::new(x)),
        E_CONNECTION_CLOSED => SendError::ConnectionClosed(close_reason(x)),
        E_BACKPRESSURE => SendError::Backpressure(SessionId::new(x)),
        E_TIMEOUT => SendError::Timeout,
        E_TOO_MANY_REQUESTS => SendError::TooManyRequests(SessionId::new(x)),
        E_PAYLOAD_TOO_LARGE => SendError::Encode(CodecError::PayloadTooLarge {
            len: x as u32,
            max: y as u32,
        }),
        E_EXT_HEADER_TOO_LARGE => SendError::Encode(CodecError::ExtHeaderTooLarge {
            len: x as u16,
            max: y as u16,
        }),
        E_STOPPED => SendError::Stopped,
        E_NODE_DOWN => SendError::NodeDown(x as u8),
        E_UNREACHABLE => SendError::ClusterUnreachable,
        k => return Err(RecordError::UnknownKind(k)),
    })
}

/// A close reason in one number: its kind in the high byte and a WebSocket
/// close code in the low bits. Reasons that carry more (a codec error, a
/// violation, an I/O error kind) keep their kind only.
fn close_code(r: &CloseReason) -> u64 {
    match r {
        CloseReason::PeerClosed => 1 << 16,
        CloseReason::PeerResetMidFrame => 2 << 16,
        CloseReason::Io(_) => 3 << 16,
        CloseReason::ProtocolError(_) => 4 << 16,
        CloseReason::LocalClose => 5 << 16,
        CloseReason::Shutdown => 6 << 16,
        CloseReason::IdleTimeout => 7 << 16,
        CloseReason::SlowConsumer => 8 << 16,
        CloseReason::WebSocket(code) => (9 << 16) | *code as u64,
        CloseReason::HandshakeTimeout => 10 << 16,
        CloseReason::ConnectionLimit => 11 << 16,
        CloseReason::PolicyViolation(_) => 12 << 16,
    }
}

fn close_reason(x: u64) -> CloseReason {
    match x >> 16 {
        1 => CloseReason::PeerClosed,
        2 => CloseReason::PeerResetMidFrame,
        5 => CloseReason::LocalClose,
        6 => CloseReason::Shutdown,
        7 => CloseReason::IdleTimeout,
        8 => CloseReason::SlowConsumer,
        9 => CloseReason::WebSocket(x as u16),
        10 => CloseReason::HandshakeTimeout,
        11 => CloseReason::ConnectionLimit,
        // The details stayed on the other node.
        _ => CloseReason::Io(io::ErrorKind::ConnectionAborted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msgtrans_shards::PacketType;

    fn packet(id: u32, payload: &[u8]) -> Packet {
        let mut p = Packet::one_way(id, payload.to_vec());
        p.header.biz_type = 2;
        p.ext_header = Bytes::from_static(b"\x00\x00\x00\x00\x00\x00\x00\x07");
        p.header.ext_header_len = 8;
        p
    }

    fn all() -> Vec<Record> {
        let id = SessionId::new(0x0102_0000_0000_0003);
        vec![
            Record::Send {
                target: id,
                packet: packet(1, b"hello"),
            },
            Record::Request {
                corr: 9,
                target: id,
                timeout_ms: 1500,
                packet: Packet::request(2, b"ask".to_vec()),
            },
            Record::Response {
                corr: 9,
                result: Ok(Packet {
                    header: msgtrans_shards::FixedHeader {
                        packet_type: PacketType::Response,
                        ..Packet::request(2, b"answer".to_vec()).header
                    },
                    ..Packet::request(2, b"answer".to_vec())
                }),
            },
            Record::Response {
                corr: 10,
                result: Err(SendError::ConnectionClosed(CloseReason::WebSocket(1008))),
            },
            Record::Broadcast {
                corr: Some(4),
                except: Some(id),
                packet: packet(0, b""),
            },
            Record::Broadcast {
                corr: None,
                except: None,
                packet: packet(5, &[7; 3000]),
            },
            Record::BroadcastDone { corr: 4, reached: 12 },
            Record::Undelivered {
                target: id,
                error: SendError::Backpressure(id),
                packet: packet(3, b"late"),
            },
        ]
    }

    #[test]
    fn records_read_back_as_written_one_byte_at_a_time() {
        let mut stream = BytesMut::new();
        for r in all() {
            r.encode(&mut stream);
        }
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in stream {
            buf.put_u8(b);
            while let Some(r) = Record::decode(&mut buf).unwrap() {
                got.push(r);
            }
        }
        assert_eq!(got, all());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_record_costs_at_most_the_overhead_the_window_counts() {
        for r in all() {
            let packet = match &r {
                Record::Send { packet, .. }
                | Record::Request { packet, .. }
                | Record::Broadcast { packet, .. }
                | Record::Undelivered { packet, .. } => packet.clone(),
                _ => continue,
            };
            let mut out = BytesMut::new();
            let len = r.encode(&mut out);
            assert!(
                len <= msgtrans_shards::uplink::cost(&packet),
                "{r:?}: {len} bytes, window counts {}",
                msgtrans_shards::uplink::cost(&packet)
            );
        }
    }

    #[test]
    fn every_error_crosses_the_wire() {
        let id = SessionId::new(77);
        let errors = [
            SendError::SessionNotFound(id),
            SendError::ConnectionClosed(CloseReason::IdleTimeout),
            SendError::Backpressure(id),
            SendError::Timeout,
            SendError::TooManyRequests(id),
            SendError::Encode(CodecError::PayloadTooLarge { len: 9, max: 8 }),
            SendError::Encode(CodecError::ExtHeaderTooLarge { len: 9, max: 8 }),
            SendError::Stopped,
            SendError::NodeDown(3),
            SendError::ClusterUnreachable,
        ];
        for e in errors {
            let r = Record::Response {
                corr: 1,
                result: Err(e.clone()),
            };
            let mut out = BytesMut::new();
            r.encode(&mut out);
            assert_eq!(Record::decode(&mut out).unwrap(), Some(r), "{e:?}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut buf = BytesMut::from(&[0, 0, 0, 1, 99][..]);
        assert_eq!(Record::decode(&mut buf), Err(RecordError::UnknownKind(99)));
        let mut buf = BytesMut::from(&[0, 0, 0, 3, SEND, 1, 2][..]);
        assert_eq!(Record::decode(&mut buf), Err(RecordError::Truncated));
        let mut buf = BytesMut::from(&[0, 0, 0, 9, SEND, 0, 0, 0, 0, 0, 0, 0, 1][..]);
        assert!(Record::decode(&mut buf).is_err());
    }
}
