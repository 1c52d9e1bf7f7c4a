//! The connection slab: a shard's session slots, reused with a generation
//! counter so that a [`SessionId`] that outlived its session never reaches
//! the session that took its slot.
//!
//! The slab itself belongs to one shard thread and needs no lock. Other
//! threads (the Tokio-side API) only read the shared [`SlotTable`]: one atomic
//! word per slot telling whether an id is live, so `send` to a dead session
//! fails at once without a round trip to the shard.

use std::sync::Arc;

use msgtrans_sync::slots::SlotWords;

use crate::id::{SessionId, GEN_MASK, MAX_SLOTS};

/// The cross-thread view of a shard's slots, by [`SessionId`]: liveness,
/// published queued bytes, and reservations by sends from other threads
/// (the atomics are in `msgtrans_sync::slots`, where loom checks them).
#[derive(Debug)]
pub struct SlotTable {
    words: SlotWords,
}

impl SlotTable {
    /// A table for a shard of `capacity` slots (at most 16,777,215).
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            words: SlotWords::new(capacity.min(MAX_SLOTS as usize)),
        })
    }
    /// Whether `id` names a session that is open now.
    pub fn is_live(&self, id: SessionId) -> bool {
        self.words.is_live(id.slot() as usize, id.generation())
    }
    /// Number of open sessions.
    pub fn live(&self) -> usize {
        self.words.live()
    }
    /// Bytes queued for `id`'s session when its shard last looked (a hint
    /// for admission: the shard itself enforces the limit exactly).
    pub fn queued(&self, id: SessionId) -> usize {
        self.words.queued(id.slot() as usize)
    }
    /// Publishes the bytes queued for `id`'s session (its shard only).
    pub fn set_queued(&self, id: SessionId, bytes: usize) {
        self.words.set_queued(id.slot() as usize, bytes);
    }
    /// Reserves `len` bytes of `id`'s outbound queue for a send from another
    /// thread, if queued and reserved bytes stay within `limit`; the shard
    /// releases them when it takes the packet.
    pub fn try_reserve(&self, id: SessionId, len: usize, limit: usize) -> bool {
        self.words.try_reserve(id.slot() as usize, len, limit)
    }
    /// Releases a reservation made with [`SlotTable::try_reserve`].
    pub fn release(&self, id: SessionId, len: usize) {
        self.words.release(id.slot() as usize, len);
    }
    /// Bytes reserved for `id`'s slot by sends not yet taken by its shard.
    pub fn reserved(&self, id: SessionId) -> usize {
        self.words.reserved(id.slot() as usize)
    }
    /// Slots this shard can hold.
    pub fn capacity(&self) -> usize {
        self.words.capacity()
    }
}

/// Session slots for one shard.
#[derive(Debug)]
pub struct Slab<T> {
    node: u8,
    shard: u8,
    entries: Vec<Option<T>>,
    generations: Vec<u32>,
    free: Vec<u32>,
    table: Arc<SlotTable>,
}

impl<T> Slab<T> {
    /// A slab for `shard` of `node` that holds as many sessions as `table`
    /// has slots.
    pub fn new(node: u8, shard: u8, table: Arc<SlotTable>) -> Self {
        Self {
            node,
            shard,
            entries: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            table,
        }
    }

    /// The cross-thread liveness table.
    pub fn table(&self) -> &Arc<SlotTable> {
        &self.table
    }

    /// Stores `make(id)` in a free slot and returns its id, or `None` when
    /// the shard is full.
    pub fn insert_with(&mut self, make: impl FnOnce(SessionId) -> T) -> Option<SessionId> {
        let slot = match self.free.pop() {
            Some(s) => s,
            None if self.entries.len() < self.table.capacity() => {
                self.entries.push(None);
                self.generations.push(0);
                (self.entries.len() - 1) as u32
            }
            None => return None,
        };
        let generation = self.generations[slot as usize];
        let id = SessionId::from_parts(self.node, self.shard, generation, slot);
        self.entries[slot as usize] = Some(make(id));
        self.table.words.open(slot as usize, generation);
        Some(id)
    }

    fn index(&self, id: SessionId) -> Option<usize> {
        let slot = id.slot() as usize;
        (id.shard() == self.shard as usize
            && id.node() == self.node
            && self.generations.get(slot) == Some(&id.generation())
            && self.entries[slot].is_some())
        .then_some(slot)
    }

    /// The session `id` names, if it is still open.
    pub fn get(&self, id: SessionId) -> Option<&T> {
        self.index(id).and_then(|i| self.entries[i].as_ref())
    }

    /// Removes the session and retires its id for good (until the 24-bit
    /// generation wraps, 16 million reuses of the same slot later).
    pub fn remove(&mut self, id: SessionId) -> Option<T> {
        let i = self.index(id)?;
        let value = self.entries[i].take();
        let next = (self.generations[i] + 1) & GEN_MASK;
        self.generations[i] = next;
        self.table.words.close(i, next);
        self.free.push(i as u32);
        value
    }

    /// Number of open sessions.
    pub fn len(&self) -> usize {
        self.entries.len() - self.free.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every open session.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.entries.iter().filter_map(Option::as_ref)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_id_never_reaches_the_new_session() {
        let mut slab = Slab::new(0, 2, SlotTable::new(4));
        let a = slab.insert_with(|_| "a").unwrap();
        assert_eq!(a.shard(), 2);
        assert!(slab.table().is_live(a));
        assert_eq!(slab.remove(a), Some("a"));
        assert!(!slab.table().is_live(a));
        let b = slab.insert_with(|_| "b").unwrap();
        assert_eq!(a.slot(), b.slot(), "slot is reused");
        assert_ne!(a, b);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.remove(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
    }

    #[test]
    fn full_slab_refuses() {
        let mut slab = Slab::new(0, 0, SlotTable::new(2));
        let ids: Vec<_> = (0..2).map(|i| slab.insert_with(|_| i).unwrap()).collect();
        assert!(slab.insert_with(|_| 9).is_none());
        slab.remove(ids[0]);
        assert!(slab.insert_with(|_| 9).is_some());
        assert_eq!(slab.len(), 2);
        assert_eq!(slab.table().live(), 2);
    }

    #[test]
    fn id_of_another_shard_is_not_found() {
        let mut slab = Slab::new(0, 0, SlotTable::new(2));
        let a = slab.insert_with(|_| ()).unwrap();
        let other = SessionId::from_parts(0, 1, a.generation(), a.slot());
        assert!(slab.get(other).is_none());
    }
}
