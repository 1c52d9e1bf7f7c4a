//! Per-shard counters, written by their shard and read from any thread
//! without stopping it.
//!
//! Every counter here has exactly one writer, the shard thread that owns
//! it, so an increment is a relaxed load and a relaxed store: the same two
//! instructions a `Cell` costs, with no lock-prefixed read-modify-write and
//! no separate publish step that could be forgotten or lag. Readers (the
//! metrics endpoint, `stats()`) see each value as of the shard's last
//! store. The few counts that other threads add to (buffers returned from
//! elsewhere, in `pool::buffer`) use `fetch_add` on their own fields.

mod kinds;
mod session;

use std::sync::atomic::{AtomicU64, Ordering};

pub use kinds::{AcceptFailure, CloseKind, Protocol, Refusal};
pub(crate) use session::SessionCounters;
pub use session::SessionStats;

use crate::pool::buffer::PoolSnapshot;

/// A counter with a single writer (see the module docs): `add` from
/// another thread as well would lose counts, though never memory safety.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Only the owning shard calls this.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0
            .store(self.0.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
    /// Reads the value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A level that goes up and down (queue depth, requests in flight), with
/// a single writer like [`Counter`].
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    /// Moves the level by `delta`. Only the owning shard calls this.
    #[inline]
    pub fn add(&self, delta: i64) {
        let v = self.0.load(Ordering::Relaxed).wrapping_add(delta as u64);
        self.0.store(v, Ordering::Relaxed);
    }
    /// Reads the level. A level is never negative; should bookkeeping ever
    /// go below zero it reads as zero rather than as a huge number.
    pub fn get(&self) -> u64 {
        (self.0.load(Ordering::Relaxed) as i64).max(0) as u64
    }
}

/// Traffic of one protocol on one shard.
#[derive(Debug, Default)]
pub struct ProtocolCounters {
    /// Packets received.
    pub msgs_in: Counter,
    /// Packets queued for sending (by the application, a reply, or the
    /// inline handler).
    pub msgs_out: Counter,
    /// Bytes read from sessions' streams (after TLS decryption).
    pub bytes_in: Counter,
    /// Bytes written to sessions' streams (before TLS encryption).
    pub bytes_out: Counter,
}

/// Live counters of one shard. Aligned so that two shards' counters never
/// share a cache line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardStats {
    /// Sessions ever opened.
    pub sessions_total: Counter,
    /// Connections refused before they became sessions, every reason.
    pub refused: Counter,
    /// The same, by [`Refusal::index`].
    pub refusals: [Counter; Refusal::COUNT],
    /// Handshakes refused or timed out.
    pub handshake_failures: Counter,
    /// Failed `accept` calls on this shard's TCP and WebSocket listeners,
    /// by [`AcceptFailure::index`]. Each try counts: while the process is
    /// out of file descriptors, a shard retries every 10 ms, so this grows
    /// by about 100 a second per shard for as long as the shortage lasts.
    pub accept_failures: [Counter; AcceptFailure::COUNT],
    /// Reads on the shard ring that found none of its provided buffers
    /// free (`ENOBUFS`) and were queued again for the next turn.
    pub ring_reads_without_buffer: Counter,
    /// TCP and WebSocket sessions left on glommio's stream because their
    /// socket could not move onto the shard's epoll table or ring (its fd
    /// could not be duplicated, say with the process out of fds). They
    /// are served all the same, on the slower path.
    pub socket_fallbacks: Counter,
    /// QUIC datagrams this shard's socket received for another shard's
    /// connection and relayed to it.
    pub quic_forwarded: Counter,
    /// QUIC Initials answered with a Retry (too many handshakes half open).
    pub quic_retries: Counter,
    /// Traffic per protocol, indexed by [`Protocol::index`].
    pub protocols: [ProtocolCounters; Protocol::COUNT],
    /// Requests sent to peers and waiting for their response.
    pub requests_in_flight: Gauge,
    /// Requests that timed out.
    pub request_timeouts: Counter,
    /// Packets queued for sessions and not yet written.
    pub queued_packets: Gauge,
    /// Bytes queued for sessions and not yet written.
    pub queued_bytes: Gauge,
    /// Commands taken from the inbox (from the application and other shards).
    pub mesh_in: Counter,
    /// Packets handed to each other shard (indexed by shard), counted when
    /// the batch is handed over. Empty when the shard count is unknown.
    pub cross_shard_out: Box<[Counter]>,
    /// Sessions closed, by [`CloseKind::index`].
    pub closes: [Counter; CloseKind::COUNT],
    /// Events given up at shutdown because the application's queue stayed full.
    pub events_abandoned: Counter,
}

