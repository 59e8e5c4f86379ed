//! The outbox of `ack = "local"` rules: a publish matching such a rule is acknowledged once it
//! is durable in a local log (per the broker's `durability`), and a thread of its own produces
//! the log to Kafka in order, at least once, whatever Kafka's state: a broker restart, a
//! Kafka outage or a producer that failed for good only delay it.
//!
//! One outbox per broker. Each shard renders a message into a [`record`] and pushes it with
//! the publisher's token onto the outbox's queue; the outbox thread ([`worker`]) gives it the
//! next sequence number, writes it to the [`log`] (group commit: everything taken in one pass
//! is one write and, under `sync`, one fdatasync), confirms the tokens to their shards
//! (their queue and doorbell: the PUBACK / PUBREC leaves), then produces the records with an
//! idempotent producer that never times a record out, in sequence order, each with the header
//! `ringmq.outbox_id` = `ORIGIN/SEQUENCE` so consumers can drop the repeats a restart may
//! bring. Kafka's acknowledgements advance the cursor; acknowledged segments are deleted.
//!
//! Bounds: the backlog (records taken and not acknowledged by Kafka, in memory and in the
//! log) is at most `kafka.backlog_bytes_max` bytes of records; at it the shards stop reading
//! their clients (the sink is full) and a message offered then is refused (0x97). Records
//! handed to the producer and not acknowledged: at most `kafka.queue_count_max`. One pass
//! takes at most [`TAKE_MAX`] records.
//!
//! Under `durability = "memory"` there is no log: a record is acknowledged once queued and
//! lost with the process, like everything else in that mode.

pub mod log;
pub mod record;
mod worker;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crossbeam_queue::SegQueue;

use crate::config::{Config, Durability};

/// Records one pass of the outbox thread takes from the shards at most.
pub const TAKE_MAX: usize = 65_536;

/// The header carrying a record's origin and sequence.
pub const ID_HEADER: &str = "ringmq.outbox_id";

/// A record a shard hands over.
#[derive(Debug)]
pub struct Entry {
    /// The shard that confirms `token`.
    pub shard: u16,
    /// The publisher's token (None: QoS 0 or the broker's own message).
    pub token: Option<u64>,
    /// The encoded record ([`record::encode`]).
    pub record: Vec<u8>,
}

