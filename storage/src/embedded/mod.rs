//! The embedded store: a per-shard segment log on local disk, written through the shard's
//! io_uring (no services needed).
//!
//! - [`frame`]: length + crc32c framing and the recovery scan (torn tail vs corruption).
//! - [`segment`]: the sans-IO appender: group commit into block-aligned writes.
//! - [`log`]: the segment log: lock, recovery, commit, roll, compaction.
//! - [`EmbeddedStore`]: the log behind the [`crate::store::Store`] boundary: one group commit
//!   in flight, the commit interval (batch mode), the failing state and its retry.

pub mod frame;
pub mod log;
pub mod segment;

use std::time::{Duration, Instant};

use crate::compact::MessageRef;
use crate::record::Record;
use crate::state::State;
use crate::store::{IoDone, IoRequest, Landed, Store};
use crate::Error;
use log::{Log, LogConfig, Recovery};

/// How long a failing log waits before writing again.
pub const RETRY: Duration = Duration::from_millis(250);

const WRITE_OP: u32 = 0;
const SYNC_OP: u32 = 1;

/// A commit in flight: its end, and what came back so far.
#[derive(Debug)]
struct Out {
    end: u64,
    mark: u64,
    buf: Option<Vec<u8>>,
    write: Option<i32>,
    sync: Option<i32>,
}

/// The segment log as a [`Store`].
#[derive(Debug)]
pub struct EmbeddedStore {
    log: Log,
    /// 0: commit as soon as the previous commit landed (sync); else at most this often (batch).
    commit_interval: Duration,
    appended: u64,
    /// Records known durable.
    durable: u64,
    out: Option<Out>,
    last_commit: Instant,
    failing: bool,
    retry_at: Option<Instant>,
}

impl EmbeddedStore {
    /// Opens (and replays) the log in `config.dir`; the state its records describe.
    pub fn open(
        config: LogConfig,
        commit_interval: Duration,
        now: Instant,
    ) -> Result<(Self, Recovery, State), Error> {
        let (log, recovery) = Log::open(config)?;
        let state = log.state().clone();
        Ok((Self::new(log, commit_interval, now), recovery, state))
    }

    /// Wraps an open log.
    pub fn new(log: Log, commit_interval: Duration, now: Instant) -> Self {
        Self {
            log,
            commit_interval,
            appended: 0,
            durable: 0,
            out: None,
            last_commit: now,
            failing: false,
            retry_at: None,
        }
    }

    fn try_land(&mut self) -> Option<Landed> {
        let ready = self
            .out
            .as_ref()
            .is_some_and(|o| o.buf.is_some() && o.write.is_some() && o.sync.is_some());
        if !ready {
            return None;
        }
        let out = self.out.take()?;
        let buf = out.buf?;
        let ok = out.write.is_some_and(|w| w > 0) && out.sync == Some(0);
        let maintenance = self.log.land(buf, out.end, ok).err();
        if !ok {
            self.failing = true;
            self.retry_at = Some(self.last_commit + RETRY);
            let w = out.write.unwrap_or(0);
            let errno = if w < 0 { -w } else { -out.sync.unwrap_or(0) };
            return Some(Landed {
                durable: self.durable,
                failed: Some(std::io::Error::from_raw_os_error(errno)),
                maintenance,
            });
        }
        self.retry_at = None;
        self.failing = false;
        // A compaction at landing may have made everything durable.
        let durable = if self.log.pending() == 0 && !self.log.flying() {
            self.appended
        } else {
            out.mark
        };
        self.durable = durable;
        Some(Landed {
            durable,
            failed: None,
            maintenance,
        })
    }
}

impl Store for EmbeddedStore {
    fn persistent(&self) -> bool {
        true
    }

    fn append(&mut self, record: &Record) -> Result<(), Error> {
        self.log.append(record)?;
        self.appended += 1;
        Ok(())
    }

