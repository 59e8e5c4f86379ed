//! The Redis store with the real binary and a real redis-server (appendonly yes, appendfsync
//! always) started on a free port: sessions resumed through Redis by real clients after a
//! SIGKILL, the crash test, a Redis outage (held, then refused, then resumed by itself),
//! 70,000 messages through one session, TTLs kept across updates, and clear start-up errors.
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

use std::process::Command;
use std::time::{Duration, Instant};

use common::{id_on, Broker, Raw};
use net::codec::{Packet, ProtocolVersion, PubRespKind, QoS};
use redis::Redis;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;

fn broker_on(redis: &Redis, extra: &[&str]) -> Broker {
    let url = redis.url();
    let mut args = vec!["--store", "redis", "--redis-url", &url];
    args.extend_from_slice(extra);
    Broker::start(&args)
}

fn sigkill(broker: &mut Broker) {
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}

fn paho(port: u16, version: &str, id: &str, phase: &[&str]) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/clients/paho_resume.py");
    let status = Command::new("python3")
        .arg(script)
        .args([&port.to_string(), version, id])
        .args(phase)
        .status()
        .expect("python3 with paho-mqtt (installed by scripts/test.sh)");
    assert!(status.success(), "paho {version} {phase:?}");
}

#[test]
fn sessions_resume_through_redis_after_sigkill_with_real_clients() {
    use rumqttc::{Client, Event, Incoming, MqttOptions};
    let redis = Redis::start();
    let mut broker = broker_on(&redis, &[]);
    let port = broker.port();
    let (paho4, paho5) = (id_on("paho4", 0), id_on("paho5", 1));
    paho(port, "v311", &paho4, &["subscribe"]);
    paho(port, "v5", &paho5, &["subscribe"]);
    let mosq = id_on("mosq", 1);
    let status = Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-i", &mosq, "-c", "-q", "1"])
        .args(["-t", "resume/#", "-E"])
        .status()
        .unwrap();
    assert!(status.success());
    let rumq = id_on("rumq", 0);
    let options = || {
        let mut o = MqttOptions::new(rumq.clone(), "127.0.0.1", port);
        o.set_clean_session(false);
        o
    };
    common::rumqttc_subscribe(options(), "resume/#");
    common::mosquitto_publish(port, "resume/x", 0, 50);
    // Queued in Redis for four offline sessions; the broker dies without a word.
    sigkill(&mut broker);
    assert_eq!(redis.int(&["HLEN", &format!("ringmq:{{{paho4}}}:q")]), 50);
    let broker = broker_on(&redis, &[]);
    let port = broker.port();
    paho(port, "v311", &paho4, &["drain", "50"]);
    paho(port, "v5", &paho5, &["drain", "50"]);
    let out = Command::new("mosquitto_sub")
        .args(["-p", &port.to_string(), "-i", &mosq, "-c", "-q", "1"])
        .args(["-t", "resume/#", "-C", "50", "-W", "10"])
        .output()
        .unwrap();
    let got: Vec<u32> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(got, (0..50).collect::<Vec<_>>(), "mosquitto_sub");
    let mut o = MqttOptions::new(rumq.clone(), "127.0.0.1", port);
    o.set_clean_session(false);
    let (_c, mut conn) = Client::new(o, 100);
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < 50 && Instant::now() < deadline {
        if let Ok(Ok(Event::Incoming(Incoming::Publish(p)))) =
            conn.recv_timeout(Duration::from_secs(5))
        {
            got.push(String::from_utf8_lossy(&p.payload).parse::<u32>().unwrap());
        }
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>(), "rumqttc");
    // Everything acknowledged is gone from Redis once the acknowledgements are written.
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(redis.int(&["HLEN", &format!("ringmq:{{{paho4}}}:q")]), 0);
}

