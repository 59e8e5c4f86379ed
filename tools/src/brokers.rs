//! The brokers `ringmq-bench compare` runs: which ones this machine has, in which cells each
//! runs ([`Broker::runs_in`]), how each is started on 127.0.0.1 pinned to the broker core
//! (with the servers it needs fresh per run on the load generator's core: a redis-server for
//! the Redis-backed ones, a tansu for the Kafka bridge and the clusters, whose other nodes
//! share the broker core) and stopped, its scratch directories removed; listening over plain
//! TCP, TLS or WebSocket.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;

use crate::certs::ServerCerts;
use crate::compare::{CompareConfig, Mode};
use crate::peer_conf;

/// How a cell's clients reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain TCP.
    Tcp,
    /// TLS (1.3 negotiated) with a throwaway CA's certificate for 127.0.0.1
    /// ([`crate::certs`]).
    Tls,
    /// WebSocket on [`WS_PATH`].
    Ws,
}

/// The request path of the WebSocket cells.
pub const WS_PATH: &str = "/mqtt";

/// The Kafka topic the MQTT -> Kafka cells' records go to (as `ringmq-bench kafka-out`'s).
pub const KAFKA_OUT_TOPIC: &str = "rb-out";

/// The Kafka topic the Kafka -> MQTT cells' records come from (as `ringmq-bench kafka-in`'s).
pub const KAFKA_IN_TOPIC: &str = "rb-in";

/// What a cell needs of the broker it starts.
#[derive(Debug, Clone, Copy)]
pub struct Setup<'a> {
    /// How the clients reach it.
    pub transport: Transport,
    /// The server certificate of a TLS cell.
    pub certs: Option<&'a ServerCerts>,
    /// A Kafka (tansu) beside it and the bridge's rules: MQTT `rb/kout/+` to
    /// [`KAFKA_OUT_TOPIC`], [`KAFKA_IN_TOPIC`] to MQTT `rb/kafka/{key}`.
    pub kafka: bool,
    /// The cell's subscriber is a Kafka consumer (MQTT -> Kafka).
    pub kafka_out: bool,
    /// The cell's payloads are the JSON object `benches/asyncapi/p2p.yaml` declares.
    pub json: bool,
    /// The cell's sessions are persistent.
    pub persistent: bool,
    /// The cell's clients spread over a cluster of this many nodes (1: one broker).
    pub nodes: usize,
    /// The relay can serve the cell: exact topics, nobody going offline.
    pub relayable: bool,
}

impl Broker {
    /// Why a peer (mosquitto, rumqttd) is not run in a cell that needs `s`, for its table
    /// row; None when it runs there, or for ringmq's own variants and the baselines.
    pub fn not_run_because(self, s: &Setup<'_>) -> Option<&'static str> {
        if !matches!(self, Broker::Mosquitto | Broker::Rumqttd) || self.runs_in(s) {
            return None;
        }
        Some(if s.kafka {
            "it has no Kafka bridge"
        } else if s.nodes > 1 {
            "it has no cluster over Kafka"
        } else {
            "this runner sets up no TLS or WebSocket listener for it"
        })
    }

    /// Runs in a cell that needs `s`: the one rule the runner skips by and [`start`]
    /// checks.
    pub fn runs_in(self, s: &Setup<'_>) -> bool {
        (self != Broker::Relay || s.relayable)
            && (!self.persistent_only() || s.persistent)
            && (!self.json_only() || s.json)
            && self.speaks(s.transport)
            && (!s.kafka || self.bridges_kafka())
            && (!self.kafka_out_only() || s.kafka_out)
            && (s.nodes == 1 || self.clusters(s.nodes))
            && (!self.cluster_only() || s.nodes == self.nodes())
    }
}

/// A broker under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Broker {
    /// The trivial relay (baseline; exact topics only).
    Relay,
    /// ringmq with one shard.
    Ringmq1,
    /// ringmq with two shards (both cores: shares the load generator's core).
    Ringmq2,
    /// ringmq with one shard and `durability sync` (every persistent session's messages on
    /// disk before their PUBACK): only the cells with persistent sessions.
    RingmqSync,
    /// ringmq with one shard and the Redis store (`--store redis`, a redis-server with
    /// `appendfsync always`): only the cells with persistent sessions.
    RingmqRedis,
    /// aedes with aedes-persistence-redis (`tools/peers/aedes`, Node.js), on the same kind of
    /// redis-server: only the cells with persistent sessions.
    AedesRedis,
    /// ringmq with one shard validating every payload against an AsyncAPI document
    /// (`benches/asyncapi/p2p.yaml`): only the cells with JSON payloads.
    RingmqAsyncapi,
    /// ringmq with one shard, `durability sync` and the MQTT -> Kafka rule's `ack = "local"`
    /// (the PUBACK leaves once the record is in the local log on disk; the bridge delivers
    /// from the log): only the MQTT -> Kafka cells, beside `ringmq-1shard`'s `ack = "kafka"`.
    RingmqKafkaLocal,
    /// No broker: the generator's own rdkafka producer writes the same stamped records
    /// straight to Kafka (the "other strategy" beside an MQTT bridge): only the MQTT ->
    /// Kafka cells.
    KafkaDirect,
    /// Two ringmq nodes (one shard each, both on the broker core) clustered over a tansu:
    /// the publishers on node a, the subscribers on node b: only the two-node cluster cells.
    RingmqCluster2,
    /// Three such nodes, publisher i on node i mod 3 and its subscriber on the next: only
    /// the three-node cluster cells.
    RingmqCluster3,
    /// Mosquitto (Debian package).
    Mosquitto,
    /// rumqttd (cargo install rumqttd).
    Rumqttd,
}

