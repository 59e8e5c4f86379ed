//! The routes thread of a cluster node: it reads the compacted routes topic from its start
//! (every node's "node N has subscribers for filter F" records, tombstones when it has no
//! more, and heartbeats), keeps the route table and each node's liveness, and publishes a new
//! snapshot for the shards when either changes. It writes this node's own records: a route
//! record when a filter gets its first subscriber on any shard of this node, a tombstone when
//! its last one goes, a heartbeat every `cluster.heartbeat_ms`, and a "left" heartbeat at a
//! clean shutdown.
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
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message as _;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::{FxHashMap, FxHashSet};

use super::config::ClusterConfig;
use super::table::RouteTable;
use crate::ids::ShardId;
use crate::kafka::config::KafkaConfig;

/// Route changes the shards report: (shard, filter, has subscribers).
#[derive(Debug, Default)]
pub struct Feed {
    changes: SegQueue<(u16, String, bool)>,
}

impl Feed {
    /// `filter` got its first local subscriber on `shard` (`on`), or lost its last one. Each
    /// change stands for a filter's first or last subscriber on a shard, so what waits here
    /// is bounded by the shards' subscriptions.
    pub fn changed(&self, shard: ShardId, filter: &str, on: bool) {
        self.changes.push((shard.0, filter.to_string(), on));
    }
}

/// Records taken from the routes topic per loop pass at most.
const RECORDS_PER_PASS: usize = 10_000;

/// The routes thread's state.
struct Routes {
    config: ClusterConfig,
    consumer: BaseConsumer<crate::kafka::Quiet>,
    producer: ThreadedProducer<DefaultProducerContext>,
    feed: Arc<Feed>,
    snapshot: Arc<ArcSwap<RouteTable>>,
    ready: Arc<AtomicBool>,
    table: RouteTable,
    /// When each node's last heartbeat was written (by its clock, as seen here).
    seen: FxHashMap<usize, Instant>,
    /// This node's filters in the topic, as read at start and written since.
    published: FxHashSet<String>,
    /// This node's filters with subscribers, and on which shards (a bit each).
    local: FxHashMap<String, u64>,
    /// The topic's end at start: caught up once read past it.
    end_at_start: i64,
    caught_up: bool,
    reconciled: bool,
    last_beat: Option<Instant>,
    changed: bool,
    over_nodes_logged: bool,
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
}

