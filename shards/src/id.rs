//! Session ids. The owning shard and a slot generation are packed into the
//! id, so routing a message is O(1) and an id that outlived its session can
//! never reach the session that reuses the slot.

use std::fmt;

/// Identifies one session for its whole life.
///
/// Layout (MSB to LSB): 16 bits shard, 24 bits generation, 24 bits slot.
/// MsgTrans 1.0's `SessionId(u64)` API (`new`, `as_u64`, `Display`) is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(u64);

const SLOT_BITS: u32 = 24;
const GEN_BITS: u32 = 24;
/// Largest slot index a shard can hold (16,777,215).
pub const MAX_SLOTS: u32 = (1 << SLOT_BITS) - 1;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

impl SessionId {
    /// Wraps a raw id (as printed, or as MsgTrans 1.0 code builds them).
    pub fn new(raw: u64) -> Self {
        Self(raw)
    }
    pub(crate) fn from_parts(shard: u16, generation: u32, slot: u32) -> Self {
        debug_assert!(slot <= MAX_SLOTS && generation <= GEN_MASK);
        Self(((shard as u64) << (SLOT_BITS + GEN_BITS)) | ((generation as u64) << SLOT_BITS) | slot as u64)
    }
    /// The raw value.
    pub fn as_u64(&self) -> u64 {
        self.0
    }
    /// The shard that owns this session.
    pub fn shard(&self) -> usize {
        (self.0 >> (SLOT_BITS + GEN_BITS)) as usize
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
        let id = SessionId::from_parts(3, GEN_MASK, MAX_SLOTS);
        assert_eq!((id.shard(), id.generation(), id.slot()), (3, GEN_MASK, MAX_SLOTS));
        let id = SessionId::from_parts(u16::MAX, 1, 0);
        assert_eq!((id.shard(), id.generation(), id.slot()), (65535, 1, 0));
    }
}
