//! Tiered buffer pool on `crossbeam-queue` (through the loom facade).
//!
//! Each shard owns one pool. Buffers are plain `Vec<u8>`s kept in three
//! lock-free queues by capacity. A buffer handed to another thread as
//! [`Bytes`] (an event payload a Tokio task reads) carries its home pool and
//! goes back there when the last reference drops, from whatever thread.
//! Pools start empty and never hold more than their queue capacities, so
//! idle memory is bounded.

use std::cell::Cell;

use bytes::Bytes;

use crate::facade::{Arc, AtomicU64, BoundedQueue, Ordering};

/// Capacity of small buffers: one small message copied out for an event.
pub const SMALL: usize = 512;
/// Capacity of medium buffers: a session's read or write batch.
pub const MEDIUM: usize = 16 * 1024;
/// Capacity of large buffers: bulk transfers. Bigger buffers are freed, not kept.
pub const LARGE: usize = 256 * 1024;

/// How many buffers each tier keeps at most. A tier keeps buffers of up to
/// twice its size (the large tier: four times), so the defaults hold at
/// most 4 + 8 + 16 = 28 MiB per shard.
#[derive(Debug, Clone, Copy)]
pub struct PoolConfig {
    /// Small buffers kept (default 4096: 2 to 4 MiB).
    pub small: usize,
    /// Medium buffers kept (default 256: 4 to 8 MiB).
    pub medium: usize,
    /// Large buffers kept (default 16: 4 to 16 MiB).
    pub large: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            small: 4096,
            medium: 256,
            large: 16,
        }
    }
}

/// Counters, readable from any thread.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Buffers served from a queue.
    pub hits: AtomicU64,
    /// Buffers that had to be allocated.
    pub misses: AtomicU64,
    /// Buffers returned from a thread other than the home shard's.
    pub remote_returns: AtomicU64,
    /// Buffers freed because their tier was full or they were too big.
    pub dropped: AtomicU64,
    /// Bytes of capacity the queues hold now.
    pub kept_bytes: AtomicU64,
}

/// A point-in-time copy of [`PoolStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolSnapshot {
    /// Buffers served from a queue.
    pub hits: u64,
    /// Buffers that had to be allocated.
    pub misses: u64,
    /// Buffers returned from another thread.
    pub remote_returns: u64,
    /// Buffers freed instead of kept.
    pub dropped: u64,
    /// Bytes of capacity the pool holds now (what it pins while idle).
    pub kept_bytes: u64,
}

#[cfg(not(loom))]
std::thread_local! {
    /// Index of the shard running on this thread, `usize::MAX` elsewhere.
    static HOME: Cell<usize> = const { Cell::new(usize::MAX) };
}
#[cfg(loom)]
loom::thread_local! {
    static HOME: Cell<usize> = Cell::new(usize::MAX);
}

/// Marks the current thread as shard `index`'s, for remote-return counting.
pub fn set_thread_home(index: usize) {
    HOME.with(|h| h.set(index));
}

/// One shard's buffer pool.
#[derive(Debug)]
pub struct BufferPool {
    home: usize,
    tiers: [(usize, BoundedQueue<Vec<u8>>); 3],
    stats: PoolStats,
}

impl BufferPool {
    /// An empty pool belonging to shard `home`.
    pub fn new(home: usize, cfg: PoolConfig) -> Arc<Self> {
        Arc::new(Self {
            home,
            tiers: [
                (SMALL, BoundedQueue::new(cfg.small.max(1))),
                (MEDIUM, BoundedQueue::new(cfg.medium.max(1))),
                (LARGE, BoundedQueue::new(cfg.large.max(1))),
            ],
            stats: PoolStats::default(),
        })
    }

    /// A buffer with capacity at least `min` (at least the tier size). Its
    /// length is unspecified: clear it to append, or use it as a read buffer.
    pub fn get(&self, min: usize) -> Vec<u8> {
        for (cap, q) in &self.tiers {
            if min <= *cap {
                if let Some(v) = q.pop() {
                    self.count(&self.stats.hits);
                    // Buffers come back from any thread: an atomic add.
                    self.stats.kept_bytes.fetch_sub(v.capacity() as u64, Ordering::Relaxed);
                    return v;
                }
                self.count(&self.stats.misses);
                return Vec::with_capacity(*cap);
            }
        }
        self.count(&self.stats.misses);
        Vec::with_capacity(min)
    }

    /// Counts a buffer its owner served from a cache in front of the pool
    /// (the shard's hot stack), so `hits` still tells how often a buffer
    /// was reused rather than allocated.
    pub fn count_hit(&self) {
        self.count(&self.stats.hits);
    }

