//! The reactor's side of the mesh and of the store: pushing to peers (and pausing input while
//! a queue is full), draining what peers sent (adopting handed-over connections), waking
//! peers, and performing the I/O the store asks for.

use std::time::Instant;
use storage::store::{IoDone, IoRequest};

use super::{lookup, store_token, token, Shard, KIND_DOORBELL_WRITE, NO_CONN};
use crate::core::peer::ShardMsg;
use crate::ids::ShardId;

/// Most store requests submitted after one completion: a send and a receive for each of up to
/// 256 Redis Cluster masters, and a wake.
const STORE_REQUESTS_MAX: usize = 2 * 256 + 1;
/// Submission entries of a shard's store ring (completion entries: twice as many), room for
/// the most a store asks at once ([`STORE_REQUESTS_MAX`]).
pub(super) const STORE_RING_ENTRIES: u32 = 1024;

impl Shard {
    pub(super) fn send_to_peer(&mut self, peer: ShardId, msg: ShardMsg) {
        if !self.blocked.is_empty() {
            self.blocked.push_back((peer, msg));
            return;
        }
        if let Err(msg) = self.mesh.push(peer, msg) {
            tracing::debug!(
                shard = self.core.id.0,
                peer = peer.0,
                "peer queue full: pausing input"
            );
            self.blocked.push_back((peer, msg));
        }
    }

    /// Input waits while a peer queue or a sink is full.
    pub(super) fn paused(&self) -> bool {
        !self.blocked.is_empty() || self.core.input_paused()
    }

    pub(super) fn retry_blocked(&mut self) {
        while let Some((peer, msg)) = self.blocked.pop_front() {
            if let Err(msg) = self.mesh.push(peer, msg) {
                self.blocked.push_front((peer, msg));
                return;
            }
        }
        if self.core.input_paused() {
            return;
        }
        // Unblocked: resume the connections that stopped mid-buffer.
        let stalled = std::mem::take(&mut self.stalled);
        for id in stalled {
            if let Some(conn) = lookup(&mut self.conns, id) {
                conn.recv_paused = false;
            }
            self.process_input(id);
            self.after_recv(id);
        }
    }

    pub(super) fn drain_mesh(&mut self) {
        let budget = self.core.config.peer_drain_count_max;
        let mut inbox = std::mem::take(&mut self.inbox);
        self.mesh.drain(budget, |from, msg| inbox.push((from, msg)));
        for (from, msg) in inbox.drain(..) {
            match msg {
                ShardMsg::Adopt {
                    fd,
                    connect,
                    rest,
                    transport,
                } => {
                    // The limit holds for connections handed over too, not only at accept.
                    let full = self.conn_count >= self.core.config.connections_per_shard_max;
                    let id = self.add_conn(fd);
                    let (mut pending, mut ended) = (false, false);
                    if let Some(conn) = lookup(&mut self.conns, id) {
                        conn.rbuf = rest;
                        pending = transport.as_deref().is_some_and(|t| t.has_output());
                        ended = transport.as_deref().is_some_and(|t| t.peer_closed());
                        conn.transport = transport;
                    }
                    self.core.adopt(id, connect, full);
                    if pending {
                        // What the layers still had to say (a TLS session ticket) goes first.
                        self.core.mark_dirty(id);
                    }
                    self.apply();
                    if full {
                        self.flush();
                        continue;
                    }
                    self.process_input(id);
                    // (A CONNECT waiting for its claim: its end is found again once it is
                    // read, a receive re-armed then.)
                    if ended && !self.core.claiming(id) {
                        // The peer's close came with its CONNECT.
                        self.core.close(id, None, "peer closed the connection");
                        self.apply();
                    }
                    self.after_recv(id);
                }
                msg => {
                    self.core.on_peer(from, msg);
                    self.apply();
                }
            }
        }
        self.inbox = inbox;
    }

    pub(super) fn wake_peers(&mut self) {
        let mut wakes = std::mem::take(&mut self.wakes);
        self.mesh.take_wakes(&mut wakes);
        for fd in wakes.drain(..) {
            self.ring
                .write_eventfd(fd, token(KIND_DOORBELL_WRITE, NO_CONN));
        }
        self.wakes = wakes;
    }

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
