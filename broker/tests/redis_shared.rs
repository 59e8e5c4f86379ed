//! Several brokers on one Redis database (`redis_shared`), with the real binary and a real
//! redis-server: a client moving between two brokers resumes its session and gets what was
//! queued for it on the other; a client connecting to a second broker while connected to the
//! first takes its session over (the first closes with 0x8E); a restarted broker loads only
//! the sessions it owns; a broker whose claim cannot reach Redis refuses the CONNECT.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;
#[path = "common/redis.rs"]
mod redis;

use std::process::Command;
use std::time::{Duration, Instant};

use common::{Broker, Raw};
use net::codec::{Packet, ProtocolVersion, QoS};
use redis::Redis;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn args<'a>(url: &'a str, id: &'a str) -> [&'a str; 8] {
    [
        "--store",
        "redis",
        "--redis-url",
        url,
        "--redis-shared",
        "true",
        "--redis-broker-id",
        id,
    ]
}

fn broker(redis: &Redis, id: &str) -> Broker {
    Broker::start(&args(&redis.url(), id))
}

/// mosquitto_sub with a persistent session as `id`: subscribes to `filter` and exits
/// (`want` None), or takes `want` messages.
fn mosquitto_sub(port: u16, id: &str, filter: &str, want: Option<u32>) -> Vec<u32> {
    let mut cmd = Command::new("mosquitto_sub");
    cmd.args([
        "-p",
        &port.to_string(),
        "-i",
        id,
        "-c",
        "-q",
        "1",
        "-t",
        filter,
    ]);
    match want {
        None => cmd.arg("-E"),
        Some(n) => cmd.args(["-C", &n.to_string(), "-W", "10"]),
    };
    let out = cmd.output().expect("mosquitto_sub");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

/// Waits until `client`'s subscription to `filter` is in Redis (a SUBACK does not wait for
/// the write: a client moving at once could beat it).
fn stored(redis: &Redis, client: &str, filter: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let key = format!("ringmq:{{{client}}}:s");
    while redis.int(&["HEXISTS", &key, &format!("f{filter}")]) != 1 {
        assert!(Instant::now() < deadline, "{client}'s subscription written");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn owner(redis: &Redis, client: &str) -> String {
    redis
        .cli(&["HGET", &format!("ringmq:{{{client}}}:o"), "b"])
        .trim()
        .to_string()
}

#[test]
fn a_client_moves_between_two_brokers_sharing_one_redis() {
    let redis = Redis::start();
    let (a, b) = (broker(&redis, "a"), broker(&redis, "b"));
    // Subscribed on a, offline: 20 messages queued there.
    assert!(mosquitto_sub(a.port(), "mover", "move/#", None).is_empty());
    stored(&redis, "mover", "move/#");
    assert_eq!(owner(&redis, "mover"), "a");
    common::mosquitto_publish(a.port(), "move/x", 0, 20);
    // It comes back on b: the session and its queue follow it.
    let got = mosquitto_sub(b.port(), "mover", "move/#", Some(20));
    assert_eq!(
        got,
        (0..20).collect::<Vec<_>>(),
        "queued on a, received on b"
    );
    assert_eq!(owner(&redis, "mover"), "b");
    // a forgot it: what is published there now reaches no session of a ...
    std::thread::sleep(Duration::from_millis(300));
    common::mosquitto_publish(a.port(), "move/x", 100, 105);
    // ... while b queues for it.
    common::mosquitto_publish(b.port(), "move/x", 20, 30);
    // Back on a: a claims it again and reads b's queue (with what mosquitto_sub left
    // unacknowledged when it stopped at 20: sent again, as MQTT wants).
    let (mut raw, ack) = Raw::connect(a.addr, V4, "mover", false);
    assert!(ack.session_present);
    let got: Vec<u32> = raw
        .drain_publishes(40, Duration::from_secs(3))
        .iter()
        .map(|p| String::from_utf8_lossy(&p.payload).parse().unwrap())
        .collect();
    let resent = got.len() - 10;
    assert_eq!(
        got,
        (20 - resent as u32..30).collect::<Vec<_>>(),
        "queued on b, received on a (a's own 100..105 found no session)"
    );
    assert_eq!(owner(&redis, "mover"), "a");
    // rumqttc, persistent, moving the other way.
    use rumqttc::{Client, Event, Incoming, MqttOptions};
    drop(raw);
    let options = |port| {
        let mut o = MqttOptions::new("rumq-mover", "127.0.0.1", port);
        o.set_clean_session(false);
        o
    };
    common::rumqttc_subscribe(options(b.port()), "rq/#");
    stored(&redis, "rumq-mover", "rq/#");
    common::mosquitto_publish(b.port(), "rq/1", 0, 15);
    let (_c, mut conn) = Client::new(options(a.port()), 100);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 15 && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Incoming::Publish(p)))) =
            conn.recv_timeout(Duration::from_secs(5))
        {
            got.push(String::from_utf8_lossy(&p.payload).parse::<u32>().unwrap());
        }
    }
    assert_eq!(
        got,
        (0..15).collect::<Vec<_>>(),
        "rumqttc moved from b to a"
    );
}

