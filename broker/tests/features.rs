//! The MQTT features of issue 4, end to end against the real binary on 2 shards, publisher
//! and subscriber homed on different shards: paho-mqtt 2.x (MQTT 5 properties), the raw
//! client (exact packets and reason codes), mosquitto_pub/sub, rumqttc and MQTT.js.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{connect_packet, id_on, settle, Broker, Raw};
use net::codec::{
    Packet, PacketId, Properties, ProtocolVersion, PubRespKind, Publish, QoS, ReasonCode,
    Subscribe, SubscriptionOptions, Will,
};

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn paho(broker: &Broker, case: &str, extra: &[&str]) {
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/paho_features.py"
    );
    let ids = [
        id_on(&format!("{case}-a"), 0),
        id_on(&format!("{case}-b"), 1),
        id_on(&format!("{case}-c"), 0),
        id_on(&format!("{case}-d"), 1),
    ];
    let out = Command::new("python3")
        .arg(script)
        .arg(broker.port().to_string())
        .arg(case)
        .args(&ids)
        .args(extra)
        .output()
        .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "paho {case}:\n{stdout}\n{stderr}");
    eprintln!("{stdout}");
}

#[test]
fn retained_messages_paho() {
    paho(&Broker::start(&[]), "retained", &[]);
}

#[test]
fn wills_paho() {
    paho(&Broker::start(&[]), "will", &[]);
}

#[test]
fn mqtt5_properties_and_request_response_paho() {
    paho(&Broker::start(&[]), "properties", &[]);
}

#[test]
fn subscription_identifiers_and_no_local_paho() {
    paho(&Broker::start(&[]), "subscription_options", &[]);
}

#[test]
fn session_and_message_expiry_packet_size_and_aliases_paho() {
    paho(&Broker::start(&[]), "session", &[]);
}