impl Broker {
    /// Every broker, in the tables' order.
    pub const ALL: [Broker; 13] = [
        Broker::Relay,
        Broker::Ringmq1,
        Broker::Ringmq2,
        Broker::RingmqAsyncapi,
        Broker::RingmqSync,
        Broker::RingmqRedis,
        Broker::AedesRedis,
        Broker::RingmqKafkaLocal,
        Broker::KafkaDirect,
        Broker::RingmqCluster2,
        Broker::RingmqCluster3,
        Broker::Mosquitto,
        Broker::Rumqttd,
    ];

    /// The name in tables, charts and `results.json`.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Relay => "relay",
            Broker::Ringmq1 => "ringmq-1shard",
            Broker::Ringmq2 => "ringmq-2shards",
            Broker::RingmqSync => "ringmq-sync",
            Broker::RingmqRedis => "ringmq-redis",
            Broker::AedesRedis => "aedes-redis",
            Broker::RingmqAsyncapi => "ringmq-asyncapi",
            Broker::RingmqKafkaLocal => "ringmq-kafka-local",
            Broker::KafkaDirect => "rdkafka-direct",
            Broker::RingmqCluster2 => "ringmq-cluster-2nodes",
            Broker::RingmqCluster3 => "ringmq-cluster-3nodes",
            Broker::Mosquitto => "mosquitto",
            Broker::Rumqttd => "rumqttd",
        }
    }

    /// Keeps sessions in a store that survives it: run only in the cells with persistent
    /// sessions (the durable cost beside the in-memory brokers).
    pub fn persistent_only(self) -> bool {
        matches!(
            self,
            Broker::RingmqSync | Broker::RingmqRedis | Broker::AedesRedis
        )
    }

    /// Bridges MQTT and Kafka: run in the Kafka cells (no other broker here has a Kafka
    /// bridge).
    pub fn bridges_kafka(self) -> bool {
        matches!(
            self,
            Broker::Ringmq1 | Broker::RingmqKafkaLocal | Broker::KafkaDirect
        )
    }

    /// The processes [`start`] runs beside it whose CPU a run measures, in the order of
    /// [`Running::helper_pids`] (`kafka`: a Kafka cell), for the report's " + N name".
    pub fn helper_names(self, kafka: bool) -> &'static [&'static str] {
        match self {
            Broker::RingmqCluster2 => &["tansu", "node a"],
            Broker::RingmqCluster3 => &["tansu", "node b", "node c"],
            _ if kafka => &["tansu"],
            _ => &["Redis"],
        }
    }

    /// Its nodes: 2 or 3 for a cluster, else 1.
    pub fn nodes(self) -> usize {
        match self {
            Broker::RingmqCluster2 => 2,
            Broker::RingmqCluster3 => 3,
            _ => 1,
        }
    }

    /// Runs in a cluster cell of `nodes` nodes: that cluster, and one node as the
    /// reference.
    pub fn clusters(self, nodes: usize) -> bool {
        self == Broker::Ringmq1 || self.nodes() == nodes
    }

    /// Runs only in the cluster cells.
    pub fn cluster_only(self) -> bool {
        self.nodes() > 1
    }

    /// Runs only in the MQTT -> Kafka cells.
    pub fn kafka_out_only(self) -> bool {
        matches!(self, Broker::RingmqKafkaLocal | Broker::KafkaDirect)
    }

    /// Validates JSON payloads: run only in the cells whose payloads are JSON.
    pub fn json_only(self) -> bool {
        self == Broker::RingmqAsyncapi
    }

    /// Can listen over `transport` here (the relay speaks plain TCP only; aedes' TLS and
    /// WebSocket listeners are not set up by this runner).
    pub fn speaks(self, transport: Transport) -> bool {
        match self {
            Broker::Ringmq1 | Broker::Ringmq2 | Broker::Mosquitto | Broker::Rumqttd => true,
            Broker::Relay
            | Broker::KafkaDirect
            | Broker::RingmqKafkaLocal
            | Broker::RingmqCluster2
            | Broker::RingmqCluster3
            | Broker::RingmqSync
            | Broker::RingmqRedis
            | Broker::RingmqAsyncapi
            | Broker::AedesRedis => transport == Transport::Tcp,
        }
    }

    /// Needs a redis-server of its own.
    fn redis(self) -> bool {
        matches!(self, Broker::RingmqRedis | Broker::AedesRedis)
    }
}

