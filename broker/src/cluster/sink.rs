//! The cluster sink of one shard: a message published here whose subscribers include other
//! nodes is produced once per destination node to that node's downlink topic (keyed by the
//! publisher's client id, so one publisher's messages keep their order), with its MQTT
//! context in the `mqtt.*` headers. Its publisher's PUBACK / PUBREC waits until Kafka
//! acknowledged every copy (acks = all); a copy Kafka does not take within
//! `kafka.timeout_ms` refuses the publisher (0x97). Destinations come from the route table's
//! current snapshot (`table.rs`), read without a lock. A retained message (or its clear) is
//! also produced to the retained topic (`retained.rs`), and its publisher waits for that
//! copy too, even when no other node is live.

use std::sync::Arc;

use arc_swap::ArcSwap;
use rdkafka::message::Header;
use rdkafka::producer::{BaseRecord, Producer};

use super::config::ClusterConfig;
use super::table::RouteTable;
use crate::kafka::config::KafkaConfig;
use crate::kafka::renew::Renewing;
use crate::kafka::sink::{Ctx, Reports};
use crate::session::Message;
use crate::sink::{Offer, Sink, SinkCounts};

/// A publisher's token waiting for its copies: copies not reported yet, all delivered so far.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    token: u64,
    left: u32,
    ok: bool,
}

/// Tokens waiting for their copies, by slot; free slots listed in `free`.
#[derive(Debug, Default)]
struct Copies {
    waiting: Vec<Option<Waiting>>,
    free: Vec<usize>,
}

impl Copies {
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

/// One shard's downlink producer.
pub struct ClusterSink {
    table: Arc<ArcSwap<RouteTable>>,
    /// The node's feed: the sessions that moved away (`handover.rs`).
    feed: Arc<super::feed::Feed>,
    producer: Renewing<Ctx>,
    reports: Arc<Reports>,
    config: ClusterConfig,
    /// Downlink topic per node index, with the id it was named for (built when first needed).
    topics: Vec<Option<(Box<str>, String)>>,
    copies: Copies,
    /// Rotates the pick among a shared group's member nodes.
    pick: u64,
    queue_max: usize,
    queue_bytes_max: usize,
    flush_wait: std::time::Duration,
    failing: bool,
    /// Congested nodes this shard produced copies for (a bit per node) since none was: the
    /// publishers of those copies are paused until none of them is congested any more.
    held: u64,
    /// The last offer's copies went to a congested node (`Sink::take_hold`).
    hold_last: bool,
    /// Publishers paused for a congested node (the metrics' pauses).
    paused: u64,
}

impl std::fmt::Debug for ClusterSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSink")
            .field("in_flight", &self.reports.counts().in_flight)
            .finish()
    }
}

impl ClusterSink {
    /// A downlink producer for shard `shard` reading the node's route table and feed, waking
    /// it through `doorbell` (an eventfd).
    pub fn new(
        kafka: &KafkaConfig,
        config: &ClusterConfig,
        (table, feed): (Arc<ArcSwap<RouteTable>>, Arc<super::feed::Feed>),
        shard: usize,
        record_bytes_max: usize,
        doorbell: std::fs::File,
    ) -> anyhow::Result<Self> {
        let reports = Reports::new(doorbell);
        let mut producer_config =
            crate::kafka::sink::producer_config(kafka, shard, record_bytes_max);
        producer_config.set(
            "client.id",
            format!("{}-{}-downlink-{shard}", kafka.client_id, config.node_id),
        );
        let producer = Renewing::new(
            producer_config,
            Ctx(reports.clone()),
            "cluster downlink",
            "the records it held are refused (0x97)",
        )
        .map_err(|e| anyhow::anyhow!("cluster: cannot create a producer: {e}"))?;
        Ok(Self {
            table,
            feed,
            producer,
            reports,
            config: config.clone(),
            topics: Vec::new(),
            copies: Copies::default(),
            pick: shard as u64,
            queue_max: kafka.queue_count_max,
            queue_bytes_max: usize::try_from(kafka.queue_bytes_max).unwrap_or(usize::MAX),
            flush_wait: std::time::Duration::from_millis(kafka.timeout_ms.min(5_000)),
            failing: false,
            held: 0,
            hold_last: false,
            paused: 0,
        })
    }
}

impl ClusterSink {
    /// Produces `message` (retained, or its clear: a tombstone) to the retained topic, keyed
    /// by its MQTT topic, with its version; a refusal refuses the publisher's `slot`.
    fn retained_record(
        &mut self,
        message: &Message,
        publisher: &str,
        version: &str,
        opaque: usize,
        slot: Option<usize>,
    ) {
        let mut record = BaseRecord::with_opaque_to(&self.config.retained_topic[..], opaque)
            .key(&message.topic[..])
            .headers(copy_headers(message, publisher, Some(version)));
        // An empty payload clears: a tombstone (no value), which compaction keeps last.
        if !message.payload.is_empty() {
            record = record.payload(&message.payload[..]);
        }
        send(
            &self.producer,
            &self.reports,
            &mut self.failing,
            record,
            slot,
            |e| {
                tracing::warn!(topic = %message.topic, error = %e, "a retained message was not produced to the cluster's retained topic: its publisher is refused");
            },
        );
    }
}