#[test]
fn a_second_connection_on_another_broker_takes_the_session_over_with_0x8e() {
    let redis = Redis::start();
    let (a, b) = (broker(&redis, "a"), broker(&redis, "b"));
    let (mut first, ack) = Raw::connect(a.addr, V5, "twice", false);
    assert!(!ack.session_present);
    first.subscribe("tw/#", QoS::AtLeastOnce);
    stored(&redis, "twice", "tw/#");
    // The same client id on b: b claims it, a hears of it and closes its connection.
    let (mut second, ack) = Raw::connect(b.addr, V5, "twice", false);
    assert!(ack.session_present, "b resumed the session a had");
    match first.recv_within(Duration::from_secs(5)) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason.0, 0x8E),
        other => panic!("expected DISCONNECT 0x8E from a, got {other:?}"),
    }
    assert!(
        first.recv_within(Duration::from_secs(2)).is_none(),
        "closed"
    );
    // The subscription came along: published on b, received on b.
    let (mut publ, _) = Raw::connect(b.addr, V5, "twice-pub", true);
    publ.publish_acked("tw/1", b"hello", 1);
    let got = second.drain_publishes(1, Duration::from_secs(5));
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].payload[..], b"hello");
    // a routes nothing to it any more (its session there is gone).
    let (mut publ_a, _) = Raw::connect(a.addr, V5, "twice-pub-a", true);
    publ_a.publish_acked("tw/1", b"from a", 1);
    assert!(second
        .drain_publishes(1, Duration::from_millis(500))
        .is_empty());
    assert_eq!(owner(&redis, "twice"), "b");
}

#[test]
fn a_restarted_broker_loads_only_the_sessions_it_owns() {
    let redis = Redis::start();
    let mut a = broker(&redis, "a");
    let b = broker(&redis, "b");
    assert!(mosquitto_sub(a.port(), "on-a", "both/#", None).is_empty());
    assert!(mosquitto_sub(b.port(), "on-b", "both/#", None).is_empty());
    stored(&redis, "on-a", "both/#");
    stored(&redis, "on-b", "both/#");
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let a = broker(&redis, "a");
    // a routes to its own offline session only.
    common::mosquitto_publish(a.port(), "both/x", 0, 5);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis.int(&["HLEN", "ringmq:{on-a}:q"]), 5);
    assert_eq!(redis.int(&["HLEN", "ringmq:{on-b}:q"]), 0);
    // b's session is b's: its client finds it there, and on a (claimed) too.
    common::mosquitto_publish(b.port(), "both/x", 5, 8);
    let got = mosquitto_sub(a.port(), "on-b", "both/#", Some(3));
    assert_eq!(got, vec![5, 6, 7]);
    let got = mosquitto_sub(a.port(), "on-a", "both/#", Some(5));
    assert_eq!(got, (0..5).collect::<Vec<_>>());
}

