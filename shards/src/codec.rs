//! The MsgTrans 1.0 wire format (DESIGN.md §3) as pure functions over bytes.
//!
//! Contract, in the style of `tokio_util::codec::Decoder`: [`decode_header`]
//! returns `Ok(None)` when more bytes are needed, `Ok(Some(..))` when a whole
//! frame is present, and `Err` when the stream is corrupt and the session must
//! end. Every length is checked against [`FrameLimits`] before anything is
//! allocated. No I/O, no clock.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::header::{CompressionType, FixedHeader, PacketType, ReservedFlags};
pub use crate::header::{HEADER_LEN, WIRE_VERSION};
use crate::packet::Packet;

/// Default maximum payload: 16 MiB, MsgTrans 1.0's own decompression cap, so
/// every packet a 1.0 peer can legally produce is accepted.
pub const DEFAULT_MAX_PAYLOAD: u32 = 16 * 1024 * 1024;
/// Default maximum extension header: 64 KiB - 1, all a u16 length can say;
/// lower it to refuse peers that pad headers.
pub const DEFAULT_MAX_EXT_HEADER: u16 = u16::MAX;

// The header's value types are read from bytes here, where reading can
// fail with a codec error (the header itself sits below the errors).
impl TryFrom<u8> for PacketType {
    type Error = CodecError;
    fn try_from(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Self::OneWay),
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            other => Err(CodecError::UnknownPacketType(other)),
        }
    }
}

impl TryFrom<u8> for CompressionType {
    type Error = CodecError;
    fn try_from(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::Zlib),
            other => Err(CodecError::UnknownCompression(other)),
        }
    }
}

/// Size limits applied while decoding. Checked before any allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameLimits {
    /// Largest accepted `payload_len`.
    pub max_payload: u32,
    /// Largest accepted `ext_header_len`.
    pub max_ext_header: u16,
}

impl Default for FrameLimits {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_ext_header: DEFAULT_MAX_EXT_HEADER,
        }
    }
}

/// Parses and validates the 16-byte header at the start of `buf`.
///
/// Returns the header and the length of the whole frame (header, extension
/// header and payload) once the header is complete, even if the body is not
/// yet: the caller can then reserve exactly what the frame needs. `Ok(None)`
/// means fewer than 16 bytes are buffered.
#[inline]
pub fn decode_header(buf: &[u8], limits: &FrameLimits) -> Result<Option<(FixedHeader, usize)>, CodecError> {
    let Some(h) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if h[0] != WIRE_VERSION {
        return Err(CodecError::UnsupportedVersion(h[0]));
    }
    let compression = CompressionType::try_from(h[1])?;
    let packet_type = PacketType::try_from(h[2])?;
    let ext_header_len = u16::from_be_bytes([h[8], h[9]]);
    let payload_len = u32::from_be_bytes([h[10], h[11], h[12], h[13]]);
    if ext_header_len > limits.max_ext_header {
        return Err(CodecError::ExtHeaderTooLarge {
            len: ext_header_len,
            max: limits.max_ext_header,
        });
    }
    if payload_len > limits.max_payload {
        return Err(CodecError::PayloadTooLarge {
            len: payload_len,
            max: limits.max_payload,
        });
    }
    let header = FixedHeader {
        version: h[0],
        compression,
        packet_type,
        biz_type: h[3],
        message_id: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        ext_header_len,
        payload_len,
        reserved: ReservedFlags::from_raw(u16::from_be_bytes([h[14], h[15]])),
    };
    let frame_len = HEADER_LEN + ext_header_len as usize + payload_len as usize;
    Ok(Some((header, frame_len)))
}

/// A decoded frame borrowed from the read buffer: what the inline handler
/// sees, so the fast path neither copies nor counts references.
#[derive(Debug, Clone)]
pub struct FrameRef<'a> {
    /// The validated fixed header.
    pub header: FixedHeader,
    /// Extension header bytes.
    pub ext_header: &'a [u8],
    /// Payload bytes.
    pub payload: &'a [u8],
}

