//! One shard's QUIC endpoint and the driver that runs it: a sans-IO
//! `quinn_proto::Endpoint` fed from the shard's own UDP socket, with every
//! connection's timers kept in a heap on the shard. After each input (a
//! datagram batch, a timer, a session writing) every connection it touched
//! is drained of endpoint events, application events, transmits and its
//! next timeout, as quinn-proto asks.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::{AsyncRead, AsyncWrite};
use quinn_proto::{
    ConnectionError, ConnectionHandle, DatagramEvent, EcnCodepoint, EndpointConfig, Event, Side, StreamEvent, VarInt,
};

use super::cid::{self, ShardCids};
use super::stream::StreamIo;
use super::udp::Udp;
use crate::error::{CloseReason, StartError};
use crate::event::Command;
use crate::id::SessionId;
use crate::proto::tcp::{self, Ends};
use crate::session::SessionState;
use crate::shard::Shard;
use crate::wire::Wire;

/// Datagram batches read per wake-up before timers and sessions get a turn.
const RECV_ROUNDS: usize = 8;
/// How long a closing session may take to have its last bytes acknowledged
/// before the connection is closed regardless.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// QUIC application error codes we close with.
pub mod app_code {
    /// Normal close (shutdown, idle, the application).
    pub const NORMAL: u32 = 0;
    /// The peer sent bytes that are not a valid packet.
    pub const PROTOCOL: u32 = 1;
    /// The peer abused its session (floods, unanswered requests).
    pub const POLICY: u32 = 2;
}

/// Completes a client's `connect` once its handshake is done.
pub(crate) type ConnectReply = flume::Sender<Result<SessionId, StartError>>;

enum Phase {
    /// Handshaking until `deadline`; `reply` for our own outgoing connects.
    Handshake { reply: Option<(ConnectReply, SocketAddr)> },
    /// A session runs on it.
    Open,
    /// The session ended; waiting for its last bytes to be acknowledged.
    Closing { code: u32 },
    /// Closed; quinn drains it.
    Closed,
}

struct Conn {
    q: quinn_proto::Connection,
    io: StreamIo,
    phase: Phase,
    st: Option<Rc<SessionState>>,
    /// quinn's next timeout, and our own (handshake, close grace).
    timeout: Option<Instant>,
    deadline: Option<Instant>,
    /// The earliest live entry of this connection in the timer heap.
    armed: Option<Instant>,
    gen: u64,
    dirty: bool,
}

struct Inner {
    ep: quinn_proto::Endpoint,
    conns: HashMap<usize, Conn>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    dirty: Vec<usize>,
    forwarded: Vec<Datagram>,
    next_gen: u64,
    scratch: Vec<u8>,
}

/// A datagram relayed from the shard whose socket received it.
pub(crate) struct Relayed {
    pub from: SocketAddr,
    pub local_ip: Option<IpAddr>,
    pub ecn: Option<u8>,
    pub data: BytesMut,
}

/// A received datagram: from, our address it came to, ECN, contents.
type Datagram = (SocketAddr, Option<IpAddr>, Option<EcnCodepoint>, BytesMut);

/// One shard's endpoint, shared by its driver task and its sessions.
pub(crate) struct Endpoint {
    inner: RefCell<Inner>,
    /// The socket; taken (and so closed) when the shard stops.
    udp: RefCell<Option<Udp>>,
    local: SocketAddr,
    waker: RefCell<Option<Waker>>,
    /// Which of the engine's QUIC listeners this is (`None`: a client's).
    pub(crate) listener: Option<usize>,
    max_datagrams: usize,
    /// Connections not yet closed (handshaking, open, closing).
    live: Cell<usize>,
    /// Sessions whose handshake finished during a drive, started once the
    /// endpoint is no longer borrowed (glommio polls a new task at once).
    starting: RefCell<Vec<Starting>>,
    /// Set when the shard stops: the driver ends and the socket closes.
    closed: Cell<bool>,
    /// A connection's transmit that the full socket did not take. While it
    /// waits, no connection is asked for more, and the driver waits for the
    /// socket to drain. Dropping it instead would be a loss of our own
    /// making, which QUIC answers by slowing down, and a dropped
    /// CONNECTION_CLOSE is never sent again (a burst of closes lost a third
    /// of them that way, each then ending only at the peer's idle timeout).
    held: RefCell<Option<(quinn_proto::Transmit, Vec<u8>)>>,
}

