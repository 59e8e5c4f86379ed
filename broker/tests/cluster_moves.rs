//! Persistent sessions moving between cluster nodes that share them through one Redis
//! (`store = "redis"`, `redis_shared = true`), with real ringmq nodes over one tansu and one
//! redis-server on free ports: the session follows its client (queue, routes, takeover with
//! 0x8E), and copies still on their way to the node it left (queued there, in its downlink,
//! or sent by a node that had not read the new routes) reach it on the new one. Three such
//! nodes carry paho-mqtt (3.1.1, 5) and mosquitto clients at QoS 0, 1 and 2, and route to a
//! new subscription within a bound.
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

/// One more node sharing sessions through `redis`.
fn third_node(tansu: &Tansu, redis: &redis::Redis, id: &str) -> Broker {
    let top = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_shared = true\n",
        redis.url()
    );
    let path = node_config_top(tansu, id, &top, "");
    Broker::start(&["--config", path.to_str().unwrap()])
}

/// Publishes on `topic` through `publisher` one QoS 1 message after another (its number as
/// payload), each PUBACKed, until told to stop (or 2,000); the thread returns how many.
fn publish_steadily(
    mut publisher: Raw,
    topic: &'static str,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<u16>,
) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let publishing = std::thread::spawn(move || {
        let mut acked = 0u16;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) && acked < 2_000 {
            let i = acked + 1;
            publisher.publish(topic, i.to_string().as_bytes(), QoS::AtLeastOnce, i);
            assert_eq!(publisher.puback_within(i, Duration::from_secs(20)), Some(0));
            acked = i;
        }
        acked
    });
    (stop, publishing)
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
    let c = third_node(&tansu, &redis, "mc");
    let (mut sub, _) = Raw::connect(a.addr, V5, "walker", false);
    sub.subscribe("walk/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(c.addr, V5, "walk-pub", true);
    until_routed(&mut publisher, &mut sub, "walk/probe");
    // Node c publishes one message after another (each PUBACKed: Kafka has node a's copy)
    // while the client leaves node a for node b: copies node c sends to node a before it
    // reads the new routes arrive after node a forgot the session.
    let (stop, publishing) = publish_steadily(publisher, "walk/x");
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

/// Publishes `ids` (each its own number as payload) at QoS 1 through `publisher`, each
/// PUBACKed (Kafka holds every remote copy).
fn publish_acked(publisher: &mut Raw, topic: &str, ids: std::ops::RangeInclusive<u16>) {
    for window in ids.collect::<Vec<_>>().chunks(50) {
        for &i in window {
            publisher.publish(topic, i.to_string().as_bytes(), QoS::AtLeastOnce, i);
        }
        for &i in window {
            assert_eq!(
                publisher.puback_within(i, Duration::from_secs(20)),
                Some(0),
                "PUBACK {i}"
            );
        }
    }
}

/// Receives on `c` until every one of `1..=total` came (at most 40 s); the copies received.
fn receive_all(c: &mut Raw, total: u16, who: &str) -> usize {
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut seen = std::collections::BTreeSet::new();
    let mut copies = 0;
    while seen.len() < usize::from(total) && Instant::now() < deadline {
        for p in payloads(&drain(c, usize::from(total), Duration::from_millis(500))) {
            seen.insert(p.parse::<u16>().unwrap());
            copies += 1;
        }
    }
    let missing: Vec<u16> = (1..=total).filter(|i| !seen.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{who}: lost while its node was down: {missing:?}"
    );
    copies
}

#[test]
fn a_killed_nodes_persistent_sessions_resume_on_another_node_with_every_acknowledged_message() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    // Node b (the first: its metrics) stays; node a is killed.
    let (b, mut a, b_metrics) = shared_nodes(&tansu, &redis, ["kb", "ka"]);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "sv-pub", true);
    let mut subs = Vec::new();
    for client in ["early", "late"] {
        let (mut sub, _) = Raw::connect(a.addr, V5, client, false);
        sub.subscribe("sv/#", QoS::AtLeastOnce);
        until_routed(&mut publisher, &mut sub, "sv/probe");
        subs.push(sub);
    }
    // SIGKILL of node a with its subscribers connected: node b routes their filter to a's
    // downlink, first as a live node's, then (past node_timeout_ms) as a dead node's
    // persistent sessions'; every copy PUBACKed once Kafka holds it.
    let _ = a.child.kill();
    let _ = a.child.wait();
    drop(subs);
    const N: u16 = 200;
    publish_acked(&mut publisher, "sv/x", 1..=N / 2);
    // One client comes back on node b at once (node a not yet seen dead there), the other
    // once node a is: both sessions resume there with every message acknowledged
    // meanwhile, and with what follows.
    let (mut early, ack) = Raw::connect(b.addr, V5, "early", false);
    assert!(ack.session_present, "the session resumed on node b");
    std::thread::sleep(Duration::from_millis(2_500));
    publish_acked(&mut publisher, "sv/x", N / 2 + 1..=N);
    let (mut late, ack) = Raw::connect(b.addr, V5, "late", false);
    assert!(ack.session_present, "the session resumed on node b");
    publish_acked(&mut publisher, "sv/x", N + 1..=N + 20);
    let early_copies = receive_all(&mut early, N + 20, "early");
    let late_copies = receive_all(&mut late, N + 20, "late");
    std::thread::sleep(Duration::from_millis(1_200));
    let salvaged = common::metric(&b_metrics, "ringmq_cluster_salvaged_total{");
    println!("{} published; node b received {early_copies} and {late_copies} copies, {salvaged} of them read from node a's downlink", N + 20);
    assert!(salvaged > 0, "node b read node a's downlink");
}