/// Hands `record` to `producer`; a refusal refuses the publisher's `slot` and is logged
/// through `log` (once per `failing` streak).
fn send(
    producer: &Renewing<Ctx>,
    reports: &Reports,
    failing: &mut bool,
    record: BaseRecord<'_, str, [u8], usize>,
    slot: Option<usize>,
    log: impl FnOnce(&rdkafka::error::KafkaError),
) {
    let bytes = record.payload.map_or(0, <[u8]>::len);
    reports.handing(bytes);
    if let Err((e, _)) = producer.producer().send(record) {
        reports.not_taken(bytes);
        if !*failing {
            log(&e);
            *failing = true;
        }
        if let Some(s) = slot {
            reports.refuse(s as u64);
        }
    }
}

/// The headers of `message`'s copy for another node or the retained topic: the Kafka
/// bridge's `mqtt.*` headers, RETAIN with the retained version (`version`), the message
/// expiry left.
fn copy_headers(
    message: &Message,
    publisher: &str,
    version: Option<&str>,
) -> rdkafka::message::OwnedHeaders {
    let mut headers = crate::kafka::sink::headers(message, publisher);
    if message.retain {
        headers = headers.insert(Header {
            key: "mqtt.retain",
            value: Some(&b"1"[..]),
        });
        if let Some(v) = version {
            headers = headers.insert(Header {
                key: super::retained::VERSION_HEADER,
                value: Some(v.as_bytes()),
            });
        }
    }
    if let Some(at) = message.expires_at {
        let left = at.saturating_duration_since(std::time::Instant::now());
        let secs = left.as_secs().max(1).to_string();
        headers = headers.insert(Header {
            key: "mqtt.message_expiry",
            value: Some(secs.as_bytes()),
        });
    }
    headers
}

/// Node `node`'s downlink topic, named once and kept in `topics` with the node's id (a
/// forgotten node's number may go to another node).
fn downlink<'a>(
    topics: &'a mut Vec<Option<(Box<str>, String)>>,
    config: &ClusterConfig,
    table: &RouteTable,
    node: usize,
) -> Option<&'a str> {
    if topics.len() <= node {
        topics.resize(node + 1, None);
    }
    let id = table.node(node)?;
    let slot = topics.get_mut(node)?;
    if slot.as_ref().is_none_or(|(named, _)| &**named != id) {
        *slot = Some((id.into(), config.downlink_of(id)));
    }
    slot.as_ref().map(|(_, topic)| topic.as_str())
}

impl Sink for ClusterSink {
    fn name(&self) -> &str {
        "cluster"
    }

    fn wants(&self, _topic: &str) -> bool {
        // A retained message goes to the retained topic even when no other node is live.
        true
    }

