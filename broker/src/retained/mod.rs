//! Retained messages: the last retained message of each topic, one copy per node. Topics are
//! partitioned across shards by [`owner`] (the hash that homes client ids): a retained
//! PUBLISH is stored by its topic's owner shard (forwarded there through the mesh if it
//! arrived elsewhere), and a new subscription asks every owner for pages of its matches
//! (`core/retained_feed.rs`). Sets from different shards converge by last-writer-wins on a
//! version (wall-clock microseconds, then shard id; a cluster node keeps the version a copy
//! from another node carries and versions its own later sets above it); a clear (empty payload) leaves a tombstone for
//! [`TOMBSTONE_TTL`] so an older set arriving late cannot resurrect the topic.
//!
//! The store is a map sorted by key (`scan.rs`), walked by a skip-scan that visits only the
//! branches a filter can match, from a cursor (the last key a page looked at). Each message
//! is kept compact: its topic once (the key) and its payload in its own exact allocation, so
//! a stored message never pins the buffer it was received in.
//!
//! Bounded by `retained_count_max` messages and `retained_bytes_max` topic + payload bytes
//! per node (each shard holds at most its share, rounded up): a retained message over the
//! bound is delivered to current subscribers but not stored (counted).

pub mod scan;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytestring::ByteString;
use net::codec::{BoxedProperties, QoS};

use crate::ids::ShardId;
use crate::session::Message;
use scan::Step;

/// The shard that owns a topic's retained message.
pub fn owner(topic: &str, shards: usize) -> ShardId {
    crate::ids::home_shard(topic.as_bytes(), shards)
}

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

/// Keys a page may look at beyond its matches before it returns (with a cursor) anyway.
pub const PAGE_VISITS: usize = 4096;

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

/// The highest version this node took from other nodes (their clocks may be ahead of this
/// one's): every shard versions its sets above it, so a set made here later wins.
static FLOOR: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Raises the node's version floor to `version` (one from another node).
pub fn raise_floor(version: u64) {
    FLOOR.fetch_max(version, std::sync::atomic::Ordering::Relaxed);
}

/// The node's version floor (see [`raise_floor`]).
pub fn floor() -> u64 {
    FLOOR.load(std::sync::atomic::Ordering::Relaxed)
}

/// Whether `version` (from another node) is one a clock could have made: not more than a
/// day ahead of this node's clock at `now`. A version further ahead would win for good.
pub fn plausible(version: u64, now: Instant) -> bool {
    const DAY_MICROS: u64 = 86_400_000_000;
    version <= self::version(now, ShardId(63)).saturating_add(DAY_MICROS << 6)
}

/// The version of a retained set made at `now` on `shard` (wall-clock microseconds, shard in
/// the low 6 bits); the caller keeps its versions strictly increasing (`max(v, last + 64)`).
pub fn version(now: Instant, shard: ShardId) -> u64 {
    let (start, wall) = epoch();
    let us = u64::try_from(now.saturating_duration_since(start).as_micros()).unwrap_or(0);
    (wall + us) << 6 | u64::from(shard.0 & 63)
}

/// A topic as the store's key (`scan.rs`): inline up to 24 bytes, so most keys cost no
/// allocation and comparing them touches no other memory.
pub type Key = compact_str::CompactString;

/// A jump target of the scan as a key. Jumps are cut at level boundaries of UTF-8 keys and
/// filters and extended with ASCII bytes, so they are UTF-8; were one not, the scan would
/// restart past every key rather than loop.
fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|_| char::MAX.to_string())
}

/// What is kept of a retained message besides its topic (the key).
#[derive(Debug)]
struct Kept {
    payload: Box<[u8]>,
    properties: BoxedProperties,
    expires_at: Option<Instant>,
    qos: QoS,
}

#[derive(Debug)]
struct Entry {
    version: u64,
    /// `None`: cleared (a tombstone).
    kept: Option<Box<Kept>>,
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

/// Where a page of matches ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// Nothing looked at yet.
    Start,
    /// The last key looked at: the next page starts after it.
    After(Key),
    /// The next page starts at this key (a match not delivered yet).
    From(Key),
    /// Every match has been given.
    Done,
}

