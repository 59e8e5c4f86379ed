//! The MQTT -> Kafka sink of one shard: an rdkafka `ThreadedProducer` (its own thread, acks =
//! all, idempotent), fed from the shard without blocking; delivery reports come back through a
//! lock-free queue and wake the shard through its doorbell eventfd.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::SegQueue;
use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::KafkaConfig;
use super::renew::{Renewable, Renewing};
use super::rule::Rule;
use crate::session::Message;
use crate::sink::{Offer, Sink, SinkCounts};

/// What rdkafka's thread shares with the shard.
#[derive(Debug)]
pub struct Reports {
    /// (token, delivered) of acknowledged messages.
    done: SegQueue<(u64, bool)>,
    /// Records handed to rdkafka and not reported yet, and their payload bytes.
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicUsize,
    /// The shard is woken once per batch of reports.
    bell: super::Bell,
    /// A delivery failed since the shard last looked (it logs once per streak).
    failed: AtomicBool,
    /// Totals for the metrics: acknowledged, failed (at delivery or at send), and the
    /// produce latencies (record creation to acknowledgement, a millisecond histogram).
    delivered_total: AtomicU64,
    failed_total: AtomicU64,
    latency: crate::metrics::SharedHistogram,
    /// librdkafka reported an error since the shard last asked whether it was fatal.
    errored: AtomicBool,
}

impl Reports {
    /// Reports that wake the shard through `doorbell` (an eventfd). Shared by the Kafka sink
    /// and the cluster's downlink sink.
    pub(crate) fn new(doorbell: std::fs::File) -> Arc<Self> {
        Arc::new(Self {
            done: SegQueue::new(),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            bell: super::Bell::new(doorbell),
            failed: AtomicBool::new(false),
            delivered_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            latency: crate::metrics::SharedHistogram::default(),
            errored: AtomicBool::new(false),
        })
    }

    /// Wakes the shard unless a wake is pending (after pushing to `done`).
    fn ring(&self) {
        self.bell.ring();
    }

    /// A record of `bytes` payload is about to be handed to the producer.
    pub(crate) fn handing(&self, bytes: usize) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.in_flight_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The producer did not take the record [`Reports::handing`] counted: a failure.
    pub(crate) fn not_taken(&self, bytes: usize) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.failed_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Reports `id` refused at once (a record never produced).
    pub(crate) fn refuse(&self, id: u64) {
        self.done.push((id, false));
        self.ring();
    }

    /// At or above either bound of what is in flight.
    pub(crate) fn full(&self, count_max: usize, bytes_max: usize) -> bool {
        self.in_flight.load(Ordering::Acquire) >= count_max
            || self.in_flight_bytes.load(Ordering::Acquire) >= bytes_max
    }

    /// The running totals.
    pub(crate) fn counts(&self) -> SinkCounts {
        SinkCounts {
            delivered: self.delivered_total.load(Ordering::Relaxed),
            failed: self.failed_total.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed) as u64,
            latency: self.latency.load(),
            ..SinkCounts::default()
        }
    }

    /// Hands each (id, delivered) reported since the last call to `f`; true when a delivery
    /// failed since then.
    pub(crate) fn drain(&self, mut f: impl FnMut(u64, bool)) -> bool {
        self.bell.answered();
        while let Some((id, ok)) = self.done.pop() {
            f(id, ok);
        }
        self.failed.swap(false, Ordering::AcqRel)
    }
}

/// The producer's context: the shared reports; a record's opaque is its id + 1 (0: none).
#[derive(Debug)]
pub struct Ctx(pub(crate) Arc<Reports>);

impl ClientContext for Ctx {
    /// librdkafka's own lines go to debug: it repeats every failed connect; the sink logs one
    /// line when deliveries start failing and one when they succeed again.
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    /// librdkafka's own errors go to debug (a Kafka that is away repeats them). rdkafka hands
    /// a fatal error over with its underlying code, not as fatal: the shard asks the client
    /// after any error (`Renewing`).
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
        self.0.errored.store(true, Ordering::Release);
        self.0.ring();
    }
}

