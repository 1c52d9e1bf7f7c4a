//! loom model tests of the lock-free parts: the doorbell never loses a
//! wake-up (a message, or the close of the queue, racing with the consumer
//! going to sleep), slot reservations never pass the limit and always come
//! back, and a buffer dropped on another thread comes home exactly once.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test -p
//! msgtrans-sync --release --target-dir target/loom`.
#![cfg(loom)]

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use loom::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use loom::sync::Arc;
use loom::thread;
use msgtrans_sync::buffer::{share, BufferPool, PoolConfig};
use msgtrans_sync::doorbell::Doorbell;
use msgtrans_sync::slots::SlotWords;
use msgtrans_sync::waitlist::WaitList;

/// A stand-in for the shard's inbox: messages are a count, and the last
/// sender leaving closes it. Release/acquire only, so the model assumes no
/// more ordering of the real channel than that.
#[derive(Default)]
struct Queue {
    sent: AtomicUsize,
    closed: AtomicBool,
    bell: Doorbell,
}

impl Queue {
    fn send(&self) {
        self.sent.fetch_add(1, Ordering::Release);
        self.bell.ring();
    }
    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.bell.ring();
    }
}

/// The consumer's side of the protocol (mesh::RecvBatch): look, arm, look
/// again, sleep. Resolves once `want` messages arrived or the queue closed.
struct Wait<'a> {
    q: &'a Queue,
    want: usize,
}

impl Wait<'_> {
    fn done(&self) -> bool {
        self.q.sent.load(Ordering::Acquire) >= self.want || self.q.closed.load(Ordering::Acquire)
    }
}

impl Future for Wait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done() {
            return Poll::Ready(());
        }
        self.q.bell.arm(cx.waker());
        if self.done() {
            self.q.bell.disarm();
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

#[test]
fn doorbell_a_message_sent_while_the_consumer_arms_always_wakes_it() {
    model(|| {
        let q = Arc::new(Queue::default());
        let p = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.send())
        };
        // A lost wake-up leaves this blocked forever: loom reports it.
        loom::future::block_on(Wait { q: &q, want: 1 });
        p.join().unwrap();
    });
}

#[test]
fn doorbell_the_close_racing_the_consumer_going_to_sleep_always_wakes_it() {
    model(|| {
        let q = Arc::new(Queue::default());
        let p = {
            let q = Arc::clone(&q);
            thread::spawn(move || q.close())
        };
        loom::future::block_on(Wait {
            q: &q,
            want: usize::MAX,
        });
        p.join().unwrap();
    });
}

#[test]
fn doorbell_two_senders_wake_a_consumer_that_sleeps_between_them() {
    model(|| {
        let q = Arc::new(Queue::default());
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let q = Arc::clone(&q);
                thread::spawn(move || q.send())
            })
            .collect();
        loom::future::block_on(Wait { q: &q, want: 1 });
        loom::future::block_on(Wait { q: &q, want: 2 });
        for s in senders {
            s.join().unwrap();
        }
    });
}

/// The application's event queue: events are a count that consumers take
/// one at a time.
#[derive(Default)]
struct Events {
    queued: AtomicUsize,
    bell: WaitList,
}

/// One consumer's `recv`: take an event if there is one; otherwise arm,
/// look again, sleep (src/transport/server.rs, `ServerEventStream::recv`).
struct Take<'a>(&'a Events);

impl Take<'_> {
    fn try_take(&self) -> bool {
        self.0
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }
}

impl Future for Take<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.try_take() {
            return Poll::Ready(());
        }
        self.0.bell.arm(cx.waker());
        if self.try_take() {
            return Poll::Ready(());
        }
        Poll::Pending
    }
}

#[test]
fn waitlist_two_consumers_each_get_an_event_however_the_rings_interleave() {
    model(|| {
        let q = Arc::new(Events::default());
        let consumer = {
            let q = Arc::clone(&q);
            thread::spawn(move || loom::future::block_on(Take(&q)))
        };
        let producer = {
            let q = Arc::clone(&q);
            thread::spawn(move || {
                for _ in 0..2 {
                    q.queued.fetch_add(1, Ordering::Release);
                    q.bell.ring();
                }
            })
        };
        // Either consumer losing its wake-up leaves it blocked: loom
        // reports the deadlock.
        loom::future::block_on(Take(&q));
        consumer.join().unwrap();
        producer.join().unwrap();
    });
}

#[test]
fn slots_concurrent_reservations_never_pass_the_limit() {
    model(|| {
        let t = Arc::new(SlotWords::new(1));
        t.set_queued(0, 10);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let t = Arc::clone(&t);
                thread::spawn(move || t.try_reserve(0, 40, 100))
            })
            .collect();
        let here = t.try_reserve(0, 40, 100);
        let won = threads.into_iter().map(|h| h.join().unwrap()).filter(|w| *w).count() + here as usize;
        // 10 queued + 2 × 40 fit under 100; a third 40 does not.
        assert_eq!(won, 2);
        assert_eq!(t.reserved(0), 80);
    });
}

#[test]
fn slots_a_reservation_released_by_the_shard_is_room_again() {
    model(|| {
        let t = Arc::new(SlotWords::new(1));
        assert!(t.try_reserve(0, 60, 100));
        let shard = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                // The shard takes the packet: publishes it as queued, then
                // lets go of the reservation.
                t.set_queued(0, 60);
                t.release(0, 60);
                t.set_queued(0, 0);
            })
        };
        let second = t.try_reserve(0, 60, 100);
        shard.join().unwrap();
        if second {
            assert_eq!(t.reserved(0), 60);
        } else {
            assert_eq!(t.reserved(0), 0);
            assert!(t.try_reserve(0, 60, 100), "room after the release");
        }
    });
}

#[test]
fn slots_bytes_moving_from_reserved_to_queued_are_never_missed() {
    model(|| {
        let t = Arc::new(SlotWords::new(1));
        // A 60-byte packet is reserved and not yet written anywhere.
        assert!(t.try_reserve(0, 60, 100));
        let shard = {
            let t = Arc::clone(&t);
            thread::spawn(move || {
                // The shard takes it: it is queued now, no longer reserved.
                t.set_queued(0, 60);
                t.release(0, 60);
            })
        };
        // Its bytes are held either way, so a second 60 never fits: seeing
        // the old queue and the released count together would let it in.
        assert!(!t.try_reserve(0, 60, 100), "the first packet's bytes were missed");
        shard.join().unwrap();
        assert_eq!(t.reserved(0), 0);
    });
}

#[test]
fn buffer_dropped_on_another_thread_comes_home_exactly_once() {
    model(|| {
        let cfg = PoolConfig {
            small: 1,
            medium: 1,
            large: 1,
        };
        let pool = BufferPool::new(0, cfg);
        let b = share(&pool, b"hello");
        let t = thread::spawn(move || drop(b));
        let first = pool.get(5);
        t.join().unwrap();
        let second = pool.get(5);
        let s = pool.snapshot();
        assert_eq!(s.remote_returns, 1);
        // One buffer was made for `b` and came back; exactly one of the two
        // later gets found it, whichever ran after its return.
        assert_eq!((s.hits, s.misses), (1, 2));
        drop((first, second));
    });
}
