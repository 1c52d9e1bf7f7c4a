//! The client's connection slots: `connection_pool(n)` connections, slot `k`
//! opened from the client's shard `k % shards`, taken in turn by sends and
//! requests.
//!
//! Picking a connection reads one atomic per slot: no lock on the send
//! path. A slot is opened by one party at a time (`connect()` or the
//! reconnect supervisor); the other waits for it, so a slot never ends up
//! with two sessions.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use msgtrans_shards::Engine;

use crate::error::{Result, TransportError};
use crate::SessionId;

/// Default number of connections a client opens: one, as in MsgTrans 1.0.
/// More only pay off when the client runs several shards or the server
/// spreads work per connection.
pub const DEFAULT_POOL_SIZE: usize = 1;

/// Marks a slot with no session.
const EMPTY: u64 = u64::MAX;

#[derive(Default)]
struct SlotState {
    /// The application wants this slot connected (set by `connect()`,
    /// cleared by `disconnect()`); only then does the supervisor reconnect it.
    wanted: bool,
    /// Someone is opening the slot; it completes (disconnects) when done.
    busy: Option<flume::Receiver<()>>,
}

struct Slot {
    id: AtomicU64,
    state: Mutex<SlotState>,
}

/// Every connection slot of one client.
pub(crate) struct Slots {
    slots: Vec<Slot>,
    next: AtomicUsize,
}

/// The right to open one slot, held by whoever is opening it. Dropping it
/// wakes anyone waiting for the slot.
pub(crate) struct Claim<'a> {
    slot: &'a Slot,
    _done: flume::Sender<()>,
}

impl Claim<'_> {
    /// Records the session now serving the slot.
    pub fn set(&self, id: SessionId) {
        self.slot.id.store(id.as_u64(), Ordering::Release);
    }
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        lock(&self.slot.state).busy = None;
    }
}

fn lock(m: &Mutex<SlotState>) -> std::sync::MutexGuard<'_, SlotState> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Slots {
    pub fn new(n: usize) -> Self {
        Self {
            slots: (0..n.max(1))
                .map(|_| Slot {
                    id: AtomicU64::new(EMPTY),
                    state: Mutex::new(SlotState::default()),
                })
                .collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// The session of slot `k`, if it is open now.
    pub fn live(&self, k: usize, engine: &Engine) -> Option<SessionId> {
        let raw = self.slots[k].id.load(Ordering::Acquire);
        (raw != EMPTY)
            .then(|| SessionId::new(raw))
            .filter(|id| engine.is_live(*id))
    }

    /// Every open session, in slot order.
    pub fn all_live(&self, engine: &Engine) -> Vec<SessionId> {
        (0..self.len()).filter_map(|k| self.live(k, engine)).collect()
    }

    /// The next open connection in turn; slots that are down are skipped.
    /// `NotConnected` when none is open, so a caller is never left waiting.
    pub fn pick(&self, engine: &Engine) -> Result<SessionId> {
        let n = self.len();
        let start = if n == 1 {
            0
        } else {
            self.next.fetch_add(1, Ordering::Relaxed)
        };
        (0..n)
            .find_map(|i| self.live((start + i) % n, engine))
            .ok_or(TransportError::NotConnected)
    }

    /// Whether the application wants slot `k` connected.
    pub fn wanted(&self, k: usize) -> bool {
        lock(&self.slots[k].state).wanted
    }

    /// Marks every slot wanted (or not).
    pub fn set_wanted(&self, wanted: bool) {
        for s in &self.slots {
            lock(&s.state).wanted = wanted;
        }
    }

    /// Returns once `id` is in a slot, or no slot is being opened (then `id`
    /// is not ours to wait for). The event stream calls this before it
    /// reports `Connected`, so a client is usable by the time it says so.
    pub async fn settle(&self, id: SessionId) {
        loop {
            if self.slots.iter().any(|s| s.id.load(Ordering::Acquire) == id.as_u64()) {
                return;
            }
            let mut busy: Vec<_> = self
                .slots
                .iter()
                .filter_map(|s| lock(&s.state).busy.clone())
                .map(|rx| rx.into_recv_async())
                .collect();
            if busy.is_empty() {
                return;
            }
            // Whichever opening finishes first; then look again.
            std::future::poll_fn(|cx| {
                for f in busy.iter_mut() {
                    if std::pin::Pin::new(f).poll(cx).is_ready() {
                        return std::task::Poll::Ready(());
                    }
                }
                std::task::Poll::Pending
            })
            .await;
        }
    }

    /// Claims slot `k` for opening, or returns what to wait on while
    /// someone else opens it.
    pub fn claim(&self, k: usize) -> std::result::Result<Claim<'_>, flume::Receiver<()>> {
        let slot = &self.slots[k];
        let mut st = lock(&slot.state);
        if let Some(busy) = &st.busy {
            return Err(busy.clone());
        }
        let (done, rx) = flume::bounded(0);
        st.busy = Some(rx);
        Ok(Claim { slot, _done: done })
    }
}
