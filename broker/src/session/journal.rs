//! A session's journal: the changes of a durable session waiting to be handed to the shard's
//! store (the core drains it after each operation), and the batch of sequence numbers that
//! are done (handed over once per loop pass as one record). A queued message is journaled
//! without its body: the core, which hands it to the session, writes the journal right after
//! with the message in hand ([`crate::core::Core`]'s `journal_with`), its body once for every
//! recipient on the shard.

use std::time::Instant;

use storage::record::{Record, StoredSubscription};

use super::{Grant, Message, Session};
use net::codec::SubscriptionOptions;

/// One change of a durable session.
#[derive(Debug)]
pub enum Journal {
    /// A record as it is.
    Record(Record),
    /// A QoS 1/2 message given to the session under sequence number `seq` (the shard's
    /// message id): written as the message's body with this recipient, or as a reference to
    /// the body when another session of the shard got the same message first. The message
    /// itself is the one being delivered when the entry is written (not kept here: no
    /// reference counts taken and dropped per recipient).
    Enqueue {
        /// Sequence number (the message id).
        seq: u64,
        /// QoS it goes out with.
        qos: u8,
        /// RETAIN flag on the way out.
        retain: bool,
        /// Absolute expiry, milliseconds of the Unix epoch (0: none).
        expires_at_ms: u64,
    },
}

impl Session {
    /// Changes or done sequence numbers the core has not taken yet.
    pub fn journal_pending(&self) -> bool {
        !self.journal.is_empty() || !self.acked.is_empty() && !self.acked_listed
    }

    /// The journal holds a `Sent` (a QoS 2 packet id given to a message).
    pub fn journal_has_send(&self) -> bool {
        self.journal
            .iter()
            .any(|j| matches!(j, Journal::Record(Record::Sent { .. })))
    }

    pub(super) fn journal(&mut self, record: Record) {
        if self.durable {
            self.journal.push(Journal::Record(record));
        }
    }

    /// Journals the session itself with its expiry (persistent from now, or a new expiry).
    pub fn journal_expiry(&mut self) {
        let client = self.client_id.to_string();
        let expiry = self.expiry_interval;
        self.journal(Record::Session { client, expiry });
    }

    /// Journals the session's end (also once `durable` is cleared: it was on disk).
    pub fn journal_end(&mut self) {
        let client = self.client_id.to_string();
        self.acked.clear();
        self.journal
            .push(Journal::Record(Record::SessionEnd { client }));
    }

    /// Journals a subscription with its options and identifier.
    pub fn journal_subscribe(&mut self, filter: &str, options: SubscriptionOptions, sub_id: u32) {
        let client = self.client_id.to_string();
        let sub = StoredSubscription {
            filter: filter.to_string(),
            options: options.to_byte(),
            sub_id,
        };
        self.journal(Record::Subscribe { client, sub });
    }

    /// Journals the removal of a subscription.
    pub fn journal_unsubscribe(&mut self, filter: &str) {
        let client = self.client_id.to_string();
        let filter = filter.to_string();
        self.journal(Record::Unsubscribe { client, filter });
    }

    pub(super) fn journal_done(&mut self, seq: u64) {
        if seq != 0 && self.durable {
            self.acked.push(seq);
        }
    }

    /// Journals a QoS 1/2 message given to a durable session; its sequence number (0 if the
    /// session is not durable): the shard's id of the message ([`Session::log_id`]).
    pub(super) fn journal_enqueue(
        &mut self,
        message: &Message,
        grant: &Grant,
        now: Instant,
    ) -> u64 {
        if !self.durable {
            return 0;
        }
        debug_assert!(
            self.log_id != 0,
            "the core sets the message id before a delivery"
        );
        let seq = self.log_id;
        self.journal.push(Journal::Enqueue {
            seq,
            qos: grant.qos as u8,
            retain: grant.retain,
            expires_at_ms: super::message::wall_ms(message.expires_at, now),
        });
        seq
    }
}
