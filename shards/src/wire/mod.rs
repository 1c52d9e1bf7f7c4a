//! How packets travel on a session's byte stream: back to back (TCP),
//! length-prefixed (QUIC streams), or one per WebSocket binary message.
//! Writing is a pure function over the session's output buffer; reading
//! WebSocket frames is in `ws`.

#[cfg(feature = "websocket")]
pub(crate) mod ws;

use crate::codec;
use crate::config::EngineConfig;
use crate::error::CodecError;
use crate::packet::{CompressionType, FixedHeader};

/// The envelope around each packet on a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// Packets back to back.
    Tcp,
    /// One unmasked binary WebSocket message per packet (server side).
    #[cfg(feature = "websocket")]
    WsServer,
    /// One masked binary WebSocket message per packet (client side).
    #[cfg(feature = "websocket")]
    WsClient,
    /// Each packet preceded by its length as a u32 big-endian, as on a
    /// MsgTrans QUIC stream (DESIGN.md §3). Streams other than one
    /// bidirectional stream are mapped onto this by `proto::quic::stream`.
    #[cfg(feature = "quic")]
    Quic,
}

/// Bytes of the length prefix before each packet on a QUIC stream.
#[cfg(feature = "quic")]
pub(crate) const QUIC_PREFIX: usize = 4;

/// The most a WebSocket frame header can add to a packet.
pub(crate) const MAX_ENVELOPE: usize = 14;

impl Wire {
    /// The protocol's name in events.
    pub fn protocol(self) -> &'static str {
        match self {
            Wire::Tcp => "tcp",
            #[cfg(feature = "websocket")]
            Wire::WsServer | Wire::WsClient => "websocket",
            #[cfg(feature = "quic")]
            Wire::Quic => "quic",
        }
    }

    /// Appends one packet, in its envelope, to `out`. Plain TCP, every
    /// session's per-message write, is inlined into the caller; the
    /// enveloped wires take a call.
    #[inline(always)]
    pub fn write(self, out: &mut Vec<u8>, header: &FixedHeader, ext: &[u8], payload: &[u8]) -> Result<(), CodecError> {
        if self == Wire::Tcp {
            return codec::encode_vec(header, ext, payload, out);
        }
        self.write_enveloped(out, header, ext, payload)
    }

    fn write_enveloped(
        self,
        out: &mut Vec<u8>,
        header: &FixedHeader,
        ext: &[u8],
        payload: &[u8],
    ) -> Result<(), CodecError> {
        match self {
            Wire::Tcp => codec::encode_vec(header, ext, payload, out),
            #[cfg(feature = "quic")]
            Wire::Quic => {
                // The codec refuses what does not fit the header's u32
                // fields, so the prefix (16 more bytes) is checked too.
                let len = codec::encoded_len(ext.len(), payload.len());
                let len = u32::try_from(len).map_err(|_| CodecError::PayloadTooLarge {
                    len: u32::MAX,
                    max: u32::MAX - codec::HEADER_LEN as u32,
                })?;
                out.extend_from_slice(&len.to_be_bytes());
                codec::encode_vec(header, ext, payload, out)
            }
            #[cfg(feature = "websocket")]
            Wire::WsServer => {
                ws_header(
                    out,
                    OP_BINARY,
                    codec::encoded_len(ext.len(), payload.len()) as u64,
                    None,
                );
                codec::encode_vec(header, ext, payload, out)
            }
            #[cfg(feature = "websocket")]
            Wire::WsClient => {
                let mask = new_mask();
                ws_header(
                    out,
                    OP_BINARY,
                    codec::encoded_len(ext.len(), payload.len()) as u64,
                    Some(mask),
                );
                let start = out.len();
                codec::encode_vec(header, ext, payload, out)?;
                apply_mask(&mut out[start..], mask, 0);
                Ok(())
            }
        }
    }

    /// Appends one packet like [`Wire::write`], first compressing its
    /// payload when its header asks for it (the compression byte) and the
    /// payload is at least `cfg.compression_threshold` bytes. A payload that is shorter, or
    /// that would not shrink, goes out as it is with the byte cleared, so
    /// the byte on the wire always says what the payload is.
    #[inline]
    pub fn write_packet(
        self,
        cfg: &EngineConfig,
        out: &mut Vec<u8>,
        header: &FixedHeader,
        ext: &[u8],
        payload: &[u8],
    ) -> Result<(), CodecError> {
        // The uncompressed path pays this one compare.
        if header.compression == CompressionType::None {
            return self.write(out, header, ext, payload);
        }
        self.write_compressed(cfg.compression_threshold, out, header, ext, payload)
    }

    #[cold]
    fn write_compressed(
        self,
        threshold: usize,
        out: &mut Vec<u8>,
        header: &FixedHeader,
        ext: &[u8],
        payload: &[u8],
    ) -> Result<(), CodecError> {
        let mut plain = header.clone();
        plain.compression = CompressionType::None;
        if payload.len() < threshold {
            return self.write(out, &plain, ext, payload);
        }
        crate::compress::with_compressed(header.compression, payload, |packed| match packed {
            Some(packed) => self.write(out, header, ext, packed),
            None => self.write(out, &plain, ext, payload),
        })
    }

    /// Appends a control frame (ping, pong, close) to `out`.
    #[cfg(feature = "websocket")]
    pub fn control(self, out: &mut Vec<u8>, opcode: u8, body: &[u8]) {
        match self {
            Wire::Tcp => {}
            #[cfg(feature = "quic")]
            Wire::Quic => {}
            #[cfg(feature = "websocket")]
            Wire::WsServer => {
                ws_header(out, opcode, body.len() as u64, None);
                out.extend_from_slice(body);
            }
            #[cfg(feature = "websocket")]
            Wire::WsClient => {
                let mask = new_mask();
                ws_header(out, opcode, body.len() as u64, Some(mask));
                let start = out.len();
                out.extend_from_slice(body);
                apply_mask(&mut out[start..], mask, 0);
            }
        }
    }
}

