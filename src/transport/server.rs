//! The server: builder, handle and event stream.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, SystemTime};

#[cfg(feature = "websocket")]
use msgtrans_shards::proto::ws::handshake::WsListenConfig;
use msgtrans_shards::stats::{SessionStats, StatsSnapshot};
use msgtrans_shards::{CloseReason, Engine, EngineEvent, EventSink, InlineHandler, Packet, PacketType, WaitList};

use super::config::Limits;
use crate::error::{Result, TransportError};
use crate::event::{ConnectionInfo, EventStreamClosed, RawEvents, ServerEvent, TransportContext, TransportResult};
#[cfg(feature = "metrics")]
use crate::metrics::{MetricsConfig, MetricsServer};
use crate::protocol::{ListenerConfig, ServerProtocolConfig};
use crate::SessionId;

/// Builds a [`TransportServer`].
pub struct TransportServerBuilder {
    listeners: Vec<ListenerConfig>,
    shards: usize,
    pin: bool,
    tcp_ring: bool,
    limits: Limits,
    handler: Option<Arc<dyn InlineHandler>>,
    #[cfg(feature = "metrics")]
    metrics: Option<MetricsConfig>,
}

impl Default for TransportServerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportServerBuilder {
    /// A server with no listeners, one shard per core and default limits.
    pub fn new() -> Self {
        Self {
            listeners: Vec::new(),
            shards: 0,
            pin: true,
            tcp_ring: false,
            limits: Limits::default(),
            handler: None,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }
    /// Serves `/metrics` (Prometheus), `/stats.json` and a live dashboard
    /// at `/` on `addr`, from a thread of its own (not a shard). Off unless
    /// asked for; see [`crate::metrics`].
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics(self, addr: SocketAddr) -> Self {
        self.metrics_config(MetricsConfig::new(addr))
    }
    /// [`TransportServerBuilder::metrics`] with its limits spelled out.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_config(mut self, config: MetricsConfig) -> Self {
        self.metrics = Some(config);
        self
    }
    /// Adds a listener. Several of the same protocol may be added.
    pub fn with_protocol<C: ServerProtocolConfig>(mut self, config: C) -> Self {
        self.listeners.push(config.into_listener());
        self
    }
    /// Number of shards (default: one per usable core).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n;
        self
    }
    /// Pin each shard to its own core (default true).
    pub fn pin_shards(mut self, pin: bool) -> Self {
        self.pin = pin;
        self
    }
    /// Serve plain TCP sessions on each shard's own io_uring (default
    /// false, opt-in): one `io_uring_enter` per shard loop submits every
    /// session's reads and writes. About 3% less CPU per message under
    /// load, but an idle shard wakes through an eventfd, which doubled the
    /// 1 x 1 round trip's median here (`docs/perf-notes.md`). Off (or on a kernel older than 6.1) they use
    /// glommio's streams, a readiness poll and then a syscall per read and
    /// per write. TLS and WebSocket sessions use glommio's streams either way.
    pub fn tcp_ring(mut self, on: bool) -> Self {
        self.tcp_ring = on;
        self
    }
    /// Open sessions allowed in total; further connections are refused.
    pub fn max_connections(mut self, n: usize) -> Self {
        self.limits.max_connections = n;
        self
    }
    /// Open sessions allowed per shard.
    pub fn max_connections_per_shard(mut self, n: usize) -> Self {
        self.limits.max_connections_per_shard = Some(n);
        self
    }
    /// Largest payload accepted or sent; a peer that declares more is
    /// closed with a protocol error.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.limits.max_payload = bytes;
        self
    }
    /// Largest extension header accepted or sent.
    pub fn max_ext_header(mut self, bytes: u16) -> Self {
        self.limits.max_ext_header = bytes;
        self
    }
    /// Bytes queued per session before sends to it are refused.
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_outbound_bytes = bytes;
        self
    }
    /// Default timeout of [`TransportServer::request`].
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.limits.request_timeout = t;
        self
    }
    /// Events queued before the shards stop reading (nothing is dropped).
    pub fn event_capacity(mut self, n: usize) -> Self {
        self.limits.event_capacity = n;
        self
    }
    /// Requests one session may have waiting for responses; more fail at
    /// once with [`TransportError::TooManyRequests`].
    pub fn max_inflight_requests(mut self, n: usize) -> Self {
        self.limits.max_inflight_requests = n;
        self
    }
    /// Closes a session after `timeout` without a byte in either direction
    /// (`None`: never). Its close reason is `IdleTimeout`.
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.idle_timeout = timeout;
        self
    }
    /// TCP keepalive idle time (`None`: off).
    pub fn tcp_keepalive(mut self, idle: Option<Duration>) -> Self {
        self.limits.tcp_keepalive = idle;
        self
    }
    /// How long a WebSocket upgrade may take; a peer that connects and
    /// says nothing is dropped after it.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.limits.handshake_timeout = timeout;
        self
    }
    /// Largest WebSocket frame accepted; a bigger frame closes the session
    /// with 1009. Messages are limited to the largest packet
    /// (`max_payload` + `max_ext_header` + 16) whatever this says.
    pub fn max_ws_frame_size(mut self, bytes: usize) -> Self {
        self.limits.max_ws_frame = Some(bytes);
        self
    }
    /// How long `send` waits for room in a full outbound queue.
    pub fn send_timeout(mut self, timeout: Duration) -> Self {
        self.limits.send_timeout = timeout;
        self
    }
    /// Closes a session (`CloseReason::SlowConsumer`) whose queued output
    /// has not moved for `timeout` (`None`: never).
    pub fn write_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.limits.write_timeout = timeout;
        self
    }
    /// Closes a session (`CloseReason::PolicyViolation`, WebSocket 1008)
    /// that sends more than `n` empty packets in one second.
    pub fn max_empty_packets_per_sec(mut self, n: usize) -> Self {
        self.limits.max_empty_packets_per_sec = n;
        self
    }
    /// Closes a session (`CloseReason::PolicyViolation`, WebSocket 1008)
    /// once more than `n` of its requests wait for the application's answer.
    pub fn max_unanswered_requests(mut self, n: usize) -> Self {
        self.limits.max_unanswered_requests = n;
        self
    }
    /// Payloads shorter than this go out uncompressed even when a send asks
    /// for compression (default 256 bytes).
    pub fn compression_threshold(mut self, bytes: usize) -> Self {
        self.limits.compression_threshold = bytes;
        self
    }
    /// All limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
    /// Serves every one-way packet and request with `handler`, inline on the
    /// shard that owns the session: the fast path. Messages then no longer
    /// arrive as [`ServerEvent::MessageReceived`]; connection events are
    /// delivered once someone calls [`TransportServer::subscribe_events`].
    pub fn handler(mut self, handler: impl InlineHandler) -> Self {
        self.handler = Some(Arc::new(handler));
        self
    }
    /// Serves sessions with `handler` (MsgTrans 2.0's `SessionHandler`
    /// shape), inline on the shard that owns each session: the same fast
    /// path as [`TransportServerBuilder::handler`], which it replaces.
    pub fn session_handler(self, handler: impl msgtrans_shards::SessionHandler) -> Self {
        self.handler(msgtrans_shards::SessionHandlerAdapter(handler))
    }

    /// Starts the shards and every listener. The server accepts connections
    /// when this returns; [`TransportServer::serve`] is not needed (it waits
    /// for the server to stop, as in MsgTrans 1.0).
    pub async fn build(self) -> Result<TransportServer> {
        let mut cfg = self.limits.engine_config(self.shards, self.pin, "msgtrans-shard");
        cfg.tcp_ring = self.tcp_ring;
        let (tx, rx) = flume::bounded(cfg.event_capacity);
        let lifecycle = Arc::new(AtomicBool::new(self.handler.is_none()));
        let bell = Arc::new(WaitList::new());
        let sink = EventSink {
            tx: tx.clone(),
            lifecycle: Arc::clone(&lifecycle),
            bell: Arc::clone(&bell),
        };
        let engine = Arc::new(Engine::start(cfg, self.handler, sink).await?);
        let mut addrs = Vec::new();
        #[cfg(feature = "quic")]
        let mut quic_certs = Vec::new();
        for l in &self.listeners {
            let (proto, bound) = match l {
                ListenerConfig::Tcp(c) => {
                    let tls = c.engine_tls();
                    let proto = if tls.is_some() { "tcp+tls" } else { "tcp" };
                    (proto, engine.listen_tcp(c.bind_address, tls))
                }
                #[cfg(feature = "quic")]
                ListenerConfig::Quic(c) => {
                    let (cfg, self_signed) = match c.listen_config() {
                        Ok(x) => x,
                        Err(e) => {
                            engine.stop().await;
                            return Err(e.into());
                        }
                    };
                    let bound = engine.listen_quic(c.bind_address, &cfg);
                    if let (Ok(a), Some(pem)) = (&bound, self_signed) {
                        quic_certs.push((*a, pem));
                    }
                    ("quic", bound)
                }
                #[cfg(feature = "websocket")]
                ListenerConfig::WebSocket(c) => {
                    let tls = c.engine_tls();
                    let proto = if tls.is_some() { "wss" } else { "websocket" };
                    let cfg = WsListenConfig {
                        path: c.path.clone(),
                        tls,
                    };
                    (proto, engine.listen_ws(c.bind_address, cfg))
                }
            };
            match bound {
                Ok(a) => addrs.push((proto, a)),
                Err(e) => {
                    engine.stop().await;
                    return Err(e.into());
                }
            }
        }
        #[cfg(feature = "metrics")]
        let metrics = match self.metrics {
            None => None,
            Some(cfg) => {
                let addr = cfg.addr;
                let e = Arc::clone(&engine);
                match MetricsServer::start(cfg, Arc::new(move || e.stats())) {
                    Ok(m) => Some(m),
                    Err(source) => {
                        engine.stop().await;
                        return Err(msgtrans_shards::StartError::Bind { addr, source }.into());
                    }
                }
            }
        };
        if lifecycle.load(Ordering::Relaxed) {
            for (_, a) in &addrs {
                let _ = tx.send_async(EngineEvent::Listening { addr: *a }).await;
            }
        }
        let (stopped_tx, stopped_rx) = flume::bounded(0);
        Ok(TransportServer {
            inner: Arc::new(Inner {
                engine,
                events: RawEvents { rx },
                events_tx: tx,
                bell,
                lifecycle,
                addrs,
                #[cfg(feature = "quic")]
                quic_certs,
                next_id: AtomicU32::new(1),
                request_timeout: self.limits.request_timeout,
                send_timeout: self.limits.send_timeout,
                stopped_tx: std::sync::Mutex::new(Some(stopped_tx)),
                stopped_rx,
                stopped_reported: AtomicBool::new(false),
                #[cfg(feature = "metrics")]
                metrics,
            }),
        })
    }
}

