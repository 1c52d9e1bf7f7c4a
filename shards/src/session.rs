//! One connection: its shared state (outbound queue, pending requests, close
//! request) and the driver future that moves its bytes.
//!
//! The driver is a single future per connection that polls the socket for
//! writing and reading in turn, so a blocked write never stops reading and a
//! slow read never stops writing (MsgTrans 2.0 shared one `select!` between
//! them). It reads a batch, decodes every frame in it, dispatches them, and
//! writes everything they produced with one `send`.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::Bytes;

use crate::codec::{self, FrameRef};
use crate::config::EngineConfig;
use crate::error::{CloseReason, CodecError, SendError, Violation};
use crate::event::{EngineEvent, ReplyTx};
use crate::handler::Inline;
use crate::id::SessionId;
use crate::packet::{CompressionType, Packet, PacketType};
#[cfg(feature = "websocket")]
use crate::proto::ws;
use crate::pump::Announce;
use crate::session_io::SessionIo;
use crate::shard::Shard;
use crate::stats::{Protocol, SessionCounters};
use crate::wire::Wire;
#[cfg(feature = "quic")]
use crate::wire::QUIC_PREFIX;

/// How many read batches a busy session handles before it yields the core
/// to its neighbours.
const READS_PER_POLL: usize = 16;
/// Free space below which the read buffer is compacted before a read.
const MIN_READ_SPACE: usize = 4096;

/// A request waiting for its response.
pub(crate) struct PendingRequest {
    pub reply: ReplyTx,
    pub deadline: Instant,
}

/// Session state shared between the slab (for senders) and the driver.
pub(crate) struct SessionState {
    pub id: SessionId,
    /// How packets are framed on this session's stream.
    pub wire: Wire,
    /// Encoded frames waiting for the driver to write them.
    pub out: RefCell<Vec<u8>>,
    /// Bytes the driver has taken from `out` and not yet written.
    pub in_flight: Cell<usize>,
    waker: RefCell<Option<Waker>>,
    close: RefCell<Option<CloseReason>>,
    pub pending: RefCell<HashMap<u32, PendingRequest>>,
    next_request: Cell<u32>,
    /// Whether the application was told this session opened; only then is
    /// it told that it closed.
    pub announce: Cell<Announce>,
    /// Callers of `close` waiting for the session to be gone.
    pub close_waiters: RefCell<Vec<flume::Sender<bool>>>,
    /// The shard's idle tick when bytes last moved.
    pub last_active: Cell<u64>,
    /// Requests from the peer handed to the application and not yet answered.
    unanswered: Cell<usize>,
    /// Empty packets from the peer in the current one-second window, and
    /// when that window began (its first empty packet).
    empties: Cell<usize>,
    empties_since: Cell<Option<Instant>>,
    /// Set by a graceful shutdown: close once nothing is in flight.
    draining: Cell<bool>,
    /// Sends waiting for room, in order; later sends queue behind them.
    waiters: RefCell<std::collections::VecDeque<Waiter>>,
    /// When queued output last stopped moving (None: it is moving).
    pub stuck_since: Cell<Option<Instant>>,
    /// Traffic and queue depth, for `session_stats` and the shard's gauges.
    pub counters: SessionCounters,
    /// Whether the handler's `on_open` ran, so `on_close` runs exactly
    /// when it did.
    pub handler_opened: Cell<bool>,
}

/// A send waiting for room in the outbound queue.
pub(crate) struct Waiter {
    pub packet: Packet,
    /// Deadline and reply for `send`; `None` for a send that must merely
    /// keep its place in line.
    pub wait: Option<(Instant, flume::Sender<Result<(), SendError>>)>,
    /// Slot-table bytes its sender reserved, held while it waits so that
    /// sends behind it cannot pile up unbounded.
    pub reserved: usize,
}

impl SessionState {
    pub fn new(id: SessionId, wire: Wire) -> Rc<Self> {
        Rc::new(Self {
            id,
            wire,
            out: RefCell::new(Vec::new()),
            in_flight: Cell::new(0),
            waker: RefCell::new(None),
            close: RefCell::new(None),
            pending: RefCell::new(HashMap::new()),
            next_request: Cell::new(1),
            announce: Cell::new(Announce::Silent),
            close_waiters: RefCell::new(Vec::new()),
            last_active: Cell::new(0),
            unanswered: Cell::new(0),
            empties: Cell::new(0),
            empties_since: Cell::new(None),
            draining: Cell::new(false),
            waiters: RefCell::new(std::collections::VecDeque::new()),
            stuck_since: Cell::new(None),
            counters: SessionCounters::new(Protocol::of(wire, false)),
            handler_opened: Cell::new(false),
        })
    }

