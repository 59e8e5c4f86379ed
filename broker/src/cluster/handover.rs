//! Sessions that moved from this node to another (their client connected there: the Redis
//! owner key changed) while copies for them may still be on their way here: records already
//! in this node's downlink, or produced to it by nodes that had not yet read the new owner's
//! routes. Without this table the node that forgot the session would take those records,
//! find no subscriber and commit past them: lost. With it, a downlink record matching a moved
//! session's filters is produced again to the new owner's downlink (addressed to that session
//! alone, `mqtt.cluster.for_client`), and its offset is stored only once Kafka took that copy.
//!
//! Which records: those produced (record timestamp) no later than `cluster.node_timeout_ms`
//! after the move, read while the entry lives (`cluster.moved_keep_ms`); at most
//! `cluster.moved_max` entries (the oldest goes first). One table per node, shared by its
//! shards (a downlink partition's records go to any shard).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytestring::ByteString;

use super::config::ClusterConfig;

/// The header naming the one session a forwarded downlink record is for.
pub const FOR_CLIENT_HEADER: &str = "mqtt.cluster.for_client";
/// The header of a copy produced to several nodes: their ids, comma-separated.
pub const TO_HEADER: &str = "mqtt.cluster.to";
/// The header naming the node that produced a copy (a copy the node a session moved to
/// produced well after the move is not forwarded back there: that node had the session and
/// delivered it itself). Written only while a session came to the producing node lately
/// (`Feed::names_sender`: `node_timeout_ms` + 60 s after its arrival), the only time the
/// node it left reads it.
pub const FROM_HEADER: &str = "mqtt.cluster.from";
/// A copy produced at least this long after the move by (or also to) the node the session
/// moved to is taken as delivered there: that node had loaded the session by then (its claim
/// answer comes right after the claim that told this node), with room for the nodes' clocks.
pub const TRUST_AFTER_MS: i64 = 1_000;
/// The header of a forwarded record taken from the session itself (queued or in flight when
/// it moved): its sequence number in the shared store, so the new node, which may have loaded
/// it from there, does not deliver it twice.
pub const SEQ_HEADER: &str = "mqtt.cluster.seq";

/// The nodes that have a downlink copy besides the reader, from its `mqtt.cluster.to` and
/// `mqtt.cluster.from` headers, comma-separated (what [`Handovers::targets`] takes as
/// `sent_to`).
pub fn sent_to(to: Option<&str>, from: Option<&str>) -> Option<Box<str>> {
    match (to, from) {
        (Some(to), Some(from)) => Some(format!("{to},{from}").into()),
        (one, other) => one.or(other).map(Box::from),
    }
}

/// One session that moved away.
#[derive(Debug)]
struct Moved {
    client: ByteString,
    /// Its subscriptions' filters (shared groups' excepted: another member serves those).
    filters: Vec<ByteString>,
    /// The node it moved to.
    node: Box<str>,
    /// When it moved, in Kafka timestamps (milliseconds since the epoch).
    at_ms: i64,
    /// Forgotten after this.
    until: Instant,
    /// Its place in the order of notes (see [`Handovers::noted`]).
    generation: u64,
}

/// The node's table of sessions that moved away.
#[derive(Debug)]
pub struct Handovers {
    list: RwLock<VecDeque<Moved>>,
    /// Entries in `list`: read without the lock on every downlink record and publish.
    len: AtomicUsize,
    /// The latest move's time plus the grace (Kafka's clock): a record produced after it is
    /// for no entry, known without the lock.
    grace_ends_ms: AtomicI64,
    /// Entries noted so far (the newest entry's generation).
    noted: AtomicU64,
    keep: Duration,
    max: usize,
    grace_ms: i64,
}

impl Handovers {
    /// An empty table with `config`'s limits.
    pub fn new(config: &ClusterConfig) -> Self {
        Self {
            list: RwLock::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            grace_ends_ms: AtomicI64::new(i64::MIN),
            noted: AtomicU64::new(0),
            keep: Duration::from_millis(config.moved_keep_ms),
            max: config.moved_max,
            grace_ms: i64::try_from(config.node_timeout_ms).unwrap_or(i64::MAX),
        }
    }

    /// The most sessions followed at once (`cluster.moved_max`; also the most claims from
    /// dead nodes waiting, `salvage.rs`).
    pub fn max(&self) -> usize {
        self.max
    }

