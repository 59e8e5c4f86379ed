//! The MQTT -> Kafka bridge with the real binary (2 shards) and a real Kafka-protocol broker
//! (tansu) on a free port: records arrive with the mapped topic, key and headers, in order
//! per key; PUBACKs wait for Kafka and a Kafka that is gone refuses publishers (0x97);
//! MQTT subscribers of the same topic still get the messages; bad rules are start-up errors;
//! an AsyncAPI document's Kafka bindings give the rules (valid payloads only reach Kafka).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::time::{Duration, Instant};

use common::{id_on, scratch_dir, Broker, Raw};
use kafka::{consume, produce, Tansu};
use net::codec::{Packet, ProtocolVersion, PubRespKind, Publish, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn config_file(body: &str) -> std::path::PathBuf {
    let dir = scratch_dir("kafka-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringmq.toml");
    std::fs::write(&path, body).unwrap();
    path
}

fn broker_with(tansu: &Tansu, extra: &str) -> Broker {
    broker_with_flags(tansu, extra, &[])
}

fn broker_with_flags(tansu: &Tansu, extra: &str, flags: &[&str]) -> Broker {
    let path = config_file(&format!(
        "[kafka]\nbrokers = \"{}\"\npartitions = 3\ntimeout_ms = 2000\n{extra}\n\
         [[kafka.to_kafka]]\nfilter = \"devices/+/telemetry\"\ntopic = \"telemetry\"\nkey = \"level:2\"\n",
        tansu.brokers()
    ));
    let mut args = vec!["--config", path.to_str().unwrap()];
    args.extend_from_slice(flags);
    Broker::start(&args)
}

/// The records' payloads as text.
fn texts(records: &[kafka::Record]) -> Vec<String> {
    records
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect()
}

fn telemetry(device: &str, seq: u16, user: bool) -> Publish {
    let mut properties = net::codec::BoxedProperties::default();
    if user {
        properties
            .user_properties
            .push(("site".into(), "lab".into()));
    }
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: format!("devices/{device}/telemetry").into(),
        packet_id: net::codec::PacketId::new(seq),
        properties,
        payload: bytes::Bytes::from(seq.to_be_bytes().to_vec()),
    }
}

