//! Clustering over Kafka: several ringmq nodes share one Kafka; a client may connect to any
//! node and receives what is published on every node.
//!
//! - **Routes**: each node writes "node N has subscribers for filter F" (a shared group's
//!   members too; `p` when a persistent session is among them) to a compacted routes topic
//!   when that changes, and a tombstone when the last one goes, with a heartbeat; every node
//!   reads the
//!   topic from its start (`routes.rs`) into a route table (`table.rs`) whose snapshots the
//!   shards read without a lock.
//! - **Delivery**: a message published on a node whose matching subscribers include other
//!   live nodes is produced once per such node to that node's downlink topic (`sink.rs`, a
//!   sink on each shard; the PUBACK waits for Kafka's acknowledgement of every copy). Each
//!   node consumes its own downlink (the Kafka -> MQTT consumer, with a downlink route that
//!   takes the MQTT topic, QoS and RETAIN from the record's headers) and publishes the
//!   messages to its local subscribers only: a downlink's messages are offered to no sink, so
//!   nothing loops.
//! - **Shared groups**: a group with members on the publishing node is served there; one
//!   without gets one copy, sent to one of the live nodes with members (rotating).
//! - **Retained**: a retained message goes to every other live node, which keeps it too, and
//!   to the compacted retained topic (`retained.rs`), which a node reads from its start when
//!   it starts: a node that joins later, or comes back without its store, has them too.
//! - **Liveness**: a node without a heartbeat for `cluster.node_timeout_ms` is not routed to,
//!   except for filters a persistent session there subscribes to ([`RouteState::Kept`]): those
//!   copies wait in its downlink until it is back. A node stopping cleanly says so at once. A
//!   node dead for longer than `cluster.node_keep_ms` is forgotten: its number (of at most 64)
//!   goes to the next new node, its routes wait aside until it is back.
//!
//! - **Kafka -> MQTT**: a record a node's bridge consumed is offered to the cluster sink too
//!   (never to the Kafka sink), so every node's subscribers get it.
//!
//! - **Moves**: a session whose client connected to another node (the Redis owner key moved)
//!   is forgotten here but followed for a while (`handover.rs`): downlink records for it that
//!   still arrive here are produced again to its new node, addressed to it alone.
//!
//! - **Wills**: each node keeps its clients' wills in its own compacted wills topic; when a
//!   node dies, the live node with the smallest id publishes them (`wills.rs`).
//!
//! - **Salvage**: a session taken from a dead node (its client connected here while that
//!   node was down) gets the copies for it still in that node's downlink (`salvage.rs`:
//!   read from the dead node's committed offsets, produced again here for that session).

/// What a node's (or a shard's) subscribers of one filter ask of the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RouteState {
    /// No subscriber.
    None,
    /// Route here while this node is live (record value `1`).
    Live,
    /// A persistent session subscribes: route here even while this node is dead (record
    /// value `p`), its messages wait in the downlink until it is back.
    Kept,
}

impl RouteState {
    /// The routes topic's record value (None: a tombstone).
    pub fn value(self) -> Option<&'static [u8]> {
        match self {
            Self::None => None,
            Self::Live => Some(b"1"),
            Self::Kept => Some(b"p"),
        }
    }

    /// From a record value.
    pub fn of(value: Option<&[u8]>) -> Self {
        match value {
            None => Self::None,
            Some(b"p") => Self::Kept,
            Some(_) => Self::Live,
        }
    }
}

mod beat;
pub mod config;
pub mod feed;
pub mod handover;
pub mod lag;
pub mod retained;
pub mod routes;
pub mod salvage;
pub mod sink;
pub mod table;
pub mod wills;

use rdkafka::admin::{NewTopic, TopicReplication};

use crate::kafka::config::KafkaConfig;
use config::ClusterConfig;

/// A background thread of a node (salvage, wills): stopped (its flag set) and joined when
/// dropped.
#[derive(Debug)]
pub struct Worker {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    /// Runs `run` on a thread named `name`; `run` returns once the flag it is given is set.
    pub(crate) fn spawn(
        name: &str,
        run: impl FnOnce(&std::sync::atomic::AtomicBool) + Send + 'static,
    ) -> anyhow::Result<Self> {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || run(&stopping))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A consumer of one of the cluster's topics, read by assignment (`role` names it in its
/// client id and group: `routes`, `retained`); no offsets committed.
pub(crate) fn reader(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    role: &str,
) -> anyhow::Result<rdkafka::consumer::BaseConsumer<crate::kafka::Quiet>> {
    reader_config(kafka, config, role)
        .create_with_context(crate::kafka::Quiet)
        .map_err(|e| anyhow::anyhow!("cluster: cannot create the {role} consumer: {e}"))
}

/// [`reader`]'s settings (a reader of another group sets its own `group.id` over them).
pub(crate) fn reader_config(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    role: &str,
) -> rdkafka::ClientConfig {
    let mut c = rdkafka::ClientConfig::new();
    c.set("bootstrap.servers", &kafka.brokers)
        .set(
            "client.id",
            format!("{}-{}-{role}", kafka.client_id, config.node_id),
        )
        .set("group.id", format!("ringmq-{role}-{}", config.node_id))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("allow.auto.create.topics", "false")
        .set("broker.address.family", "v4");
    c
}

/// Creates the routes topic (one partition, compacted), the retained topic (compacted), this
/// node's downlink topic and its wills topic (compacted; `kafka.partitions` each) when
/// missing.
pub fn create_topics(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    record_bytes_max: usize,
) -> anyhow::Result<()> {
    let downlink = config.downlink();
    let wills = config.wills_of(&config.node_id);
    let replication = || TopicReplication::Fixed(kafka.replication);
    let topics = [
        // Compacted, with segments rolled every 10 minutes so old heartbeats and routes go.
        NewTopic::new(&config.routes_topic, 1, replication())
            .set("cleanup.policy", "compact")
            .set("segment.ms", "600000")
            .set("min.cleanable.dirty.ratio", "0.1"),
        NewTopic::new(&downlink, kafka.partitions, replication()),
        // Compacted: the last will record of each client stays (keyed by client id).
        NewTopic::new(&wills, kafka.partitions, replication())
            .set("cleanup.policy", "compact")
            .set("segment.ms", "600000")
            .set("min.cleanable.dirty.ratio", "0.1"),
        // Compacted: the last record of each MQTT topic stays (a clear's tombstone goes after
        // Kafka's delete.retention.ms, a day by default).
        NewTopic::new(&config.retained_topic, kafka.partitions, replication())
            .set("cleanup.policy", "compact")
            .set("segment.ms", "600000")
            .set("min.cleanable.dirty.ratio", "0.1"),
    ];
    crate::kafka::create(kafka, &topics, record_bytes_max)
        .map_err(|e| anyhow::anyhow!("cluster: {e}"))
}
