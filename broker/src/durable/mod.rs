//! Durability on a shard: the store records go to (any [`Store`]: the embedded log, memory,
//! later Redis) and the [`ledger::Ledger`] of acknowledgements waiting for it. Exists in every
//! durability mode; in `memory` the store is durable at once and acks never wait.
//!
//! # Layout
//! - `mod.rs`: [`Durable`], the store handle and the ack policy of the mode.
//! - `ledger.rs`: held acknowledgements and the confirmations owed to peers.
//! - `recover.rs`: opening every shard's store at start, replaying it, merging retained
//!   messages and routes across shards.
//! - `reshard.rs`: rewriting a data directory written with another shard count, crash-safe.

pub mod ledger;
pub mod recover;
pub mod recover_redis;
pub mod reshard;

use std::time::Instant;

use net::codec::PubResp;
use storage::compact::MessageRef;
use storage::record::Record;
use storage::store::{IoDone, IoRequest, Store};

use crate::ids::{ConnId, ShardId};
use crate::session::{Journal, Message};
use ledger::{Ledger, Released};

/// The shard's store and the acknowledgements waiting for it.
#[derive(Debug)]
pub struct Durable {
    store: Box<dyn Store>,
    ledger: Ledger,
    /// Acks wait for the store (`sync` mode).
    holds_acks: bool,
    /// Records the store refused to take (logged once per streak).
    append_failing: bool,
    /// The last batch failed (logged once per streak).
    write_failing: bool,
    /// The last message id given (ids order every session's queue; above every recovered
    /// sequence number).
    last_id: u64,
    /// With `redis_shared`: the low 16 bits of every id given here (this broker's tag), so
    /// a broker still writing to a session another one just claimed never reuses one of the
    /// new owner's ids.
    id_tag: Option<u16>,
    /// The id of the last `Message` record appended: a later recipient of the same routing
    /// is written as a `Ref` to it (ids are unique per routing, so an older id never matches).
    body_written: u64,
    /// Scratch for a message's encoded properties.
    properties: Vec<u8>,
    /// The commit in flight: when it was submitted, its bytes, records durable before it.
    commit: Option<(Instant, u64, u64)>,
    /// What the last landing released, handed back empty ([`Durable::recycle`]): its
    /// allocation serves the next landing.
    released: Released,
}

impl Durable {
    /// `store`, with acknowledgements held until durable when `holds_acks` (`sync` mode).
    pub fn new(store: Box<dyn Store>, holds_acks: bool) -> Self {
        Self {
            store,
            ledger: Ledger::default(),
            holds_acks,
            append_failing: false,
            write_failing: false,
            last_id: 0,
            id_tag: None,
            body_written: 0,
            properties: Vec::new(),
            commit: None,
            released: Released::default(),
        }
    }

    /// Gives back what a landing released, once handled (its allocation is reused).
    pub fn recycle(&mut self, mut released: Released) {
        released.acks.clear();
        released.peer_acks.clear();
        self.released = released;
    }

    /// A fresh message id: the sequence number the message gets in every session of the shard
    /// it is queued for.
    pub fn next_message_id(&mut self) -> u64 {
        self.last_id = match self.id_tag {
            None => self.last_id + 1,
            Some(tag) => (((self.last_id >> 16) + 1) << 16) | u64::from(tag),
        };
        self.last_id
    }

    /// Ids given from now end in `tag` (`redis_shared`: this broker's tag).
    pub fn tag_ids(&mut self, tag: u16) {
        self.id_tag = Some(tag);
    }

    /// Later message ids are above `seq` (a recovered sequence number).
    pub fn ids_above(&mut self, seq: u64) {
        self.last_id = self.last_id.max(seq);
    }

