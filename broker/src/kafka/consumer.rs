//! Kafka -> MQTT: one consumer thread per consumer group on a node (rdkafka `BaseConsumer`,
//! subscribed to the group's `to_mqtt` topics), handing records to the shards as
//! [`Inbound`] messages through a bounded queue per shard ([`Inbox`], woken through the
//! shard's doorbell), and committing offsets only past records the shards reported handed on.
//!
//! - **Lanes**: each assigned partition is a lane, always on the same shard, so its records
//!   are published in offset order and their reports come back in that order. A lane's
//!   records wait in `pending` until reported; the offset after the longest reported prefix is
//!   stored (`enable.auto.offset.store = false`) and committed every `commit_interval_ms`, and
//!   at shutdown. A crash therefore repeats records, never loses one.
//! - **Refused** (the shard's store failed): the partition is sought back to that record and
//!   gets a new lane id (reports of the old one are ignored); the records after it that were
//!   already handed on are delivered again.
//! - **Bounded**: at most `consume_in_flight_max` records are handed to shards and not
//!   reported; above it the consumer stops polling records (librdkafka's prefetch,
//!   `consume_prefetch_bytes_max`, fills and its fetching stops; the group is still served
//!   every 5 s, one record at most, none at twice the bound), and goes on when reports come
//!   back.
//! - **Rebalance**: lanes are forgotten (offsets stored so far are committed by librdkafka);
//!   the next records start new lanes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_queue::{ArrayQueue, SegQueue};
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message as _};
use rdkafka::{ClientContext, Offset};
use rustc_hash::FxHashMap;

use super::config::KafkaConfig;
use super::to_mqtt::{Record, Route};
use crate::source::{Inbound, PerShard, Source, SourceCounts};

/// Wakes a parked consumer thread (it parks while over its in-flight bound).
#[derive(Debug, Default)]
struct Waker {
    parked: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

/// One shard's queue from one consumer, and the reports back.
#[derive(Debug)]
pub struct Inbox {
    queue: ArrayQueue<Inbound>,
    /// (lane, offset, handed on) in lane order.
    done: SegQueue<(u32, i64, bool)>,
    /// The shard is woken once per batch of records.
    bell: super::Bell,
    waker: Arc<Waker>,
    received: AtomicU64,
    handed_on: AtomicU64,
    refused: AtomicU64,
    invalid: AtomicU64,
    /// Records' age when the consumer read them.
    lag: crate::metrics::SharedHistogram,
    /// The group's records behind (from librdkafka's statistics): shard 0's inbox only, so
    /// the shards' sum is the group's.
    behind: Option<Arc<super::behind::Behind>>,
}

impl Inbox {
    /// Wakes the shard unless a wake is pending.
    fn ring(&self) {
        self.bell.ring();
    }
}

/// The shard's side of an [`Inbox`].
#[derive(Debug)]
pub struct KafkaSource {
    inbox: Arc<Inbox>,
    name: String,
}

impl Source for KafkaSource {
    fn name(&self) -> &str {
        &self.name
    }

    fn take(&mut self, max: usize, out: &mut Vec<Inbound>) {
        self.inbox.bell.answered();
        let mut n = 0;
        while n < max {
            let Some(inbound) = self.inbox.queue.pop() else {
                break;
            };
            out.push(inbound);
            n += 1;
        }
        self.inbox.received.fetch_add(n as u64, Ordering::Relaxed);
        if n == max && !self.inbox.queue.is_empty() {
            // More than one pass's worth: come back next pass.
            self.inbox.ring();
        }
    }

    fn done(&mut self, lane: u32, seq: i64, ok: bool) {
        let counter = if ok {
            &self.inbox.handed_on
        } else {
            &self.inbox.refused
        };
        counter.fetch_add(1, Ordering::Relaxed);
        self.inbox.done.push((lane, seq, ok));
        let waker = &self.inbox.waker;
        std::sync::atomic::fence(Ordering::SeqCst);
        if waker.parked.load(Ordering::SeqCst) {
            if let Some(t) = waker.thread.get() {
                t.unpark();
            }
        }
    }