/// What a shard shares with the outbox thread.
#[derive(Debug)]
pub struct Shared {
    inbox: SegQueue<Entry>,
    /// Tokens made durable, per shard, and the shard's doorbell.
    done: Vec<(SegQueue<(u64, bool)>, super::Bell)>,
    /// Records taken and not acknowledged by Kafka yet, and their bytes.
    backlog: AtomicU64,
    backlog_bytes: AtomicU64,
    backlog_bytes_max: u64,
    /// Handed to the producer and not acknowledged yet.
    in_kafka: AtomicU64,
    delivered: AtomicU64,
    /// Deliveries that failed and were tried again.
    retried: AtomicU64,
    /// Records Kafka refused for good, set aside in `dead/`.
    dead: AtomicU64,
    /// Producers that failed for good and were replaced.
    replaced: AtomicU64,
    latency: crate::metrics::SharedHistogram,
    /// The thread is about to sleep: whoever pushes wakes it.
    idle: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Shared {
    /// At or over the backlog bound: the shards hold their clients back.
    pub fn full(&self) -> bool {
        self.backlog_bytes.load(Ordering::Acquire) >= self.backlog_bytes_max
    }

    /// Takes `entry`; false (nothing taken) when the backlog is at its bound.
    pub fn push(&self, entry: Entry) -> bool {
        if self.full() {
            return false;
        }
        self.backlog.fetch_add(1, Ordering::AcqRel);
        self.backlog_bytes
            .fetch_add(entry.record.len() as u64, Ordering::AcqRel);
        self.inbox.push(entry);
        self.wake();
        true
    }

    /// Wakes the outbox thread if it sleeps.
    fn wake(&self) {
        if self.idle.swap(false, Ordering::SeqCst) {
            if let Some(t) = self.thread.get() {
                t.unpark();
            }
        }
    }

    /// Tokens of `shard` made durable (true) or refused (false: the log could not be
    /// written) since the last call.
    pub fn drain_done(&self, shard: usize, mut f: impl FnMut(u64, bool)) {
        if let Some((done, bell)) = self.done.get(shard) {
            bell.answered();
            while let Some((token, ok)) = done.pop() {
                f(token, ok);
            }
        }
    }

    /// Counts for the metrics: (records, bytes) in the backlog, handed to the producer,
    /// delivered, retried, latency.
    pub fn counts(&self) -> OutboxCounts {
        OutboxCounts {
            backlog: self.backlog.load(Ordering::Relaxed),
            backlog_bytes: self.backlog_bytes.load(Ordering::Relaxed),
            in_kafka: self.in_kafka.load(Ordering::Relaxed),
            delivered: self.delivered.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead: self.dead.load(Ordering::Relaxed),
            replaced: self.replaced.load(Ordering::Relaxed),
            latency: self.latency.load(),
        }
    }
}

/// The outbox's running totals.
#[derive(Clone, Copy, Debug, Default)]
pub struct OutboxCounts {
    /// Records not acknowledged by Kafka.
    pub backlog: u64,
    /// Their bytes.
    pub backlog_bytes: u64,
    /// Handed to the producer, not acknowledged.
    pub in_kafka: u64,
    /// Acknowledged by Kafka.
    pub delivered: u64,
    /// Deliveries that failed and were tried again.
    pub retried: u64,
    /// Records Kafka refused for good (set aside in `dead/`).
    pub dead: u64,
    /// Producers that failed for good and were replaced.
    pub replaced: u64,
    /// Produce to Kafka's acknowledgement (the wait in the outbox before it not counted).
    pub latency: crate::metrics::Histogram,
}

/// The running outbox: its shared side and its thread.
#[derive(Debug)]
pub struct Outbox {
    /// What the shards use.
    pub shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

/// The directory of the outbox's log.
pub fn dir(config: &Config) -> std::path::PathBuf {
    config.data_dir.join("kafka-outbox")
}

impl Outbox {
    /// Opens the log (reading back what Kafka has not acknowledged), creates the producer and
    /// starts the thread; `bells` are the shards' doorbells. Errors name the file or Kafka.
    pub fn start(config: &Config, bells: Vec<std::fs::File>) -> anyhow::Result<Self> {
        let kafka = config
            .kafka
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("kafka outbox without [kafka]"))?;
        let shared = Arc::new(Shared {
            inbox: SegQueue::new(),
            done: bells
                .into_iter()
                .map(|b| (SegQueue::new(), super::Bell::new(b)))
                .collect(),
            backlog: AtomicU64::new(0),
            backlog_bytes: AtomicU64::new(0),
            backlog_bytes_max: kafka.backlog_bytes_max,
            in_kafka: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            dead: AtomicU64::new(0),
            replaced: AtomicU64::new(0),
            latency: crate::metrics::SharedHistogram::default(),
            idle: AtomicBool::new(false),
            thread: OnceLock::new(),
        });
        let (log, recovered) = match config.durability {
            // No log: sequences start from the clock (microseconds), so ids stay unique
            // across restarts below a million records a second on average.
            Durability::Memory => (
                None,
                log::Recovered {
                    next_seq: u64::try_from(crate::kafka::now_millis()).unwrap_or(0) * 1000,
                    ..log::Recovered::default()
                },
            ),
            Durability::Sync | Durability::Batch => {
                let (log, recovered) = log::Log::open(&dir(config), kafka.outbox_segment_bytes)?;
                (Some(log), recovered)
            }
        };
        if !recovered.records.is_empty() {
            tracing::info!(
                records = recovered.records.len(),
                "kafka outbox: records not acknowledged by Kafka before the restart are produced first"
            );
        }
        // The name, then a token kept with the log (a new one per start without a log).
        let name = config
            .cluster
            .as_ref()
            .map_or_else(|| kafka.client_id.clone(), |c| c.node_id.clone());
        let token = match &log {
            Some(log) => log
                .origin_token()
                .map_err(|e| anyhow::anyhow!("kafka outbox: {}: {e}", dir(config).display()))?,
            None => log::random_token(),
        };
        let origin = format!("{name}-{token}");
        let stop = Arc::new(AtomicBool::new(false));
        let worker = worker::Worker::new(
            config,
            kafka,
            shared.clone(),
            log,
            recovered,
            origin,
            stop.clone(),
        )?;
        let thread = std::thread::Builder::new()
            .name("kafka-outbox".into())
            .spawn(move || worker.run())?;
        let _ = shared.thread.set(thread.thread().clone());
        shared.wake();
        Ok(Self {
            shared,
            thread: Some(thread),
            stop,
        })
    }

    /// Stops the thread after it wrote what the shards handed over (waiting at most
    /// min(kafka.timeout_ms, 5 s) for Kafka to acknowledge what is produced; the rest stays
    /// in the log for the next start).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        self.stop();
    }
}
