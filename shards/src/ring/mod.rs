//! The shard's own io_uring for plain TCP sessions (SINGLE_ISSUER +
//! COOP_TASKRUN), beside glommio's rings.
//!
//! Why: glommio's streams poll for readiness and then make a syscall per
//! read and per write. Here every session's RECVs and SENDs of one executor
//! loop go to the kernel in one `io_uring_enter`, which also reaps what
//! completed (see `docs/perf-notes.md`, the ring experiment: 24 ns less
//! server CPU per 64 B message).
//!
//! Ownership: an operation's buffer and its socket belong to the ring's
//! table of operations until the kernel completes it, never to the session,
//! which may be dropped at any time. A dropped session's operations are
//! cancelled, and their buffers and fd are let go when their last
//! completion arrives (the lesson of the accept bug: every completion that
//! yields a resource is handled, even when nobody waits for it).
//!
//! The pump task submits and reaps once per glommio loop (it waits on
//! `glommio::net::NextPoll` between turns, so glommio's own rings, timers
//! and mesh doorbells are served as before). When a turn finds nothing, the
//! shard sleeps in glommio's ring on this ring's eventfd, enabled only
//! then, so a busy shard pays no eventfd write per completion.
//!
//! Not DEFER_TASKRUN, though it suits a single issuer: under it, a
//! completion is posted only inside an enter on this ring, and the kernel
//! signals the eventfd for such waiting work only after an RCU grace period
//! (10-20 ms on the project's VM, seen with the `io_uring:*` tracepoints).
//! A shard asleep in glommio's ring then slept that long on most messages
//! of a light load. With COOP_TASKRUN the completion is posted by task work
//! on the shard's thread, which wakes it, and the eventfd is signalled as
//! the completion is posted.

mod bufs;
pub(crate) mod io;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::pool::hot::HotBuffers;
use crate::stats::ShardStats;
use bufs::ProvidedBuffers;

/// Submission queue depth; a fuller queue is submitted early.
const ENTRIES: u32 = 1024;
/// Provided read buffers. A buffer is consumed only when a read completes
/// and its slot is refilled in the same turn, so this bounds the reads that
/// complete in one turn, not the sessions that wait for input.
const PROVIDED: u16 = 128;
/// Largest provided buffer: enough for every read of a small-message load
/// (a read then holds a few KiB); a frame larger than what one read brought
/// continues in a pooled buffer it fits. 128 of them pin 2 MiB per shard.
const PROVIDED_SIZE: usize = 16 * 1024;
/// How many 10 ms waits a closing ring gives the kernel to finish.
const CLOSE_WAITS: usize = 500;
/// `user_data` of cancel requests, whose completions need no handling.
const CANCEL: u64 = u64::MAX;

/// `IORING_ENTER_GETEVENTS`: an enter that also runs the task work that
/// posts waiting completions.
const GETEVENTS: u32 = 1;

/// An operation's `user_data`: its slot in the table and the generation
/// the slot had when it started. A slot is reused as soon as its operation
/// is freed, so a completion or a cancel still naming the slot alone could
/// reach the next operation in it (a cancel the kernel did not take at
/// once, say); with the generation it reaches nothing.
fn user_data(idx: usize, gen: u32) -> u64 {
    // The table never holds u32::MAX slots, so no operation is CANCEL.
    debug_assert!(idx < u32::MAX as usize);
    (u64::from(gen) << 32) | idx as u64
}

/// The slot and generation an operation's `user_data` names.
fn slot_of(ud: u64) -> (usize, u32) {
    ((ud & u64::from(u32::MAX)) as usize, (ud >> 32) as u32)
}

/// Entries still in the submission queue after an enter: the kernel may
/// take fewer than asked (`EAGAIN`, `EBUSY`), and those must go in the
/// next enter, not be forgotten.
fn left_unsubmitted(ring: &mut IoUring) -> u32 {
    ring.submission().len() as u32
}

/// What a finished operation gives back.
pub(crate) struct Done {
    /// The syscall's result: bytes moved, or a negated errno.
    pub res: i32,
    /// The buffer the operation was lent or (for a read from the provided
    /// buffers) was given.
    pub buf: Option<Vec<u8>>,
}

enum State {
    Waiting(Option<Waker>),
    Finished(i32),
}

