//! One session's state, shared between the shard's table (for senders)
//! and its driver: the outbound queue and the sends waiting for room in
//! it, the requests waiting for responses, and the limits on what the peer
//! may do. It knows no socket and no shard: what it needs of its shard
//! comes in as a [`SessionCtx`], and times are arguments or read where a
//! limit needs them.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::task::Waker;
use std::time::Instant;

use super::ctx::SessionCtx;
use crate::codec::FrameRef;
use crate::config::EngineConfig;
use crate::error::{CloseReason, SendError, Violation};
use crate::event::ReplyTx;
use crate::id::SessionId;
use crate::packet::{Packet, PacketType};
use crate::pump::Announced;
use crate::stats::{Protocol, SessionCounters};
use crate::wire::Wire;

/// Whether a session's open event has reached the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Announce {
    /// Lifecycle events were off when it opened: no open or close event.
    Silent,
    /// The open event waits in the pump; the session reads nothing yet.
    Pending,
    /// The open event is out (or given up at shutdown): a close event follows.
    Done,
}

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
    pub(super) waker: RefCell<Option<Waker>>,
    pub(super) close: RefCell<Option<CloseReason>>,
    pub pending: RefCell<HashMap<u32, PendingRequest>>,
    /// Listed in the ctx's `deadlines` (it has, or had since the last
    /// sweep, requests or waiting sends with a deadline).
    pub(crate) in_deadlines: Cell<bool>,
    next_request: Cell<u32>,
    /// Whether the application was told this session opened; only then is
    /// it told that it closed.
    pub announce: Cell<Announce>,
    /// Callers of `close` waiting for the session to be gone.
    pub close_waiters: RefCell<Vec<flume::Sender<bool>>>,
    /// The ctx's idle tick when bytes last moved.
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
    /// Traffic and queue depth, for `session_stats` and the ctx's gauges.
    pub counters: SessionCounters,
    /// Whether the handler's `on_open` ran, so `on_close` runs exactly
    /// when it did.
    pub handler_opened: Cell<bool>,
    /// The peer's address, counted against its per-address limits until
    /// the session ends (`None`: a connection we opened).
    pub peer_ip: Cell<Option<std::net::IpAddr>>,
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
            in_deadlines: Cell::new(false),
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
            peer_ip: Cell::new(None),
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
    pub(crate) fn note_empty(&self, max: usize, clock: impl Fn() -> Instant) -> Result<(), Violation> {
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
    pub fn note_sent(&self, ctx: &SessionCtx, header: &crate::packet::FixedHeader) {
        self.counters.queued(&ctx.stats);
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
    pub(super) fn drained(&self) -> bool {
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
    pub(crate) fn has_room(&self, ctx: &SessionCtx, len: usize) -> bool {
        self.queued() == 0 || self.queued() + len <= ctx.cfg.max_outbound_bytes
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
        ctx: &SessionCtx,
        packet: Packet,
        wait: Option<(Instant, flume::Sender<Result<(), SendError>>)>,
        reserved: usize,
    ) -> Result<(), (Packet, SendError)> {
        let mut waiters = self.waiters.borrow_mut();
        // A reservation is a promise: its bytes were counted against the
        // limit when the send was accepted, so a queue that has since grown
        // from sends that reserve nothing (relays, responses) must not turn
        // it into a refusal after the fact.
        if waiters.is_empty() && (reserved > 0 || self.has_room(ctx, packet.wire_len())) {
            drop(waiters);
            let r = self.push(ctx, &packet);
            ctx.release(self.id, reserved);
            if let Some((_, reply)) = wait {
                let _ = reply.send(r.clone());
            }
            return r.map_err(|e| (packet, e));
        }
        if wait.is_some() || !waiters.is_empty() {
            waiters.push_back(Waiter { packet, wait, reserved });
            ctx.waiting_sends.set(ctx.waiting_sends.get() + 1);
            self.watch_deadlines(ctx);
            ctx.wake_sweeper();
            return Ok(());
        }
        ctx.release(self.id, reserved);
        Err((packet, SendError::Backpressure(self.id)))
    }

    /// Moves waiting sends into the queue as room appears.
    pub fn admit_waiters(&self, ctx: &SessionCtx) {
        loop {
            let mut waiters = self.waiters.borrow_mut();
            let Some(front) = waiters.front() else { return };
            if !self.has_room(ctx, front.packet.wire_len()) {
                return;
            }
            let w = waiters.pop_front().expect("front exists");
            drop(waiters);
            ctx.waiting_sends.set(ctx.waiting_sends.get() - 1);
            let r = self.enqueue(ctx, &w.packet);
            ctx.release(self.id, w.reserved);
            if let Some((_, reply)) = w.wait {
                let _ = reply.send(r);
            }
        }
    }

    /// Lists this session for the deadline sweeper, once: it now has a
    /// request or a waiting send with a deadline. The sweeper visits only
    /// listed sessions, so its cost follows the sessions with something
    /// pending, not every session the shard holds.
    pub fn watch_deadlines(&self, ctx: &SessionCtx) {
        if !self.in_deadlines.replace(true) {
            ctx.deadlines.borrow_mut().push(self.id);
        }
    }

    /// Fails waiting sends past their deadline, and everything behind the
    /// first one that failed (order is kept: nothing overtakes).
    pub fn expire_waiters(&self, ctx: &SessionCtx, now: Instant) -> usize {
        let mut waiters = self.waiters.borrow_mut();
        let expired = waiters
            .front()
            .and_then(|w| w.wait.as_ref())
            .is_some_and(|(d, _)| *d <= now);
        if expired {
            for w in waiters.drain(..) {
                ctx.waiting_sends.set(ctx.waiting_sends.get() - 1);
                ctx.release(self.id, w.reserved);
                match w.wait {
                    Some((_, reply)) => {
                        let _ = reply.send(Err(SendError::Backpressure(self.id)));
                    }
                    None => ctx.send_failed(self.id, &w.packet, SendError::Backpressure(self.id)),
                }
            }
        }
        waiters.len()
    }

    /// Fails every waiting send: the session is gone.
    pub fn fail_waiters(&self, ctx: &SessionCtx, reason: &CloseReason) {
        for w in self.waiters.borrow_mut().drain(..) {
            ctx.waiting_sends.set(ctx.waiting_sends.get() - 1);
            ctx.release(self.id, w.reserved);
            if let Some((_, reply)) = w.wait {
                let _ = reply.send(Err(SendError::ConnectionClosed(reason.clone())));
            }
        }
    }

    /// Queues `packet`, refusing it if the outbound limit would be passed.
    pub fn enqueue(&self, ctx: &SessionCtx, packet: &Packet) -> Result<(), SendError> {
        if !self.has_room(ctx, packet.wire_len()) {
            return Err(SendError::Backpressure(self.id));
        }
        self.push(ctx, packet)
    }

    /// Queues `packet` whatever the limit says (its room was checked).
    fn push(&self, ctx: &SessionCtx, packet: &Packet) -> Result<(), SendError> {
        let len = packet.wire_len();
        let mut out = self.out.borrow_mut();
        ctx.prepare_out(&mut out, len);
        self.wire
            .write_packet(&ctx.cfg, &mut out, &packet.header, &packet.ext_header, &packet.payload)?;
        drop(out);
        self.note_sent(ctx, &packet.header);
        ctx.mesh.tables[ctx.index].set_queued(self.id, self.queued());
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

impl Announced for SessionState {
    fn announced(&self) {
        self.announce_done();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn state() -> Rc<SessionState> {
        SessionState::new(SessionId::from_parts(0, 0, 0, 0), Wire::Tcp)
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
