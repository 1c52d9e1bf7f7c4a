//! The engine's side of a cluster: where messages for sessions on other
//! nodes go, and what the shards know of those nodes.
//!
//! This layer knows no broker. Messages for another node leave through one
//! more inbox of the kind the shards use among themselves (batched, one
//! wake-up per batch); the cluster layer above drains it on its own thread
//! and owns every link. Before a message is queued, its bytes are reserved
//! in its node's send window here, so a node that stops reading bounds what
//! this process holds for it, and the sender learns at once (a typed error)
//! when a node is known to be down or the broker out of reach.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use crate::channel::{inbox, Inbox, Outbox};
use crate::error::SendError;
use crate::event::ReplyTx;
use crate::id::SessionId;
use crate::packet::Packet;

/// Bytes counted per message on top of its packet's wire length: the
/// cluster record's own header (kind, target, ids). An estimate on the
/// generous side, so the window bounds memory, not an exact figure.
pub const RECORD_OVERHEAD: usize = 32;

/// How many bytes a message for another node holds in that node's window.
pub fn cost(packet: &Packet) -> usize {
    packet.wire_len() + RECORD_OVERHEAD
}

/// Where the outcome of a broadcast to other nodes goes: the sessions it
/// reached there, or why a node did not confirm.
pub type BroadcastReply = flume::Sender<Result<usize, SendError>>;

/// A message for another node, or a report this node owes one.
#[derive(Debug)]
pub enum Outbound {
    /// Queue `packet` for `target`. A failure comes back as a report.
    Send {
        /// The session, on another node.
        target: SessionId,
        /// The packet.
        packet: Packet,
        /// Bytes reserved in the node's window.
        reserved: usize,
    },
    /// Send a request to `target` and complete `reply` with its response.
    Request {
        /// The session, on another node.
        target: SessionId,
        /// The request.
        packet: Packet,
        /// How long the caller waits.
        timeout: Duration,
        /// The caller.
        reply: ReplyTx,
        /// Bytes reserved in the node's window.
        reserved: usize,
    },
    /// Queue `packet` for every session of every other node except
    /// `except`. With a `reply`, it learns the count or the first node that
    /// did not confirm; without, a node that does not confirm is reported
    /// as an event.
    Broadcast {
        /// The packet.
        packet: Packet,
        /// A session left out (the sender's own, for a relay).
        except: Option<SessionId>,
        /// The caller, if it waits.
        reply: Option<BroadcastReply>,
    },
    /// A packet that node `node` sent could not be queued here: tell it.
    Undelivered {
        /// The node the packet came from.
        node: u8,
        /// The session it was for, on this node.
        target: SessionId,
        /// The packet.
        packet: Packet,
        /// Why.
        error: SendError,
    },
}

/// What the shards know of one other node.
#[derive(Debug, Default)]
struct Gate {
    /// Bytes of messages for this node not yet acknowledged by it.
    reserved: AtomicUsize,
    /// A [`NodeState`].
    state: AtomicU8,
}

/// Whether another node can be sent to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    /// Not heard from yet: messages wait in its window until it is (or
    /// until the node timeout reports them).
    Unknown = 0,
    /// Heard from within the node timeout.
    Up = 1,
    /// Silent past the node timeout, or restarted: sends fail at once.
    Down = 2,
}

/// The shards' way out to other nodes. Shared by every shard and the API.
#[derive(Debug)]
pub struct Uplink {
    out: Outbox<Outbound>,
    gates: Box<[Gate]>,
    window: usize,
    /// False while the broker cannot be reached: sends fail at once.
    reachable: AtomicBool,
}

impl Uplink {
    /// A new uplink whose nodes may each hold `window` bytes unacknowledged,
    /// and the inbox the cluster layer drains.
    pub fn new(window: usize) -> (Self, Inbox<Outbound>) {
        let (out, rx) = inbox();
        let gates = (0..=u8::MAX as usize).map(|_| Gate::default()).collect();
        (
            Self {
                out,
                gates,
                window,
                reachable: AtomicBool::new(true),
            },
            rx,
        )
    }

