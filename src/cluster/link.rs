//! One direction of a link between two nodes, as a byte stream over an
//! at-most-once broker: the sender numbers bytes, keeps them until the
//! receiver acknowledges them and sends them again when it does not; the
//! receiver takes bytes only in order and once. So a message the broker
//! dropped (a reconnect, interest not yet propagated) is sent again, a
//! message it delivered twice is taken once, and records keep their order.
//!
//! This is TCP's idea in miniature, over whole broker messages: many
//! records share one message (the batching), and one record larger than
//! the broker's message limit spans several. A stream has an id, chosen
//! afresh whenever the link resets (a node went down or restarted), so
//! bytes of an old stream are never taken as bytes of a new one.
//!
//! Pure state: the node loop does the I/O and the timing.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};

use super::record::{Record, RecordError};

/// What the sender keeps per record until it is acknowledged.
#[derive(Debug)]
struct Held {
    /// Stream offset just past the record.
    end: u64,
    /// Bytes it holds in the node's send window (0 for records the window
    /// does not count: answers and reports owed to the peer).
    cost: usize,
}

/// The sending half. `buf` holds every record not wholly acknowledged,
/// from its first byte (`base`), so any of them can be reported whole if
/// the link dies; `acked` is how far the receiver has confirmed (perhaps
/// into a record), and `sent` how far bytes have been published.
#[derive(Debug)]
pub struct OutStream {
    id: u64,
    base: u64,
    acked: u64,
    sent: u64,
    buf: BytesMut,
    held: VecDeque<Held>,
}

impl OutStream {
    /// A fresh stream with id `id` (nonzero).
    pub fn new(id: u64) -> Self {
        Self {
            id,
            base: 0,
            acked: 0,
            sent: 0,
            buf: BytesMut::new(),
            held: VecDeque::new(),
        }
    }

    /// The stream's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Appends a record that holds `cost` bytes of the window until it is
    /// acknowledged.
    pub fn push(&mut self, record: &Record, cost: usize) {
        record.encode(&mut self.buf);
        let end = self.end();
        self.held.push_back(Held { end, cost });
    }

    /// Bytes kept for records not yet wholly acknowledged.
    #[cfg(test)]
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether published bytes wait for an acknowledgement.
    pub fn has_unacked(&self) -> bool {
        self.sent > self.acked
    }

    /// The next chunk to publish, at most `max` bytes: its offset and
    /// bytes, borrowed (the caller copies them once, into its message). It
    /// ends at a record's end where one fits, so the receiver can take its
    /// records without joining parts; only a record larger than `max` is
    /// split.
    pub fn next_chunk(&mut self, max: usize) -> Option<(u64, &[u8])> {
        let end = self.end();
        if self.sent >= end {
            return None;
        }
        let limit = self.sent + max as u64;
        let to = if limit >= end {
            end
        } else {
            let fits = self.held.partition_point(|h| h.end <= limit);
            match fits.checked_sub(1).map(|i| self.held[i].end) {
                Some(e) if e > self.sent => e,
                _ => limit,
            }
        };
        let offset = self.sent;
        self.sent = to;
        let (from, to) = ((offset - self.base) as usize, (to - self.base) as usize);
        Some((offset, &self.buf[from..to]))
    }

    /// Sends everything unacknowledged again, from where the receiver is.
    pub fn rewind(&mut self) {
        self.sent = self.acked;
    }

    /// The receiver has every byte of stream `id` before `upto`. Returns the
    /// window bytes freed, or `None` if the acknowledgement is for another
    /// stream or brings nothing new.
    pub fn ack(&mut self, id: u64, upto: u64) -> Option<usize> {
        // Never past what exists: a receiver cannot have more.
        let upto = upto.min(self.end());
        if id != self.id || upto <= self.acked {
            return None;
        }
        self.acked = upto;
        self.sent = self.sent.max(upto);
        let mut freed = 0;
        let mut new_base = self.base;
        while self.held.front().is_some_and(|h| h.end <= upto) {
            if let Some(h) = self.held.pop_front() {
                freed += h.cost;
                new_base = h.end;
            }
        }
        self.buf.advance((new_base - self.base) as usize);
        self.base = new_base;
        Some(freed)
    }

    /// Ends the stream: every record not wholly acknowledged, with its
    /// window cost, for the caller to report (a record the receiver had
    /// only part of was not delivered). The stream starts again as `new_id`.
    pub fn reset(&mut self, new_id: u64) -> Vec<(Record, usize)> {
        let mut left = Vec::with_capacity(self.held.len());
        let mut buf = std::mem::take(&mut self.buf);
        let mut start = self.base;
        for h in self.held.drain(..) {
            let mut one = buf.split_to((h.end - start) as usize);
            // Whole records we encoded ourselves: they parse.
            if let Ok(Some(r)) = Record::decode(&mut one) {
                left.push((r, h.cost));
            }
            start = h.end;
        }
        *self = Self::new(new_id);
        left
    }
}

