// msgtrans patch: readiness of a file descriptor the caller does its own
// syscalls on (see vendor/glommio/README.md).
use std::{
    io,
    os::unix::io::RawFd,
    rc::{Rc, Weak},
    task::{Context, Poll},
};

use crate::{reactor::Reactor, sys::Source};

/// Waits on the executor's ring until a file descriptor that the caller
/// owns and reads or writes with its own syscalls (`recvmmsg`, `sendmsg`
/// with GSO, ...) may be ready, without giving the fd to glommio.
///
/// `Ready` only says "try now": the caller's non-blocking syscall may still
/// find nothing, and then it polls again. The fd must outlive this value.
#[derive(Debug)]
pub struct FdReady {
    reactor: Weak<Reactor>,
    fd: RawFd,
    rx: Option<Source>,
    tx: Option<Source>,
}

impl FdReady {
    /// Readiness of `fd`. Must be created inside a glommio executor.
    pub fn new(fd: RawFd) -> Self {
        Self {
            reactor: Rc::downgrade(&crate::executor().reactor()),
            fd,
            rx: None,
            tx: None,
        }
    }

    /// `Ready` once `fd` may be readable (or has an error or hang-up).
    pub fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Self::poll_one(&self.reactor, self.fd, &mut self.rx, false, cx)
    }

    /// `Ready` once `fd` may be writable.
    pub fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Self::poll_one(&self.reactor, self.fd, &mut self.tx, true, cx)
    }

    fn poll_one(
        reactor: &Weak<Reactor>,
        fd: RawFd,
        slot: &mut Option<Source>,
        write: bool,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(src) = slot.as_ref() {
            if let Some(res) = src.result() {
                slot.take();
                return Poll::Ready(res.map(|_| ()));
            }
            src.add_waiter_single(cx.waker());
            return Poll::Pending;
        }
        let Some(reactor) = reactor.upgrade() else {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        };
        let src = if write {
            reactor.poll_write_ready(fd)
        } else {
            reactor.poll_read_ready(fd)
        };
        src.add_waiter_single(cx.waker());
        *slot = Some(src);
        Poll::Pending
    }
}

/// msgtrans patch: a future that is ready once the executor has polled its
/// rings (and timers) again, after the task queues ran empty or were
/// preempted. A task that drives I/O of its own (a second ring) waits on
/// this between its turns, so it runs once per executor loop and never
/// keeps the task queue from emptying, which would starve the executor's
/// own rings until the preemption timer fired.
#[derive(Debug, Default)]
pub struct NextPoll {
    registered: bool,
}

impl NextPoll {
    /// Waits for the next poll. Must be awaited inside a glommio executor.
    pub fn new() -> Self {
        Self { registered: false }
    }
}

impl std::future::Future for NextPoll {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.registered {
            return Poll::Ready(());
        }
        self.registered = true;
        crate::executor().reactor().wake_after_poll(cx.waker().clone());
        Poll::Pending
    }
}
