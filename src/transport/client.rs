//! The client: builder, handle and event stream. A client runs its own
//! shard (one by default), so its connection gets the same batched pipeline
//! as the server's sessions.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use msgtrans_shards::{CloseReason, Engine, EngineEvent, EventSink, Packet, PacketType};

use msgtrans_shards::proto::ws::handshake::WsTarget;

use super::config::Limits;
use crate::error::{Result, TransportError};
use crate::event::{ClientEvent, ConnectionInfo, EventStreamClosed, RawEvents, TransportContext, TransportResult};
use crate::protocol::{ClientProtocolConfig, TargetConfig};
use crate::SessionId;

pub use super::options::TransportOptions;

/// Builds a [`TransportClient`].
pub struct TransportClientBuilder {
    target: Option<TargetConfig>,
    shards: usize,
    limits: Limits,
}

impl Default for TransportClientBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl TransportClientBuilder {
    /// A client with no target yet, one shard, default limits.
    pub fn new() -> Self {
        Self {
            target: None,
            shards: 1,
            limits: Limits::default(),
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

    /// Starts the client's shard. It does not connect: call
    /// [`TransportClient::connect`].
    pub async fn build(self) -> Result<TransportClient> {
        let target = self
            .target
            .ok_or(TransportError::Config(crate::protocol::ConfigError::InvalidValue {
                field: "protocol",
                reason: "no protocol configured; call with_protocol()".into(),
            }))?;
        let cfg = self.limits.engine_config(self.shards, false, "msgtrans-client");
        let (tx, rx) = flume::bounded(cfg.event_capacity);
        let sink = EventSink {
            tx,
            lifecycle: Arc::new(true.into()),
        };
        let engine = Arc::new(Engine::start(cfg, None, sink).await?);
        Ok(TransportClient {
            engine,
            target,
            session: std::sync::Mutex::new(None),
            events: Arc::new(RawEvents { rx }),
            next_id: AtomicU32::new(1),
            request_timeout: self.limits.request_timeout,
            send_timeout: self.limits.send_timeout,
        })
    }
}

/// A client connection.
pub struct TransportClient {
    engine: Arc<Engine>,
    target: TargetConfig,
    session: std::sync::Mutex<Option<SessionId>>,
    events: Arc<RawEvents>,
    next_id: AtomicU32,
    request_timeout: Duration,
    send_timeout: Duration,
}

impl std::fmt::Debug for TransportClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransportClient").field("target", &self.target).finish()
    }
}

impl TransportClient {
    fn session(&self) -> Result<SessionId> {
        self.session
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .filter(|id| self.engine.is_live(*id))
            .ok_or(TransportError::NotConnected)
    }

    fn next_id(&self) -> u32 {
        loop {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            if id != 0 {
                return id;
            }
        }
    }

    /// Connects to the configured server.
    pub async fn connect(&mut self) -> Result<()> {
        if self.session().is_ok() {
            return Ok(());
        }
        let id = match &self.target {
            TargetConfig::Tcp(c) => {
                let tls = c.tls.as_ref().map(|t| t.build(&c.host)).transpose()?;
                self.engine
                    .connect_tcp(c.target_address, c.connect_timeout, tls, 0)
                    .await?
            }
            TargetConfig::WebSocket(c) => {
                let target = WsTarget {
                    host: c.host.clone(),
                    path: c.path.clone(),
                };
                let name = c.host.rsplit_once(':').map_or(c.host.as_str(), |(h, _)| h);
                let tls = c.tls.as_ref().map(|t| t.build(name)).transpose()?;
                self.engine
                    .connect_ws(c.address, c.connect_timeout, target, tls, 0)
                    .await?
            }
            TargetConfig::Quic(c) => {
                let cfg = c.connect_config()?;
                self.engine
                    .connect_quic(c.target_address, c.connect_timeout, &cfg, 0)
                    .await?
            }
        };
        *self.session.lock().unwrap_or_else(|e| e.into_inner()) = Some(id);
        Ok(())
    }

    /// Closes the connection. Pending requests fail at once.
    pub async fn disconnect(&self) -> Result<()> {
        let id = self.session()?;
        Ok(self.engine.close(id, CloseReason::LocalClose).await?)
    }

