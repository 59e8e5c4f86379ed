//! Wills of a dead node's clients. Each node keeps the will of every connected client (and
//! of one whose delay runs) in its compacted wills topic (`cluster.wills_prefix` + node id,
//! keyed by client id: `core/wills.rs` writes it, a tombstone once the will was published,
//! cancelled, or the session ended or moved). When a node is seen dead (no heartbeat for
//! `cluster.node_timeout_ms`; not one that left cleanly: it published its clients' wills
//! itself), the live node with the smallest id (each node judges from its own table: two may
//! disagree for a moment, so a will may come twice, at least once) reads that node's wills
//! topic to its end and, after each will's delay (counted from then), produces it as a copy
//! to every live node's downlink (and to the retained topic when it is retained), which
//! publish it to their subscribers as any copy; then writes its tombstone. A node starting
//! does the same with the records of its own topic written before it started (its previous
//! process's clients, whose connections died with it), unless a survivor did first.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::config::ClusterConfig;
use super::table::RouteTable;
use crate::kafka::config::KafkaConfig;

/// The header of a will record: its delay, seconds (the will's delay interval, at most the
/// session's expiry).
pub const DELAY_HEADER: &str = "mqtt.will_delay";
/// At most this many wills wait for their delay at once (more are published at once).
const WAITING_MAX: usize = 1_000_000;

/// Nodes whose wills are to be published, from the routes thread; the count published.
#[derive(Debug, Default)]
pub struct WillJobs {
    queue: SegQueue<Job>,
    published: AtomicU64,
}

/// One node's wills topic to read: the records produced before `before_ms` (Kafka's
/// timestamps).
#[derive(Debug)]
struct Job {
    node: Box<str>,
    before_ms: i64,
}

impl WillJobs {
    /// Node `node` is dead: publish the wills of its clients (the records written before
    /// now: a process of it starting later writes its own clients').
    pub(super) fn dead(&self, node: &str) {
        self.queue.push(Job {
            node: node.into(),
            before_ms: crate::kafka::now_millis(),
        });
    }

    /// This node started at `started_ms`: publish what its previous process left.
    pub(super) fn restarted(&self, node: &str, started_ms: i64) {
        self.queue.push(Job {
            node: node.into(),
            before_ms: started_ms,
        });
    }

    /// Wills published for dead nodes' clients.
    pub fn published(&self) -> u64 {
        self.published.load(Ordering::Relaxed)
    }
}

/// Whether this node publishes the wills of dead node `dead`: it is the live node with the
/// smallest id (by its own table).
pub(super) fn is_publisher(table: &RouteTable, own: &str, dead: &str) -> bool {
    let live = table.live();
    (0..table.numbered())
        .filter(|&i| live & (1u64 << i) != 0)
        .filter_map(|i| table.node(i))
        .filter(|&id| id != dead)
        .min()
        == Some(own)
}

/// A will record's content.
struct Will {
    delay: u64,
    payload: Vec<u8>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

/// The last record of each client in a wills topic: where it is, and its will (`None`: a
/// tombstone).
type Latest = FxHashMap<Vec<u8>, ((i32, i64), Option<Will>)>;

/// A will read, waiting for its delay.
struct Waiting {
    at: Instant,
    node: Box<str>,
    client: Vec<u8>,
    /// Its record's (partition, offset).
    record: (i32, i64),
    will: Will,
}

/// The running wills thread (stopped and joined when dropped).
pub type WillsThread = super::Worker;

/// Starts the wills thread serving the jobs in the node's feed, reading the route table.
pub fn start_wills(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    record_bytes_max: usize,
    table: Arc<ArcSwap<RouteTable>>,
    feed: Arc<super::feed::Feed>,
) -> anyhow::Result<WillsThread> {
    let mut producer_config = crate::kafka::sink::producer_config(kafka, 0, record_bytes_max);
    producer_config.set(
        "client.id",
        format!("{}-{}-wills", kafka.client_id, config.node_id),
    );
    let mut work = Work {
        kafka: kafka.clone(),
        config: config.clone(),
        table,
        feed,
        producer_config,
        producer: None,
        waiting: Vec::new(),
    };
    super::Worker::spawn("cluster-wills", move |stop| work.run(stop))
}

struct Work {
    kafka: KafkaConfig,
    config: ClusterConfig,
    table: Arc<ArcSwap<RouteTable>>,
    feed: Arc<super::feed::Feed>,
    producer_config: ClientConfig,
    /// Made at the first will (none idles in a node that never publishes one).
    producer: Option<BaseProducer<crate::kafka::Quiet>>,
    waiting: Vec<Waiting>,
}

impl Work {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            while let Some(job) = self.feed.wills.queue.pop() {
                if let Err(e) = self.read(&job, stop) {
                    tracing::error!(node = %job.node, error = %e, "the wills of a dead node's clients could not be read: not published");
                }
            }
            self.publish_due(stop);
            if let Some(p) = &self.producer {
                p.poll(Duration::ZERO);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(p) = &self.producer {
            let _ = p.flush(Duration::from_millis(self.kafka.timeout_ms));
        }
    }

