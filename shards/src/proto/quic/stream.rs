//! A QUIC connection's streams seen as one byte stream of length-prefixed
//! packets (`Wire::Quic`), so the same `session::Driver` that serves TCP
//! and WebSocket serves QUIC: limits, backpressure, requests, drain and
//! close reasons are one piece of code.
//!
//! What the peer may do, all on one endpoint (DESIGN.md §3):
//! * open one bidirectional stream and send length-prefixed packets on it
//!   (MsgTrans 2.0 with ALPN `msgtrans/1`, 1.0.3–1.0.10 without ALPN);
//! * send each packet on its own unidirectional stream, unprefixed, then
//!   finish it (MsgTrans 1.0.0–1.0.2). Answers go back the same way.
//!
//! Reads merge every stream at packet granularity: once a packet has begun
//! on a stream, only that stream is read until the packet is whole, so the
//! driver always sees whole prefixed packets back to back, and bytes move
//! from quinn's chunks into the driver's buffer with no other copy.
//!
//! Output goes on the peer's bidirectional stream. A server whose peer has
//! opened nothing yet holds its output (1.0 and 2.0 clients read only the
//! stream they open) unless the peer has said it reads streams the server
//! opens: our client does, with an empty unidirectional stream as soon as
//! it connects. Then the server opens its own stream, so it can push
//! before the client writes.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use quinn_proto::{Connection, Dir, ReadError, Side, StreamId, WriteError};
use rustc_hash::FxHashMap;

use crate::codec::HEADER_LEN;
use crate::pool::buffer::{BufferPool, LARGE};
use crate::wire::QUIC_PREFIX;

/// Where output goes.
#[derive(Debug)]
enum Out {
    /// Not decided yet: the peer has opened nothing.
    Unset,
    /// Everything on this bidirectional stream, prefixed as it comes.
    Bidi(StreamId),
    /// Each packet on a new unidirectional stream, without its prefix.
    Uni(UniOut),
}

/// Progress through the packet being written on its own stream.
#[derive(Debug, Default)]
struct UniOut {
    prefix: [u8; QUIC_PREFIX],
    have: usize,
    stream: Option<StreamId>,
    remaining: usize,
}

/// Progress through one incoming stream.
#[derive(Debug)]
struct Recv {
    /// Packets on it are prefixed (bidirectional) or one whole per stream.
    prefixed: bool,
    /// Header bytes gathered: the prefix (prefixed) or the packet header.
    head: [u8; HEADER_LEN],
    have: usize,
    /// Bytes to hand out before reading on (a synthesised prefix and header).
    staged: Vec<u8>,
    /// Body bytes of the current packet still to read.
    remaining: usize,
    /// Bytes ever read from the stream.
    total: u64,
    queued: bool,
}

impl Recv {
    fn new(prefixed: bool) -> Self {
        Self {
            prefixed,
            head: [0; HEADER_LEN],
            have: 0,
            staged: Vec::new(),
            remaining: 0,
            total: 0,
            queued: false,
        }
    }

    /// Follows the packet boundaries through `bytes`, read from a prefixed
    /// stream: where each prefix starts and how much of a packet is left.
    fn pass_prefixed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let k = self.remaining.min(bytes.len());
                self.remaining -= k;
                bytes = &bytes[k..];
                continue;
            }
            let k = (QUIC_PREFIX - self.have).min(bytes.len());
            self.head[self.have..self.have + k].copy_from_slice(&bytes[..k]);
            self.have += k;
            bytes = &bytes[k..];
            if self.have == QUIC_PREFIX {
                self.remaining = u32::from_be_bytes([self.head[0], self.head[1], self.head[2], self.head[3]]) as usize;
                self.have = 0;
            }
        }
    }

    /// Whether a packet has begun and is not yet whole.
    fn mid_packet(&self) -> bool {
        self.have > 0 || self.remaining > 0 || !self.staged.is_empty()
    }
}

/// The stream state of one connection.
pub(crate) struct StreamIo {
    side: Side,
    out: Out,
    /// Server: the peer reads streams we open, so we may open our own.
    push_ok: bool,
    /// The peer sends packets on unidirectional streams (1.0.0–1.0.2).
    uni_peer: bool,
    recv: FxHashMap<StreamId, Recv>,
    readable: VecDeque<StreamId>,
    /// The stream a packet is being read from.
    current: Option<StreamId>,
    read_waker: Option<Waker>,
    write_waker: Option<Waker>,
    /// The connection is gone; reads end, writes fail.
    lost: bool,
}

/// What the endpoint should do after a stream call.
pub(crate) struct Touched {
    /// Something may need to be transmitted.
    pub transmit: bool,
}

