//! What the lock-free code is built from: `std` normally, `loom`'s
//! model-checked stand-ins under `--cfg loom`.

#[cfg(loom)]
pub(crate) use loom::future::AtomicWaker;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{Arc, Mutex};

#[cfg(not(loom))]
pub(crate) use atomic_waker::AtomicWaker;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{Arc, Mutex};

/// Locks `m`. A panic while it was held cannot leave a list of wakers
/// half-changed, so a poisoned lock is used as it is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> impl std::ops::DerefMut<Target = T> + '_ {
    #[cfg(loom)]
    return m.lock().unwrap();
    #[cfg(not(loom))]
    return m.lock().unwrap_or_else(|e| e.into_inner());
}

/// Registers `waker` (the two `AtomicWaker`s spell it differently).
pub(crate) fn register(slot: &AtomicWaker, waker: &std::task::Waker) {
    #[cfg(loom)]
    slot.register_by_ref(waker);
    #[cfg(not(loom))]
    slot.register(waker);
}

/// A bounded multi-producer, multi-consumer queue: `crossbeam-queue`'s
/// lock-free `ArrayQueue` normally; a loom mutex around a deque under loom
/// (loom cannot see inside crossbeam, and the pool's own logic is what the
/// model checks).
#[derive(Debug)]
pub(crate) struct BoundedQueue<T> {
    #[cfg(not(loom))]
    q: crossbeam_queue::ArrayQueue<T>,
    #[cfg(loom)]
    q: loom::sync::Mutex<std::collections::VecDeque<T>>,
    #[cfg(loom)]
    cap: usize,
}

impl<T> BoundedQueue<T> {
    pub(crate) fn new(cap: usize) -> Self {
        #[cfg(not(loom))]
        return Self {
            q: crossbeam_queue::ArrayQueue::new(cap),
        };
        #[cfg(loom)]
        return Self {
            q: loom::sync::Mutex::new(std::collections::VecDeque::new()),
            cap,
        };
    }

    /// Adds `v`, or hands it back when the queue is full.
    pub(crate) fn push(&self, v: T) -> Result<(), T> {
        #[cfg(not(loom))]
        return self.q.push(v);
        #[cfg(loom)]
        {
            let mut q = self.q.lock().unwrap();
            if q.len() >= self.cap {
                return Err(v);
            }
            q.push_back(v);
            Ok(())
        }
    }

    pub(crate) fn pop(&self) -> Option<T> {
        #[cfg(not(loom))]
        return self.q.pop();
        #[cfg(loom)]
        return self.q.lock().unwrap().pop_front();
    }
}