/// The AsyncAPI document `ringmq-asyncapi` validates the P2P JSON payloads against.
fn asyncapi_doc() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../benches/asyncapi/p2p.yaml")
}

/// aedes and its Redis persistence, installed by `npm ci` there.
fn aedes_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("peers/aedes")
}

fn on_path(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The brokers this machine can run in `mode`.
pub fn available(mode: Mode) -> Vec<Broker> {
    let mut brokers = vec![Broker::Relay, Broker::Ringmq1];
    if mode == Mode::Full {
        brokers.push(Broker::Ringmq2);
        brokers.push(Broker::RingmqAsyncapi);
        brokers.push(Broker::RingmqSync);
        if on_path("redis-server") {
            brokers.push(Broker::RingmqRedis);
            if on_path("node") && aedes_dir().join("node_modules/aedes").is_dir() {
                brokers.push(Broker::AedesRedis);
            }
        }
        if has_tansu() {
            brokers.push(Broker::RingmqKafkaLocal);
            brokers.push(Broker::KafkaDirect);
            brokers.push(Broker::RingmqCluster2);
            brokers.push(Broker::RingmqCluster3);
        }
    }
    if on_path("mosquitto") {
        brokers.push(Broker::Mosquitto);
    }
    if on_path("rumqttd") {
        brokers.push(Broker::Rumqttd);
    }
    brokers
}

/// A process of a run and the name of its output file in the results directory.
#[derive(Debug)]
struct Process {
    child: Child,
    log: String,
}

/// A started broker: its process, the servers beside it (a redis-server, a tansu, a cluster's
/// other nodes), the directories to remove. Dropped (or stopped), it stops the broker, then
/// the others in the reverse of their start (a node before the tansu it flushes to), and
/// removes the directories.
#[derive(Debug)]
pub struct Running {
    child: Option<Process>,
    helpers: Vec<Process>,
    dirs: Vec<PathBuf>,
    kafka_port: Option<u16>,
    /// Where the publishers connect when not to the broker's port (a cluster's node a).
    pub_port: Option<u16>,
    /// The nodes the clients spread over (a three-node cluster; else empty).
    node_ports: Vec<u16>,
}

impl Running {
    /// The broker's process id (its CPU and RSS are measured; none for `rdkafka-direct`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|p| p.child.id())
    }

    /// The processes beside the broker whose CPU counts with it (its redis-server or tansu).
    pub fn helper_pids(&self) -> Vec<u32> {
        self.helpers.iter().map(|p| p.child.id()).collect()
    }

    /// Where the publishers connect, if not to the broker's own port.
    pub fn pub_addr(&self) -> Option<SocketAddr> {
        self.pub_port.map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
    }

    /// The nodes the clients spread over (empty: one address).
    pub fn node_addrs(&self) -> Vec<SocketAddr> {
        self.node_ports
            .iter()
            .map(|&p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect()
    }

    /// The bootstrap address of the Kafka beside it.
    pub fn kafka_brokers(&self) -> Option<String> {
        self.kafka_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// Which process of the run ended, if one did, how, and where its output is (a run's
    /// error then says so).
    pub fn exited(&mut self) -> Option<String> {
        self.child
            .iter_mut()
            .chain(self.helpers.iter_mut())
            .find_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some(format!("{status}; its output: {}", p.log)),
                _ => None,
            })
    }

    /// Stops the broker, then the servers beside it, and removes their directories.
    pub fn stop(self) {
        drop(self);
    }
}

