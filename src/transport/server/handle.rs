//! A running server: the handle the application sends, requests,
//! broadcasts and stops with. Clones share it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use msgtrans_shards::stats::{SessionStats, StatsSnapshot};
use msgtrans_shards::{CloseReason, Engine, EngineEvent, Packet, PacketType, WaitList};

use crate::error::{Result, TransportError};
use crate::event::{RawEvents, TransportResult};
#[cfg(feature = "metrics")]
use crate::metrics::MetricsServer;
use crate::SessionId;

pub(super) struct Inner {
    pub(super) engine: Arc<Engine>,
    pub(super) events: RawEvents,
    pub(super) events_tx: flume::Sender<EngineEvent>,
    /// Rung after events go into the queue (by the shards once per turn)
    /// and when the server stops: what event streams sleep on.
    pub(super) bell: Arc<WaitList>,
    pub(super) lifecycle: Arc<AtomicBool>,
    pub(super) addrs: Vec<(&'static str, SocketAddr)>,
    /// Self-signed certificates made for QUIC listeners given none.
    #[cfg(feature = "quic")]
    pub(super) quic_certs: Vec<(SocketAddr, String)>,
    /// One counter for every clone, so message ids stay unique (MsgTrans 1.0
    /// reset them on clone).
    pub(super) next_id: AtomicU32,
    pub(super) request_timeout: Duration,
    pub(super) send_timeout: Duration,
    pub(super) stopped_tx: std::sync::Mutex<Option<flume::Sender<()>>>,
    pub(super) stopped_rx: flume::Receiver<()>,
    pub(super) stopped_reported: AtomicBool,
    #[cfg(feature = "metrics")]
    pub(super) metrics: Option<MetricsServer>,
    #[cfg(feature = "cluster")]
    pub(super) cluster: std::sync::Mutex<Option<crate::cluster::Cluster>>,
}

/// A running server. Clones share it.
#[derive(Clone)]
pub struct TransportServer {
    pub(super) inner: Arc<Inner>,
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

    /// Sends `data` as a one-way packet.
    ///
    /// Returns once the packet is queued on the session's shard: `Ok` means
    /// the session was open. When the session's outbound queue is full (its
    /// peer reads slower than it is sent to), waits for room up to the send
    /// timeout, then fails with [`TransportError::Backpressure`]. If the
    /// session closes before the packet is written, a
    /// [`ServerEvent::TransportError`](crate::ServerEvent::TransportError) reports it.
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

    /// This server's cluster node (0 outside a cluster).
    pub fn node(&self) -> u8 {
        self.inner.engine.node()
    }

    /// The cluster layer's counters (`None` outside a cluster, or once
    /// stopped).
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_stats(&self) -> Option<Arc<crate::cluster::ClusterStats>> {
        let c = self.inner.cluster.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref().map(|c| Arc::clone(c.stats()))
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
        // After the sessions: what they sent to other nodes until the end
        // is still delivered or reported.
        #[cfg(feature = "cluster")]
        {
            let cluster = self.inner.cluster.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(mut c) = cluster {
                c.stop().await;
            }
        }
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.inner.metrics {
            m.stop();
        }
        self.inner.stopped_tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.inner.bell.ring();
    }
}
