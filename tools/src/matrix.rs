//! The scenario matrix `ringmq-bench compare` runs: each cell a topology and a load (or a
//! connection count), quick or full.

use std::net::SocketAddr;
use std::time::Duration;

use net::codec::{ProtocolVersion, QoS};

use crate::brokers::{Setup, Transport, KAFKA_IN_TOPIC, KAFKA_OUT_TOPIC};
use crate::certs::ServerCerts;
use crate::compare::Mode;
use crate::loadgen::kafka::{KafkaIn, KafkaOut};
use crate::loadgen::topology::Topology;
use crate::loadgen::Load;

#[derive(Debug, Clone)]
pub(crate) enum Work {
    Messages(Box<Topology>, Box<Load>),
    Connections(usize),
}

#[derive(Debug, Clone)]
pub(crate) struct Cell {
    pub(crate) id: String,
    pub(crate) title: String,
    pub(crate) work: Work,
    pub(crate) transport: Transport,
}

impl Cell {
    /// What the cell needs of a broker (which brokers run it, and how each is started).
    pub(crate) fn setup<'a>(&self, certs: Option<&'a ServerCerts>) -> Setup<'a> {
        let load = match &self.work {
            Work::Messages(t, l) => Some((t, l)),
            Work::Connections(_) => None,
        };
        Setup {
            transport: self.transport,
            certs,
            kafka: self.kafka(),
            kafka_out: self.kafka_out(),
            json: self.json(),
            persistent: load.is_some_and(|(_, l)| l.persistent),
            nodes: self.cluster_nodes().unwrap_or(1),
            // The relay keeps no sessions: a floor for steady persistent cells (nobody
            // offline), not for one where subscribers go away; exact topics only.
            relayable: load.is_some_and(|(t, l)| t.name == "p2p" && l.offline.is_none()),
        }
    }

    /// A long cell (memory drawn over time, `soak-5000`) runs in the first round only: what
    /// it shows is a curve, not a figure whose spread over rounds means much, and a second
    /// round of it would cost the study six minutes.
    pub(crate) fn first_round_only(&self) -> bool {
        matches!(&self.work, Work::Messages(_, l) if l.duration.as_secs_f64() >= LONG_SECONDS)
    }

    /// One of the 24 QoS x payload cells ([`grid_id`]).
    pub(crate) fn in_grid(&self) -> bool {
        ["max", "30k"].iter().any(|kind| {
            (0..=2u8).any(|q| {
                GRID_PAYLOADS
                    .iter()
                    .any(|&p| self.id == grid_id(kind, q, p))
            })
        })
    }

    /// It runs through Kafka (a tansu beside the broker).
    pub(crate) fn kafka(&self) -> bool {
        matches!(&self.work, Work::Messages(_, l) if l.kafka_in.is_some() || l.kafka_out.is_some())
    }

    /// The nodes of the cluster its clients spread over (ids `cluster-N-*`); None: not a
    /// cluster cell.
    pub(crate) fn cluster_nodes(&self) -> Option<usize> {
        let rest = self.id.strip_prefix("cluster-")?;
        rest.split('-').next()?.parse().ok()
    }

    /// Its subscriber is a Kafka consumer (MQTT -> Kafka).
    pub(crate) fn kafka_out(&self) -> bool {
        matches!(&self.work, Work::Messages(_, l) if l.kafka_out.is_some())
    }

    /// Its payloads are the 10-field JSON object `benches/asyncapi/p2p.yaml` declares
    /// (`ringmq-asyncapi`, validating them, runs only in such cells).
    pub(crate) fn json(&self) -> bool {
        matches!(&self.work, Work::Messages(_, l) if l.json)
    }
}

fn msgs(topology: Topology, load: Load) -> Work {
    Work::Messages(Box::new(topology), Box::new(load))
}

/// A load of the matrix's defaults (the address is filled in per run).
pub(crate) fn load(qos: QoS, payload: usize, rate: f64, seconds: f64) -> Load {
    Load {
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        pub_addr: None,
        nodes: Vec::new(),
        other_pids: Vec::new(),
        qos,
        payload_bytes: payload,
        json: false,
        rate,
        inflight: 64,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(seconds),
        drain: Duration::from_secs(5),
        version: ProtocolVersion::V311,
        broker_pid: None,
        persistent: false,
        offline: None,
        kafka_in: None,
        kafka_out: None,
        layers: Default::default(),
    }
}