#[test]
fn shared_subscriptions_paho() {
    paho(&Broker::start(&[]), "shared", &[]);
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ringmq-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A password file written by `ringmq passwd` and an ACL file.
fn auth_files(name: &str) -> (String, String) {
    let dir = temp_dir(name);
    let passwd = dir.join("passwd");
    let status = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args([
            "passwd",
            passwd.to_str().unwrap(),
            "alice",
            "--password",
            "s3cret",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    // The password from standard input, as documented.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["passwd", passwd.to_str().unwrap(), "bob"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hunter2\n").unwrap();
    assert!(child.wait().unwrap().success());
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "topic readwrite public/#\npattern readwrite devices/%c/#\npattern write users/%u/#\nuser bob\ntopic read #\n",
    )
    .unwrap();
    (
        passwd.to_str().unwrap().to_string(),
        acl.to_str().unwrap().to_string(),
    )
}

/// A broker that needs a password and applies the ACL.
fn start_with_auth(passwd: &str, acl: &str) -> Broker {
    Broker::start(&[
        "--password-file",
        passwd,
        "--acl-file",
        acl,
        "--allow-anonymous",
        "false",
    ])
}

#[test]
fn auth_and_acl_paho_and_mqtt3_return_codes() {
    let (passwd, acl) = auth_files("auth");
    let broker = start_with_auth(&passwd, &acl);
    paho(&broker, "auth", &["alice", "s3cret"]);
    // MQTT 3.1.1 return codes: 4 bad user name or password, 5 not authorised.
    let mut c = connect_packet(V4, "v3-auth");
    c.username = Some("alice".into());
    c.password = Some(Bytes::from_static(b"nope"));
    let (_, ack) = Raw::connect_with(broker.addr, c);
    assert_eq!(ack.unwrap().code, ReasonCode(4));
    let (_, ack) = Raw::connect_with(broker.addr, connect_packet(V4, "v3-anon"));
    assert_eq!(ack.unwrap().code, ReasonCode(5));
    // bob reads everything (his password came from standard input).
    let mut c = connect_packet(V4, &id_on("bob", 1));
    c.username = Some("bob".into());
    c.password = Some(Bytes::from_static(b"hunter2"));
    let (mut bob, ack) = Raw::connect_with(broker.addr, c);
    assert!(ack.unwrap().code.is_success());
    bob.subscribe("#", QoS::AtLeastOnce);
    // mosquitto_pub with a wrong password is refused; with the right one it publishes.
    let out = Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port().to_string(),
            "-u",
            "alice",
            "-P",
            "bad",
            "-t",
            "public/m",
            "-m",
            "x",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let out = Command::new("mosquitto_pub")
        .args([
            "-p",
            &broker.port().to_string(),
            "-i",
            &id_on("mpub", 0),
            "-u",
            "alice",
            "-P",
            "s3cret",
            "-q",
            "1",
            "-t",
            "public/m",
            "-m",
            "hello",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(&bob.recv_publish().payload[..], b"hello");
}

/// A raw client that connects with a will.
fn with_will(
    broker: &Broker,
    version: ProtocolVersion,
    id: &str,
    topic: &str,
    keep_alive: u16,
) -> Raw {
    let mut c = connect_packet(version, id);
    c.keep_alive = keep_alive;
    c.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        topic: topic.into(),
        payload: Bytes::from_static(b"bye"),
    });
    let (raw, ack) = Raw::connect_with(broker.addr, c);
    assert!(ack.unwrap().code.is_success());
    raw
}

#[test]
fn wills_on_keep_alive_timeout_takeover_and_retained() {
    let broker = Broker::start(&[]);
    let (mut sub, _) = Raw::connect(broker.addr, V5, &id_on("will-sub", 1), true);
    sub.subscribe("w/#", QoS::AtLeastOnce);
    // Keep alive 1 s and silence: the broker closes after 1.5 s and publishes the will.
    let silent = with_will(&broker, V4, &id_on("will-ka", 0), "w/ka", 1);
    let p = sub.recv_publish();
    assert_eq!(&p.topic[..], "w/ka");
    drop(silent);
    // Takeover: the old connection's will is published (no delay).
    let id = id_on("will-take", 0);
    let _old = with_will(&broker, V5, &id, "w/take", 60);
    let (_new, _) = Raw::connect(broker.addr, V5, &id, true);
    assert_eq!(&sub.recv_publish().topic[..], "w/take");
    // A retained will is stored like any retained message.
    let mut c = connect_packet(V4, &id_on("will-ret", 0));
    c.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: true,
        properties: Default::default(),
        topic: "w/status".into(),
        payload: Bytes::from_static(b"offline"),
    });
    let (raw, _) = Raw::connect_with(broker.addr, c);
    drop(raw);
    assert_eq!(&sub.recv_publish().topic[..], "w/status");
    let (mut late, _) = Raw::connect(broker.addr, V4, &id_on("will-late", 1), true);
    late.subscribe("w/status", QoS::AtLeastOnce);
    let p = late.recv_publish();
    assert!(p.retain && &p.payload[..] == b"offline");
}

