//! The real `ringmq` binary with 2 shards, driven over loopback by raw clients (exact bytes,
//! bad input) and by real client libraries (rumqttc, mosquitto_pub/sub, paho-mqtt).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::time::{Duration, Instant};

use common::{id_on, settle, Broker, Raw};
use net::codec::{Packet, PacketId, ProtocolVersion, PubRespKind, QoS, ReasonCode};

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

/// Another client on the broker still gets PINGRESP: the bad input cost nothing else.
fn still_serving(broker: &Broker) {
    let (mut c, _) = Raw::connect(broker.addr, V4, &id_on("control", 1), true);
    c.send(&Packet::PingReq);
    assert_eq!(c.recv(), Some(Packet::PingResp));
}

#[test]
fn cross_shard_p2p_both_ways_all_qos() {
    let broker = Broker::start(&[]);
    for (sub_shard, pub_shard) in [(0, 1), (1, 0)] {
        let (mut sub, _) = Raw::connect(
            broker.addr,
            V4,
            &id_on(&format!("sub{sub_shard}"), sub_shard),
            true,
        );
        let (mut publ, _) = Raw::connect(
            broker.addr,
            V4,
            &id_on(&format!("pub{pub_shard}"), pub_shard),
            true,
        );
        let topic = format!("p2p/{sub_shard}");
        sub.subscribe(&topic, QoS::ExactlyOnce);
        for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
            .into_iter()
            .enumerate()
        {
            publ.publish(&topic, format!("m{i}").as_bytes(), qos, 10 + i as u16);
            let p = sub.recv_publish();
            assert_eq!(
                (&*p.topic, &p.payload[..], p.qos),
                (topic.as_str(), format!("m{i}").as_bytes(), qos)
            );
            match qos {
                QoS::AtLeastOnce => sub.ack(PubRespKind::PubAck, p.packet_id.unwrap()),
                QoS::ExactlyOnce => {
                    sub.ack(PubRespKind::PubRec, p.packet_id.unwrap());
                    assert!(
                        matches!(sub.recv(), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRel)
                    );
                    sub.ack(PubRespKind::PubComp, p.packet_id.unwrap());
                }
                QoS::AtMostOnce => {}
            }
        }
    }
}

#[test]
fn wildcard_fan_out_across_shards() {
    let broker = Broker::start(&[]);
    let filters = ["fan/+/temp", "fan/#", "#", "fan/room1/temp"];
    let mut subs: Vec<Raw> = filters
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (mut c, _) = Raw::connect(
                broker.addr,
                V4,
                &id_on(&format!("fan{i}"), (i % 2) as u16),
                true,
            );
            c.subscribe(f, QoS::AtLeastOnce);
            c
        })
        .collect();
    let (mut miss, _) = Raw::connect(broker.addr, V4, &id_on("miss", 0), true);
    miss.subscribe("fan/+/humidity", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("fanpub", 1), true);
    publ.publish_acked("fan/room1/temp", b"21", 1);
    for s in &mut subs {
        let p = s.recv_publish();
        assert_eq!(&p.payload[..], b"21");
    }
    // The non-matching subscriber gets nothing: a PING answered first proves it.
    miss.send(&Packet::PingReq);
    assert_eq!(miss.recv(), Some(Packet::PingResp));
}

#[test]
fn suback_means_routes_are_in_place_on_every_shard() {
    let broker = Broker::start(&[]);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("racepub", 1), true);
    for round in 0..50 {
        let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on(&format!("race{round}"), 0), true);
        let topic = format!("race/{round}");
        sub.subscribe(&topic, QoS::AtLeastOnce);
        // No sleep: the SUBACK itself promises the publisher's shard knows the route.
        publ.publish_acked(&topic, b"x", 1);
        assert_eq!(&sub.recv_publish().payload[..], b"x", "round {round}");
    }
}

