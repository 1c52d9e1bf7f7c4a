//! Payload compression, as MsgTrans 1.0.10 puts it on the wire.
//!
//! The header's compression byte says how the *payload* is compressed
//! (1 zstd, 2 zlib); the fixed header and the extension header never are,
//! and `payload_len` is the compressed length. zstd payloads are zstd frames
//! (1.0 writes them with `zstd::bulk::compress(data, 3)`); zlib payloads are
//! RFC 1950 zlib streams, header and Adler-32 included (1.0 writes them with
//! `flate2::write::ZlibEncoder` at the default level).
//!
//! Decompression is streamed into a buffer that grows only as output
//! appears and never past the payload limit, so no declared size is
//! trusted and a decompression bomb costs at most `max + 1` bytes before it
//! is refused with [`CodecError::DecompressedTooLarge`]. The compression
//! contexts are kept per thread (one per shard), so a compressed packet
//! costs no context allocation.
//!
//! The codecs themselves (`zstd`, `zlib`) are built with the crate's
//! `compression` feature. Without it, [`compress`] declines every payload
//! (it goes out as it is, its header saying so) and [`decompress`] refuses
//! a compressed one with [`CodecError::CompressionNotBuilt`].

use std::cell::RefCell;

use crate::error::CodecError;
use crate::packet::CompressionType;

#[cfg(feature = "compression")]
mod zlib_codec;
#[cfg(feature = "compression")]
mod zstd_codec;

/// First output reservation per compressed byte: typical text and JSON
/// shrink 3-5x, so most payloads decompress without growing the buffer.
const FIRST_GUESS_RATIO: usize = 4;
/// Smallest first output reservation.
const MIN_OUTPUT: usize = 4096;

