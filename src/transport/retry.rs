//! Retrying a connection: MsgTrans 1.0's `RetryConfig` (jittered
//! exponential backoff), and the executor-free sleep between attempts.
//! Used by `connect()` and by the reconnect supervisor.

use std::time::Duration;

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
