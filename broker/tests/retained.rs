//! Retained messages at scale with the real binary on 2 shards: every retained message a new
//! subscription matches arrives (mosquitto_sub at QoS 0 and 1, paho-mqtt at QoS 1), however
//! small the session queue and outbox bounds are, because matches are streamed in pages as
//! the subscriber drains them; a narrow wildcard gets exactly its branch; a persistent
//! subscriber that disconnects mid-stream gets the rest when it reconnects.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use common::{id_on, Broker, Raw};
use net::codec::{Decoder, Packet, PacketId, ProtocolVersion, PubRespKind, Publish, QoS};

const V4: ProtocolVersion = ProtocolVersion::V311;

/// Small bounds: a subscriber's queue and outbox hold a tiny part of what it is sent.
const TIGHT: [&str; 8] = [
    "--session-queue-count-max",
    "100",
    "--session-queue-high-watermark",
    "50",
    "--session-queue-low-watermark",
    "10",
    "--outbox-bytes-max",
    "16384",
];

/// Publishes `count` retained QoS 1 messages (topic from `topic(i)`, payload `i`), a window
/// of 500 in flight, and returns once every one is acknowledged.
fn load(addr: std::net::SocketAddr, count: u32, topic: impl Fn(u32) -> String) {
    let (raw, _) = Raw::connect(addr, V4, &id_on("loader", 0), true);
    let mut stream = raw.stream;
    let decoder = Decoder::new(1 << 20);
    let (mut rbuf, mut out) = (BytesMut::new(), BytesMut::new());
    let mut chunk = vec![0u8; 1 << 16];
    let (mut next, mut acked, mut inflight) = (0u32, 0u32, 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    while acked < count {
        assert!(Instant::now() < deadline, "loading took too long");
        while inflight < 500 && next < count {
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: true,
                topic: topic(next).into(),
                packet_id: PacketId::new((next % 60_000 + 1) as u16),
                properties: Default::default(),
                payload: Bytes::from(next.to_string()),
            })
            .encode(V4, &mut out)
            .unwrap();
            next += 1;
            inflight += 1;
        }
        stream.write_all(&out).unwrap();
        out.clear();
        let n = stream.read(&mut chunk).unwrap();
        assert!(n > 0, "the broker closed the loader");
        rbuf.extend_from_slice(&chunk[..n]);
        while let Ok(Some(p)) = decoder.decode(&mut rbuf) {
            if let Packet::PubResp(r) = p {
                assert_eq!(r.kind, PubRespKind::PubAck);
                acked += 1;
                inflight -= 1;
            }
        }
    }
}

/// mosquitto_sub on `filter` at `qos` until `count` messages or `wait` seconds: the topics
/// received and the seconds it took.
fn mosquitto_sub(
    broker: &Broker,
    id: &str,
    filter: &str,
    (qos, count, wait): (u8, u32, u32),
) -> (Vec<String>, f64) {
    let started = Instant::now();
    let out = Command::new("mosquitto_sub")
        .args(["-p", &broker.port().to_string(), "-i", id, "-t", filter])
        .args(["-q", &qos.to_string(), "-C", &count.to_string()])
        .args(["-W", &wait.to_string()])
        .args(["-F", "%r %t"])
        .output()
        .expect("mosquitto_sub (installed by scripts/test.sh)");
    let took = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    let topics = text
        .lines()
        .map(|l| {
            let (retain, topic) = l.split_once(' ').unwrap();
            assert_eq!(retain, "1", "{topic} arrived without RETAIN");
            topic.to_string()
        })
        .collect();
    (topics, took)
}

fn distinct(topics: &[String]) -> usize {
    topics.iter().collect::<BTreeSet<_>>().len()
}

