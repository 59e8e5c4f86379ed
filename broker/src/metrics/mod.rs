//! Counters and the delivery latency histogram, exported as `$SYS/broker/...` topics and a
//! Prometheus `/metrics` endpoint ([`http`]). Each shard counts in plain integers ([`Stats`])
//! on its own thread and copies them into its slot of [`Metrics`] (relaxed atomic stores, one
//! writer per slot) on every 250 ms tick; readers sum the slots. Every counter and gauge, with
//! its `$SYS` topic, Prometheus name and help, is one row of the table in [`counters`].

pub mod cluster;
pub mod counters;
pub mod http;

pub use counters::{CounterDoc, Kind, Stats, Sys, COUNT, COUNTERS};

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Histogram buckets: bucket `i` counts observations under `2^i` units (microseconds for the
/// delivery latency, milliseconds for the Kafka and cluster families: [`HISTOGRAMS`]); the
/// last one everything larger.
pub const LATENCY_BUCKETS: usize = 22;

/// A histogram of observations in one unit (the family's, [`HISTOGRAMS`]): the delivery latency
/// (microseconds: from the loop pass that decoded a PUBLISH to the pass that encoded it for a
/// subscriber, mesh hop and queueing included, the socket write not), a sink's latencies or a
/// source's lag (milliseconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Histogram {
    /// Counts per bucket.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the observations, in the family's unit (saturating).
    pub sum: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; LATENCY_BUCKETS],
            sum: 0,
        }
    }
}

impl Histogram {
    /// Records one observation of the delivery latency (microseconds).
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        if let Some(b) = self.buckets.get_mut(bucket(us)) {
            *b += 1;
        }
        self.sum = self.sum.saturating_add(us);
    }

    /// Observations recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// Adds `other`'s observations.
    pub fn add(&mut self, other: &Histogram) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum = self.sum.saturating_add(other.sum);
    }
}

/// A histogram one thread records into and another reads (relaxed atomics): a sink's or a
/// source's latencies, recorded on a library's thread; a shard's slot in [`Metrics`].
#[derive(Debug, Default)]
pub struct SharedHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum: AtomicU64,
}

impl SharedHistogram {
    /// Records an observation of `millis` milliseconds (a millisecond family: bucket `i` is
    /// under `2^i` ms, the last finite one 2^20 ms, about 17 minutes, then +Inf; the sum
    /// saturates rather than wrap).
    pub fn record_millis(&self, millis: u64) {
        if let Some(b) = self.buckets.get(bucket(millis)) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(millis))
            });
    }

    /// Replaces the contents with `h` (one writer).
    fn store(&self, h: &Histogram) {
        for (a, v) in self.buckets.iter().zip(h.buckets) {
            a.store(v, Ordering::Relaxed);
        }
        self.sum.store(h.sum, Ordering::Relaxed);
    }

    /// What it holds now.
    pub fn load(&self) -> Histogram {
        Histogram {
            buckets: self.buckets.each_ref().map(|a| a.load(Ordering::Relaxed)),
            sum: self.sum.load(Ordering::Relaxed),
        }
    }
}

/// The bucket of an observation of `v` units: its bit length (bucket `i` holds
/// `2^(i-1) ..< 2^i`, bucket 0 the zeros), the last bucket everything larger.
pub fn bucket(v: u64) -> usize {
    (64 - v.leading_zeros() as usize).min(LATENCY_BUCKETS - 1)
}

