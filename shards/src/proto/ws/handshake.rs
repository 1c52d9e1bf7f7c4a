//! The server side of the WebSocket opening handshake (RFC 6455 §4.2),
//! run on the shard that accepted the connection, in its own task, so a
//! slow peer never holds up the accept loop or other sessions.
//!
//! Request parsing is `httparse`'s; the accept key is `tungstenite`'s.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::super::drive::Drive;
use super::super::socket::TcpConn;
use super::super::tcp::{next_connection, Ends};
use super::super::tls::ClientTls;

use super::upgrade::{read_request, Verdict};
use super::upgrade::{status_line, ws_request};
pub use super::upgrade::{WsListenConfig, SUBPROTOCOL};
use crate::accept::{ConnectRequest, TlsInfo, Verdict as AcceptVerdict};
use crate::error::{CloseReason, StartError};
use crate::shard::{Reservation, Shard};
use crate::stats::{Protocol, Refusal};
use crate::wire::Wire;

/// Longest handshake response accepted (client side).
const MAX_RESPONSE: usize = 8 * 1024;
/// Most response headers parsed.
const MAX_HEADERS: usize = 32;

/// Where a WebSocket client connects: the `Host` header and request path.
#[derive(Debug, Clone)]
pub struct WsTarget {
    /// `Host` header value.
    pub host: String,
    /// Request path, e.g. `/ws`.
    pub path: String,
}

/// Connects (under TLS if asked), upgrades, and starts the session
/// (client side). Each step must finish within `timeout`.
pub(crate) async fn connect(
    shard: &Rc<Shard>,
    addr: std::net::SocketAddr,
    timeout: Duration,
    target: WsTarget,
    tls: Option<ClientTls>,
) -> Result<crate::id::SessionId, StartError> {
    let stream = TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(|e| StartError::Connect { addr, source: e.into() })?;
    let ends = Ends::of(shard, &stream);
    match tls {
        None => upgrade(shard, stream, addr, timeout, &target, ends, false).await,
        Some(tls) => {
            let stream = TcpConn::on(shard, stream);
            let stream = super::super::tls::connect(&tls, stream, addr, timeout).await?;
            upgrade(shard, stream, addr, timeout, &target, ends, true).await
        }
    }
}

/// A client's upgrade request to `path` on `host` with `key`, offering the
/// `msgtrans.v1` subprotocol as MsgTrans 2.0 clients do.
pub fn client_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    )
}

/// Checks the server's answer to an upgrade sent with `key`, as read so
/// far: `Ok(None)` while it is incomplete, `Ok(Some(len))` once it is a
/// 101 of `len` bytes with the right `Sec-WebSocket-Accept`, or why not.
pub fn check_response(buf: &[u8], key: &str) -> Result<Option<usize>, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => {
            if resp.code != Some(101) {
                return Err(format!(
                    "websocket upgrade refused: {} {}",
                    resp.code.unwrap_or(0),
                    resp.reason.unwrap_or("")
                ));
            }
            let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
            let ok = resp
                .headers
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case("Sec-WebSocket-Accept") && h.value == accept.as_bytes());
            if !ok {
                return Err("wrong Sec-WebSocket-Accept".into());
            }
            Ok(Some(len))
        }
        Ok(httparse::Status::Partial) if buf.len() < MAX_RESPONSE => Ok(None),
        _ => Err("malformed upgrade response".into()),
    }
}

