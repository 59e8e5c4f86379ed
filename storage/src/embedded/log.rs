//! The per-shard segment log on local disk: a directory of numbered segments
//! (`00000001.log`, ...), a lock file, recovery at open, group commit (one write + one
//! fdatasync per batch, O_DIRECT where the filesystem allows it), segment rolling and
//! incremental compaction: [`Log::compact_step`] rewrites, within a byte budget, the live
//! sessions and retained messages that still have records in the oldest segment into the
//! current one, and deletes the oldest segment once nothing live is left in it and the
//! rewritten records are durable. Disk use follows the live state, not the history.
//! Compaction is paid for by new writes: since the log was opened it rewrites no more than
//! was appended besides its own records, plus the log's size at open, a step's budget and
//! the last session moved whole; credit never exceeds the log's size. So a live state larger
//! than [`LogConfig::compact_bytes_min`] (offline sessions' queues) is rewritten at most
//! about once on an idle broker, not over and over. A segment that no live session or
//! retained message has records in is deleted whatever the credit (that rewrites nothing);
//! one that still has some waits for credit, so after a big queue drains on an idle broker
//! its old copy can stay on disk (when moving it overdrew the credit) until about a step's
//! budget plus that queue's size has been written.
//!
//! A deleted segment's file is kept for reuse instead (`ID.free`, at most
//! [`LogConfig::recycle_max`]): the next segment renames it, so its writes overwrite blocks
//! already on disk. Such a write does not extend the file, and the kernel issues it inline
//! (an extending O_DIRECT `RWF_DSYNC` write goes to an io-wq worker: a thread switch and
//! about half a millisecond of CPU per commit). Frames are sealed with their segment's id
//! ([`frame::seed_of`]), so the previous life's frames never pass for this one's; segments
//! written before the seed ([`frame::LEGACY`]) are deleted, not reused.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::frame::{self, End};
use super::segment::{self, Appender, Flight, BLOCK};
use rustc_hash::FxHashMap;

use crate::bodies::Moves;
use crate::compact::{self, MessageRef};
use crate::record::Record;
use crate::state::State;
use crate::Error;

/// Settings of one log.
#[derive(Clone, Debug)]
pub struct LogConfig {
    /// The log's directory (one per shard).
    pub dir: PathBuf,
    /// A segment rolls over past this many bytes. Default 64 MiB.
    pub segment_bytes_max: u64,
    /// Background compaction ([`Log::compact_step`]) works while the segments hold more
    /// than this many bytes. Default 64 MiB.
    pub compact_bytes_min: u64,
    /// Open segments with O_DIRECT (falls back to buffered I/O where the filesystem refuses
    /// it, e.g. tmpfs). Default true.
    pub direct: bool,
    /// Files of deleted segments kept for the next segments to reuse. Default 2.
    pub recycle_max: usize,
}

impl LogConfig {
    /// Defaults for `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            segment_bytes_max: 64 << 20,
            compact_bytes_min: 64 << 20,
            direct: true,
            recycle_max: 2,
        }
    }
}

/// What recovery found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Records replayed.
    pub records: usize,
    /// Segments read.
    pub segments: usize,
    /// A torn tail was cut: the segment and the offset it was truncated to.
    pub truncated: Option<(PathBuf, u64)>,
}

/// An open log.
#[derive(Debug)]
pub struct Log {
    config: LogConfig,
    _lock: File,
    /// Segment ids, oldest first; the last one is being appended to.
    segments: Vec<u64>,
    file: File,
    appender: Appender,
    /// Bytes in every segment.
    bytes: u64,
    state: State,
    /// Per retained topic: the segment holding its record.
    retained_seg: FxHashMap<String, u64>,
    /// Bytes of records per segment but the current one.
    sizes: std::collections::BTreeMap<u64, u64>,
    /// Bytes of records in the current segment.
    current_bytes: u64,
    /// The oldest segment holds nothing live: delete it once the current segment is durable
    /// up to this position (segment id, offset).
    unlink_after: Option<(u64, u64, u64)>,
    /// Segments sealed with [`frame::LEGACY`] (written before seeds): never recycled.
    legacy: Vec<u64>,
    /// Deleted segments' files kept for reuse (`ID.free`), oldest first.
    free: Vec<u64>,
    /// Bytes compaction may still rewrite: the log's size at open, plus every byte appended
    /// since but compaction's own, minus what compaction rewrote; at most the log's size,
    /// and below zero by at most a step's budget and the last unit it moved whole.
    credit: i64,
}

