//! Reconnecting: MsgTrans 1.0's `RetryConfig` (jittered exponential
//! backoff), used by `connect()` and, with `auto_reconnect(true)`, by a
//! supervisor that reopens a connection the moment it drops.
//!
//! The supervisor is one thread per client, asleep until a connection
//! closes (the shard wakes it; nothing polls). It lives outside the shards
//! so a slow connect or a backoff never delays the shard's sessions, and
//! outside the application's executor so reconnecting needs no runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use flume::r#async::RecvFut;
use msgtrans_shards::CloseReason;

use super::client::Shared;
use crate::error::TransportError;
use crate::SessionId;

/// Default retries after a failed connect: 3, MsgTrans 1.0's.
pub const DEFAULT_MAX_RETRIES: usize = 3;
/// Default delay before the first retry: 100 ms, MsgTrans 1.0's; short
/// enough that a server restart is hardly noticed.
pub const DEFAULT_INITIAL_DELAY: Duration = Duration::from_millis(100);
/// Default longest delay between retries: 10 s, MsgTrans 1.0's; a server
/// that is down for long is still tried every few seconds.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);
/// Default growth of the delay per retry: doubling, MsgTrans 1.0's.
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;

/// How often and how patiently a client retries a connection (MsgTrans
/// 1.0's `RetryConfig`, same fields). Retry `n` (from 1) waits
/// `initial_delay * backoff_multiplier^(n-1)`, capped at `max_delay`, then
/// jittered down by up to half so that clients that lost the same server
/// do not all come back at the same instant.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// Retries after the first failed attempt of `connect()`; attempts
    /// after a drop, for `auto_reconnect`. 0: no retry.
    pub max_retries: usize,
    /// Delay before the first retry.
    pub initial_delay: Duration,
    /// Longest delay between two retries.
    pub max_delay: Duration,
    /// Growth of the delay per retry (values below 1 are taken as 1).
    pub backoff_multiplier: f64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_retries: DEFAULT_MAX_RETRIES,
            initial_delay: DEFAULT_INITIAL_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
        }
    }
}

impl RetryConfig {
    /// `max_retries` retries starting at `initial_delay`, doubling up to
    /// 30 s (MsgTrans 1.0's constructor).
    pub fn exponential_backoff(max_retries: usize, initial_delay: Duration) -> Self {
        Self {
            max_retries,
            initial_delay,
            max_delay: Duration::from_secs(30),
            backoff_multiplier: 2.0,
        }
    }

    /// No retries: a failed connect fails at once, a drop is not repaired.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The delay before retry `attempt` (from 1), with `unit` in `[0, 1)`
    /// choosing where in the jitter band it falls.
    pub fn delay(&self, attempt: usize, unit: f64) -> Duration {
        let grow = self
            .backoff_multiplier
            .max(1.0)
            .powi(attempt.saturating_sub(1).min(64) as i32);
        let full = (self.initial_delay.as_secs_f64() * grow).min(self.max_delay.as_secs_f64());
        Duration::from_secs_f64(full * (1.0 - 0.5 * unit.clamp(0.0, 1.0)))
    }
}

/// A number in `[0, 1)` for jitter. `RandomState` is seeded per instance
/// from the OS, which is random enough to spread clients apart.
pub(crate) fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new().build_hasher().finish();
    (h >> 11) as f64 / (1u64 << 53) as f64
}

/// Waits `d` on any executor. The shim has no timer of its own (its
/// futures only touch channels), so a short-lived thread keeps the time;
/// this only runs between connect retries, which are rare.
pub(crate) async fn sleep(d: Duration) {
    let (tx, rx) = flume::bounded::<()>(1);
    let timer = std::thread::Builder::new()
        .name("msgtrans-retry-timer".into())
        .spawn(move || {
            std::thread::sleep(d);
            let _ = tx.send(());
        });
    match timer {
        Ok(_) => {
            let _ = rx.recv_async().await;
        }
        // No thread to spare: waiting here would block the caller's
        // executor, so the retry comes early instead.
        Err(e) => tracing::debug!(error = %e, "no timer thread; retrying at once"),
    }
}

/// What the client tells its supervisor.
pub(crate) enum Ctl {
    /// Slot `slot` is now served by `id`: reopen it when it closes.
    Watch { slot: usize, id: SessionId },
    /// The client is stopping.
    Stop,
}

/// Handle to a client's supervisor thread.
pub(crate) struct Supervisor {
    ctl: flume::Sender<Ctl>,
    exited: flume::Receiver<()>,
}

impl Supervisor {
    /// Starts the supervisor thread.
    pub fn start(shared: Arc<Shared>) -> std::io::Result<Self> {
        let (ctl, ctl_rx) = flume::unbounded();
        let (exit_tx, exited) = flume::bounded::<()>(0);
        std::thread::Builder::new()
            .name("msgtrans-reconnect".into())
            .spawn(move || {
                run(&shared, &ctl_rx);
                drop(exit_tx);
            })?;
        Ok(Self { ctl, exited })
    }

    /// Watches `id`, which now serves `slot`.
    pub fn watch(&self, slot: usize, id: SessionId) {
        let _ = self.ctl.send(Ctl::Watch { slot, id });
    }

    /// Tells the thread to stop (it stops within one connect timeout).
    pub fn request_stop(&self) {
        let _ = self.ctl.send(Ctl::Stop);
    }

