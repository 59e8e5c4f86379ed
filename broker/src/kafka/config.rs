//! The `[kafka]` table: where Kafka is, the producer's and the consumer's settings (each one
//! set explicitly on rdkafka, never left to its defaults), the `[[kafka.to_kafka]]` and
//! `[[kafka.to_mqtt]]` rules, checked at start with errors naming the rule.

use serde::Deserialize;

/// Consumer groups (and so consumer threads and sources per shard) at most.
pub const GROUPS_MAX: usize = 16;

/// `kafka.KEY` must be within `lo..=hi`; the error says so (bounds and message from one place).
fn within<T: PartialOrd + std::fmt::Display>(key: &str, v: T, lo: T, hi: T) -> Result<(), String> {
    if lo <= v && v <= hi {
        Ok(())
    } else {
        Err(format!("kafka.{key}: between {lo} and {hi}"))
    }
}

/// `[kafka]`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap list, `host:port[,host:port]`.
    pub brokers: String,
    /// Kafka client id.
    pub client_id: String,
    /// How long the producer waits to fill a batch (`linger.ms`).
    pub linger_ms: u64,
    /// `none`, `gzip`, `snappy`, `lz4` or `zstd` (`compression.type`).
    pub compression: String,
    /// Largest producer batch per partition, bytes (`batch.size`).
    pub batch_bytes_max: u64,
    /// Create missing `to_kafka` topics at start (a fixed topic only; templated ones must
    /// exist).
    pub create_topics: bool,
    /// Partitions of a created topic.
    pub partitions: i32,
    /// Replication factor of a created topic.
    pub replication: i32,
    /// A record Kafka has not acknowledged within this is failed (`message.timeout.ms`): its
    /// publisher gets 0x97 (MQTT 3: the connection closes).
    pub timeout_ms: u64,
    /// Records a shard may have in flight to Kafka; above it the shard stops reading its
    /// clients (backpressure) until deliveries come back.
    pub queue_count_max: usize,
    /// Payload bytes a shard may have in flight to Kafka, same backpressure.
    pub queue_bytes_max: u64,
    /// `ack = "local"`: bytes of records taken into the outbox and not acknowledged by Kafka
    /// yet (in memory and in its log); at it the shards stop reading their clients and a
    /// message offered then is refused (0x97).
    pub backlog_bytes_max: u64,
    /// `ack = "local"`: a new log segment of the outbox starts past this many bytes.
    pub outbox_segment_bytes: u64,
    /// MQTT -> Kafka rules; the first whose filter matches a topic wins.
    pub to_kafka: Vec<ToKafka>,
    /// Kafka -> MQTT: records a node's consumer may have handed to its shards and not seen
    /// handed on yet; above it the consumer stops taking records (librdkafka's prefetch,
    /// `consume_prefetch_bytes_max`, then holds its fetching back).
    pub consume_in_flight_max: usize,
    /// Kafka -> MQTT: records a shard takes from its queue per loop pass.
    pub consume_batch_max: usize,
    /// Kafka -> MQTT: bytes the consumer prefetches (`queued.max.messages.kbytes`).
    pub consume_prefetch_bytes_max: u64,
    /// Kafka -> MQTT: how long a fetch waits on the Kafka broker for records
    /// (`fetch.wait.max.ms`): the latency floor of an idle partition's next record.
    pub consume_fetch_wait_ms: u64,
    /// Kafka -> MQTT: how often the consumer commits the offsets of records handed on
    /// (`auto.commit.interval.ms`).
    pub commit_interval_ms: u64,
    /// Kafka -> MQTT: a consumer that stops answering leaves its group after this
    /// (`session.timeout.ms`); a node killed and restarted gets its partitions back after it.
    pub session_timeout_ms: u64,
    /// Kafka -> MQTT rules; a Kafka topic is in one rule at most.
    pub to_mqtt: Vec<ToMqtt>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            client_id: "ringmq".into(),
            linger_ms: 5,
            compression: "lz4".into(),
            batch_bytes_max: 1 << 20,
            create_topics: true,
            partitions: 8,
            replication: 1,
            timeout_ms: 10_000,
            queue_count_max: 100_000,
            queue_bytes_max: 256 << 20,
            backlog_bytes_max: 1 << 30,
            outbox_segment_bytes: 64 << 20,
            to_kafka: Vec::new(),
            consume_in_flight_max: 10_000,
            consume_batch_max: 512,
            consume_prefetch_bytes_max: 16 << 20,
            consume_fetch_wait_ms: 10,
            commit_interval_ms: 1_000,
            session_timeout_ms: 10_000,
            to_mqtt: Vec::new(),
        }
    }
}

