//! This node's downlink's ends, probed every 250 ms (a ListOffsets per partition through a
//! reader of its own, on a thread of its own: a slow Kafka delays no heartbeat), for the
//! records-behind figure the node's congestion is judged on (`kafka::behind::Behind::probe`):
//! librdkafka's statistics learn the ends only from fetches, which stop while the downlink
//! consumer is held back, so without this a node far behind reads as less behind than it is.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::Consumer;

use super::config::ClusterConfig;
use crate::kafka::config::KafkaConfig;

/// How often the ends are probed.
const EVERY: Duration = Duration::from_millis(250);
/// The longest one ListOffsets is waited for.
const WAIT: Duration = Duration::from_secs(1);

/// Starts the thread probing this node's downlink for `feed` (none when
/// `cluster.downlink_behind_max` is 0: congestion is off).
pub fn start_lag(
    kafka: &KafkaConfig,
    config: &ClusterConfig,
    feed: Arc<super::feed::Feed>,
) -> anyhow::Result<Option<super::Worker>> {
    if config.downlink_behind_max == 0 {
        return Ok(None);
    }
    let consumer = super::reader(kafka, config, "lag")?;
    let topic = config.downlink();
    let partitions =
        crate::kafka::partitions(&consumer, &topic, Duration::from_millis(kafka.timeout_ms))
            .map_err(|e| anyhow::anyhow!("cluster: the partitions of {topic}: {e}"))?;
    let partitions = i32::try_from(partitions)?;
    let worker = super::Worker::spawn("cluster-lag", move |stop: &AtomicBool| {
        let mut failing = false;
        while !stop.load(Ordering::Acquire) {
            let mut ends = Vec::with_capacity(usize::try_from(partitions).unwrap_or(0));
            for p in 0..partitions {
                match consumer.fetch_watermarks(&topic, p, WAIT) {
                    Ok((start, end)) => ends.push((p, start, end)),
                    Err(e) => {
                        if !std::mem::replace(&mut failing, true) {
                            tracing::debug!(topic, error = %e, "probing the downlink's ends");
                        }
                        break;
                    }
                }
            }
            if ends.len() == usize::try_from(partitions).unwrap_or(0) {
                failing = false;
                feed.downlink_behind.probe(&ends);
            }
            std::thread::sleep(EVERY);
        }
    })?;
    Ok(Some(worker))
}
