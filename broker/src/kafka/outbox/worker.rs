//! The outbox thread: takes the shards' records, logs them, confirms their tokens, produces
//! them to Kafka in sequence order (only what is durable: under `batch`, after the interval's
//! fdatasync) and advances the cursor as Kafka acknowledges them.
//!
//! Failures: the producer never times a record out (librdkafka retries in order while Kafka
//! is away). A delivery Kafka refuses for the record itself (too large, invalid) will never
//! succeed: the record goes to `dead/` with an error line and the dead counter, and the
//! outbox goes on. Any other refusal (a topic deleted or not authorized: every record of that
//! topic fails alike) puts the record back to wait and it is produced again after a second,
//! from the oldest failed one, so order holds. A producer that failed for good (librdkafka's
//! fatal error) is replaced, with a growing pause between replacements (1 s to 30 s), and
//! everything not acknowledged is produced again.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, PurgeConfig};
use rdkafka::ClientContext;

use super::log::{self, Log, Recovered};
use super::record::RecordRef;
use super::{Shared, ID_HEADER, TAKE_MAX};
use crate::config::{Config, Durability};
use crate::kafka::config::KafkaConfig;
use crate::kafka::renew::{Renewable, Renewing};
use rdkafka::types::RDKafkaErrorCode as Code;

/// How long a failed delivery waits before it is produced again.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// How often the cursor file is rewritten while Kafka acknowledges.
const CURSOR_EVERY: Duration = Duration::from_millis(100);
/// The longest sleep with nothing to do.
const IDLE_WAIT: Duration = Duration::from_millis(50);
/// Record bytes one pass takes at most (one write).
const TAKE_BYTES_MAX: usize = 8 << 20;
/// Refusals of the record itself: producing it again cannot succeed.
fn record_refused(code: Code) -> bool {
    matches!(
        code,
        Code::MessageSizeTooLarge
            | Code::InvalidMessageSize
            | Code::InvalidMessage
            | Code::InvalidRecord
    )
}

/// Keeps a record Kafka (or the producer) refuses for good in `dead/`; true once it is kept
/// (under `memory` there is nowhere to keep it: true, logged). A record that could not be
/// kept stays in the outbox.
fn set_aside(log: Option<&Log>, shared: &Shared, p: &Pending, why: &str) -> bool {
    let seq = p.seq;
    let kept = match log {
        Some(log) => match log.dead_letter(seq, &p.record) {
            Ok(path) => path.display().to_string(),
            Err(e) => {
                tracing::error!(seq, error = %e, "kafka outbox: a record Kafka refuses ({why}) cannot be set aside; it stays in the outbox");
                return false;
            }
        },
        None => "not kept: durability = memory".into(),
    };
    shared.dead.fetch_add(1, Ordering::Relaxed);
    tracing::error!(seq, error = why, kept = %kept, "kafka outbox: a record is refused for good; it is set aside and the outbox goes on");
    true
}

/// Where a record is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Logged, not handed to the producer (or handed and failed).
    Waiting,
    /// Handed to the producer.
    InKafka,
    /// Acknowledged by Kafka.
    Acked,
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    record: Vec<u8>,
    state: State,
    /// Refused for itself once, maybe for its batch's sake: produced alone next time, set
    /// aside only if refused alone.
    alone: bool,
}

/// What one producer's thread reports back: (sequence, None if delivered or the error), and
/// that an error came.
#[derive(Debug)]
struct Deliveries {
    done: SegQueue<(u64, Option<Code>)>,
    errored: AtomicBool,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Ctx(Arc<Deliveries>);

impl ClientContext for Ctx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka (outbox): {log_message}");
    }

    /// rdkafka hands a fatal error over with its underlying code: the thread asks the
    /// client after any error.
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka (outbox): {reason}");
        self.0.errored.store(true, Ordering::SeqCst);
        self.0.shared.wake();
    }
}

impl Renewable for Ctx {
    fn errored(&self) -> &AtomicBool {
        &self.0.errored
    }

