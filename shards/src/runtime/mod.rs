//! The engine: N shards, each a glommio executor pinned to its own core on a
//! thread named `msgtrans-shard-K`, and the handle the API uses to reach them.

mod cluster;
mod start;

pub use cluster::DeliveryBatch;

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::EngineConfig;
use crate::error::{CloseReason, SendError, StartError};
use crate::event::Command;
use crate::id::SessionId;
use crate::mesh::Mesh;
use crate::packet::Packet;
use crate::pool::buffer::BufferPool;
#[cfg(feature = "quic")]
use crate::proto::quic::endpoint::QuicEndpoints;
#[cfg(feature = "quic")]
use crate::proto::quic::{QuicConnectConfig, QuicListenConfig};
use crate::proto::tls::{ClientTls, ServerTls};
#[cfg(feature = "websocket")]
use crate::proto::ws::handshake::{WsListenConfig, WsTarget};
use crate::shard::Shard;
use crate::stats::{SessionStats, ShardSnapshot, ShardStats, StatsSnapshot};

/// Number of cores this process may run on.
pub fn usable_cores() -> usize {
    core_affinity::get_core_ids().map_or(1, |c| c.len().max(1))
}

/// A running set of shards.
pub struct Engine {
    mesh: Arc<Mesh>,
    stats: Vec<Arc<ShardStats>>,
    pools: Vec<Arc<BufferPool>>,
    exits: Mutex<Vec<flume::Receiver<()>>>,
    stopped: AtomicBool,
    cfg: Arc<EngineConfig>,
    /// QUIC listeners opened so far (each shard keeps them in this order).
    #[cfg(feature = "quic")]
    quic_listeners: Mutex<usize>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("shards", &self.shards()).finish()
    }
}

/// Where a connection's outcome goes.
type ConnectReply = flume::Sender<Result<SessionId, StartError>>;

impl Engine {
    /// Number of shards.
    pub fn shards(&self) -> usize {
        self.mesh.outboxes.len()
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    fn command(&self, shard: usize, cmd: Command) -> Result<(), SendError> {
        if self.stopped.load(Ordering::Acquire) {
            return Err(SendError::Stopped);
        }
        self.mesh.outboxes[shard].send(cmd).map_err(|_| SendError::Stopped)
    }

    /// Listens for TCP on every shard; returns the bound address.
    /// Under TLS when `tls` is given (always `None` without the `tls`
    /// feature: its type is then uninhabited).
    pub fn listen_tcp(&self, addr: SocketAddr, tls: Option<ServerTls>) -> Result<SocketAddr, StartError> {
        self.listen(addr, move |shard, listener| {
            crate::proto::tcp::listen(shard, listener, tls)
        })
    }

    /// Listens for WebSocket upgrades on every shard; returns the bound address.
    #[cfg(feature = "websocket")]
    pub fn listen_ws(&self, addr: SocketAddr, cfg: WsListenConfig) -> Result<SocketAddr, StartError> {
        self.listen(addr, move |shard, listener| {
            crate::proto::ws::handshake::listen(shard, listener, cfg)
        })
    }

    /// Listens for QUIC on every shard (one UDP socket each, sharing the
    /// port); returns the bound address.
    #[cfg(feature = "quic")]
    pub fn listen_quic(&self, addr: SocketAddr, cfg: &QuicListenConfig) -> Result<SocketAddr, StartError> {
        let side = cfg.server_side()?;
        let mut count = self.quic_listeners.lock().unwrap_or_else(|e| e.into_inner());
        let (bound, sockets) = crate::proto::quic::udp::bind_reuseport(addr, self.shards())?;
        let index = *count;
        for (i, socket) in sockets.into_iter().enumerate() {
            let side = side.clone();
            let cmd = Shard::task(move |shard| QuicEndpoints::listen(shard, socket, index, side));
            self.command(i, cmd).map_err(|_| StartError::Stopped)?;
        }
        *count += 1;
        Ok(bound)
    }

    /// Opens a QUIC connection from shard `shard` (modulo the shard count),
    /// waiting at most `timeout` for the handshake.
    #[cfg(feature = "quic")]
    pub async fn connect_quic(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        cfg: &QuicConnectConfig,
        shard: usize,
    ) -> Result<SessionId, StartError> {
        let (config, server_name) = cfg.quinn()?;
        self.connect_from(shard, move |shard, reply| {
            QuicEndpoints::connect(shard, addr, timeout, config, &server_name, reply)
        })
        .await
    }

    /// Binds `addr` once per shard (`SO_REUSEPORT`) and has each shard
    /// serve its socket with `serve`.
    fn listen(
        &self,
        addr: SocketAddr,
        serve: impl FnOnce(&Rc<Shard>, std::net::TcpListener) + Clone + Send + 'static,
    ) -> Result<SocketAddr, StartError> {
        let (bound, listeners) = crate::proto::tcp::bind_reuseport(addr, self.shards(), self.cfg.shared_port)?;
        for (i, listener) in listeners.into_iter().enumerate() {
            let serve = serve.clone();
            self.command(i, Shard::task(move |shard| serve(shard, listener)))
                .map_err(|_| StartError::Stopped)?;
        }
        Ok(bound)
    }

    /// Opens a TCP connection from shard `shard` (modulo the shard count),
    /// waiting at most `timeout` for the handshake. Under TLS when `tls` is
    /// given (always `None` without the `tls` feature).
    pub async fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<ClientTls>,
        shard: usize,
    ) -> Result<SessionId, StartError> {
        self.connect_with(shard, move |shard| async move {
            crate::proto::tcp::connect(&shard, addr, timeout, tls).await
        })
        .await
    }