    /// Counts a `get`. On the home shard, the only thread that normally
    /// takes buffers, a plain load and store suffice (no locked RMW on the
    /// per-message path); anywhere else it must be an atomic add.
    #[inline]
    fn count(&self, c: &AtomicU64) {
        if HOME.with(Cell::get) == self.home {
            c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        } else {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns a buffer. It is kept in the largest tier it can serve if it
    /// is at most twice that tier's size (four times for the large tier),
    /// or freed. Its contents are left as they are (callers `clear()`
    /// append buffers; read buffers keep their initialised length, so
    /// reusing them costs no memset).
    ///
    /// The size cap is what bounds the pool in bytes, not only in buffers:
    /// without it a write buffer that grew to 255 KiB went back to the
    /// medium tier, and a soak slowly filled 256 such slots (64 MiB) per
    /// shard.
    pub fn put(&self, v: Vec<u8>) {
        if HOME.with(Cell::get) != self.home {
            self.stats.remote_returns.fetch_add(1, Ordering::Relaxed);
        }
        let cap = v.capacity();
        if let Some((size, q)) = self.tiers.iter().rev().find(|(c, _)| cap >= *c) {
            // Over 4x the large size is a one-off (a huge frame): free it
            // rather than pin that much memory in the pool.
            let most = if *size == LARGE { LARGE * 4 } else { size * 2 };
            if cap <= most {
                // Counted before the push: a concurrent pop may take the
                // buffer (and subtract) at once.
                self.stats.kept_bytes.fetch_add(cap as u64, Ordering::Relaxed);
                if q.push(v).is_ok() {
                    return;
                }
                self.stats.kept_bytes.fetch_sub(cap as u64, Ordering::Relaxed);
            }
        }
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Copies `data` into a pooled buffer and shares it as [`Bytes`]; the
    /// buffer comes home when the last clone drops, on any thread.
    #[cfg(not(loom))]
    pub fn copy_to_bytes(self: &Arc<Self>, data: &[u8]) -> Bytes {
        share(self, data)
    }

    /// Reads the counters.
    pub fn snapshot(&self) -> PoolSnapshot {
        PoolSnapshot {
            hits: self.stats.hits.load(Ordering::Relaxed),
            misses: self.stats.misses.load(Ordering::Relaxed),
            remote_returns: self.stats.remote_returns.load(Ordering::Relaxed),
            dropped: self.stats.dropped.load(Ordering::Relaxed),
            kept_bytes: self.stats.kept_bytes.load(Ordering::Relaxed),
        }
    }
}

/// [`BufferPool::copy_to_bytes`] as a function (loom's `Arc` cannot be a
/// method receiver).
pub fn share(pool: &Arc<BufferPool>, data: &[u8]) -> Bytes {
    if data.len() > LARGE {
        return Bytes::copy_from_slice(data);
    }
    let mut v = pool.get(data.len());
    v.clear();
    v.extend_from_slice(data);
    Bytes::from_owner(Pooled {
        buf: v,
        home: Arc::clone(pool),
    })
}

/// A pooled buffer shared as [`Bytes`].
struct Pooled {
    buf: Vec<u8>,
    home: Arc<BufferPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.home.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn second_get_is_a_hit() {
        set_thread_home(0);
        let pool = BufferPool::new(0, PoolConfig::default());
        let v = pool.get(10);
        assert!(v.capacity() >= SMALL);
        pool.put(v);
        let _ = pool.get(10);
        let s = pool.snapshot();
        assert_eq!((s.hits, s.misses, s.remote_returns), (1, 1, 0));
    }

    #[test]
    fn bytes_dropped_on_another_thread_go_home() {
        set_thread_home(0);
        let pool = BufferPool::new(0, PoolConfig::default());
        let b = pool.copy_to_bytes(b"hello");
        assert_eq!(&b[..], b"hello");
        std::thread::spawn(move || drop(b)).join().unwrap();
        assert_eq!(pool.snapshot().remote_returns, 1);
        let _ = pool.get(5);
        assert_eq!(pool.snapshot().hits, 1);
    }

    #[test]
    fn tier_is_bounded() {
        let pool = BufferPool::new(
            0,
            PoolConfig {
                small: 1,
                medium: 1,
                large: 1,
            },
        );
        pool.put(Vec::with_capacity(SMALL));
        pool.put(Vec::with_capacity(SMALL));
        assert_eq!(pool.snapshot().dropped, 1);
        pool.put(Vec::with_capacity(LARGE * 8));
        assert_eq!(pool.snapshot().dropped, 2);
    }

    #[test]
    fn a_buffer_far_over_its_tier_size_is_freed_not_kept() {
        let pool = BufferPool::new(0, PoolConfig::default());
        // A write buffer that grew to 100 KiB would serve only as a medium
        // one: freed, so that 256 of them cannot pin 25 MiB.
        pool.put(Vec::with_capacity(100 * 1024));
        pool.put(Vec::with_capacity(4 * SMALL));
        assert_eq!(pool.snapshot().dropped, 2);
        pool.put(Vec::with_capacity(2 * MEDIUM));
        pool.put(Vec::with_capacity(4 * LARGE));
        assert_eq!(pool.snapshot().dropped, 2, "up to 2x (4x for large) is kept");
        assert_eq!(pool.snapshot().kept_bytes, (2 * MEDIUM + 4 * LARGE) as u64);
        assert!(pool.get(MEDIUM).capacity() >= MEDIUM);
        assert_eq!(pool.snapshot().hits, 1);
        assert_eq!(pool.snapshot().kept_bytes, (4 * LARGE) as u64);
    }
}
