//! A node's cluster counters: what crossed the broker, what was sent
//! again, what was reported. Read without locks from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// One counter.
#[derive(Debug, Default)]
pub struct Count(AtomicU64);

impl Count {
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The value now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Counters of one node's cluster layer (`TransportServer::cluster_stats`).
#[derive(Debug, Default)]
pub struct ClusterStats {
    /// Records (messages, requests, answers, reports) queued for other nodes.
    pub records_out: Count,
    /// Records taken from other nodes, each once.
    pub records_in: Count,
    /// Broker messages published to other nodes (data and bare acks).
    pub messages_out: Count,
    /// Broker messages with data received from other nodes.
    pub messages_in: Count,
    /// Bare acknowledgements published.
    pub acks_out: Count,
    /// Times a link's unacknowledged bytes were sent again.
    pub resends: Count,
    /// Received chunks already taken (a resend or a broker duplicate).
    pub duplicates: Count,
    /// Received chunks after a gap (an earlier message lost), dropped.
    pub gaps: Count,
    /// Messages for another node that were reported undelivered to their
    /// sender (by the target node, or for a node that went down).
    pub undelivered: Count,
    /// Times a node was taken for down.
    pub nodes_down: Count,
    /// Messages on our subjects that were not ours, or were for an earlier
    /// process with this node id.
    pub foreign: Count,
    /// Messages meant for an earlier incarnation of this node.
    pub stale: Count,
    /// Heartbeats from another process using this node's id.
    pub node_id_clashes: Count,
    /// Times the broker connection came back after it was lost.
    pub reconnects: Count,
}

impl std::fmt::Display for ClusterStats {
    /// One line of `name=value` pairs, for logs and examples.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields = [
            ("records_out", &self.records_out),
            ("records_in", &self.records_in),
            ("messages_out", &self.messages_out),
            ("messages_in", &self.messages_in),
            ("acks_out", &self.acks_out),
            ("resends", &self.resends),
            ("duplicates", &self.duplicates),
            ("gaps", &self.gaps),
            ("undelivered", &self.undelivered),
            ("nodes_down", &self.nodes_down),
            ("reconnects", &self.reconnects),
            ("foreign", &self.foreign),
            ("stale", &self.stale),
            ("node_id_clashes", &self.node_id_clashes),
        ];
        for (i, (name, c)) in fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{name}={}", c.get())?;
        }
        Ok(())
    }
}
