//! A doorbell that wakes a sleeping consumer at most once per batch.
//!
//! The consumer arms it just before it sleeps; the first producer that finds
//! it armed disarms it and wakes the consumer. Every later producer sees it
//! disarmed and pays only a fence and a load, so a burst of N messages costs
//! one wake-up, not N.
//!
//! The protocol, for a consumer of some queue:
//!
//! 1. try the queue; if something is there, take it;
//! 2. otherwise [`Doorbell::arm`] with the task's waker;
//! 3. try the queue once more: a producer may have added to it between 1
//!    and 2 and seen the bell disarmed. If something is there now,
//!    [`Doorbell::disarm`] and take it; otherwise sleep.
//!
//! A producer adds to the queue (or closes it), then [`Doorbell::ring`]s.
//!
//! Both sides write one location and then read the other's (the queue, the
//! bell): the store-buffer pattern, where release/acquire alone lets both
//! reads see old values, and the wake-up is lost. A `SeqCst` fence between
//! the write and the read on each side forbids that: either the consumer's
//! second look finds the message, or the producer finds the bell armed.
//! `loom` found that lost wake-up, for a message and for the close of the
//! queue alike, when the bell used `SeqCst` loads and stores without the
//! fences (tests/loom.rs, with the queue modelled as release/acquire).

use std::task::Waker;

use crate::facade::{fence, AtomicBool, AtomicU64, AtomicWaker, Ordering};

/// Wakes a sleeping consumer at most once per batch.
#[derive(Debug, Default)]
pub struct Doorbell {
    armed: AtomicBool,
    waker: AtomicWaker,
    rings: AtomicU64,
}

impl Doorbell {
    /// A disarmed doorbell.
    pub fn new() -> Self {
        Self::default()
    }

    /// Producer: wakes the consumer if it is asleep. Call after the message
    /// (or the close) is visible in the queue. Cheap when already awake.
    pub fn ring(&self) {
        // Orders the queue write before the read of `armed` (see the module
        // comment); pairs with the fence in `arm`.
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            self.rings.fetch_add(1, Ordering::Relaxed);
            self.waker.wake();
        }
    }

    /// Consumer: arms the bell with `waker` before looking at the queue a
    /// second time.
    pub fn arm(&self, waker: &Waker) {
        crate::facade::register(&self.waker, waker);
        // Release: a producer that disarms it (AcqRel) sees the waker.
        self.armed.store(true, Ordering::Release);
        // Orders `armed` before the second look at the queue; pairs with
        // the fence in `ring`.
        fence(Ordering::SeqCst);
    }

    /// Consumer: the second look found work; no wake-up is needed.
    pub fn disarm(&self) {
        self.armed.store(false, Ordering::Relaxed);
    }

    /// How many times a ring actually woke the consumer.
    pub fn wakeups(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }
}
