//! Applying the core's effects, in order: closing, pausing, resuming and aborting a
//! connection, handing one over to its home shard, pushing to a peer.

use super::conn::RecvState;
use super::{lookup, token, Shard, KIND_RECV, KIND_SEND};
use crate::core::Effect;

impl Shard {
    /// Performs what the core asked for, in order.
    pub(super) fn apply(&mut self) {
        while let Some(effect) = self.core.effects.pop_front() {
            match effect {
                Effect::Peer(peer, msg) => self.send_to_peer(peer, msg),
                Effect::Close(id) => {
                    self.mark_linger(id);
                    let Some(conn) = lookup(&mut self.conns, id) else {
                        continue;
                    };
                    conn.closing = true;
                    if conn.recv != RecvState::Idle {
                        self.ring.cancel(token(KIND_RECV, id));
                    }
                }
                Effect::Pause(id) => {
                    let Some(conn) = lookup(&mut self.conns, id) else {
                        continue;
                    };
                    // Decoding stops; the armed receive is cancelled only once the read
                    // buffer holds more than a little (`after_recv`), so a short pause costs
                    // no ring operation.
                    conn.held = true;
                }
                Effect::Resume(id) => {
                    // Read again in the loop (not here: this may run inside another
                    // connection's packet).
                    if let Some(conn) = lookup(&mut self.conns, id) {
                        conn.held = false;
                        if !self.stalled.contains(&id) {
                            self.stalled.push(id);
                        }
                    }
                }
                Effect::Abort(id) => {
                    let Some(conn) = lookup(&mut self.conns, id) else {
                        continue;
                    };
                    conn.closing = true;
                    conn.aborted = true;
                    if conn.recv != RecvState::Idle {
                        self.ring.cancel(token(KIND_RECV, id));
                    }
                    if conn.sending != 0 {
                        self.ring.cancel(token(KIND_SEND, id));
                    }
                }
                Effect::Handoff {
                    conn: id,
                    home,
                    connect,
                } => self.hand_over(id, home, connect),
            }
        }
    }
}
