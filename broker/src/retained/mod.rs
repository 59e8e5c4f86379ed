//! Retained messages: the last retained message of each topic. Every shard keeps a full
//! replica: the shard a retained PUBLISH arrives on stores it and sends it to every peer, so a
//! new subscription is answered from the subscriber's own shard. Replicas converge by
//! last-writer-wins on a version (monotonic clock, then shard id); a clear (empty payload)
//! leaves a tombstone for [`TOMBSTONE_TTL`] so an older set arriving late cannot resurrect
//! the topic.
//!
//! Bounded by `retained_count_max` messages and `retained_bytes_max` topic + payload bytes:
//! a retained message over the bound is delivered to current subscribers but not stored
//! (counted).

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use rustc_hash::FxHashMap;

use crate::ids::ShardId;
use crate::router::filter;
use crate::session::Message;

/// The record that keeps a retained message (or its clear, an empty payload) at `version`:
/// retained records are built here, session records in the session's journal.
pub fn record(message: &Message, version: u64, now: Instant) -> storage::record::Record {
    if message.payload.is_empty() {
        storage::record::Record::RetainClear {
            topic: message.topic.to_string(),
            version,
        }
    } else {
        storage::record::Record::Retain {
            message: crate::session::stored(message, message.qos, true, now),
            version,
        }
    }
}

/// How long a clear is remembered against late, older sets from peers.
pub const TOMBSTONE_TTL: Duration = Duration::from_secs(60);

/// The process's start on both clocks: versions follow the monotonic clock within a run and
/// the wall clock across restarts (versions are logged).
static EPOCH: OnceLock<(Instant, u64)> = OnceLock::new();

fn epoch() -> (Instant, u64) {
    *EPOCH.get_or_init(|| {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (Instant::now(), u64::try_from(wall.as_micros()).unwrap_or(0))
    })
}

/// Starts the version clock (call once before shards start).
pub fn start_clock() {
    epoch();
}

/// The version of a retained set made at `now` on `shard` (wall-clock microseconds, shard in
/// the low 6 bits); the caller keeps its versions strictly increasing (`max(v, last + 64)`).
pub fn version(now: Instant, shard: ShardId) -> u64 {
    let (start, wall) = epoch();
    let us = u64::try_from(now.saturating_duration_since(start).as_micros()).unwrap_or(0);
    (wall + us) << 6 | u64::from(shard.0 & 63)
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// `None`: cleared (a tombstone).
    message: Option<Message>,
}

/// What a set did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetOutcome {
    /// Stored (new or replacing).
    Stored,
    /// The topic's retained message was cleared.
    Cleared,
    /// An older version than the one held: ignored.
    Stale,
    /// Over `retained_count_max` or `retained_bytes_max`: not stored.
    Full,
}

/// One shard's replica.
#[derive(Debug)]
pub struct Retained {
    entries: FxHashMap<ByteString, Entry>,
    live: usize,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
    tombstones: VecDeque<(Instant, ByteString, u64)>,
}

fn weight(m: &Message) -> usize {
    m.topic.len() + m.payload.len()
}