impl Drop for Running {
    /// Also when a run panics: nothing outlives the comparison.
    fn drop(&mut self) {
        if let Some(p) = self.child.take() {
            stop(p.child);
        }
        for p in self.helpers.drain(..).rev() {
            stop(p.child);
        }
        for dir in self.dirs.drain(..) {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn wait_for_port(addr: SocketAddr, child: &mut Child) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A connection that met itself (source port = the probed port, TCP simultaneous open)
    // is not the broker listening.
    while !TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok()) {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("exited during start-up: {status}");
        }
        if Instant::now() > deadline {
            anyhow::bail!("did not listen within 10 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A scratch directory of the run's own outside the results (`what`: its use), emptied.
fn scratch(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-bench-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Spawns `cmd` with its output in `log`, and waits until it listens on `port`.
fn spawn(mut cmd: Command, log: PathBuf, port: u16, what: &str) -> anyhow::Result<Child> {
    let log = std::fs::File::create(log)?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {what}"))?;
    if let Err(e) = wait_for_port(SocketAddr::from(([127, 0, 0, 1], port)), &mut child) {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.context(what.to_string()));
    }
    Ok(child)
}

/// A fresh redis-server on the load generator's core: no snapshots, an append-only file
/// fsynced before every reply (`appendfsync always`, as in BENCHMARKS.md "The Redis store").
fn start_redis(cfg: &CompareConfig, dir: &std::path::Path) -> anyhow::Result<(Process, u16)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cfg.load_core.to_string(), "redis-server"])
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args([
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ])
        .arg("--dir")
        .arg(dir);
    let child = spawn(cmd, cfg.out.join("redis-server.log"), port, "redis-server")?;
    let log = "redis-server.log".into();
    Ok((Process { child, log }, port))
}

/// A fresh tansu (Kafka protocol, in memory) on the load generator's core.
fn start_tansu(cfg: &CompareConfig, dir: &std::path::Path) -> anyhow::Result<(Process, u16)> {
    std::fs::create_dir_all(dir)?;
    let port = free_port();
    let url = format!("tcp://127.0.0.1:{port}");
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cfg.load_core.to_string()])
        .arg(tansu_bin())
        .args(["broker", "--listener-url", &url])
        .args(["--advertised-listener-url", &url])
        .args(["--storage-engine", "memory://tansu/"])
        .current_dir(dir);
    let child = spawn(cmd, cfg.out.join("tansu.log"), port, "tansu")?;
    let log = "tansu.log".into();
    Ok((Process { child, log }, port))
}

