//! The ack ledger: PUBACK / PUBREC packets held until what their PUBLISH caused is durable
//! (records up to a position in the shard's store, and confirmations from the peers and sinks
//! the message went to), released in each connection's PUBLISH order [MQTT-4.6.0-2]; and the
//! confirmations this shard owes to peers that forwarded a message here. Backend-neutral: it
//! learns durability from the store's [`Landed`] reports.

use std::collections::hash_map::Entry;
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

/// An ack in the durability queue.
#[derive(Debug)]
struct Waiting {
    /// Released once records up to here are durable (never below the entry before it).
    mark: u64,
    /// Its own publish's mark (below `mark` when raised to keep its place).
    own: u64,
    conn: ConnId,
    packet: PubResp,
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

/// Emptied per-connection queues kept for reuse.
const SPARE_QUEUES: usize = 1024;
/// A queue that grew past this many acks is freed when it empties, not kept.
const SPARE_CAPACITY: usize = 64;

/// Connection slots below this use the durability queue (its per-slot counts are a vector
/// indexed by slot); others (a source's lanes, `u32::MAX - 255` and up) queue per connection.
const WAITING_SLOTS: usize = 1 << 24;

/// Held acknowledgements and owed confirmations.
///
/// An acknowledgement that waits for durability alone (no peer or sink) goes to the durability queue:
/// one queue for the whole shard in hold order, its marks never decreasing (a mark below
/// the durability queue's last is raised to it), released from the front as landings make its marks
/// durable: no per-connection queue to find or keep for the common case of `sync`. One that
/// waits for a confirmation goes to its connection's queue in `held`, and so does every later
/// one of that connection while the queue lasts. Order per connection [MQTT-4.6.0-2]: an
/// entry of a connection with entries in the durability queue is queued with a mark no lower than the
/// queue's last, so it cannot leave before them (the durability queue is released first at a landing, and
/// nothing leaves on a confirmation before its mark is durable).
#[derive(Debug, Default)]
pub struct Ledger {
    /// Records durable in the store (a position).
    durable: u64,
    /// Acks waiting for durability alone, in hold order; marks
    /// never decrease.
    waiting: VecDeque<Waiting>,
    /// Entries in the durability queue per connection slot (a slot reused while the durability queue still holds its
    /// previous connection's acks counts those too: the new connection's answers then wait
    /// behind them, which delays and never reorders).
    waiting_count: Vec<u32>,
    /// Per connection with acks held for confirmations: its queue, never empty.
    held: FxHashMap<ConnId, VecDeque<Held>>,
    /// Emptied queues kept for reuse by any connection (at most [`SPARE_QUEUES`], each of at
    /// most [`SPARE_CAPACITY`] acks): queues empty as landings and confirmations release them
    /// and are needed again with the next held ack.
    spare: Vec<VecDeque<Held>>,
    token_conn: FxHashMap<u64, ConnId>,
    /// Forwarded messages whose records here must be durable before the origin is told:
    /// (mark, origin, token).
    peer_waits: Vec<(u64, ShardId, u64)>,
    /// Forwarded messages whose copies this shard sent on to sinks (for sessions that moved
    /// away from it meanwhile), by the token those copies carry: the origin is told once
    /// every copy is confirmed and the records here are durable.
    relays: FxHashMap<u64, Relay>,
    /// Origins to tell now (a relay refused, or done with its records durable): taken by
    /// [`Ledger::take_told`].
    told: Vec<(ShardId, u64, bool)>,
    next_token: u64,
}

/// A forwarded message whose copies went on to sinks: who to tell, and what it waits for.
#[derive(Debug)]
struct Relay {
    origin: ShardId,
    token: u64,
    /// Records appended up to here must be durable.
    mark: u64,
    /// Sink copies not confirmed yet.
    pending: usize,
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
        let queued = !self.held.is_empty() && self.held.contains_key(&conn);
        let in_waiting = self.waiting_len(conn) > 0;
        let waiting_last = self.waiting.back().map_or(0, |w| w.mark);
        if pending == 0 && !queued {
            if !in_waiting && mark <= self.durable {
                return vec![(conn, packet)];
            }
            if (conn.slot as usize) < WAITING_SLOTS {
                self.push_waiting(mark.max(waiting_last), mark, conn, packet);
                return Vec::new();
            }
        }
        if pending > 0 {
            self.token_conn.insert(token, conn);
        }
        // Behind this connection's acks in the durability queue.
        let mark = if in_waiting {
            mark.max(waiting_last)
        } else {
            mark
        };
        let held = Held {
            token,
            packet,
            mark,
            pending,
        };
        let durable = self.durable;
        let ready = |h: &Held| h.mark <= durable && h.pending == 0;
        let mut out = Vec::new();
        match self.held.entry(conn) {
            Entry::Vacant(slot) => {
                if ready(&held) {
                    out.push((conn, held.packet));
                } else {
                    let mut q = self
                        .spare
                        .pop()
                        .unwrap_or_else(|| VecDeque::with_capacity(16));
                    q.push_back(held);
                    slot.insert(q);
                }
            }
            Entry::Occupied(mut slot) => {
                let q = slot.get_mut();
                q.push_back(held);
                while q.front().is_some_and(ready) {
                    if let Some(h) = q.pop_front() {
                        out.push((conn, h.packet));
                    }
                }
                if q.is_empty() {
                    let q = slot.remove();
                    self.keep_spare(q);
                }
            }
        }
        out
    }

