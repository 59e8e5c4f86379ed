//! Helpers of the cluster tests (`cluster.rs`, `cluster_moves.rs`): a node's configuration
//! over one tansu, nodes started on free ports, waiting for a route to reach a node, draining
//! a subscriber without the routing probes.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use crate::common::{self, scratch_dir, Broker, Raw};
use crate::kafka::Tansu;
use net::codec::{ProtocolVersion, Publish, QoS};

/// MQTT 5, which every cluster test speaks.
pub const V5: ProtocolVersion = ProtocolVersion::V5;

/// A node's configuration file.
pub fn node_config(tansu: &Tansu, node: &str) -> std::path::PathBuf {
    node_config_with(tansu, node, "")
}

/// A node's configuration file, with `extra` appended.
pub fn node_config_with(tansu: &Tansu, node: &str, extra: &str) -> std::path::PathBuf {
    node_config_top(tansu, node, "", extra)
}

/// A node's configuration file: `top` (top-level keys) first, `extra` appended.
pub fn node_config_top(tansu: &Tansu, node: &str, top: &str, extra: &str) -> std::path::PathBuf {
    node_config_kafka(tansu, node, top, "", extra)
}

/// A node's configuration file: `top` (top-level keys) first, `kafka` added to `[kafka]`,
/// `extra` appended (to `[cluster]`).
pub fn node_config_kafka(
    tansu: &Tansu,
    node: &str,
    top: &str,
    kafka: &str,
    extra: &str,
) -> std::path::PathBuf {
    let dir = scratch_dir("cluster-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringmq.toml");
    std::fs::write(
        &path,
        format!(
            "{top}[kafka]\nbrokers = \"{}\"\npartitions = 2\ntimeout_ms = 10000\nlinger_ms = 1\n\
             session_timeout_ms = 6000\n{kafka}\
             [cluster]\nnode_id = \"{node}\"\nheartbeat_ms = 200\nnode_timeout_ms = 1500\n{extra}",
            tansu.brokers()
        ),
    )
    .unwrap();
    path
}

pub fn start_node(tansu: &Tansu, node: &str) -> Broker {
    let path = node_config(tansu, node);
    Broker::start(&["--config", path.to_str().unwrap()])
}

/// A node serving Prometheus metrics, and their address.
pub fn start_node_with_metrics(tansu: &Tansu, node: &str) -> (Broker, String) {
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let path = node_config(tansu, node);
    let args = [
        "--config",
        path.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ];
    (Broker::start(&args), metrics)
}

/// `Raw::drain_publishes` without the routing probes: `want` counts the other messages.
pub fn drain(c: &mut Raw, want: usize, wait: Duration) -> Vec<Publish> {
    let deadline = Instant::now() + wait;
    let mut got = Vec::new();
    while got.len() < want && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        let batch = c.drain_publishes(want - got.len(), left.min(Duration::from_millis(200)));
        got.extend(batch.into_iter().filter(|p| &p.payload[..] != b"probe"));
    }
    got
}

/// Publishes QoS 0 probes on `topic` through `publisher` until `subscriber` receives one (the
/// route reached the publisher's node); how long it took.
pub fn until_routed(publisher: &mut Raw, subscriber: &mut Raw, topic: &str) -> Duration {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        publisher.publish(topic, b"probe", QoS::AtMostOnce, 0);
        let got = subscriber.drain_publishes(1, Duration::from_millis(50));
        if !got.is_empty() {
            // Probes still on their way are taken too.
            subscriber.drain_publishes(usize::MAX, Duration::from_millis(300));
            return start.elapsed();
        }
    }
    panic!("no route to the subscriber's node for {topic} within 20 s");
}

pub fn payloads(got: &[Publish]) -> Vec<String> {
    got.iter()
        .map(|p| String::from_utf8_lossy(&p.payload).into_owned())
        .collect()
}

/// Waits until the metric `series` at `metrics` reads `want`.
pub fn until_metric(metrics: &str, series: &str, want: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = common::metric(metrics, series);
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {got}, not {want}, after 20 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
