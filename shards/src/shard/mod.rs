//! Layer 3, the shard context: one core's table of sessions, the limits a
//! new connection is admitted under, the routing of a packet to a session
//! of this shard, the listeners and the per-shard state of drivers. It
//! knows no protocol: the drivers (layer 4) call [`Shard::admit`] and
//! [`Shard::start_session`], and whatever a driver keeps per shard (QUIC
//! endpoints, the shard ring) lives in its registry ([`Drivers`]).
//!
//! * `commands` — what the inbox asks of the shard.
//! * `sweep` — idle sessions, request deadlines.
//! * `run` — the loop that serves the inbox, and a stop.

mod commands;
mod drivers;
mod run;
mod sweep;

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::net::{IpAddr, SocketAddr};
use std::ops::Deref;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

pub(crate) use drivers::{DriverState, Drivers};
pub(crate) use run::{panicked, run, start_error};

use crate::accept::{AcceptHook, ConnectRequest, Decision, Verdict};
use crate::error::{CloseReason, SendError};
use crate::event::{Command, EngineEvent, Task};
use crate::id::SessionId;
use crate::packet::Packet;
use crate::pool::slab::Slab;
use crate::pump::Announced;
use crate::session::handler::{Connected, InlineHandler};
use crate::session::{Announce, Driver, Route, SessionCtx, SessionState};
use crate::session_io::SessionIo;
use crate::stats::Refusal;
use crate::timeout::within;
use crate::wire::Wire;

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

/// What a session is announced with.
pub(crate) struct Opening {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The peer's verified certificate chain (empty when none was asked).
    pub peer_certificates: Vec<Vec<u8>>,
}

/// A place held for an incoming connection while it handshakes
/// ([`Shard::hold`]): given back when dropped, unless
/// [`Reservation::admit`] made it a session.
pub(crate) struct Reservation {
    shard: Rc<Shard>,
    peer: IpAddr,
    held: bool,
}

impl Reservation {
    /// The session the place becomes (under TLS when `tls` is set).
    pub(crate) fn admit(mut self, wire: Wire, tls: bool) -> Option<Rc<SessionState>> {
        self.held = false;
        self.shard.admit_reserved(wire, tls, Some(self.peer))
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.held {
            self.shard.unreserve(Some(self.peer));
        }
    }
}

/// The state of one shard, owned by its thread.
pub(crate) struct Shard {
    /// The services its sessions use; shared with every session driver.
    pub(crate) ctx: Rc<SessionCtx>,
    pub(crate) handler: Option<Arc<dyn InlineHandler>>,
    /// The application's say on who may connect.
    accept_hook: Option<Arc<dyn AcceptHook>>,
    pub(crate) slab: RefCell<Slab<Rc<SessionState>>>,
    /// The listening sockets, shut down by [`Shard::unlisten`].
    listeners: RefCell<Vec<RawFd>>,
    /// Accept loops still running. A stop waits for them: a loop that is
    /// cancelled instead of ending would drop an accept the ring may have
    /// completed already, and that connection's fd would stay open with no
    /// one to serve or close it.
    accept_loops: Cell<usize>,
    pending_requests: Cell<usize>,
    stopping: Cell<bool>,
    /// Most sessions open since memory was last handed back to the OS.
    peak_sessions: Cell<usize>,
    /// Connections admitted but still handshaking (QUIC): they hold a slot
    /// against the limits before they become sessions.
    handshaking: Cell<usize>,
    /// What drivers keep per shard (QUIC endpoints, the shard ring).
    pub(crate) drivers: Drivers,
}

impl Deref for Shard {
    type Target = SessionCtx;
    fn deref(&self) -> &SessionCtx {
        &self.ctx
    }
}

impl Route for Shard {
    fn send_local(&self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        match self.session(target) {
            Some(s) => s.offer(&self.ctx, packet, None, 0).map_err(|(_, e)| e),
            None => Err(SendError::SessionNotFound(target)),
        }
    }
}

impl Shard {
    pub(crate) fn new(
        ctx: SessionCtx,
        handler: Option<Arc<dyn InlineHandler>>,
        accept_hook: Option<Arc<dyn AcceptHook>>,
    ) -> Rc<Self> {
        let table = Arc::clone(&ctx.mesh.tables[ctx.index]);
        // At most `MAX_SHARDS` (256) shards start, so the index fits.
        let (node, index) = (ctx.cfg.node, ctx.index as u8);
        let shard = Rc::new(Self {
            ctx: Rc::new(ctx),
            handler,
            accept_hook,
            slab: RefCell::new(Slab::new(node, index, table)),
            listeners: RefCell::new(Vec::new()),
            accept_loops: Cell::new(0),
            pending_requests: Cell::new(0),
            stopping: Cell::new(false),
            peak_sessions: Cell::new(0),
            handshaking: Cell::new(0),
            drivers: Drivers::default(),
        });
        let route: Rc<dyn Route> = shard.clone();
        shard.ctx.set_route(Rc::downgrade(&route));
        shard
    }