/// The phases of the TBMQ-shaped cells: offered load (5,000 publishers) and msg/s each.
pub(crate) const TBMQ_PHASES: [(&str, f64); 4] =
    [("25k", 5.0), ("50k", 10.0), ("100k", 20.0), ("200k", 40.0)];

/// Seconds of the long cell (`soak-5000`) whose broker memory is drawn over time.
const SOAK_SECONDS: f64 = 45.0;

/// A cell measuring at least this long is a long one (`Cell::first_round_only`).
const LONG_SECONDS: f64 = 30.0;

/// The payloads of the QoS x payload cells.
pub(crate) const GRID_PAYLOADS: [usize; 4] = [16, 64, 1024, 16384];

/// The id of the QoS x payload cell of `kind` (`max`: max rate, `30k`: 30k msg/s offered),
/// QoS `q` and `payload` bytes.
pub(crate) fn grid_id(kind: &str, q: u8, payload: usize) -> String {
    format!("p2p-{kind}-q{q}-{payload}")
}

/// Seconds measured in each of the 24 QoS x payload cells (120 runs a round with rumqttd,
/// about 10 minutes at 3 s each).
const GRID_SECONDS: f64 = 3.0;

/// Seconds measured in the TBMQ phases, 5,000 pairs, the Kafka and cluster cells (the
/// headline P2P cells measure 8, the long run 45).
const MEASURED_SECONDS: f64 = 5.0;

/// Seconds measured in the fan-in / fan-out, TLS, WebSocket and JSON cells.
const TOPOLOGY_SECONDS: f64 = 4.0;

fn qos_of(q: u8) -> QoS {
    QoS::from_bits(q).unwrap_or(QoS::AtLeastOnce)
}