impl ShardStats {
    /// Counters for one of `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            cross_shard_out: (0..shards).map(|_| Counter::default()).collect(),
            ..Self::default()
        }
    }

    /// The counters of `protocol`.
    #[inline]
    pub fn protocol(&self, protocol: Protocol) -> &ProtocolCounters {
        &self.protocols[protocol.index()]
    }

    /// Counts a connection refused for `why`.
    pub fn count_refusal(&self, why: Refusal) {
        self.refused.add(1);
        self.refusals[why.index()].add(1);
    }

    /// Counts a failed `accept` that returned `e`.
    pub fn count_accept_failure(&self, e: &std::io::Error) -> AcceptFailure {
        let kind = AcceptFailure::of(e);
        self.accept_failures[kind.index()].add(1);
        kind
    }

    /// Counts a session closed for `reason`.
    pub fn count_close(&self, reason: &crate::error::CloseReason) {
        self.closes[CloseKind::of(reason).index()].add(1);
    }

    /// A copy of the counters this shard writes itself. The fields that
    /// come from elsewhere (`shard`, `sessions_open`, `cross_shard_in`,
    /// `wakeups`, `pool`) are left for the engine to fill in.
    pub fn snapshot(&self) -> ShardSnapshot {
        let mut s = ShardSnapshot {
            sessions_total: self.sessions_total.get(),
            refused: self.refused.get(),
            refusals: std::array::from_fn(|i| self.refusals[i].get()),
            handshake_failures: self.handshake_failures.get(),
            accept_failures: std::array::from_fn(|i| self.accept_failures[i].get()),
            ring_reads_without_buffer: self.ring_reads_without_buffer.get(),
            socket_fallbacks: self.socket_fallbacks.get(),
            quic_forwarded: self.quic_forwarded.get(),
            quic_retries: self.quic_retries.get(),
            requests_in_flight: self.requests_in_flight.get(),
            request_timeouts: self.request_timeouts.get(),
            queued_packets: self.queued_packets.get(),
            queued_bytes: self.queued_bytes.get(),
            mesh_in: self.mesh_in.get(),
            cross_shard_out: self.cross_shard_out.iter().map(Counter::get).sum(),
            events_abandoned: self.events_abandoned.get(),
            ..ShardSnapshot::default()
        };
        for (i, p) in self.protocols.iter().enumerate() {
            s.protocols[i] = ProtocolSnapshot {
                msgs_in: p.msgs_in.get(),
                msgs_out: p.msgs_out.get(),
                bytes_in: p.bytes_in.get(),
                bytes_out: p.bytes_out.get(),
            };
        }
        for (i, c) in self.closes.iter().enumerate() {
            s.closes[i] = c.get();
        }
        s.sum_protocols();
        s
    }
}

/// A point-in-time copy of one protocol's traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProtocolSnapshot {
    /// Packets received.
    pub msgs_in: u64,
    /// Packets queued for sending.
    pub msgs_out: u64,
    /// Bytes read.
    pub bytes_in: u64,
    /// Bytes written.
    pub bytes_out: u64,
}

