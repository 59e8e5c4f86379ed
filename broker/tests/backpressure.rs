//! Backpressure on the real binary (2 shards, publishers and subscribers homed on different
//! shards): slow subscribers slow their publishers and lose nothing acknowledged, healthy
//! flows keep going, stuck consumers are disconnected, the offline queue policies answer as
//! configured.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{id_on, settle, Broker, Raw};
use net::codec::{Packet, PacketId, ProtocolVersion, PubRespKind, Publish, QoS, ReasonCode};

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

/// A broker with its Prometheus endpoint on a free port; returns it and the endpoint.
fn start_with_metrics(extra: &[&str]) -> (Broker, String) {
    let metrics = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--metrics-listen", metrics.as_str()];
    args.extend_from_slice(extra);
    (Broker::start(&args), metrics)
}

/// The sum over shards of one Prometheus series (`name` with its labels before `shard`).
fn metric(metrics: &str, name: &str) -> u64 {
    std::thread::sleep(Duration::from_millis(600)); // one tick stores the counters
    let body = http_get(metrics, "/metrics");
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A publisher flat out: every QoS 1 PUBLISH written in one go (the write blocks while the
/// broker does not read), PUBACKs counted by a reader.
struct Flood {
    writer: JoinHandle<()>,
    reader: JoinHandle<Vec<u8>>,
    acked: Arc<AtomicU64>,
}

fn flood(raw: Raw, topic: &str, publisher: u16, count: u32, payload: usize) -> Flood {
    let mut out = bytes::BytesMut::new();
    for seq in 0..count {
        let mut p = vec![0u8; payload.max(6)];
        p[..2].copy_from_slice(&publisher.to_be_bytes());
        p[2..6].copy_from_slice(&seq.to_be_bytes());
        Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: false,
            topic: topic.into(),
            packet_id: PacketId::new((seq % 65_000 + 1) as u16),
            properties: Default::default(),
            payload: p.into(),
        })
        .encode(raw.decoder.version, &mut out)
        .unwrap();
    }
    let mut stream = raw.stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || stream.write_all(&out).unwrap());
    let acked = Arc::new(AtomicU64::new(0));
    let counted = acked.clone();
    let mut raw = raw;
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut reasons = Vec::new();
        while u64::from(count) > counted.load(Ordering::Relaxed) {
            match raw.recv() {
                Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubAck => {
                    reasons.push(r.reason.0);
                    counted.fetch_add(1, Ordering::Relaxed);
                }
                Some(_) => {}
                None => panic!("publisher {publisher} disconnected"),
            }
        }
        reasons
    });
    Flood {
        writer,
        reader,
        acked,
    }
}

fn publish_from(payload: &[u8]) -> (u16, u32) {
    (
        u16::from_be_bytes(payload[..2].try_into().unwrap()),
        u32::from_be_bytes(payload[2..6].try_into().unwrap()),
    )
}

#[test]
fn a_slow_subscriber_gets_every_acked_message_in_order_and_stays_connected() {
    let (broker, metrics) = start_with_metrics(&[
        "--inflight-count-max",
        "10",
        "--outbox-bytes-max",
        "16384",
        "--session-queue-count-max",
        "2000",
        "--session-queue-high-watermark",
        "200",
        "--session-queue-low-watermark",
        "50",
    ]);
    let (publishers, count) = (20u16, 1500u32);
    let (mut sub, _) = Raw::connect(broker.addr, V5, &id_on("bp-slow", 0), true);
    sub.stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    sub.subscribe("bp/t", QoS::AtLeastOnce);
    settle();
    let baseline = broker.rss_bytes();
    let floods: Vec<Flood> = (0..publishers)
        .map(|i| {
            let (raw, _) = Raw::connect(broker.addr, V4, &id_on(&format!("bp-pub{i}"), 1), true);
            flood(raw, "bp/t", i, count, 64)
        })
        .collect();
    // Slow for 3 s (a sleep after each message), then as fast as it can.
    let started = Instant::now();
    let mut next = vec![0u32; usize::from(publishers)];
    let mut peak_rss = 0;
    let total = u64::from(publishers) * u64::from(count);
    for n in 0..total {
        let p = match sub.recv() {
            Some(Packet::Publish(p)) => p,
            Some(other) => panic!("subscriber got {other:?}"),
            None => panic!("subscriber disconnected after {n} messages"),
        };
        let (from, seq) = publish_from(&p.payload);
        assert_eq!(
            seq,
            next[usize::from(from)],
            "publisher {from}: in order, none lost"
        );
        next[usize::from(from)] += 1;
        sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        if started.elapsed() < Duration::from_secs(3) {
            std::thread::sleep(Duration::from_millis(2));
        }
        if n % 1000 == 0 {
            peak_rss = peak_rss.max(broker.rss_bytes());
        }
    }
    for f in floods {
        f.writer.join().unwrap();
        let reasons = f.reader.join().unwrap();
        assert!(reasons.iter().all(|&r| r == 0));
        assert_eq!(f.acked.load(Ordering::Relaxed), u64::from(count));
    }
    let grown = peak_rss.saturating_sub(baseline);
    assert!(grown < 64 << 20, "broker RSS grew by {} MiB", grown >> 20);
    assert!(metric(&metrics, "ringmq_publisher_pauses_total") > 0);
    assert_eq!(
        metric(
            &metrics,
            "ringmq_messages_dropped_total{reason=\"queue_full\""
        ),
        0
    );
}

