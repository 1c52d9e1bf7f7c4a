//! Per-shard counters, written by the shard once per batch and read from
//! any thread without stopping it.

use std::sync::atomic::{AtomicU64, Ordering};

/// A relaxed counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// Reads the value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Live counters of one shard.
#[derive(Debug, Default)]
pub struct ShardStats {
    /// Sessions ever opened.
    pub sessions_total: Counter,
    /// Connections refused by a connection limit.
    pub refused: Counter,
    /// Packets received.
    pub msgs_in: Counter,
    /// Bytes received.
    pub bytes_in: Counter,
    /// Bytes written.
    pub bytes_out: Counter,
    /// Requests that timed out.
    pub request_timeouts: Counter,
    /// Messages received from other shards or the application.
    pub mesh_in: Counter,
    /// Events given up at shutdown because the application's queue stayed full.
    pub events_abandoned: Counter,
    /// Handshakes refused or timed out.
    pub handshake_failures: Counter,
    /// QUIC datagrams this shard's socket received for another shard's
    /// connection and relayed to it.
    pub quic_forwarded: Counter,
}

/// A point-in-time copy of one shard's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Shard index.
    pub shard: usize,
    /// Sessions open now.
    pub sessions_open: usize,
    /// Sessions ever opened.
    pub sessions_total: u64,
    /// Connections refused by a limit.
    pub refused: u64,
    /// Packets received.
    pub msgs_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
    /// Mesh messages received.
    pub mesh_in: u64,
    /// Events given up at shutdown because the application's queue stayed full.
    pub events_abandoned: u64,
    /// Handshakes refused or timed out.
    pub handshake_failures: u64,
    /// QUIC datagrams relayed to the shard that owns their connection.
    pub quic_forwarded: u64,
    /// Times a mesh doorbell woke this shard.
    pub wakeups: u64,
    /// Buffer pool counters.
    pub pool: crate::pool::buffer::PoolSnapshot,
}