/// A point-in-time copy of one shard's counters (or, in
/// [`StatsSnapshot::total`], of every shard's summed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShardSnapshot {
    /// Shard index (in a total: the number of shards summed).
    pub shard: usize,
    /// Sessions open now.
    pub sessions_open: usize,
    /// Sessions ever opened.
    pub sessions_total: u64,
    /// Connections refused before they became sessions, every reason.
    pub refused: u64,
    /// The same, by [`Refusal::index`]; see [`ShardSnapshot::refusals_of`].
    pub refusals: [u64; Refusal::COUNT],
    /// Handshakes refused or timed out.
    pub handshake_failures: u64,
    /// Failed `accept` calls (each retry counts), by
    /// [`AcceptFailure::index`]; see [`ShardSnapshot::accept_failures_of`].
    pub accept_failures: [u64; AcceptFailure::COUNT],
    /// Shard-ring reads that found no provided buffer free (`ENOBUFS`) and
    /// were queued again.
    pub ring_reads_without_buffer: u64,
    /// Sessions left on glommio's stream: their socket could not move onto
    /// the epoll table or the shard ring.
    pub socket_fallbacks: u64,
    /// QUIC datagrams relayed to the shard that owns their connection.
    pub quic_forwarded: u64,
    /// QUIC Initials answered with a Retry.
    pub quic_retries: u64,
    /// Packets received, every protocol.
    pub msgs_in: u64,
    /// Packets queued for sending, every protocol.
    pub msgs_out: u64,
    /// Bytes read, every protocol.
    pub bytes_in: u64,
    /// Bytes written, every protocol.
    pub bytes_out: u64,
    /// Traffic per protocol, indexed by [`Protocol::index`]; see
    /// [`ShardSnapshot::protocol`].
    pub protocols: [ProtocolSnapshot; Protocol::COUNT],
    /// Requests sent to peers and waiting for their response.
    pub requests_in_flight: u64,
    /// Requests that timed out.
    pub request_timeouts: u64,
    /// Packets queued for sessions and not yet written.
    pub queued_packets: u64,
    /// Bytes queued for sessions and not yet written.
    pub queued_bytes: u64,
    /// Commands taken from the inbox (from the application and other shards).
    pub mesh_in: u64,
    /// Packets other shards handed to this one.
    pub cross_shard_in: u64,
    /// Packets this shard handed to other shards.
    pub cross_shard_out: u64,
    /// Times a mesh doorbell woke this shard.
    pub wakeups: u64,
    /// Sessions closed, by [`CloseKind::index`]; see [`ShardSnapshot::closes_of`].
    pub closes: [u64; CloseKind::COUNT],
    /// Events given up at shutdown because the application's queue stayed full.
    pub events_abandoned: u64,
    /// Buffer pool counters.
    pub pool: PoolSnapshot,
}

impl ShardSnapshot {
    /// Traffic of one protocol.
    pub fn protocol(&self, protocol: Protocol) -> ProtocolSnapshot {
        self.protocols[protocol.index()]
    }

    /// Connections refused for this reason.
    pub fn refusals_of(&self, why: Refusal) -> u64 {
        self.refusals[why.index()]
    }

    /// Failed `accept` calls of this kind.
    pub fn accept_failures_of(&self, kind: AcceptFailure) -> u64 {
        self.accept_failures[kind.index()]
    }

    /// Sessions closed for reasons of this kind.
    pub fn closes_of(&self, kind: CloseKind) -> u64 {
        self.closes[kind.index()]
    }

    /// Sessions closed, for any reason.
    pub fn closes_total(&self) -> u64 {
        self.closes.iter().sum()
    }

    fn sum_protocols(&mut self) {
        let p = &self.protocols;
        self.msgs_in = p.iter().map(|p| p.msgs_in).sum();
        self.msgs_out = p.iter().map(|p| p.msgs_out).sum();
        self.bytes_in = p.iter().map(|p| p.bytes_in).sum();
        self.bytes_out = p.iter().map(|p| p.bytes_out).sum();
    }

    /// Adds `o`'s counts to these (for totals).
    fn accumulate(&mut self, o: &ShardSnapshot) {
        self.shard += 1;
        self.sessions_open += o.sessions_open;
        self.sessions_total += o.sessions_total;
        self.refused += o.refused;
        for (a, b) in self.refusals.iter_mut().zip(&o.refusals) {
            *a += b;
        }
        self.handshake_failures += o.handshake_failures;
        for (a, b) in self.accept_failures.iter_mut().zip(&o.accept_failures) {
            *a += b;
        }
        self.ring_reads_without_buffer += o.ring_reads_without_buffer;
        self.socket_fallbacks += o.socket_fallbacks;
        self.quic_forwarded += o.quic_forwarded;
        self.quic_retries += o.quic_retries;
        for (a, b) in self.protocols.iter_mut().zip(&o.protocols) {
            a.msgs_in += b.msgs_in;
            a.msgs_out += b.msgs_out;
            a.bytes_in += b.bytes_in;
            a.bytes_out += b.bytes_out;
        }
        self.requests_in_flight += o.requests_in_flight;
        self.request_timeouts += o.request_timeouts;
        self.queued_packets += o.queued_packets;
        self.queued_bytes += o.queued_bytes;
        self.mesh_in += o.mesh_in;
        self.cross_shard_in += o.cross_shard_in;
        self.cross_shard_out += o.cross_shard_out;
        self.wakeups += o.wakeups;
        for (a, b) in self.closes.iter_mut().zip(&o.closes) {
            *a += b;
        }
        self.events_abandoned += o.events_abandoned;
        self.pool.hits += o.pool.hits;
        self.pool.misses += o.pool.misses;
        self.pool.remote_returns += o.pool.remote_returns;
        self.pool.dropped += o.pool.dropped;
        self.sum_protocols();
    }
}

