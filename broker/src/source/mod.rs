//! Sources: inbound feeds other than MQTT clients (the Kafka -> MQTT bridge, then cluster
//! uplinks). A source hands a shard messages in lanes; within a lane they must be handed on in
//! order, and the source learns, per message and in lane order, when the broker took
//! responsibility for it: the same moment a client's PUBACK would leave (routed, durable
//! where the durability mode says so, confirmed by the peers it went to), or that it was
//! refused (the store failed). A source commits its position (a Kafka offset) only past
//! messages reported handed on, so a crash repeats messages and never loses one.
//!
//! Sources run on the shard thread and must not block; one backed by a library with its own
//! threads (rdkafka) fills a bounded queue and wakes the shard through its doorbell.

use crate::ids::ConnId;
use crate::session::Message;

/// One message from a source.
#[derive(Debug)]
pub struct Inbound {
    /// The lane (a Kafka partition): messages of one lane are handed on in order.
    pub lane: u32,
    /// The message's position in its lane (a Kafka offset), reported back in [`Source::done`].
    pub seq: i64,
    /// The message, as if published by a client with this QoS.
    pub message: Message,
    /// `None`: it reaches every matching shared group, as a client's would. `Some`: only the
    /// groups listed (full `$share/g/f` filters; a cluster downlink's message, whose other
    /// groups were served on another node).
    pub shared_only: Option<Vec<bytestring::ByteString>>,
    /// A retained message's version as the publishing node gave it (a cluster downlink's
    /// copy); None: this node versions it.
    pub retain_version: Option<u64>,
    /// When it was produced (a Kafka record's timestamp, milliseconds since the epoch).
    pub stamp_ms: Option<i64>,
    /// `Some`: for this one session only (a cluster downlink's copy forwarded by the node the
    /// session moved away from: `cluster/handover.rs`), not for every matching subscriber;
    /// with the copy's sequence number in that session's store (0: none).
    pub for_client: Option<(bytestring::ByteString, u64)>,
    /// A cluster downlink's copy, while this node follows sessions that moved away: the
    /// other nodes that have it (those it was produced to, and the one that produced it),
    /// comma-separated.
    pub sent_to: Option<Box<str>>,
}

/// A source's running totals, read on the shard's tick for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SourceCounts {
    /// Messages this shard took from the source.
    pub received: u64,
    /// Messages this shard reported handed on.
    pub handed_on: u64,
    /// Messages this shard reported refused (the source delivers them again).
    pub refused: u64,
    /// Messages the source skipped as invalid (no valid MQTT topic, too large).
    pub invalid: u64,
    /// Each message's age when the source read it (a Kafka record's, from its timestamp).
    pub lag: crate::metrics::Histogram,
    /// Records the source has behind it, not handed on yet (a Kafka consumer's, from
    /// librdkafka's statistics: the log's end minus the offset to be committed).
    pub behind: u64,
}

/// The sources each shard gets, in shard order (built before the shard threads start).
pub type PerShard = Vec<Vec<Box<dyn Source + Send>>>;

/// An inbound feed registered on a shard.
pub trait Source: std::fmt::Debug {
    /// A short name for logs.
    fn name(&self) -> &str;
    /// Moves up to `max` messages into `out` (in lane order).
    fn take(&mut self, max: usize, out: &mut Vec<Inbound>);
    /// A message taken earlier was handed on (`ok`) or refused; called in lane order.
    fn done(&mut self, lane: u32, seq: i64, ok: bool);
    /// Running totals.
    fn counts(&self) -> SourceCounts;
}

/// Connection slots from here up name a source's lane on the ack ledger (real connection
/// slots stay far below): slot = base + source index, generation = lane.
const LANE_SLOT_BASE: u32 = u32::MAX - 255;

/// The sources of one shard, and the messages each lane has waiting for their release.
#[derive(Debug, Default)]
pub struct Sources {
    list: Vec<Box<dyn Source + Send>>,
    /// Congested sessions (here or on peers) holding the sources back, as they would hold a
    /// publishing connection: nothing is taken while above zero.
    held_by: u32,
    /// Per lane (as its ledger connection): the sequence numbers handed to the ledger and not
    /// released yet, in order.
    waiting: rustc_hash::FxHashMap<ConnId, std::collections::VecDeque<i64>>,
}

impl Sources {
    /// The shard's sources as a publisher, for backpressure: the connection that congested
    /// sessions pause and resume (its slot is above every real one; it fits a
    /// `PublisherRef`).
    pub const PUBLISHER: ConnId = ConnId {
        slot: (1 << 24) - 1,
        generation: 0,
    };

    /// One more (`pause`) or one fewer congested session holds the sources back; false for
    /// a resume nobody paused.
    pub fn hold_input(&mut self, pause: bool) -> bool {
        if pause {
            self.held_by += 1;
        } else if self.held_by == 0 {
            return false;
        } else {
            self.held_by -= 1;
        }
        true
    }

    /// Some congested session holds the sources back.
    pub fn input_held(&self) -> bool {
        self.held_by > 0
    }

    /// Registers a source (at most 256 per shard).
    pub fn add(&mut self, source: Box<dyn Source + Send>) {
        assert!(self.list.len() < 256, "at most 256 sources per shard");
        tracing::info!(source = source.name(), "source registered");
        self.list.push(source);
    }

    /// No source registered.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// How many sources.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// Up to `max` messages of source `index`.
    pub fn take(&mut self, index: usize, max: usize, out: &mut Vec<Inbound>) {
        if let Some(s) = self.list.get_mut(index) {
            s.take(max, out);
        }
    }

    /// The ledger connection that stands for `lane` of source `index`; `seq` waits on it.
    pub fn hold(&mut self, index: usize, lane: u32, seq: i64) -> ConnId {
        let conn = ConnId {
            slot: LANE_SLOT_BASE + index as u32,
            generation: lane,
        };
        self.waiting.entry(conn).or_default().push_back(seq);
        conn
    }

    /// True when `conn` stands for a source's lane, not a client connection.
    pub fn is_lane(conn: ConnId) -> bool {
        conn.slot >= LANE_SLOT_BASE
    }

    /// The ledger released the oldest waiting message of the lane `conn`: handed on (`ok`)
    /// or refused. The source is told.
    pub fn released(&mut self, conn: ConnId, ok: bool) {
        let Some(queue) = self.waiting.get_mut(&conn) else {
            debug_assert!(false, "a release for a lane with nothing waiting");
            return;
        };
        let seq = queue.pop_front();
        if queue.is_empty() {
            self.waiting.remove(&conn);
        }
        let index = (conn.slot - LANE_SLOT_BASE) as usize;
        if let (Some(seq), Some(source)) = (seq, self.list.get_mut(index)) {
            source.done(conn.generation, seq, ok);
        }
    }

    /// The totals of the sources whose name starts with `prefix`, summed.
    pub fn counts(&self, prefix: &str) -> SourceCounts {
        let named = self.list.iter().filter(|s| s.name().starts_with(prefix));
        named.fold(SourceCounts::default(), |a, s| {
            let c = s.counts();
            let mut lag = a.lag;
            lag.add(&c.lag);
            SourceCounts {
                received: a.received + c.received,
                handed_on: a.handed_on + c.handed_on,
                refused: a.refused + c.refused,
                invalid: a.invalid + c.invalid,
                lag,
                behind: a.behind + c.behind,
            }
        })
    }
}
