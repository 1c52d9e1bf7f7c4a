//! Building a server: MsgTrans 1.0's builder, its limits, the shards and
//! every listener.

#[cfg(feature = "metrics")]
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use msgtrans_shards::accept::AcceptHook;
#[cfg(feature = "websocket")]
use msgtrans_shards::proto::ws::handshake::WsListenConfig;
use msgtrans_shards::{Engine, EngineEvent, EventSink, InlineHandler, WaitList};

use super::handle::{Inner, TransportServer};
use crate::error::Result;
use crate::event::RawEvents;
#[cfg(feature = "metrics")]
use crate::metrics::{MetricsConfig, MetricsServer};
use crate::protocol::{ListenerConfig, ServerProtocolConfig};
use crate::transport::config::Limits;

/// Builds a [`TransportServer`].
pub struct TransportServerBuilder {
    listeners: Vec<ListenerConfig>,
    shards: usize,
    pin: bool,
    tcp_ring: bool,
    tcp_epoll: bool,
    shared_port: bool,
    read_buffer: Option<usize>,
    limits: Limits,
    handler: Option<Arc<dyn InlineHandler>>,
    accept_hook: Option<Arc<dyn AcceptHook>>,
    #[cfg(feature = "metrics")]
    metrics: Option<MetricsConfig>,
    #[cfg(feature = "cluster")]
    cluster: Option<crate::cluster::ClusterConfig>,
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
            tcp_epoll: true,
            shared_port: false,
            read_buffer: None,
            limits: Limits::default(),
            handler: None,
            accept_hook: None,
            #[cfg(feature = "metrics")]
            metrics: None,
            #[cfg(feature = "cluster")]
            cluster: None,
        }
    }
    /// Joins a cluster: `send`, `request` and `broadcast` reach sessions on
    /// every node, delivered or reported (see [`crate::cluster`]). The
    /// session ids this server makes name its node. `build` fails if no
    /// NATS server answers within the config's connect timeout.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
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
    /// Serve plain TCP and plain WebSocket sessions on each shard's own
    /// io_uring (default false, opt-in): one `io_uring_enter` per shard
    /// loop submits every session's reads and writes. It is for small
    /// messages under load, where it costs less CPU per message than
    /// glommio's streams; at 1 KiB and up (its reads take what has arrived
    /// so far, in smaller batches) and at 1 x 1 (every message wakes an
    /// idle shard through the ring's eventfd) it costs more. The figures
    /// are in the README and `docs/perf-notes.md`. Off (or on a kernel
    /// older than 5.19) they wait on the shard's epoll instance
    /// ([`TransportServerBuilder::tcp_epoll`]), then make a syscall per
    /// read and per write. TLS sessions do that either way.
    pub fn tcp_ring(mut self, on: bool) -> Self {
        self.tcp_ring = on;
        self
    }
    /// Wait for TCP and WebSocket sockets (plain or under TLS) on one
    /// edge-triggered epoll instance per shard (default true), registered
    /// once per connection, instead of glommio's streams, which ask the
    /// shard's ring for a fresh readiness poll after every short read. It
    /// is the cheaper path at every size measured (`docs/perf-notes.md`);
    /// off is there to compare, or for a kernel without epoll. Plain
    /// sessions under [`TransportServerBuilder::tcp_ring`] use the ring.
    pub fn tcp_epoll(mut self, on: bool) -> Self {
        self.tcp_epoll = on;
        self
    }
    /// Bytes a session asks the socket for per read (default 64 KiB),
    /// held to 4 KiB..=256 KiB. A frame larger than this is still read
    /// whole: the buffer grows to fit it. Measured (docs/perf-notes.md):
    /// 16 KiB cost up to 1.7x the CPU per 1 KiB message, 256 KiB was level
    /// with 64 KiB, and past 256 KiB (the buffer pool's largest tier)
    /// every read buffer is allocated and zeroed afresh: 1 MiB cost 4-5x.
    /// Reading fewer bytes saves nothing on small messages, since the
    /// kernel copies only what has arrived, so the size is not adapted at
    /// run time.
    pub fn read_buffer(mut self, bytes: usize) -> Self {
        self.read_buffer = Some(bytes.clamp(4096, msgtrans_shards::pool::buffer::LARGE));
        self
    }
    /// Let TCP and WebSocket listeners join other server processes (of the
    /// same user) already listening on their port, instead of failing with
    /// `AddrInUse` (default false). The kernel then spreads new connections
    /// over every process's sockets (`SO_REUSEPORT`): the way to serve one
    /// port from several processes, each under its own open-files cap.
    /// QUIC listeners still refuse a port in use: their connection IDs
    /// route datagrams between one process's shards only.
    pub fn shared_port(mut self, on: bool) -> Self {
        self.shared_port = on;
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
    /// Connections one peer IP may hold at once, handshakes included,
    /// across every shard (default: no cap). One more is closed at once,
    /// before any TLS or WebSocket work, so one address cannot take every
    /// slot. Counted as `per_address` refusals.
    pub fn max_connections_per_ip(mut self, n: usize) -> Self {
        self.limits.max_connections_per_ip = Some(n);
        self
    }
    /// Connections one peer IP may open per second, with a burst of one
    /// second's worth (default: no limit). One more is closed at once.
    /// Counted as `connect_rate` refusals.
    pub fn max_connects_per_ip_per_sec(mut self, n: u32) -> Self {
        self.limits.max_connects_per_ip_per_sec = Some(n);
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
    /// once with [`TransportError::TooManyRequests`](crate::TransportError::TooManyRequests).
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
    /// arrive as [`ServerEvent::MessageReceived`](crate::ServerEvent::MessageReceived); connection events are
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
    /// Decides who may connect: `hook` is asked about every connection
    /// after the connection limits and the protocol handshake, before it
    /// becomes a session, and sees the peer, the WebSocket request and the
    /// TLS server name and ALPN. A closure `|req: &ConnectRequest| ->
    /// Verdict` answers at once; an [`AcceptHook`] may answer later, from
    /// any thread, through its [`Decision`](crate::Decision), within the
    /// handshake timeout. A refusal is an HTTP status on WebSocket, an
    /// application close on QUIC and a close on TCP, counted as an
    /// `application` refusal.
    pub fn accept_hook(mut self, hook: impl AcceptHook) -> Self {
        self.accept_hook = Some(Arc::new(hook));
        self
    }

    /// Starts the shards and every listener. The server accepts connections
    /// when this returns; [`TransportServer::serve`] is not needed (it waits
    /// for the server to stop, as in MsgTrans 1.0).
    pub async fn build(self) -> Result<TransportServer> {
        let mut cfg = self.limits.engine_config(self.shards, self.pin, "msgtrans-shard");
        cfg.tcp_ring = self.tcp_ring;
        cfg.tcp_epoll = self.tcp_epoll;
        cfg.shared_port = self.shared_port;
        if let Some(n) = self.read_buffer {
            cfg.read_buffer = n;
        }
        #[cfg(feature = "cluster")]
        if let Some(c) = &self.cluster {
            cfg.node = c.node();
        }
        let (tx, rx) = flume::bounded(cfg.event_capacity);
        let lifecycle = Arc::new(AtomicBool::new(self.handler.is_none()));
        let bell = Arc::new(WaitList::new());
        let sink = EventSink {
            tx: tx.clone(),
            lifecycle: Arc::clone(&lifecycle),
            bell: Arc::clone(&bell),
        };
        let engine = Arc::new(Engine::start_with_accept_hook(cfg, self.handler, self.accept_hook, sink).await?);
        // Joined before any listener opens, so no session is served that
        // could not reach the rest of the cluster.
        #[cfg(feature = "cluster")]
        let cluster = match self.cluster {
            None => None,
            Some(c) => match crate::cluster::Cluster::start(Arc::clone(&engine), c).await {
                Ok(c) => Some(c),
                Err(e) => {
                    engine.stop().await;
                    return Err(e.into());
                }
            },
        };
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
                        allowed_origins: c.allowed_origins.clone(),
                        auth_token: c.auth_token.clone(),
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
                #[cfg(feature = "cluster")]
                cluster: std::sync::Mutex::new(cluster),
            }),
        })
    }
}