#[test]
fn nothing_acknowledged_is_lost_across_sigkill_with_redis() {
    let rounds: usize = std::env::var("RINGMQ_REDIS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let redis = Redis::start();
    crash::nothing_acknowledged_is_lost(rounds, |fresh| {
        if fresh {
            assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
        }
        broker_on(&redis, &["--session-queue-count-max", "100000"])
    });
}

#[test]
fn a_redis_outage_holds_then_refuses_and_traffic_resumes_by_itself() {
    let mut redis = Redis::start();
    let metrics = format!("127.0.0.1:{}", common::free_port());
    let broker = broker_on(
        &redis,
        &["--redis-hold-ms", "1500", "--metrics-listen", &metrics],
    );
    // `ringmq_store_up` of shard 0 (the subscriber's, where the records land).
    let store_up = || common::metric(&metrics, "ringmq_store_up{shard=\"0\"}");
    let sub_id = id_on("outage-sub", 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &sub_id, false);
    sub.subscribe("out/#", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    let (mut live, _) = Raw::connect(broker.addr, V4, &id_on("outage-live", 0), true);
    live.subscribe("live/#", QoS::AtMostOnce);
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("outage-pub", 1), true);
    for i in 1..=100u16 {
        publ.publish("out/a", &i.to_be_bytes(), QoS::AtLeastOnce, i);
        assert_eq!(publ.puback_within(i, Duration::from_secs(5)), Some(0));
    }
    redis.kill();
    publ.publish("out/a", &101u16.to_be_bytes(), QoS::AtLeastOnce, 101);
    // Held while Redis is away (the publisher slows down) ...
    assert!(publ.recv_within(Duration::from_millis(700)).is_none());
    // ... clean sessions and QoS 0 carry on ...
    publ.publish("live/x", b"q0", QoS::AtMostOnce, 0);
    match live.recv_within(Duration::from_secs(2)) {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"q0"),
        other => panic!("QoS 0 during the outage: {other:?}"),
    }
    // ... then refused once the hold is over; new durable publishes too.
    assert_eq!(publ.puback_within(101, Duration::from_secs(5)), Some(0x97));
    publ.publish("out/a", &102u16.to_be_bytes(), QoS::AtLeastOnce, 102);
    assert_eq!(publ.puback_within(102, Duration::from_secs(2)), Some(0x97));
    // An MQTT 3 publisher cannot be told: its connection closes.
    let (mut v3, _) = Raw::connect(broker.addr, V4, &id_on("outage-v3", 1), true);
    v3.publish("out/a", b"v3", QoS::AtLeastOnce, 1);
    assert_eq!(v3.puback_within(1, Duration::from_secs(3)), None);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(store_up(), 0, "the outage shows in the metrics");
    // Longer than the lock's TTL: the lock expires meanwhile and is taken again, not lost.
    std::thread::sleep(Duration::from_millis(5500));
    redis.restart();
    let mut accepted = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 103u16;
    while accepted.len() < 20 {
        assert!(Instant::now() < deadline, "publishes not accepted again");
        publ.publish("out/a", &id.to_be_bytes(), QoS::AtLeastOnce, id);
        if publ.puback_within(id, Duration::from_secs(5)) == Some(0) {
            accepted.push(id);
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
        id += 1;
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(store_up(), 1);
    // Everything acknowledged with 0x00 reaches the offline subscriber.
    let (mut sub, ack) = Raw::connect(broker.addr, V4, &sub_id, false);
    assert!(ack.session_present);
    let mut got = std::collections::BTreeSet::new();
    while let Some(p) = sub.recv_within(Duration::from_millis(1500)) {
        if let Packet::Publish(p) = p {
            got.insert(u16::from_be_bytes(p.payload[..2].try_into().unwrap()));
            sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        }
    }
    for i in (1..=100).chain(accepted) {
        assert!(got.contains(&i), "acknowledged message {i} lost");
    }
}

#[test]
fn seventy_thousand_messages_through_one_session_survive_a_restart_in_order() {
    let redis = Redis::start();
    let args = ["--session-queue-count-max", "100000"];
    let mut broker = broker_on(&redis, &args);
    let sub_id = id_on("wrap-sub", 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &sub_id, false);
    sub.subscribe("wrap/#", QoS::ExactlyOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    const N: u32 = 70_000;
    let progress = std::sync::atomic::AtomicU32::new(0);
    // More messages than packet ids: half QoS 1, half QoS 2, all PUBACKed / PUBCOMPed.
    let acked =
        crash::publish_window_until_dead(broker.addr, &id_on("wrap-pub", 1), &progress, N, |i| {
            net::codec::Publish {
                dup: false,
                qos: if i % 2 == 0 {
                    QoS::AtLeastOnce
                } else {
                    QoS::ExactlyOnce
                },
                retain: false,
                topic: "wrap/t".into(),
                packet_id: None,
                properties: Default::default(),
                payload: bytes::Bytes::from(i.to_be_bytes().to_vec()),
            }
        });
    assert_eq!(acked.len(), N as usize);
    sigkill(&mut broker);
    let broker = broker_on(&redis, &args);
    let (q1, q2) = crash::drain_any(broker.addr, &sub_id);
    let q1: Vec<u32> = q1.into_iter().map(|(s, _)| s).collect();
    let expect = |odd: u32| (0..N).filter(|i| i % 2 == odd).collect::<Vec<_>>();
    assert_eq!(
        q1,
        expect(0),
        "every QoS 1 message once, in order, after the restart"
    );
    assert_eq!(
        q2,
        expect(1),
        "every QoS 2 message once, in order, after the restart"
    );
}

#[test]
fn ttls_follow_the_session_expiry_and_survive_updates() {
    let redis = Redis::start();
    let broker = broker_on(&redis, &[]);
    let id = id_on("ttl", 0);
    let key = |s: &str| format!("ringmq:{{{id}}}:{s}");
    let connect = |addr| {
        let mut c = common::connect_packet(V5, &id);
        c.clean_start = false;
        c.properties.session_expiry_interval = Some(60);
        Raw::connect_with(addr, c).0
    };
    let mut sub = connect(broker.addr);
    sub.subscribe("ttl/#", QoS::ExactlyOnce);
    std::thread::sleep(Duration::from_millis(200));
    // Connected: no TTL.
    assert_eq!(redis.int(&["PTTL", &key("s")]), -1);
    sub.send(&Packet::Disconnect(Default::default()));
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("ttl-pub", 1), true);
    publ.publish("ttl/a", b"1", QoS::ExactlyOnce, 1);
    std::thread::sleep(Duration::from_millis(300));
    for k in ["s", "q"] {
        let ttl = redis.int(&["PTTL", &key(k)]);
        assert!((1..=60_000).contains(&ttl), "{k} offline: PTTL {ttl}");
    }
    // The message goes out and is PUBREC'd (state written), then the client leaves again:
    // the packet-id and released keys carry the deadline too.
    let mut sub = connect(broker.addr);
    let p = match sub.recv_within(Duration::from_secs(3)) {
        Some(Packet::Publish(p)) => p,
        other => panic!("expected the queued PUBLISH, got {other:?}"),
    };
    sub.ack(PubRespKind::PubRec, p.packet_id.unwrap());
    assert!(
        matches!(sub.recv_within(Duration::from_secs(3)), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRel)
    );
    sub.send(&Packet::Disconnect(Default::default()));
    std::thread::sleep(Duration::from_millis(300));
    for k in ["s", "q", "p", "r"] {
        let ttl = redis.int(&["PTTL", &key(k)]);
        assert!((1..=60_000).contains(&ttl), "{k} after PUBREC: PTTL {ttl}");
    }
    // Completed: the queue empties (its key is deleted); a new message recreates it offline,
    // with the deadline.
    let mut sub = connect(broker.addr);
    assert!(
        matches!(sub.recv_within(Duration::from_secs(3)), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRel)
    );
    sub.ack(PubRespKind::PubComp, p.packet_id.unwrap());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(redis.int(&["EXISTS", &key("q")]), 0);
    sub.send(&Packet::Disconnect(Default::default()));
    std::thread::sleep(Duration::from_millis(100));
    publ.publish("ttl/a", b"2", QoS::AtLeastOnce, 2);
    std::thread::sleep(Duration::from_millis(300));
    let ttl = redis.int(&["PTTL", &key("q")]);
    assert!((1..=60_000).contains(&ttl), "recreated queue: PTTL {ttl}");
}

/// The binary refusing to start with the Redis store, one shard and `extra` (its stderr).
fn redis_refused(extra: &[&str]) -> String {
    let mut args = vec!["--shards", "1", "--store", "redis"];
    args.extend_from_slice(extra);
    common::refused_start(&args)
}

#[test]
fn an_unreachable_redis_or_a_bad_url_is_a_clear_start_up_error() {
    let url = format!("redis://127.0.0.1:{}", common::free_port());
    let err = redis_refused(&["--redis-url", &url, "--redis-start-wait-secs", "1"]);
    assert!(err.contains(&url) && err.contains("unreachable"), "{err}");
    let err = redis_refused(&["--redis-url", "http://x"]);
    assert!(err.contains("redis_url"), "{err}");
    let err = redis_refused(&["--durability", "memory"]);
    assert!(err.contains("`store`"), "{err}");
}

#[test]
fn one_broker_per_redis_database_and_a_broker_that_lost_the_lock_stops_writing() {
    let redis = Redis::start();
    let broker = broker_on(&redis, &[]);
    // A second broker on the same database waits, then refuses to start.
    let url = redis.url();
    let err = redis_refused(&["--redis-url", &url, "--redis-start-wait-secs", "1"]);
    assert!(err.contains("ringmq:lock") && err.contains(&url), "{err}");
    // Another broker takes the lock (as after an outage longer than its TTL): this one stops
    // writing and refuses durable publishes.
    let sub_id = id_on("lock-sub", 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &sub_id, false);
    sub.subscribe("lock/#", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("lock-pub", 1), true);
    publ.publish("lock/a", b"1", QoS::AtLeastOnce, 1);
    assert_eq!(publ.puback_within(1, Duration::from_secs(5)), Some(0));
    assert_eq!(
        redis
            .cli(&["SET", "ringmq:lock", "another-host 1 1", "PX", "60000"])
            .trim(),
        "OK"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut id = 2u16;
    loop {
        assert!(
            Instant::now() < deadline,
            "still accepting after losing the lock"
        );
        publ.publish("lock/a", b"x", QoS::AtLeastOnce, id);
        if publ.puback_within(id, Duration::from_secs(8)) == Some(0x97) {
            break;
        }
        id += 1;
        std::thread::sleep(Duration::from_millis(200));
    }
    let queued = redis.int(&["HLEN", &format!("ringmq:{{{sub_id}}}:q")]);
    std::thread::sleep(Duration::from_millis(1500));
    publ.publish("lock/a", b"y", QoS::AtLeastOnce, 999);
    assert_eq!(publ.puback_within(999, Duration::from_secs(8)), Some(0x97));
    assert_eq!(
        redis.int(&["HLEN", &format!("ringmq:{{{sub_id}}}:q")]),
        queued,
        "a fenced broker writes nothing more"
    );
}

#[test]
fn an_acl_user_with_only_the_commands_the_store_needs_works_and_a_bad_password_is_refused() {
    let redis = Redis::start_with_password("admin-pw");
    // The store's whole command set, on its own keys only (README: "The Redis store").
    let acl = "ACL SETUSER ringmq on >store-pw ~ringmq:* +ping +hset +hdel +del +sadd +srem \
               +pexpire +persist +eval +set +get +scan +hscan +hgetall +smembers";
    let mut args = vec!["-a", "admin-pw", "--no-auth-warning"];
    args.extend(acl.split(' '));
    assert_eq!(redis.cli(&args).trim(), "OK");
    let url = format!("redis://ringmq:store-pw@127.0.0.1:{}", redis.port);
    let mut broker = Broker::start(&["--store", "redis", "--redis-url", &url]);
    let id = id_on("acl-sub", 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &id, false);
    sub.subscribe("acl/#", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("acl-pub", 1), true);
    publ.publish("acl/a", b"kept", QoS::AtLeastOnce, 1);
    assert_eq!(publ.puback_within(1, Duration::from_secs(5)), Some(0));
    sigkill(&mut broker);
    let broker = Broker::start(&["--store", "redis", "--redis-url", &url]);
    let (mut sub, ack) = Raw::connect(broker.addr, V4, &id, false);
    assert!(ack.session_present);
    match sub.recv_within(Duration::from_secs(3)) {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"kept"),
        other => panic!("expected the queued message, got {other:?}"),
    }
    drop(broker);
    let bad = format!("redis://ringmq:wrong@127.0.0.1:{}", redis.port);
    let err = redis_refused(&["--redis-url", &bad, "--redis-start-wait-secs", "1"]);
    assert!(err.contains("WRONGPASS"), "{err}");
    assert!(!err.contains("wrong@"), "the password is not logged: {err}");
}

#[test]
fn a_redis_that_stops_answering_is_an_outage_too() {
    // With a password: every new connection's first batch carries AUTH, and the batches that
    // time out on them are retried without it piling up.
    let redis = Redis::start_with_password("pw");
    let url = format!("redis://:pw@127.0.0.1:{}", redis.port);
    let broker = Broker::start(&[
        "--store",
        "redis",
        "--redis-url",
        &url,
        "--redis-hold-ms",
        "1500",
    ]);
    let sub_id = id_on("stop-sub", 0);
    let (mut sub, _) = Raw::connect(broker.addr, V4, &sub_id, false);
    sub.subscribe("stop/#", QoS::AtLeastOnce);
    sub.send(&Packet::Disconnect(Default::default()));
    let (mut publ, _) = Raw::connect(broker.addr, V5, &id_on("stop-pub", 1), true);
    publ.publish("stop/a", &1u16.to_be_bytes(), QoS::AtLeastOnce, 1);
    assert_eq!(publ.puback_within(1, Duration::from_secs(5)), Some(0));
    // SIGSTOP: the connection stays open and silent; the batch out times out after the hold.
    redis.pause();
    publ.publish("stop/a", &2u16.to_be_bytes(), QoS::AtLeastOnce, 2);
    assert!(
        publ.recv_within(Duration::from_millis(700)).is_none(),
        "held"
    );
    assert_eq!(publ.puback_within(2, Duration::from_secs(6)), Some(0x97));
    redis.resume();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut id = 3u16;
    loop {
        assert!(Instant::now() < deadline, "publishes not accepted again");
        publ.publish("stop/a", &id.to_be_bytes(), QoS::AtLeastOnce, id);
        if publ.puback_within(id, Duration::from_secs(5)) == Some(0) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        id += 1;
    }
    let (mut sub, _) = Raw::connect(broker.addr, V4, &sub_id, false);
    let mut got = std::collections::BTreeSet::new();
    while let Some(p) = sub.recv_within(Duration::from_millis(1500)) {
        if let Packet::Publish(p) = p {
            got.insert(u16::from_be_bytes(p.payload[..2].try_into().unwrap()));
            sub.ack(PubRespKind::PubAck, p.packet_id.unwrap());
        }
    }
    assert!(
        got.contains(&1) && got.contains(&id),
        "acknowledged messages arrive: {got:?}"
    );
}
