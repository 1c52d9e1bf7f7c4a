//! Shared helpers for the integration tests: raw MsgTrans sockets, echo
//! servers (inline and events path), event collection, and connecting raw
//! clients until every shard owns at least one session.
#![allow(dead_code)]

pub mod nats;
pub mod quic;
pub mod ws_raw;

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use msgtrans::error::CloseReason;
use msgtrans::event::ServerEvent;
use msgtrans::packet::{FrameLimits, Packet, PacketType};
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::{Inline, SessionId};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// The program `examples/<name>` of the current build. `cargo test
/// --all-targets` builds examples only as test harnesses, so
/// `scripts/test.sh` builds the programs first (`cargo build --examples`).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let debug = exe.parent().and_then(|d| d.parent()).unwrap();
    let bin = debug.join("examples").join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the examples first with \
         `cargo build --examples --features msgtrans/cluster` (scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Hang guard for ordinary steps: long enough never to fire on a slow,
/// shared debug build; only there so a hang fails instead of blocking CI.
pub const GUARD: Duration = Duration::from_secs(20);

/// Hang guard for a test that proves a short configured timeout (a few
/// hundred ms) overrides a default of 5 s or more: shorter than those
/// defaults, so the test fails if the option is ignored, and still many
/// times the configured value on a slow shared build.
pub const UNDER_DEFAULT: Duration = Duration::from_millis(2500);

/// Shards every test server runs.
pub const SHARDS: usize = 2;

/// Awaits `fut`, panicking with `what` if it has not finished within `limit`.
pub async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("hang guard: {what} did not finish within {limit:?}"),
    }
}

/// Decoder limits for raw clients: everything the wire format allows.
pub fn raw_limits() -> FrameLimits {
    FrameLimits {
        max_payload: u32::MAX,
        max_ext_header: u16::MAX,
    }
}

/// Encodes one packet to its wire bytes.
pub fn wire(p: &Packet) -> Vec<u8> {
    p.to_bytes().expect("encode").to_vec()
}

/// A one-way packet with a biz type and an optional extension header.
pub fn one_way(id: u32, biz: u8, ext: &[u8], payload: impl Into<Vec<u8>>) -> Packet {
    let mut p = Packet::one_way(id, payload.into());
    p.set_biz_type(biz);
    if !ext.is_empty() {
        p.set_ext_header(ext.to_vec());
    }
    p
}

/// Reads one packet from `r`, keeping leftover bytes in `buf`.
/// `Ok(None)` on a clean EOF between packets.
pub async fn read_packet_from<R: AsyncReadExt + Unpin>(r: &mut R, buf: &mut BytesMut) -> io::Result<Option<Packet>> {
    loop {
        match msgtrans_shards::codec::decode(buf, &raw_limits()) {
            Ok(Some(p)) => return Ok(Some(p)),
            Ok(None) => {}
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, e)),
        }
        buf.reserve(64 * 1024);
        let n = r.read_buf(buf).await?;
        if n == 0 {
            if buf.is_empty() {
                return Ok(None);
            }
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "EOF inside a packet"));
        }
    }
}

/// A raw MsgTrans peer over a plain tokio socket.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Connects with `TCP_NODELAY`, so each write leaves as its own segment.
    pub async fn connect(addr: SocketAddr) -> Self {
        let stream = within(GUARD, "raw connect", TcpStream::connect(addr))
            .await
            .expect("raw connect");
        stream.set_nodelay(true).expect("nodelay");
        Self::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// The client's own address (the server sees it as the peer address).
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local_addr")
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("raw write");
        self.stream.flush().await.expect("raw flush");
    }

    pub async fn send(&mut self, p: &Packet) {
        let b = wire(p);
        self.write(&b).await;
    }

    /// The next packet; panics on EOF, error or hang.
    pub async fn recv(&mut self) -> Packet {
        let (s, b) = (&mut self.stream, &mut self.buf);
        within(GUARD, "raw recv", read_packet_from(s, b))
            .await
            .expect("raw read")
            .expect("server closed the connection")
    }

    /// Exactly `n` raw bytes.
    pub async fn recv_exact(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let take = n.min(self.buf.len());
        out.extend_from_slice(&self.buf.split_to(take));
        let mut rest = vec![0u8; n - take];
        within(GUARD, "raw read_exact", self.stream.read_exact(&mut rest))
            .await
            .expect("raw read_exact");
        out.extend_from_slice(&rest);
        out
    }

    /// Reads until the server ends the connection (EOF or reset). Returns
    /// the bytes that arrived before the end.
    /// The next packet, or `None` if the server closes the connection first.
    pub async fn recv_or_eof(&mut self) -> Option<Packet> {
        match read_packet_from(&mut self.stream, &mut self.buf).await {
            Ok(p) => p,
            Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => None,
            Err(e) => panic!("read error: {e}"),
        }
    }

    pub async fn expect_closed(&mut self) -> Vec<u8> {
        let mut got = self.buf.split().to_vec();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            match within(GUARD, "waiting for the server to close", self.stream.read(&mut chunk)).await {
                Ok(0) => return got,
                Ok(n) => got.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe) => return got,
                Err(e) => panic!("unexpected read error while waiting for close: {e}"),
            }
        }
    }

    pub fn into_split(self) -> (RawReader, OwnedWriteHalf) {
        let (r, w) = self.stream.into_split();
        (RawReader { r, buf: self.buf }, w)
    }
}