impl StreamIo {
    pub(crate) fn new(side: Side) -> Self {
        Self {
            side,
            out: Out::Unset,
            push_ok: false,
            uni_peer: false,
            recv: FxHashMap::default(),
            readable: VecDeque::new(),
            current: None,
            read_waker: None,
            write_waker: None,
            lost: false,
        }
    }

    /// Our client tells the server it reads streams the server opens.
    pub(crate) fn announce_push(&mut self, q: &mut Connection) {
        if let Some(id) = q.streams().open(Dir::Uni) {
            let _ = q.send_stream(id).finish();
        }
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    fn wake_writer(&mut self) {
        if let Some(w) = self.write_waker.take() {
            w.wake();
        }
    }

    fn queue(&mut self, id: StreamId) {
        if let Some(r) = self.recv.get_mut(&id) {
            if !r.queued {
                r.queued = true;
                self.readable.push_back(id);
            }
        }
    }

    /// The peer opened streams in `dir`: take them all.
    pub(crate) fn on_opened(&mut self, q: &mut Connection, dir: Dir) {
        while let Some(id) = q.streams().accept(dir) {
            let prefixed = dir == Dir::Bi;
            self.recv.insert(id, Recv::new(prefixed));
            if prefixed && matches!(self.out, Out::Unset) {
                self.out = Out::Bidi(id);
                self.wake_writer();
            }
            self.queue(id);
        }
        self.wake_reader();
    }

    pub(crate) fn on_readable(&mut self, id: StreamId) {
        self.queue(id);
        self.wake_reader();
    }

    /// Room to write appeared (credit, or a new stream may be opened).
    pub(crate) fn on_writable(&mut self) {
        self.wake_writer();
    }

    /// The connection ended: wake both sides so the session notices.
    pub(crate) fn on_lost(&mut self) {
        self.lost = true;
        self.wake_reader();
        self.wake_writer();
    }

    /// Reads whole prefixed packets into `buf`, from any stream.
    pub(crate) fn poll_read(
        &mut self,
        q: &mut Connection,
        cx: &Context<'_>,
        buf: &mut [u8],
    ) -> (Poll<io::Result<usize>>, Touched) {
        let mut n = 0;
        let mut transmit = false;
        while n < buf.len() {
            let id = match self.current.take() {
                Some(id) => id,
                None => match self.readable.pop_front() {
                    Some(id) => {
                        if let Some(r) = self.recv.get_mut(&id) {
                            r.queued = false;
                        }
                        id
                    }
                    None => break,
                },
            };
            let Some(r) = self.recv.get_mut(&id) else { continue };
            match read_some(q, id, r, &mut buf[n..], &mut transmit) {
                Ok(Step::Read(k)) => {
                    n += k;
                    if !r.prefixed && !self.uni_peer {
                        self.uni_peer = true;
                        if let Some(w) = self.write_waker.take() {
                            w.wake();
                        }
                    }
                    if r.mid_packet() {
                        self.current = Some(id);
                    } else if !r.queued {
                        // More may follow at once: keep the stream in line.
                        r.queued = true;
                        self.readable.push_front(id);
                    }
                }
                Ok(Step::Blocked) => {
                    if r.mid_packet() {
                        // A packet has begun here: nothing else may be read
                        // until it is whole. Its next Readable wakes us.
                        self.current = Some(id);
                        break;
                    }
                }
                Ok(Step::Finished) => {
                    let r = self.recv.remove(&id).expect("stream state");
                    if r.mid_packet() {
                        return (Poll::Ready(Err(truncated())), Touched { transmit });
                    }
                    if !r.prefixed && r.total == 0 && self.side == Side::Server {
                        // An empty unidirectional stream: our client saying
                        // it reads the streams we open.
                        self.push_ok = true;
                        self.wake_writer();
                    }
                }
                Err(e) => return (Poll::Ready(Err(e)), Touched { transmit }),
            }
        }
        if n > 0 {
            return (Poll::Ready(Ok(n)), Touched { transmit });
        }
        if self.lost {
            return (Poll::Ready(Ok(0)), Touched { transmit });
        }
        replace_waker(&mut self.read_waker, cx);
        (Poll::Pending, Touched { transmit })
    }

    /// Writes prefixed packets from `buf` to wherever output goes; large
    /// writes go to quinn in buffers from `pool` (see [`write_bidi`]).
    pub(crate) fn poll_write(
        &mut self,
        q: &mut Connection,
        cx: &Context<'_>,
        buf: &[u8],
        pool: &Arc<BufferPool>,
    ) -> (Poll<io::Result<usize>>, Touched) {
        if self.lost {
            return (
                Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
                Touched { transmit: false },
            );
        }
        if matches!(self.out, Out::Unset) {
            if self.side == Side::Client || self.push_ok {
                match q.streams().open(Dir::Bi) {
                    Some(id) => {
                        // The peer answers on the stream we opened.
                        self.recv.insert(id, Recv::new(true));
                        self.out = Out::Bidi(id);
                    }
                    None => return self.pending_write(cx),
                }
            } else if self.uni_peer {
                self.out = Out::Uni(UniOut::default());
            } else {
                // Nobody to write to yet: the output waits in the
                // session's queue, under its limits and write deadline.
                return self.pending_write(cx);
            }
        }
        let r = match &mut self.out {
            Out::Bidi(id) => match write_bidi(q, *id, buf, pool) {
                Ok(n) => Ok(n),
                Err(WriteError::Blocked) => return self.pending_write(cx),
                Err(_) => Err(io::ErrorKind::BrokenPipe.into()),
            },
            Out::Uni(u) => write_uni(q, u, buf),
            Out::Unset => unreachable!("decided above"),
        };
        match r {
            Ok(0) if !buf.is_empty() => self.pending_write(cx),
            r => (Poll::Ready(r), Touched { transmit: true }),
        }
    }

    fn pending_write(&mut self, cx: &Context<'_>) -> (Poll<io::Result<usize>>, Touched) {
        replace_waker(&mut self.write_waker, cx);
        (Poll::Pending, Touched { transmit: false })
    }

    /// Whether anything was ever written (an output stream was chosen).
    pub(crate) fn has_output(&self) -> bool {
        !matches!(self.out, Out::Unset)
    }

    /// Ends our side of the output stream(s), so the peer's reads end
    /// cleanly once everything is delivered.
    pub(crate) fn finish(&mut self, q: &mut Connection) {
        if let Out::Bidi(id) = self.out {
            let _ = q.send_stream(id).finish();
        }
    }
}

fn replace_waker(slot: &mut Option<Waker>, cx: &Context<'_>) {
    if !slot.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
        *slot = Some(cx.waker().clone());
    }
}

fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a packet")
}

enum Step {
    Read(usize),
    Blocked,
    Finished,
}

/// Reads from one stream into `buf`, at most to the end of the packet in
/// progress (or the next packet's header).
fn read_some(q: &mut Connection, id: StreamId, r: &mut Recv, buf: &mut [u8], transmit: &mut bool) -> io::Result<Step> {
    if !r.staged.is_empty() {
        let k = r.staged.len().min(buf.len());
        buf[..k].copy_from_slice(&r.staged[..k]);
        r.staged.drain(..k);
        return Ok(Step::Read(k));
    }
    let mut recv = q.recv_stream(id);
    let mut chunks = match recv.read(true) {
        Ok(c) => c,
        Err(_) => return Ok(Step::Finished),
    };
    let mut n = 0;
    let result = loop {
        if n == buf.len() {
            break Ok(Step::Read(n));
        }
        // A prefixed stream's bytes are already what the driver reads
        // (prefix, packet, prefix...), so take as much as fits in one chunk
        // and follow the boundaries in memory: asking quinn for 4 bytes,
        // then the packet, cost two trips through its reassembly per packet.
        let want = if r.prefixed {
            buf.len() - n
        } else if r.remaining > 0 {
            r.remaining.min(buf.len() - n)
        } else {
            HEADER_LEN - r.have
        };
        let chunk = match chunks.next(want) {
            Ok(Some(c)) => c.bytes,
            Ok(None) => break Ok(if n > 0 { Step::Read(n) } else { Step::Finished }),
            Err(ReadError::Blocked) => break Ok(if n > 0 { Step::Read(n) } else { Step::Blocked }),
            Err(ReadError::Reset(_)) => break Err(io::Error::from(io::ErrorKind::ConnectionReset)),
        };
        r.total += chunk.len() as u64;
        if r.prefixed {
            // The driver checks each length against its limits as soon as
            // it sees the prefix and header.
            buf[n..n + chunk.len()].copy_from_slice(&chunk);
            n += chunk.len();
            r.pass_prefixed(&chunk);
            continue;
        }
        if r.remaining > 0 {
            buf[n..n + chunk.len()].copy_from_slice(&chunk);
            n += chunk.len();
            r.remaining -= chunk.len();
            if r.remaining == 0 {
                // One packet per unidirectional stream: it must end here.
                break Ok(Step::Read(n));
            }
            continue;
        }
        r.head[r.have..r.have + chunk.len()].copy_from_slice(&chunk);
        r.have += chunk.len();
        if r.have == HEADER_LEN {
            // Synthesise the prefix from the packet's own lengths.
            let ext = u16::from_be_bytes([r.head[8], r.head[9]]) as usize;
            let payload = u32::from_be_bytes([r.head[10], r.head[11], r.head[12], r.head[13]]) as usize;
            let len = HEADER_LEN + ext + payload;
            r.staged
                .extend_from_slice(&(len.min(u32::MAX as usize) as u32).to_be_bytes());
            r.staged.extend_from_slice(&r.head);
            r.have = 0;
            r.remaining = len - HEADER_LEN;
            let k = r.staged.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&r.staged[..k]);
            r.staged.drain(..k);
            n += k;
            if !r.staged.is_empty() {
                break Ok(Step::Read(n));
            }
        }
    };
    if chunks.finalize().should_transmit() {
        *transmit = true;
    }
    result
}

