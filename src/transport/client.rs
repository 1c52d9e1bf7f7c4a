//! The client: builder and handle. A client runs its own shards (one by
//! default), so its connections get the same batched pipeline as the
//! server's sessions. The pool of connections is in `pool.rs`, reconnecting
//! in `reconnect.rs`, the event stream in `client_events.rs`.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use msgtrans_shards::{CloseReason, Engine, EventSink, Packet, PacketType, StartError};

pub use super::client_events::ClientEventStream;
use super::config::Limits;
use super::pool::{Slots, DEFAULT_POOL_SIZE};
use super::reconnect::Supervisor;
pub use super::retry::RetryConfig;
use super::retry::{jitter, sleep};
use super::shared::Shared;
use crate::error::{Result, TransportError};
#[allow(unused_imports)] // named in docs
use crate::event::ClientEvent;
use crate::event::TransportResult;
use crate::protocol::{ClientProtocolConfig, TargetConfig};
use crate::SessionId;

pub use super::options::TransportOptions;

/// Builds a [`TransportClient`].
pub struct TransportClientBuilder {
    target: Option<TargetConfig>,
    shards: usize,
    tcp_ring: bool,
    tcp_epoll: bool,
    limits: Limits,
    retry: RetryConfig,
    auto_reconnect: bool,
    pool: usize,
}

impl Default for TransportClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportClientBuilder {
    /// A client with no target yet, one shard, one connection, default
    /// limits, MsgTrans 1.0's default retries on `connect()`, and no
    /// reconnect after a drop.
    pub fn new() -> Self {
        Self {
            target: None,
            shards: 1,
            tcp_ring: false,
            tcp_epoll: true,
            limits: Limits::default(),
            retry: RetryConfig::default(),
            auto_reconnect: false,
            pool: DEFAULT_POOL_SIZE,
        }
    }
    /// Sets the server to connect to (the last call wins).
    pub fn with_protocol<C: ClientProtocolConfig>(mut self, config: C) -> Self {
        self.target = Some(config.into_target());
        self
    }
    /// Shards the client runs (default 1).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = n.max(1);
        self
    }
    /// Run plain TCP and WebSocket connections on the shard's own io_uring
    /// (default false); see `TransportServerBuilder::tcp_ring`.
    pub fn tcp_ring(mut self, on: bool) -> Self {
        self.tcp_ring = on;
        self
    }
    /// Wait for TCP and WebSocket sockets on the shard's epoll instance
    /// (default true); see `TransportServerBuilder::tcp_epoll`.
    pub fn tcp_epoll(mut self, on: bool) -> Self {
        self.tcp_epoll = on;
        self
    }
    /// How `connect()` retries a failed attempt, and how a dropped
    /// connection is reopened under [`TransportClientBuilder::auto_reconnect`]
    /// (MsgTrans 1.0's option; the delays are jittered).
    pub fn retry_strategy(mut self, config: RetryConfig) -> Self {
        self.retry = config;
        self
    }
    /// Reopen a connection as soon as it drops, with the retry strategy's
    /// backoff (default off). The drop is reported as
    /// [`ClientEvent::Disconnected`], the return as [`ClientEvent::Connected`],
    /// and giving up as [`ClientEvent::Error`] with
    /// [`TransportError::ReconnectFailed`]. Meanwhile calls fail at once
    /// with [`TransportError::NotConnected`]. `disconnect()` and `stop()`
    /// are never undone.
    pub fn auto_reconnect(mut self, on: bool) -> Self {
        self.auto_reconnect = on;
        self
    }
    /// Opens `n` connections (default 1), connection `k` from the client's
    /// shard `k % shards`, and spreads sends and requests over them in turn
    /// (skipping any that is down). Pair it with `.shards(n)` to use as
    /// many cores. The client's connection limits are raised to twice
    /// the pool where they are lower, so a pool never refuses itself.
    pub fn connection_pool(mut self, n: usize) -> Self {
        self.pool = n.max(1);
        self
    }
    /// Largest payload accepted or sent.
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.limits.max_payload = bytes;
        self
    }
    /// Default request timeout.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.limits.request_timeout = t;
        self
    }
    /// Bytes queued before sends are refused.
    pub fn max_outbound_bytes(mut self, bytes: usize) -> Self {
        self.limits.max_outbound_bytes = bytes;
        self
    }
    /// Events queued before reading pauses (nothing is dropped).
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

    /// Starts the client's shards. It does not connect: call
    /// [`TransportClient::connect`].
    pub async fn build(self) -> Result<TransportClient> {
        let target = self
            .target
            .ok_or(TransportError::Config(crate::protocol::ConfigError::InvalidValue {
                field: "protocol",
                reason: "no protocol configured; call with_protocol()".into(),
            }))?;
        let mut cfg = self.limits.engine_config(self.shards, false, "msgtrans-client");
        cfg.tcp_ring = self.tcp_ring;
        cfg.tcp_epoll = self.tcp_epoll;
        // The client opens exactly its pool, so a connection limit below
        // the pool (the default 10,000 against `connection_pool(12_500)`)
        // would only refuse its own connections. Twice the pool leaves
        // room for every slot to reopen while its old session drains.
        let room = self.pool.saturating_mul(2);
        cfg.max_connections = cfg.max_connections.max(room);
        cfg.max_connections_per_shard = cfg
            .max_connections_per_shard
            .map(|n| n.max(2 * self.pool.div_ceil(self.shards)));
        let (tx, rx) = flume::bounded(cfg.event_capacity);
        let sink = EventSink {
            tx,
            lifecycle: Arc::new(true.into()),
            // The client's event stream still waits on the channel itself.
            bell: Arc::default(),
        };
        let engine = Arc::new(Engine::start(cfg, None, sink).await?);
        // Room for one give-up per connection several times over; the
        // supervisor waits (never drops) when the application is behind.
        let (notices_tx, notices) = flume::bounded(4 * self.pool);
        let (stopped_tx, stopped) = flume::bounded(0);
        let shared = Arc::new(Shared {
            engine,
            events: rx,
            target,
            slots: Slots::new(self.pool),
            retry: self.retry,
            notices_tx,
            notices,
            notices_lost: AtomicU64::new(0),
            lost_reported: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            stopped_tx: std::sync::Mutex::new(Some(stopped_tx)),
            stopped,
        });
        let supervisor = if self.auto_reconnect {
            match Supervisor::start(Arc::clone(&shared)) {
                Ok(s) => Some(s),
                Err(e) => {
                    shared.engine.stop().await;
                    return Err(StartError::Thread {
                        name: "reconnect",
                        source: e,
                    }
                    .into());
                }
            }
        } else {
            None
        };
        Ok(TransportClient {
            shared,
            supervisor,
            next_id: AtomicU32::new(1),
            request_timeout: self.limits.request_timeout,
            send_timeout: self.limits.send_timeout,
        })
    }
}