    /// Counts a packet from the peer about to be handed to the application,
    /// and refuses it if the peer is abusing the session. The per-packet
    /// cost is a counter compare; the clock is read once per window.
    #[inline]
    pub fn note_received(&self, frame: &FrameRef<'_>, cfg: &EngineConfig) -> Result<(), Violation> {
        let kind = frame.header.packet_type;
        if kind == PacketType::Request {
            let n = self.unanswered.get() + 1;
            self.unanswered.set(n);
            if n > cfg.max_unanswered_requests {
                return Err(Violation::UnansweredRequests {
                    max: cfg.max_unanswered_requests,
                });
            }
        }
        // Responses answer our own requests, which `max_inflight_requests`
        // already bounds; an empty one is an ordinary acknowledgement.
        if kind != PacketType::Response && frame.payload.is_empty() && frame.ext_header.is_empty() {
            self.note_empty(cfg.max_empty_packets_per_sec, Instant::now)?;
        }
        Ok(())
    }

    /// One more empty packet: `max` of them fit a window that began with
    /// the first; one more within a second of that is a flood, one later
    /// begins the next window.
    fn note_empty(&self, max: usize, clock: impl Fn() -> Instant) -> Result<(), Violation> {
        let n = self.empties.get();
        if n == 0 {
            self.empties_since.set(Some(clock()));
        } else if n >= max {
            let now = clock();
            if self
                .empties_since
                .get()
                .is_some_and(|t| now.duration_since(t) < std::time::Duration::from_secs(1))
            {
                return Err(Violation::EmptyPacketFlood { max });
            }
            self.empties_since.set(Some(now));
            self.empties.set(1);
            return Ok(());
        }
        self.empties.set(n + 1);
        Ok(())
    }

    /// Counts a packet queued for the peer, and an answer to one of the
    /// peer's requests.
    #[inline]
    pub fn note_sent(&self, shard: &Shard, header: &crate::packet::FixedHeader) {
        self.counters.queued(&shard.stats);
        if header.packet_type == PacketType::Response {
            self.unanswered.set(self.unanswered.get().saturating_sub(1));
        }
    }

    /// Counts a request of the peer's that will never be answered, and
    /// lets a draining session see whether that was the last thing it
    /// waited for.
    pub fn note_abandoned(&self) {
        self.unanswered.set(self.unanswered.get().saturating_sub(1));
        self.wake();
    }

    /// Starts a graceful close: the session keeps serving until nothing is
    /// in flight, then closes with `Shutdown`.
    pub fn start_draining(&self) {
        self.draining.set(true);
        self.wake();
    }

    /// Whether a draining session has nothing left in flight.
    fn drained(&self) -> bool {
        self.draining.get() && self.pending.borrow().is_empty() && self.unanswered.get() == 0 && self.queued() == 0
    }

    /// Called by the event pump once the open event is out.
    pub fn announce_done(&self) {
        self.announce.set(Announce::Done);
        self.wake();
    }

    /// Bytes accepted for this session and not yet written to the socket.
    pub fn queued(&self) -> usize {
        self.out.borrow().len() + self.in_flight.get()
    }

    pub fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Asks the driver to end the session. The first reason wins.
    pub fn request_close(&self, reason: CloseReason) {
        let mut c = self.close.borrow_mut();
        if c.is_none() {
            *c = Some(reason);
        }
        drop(c);
        self.wake();
    }

    /// Whether `len` more bytes fit the outbound limit (one packet always
    /// fits an empty queue, however big).
    fn has_room(&self, shard: &Shard, len: usize) -> bool {
        self.queued() == 0 || self.queued() + len <= shard.cfg.max_outbound_bytes
    }