impl Renewable for Ctx {
    fn errored(&self) -> &AtomicBool {
        &self.0.errored
    }

    fn again(&self) -> Self {
        Ctx(self.0.clone())
    }
}

impl ProducerContext for Ctx {
    /// The publisher's token + 1, or 0 for none.
    type DeliveryOpaque = usize;

    /// On rdkafka's thread: the report goes to the shard's queue; the shard is woken once
    /// per batch of reports.
    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let r = &self.0;
        let (ok, bytes) = match result {
            Ok(m) => {
                if let Some(created) = m.timestamp().to_millis() {
                    let now = crate::kafka::now_millis();
                    let millis = u64::try_from(now.saturating_sub(created)).unwrap_or(0);
                    r.latency.record_millis(millis);
                }
                r.delivered_total.fetch_add(1, Ordering::Relaxed);
                (true, m.payload_len())
            }
            Err((_, m)) => {
                r.failed_total.fetch_add(1, Ordering::Relaxed);
                (false, m.payload_len())
            }
        };
        r.in_flight.fetch_sub(1, Ordering::AcqRel);
        r.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if !ok {
            r.failed.store(true, Ordering::Release);
        }
        if opaque != 0 {
            r.done.push(((opaque - 1) as u64, ok));
        }
        r.ring();
    }
}

/// One shard's producer and rules.
pub struct KafkaSink {
    rules: Arc<Vec<Rule>>,
    producer: Renewing<Ctx>,
    reports: Arc<Reports>,
    queue_max: usize,
    queue_bytes_max: usize,
    /// How long a shutdown waits for what is queued.
    flush_wait: std::time::Duration,
    topic: String,
    /// Logged once per streak of failures.
    failing: bool,
    /// The outbox of `ack = "local"` rules, and this shard's index in it.
    outbox: Option<Arc<super::outbox::Shared>>,
    shard: u16,
}

impl std::fmt::Debug for KafkaSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSink")
            .field("rules", &self.rules.len())
            .field("in_flight", &self.reports.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

/// The producer settings, set explicitly (librdkafka's other defaults apply); `record_bytes_max`
/// bounds one record (the MQTT packet size limit plus headers).
pub fn producer_config(
    config: &KafkaConfig,
    shard: usize,
    record_bytes_max: usize,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers)
        .set("client.id", format!("{}-{shard}", config.client_id))
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("max.in.flight.requests.per.connection", "5")
        .set("retries", "2147483647")
        .set("linger.ms", config.linger_ms.to_string())
        .set("batch.size", config.batch_bytes_max.to_string())
        .set("compression.type", &config.compression)
        .set("message.timeout.ms", config.timeout_ms.to_string())
        .set("request.timeout.ms", "5000")
        .set(
            "queue.buffering.max.messages",
            (config.queue_count_max + 1024).to_string(),
        )
        .set(
            "queue.buffering.max.kbytes",
            (config.queue_bytes_max / 1024 + (record_bytes_max as u64 >> 9) + 1024).to_string(),
        )
        .set(
            "message.max.bytes",
            record_bytes_max.max(1_000_000).to_string(),
        )
        .set("partitioner", "murmur2_random")
        .set("allow.auto.create.topics", "false")
        .set("socket.keepalive.enable", "true")
        .set("broker.address.family", "v4");
    c
}

impl KafkaSink {
    /// A producer for shard `shard` whose reports wake it through `doorbell` (an eventfd).
    pub fn new(
        config: &KafkaConfig,
        rules: Arc<Vec<Rule>>,
        shard: usize,
        record_bytes_max: usize,
        doorbell: std::fs::File,
    ) -> anyhow::Result<Self> {
        let reports = Reports::new(doorbell);
        let producer = Renewing::new(
            producer_config(config, shard, record_bytes_max),
            Ctx(reports.clone()),
            "kafka",
            "the records it held are refused (0x97)",
        )
        .map_err(|e| anyhow::anyhow!("kafka: cannot create a producer: {e}"))?;
        Ok(Self {
            rules,
            producer,
            reports,
            queue_max: config.queue_count_max,
            queue_bytes_max: usize::try_from(config.queue_bytes_max).unwrap_or(usize::MAX),
            flush_wait: std::time::Duration::from_millis(config.timeout_ms.min(5_000)),
            topic: String::new(),
            failing: false,
            outbox: None,
            shard: u16::try_from(shard).unwrap_or(u16::MAX),
        })
    }

