//! The shard's sweepers: sessions idle or stuck past their timeout, and
//! requests and waiting sends past their deadline.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::error::{CloseReason, SendError};

/// How often pending requests are checked for their deadline while any are
/// pending. Timeouts fire at most this late.
const REQUEST_SWEEP: Duration = Duration::from_millis(20);

impl Shard {
    /// Closes sessions that moved no bytes for the idle timeout. The clock
    /// ticks four times per timeout, so a silent session is closed between
    /// 1× and 1.25× the timeout after its last byte.
    pub(super) async fn sweep_idle(self: Rc<Self>) {
        const TICKS: u64 = 4;
        let timeouts = [self.cfg.idle_timeout, self.cfg.write_timeout];
        let Some(shortest) = timeouts.iter().flatten().min().copied() else {
            return;
        };
        // Four ticks per (shortest) timeout: a session is closed between 1x
        // and 1.25x its timeout after it went quiet or stuck.
        let period = (shortest / TICKS as u32).max(Duration::from_millis(5));
        let idle_ticks = self
            .cfg
            .idle_timeout
            .map(|t| (t.as_nanos() / period.as_nanos()).max(1) as u64);
        loop {
            glommio::timer::sleep(period).await;
            let now = self.idle_tick.get() + 1;
            self.idle_tick.set(now);
            let wall = Instant::now();
            for s in self.slab.borrow().iter() {
                if idle_ticks.is_some_and(|t| now.saturating_sub(s.last_active.get()) > t) {
                    s.request_close(CloseReason::IdleTimeout);
                } else if let (Some(limit), Some(since)) = (self.cfg.write_timeout, s.stuck_since.get()) {
                    if wall.duration_since(since) >= limit {
                        s.request_close(CloseReason::SlowConsumer);
                    }
                }
            }
        }
    }

    /// Fails requests past their deadline. Runs only while some are pending.
    pub(super) async fn sweep_requests(self: Rc<Self>) {
        loop {
            if self.pending_requests.get() + self.waiting_sends.get() == 0 {
                let shard = Rc::clone(&self);
                std::future::poll_fn(|cx| {
                    if shard.pending_requests.get() + shard.waiting_sends.get() > 0 {
                        std::task::Poll::Ready(())
                    } else {
                        shard.park_sweeper(cx.waker().clone());
                        std::task::Poll::Pending
                    }
                })
                .await;
            }
            glommio::timer::sleep(REQUEST_SWEEP).await;
            let now = Instant::now();
            let mut left = 0;
            // Only sessions listed with something pending: walking every
            // session each 20 ms made a client with one request in flight
            // pay for all its idle connections (opening 100,000 QUIC
            // connections slowed from 1,200 to 730 a second).
            let listed = std::mem::take(&mut *self.ctx.deadlines.borrow_mut());
            let mut still = Vec::with_capacity(listed.len());
            for id in listed {
                // Gone: its requests and waiters were failed as it closed.
                let Some(s) = self.session(id) else { continue };
                let waiting = s.expire_waiters(&self.ctx, now);
                let mut pending = s.pending.borrow_mut();
                pending.retain(|_, p| {
                    if p.deadline <= now {
                        let _ = p.reply.send(Err(SendError::Timeout));
                        self.stats.request_timeouts.add(1);
                        self.stats.requests_in_flight.add(-1);
                        false
                    } else {
                        true
                    }
                });
                left += pending.len();
                if pending.is_empty() && waiting == 0 {
                    s.in_deadlines.set(false);
                } else {
                    still.push(id);
                }
            }
            // A handler told of an expired send may have sent or asked
            // again meanwhile, listing sessions anew: count theirs too.
            let mut listed = self.ctx.deadlines.borrow_mut();
            for id in listed.iter() {
                left += self.session(*id).map_or(0, |s| s.pending.borrow().len());
            }
            listed.extend(still);
            self.pending_requests.set(left);
        }
    }
}
