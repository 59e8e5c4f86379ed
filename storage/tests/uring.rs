//! The log driven the way a shard drives it: group commits handed to an io_uring as a
//! linked write + fdatasync (O_DIRECT), while more records are appended during the flight.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use net::uring::{Ring, RingConfig};
use storage::embedded::log::{Log, LogConfig};
use storage::record::{Record, StoredMessage};
use storage::state::State;

const WRITE: u64 = 1;
const SYNC: u64 = 2;

fn enqueue(seq: u64) -> Record {
    Record::Enqueue {
        client: "c".into(),
        seq,
        message: StoredMessage {
            topic: "t".into(),
            payload: vec![seq as u8; 100],
            qos: 1,
            retain: false,
            properties: vec![],
            expires_at_ms: 0,
        },
    }
}

#[test]
fn group_commits_through_io_uring_survive_reopen() {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("uring-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let config = LogConfig {
        segment_bytes_max: 64 * 1024,
        compact_bytes_min: u64::MAX,
        ..LogConfig::new(dir.clone())
    };
    let (mut log, _) = Log::open(config.clone()).unwrap();
    let mut ring = Ring::new(RingConfig {
        sq_entries: 64,
        cq_entries: 256,
        recv_buffer_count: 16,
        recv_buffer_bytes: 4096,
    })
    .unwrap();
    let mut model = State::default();
    let session = Record::Session {
        client: "c".into(),
        expiry: 100,
    };
    log.append(&session).unwrap();
    model.apply(&session);
    let mut seq = 0;
    let mut commits = 0;
    let mut flight = None;
    while seq < 2000 {
        // Records keep arriving, whether or not a commit is out.
        for _ in 0..37 {
            seq += 1;
            log.append(&enqueue(seq)).unwrap();
            model.apply(&enqueue(seq));
        }
        if flight.is_none() {
            if let Some(f) = log.take_flight() {
                let end = f.end;
                ring.write_and_sync(log.fd(), f.buf, f.range, f.offset, WRITE, SYNC)
                    .unwrap();
                flight = Some((end, None::<Vec<u8>>, None::<i32>));
            }
        }
        ring.submit_and_wait(1).unwrap();
        for c in ring.completions() {
            let Some((end, buf, sync)) = flight.as_mut() else {
                panic!("no flight")
            };
            match c.token {
                WRITE => {
                    assert!(c.result > 0, "write: {}", c.result);
                    *buf = c.write_buf;
                }
                SYNC => *sync = Some(c.result),
                other => panic!("token {other}"),
            }
            if let (Some(_), Some(r)) = (buf.as_ref(), *sync) {
                let end = *end;
                let b = buf.take().unwrap();
                log.land(b, end, r == 0).unwrap();
                commits += 1;
                flight = None;
            }
        }
    }
    // Drain: the last records.
    while flight.is_some() {
        ring.submit_and_wait(1).unwrap();
        for c in ring.completions() {
            let Some((end, buf, sync)) = flight.as_mut() else {
                panic!()
            };
            if c.token == WRITE {
                *buf = c.write_buf
            } else {
                *sync = Some(c.result)
            }
            if let (Some(_), Some(r)) = (buf.as_ref(), *sync) {
                let end = *end;
                log.land(buf.take().unwrap(), end, r == 0).unwrap();
                flight = None;
            }
        }
    }
    log.commit().unwrap();
    assert!(log.segment_count() > 1, "rolled over");
    drop(log);
    let (log, recovery) = Log::open(config).unwrap();
    assert!(recovery.truncated.is_none());
    assert_eq!(log.state(), &model);
    eprintln!(
        "{commits} group commits through io_uring for {seq} records, {} segments",
        log.segment_count()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
