//! One session's per-message path with the kernel taken out: a driver
//! served by an inline echo reads the same batch of frames over and over
//! from memory and discards what it writes. The per-core benches time it
//! (`benches/micro.rs`, `session/`), and `callgrind` counts its
//! instructions exactly, which a loopback run on a shared machine cannot:
//! this is the user-space cost that separates the stack from a raw echo.
//! Not part of the supported API.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::session::handler::Inline;
use crate::session::{Driver, SessionState};
use crate::session_io::Stream;
use crate::shard::Shard;
use crate::wire::Wire;

/// Hands out `batch` on every read and swallows every write.
struct Repeat {
    batch: Vec<u8>,
    written: u64,
}

impl AsyncRead for Repeat {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        // The driver sizes its read buffer at least `read_buffer` (16 KiB
        // by default), far above a bench batch, so a batch is never split.
        let n = self.batch.len().min(buf.len());
        buf[..n].copy_from_slice(&self.batch[..n]);
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Repeat {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.written += buf.len() as u64;
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The echo `sharded_server` runs inline.
fn echo(ctx: &mut Inline<'_>) {
    let (h, ext, p) = (ctx.header(), ctx.ext_header(), ctx.payload());
    ctx.write(h, ext, p);
}

/// A TCP session echoing `frames` packets of `payload` bytes per read.
pub struct EchoLoop {
    shard: Rc<Shard>,
    st: Rc<SessionState>,
    driver: Driver<Stream<Repeat>>,
    batch_len: u64,
    frames: u64,
}

impl EchoLoop {
    /// A session on a lone shard whose every read is `frames` one-way
    /// packets of `payload` bytes each.
    pub fn new(frames: usize, payload: usize) -> Self {
        let shard = crate::testing::lone_shard(Default::default(), Some(Arc::new(echo)));
        let st = shard.admit(Wire::Tcp).expect("a free slot");
        let mut batch = Vec::new();
        for i in 0..frames {
            let p = crate::packet::Packet::one_way(i as u32, vec![0x5A; payload]);
            crate::codec::encode_parts(&p.header, &p.ext_header, &p.payload, &mut batch).expect("a small packet");
        }
        let batch_len = batch.len() as u64;
        let repeat = Repeat { batch, written: 0 };
        let driver = shard.driver(Rc::clone(&st), Stream(repeat), &[]);
        let mut l = Self {
            shard,
            st,
            driver,
            batch_len,
            frames: frames as u64,
        };
        // A turn writes the previous turn's last batch before it reads: after
        // this first one, every turn echoes as many packets as it reads.
        l.turn();
        l
    }

    /// One poll of the driver, as the shard's executor makes it: it reads
    /// and answers batches until it yields to its neighbours. Returns the
    /// packets echoed, counted from the bytes written.
    pub fn turn(&mut self) -> u64 {
        let before = self.driver.stream_ref().0.written;
        let mut cx = Context::from_waker(Waker::noop());
        if let Poll::Ready(reason) = Pin::new(&mut self.driver).poll(&mut cx) {
            panic!("the bench session ended: {reason:?}");
        }
        let wrote = self.driver.stream_ref().0.written - before;
        // Each packet goes back as it came: the batch's size per `frames`.
        wrote / self.batch_len * self.frames
    }
}

impl Drop for EchoLoop {
    fn drop(&mut self) {
        self.shard.finish(&self.st, crate::error::CloseReason::Shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_turn_echoes_whole_batches() {
        let mut l = EchoLoop::new(16, 64);
        // The driver yields after 16 reads of 16 packets each, and every
        // packet goes back whole.
        assert_eq!(l.turn(), 16 * 16);
        assert_eq!(l.turn(), 16 * 16, "the next turn does the same");
        assert_eq!(l.driver.stream_ref().0.written % l.batch_len, 0);
    }
}