    /// A fresh report queue: the failed producer's late reports go to its own, dropped with
    /// it (every record it held is produced again by the new one).
    fn again(&self) -> Self {
        Ctx(Arc::new(Deliveries {
            done: SegQueue::new(),
            errored: AtomicBool::new(false),
            shared: self.0.shared.clone(),
        }))
    }
}

impl ProducerContext for Ctx {
    /// The record's sequence.
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, seq: usize) {
        let failed = match result {
            Ok(m) => {
                if let Some(created) = m.timestamp().to_millis() {
                    let age = crate::kafka::now_millis().saturating_sub(created);
                    self.0
                        .shared
                        .latency
                        .record_millis(u64::try_from(age).unwrap_or(0));
                }
                None
            }
            Err((e, _)) => Some(e.rdkafka_error_code().unwrap_or(Code::Fail)),
        };
        self.0.done.push((seq as u64, failed));
        self.0.shared.wake();
    }
}

/// The outbox thread's state.
pub(super) struct Worker {
    shared: Arc<Shared>,
    log: Option<Log>,
    /// fdatasync before confirming (`sync`); else every `fsync_every` (`batch`).
    sync: bool,
    fsync_every: Duration,
    last_fsync: Instant,
    unsynced: bool,
    /// Records not acknowledged by Kafka, by sequence (gaps where a write failed).
    pending: VecDeque<Pending>,
    next_seq: u64,
    /// Records below this sequence are durable (under `batch`: fdatasynced) and may be
    /// produced.
    durable_seq: u64,
    /// Index in `pending` from which records wait to be produced.
    scan: usize,
    /// Replaced when it fails for good (every record not acknowledged is then produced
    /// again by the new one).
    producer: Renewing<Ctx>,
    in_kafka: usize,
    in_kafka_max: usize,
    retry_at: Option<Instant>,
    origin: String,
    stop: Arc<AtomicBool>,
    flush_wait: Duration,
    frames: Vec<u8>,
    tokens: Vec<(u16, u64)>,
    last_cursor: Instant,
    /// Logged once per streak of failed deliveries.
    failing: bool,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("pending", &self.pending.len())
            .field("in_kafka", &self.in_kafka)
            .finish()
    }
}

impl Worker {
    pub(super) fn new(
        config: &Config,
        kafka: &KafkaConfig,
        shared: Arc<Shared>,
        log: Option<Log>,
        recovered: Recovered,
        origin: String,
        stop: Arc<AtomicBool>,
    ) -> anyhow::Result<Self> {
        let record_max = crate::kafka::record_bytes_max(config.packet_bytes_max);
        let mut producer_config = crate::kafka::sink::producer_config(kafka, 0, record_max);
        producer_config
            .set("client.id", format!("{}-outbox", kafka.client_id))
            // Never time a record out: it stays in order in the producer until Kafka takes
            // it; the outbox's own bound is the backlog.
            .set("message.timeout.ms", "0");
        let deliveries = Deliveries {
            done: SegQueue::new(),
            errored: AtomicBool::new(false),
            shared: shared.clone(),
        };
        let producer = Renewing::new(
            producer_config,
            Ctx(Arc::new(deliveries)),
            "kafka outbox",
            "everything Kafka has not acknowledged is produced again",
        )
        .map_err(|e| anyhow::anyhow!("kafka outbox: cannot create a producer: {e}"))?;
        let mut pending = VecDeque::with_capacity(recovered.records.len());
        for (seq, record) in recovered.records {
            shared.backlog.fetch_add(1, Ordering::AcqRel);
            shared
                .backlog_bytes
                .fetch_add(record.len() as u64, Ordering::AcqRel);
            pending.push_back(Pending {
                seq,
                record,
                state: State::Waiting,
                alone: false,
            });
        }
        let now = Instant::now();
        Ok(Self {
            shared,
            log,
            sync: config.durability == Durability::Sync,
            fsync_every: Duration::from_millis(config.fsync_interval_ms),
            last_fsync: now,
            unsynced: false,
            pending,
            next_seq: recovered.next_seq,
            durable_seq: recovered.next_seq,
            scan: 0,
            producer,
            in_kafka: 0,
            in_kafka_max: kafka.queue_count_max,
            retry_at: None,
            origin,
            stop,
            flush_wait: Duration::from_millis(kafka.timeout_ms.min(5_000)),
            frames: Vec::new(),
            tokens: Vec::new(),
            last_cursor: now,
            failing: false,
        })
    }

