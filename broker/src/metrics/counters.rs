//! The one table of counters and gauges. Each row names a [`Stats`] field once, with its kind,
//! its `$SYS/broker/...` topic (if any), its Prometheus name and its help text; the macro
//! generates [`Stats`], its field-wise sum and array view, and [`COUNTERS`], which the `$SYS`
//! and Prometheus exporters walk. A new counter is one new row.

/// A Prometheus metric type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Only grows (the name ends in `_total`).
    Counter,
    /// A current level, set by the shard before it stores its [`Stats`].
    Gauge,
}

impl Kind {
    /// The word of the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// Where a value is published under `$SYS/broker/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sys {
    /// Not published as a `$SYS` topic.
    Off,
    /// The sum over shards, as `$SYS/broker/{name}`.
    Total(&'static str),
    /// Each shard's value, as `$SYS/broker/shard/{N}/{name}`.
    Shard(&'static str),
    /// Both the sum and each shard's value.
    Both(&'static str),
}

impl Sys {
    /// The topic suffix of the sum over shards, if published.
    pub const fn total(self) -> Option<&'static str> {
        match self {
            Sys::Total(name) | Sys::Both(name) => Some(name),
            Sys::Off | Sys::Shard(_) => None,
        }
    }

    /// The topic suffix of each shard's value (after `shard/{N}/`), if published.
    pub const fn shard(self) -> Option<&'static str> {
        match self {
            Sys::Shard(name) | Sys::Both(name) => Some(name),
            Sys::Off | Sys::Total(_) => None,
        }
    }
}

/// One row of the table: a [`Stats`] field and how it is exported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterDoc {
    /// The [`Stats`] field name.
    pub field: &'static str,
    /// Counter or gauge (the Prometheus `# TYPE`).
    pub kind: Kind,
    /// The `$SYS/broker/...` topic(s).
    pub sys: Sys,
    /// The Prometheus metric name, with its labels if it is one series of a family
    /// (`family{label="value"}`); a family's rows are adjacent and share their help text.
    pub prom: &'static str,
    /// The Prometheus `# HELP` text, also the field's doc comment.
    pub help: &'static str,
}

impl CounterDoc {
    /// The metric family: the name without labels.
    pub fn family(&self) -> &'static str {
        self.prom.split_once('{').map_or(self.prom, |(f, _)| f)
    }

    /// The labels inside the braces (`reason="x"`), or "" for none.
    pub fn labels(&self) -> &'static str {
        self.prom
            .split_once('{')
            .map_or("", |(_, l)| l.trim_end_matches('}'))
    }
}

macro_rules! counters {
    ($(
        $field:ident: $kind:ident,
        sys $sys:ident $(($sys_name:literal))?,
        prom $prom:literal,
        help $help:literal;
    )*) => {
        /// The counters and gauges of one shard. The shard counts in the counters on its own
        /// thread, sets the gauges and stores a copy in [`Metrics`](super::Metrics) every tick;
        /// joining the broker sums every shard's last copy ([`Stats::add`]).
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct Stats {
            $(
                #[doc = $help]
                pub $field: u64,
            )*
        }

        /// Every [`Stats`] field, in declaration order (the order of [`Stats::values`], of the
        /// Prometheus text and of the `$SYS` topics).
        pub const COUNTERS: &[CounterDoc] = &[
            $(
                CounterDoc {
                    field: stringify!($field),
                    kind: Kind::$kind,
                    sys: Sys::$sys $(($sys_name))?,
                    prom: $prom,
                    help: $help,
                },
            )*
        ];

        impl Stats {
            /// The fields in [`COUNTERS`] order.
            pub fn values(&self) -> [u64; COUNT] {
                [$(self.$field),*]
            }

            /// The inverse of [`Stats::values`].
            pub fn from_values(values: [u64; COUNT]) -> Self {
                let [$($field),*] = values;
                Self { $($field),* }
            }

            /// Adds `other` field by field (gauges too: the sum over shards).
            pub fn add(&mut self, other: &Stats) {
                $(self.$field = self.$field.saturating_add(other.$field);)*
            }
        }
    };
}

/// The number of [`Stats`] fields.
pub const COUNT: usize = COUNTERS.len();

