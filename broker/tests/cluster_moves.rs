//! Persistent sessions moving between cluster nodes that share them through one Redis
//! (`store = "redis"`, `redis_shared = true`), with real ringmq nodes over one tansu and one
//! redis-server on free ports: the session follows its client (queue, routes, takeover with
//! 0x8E), and copies still on their way to the node it left (queued there, in its downlink,
//! or sent by a node that had not read the new routes) reach it on the new one.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/kafka.rs"]
mod kafka;
#[path = "common/cluster.rs"]
mod nodes;
#[path = "common/redis.rs"]
mod redis;

use std::time::{Duration, Instant};

use common::{Broker, Raw};
use kafka::Tansu;
use net::codec::{Packet, QoS};
use nodes::{drain, node_config_top, payloads, until_routed, V5};

/// Two nodes sharing sessions through `redis`; the first serves Prometheus metrics too.
fn shared_nodes(tansu: &Tansu, redis: &redis::Redis, ids: [&str; 2]) -> (Broker, Broker, String) {
    let top = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_shared = true\n",
        redis.url()
    );
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let path = node_config_top(tansu, ids[0], &top, "");
    let a = Broker::start(&[
        "--config",
        path.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let path = node_config_top(tansu, ids[1], &top, "");
    let b = Broker::start(&["--config", path.to_str().unwrap()]);
    (a, b, metrics)
}

#[test]
fn a_persistent_session_moves_between_nodes_sharing_it_through_redis() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (a, b, _) = shared_nodes(&tansu, &redis, ["sa", "sb"]);
    // Subscribed on node a, then offline: what is published on node b is queued on a.
    let (mut sub, _) = Raw::connect(a.addr, V5, "mover", false);
    sub.subscribe("mv/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "mv-pub", true);
    until_routed(&mut publisher, &mut sub, "mv/probe");
    sub.send(&Packet::Disconnect(Default::default()));
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    for i in 0..3u16 {
        let payload = format!("{i}");
        publisher.publish("mv/x", payload.as_bytes(), QoS::AtLeastOnce, i + 1);
        assert_eq!(
            publisher.puback_within(i + 1, Duration::from_secs(10)),
            Some(0)
        );
    }
    // It comes back on node b: b claims the session (owner sb) and delivers its queue.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.int(&["HLEN", "ringmq:{mover}:q"]) < 3 {
        assert!(
            Instant::now() < deadline,
            "a queued the three messages in Redis"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut moved, ack) = Raw::connect(b.addr, V5, "mover", false);
    assert!(
        ack.session_present,
        "the session followed its client to node b"
    );
    let got = drain(&mut moved, 3, Duration::from_secs(10));
    assert_eq!(payloads(&got), ["0", "1", "2"]);
    // Published on node a now, it reaches the client on node b (routes moved with it).
    let (mut publisher_a, _) = Raw::connect(a.addr, V5, "mv-pub-a", true);
    until_routed(&mut publisher_a, &mut moved, "mv/probe");
    publisher_a.publish("mv/y", b"via a", QoS::AtLeastOnce, 9);
    assert_eq!(
        publisher_a.puback_within(9, Duration::from_secs(10)),
        Some(0)
    );
    assert_eq!(
        payloads(&drain(&mut moved, 1, Duration::from_secs(10))),
        ["via a"]
    );
    // Connecting on node a again takes it over: b closes its connection with 0x8E.
    let (_back, ack) = Raw::connect(a.addr, V5, "mover", false);
    assert!(ack.session_present);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match moved.recv_within(Duration::from_millis(500)) {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason.0, 0x8E);
                break;
            }
            Some(_) => {}
            None => panic!("expected DISCONNECT 0x8E from node b"),
        }
        assert!(Instant::now() < deadline, "DISCONNECT 0x8E from node b");
    }
}