#[test]
fn rumqttc_will_and_retained() {
    use rumqttc::{Client, Event, LastWill, MqttOptions, Packet as RPacket, QoS as RQoS};
    let broker = Broker::start(&[]);
    let port = broker.port();
    let mut opts = MqttOptions::new(id_on("rq-sub", 1), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    let (sub, mut sub_loop) = Client::new(opts, 100);
    sub.subscribe("rq/#", RQoS::AtLeastOnce).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    for ev in sub_loop.iter() {
        assert!(Instant::now() < deadline);
        if let Ok(Event::Incoming(RPacket::SubAck(_))) = ev {
            break;
        }
    }
    let mut opts = MqttOptions::new(id_on("rq-will", 0), "127.0.0.1", port);
    opts.set_last_will(LastWill::new("rq/will", "dead", RQoS::AtLeastOnce, false));
    let (publ, mut pub_loop) = Client::new(opts, 100);
    publ.publish("rq/retained", RQoS::AtLeastOnce, true, "kept")
        .unwrap();
    // Drive the publisher until its PUBACK, then drop it without DISCONNECT.
    for ev in pub_loop.iter() {
        assert!(Instant::now() < deadline);
        if let Ok(Event::Incoming(RPacket::PubAck(_))) = ev {
            break;
        }
    }
    drop(pub_loop);
    drop(publ);
    let mut topics = Vec::new();
    for ev in sub_loop.iter() {
        assert!(Instant::now() < deadline, "got {topics:?}");
        if let Ok(Event::Incoming(RPacket::Publish(p))) = ev {
            topics.push(p.topic.clone());
            if p.topic == "rq/will" {
                break;
            }
        }
    }
    assert!(topics.contains(&"rq/will".to_string()), "{topics:?}");
    // A new rumqttc subscriber gets the retained message.
    let (late, mut late_loop) =
        Client::new(MqttOptions::new(id_on("rq-late", 0), "127.0.0.1", port), 10);
    late.subscribe("rq/retained", RQoS::AtLeastOnce).unwrap();
    for ev in late_loop.iter() {
        assert!(Instant::now() < deadline);
        if let Ok(Event::Incoming(RPacket::Publish(p))) = ev {
            assert!(p.retain);
            assert_eq!(&p.payload[..], b"kept");
            break;
        }
    }
}

#[test]
fn mosquitto_retained_and_sys_topics() {
    let broker = Broker::start(&["--sys-interval-secs", "1"]);
    let port = broker.port().to_string();
    let out = Command::new("mosquitto_pub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("mr-pub", 0),
            "-q",
            "1",
            "-r",
            "-t",
            "mr/t",
            "-m",
            "kept",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("mr-sub", 1),
            "-t",
            "mr/#",
            "-C",
            "1",
            "-W",
            "5",
            "-v",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "mr/t kept");
    // $SYS: published every second, retained; a `#` subscription does not see them.
    let out = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("sys-sub", 1),
            "-t",
            "$SYS/broker/#",
            "-C",
            "8",
            "-W",
            "5",
            "-v",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("$SYS/broker/uptime"), "{text}");
    assert!(text.contains("$SYS/broker/clients/connected"), "{text}");
    let out = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("sys-all", 0),
            "-t",
            "#",
            "-C",
            "2",
            "-W",
            "2",
            "-v",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("$SYS"), "{text}");
    let out = Command::new("mosquitto_sub")
        .args([
            "-p",
            &port,
            "-i",
            &id_on("sys-shard", 0),
            "-t",
            "$SYS/broker/shard/1/messages/received",
            "-C",
            "1",
            "-W",
            "5",
        ])
        .output()
        .unwrap();
    let n: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(n <= 1, "per-shard counter: {n}");
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn prometheus_metrics_endpoint() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics = format!("127.0.0.1:{port}");
    let broker = Broker::start(&["--metrics-listen", &metrics]);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("prom-sub", 0), true);
    sub.subscribe("prom/t", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("prom-pub", 1), true);
    for i in 1..=20 {
        publ.publish_acked("prom/t", b"x", i);
        sub.recv_publish();
    }
    std::thread::sleep(Duration::from_millis(600)); // one tick publishes the snapshot
    let body = http_get(&metrics, "/metrics");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    assert!(
        body.contains("ringmq_messages_received_total{shard=\"1\"} 20"),
        "{body}"
    );
    assert!(
        body.contains("ringmq_messages_sent_total{shard=\"0\"} 20"),
        "{body}"
    );
    assert!(
        body.contains("ringmq_clients_connected{shard=\"0\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("ringmq_delivery_latency_seconds_count{shard=\"0\"} 20"),
        "{body}"
    );
    assert!(http_get(&metrics, "/other").starts_with("HTTP/1.1 404"));
}