    /// Whether the connection is open.
    pub async fn is_connected(&self) -> bool {
        self.session().is_ok()
    }

    /// The session id of the open connection.
    pub async fn current_session_id(&self) -> Option<SessionId> {
        self.session().ok()
    }

    /// Sends `data` as a one-way packet. `Ok` means it is queued on an open
    /// connection.
    pub async fn send(&self, data: &[u8]) -> Result<TransportResult> {
        let id = self.session()?;
        let mid = self.next_id();
        self.engine
            .send_waiting(id, Packet::one_way(mid, data), self.send_timeout)
            .await?;
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
        Ok(self.engine.send_waiting(id, p, self.send_timeout).await?)
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
        Ok(self
            .engine
            .send_waiting(self.session()?, packet, self.send_timeout)
            .await?)
    }

    /// Sends `data` as a one-way packet only if the outbound queue has room
    /// now; fails at once with [`TransportError::Backpressure`] otherwise.
    pub fn try_send(&self, data: &[u8]) -> Result<TransportResult> {
        let id = self.session()?;
        let mid = self.next_id();
        self.engine.try_send(id, Packet::one_way(mid, data))?;
        Ok(TransportResult::sent(id, mid))
    }

    /// Sends a request packet and returns the whole response packet.
    pub async fn request_packet_raw(&self, packet: Packet) -> Result<Packet> {
        let id = self.session()?;
        self.request_packet(id, packet, self.request_timeout).await
    }

    async fn request_packet(&self, id: SessionId, mut packet: Packet, timeout: Duration) -> Result<Packet> {
        packet.header.packet_type = PacketType::Request;
        self.engine
            .request(id, packet, timeout)
            .await
            .map_err(|e| TransportError::from_send(e, timeout))
    }

    /// The client's events. Clones of the stream share one queue: each
    /// event is delivered once, and none is dropped.
    pub fn subscribe_events(&self) -> ClientEventStream {
        ClientEventStream {
            events: Arc::clone(&self.events),
            engine: Arc::clone(&self.engine),
        }
    }

    /// Same as [`TransportClient::subscribe_events`].
    pub async fn events(&self) -> Result<ClientEventStream> {
        Ok(self.subscribe_events())
    }

    /// Closes the connection at once (pending requests fail) and stops the
    /// client's shard.
    pub async fn stop(&self) {
        self.engine.stop().await;
    }

    /// Finishes requests in flight and queued sends (up to `deadline`),
    /// then closes the connection and stops the client's shard.
    pub async fn shutdown(&self, deadline: Duration) {
        self.engine.shutdown(Some(deadline)).await;
    }
}

/// The client's event stream.
pub struct ClientEventStream {
    events: Arc<RawEvents>,
    engine: Arc<Engine>,
}

impl ClientEventStream {
    fn convert(&self, ev: EngineEvent) -> Option<ClientEvent> {
        Some(match ev {
            EngineEvent::Opened {
                id,
                peer,
                local,
                protocol,
            } => ClientEvent::Connected {
                info: ConnectionInfo {
                    session_id: id,
                    local_addr: local,
                    peer_addr: peer,
                    protocol: protocol.into(),
                    established_at: SystemTime::now(),
                },
            },
            EngineEvent::Closed { reason, .. } => ClientEvent::Disconnected { reason },
            EngineEvent::Message { id, packet } => {
                ClientEvent::MessageReceived(TransportContext::new(id, packet, &self.engine))
            }
            EngineEvent::SendFailed { error, .. } => ClientEvent::Error { error: error.into() },
            EngineEvent::Listening { .. } => return None,
        })
    }

    /// The next event; `Err` once the client has shut down and every event
    /// has been taken.
    pub async fn recv(&mut self) -> std::result::Result<ClientEvent, EventStreamClosed> {
        loop {
            if let Some(ev) = self.events.try_recv() {
                if let Some(e) = self.convert(ev) {
                    return Ok(e);
                }
                continue;
            }
            if self.engine.is_stopped() {
                return Err(EventStreamClosed);
            }
            match self.events.recv().await {
                Some(ev) => {
                    if let Some(e) = self.convert(ev) {
                        return Ok(e);
                    }
                }
                None => return Err(EventStreamClosed),
            }
        }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.recv().await.ok()
    }
}
