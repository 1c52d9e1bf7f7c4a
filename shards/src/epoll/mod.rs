//! The shard's readiness table: one edge-triggered epoll instance per
//! shard for its TCP and WebSocket sessions (plain or under TLS), read
//! once per wake-up of the whole set instead of one io_uring poll per
//! socket.
//!
//! glommio's streams arm a one-shot `POLL_ADD` on the shard's ring after
//! every short read, so each batch a session reads pays for a poll
//! request, its wait-queue entry, the task work that completes it and the
//! completion (perf-notes, "the kernel floor"). An epoll registration is
//! made once per socket; an arriving segment only links the socket onto
//! the instance's ready list. The shard's ring then waits on the epoll fd
//! alone (one `POLL_ADD` per wake-up, for every socket that became ready
//! meanwhile) and the pump hands the readiness to the sessions. That is
//! tokio's model (and its readiness rule: a read shorter than the buffer
//! means the socket is drained), under glommio's loop.

pub(crate) mod io;

use std::cell::{Cell, RefCell};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::task::{Poll, Waker};

use futures_lite::future::poll_fn;

/// Events taken from the kernel per `epoll_wait`; a fuller list is read
/// again at once.
const EVENTS: usize = 256;

/// What the pump knows of one socket, shared with its session's I/O.
#[derive(Default)]
pub(crate) struct Readiness {
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// The peer's end (or an error) was reported: final states, which
    /// a read or write never clears (no edge would come to set them
    /// again). A short read before the end of stream, say, must not
    /// hide the end behind it.
    read_closed: Cell<bool>,
    write_closed: Cell<bool>,
    reader: RefCell<Option<Waker>>,
    writer: RefCell<Option<Waker>>,
}

impl Readiness {
    fn ready() -> Self {
        // A fresh socket may already hold bytes (sent right after the
        // handshake) and has room to write: try both before waiting.
        Self {
            readable: Cell::new(true),
            writable: Cell::new(true),
            ..Default::default()
        }
    }

    fn wake(slot: &RefCell<Option<Waker>>) {
        if let Some(w) = slot.borrow_mut().take() {
            w.wake();
        }
    }

    fn park(slot: &RefCell<Option<Waker>>, waker: &Waker) {
        let mut slot = slot.borrow_mut();
        match slot.as_ref() {
            Some(w) if w.will_wake(waker) => {}
            _ => *slot = Some(waker.clone()),
        }
    }
}

pub(crate) struct ShardEpoll {
    epfd: OwnedFd,
    /// Set by a stop: the pump ends at its next wake-up.
    closed: Cell<bool>,
    /// The pump, while it waits on the ring.
    pump: RefCell<Option<Waker>>,
}

impl crate::shard::DriverState for ShardEpoll {
    fn shutdown(&self) {
        self.closed.set(true);
        Readiness::wake(&self.pump);
    }
}

/// Gives `shard` a readiness table for its TCP and WebSocket sessions,
/// unless its configuration turns the table off; if the kernel refuses
/// one, they stay on glommio's streams. With the shard ring too, plain
/// sessions go to the ring and TLS ones here.
pub(crate) fn start(shard: &Rc<crate::shard::Shard>) {
    if !shard.cfg.tcp_epoll {
        return;
    }
    match ShardEpoll::new() {
        Ok(ep) => {
            glommio::spawn_local(Rc::clone(&ep).run()).detach();
            shard.drivers.insert(ep);
        }
        Err(e) => tracing::info!(shard = shard.index, error = %e, "no epoll; TCP and WebSocket use glommio's streams"),
    }
}

