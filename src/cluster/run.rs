//! The cluster thread: one Tokio current-thread runtime (async-nats needs
//! Tokio; the shards do not run it) that drains the shards' uplink in
//! batches, reads the broker, keeps time, and publishes what the node
//! gives. No shard ever waits on it: shards hand it batches through their
//! uplink inbox and carry on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_lite::future::poll_once;
use futures_lite::StreamExt;
use msgtrans_shards::mesh::Inbox;
use msgtrans_shards::uplink::Outbound;
use msgtrans_shards::Engine;
use tokio::sync::{mpsc, oneshot};

use super::broker::{Broker, Health};
use super::config::ClusterConfig;
use super::node::{Done, Node};
use super::stats::ClusterStats;

/// Uplink messages taken per batch, and broker messages read per wake-up,
/// before the node publishes: large enough to batch, small enough that
/// acknowledgements go out promptly under load.
const BATCH: usize = 1024;

/// What woke the loop.
enum Wake {
    Stop,
    Outbound(bool),
    Data(Option<Bytes>),
    Control(Option<Bytes>),
    Done(Option<Done>),
    Health(Option<Health>),
    Tick,
    Beat,
}

/// Runs the node until `stop` fires or the engine goes. `ready` hears once
/// whether the broker was joined.
pub(crate) async fn run<B: Broker>(
    cfg: ClusterConfig,
    engine: Arc<Engine>,
    uplink: Inbox<Outbound>,
    stats: Arc<ClusterStats>,
    ready: flume::Sender<Result<(), String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let (health_tx, mut health) = mpsc::unbounded_channel();
    let joined = async {
        let broker = B::connect(&cfg, health_tx).await?;
        let inbox = broker.subscribe(cfg.inbox(cfg.node)).await?;
        let control = broker.subscribe(cfg.control()).await?;
        // Interest is registered before anyone is told we are here: the
        // first heartbeat goes out after this.
        broker.flush().await?;
        Ok::<_, String>((broker, inbox, control))
    };
    let (broker, mut inbox, mut control) = match joined.await {
        Ok(j) => j,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let (done_tx, mut done) = mpsc::unbounded_channel();
    let max_payload = broker.max_payload();
    let mut node = Node::new(cfg.clone(), engine, max_payload, done_tx, stats);
    let control_subject = cfg.control();
    let _ = broker.publish(control_subject.clone(), node.heartbeat()).await;
    let _ = ready.send(Ok(()));
    tracing::info!(node = cfg.node, cluster = %cfg.name, max_payload, "joined the cluster");

    let mut tick = tokio::time::interval((cfg.resend_after / 4).max(Duration::from_millis(5)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut beat = tokio::time::interval(cfg.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let wake = tokio::select! {
            biased;
            _ = &mut stop => Wake::Stop,
            h = health.recv() => Wake::Health(h),
            more = uplink.recv_batch(&mut batch, BATCH) => Wake::Outbound(more),
            m = inbox.next() => Wake::Data(m),
            m = control.next() => Wake::Control(m),
            d = done.recv() => Wake::Done(d),
            _ = tick.tick() => Wake::Tick,
            _ = beat.tick() => Wake::Beat,
        };
        let now = Instant::now();
        match wake {
            Wake::Stop | Wake::Outbound(false) => break,
            Wake::Outbound(true) => {
                for m in batch.drain(..) {
                    node.on_outbound(m, now);
                }
            }
            Wake::Data(Some(m)) => {
                node.on_data(&m, now);
                // Take what else has arrived before answering: one
                // acknowledgement for the lot.
                for _ in 1..BATCH {
                    match poll_once(inbox.next()).await {
                        Some(Some(m)) => node.on_data(&m, now),
                        _ => break,
                    }
                }
            }
            Wake::Control(Some(m)) => node.on_heartbeat(&m, now),
            Wake::Done(Some(d)) => node.on_done(d, now),
            Wake::Health(Some(h)) => node.on_health(h == Health::Connected, now),
            Wake::Tick => node.on_tick(now),
            Wake::Beat => {
                let _ = broker.publish(control_subject.clone(), node.heartbeat()).await;
            }
            // A subscription or channel ended: the client is closing.
            Wake::Data(None) | Wake::Control(None) | Wake::Done(None) | Wake::Health(None) => break,
        }
        for (to, msg) in node.outgoing() {
            // A failed publish is a lost message: the resend covers it.
            let _ = broker.publish(cfg.inbox(to), msg).await;
        }
    }
    node.shut();
    let _ = tokio::time::timeout(Duration::from_secs(1), broker.flush()).await;
}
