//! What a session needs of its shard: the configuration, the buffer pool,
//! the counters, the way to the application (events, the turn bell, the
//! lifecycle pump) and to other shards (the mesh), and the deadline
//! sweeper's wake-up. It knows no protocol and no other session: sending
//! to a session of this shard goes back up through [`Route`], which the
//! shard implements.

use std::cell::{Cell, OnceCell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::codec::FrameRef;
use crate::config::EngineConfig;
use crate::error::SendError;
use crate::event::{Command, EngineEvent, EventSink};
use crate::id::SessionId;
use crate::mesh::Mesh;
use crate::packet::Packet;
use crate::pool::buffer::{BufferPool, MEDIUM};
use crate::pool::hot::HotBuffers;
use crate::pump::EventPump;
use crate::stats::ShardStats;
use crate::turn_bell::TurnBell;
use crate::uplink::{self, Outbound};

/// A payload (or extension header) up to this size is copied out for
/// delivery into a plain allocation, not a pooled buffer: for a small
/// payload the pool's round trip (two queue operations, counters, the
/// shared owner's own allocation and its atomic release) cost ~80 ns at
/// 64 B, malloc and free ~30, which glibc serves from a per-thread cache
/// at these sizes. A payload the application drops on its own thread is
/// freed into that thread's cache; past the cache's few entries per size,
/// glibc takes the shard arena's lock, which a busy application thread
/// could contend with the shard (not seen with one application thread).
const PLAIN_COPY: usize = 1024;

/// Sending to a session of this shard: the shard's table of sessions is
/// above this layer, so the shard lends this handle.
pub(crate) trait Route {
    /// Queues `packet` for `target`, a session of this shard.
    fn send_local(&self, target: SessionId, packet: Packet) -> Result<(), SendError>;
}

/// The shard's services, as its sessions use them. Owned by the shard,
/// shared with every driver of it.
pub(crate) struct SessionCtx {
    pub index: usize,
    pub cfg: Arc<EngineConfig>,
    /// The shard's buffer pool, behind its hot stack.
    pub buffers: HotBuffers,
    pub mesh: Arc<Mesh>,
    /// Commands for other shards gathered during a batch.
    outgoing: RefCell<Vec<Vec<Command>>>,
    /// Messages for other cluster nodes gathered during a batch.
    outgoing_remote: RefCell<Vec<Outbound>>,
    pub sink: EventSink,
    pub stats: Arc<ShardStats>,
    /// Sends waiting for room in some session's queue.
    pub waiting_sends: Cell<usize>,
    /// Sessions with requests or waiting sends whose deadlines the sweeper
    /// must check (see `SessionState::watch_deadlines`).
    pub deadlines: RefCell<Vec<crate::id::SessionId>>,
    sweeper: RefCell<Option<std::task::Waker>>,
    /// Lifecycle events waiting for room in the application's queue.
    pub pump: Rc<EventPump>,
    /// Wakes the application after a turn that gave it events.
    pub turn_bell: Rc<TurnBell>,
    /// A coarse clock for idle timeouts: advanced by the idle sweeper.
    pub idle_tick: Cell<u64>,
    /// When the read batch being decoded arrived: read from the clock for
    /// its first event only (see [`SessionCtx::received_at`]).
    received: Cell<Option<Instant>>,
    /// The shard, for sends to its own sessions.
    route: OnceCell<Weak<dyn Route>>,
}

impl SessionCtx {
    pub fn new(
        index: usize,
        cfg: Arc<EngineConfig>,
        pool: Arc<BufferPool>,
        mesh: Arc<Mesh>,
        sink: EventSink,
        stats: Arc<ShardStats>,
    ) -> Self {
        let shards = mesh.outboxes.len();
        let turn_bell = TurnBell::new(Arc::clone(&sink.bell));
        Self {
            index,
            cfg,
            buffers: HotBuffers::new(pool),
            mesh,
            outgoing: RefCell::new((0..shards).map(|_| Vec::new()).collect()),
            outgoing_remote: RefCell::new(Vec::new()),
            stats,
            waiting_sends: Cell::new(0),
            deadlines: RefCell::new(Vec::new()),
            sweeper: RefCell::new(None),
            pump: EventPump::new(sink.tx.clone(), Rc::clone(&turn_bell)),
            turn_bell,
            idle_tick: Cell::new(0),
            received: Cell::new(None),
            route: OnceCell::new(),
            sink,
        }
    }

    /// Lends the handle that reaches this shard's own sessions (once).
    pub fn set_route(&self, route: Weak<dyn Route>) {
        let _ = self.route.set(route);
    }

    /// Makes `out` ready to take `extra` more bytes, taking a pooled buffer
    /// if it has none (idle sessions hold no write buffer).
    #[inline(always)]
    pub fn prepare_out(&self, out: &mut Vec<u8>, extra: usize) {
        let extra = extra + crate::wire::MAX_ENVELOPE;
        if out.capacity() == 0 {
            *out = self.buffers.get(extra.max(MEDIUM));
            out.clear();
        }
        out.reserve(extra);
    }

    /// An owned copy of a frame, for delivery off the fast path (events,
    /// replies). An extension header or payload over [`PLAIN_COPY`] bytes
    /// goes into a pooled buffer that returns to this shard when dropped;
    /// a smaller one into a plain allocation.
    pub fn to_packet(&self, frame: &FrameRef<'_>) -> Packet {
        let pool = self.buffers.pool();
        let copy = |b: &[u8]| {
            if b.is_empty() {
                Bytes::new()
            } else if b.len() <= PLAIN_COPY {
                Bytes::copy_from_slice(b)
            } else {
                pool.copy_to_bytes(b)
            }
        };
        Packet {
            header: frame.header.clone(),
            ext_header: copy(frame.ext_header),
            payload: copy(frame.payload),
        }
    }

    /// Sends `packet` to `target` from code running on this shard.
    pub fn route_send(&self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        if !self.mesh.is_local(target) {
            return self.route_remote(target, packet);
        }
        let dest = target.shard();
        if dest == self.index {
            return match self.route.get().and_then(Weak::upgrade) {
                Some(route) => route.send_local(target, packet),
                None => Err(SendError::SessionNotFound(target)),
            };
        }
        match self.mesh.tables.get(dest) {
            Some(t) if t.is_live(target) => {
                self.outgoing.borrow_mut()[dest].push(Command::Send {
                    id: target,
                    packet,
                    wait: None,
                    reserved: 0,
                    report: None,
                });
                Ok(())
            }
            _ => Err(SendError::SessionNotFound(target)),
        }
    }

    /// A send to a session of another cluster node: its bytes are reserved
    /// in that node's window now (so a full window or a down node is an
    /// error here), and it leaves with the batch's others.
    #[cold]
    fn route_remote(&self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        let Some(uplink) = self.mesh.uplink.get() else {
            return Err(SendError::SessionNotFound(target));
        };
        let reserved = uplink::cost(&packet);
        uplink.reserve(target, reserved)?;
        self.outgoing_remote.borrow_mut().push(Outbound::Send {
            target,
            packet,
            reserved,
        });
        Ok(())
    }

    /// Queues a broadcast to every session of every shard, and of every
    /// other cluster node, but `except`; it goes with the batch's others.
    pub fn route_broadcast(&self, packet: Packet, except: Option<SessionId>) {
        let mut outgoing = self.outgoing.borrow_mut();
        for cmds in outgoing.iter_mut() {
            cmds.push(Command::Broadcast {
                packet: packet.clone(),
                except,
                reply: None,
            });
        }
        if self.mesh.uplink.get().is_some() {
            self.outgoing_remote.borrow_mut().push(Outbound::Broadcast {
                packet,
                except,
                reply: None,
            });
        }
    }

    /// Queues a command for another shard; it goes with the batch's others.
    // Only QUIC relays commands between shards today (datagrams that
    // reached the wrong shard).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub fn relay(&self, dest: usize, cmd: Command) {
        self.outgoing.borrow_mut()[dest].push(cmd);
    }

    /// A batch is about to be taken from a session's read buffer: its
    /// events get a fresh reception time.
    pub fn new_read_batch(&self) {
        self.received.set(None);
    }

    /// When the current batch was taken from a session's read buffer, as
    /// events report it: normally just after it was read; under
    /// backpressure (a full event queue or outbound queue), when the
    /// session resumed. One clock reading serves every event of the
    /// batch: at 64 B a read brings a dozen packets or more, and a reading
    /// per event cost the application side 26 ns a message (a third of its
    /// share) on this project's VMs.
    pub fn received_at(&self) -> Instant {
        match self.received.get() {
            Some(t) => t,
            None => {
                let t = Instant::now();
                self.received.set(Some(t));
                t
            }
        }
    }

    /// Hands the cross-shard messages gathered during a batch to their
    /// shards: one ring per destination per batch.
    pub fn flush_outgoing(&self) {
        let mut outgoing = self.outgoing.borrow_mut();
        for (dest, cmds) in outgoing.iter_mut().enumerate() {
            if !cmds.is_empty() {
                if let Some(c) = self.stats.cross_shard_out.get(dest) {
                    c.add(cmds.len() as u64);
                }
                let _ = self.mesh.outboxes[dest].send_batch(cmds.drain(..));
            }
        }
        drop(outgoing);
        let mut remote = self.outgoing_remote.borrow_mut();
        if !remote.is_empty() {
            if let Some(uplink) = self.mesh.uplink.get() {
                // Fails only once the cluster layer has stopped, with the
                // engine: nothing is waiting for these any more.
                let _ = uplink.submit_batch(remote.drain(..));
            }
        }
    }

    /// Releases bytes a send from another thread reserved in `id`'s slot.
    pub fn release(&self, id: SessionId, reserved: usize) {
        if reserved > 0 {
            self.mesh.tables[self.index].release(id, reserved);
        }
    }

    /// Wakes the deadline sweeper (requests, waiting sends).
    pub fn wake_sweeper(&self) {
        if let Some(w) = self.sweeper.borrow_mut().take() {
            w.wake();
        }
    }

    /// Parks the deadline sweeper until [`SessionCtx::wake_sweeper`].
    pub fn park_sweeper(&self, waker: std::task::Waker) {
        *self.sweeper.borrow_mut() = Some(waker);
    }

    /// Reports a packet that was accepted but could not be queued.
    pub fn send_failed(&self, id: SessionId, packet: &Packet, error: SendError) {
        let ev = EngineEvent::SendFailed {
            id,
            message_id: packet.header.message_id,
            error,
        };
        self.pump.emit(ev, None);
    }

    pub fn idle_tick(&self) -> u64 {
        self.idle_tick.get()
    }
}