#[test]
fn shared_member_leaving_with_qos1_inflight_loses_nothing() {
    let broker = Broker::start(&[]);
    let shared = "$share/workers/jobs/#";
    // A member that never acknowledges, on shard 0, with a small window.
    let mut c = connect_packet(V5, &id_on("lazy", 0));
    c.properties = Properties {
        receive_maximum: std::num::NonZeroU16::new(5),
        ..Default::default()
    }
    .into();
    let (mut lazy, _) = Raw::connect_with(broker.addr, c);
    lazy.subscribe(shared, QoS::AtLeastOnce);
    let (mut busy, _) = Raw::connect(broker.addr, V5, &id_on("busy", 1), true);
    busy.subscribe(shared, QoS::AtLeastOnce);
    settle();
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("jobs-pub", 0), true);
    let n = 40u16;
    for i in 1..=n {
        publ.publish_acked("jobs/x", format!("{i}").as_bytes(), i);
    }
    // The lazy member holds its share unacknowledged (5 in flight, the rest queued).
    let mut lazy_got = 0;
    while lazy.recv_within(Duration::from_millis(300)).is_some() {
        lazy_got += 1;
    }
    assert!(lazy_got > 0, "round robin gave the lazy member nothing");
    drop(lazy); // clean session: it ends, its unfinished messages go to the other member
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.len() < usize::from(n) && Instant::now() < deadline {
        if let Some(Packet::Publish(p)) = busy.recv_within(Duration::from_millis(500)) {
            seen.insert(String::from_utf8_lossy(&p.payload).parse::<u16>().unwrap());
            busy.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        }
    }
    assert_eq!(
        seen.len(),
        usize::from(n),
        "lazy had {lazy_got}; busy saw {seen:?}"
    );
}

#[test]
fn shared_subscription_rules() {
    let broker = Broker::start(&[]);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("nl-shared", 0), true);
    let mut o = SubscriptionOptions::qos(QoS::AtLeastOnce);
    o.no_local = true;
    c.send(&Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).unwrap(),
        properties: Default::default(),
        filters: vec![("$share/g/t".into(), o)],
    }));
    match c.until_closed().last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR),
        other => panic!("{other:?}"),
    }
}

