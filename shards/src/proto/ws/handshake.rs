//! The server side of the WebSocket opening handshake (RFC 6455 §4.2),
//! run on the shard that accepted the connection, in its own task, so a
//! slow peer never holds up the accept loop or other sessions.
//!
//! Request parsing is `httparse`'s; the accept key is `tungstenite`'s.

use std::rc::Rc;
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

use super::super::tcp::{drive, next_connection, Ends};
use super::super::tls::{ClientTls, ServerTls};

use crate::error::{CloseReason, StartError};
use crate::shard::Shard;
use crate::wire::Wire;

/// The subprotocol MsgTrans 2.0 clients offer; echoed when offered.
pub const SUBPROTOCOL: &str = "msgtrans.v1";
/// Longest handshake request accepted: 8 KiB of headers is generous for
/// an upgrade; more is refused with 431 rather than buffered.
const MAX_REQUEST: usize = 8 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 32;

/// What a WebSocket listener serves.
#[derive(Debug, Clone)]
pub struct WsListenConfig {
    /// The only path upgraded; any other gets 404.
    pub path: String,
    /// Serve `wss://`: TLS first, then the upgrade.
    pub tls: Option<ServerTls>,
}

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
        Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => Ok(None),
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
    S: AsyncRead + AsyncWrite + Unpin + 'static,
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
    drive(shard, st, stream, &buf[len..], ends);
    Ok(id)
}

/// Accepts connections and runs each handshake in its own task, until the
/// shard stops listening.
/// Serves a listening socket on this shard: WebSocket upgrades, under TLS
/// when the config says so.
pub(crate) fn listen(shard: &Rc<Shard>, listener: std::net::TcpListener, cfg: WsListenConfig) {
    let cfg = Rc::new(cfg);
    shard.serve_listener(listener, move |shard, l| accept_loop(shard, l, cfg));
}

async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, cfg: Rc<WsListenConfig>) {
    while let Some(stream) = next_connection(&shard, &listener).await {
        let (shard, cfg) = (Rc::clone(&shard), Rc::clone(&cfg));
        glommio::spawn_local(async move {
            let ends = Ends::of(&shard, &stream);
            match &cfg.tls {
                None => serve(shard, stream, &cfg, ends).await,
                Some(tls) => match super::super::tls::accept(tls, stream, shard.cfg.handshake_timeout).await {
                    Some(stream) => serve(shard, stream, &cfg, ends).await,
                    None => shard.stats.handshake_failures.add(1),
                },
            }
        })
        .detach();
    }
}

/// The outcome of reading and checking an upgrade request.
enum Verdict {
    /// Upgrade, echoing the subprotocol if offered; `usize` = request length.
    Upgrade { key: String, protocol: bool, len: usize },
    /// Refuse with this status line.
    Refuse(&'static str),
}

async fn serve<S>(shard: Rc<Shard>, mut stream: S, cfg: &WsListenConfig, ends: Ends)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
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
        Verdict::Refuse(status) => {
            shard.stats.handshake_failures.add(1);
            let _ = respond(&mut stream, status, "").await;
            return;
        }
    };
    let Some(st) = shard.admit_over(Wire::WsServer, cfg.tls.is_some()) else {
        let _ = respond(&mut stream, "503 Service Unavailable", "").await;
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
    drive(&shard, st, stream, &buf[len..], ends);
}

async fn respond<S: AsyncWrite + Unpin>(stream: &mut S, status: &str, body: &str) -> std::io::Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(msg.as_bytes()).await?;
    stream.close().await
}

/// Reads the request head and decides.
async fn read_request<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    cfg: &WsListenConfig,
) -> std::io::Result<Verdict> {
    let mut chunk = [0u8; 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(len)) => return Ok(judge(&req, len, cfg)),
            Ok(httparse::Status::Partial) => {}
            Err(httparse::Error::TooManyHeaders) => return Ok(Verdict::Refuse("431 Request Header Fields Too Large")),
            Err(_) => return Ok(Verdict::Refuse("400 Bad Request")),
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Verdict::Refuse("431 Request Header Fields Too Large"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn judge(req: &httparse::Request<'_, '_>, len: usize, cfg: &WsListenConfig) -> Verdict {
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
    };
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let path = req.path.unwrap_or("");
    let path = path.split('?').next().unwrap_or(path);
    if req.method != Some("GET") || !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        // A plain HTTP request: not for us.
        return Verdict::Refuse("400 Bad Request");
    }
    if path != cfg.path {
        return Verdict::Refuse("404 Not Found");
    }
    if header("Sec-WebSocket-Version") != Some("13") {
        return Verdict::Refuse("426 Upgrade Required");
    }
    let Some(key) = header("Sec-WebSocket-Key") else {
        return Verdict::Refuse("400 Bad Request");
    };
    Verdict::Upgrade {
        key: key.trim().to_string(),
        protocol: has_token("Sec-WebSocket-Protocol", SUBPROTOCOL),
        len,
    }
}
