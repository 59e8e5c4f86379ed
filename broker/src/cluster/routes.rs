//! The routes thread of a cluster node: it reads the compacted routes topic from its start
//! (every node's "node N has subscribers for filter F" records, tombstones when it has no
//! more, and heartbeats), keeps the route table and each node's liveness, and publishes a new
//! snapshot for the shards when either changes. It writes this node's own records: a route
//! record when a filter gets its first subscriber on any shard of this node (`1`), again when
//! a persistent session starts or stops being among them (`p` / `1`, [`RouteState`]), a
//! tombstone when its last one goes, a heartbeat every `cluster.heartbeat_ms`, and a "left"
//! heartbeat at a clean shutdown. A dead node's `p` routes count for `cluster.node_keep_ms`
//! after its last heartbeat; then the node is forgotten: its routes leave the table (kept
//! aside, by node id, with the routes of nodes that found no free number) and its number is
//! free for another node id; a heartbeat of its own numbers it again, with those routes.
//!
//! Reconciliation: once the topic has been read up to the end it had at start and the shards
//! run (their restored subscriptions reported), this node's records in the topic are compared
//! with its subscriptions and the difference written, so the routes of a node killed while its
//! subscribers left are corrected when it starts again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

mod congestion;
mod liveness;

use super::beat::Beat;
use super::config::ClusterConfig;
use super::feed::{Change, Feed};
use super::table::RouteTable;
use super::RouteState;
use crate::kafka::config::KafkaConfig;
use crate::kafka::renew::{Renewable, Renewing};

/// The shards with routes kept while dead, and those with routes while live, a bit each.
#[derive(Clone, Copy, Debug, Default)]
struct Masks {
    kept: u64,
    live: u64,
}

impl Masks {
    /// The node's state for the filter: the strongest any shard asks.
    fn state(self) -> RouteState {
        if self.kept != 0 {
            RouteState::Kept
        } else if self.live != 0 {
            RouteState::Live
        } else {
            RouteState::None
        }
    }
}

/// Records taken from the routes topic per loop pass at most.
const RECORDS_PER_PASS: usize = 10_000;

/// The routes producer's reports: records completed (acknowledged or failed, in order: one
/// partition), and the keys of route records that failed (written again).
#[derive(Debug, Default)]
struct Written {
    completed: std::sync::atomic::AtomicU64,
    failed: SegQueue<String>,
    /// librdkafka reported an error since the routes thread last asked whether it was fatal.
    errored: AtomicBool,
}

/// The routes producer's context.
struct WrittenCtx(Arc<Written>);

impl ClientContext for WrittenCtx {
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!(?level, fac, "librdkafka (cluster routes): {message}");
    }

    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka (cluster routes): {reason}");
        self.0.errored.store(true, Ordering::Release);
    }
}

impl Renewable for WrittenCtx {
    fn errored(&self) -> &AtomicBool {
        &self.0.errored
    }

    fn again(&self) -> Self {
        WrittenCtx(self.0.clone())
    }
}

impl ProducerContext for WrittenCtx {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let key = m.key().and_then(|k| std::str::from_utf8(k).ok());
            if let Some(key) = key.filter(|k| k.contains('/')) {
                tracing::warn!(
                    key,
                    "cluster: a route record was not acknowledged ({e}); writing it again"
                );
                self.0.failed.push(key.to_string());
            }
        }
        self.0.completed.fetch_add(1, Ordering::AcqRel);
    }
}