struct Op {
    state: State,
    /// The slot's generation when this operation started.
    gen: u32,
    buf: Option<Vec<u8>>,
    /// Keeps the socket open until the kernel is done with it.
    _fd: Rc<OwnedFd>,
    /// Its session is gone: the completion only frees it.
    orphan: bool,
}

impl Op {
    /// Records the result; returns the waker of the session waiting for
    /// it, to be woken once the table is no longer borrowed.
    #[must_use]
    fn finish(&mut self, res: i32) -> Option<Waker> {
        match std::mem::replace(&mut self.state, State::Finished(res)) {
            State::Waiting(w) => w,
            State::Finished(_) => None,
        }
    }
}

pub(crate) struct ShardRing {
    /// `None` once closed (see [`ShardRing::close`]).
    ring: RefCell<Option<IoUring>>,
    /// The read buffers given to the kernel; `None` once closed.
    provided: RefCell<Option<ProvidedBuffers>>,
    ops: RefCell<Vec<Option<Op>>>,
    free: RefCell<Vec<usize>>,
    live: Cell<usize>,
    /// The generation the next operation gets (see [`user_data`]).
    next_gen: Cell<u32>,
    /// Entries pushed since the last enter.
    unsubmitted: Cell<u32>,
    /// The pump, while it sleeps: a new operation must wake it.
    pump: RefCell<Option<Waker>>,
    /// Signalled by the kernel on completions while enabled; `None` once
    /// closed (the pump task may outlive the shard: its executor does not
    /// drop tasks that never finish).
    eventfd: RefCell<Option<OwnedFd>>,
    read_size: usize,
    /// Read buffers sessions have finished with, for the next refill: they
    /// stay filled (no zeroing) and warm. The pool's own hot stack keeps
    /// only a few, and a turn can take a buffer for every session.
    spare: RefCell<Vec<Vec<u8>>>,
    /// The shard's counters (`ring_reads_without_buffer`).
    stats: std::sync::Arc<ShardStats>,
}

/// The ring is a driver's per-shard state: a stop ends it once every
/// session is gone.
impl crate::shard::DriverState for ShardRing {
    fn shutdown(&self) {
        self.close();
    }
}

/// Gives `shard` a ring for its plain TCP sessions, if its configuration
/// asks for one and the kernel has what it needs; otherwise plain TCP
/// stays on glommio's streams.
pub(crate) fn start(shard: &Rc<crate::shard::Shard>) {
    if !shard.cfg.tcp_ring {
        return;
    }
    match ShardRing::new(shard.cfg.read_buffer, std::sync::Arc::clone(&shard.stats)) {
        Ok(ring) => {
            glommio::spawn_local(Rc::clone(&ring).run(Rc::clone(shard))).detach();
            shard.drivers.insert(ring);
        }
        Err(e) => {
            tracing::info!(shard = shard.index, error = %e, "no shard ring; plain TCP uses glommio's streams")
        }
    }
}