#[test]
fn a_claim_that_cannot_reach_redis_refuses_the_connect() {
    let mut redis = Redis::start();
    let a = broker(&redis, "a");
    let (_ok, _) = Raw::connect(a.addr, V5, "before", false);
    redis.kill();
    let mut connect = common::connect_packet(V5, "during");
    connect.clean_start = false;
    let (_raw, ack) = Raw::connect_with(a.addr, connect);
    let ack = ack.expect("a CONNACK");
    assert_eq!(ack.code.0, 0x88, "server unavailable");
    // A client that sent no id gets one of this broker's, claimed too.
    let (_anon, ack) = Raw::connect_with(a.addr, common::connect_packet(V5, ""));
    assert_eq!(ack.expect("a CONNACK").code.0, 0x88);
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut connect = common::connect_packet(V5, "after");
        connect.clean_start = false;
        let (_raw, ack) = Raw::connect_with(a.addr, connect);
        if ack.is_some_and(|a| a.code.is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "claims work again after Redis is back"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_missed_notice_is_caught_by_the_check_after_resubscribing() {
    let redis = Redis::start();
    let a = broker(&redis, "a");
    let (mut held, _) = Raw::connect(a.addr, V5, "missed", false);
    held.subscribe("mi/#", QoS::AtLeastOnce);
    // Another broker claims it while a is not listening: the owner key says so, and no
    // notice goes out (a plain HSET, as if a's subscription had been down meanwhile).
    let key = "ringmq:{missed}:o";
    let epoch: u64 = redis.cli(&["HGET", key, "e"]).trim().parse().unwrap();
    redis.cli(&["HSET", key, "b", "z", "e", &(epoch + 1).to_string()]);
    assert!(held.recv_within(Duration::from_millis(300)).is_none());
    // a's watcher loses its subscription, subscribes again and has its sessions checked.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    match held.recv_within(Duration::from_secs(5)) {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason.0, 0x8E),
        other => panic!("expected DISCONNECT 0x8E after the check, got {other:?}"),
    }
    // Sessions a still owns are left alone.
    let (mut kept, _) = Raw::connect(a.addr, V5, "kept", false);
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(kept.recv_within(Duration::from_secs(1)).is_none());
    kept.send(&Packet::PingReq);
    assert!(matches!(
        kept.recv_within(Duration::from_secs(2)),
        Some(Packet::PingResp)
    ));
}

#[test]
fn a_second_process_with_the_same_broker_id_is_refused() {
    let redis = Redis::start();
    let _a = broker(&redis, "same");
    let url = redis.url();
    let mut refused = args(&url, "same").to_vec();
    refused.extend(["--redis-start-wait-secs", "0"]);
    let err = common::refused_start(&refused);
    assert!(err.contains("ringmq:lock:same"), "{err}");
    assert!(err.contains("one process per `redis_broker_id`"), "{err}");
}

#[test]
fn a_sessions_writes_count_only_within_its_owners_unbroken_hold() {
    use storage::redis::layout::GUARD;
    use storage::redis::owners::CLAIM;
    let redis = Redis::start();
    let script = |s: &[u8]| String::from_utf8(s.to_vec()).unwrap();
    let (claim, guard) = (script(CLAIM), script(GUARD));
    let owner = "ringmq:{g}:o";
    let claim_by = |broker: &str| -> String {
        let out = redis.cli(&[
            "EVAL",
            &claim,
            "1",
            owner,
            broker,
            "ringmq:owners",
            "g",
            "0",
        ]);
        // Previous broker, previous epoch, the new epoch, the hold's start: the new epoch.
        out.lines().nth(2).unwrap().trim().to_string()
    };
    let write = |broker: &str, epoch: &str, value: &str| -> i64 {
        let out = redis.cli(&[
            "EVAL",
            &guard,
            "1",
            owner,
            broker,
            epoch,
            "HSET",
            "ringmq:{g}:q",
            "k",
            value,
        ]);
        out.trim().parse().unwrap()
    };
    let e1 = claim_by("n1");
    assert_eq!(write("n1", &e1, "1"), 1, "the owner's write");
    // n1 claims again (its client reconnected to it): writes under its earlier epoch count.
    let e2 = claim_by("n1");
    assert!(e2.parse::<u64>().unwrap() > e1.parse::<u64>().unwrap());
    assert_eq!(write("n1", &e1, "2"), 0, "applied (the field existed)");
    assert_eq!(redis.cli(&["HGET", "ringmq:{g}:q", "k"]).trim(), "2");
    // n2 takes it: n1's writes change nothing, whatever its epoch.
    let e3 = claim_by("n2");
    assert_eq!(write("n1", &e2, "stale"), -1);
    assert_eq!(write("n2", &e3, "3"), 0);
    // n1 takes it back: its writes from before n2 still change nothing.
    let e4 = claim_by("n1");
    assert_eq!(write("n1", &e2, "stale"), -1);
    assert_eq!(write("n1", &e4, "4"), 0);
    assert_eq!(redis.cli(&["HGET", "ringmq:{g}:q", "k"]).trim(), "4");
    // An acknowledgement batch as long as the encoder writes one (Lua's unpack limit).
    let mut args: Vec<String> = [
        "EVAL",
        &guard,
        "1",
        owner,
        "n1",
        &e4,
        "HDEL",
        "ringmq:{g}:q",
    ]
    .map(String::from)
    .to_vec();
    args.extend((0..storage::redis::layout::ACK_ARGS_MAX).map(|i| format!("x{i}")));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_eq!(redis.cli(&refs).trim(), "0");
}