    pub(super) fn run(mut self) {
        loop {
            let mut busy = self.take();
            busy |= self.collect();
            let renewed = self.producer.renewed;
            self.producer.renew_if_failed();
            if self.producer.renewed != renewed {
                self.produce_again();
                busy = true;
            }
            self.advance(false);
            self.timed_sync();
            busy |= self.produce();
            if self.stop.load(Ordering::SeqCst) {
                self.finish();
                return;
            }
            if !busy {
                self.sleep();
            }
        }
    }

    /// Takes what the shards handed over, logs it and confirms it. True if anything came.
    fn take(&mut self) -> bool {
        self.frames.clear();
        self.tokens.clear();
        let first = self.next_seq;
        if self.frames.capacity() > 2 * TAKE_BYTES_MAX {
            self.frames = Vec::new();
        }
        let mut taken = 0;
        let mut bytes = 0;
        while taken < TAKE_MAX && bytes < TAKE_BYTES_MAX {
            let Some(entry) = self.shared.inbox.pop() else {
                break;
            };
            bytes += entry.record.len();
            let seq = self.next_seq;
            self.next_seq += 1;
            if self.log.is_some() {
                log::frame(seq, &entry.record, &mut self.frames);
            }
            if let Some(token) = entry.token {
                self.tokens.push((entry.shard, token));
            }
            self.pending.push_back(Pending {
                seq,
                record: entry.record,
                state: State::Waiting,
                alone: false,
            });
            taken += 1;
        }
        if taken == 0 {
            return false;
        }
        let written = match &mut self.log {
            None => Ok(()),
            Some(log) => log.append(first, &self.frames, self.sync),
        };
        let ok = match written {
            Ok(()) => {
                match &self.log {
                    Some(_) if !self.sync => self.unsynced = true,
                    // fdatasynced, or nothing to sync (`memory`).
                    _ => self.durable_seq = self.next_seq,
                }
                true
            }
            Err(e) => {
                tracing::error!(error = %e, records = taken, "kafka outbox: cannot write the log; these messages are refused (0x97), not acknowledged");
                // Never acknowledged: not produced either.
                for p in self.pending.drain(self.pending.len() - taken..) {
                    self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
                    self.shared
                        .backlog_bytes
                        .fetch_sub(p.record.len() as u64, Ordering::AcqRel);
                }
                false
            }
        };
        let mut rung = vec![false; self.shared.done.len()];
        for &(shard, token) in &self.tokens {
            if let Some((done, _)) = self.shared.done.get(shard as usize) {
                done.push((token, ok));
                if let Some(r) = rung.get_mut(shard as usize) {
                    *r = true;
                }
            }
        }
        for (i, rung) in rung.into_iter().enumerate() {
            if let (true, Some((_, bell))) = (rung, self.shared.done.get(i)) {
                bell.ring();
            }
        }
        true
    }

