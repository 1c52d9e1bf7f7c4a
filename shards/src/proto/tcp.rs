//! TCP: one `SO_REUSEPORT` listener per shard, so the kernel spreads
//! connections over the cores; `TCP_NODELAY` on every session, since the
//! driver already batches writes itself.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use glommio::net::{TcpListener, TcpStream};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::{CloseReason, StartError};
use crate::event::EngineEvent;
use crate::id::SessionId;
use crate::session::{Driver, SessionState};
use crate::shard::Shard;
use crate::wire::Wire;

/// Listen backlog per shard socket.
const BACKLOG: i32 = 1024;

/// Binds one listening socket per shard on `addr`, all sharing its port.
/// Port 0 is resolved by the first bind and reused by the rest.
pub fn bind_reuseport(addr: SocketAddr, shards: usize) -> Result<(SocketAddr, Vec<std::net::TcpListener>), StartError> {
    let mut out = Vec::with_capacity(shards);
    let mut addr = addr;
    for _ in 0..shards {
        let err = |source| StartError::Bind { addr, source };
        let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP)).map_err(err)?;
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

/// Accepts connections until the task is dropped (on stop).
pub(crate) async fn accept_loop(shard: Rc<Shard>, listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok(stream) => {
                start_session(&shard, stream);
            }
            Err(_) if shard.is_stopping() => return,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the
                // listener stays open and accepting resumes when fds free up.
                tracing::warn!(shard = shard.index, error = %e, "accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn start_session(shard: &Rc<Shard>, stream: TcpStream) -> Option<SessionId> {
    let Some(st) = shard.admit(Wire::Tcp) else {
        // Dropping the stream closes it: a clean refusal.
        tracing::debug!(shard = shard.index, "connection refused: limit reached");
        return None;
    };
    let id = st.id;
    drive(shard, st, stream, &[]);
    Some(id)
}

/// Announces an admitted session and runs its driver until it ends.
/// `initial` holds bytes already read from the stream (after a handshake).
pub(crate) fn drive(shard: &Rc<Shard>, st: Rc<SessionState>, stream: TcpStream, initial: &[u8]) {
    let _ = stream.set_nodelay(true);
    if let Some(idle) = shard.cfg.tcp_keepalive {
        set_keepalive(&stream, idle);
    }
    let id = st.id;
    let peer = stream.peer_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let local = stream.local_addr().unwrap_or_else(|_| ([0, 0, 0, 0], 0).into());
    let shard = Rc::clone(shard);
    let protocol = st.wire.protocol();
    shard.announce_open(
        &st,
        EngineEvent::Opened {
            id,
            peer,
            local,
            protocol,
        },
    );
    let driver = Driver::new(Rc::clone(&shard), Rc::clone(&st), stream, initial);
    glommio::spawn_local(async move {
        let reason = driver.await;
        shard.finish(&st, reason);
    })
    .detach();
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

/// Opens an outgoing connection on this shard.
pub(crate) async fn connect(shard: &Rc<Shard>, addr: SocketAddr, timeout: Duration) -> Result<SessionId, StartError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| StartError::Connect { addr, source: e.into() })?;
    start_session(shard, stream).ok_or(StartError::Connect {
        addr,
        source: std::io::Error::other(CloseReason::ConnectionLimit.to_string()),
    })
}