thread_local! {
    /// Where compressed output is built before it is framed.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Compresses `data` with `alg` into `out` (cleared first). Returns `false`
/// when the result would not be smaller than `data`, or `alg` is `None`
/// (or not built): the packet is then better sent as it is.
pub fn compress(alg: CompressionType, data: &[u8], out: &mut Vec<u8>) -> bool {
    out.clear();
    let ok = match alg {
        CompressionType::None => false,
        #[cfg(feature = "compression")]
        CompressionType::Zstd => zstd_codec::compress(data, out),
        #[cfg(feature = "compression")]
        CompressionType::Zlib => zlib_codec::compress(data, out),
        #[cfg(not(feature = "compression"))]
        CompressionType::Zstd | CompressionType::Zlib => false,
    };
    ok && out.len() < data.len()
}

/// Decompresses `data` (a payload whose compression byte is `alg`) into
/// `out` (cleared first), refusing output beyond `max` bytes.
///
/// # Errors
/// [`CodecError::DecompressedTooLarge`] when the output would pass `max`;
/// [`CodecError::CorruptCompressed`] when `data` is not one or more whole
/// streams of `alg` (truncated, corrupt, trailing bytes, or empty);
/// [`CodecError::CompressionNotBuilt`] for a compressed payload in a build
/// without the `compression` feature.
pub fn decompress(alg: CompressionType, data: &[u8], max: u32, out: &mut Vec<u8>) -> Result<(), CodecError> {
    out.clear();
    let max = max as usize;
    let first = data
        .len()
        .saturating_mul(FIRST_GUESS_RATIO)
        .max(MIN_OUTPUT)
        .min(max.saturating_add(1));
    out.reserve_exact(first);
    match alg {
        CompressionType::None => {
            if data.len() > max {
                return Err(too_large(max));
            }
            out.extend_from_slice(data);
            Ok(())
        }
        #[cfg(feature = "compression")]
        CompressionType::Zstd => zstd_codec::decompress(data, max, out),
        #[cfg(feature = "compression")]
        CompressionType::Zlib => zlib_codec::decompress(data, max, out),
        #[cfg(not(feature = "compression"))]
        CompressionType::Zstd | CompressionType::Zlib => Err(CodecError::CompressionNotBuilt(alg)),
    }
}

pub(super) fn too_large(max: usize) -> CodecError {
    CodecError::DecompressedTooLarge {
        max: u32::try_from(max).unwrap_or(u32::MAX),
    }
}

/// Makes room for more output: doubles, but never past `max + 1` bytes,
/// the one byte that proves the limit was passed.
#[cfg(feature = "compression")]
pub(super) fn grow(out: &mut Vec<u8>, max: usize) -> Result<(), CodecError> {
    let cap = max.saturating_add(1);
    if out.len() >= cap {
        return Err(too_large(max));
    }
    let more = out.len().max(MIN_OUTPUT).min(cap - out.len());
    out.reserve_exact(more);
    Ok(())
}

/// Compresses `payload` with `alg` into this thread's scratch buffer and
/// hands the result to `f`, or hands `None` to `f` when it is not worth
/// it (the result would not be smaller): the caller then sends the
/// payload as it is, with the compression byte cleared.
pub(crate) fn with_compressed<R>(alg: CompressionType, payload: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    SCRATCH.with(|s| {
        // Taken out, so a nested use (none today) could not alias it.
        let mut buf = std::mem::take(&mut *s.borrow_mut());
        let r = if compress(alg, payload, &mut buf) {
            f(Some(&buf))
        } else {
            f(None)
        };
        keep_scratch(s, buf);
        r
    })
}

/// Largest scratch buffer kept between packets: 1 MiB. A bigger one (after
/// an unusually large packet) is freed, so an idle shard holds little.
const MAX_KEPT_SCRATCH: usize = 1 << 20;

fn keep_scratch(slot: &RefCell<Vec<u8>>, mut buf: Vec<u8>) {
    if buf.capacity() <= MAX_KEPT_SCRATCH {
        buf.clear();
        *slot.borrow_mut() = buf;
    }
}

thread_local! {
    /// Where received payloads are decompressed before they are delivered.
    static INFLATED: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decompresses a received payload into this thread's buffer and hands the
/// plain payload to `f`.
pub(crate) fn with_decompressed<R>(
    alg: CompressionType,
    payload: &[u8],
    max: u32,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, CodecError> {
    INFLATED.with(|s| {
        // Taken out: `f` runs application code (a handler), which must not
        // find the buffer borrowed.
        let mut buf = std::mem::take(&mut *s.borrow_mut());
        let r = decompress(alg, payload, max, &mut buf).map(|()| f(&buf));
        keep_scratch(s, buf);
        r
    })
}

#[cfg(all(test, feature = "compression"))]
mod tests {
    use super::*;

    const HELLO: &[u8] = b"hello hello hello hello hello hello hello hello";
    /// HELLO as `zstd::bulk::compress(.., 3)` (MsgTrans 1.0.10's zstd path)
    /// writes it: a zstd frame with its content size.
    const HELLO_ZSTD: [u8; 21] = [
        0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x2f, 0x65, 0x00, 0x00, 0x30, 0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x01, 0x00,
        0x02, 0x95, 0x22,
    ];
    /// HELLO as C zlib (Python's `zlib.compress(d, 6)`) writes it, and as
    /// 1.0's `flate2::write::ZlibEncoder` at the default level does too
    /// (78 9c header, Adler-32 trailer).
    const HELLO_ZLIB: [u8; 17] = [
        0x78, 0x9c, 0xcb, 0x48, 0xcd, 0xc9, 0xc9, 0x57, 0xc8, 0x20, 0x96, 0x04, 0x00, 0xa3, 0x96, 0x11, 0x81,
    ];

    /// Whole packets written by the published msgtrans 1.0.10 crate:
    /// `Packet::request(0x01020304, HELLO)`, biz type 7, ext header `ext`,
    /// `set_compression(..)`, `compress_payload()`, `to_bytes()`.
    const V1_ZSTD_PACKET: &str = "0101010701020304000300000015000065787428b52ffd202f6500003068656c6c6f200100029522";
    const V1_ZLIB_PACKET: &str = "01020107010203040003000000110000657874789ccb48cdc9c957c820960400a3961181";

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn packets_the_1_0_crate_compressed_decode_to_their_payload() {
        for (hex, alg, payload) in [
            (V1_ZSTD_PACKET, CompressionType::Zstd, &HELLO_ZSTD[..]),
            (V1_ZLIB_PACKET, CompressionType::Zlib, &HELLO_ZLIB[..]),
        ] {
            let wire = unhex(hex);
            let (frame, n) = crate::codec::decode_ref(&wire, &Default::default()).unwrap().unwrap();
            assert_eq!(n, wire.len());
            assert_eq!((frame.header.compression, frame.header.biz_type), (alg, 7));
            assert_eq!((frame.header.message_id, frame.ext_header), (0x0102_0304, &b"ext"[..]));
            // Only the payload is compressed, and 1.0 wrote the same bytes
            // as the fixed vectors above.
            assert_eq!(frame.payload, payload);
            assert_eq!(inflate(alg, frame.payload, 1024).unwrap(), HELLO);
        }
    }

    fn inflate(alg: CompressionType, data: &[u8], max: u32) -> Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        decompress(alg, data, max, &mut out).map(|()| out)
    }

    fn deflate(alg: CompressionType, data: &[u8]) -> Vec<u8> {
        let mut c = Vec::new();
        assert!(compress(alg, data, &mut c), "{alg:?} did not shrink");
        c
    }

    #[test]
    fn fixed_vectors_decode() {
        assert_eq!(inflate(CompressionType::Zstd, &HELLO_ZSTD, 1024).unwrap(), HELLO);
        assert_eq!(inflate(CompressionType::Zlib, &HELLO_ZLIB, 1024).unwrap(), HELLO);
    }

    #[test]
    fn output_uses_the_framing_1_0_reads() {
        // zstd frames start with the zstd magic; zlib streams with the
        // default-level zlib header 78 9c (what 1.0's ZlibDecoder expects).
        assert_eq!(deflate(CompressionType::Zstd, HELLO)[..4], [0x28, 0xb5, 0x2f, 0xfd]);
        assert_eq!(deflate(CompressionType::Zlib, HELLO)[..2], [0x78, 0x9c]);
    }

    #[test]
    fn both_algorithms_round_trip() {
        let text = "the quick brown fox jumps over the lazy dog. ".repeat(5000);
        for alg in [CompressionType::Zstd, CompressionType::Zlib] {
            let c = deflate(alg, text.as_bytes());
            assert!(c.len() < text.len() / 10, "{alg:?}: {} bytes", c.len());
            assert_eq!(inflate(alg, &c, text.len() as u32).unwrap(), text.as_bytes());
        }
    }

    #[test]
    fn incompressible_data_is_not_worth_compressing() {
        // A xorshift stream: no redundancy for either algorithm to find.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let mut out = Vec::new();
        assert!(!compress(CompressionType::Zstd, &noise, &mut out));
        assert!(!compress(CompressionType::Zlib, &noise, &mut out));
        assert!(!compress(CompressionType::None, HELLO, &mut out));
    }

    #[test]
    fn a_bomb_is_refused_at_the_limit_without_allocating_its_size() {
        let zeros = vec![0u8; 8 << 20];
        for alg in [CompressionType::Zstd, CompressionType::Zlib] {
            let bomb = deflate(alg, &zeros);
            assert!(bomb.len() < 64 * 1024, "{alg:?}: {}", bomb.len());
            let mut out = Vec::new();
            assert_eq!(
                decompress(alg, &bomb, 65_536, &mut out),
                Err(CodecError::DecompressedTooLarge { max: 65_536 })
            );
            assert!(out.capacity() <= 2 * 65_537, "{alg:?} grew to {}", out.capacity());
        }
    }

    #[test]
    fn output_exactly_at_the_limit_is_accepted() {
        let data = vec![7u8; 10_000];
        for alg in [CompressionType::Zstd, CompressionType::Zlib] {
            let c = deflate(alg, &data);
            assert_eq!(inflate(alg, &c, 10_000).unwrap(), data);
            assert_eq!(
                inflate(alg, &c, 9_999),
                Err(CodecError::DecompressedTooLarge { max: 9_999 })
            );
        }
    }

    #[test]
    fn truncated_corrupt_trailing_and_empty_payloads_are_refused() {
        let cases: [(CompressionType, &[u8]); 2] = [
            (CompressionType::Zstd, &HELLO_ZSTD),
            (CompressionType::Zlib, &HELLO_ZLIB),
        ];
        for (alg, good) in cases {
            let bad = CodecError::CorruptCompressed(alg);
            assert_eq!(
                inflate(alg, &good[..good.len() - 3], 1024),
                Err(bad),
                "{alg:?} truncated"
            );
            assert_eq!(inflate(alg, &[], 1024), Err(bad), "{alg:?} empty");
            assert_eq!(inflate(alg, b"definitely not compressed", 1024), Err(bad));
            let mut trailing = good.to_vec();
            trailing.push(0);
            assert_eq!(inflate(alg, &trailing, 1024), Err(bad), "{alg:?} trailing");
            // The context is reset after a failure: good data decodes again.
            assert_eq!(inflate(alg, good, 1024).unwrap(), HELLO);
        }
    }

    #[test]
    fn concatenated_zstd_frames_decode_whole() {
        // zstd's own decoders (and so 1.0's) accept several frames in a row.
        let mut two = HELLO_ZSTD.to_vec();
        two.extend_from_slice(&HELLO_ZSTD);
        assert_eq!(
            inflate(CompressionType::Zstd, &two, 1024).unwrap(),
            [HELLO, HELLO].concat()
        );
    }
}