impl FrameRef<'_> {
    /// Copies the frame into an owned [`Packet`].
    pub fn to_packet(&self) -> Packet {
        Packet {
            header: self.header.clone(),
            ext_header: Bytes::copy_from_slice(self.ext_header),
            payload: Bytes::copy_from_slice(self.payload),
        }
    }
}

/// Decodes the first frame in `buf` without consuming it.
///
/// Returns the frame and how many bytes it occupies, `Ok(None)` if it is not
/// complete yet.
#[inline]
pub fn decode_ref<'a>(buf: &'a [u8], limits: &FrameLimits) -> Result<Option<(FrameRef<'a>, usize)>, CodecError> {
    let Some((header, frame_len)) = decode_header(buf, limits)? else {
        return Ok(None);
    };
    if buf.len() < frame_len {
        return Ok(None);
    }
    let ext_end = HEADER_LEN + header.ext_header_len as usize;
    let frame = FrameRef {
        ext_header: &buf[HEADER_LEN..ext_end],
        payload: &buf[ext_end..frame_len],
        header,
    };
    Ok(Some((frame, frame_len)))
}

/// Decodes and removes the first complete frame from `buf`, sharing its
/// memory (no copy). A partial frame stays in `buf` for the next read, and
/// `buf` is grown to hold it whole once its header is known.
pub fn decode(buf: &mut BytesMut, limits: &FrameLimits) -> Result<Option<Packet>, CodecError> {
    let Some((header, frame_len)) = decode_header(buf, limits)? else {
        return Ok(None);
    };
    if buf.len() < frame_len {
        // Limits were checked above, so this reserve is bounded.
        buf.reserve(frame_len - buf.len());
        return Ok(None);
    }
    let mut frame = buf.split_to(frame_len).freeze();
    let _ = frame.split_to(HEADER_LEN);
    let ext_header = frame.split_to(header.ext_header_len as usize);
    Ok(Some(Packet {
        header,
        ext_header,
        payload: frame,
    }))
}

/// Length of `packet` on the wire.
pub fn encoded_len(ext_header: usize, payload: usize) -> usize {
    HEADER_LEN + ext_header + payload
}

/// Appends one frame to `out`. The header's length fields are taken from the
/// slices, never from the caller, so they cannot disagree.
///
/// # Errors
/// [`CodecError::PayloadTooLarge`] / [`CodecError::ExtHeaderTooLarge`] when a
/// slice does not fit its length field.
#[inline]
pub fn encode_parts<B: BufMut>(
    header: &FixedHeader,
    ext_header: &[u8],
    payload: &[u8],
    out: &mut B,
) -> Result<(), CodecError> {
    let ext_len = u16::try_from(ext_header.len()).map_err(|_| CodecError::ExtHeaderTooLarge {
        len: u16::MAX,
        max: u16::MAX,
    })?;
    let payload_len = u32::try_from(payload.len()).map_err(|_| CodecError::PayloadTooLarge {
        len: u32::MAX,
        max: u32::MAX,
    })?;
    // One 16-byte copy rather than eight `put_*` calls, each of which
    // checks and moves the buffer's length.
    out.put_slice(&header_bytes(header, ext_len, payload_len));
    out.put_slice(ext_header);
    out.put_slice(payload);
    Ok(())
}