    /// Kafka's reports since the last look. True if any came.
    fn collect(&mut self) -> bool {
        let mut any = false;
        let mut failed = false;
        while let Some((seq, error)) = self.deliveries().done.pop() {
            any = true;
            self.in_kafka = self.in_kafka.saturating_sub(1);
            let Ok(i) = self.pending.binary_search_by_key(&seq, |p| p.seq) else {
                continue;
            };
            let Some(p) = self.pending.get_mut(i) else {
                continue;
            };
            if p.state != State::InKafka {
                continue;
            }
            match error {
                None => {
                    p.state = State::Acked;
                    self.shared.delivered.fetch_add(1, Ordering::Relaxed);
                }
                Some(code)
                    if record_refused(code)
                        && p.alone
                        && set_aside(self.log.as_ref(), &self.shared, p, &code.to_string()) =>
                {
                    p.state = State::Acked;
                }
                Some(code) => {
                    // A record-level refusal may be its batch's (too large together):
                    // produced alone before it is set aside.
                    p.alone |= record_refused(code);
                    p.state = State::Waiting;
                    self.shared.retried.fetch_add(1, Ordering::Relaxed);
                    self.scan = self.scan.min(i);
                    failed = true;
                }
            }
        }
        self.shared
            .in_kafka
            .store(self.in_kafka as u64, Ordering::Relaxed);
        if failed {
            self.retry_at = Some(Instant::now() + RETRY_AFTER);
            if !self.failing {
                tracing::warn!("kafka outbox: Kafka refused records; they stay in the outbox and are produced again every second");
                self.failing = true;
            }
        } else if any && self.failing {
            tracing::info!("kafka outbox: Kafka acknowledges again");
            self.failing = false;
        }
        any
    }

    /// After a producer was replaced: every record it held (not acknowledged) waits to be
    /// produced by the new one.
    fn produce_again(&mut self) {
        self.shared.replaced.fetch_add(1, Ordering::Relaxed);
        for p in &mut self.pending {
            if p.state == State::InKafka {
                p.state = State::Waiting;
            }
        }
        self.in_kafka = 0;
        self.scan = 0;
        self.retry_at = None;
    }

    /// The current producer's report queue.
    fn deliveries(&self) -> &Deliveries {
        &self.producer.producer().context().0
    }

    /// Drops acknowledged records from the front; writes the cursor now and then (always
    /// with `force`).
    fn advance(&mut self, force: bool) {
        let was_full = self.shared.full();
        let mut popped = 0;
        while self
            .pending
            .front()
            .is_some_and(|p| p.state == State::Acked)
        {
            if let Some(p) = self.pending.pop_front() {
                self.shared.backlog.fetch_sub(1, Ordering::AcqRel);
                self.shared
                    .backlog_bytes
                    .fetch_sub(p.record.len() as u64, Ordering::AcqRel);
                popped += 1;
            }
        }
        self.scan = self.scan.saturating_sub(popped);
        if was_full && !self.shared.full() {
            // Shards that stopped reading their clients look again now, not on their tick.
            for (_, bell) in &self.shared.done {
                bell.ring();
            }
        }
        if force || self.last_cursor.elapsed() >= CURSOR_EVERY {
            let cursor = self.pending.front().map_or(self.next_seq, |p| p.seq);
            if let Some(log) = &mut self.log {
                log.advance(cursor);
            }
            self.last_cursor = Instant::now();
        }
    }

