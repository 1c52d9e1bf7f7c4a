//! The optional metrics endpoint: a small HTTP/1.1 server on its own std
//! threads (never on a shard, so a scrape costs the shards nothing but the
//! relaxed loads of their counters).
//!
//! * `/metrics` — Prometheus text exposition format (version 0.0.4).
//! * `/stats.json` — the same numbers as JSON, for the dashboard.
//! * `/` — a live dashboard page, self-contained (no CDN, works offline).
//!
//! Requests other than `GET`/`HEAD` get 405, unknown paths 404, malformed
//! requests 400, and a request head over the size limit 431. Every
//! response closes its connection. Stopping the server frees the port.

mod render;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use msgtrans_shards::stats::StatsSnapshot;

/// Default connections served at once: 16. A dashboard and a scraper need
/// one or two; the cap keeps a flood of idle connections from costing more
/// than 16 threads. Connections over it are answered 503 and closed.
pub const DEFAULT_METRICS_MAX_CONNECTIONS: usize = 16;
/// Default time to wait for a request head, and for a response to be
/// taken: 5 s, far more than a local scrape needs, short enough that a
/// connection that says nothing does not hold a slot for long.
pub const DEFAULT_METRICS_TIMEOUT: Duration = Duration::from_secs(5);
/// Default largest request head (request line and headers): 8 KiB, what
/// most HTTP servers allow; a browser's headers are well under it.
/// Larger heads get 431.
pub const DEFAULT_METRICS_MAX_REQUEST: usize = 8 * 1024;

/// Where and how the metrics endpoint listens.
#[derive(Debug, Clone)]
pub struct MetricsConfig {
    /// Address to listen on (port 0 picks a free one).
    pub addr: SocketAddr,
    /// Connections served at once; see [`DEFAULT_METRICS_MAX_CONNECTIONS`].
    pub max_connections: usize,
    /// Read and write timeout per connection; see [`DEFAULT_METRICS_TIMEOUT`].
    pub timeout: Duration,
    /// Largest request head; see [`DEFAULT_METRICS_MAX_REQUEST`].
    pub max_request: usize,
}

impl MetricsConfig {
    /// Defaults, listening on `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            max_connections: DEFAULT_METRICS_MAX_CONNECTIONS,
            timeout: DEFAULT_METRICS_TIMEOUT,
            max_request: DEFAULT_METRICS_MAX_REQUEST,
        }
    }
}

/// Reads the counters to serve.
pub(crate) type StatsSource = Arc<dyn Fn() -> StatsSnapshot + Send + Sync>;

