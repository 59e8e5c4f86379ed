//! A cluster's flow, with real ringmq nodes over one real tansu on free ports: the
//! `$SYS/broker/cluster/...` topics and metrics (peers live and dead, cross-node rates, the
//! records a node's downlink has behind it while a subscriber holds the node back), and
//! congestion: a node whose downlink is too far behind says so in its heartbeats and the
//! nodes producing to it hold their publishers' acknowledgements until it caught up, nothing
//! lost.
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

use std::time::{Duration, Instant};

use common::{Broker, Raw};
use kafka::Tansu;
use net::codec::QoS;
use nodes::{drain, start_node, until_metric, until_routed, V5};

/// The latest value of each `$SYS/broker/cluster/...` topic `c` received within `wait`
/// (and the largest `in_per_second`, as `max in_per_second`).
fn cluster_sys(c: &mut Raw, seen: &mut std::collections::BTreeMap<String, String>, wait: Duration) {
    for p in c.drain_publishes(usize::MAX, wait) {
        let value = String::from_utf8_lossy(&p.payload).into_owned();
        if &*p.topic == "$SYS/broker/cluster/in_per_second" {
            let n: u64 = value.parse().unwrap();
            let max = seen
                .get("max in_per_second")
                .map_or(0, |m| m.parse().unwrap());
            seen.insert("max in_per_second".into(), n.max(max).to_string());
        }
        seen.insert(p.topic.to_string(), value);
    }
}