#[test]
fn publishes_reach_kafka_mapped_and_in_order_per_key_after_kafka_acknowledged() {
    let tansu = Tansu::start();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let broker = broker_with_flags(&tansu, "", &["--metrics-listen", &metrics]);
    // An MQTT subscriber of the same topics still gets everything.
    let (mut sub, _) = Raw::connect(broker.addr, V5, &id_on("k-sub", 0), true);
    sub.subscribe("devices/#", QoS::AtLeastOnce);
    // Publishers homed on both shards, 3 devices each.
    const N: u16 = 60;
    let mut publishers = Vec::new();
    for shard in 0..2u16 {
        let id = id_on(&format!("k-pub-{shard}"), shard);
        let (c, _) = Raw::connect(broker.addr, V5, &id, true);
        publishers.push((id, c));
    }
    for seq in 1..=N {
        for (shard, (_, c)) in publishers.iter_mut().enumerate() {
            let device = format!("d{shard}-{}", seq % 3);
            c.send(&Packet::Publish(telemetry(&device, seq, seq == 1)));
        }
    }
    for (_, c) in publishers.iter_mut() {
        for seq in 1..=N {
            assert_eq!(
                c.puback_within(seq, Duration::from_secs(30)),
                Some(0),
                "PUBACK {seq}"
            );
        }
    }
    let records = consume(
        &tansu.brokers(),
        "telemetry",
        2 * N as usize,
        Duration::from_secs(30),
    );
    assert_eq!(
        records.len(),
        2 * N as usize,
        "every acknowledged publish is in Kafka"
    );
    for shard in 0..2 {
        for d in 0..3 {
            let key = format!("d{shard}-{d}");
            let seqs: Vec<u16> = records
                .iter()
                .filter(|r| r.key.as_deref() == Some(&key))
                .map(|r| u16::from_be_bytes(r.payload[..2].try_into().unwrap()))
                .collect();
            let expected: Vec<u16> = (1..=N).filter(|s| s % 3 == d).collect();
            assert_eq!(seqs, expected, "key {key}: all, in publish order");
        }
    }
    let first = records
        .iter()
        .find(|r| r.payload == 1u16.to_be_bytes() && r.key.as_deref() == Some("d0-1"))
        .unwrap();
    let header = |k: &str| {
        first
            .headers
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    assert_eq!(
        header("mqtt.topic").as_deref(),
        Some("devices/d0-1/telemetry")
    );
    assert_eq!(
        header("mqtt.client_id").as_deref(),
        Some(publishers[0].0.as_str())
    );
    assert_eq!(header("mqtt.qos").as_deref(), Some("1"));
    assert_eq!(
        header("site").as_deref(),
        Some("lab"),
        "user properties as headers"
    );
    let mut got = 0;
    while let Some(p) = sub.recv_within(Duration::from_secs(2)) {
        if let Packet::Publish(p) = p {
            got += 1;
            sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        }
    }
    assert_eq!(got, 2 * N as usize, "MQTT subscribers still get them");
    // Counted (the shards publish their counters on their 250 ms tick).
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(
        common::metric(&metrics, "ringmq_kafka_delivered_total{"),
        2 * N as u64
    );
    assert_eq!(common::metric(&metrics, "ringmq_kafka_failed_total{"), 0);
    assert_eq!(common::metric(&metrics, "ringmq_kafka_in_flight{"), 0);
    // The produce-latency histogram counts each acknowledged record once.
    assert_eq!(
        common::metric(&metrics, "ringmq_kafka_produce_latency_seconds_count{"),
        2 * N as u64
    );
    assert_eq!(
        common::metric(
            &metrics,
            "ringmq_kafka_produce_latency_seconds_bucket{shard=\"0\",le=\"+Inf\"}"
        ) + common::metric(
            &metrics,
            "ringmq_kafka_produce_latency_seconds_bucket{shard=\"1\",le=\"+Inf\"}"
        ),
        2 * N as u64
    );
}

#[test]
fn a_kafka_that_is_gone_refuses_publishers_instead_of_acknowledging() {
    let mut tansu = Tansu::start();
    let broker = broker_with(&tansu, "");
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("k-down", 1), true);
    publ.send(&Packet::Publish(telemetry("x", 1, false)));
    assert_eq!(publ.puback_within(1, Duration::from_secs(30)), Some(0));
    tansu.kill();
    let sent = Instant::now();
    publ.send(&Packet::Publish(telemetry("x", 2, false)));
    // Held while Kafka is away, refused once `kafka.timeout_ms` (2 s) passed: never
    // acknowledged and dropped.
    assert_eq!(publ.puback_within(2, Duration::from_secs(15)), Some(0x97));
    assert!(sent.elapsed() >= Duration::from_millis(1500), "held first");
}

/// The binary refusing to start with `config` (its stderr).
fn refused_start(config: &str) -> String {
    let path = config_file(config);
    common::refused_start(&[
        "--shards",
        "1",
        "--durability",
        "memory",
        "--config",
        path.to_str().unwrap(),
    ])
}

#[test]
fn bad_kafka_rules_are_start_up_errors_naming_the_rule() {
    let err = refused_start("[kafka]\n[[kafka.to_kafka]]\nfilter = \"a/+\"\ntopic = \"t-{2}\"\n");
    assert!(err.contains("to_kafka[0]") && err.contains("{2}"), "{err}");
    let err = refused_start(
        "[kafka]\n[[kafka.to_kafka]]\nfilter = \"a\"\ntopic = \"t\"\n[[kafka.to_mqtt]]\ntopic = \"c\"\n",
    );
    assert!(
        err.contains("mqtt_topic"),
        "a to_mqtt rule needs its MQTT topic: {err}"
    );
    let err = refused_start(
        "[kafka]\n[[kafka.to_kafka]]\nfilter = \"a/+\"\ntopic = \"t-{1}\"\nack = \"local\"\n",
    );
    assert!(
        err.contains("to_kafka[0]") && err.contains("without placeholders"),
        "ack = local needs a fixed topic: {err}"
    );
    // Nothing listens on port 1: topic creation fails with the brokers named.
    let err = refused_start(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntimeout_ms = 1000\n[[kafka.to_kafka]]\nfilter = \"a\"\ntopic = \"t\"\n",
    );
    assert!(err.contains("127.0.0.1:1"), "{err}");
}