    fn counts(&self) -> SourceCounts {
        let i = &self.inbox;
        SourceCounts {
            received: i.received.load(Ordering::Relaxed),
            handed_on: i.handed_on.load(Ordering::Relaxed),
            refused: i.refused.load(Ordering::Relaxed),
            invalid: i.invalid.load(Ordering::Relaxed),
            lag: i.lag.load(),
            behind: i.behind.as_ref().map_or(0, |b| b.get()),
        }
    }
}

/// The consumer's context: librdkafka's lines to debug, rebalances noted for the loop.
#[derive(Debug)]
struct Ctx {
    group: String,
    rebalanced: AtomicBool,
    behind: Arc<super::behind::Behind>,
}

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka consumer: {reason}");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        self.behind.update(statistics);
    }
}

impl ConsumerContext for Ctx {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.rebalanced.store(true, Ordering::Release);
        match rebalance {
            Rebalance::Assign(list) => {
                tracing::info!(group = %self.group, partitions = list.count(), "Kafka consumer: partitions assigned")
            }
            Rebalance::Revoke(list) => {
                tracing::info!(group = %self.group, partitions = list.count(), "Kafka consumer: partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, "Kafka consumer: rebalance failed: {e}")
            }
        }
    }
}

/// The consumer threads of a node.
#[derive(Debug, Default)]
pub struct Consumers {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Consumers {
    /// Stops every consumer: what shards reported is committed first.
    pub fn stop_and_join(self) {
        self.stop.store(true, Ordering::Release);
        for t in &self.threads {
            t.thread().unpark();
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// One group's consumer, ready to run.
pub struct Group {
    consumer: BaseConsumer<Ctx>,
    feed: Feed,
}

/// What a group's consumer feeds, and its limits.
struct Feed {
    routes: Vec<Route>,
    inboxes: Vec<Arc<Inbox>>,
    waker: Arc<Waker>,
    in_flight_max: usize,
    levels_max: usize,
    bytes_max: usize,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group")
            .field("routes", &self.feed.routes.len())
            .field("shards", &self.feed.inboxes.len())
            .finish()
    }
}

/// Creates one consumer per group of `config.to_mqtt` and of `extra` (a cluster node's
/// downlink; subscribed, not polled yet) and its inboxes, one per shard (`doorbells`).
/// Returns the groups and each shard's sources.
pub fn prepare(
    config: &KafkaConfig,
    extra: Vec<Route>,
    doorbells: &[std::fs::File],
    levels_max: usize,
    bytes_max: usize,
) -> anyhow::Result<(Vec<Group>, PerShard)> {
    let mut routes: Vec<Route> = Vec::new();
    for (i, rule) in config.to_mqtt.iter().enumerate() {
        routes.push(Route::compile(rule).map_err(|e| anyhow::anyhow!("kafka.to_mqtt[{i}]: {e}"))?);
    }
    routes.extend(extra);
    let mut groups: Vec<Group> = Vec::new();
    let mut sources: PerShard = doorbells.iter().map(|_| Vec::new()).collect();
    let mut names: Vec<String> = routes.iter().map(|r| r.group.clone()).collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let mine: Vec<Route> = routes.iter().filter(|r| r.group == name).cloned().collect();
        let reset = mine.first().map_or("earliest", |r| r.offset_reset.as_str());
        let behind = mine
            .iter()
            .find_map(Route::downlink_behind)
            .unwrap_or_default();
        let consumer: BaseConsumer<Ctx> = ClientConfig::new()
            .set("bootstrap.servers", &config.brokers)
            .set("client.id", format!("{}-in", config.client_id))
            .set("group.id", &name)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.commit.interval.ms",
                config.commit_interval_ms.to_string(),
            )
            .set("auto.offset.reset", reset)
            .set("enable.partition.eof", "false")
            .set(
                "fetch.wait.max.ms",
                config.consume_fetch_wait_ms.to_string(),
            )
            .set("session.timeout.ms", config.session_timeout_ms.to_string())
            .set(
                "heartbeat.interval.ms",
                (config.session_timeout_ms / 3).max(100).to_string(),
            )
            .set("max.poll.interval.ms", "300000")
            .set("isolation.level", "read_committed")
            .set(
                "queued.max.messages.kbytes",
                (config.consume_prefetch_bytes_max / 1024).to_string(),
            )
            .set("fetch.max.bytes", (bytes_max.max(1 << 20) * 2).to_string())
            .set(
                "max.partition.fetch.bytes",
                bytes_max.max(1 << 20).to_string(),
            )
            .set("allow.auto.create.topics", "false")
            .set("socket.keepalive.enable", "true")
            .set("broker.address.family", "v4")
            .set(
                "statistics.interval.ms",
                if mine.iter().all(Route::is_downlink) {
                    super::behind::DOWNLINK_STATS_INTERVAL_MS
                } else {
                    super::behind::STATS_INTERVAL_MS
                }
                .to_string(),
            )
            .create_with_context(Ctx {
                group: name.clone(),
                rebalanced: AtomicBool::new(false),
                behind: behind.clone(),
            })
            .map_err(|e| anyhow::anyhow!("kafka: cannot create a consumer: {e}"))?;
        let topics: Vec<&str> = mine.iter().map(|r| r.topic.as_str()).collect();
        if mine.iter().all(Route::is_downlink) {
            assign_all(&consumer, &topics, Duration::from_millis(config.timeout_ms))
                .map_err(|e| anyhow::anyhow!("kafka: group {name}: {e}"))?;
        } else {
            consumer.subscribe(&topics).map_err(|e| {
                anyhow::anyhow!("kafka: group {name}: cannot subscribe to {topics:?}: {e}")
            })?;
        }
        let waker = Arc::new(Waker::default());
        let mut inboxes = Vec::with_capacity(doorbells.len());
        for (shard, bell) in doorbells.iter().enumerate() {
            let inbox = Arc::new(Inbox {
                // Records a full inbox does not take wait in the consumer's backlog, which
                // stops the polling: per shard, at most 65,536 + 256 take effect.
                queue: ArrayQueue::new(config.consume_in_flight_max.min(1 << 16) + POLL_BATCH),
                done: SegQueue::new(),
                bell: super::Bell::new(bell.try_clone()?),
                waker: waker.clone(),
                received: AtomicU64::new(0),
                handed_on: AtomicU64::new(0),
                refused: AtomicU64::new(0),
                invalid: AtomicU64::new(0),
                lag: crate::metrics::SharedHistogram::default(),
                behind: (shard == 0).then(|| behind.clone()),
            });
            if let Some(list) = sources.get_mut(shard) {
                list.push(Box::new(KafkaSource {
                    inbox: inbox.clone(),
                    name: if mine.iter().all(Route::is_downlink) {
                        format!("cluster:{name}")
                    } else {
                        format!("kafka:{name}")
                    },
                }));
            }
            inboxes.push(inbox);
        }
        groups.push(Group {
            consumer,
            feed: Feed {
                routes: mine,
                inboxes,
                waker,
                in_flight_max: config.consume_in_flight_max,
                levels_max,
                bytes_max,
            },
        });
    }
    Ok((groups, sources))
}

/// Assigns every partition of `topics` to `consumer`, each from the group's committed offset
/// (else `auto.offset.reset`). A cluster node's downlink is read by that node alone: no group
/// membership to wait for after a restart (against tansu 0.6.0 a member killed and started
/// again was assigned no partition: the dead member's were never given back).
fn assign_all(consumer: &BaseConsumer<Ctx>, topics: &[&str], wait: Duration) -> Result<(), String> {
    let mut assignment = rdkafka::TopicPartitionList::new();
    for topic in topics {
        let partitions = super::partitions(consumer, topic, wait)
            .map_err(|e| format!("reading the partitions of {topic}: {e}"))?;
        if partitions == 0 {
            return Err(format!("topic {topic} has no partitions"));
        }
        for p in 0..partitions {
            assignment
                .add_partition_offset(topic, p as i32, Offset::Stored)
                .map_err(|e| e.to_string())?;
        }
    }
    consumer
        .assign(&assignment)
        .map_err(|e| format!("assigning {topics:?}: {e}"))
}

/// Starts a thread per group.
pub fn start(groups: Vec<Group>) -> anyhow::Result<Consumers> {
    let mut consumers = Consumers::default();
    for group in groups {
        let stop = consumers.stop.clone();
        let waker = group.feed.waker.clone();
        let spawned = std::thread::Builder::new()
            .name("kafka-consumer".into())
            .spawn(move || Loop::new(group).run(&stop));
        match spawned {
            Ok(t) => {
                let _ = waker.thread.set(t.thread().clone());
                consumers.threads.push(t);
            }
            Err(e) => {
                consumers.stop_and_join();
                return Err(e.into());
            }
        }
    }
    Ok(consumers)
}

/// Records polled per loop turn at most.
const POLL_BATCH: usize = 256;

/// A partition's records handed to a shard and not yet reported.
#[derive(Debug)]
struct Lane {
    id: u32,
    shard: usize,
    /// (offset, reported handed on), in offset order.
    pending: VecDeque<(i64, bool)>,
    /// A refused record the partition was sought back to: no offset past it is stored until
    /// it comes again (if the seek failed, the commit stays before it).
    ceiling: Option<i64>,
}

/// Pops a lane's done prefix; the last offset popped.
fn pop_done(lane: &mut Lane) -> Option<i64> {
    let mut last = None;
    while let Some(&(offset, true)) = lane.pending.front() {
        last = Some(offset);
        lane.pending.pop_front();
    }
    last
}

/// The consumer thread: its consumer, and the state the records change.
struct Loop {
    consumer: BaseConsumer<Ctx>,
    st: State,
}

/// What the consumer thread keeps apart from the consumer.
struct State {
    feed: Feed,
    /// (route index, partition) -> lane.
    lanes: FxHashMap<(usize, i32), Lane>,
    /// Lane id -> (route index, partition).
    by_id: FxHashMap<u32, (usize, i32)>,
    next_lane: u32,
    in_flight: usize,
    /// Records a full inbox did not take yet, per shard.
    backlog: Vec<VecDeque<Inbound>>,
    /// Logged once per streak.
    failing: bool,
    skipped_logged_at: Option<Instant>,
}

impl Loop {
    fn new(g: Group) -> Self {
        let shards = g.feed.inboxes.len();
        Self {
            consumer: g.consumer,
            st: State {
                feed: g.feed,
                lanes: FxHashMap::default(),
                by_id: FxHashMap::default(),
                next_lane: 0,
                in_flight: 0,
                backlog: (0..shards).map(|_| VecDeque::new()).collect(),
                failing: false,
                skipped_logged_at: None,
            },
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut served = Instant::now();
        while !stop.load(Ordering::Acquire) {
            self.st.reap(&self.consumer);
            self.st.flush_backlog();
            let max = self.st.feed.in_flight_max;
            // Skipped records wait in `pending` behind unreported ones: bounded too.
            let over = self.st.in_flight >= max
                || self.st.backlog.iter().any(|b| !b.is_empty())
                || self.st.lanes.values().any(|l| l.pending.len() >= 2 * max);
            if over {
                // Take nothing more: librdkafka's prefetch fills up to
                // `consume_prefetch_bytes_max` and its fetching stops (Kafka keeps the rest).
                // Partitions are not paused: against tansu 0.6.0, pause / resume made some
                // records come twice and others never (3 runs of 11 at 150k msg/s; 0 of 6
                // without). Wake on a report; serve the group (rebalances, the poll interval)
                // every 5 s, taking at most one record then, and not at all at twice the
                // bound: the overshoot is bounded (past 300 s without a poll the group
                // reassigns the partitions and they start again from the committed offsets).
                let waker = &self.st.feed.waker;
                waker.parked.store(true, Ordering::SeqCst);
                // Paired with the fence in `done`: a report pushed before it is seen here, or
                // its pusher sees `parked`.
                std::sync::atomic::fence(Ordering::SeqCst);
                if self.st.feed.inboxes.iter().all(|i| i.done.is_empty()) {
                    std::thread::park_timeout(Duration::from_millis(100));
                }
                waker.parked.store(false, Ordering::Release);
                let queued: usize = self.st.backlog.iter().map(VecDeque::len).sum();
                let room = self.st.in_flight < 2 * max && queued < max;
                if room && served.elapsed() >= Duration::from_secs(5) {
                    served = Instant::now();
                    self.poll(Duration::ZERO, 1);
                }
            } else {
                served = Instant::now();
                self.poll(Duration::from_millis(100), POLL_BATCH);
            }
        }
        self.st.reap(&self.consumer);
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("Kafka consumer: offsets committed at shutdown"),
            Err(e) => tracing::debug!("Kafka consumer: commit at shutdown: {e}"),
        }
    }