    /// Reads node `node`'s wills topic to its end: the last record of each client among
    /// those produced before `before_ms`, where it is (partition, offset), and the will it
    /// holds (`None`: a tombstone).
    fn scan(&self, node: &str, before_ms: i64, stop: &AtomicBool) -> anyhow::Result<Latest> {
        let topic = self.config.wills_of(node);
        let consumer: BaseConsumer<crate::kafka::Quiet> =
            super::reader(&self.kafka, &self.config, "wills")?;
        let wait = Duration::from_millis(self.kafka.timeout_ms);
        let partitions = crate::kafka::partitions(&consumer, &topic, wait)
            .map_err(|e| anyhow::anyhow!("the partitions of {topic}: {e}"))?;
        let mut all = TopicPartitionList::new();
        for p in 0..partitions {
            all.add_partition_offset(&topic, i32::try_from(p)?, Offset::Beginning)?;
        }
        consumer.assign(&all)?;
        let mut last = Latest::default();
        let mut at_end = std::collections::BTreeSet::new();
        let mut quiet_since = Instant::now();
        while at_end.len() < partitions {
            if stop.load(Ordering::Acquire) {
                anyhow::bail!("the broker stops");
            }
            if quiet_since.elapsed() > wait {
                anyhow::bail!("no progress for kafka.timeout_ms");
            }
            let m = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(topic, error = %e, "reading a wills topic");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            quiet_since = Instant::now();
            at_end.remove(&m.partition());
            if m.timestamp().to_millis().unwrap_or(0) >= before_ms {
                continue;
            }
            let Some(client) = m.key() else {
                continue;
            };
            let mut delay = None;
            let mut headers = Vec::new();
            if let Some(hs) = m.headers() {
                for h in hs.iter() {
                    if h.key == DELAY_HEADER {
                        delay = h
                            .value
                            .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
                    } else {
                        headers.push((h.key.to_string(), h.value.map(<[u8]>::to_vec)));
                    }
                }
            }
            let will = delay.map(|secs: u64| Will {
                delay: secs,
                payload: m.payload().unwrap_or_default().to_vec(),
                headers,
            });
            last.insert(client.to_vec(), ((m.partition(), m.offset()), will));
        }
        Ok(last)
    }

    /// The wills of `job.node`'s clients: each waits for its delay.
    fn read(&mut self, job: &Job, stop: &AtomicBool) -> anyhow::Result<()> {
        let last = self.scan(&job.node, job.before_ms, stop)?;
        let now = Instant::now();
        let found: Vec<Waiting> = last
            .into_iter()
            .filter_map(|(client, (at, will))| {
                let will = will?;
                Some(Waiting {
                    at: now + Duration::from_secs(will.delay),
                    node: job.node.clone(),
                    client,
                    record: at,
                    will,
                })
            })
            .collect();
        if !found.is_empty() {
            tracing::info!(node = %job.node, wills = found.len(), "publishing the wills of a dead node's clients");
        }
        for mut w in found {
            if self.waiting.len() >= WAITING_MAX {
                w.at = now; // past the bound: published at once
            }
            self.waiting.push(w);
        }
        self.publish_due(stop);
        Ok(())
    }

