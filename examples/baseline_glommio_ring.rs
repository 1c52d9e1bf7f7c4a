//! Experiment: the shape the shard's network I/O could take next. A
//! glommio executor runs one task per connection, as the shard does, but
//! the connections' reads and writes go through a second io_uring that the
//! executor's thread owns (SINGLE_ISSUER + COOP_TASKRUN), not through
//! glommio's poll-then-syscall streams. Each task awaits a RECV or a SEND
//! completion; one pump task submits every task's operations and reaps
//! every completion with one `io_uring_enter` per turn, then yields so the
//! tasks it woke run before the next enter.
//!
//! It answers one question before that work is done: does a second ring
//! inside a glommio executor, with a task and a waker per connection, keep
//! what the raw ring (baseline_uring) saves over glommio's own streams?
//!
//! When nothing is in flight the pump sleeps in glommio's own ring, on the
//! second ring's eventfd (enabled only then), as a shard would, so timers
//! and glommio's other sources keep working. One simplification an engine
//! could not make: an operation's buffer lives in the task that awaits it,
//! which never drops a pending operation (a shard would keep buffers in the
//! ring until their completion).

mod common;

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use glommio::{LocalExecutorBuilder, Placement};
use io_uring::{opcode, squeue, types, IoUring};

const BUF: usize = 64 * 1024;
const ACCEPT: u64 = u64::MAX;
/// `IORING_ENTER_GETEVENTS`: the pump's enter also reaps what completed.
const GETEVENTS: u32 = 1;

#[derive(Default)]
struct Slot {
    result: Option<i32>,
    waker: Option<Waker>,
}

struct Ring {
    ring: RefCell<IoUring>,
    slots: RefCell<Vec<Slot>>,
    free: RefCell<Vec<usize>>,
    /// Operations pushed since the last enter.
    unsubmitted: Cell<u32>,
    accepted: RefCell<Vec<RawFd>>,
    acceptor: RefCell<Option<Waker>>,
}

impl Ring {
    fn push(&self, sqe: squeue::Entry) -> usize {
        let idx = self.free.borrow_mut().pop().unwrap_or_else(|| {
            let mut s = self.slots.borrow_mut();
            s.push(Slot::default());
            s.len() - 1
        });
        // SAFETY: the buffer the entry points to outlives the operation:
        // the task that owns it awaits the completion before touching it.
        unsafe {
            let mut ring = self.ring.borrow_mut();
            if ring.submission().push(&sqe.clone().user_data(idx as u64)).is_err() {
                let n = self.unsubmitted.replace(0);
                ring.submitter().enter::<libc::sigset_t>(n, 0, 0, None).expect("enter");
                ring.submission()
                    .push(&sqe.user_data(idx as u64))
                    .expect("room after submit");
            }
        }
        self.unsubmitted.set(self.unsubmitted.get() + 1);
        idx
    }