/// The histograms each shard publishes, in this order: Prometheus name, help, and how many
/// of its observations' units make a second. The first is always exported, the others once they have
/// an observation (a node without Kafka or a cluster does not list them).
pub const HISTOGRAMS: [(&str, &str, f64); 5] = [
    (
        "ringmq_delivery_latency_seconds",
        "From the loop pass that decoded a PUBLISH to the pass that encoded it for a subscriber.",
        1e6,
    ),
    (
        "ringmq_kafka_produce_latency_seconds",
        "MQTT -> Kafka: from producing a message to Kafka's acknowledgement (millisecond resolution: from the record's CreateTime timestamp).",
        1e3,
    ),
    (
        "ringmq_cluster_out_latency_seconds",
        "From producing a copy for another node to Kafka's acknowledgement (millisecond resolution).",
        1e3,
    ),
    (
        "ringmq_kafka_in_lag_seconds",
        "Kafka -> MQTT: a record's age when this node's consumer read it, from its Kafka timestamp (the producer's clock: skew shows; a record read again after a refusal counts again): how far the consumer is behind.",
        1e3,
    ),
    (
        "ringmq_cluster_in_lag_seconds",
        "A message from another node: its age when this node read it from its downlink topic, from the copy's Kafka timestamp (the other node's clock): how far the downlink is behind.",
        1e3,
    ),
];

/// A shard's histograms, in [`HISTOGRAMS`] order.
pub type Histograms = [Histogram; HISTOGRAMS.len()];

#[derive(Debug)]
struct Slot {
    values: [AtomicU64; COUNT],
    histograms: [SharedHistogram; HISTOGRAMS.len()],
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            histograms: std::array::from_fn(|_| SharedHistogram::default()),
        }
    }
}

/// Counts kept outside the shards' [`Stats`], read when exported: the AsyncAPI document's
/// refusals per channel (`None`: topics matching no channel).
pub type ChannelCounts = Box<dyn Fn() -> Vec<(Option<String>, u64)> + Send + Sync>;

