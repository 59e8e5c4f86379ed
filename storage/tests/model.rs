//! Model-based test of the segment log (sled-style): random sequences of store operations,
//! commits, clean restarts and crashes (uncommitted records lost) checked against an
//! in-memory model; and corruption tests on real segment files (truncated and bit-flipped).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use storage::embedded::log::{Log, LogConfig};
use storage::record::{Record, StoredMessage, StoredSubscription};
use storage::state::State;
use storage::Error;

static DIRS: AtomicU64 = AtomicU64::new(0);

/// A fresh directory under target/ (a real disk, where O_DIRECT works).
fn dir(name: &str) -> PathBuf {
    let n = DIRS.fetch_add(1, Ordering::Relaxed);
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn small(dir: &std::path::Path) -> LogConfig {
    LogConfig {
        segment_bytes_max: 8 * 1024,
        compact_bytes_min: 16 * 1024,
        ..LogConfig::new(dir.to_path_buf())
    }
}

fn msg(topic: &str, n: u64) -> StoredMessage {
    StoredMessage {
        topic: topic.into(),
        payload: n.to_le_bytes().repeat((n % 5) as usize + 1),
        qos: 1 + (n % 2) as u8,
        retain: n.is_multiple_of(3),
        properties: vec![],
        expires_at_ms: 0,
    }
}

/// Message `seq` (topic `t`) queued for `client`.
fn enqueue(client: &str, seq: u64) -> Record {
    Record::Enqueue {
        client: client.into(),
        seq,
        message: msg("t", seq),
    }
}

#[derive(Clone, Debug)]
enum Op {
    Record(u8, u8, u64),
    Commit,
    Restart,
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => (0u8..16, 0u8..4, any::<u64>()).prop_map(|(k, c, n)| Op::Record(k, c, n)),
        3 => Just(Op::Commit),
        1 => Just(Op::Restart),
        1 => Just(Op::Crash),
    ]
}

/// Sequence numbers given so far: per client (legacy `Enqueue`), and message ids (one
/// counter for the shard, as the broker gives them) with the last id given to each client.
#[derive(Default)]
struct Seqs {
    legacy: [u64; 4],
    id: u64,
    last: [u64; 4],
}