/// Session or retained topic a record is about.
enum Subject<'a> {
    Session(&'a str),
    Retained(&'a str),
}

fn subject(record: &Record) -> Subject<'_> {
    match record {
        Record::Session { client, .. }
        | Record::SessionEnd { client }
        | Record::Subscribe { client, .. }
        | Record::Unsubscribe { client, .. }
        | Record::Enqueue { client, .. }
        | Record::Sent { client, .. }
        | Record::Released { client, .. }
        | Record::Done { client, .. }
        | Record::Qos2Received { client, .. }
        | Record::Qos2Released { client, .. }
        | Record::Message { client, .. }
        | Record::Ref { client, .. }
        | Record::Acked { client, .. } => Subject::Session(client),
        Record::Retain { message, .. } => Subject::Retained(&message.topic),
        Record::RetainClear { topic, .. } => Subject::Retained(topic),
    }
}

/// Notes, after `record` was applied to `state`, which segment holds what is live.
fn track(state: &mut State, record: &Record, seg: u64, retained: &mut FxHashMap<String, u64>) {
    match subject(record) {
        Subject::Session(client) => {
            if let Some(s) = state.sessions.get_mut(client) {
                s.note_segment(seg);
            }
        }
        Subject::Retained(topic) => {
            let version = match record {
                Record::Retain { version, .. } => Some(*version),
                _ => None,
            };
            match state.retained.get(topic) {
                Some((_, v)) if Some(*v) == version => {
                    retained.insert(topic.to_string(), seg);
                }
                Some(_) => {}
                None => {
                    retained.remove(topic);
                }
            }
        }
    }
}

fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.log"))
}

fn free_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:08}.free"))
}

/// The ids of the directory's segments (`ID.log`) and kept files (`ID.free`), each sorted.
fn listing(dir: &Path) -> Result<(Vec<u64>, Vec<u64>), Error> {
    let (mut logs, mut free) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir).map_err(io(dir))?.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if let Some(id) = name.strip_suffix(".log").and_then(|n| n.parse().ok()) {
            logs.push(id);
        } else if let Some(id) = name.strip_suffix(".free").and_then(|n| n.parse().ok()) {
            free.push(id);
        }
    }
    logs.sort_unstable();
    free.sort_unstable();
    Ok((logs, free))
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn open_segment(path: &Path, direct: bool) -> Result<File, Error> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true);
    if direct {
        match o.clone().custom_flags(libc::O_DIRECT).open(path) {
            Ok(f) => return Ok(f),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(io(path)(e)),
        }
    }
    o.open(path).map_err(io(path))
}