#[test]
fn qos2_duplicate_publish_is_not_redelivered() {
    let broker = Broker::start(&[]);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("q2sub", 0), true);
    sub.subscribe("q2", QoS::ExactlyOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("q2pub", 1), true);
    publ.publish("q2", b"once", QoS::ExactlyOnce, 7);
    // The same packet id again with DUP (as after a lost PUBREC), then PUBREL.
    let mut dup = net::codec::Publish {
        dup: true,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "q2".into(),
        packet_id: PacketId::new(7),
        properties: Default::default(),
        payload: bytes::Bytes::from_static(b"once"),
    };
    publ.send(&Packet::Publish(dup.clone()));
    publ.ack(PubRespKind::PubRel, PacketId::new(7).unwrap());
    let mut recs = 0;
    loop {
        match publ.recv() {
            Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRec => recs += 1,
            Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubComp => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(recs, 2);
    // After PUBCOMP the id is free again: a new message with it is delivered.
    dup.dup = false;
    dup.payload = bytes::Bytes::from_static(b"second");
    publ.send(&Packet::Publish(dup));
    // The subscriber sees "once" then "second": the duplicate was not delivered.
    let first = sub.recv_publish();
    let second = sub.recv_publish();
    assert_eq!(
        (&first.payload[..], &second.payload[..]),
        (&b"once"[..], &b"second"[..])
    );
}

#[test]
fn takeover_disconnects_the_old_connection_wherever_it_landed() {
    let broker = Broker::start(&[]);
    let client = id_on("taker", 1);
    let (mut old, _) = Raw::connect(broker.addr, V5, &client, true);
    // Several new connections: the kernel spreads them over both listeners, so some land on
    // the shard that is not the session's home and are moved there.
    for _ in 0..6 {
        let (mut new, _) = Raw::connect(broker.addr, V5, &client, true);
        let seen = old.until_closed();
        assert!(
            matches!(seen.last(), Some(Packet::Disconnect(d)) if d.reason == ReasonCode::SESSION_TAKEN_OVER),
            "{seen:?}"
        );
        new.send(&Packet::PingReq);
        assert_eq!(new.recv(), Some(Packet::PingResp));
        old = new;
    }
}

#[test]
fn persistent_session_queues_while_offline_and_redelivers_with_dup() {
    let broker = Broker::start(&[]);
    for version in [V4, V5] {
        let client = id_on(&format!("persist{}", version.level()), 0);
        let topic = format!("persist/{}", version.level());
        let (mut sub, ack) = Raw::connect(broker.addr, version, &client, false);
        assert!(!ack.session_present);
        sub.subscribe(&topic, QoS::AtLeastOnce);
        let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("ppub", 1), true);
        publ.publish_acked(&topic, b"m1", 1);
        let m1 = sub.recv_publish();
        assert!(!m1.dup);
        drop(sub); // m1 never acknowledged
        settle();
        publ.publish_acked(&topic, b"m2", 2);
        publ.publish_acked(&topic, b"m3", 3);
        let (mut sub, ack) = Raw::connect(broker.addr, version, &client, false);
        assert!(ack.session_present);
        let again = sub.recv_publish();
        assert_eq!(
            (&again.payload[..], again.dup, again.packet_id),
            (&b"m1"[..], true, m1.packet_id)
        );
        for want in [&b"m2"[..], b"m3"] {
            let p = sub.recv_publish();
            assert_eq!((&p.payload[..], p.dup), (want, false));
            sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        }
        sub.ack(PubRespKind::PubAck, again.packet_id.unwrap());
        // A clean start drops the session.
        drop(sub);
        settle();
        let (_, ack) = Raw::connect(broker.addr, version, &client, true);
        assert!(!ack.session_present);
    }
}

#[test]
fn slow_qos0_subscriber_does_not_grow_memory_and_others_carry_on() {
    let broker = Broker::start(&["--outbox-bytes-max", "1048576"]);
    let (mut slow, _) = Raw::connect(broker.addr, V4, &id_on("slow", 0), true);
    slow.subscribe("flood", QoS::AtMostOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("flooder", 1), true);
    let payload = vec![7u8; 4096];
    let baseline = broker.rss_bytes();
    // 100,000 x 4 KiB = 400 MB offered to a subscriber that never reads.
    for i in 0..100_000u32 {
        publ.publish("flood", &payload, QoS::AtMostOnce, 0);
        if i % 10_000 == 0 {
            publ.publish_acked("flood/sync", b"", 1);
        }
    }
    publ.publish_acked("flood/sync", b"", 1);
    let grown = broker.rss_bytes().saturating_sub(baseline);
    assert!(grown < 64 << 20, "broker RSS grew by {} MiB", grown >> 20);
    still_serving(&broker);
}

/// Connects, sends `bytes`, returns everything the broker sent before closing.
fn bad_input(broker: &Broker, version: ProtocolVersion, bytes: &[u8]) -> Vec<Packet> {
    let (mut c, _) = Raw::connect(broker.addr, version, &id_on("bad", 0), true);
    c.send_bytes(bytes);
    c.until_closed()
}