fn record(kind: u8, c: u8, n: u64, seqs: &mut Seqs) -> Record {
    let client = format!("client-{c}");
    let seq = if n.is_multiple_of(2) {
        n % (seqs.legacy[c as usize] + 1)
    } else {
        seqs.last[c as usize].saturating_sub(n % 3)
    };
    match kind {
        // A message written once (its body), then references from other clients.
        12 => {
            seqs.id += 1;
            seqs.last[c as usize] = seqs.id;
            let m = msg("t/m", n);
            Record::Message {
                client,
                id: seqs.id,
                qos: m.qos,
                retain: m.retain,
                body: storage::compact::body_of(&m),
            }
        }
        13 => {
            seqs.last[c as usize] = seqs.id;
            Record::Ref {
                client,
                id: seqs.id,
                qos: 1,
                retain: n.is_multiple_of(2),
            }
        }
        14 | 15 => Record::Acked {
            client,
            seqs: vec![seq, seq.saturating_sub(1), n % (seqs.id + 1)],
        },
        0 => Record::Session {
            client,
            expiry: (n % 1000) as u32,
        },
        1 => Record::SessionEnd { client },
        2 => Record::Subscribe {
            client,
            sub: StoredSubscription {
                filter: format!("f/{}", n % 7),
                options: (n % 3) as u8,
                sub_id: (n % 4) as u32,
            },
        },
        3 => Record::Unsubscribe {
            client,
            filter: format!("f/{}", n % 7),
        },
        4 | 5 => {
            seqs.legacy[c as usize] += 1;
            Record::Enqueue {
                client,
                seq: seqs.legacy[c as usize],
                message: msg("t/q", n),
            }
        }
        6 => Record::Released { client, seq },
        7 => Record::Done { client, seq },
        8 => Record::Qos2Received {
            client,
            packet_id: (n % 50) as u16 + 1,
        },
        9 => Record::Retain {
            message: msg(&format!("r/{}", n % 5), n),
            version: n,
        },
        10 => Record::RetainClear {
            topic: format!("r/{}", n % 5),
            version: n,
        },
        _ => Record::Sent {
            client,
            seq,
            packet_id: (n % 100) as u16 + 1,
        },
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_the_model_across_restarts_and_crashes(ops in prop::collection::vec(op(), 1..300)) {
        let d = dir("model");
        let (mut log, _) = Log::open(small(&d)).unwrap();
        let mut committed = State::default();
        let mut pending: Vec<Record> = Vec::new();
        let mut seqs = Seqs::default();
        for op in ops {
            match op {
                Op::Record(k, c, n) => {
                    let r = record(k, c, n, &mut seqs);
                    match &r {
                        // The broker's path: encoded straight from borrowed parts.
                        Record::Message { client, id, qos, retain, body } if n % 3 != 0 => {
                            let m = storage::compact::parse_body(body).unwrap();
                            log.append_message(client, *id, *qos, *retain, &m).unwrap();
                        }
                        Record::Acked { client, seqs } if n % 3 != 0 => {
                            log.append_acked(client, seqs).unwrap();
                        }
                        _ => log.append(&r).unwrap(),
                    }
                    pending.push(r);
                }
                Op::Commit => {
                    // Background compaction a bit at a time, as the broker's tick does.
                    log.compact_step(4096).unwrap();
                    log.commit().unwrap();
                    for r in pending.drain(..) { committed.apply(&r); }
                    prop_assert_eq!(log.state(), &committed);
                }
                Op::Restart => {
                    log.commit().unwrap();
                    for r in pending.drain(..) { committed.apply(&r); }
                    drop(log);
                    let (l, _) = Log::open(small(&d)).unwrap();
                    log = l;
                    prop_assert_eq!(log.state(), &committed);
                }
                Op::Crash => {
                    // Uncommitted records never reached the disk.
                    pending.clear();
                    drop(log);
                    let (l, _) = Log::open(small(&d)).unwrap();
                    log = l;
                    prop_assert_eq!(log.state(), &committed);
                }
            }
        }
        log.commit().unwrap();
        for r in pending.drain(..) { committed.apply(&r); }
        drop(log);
        let (log, _) = Log::open(small(&d)).unwrap();
        prop_assert_eq!(log.state(), &committed);
        // Disk use follows the live state: compaction keeps the segments few.
        prop_assert!(log.segment_count() <= 8, "{} segments", log.segment_count());
        std::fs::remove_dir_all(&d).unwrap();
    }
}

fn filled(d: &std::path::Path, n: u64) -> Vec<Record> {
    let (mut log, _) = Log::open(LogConfig::new(d)).unwrap();
    let mut records = vec![Record::Session {
        client: "c".into(),
        expiry: 60,
    }];
    log.append(&records[0]).unwrap();
    for i in 1..=n {
        let r = enqueue("c", i);
        log.append(&r).unwrap();
        records.push(r);
        if i.is_multiple_of(7) {
            log.commit().unwrap();
        }
    }
    log.commit().unwrap();
    records
}

fn replay(records: &[Record]) -> State {
    let mut s = State::default();
    for r in records {
        s.apply(r);
    }
    s
}

#[test]
fn a_truncated_tail_is_cut_to_the_last_whole_record() {
    let d = dir("torn");
    let records = filled(&d, 60);
    let seg = d.join("00000001.log");
    let full = std::fs::read(&seg).unwrap();
    let scan = storage::embedded::frame::scan(&full, 1);
    let offsets: Vec<u64> = scan.records.iter().map(|(o, _)| *o).collect();
    for cut in [
        scan.valid_len - 1,
        offsets[30] + 3,
        offsets[1] + 9,
        offsets[45],
    ] {
        std::fs::write(&seg, &full[..cut as usize]).unwrap();
        let (mut log, rec) = Log::open(LogConfig::new(d.clone())).unwrap();
        let whole = offsets.iter().filter(|&&o| o < cut).count();
        let whole = if scan.records.iter().any(|(o, _)| *o == cut) {
            whole
        } else {
            whole - 1
        };
        assert_eq!(log.state(), &replay(&records[..whole]), "cut at {cut}");
        assert_eq!(rec.truncated.is_some(), cut != offsets[45]);
        // The log goes on from there.
        let r = Record::Done {
            client: "c".into(),
            seq: 1,
        };
        log.append(&r).unwrap();
        log.commit().unwrap();
        drop(log);
        let (log, rec) = Log::open(LogConfig::new(d.clone())).unwrap();
        assert!(rec.truncated.is_none());
        let mut want = records[..whole].to_vec();
        want.push(r);
        assert_eq!(log.state(), &replay(&want));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_flipped_bit_in_the_middle_stops_start_up_naming_file_and_offset() {
    let d = dir("flip");
    filled(&d, 40);
    let seg = d.join("00000001.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    let scan = storage::embedded::frame::scan(&bytes, 1);
    let victim = scan.records[20].0;
    bytes[victim as usize + 12] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    match Log::open(LogConfig::new(d.clone())) {
        Err(Error::Corrupt { path, offset }) => {
            assert_eq!(path, seg);
            assert_eq!(offset, victim);
            let msg = Error::Corrupt { path, offset }.to_string();
            assert!(
                msg.contains("00000001.log") && msg.contains(&victim.to_string()),
                "{msg}"
            );
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let d = dir("lock");
    let (_log, _) = Log::open(LogConfig::new(d.clone())).unwrap();
    assert!(matches!(
        Log::open(LogConfig::new(d.clone())),
        Err(Error::Locked(_))
    ));
}

/// A kept file whose id is not older than every segment (left by hand) is removed at open,
/// never reused.
#[test]
fn a_stray_kept_file_is_removed_at_open() {
    let d = dir("stray");
    drop(Log::open(small(&d)).unwrap());
    std::fs::write(d.join("00000007.free"), b"not a segment").unwrap();
    drop(Log::open(small(&d)).unwrap());
    assert!(!d.join("00000007.free").exists());
    assert!(d.join("00000001.log").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// Damage at the end of a segment that is not the last (a flipped bit in its last record, or
/// its last block zeroed) stops start-up: a segment that rolled ends at its end marker.
#[test]
fn damage_at_the_end_of_an_earlier_segment_stops_start_up() {
    for zero_block in [false, true] {
        let d = dir(if zero_block { "end-zeroed" } else { "end-flip" });
        let config = LogConfig {
            compact_bytes_min: u64::MAX,
            ..small(&d)
        };
        {
            let (mut log, _) = Log::open(config.clone()).unwrap();
            for seq in 1..=400u64 {
                log.append(&enqueue("c", seq)).unwrap();
                log.commit().unwrap();
            }
            assert!(log.segment_count() >= 3);
        }
        let seg = d.join("00000001.log");
        let mut bytes = std::fs::read(&seg).unwrap();
        let scan = storage::embedded::frame::scan(&bytes, 1);
        assert_eq!(scan.end, storage::embedded::frame::End::Clean);
        let last = scan.records.last().unwrap().0 as usize;
        if zero_block {
            let block = last / 4096 * 4096;
            bytes[block..block + 4096].fill(0);
        } else {
            bytes[last + 10] ^= 0x02;
        }
        std::fs::write(&seg, &bytes).unwrap();
        match Log::open(config) {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, seg),
            other => panic!("expected corruption, got {other:?}"),
        }
        std::fs::remove_dir_all(&d).unwrap();
    }
}

/// A log on 8 KiB segments with two sessions, "c" (whose queue is kept) and "g" (whose
/// messages come and go), that counts what it appends and what compaction rewrites, and
/// the most bytes it held after any compaction step.
struct Busy {
    log: Log,
    appended: u64,
    rewritten: u64,
    peak: u64,
}

impl Busy {
    const SEGMENT: u64 = 8 * 1024;

    fn open(d: &std::path::Path) -> Self {
        let (log, _) = Log::open(small(d)).unwrap();
        let mut busy = Self {
            log,
            appended: 0,
            rewritten: 0,
            peak: 0,
        };
        for client in ["c", "g"] {
            busy.append(&Record::Session {
                client: client.into(),
                expiry: 60,
            });
        }
        busy
    }

    fn append(&mut self, r: &Record) {
        let before = self.log.bytes();
        self.log.append(r).unwrap();
        self.appended += self.log.bytes() - before;
    }

    fn enqueue(&mut self, client: &str, seq: u64) {
        self.append(&enqueue(client, seq));
    }

    fn done(&mut self, client: &str, seq: u64) {
        self.append(&Record::Done {
            client: client.into(),
            seq,
        });
    }

    /// One compaction step (a budget of one segment) and a commit, as the broker's tick.
    fn step(&mut self) -> u64 {
        let n = self.log.compact_step(Self::SEGMENT).unwrap();
        self.log.commit().unwrap();
        self.rewritten += n;
        self.peak = self.peak.max(self.log.bytes());
        n
    }

    /// "g"'s messages `seqs`, each acknowledged, a step every 20.
    fn traffic(&mut self, seqs: std::ops::Range<u64>) {
        for seq in seqs {
            self.enqueue("g", seq);
            self.done("g", seq);
            if seq % 20 == 0 {
                self.step();
            }
        }
    }

    /// Idle ticks: the bytes rewritten; then asserts that a step changes nothing.
    fn idle(&mut self) -> u64 {
        let before = self.rewritten;
        for _ in 0..500 {
            self.step();
        }
        let (bytes, segments) = (self.log.bytes(), self.log.segment_count());
        assert_eq!(self.step(), 0, "idle compaction stops");
        assert_eq!(
            (self.log.bytes(), self.log.segment_count()),
            (bytes, segments)
        );
        self.rewritten - before
    }
}

/// The bytes `client`'s session takes in a log of its own (what compaction rewrites).
fn live_bytes(state: &State, client: &str) -> u64 {
    let d = dir("live-bytes");
    let (mut log, _) = Log::open(LogConfig::new(d.clone())).unwrap();
    let mut records = Vec::new();
    state.session_records(client, &mut records);
    for r in &records {
        log.append(r).unwrap();
    }
    let bytes = log.bytes();
    drop(log);
    std::fs::remove_dir_all(&d).unwrap();
    bytes
}

/// An offline session's queue larger than `compact_bytes_min`, built up between other
/// clients' messages that come and go: compaction rewrites it only as far as the other
/// traffic pays for (it rewrote the whole queue for every segment it deleted, over and over
/// on an idle log), and disk use stays near the live state, idle or not.
#[test]
fn compaction_of_a_mostly_live_log_is_paid_for_by_new_writes() {
    let d = dir("mostly-live");
    let mut b = Busy::open(&d);
    for seq in 1..=3_000u64 {
        b.enqueue("c", seq);
        b.traffic(seq * 10..seq * 10 + 2);
    }
    let live = live_bytes(b.log.state(), "c");
    assert!(live > 4 * 16 * 1024, "{live} bytes live");
    let built = b.rewritten;
    // Idle: segments with nothing live go, the queue is moved at most once more.
    let idle = b.idle();
    eprintln!(
        "built: {built} bytes rewritten for {live} live; idle: {idle} more, {} on disk",
        b.log.bytes()
    );
    assert!(idle <= 2 * live, "{idle} bytes rewritten idle");
    let bytes = b.log.bytes();
    assert!(
        bytes <= 2 * live + 2 * Busy::SEGMENT,
        "{bytes} bytes for {live} live"
    );
    // Traffic while the queue stays: disk use stays bounded.
    b.peak = 0;
    let before = b.rewritten;
    for round in 0..40u64 {
        let from = 100_000 + round * 1_000;
        b.traffic(from..from + 1_000);
    }
    eprintln!(
        "traffic: {} bytes rewritten, peak {} bytes on disk for {live} live",
        b.rewritten - before,
        b.peak
    );
    assert!(
        b.peak <= 3 * live + 4 * Busy::SEGMENT,
        "peak {} for {live} live",
        b.peak
    );
    // The queue drains, traffic goes on: disk use falls back near what is live (nothing).
    for seq in 1..=3_000u64 {
        b.done("c", seq);
    }
    b.traffic(900_000..902_000);
    b.idle();
    assert!(b.log.state().sessions["c"].messages.is_empty());
    let bytes = b.log.bytes();
    assert!(
        bytes < 6 * Busy::SEGMENT,
        "{bytes} bytes after the queue drained"
    );
    // Compaction never rewrote more than was appended besides (plus a step's budget and
    // the queue moved whole).
    assert!(
        b.rewritten <= b.appended + Busy::SEGMENT + live,
        "{} bytes rewritten for {} appended",
        b.rewritten,
        b.appended
    );
    drop(b);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Much traffic first (its credit banked), then a queue built with nothing else going on,
/// then idle: the queue is rewritten about once, not for as long as the banked credit lasts;
/// then the queue drains, still idle: disk use falls to next to nothing.
#[test]
fn credit_banked_by_earlier_traffic_does_not_rewrite_an_idle_queue_again_and_again() {
    let d = dir("banked");
    let mut b = Busy::open(&d);
    b.traffic(1..40_001);
    for seq in 1..=3_000u64 {
        b.enqueue("c", seq);
    }
    b.log.commit().unwrap();
    let live = live_bytes(b.log.state(), "c");
    let idle = b.idle();
    eprintln!("banked: {idle} bytes rewritten idle for {live} live");
    assert!(
        idle <= 3 * live,
        "{idle} bytes rewritten idle for {live} live"
    );
    // The queue drains (a few batched acks) and nothing else is written: its old copy goes.
    for from in (1..=3_000u64).step_by(1_000) {
        b.append(&Record::Acked {
            client: "c".into(),
            seqs: (from..from + 1_000).collect(),
        });
    }
    b.log.commit().unwrap();
    let full = b.log.bytes();
    b.idle();
    let bytes = b.log.bytes();
    eprintln!("drained idle: {full} -> {bytes} bytes");
    assert!(
        bytes < 6 * Busy::SEGMENT,
        "{bytes} bytes after the queue drained"
    );
    drop(b);
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn background_compaction_keeps_disk_use_near_the_live_state() {
    let d = dir("compact");
    let config = small(&d);
    let (mut log, _) = Log::open(config.clone()).unwrap();
    let r = Record::Session {
        client: "c".into(),
        expiry: 60,
    };
    log.append(&r).unwrap();
    let retained = Record::Retain {
        message: msg("r/keep", 7),
        version: 1,
    };
    log.append(&retained).unwrap();
    let mut live = 0;
    // 20,000 messages come and go; 10 stay unacknowledged throughout.
    for seq in 1..=20_000u64 {
        log.append(&enqueue("c", seq)).unwrap();
        if seq % 2_000 != 0 {
            log.append(&Record::Done {
                client: "c".into(),
                seq,
            })
            .unwrap();
        } else {
            live += 1;
        }
        if seq % 50 == 0 {
            log.compact_step(8 * 1024).unwrap();
            log.commit().unwrap();
        }
    }
    log.commit().unwrap();
    let segments = log.segment_count();
    let bytes = log.bytes();
    assert!(segments <= 6, "{segments} segments");
    assert!(bytes < 64 * 1024, "{bytes} bytes for {live} live messages");
    // The live messages' bodies moved with their session as it was rewritten: the bodies
    // held in memory do not keep a chunk per long-held message.
    let chunks = log.state().bodies.chunks_held();
    assert!(
        chunks <= 2,
        "{chunks} chunks of bodies held for {live} live messages"
    );
    let state = log.state().clone();
    assert_eq!(state.sessions["c"].messages.len(), live);
    drop(log);
    // Deleted segments' files were reused: at most `recycle_max` wait, and the segments in
    // use are earlier segments' files (their previous life's frames after this one's).
    let names: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let free = names.iter().filter(|n| n.ends_with(".free")).count();
    assert!(free <= config.recycle_max, "{names:?}");
    let reused = names
        .iter()
        .filter_map(|n| n.strip_suffix(".log"))
        .any(|id| {
            let bytes = std::fs::read(d.join(format!("{id}.log"))).unwrap();
            storage::embedded::frame::holds_a_previous_life(&bytes, id.parse().unwrap())
        });
    assert!(reused, "{names:?}");
    let (log, rec) = Log::open(config.clone()).unwrap();
    assert_eq!(
        log.state(),
        &state,
        "the compacted log replays to the same state"
    );
    assert_eq!(log.state().retained.len(), 1);
    // Every segment, reused or not, ends at its marker: nothing is cut.
    assert!(rec.truncated.is_none(), "{rec:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn compaction_keeps_a_message_shared_by_its_recipients_once_in_memory() {
    let d = dir("shared");
    let (mut log, _) = Log::open(small(&d)).unwrap();
    for client in ["a", "b"] {
        log.append(&Record::Session {
            client: client.into(),
            expiry: 60,
        })
        .unwrap();
    }
    // Each message goes to "a" (its body) and "b" (a reference); most are acknowledged.
    for id in 1..=4_000u64 {
        let m = msg("t", id);
        log.append(&Record::Message {
            client: "a".into(),
            id,
            qos: 1,
            retain: false,
            body: storage::compact::body_of(&m),
        })
        .unwrap();
        log.append(&Record::Ref {
            client: "b".into(),
            id,
            qos: 1,
            retain: false,
        })
        .unwrap();
        if id % 400 != 0 {
            for client in ["a", "b"] {
                log.append(&Record::Acked {
                    client: client.into(),
                    seqs: vec![id],
                })
                .unwrap();
            }
        }
        if id % 50 == 0 {
            log.compact_step(64 * 1024).unwrap();
            log.commit().unwrap();
        }
    }
    let state = log.state();
    assert!(
        log.segment_count() <= 6,
        "compaction ran and deleted segments"
    );
    let a: Vec<_> = state.sessions["a"].messages.iter().collect();
    let b: Vec<_> = state.sessions["b"].messages.iter().collect();
    assert_eq!(a.len(), 10);
    for ((sa, ma), (sb, mb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert_eq!(
            ma.body, mb.body,
            "message {sa}: one body for both recipients"
        );
        assert_eq!(
            state.message(ma).unwrap().payload,
            msg("t", *sa).payload,
            "message {sa}"
        );
    }
    std::fs::remove_dir_all(&d).unwrap();
}
