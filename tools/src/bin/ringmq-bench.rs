//! `ringmq-bench`: MQTT load generator, trivial relay, and comparison runner.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::conn::{run_conn, ConnLoad};
use tools::loadgen::retained::{run_retained, RetainedLoad};
use tools::loadgen::topology::Topology;
use tools::loadgen::{run, Load};

#[derive(Debug, Parser)]
#[command(
    version,
    about = "MQTT load generator, trivial relay and comparison runner"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Version {
    #[value(name = "3.1.1")]
    V311,
    #[value(name = "5")]
    V5,
}

impl From<Version> for ProtocolVersion {
    fn from(v: Version) -> Self {
        match v {
            Version::V311 => ProtocolVersion::V311,
            Version::V5 => ProtocolVersion::V5,
        }
    }
}

/// TLS and WebSocket between the clients and the broker.
#[derive(Debug, Args)]
struct LayerArgs {
    /// Connect over TLS (the broker's `tls_listen` / `wss_listen`); needs --tls-ca.
    #[arg(long)]
    tls: bool,
    /// CA certificates (PEM) the broker's certificate chains to.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// Resume TLS sessions across connections (tickets); else every handshake is full.
    #[arg(long)]
    tls_resume: bool,
    /// MQTT over WebSocket (the broker's `ws_listen` / `wss_listen`, with --tls).
    #[arg(long)]
    ws: bool,
    /// The WebSocket request path.
    #[arg(long, default_value = "/mqtt")]
    ws_path: String,
}

impl LayerArgs {
    fn layers(&self) -> anyhow::Result<tools::loadgen::layers::Layers> {
        use tools::loadgen::layers::Layers;
        let tls = match (self.tls, &self.tls_ca) {
            (true, Some(ca)) => Some(Layers::tls_config(ca, self.tls_resume)?),
            (true, None) => anyhow::bail!("--tls needs --tls-ca"),
            (false, _) => None,
        };
        Ok(Layers {
            tls,
            ws_path: self.ws.then(|| self.ws_path.clone()),
        })
    }
}

/// Knobs shared by the message scenarios.
#[derive(Debug, Args)]
struct LoadArgs {
    /// Broker host:port (the subscribers', and the publishers' unless --pub-addr).
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Where the publishers connect instead (another node of a cluster).
    #[arg(long)]
    pub_addr: Option<SocketAddr>,
    /// The nodes of a cluster to spread the clients over (repeat: `--node A --node B --node
    /// C`): publisher i on node i mod n, subscriber i on node i + 1 mod n (with one node both
    /// on it); overrides `--addr` and `--pub-addr`.
    #[arg(long = "node")]
    nodes: Vec<SocketAddr>,
    /// Another process whose CPU per delivered message is reported (repeatable: the other
    /// nodes of a cluster, the Kafka broker).
    #[arg(long)]
    other_pid: Vec<u32>,
    /// QoS 0, 1 or 2.
    #[arg(long, default_value_t = 1)]
    qos: u8,
    /// Payload bytes (16 to 16 MiB).
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Payloads are a 10-field JSON object (at least 166 bytes) carrying the stamp in hex.
    #[arg(long)]
    json_payload: bool,
    /// Messages per second per publisher; 0 = as fast as the window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Unacknowledged messages per publisher (QoS 1/2) or per send (QoS 0).
    #[arg(long, default_value_t = 64)]
    inflight: usize,
    /// Warm-up seconds (not measured).
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Measured seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds allowed after the window for the last deliveries.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// MQTT version.
    #[arg(long, value_enum, default_value = "3.1.1")]
    mqtt: Version,
    /// Broker pid: report its CPU per message and peak RSS.
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Subscribers use persistent sessions.
    #[arg(long)]
    persistent: bool,
    /// With --persistent: seconds the subscribers stay offline from the start of the window.
    #[arg(long)]
    offline: Option<f64>,
    /// Client id prefix (runs against one broker must not share it).
    #[arg(long, default_value = "rb")]
    client_prefix: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    layers: LayerArgs,
}