pub(crate) fn matrix(mode: Mode) -> Vec<Cell> {
    let p2p = |n| Topology::p2p(n, "cmp");
    let mut cells = vec![
        Cell {
            transport: Transport::Tcp,
            id: "p2p-max".into(),
            title: "P2P, 100 pairs, QoS 1, 64 B, max rate".into(),
            work: msgs(
                p2p(100),
                load(
                    QoS::AtLeastOnce,
                    64,
                    0.0,
                    if mode == Mode::Quick { 3.0 } else { 8.0 },
                ),
            ),
        },
        Cell {
            transport: Transport::Tcp,
            id: "p2p-30k".into(),
            title: "P2P, 100 pairs, QoS 1, 64 B, 30k msg/s offered".into(),
            work: msgs(
                p2p(100),
                load(
                    QoS::AtLeastOnce,
                    64,
                    300.0,
                    if mode == Mode::Quick { 3.0 } else { 8.0 },
                ),
            ),
        },
        Cell {
            transport: Transport::Tcp,
            id: "p2p-1000-qos0".into(),
            title: "P2P, 1000 pairs, QoS 0, 64 B, 20 msg/s each".into(),
            work: msgs(p2p(1000), load(QoS::AtMostOnce, 64, 20.0, 3.0)),
        },
    ];
    if mode == Mode::Quick {
        return cells;
    }
    for q in 0..=2u8 {
        for payload in GRID_PAYLOADS {
            cells.push(Cell {
                transport: Transport::Tcp,
                id: grid_id("max", q, payload),
                title: format!("P2P, 100 pairs, QoS {q}, {payload} B, max rate"),
                work: msgs(p2p(100), load(qos_of(q), payload, 0.0, GRID_SECONDS)),
            });
            cells.push(Cell {
                transport: Transport::Tcp,
                id: grid_id("30k", q, payload),
                title: format!("P2P, 100 pairs, QoS {q}, {payload} B, 30k msg/s offered"),
                work: msgs(p2p(100), load(qos_of(q), payload, 300.0, GRID_SECONDS)),
            });
        }
    }
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "p2p-5000".into(),
        title: "P2P, 5000 pairs, QoS 1, 64 B, 30 msg/s each (150k msg/s)".into(),
        work: msgs(
            p2p(5000),
            load(QoS::AtLeastOnce, 64, 30.0, MEASURED_SECONDS),
        ),
    });
    // The TBMQ shape: persistent device clients (5,000 pairs, QoS 1, 64 B), phases of rising
    // offered load.
    for (label, rate) in TBMQ_PHASES {
        let mut phase = load(QoS::AtLeastOnce, 64, rate, MEASURED_SECONDS);
        phase.persistent = true;
        cells.push(Cell {
            transport: Transport::Tcp,
            id: format!("tbmq-{label}"),
            title: format!(
                "TBMQ shape: 5000 persistent device pairs, QoS 1, 64 B, {rate} msg/s each ({label} msg/s offered)"
            ),
            work: msgs(p2p(5000), phase),
        });
    }
    // A long run of the middle phase: the brokers' memory over time.
    let mut soak = load(QoS::AtLeastOnce, 64, 10.0, SOAK_SECONDS);
    soak.persistent = true;
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "soak-5000".into(),
        title: format!(
            "Over time: 5000 persistent device pairs, QoS 1, 64 B, 10 msg/s each, {SOAK_SECONDS:.0} s"
        ),
        work: msgs(p2p(5000), soak),
    });
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "fan-in".into(),
        title: "Fan-in, 100 publishers -> 2 subscribers, QoS 1, 64 B, max rate".into(),
        work: msgs(
            Topology::fan_in(100, 2, false, "cmp"),
            load(QoS::AtLeastOnce, 64, 0.0, TOPOLOGY_SECONDS),
        ),
    });
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "fan-in-1000".into(),
        title: "Fan-in, 1000 publishers -> 1 subscriber, QoS 1, 64 B, max rate".into(),
        work: msgs(
            Topology::fan_in(1000, 1, false, "cmp"),
            load(QoS::AtLeastOnce, 64, 0.0, TOPOLOGY_SECONDS),
        ),
    });
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "fan-in-shared".into(),
        title: "Fan-in, 100 publishers -> $share group of 2, QoS 1, 64 B, 100 msg/s each".into(),
        work: msgs(
            Topology::fan_in(100, 2, true, "cmp"),
            load(QoS::AtLeastOnce, 64, 100.0, TOPOLOGY_SECONDS),
        ),
    });
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "fan-out".into(),
        title: "Fan-out, 1 publisher -> 100 subscribers, QoS 1, 64 B, 1000 msg/s".into(),
        work: msgs(
            Topology::fan_out(1, 100, "cmp"),
            load(QoS::AtLeastOnce, 64, 1000.0, TOPOLOGY_SECONDS),
        ),
    });
    let mut persistent = load(QoS::AtLeastOnce, 64, 300.0, 6.0);
    persistent.persistent = true;
    persistent.offline = Some(Duration::from_secs(2));
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "p2p-persistent".into(),
        title: "P2P, 100 pairs, QoS 1, persistent subscribers offline 2 s of 6".into(),
        work: msgs(p2p(100), persistent),
    });
    cells.push(Cell {
        transport: Transport::Tcp,
        id: "conn-5000".into(),
        title: "5000 connections, 4 connectors".into(),
        work: Work::Connections(5000),
    });
    cells.extend(transports());
    cells.extend(validated());
    cells.extend(kafka());
    cells.extend(cluster());
    cells
}

/// P2P across a cluster over Kafka, every message crossing between nodes (two nodes:
/// publishers on one, subscribers on the other; three: each pair split over two of them),
/// beside one node carrying both sides. Their ids are `cluster-N-*`, N the nodes.
fn cluster() -> Vec<Cell> {
    [
        ("cluster-2-max", 2, "max rate", 0.0),
        (
            "cluster-2-10k",
            2,
            "100 msg/s each (10k msg/s offered)",
            100.0,
        ),
        ("cluster-3-max", 3, "max rate", 0.0),
        (
            "cluster-3-10k",
            3,
            "100 msg/s each (10k msg/s offered)",
            100.0,
        ),
    ]
    .into_iter()
    .map(|(id, nodes, what, rate)| {
        let mut l = load(QoS::AtLeastOnce, 64, rate, MEASURED_SECONDS);
        l.warmup = Duration::from_secs(3);
        Cell {
            id: id.into(),
            title: format!(
                "Cluster: P2P across {} nodes over Kafka, 100 pairs, QoS 1, 64 B, {what}",
                if nodes == 2 { "two" } else { "three" }
            ),
            work: msgs(Topology::p2p(100, "cmp"), l),
            transport: Transport::Tcp,
        }
    })
    .collect()
}

