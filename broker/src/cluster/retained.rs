//! Retained messages for nodes that join later. Every node's cluster sink produces each
//! retained message (or clear) published there to the compacted retained topic
//! (`cluster.retained_topic`), keyed by its MQTT topic, with its last-writer-wins version in
//! the `mqtt.retain_version` header; a clear is a tombstone (no value). A node starting reads
//! that topic from its start up to its end at that moment ([`catch_up`]) before any shard
//! runs, and each shard applies what it read after its own log's retained messages (the
//! newest version of a topic wins) and logs what wins, as if published there. So a node that joins later, or
//! comes back without its store (`durability = "memory"`), has every retained message the
//! cluster kept meanwhile. Bounded by `retained_count_max` topics and `retained_bytes_max`
//! bytes while reading.
//!
//! Not covered: a retained message published while this node starts, after it read the
//! topic's end and before the other nodes read its first heartbeat (they send it no copy).

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::config::ClusterConfig;
use crate::config::Config;
use crate::durable::recover::Recovered;
use crate::kafka::config::KafkaConfig;
use crate::kafka::to_mqtt::{Record, Route};
use crate::session::Message;

/// The header carrying a retained record's version.
pub const VERSION_HEADER: &str = "mqtt.retain_version";

/// What reading the retained topic found: per MQTT topic its newest version and message
/// (`None`: cleared), and the bytes held.
#[derive(Default)]
struct Found {
    topics: FxHashMap<String, (u64, Option<Message>)>,
    bytes: usize,
    /// Topics not kept: over `retained_count_max` / `retained_bytes_max`.
    over: usize,
    /// Records skipped: no version or key, expired, not a valid retained message here.
    skipped: usize,
}

impl Found {
    /// Keeps `message` (None: a clear) of `topic` at `version` unless a newer one is kept.
    fn keep(&mut self, topic: &str, version: u64, message: Option<Message>, config: &Config) {
        let weight =
            |m: &Option<Message>| m.as_ref().map_or(0, |m| m.payload.len() + m.topic.len());
        let new = weight(&message);
        match self.topics.get_mut(topic) {
            // Equal versions: the later record (read later) wins.
            Some((v, _)) if *v > version => {}
            Some(entry) => {
                let bytes = self.bytes - weight(&entry.1);
                if bytes + new > config.retained_bytes_max {
                    // Not kept, and the older value it replaces is not either.
                    self.over += 1;
                    self.bytes = bytes;
                    *entry = (version, None);
                } else {
                    self.bytes = bytes + new;
                    *entry = (version, message);
                }
            }
            None => {
                if self.topics.len() >= config.retained_count_max
                    || self.bytes + new > config.retained_bytes_max
                {
                    self.over += 1;
                    return;
                }
                self.bytes += new;
                self.topics.insert(topic.to_owned(), (version, message));
            }
        }
    }
}

/// Reads the retained topic from its start up to its end now and adds what it holds to each
/// shard's recovered retained messages (`recovered`, one per shard). Kafka not answering
/// within `kafka.timeout_ms` (no progress for that long) is logged, and the node starts with
/// what was read.
pub fn catch_up(
    kafka: &KafkaConfig,
    cluster: &ClusterConfig,
    config: &Config,
    recovered: &mut [Recovered],
) -> anyhow::Result<()> {
    let topic = &cluster.retained_topic;
    let consumer = super::reader(kafka, cluster, "retained")?;
    let wait = Duration::from_millis(kafka.timeout_ms);
    let partitions = crate::kafka::partitions(&consumer, topic, wait)
        .map_err(|e| anyhow::anyhow!("cluster: kafka at {}: {topic}: {e}", kafka.brokers))?;
    if partitions == 0 {
        anyhow::bail!(
            "cluster: kafka at {}: {topic} has no partitions (does it exist?)",
            kafka.brokers
        );
    }
    // Per partition: the next offset to read and the end to reach.
    let mut ends = Vec::with_capacity(partitions);
    let mut assignment = TopicPartitionList::new();
    for p in 0..i32::try_from(partitions).unwrap_or(i32::MAX) {
        let (low, high) = consumer.fetch_watermarks(topic, p, wait).map_err(|e| {
            anyhow::anyhow!(
                "cluster: kafka at {}: reading the end of {topic}: {e}",
                kafka.brokers
            )
        })?;
        ends.push((low, high));
        if low < high {
            assignment
                .add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| anyhow::anyhow!("cluster: {e}"))?;
        }
    }
    let mut found = Found::default();
    let started = Instant::now();
    if assignment.count() > 0 {
        consumer
            .assign(&assignment)
            .map_err(|e| anyhow::anyhow!("cluster: reading {topic}: {e}"))?;
        read(&consumer, &mut ends, &mut found, config, wait);
    }
    if ends.iter().any(|(next, high)| next < high) {
        tracing::warn!(topic = %topic, "cluster: the retained topic was not read to its end (no progress within kafka.timeout_ms): this node starts without the rest");
    }
    if found.over > 0 {
        tracing::warn!(topic = %topic, not_kept = found.over, "cluster: retained messages over retained_count_max / retained_bytes_max: not kept");
    }
    if found.skipped > 0 {
        tracing::warn!(topic = %topic, skipped = found.skipped, "cluster: records of the retained topic skipped (no version, expired in Kafka, or not valid on this node)");
    }
    let count = found.topics.len();
    // Every shard versions its sets above what was read: a set made here later must win
    // over a version from another node's clock, whichever shard owns the topic.
    let newest = found.topics.values().map(|(v, _)| *v).max().unwrap_or(0);
    crate::retained::raise_floor(newest);
    let now = Instant::now();
    let shards = config.shards;
    debug_assert_eq!(recovered.len(), shards, "one recovered state per shard");
    for (topic, (version, message)) in found.topics {
        let message = message.unwrap_or_else(|| {
            // A clear: an empty payload at its version.
            Message::new(
                topic.as_str().into(),
                bytes::Bytes::new(),
                net::codec::QoS::AtMostOnce,
                true,
                net::codec::BoxedProperties::default(),
                now,
            )
        });
        let owner = crate::retained::owner(&topic, shards);
        if let Some(r) = recovered.get_mut(usize::from(owner.0)) {
            r.cluster_retained.push((message, version));
        }
    }
    tracing::info!(topic = %topic, retained = count, ms = started.elapsed().as_millis() as u64, "cluster: retained messages read");
    Ok(())
}

