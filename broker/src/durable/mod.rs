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
pub mod reshard;

use std::time::Instant;

use net::codec::Packet;
use storage::record::Record;
use storage::store::{IoDone, IoRequest, Store};

use crate::ids::{ConnId, ShardId};
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
        }
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
        self.ledger.durable() >= self.store.appended()
    }

    /// Appends one record; an error is logged (once per streak) and the record is lost, which
    /// the failing state then reports to publishers.
    pub fn append(&mut self, record: &Record) {
        match self.store.append(record) {
            Ok(()) => self.append_failing = false,
            Err(e) => {
                if !self.append_failing {
                    tracing::error!(error = %e, "cannot append a record to the store");
                }
                self.append_failing = true;
            }
        }
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
        packet: Packet,
        mark: u64,
        pending: usize,
    ) -> Vec<(ConnId, Packet)> {
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
    pub fn peer_confirmed(&mut self, token: u64, ok: bool) -> Vec<(ConnId, Packet)> {
        self.ledger.confirmed(token, ok)
    }

    /// A message forwarded by `origin` (token) appended records here since `before`: tell the
    /// origin once durable; now (returned true) if nothing was appended or acks do not wait.
    pub fn wait_for_peer(&mut self, origin: ShardId, token: u64, before: u64) -> bool {
        let mark = self.store.appended();
        if mark == before || !self.holds_acks {
            return true;
        }
        self.ledger.wait_for_peer(origin, token, mark);
        false
    }

    /// The next I/O the store asks for.
    pub fn next_io(&mut self, now: Instant) -> Option<IoRequest> {
        self.store.next_io(now)
    }

    /// One completion of the store's I/O; what a landed batch released.
    pub fn io_done(&mut self, done: IoDone) -> Option<Released> {
        let landed = self.store.io_done(done)?;
        if let Some(e) = &landed.maintenance {
            tracing::error!(error = %e, "store maintenance (segment roll, compaction) failed");
        }
        match &landed.failed {
            Some(error) if !self.write_failing => {
                self.write_failing = true;
                tracing::error!(%error, "store write failed: publishes that need durability are refused (0x97) until a retry succeeds");
            }
            None if self.write_failing => {
                self.write_failing = false;
                tracing::info!("store writes succeed again: durable publishes accepted");
            }
            _ => {}
        }
        Some(self.ledger.landed(&landed))
    }

    /// Background work on the store within `budget` bytes.
    pub fn maintain(&mut self, budget: u64) {
        if let Err(e) = self.store.maintain(budget) {
            tracing::error!(error = %e, "store compaction failed");
        }
    }
}
