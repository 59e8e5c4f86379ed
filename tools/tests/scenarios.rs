//! The load generator against the real broker (in-process, 2 shards) and against the trivial
//! relay, on a few messages: exact loss / duplicate accounting, histograms, every scenario;
//! `kafka-in` with a real Kafka-protocol broker (tansu, installed by scripts/test.sh) on a
//! free port, a Kafka producer standing for the publishers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../broker/tests/common/kafka.rs"]
mod kafka;
mod support;

/// What the broker tests' tansu harness (`common/kafka.rs`) takes from their `common`.
mod common {
    pub fn free_port() -> u16 {
        super::support::free_addr().port()
    }

    /// Something listens on `addr` (a connection that met itself does not count).
    pub fn accepts(addr: impl std::net::ToSocketAddrs) -> bool {
        std::net::TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    }

    pub fn scratch_dir(name: &str) -> std::path::PathBuf {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        std::env::temp_dir().join(format!("ringmq-bench-{name}-{}-{n}", std::process::id()))
    }
}

use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use broker::kafka::config::{KafkaConfig, ToMqtt};
use kafka::Tansu;
use support::{free_addr, load};

use net::codec::{ProtocolVersion, QoS};
use tools::loadgen::conn::{run_conn, ConnLoad};
use tools::loadgen::kafka::KafkaIn;
use tools::loadgen::topology::Topology;
use tools::loadgen::{run, Load};
use tools::report::Report;

fn ringmq() -> (broker::Broker, SocketAddr) {
    ringmq_with(None)
}

/// The broker in-process (2 shards, memory), with a `[kafka]` table if given.
fn ringmq_with(kafka: Option<KafkaConfig>) -> (broker::Broker, SocketAddr) {
    let addr = free_addr();
    let config = broker::config::Config {
        listen: addr,
        shards: 2,
        durability: broker::config::Durability::Memory,
        kafka,
        ..Default::default()
    }
    .validate()
    .unwrap();
    (broker::run(config).unwrap(), addr)
}

fn assert_exact(report: &Report, deliveries_per_message: u64) {
    eprint!("{}", report.table());
    assert!(report.sent > 0);
    assert_eq!(
        report.acknowledged, report.sent,
        "every publish acknowledged"
    );
    assert_eq!(
        report.delivered,
        report.acknowledged * deliveries_per_message,
        "every message delivered"
    );
    assert_eq!(
        (report.lost, report.duplicated, report.out_of_order),
        (0, 0, 0)
    );
    assert!(
        report.delivered_per_second > 100.0,
        "{}",
        report.delivered_per_second
    );
    assert!(
        report.latency.count > 0
            && report.latency.p50_us > 0.0
            && report.latency.p99_us >= report.latency.p50_us
    );
}

#[test]
fn p2p_every_qos_and_version() {
    let (broker, addr) = ringmq();
    for (qos, version) in [
        (QoS::AtMostOnce, ProtocolVersion::V311),
        (QoS::AtLeastOnce, ProtocolVersion::V311),
        (QoS::ExactlyOnce, ProtocolVersion::V5),
    ] {
        let report = run(
            &Topology::p2p(8, &format!("p2p{}", qos as u8)),
            &load(addr, qos, version),
        )
        .unwrap();
        assert_exact(&report, 1);
        if qos != QoS::AtMostOnce {
            assert!(report.ack_latency.count > 0);
        }
        assert!(report.broker_cpu_seconds.is_some());
    }
    broker.stop();
    broker.join().unwrap();
}