    /// The producer in use (replaced after a fatal error).
    pub fn producer(&self) -> &ThreadedProducer<Ctx> {
        self.producer.producer()
    }

    /// How many times the producer was replaced after a fatal error.
    pub fn producers_replaced(&self) -> u64 {
        self.producer.renewed
    }

    /// Hands the `ack = "local"` rules' messages to `outbox`.
    pub fn with_outbox(mut self, outbox: Option<Arc<super::outbox::Shared>>) -> Self {
        self.outbox = outbox;
        self
    }

    /// A message of an `ack = "local"` rule: into the outbox (its token confirmed once the
    /// record is durable there), or refused when the outbox is full.
    fn offer_local(
        &mut self,
        message: &Message,
        publisher: &str,
        topic: &str,
        key: Option<&[u8]>,
        token: Option<u64>,
    ) -> Result<Offer, &'static str> {
        let outbox = self
            .outbox
            .as_ref()
            .ok_or("no outbox for an ack = \"local\" rule")?;
        let mut record = Vec::with_capacity(96 + topic.len() + message.payload.len());
        super::outbox::record::encode(
            topic,
            key,
            |f| each_header(message, publisher, f),
            &message.payload,
            &mut record,
        );
        let entry = super::outbox::Entry {
            shard: self.shard,
            token,
            record,
        };
        if !outbox.push(entry) {
            return Err("the Kafka outbox is full (kafka.backlog_bytes_max)");
        }
        Ok(match token {
            Some(_) => Offer::Pending,
            None => Offer::Taken,
        })
    }
}

fn bytes(s: &str) -> &[u8] {
    s.as_bytes()
}

/// MQTT 5 properties and the MQTT context as Kafka headers.
pub(crate) fn headers(message: &Message, publisher: &str) -> OwnedHeaders {
    let p = &*message.properties;
    let mut h = Some(OwnedHeaders::new_with_capacity(4 + p.user_properties.len()));
    each_header(message, publisher, &mut |key, value| {
        h = h.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
    });
    h.unwrap_or_default()
}

/// Calls `f` with each Kafka header of `message` (name, value): the MQTT context, the MQTT 5
/// properties, the user properties (none may pose as one of the broker's `mqtt.` headers).
pub(crate) fn each_header(message: &Message, publisher: &str, f: &mut dyn FnMut(&str, &[u8])) {
    let p = &*message.properties;
    let qos = [b'0' + message.qos as u8];
    f("mqtt.topic", bytes(&message.topic));
    f("mqtt.client_id", publisher.as_bytes());
    f("mqtt.qos", &qos[..]);
    if let Some(ct) = &p.content_type {
        f("content-type", bytes(ct));
    }
    if let Some(pfi) = p.payload_format_indicator {
        f(
            "mqtt.payload_format_indicator",
            if pfi { &b"1"[..] } else { &b"0"[..] },
        );
    }
    if let Some(rt) = &p.response_topic {
        f("mqtt.response_topic", bytes(rt));
    }
    if let Some(cd) = &p.correlation_data {
        f("mqtt.correlation_data", &cd[..]);
    }
    for (k, v) in p
        .user_properties
        .iter()
        .filter(|(k, _)| !k.starts_with("mqtt."))
    {
        f(&k[..], bytes(v));
    }
}

impl Sink for KafkaSink {
    fn name(&self) -> &str {
        "kafka"
    }

