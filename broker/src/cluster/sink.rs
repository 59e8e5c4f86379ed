//! The cluster sink of one shard: a message published here whose subscribers include other
//! nodes is produced once per destination node to that node's downlink topic (keyed by the
//! publisher's client id, so one publisher's messages keep their order), with its MQTT
//! context in the `mqtt.*` headers. Its publisher's PUBACK / PUBREC waits until Kafka
//! acknowledged every copy (acks = all); a copy Kafka does not take within
//! `kafka.timeout_ms` refuses the publisher (0x97). Destinations come from the route table's
//! current snapshot (`table.rs`), read without a lock.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use crossbeam_queue::SegQueue;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message as _};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::ClientContext;

use super::config::ClusterConfig;
use super::table::RouteTable;
use crate::kafka::config::KafkaConfig;
use crate::session::Message;
use crate::sink::{Offer, Sink, SinkCounts};

/// What rdkafka's thread shares with the shard.
#[derive(Debug)]
struct Reports {
    /// (slot, delivered) of acknowledged copies.
    done: SegQueue<(usize, bool)>,
    in_flight: AtomicUsize,
    in_flight_bytes: AtomicUsize,
    bell: crate::kafka::Bell,
    failed: AtomicBool,
    delivered_total: AtomicU64,
    failed_total: AtomicU64,
    latency_millis_total: AtomicU64,
}

/// The producer's context: the shared reports.
#[derive(Debug)]
struct Ctx(Arc<Reports>);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka (cluster downlinks): {reason}");
    }
}

impl ProducerContext for Ctx {
    /// The slot + 1 of the publisher's token, or 0 for none.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, opaque: usize) {
        let r = &self.0;
        let (ok, bytes) = match result {
            Ok(m) => {
                if let Some(created) = m.timestamp().to_millis() {
                    let waited = crate::kafka::now_millis().saturating_sub(created);
                    r.latency_millis_total
                        .fetch_add(u64::try_from(waited).unwrap_or(0), Ordering::Relaxed);
                }
                r.delivered_total.fetch_add(1, Ordering::Relaxed);
                (true, m.payload_len())
            }
            Err((_, m)) => {
                r.failed_total.fetch_add(1, Ordering::Relaxed);
                r.failed.store(true, Ordering::Release);
                (false, m.payload_len())
            }
        };
        r.in_flight.fetch_sub(1, Ordering::AcqRel);
        r.in_flight_bytes.fetch_sub(bytes, Ordering::AcqRel);
        if opaque != 0 {
            r.done.push((opaque - 1, ok));
            r.bell.ring();
        }
    }
}

/// A publisher's token waiting for its copies: copies not reported yet, all delivered so far.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    token: u64,
    left: u32,
    ok: bool,
}

/// One shard's downlink producer.
pub struct ClusterSink {
    table: Arc<ArcSwap<RouteTable>>,
    producer: ThreadedProducer<Ctx>,
    reports: Arc<Reports>,
    config: ClusterConfig,
    /// Downlink topic per node index (built when first needed).
    topics: Vec<Option<String>>,
    /// Tokens waiting for their copies, by slot; free slots listed in `free`.
    waiting: Vec<Option<Waiting>>,
    free: Vec<usize>,
    /// Rotates the pick among a shared group's member nodes.
    pick: u64,
    queue_max: usize,
    queue_bytes_max: usize,
    flush_wait: std::time::Duration,
    failing: bool,
}

impl std::fmt::Debug for ClusterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSink")
            .field("in_flight", &self.reports.in_flight.load(Ordering::Relaxed))
            .finish()
    }
}

impl ClusterSink {
    /// A downlink producer for shard `shard`, waking it through `doorbell` (an eventfd).
    pub fn new(
        kafka: &KafkaConfig,
        config: &ClusterConfig,
        table: Arc<ArcSwap<RouteTable>>,
        shard: usize,
        record_bytes_max: usize,
        doorbell: std::fs::File,
    ) -> anyhow::Result<Self> {
        let reports = Arc::new(Reports {
            done: SegQueue::new(),
            in_flight: AtomicUsize::new(0),
            in_flight_bytes: AtomicUsize::new(0),
            bell: crate::kafka::Bell::new(doorbell),
            failed: AtomicBool::new(false),
            delivered_total: AtomicU64::new(0),
            failed_total: AtomicU64::new(0),
            latency_millis_total: AtomicU64::new(0),
        });
        let mut producer_config =
            crate::kafka::sink::producer_config(kafka, shard, record_bytes_max);
        producer_config.set(
            "client.id",
            format!("{}-{}-downlink-{shard}", kafka.client_id, config.node_id),
        );
        let producer: ThreadedProducer<Ctx> = producer_config
            .create_with_context(Ctx(reports.clone()))
            .map_err(|e| anyhow::anyhow!("cluster: cannot create a producer: {e}"))?;
        Ok(Self {
            table,
            producer,
            reports,
            config: config.clone(),
            topics: Vec::new(),
            waiting: Vec::new(),
            free: Vec::new(),
            pick: shard as u64,
            queue_max: kafka.queue_count_max,
            queue_bytes_max: usize::try_from(kafka.queue_bytes_max).unwrap_or(usize::MAX),
            flush_wait: std::time::Duration::from_millis(kafka.timeout_ms.min(5_000)),
            failing: false,
        })
    }

