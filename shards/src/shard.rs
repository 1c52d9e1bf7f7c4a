//! One shard: everything a pinned core owns — its sessions, its buffers,
//! its listeners — and the loop that serves its inbox.

use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::codec::FrameRef;
use crate::config::EngineConfig;
use crate::error::{CloseReason, SendError, StartError};
use crate::event::{Command, EngineEvent, ReplyTx};
use crate::handler::InlineHandler;
use crate::id::SessionId;
use crate::mesh::{Inbox, Outbox};
use crate::packet::{Packet, PacketType};
use crate::pool::buffer::{BufferPool, MEDIUM};
use crate::pool::hot::HotBuffers;
use crate::pool::slab::{Slab, SlotTable};
#[cfg(feature = "quic")]
use crate::proto::quic::endpoint::Endpoint as QuicEndpoint;
use crate::proto::{Accept, Dial};
use crate::pump::{Announce, EventPump};
use crate::ring::ShardRing;
use crate::session::{pooled_packet, PendingRequest, SessionState};
use crate::stats::ShardStats;
use crate::turn_bell::TurnBell;
use crate::wire::Wire;

/// How often pending requests are checked for their deadline while any are
/// pending. Timeouts fire at most this late.
const REQUEST_SWEEP: Duration = Duration::from_millis(20);
/// How long a stop waits for the application to take the close events
/// before it gives up on the ones that do not fit its queue.
const STOP_EVENT_GRACE: Duration = Duration::from_secs(5);
/// Inbox messages handled per batch before the shard lets sessions run.
const INBOX_BATCH: usize = 256;

/// Where the shards deliver events.
#[derive(Clone, Debug)]
pub struct EventSink {
    /// The bounded queue to the application.
    pub tx: flume::Sender<EngineEvent>,
    /// Whether connection open/close events are wanted. With an inline
    /// handler they are sent only once someone subscribes.
    pub lifecycle: Arc<AtomicBool>,
    /// Rung once per shard turn in which events went into `tx`: the
    /// application waits on this, not on `tx` (see `turn_bell`).
    pub bell: Arc<crate::WaitList>,
}

/// What every shard of an engine shares.
pub(crate) struct Mesh {
    pub outboxes: Vec<Outbox<Command>>,
    pub tables: Vec<Arc<SlotTable>>,
    pub open_total: AtomicUsize,
}

/// Counts one running accept loop in [`Shard::accept_loops`] for as long
/// as it lives (to its end, or until the executor drops it).
struct AcceptLoop(Rc<Shard>);

impl AcceptLoop {
    fn start(shard: &Rc<Shard>) -> Self {
        shard.accept_loops.set(shard.accept_loops.get() + 1);
        Self(Rc::clone(shard))
    }
}

impl Drop for AcceptLoop {
    fn drop(&mut self) {
        self.0.accept_loops.set(self.0.accept_loops.get() - 1);
    }
}

/// The state of one shard, owned by its thread.
pub struct Shard {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<EngineConfig>,
    /// The shard's buffer pool, behind its hot stack.
    pub(crate) buffers: HotBuffers,
    pub(crate) slab: RefCell<Slab<Rc<SessionState>>>,
    pub(crate) mesh: Arc<Mesh>,
    outgoing: RefCell<Vec<Vec<Command>>>,
    pub(crate) sink: EventSink,
    pub(crate) handler: Option<Arc<dyn InlineHandler>>,
    pub(crate) stats: Arc<ShardStats>,
    /// The listening sockets, shut down by [`Shard::unlisten`].
    listeners: RefCell<Vec<RawFd>>,
    /// Accept loops still running. A stop waits for them: a loop that is
    /// cancelled instead of ending would drop an accept the ring may have
    /// completed already, and that connection's fd would stay open with no
    /// one to serve or close it.
    accept_loops: Cell<usize>,
    pending_requests: Cell<usize>,
    /// Sends waiting for room in some session's queue.
    pub(crate) waiting_sends: Cell<usize>,
    sweeper: RefCell<Option<std::task::Waker>>,
    stopping: Cell<bool>,
    /// Lifecycle events waiting for room in the application's queue.
    pub(crate) pump: Rc<EventPump>,
    /// Wakes the application after a turn that gave it events.
    pub(crate) turn_bell: Rc<TurnBell>,
    /// A coarse clock for idle timeouts: advanced by the idle sweeper.
    idle_tick: Cell<u64>,
    /// Most sessions open since memory was last handed back to the OS.
    peak_sessions: Cell<usize>,
    /// Connections admitted but still handshaking (QUIC): they hold a slot
    /// against the limits before they become sessions.
    handshaking: Cell<usize>,
    /// This shard's endpoint of each QUIC listener, by listener index.
    #[cfg(feature = "quic")]
    pub(crate) quic: RefCell<Vec<Rc<QuicEndpoint>>>,
    /// This shard's client endpoints (IPv4, IPv6), made on first connect.
    #[cfg(feature = "quic")]
    quic_client: RefCell<[Option<Rc<QuicEndpoint>>; 2]>,
    /// The ring plain TCP sessions use, made when the shard starts running
    /// (unset with `tcp_ring` off or where the kernel lacks what it needs).
    ring: std::cell::OnceCell<Rc<ShardRing>>,
}

