//! The lifecycle event pump: connection open/close and send-failure events
//! that find the application's queue full wait here, in order, instead of
//! being dropped or blocking the session that produced them.
//!
//! Order is what makes it safe: a session's open event is always ahead of
//! its close event, so the application never hears of a close for a
//! session it was not told about. A session whose open event is still
//! waiting reads nothing, so its messages never overtake it either.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crate::event::EngineEvent;
use crate::stats::ShardStats;
use crate::turn_bell::TurnBell;

/// How often a pump blocked on a full queue checks whether a stop has given
/// up on waiting.
const ABANDON_CHECK: Duration = Duration::from_millis(10);

/// Told once a session's open event is out (or given up at a stop), so
/// the session may start reading. The sessions are above this layer.
pub(crate) trait Announced {
    fn announced(&self);
}

/// An event waiting for room, and the session to tell once it is out.
type Waiting = (EngineEvent, Option<Rc<dyn Announced>>);

pub(crate) struct EventPump {
    tx: flume::Sender<EngineEvent>,
    bell: Rc<TurnBell>,
    queue: RefCell<VecDeque<Waiting>>,
    waker: RefCell<Option<Waker>>,
    in_flight: Cell<bool>,
    /// Set when a stop's grace period has passed: what is still waiting is
    /// counted and given up so the shard can end.
    pub abandon: Cell<bool>,
}

impl EventPump {
    pub fn new(tx: flume::Sender<EngineEvent>, bell: Rc<TurnBell>) -> Rc<Self> {
        Rc::new(Self {
            tx,
            bell,
            queue: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            in_flight: Cell::new(false),
            abandon: Cell::new(false),
        })
    }

    /// Queues `ev` for the application. Returns `true` if it went straight
    /// into the application's queue, `false` if it waits here; then
    /// `announce` (if given) is marked announced and woken once it is out.
    pub fn emit(&self, ev: EngineEvent, announce: Option<Rc<dyn Announced>>) -> bool {
        let mut q = self.queue.borrow_mut();
        if q.is_empty() && !self.in_flight.get() {
            match self.tx.try_send(ev) {
                Ok(()) => {
                    self.bell.later();
                    return true;
                }
                Err(flume::TrySendError::Disconnected(_)) => return true,
                Err(flume::TrySendError::Full(ev)) => q.push_back((ev, announce)),
            }
        } else {
            q.push_back((ev, announce));
        }
        drop(q);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
        false
    }

    /// Whether nothing is waiting.
    pub fn is_idle(&self) -> bool {
        self.queue.borrow().is_empty() && !self.in_flight.get()
    }

    async fn next(&self) -> Waiting {
        std::future::poll_fn(|cx| match self.queue.borrow_mut().pop_front() {
            Some(item) => {
                self.in_flight.set(true);
                Poll::Ready(item)
            }
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }

    /// Moves waiting events into the application's queue as room appears.
    pub async fn run(self: Rc<Self>, shard: usize, stats: std::sync::Arc<ShardStats>) {
        loop {
            let (ev, announce) = self.next().await;
            let delivered = if self.abandon.get() {
                false
            } else {
                let send = async { self.tx.send_async(ev.clone()).await.is_ok() };
                let give_up = async {
                    while !self.abandon.get() {
                        glommio::timer::sleep(ABANDON_CHECK).await;
                    }
                    false
                };
                futures_lite::future::or(send, give_up).await
            };
            if delivered {
                self.bell.later();
            }
            if !delivered && self.abandon.get() {
                stats.events_abandoned.add(1);
                tracing::warn!(shard, event = ?ev, "event queue still full at shutdown; event given up");
            }
            if let Some(st) = announce {
                st.announced();
            }
            self.in_flight.set(false);
        }
    }
}
