//! `ack = "local"` with the real binary and a real Kafka-protocol broker (tansu): publishers
//! are acknowledged once their messages are durable in the broker's outbox, which produces
//! them to Kafka in order, each with a `ringmq.outbox_id` header; a Kafka outage does not
//! hold them back (while `ack = "kafka"` rules refuse), a SIGKILL with a backlog loses
//! nothing (the backlog reaches Kafka after the restart), and a full outbox holds
//! publishers instead of acknowledging more than it can keep.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/kafka.rs"]
mod kafka;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use common::{id_on, scratch_dir, Broker, Raw};
use kafka::{consume, Tansu};
use net::codec::{Packet, ProtocolVersion, PubRespKind, QoS};

const V5: ProtocolVersion = ProtocolVersion::V5;

/// A config with a local rule (`local/+/t` -> `loc`) and a Kafka-acknowledged one
/// (`direct/+/t` -> `dir`), keyed by the device level.
fn config(tansu: &Tansu, extra: &str) -> std::path::PathBuf {
    let dir = scratch_dir("kafka-local-config");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ringmq.toml");
    std::fs::write(
        &path,
        format!(
            "[kafka]\nbrokers = \"{}\"\npartitions = 3\ntimeout_ms = 2000\n{extra}\n\
             [[kafka.to_kafka]]\nfilter = \"local/+/t\"\ntopic = \"loc\"\nkey = \"level:2\"\nack = \"local\"\n\
             [[kafka.to_kafka]]\nfilter = \"direct/+/t\"\ntopic = \"dir\"\nkey = \"level:2\"\n",
            tansu.brokers()
        ),
    )
    .unwrap();
    path
}

fn header(r: &kafka::Record, name: &str) -> Option<String> {
    r.headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// Reads `topic` from its start until every payload of `want` is there (repeats allowed);
/// the records, first copy of each outbox id only, in partition order.
fn consume_all(tansu: &Tansu, topic: &str, want: &HashSet<String>) -> Vec<kafka::Record> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ask = want.len();
    loop {
        let records = consume(&tansu.brokers(), topic, ask, Duration::from_secs(20));
        let mut seen = HashSet::new();
        let firsts: Vec<kafka::Record> = records
            .into_iter()
            .filter(|r| seen.insert(header(r, "ringmq.outbox_id").expect("outbox id")))
            .collect();
        let payloads: HashSet<String> = firsts
            .iter()
            .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
            .collect();
        if want.is_subset(&payloads) {
            return firsts;
        }
        assert!(
            Instant::now() < deadline,
            "{topic}: missing {:?}",
            want.difference(&payloads).collect::<Vec<_>>()
        );
        ask += want.len() - want.intersection(&payloads).count();
    }
}

/// Per key (device), the payloads' sequence numbers in the order Kafka holds them.
fn per_key(records: &[kafka::Record]) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for r in records {
        let text = String::from_utf8_lossy(&r.payload).into_owned();
        let seq = text.rsplit('-').next().unwrap().parse().unwrap();
        out.entry(r.key.clone().unwrap()).or_default().push(seq);
    }
    out
}

fn assert_in_order(records: &[kafka::Record]) {
    for (key, seqs) in per_key(records) {
        let mut sorted = seqs.clone();
        sorted.sort_unstable();
        assert_eq!(seqs, sorted, "key {key}: in publish order");
    }
}

/// Publishes QoS 1 `topic` messages `from..=to` (payload `dev-N`, packet id N) and returns
/// each PUBACK's reason code (None: none within `wait`).
fn publish_range(
    c: &mut Raw,
    topic: &str,
    dev: &str,
    from: u16,
    to: u16,
    wait: Duration,
) -> Vec<Option<u8>> {
    for n in from..=to {
        c.publish(topic, format!("{dev}-{n}").as_bytes(), QoS::AtLeastOnce, n);
    }
    (from..=to).map(|n| c.puback_within(n, wait)).collect()
}

#[test]
fn local_acknowledgements_reach_kafka_in_order_with_outbox_ids() {
    // `sync` (fdatasync before the PUBACK), `batch` (produced after the interval's
    // fdatasync), `memory` (no log).
    for durability in ["sync", "batch", "memory"] {
        local_acknowledgements_under(durability);
    }
}

fn local_acknowledgements_under(durability: &str) {
    let tansu = Tansu::start();
    let path = config(&tansu, "");
    let broker = Broker::start(&[
        "--config",
        path.to_str().unwrap(),
        "--durability",
        durability,
    ]);
    // Publishers homed on both shards, two devices each.
    let mut want = HashSet::new();
    let mut clients = Vec::new();
    for shard in 0..2u16 {
        let id = id_on(&format!("kl-pub-{shard}"), shard);
        let (c, _) = Raw::connect(broker.addr, V5, &id, true);
        clients.push((id, c));
    }
    for (shard, (_, c)) in clients.iter_mut().enumerate() {
        for d in 0..2 {
            let dev = format!("d{shard}{d}");
            let from = 1 + d as u16 * 100;
            let acks = publish_range(
                c,
                &format!("local/{dev}/t"),
                &dev,
                from,
                from + 49,
                Duration::from_secs(10),
            );
            assert!(acks.iter().all(|a| *a == Some(0)), "{acks:?}");
            want.extend((from..from + 50).map(|n| format!("{dev}-{n}")));
        }
    }
    let records = consume_all(&tansu, "loc", &want);
    assert_eq!(records.len(), 200, "{durability}: each message once");
    assert_in_order(&records);
    let r = records
        .iter()
        .find(|r| r.payload == b"d00-1")
        .expect("the first message");
    assert_eq!(header(r, "mqtt.topic").as_deref(), Some("local/d00/t"));
    assert_eq!(
        header(r, "mqtt.client_id").as_deref(),
        Some(clients[0].0.as_str())
    );
    assert_eq!(r.key.as_deref(), Some("d00"));
    let id = header(r, "ringmq.outbox_id").unwrap();
    let (origin, seq) = id.split_once('/').expect("origin/sequence");
    assert!(origin.starts_with("ringmq-"), "client id and token: {id}");
    seq.parse::<u64>().expect("a sequence number");
}