/// The Kafka bridge both ways, against a tansu started for each run (only brokers that
/// bridge to Kafka run these): MQTT publishers -> ringmq -> a Kafka consumer, and a Kafka
/// producer -> ringmq -> an MQTT subscriber. The bootstrap address is filled in per run.
fn kafka() -> Vec<Cell> {
    let out = |rate: f64, inflight, payload| {
        let mut l = load(QoS::AtLeastOnce, payload, rate, MEASURED_SECONDS);
        l.inflight = inflight;
        l.warmup = Duration::from_secs(4);
        l.kafka_out = Some(KafkaOut {
            brokers: String::new(),
            topic: KAFKA_OUT_TOPIC.into(),
        });
        msgs(Topology::kafka_out(10, "cmp"), l)
    };
    // At max rate the producer is held to `per_key` records a key (on average) ahead of the
    // subscriber.
    let into = |rate: f64, per_key: usize, payload| {
        let mut l = load(QoS::AtLeastOnce, payload, rate, MEASURED_SECONDS);
        l.inflight = per_key;
        l.warmup = Duration::from_secs(3);
        l.kafka_in = Some(KafkaIn {
            brokers: String::new(),
            topic: KAFKA_IN_TOPIC.into(),
            like_bridge: false,
            ahead_max: Some(per_key as u64 * 10),
        });
        msgs(Topology::kafka_in(10, 1, "cmp"), l)
    };
    let size = |payload: usize| match payload {
        1024 => "1 KiB".to_string(),
        n => format!("{n} B"),
    };
    // (id, offered msg/s per publisher or key (0: max), window, payload bytes)
    let outs = [
        ("kafka-out-30k", 3000.0, 64, 64),
        ("kafka-out-max", 0.0, 1000, 64),
        ("kafka-out-max-1k", 0.0, 1000, 1024),
    ];
    let ins = [
        ("kafka-in-30k", 3000.0, 1000, 64),
        ("kafka-in-max", 0.0, 5000, 64),
        ("kafka-in-max-1k", 0.0, 5000, 1024),
    ];
    let offered = |rate: f64| match rate {
        0.0 => "max rate".to_string(),
        r => format!("{}k msg/s offered", r * 10.0 / 1000.0),
    };
    let mut cells: Vec<Cell> = outs
        .into_iter()
        .map(|(id, rate, window, payload)| Cell {
            id: id.into(),
            title: format!(
                "MQTT -> Kafka, 10 publishers, QoS 1, {}, {}, window {window}",
                size(payload),
                offered(rate)
            ),
            work: out(rate, window, payload),
            transport: Transport::Tcp,
        })
        .collect();
    cells.extend(ins.into_iter().map(|(id, rate, window, payload)| {
        // The paced producer is not held by a window; a max-rate one is.
        let held = if rate == 0.0 {
            format!(", window {window} per key")
        } else {
            String::new()
        };
        Cell {
            id: id.into(),
            title: format!(
                "Kafka -> MQTT, 10 keys -> 1 subscriber, QoS 1, {}, {}{held}",
                size(payload),
                offered(rate)
            ),
            work: into(rate, window, payload),
            transport: Transport::Tcp,
        }
    }));
    cells
}

/// The P2P cells again over TLS and WebSocket (brokers that take the transport), and
/// connection set-up over TLS.
fn transports() -> Vec<Cell> {
    let p2p = |n| Topology::p2p(n, "cmp");
    let mut cells = Vec::new();
    for (transport, name, what) in [
        (Transport::Tls, "tls", "TLS 1.3"),
        (Transport::Ws, "ws", "WebSocket"),
    ] {
        cells.push(Cell {
            id: format!("p2p-max-{name}"),
            title: format!("P2P over {what}, 100 pairs, QoS 1, 64 B, max rate"),
            work: msgs(p2p(100), load(QoS::AtLeastOnce, 64, 0.0, TOPOLOGY_SECONDS)),
            transport,
        });
        cells.push(Cell {
            id: format!("p2p-30k-{name}"),
            title: format!("P2P over {what}, 100 pairs, QoS 1, 64 B, 30k msg/s offered"),
            work: msgs(
                p2p(100),
                load(QoS::AtLeastOnce, 64, 300.0, TOPOLOGY_SECONDS),
            ),
            transport,
        });
    }
    cells.push(Cell {
        id: "conn-5000-tls".into(),
        title: "5000 connections over TLS 1.3 (full handshakes), 4 connectors".into(),
        work: Work::Connections(5000),
        transport: Transport::Tls,
    });
    cells
}

