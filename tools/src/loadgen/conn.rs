//! The connection scenario: open many MQTT connections as fast as a few connectors can, and
//! report the rate, CONNECT-to-CONNACK latency, and the broker's memory per connection.

use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use hdrhistogram::Histogram;
use net::codec::ProtocolVersion;

use super::layers::{ClientLink, Layers};
use super::wire::{handshake, Hello};
use crate::procstat;
use crate::report::{ConnReport, Percentiles};

/// Connection scenario settings.
#[derive(Debug, Clone)]
pub struct ConnLoad {
    /// Broker address.
    pub addr: SocketAddr,
    /// Connections to open (keep well under this process's open-file limit).
    pub clients: usize,
    /// Parallel connector threads.
    pub workers: usize,
    /// MQTT version.
    pub version: ProtocolVersion,
    /// The broker's pid, for memory per connection.
    pub broker_pid: Option<u32>,
    /// Client id prefix.
    pub prefix: String,
    /// TLS / WebSocket.
    pub layers: Layers,
    /// How long the connections stay open, idle, before the broker's memory is read.
    pub settle: std::time::Duration,
}

/// An open connection and its layers.
type Open = (TcpStream, Option<Box<ClientLink>>);

/// Opens every connection, measures, then closes them all.
pub fn run_conn(load: &ConnLoad) -> anyhow::Result<ConnReport> {
    let workers = load.workers.clamp(1, 64);
    let before = load.broker_pid.and_then(procstat::sample);
    let start = Instant::now();
    let results: Vec<anyhow::Result<(Vec<Open>, Histogram<u64>)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                scope.spawn(move || {
                    let mut streams = Vec::new();
                    let mut h = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
                    for i in (w..load.clients).step_by(workers) {
                        let id = format!("{}-conn-{i}", load.prefix);
                        let t = Instant::now();
                        let hello = Hello {
                            client_id: &id,
                            version: load.version,
                            clean: true,
                            session_expiry: 0,
                            subscribe: None,
                            layers: &load.layers,
                        };
                        let (s, _, _, link) = handshake(load.addr, &hello)?;
                        let _ = h.record(t.elapsed().as_nanos() as u64);
                        // The layers stay alive with the socket (idle TLS state).
                        streams.push((s, link));
                    }
                    Ok((streams, h))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("connector panicked")))
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut streams = Vec::new();
    for r in results {
        let (s, h) = r?;
        latency.add(&h)?;
        streams.extend(s);
    }
    // Let the broker settle its per-connection buffers before reading its memory.
    std::thread::sleep(load.settle);
    let after = load.broker_pid.and_then(procstat::sample);
    let clients = streams.len();
    drop(streams);
    let bytes_per = match (before, after) {
        (Some(b), Some(a)) if clients > 0 => {
            Some((a.rss_bytes as f64 - b.rss_bytes as f64) / clients as f64)
        }
        _ => None,
    };
    Ok(ConnReport {
        clients,
        workers,
        seconds,
        per_second: clients as f64 / seconds.max(1e-9),
        connack_latency: Percentiles::from_histogram(&latency),
        broker_rss_before: before.map(|s| s.rss_bytes),
        broker_rss_after: after.map(|s| s.rss_bytes),
        broker_bytes_per_connection: bytes_per,
        broker_cpu_seconds: match (before, after) {
            (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
            _ => None,
        },
    })
}
