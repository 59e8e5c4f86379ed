//! Sessions this node took from a dead node (their client connected here while the node that
//! had them was down): the copies for them in the dead node's downlink. That node is not
//! there to forward them (`handover.rs` is what a live node does), and when it comes back it
//! no longer has those sessions: without this they would wait in Kafka, then match nobody.
//!
//! The claim (`core/owners.rs`) tells this node's salvage thread which session, its filters,
//! the node it came from and when; the thread notes that node's committed offsets in its
//! downlink at once (its consumer group's: nothing after them was made durable there for
//! sure; nothing is committed by this reader). Once that node is seen dead (no heartbeat for
//! `cluster.node_timeout_ms`, left, or forgotten) or restarted (a heartbeat of a new
//! incarnation after the claim: back before it was seen dead, and without the session) the
//! thread reads its downlink from those offsets (the ones read then, should the note have
//! failed) and produces every QoS 1/2 copy for one of
//! the sessions again to this node's own downlink, addressed to that session alone
//! (`mqtt.cluster.for_client`, the original's timestamp, so its expiry counts from when it
//! was first produced), with the same choice `handover.rs` makes: produced no later than
//! `cluster.node_timeout_ms` after the claim, and not a copy this node also received straight
//! (its `mqtt.cluster.to` / `from`, trusted from a second after the claim). It stops once
//! every partition is past that time (or at its end a moment after it). A node still live
//! twice that long after the claim got the claim's notice and forwarded them itself: nothing
//! is read (one dying while it may still be forwarding is read for, from the offsets noted
//! with the claim). At most `cluster.moved_max` claims wait; one read of a node lasts at most
//! `cluster.moved_keep_ms`.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytestring::ByteString;
use crossbeam_queue::SegQueue;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};
use rustc_hash::FxHashMap;

use super::config::ClusterConfig;
use super::handover::{Handovers, FOR_CLIENT_HEADER, FROM_HEADER, TO_HEADER};
use super::table::RouteTable;
use crate::kafka::config::KafkaConfig;

/// A partition at its end is done this long after the last claim's window closed (a copy
/// produced in the window may be appended a little later: linger, retries).
const SLACK_MS: i64 = 2_000;
/// A failed read is tried again after this, at most [`TRIES`] times (copies forwarded by a
/// failed try come again: at least once).
const RETRY: Duration = Duration::from_secs(1);
const TRIES: u32 = 5;
/// How long a node's restart is remembered (longer than any claim waits).
const RESTARTS_KEPT: Duration = Duration::from_secs(3_600);
/// A node's committed offsets read this long ago still serve a claim taken from it (a burst
/// of claims reads them once; older ones would make the read start further back).
const NOTE_AGE: Duration = Duration::from_secs(1);

/// A session this node claimed from node `from`.
#[derive(Clone, Debug)]
pub struct Claim {
    pub client: ByteString,
    /// Its subscriptions' filters (shared groups' excepted).
    pub filters: Vec<ByteString>,
    /// The node that had it (its owner in Redis before the claim).
    pub from: Box<str>,
    pub at: Instant,
    /// When, in Kafka's clock (milliseconds since the epoch).
    pub at_ms: i64,
}

/// The claims the shards made, for the salvage thread (in `feed::Feed`).
#[derive(Debug, Default)]
pub struct Claims {
    queue: SegQueue<Claim>,
    /// Claims queued or waiting in the thread: at most `cluster.moved_max`.
    waiting: AtomicUsize,
    /// Copies produced again for sessions taken from dead nodes (for the metrics).
    forwarded: AtomicU64,
    /// Nodes seen restarting, and when (the routes thread tells; a few per node id).
    restarts: Mutex<FxHashMap<Box<str>, Instant>>,
}