    /// Hands waiting records to the producer in sequence order, up to its bound. True if
    /// any was handed.
    fn produce(&mut self) -> bool {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        self.retry_at = None;
        let mut sent = false;
        while self.in_kafka < self.in_kafka_max {
            let Some(p) = self.pending.get_mut(self.scan) else {
                break;
            };
            if p.seq >= self.durable_seq {
                break;
            }
            if p.state != State::Waiting {
                self.scan += 1;
                continue;
            }
            if p.alone && self.in_kafka > 0 {
                // Produced alone: once nothing else is in the producer.
                break;
            }
            let Some(r) = RecordRef::decode(&p.record) else {
                if set_aside(
                    self.log.as_ref(),
                    &self.shared,
                    p,
                    "the record does not decode",
                ) {
                    p.state = State::Acked;
                    self.scan += 1;
                    continue;
                }
                self.retry_at = Some(Instant::now() + RETRY_AFTER);
                break;
            };
            let id = format!("{}/{}", self.origin, p.seq);
            let mut headers = Some(OwnedHeaders::new_with_capacity(r.header_count() + 1));
            r.headers(|key, value| {
                headers = headers.take().map(|h| {
                    h.insert(Header {
                        key,
                        value: Some(value),
                    })
                });
            });
            let headers = headers.unwrap_or_default().insert(Header {
                key: ID_HEADER,
                value: Some(id.as_bytes()),
            });
            let mut record = BaseRecord::with_opaque_to(r.topic, p.seq as usize)
                .payload(r.payload)
                .headers(headers);
            if let Some(key) = r.key {
                record = record.key(key);
            }
            match self.producer.producer().send(record) {
                Ok(()) => {
                    p.state = State::InKafka;
                    self.in_kafka += 1;
                    self.scan += 1;
                    sent = true;
                    if p.alone {
                        break;
                    }
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => break,
                Err((KafkaError::MessageProduction(code), _))
                    if record_refused(code)
                        && set_aside(self.log.as_ref(), &self.shared, p, &code.to_string()) =>
                {
                    // The producer refuses the record itself (larger than message.max.bytes).
                    p.state = State::Acked;
                    self.scan += 1;
                }
                Err((e, _)) => {
                    if !self.failing {
                        tracing::warn!(error = %e, topic = r.topic, "kafka outbox: the producer does not take a record; it stays in the outbox and is produced again every second");
                        self.failing = true;
                    }
                    self.retry_at = Some(Instant::now() + RETRY_AFTER);
                    break;
                }
            }
        }
        self.shared
            .in_kafka
            .store(self.in_kafka as u64, Ordering::Relaxed);
        sent
    }

    /// `batch` durability: fdatasync every `fsync_interval_ms`.
    fn timed_sync(&mut self) {
        if self.last_fsync.elapsed() >= self.fsync_every {
            self.timed_sync_now();
        }
    }

    fn timed_sync_now(&mut self) {
        if self.unsynced {
            let synced = match &mut self.log {
                Some(log) => log.sync(),
                None => Ok(()),
            };
            match synced {
                Ok(()) => {
                    self.durable_seq = self.next_seq;
                    self.unsynced = false;
                }
                // Not produced until a later fdatasync succeeds.
                Err(e) => tracing::error!(error = %e, "kafka outbox: fdatasync failed"),
            }
            self.last_fsync = Instant::now();
        }
    }

    fn sleep(&mut self) {
        let wait = self
            .retry_at
            .map_or(IDLE_WAIT, |t| t.saturating_duration_since(Instant::now()))
            .min(IDLE_WAIT);
        // `batch`: the next fdatasync lets records be produced.
        let wait = if self.unsynced {
            wait.min(self.fsync_every.saturating_sub(self.last_fsync.elapsed()))
        } else {
            wait
        };
        self.shared.idle.store(true, Ordering::SeqCst);
        if self.shared.inbox.is_empty()
            && self.deliveries().done.is_empty()
            && !self.producer.due()
            && !self.stop.load(Ordering::SeqCst)
        {
            std::thread::park_timeout(wait);
        }
        self.shared.idle.store(false, Ordering::SeqCst);
    }

    /// At shutdown (the shards stopped): logs what came last, gives Kafka a moment for what
    /// is produced, writes the cursor. What is not acknowledged stays for the next start.
    fn finish(&mut self) {
        while self.take() {}
        self.timed_sync_now();
        let deadline = Instant::now() + self.flush_wait;
        loop {
            self.collect();
            self.advance(false);
            self.produce();
            if self.pending.is_empty() || Instant::now() >= deadline {
                break;
            }
            std::thread::park_timeout(Duration::from_millis(10));
        }
        self.advance(true);
        if let Some(log) = &mut self.log {
            let _ = log.sync();
        }
        if !self.pending.is_empty() {
            tracing::info!(
                records = self.pending.len(),
                "kafka outbox: records not acknowledged by Kafka stay in the log for the next start"
            );
        }
        self.producer
            .producer()
            .purge(PurgeConfig::default().queue().inflight());
    }
}
