//! Records a Kafka consumer is behind: read from librdkafka's statistics (emitted every
//! [`STATS_INTERVAL_MS`] while the consumer polls; [`DOWNLINK_STATS_INTERVAL_MS`] for a
//! cluster node's downlink, whose figure its congestion is judged on), summed over the consumer's partitions:
//! for each, the log's end (`hi_offset`) minus the offset stored for the next commit (the
//! record after the last one the shards handed on), or minus the committed offset while none
//! was stored since start. This is what a crash right now would read again, and what a
//! consumer that stopped reading (a node overloaded, a slow store) leaves waiting in Kafka.

use std::sync::atomic::{AtomicU64, Ordering};

/// How often librdkafka emits its statistics (`statistics.interval.ms`).
pub const STATS_INTERVAL_MS: u64 = 1_000;
/// The same for a cluster node's downlink consumer: the node's congestion follows it.
pub const DOWNLINK_STATS_INTERVAL_MS: u64 = 250;

/// The latest figure, shared between a consumer's context and the metrics.
#[derive(Debug, Default)]
pub struct Behind(AtomicU64);

impl Behind {
    /// Records behind at the last statistics (0 before the first).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes librdkafka's statistics JSON; a document it cannot read leaves the last figure.
    pub fn update(&self, statistics: &[u8]) {
        if let Some(n) = records_behind(statistics) {
            self.0.store(n, Ordering::Relaxed);
        }
    }
}

/// The sum over every topic's partitions (not librdkafka's internal partition -1) of the
/// records between the stored (else committed) offset and the log's end; `None` when the
/// document is not librdkafka's statistics.
pub fn records_behind(statistics: &[u8]) -> Option<u64> {
    let doc: serde_json::Value = serde_json::from_slice(statistics).ok()?;
    let topics = doc.get("topics")?.as_object()?;
    let mut sum = 0u64;
    for topic in topics.values() {
        let Some(partitions) = topic.get("partitions").and_then(|p| p.as_object()) else {
            continue;
        };
        for (id, p) in partitions {
            // librdkafka's internal partition, and partitions it knows of but does not
            // consume (another member of the group has them).
            let desired = p.get("desired").and_then(serde_json::Value::as_bool);
            if id.starts_with('-') || desired == Some(false) {
                continue;
            }
            let field = |name: &str| p.get(name).and_then(serde_json::Value::as_i64);
            let lag = match (field("consumer_lag_stored"), field("consumer_lag")) {
                (Some(stored), _) if stored >= 0 => stored,
                (_, Some(committed)) if committed >= 0 => committed,
                _ => 0,
            };
            sum = sum.saturating_add(lag.unsigned_abs());
        }
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_stored_else_committed_lag_over_real_partitions() {
        let doc = br#"{"name":"c","topics":{
            "down":{"topic":"down","partitions":{
                "0":{"partition":0,"consumer_lag":10,"consumer_lag_stored":4},
                "1":{"partition":1,"consumer_lag":7,"consumer_lag_stored":-1},
                "2":{"partition":2,"consumer_lag":-1,"consumer_lag_stored":-1},
                "3":{"partition":3,"desired":false,"consumer_lag":50,"consumer_lag_stored":50},
                "-1":{"partition":-1,"consumer_lag":99,"consumer_lag_stored":99}}},
            "other":{"topic":"other","partitions":{"0":{"consumer_lag_stored":3}}}}}"#;
        assert_eq!(records_behind(doc), Some(4 + 7 + 3));
        let b = Behind::default();
        b.update(doc);
        assert_eq!(b.get(), 14);
        b.update(b"not json");
        assert_eq!(
            b.get(),
            14,
            "a document it cannot read leaves the last figure"
        );
        assert_eq!(records_behind(br#"{"topics":{}}"#), Some(0));
    }
}