/// `[[kafka.to_kafka]]`: one MQTT -> Kafka rule.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToKafka {
    /// MQTT topic filter.
    pub filter: String,
    /// Kafka topic; `{1}`, `{2}`, ... are the topic levels the filter's wildcards matched
    /// (`#` counts as one, all its levels joined by `/`), `{client_id}` the publisher's.
    pub topic: String,
    /// The record key: `client_id`, `topic`, `level:N` (the topic's Nth level, from 1), or
    /// `none`.
    #[serde(default = "default_key")]
    pub key: String,
    /// `kafka`: the PUBACK / PUBREC waits for Kafka's acknowledgement (acks = all).
    #[serde(default = "default_ack")]
    pub ack: String,
    /// Partitions of the topic if the broker creates it (default `kafka.partitions`).
    #[serde(default)]
    pub partitions: Option<i32>,
}

/// `[[kafka.to_mqtt]]`: one Kafka -> MQTT rule.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToMqtt {
    /// Kafka topic.
    pub topic: String,
    /// MQTT topic template: `{key}` (the record key), `{header:NAME}` (a header's value),
    /// `{topic}` (the Kafka topic); each placeholder must give one non-empty topic level.
    pub mqtt_topic: String,
    /// QoS of the MQTT publish (0, 1 or 2).
    #[serde(default = "default_qos")]
    pub qos: u8,
    /// Consumer group (one consumer per group per node).
    #[serde(default = "default_group")]
    pub group: String,
    /// Where a group without a committed offset starts: `earliest` or `latest`.
    #[serde(default = "default_offset_reset")]
    pub offset_reset: String,
    /// Partitions of the topic if the broker creates it (default `kafka.partitions`).
    #[serde(default)]
    pub partitions: Option<i32>,
}

fn default_qos() -> u8 {
    1
}

fn default_group() -> String {
    "ringmq".into()
}

fn default_offset_reset() -> String {
    "earliest".into()
}

fn default_key() -> String {
    "client_id".into()
}

fn default_ack() -> String {
    "kafka".into()
}

