//! TLS (rustls, ring provider) under TCP and WebSocket sessions. The
//! handshake runs on the shard that owns the connection, in the
//! connection's own task, bounded by the handshake timeout, so a slow or
//! silent peer costs nothing but its own socket.

use std::io::IoSlice;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use futures_rustls::{TlsAcceptor, TlsConnector};
use rustls::pki_types::ServerName;

use super::within;
use crate::accept::TlsInfo;
use crate::error::StartError;

/// TLS for a listener: the rustls server configuration.
pub type ServerTls = Arc<rustls::ServerConfig>;

/// TLS for an outgoing connection.
#[derive(Clone)]
pub struct ClientTls {
    /// The rustls client configuration (roots, verifier).
    pub config: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: ServerName<'static>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish()
    }
}

/// A socket under TLS that writes gathered records in one write.
///
/// rustls hands its queued records to `write_vectored`, one slice per
/// record (at most 16 KiB each). glommio's stream has no vectored write, so
/// the default sent only the first slice: a 64 KiB packet left in five
/// `send` calls and as many loopback segments, and WSS spent 1.4× tokio-
/// rustls's kernel time per message at 64 KiB. Copying the slices into
/// one buffer costs a memcpy of bytes just encrypted; the syscalls and
/// segments it saves cost more.
#[derive(Debug)]
pub(crate) struct Gather<S> {
    inner: S,
}

thread_local! {
    /// The gathering buffer, one per shard thread rather than per session:
    /// it is used only inside one `poll_write_vectored` call, and a
    /// per-session one would keep its high-water mark (up to 256 KiB) on
    /// every idle TLS session.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The most one gathered write copies; rustls's queue rarely holds more.
const GATHER_MAX: usize = 256 * 1024;

impl<S> Gather<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gather<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gather<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let mut full = bufs.iter().filter(|b| !b.is_empty());
        match (full.next(), full.next()) {
            (None, _) => return Poll::Ready(Ok(0)),
            (Some(one), None) => return Pin::new(&mut this.inner).poll_write(cx, one),
            _ => {}
        }
        // The bytes written are the first n of the slices laid end to end,
        // which is what a vectored write reports; a Pending leaves nothing
        // behind (the caller offers the same slices again).
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            for b in bufs {
                let room = GATHER_MAX - scratch.len();
                scratch.extend_from_slice(&b[..b.len().min(room)]);
                if scratch.len() == GATHER_MAX {
                    break;
                }
            }
            Pin::new(&mut this.inner).poll_write(cx, scratch)
        })
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// The server side of the handshake. `None` when it failed or timed out
/// (the connection is simply dropped: there is no session to report).
pub(crate) async fn accept<S>(
    tls: &ServerTls,
    stream: S,
    timeout: Duration,
) -> Option<futures_rustls::server::TlsStream<Gather<S>>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match within(timeout, TlsAcceptor::from(Arc::clone(tls)).accept(Gather::new(stream))).await {
        Some(Ok(s)) => Some(s),
        Some(Err(e)) => {
            tracing::debug!(error = %e, "TLS handshake failed");
            None
        }
        None => {
            tracing::debug!("TLS handshake timed out");
            None
        }
    }
}

/// What the server side of a handshake agreed, for the accept hook.
pub(crate) fn server_info<S>(stream: &futures_rustls::server::TlsStream<S>) -> TlsInfo {
    let conn = stream.get_ref().1;
    TlsInfo {
        server_name: conn.server_name().map(str::to_owned),
        alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
        peer_certificates: conn
            .peer_certificates()
            .map(|chain| chain.iter().map(|c| c.to_vec()).collect())
            .unwrap_or_default(),
    }
}

/// The client side of the handshake; fails with the reason (an untrusted
/// certificate, a name mismatch, a timeout...).
pub(crate) async fn connect<S>(
    tls: &ClientTls,
    stream: S,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<futures_rustls::client::TlsStream<Gather<S>>, StartError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(Arc::clone(&tls.config));
    match within(timeout, connector.connect(tls.server_name.clone(), Gather::new(stream))).await {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(StartError::Connect { addr, source: e }),
        None => Err(StartError::Connect {
            addr,
            source: std::io::ErrorKind::TimedOut.into(),
        }),
    }
}

// TLS sessions stay on their stream: rustls needs a byte stream to read
// records from, not the ring's lent buffers.
impl<S: AsyncRead + AsyncWrite + Unpin + 'static> super::drive::Drive for futures_rustls::server::TlsStream<Gather<S>> {}
impl<S: AsyncRead + AsyncWrite + Unpin + 'static> super::drive::Drive for futures_rustls::client::TlsStream<Gather<S>> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per write and records each.
    struct Recorder {
        writes: Vec<Vec<u8>>,
        room: usize,
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            if self.room == 0 {
                return Poll::Pending;
            }
            let n = buf.len().min(self.room);
            self.writes.push(buf[..n].to_vec());
            Poll::Ready(Ok(n))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn write(g: &mut Gather<Recorder>, bufs: &[&[u8]]) -> Poll<std::io::Result<usize>> {
        let slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        Pin::new(g).poll_write_vectored(&mut cx, &slices)
    }

    #[test]
    fn records_leave_in_one_write_and_a_short_write_counts_across_them() {
        let mut g = Gather::new(Recorder {
            writes: Vec::new(),
            room: usize::MAX,
        });
        let n = write(&mut g, &[b"abc", b"", b"defg", b"h"]);
        assert!(matches!(n, Poll::Ready(Ok(8))));
        assert_eq!(g.inner.writes, vec![b"abcdefgh".to_vec()], "one write, in order");

        g.inner.writes.clear();
        g.inner.room = 5;
        assert!(matches!(write(&mut g, &[b"abc", b"defg"]), Poll::Ready(Ok(5))));
        assert_eq!(g.inner.writes, vec![b"abcde".to_vec()]);

        g.inner.room = 0;
        assert!(write(&mut g, &[b"abc", b"defg"]).is_pending());
        assert!(matches!(write(&mut g, &[b"", b""]), Poll::Ready(Ok(0))));
    }
}
