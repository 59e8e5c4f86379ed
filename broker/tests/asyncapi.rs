//! AsyncAPI enforcement with the real binary (2 shards) and real clients: paho-mqtt MQTT 5
//! (reason codes and reason strings for invalid payloads, topics, parameters and operations;
//! DISCONNECT 0x99 for an invalid QoS 0 publish; strict mode), mosquitto_pub / mosquitto_sub
//! MQTT 3.1.1 (an invalid publish is acknowledged, not delivered, and counted in `$SYS` and
//! Prometheus, in all and per channel), and
//! a malformed document refused at start with one error naming its JSON pointer.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::Command;

use common::{connect_packet, id_on, Broker, Raw};
use net::codec::{ProtocolVersion, QoS, ReasonCode, Will};

fn doc(name: &str) -> String {
    format!("{}/tests/asyncapi/{name}", env!("CARGO_MANIFEST_DIR"))
}

fn paho(broker: &Broker, case: &str) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/paho_asyncapi.py"
    );
    let out = Command::new("python3")
        .args([script, &broker.port().to_string(), case])
        .output()
        .expect("python3 with paho-mqtt");
    assert!(
        out.status.success(),
        "paho {case}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn paho_v5_gets_the_documents_reason_codes() {
    let d = doc("fleet-3.0.yaml");
    paho(&Broker::start(&["--asyncapi", &d]), "lenient");
    paho(
        &Broker::start(&["--asyncapi", &d, "--asyncapi-strict", "true"]),
        "strict",
    );
}

#[test]
fn avro_datums_are_validated_against_the_documents_avro_schema() {
    let d = doc("avro-2.6.yaml");
    paho(&Broker::start(&["--asyncapi", &d]), "avro");
}

#[test]
fn mosquitto_mqtt3_invalid_publishes_are_dropped_and_counted() {
    let d = doc("fleet-2.6.yaml");
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let broker = Broker::start(&[
        "--asyncapi",
        &d,
        "--sys-interval-secs",
        "1",
        "--metrics-listen",
        &metrics,
    ]);
    let port = broker.port().to_string();
    let sub = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("m3-sub", 1),
            "-t",
            "devices/+/telemetry",
        ])
        .args([
            "-t",
            "$SYS/broker/messages/refused/asyncapi",
            "-t",
            "$SYS/broker/asyncapi/#",
            "-v",
            "-W",
            "4",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    for (payload, id) in [
        (r#"{"t": "hot", "unit": "C"}"#, "m3-bad"),
        (r#"{"t": 20, "unit": "F"}"#, "m3-good"),
    ] {
        let out = Command::new("mosquitto_pub")
            .args(["-p", &port, "-i", &id_on(id, 0), "-q", "1"])
            .args(["-t", "devices/d3/telemetry", "-m", payload])
            .output()
            .unwrap();
        assert!(out.status.success(), "MQTT 3: acknowledged either way");
    }
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let readings: Vec<&str> = text.lines().filter(|l| l.starts_with("devices/")).collect();
    assert_eq!(
        readings,
        vec![r#"devices/d3/telemetry {"t": 20, "unit": "F"}"#]
    );
    assert!(
        text.lines()
            .any(|l| l == "$SYS/broker/messages/refused/asyncapi 1"),
        "{text}"
    );
    // Per channel (2.6: a channel's name is its address).
    assert!(
        text.lines().any(
            |l| l == "$SYS/broker/asyncapi/channels/devices%2F{deviceId}%2Ftelemetry/refused 1"
        ),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "$SYS/broker/asyncapi/no_channel/refused 0"),
        "{text}"
    );
    let series = "ringmq_asyncapi_channel_refused_total{channel=\"devices/{deviceId}/telemetry\"}";
    assert_eq!(common::metric(&metrics, series), 1);
    assert_eq!(
        common::metric(
            &metrics,
            "ringmq_asyncapi_channel_refused_total{channel=\"fleet/status\"}"
        ),
        0
    );
}

#[test]
fn a_malformed_document_stops_the_start_with_one_clear_error() {
    let dir = common::scratch_dir("asyncapi-bad");
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "asyncapi: 3.0.0\nchannels:\n  a:\n    address: a\n    messages:\n      m:\n        payload: { type: 12 }\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--asyncapi",
            bad.to_str().unwrap(),
        ])
        .args(["--data-dir", dir.join("data").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config key `asyncapi`") && err.contains("/channels/a/messages/m/payload"),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["asyncapi", "check", &doc("fleet-3.0.yaml")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("devices/+/telemetry"));
}

#[test]
fn a_will_the_document_refuses_refuses_the_connect() {
    let broker = Broker::start(&["--asyncapi", &doc("fleet-3.0.yaml")]);
    let mut connect = connect_packet(ProtocolVersion::V5, &id_on("bad-will", 0));
    connect.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        topic: "devices/d1/telemetry".into(),
        payload: bytes::Bytes::from_static(b"{\"t\": \"hot\"}"),
    });
    let (_, ack) = Raw::connect_with(broker.addr, connect);
    assert_eq!(ack.unwrap().code, ReasonCode::PAYLOAD_FORMAT_INVALID);
}

#[test]
fn a_reloaded_document_removes_subscriptions_it_no_longer_allows() {
    let dir = common::scratch_dir("asyncapi-reload");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("api.yaml");
    // No operation on the channel: clients may publish and subscribe.
    let open = "asyncapi: 3.0.0\ninfo: { title: t, version: '1' }\n\
                channels:\n  status:\n    address: fleet/status\n";
    std::fs::write(&path, open).unwrap();
    let broker = Broker::start(&["--asyncapi", path.to_str().unwrap()]);
    let (mut c, _) = Raw::connect(broker.addr, ProtocolVersion::V5, &id_on("api-r", 0), true);
    c.subscribe("fleet/status", QoS::AtMostOnce);
    c.publish("fleet/status", b"before", QoS::AtMostOnce, 0);
    assert_eq!(
        c.drain_publishes(1, std::time::Duration::from_secs(5))
            .len(),
        1
    );
    // Now clients may only publish there (the broker receives; nobody subscribes).
    let publish_only = format!(
        "{open}operations:\n  report:\n    action: receive\n    channel: {{ $ref: '#/channels/status' }}\n"
    );
    std::fs::write(&path, publish_only).unwrap();
    let status = Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(std::time::Duration::from_millis(700)); // a tick on every shard
    c.publish("fleet/status", b"after", QoS::AtMostOnce, 0);
    let got = c.drain_publishes(1, std::time::Duration::from_secs(2));
    assert!(got.is_empty(), "the subscription was removed: {got:?}");
}
