//! What a client shares with its event streams and its reconnect
//! supervisor: the engine, the target, the connection slots, and the
//! queue of client-level errors.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "websocket")]
use msgtrans_shards::proto::ws::handshake::WsTarget;
use msgtrans_shards::{Engine, EngineEvent};

use super::pool::Slots;
use super::retry::RetryConfig;
use crate::error::{Result, TransportError};
use crate::protocol::TargetConfig;
use crate::SessionId;

/// What a client shares with its event streams and reconnect supervisor.
pub(crate) struct Shared {
    pub engine: Arc<Engine>,
    pub target: TargetConfig,
    pub slots: Slots,
    pub retry: RetryConfig,
    /// The engine's events.
    pub events: flume::Receiver<EngineEvent>,
    /// Client-level errors for the event stream (reconnect give-ups).
    pub notices_tx: flume::Sender<TransportError>,
    pub notices: flume::Receiver<TransportError>,
    /// Notices a stop gave up on, for `EventsLost`.
    pub notices_lost: AtomicU64,
    /// `EventsLost` has been delivered by one of the streams.
    pub lost_reported: AtomicBool,
    /// `stop()` or `shutdown()` has begun.
    pub closing: AtomicBool,
    /// Dropped once a stop has finished: every event is queued by then
    /// (the shards' queue is not closed by their exit, so it cannot tell).
    pub stopped_tx: std::sync::Mutex<Option<flume::Sender<()>>>,
    /// Disconnects when the stop has finished.
    pub stopped: flume::Receiver<()>,
}

impl Shared {
    /// Opens one connection for slot `k`, from shard `k` (modulo the shard
    /// count), with no retry.
    pub async fn open(&self, k: usize) -> Result<SessionId> {
        Ok(match &self.target {
            TargetConfig::Tcp(c) => {
                let tls = c.engine_tls()?;
                self.engine
                    .connect_tcp(c.target_address, c.connect_timeout, tls, k)
                    .await?
            }
            #[cfg(feature = "websocket")]
            TargetConfig::WebSocket(c) => {
                let target = WsTarget {
                    host: c.host.clone(),
                    path: c.path.clone(),
                };
                let tls = c.engine_tls()?;
                self.engine
                    .connect_ws(c.address, c.connect_timeout, target, tls, k)
                    .await?
            }
            #[cfg(feature = "quic")]
            TargetConfig::Quic(c) => {
                let cfg = c.connect_config()?;
                self.engine
                    .connect_quic(c.target_address, c.connect_timeout, &cfg, k)
                    .await?
            }
        })
    }

    /// Queues a client-level error for the event stream. Waits while the
    /// queue is full, so nothing is dropped; a stop that finds it still
    /// full counts the notice as lost (reported as `EventsLost`).
    pub fn notify(&self, mut e: TransportError) {
        loop {
            match self.notices_tx.send_timeout(e, NOTICE_STOP_CHECK) {
                Ok(()) => return,
                Err(flume::SendTimeoutError::Timeout(back)) if !self.closing.load(Ordering::Acquire) => e = back,
                Err(_) => {
                    self.notices_lost.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!("client event queue full at stop; reconnect failure given up");
                    return;
                }
            }
        }
    }
}

/// How often a supervisor blocked on a full event queue checks for a stop.
const NOTICE_STOP_CHECK: Duration = Duration::from_millis(50);
