//! Durability with the real binary: nothing acknowledged is lost across SIGKILL.
//!
//! The crash test (`common/crash.rs`) on the embedded log: each message is logged once on the
//! subscribers' shard, the second subscriber's copy as a reference; the broker restarts on the
//! same data directory. `RINGMQ_CRASH_ROUNDS` kill points (default 20), and a quarter as many
//! with small segments whose files are reused (recycled segments). Also: refused starts,
//! expiry-zero resumes, retained sets and clears across SIGKILL.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{id_on, scratch_dir, Broker, Raw};
use net::codec::{Packet, ProtocolVersion, Publish, QoS};

#[path = "common/crash.rs"]
mod crash;

use crash::{publish_window_until_dead, Rng, V4};

/// Rounds of a crash test: `RINGMQ_CRASH_ROUNDS` / `divisor` (rounded up), else `default`.
fn crash_rounds(default: usize, divisor: usize) -> usize {
    std::env::var("RINGMQ_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(default, |n| n.div_ceil(divisor))
}

#[test]
fn nothing_acknowledged_is_lost_across_sigkill() {
    let rounds = crash_rounds(20, 1);
    let mut dir = scratch_dir("crash");
    // The offline queue must hold the whole run (its bound drops the oldest, by policy).
    let args = ["--session-queue-count-max", "100000"];
    crash::nothing_acknowledged_is_lost(rounds, |fresh| {
        if fresh {
            let _ = std::fs::remove_dir_all(&dir);
            dir = scratch_dir("crash");
        }
        Broker::start_in(&dir, &args)
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// The crash test with 256 KiB segments: compaction deletes segments from the first second
/// on and their files are reused (`segments_recycled`), so the broker is killed while it
/// writes over earlier segments' frames, and recovery must tell this life's records from the
/// previous one's. `RINGMQ_CRASH_ROUNDS` / 4 rounds (default 5).
#[test]
fn nothing_acknowledged_is_lost_across_sigkill_with_recycled_segments() {
    let rounds = crash_rounds(5, 4);
    let mut dir = scratch_dir("crash-recycled");
    let args = [
        "--session-queue-count-max",
        "100000",
        "--segment-bytes",
        "262144",
    ];
    let mut reused = 0;
    crash::nothing_acknowledged_is_lost(rounds, |fresh| {
        if fresh {
            let _ = std::fs::remove_dir_all(&dir);
            dir = scratch_dir("crash-recycled");
        } else {
            reused += recycled_segments(&dir);
        }
        Broker::start_in(&dir, &args)
    });
    assert!(reused > 0, "no segment file was reused before a kill");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Segment files of `dir`'s shards in use that held an earlier segment: bytes other than
/// zeros after their records and end marker.
fn recycled_segments(dir: &std::path::Path) -> usize {
    let mut n = 0;
    for shard in std::fs::read_dir(dir).unwrap().flatten() {
        let Ok(files) = std::fs::read_dir(shard.path()) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name().into_string().unwrap();
            if let Some(id) = name.strip_suffix(".log") {
                let bytes = std::fs::read(f.path()).unwrap();
                let id = id.parse().unwrap();
                n += usize::from(storage::embedded::frame::holds_a_previous_life(&bytes, id));
            }
        }
    }
    n
}

/// The binary refusing to start on `dir` (its stderr).
fn refused_start(dir: &std::path::Path) -> String {
    common::refused_start(&["--shards", "2", "--data-dir", dir.to_str().unwrap()])
}

#[test]
fn a_second_broker_and_a_corrupt_log_are_refused_with_a_clear_error() {
    let dir = scratch_dir("refuse");
    let broker = Broker::start_in(&dir, &[]);
    let (mut c, _) = Raw::connect(broker.addr, V4, &id_on("refuse", 0), false);
    c.subscribe("r/#", QoS::AtLeastOnce);
    let (mut p, _) = Raw::connect(broker.addr, V4, &id_on("refuse-pub", 0), true);
    c.send(&Packet::Disconnect(Default::default()));
    std::thread::sleep(Duration::from_millis(100));
    for i in 1..=50 {
        p.publish_acked("r/x", format!("{i}").as_bytes(), i);
    }
    let err = refused_start(&dir);
    assert!(err.contains("locked by another broker"), "{err}");
    drop(p);
    drop(broker);
    // Damage a record in the middle of shard 0's log: start-up stops naming file and offset.
    let seg = dir.join("shard-0").join("00000001.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let scan = storage::embedded::frame::scan(&bytes, 1);
    let victim = scan.records[scan.records.len() / 2].0 as usize;
    bytes[victim + 10] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let err = refused_start(&dir);
    assert!(
        err.contains("00000001.log") && err.contains(&format!("offset {victim}")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_session_resumed_with_expiry_zero_does_not_come_back_after_a_restart() {
    let dir = scratch_dir("expiry0");
    let id = id_on("exp0", 1);
    {
        let broker = Broker::start_in(&dir, &[]);
        let (mut c, _) = Raw::connect(broker.addr, ProtocolVersion::V5, &id, false);
        c.subscribe("e/#", QoS::AtLeastOnce);
        c.send(&Packet::Disconnect(Default::default()));
        std::thread::sleep(Duration::from_millis(100));
        // Resume with clean start 0 but session expiry 0: the session now ends with this
        // connection.
        let mut connect = common::connect_packet(ProtocolVersion::V5, &id);
        connect.clean_start = false;
        let (_c, ack) = Raw::connect_with(broker.addr, connect);
        assert!(ack.unwrap().session_present);
    }
    let broker = Broker::start_in(&dir, &[]);
    let mut connect = common::connect_packet(ProtocolVersion::V5, &id);
    connect.clean_start = false;
    let (_c, ack) = Raw::connect_with(broker.addr, connect);
    assert!(!ack.unwrap().session_present, "the ended session came back");
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}

const RETAIN_OPS: u32 = 30_000;
const RETAIN_TOPICS: u32 = 64;

/// Op `i` of the retained crash test: topic `crash/r/<i % 64>`, a clear (empty payload) for
/// every fifth op, otherwise the payload `i`.
fn retain_op(i: u32) -> (String, Option<u32>) {
    let topic = format!("crash/r/{}", i % RETAIN_TOPICS);
    (topic, (i % 5 != 4).then_some(i))
}

/// Publishes the retained ops as QoS 1 (a window of 200) until the broker dies; returns the
/// ops acknowledged.
fn retain_until_dead(
    addr: std::net::SocketAddr,
    id: &str,
    progress: &std::sync::atomic::AtomicU32,
) -> BTreeSet<u32> {
    publish_window_until_dead(addr, id, progress, RETAIN_OPS, |op| {
        let (topic, value) = retain_op(op);
        Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: topic.into(),
            packet_id: None,
            properties: Default::default(),
            payload: value.map_or_else(Bytes::new, |v| Bytes::from(v.to_string())),
        }
    })
}

/// Retained messages across SIGKILL on 2 shards (topics owned by both, the publisher homed on
/// one): after the restart each topic holds the result of an op at or after the last one
/// acknowledged for it (a set with its value, or nothing after a clear), never an older one.
#[test]
fn acknowledged_retained_sets_and_clears_survive_sigkill() {
    let rounds = crash_rounds(6, 3) as u64;
    let mut rng = Rng::from_clock();
    for round in 0..rounds {
        let dir = scratch_dir("crash-retained");
        let mut broker = Broker::start_in(&dir, &[]);
        let addr = broker.addr;
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let p2 = progress.clone();
        let id = id_on("crash-retainer", 0);
        let publisher = std::thread::spawn(move || retain_until_dead(addr, &id, &p2));
        let target = 200 + rng.below(u64::from(RETAIN_OPS) - 1_000) as u32;
        let started = Instant::now();
        while progress.load(std::sync::atomic::Ordering::Relaxed) < target
            && !publisher.is_finished()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        broker.child.kill().unwrap();
        broker.child.wait().unwrap();
        let acked = publisher.join().unwrap();
        let sent = progress.load(std::sync::atomic::Ordering::Relaxed);
        let broker = Broker::start_in(&dir, &[]);
        let (mut sub, _) = Raw::connect(broker.addr, V4, &id_on("crash-looker", 1), true);
        sub.subscribe("crash/r/#", QoS::AtMostOnce);
        let mut state: HashMap<String, u32> = HashMap::new();
        while let Some(p) = sub.recv_within(Duration::from_millis(1500)) {
            if let Packet::Publish(p) = p {
                let v = std::str::from_utf8(&p.payload).unwrap().parse().unwrap();
                assert!(
                    state.insert(p.topic.to_string(), v).is_none(),
                    "a topic twice"
                );
            }
        }
        for t in 0..RETAIN_TOPICS {
            let topic = format!("crash/r/{t}");
            let last_acked = acked.iter().rev().find(|&&op| op % RETAIN_TOPICS == t);
            match (state.get(&topic), last_acked) {
                (Some(&v), last) => {
                    assert_eq!(v % RETAIN_TOPICS, t, "round {round}: {topic} holds {v}");
                    assert!(v < sent && retain_op(v).1.is_some(), "round {round}: {v}");
                    assert!(
                        last.is_none_or(|&a| v >= a),
                        "round {round}: {topic} went back to {v}, {last:?} was acknowledged"
                    );
                }
                (None, Some(&a)) => {
                    let cleared = (a..sent)
                        .filter(|op| op % RETAIN_TOPICS == t)
                        .any(|op| retain_op(op).1.is_none());
                    assert!(
                        cleared,
                        "round {round}: {topic} lost; op {a} was acknowledged"
                    );
                }
                (None, None) => {}
            }
        }
        eprintln!(
            "round {round}: killed at ~{target} ops sent, {} acknowledged, {} topics retained after restart",
            acked.len(),
            state.len()
        );
        drop(broker);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