    /// Opens a WebSocket connection from shard `shard`: TCP, then the
    /// upgrade, both within `timeout`.
    #[cfg(feature = "websocket")]
    pub async fn connect_ws(
        &self,
        addr: SocketAddr,
        timeout: Duration,
        target: WsTarget,
        tls: Option<ClientTls>,
        shard: usize,
    ) -> Result<SessionId, StartError> {
        self.connect_with(shard, move |shard| async move {
            crate::proto::ws::handshake::connect(&shard, addr, timeout, target, tls).await
        })
        .await
    }

    /// [`Engine::connect_from`] for a connection that `open` makes in a
    /// task of its own on the shard.
    async fn connect_with<F, Fut>(&self, shard: usize, open: F) -> Result<SessionId, StartError>
    where
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<SessionId, StartError>> + 'static,
    {
        self.connect_from(shard, move |shard, reply| {
            let opening = open(Rc::clone(shard));
            glommio::spawn_local(async move {
                let _ = reply.send(opening.await);
            })
            .detach();
        })
        .await
    }

    /// Has shard `shard` (modulo the shard count) open a connection with
    /// `open`, which answers `reply` once it is a session or has failed.
    async fn connect_from(
        &self,
        shard: usize,
        open: impl FnOnce(&Rc<Shard>, ConnectReply) + Send + 'static,
    ) -> Result<SessionId, StartError> {
        let (reply, rx) = flume::bounded(1);
        self.command(shard % self.shards(), Shard::task(move |shard| open(shard, reply)))
            .map_err(|_| StartError::Stopped)?;
        rx.recv_async().await.map_err(|_| StartError::Stopped)?
    }

    /// Whether `id` is open now: a session of this process. (Whether a
    /// session of another cluster node is open is known only to that node;
    /// this says `false` for one.)
    pub fn is_live(&self, id: SessionId) -> bool {
        self.mesh.is_live(id)
    }

    /// Refuses a packet larger than the configured limits, before it costs
    /// the shard anything (the peer would refuse it anyway).
    fn check_size(&self, packet: &Packet) -> Result<(), SendError> {
        let f = &self.cfg.frame;
        if packet.payload.len() > f.max_payload as usize {
            return Err(SendError::Encode(crate::error::CodecError::PayloadTooLarge {
                len: u32::try_from(packet.payload.len()).unwrap_or(u32::MAX),
                max: f.max_payload,
            }));
        }
        if packet.ext_header.len() > f.max_ext_header as usize {
            return Err(SendError::Encode(crate::error::CodecError::ExtHeaderTooLarge {
                len: u16::try_from(packet.ext_header.len()).unwrap_or(u16::MAX),
                max: f.max_ext_header,
            }));
        }
        Ok(())
    }

    /// Queues `packet` for `id`. Fails at once if the session is not open
    /// or its outbound queue has no room; if it closes before the shard
    /// takes the packet, a `SendFailed` event says so.
    pub fn send(&self, id: SessionId, packet: Packet) -> Result<(), SendError> {
        self.try_send(id, packet)
    }

    /// Reserves `len` bytes of `id`'s outbound queue in the slot table, so
    /// that packets accepted here and still on their way to the shard count
    /// against the limit: without it, a fast sender outruns the queued
    /// count the shard publishes and piles packets up in the mesh.
    fn reserve(&self, id: SessionId, len: usize) -> bool {
        self.mesh.tables[id.shard()].try_reserve(id, len, self.cfg.max_outbound_bytes)
    }

    /// Hands a packet whose bytes are reserved to its shard.
    fn send_reserved(&self, id: SessionId, packet: Packet) -> Result<(), SendError> {
        let reserved = packet.wire_len();
        let cmd = Command::Send {
            id,
            packet,
            wait: None,
            reserved,
            report: None,
        };
        self.command(id.shard(), cmd).inspect_err(|_| {
            self.mesh.tables[id.shard()].release(id, reserved);
        })
    }

