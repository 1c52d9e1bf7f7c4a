//! Cluster mode: several msgtrans processes, one per machine (or several),
//! joined through core NATS so that `send`, `request` and `broadcast`
//! reach a session on any of them, delivered or reported.
//!
//! - A `SessionId` names its node (1-255) in its top byte, so routing
//!   needs no registry.
//! - Each node listens on its own inbox subject; heartbeats go to one
//!   control subject.
//! - Between two nodes, each direction is a byte stream of records
//!   (`link.rs`), chunked into broker messages: many packets share one
//!   message, and a large packet spans several under the broker's
//!   `max_payload`. Bytes are kept until acknowledged and resent when not,
//!   and taken once, in order: core NATS is at most once; the stream is
//!   exactly once while both nodes live.
//! - A node silent past the node timeout, or restarted, is down: every
//!   message to it not yet acknowledged is reported to its sender, and
//!   new sends fail at once, until it is heard again.
//! - The client runs on a thread of its own (`run.rs`); the shards hand it
//!   batches through their uplink and never wait on it.
//!
//! Layers: `record`, `envelope` and `link` are pure; `peer`, `node` and
//! `inbound` (what records from other nodes do) are the state; `broker` (the trait) and `nats` the I/O; `run` the thread.

mod broker;
mod config;
mod envelope;
mod inbound;
mod link;
mod nats;
mod node;
mod peer;
mod record;
mod run;
mod stats;

use std::sync::Arc;

pub use config::{
    ClusterConfig, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEARTBEAT, DEFAULT_MAX_MESSAGE, DEFAULT_NODE_TIMEOUT,
    DEFAULT_RESEND_AFTER, DEFAULT_WINDOW,
};
use msgtrans_shards::{Engine, StartError};
pub use stats::{ClusterStats, Count};

/// A running cluster layer: the thread and the way to stop it.
pub(crate) struct Cluster {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    ended: flume::Receiver<()>,
    stats: Arc<ClusterStats>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster").finish_non_exhaustive()
    }
}

impl Cluster {
    /// Joins the cluster: attaches the engine's uplink and starts the
    /// thread, which connects to a NATS server, subscribes and announces
    /// this node. Fails if no server answers within the connect timeout.
    pub async fn start(engine: Arc<Engine>, cfg: ClusterConfig) -> Result<Self, StartError> {
        let invalid = |reason: String| StartError::Cluster { reason };
        cfg.validate().map_err(|e| invalid(e.to_string()))?;
        if engine.node() != cfg.node {
            return Err(invalid(format!(
                "the engine runs as node {} but the cluster config names node {}",
                engine.node(),
                cfg.node
            )));
        }
        let uplink = engine.attach_uplink(cfg.window)?;
        let stats = Arc::new(ClusterStats::default());
        let (ready_tx, ready_rx) = flume::bounded(1);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let (ended_tx, ended_rx) = flume::bounded::<()>(1);
        let stats2 = Arc::clone(&stats);
        std::thread::Builder::new()
            .name("msgtrans-cluster".into())
            .spawn(move || {
                // Dropped when the thread ends, which `stop` waits for.
                let _ended = ended_tx;
                let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(format!("cannot start the cluster runtime: {e}")));
                        return;
                    }
                };
                rt.block_on(run::run::<nats::Nats>(cfg, engine, uplink, stats2, ready_tx, stop_rx));
            })
            .map_err(|e| invalid(format!("cannot start the cluster thread: {e}")))?;
        match ready_rx.recv_async().await {
            Ok(Ok(())) => Ok(Self {
                stop: Some(stop_tx),
                ended: ended_rx,
                stats,
            }),
            Ok(Err(reason)) => Err(invalid(reason)),
            Err(_) => Err(invalid("the cluster thread ended at start".into())),
        }
    }

    /// The layer's counters.
    pub fn stats(&self) -> &Arc<ClusterStats> {
        &self.stats
    }

    /// Leaves the cluster: everything not yet confirmed by another node is
    /// reported, and the thread ends. Idempotent.
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = self.ended.recv_async().await;
    }
}

impl Drop for Cluster {
    /// A server dropped without `stop` still ends the thread (which holds
    /// the engine).
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