    /// Drops the delayed wills among `due` whose record is no longer their client's last in
    /// its node's topic (the session was resumed on another node, which cleared it, or the
    /// client came back to that node restarted, which wrote a new one).
    fn still_due(&self, due: Vec<Waiting>, stop: &AtomicBool) -> Vec<Waiting> {
        let mut nodes: Vec<Box<str>> = due
            .iter()
            .filter(|w| w.will.delay > 0)
            .map(|w| w.node.clone())
            .collect();
        nodes.sort_unstable();
        nodes.dedup();
        let mut latest: FxHashMap<Box<str>, Latest> = FxHashMap::default();
        for node in nodes {
            match self.scan(&node, i64::MAX, stop) {
                Ok(l) => {
                    latest.insert(node, l);
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "reading a wills topic again after the wills' delay failed: the wills are published");
                }
            }
        }
        due.into_iter()
            .filter(|w| {
                w.will.delay == 0
                    || latest
                        .get(&w.node)
                        .and_then(|l| l.get(&w.client))
                        .is_none_or(|(at, _)| *at == w.record)
            })
            .collect()
    }

    /// Publishes the wills whose delay is over: a copy to every live node's downlink (and
    /// the retained topic for a retained one), then the tombstone in their node's topic.
    fn publish_due(&mut self, stop: &AtomicBool) {
        let now = Instant::now();
        if !self.waiting.iter().any(|w| w.at <= now) {
            return;
        }
        let (due, rest): (Vec<Waiting>, Vec<Waiting>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.at <= now);
        self.waiting = rest;
        let due = self.still_due(due, stop);
        if self.producer.is_none() {
            match self
                .producer_config
                .create_with_context(crate::kafka::Quiet)
            {
                Ok(p) => self.producer = Some(p),
                Err(e) => {
                    tracing::error!(error = %e, "cluster: cannot create the wills producer");
                    return;
                }
            }
        }
        let Some(producer) = &self.producer else {
            return;
        };
        let table = self.table.load();
        let live = table.live();
        let downlinks: Vec<String> = (0..table.numbered())
            .filter(|&i| live & (1u64 << i) != 0)
            .filter_map(|i| table.node(i))
            .map(|id| self.config.downlink_of(id))
            .collect();
        let version = (crate::kafka::now_millis().max(0) as u64 * 1_000).to_string();
        for w in due {
            let retained = w
                .will
                .headers
                .iter()
                .any(|(k, v)| k == "mqtt.retain" && v.as_deref() == Some(b"1"));
            let mut headers = OwnedHeaders::new();
            for (k, v) in &w.will.headers {
                headers = headers.insert(Header {
                    key: k,
                    value: v.as_deref(),
                });
            }
            if retained {
                headers = headers.insert(Header {
                    key: super::retained::VERSION_HEADER,
                    value: Some(version.as_bytes()),
                });
            }
            let mut targets: Vec<&str> = downlinks.iter().map(String::as_str).collect();
            let mqtt_topic = w
                .will
                .headers
                .iter()
                .find(|(k, _)| k == "mqtt.topic")
                .and_then(|(_, v)| v.clone())
                .unwrap_or_default();
            if retained {
                targets.push(&self.config.retained_topic);
            }
            for topic in targets {
                let key = if topic == self.config.retained_topic {
                    &mqtt_topic[..]
                } else {
                    &w.client[..]
                };
                let record = BaseRecord::<[u8], [u8]>::to(topic)
                    .key(key)
                    .payload(&w.will.payload[..])
                    .headers(headers.clone());
                if let Err((e, _)) = producer.send(record) {
                    tracing::warn!(topic, error = %e, "a dead node's client's will was not produced");
                }
            }
            let wills_topic = self.config.wills_of(&w.node);
            let tombstone = BaseRecord::<[u8], [u8]>::to(&wills_topic).key(&w.client[..]);
            if let Err((e, _)) = producer.send(tombstone) {
                tracing::debug!(error = %e, "a will's tombstone was not produced");
            }
            self.feed.wills.published.fetch_add(1, Ordering::Relaxed);
        }
        producer.poll(Duration::ZERO);
    }
}

#[cfg(test)]
mod tests {
    use super::is_publisher;
    use crate::cluster::table::RouteTable;

    #[test]
    fn the_live_node_with_the_smallest_id_publishes_a_dead_nodes_wills() {
        let mut t = RouteTable::new("b");
        let a = t.index("a").unwrap();
        let c = t.index("c").unwrap();
        let d = t.index("d").unwrap();
        t.set_live(c, true);
        t.set_live(d, true);
        // a is dead: b is the smallest live id.
        assert!(is_publisher(&t, "b", "a"));
        t.set_live(a, true);
        assert!(!is_publisher(&t, "b", "d"), "a is live and smaller");
        t.set_live(d, false);
        assert!(!is_publisher(&t, "b", "d"));
    }
}