    /// Queues `packet` only if `id`'s outbound queue has room now; fails at
    /// once with [`SendError::Backpressure`] otherwise. For a session of
    /// another cluster node, the room is that node's send window, and a
    /// node known to be down fails at once with [`SendError::NodeDown`].
    pub fn try_send(&self, id: SessionId, packet: Packet) -> Result<(), SendError> {
        self.check_size(&packet)?;
        if !self.mesh.is_local(id) {
            return self.send_remote(id, packet);
        }
        if !self.is_live(id) {
            return Err(SendError::SessionNotFound(id));
        }
        if !self.reserve(id, packet.wire_len()) {
            return Err(SendError::Backpressure(id));
        }
        self.send_reserved(id, packet)
    }

    /// Queues `packet`, waiting up to `timeout` for room in `id`'s outbound
    /// queue; fails with [`SendError::Backpressure`] if none appears.
    /// Returns at once when there is room. A session of another cluster
    /// node is sent to as [`Engine::try_send`] does: its node's window is
    /// not waited on.
    pub async fn send_waiting(&self, id: SessionId, packet: Packet, timeout: Duration) -> Result<(), SendError> {
        self.check_size(&packet)?;
        if !self.mesh.is_local(id) {
            return self.send_remote(id, packet);
        }
        if !self.is_live(id) {
            return Err(SendError::SessionNotFound(id));
        }
        if self.reserve(id, packet.wire_len()) {
            return self.send_reserved(id, packet);
        }
        let (reply, rx) = flume::bounded(1);
        let deadline = std::time::Instant::now() + timeout;
        self.command(
            id.shard(),
            Command::Send {
                id,
                packet,
                wait: Some((deadline, reply)),
                reserved: 0,
                report: None,
            },
        )?;
        rx.recv_async().await.map_err(|_| SendError::Stopped)?
    }

    /// Sends a request and waits for its response, at most `timeout`.
    /// Fails at once when the session closes (or, on another cluster node,
    /// when its node goes down).
    pub async fn request(&self, id: SessionId, packet: Packet, timeout: Duration) -> Result<Packet, SendError> {
        self.check_size(&packet)?;
        let rx = if self.mesh.is_local(id) {
            self.request_start(id, packet, timeout)?
        } else {
            self.request_remote(id, packet, timeout)?
        };
        rx.recv_async().await.map_err(|_| SendError::Stopped)?
    }

    /// Hands a request for `id`, a session of this process, to its shard;
    /// the response (or why there is none) arrives on the receiver.
    pub fn request_start(
        &self,
        id: SessionId,
        packet: Packet,
        timeout: Duration,
    ) -> Result<flume::Receiver<Result<Packet, SendError>>, SendError> {
        if !self.is_live(id) {
            return Err(SendError::SessionNotFound(id));
        }
        let (reply, rx) = flume::bounded(1);
        self.command(
            id.shard(),
            Command::Request {
                id,
                packet,
                timeout,
                reply,
            },
        )?;
        Ok(rx)
    }

    /// Queues `packet` for every open session on every shard (in parallel,
    /// one command per shard) and, in a cluster, on every other node;
    /// returns how many sessions it reached.
    pub async fn broadcast(&self, packet: Packet) -> Result<usize, SendError> {
        self.broadcast_except(packet, None).await
    }

    /// [`Engine::broadcast`] to every session but `except`. In a cluster it
    /// fails with [`SendError::NodeDown`] (or
    /// [`SendError::ClusterUnreachable`]) if a node did not confirm it: the
    /// count would then be a guess.
    pub async fn broadcast_except(&self, packet: Packet, except: Option<SessionId>) -> Result<usize, SendError> {
        self.check_size(&packet)?;
        let remote = self.broadcast_remote(packet.clone(), except)?;
        let local = self.broadcast_local(packet, except)?.await?;
        let remote = match remote {
            Some(rx) => rx.recv_async().await.map_err(|_| SendError::Stopped)??,
            None => 0,
        };
        Ok(local + remote)
    }