struct Starting {
    st: Rc<SessionState>,
    stream: QuicStream,
    ends: Ends,
    reply: Option<ConnectReply>,
}

impl Endpoint {
    /// A server endpoint on one of the listener's sockets.
    pub(crate) fn server(
        shard: usize,
        listener: usize,
        socket: std::net::UdpSocket,
        config: Arc<quinn_proto::ServerConfig>,
    ) -> std::io::Result<Rc<Self>> {
        Self::new(shard, Some(listener), socket, Some(config))
    }

    /// A client endpoint on an ephemeral port.
    pub(crate) fn client(shard: usize, socket: std::net::UdpSocket) -> std::io::Result<Rc<Self>> {
        Self::new(shard, None, socket, None)
    }

    fn new(
        shard: usize,
        listener: Option<usize>,
        socket: std::net::UdpSocket,
        server: Option<Arc<quinn_proto::ServerConfig>>,
    ) -> std::io::Result<Rc<Self>> {
        let mut ec = EndpointConfig::default();
        ec.cid_generator(move || Box::new(ShardCids::new(shard)));
        let udp = Udp::new(socket)?;
        Ok(Rc::new(Self {
            inner: RefCell::new(Inner {
                ep: quinn_proto::Endpoint::new(Arc::new(ec), server, true, None),
                conns: HashMap::new(),
                timers: BinaryHeap::new(),
                dirty: Vec::new(),
                forwarded: Vec::new(),
                next_gen: 0,
                scratch: Vec::new(),
            }),
            max_datagrams: udp.max_datagrams(),
            local: udp.local_addr()?,
            udp: RefCell::new(Some(udp)),
            waker: RefCell::new(None),
            listener,
            live: Cell::new(0),
            starting: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            held: RefCell::new(None),
        }))
    }

    /// Sends an endpoint's own answer (a refusal, a version negotiation, a
    /// stateless reset). These are not held: the peer sends its packet again.
    fn send(&self, t: &quinn_proto::Transmit, contents: &[u8]) {
        if let Some(udp) = self.udp.borrow().as_ref() {
            if let Err(e) = udp.send(t, contents) {
                tracing::debug!(error = %e, "quic send failed");
            }
        }
    }

