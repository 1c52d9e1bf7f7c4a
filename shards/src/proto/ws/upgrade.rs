//! Judging a WebSocket upgrade request (server side): RFC 6455 §4.2.1
//! strictly, then the listener's own rules (origin allow-list, bearer
//! token). Pure: bytes and config in, a verdict out.

use futures_lite::{AsyncRead, AsyncReadExt};

use crate::accept::WsRequest;
use crate::proto::tls::ServerTls;
use crate::stats::Refusal;

/// The subprotocol MsgTrans 2.0 clients offer; echoed when offered.
pub const SUBPROTOCOL: &str = "msgtrans.v1";

/// What a WebSocket listener serves.
#[derive(Debug, Clone, Default)]
pub struct WsListenConfig {
    /// The only path upgraded; any other gets 404.
    pub path: String,
    /// Serve `wss://`: TLS first, then the upgrade.
    pub tls: Option<ServerTls>,
    /// Origins a browser page may connect from (`https://app.example`,
    /// compared without regard to case). Empty, the default: any. When
    /// set, a foreign or `null` Origin gets 403; a request with no Origin
    /// (not a browser) is allowed. Without it any web page a user visits
    /// can open a session with the user's cookies (cross-site WebSocket
    /// hijacking).
    pub allowed_origins: Vec<String>,
    /// A bearer token every upgrade must present, in an
    /// `Authorization: Bearer` header or a `token` query parameter
    /// (browsers cannot set headers). `None`, the default: no check.
    /// Missing or wrong: 401.
    pub auth_token: Option<String>,
}

/// Longest handshake request accepted: 8 KiB of headers is generous for
/// an upgrade; more is refused with 431 rather than buffered.
const MAX_REQUEST: usize = 8 * 1024;
/// Most headers parsed.
const MAX_HEADERS: usize = 32;
const BAD_REQUEST: &str = "400 Bad Request";
const TOO_LARGE: &str = "431 Request Header Fields Too Large";

/// The outcome of reading and checking an upgrade request.
pub(super) enum Verdict {
    /// Upgrade, echoing the subprotocol if offered; `usize` = request length.
    Upgrade { key: String, protocol: bool, len: usize },
    /// Refuse a request that is not a valid upgrade: this status line and
    /// these extra header lines (a handshake failure).
    Refuse(&'static str, &'static str),
    /// Refuse a valid upgrade that a listener rule does not admit: counted
    /// as a refusal of that kind.
    Deny(Refusal, &'static str, &'static str),
}

/// Reads the request head and decides.
pub(super) async fn read_request<S: AsyncRead + Unpin>(
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
            Err(httparse::Error::TooManyHeaders) => return Ok(Verdict::Refuse(TOO_LARGE, "")),
            Err(_) => return Ok(Verdict::Refuse(BAD_REQUEST, "")),
        }
        if buf.len() >= MAX_REQUEST {
            return Ok(Verdict::Refuse(TOO_LARGE, ""));
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
    if !has_token("Upgrade", "websocket") || !has_token("Connection", "upgrade") {
        // A plain HTTP request: not for us.
        return Verdict::Refuse(BAD_REQUEST, "");
    }
    // RFC 6455 §4.2.1: a GET, over HTTP/1.1 or later, with a Host.
    if req.method != Some("GET") {
        return Verdict::Refuse("405 Method Not Allowed", "Allow: GET\r\n");
    }
    if req.version != Some(1) || header("Host").is_none_or(|h| h.trim().is_empty()) {
        return Verdict::Refuse(BAD_REQUEST, "");
    }
    if path != cfg.path {
        return Verdict::Refuse("404 Not Found", "");
    }
    // §4.2.2: a version we do not speak is answered with the one we do.
    if header("Sec-WebSocket-Version") != Some("13") {
        return Verdict::Refuse("426 Upgrade Required", "Sec-WebSocket-Version: 13\r\n");
    }
    // §4.2.1: the key is a base64-encoded 16-byte value.
    let Some(key) = header("Sec-WebSocket-Key").map(str::trim) else {
        return Verdict::Refuse(BAD_REQUEST, "");
    };
    if data_encoding::BASE64
        .decode(key.as_bytes())
        .map_or(true, |k| k.len() != 16)
    {
        return Verdict::Refuse(BAD_REQUEST, "");
    }
    if !origin_allowed(header("Origin"), &cfg.allowed_origins) {
        return Verdict::Deny(Refusal::Origin, "403 Forbidden", "");
    }
    if let Some(token) = &cfg.auth_token {
        let offered = header("Authorization")
            .and_then(|v| v.trim().strip_prefix("Bearer "))
            .map(|t| t.trim().as_bytes().to_vec())
            .or_else(|| query_param(req.path.unwrap_or(""), "token"));
        if !offered.is_some_and(|t| same_secret(&t, token.as_bytes())) {
            return Verdict::Deny(
                Refusal::Unauthorized,
                "401 Unauthorized",
                "WWW-Authenticate: Bearer\r\n",
            );
        }
    }
    Verdict::Upgrade {
        key: key.to_string(),
        protocol: has_token("Sec-WebSocket-Protocol", SUBPROTOCOL),
        len,
    }
}

