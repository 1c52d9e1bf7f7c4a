//! A node's cluster settings: which cluster, which node, which brokers, and
//! the timings that turn an at-most-once broker into "delivered or
//! reported". Every field has a named default and the reason for it.

use std::time::Duration;

use crate::protocol::ConfigError;

/// Default heartbeat period: 500 ms, so a node timeout of a few seconds
/// spans several heartbeats and one lost heartbeat is never a death.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_millis(500);
/// Default node timeout: 3 s without a heartbeat marks a node down and
/// reports what it had not confirmed. Long enough to ride out a broker
/// failover (the client reconnects to another server in milliseconds),
/// short enough that a sender hears of a dead node "within seconds".
pub const DEFAULT_NODE_TIMEOUT: Duration = Duration::from_secs(3);
/// Default resend delay: bytes unacknowledged for 200 ms are sent again. A
/// loopback or LAN round trip through the broker is well under 10 ms; a
/// broker that dropped a message (a reconnect, interest still spreading
/// through the broker cluster) costs one delay, not a loss.
pub const DEFAULT_RESEND_AFTER: Duration = Duration::from_millis(200);
/// Default send window per node: 8 MiB of messages not yet acknowledged.
/// When a node stops reading, this is what this process holds for it;
/// further sends to it fail with `Backpressure` until it catches up.
pub const DEFAULT_WINDOW: usize = 8 << 20;
/// Default largest broker message: 16 KiB. Many packets share one message
/// up to this size (the batching), and a larger packet is split. Measured
/// here with 1 KiB packets (`scripts/cluster-bench.sh`), 16 KiB messages
/// cost the NATS servers about half the CPU per packet that 64 KiB ones did
/// (a message longer than one of the server's reads is copied), at the
/// same or better throughput. It is lowered to the broker's own
/// `max_payload` (1 MiB by default for NATS, which closes the connection
/// of a client that sends more).
pub const DEFAULT_MAX_MESSAGE: usize = 16 << 10;
/// Default time to reach a broker at start: 5 s, after which building the
/// server fails with a clear error rather than serving alone.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How one process joins a cluster (see `TransportServerBuilder::cluster`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub(crate) name: String,
    pub(crate) node: u8,
    pub(crate) urls: Vec<String>,
    pub(crate) heartbeat: Duration,
    pub(crate) node_timeout: Duration,
    pub(crate) resend_after: Duration,
    pub(crate) window: usize,
    pub(crate) max_message: usize,
    pub(crate) connect_timeout: Duration,
}

impl ClusterConfig {
    /// Node `node` (1-255, unique in the cluster) of cluster `name`
    /// (letters, digits, `-` and `_`: it names the broker subjects), through
    /// the NATS servers at `urls` (`nats://host:port`; the first reachable
    /// is used, the others are failover).
    pub fn new<S: AsRef<str>>(name: &str, node: u8, urls: &[S]) -> Result<Self, ConfigError> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(ConfigError::InvalidValue {
                field: "cluster name",
                reason: format!("{name:?} must be letters, digits, '-' or '_'"),
            });
        }
        if node == 0 {
            return Err(ConfigError::InvalidValue {
                field: "cluster node",
                reason: "nodes are numbered 1-255 (0 is a process outside any cluster)".into(),
            });
        }
        let urls: Vec<String> = urls.iter().map(|u| u.as_ref().trim().to_string()).collect();
        if urls.is_empty() || urls.iter().any(|u| u.is_empty()) {
            return Err(ConfigError::InvalidValue {
                field: "cluster urls",
                reason: "give at least one NATS server URL, e.g. nats://127.0.0.1:4222".into(),
            });
        }
        Ok(Self {
            name: name.to_string(),
            node,
            urls,
            heartbeat: DEFAULT_HEARTBEAT,
            node_timeout: DEFAULT_NODE_TIMEOUT,
            resend_after: DEFAULT_RESEND_AFTER,
            window: DEFAULT_WINDOW,
            max_message: DEFAULT_MAX_MESSAGE,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        })
    }

    /// This node's number.
    pub fn node(&self) -> u8 {
        self.node
    }

    /// How often this node says it is alive; the node timeout must be at
    /// least three of these.
    pub fn with_heartbeat(mut self, every: Duration) -> Self {
        self.heartbeat = every;
        self
    }

    /// How long a node may stay silent before it is taken for down.
    pub fn with_node_timeout(mut self, timeout: Duration) -> Self {
        self.node_timeout = timeout;
        self
    }

    /// How long a message waits for its acknowledgement before it is sent
    /// again.
    pub fn with_resend_after(mut self, delay: Duration) -> Self {
        self.resend_after = delay;
        self
    }

    /// Bytes of unacknowledged messages allowed per node.
    pub fn with_window(mut self, bytes: usize) -> Self {
        self.window = bytes;
        self
    }

    /// Largest broker message this node publishes (capped by the broker's).
    pub fn with_max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// How long building the server waits for a broker.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Checks the timings against each other.
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError::InvalidValue {
                field,
                reason: reason.into(),
            })
        };
        if self.heartbeat.is_zero() || self.node_timeout < self.heartbeat * 3 {
            return bad(
                "cluster node timeout",
                "must be at least three heartbeats, so one lost heartbeat is not a death",
            );
        }
        if self.resend_after.is_zero() || self.resend_after >= self.node_timeout {
            return bad("cluster resend delay", "must be above zero and below the node timeout");
        }
        if self.window == 0 {
            return bad("cluster window", "must be above zero");
        }
        if self.max_message <= super::envelope::DATA_HEADER {
            return bad("cluster max message", "must leave room for a message header (51 bytes)");
        }
        Ok(())
    }

    /// The subject node `node` of this cluster listens on.
    pub(crate) fn inbox(&self, node: u8) -> String {
        format!("msgtrans.{}.node.{node}", self.name)
    }

    /// The subject every node's heartbeats go to.
    pub(crate) fn control(&self) -> String {
        format!("msgtrans.{}.control", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_with_a_reason() {
        assert!(ClusterConfig::new("a b", 1, &["nats://x"]).is_err());
        assert!(ClusterConfig::new("ok", 0, &["nats://x"]).is_err());
        assert!(ClusterConfig::new::<&str>("ok", 1, &[]).is_err());
        let c = ClusterConfig::new("chat-1", 7, &["nats://127.0.0.1:4222"]).unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.inbox(3), "msgtrans.chat-1.node.3");
        let e = c
            .clone()
            .with_node_timeout(Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("three heartbeats"), "{e}");
        assert!(c.with_resend_after(Duration::from_secs(5)).validate().is_err());
    }
}