#[test]
fn a_kafka_outage_and_a_sigkill_lose_nothing_acknowledged_locally() {
    let mut tansu = Tansu::start_sqlite();
    let path = config(&tansu, "");
    let data = scratch_dir("kafka-local-data");
    let args = ["--config", path.to_str().unwrap()];
    let mut broker = Broker::start_in(&data, &args);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("kl-crash", 0), true);
    let wait = Duration::from_secs(10);
    let acks = publish_range(&mut c, "local/a/t", "a", 1, 20, wait);
    assert!(acks.iter().all(|a| *a == Some(0)), "{acks:?}");
    let acks = publish_range(&mut c, "direct/a/t", "a", 101, 105, wait);
    assert!(acks.iter().all(|a| *a == Some(0)), "{acks:?}");

    // Kafka gone: the local rule still acknowledges at once, the Kafka one refuses.
    tansu.kill();
    let started = Instant::now();
    let acks = publish_range(&mut c, "local/a/t", "a", 21, 60, wait);
    assert!(acks.iter().all(|a| *a == Some(0)), "{acks:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not held by Kafka: {:?}",
        started.elapsed()
    );
    let acks = publish_range(&mut c, "direct/a/t", "a", 106, 106, Duration::from_secs(15));
    assert_eq!(
        acks,
        vec![Some(0x97)],
        "ack = kafka: refused, never acknowledged"
    );

    // Killed with a backlog of 40 acknowledged messages; Kafka back; the broker back.
    broker.child.kill().unwrap();
    let _ = broker.child.wait();
    tansu.restart();
    let broker = Broker::start_in(&data, &args);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("kl-crash", 0), true);
    let acks = publish_range(&mut c, "local/a/t", "a", 61, 62, wait);
    assert!(acks.iter().all(|a| *a == Some(0)), "{acks:?}");
    let want: HashSet<String> = (1..=62).map(|n| format!("a-{n}")).collect();
    let records = consume_all(&tansu, "loc", &want);
    assert_in_order(&records);
    let direct: HashSet<String> = (101..=105).map(|n| format!("a-{n}")).collect();
    let got: HashSet<String> = consume(&tansu.brokers(), "dir", 5, wait)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.payload).into_owned())
        .collect();
    assert!(
        direct.is_subset(&got),
        "acknowledged by Kafka before: {got:?}"
    );
}

#[test]
fn a_full_outbox_holds_publishers_and_drains_when_kafka_returns() {
    let mut tansu = Tansu::start_sqlite();
    // Room for about four 1 KiB records.
    let path = config(&tansu, "backlog_bytes_max = 4096");
    let broker = Broker::start(&["--config", path.to_str().unwrap()]);
    let (mut c, _) = Raw::connect(broker.addr, V5, &id_on("kl-full", 0), true);
    // The topic exists in Kafka before it goes away.
    c.publish("local/f/t", b"f-0", QoS::AtLeastOnce, 1000);
    assert_eq!(c.puback_within(1000, Duration::from_secs(10)), Some(0));
    consume_all(&tansu, "loc", &HashSet::from(["f-0".to_string()]));
    tansu.kill();
    let pad = "x".repeat(1024);
    for n in 1..=20u16 {
        c.publish(
            "local/f/t",
            format!("{pad}f-{n}").as_bytes(),
            QoS::AtLeastOnce,
            n,
        );
    }
    let mut acked = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(3);
    while let Some(p) = c.recv_within(deadline.saturating_duration_since(Instant::now())) {
        if let Packet::PubResp(r) = p {
            if r.kind == PubRespKind::PubAck && r.reason.0 == 0 {
                acked.push(r.packet_id.get());
            } else {
                assert_eq!(r.reason.0, 0x97, "refused as over quota");
            }
        }
    }
    assert!(
        !acked.is_empty() && acked.len() <= 5,
        "acknowledged only what fits in 4 KiB: {acked:?}"
    );
    // Kafka back: what was acknowledged arrives, and the outbox takes messages again.
    tansu.restart();
    let want: HashSet<String> = acked.iter().map(|n| format!("{pad}f-{n}")).collect();
    consume_all(&tansu, "loc", &want);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        c.publish("local/f/t", b"f-99", QoS::AtLeastOnce, 999);
        match c.puback_within(999, Duration::from_secs(5)) {
            Some(0) => break,
            other => assert!(Instant::now() < deadline, "not taken again: {other:?}"),
        }
    }
}