#[test]
fn every_retained_message_reaches_new_subscribers_at_qos_0_and_1() {
    const N: u32 = 100_000;
    let broker = Broker::start(&TIGHT);
    let started = Instant::now();
    load(broker.addr, N, |i| format!("ret/{}/{}", i % 100, i / 100));
    eprintln!("{N} retained stored in {:?}", started.elapsed());
    for qos in [0u8, 1] {
        let (topics, took) = mosquitto_sub(
            &broker,
            &id_on(&format!("all-{qos}"), 1),
            "ret/#",
            (qos, N, 90),
        );
        eprintln!("mosquitto_sub QoS {qos}: {} in {took:.2} s", topics.len());
        assert_eq!(
            topics.len(),
            N as usize,
            "QoS {qos}: every retained message"
        );
        assert_eq!(distinct(&topics), N as usize, "QoS {qos}: each once");
    }
    // A narrow wildcard: exactly its branch (and nothing after it).
    let (topics, _) = mosquitto_sub(&broker, &id_on("narrow", 0), "ret/7/+", (1, 1001, 3));
    assert_eq!(topics.len(), 1000);
    assert!(topics.iter().all(|t| t.starts_with("ret/7/")));
    // A sparse filter the skip-scan cannot narrow (every stored key is looked at, pages
    // that find nothing go on at the next loop pass): its one match, after all of them.
    load(broker.addr, 1, |_| "zz/b/c/needle".into());
    let (topics, _) = mosquitto_sub(&broker, &id_on("sparse", 1), "+/+/+/needle", (0, 2, 5));
    assert_eq!(topics, vec!["zz/b/c/needle".to_string()]);
    // paho-mqtt, QoS 1.
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/paho_retained.py"
    );
    let out = Command::new("python3")
        .args([
            script,
            &broker.port().to_string(),
            &id_on("paho-all", 1),
            "ret/#",
            "1",
        ])
        .arg(N.to_string())
        .output()
        .expect("python3 with paho-mqtt");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("paho QoS 1: {stdout}");
    assert!(
        out.status.success(),
        "paho: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Takes publishes on `sub` (acknowledging QoS 1) until `limit` arrived or 2 s pass with
/// none; records (topic, dup).
fn take(sub: &mut Raw, limit: usize, got: &mut Vec<(String, bool)>) {
    let mut n = 0;
    while n < limit {
        let Some(p) = sub.recv_within(Duration::from_secs(2)) else {
            return;
        };
        if let Packet::Publish(p) = p {
            assert!(p.retain);
            got.push((p.topic.to_string(), p.dup));
            if let Some(pid) = p.packet_id {
                sub.ack(PubRespKind::PubAck, pid);
            }
            n += 1;
        }
    }
}

#[test]
fn a_persistent_subscriber_resumes_its_retained_stream_after_reconnecting() {
    const N: u32 = 20_000;
    let broker = Broker::start(&TIGHT);
    load(broker.addr, N, |i| format!("res/{}/{}", i % 50, i / 50));
    let id = id_on("resumer", 1);
    let mut got = Vec::new();
    {
        let (mut sub, _) = Raw::connect(broker.addr, V4, &id, false);
        sub.subscribe("res/#", QoS::AtLeastOnce);
        take(&mut sub, 3_000, &mut got);
        // Gone without DISCONNECT, mid-stream.
    }
    assert_eq!(got.len(), 3_000);
    std::thread::sleep(Duration::from_millis(200));
    let (mut sub, ack) = Raw::connect(broker.addr, V4, &id, false);
    assert!(ack.session_present);
    take(&mut sub, usize::MAX, &mut got);
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (topic, dup) in &got {
        let n = seen.entry(topic).or_default();
        *n += 1;
        assert!(*n == 1 || *dup, "{topic} repeated without DUP");
    }
    assert_eq!(
        seen.len(),
        N as usize,
        "every retained message, across the reconnect"
    );
    // Only what was in flight when the connection went (at most the inflight window, 1,000
    // by default) is sent twice.
    assert!(got.len() <= N as usize + 1_000, "{} deliveries", got.len());
}

#[test]
fn a_retained_publish_on_one_shard_is_seen_through_every_shard_and_cleared_everywhere() {
    let broker = Broker::start(&[]);
    let (mut publisher, _) = Raw::connect(broker.addr, V4, &id_on("setter", 0), true);
    let topics: Vec<String> = (0..64).map(|i| format!("x/{i}")).collect();
    for (i, t) in topics.iter().enumerate() {
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: t.as_str().into(),
            packet_id: PacketId::new(i as u16 + 1),
            properties: Default::default(),
            payload: Bytes::from_static(b"v"),
        };
        publisher.send(&Packet::Publish(p));
    }
    let mut acks = 0;
    while acks < topics.len() {
        if let Some(Packet::PubResp(_)) = publisher.recv() {
            acks += 1;
        }
    }
    for shard in [0, 1] {
        let (topics_seen, _) = mosquitto_sub(&broker, &id_on("seer", shard), "x/+", (0, 64, 10));
        assert_eq!(distinct(&topics_seen), 64, "through shard {shard}");
    }
    // Clear half of them (empty payload), acknowledged: gone for every new subscriber.
    for (i, t) in topics.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
        let p = Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: t.as_str().into(),
            packet_id: PacketId::new(i as u16 + 100),
            properties: Default::default(),
            payload: Bytes::new(),
        };
        publisher.send(&Packet::Publish(p));
    }
    let mut acks = 0;
    while acks < 32 {
        if let Some(Packet::PubResp(_)) = publisher.recv() {
            acks += 1;
        }
    }
    for shard in [0, 1] {
        let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("after-clear", shard), true);
        sub.subscribe("x/+", QoS::AtMostOnce);
        let mut got = Vec::new();
        take(&mut sub, 64, &mut got);
        let mut left: Vec<usize> = got
            .iter()
            .map(|(t, _)| t.trim_start_matches("x/").parse().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            (0..64).filter(|i| i % 2 == 1).collect::<Vec<_>>(),
            "through shard {shard}"
        );
    }
}

