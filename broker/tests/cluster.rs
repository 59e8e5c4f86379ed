//! A cluster of real ringmq nodes (2 shards each) over one real Kafka-protocol broker
//! (tansu) on free ports: what is published on one node reaches subscribers on the others at
//! QoS 0, 1 and 2, through wildcards, in order per publisher; paho-mqtt (3.1.1 and 5) and
//! mosquitto_pub / mosquitto_sub across nodes; retained messages kept on every node; a will crossing nodes; a shared group
//! served once across nodes; messages for a SIGKILLed node's persistent session wait in Kafka
//! until it is back; a node dead past `node_keep_ms` forgotten (its number reused by a new
//! node) and routed to again when it is back; retained messages for nodes that join later or come back without their
//! store; Kafka -> MQTT records reach every node; configuration errors name the key.
//! Sessions moving between nodes: `cluster_moves.rs`; `$SYS`, metrics and congestion:
//! `cluster_flow.rs`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/redis.rs"]
mod redis;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "common/cluster.rs"]
mod nodes;

use common::{refused_start, scratch_dir, Broker, Raw};
use kafka::Tansu;
use net::codec::{Packet, PubRespKind, Publish, QoS};
use nodes::{
    drain, node_config, node_config_with, payloads, start_node, start_node_with_metrics,
    until_metric, until_routed, V5,
};

#[test]
fn publishes_cross_nodes_at_each_qos_through_wildcards_in_order() {
    let tansu = Tansu::start();
    let a = start_node(&tansu, "a");
    let b = start_node(&tansu, "b");
    let mut subs = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let (mut c, _) = Raw::connect(b.addr, V5, &format!("sub-{i}"), true);
        c.subscribe("site/+/temp", qos);
        subs.push((qos, c));
    }
    let (mut publisher, _) = Raw::connect(a.addr, V5, "pub-a", true);
    let mut routed = Duration::ZERO;
    for (_, s) in &mut subs {
        routed = routed.max(until_routed(&mut publisher, s, "site/probe/temp"));
    }
    println!("a subscription on node b routed from node a within {routed:?}");
    const N: usize = 50;
    for (qos, id) in [(QoS::AtLeastOnce, 1u16), (QoS::ExactlyOnce, 2u16)] {
        for i in 0..N {
            let payload = format!("{qos:?}-{i}");
            publisher.publish("site/s1/temp", payload.as_bytes(), qos, id);
            // The acknowledgement leaves once Kafka has the copy for node b.
            match qos {
                QoS::AtLeastOnce => assert_eq!(
                    publisher.puback_within(id, Duration::from_secs(10)),
                    Some(0)
                ),
                _ => loop {
                    match publisher.recv_within(Duration::from_secs(10)) {
                        Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRec => {
                            publisher.ack(PubRespKind::PubRel, r.packet_id);
                        }
                        Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubComp => break,
                        other => panic!("expected PUBREC / PUBCOMP, got {other:?}"),
                    }
                },
            }
        }
    }
    for (sub_qos, s) in &mut subs {
        let got = drain(s, 2 * N, Duration::from_secs(20));
        let want: Vec<String> = ["AtLeastOnce", "ExactlyOnce"]
            .iter()
            .flat_map(|q| (0..N).map(move |i| format!("{q}-{i}")))
            .collect();
        assert_eq!(
            payloads(&got),
            want,
            "subscriber at {sub_qos:?}: every message, in order"
        );
        for p in &got {
            assert_eq!(&*p.topic, "site/s1/temp");
            assert!(p.qos <= *sub_qos);
        }
    }
    // Warm: a new subscription's route, from its SUBACK (sent once Kafka has the route
    // record) to the first publish on the other node that reaches it.
    let (mut late, _) = Raw::connect(b.addr, V5, "late-sub", true);
    let start = Instant::now();
    late.subscribe("late/topic", QoS::AtMostOnce);
    let suback = start.elapsed();
    let routed = until_routed(&mut publisher, &mut late, "late/topic");
    println!("a new subscription: SUBACK after {suback:?}, routed from node a {routed:?} later");
    // A publish with no subscriber anywhere else is acknowledged at once (no copy).
    publisher.publish("nobody/here", b"x", QoS::AtLeastOnce, 3);
    assert_eq!(publisher.puback_within(3, Duration::from_secs(5)), Some(0));
}