    /// How long a session that moved is followed (`cluster.moved_keep_ms`).
    pub fn keep(&self) -> Duration {
        self.keep
    }

    /// How long after a move its copies are still forwarded, and its routes here kept
    /// (`cluster.node_timeout_ms`).
    pub fn grace(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.grace_ms).unwrap_or(0))
    }

    /// Entries now (for the metrics).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// No entry (the downlink path skips the table).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A copy produced at `stamp_ms` (None: unknown) may be for an entry: checked without
    /// the lock before every look into the table.
    pub fn may_want(&self, stamp_ms: Option<i64>) -> bool {
        !self.is_empty() && stamp_ms.is_none_or(|s| s <= self.grace_ends_ms.load(Ordering::Acquire))
    }

    /// `client`, subscribed to `filters`, moved to node `node` at `now` (`now_ms` in Kafka's
    /// clock); an older entry of it is replaced.
    pub fn note(
        &self,
        client: ByteString,
        filters: Vec<ByteString>,
        node: &str,
        now: Instant,
        now_ms: i64,
    ) {
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        list.retain(|m| m.client != client && m.until > now);
        while list.len() >= self.max {
            if let Some(old) = list.pop_front() {
                tracing::warn!(client = %old.client, "cluster.moved_max sessions moved away recently: the oldest is no longer followed (copies for it still in this node's downlink are not forwarded)");
            }
        }
        let generation = self.noted.load(Ordering::Relaxed) + 1;
        list.push_back(Moved {
            client,
            filters,
            node: node.into(),
            at_ms: now_ms,
            until: now + self.keep,
            generation,
        });
        // The grace first: a reader that sees the entry counted sees its grace too.
        self.grace_ends_ms
            .fetch_max(now_ms.saturating_add(self.grace_ms), Ordering::Release);
        self.len.store(list.len(), Ordering::Release);
        // Last: a reader that sees this generation sees the entry.
        self.noted.store(generation, Ordering::Release);
    }

    /// Entries noted so far. A shard that reads it before it routes a message, and sends the
    /// message to a peer shard, tells that shard which moves its own look into the table may
    /// have missed: those noted after (`targets_noted_after`).
    pub fn noted(&self) -> u64 {
        self.noted.load(Ordering::Acquire)
    }

    /// The node `client` moved to from here, while its entry lives.
    pub fn node_of(&self, client: &str, now: Instant) -> Option<Box<str>> {
        if self.is_empty() {
            return None;
        }
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        let m = list
            .iter()
            .rev()
            .find(|m| m.client == client && m.until > now)?;
        Some(m.node.clone())
    }

    /// `client` is held here again: its entry goes.
    pub fn back(&self, client: &str) {
        if self.is_empty() {
            return;
        }
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        list.retain(|m| m.client != client);
        self.len.store(list.len(), Ordering::Relaxed);
    }

    /// Drops the entries followed for `cluster.moved_keep_ms` (on the shards' tick).
    pub fn prune(&self, now: Instant) {
        if self.is_empty() {
            return;
        }
        let due = |list: &VecDeque<Moved>| list.front().is_some_and(|m| m.until <= now);
        if !due(&self.list.read().unwrap_or_else(PoisonError::into_inner)) {
            return;
        }
        let mut list = self.list.write().unwrap_or_else(PoisonError::into_inner);
        while list.front().is_some_and(|m| m.until <= now) {
            list.pop_front();
        }
        self.len.store(list.len(), Ordering::Relaxed);
    }

    /// The moved sessions (client, node) a downlink record on `topic` produced at
    /// `stamp_ms` (None: unknown, taken as in time) is for, appended to `out`; not those
    /// whose node is among `sent_to` (the nodes its publisher's node sent it to, and that
    /// node) when it was produced [`TRUST_AFTER_MS`] or more after the move: that one has it.
    pub fn targets(
        &self,
        topic: &str,
        stamp_ms: Option<i64>,
        sent_to: Option<&str>,
        now: Instant,
        out: &mut Vec<(ByteString, Box<str>)>,
    ) {
        self.collect(topic, stamp_ms, sent_to, now, 0, out);
    }

    /// As [`Handovers::targets`] (nothing sent straight), only the moves noted after
    /// generation `after` (see [`Handovers::noted`]).
    pub fn targets_noted_after(
        &self,
        topic: &str,
        stamp_ms: Option<i64>,
        now: Instant,
        after: u64,
        out: &mut Vec<(ByteString, Box<str>)>,
    ) {
        if self.noted() > after {
            self.collect(topic, stamp_ms, None, now, after, out);
        }
    }

    fn collect(
        &self,
        topic: &str,
        stamp_ms: Option<i64>,
        sent_to: Option<&str>,
        now: Instant,
        noted_after: u64,
        out: &mut Vec<(ByteString, Box<str>)>,
    ) {
        if !self.may_want(stamp_ms) {
            return;
        }
        let list = self.list.read().unwrap_or_else(PoisonError::into_inner);
        for m in list.iter().filter(|m| m.generation > noted_after) {
            let in_time = stamp_ms.is_none_or(|s| s <= m.at_ms.saturating_add(self.grace_ms));
            // Sent to (or by) its new node well after the move: that node had it.
            let after = stamp_ms.is_some_and(|s| s >= m.at_ms.saturating_add(TRUST_AFTER_MS));
            let sent = after && sent_to.is_some_and(|to| to.split(',').any(|n| n == &*m.node));
            if m.until > now
                && in_time
                && !sent
                && m.filters
                    .iter()
                    .any(|f| crate::router::filter::matches(f, topic))
            {
                out.push((m.client.clone(), m.node.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(max: usize) -> Handovers {
        let config = ClusterConfig {
            moved_max: max,
            moved_keep_ms: 1_000,
            node_timeout_ms: 10_000,
            ..ClusterConfig::default()
        };
        Handovers::new(&config)
    }

    #[test]
    fn a_moved_session_gets_the_records_produced_until_the_grace_ends() {
        let t = table(8);
        let now = Instant::now();
        assert!(t.is_empty());
        t.note("s".into(), vec!["a/+".into()], "b", now, 50_000);
        let mut out = Vec::new();
        t.targets("a/1", Some(60_000), None, now, &mut out);
        assert_eq!(out, vec![("s".into(), "b".into())]);
        out.clear();
        // Its publisher sent it to node b too, well after the move: b has it.
        t.targets("a/1", Some(60_000), Some("a,b"), now, &mut out);
        assert!(out.is_empty());
        // Right after the move b may not have had the session yet: forwarded anyway.
        t.targets("a/1", Some(50_500), Some("a,b"), now, &mut out);
        assert_eq!(out.len(), 1);
        out.clear();
        // Produced after the move plus node_timeout_ms: the new owner's own route brought it.
        t.targets("a/1", Some(60_001), None, now, &mut out);
        t.targets("x/1", Some(1), None, now, &mut out);
        assert!(out.is_empty());
        // Forgotten after moved_keep_ms.
        t.targets(
            "a/1",
            None,
            None,
            now + Duration::from_millis(1_001),
            &mut out,
        );
        assert!(out.is_empty());
        assert!(t.may_want(Some(60_000)) && !t.may_want(Some(60_001)));
        t.back("s");
        assert!(t.is_empty() && !t.may_want(None));
        t.note("s".into(), vec!["a".into()], "b", now, 0);
        t.prune(now + Duration::from_millis(999));
        assert_eq!(t.len(), 1);
        t.prune(now + Duration::from_millis(1_000));
        assert!(t.is_empty(), "pruned after moved_keep_ms");
    }

    #[test]
    fn a_copys_other_holders_come_from_its_to_and_from_headers() {
        assert_eq!(sent_to(Some("a,b"), Some("c")).as_deref(), Some("a,b,c"));
        assert_eq!(sent_to(Some("a,b"), None).as_deref(), Some("a,b"));
        assert_eq!(sent_to(None, Some("c")).as_deref(), Some("c"));
        assert_eq!(sent_to(None, None), None);
    }

    #[test]
    fn the_table_is_bounded_and_keeps_one_entry_per_client() {
        let t = table(2);
        let now = Instant::now();
        t.note("s".into(), vec!["a".into()], "b", now, 0);
        t.note("s".into(), vec!["a".into()], "c", now, 0);
        assert_eq!(t.len(), 1);
        let mut out = Vec::new();
        t.targets("a", Some(0), None, now, &mut out);
        assert_eq!(out, vec![("s".into(), "c".into())]);
        t.note("u".into(), vec!["a".into()], "b", now, 0);
        t.note("v".into(), vec!["a".into()], "b", now, 0);
        assert_eq!(t.len(), 2);
        out.clear();
        t.targets("a", Some(0), None, now, &mut out);
        assert!(out.iter().all(|(c, _)| c != "s"), "the oldest went first");
    }
}