    /// Takes up to `records_max` records (the first within `wait`) and hands them to the
    /// shards.
    fn poll(&mut self, wait: Duration, records_max: usize) {
        let mut rung = vec![false; self.st.feed.inboxes.len()];
        let mut wait = wait;
        let mut batch_time = None;
        for _ in 0..records_max {
            let polled = self.consumer.poll(wait);
            if self
                .consumer
                .context()
                .rebalanced
                .swap(false, Ordering::AcqRel)
            {
                // Partitions were revoked and assigned again: their records start over from
                // the committed offsets in new lanes; reports of the old lanes are ignored.
                // This holds for the eager assignment strategies (librdkafka's default, left
                // as is): every partition is revoked, and the stored offsets (never past an
                // unreported or refused record) are committed first. A cooperative strategy
                // would keep partitions fetching past records whose reports are now ignored.
                self.st.lanes.clear();
                self.st.by_id.clear();
            }
            let Some(result) = polled else {
                break;
            };
            wait = Duration::ZERO;
            match result {
                Ok(m) => {
                    if self.st.failing {
                        tracing::info!("Kafka consumer: receiving again");
                        self.st.failing = false;
                    }
                    let headers: Vec<(&str, Option<&[u8]>)> = m
                        .headers()
                        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
                        .unwrap_or_default();
                    let record = Record {
                        timestamp: m.timestamp().to_millis(),
                        topic: m.topic(),
                        key: m.key(),
                        payload: m.payload().unwrap_or_default(),
                        headers,
                    };
                    // One clock read per batch: the records' receive time.
                    let now = *batch_time.get_or_insert_with(Instant::now);
                    let shard =
                        self.st
                            .dispatch(&self.consumer, &record, m.partition(), m.offset(), now);
                    if let Some(r) = shard.and_then(|s| rung.get_mut(s)) {
                        *r = true;
                    }
                }
                Err(e) => {
                    if !self.st.failing {
                        tracing::warn!(
                            "Kafka consumer: {e} (records wait in Kafka until it recovers)"
                        );
                        self.st.failing = true;
                    }
                    break;
                }
            }
            if self.st.in_flight >= self.st.feed.in_flight_max {
                break;
            }
        }
        for (inbox, rung) in self.st.feed.inboxes.iter().zip(rung) {
            if rung {
                inbox.ring();
            }
        }
    }
}

impl State {
    /// The record's lane (created on its first record).
    fn lane(&mut self, route: usize, partition: i32) -> &mut Lane {
        let shards = self.feed.inboxes.len().max(1);
        let id = self.next_lane;
        let lane = self
            .lanes
            .entry((route, partition))
            .or_insert_with(|| Lane {
                id,
                shard: (route * 31 + partition.unsigned_abs() as usize) % shards,
                pending: VecDeque::new(),
                ceiling: None,
            });
        if lane.id == id {
            self.next_lane = self.next_lane.wrapping_add(1);
            self.by_id.insert(id, (route, partition));
        }
        lane
    }

