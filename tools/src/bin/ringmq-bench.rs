//! `ringmq-bench`: MQTT load generator. Today: the `p2p` scenario (issue 5 adds fan-in,
//! fan-out, conn, and the comparison runner).

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::{run_p2p, P2p};

#[derive(Debug, Parser)]
#[command(version, about = "MQTT load generator for ringmq and other brokers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Version {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// N publishers, N subscribers; publisher i -> its own topic -> subscriber i.
    P2p {
        /// Broker host:port.
        #[arg(long, default_value = "127.0.0.1:1883")]
        addr: std::net::SocketAddr,
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// QoS 0, 1 or 2.
        #[arg(long, default_value_t = 1)]
        qos: u8,
        /// Payload bytes (at least 16).
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Messages per second per publisher; 0 = as fast as the window allows.
        #[arg(long, default_value_t = 0)]
        rate: u64,
        /// Unacknowledged messages per publisher (QoS 1/2) or per send (QoS 0).
        #[arg(long, default_value_t = 64)]
        inflight: usize,
        /// Warm-up seconds (not measured).
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
        /// Measured seconds.
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// MQTT version.
        #[arg(long, value_enum, default_value = "3.1.1")]
        mqtt: Version,
        /// Broker pid: report its CPU per message and peak RSS.
        #[arg(long)]
        broker_pid: Option<u32>,
        /// Client id prefix.
        #[arg(long, default_value = "rb")]
        client_prefix: String,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.scenario {
        Scenario::P2p {
            addr,
            pairs,
            qos,
            payload,
            rate,
            inflight,
            warmup,
            duration,
            mqtt,
            broker_pid,
            client_prefix,
            json,
        } => {
            let qos =
                QoS::from_bits(qos).ok_or_else(|| anyhow::anyhow!("--qos must be 0, 1 or 2"))?;
            let report = run_p2p(P2p {
                addr,
                pairs,
                qos,
                payload_bytes: payload,
                rate,
                inflight,
                warmup: Duration::from_secs_f64(warmup),
                duration: Duration::from_secs_f64(duration),
                drain: Duration::from_secs(5),
                version: match mqtt {
                    Version::V311 => ProtocolVersion::V311,
                    Version::V5 => ProtocolVersion::V5,
                },
                broker_pid,
                client_prefix,
            })?;
            print!("{}", report.table());
            if let Some(path) = json {
                std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
            }
        }
    }
    Ok(())
}
