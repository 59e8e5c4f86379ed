//! The Kafka bridge: MQTT -> Kafka (`[[kafka.to_kafka]]` rules) through the sink boundary,
//! with rdkafka. A publish matching a rule is produced to the mapped topic and key, with its
//! MQTT 5 properties and context as headers; with `ack = "kafka"` its PUBACK / PUBREC waits
//! for Kafka's acknowledgement (acks = all), and a record Kafka does not acknowledge within
//! `kafka.timeout_ms` refuses its publisher (0x97); with `ack = "local"` it is acknowledged
//! once durable in the broker's outbox, which produces it to Kafka at least once. Kafka -> MQTT (`[[kafka.to_mqtt]]`
//! rules): a consumer per group on the node hands records to the shards as a source; each is
//! published like a client's PUBLISH and its offset committed once it is handed on.
//!
//! # Layout
//! - [`config`]: the `[kafka]` table and its checks.
//! - [`check`]: `ringmq kafka check` (rule conflicts, brokers, topics).
//! - [`rule`]: a compiled rule (filter, topic template, key).
//! - [`sink`]: the per-shard producer behind the `Sink` trait.
//! - [`outbox`]: `ack = "local"`: the local log and its thread producing it to Kafka.
//! - [`to_mqtt`]: a compiled Kafka -> MQTT rule; a record mapped to an MQTT message.
//! - [`consumer`]: the consumer threads, lanes and offsets; the per-shard source.
//! - `mod.rs`: topic creation at start.

pub mod behind;
pub mod check;
pub mod config;
pub mod consumer;
pub mod outbox;
pub(crate) mod renew;
pub mod rule;
pub mod sink;
pub mod to_mqtt;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use config::KafkaConfig;
use rule::Rule;

/// A client context that sends librdkafka's lines to debug (it repeats every failed
/// connect; the broker's own lines say what matters).
#[derive(Clone, Copy, Debug)]
pub struct Quiet;

impl ClientContext for Quiet {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
    }
}

impl rdkafka::producer::ProducerContext for Quiet {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &rdkafka::producer::DeliveryResult<'_>, _: ()) {
        if let Err((e, m)) = result {
            let topic = rdkafka::Message::topic(m);
            tracing::warn!(topic, error = %e, "a record was not delivered to Kafka");
        }
    }
}

/// A shard's doorbell (its eventfd, duplicated) as a library thread rings it: once per batch
/// of work (a flag both sides swap, so nothing pushed is left unnoticed).
#[derive(Debug)]
pub struct Bell {
    woken: std::sync::atomic::AtomicBool,
    doorbell: std::fs::File,
}

impl Bell {
    /// A bell on `doorbell` (an eventfd).
    pub fn new(doorbell: std::fs::File) -> Self {
        Self {
            woken: std::sync::atomic::AtomicBool::new(false),
            doorbell,
        }
    }

    /// Wakes the shard unless a wake is pending (call after pushing the work).
    pub fn ring(&self) {
        use std::io::Write;
        if !self.woken.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let _ = (&self.doorbell).write(&1u64.to_ne_bytes());
        }
    }

    /// The shard is about to look (call before popping): work pushed after this rings again.
    pub fn answered(&self) {
        // A read-modify-write: ordered with the pusher's swap.
        self.woken.swap(false, std::sync::atomic::Ordering::AcqRel);
    }
}

impl rdkafka::consumer::ConsumerContext for Quiet {}

/// How many partitions Kafka says `topic` has (0: it does not know the topic).
pub fn partitions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &rdkafka::consumer::BaseConsumer<C>,
    topic: &str,
    wait: Duration,
) -> Result<usize, KafkaError> {
    use rdkafka::consumer::Consumer;
    let metadata = consumer.fetch_metadata(Some(topic), wait)?;
    Ok(metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map_or(0, |t| t.partitions().len()))
}

