//! zstd payloads: zstd frames, as MsgTrans 1.0 writes them with
//! `zstd::bulk::compress(data, 3)`. Contexts are kept per thread (one per
//! shard), so a compressed packet costs no context allocation.

use std::cell::RefCell;

use zstd::zstd_safe::{self, CParameter, DParameter, InBuffer, OutBuffer, ResetDirective};

use super::{grow, too_large};
use crate::error::CodecError;
use crate::packet::CompressionType;

/// zstd level, the one MsgTrans 1.0 uses: fast, and most of the ratio.
const ZSTD_LEVEL: i32 = 3;
/// Smallest zstd window a frame may ask for, whatever the payload limit:
/// 2 MiB, what zstd's fast levels use when streaming input of unknown size.
const MIN_ZSTD_WINDOW_LOG: u32 = 21;
/// zstd's own default cap on the window (128 MiB).
const MAX_ZSTD_WINDOW_LOG: u32 = 27;

struct ZstdDecoder {
    ctx: zstd_safe::DCtx<'static>,
    window_log: u32,
}

thread_local! {
    static ZSTD_C: RefCell<Option<zstd_safe::CCtx<'static>>> = const { RefCell::new(None) };
    static ZSTD_D: RefCell<Option<ZstdDecoder>> = const { RefCell::new(None) };
}

/// Compresses `data` into `out` (cleared by the caller); `false` on failure.
pub(super) fn compress(data: &[u8], out: &mut Vec<u8>) -> bool {
    ZSTD_C.with(|c| {
        let mut c = c.borrow_mut();
        let ctx = c.get_or_insert_with(|| {
            let mut ctx = zstd_safe::CCtx::create();
            let _ = ctx.set_parameter(CParameter::CompressionLevel(ZSTD_LEVEL));
            ctx
        });
        out.reserve(zstd_safe::compress_bound(data.len()));
        // compress2 starts a fresh frame every call, keeping the level.
        ctx.compress2(out, data).is_ok()
    })
}

/// The zstd window cap for a payload limit: the limit rounded up to a power
/// of two, so a frame cannot make the decoder allocate a history buffer
/// larger than any payload it may produce.
fn window_log_for(max: usize) -> u32 {
    let log = usize::BITS - max.saturating_sub(1).leading_zeros();
    log.clamp(MIN_ZSTD_WINDOW_LOG, MAX_ZSTD_WINDOW_LOG)
}

pub(super) fn decompress(data: &[u8], max: usize, out: &mut Vec<u8>) -> Result<(), CodecError> {
    let corrupt = CodecError::CorruptCompressed(CompressionType::Zstd);
    if data.is_empty() {
        return Err(corrupt);
    }
    ZSTD_D.with(|d| {
        let mut d = d.borrow_mut();
        let window_log = window_log_for(max);
        let dec = match d.as_mut() {
            Some(dec) => dec,
            None => d.insert(ZstdDecoder {
                ctx: zstd_safe::DCtx::create(),
                window_log: 0,
            }),
        };
        // Forgets any half-decoded frame a failed packet left behind.
        let _ = dec.ctx.reset(ResetDirective::SessionOnly);
        if dec.window_log != window_log {
            dec.ctx
                .set_parameter(DParameter::WindowLogMax(window_log))
                .map_err(|_| corrupt)?;
            dec.window_log = window_log;
        }
        let mut input = InBuffer::around(data);
        loop {
            if out.len() == out.capacity() {
                grow(out, max)?;
            }
            let (in_before, out_before) = (input.pos, out.len());
            // Writes into `out`'s spare capacity and advances its length.
            let mut ob = OutBuffer::around_pos(out, out_before);
            let hint = dec.ctx.decompress_stream(&mut ob, &mut input).map_err(|code| {
                if window_too_large(code) {
                    too_large(max)
                } else {
                    corrupt
                }
            })?;
            if out.len() > max {
                return Err(too_large(max));
            }
            let input_done = input.pos == data.len();
            if hint == 0 && input_done {
                return Ok(());
            }
            let room_left = out.len() < out.capacity();
            if input_done && room_left {
                // All input consumed, output not full, frame unfinished.
                return Err(corrupt);
            }
            if input.pos == in_before && out.len() == out_before && room_left {
                return Err(corrupt);
            }
        }
    })
}

/// Whether a zstd error says the frame wants a bigger window than allowed.
fn window_too_large(code: zstd_safe::ErrorCode) -> bool {
    // SAFETY: ZSTD_getErrorCode only classifies the value it is given.
    let e = unsafe { zstd_safe::zstd_sys::ZSTD_getErrorCode(code) };
    e == zstd_safe::zstd_sys::ZSTD_ErrorCode::ZSTD_error_frameParameter_windowTooLarge
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_zstd_window_is_capped_by_the_payload_limit() {
        assert_eq!(window_log_for(16 << 20), 24);
        assert_eq!(window_log_for(1000), MIN_ZSTD_WINDOW_LOG);
        assert_eq!(window_log_for(u32::MAX as usize), MAX_ZSTD_WINDOW_LOG);
    }
}