/// JSON payloads through a broker validating them against `benches/asyncapi/p2p.yaml`:
/// every message valid, none lost (the set-up of the AsyncAPI cost benchmark).
#[test]
fn json_payloads_through_asyncapi_validation() {
    let addr = free_addr();
    let doc = concat!(env!("CARGO_MANIFEST_DIR"), "/../benches/asyncapi/p2p.yaml");
    let config = broker::config::Config {
        listen: addr,
        shards: 2,
        durability: broker::config::Durability::Memory,
        asyncapi: Some(doc.into()),
        asyncapi_strict: true,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let broker = broker::run(config).unwrap();
    let load = Load {
        payload_bytes: 200,
        json: true,
        ..load(addr, QoS::AtLeastOnce, ProtocolVersion::V5)
    };
    let report = run(&Topology::p2p(8, "json"), &load).unwrap();
    assert_exact(&report, 1);
    broker.stop();
    broker.join().unwrap();
}

#[test]
fn fan_in_and_fan_out() {
    let (broker, addr) = ringmq();
    let report = run(
        &Topology::fan_out(2, 10, "fo"),
        &load(addr, QoS::AtLeastOnce, ProtocolVersion::V311),
    )
    .unwrap();
    assert_exact(&report, 10);
    let report = run(
        &Topology::fan_in(10, 2, false, "fi"),
        &load(addr, QoS::AtLeastOnce, ProtocolVersion::V5),
    )
    .unwrap();
    assert_exact(&report, 2);
    // Shared subscription: the group as a whole gets every message once (members on both
    // shards take turns, so the group's arrival order across members is not checked).
    let report = run(
        &Topology::fan_in(4, 2, true, "fis"),
        &load(addr, QoS::AtLeastOnce, ProtocolVersion::V5),
    )
    .unwrap();
    eprint!("{}", report.table());
    assert_eq!(report.acknowledged, report.sent);
    assert_eq!(report.delivered, report.sent);
    assert_eq!((report.lost, report.duplicated), (0, 0));
    broker.stop();
    broker.join().unwrap();
}

#[test]
fn persistent_subscribers_offline_for_part_of_the_run_lose_nothing() {
    let (broker, addr) = ringmq();
    let mut l = load(addr, QoS::AtLeastOnce, ProtocolVersion::V311);
    l.persistent = true;
    l.offline = Some(Duration::from_millis(400));
    let report = run(&Topology::p2p(4, "pers"), &l).unwrap();
    eprint!("{}", report.table());
    // Going offline drops the connection with PUBACKs not yet written: those messages come
    // again (DUP) on resume, which MQTT allows. Nothing may be lost.
    assert!(report.sent > 0);
    assert_eq!(
        report.acknowledged, report.sent,
        "every publish acknowledged"
    );
    assert_eq!(
        report.delivered, report.acknowledged,
        "every message delivered"
    );
    assert_eq!(report.lost, 0);
    // Messages queued while offline arrive later: the worst latency shows the offline time.
    assert!(
        report.latency.max_us > 300_000.0,
        "{}",
        report.latency.max_us
    );
    broker.stop();
    broker.join().unwrap();
}

#[test]
fn against_the_trivial_relay() {
    let addr = free_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let relay = {
        let stop = stop.clone();
        std::thread::spawn(move || tools::relay::run(addr, stop))
    };
    std::thread::sleep(Duration::from_millis(200));
    let report = run(
        &Topology::p2p(4, "relay"),
        &load(addr, QoS::AtLeastOnce, ProtocolVersion::V311),
    )
    .unwrap();
    assert_exact(&report, 1);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    relay.join().unwrap().unwrap();
}

#[test]
fn connection_scenario() {
    let (broker, addr) = ringmq();
    let report = run_conn(&ConnLoad {
        addr,
        clients: 300,
        workers: 3,
        version: ProtocolVersion::V311,
        broker_pid: Some(std::process::id()),
        prefix: "conn".into(),
        layers: Default::default(),
        settle: std::time::Duration::from_millis(300),
    })
    .unwrap();
    eprint!("{}", report.table());
    assert_eq!(report.clients, 300);
    assert!(report.per_second > 10.0 && report.connack_latency.count == 300);
    assert!(report.broker_bytes_per_connection.is_some());
    broker.stop();
    broker.join().unwrap();
}

#[test]
fn kafka_in_accounts_for_every_record_kafka_acknowledged() {
    let tansu = Tansu::start();
    let kafka = tansu.brokers();
    let (broker, addr) = ringmq_with(Some(KafkaConfig {
        brokers: kafka.to_string(),
        partitions: 3,
        to_mqtt: vec![ToMqtt {
            topic: "rb-in".into(),
            mqtt_topic: "rb/kafka/{key}".into(),
            qos: 1,
            group: "bench".into(),
            offset_reset: "earliest".into(),
            partitions: None,
        }],
        ..KafkaConfig::default()
    }));
    let load = Load {
        addr,
        pub_addr: None,
        nodes: Vec::new(),
        other_pids: Vec::new(),
        qos: QoS::AtLeastOnce,
        payload_bytes: 64,
        json: false,
        rate: 200.0,
        inflight: 64,
        // The consumer group's first join is in the warm-up; its records wait in Kafka.
        warmup: Duration::from_secs(4),
        duration: Duration::from_secs(2),
        drain: Duration::from_secs(30),
        version: ProtocolVersion::V5,
        broker_pid: Some(std::process::id()),
        persistent: false,
        offline: None,
        kafka_out: None,
        kafka_in: Some(KafkaIn {
            brokers: kafka.to_string(),
            topic: "rb-in".into(),
            like_bridge: false,
            ahead_max: None,
        }),
        layers: Default::default(),
    };
    let report = run(&Topology::kafka_in(4, 2, "ki"), &load).unwrap();
    eprint!("{}", report.table());
    assert!(report.sent > 0 && report.acknowledged == report.sent);
    assert_eq!(
        report.lost, 0,
        "every record Kafka acknowledged reached both subscribers"
    );
    assert_eq!(report.delivered, 2 * report.acknowledged);
    assert_eq!((report.duplicated, report.out_of_order), (0, 0));
    broker.stop();
    broker.join().unwrap();
}

/// `rdkafka-direct` in `compare`: no MQTT at all, the generator's producer (with the
/// bridge's settings) writes to the topic its consumer reads; every acknowledged record is
/// accounted for there.
#[test]
fn a_direct_producer_is_accounted_for_at_the_kafka_consumer() {
    let tansu = Tansu::start();
    let kafka = tansu.brokers();
    kafka::create_topic(&kafka, "rb-direct", 3);
    let mut load = load(free_addr(), QoS::AtLeastOnce, ProtocolVersion::V5);
    load.rate = 200.0;
    load.broker_pid = None;
    load.warmup = Duration::from_secs(3);
    load.duration = Duration::from_secs(2);
    load.drain = Duration::from_secs(30);
    load.kafka_in = Some(KafkaIn {
        brokers: kafka.to_string(),
        topic: "rb-direct".into(),
        like_bridge: true,
        ahead_max: None,
    });
    load.kafka_out = Some(tools::loadgen::kafka::KafkaOut {
        brokers: kafka.to_string(),
        topic: "rb-direct".into(),
    });
    let report = run(&Topology::kafka_out(4, "kd"), &load).unwrap();
    eprint!("{}", report.table());
    assert!(report.sent > 0 && report.acknowledged == report.sent);
    assert_eq!(report.lost, 0, "every acknowledged record was consumed");
    assert_eq!(report.delivered, report.acknowledged);
    assert_eq!(report.duplicated, 0);
    assert!(report.delivered_per_second > 0.0);
}

#[test]
fn kafka_out_accounts_for_every_puback_at_a_kafka_consumer() {
    let tansu = Tansu::start();
    let kafka = tansu.brokers();
    let (broker, addr) = ringmq_with(Some(KafkaConfig {
        brokers: kafka.to_string(),
        partitions: 3,
        to_kafka: vec![broker::kafka::config::ToKafka {
            filter: "rb/kout/+".into(),
            topic: "rb-out".into(),
            key: "client_id".into(),
            ack: "kafka".into(),
            partitions: None,
        }],
        ..KafkaConfig::default()
    }));
    let mut load = load(addr, QoS::AtLeastOnce, ProtocolVersion::V5);
    load.warmup = Duration::from_secs(3);
    load.duration = Duration::from_secs(2);
    load.drain = Duration::from_secs(30);
    load.kafka_out = Some(tools::loadgen::kafka::KafkaOut {
        brokers: kafka.to_string(),
        topic: "rb-out".into(),
    });
    let report = run(&Topology::kafka_out(4, "ko"), &load).unwrap();
    eprint!("{}", report.table());
    assert!(report.sent > 0 && report.acknowledged == report.sent);
    assert_eq!(
        report.lost, 0,
        "every PUBACKed message reached the Kafka consumer"
    );
    assert_eq!(report.delivered, report.acknowledged);
    assert_eq!(report.out_of_order, 0, "in order per publisher (its key)");
    broker.stop();
    broker.join().unwrap();
}