/// Appends one frame to a `Vec`, as [`encode_parts`] does, with one
/// capacity check for the whole frame. This is every session's
/// per-message write; three checked appends cost it 125 instructions per
/// 64-byte packet (`callgrind` on the `session` bench).
///
/// Always inlined: left to LLVM, it stopped inlining this into the
/// handler's write after unrelated code moved (the compression codecs into
/// modules of their own), and a call here costs 28 instructions per 64 B
/// message (`scripts/instructions.py`: 293.1 against 265.1).
///
/// # Errors
/// As [`encode_parts`].
#[inline(always)]
pub fn encode_vec(
    header: &FixedHeader,
    ext_header: &[u8],
    payload: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let (Ok(ext_len), Ok(payload_len)) = (u16::try_from(ext_header.len()), u32::try_from(payload.len())) else {
        // A slice over its length field: encode_parts says which.
        return encode_parts(header, ext_header, payload, out);
    };
    let total = HEADER_LEN + ext_header.len() + payload.len();
    out.reserve(total);
    let h = header_bytes(header, ext_len, payload_len);
    let start = out.len();
    // SAFETY: `reserve` made room for `total` bytes past `start`; the three
    // copies fill exactly that range before the length covers it, and the
    // sources are shared borrows, which cannot alias `out`'s spare room.
    unsafe {
        let dst = out.as_mut_ptr().add(start);
        std::ptr::copy_nonoverlapping(h.as_ptr(), dst, HEADER_LEN);
        // Most packets carry no extension header: skip the call to memcpy.
        if !ext_header.is_empty() {
            std::ptr::copy_nonoverlapping(ext_header.as_ptr(), dst.add(HEADER_LEN), ext_header.len());
        }
        std::ptr::copy_nonoverlapping(payload.as_ptr(), dst.add(HEADER_LEN + ext_header.len()), payload.len());
        out.set_len(start + total);
    }
    Ok(())
}

/// The 16 header bytes, for lengths already checked against their fields.
#[inline]
fn header_bytes(header: &FixedHeader, ext_len: u16, payload_len: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0] = WIRE_VERSION;
    h[1] = header.compression as u8;
    h[2] = header.packet_type as u8;
    h[3] = header.biz_type;
    h[4..8].copy_from_slice(&header.message_id.to_be_bytes());
    h[8..10].copy_from_slice(&ext_len.to_be_bytes());
    h[10..14].copy_from_slice(&payload_len.to_be_bytes());
    h[14..16].copy_from_slice(&header.reserved.raw().to_be_bytes());
    h
}

/// Appends `packet` to `out`.
pub fn encode(packet: &Packet, out: &mut BytesMut) -> Result<(), CodecError> {
    out.reserve(packet.wire_len());
    encode_parts(&packet.header, &packet.ext_header, &packet.payload, out)
}