    /// Reserves room for `cost` bytes to `target`'s node, or says at once
    /// why there is none.
    pub fn reserve(&self, target: SessionId, cost: usize) -> Result<(), SendError> {
        if !self.reachable.load(Ordering::Acquire) {
            return Err(SendError::ClusterUnreachable);
        }
        let gate = &self.gates[target.node() as usize];
        if gate.state.load(Ordering::Acquire) == NodeState::Down as u8 {
            return Err(SendError::NodeDown(target.node()));
        }
        let before = gate.reserved.fetch_add(cost, Ordering::AcqRel);
        // A message larger than the whole window still goes when the window
        // is empty, or it could never go at all.
        if before > 0 && before + cost > self.window {
            gate.reserved.fetch_sub(cost, Ordering::AcqRel);
            return Err(SendError::Backpressure(target));
        }
        Ok(())
    }

    /// Gives back bytes reserved for `node` (acknowledged, or reported).
    pub fn release(&self, node: u8, cost: usize) {
        self.gates[node as usize].reserved.fetch_sub(cost, Ordering::AcqRel);
    }

    /// Bytes held for `node` now.
    pub fn reserved(&self, node: u8) -> usize {
        self.gates[node as usize].reserved.load(Ordering::Acquire)
    }

    /// Records what the cluster layer learnt of `node`.
    pub fn set_state(&self, node: u8, state: NodeState) {
        self.gates[node as usize].state.store(state as u8, Ordering::Release);
    }

    /// What the shards believe of `node`.
    pub fn state(&self, node: u8) -> NodeState {
        match self.gates[node as usize].state.load(Ordering::Acquire) {
            1 => NodeState::Up,
            2 => NodeState::Down,
            _ => NodeState::Unknown,
        }
    }

    /// Records whether the broker can be reached.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::Release);
    }

    /// Hands one message to the cluster layer.
    pub fn submit(&self, msg: Outbound) -> Result<(), SendError> {
        self.out.send(msg).map_err(|_| SendError::Stopped)
    }

    /// Hands a batch to the cluster layer with one wake-up.
    pub fn submit_batch(&self, msgs: impl IntoIterator<Item = Outbound>) -> Result<(), SendError> {
        self.out.send_batch(msgs).map_err(|_| SendError::Stopped)
    }

    /// Reserves and queues a send to `target`, on another node.
    pub fn send(&self, target: SessionId, packet: Packet) -> Result<(), SendError> {
        let reserved = cost(&packet);
        self.reserve(target, reserved)?;
        self.submit(Outbound::Send {
            target,
            packet,
            reserved,
        })
        .inspect_err(|_| self.release(target.node(), reserved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(node: u8) -> SessionId {
        SessionId::new((node as u64) << 56)
    }

    #[test]
    fn a_window_bounds_what_one_node_holds_and_no_other() {
        let (up, _rx) = Uplink::new(1000);
        assert_eq!(up.reserve(id(2), 600), Ok(()));
        assert_eq!(up.reserve(id(2), 600), Err(SendError::Backpressure(id(2))));
        assert_eq!(up.reserve(id(3), 600), Ok(()), "another node has its own window");
        up.release(2, 600);
        assert_eq!(up.reserved(2), 0);
        // Larger than the window, into an empty window: it must go.
        assert_eq!(up.reserve(id(2), 5000), Ok(()));
    }

    #[test]
    fn a_down_node_or_an_unreachable_broker_fails_at_once() {
        let (up, _rx) = Uplink::new(1000);
        up.set_state(4, NodeState::Down);
        assert_eq!(up.reserve(id(4), 10), Err(SendError::NodeDown(4)));
        assert_eq!(up.reserved(4), 0);
        up.set_state(4, NodeState::Up);
        up.set_reachable(false);
        assert_eq!(up.reserve(id(4), 10), Err(SendError::ClusterUnreachable));
    }
}
