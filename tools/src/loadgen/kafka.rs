//! Kafka as the publishing side of a run (`ringmq-bench kafka-in`): a producer thread writes
//! stamped records (the same stamp as an MQTT publisher's payload: key index, sequence, send
//! time since the run started) to one Kafka topic, one key per virtual publisher (`k0`,
//! `k1`, ...), at a rate per key or as fast as librdkafka takes them; the broker's
//! `[[kafka.to_mqtt]]` rule maps them to `rb/kafka/{key}` and the run's MQTT subscribers
//! measure produce -> deliver latency and count losses against what Kafka acknowledged.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;

use super::wire::PAYLOAD_HEADER_BYTES;

/// Where the records go.
#[derive(Debug, Clone)]
pub struct KafkaIn {
    /// Bootstrap list.
    pub brokers: String,
    /// Kafka topic (the broker maps it to MQTT `rb/kafka/{key}`).
    pub topic: String,
    /// Produce as ringmq's bridge does (`linger.ms` 5, lz4, 1 MiB batches, murmur2 keys)
    /// rather than as a latency-minded client (`linger.ms` 1, no compression): for
    /// `rdkafka-direct`, the same records the bridge would write.
    pub like_bridge: bool,
    /// At max rate (rate 0), how many records the producer may be ahead, over all keys: of
    /// the MQTT subscribers' deliveries (`kafka-in`), or, with no MQTT subscriber
    /// (`rdkafka-direct` beside the MQTT -> Kafka bridge), of Kafka's answers, as an MQTT
    /// publisher's window runs ahead of its PUBACKs; so that a broker slower than the
    /// producer meets a bounded backlog. None: unbounded (librdkafka's queue is the limit).
    pub ahead_max: Option<u64>,
}

