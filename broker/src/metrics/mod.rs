//! Counters and the delivery latency histogram, exported as `$SYS/broker/...` topics and a
//! Prometheus `/metrics` endpoint ([`http`]). Each shard counts in plain integers on its own
//! thread and copies a snapshot into its slot of [`Metrics`] (relaxed atomic stores, one
//! writer per slot) on every 250 ms tick; readers sum the slots.

pub mod http;

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Latency histogram buckets: bucket `i` counts deliveries that took under `2^i` microseconds;
/// the last one everything slower.
pub const LATENCY_BUCKETS: usize = 22;

/// Delivery latency: from the loop pass that decoded a PUBLISH to the pass that encoded it for
/// a subscriber (mesh hop and queueing included; the socket write is not).
#[derive(Clone, Debug)]
pub struct Histogram {
    /// Counts per bucket.
    pub buckets: [u64; LATENCY_BUCKETS],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: [0; LATENCY_BUCKETS],
            sum_us: 0,
        }
    }
}

impl Histogram {
    /// Records one observation.
    pub fn record(&mut self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let i = (64 - us.leading_zeros() as usize).min(LATENCY_BUCKETS - 1);
        if let Some(b) = self.buckets.get_mut(i) {
            *b += 1;
        }
        self.sum_us = self.sum_us.saturating_add(us);
    }
}

/// What one shard reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Snapshot {
    /// PUBLISH packets received from clients.
    pub messages_received: u64,
    /// PUBLISH packets sent to clients (first transmissions).
    pub messages_sent: u64,
    /// Messages forwarded to peer shards.
    pub messages_forwarded: u64,
    /// Messages dropped (QoS 0 to a full outbox or offline session, oldest queued, expired,
    /// too large for the client).
    pub messages_dropped: u64,
    /// Bytes read from client sockets.
    pub bytes_received: u64,
    /// Bytes written to client sockets.
    pub bytes_sent: u64,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed for bad input or a protocol violation.
    pub protocol_errors: u64,
    /// CONNECTs refused for credentials or authorisation, and denied publishes/subscribes.
    pub auth_denied: u64,
    /// Clients connected now (with a session).
    pub clients_connected: u64,
    /// Sessions homed on the shard (connected or not).
    pub sessions: u64,
    /// Retained messages in the shard's replica.
    pub retained: u64,
}

const FIELDS: usize = 12;

impl Snapshot {
    fn values(&self) -> [u64; FIELDS] {
        [
            self.messages_received,
            self.messages_sent,
            self.messages_forwarded,
            self.messages_dropped,
            self.bytes_received,
            self.bytes_sent,
            self.connections_accepted,
            self.protocol_errors,
            self.auth_denied,
            self.clients_connected,
            self.sessions,
            self.retained,
        ]
    }

    fn from_values(v: [u64; FIELDS]) -> Self {
        let [messages_received, messages_sent, messages_forwarded, messages_dropped, bytes_received, bytes_sent, connections_accepted, protocol_errors, auth_denied, clients_connected, sessions, retained] =
            v;
        Self {
            messages_received,
            messages_sent,
            messages_forwarded,
            messages_dropped,
            bytes_received,
            bytes_sent,
            connections_accepted,
            protocol_errors,
            auth_denied,
            clients_connected,
            sessions,
            retained,
        }
    }
}

/// Prometheus name, type and help of each snapshot field, in `values()` order.
const DESCRIPTIONS: [(&str, &str, &str); FIELDS] = [
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
        "ringmq_messages_dropped_total",
        "counter",
        "Messages dropped (QoS 0 overflow, oldest queued, expired, too large).",
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
        "Refused CONNECTs and denied publishes or subscribes.",
    ),
    ("ringmq_clients_connected", "gauge", "Clients connected."),
    ("ringmq_sessions", "gauge", "Sessions (connected or not)."),
    (
        "ringmq_retained_messages",
        "gauge",
        "Retained messages in the shard's replica.",
    ),
];