#[test]
fn paho_clients_on_different_nodes_at_each_qos() {
    let tansu = Tansu::start();
    let a = start_node(&tansu, "pa");
    let b = start_node(&tansu, "pb");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_p2p.py");
    for version in ["v311", "v5"] {
        // The subscriber on node a, the publisher on node b: QoS 0, 1 and 2, each once, in
        // order per topic.
        let status = Command::new("python3")
            .args([script, &a.port().to_string(), version])
            .args([
                &format!("paho-sub-{version}"),
                &format!("paho-pub-{version}"),
            ])
            .arg(b.port().to_string())
            .status()
            .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
        assert!(status.success(), "paho {version} across nodes");
    }
}

#[test]
fn mosquitto_clients_on_different_nodes_and_a_retained_message_on_every_node() {
    let tansu = Tansu::start();
    let a = start_node(&tansu, "ma");
    let b = start_node(&tansu, "mb");
    let (mut probe_sub, _) = Raw::connect(a.addr, V5, "probe-sub", true);
    probe_sub.subscribe("m/#", QoS::AtMostOnce);
    let (mut probe_pub, _) = Raw::connect(b.addr, V5, "probe-pub", true);
    until_routed(&mut probe_pub, &mut probe_sub, "m/probe");
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &a.port().to_string()])
        .args(["-t", "m/x", "-q", "1", "-C", "5", "-W", "20", "-i", "msub"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // mosquitto_sub's subscription must reach node b's table before the publishes.
    until_routed(&mut probe_pub, &mut probe_sub, "m/probe2");
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..5 {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
            .args(["-t", "m/x", "-q", "1", "-m", &format!("hello {i}")])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let out = sub.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Five publishers (one mosquitto_pub each): MQTT orders each one's messages only.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["hello 0", "hello 1", "hello 2", "hello 3", "hello 4"],
        "mosquitto_sub on node a got mosquitto_pub's messages from node b"
    );
    // Retained on b, then a subscriber arriving on a gets it from a's own copy.
    let ok = Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.port().to_string()])
        .args(["-t", "state/lamp", "-q", "1", "-r", "-m", "on"])
        .status()
        .unwrap();
    assert!(ok.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &a.port().to_string()])
            .args(["-t", "state/#", "-C", "1", "-W", "1", "--retained-only"])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).trim() == "on" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the retained message did not reach node a"
        );
    }
    // The will of a client of node a that vanished reaches a subscriber on node b.
    let (mut will_sub, _) = Raw::connect(b.addr, V5, "will-sub", true);
    will_sub.subscribe("wills/#", QoS::AtLeastOnce);
    let (mut on_a, _) = Raw::connect(a.addr, V5, "probe-a", true);
    until_routed(&mut on_a, &mut will_sub, "wills/probe");
    let mut doomed = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &a.port().to_string()])
        .args(["-t", "none", "-i", "doomed"])
        .args(["--will-topic", "wills/doomed", "--will-payload", "gone"])
        .args(["--will-qos", "1"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    doomed.kill().unwrap();
    let _ = doomed.wait();
    let got = drain(&mut will_sub, 1, Duration::from_secs(10));
    assert_eq!(payloads(&got), ["gone"], "the will crossed to node b");
}

#[test]
fn a_shared_group_gets_each_message_once_across_nodes() {
    let tansu = Tansu::start();
    let a = start_node(&tansu, "sa");
    let b = start_node(&tansu, "sb");
    let (mut on_b1, _) = Raw::connect(b.addr, V5, "share-b1", true);
    let (mut on_b2, _) = Raw::connect(b.addr, V5, "share-b2", true);
    on_b1.subscribe("$share/g/jobs/#", QoS::AtLeastOnce);
    on_b2.subscribe("$share/g/jobs/#", QoS::AtLeastOnce);
    // A plain subscriber on b shows when b's routes are known on a.
    let (mut watch, _) = Raw::connect(b.addr, V5, "watch-b", true);
    watch.subscribe("jobs/#", QoS::AtMostOnce);
    let (mut publisher, _) = Raw::connect(a.addr, V5, "share-pub", true);
    until_routed(&mut publisher, &mut watch, "jobs/probe");
    // The group's probes went to b's members once each too: start from empty.
    drain(&mut on_b1, usize::MAX, Duration::from_millis(300));
    drain(&mut on_b2, usize::MAX, Duration::from_millis(300));
    const N: usize = 20;
    for i in 0..N {
        publisher.publish(&format!("jobs/{i}"), b"job", QoS::AtLeastOnce, 1);
        assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    }
    let got = drain(&mut on_b1, N, Duration::from_secs(3)).len()
        + drain(&mut on_b2, N, Duration::from_secs(3)).len();
    assert_eq!(got, N, "members only on node b: each job once there");
    // A member on a: a's publishes are served by it alone.
    let (mut on_a, _) = Raw::connect(a.addr, V5, "share-a", true);
    on_a.subscribe("$share/g/jobs/#", QoS::AtLeastOnce);
    common::settle();
    for i in 0..N {
        publisher.publish(&format!("jobs/{i}"), b"job", QoS::AtLeastOnce, 1);
        assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    }
    let here = drain(&mut on_a, N, Duration::from_secs(5)).len();
    let there = drain(&mut on_b1, N, Duration::from_secs(1)).len()
        + drain(&mut on_b2, N, Duration::from_secs(1)).len();
    assert_eq!(
        (here, there),
        (N, 0),
        "a group with a member here is served here, once"
    );
}

#[test]
fn three_nodes_route_to_each_other_and_a_group_across_two_gets_each_message_once() {
    let tansu = Tansu::start();
    let (x, metrics) = start_node_with_metrics(&tansu, "tx");
    let (y, y_metrics) = start_node_with_metrics(&tansu, "ty");
    let z = start_node(&tansu, "tz");
    let (mut on_y, _) = Raw::connect(y.addr, V5, "plain-y", true);
    let (mut on_z, _) = Raw::connect(z.addr, V5, "plain-z", true);
    on_y.subscribe("fleet/#", QoS::AtLeastOnce);
    on_z.subscribe("fleet/#", QoS::AtLeastOnce);
    let (mut member_y, _) = Raw::connect(y.addr, V5, "member-y", true);
    let (mut member_z, _) = Raw::connect(z.addr, V5, "member-z", true);
    member_y.subscribe("$share/g3/fleet/#", QoS::AtLeastOnce);
    member_z.subscribe("$share/g3/fleet/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(x.addr, V5, "pub-x", true);
    until_routed(&mut publisher, &mut on_y, "fleet/probe");
    until_routed(&mut publisher, &mut on_z, "fleet/probe");
    common::settle();
    for c in [&mut on_y, &mut on_z, &mut member_y, &mut member_z] {
        drain(c, usize::MAX, Duration::from_millis(300));
    }
    const N: usize = 30;
    for i in 0..N {
        publisher.publish(
            &format!("fleet/{i}"),
            i.to_string().as_bytes(),
            QoS::AtLeastOnce,
            1,
        );
        assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    for (node, c) in [("y", &mut on_y), ("z", &mut on_z)] {
        let got = drain(c, N, Duration::from_secs(20));
        assert_eq!(
            payloads(&got),
            want,
            "the subscriber on node {node}: all, in order"
        );
    }
    let (from_y, from_z) = (
        drain(&mut member_y, N, Duration::from_secs(3)).len(),
        drain(&mut member_z, N, Duration::from_secs(1)).len(),
    );
    assert_eq!(
        from_y + from_z,
        N,
        "the group across nodes y and z: each message once"
    );
    assert!(
        from_y > 0 && from_z > 0,
        "the group's copies rotate between its nodes: {from_y} / {from_z}"
    );
    // The other directions: z -> y and y -> z.
    let (mut pub_z, _) = Raw::connect(z.addr, V5, "pub-z", true);
    until_routed(&mut pub_z, &mut on_y, "fleet/from-z");
    let (mut pub_y, _) = Raw::connect(y.addr, V5, "pub-y", true);
    until_routed(&mut pub_y, &mut on_z, "fleet/from-y");
    // Node x's view: three live nodes; each copy it produced counted once in its latency
    // histogram.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(common::metric(&metrics, "ringmq_cluster_nodes_live{"), 3);
    let copies = common::metric(&metrics, "ringmq_cluster_out_delivered_total{");
    assert!(copies >= 2 * N as u64, "{copies} copies");
    assert_eq!(
        common::metric(&metrics, "ringmq_cluster_out_latency_seconds_count{"),
        copies
    );
    // Node y's view: every message it read from its downlink aged in its lag histogram.
    let read = common::metric(&y_metrics, "ringmq_cluster_in_received_total{");
    assert!(read >= N as u64, "{read} read");
    assert_eq!(
        common::metric(&y_metrics, "ringmq_cluster_in_lag_seconds_count{"),
        read
    );
}

#[test]
fn messages_for_a_dead_nodes_persistent_session_wait_in_kafka_until_it_is_back() {
    let tansu = Tansu::start();
    let a = start_node(&tansu, "ra");
    let b_dir = scratch_dir("cluster-node-b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_config = node_config(&tansu, "rb");
    let start_b = || Broker::start_in(&b_dir, &["--config", b_config.to_str().unwrap()]);
    let mut b = start_b();
    let (mut sub, _) = Raw::connect(b.addr, V5, "persist", false);
    sub.subscribe("r/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(a.addr, V5, "r-pub", true);
    until_routed(&mut publisher, &mut sub, "r/probe");
    drop(sub);
    // SIGKILL: no "left" heartbeat; a sees b dead after the node timeout, but keeps the
    // routes of b's persistent session: the copies wait in b's downlink.
    let _ = b.child.kill();
    let _ = b.child.wait();
    std::thread::sleep(Duration::from_millis(2500));
    for i in 0..5 {
        publisher.publish(
            "r/while-dead",
            format!("{i}").as_bytes(),
            QoS::AtLeastOnce,
            1,
        );
        assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    }
    // b back with its persistent session (its own store) gets them, then what follows.
    let b = start_b();
    let (mut resumed, ack) = Raw::connect(b.addr, V5, "persist", false);
    assert!(ack.session_present);
    let got = drain(&mut resumed, 5, Duration::from_secs(30));
    assert_eq!(
        payloads(&got),
        ["0", "1", "2", "3", "4"],
        "every message acknowledged while node b was dead, in order"
    );
    publisher.publish("r/after", b"after", QoS::AtLeastOnce, 1);
    assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    let got = drain(&mut resumed, 1, Duration::from_secs(20));
    assert_eq!(payloads(&got), ["after"], "node b is routed to again");
}

#[test]
fn a_node_dead_past_node_keep_ms_is_forgotten_and_routed_to_again_when_back() {
    let tansu = Tansu::start();
    let keep = "node_keep_ms = 1500\n";
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let a_config = node_config_with(&tansu, "fa", keep);
    let a = Broker::start(&[
        "--config",
        a_config.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let b_dir = scratch_dir("cluster-node-fb");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_config = node_config_with(&tansu, "fb", keep);
    let start_b = || Broker::start_in(&b_dir, &["--config", b_config.to_str().unwrap()]);
    let mut b = start_b();
    let (mut sub, _) = Raw::connect(b.addr, V5, "kept", false);
    sub.subscribe("f/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(a.addr, V5, "f-pub", true);
    until_routed(&mut publisher, &mut sub, "f/probe");
    until_metric(&metrics, "ringmq_cluster_nodes_known", 2);
    drop(sub);
    let _ = b.child.kill();
    let _ = b.child.wait();
    // Dead for longer than node_keep_ms: node a forgets b (its number is free).
    until_metric(&metrics, "ringmq_cluster_nodes_known", 1);
    // A new node takes b's number: a's copies for it go to its downlink, not to b's.
    let c_config = node_config_with(&tansu, "fc", keep);
    let c = Broker::start(&["--config", c_config.to_str().unwrap()]);
    let (mut c_sub, _) = Raw::connect(c.addr, V5, "c-sub", true);
    c_sub.subscribe("f/#", QoS::AtLeastOnce);
    until_routed(&mut publisher, &mut c_sub, "f/probe");
    // b back with its store: it writes no route record (the topic has them), yet a routes
    // to it again (the routes a put aside when it forgot b).
    let b = start_b();
    until_metric(&metrics, "ringmq_cluster_nodes_known", 3);
    let (mut resumed, ack) = Raw::connect(b.addr, V5, "kept", false);
    assert!(ack.session_present);
    publisher.publish("f/after", b"after", QoS::AtLeastOnce, 1);
    assert_eq!(publisher.puback_within(1, Duration::from_secs(10)), Some(0));
    let got = drain(&mut resumed, 1, Duration::from_secs(30));
    assert_eq!(payloads(&got), ["after"], "node b is routed to again");
    let got = drain(&mut c_sub, 1, Duration::from_secs(20));
    assert_eq!(payloads(&got), ["after"], "and node c still is");
}

/// mosquitto_pub a retained QoS 1 message (an empty `message` clears) to `port`.
fn retain(port: u16, topic: &str, message: &str) {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "5"])
        .args(["-t", topic, "-q", "1", "-r"])
        .args(["-D", "publish", "user-property", "site", "north"]);
    if message.is_empty() {
        cmd.arg("-n");
    } else {
        cmd.args(["-m", message]);
    }
    assert!(cmd.status().unwrap().success());
}

/// The retained messages a new subscription to `filter` on `node` gets (topic and payload,
/// sorted), each checked to carry the publisher's user property. Live messages (a copy from
/// another node may arrive around the SUBACK: RETAIN clear) are not counted.
fn retained_on(node: &Broker, filter: &str) -> Vec<String> {
    let (mut c, _) = Raw::connect(node.addr, V5, "retained-reader", true);
    c.send(&Packet::Subscribe(net::codec::Subscribe {
        packet_id: net::codec::PacketId::new(1).unwrap(),
        properties: Default::default(),
        filters: vec![(
            filter.into(),
            net::codec::SubscriptionOptions::qos(QoS::AtMostOnce),
        )],
    }));
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Some(packet) = (!left.is_zero()).then(|| c.recv_within(left)).flatten() else {
            break;
        };
        if let Packet::Publish(p) = packet {
            if p.retain {
                assert_eq!(
                    p.properties.user_properties,
                    [("site".into(), "north".into())]
                );
                out.push(format!(
                    "{} {}",
                    p.topic,
                    String::from_utf8_lossy(&p.payload)
                ));
            }
        }
    }
    out.sort_unstable();
    out
}

#[test]
fn nodes_that_join_later_or_come_back_empty_have_the_clusters_retained_messages() {
    let tansu = Tansu::start();
    // Node a alone: its retained messages (and a clear) go to the retained topic too.
    let a_config = node_config(&tansu, "la");
    let start_a = || {
        Broker::start(&[
            "--config",
            a_config.to_str().unwrap(),
            "--durability",
            "memory",
        ])
    };
    let mut a = start_a();
    retain(a.port(), "state/lamp", "on");
    retain(a.port(), "state/door", "open");
    retain(a.port(), "state/gone", "soon");
    retain(a.port(), "state/gone", "");
    // Node b joins later (with its own durable store): it has them.
    let b_dir = scratch_dir("cluster-retained-b");
    std::fs::create_dir_all(&b_dir).unwrap();
    let b_config = node_config(&tansu, "lb");
    let start_b = || Broker::start_in(&b_dir, &["--config", b_config.to_str().unwrap()]);
    let mut b = start_b();
    assert_eq!(
        retained_on(&b, "state/#"),
        ["state/door open", "state/lamp on"]
    );
    // Node a comes back from SIGKILL without a store (memory): it has them again.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let a = start_a();
    assert_eq!(
        retained_on(&a, "state/#"),
        ["state/door open", "state/lamp on"]
    );
    // While b is down, a changes one and clears the other: b back from its own log (which
    // holds the older values) has the newer ones.
    let _ = b.child.kill();
    let _ = b.child.wait();
    // Once a sees b dead (node_timeout_ms 1500), no copy goes to b's downlink: only the
    // retained topic can tell b.
    std::thread::sleep(Duration::from_millis(2500));
    retain(a.port(), "state/door", "closed");
    retain(a.port(), "state/lamp", "");
    let b = start_b();
    assert_eq!(retained_on(&b, "state/#"), ["state/door closed"]);
    // A value from b; node c joins: the newest of each.
    retain(b.port(), "state/lamp", "off");
    let c = start_node(&tansu, "lc");
    assert_eq!(
        retained_on(&c, "state/#"),
        ["state/door closed", "state/lamp off"]
    );
    // A retained message's PUBACK waits for Kafka's copy (tansu stopped: none; resumed: 0).
    let (mut publisher, _) = Raw::connect(c.addr, V5, "retain-pub", true);
    let tansu_pid = tansu.child.id().to_string();
    let signal = |s: &str| {
        let ok = Command::new("kill").args([s, &tansu_pid]).status().unwrap();
        assert!(ok.success());
    };
    let mut properties = net::codec::BoxedProperties::default();
    properties
        .user_properties
        .push(("site".into(), "north".into()));
    signal("-STOP");
    publisher.send(&Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "state/fan".into(),
        packet_id: net::codec::PacketId::new(7),
        properties,
        payload: bytes::Bytes::from_static(b"fast"),
    }));
    let early = publisher.puback_within(7, Duration::from_millis(1500));
    signal("-CONT");
    assert_eq!(early, None, "no PUBACK before Kafka has the retained copy");
    assert_eq!(publisher.puback_within(7, Duration::from_secs(15)), Some(0));
    // What b learnt from the retained topic is in its own log: b restarted on an empty
    // retained topic still has it (state/door only ever reached b that way). First b has
    // state/fan from its downlink (the PUBACK waited for Kafka, not for b).
    let deadline = Instant::now() + Duration::from_secs(20);
    while !retained_on(&b, "state/fan").contains(&"state/fan fast".to_string()) {
        assert!(Instant::now() < deadline, "state/fan did not reach node b");
    }
    let mut b = b;
    let _ = b.child.kill();
    let _ = b.child.wait();
    let other = node_config_with(&tansu, "lb", "retained_topic = \"ringmq.retained-other\"\n");
    let b = Broker::start_in(&b_dir, &["--config", other.to_str().unwrap()]);
    assert_eq!(
        retained_on(&b, "state/#"),
        ["state/door closed", "state/fan fast", "state/lamp off"]
    );
}

#[test]
fn kafka_records_reach_the_subscribers_of_every_node() {
    let tansu = Tansu::start();
    let rule = "[[kafka.to_mqtt]]\ntopic = \"cmds\"\nmqtt_topic = \"cmd/{key}\"\nqos = 1\n\
                group = \"cl-in\"\n";
    let start = |node: &str| {
        let path = node_config_with(&tansu, node, rule);
        Broker::start(&["--config", path.to_str().unwrap()])
    };
    let (a, b) = (start("ka"), start("kb"));
    let mut subs = Vec::new();
    for (i, node) in [&a, &b].into_iter().enumerate() {
        let (mut s, _) = Raw::connect(node.addr, V5, &format!("k-sub-{i}"), true);
        s.subscribe("cmd/+", QoS::AtLeastOnce);
        subs.push(s);
    }
    // Each node knows the other's route.
    let (mut on_a, _) = Raw::connect(a.addr, V5, "k-probe-a", true);
    let (mut on_b, _) = Raw::connect(b.addr, V5, "k-probe-b", true);
    until_routed(&mut on_a, &mut subs[1], "cmd/probe");
    until_routed(&mut on_b, &mut subs[0], "cmd/probe");
    subs[0].drain_publishes(usize::MAX, Duration::from_millis(300));
    subs[1].drain_publishes(usize::MAX, Duration::from_millis(300));
    const N: usize = 20;
    let records: Vec<_> = (0..N)
        .map(|i| (Some(format!("k{i}")), format!("{i}").into_bytes(), vec![]))
        .collect();
    kafka::produce(&tansu.brokers(), "cmds", &records);
    for (i, s) in subs.iter_mut().enumerate() {
        let mut got: Vec<usize> = drain(s, N, Duration::from_secs(30))
            .iter()
            .map(|p| std::str::from_utf8(&p.payload).unwrap().parse().unwrap())
            .collect();
        got.sort_unstable();
        got.dedup();
        assert_eq!(
            got.len(),
            N,
            "the subscriber on node {i} got every record (at least once)"
        );
    }
}

#[test]
fn a_second_process_with_the_same_node_id_takes_over_and_the_first_stops() {
    let tansu = Tansu::start();
    let mut first = start_node(&tansu, "dup");
    // Its heartbeats carry its incarnation once its shards run.
    std::thread::sleep(Duration::from_millis(1_500));
    let second = start_node(&tansu, "dup");
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = first.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the first process under node_id dup still runs"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "a clean stop: {status:?}");
    // The second serves (Raw::connect asserts a successful CONNACK).
    let (mut c, _) = Raw::connect(second.addr, V5, "after-dup", true);
    c.subscribe("dup/#", QoS::AtMostOnce);
}

#[test]
fn cluster_configuration_errors_name_the_key() {
    let dir = scratch_dir("cluster-bad");
    std::fs::create_dir_all(&dir).unwrap();
    for (text, want) in [
        ("[cluster]\nnode_id = \"a\"\n", "needs the [kafka] section"),
        (
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[cluster]\nnode_id = \"a/b\"\n",
            "cluster.node_id",
        ),
        (
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[cluster]\nnode_id = \"a\"\nheartbeat_ms = 1000\nnode_timeout_ms = 1000\n",
            "cluster.node_timeout_ms",
        ),
    ] {
        let path = dir.join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let err = refused_start(&["--config", path.to_str().unwrap()]);
        assert!(err.contains(want), "{text}: {err}");
    }
}