/// `ringmq --config FILE kafka check`: (success, stdout + stderr).
fn kafka_check(config: &str) -> (bool, String) {
    let path = config_file(config);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--config", path.to_str().unwrap(), "kafka", "check"])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn kafka_check_names_hidden_rules_missing_topics_and_unreachable_brokers() {
    let tansu = Tansu::start();
    kafka::create_topic(&tansu.brokers(), "chk-a", 2);
    let (ok, out) = kafka_check(&format!(
        "[kafka]\nbrokers = \"{}\"\ncreate_topics = false\ntimeout_ms = 5000\n\
         [[kafka.to_kafka]]\nfilter = \"a/#\"\ntopic = \"chk-a\"\npartitions = 3\n\
         [[kafka.to_kafka]]\nfilter = \"a/b/+\"\ntopic = \"chk-b\"\n\
         [[kafka.to_kafka]]\nfilter = \"dev/+/x\"\ntopic = \"t-{{1}}\"\n\
         [[kafka.to_mqtt]]\ntopic = \"chk-in\"\nmqtt_topic = \"in/{{key}}\"\n",
        tansu.brokers()
    ));
    assert!(!ok, "errors make the check fail: {out}");
    for line in [
        "error: kafka.to_kafka[1] (filter `a/b/+`) never takes a message: kafka.to_kafka[0] (filter `a/#`)",
        "ok: kafka.brokers `127.0.0.1:",
        "warning: kafka.to_kafka[0] (filter `a/#`): topic `chk-a` exists with 2 partitions (the rules ask for 3",
        "error: kafka.to_kafka[1] (filter `a/b/+`): topic `chk-b` does not exist and kafka.create_topics is false",
        "ok: kafka.to_kafka[2] (filter `dev/+/x`): templated topic `t-{1}`",
        "error: kafka.to_mqtt[0] (topic `chk-in`): topic `chk-in` does not exist",
        "3 errors, 1 warning\n",
    ] {
        assert!(out.contains(line), "missing `{line}` in:\n{out}");
    }
    // The same rules with topic creation: only the hidden rule is an error.
    let (ok, out) = kafka_check(&format!(
        "[kafka]\nbrokers = \"{}\"\n\
         [[kafka.to_kafka]]\nfilter = \"x/+\"\ntopic = \"chk-x\"\n\
         [[kafka.to_kafka]]\nfilter = \"+/y\"\ntopic = \"chk-a\"\n",
        tansu.brokers()
    ));
    assert!(ok, "{out}");
    assert!(
        out.contains("ok: kafka.to_kafka[0] (filter `x/+`): topic `chk-x` does not exist; created at start with 8 partitions"),
        "{out}"
    );
    assert!(
        out.contains("warning: kafka.to_kafka[1] (filter `+/y`) overlaps kafka.to_kafka[0]"),
        "{out}"
    );
    assert!(out.contains("0 errors, 1 warning\n"), "{out}");
    // A cluster's routes topic with two partitions stops a start; three replicas on one broker
    // cannot be created.
    kafka::create_topic(&tansu.brokers(), "chk-routes", 2);
    let (ok, out) = kafka_check(&format!(
        "[kafka]\nbrokers = \"{}\"\nreplication = 3\n[cluster]\nnode_id = \"n1\"\nroutes_topic = \"chk-routes\"\n",
        tansu.brokers()
    ));
    assert!(!ok, "{out}");
    assert!(
        out.contains("error: cluster (node `n1`): topic `chk-routes` exists with 2 partitions (it must have exactly 1"),
        "{out}"
    );
    assert!(
        out.contains("error: kafka.replication 3: Kafka lists 1 broker(s)"),
        "{out}"
    );
    // Nothing listens on port 1.
    let (ok, out) = kafka_check(
        "[kafka]\nbrokers = \"127.0.0.1:1\"\ntimeout_ms = 1000\n[[kafka.to_kafka]]\nfilter = \"a\"\ntopic = \"t\"\n",
    );
    assert!(!ok);
    assert!(
        out.contains(
            "error: kafka.brokers `127.0.0.1:1`: no answer within kafka.timeout_ms (1000 ms)"
        ),
        "{out}"
    );
    // No [kafka] table.
    let (ok, out) = kafka_check("shards = 1\n");
    assert!(!ok && out.contains("no [kafka] table"), "{out}");
}

#[test]
fn mosquitto_pub_with_user_properties_to_a_kafka_consumer() {
    let tansu = Tansu::start();
    let broker = broker_with(&tansu, "");
    for i in 0..5 {
        let status = std::process::Command::new("mosquitto_pub")
            .args(["-p", &broker.port().to_string(), "-V", "mqttv5", "-q", "1"])
            .args(["-t", "devices/m1/telemetry", "-m", &format!("hello {i}")])
            .args(["-D", "publish", "user-property", "site", "lab"])
            .args(["-D", "publish", "content-type", "text/plain"])
            .args(["-D", "publish", "user-property", "mqtt.client_id", "spoof"])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub got its PUBACK");
    }
    let records = consume(&tansu.brokers(), "telemetry", 5, Duration::from_secs(30));
    let payloads = texts(&records);
    assert_eq!(
        payloads,
        (0..5).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );
    for r in &records {
        assert_eq!(r.key.as_deref(), Some("m1"));
        let has = |k: &str, v: &str| {
            r.headers
                .iter()
                .any(|(hk, hv)| hk == k && hv == v.as_bytes())
        };
        assert!(
            has("site", "lab") && has("content-type", "text/plain"),
            "{:?}",
            r.headers
        );
    }
}