impl Retained {
    /// An empty store with its bounds.
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        Self {
            entries: FxHashMap::default(),
            live: 0,
            bytes: 0,
            count_max,
            bytes_max,
            tombstones: VecDeque::new(),
        }
    }

    /// Retained messages held.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Topic and payload bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Applies a retained PUBLISH (an empty payload clears the topic) made at `version`.
    pub fn set(&mut self, message: &Message, version: u64, now: Instant) -> SetOutcome {
        let old = self.entries.get(&message.topic);
        if old.is_some_and(|e| e.version >= version) {
            return SetOutcome::Stale;
        }
        let old_weight = old.and_then(|e| e.message.as_ref()).map(weight);
        if message.payload.is_empty() {
            if let Some(w) = old_weight {
                self.live -= 1;
                self.bytes -= w;
            }
            self.entries.insert(
                message.topic.clone(),
                Entry {
                    version,
                    message: None,
                },
            );
            self.tombstones
                .push_back((now, message.topic.clone(), version));
            return SetOutcome::Cleared;
        }
        let w = weight(message);
        let bytes_after = self.bytes - old_weight.unwrap_or(0) + w;
        let count_after = self.live + usize::from(old_weight.is_none());
        if bytes_after > self.bytes_max || count_after > self.count_max {
            return SetOutcome::Full;
        }
        self.bytes = bytes_after;
        self.live = count_after;
        self.entries.insert(
            message.topic.clone(),
            Entry {
                version,
                message: Some(message.clone()),
            },
        );
        SetOutcome::Stored
    }

    /// The unexpired retained messages whose topics `filter` matches.
    pub fn matching(&self, filter: &str, now: Instant, out: &mut Vec<Message>) {
        out.clear();
        let live = |e: &Entry| e.message.as_ref().filter(|m| !m.expired(now)).cloned();
        if !filter.contains(['+', '#']) {
            out.extend(self.entries.get(filter).and_then(live));
            return;
        }
        out.extend(
            self.entries
                .iter()
                .filter(|(topic, _)| filter::matches(filter, topic))
                .filter_map(|(_, e)| live(e)),
        );
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
    }

    /// Forgets tombstones older than [`TOMBSTONE_TTL`].
    pub fn prune(&mut self, now: Instant) {
        while let Some((at, topic, version)) = self.tombstones.front() {
            if now.duration_since(*at) < TOMBSTONE_TTL {
                break;
            }
            if self
                .entries
                .get(topic)
                .is_some_and(|e| e.version == *version && e.message.is_none())
            {
                self.entries.remove(topic);
            }
            self.tombstones.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use net::codec::QoS;

    fn m(topic: &str, payload: &'static [u8], now: Instant) -> Message {
        Message::new(
            topic.into(),
            Bytes::from_static(payload),
            QoS::AtLeastOnce,
            true,
            Default::default(),
            now,
        )
    }

    #[test]
    fn set_clear_match_and_last_writer_wins() {
        let now = Instant::now();
        let mut r = Retained::new(10, 1000);
        assert_eq!(r.set(&m("a/b", b"1", now), 10, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("a/c", b"2", now), 11, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("a/b", b"old", now), 9, now), SetOutcome::Stale);
        let mut out = Vec::new();
        r.matching("a/+", now, &mut out);
        let payloads: Vec<&[u8]> = out.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, vec![&b"1"[..], &b"2"[..]]);
        r.matching("a/b", now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(r.set(&m("a/b", b"", now), 12, now), SetOutcome::Cleared);
        assert_eq!(r.set(&m("a/b", b"late", now), 11, now), SetOutcome::Stale);
        r.matching("#", now, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!((r.len(), r.bytes()), (1, 4));
        r.prune(now + TOMBSTONE_TTL);
        assert_eq!(r.set(&m("a/b", b"new", now), 13, now), SetOutcome::Stored);
    }

    #[test]
    fn bounded_in_count_and_bytes() {
        let now = Instant::now();
        let mut r = Retained::new(2, 10);
        assert_eq!(r.set(&m("a", b"1", now), 1, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("b", b"1", now), 2, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("c", b"1", now), 3, now), SetOutcome::Full);
        assert_eq!(r.set(&m("a", b"12345678", now), 4, now), SetOutcome::Full);
        assert_eq!(r.set(&m("a", b"1234567", now), 5, now), SetOutcome::Stored);
    }

    #[test]
    fn expired_messages_are_not_matched() {
        let now = Instant::now();
        let mut r = Retained::new(10, 1000);
        let mut msg = m("a", b"1", now);
        msg.expires_at = Some(now + Duration::from_secs(1));
        r.set(&msg, 1, now);
        let mut out = Vec::new();
        r.matching("a", now, &mut out);
        assert_eq!(out.len(), 1);
        r.matching("a", now + Duration::from_secs(2), &mut out);
        assert!(out.is_empty());
    }
}