fn stored(topic: &str, payload: &str) -> storage::record::StoredMessage {
    storage::record::StoredMessage {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
        qos: 1,
        retain: true,
        properties: Vec::new(),
        expires_at_ms: 0,
    }
}

/// The topics (and payloads) a new subscriber to `filter` is given.
fn retained_now(broker: &Broker, filter: &str, id: &str) -> Vec<(String, String)> {
    let (mut sub, _) = Raw::connect(broker.addr, V4, id, true);
    sub.subscribe(filter, QoS::AtMostOnce);
    let mut got = Vec::new();
    while let Some(p) = sub.recv_within(Duration::from_millis(700)) {
        if let Packet::Publish(p) = p {
            got.push((
                p.topic.to_string(),
                String::from_utf8_lossy(&p.payload).into_owned(),
            ));
        }
    }
    got.sort();
    got
}

/// A data directory written when every shard kept a replica of every retained message (each
/// log holds every topic, some with a newer version only in a log that does not own the
/// topic): the broker starts with the newest of each, moves it to the owner's log, and a
/// clear made afterwards is not undone by the old copies at the next start.
#[test]
fn a_directory_of_replicated_retained_messages_moves_each_to_its_owner() {
    use storage::embedded::log::{Log, LogConfig};
    use storage::record::Record;
    let dir = common::scratch_dir("retained-replicas");
    let topics: Vec<String> = (0..20).map(|i| format!("m/{i}")).collect();
    let owner = |t: &str| common::home_shard_of(t);
    for shard in 0..2u16 {
        let (mut log, _) = Log::open(LogConfig::new(dir.join(format!("shard-{shard}")))).unwrap();
        for (i, t) in topics.iter().enumerate() {
            // Every log has version 100 + i; the log that does not own the topic also has a
            // newer version 1000 + i (the owner's copy of it was lost).
            let v = 100 + i as u64;
            let message = stored(t, &format!("old-{i}"));
            log.append(&Record::Retain {
                message,
                version: v,
            })
            .unwrap();
            if owner(t) != shard {
                let message = stored(t, &format!("new-{i}"));
                let version = 1000 + i as u64;
                log.append(&Record::Retain { message, version }).unwrap();
            }
        }
        log.commit().unwrap();
    }
    let mut broker = Broker::start_in(&dir, &[]);
    let expected: Vec<(String, String)> = {
        let mut e: Vec<_> = (0..20)
            .map(|i| (format!("m/{i}"), format!("new-{i}")))
            .collect();
        e.sort();
        e
    };
    assert_eq!(retained_now(&broker, "m/+", &id_on("look-1", 0)), expected);
    // Clear m/3 (acknowledged), stop, start again: it stays cleared, the rest stay.
    let (mut publisher, _) = Raw::connect(broker.addr, V4, &id_on("clearer", 1), true);
    let clear = Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: true,
        topic: "m/3".into(),
        packet_id: PacketId::new(1),
        properties: Default::default(),
        payload: Bytes::new(),
    };
    publisher.send(&Packet::Publish(clear));
    assert!(matches!(publisher.recv(), Some(Packet::PubResp(_))));
    drop(publisher);
    broker.stop();
    let broker = Broker::start_in(&dir, &[]);
    let mut expected = expected;
    expected.retain(|(t, _)| t != "m/3");
    assert_eq!(retained_now(&broker, "m/+", &id_on("look-2", 1)), expected);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