    /// Hands one journaled change of `client`'s session to the store: a queued message as its
    /// body the first time the shard's routing of it reaches a durable session, then as
    /// references. `message`: the message an [`Journal::Enqueue`] is about (the one being
    /// delivered; `None` where the journal holds no enqueue).
    pub fn append_journal(&mut self, client: &str, entry: &Journal, message: Option<&Message>) {
        let result = match entry {
            Journal::Record(record) => self.store.append(record),
            Journal::Enqueue {
                seq, qos, retain, ..
            } if *seq == self.body_written => self.store.append(&Record::Ref {
                client: client.to_string(),
                id: *seq,
                qos: *qos,
                retain: *retain,
            }),
            Journal::Enqueue {
                seq,
                qos,
                retain,
                expires_at_ms,
            } => {
                let Some(message) = message else {
                    debug_assert!(false, "an enqueue is journaled with its message");
                    tracing::error!(
                        client,
                        "invariant broken: a queued message journaled without its message"
                    );
                    return self.note_append(Err(storage::Error::Encode(
                        "a queued message journaled without its message".into(),
                    )));
                };
                if message.properties.is_empty() {
                    self.properties.clear();
                } else {
                    self.properties = message.properties.to_publish_wire();
                }
                let body = MessageRef {
                    topic: &message.topic,
                    properties: &self.properties,
                    expires_at_ms: *expires_at_ms,
                    payload: &message.payload,
                };
                let r = self
                    .store
                    .append_message(client, *seq, *qos, *retain, &body);
                if r.is_ok() {
                    self.body_written = *seq;
                }
                r
            }
        };
        self.note_append(result);
    }

    /// Hands a batch of `client`'s done sequence numbers to the store (one record).
    pub fn append_acked(&mut self, client: &str, seqs: &[u64]) {
        let result = self.store.append_acked(client, seqs);
        self.note_append(result);
    }

    /// Sessions are kept by the store (records are worth building).
    pub fn persistent(&self) -> bool {
        self.store.persistent()
    }

    /// Acknowledgements wait for durability (sync mode).
    pub fn holds_acks(&self) -> bool {
        self.holds_acks
    }

    /// Records appended so far (a position to wait for).
    pub fn appended(&self) -> u64 {
        self.store.appended()
    }

    /// Everything appended is durable (a shutdown may end without losing a record).
    pub fn settled(&self) -> bool {
        self.ledger.durable() >= self.store.appended() && self.store.idle()
    }

    /// Appends one record; an error is logged (once per streak) and the record is lost, which
    /// the failing state then reports to publishers.
    pub fn append(&mut self, record: &Record) {
        let result = self.store.append(record);
        self.note_append(result);
    }

    fn note_append(&mut self, result: Result<(), storage::Error>) {
        match result {
            Ok(()) => self.append_failing = false,
            Err(e) => {
                if !self.append_failing {
                    tracing::error!(error = %e, "cannot append a record to the store");
                }
                self.append_failing = true;
            }
        }
    }

    /// The store lands its writes (see [`Store::available`]).
    pub fn available(&self) -> bool {
        self.store.available() && !self.append_failing
    }

    /// The store cannot write: publishes that need durability are refused.
    pub fn failing(&self) -> bool {
        self.store.failing() || self.append_failing
    }

    /// A fresh token for a held acknowledgement.
    pub fn next_token(&mut self) -> u64 {
        self.ledger.next_token()
    }

    /// See [`Ledger::hold`].
    pub fn hold(
        &mut self,
        token: u64,
        conn: ConnId,
        packet: PubResp,
        mark: u64,
        pending: usize,
    ) -> Vec<(ConnId, PubResp)> {
        self.ledger.hold(token, conn, packet, mark, pending)
    }

    /// True when `conn` has acks waiting.
    pub fn has_held(&self, conn: ConnId) -> bool {
        self.ledger.has_held(conn)
    }

    /// Acknowledgements held in all.
    pub fn held_len(&self) -> usize {
        self.ledger.held_len()
    }

    /// A peer or sink answered `token`. What can go now.
    pub fn peer_confirmed(&mut self, token: u64, ok: bool) -> Vec<(ConnId, PubResp)> {
        self.ledger.confirmed(token, ok)
    }

    /// A message forwarded by `origin` (token) appended records here since `before`: tell the
    /// origin once durable; now (returned true) if nothing was appended or acks do not wait.
    pub fn wait_for_peer(&mut self, origin: ShardId, token: u64, before: u64) -> bool {
        let Some(mark) = self.waits_since(before) else {
            return true;
        };
        self.ledger.wait_for_peer(origin, token, mark);
        false
    }

    /// The position records appended since `before` must reach before what caused them is
    /// answered; None when nothing was appended or acks do not wait.
    fn waits_since(&self, before: u64) -> Option<u64> {
        let mark = self.store.appended();
        (mark > before && self.holds_acks).then_some(mark)
    }

    /// A message forwarded by `origin` (`origin_token`) appended records here since `before`
    /// and sent `pending` copies on to sinks with `token`: the origin is told once they are
    /// confirmed and the records durable (`take_told`, or a landing).
    pub fn relay(
        &mut self,
        token: u64,
        origin: ShardId,
        origin_token: u64,
        before: u64,
        pending: usize,
    ) {
        let mark = self.waits_since(before).unwrap_or(0);
        self.ledger
            .relay(token, origin, origin_token, mark, pending);
    }