#[test]
fn a_healthy_flow_keeps_going_while_another_topic_is_congested() {
    let broker = Broker::start(&[
        "--inflight-count-max",
        "10",
        "--outbox-bytes-max",
        "16384",
        "--session-queue-high-watermark",
        "100",
        "--session-queue-low-watermark",
        "10",
        "--slow-consumer-timeout-ms",
        "0",
    ]);
    // A subscriber that reads nothing while four publishers flood its topic.
    let (mut stalled, _) = Raw::connect(broker.addr, V4, &id_on("hc-stalled", 0), true);
    stalled.subscribe("hc/congested", QoS::AtLeastOnce);
    let (mut healthy, _) = Raw::connect(broker.addr, V4, &id_on("hc-healthy", 0), true);
    healthy.subscribe("hc/ok", QoS::AtLeastOnce);
    settle();
    let (count, total) = (10_000u32, 40_000u64);
    let floods: Vec<Flood> = (0..4)
        .map(|i| {
            let (raw, _) = Raw::connect(broker.addr, V4, &id_on(&format!("hc-pub{i}"), 1), true);
            flood(raw, "hc/congested", i, count, 1024)
        })
        .collect();
    // What was read before the pause took is acknowledged (and queued); then nothing more.
    let acked = || -> u64 { floods.iter().map(|f| f.acked.load(Ordering::Relaxed)).sum() };
    std::thread::sleep(Duration::from_millis(1000));
    let held_at = acked();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(acked(), held_at, "the congested publishers are held");
    assert!(held_at < total);
    // The healthy pair: 2000 round trips, with no pause in the way.
    let (mut publ, _) = Raw::connect(broker.addr, V4, &id_on("hc-okpub", 1), true);
    let started = Instant::now();
    for i in 0..2000u16 {
        publ.publish_acked("hc/ok", b"x", i % 60_000 + 1);
        let p = healthy.recv_publish();
        healthy.ack(PubRespKind::PubAck, p.packet_id.unwrap());
    }
    assert!(started.elapsed() < Duration::from_secs(30));
    // Then the stalled subscriber reads everything: nothing acknowledged was lost.
    stalled
        .stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut next = [0u32; 4];
    for _ in 0..total {
        let p = stalled.recv_publish();
        let (from, seq) = publish_from(&p.payload);
        assert_eq!(seq, next[usize::from(from)]);
        next[usize::from(from)] += 1;
        stalled.ack(PubRespKind::PubAck, p.packet_id.unwrap());
    }
    for f in floods {
        f.writer.join().unwrap();
        f.reader.join().unwrap();
    }
}

#[test]
fn a_subscriber_that_reads_nothing_is_disconnected_and_its_publishers_resume() {
    let (broker, metrics) = start_with_metrics(&[
        "--inflight-count-max",
        "10",
        "--session-queue-high-watermark",
        "100",
        "--session-queue-low-watermark",
        "10",
        "--slow-consumer-timeout-ms",
        "1500",
    ]);
    let (mut stuck, _) = Raw::connect(broker.addr, V5, &id_on("sc-stuck", 0), true);
    stuck.subscribe("sc/t", QoS::AtLeastOnce);
    settle();
    let (raw, _) = Raw::connect(broker.addr, V4, &id_on("sc-pub", 1), true);
    let count = 20_000;
    let f = flood(raw, "sc/t", 0, count, 1024);
    // The stuck client never acknowledges: within the timeout (and a tick) it is closed.
    let deadline = Instant::now() + Duration::from_secs(20);
    while f.acked.load(Ordering::Relaxed) < u64::from(count) {
        assert!(Instant::now() < deadline, "the publisher never resumed");
        std::thread::sleep(Duration::from_millis(50));
    }
    f.writer.join().unwrap();
    f.reader.join().unwrap();
    stuck
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let seen = stuck.until_closed();
    assert!(seen.len() < 20_000, "it was cut off, not served everything");
    assert_eq!(
        metric(&metrics, "ringmq_slow_consumer_disconnects_total"),
        1
    );
}

