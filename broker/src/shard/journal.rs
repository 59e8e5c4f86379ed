//! The shard's durable log: session journals and retained changes appended to the shard's
//! segment log, group commits through the shard's own io_uring (a linked write + fdatasync,
//! one in flight), and the acknowledgements held until the records they depend on are on
//! disk (sync mode), here and on the peers a message was forwarded to.

use std::time::{Duration, Instant};

use net::codec::{Packet, ReasonCode};
use rustc_hash::FxHashMap;
use storage::log::Log;
use storage::record::Record;
use storage::segment::Flight;

use crate::config::Durability;
use crate::ids::{ConnId, ShardId};

/// A PUBACK / PUBREC waiting for durability (or for an earlier one of its connection: acks
/// leave in the order their PUBLISHes came [MQTT-4.6.0-2]).
#[derive(Debug)]
struct Held {
    token: u64,
    packet: Packet,
    /// Records appended up to here must be durable.
    mark: u64,
    /// Peers that have not confirmed yet.
    peers: usize,
}

/// A commit in flight: its end, and what came back so far.
#[derive(Debug)]
struct Out {
    end: u64,
    mark: u64,
    buf: Option<Vec<u8>>,
    write: Option<i32>,
    sync: Option<i32>,
}

/// What a landed commit released.
#[derive(Debug, Default)]
pub(crate) struct Released {
    /// Acknowledgements to send now.
    pub acks: Vec<(ConnId, Packet)>,
    /// Peers to tell about their forwarded message: (origin, token, durable here).
    pub peer_acks: Vec<(ShardId, u64, bool)>,
}

/// How long a failing log waits before writing again.
const RETRY: Duration = Duration::from_millis(250);

/// Turns a held acknowledgement into a refusal: the records it waited for could not be written.
fn refuse(packet: &mut Packet) {
    if let Packet::PubResp(r) = packet {
        r.reason = ReasonCode::QUOTA_EXCEEDED;
    }
}

/// The shard's log and the waits on it.
#[derive(Debug)]
pub(crate) struct Journal {
    log: Log,
    mode: Durability,
    fsync_interval: Duration,
    /// Records appended ever.
    appended: u64,
    /// Records durable.
    durable: u64,
    out: Option<Out>,
    last_commit: Instant,
    held: FxHashMap<ConnId, std::collections::VecDeque<Held>>,
    token_conn: FxHashMap<u64, ConnId>,
    /// Forwarded messages whose records here must be durable before the origin is told.
    peer_waits: Vec<(u64, ShardId, u64)>,
    next_token: u64,
    failing: bool,
    retry_at: Option<Instant>,
}

impl Journal {
    pub fn new(log: Log, mode: Durability, fsync_interval: Duration, now: Instant) -> Self {
        Self {
            log,
            mode,
            fsync_interval,
            appended: 0,
            durable: 0,
            out: None,
            last_commit: now,
            held: FxHashMap::default(),
            token_conn: FxHashMap::default(),
            peer_waits: Vec::new(),
            next_token: 1,
            failing: false,
            retry_at: None,
        }
    }

    /// Acknowledgements wait for the disk (sync mode).
    pub fn holds_acks(&self) -> bool {
        self.mode == Durability::Sync
    }

    /// Records appended so far (a position to wait for).
    pub fn appended(&self) -> u64 {
        self.appended
    }

    pub fn append(&mut self, record: &Record) {
        match self.log.append(record) {
            Ok(()) => self.appended += 1,
            Err(e) => tracing::error!(error = %e, "cannot journal a record"),
        }
    }

    pub fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// Holds `packet` for `conn` until records up to `mark` are durable here, `peers` peers
    /// confirmed `token`, and every earlier held ack of `conn` left. Returns what can go now.
    pub fn hold(
        &mut self,
        token: u64,
        conn: ConnId,
        packet: Packet,
        mark: u64,
        peers: usize,
    ) -> Vec<(ConnId, Packet)> {
        if peers > 0 {
            self.token_conn.insert(token, conn);
        }
        self.held.entry(conn).or_default().push_back(Held {
            token,
            packet,
            mark,
            peers,
        });
        let mut out = Vec::new();
        self.release(conn, &mut out);
        out
    }

