//! One shard's QUIC endpoint and the driver that runs it: a sans-IO
//! `quinn_proto::Endpoint` fed from the shard's own UDP socket, with every
//! connection's timers kept in a heap on the shard. After each input (a
//! datagram batch, a timer, a session writing) every connection it touched
//! is drained of endpoint events, application events, transmits and its
//! next timeout, as quinn-proto asks.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use quinn_proto::{EcnCodepoint, EndpointConfig, Side};
use rustc_hash::FxHashMap;

mod admit;
mod conns;
mod io;
mod registry;

pub(crate) use io::QuicStream;
pub(crate) use registry::QuicEndpoints;

use super::cid::ShardCids;
use super::stream::StreamIo;
use super::udp::Udp;
use super::ServerSide;
use crate::accept::{ConnectRequest, TlsInfo};
use crate::error::StartError;
use crate::id::SessionId;
use crate::pool::buffer::BufferPool;
use crate::session::SessionState;
use crate::shard::{Opening, Shard};

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
    /// The application's accept hook refused the connection.
    pub const REFUSED: u32 = 3;
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
    /// The address it was admitted for, counted against that address's
    /// limits until it ends (`None`: a connection we opened).
    peer_ip: Option<IpAddr>,
    /// The accept hook has been asked about it (or need not be).
    asked: bool,
}

struct Inner {
    ep: quinn_proto::Endpoint,
    /// Boxed: a quinn connection is 6 KB, and a map growing past 32,768
    /// of them inline moved 200 MB and faulted in 400 MB at once, a stall
    /// that overflowed the socket's 64 MiB of queued datagrams.
    conns: FxHashMap<usize, Box<Conn>>,
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
    /// Half-open handshakes on the shard past which a new connection must
    /// first answer a Retry.
    retry_after: Option<usize>,
    max_datagrams: usize,
    /// Connections not yet closed (handshaking, open, closing).
    live: Cell<usize>,
    /// Sessions whose handshake finished during a drive, started once the
    /// endpoint is no longer borrowed (glommio polls a new task at once).
    starting: RefCell<Vec<Starting>>,
    /// Handshakes finished during a drive whose admission the accept hook
    /// decides, asked once the endpoint is no longer borrowed:
    /// (handle, generation, what the hook is told).
    asking: RefCell<Vec<(usize, u64, ConnectRequest)>>,
    /// Set when the shard stops: the driver ends and the socket closes.
    closed: Cell<bool>,
    /// A connection's transmit that the full socket did not take. While it
    /// waits, no connection is asked for more, and the driver waits for the
    /// socket to drain. Dropping it instead would be a loss of our own
    /// making, which QUIC answers by slowing down, and a dropped
    /// CONNECTION_CLOSE is never sent again (a burst of closes lost a third
    /// of them that way, each then ending only at the peer's idle timeout).
    held: RefCell<Option<(quinn_proto::Transmit, Vec<u8>)>>,
    /// The shard's buffer pool, which large stream writes borrow from.
    pool: Arc<BufferPool>,
}

struct Starting {
    st: Rc<SessionState>,
    stream: QuicStream,
    /// Its addresses and the peer's certificate chain.
    opening: Opening,
    reply: Option<ConnectReply>,
}

impl Endpoint {
    /// A server endpoint on one of the listener's sockets.
    pub(crate) fn server(
        shard: &Shard,
        listener: usize,
        socket: std::net::UdpSocket,
        side: ServerSide,
    ) -> std::io::Result<Rc<Self>> {
        Self::new(shard, Some(listener), socket, Some(side))
    }

    /// A client endpoint on an ephemeral port.
    pub(crate) fn client(shard: &Shard, socket: std::net::UdpSocket) -> std::io::Result<Rc<Self>> {
        Self::new(shard, None, socket, None)
    }

    fn new(
        shard: &Shard,
        listener: Option<usize>,
        socket: std::net::UdpSocket,
        side: Option<ServerSide>,
    ) -> std::io::Result<Rc<Self>> {
        let mut ec = match side.as_ref().and_then(|s| s.reset_key) {
            Some(key) => {
                let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
                EndpointConfig::new(Arc::new(key))
            }
            None => EndpointConfig::default(),
        };
        let (index, cid_key) = (shard.index, shard.mesh.secret.clone());
        ec.cid_generator(move || Box::new(ShardCids::new(index, cid_key.clone())));
        let retry_after = side.as_ref().and_then(|s| s.retry_after);
        let server = side.map(|s| s.quinn);
        let udp = Udp::new(socket)?;
        Ok(Rc::new(Self {
            inner: RefCell::new(Inner {
                ep: quinn_proto::Endpoint::new(Arc::new(ec), server, true, None),
                conns: FxHashMap::default(),
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
            retry_after,
            live: Cell::new(0),
            starting: RefCell::new(Vec::new()),
            asking: RefCell::new(Vec::new()),
            closed: Cell::new(false),
            held: RefCell::new(None),
            pool: Arc::clone(shard.buffers.pool()),
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
        if shard.reserve(None).is_err() {
            let _ = reply.send(Err(StartError::connection_limit(addr)));
            return;
        }
        let now = Instant::now();
        let mut inner = self.inner.borrow_mut();
        match inner.ep.connect(now, config, addr, server_name) {
            Ok((ch, q)) => {
                inner.insert(ch, q, Side::Client, Some((reply, addr)), now + timeout, None);
                self.live.set(self.live.get() + 1);
                drop(inner);
                self.wake();
            }
            Err(e) => {
                shard.unreserve(None);
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
}

/// What the handshake agreed, as the accept hook sees it.
fn tls_info(q: &quinn_proto::Connection) -> TlsInfo {
    let data = q
        .crypto_session()
        .handshake_data()
        .and_then(|d| d.downcast::<quinn_proto::crypto::rustls::HandshakeData>().ok());
    let chain = q
        .crypto_session()
        .peer_identity()
        .and_then(|id| id.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>().ok());
    TlsInfo {
        server_name: data.as_ref().and_then(|d| d.server_name.clone()),
        alpn: data.and_then(|d| d.protocol),
        peer_certificates: chain
            .map(|c| c.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default(),
    }
}