#[derive(Debug)]
struct Slot {
    values: [AtomicU64; FIELDS],
    buckets: [AtomicU64; LATENCY_BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            values: std::array::from_fn(|_| AtomicU64::new(0)),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// Every shard's latest snapshot.
#[derive(Debug)]
pub struct Metrics {
    slots: Vec<Slot>,
    started: Instant,
}

impl Metrics {
    /// Slots for `shards` shards.
    pub fn new(shards: usize) -> Self {
        Self {
            slots: (0..shards).map(|_| Slot::default()).collect(),
            started: Instant::now(),
        }
    }

    /// Seconds since start.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Shard `shard` publishes its counters.
    pub fn store(&self, shard: usize, s: &Snapshot, h: &Histogram) {
        let Some(slot) = self.slots.get(shard) else {
            return;
        };
        for (a, v) in slot.values.iter().zip(s.values()) {
            a.store(v, Ordering::Relaxed);
        }
        for (a, v) in slot.buckets.iter().zip(h.buckets) {
            a.store(v, Ordering::Relaxed);
        }
        slot.sum_us.store(h.sum_us, Ordering::Relaxed);
    }

    /// The latest snapshot of each shard.
    pub fn shards(&self) -> Vec<(Snapshot, Histogram)> {
        self.slots
            .iter()
            .map(|slot| {
                let values = std::array::from_fn(|i| {
                    slot.values.get(i).map_or(0, |a| a.load(Ordering::Relaxed))
                });
                let buckets = std::array::from_fn(|i| {
                    slot.buckets.get(i).map_or(0, |a| a.load(Ordering::Relaxed))
                });
                (
                    Snapshot::from_values(values),
                    Histogram {
                        buckets,
                        sum_us: slot.sum_us.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }

    /// The sum over shards.
    pub fn total(&self) -> Snapshot {
        let mut sum = [0u64; FIELDS];
        for (s, _) in self.shards() {
            for (t, v) in sum.iter_mut().zip(s.values()) {
                *t += v;
            }
        }
        Snapshot::from_values(sum)
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
        for (i, (name, kind, help)) in DESCRIPTIONS.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (shard, (s, _)) in shards.iter().enumerate() {
                let v = s.values().get(i).copied().unwrap_or(0);
                let _ = writeln!(out, "{name}{{shard=\"{shard}\"}} {v}");
            }
        }
        let name = "ringmq_delivery_latency_seconds";
        let _ = writeln!(out, "# HELP {name} From the loop pass that decoded a PUBLISH to the pass that encoded it for a subscriber.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (shard, (_, h)) in shards.iter().enumerate() {
            let mut cumulative = 0;
            for (i, count) in h.buckets.iter().enumerate() {
                cumulative += count;
                if i + 1 == LATENCY_BUCKETS {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{shard=\"{shard}\",le=\"+Inf\"}} {cumulative}"
                    );
                } else {
                    let le = (1u64 << i) as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "{name}_bucket{{shard=\"{shard}\",le=\"{le}\"}} {cumulative}"
                    );
                }
            }
            let _ = writeln!(
                out,
                "{name}_sum{{shard=\"{shard}\"}} {}",
                h.sum_us as f64 / 1e6
            );
            let _ = writeln!(out, "{name}_count{{shard=\"{shard}\"}} {cumulative}");
        }
        out
    }

    /// `$SYS` topics and their values (the totals, then per shard).
    pub fn sys_topics(&self) -> Vec<(String, String)> {
        let t = self.total();
        let mut v = vec![
            (
                "$SYS/broker/version".to_string(),
                format!("ringmq {}", env!("CARGO_PKG_VERSION")),
            ),
            (
                "$SYS/broker/uptime".to_string(),
                format!("{} seconds", self.uptime().as_secs()),
            ),
            (
                "$SYS/broker/clients/connected".to_string(),
                t.clients_connected.to_string(),
            ),
            ("$SYS/broker/sessions".to_string(), t.sessions.to_string()),
            (
                "$SYS/broker/messages/received".to_string(),
                t.messages_received.to_string(),
            ),
            (
                "$SYS/broker/messages/sent".to_string(),
                t.messages_sent.to_string(),
            ),
            (
                "$SYS/broker/messages/dropped".to_string(),
                t.messages_dropped.to_string(),
            ),
            (
                "$SYS/broker/messages/forwarded".to_string(),
                t.messages_forwarded.to_string(),
            ),
            (
                "$SYS/broker/bytes/received".to_string(),
                t.bytes_received.to_string(),
            ),
            (
                "$SYS/broker/bytes/sent".to_string(),
                t.bytes_sent.to_string(),
            ),
        ];
        for (i, (s, _)) in self.shards().iter().enumerate() {
            let p = format!("$SYS/broker/shard/{i}");
            v.push((
                format!("{p}/clients/connected"),
                s.clients_connected.to_string(),
            ));
            v.push((
                format!("{p}/messages/received"),
                s.messages_received.to_string(),
            ));
            v.push((format!("{p}/messages/sent"), s.messages_sent.to_string()));
            v.push((
                format!("{p}/messages/dropped"),
                s.messages_dropped.to_string(),
            ));
            v.push((format!("{p}/retained/count"), s.retained.to_string()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_sum_and_export() {
        let m = Metrics::new(2);
        let mut h = Histogram::default();
        h.record(Duration::from_micros(3));
        h.record(Duration::from_secs(100));
        m.store(
            0,
            &Snapshot {
                messages_received: 5,
                clients_connected: 1,
                ..Default::default()
            },
            &h,
        );
        m.store(
            1,
            &Snapshot {
                messages_received: 7,
                ..Default::default()
            },
            &Histogram::default(),
        );
        assert_eq!(m.total().messages_received, 12);
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
    }
}
