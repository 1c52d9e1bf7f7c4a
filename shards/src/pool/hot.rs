//! A shard-local LIFO stack in front of the buffer pool.
//!
//! A session hands its read and write buffers back whenever its batch is
//! done (idle sessions hold none), so under load each batch takes a buffer
//! and returns one. Through the pool alone that is a CAS on a lock-free
//! queue and two atomic adds each way, and the queue is FIFO: it hands out
//! the buffer returned longest ago, so a shard cycles through every buffer
//! it pooled (up to 16 × 256 KiB of read buffers) and each read lands in
//! memory that has left the cache. The stack is touched only by its shard
//! (it lives in the `!Send` shard context), so it needs no
//! atomics, and it gives back the buffer returned last, still warm.
//!
//! It keeps at most [`HOT_PER_TIER`] medium and as many large buffers, each
//! at most twice its tier's size, and as many read buffers (medium or
//! large), so it pins at most 4 × (32 KiB + 512 KiB + 512 KiB) beyond the
//! pool's own bound; anything else goes to the pool as before.

use std::cell::RefCell;
use std::sync::Arc;

use crate::pool::buffer::{BufferPool, LARGE, MEDIUM, SMALL};

/// Buffers kept per tier: enough for the sessions one shard turn serves
/// back to back, few enough that they stay in the cache.
pub const HOT_PER_TIER: usize = 4;

/// The medium and large tiers' stacks (small buffers are event payloads,
/// which other threads return, so they would rarely come back here).
pub(crate) struct HotBuffers {
    pool: Arc<BufferPool>,
    tiers: [RefCell<Vec<Vec<u8>>>; 2],
    /// Read buffers, kept apart: each is filled to its capacity, so it can
    /// be read into again without being zeroed. Through the tiers, a read
    /// could get a write batch's buffer (length 0, or the batch's) and
    /// zero up to 256 KiB of it: 5.7% of the server's CPU at 64 KiB.
    reads: RefCell<Vec<Vec<u8>>>,
}

impl HotBuffers {
    pub fn new(pool: Arc<BufferPool>) -> Self {
        Self {
            pool,
            tiers: [
                RefCell::new(Vec::with_capacity(HOT_PER_TIER)),
                RefCell::new(Vec::with_capacity(HOT_PER_TIER)),
            ],
            reads: RefCell::new(Vec::with_capacity(HOT_PER_TIER)),
        }
    }

    /// The pool behind the stack.
    pub fn pool(&self) -> &Arc<BufferPool> {
        &self.pool
    }

    /// Which stack serves (or keeps) buffers for a request of `min` bytes
    /// or a buffer of capacity `cap`: the pool's tier sizes.
    fn tier_for_request(min: usize) -> Option<usize> {
        match min {
            m if m <= SMALL => None,
            m if m <= MEDIUM => Some(0),
            m if m <= LARGE => Some(1),
            _ => None,
        }
    }

    fn tier_for_buffer(cap: usize) -> Option<usize> {
        match cap {
            c if (MEDIUM..=2 * MEDIUM).contains(&c) => Some(0),
            c if (LARGE..=2 * LARGE).contains(&c) => Some(1),
            _ => None,
        }
    }

    /// Like [`BufferPool::get`]: capacity at least `min`, length unspecified.
    #[inline]
    pub fn get(&self, min: usize) -> Vec<u8> {
        if let Some(t) = Self::tier_for_request(min) {
            if let Some(v) = self.tiers[t].borrow_mut().pop() {
                self.pool.count_hit();
                return v;
            }
        }
        self.pool.get(min)
    }

    /// A buffer to read into: capacity at least `min`, filled (with
    /// whatever it held) to its whole capacity.
    #[inline]
    pub fn get_read(&self, min: usize) -> Vec<u8> {
        let mut reads = self.reads.borrow_mut();
        // The one put back last of the request's own tier, wherever it lies
        // in the stack: a shard on the ring puts back both its 16 KiB reads
        // and 256 KiB ones (a frame larger than a read). Taking only the
        // top, a large read found a medium buffer there and fell through
        // to the tiers, which zeroed a write batch's buffer for it (5% of
        // the server's CPU at 64 KiB); and the ring, taking a 256 KiB
        // buffer for a 16 KiB slot, left the sessions' large reads short.
        // A request larger than every tier takes any buffer that fits.
        let tier = Self::tier_for_request(min);
        if let Some(i) = reads
            .iter()
            .rposition(|b| b.len() >= min && (tier.is_none() || Self::tier_for_buffer(b.capacity()) == tier))
        {
            self.pool.count_hit();
            return reads.remove(i);
        }
        drop(reads);
        let mut b = self.get(min);
        // Only a buffer that never served as a read buffer is zeroed.
        b.resize(b.capacity(), 0);
        b
    }

