//! TCP: one `SO_REUSEPORT` listener per shard, so the kernel spreads
//! connections over the cores; `TCP_NODELAY` on every session, since the
//! driver already batches writes itself. Optionally under TLS.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Socket, Type};

use super::drive::{drive, Drive};
use super::socket::{self, TcpConn};
use super::tls::{self, ClientTls, ServerTls};
use crate::accept::{ConnectRequest, TlsInfo, Verdict};
use crate::error::StartError;
use crate::id::SessionId;
use crate::ring::io::RingIo;
use crate::ring::ShardRing;
use crate::session::SessionState;
use crate::shard::{Opening, Reservation, Shard};
use crate::stats::Protocol;
use crate::wire::Wire;

/// Listen backlog per shard socket.
const BACKLOG: i32 = 1024;

/// Binds one listening socket per shard on `addr`, all sharing its port.
/// Port 0 is resolved by the first bind and reused by the rest.
///
/// `SO_REUSEPORT` would let these sockets join any group already on the
/// port (another server of the same user) and silently split its traffic,
/// so the port is first claimed by a socket without it: if anything else
/// is bound there, that fails with [`StartError::AddrInUse`]. The claim is
/// released just before the group binds; a server that binds the same port
/// in that instant can still join, which no API of Linux's closes.
///
/// With `shared` (`EngineConfig::shared_port`) there is no claim: joining
/// the group already on the port is the point.
pub fn bind_reuseport(
    addr: SocketAddr,
    shards: usize,
    shared: bool,
) -> Result<(SocketAddr, Vec<std::net::TcpListener>), StartError> {
    let mut addr = if shared { addr } else { claim(addr)? };
    let mut out = Vec::with_capacity(shards);
    for _ in 0..shards {
        let err = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
            _ => StartError::Bind { addr, source },
        };
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP)).map_err(err)?;
        s.set_reuse_address(true).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        s.bind(&addr.into()).map_err(err)?;
        s.listen(BACKLOG).map_err(err)?;
        if addr.port() == 0 {
            addr = s.local_addr().map_err(err)?.as_socket().expect("inet socket");
        }
        out.push(s.into());
    }
    Ok((addr, out))
}

/// Binds `addr` without `SO_REUSEPORT` (so it conflicts with every socket
/// already there, listening or not) and lets go again; returns the address
/// with its port resolved.
fn claim(addr: SocketAddr) -> Result<SocketAddr, StartError> {
    let err = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
        _ => StartError::Bind { addr, source },
    };
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(socket2::Protocol::TCP)).map_err(err)?;
    // Connections of an earlier server still in TIME_WAIT must not count
    // as a busy port.
    s.set_reuse_address(true).map_err(err)?;
    s.bind(&addr.into()).map_err(err)?;
    Ok(s.local_addr().map_err(err)?.as_socket().expect("inet socket"))
}