struct Inner {
    engine: Arc<Engine>,
    events: RawEvents,
    events_tx: flume::Sender<EngineEvent>,
    /// Rung after events go into the queue (by the shards once per turn)
    /// and when the server stops: what event streams sleep on.
    bell: Arc<WaitList>,
    lifecycle: Arc<AtomicBool>,
    addrs: Vec<(&'static str, SocketAddr)>,
    /// Self-signed certificates made for QUIC listeners given none.
    #[cfg(feature = "quic")]
    quic_certs: Vec<(SocketAddr, String)>,
    /// One counter for every clone, so message ids stay unique (MsgTrans 1.0
    /// reset them on clone).
    next_id: AtomicU32,
    request_timeout: Duration,
    send_timeout: Duration,
    stopped_tx: std::sync::Mutex<Option<flume::Sender<()>>>,
    stopped_rx: flume::Receiver<()>,
    stopped_reported: AtomicBool,
    #[cfg(feature = "metrics")]
    metrics: Option<MetricsServer>,
}

/// A running server. Clones share it.
#[derive(Clone)]
pub struct TransportServer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TransportServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportServer")
            .field("addrs", &self.inner.addrs)
            .field("shards", &self.inner.engine.shards())
            .finish()
    }
}

impl TransportServer {
    pub(crate) fn next_id(&self) -> u32 {
        // Wraps past u32::MAX and skips 0, which 1.0 peers treat as "no id".
        loop {
            let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// The addresses the server listens on, with their protocol names.
    pub fn local_addrs(&self) -> &[(&'static str, SocketAddr)] {
        &self.inner.addrs
    }

    /// The first address serving `protocol` (`"tcp"`, `"tcp+tls"`,
    /// `"websocket"`, `"wss"`, `"quic"`), if any.
    pub fn addr_of(&self, protocol: &str) -> Option<SocketAddr> {
        self.inner.addrs.iter().find(|(p, _)| *p == protocol).map(|(_, a)| *a)
    }

    /// The first QUIC address, if any.
    pub fn quic_addr(&self) -> Option<SocketAddr> {
        self.addr_of("quic")
    }

    /// The PEM of the self-signed certificate made for the first QUIC
    /// listener that was given none (clients pass it to `with_ca_cert_pem`).
    #[cfg(feature = "quic")]
    #[cfg_attr(docsrs, doc(cfg(feature = "quic")))]
    pub fn quic_certificate_pem(&self) -> Option<&str> {
        self.inner.quic_certs.first().map(|(_, pem)| pem.as_str())
    }

    /// Where the metrics endpoint listens, if it was asked for.
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.metrics.as_ref().map(MetricsServer::addr)
    }

    /// The first WebSocket (`ws://`) address, if any.
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.addr_of("websocket")
    }

    /// The first plain TCP address, if any.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.addr_of("tcp")
    }

    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.inner.engine.shards()
    }

    /// The server's events. Every event goes to exactly one receiver: clones
    /// of the stream share it, so nothing is duplicated and nothing is
    /// dropped. Events that arrive before anyone subscribes wait in the
    /// queue (up to the event capacity, after which reading pauses).
    pub fn subscribe_events(&self) -> ServerEventStream {
        if !self.inner.lifecycle.swap(true, Ordering::Relaxed) {
            for (_, a) in &self.inner.addrs {
                let _ = self.inner.events_tx.try_send(EngineEvent::Listening { addr: *a });
            }
            self.inner.bell.ring();
        }
        ServerEventStream { server: self.clone() }
    }

    /// Same as [`TransportServer::subscribe_events`].
    pub fn events(&self) -> ServerEventStream {
        self.subscribe_events()
    }

    /// Sends `data` as a one-way packet.
    ///
    /// Returns once the packet is queued on the session's shard: `Ok` means
    /// the session was open. When the session's outbound queue is full (its
    /// peer reads slower than it is sent to), waits for room up to the send
    /// timeout, then fails with [`TransportError::Backpressure`]. If the
    /// session closes before the packet is written, a
    /// [`ServerEvent::TransportError`] reports it.
    pub async fn send(&self, session_id: SessionId, data: &[u8]) -> Result<TransportResult> {
        let id = self.next_id();
        self.inner
            .engine
            .send_waiting(session_id, Packet::one_way(id, data), self.inner.send_timeout)
            .await?;
        Ok(TransportResult::sent(session_id, id))
    }

    /// Sends a whole packet (any type, biz type, extension header) as is.
    pub async fn send_to_session(&self, session_id: SessionId, packet: Packet) -> Result<()> {
        Ok(self
            .inner
            .engine
            .send_waiting(session_id, packet, self.inner.send_timeout)
            .await?)
    }

    /// Sends `data` as a one-way packet only if the session's outbound
    /// queue has room now; fails at once with
    /// [`TransportError::Backpressure`] otherwise.
    pub fn try_send(&self, session_id: SessionId, data: &[u8]) -> Result<TransportResult> {
        let id = self.next_id();
        self.inner.engine.try_send(session_id, Packet::one_way(id, data))?;
        Ok(TransportResult::sent(session_id, id))
    }

    /// Sends `data` as a request and waits for the response, up to the
    /// configured request timeout. Fails at once if the session closes.
    pub async fn request(&self, session_id: SessionId, data: &[u8]) -> Result<TransportResult> {
        self.request_with_timeout(session_id, data, self.inner.request_timeout)
            .await
    }

    /// [`TransportServer::request`] with an explicit timeout.
    pub async fn request_with_timeout(
        &self,
        session_id: SessionId,
        data: &[u8],
        timeout: Duration,
    ) -> Result<TransportResult> {
        let p = self
            .request_packet(session_id, Packet::request(0, data), timeout)
            .await?;
        Ok(TransportResult::completed(session_id, p))
    }

    /// Sends a request packet (its biz type and extension header are kept;
    /// its message id is assigned by the session) and returns the response.
    pub async fn request_to_session(&self, session_id: SessionId, packet: Packet) -> Result<Packet> {
        self.request_packet(session_id, packet, self.inner.request_timeout)
            .await
    }

    /// The request timeout the server was built with.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(crate) async fn request_packet(
        &self,
        session_id: SessionId,
        mut packet: Packet,
        timeout: Duration,
    ) -> Result<Packet> {
        packet.header.packet_type = PacketType::Request;
        self.inner
            .engine
            .request(session_id, packet, timeout)
            .await
            .map_err(|e| TransportError::from_send(e, timeout))
    }

    /// Queues `packet` for every open session on every shard, all shards at
    /// once. Returns how many sessions it reached.
    pub async fn broadcast(&self, packet: Packet) -> Result<usize> {
        Ok(self.inner.engine.broadcast(packet).await?)
    }

    /// Closes a session. Its `ConnectionClosed` event says `LocalClose`.
    pub async fn close_session(&self, session_id: SessionId) -> Result<()> {
        Ok(self.inner.engine.close(session_id, CloseReason::LocalClose).await?)
    }

    /// Every open session.
    pub async fn active_sessions(&self) -> Vec<SessionId> {
        self.inner.engine.sessions().await
    }

    /// Number of open sessions.
    pub async fn session_count(&self) -> usize {
        self.inner.engine.session_count()
    }

    /// Open sessions per shard.
    pub fn sessions_per_shard(&self) -> Vec<usize> {
        self.inner.engine.sessions_per_shard()
    }

    /// Counters of every shard and their total, read without stopping or
    /// asking the shards.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.engine.stats()
    }

    /// One session's counters (asked of its shard); `None` if the session
    /// is not open.
    pub async fn session_stats(&self, session_id: SessionId) -> Option<SessionStats> {
        self.inner.engine.session_stats(session_id).await
    }

    /// Waits until the server is stopped (MsgTrans 1.0's `serve`; the server
    /// already accepts connections once built).
    pub async fn serve(&self) -> Result<()> {
        let _ = self.inner.stopped_rx.recv_async().await;
        Ok(())
    }

    /// Stops the server: closes the listeners (their ports are free when this
    /// returns), closes every session (each reports `ConnectionClosed` with
    /// `Shutdown`) and fails their pending requests. Idempotent.
    ///
    /// Close events wait for room in the event queue for up to 5 s; keep
    /// draining the stream while this runs. Events still without room then
    /// are given up, logged, and counted in `stats()` (`events_abandoned`).
    /// `ServerStopped` always arrives, last.
    pub async fn stop(&self) {
        self.finish(None).await
    }

    /// Graceful shutdown: stops accepting at once (new connections are
    /// refused), lets every session finish its pending requests (both ways)
    /// and flush its queued output, closing each as it goes quiet, and closes
    /// whatever is still open when `deadline` has passed. Sessions keep
    /// reading while they drain, so a peer's responses arrive and everything
    /// the server reads is delivered, in order, exactly once.
    pub async fn shutdown(&self, deadline: Duration) {
        self.finish(Some(deadline)).await
    }

    async fn finish(&self, drain: Option<Duration>) {
        self.inner.engine.shutdown(drain).await;
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.inner.metrics {
            m.stop();
        }
        self.inner.stopped_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.inner.bell.ring();
    }
}