    fn offer(
        &mut self,
        message: &Message,
        publisher: &str,
        token: Option<u64>,
        retain_version: u64,
    ) -> Offer {
        let table = self.table.load();
        // `$` topics stay on their node.
        let retained = message.retain && !message.topic.starts_with('$');
        // Alone in the table, a node a session just moved to may still want a copy.
        let moved = message.qos != net::codec::QoS::AtMostOnce && !self.feed.handovers.is_empty();
        if !retained && !moved && table.alone() {
            return Offer::Taken;
        }
        let dest = table.destinations(&message.topic, message.retain, &mut self.pick);
        let mut nodes = dest.nodes;
        if moved {
            // A session that just moved from this node may be wanted on its new node before
            // this node has read that node's route: a copy goes there too.
            let mut moved = Vec::new();
            let now = std::time::Instant::now();
            let stamp = crate::kafka::now_millis();
            self.feed
                .handovers
                .targets(&message.topic, Some(stamp), None, now, &mut moved);
            for (_, node) in &moved {
                if let Some(i) = table.find(node).filter(|&i| i < 64) {
                    nodes |= 1u64 << i;
                }
            }
        }
        if nodes == 0 && !retained {
            return Offer::Taken;
        }
        // A copy for a node whose downlink is congested pauses its publisher until that
        // node is not (`take_hold`, `held`): publishers slow down rather than fill Kafka
        // without bound.
        let hot = nodes & table.congested();
        if hot != 0 {
            self.held |= hot;
            self.hold_last = true;
            self.paused += 1;
        }
        // A retained message's copy in the retained topic counts as one more.
        let copies = nodes.count_ones() + u32::from(retained);
        let slot = token.map(|t| self.copies.wait(t, copies));
        let opaque = slot.map_or(0, |s| s + 1);
        // Every copy of a retained message carries its version: every node keeps the same
        // last writer.
        debug_assert!(
            !retained || retain_version != 0,
            "a retained message has its version"
        );
        let version = retained.then(|| retain_version.to_string());
        if let Some(v) = &version {
            self.retained_record(message, publisher, v, opaque, slot);
        }
        // A copy that goes to several nodes names them all: a node forwarding copies for a
        // session that moved away does not forward one its new node got straight.
        let to = (nodes.count_ones() > 1).then(|| {
            let mut ids = String::new();
            let mut left = nodes;
            while left != 0 {
                let node = left.trailing_zeros() as usize;
                left &= left - 1;
                if !ids.is_empty() {
                    ids.push(',');
                }
                ids.push_str(table.node(node).unwrap_or_default());
            }
            ids
        });
        // Only while a session came here lately: the node it left reads the header only then.
        let names_sender = self.feed.names_sender();
        let mut left = nodes;
        while left != 0 {
            let node = left.trailing_zeros() as usize;
            left &= left - 1;
            let Some(topic) = downlink(&mut self.topics, &self.config, &table, node) else {
                // A node the snapshot does not name (cannot happen): the copy fails.
                if let Some(s) = slot {
                    self.reports.refuse(s as u64);
                }
                continue;
            };
            let mut headers = copy_headers(message, publisher, version.as_deref());
            if let Some(to) = &to {
                headers = headers.insert(Header {
                    key: super::handover::TO_HEADER,
                    value: Some(to.as_bytes()),
                });
            }
            if names_sender {
                headers = headers.insert(Header {
                    key: super::handover::FROM_HEADER,
                    value: Some(self.config.node_id.as_bytes()),
                });
            }
            let shared = dest.shared_of(node);
            if !shared.is_empty() {
                headers = headers.insert(Header {
                    key: "mqtt.cluster.shared",
                    value: Some(shared.as_bytes()),
                });
            }
            let mut record = BaseRecord::with_opaque_to(topic, opaque)
                .payload(&message.payload[..])
                .headers(headers);
            if !publisher.is_empty() {
                record = record.key(publisher);
            }
            send(
                &self.producer,
                &self.reports,
                &mut self.failing,
                record,
                slot,
                |e| {
                    tracing::warn!(topic = %message.topic, node = table.node(node).unwrap_or("?"), error = %e, "a message for another node was not produced: its publisher is refused");
                },
            );
        }
        match token {
            Some(_) => Offer::Pending,
            None => Offer::Taken,
        }
    }

    fn forward(
        &mut self,
        message: &Message,
        token: Option<u64>,
        node: &str,
        client: &str,
        seq: u64,
    ) -> Offer {
        let table = self.table.load();
        let Some(index) = table.find(node) else {
            // A node forgotten (dead past cluster.node_keep_ms): nowhere to produce it.
            tracing::debug!(client, node, topic = %message.topic, "a copy for a session that moved to a forgotten node is dropped");
            return Offer::Taken;
        };
        let Some(topic) = downlink(&mut self.topics, &self.config, &table, index) else {
            return Offer::Taken;
        };
        let slot = token.map(|t| self.copies.wait(t, 1));
        let opaque = slot.map_or(0, |s| s + 1);
        let mut headers = copy_headers(message, "", None).insert(Header {
            key: super::handover::FOR_CLIENT_HEADER,
            value: Some(client.as_bytes()),
        });
        if seq != 0 {
            headers = headers.insert(Header {
                key: super::handover::SEQ_HEADER,
                value: Some(seq.to_string().as_bytes()),
            });
        }
        // Keyed by the session: its forwarded copies keep their order.
        let record = BaseRecord::with_opaque_to(topic, opaque)
            .payload(&message.payload[..])
            .key(client)
            .headers(headers);
        send(
            &self.producer,
            &self.reports,
            &mut self.failing,
            record,
            slot,
            |e| {
                tracing::warn!(client, node, topic = %message.topic, error = %e, "a copy for a session that moved to another node was not produced (a downlink record is read again; a message the session had here is lost)");
            },
        );
        match token {
            Some(_) => Offer::Pending,
            None => Offer::Taken,
        }
    }

    fn full(&self) -> bool {
        self.reports.full(self.queue_max, self.queue_bytes_max)
    }

    fn take_hold(&mut self) -> bool {
        std::mem::take(&mut self.hold_last)
    }

    fn held(&self) -> bool {
        self.held != 0 && self.held & self.table.load().congested() != 0
    }

    fn counts(&self) -> SinkCounts {
        SinkCounts {
            paused: self.paused,
            ..self.reports.counts()
        }
    }

    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>) {
        self.producer.renew_if_failed();
        if self.held != 0 && self.held & self.table.load().congested() == 0 {
            self.held = 0; // the nodes caught up (or died): their publishers go on
        }
        let before = out.len();
        let copies = &mut self.copies;
        let failed = self.reports.drain(|slot, ok| {
            if let Some(done) = copies.report(slot as usize, ok) {
                out.push(done);
            }
        });
        if failed {
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
        let _ = self.producer.producer().flush(self.flush_wait);
    }
}
