//! Soak: nothing per connection or per session stays behind. The broker runs in-process (2
//! shards) under a counting global allocator that tracks live heap bytes, while cycles of
//! clients connect, subscribe (exact and wildcard filters), publish QoS 0, 1 and 2, and leave:
//! clean sessions (some with DISCONNECT, some by closing the socket), persistent MQTT 5
//! sessions with a 1 s expiry that get messages queued while offline, takeovers, and wills.
//! Every client id is new. Two equal stretches of cycles each end with every session expired
//! and the shards' shrink pass run: the second must leave the live heap where the first did.
//!
//! `RINGMQ_SOAK_SECS` sets how long the cycles run (default 30).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{connect_packet, Raw};
use net::codec::{Packet, ProtocolVersion, PubRespKind, QoS, Will};

#[path = "common/counting.rs"]
mod counting;

use counting::LIVE;

#[global_allocator]
static GLOBAL: counting::Counting = counting::Counting;

const V4: ProtocolVersion = ProtocolVersion::V311;
const V5: ProtocolVersion = ProtocolVersion::V5;
/// Waiting this long after the last client lets every session expire (1 s) and the shards'
/// shrink pass (every 5 s) run at least once.
const SETTLE: Duration = Duration::from_secs(7);

fn live() -> i64 {
    LIVE.load(Ordering::Relaxed)
}

/// A persistent MQTT 5 session expiring 1 s after its connection ends.
fn persistent(addr: SocketAddr, id: &str) -> Raw {
    let mut c = connect_packet(V5, id);
    c.clean_start = false;
    let p = net::codec::Properties {
        session_expiry_interval: Some(1),
        ..Default::default()
    };
    c.properties = p.into();
    let (raw, ack) = Raw::connect_with(addr, c);
    assert!(ack.is_some_and(|a| a.code.is_success()));
    raw
}

/// Takes every packet for `wait`, acknowledging QoS 1 and 2 as a client does; the
/// publishes seen.
fn take_all(c: &mut Raw, wait: Duration) -> usize {
    let mut seen = 0;
    while let Some(p) = c.recv_within(wait) {
        match p {
            Packet::Publish(p) => {
                seen += 1;
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => c.ack(PubRespKind::PubAck, id),
                    (QoS::ExactlyOnce, Some(id)) => c.ack(PubRespKind::PubRec, id),
                    _ => {}
                }
            }
            Packet::PubResp(r) if r.kind == PubRespKind::PubRel => {
                c.ack(PubRespKind::PubComp, r.packet_id);
            }
            _ => {}
        }
    }
    seen
}

/// One cycle of every kind of client; `n` makes the client ids new.
fn cycle(addr: SocketAddr, n: u32) {
    // A watcher on a wildcard, and clean clients publishing QoS 0/1/2 to their own topics.
    let (mut watcher, _) = Raw::connect(addr, V5, &format!("soak-w{n}"), true);
    watcher.subscribe("soak/+/t", QoS::ExactlyOnce);
    for i in 0..20u16 {
        let version = if i % 2 == 0 { V4 } else { V5 };
        let (mut c, _) = Raw::connect(addr, version, &format!("soak-c{n}-{i}"), true);
        c.subscribe(&format!("soak/{n}-{i}/t"), QoS::ExactlyOnce);
        c.publish(&format!("soak/{n}-{i}/t"), b"q0", QoS::AtMostOnce, 0);
        c.publish_acked(&format!("soak/{n}-{i}/t"), b"q1", 1);
        c.publish(&format!("soak/{n}-{i}/t"), b"q2", QoS::ExactlyOnce, 2);
        let mut acked = false;
        while !acked {
            match c.recv() {
                Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRec => {
                    c.ack(PubRespKind::PubRel, r.packet_id);
                }
                Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubComp => acked = true,
                Some(Packet::Publish(p)) => match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => c.ack(PubRespKind::PubAck, id),
                    (QoS::ExactlyOnce, Some(id)) => c.ack(PubRespKind::PubRec, id),
                    _ => {}
                },
                Some(_) => {}
                None => panic!("closed mid-cycle"),
            }
        }
        if i % 3 == 0 {
            c.send(&Packet::Disconnect(Default::default()));
        }
    }
    // Persistent sessions that leave, get messages queued, and expire 1 s later.
    for i in 0..10u16 {
        let mut c = persistent(addr, &format!("soak-p{n}-{i}"));
        c.subscribe(&format!("soak/p{n}-{i}"), QoS::AtLeastOnce);
        c.send(&Packet::Disconnect(Default::default()));
    }
    let (mut feeder, _) = Raw::connect(addr, V4, &format!("soak-f{n}"), true);
    let mut pid = 0;
    for i in 0..10u16 {
        for _ in 0..3 {
            pid += 1;
            feeder.publish_acked(&format!("soak/p{n}-{i}"), b"queued", pid);
        }
    }
    // A takeover: the second connection with the id ends the first.
    let (first, _) = Raw::connect(addr, V5, &format!("soak-t{n}"), false);
    let (second, _) = Raw::connect(addr, V5, &format!("soak-t{n}"), true);
    drop((first, second));
    // A will, published when its client vanishes.
    let mut c = connect_packet(V5, &format!("soak-will{n}"));
    c.will = Some(Will {
        qos: QoS::AtLeastOnce,
        retain: false,
        properties: Default::default(),
        topic: format!("soak/will{n}/t").into(),
        payload: bytes::Bytes::from_static(b"gone"),
    });
    let (willing, _) = Raw::connect_with(addr, c);
    drop(willing);
    // The watcher saw 3 messages per clean client (QoS 0 may not be counted if late) and the will.
    let seen = take_all(&mut watcher, Duration::from_millis(300));
    assert!(seen >= 40, "cycle {n}: the watcher saw {seen}");
}

#[test]
fn live_memory_returns_to_its_level_after_every_session_ends() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = broker::config::Config {
        listen: format!("127.0.0.1:{port}").parse().unwrap(),
        shards: 2,
        durability: broker::config::Durability::Memory,
        ..Default::default()
    }
    .validate()
    .unwrap();
    let broker = broker::run(config).unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let secs: u64 = std::env::var("RINGMQ_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let start = live();
    // Two equal stretches of cycles, each followed by a settle: the first brings the
    // containers to their working size (and their shrink floors); the second must leave
    // nothing more behind.
    let mut cycles = 0;
    let mut level = Vec::new();
    let mut peak = start;
    for _ in 0..2 {
        let end = Instant::now() + Duration::from_secs(secs / 2);
        let first = cycles;
        while Instant::now() < end {
            cycles += 1;
            cycle(addr, cycles);
            peak = peak.max(live());
        }
        std::thread::sleep(SETTLE);
        level.push((cycles - first, live()));
    }
    let [(n1, after1), (n2, after2)] = level[..] else {
        unreachable!()
    };
    let per_cycle = 2 + 20 + 10 + 1 + 2 + 1;
    println!(
        "live heap: {start} B at start; {after1} B after {n1} cycles and a settle; peak {peak} B; \
         {after2} B after {n2} more cycles ({} connections) and a settle",
        n2 * per_cycle
    );
    assert!(
        after1 - start < 1 << 20,
        "the first stretch left {} bytes",
        after1 - start
    );
    // A leftover of 4 bytes per connection in the second stretch would exceed this.
    let slack = (4 * i64::from(n2 * per_cycle)).max(16 << 10);
    assert!(
        after2 - after1 <= slack,
        "{} bytes more after {n2} more cycles ({} connections)",
        after2 - after1,
        n2 * per_cycle
    );
    broker.stop();
    broker.join().unwrap();
}
