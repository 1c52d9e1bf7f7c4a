//! The cross-shard mesh: one inbox per shard (a batched channel with a
//! doorbell, `channel.rs`), and what every shard of an engine shares.

use std::sync::Arc;

pub use crate::channel::{inbox, Inbox, Outbox, RecvBatch};
use crate::event::Command;
use crate::peers::PeerTable;
use crate::pool::slab::SlotTable;
pub use msgtrans_sync::doorbell::Doorbell;

/// What every shard of an engine shares: an inbox per shard, the slot
/// tables other threads read (liveness, queued bytes), and the count of
/// open connections the total limit is checked against.
pub(crate) struct Mesh {
    pub outboxes: Vec<Outbox<Command>>,
    pub tables: Vec<Arc<SlotTable>>,
    pub open_total: std::sync::atomic::AtomicUsize,
    /// Connections and connect rates per peer address.
    pub peers: PeerTable,
    /// A key every shard of the engine shares and no one else knows, for
    /// values that must look random from outside yet mean something to
    /// each shard (which shard a QUIC connection ID belongs to).
    #[cfg_attr(not(feature = "quic"), allow(dead_code))]
    pub secret: std::collections::hash_map::RandomState,
    /// This process's cluster node (0 outside a cluster).
    pub node: u8,
    /// The way to other nodes, once a cluster layer attaches one.
    pub uplink: std::sync::OnceLock<crate::uplink::Uplink>,
}

impl Mesh {
    /// Whether `id` names a session of this process (any shard).
    #[inline]
    pub fn is_local(&self, id: crate::id::SessionId) -> bool {
        id.node() == self.node
    }
    /// Whether `id` is open now: a session of this process, live in its
    /// shard's table.
    #[inline]
    pub fn is_live(&self, id: crate::id::SessionId) -> bool {
        self.is_local(id) && self.tables.get(id.shard()).is_some_and(|t| t.is_live(id))
    }
}
