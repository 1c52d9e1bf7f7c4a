//! A session's view of its QUIC connection: an `AsyncRead`/`AsyncWrite`
//! over the connection's streams, mapped by `super::super::stream`.

use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use super::conns::mark;
use super::Endpoint;
use crate::proto::quic::stream::{StreamIo, Touched};

/// A session's view of its connection: whole prefixed packets in and out.
pub(crate) struct QuicStream {
    pub(super) ep: Rc<Endpoint>,
    pub(super) ch: usize,
    pub(super) gen: u64,
}

impl QuicStream {
    fn with<R>(&self, none: R, f: impl FnOnce(&mut StreamIo, &mut quinn_proto::Connection) -> (R, Touched)) -> R {
        let mut inner = self.ep.inner.borrow_mut();
        let inner = &mut *inner;
        let Some(c) = inner.conns.get_mut(&self.ch).filter(|c| c.gen == self.gen) else {
            return none;
        };
        let (r, touched) = f(&mut c.io, &mut c.q);
        if touched.transmit {
            mark(&mut inner.dirty, c, self.ch);
            self.ep.wake();
        }
        r
    }
}

impl AsyncRead for QuicStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        self.with(Poll::Ready(Ok(0)), |io, q| io.poll_read(q, cx, buf))
    }
}

impl AsyncWrite for QuicStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let gone = Poll::Ready(Err(std::io::ErrorKind::NotConnected.into()));
        let pool = &self.ep.pool;
        self.with(gone, |io, q| io.poll_write(q, cx, buf, pool))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // quinn holds what was written until it is acknowledged.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