/// Reads `$SYS/broker/cluster/#` on `c` until `ok` holds for the values (at most 20 s).
fn until_sys(
    c: &mut Raw,
    seen: &mut std::collections::BTreeMap<String, String>,
    what: &str,
    ok: impl Fn(&std::collections::BTreeMap<String, String>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok(seen) {
        assert!(Instant::now() < deadline, "{what}: {seen:?}");
        cluster_sys(c, seen, Duration::from_millis(300));
    }
}

#[test]
fn sys_topics_and_metrics_show_the_peers_the_rates_and_a_held_back_downlink() {
    let tansu = Tansu::start();
    // Node a: $SYS every second; a subscriber holding 10 messages holds its feeds back.
    let top = "sys_interval_secs = 1\nsession_queue_high_watermark = 10\n\
               session_queue_low_watermark = 2\nslow_consumer_timeout_ms = 0\n";
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let a_config = nodes::node_config_top(&tansu, "wa", top, "");
    let a = Broker::start(&[
        "--config",
        a_config.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let mut b = start_node(&tansu, "wb");
    let (mut sys, _) = Raw::connect(a.addr, V5, "sys-reader", true);
    sys.subscribe("$SYS/broker/cluster/#", QoS::AtMostOnce);
    let mut seen = std::collections::BTreeMap::new();
    until_sys(&mut sys, &mut seen, "node b listed live", |s| {
        s.get("$SYS/broker/cluster/node").map(String::as_str) == Some("wa")
            && s.get("$SYS/broker/cluster/peers").map(String::as_str) == Some("wb")
            && s.get("$SYS/broker/cluster/peer/wb").map(String::as_str) == Some("live")
    });
    let text = common::http_get(&metrics, "/metrics");
    assert!(
        text.contains("ringmq_cluster_peer_live{node=\"wb\"} 1\n"),
        "{text}"
    );
    // A subscriber on a that reads nothing: node a stops taking its downlink, whose records
    // wait in Kafka (PUBACKed on node b once Kafka has them).
    let (mut slow, _) = Raw::connect(a.addr, V5, "slow", true);
    slow.subscribe("bk/#", QoS::AtLeastOnce);
    let (mut probe, _) = Raw::connect(a.addr, V5, "bk-probe", true);
    probe.subscribe("bk/probe", QoS::AtMostOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "bk-pub", true);
    until_routed(&mut publisher, &mut probe, "bk/probe");
    const N: u16 = 4_000;
    let payload = vec![b'x'; 8 << 10];
    for window in (1..=N).collect::<Vec<_>>().chunks(200) {
        for &i in window {
            publisher.publish("bk/x", &payload, QoS::AtLeastOnce, i);
        }
        for &i in window {
            assert_eq!(publisher.puback_within(i, Duration::from_secs(20)), Some(0));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut behind = 0;
    while behind == 0 {
        assert!(
            Instant::now() < deadline,
            "no downlink backlog seen on node a"
        );
        behind = common::metric(&metrics, "ringmq_cluster_in_behind");
        std::thread::sleep(Duration::from_millis(200));
    }
    until_sys(&mut sys, &mut seen, "the backlog in $SYS", |s| {
        s.get("$SYS/broker/cluster/in_behind")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    println!("node a's downlink: {behind} records behind while its subscriber read nothing");
    // The subscriber reads: every message arrives, the backlog goes back to 0, and the rate
    // in shows the messages coming in.
    let got = drain(&mut slow, usize::from(N), Duration::from_secs(60));
    assert_eq!(
        got.len(),
        usize::from(N),
        "every message, once the subscriber reads"
    );
    until_metric(&metrics, "ringmq_cluster_in_behind", 0);
    // The $SYS messages published while the subscriber drained were queued for `sys`.
    until_sys(&mut sys, &mut seen, "a rate in above 0", |s| {
        s.get("max in_per_second")
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    });
    assert!(seen.contains_key("$SYS/broker/cluster/out_per_second"));
    // Node b killed: listed dead once past node_timeout_ms.
    let _ = b.child.kill();
    let _ = b.child.wait();
    until_sys(&mut sys, &mut seen, "node b listed dead", |s| {
        s.get("$SYS/broker/cluster/peer/wb").map(String::as_str) == Some("dead")
            && s.get("$SYS/broker/cluster/peers").map(String::as_str) == Some("")
    });
    let text = common::http_get(&metrics, "/metrics");
    assert!(
        text.contains("ringmq_cluster_peer_live{node=\"wb\"} 0\n"),
        "{text}"
    );
}

#[test]
fn a_congested_node_holds_back_the_publishers_of_the_nodes_producing_to_it_and_loses_nothing() {
    let tansu = Tansu::start();
    // Node a: a subscriber holding 10 messages holds its downlink back (at most 100 records
    // in flight to the shards: the rest waits in Kafka); congested past 200 records behind,
    // caught up at 50.
    let top = "session_queue_high_watermark = 10\nsession_queue_low_watermark = 2\n\
               slow_consumer_timeout_ms = 0\n";
    let a_metrics = format!("127.0.0.1:{}", common::free_port());
    let a_config = nodes::node_config_kafka(
        &tansu,
        "ga",
        top,
        "consume_in_flight_max = 100\n",
        "downlink_behind_max = 200\ndownlink_behind_resume = 50\n",
    );
    let a = Broker::start(&[
        "--config",
        a_config.to_str().unwrap(),
        "--metrics-listen",
        &a_metrics,
    ]);
    let (b, b_metrics) = nodes::start_node_with_metrics(&tansu, "gb");
    let (mut slow, _) = Raw::connect(a.addr, V5, "g-slow", true);
    slow.subscribe("g/#", QoS::AtLeastOnce);
    let (mut probe, _) = Raw::connect(a.addr, V5, "g-probe", true);
    probe.subscribe("g/probe", QoS::AtMostOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "g-pub", true);
    until_routed(&mut publisher, &mut probe, "g/probe");
    // Node b's publisher sends 8 KiB QoS 1 messages in windows of 20, each PUBACKed (Kafka
    // has node a's copy), until told to stop.
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publishing = {
        let (acked, stop) = (acked.clone(), stop.clone());
        std::thread::spawn(move || {
            let payload = vec![b'g'; 8 << 10];
            let mut next = 1u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && next < 60_000 {
                let window: Vec<u32> = (next..next + 20).collect();
                for &i in &window {
                    let id = u16::try_from(i % 60_000 + 1).unwrap();
                    publisher.publish("g/x", &payload, QoS::AtLeastOnce, id);
                }
                for &i in &window {
                    let id = u16::try_from(i % 60_000 + 1).unwrap();
                    assert_eq!(
                        publisher.puback_within(id, Duration::from_secs(60)),
                        Some(0)
                    );
                    acked.store(i, std::sync::atomic::Ordering::Relaxed);
                }
                next += 20;
            }
        })
    };
    // Node a says it is congested; node b holds the PUBACKs of the messages with copies for
    // it, and the publisher's window stops it. A first short burst is caught up at once
    // (congested at 201, then 0 a quarter second later): wait until node a has been behind
    // past its limit, and node b has known it, for a second without a break. (How far
    // behind it gets depends on how soon node b hears: waiting for a fixed 1,000 failed
    // about one run in three.)
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut steady = 0;
    while steady < 10 {
        assert!(
            Instant::now() < deadline,
            "node a was never steadily congested"
        );
        let congested = common::metric(&a_metrics, "ringmq_cluster_in_behind") > 200
            && common::metric(&b_metrics, "ringmq_cluster_nodes_congested") == 1;
        steady = if congested { steady + 1 } else { 0 };
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(common::metric(&b_metrics, "ringmq_cluster_acks_delayed_total") > 0);
    std::thread::sleep(Duration::from_millis(500));
    let before = acked.load(std::sync::atomic::Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(2));
    let after = acked.load(std::sync::atomic::Ordering::Relaxed);
    let behind = common::metric(&a_metrics, "ringmq_cluster_in_behind");
    println!("node b's publisher held at {before} -> {after} acknowledged; node a {behind} behind");
    assert!(
        after - before <= 40,
        "the publisher went on while node a was congested: {before} -> {after}"
    );
    assert!(common::metric(&a_metrics, "ringmq_cluster_nodes_congested") >= 1);
    // The subscriber reads: node a catches up, node b's publisher goes on; every message
    // acknowledged reaches the subscriber.
    let mut got = 0usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.load(std::sync::atomic::Ordering::Relaxed) < after + 200 {
        assert!(
            Instant::now() < deadline,
            "node b's publisher did not resume"
        );
        got += drain(&mut slow, usize::MAX, Duration::from_millis(200)).len();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    publishing.join().unwrap();
    let total = acked.load(std::sync::atomic::Ordering::Relaxed) as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while got < total && Instant::now() < deadline {
        got += drain(&mut slow, total - got, Duration::from_millis(500)).len();
    }
    assert_eq!(
        got, total,
        "every acknowledged message reached node a's subscriber"
    );
    until_metric(&b_metrics, "ringmq_cluster_nodes_congested", 0);
}

#[test]
fn a_killed_nodes_clients_wills_are_published_by_another_node_once() {
    use std::process::{Command, Stdio};
    let tansu = Tansu::start();
    let (b, b_metrics) = nodes::start_node_with_metrics(&tansu, "wb");
    let mut a = start_node(&tansu, "wa");
    let (mut will_sub, _) = Raw::connect(b.addr, V5, "kw-sub", true);
    will_sub.subscribe("kw/#", QoS::AtLeastOnce);
    let with_will = |id: &str, extra: &[&str]| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &a.port().to_string(), "-V", "5"])
            .args(["-t", "none", "-i", id])
            .args([
                "--will-topic",
                &format!("kw/{id}"),
                "--will-payload",
                "gone",
            ])
            .args(["--will-qos", "1"])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    // One client stays connected; one leaves with a normal DISCONNECT (its will is not
    // sent, and the record of it in node a's wills topic is replaced by a tombstone).
    let mut doomed = with_will("doomed", &[]);
    let mut polite = with_will("polite", &["-t", "kw-polite/t", "-C", "1"]);
    std::thread::sleep(Duration::from_millis(500));
    let (mut on_a, _) = Raw::connect(a.addr, V5, "kw-pub", true);
    on_a.publish("kw-polite/t", b"bye", QoS::AtLeastOnce, 1);
    assert_eq!(on_a.puback_within(1, Duration::from_secs(10)), Some(0));
    assert!(polite.wait().unwrap().success(), "mosquitto_sub -C 1 left");
    std::thread::sleep(Duration::from_millis(1_000));
    // SIGKILL: node a cannot send its clients' wills; node b, seeing it dead, does.
    let _ = a.child.kill();
    let _ = a.child.wait();
    let _ = doomed.kill();
    let _ = doomed.wait();
    let got = drain(&mut will_sub, 2, Duration::from_secs(15));
    let texts: Vec<String> = got
        .iter()
        .map(|p| format!("{}={}", p.topic, String::from_utf8_lossy(&p.payload)))
        .collect();
    assert_eq!(
        texts,
        ["kw/doomed=gone"],
        "the will of node a's client, from node b"
    );
    until_metric(&b_metrics, "ringmq_cluster_wills_published_total", 1);
    // Node a back: what its previous process left was published and cleared: no second will.
    let _a = start_node(&tansu, "wa");
    let again = drain(&mut will_sub, 1, Duration::from_secs(4));
    assert!(again.is_empty(), "a will came twice: {again:?}");
}