fn disconnect_reason(seen: &[Packet]) -> Option<ReasonCode> {
    match seen.last() {
        Some(Packet::Disconnect(d)) => Some(d.reason),
        _ => None,
    }
}

#[test]
fn bad_input_gets_the_right_reason_and_costs_nothing_else() {
    let broker = Broker::start(&["--packet-bytes-max", "65536"]);
    let (mut bystander, _) = Raw::connect(broker.addr, V4, &id_on("bystander", 1), true);
    bystander.subscribe("ok", QoS::AtLeastOnce);
    let cases: &[(&str, &[u8], ReasonCode)] = &[
        (
            "reserved packet type",
            &[0x00, 0x00],
            ReasonCode::MALFORMED_PACKET,
        ),
        (
            "QoS 3",
            &[0x36, 0x05, 0, 1, b'a', 0, 1, 0],
            ReasonCode::MALFORMED_PACKET,
        ),
        (
            "wildcard in topic name",
            &[0x30, 0x04, 0, 1, b'#', 0],
            ReasonCode::TOPIC_NAME_INVALID,
        ),
        (
            "oversized",
            &[0x30, 0x80, 0x80, 0x40],
            ReasonCode::PACKET_TOO_LARGE,
        ),
        (
            "second CONNECT",
            &[
                0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 0,
            ],
            ReasonCode::PROTOCOL_ERROR,
        ),
        (
            "invalid UTF-8",
            &[0x30, 0x05, 0, 2, 0xC3, 0x28, 0],
            ReasonCode::MALFORMED_PACKET,
        ),
        (
            "topic alias above topic_alias_max",
            &[0x30, 0x07, 0, 1, b'a', 3, 0x23, 0, 65],
            ReasonCode::TOPIC_ALIAS_INVALID,
        ),
        (
            "unknown topic alias",
            &[0x30, 0x06, 0, 0, 3, 0x23, 0, 5],
            ReasonCode::PROTOCOL_ERROR,
        ),
        (
            "SUBSCRIBE bad filter",
            &[0x82, 0x08, 0, 1, 0, 0, 2, b'a', b'#', 0],
            ReasonCode::TOPIC_FILTER_INVALID,
        ),
        (
            "server packet from client",
            &[0x90, 0x03, 0, 1, 0],
            ReasonCode::PROTOCOL_ERROR,
        ),
    ];
    for (name, bytes, want) in cases {
        let seen = bad_input(&broker, V5, bytes);
        assert_eq!(disconnect_reason(&seen), Some(*want), "{name}: {seen:?}");
    }
    // MQTT 3.1.1 has no DISCONNECT from the server: the connection just closes.
    let seen = bad_input(&broker, V4, &[0x36, 0x05, 0, 1, b'a', 0, 1]);
    assert!(seen.is_empty(), "{seen:?}");
    // The bystander was never disturbed.
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("okpub", 0), true);
    publ.publish_acked("ok", b"still here", 1);
    assert_eq!(&bystander.recv_publish().payload[..], b"still here");
}

#[test]
fn protocol_violations_before_and_at_connect() {
    let broker = Broker::start(&["--connect-timeout-ms", "500"]);
    // A packet before CONNECT: closed without a word.
    let mut c = Raw::connect_tcp(broker.addr);
    c.send_bytes(&[0xC0, 0x00]);
    assert_eq!(c.until_closed(), vec![]);
    // Unsupported protocol level: CONNACK return code 1, then closed.
    let mut c = Raw::connect_tcp(broker.addr);
    c.send_bytes(&[
        0x10, 0x0D, 0, 4, b'M', b'Q', b'T', b'T', 7, 2, 0, 60, 0, 1, b'x',
    ]);
    let seen = c.until_closed();
    assert!(
        matches!(&seen[..], [Packet::ConnAck(a)] if a.code == ReasonCode(1)),
        "{seen:?}"
    );
    // Empty client id without clean session (3.1.1): identifier rejected (2).
    let mut c = Raw::connect_tcp(broker.addr);
    c.send_bytes(&[0x10, 0x0C, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60, 0, 0]);
    let seen = c.until_closed();
    assert!(
        matches!(&seen[..], [Packet::ConnAck(a)] if a.code == ReasonCode(2)),
        "{seen:?}"
    );
    // Half-open: connected, silent, closed after connect_timeout_ms.
    let start = Instant::now();
    let mut c = Raw::connect_tcp(broker.addr);
    assert_eq!(c.until_closed(), vec![]);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    still_serving(&broker);
}