    /// A command that runs `work` on the shard that takes it: how a layer
    /// above this one (a driver, the runtime) gives a shard work.
    pub(crate) fn task(work: impl FnOnce(&Rc<Shard>) + Send + 'static) -> Command {
        Command::Task(Task(Box::new(move |shard: &dyn Any| {
            let shard = shard
                .downcast_ref::<Rc<Shard>>()
                .expect("the shard loop runs tasks with its shard");
            work(shard)
        })))
    }

    /// Whether the application decides who may connect.
    pub(crate) fn has_accept_hook(&self) -> bool {
        self.accept_hook.is_some()
    }

    /// Asks the application's accept hook about a connection (`Accept` at
    /// once when there is none; `request` is made only when there is). A
    /// hook that does not answer within the handshake timeout refuses. A
    /// refusal is counted.
    pub(crate) async fn ask(&self, request: impl FnOnce() -> ConnectRequest) -> Verdict {
        let Some(hook) = &self.accept_hook else {
            return Verdict::Accept;
        };
        let (tx, rx) = flume::bounded(1);
        hook.on_connect(&request(), Decision::new(tx));
        let verdict = match rx.try_recv() {
            Ok(v) => v,
            Err(_) => match within(self.cfg.handshake_timeout, rx.recv_async()).await {
                Some(Ok(v)) => v,
                _ => Verdict::refuse(503, "no admission decision in time"),
            },
        };
        if verdict != Verdict::Accept {
            self.stats.count_refusal(Refusal::Application);
        }
        verdict
    }

