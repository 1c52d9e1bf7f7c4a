//! The driver: one future per connection that moves its bytes. It polls
//! the stream for writing and reading in turn, so a blocked write never
//! stops reading and a slow read never stops writing (MsgTrans 2.0 shared
//! one `select!` between them). It reads a batch, decodes every frame in
//! it (`read`), hands them on (`super::deliver`), and writes everything
//! they produced with one `send`.

mod read;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use super::ctx::SessionCtx;
use super::state::{Announce, SessionState};
use crate::error::CloseReason;
use crate::event::EngineEvent;
use crate::session::handler::InlineHandler;
use crate::session_io::SessionIo;

/// How many read batches a busy session handles before it yields the core
/// to its neighbours.
const READS_PER_POLL: usize = 16;

/// Drives one stream until the session ends; resolves to the reason.
pub(crate) struct Driver<S> {
    ctx: Rc<SessionCtx>,
    /// The application's inline handler, if it has one.
    handler: Option<Arc<dyn InlineHandler>>,
    st: Rc<SessionState>,
    stream: S,
    rbuf: Vec<u8>,
    rpos: usize,
    rlen: usize,
    wbuf: Vec<u8>,
    wpos: usize,
    /// An event waiting for room in the application's queue; while it
    /// waits, the session reads nothing more (backpressure, never loss).
    stalled: Option<flume::r#async::SendFut<'static, EngineEvent>>,
    eof: bool,
    /// A fragmented WebSocket message being reassembled, and whether it
    /// is text.
    #[cfg(feature = "websocket")]
    frag: Option<(Vec<u8>, bool)>,
    /// The payload of the latest ping not yet answered (WebSocket).
    #[cfg(feature = "websocket")]
    pong: Option<Vec<u8>>,
}

impl<S: SessionIo> Driver<S> {
    /// A driver for `stream`; `initial` holds bytes a handshake already
    /// read past its end (the first packets of the session).
    pub fn new(
        ctx: Rc<SessionCtx>,
        handler: Option<Arc<dyn InlineHandler>>,
        st: Rc<SessionState>,
        stream: S,
        initial: &[u8],
    ) -> Self {
        let mut d = Self {
            ctx,
            handler,
            st,
            stream,
            rbuf: Vec::new(),
            rpos: 0,
            rlen: 0,
            wbuf: Vec::new(),
            wpos: 0,
            stalled: None,
            eof: false,
            #[cfg(feature = "websocket")]
            frag: None,
            #[cfg(feature = "websocket")]
            pong: None,
        };
        if !initial.is_empty() {
            let mut b = d.ctx.buffers.get_read(d.ctx.cfg.read_buffer.max(initial.len()));
            b[..initial.len()].copy_from_slice(initial);
            d.rbuf = b;
            d.rlen = initial.len();
        }
        d
    }

    /// The stream, for harnesses that look at what went through it.
    pub(crate) fn stream_ref(&self) -> &S {
        &self.stream
    }

    /// Whether the session may hand packets to the application: not while
    /// an event waits for room, nor before its open event is out.
    fn may_dispatch(&self) -> bool {
        self.stalled.is_none() && self.st.announce.get() != Announce::Pending
    }

