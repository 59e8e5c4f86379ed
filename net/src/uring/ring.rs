//! The ring: setup, the operations a shard issues, and completions.

use std::io;
use std::os::fd::RawFd;
use std::time::Duration;

use bytes::BytesMut;
use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::bufring::BufRing;

/// Ring sizes, from the broker's config.
#[derive(Clone, Copy, Debug)]
pub struct RingConfig {
    /// Submission queue entries (a power of two).
    pub sq_entries: u32,
    /// Completion queue entries: room for every multishot receive's completions in one pass.
    pub cq_entries: u32,
    /// Provided receive buffers (a power of two, at most 32,768).
    pub recv_buffer_count: u16,
    /// Bytes per receive buffer.
    pub recv_buffer_bytes: u32,
}

/// One finished (or, for multishot operations, progressed) operation.
#[derive(Debug)]
pub struct Completion {
    /// The token the operation was issued with.
    pub token: u64,
    /// The kernel's result: bytes, an fd, or a negated errno.
    pub result: i32,
    /// CQE flags: see [`Completion::buffer_id`] and [`Completion::more`].
    pub flags: u32,
    /// For a send: the buffer it sent from, handed back for reuse.
    pub send_buf: Option<BytesMut>,
    /// For a file write: the buffer it wrote from, handed back.
    pub write_buf: Option<Vec<u8>>,
}

impl Completion {
    /// The provided buffer the kernel filled, for receives.
    pub fn buffer_id(&self) -> Option<u16> {
        cqueue::buffer_select(self.flags)
    }

    /// True while a multishot operation stays armed.
    pub fn more(&self) -> bool {
        cqueue::more(self.flags)
    }
}

/// Marks user data of sends, whose buffers this module holds.
const SEND_TAG: u64 = 1 << 63;
/// Marks user data of file writes, whose buffers this module holds.
const WRITE_TAG: u64 = 1 << 62;

/// A shard's io_uring and the buffers its operations use. Field order matters: the `IoUring`
/// is dropped (closing the ring and cancelling its operations) before any buffer.
pub struct Ring {
    ring: IoUring,
    bufs: BufRing,
    sends: Vec<Option<(u64, BytesMut)>>,
    free_sends: Vec<usize>,
    /// Durable writes and a store's socket operations in flight.
    writes: Vec<Option<DurableWrite>>,
    free_writes: Vec<usize>,
    eventfd_word: Box<u64>,
    eventfd_one: Box<u64>,
    timespec: Box<types::Timespec>,
    completions: Vec<Completion>,
}

impl std::fmt::Debug for Ring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring")
            .field(
                "sends_in_flight",
                &(self.sends.len() - self.free_sends.len()),
            )
            .finish()
    }
}

/// A durable write, or a store's socket send or receive, in flight: its token, its buffer
/// (owned by the kernel until it completes), for a durable write the token of the sync
/// completion synthesized after it and its length (a short write fails the sync).
#[derive(Debug)]
struct DurableWrite {
    token: u64,
    buf: Vec<u8>,
    sync_token: Option<u64>,
    len: u32,
}

/// `IORING_ENTER_GETEVENTS` (linux/io_uring.h; the crate keeps its `sys` module private).
const ENTER_GETEVENTS: u32 = 1;

