//! The store's I/O on the shard's store ring (see `Shard::store_ring`): submitting the batches
//! the store asks for (durable writes, a socket store's sends and receives, wakes), taking its
//! completions without a system call, and the mid-pass look that releases a landed commit's
//! acknowledgements and starts the next commit.

use std::time::Instant;
use storage::store::{IoDone, IoRequest};

use super::{store_token, Shard};

/// Most store requests submitted after one completion: a send and a receive for each of up to
/// 256 Redis Cluster masters, and a wake.
const STORE_REQUESTS_MAX: usize = 2 * 256 + 1;
/// Submission entries of a shard's store ring (completion entries: twice as many), room for
/// the most a store asks at once ([`STORE_REQUESTS_MAX`]).
pub(super) const STORE_RING_ENTRIES: u32 = 1024;

impl Shard {
    /// Handles the completions the store ring has posted (see [`Shard::store_ring`]); true
    /// if there were any.
    pub(super) fn take_store_completions(&mut self) -> bool {
        self.store_ring.reap_posted();
        if !self.store_ring.has_completions() {
            return false;
        }
        let mut landed = self.store_ring.completions();
        for c in landed.drain(..) {
            self.on_completion(c);
        }
        self.store_ring.return_completions(landed);
        true
    }

    /// Mid-pass, in a long pass: takes the store's landed commit if there is one (its
    /// acknowledgements leave at once) and starts the next commit, so commits overlap the
    /// handling of a burst instead of following it. No system call unless something landed.
    pub(super) fn kick_store(&mut self) -> std::io::Result<()> {
        if !self.core.durable.persistent() {
            return Ok(());
        }
        self.core.now = Instant::now();
        if self.core.durable.committing() {
            if !self.take_store_completions() {
                return Ok(());
            }
            // The released acknowledgements go out now, not at the end of the pass.
            self.flush();
            self.ring.submit()?;
        }
        self.core.flush_acked();
        self.submit_store_io();
        Ok(())
    }

    /// Submits the I/O the store asks for (its next batch), if any; true if it did.
    pub(super) fn submit_store_io(&mut self) -> bool {
        let request = self.core.durable.next_io(self.core.now);
        let any = request.is_some();
        if let Some(request) = request {
            self.perform_store_io(request);
            self.continue_store_io();
        } else if self.store_ring_queued {
            // A failed submission is tried again every pass.
            self.submit_store_ring();
        }
        any
    }

    /// Submits the further I/O the store's batch out needs (a socket store's receive, the
    /// rest of a short send).
    pub(super) fn continue_store_io(&mut self) {
        // Bounded: a store asks for at most a send and a receive per connection at once.
        for _ in 0..STORE_REQUESTS_MAX {
            let Some(request) = self.core.durable.continue_io() else {
                break;
            };
            self.perform_store_io(request);
        }
        if self.store_ring_queued {
            self.submit_store_ring();
        }
    }

    /// Hands what is queued on the store ring to the kernel. What it did not take (a failure,
    /// or a partial submission when the kernel is short of memory) stays queued and every
    /// pass tries again (`submit_store_io`).
    fn submit_store_ring(&mut self) {
        match self.store_ring.submit() {
            // The kernel may take only some entries (short of memory): the rest next pass.
            Ok(()) => self.store_ring_queued = self.store_ring.has_unsubmitted(),
            Err(e) => {
                if !self.store_ring_failing {
                    tracing::error!(error = %e, "submitting the store's I/O failed; retried every pass");
                }
                self.store_ring_failing = true;
                return;
            }
        }
        self.store_ring_failing = false;
    }

    fn perform_store_io(&mut self, request: IoRequest) {
        self.store_ring_queued = true;
        // What the ring could not take fails at once, through the store's own path.
        let refused = match request {
            IoRequest::WriteAndSync {
                fd,
                buf,
                range,
                offset,
                write_op,
                sync_op,
            } => {
                let (write, sync) = (store_token(write_op), store_token(sync_op));
                match self
                    .store_ring
                    .write_and_sync(fd, buf, range, offset, write, sync)
                {
                    Ok(()) => Vec::new(),
                    Err(buf) => vec![
                        (write_op, -libc::EINVAL, Some(buf)),
                        (sync_op, -libc::ECANCELED, None),
                    ],
                }
            }
            IoRequest::Send { fd, buf, range, op } => {
                match self.store_ring.send_owned(fd, buf, range, store_token(op)) {
                    Ok(()) => Vec::new(),
                    Err(buf) => vec![(op, -libc::EINVAL, Some(buf))],
                }
            }
            IoRequest::Recv { fd, buf, range, op } => {
                match self.store_ring.recv_owned(fd, buf, range, store_token(op)) {
                    Ok(()) => Vec::new(),
                    Err(buf) => vec![(op, -libc::EINVAL, Some(buf))],
                }
            }
            IoRequest::Wake { op } => {
                self.store_ring.nop(store_token(op));
                Vec::new()
            }
            other => {
                tracing::error!(request = ?other, "store I/O of a kind this reactor cannot perform");
                Vec::new()
            }
        };
        if !refused.is_empty() {
            for (op, result, buf) in refused {
                self.core.store_io_done(IoDone { op, result, buf });
            }
            self.apply();
        }
    }
}