    /// Offers a packet from a `Send` command: queued now if there is room
    /// (or bytes reserved for it) and nobody waits ahead of it; otherwise
    /// it waits in line (a `send` with a deadline, or any send behind one),
    /// or is refused.
    ///
    /// `reserved` slot-table bytes (from a send on another thread) are
    /// released once the packet is queued or refused.
    pub fn offer(
        &self,
        shard: &Shard,
        packet: Packet,
        wait: Option<(Instant, flume::Sender<Result<(), SendError>>)>,
        reserved: usize,
    ) -> Result<(), (Packet, SendError)> {
        let mut waiters = self.waiters.borrow_mut();
        // A reservation is a promise: its bytes were counted against the
        // limit when the send was accepted, so a queue that has since grown
        // from sends that reserve nothing (relays, responses) must not turn
        // it into a refusal after the fact.
        if waiters.is_empty() && (reserved > 0 || self.has_room(shard, packet.wire_len())) {
            drop(waiters);
            let r = self.push(shard, &packet);
            shard.release(self.id, reserved);
            if let Some((_, reply)) = wait {
                let _ = reply.send(r.clone());
            }
            return r.map_err(|e| (packet, e));
        }
        if wait.is_some() || !waiters.is_empty() {
            waiters.push_back(Waiter { packet, wait, reserved });
            shard.waiting_sends.set(shard.waiting_sends.get() + 1);
            shard.wake_sweeper();
            return Ok(());
        }
        shard.release(self.id, reserved);
        Err((packet, SendError::Backpressure(self.id)))
    }

    /// Moves waiting sends into the queue as room appears.
    pub fn admit_waiters(&self, shard: &Shard) {
        loop {
            let mut waiters = self.waiters.borrow_mut();
            let Some(front) = waiters.front() else { return };
            if !self.has_room(shard, front.packet.wire_len()) {
                return;
            }
            let w = waiters.pop_front().expect("front exists");
            drop(waiters);
            shard.waiting_sends.set(shard.waiting_sends.get() - 1);
            let r = self.enqueue(shard, &w.packet);
            shard.release(self.id, w.reserved);
            if let Some((_, reply)) = w.wait {
                let _ = reply.send(r);
            }
        }
    }

    /// Fails waiting sends past their deadline, and everything behind the
    /// first one that failed (order is kept: nothing overtakes).
    pub fn expire_waiters(&self, shard: &Shard, now: Instant) -> usize {
        let mut waiters = self.waiters.borrow_mut();
        let expired = waiters
            .front()
            .and_then(|w| w.wait.as_ref())
            .is_some_and(|(d, _)| *d <= now);
        if expired {
            for w in waiters.drain(..) {
                shard.waiting_sends.set(shard.waiting_sends.get() - 1);
                shard.release(self.id, w.reserved);
                match w.wait {
                    Some((_, reply)) => {
                        let _ = reply.send(Err(SendError::Backpressure(self.id)));
                    }
                    None => shard.send_failed(self.id, &w.packet, SendError::Backpressure(self.id)),
                }
            }
        }
        waiters.len()
    }

    /// Fails every waiting send: the session is gone.
    pub fn fail_waiters(&self, shard: &Shard, reason: &CloseReason) {
        for w in self.waiters.borrow_mut().drain(..) {
            shard.waiting_sends.set(shard.waiting_sends.get() - 1);
            shard.release(self.id, w.reserved);
            if let Some((_, reply)) = w.wait {
                let _ = reply.send(Err(SendError::ConnectionClosed(reason.clone())));
            }
        }
    }

    /// Queues `packet`, refusing it if the outbound limit would be passed.
    pub fn enqueue(&self, shard: &Shard, packet: &Packet) -> Result<(), SendError> {
        if !self.has_room(shard, packet.wire_len()) {
            return Err(SendError::Backpressure(self.id));
        }
        self.push(shard, packet)
    }

    /// Queues `packet` whatever the limit says (its room was checked).
    fn push(&self, shard: &Shard, packet: &Packet) -> Result<(), SendError> {
        let len = packet.wire_len();
        let mut out = self.out.borrow_mut();
        shard.prepare_out(&mut out, len);
        self.wire.write_packet(
            &shard.cfg,
            &mut out,
            &packet.header,
            &packet.ext_header,
            &packet.payload,
        )?;
        drop(out);
        self.note_sent(shard, &packet.header);
        shard.mesh.tables[shard.index].set_queued(self.id, self.queued());
        self.wake();
        Ok(())
    }

