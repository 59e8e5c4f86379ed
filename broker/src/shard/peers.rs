//! The reactor's side of the mesh: pushing to peers (and pausing input while a queue is
//! full), draining what peers sent (adopting handed-over connections), waking peers.

use super::{lookup, token, Shard, KIND_DOORBELL_WRITE, NO_CONN};
use crate::core::peer::ShardMsg;
use crate::ids::ShardId;

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
}