    async fn complete(&self, idx: usize) -> i32 {
        poll_fn(|cx| {
            let mut slots = self.slots.borrow_mut();
            match slots[idx].result.take() {
                Some(r) => {
                    drop(slots);
                    self.free.borrow_mut().push(idx);
                    Poll::Ready(r)
                }
                None => {
                    slots[idx].waker = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }

    async fn recv(&self, fd: RawFd, buf: &mut [u8]) -> i32 {
        let idx = self.push(opcode::Recv::new(types::Fd(fd), buf.as_mut_ptr(), buf.len() as u32).build());
        self.complete(idx).await
    }

    async fn send(&self, fd: RawFd, buf: &[u8]) -> i32 {
        let idx = self.push(opcode::Send::new(types::Fd(fd), buf.as_ptr(), buf.len() as u32).build());
        self.complete(idx).await
    }

    /// Submits what the tasks queued and posts what completed, waiting for
    /// at least one completion if `wait`. Returns how many completed.
    fn turn(&self, wait: bool) -> usize {
        let mut ring = self.ring.borrow_mut();
        let n = self.unsubmitted.replace(0);
        // SAFETY: no argument is passed; the entries' buffers are alive (see push).
        let _ = unsafe {
            ring.submitter()
                .enter::<libc::sigset_t>(n, u32::from(wait), GETEVENTS, None)
        };
        let done: Vec<_> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        drop(ring);
        for &(ud, res) in &done {
            if ud == ACCEPT {
                if res >= 0 {
                    self.accepted.borrow_mut().push(res);
                }
                if let Some(w) = self.acceptor.borrow_mut().take() {
                    w.wake();
                }
                continue;
            }
            let mut slots = self.slots.borrow_mut();
            let slot = &mut slots[ud as usize];
            slot.result = Some(res);
            if let Some(w) = slot.waker.take() {
                w.wake();
            }
        }
        done.len()
    }
}

async fn serve(ring: Rc<Ring>, fd: RawFd) {
    let mut rbuf = vec![0u8; BUF];
    let mut have = 0;
    loop {
        if have == rbuf.len() {
            rbuf.resize(rbuf.len() * 2, 0);
        }
        let n = ring.recv(fd, &mut rbuf[have..]).await;
        if n <= 0 {
            break;
        }
        have += n as usize;
        let done = common::complete_frames(&rbuf[..have]);
        if done == 0 {
            continue;
        }
        // Like baseline_glommio: the complete frames go back from the read
        // buffer itself (no RECV is in flight while this task sends).
        let mut off = 0;
        while off < done {
            let n = ring.send(fd, &rbuf[off..done]).await;
            if n <= 0 {
                // SAFETY: no operation on `fd` is in flight.
                unsafe { libc::close(fd) };
                return;
            }
            off += n as usize;
        }
        rbuf.copy_within(done..have, 0);
        have -= done;
    }
    // SAFETY: no operation on `fd` is in flight.
    unsafe { libc::close(fd) };
}

fn main() {
    let (addr, shards) = common::args(
        "baseline_glommio_ring",
        "glommio tasks with their I/O on a second COOP_TASKRUN ring (experiment)",
    );
    let cores = common::allowed_cpus();
    let handles: Vec<_> = (0..shards)
        .map(|i| {
            let listener = common::reuseport_listener(&addr);
            let placement = cores.get(i).map_or(Placement::Unbound, |c| Placement::Fixed(*c));
            LocalExecutorBuilder::new(placement)
                .io_memory(1 << 20)
                .spawn(move || run(listener))
                .expect("executor")
        })
        .collect();
    println!("listening tcp {addr} shards={shards} path=baseline_glommio_ring");
    for h in handles {
        let _ = h.join();
    }
}

/// One executor: the acceptor, a task per connection, and the pump.
async fn run(listener: std::net::TcpListener) {
    let ring = Rc::new(Ring {
        ring: RefCell::new(
            IoUring::builder()
                .setup_single_issuer()
                // Not DEFER_TASKRUN: under it the kernel signals the ring's
                // eventfd for waiting task work through an RCU callback, so
                // the pump asleep in glommio's ring heard of completions
                // 10-30 ms late (59 msg/s at 1 x 1; the shard ring's fix,
                // docs/perf-notes.md, "slept an RCU grace period").
                .setup_coop_taskrun()
                .build(4096)
                .expect("io_uring"),
        ),
        slots: RefCell::new(Vec::new()),
        free: RefCell::new(Vec::new()),
        unsubmitted: Cell::new(0),
        accepted: RefCell::new(Vec::new()),
        acceptor: RefCell::new(None),
    });
    let lfd = listener.into_raw_fd();
    let accept = opcode::AcceptMulti::new(types::Fd(lfd)).build().user_data(ACCEPT);
    // SAFETY: the entry points at no buffer.
    unsafe { ring.ring.borrow_mut().submission().push(&accept).expect("room") };
    ring.unsubmitted.set(1);
    // The acceptor: spawns a task for every accepted socket.
    let r = Rc::clone(&ring);
    glommio::spawn_local(async move {
        loop {
            poll_fn(|cx| {
                if r.accepted.borrow().is_empty() {
                    *r.acceptor.borrow_mut() = Some(cx.waker().clone());
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
            for fd in r.accepted.borrow_mut().drain(..) {
                // SAFETY: a socket the ring just accepted, owned by nobody else.
                let s = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                let _ = s.set_nodelay(true);
                glommio::spawn_local(serve(Rc::clone(&r), s.into_raw_fd())).detach();
            }
        }
    })
    .detach();
    // The ring's eventfd, enabled only while the pump sleeps, so a busy
    // shard pays no eventfd write per completion.
    // SAFETY: plain syscalls on a fresh fd.
    let efd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(efd >= 0, "eventfd");
    ring.ring
        .borrow()
        .submitter()
        .register_eventfd(efd)
        .expect("register_eventfd");
    ring.ring.borrow_mut().completion().disable_eventfd();
    let mut ready = glommio::net::FdReady::new(efd);
    // The pump: one enter per turn, then a yield so the woken tasks run.
    // A turn that found nothing to submit and nothing completed means every
    // task waits on the ring: then the pump sleeps in glommio's own ring,
    // on the eventfd, so glommio's timers and other sources still run.
    let mut idle = false;
    loop {
        let busy = ring.unsubmitted.get() > 0;
        if idle && !busy {
            ring.ring.borrow_mut().completion().enable_eventfd();
            // A completion that came before the enable signalled nothing:
            // look once more with the eventfd on.
            if ring.turn(false) == 0 && ring.unsubmitted.get() == 0 {
                let _ = poll_fn(|cx| ready.poll_readable(cx)).await;
                let mut n = 0u64;
                // SAFETY: reads 8 bytes into `n`; resets the counter.
                unsafe { libc::read(efd, (&mut n as *mut u64).cast(), 8) };
            }
            ring.ring.borrow_mut().completion().disable_eventfd();
        }
        let done = ring.turn(false);
        idle = done == 0 && !busy;
        futures_lite::future::yield_now().await;
    }
}