/// Every shard's counters at one moment, and their sum.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// One entry per shard, in shard order.
    pub shards: Vec<ShardSnapshot>,
    /// Every shard summed; its `shard` field is the number of shards.
    pub total: ShardSnapshot,
}

impl StatsSnapshot {
    /// Sums `shards` into a snapshot.
    pub fn from_shards(shards: Vec<ShardSnapshot>) -> Self {
        let mut total = ShardSnapshot::default();
        for s in &shards {
            total.accumulate(s);
        }
        Self { shards, total }
    }

    /// The per-shard snapshots (so code written against the earlier
    /// `Vec<ShardSnapshot>` keeps working).
    pub fn iter(&self) -> std::slice::Iter<'_, ShardSnapshot> {
        self.shards.iter()
    }
}

impl<'a> IntoIterator for &'a StatsSnapshot {
    type Item = &'a ShardSnapshot;
    type IntoIter = std::slice::Iter<'a, ShardSnapshot>;
    fn into_iter(self) -> Self::IntoIter {
        self.shards.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_and_gauges_go_both_ways() {
        let s = ShardStats::new(2);
        s.protocol(Protocol::Wss).msgs_in.add(3);
        s.queued_bytes.add(100);
        s.queued_bytes.add(-40);
        s.count_close(&crate::error::CloseReason::IdleTimeout);
        s.cross_shard_out[1].add(5);
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(s.count_accept_failure(&emfile), AcceptFailure::FdLimit);
        s.ring_reads_without_buffer.add(2);
        s.socket_fallbacks.add(1);
        let snap = s.snapshot();
        assert_eq!(snap.protocol(Protocol::Wss).msgs_in, 3);
        assert_eq!(snap.msgs_in, 3);
        assert_eq!(snap.queued_bytes, 60);
        assert_eq!(snap.closes_of(CloseKind::IdleTimeout), 1);
        assert_eq!(snap.closes_total(), 1);
        assert_eq!(snap.cross_shard_out, 5);
        assert_eq!(snap.accept_failures_of(AcceptFailure::FdLimit), 1);
        assert_eq!(snap.accept_failures_of(AcceptFailure::Other), 0);
        assert_eq!(snap.ring_reads_without_buffer, 2);
        assert_eq!(snap.socket_fallbacks, 1);
    }

    #[test]
    fn a_gauge_below_zero_reads_zero() {
        let g = Gauge::default();
        g.add(-1);
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn totals_sum_every_shard() {
        let a = ShardStats::new(2);
        let b = ShardStats::new(2);
        a.protocol(Protocol::Tcp).bytes_out.add(10);
        b.protocol(Protocol::WebSocket).bytes_out.add(5);
        b.count_close(&crate::error::CloseReason::PeerClosed);
        a.count_accept_failure(&std::io::Error::from_raw_os_error(libc::ENFILE));
        b.count_accept_failure(&std::io::Error::from_raw_os_error(libc::EMFILE));
        b.ring_reads_without_buffer.add(3);
        a.socket_fallbacks.add(1);
        b.socket_fallbacks.add(1);
        let mut sa = a.snapshot();
        sa.sessions_open = 2;
        let mut sb = b.snapshot();
        sb.shard = 1;
        sb.sessions_open = 1;
        let all = StatsSnapshot::from_shards(vec![sa, sb]);
        assert_eq!(all.total.shard, 2);
        assert_eq!(all.total.sessions_open, 3);
        assert_eq!(all.total.bytes_out, 15);
        assert_eq!(all.total.protocol(Protocol::Tcp).bytes_out, 10);
        assert_eq!(all.total.closes_of(CloseKind::PeerClosed), 1);
        assert_eq!(all.total.accept_failures_of(AcceptFailure::FdLimit), 2);
        assert_eq!(all.total.ring_reads_without_buffer, 3);
        assert_eq!(all.total.socket_fallbacks, 2);
        assert_eq!(all.iter().count(), 2);
    }
}
