//! The crash test, shared by the embedded store (`durability.rs`) and the Redis store
//! (`redis.rs`): two persistent subscribers (clean session false) on one shard subscribe and go
//! offline; a publisher on the other shard sends 50,000 QoS 1 and 10,000 QoS 2 messages (a
//! window of 200 in flight); the broker is killed with SIGKILL at a random moment; it restarts
//! on the same store; each subscriber reconnects and must get every message that was PUBACKed
//! or PUBCOMPed: QoS 1 none missing (a duplicate only with DUP), QoS 2 exactly once, each
//! publisher's messages in order. After the drains a second SIGKILL brings nothing back.

#![allow(dead_code)]

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use net::codec::{Decoder, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, Publish, QoS};

use super::common::{id_on, Broker, Raw};

pub const V4: ProtocolVersion = ProtocolVersion::V311;
const QOS1: u32 = 50_000;
const QOS2: u32 = 10_000;
const WINDOW: usize = 200;

/// What the publisher saw acknowledged before the broker died.
struct Acked {
    q1: BTreeSet<u32>,
    q2: BTreeSet<u32>,
}

/// Writes what `out` holds; false once the broker is gone.
fn write_out(stream: &mut std::net::TcpStream, out: &mut BytesMut) -> bool {
    if out.is_empty() {
        return true;
    }
    let ok = stream.write_all(out).is_ok();
    out.clear();
    ok
}