async fn upgrade<S>(
    shard: &Rc<Shard>,
    mut stream: S,
    addr: std::net::SocketAddr,
    timeout: Duration,
    target: &WsTarget,
    ends: Ends,
    tls: bool,
) -> Result<crate::id::SessionId, StartError>
where
    S: Drive,
{
    let err = |e: std::io::Error| StartError::Connect { addr, source: e };
    let refused = |why: String| err(std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why));
    let key = tungstenite::handshake::client::generate_key();
    let exchange = async {
        let req = client_request(&target.host, &target.path, &key);
        stream.write_all(req.as_bytes()).await.map_err(err)?;
        let mut buf = Vec::with_capacity(512);
        let mut chunk = [0u8; 512];
        loop {
            if let Some(len) = check_response(&buf, &key).map_err(refused)? {
                return Ok((buf, len));
            }
            let n = stream.read(&mut chunk).await.map_err(err)?;
            if n == 0 {
                return Err(err(std::io::ErrorKind::UnexpectedEof.into()));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    let (buf, len) = super::super::within(timeout, exchange)
        .await
        .unwrap_or_else(|| Err(err(std::io::ErrorKind::TimedOut.into())))?;
    let st = shard
        .admit_over(Wire::WsClient, tls)
        .ok_or_else(|| StartError::connection_limit(addr))?;
    let id = st.id;
    stream.drive(shard, st, &buf[len..], ends.opening(Vec::new()));
    Ok(id)
}

/// Serves a listening socket on this shard: WebSocket upgrades, under TLS
/// when the config says so.
pub(crate) fn listen(shard: &Rc<Shard>, listener: std::net::TcpListener, cfg: WsListenConfig) {
    let cfg = Rc::new(cfg);
    shard.serve_listener(listener, move |shard, l| accept_loop(shard, l, cfg));
}

/// Accepts connections and runs each handshake in its own task, until the
/// shard stops listening. Every limit is checked before the TLS handshake
/// or the upgrade; the place stays held while they run.
async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, cfg: Rc<WsListenConfig>) {
    while let Some(stream) = next_connection(&shard, &listener).await {
        let ends = Ends::of(&shard, &stream);
        let held = match shard.hold(ends.peer.ip()) {
            Ok(held) => held,
            Err(why) => {
                // Over TLS, nothing short of a handshake could be said: the
                // close is the answer. In the clear, an HTTP status is one
                // write.
                if cfg.tls.is_none() {
                    glommio::spawn_local(refuse_early(stream, why)).detach();
                }
                continue;
            }
        };
        let (shard, cfg) = (Rc::clone(&shard), Rc::clone(&cfg));
        glommio::spawn_local(async move {
            match &cfg.tls {
                None => serve(shard, stream, &cfg, ends, None, held).await,
                Some(tls) => {
                    match super::super::tls::accept(tls, TcpConn::on(&shard, stream), shard.cfg.handshake_timeout).await
                    {
                        Some(stream) => {
                            let info = super::super::tls::server_info(&stream);
                            serve(shard, stream, &cfg, ends, Some(info), held).await
                        }
                        None => shard.stats.handshake_failures.add(1),
                    }
                }
            }
        })
        .detach();
    }
}

async fn serve<S>(
    shard: Rc<Shard>,
    mut stream: S,
    cfg: &WsListenConfig,
    ends: Ends,
    tls: Option<TlsInfo>,
    held: Reservation,
) where
    S: Drive,
{
    let timeout = shard.cfg.handshake_timeout;
    let mut buf = Vec::with_capacity(1024);
    let read = read_request(&mut stream, &mut buf, cfg);
    let verdict = match super::super::within(timeout, read).await {
        None => {
            tracing::debug!(shard = shard.index, reason = %CloseReason::HandshakeTimeout, "websocket handshake");
            shard.stats.handshake_failures.add(1);
            return;
        }
        Some(Err(_)) => return,
        Some(Ok(v)) => v,
    };
    let (key, protocol, len) = match verdict {
        Verdict::Upgrade { key, protocol, len } => (key, protocol, len),
        Verdict::Refuse(status, headers) => {
            shard.stats.handshake_failures.add(1);
            let _ = respond(&mut stream, status, headers, "").await;
            return;
        }
        Verdict::Deny(why, status, headers) => {
            shard.stats.count_refusal(why);
            let _ = respond(&mut stream, status, headers, "").await;
            return;
        }
    };
    let protocol_label = if tls.is_some() {
        Protocol::Wss
    } else {
        Protocol::WebSocket
    };
    let request = || ConnectRequest {
        websocket: Some(ws_request(&buf[..len])),
        ..ends.request(protocol_label, tls.clone())
    };
    if let AcceptVerdict::Refuse { status, reason } = shard.ask(request).await {
        let _ = respond(&mut stream, &status_line(status), "", &reason).await;
        return;
    }
    let Some(st) = held.admit(Wire::WsServer, cfg.tls.is_some()) else {
        let _ = respond(&mut stream, "503 Service Unavailable", "", "").await;
        return;
    };
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut head = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n"
    );
    if protocol {
        head.push_str(&format!("Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n"));
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        shard.finish(&st, CloseReason::PeerResetMidFrame);
        return;
    }
    // Bytes the client sent right after its request are its first frames.
    let certificates = tls.map(|t| t.peer_certificates).unwrap_or_default();
    stream.drive(&shard, st, &buf[len..], ends.opening(certificates));
}

/// How long a connection refused at accept may take to finish sending its
/// request, so closing does not reset it before it reads the answer.
const REFUSED_DRAIN: Duration = Duration::from_millis(200);

/// Refuses a connection before reading its request: the status at once,
/// then what the client was still sending is read and dropped for a
/// moment (closing on unread bytes would reset the connection and could
/// lose the answer).
async fn refuse_early(mut stream: TcpStream, why: Refusal) {
    let status = match why {
        Refusal::PerAddress | Refusal::ConnectRate => "429 Too Many Requests",
        _ => "503 Service Unavailable",
    };
    let head = format!("HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
    if stream.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    let _ = stream.shutdown(std::net::Shutdown::Write).await;
    let mut sink = [0u8; 1024];
    let drain = async {
        for _ in 0..MAX_RESPONSE / sink.len() {
            if !matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {
                break;
            }
        }
    };
    let _ = super::super::within(REFUSED_DRAIN, drain).await;
}

/// Answers a refused upgrade and closes; `headers` are extra header lines,
/// each ending in CRLF.
async fn respond<S: AsyncWrite + Unpin>(
    stream: &mut S,
    status: &str,
    headers: &str,
    body: &str,
) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\n{headers}Connection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    stream.close().await
}