    /// Acks of `conn`'s slot in the durability queue.
    fn waiting_len(&self, conn: ConnId) -> u32 {
        self.waiting_count
            .get(conn.slot as usize)
            .copied()
            .unwrap_or(0)
    }

    fn push_waiting(&mut self, mark: u64, own: u64, conn: ConnId, packet: PubResp) {
        debug_assert!(
            (conn.slot as usize) < WAITING_SLOTS,
            "a slot the counts cover"
        );
        debug_assert!(
            self.waiting.back().is_none_or(|w| w.mark <= mark),
            "the durability queue's marks never decrease"
        );
        let slot = conn.slot as usize;
        if self.waiting_count.len() <= slot {
            self.waiting_count.resize(slot + 1, 0);
        }
        if let Some(n) = self.waiting_count.get_mut(slot) {
            *n += 1;
        }
        self.waiting.push_back(Waiting {
            mark,
            own,
            conn,
            packet,
        });
    }

    /// Releases the durability queue's front up to what is durable (refused instead: those a failed
    /// landing lost, `failed`), in order.
    fn release_waiting(&mut self, failed: bool, out: &mut Vec<(ConnId, PubResp)>) {
        let durable = self.durable;
        while self
            .waiting
            .front()
            .is_some_and(|w| w.mark <= durable || failed)
        {
            let Some(Waiting {
                own,
                conn,
                mut packet,
                ..
            }) = self.waiting.pop_front()
            else {
                break;
            };
            // Refused only if its own records were lost: one whose mark was raised to keep
            // its place behind others leaves as acknowledged.
            if own > durable {
                refuse(&mut packet);
            }
            if let Some(n) = self.waiting_count.get_mut(conn.slot as usize) {
                debug_assert!(*n > 0, "an entry of the durability queue is counted");
                *n = n.saturating_sub(1);
            }
            out.push((conn, packet));
        }
    }

    /// Keeps an emptied queue for reuse, within [`SPARE_QUEUES`].
    fn keep_spare(&mut self, q: VecDeque<Held>) {
        debug_assert!(q.is_empty());
        if self.spare.len() < SPARE_QUEUES && q.capacity() <= SPARE_CAPACITY {
            self.spare.push(q);
        }
    }

    /// Records durable in the store so far (a position).
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// True when `conn` has acks waiting (later answers must queue behind them).
    pub fn has_held(&self, conn: ConnId) -> bool {
        self.waiting_len(conn) > 0 || !self.held.is_empty() && self.held.contains_key(&conn)
    }