    /// Waits until the thread has ended.
    pub async fn join(&self) {
        let _ = self.exited.recv_async().await;
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.request_stop();
    }
}

type Watches = Vec<(usize, RecvFut<'static, bool>)>;

enum Wake {
    Ctl(Option<Ctl>),
    Closed(usize),
}

/// Waits for an instruction or for a watched session to close.
async fn next(ctl: &flume::Receiver<Ctl>, watches: &mut Watches) -> Wake {
    let mut c = ctl.recv_async();
    std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = Pin::new(&mut c).poll(cx) {
            return Poll::Ready(Wake::Ctl(r.ok()));
        }
        for i in 0..watches.len() {
            if Pin::new(&mut watches[i].1).poll(cx).is_ready() {
                return Poll::Ready(Wake::Closed(watches.swap_remove(i).0));
            }
        }
        Poll::Pending
    })
    .await
}

fn run(shared: &Shared, ctl: &flume::Receiver<Ctl>) {
    let mut watches: Watches = Vec::new();
    loop {
        match futures_lite::future::block_on(next(ctl, &mut watches)) {
            Wake::Ctl(Some(Ctl::Watch { slot, id })) => add_watch(shared, &mut watches, slot, id),
            Wake::Ctl(Some(Ctl::Stop)) | Wake::Ctl(None) => return,
            Wake::Closed(k) => {
                if shared.engine.is_stopped() {
                    return;
                }
                if shared.slots.wanted(k) && reconnect(shared, ctl, &mut watches, k).is_break() {
                    return;
                }
            }
        }
    }
}

fn add_watch(shared: &Shared, watches: &mut Watches, slot: usize, id: SessionId) {
    watches.retain(|(k, _)| *k != slot);
    watches.push((slot, shared.engine.watch_close(id).into_recv_async()));
}

/// Reopens slot `k` with backoff. `Break` when the client is stopping.
fn reconnect(
    shared: &Shared,
    ctl: &flume::Receiver<Ctl>,
    watches: &mut Watches,
    k: usize,
) -> std::ops::ControlFlow<()> {
    use std::ops::ControlFlow::{Break, Continue};
    let retry = &shared.retry;
    let mut last = None;
    for attempt in 1..=retry.max_retries {
        if shared.slots.live(k, &shared.engine).is_some() {
            // `connect()` reopened it already (its watch is on the way).
            return Continue(());
        }
        let deadline = Instant::now() + retry.delay(attempt, jitter());
        loop {
            match ctl.recv_deadline(deadline) {
                Ok(Ctl::Watch { slot, id }) => add_watch(shared, watches, slot, id),
                Ok(Ctl::Stop) | Err(flume::RecvTimeoutError::Disconnected) => return Break(()),
                Err(flume::RecvTimeoutError::Timeout) => break,
            }
        }
        if shared.engine.is_stopped() {
            return Break(());
        }
        // `connect()` is opening this slot (and will hand us its session),
        // or `disconnect()` says the slot is no longer wanted.
        let Ok(claim) = shared.slots.claim(k) else {
            return Continue(());
        };
        if !shared.slots.wanted(k) || shared.slots.live(k, &shared.engine).is_some() {
            return Continue(());
        }
        tracing::debug!(slot = k, attempt, "reconnecting");
        match futures_lite::future::block_on(shared.open(k)) {
            Ok(id) => {
                claim.set(id);
                drop(claim);
                add_watch(shared, watches, k, id);
                if !shared.slots.wanted(k) {
                    // `disconnect()` ran while this connect was under way.
                    let _ = futures_lite::future::block_on(shared.engine.close(id, CloseReason::LocalClose));
                }
                return Continue(());
            }
            Err(e) => last = Some(e),
        }
    }
    tracing::debug!(slot = k, attempts = retry.max_retries, "giving up reconnecting");
    shared.notify(TransportError::ReconnectFailed {
        attempts: retry.max_retries,
        last_error: last.map_or_else(|| "no attempt allowed (max_retries is 0)".into(), |e| e.to_string()),
    });
    Continue(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RetryConfig {
        RetryConfig {
            max_retries: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
            backoff_multiplier: 2.0,
        }
    }

    #[test]
    fn delay_grows_by_the_multiplier_up_to_the_cap() {
        let c = cfg();
        assert_eq!(c.delay(1, 0.0), Duration::from_millis(100));
        assert_eq!(c.delay(2, 0.0), Duration::from_millis(200));
        assert_eq!(c.delay(4, 0.0), Duration::from_millis(800));
        assert_eq!(c.delay(5, 0.0), Duration::from_secs(1));
        assert_eq!(c.delay(usize::MAX, 0.0), Duration::from_secs(1));
    }

    #[test]
    fn jitter_takes_off_at_most_half() {
        let c = cfg();
        assert_eq!(c.delay(2, 0.5), Duration::from_millis(150));
        assert!(c.delay(2, 0.999) > Duration::from_millis(100));
        for _ in 0..1000 {
            let u = jitter();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn jitter_spreads_clients_apart() {
        let draws: std::collections::HashSet<u64> = (0..100).map(|_| jitter().to_bits()).collect();
        assert!(draws.len() > 90, "only {} distinct jitter values in 100", draws.len());
    }

    #[test]
    fn a_multiplier_below_one_never_shrinks_the_delay() {
        let c = RetryConfig {
            backoff_multiplier: 0.1,
            ..cfg()
        };
        assert_eq!(c.delay(5, 0.0), Duration::from_millis(100));
    }
}