    /// A fresh request id for this session: wraps at `u32::MAX`, skips 0 and
    /// any id still waiting for its response.
    pub fn next_request_id(&self) -> u32 {
        let pending = self.pending.borrow();
        loop {
            let id = self.next_request.get();
            self.next_request.set(id.wrapping_add(1).max(1));
            if id != 0 && !pending.contains_key(&id) {
                return id;
            }
        }
    }

    /// Fails every pending request with `reason`.
    pub fn fail_pending(&self, reason: &CloseReason) {
        for (_, p) in self.pending.borrow_mut().drain() {
            let _ = p.reply.send(Err(SendError::ConnectionClosed(reason.clone())));
        }
    }
}

/// Drives one stream until the session ends; resolves to the reason.
pub(crate) struct Driver<S> {
    shard: Rc<Shard>,
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
}

impl<S: SessionIo> Driver<S> {
    /// A driver for `stream`; `initial` holds bytes a handshake already
    /// read past its end (the first packets of the session).
    pub fn new(shard: Rc<Shard>, st: Rc<SessionState>, stream: S, initial: &[u8]) -> Self {
        let mut d = Self {
            shard,
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
        };
        if !initial.is_empty() {
            let mut b = d.shard.buffers.get_read(d.shard.cfg.read_buffer.max(initial.len()));
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
                            self.shard.buffers.put(b);
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
                    self.st.last_active.set(self.shard.idle_tick());
                    self.st.counters.wrote(&self.shard.stats, n);
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
        self.st.queued() >= self.shard.cfg.max_outbound_bytes
    }

    /// Makes room to read: reuses, compacts or grows the read buffer so the
    /// partial frame at its head fits whole.
    fn prepare_read(&mut self) -> Result<(), CloseReason> {
        if self.rpos == self.rlen {
            self.rpos = 0;
            self.rlen = 0;
        }
        if self.rbuf.is_empty() {
            self.rbuf = self.shard.buffers.get_read(self.shard.cfg.read_buffer);
        }
        let need = self.need()?;
        if self.rbuf.len() - self.rpos < need || self.rbuf.len() - self.rlen < MIN_READ_SPACE {
            self.rbuf.copy_within(self.rpos..self.rlen, 0);
            self.rlen -= self.rpos;
            self.rpos = 0;
        }
        if self.rbuf.len() < need {
            // The frame's length passed its limit check in `need`.
            self.rbuf.resize(need, 0);
        }
        Ok(())
    }

    /// Bytes the frame at the head of the read buffer needs in all, once
    /// its header is known and within the limits.
    fn need(&mut self) -> Result<usize, CloseReason> {
        let buf = &self.rbuf[self.rpos..self.rlen];
        match self.st.wire {
            Wire::Tcp => match codec::decode_header(buf, &self.shard.cfg.frame) {
                Ok(Some((_, frame_len))) => Ok(frame_len),
                Ok(None) => Ok(codec::HEADER_LEN),
                Err(e) => Err(CloseReason::ProtocolError(e)),
            },
            #[cfg(feature = "quic")]
            Wire::Quic => match quic_frame(buf, &self.shard.cfg.frame) {
                Ok(Some(n)) => Ok(n),
                Ok(None) => Ok(QUIC_PREFIX + codec::HEADER_LEN),
                Err(e) => Err(CloseReason::ProtocolError(e)),
            },
            #[cfg(feature = "websocket")]
            Wire::WsServer | Wire::WsClient => self.need_ws(),
        }
    }

    #[cfg(feature = "websocket")]
    fn need_ws(&mut self) -> Result<usize, CloseReason> {
        let buf = &self.rbuf[self.rpos..self.rlen];
        let mut out = self.st.out.borrow_mut();
        match ws::frame_header(
            buf,
            self.st.wire,
            &self.shard.cfg,
            self.frag.as_ref().map_or(0, |f| f.0.len()),
        ) {
            Ok(Some((hlen, len, _))) => Ok(hlen + len),
            Ok(None) => Ok(ws::MAX_HEADER),
            Err(code) => Err(ws::fail(&mut out, self.st.wire, code)),
        }
    }

    fn release_read_buffer(&mut self) {
        if self.rpos == self.rlen && !self.rbuf.is_empty() {
            self.shard.buffers.put_read(std::mem::take(&mut self.rbuf));
            self.rpos = 0;
            self.rlen = 0;
        }
    }

    /// Decodes and dispatches every complete frame in the read buffer.
    fn process(&mut self) -> Result<usize, CloseReason> {
        let shard = Rc::clone(&self.shard);
        let frames = match self.st.wire {
            Wire::Tcp => self.process_tcp(&shard),
            #[cfg(feature = "quic")]
            Wire::Quic => self.process_quic(&shard),
            #[cfg(feature = "websocket")]
            Wire::WsServer | Wire::WsClient => self.process_ws(&shard),
        };
        shard.flush_outgoing();
        let frames = frames?;
        self.st.counters.received(&shard.stats, frames as u64);
        Ok(frames)
    }

    /// Packets back to back: decoded where they lie in the read buffer.
    fn process_tcp(&mut self, shard: &Rc<Shard>) -> Result<usize, CloseReason> {
        let limits = shard.cfg.frame;
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let Some((frame, n)) =
                codec::decode_ref(&self.rbuf[self.rpos..self.rlen], &limits).map_err(CloseReason::ProtocolError)?
            else {
                break;
            };
            frames += 1;
            self.rpos += n;
            deliver(shard, &self.st, &mut self.stalled, &frame, &mut out)?;
            if out.len() + self.st.in_flight.get() >= shard.cfg.max_outbound_bytes {
                break;
            }
        }
        Ok(frames)
    }