/// One shard's part of the node's retained messages.
#[derive(Debug)]
pub struct Retained {
    entries: BTreeMap<Key, Entry>,
    live: usize,
    bytes: usize,
    count_max: usize,
    bytes_max: usize,
    tombstones: VecDeque<(Instant, Key, u64)>,
    /// Scratch for a topic's key.
    key: String,
}

impl Retained {
    /// An empty store with its bounds.
    pub fn new(count_max: usize, bytes_max: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            live: 0,
            bytes: 0,
            count_max,
            bytes_max,
            tombstones: VecDeque::new(),
            key: String::new(),
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
        scan::key_of(&message.topic, &mut self.key);
        let topic_len = message.topic.len();
        let clear = message.payload.is_empty();
        let new_weight = topic_len + message.payload.len();
        let kept = || {
            Box::new(Kept {
                payload: message.payload.as_ref().into(),
                properties: message.properties.clone(),
                expires_at: message.expires_at,
                qos: message.qos,
            })
        };
        let old = self.entries.get_mut(self.key.as_str());
        if old.as_ref().is_some_and(|e| e.version >= version) {
            return SetOutcome::Stale;
        }
        let old_weight = old
            .as_ref()
            .and_then(|e| e.kept.as_ref())
            .map(|k| topic_len + k.payload.len());
        if !clear {
            let bytes_after = self.bytes - old_weight.unwrap_or(0) + new_weight;
            let count_after = self.live + usize::from(old_weight.is_none());
            if bytes_after > self.bytes_max || count_after > self.count_max {
                return SetOutcome::Full;
            }
        }
        if let Some(w) = old_weight {
            self.live -= 1;
            self.bytes -= w;
        }
        if !clear {
            self.live += 1;
            self.bytes += new_weight;
        }
        let entry = Entry {
            version,
            kept: (!clear).then(kept),
        };
        // One lookup when the topic is known (a replacement, a clear, a stale set).
        match old {
            Some(e) => *e = entry,
            None => {
                self.entries.insert(Key::from(self.key.as_str()), entry);
            }
        }
        if clear {
            self.tombstones
                .push_back((now, Key::from(self.key.as_str()), version));
            return SetOutcome::Cleared;
        }
        SetOutcome::Stored
    }

    /// Up to `limit` unexpired retained messages (and about `bytes_max` payload bytes) that
    /// `filter` matches, in key order, starting after `cursor`; returns where the next page
    /// starts. A page also ends after [`PAGE_VISITS`] keys looked at, so one call costs a
    /// bounded amount whatever the store holds.
    pub fn page(
        &self,
        filter: &str,
        cursor: &Cursor,
        limit: usize,
        bytes_max: usize,
        now: Instant,
        out: &mut Vec<Message>,
    ) -> Cursor {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut lower: Bound<String> = match cursor {
            Cursor::Start => Bound::Included(utf8(scan::first_key(&levels))),
            Cursor::After(k) => Bound::Excluded(k.to_string()),
            Cursor::From(k) => Bound::Included(k.to_string()),
            Cursor::Done => return Cursor::Done,
        };
        let (mut visited, mut bytes, mut found) = (0usize, 0usize, 0usize);
        loop {
            let range = self
                .entries
                .range::<str, _>((as_ref(&lower), Bound::Unbounded));
            let mut jump = None;
            for (key, entry) in range {
                visited += 1;
                match scan::step(&levels, key.as_bytes()) {
                    Step::Match => {
                        if let Some(m) = entry.kept.as_ref().and_then(|k| message(key, k, now)) {
                            bytes += m.payload.len();
                            found += 1;
                            out.push(m);
                        }
                    }
                    Step::Next => {}
                    Step::To(to) => jump = Some(to),
                    Step::Done => return Cursor::Done,
                }
                if found >= limit || bytes >= bytes_max || visited >= PAGE_VISITS + limit {
                    return Cursor::After(key.clone());
                }
                if jump.is_some() {
                    break;
                }
            }
            match jump {
                Some(to) => lower = Bound::Included(utf8(to)),
                None => return Cursor::Done,
            }
        }
    }