/// The request as the accept hook sees it (`head` is a whole request head
/// that `judge` accepted).
pub(super) fn ws_request(head: &[u8]) -> WsRequest {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let _ = req.parse(head);
    let target = req.path.unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| (h.name.to_string(), String::from_utf8_lossy(h.value).into_owned()))
        .collect();
    let subprotocols = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("Sec-WebSocket-Protocol"))
        .flat_map(|(_, v)| v.split(',').map(|p| p.trim().to_string()))
        .filter(|p| !p.is_empty())
        .collect();
    WsRequest {
        path: path.to_string(),
        query,
        headers,
        subprotocols,
    }
}

/// The status line for a refusal with `status` (a 4xx or 5xx; anything
/// else is sent as 403).
pub(super) fn status_line(status: u16) -> String {
    let phrase = match status {
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        503 => "Service Unavailable",
        400 => "Bad Request",
        402 | 405..=428 | 430..=499 => "Client Error",
        500..=502 | 504..=599 => "Server Error",
        _ => return "403 Forbidden".into(),
    };
    format!("{status} {phrase}")
}

/// Whether a request's `Origin` may connect: any when no allow-list is set,
/// and always when the request has no Origin (not a browser, so no
/// ambient cookies to hijack). `null` (sandboxed pages, files) is foreign.
fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
    match origin.map(str::trim) {
        _ if allowed.is_empty() => true,
        None => true,
        Some(o) => allowed.iter().any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(o)),
    }
}

/// The value of query parameter `name` in a request target, percent-decoded.
fn query_param(target: &str, name: &str) -> Option<Vec<u8>> {
    let query = target.split_once('?')?.1;
    let value = query
        .split('&')
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))?;
    let mut out = Vec::with_capacity(value.len());
    let mut bytes = value.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    Some(out)
}

/// Compares two secrets in time that depends only on their lengths, so a
/// peer cannot find the token byte by byte by timing refusals.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked_only_against_a_list_and_only_when_sent() {
        let list = vec!["https://app.example".to_string()];
        assert!(origin_allowed(Some("https://evil.example"), &[]));
        assert!(origin_allowed(None, &list));
        assert!(origin_allowed(Some("HTTPS://App.Example"), &list));
        assert!(!origin_allowed(Some("https://evil.example"), &list));
        assert!(!origin_allowed(Some("null"), &list));
        assert!(!origin_allowed(Some("https://app.example.evil"), &list));
    }

    #[test]
    fn a_token_is_found_in_the_query_and_percent_decoded() {
        assert_eq!(query_param("/ws?token=s3cr%2Ft&x=1", "token"), Some(b"s3cr/t".to_vec()));
        assert_eq!(query_param("/ws?x=1&token=a+b", "token"), Some(b"a b".to_vec()));
        assert_eq!(query_param("/ws?tokens=no", "token"), None);
        assert_eq!(query_param("/ws", "token"), None);
        assert_eq!(query_param("/ws?token=%zz", "token"), None);
    }

    #[test]
    fn secrets_compare_by_content_and_length() {
        assert!(same_secret(b"abc", b"abc"));
        assert!(!same_secret(b"abc", b"abd"));
        assert!(!same_secret(b"abc", b"abcd"));
        assert!(!same_secret(b"", b"a"));
    }
}