    /// Sends a connection's transmit, or holds it if the socket is full.
    /// Returns whether the caller may send more.
    fn send_or_hold(&self, t: quinn_proto::Transmit, contents: &[u8]) -> bool {
        let Some(udp) = self.udp.borrow().as_ref().map(|u| u.send(&t, contents)) else {
            return true;
        };
        match udp {
            Ok(true) => true,
            Ok(false) => {
                *self.held.borrow_mut() = Some((t, contents.to_vec()));
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "quic send failed");
                true
            }
        }
    }

    /// Sends the held transmit if the socket takes it now; whether none is
    /// held afterwards.
    fn flush_held(&self) -> bool {
        let Some((t, data)) = self.held.borrow_mut().take() else {
            return true;
        };
        self.send_or_hold(t, &data)
    }

    fn wake(&self) {
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// Ends the driver; the socket closes once the last session lets go.
    pub(crate) fn shutdown(&self) {
        // Closed here, not when the driver task is dropped: the task's
        // readiness wait holds its own waker, so it may never be freed.
        drop(self.udp.borrow_mut().take());
        self.closed.set(true);
        self.wake();
    }

    /// Whether some connection is still handshaking, open or closing.
    pub(crate) fn busy(&self) -> bool {
        self.live.get() > 0
    }

    /// Takes a datagram another shard received for one of our connections.
    pub(crate) fn relay(&self, d: Relayed) {
        let ecn = d.ecn.and_then(EcnCodepoint::from_bits);
        self.inner
            .borrow_mut()
            .forwarded
            .push((d.from, d.local_ip, ecn, d.data));
        self.wake();
    }

    /// Starts an outgoing connection; `reply` completes once it is a session.
    pub(crate) fn connect(
        &self,
        shard: &Shard,
        config: quinn_proto::ClientConfig,
        addr: SocketAddr,
        server_name: &str,
        timeout: Duration,
        reply: ConnectReply,
    ) {
        if !shard.reserve() {
            let _ = reply.send(Err(tcp::limit_error(addr)));
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.borrow_mut();
        match inner.ep.connect(now, config, addr, server_name) {
            Ok((ch, q)) => {
                inner.insert(ch, q, Side::Client, Some((reply, addr)), now + timeout);
                self.live.set(self.live.get() + 1);
                drop(inner);
                self.wake();
            }
            Err(e) => {
                shard.unreserve();
                let _ = reply.send(Err(StartError::Connect {
                    addr,
                    source: std::io::Error::other(e),
                }));
            }
        }
    }

    /// Runs the endpoint until the shard drops it.
    pub(crate) async fn run(self: Rc<Self>, shard: Rc<Shard>) {
        let mut timer: Option<(Instant, glommio::timer::Timer)> = None;
        std::future::poll_fn(|cx| self.poll_run(&shard, cx, &mut timer)).await
    }

    fn poll_run(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        cx: &mut Context<'_>,
        timer: &mut Option<(Instant, glommio::timer::Timer)>,
    ) -> Poll<()> {
        {
            let mut w = self.waker.borrow_mut();
            if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *w = Some(cx.waker().clone());
            }
        }
        loop {
            if self.closed.get() {
                return Poll::Ready(());
            }
            let now = Instant::now();
            self.flush_held();
            let mut more = false;
            for round in 0..RECV_ROUNDS {
                let mut got = Vec::new();
                let r = match self.udp.borrow_mut().as_mut() {
                    Some(udp) => udp.recv(|from, ip, ecn, d| got.push((from, ip, ecn, BytesMut::from(d)))),
                    None => return Poll::Ready(()),
                };
                match r {
                    Ok(0) => break,
                    Ok(_) => {
                        for (from, ip, ecn, d) in got {
                            let ecn = ecn.and_then(|e| EcnCodepoint::from_bits(e as u8));
                            self.on_datagram(shard, now, from, ip, ecn, d, true);
                        }
                        more = round + 1 == RECV_ROUNDS;
                    }
                    Err(e) => {
                        tracing::debug!(shard = shard.index, error = %e, "quic recv failed");
                        let refused = match self.udp.borrow().as_ref() {
                            Some(udp) => udp.take_refusals(),
                            None => Vec::new(),
                        };
                        self.refused(shard, now, &refused);
                        break;
                    }
                }
            }
            shard.flush_outgoing();
            let relayed = std::mem::take(&mut self.inner.borrow_mut().forwarded);
            for (from, ip, ecn, d) in relayed {
                self.on_datagram(shard, now, from, ip, ecn, d, false);
            }
            self.fire_timers(shard, now);
            self.drive_dirty(shard, now);
            if more {
                // Still datagrams waiting: let the sessions run, then come back.
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            // Wait for the socket, a timer, or a wake (a session wrote, a
            // relayed datagram arrived).
            let readable = match self.udp.borrow_mut().as_mut() {
                Some(udp) => udp.poll_readable(cx).is_ready(),
                None => return Poll::Ready(()),
            };
            if readable {
                continue;
            }
            if self.held.borrow().is_some() {
                let writable = match self.udp.borrow_mut().as_mut() {
                    Some(udp) => udp.poll_writable(cx).is_ready(),
                    None => return Poll::Ready(()),
                };
                if writable {
                    continue;
                }
            }
            let next = self.inner.borrow().timers.peek().map(|Reverse((t, _, _))| *t);
            match next {
                Some(t) if t <= Instant::now() => continue,
                Some(t) => {
                    if timer.as_ref().map(|(at, _)| *at) != Some(t) {
                        *timer = Some((t, glommio::timer::Timer::new(t - Instant::now())));
                    }
                    let (_, tm) = timer.as_mut().expect("set above");
                    if Pin::new(tm).poll(cx).is_ready() {
                        *timer = None;
                        continue;
                    }
                }
                None => *timer = None,
            }
            let blocked = self.held.borrow().is_some();
            if (!blocked && !self.inner.borrow().dirty.is_empty()) || !self.inner.borrow().forwarded.is_empty() {
                continue;
            }
            return Poll::Pending;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn on_datagram(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
        may_relay: bool,
    ) {
        if let (true, Some(listener)) = (may_relay, self.listener) {
            let shards = shard.mesh.outboxes.len();
            if let Some(owner) = cid::owner(&data, shards).filter(|&o| o != shard.index) {
                // Another shard's connection (the peer's address changed,
                // so the kernel hashed it to this socket): hand it over.
                shard.stats.quic_forwarded.add(1);
                shard.relay(
                    owner,
                    Command::QuicDatagram {
                        listener,
                        datagram: Relayed {
                            from,
                            local_ip,
                            ecn: ecn.map(|e| e as u8),
                            data,
                        },
                    },
                );
                return;
            }
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.scratch.clear();
        let event = inner.ep.handle(now, from, local_ip, ecn, data, &mut inner.scratch);
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = inner.conns.get_mut(&ch.0) {
                    c.q.handle_event(ev);
                    mark(&mut inner.dirty, c, ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                if shard.is_stopping() || !shard.reserve() {
                    // Refused before any handshake work: CONNECTION_REFUSED.
                    let t = inner.ep.refuse(incoming, &mut inner.scratch);
                    self.send(&t, &inner.scratch[..t.size]);
                    return;
                }
                match inner.ep.accept(incoming, now, &mut inner.scratch, None) {
                    Ok((ch, q)) => {
                        let deadline = now + shard.cfg.handshake_timeout;
                        inner.insert(ch, q, Side::Server, None, deadline);
                        self.live.set(self.live.get() + 1);
                    }
                    Err(e) => {
                        shard.unreserve();
                        shard.stats.handshake_failures.add(1);
                        if let Some(t) = e.response {
                            self.send(&t, &inner.scratch[..t.size]);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.send(&t, &inner.scratch[..t.size]);
            }
            None => {}
        }
    }

    fn fire_timers(self: &Rc<Self>, shard: &Rc<Shard>, now: Instant) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        while let Some(&Reverse((t, ch, gen))) = inner.timers.peek() {
            if t > now {
                break;
            }
            inner.timers.pop();
            let Some(c) = inner.conns.get_mut(&ch) else { continue };
            if c.gen != gen || c.armed != Some(t) {
                continue;
            }
            c.armed = None;
            if c.timeout.is_some_and(|t| t <= now) {
                c.timeout = None;
                c.q.handle_timeout(now);
            }
            if c.deadline.is_some_and(|d| d <= now) {
                c.deadline = None;
                match c.phase {
                    Phase::Handshake { .. } => {
                        // The handshake did not finish in time.
                        c.q.close(now, VarInt::from_u32(app_code::NORMAL), "handshake timeout".into());
                        self.fail_handshake(shard, c, "handshake timed out".into());
                    }
                    Phase::Closing { code } => {
                        c.q.close(now, VarInt::from_u32(code), bytes::Bytes::new());
                        c.phase = Phase::Closed;
                        self.live.set(self.live.get() - 1);
                    }
                    Phase::Open | Phase::Closed => {}
                }
            }
            mark(&mut inner.dirty, c, ch);
        }
    }

    fn drive_dirty(self: &Rc<Self>, shard: &Rc<Shard>, now: Instant) {
        loop {
            if self.held.borrow().is_some() {
                // The socket is full: the rest wait, still marked dirty.
                return;
            }
            let next = self.inner.borrow_mut().dirty.pop();
            let Some(ch) = next else { return };
            self.drive(shard, ch, now);
            self.start_sessions(shard);
        }
    }

    /// Drains one connection: its events, transmits and next timeout.
    fn drive(self: &Rc<Self>, shard: &Rc<Shard>, ch: usize, now: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&ch) else { return };
        c.dirty = false;
        while let Some(ev) = c.q.poll() {
            self.on_event(shard, c, ch, ev, now);
        }
        while let Some(ev) = c.q.poll_endpoint_events() {
            if let Some(back) = inner.ep.handle_event(ConnectionHandle(ch), ev) {
                c.q.handle_event(back);
            }
        }
        loop {
            if self.held.borrow().is_some() {
                // Driven again once the socket drains.
                mark(&mut inner.dirty, c, ch);
                break;
            }
            inner.scratch.clear();
            let Some(t) = c.q.poll_transmit(now, self.max_datagrams, &mut inner.scratch) else {
                break;
            };
            let size = t.size;
            self.send_or_hold(t, &inner.scratch[..size]);
        }
        c.timeout = c.q.poll_timeout();
        if c.q.is_drained() {
            let c = inner.conns.remove(&ch).expect("present");
            drop(guard);
            self.lost(shard, c);
            return;
        }
        let next = [c.timeout, c.deadline].into_iter().flatten().min();
        if let Some(t) = next {
            if c.armed.is_none_or(|a| t < a) {
                c.armed = Some(t);
                inner.timers.push(Reverse((t, ch, c.gen)));
            }
        }
    }

    fn on_event(self: &Rc<Self>, shard: &Rc<Shard>, c: &mut Conn, ch: usize, ev: Event, now: Instant) {
        match ev {
            Event::Connected => self.connected(shard, c, ch),
            Event::ConnectionLost { reason } => {
                c.io.on_lost();
                if let Some(st) = &c.st {
                    st.request_close(lost_reason(&reason));
                }
                match c.phase {
                    Phase::Handshake { .. } => self.fail_handshake(shard, c, reason.to_string()),
                    Phase::Open | Phase::Closing { .. } => {
                        c.phase = Phase::Closed;
                        self.live.set(self.live.get() - 1);
                    }
                    Phase::Closed => {}
                }
            }
            Event::Stream(StreamEvent::Opened { dir }) => c.io.on_opened(&mut c.q, dir),
            Event::Stream(StreamEvent::Readable { id }) => c.io.on_readable(id),
            Event::Stream(StreamEvent::Writable { .. }) | Event::Stream(StreamEvent::Available { .. }) => {
                c.io.on_writable()
            }
            Event::Stream(StreamEvent::Finished { .. }) => {
                // Our output was all acknowledged: a closing session may go.
                if let Phase::Closing { code } = c.phase {
                    c.q.close(now, VarInt::from_u32(code), bytes::Bytes::new());
                    c.phase = Phase::Closed;
                    c.deadline = None;
                    self.live.set(self.live.get() - 1);
                }
            }
            Event::Stream(StreamEvent::Stopped { .. }) => c.io.on_lost(),
            Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }

    /// The handshake finished: the connection becomes a session.
    fn connected(self: &Rc<Self>, shard: &Rc<Shard>, c: &mut Conn, ch: usize) {
        let reply = match &mut c.phase {
            Phase::Handshake { reply } => reply.take(),
            _ => return,
        };
        c.deadline = None;
        let Some(st) = shard.admit_reserved(Wire::Quic, true) else {
            c.q.close(
                Instant::now(),
                VarInt::from_u32(app_code::NORMAL),
                "connection limit".into(),
            );
            c.phase = Phase::Closed;
            self.live.set(self.live.get() - 1);
            if let Some((reply, addr)) = reply {
                let _ = reply.send(Err(tcp::limit_error(addr)));
            }
            return;
        };
        c.phase = Phase::Open;
        if c.q.side() == Side::Client {
            c.io.announce_push(&mut c.q);
        }
        c.st = Some(Rc::clone(&st));
        let ends = Ends::new(c.q.remote_address(), self.local);
        let stream = QuicStream {
            ep: Rc::clone(self),
            ch,
            gen: c.gen,
        };
        self.starting.borrow_mut().push(Starting {
            st,
            stream,
            ends,
            reply: reply.map(|(r, _)| r),
        });
    }

    /// Runs the sessions `connected` prepared.
    fn start_sessions(self: &Rc<Self>, shard: &Rc<Shard>) {
        let starting = std::mem::take(&mut *self.starting.borrow_mut());
        for s in starting {
            let (ep, ch, id) = (Rc::clone(self), s.stream.ch, s.st.id);
            tcp::drive_then(shard, s.st, s.stream, &[], s.ends, move |reason| {
                ep.session_ended(ch, id, reason)
            });
            if let Some(reply) = s.reply {
                let _ = reply.send(Ok(id));
            }
        }
    }

    /// Our handshakes to these addresses met "port unreachable": nobody
    /// serves there, so they fail now rather than at their timeout.
    fn refused(&self, shard: &Shard, now: Instant, from: &[SocketAddr]) {
        if from.is_empty() {
            return;
        }
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        for (ch, c) in inner.conns.iter_mut() {
            let handshaking = matches!(c.phase, Phase::Handshake { .. });
            if handshaking && c.q.side() == Side::Client && from.contains(&c.q.remote_address()) {
                c.deadline = None;
                c.q.close(now, VarInt::from_u32(app_code::NORMAL), "refused".into());
                self.fail_with(shard, c, std::io::ErrorKind::ConnectionRefused.into());
                mark(&mut inner.dirty, c, *ch);
            }
        }
    }

    /// A handshake that will not finish: its reservation is released and
    /// a waiting `connect` is told why.
    fn fail_handshake(&self, shard: &Shard, c: &mut Conn, why: String) {
        self.fail_with(shard, c, std::io::Error::other(why));
    }

    fn fail_with(&self, shard: &Shard, c: &mut Conn, source: std::io::Error) {
        let Phase::Handshake { reply } = &mut c.phase else {
            return;
        };
        shard.unreserve();
        if c.q.side() == Side::Server {
            shard.stats.handshake_failures.add(1);
        }
        if let Some((reply, addr)) = reply.take() {
            let _ = reply.send(Err(StartError::Connect { addr, source }));
        }
        c.phase = Phase::Closed;
        self.live.set(self.live.get() - 1);
    }

    /// A connection quinn has finished with.
    fn lost(&self, shard: &Shard, mut c: Conn) {
        c.io.on_lost();
        self.fail_handshake(shard, &mut c, "connection closed during the handshake".into());
        if matches!(c.phase, Phase::Open | Phase::Closing { .. }) {
            self.live.set(self.live.get() - 1);
        }
        if let Some(st) = &c.st {
            st.request_close(CloseReason::Io(std::io::ErrorKind::ConnectionAborted));
        }
    }

    /// The session on `ch` ended with `reason`: close the connection,
    /// after its last bytes are acknowledged when it ended cleanly.
    fn session_ended(self: &Rc<Self>, ch: usize, _id: SessionId, reason: &CloseReason) {
        let now = Instant::now();
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&ch) else { return };
        c.st = None;
        if !matches!(c.phase, Phase::Open) {
            return;
        }
        let code = match reason {
            CloseReason::ProtocolError(_) | CloseReason::WebSocket(_) => app_code::PROTOCOL,
            CloseReason::PolicyViolation(_) => app_code::POLICY,
            _ => app_code::NORMAL,
        };
        let graceful = code == app_code::NORMAL && c.io.has_output();
        if graceful {
            c.io.finish(&mut c.q);
            c.phase = Phase::Closing { code };
            c.deadline = Some(now + CLOSE_GRACE);
        } else {
            c.q.close(now, VarInt::from_u32(code), reason.to_string().into_bytes().into());
            c.phase = Phase::Closed;
            self.live.set(self.live.get() - 1);
        }
        mark(&mut inner.dirty, c, ch);
        drop(guard);
        self.wake();
    }
}

impl Inner {
    fn insert(
        &mut self,
        ch: ConnectionHandle,
        q: quinn_proto::Connection,
        side: Side,
        reply: Option<(ConnectReply, SocketAddr)>,
        deadline: Instant,
    ) {
        self.next_gen += 1;
        let mut c = Conn {
            q,
            io: StreamIo::new(side),
            phase: Phase::Handshake { reply },
            st: None,
            timeout: None,
            deadline: Some(deadline),
            armed: None,
            gen: self.next_gen,
            dirty: false,
        };
        mark(&mut self.dirty, &mut c, ch.0);
        self.conns.insert(ch.0, c);
    }
}

fn mark(dirty: &mut Vec<usize>, c: &mut Conn, ch: usize) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(ch);
    }
}

/// Why a session ends when its connection is lost.
fn lost_reason(e: &ConnectionError) -> CloseReason {
    use std::io::ErrorKind;
    match e {
        ConnectionError::TimedOut => CloseReason::IdleTimeout,
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => CloseReason::PeerClosed,
        ConnectionError::Reset => CloseReason::Io(ErrorKind::ConnectionReset),
        ConnectionError::LocallyClosed => CloseReason::LocalClose,
        ConnectionError::TransportError(_) | ConnectionError::VersionMismatch | ConnectionError::CidsExhausted => {
            CloseReason::Io(ErrorKind::InvalidData)
        }
    }
}

/// A session's view of its connection: whole prefixed packets in and out.
pub(crate) struct QuicStream {
    ep: Rc<Endpoint>,
    ch: usize,
    gen: u64,
}

impl QuicStream {
    fn with<R>(
        &self,
        none: R,
        f: impl FnOnce(&mut StreamIo, &mut quinn_proto::Connection) -> (R, super::stream::Touched),
    ) -> R {
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
        self.with(gone, |io, q| io.poll_write(q, cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        // quinn holds what was written until it is acknowledged.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