    /// Forgets tombstones older than [`TOMBSTONE_TTL`].
    pub fn prune(&mut self, now: Instant) {
        while let Some((at, key, version)) = self.tombstones.front() {
            if now.duration_since(*at) < TOMBSTONE_TTL {
                break;
            }
            if self
                .entries
                .get(key)
                .is_some_and(|e| e.version == *version && e.kept.is_none())
            {
                self.entries.remove(key);
            }
            self.tombstones.pop_front();
        }
    }
}

fn as_ref(b: &Bound<String>) -> Bound<&str> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_str()),
        Bound::Excluded(k) => Bound::Excluded(k.as_str()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// A kept message as a broker message to deliver now (`None` once expired).
fn message(key: &str, kept: &Kept, now: Instant) -> Option<Message> {
    if kept.expires_at.is_some_and(|t| t <= now) {
        return None;
    }
    let mut m = Message::new(
        ByteString::from(scan::topic_of(key)),
        Bytes::copy_from_slice(&kept.payload),
        kept.qos,
        true,
        kept.properties.clone(),
        now,
    );
    m.expires_at = kept.expires_at;
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn all(r: &Retained, filter: &str, now: Instant) -> Vec<Message> {
        let mut out = Vec::new();
        let mut cursor = Cursor::Start;
        while cursor != Cursor::Done {
            cursor = r.page(filter, &cursor, 2, usize::MAX, now, &mut out);
        }
        out
    }

    #[test]
    fn set_clear_match_and_last_writer_wins() {
        let now = Instant::now();
        let mut r = Retained::new(10, 1000);
        assert_eq!(r.set(&m("a/b", b"1", now), 10, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("a/c", b"2", now), 11, now), SetOutcome::Stored);
        assert_eq!(r.set(&m("a/b", b"old", now), 9, now), SetOutcome::Stale);
        let out = all(&r, "a/+", now);
        let payloads: Vec<&[u8]> = out.iter().map(|m| &m.payload[..]).collect();
        assert_eq!(payloads, vec![&b"1"[..], &b"2"[..]]);
        assert!(out.iter().all(|m| m.retain));
        assert_eq!(&all(&r, "a/b", now)[0].topic[..], "a/b");
        assert_eq!(r.set(&m("a/b", b"", now), 12, now), SetOutcome::Cleared);
        assert_eq!(r.set(&m("a/b", b"late", now), 11, now), SetOutcome::Stale);
        assert_eq!(all(&r, "#", now).len(), 1);
        assert_eq!((r.len(), r.bytes()), (1, 4));
        r.prune(now + TOMBSTONE_TTL);
        assert_eq!(r.set(&m("a/b", b"new", now), 13, now), SetOutcome::Stored);
    }

    #[test]
    fn pages_resume_from_their_cursor_and_stay_bounded() {
        let now = Instant::now();
        let mut r = Retained::new(100_000, usize::MAX);
        for i in 0..10_000u32 {
            let t = format!("p/{}/{}", i % 100, i / 100);
            r.set(&m(&t, b"x", now), u64::from(i) + 1, now);
        }
        let mut out = Vec::new();
        let mut cursor = Cursor::Start;
        let mut pages = 0;
        while cursor != Cursor::Done {
            let before = out.len();
            cursor = r.page("p/#", &cursor, 256, usize::MAX, now, &mut out);
            assert!(out.len() - before <= 256);
            pages += 1;
        }
        assert_eq!((out.len(), pages), (10_000, 40));
        let mut topics: Vec<&str> = out.iter().map(|m| &m.topic[..]).collect();
        topics.dedup();
        assert_eq!(topics.len(), 10_000, "no message twice");
        // A filter matching nothing in a large store ends within the visit bound per page.
        let mut none = Vec::new();
        let c = r.page(
            "+/+/nothing",
            &Cursor::Start,
            256,
            usize::MAX,
            now,
            &mut none,
        );
        assert!(none.is_empty());
        assert!(matches!(c, Cursor::After(_) | Cursor::Done));
        assert_eq!(all(&r, "+/+/nothing", now).len(), 0);
        assert_eq!(all(&r, "p/+/7", now).len(), 100);
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
        assert_eq!(all(&r, "a", now).len(), 1);
        assert!(all(&r, "a", now + Duration::from_secs(2)).is_empty());
    }
}
