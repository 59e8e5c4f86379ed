//! The Redis store on a real Redis Cluster (three redis-server masters created with
//! `redis-cli --cluster create`): sessions spread over the slots resume after a SIGKILL, and
//! nothing acknowledged is lost while slots move between masters under a publish stream; two
//! brokers sharing the cluster (`redis_shared`) hand sessions of every slot to each other.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/crash.rs"]
mod crash;
#[path = "common/redis.rs"]
mod redis;

use std::time::Duration;

use bytes::Bytes;
use common::{id_on, Broker, Raw};
use net::codec::{Packet, ProtocolVersion, Publish, QoS};
use redis::RedisCluster;

const V4: ProtocolVersion = ProtocolVersion::V311;

fn broker_on(cluster: &RedisCluster, extra: &[&str]) -> Broker {
    let url = cluster.url();
    let mut args = vec![
        "--store",
        "redis",
        "--redis-cluster",
        "true",
        "--redis-url",
        &url,
    ];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

fn publish_numbered(i: u32) -> Publish {
    Publish {
        dup: false,
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "cl/t".into(),
        packet_id: None,
        properties: Default::default(),
        payload: Bytes::from(i.to_be_bytes().to_vec()),
    }
}

/// Persistent subscribers to `cl/#`, offline.
fn subscribers(broker: &Broker, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let id = id_on(&format!("cl-sub-{i}"), (i % 2) as u16);
            let (mut sub, _) = Raw::connect(broker.addr, V4, &id, false);
            sub.subscribe("cl/#", QoS::AtLeastOnce);
            sub.send(&Packet::Disconnect(Default::default()));
            id
        })
        .collect()
}

#[test]
fn sessions_across_the_slots_resume_after_sigkill() {
    let cluster = RedisCluster::start();
    let mut broker = broker_on(&cluster, &[]);
    let subs = subscribers(&broker, 24);
    std::thread::sleep(Duration::from_millis(100));
    let progress = std::sync::atomic::AtomicU32::new(0);
    let acked = crash::publish_window_until_dead(
        broker.addr,
        &id_on("cl-pub", 1),
        &progress,
        200,
        publish_numbered,
    );
    assert_eq!(acked.len(), 200);
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
    let counts = cluster.key_counts();
    assert!(
        counts.iter().all(|&n| n > 0),
        "keys on every master: {counts:?}"
    );
    let broker = broker_on(&cluster, &[]);
    for id in &subs {
        let (q1, _) = crash::drain_any(broker.addr, id);
        let got: Vec<u32> = q1.into_iter().map(|(s, _)| s).collect();
        assert!(
            got == (0..200).collect::<Vec<_>>(),
            "{id}: {} of 200",
            got.len()
        );
    }
}

#[test]
fn nothing_acknowledged_is_lost_while_slots_move() {
    let cluster = RedisCluster::start();
    // Writes to a moving slot are redirected (MOVED / ASK): the batch waits and goes again;
    // acknowledgements are held meanwhile, well within this hold.
    let broker = broker_on(
        &cluster,
        &[
            "--redis-hold-ms",
            "60000",
            "--session-queue-count-max",
            "100000",
        ],
    );
    let subs = subscribers(&broker, 16);
    std::thread::sleep(Duration::from_millis(100));
    let addr = broker.addr;
    let progress = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let p2 = progress.clone();
    const N: u32 = 20_000;
    let publisher = std::thread::spawn(move || {
        crash::publish_window_until_dead(addr, &id_on("cl-pub", 1), &p2, N, publish_numbered)
    });
    while progress.load(std::sync::atomic::Ordering::Relaxed) < 2_000 {
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.reshard(3000);
    let acked = publisher.join().unwrap();
    assert_eq!(acked.len(), N as usize, "every publish acknowledged");
    for id in &subs {
        let (q1, _) = crash::drain_any(broker.addr, id);
        let mut got: Vec<u32> = q1.into_iter().map(|(s, _)| s).collect();
        got.dedup();
        let first_wrong = got.iter().zip(0..N).find(|(g, i)| **g != *i);
        assert!(
            got.len() == N as usize && first_wrong.is_none(),
            "{id}: {} of {N}, first out of place {first_wrong:?}",
            got.len()
        );
    }
}

#[test]
fn sessions_of_every_slot_move_between_two_brokers_sharing_the_cluster() {
    let cluster = RedisCluster::start();
    let shared = |id| {
        broker_on(
            &cluster,
            &["--redis-shared", "true", "--redis-broker-id", id],
        )
    };
    let (a, b) = (shared("a"), shared("b"));
    let subs = subscribers(&a, 12);
    let (mut publ, _) = Raw::connect(a.addr, V4, &id_on("cl-pub", 0), true);
    for i in 1..=5u16 {
        publ.publish("cl/t", &u32::from(i).to_be_bytes(), QoS::AtLeastOnce, i);
        assert_eq!(publ.puback_within(i, Duration::from_secs(5)), Some(0));
    }
    // Each session resumes on b with its five messages, whatever master holds its slot.
    for id in &subs {
        let (mut sub, ack) = Raw::connect(b.addr, V4, id, false);
        assert!(ack.session_present, "{id}");
        let got = sub.drain_publishes(5, Duration::from_secs(5));
        let got: Vec<u32> = got
            .iter()
            .map(|p| u32::from_be_bytes(p.payload[..4].try_into().unwrap()))
            .collect();
        assert_eq!(got, vec![1, 2, 3, 4, 5], "{id}");
    }
}