/// The read half of a [`RawClient`].
pub struct RawReader {
    pub r: OwnedReadHalf,
    buf: BytesMut,
}

impl RawReader {
    pub async fn recv(&mut self) -> Packet {
        let (r, b) = (&mut self.r, &mut self.buf);
        within(GUARD, "raw recv", read_packet_from(r, b))
            .await
            .expect("raw read")
            .expect("server closed the connection")
    }
    /// Reads `n` raw bytes with no hang guard of its own (wrap the caller).
    pub async fn recv_exact_unguarded(&mut self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        let take = n.min(self.buf.len());
        out.extend_from_slice(&self.buf.split_to(take));
        out.resize(n, 0);
        self.r.read_exact(&mut out[take..]).await.expect("raw read_exact");
        out
    }
}

/// Server events, fed by a task that drains the server's event stream, with
/// a stash so a test can wait for one event while keeping the others.
pub struct Events {
    rx: mpsc::UnboundedReceiver<ServerEvent>,
    stash: VecDeque<ServerEvent>,
}

impl Events {
    /// Events fed by the caller's own task.
    pub fn from_receiver(rx: mpsc::UnboundedReceiver<ServerEvent>) -> Self {
        Self {
            rx,
            stash: VecDeque::new(),
        }
    }

    /// Waits for the first event that `pick` accepts; every other event is
    /// kept for later calls. Panics if the stream ends or the guard fires.
    pub async fn wait_for<T>(&mut self, what: &str, mut pick: impl FnMut(&ServerEvent) -> Option<T>) -> T {
        if let Some(i) = self.stash.iter().position(|e| pick(e).is_some()) {
            let ev = self.stash.remove(i).unwrap();
            return pick(&ev).unwrap();
        }
        let rx = &mut self.rx;
        let stash = &mut self.stash;
        within(GUARD, what, async {
            loop {
                let ev = rx
                    .recv()
                    .await
                    .unwrap_or_else(|| panic!("event stream ended while waiting for {what}"));
                if let Some(v) = pick(&ev) {
                    return v;
                }
                stash.push_back(ev);
            }
        })
        .await
    }

    /// The first event `pick` accepts among those already received, without
    /// waiting for more; the others are kept.
    pub async fn try_wait_for<T>(&mut self, mut pick: impl FnMut(&ServerEvent) -> Option<T>) -> Option<T> {
        tokio::task::yield_now().await;
        if let Some(i) = self.stash.iter().position(|e| pick(e).is_some()) {
            let ev = self.stash.remove(i).unwrap();
            return pick(&ev);
        }
        while let Ok(ev) = self.rx.try_recv() {
            if let Some(v) = pick(&ev) {
                return Some(v);
            }
            self.stash.push_back(ev);
        }
        None
    }

    /// The session whose peer address is `peer` (a raw client's local address).
    pub async fn established(&mut self, peer: SocketAddr) -> SessionId {
        self.wait_for("ConnectionEstablished", |e| match e {
            ServerEvent::ConnectionEstablished { session_id, info } if info.peer_addr == peer => Some(*session_id),
            _ => None,
        })
        .await
    }

    /// The close reason reported for `id`.
    pub async fn closed(&mut self, id: SessionId) -> CloseReason {
        self.wait_for("ConnectionClosed", |e| match e {
            ServerEvent::ConnectionClosed { session_id, reason } if *session_id == id => Some(reason.clone()),
            _ => None,
        })
        .await
    }

    /// The next event of any kind (stashed ones first); `None` once the
    /// server's stream has ended.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        if let Some(e) = self.stash.pop_front() {
            return Some(e);
        }
        within(GUARD, "next server event", self.rx.recv()).await
    }
}

/// Drains the server's event stream into an [`Events`]. Subscribing happens
/// before this returns, so connection events from now on are seen (an
/// inline-handler server only reports them once someone subscribes).
pub fn pump_events(server: &TransportServer) -> Events {
    let mut stream = server.subscribe_events();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(ev) = stream.recv().await {
            if tx.send(ev).is_err() {
                break;
            }
        }
    });
    Events {
        rx,
        stash: VecDeque::new(),
    }
}

/// [`builder`] plus a WebSocket listener on 127.0.0.1:0 for path `/ws`.
pub fn ws_builder() -> TransportServerBuilder {
    builder().with_protocol(
        msgtrans::protocol::WebSocketServerConfig::new("127.0.0.1:0")
            .unwrap()
            .with_path("/ws"),
    )
}

