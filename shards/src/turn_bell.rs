//! Wakes the application once per shard turn, not once per event.
//!
//! Every event a shard hands the application used to wake it straight
//! away (`flume` wakes a parked receiver on each send). With the
//! application's Tokio thread on the shard's core, each wake-up preempted
//! the shard in the middle of its batch: about every 12 messages at 64 B
//! (docs/perf-notes.md). Now the shard only marks that events are due; a
//! small task rings the application's [`WaitList`] when it runs, which is
//! after the sessions already queued this turn have run. The application
//! wakes once and takes the whole turn's events.

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Poll, Waker};

use msgtrans_sync::waitlist::WaitList;

pub(crate) struct TurnBell {
    bell: Arc<WaitList>,
    due: Cell<bool>,
    task: RefCell<Option<Waker>>,
}

impl TurnBell {
    pub fn new(bell: Arc<WaitList>) -> Rc<Self> {
        Rc::new(Self {
            bell,
            due: Cell::new(false),
            task: RefCell::new(None),
        })
    }

    /// An event is in the application's queue: ring once this turn's
    /// queued tasks have run.
    #[inline]
    pub fn later(&self) {
        if !self.due.replace(true) {
            if let Some(w) = self.task.borrow_mut().take() {
                w.wake();
            }
        }
    }

    /// The task that rings: spawned once per shard.
    pub async fn run(self: Rc<Self>) {
        loop {
            poll_fn(|cx| {
                if self.due.get() {
                    Poll::Ready(())
                } else {
                    *self.task.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                }
            })
            .await;
            self.due.set(false);
            self.bell.ring();
        }
    }
}

impl Drop for TurnBell {
    /// Events pushed in the shard's last moments still wake the application.
    fn drop(&mut self) {
        self.bell.ring();
    }
}