    fn append_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        self.log.append_message(client, id, qos, retain, message)?;
        self.appended += 1;
        Ok(())
    }

    fn append_acked(&mut self, client: &str, seqs: &[u64]) -> Result<(), Error> {
        self.log.append_acked(client, seqs)?;
        self.appended += 1;
        Ok(())
    }

    fn appended(&self) -> u64 {
        self.appended
    }

    fn failing(&self) -> bool {
        self.failing
    }

    fn next_io(&mut self, now: Instant) -> Option<IoRequest> {
        if self.out.is_some() || self.appended == self.durable && self.log.pending() == 0 {
            return None;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if !self.commit_interval.is_zero()
            && now.duration_since(self.last_commit) < self.commit_interval
        {
            return None;
        }
        let flight = self.log.take_flight()?;
        self.last_commit = now;
        self.out = Some(Out {
            end: flight.end,
            mark: self.appended,
            buf: None,
            write: None,
            sync: None,
        });
        Some(IoRequest::WriteAndSync {
            fd: self.log.fd(),
            buf: flight.buf,
            range: flight.range,
            offset: flight.offset,
            write_op: WRITE_OP,
            sync_op: SYNC_OP,
        })
    }

    fn io_done(&mut self, done: IoDone) -> Option<Landed> {
        let out = self.out.as_mut()?;
        if done.op == WRITE_OP {
            // A write that could not even be submitted comes back with its buffer too.
            out.buf = done.buf;
            out.write = Some(done.result);
        } else {
            out.sync = Some(done.result);
        }
        self.try_land()
    }

    fn maintain(&mut self, budget: u64) -> Result<(), Error> {
        self.log.compact_step(budget).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Record;

    fn record() -> Record {
        Record::Session {
            client: "c".into(),
            expiry: 10,
        }
    }

    /// Performs a request through std (the test stands in for the ring).
    fn perform(dir: &std::path::Path, request: IoRequest) -> (Vec<u8>, i32) {
        use std::os::unix::fs::FileExt;
        let IoRequest::WriteAndSync {
            buf, range, offset, ..
        } = request
        else {
            panic!("the embedded store asks only for durable writes");
        };
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.join("00000001.log"))
            .unwrap();
        let bytes = &buf[range];
        f.write_all_at(bytes, offset).unwrap();
        f.sync_data().unwrap();
        let n = bytes.len() as i32;
        (buf, n)
    }

    #[test]
    fn a_failed_batch_is_reported_refused_and_retried_after_a_pause() {
        let dir = std::env::temp_dir().join(format!("ringmq-embedded-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let now = Instant::now();
        let (mut store, _, _) =
            EmbeddedStore::open(LogConfig::new(dir.clone()), Duration::ZERO, now).unwrap();
        store.append(&record()).unwrap();
        assert_eq!(store.appended(), 1);
        let Some(IoRequest::WriteAndSync {
            buf,
            write_op,
            sync_op,
            ..
        }) = store.next_io(now)
        else {
            panic!("a batch is due");
        };
        assert!(store.next_io(now).is_none(), "one batch in flight");
        // The write fails (ENOSPC): the batch is refused and the store is failing.
        let done = |op, result, buf| IoDone { op, result, buf };
        assert!(store
            .io_done(done(write_op, -libc::ENOSPC, Some(buf)))
            .is_none());
        let landed = store
            .io_done(done(sync_op, -libc::ECANCELED, None))
            .unwrap();
        assert_eq!(landed.durable, 0);
        assert!(landed.failed.is_some());
        assert!(store.failing());
        // Retried only after a pause; then the same records land.
        assert!(store.next_io(now).is_none());
        let request = store.next_io(now + RETRY).unwrap();
        let (buf, written) = perform(&dir, request);
        assert!(store.io_done(done(WRITE_OP, written, Some(buf))).is_none());
        let landed = store.io_done(done(SYNC_OP, 0, None)).unwrap();
        assert!(landed.failed.is_none());
        assert_eq!(landed.durable, 1);
        assert!(!store.failing());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