    /// Maps a record and hands it to its lane's shard (or skips it); the shard to wake.
    fn dispatch(
        &mut self,
        consumer: &BaseConsumer<Ctx>,
        record: &Record<'_>,
        partition: i32,
        offset: i64,
        now: Instant,
    ) -> Option<usize> {
        let route = self
            .feed
            .routes
            .iter()
            .position(|r| r.topic == record.topic)?;
        let rule = self.feed.routes.get(route)?;
        let mapped = rule.message(record, self.feed.levels_max, self.feed.bytes_max, now);
        let shared_only = rule.shared_only(record);
        let retain_version = rule.retain_version(record);
        let for_client = rule.for_client(record);
        let sent_to = rule.sent_to(record);
        let lane = self.lane(route, partition);
        if lane.ceiling.is_some_and(|c| offset <= c) {
            lane.ceiling = None; // the rewind took effect
        }
        let (id, shard) = (lane.id, lane.shard);
        lane.pending.push_back((offset, mapped.is_err()));
        if let (Some(stamp), Some(inbox)) = (record.timestamp, self.feed.inboxes.get(shard)) {
            let age = super::now_millis().saturating_sub(stamp);
            inbox.lag.record_millis(u64::try_from(age).unwrap_or(0));
        }
        match mapped {
            Ok(message) => {
                self.in_flight += 1;
                let inbound = Inbound {
                    lane: id,
                    seq: offset,
                    message,
                    shared_only,
                    retain_version,
                    stamp_ms: record.timestamp,
                    for_client,
                    sent_to,
                };
                let backlog = self.backlog.get_mut(shard)?;
                if !backlog.is_empty() {
                    backlog.push_back(inbound);
                } else if let Err(inbound) = self.feed.inboxes.get(shard)?.queue.push(inbound) {
                    backlog.push_back(inbound);
                }
                Some(shard)
            }
            Err(why) => {
                if let Some(inbox) = self.feed.inboxes.get(shard) {
                    inbox.invalid.fetch_add(1, Ordering::Relaxed);
                }
                let now = Instant::now();
                if self
                    .skipped_logged_at
                    .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(10))
                {
                    self.skipped_logged_at = Some(now);
                    tracing::warn!(topic = record.topic, partition, offset, "Kafka record skipped: {why} (more are counted in ringmq_kafka_in_invalid_total)");
                }
                self.advance(consumer, (route, partition));
                None
            }
        }
    }