#[test]
fn three_nodes_sharing_sessions_carry_paho_and_mosquitto_clients_at_each_qos() {
    use std::process::{Command, Stdio};
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (a, b, _) = shared_nodes(&tansu, &redis, ["ta", "tb"]);
    let c = third_node(&tansu, &redis, "tc");
    // paho-mqtt 3.1.1 and 5: the subscriber on node a, the publisher on node c; QoS 0, 1 and
    // 2, each message once, in order per topic.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_p2p.py");
    for version in ["v311", "v5"] {
        let status = Command::new("python3")
            .args([script, &a.port().to_string(), version])
            .args([
                &format!("paho3-sub-{version}"),
                &format!("paho3-pub-{version}"),
            ])
            .arg(c.port().to_string())
            .status()
            .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
        assert!(status.success(), "paho {version} from node c to node a");
    }
    // mosquitto_sub on node b at QoS 2; mosquitto_pub on node a at QoS 0 and on node c at
    // QoS 2.
    let (mut probe_sub, _) = Raw::connect(b.addr, V5, "m3-probe-sub", true);
    probe_sub.subscribe("m3/#", QoS::AtMostOnce);
    let sub = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &b.port().to_string(), "-V", "5"])
        .args([
            "-t", "m3/x", "-q", "2", "-C", "6", "-W", "30", "-i", "m3-sub",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for node in [&a, &c] {
        let (mut probe_pub, _) = Raw::connect(node.addr, V5, "m3-probe-pub", true);
        until_routed(&mut probe_pub, &mut probe_sub, "m3/probe");
    }
    std::thread::sleep(Duration::from_millis(500));
    for (node, qos) in [(&a, "0"), (&c, "2")] {
        for i in 0..3 {
            let ok = Command::new("mosquitto_pub")
                .args(["-h", "127.0.0.1", "-p", &node.port().to_string(), "-V", "5"])
                .args(["-t", "m3/x", "-q", qos, "-m", &format!("q{qos}-{i}")])
                .status()
                .unwrap();
            assert!(ok.success());
        }
    }
    let out = sub.wait_with_output().unwrap();
    let mut lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort_unstable();
    assert_eq!(
        lines,
        ["q0-0", "q0-1", "q0-2", "q2-0", "q2-1", "q2-2"],
        "mosquitto_sub on node b got mosquitto_pub's messages from nodes a and c"
    );
    // How soon another node routes to a new subscription: from its SUBACK (sent once Kafka
    // has the route record) to the first publish on node c reaching it. README: about 15 ms
    // on this machine; bounded here with room for a loaded machine.
    let (mut late, _) = Raw::connect(b.addr, V5, "m3-late", true);
    late.subscribe("m3late/t", QoS::AtMostOnce);
    let (mut from_c, _) = Raw::connect(c.addr, V5, "m3-late-pub", true);
    let routed = until_routed(&mut from_c, &mut late, "m3late/t");
    println!("a new subscription on node b routed from node c {routed:?} after its SUBACK");
    assert!(routed < Duration::from_secs(5), "{routed:?}");
}

#[test]
fn a_dead_nodes_delayed_will_is_sent_unless_its_session_resumed_on_another_node() {
    use std::process::{Command, Stdio};
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (b, mut a, b_metrics) = shared_nodes(&tansu, &redis, ["db", "da"]);
    let (mut will_sub, _) = Raw::connect(b.addr, V5, "dw-sub", true);
    will_sub.subscribe("dw/#", QoS::AtLeastOnce);
    // Two persistent MQTT 5 clients on node a, each with a will delayed 3 s.
    let spawn = |id: &str| {
        Command::new("mosquitto_sub")
            .args(["-h", "127.0.0.1", "-p", &a.port().to_string(), "-V", "5"])
            .args(["-c", "-x", "60", "-i", id, "-t", "none"])
            .args([
                "--will-topic",
                &format!("dw/{id}"),
                "--will-payload",
                "gone",
            ])
            .args(["--will-qos", "1", "-D", "will", "will-delay-interval", "3"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut clients = [spawn("back"), spawn("lost")];
    std::thread::sleep(Duration::from_millis(1_000));
    let _ = a.child.kill();
    let _ = a.child.wait();
    for c in &mut clients {
        let _ = c.kill();
        let _ = c.wait();
    }
    // Node b sees node a dead (node_timeout_ms 1.5 s) and reads its wills: each waits 3 s.
    // One client resumes its session on node b within that time: its will is not sent.
    std::thread::sleep(Duration::from_millis(2_500));
    let (_resumed, ack) = Raw::connect(b.addr, V5, "back", false);
    assert!(ack.session_present, "the session resumed on node b");
    let got = drain(&mut will_sub, 2, Duration::from_secs(12));
    let topics: Vec<String> = got.iter().map(|p| p.topic.to_string()).collect();
    assert_eq!(
        topics,
        ["dw/lost"],
        "the will of the client that did not come back"
    );
    assert_eq!(
        common::metric(&b_metrics, "ringmq_cluster_wills_published_total{"),
        1
    );
}

/// Sends `signal` (`-STOP`, `-CONT`) to `broker`.
fn signal(broker: &Broker, signal: &str) {
    let pid = broker.child.id().to_string();
    let ok = std::process::Command::new("kill")
        .args([signal, &pid])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_paused_node_whose_session_moved_closes_its_stale_connection_and_writes_nothing() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (b, a, _) = shared_nodes(&tansu, &redis, ["pb", "pa"]);
    let (mut stale, _) = Raw::connect(a.addr, V5, "paused", false);
    stale.subscribe("ps/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "ps-pub", true);
    until_routed(&mut publisher, &mut stale, "ps/probe");
    let (mut publisher_a, _) = Raw::connect(a.addr, V5, "ps-pub-a", true);
    // Node a paused for longer than node_timeout_ms: node b sees it dead, its client takes
    // the session over on node b.
    signal(&a, "-STOP");
    std::thread::sleep(Duration::from_millis(2_500));
    publish_acked(&mut publisher, "ps/x", 1..=20);
    let (mut fresh, ack) = Raw::connect(b.addr, V5, "paused", false);
    assert!(ack.session_present, "the session moved to node b");
    // A publish waiting in node a's socket: once woken, node a routes it to the session it
    // still has and writes its queue entry under its old epoch, before or after it hears of
    // the claim.
    publisher_a.publish("ps/a", b"21", QoS::AtLeastOnce, 21);
    signal(&a, "-CONT");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stale.recv_within(Duration::from_millis(500)) {
            Some(Packet::Disconnect(d)) => {
                assert_eq!(d.reason.0, 0x8E, "session taken over");
                break;
            }
            Some(_) => {}
            None => assert!(
                Instant::now() < deadline,
                "node a did not close its stale connection"
            ),
        }
    }
    assert_eq!(
        publisher_a.puback_within(21, Duration::from_secs(10)),
        Some(0)
    );
    // Every message reaches the session on node b (node a's by its forward of what it had
    // queued, or straight).
    receive_all(&mut fresh, 21, "paused");
    // Node a wrote nothing into the session it lost: once node b's client acknowledged
    // everything, its queue in Redis is empty, and the owner is node b.
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis.int(&["HLEN", "ringmq:{paused}:q"]) != 0 {
        assert!(
            Instant::now() < deadline,
            "a queue entry is left in Redis: {}",
            redis.cli(&["HKEYS", "ringmq:{paused}:q"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(redis.cli(&["HGET", "ringmq:{paused}:o", "b"]).trim(), "pb");
}

#[test]
fn a_node_killed_mid_stream_loses_nothing_acknowledged_to_its_persistent_subscriber() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (b, mut a, _) = shared_nodes(&tansu, &redis, ["cb", "ca"]);
    let (mut sub, _) = Raw::connect(a.addr, V5, "streamed", false);
    sub.subscribe("st/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "st-pub", true);
    until_routed(&mut publisher, &mut sub, "st/probe");
    // Node b publishes QoS 1 in windows of 50, each PUBACKed (Kafka holds node a's copy),
    // until told to stop; node a is killed at a random moment of the stream.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopping = stop.clone();
    let publishing = std::thread::spawn(move || {
        let mut acked = 0u16;
        while !stopping.load(std::sync::atomic::Ordering::Relaxed) && acked < 60_000 {
            publish_acked(&mut publisher, "st/x", acked + 1..=acked + 50);
            acked += 50;
        }
        acked
    });
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_millis();
    let before_kill = Duration::from_millis(300 + u64::from(seed) % 1_200);
    println!("node a killed {before_kill:?} into the stream");
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + before_kill;
    while Instant::now() < deadline {
        for p in payloads(&drain(&mut sub, 1_000, Duration::from_millis(100))) {
            seen.insert(p.parse::<u16>().unwrap());
        }
    }
    let _ = a.child.kill();
    let _ = a.child.wait();
    drop(sub);
    // The client comes back on node b, mid-stream.
    let (mut moved, ack) = Raw::connect(b.addr, V5, "streamed", false);
    assert!(ack.session_present, "the session resumed on node b");
    let until = Instant::now() + Duration::from_millis(1_500);
    while Instant::now() < until {
        for p in payloads(&drain(&mut moved, 1_000, Duration::from_millis(100))) {
            seen.insert(p.parse::<u16>().unwrap());
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = publishing.join().unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    while (1..=acked).any(|i| !seen.contains(&i)) && Instant::now() < deadline {
        for p in payloads(&drain(&mut moved, 1_000, Duration::from_millis(500))) {
            seen.insert(p.parse::<u16>().unwrap());
        }
    }
    let missing: Vec<u16> = (1..=acked).filter(|i| !seen.contains(i)).collect();
    println!(
        "{acked} acknowledged to the publisher, {} received",
        seen.len()
    );
    assert!(acked > 100, "{acked} published");
    assert!(missing.is_empty(), "lost across the kill: {missing:?}");
}

#[test]
fn a_node_restarted_before_it_was_seen_dead_loses_nothing_of_the_sessions_claimed_from_it() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let top = format!(
        "store = \"redis\"\nredis_url = \"{}\"\nredis_shared = true\n",
        redis.url()
    );
    // Nodes judged dead only after 8 s without a heartbeat: node a is back before that.
    let config = |id: &str| {
        let path = node_config_top(&tansu, id, &top, "");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("node_timeout_ms = 1500", "node_timeout_ms = 8000");
        std::fs::write(&path, text).unwrap();
        path
    };
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let b_path = config("rb");
    let b = Broker::start(&[
        "--config",
        b_path.to_str().unwrap(),
        "--metrics-listen",
        &metrics,
    ]);
    let a_path = config("ra");
    let mut a = Broker::start(&["--config", a_path.to_str().unwrap()]);
    let (mut publisher, _) = Raw::connect(b.addr, V5, "rs-pub", true);
    let (mut sub, _) = Raw::connect(a.addr, V5, "restarts", false);
    sub.subscribe("rs/#", QoS::AtLeastOnce);
    until_routed(&mut publisher, &mut sub, "rs/probe");
    // SIGKILL of node a: what node b publishes goes to a's downlink (a is live to b).
    let _ = a.child.kill();
    let _ = a.child.wait();
    let killed = Instant::now();
    drop(sub);
    const N: u16 = 100;
    publish_acked(&mut publisher, "rs/x", 1..=N);
    // The client back on node b (its session claimed from a, not seen dead), then node a
    // back before it was ever seen dead: it no longer has the session, and reads its
    // downlink past those copies.
    let (mut moved, ack) = Raw::connect(b.addr, V5, "restarts", false);
    assert!(ack.session_present, "the session resumed on node b");
    let _a = Broker::start(&["--config", a_path.to_str().unwrap()]);
    publish_acked(&mut publisher, "rs/x", N + 1..=N + 20);
    let copies = receive_all(&mut moved, N + 20, "restarts");
    assert!(
        killed.elapsed() < Duration::from_secs(8),
        "read for the restart: node a would be seen dead only 8 s after the kill"
    );
    std::thread::sleep(Duration::from_millis(1_200));
    let salvaged = common::metric(&metrics, "ringmq_cluster_salvaged_total{");
    println!(
        "{} published; node b received {copies} copies, {salvaged} read from node a's downlink",
        N + 20
    );
    assert!(salvaged > 0, "node b read node a's downlink");
}

#[test]
fn a_session_moving_on_again_while_copies_for_it_are_forwarded_loses_nothing() {
    let tansu = Tansu::start();
    let redis = redis::Redis::start();
    let (a, b, _) = shared_nodes(&tansu, &redis, ["oa", "ob"]);
    let c = third_node(&tansu, &redis, "oc");
    let (mut sub, _) = Raw::connect(a.addr, V5, "rover", false);
    sub.subscribe("rov/#", QoS::AtLeastOnce);
    let (mut publisher, _) = Raw::connect(c.addr, V5, "rov-pub", true);
    until_routed(&mut publisher, &mut sub, "rov/probe");
    // Node c publishes one message after another while the client leaves node a for node
    // b and at once for node c: copies node a forwards to node b arrive there after the
    // session left it too.
    let (stop, publishing) = publish_steadily(publisher, "rov/x");
    std::thread::sleep(Duration::from_millis(300));
    drop(sub);
    let (_first, ack) = Raw::connect(b.addr, V5, "rover", false);
    assert!(
        ack.session_present,
        "the session followed its client to node b"
    );
    let (mut moved, ack) = Raw::connect(c.addr, V5, "rover", false);
    assert!(ack.session_present, "and on to node c");
    std::thread::sleep(Duration::from_millis(1_500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = publishing.join().unwrap();
    assert!(acked > 20, "{acked} published");
    let copies = receive_all(&mut moved, acked, "rover");
    println!("{acked} published across two moves, {copies} copies received on node c");
}
