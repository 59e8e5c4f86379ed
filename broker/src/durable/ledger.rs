//! The ack ledger: PUBACK / PUBREC packets held until what their PUBLISH caused is durable
//! (records up to a position in the shard's store, and confirmations from the peers and sinks
//! the message went to), released in each connection's PUBLISH order [MQTT-4.6.0-2]; and the
//! confirmations this shard owes to peers that forwarded a message here. Backend-neutral: it
//! learns durability from the store's [`Landed`] reports.

use std::collections::VecDeque;

use net::codec::{PubResp, ReasonCode};
use rustc_hash::FxHashMap;
use storage::store::Landed;

use crate::ids::{ConnId, ShardId};

/// A PUBACK / PUBREC waiting for durability (or for an earlier one of its connection).
#[derive(Debug)]
struct Held {
    token: u64,
    packet: PubResp,
    /// Records appended up to here must be durable.
    mark: u64,
    /// Peers and sinks that have not confirmed yet.
    pending: usize,
}

/// What a landed batch or a confirmation released.
#[derive(Debug, Default)]
pub struct Released {
    /// Acknowledgements to send now.
    pub acks: Vec<(ConnId, PubResp)>,
    /// Peers to tell about their forwarded message: (origin, token, durable here).
    pub peer_acks: Vec<(ShardId, u64, bool)>,
}

/// Turns a held acknowledgement into a refusal: what it waited for could not be made durable.
fn refuse(packet: &mut PubResp) {
    packet.reason = ReasonCode::QUOTA_EXCEEDED;
}

/// Held acknowledgements and owed confirmations.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Records durable in the store (a position).
    durable: u64,
    held: FxHashMap<ConnId, VecDeque<Held>>,
    token_conn: FxHashMap<u64, ConnId>,
    /// Forwarded messages whose records here must be durable before the origin is told:
    /// (mark, origin, token).
    peer_waits: Vec<(u64, ShardId, u64)>,
    next_token: u64,
}

impl Ledger {
    /// A fresh token (tokens stay below 2^48: they travel in an `AckRef`).
    pub fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        debug_assert!(self.next_token < 1 << 48);
        self.next_token
    }

    /// Holds `packet` for `conn` until records up to `mark` are durable, `pending` peers or
    /// sinks confirmed `token`, and every earlier held ack of `conn` left. What can go now.
    pub fn hold(
        &mut self,
        token: u64,
        conn: ConnId,
        packet: PubResp,
        mark: u64,
        pending: usize,
    ) -> Vec<(ConnId, PubResp)> {
        if pending > 0 {
            self.token_conn.insert(token, conn);
        }
        self.held
            .entry(conn)
            .or_insert_with(|| VecDeque::with_capacity(16))
            .push_back(Held {
                token,
                packet,
                mark,
                pending,
            });
        let mut out = Vec::new();
        self.release(conn, &mut out);
        out
    }

    /// Records durable in the store so far (a position).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// True when `conn` has acks waiting (later answers must queue behind them).
    pub fn has_held(&self, conn: ConnId) -> bool {
        self.held.contains_key(&conn)
    }

    /// Acknowledgements held in all.
    pub fn held_len(&self) -> usize {
        self.held.values().map(VecDeque::len).sum()
    }

    fn release(&mut self, conn: ConnId, out: &mut Vec<(ConnId, PubResp)>) {
        let durable = self.durable;
        let Some(q) = self.held.get_mut(&conn) else {
            return;
        };
        while q
            .front()
            .is_some_and(|h| h.mark <= durable && h.pending == 0)
        {
            if let Some(h) = q.pop_front() {
                out.push((conn, h.packet));
            }
        }
        if q.is_empty() {
            self.held.remove(&conn);
        }
    }

    /// A peer or sink answered `token`: durable there (`ok`) or refused. What can go now.
    pub fn confirmed(&mut self, token: u64, ok: bool) -> Vec<(ConnId, PubResp)> {
        let mut out = Vec::new();
        let Some(&conn) = self.token_conn.get(&token) else {
            return out;
        };
        let mut done = false;
        if let Some(h) = self
            .held
            .get_mut(&conn)
            .and_then(|q| q.iter_mut().find(|h| h.token == token))
        {
            h.pending = h.pending.saturating_sub(1);
            if !ok {
                refuse(&mut h.packet);
                h.pending = 0;
            }
            done = h.pending == 0;
        }
        if done {
            self.token_conn.remove(&token);
        }
        self.release(conn, &mut out);
        out
    }

    /// The origin of a forwarded message (`token`) is told once records here up to `mark`
    /// are durable.
    pub fn wait_for_peer(&mut self, origin: ShardId, token: u64, mark: u64) {
        self.peer_waits.push((mark, origin, token));
    }

    /// The store landed a batch: release what it made durable, or refuse what waited for it.
    /// `released` comes back filled (give it back empty to reuse its allocation).
    pub fn landed(&mut self, landed: &Landed, mut released: Released) -> Released {
        released.acks.clear();
        released.peer_acks.clear();
        let failed = landed.failed.is_some();
        debug_assert!(landed.durable >= self.durable, "durability never goes back");
        self.durable = self.durable.max(landed.durable);
        let durable = self.durable;
        let acks = &mut released.acks;
        self.held.retain(|&conn, q| {
            if failed {
                for h in q.iter_mut().filter(|h| h.mark > durable) {
                    refuse(&mut h.packet);
                    h.mark = 0;
                }
            }
            while q
                .front()
                .is_some_and(|h| h.mark <= durable && h.pending == 0)
            {
                if let Some(h) = q.pop_front() {
                    acks.push((conn, h.packet));
                }
            }
            !q.is_empty()
        });
        self.peer_waits.retain(|&(mark, origin, token)| {
            if mark <= durable {
                released.peer_acks.push((origin, token, true));
                false
            } else if failed {
                released.peer_acks.push((origin, token, false));
                false
            } else {
                true
            }
        });
        released
    }
}
