//! The NATS broker: core NATS through async-nats, the maintained Rust
//! client. Core NATS is at most once, and async-nats drops what it had not
//! flushed when a connection fails; the links above resend whatever was
//! not acknowledged, so neither loses a message.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr, Subscriber};
use bytes::Bytes;
use futures_lite::Stream;
use tokio::sync::mpsc::UnboundedSender;

use super::broker::{Broker, Health};
use super::config::ClusterConfig;

/// Messages a subscription may hold before async-nats drops newer ones
/// (and says `SlowConsumer`): deep enough for a full send window of small
/// messages from every node; a drop beyond it is resent like any loss.
const SUBSCRIPTION_CAPACITY: usize = 1 << 16;

/// Delay before reconnect attempt `n`: at once for the first (another
/// server of the cluster is usually up), then growing to 1 s, so a
/// failover costs milliseconds and an outage no busy loop.
fn reconnect_delay(attempt: usize) -> Duration {
    match attempt {
        0 | 1 => Duration::ZERO,
        n => Duration::from_millis((n as u64 * 50).min(1000)),
    }
}

pub(crate) struct Nats {
    client: Client,
}

/// A NATS subscription as a stream of payloads.
pub(crate) struct NatsSubscription(Subscriber);

impl Stream for NatsSubscription {
    type Item = Bytes;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        Pin::new(&mut self.0).poll_next(cx).map(|m| m.map(|m| m.payload))
    }
}

impl Broker for Nats {
    type Subscription = NatsSubscription;

    async fn connect(cfg: &ClusterConfig, health: UnboundedSender<Health>) -> Result<Self, String> {
        let addrs = cfg
            .urls
            .iter()
            .map(|u| {
                u.parse::<ServerAddr>()
                    .map_err(|e| format!("invalid NATS URL {u:?}: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let opts = ConnectOptions::new()
            .name(format!("msgtrans-{}-node-{}", cfg.name, cfg.node))
            .connection_timeout(cfg.connect_timeout)
            .subscription_capacity(SUBSCRIPTION_CAPACITY)
            .reconnect_delay_callback(reconnect_delay)
            // The first URL is this node's own server (the one beside it);
            // the others, and those the cluster advertises, are failover.
            .retain_servers_order()
            // Keep trying for ever: the node reports sends it cannot make
            // (ClusterUnreachable) and is back as soon as a server is.
            .max_reconnects(None)
            .event_callback(move |event| {
                let health = health.clone();
                async move {
                    let h = match event {
                        Event::Connected => Some(Health::Connected),
                        Event::Disconnected => Some(Health::Disconnected),
                        Event::SlowConsumer(sid) => {
                            tracing::warn!(sid, "cluster subscription full; the dropped messages will be resent");
                            None
                        }
                        other => {
                            tracing::debug!(event = %other, "NATS event");
                            None
                        }
                    };
                    if let Some(h) = h {
                        let _ = health.send(h);
                    }
                }
            });
        let connect = opts.connect(addrs);
        let client = tokio::time::timeout(cfg.connect_timeout, connect)
            .await
            .map_err(|_| {
                format!(
                    "no NATS server of {:?} answered within {:?}",
                    cfg.urls, cfg.connect_timeout
                )
            })?
            .map_err(|e| format!("cannot connect to NATS at {:?}: {e}", cfg.urls))?;
        Ok(Self { client })
    }

    async fn subscribe(&self, subject: String) -> Result<NatsSubscription, String> {
        self.client
            .subscribe(subject.clone())
            .await
            .map(NatsSubscription)
            .map_err(|e| format!("cannot subscribe to {subject}: {e}"))
    }

    async fn publish(&self, subject: String, payload: Bytes) -> Result<(), String> {
        self.client.publish(subject, payload).await.map_err(|e| e.to_string())
    }

    async fn flush(&self) -> Result<(), String> {
        self.client.flush().await.map_err(|e| e.to_string())
    }

    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }
}