    /// Length-prefixed packets (QUIC streams): decoded where they lie.
    #[cfg(feature = "quic")]
    fn process_quic(&mut self, shard: &Rc<Shard>) -> Result<usize, CloseReason> {
        let limits = shard.cfg.frame;
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let buf = &self.rbuf[self.rpos..self.rlen];
            let Some(n) = quic_frame(buf, &limits).map_err(CloseReason::ProtocolError)? else {
                break;
            };
            if buf.len() < n {
                break;
            }
            let (frame, _) = codec::decode_ref(&buf[QUIC_PREFIX..n], &limits)
                .map_err(CloseReason::ProtocolError)?
                .expect("quic_frame checked the packet is whole");
            frames += 1;
            self.rpos += n;
            deliver(shard, &self.st, &mut self.stalled, &frame, &mut out)?;
            if out.len() + self.st.in_flight.get() >= shard.cfg.max_outbound_bytes {
                break;
            }
        }
        Ok(frames)
    }

    /// One packet per WebSocket message: frames are unmasked in place and
    /// a whole message is decoded where it lies; only fragmented messages
    /// are copied, to be reassembled.
    #[cfg(feature = "websocket")]
    fn process_ws(&mut self, shard: &Rc<Shard>) -> Result<usize, CloseReason> {
        let wire = self.st.wire;
        let limits = shard.cfg.frame;
        let mut frames = 0;
        let mut out = self.st.out.borrow_mut();
        while self.rpos < self.rlen && self.stalled.is_none() {
            let buf = &self.rbuf[self.rpos..self.rlen];
            let frag_len = self.frag.as_ref().map_or(0, |f| f.0.len());
            let (hlen, len, h) = match ws::frame_header(buf, wire, &shard.cfg, frag_len) {
                Ok(Some(x)) => x,
                Ok(None) => break,
                Err(code) => return Err(ws::fail(&mut out, wire, code)),
            };
            if buf.len() < hlen + len {
                break;
            }
            let (start, end) = (self.rpos + hlen, self.rpos + hlen + len);
            if let Some(mask) = h.mask {
                crate::wire::apply_mask(&mut self.rbuf[start..end], mask, 0);
            }
            self.rpos = end;
            let payload = &self.rbuf[start..end];
            let message = match ws::classify(&h, &mut self.frag, payload, &mut out, wire)? {
                ws::Step::Continue => continue,
                ws::Step::Message(text) => (payload, text),
                ws::Step::Reassembled => {
                    // The whole message is in `frag`; deliver it from there.
                    let (msg, text) = self.frag.take().expect("reassembled message");
                    frames += 1;
                    let frame = ws::message_frame(&msg, text, &limits).map_err(|e| ws::fail_with(&mut out, wire, e))?;
                    deliver(shard, &self.st, &mut self.stalled, &frame, &mut out)
                        .map_err(|r| ws::closing(&mut out, wire, r))?;
                    continue;
                }
            };
            frames += 1;
            let frame =
                ws::message_frame(message.0, message.1, &limits).map_err(|e| ws::fail_with(&mut out, wire, e))?;
            deliver(shard, &self.st, &mut self.stalled, &frame, &mut out)
                .map_err(|r| ws::closing(&mut out, wire, r))?;
            if out.len() + self.st.in_flight.get() >= shard.cfg.max_outbound_bytes {
                break;
            }
        }
        Ok(frames)
    }
}