/// P2P with a 200-byte JSON payload: `ringmq-asyncapi` validates every one against a
/// 10-field object schema (AsyncAPI), beside the brokers that do not validate.
fn validated() -> Vec<Cell> {
    let p2p = |n| Topology::p2p(n, "cmp");
    let json = |rate| {
        let mut l = load(QoS::AtLeastOnce, 200, rate, TOPOLOGY_SECONDS);
        l.json = true;
        l
    };
    vec![
        Cell {
            id: "p2p-max-json".into(),
            title: "P2P, 100 pairs, QoS 1, 200 B JSON, max rate (validated by ringmq-asyncapi)"
                .into(),
            work: msgs(p2p(100), json(0.0)),
            transport: Transport::Tcp,
        },
        Cell {
            id: "p2p-30k-json".into(),
            title:
                "P2P, 100 pairs, QoS 1, 200 B JSON, 30k msg/s offered (validated by ringmq-asyncapi)"
                    .into(),
            work: msgs(p2p(100), json(300.0)),
            transport: Transport::Tcp,
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::brokers::Broker;
    use crate::loadgen::wire::JSON_FIXED_BYTES;

    /// Which broker runs in which cell: each special broker only where it belongs, the
    /// generic MQTT brokers nowhere they cannot serve.
    #[test]
    fn brokers_run_only_in_the_cells_they_serve() {
        for cell in matrix(Mode::Full) {
            let s = cell.setup(None);
            let runs: Vec<Broker> = Broker::ALL.into_iter().filter(|b| b.runs_in(&s)).collect();
            let id = cell.id.as_str();
            assert!(
                runs.contains(&Broker::Ringmq1),
                "{id}: ringmq-1shard runs everywhere"
            );
            let special = cell.kafka() || cell.cluster_nodes().is_some();
            assert_eq!(runs.contains(&Broker::Mosquitto), !special, "{id}");
            assert_eq!(
                runs.contains(&Broker::KafkaDirect),
                cell.kafka_out(),
                "{id}"
            );
            assert_eq!(
                runs.contains(&Broker::RingmqKafkaLocal),
                cell.kafka_out(),
                "{id}"
            );
            assert_eq!(runs.contains(&Broker::RingmqAsyncapi), cell.json(), "{id}");
            assert_eq!(
                runs.contains(&Broker::RingmqCluster3),
                cell.cluster_nodes() == Some(3),
                "{id}"
            );
            assert_eq!(
                runs.contains(&Broker::RingmqCluster2),
                cell.cluster_nodes() == Some(2),
                "{id}"
            );
            if cell.transport != Transport::Tcp || special {
                assert!(!runs.contains(&Broker::Relay), "{id}");
            }
        }
    }

    /// Cell ids key `results.json`: unique in both matrices; the JSON cells' payloads hold the
    /// generator's whole JSON object; the TLS and WebSocket cells are in the full matrix only.
    #[test]
    fn cells_are_unique_and_well_formed() {
        for mode in [Mode::Quick, Mode::Full] {
            let cells = matrix(mode);
            let mut ids: Vec<&str> = cells.iter().map(|c| c.id.as_str()).collect();
            ids.sort_unstable();
            ids.dedup();
            assert_eq!(ids.len(), cells.len(), "{mode:?}: duplicate cell ids");
            for c in cells.iter().filter(|c| c.json()) {
                let Work::Messages(_, l) = &c.work else {
                    panic!("{}: a JSON cell without messages", c.id);
                };
                assert!(l.payload_bytes >= JSON_FIXED_BYTES, "{}", c.id);
            }
            let over = |t| cells.iter().filter(|c| c.transport == t).count();
            match mode {
                Mode::Quick => assert_eq!(over(Transport::Tcp), cells.len()),
                Mode::Full => {
                    assert!(over(Transport::Tls) >= 3 && over(Transport::Ws) >= 2);
                    assert!(cells.iter().any(|c| c.cluster_nodes() == Some(3)));
                    assert!(cells.iter().any(Cell::kafka_out));
                    // Only the long run is measured once, whatever the rounds.
                    let once: Vec<&str> = cells
                        .iter()
                        .filter(|c| c.first_round_only())
                        .map(|c| c.id.as_str())
                        .collect();
                    assert_eq!(once, ["soak-5000"]);
                    assert_eq!(cells.iter().filter(|c| c.in_grid()).count(), 24);
                }
            }
        }
    }
}
