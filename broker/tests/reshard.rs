//! Re-sharding with the real binary: a data directory written with 2 shards starts with 1,
//! then with 3, and a crash (the process aborted, as SIGKILL would) at each step of the
//! re-shard leaves a directory the next start completes or rolls back, with every persistent
//! session, its queued messages, its inbound QoS 2 state and the retained messages intact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{scratch_dir, Broker, Raw};
use net::codec::{Packet, PacketId, ProtocolVersion, PubRespKind, Publish, QoS};

const V4: ProtocolVersion = ProtocolVersion::V311;
const SESSIONS: usize = 12;
const PER_SESSION: u8 = 5;

fn session_ids() -> Vec<String> {
    (0..SESSIONS).map(|i| format!("rs-{i}")).collect()
}

fn qos2_publish(dup: bool) -> Packet {
    Packet::Publish(Publish {
        dup,
        qos: QoS::ExactlyOnce,
        retain: false,
        topic: "rs/rs-0".into(),
        packet_id: PacketId::new(77),
        properties: Default::default(),
        payload: bytes::Bytes::from_static(b"q2"),
    })
}

/// Fills a 2-shard directory: persistent sessions with queued QoS 1 messages, retained
/// messages, and a persistent publisher with a QoS 2 message received but not released.
fn fill(dir: &std::path::Path) {
    let mut broker = Broker::start_in(dir, &["--shards", "2", "--durability", "sync"]);
    for id in session_ids() {
        let (mut c, _) = Raw::connect(broker.addr, V4, &id, false);
        c.subscribe(&format!("rs/{id}"), QoS::AtLeastOnce);
        c.send(&Packet::Disconnect(Default::default()));
    }
    std::thread::sleep(Duration::from_millis(200));
    let (mut p, _) = Raw::connect(broker.addr, V4, "rs-pub", true);
    let mut pid = 0u16;
    for id in session_ids() {
        for k in 1..=PER_SESSION {
            pid += 1;
            p.publish_acked(&format!("rs/{id}"), &[k], pid);
        }
    }
    for k in 0..3u8 {
        pid += 1;
        p.send(&Packet::Publish(Publish {
            dup: false,
            qos: QoS::AtLeastOnce,
            retain: true,
            topic: format!("rs-ret/{k}").into(),
            packet_id: PacketId::new(pid),
            properties: Default::default(),
            payload: bytes::Bytes::from(vec![b'r', k]),
        }));
        assert!(matches!(p.recv(), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubAck));
    }
    let (mut q2, _) = Raw::connect(broker.addr, V4, "rs-q2", false);
    q2.send(&qos2_publish(false));
    assert!(matches!(q2.recv(), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRec));
    // Killed: no orderly shutdown.
    broker.child.kill().unwrap();
    broker.child.wait().unwrap();
}

/// Starts the binary on `dir` with `shards`, told to abort at `point` of the re-shard; it
/// must abort there.
fn crash_at(dir: &std::path::Path, shards: &str, point: &str) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0", "--shards", shards])
        .args(["--durability", "sync", "--log", "warn", "--data-dir"])
        .arg(dir)
        .env("RINGMQ_RESHARD_CRASH_AT", point)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("--shards {shards}: did not stop at {point}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success(), "--shards {shards} {point}: {stderr}");
    assert!(
        stderr.contains(&format!("RINGMQ_RESHARD_CRASH_AT={point}")),
        "--shards {shards} {point}: {stderr}"
    );
}

/// Every session's messages exactly once and in order, the QoS 2 message once, the retained
/// messages all there.
fn check(broker: &Broker) {
    // The persistent publisher's QoS 2 id survived: a resend is not delivered again.
    let (mut q2, ack) = Raw::connect(broker.addr, V4, "rs-q2", false);
    assert!(ack.session_present, "rs-q2's session survived");
    q2.send(&qos2_publish(true));
    assert!(matches!(q2.recv(), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubRec));
    q2.ack(PubRespKind::PubRel, PacketId::new(77).unwrap());
    assert!(matches!(q2.recv(), Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubComp));
    for id in session_ids() {
        let (mut c, ack) = Raw::connect(broker.addr, V4, &id, false);
        assert!(ack.session_present, "{id}'s session survived");
        let mut got = Vec::new();
        while let Some(p) = c.recv_within(Duration::from_millis(700)) {
            if let Packet::Publish(p) = p {
                assert_eq!(&p.topic[..], format!("rs/{id}"));
                got.push(p.payload.to_vec());
                if let Some(pid) = p.packet_id {
                    c.ack(PubRespKind::PubAck, pid);
                }
            }
        }
        let mut want: Vec<Vec<u8>> = (1..=PER_SESSION).map(|k| vec![k]).collect();
        if id == "rs-0" {
            want.push(b"q2".to_vec());
        }
        assert_eq!(got, want, "{id}");
    }
    let (mut r, _) = Raw::connect(broker.addr, V4, "rs-ret-reader", true);
    r.subscribe("rs-ret/#", QoS::AtMostOnce);
    let mut retained = Vec::new();
    while let Some(Packet::Publish(p)) = r.recv_within(Duration::from_millis(500)) {
        assert!(p.retain);
        retained.push(p.payload.to_vec());
    }
    retained.sort();
    assert_eq!(
        retained,
        vec![b"r\0".to_vec(), b"r\x01".to_vec(), b"r\x02".to_vec()]
    );
}

#[test]
fn a_data_directory_is_resharded_at_start_and_a_crash_at_any_step_loses_nothing() {
    let dir = scratch_dir("reshard");
    fill(&dir);
    // 2 -> 1, killed after staging: the next start rolls back and does it again.
    crash_at(&dir, "1", "staged");
    assert!(dir.join("reshard.new").exists() && !dir.join("reshard.commit").exists());
    // 2 -> 1 again, killed right after the commit point.
    crash_at(&dir, "1", "committed");
    assert!(dir.join("reshard.commit").exists());
    // A start with 3 first completes 2 -> 1, killed after moving the first shard in place ...
    crash_at(&dir, "3", "moved");
    // ... then completes it again, re-shards 1 -> 3 and serves everything.
    let broker = Broker::start_in(&dir, &["--shards", "3", "--durability", "sync"]);
    assert_eq!(
        std::fs::read_to_string(dir.join("shards")).unwrap().trim(),
        "3"
    );
    assert!(dir.join("shard-2").exists() && !dir.join("shard-3").exists());
    assert!(!dir.join("reshard.new").exists() && !dir.join("reshard.commit").exists());
    check(&broker);
    drop(broker);
    let _ = std::fs::remove_dir_all(&dir);
}