#[test]
fn keep_alive_timeout_closes_with_reason() {
    let broker = Broker::start(&[]);
    let mut c = Raw::connect_tcp(broker.addr);
    c.decoder.version = V5;
    // CONNECT v5, keep alive 1 s, client id "ka".
    c.send_bytes(&[
        0x10, 0x0F, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 1, 0, 0, 2, b'k', b'a',
    ]);
    let start = Instant::now();
    let seen = c.until_closed();
    assert!(matches!(seen.first(), Some(Packet::ConnAck(_))));
    assert_eq!(
        disconnect_reason(&seen),
        Some(ReasonCode::KEEP_ALIVE_TIMEOUT)
    );
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(4),
        "{waited:?}"
    );
}

#[test]
fn sigterm_disconnects_clients_and_exits_zero() {
    let mut broker = Broker::start(&[]);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("bye", 0), true);
    assert_eq!(broker.stop(), Some(0));
    let seen = c.until_closed();
    assert_eq!(
        disconnect_reason(&seen),
        Some(ReasonCode::SERVER_SHUTTING_DOWN)
    );
}

#[test]
fn running_out_of_file_descriptors_neither_spins_nor_stops_service() {
    // Room for the broker's own descriptors and a handful of clients.
    let broker = Broker::start_limited(48, &[]);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("fdsub", 0), true);
    sub.subscribe("fd", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("fdpub", 1), true);
    // Far more connections than descriptors: the kernel completes the handshakes, accept
    // fails with EMFILE.
    let extra: Vec<std::net::TcpStream> = (0..80)
        .filter_map(|_| std::net::TcpStream::connect(broker.addr).ok())
        .collect();
    let cpu_before = broker.cpu_seconds();
    std::thread::sleep(Duration::from_secs(2));
    let cpu = broker.cpu_seconds() - cpu_before;
    assert!(
        cpu < 0.5,
        "broker used {cpu} s of CPU in 2 s while out of descriptors"
    );
    // Existing clients are served throughout.
    for i in 1..=10u16 {
        publ.publish_acked("fd", &i.to_be_bytes(), i);
        assert_eq!(&sub.recv_publish().payload[..], &i.to_be_bytes());
    }
    drop(extra);
    drop(publ);
    // Once descriptors are free again, new clients get in.
    std::thread::sleep(Duration::from_millis(600));
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = Raw::connect_tcp(broker.addr);
        c.send_bytes(&[
            0x10, 0x0E, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'f', b'd',
        ]);
        if let Some(Packet::ConnAck(a)) = c.recv() {
            assert!(a.code.is_success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no new connection accepted after descriptors were freed"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn batched_waits_still_deliver_promptly() {
    let broker = Broker::start(&["--wait-completions-min", "16", "--wait-timeout-us", "200"]);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("batchsub", 0), true);
    sub.subscribe("batch", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("batchpub", 1), true);
    for i in 1..=20u16 {
        publ.publish_acked("batch", &i.to_be_bytes(), i);
        let p = sub.recv_publish();
        assert_eq!(&p.payload[..], &i.to_be_bytes());
        sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
    }
}

#[test]
fn full_peer_queue_pauses_the_publisher_and_loses_nothing() {
    // Tiny shard-to-shard queues: the publisher's shard must stop reading rather than drop.
    let broker = Broker::start(&[
        "--peer-queue-count-max",
        "16",
        "--peer-queue-bytes-max",
        "65536",
        "--session-queue-count-max",
        "100000",
    ]);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("bpsub", 0), true);
    sub.subscribe("bp", QoS::AtLeastOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("bppub", 1), true);
    let total = 5000u32;
    let payload = vec![0u8; 1000];
    let writer = {
        let mut stream = publ.stream.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut out = bytes::BytesMut::new();
            for i in 0..total {
                let mut p = payload.clone();
                p[..4].copy_from_slice(&i.to_be_bytes());
                let publish = net::codec::Publish {
                    dup: false,
                    qos: QoS::AtLeastOnce,
                    retain: false,
                    topic: "bp".into(),
                    packet_id: PacketId::new((i % 60_000 + 1) as u16),
                    properties: Default::default(),
                    payload: p.into(),
                };
                Packet::Publish(publish).encode(V4, &mut out).unwrap();
            }
            stream.write_all(&out).unwrap();
        })
    };
    for i in 0..total {
        let p = sub.recv_publish();
        assert_eq!(
            u32::from_be_bytes(p.payload[..4].try_into().unwrap()),
            i,
            "in order, none lost"
        );
        sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
    }
    writer.join().unwrap();
    let mut acks = 0;
    while acks < total {
        match publ.recv() {
            Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubAck => acks += 1,
            Some(_) => {}
            None => panic!("publisher disconnected"),
        }
    }
}

