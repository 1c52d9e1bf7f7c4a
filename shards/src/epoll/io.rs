//! A socket on the shard's readiness table: its own non-blocking `recv`
//! and `send` (a `sendmsg` for vectored writes), and a wait only when the
//! socket said it has nothing, or no room.

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, OwnedFd};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use super::{Readiness, ShardEpoll};

pub(crate) struct EpollStream {
    epoll: Rc<ShardEpoll>,
    fd: OwnedFd,
    ready: Rc<Readiness>,
}

impl EpollStream {
    /// Registers a connected socket with `epoll`; it is made non-blocking.
    pub fn new(epoll: Rc<ShardEpoll>, fd: OwnedFd) -> io::Result<Self> {
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let ready = Rc::new(Readiness::ready());
        epoll.add(raw, &ready)?;
        Ok(Self { epoll, fd, ready })
    }

    /// Runs `op` (one non-blocking syscall) while the socket is `ready`
    /// in that direction; parks the task on `waiter` once it is not.
    /// `drained` says whether a result means the socket has nothing more
    /// for now (a short read), which clears `ready` without the syscall
    /// that would only say `EAGAIN`, unless the direction is `closed`.
    fn attempt(
        ready: &std::cell::Cell<bool>,
        closed: &std::cell::Cell<bool>,
        waiter: &std::cell::RefCell<Option<std::task::Waker>>,
        cx: &Context<'_>,
        mut op: impl FnMut() -> isize,
        drained: impl Fn(usize) -> bool,
    ) -> Poll<io::Result<usize>> {
        while ready.get() {
            let n = op();
            if n >= 0 {
                let n = n as usize;
                if drained(n) && !closed.get() {
                    ready.set(false);
                }
                return Poll::Ready(Ok(n));
            }
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock if !closed.get() => ready.set(false),
                // A closed direction answers at once (0, EPIPE, the
                // error); EAGAIN there would mean a wait no edge ends.
                _ => return Poll::Ready(Err(e)),
            }
        }
        Readiness::park(waiter, cx.waker());
        Poll::Pending
    }
}

impl AsyncRead for EpollStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<usize>> {
        let fd = self.fd.as_raw_fd();
        let len = buf.len();
        // A read shorter than the buffer emptied the socket: the next
        // arrival is an edge the pump reports (tokio's rule).
        Self::attempt(
            &self.ready.readable,
            &self.ready.read_closed,
            &self.ready.reader,
            cx,
            // SAFETY: `buf` is writable for its length; the fd is open.
            || unsafe { sys::recv(fd, buf.as_mut_ptr().cast(), len) },
            |n| n > 0 && n < len,
        )
    }
}

impl EpollStream {
    /// [`EpollStream::attempt`] for a write: only `EAGAIN` clears it.
    fn write_with(&self, cx: &Context<'_>, op: impl FnMut() -> isize) -> Poll<io::Result<usize>> {
        let r = &self.ready;
        Self::attempt(&r.writable, &r.write_closed, &r.writer, cx, op, |_| false)
    }
}

impl AsyncWrite for EpollStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let fd = self.fd.as_raw_fd();
        // SAFETY: `buf` is readable for its length; the fd is open.
        self.write_with(cx, || unsafe { sys::send(fd, buf.as_ptr().cast(), buf.len()) })
    }

    /// One `sendmsg` for every slice (a TLS stream's records).
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let fd = self.fd.as_raw_fd();
        self.write_with(cx, || {
            // SAFETY: an all-zero msghdr is valid; `IoSlice` is
            // ABI-compatible with `iovec`, and the slices outlive the
            // call.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = bufs.as_ptr() as *mut libc::iovec;
            msg.msg_iovlen = bufs.len().min(libc::UIO_MAXIOV as usize) as _;
            unsafe { sys::sendmsg(fd, &msg) }
        })
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // SAFETY: shutdown on an fd we own.
        if unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) } < 0 {
            return Poll::Ready(Err(io::Error::last_os_error()));
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for EpollStream {
    fn drop(&mut self) {
        // Before the readiness is freed and the fd closed (the socket may
        // have another fd, so closing alone would not unregister it).
        self.epoll.remove(self.fd.as_raw_fd());
    }
}

/// `recv`, `send` and `sendmsg` as plain system calls. glibc's wrappers
/// are pthread cancellation points: each brackets the call with an atomic
/// compare-and-swap that enables asynchronous cancellation and one that
/// disables it again (1.5% of the server's CPU in a 64 B echo), and
/// nothing in this crate cancels threads. `libc::syscall` sets `errno` as
/// the wrappers do. Every argument goes as a `c_long`, the register width
/// the kernel reads.
mod sys {
    use std::os::fd::RawFd;

    use libc::{c_long, c_void};

    /// # Safety
    /// `buf` must be writable for `len` bytes.
    pub unsafe fn recv(fd: RawFd, buf: *mut c_void, len: usize) -> isize {
        let (fd, buf, len) = (fd as c_long, buf as c_long, len as c_long);
        libc::syscall(libc::SYS_recvfrom, fd, buf, len, 0 as c_long, 0 as c_long, 0 as c_long) as isize
    }

    /// # Safety
    /// `buf` must be readable for `len` bytes.
    pub unsafe fn send(fd: RawFd, buf: *const c_void, len: usize) -> isize {
        let (fd, buf, len) = (fd as c_long, buf as c_long, len as c_long);
        let flags = libc::MSG_NOSIGNAL as c_long;
        libc::syscall(libc::SYS_sendto, fd, buf, len, flags, 0 as c_long, 0 as c_long) as isize
    }

    /// # Safety
    /// `msg` and the buffers it points to must be valid.
    pub unsafe fn sendmsg(fd: RawFd, msg: *const libc::msghdr) -> isize {
        let flags = libc::MSG_NOSIGNAL as c_long;
        libc::syscall(libc::SYS_sendmsg, fd as c_long, msg as c_long, flags) as isize
    }
}