/// Our client, connected over `ws://` to `server`'s WebSocket listener.
pub async fn ws_client(server: &TransportServer) -> msgtrans::transport::TransportClient {
    let url = format!("ws://{}/ws", server.ws_addr().unwrap());
    let mut c = msgtrans::transport::TransportClientBuilder::new()
        .with_protocol(msgtrans::protocol::WebSocketClientConfig::new(&url).unwrap())
        .build()
        .await
        .unwrap();
    within(GUARD, "ws connect", c.connect()).await.expect("connect");
    c
}

/// A builder for a test server: TCP on 127.0.0.1:0, [`SHARDS`] unpinned shards.
pub fn builder() -> TransportServerBuilder {
    TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
        .shards(SHARDS)
        .pin_shards(false)
}

/// The inline echo of examples/sharded_server.rs: one-way packets (and any
/// unmatched response) come back unchanged; requests get a response with
/// the request's id, biz type, extension header and payload.
pub fn inline_echo(ctx: &mut Inline<'_>) {
    let payload = ctx.payload();
    if ctx.is_request() {
        ctx.respond(payload);
    } else {
        let header = ctx.header().clone();
        let ext = ctx.ext_header();
        ctx.write(&header, ext, payload);
    }
}

/// Builds `b` with the inline echo handler.
pub async fn start_inline_echo(b: TransportServerBuilder) -> TransportServer {
    within(GUARD, "server build", b.handler(inline_echo).build())
        .await
        .expect("server build")
}

/// Builds `b` (no handler) and serves the echo from a Tokio task through
/// the event stream: one-way packets are sent back with `send_to_session`
/// (same id, biz type, extension header, payload), requests are answered
/// with `context.respond`. Every other event goes to the returned [`Events`].
pub async fn start_events_echo(b: TransportServerBuilder) -> (TransportServer, Events) {
    let server = within(GUARD, "server build", b.build()).await.expect("server build");
    let mut stream = server.subscribe_events();
    let (tx, rx) = mpsc::unbounded_channel();
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok(ev) = stream.recv().await {
            match ev {
                ServerEvent::MessageReceived { session_id, context } => {
                    if context.is_request() {
                        let data = context.data.clone();
                        let _ = context.respond(data);
                    } else {
                        let mut p = Packet::new(PacketType::OneWay, context.message_id);
                        p.set_biz_type(context.biz_type);
                        if let Some(ext) = context.ext_header {
                            p.set_ext_header(ext);
                        }
                        p.set_payload(context.data);
                        let _ = s.send_to_session(session_id, p).await;
                    }
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
    });
    (
        server,
        Events {
            rx,
            stash: VecDeque::new(),
        },
    )
}

/// The server's TCP address.
pub fn addr(server: &TransportServer) -> SocketAddr {
    server.tcp_addr().expect("server has a TCP listener")
}

/// Connects raw clients until every shard of `server` owns at least one of
/// their sessions (the kernel spreads `SO_REUSEPORT` connections by hash,
/// so a few tries are usually enough). Returns every client with its
/// session id. Panics after 64 connections without full coverage.
pub async fn connect_covering_shards(server: &TransportServer, events: &mut Events) -> Vec<(RawClient, SessionId)> {
    let shards = server.shards();
    let mut covered = HashSet::new();
    let mut out = Vec::new();
    for _ in 0..64 {
        let c = RawClient::connect(addr(server)).await;
        let id = events.established(c.local_addr()).await;
        assert!(
            id.shard() < shards,
            "session {id} names shard {} of {shards}",
            id.shard()
        );
        covered.insert(id.shard());
        out.push((c, id));
        if covered.len() == shards {
            return out;
        }
    }
    panic!("64 connections landed only on shards {covered:?} of {shards}");
}

/// One wire fixture from tests/fixtures.
pub struct Fixture {
    pub name: String,
    pub bin: Vec<u8>,
    pub json: serde_json::Value,
}

impl Fixture {
    pub fn ext_header(&self) -> Vec<u8> {
        hex(self.json["ext_header_hex"].as_str().expect("ext_header_hex"))
    }
    pub fn payload(&self) -> Vec<u8> {
        hex(self.json["payload_hex"].as_str().expect("payload_hex"))
    }
    pub fn field(&self, name: &str) -> u64 {
        self.json[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: field {name} missing", self.name))
    }
}

pub fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Every `NN_*.bin` / `.json` pair, in file-name order.
pub fn fixtures() -> Vec<Fixture> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("fixtures dir")
        .filter_map(|e| {
            let n = e.ok()?.file_name().into_string().ok()?;
            n.strip_suffix(".bin").map(str::to_owned)
        })
        .collect();
    names.sort();
    let out: Vec<Fixture> = names
        .into_iter()
        .map(|name| {
            let bin = std::fs::read(dir.join(format!("{name}.bin"))).expect("read .bin");
            let text = std::fs::read_to_string(dir.join(format!("{name}.json"))).expect("read .json");
            let json = serde_json::from_str(&text).expect("parse .json");
            Fixture { name, bin, json }
        })
        .collect();
    assert_eq!(out.len(), 8, "expected the 8 fixtures of msgtrans 1.0.10");
    out
}