impl Log {
    /// Opens (or creates) the log in `config.dir`: takes the lock, replays every segment into
    /// the state, truncates a torn tail of the last segment, and refuses damage anywhere else.
    pub fn open(config: LogConfig) -> Result<(Self, Recovery), Error> {
        let dir = config.dir.clone();
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let Some(lock) = crate::dir::try_lock(&dir).map_err(io(&lock_path))? else {
            return Err(Error::Locked(dir));
        };
        let (mut segments, kept) = listing(&dir)?;
        // The newest `recycle_max` kept files older than every segment in use (one that is
        // not, left by hand, could hold frames of a segment id still to come: never reused).
        let first = segments.first().copied().unwrap_or(0);
        let usable = kept.iter().filter(|&&id| id < first).count();
        let free: Vec<u64> = kept
            .iter()
            .copied()
            .take(usable)
            .skip(usable.saturating_sub(config.recycle_max))
            .collect();
        for id in kept.iter().filter(|id| !free.contains(id)) {
            let path = free_path(&dir, *id);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        let mut legacy = Vec::new();
        let mut last_seed = frame::seed_of(segments.last().copied().unwrap_or(1));
        let mut state = State::default();
        let mut retained_seg = FxHashMap::default();
        let mut sizes = std::collections::BTreeMap::new();
        let mut recovery = Recovery::default();
        let mut bytes = 0;
        let mut last_len = 0;
        for (i, &id) in segments.iter().enumerate() {
            let path = segment_path(&dir, id);
            let mut buf = Vec::new();
            File::open(&path)
                .and_then(|mut f| f.read_to_end(&mut buf))
                .map_err(io(&path))?;
            let scan = frame::scan(&buf, id);
            let is_last = i + 1 == segments.len();
            if scan.seed == frame::LEGACY {
                legacy.push(id);
            }
            last_seed = scan.seed;
            match scan.end {
                End::Clean => {}
                End::TornTail(offset) if is_last => {
                    // Reported once, by the caller, from `Recovery::truncated`.
                    recovery.truncated = Some((path.clone(), offset));
                }
                End::TornTail(offset) | End::Corrupt(offset) => {
                    return Err(Error::Corrupt { path, offset });
                }
            }
            for (_, record) in &scan.records {
                state.apply(record);
                track(&mut state, record, id, &mut retained_seg);
            }
            sizes.insert(id, scan.valid_len);
            recovery.records += scan.records.len();
            recovery.segments += 1;
            bytes += scan.valid_len;
            last_len = scan.valid_len;
        }
        let created = segments.is_empty();
        if created {
            segments.push(1);
        }
        let last = *segments.last().unwrap_or(&1);
        let path = segment_path(&dir, last);
        let file = open_segment(&path, config.direct)?;
        if created {
            // The first segment's directory entry is durable before any record counts on it.
            sync_dir(&dir)?;
        }
        if recovery.truncated.is_some() {
            // Cut the torn bytes off for good.
            file.set_len(last_len).map_err(io(&path))?;
            file.sync_all().map_err(io(&path))?;
        }
        let tail_start = last_len / BLOCK as u64 * BLOCK as u64;
        let mut tail = vec![0u8; usize::try_from(last_len - tail_start).unwrap_or(0)];
        if !tail.is_empty() {
            File::open(&path)
                .and_then(|f| f.read_exact_at(&mut tail, tail_start))
                .map_err(io(&path))?;
        }
        let appender = Appender::new(last_len, &tail, last_seed);
        let current_bytes = sizes.remove(&last).unwrap_or(0);
        Ok((
            Self {
                config,
                _lock: lock,
                segments,
                file,
                appender,
                bytes,
                state,
                retained_seg,
                sizes,
                current_bytes,
                unlink_after: None,
                legacy,
                free,
                credit: i64::try_from(bytes).unwrap_or(i64::MAX),
            },
            recovery,
        ))
    }

    /// The state the log describes (including records not committed yet).
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Adds a record to the current batch (durable after the next [`Log::commit`]).
    pub fn append(&mut self, record: &Record) -> Result<(), Error> {
        self.state.apply(record);
        let seg = self.current();
        track(&mut self.state, record, seg, &mut self.retained_seg);
        self.push(record)
    }

    /// Adds a message given to `client`'s session with id `id`, written once for the shard
    /// (further recipients: [`Record::Ref`]); encoded straight from the borrowed parts.
    pub fn append_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        let mut body_at = 0;
        let seg = self.current();
        let framed = self.appender.push_with(|out| {
            // `out` is the whole batch buffer: the body's offset within this frame.
            let payload_at = out.len();
            body_at = compact::put_message(out, client, id, qos, retain, message) - payload_at
                + frame::HEADER_BYTES;
        })?;
        let n = framed.len();
        let body = framed.get(body_at..).unwrap_or(&[]);
        self.state.apply_message(client, id, qos, retain, body, seg);
        self.count(n);
        Ok(())
    }

    /// Adds a batch of `client`'s sequence numbers that are done (a [`Record::Acked`]).
    pub fn append_acked(&mut self, client: &str, seqs: &[u64]) -> Result<(), Error> {
        let n = self
            .appender
            .push_with(|out| compact::put_acked(out, client, seqs))?
            .len();
        let seg = self.current();
        self.state.apply_acked(client, seqs, seg);
        self.count(n);
        Ok(())
    }

    fn push(&mut self, record: &Record) -> Result<(), Error> {
        let n = self.appender.push(record)?;
        self.count(n);
        Ok(())
    }

    fn count(&mut self, n: usize) {
        self.credit = self.credit.saturating_add(n as i64);
        let n = n as u64;
        self.bytes += n;
        self.current_bytes += n;
    }

    /// Invariant: the log's bytes are its segments' (checked where segments come and go).
    fn check_sizes(&self) {
        debug_assert_eq!(
            self.sizes.values().sum::<u64>() + self.current_bytes,
            self.bytes
        );
    }

    fn current(&self) -> u64 {
        self.segments.last().copied().unwrap_or(1)
    }