/// One read (or its timeout) into `rbuf`; false once the broker is gone.
fn read_some(stream: &mut std::net::TcpStream, rbuf: &mut BytesMut, chunk: &mut [u8]) -> bool {
    match stream.read(chunk) {
        Ok(0) => false,
        Ok(n) => {
            rbuf.extend_from_slice(&chunk[..n]);
            true
        }
        Err(e) => matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// Publishes ops `0..total` (op `i` as `publish(i)`, QoS 1 or 2) with a window of
/// [`WINDOW`] in flight until all are acknowledged or the broker dies; returns the ops
/// acknowledged (PUBACK, or PUBCOMP after answering PUBREC with PUBREL).
pub fn publish_window_until_dead(
    addr: std::net::SocketAddr,
    id: &str,
    progress: &std::sync::atomic::AtomicU32,
    total: u32,
    publish: impl Fn(u32) -> Publish,
) -> BTreeSet<u32> {
    let (raw, _) = Raw::connect(addr, V4, id, true);
    let mut stream = raw.stream;
    stream
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let decoder = Decoder::new(1 << 20);
    let (mut acked, mut inflight) = (BTreeSet::new(), HashMap::new());
    let (mut next, mut next_pid) = (0u32, 1u16);
    let (mut rbuf, mut out) = (BytesMut::new(), BytesMut::new());
    let mut chunk = vec![0u8; 1 << 16];
    loop {
        while inflight.len() < WINDOW && next < total {
            while inflight.contains_key(&next_pid) {
                next_pid = next_pid.checked_add(1).unwrap_or(1);
            }
            let pid = next_pid;
            next_pid = next_pid.checked_add(1).unwrap_or(1);
            inflight.insert(pid, next);
            let mut p = publish(next);
            p.packet_id = PacketId::new(pid);
            Packet::Publish(p).encode(V4, &mut out).unwrap();
            next += 1;
        }
        progress.store(next, std::sync::atomic::Ordering::Relaxed);
        if !write_out(&mut stream, &mut out) {
            return acked;
        }
        if next == total && inflight.is_empty() {
            return acked;
        }
        if !read_some(&mut stream, &mut rbuf, &mut chunk) {
            return acked;
        }
        while let Ok(Some(p)) = decoder.decode(&mut rbuf) {
            let Packet::PubResp(r) = p else { continue };
            match r.kind {
                PubRespKind::PubAck | PubRespKind::PubComp => {
                    if let Some(op) = inflight.remove(&r.packet_id.get()) {
                        acked.insert(op);
                    }
                }
                PubRespKind::PubRec => {
                    Packet::PubResp(PubResp::new(PubRespKind::PubRel, r.packet_id))
                        .encode(V4, &mut out)
                        .unwrap();
                }
                PubRespKind::PubRel => {}
            }
        }
    }
}

/// The crash test's publisher: QOS1 QoS 1 messages on `crash/q1`, then QOS2 QoS 2 messages
/// on `crash/q2`, each carrying its sequence number within its QoS.
fn publish_until_dead(
    addr: std::net::SocketAddr,
    id: &str,
    progress: &std::sync::atomic::AtomicU32,
) -> Acked {
    let ops = publish_window_until_dead(addr, id, progress, QOS1 + QOS2, |op| {
        let (qos, seq, topic) = if op < QOS1 {
            (QoS::AtLeastOnce, op, "crash/q1")
        } else {
            (QoS::ExactlyOnce, op - QOS1, "crash/q2")
        };
        Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: None,
            properties: Default::default(),
            payload: Bytes::from(seq.to_be_bytes().to_vec()),
        }
    });
    Acked {
        q1: ops.iter().copied().filter(|&op| op < QOS1).collect(),
        q2: ops
            .iter()
            .filter(|&&op| op >= QOS1)
            .map(|op| op - QOS1)
            .collect(),
    }
}

/// Reconnects the persistent subscriber and takes everything it is given, acknowledging as a
/// client does. Returns (QoS 1 deliveries as (seq, dup), QoS 2 deliveries counted once per
/// packet-id flow).
fn drain(addr: std::net::SocketAddr, id: &str) -> (Vec<(u32, bool)>, Vec<u32>) {
    drain_on(addr, id, Some("crash/q1"))
}

/// [`drain`] whatever the topics.
pub fn drain_any(addr: std::net::SocketAddr, id: &str) -> (Vec<(u32, bool)>, Vec<u32>) {
    drain_on(addr, id, None)
}

fn drain_on(
    addr: std::net::SocketAddr,
    id: &str,
    q1_topic: Option<&str>,
) -> (Vec<(u32, bool)>, Vec<u32>) {
    let (mut sub, ack) = Raw::connect(addr, V4, id, false);
    assert!(ack.session_present, "the session survived the restart");
    let mut q1 = Vec::new();
    let mut q2 = Vec::new();
    let mut awaiting_rel: HashMap<u16, u32> = HashMap::new();
    while let Some(p) = sub.recv_within(Duration::from_millis(1500)) {
        match p {
            Packet::Publish(p) => {
                let seq = u32::from_be_bytes(p.payload[..4].try_into().unwrap());
                let pid = p.packet_id.unwrap();
                match p.qos {
                    QoS::AtLeastOnce => {
                        if let Some(topic) = q1_topic {
                            assert_eq!(&p.topic[..], topic);
                        }
                        q1.push((seq, p.dup));
                        sub.ack(PubRespKind::PubAck, pid);
                    }
                    QoS::ExactlyOnce => {
                        if awaiting_rel.insert(pid.get(), seq).is_none() {
                            q2.push(seq);
                        }
                        sub.ack(PubRespKind::PubRec, pid);
                    }
                    QoS::AtMostOnce => panic!("QoS 0 from a QoS 1/2 subscription"),
                }
            }
            Packet::PubResp(r) if r.kind == PubRespKind::PubRel => {
                awaiting_rel.remove(&r.packet_id.get());
                sub.ack(PubRespKind::PubComp, r.packet_id);
            }
            _ => {}
        }
    }
    (q1, q2)
}

pub struct Rng(u64);
impl Rng {
    /// Seeded from the clock (never zero); the seed is printed so a failure can be replayed.
    pub fn from_clock() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("seed {seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

/// `rounds` crash rounds; `start(fresh)` starts the broker on a fresh store (`fresh`) or on
/// the store the last one left (after a SIGKILL).
pub fn nothing_acknowledged_is_lost(rounds: usize, mut start: impl FnMut(bool) -> Broker) {
    let mut rng = Rng::from_clock();
    let sub_ids = [id_on("crash-sub", 0), id_on("crash-sub-b", 0)];
    let pub_id = id_on("crash-pub", 1);
    let mut totals = (0usize, 0usize, 0usize);
    for round in 0..rounds {
        let mut broker = start(true);
        for sub_id in &sub_ids {
            let (mut sub, _) = Raw::connect(broker.addr, V4, sub_id, false);
            sub.subscribe("crash/q1", QoS::AtLeastOnce);
            sub.subscribe("crash/q2", QoS::ExactlyOnce);
            sub.send(&Packet::Disconnect(Default::default()));
        }
        std::thread::sleep(Duration::from_millis(50));
        let addr = broker.addr;
        let pub_id2 = pub_id.clone();
        let progress = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let p2 = progress.clone();
        let publisher = std::thread::spawn(move || publish_until_dead(addr, &pub_id2, &p2));
        // Kill once the publisher has sent a random number of messages: kill points spread
        // over the QoS 1 and the QoS 2 part whatever the machine's speed.
        // Odd rounds kill during the QoS 2 part.
        let target = if round % 2 == 1 {
            QOS1 + rng.below(u64::from(QOS2)) as u32
        } else {
            rng.below(u64::from(QOS1)) as u32
        };
        let started = Instant::now();
        while progress.load(std::sync::atomic::Ordering::Relaxed) < target
            && !publisher.is_finished()
            && started.elapsed() < Duration::from_secs(60)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        let kill_after = started.elapsed();
        broker.child.kill().unwrap();
        broker.child.wait().unwrap();
        let acked = publisher.join().unwrap();
        let broker = start(false);
        for (n, sub_id) in sub_ids.iter().enumerate() {
            let (q1, q2) = drain(broker.addr, sub_id);
            let round = format!("{round}, subscriber {n}");
            eprintln!(
                "round {round}: killed after {kill_after:?} at ~{target} sent: acked {} + {}, redelivered {} + {}",
                acked.q1.len(),
                acked.q2.len(),
                q1.len(),
                q2.len()
            );
            // QoS 1: every acknowledged message arrived; a repeat only with DUP; order kept for
            // first deliveries.
            let mut seen = BTreeSet::new();
            let mut last = None;
            for &(seq, dup) in &q1 {
                if !seen.insert(seq) {
                    assert!(dup, "round {round}: QoS 1 seq {seq} repeated without DUP");
                    continue;
                }
                assert!(
                    last < Some(seq),
                    "round {round}: QoS 1 out of order at {seq}"
                );
                last = Some(seq);
            }
            let missing: Vec<u32> = acked.q1.difference(&seen).copied().take(5).collect();
            assert!(
                missing.is_empty(),
                "round {round}: acknowledged QoS 1 lost: {missing:?}..."
            );
            // QoS 2: exactly once, in order, none acknowledged missing.
            let mut seen2 = BTreeSet::new();
            for w in q2.windows(2) {
                assert!(
                    w[0] < w[1],
                    "round {round}: QoS 2 out of order or repeated: {w:?}"
                );
            }
            seen2.extend(q2.iter().copied());
            let missing: Vec<u32> = acked.q2.difference(&seen2).copied().take(5).collect();
            assert!(
                missing.is_empty(),
                "round {round}: completed QoS 2 lost: {missing:?}..."
            );
            totals.1 += q1.len() + q2.len();
        }
        totals.0 += acked.q1.len() + acked.q2.len();
        totals.2 += 1;
        // The drains' acknowledgements (batched per loop pass) are on disk after the idle
        // second the drain ended with: another SIGKILL brings nothing back.
        let mut broker = broker;
        broker.child.kill().unwrap();
        broker.child.wait().unwrap();
        let broker = start(false);
        for sub_id in &sub_ids {
            let (q1, q2) = drain(broker.addr, sub_id);
            assert!(
                q1.is_empty() && q2.is_empty(),
                "round {round}: acknowledged deliveries came back: {} + {}",
                q1.len(),
                q2.len()
            );
        }
        drop(broker);
    }
    eprintln!(
        "{} rounds: {} acknowledged, {} redelivered after restart, none lost",
        totals.2, totals.0, totals.1
    );
}
