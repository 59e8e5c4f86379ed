//! Records a Kafka consumer is behind: read from librdkafka's statistics (emitted every
//! [`STATS_INTERVAL_MS`] while the consumer polls; [`DOWNLINK_STATS_INTERVAL_MS`] for a
//! cluster node's downlink, whose figure its congestion is judged on), summed over the consumer's partitions:
//! for each, the log's end (`hi_offset`) minus the offset stored for the next commit (the
//! record after the last one the shards handed on), or minus the committed offset while none
//! was stored since start. This is what a crash right now would read again, and what a
//! consumer that stopped reading (a node overloaded, a slow store) leaves waiting in Kafka.
//!
//! librdkafka learns a log's end only from its fetches, which stop while the consumer is held
//! back: the statistics then read less than the truth. A cluster node probes its downlink's
//! ends itself ([`Behind::probe`], from `cluster::lag`), against the positions the last
//! statistics gave; that figure is used while it is fresh.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// A probed figure counts this long (milliseconds).
const PROBE_FRESH_MS: i64 = 1_000;

/// How often librdkafka emits its statistics (`statistics.interval.ms`).
pub const STATS_INTERVAL_MS: u64 = 1_000;
/// The same for a cluster node's downlink consumer: the node's congestion follows it.
pub const DOWNLINK_STATS_INTERVAL_MS: u64 = 250;

/// The latest figure, shared between a consumer's context and the metrics.
#[derive(Debug, Default)]
pub struct Behind {
    /// From the last statistics.
    stats: AtomicU64,
    /// Each partition's position (the stored offset, else the committed one) at the last
    /// statistics.
    positions: Mutex<Vec<(i32, i64)>>,
    /// From the last probe of the log's ends, and when (ms of the epoch; 0: never).
    probed: AtomicU64,
    probed_at: AtomicI64,
}

impl Behind {
    /// Records behind: the larger of the last probe's figure (while fresh) and the last
    /// statistics' (0 before the first).
    pub fn get(&self) -> u64 {
        let stats = self.stats.load(Ordering::Relaxed);
        let at = self.probed_at.load(Ordering::Acquire);
        if at != 0 && crate::kafka::now_millis().saturating_sub(at) < PROBE_FRESH_MS {
            return stats.max(self.probed.load(Ordering::Relaxed));
        }
        stats
    }

    /// Takes librdkafka's statistics JSON; a document it cannot read leaves the last figure.
    pub fn update(&self, statistics: &[u8]) {
        if let Some((n, positions)) = parse(statistics) {
            self.stats.store(n, Ordering::Relaxed);
            *self.positions.lock().unwrap_or_else(|e| e.into_inner()) = positions;
        }
    }

    /// Each partition's log start and end, probed now (`ends`: partition, start, end): the
    /// records between the last statistics' positions and the ends; a partition with no
    /// position yet (nothing stored or committed: read from its start) counts from its start.
    pub fn probe(&self, ends: &[(i32, i64, i64)]) {
        let positions = self.positions.lock().unwrap_or_else(|e| e.into_inner());
        let sum = ends
            .iter()
            .map(|&(p, start, end)| {
                let at = positions
                    .iter()
                    .find(|(q, _)| *q == p)
                    .map_or(start, |&(_, at)| at);
                end.saturating_sub(at).max(0).unsigned_abs()
            })
            .fold(0u64, u64::saturating_add);
        drop(positions);
        self.probed.store(sum, Ordering::Relaxed);
        self.probed_at
            .store(crate::kafka::now_millis(), Ordering::Release);
    }
}

/// The sum over every topic's partitions (not librdkafka's internal partition -1) of the
/// records between the stored (else committed) offset and the log's end; `None` when the
/// document is not librdkafka's statistics.
pub fn records_behind(statistics: &[u8]) -> Option<u64> {
    parse(statistics).map(|(n, _)| n)
}

/// [`records_behind`], and each consumed partition's position (stored, else committed).
fn parse(statistics: &[u8]) -> Option<(u64, Vec<(i32, i64)>)> {
    let doc: serde_json::Value = serde_json::from_slice(statistics).ok()?;
    let topics = doc.get("topics")?.as_object()?;
    let mut sum = 0u64;
    let mut positions = Vec::new();
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
            let position = match (field("stored_offset"), field("committed_offset")) {
                (Some(stored), _) if stored >= 0 => Some(stored),
                (_, Some(committed)) if committed >= 0 => Some(committed),
                _ => None,
            };
            if let (Ok(partition), Some(at)) = (id.parse::<i32>(), position) {
                positions.push((partition, at));
            }
        }
    }
    Some((sum, positions))
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

    #[test]
    fn a_fresh_probe_of_the_ends_counts_from_the_statistics_positions() {
        let b = Behind::default();
        b.update(
            br#"{"topics":{"down":{"partitions":{
            "0":{"stored_offset":100,"committed_offset":90,"consumer_lag_stored":5},
            "1":{"stored_offset":-1001,"committed_offset":40,"consumer_lag":0},
            "2":{"stored_offset":-1001,"committed_offset":-1001}}}}}"#,
        );
        assert_eq!(b.get(), 5, "the statistics' figure before any probe");
        b.probe(&[(0, 0, 1_100), (1, 0, 45), (2, 20, 500), (3, 0, 9)]);
        assert_eq!(
            b.get(),
            1_000 + 5 + 480 + 9,
            "partitions without a position count from their start"
        );
        b.probe(&[(0, 0, 100), (1, 0, 40)]);
        assert_eq!(b.get(), 5, "never below the statistics' figure");
    }
}