impl ShardRing {
    /// A ring for one shard, with `PROVIDED` read buffers of up to
    /// `read_size` bytes. Fails on kernels without
    /// COOP_TASKRUN or provided-buffer rings (both 5.19); the shard then
    /// keeps glommio's streams.
    pub fn new(read_size: usize, stats: std::sync::Arc<ShardStats>) -> std::io::Result<Rc<Self>> {
        let read_size = read_size.clamp(1, PROVIDED_SIZE);
        let mut ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            // Completions waiting for an enter raise a flag, so a turn with
            // nothing to submit and nothing pending makes no syscall.
            .setup_taskrun_flag()
            .build(ENTRIES)?;
        // Fresh zeroed memory (calloc) rather than the pool's buffers, which
        // would be filled byte by byte. They go to the pool once read into.
        let provided = ProvidedBuffers::new(&ring, PROVIDED, || vec![0u8; read_size])?;
        // SAFETY: plain syscall; the fd is checked and then owned.
        let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let eventfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(efd) };
        ring.submitter().register_eventfd(efd)?;
        ring.completion().disable_eventfd();
        Ok(Rc::new(Self {
            ring: RefCell::new(Some(ring)),
            provided: RefCell::new(Some(provided)),
            ops: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            live: Cell::new(0),
            next_gen: Cell::new(0),
            unsubmitted: Cell::new(0),
            pump: RefCell::new(None),
            eventfd: RefCell::new(Some(eventfd)),
            read_size,
            spare: RefCell::new(Vec::new()),
            stats,
        }))
    }

    /// Pushes one entry, submitting the queue first if it is full; `false`
    /// if the ring is closed or the kernel took nothing.
    fn push(&self, sqe: &squeue::Entry) -> bool {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else {
            return false;
        };
        // SAFETY: every buffer an entry points to is owned by the table of
        // operations (or is a provided buffer) until its completion.
        unsafe {
            if ring.submission().push(sqe).is_err() {
                let n = self.unsubmitted.get();
                let _ = ring.submitter().enter::<libc::sigset_t>(n, 0, 0, None);
                self.unsubmitted.set(left_unsubmitted(ring));
                if ring.submission().push(sqe).is_err() {
                    return false;
                }
            }
        }
        self.unsubmitted.set(self.unsubmitted.get() + 1);
        if let Some(w) = self.pump.borrow_mut().take() {
            w.wake();
        }
        true
    }

    /// Starts an operation; its completion wakes `cx`'s task.
    fn start(&self, cx: &Context<'_>, sqe: squeue::Entry, buf: Option<Vec<u8>>, fd: &Rc<OwnedFd>) -> usize {
        let gen = self.next_gen.get();
        self.next_gen.set(gen.wrapping_add(1));
        let mut op = Op {
            state: State::Waiting(Some(cx.waker().clone())),
            gen,
            buf,
            _fd: Rc::clone(fd),
            orphan: false,
        };
        let idx = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut ops = self.ops.borrow_mut();
            ops.push(None);
            ops.len() - 1
        });
        self.live.set(self.live.get() + 1);
        if !self.push(&sqe.user_data(user_data(idx, gen))) {
            // Never reached the kernel: the session sees the error when it
            // polls, which it is doing now (no wake-up needed).
            drop(op.finish(-libc::ECANCELED));
        }
        self.ops.borrow_mut()[idx] = Some(op);
        idx
    }

    /// Receives into `buf[from..]`, which the ring holds until it is done.
    pub fn recv_into(&self, cx: &Context<'_>, fd: &Rc<OwnedFd>, mut buf: Vec<u8>, from: usize) -> usize {
        let len = (buf.len() - from).min(u32::MAX as usize) as u32;
        // SAFETY: in bounds; the pointer stays valid, as the Vec moves into
        // the table without reallocating.
        let ptr = unsafe { buf.as_mut_ptr().add(from) };
        let sqe = opcode::Recv::new(types::Fd(fd.as_raw_fd()), ptr, len).build();
        self.start(cx, sqe, Some(buf), fd)
    }

    /// Receives into a provided buffer, picked when the bytes arrive.
    pub fn recv_provided(&self, cx: &Context<'_>, fd: &Rc<OwnedFd>) -> usize {
        let sqe = opcode::Recv::new(types::Fd(fd.as_raw_fd()), std::ptr::null_mut(), self.read_size as u32)
            .buf_group(bufs::GROUP)
            .build()
            .flags(squeue::Flags::BUFFER_SELECT);
        self.start(cx, sqe, None, fd)
    }

    /// Counts a read that completed with `ENOBUFS` (and is queued again).
    pub fn count_read_without_buffer(&self) {
        self.stats.ring_reads_without_buffer.add(1);
    }

    /// Sends `buf[from..]`; the ring holds `buf` until it is done.
    pub fn send(&self, cx: &Context<'_>, fd: &Rc<OwnedFd>, buf: Vec<u8>, from: usize) -> usize {
        let len = (buf.len() - from).min(u32::MAX as usize) as u32;
        // SAFETY: as in `recv_into`.
        let ptr = unsafe { buf.as_ptr().add(from) };
        let sqe = opcode::Send::new(types::Fd(fd.as_raw_fd()), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build();
        self.start(cx, sqe, Some(buf), fd)
    }

    /// Takes back a read buffer a session has finished with, if it is one
    /// of the provided size and there is room; else gives it back.
    pub fn recycle(&self, buf: Vec<u8>) -> Option<Vec<u8>> {
        let mut spare = self.spare.borrow_mut();
        let fits = buf.len() == self.read_size && buf.capacity() == self.read_size;
        if fits && spare.len() < usize::from(PROVIDED) {
            spare.push(buf);
            None
        } else {
            Some(buf)
        }
    }

    /// The result of operation `idx` once it is done; it is then freed.
    pub fn poll(&self, idx: usize, cx: &mut Context<'_>) -> Poll<Done> {
        let mut ops = self.ops.borrow_mut();
        let op = ops[idx].as_mut().expect("a live operation");
        match &mut op.state {
            State::Finished(res) => {
                let res = *res;
                let buf = op.buf.take();
                ops[idx] = None;
                drop(ops);
                self.release(idx);
                Poll::Ready(Done { res, buf })
            }
            State::Waiting(w) => {
                if !w.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }

    /// Its session no longer wants operation `idx`: cancel it, and free it
    /// (buffer, socket) once the kernel is done.
    pub fn abandon(&self, idx: usize) {
        let mut ops = self.ops.borrow_mut();
        let op = ops[idx].as_mut().expect("a live operation");
        if matches!(op.state, State::Finished(_)) {
            ops[idx] = None;
            drop(ops);
            self.release(idx);
            return;
        }
        op.orphan = true;
        let target = user_data(idx, op.gen);
        drop(ops);
        // A closed ring has no operation left in the kernel (see `close`).
        self.push(&opcode::AsyncCancel::new(target).build().user_data(CANCEL));
    }

    fn release(&self, idx: usize) {
        self.free.borrow_mut().push(idx);
        self.live.set(self.live.get() - 1);
    }

    /// Submits what is queued and posts what completed, waiting up to
    /// `wait` for a completion. Returns how many operations completed.
    fn turn(&self, buffers: Option<&HotBuffers>, wait: Option<&types::Timespec>) -> usize {
        let mut ring = self.ring.borrow_mut();
        let Some(ring) = ring.as_mut() else {
            return 0;
        };
        if let (Some(buffers), Some(provided)) = (buffers, self.provided.borrow_mut().as_mut()) {
            // Refilled only now, after the sessions that took buffers in
            // the last turn have run: most give theirs back by then, so the
            // refill is the buffer just read from, still in cache.
            let mut spare = self.spare.borrow_mut();
            provided.refill(|| match spare.pop() {
                // Reused without the pool's help, but reused all the same:
                // counted as the pool's hit, as the hot stack counts its own.
                Some(b) => {
                    buffers.pool().count_hit();
                    b
                }
                None => buffers.get_read(self.read_size),
            });
        }
        let n = self.unsubmitted.get();
        match wait {
            Some(ts) => {
                let args = types::SubmitArgs::new().timespec(ts);
                let _ = ring.submitter().submit_with_args(1, &args);
            }
            // Nothing to submit and no task work waiting to post a
            // completion (the flag says when some is): no syscall, only
            // what the task work already posted, if anything. Completions
            // the kernel parked on its overflow list (a full completion
            // queue) come back only in an enter.
            None if n == 0 && !ring.submission().taskrun() && !ring.submission().cq_overflow() => {
                if ring.completion().is_empty() {
                    return 0;
                }
            }
            None => {
                // SAFETY: no argument is passed; the entries' buffers are alive.
                let _ = unsafe { ring.submitter().enter::<libc::sigset_t>(n, 0, GETEVENTS, None) };
            }
        }
        self.unsubmitted.set(left_unsubmitted(ring));
        let mut done = 0;
        let mut ops = self.ops.borrow_mut();
        let mut freed = Vec::new();
        let mut woken = Vec::new();
        for c in ring.completion() {
            let ud = c.user_data();
            if ud == CANCEL {
                continue;
            }
            done += 1;
            let (idx, gen) = slot_of(ud);
            // Taken before the operation is looked up: a buffer the kernel
            // picked is out of the provided ring whoever it was for.
            let picked = cqueue::buffer_select(c.flags())
                .and_then(|bid| self.provided.borrow_mut().as_mut().and_then(|p| p.take(bid)));
            let Some(op) = ops.get_mut(idx).and_then(Option::as_mut).filter(|op| op.gen == gen) else {
                // No such operation (a stray completion, or one for an
                // earlier operation in this slot): keep its buffer.
                if let Some(b) = picked.and_then(|b| self.recycle(b)) {
                    if let Some(buffers) = buffers {
                        buffers.put_read(b);
                    }
                }
                continue;
            };
            if picked.is_some() {
                op.buf = picked;
            }
            if op.orphan {
                if let (Some(b), Some(buffers)) = (op.buf.take(), buffers) {
                    buffers.put_read(b);
                }
                ops[idx] = None;
                freed.push(idx);
                continue;
            }
            woken.extend(op.finish(c.result()));
        }
        drop(ops);
        for idx in freed {
            self.release(idx);
        }
        // Woken only now: a waker that ran its task at once would find the
        // table borrowed.
        for w in woken {
            w.wake();
        }
        done
    }

    /// Drives the ring until it is closed.
    pub async fn run(self: Rc<Self>, shard: Rc<crate::shard::Shard>) {
        let Some(efd) = self.eventfd.borrow().as_ref().map(AsRawFd::as_raw_fd) else {
            return;
        };
        let mut ready = glommio::net::FdReady::new(efd);
        while self.ring.borrow().is_some() {
            let submitted = self.unsubmitted.get() > 0;
            if self.turn(Some(&shard.buffers), None) > 0 || submitted {
                glommio::net::NextPoll::new().await;
                continue;
            }
            // Nothing moved: sleep in glommio's ring until this ring has a
            // completion or a session queues an operation. A completion
            // that came before the enable signalled nothing, so look once
            // more with the eventfd on.
            self.eventfd_enabled(true);
            if self.turn(Some(&shard.buffers), None) == 0 && self.unsubmitted.get() == 0 {
                poll_fn(|cx| {
                    if self.unsubmitted.get() > 0 || self.ring.borrow().is_none() {
                        return Poll::Ready(());
                    }
                    *self.pump.borrow_mut() = Some(cx.waker().clone());
                    ready.poll_readable(cx).map(|_| ())
                })
                .await;
                self.pump.borrow_mut().take();
                if let Some(fd) = self.eventfd.borrow().as_ref() {
                    let mut n = 0u64;
                    // SAFETY: reads 8 bytes into `n`, resetting the counter;
                    // a nonblocking read of an unsignalled eventfd just fails.
                    unsafe { libc::read(fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
                }
            }
            self.eventfd_enabled(false);
        }
    }

    fn eventfd_enabled(&self, on: bool) {
        if let Some(ring) = self.ring.borrow_mut().as_mut() {
            if on {
                ring.completion().enable_eventfd();
                // The look that follows reads the ring's flags: the kernel
                // sets its flag, then reads ours; we set ours, then read
                // its. Without a full fence the CPU may do our read first
                // (x86 lets a load pass a store), both sides see the other's
                // old value, and a completion signals nothing while we
                // sleep.
                std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            } else {
                ring.completion().disable_eventfd();
            }
        }
    }

    /// Shuts the ring down when its shard stops: cancels what is in
    /// flight, waits for the kernel to be done with every buffer, then
    /// frees them and closes the ring. Operations whose session is still
    /// there end with `ECANCELED`; later ones fail the same way.
    pub fn close(&self) {
        if self.ring.borrow().is_none() {
            return;
        }
        if self.live.get() > 0 {
            let any = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .user_data(CANCEL);
            self.push(&any);
            let ts = types::Timespec::from(Duration::from_millis(10));
            for _ in 0..CLOSE_WAITS {
                let in_kernel = self
                    .ops
                    .borrow()
                    .iter()
                    .flatten()
                    .any(|op| matches!(op.state, State::Waiting(_)));
                if !in_kernel {
                    break;
                }
                self.turn(None, Some(&ts));
            }
        }
        let still = self
            .ops
            .borrow()
            .iter()
            .flatten()
            .filter(|op| matches!(op.state, State::Waiting(_)))
            .count();
        if still > 0 {
            // The kernel may still write to these buffers: leak them, and
            // the ring, rather than free memory it may touch. The operations
            // stay in the table, ended with ECANCELED, so that their
            // sessions find them when they poll.
            tracing::error!(operations = still, "shard ring: operations still in flight at shutdown");
            std::mem::forget(self.ring.borrow_mut().take());
            std::mem::forget(self.provided.borrow_mut().take());
            let mut woken = Vec::new();
            for op in self.ops.borrow_mut().iter_mut().flatten() {
                if matches!(op.state, State::Waiting(_)) {
                    std::mem::forget(op.buf.take());
                    woken.extend(op.finish(-libc::ECANCELED));
                }
            }
            for w in woken {
                w.wake();
            }
            return;
        }
        // Close the ring first: the kernel then holds no provided buffer.
        drop(self.ring.borrow_mut().take());
        drop(self.provided.borrow_mut().take());
        self.spare.borrow_mut().clear();
        drop(self.eventfd.borrow_mut().take());
        if let Some(w) = self.pump.borrow_mut().take() {
            w.wake();
        }
    }
}

impl Drop for ShardRing {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::task::Waker;

    /// A ring, or `None` on a kernel without what it needs (the shard then
    /// keeps glommio's streams, and so does this test).
    fn ring() -> Option<Rc<ShardRing>> {
        ShardRing::new(4096, std::sync::Arc::new(ShardStats::new(1))).ok()
    }

    /// Turns the ring until operation `idx` is done.
    fn wait(ring: &ShardRing, idx: usize, cx: &mut Context<'_>) -> Done {
        for _ in 0..1000 {
            ring.turn(None, Some(&types::Timespec::from(Duration::from_millis(5))));
            if let Poll::Ready(d) = ring.poll(idx, cx) {
                return d;
            }
        }
        panic!("operation {idx} never completed");
    }

    /// A read that completes while the shard sleeps signals the ring's
    /// eventfd as it completes: the sleeping shard waits on nothing else.
    /// (Under DEFER_TASKRUN the kernel put that signal off by an RCU grace
    /// period, 10-20 ms on this VM, and a lightly loaded server on the ring
    /// stalled that long on most messages.)
    #[test]
    fn a_read_that_completes_while_the_shard_sleeps_signals_the_eventfd_at_once() {
        let Some(ring) = ring() else { return };
        let mut cx = Context::from_waker(Waker::noop());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(a));
        let read = ring.recv_into(&cx, &fd, vec![0; 64], 0);
        // The read goes to the kernel and waits; then the pump's way to
        // sleep: eventfd on, one more look, nothing there.
        ring.turn(None, None);
        ring.eventfd_enabled(true);
        assert_eq!(ring.turn(None, None), 0, "nothing was written yet");
        b.write_all(b"wake").unwrap();
        let efd = ring.eventfd.borrow().as_ref().map(AsRawFd::as_raw_fd).unwrap();
        let mut p = libc::pollfd {
            fd: efd,
            events: libc::POLLIN,
            revents: 0,
        };
        // A zero timeout: the signal must already be there, not come later.
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut p, 1, 0) };
        assert_eq!(ready, 1, "the eventfd was not signalled when the read completed");
        ring.eventfd_enabled(false);
        let done = wait(&ring, read, &mut cx);
        assert_eq!(done.res, 4);
        ring.close();
    }

    #[test]
    fn a_completion_or_cancel_for_an_earlier_operation_in_a_slot_leaves_the_next_one_alone() {
        let Some(ring) = ring() else { return };
        let mut cx = Context::from_waker(Waker::noop());
        let (a, mut b) = UnixStream::pair().unwrap();
        let fd = Rc::new(OwnedFd::from(a));
        // A first read completes and frees its slot...
        b.write_all(b"first").unwrap();
        let first = ring.recv_into(&cx, &fd, vec![0; 64], 0);
        let done = wait(&ring, first, &mut cx);
        assert_eq!(done.res, 5);
        let first_ud = user_data(first, 0);
        // ...which the next operation takes.
        let second = ring.recv_into(&cx, &fd, vec![0; 64], 0);
        assert_eq!(second, first, "the freed slot is reused");
        // A cancel still naming the first operation (one the kernel did not
        // take before that operation completed), and a stray completion for
        // it: neither may reach the second.
        ring.push(&opcode::AsyncCancel::new(first_ud).build().user_data(CANCEL));
        ring.push(&opcode::Nop::new().build().user_data(first_ud));
        for _ in 0..3 {
            ring.turn(None, Some(&types::Timespec::from(Duration::from_millis(5))));
        }
        assert!(
            ring.poll(second, &mut cx).is_pending(),
            "the second read is still waiting"
        );
        b.write_all(b"second!").unwrap();
        let done = wait(&ring, second, &mut cx);
        assert_eq!(done.res, 7);
        assert_eq!(&done.buf.unwrap()[..7], b"second!");
        ring.close();
    }
}