/// A running metrics endpoint.
pub(crate) struct MetricsServer {
    addr: SocketAddr,
    stopping: Arc<AtomicBool>,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl MetricsServer {
    /// Binds and starts serving.
    pub fn start(cfg: MetricsConfig, stats: StatsSource) -> std::io::Result<Self> {
        let listener = TcpListener::bind(cfg.addr)?;
        let addr = listener.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let stop = Arc::clone(&stopping);
        let started = Instant::now();
        let accept = std::thread::Builder::new()
            .name("msgtrans-metrics".into())
            .spawn(move || accept_loop(listener, cfg, stats, stop, started))?;
        Ok(Self {
            addr,
            stopping,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting and closes the listener; its port is free when this
    /// returns. Connections being answered finish on their own threads.
    /// Idempotent.
    pub fn stop(&self) {
        let Some(accept) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        // A blocked accept() only returns for a connection: make one.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        let _ = accept.join();
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(
    listener: TcpListener,
    cfg: MetricsConfig,
    stats: StatsSource,
    stopping: Arc<AtomicBool>,
    started: Instant,
) {
    let active = Arc::new(AtomicUsize::new(0));
    for conn in listener.incoming() {
        if stopping.load(Ordering::Acquire) {
            return;
        }
        let Ok(mut stream) = conn else {
            // EMFILE and the like: back off rather than spin.
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        let _ = stream.set_write_timeout(Some(cfg.timeout));
        if active.fetch_add(1, Ordering::AcqRel) >= cfg.max_connections {
            active.fetch_sub(1, Ordering::AcqRel);
            let _ = write_response(&mut stream, "503 Service Unavailable", TEXT, b"busy\n", true);
            continue;
        }
        let (cfg, stats, active2) = (cfg.clone(), Arc::clone(&stats), Arc::clone(&active));
        let spawned = std::thread::Builder::new()
            .name("msgtrans-metrics-conn".into())
            .spawn(move || {
                serve(stream, &cfg, &stats, started);
                active2.fetch_sub(1, Ordering::AcqRel);
            });
        if spawned.is_err() {
            active.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

const TEXT: &str = "text/plain; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";
const JSON: &str = "application/json";
const HTML: &str = "text/html; charset=utf-8";
const DASHBOARD: &str = include_str!("dashboard.html");

/// What a request head asks for, or why it is refused.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// A complete head: method, path without its query, whether HEAD.
    Request { path: String, head: bool },
    /// Not enough bytes yet.
    Partial,
    /// Refused with this status.
    Refused(&'static str),
}

fn parse(buf: &[u8], max: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) if len > max => Parsed::Refused("431 Request Header Fields Too Large"),
        Ok(httparse::Status::Complete(_)) => {
            let path = req.path.unwrap_or("/");
            let path = path.split(['?', '#']).next().unwrap_or("/").to_owned();
            match req.method {
                Some("GET") => Parsed::Request { path, head: false },
                Some("HEAD") => Parsed::Request { path, head: true },
                _ => Parsed::Refused("405 Method Not Allowed"),
            }
        }
        Ok(httparse::Status::Partial) if buf.len() > max => Parsed::Refused("431 Request Header Fields Too Large"),
        Ok(httparse::Status::Partial) => Parsed::Partial,
        Err(httparse::Error::TooManyHeaders) => Parsed::Refused("431 Request Header Fields Too Large"),
        Err(_) => Parsed::Refused("400 Bad Request"),
    }
}

/// Answers one request on `stream`, then closes it.
fn serve(mut stream: TcpStream, cfg: &MetricsConfig, stats: &StatsSource, started: Instant) {
    let _ = stream.set_read_timeout(Some(cfg.timeout));
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let parsed = loop {
        match parse(&buf, cfg.max_request) {
            Parsed::Partial => {}
            done => break done,
        }
        match stream.read(&mut chunk) {
            // Closed, timed out or failed before a whole head: nothing to answer.
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let (path, head) = match parsed {
        Parsed::Request { path, head } => (path, head),
        Parsed::Refused(status) => {
            let _ = write_response(&mut stream, status, TEXT, format!("{status}\n").as_bytes(), false);
            linger_close(stream);
            return;
        }
        Parsed::Partial => unreachable!("the loop only ends on a complete or refused head"),
    };
    let (ctype, body) = match path.as_str() {
        "/" | "/index.html" => (HTML, DASHBOARD.as_bytes().to_vec()),
        "/metrics" => (PROMETHEUS, render::prometheus(&stats()).into_bytes()),
        "/stats.json" => (JSON, render::json(&stats(), started.elapsed()).into_bytes()),
        _ => {
            let _ = write_response(&mut stream, "404 Not Found", TEXT, b"not found\n", head);
            return;
        }
    };
    let _ = write_response(&mut stream, "200 OK", ctype, &body, head);
}

/// Bytes of an unread request drained before closing; see [`linger_close`].
const LINGER_BYTES: usize = 1 << 20;
/// How long [`linger_close`] waits for the peer to stop sending.
const LINGER_TIME: Duration = Duration::from_millis(500);

/// Closes after a refusal without losing the response: closing a socket
/// with unread input makes the kernel send a reset, which can destroy the
/// response before the client reads it. So stop writing, then drain what
/// the client still sends (bounded in bytes and time).
fn linger_close(mut stream: TcpStream) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let _ = stream.set_read_timeout(Some(LINGER_TIME));
    let deadline = Instant::now() + LINGER_TIME;
    let (mut chunk, mut drained) = ([0u8; 4096], 0);
    while drained < LINGER_BYTES && Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => drained += n,
        }
    }
}

fn write_response(stream: &mut TcpStream, status: &str, ctype: &str, body: &[u8], head: bool) -> std::io::Result<()> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if !head {
        bytes.extend_from_slice(body);
    }
    stream.write_all(&bytes)?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_are_parsed_or_refused_with_the_right_status() {
        let max = 64;
        assert_eq!(
            parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", max),
            Parsed::Request {
                path: "/metrics".into(),
                head: false
            }
        );
        assert_eq!(
            parse(b"HEAD / HTTP/1.0\r\n\r\n", max),
            Parsed::Request {
                path: "/".into(),
                head: true
            }
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\nHo", max), Parsed::Partial);
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\n\r\n", max),
            Parsed::Refused("405 Method Not Allowed")
        );
        assert_eq!(
            parse(b"\x00\x01 nonsense\r\n\r\n", max),
            Parsed::Refused("400 Bad Request")
        );
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(100));
        assert_eq!(
            parse(long.as_bytes(), max),
            Parsed::Refused("431 Request Header Fields Too Large")
        );
    }
}