    /// Hands a broadcast to every shard of this process now, in order with
    /// what this thread sent before; the future resolves to the count.
    pub fn broadcast_local(
        &self,
        packet: Packet,
        except: Option<SessionId>,
    ) -> Result<impl std::future::Future<Output = Result<usize, SendError>> + Send + 'static, SendError> {
        let mut waits = Vec::with_capacity(self.shards());
        for i in 0..self.shards() {
            let (reply, rx) = flume::bounded(1);
            self.command(
                i,
                Command::Broadcast {
                    packet: packet.clone(),
                    except,
                    reply: Some(reply),
                },
            )?;
            waits.push(rx);
        }
        Ok(async move {
            let mut total = 0;
            for rx in waits {
                total += rx.recv_async().await.map_err(|_| SendError::Stopped)?;
            }
            Ok(total)
        })
    }

    /// Closes a session; its close event carries `reason`.
    pub async fn close(&self, id: SessionId, reason: CloseReason) -> Result<(), SendError> {
        if !self.is_live(id) {
            return Err(SendError::SessionNotFound(id));
        }
        let (reply, rx) = flume::bounded(1);
        self.command(id.shard(), Command::Close { id, reason, reply })?;
        match rx.recv_async().await {
            Ok(true) => Ok(()),
            Ok(false) => Err(SendError::SessionNotFound(id)),
            Err(_) => Err(SendError::Stopped),
        }
    }

    /// A receiver that yields once `id` has closed (its pending requests
    /// have failed by then). Yields at once if `id` is not open; ends
    /// without a value if the engine stops first.
    pub fn watch_close(&self, id: SessionId) -> flume::Receiver<bool> {
        let (reply, rx) = flume::bounded(1);
        let _ = self.command(id.shard(), Command::WatchClose { id, reply });
        rx
    }

    /// Every open session.
    pub async fn sessions(&self) -> Vec<SessionId> {
        let mut waits = Vec::new();
        for i in 0..self.shards() {
            let (reply, rx) = flume::bounded(1);
            if self.command(i, Command::Sessions { reply }).is_ok() {
                waits.push(rx);
            }
        }
        let mut all = Vec::new();
        for rx in waits {
            all.extend(rx.recv_async().await.unwrap_or_default());
        }
        all
    }

    /// Number of open sessions, read without asking the shards.
    pub fn session_count(&self) -> usize {
        self.mesh.tables.iter().map(|t| t.live()).sum()
    }

    /// Open sessions per shard.
    pub fn sessions_per_shard(&self) -> Vec<usize> {
        self.mesh.tables.iter().map(|t| t.live()).collect()
    }

    /// Counters of every shard and their total, read without asking the
    /// shards (each value as of its shard's last store).
    pub fn stats(&self) -> StatsSnapshot {
        let shards = (0..self.shards())
            .map(|i| ShardSnapshot {
                shard: i,
                sessions_open: self.mesh.tables[i].live(),
                cross_shard_in: self
                    .stats
                    .iter()
                    .filter_map(|s| s.cross_shard_out.get(i).map(crate::stats::Counter::get))
                    .sum(),
                wakeups: self.mesh.outboxes[i].doorbell().wakeups(),
                pool: self.pools[i].snapshot(),
                ..self.stats[i].snapshot()
            })
            .collect();
        StatsSnapshot::from_shards(shards)
    }

    /// One session's counters, from its shard (a round trip to it);
    /// `None` if the session is not open.
    pub async fn session_stats(&self, id: SessionId) -> Option<SessionStats> {
        if !self.is_live(id) {
            return None;
        }
        let (reply, rx) = flume::bounded(1);
        self.command(id.shard(), Command::SessionStats { id, reply }).ok()?;
        rx.recv_async().await.ok().flatten()
    }

    /// Whether [`Engine::stop`] has run.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Stops listening, closes every session (each gets its close event),
    /// and waits until every shard thread has ended, so ports are free when
    /// this returns. Idempotent.
    pub async fn stop(&self) {
        self.shutdown(None).await
    }

    /// Graceful shutdown: stops accepting at once, lets every session finish
    /// its pending requests and queued output (closing each as it goes
    /// quiet), closes what is still open when `drain` has passed, then stops
    /// like [`Engine::stop`]. `None` closes at once.
    pub async fn shutdown(&self, drain: Option<Duration>) {
        if self.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let drain_until = drain.map(|d| std::time::Instant::now() + d);
        // Phase one: every shard stops listening, and all have before any
        // closes a session, so a connection the kernel hands to a shard
        // that still listens is never accepted while another shard closes.
        let mut waits = Vec::new();
        for o in &self.mesh.outboxes {
            let (reply, rx) = flume::bounded(1);
            if o.send(Command::Unlisten { reply }).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_async().await;
        }
        // Phase two: close (or drain) the sessions. The drain deadline
        // counts from the call, not from the end of phase one.
        let mut waits = Vec::new();
        for o in &self.mesh.outboxes {
            let (reply, rx) = flume::bounded(1);
            if o.send(Command::Stop { drain_until, reply }).is_ok() {
                waits.push(rx);
            }
        }
        for rx in waits {
            let _ = rx.recv_async().await;
        }
        let exits = std::mem::take(&mut *self.exits.lock().unwrap_or_else(|e| e.into_inner()));
        for rx in exits {
            // Resolves with Err when the thread drops its sender on exit.
            let _ = rx.recv_async().await;
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if !self.stopped.swap(true, Ordering::AcqRel) {
            for o in &self.mesh.outboxes {
                let (reply, _) = flume::bounded(1);
                let _ = o.send(Command::Stop {
                    drain_until: None,
                    reply,
                });
            }
        }
    }
}
