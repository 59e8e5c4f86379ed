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

/// A publisher's token waiting for its copies: copies not reported yet, all delivered so far,
/// and the congested nodes among their destinations when it was offered.
#[derive(Clone, Copy, Debug)]
struct Waiting {
    token: u64,
    left: u32,
    ok: bool,
    hot: u64,
}

/// Tokens waiting for their copies, by slot; free slots listed in `free`.
#[derive(Debug, Default)]
struct Copies {
    waiting: Vec<Option<Waiting>>,
    free: Vec<usize>,
}

impl Copies {
    /// A slot for `token` waiting on `copies` reports (`hot`: the congested destinations).
    fn wait(&mut self, token: u64, copies: u32, hot: u64) -> usize {
        let w = Some(Waiting {
            token,
            left: copies,
            ok: true,
            hot,
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

    /// One copy of `slot` reported; the token when it was the last (with its congested
    /// destinations).
    fn report(&mut self, slot: usize, ok: bool) -> Option<(u64, bool, u64)> {
        let entry = self.waiting.get_mut(slot)?;
        let w = entry.as_mut()?;
        w.ok &= ok;
        w.left -= 1;
        if w.left > 0 {
            return None;
        }
        let done = (w.token, w.ok, w.hot);
        *entry = None;
        self.free.push(slot);
        Some(done)
    }
}

/// Tokens whose copies Kafka took but went to nodes that were congested: each is confirmed
/// once none of its nodes is congested any more (the publisher's PUBACK / PUBREC waits, so
/// its in-flight window, not the broker, holds it back; a node dead meanwhile counts as not
/// congested).
#[derive(Debug, Default)]
struct Delayed {
    tokens: std::collections::VecDeque<(u64, u64)>,
}

impl Delayed {
    /// Token `token` (its congested destinations `hot`) waits.
    fn push(&mut self, token: u64, hot: u64) {
        self.tokens.push_back((token, hot));
    }

    /// The tokens none of whose destinations is in `congested` any more, appended to `out`
    /// as confirmed.
    fn release(&mut self, congested: u64, out: &mut Vec<(u64, bool)>) {
        if self.tokens.is_empty() {
            return;
        }
        self.tokens.retain(|&(token, hot)| {
            if hot & congested == 0 {
                out.push((token, true));
                false
            } else {
                true
            }
        });
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
    /// Acknowledgements waiting for congested nodes to catch up.
    delayed: Delayed,
    /// Tokens delayed so far (the metrics').
    delayed_total: u64,
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
            delayed: Delayed::default(),
            delayed_total: 0,
        })
    }
}

impl ClusterSink {
    /// Produces `message` (retained, or its clear: a tombstone) to the retained topic, keyed
    /// by its MQTT topic, with its version; a refusal refuses the publisher's `slot`.
    /// Produces `client`'s will record to node `node`'s wills topic: keyed by the client
    /// (the topic is compacted, its last record stays); no value (a tombstone) for `None`.
    fn will_record(&mut self, node: &str, client: &str, will: Option<(&Message, u32)>) {
        let topic = self.config.wills_of(node);
        let mut record = BaseRecord::with_opaque_to(&topic, 0).key(client);
        if let Some((message, delay)) = will {
            let delay = delay.to_string();
            let headers = copy_headers(message, client, None).insert(Header {
                key: super::wills::DELAY_HEADER,
                value: Some(delay.as_bytes()),
            });
            record = record.payload(&message.payload[..]).headers(headers);
        }
        let set = will.is_some();
        send(
            &self.producer,
            &self.reports,
            &mut self.failing,
            record,
            None,
            |e| tracing::warn!(client, node, set, error = %e, "a will record (set, or cleared) was not produced: should that node die, the will may not be published, or may be published when it should not"),
        );
    }

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
        // A copy for a node whose downlink is congested: the publisher's acknowledgement waits
        // until that node caught up (`Delayed`), so publishers slow down rather than fill
        // Kafka without bound.
        let hot = nodes & table.congested();
        // A retained message's copy in the retained topic counts as one more.
        let copies = nodes.count_ones() + u32::from(retained);
        let slot = token.map(|t| self.copies.wait(t, copies, hot));
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
        let slot = token.map(|t| self.copies.wait(t, 1, 0));
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

    fn note_will(&mut self, client: &str, will: Option<(&Message, u32)>) {
        let node = self.config.node_id.clone();
        self.will_record(&node, client, will);
    }

    fn clear_will_of(&mut self, node: &str, client: &str) {
        self.will_record(node, client, None);
    }

    fn full(&self) -> bool {
        self.reports.full(self.queue_max, self.queue_bytes_max)
    }

    fn counts(&self) -> SinkCounts {
        SinkCounts {
            delayed: self.delayed_total,
            ..self.reports.counts()
        }
    }

    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>) {
        self.producer.renew_if_failed();
        let congested = self.table.load().congested();
        let before = out.len();
        self.delayed.release(congested, out);
        let (copies, delayed) = (&mut self.copies, &mut self.delayed);
        let mut newly = 0;
        let failed = self
            .reports
            .drain(|slot, ok| match copies.report(slot as usize, ok) {
                Some((token, true, hot)) if hot & congested != 0 => {
                    delayed.push(token, hot);
                    newly += 1;
                }
                Some((token, ok, _)) => out.push((token, ok)),
                None => {}
            });
        self.delayed_total += newly;
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

#[cfg(test)]
mod delayed_tests {
    use super::Delayed;

    #[test]
    fn a_delayed_token_is_confirmed_once_none_of_its_nodes_is_congested() {
        let mut d = Delayed::default();
        d.push(1, 0b010);
        d.push(2, 0b110);
        d.push(3, 0b100);
        let mut out = Vec::new();
        d.release(0b110, &mut out);
        assert!(out.is_empty());
        d.release(0b100, &mut out);
        assert_eq!(out, [(1, true)]);
        out.clear();
        d.release(0, &mut out);
        assert_eq!(out, [(2, true), (3, true)], "in order");
        assert!(d.tokens.is_empty());
    }
}