/// The length of the length-prefixed packet at the start of `buf`,
/// prefix included, once its header is known: `Ok(None)` needs more bytes.
/// The prefix must agree with the packet's own header.
#[cfg(feature = "quic")]
fn quic_frame(buf: &[u8], limits: &codec::FrameLimits) -> Result<Option<usize>, crate::error::CodecError> {
    if buf.len() < QUIC_PREFIX + codec::HEADER_LEN {
        return Ok(None);
    }
    let prefix = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let Some((_, frame_len)) = codec::decode_header(&buf[QUIC_PREFIX..], limits)? else {
        return Ok(None);
    };
    if prefix as usize != frame_len {
        return Err(crate::error::CodecError::PrefixMismatch {
            prefix,
            packet: frame_len as u32,
        });
    }
    Ok(Some(QUIC_PREFIX + frame_len))
}

type Stalled = Option<flume::r#async::SendFut<'static, EngineEvent>>;

/// Hands one packet to the handler or the application, its payload
/// decompressed first if its header says so; if the event queue is full
/// the event waits in `stalled` and the session reads no further.
///
/// # Errors
/// A packet that breaks the abuse policy (`PolicyViolation`), or a
/// compressed payload that is corrupt or inflates past the payload limit
/// (`ProtocolError`): the packet is not delivered and the session ends.
#[inline(always)]
fn deliver(
    shard: &Shard,
    st: &SessionState,
    stalled: &mut Stalled,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CloseReason> {
    st.note_received(frame, &shard.cfg)
        .map_err(CloseReason::PolicyViolation)?;
    // The uncompressed fast path pays this one compare.
    if frame.header.compression != CompressionType::None {
        return deliver_compressed(shard, st, stalled, frame, out).map_err(CloseReason::ProtocolError);
    }
    deliver_plain(shard, st, stalled, frame, out);
    Ok(())
}

/// Decompresses into the shard's buffer (bounded by the payload limit)
/// and delivers the plain payload. The header keeps its compression byte,
/// so the application can see how the packet travelled; its payload length
/// becomes the plain one.
#[cold]
fn deliver_compressed(
    shard: &Shard,
    st: &SessionState,
    stalled: &mut Stalled,
    frame: &FrameRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    let FrameRef {
        mut header,
        ext_header,
        payload,
    } = frame.clone();
    let max = shard.cfg.frame.max_payload;
    crate::compress::with_decompressed(header.compression, payload, max, |plain| {
        header.payload_len = plain.len() as u32;
        let frame = FrameRef {
            header,
            ext_header,
            payload: plain,
        };
        deliver_plain(shard, st, stalled, &frame, out)
    })
}

#[inline(always)]
fn deliver_plain(shard: &Shard, st: &SessionState, stalled: &mut Stalled, frame: &FrameRef<'_>, out: &mut Vec<u8>) {
    if let Some(ev) = dispatch(shard, st, frame, out) {
        match shard.sink.tx.try_send(ev) {
            Ok(()) => shard.turn_bell.later(),
            Err(flume::TrySendError::Full(ev)) => *stalled = Some(shard.sink.tx.clone().into_send_async(ev)),
            Err(flume::TrySendError::Disconnected(_)) => {}
        }
    }
}

/// Routes one decoded frame. Returns the event to deliver, if any.
#[inline(always)]
fn dispatch(shard: &Shard, st: &SessionState, frame: &FrameRef<'_>, out: &mut Vec<u8>) -> Option<EngineEvent> {
    if frame.header.packet_type == PacketType::Response {
        let waiting = st.pending.borrow_mut().remove(&frame.header.message_id);
        if let Some(p) = waiting {
            let _ = p.reply.send(Ok(shard.to_packet(frame)));
            shard.stats.requests_in_flight.add(-1);
            return None;
        }
        // An unmatched response (late, or unsolicited) is still delivered.
    }
    if let Some(h) = &shard.handler {
        h.on_message(&mut Inline {
            id: st.id,
            frame,
            out,
            shard,
            st,
        });
        return None;
    }
    Some(EngineEvent::Message {
        id: st.id,
        packet: shard.to_packet(frame),
    })
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
                    this.shard.turn_bell.later();
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
                        this.st.last_active.set(this.shard.idle_tick());
                        this.st.counters.read(&this.shard.stats, n);
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
                this.st.counters.report_queue(&this.shard.stats, this.st.queued());
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }

            if !progress && this.st.drained() && this.stalled.is_none() && this.rpos == this.rlen {
                return Poll::Ready(CloseReason::Shutdown);
            }
            // Room may have appeared: let waiting sends in, and tell other
            // threads how full the queue is.
            this.st.admit_waiters(&this.shard);
            this.shard.mesh.tables[this.shard.index].set_queued(this.st.id, this.st.queued());
            this.st.counters.report_queue(&this.shard.stats, this.st.queued());
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

/// Owned copy of a frame for delivery off the fast path (events, replies),
/// in pooled buffers that return to this shard when dropped.
pub(crate) fn pooled_packet(pool: &std::sync::Arc<crate::pool::buffer::BufferPool>, frame: &FrameRef<'_>) -> Packet {
    let copy = |b: &[u8]| {
        if b.is_empty() {
            Bytes::new()
        } else {
            pool.copy_to_bytes(b)
        }
    };
    Packet {
        header: frame.header.clone(),
        ext_header: copy(frame.ext_header),
        payload: copy(frame.payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state() -> Rc<SessionState> {
        SessionState::new(SessionId::from_parts(0, 0, 0), Wire::Tcp)
    }

    #[test]
    fn a_reserved_send_is_queued_even_if_unreserved_sends_filled_the_queue_since() {
        let cfg = crate::config::EngineConfig {
            max_outbound_bytes: 1000,
            ..Default::default()
        };
        let shard = crate::testing::lone_shard(cfg, None);
        let st = shard.admit(Wire::Tcp).expect("a free slot");
        let table = &shard.mesh.tables[0];
        // Another thread's try_send reserves while the queue is empty...
        let accepted = Packet::one_way(1, vec![1u8; 200]);
        assert!(table.try_reserve(st.id, accepted.wire_len(), 1000));
        // ...then a relay from another shard (which reserves nothing) takes
        // most of the room before the shard reaches the accepted packet.
        st.offer(&shard, Packet::one_way(2, vec![2u8; 900]), None, 0)
            .map_err(|(_, e)| e)
            .expect("the relay fits an empty queue");
        assert!(!st.has_room(&shard, accepted.wire_len()), "the queue is full now");
        let len = accepted.wire_len();
        st.offer(&shard, accepted, None, len)
            .map_err(|(_, e)| e)
            .expect("an accepted send is never refused later");
        assert_eq!(st.queued(), 916 + 216);
        assert_eq!(table.reserved(st.id), 0, "the reservation was released");
        // An unreserved send still meets the limit.
        let r = st.offer(&shard, Packet::one_way(3, vec![3u8; 10]), None, 0);
        assert!(matches!(r, Err((_, SendError::Backpressure(_)))));
    }

    #[test]
    fn empty_packets_past_the_limit_within_a_second_are_a_flood() {
        let st = state();
        let t0 = Instant::now();
        for _ in 0..3 {
            st.note_empty(3, || t0).unwrap();
        }
        let late = t0 + Duration::from_millis(999);
        assert_eq!(st.note_empty(3, || late), Err(Violation::EmptyPacketFlood { max: 3 }));
    }

    #[test]
    fn empty_packets_at_the_limit_every_second_never_trip() {
        let st = state();
        let t0 = Instant::now();
        for second in 0..5u64 {
            let t = t0 + Duration::from_millis(1000 * second + 10);
            for _ in 0..3 {
                assert_eq!(st.note_empty(3, || t), Ok(()), "second {second}");
            }
        }
    }
}