impl Node {
    /// Connects to Kafka, creates the routes topic and this node's downlink topic when
    /// missing, and starts the routes thread (it waits for [`Node::shards_ready`] before it
    /// reconciles this node's routes).
    pub fn start(
        kafka: &KafkaConfig,
        config: &ClusterConfig,
        record_bytes_max: usize,
    ) -> anyhow::Result<Self> {
        super::create_topics(kafka, config, record_bytes_max)?;
        let consumer: BaseConsumer<crate::kafka::Quiet> = ClientConfig::new()
            .set("bootstrap.servers", &kafka.brokers)
            .set(
                "client.id",
                format!("{}-{}-routes", kafka.client_id, config.node_id),
            )
            .set("group.id", format!("ringmq-routes-{}", config.node_id))
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "false")
            .set("fetch.wait.max.ms", "10")
            .set("allow.auto.create.topics", "false")
            .set("broker.address.family", "v4")
            .create_with_context(crate::kafka::Quiet)
            .map_err(|e| anyhow::anyhow!("cluster: cannot create the routes consumer: {e}"))?;
        let wait = Duration::from_millis(kafka.timeout_ms);
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
        let producer: ThreadedProducer<DefaultProducerContext> = producer_config
            .create()
            .map_err(|e| anyhow::anyhow!("cluster: cannot create the routes producer: {e}"))?;
        let table = RouteTable::new(&config.node_id);
        let snapshot = Arc::new(ArcSwap::from_pointee(table.clone()));
        let feed = Arc::new(Feed::default());
        let ready = Arc::new(AtomicBool::new(false));
        let stop = Arc::new(AtomicBool::new(false));
        let mut routes = Routes {
            config: config.clone(),
            consumer,
            producer,
            feed: feed.clone(),
            snapshot: snapshot.clone(),
            ready: ready.clone(),
            table,
            seen: FxHashMap::default(),
            published: FxHashSet::default(),
            local: FxHashMap::default(),
            end_at_start,
            caught_up: end_at_start <= 0,
            reconciled: false,
            last_beat: None,
            changed: false,
            over_nodes_logged: false,
        };
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cluster-routes".into())
            .spawn(move || routes.run(&stopping))?;
        tracing::info!(node = %config.node_id, routes = %config.routes_topic, downlink = %config.downlink(), "cluster node started");
        Ok(Self {
            table: snapshot,
            feed,
            ready,
            stop,
            thread: Some(thread),
        })
    }

    /// Every shard runs (its restored subscriptions reported): this node's routes may be
    /// reconciled with the topic.
    pub fn shards_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Writes the "left" heartbeat and stops the thread.
    pub fn stop_and_join(mut self) {
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
            self.take_changes();
            if self.caught_up && self.ready.load(Ordering::Acquire) {
                self.reconcile();
            }
            self.beat();
            self.liveness();
            if std::mem::take(&mut self.changed) {
                self.snapshot.store(Arc::new(self.table.clone()));
            }
        }
        // Other nodes stop routing here at once rather than after the node timeout.
        self.send(&self.config.node_id.clone(), Some(b"0".as_slice()));
        let _ = self.producer.flush(Duration::from_secs(5));
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
            drop(record);
            if let Some(key) = key {
                self.apply(&key, payload.as_deref());
            }
            if !self.caught_up && offset + 1 >= self.end_at_start {
                self.caught_up = true;
                tracing::info!(
                    nodes = self.seen.len(),
                    "cluster routes read up to their end at start"
                );
            }
        }
    }

    fn apply(&mut self, key: &str, payload: Option<&[u8]>) {
        let own = self.config.node_id.as_str();
        let (node, filter) = match key.split_once('/') {
            Some((node, filter)) => (node, Some(filter)),
            None => (key, None),
        };
        let Some(index) = self.table.index(node) else {
            if !self.over_nodes_logged {
                tracing::warn!(
                    node,
                    "cluster: more than 64 nodes; this one is not routed to"
                );
                self.over_nodes_logged = true;
            }
            return;
        };
        match filter {
            Some(filter) if !filter.is_empty() => {
                let on = payload.is_some();
                if node == own {
                    if !self.caught_up {
                        if on {
                            self.published.insert(filter.to_string());
                        } else {
                            self.published.remove(filter);
                        }
                    }
                    return; // applied when written
                }
                self.table.set(index, filter, on);
                self.changed = true;
            }
            Some(_) => {}
            None if node == own => {}
            None => {
                let written = payload
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .and_then(|p| p.parse::<i64>().ok())
                    .unwrap_or(0);
                let age = crate::kafka::now_millis().saturating_sub(written);
                let timeout = i64::try_from(self.config.node_timeout_ms).unwrap_or(i64::MAX);
                if written == 0 || age >= timeout {
                    self.seen.remove(&index);
                } else {
                    let age = Duration::from_millis(u64::try_from(age.max(0)).unwrap_or(0));
                    let at = Instant::now().checked_sub(age).unwrap_or_else(Instant::now);
                    self.seen.insert(index, at);
                }
            }
        }
    }

    /// The shards' route changes, applied to this node's filters (and its own bits in the
    /// table, at once: a shared group with members here is served here).
    fn take_changes(&mut self) {
        let own = self.table.own();
        while let Some((shard, filter, on)) = self.feed.changes.pop() {
            let bit = 1u64 << (shard % 64);
            let mask = self.local.entry(filter.clone()).or_default();
            let before = *mask != 0;
            if on {
                *mask |= bit;
            } else {
                *mask &= !bit;
            }
            let after = *mask != 0;
            if !after {
                self.local.remove(&filter);
            }
            if before != after {
                self.table.set(own, &filter, after);
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
            .iter()
            .filter(|f| !self.local.contains_key(*f))
            .cloned()
            .collect();
        let missing: Vec<String> = self
            .local
            .keys()
            .filter(|f| !self.published.contains(*f))
            .cloned()
            .collect();
        for filter in &stale {
            self.publish(filter, false);
        }
        for filter in &missing {
            self.publish(filter, true);
        }
        tracing::info!(
            routes = self.local.len(),
            added = missing.len(),
            removed = stale.len(),
            "cluster: this node's routes written"
        );
    }

    fn publish(&mut self, filter: &str, on: bool) {
        if on {
            self.published.insert(filter.to_string());
        } else {
            self.published.remove(filter);
        }
        let key = format!("{}/{filter}", self.config.node_id);
        self.send(&key, on.then_some(b"1".as_slice()));
    }

    fn send(&self, key: &str, payload: Option<&[u8]>) {
        let mut record = BaseRecord::<str, [u8]>::to(&self.config.routes_topic).key(key);
        if let Some(p) = payload {
            record = record.payload(p);
        }
        if let Err((e, _)) = self.producer.send(record) {
            tracing::warn!(key, "cluster: a routes record was not produced: {e}");
        }
    }

    fn beat(&mut self) {
        let every = Duration::from_millis(self.config.heartbeat_ms);
        if self.last_beat.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_beat = Some(Instant::now());
        let now = crate::kafka::now_millis().to_string();
        self.send(&self.config.node_id.clone(), Some(now.as_bytes()));
    }

    fn liveness(&mut self) {
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        let own = self.table.own();
        let mut i = 0;
        while let Some(node) = self.table.node(i) {
            let live = i == own || self.seen.get(&i).is_some_and(|t| t.elapsed() < timeout);
            let was = self.table.live() & (1u64 << i) != 0;
            if live != was {
                tracing::info!(
                    node,
                    live,
                    "cluster: node {}",
                    if live {
                        "live"
                    } else {
                        "dead (no heartbeat within cluster.node_timeout_ms) or left"
                    }
                );
                self.table.set_live(i, live);
                self.changed = true;
            }
            i += 1;
        }
    }
}