    /// Gives back a buffer from [`HotBuffers::get_read`].
    #[inline]
    pub fn put_read(&self, v: Vec<u8>) {
        let mut reads = self.reads.borrow_mut();
        if reads.len() < HOT_PER_TIER && v.len() == v.capacity() && Self::tier_for_buffer(v.capacity()).is_some() {
            reads.push(v);
            return;
        }
        drop(reads);
        self.put(v)
    }

    /// Like [`BufferPool::put`]; contents are left as they are.
    #[inline]
    pub fn put(&self, v: Vec<u8>) {
        if let Some(t) = Self::tier_for_buffer(v.capacity()) {
            let mut stack = self.tiers[t].borrow_mut();
            if stack.len() < HOT_PER_TIER {
                stack.push(v);
                return;
            }
        }
        self.pool.put(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::buffer::PoolConfig;

    #[test]
    fn the_buffer_put_last_comes_back_first_and_counts_as_a_hit() {
        let pool = BufferPool::new(0, PoolConfig::default());
        let hot = HotBuffers::new(Arc::clone(&pool));
        let a = hot.get(MEDIUM);
        let b = hot.get(MEDIUM);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        hot.put(a);
        hot.put(b);
        let (b, a) = (hot.get(MEDIUM), hot.get(MEDIUM));
        assert_eq!((b.as_ptr(), a.as_ptr()), (pb, pa));
        let s = pool.snapshot();
        assert_eq!((s.hits, s.misses), (2, 2));
    }

    #[test]
    fn a_request_is_served_from_its_own_tier_only() {
        let pool = BufferPool::new(0, PoolConfig::default());
        let hot = HotBuffers::new(pool);
        hot.put(Vec::with_capacity(MEDIUM));
        // A large request never gets the medium buffer on the stack.
        assert!(hot.get(LARGE).capacity() >= LARGE);
        assert_eq!(hot.get(MEDIUM).capacity(), MEDIUM);
        // Small requests go to the pool, which has no small buffer yet.
        assert!(hot.get(10).capacity() >= 10);
    }

    #[test]
    fn a_read_buffer_comes_back_filled_and_a_write_buffer_never_serves_a_read() {
        let pool = BufferPool::new(0, PoolConfig::default());
        let hot = HotBuffers::new(Arc::clone(&pool));
        let r = hot.get_read(64 * 1024);
        assert_eq!(r.len(), r.capacity(), "filled to its capacity");
        let pr = r.as_ptr();
        hot.put_read(r);
        // A write batch's buffer returned after it (length 0, same tier)
        // is not what the next read gets.
        let mut w = hot.get(LARGE);
        w.clear();
        let pw = w.as_ptr();
        hot.put(w);
        let r = hot.get_read(64 * 1024);
        assert_eq!(r.as_ptr(), pr);
        assert_ne!(r.as_ptr(), pw);
        assert_eq!(r.len(), r.capacity());
        // A read buffer too small for the request is left for a later read.
        hot.put_read(r);
        assert!(hot.get_read(2 * LARGE).len() >= 2 * LARGE);
        assert_eq!(hot.reads.borrow().len(), 1);
        // So is one of a larger tier than the request's...
        let m = hot.get_read(MEDIUM);
        assert_eq!(m.capacity(), MEDIUM);
        assert_eq!(hot.reads.borrow().len(), 1);
        // ...and a request of either tier finds its own beneath the other's.
        let pm = m.as_ptr();
        hot.put_read(m);
        let r = hot.get_read(64 * 1024);
        assert_eq!(r.capacity(), LARGE);
        hot.put_read(r);
        let m = hot.get_read(MEDIUM);
        assert_eq!(m.as_ptr(), pm);
    }

    #[test]
    fn past_its_bound_the_stack_hands_buffers_to_the_pool() {
        let pool = BufferPool::new(0, PoolConfig::default());
        let hot = HotBuffers::new(Arc::clone(&pool));
        for _ in 0..HOT_PER_TIER + 3 {
            hot.put(Vec::with_capacity(MEDIUM));
        }
        // An oversized buffer is never kept hot.
        hot.put(Vec::with_capacity(4 * MEDIUM));
        assert_eq!(hot.tiers[0].borrow().len(), HOT_PER_TIER);
        assert_eq!(pool.snapshot().kept_bytes, (3 * MEDIUM) as u64);
    }
}
