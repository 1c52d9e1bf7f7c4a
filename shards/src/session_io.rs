//! How a session driver moves bytes: through a glommio stream (TLS,
//! WebSocket, QUIC streams, or plain TCP without the shard ring), or
//! through the shard's own ring (plain TCP).
//!
//! The interface lends buffers rather than borrowing them: the ring must
//! own a buffer until the kernel is done with it, so an operation may take
//! the driver's buffer (leaving it empty) and give it back when it
//! completes. A copying adapter would cost a copy each way (at 64 KiB that
//! took the ring experiment from 1.07x to 1.29x tokio's CPU).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

pub(crate) trait SessionIo {
    /// Reads more bytes into `buf[from..]` and returns how many (0: end of
    /// stream). May take `buf` while the read is in flight (see
    /// [`SessionIo::reading`]) and, when [`SessionIo::provides_buffers`]
    /// and `from` is 0, replace an empty `buf` with a buffer of its own.
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>>;

    /// Writes from `buf[from..]` and returns how many bytes went. May take
    /// `buf` while the write is in flight (see [`SessionIo::writing`]).
    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>>;

    /// Pushes out what a layered stream (TLS) still holds.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;

    /// Whether a read holds the driver's read buffer: the driver must not
    /// touch it, nor start another read, until that read completes.
    fn reading(&self) -> bool {
        false
    }

    /// Whether a write holds the driver's write buffer.
    fn writing(&self) -> bool {
        false
    }

    /// Whether a read that continues no partial frame needs no buffer from
    /// the driver (the ring's provided buffers).
    fn provides_buffers(&self) -> bool {
        false
    }
}

/// A glommio stream, read and written in place.
pub(crate) struct Stream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> SessionIo for Stream<S> {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_read(cx, &mut buf[from..])
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, &buf[from..])
    }

    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }
}