impl Ring {
    /// Sets up a ring with COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN and registers its
    /// provided buffer ring as group 0. Must be used only from the thread that creates it.
    pub fn new(config: RingConfig) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_coop_taskrun()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_cqsize(config.cq_entries)
            .build(config.sq_entries)?;
        let bufs = BufRing::new(&ring, 0, config.recv_buffer_count, config.recv_buffer_bytes)?;
        Ok(Self::around(ring, bufs))
    }

    /// Sets up a ring for a store's I/O alone (durable writes, a store's socket operations):
    /// no deferred task work, so its completions are posted as they happen (an io-wq
    /// worker's directly) instead of waiting in the submitting thread's queue of deferred work
    /// behind a busy shard's receives, and [`Ring::register_eventfd`] is told at once.
    /// `entries` sizes both queues; no provided buffers worth the name (one of 64 bytes).
    pub fn new_store(entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_cqsize(entries.saturating_mul(2))
            .build(entries)?;
        let bufs = BufRing::new(&ring, 0, 1, 64)?;
        Ok(Self::around(ring, bufs))
    }

    /// Has the kernel add 1 to eventfd `fd` whenever it posts a completion to this ring (a
    /// store ring ringing its shard's doorbell, which the shard's own ring reads).
    pub fn register_eventfd(&self, fd: RawFd) -> io::Result<()> {
        self.ring.submitter().register_eventfd(fd)
    }

    /// True while operations are queued that the kernel has not taken yet (a submission
    /// that took only some of them leaves the rest).
    pub fn has_unsubmitted(&mut self) -> bool {
        !self.ring.submission().is_empty()
    }

    /// Gathers the completions already posted, without entering the kernel (for a ring
    /// without deferred task work: see [`Ring::new_store`]).
    pub fn reap_posted(&mut self) {
        self.gather();
    }

    fn around(ring: IoUring, bufs: BufRing) -> Self {
        Self {
            ring,
            bufs,
            sends: Vec::new(),
            free_sends: Vec::new(),
            writes: Vec::new(),
            free_writes: Vec::new(),
            eventfd_word: Box::new(0),
            eventfd_one: Box::new(1),
            timespec: Box::new(types::Timespec::new()),
            completions: Vec::new(),
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built here points only at memory that outlives the
            // operation: send buffers in `self.sends`, write and store socket buffers in
            // `self.writes`, the eventfd
            // words and the timespec in
            // boxes owned by `self`, receive buffers in `self.bufs`.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EBUSY) && e.raw_os_error() != Some(libc::EINTR) {
                    // Nothing better to do than try again; the kernel frees SQ space as it
                    // consumes entries.
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Multishot accept on a listening socket.
    pub fn accept_multi(&mut self, listener: RawFd, token: u64) {
        debug_assert_eq!(token & SEND_TAG, 0);
        let e = opcode::AcceptMulti::new(types::Fd(listener))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// One receive into a provided buffer.
    pub fn recv(&mut self, fd: RawFd, token: u64) {
        debug_assert_eq!(token & SEND_TAG, 0);
        let e = opcode::Recv::new(
            types::Fd(fd),
            std::ptr::null_mut(),
            self.bufs.buffer_bytes(),
        )
        .buf_group(self.bufs.group())
        .build()
        .flags(squeue::Flags::BUFFER_SELECT)
        .user_data(token);
        self.push(e);
    }

    /// Multishot receive into provided buffers; re-arm when a completion lacks `more`.
    pub fn recv_multi(&mut self, fd: RawFd, token: u64) {
        debug_assert_eq!(token & SEND_TAG, 0);
        let e = opcode::RecvMulti::new(types::Fd(fd), self.bufs.group())
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Sends `buf`; it comes back in the completion (`send_buf`). A short send is the
    /// caller's to finish.
    pub fn send(&mut self, fd: RawFd, buf: BytesMut, token: u64) {
        debug_assert_eq!(token & SEND_TAG, 0);
        let (ptr, len) = (buf.as_ptr(), buf.len() as u32);
        let slot = match self.free_sends.pop() {
            Some(slot) => slot,
            None => {
                self.sends.push(None);
                self.sends.len() - 1
            }
        };
        if let Some(s) = self.sends.get_mut(slot) {
            // The heap bytes behind `buf` do not move when the BytesMut value moves into the slab.
            *s = Some((token, buf));
        }
        let e = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(SEND_TAG | slot as u64);
        self.push(e);
    }

    /// Writes `buf[start..start + len]` to file `fd` at `offset` durably (one write with
    /// RWF_DSYNC: data and the metadata to find it are stable when it completes, as after an
    /// `fdatasync`). The write completes with `write_token` and hands `buf` back
    /// (`write_buf`); a second completion with `sync_token` follows it, 0 or -ECANCELED if the
    /// write failed or was short (what a linked fdatasync would give). For O_DIRECT files, `buf`, `start`, `len` and `offset` must
    /// be block aligned. Returns `buf` if the range is out of bounds.
    pub fn write_and_sync(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
        offset: u64,
        write_token: u64,
        sync_token: u64,
    ) -> Result<(), Vec<u8>> {
        debug_assert_eq!(write_token & (SEND_TAG | WRITE_TAG), 0);
        debug_assert_eq!(sync_token & (SEND_TAG | WRITE_TAG), 0);
        let Some(bytes) = buf.get(range) else {
            return Err(buf);
        };
        let (ptr, len) = (bytes.as_ptr(), bytes.len() as u32);
        let slot = self.owned_slot(DurableWrite {
            token: write_token,
            buf,
            sync_token: Some(sync_token),
            len,
        });
        // One write with RWF_DSYNC: durable when it completes (a FUA write or a cache flush,
        // and the size change on an extending write), with no linked fsync that would wait
        // for this thread to enter the kernel again before it starts.
        let write = opcode::Write::new(types::Fd(fd), ptr, len)
            .offset(offset)
            .rw_flags(libc::RWF_DSYNC)
            .build()
            .user_data(WRITE_TAG | slot as u64);
        self.push(write);
        Ok(())
    }

    fn owned_slot(&mut self, op: DurableWrite) -> usize {
        let slot = match self.free_writes.pop() {
            Some(slot) => slot,
            None => {
                self.writes.push(None);
                self.writes.len() - 1
            }
        };
        if let Some(s) = self.writes.get_mut(slot) {
            // The heap bytes behind the buffer do not move when the Vec moves into the slab.
            *s = Some(op);
        }
        slot
    }

    /// Sends `buf[range]` on socket `fd` (waiting for all of it; a short count only on an
    /// error or a closed peer); `buf` comes back in the completion (`write_buf`). Returns
    /// `buf` if the range is out of bounds.
    pub fn send_owned(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        range: std::ops::Range<usize>,
        token: u64,
    ) -> Result<(), Vec<u8>> {
        debug_assert_eq!(token & (SEND_TAG | WRITE_TAG), 0);
        let Some(bytes) = buf.get(range) else {
            return Err(buf);
        };
        let (ptr, len) = (bytes.as_ptr(), bytes.len() as u32);
        let slot = self.owned_slot(DurableWrite {
            token,
            buf,
            sync_token: None,
            len,
        });
        let e = opcode::Send::new(types::Fd(fd), ptr, len)
            .flags(libc::MSG_NOSIGNAL | libc::MSG_WAITALL)
            .build()
            .user_data(WRITE_TAG | slot as u64);
        self.push(e);
        Ok(())
    }

    /// Receives into `buf[range]` from socket `fd`; `buf` comes back in the completion
    /// (`write_buf`), the result is the bytes received. Returns `buf` if the range is out of
    /// bounds or empty.
    pub fn recv_owned(
        &mut self,
        fd: RawFd,
        mut buf: Vec<u8>,
        range: std::ops::Range<usize>,
        token: u64,
    ) -> Result<(), Vec<u8>> {
        debug_assert_eq!(token & (SEND_TAG | WRITE_TAG), 0);
        let Some(bytes) = buf.get_mut(range).filter(|b| !b.is_empty()) else {
            return Err(buf);
        };
        let (ptr, len) = (bytes.as_mut_ptr(), bytes.len() as u32);
        let slot = self.owned_slot(DurableWrite {
            token,
            buf,
            sync_token: None,
            len,
        });
        let e = opcode::Recv::new(types::Fd(fd), ptr, len)
            .build()
            .user_data(WRITE_TAG | slot as u64);
        self.push(e);
        Ok(())
    }

    /// An operation that completes at once with `token` (result 0).
    pub fn nop(&mut self, token: u64) {
        debug_assert_eq!(token & (SEND_TAG | WRITE_TAG), 0);
        self.push(opcode::Nop::new().build().user_data(token));
    }

    /// Reads an eventfd (one such read in flight per ring).
    pub fn read_eventfd(&mut self, fd: RawFd, token: u64) {
        let ptr: *mut u64 = &mut *self.eventfd_word;
        let e = opcode::Read::new(types::Fd(fd), ptr.cast(), 8)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Adds 1 to another shard's eventfd, as an operation of this ring (no extra syscall).
    pub fn write_eventfd(&mut self, fd: RawFd, token: u64) {
        let ptr: *const u64 = &*self.eventfd_one;
        let e = opcode::Write::new(types::Fd(fd), ptr.cast(), 8)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// A periodic timer firing every `period` until cancelled (one per ring).
    pub fn timer(&mut self, period: Duration, token: u64) {
        *self.timespec = types::Timespec::from(period);
        let ts: *const types::Timespec = &*self.timespec;
        let e = opcode::Timeout::new(ts)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(token);
        self.push(e);
    }

    /// Asks the kernel to cancel the operation issued with `token`.
    pub fn cancel(&mut self, token: u64) {
        let e = opcode::AsyncCancel::new(token)
            .build()
            .user_data(Self::CANCEL_TOKEN);
        self.push(e);
    }

    /// The token used by cancel requests' own completions (to be ignored).
    pub const CANCEL_TOKEN: u64 = !SEND_TAG;

    /// Submits everything queued and waits for at least `want` completions, then moves every
    /// ready completion into the list returned by [`Ring::completions`].
    pub fn submit_and_wait(&mut self, want: usize) -> io::Result<()> {
        let entered = self.ring.submit_and_wait(want);
        self.reap(entered)
    }

    /// Submits everything queued and gathers what has completed, without waiting (an enter
    /// with GETEVENTS and no minimum: it runs the deferred task work that posts completions).
    pub fn submit_and_reap(&mut self) -> io::Result<()> {
        let to_submit = self.ring.submission().len() as u32;
        // SAFETY: no argument is passed (`None`: a null pointer, which the kernel ignores
        // without IORING_ENTER_EXT_ARG), only counts and a flag.
        let entered = unsafe {
            self.ring
                .submitter()
                .enter::<libc::sigset_t>(to_submit, 0, ENTER_GETEVENTS, None)
        };
        self.reap(entered)
    }

    /// Submits everything queued without waiting and without reaping: operations start now,
    /// their completions are gathered by the next [`Ring::submit_and_wait`].
    pub fn submit(&mut self) -> io::Result<()> {
        match self.ring.submit() {
            Ok(_) => Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR) | Some(libc::EBUSY)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Like [`Ring::submit_and_wait`], but returns after `timeout` even with fewer than
    /// `want` completions: batching wake-ups at moderate load, at a latency cost bounded by
    /// `timeout`.
    pub fn submit_and_wait_batch(&mut self, want: usize, timeout: Duration) -> io::Result<()> {
        let ts = types::Timespec::from(timeout);
        let args = types::SubmitArgs::new().timespec(&ts);
        let entered = self.ring.submitter().submit_with_args(want, &args);
        self.reap(entered)
    }

    fn reap(&mut self, entered: io::Result<usize>) -> io::Result<()> {
        match entered {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR) | Some(libc::EBUSY) | Some(libc::ETIME)
                ) => {}
            Err(e) => return Err(e),
        }
        self.gather();
        Ok(())
    }

    /// Moves the posted completions into `completions`.
    fn gather(&mut self) {
        let mut cq = self.ring.completion();
        cq.sync();
        for cqe in &mut cq {
            let data = cqe.user_data();
            let (token, send_buf, write_buf) = if data & SEND_TAG != 0 {
                let slot = (data & !SEND_TAG) as usize;
                match self.sends.get_mut(slot).and_then(Option::take) {
                    Some((token, buf)) => {
                        self.free_sends.push(slot);
                        (token, Some(buf), None)
                    }
                    None => continue,
                }
            } else if data & WRITE_TAG != 0 {
                let slot = (data & !WRITE_TAG) as usize;
                match self.writes.get_mut(slot).and_then(Option::take) {
                    Some(DurableWrite {
                        token,
                        buf,
                        sync_token,
                        len,
                    }) => {
                        self.free_writes.push(slot);
                        self.completions.push(Completion {
                            token,
                            result: cqe.result(),
                            flags: cqe.flags(),
                            send_buf: None,
                            write_buf: Some(buf),
                        });
                        // A durable write's sync completion, as a linked fsync would give
                        // it: done with the write, cancelled by a failed or short one.
                        if let Some(sync_token) = sync_token {
                            let whole = u32::try_from(cqe.result()).is_ok_and(|n| n == len);
                            self.completions.push(Completion {
                                token: sync_token,
                                result: if whole { 0 } else { -libc::ECANCELED },
                                flags: 0,
                                send_buf: None,
                                write_buf: None,
                            });
                        }
                        continue;
                    }
                    None => continue,
                }
            } else {
                (data, None, None)
            };
            self.completions.push(Completion {
                token,
                result: cqe.result(),
                flags: cqe.flags(),
                send_buf,
                write_buf,
            });
        }
    }

    /// Takes the completions gathered by the last [`Ring::submit_and_wait`]; give the vector
    /// back with [`Ring::return_completions`] to reuse its allocation.
    pub fn completions(&mut self) -> Vec<Completion> {
        std::mem::take(&mut self.completions)
    }

    /// True when completions were gathered and not taken yet (the next pass must not wait).
    pub fn has_completions(&self) -> bool {
        !self.completions.is_empty()
    }

    /// Moves the gathered completions `pick` selects into `out` (the others stay, in order,
    /// for [`Ring::completions`]).
    pub fn take_completions(
        &mut self,
        pick: impl Fn(&Completion) -> bool,
        out: &mut Vec<Completion>,
    ) {
        out.extend(self.completions.extract_if(.., |c| pick(c)));
    }

    /// Returns an emptied completion vector for reuse (completions gathered meanwhile move
    /// into it, in order).
    pub fn return_completions(&mut self, mut v: Vec<Completion>) {
        v.clear();
        v.append(&mut self.completions);
        self.completions = v;
    }

    /// For a receive completion: hands the received bytes (if any) to `f` and returns the
    /// provided buffer to the kernel when it is done with. Call once per receive completion.
    pub fn received(&mut self, c: &Completion, f: impl FnOnce(&[u8])) {
        let Some(bid) = c.buffer_id() else { return };
        let len = usize::try_from(c.result).unwrap_or(0);
        self.bufs.consume(bid, len, cqueue::buffer_more(c.flags), f);
    }

    /// True when receive buffers are consumed incrementally (kernel 6.12+).
    pub fn incremental_buffers(&self) -> bool {
        self.bufs.incremental()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_sets_up_with_provided_buffers() {
        let ring = Ring::new(RingConfig {
            sq_entries: 64,
            cq_entries: 256,
            recv_buffer_count: 16,
            recv_buffer_bytes: 4096,
        })
        .unwrap();
        // Kernels from 6.12 consume provided buffers incrementally; older ones fall back.
        eprintln!("incremental buffers: {}", ring.incremental_buffers());
    }
}
