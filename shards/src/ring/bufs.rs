//! The shard ring's provided buffers (`IORING_REGISTER_PBUF_RING`): a RECV
//! that waits for input holds no buffer; the kernel picks one of these when
//! the bytes arrive. So an idle session pins no read buffer, as it pins none
//! on glommio's streams (their read waits for readiness first).
//!
//! A completed read hands its buffer to the session for good (the driver
//! decodes in place and later returns it to the shard's pool); the slot is
//! refilled from that pool before the ring's next enter.

use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The one buffer group of a shard ring.
pub(super) const GROUP: u16 = 0;

pub(super) struct ProvidedBuffers {
    /// The ring of entries shared with the kernel (page-aligned, mmapped).
    entries: *mut BufRingEntry,
    count: u16,
    /// Our producer index; published to the kernel through the ring's tail.
    tail: u16,
    /// The buffer behind each buffer id, `None` while a session holds it.
    bufs: Vec<Option<Vec<u8>>>,
    /// Buffer ids whose buffer a session took.
    empty: Vec<u16>,
    map_len: usize,
}

impl ProvidedBuffers {
    /// Registers `count` (a power of two) buffers made by `fill` with `ring`.
    pub fn new(ring: &IoUring, count: u16, mut fill: impl FnMut() -> Vec<u8>) -> io::Result<Self> {
        assert!(count.is_power_of_two());
        let map_len = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        // SAFETY: an anonymous private mapping; checked for failure below.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let mut me = Self {
            entries: addr.cast(),
            count,
            tail: 0,
            bufs: (0..count).map(|_| None).collect(),
            empty: Vec::with_capacity(usize::from(count)),
            map_len,
        };
        // SAFETY: the mapping is page-aligned, zeroed and `count` entries
        // long; it stays mapped until after the ring is dropped (see Drop).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(addr as u64, count, GROUP, 0)?
        };
        for bid in 0..count {
            me.provide(bid, fill());
        }
        Ok(me)
    }

    /// Gives `buf` to the kernel under buffer id `bid`.
    pub fn provide(&mut self, bid: u16, mut buf: Vec<u8>) {
        let slot = usize::from(self.tail & (self.count - 1));
        // SAFETY: `slot` is within the mapping; the kernel reads an entry
        // only once the tail store below has published it.
        unsafe {
            let e = &mut *self.entries.add(slot);
            e.set_addr(buf.as_mut_ptr() as u64);
            e.set_len(buf.len().min(u32::MAX as usize) as u32);
            e.set_bid(bid);
        }
        self.bufs[usize::from(bid)] = Some(buf);
        self.tail = self.tail.wrapping_add(1);
        // SAFETY: the tail field overlays the first entry's `resv`, which
        // the kernel reads and we alone write.
        unsafe {
            let tail = BufRingEntry::tail(self.entries) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }

    /// The buffer the kernel filled under `bid`; its slot stays empty
    /// until the next [`ProvidedBuffers::refill`].
    pub fn take(&mut self, bid: u16) -> Option<Vec<u8>> {
        let b = self.bufs.get_mut(usize::from(bid)).and_then(Option::take);
        if b.is_some() {
            self.empty.push(bid);
        }
        b
    }

    /// Gives the kernel a buffer from `fill` for every slot taken since.
    pub fn refill(&mut self, mut fill: impl FnMut() -> Vec<u8>) {
        while let Some(bid) = self.empty.pop() {
            self.provide(bid, fill());
        }
    }
}

impl Drop for ProvidedBuffers {
    fn drop(&mut self) {
        // The ring is gone by now (see `ShardRing`'s field order), so the
        // kernel no longer reads the entries or fills the buffers.
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe { libc::munmap(self.entries.cast(), self.map_len) };
    }
}