/// The FIN bit of a frame's first byte.
#[cfg(feature = "websocket")]
const FIN: u8 = 0x80;
/// Binary message opcode, with FIN.
#[cfg(feature = "websocket")]
pub(crate) const OP_BINARY: u8 = FIN | ws::opcode::BINARY;
/// Close frame opcode, with FIN.
#[cfg(feature = "websocket")]
pub(crate) const OP_CLOSE: u8 = FIN | ws::opcode::CLOSE;
/// Pong opcode, with FIN.
#[cfg(feature = "websocket")]
pub(crate) const OP_PONG: u8 = FIN | ws::opcode::PONG;

/// RFC 6455 §5.2 frame header: FIN+opcode byte, then the length in 7, 16
/// or 64 bits, then the mask key if any.
#[cfg(feature = "websocket")]
#[inline]
fn ws_header(out: &mut Vec<u8>, fin_opcode: u8, len: u64, mask: Option<[u8; 4]>) {
    // Built on the stack and appended once: byte by byte, each push
    // checked the buffer's capacity again.
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut h = [0u8; 14];
    h[0] = fin_opcode;
    let mut n = if len < 126 {
        h[1] = mask_bit | len as u8;
        2
    } else if len <= u16::MAX as u64 {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&len.to_be_bytes());
        10
    };
    if let Some(m) = mask {
        h[n..n + 4].copy_from_slice(&m);
        n += 4;
    }
    out.extend_from_slice(&h[..n]);
}

/// XORs `buf` with `mask`, as if `buf` started `offset` bytes into the
/// masked payload.
///
/// Eight bytes at a time: byte by byte, unmasking was what made a 64 KiB
/// message cost the server twice as much over ws as over tcp.
#[cfg(feature = "websocket")]
pub(crate) fn apply_mask(buf: &mut [u8], mask: [u8; 4], offset: usize) {
    // The key as it falls from `offset` on; every chunk starts at a
    // multiple of 4 from there, so one word serves them all.
    let m: [u8; 4] = std::array::from_fn(|i| mask[(offset + i) & 3]);
    let word = u64::from_ne_bytes([m[0], m[1], m[2], m[3], m[0], m[1], m[2], m[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let v = u64::from_ne_bytes((&*c).try_into().expect("8 bytes")) ^ word;
        c.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= m[i & 3];
    }
}

/// A fresh client mask. RFC 6455 asks for unpredictable keys so a browser
/// client cannot steer the bytes an intermediary sees; a per-thread
/// xorshift seeded from the clock and address space is enough for that.
#[cfg(feature = "websocket")]
fn new_mask() -> [u8; 4] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new({
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
            let a = &t as *const u64 as u64;
            (t ^ a.rotate_left(32)) | 1
        });
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.set(x);
        (x as u32).to_le_bytes()
    })
}

#[cfg(all(test, feature = "websocket"))]
mod tests {
    use super::*;
    use crate::packet::Packet;

    #[test]
    fn masking_by_words_matches_masking_byte_by_byte_at_every_length_and_offset() {
        let mask = [0x12, 0x34, 0x56, 0x78];
        for len in 0..40 {
            for offset in 0..8 {
                let data: Vec<u8> = (0..len as u8).map(|b| b.wrapping_mul(37)).collect();
                let mut fast = data.clone();
                apply_mask(&mut fast, mask, offset);
                let slow: Vec<u8> = data
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ mask[(offset + i) & 3])
                    .collect();
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    /// `p` as `wire` writes it, read back by tungstenite: the frame
    /// header, the payload length it gives and the bytes after it.
    fn framed(wire: Wire, p: &Packet) -> (tungstenite::protocol::frame::FrameHeader, u64, Vec<u8>) {
        let mut out = Vec::new();
        wire.write(&mut out, &p.header, &p.ext_header, &p.payload).unwrap();
        let mut cur = std::io::Cursor::new(&out[..]);
        let (h, len) = tungstenite::protocol::frame::FrameHeader::parse(&mut cur)
            .unwrap()
            .unwrap();
        (h, len, out[cur.position() as usize..].to_vec())
    }

    #[test]
    fn server_frames_are_one_unmasked_binary_message_per_packet() {
        for size in [0usize, 109, 110, 65_519, 65_520, 70_000] {
            let p = Packet::one_way(3, vec![9u8; size]);
            let (h, len, body) = framed(Wire::WsServer, &p);
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(len as usize, 16 + size);
            assert_eq!(body, &p.to_bytes().unwrap()[..]);
        }
    }

    #[test]
    fn client_frames_are_masked_and_unmask_to_the_packet() {
        // Each length form: 7-bit, 16-bit and 64-bit, each with its mask.
        for size in [6usize, 200, 70_000] {
            let p = Packet::request(8, vec![0x5a; size]);
            let (h, len, mut body) = framed(Wire::WsClient, &p);
            assert_eq!(len as usize, 16 + size);
            let mask = h.mask.expect("client frames are masked");
            apply_mask(&mut body, mask, 0);
            assert_eq!(body, &p.to_bytes().unwrap()[..], "size {size}");
        }
    }
}