#[test]
fn a_second_broker_on_the_same_address_is_refused() {
    let broker = Broker::start(&[]);
    let dir = common::scratch_dir("second");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", &broker.addr.to_string(), "--shards", "2"])
        .args(["--data-dir", dir.to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&broker.addr.to_string()) && stderr.contains("already listens"),
        "{stderr}"
    );
    still_serving(&broker);
}

#[test]
fn a_client_flooding_past_its_receive_maximum_still_reads_its_disconnect() {
    // The broker's DISCONNECT waits in its socket's send queue (the client reads nothing yet,
    // its receive window is full) while the client's flood waits unread in the broker's
    // receive queue. A plain close() then resets the connection and the kernel throws the
    // DISCONNECT away; a lingering close delivers it.
    let broker = Broker::start(&["--inflight-count-max", "10"]);
    for round in 0..3 {
        let (mut c, _) = Raw::connect(broker.addr, V5, &id_on(&format!("linger{round}"), 0), true);
        set_recv_buffer(&c.stream, 16 << 10);
        c.subscribe("linger/echo", QoS::AtMostOnce);
        let mut out = bytes::BytesMut::new();
        let publish = |topic: &str, qos, id: u16, size: usize, out: &mut bytes::BytesMut| {
            let p = net::codec::Publish {
                dup: false,
                qos,
                retain: false,
                topic: topic.into(),
                packet_id: PacketId::new(id),
                properties: Default::default(),
                payload: vec![0u8; size].into(),
            };
            Packet::Publish(p).encode(V5, out).unwrap();
        };
        // Echoes that fill the client's receive window and the broker's send queue ...
        for _ in 0..600 {
            publish("linger/echo", QoS::AtMostOnce, 0, 16 << 10, &mut out);
        }
        // ... then QoS 2 publishes never released: the 11th is past the receive maximum ...
        for i in 0..100u16 {
            publish("linger/t", QoS::ExactlyOnce, i + 1, 512, &mut out);
        }
        // ... and more input the broker will not read.
        for _ in 0..10_000 {
            Packet::PingReq.encode(V5, &mut out).unwrap();
        }
        let mut writer = c.stream.try_clone().unwrap();
        let flood = std::thread::spawn(move || {
            use std::io::Write;
            // Fails once the broker closes.
            let _ = writer.write_all(&out);
        });
        std::thread::sleep(Duration::from_millis(1500));
        let seen = c.until_closed();
        flood.join().unwrap();
        assert_eq!(
            disconnect_reason(&seen),
            Some(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED),
            "round {round}: {} packets, the last not a DISCONNECT",
            seen.len(),
        );
    }
    still_serving(&broker);
}

/// Caps a socket's receive buffer (and so the window it advertises).
fn set_recv_buffer(stream: &std::net::TcpStream, bytes: i32) {
    use std::os::fd::AsRawFd;
    // SAFETY: a valid socket and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            std::ptr::from_ref(&bytes).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_RCVBUF");
}

#[test]
fn a_client_resumes_the_session_under_the_identifier_the_broker_assigned() {
    let broker = Broker::start(&[]);
    for round in 0..6 {
        let mut connect = common::connect_packet(V5, "");
        connect.clean_start = false;
        let p = net::codec::Properties {
            session_expiry_interval: Some(60),
            ..Default::default()
        };
        connect.properties = p.clone().into();
        let (mut c, ack) = Raw::connect_with(broker.addr, connect);
        let ack = ack.unwrap();
        let id = ack.properties.assigned_client_identifier.clone().unwrap();
        c.subscribe(&format!("assigned/{round}"), QoS::AtLeastOnce);
        c.send(&Packet::Disconnect(Default::default()));
        drop(c);
        settle();
        let mut again = common::connect_packet(V5, &id);
        again.clean_start = false;
        again.properties = p.into();
        let (_c, ack) = Raw::connect_with(broker.addr, again);
        assert!(ack.unwrap().session_present, "round {round}: {id}");
    }
}
