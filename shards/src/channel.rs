//! The channel the mesh is made of: a `crossbeam-channel` queue drained in
//! batches, with a doorbell so that a sleeping receiver is woken once per
//! batch, not once per message.
//!
//! The doorbell (`msgtrans_sync::doorbell`, model-checked with loom) is
//! armed by the receiver just before it sleeps; the first sender that finds
//! it armed disarms it and wakes the receiver, so a burst of N messages
//! costs one wake-up, not N. Shards receive their commands this way, and
//! the cluster layer the shards' messages for other nodes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use msgtrans_sync::doorbell::Doorbell;

/// The sending side of one shard's inbox. Cloneable, usable from any thread.
#[derive(Debug)]
pub struct Outbox<T> {
    /// Always `Some` until drop, which must let go of the sender before it
    /// rings, so the woken inbox sees the disconnection.
    tx: Option<Sender<T>>,
    bell: Arc<Doorbell>,
}

impl<T> Clone for Outbox<T> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            bell: Arc::clone(&self.bell),
        }
    }
}

impl<T> Drop for Outbox<T> {
    fn drop(&mut self) {
        drop(self.tx.take());
        // The last outbox gone ends the inbox: wake it so it notices.
        self.bell.ring();
    }
}

impl<T> Outbox<T> {
    fn tx(&self) -> &Sender<T> {
        self.tx.as_ref().expect("sender lives until drop")
    }
    /// Queues one message and rings. Fails only if the shard has stopped.
    pub fn send(&self, msg: T) -> Result<(), T> {
        self.tx().send(msg).map_err(|e| e.0)?;
        self.bell.ring();
        Ok(())
    }
    /// Queues many messages with a single ring.
    pub fn send_batch(&self, msgs: impl IntoIterator<Item = T>) -> Result<(), T> {
        for m in msgs {
            self.tx().send(m).map_err(|e| e.0)?;
        }
        self.bell.ring();
        Ok(())
    }
    /// The doorbell, for its counters.
    pub fn doorbell(&self) -> &Doorbell {
        &self.bell
    }
}

/// The receiving side, owned by the shard.
#[derive(Debug)]
pub struct Inbox<T> {
    rx: Receiver<T>,
    bell: Arc<Doorbell>,
}

/// A new inbox and its outbox. The inbox is unbounded in slots but every
/// producer is itself bounded (per-session outbound limits, request limits).
pub fn inbox<T>() -> (Outbox<T>, Inbox<T>) {
    let (tx, rx) = crossbeam_channel::unbounded();
    let bell = Arc::new(Doorbell::default());
    (
        Outbox {
            tx: Some(tx),
            bell: Arc::clone(&bell),
        },
        Inbox { rx, bell },
    )
}

impl<T> Inbox<T> {
    /// Waits until at least one message is queued, then moves up to `max`
    /// of them into `batch`. Resolves to `false` once every outbox is gone.
    pub fn recv_batch<'a>(&'a self, batch: &'a mut Vec<T>, max: usize) -> RecvBatch<'a, T> {
        RecvBatch {
            inbox: self,
            batch,
            max,
        }
    }

    fn drain(&self, batch: &mut Vec<T>, max: usize) -> Result<usize, TryRecvError> {
        let mut n = 0;
        while n < max {
            match self.rx.try_recv() {
                Ok(m) => {
                    batch.push(m);
                    n += 1;
                }
                Err(e) if n == 0 => return Err(e),
                Err(_) => break,
            }
        }
        Ok(n)
    }
}

/// Future returned by [`Inbox::recv_batch`].
pub struct RecvBatch<'a, T> {
    inbox: &'a Inbox<T>,
    batch: &'a mut Vec<T>,
    max: usize,
}

impl<T> Future for RecvBatch<'_, T> {
    type Output = bool;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<bool> {
        let this = self.get_mut();
        match this.inbox.drain(this.batch, this.max) {
            Ok(_) => return Poll::Ready(true),
            Err(TryRecvError::Disconnected) => return Poll::Ready(false),
            Err(TryRecvError::Empty) => {}
        }
        this.inbox.bell.arm(cx.waker());
        // A sender may have queued between the drain and the arming; it saw
        // the bell disarmed and did not ring, so look once more.
        match this.inbox.drain(this.batch, this.max) {
            Ok(_) => {
                this.inbox.bell.disarm();
                Poll::Ready(true)
            }
            Err(TryRecvError::Disconnected) => Poll::Ready(false),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::task::Wake;

    struct Count(AtomicU64);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_burst_costs_one_wakeup() {
        let (out, inbox) = inbox::<u32>();
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        {
            let mut fut = inbox.recv_batch(&mut batch, 64);
            assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        }
        for i in 0..100 {
            out.send(i).unwrap();
        }
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        let mut fut = inbox.recv_batch(&mut batch, 64);
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(true));
        assert_eq!(batch.len(), 64);
    }

    #[test]
    fn a_sleeping_inbox_wakes_and_ends_when_the_last_sender_goes() {
        let (out, inbox) = inbox::<u32>();
        let count = Arc::new(Count(AtomicU64::new(0)));
        let waker = std::task::Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        let mut batch = Vec::new();
        let mut fut = inbox.recv_batch(&mut batch, 8);
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        drop(out);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken by the drop");
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(false));
    }

    #[test]
    fn ends_when_all_senders_are_gone() {
        let (out, inbox) = inbox::<u32>();
        drop(out);
        let mut batch = Vec::new();
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut fut = inbox.recv_batch(&mut batch, 8);
        assert_eq!(Pin::new(&mut fut).poll(&mut cx), Poll::Ready(false));
    }
}
