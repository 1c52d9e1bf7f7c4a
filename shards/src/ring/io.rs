//! A plain TCP session's I/O on the shard ring.

use std::io;
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Context, Poll};

use super::{Done, ShardRing};
use crate::session_io::SessionIo;

#[derive(Clone, Copy)]
enum Read {
    /// Into the driver's buffer, which the ring holds meanwhile.
    Lent(usize),
    /// Into one of the ring's provided buffers.
    Provided(usize),
}

pub(crate) struct RingIo {
    ring: Rc<ShardRing>,
    fd: Rc<OwnedFd>,
    read: Option<Read>,
    write: Option<usize>,
}

impl RingIo {
    /// Moves a connected socket onto `ring`. The socket is made blocking:
    /// the ring then waits for readiness itself instead of handing back
    /// EAGAIN (it never blocks the thread).
    pub fn new(ring: Rc<ShardRing>, fd: OwnedFd) -> io::Result<Self> {
        use std::os::fd::AsRawFd;
        let raw = fd.as_raw_fd();
        // SAFETY: fcntl on an fd we own.
        unsafe {
            let flags = libc::fcntl(raw, libc::F_GETFL);
            if flags < 0 || libc::fcntl(raw, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(Self {
            ring,
            fd: Rc::new(fd),
            read: None,
            write: None,
        })
    }
}

fn result(res: i32) -> io::Result<usize> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res as usize)
    }
}

impl SessionIo for RingIo {
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>> {
        match self.read {
            None if from == 0 => {
                // Nothing is held over from the last read: its buffer goes
                // back to the ring (or, if the ring has no use for it, stays
                // for the driver to release) and the kernel picks one.
                if !buf.is_empty() {
                    if let Some(b) = self.ring.recycle(std::mem::take(buf)) {
                        *buf = b;
                    }
                }
                self.read = Some(Read::Provided(self.ring.recv_provided(cx, &self.fd)));
                Poll::Pending
            }
            None => {
                let b = std::mem::take(buf);
                self.read = Some(Read::Lent(self.ring.recv_into(cx, &self.fd, b, from)));
                Poll::Pending
            }
            Some(Read::Lent(idx)) => {
                let Done { res, buf: b } = std::task::ready!(self.ring.poll(idx, cx));
                self.read = None;
                // Only a ring that could not stop the kernel at shutdown
                // keeps a lent buffer (it ends the read with ECANCELED).
                *buf = b.unwrap_or_default();
                Poll::Ready(result(res))
            }
            Some(Read::Provided(idx)) => {
                let Done { res, buf: b } = std::task::ready!(self.ring.poll(idx, cx));
                self.read = None;
                if res == -libc::ENOBUFS {
                    // More reads completed in one turn than there are
                    // provided buffers (say, a burst of sessions accepted
                    // at once, each with input waiting), counted in
                    // `ring_reads_without_buffer`: try again (the slots are refilled
                    // before the ring's next enter, so this waits a turn,
                    // not spins; the bytes stay in the socket meanwhile).
                    self.ring.count_read_without_buffer();
                    self.read = Some(Read::Provided(self.ring.recv_provided(cx, &self.fd)));
                    return Poll::Pending;
                }
                if let Some(b) = b {
                    // The buffer is the session's now, whatever the result.
                    *buf = b;
                }
                Poll::Ready(result(res))
            }
        }
    }

    fn poll_write(&mut self, cx: &mut Context<'_>, buf: &mut Vec<u8>, from: usize) -> Poll<io::Result<usize>> {
        match self.write {
            None => {
                let b = std::mem::take(buf);
                self.write = Some(self.ring.send(cx, &self.fd, b, from));
                Poll::Pending
            }
            Some(idx) => {
                let Done { res, buf: b } = std::task::ready!(self.ring.poll(idx, cx));
                self.write = None;
                // As for a lent read buffer.
                *buf = b.unwrap_or_default();
                Poll::Ready(result(res))
            }
        }
    }

    fn poll_flush(&mut self, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn reading(&self) -> bool {
        self.read.is_some()
    }

    fn writing(&self) -> bool {
        self.write.is_some()
    }

    fn provides_buffers(&self) -> bool {
        true
    }
}

impl Drop for RingIo {
    fn drop(&mut self) {
        if let Some(Read::Lent(idx) | Read::Provided(idx)) = self.read {
            self.ring.abandon(idx);
        }
        if let Some(idx) = self.write {
            self.ring.abandon(idx);
        }
    }
}