// Row order is the order of the `$SYS` topics (kept as before the table: subscribers taking
// the first few see the connected clients) and of the Prometheus metric families.
counters! {
    clients_connected: Gauge,
        sys Both("clients/connected"),
        prom "ringmq_clients_connected",
        help "Clients connected.";
    sessions: Gauge,
        sys Total("sessions"),
        prom "ringmq_sessions",
        help "Sessions (connected or not).";
    publishes_in: Counter,
        sys Both("messages/received"),
        prom "ringmq_messages_received_total",
        help "PUBLISH packets received from clients.";
    publishes_out: Counter,
        sys Both("messages/sent"),
        prom "ringmq_messages_sent_total",
        help "PUBLISH packets sent to clients (first transmissions).";
    dropped_outbox: Counter,
        sys Both("messages/dropped/outbox_full"),
        prom "ringmq_messages_dropped_total{reason=\"outbox_full\"}",
        help "Messages dropped, by reason: outbox_full (QoS 0 with the outbox full or the client offline), queue_full (session_queue_full_policy), expired, too_large (above the client's maximum packet size), no_subscriber (a shared message whose group emptied).";
    dropped_queue_full: Counter,
        sys Both("messages/dropped/queue_full"),
        prom "ringmq_messages_dropped_total{reason=\"queue_full\"}",
        help "Messages dropped, by reason: outbox_full (QoS 0 with the outbox full or the client offline), queue_full (session_queue_full_policy), expired, too_large (above the client's maximum packet size), no_subscriber (a shared message whose group emptied).";
    dropped_expired: Counter,
        sys Both("messages/dropped/expired"),
        prom "ringmq_messages_dropped_total{reason=\"expired\"}",
        help "Messages dropped, by reason: outbox_full (QoS 0 with the outbox full or the client offline), queue_full (session_queue_full_policy), expired, too_large (above the client's maximum packet size), no_subscriber (a shared message whose group emptied).";
    dropped_too_large: Counter,
        sys Both("messages/dropped/too_large"),
        prom "ringmq_messages_dropped_total{reason=\"too_large\"}",
        help "Messages dropped, by reason: outbox_full (QoS 0 with the outbox full or the client offline), queue_full (session_queue_full_policy), expired, too_large (above the client's maximum packet size), no_subscriber (a shared message whose group emptied).";
    dropped_no_subscriber: Counter,
        sys Both("messages/dropped/no_subscriber"),
        prom "ringmq_messages_dropped_total{reason=\"no_subscriber\"}",
        help "Messages dropped, by reason: outbox_full (QoS 0 with the outbox full or the client offline), queue_full (session_queue_full_policy), expired, too_large (above the client's maximum packet size), no_subscriber (a shared message whose group emptied).";
    refused_queue_full: Counter,
        sys Both("messages/refused/queue_full"),
        prom "ringmq_publishes_refused_total{reason=\"queue_full\"}",
        help "QoS 1/2 publishes refused with PUBACK / PUBREC 0x97 (session_queue_full_policy = refuse), by reason.";
    publisher_pauses: Counter,
        sys Total("clients/paused"),
        prom "ringmq_publisher_pauses_total",
        help "Times a publishing connection was paused because a session it publishes to was over session_queue_high_watermark.";
    slow_consumers: Counter,
        sys Total("clients/slow_consumer_disconnects"),
        prom "ringmq_slow_consumer_disconnects_total",
        help "Clients disconnected for taking nothing for slow_consumer_timeout_ms while messages waited.";
    forwarded: Counter,
        sys Total("messages/forwarded"),
        prom "ringmq_messages_forwarded_total",
        help "Messages forwarded to peer shards.";
    bytes_in: Counter,
        sys Total("bytes/received"),
        prom "ringmq_bytes_received_total",
        help "Bytes read from client sockets.";
    bytes_out: Counter,
        sys Total("bytes/sent"),
        prom "ringmq_bytes_sent_total",
        help "Bytes written to client sockets.";
    retained: Gauge,
        sys Both("retained/count"),
        prom "ringmq_retained_messages",
        help "Retained messages held (each shard holds the topics it owns).";
    accepted: Counter,
        sys Off,
        prom "ringmq_connections_accepted_total",
        help "Connections accepted.";
    protocol_errors: Counter,
        sys Off,
        prom "ringmq_protocol_errors_total",
        help "Connections closed for bad input or protocol violations.";
    asyncapi_invalid: Counter,
        sys Both("messages/refused/asyncapi"),
        prom "ringmq_asyncapi_refused_total",
        help "Publishes the AsyncAPI document refused (invalid payload, topic or parameter, operation), by reason: refused with a reason code, dropped or closed by policy.";
    auth_denied: Counter,
        sys Off,
        prom "ringmq_auth_denied_total",
        help "Refused CONNECTs, denied publishes or subscribes, and subscriptions removed because a reloaded ACL or AsyncAPI document no longer allows them.";
    invariant_errors: Counter,
        sys Off,
        prom "ringmq_invariant_errors_total",
        help "States that cannot happen, met and survived (each also logged as an error).";
    store_records: Counter,
        sys Shard("store/records"),
        prom "ringmq_store_records_total",
        help "Records appended to the store (sync and batch modes).";
    store_commits: Counter,
        sys Shard("store/commits"),
        prom "ringmq_store_commits_total",
        help "Group commits landed (one durable write each).";
    store_commit_bytes: Counter,
        sys Shard("store/bytes"),
        prom "ringmq_store_written_bytes_total",
        help "Bytes written by group commits (whole blocks: the last partial block of a commit is written again by the next).";
    store_commit_micros: Counter,
        sys Shard("store/commit_micros"),
        prom "ringmq_store_commit_micros_total",
        help "Time from a commit's submission to its landing, summed, microseconds (divide by commits for the mean commit latency).";
    acks_released: Counter,
        sys Shard("store/acks_released"),
        prom "ringmq_store_acks_released_total",
        help "PUBACK / PUBREC packets released by landed commits (divide by commits for acks per commit).";
    acks_held: Gauge,
        sys Shard("store/acks_held"),
        prom "ringmq_store_acks_held",
        help "PUBACK / PUBREC packets waiting for durability now.";
    kafka_delivered: Counter,
        sys Shard("kafka/delivered"),
        prom "ringmq_kafka_delivered_total",
        help "Messages produced to Kafka and acknowledged by it.";
    kafka_failed: Counter,
        sys Shard("kafka/failed"),
        prom "ringmq_kafka_failed_total",
        help "Messages for Kafka that failed (not taken, or not acknowledged within kafka.timeout_ms): their publishers were refused.";
    kafka_in_flight: Gauge,
        sys Shard("kafka/in_flight"),
        prom "ringmq_kafka_in_flight",
        help "Messages handed to the Kafka producer and not acknowledged yet.";
    kafka_producers_replaced: Counter,
        sys Shard("kafka/producers_replaced"),
        prom "ringmq_kafka_producers_replaced_total",
        help "Kafka producers that failed for good (librdkafka's fatal error) and were replaced (the shard's, and on shard 0 the ack = \"local\" outbox's).";
    kafka_dead_letters: Counter,
        sys Total("kafka/dead_letters"),
        prom "ringmq_kafka_dead_letters_total",
        help "ack = \"local\": records Kafka refused for themselves, set aside in kafka-outbox/dead/ (acknowledged to their publishers, never produced).";
    kafka_backlog: Gauge,
        sys Total("kafka/backlog"),
        prom "ringmq_kafka_backlog",
        help "ack = \"local\": messages in the Kafka outbox (acknowledged to their publishers, durable locally) not acknowledged by Kafka yet.";
    kafka_backlog_bytes: Gauge,
        sys Total("kafka/backlog_bytes"),
        prom "ringmq_kafka_backlog_bytes",
        help "ack = \"local\": bytes of the Kafka outbox's backlog (bounded by kafka.backlog_bytes_max).";
    kafka_latency_millis: Counter,
        sys Shard("kafka/latency_millis"),
        prom "ringmq_kafka_latency_millis_total",
        help "Time from producing a message to Kafka's acknowledgement, summed, milliseconds (divide by delivered for the mean).";
    kafka_in_received: Counter,
        sys Shard("kafka/in_received"),
        prom "ringmq_kafka_in_received_total",
        help "Kafka records (Kafka -> MQTT) taken by the shard to publish.";
    kafka_in_handed_on: Counter,
        sys Shard("kafka/in_handed_on"),
        prom "ringmq_kafka_in_handed_on_total",
        help "Kafka records published and safe (durable where the durability mode says so): their offsets may be committed.";
    kafka_in_refused: Counter,
        sys Shard("kafka/in_refused"),
        prom "ringmq_kafka_in_refused_total",
        help "Kafka records that could not be made safe (the store failed): consumed again.";
    kafka_in_invalid: Counter,
        sys Shard("kafka/in_invalid"),
        prom "ringmq_kafka_in_invalid_total",
        help "Kafka records skipped: no valid MQTT topic from the rule, a non-UTF-8 header, larger than packet_bytes_max.";
    kafka_in_behind: Gauge,
        sys Total("kafka/in_behind"),
        prom "ringmq_kafka_in_behind",
        help "Records of the Kafka -> MQTT topics not handed on yet (the log's end minus the offset to be committed, from librdkafka's statistics every second).";
    cluster_out_delivered: Counter,
        sys Total("cluster/out_delivered"),
        prom "ringmq_cluster_out_delivered_total",
        help "Copies of messages produced to other nodes' downlink topics (and this node's will records) acknowledged by Kafka.";
    cluster_out_failed: Counter,
        sys Total("cluster/out_failed"),
        prom "ringmq_cluster_out_failed_total",
        help "Copies for other nodes that failed (not taken, or not acknowledged within kafka.timeout_ms): their publishers were refused.";
    cluster_out_in_flight: Gauge,
        sys Total("cluster/out_in_flight"),
        prom "ringmq_cluster_out_in_flight",
        help "Copies for other nodes handed to the producer and not acknowledged yet.";
    cluster_out_latency_millis: Counter,
        sys Off,
        prom "ringmq_cluster_out_latency_millis_total",
        help "Time from producing a copy for another node to Kafka's acknowledgement, summed, milliseconds (divide by out_delivered for the mean).";
    cluster_in_received: Counter,
        sys Total("cluster/in_received"),
        prom "ringmq_cluster_in_received_total",
        help "Messages from other nodes (this node's downlink) taken by the shard to publish.";
    cluster_in_handed_on: Counter,
        sys Total("cluster/in_handed_on"),
        prom "ringmq_cluster_in_handed_on_total",
        help "Messages from other nodes published here and safe: their downlink offsets may be committed.";
    cluster_in_behind: Gauge,
        sys Total("cluster/in_behind"),
        prom "ringmq_cluster_in_behind",
        help "Records in this node's downlink topic not handed on yet (the log's end minus the offset to be committed, from librdkafka's statistics every 250 ms): copies from other nodes waiting here.";
    cluster_moved_forwarded: Counter,
        sys Total("cluster/moved_forwarded"),
        prom "ringmq_cluster_moved_forwarded_total",
        help "Copies from this node's downlink produced again for sessions that had moved to another node (cluster.moved_keep_ms).";
    cluster_moved_followed: Gauge,
        sys Total("cluster/moved_followed"),
        prom "ringmq_cluster_moved_followed",
        help "Sessions that moved from this node to another, followed for the copies still coming here (at most cluster.moved_max).";
    cluster_nodes_live: Gauge,
        sys Total("cluster/nodes_live"),
        prom "ringmq_cluster_nodes_live",
        help "Nodes of the cluster with a recent heartbeat, this one included (0 outside a cluster).";
    cluster_routes_producers_replaced: Counter,
        sys Total("cluster/routes_producers_replaced"),
        prom "ringmq_cluster_routes_producers_replaced_total",
        help "Producers of the cluster's routes topic replaced after failing for good (librdkafka's fatal errors); the route records they held are written again.";
    cluster_salvaged: Counter,
        sys Total("cluster/salvaged"),
        prom "ringmq_cluster_salvaged_total",
        help "Copies read from a dead node's downlink for sessions taken from it and produced again to this node's, addressed to those sessions.";
    cluster_nodes_known: Gauge,
        sys Total("cluster/nodes_known"),
        prom "ringmq_cluster_nodes_known",
        help "Nodes of the cluster with a number in the route table (live, or dead for less than cluster.node_keep_ms; at most 64), this one included (0 outside a cluster).";
    cluster_nodes_congested: Gauge,
        sys Total("cluster/nodes_congested"),
        prom "ringmq_cluster_nodes_congested",
        help "Live nodes whose downlink is more than cluster.downlink_behind_max records behind (this one included): the acknowledgements of messages with copies for them wait until they caught up.";
    cluster_acks_delayed: Counter,
        sys Total("cluster/acks_delayed"),
        prom "ringmq_cluster_acks_delayed_total",
        help "Acknowledgements (PUBACK / PUBREC, and Kafka -> MQTT records' reports) held until a congested node their copies went to caught up.";
    cluster_wills_published: Counter,
        sys Total("cluster/wills_published"),
        prom "ringmq_cluster_wills_published_total",
        help "Wills of dead nodes' clients this node published (read from their wills topics).";
    store_up: Gauge,
        sys Shard("store/up"),
        prom "ringmq_store_up",
        help "1 while the shard's store lands its writes, 0 during an outage (Redis unreachable or refusing writes, a failing disk).";
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn unique<'a>(mut names: impl Iterator<Item = &'a str>) -> bool {
        let mut seen = HashSet::new();
        names.all(|n| seen.insert(n))
    }

    #[test]
    fn names_are_unique_and_well_formed() {
        assert!(unique(COUNTERS.iter().map(|c| c.field)));
        assert!(unique(COUNTERS.iter().map(|c| c.prom)));
        // A family's rows are adjacent and agree on kind and help.
        let mut families = HashSet::new();
        for pair in COUNTERS.windows(2) {
            if let [a, b] = pair {
                if a.family() == b.family() {
                    assert_eq!((a.kind, a.help), (b.kind, b.help), "{b:?}");
                } else {
                    assert!(
                        families.insert(a.family()),
                        "{a:?} not adjacent to its family"
                    );
                }
            }
        }
        assert!(unique(COUNTERS.iter().filter_map(|c| c.sys.total())));
        assert!(unique(COUNTERS.iter().filter_map(|c| c.sys.shard())));
        for c in COUNTERS {
            assert!(c.prom.starts_with("ringmq_"), "{c:?}");
            assert!(
                c.family()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
                "{c:?}"
            );
            assert_eq!(
                c.kind == Kind::Counter,
                c.family().ends_with("_total"),
                "{c:?}"
            );
            let labels = c.labels();
            assert!(
                labels.is_empty() || (labels.contains("=\"") && labels.ends_with('"')),
                "{c:?}"
            );
            assert!(!c.help.is_empty() && !c.help.contains('\n'), "{c:?}");
            assert!(!c.help.contains('\\'), "{c:?}");
            for name in [c.sys.total(), c.sys.shard()].into_iter().flatten() {
                assert!(!name.is_empty(), "{c:?}");
                assert!(!name.starts_with('/') && !name.ends_with('/'), "{c:?}");
                assert!(!name.contains(['+', '#']), "{c:?}");
            }
        }
    }

    #[test]
    fn values_follow_the_table() {
        assert_eq!(COUNT, 57);
        let s = Stats {
            publishes_in: 1,
            bytes_out: 2,
            auth_denied: 3,
            retained: 4,
            ..Default::default()
        };
        let values = s.values();
        for (c, v) in COUNTERS.iter().zip(values) {
            let expected = match c.field {
                "publishes_in" => 1,
                "bytes_out" => 2,
                "auth_denied" => 3,
                "retained" => 4,
                _ => 0,
            };
            assert_eq!(v, expected, "{c:?}");
        }
        assert_eq!(Stats::from_values(values), s);
        let all: [u64; COUNT] = std::array::from_fn(|i| i as u64 + 1);
        assert_eq!(Stats::from_values(all).values(), all);
    }

    #[test]
    fn add_sums_every_field() {
        let a = Stats::from_values(std::array::from_fn(|i| i as u64));
        let b = Stats::from_values([10; COUNT]);
        let mut sum = a;
        sum.add(&b);
        assert_eq!(
            sum.values(),
            std::array::from_fn::<u64, COUNT, _>(|i| i as u64 + 10)
        );
        let mut max = Stats::from_values([u64::MAX; COUNT]);
        max.add(&b);
        assert_eq!(max.values(), [u64::MAX; COUNT]);
    }
}
