//! Lingering close. When the broker closes a connection with something still to say (a
//! DISCONNECT with a reason, a CONNACK refusal) while the client is still sending, a plain
//! `close()` over unread input makes the kernel reset the connection and throw away what
//! was not yet transmitted, so the client never reads the reason. As nginx's lingering close
//! does, the reactor instead sends what was queued, shuts its write side (FIN after the last
//! byte), then reads and discards the client's input until the client closes, for at most
//! `linger_close_ms` and `linger_close_bytes`, and only then closes the socket.
//!
//! The protocol side (`core::link::Link`) is gone as soon as lingering starts; only the
//! socket and its slot remain, counted among the shard's connections.

use std::time::Duration;

use bytes::BytesMut;
use net::uring::Completion;

use super::conn::{Linger, RecvState};
use super::{lookup, token, Shard, KIND_RECV};
use crate::ids::ConnId;

/// How long a lingering close may last once the broker is stopping.
const LINGER_WHILE_STOPPING: Duration = Duration::from_millis(250);

impl Shard {
    /// At the close of connection `id`: whether it should linger once its output is sent
    /// (something is still to be sent, and the client has not gone).
    pub(super) fn mark_linger(&mut self, id: ConnId) {
        let pending = !self.core.output_empty(id) || self.layers_pending(id);
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if conn.linger == Linger::No && !conn.peer_gone && (pending || conn.sending != 0) {
            conn.linger = Linger::Wanted;
        }
    }

    /// Starts lingering on a closing connection whose output is all sent. False when it
    /// does not linger (it can close at once).
    pub(super) fn start_linger(&mut self, id: ConnId) -> bool {
        let config = &self.core.config;
        let mut duration = Duration::from_millis(config.linger_close_ms);
        let budget = config.linger_close_bytes;
        if self.stopping_since.is_some() {
            duration = duration.min(LINGER_WHILE_STOPPING);
        }
        let until = self.core.now + duration;
        let Some(conn) = lookup(&mut self.conns, id) else {
            return false;
        };
        debug_assert_eq!(conn.linger, Linger::Wanted);
        debug_assert!(conn.idle(), "lingering starts with no operation in flight");
        let shut = match &conn.fd {
            Some(fd) if !conn.aborted && !conn.peer_gone && !duration.is_zero() && budget > 0 => {
                net::uring::shutdown_write(fd).is_ok()
            }
            _ => false,
        };
        if !shut {
            conn.linger = Linger::Done;
            return false;
        }
        let fd = conn.raw_fd();
        conn.linger = Linger::Active {
            until,
            left: budget,
        };
        conn.rbuf = BytesMut::new();
        conn.spare = None;
        conn.recv = RecvState::Multi;
        self.ring.recv_multi(fd, token(KIND_RECV, id));
        self.core.close_link(id);
        self.lingering.push(id);
        true
    }

    /// A receive completion on a lingering (or lingered) connection: the input is
    /// discarded; the client's close, an error, or the byte budget ends the linger.
    pub(super) fn on_linger_recv(&mut self, id: ConnId, c: &Completion) {
        self.ring.received(c, |_| {});
        let Some(conn) = lookup(&mut self.conns, id) else {
            return;
        };
        if !c.more() {
            conn.recv = RecvState::Idle;
        }
        if let Linger::Active { until, left } = conn.linger {
            let over = match c.result {
                n if n > 0 => {
                    let left = left.saturating_sub(n as usize);
                    conn.linger = Linger::Active { until, left };
                    left == 0
                }
                0 => true,
                e => !matches!(-e, libc::ENOBUFS | libc::EINTR | libc::EAGAIN),
            };
            if over {
                conn.linger = Linger::Done;
                if conn.recv != RecvState::Idle {
                    self.ring.cancel(token(KIND_RECV, id));
                }
            } else if conn.recv == RecvState::Idle {
                conn.recv = RecvState::Multi;
                let fd = conn.raw_fd();
                self.ring.recv_multi(fd, token(KIND_RECV, id));
            }
        }
        self.release_if_idle(id);
    }

    /// The broker is stopping: lingers started earlier last at most
    /// [`LINGER_WHILE_STOPPING`] more.
    pub(super) fn shorten_lingers(&mut self) {
        let until = self.core.now + LINGER_WHILE_STOPPING;
        for &id in &self.lingering {
            if let Some(conn) = lookup(&mut self.conns, id) {
                if let Linger::Active { until: u, left } = conn.linger {
                    conn.linger = Linger::Active {
                        until: u.min(until),
                        left,
                    };
                }
            }
        }
    }

    /// Ends the lingers past their deadline (each tick).
    pub(super) fn expire_lingers(&mut self) {
        if self.lingering.is_empty() {
            return;
        }
        let now = self.core.now;
        let mut list = std::mem::take(&mut self.lingering);
        let mut ended = Vec::new();
        list.retain(|&id| {
            let Some(conn) = lookup(&mut self.conns, id) else {
                return false;
            };
            match conn.linger {
                Linger::Active { until, .. } if until <= now => {
                    conn.linger = Linger::Done;
                    if conn.recv != RecvState::Idle {
                        self.ring.cancel(token(KIND_RECV, id));
                    }
                    ended.push(id);
                    false
                }
                Linger::Active { .. } => true,
                _ => false,
            }
        });
        self.lingering = list;
        for id in ended {
            self.release_if_idle(id);
        }
    }
}
