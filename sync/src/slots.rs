//! The cross-thread view of a shard's session slots: one atomic word per
//! slot saying which generation (if any) is live, the bytes its session has
//! queued as its shard last published them, and the bytes other threads
//! have reserved for sends not yet taken by the shard.
//!
//! Only the owning shard writes the words and the queued counts. Any thread
//! may reserve; the shard releases each reservation once, when it takes the
//! packet (whether it queues it or refuses it). Reservations are counted per
//! slot, not per generation: a packet reserved for a session that closes is
//! still released when the shard takes it, so a new session in that slot
//! sees the count fall back to exactly its own.

use crate::facade::{AtomicU32, AtomicUsize, Ordering};

/// Atomic per-slot state for one shard. Word = `generation << 1 | live`.
#[derive(Debug)]
pub struct SlotWords {
    words: Box<[AtomicU32]>,
    queued: Box<[AtomicUsize]>,
    reserved: Box<[AtomicUsize]>,
    live: AtomicUsize,
}

impl SlotWords {
    /// `capacity` slots, none live.
    pub fn new(capacity: usize) -> Self {
        let counters = || (0..capacity).map(|_| AtomicUsize::new(0)).collect();
        Self {
            words: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            queued: counters(),
            reserved: counters(),
            live: AtomicUsize::new(0),
        }
    }

    /// Slots in the table.
    pub fn capacity(&self) -> usize {
        self.words.len()
    }

    /// Whether `generation` of `slot` is live now.
    pub fn is_live(&self, slot: usize, generation: u32) -> bool {
        self.words
            .get(slot)
            .is_some_and(|w| w.load(Ordering::Acquire) == (generation << 1 | 1))
    }

    /// Shard: `generation` of `slot` is now live.
    pub fn open(&self, slot: usize, generation: u32) {
        self.words[slot].store(generation << 1 | 1, Ordering::Release);
        self.live.fetch_add(1, Ordering::Relaxed);
    }

    /// Shard: the session in `slot` has closed; `next` is the generation
    /// its next session will have.
    pub fn close(&self, slot: usize, next: u32) {
        self.words[slot].store(next << 1, Ordering::Release);
        self.queued[slot].store(0, Ordering::Relaxed);
        self.live.fetch_sub(1, Ordering::Relaxed);
    }

    /// Live slots.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Bytes queued in `slot`, as its shard last published.
    pub fn queued(&self, slot: usize) -> usize {
        self.queued.get(slot).map_or(0, |q| q.load(Ordering::Relaxed))
    }

    /// Shard: publishes the bytes queued in `slot`.
    pub fn set_queued(&self, slot: usize, bytes: usize) {
        if let Some(q) = self.queued.get(slot) {
            q.store(bytes, Ordering::Relaxed);
        }
    }

    /// Bytes reserved in `slot` by sends the shard has not taken yet.
    pub fn reserved(&self, slot: usize) -> usize {
        self.reserved.get(slot).map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Any thread: reserves `len` bytes in `slot` if queued plus reserved
    /// bytes stay within `limit`. One packet always fits a slot with
    /// nothing queued or reserved, however big, as the shard's own rule is.
    ///
    /// The shard moves a packet's bytes from reserved to queued: it
    /// publishes the larger queue, then releases (see [`SlotWords::release`]).
    /// Reading queued and then reserved could see neither (the old queue,
    /// then the released count) and let a packet in twice over. So the
    /// reservation is taken first, with acquire: if it saw a release, the
    /// queue read after it sees the bytes that release moved. At worst a
    /// packet is counted twice, and a send is refused that would have fit.
    pub fn try_reserve(&self, slot: usize, len: usize, limit: usize) -> bool {
        let Some(r) = self.reserved.get(slot) else {
            return false;
        };
        let before = r.fetch_add(len, Ordering::Acquire);
        let queued = self.queued[slot].load(Ordering::Relaxed);
        let empty = before == 0 && queued == 0;
        if empty || queued.saturating_add(before).saturating_add(len) <= limit {
            return true;
        }
        r.fetch_sub(len, Ordering::Relaxed);
        false
    }

    /// Shard: the packet that reserved `len` bytes in `slot` was taken.
    /// Publish the queue it joined first ([`SlotWords::set_queued`]): the
    /// release orders that before the bytes leave the reserved count.
    pub fn release(&self, slot: usize, len: usize) {
        if let Some(r) = self.reserved.get(slot) {
            r.fetch_sub(len, Ordering::Release);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn reservations_stop_at_the_limit_and_come_back_when_released() {
        let t = SlotWords::new(2);
        assert!(t.try_reserve(0, 60, 100));
        assert!(t.try_reserve(0, 40, 100));
        assert!(!t.try_reserve(0, 1, 100), "over the limit");
        assert!(t.try_reserve(1, 10, 100), "other slots are separate");
        t.release(0, 60);
        assert!(t.try_reserve(0, 60, 100));
        assert_eq!(t.reserved(0), 100);
    }

    #[test]
    fn one_packet_fits_an_empty_slot_however_big() {
        let t = SlotWords::new(1);
        assert!(t.try_reserve(0, 1000, 100));
        assert!(!t.try_reserve(0, 1, 100));
        t.release(0, 1000);
        t.set_queued(0, 50);
        assert!(!t.try_reserve(0, 60, 100), "published queued bytes count");
        assert!(t.try_reserve(0, 50, 100));
    }
}