/// Polls until every partition reached its end in `ends` or nothing came for `wait`.
fn read(
    consumer: &BaseConsumer<crate::kafka::Quiet>,
    ends: &mut [(i64, i64)],
    found: &mut Found,
    config: &Config,
    wait: Duration,
) {
    let route = Route::downlink("", "", None);
    let mut last_progress = Instant::now();
    while ends.iter().any(|(next, high)| next < high) && last_progress.elapsed() < wait {
        let m = match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => m,
            // At a partition's end (compaction may have removed the offsets before it).
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                if let Some((next, high)) = usize::try_from(p).ok().and_then(|p| ends.get_mut(p)) {
                    *next = (*next).max(*high);
                }
                continue;
            }
            _ => continue,
        };
        last_progress = Instant::now();
        if let Some((next, _)) = usize::try_from(m.partition())
            .ok()
            .and_then(|p| ends.get_mut(p))
        {
            *next = (*next).max(m.offset() + 1);
        }
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let payload = m.payload().unwrap_or_default();
        let record = Record {
            timestamp: m.timestamp().to_millis(),
            topic: m.topic(),
            key: m.key(),
            payload,
            headers,
        };
        let version = route.retain_version(&record);
        let (Some(version), Some(Ok(topic))) = (version, m.key().map(std::str::from_utf8)) else {
            found.skipped += 1;
            continue;
        };
        // A version further ahead than a day is no clock's: taken as made now (as a live
        // copy would be), so it cannot win for good.
        let version = if crate::retained::plausible(version, Instant::now()) {
            version
        } else {
            crate::retained::version(Instant::now(), crate::ids::ShardId(0))
        };
        // A clear: nothing is retained (an older version kept elsewhere is gone too).
        if payload.is_empty() {
            found.keep(topic, version, None, config);
            continue;
        }
        match route.message(
            &record,
            config.topic_levels_max,
            config.packet_bytes_max,
            Instant::now(),
        ) {
            Ok(message) if message.retain && *message.topic == *topic => {
                found.keep(topic, version, Some(message), config);
            }
            // Expired while it waited in Kafka, or not valid here (e.g. over this node's
            // packet_bytes_max): not kept, and an older value of its topic must not win.
            _ => {
                found.skipped += 1;
                found.keep(topic, version, None, config);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(topic: &str, payload: &str) -> Option<Message> {
        Some(Message::new(
            topic.into(),
            bytes::Bytes::copy_from_slice(payload.as_bytes()),
            net::codec::QoS::AtLeastOnce,
            true,
            net::codec::BoxedProperties::default(),
            Instant::now(),
        ))
    }

    fn payload(found: &Found, topic: &str) -> Option<Option<String>> {
        let (_, m) = found.topics.get(topic)?;
        Some(
            m.as_ref()
                .map(|m| String::from_utf8_lossy(&m.payload).into_owned()),
        )
    }

    #[test]
    fn the_newest_version_of_each_topic_is_kept_within_the_bounds() {
        let config = Config {
            retained_count_max: 2,
            retained_bytes_max: 20,
            ..Config::default()
        };
        let mut found = Found::default();
        found.keep("a", 10, message("a", "one"), &config);
        found.keep("a", 5, message("a", "old"), &config);
        assert_eq!(payload(&found, "a"), Some(Some("one".into())));
        found.keep("a", 11, None, &config);
        assert_eq!(payload(&found, "a"), Some(None), "a clear wins when newer");
        assert_eq!(found.bytes, 0);
        found.keep("b", 1, message("b", "12345678"), &config);
        assert_eq!(found.bytes, 9);
        // Over the byte bound, then over the count bound: not kept, counted.
        found.keep("c", 1, message("c", "123456789012"), &config);
        found.keep("d", 1, None, &config);
        assert_eq!((found.topics.len(), found.over), (2, 2));
        // A kept topic may still change within the bounds.
        found.keep("b", 2, message("b", "x"), &config);
        assert_eq!(
            (payload(&found, "b"), found.bytes),
            (Some(Some("x".into())), 2)
        );
    }
}