/// Milliseconds of the Unix epoch now (Kafka's timestamps).
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One Kafka record at most: an MQTT packet (`packet_bytes_max`) and room for its headers.
pub fn record_bytes_max(packet_bytes_max: usize) -> usize {
    packet_bytes_max + (64 << 10)
}

/// The compiled rules (checked already by `KafkaConfig::check`).
pub fn rules(config: &KafkaConfig) -> anyhow::Result<Arc<Vec<Rule>>> {
    let rules = config
        .to_kafka
        .iter()
        .map(Rule::compile)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("kafka.to_kafka: {e}"))?;
    Ok(Arc::new(rules))
}

/// Creates the rules' fixed topics (and the `to_mqtt` topics) that do not exist yet (`kafka.create_topics`); an
/// unreachable Kafka is a clear error.
pub fn create_topics(
    config: &KafkaConfig,
    rules: &[Rule],
    record_bytes_max: usize,
) -> anyhow::Result<()> {
    let names = fixed_topics(config, rules);
    if !config.create_topics || names.is_empty() {
        return Ok(());
    }
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|(n, partitions)| {
            NewTopic::new(n, *partitions, TopicReplication::Fixed(config.replication))
        })
        .collect();
    create(config, &topics, record_bytes_max)
}

/// Every topic the rules name without a placeholder (the `to_kafka` rules' fixed topics and
/// the `to_mqtt` topics), once each, with the partitions `create_topics` gives it: a rule's
/// own, else `kafka.partitions`.
pub fn fixed_topics<'a>(config: &'a KafkaConfig, rules: &'a [Rule]) -> Vec<(&'a str, i32)> {
    let mut names: Vec<(&str, Option<i32>)> = rules
        .iter()
        .filter_map(|r| Some((r.fixed_topic.as_deref()?, r.partitions)))
        .chain(
            config
                .to_mqtt
                .iter()
                .map(|r| (r.topic.as_str(), r.partitions)),
        )
        .collect();
    // A topic in several rules: the one that says its partitions (the check refuses two
    // that differ), else `kafka.partitions`.
    names.sort_unstable_by(|a, b| a.0.cmp(b.0).then(b.1.cmp(&a.1)));
    names.dedup_by(|a, b| a.0 == b.0);
    names
        .into_iter()
        .map(|(name, p)| (name, p.unwrap_or(config.partitions)))
        .collect()
}

/// Creates `topics` that do not exist yet (one existing is fine; none is asked for when all
/// exist, so a Kafka that lets this client write to its topics but not create any is fine
/// once they are there); an unreachable Kafka or a refusal is a clear error.
pub fn create(
    config: &KafkaConfig,
    topics: &[NewTopic<'_>],
    record_bytes_max: usize,
) -> anyhow::Result<()> {
    let admin: AdminClient<Quiet> = sink::producer_config(config, 0, record_bytes_max)
        .create_with_context(Quiet)
        .map_err(|e| anyhow::anyhow!("kafka: cannot create an admin client: {e}"))?;
    let wait = Duration::from_millis(config.timeout_ms);
    let metadata = admin
        .inner()
        .fetch_metadata(None, wait)
        .map_err(|e| anyhow::anyhow!("kafka at {}: reading its topics: {e}", config.brokers))?;
    // A topic listed with another error than "unknown" exists (e.g. without a leader for a
    // moment).
    let unknown = rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART;
    let exists = |name: &str| {
        metadata.topics().iter().any(|t| {
            t.name() == name && t.error().is_none_or(|e| e != unknown) && !t.partitions().is_empty()
        })
    };
    let missing: Vec<&NewTopic<'_>> = topics.iter().filter(|t| !exists(t.name)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let options = AdminOptions::new()
        .request_timeout(Some(wait))
        .operation_timeout(Some(wait));
    let results = futures_executor::block_on(admin.create_topics(missing, &options))
        .map_err(|e| anyhow::anyhow!("kafka at {}: creating topics: {e}", config.brokers))?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "Kafka topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                anyhow::bail!("kafka at {}: creating topic {name}: {code}", config.brokers)
            }
        }
    }
    Ok(())
}