    fn flush_backlog(&mut self) {
        for (backlog, inbox) in self.backlog.iter_mut().zip(&self.feed.inboxes) {
            let mut moved = false;
            while let Some(inbound) = backlog.pop_front() {
                if let Err(inbound) = inbox.queue.push(inbound) {
                    backlog.push_front(inbound);
                    break;
                }
                moved = true;
            }
            if moved {
                inbox.ring();
            }
        }
    }

    /// Applies the shards' reports.
    fn reap(&mut self, consumer: &BaseConsumer<Ctx>) {
        // Offsets are stored once per lane per call, not per report (an FFI call each).
        let mut touched: Vec<((usize, i32), i64)> = Vec::new();
        for s in 0..self.feed.inboxes.len() {
            while let Some((lane, offset, ok)) = self.feed.inboxes.get(s).and_then(|i| i.done.pop())
            {
                self.in_flight = self.in_flight.saturating_sub(1);
                let Some(&key) = self.by_id.get(&lane) else {
                    continue; // a lane forgotten by a rebalance or a rewind
                };
                if !ok {
                    self.advance(consumer, key);
                    self.rewind(consumer, key.0, key.1, offset);
                    continue;
                }
                let Some(l) = self.lanes.get_mut(&key) else {
                    continue;
                };
                // Reports come in lane order: the first entry not done is this one.
                if let Some(e) = l.pending.iter_mut().find(|e| !e.1 || e.0 == offset) {
                    if e.0 == offset {
                        e.1 = true;
                    }
                }
                if let Some(last) = pop_done(l) {
                    match touched.iter_mut().find(|t| t.0 == key) {
                        Some(t) => t.1 = last,
                        None => touched.push((key, last)),
                    }
                }
            }
        }
        for (key, last) in touched {
            self.store(consumer, key, last);
        }
    }