const BOUND_API: &str = r#"
asyncapi: 3.0.0
info: { title: Bound, version: 1.0.0 }
defaultContentType: application/json
channels:
  telemetry:
    address: devices/{deviceId}/telemetry
    parameters: { deviceId: {} }
    bindings:
      kafka: { topic: api-telemetry, partitions: 2 }
    messages:
      reading:
        payload:
          type: object
          required: [t]
          properties: { t: { type: number } }
  commands:
    address: devices/{deviceId}/commands/{kind}
    parameters: { deviceId: {}, kind: {} }
    bindings:
      kafka: { topic: api-commands }
operations:
  sendReading: { action: receive, channel: { $ref: '#/channels/telemetry' } }
  sendCommand:
    action: send
    channel: { $ref: '#/channels/commands' }
    bindings: { mqtt: { qos: 1 } }
"#;

#[test]
fn asyncapi_kafka_bindings_bridge_valid_messages_both_ways() {
    let tansu = Tansu::start();
    let dir = scratch_dir("kafka-asyncapi");
    std::fs::create_dir_all(&dir).unwrap();
    let api = dir.join("api.yaml");
    std::fs::write(&api, BOUND_API).unwrap();
    // `ringmq asyncapi check` shows the mapping.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["asyncapi", "check", api.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("kafka: devices/+/telemetry -> Kafka topic api-telemetry (key level:2"),
        "{text}"
    );
    assert!(
        text.contains(
            "kafka: Kafka topic api-commands -> devices/{key}/commands/{header:kind} (QoS 1"
        ),
        "{text}"
    );
    // No rule in the config: the document gives both.
    let config = config_file(&format!(
        "asyncapi = \"{}\"\n[kafka]\nbrokers = \"{}\"\ntimeout_ms = 2000\n",
        api.display(),
        tansu.brokers()
    ));
    let broker = Broker::start(&["--config", config.to_str().unwrap()]);
    let (mut sub, _) = Raw::connect(broker.addr, V5, &id_on("api-sub", 1), true);
    sub.subscribe("devices/+/commands/#", QoS::AtLeastOnce);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("api-pub", 0), true);
    let sends = [
        (1u16, "{\"t\": 21.5}"),
        (2, "{\"t\": \"warm\"}"),
        (3, "{\"t\": 22}"),
    ];
    for (id, body) in sends {
        c.publish(
            "devices/d1/telemetry",
            body.as_bytes(),
            QoS::AtLeastOnce,
            id,
        );
    }
    let codes: Vec<Option<u8>> = [1, 2, 3]
        .iter()
        .map(|id| c.puback_within(*id, Duration::from_secs(30)))
        .collect();
    assert_eq!(
        codes,
        [Some(0), Some(0x99), Some(0)],
        "the invalid one refused"
    );
    let records = consume(
        &tansu.brokers(),
        "api-telemetry",
        3,
        Duration::from_secs(10),
    );
    let payloads = texts(&records);
    assert_eq!(
        payloads,
        ["{\"t\": 21.5}", "{\"t\": 22}"],
        "only valid payloads reach Kafka"
    );
    assert!(records.iter().all(|r| r.key.as_deref() == Some("d1")));
    // Kafka -> MQTT: the record key is the device, a header the last level.
    produce(
        &tansu.brokers(),
        "api-commands",
        &[(
            Some("d2".into()),
            b"reboot now".to_vec(),
            vec![("kind".into(), "reboot".into())],
        )],
    );
    let p = sub.recv_publish();
    assert_eq!(&*p.topic, "devices/d2/commands/reboot");
    assert_eq!(&p.payload[..], b"reboot now");
    assert_eq!(p.qos, QoS::AtLeastOnce);
    // Bindings without a [kafka] section: a start-up error.
    let config = config_file(&format!("asyncapi = \"{}\"\n", api.display()));
    let err = common::refused_start(&["--config", config.to_str().unwrap()]);
    assert!(err.contains("no [kafka] section"), "{err}");
}