impl Claims {
    /// Session `claim.client` was taken from node `claim.from`: its copies there are read
    /// if that node is dead. False (and nothing queued) past `max` waiting claims.
    pub fn push(&self, claim: Claim, max: usize) -> bool {
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= max {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.queue.push(claim);
        true
    }

    /// Copies produced again so far.
    pub fn forwarded(&self) -> u64 {
        self.forwarded.load(Ordering::Relaxed)
    }

    fn done(&self, n: usize) {
        self.waiting.fetch_sub(n, Ordering::AcqRel);
    }

    /// Node `node` restarted (a heartbeat of a new incarnation was read now).
    pub(super) fn restarted(&self, node: &str) {
        let now = Instant::now();
        let mut restarts = self.restarts.lock().unwrap_or_else(PoisonError::into_inner);
        // Bounded: a restart matters to the claims made before it, which wait less than this.
        restarts.retain(|_, at| now.duration_since(*at) < RESTARTS_KEPT);
        restarts.insert(node.into(), now);
    }

    /// Whether node `node` was seen restarting after `since`.
    fn restarted_since(&self, node: &str, since: Instant) -> bool {
        let restarts = self.restarts.lock().unwrap_or_else(PoisonError::into_inner);
        restarts.get(node).is_some_and(|at| *at > since)
    }
}

/// A claim waiting for its node to be seen dead, or for its next try.
#[derive(Debug)]
struct Waiting {
    claim: Claim,
    tries: u32,
    not_before: Instant,
    /// Its node was seen dead since the claim (once is enough: a node back by the next look
    /// restarted, and missed the claim's notice).
    seen_dead: bool,
    /// Its node's committed offsets when the claim was taken (per partition, -1: none), if
    /// they could be read.
    offsets: Option<Arc<Vec<i64>>>,
}

/// A node's committed offsets as last read for the claims taken from it.
#[derive(Debug)]
struct Noted {
    at: Instant,
    offsets: Option<Arc<Vec<i64>>>,
}

/// The running salvage thread (stopped and joined when dropped).
pub type Salvager = super::Worker;

/// Starts the salvage thread reading `claims`, with the node's route table `table`.
pub fn start_salvage(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    record_bytes_max: usize,
    table: Arc<ArcSwap<RouteTable>>,
    claims: Arc<super::feed::Feed>,
) -> anyhow::Result<Salvager> {
    let mut producer_config = crate::kafka::sink::producer_config(kafka, 0, record_bytes_max);
    producer_config.set(
        "client.id",
        format!("{}-{}-salvage", kafka.client_id, config.node_id),
    );
    let mut work = Work {
        kafka: kafka.clone(),
        config: config.clone(),
        table,
        feed: claims,
        producer_config,
        waiting: Vec::new(),
        noted: FxHashMap::default(),
    };
    super::Worker::spawn("cluster-salvage", move |stop| work.run(stop))
}

/// Counts failed deliveries.
#[derive(Debug, Default)]
struct Delivered {
    failed: AtomicU64,
}

impl ClientContext for Delivered {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        tracing::debug!(?level, fac, "librdkafka: {log_message}");
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::debug!(%error, "librdkafka: {reason}");
    }
}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Work {
    kafka: KafkaConfig,
    config: ClusterConfig,
    table: Arc<ArcSwap<RouteTable>>,
    feed: Arc<super::feed::Feed>,
    /// A producer is made for each read (none idles in a node that never reads).
    producer_config: ClientConfig,
    waiting: Vec<Waiting>,
    /// Each node with claims waiting: its committed offsets as last read (at most
    /// [`NOTE_AGE`] before a claim taken from it; tried again then when the read failed).
    noted: FxHashMap<Box<str>, Noted>,
}

/// Node `node` is not live in `table` (dead, left, or forgotten).
fn is_dead(table: &RouteTable, node: &str) -> bool {
    table
        .find(node)
        .is_none_or(|i| table.live() & (1u64 << i) == 0)
}

/// The last value of header `name` of `m`.
fn header<'a>(m: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a [u8]> {
    let headers = m.headers()?;
    headers
        .iter()
        .filter(|h| h.key == name)
        .last()
        .and_then(|h| h.value)
}

