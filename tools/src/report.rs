//! The result of a run: a human table and JSON for machines.

use serde::{Deserialize, Serialize};

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Percentiles {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// 99.99th percentile (0 in results written before it was kept).
    #[serde(default)]
    pub p9999_us: f64,
    /// Maximum.
    pub max_us: f64,
}

impl Percentiles {
    /// From a histogram recorded in nanoseconds.
    pub fn from_histogram(h: &hdrhistogram::Histogram<u64>) -> Self {
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Self {
            count: h.len(),
            p50_us: us(0.5),
            p90_us: us(0.9),
            p99_us: us(0.99),
            p999_us: us(0.999),
            p9999_us: us(0.9999),
            max_us: h.max() as f64 / 1000.0,
        }
    }
}

/// Everything a run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// Publishing clients.
    pub publishers: usize,
    /// Subscribing clients.
    pub subscribers: usize,
    /// QoS used.
    pub qos: u8,
    /// Payload bytes.
    pub payload_bytes: usize,
    /// MQTT protocol level (4 or 5).
    pub mqtt_version: u8,
    /// Offered rate per publisher, msg/s (0: as fast as the inflight window allows).
    pub rate_per_publisher: f64,
    /// Subscribers used persistent sessions.
    pub persistent: bool,
    /// Measurement window in seconds.
    pub window_seconds: f64,
    /// Messages delivered to subscribers inside the window, per second.
    pub delivered_per_second: f64,
    /// PUBLISHes sent over the whole run.
    pub sent: u64,
    /// PUBLISHes acknowledged (PUBACK / PUBCOMP; QoS 0: equal to sent).
    pub acknowledged: u64,
    /// Distinct messages delivered over the whole run.
    pub delivered: u64,
    /// Acknowledged messages never delivered (exact for QoS 1 and 2).
    pub lost: u64,
    /// Messages delivered more than once.
    pub duplicated: u64,
    /// Messages delivered after a later one of the same publisher.
    pub out_of_order: u64,
    /// End-to-end latency, publish to delivery, inside the window.
    pub latency: Percentiles,
    /// PUBLISH to PUBACK/PUBCOMP round trip, inside the window (QoS 1/2).
    pub ack_latency: Percentiles,
    /// Broker CPU seconds used inside the window (when --broker-pid is given).
    pub broker_cpu_seconds: Option<f64>,
    /// Broker CPU microseconds per delivered message.
    pub broker_cpu_us_per_message: Option<f64>,
    /// CPU microseconds per delivered message of each other process measured (`--other-pid`:
    /// the other nodes of a cluster, Kafka), by pid.
    #[serde(default)]
    pub others_cpu_us_per_message: Vec<(u32, f64)>,
    /// Broker peak RSS (VmHWM) at the end, bytes.
    pub broker_peak_rss_bytes: Option<u64>,
    /// Broker RSS over the run (when --broker-pid is given): (seconds since the clients
    /// connected, MiB), every half second.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broker_rss_mib: Vec<(f64, f64)>,
    /// The load generator's own CPU seconds inside the window.
    pub loadgen_cpu_seconds: f64,
}