    /// Origins a relay owes an answer now: (origin, token, durable here).
    pub fn take_told(&mut self) -> Vec<(ShardId, u64, bool)> {
        self.ledger.take_told()
    }

    /// A commit is out (submitted, not landed).
    pub fn committing(&self) -> bool {
        self.commit.is_some()
    }

    /// The next I/O the store asks for.
    pub fn next_io(&mut self, now: Instant) -> Option<IoRequest> {
        let request = self.store.next_io(now)?;
        let bytes = match &request {
            IoRequest::WriteAndSync { range, .. } | IoRequest::Send { range, .. } => {
                range.len() as u64
            }
            _ => 0,
        };
        self.commit = Some((now, bytes, self.ledger.durable()));
        Some(request)
    }

    /// Further I/O the batch out needs (see [`Store::continue_io`]).
    pub fn continue_io(&mut self) -> Option<IoRequest> {
        self.store.continue_io()
    }

    /// A persistent session's client connected (see [`Store::session_online`]).
    pub fn session_online(&mut self, client: &str) {
        self.store.session_online(client);
    }

    /// A persistent session's client went away (see [`Store::session_offline`]).
    pub fn session_offline(&mut self, client: &str, expiry: u32) {
        self.store.session_offline(client, expiry);
    }

    /// Another process took the store's place (see [`Store::fenced`]).
    pub fn fenced(&self) -> bool {
        self.store.fenced()
    }

    /// A session read from the store while running (see [`Store::session_loaded`]).
    pub fn session_loaded(&mut self, client: &str, qos2: bool) {
        self.store.session_loaded(client, qos2);
    }

    /// The session is another broker's now, or ended (see [`Store::session_forgotten`]).
    pub fn session_forgotten(&mut self, client: &str) {
        self.store.session_forgotten(client);
    }

    /// This broker owns the session under `epoch` (see [`Store::session_owned`]).
    pub fn session_owned(&mut self, client: &str, broker: &str, epoch: u64) {
        self.store.session_owned(client, broker, epoch);
    }

    /// One completion of the store's I/O; what a landed batch released (counted in `stats`).
    pub fn io_done(
        &mut self,
        done: IoDone,
        now: Instant,
        stats: &mut crate::metrics::Stats,
    ) -> Option<Released> {
        let landed = self.store.io_done(done)?;
        if let Some((at, bytes, before)) = self.commit.take() {
            stats.store_commits += 1;
            stats.store_commit_bytes += bytes;
            stats.store_commit_micros +=
                u64::try_from(now.saturating_duration_since(at).as_micros()).unwrap_or(u64::MAX);
            stats.store_records += landed.durable.saturating_sub(before);
        }
        if let Some(e) = &landed.maintenance {
            tracing::error!(error = %e, "store maintenance (segment roll, compaction) failed");
        }
        match &landed.failed {
            Some(error) if !self.write_failing => {
                self.write_failing = true;
                tracing::error!(%error, "store write failed: publishes that need durability are refused (0x97) until a retry succeeds");
            }
            None if self.write_failing && landed.durable > self.ledger.durable() => {
                self.write_failing = false;
                tracing::info!("store writes succeed again: durable publishes accepted");
            }
            _ => {}
        }
        let scratch = std::mem::take(&mut self.released);
        Some(self.ledger.landed(&landed, scratch))
    }

    /// Background work on the store within `budget` bytes.
    pub fn maintain(&mut self, budget: u64) {
        if let Err(e) = self.store.maintain(budget) {
            tracing::error!(error = %e, "store compaction failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_ids_end_in_the_tag_and_stay_above_recovered_ones() {
        let mut d = Durable::new(Box::new(storage::store::MemoryStore::default()), false);
        d.tag_ids(0xBEEF);
        d.ids_above((7 << 16) | 0x1234);
        let ids: Vec<u64> = (0..3).map(|_| d.next_message_id()).collect();
        assert_eq!(
            ids,
            vec![(8 << 16) | 0xBEEF, (9 << 16) | 0xBEEF, (10 << 16) | 0xBEEF]
        );
        // Untagged: one after another.
        let mut d = Durable::new(Box::new(storage::store::MemoryStore::default()), false);
        d.ids_above(41);
        assert_eq!(d.next_message_id(), 42);
    }
}