/// The next connection `listener` accepts, or `None` once the shard stops
/// listening (its listener is shut down, so the pending accept fails).
/// Both accept loops go through here, so neither is ever cancelled with an
/// accept the ring may have completed.
///
/// A failed accept (`EMFILE` when the process is out of file descriptors,
/// `ENOBUFS`, ...) is counted in `ShardStats::accept_failures` by its
/// [`AcceptFailure`](crate::stats::AcceptFailure), and logged once per run
/// of failures, not once per try.
pub(crate) async fn next_connection(shard: &Shard, listener: &TcpListener) -> Option<TcpStream> {
    let mut failed = 0u64;
    loop {
        match listener.accept().await {
            // Accepted as the stop shut the listener: close it at once.
            Ok(stream) if shard.is_stopping() => drop(stream),
            Ok(stream) => {
                if failed > 0 {
                    tracing::info!(shard = shard.index, failed, "accepting again");
                }
                return Some(stream);
            }
            Err(_) if shard.is_stopping() => return None,
            Err(e) => {
                let e = std::io::Error::from(e);
                let kind = shard.stats.count_accept_failure(&e);
                if failed == 0 {
                    tracing::warn!(shard = shard.index, error = %e, cause = kind.label(), "accept failed; retrying every 10 ms");
                }
                failed += 1;
                // Back off, not spin, and not give up: EMFILE leaves the
                // connection in the listen backlog, and every retry would
                // fail at once until a session closes and frees an fd, so
                // retrying without a pause would burn the shard's core
                // (starving the sessions it still serves, whose closes are
                // what frees fds). 10 ms bounds the delay a waiting
                // connection sees once fds are back. The listener stays
                // open: closing it would turn a delay into refusals.
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves a listening socket on this shard: packets over TCP, under TLS
/// when `tls` is set.
pub(crate) fn listen(shard: &Rc<Shard>, listener: std::net::TcpListener, tls: Option<ServerTls>) {
    shard.serve_listener(listener, move |shard, l| accept_loop(shard, l, tls));
}

/// Accepts connections until the shard stops listening.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, tls: Option<ServerTls>) {
    while let Some(stream) = next_connection(&shard, &listener).await {
        let ends = Ends::of(&shard, &stream);
        // Every limit is checked before any TLS work; refused, the stream
        // is dropped, which closes it.
        let Ok(held) = shard.hold(ends.peer.ip()) else {
            continue;
        };
        match &tls {
            None if shard.has_accept_hook() => {
                let shard = Rc::clone(&shard);
                glommio::spawn_local(async move {
                    if shard.ask(|| ends.request(Protocol::Tcp, None)).await == Verdict::Accept {
                        if let Some(st) = held.admit(Wire::Tcp, false) {
                            drive_plain(&shard, st, stream, ends);
                        }
                    }
                })
                .detach();
            }
            None => {
                if let Some(st) = held.admit(Wire::Tcp, false) {
                    drive_plain(&shard, st, stream, ends);
                }
            }
            Some(tls) => {
                let (shard, tls) = (Rc::clone(&shard), tls.clone());
                glommio::spawn_local(async move { accept_tls(shard, stream, tls, ends, held).await }).detach();
            }
        }
    }
}

/// The TLS handshake of an accepted connection, holding its place under
/// the limits meanwhile (given back if it fails).
async fn accept_tls(shard: Rc<Shard>, stream: TcpStream, tls: ServerTls, ends: Ends, held: Reservation) {
    let stream = TcpConn::on(&shard, stream);
    let Some(stream) = tls::accept(&tls, stream, shard.cfg.handshake_timeout).await else {
        shard.stats.handshake_failures.add(1);
        return;
    };
    let info = tls::server_info(&stream);
    if shard.ask(|| ends.request(Protocol::TcpTls, Some(info.clone()))).await != Verdict::Accept {
        return;
    }
    if let Some(st) = held.admit(Wire::Tcp, true) {
        stream.drive(&shard, st, &[], ends.opening(info.peer_certificates));
    }
}

/// A connection's addresses, read before any TLS wraps it; also applies
/// the socket options every session gets.
#[derive(Clone, Copy)]
pub(crate) struct Ends {
    pub(crate) peer: SocketAddr,
    pub(crate) local: SocketAddr,
}

impl Ends {
    /// What the session is announced with.
    pub(crate) fn opening(&self, peer_certificates: Vec<Vec<u8>>) -> Opening {
        Opening {
            peer: self.peer,
            local: self.local,
            peer_certificates,
        }
    }

    /// What the accept hook is told of this connection.
    pub(crate) fn request(&self, protocol: Protocol, tls: Option<TlsInfo>) -> ConnectRequest {
        ConnectRequest {
            peer: self.peer,
            local: self.local,
            protocol,
            websocket: None,
            tls,
        }
    }

    pub(crate) fn of(shard: &Shard, stream: &TcpStream) -> Self {
        let _ = stream.set_nodelay(true);
        if let Some(idle) = shard.cfg.tcp_keepalive {
            set_keepalive(stream, idle);
        }
        let unknown = || SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            peer: stream.peer_addr().unwrap_or_else(|_| unknown()),
            local: stream.local_addr().unwrap_or_else(|_| unknown()),
        }
    }
}

impl Drive for TcpStream {
    fn drive(self, shard: &Rc<Shard>, st: Rc<SessionState>, initial: &[u8], opening: Opening) {
        if let Some(ring) = shard.drivers.get::<ShardRing>() {
            let Some(io) = onto_ring(&ring, &self) else {
                shard.stats.socket_fallbacks.add(1);
                return drive(shard, st, self, initial, opening);
            };
            // The ring has its own handle on the socket; glommio's goes.
            drop(self);
            return shard.start_session(st, io, initial, opening, |_| {});
        }
        drive(shard, st, TcpConn::on(shard, self), initial, opening)
    }
}

/// A plain TCP session.
fn drive_plain(shard: &Rc<Shard>, st: Rc<SessionState>, stream: TcpStream, ends: Ends) {
    stream.drive(shard, st, &[], ends.opening(Vec::new()))
}

/// A handle on `stream`'s socket for the ring, or `None` (the session then
/// stays on the glommio stream) if the fd cannot be duplicated.
fn onto_ring(ring: &Rc<ShardRing>, stream: &TcpStream) -> Option<RingIo> {
    RingIo::new(Rc::clone(ring), socket::duplicate(stream)?)
        .map_err(|e| tracing::debug!(error = %e, "a session stays on glommio's stream"))
        .ok()
}

/// Turns on TCP keepalive: first probe after `idle`, then every `idle / 4`,
/// giving up after 4 unanswered probes.
fn set_keepalive(stream: &TcpStream, idle: Duration) {
    use std::os::fd::{AsRawFd, BorrowedFd};
    // SAFETY: the fd belongs to `stream`, which outlives this borrow.
    let fd = unsafe { BorrowedFd::borrow_raw(stream.as_raw_fd()) };
    let ka = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval((idle / 4).max(Duration::from_secs(1)))
        .with_retries(4);
    let _ = socket2::SockRef::from(&fd).set_tcp_keepalive(&ka);
}

/// Opens an outgoing connection on this shard, under TLS if asked.
pub(crate) async fn connect(
    shard: &Rc<Shard>,
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<ClientTls>,
) -> Result<SessionId, StartError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| StartError::Connect { addr, source: e.into() })?;
    let ends = Ends::of(shard, &stream);
    match tls {
        None => {
            let st = shard
                .admit(Wire::Tcp)
                .ok_or_else(|| StartError::connection_limit(addr))?;
            let id = st.id;
            drive_plain(shard, st, stream, ends);
            Ok(id)
        }
        Some(tls) => {
            let stream = tls::connect(&tls, TcpConn::on(shard, stream), addr, timeout).await?;
            let st = shard
                .admit_over(Wire::Tcp, true)
                .ok_or_else(|| StartError::connection_limit(addr))?;
            let id = st.id;
            stream.drive(shard, st, &[], ends.opening(Vec::new()));
            Ok(id)
        }
    }
}
