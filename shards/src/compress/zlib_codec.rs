//! zlib payloads: RFC 1950 zlib streams, header and Adler-32 included, as
//! MsgTrans 1.0 writes them with `flate2::write::ZlibEncoder` at the
//! default level. Contexts are kept per thread (one per shard).

use std::cell::RefCell;

use super::{grow, too_large};
use crate::error::CodecError;
use crate::packet::CompressionType;

thread_local! {
    static ZLIB_C: RefCell<Option<flate2::Compress>> = const { RefCell::new(None) };
    static ZLIB_D: RefCell<Option<flate2::Decompress>> = const { RefCell::new(None) };
}

/// Compresses `data` into `out` (cleared by the caller); `false` on failure.
pub(super) fn compress(data: &[u8], out: &mut Vec<u8>) -> bool {
    ZLIB_C.with(|c| {
        let mut c = c.borrow_mut();
        let z = c.get_or_insert_with(|| flate2::Compress::new(flate2::Compression::default(), true));
        z.reset();
        // zlib's own bound: 5 bytes per 16 KiB block, plus header and trailer.
        out.reserve(data.len() + data.len() / 16_384 * 5 + 64);
        loop {
            let consumed = z.total_in() as usize;
            match z.compress_vec(&data[consumed..], out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => break true,
                Ok(_) => out.reserve(out.capacity().max(64)),
                Err(_) => break false,
            }
        }
    })
}

pub(super) fn decompress(data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let corrupt = CodecError::CorruptCompressed(CompressionType::Zlib);
    ZLIB_D.with(|d| {
        let mut d = d.borrow_mut();
        let z = d.get_or_insert_with(|| flate2::Decompress::new(true));
        z.reset(true);
        loop {
            if out.len() == out.capacity() {
                grow(out, max)?;
            }
            let (in_before, out_before) = (z.total_in() as usize, out.len());
            let status = z
                // Not `Finish`: miniz_oxide then wants all the output to fit
                // the first call, and this buffer grows as output appears.
                .decompress_vec(&data[in_before..], out, flate2::FlushDecompress::None)
                .map_err(|_| corrupt)?;
            if out.len() > max {
                return Err(too_large(max));
            }
            let consumed = z.total_in() as usize;
            match status {
                // Bytes after the end of the stream are not a zlib payload.
                flate2::Status::StreamEnd => return if consumed == data.len() { Ok(()) } else { Err(corrupt) },
                _ if consumed == in_before && out.len() == out_before && out.len() < out.capacity() => {
                    // No progress with room to spare: the input is truncated.
                    return Err(corrupt);
                }
                _ => {}
            }
        }
    })
}