    /// True when `conn` has acks waiting (later answers must queue behind them).
    pub fn has_held(&self, conn: ConnId) -> bool {
        self.held.contains_key(&conn)
    }

    fn release(&mut self, conn: ConnId, out: &mut Vec<(ConnId, Packet)>) {
        let durable = self.durable;
        let Some(q) = self.held.get_mut(&conn) else {
            return;
        };
        while q.front().is_some_and(|h| h.mark <= durable && h.peers == 0) {
            if let Some(h) = q.pop_front() {
                out.push((conn, h.packet));
            }
        }
        if q.is_empty() {
            self.held.remove(&conn);
        }
    }

    /// The last log write failed (full disk...): publishes that need durability are refused
    /// until a retry succeeds.
    pub fn failing(&self) -> bool {
        self.failing
    }

    /// A peer answered `token`: durable there (`ok`) or refused. What can go now.
    pub fn peer_confirmed(&mut self, token: u64, ok: bool) -> Vec<(ConnId, Packet)> {
        let mut out = Vec::new();
        let Some(&conn) = self.token_conn.get(&token) else {
            return out;
        };
        let mut done = false;
        if let Some(h) = self
            .held
            .get_mut(&conn)
            .and_then(|q| q.iter_mut().find(|h| h.token == token))
        {
            h.peers = h.peers.saturating_sub(1);
            if !ok {
                refuse(&mut h.packet);
                h.peers = 0;
            }
            done = h.peers == 0;
        }
        if done {
            self.token_conn.remove(&token);
        }
        self.release(conn, &mut out);
        out
    }

    /// A message forwarded by `origin` (token) appended records here up to `mark`: tell the
    /// origin once durable; now (returned true) if nothing was appended.
    pub fn wait_for_peer(&mut self, origin: ShardId, token: u64, before: u64) -> bool {
        if self.appended == before || self.mode != Durability::Sync {
            return true;
        }
        self.peer_waits.push((self.appended, origin, token));
        false
    }

    /// A step of background compaction within `budget` bytes (records go out with the next
    /// commits; the emptied segment is deleted once they are durable).
    pub fn compact(&mut self, budget: u64) {
        if let Err(e) = self.log.compact_step(budget) {
            tracing::error!(error = %e, "log compaction failed");
        }
    }

    /// The next commit to hand to the ring, if one is due: (fd, flight).
    pub fn due(&mut self, now: Instant) -> Option<(i32, Flight)> {
        if self.out.is_some() || self.appended == self.durable && self.log.pending() == 0 {
            return None;
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return None;
        }
        if self.mode == Durability::Batch
            && now.duration_since(self.last_commit) < self.fsync_interval
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
        Some((self.log.fd(), flight))
    }

    /// The ring refused the flight's range (cannot happen for flights the log builds).
    pub fn not_sent(&mut self, buf: Vec<u8>) {
        if let Some(out) = self.out.take() {
            let _ = self.log.land(buf, out.end, false);
        }
    }

    pub fn write_done(&mut self, buf: Option<Vec<u8>>, result: i32) -> Option<Released> {
        if let Some(out) = self.out.as_mut() {
            out.buf = buf;
            out.write = Some(result);
        }
        self.try_land()
    }

    pub fn sync_done(&mut self, result: i32) -> Option<Released> {
        if let Some(out) = self.out.as_mut() {
            out.sync = Some(result);
        }
        self.try_land()
    }