/// The server's event stream.
pub struct ServerEventStream {
    server: TransportServer,
}

impl ServerEventStream {
    fn convert(&self, ev: EngineEvent) -> ServerEvent {
        let engine = &self.server.inner.engine;
        match ev {
            EngineEvent::Opened {
                id,
                peer,
                local,
                protocol,
            } => ServerEvent::ConnectionEstablished {
                session_id: id,
                info: ConnectionInfo {
                    session_id: id,
                    local_addr: local,
                    peer_addr: peer,
                    protocol: protocol.into(),
                    established_at: SystemTime::now(),
                },
            },
            EngineEvent::Closed { id, reason } => ServerEvent::ConnectionClosed { session_id: id, reason },
            EngineEvent::Message { id, packet } => ServerEvent::MessageReceived {
                session_id: id,
                context: TransportContext::new(id, packet, engine),
            },
            EngineEvent::SendFailed { id, error, .. } => ServerEvent::TransportError {
                session_id: Some(id),
                error: error.into(),
            },
            EngineEvent::Listening { addr } => ServerEvent::ServerStarted { address: addr },
        }
    }

    /// The next event; `Err` once the server has stopped and every event
    /// has been taken.
    pub async fn recv(&mut self) -> std::result::Result<ServerEvent, EventStreamClosed> {
        loop {
            if let Some(ev) = self.server.inner.events.try_recv() {
                return Ok(self.convert(ev));
            }
            if self.server.inner.stopped_rx.is_disconnected() {
                // Every event is out; `ServerStopped` is the last one, made
                // here so a full queue at stop time cannot crowd it out.
                let inner = &self.server.inner;
                if inner.lifecycle.load(Ordering::Relaxed) && !inner.stopped_reported.swap(true, Ordering::AcqRel) {
                    return Ok(ServerEvent::ServerStopped);
                }
                return Err(EventStreamClosed);
            }
            // Sleep until an event or the stop: look, arm, look again
            // (the protocol in `msgtrans_sync::waitlist`).
            let inner = &self.server.inner;
            std::future::poll_fn(|cx| {
                inner.bell.arm(cx.waker());
                if inner.events.is_empty() && !inner.stopped_rx.is_disconnected() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        self.recv().await.ok()
    }

    /// An event if one is ready now.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.server.inner.events.try_recv().map(|ev| self.convert(ev))
    }
}