impl Work {
    fn run(&mut self, stop: &AtomicBool) {
        while !stop.load(Ordering::Acquire) {
            match self.due() {
                Some((node, batch)) => self.salvage(&node, batch, stop),
                None => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// The claims of one dead node, ready to be read for; claims whose node stayed live long
    /// enough after them dropped (that node forwards their copies itself).
    fn due(&mut self) -> Option<(Box<str>, Vec<Waiting>)> {
        let table = self.table.load();
        let now = Instant::now();
        // A node that dies while it may still be forwarding (the grace, `node_timeout_ms`
        // after the claim) is seen dead within this.
        let wait = Duration::from_millis(
            2 * self.config.node_timeout_ms + 2 * self.config.heartbeat_ms + 1_000,
        );
        self.look(&table, true);
        let before = self.waiting.len();
        self.waiting.retain(|w| {
            let keep = w.seen_dead || now < w.claim.at + wait;
            if !keep {
                tracing::debug!(client = %w.claim.client, node = %w.claim.from, "the node a session was claimed from stayed live: it forwards the copies for it");
            }
            keep
        });
        self.feed.claims.done(before - self.waiting.len());
        let waiting = &self.waiting;
        self.noted
            .retain(|node, _| waiting.iter().any(|w| w.claim.from == *node));
        let node = self
            .waiting
            .iter()
            .find(|w| w.not_before <= now && w.seen_dead)?
            .claim
            .from
            .clone();
        let (batch, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|w| w.claim.from == node && w.seen_dead && w.not_before <= now);
        self.waiting = rest;
        Some((node, batch))
    }

    /// Takes the claims the shards made (with their nodes' committed offsets now), and
    /// marks the waiting claims whose node is dead in `table` now, or restarted since.
    fn look(&mut self, table: &RouteTable, retry_notes: bool) {
        while let Some(claim) = self.feed.claims.queue.pop() {
            let offsets = self.note(&claim.from);
            self.waiting.push(Waiting {
                claim,
                tries: 0,
                not_before: Instant::now(),
                seen_dead: false,
                offsets,
            });
        }
        // A claim whose node's offsets could not be read: read again (at most once a
        // NOTE_AGE per node; not in the middle of a read, which it would hold up) while its
        // node is not seen dead or restarted yet.
        let mut missing: Vec<Box<str>> = self
            .waiting
            .iter()
            .filter(|w| retry_notes && w.offsets.is_none() && !w.seen_dead)
            .map(|w| w.claim.from.clone())
            .collect();
        missing.sort_unstable();
        missing.dedup();
        for node in missing {
            if let Some(offsets) = self.note(&node) {
                for w in &mut self.waiting {
                    if w.claim.from == node && w.offsets.is_none() && !w.seen_dead {
                        w.offsets = Some(offsets.clone());
                    }
                }
            }
        }
        let claims = &self.feed.claims;
        for w in &mut self.waiting {
            if !w.seen_dead
                && (is_dead(table, &w.claim.from)
                    || claims.restarted_since(&w.claim.from, w.claim.at))
            {
                w.seen_dead = true;
            }
        }
    }

    /// A reader of node `node`'s downlink in that node's group (its committed offsets are
    /// read, never written), the topic and its partitions.
    fn reader(
        &self,
        node: &str,
    ) -> anyhow::Result<(BaseConsumer<crate::kafka::Quiet>, String, usize)> {
        let wait = Duration::from_millis(self.kafka.timeout_ms);
        let topic = self.config.downlink_of(node);
        let consumer: BaseConsumer<crate::kafka::Quiet> =
            super::reader_config(&self.kafka, &self.config, "salvage")
                .set("group.id", ClusterConfig::group_of(node))
                .set("enable.auto.offset.store", "false")
                .set("isolation.level", "read_committed")
                // A committed offset retention has deleted: from the oldest record left.
                .set("auto.offset.reset", "earliest")
                .create_with_context(crate::kafka::Quiet)?;
        let partitions = crate::kafka::partitions(&consumer, &topic, wait)?;
        Ok((consumer, topic, partitions))
    }

    /// Node `node`'s committed offsets in its downlink for a claim taken now: as read less
    /// than [`NOTE_AGE`] ago, or read now (None: they could not be, tried again after
    /// `NOTE_AGE`).
    fn note(&mut self, node: &str) -> Option<Arc<Vec<i64>>> {
        let now = Instant::now();
        if let Some(n) = self.noted.get(node).filter(|n| now < n.at + NOTE_AGE) {
            return n.offsets.clone();
        }
        let offsets = match self.reader(node).and_then(|(consumer, topic, partitions)| {
            committed_of(&consumer, &topic, partitions, self.kafka.timeout_ms)
        }) {
            Ok(offsets) => Some(Arc::new(offsets)),
            Err(e) => {
                tracing::warn!(node, error = %e, "the committed offsets of a node a session was claimed from could not be read (tried again in a second; if that node restarts meanwhile, the copies for the session it had may be lost)");
                None
            }
        };
        let noted = Noted {
            at: now,
            offsets: offsets.clone(),
        };
        self.noted.insert(node.into(), noted);
        offsets
    }

    /// Reads node `node`'s downlink for `batch`'s sessions; a failed read is tried again.
    fn salvage(&mut self, node: &str, batch: Vec<Waiting>, stop: &AtomicBool) {
        let started = Instant::now();
        match self.read(node, &batch, stop) {
            Ok((read, forwarded)) => {
                tracing::info!(node, sessions = batch.len(), read, forwarded, ms = started.elapsed().as_millis() as u64, "read a dead node's downlink for the sessions taken from it: their copies forwarded here");
                self.feed.claims.done(batch.len());
            }
            Err(e) if stop.load(Ordering::Acquire) => {
                tracing::info!(node, sessions = batch.len(), error = %e, "stopped while reading a dead node's downlink for the sessions taken from it: copies still there for them are not delivered");
            }
            Err(e) => {
                let (again, lost): (Vec<_>, Vec<_>) =
                    batch.into_iter().partition(|w| w.tries + 1 < TRIES);
                if !lost.is_empty() {
                    tracing::error!(node, sessions = lost.len(), error = %e, "reading a dead node's downlink for the sessions taken from it failed {TRIES} times: the copies there for them are not delivered");
                    self.feed.claims.done(lost.len());
                }
                if !again.is_empty() {
                    tracing::warn!(node, sessions = again.len(), error = %e, "reading a dead node's downlink for the sessions taken from it failed: tried again (copies may come twice)");
                }
                let not_before = Instant::now() + RETRY;
                self.waiting.extend(again.into_iter().map(|w| Waiting {
                    tries: w.tries + 1,
                    not_before,
                    ..w
                }));
            }
        }
    }

    /// Reads `node`'s downlink from its committed offsets until every partition is past the
    /// claims' window, producing the copies for `batch`'s sessions to this node's downlink.
    /// Returns the records read and the copies produced.
    fn read(
        &mut self,
        node: &str,
        batch: &[Waiting],
        stop: &AtomicBool,
    ) -> anyhow::Result<(u64, u64)> {
        let wait = Duration::from_millis(self.kafka.timeout_ms);
        let (consumer, topic, partitions) = self.reader(node)?;
        if partitions == 0 {
            return Ok((0, 0));
        }
        // From the earliest of the offsets noted with the claims, and of those now for a
        // claim whose could not be read.
        let now = if batch.iter().any(|w| w.offsets.is_none()) {
            Some(committed_of(
                &consumer,
                &topic,
                partitions,
                self.kafka.timeout_ms,
            )?)
        } else {
            None
        };
        let sources: Vec<&Vec<i64>> = batch
            .iter()
            .filter_map(|w| w.offsets.as_deref())
            .chain(now.as_ref())
            .collect();
        let mut start = TopicPartitionList::new();
        for p in 0..partitions {
            let earliest = sources
                .iter()
                .map(|o| o.get(p).copied().unwrap_or(-1))
                .min();
            let from = match earliest {
                Some(o) if o >= 0 => Offset::Offset(o),
                _ => Offset::Beginning,
            };
            start.add_partition_offset(&topic, i32::try_from(p)?, from)?;
        }
        consumer.assign(&start)?;
        // The claims as `handover.rs`'s table: the same choice of records.
        let followed = Handovers::new(&ClusterConfig {
            moved_max: batch.len().max(1),
            ..self.config.clone()
        });
        // Followed from now for moved_keep_ms (the read's bound), in the claims' times.
        let read_from = Instant::now();
        for w in batch {
            let c = &w.claim;
            followed.note(
                c.client.clone(),
                c.filters.clone(),
                &self.config.node_id,
                read_from,
                c.at_ms,
            );
        }
        let window_ends = batch
            .iter()
            .map(|w| w.claim.at_ms)
            .max()
            .unwrap_or(0)
            .saturating_add(i64::try_from(self.config.node_timeout_ms).unwrap_or(i64::MAX))
            .saturating_add(SLACK_MS);
        let own = self.config.downlink();
        let producer: BaseProducer<Delivered> = self
            .producer_config
            .create_with_context(Delivered::default())?;
        let deadline = Instant::now() + followed.keep();
        let mut open: Vec<i32> = (0..partitions)
            .filter_map(|p| i32::try_from(p).ok())
            .collect();
        let mut at_end: Vec<i32> = Vec::new();
        let (mut read, mut forwarded) = (0u64, 0u64);
        let mut targets = Vec::new();
        while !open.is_empty() {
            if stop.load(Ordering::Acquire) {
                anyhow::bail!("the broker stops");
            }
            if Instant::now() >= deadline {
                tracing::warn!(node, "reading a dead node's downlink for the sessions taken from it took cluster.moved_keep_ms: stopped (copies still there for them are not delivered)");
                break;
            }
            if crate::kafka::now_millis() > window_ends {
                open.retain(|p| !at_end.contains(p));
            }
            producer.poll(Duration::ZERO);
            // Other claims' nodes seen dead meanwhile stay marked for the next read.
            let table = self.table.load();
            self.look(&table, false);
            let m = match consumer.poll(Duration::from_millis(100)) {
                None => continue,
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    if !at_end.contains(&p) {
                        at_end.push(p);
                    }
                    continue;
                }
                Some(Err(e)) => {
                    tracing::debug!(node, error = %e, "reading a dead node's downlink");
                    continue;
                }
                Some(Ok(m)) => m,
            };
            read += 1;
            at_end.retain(|p| *p != m.partition());
            let stamp = m.timestamp().to_millis();
            if stamp.is_some_and(|s| s > window_ends) {
                open.retain(|p| *p != m.partition());
                continue;
            }
            if matches!(header(&m, "mqtt.qos"), Some(b"0") | None) {
                continue;
            }
            targets.clear();
            if let Some(client) = header(&m, FOR_CLIENT_HEADER) {
                // Forwarded to the dead node for a session that had moved there.
                if let Some(w) = batch.iter().find(|w| w.claim.client.as_bytes() == client) {
                    targets.push(w.claim.client.clone());
                }
            } else if let Some(topic) =
                header(&m, "mqtt.topic").and_then(|t| std::str::from_utf8(t).ok())
            {
                let text = |h| header(&m, h).and_then(|v| std::str::from_utf8(v).ok());
                let sent_to = super::handover::sent_to(text(TO_HEADER), text(FROM_HEADER));
                let mut found = Vec::new();
                followed.targets(topic, stamp, sent_to.as_deref(), Instant::now(), &mut found);
                targets.extend(found.into_iter().map(|(client, _)| client));
            }
            for client in &targets {
                match produce(&producer, &own, &m, client, stamp, stop) {
                    Ok(()) => {
                        forwarded += 1;
                        self.feed.claims.forwarded.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        tracing::warn!(node, %client, error = %e, "a copy from a dead node's downlink could not be produced for a session taken from it: skipped");
                    }
                }
            }
        }
        producer.flush(wait)?;
        let failed = producer.context().failed.load(Ordering::Relaxed);
        if failed > 0 {
            anyhow::bail!("{failed} of {forwarded} copies were not produced");
        }
        Ok((read, forwarded))
    }
}

/// The committed offsets of `consumer`'s group in `topic`'s `partitions`, by partition (-1:
/// none).
fn committed_of(
    consumer: &BaseConsumer<crate::kafka::Quiet>,
    topic: &str,
    partitions: usize,
    timeout_ms: u64,
) -> anyhow::Result<Vec<i64>> {
    let mut all = TopicPartitionList::new();
    for p in 0..partitions {
        all.add_partition(topic, i32::try_from(p)?);
    }
    let committed = consumer.committed_offsets(all, Duration::from_millis(timeout_ms))?;
    let mut out = vec![-1; partitions];
    for e in committed.elements() {
        let slot = usize::try_from(e.partition())
            .ok()
            .and_then(|p| out.get_mut(p));
        if let (Some(slot), Offset::Offset(o)) = (slot, e.offset()) {
            *slot = o;
        }
    }
    Ok(out)
}

/// Produces `m` again to `topic` for `client` alone.
fn produce(
    producer: &BaseProducer<Delivered>,
    topic: &str,
    m: &BorrowedMessage<'_>,
    client: &str,
    stamp: Option<i64>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut headers = OwnedHeaders::new();
    if let Some(original) = m.headers() {
        for h in original.iter() {
            if ![TO_HEADER, FROM_HEADER, FOR_CLIENT_HEADER].contains(&h.key) {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
    }
    headers = headers.insert(Header {
        key: FOR_CLIENT_HEADER,
        value: Some(client.as_bytes()),
    });
    // Keyed by the session: its copies keep their order.
    let mut record = BaseRecord::to(topic)
        .payload(m.payload().unwrap_or_default())
        .key(client)
        .headers(headers);
    if let Some(s) = stamp {
        record = record.timestamp(s);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                if stop.load(Ordering::Acquire) {
                    anyhow::bail!("the broker stops");
                }
                producer.poll(Duration::from_millis(50));
                record = back;
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(client: &str) -> Claim {
        Claim {
            client: client.into(),
            filters: vec!["a/#".into()],
            from: "n2".into(),
            at: Instant::now(),
            at_ms: 0,
        }
    }

    #[test]
    fn claims_waiting_are_bounded() {
        let claims = Claims::default();
        assert!(claims.push(claim("c1"), 2));
        assert!(claims.push(claim("c2"), 2));
        assert!(!claims.push(claim("c3"), 2), "past cluster.moved_max");
        assert_eq!(claims.queue.len(), 2);
        claims.done(1);
        assert!(claims.push(claim("c4"), 2));
    }

    #[test]
    fn a_restart_counts_for_the_claims_made_before_it() {
        let claims = Claims::default();
        let before = Instant::now();
        assert!(!claims.restarted_since("n2", before));
        claims.restarted("n2");
        assert!(claims.restarted_since("n2", before));
        assert!(!claims.restarted_since("n3", before), "another node");
        assert!(
            !claims.restarted_since("n2", Instant::now()),
            "a claim made after the restart"
        );
    }

    #[test]
    fn a_node_is_dead_when_not_live_or_not_known() {
        let mut table = RouteTable::new("n1");
        assert!(is_dead(&table, "n2"), "never heard of");
        let i = table.index("n2").unwrap();
        table.set_live(i, true);
        assert!(!is_dead(&table, "n2"));
        table.set_live(i, false);
        assert!(is_dead(&table, "n2"));
        assert!(!is_dead(&table, "n1"), "this node");
    }
}