    /// Acknowledgements held in all.
    pub fn held_len(&self) -> usize {
        self.waiting.len() + self.held.values().map(VecDeque::len).sum::<usize>()
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
            if let Some(q) = self.held.remove(&conn) {
                self.keep_spare(q);
            }
        }
    }

    /// A peer or sink answered `token`: durable there (`ok`) or refused. What can go now
    /// (an origin a relay owes is told through [`Ledger::take_told`]).
    pub fn confirmed(&mut self, token: u64, ok: bool) -> Vec<(ConnId, PubResp)> {
        let mut out = Vec::new();
        if let Some(relay) = self.relays.get_mut(&token) {
            relay.pending = relay.pending.saturating_sub(1);
            if ok && relay.pending > 0 {
                return out;
            }
            if let Some(r) = self.relays.remove(&token) {
                if !ok || r.mark <= self.durable {
                    self.told.push((r.origin, r.token, ok));
                } else {
                    self.peer_waits.push((r.mark, r.origin, r.token));
                }
            }
            return out;
        }
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

    /// The origin of a forwarded message (`origin_token`) is told once `pending` sinks
    /// confirmed `token` (the copies this shard sent on) and records here up to `mark` are
    /// durable; refused at the first refusal.
    pub fn relay(
        &mut self,
        token: u64,
        origin: ShardId,
        origin_token: u64,
        mark: u64,
        pending: usize,
    ) {
        debug_assert!(pending > 0, "a relay waits for a sink");
        self.relays.insert(
            token,
            Relay {
                origin,
                token: origin_token,
                mark,
                pending,
            },
        );
    }

    /// Origins to tell now: (origin, token, durable here).
    pub fn take_told(&mut self) -> Vec<(ShardId, u64, bool)> {
        std::mem::take(&mut self.told)
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
        // The durability queue first: a connection's queued acks come after its entries in the durability queue.
        self.release_waiting(failed, &mut released.acks);
        let acks = &mut released.acks;
        let spare = &mut self.spare;
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
            if q.is_empty() && spare.len() < SPARE_QUEUES && q.capacity() <= SPARE_CAPACITY {
                // The emptied queue's allocation is kept; the map drops the empty one left.
                spare.push(std::mem::take(q));
            }
            !q.is_empty()
        });
        if failed {
            // A relay whose records were in the failed batch: refused now (its copies'
            // confirmations, when they come, find no relay).
            let told = &mut released.peer_acks;
            self.relays.retain(|_, r| {
                let lost = r.mark > durable;
                if lost {
                    told.push((r.origin, r.token, false));
                }
                !lost
            });
        }
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use net::codec::{PacketId, PubRespKind};

    fn conn(slot: u32) -> ConnId {
        ConnId {
            slot,
            generation: 0,
        }
    }

    fn ack(id: u16) -> PubResp {
        PubResp::new(PubRespKind::PubAck, PacketId::new(id).unwrap())
    }

    fn ids(out: &[(ConnId, PubResp)]) -> Vec<(u32, u16)> {
        out.iter()
            .map(|(c, p)| (c.slot, p.packet_id.get()))
            .collect()
    }

    fn landed(ledger: &mut Ledger, durable: u64, failed: bool) -> Released {
        let landed = Landed {
            durable,
            failed: failed.then(|| std::io::Error::other("disk")),
            maintenance: None,
        };
        ledger.landed(&landed, Released::default())
    }

    /// Acks leave when their records are durable, in each connection's order, however the
    /// landings and peer confirmations interleave; queues emptied by one landing are reused
    /// by the next holds.
    #[test]
    fn acks_leave_durable_and_in_order_per_connection() {
        let mut l = Ledger::default();
        for round in 0..3u64 {
            let base = round * 100;
            assert!(l.hold(1, conn(1), ack(1), base + 10, 0).is_empty());
            assert!(l.hold(2, conn(2), ack(1), base + 20, 0).is_empty());
            // Behind the held one although nothing waits for it (in the durability queue, at its mark).
            assert!(l.hold(3, conn(1), ack(2), 0, 0).is_empty());
            let t = l.next_token();
            assert!(l.hold(t, conn(1), ack(3), base + 5, 1).is_empty());
            assert_eq!(l.held_len(), 4);
            let r = landed(&mut l, base + 15, false);
            assert_eq!(ids(&r.acks), vec![(1, 1)]);
            assert!(l.has_held(conn(1)) && l.has_held(conn(2)));
            assert!(
                l.confirmed(t, true).is_empty(),
                "queued behind its connection's acks in the durability queue"
            );
            let r = landed(&mut l, base + 20, false);
            assert_eq!(ids(&r.acks), vec![(2, 1), (1, 2), (1, 3)]);
            assert!(!l.has_held(conn(1)) && !l.has_held(conn(2)));
            assert_eq!(l.held_len(), 0);
            // Durable already and nothing ahead of it: at once.
            assert_eq!(ids(&l.hold(9, conn(3), ack(7), base + 20, 0)), vec![(3, 7)]);
            assert!(!l.has_held(conn(3)));
            // Waiting for a confirmation: the connection's later acks queue behind it.
            let t = l.next_token();
            assert!(l.hold(t, conn(4), ack(1), 0, 1).is_empty());
            assert!(l.hold(11, conn(4), ack(2), 0, 0).is_empty());
            assert!(l.has_held(conn(4)));
            assert_eq!(ids(&l.confirmed(t, true)), vec![(4, 1), (4, 2)]);
            assert!(!l.has_held(conn(4)));
            assert!(l.spare.len() <= 2);
        }
    }

    /// Random holds, landings (some failing) and confirmations: every connection's acks leave
    /// in the order they were held, none leaves (unrefused) before its records are durable
    /// and its confirmations came, and all leave once everything is durable and confirmed.
    #[test]
    fn acks_leave_in_order_and_only_when_ready_whatever_the_interleaving() {
        use std::collections::BTreeMap;
        type Facts = BTreeMap<u16, (u32, u64, Option<u64>)>;
        fn check(
            out: Vec<(ConnId, PubResp)>,
            l: &Ledger,
            facts: &Facts,
            confirmed: &BTreeMap<u64, bool>,
            left: &mut BTreeMap<u32, Vec<u16>>,
        ) {
            for (c, p) in out {
                let pid = p.packet_id.get();
                let (conn, mark, token) = facts[&pid];
                assert_eq!(conn, c.slot);
                if p.reason.0 < 0x80 {
                    assert!(mark <= l.durable, "left before it was durable");
                    assert!(token.is_none_or(|t| confirmed.get(&t) == Some(&true)));
                }
                left.entry(conn).or_default().push(pid);
            }
        }
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..50 {
            let mut l = Ledger::default();
            let mut appended = 0u64;
            let mut id = 0u16;
            // Per packet id: (connection, mark, token waiting for a confirmation).
            let mut facts = Facts::new();
            let mut confirmed: BTreeMap<u64, bool> = BTreeMap::new();
            let mut held_order: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
            let mut left: BTreeMap<u32, Vec<u16>> = BTreeMap::new();
            let mut outstanding: Vec<u64> = Vec::new();
            for _ in 0..400 {
                let r = next();
                match r % 10 {
                    0..=5 => {
                        id += 1;
                        // Three client connections and a source's lane (a slot near the top).
                        let c = match (r >> 8) as u32 % 4 {
                            3 => u32::MAX - 3,
                            c => c,
                        };
                        if r >> 16 & 3 != 0 {
                            appended += 1 + (r >> 20) % 5;
                        }
                        let mark = if r >> 24 & 3 == 0 { 0 } else { appended };
                        let token = l.next_token();
                        let pending = usize::from(r >> 28 & 3 == 0);
                        if pending > 0 {
                            outstanding.push(token);
                        }
                        facts.insert(id, (c, mark, (pending > 0).then_some(token)));
                        held_order.entry(c).or_default().push(id);
                        let out = l.hold(token, conn(c), ack(id), mark, pending);
                        check(out, &l, &facts, &confirmed, &mut left);
                    }
                    6..=7 => {
                        let to = l.durable + (r >> 8) % (appended - l.durable + 1);
                        let failed = (r >> 16) % 13 == 0;
                        let out = landed(&mut l, to, failed).acks;
                        check(out, &l, &facts, &confirmed, &mut left);
                    }
                    _ => {
                        if !outstanding.is_empty() {
                            let i = (r >> 8) as usize % outstanding.len();
                            let t = outstanding.swap_remove(i);
                            let ok = (r >> 16) % 7 != 0;
                            confirmed.insert(t, ok);
                            let out = l.confirmed(t, ok);
                            check(out, &l, &facts, &confirmed, &mut left);
                        }
                    }
                }
            }
            for t in std::mem::take(&mut outstanding) {
                confirmed.insert(t, true);
                let out = l.confirmed(t, true);
                check(out, &l, &facts, &confirmed, &mut left);
            }
            let out = landed(&mut l, appended, false).acks;
            check(out, &l, &facts, &confirmed, &mut left);
            assert_eq!(l.held_len(), 0);
            assert_eq!(
                left, held_order,
                "every ack left, in its connection's order"
            );
        }
    }

    /// A relay tells its origin once every copy it sent on is confirmed and its records are
    /// durable (either may come last); at once at a refusal.
    #[test]
    fn a_relay_tells_its_origin_once_its_copies_are_confirmed_and_its_records_durable() {
        let origin = ShardId(1);
        let mut l = Ledger::default();
        // Records after the copies' confirmations.
        l.relay(7, origin, 70, 10, 2);
        assert!(l.confirmed(7, true).is_empty());
        assert!(l.take_told().is_empty());
        assert!(l.confirmed(7, true).is_empty());
        assert!(l.take_told().is_empty(), "its records are not durable yet");
        let r = landed(&mut l, 10, false);
        assert_eq!(r.peer_acks, vec![(origin, 70, true)]);
        // Confirmations after the records: told by the last one.
        l.relay(8, origin, 80, 10, 1);
        assert!(l.confirmed(8, true).is_empty());
        assert_eq!(l.take_told(), vec![(origin, 80, true)]);
        // Refused at the first refusal; a later confirmation of the token is ignored.
        l.relay(9, origin, 90, 0, 2);
        assert!(l.confirmed(9, false).is_empty());
        assert_eq!(l.take_told(), vec![(origin, 90, false)]);
        assert!(l.confirmed(9, true).is_empty());
        assert!(l.take_told().is_empty());
        assert!(l.relays.is_empty() && l.peer_waits.is_empty());
        // Its records in a batch that failed: refused then, whatever its copies say after.
        l.relay(10, origin, 100, 30, 1);
        let r = landed(&mut l, 20, true);
        assert_eq!(r.peer_acks, vec![(origin, 100, false)]);
        assert!(l.confirmed(10, true).is_empty());
        assert!(l.take_told().is_empty());
    }

    #[test]
    fn a_failed_landing_refuses_what_waited_for_it_in_order() {
        let mut l = Ledger::default();
        assert!(l.hold(1, conn(1), ack(1), 10, 0).is_empty());
        assert!(l.hold(2, conn(1), ack(2), 30, 0).is_empty());
        let r = landed(&mut l, 10, true);
        let reasons: Vec<u8> = r.acks.iter().map(|(_, p)| p.reason.0).collect();
        assert_eq!(ids(&r.acks), vec![(1, 1), (1, 2)]);
        assert_eq!(reasons, vec![0, ReasonCode::QUOTA_EXCEEDED.0]);
        assert_eq!(l.held_len(), 0);
    }
}