/// The routes thread's state.
struct Routes {
    config: ClusterConfig,
    consumer: BaseConsumer<crate::kafka::Quiet>,
    /// Replaced when it fails for good: the route records it held fail, so they are written
    /// again by the new one.
    producer: Renewing<WrittenCtx>,
    written: Arc<Written>,
    /// Route records handed to the producer.
    sent: u64,
    /// SUBACK barriers: (records that must complete first, None until reconciled; shard,
    /// token).
    barriers: Vec<(Option<u64>, u16, u64)>,
    feed: Arc<Feed>,
    snapshot: Arc<ArcSwap<RouteTable>>,
    ready: Arc<AtomicBool>,
    /// Set once the topic was read to its end at start (the node may serve).
    started: Arc<AtomicBool>,
    table: RouteTable,
    /// When each node's last heartbeat was written (by its clock while catching up, then
    /// when it arrived).
    seen: FxHashMap<usize, Instant>,
    /// Each node's incarnation, from its latest heartbeat (`liveness::STARTED_HEADER`).
    incarnations: FxHashMap<String, i64>,
    /// This node's incarnation: when it started (milliseconds since the epoch).
    started_ms: i64,
    /// When liveness was last judged (a long gap since: this node was stopped or starved).
    judged: Option<Instant>,
    /// Nodes whose last heartbeat said they left.
    left: rustc_hash::FxHashSet<usize>,
    /// Nodes whose heartbeat was read (a bit each): liveness is known.
    heard: u64,
    /// The routes of nodes without a number (forgotten, or past the node limit), by node id:
    /// the table has them again when the node does (a recent heartbeat).
    aside: FxHashMap<String, FxHashMap<String, RouteState>>,
    /// This node's filters in the topic, as read at start and written since.
    published: FxHashMap<String, RouteState>,
    /// This node's filters with subscribers, and on which shards (a bit each).
    local: FxHashMap<String, Masks>,
    /// The topic's end at start: caught up once read past it.
    end_at_start: i64,
    caught_up: bool,
    reconciled: bool,
    last_beat: Option<Instant>,
    changed: bool,
    /// This node's downlink is congested (said in its heartbeats: `congestion.rs`).
    congested: bool,
    /// Another process's heartbeats under this node's id were read (logged once).
    duplicate_seen: bool,
    over_nodes_logged: bool,
    /// The producer refused a record (logged once per streak).
    send_failing: bool,
}

/// A running routes thread.
#[derive(Debug)]
pub struct Node {
    /// The route table's current snapshot (the shards' cluster sinks read it).
    pub table: Arc<ArcSwap<RouteTable>>,
    /// Where the shards report their route changes.
    pub feed: Arc<Feed>,
    ready: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    _salvage: super::salvage::Salvager,
    _wills: super::wills::WillsThread,
    _lag: Option<super::Worker>,
}