/// A client: one connection, or `connection_pool(n)` of them.
pub struct TransportClient {
    shared: Arc<Shared>,
    supervisor: Option<Supervisor>,
    next_id: AtomicU32,
    request_timeout: Duration,
    send_timeout: Duration,
}

impl std::fmt::Debug for TransportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportClient")
            .field("target", &self.shared.target)
            .field("pool", &self.shared.slots.len())
            .finish()
    }
}

impl Drop for TransportClient {
    fn drop(&mut self) {
        // A supervisor waiting for room in the event queue gives up now;
        // dropping it (next) tells its thread to end.
        self.shared.closing.store(true, Ordering::Release);
    }
}

/// A session the client picked has gone since: to the caller, the client is
/// not connected.
fn gone(e: impl Into<TransportError>) -> TransportError {
    match e.into() {
        TransportError::SessionNotFound(_) => TransportError::NotConnected,
        other => other,
    }
}

impl TransportClient {
    fn engine(&self) -> &Engine {
        &self.shared.engine
    }

    fn session(&self) -> Result<SessionId> {
        self.shared.slots.pick(&self.shared.engine)
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Connects every connection of the pool that is not open, retrying
    /// each as the retry strategy says. Returns the last error if any
    /// connection could not be opened (the others stay open and usable).
    pub async fn connect(&mut self) -> Result<()> {
        if self.shared.closing.load(Ordering::Acquire) {
            return Err(TransportError::Stopped);
        }
        self.shared.slots.set_wanted(true);
        let mut result = Ok(());
        for k in 0..self.shared.slots.len() {
            if let Err(e) = self.connect_slot(k).await {
                result = Err(e);
            }
        }
        result
    }

    async fn connect_slot(&self, k: usize) -> Result<()> {
        let claim = loop {
            if self.shared.slots.live(k, self.engine()).is_some() {
                return Ok(());
            }
            match self.shared.slots.claim(k) {
                Ok(c) => break c,
                // The supervisor is reopening it: wait for its outcome.
                Err(busy) => {
                    let _ = busy.recv_async().await;
                }
            }
        };
        let retry = &self.shared.retry;
        let mut attempt = 0;
        loop {
            match self.shared.open(k).await {
                Ok(id) => {
                    claim.set(id);
                    drop(claim);
                    if let Some(s) = &self.supervisor {
                        s.watch(k, id);
                    }
                    return Ok(());
                }
                Err(e) if attempt >= retry.max_retries || self.engine().is_stopped() => return Err(e),
                Err(e) => {
                    attempt += 1;
                    let delay = retry.delay(attempt, jitter());
                    tracing::debug!(slot = k, attempt, ?delay, error = %e, "connect failed; retrying");
                    sleep(delay).await;
                }
            }
        }
    }

    /// Closes every connection (pending requests fail at once) and keeps
    /// them closed: `auto_reconnect` does not reopen them.
    pub async fn disconnect(&self) -> Result<()> {
        self.shared.slots.set_wanted(false);
        let ids = self.shared.slots.all_live(self.engine());
        if ids.is_empty() {
            return Err(TransportError::NotConnected);
        }
        for id in ids {
            match self.engine().close(id, CloseReason::LocalClose).await {
                Ok(()) | Err(msgtrans_shards::SendError::SessionNotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Whether a connection is open.
    pub async fn is_connected(&self) -> bool {
        self.session().is_ok()
    }

    /// The session id of the first open connection.
    pub async fn current_session_id(&self) -> Option<SessionId> {
        self.shared.slots.all_live(self.engine()).first().copied()
    }

    /// Every open connection's session id, in pool order.
    pub fn session_ids(&self) -> Vec<SessionId> {
        self.shared.slots.all_live(self.engine())
    }

    /// Sends `data` as a one-way packet. `Ok` means it is queued on an open
    /// connection.
    pub async fn send(&self, data: &[u8]) -> Result<TransportResult> {
        let id = self.session()?;
        let mid = self.next_id();
        self.engine()
            .send_waiting(id, Packet::one_way(mid, data), self.send_timeout)
            .await
            .map_err(gone)?;
        Ok(TransportResult::sent(id, mid))
    }

    /// Sends `data` as a request and waits for the response, up to the
    /// request timeout. Fails at once if the connection drops.
    pub async fn request(&self, data: &[u8]) -> Result<TransportResult> {
        let id = self.session()?;
        let p = self
            .request_packet(id, Packet::request(0, data), self.request_timeout)
            .await?;
        Ok(TransportResult::completed(id, p))
    }

    /// Sends a one-way packet with options.
    pub async fn send_with_options(&self, data: Bytes, options: TransportOptions) -> Result<()> {
        let id = self.session()?;
        let mut p = Packet::one_way(options.message_id.unwrap_or_else(|| self.next_id()), data);
        options.apply(&mut p);
        self.engine().send_waiting(id, p, self.send_timeout).await.map_err(gone)
    }

    /// Sends a request with options and returns the response payload.
    pub async fn request_with_options(&self, data: Bytes, options: TransportOptions) -> Result<Bytes> {
        let id = self.session()?;
        let mut p = Packet::request(0, data);
        options.apply(&mut p);
        let timeout = options.timeout.unwrap_or(self.request_timeout);
        Ok(self.request_packet(id, p, timeout).await?.payload)
    }

    /// Sends a whole packet as is.
    pub async fn send_packet(&self, packet: Packet) -> Result<()> {
        self.engine()
            .send_waiting(self.session()?, packet, self.send_timeout)
            .await
            .map_err(gone)
    }

    /// Sends `data` as a one-way packet only if the outbound queue has room
    /// now; fails at once with [`TransportError::Backpressure`] otherwise.
    pub fn try_send(&self, data: &[u8]) -> Result<TransportResult> {
        let id = self.session()?;
        let mid = self.next_id();
        self.engine().try_send(id, Packet::one_way(mid, data)).map_err(gone)?;
        Ok(TransportResult::sent(id, mid))
    }

    /// Sends a request packet and returns the whole response packet.
    pub async fn request_packet_raw(&self, packet: Packet) -> Result<Packet> {
        let id = self.session()?;
        self.request_packet(id, packet, self.request_timeout).await
    }

    async fn request_packet(&self, id: SessionId, mut packet: Packet, timeout: Duration) -> Result<Packet> {
        packet.header.packet_type = PacketType::Request;
        self.engine()
            .request(id, packet, timeout)
            .await
            .map_err(|e| gone(TransportError::from_send(e, timeout)))
    }

    /// The client's events. Clones of the stream share one queue: each
    /// event is delivered once, and none is dropped. If a stop has to give
    /// up on events the application did not take in time, the stream says
    /// so with [`TransportError::EventsLost`] before it ends.
    pub fn subscribe_events(&self) -> ClientEventStream {
        ClientEventStream {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Same as [`TransportClient::subscribe_events`].
    pub async fn events(&self) -> Result<ClientEventStream> {
        Ok(self.subscribe_events())
    }

    async fn finish(&self, drain: Option<Duration>) {
        self.shared.closing.store(true, Ordering::Release);
        self.shared.slots.set_wanted(false);
        if let Some(s) = &self.supervisor {
            s.request_stop();
        }
        self.shared.engine.shutdown(drain).await;
        if let Some(s) = &self.supervisor {
            s.join().await;
        }
        self.shared.stopped_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Closes every connection at once (pending requests fail) and stops
    /// the client's shards and its reconnect supervisor.
    pub async fn stop(&self) {
        self.finish(None).await
    }

    /// Finishes requests in flight and queued sends (up to `deadline`),
    /// then closes the connections and stops the client's shards.
    pub async fn shutdown(&self, deadline: Duration) {
        self.finish(Some(deadline)).await
    }
}