/// An offline persistent session (queue of 5) on shard 0; eight QoS 1 publishes from an
/// MQTT 5 client and three from an MQTT 3 client on shard 1 under `policy`. Returns the
/// reason codes each publisher got, the payloads the session gets back, and the counters.
fn offline_policy(policy: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>, u64, u64) {
    let (broker, metrics) = start_with_metrics(&[
        "--session-queue-count-max",
        "5",
        "--session-queue-high-watermark",
        "5",
        "--session-queue-low-watermark",
        "1",
        "--session-queue-full-policy",
        policy,
    ]);
    let client = id_on(&format!("op-{policy}"), 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &client, false);
    sub.subscribe("op/t", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    assert!(sub.until_closed().is_empty());
    settle();
    let reasons = |version, prefix: &str, payloads: std::ops::Range<u8>| {
        let (mut publ, _) = Raw::connect(broker.addr, version, &id_on(prefix, 1), true);
        payloads
            .map(|n| {
                publ.publish("op/t", &[n], QoS::AtLeastOnce, u16::from(n) + 1);
                match publ.recv() {
                    Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubAck => r.reason.0,
                    other => panic!("expected PUBACK, got {other:?}"),
                }
            })
            .collect::<Vec<u8>>()
    };
    let v5 = reasons(V5, "op-pub5", 0..8);
    let v3 = reasons(V4, "op-pub3", 8..11);
    let (mut sub, ack) = Raw::connect(broker.addr, V4, &client, false);
    assert!(ack.session_present);
    let got: Vec<u8> = (0..5)
        .map(|_| {
            let p = sub.recv_publish();
            sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
            p.payload[0]
        })
        .collect();
    let dropped = metric(
        &metrics,
        "ringmq_messages_dropped_total{reason=\"queue_full\"",
    );
    let refused = metric(
        &metrics,
        "ringmq_publishes_refused_total{reason=\"queue_full\"",
    );
    (v5, v3, got, dropped, refused)
}

#[test]
fn offline_queue_policies_with_mqtt5_and_mqtt3_publishers() {
    let (v5, v3, got, dropped, refused) = offline_policy("refuse");
    assert_eq!(v5, [0, 0, 0, 0, 0, 0x97, 0x97, 0x97]);
    assert_eq!(
        v3,
        [0, 0, 0],
        "MQTT 3 cannot be told: acknowledged, dropped"
    );
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!((dropped, refused), (3, 3));

    let (v5, v3, got, dropped, refused) = offline_policy("drop-newest");
    assert_eq!((v5, v3), (vec![0; 8], vec![0; 3]));
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!((dropped, refused), (6, 0));

    let (v5, v3, got, dropped, refused) = offline_policy("drop-oldest");
    assert_eq!((v5, v3), (vec![0; 8], vec![0; 3]));
    assert_eq!(got, [6, 7, 8, 9, 10]);
    assert_eq!((dropped, refused), (6, 0));
    let _ = ReasonCode::QUOTA_EXCEEDED;
}

#[test]
fn ten_paho_publishers_and_a_slow_paho_subscriber_lose_nothing() {
    let broker = Broker::start(&[
        "--inflight-count-max",
        "20",
        "--outbox-bytes-max",
        "16384",
        "--session-queue-count-max",
        "1000",
        "--session-queue-high-watermark",
        "100",
        "--session-queue-low-watermark",
        "20",
    ]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/clients/paho_backpressure.py"
    );
    let publishers: Vec<String> = (0..10).map(|i| id_on(&format!("pbp-pub{i}"), 1)).collect();
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(broker.port().to_string())
        .arg(id_on("pbp-sub", 0))
        .args(&publishers)
        .output()
        .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "paho backpressure:\n{stdout}\n{stderr}"
    );
    eprintln!("{stdout}");
}