    /// One step of background compaction: rewrites into the current segment, at most about
    /// `budget` bytes per call, the live sessions and retained messages that still have
    /// records in the oldest segment; once none is left there, the oldest segment is deleted
    /// as soon as the rewritten records are durable (see [`Log::land`]). Runs only while the
    /// log holds more than `compact_bytes_min`, and rewrites only while it has credit (see
    /// the module's doc); a segment with nothing live left is deleted regardless. Returns the
    /// bytes rewritten.
    pub fn compact_step(&mut self, budget: u64) -> Result<u64, Error> {
        if self.segments.len() < 2
            || self.bytes <= self.config.compact_bytes_min
            || self.unlink_after.is_some()
        {
            return Ok(0);
        }
        let oldest = self.segments.first().copied().unwrap_or(0);
        let current = self.current();
        let start = self.bytes;
        // Credit banked while there was nothing to compact would pay for rewriting a large
        // live state again and again: never more than the log's size.
        self.credit = self
            .credit
            .min(i64::try_from(self.bytes).unwrap_or(i64::MAX));
        let live_in_oldest = |log: &Self| {
            log.state.sessions.values().any(|s| s.segment <= oldest)
                || log.retained_seg.values().any(|seg| *seg <= oldest)
        };
        if self.credit <= 0 && live_in_oldest(self) {
            return Ok(0);
        }
        // Whole sessions and retained topics that may still have records in the oldest segment.
        let sessions = self
            .state
            .sessions
            .iter()
            .filter(|(_, s)| s.segment <= oldest)
            .map(|(client, _)| (true, client.clone()));
        let retained = self
            .retained_seg
            .iter()
            .filter(|(_, seg)| **seg <= oldest)
            .map(|(topic, _)| (false, topic.clone()));
        let units = sessions.chain(retained).collect();
        let mut moves = Moves::default();
        let done = self.rewrite(units, start + budget, current, &mut moves);
        self.state.bodies.forget_moves(&mut moves);
        let rewritten = self.bytes - start;
        // `count` credited the rewrite like any append: take that back, and charge it.
        self.credit = self.credit.saturating_sub(
            i64::try_from(rewritten)
                .unwrap_or(i64::MAX)
                .saturating_mul(2),
        );
        if !done? {
            return Ok(rewritten);
        }
        // Nothing live is left in the oldest segment (deleting it at once, when nothing had
        // to be rewritten, takes its bytes off `self.bytes`).
        self.unlink_after = Some((oldest, current, self.appender.end()));
        self.try_unlink()?;
        Ok(rewritten)
    }

    /// Rewrites `units` (session or retained topic) into segment `current` until the log holds
    /// `until` bytes; true if all were rewritten.
    fn rewrite(
        &mut self,
        units: Vec<(bool, String)>,
        until: u64,
        current: u64,
        moves: &mut Moves,
    ) -> Result<bool, Error> {
        let mut records = Vec::new();
        for (session, key) in units {
            if self.bytes >= until {
                return Ok(false);
            }
            records.clear();
            if session {
                self.state.session_records(&key, &mut records);
            } else {
                self.state.retained_record(&key, &mut records);
            }
            for r in &records {
                self.push(r)?;
            }
            if session {
                // Its bodies move too, so the chunks of old segments' bodies can go.
                self.state.rehome(&key, moves);
                if let Some(s) = self.state.sessions.get_mut(&key) {
                    s.segment = current;
                }
            } else {
                self.retained_seg.insert(key, current);
            }
        }
        Ok(true)
    }

    /// Deletes the segment compaction emptied once what replaced it is durable.
    fn try_unlink(&mut self) -> Result<(), Error> {
        let Some((oldest, seg, end)) = self.unlink_after else {
            return Ok(());
        };
        if self.current() == seg && self.appender.durable() < end {
            return Ok(());
        }
        debug_assert_ne!(
            oldest,
            self.current(),
            "the current segment is never compacted away"
        );
        let path = segment_path(&self.config.dir, oldest);
        if self.free.len() < self.config.recycle_max && !self.legacy.contains(&oldest) {
            let to = free_path(&self.config.dir, oldest);
            std::fs::rename(&path, &to).map_err(io(&path))?;
            self.free.push(oldest);
        } else {
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
        self.legacy.retain(|id| *id != oldest);
        self.segments.retain(|id| *id != oldest);
        let freed = self.sizes.remove(&oldest).unwrap_or(0);
        self.bytes = self.bytes.saturating_sub(freed);
        self.check_sizes();
        self.unlink_after = None;
        sync_dir(&self.config.dir)
    }

    /// Bytes appended since the last commit.
    pub fn pending(&self) -> u64 {
        self.appender.pending()
    }

    /// Bytes in all segments.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Group commit, blocking: one write of the batch and one fdatasync, then
    /// rolls and deletes compacted segments as due. (The broker uses [`Log::take_flight`].)
    pub fn commit(&mut self) -> Result<(), Error> {
        self.commit_pending_only()?;
        self.after_commit()
    }

    /// The segment file being appended to (for a ring's write and fsync).
    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.file.as_raw_fd()
    }