    /// Writes until everything queued is out (`Ready(Ok)`), or the socket is full.
    fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // While a ring write holds the batch, `wbuf` is empty: only its
            // completion says how far it got.
            if !self.stream.writing() && self.wpos == self.wbuf.len() {
                let mut out = self.st.out.borrow_mut();
                if out.is_empty() {
                    drop(out);
                    // A layered stream (TLS) may still hold records it
                    // accepted but could not write yet: push them out too.
                    // For a plain socket this is free.
                    match self.stream.poll_flush(cx) {
                        Poll::Ready(Ok(())) => {}
                        Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                        Poll::Pending => {
                            if self.st.stuck_since.get().is_none() {
                                self.st.stuck_since.set(Some(Instant::now()));
                            }
                            return Poll::Pending;
                        }
                    }
                    let mut out = self.st.out.borrow_mut();
                    if !out.is_empty() {
                        continue;
                    }
                    self.st.in_flight.set(0);
                    self.st.stuck_since.set(None);
                    self.st.counters.batch_written();
                    // Idle sessions hold no write buffers.
                    for b in [std::mem::take(&mut self.wbuf), std::mem::take(&mut *out)] {
                        if b.capacity() > 0 {
                            self.ctx.buffers.put(b);
                        }
                    }
                    self.wpos = 0;
                    return Poll::Ready(Ok(()));
                }
                self.wbuf.clear();
                self.wpos = 0;
                std::mem::swap(&mut self.wbuf, &mut *out);
                self.st.in_flight.set(self.wbuf.len());
                self.st.counters.take_batch();
            }
            match self.stream.poll_write(cx, &mut self.wbuf, self.wpos) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => {
                    self.st.stuck_since.set(None);
                    self.wpos += n;
                    self.st.in_flight.set(self.wbuf.len() - self.wpos);
                    self.st.last_active.set(self.ctx.idle_tick());
                    self.st.counters.wrote(&self.ctx.stats, n);
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    if self.st.stuck_since.get().is_none() {
                        self.st.stuck_since.set(Some(Instant::now()));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    fn over_limit(&self) -> bool {
        self.st.queued() >= self.ctx.cfg.max_outbound_bytes
    }
}

/// A session that ends holding its buffers gives them back to the shard's
/// pool. One whose first read brought the end of stream (a client that
/// connects and hangs up at once) ends holding its read buffer; dropped
/// instead, every such connection cost the next one a fresh buffer,
/// zeroed to its full 256 KiB before its first read.
impl<S> Drop for Driver<S> {
    fn drop(&mut self) {
        let rbuf = std::mem::take(&mut self.rbuf);
        if rbuf.capacity() > 0 {
            self.ctx.buffers.put_read(rbuf);
        }
        let wbuf = std::mem::take(&mut self.wbuf);
        if wbuf.capacity() > 0 {
            self.ctx.buffers.put(wbuf);
        }
    }
}

impl<S: SessionIo + Unpin> Future for Driver<S> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.get_mut();
        let mut reads = 0;
        loop {
            let close = this.st.close.borrow_mut().take();
            if let Some(reason) = close {
                // Best effort: whatever the socket takes now goes out.
                let _ = this.poll_flush(cx);
                return Poll::Ready(reason);
            }
            let mut progress = false;

            match this.poll_flush(cx) {
                Poll::Ready(Err(e)) => return Poll::Ready(CloseReason::Io(e.kind())),
                Poll::Ready(Ok(())) if this.eof => {
                    return Poll::Ready(if this.rpos < this.rlen {
                        CloseReason::PeerResetMidFrame
                    } else {
                        CloseReason::PeerClosed
                    })
                }
                _ => {}
            }

            if let Some(fut) = this.stalled.as_mut() {
                // Err means the application dropped its receiver: nobody is
                // left to deliver to.
                if Pin::new(fut).poll(cx).is_ready() {
                    this.stalled = None;
                    this.ctx.turn_bell.later();
                    progress = true;
                }
            }

            // A ring read in flight holds the buffer, and what it held was
            // a partial frame: nothing to process until it completes.
            if this.may_dispatch() && !this.over_limit() && this.rpos < this.rlen && !this.stream.reading() {
                let before = this.rpos;
                match this.process() {
                    // Consumed bytes count as progress even without a packet
                    // (a ping whose pong must now be flushed).
                    Ok(n) => progress |= n > 0 || this.rpos != before,
                    Err(reason) => {
                        // Answers to the valid frames before the bad one (and
                        // a WebSocket close frame) still go out, as far as
                        // the socket takes them now.
                        let _ = this.poll_flush(cx);
                        return Poll::Ready(reason);
                    }
                }
            }

            if !this.eof && this.may_dispatch() && !this.over_limit() && reads < READS_PER_POLL {
                if this.stream.reading() {
                    // The read in flight already has its buffer.
                } else if this.stream.provides_buffers() && this.rpos == this.rlen {
                    // No partial frame: the ring picks a buffer when bytes
                    // arrive, so a waiting session holds none (the ring
                    // takes this one back, or `Pending` releases it below).
                    this.rpos = 0;
                    this.rlen = 0;
                } else if let Err(reason) = this.prepare_read() {
                    let _ = this.poll_flush(cx);
                    return Poll::Ready(reason);
                }
                match this.stream.poll_read(cx, &mut this.rbuf, this.rlen) {
                    Poll::Ready(Ok(0)) => {
                        this.eof = true;
                        progress = true;
                    }
                    Poll::Ready(Ok(n)) => {
                        this.rlen += n;
                        reads += 1;
                        this.st.last_active.set(this.ctx.idle_tick());
                        this.st.counters.read(&this.ctx.stats, n);
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(match e.kind() {
                            io::ErrorKind::ConnectionReset if this.rpos < this.rlen => CloseReason::PeerResetMidFrame,
                            kind => CloseReason::Io(kind),
                        })
                    }
                    Poll::Pending => this.release_read_buffer(),
                }
            } else if reads >= READS_PER_POLL {
                // Busy session: let the others on this core run.
                this.st.counters.report_queue(&this.ctx.stats, this.st.queued());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }

            if !progress && this.st.drained() && this.stalled.is_none() && this.rpos == this.rlen {
                return Poll::Ready(CloseReason::Shutdown);
            }
            // Room may have appeared: let waiting sends in, and tell other
            // threads how full the queue is.
            this.st.admit_waiters(&this.ctx);
            this.ctx.mesh.tables[this.ctx.index].set_queued(this.st.id, this.st.queued());
            this.st.counters.report_queue(&this.ctx.stats, this.st.queued());
            if !progress {
                let mut w = this.st.waker.borrow_mut();
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                return Poll::Pending;
            }
        }
    }
}