/// Acknowledged records per key, and records Kafka answered (acknowledged or failed),
/// shared with the delivery callback.
struct Acks {
    ok: Arc<Vec<AtomicU64>>,
    answered: Arc<AtomicU64>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, key: usize) {
        self.answered.fetch_add(1, Ordering::Relaxed);
        if result.is_ok() {
            if let Some(a) = self.ok.get(key) {
                a.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// A running producer thread.
pub(super) struct Producing {
    /// Records Kafka acknowledged, per key (virtual publisher).
    pub acked: Arc<Vec<AtomicU64>>,
    /// Records handed to librdkafka.
    pub sent: Arc<AtomicU64>,
    /// Copies the run's MQTT subscribers received (`delivered_one`): at max rate the
    /// producer keeps no more than its window ahead of them.
    delivered: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Producing {
    /// Stops producing; the thread flushes what librdkafka holds.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
    }

    /// An MQTT subscriber received a copy of a record.
    pub fn delivered_one(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }

    /// The thread has flushed and ended.
    pub fn finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for Producing {
    fn drop(&mut self) {
        self.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts producing `keys` keys at `rate` records per second per key, `payload_bytes` each,
/// stamped relative to `start`; rate 0: as fast as librdkafka takes them, no more than
/// `target.ahead_max` ahead of the `copies` MQTT subscribers that each receive every
/// record (0: of Kafka's answers).
pub(super) fn start(
    target: &KafkaIn,
    keys: usize,
    rate: f64,
    payload_bytes: usize,
    start: Instant,
    copies: u64,
) -> anyhow::Result<Producing> {
    let acked: Arc<Vec<AtomicU64>> = Arc::new((0..keys).map(|_| AtomicU64::new(0)).collect());
    let answered = Arc::new(AtomicU64::new(0));
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", &target.brokers)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "1")
        .set("queue.buffering.max.messages", "200000")
        .set("broker.address.family", "v4");
    if target.like_bridge {
        config
            .set("linger.ms", "5")
            .set("compression.type", "lz4")
            .set("batch.size", (1 << 20).to_string())
            .set("partitioner", "murmur2_random");
    }
    let producer: BaseProducer<Acks> = config
        .create_with_context(Acks {
            ok: acked.clone(),
            answered: answered.clone(),
        })
        .map_err(|e| anyhow::anyhow!("kafka producer: {e}"))?;
    let sent = Arc::new(AtomicU64::new(0));
    let delivered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let topic = target.topic.clone();
    let (thread_sent, thread_stop) = (sent.clone(), stop.clone());
    let ahead = target.ahead_max.map(|max| Ahead {
        done: if copies == 0 {
            Done::Answered(answered)
        } else {
            Done::Delivered(delivered.clone(), copies)
        },
        max: max.max(1),
    });
    let thread = std::thread::Builder::new()
        .name("kafka-producer".into())
        .spawn(move || {
            produce(
                &producer,
                &topic,
                keys,
                rate,
                payload_bytes,
                start,
                &thread_sent,
                &thread_stop,
                ahead.as_ref(),
            );
            let _ = producer.flush(Duration::from_secs(30));
        })?;
    Ok(Producing {
        acked,
        sent,
        delivered,
        stop,
        thread: Some(thread),
    })
}

/// What a max-rate producer's lead is measured against.
enum Done {
    /// Copies the MQTT subscribers received, and how many subscribers get each record.
    Delivered(Arc<AtomicU64>, u64),
    /// Records Kafka answered (acknowledged or failed).
    Answered(Arc<AtomicU64>),
}

/// The bound on a max-rate producer's lead.
struct Ahead {
    done: Done,
    max: u64,
}

impl Ahead {
    fn full(&self, sent: u64) -> bool {
        let done = match &self.done {
            Done::Delivered(copies, per_record) => {
                copies.load(Ordering::Relaxed) / (*per_record).max(1)
            }
            Done::Answered(answered) => answered.load(Ordering::Relaxed),
        };
        sent.saturating_sub(done) >= self.max
    }
}

#[allow(clippy::too_many_arguments)]
fn produce(
    producer: &BaseProducer<Acks>,
    topic: &str,
    keys: usize,
    rate: f64,
    payload_bytes: usize,
    start: Instant,
    sent: &AtomicU64,
    stop: &AtomicBool,
    ahead: Option<&Ahead>,
) {
    let names: Vec<String> = (0..keys).map(|k| format!("k{k}")).collect();
    let mut seqs = vec![0u32; keys];
    let mut payload = vec![0u8; payload_bytes.max(PAYLOAD_HEADER_BYTES)];
    let total_rate = rate * keys as f64;
    let mut tokens = 0.0f64;
    let mut last = Instant::now();
    let mut key = 0usize;
    while !stop.load(Ordering::Acquire) {
        if total_rate > 0.0 {
            let now = Instant::now();
            tokens = (tokens + total_rate * now.duration_since(last).as_secs_f64())
                .min(total_rate * 0.005 + 1.0);
            last = now;
            if tokens < 1.0 {
                producer.poll(Duration::from_micros(200));
                continue;
            }
        } else if ahead.is_some_and(|a| a.full(sent.load(Ordering::Relaxed))) {
            producer.poll(Duration::from_micros(200));
            continue;
        }
        let (Some(name), Some(seq)) = (names.get(key), seqs.get_mut(key)) else {
            key = 0;
            continue;
        };
        let sent_ns = start.elapsed().as_nanos() as u64;
        let stamp = (key as u32)
            .to_be_bytes()
            .into_iter()
            .chain(seq.to_be_bytes())
            .chain(sent_ns.to_be_bytes());
        for (dst, src) in payload.iter_mut().zip(stamp) {
            *dst = src;
        }
        let record = BaseRecord::with_opaque_to(topic, key)
            .key(name.as_bytes())
            .payload(&payload[..]);
        match producer.send(record) {
            Ok(()) => {
                *seq = seq.wrapping_add(1);
                sent.fetch_add(1, Ordering::Relaxed);
                tokens -= 1.0;
                key = (key + 1) % keys.max(1);
                producer.poll(Duration::ZERO);
            }
            // Queue full: let deliveries drain.
            Err(_) => {
                producer.poll(Duration::from_millis(1));
            }
        }
    }
}

/// Where the records come from (`kafka-out`): the broker's `[[kafka.to_kafka]]` rule produces
/// the run's MQTT publishes (`rb/kout/+`) to this topic.
#[derive(Debug, Clone)]
pub struct KafkaOut {
    /// Bootstrap list.
    pub brokers: String,
    /// Kafka topic.
    pub topic: String,
}

/// What the consumer thread counted.
pub(super) struct Consumed {
    /// Per publisher (the stamp's index) as group 0.
    pub accounts: rustc_hash::FxHashMap<u64, crate::accounting::PairAccount>,
    /// Publish -> Kafka consumer latency, ns, in the measurement window.
    pub latency: hdrhistogram::Histogram<u64>,
    /// Records consumed in the window.
    pub window: u64,
}

/// A running consumer thread.
pub(super) struct Consuming {
    /// Distinct records seen so far (for the end of the run).
    pub distinct: Arc<AtomicU64>,
    /// Set while the run measures.
    pub measuring: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<Consumed>>>,
}

impl Drop for Consuming {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Consuming {
    /// Stops the thread; what it counted.
    pub fn finish(mut self) -> anyhow::Result<Consumed> {
        self.stop.store(true, Ordering::Release);
        match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            _ => anyhow::bail!("the Kafka consumer thread failed"),
        }
    }
}

/// A consumer of `source.topic` with `config` (no auto commit), and the topic's partition
/// count (an error when it has none).
fn open(
    source: &KafkaOut,
    mut config: ClientConfig,
) -> anyhow::Result<(rdkafka::consumer::BaseConsumer, usize)> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    let consumer: BaseConsumer = config
        .set("bootstrap.servers", &source.brokers)
        .set("enable.auto.commit", "false")
        .set("broker.address.family", "v4")
        .create()
        .map_err(|e| anyhow::anyhow!("kafka consumer: {e}"))?;
    let metadata = consumer
        .fetch_metadata(Some(&source.topic), Duration::from_secs(10))
        .map_err(|e| anyhow::anyhow!("kafka: metadata of {}: {e}", source.topic))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == source.topic)
        .map_or(0, |t| t.partitions().len());
    if partitions == 0 {
        anyhow::bail!(
            "kafka: topic {} has no partitions (does it exist?)",
            source.topic
        );
    }
    Ok((consumer, partitions))
}

/// Starts reading `source.topic` from its end now (every partition assigned at its high
/// watermark, no group), stamps measured against `start`.
pub(super) fn consume(source: &KafkaOut, start: Instant) -> anyhow::Result<Consuming> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let mut config = ClientConfig::new();
    config
        .set("group.id", "ringmq-bench")
        // tansu answers a fetch with nothing new only after this wait, so it is a floor
        // under every latency measured here (10 ms put p99 near 30 ms at 30k msg/s).
        .set("fetch.wait.max.ms", "1")
        // An explicit start offset the broker calls out of range falls back to the
        // beginning (repeats, counted as duplicates), never to the end (false losses).
        .set("auto.offset.reset", "earliest");
    let (consumer, partitions) = open(source, config)?;
    let mut list = rdkafka::TopicPartitionList::new();
    for p in 0..partitions as i32 {
        // The end now, as an explicit offset: nothing published after this is skipped.
        let (_, high) = consumer
            .fetch_watermarks(&source.topic, p, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("kafka: watermarks of {}: {e}", source.topic))?;
        list.add_partition_offset(&source.topic, p, rdkafka::Offset::Offset(high))
            .map_err(|e| anyhow::anyhow!("kafka: {e}"))?;
    }
    consumer
        .assign(&list)
        .map_err(|e| anyhow::anyhow!("kafka: assign: {e}"))?;
    // Let the fetchers start before anything is published.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < settle {
        let _ = consumer.poll(Duration::from_millis(100));
    }
    let distinct = Arc::new(AtomicU64::new(0));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let (d, m, s) = (distinct.clone(), measuring.clone(), stop.clone());
    let thread = std::thread::Builder::new()
        .name("kafka-consumer".into())
        .spawn(move || {
            let mut out = Consumed {
                accounts: rustc_hash::FxHashMap::default(),
                latency: hdrhistogram::Histogram::new_with_bounds(1, 600_000_000_000, 3)?,
                window: 0,
            };
            let mut seen = 0u64;
            while !s.load(Ordering::Acquire) {
                let Some(Ok(msg)) = consumer.poll(Duration::from_millis(50)) else {
                    continue;
                };
                let now = start.elapsed().as_nanos() as u64;
                let Some(stamp) = super::wire::Stamp::read(msg.payload().unwrap_or_default())
                else {
                    continue;
                };
                let new = out
                    .accounts
                    .entry(u64::from(stamp.publisher))
                    .or_default()
                    .record(u64::from(stamp.seq));
                if new {
                    seen += 1;
                    d.store(seen, Ordering::Release);
                }
                if m.load(Ordering::Acquire) {
                    out.window += 1;
                    let _ = out.latency.record(now.saturating_sub(stamp.sent_ns).max(1));
                }
            }
            Ok(out)
        })?;
    Ok(Consuming {
        distinct,
        measuring,
        stop,
        thread: Some(thread),
    })
}

/// Reads all of `source.topic` from its beginning up to each partition's high watermark now
/// (a fresh consumer, at most `within`): what Kafka's log holds, to tell a record that never
/// reached Kafka from one the run's consumer did not see.
pub(super) fn read_log(
    source: &KafkaOut,
    within: Duration,
) -> anyhow::Result<rustc_hash::FxHashMap<u64, crate::accounting::PairAccount>> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let mut config = ClientConfig::new();
    config.set("group.id", "ringmq-bench-log");
    let (consumer, partitions) = open(source, config)?;
    let mut list = rdkafka::TopicPartitionList::new();
    // Per partition: the offset to reach (its high watermark now).
    let mut ends = Vec::with_capacity(partitions);
    for p in 0..partitions as i32 {
        let (low, high) = consumer
            .fetch_watermarks(&source.topic, p, Duration::from_secs(10))
            .map_err(|e| anyhow::anyhow!("kafka: watermarks of {}: {e}", source.topic))?;
        list.add_partition_offset(&source.topic, p, rdkafka::Offset::Offset(low))
            .map_err(|e| anyhow::anyhow!("kafka: {e}"))?;
        ends.push((low, high));
    }
    consumer
        .assign(&list)
        .map_err(|e| anyhow::anyhow!("kafka: assign: {e}"))?;
    let mut log = rustc_hash::FxHashMap::<u64, crate::accounting::PairAccount>::default();
    let deadline = Instant::now() + within;
    while ends.iter().any(|(next, high)| next < high) && Instant::now() < deadline {
        let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        if let Some((next, _)) = usize::try_from(msg.partition())
            .ok()
            .and_then(|p| ends.get_mut(p))
        {
            *next = (*next).max(msg.offset() + 1);
        }
        if let Some(stamp) = super::wire::Stamp::read(msg.payload().unwrap_or_default()) {
            log.entry(u64::from(stamp.publisher))
                .or_default()
                .record(u64::from(stamp.seq));
        }
    }
    if ends.iter().any(|(next, high)| next < high) {
        anyhow::bail!(
            "kafka: {} not read to its end within {within:?}",
            source.topic
        );
    }
    Ok(log)
}

/// Where the acknowledged records the run's consumer never saw are: reads Kafka's log again
/// and says how many of them it holds (a miss on the consuming side) and how many it does
/// not (lost on the way to Kafka), and how many records the log holds twice.
pub(super) fn explain_losses(
    source: &KafkaOut,
    acked: &[u64],
    seen: &rustc_hash::FxHashMap<u64, crate::accounting::PairAccount>,
) -> String {
    let log = match read_log(source, Duration::from_secs(30)) {
        Ok(log) => log,
        Err(e) => return format!("Kafka's log not read again: {e}"),
    };
    let (mut in_log, mut absent) = (0u64, 0u64);
    for (publisher, &count) in acked.iter().enumerate() {
        let key = publisher as u64;
        for seq in 0..count {
            if seen.get(&key).is_some_and(|a| a.has(seq)) {
                continue;
            }
            if log.get(&key).is_some_and(|a| a.has(seq)) {
                in_log += 1;
            } else {
                absent += 1;
            }
        }
    }
    let repeats: u64 = log.values().map(|a| a.duplicates).sum();
    format!(
        "of the acknowledged records the consumer did not see, {in_log} are in Kafka's log \
         (missed while consuming) and {absent} are not (lost before Kafka); the log holds \
         {repeats} records twice"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A max-rate producer stops at its window: ahead of the subscribers' copies (each record
    /// counted once however many subscribers get it), or with none, of Kafka's answers.
    #[test]
    fn the_window_bounds_the_lead_over_delivery_or_acks() {
        let copies = Arc::new(AtomicU64::new(0));
        let by_delivery = Ahead {
            done: Done::Delivered(copies.clone(), 2),
            max: 10,
        };
        assert!(!by_delivery.full(9));
        assert!(by_delivery.full(10));
        copies.store(6, Ordering::Relaxed); // 3 records delivered to both subscribers
        assert!(!by_delivery.full(12));
        assert!(by_delivery.full(13));

        let answered = Arc::new(AtomicU64::new(0));
        let by_answers = Ahead {
            done: Done::Answered(answered.clone()),
            max: 10,
        };
        assert!(by_answers.full(10));
        answered.store(5, Ordering::Relaxed);
        assert!(!by_answers.full(14));
        assert!(by_answers.full(15));
    }
}