    /// Group commit on an asynchronous writer: the batch to write and sync, if any is pending
    /// and none is out. Records appended meanwhile go in the next one.
    pub fn take_flight(&mut self) -> Option<Flight> {
        self.appender.take_flight()
    }

    /// A flight came back: `ok` if its write and fdatasync succeeded (then everything up to
    /// its `end` is durable), else its records stay pending. Then rolls and compacts as due.
    pub fn land(&mut self, buf: Vec<u8>, end: u64, ok: bool) -> Result<(), Error> {
        self.appender.land(buf, ok.then_some(end));
        if ok {
            self.after_commit()
        } else {
            Ok(())
        }
    }

    /// Bytes durable in the current segment.
    pub fn durable(&self) -> u64 {
        self.appender.durable()
    }

    /// True while a flight is out.
    pub fn flying(&self) -> bool {
        self.appender.flying()
    }

    /// Rolls to a new segment if this one is full, and compacts when the log has grown well
    /// past its live state (both blocking, and rare).
    fn after_commit(&mut self) -> Result<(), Error> {
        if self.appender.flying() {
            return Ok(());
        }
        self.try_unlink()?;
        if self.appender.end() >= self.config.segment_bytes_max {
            self.roll()?;
        }
        Ok(())
    }

    fn current_path(&self) -> PathBuf {
        segment_path(&self.config.dir, *self.segments.last().unwrap_or(&1))
    }

    fn roll(&mut self) -> Result<(), Error> {
        let id = self.segments.last().copied().unwrap_or(0) + 1;
        let path = segment_path(&self.config.dir, id);
        let recycled = !self.free.is_empty();
        if recycled {
            // The oldest kept file (its previous life's frames carry another id's seed).
            let from = free_path(&self.config.dir, self.free.remove(0));
            std::fs::rename(&from, &path).map_err(io(&from))?;
        }
        self.file = open_segment(&path, self.config.direct)?;
        if recycled {
            // Empty, not torn, until the first commit lands (else a stop right after the roll
            // would read as a torn tail at the next start).
            let (block, range) = segment::marker_block(frame::seed_of(id));
            block
                .get(range)
                .ok_or_else(|| Error::Encode("marker block".into()))
                .and_then(|b| {
                    self.file
                        .write_all_at(b, 0)
                        .and_then(|()| self.file.sync_data())
                        .map_err(io(&path))
                })?;
        }
        self.segments.push(id);
        // Records not yet durable move to the new segment.
        let pending = self.appender.take_pending();
        let old = *self
            .segments
            .get(self.segments.len().saturating_sub(2))
            .unwrap_or(&id);
        let moved = pending.len() as u64;
        self.sizes
            .insert(old, self.current_bytes.saturating_sub(moved));
        self.current_bytes = moved;
        self.check_sizes();
        // Rewritten records waiting to be durable moved too: wait for them there.
        if let Some((oldest, seg, _)) = self.unlink_after {
            if seg == old {
                self.unlink_after = Some((oldest, id, pending.len() as u64));
            }
        }
        self.appender = Appender::new(0, &[], frame::seed_of(id));
        self.appender.push_framed(&pending);
        // Whatever tracked the old segment for records that moved stays conservative (an
        // older segment id only makes compaction rewrite it sooner).
        sync_dir(&self.config.dir)
    }

    fn commit_pending_only(&mut self) -> Result<(), Error> {
        let Some(flight) = self.appender.take_flight() else {
            return Ok(());
        };
        let path = self.current_path();
        let done = flight
            .buf
            .get(flight.range.clone())
            .ok_or_else(|| Error::Encode("flight range".into()))
            .and_then(|bytes| {
                self.file
                    .write_all_at(bytes, flight.offset)
                    .and_then(|()| self.file.sync_data())
                    .map_err(io(&path))
            });
        let ok = done.is_ok();
        self.appender.land(flight.buf, ok.then_some(flight.end));
        done
    }
}

fn sync_dir(dir: &Path) -> Result<(), Error> {
    crate::dir::sync(dir).map_err(io(dir))
}