/// Writes of at least this many bytes go to quinn in pooled buffers.
/// Below it quinn's own copy is a small allocation the allocator serves
/// from its caches, and a pooled buffer (at least `MEDIUM`, 16 KiB) held
/// until the peer acknowledges it would pin far more memory than it holds.
const POOLED_WRITE: usize = LARGE / 4;

/// Writes `buf` to a bidirectional stream, returning how much quinn took.
///
/// quinn copies what `write` gives it into a fresh buffer of that exact
/// size and frees it once the peer acknowledges it. For large batches
/// those frees gave memory back to the OS and the next batch faulted it in
/// again: 4.5 page faults per 64 KiB message, 25% of the server's kernel
/// time. Large pieces go in instead as `Bytes` over a buffer of the
/// shard's pool, which comes back to the pool when quinn lets go of it;
/// quinn keeps `Bytes` as they are (`write_chunks`), so it is still one
/// copy. Pieces are at most the pool's largest tier, so each fits one.
fn write_bidi(q: &mut Connection, id: StreamId, buf: &[u8], pool: &Arc<BufferPool>) -> Result<usize, WriteError> {
    let mut s = q.send_stream(id);
    let mut done = 0;
    while done < buf.len() {
        let piece = &buf[done..buf.len().min(done + LARGE)];
        let r = if piece.len() >= POOLED_WRITE {
            s.write_chunks(&mut [pool.copy_to_bytes(piece)]).map(|w| w.bytes)
        } else {
            s.write(piece)
        };
        match r {
            Ok(k) => {
                done += k;
                if k < piece.len() {
                    break;
                }
            }
            // What was taken is written; the rest waits for credit.
            Err(WriteError::Blocked) if done > 0 => break,
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Writes prefixed packets from `buf` each on a stream of its own.
fn write_uni(q: &mut Connection, u: &mut UniOut, buf: &[u8]) -> io::Result<usize> {
    let mut used = 0;
    while used < buf.len() {
        if u.remaining == 0 {
            let k = (QUIC_PREFIX - u.have).min(buf.len() - used);
            u.prefix[u.have..u.have + k].copy_from_slice(&buf[used..used + k]);
            u.have += k;
            used += k;
            if u.have < QUIC_PREFIX {
                break;
            }
            u.have = 0;
            u.remaining = u32::from_be_bytes(u.prefix) as usize;
            u.stream = None;
            continue;
        }
        let id = match u.stream {
            Some(id) => id,
            None => match q.streams().open(Dir::Uni) {
                Some(id) => {
                    u.stream = Some(id);
                    id
                }
                // Out of streams until the peer grants more.
                None => break,
            },
        };
        let take = u.remaining.min(buf.len() - used);
        match q.send_stream(id).write(&buf[used..used + take]) {
            Ok(k) => {
                used += k;
                u.remaining -= k;
                if u.remaining == 0 {
                    let _ = q.send_stream(id).finish();
                    u.stream = None;
                }
                if k < take {
                    break;
                }
            }
            Err(WriteError::Blocked) => break,
            Err(_) => return Err(io::ErrorKind::BrokenPipe.into()),
        }
    }
    Ok(used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_boundaries_are_followed_through_any_split() {
        // Three prefixed packets, one of them empty; the boundaries are
        // after 7, 11 and 20 bytes.
        let mut wire = Vec::new();
        for p in [&b"abc"[..], b"", b"hello"] {
            wire.extend_from_slice(&(p.len() as u32).to_be_bytes());
            wire.extend_from_slice(p);
        }
        let boundaries = [0, 7, 11, 20];
        for a in 0..=wire.len() {
            for b in a..=wire.len() {
                let mut r = Recv::new(true);
                for part in [&wire[..a], &wire[a..b], &wire[b..]] {
                    r.pass_prefixed(part);
                }
                assert!(!r.mid_packet(), "whole stream split at {a}, {b}");
                let mut r = Recv::new(true);
                r.pass_prefixed(&wire[..a]);
                r.pass_prefixed(&wire[a..b]);
                assert_eq!(
                    r.mid_packet(),
                    !boundaries.contains(&b),
                    "prefix of {b} bytes split at {a}"
                );
            }
        }
    }
}
