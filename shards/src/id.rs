//! Session ids. The owning node, shard and a slot generation are packed
//! into the id, so routing a message is O(1) with no registry, even across
//! the nodes of a cluster, and an id that outlived its session can never
//! reach the session that reuses the slot.

use std::fmt;

/// Identifies one session for its whole life.
///
/// Layout (MSB to LSB): 8 bits node, 8 bits shard, 24 bits generation,
/// 24 bits slot. Node 0 is a process outside any cluster, so a standalone
/// server's ids are what they were before nodes existed.
/// MsgTrans 1.0's `SessionId(u64)` API (`new`, `as_u64`, `Display`) is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

const SLOT_BITS: u32 = 24;
const GEN_BITS: u32 = 24;
const SHARD_SHIFT: u32 = SLOT_BITS + GEN_BITS;
const NODE_SHIFT: u32 = SHARD_SHIFT + 8;
/// Most shards one engine can run: a session id names its shard in 8 bits.
pub const MAX_SHARDS: usize = 256;
/// Largest slot index a shard can hold (16,777,215).
pub const MAX_SLOTS: u32 = (1 << SLOT_BITS) - 1;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

impl SessionId {
    /// Wraps a raw id (as printed, or as MsgTrans 1.0 code builds them).
    pub fn new(raw: u64) -> Self {
        Self(raw)
    }
    pub(crate) fn from_parts(node: u8, shard: u8, generation: u32, slot: u32) -> Self {
        debug_assert!(slot <= MAX_SLOTS && generation <= GEN_MASK);
        Self(
            ((node as u64) << NODE_SHIFT)
                | ((shard as u64) << SHARD_SHIFT)
                | ((generation as u64) << SLOT_BITS)
                | slot as u64,
        )
    }
    /// The raw value.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
    /// The shard that owns this session (on its node).
    pub fn shard(&self) -> usize {
        ((self.0 >> SHARD_SHIFT) & 0xFF) as usize
    }
    /// The cluster node that owns this session: 1-255 in a cluster, 0 for a
    /// process outside one.
    pub fn node(&self) -> u8 {
        (self.0 >> NODE_SHIFT) as u8
    }
    pub(crate) fn generation(&self) -> u32 {
        ((self.0 >> SLOT_BITS) as u32) & GEN_MASK
    }
    pub(crate) fn slot(&self) -> u32 {
        (self.0 as u32) & MAX_SLOTS
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

impl From<u64> for SessionId {
    fn from(raw: u64) -> Self {
        Self(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_round_trip() {
        let id = SessionId::from_parts(0, 3, GEN_MASK, MAX_SLOTS);
        assert_eq!(
            (id.node(), id.shard(), id.generation(), id.slot()),
            (0, 3, GEN_MASK, MAX_SLOTS)
        );
        let id = SessionId::from_parts(255, 255, 1, 0);
        assert_eq!((id.node(), id.shard(), id.generation(), id.slot()), (255, 255, 1, 0));
        let id = SessionId::from_parts(7, 0, 0, 0);
        assert_eq!((id.node(), id.shard()), (7, 0));
        // A standalone server's ids are unchanged by the node field.
        assert_eq!(SessionId::from_parts(0, 2, 5, 9).as_u64(), (2 << 48) | (5 << 24) | 9);
    }
}