impl Node {
    /// Connects to Kafka, creates the routes topic and this node's downlink topic when
    /// missing, and starts the routes thread (it waits for [`Node::shards_ready`] before it
    /// reconciles this node's routes).
    pub fn start(
        kafka: &KafkaConfig,
        config: &ClusterConfig,
        record_bytes_max: usize,
        doorbells: Vec<std::fs::File>,
    ) -> anyhow::Result<Self> {
        super::create_topics(kafka, config, record_bytes_max)?;
        let consumer = super::reader(kafka, config, "routes")?;
        let wait = Duration::from_millis(kafka.timeout_ms);
        // Records are written to partition 0 and read from it: another partition would hold
        // routes nobody reads.
        let partitions = crate::kafka::partitions(&consumer, &config.routes_topic, wait)
            .map_err(|e| anyhow::anyhow!("cluster: kafka at {}: {e}", kafka.brokers))?;
        if partitions != 1 {
            anyhow::bail!(
                "cluster: {} has {partitions} partitions: the routes topic must have exactly one",
                config.routes_topic
            );
        }
        let (_, end_at_start) = consumer
            .fetch_watermarks(&config.routes_topic, 0, wait)
            .map_err(|e| {
                anyhow::anyhow!(
                    "cluster: kafka at {}: reading the end of {}: {e}",
                    kafka.brokers,
                    config.routes_topic
                )
            })?;
        let mut assignment = TopicPartitionList::new();
        assignment
            .add_partition_offset(&config.routes_topic, 0, Offset::Beginning)
            .map_err(|e| anyhow::anyhow!("cluster: {e}"))?;
        consumer
            .assign(&assignment)
            .map_err(|e| anyhow::anyhow!("cluster: reading {}: {e}", config.routes_topic))?;
        let mut producer_config = crate::kafka::sink::producer_config(kafka, 0, record_bytes_max);
        producer_config
            .set(
                "client.id",
                format!("{}-{}-routes", kafka.client_id, config.node_id),
            )
            .set("linger.ms", "1");
        let written = Arc::new(Written::default());
        let producer = Renewing::new(
            producer_config,
            WrittenCtx(written.clone()),
            "cluster routes",
            "the route records it held are written again",
        )
        // Its reports counted before the new one's: SUBACK barriers compare one count of
        // completions, in order, with the records sent.
        .map(Renewing::retiring_inline)
        .map_err(|e| anyhow::anyhow!("cluster: cannot create the routes producer: {e}"))?;
        let table = RouteTable::new(&config.node_id);
        let snapshot = Arc::new(ArcSwap::from_pointee(table.clone()));
        let feed = Arc::new(Feed::new(doorbells, config));
        let ready = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut routes = Routes {
            config: config.clone(),
            consumer,
            producer,
            written,
            sent: 0,
            barriers: Vec::new(),
            feed: feed.clone(),
            snapshot: snapshot.clone(),
            ready: ready.clone(),
            started: started.clone(),
            table,
            seen: FxHashMap::default(),
            incarnations: FxHashMap::default(),
            started_ms: crate::kafka::now_millis(),
            judged: None,
            left: rustc_hash::FxHashSet::default(),
            heard: 0,
            aside: FxHashMap::default(),
            published: FxHashMap::default(),
            local: FxHashMap::default(),
            end_at_start,
            caught_up: end_at_start <= 0,
            reconciled: false,
            last_beat: None,
            congested: false,
            duplicate_seen: false,
            // The first pass stores the snapshot and the live count.
            changed: true,
            over_nodes_logged: false,
            send_failing: false,
        };
        let salvage = super::salvage::start_salvage(
            kafka,
            config,
            record_bytes_max,
            snapshot.clone(),
            feed.clone(),
        )?;
        let wills = super::wills::start_wills(
            kafka,
            config,
            record_bytes_max,
            snapshot.clone(),
            feed.clone(),
        )?;
        let lag = super::lag::start_lag(kafka, config, feed.clone())?;
        // What this node's previous process left in its wills topic (its clients'
        // connections died with it), unless a node that saw it dead published them first.
        feed.wills.restarted(&config.node_id, routes.started_ms);
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-routes".into())
            .spawn(move || routes.run(&stopping))?;
        let node = Self {
            table: snapshot,
            feed,
            ready,
            stop,
            thread: Some(thread),
            _salvage: salvage,
            _wills: wills,
            _lag: lag,
        };
        // No client is served before the table holds the other nodes' routes and liveness:
        // a publish acknowledged earlier would reach nobody there.
        let deadline = Instant::now() + wait;
        while !started.load(Ordering::Acquire) {
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "cluster: kafka at {}: {} not read to its end within kafka.timeout_ms",
                    kafka.brokers,
                    config.routes_topic
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::info!(node = %config.node_id, routes = %config.routes_topic, downlink = %config.downlink(), "cluster node started");
        Ok(node)
    }

    /// Every shard runs (its restored subscriptions reported): this node's routes may be
    /// reconciled with the topic.
    pub fn shards_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Writes the "left" heartbeat and stops the thread.
    pub fn stop_and_join(self) {
        drop(self);
    }
}

impl Drop for Node {
    /// Also on a failed start: the thread does not outlive the node.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Routes {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            self.read();
            // Read before the changes are drained: every restored filter a shard reported
            // before saying it runs is then in `local` when `reconcile` compares.
            let ready = self.ready.load(Ordering::Acquire);
            self.take_changes();
            if self.caught_up && ready {
                self.reconcile();
            }
            self.producer.renew_if_failed();
            self.feed
                .routes_replaced
                .store(self.producer.renewed, Ordering::Relaxed);
            self.answer_barriers();
            self.judge_congestion();
            self.beat();
            self.liveness();
            if std::mem::take(&mut self.changed) {
                self.snapshot.store(Arc::new(self.table.clone()));
                self.feed.nodes(&self.table);
            }
            if self.caught_up {
                // The table holds every node's routes and liveness: the node may serve.
                self.started.store(true, Ordering::Release);
            }
        }
        // Other nodes stop routing here at once rather than after the node timeout (a
        // producer that failed for good is replaced first, if its pause is over).
        self.producer.renew_if_failed();
        self.send(
            &self.config.node_id.clone(),
            Some(Beat::left_now().as_bytes()),
        );
        let _ = self.producer.producer().flush(Duration::from_secs(5));
    }

    /// Applies what the routes topic has (up to [`RECORDS_PER_PASS`], the first within 20 ms).
    fn read(&mut self) {
        let mut wait = Duration::from_millis(20);
        for _ in 0..RECORDS_PER_PASS {
            let Some(result) = self.consumer.poll(wait) else {
                break;
            };
            wait = Duration::ZERO;
            let record = match result {
                Ok(r) => r,
                Err(rdkafka::error::KafkaError::PartitionEOF(_)) => {
                    // At the end (compaction may have removed the last offset at start).
                    self.caught_up_now();
                    break;
                }
                Err(e) => {
                    tracing::debug!("cluster routes: {e}");
                    break;
                }
            };
            let offset = record.offset();
            let key = record
                .key()
                .and_then(|k| std::str::from_utf8(k).ok())
                .map(str::to_string);
            let payload = record.payload().map(<[u8]>::to_vec);
            let started = liveness::started_of(&record);
            let congested = congestion::congested_of(&record);
            drop(record);
            if let Some(key) = key {
                self.apply(&key, payload.as_deref(), started, congested);
            }
            if offset + 1 >= self.end_at_start {
                self.caught_up_now();
            }
        }
    }

    fn caught_up_now(&mut self) {
        if !self.caught_up {
            self.caught_up = true;
            tracing::info!(
                nodes = self.seen.len(),
                "cluster routes read up to their end at start"
            );
        }
    }

    /// Applies one record of the routes topic (`started`: a heartbeat's incarnation;
    /// `congested`: whether it says its node's downlink is congested).
    fn apply(
        &mut self,
        key: &str,
        payload: Option<&[u8]>,
        started: Option<i64>,
        congested: Option<bool>,
    ) {
        let own = self.config.node_id.as_str();
        let (node, filter) = match key.split_once('/') {
            Some((node, filter)) => (node, Some(filter)),
            None => (key, None),
        };
        if node == own {
            if let Some(filter) = filter.filter(|f| !f.is_empty() && !self.caught_up) {
                let state = RouteState::of(payload);
                if state == RouteState::None {
                    self.published.remove(filter);
                } else {
                    self.published.insert(filter.to_string(), state);
                }
            }
            if filter.is_none() {
                self.heard_own_beat(Beat::parse(payload), started);
            }
            return; // applied when written
        }
        // A record keyed by the node id alone is its heartbeat.
        let beat = filter.is_none().then(|| Beat::parse(payload));
        let wakes = beat.is_some_and(|b| self.recent(b));
        let Some(index) = self.number(node, beat.is_some(), wakes) else {
            // Kept aside, even empty: a node long gone (its heartbeat old, or its "left") takes
            // no number for the route records that may follow it (written after its last
            // heartbeat, before it died).
            let routes = self.aside.entry(node.to_string()).or_default();
            if let Some(filter) = filter.filter(|f| !f.is_empty()) {
                match RouteState::of(payload) {
                    RouteState::None => routes.remove(filter),
                    state => routes.insert(filter.to_string(), state),
                };
            }
            return;
        };
        match filter {
            Some(filter) if !filter.is_empty() => {
                self.table.set_state(index, filter, RouteState::of(payload));
                self.changed = true;
            }
            Some(_) => {}
            None => {
                self.heard |= 1u64 << index;
                self.heard_incarnation(node, started);
                let beat = beat.unwrap_or(Beat::Left(None));
                let live = matches!(beat, Beat::Live(_));
                self.heard_congestion(index, congested.filter(|_| live));
                if matches!(beat, Beat::Left(_)) {
                    self.left.insert(index);
                } else {
                    self.left.remove(&index);
                }
                if self.caught_up || beat == Beat::Left(None) {
                    match beat {
                        // Live now: the time it arrived, not the writer's clock.
                        Beat::Live(_) => {
                            self.seen.insert(index, Instant::now());
                        }
                        // Dead at once; its kept routes count for node_keep_ms after its last
                        // heartbeat (or from now: a bare `0` carries no time).
                        Beat::Left(_) => {
                            self.seen.entry(index).or_insert_with(Instant::now);
                        }
                    }
                } else {
                    // Catching up: the writer's clock tells old records from recent ones.
                    let at = beat
                        .age_ms()
                        .and_then(|age| Instant::now().checked_sub(Duration::from_millis(age)));
                    match at {
                        Some(at) => self.seen.insert(index, at),
                        // Older than this machine's clock can say: dead, not kept.
                        None => self.seen.remove(&index),
                    };
                }
            }
        }
    }

    /// Whether a heartbeat record says its node is live now or was lately: not one saying it
    /// left; while catching up, one written less than `cluster.node_keep_ms` ago.
    fn recent(&self, beat: Beat) -> bool {
        matches!(beat, Beat::Live(_))
            && (self.caught_up || beat.age_ms().is_some_and(|a| a < self.config.node_keep_ms))
    }

    /// Node `node`'s number: the one it has, or a new one (a forgotten node's freed first)
    /// for a route record of a node never seen, or when `wakes` (a recent heartbeat; its
    /// routes aside, if any, are in the table again). `None`: none given (a heartbeat that is
    /// not recent, or no number free: its routes wait aside).
    fn number(&mut self, node: &str, heartbeat: bool, wakes: bool) -> Option<usize> {
        if let Some(index) = self.table.find(node) {
            return Some(index);
        }
        // A node long gone (its last heartbeat, or its "left", old) takes no number.
        if (heartbeat || self.aside.contains_key(node)) && !wakes {
            return None;
        }
        let index = match self.table.index(node) {
            Some(index) => index,
            None => {
                self.forget_dead();
                let Some(index) = self.table.index(node) else {
                    if !self.over_nodes_logged {
                        tracing::warn!(
                            node,
                            "cluster: more than 64 nodes known; this one is not routed to until another is forgotten"
                        );
                        self.over_nodes_logged = true;
                    }
                    return None;
                };
                index
            }
        };
        if let Some(routes) = self.aside.remove(node) {
            tracing::info!(
                node,
                routes = routes.len(),
                "cluster: a forgotten node is back: its routes count again"
            );
            for (filter, state) in routes {
                self.table.set_state(index, &filter, state);
            }
            self.changed = true;
        }
        Some(index)
    }

    /// The shards' route changes, applied to this node's filters (and its own bits in the
    /// table, at once: a shared group with members here is served here), and their SUBACK
    /// barriers.
    fn take_changes(&mut self) {
        let own = self.table.own();
        while let Some(change) = self.feed.changes.pop() {
            let (shard, filter, state) = match change {
                Change::Route(shard, filter, state) => (shard, filter, state),
                Change::Barrier(shard, token) => {
                    let after = self.reconciled.then_some(self.sent);
                    self.barriers.push((after, shard, token));
                    continue;
                }
            };
            let bit = 1u64 << (shard % 64);
            let masks = self.local.entry(filter.clone()).or_default();
            let before = masks.state();
            masks.kept &= !bit;
            masks.live &= !bit;
            match state {
                RouteState::Kept => masks.kept |= bit,
                RouteState::Live => masks.live |= bit,
                RouteState::None => {}
            }
            let after = masks.state();
            if after == RouteState::None {
                self.local.remove(&filter);
            }
            if before != after {
                self.table.set_state(own, &filter, after);
                self.changed = true;
                if self.reconciled {
                    self.publish(&filter, after);
                }
            }
        }
    }

    /// Writes what differs between this node's records in the topic and its filters.
    fn reconcile(&mut self) {
        if self.reconciled {
            return;
        }
        self.reconciled = true;
        let stale: Vec<String> = self
            .published
            .keys()
            .filter(|f| !self.local.contains_key(*f))
            .cloned()
            .collect();
        let missing: Vec<(String, RouteState)> = self
            .local
            .iter()
            .map(|(f, m)| (f, m.state()))
            .filter(|(f, state)| self.published.get(*f) != Some(state))
            .map(|(f, state)| (f.clone(), state))
            .collect();
        for filter in &stale {
            self.publish(filter, RouteState::None);
        }
        for (filter, state) in &missing {
            self.publish(filter, *state);
        }
        // SUBACKs that came before wait for these records too.
        for b in &mut self.barriers {
            b.0 = Some(self.sent);
        }
        tracing::info!(
            routes = self.local.len(),
            added = missing.len(),
            removed = stale.len(),
            "cluster: this node's routes written"
        );
    }

    fn publish(&mut self, filter: &str, state: RouteState) {
        if state == RouteState::None {
            self.published.remove(filter);
        } else {
            self.published.insert(filter.to_string(), state);
        }
        let key = format!("{}/{filter}", self.config.node_id);
        self.send(&key, state.value());
    }

    /// Route records Kafka did not acknowledge: their filter's current state, written again;
    /// the SUBACKs waiting wait for the new records too.
    fn rewrite_failed(&mut self) {
        // Taken first: a record the producer refuses again comes back to the queue, for a
        // later pass.
        let keys: Vec<String> = std::iter::from_fn(|| self.written.failed.pop()).collect();
        if self.producer.producer().client().fatal_error().is_some() {
            // Waiting for the replacement: it would refuse them all.
            keys.into_iter().for_each(|k| self.written.failed.push(k));
            return;
        }
        let mut any = false;
        for key in keys {
            let Some((_, filter)) = key.split_once('/') else {
                continue;
            };
            let state = self
                .local
                .get(filter)
                .map_or(RouteState::None, |m| m.state());
            self.publish(filter, state);
            any = true;
        }
        if any {
            let sent = self.sent;
            for b in self.barriers.iter_mut().filter(|b| b.0.is_some()) {
                b.0 = Some(sent);
            }
        }
    }

    /// Answers the barriers whose records were all acknowledged.
    fn answer_barriers(&mut self) {
        // Completions counted before the failures are looked at: a failed record's key is
        // pushed before its completion is counted, so it is rewritten (and its barriers moved
        // past the rewrite) before any barrier is answered on its account.
        let completed = self.written.completed.load(Ordering::Acquire);
        self.rewrite_failed();
        // A record refused again (or waiting for a producer to replace a failed one) counts
        // in `completed` without being in Kafka: no barrier is answered while one waits.
        if self.barriers.is_empty() || !self.written.failed.is_empty() {
            return;
        }
        let feed = &self.feed;
        self.barriers.retain(|&(after, shard, token)| {
            if after.is_none_or(|a| completed < a) {
                return true;
            }
            if let Some((queue, bell)) = feed.answers.get(usize::from(shard)) {
                queue.push(token);
                bell.ring();
            }
            false
        });
    }

    /// Produces one record (every record counts in `sent`: completions count them all).
    fn send(&mut self, key: &str, payload: Option<&[u8]>) {
        self.sent += 1;
        let mut record = BaseRecord::<str, [u8]>::to(&self.config.routes_topic)
            .key(key)
            .partition(0);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        // The incarnation only once the shards run (this node's own sessions loaded): a node
        // claiming a session before then sees the restart after its claim.
        if key == self.config.node_id {
            let started = self
                .ready
                .load(Ordering::Acquire)
                .then_some(self.started_ms);
            record = record.headers(liveness::beat_headers(started, self.congested));
        }
        match self.producer.producer().send(record) {
            Ok(()) => self.send_failing = false,
            Err((e, _)) => {
                // Never queued: it completes here, and a route record is written again
                // (a producer that failed for good refuses every record until it is
                // replaced).
                if key.contains('/') {
                    self.written.failed.push(key.to_string());
                }
                self.written.completed.fetch_add(1, Ordering::AcqRel);
                if !std::mem::replace(&mut self.send_failing, true) {
                    tracing::warn!(key, "cluster: a routes record was not produced ({e}); route records are written again");
                }
            }
        }
    }
}