    /// Pops and stores the lane's done prefix.
    fn advance(&mut self, consumer: &BaseConsumer<Ctx>, key: (usize, i32)) {
        if let Some(last) = self.lanes.get_mut(&key).and_then(pop_done) {
            self.store(consumer, key, last);
        }
    }

    /// Stores the offset after `last` for the next commit. `rd_kafka_offset_store` (rdkafka's
    /// `store_offset`) stores its argument + 1, so it is given `last` itself: given `last + 1`
    /// it committed one record too far and a restart skipped that record.
    fn store(&self, consumer: &BaseConsumer<Ctx>, (route, partition): (usize, i32), last: i64) {
        let Some(r) = self.feed.routes.get(route) else {
            return;
        };
        let ceiling = self
            .lanes
            .get(&(route, partition))
            .and_then(|l| l.ceiling)
            .unwrap_or(i64::MAX);
        if let Err(e) = consumer.store_offset(&r.topic, partition, last.min(ceiling - 1)) {
            tracing::debug!(topic = %r.topic, partition, "Kafka consumer: store offset: {e}");
        }
    }

    /// A record was refused: consume its partition again from it, in a new lane.
    fn rewind(&mut self, consumer: &BaseConsumer<Ctx>, route: usize, partition: i32, offset: i64) {
        let Some(r) = self.feed.routes.get(route) else {
            return;
        };
        tracing::warn!(topic = %r.topic, partition, offset, "a Kafka record could not be handed on (the store failed, or its session's claim was still out here): consuming again from it");
        if let Err(e) = consumer.seek(
            &r.topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(1),
        ) {
            tracing::warn!(topic = %r.topic, partition, "Kafka consumer: seek back failed: {e}");
        }
        if let Some(old) = self.lanes.get_mut(&(route, partition)) {
            self.by_id.remove(&old.id);
            old.id = self.next_lane;
            old.pending.clear();
            old.ceiling = Some(old.ceiling.map_or(offset, |c| c.min(offset)));
            self.by_id.insert(old.id, (route, partition));
            self.next_lane = self.next_lane.wrapping_add(1);
        }
    }
}