impl Report {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let line = |s: &mut String, k: &str, v: String| s.push_str(&format!("{k:<28} {v}\n"));
        line(
            &mut s,
            "scenario",
            format!(
                "{} {} pub / {} sub, QoS {}, {} B, MQTT {}{}",
                self.scenario,
                self.publishers,
                self.subscribers,
                self.qos,
                self.payload_bytes,
                if self.mqtt_version == 5 { "5" } else { "3.1.1" },
                if self.persistent { ", persistent" } else { "" }
            ),
        );
        let offered = if self.rate_per_publisher > 0.0 {
            format!(
                "{:.0} msg/s",
                self.rate_per_publisher * self.publishers as f64
            )
        } else {
            "max".to_string()
        };
        line(&mut s, "offered", offered);
        line(
            &mut s,
            "delivered msg/s",
            format!("{:.0}", self.delivered_per_second),
        );
        line(
            &mut s,
            "sent / acked / delivered",
            format!("{} / {} / {}", self.sent, self.acknowledged, self.delivered),
        );
        line(
            &mut s,
            "lost / duplicated / ooo",
            format!(
                "{} / {} / {}",
                self.lost, self.duplicated, self.out_of_order
            ),
        );
        let p = &self.latency;
        line(
            &mut s,
            "latency us p50/p90/p99/p999/max",
            format!(
                "{:.0} / {:.0} / {:.0} / {:.0} / {:.0}",
                p.p50_us, p.p90_us, p.p99_us, p.p999_us, p.max_us
            ),
        );
        let a = &self.ack_latency;
        if a.count > 0 {
            line(
                &mut s,
                "ack rtt us p50/p99/max",
                format!("{:.0} / {:.0} / {:.0}", a.p50_us, a.p99_us, a.max_us),
            );
        }
        if let (Some(cpu), Some(per)) = (self.broker_cpu_seconds, self.broker_cpu_us_per_message) {
            line(&mut s, "broker cpu", format!("{cpu:.2} s, {per:.2} us/msg"));
        }
        for (pid, per) in &self.others_cpu_us_per_message {
            line(
                &mut s,
                &format!("pid {pid} cpu"),
                format!("{per:.2} us/msg"),
            );
        }
        if let Some(rss) = self.broker_peak_rss_bytes {
            line(
                &mut s,
                "broker peak rss",
                format!("{:.1} MiB", rss as f64 / 1048576.0),
            );
        }
        line(
            &mut s,
            "loadgen cpu",
            format!("{:.2} s", self.loadgen_cpu_seconds),
        );
        s
    }
}

/// What the connection scenario measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnReport {
    /// Connections opened (each CONNECT acknowledged).
    pub clients: usize,
    /// Parallel connectors.
    pub workers: usize,
    /// Seconds from the first connect to the last CONNACK.
    pub seconds: f64,
    /// Connections per second.
    pub per_second: f64,
    /// CONNECT to CONNACK latency.
    pub connack_latency: Percentiles,
    /// Broker RSS before connecting, bytes.
    pub broker_rss_before: Option<u64>,
    /// Broker RSS with every client connected, bytes.
    pub broker_rss_after: Option<u64>,
    /// (after - before) / clients.
    pub broker_bytes_per_connection: Option<f64>,
    /// Broker CPU seconds spent accepting them.
    pub broker_cpu_seconds: Option<f64>,
}

impl ConnReport {
    /// The human table.
    pub fn table(&self) -> String {
        let mut s = format!(
            "{:<28} {} ({} workers)\n{:<28} {:.1} s, {:.0} conn/s\n{:<28} {:.0} / {:.0} / {:.0} us\n",
            "connections",
            self.clients,
            self.workers,
            "time",
            self.seconds,
            self.per_second,
            "connack p50/p99/max",
            self.connack_latency.p50_us,
            self.connack_latency.p99_us,
            self.connack_latency.max_us
        );
        if let Some(b) = self.broker_bytes_per_connection {
            s.push_str(&format!(
                "{:<28} {:.1} KiB\n",
                "broker memory / connection",
                b / 1024.0
            ));
        }
        s
    }
}

/// The line after which BENCHMARKS.md holds sections measured by hand (scenarios `compare`
/// does not run yet); `compare` keeps them when it writes the report again.
pub const HAND_RUN_MARKER: &str =
    "<!-- hand-run sections below: kept when compare rewrites this file -->";

/// Writes a generated report to `path`, keeping what the file holds from
/// [`HAND_RUN_MARKER`] on.
pub fn write_keeping_hand_run(path: &std::path::Path, generated: &str) -> std::io::Result<()> {
    let kept = std::fs::read_to_string(path).ok().and_then(|old| {
        old.find(HAND_RUN_MARKER)
            .and_then(|at| old.get(at..).map(str::to_string))
    });
    match kept {
        Some(kept) => std::fs::write(path, format!("{}\n{kept}", generated.trim_end())),
        None => std::fs::write(path, generated),
    }
}