    fn topic(&mut self, table: &RouteTable, node: usize) -> Option<String> {
        if self.topics.len() <= node {
            self.topics.resize(node + 1, None);
        }
        let slot = self.topics.get_mut(node)?;
        if slot.is_none() {
            *slot = Some(self.config.downlink_of(table.node(node)?));
        }
        slot.clone()
    }

    /// A slot for `token` waiting on `copies` reports.
    fn wait(&mut self, token: u64, copies: u32) -> usize {
        let w = Some(Waiting {
            token,
            left: copies,
            ok: true,
        });
        match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.waiting.get_mut(slot) {
                    *s = w;
                }
                slot
            }
            None => {
                self.waiting.push(w);
                self.waiting.len() - 1
            }
        }
    }

    /// One copy of `slot` reported; the token when it was the last.
    fn report(&mut self, slot: usize, ok: bool) -> Option<(u64, bool)> {
        let entry = self.waiting.get_mut(slot)?;
        let w = entry.as_mut()?;
        w.ok &= ok;
        w.left -= 1;
        if w.left > 0 {
            return None;
        }
        let done = (w.token, w.ok);
        *entry = None;
        self.free.push(slot);
        Some(done)
    }
}

impl Sink for ClusterSink {
    fn name(&self) -> &str {
        "cluster"
    }

    fn wants(&self, _topic: &str) -> bool {
        !self.table.load().alone()
    }

    fn offer(&mut self, message: &Message, publisher: &str, token: Option<u64>) -> Offer {
        let table = self.table.load_full();
        let dest = table.destinations(&message.topic, message.retain, &mut self.pick);
        let nodes = dest.nodes;
        if nodes == 0 {
            return Offer::Taken;
        }
        let slot = token.map(|t| self.wait(t, nodes.count_ones()));
        let opaque = slot.map_or(0, |s| s + 1);
        let mut left = nodes;
        while left != 0 {
            let node = left.trailing_zeros() as usize;
            left &= left - 1;
            let Some(topic) = self.topic(&table, node) else {
                // A node the snapshot does not name (cannot happen): the copy fails.
                if let Some(s) = slot {
                    self.reports.done.push((s, false));
                    self.reports.bell.ring();
                }
                continue;
            };
            let mut headers = crate::kafka::sink::headers(message, publisher);
            let shared = dest.shared_of(node);
            if !shared.is_empty() {
                headers = headers.insert(Header {
                    key: "mqtt.cluster.shared",
                    value: Some(shared.as_bytes()),
                });
            }
            if message.retain {
                headers = headers.insert(Header {
                    key: "mqtt.retain",
                    value: Some(&b"1"[..]),
                });
            }
            if let Some(left) = message
                .expires_at
                .map(|at| at.saturating_duration_since(std::time::Instant::now()))
            {
                let secs = left.as_secs().max(1).to_string();
                headers = headers.insert(Header {
                    key: "mqtt.message_expiry",
                    value: Some(secs.as_bytes()),
                });
            }
            let mut record = BaseRecord::with_opaque_to(&topic, opaque)
                .payload(&message.payload[..])
                .headers(headers);
            if !publisher.is_empty() {
                record = record.key(publisher);
            }
            let bytes = message.payload.len();
            self.reports.in_flight.fetch_add(1, Ordering::AcqRel);
            self.reports
                .in_flight_bytes
                .fetch_add(bytes, Ordering::AcqRel);
            if let Err((e, _)) = self.producer.send(record) {
                self.reports.in_flight.fetch_sub(1, Ordering::AcqRel);
                self.reports
                    .in_flight_bytes
                    .fetch_sub(bytes, Ordering::AcqRel);
                self.reports.failed_total.fetch_add(1, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(topic = %message.topic, node = table.node(node).unwrap_or("?"), error = %e, "a message for another node was not produced: its publisher is refused");
                    self.failing = true;
                }
                if let Some(s) = slot {
                    self.reports.done.push((s, false));
                    self.reports.bell.ring();
                }
            }
        }
        match token {
            Some(_) => Offer::Pending,
            None => Offer::Taken,
        }
    }

    fn full(&self) -> bool {
        self.reports.in_flight.load(Ordering::Acquire) >= self.queue_max
            || self.reports.in_flight_bytes.load(Ordering::Acquire) >= self.queue_bytes_max
    }

    fn counts(&self) -> SinkCounts {
        let r = &self.reports;
        SinkCounts {
            delivered: r.delivered_total.load(Ordering::Relaxed),
            failed: r.failed_total.load(Ordering::Relaxed),
            in_flight: r.in_flight.load(Ordering::Relaxed) as u64,
            latency_millis: r.latency_millis_total.load(Ordering::Relaxed),
        }
    }

    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>) {
        self.reports.bell.answered();
        let before = out.len();
        while let Some((slot, ok)) = self.reports.done.pop() {
            if let Some(done) = self.report(slot, ok) {
                out.push(done);
            }
        }
        if self.reports.failed.swap(false, Ordering::AcqRel) {
            if !self.failing {
                tracing::warn!("Kafka did not acknowledge messages for other nodes within kafka.timeout_ms: their publishers are refused (0x97)");
                self.failing = true;
            }
        } else if self.failing && out.len() > before && out.iter().skip(before).all(|(_, ok)| *ok) {
            tracing::info!("Kafka acknowledges messages for other nodes again");
            self.failing = false;
        }
    }
}

impl Drop for ClusterSink {
    fn drop(&mut self) {
        let _ = self.producer.flush(self.flush_wait);
    }
}
