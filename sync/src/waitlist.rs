//! A doorbell for many consumers: the application's event streams.
//!
//! [`crate::doorbell::Doorbell`] wakes the one task that drains a shard's
//! inbox. An engine's events go to the application instead, where any
//! number of tasks may wait on clones of one event stream, so this bell
//! keeps every waiting task's waker and a ring wakes them all. The
//! protocol and its fences are the doorbell's (see that module): look,
//! [`WaitList::arm`], look again, sleep; a producer adds to the queue,
//! then [`WaitList::ring`]s.
//!
//! The shards ring it once per turn rather than once per event, so a burst
//! of events costs the application one wake-up (and the core one context
//! switch) instead of one per event.
//!
//! The wakers sit behind a mutex: it is taken once per sleep and once per
//! ring that finds the bell armed, never per event. A consumer that found
//! work after arming leaves its waker in place (with several consumers the
//! bell cannot tell whose arming to undo); that costs it at most one
//! spurious wake-up.

use std::task::Waker;

use crate::facade::{fence, AtomicBool, AtomicU64, Mutex, Ordering};

/// Wakes every sleeping consumer, at most once per batch.
#[derive(Debug, Default)]
pub struct WaitList {
    armed: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
    rings: AtomicU64,
}

impl WaitList {
    /// A bell nobody waits on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Producer: wakes the consumers that sleep. Call after the event (or
    /// the close) is visible in the queue. Cheap when nobody sleeps.
    pub fn ring(&self) {
        // Orders the queue write before the read of `armed`; pairs with
        // the fence in `arm`.
        fence(Ordering::SeqCst);
        if self.armed.load(Ordering::Relaxed) && self.armed.swap(false, Ordering::AcqRel) {
            let wakers = std::mem::take(&mut *crate::facade::lock(&self.wakers));
            self.rings.fetch_add(1, Ordering::Relaxed);
            for w in wakers {
                w.wake();
            }
        }
    }

    /// Consumer: adds `waker` and arms the bell before the second look.
    pub fn arm(&self, waker: &Waker) {
        {
            let mut wakers = crate::facade::lock(&self.wakers);
            if !wakers.iter().any(|w| w.will_wake(waker)) {
                wakers.push(waker.clone());
            }
        }
        // Release: a producer that disarms it (AcqRel) sees the waker.
        self.armed.store(true, Ordering::Release);
        // Orders `armed` before the second look at the queue; pairs with
        // the fence in `ring`.
        fence(Ordering::SeqCst);
    }

    /// How many rings woke someone.
    pub fn wakeups(&self) -> u64 {
        self.rings.load(Ordering::Relaxed)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn a_ring_wakes_every_armed_consumer_once_and_only_when_armed() {
        let bell = WaitList::new();
        let (a, b) = (
            Arc::new(Count(AtomicUsize::new(0))),
            Arc::new(Count(AtomicUsize::new(0))),
        );
        let (wa, wb) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        bell.ring();
        bell.arm(&wa);
        bell.arm(&wa);
        bell.arm(&wb);
        bell.ring();
        bell.ring();
        let n = |c: &Count| c.0.load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!((n(&a), n(&b), bell.wakeups()), (1, 1, 1));
    }
}
