//! The provided buffer ring (io_uring `IORING_REGISTER_PBUF_RING`): a pool of
//! equal receive buffers the kernel picks from for multishot receives.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// `IOU_PBUF_RING_INC`.
const INCREMENTAL: u16 = 2;

/// A registered ring of `count` receive buffers of `size` bytes each.
#[derive(Debug)]
pub struct BufRing {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    memory: Box<[u8]>,
    count: u16,
    size: u32,
    tail: u16,
    group: u16,
    /// Registered with IOU_PBUF_RING_INC: a buffer takes several receives, each starting
    /// where the last one ended, until a completion without BUF_MORE hands it back.
    incremental: bool,
    /// Bytes of each buffer already consumed (incremental mode).
    consumed: Vec<u32>,
}

impl BufRing {
    /// Allocates and registers the ring as buffer group `group`. `count` must be a power of two
    /// (at most 32,768).
    pub(crate) fn new(ring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32_768 || size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "buffer count must be a power of two <= 32768",
            ));
        }
        let entries_layout = Layout::from_size_align(
            usize::from(count) * std::mem::size_of::<BufRingEntry>(),
            4096,
        )
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: the layout has a non-zero size (count >= 1, entries are 16 bytes).
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        if entries.is_null() {
            return Err(io::Error::new(io::ErrorKind::OutOfMemory, "buffer ring"));
        }
        // Filled (not zeroed: calloc'd pages would stay unmapped until the kernel first
        // writes each): the pool is resident from the start, a fixed reservation, instead of
        // growing the process's RSS page by page as receives walk through it.
        let memory = vec![0xAAu8; usize::from(count) * size as usize].into_boxed_slice();
        let mut this = Self {
            entries,
            entries_layout,
            memory,
            count,
            size,
            tail: 0,
            group,
            incremental: false,
            consumed: vec![0; usize::from(count)],
        };
        // SAFETY: `entries` is page-aligned, zeroed and `count` entries long. It and `memory`
        // stay allocated until `Drop`, which runs only after the io_uring is closed: a BufRing
        // is only ever a field of `Ring` declared after its `IoUring`.
        // Incremental consumption (kernel 6.12+) lets many small receives share one buffer;
        // older kernels refuse the flag and get whole-buffer consumption.
        this.incremental = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, group, INCREMENTAL)
                .is_ok()
        };
        if !this.incremental {
            // SAFETY: as above.
            unsafe {
                ring.submitter()
                    .register_buf_ring_with_flags(entries as u64, count, group, 0)?;
            }
        }
        for bid in 0..count {
            this.push(bid);
        }
        this.publish();
        Ok(this)
    }

    /// The buffer group id receives select from.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// Bytes per buffer.
    pub fn buffer_bytes(&self) -> u32 {
        self.size
    }

    /// True when registered for incremental consumption.
    pub fn incremental(&self) -> bool {
        self.incremental
    }

    /// Hands the `len` bytes a receive wrote into buffer `bid` to `f`, then gives the buffer
    /// back to the kernel, unless (incremental mode) the kernel will write more into it
    /// (`buffer_more`), in which case the next receive starts after these bytes.
    pub(crate) fn consume(
        &mut self,
        bid: u16,
        len: usize,
        buffer_more: bool,
        f: impl FnOnce(&[u8]),
    ) {
        let bid = bid % self.count;
        let offset = if self.incremental {
            self.consumed.get(usize::from(bid)).copied().unwrap_or(0) as usize
        } else {
            0
        };
        let start = usize::from(bid) * self.size as usize + offset;
        let len = len.min((self.size as usize).saturating_sub(offset));
        f(self.memory.get(start..start + len).unwrap_or(&[]));
        if self.incremental && buffer_more {
            if let Some(c) = self.consumed.get_mut(usize::from(bid)) {
                *c += len as u32;
            }
            return;
        }
        if let Some(c) = self.consumed.get_mut(usize::from(bid)) {
            *c = 0;
        }
        self.push(bid);
        self.publish();
    }

    fn push(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.count - 1));
        let addr = self.memory.as_ptr() as u64 + u64::from(bid) * u64::from(self.size);
        // SAFETY: index < count, so the entry is inside the allocation; the kernel only reads
        // entries between its head and our published tail, and this one is past the tail.
        let entry = unsafe { &mut *self.entries.add(index) };
        entry.set_addr(addr);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: `entries` is the base of the registered ring; the tail field overlays the
        // first entry's reserved word and is only written by us, read by the kernel.
        unsafe {
            let tail = BufRingEntry::tail(self.entries).cast_mut();
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; see `new` for the drop order.
        unsafe { dealloc(self.entries.cast(), self.entries_layout) };
    }
}