impl ShardEpoll {
    pub fn new() -> std::io::Result<Rc<Self>> {
        // SAFETY: plain syscall; the fd is checked and then owned.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Rc::new(Self {
            // SAFETY: a fresh fd nobody else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            closed: Cell::new(false),
            pump: RefCell::new(None),
        }))
    }

    /// Registers `fd` (non-blocking) for both directions, edge-triggered.
    /// The returned readiness must stay alive until [`ShardEpoll::remove`].
    fn add(&self, fd: RawFd, r: &Rc<Readiness>) -> std::io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: Rc::as_ptr(r) as u64,
        };
        // SAFETY: both fds are open; `ev` is a valid event.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Unregisters `fd`: after this no `epoll_wait` reports its readiness
    /// pointer, which may then be freed.
    fn remove(&self, fd: RawFd) {
        let mut ev = libc::epoll_event { events: 0, u64: 0 };
        // SAFETY: both fds are open (the caller still owns `fd`).
        unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_DEL, fd, &mut ev) };
    }

    /// Takes what the kernel has ready and wakes the sessions waiting on
    /// it; returns how many sockets were ready.
    fn dispatch(&self, events: &mut [libc::epoll_event]) -> usize {
        let mut total = 0;
        loop {
            // SAFETY: `events` is writable for its length; timeout 0 never
            // blocks.
            let n = unsafe { libc::epoll_wait(self.epfd.as_raw_fd(), events.as_mut_ptr(), events.len() as i32, 0) };
            if n <= 0 {
                return total;
            }
            let n = n as usize;
            for ev in &events[..n] {
                // SAFETY: every registered pointer is a live `Readiness`
                // (its session's I/O keeps it until it unregisters, and no
                // wait reports a socket after that).
                let r = unsafe { &*(ev.u64 as *const Readiness) };
                let bits = ev.events as i32;
                let gone = bits & (libc::EPOLLERR | libc::EPOLLHUP) != 0;
                if gone || bits & libc::EPOLLRDHUP != 0 {
                    r.read_closed.set(true);
                }
                if gone {
                    r.write_closed.set(true);
                }
                if gone || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) != 0 {
                    r.readable.set(true);
                    Readiness::wake(&r.reader);
                }
                if gone || bits & libc::EPOLLOUT != 0 {
                    r.writable.set(true);
                    Readiness::wake(&r.writer);
                }
            }
            total += n;
            if n < events.len() {
                return total;
            }
        }
    }

    /// The pump: sleeps in glommio's ring on the epoll fd and hands what
    /// became ready to the sessions, until a stop.
    async fn run(self: Rc<Self>) {
        let mut ready = glommio::net::FdReady::new(self.epfd.as_raw_fd());
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        while !self.closed.get() {
            self.dispatch(&mut events);
            poll_fn(|cx| {
                if self.closed.get() {
                    return Poll::Ready(());
                }
                Readiness::park(&self.pump, cx.waker());
                ready.poll_readable(cx).map(|_| ())
            })
            .await;
            self.pump.borrow_mut().take();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{IoSlice, Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    use futures_lite::{AsyncReadExt, AsyncWriteExt};

    use super::io::EpollStream;
    use super::*;

    /// Runs `test` on a glommio executor with a pumped epoll instance,
    /// failing if it takes a minute (a lost wake-up hangs instead).
    fn on_executor<F: std::future::Future<Output = ()> + 'static>(
        test: impl FnOnce(Rc<ShardEpoll>) -> F + Send + 'static,
    ) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
                .io_memory(1 << 20)
                .make()
                .expect("executor");
            ex.run(async move {
                let ep = ShardEpoll::new().expect("epoll");
                glommio::spawn_local(Rc::clone(&ep).run()).detach();
                test(Rc::clone(&ep)).await;
                crate::shard::DriverState::shutdown(&*ep);
            });
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(20)).expect("the test finished");
    }

    /// A socket on the table and its peer, a plain blocking socket.
    fn pair(ep: &Rc<ShardEpoll>) -> (EpollStream, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        (EpollStream::new(Rc::clone(ep), OwnedFd::from(a)).unwrap(), b)
    }

    /// A read that drained the socket skips the read that would only say
    /// EAGAIN, and the next bytes to arrive still wake the reader: the
    /// edge the kernel reports for them is not lost.
    #[test]
    fn bytes_after_a_short_read_wake_the_reader() {
        on_executor(|ep| async move {
            let (mut s, mut peer) = pair(&ep);
            peer.write_all(b"first").unwrap();
            let mut buf = [0u8; 64];
            assert_eq!(s.read(&mut buf).await.unwrap(), 5);
            assert_eq!(&buf[..5], b"first");
            // The writer comes later, from another thread, while the read
            // below waits.
            let writer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(50));
                peer.write_all(b"second").unwrap();
                peer
            });
            let mut got = [0u8; 6];
            s.read_exact(&mut got).await.unwrap();
            assert_eq!(&got, b"second");
            // The peer's close reads as the end of the stream.
            drop(writer.join().unwrap());
            assert_eq!(s.read(&mut buf).await.unwrap(), 0, "end of stream");
        });
    }

    /// Bytes and the peer's close that arrive together, and are reported
    /// together before the session reads: the read that takes the bytes
    /// is short, yet the end of stream behind it is still read (no edge
    /// would come for it again).
    #[test]
    fn the_end_of_stream_behind_a_short_read_is_read() {
        on_executor(|ep| async move {
            let (mut s, mut peer) = pair(&ep);
            peer.write_all(b"last words").unwrap();
            peer.shutdown(std::net::Shutdown::Write).unwrap();
            // The pump takes both events before the first read.
            glommio::timer::sleep(Duration::from_millis(20)).await;
            let mut buf = [0u8; 64];
            assert_eq!(s.read(&mut buf).await.unwrap(), 10);
            assert_eq!(s.read(&mut buf).await.unwrap(), 0, "end of stream");
            drop(peer);
        });
    }

    /// A writer that found the socket full waits, and goes on once the
    /// peer reads: nothing it wrote is lost or reordered.
    #[test]
    fn a_full_socket_holds_the_writer_until_the_peer_reads() {
        on_executor(|ep| async move {
            let (mut s, mut peer) = pair(&ep);
            let total = 4 << 20;
            let data: Vec<u8> = (0..total).map(|i| (i % 251) as u8).collect();
            let reader = std::thread::spawn(move || {
                // Late, so the socket fills and the writer must wait.
                std::thread::sleep(Duration::from_millis(100));
                let mut got = Vec::new();
                peer.read_to_end(&mut got).unwrap();
                got
            });
            s.write_all(&data[..total / 2]).await.unwrap();
            let half = [
                IoSlice::new(&data[total / 2..total * 3 / 4]),
                IoSlice::new(&data[total * 3 / 4..]),
            ];
            let mut sent = 0;
            while sent < total / 2 {
                // As a TLS stream writes its records: several slices at once.
                let n = s.write_vectored(&half).await.unwrap();
                assert!(n > 0);
                sent += n;
                let rest = &data[total / 2 + sent..];
                if !rest.is_empty() {
                    s.write_all(rest).await.unwrap();
                    sent = total / 2;
                }
            }
            s.close().await.unwrap();
            let got = reader.join().unwrap();
            assert_eq!(got.len(), total);
            assert!(got == data, "the bytes arrive as written");
        });
    }

    /// Many sockets on one table, each woken by its own bytes only; the
    /// ones dropped meanwhile are gone from it.
    #[test]
    fn each_socket_hears_only_of_its_own_bytes() {
        on_executor(|ep| async move {
            let pairs: Vec<_> = (0..32).map(|_| pair(&ep)).collect();
            // Half of them are dropped, which unregisters them.
            let kept: Vec<_> = pairs.into_iter().step_by(2).collect();
            let mut peers = Vec::new();
            let mut tasks = Vec::new();
            for (i, (mut s, peer)) in kept.into_iter().enumerate() {
                peers.push(peer);
                tasks.push(glommio::spawn_local(async move {
                    let mut buf = [0u8; 1];
                    s.read_exact(&mut buf).await.unwrap();
                    assert_eq!(usize::from(buf[0]), i, "socket {i} read another's byte");
                    i
                }));
            }
            // Every reader is waiting now; the bytes come in reverse order.
            glommio::yield_if_needed().await;
            for (i, peer) in peers.iter_mut().enumerate().rev() {
                peer.write_all(&[i as u8]).unwrap();
            }
            for (i, t) in tasks.into_iter().enumerate() {
                assert_eq!(t.await, i);
            }
        });
    }
}