    fn try_land(&mut self) -> Option<Released> {
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
        if let Err(e) = self.log.land(buf, out.end, ok) {
            tracing::error!(error = %e, "segment roll or compaction failed");
        }
        if !ok {
            if !self.failing {
                self.failing = true;
                let w = out.write.unwrap_or(0);
                let errno = if w < 0 { -w } else { -out.sync.unwrap_or(0) };
                let error = std::io::Error::from_raw_os_error(errno);
                tracing::error!(%error, "log write failed: publishes that need durability are refused (0x97) until a retry every 250 ms succeeds");
            }
            self.retry_at = Some(self.last_commit + RETRY);
            // What waited for this batch is refused; its records stay pending and are written
            // by the retry (so a refused message may still be delivered: at least once).
            let mut released = Released::default();
            let durable = self.durable;
            let conns: Vec<ConnId> = self.held.keys().copied().collect();
            for conn in conns {
                if let Some(q) = self.held.get_mut(&conn) {
                    for h in q.iter_mut().filter(|h| h.mark > durable) {
                        refuse(&mut h.packet);
                        h.mark = 0;
                    }
                }
                self.release(conn, &mut released.acks);
            }
            self.peer_waits.retain(|&(mark, origin, token)| {
                if mark > durable {
                    released.peer_acks.push((origin, token, false));
                    false
                } else {
                    true
                }
            });
            return Some(released);
        }
        self.retry_at = None;
        if self.failing {
            self.failing = false;
            tracing::info!("log writes succeed again: durable publishes accepted");
        }
        // A compaction at landing may have made everything durable.
        self.durable = if self.log.pending() == 0 && !self.log.flying() {
            self.appended
        } else {
            out.mark
        };
        let mut released = Released::default();
        let durable = self.durable;
        let conns: Vec<ConnId> = self.held.keys().copied().collect();
        for conn in conns {
            self.release(conn, &mut released.acks);
        }
        self.peer_waits.retain(|&(mark, origin, token)| {
            if mark <= durable {
                released.peer_acks.push((origin, token, true));
                false
            } else {
                true
            }
        });
        Some(released)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use net::codec::{PacketId, PubResp, PubRespKind};
    use storage::log::LogConfig;

    fn conn() -> ConnId {
        ConnId {
            slot: 1,
            generation: 0,
        }
    }

    fn puback(id: u16) -> Packet {
        Packet::PubResp(PubResp::new(
            PubRespKind::PubAck,
            PacketId::new(id).unwrap(),
        ))
    }

    fn record() -> Record {
        Record::Session {
            client: "c".into(),
            expiry: 10,
        }
    }

    #[test]
    fn acks_wait_for_the_commit_in_order_and_a_failed_write_refuses_them() {
        let dir = std::env::temp_dir().join(format!("ringmq-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (log, _) = Log::open(LogConfig::new(dir.clone())).unwrap();
        let now = Instant::now();
        let mut j = Journal::new(log, Durability::Sync, Duration::from_millis(100), now);
        j.append(&record());
        let mark = j.appended();
        assert!(
            j.hold(1, conn(), puback(1), mark, 0).is_empty(),
            "waits for the disk"
        );
        // A later ack with nothing to wait for still queues behind it.
        assert!(j.hold(2, conn(), puback(2), 0, 0).is_empty());
        // The write fails (ENOSPC): both are refused, in order.
        let (_, flight) = j.due(now).unwrap();
        assert!(j.write_done(Some(flight.buf), -libc::ENOSPC).is_none());
        let released = j.sync_done(-libc::ECANCELED).unwrap();
        let reasons: Vec<(u16, u8)> = released
            .acks
            .iter()
            .map(|(_, p)| match p {
                Packet::PubResp(r) => (r.packet_id.get(), r.reason.0),
                _ => panic!(),
            })
            .collect();
        assert_eq!(reasons, vec![(1, 0x97), (2, 0)]);
        assert!(j.failing());
        // Retried only after a pause, then acks wait again and succeed.
        assert!(j.due(now).is_none());
        let later = now + RETRY;
        j.append(&record());
        let mark = j.appended();
        assert!(j.hold(3, conn(), puback(3), mark, 0).is_empty());
        let (_fd, flight) = j.due(later).unwrap();
        let bytes = &flight.buf[flight.range.clone()];
        let written = pwrite(&dir.join("00000001.log"), bytes, flight.offset);
        assert!(j.write_done(Some(flight.buf.clone()), written).is_none());
        let released = j.sync_done(0).unwrap();
        assert_eq!(released.acks.len(), 1);
        assert!(!j.failing());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Writes through std (the test stands in for the ring).
    fn pwrite(path: &std::path::Path, bytes: &[u8], offset: u64) -> i32 {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
        f.write_all_at(bytes, offset).unwrap();
        f.sync_data().unwrap();
        bytes.len() as i32
    }
}