impl KafkaConfig {
    /// Checks every value and rule; the error names the key or the rule.
    pub fn check(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("kafka.brokers: empty".into());
        }
        if !["none", "gzip", "snappy", "lz4", "zstd"].contains(&self.compression.as_str()) {
            return Err(format!(
                "kafka.compression: `{}`: one of none, gzip, snappy, lz4, zstd",
                self.compression
            ));
        }
        if self.linger_ms > 60_000 {
            return Err("kafka.linger_ms: at most 60000".into());
        }
        within("batch_bytes_max", self.batch_bytes_max, 1, 16 << 20)?;
        if self.partitions < 1 || self.replication < 1 {
            return Err("kafka.partitions and kafka.replication: at least 1".into());
        }
        within("timeout_ms", self.timeout_ms, 1_000, 3_600_000)?;
        within("queue_count_max", self.queue_count_max, 1, 10_000_000)?;
        within("queue_bytes_max", self.queue_bytes_max, 1 << 20, 16 << 30)?;
        within(
            "backlog_bytes_max",
            self.backlog_bytes_max,
            4 << 10,
            1 << 40,
        )?;
        within(
            "outbox_segment_bytes",
            self.outbox_segment_bytes,
            1 << 20,
            1 << 30,
        )?;
        if self.linger_ms >= self.timeout_ms {
            return Err("kafka.linger_ms: must be below kafka.timeout_ms".into());
        }
        within(
            "consume_in_flight_max",
            self.consume_in_flight_max,
            1,
            1_000_000,
        )?;
        within("consume_batch_max", self.consume_batch_max, 1, 65_536)?;
        within(
            "consume_prefetch_bytes_max",
            self.consume_prefetch_bytes_max,
            1 << 20,
            1 << 30,
        )?;
        within(
            "consume_fetch_wait_ms",
            self.consume_fetch_wait_ms,
            1,
            10_000,
        )?;
        within("commit_interval_ms", self.commit_interval_ms, 100, 60_000)?;
        // librdkafka: at most max.poll.interval.ms (300000, set by the consumer).
        within(
            "session_timeout_ms",
            self.session_timeout_ms,
            1_000,
            300_000,
        )?;
        let mut groups: Vec<&str> = self.to_mqtt.iter().map(|r| r.group.as_str()).collect();
        groups.sort_unstable();
        groups.dedup();
        if groups.len() > GROUPS_MAX {
            return Err(format!(
                "kafka.to_mqtt: {} consumer groups; at most {GROUPS_MAX} (a consumer thread each)",
                groups.len()
            ));
        }
        for (i, rule) in self.to_mqtt.iter().enumerate() {
            super::to_mqtt::Route::compile(rule)
                .map_err(|e| format!("kafka.to_mqtt[{i}] (topic `{}`): {e}", rule.topic))?;
            let earlier = self.to_mqtt.iter().take(i);
            if let Some(j) = earlier
                .clone()
                .position(|r| r.group == rule.group && r.offset_reset != rule.offset_reset)
            {
                return Err(format!(
                    "kafka.to_mqtt[{i}] (topic `{}`): offset_reset differs from kafka.to_mqtt[{j}] in group `{}` (one consumer per group)",
                    rule.topic, rule.group
                ));
            }
            if let Some(j) = earlier.clone().position(|r| r.topic == rule.topic) {
                return Err(format!(
                    "kafka.to_mqtt[{i}] (topic `{}`): the topic is in kafka.to_mqtt[{j}] already",
                    rule.topic
                ));
            }
        }
        for (i, rule) in self.to_kafka.iter().enumerate() {
            super::rule::Rule::compile(rule)
                .map_err(|e| format!("kafka.to_kafka[{i}] (filter `{}`): {e}", rule.filter))?;
        }
        // Partitions: for a topic the broker creates (a fixed one), the same wherever given.
        let mut partitions_seen: Vec<(&str, i32)> = Vec::new();
        let to_kafka = self
            .to_kafka
            .iter()
            .map(|r| (&r.topic, r.partitions, "to_kafka"));
        let to_mqtt = self
            .to_mqtt
            .iter()
            .map(|r| (&r.topic, r.partitions, "to_mqtt"));
        for (topic, p, rules) in to_kafka.chain(to_mqtt) {
            let Some(p) = p else { continue };
            within(&format!("{rules}.partitions"), p, 1, 100_000)?;
            if topic.contains('{') {
                return Err(format!(
                    "kafka.{rules} (topic `{topic}`): partitions apply to a topic the broker creates (no placeholder)"
                ));
            }
            match partitions_seen.iter().find(|(t, _)| *t == topic.as_str()) {
                Some((_, q)) if *q != p => {
                    return Err(format!(
                        "kafka.{rules} (topic `{topic}`): partitions {p} here, {q} in another rule"
                    ))
                }
                Some(_) => {}
                None => partitions_seen.push((topic, p)),
            }
        }
        Ok(())
    }
}
