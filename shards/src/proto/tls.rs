//! TLS (rustls, ring provider) under TCP and WebSocket sessions. The
//! handshake runs on the shard that owns the connection, in the
//! connection's own task, bounded by the handshake timeout, so a slow or
//! silent peer costs nothing but its own socket.
//!
//! rustls hands its queued records to `write_vectored`, one slice per
//! record (at most 16 KiB each). The glommio fork's `TcpStream` sends them
//! in one `sendmsg` (vendor/glommio/README.md); before it had a vectored
//! write, the default sent only the first slice, so a 64 KiB packet left in
//! five `send` calls and as many loopback segments, and then a wrapper here
//! copied the records into one buffer to write them at once.

use std::net::SocketAddr;
use std::sync::Arc;
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

/// The server side of the handshake. `None` when it failed or timed out
/// (the connection is simply dropped: there is no session to report).
pub(crate) async fn accept<S>(
    tls: &ServerTls,
    stream: S,
    timeout: Duration,
) -> Option<futures_rustls::server::TlsStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match within(timeout, TlsAcceptor::from(Arc::clone(tls)).accept(stream)).await {
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
) -> Result<futures_rustls::client::TlsStream<S>, StartError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let connector = TlsConnector::from(Arc::clone(&tls.config));
    match within(timeout, connector.connect(tls.server_name.clone(), stream)).await {
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
impl<S: AsyncRead + AsyncWrite + Unpin + 'static> super::drive::Drive for futures_rustls::server::TlsStream<S> {}
impl<S: AsyncRead + AsyncWrite + Unpin + 'static> super::drive::Drive for futures_rustls::client::TlsStream<S> {}