impl LoadArgs {
    fn load(&self) -> anyhow::Result<Load> {
        Ok(Load {
            addr: self.addr,
            pub_addr: self.pub_addr,
            nodes: self.nodes.clone(),
            other_pids: self.other_pid.clone(),
            qos: QoS::from_bits(self.qos)
                .ok_or_else(|| anyhow::anyhow!("--qos must be 0, 1 or 2"))?,
            payload_bytes: self.payload,
            json: self.json_payload,
            rate: self.rate,
            inflight: self.inflight,
            warmup: Duration::from_secs_f64(self.warmup),
            duration: Duration::from_secs_f64(self.duration),
            drain: Duration::from_secs_f64(self.drain),
            version: self.mqtt.into(),
            broker_pid: self.broker_pid,
            persistent: self.persistent,
            offline: self.offline.map(Duration::from_secs_f64),
            kafka_in: None,
            kafka_out: None,
            layers: self.layers.layers()?,
        })
    }
}

/// The broker a one-shot scenario runs against, and where its report goes.
#[derive(Debug, Args)]
struct Target {
    /// Broker host:port.
    #[arg(long, default_value = "127.0.0.1:1883")]
    addr: SocketAddr,
    /// Broker pid (CPU, memory).
    #[arg(long)]
    broker_pid: Option<u32>,
    /// Client id prefix.
    #[arg(long, default_value = "rb")]
    client_prefix: String,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N publishers, N subscribers; publisher i -> its own topic -> subscriber i.
    P2p {
        /// Publisher/subscriber pairs.
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Many publishers, few subscribers (each sees every message, or with --shared one
    /// $share group sees each message once).
    FanIn {
        /// Publishers.
        #[arg(long, default_value_t = 100)]
        publishers: usize,
        /// Subscribers.
        #[arg(long, default_value_t = 2)]
        subscribers: usize,
        /// The subscribers form one shared subscription group.
        #[arg(long)]
        shared: bool,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Few publishers, many subscribers, every subscriber sees every message.
    FanOut {
        /// Publishers.
        #[arg(long, default_value_t = 1)]
        publishers: usize,
        /// Subscribers.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Kafka -> MQTT: a Kafka producer writes stamped records with keys k0..kN-1 to a topic the
    /// broker maps to MQTT `rb/kafka/{key}` (`[[kafka.to_mqtt]] mqtt_topic = "rb/kafka/{key}"`);
    /// MQTT subscribers of `rb/kafka/+` measure produce -> deliver latency and losses (against
    /// what Kafka acknowledged). --rate is per key; --addr is the MQTT broker.
    KafkaIn {
        /// Kafka keys (virtual publishers; order is checked per key).
        #[arg(long, default_value_t = 10)]
        keys: usize,
        /// MQTT subscribers, each seeing every record.
        #[arg(long, default_value_t = 1)]
        subscribers: usize,
        /// Kafka bootstrap list.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Kafka topic.
        #[arg(long, default_value = "rb-in")]
        topic: String,
        /// At --rate 0, the most records (over all keys) the producer may be ahead of the
        /// subscribers (`compare`'s kafka-in-max: 50000); unset: unbounded.
        #[arg(long)]
        ahead_max: Option<u64>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// MQTT -> Kafka: MQTT publishers on `rb/kout/i`, produced to Kafka by the broker's
    /// `[[kafka.to_kafka]]` rule (`filter = "rb/kout/+"`, key `client_id`); a Kafka consumer
    /// (all partitions, from their end at the start) measures publish -> Kafka consumer
    /// latency and losses against the PUBACKs.
    KafkaOut {
        /// MQTT publishers.
        #[arg(long, default_value_t = 10)]
        publishers: usize,
        /// Kafka bootstrap list.
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// Kafka topic.
        #[arg(long, default_value = "rb-out")]
        topic: String,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// Open many connections: connection rate, CONNACK latency, broker memory per connection.
    Conn {
        #[command(flatten)]
        target: Target,
        /// Connections (stay under the open-file limit).
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        /// Parallel connector threads.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// MQTT version.
        #[arg(long, value_enum, default_value = "3.1.1")]
        mqtt: Version,
        #[command(flatten)]
        layers: LayerArgs,
        /// Milliseconds the connections stay idle before the broker's memory is read (the
        /// broker gives freed heap back every 5 s).
        #[arg(long, default_value_t = 300)]
        settle_ms: u64,
    },
    /// Retained messages at scale: store COUNT, then broker memory, a new `#` subscriber at
    /// each QoS (time to the last message), and narrow `ret/7/+` subscribes.
    Retained {
        #[command(flatten)]
        target: Target,
        /// Retained messages to store.
        #[arg(long, default_value_t = 1_000_000)]
        count: u32,
        /// Payload bytes.
        #[arg(long, default_value_t = 64)]
        payload: usize,
        /// Branches of the topic space (`ret/<branch>/<n>`).
        #[arg(long, default_value_t = 1000)]
        branches: u32,
        /// Storing connections.
        #[arg(long, default_value_t = 4)]
        publishers: u32,
        /// QoS 1 publishes in flight per storing connection.
        #[arg(long, default_value_t = 1000)]
        window: u32,
        /// QoS of the `#` subscribers, one run each (comma-separated).
        #[arg(long, value_delimiter = ',', default_values_t = [0u8, 1])]
        subscribe_qos: Vec<u8>,
        /// Narrow subscribes measured.
        #[arg(long, default_value_t = 200)]
        rounds: u32,
    },
    /// Run the scenario matrix against ringmq, Mosquitto and rumqttd (whichever are installed)
    /// and write BENCHMARKS.md, results.json and SVG charts.
    Compare {
        /// The full matrix (QoS x payload x load shape, fan-in/out, persistent, connections,
        /// TLS and WebSocket, JSON validated, Kafka, clusters; 60 minutes for two rounds here). Default: quick.
        #[arg(long)]
        full: bool,
        /// Directory for results.json, charts and broker logs.
        #[arg(long, default_value = "bench-results")]
        out: PathBuf,
        /// The report to write.
        #[arg(long, default_value = "BENCHMARKS.md")]
        report: PathBuf,
        /// The ringmq binary (default: next to this one).
        #[arg(long)]
        ringmq: Option<PathBuf>,
        /// Core for the brokers.
        #[arg(long, default_value_t = 0)]
        broker_core: usize,
        /// Core for the load generator.
        #[arg(long, default_value_t = 1)]
        load_core: usize,
        /// Only write the report and charts again from OUT/results.json.
        #[arg(long)]
        render_only: bool,
        /// Rounds per (cell, broker), the brokers alternating within each round of a cell
        /// (default 3 quick, 2 full: under an hour here).
        #[arg(long)]
        rounds: Option<u32>,
        /// Run only these cells (comma-separated ids, e.g. fan-in,fan-in-1000) and merge
        /// their results into OUT/results.json before writing the report again.
        #[arg(long, value_delimiter = ',')]
        only: Vec<String>,
    },
    /// A trivial single-threaded MQTT relay (exact topics, no sessions): the baseline.
    Relay {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:18839")]
        listen: SocketAddr,
    },
}

fn write_json<T: serde::Serialize>(path: Option<&PathBuf>, value: &T) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The message scenarios: a topology, its load, and Kafka standing for one side.
    let (topology, args, kafka_in, kafka_out) = match cli.command {
        Command::P2p { pairs, load } => {
            (Topology::p2p(pairs, &load.client_prefix), load, None, None)
        }
        Command::FanIn {
            publishers,
            subscribers,
            shared,
            load,
        } => (
            Topology::fan_in(publishers, subscribers, shared, &load.client_prefix),
            load,
            None,
            None,
        ),
        Command::FanOut {
            publishers,
            subscribers,
            load,
        } => (
            Topology::fan_out(publishers, subscribers, &load.client_prefix),
            load,
            None,
            None,
        ),
        Command::KafkaIn {
            keys,
            subscribers,
            brokers,
            topic,
            ahead_max,
            load,
        } => (
            Topology::kafka_in(keys, subscribers, &load.client_prefix),
            load,
            Some(tools::loadgen::kafka::KafkaIn {
                brokers,
                topic,
                like_bridge: false,
                ahead_max,
            }),
            None,
        ),
        Command::KafkaOut {
            publishers,
            brokers,
            topic,
            load,
        } => (
            Topology::kafka_out(publishers, &load.client_prefix),
            load,
            None,
            Some(tools::loadgen::kafka::KafkaOut { brokers, topic }),
        ),
        Command::Conn {
            target,
            clients,
            workers,
            mqtt,
            layers,
            settle_ms,
        } => {
            let report = run_conn(&ConnLoad {
                addr: target.addr,
                clients,
                workers,
                version: mqtt.into(),
                broker_pid: target.broker_pid,
                prefix: target.client_prefix,
                layers: layers.layers()?,
                settle: Duration::from_millis(settle_ms),
            })?;
            print!("{}", report.table());
            return write_json(target.json.as_ref(), &report);
        }
        Command::Compare {
            full,
            out,
            report,
            ringmq,
            broker_core,
            load_core,
            render_only,
            only,
            rounds,
        } => {
            let bench = std::env::current_exe()?;
            let ringmq = ringmq.unwrap_or_else(|| bench.with_file_name("ringmq"));
            if !ringmq.exists() && !render_only {
                anyhow::bail!(
                    "{} not found: cargo build --release -p ringmq",
                    ringmq.display()
                );
            }
            let cfg = tools::compare::CompareConfig {
                mode: if full {
                    tools::compare::Mode::Full
                } else {
                    tools::compare::Mode::Quick
                },
                out,
                report,
                ringmq,
                bench,
                broker_core,
                load_core,
                only,
                rounds: rounds.unwrap_or(if full { 2 } else { 3 }).clamp(1, 20),
            };
            if render_only {
                tools::compare::render(&cfg)?;
            } else {
                tools::compare::compare(&cfg)?;
            }
            eprintln!("wrote {} and {}", cfg.report.display(), cfg.out.display());
            return Ok(());
        }
        Command::Retained {
            target,
            count,
            payload,
            branches,
            publishers,
            window,
            subscribe_qos,
            rounds,
        } => {
            let subscribe_qos = subscribe_qos
                .into_iter()
                .map(|q| match q {
                    0 => Ok(QoS::AtMostOnce),
                    1 => Ok(QoS::AtLeastOnce),
                    _ => Err(anyhow::anyhow!("--subscribe-qos: {q}: 0 or 1")),
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let report = run_retained(&RetainedLoad {
                addr: target.addr,
                count,
                payload_bytes: payload,
                branches: branches.max(1),
                publishers: publishers.max(1),
                window: window.clamp(1, 60_000),
                subscribe_qos,
                rounds,
                broker_pid: target.broker_pid,
                prefix: target.client_prefix,
            })?;
            print!("{}", report.table());
            return write_json(target.json.as_ref(), &report);
        }
        Command::Relay { listen } => {
            let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            signal_stop(&stop);
            eprintln!("ringmq-bench relay listening on {listen}");
            return tools::relay::run(listen, stop);
        }
    };
    let mut load = args.load()?;
    load.kafka_in = kafka_in;
    load.kafka_out = kafka_out;
    let report = run(&topology, &load)?;
    print!("{}", report.table());
    write_json(args.json.as_ref(), &report)
}

/// SIGINT/SIGTERM end the relay (its loop checks the flag every 100 ms).
fn signal_stop(stop: &std::sync::Arc<std::sync::atomic::AtomicBool>) {
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
}