/// tansu runs here (the Kafka and cluster cells need it).
pub fn has_tansu() -> bool {
    Command::new(tansu_bin())
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// tansu: `$TANSU`, else cargo's bin directory, else the path.
pub(crate) fn tansu_bin() -> PathBuf {
    if let Some(t) = std::env::var_os("TANSU") {
        return t.into();
    }
    let cargo = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
        .join(".cargo/bin/tansu");
    if cargo.exists() {
        cargo
    } else {
        "tansu".into()
    }
}

/// `nodes` (2 or 3) ringmq nodes clustered over a fresh tansu (on the generator's core), all
/// on the broker core with one shard, named a, b, c. Two nodes: node b listens on `port` (the
/// subscribers'; measured as the broker), node a elsewhere (the publishers'). Three: node a
/// listens on `port` (measured), the clients spread over all three ([`Running::nodes`]). The
/// other nodes' CPU is counted beside tansu's, in that order. Kafka as in BENCHMARKS.md's
/// hand-run cluster section: 4 partitions, `linger_ms` 1.
fn start_cluster(
    cfg: &CompareConfig,
    port: u16,
    mut running: Running,
    nodes: usize,
) -> anyhow::Result<Running> {
    let dir = scratch("cluster");
    running.dirs.push(dir.clone());
    let (tansu, kafka) = start_tansu(cfg, &dir.join("tansu"))?;
    running.helpers.push(tansu);
    running.kafka_port = Some(kafka);
    let measured = usize::from(nodes == 2);
    let ports: Vec<u16> = (0..nodes)
        .map(|i| if i == measured { port } else { free_port() })
        .collect();
    for (i, (node, &listen)) in ["a", "b", "c"].iter().zip(&ports).enumerate() {
        let conf = cfg.out.join(format!("ringmq-node-{node}.toml"));
        std::fs::write(
            &conf,
            format!(
                "[kafka]\nbrokers = \"127.0.0.1:{kafka}\"\npartitions = 4\nlinger_ms = 1\n\n\
                 [cluster]\nnode_id = \"{node}\"\n"
            ),
        )?;
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", &cfg.broker_core.to_string()])
            .arg(&cfg.ringmq)
            .arg("--config")
            .arg(&conf)
            .args(["--listen", &format!("127.0.0.1:{listen}")])
            .args(["--shards", "1", "--durability", "memory", "--log", "warn"])
            .args(["--session-queue-count-max", "100000", "--data-dir"])
            .arg(dir.join(node));
        let log = format!("ringmq-node-{node}.log");
        let child = spawn(
            cmd,
            cfg.out.join(&log),
            listen,
            &format!("ringmq node {node}"),
        )?;
        let process = Process { child, log };
        if i == measured {
            running.child = Some(process);
        } else {
            running.helpers.push(process);
        }
    }
    if nodes == 2 {
        running.pub_port = ports.first().copied();
    } else {
        running.node_ports = ports;
    }
    Ok(running)
}

/// Creates `topic` with `partitions` on the tansu listening on `port` (its own CLI).
fn create_topic(port: u16, topic: &str, partitions: u32) -> anyhow::Result<()> {
    let out = Command::new(tansu_bin())
        .args(["topic", "create", topic, "--broker"])
        .arg(format!("tcp://127.0.0.1:{port}"))
        .args(["--partitions", &partitions.to_string()])
        .output()
        .context("run tansu topic create")?;
    anyhow::ensure!(
        out.status.success(),
        "tansu topic create {topic}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(())
}

/// The ringmq configuration file of the Kafka cells: the bridge both ways, topics created
/// at start; `ack` the MQTT -> Kafka rule's (`kafka` or `local`).
fn kafka_rules(cfg: &CompareConfig, kafka_port: u16, ack: &str) -> anyhow::Result<PathBuf> {
    let path = cfg.out.join(format!("ringmq-kafka-{ack}.toml"));
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{kafka_port}\"\ncreate_topics = true\npartitions = 8\n\n\
             [[kafka.to_kafka]]\nfilter = \"rb/kout/+\"\ntopic = \"{KAFKA_OUT_TOPIC}\"\nkey = \"client_id\"\nack = \"{ack}\"\n\n\
             [[kafka.to_mqtt]]\ntopic = \"{KAFKA_IN_TOPIC}\"\nmqtt_topic = \"rb/kafka/{{key}}\"\nqos = 1\n"
        ),
    )?;
    Ok(path)
}