impl Shard {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        index: usize,
        cfg: Arc<EngineConfig>,
        pool: Arc<BufferPool>,
        mesh: Arc<Mesh>,
        sink: EventSink,
        handler: Option<Arc<dyn InlineHandler>>,
        stats: Arc<ShardStats>,
    ) -> Rc<Self> {
        let table = Arc::clone(&mesh.tables[index]);
        let shards = mesh.outboxes.len();
        let turn_bell = TurnBell::new(Arc::clone(&sink.bell));
        Rc::new(Self {
            index,
            cfg,
            buffers: HotBuffers::new(pool),
            slab: RefCell::new(Slab::new(index as u16, table)),
            mesh,
            outgoing: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            handler,
            stats,
            listeners: RefCell::new(Vec::new()),
            accept_loops: Cell::new(0),
            pending_requests: Cell::new(0),
            waiting_sends: Cell::new(0),
            sweeper: RefCell::new(None),
            stopping: Cell::new(false),
            pump: EventPump::new(sink.tx.clone(), Rc::clone(&turn_bell)),
            turn_bell,
            idle_tick: Cell::new(0),
            peak_sessions: Cell::new(0),
            handshaking: Cell::new(0),
            #[cfg(feature = "quic")]
            quic: RefCell::new(Vec::new()),
            #[cfg(feature = "quic")]
            quic_client: RefCell::new([None, None]),
            ring: std::cell::OnceCell::new(),
            sink,
        })
    }

    /// The shard's own ring for plain TCP sessions, if it has one.
    pub(crate) fn ring(&self) -> Option<&Rc<ShardRing>> {
        self.ring.get()
    }

    /// Makes `out` ready to take `extra` more bytes, taking a pooled buffer
    /// if it has none (idle sessions hold no write buffer).
    #[inline(always)]
    pub(crate) fn prepare_out(&self, out: &mut Vec<u8>, extra: usize) {
        let extra = extra + crate::wire::MAX_ENVELOPE;
        if out.capacity() == 0 {
            *out = self.buffers.get(extra.max(MEDIUM));
            out.clear();
        }
        out.reserve(extra);
    }

    pub(crate) fn to_packet(&self, frame: &FrameRef<'_>) -> Packet {
        pooled_packet(self.buffers.pool(), frame)
    }

    /// Sends `packet` to `target` from code running on this shard.
    pub(crate) fn route_send(&self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        let dest = target.shard();
        if dest == self.index {
            let s = self.slab.borrow().get(target).cloned();
            return match s {
                Some(s) => s.offer(self, packet, None, 0).map_err(|(_, e)| e),
                None => Err(SendError::SessionNotFound(target)),
            };
        }
        match self.mesh.tables.get(dest) {
            Some(t) if t.is_live(target) => {
                self.outgoing.borrow_mut()[dest].push(Command::Send {
                    id: target,
                    packet,
                    wait: None,
                    reserved: 0,
                });
                Ok(())
            }
            _ => Err(SendError::SessionNotFound(target)),
        }
    }

    /// Queues a command for another shard; it goes with the batch's others.
    // Only QUIC relays commands between shards today (datagrams that
    // reached the wrong shard).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn relay(&self, dest: usize, cmd: Command) {
        self.outgoing.borrow_mut()[dest].push(cmd);
    }

    /// Whether a QUIC connection is still closing (its last bytes not yet
    /// acknowledged): a stop waits for it, within its grace period.
    #[cfg(feature = "quic")]
    fn quic_busy(&self) -> bool {
        let client = self.quic_client.borrow();
        self.quic
            .borrow()
            .iter()
            .chain(client.iter().flatten())
            .any(|e| e.busy())
    }

    #[cfg(not(feature = "quic"))]
    fn quic_busy(&self) -> bool {
        false
    }

    /// Ends every QUIC endpoint of this shard, closing their sockets.
    #[cfg(feature = "quic")]
    fn close_quic(&self) {
        let client = std::mem::take(&mut *self.quic_client.borrow_mut());
        for e in self.quic.borrow_mut().drain(..).chain(client.into_iter().flatten()) {
            e.shutdown();
        }
    }

    #[cfg(not(feature = "quic"))]
    fn close_quic(&self) {}

    /// This shard's client endpoint for the address family of `addr`.
    #[cfg(feature = "quic")]
    fn quic_client(self: &Rc<Self>, addr: std::net::SocketAddr) -> std::io::Result<Rc<QuicEndpoint>> {
        let family = usize::from(addr.is_ipv6());
        if let Some(e) = &self.quic_client.borrow()[family] {
            return Ok(Rc::clone(e));
        }
        let socket = crate::proto::quic::udp::bind_client(addr.is_ipv6())?;
        let e = QuicEndpoint::client(self.index, socket)?;
        glommio::spawn_local(Rc::clone(&e).run(Rc::clone(self))).detach();
        self.quic_client.borrow_mut()[family] = Some(Rc::clone(&e));
        Ok(e)
    }

    /// Hands the cross-shard messages gathered during a batch to their
    /// shards: one ring per destination per batch.
    pub(crate) fn flush_outgoing(&self) {
        let mut outgoing = self.outgoing.borrow_mut();
        for (dest, cmds) in outgoing.iter_mut().enumerate() {
            if !cmds.is_empty() {
                if let Some(c) = self.stats.cross_shard_out.get(dest) {
                    c.add(cmds.len() as u64);
                }
                let _ = self.mesh.outboxes[dest].send_batch(cmds.drain(..));
            }
        }
    }

    /// Releases bytes a send from another thread reserved in `id`'s slot.
    pub(crate) fn release(&self, id: SessionId, reserved: usize) {
        if reserved > 0 {
            self.mesh.tables[self.index].release(id, reserved);
        }
    }

    /// Wakes the deadline sweeper (requests, waiting sends).
    pub(crate) fn wake_sweeper(&self) {
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
    }

    /// Reports a packet that was accepted but could not be queued.
    pub(crate) fn send_failed(&self, id: SessionId, packet: &Packet, error: SendError) {
        let ev = EngineEvent::SendFailed {
            id,
            message_id: packet.header.message_id,
            error,
        };
        self.pump.emit(ev, None);
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    fn session(&self, id: SessionId) -> Option<Rc<SessionState>> {
        self.slab.borrow().get(id).cloned()
    }

    fn handle(self: &Rc<Self>, cmd: Command) {
        self.stats.mesh_in.add(1);
        match cmd {
            Command::Send {
                id,
                packet,
                wait,
                reserved,
            } => match self.session(id) {
                Some(s) => {
                    if let Err((packet, e)) = s.offer(self, packet, wait, reserved) {
                        self.send_failed(id, &packet, e);
                    }
                }
                None => {
                    // The session is gone, but the reservation was made in
                    // its slot and must come back to it.
                    self.release(id, reserved);
                    match wait {
                        Some((_, reply)) => {
                            let _ = reply.send(Err(SendError::SessionNotFound(id)));
                        }
                        None => self.send_failed(id, &packet, SendError::SessionNotFound(id)),
                    }
                }
            },
            Command::Request {
                id,
                mut packet,
                timeout,
                reply,
            } => self.start_request(id, &mut packet, timeout, reply),
            Command::Abandon { id } => {
                if let Some(s) = self.session(id) {
                    s.note_abandoned();
                }
            }
            Command::Broadcast { packet, reply } => {
                let sessions: Vec<_> = self.slab.borrow().iter().cloned().collect();
                let mut reached = 0;
                for s in sessions {
                    match s.offer(self, packet.clone(), None, 0) {
                        Ok(()) => reached += 1,
                        Err((packet, e)) => self.send_failed(s.id, &packet, e),
                    }
                }
                let _ = reply.send(reached);
            }
            Command::Close { id, reason, reply } => match self.session(id) {
                // Answered by `finish`, once the session is really gone.
                Some(s) => {
                    s.close_waiters.borrow_mut().push(reply);
                    s.request_close(reason);
                }
                None => {
                    let _ = reply.send(false);
                }
            },
            Command::WatchClose { id, reply } => match self.session(id) {
                Some(s) => s.close_waiters.borrow_mut().push(reply),
                None => {
                    let _ = reply.send(false);
                }
            },
            Command::Listen { listener, accept } => self.listen(listener, accept),
            Command::Connect {
                addr,
                timeout,
                dial,
                reply,
            } => {
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    let r = match dial {
                        Dial::Tcp(tls) => crate::proto::tcp::connect(&shard, addr, timeout, tls).await,
                        #[cfg(feature = "websocket")]
                        Dial::WebSocket(target, tls) => {
                            crate::proto::ws::handshake::connect(&shard, addr, timeout, target, tls).await
                        }
                    };
                    let _ = reply.send(r);
                })
                .detach();
            }
            #[cfg(feature = "quic")]
            Command::ListenQuic { socket, index, config } => {
                match QuicEndpoint::server(self.index, index, socket, config) {
                    Ok(e) => {
                        glommio::spawn_local(Rc::clone(&e).run(Rc::clone(self))).detach();
                        let mut quic = self.quic.borrow_mut();
                        debug_assert_eq!(quic.len(), index, "listeners arrive in order");
                        quic.push(e);
                    }
                    Err(e) => tracing::warn!(shard = self.index, error = %e, "QUIC listener failed"),
                }
            }
            #[cfg(feature = "quic")]
            Command::ConnectQuic {
                addr,
                timeout,
                config,
                server_name,
                reply,
            } => match self.quic_client(addr) {
                Ok(e) => e.connect(self, config, addr, &server_name, timeout, reply),
                Err(source) => {
                    let _ = reply.send(Err(StartError::Connect { addr, source }));
                }
            },
            #[cfg(feature = "quic")]
            Command::QuicDatagram { listener, datagram } => {
                if let Some(e) = self.quic.borrow().get(listener) {
                    e.relay(datagram);
                }
            }
            Command::Sessions { reply } => {
                let _ = reply.send(self.slab.borrow().iter().map(|s| s.id).collect());
            }
            Command::Unlisten { reply } => {
                self.unlisten();
                let _ = reply.send(());
            }
            Command::SessionStats { id, reply } => {
                let stats = self
                    .session(id)
                    .map(|s| s.counters.snapshot(id, s.queued(), s.pending.borrow().len()));
                let _ = reply.send(stats);
            }
            Command::Stop { drain_until, reply } => {
                // Already done by `Unlisten` when the engine stops in two
                // phases; a stop from `Drop` comes alone.
                self.unlisten();
                for s in self.slab.borrow().iter() {
                    match drain_until {
                        Some(_) => s.start_draining(),
                        None => s.request_close(CloseReason::Shutdown),
                    }
                }
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    if let Some(deadline) = drain_until {
                        // Sessions close themselves as they go quiet; the
                        // deadline closes the rest.
                        while !shard.slab.borrow().is_empty() && Instant::now() < deadline {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        for s in shard.slab.borrow().iter() {
                            s.request_close(CloseReason::Shutdown);
                        }
                    }
                    // Sessions end at their next poll; their close events get
                    // a bounded time to be taken by the application.
                    let deadline = Instant::now() + STOP_EVENT_GRACE;
                    loop {
                        let late = Instant::now() >= deadline;
                        // An accept loop ends once its shut-down listener's
                        // pending accept completes; a ring that never
                        // completes it must not hold the stop forever.
                        let accepting = shard.accept_loops.get() > 0 && !late;
                        if shard.slab.borrow().is_empty() && shard.pump.is_idle() && !shard.quic_busy() && !accepting {
                            break;
                        }
                        if late {
                            shard.pump.abandon.set(true);
                        }
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    shard.close_quic();
                    let _ = reply.send(());
                })
                .detach();
            }
        }
    }

    /// Stops accepting: listeners leave the kernel's table and nothing
    /// more is admitted. Idempotent.
    fn unlisten(&self) {
        self.stopping.set(true);
        for fd in self.listeners.borrow_mut().drain(..) {
            // shutdown() takes a listening socket out of the kernel's
            // table at once, and completes the accept the ring has
            // pending, so the accept loop sees an error and ends (closing
            // the listener). A connection accepted in between is closed
            // at once by the loop. The loop is not cancelled: the
            // ring may have accepted a connection the loop has not yet
            // taken, and cancelling would leave that fd open forever.
            // SAFETY: fd is the listener its accept loop still owns.
            unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
        }
    }

    fn start_request(&self, id: SessionId, packet: &mut Packet, timeout: Duration, reply: ReplyTx) {
        let Some(s) = self.session(id) else {
            let _ = reply.send(Err(SendError::SessionNotFound(id)));
            return;
        };
        if s.pending.borrow().len() >= self.cfg.max_inflight_requests {
            let _ = reply.send(Err(SendError::TooManyRequests(id)));
            return;
        }
        packet.header.packet_type = PacketType::Request;
        let mid = s.next_request_id();
        packet.header.message_id = mid;
        if let Err(e) = s.enqueue(self, packet) {
            let _ = reply.send(Err(e));
            return;
        }
        s.pending.borrow_mut().insert(
            mid,
            PendingRequest {
                reply,
                deadline: Instant::now() + timeout,
            },
        );
        self.pending_requests.set(self.pending_requests.get() + 1);
        self.stats.requests_in_flight.add(1);
        self.wake_sweeper();
    }

    pub(crate) fn idle_tick(&self) -> u64 {
        self.idle_tick.get()
    }

    /// Closes sessions that moved no bytes for the idle timeout. The clock
    /// ticks four times per timeout, so a silent session is closed between
    /// 1× and 1.25× the timeout after its last byte.
    async fn sweep_idle(self: Rc<Self>) {
        const TICKS: u64 = 4;
        let timeouts = [self.cfg.idle_timeout, self.cfg.write_timeout];
        let Some(shortest) = timeouts.iter().flatten().min().copied() else {
            return;
        };
        // Four ticks per (shortest) timeout: a session is closed between 1x
        // and 1.25x its timeout after it went quiet or stuck.
        let period = (shortest / TICKS as u32).max(Duration::from_millis(5));
        let idle_ticks = self
            .cfg
            .idle_timeout
            .map(|t| (t.as_nanos() / period.as_nanos()).max(1) as u64);
        loop {
            glommio::timer::sleep(period).await;
            let now = self.idle_tick.get() + 1;
            self.idle_tick.set(now);
            let wall = Instant::now();
            for s in self.slab.borrow().iter() {
                if idle_ticks.is_some_and(|t| now.saturating_sub(s.last_active.get()) > t) {
                    s.request_close(CloseReason::IdleTimeout);
                } else if let (Some(limit), Some(since)) = (self.cfg.write_timeout, s.stuck_since.get()) {
                    if wall.duration_since(since) >= limit {
                        s.request_close(CloseReason::SlowConsumer);
                    }
                }
            }
        }
    }

    /// Fails requests past their deadline. Runs only while some are pending.
    async fn sweep_requests(self: Rc<Self>) {
        loop {
            if self.pending_requests.get() + self.waiting_sends.get() == 0 {
                let shard = Rc::clone(&self);
                std::future::poll_fn(|cx| {
                    if shard.pending_requests.get() + shard.waiting_sends.get() > 0 {
                        std::task::Poll::Ready(())
                    } else {
                        *shard.sweeper.borrow_mut() = Some(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
            glommio::timer::sleep(REQUEST_SWEEP).await;
            let now = Instant::now();
            let mut left = 0;
            let sessions: Vec<_> = self.slab.borrow().iter().cloned().collect();
            for s in sessions {
                s.expire_waiters(&self, now);
                let mut pending = s.pending.borrow_mut();
                pending.retain(|_, p| {
                    if p.deadline <= now {
                        let _ = p.reply.send(Err(SendError::Timeout));
                        self.stats.request_timeouts.add(1);
                        self.stats.requests_in_flight.add(-1);
                        false
                    } else {
                        true
                    }
                });
                left += pending.len();
            }
            self.pending_requests.set(left);
        }
    }

    fn listen(self: &Rc<Self>, listener: std::net::TcpListener, accept: Accept) {
        use std::os::fd::IntoRawFd;
        let fd = listener.into_raw_fd();
        // SAFETY: the fd is a bound, listening TCP socket we own.
        let l = unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let shard = Rc::clone(self);
        let live = AcceptLoop::start(self);
        glommio::spawn_local(async move {
            let _live = live;
            match accept {
                Accept::Tcp(tls) => crate::proto::tcp::accept_loop(shard, l, tls).await,
                #[cfg(feature = "websocket")]
                Accept::WebSocket(cfg) => crate::proto::ws::handshake::accept_loop(shard, l, Rc::new(cfg)).await,
            }
        })
        .detach();
        self.listeners.borrow_mut().push(fd);
    }

    /// Registers a new connection, or `None` when a limit refuses it.
    pub(crate) fn admit(&self, wire: Wire) -> Option<Rc<SessionState>> {
        self.admit_over(wire, false)
    }

    /// [`Shard::admit`] for a session under TLS when `tls` is set (counted
    /// as `tcp+tls` or `wss`).
    pub(crate) fn admit_over(&self, wire: Wire, tls: bool) -> Option<Rc<SessionState>> {
        if !self.reserve() {
            return None;
        }
        self.admit_reserved(wire, tls)
    }

    /// Holds a place under the connection limits (total and this shard's)
    /// for a connection that is still handshaking; `false` when refused.
    pub(crate) fn reserve(&self) -> bool {
        let total = self.mesh.open_total.fetch_add(1, Ordering::AcqRel);
        let here = self.slab.borrow().len() + self.handshaking.get();
        let per_shard = self.mesh.tables[self.index].capacity();
        if total >= self.cfg.max_connections || here >= per_shard || self.stopping.get() {
            self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused.add(1);
            return false;
        }
        self.handshaking.set(self.handshaking.get() + 1);
        true
    }

    /// Gives back a place held by [`Shard::reserve`] (the handshake failed).
    // Only QUIC holds a place while it handshakes.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn unreserve(&self) {
        self.handshaking.set(self.handshaking.get() - 1);
        self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
    }

    /// Turns a reserved place into a session (under TLS when `tls` is set).
    pub(crate) fn admit_reserved(&self, wire: Wire, tls: bool) -> Option<Rc<SessionState>> {
        self.handshaking.set(self.handshaking.get() - 1);
        let mut slab = self.slab.borrow_mut();
        let mut state = None;
        let id = slab.insert_with(|id| {
            let s = SessionState::new(id, wire);
            s.counters.protocol.set(crate::stats::Protocol::of(wire, tls));
            s.last_active.set(self.idle_tick.get());
            state = Some(Rc::clone(&s));
            s
        });
        if id.is_none() {
            self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
            self.stats.refused.add(1);
            return None;
        }
        self.stats.sessions_total.add(1);
        self.peak_sessions.set(self.peak_sessions.get().max(slab.len()));
        state
    }

    /// Removes a finished session and tells everyone who waits on it.
    pub(crate) fn finish(&self, st: &SessionState, reason: CloseReason) {
        self.slab.borrow_mut().remove(st.id);
        self.give_back_memory();
        self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
        self.stats.count_close(&reason);
        st.counters.unreport_queue(&self.stats);
        self.stats.requests_in_flight.add(-(st.pending.borrow().len() as i64));
        st.fail_pending(&reason);
        st.fail_waiters(self, &reason);
        for w in st.close_waiters.borrow_mut().drain(..) {
            let _ = w.send(true);
        }
        let out = std::mem::take(&mut *st.out.borrow_mut());
        if out.capacity() > 0 {
            self.buffers.put(out);
        }
        tracing::debug!(shard = self.index, session = %st.id, %reason, "session closed");
        if let Some(h) = self.handler.as_ref().filter(|_| st.handler_opened.get()) {
            h.on_close(st.id, &reason);
            self.flush_outgoing();
        }
        if st.announce.get() != Announce::Silent {
            self.pump.emit(EngineEvent::Closed { id: st.id, reason }, None);
        }
    }

    /// After a crowd of sessions has gone (three quarters of a peak of at
    /// least 1,024), hands the allocator's free memory back to the OS, so a
    /// burst of connections does not leave its high-water mark resident.
    /// Freed memory is reused either way; this only returns it.
    fn give_back_memory(&self) {
        let (peak, now) = (self.peak_sessions.get(), self.slab.borrow().len());
        if peak >= 1024 && now <= peak / 4 {
            self.peak_sessions.set(now);
            #[cfg(all(target_os = "linux", target_env = "gnu"))]
            // SAFETY: malloc_trim only releases free memory; no preconditions.
            unsafe {
                libc::malloc_trim(0);
            }
        }
    }

    /// Tells the handler, then the application if it wants lifecycle
    /// events, that `st` opened.
    pub(crate) fn announce_open(&self, st: &Rc<SessionState>, ev: EngineEvent) {
        if let (
            Some(h),
            EngineEvent::Opened {
                peer, local, protocol, ..
            },
        ) = (&self.handler, &ev)
        {
            st.handler_opened.set(true);
            h.on_open(&mut crate::session_handler::Connected {
                id: st.id,
                peer: *peer,
                local: *local,
                protocol,
                shard: self,
            });
            self.flush_outgoing();
        }
        if !self.sink.lifecycle.load(Ordering::Relaxed) {
            return;
        }
        st.announce.set(Announce::Pending);
        if self.pump.emit(ev, Some(st)) {
            st.announce.set(Announce::Done);
        }
    }
}

/// Runs a shard until it is told to stop.
pub(crate) async fn run(shard: Rc<Shard>, inbox: Inbox<Command>) {
    if shard.cfg.tcp_ring {
        match ShardRing::new(shard.cfg.read_buffer) {
            Ok(ring) => {
                glommio::spawn_local(Rc::clone(&ring).run(Rc::clone(&shard))).detach();
                let _ = shard.ring.set(ring);
            }
            Err(e) => {
                tracing::info!(shard = shard.index, error = %e, "no shard ring; plain TCP uses glommio's streams")
            }
        }
    }
    glommio::spawn_local(Rc::clone(&shard).sweep_requests()).detach();
    glommio::spawn_local(Rc::clone(&shard).sweep_idle()).detach();
    glommio::spawn_local(Rc::clone(&shard.pump).run(shard.index, Arc::clone(&shard.stats))).detach();
    glommio::spawn_local(Rc::clone(&shard.turn_bell).run()).detach();
    let mut batch = Vec::with_capacity(INBOX_BATCH);
    while inbox.recv_batch(&mut batch, INBOX_BATCH).await {
        let mut stop_reply = None;
        for cmd in batch.drain(..) {
            match cmd {
                Command::Stop { drain_until, reply } => {
                    // Let the shard close its sessions first, then answer.
                    let (tx, rx) = flume::bounded(1);
                    shard.handle(Command::Stop { drain_until, reply: tx });
                    stop_reply = Some((reply, rx));
                }
                cmd => shard.handle(cmd),
            }
        }
        shard.flush_outgoing();
        if let Some((reply, done)) = stop_reply {
            let _ = done.recv_async().await;
            // Every session is gone: release the sockets and buffers the
            // ring still holds before `stop()` is told the shard is done
            // (the executor does not drop tasks that never finish, so the
            // ring's own Drop may never run).
            if let Some(ring) = shard.ring() {
                ring.close();
            }
            let _ = reply.send(());
            return;
        }
    }
}

pub(crate) fn start_error(shard: usize, e: std::io::Error) -> StartError {
    StartError::Shard { shard, source: e }
}