#[test]
fn reason_strings_follow_request_problem_information() {
    let broker = Broker::start(&[]);
    for (problem_info, want) in [(None, true), (Some(false), false)] {
        let mut c = connect_packet(V5, &id_on("rs", 0));
        c.properties = Properties {
            request_problem_information: problem_info,
            ..Default::default()
        }
        .into();
        let (mut raw, _) = Raw::connect_with(broker.addr, c);
        raw.send(&Packet::Connect(Box::new(connect_packet(V5, "again"))));
        match raw.until_closed().last() {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason, ReasonCode::PROTOCOL_ERROR);
                assert_eq!(d.properties.reason_string.is_some(), want, "{d:?}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn server_keep_alive_and_mqtt3_keep_alive_limit() {
    let broker = Broker::start(&["--keep-alive-max-secs", "30"]);
    let mut c = connect_packet(V5, "ka5");
    c.keep_alive = 0;
    let (_, ack) = Raw::connect_with(broker.addr, c);
    assert_eq!(ack.unwrap().properties.server_keep_alive, Some(30));
    let mut c = connect_packet(V5, "ka5b");
    c.keep_alive = 10;
    let (_, ack) = Raw::connect_with(broker.addr, c);
    assert_eq!(ack.unwrap().properties.server_keep_alive, None);
    let mut c = connect_packet(V4, "ka3");
    c.keep_alive = 60;
    let (_, ack) = Raw::connect_with(broker.addr, c);
    assert_eq!(ack.unwrap().code, ReasonCode(2), "identifier rejected");
}

fn publish_v5(raw: &mut Raw, topic: &str, qos: QoS, id: u16) -> Option<Packet> {
    raw.publish(topic, b"x", qos, id);
    raw.recv()
}

#[test]
fn limits_topic_levels_subscriptions_rate_and_qos() {
    let broker = Broker::start(&[
        "--topic-levels-max",
        "3",
        "--subscriptions-per-session-max",
        "2",
        "--publish-rate-max",
        "20",
        "--qos-max",
        "1",
    ]);
    let (mut c, ack) = Raw::connect(broker.addr, V5, &id_on("lim", 0), true);
    assert_eq!(ack.properties.maximum_qos, Some(QoS::AtLeastOnce));
    match publish_v5(&mut c, "a/b/c/d", QoS::AtLeastOnce, 1) {
        Some(Packet::PubResp(r)) => assert_eq!(r.reason, ReasonCode::TOPIC_NAME_INVALID),
        other => panic!("{other:?}"),
    }
    let sub = |c: &mut Raw, filter: &str, qos: QoS| {
        c.send(&Packet::Subscribe(Subscribe {
            packet_id: PacketId::new(2).unwrap(),
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        }));
        match c.recv() {
            Some(Packet::SubAck(a)) => a.reasons[0],
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        sub(&mut c, "a/b/c/d", QoS::AtLeastOnce),
        ReasonCode::TOPIC_FILTER_INVALID
    );
    assert_eq!(
        sub(&mut c, "x/1", QoS::ExactlyOnce),
        ReasonCode(1),
        "granted at qos_max"
    );
    assert_eq!(sub(&mut c, "x/2", QoS::AtLeastOnce), ReasonCode(1));
    assert_eq!(
        sub(&mut c, "x/3", QoS::AtLeastOnce),
        ReasonCode::QUOTA_EXCEEDED
    );
    assert_eq!(
        sub(&mut c, "x/1", QoS::AtLeastOnce),
        ReasonCode(1),
        "replacing is not a new one"
    );
    // QoS above qos_max: disconnected with 0x9B.
    match publish_v5(&mut c, "x/1", QoS::ExactlyOnce, 3) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::QOS_NOT_SUPPORTED),
        other => panic!("{other:?}"),
    }
    // Over the publish rate: disconnected with 0x96.
    let (mut fast, _) = Raw::connect(broker.addr, V5, &id_on("fast", 1), true);
    let mut burst = bytes::BytesMut::new();
    for _ in 0..100 {
        let p = Publish {
            dup: false,
            qos: QoS::AtMostOnce,
            retain: false,
            topic: "r/t".into(),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from_static(b"x"),
        };
        Packet::Publish(p).encode(V5, &mut burst).unwrap();
    }
    let _ = fast.stream.write_all(&burst);
    match fast.until_closed().last() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::MESSAGE_RATE_TOO_HIGH),
        other => panic!("{other:?}"),
    }
    // Under the rate: fine.
    let (mut slow, _) = Raw::connect(broker.addr, V5, &id_on("slow", 1), true);
    for i in 1..=5 {
        slow.publish_acked("r/t", b"x", i);
        std::thread::sleep(Duration::from_millis(60));
    }
}

#[test]
fn connection_limit_per_shard() {
    let broker = Broker::start(&["--connections-per-shard-max", "1"]);
    let mut ok = Vec::new();
    let mut refused = 0;
    for i in 0..6 {
        let mut raw = Raw::connect_tcp(broker.addr);
        raw.decoder.version = V4;
        raw.send(&Packet::Connect(Box::new(connect_packet(
            V4,
            &format!("cl-{i}"),
        ))));
        match raw.recv() {
            // A connection handed to a full home shard gets a refusing CONNACK (0x89 / 3).
            Some(Packet::ConnAck(a)) if a.code.is_success() => ok.push(raw),
            _ => refused += 1,
        }
    }
    assert!(!ok.is_empty());
    assert_eq!(refused, 6 - ok.len());
    // At most one open connection per shard at any time.
    let mut open = 0;
    for c in &mut ok {
        c.send(&Packet::PingReq);
        if matches!(
            c.recv_within(Duration::from_millis(500)),
            Some(Packet::PingResp)
        ) {
            open += 1;
        }
    }
    assert!(open <= 2, "{open} open of {} accepted", ok.len());
}

