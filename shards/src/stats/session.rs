//! One session's counters: plain cells on the session (only its shard
//! touches them), read by the shard when asked for them.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::{Protocol, ShardStats};
use crate::id::SessionId;

/// Counters of one session, owned by its shard.
#[derive(Debug)]
pub(crate) struct SessionCounters {
    pub protocol: Cell<Protocol>,
    opened: Instant,
    pub msgs_in: Cell<u64>,
    pub msgs_out: Cell<u64>,
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    /// Packets in the outbound queue not yet taken for writing.
    pub queued_packets: Cell<u64>,
    /// Packets in the batch being written (counted whole until the whole
    /// batch is out: packet boundaries are not tracked inside a batch).
    pub writing_packets: Cell<u64>,
    /// Queue depth (bytes, packets) last added to the shard's gauges.
    reported: Cell<(u64, u64)>,
}

impl SessionCounters {
    pub fn new(protocol: Protocol) -> Self {
        Self {
            protocol: Cell::new(protocol),
            opened: Instant::now(),
            msgs_in: Cell::new(0),
            msgs_out: Cell::new(0),
            bytes_in: Cell::new(0),
            bytes_out: Cell::new(0),
            queued_packets: Cell::new(0),
            writing_packets: Cell::new(0),
            reported: Cell::new((0, 0)),
        }
    }

    /// Counts `n` packets received, here and on the shard.
    #[inline]
    pub fn received(&self, stats: &ShardStats, n: u64) {
        self.msgs_in.set(self.msgs_in.get() + n);
        stats.protocol(self.protocol.get()).msgs_in.add(n);
    }

    /// Counts one packet queued for sending, here and on the shard.
    #[inline]
    pub fn queued(&self, stats: &ShardStats) {
        self.msgs_out.set(self.msgs_out.get() + 1);
        self.queued_packets.set(self.queued_packets.get() + 1);
        stats.protocol(self.protocol.get()).msgs_out.add(1);
    }

    /// Counts `n` bytes read.
    #[inline]
    pub fn read(&self, stats: &ShardStats, n: usize) {
        self.bytes_in.set(self.bytes_in.get() + n as u64);
        stats.protocol(self.protocol.get()).bytes_in.add(n as u64);
    }

    /// Counts `n` bytes written.
    #[inline]
    pub fn wrote(&self, stats: &ShardStats, n: usize) {
        self.bytes_out.set(self.bytes_out.get() + n as u64);
        stats.protocol(self.protocol.get()).bytes_out.add(n as u64);
    }

    /// The queued packets become the batch being written.
    pub fn take_batch(&self) {
        self.writing_packets.set(self.queued_packets.replace(0));
    }

    /// The batch being written is all out.
    pub fn batch_written(&self) {
        self.writing_packets.set(0);
    }

    /// Moves the shard's queue gauges by how much this session's queue
    /// changed since it last reported (`queued_bytes` is its depth now).
    /// Called once per driver turn, not per packet.
    pub fn report_queue(&self, stats: &ShardStats, queued_bytes: usize) {
        let now = (
            queued_bytes as u64,
            self.queued_packets.get() + self.writing_packets.get(),
        );
        let before = self.reported.replace(now);
        if now != before {
            stats.queued_bytes.add(now.0 as i64 - before.0 as i64);
            stats.queued_packets.add(now.1 as i64 - before.1 as i64);
        }
    }

    /// Takes this session's queue out of the shard's gauges (it closed).
    pub fn unreport_queue(&self, stats: &ShardStats) {
        let before = self.reported.replace((0, 0));
        stats.queued_bytes.add(-(before.0 as i64));
        stats.queued_packets.add(-(before.1 as i64));
    }

    /// A copy for [`SessionStats`].
    pub fn snapshot(&self, id: SessionId, queued_bytes: usize, requests_in_flight: usize) -> SessionStats {
        SessionStats {
            id,
            protocol: self.protocol.get(),
            age: self.opened.elapsed(),
            msgs_in: self.msgs_in.get(),
            msgs_out: self.msgs_out.get(),
            bytes_in: self.bytes_in.get(),
            bytes_out: self.bytes_out.get(),
            queued_bytes: queued_bytes as u64,
            queued_packets: self.queued_packets.get() + self.writing_packets.get(),
            requests_in_flight: requests_in_flight as u64,
        }
    }
}

/// One session's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionStats {
    /// The session.
    pub id: SessionId,
    /// The protocol it speaks.
    pub protocol: Protocol,
    /// Time since it opened.
    pub age: Duration,
    /// Packets received.
    pub msgs_in: u64,
    /// Packets queued for sending.
    pub msgs_out: u64,
    /// Bytes read (after TLS decryption).
    pub bytes_in: u64,
    /// Bytes written (before TLS encryption).
    pub bytes_out: u64,
    /// Bytes queued and not yet written.
    pub queued_bytes: u64,
    /// Packets queued and not yet written.
    pub queued_packets: u64,
    /// Requests sent to the peer and waiting for their response.
    pub requests_in_flight: u64,
}
