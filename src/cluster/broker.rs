//! The broker a cluster runs through, behind a small trait of our own (as
//! Centrifuge keeps its Broker and socketioxide its adapter Driver), so
//! that another broker can be added without touching the links. Only NATS
//! is built (`nats.rs`).
//!
//! What the links ask of a broker is little: publish bytes to a subject,
//! receive a subject's messages, say how large a message may be, and say
//! when the connection comes and goes. It may lose messages (core NATS is
//! at most once); the links make up for that.

use std::future::Future;

use bytes::Bytes;
use futures_lite::Stream;

use super::config::ClusterConfig;

/// The broker connection coming and going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Connected (again): what was published meanwhile may be lost.
    Connected,
    /// Disconnected: the client is trying the other servers.
    Disconnected,
}

/// A connection to a message broker.
pub(crate) trait Broker: Sized + 'static {
    /// A subject's messages, as they arrive.
    type Subscription: Stream<Item = Bytes> + Unpin + 'static;

    /// Connects to the first reachable of `cfg`'s servers within its
    /// connect timeout. Later changes of health go to `health`.
    fn connect(
        cfg: &ClusterConfig,
        health: tokio::sync::mpsc::UnboundedSender<Health>,
    ) -> impl Future<Output = Result<Self, String>>;

    /// Subscribes to `subject`. Once [`Broker::flush`] returns after
    /// this, the broker this client talks to knows of the interest.
    fn subscribe(&self, subject: String) -> impl Future<Output = Result<Self::Subscription, String>>;

    /// Publishes `payload` to `subject`. It may be lost; it is never sent
    /// in part.
    fn publish(&self, subject: String, payload: Bytes) -> impl Future<Output = Result<(), String>>;

    /// Waits until what was published has reached the broker.
    fn flush(&self) -> impl Future<Output = Result<(), String>>;

    /// The largest message the broker accepts.
    fn max_payload(&self) -> usize;
}