// Encoding a whole packet is the codec's job; the method lives here so the
// packet model needs nothing from the codec.
impl Packet {
    /// Encodes to a fresh buffer.
    pub fn to_bytes(&self) -> Result<BytesMut, CodecError> {
        let mut out = BytesMut::with_capacity(self.wire_len());
        encode(self, &mut out)?;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8], ext: &[u8]) -> Packet {
        let mut p = Packet::request(7, payload.to_vec());
        p.set_ext_header(ext.to_vec());
        p.set_biz_type(9);
        p.set_priority(true);
        p
    }

    #[test]
    fn round_trip_keeps_every_field() {
        let p = sample(b"hello", b"ext");
        let mut buf = BytesMut::new();
        encode(&p, &mut buf).unwrap();
        assert_eq!(buf.len(), 16 + 3 + 5);
        let q = decode(&mut buf, &FrameLimits::default()).unwrap().unwrap();
        assert_eq!(p, q);
        assert!(buf.is_empty());
    }

    #[test]
    fn read_incomplete_head_needs_more() {
        let mut buf = BytesMut::from(&[1u8, 0, 0][..]);
        assert_eq!(decode(&mut buf, &FrameLimits::default()).unwrap(), None);
        assert_eq!(buf.len(), 3);
    }

    #[test]
    fn every_split_point_decodes_the_same() {
        let p = sample(&[0xAB; 40], b"xy");
        let mut wire = BytesMut::new();
        encode(&p, &mut wire).unwrap();
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let first = decode(&mut buf, &FrameLimits::default()).unwrap();
            if cut < wire.len() {
                assert!(first.is_none(), "cut {cut}");
                buf.extend_from_slice(&wire[cut..]);
                assert_eq!(decode(&mut buf, &FrameLimits::default()).unwrap().as_ref(), Some(&p));
            } else {
                assert_eq!(first.as_ref(), Some(&p));
            }
        }
    }

    #[test]
    fn rejects_bad_version_type_and_compression() {
        let mut wire = BytesMut::new();
        encode(&sample(b"x", b""), &mut wire).unwrap();
        let lim = FrameLimits::default();
        let mut bad = wire.clone();
        bad[0] = 2;
        assert_eq!(decode(&mut bad, &lim), Err(CodecError::UnsupportedVersion(2)));
        let mut bad = wire.clone();
        bad[2] = 7;
        assert_eq!(decode(&mut bad, &lim), Err(CodecError::UnknownPacketType(7)));
        let mut bad = wire.clone();
        bad[1] = 3;
        assert_eq!(decode(&mut bad, &lim), Err(CodecError::UnknownCompression(3)));
    }

    #[test]
    fn read_max_frame_len_is_checked_before_allocation() {
        let lim = FrameLimits {
            max_payload: 100,
            max_ext_header: 4,
        };
        let mut hdr = BytesMut::new();
        encode(&Packet::one_way(1, vec![0u8; 101]), &mut hdr).unwrap();
        hdr.truncate(HEADER_LEN);
        let cap = hdr.capacity();
        assert_eq!(
            decode(&mut hdr, &lim),
            Err(CodecError::PayloadTooLarge { len: 101, max: 100 })
        );
        assert_eq!(hdr.capacity(), cap);
        let mut p = Packet::one_way(1, vec![]);
        p.set_ext_header(vec![0u8; 5]);
        let mut buf = BytesMut::new();
        encode(&p, &mut buf).unwrap();
        assert_eq!(
            decode(&mut buf, &lim),
            Err(CodecError::ExtHeaderTooLarge { len: 5, max: 4 })
        );
    }

    #[test]
    fn payload_at_the_limit_is_accepted() {
        let lim = FrameLimits {
            max_payload: 10,
            max_ext_header: 0,
        };
        let mut buf = BytesMut::new();
        encode(&Packet::one_way(1, vec![1u8; 10]), &mut buf).unwrap();
        assert_eq!(decode(&mut buf, &lim).unwrap().unwrap().payload.len(), 10);
    }

    #[test]
    fn decodes_many_frames_from_one_buffer() {
        let mut buf = BytesMut::new();
        for i in 0..100u32 {
            encode(&Packet::one_way(i, i.to_be_bytes().to_vec()), &mut buf).unwrap();
        }
        for i in 0..100u32 {
            let p = decode(&mut buf, &FrameLimits::default()).unwrap().unwrap();
            assert_eq!(p.header.message_id, i);
            assert_eq!(&p.payload[..], &i.to_be_bytes());
        }
        assert!(buf.is_empty());
    }

    #[test]
    fn encode_vec_writes_what_encode_parts_writes_after_what_was_there() {
        for (ext, payload) in [
            (&b""[..], &b""[..]),
            (b"", b"hello"),
            (b"ext", b""),
            (b"ext", &[7u8; 70_000][..]),
        ] {
            let p = sample(payload, ext);
            let mut want = BytesMut::from(&b"before"[..]);
            encode_parts(&p.header, ext, payload, &mut want).unwrap();
            // A full Vec, so that encode_vec has to grow it.
            let mut got = b"before".to_vec();
            got.shrink_to_fit();
            encode_vec(&p.header, ext, payload, &mut got).unwrap();
            assert_eq!(got, &want[..], "ext {} B, payload {} B", ext.len(), payload.len());
            let (q, n) = decode_ref(&got[6..], &FrameLimits::default()).unwrap().unwrap();
            assert_eq!((q.ext_header, q.payload, n), (ext, payload, got.len() - 6));
        }
    }
}
