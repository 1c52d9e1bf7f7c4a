//! Reconnecting: with `auto_reconnect(true)`, a supervisor reopens a
//! connection the moment it drops, backing off as the client's
//! `RetryConfig` says (`super::retry`).
//!
//! The supervisor is one thread per client, asleep until a connection
//! closes (the shard wakes it; nothing polls). It lives outside the shards
//! so a slow connect or a backoff never delays the shard's sessions, and
//! outside the application's executor so reconnecting needs no runtime.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Instant;

use flume::r#async::RecvFut;
use msgtrans_shards::CloseReason;

use super::retry::jitter;
use super::shared::Shared;
use crate::error::TransportError;
use crate::SessionId;

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