#[test]
fn copies_on_their_way_to_the_node_a_session_left_reach_it_on_the_new_one() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (a, b, a_metrics) = shared_nodes(&tansu, &redis, ["ha", "hb"]);
    // Subscribed on node a, then offline.
    let (mut sub, _) = Raw::connect(a.addr, V5, "hopper", false);
    sub.subscribe("hop/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "hop-pub", true);
    until_routed(&mut publisher, &mut sub, "hop/probe");
    sub.send(&Packet::Disconnect(Default::default()));
    drop(sub);
    std::thread::sleep(Duration::from_millis(300));
    // A burst published on node b, every copy produced to node a's downlink (PUBACKed), and
    // the client connecting on node b at once: node a is still reading its downlink when the
    // session leaves it.
    const N: u16 = 400;
    for window in (1..=N).collect::<Vec<_>>().chunks(50) {
        for &i in window {
            publisher.publish("hop/x", i.to_string().as_bytes(), QoS::AtLeastOnce, i);
        }
        for &i in window {
            assert_eq!(
                publisher.puback_within(i, Duration::from_secs(20)),
                Some(0),
                "PUBACK {i}"
            );
        }
    }
    let (mut moved, ack) = Raw::connect(b.addr, V5, "hopper", false);
    assert!(ack.session_present, "the session followed its client");
    // Every acknowledged message reaches it (at least once: a copy node a had queued and
    // forwarded may come twice).
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = std::collections::BTreeSet::new();
    let mut copies = 0;
    while seen.len() < usize::from(N) && Instant::now() < deadline {
        for p in payloads(&drain(
            &mut moved,
            usize::from(N),
            Duration::from_millis(500),
        )) {
            seen.insert(p.parse::<u16>().unwrap());
            copies += 1;
        }
    }
    // Copies still coming (duplicates) counted for a moment.
    copies += drain(&mut moved, usize::from(N), Duration::from_millis(500)).len();
    let missing: Vec<u16> = (1..=N).filter(|i| !seen.contains(i)).collect();
    assert!(missing.is_empty(), "lost after the move: {missing:?}");
    // The metrics are stored on the shards' tick.
    std::thread::sleep(Duration::from_millis(1_200));
    let forwarded = common::metric(&a_metrics, "ringmq_cluster_moved_forwarded_total{");
    assert!(
        forwarded > 0,
        "node a forwarded what it had queued for the session"
    );
    println!(
        "node a forwarded {forwarded} copies for the session that moved; {copies} copies of {N} received"
    );
    // The session's own messages the new node had loaded are not delivered twice.
    assert!(copies < 2 * usize::from(N), "{copies} copies of {N}");
}

#[test]
fn a_session_moving_while_a_third_node_publishes_to_it_loses_nothing() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (a, b, a_metrics) = shared_nodes(&tansu, &redis, ["ma", "mb"]);
    let top = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_shared = true\n",
        redis.url()
    );
    let path = node_config_top(&tansu, "mc", &top, "");
    let c = Broker::start(&["--config", path.to_str().unwrap()]);
    let (mut sub, _) = Raw::connect(a.addr, V5, "walker", false);
    sub.subscribe("walk/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(c.addr, V5, "walk-pub", true);
    until_routed(&mut publisher, &mut sub, "walk/probe");
    // Node c publishes one message after another (each PUBACKed: Kafka has node a's copy)
    // while the client leaves node a for node b: copies node c sends to node a before it
    // reads the new routes arrive after node a forgot the session.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let publishing = std::thread::spawn(move || {
        let mut acked = 0u16;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) && acked < 2_000 {
            let i = acked + 1;
            publisher.publish("walk/x", i.to_string().as_bytes(), QoS::AtLeastOnce, i);
            assert_eq!(publisher.puback_within(i, Duration::from_secs(20)), Some(0));
            acked = i;
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));
    drop(sub);
    let (mut moved, ack) = Raw::connect(b.addr, V5, "walker", false);
    assert!(ack.session_present);
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = publishing.join().unwrap();
    assert!(acked > 20, "{acked} published");
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = std::collections::BTreeSet::new();
    let mut copies = 0;
    while seen.len() < usize::from(acked) && Instant::now() < deadline {
        for p in payloads(&drain(
            &mut moved,
            usize::from(acked),
            Duration::from_millis(500),
        )) {
            seen.insert(p.parse::<u16>().unwrap());
            copies += 1;
        }
    }
    copies += drain(&mut moved, usize::from(acked), Duration::from_millis(500)).len();
    // Nothing was acknowledged by the client on node a (the test never read there): every
    // message reaches it on node b.
    let missing: Vec<u16> = (1..=acked).filter(|i| !seen.contains(i)).collect();
    std::thread::sleep(Duration::from_millis(1_200));
    let forwarded = common::metric(&a_metrics, "ringmq_cluster_moved_forwarded_total{");
    println!("{acked} published across the move, node a forwarded {forwarded}, {copies} copies received on node b");
    assert!(missing.is_empty(), "lost across the move: {missing:?}");
    assert!(forwarded > 0);
    // A copy its publisher's node also sent to node b is not forwarded again; one loaded
    // from the store is not delivered twice.
    assert!(
        copies < 2 * usize::from(acked),
        "{copies} copies of {acked}"
    );
}