#[test]
fn mqtt_js_v5_smoke() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/js");
    let broker = Broker::start(&[]);
    let out = Command::new("node")
        .arg(format!("{dir}/smoke.mjs"))
        .arg(broker.port().to_string())
        .arg(id_on("js-sub", 0))
        .arg(id_on("js-pub", 1))
        .output()
        .expect("node (MQTT.js installed by scripts/test.sh)");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Mosquitto process, killed on drop.
struct Mosquitto(std::process::Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The next PUBLISH within `wait`, or None.
fn publish_within(raw: &mut Raw, wait: Duration) -> Option<Publish> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return None;
        }
        match raw.recv_within(left) {
            Some(Packet::Publish(p)) => return Some(p),
            Some(_) => continue,
            None => return None,
        }
    }
}

#[test]
fn a_mosquitto_bridge_connects_and_carries_topics_both_ways_without_loops() {
    let broker = Broker::start(&[]);
    let mport = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = temp_dir("bridge");
    let conf = dir.join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "listener {mport} 127.0.0.1\nallow_anonymous true\npersistence false\n\
             connection ringmq\naddress 127.0.0.1:{}\ntopic bridge/# both 1\n\
             bridge_protocol_version mqttv311\ntry_private true\ncleansession true\n\
             restart_timeout 1\n",
            broker.port()
        ),
    )
    .unwrap();
    let _mosquitto = Mosquitto(
        Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mosquitto (installed by scripts/test.sh)"),
    );
    let maddr: std::net::SocketAddr = format!("127.0.0.1:{mport}").parse().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !common::accepts(maddr) {
        assert!(
            std::time::Instant::now() < deadline,
            "mosquitto did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut on_ringmq, _) = Raw::connect(broker.addr, V4, &id_on("br-sub", 0), true);
    on_ringmq.subscribe("bridge/#", QoS::AtLeastOnce);
    let (mut on_mosquitto, _) = Raw::connect(maddr, V4, "br-msub", true);
    on_mosquitto.subscribe("bridge/#", QoS::AtLeastOnce);
    // Mosquitto -> ringmq, once the bridge is up (it retries every second).
    let (mut mpub, _) = Raw::connect(maddr, V4, "br-mpub", true);
    let mut got = None;
    for i in 0..20u16 {
        mpub.publish_acked("bridge/from-mosquitto", b"m", i + 1);
        got = publish_within(&mut on_ringmq, Duration::from_millis(500));
        if got.is_some() {
            break;
        }
    }
    let got = got.expect("the bridge never delivered to ringmq");
    assert_eq!(&*got.topic, "bridge/from-mosquitto");
    // Drain what the retries left on both sides.
    std::thread::sleep(Duration::from_millis(500));
    while publish_within(&mut on_ringmq, Duration::from_millis(200)).is_some() {}
    while publish_within(&mut on_mosquitto, Duration::from_millis(200)).is_some() {}
    // ringmq -> Mosquitto.
    let (mut rpub, _) = Raw::connect(broker.addr, V4, &id_on("br-rpub", 1), true);
    rpub.publish_acked("bridge/from-ringmq", b"r", 1);
    let p = publish_within(&mut on_mosquitto, Duration::from_secs(5)).expect("ringmq -> mosquitto");
    assert_eq!(&*p.topic, "bridge/from-ringmq");
    let p =
        publish_within(&mut on_ringmq, Duration::from_secs(5)).expect("ringmq's own subscriber");
    assert_eq!(&*p.topic, "bridge/from-ringmq");
    // No loop: one more publish on each side reaches each subscriber exactly once.
    mpub.publish_acked("bridge/once", b"1", 99);
    let mut copies = 0;
    while publish_within(&mut on_mosquitto, Duration::from_millis(1500)).is_some() {
        copies += 1;
    }
    assert_eq!(copies, 1, "a bridged message came back to Mosquitto");
    let mut copies = 0;
    while publish_within(&mut on_ringmq, Duration::from_millis(500)).is_some() {
        copies += 1;
    }
    assert_eq!(copies, 1);
}

/// An MQTT 5 raw client logged in as `user`, or the CONNACK reason when refused.
fn login(broker: &Broker, client: &str, user: &str, password: &str) -> Result<Raw, u8> {
    let mut c = connect_packet(V5, client);
    c.username = Some(user.into());
    c.password = Some(Bytes::copy_from_slice(password.as_bytes()));
    let (raw, ack) = Raw::connect_with(broker.addr, c);
    match ack {
        Some(a) if a.code.is_success() => Ok(raw),
        Some(a) => Err(a.code.0),
        None => Err(0xFF),
    }
}

/// SIGHUP to the broker, then a tick on every shard.
fn hup(broker: &Broker) {
    let status = Command::new("kill")
        .args(["-HUP", &broker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    std::thread::sleep(Duration::from_millis(700));
}

#[test]
fn sighup_removes_subscriptions_the_reloaded_acl_no_longer_allows() {
    let (passwd, acl) = auth_files("revoke");
    let broker = start_with_auth(&passwd, &acl);
    let client = id_on("hup-r", 0);
    let mut alice = login(&broker, &client, "alice", "s3cret").unwrap();
    alice.subscribe("public/#", QoS::AtMostOnce);
    alice.subscribe(&format!("devices/{client}/#"), QoS::AtMostOnce);
    alice.publish("public/1", b"before", QoS::AtMostOnce, 0);
    let got = alice.drain_publishes(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1, "allowed at first: her own message comes back");
    // public/# may still be written, no longer read.
    std::fs::write(
        &acl,
        "topic write public/#\npattern readwrite devices/%c/#\n",
    )
    .unwrap();
    hup(&broker);
    alice.publish("public/2", b"after", QoS::AtMostOnce, 0);
    alice.publish(&format!("devices/{client}/x"), b"still", QoS::AtMostOnce, 0);
    let got = alice.drain_publishes(2, Duration::from_secs(2));
    let payloads: Vec<&[u8]> = got.iter().map(|p| &p.payload[..]).collect();
    assert_eq!(
        payloads,
        [&b"still"[..]],
        "the public/# subscription is gone, the allowed one stays"
    );
}

#[test]
fn sighup_reloads_the_password_and_acl_files_and_keeps_them_on_a_bad_line() {
    let (passwd, acl) = auth_files("reload");
    let broker = start_with_auth(&passwd, &acl);
    let reason = |raw: &mut Raw, id: u16| match publish_v5(raw, "public/x", QoS::AtLeastOnce, id) {
        Some(Packet::PubResp(r)) => Some(r.reason.0),
        _ => None,
    };
    let mut alice = login(&broker, &id_on("hup-a", 1), "alice", "s3cret").unwrap();
    assert_eq!(reason(&mut alice, 1), Some(0));
    // The ACL no longer lets anyone write public/#; bob is removed from the password file.
    std::fs::write(
        &acl,
        "topic read public/#\npattern readwrite devices/%c/#\n",
    )
    .unwrap();
    let text = std::fs::read_to_string(&passwd).unwrap();
    let without_bob: String = text
        .lines()
        .filter(|l| !l.starts_with("bob:"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&passwd, without_bob).unwrap();
    hup(&broker);
    // The connected client is checked again on its next publish.
    assert_eq!(reason(&mut alice, 2), Some(0x87));
    assert_eq!(
        login(&broker, &id_on("hup-b", 0), "bob", "hunter2").err(),
        Some(0x86)
    );
    // A bad line: the broker keeps what it had and carries on.
    std::fs::write(&acl, "topic readwrite public/#\nthis is not a rule\n").unwrap();
    hup(&broker);
    assert_eq!(reason(&mut alice, 3), Some(0x87));
    assert!(login(&broker, &id_on("hup-a2", 0), "alice", "s3cret").is_ok());
}