/// What [`InStream::accept`] made of a chunk.
#[derive(Debug, PartialEq)]
pub enum Accepted {
    /// New bytes, in order: these records completed.
    Records(Vec<Record>),
    /// Bytes already taken (a resend or a duplicate): nothing new.
    Duplicate,
    /// Bytes after a gap (an earlier message was lost): dropped until the
    /// sender sends again from where this stream is.
    Gap,
    /// The bytes do not parse: the peer's stream is corrupt.
    Corrupt(RecordError),
}

/// Stream ids an [`InStream`] remembers having left, so that a late copy
/// of an old stream's first message cannot take it back.
const RETIRED: usize = 8;

/// The receiving half: bytes of the peer's stream `id` taken before
/// `next`. It is never reset from this side: the peer's stream goes on
/// until the peer starts a new one (after a restart, or once it took this
/// node for down), which then replaces it from its first byte.
#[derive(Debug, Default)]
pub struct InStream {
    id: u64,
    next: u64,
    /// The start of a record not yet whole.
    partial: BytesMut,
    retired: VecDeque<u64>,
}

impl InStream {
    /// The stream being read and how far (what an acknowledgement says).
    pub fn position(&self) -> (u64, u64) {
        (self.id, self.next)
    }

    /// Takes the chunk at `offset` of the peer's stream `id`. Records wholly
    /// inside it share its memory; only a record split across chunks is
    /// copied, to join its parts.
    pub fn accept(&mut self, id: u64, offset: u64, chunk: &Bytes) -> Accepted {
        if id != self.id {
            // A new stream starts at 0; anything else of an unknown stream
            // is a leftover of an old one, or follows a lost start.
            if offset != 0 || self.retired.contains(&id) {
                return Accepted::Gap;
            }
            if self.id != 0 {
                if self.retired.len() == RETIRED {
                    self.retired.pop_front();
                }
                self.retired.push_back(self.id);
            }
            self.id = id;
            self.next = 0;
            self.partial.clear();
        }
        if offset > self.next {
            return Accepted::Gap;
        }
        let end = offset + chunk.len() as u64;
        if end <= self.next {
            return Accepted::Duplicate;
        }
        let mut new = chunk.slice((self.next - offset) as usize..);
        self.next = end;
        let mut records = Vec::new();
        // Finish a split record first, copying only its own bytes.
        while !self.partial.is_empty() && !new.is_empty() {
            let have = self.partial.len();
            let want = match self.partial.get(..4) {
                Some(len) => 4 + u32::from_be_bytes(len.try_into().unwrap_or_default()) as usize,
                None => 4,
            };
            let take = (want - have).min(new.len());
            self.partial.extend_from_slice(&new[..take]);
            new.advance(take);
            match Record::decode(&mut self.partial) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => {}
                Err(e) => return Accepted::Corrupt(e),
            }
        }
        loop {
            match Record::decode_shared(&mut new) {
                Ok(Some(r)) => records.push(r),
                Ok(None) => break,
                Err(e) => return Accepted::Corrupt(e),
            }
        }
        self.partial.extend_from_slice(&new);
        Accepted::Records(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use msgtrans_shards::{Packet, SessionId};

    fn send(n: u32, size: usize) -> Record {
        Record::Send {
            target: SessionId::new(0x0200_0000_0000_0001),
            packet: Packet::one_way(n, vec![n as u8; size]),
        }
    }

    /// The next chunk, owned, as the broker would hand it over.
    fn take(out: &mut OutStream, max: usize) -> Option<(u64, Bytes)> {
        out.next_chunk(max).map(|(o, c)| (o, Bytes::copy_from_slice(c)))
    }

    fn ids(records: &[Record]) -> Vec<u32> {
        records
            .iter()
            .map(|r| match r {
                Record::Send { packet, .. } => packet.header.message_id,
                _ => u32::MAX,
            })
            .collect()
    }

    #[test]
    fn many_records_share_a_chunk_and_a_large_one_spans_several() {
        let mut out = OutStream::new(7);
        for n in 0..10 {
            out.push(&send(n, 10), 50);
        }
        out.push(&send(10, 5000), 5050);
        let mut inn = InStream::default();
        let mut got = Vec::new();
        let mut chunks = 0;
        while let Some((off, chunk)) = take(&mut out, 1024) {
            chunks += 1;
            match inn.accept(7, off, &chunk) {
                Accepted::Records(r) => got.extend(r),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(ids(&got), (0..=10).collect::<Vec<_>>());
        assert!(chunks >= 6, "5 KiB in 1 KiB chunks, after the small ones: {chunks}");
        // Acknowledging everything frees every window byte.
        let (id, upto) = inn.position();
        assert_eq!(out.ack(id, upto), Some(10 * 50 + 5050));
        assert_eq!(out.buffered(), 0);
        assert!(!out.has_unacked());
    }

    #[test]
    fn a_lost_chunk_is_sent_again_and_nothing_is_taken_twice_or_out_of_order() {
        let mut out = OutStream::new(1);
        for n in 0..6 {
            out.push(&send(n, 100), 1);
        }
        let chunks: Vec<_> = std::iter::from_fn(|| take(&mut out, 300)).collect();
        assert!(chunks.len() >= 3);
        let mut inn = InStream::default();
        let mut got = Vec::new();
        // The first arrives, the second is lost, the third is after a gap.
        if let Accepted::Records(r) = inn.accept(1, chunks[0].0, &chunks[0].1) {
            got.extend(r);
        }
        assert_eq!(inn.accept(1, chunks[2].0, &chunks[2].1), Accepted::Gap);
        // The ack says how far; the sender frees that much, then resends.
        let (id, upto) = inn.position();
        out.ack(id, upto);
        out.rewind();
        while let Some((off, chunk)) = take(&mut out, 300) {
            match inn.accept(1, off, &chunk) {
                Accepted::Records(r) => got.extend(r),
                other => panic!("{other:?}"),
            }
            // The broker delivers a copy as well: taken once.
            assert_eq!(inn.accept(1, off, &chunk), Accepted::Duplicate);
        }
        assert_eq!(ids(&got), (0..6).collect::<Vec<_>>());
    }

    #[test]
    fn an_old_stream_is_never_read_as_the_new_one() {
        let mut inn = InStream::default();
        let mut a = OutStream::new(11);
        a.push(&send(1, 10), 0);
        let (off, chunk) = take(&mut a, 1000).unwrap();
        assert!(matches!(inn.accept(11, off, &chunk), Accepted::Records(_)));
        // The sender reset: a new stream from 0 replaces the old.
        let left = a.reset(12);
        assert_eq!(left.len(), 1, "unacknowledged records come back to report");
        a.push(&send(2, 10), 0);
        a.push(&send(3, 10), 0);
        let (off, chunk) = take(&mut a, 1000).unwrap();
        match inn.accept(12, off, &chunk) {
            Accepted::Records(r) => assert_eq!(ids(&r), vec![2, 3]),
            other => panic!("{other:?}"),
        }
        // A late copy of the old stream is not taken, not even its start.
        assert_eq!(inn.accept(11, 40, &Bytes::from_static(b"stale")), Accepted::Gap);
        assert_eq!(inn.accept(11, 0, &Bytes::from_static(b"stale")), Accepted::Gap);
        // An ack of the old stream frees nothing of the new.
        assert_eq!(a.ack(11, 1000), None);
    }

    #[test]
    fn reset_returns_only_what_was_not_acknowledged_with_its_cost() {
        let mut out = OutStream::new(3);
        for n in 0..4 {
            out.push(&send(n, 20), 100 + n as usize);
        }
        let (_, chunk) = take(&mut out, 10_000).unwrap();
        let mut inn = InStream::default();
        let Accepted::Records(_) = inn.accept(3, 0, &chunk.slice(..60)) else {
            panic!()
        };
        // The receiver has the first record and part of the second.
        let (id, upto) = inn.position();
        assert_eq!(out.ack(id, upto), Some(100));
        let left = out.reset(4);
        let left: Vec<_> = left.into_iter().map(|(r, cost)| (ids(&[r])[0], cost)).collect();
        assert_eq!(
            left,
            vec![(1, 101), (2, 102), (3, 103)],
            "a record received in part was not delivered"
        );
        assert_eq!(out.id(), 4);
        assert_eq!(out.buffered(), 0);
    }

    #[test]
    fn records_cut_anywhere_are_joined_and_whole_ones_are_not_cut() {
        let mut out = OutStream::new(9);
        let sizes = [0usize, 1, 30, 200, 3, 1000, 17];
        for (n, size) in sizes.iter().enumerate() {
            out.push(&send(n as u32, *size), 0);
        }
        let all = take(&mut out, usize::MAX).unwrap().1;
        let want: Vec<u32> = (0..sizes.len() as u32).collect();
        // The broker may hand over any cut of the stream (a resend from an
        // acknowledgement that fell inside a record): every cut size joins.
        for cut in 1..=64 {
            let mut inn = InStream::default();
            let mut got = Vec::new();
            for (i, piece) in all.chunks(cut).enumerate() {
                match inn.accept(9, (i * cut) as u64, &Bytes::copy_from_slice(piece)) {
                    Accepted::Records(r) => got.extend(r),
                    other => panic!("cut {cut}: {other:?}"),
                }
            }
            assert_eq!(ids(&got), want, "cut {cut}");
        }
        // Our own chunks end at records' ends wherever a record fits: only
        // the 1,000-byte record is split (into full 300-byte chunks).
        let mut out = OutStream::new(10);
        for (n, size) in sizes.iter().enumerate() {
            out.push(&send(n as u32, *size), 0);
        }
        let mut inn = InStream::default();
        let mut got = Vec::new();
        while let Some((off, chunk)) = take(&mut out, 300) {
            match inn.accept(10, off, &chunk) {
                Accepted::Records(r) => got.extend(r),
                other => panic!("{other:?}"),
            }
            assert!(
                inn.partial.is_empty() || chunk.len() == 300,
                "a record that fits in a chunk was split"
            );
        }
        assert_eq!(ids(&got), want);
    }

    #[test]
    fn a_corrupt_stream_is_reported() {
        let mut inn = InStream::default();
        assert!(matches!(
            inn.accept(5, 0, &Bytes::from_static(&[0, 0, 0, 1, 200])),
            Accepted::Corrupt(_)
        ));
    }
}