    /// Connections holding a place while they handshake.
    // QUIC's Retry threshold is the one reader.
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub(crate) fn handshakes(&self) -> usize {
        self.handshaking.get()
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    fn session(&self, id: SessionId) -> Option<Rc<SessionState>> {
        self.slab.borrow().get(id).cloned()
    }

    /// Serves a listening socket: `accept_loop` runs until the shard stops
    /// listening, and a stop waits for it to end.
    pub(crate) fn serve_listener<F, Fut>(self: &Rc<Self>, listener: std::net::TcpListener, accept_loop: F)
    where
        F: FnOnce(Rc<Shard>, glommio::net::TcpListener) -> Fut + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        use std::os::fd::IntoRawFd;
        let fd = listener.into_raw_fd();
        // SAFETY: the fd is a bound, listening TCP socket we own.
        let l = unsafe { <glommio::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let shard = Rc::clone(self);
        let live = AcceptLoop::start(self);
        glommio::spawn_local(async move {
            let _live = live;
            accept_loop(shard, l).await
        })
        .detach();
        self.listeners.borrow_mut().push(fd);
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

    /// Registers a connection we opened, or `None` when a limit refuses it.
    pub(crate) fn admit(&self, wire: Wire) -> Option<Rc<SessionState>> {
        self.admit_over(wire, false)
    }

    /// [`Shard::admit`] for a session under TLS when `tls` is set (counted
    /// as `tcp+tls` or `wss`).
    pub(crate) fn admit_over(&self, wire: Wire, tls: bool) -> Option<Rc<SessionState>> {
        self.reserve(None).ok()?;
        self.admit_reserved(wire, tls, None)
    }

    /// Holds a place for a connection from `peer` (`None`: one we opened)
    /// under the connection limits (total and this shard's) and the peer
    /// address's own, for as long as it handshakes. `Err` says which limit
    /// refused it; the refusal is counted.
    pub(crate) fn reserve(&self, peer: Option<IpAddr>) -> Result<(), Refusal> {
        let refused = |why| {
            self.stats.count_refusal(why);
            Err(why)
        };
        if self.stopping.get() {
            return refused(Refusal::ConnectionLimit);
        }
        if let Some(ip) = peer {
            if let Err(why) = self.mesh.peers.admit(ip, Instant::now()) {
                return refused(why);
            }
        }
        let total = self.mesh.open_total.fetch_add(1, Ordering::AcqRel);
        let here = self.slab.borrow().len() + self.handshaking.get();
        let per_shard = self.mesh.tables[self.index].capacity();
        if total >= self.cfg.max_connections || here >= per_shard {
            self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
            if let Some(ip) = peer {
                self.mesh.peers.release(ip);
            }
            return refused(Refusal::ConnectionLimit);
        }
        self.handshaking.set(self.handshaking.get() + 1);
        Ok(())
    }

    /// Gives back a place held by [`Shard::reserve`] (the handshake failed
    /// or was refused).
    pub(crate) fn unreserve(&self, peer: Option<IpAddr>) {
        self.handshaking.set(self.handshaking.get() - 1);
        self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
        if let Some(ip) = peer {
            self.mesh.peers.release(ip);
        }
    }

    /// A place for an incoming connection from `peer`, given back when the
    /// [`Reservation`] is dropped unless it became a session; `Err` (and
    /// counted) when a limit refuses it.
    pub(crate) fn hold(self: &Rc<Self>, peer: IpAddr) -> Result<Reservation, Refusal> {
        self.reserve(Some(peer))?;
        Ok(Reservation {
            shard: Rc::clone(self),
            peer,
            held: true,
        })
    }

    /// Turns a reserved place into a session (under TLS when `tls` is set).
    pub(crate) fn admit_reserved(&self, wire: Wire, tls: bool, peer: Option<IpAddr>) -> Option<Rc<SessionState>> {
        self.handshaking.set(self.handshaking.get() - 1);
        let mut slab = self.slab.borrow_mut();
        let mut state = None;
        let id = slab.insert_with(|id| {
            let s = SessionState::new(id, wire);
            s.counters.protocol.set(crate::stats::Protocol::of(wire, tls));
            s.last_active.set(self.idle_tick());
            s.peer_ip.set(peer);
            state = Some(Rc::clone(&s));
            s
        });
        if id.is_none() {
            self.mesh.open_total.fetch_sub(1, Ordering::AcqRel);
            if let Some(ip) = peer {
                self.mesh.peers.release(ip);
            }
            self.stats.count_refusal(Refusal::ConnectionLimit);
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
        if let Some(ip) = st.peer_ip.get() {
            self.mesh.peers.release(ip);
        }
        self.stats.count_close(&reason);
        st.counters.unreport_queue(&self.stats);
        self.stats.requests_in_flight.add(-(st.pending.borrow().len() as i64));
        st.fail_pending(&reason);
        st.fail_waiters(&self.ctx, &reason);
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
                peer,
                local,
                protocol,
                peer_certificates,
                ..
            },
        ) = (&self.handler, &ev)
        {
            st.handler_opened.set(true);
            h.on_open(&mut Connected {
                id: st.id,
                peer: *peer,
                local: *local,
                protocol,
                peer_certificates,
                ctx: &self.ctx,
            });
            self.flush_outgoing();
        }
        if !self.sink.lifecycle.load(Ordering::Relaxed) {
            return;
        }
        st.announce.set(Announce::Pending);
        if self.pump.emit(ev, Some(Rc::clone(st) as Rc<dyn Announced>)) {
            st.announce.set(Announce::Done);
        }
    }

    /// Announces an admitted session, then runs its driver over `stream`
    /// until it ends; `ended` runs with the reason before the session is
    /// finished (QUIC closes its connection there). `initial` holds bytes
    /// a handshake already read past its end.
    pub(crate) fn start_session<I: SessionIo + Unpin + 'static>(
        self: &Rc<Self>,
        st: Rc<SessionState>,
        stream: I,
        initial: &[u8],
        opening: Opening,
        ended: impl FnOnce(&CloseReason) + 'static,
    ) {
        let protocol = st.wire.protocol();
        let opened = EngineEvent::Opened {
            id: st.id,
            peer: opening.peer,
            local: opening.local,
            protocol,
            peer_certificates: opening.peer_certificates,
        };
        self.announce_open(&st, opened);
        let shard = Rc::clone(self);
        let driver = self.driver(Rc::clone(&st), stream, initial);
        // Everything the session logs carries its id. At debug level, so a
        // quiet (info) subscriber pays nothing per session or per poll.
        let span = tracing::debug_span!("session", session = %st.id, protocol = st.counters.protocol.get().label());
        let task = async move {
            let reason = driver.await;
            ended(&reason);
            shard.finish(&st, reason);
        };
        glommio::spawn_local(tracing::Instrument::instrument(task, span)).detach();
    }

    /// A driver for one of this shard's sessions.
    pub(crate) fn driver<S: SessionIo>(&self, st: Rc<SessionState>, stream: S, initial: &[u8]) -> Driver<S> {
        Driver::new(Rc::clone(&self.ctx), self.handler.clone(), st, stream, initial)
    }
}