/// Starts `broker` listening on `port` as `setup` asks.
pub fn start(
    cfg: &CompareConfig,
    broker: Broker,
    port: u16,
    setup: Setup<'_>,
) -> anyhow::Result<Running> {
    anyhow::ensure!(
        broker.runs_in(&setup),
        "{} is not run in this cell ({setup:?})",
        broker.name()
    );
    let Setup {
        transport,
        certs,
        kafka,
        ..
    } = setup;
    let tls = match (transport, certs) {
        (Transport::Tls, Some(c)) => Some(c),
        (Transport::Tls, None) => anyhow::bail!("a TLS cell without certificates"),
        _ => None,
    };
    let cores = if broker == Broker::Ringmq2 {
        format!("{},{}", cfg.broker_core, cfg.load_core)
    } else {
        cfg.broker_core.to_string()
    };
    let listen = format!("127.0.0.1:{port}");
    // Whatever is started is stopped, and its directories removed, if a later step fails.
    let mut running = Running {
        child: None,
        helpers: Vec::new(),
        dirs: Vec::new(),
        kafka_port: None,
        pub_port: None,
        node_ports: Vec::new(),
    };
    if broker.nodes() > 1 {
        return start_cluster(cfg, port, running, broker.nodes());
    }
    let mut redis_port = 0;
    if broker.redis() {
        let dir = scratch("redis");
        running.dirs.push(dir.clone());
        let (child, port) = start_redis(cfg, &dir)?;
        running.helpers.push(child);
        redis_port = port;
    }
    if kafka {
        let dir = scratch("tansu");
        running.dirs.push(dir.clone());
        let (child, port) = start_tansu(cfg, &dir)?;
        running.helpers.push(child);
        running.kafka_port = Some(port);
        if broker == Broker::KafkaDirect {
            // No broker creates the topic the producer writes to.
            create_topic(port, KAFKA_OUT_TOPIC, 8)?;
            return Ok(running);
        }
    }
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", &cores]);
    // ringmq over TLS or WebSocket keeps a plain listener elsewhere.
    let plain_port = match transport {
        Transport::Tcp => port,
        Transport::Tls | Transport::Ws => free_port(),
    };
    let plain = format!("127.0.0.1:{plain_port}");
    let ringmq = |cmd: &mut Command, shards: &str| {
        cmd.arg(&cfg.ringmq).args([
            "--listen",
            &plain,
            "--shards",
            shards,
            "--log",
            "warn",
            "--session-queue-count-max",
            "100000",
        ]);
        if let Some(c) = tls {
            cmd.args(["--tls-listen", &listen, "--tls-cert"])
                .arg(&c.cert)
                .arg("--tls-key")
                .arg(&c.key);
        }
        if transport == Transport::Ws {
            cmd.args(["--ws-listen", &listen, "--ws-path", WS_PATH]);
        }
    };
    match broker {
        Broker::Relay => {
            cmd.arg(&cfg.bench).args(["relay", "--listen", &listen]);
        }
        Broker::Ringmq1 | Broker::Ringmq2 => {
            ringmq(&mut cmd, if broker == Broker::Ringmq1 { "1" } else { "2" });
            // Like mosquitto's and rumqttd's defaults: no disk.
            cmd.args(["--durability", "memory"]);
            if let Some(p) = running.kafka_port {
                cmd.arg("--config").arg(kafka_rules(cfg, p, "kafka")?);
            }
        }
        Broker::RingmqKafkaLocal => {
            let Some(p) = running.kafka_port else {
                anyhow::bail!("ringmq-kafka-local runs only in the Kafka cells");
            };
            let data = scratch("kafka-local");
            ringmq(&mut cmd, "1");
            cmd.args(["--durability", "sync", "--data-dir"])
                .arg(&data)
                .arg("--config")
                .arg(kafka_rules(cfg, p, "local")?);
            running.dirs.push(data);
        }
        Broker::RingmqAsyncapi => {
            ringmq(&mut cmd, "1");
            cmd.args(["--durability", "memory", "--asyncapi"])
                .arg(asyncapi_doc());
        }
        Broker::RingmqSync => {
            let data = scratch("sync");
            ringmq(&mut cmd, "1");
            cmd.args(["--durability", "sync", "--data-dir"]).arg(&data);
            running.dirs.push(data);
        }
        Broker::RingmqRedis => {
            let data = scratch("redis-data");
            ringmq(&mut cmd, "1");
            cmd.args(["--durability", "sync", "--store", "redis", "--redis-url"])
                .arg(format!("redis://127.0.0.1:{redis_port}"))
                .arg("--data-dir")
                .arg(&data);
            running.dirs.push(data);
        }
        Broker::KafkaDirect => anyhow::bail!("rdkafka-direct runs only in the Kafka cells"),
        Broker::RingmqCluster2 | Broker::RingmqCluster3 => {
            anyhow::bail!("started by start_cluster")
        }
        Broker::AedesRedis => {
            cmd.arg("node")
                .arg(aedes_dir().join("server.js"))
                .args([port.to_string(), redis_port.to_string()]);
        }
        Broker::Mosquitto => {
            let conf = cfg.out.join("mosquitto.conf");
            let text = peer_conf::mosquitto(port, plain_port, tls, transport == Transport::Ws);
            std::fs::write(&conf, text)?;
            cmd.arg("mosquitto").arg("-c").arg(conf);
        }
        Broker::Rumqttd => {
            let conf = cfg.out.join("rumqttd.toml");
            std::fs::write(
                &conf,
                peer_conf::rumqttd(&listen, &plain, tls, transport == Transport::Ws),
            )?;
            cmd.arg("rumqttd").arg("-q").arg("-c").arg(conf);
        }
    }
    let log = cfg.out.join(format!("{}.log", broker.name()));
    running.child = Some(Process {
        child: spawn(cmd, log, port, broker.name())?,
        log: format!("{}.log", broker.name()),
    });
    Ok(running)
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A port free now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(18_900, |a| a.port())
}