    fn wants(&self, topic: &str) -> bool {
        self.rules.iter().any(|r| r.wants(topic))
    }

    fn offer(&mut self, message: &Message, publisher: &str, token: Option<u64>, _: u64) -> Offer {
        let rules = self.rules.clone();
        let Some(rule) = rules.iter().find(|r| r.wants(&message.topic)) else {
            return Offer::Taken;
        };
        let refuse = |sink: &mut Self, why: &str| {
            if !sink.failing {
                tracing::warn!(topic = %message.topic, reason = why, "a message for Kafka was not produced: its publisher is refused");
                sink.failing = true;
            }
            match token {
                Some(t) => {
                    sink.reports.refuse(t);
                    Offer::Pending
                }
                None => Offer::Taken,
            }
        };
        let mut topic = std::mem::take(&mut self.topic);
        if !rule.render_topic(&message.topic, publisher, &mut topic) {
            self.topic = topic;
            self.reports.failed_total.fetch_add(1, Ordering::Relaxed);
            return refuse(self, "the rule's topic template gives no valid Kafka topic");
        }
        // The broker's own messages (wills are published for a gone client) have no
        // publisher: no client-id key.
        let key = match rule.key {
            crate::kafka::rule::Key::ClientId if publisher.is_empty() => None,
            _ => rule.key(&message.topic, publisher),
        };
        if rule.ack == super::rule::Ack::Local {
            let offered =
                self.offer_local(message, publisher, &topic, key.map(str::as_bytes), token);
            self.topic = topic;
            return match offered {
                Ok(offer) => offer,
                Err(why) => {
                    self.reports.failed_total.fetch_add(1, Ordering::Relaxed);
                    refuse(self, why)
                }
            };
        }
        let opaque = token.map_or(0, |t| t as usize + 1);
        let mut record = BaseRecord::with_opaque_to(&topic, opaque)
            .payload(&message.payload[..])
            .headers(headers(message, publisher));
        if let Some(key) = key {
            record = record.key(key);
        }
        let bytes = message.payload.len();
        self.reports.handing(bytes);
        let sent = self.producer.producer().send(record).map_err(|(e, _)| e);
        self.topic = topic;
        match sent {
            Ok(()) => match token {
                Some(_) => Offer::Pending,
                None => Offer::Taken,
            },
            Err(e) => {
                self.reports.not_taken(bytes);
                refuse(self, &e.to_string())
            }
        }
    }

    fn full(&self) -> bool {
        self.reports.full(self.queue_max, self.queue_bytes_max)
            || self.outbox.as_ref().is_some_and(|o| o.full())
    }

    fn counts(&self) -> SinkCounts {
        let mut counts = self.reports.counts();
        counts.replaced = self.producer.renewed;
        // The outbox is the broker's: the first shard reports it.
        if let Some(outbox) = self.outbox.as_ref().filter(|_| self.shard == 0) {
            let o = outbox.counts();
            counts.delivered += o.delivered;
            counts.in_flight += o.in_kafka;
            counts.latency.add(&o.latency);
            counts.backlog = o.backlog;
            counts.backlog_bytes = o.backlog_bytes;
            counts.replaced += o.replaced;
            counts.dead = o.dead;
        }
        counts
    }

    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>) {
        self.producer.renew_if_failed();
        if let Some(outbox) = &self.outbox {
            outbox.drain_done(usize::from(self.shard), |t, ok| out.push((t, ok)));
        }
        if self.reports.drain(|id, ok| out.push((id, ok))) {
            if !self.failing {
                tracing::warn!("Kafka did not acknowledge messages within kafka.timeout_ms: their publishers are refused (0x97)");
                self.failing = true;
            }
        } else if self.failing && !out.is_empty() && out.iter().all(|(_, ok)| *ok) {
            tracing::info!("Kafka acknowledges again");
            self.failing = false;
        }
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // At shutdown: delivers what is queued, waiting at most min(timeout_ms, 5 s).
        let _ = self.producer.producer().flush(self.flush_wait);
    }
}
