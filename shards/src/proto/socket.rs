//! A connected TCP socket as a session and its handshakes (TLS, the
//! WebSocket upgrade) read and write it: on the shard's readiness table
//! (`epoll`, the default) or on glommio's stream, which arms a poll on the
//! shard's ring after every short read (`EngineConfig::tcp_epoll`, and the
//! fallback when the socket cannot join the table).

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::epoll::io::EpollStream;
use crate::epoll::ShardEpoll;
use crate::shard::Shard;

pub(crate) enum TcpConn {
    Epoll(EpollStream),
    Glommio(TcpStream),
}

impl TcpConn {
    /// `stream` on `shard`'s readiness table if it has one.
    pub fn on(shard: &Shard, stream: TcpStream) -> Self {
        let Some(ep) = shard.drivers.get::<ShardEpoll>() else {
            return Self::Glommio(stream);
        };
        match onto_epoll(ep, &stream) {
            // The table has its own handle on the socket; glommio's goes.
            Some(s) => Self::Epoll(s),
            None => {
                shard.stats.socket_fallbacks.add(1);
                Self::Glommio(stream)
            }
        }
    }
}

/// A handle on `stream`'s socket registered with `ep`, or `None` (the
/// session then stays on the glommio stream) if the fd cannot be
/// duplicated (the process is out of fds) or registered.
fn onto_epoll(ep: Rc<ShardEpoll>, stream: &TcpStream) -> Option<EpollStream> {
    EpollStream::new(ep, duplicate(stream)?)
        .map_err(|e| tracing::debug!(error = %e, "a session stays on glommio's stream"))
        .ok()
}

/// A second fd for `stream`'s socket, for a driver of our own (the epoll
/// table, the shard ring) while glommio's stream is dropped: glommio has
/// no way to give its fd up. `None` when the process is out of fds.
pub(crate) fn duplicate(stream: &TcpStream) -> Option<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: duplicates an fd `stream` owns; the copy is checked, then owned.
    let fd = unsafe { libc::fcntl(stream.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) };
    if fd < 0 {
        tracing::debug!(error = %io::Error::last_os_error(), "a session stays on glommio's stream");
        return None;
    }
    // SAFETY: a fresh fd nobody else owns.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl AsyncRead for TcpConn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Epoll(s) => Pin::new(s).poll_read(cx, buf),
            Self::Glommio(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TcpConn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Epoll(s) => Pin::new(s).poll_write(cx, buf),
            Self::Glommio(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Epoll(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Glommio(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Epoll(s) => Pin::new(s).poll_flush(cx),
            Self::Glommio(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Epoll(s) => Pin::new(s).poll_close(cx),
            Self::Glommio(s) => Pin::new(s).poll_close(cx),
        }
    }
}

// Without the `tls` feature, `tls::accept` hands back the socket itself
// (and is never called); with it, TLS streams over a `TcpConn` drive.
impl super::drive::Drive for TcpConn {}