/// Every shard's latest [`Stats`] and latency histogram.
pub struct Metrics {
    slots: Vec<Slot>,
    started: Instant,
    channels: std::sync::OnceLock<ChannelCounts>,
    /// A cluster node's id and peers (unset outside a cluster).
    cluster: std::sync::OnceLock<cluster::FactsFn>,
    /// The cross-node counters at the last `$SYS` publication.
    cluster_sys: cluster::SysState,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("slots", &self.slots)
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// A name as one topic level: `/`, `+`, `#`, `%`, `$` and control characters percent-encoded
/// (a 2.6 channel's name is its address; a 3.0 channel key may hold anything).
fn topic_level(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' | '+' | '#' | '%' | '$' | '\0'..='\x1f' | '\x7f' => {
                let mut buf = [0u8; 4];
                for b in c.encode_utf8(&mut buf).bytes() {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// One histogram family (name, help, units per second), per shard, in the Prometheus text
/// format.
fn histogram(out: &mut String, (name, help, per): (&str, &str, f64), shards: &[Histogram]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (shard, h) in shards.iter().enumerate() {
        let mut cumulative = 0;
        for (i, count) in h.buckets.iter().enumerate() {
            cumulative += count;
            if i + 1 == LATENCY_BUCKETS {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {cumulative}"
                );
            } else {
                let le = (1u64 << i) as f64 / per;
                let _ = writeln!(
                    out,
                    "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}"
                );
            }
        }
        let _ = writeln!(
            out,
            "{name}_sum{{shard=\"{shard}\"}} {}",
            h.sum as f64 / per
        );
        let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {cumulative}");
    }
}

/// A Prometheus label value escaped (backslash, quote, newline).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Slots for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            slots: (0..shards).map(|_| Slot::default()).collect(),
            started: Instant::now(),
            channels: std::sync::OnceLock::new(),
            cluster: std::sync::OnceLock::new(),
            cluster_sys: cluster::SysState::default(),
        }
    }

    /// Where the AsyncAPI refusals per channel are read from (set once, at start).
    pub fn set_channel_counts(&self, counts: ChannelCounts) {
        let _ = self.channels.set(counts);
    }

    /// Where a cluster node's id and peers are read from (set once, at start).
    pub fn set_cluster_facts(&self, facts: cluster::FactsFn) {
        let _ = self.cluster.set(facts);
    }

    fn channel_counts(&self) -> Vec<(Option<String>, u64)> {
        self.channels.get().map(|f| f()).unwrap_or_default()
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Shard `shard` publishes its counters and gauges (`stats`, gauges set) and its
    /// histograms (in [`HISTOGRAMS`] order).
    pub fn store(&self, shard: usize, stats: &Stats, histograms: [&Histogram; HISTOGRAMS.len()]) {
        let Some(slot) = self.slots.get(shard) else {
            return;
        };
        for (a, v) in slot.values.iter().zip(stats.values()) {
            a.store(v, Ordering::Relaxed);
        }
        for (to, from) in slot.histograms.iter().zip(histograms) {
            to.store(from);
        }
    }

    /// The latest [`Stats`] and histograms of each shard.
    pub fn shards(&self) -> Vec<(Stats, Histograms)> {
        self.slots
            .iter()
            .map(|slot| {
                let values = std::array::from_fn(|i| {
                    slot.values.get(i).map_or(0, |a| a.load(Ordering::Relaxed))
                });
                let histograms = slot.histograms.each_ref().map(SharedHistogram::load);
                (Stats::from_values(values), histograms)
            })
            .collect()
    }

    /// The sum over shards.
    pub fn total(&self) -> Stats {
        let mut sum = Stats::default();
        for (s, _) in self.shards() {
            sum.add(&s);
        }
        sum
    }

    /// The Prometheus text exposition of every shard's counters and histogram.
    pub fn prometheus(&self) -> String {
        let shards = self.shards();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP ringmq_uptime_seconds Seconds since the broker started."
        );
        let _ = writeln!(out, "# TYPE ringmq_uptime_seconds gauge");
        let _ = writeln!(out, "ringmq_uptime_seconds {}", self.uptime().as_secs());
        let values: Vec<[u64; COUNT]> = shards.iter().map(|(s, _)| s.values()).collect();
        let mut family = "";
        for (i, c) in COUNTERS.iter().enumerate() {
            let (name, kind, help) = (c.family(), c.kind.as_str(), c.help);
            if name != family {
                family = name;
                let _ = writeln!(out, "# HELP {name} {help}");
                let _ = writeln!(out, "# TYPE {name} {kind}");
            }
            let labels = match c.labels() {
                "" => String::new(),
                l => format!("{l},"),
            };
            for (shard, v) in values.iter().enumerate() {
                let v = v.get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}{{{labels}shard=\"{shard}\"}} {v}");
            }
        }
        for (family, (name, help, per)) in HISTOGRAMS.iter().enumerate() {
            let of = |(_, hs): &(Stats, Histograms)| hs.get(family).copied().unwrap_or_default();
            let histograms: Vec<Histogram> = shards.iter().map(of).collect();
            if family > 0 && histograms.iter().all(|h| h.count() == 0) {
                continue;
            }
            histogram(&mut out, (name, help, *per), &histograms);
        }
        let channels = self.channel_counts();
        if !channels.is_empty() {
            let name = "ringmq_asyncapi_channel_refused_total";
            let _ = writeln!(out, "# HELP {name} PUBLISHes and wills the AsyncAPI document refused, per channel (\"\": matching no channel).");
            let _ = writeln!(out, "# TYPE {name} counter");
            for (channel, n) in channels {
                let channel = label_value(channel.as_deref().unwrap_or(""));
                let _ = writeln!(out, "{name}{{channel=\"{channel}\"}} {n}");
            }
        }
        if let Some(facts) = self.cluster.get() {
            cluster::prometheus(&facts(), &mut out);
        }
        out
    }

    /// `$SYS` topics and their values: version and uptime, the totals, then per shard (each in
    /// [`COUNTERS`] order).
    pub fn sys_topics(&self) -> Vec<(String, String)> {
        let mut v = vec![
            (
                "$SYS/broker/version".to_string(),
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime".to_string(),
                format!("{} seconds", self.uptime().as_secs()),
            ),
        ];
        let shards = self.shards();
        let mut total = Stats::default();
        for (s, _) in &shards {
            total.add(s);
        }
        for (c, value) in COUNTERS.iter().zip(total.values()) {
            if let Some(name) = c.sys.total() {
                v.push((format!("$SYS/broker/{name}"), value.to_string()));
            }
        }
        for (i, (s, _)) in shards.iter().enumerate() {
            for (c, value) in COUNTERS.iter().zip(s.values()) {
                if let Some(name) = c.sys.shard() {
                    v.push((format!("$SYS/broker/shard/{i}/{name}"), value.to_string()));
                }
            }
        }
        for (channel, n) in self.channel_counts() {
            let topic = match channel {
                Some(name) => format!(
                    "$SYS/broker/asyncapi/channels/{}/refused",
                    topic_level(&name)
                ),
                None => "$SYS/broker/asyncapi/no_channel/refused".to_string(),
            };
            v.push((topic, n.to_string()));
        }
        if let Some(facts) = self.cluster.get() {
            let rates = self.cluster_sys.per_second(
                Instant::now(),
                total.cluster_out_delivered,
                total.cluster_in_handed_on,
            );
            let facts = facts();
            let gone = self.cluster_sys.gone_peers(&facts);
            cluster::sys_topics(&facts, &gone, rates, &mut v);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_sum_and_export() {
        let m = Metrics::new(2);
        let mut h = Histogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(100));
        m.store(
            0,
            &Stats {
                publishes_in: 5,
                clients_connected: 1,
                ..Default::default()
            },
            [
                &h,
                &Histogram::default(),
                &Histogram::default(),
                &Histogram::default(),
                &Histogram::default(),
            ],
        );
        m.store(
            1,
            &Stats {
                publishes_in: 7,
                ..Default::default()
            },
            [&Histogram::default(); 5],
        );
        assert_eq!(m.total().publishes_in, 12);
        assert_eq!(m.total().clients_connected, 1);
        let text = m.prometheus();
        assert!(
            text.contains("ringmq_messages_received_total{shard=\"1\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("ringmq_delivery_latency_seconds_bucket{shard=\"0\",le=\"0.000004\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("ringmq_delivery_latency_seconds_count{shard=\"0\"} 2"),
            "{text}"
        );
        let sys = m.sys_topics();
        assert!(sys.contains(&("$SYS/broker/messages/received".into(), "12".into())));
        assert!(sys.contains(&("$SYS/broker/shard/1/messages/received".into(), "7".into())));
        assert!(sys.contains(&("$SYS/broker/clients/connected".into(), "1".into())));
        // A sink's histogram is listed once it has an observation.
        assert!(
            !text.contains("ringmq_kafka_produce_latency_seconds"),
            "{text}"
        );
        let shared = SharedHistogram::default();
        shared.record_millis(3);
        // Ten minutes behind: a finite bucket (under 2^20 ms), not +Inf.
        shared.record_millis(600_000);
        let kafka = shared.load();
        m.store(
            1,
            &Stats::default(),
            [
                &h,
                &kafka,
                &Histogram::default(),
                &Histogram::default(),
                &Histogram::default(),
            ],
        );
        let text = m.prometheus();
        assert!(
            text.contains(
                "ringmq_kafka_produce_latency_seconds_bucket{shard=\"1\",le=\"0.004\"} 1"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "ringmq_kafka_produce_latency_seconds_bucket{shard=\"1\",le=\"1048.576\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains("ringmq_kafka_produce_latency_seconds_sum{shard=\"1\"} 600.003"));
        assert!(text.contains("ringmq_kafka_produce_latency_seconds_count{shard=\"0\"} 0"));
        assert!(!text.contains("ringmq_cluster_out_latency_seconds"));
    }

    #[test]
    fn a_shared_histogram_sum_saturates_instead_of_wrapping() {
        let h = SharedHistogram::default();
        h.record_millis(u64::MAX - 1);
        h.record_millis(5);
        let got = h.load();
        assert_eq!((got.sum, got.count()), (u64::MAX, 2));
        assert_eq!(
            got.buckets[LATENCY_BUCKETS - 1],
            1,
            "the largest in the last bucket"
        );
    }

    #[test]
    fn prometheus_has_help_type_and_shards_for_every_counter() {
        let m = Metrics::new(2);
        m.store(
            1,
            &Stats::from_values(std::array::from_fn(|i| 100 + i as u64)),
            [&Histogram::default(); 5],
        );
        let text = m.prometheus();
        for (i, c) in COUNTERS.iter().enumerate() {
            let (family, help, kind) = (c.family(), c.help, c.kind.as_str());
            let head = format!("# HELP {family} {help}\n# TYPE {family} {kind}\n");
            assert_eq!(text.matches(&head).count(), 1, "{head}\n---\n{text}");
            let labels = match c.labels() {
                "" => String::new(),
                l => format!("{l},"),
            };
            let series = format!(
                "{family}{{{labels}shard=\"0\"}} 0\n{family}{{{labels}shard=\"1\"}} {}\n",
                100 + i
            );
            assert!(text.contains(&series), "{series}\n---\n{text}");
        }
        let dropped = "ringmq_messages_dropped_total{reason=\"queue_full\",shard=\"1\"}";
        assert!(text.contains(dropped), "{text}");
    }

    /// The exported names, help texts and types as they were before the table: each metric
    /// family's text must not change (only the order of the families did).
    #[test]
    fn prometheus_text_unchanged() {
        const BEFORE: [(&str, &str, &str); 12] = [
            (
                "ringmq_messages_received_total",
                "counter",
                "PUBLISH packets received from clients.",
            ),
            (
                "ringmq_messages_sent_total",
                "counter",
                "PUBLISH packets sent to clients (first transmissions).",
            ),
            (
                "ringmq_messages_forwarded_total",
                "counter",
                "Messages forwarded to peer shards.",
            ),
            (
                "ringmq_bytes_received_total",
                "counter",
                "Bytes read from client sockets.",
            ),
            (
                "ringmq_bytes_sent_total",
                "counter",
                "Bytes written to client sockets.",
            ),
            (
                "ringmq_connections_accepted_total",
                "counter",
                "Connections accepted.",
            ),
            (
                "ringmq_protocol_errors_total",
                "counter",
                "Connections closed for bad input or protocol violations.",
            ),
            (
                "ringmq_auth_denied_total",
                "counter",
                "Refused CONNECTs, denied publishes or subscribes, and subscriptions removed because a reloaded ACL or AsyncAPI document no longer allows them.",
            ),
            (
                "ringmq_invariant_errors_total",
                "counter",
                "States that cannot happen, met and survived (each also logged as an error).",
            ),
            ("ringmq_clients_connected", "gauge", "Clients connected."),
            ("ringmq_sessions", "gauge", "Sessions (connected or not)."),
            (
                "ringmq_retained_messages",
                "gauge",
                "Retained messages held (each shard holds the topics it owns).",
            ),
        ];
        let m = Metrics::new(2);
        m.store(
            0,
            &Stats::from_values([7; COUNT]),
            [&Histogram::default(); 5],
        );
        let text = m.prometheus();
        for (name, kind, help) in BEFORE {
            let block = format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n\
                 {name}{{shard=\"0\"}} 7\n{name}{{shard=\"1\"}} 0\n"
            );
            assert!(text.contains(&block), "{block}\n---\n{text}");
        }
        // Since the table: the dropped family by reason, refusals, pauses, slow consumers,
        // AsyncAPI refusals, the store's seven, Kafka's four out, its producers replaced, three
        // of its outbox and five in, the cluster's sixteen.
        assert_eq!(text.matches("# HELP ").count(), BEFORE.len() + 43, "{text}");
        assert_eq!(text.matches("# TYPE ").count(), BEFORE.len() + 43, "{text}");
        assert!(text.starts_with(
            "# HELP ringmq_uptime_seconds Seconds since the broker started.\n\
             # TYPE ringmq_uptime_seconds gauge\nringmq_uptime_seconds "
        ));
    }

    /// The `$SYS` topics, values and order.
    #[test]
    fn sys_topics_in_order() {
        let m = Metrics::new(2);
        let s = Stats {
            publishes_in: 1,
            publishes_out: 2,
            forwarded: 3,
            dropped_queue_full: 4,
            bytes_in: 5,
            bytes_out: 6,
            accepted: 7,
            protocol_errors: 8,
            auth_denied: 9,
            clients_connected: 10,
            sessions: 11,
            retained: 12,
            invariant_errors: 13,
            publisher_pauses: 14,
            ..Default::default()
        };
        m.store(0, &s, [&Histogram::default(); 5]);
        m.store(1, &s, [&Histogram::default(); 5]);
        let mut got = m.sys_topics();
        let head: Vec<&str> = got.iter().take(2).map(|(t, _)| t.as_str()).collect();
        assert_eq!(head, ["$SYS/broker/version", "$SYS/broker/uptime"]);
        got.drain(..2);
        let mut expected: Vec<(String, String)> = [
            ("clients/connected", 20),
            ("sessions", 22),
            ("messages/received", 2),
            ("messages/sent", 4),
            ("messages/dropped/outbox_full", 0),
            ("messages/dropped/queue_full", 8),
            ("messages/dropped/expired", 0),
            ("messages/dropped/too_large", 0),
            ("messages/dropped/no_subscriber", 0),
            ("messages/refused/queue_full", 0),
            ("clients/paused", 28),
            ("clients/slow_consumer_disconnects", 0),
            ("messages/forwarded", 6),
            ("bytes/received", 10),
            ("bytes/sent", 12),
            ("retained/count", 24),
            ("messages/refused/asyncapi", 0),
            ("kafka/dead_letters", 0),
            ("kafka/backlog", 0),
            ("kafka/backlog_bytes", 0),
            ("kafka/in_behind", 0),
            ("cluster/out_delivered", 0),
            ("cluster/out_failed", 0),
            ("cluster/out_in_flight", 0),
            ("cluster/in_received", 0),
            ("cluster/in_handed_on", 0),
            ("cluster/in_behind", 0),
            ("cluster/moved_forwarded", 0),
            ("cluster/moved_followed", 0),
            ("cluster/nodes_live", 0),
            ("cluster/routes_producers_replaced", 0),
            ("cluster/salvaged", 0),
            ("cluster/nodes_known", 0),
            ("cluster/nodes_congested", 0),
            ("cluster/acks_delayed", 0),
            ("cluster/wills_published", 0),
        ]
        .iter()
        .map(|(t, v)| (format!("$SYS/broker/{t}"), v.to_string()))
        .collect();
        for shard in 0..2 {
            for (t, v) in [
                ("clients/connected", 10),
                ("messages/received", 1),
                ("messages/sent", 2),
                ("messages/dropped/outbox_full", 0),
                ("messages/dropped/queue_full", 4),
                ("messages/dropped/expired", 0),
                ("messages/dropped/too_large", 0),
                ("messages/dropped/no_subscriber", 0),
                ("messages/refused/queue_full", 0),
                ("retained/count", 12),
                ("messages/refused/asyncapi", 0),
                ("store/records", 0),
                ("store/commits", 0),
                ("store/bytes", 0),
                ("store/commit_micros", 0),
                ("store/acks_released", 0),
                ("store/acks_held", 0),
                ("kafka/delivered", 0),
                ("kafka/failed", 0),
                ("kafka/in_flight", 0),
                ("kafka/producers_replaced", 0),
                ("kafka/latency_millis", 0),
                ("kafka/in_received", 0),
                ("kafka/in_handed_on", 0),
                ("kafka/in_refused", 0),
                ("kafka/in_invalid", 0),
                ("store/up", 0),
            ] {
                expected.push((format!("$SYS/broker/shard/{shard}/{t}"), v.to_string()));
            }
        }
        assert_eq!(got, expected);
    }
}
