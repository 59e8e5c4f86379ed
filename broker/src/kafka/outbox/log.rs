//! The outbox's files in `data_dir/kafka-outbox/`: segments of framed records and a cursor.
//!
//! - A segment `<first sequence, 20 digits>.log` holds frames `[len u32][crc32c u32][seq
//!   u64][record]` (little-endian; `len` counts the sequence and the record; the CRC covers
//!   them). A new segment starts at every start and when the current one passes
//!   `kafka.outbox_segment_bytes`; a segment is deleted once every record in it was
//!   acknowledged by Kafka (the next segment starts at or below the cursor).
//! - `cursor` holds the sequence of the first record not acknowledged by Kafka (8 bytes),
//!   written, fdatasynced and renamed into place (the directory synced) before any segment
//!   below it is deleted. It only saves work: a cursor older than the truth repeats records
//!   (at least once), never loses one.
//! - `lock` is held (flock) while the log is open: one broker per outbox directory.
//! - `dead/<sequence>.rec`: a record Kafka refused for good (too large, invalid), framed as
//!   in a segment, kept for the operator.
//!
//! Recovery reads every segment; a frame that is short or fails its CRC ends its segment (a
//! write torn by a crash: its record was never acknowledged to its publisher).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Bytes before a frame's record: length, CRC, sequence.
pub const FRAME_HEAD: usize = 16;

/// Records read back at start: (sequence, record) at or past the cursor, in order.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Records not acknowledged by Kafka yet.
    pub records: Vec<(u64, Vec<u8>)>,
    /// The sequence the next record gets.
    pub next_seq: u64,
    /// Segments ended early by a bad frame (logged).
    pub torn: usize,
}

/// The open log: the segment being written and the older ones still needed.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    /// Held (flock) while open.
    _lock: File,
    /// (first sequence, path) of every segment, oldest first; the last is `current`'s.
    segments: Vec<(u64, PathBuf)>,
    current: File,
    current_bytes: u64,
    segment_bytes_max: u64,
    /// The cursor last written.
    cursor_written: u64,
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.log"))
}

/// Appends one frame for `record` with sequence `seq` to `out`.
pub fn frame(seq: u64, record: &[u8], out: &mut Vec<u8>) {
    let len = u32::try_from(8 + record.len()).unwrap_or(u32::MAX);
    let mut crc = crc32c::crc32c(&seq.to_le_bytes());
    crc = crc32c::crc32c_append(crc, record);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(record);
}

/// The frames of one segment's bytes: (sequence, record), and whether a bad frame ended it.
fn frames(bytes: &[u8]) -> (Vec<(u64, &[u8])>, bool) {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let Some(head) = rest.get(..FRAME_HEAD) else {
            return (out, true);
        };
        let word = |at: usize| -> u32 {
            let b: [u8; 4] = head
                .get(at..at + 4)
                .and_then(|s| s.try_into().ok())
                .unwrap_or_default();
            u32::from_le_bytes(b)
        };
        let (len, crc) = (word(0) as usize, word(4));
        let Some(body) = rest.get(8..4 + 4 + len).filter(|_| len >= 8) else {
            return (out, true);
        };
        if crc32c::crc32c(body) != crc {
            return (out, true);
        }
        let (seq, record) = body.split_at(8);
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
        out.push((seq, record));
        rest = rest.get(8 + len..).unwrap_or_default();
    }
    (out, false)
}

/// Eight hex digits from the clock and the process id (not secret: only distinct).
pub fn random_token() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    format!("{:08x}", h.finish() as u32)
}

use storage::dir::sync as sync_dir;

fn read_cursor(dir: &Path) -> u64 {
    let mut b = [0u8; 8];
    match File::open(dir.join("cursor")).and_then(|mut f| f.read_exact(&mut b)) {
        Ok(()) => u64::from_le_bytes(b),
        Err(_) => 0,
    }
}

impl Log {
    /// Opens the log in `dir` (created if missing): reads back what Kafka has not
    /// acknowledged and starts a new segment for what comes next.
    pub fn open(dir: &Path, segment_bytes_max: u64) -> anyhow::Result<(Self, Recovered)> {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("kafka outbox: creating {}: {e}", dir.display()))?;
        if let Some(parent) = dir.parent() {
            let _ = sync_dir(parent);
        }
        let Some(lock) = storage::dir::try_lock(dir)
            .map_err(|e| anyhow::anyhow!("kafka outbox: locking {}: {e}", dir.display()))?
        else {
            anyhow::bail!(
                "kafka outbox: {} is in use by another broker (give each broker its own data_dir)",
                dir.display()
            )
        };
        let cursor = read_cursor(dir);
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir)
            .map_err(|e| anyhow::anyhow!("kafka outbox: reading {}: {e}", dir.display()))?
        {
            let path = entry?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            }
        }
        segments.sort_unstable();
        // A segment's name is its first sequence: never hand out one below it again, even
        // with a cursor that was lost.
        let named = segments.last().map_or(0, |(first, _)| *first);
        let mut recovered = Recovered {
            next_seq: cursor.max(named),
            ..Recovered::default()
        };
        for (_, path) in &segments {
            let bytes = std::fs::read(path)
                .map_err(|e| anyhow::anyhow!("kafka outbox: reading {}: {e}", path.display()))?;
            let (found, torn) = frames(&bytes);
            if torn {
                recovered.torn += 1;
                tracing::warn!(segment = %path.display(), "kafka outbox: a segment ends in a torn or damaged frame; reading stops there (its records were never acknowledged)");
            }
            for (seq, record) in found {
                recovered.next_seq = recovered.next_seq.max(seq + 1);
                if seq >= cursor && recovered.records.last().is_none_or(|(s, _)| *s < seq) {
                    recovered.records.push((seq, record.to_vec()));
                }
            }
        }
        let first = recovered.next_seq;
        let path = segment_path(dir, first);
        let current = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| anyhow::anyhow!("kafka outbox: creating {}: {e}", path.display()))?;
        segments.retain(|(f, _)| *f != first);
        segments.push((first, path));
        sync_dir(dir).map_err(|e| anyhow::anyhow!("kafka outbox: {}: {e}", dir.display()))?;
        let log = Self {
            _lock: lock,
            dir: dir.to_path_buf(),
            segments,
            current,
            current_bytes: 0,
            segment_bytes_max,
            cursor_written: cursor,
        };
        Ok((log, recovered))
    }

    /// Writes `frames` (whole frames, the first with sequence `first`) to the current
    /// segment, starting a new one first if the current one is full; with `sync`, waits
    /// until they are on disk. On an error the next write starts a new segment (a partial
    /// frame is never followed by good ones in the same file).
    pub fn append(&mut self, first: u64, frames: &[u8], sync: bool) -> std::io::Result<()> {
        if self.current_bytes >= self.segment_bytes_max {
            self.roll(first)?;
        }
        let written = self.current.write_all(frames).and_then(|()| {
            if sync {
                self.current.sync_data()
            } else {
                Ok(())
            }
        });
        match written {
            Ok(()) => {
                self.current_bytes += frames.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Whatever part was written stays unacknowledged; the next batch goes to a
                // new file.
                self.current_bytes = self.segment_bytes_max;
                Err(e)
            }
        }
    }

    /// Waits until everything written is on disk (`batch` durability's interval).
    pub fn sync(&mut self) -> std::io::Result<()> {
        self.current.sync_data()
    }

    fn roll(&mut self, first: u64) -> std::io::Result<()> {
        // What the old segment holds is durable before anything counts on the new one.
        self.current.sync_data()?;
        let path = segment_path(&self.dir, first);
        let file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)?;
        sync_dir(&self.dir)?;
        self.current = file;
        self.segments.retain(|(f, _)| *f != first);
        self.segments.push((first, path));
        self.current_bytes = 0;
        Ok(())
    }

    /// The outbox's origin token: random, made once and kept in `origin`, so two brokers
    /// with the same `kafka.client_id` never share record ids.
    pub fn origin_token(&self) -> std::io::Result<String> {
        let path = self.dir.join("origin");
        if let Ok(token) = std::fs::read_to_string(&path) {
            if !token.trim().is_empty() {
                return Ok(token.trim().to_string());
            }
        }
        let token = random_token();
        let mut file = File::create(&path)?;
        file.write_all(token.as_bytes())?;
        file.sync_data()?;
        sync_dir(&self.dir)?;
        Ok(token)
    }

    /// Records below `cursor` are acknowledged by Kafka: the cursor file says so and the
    /// segments wholly below it go.
    pub fn advance(&mut self, cursor: u64) {
        if cursor <= self.cursor_written {
            return;
        }
        let tmp = self.dir.join("cursor.tmp");
        let written = File::create(&tmp)
            .and_then(|mut f| {
                f.write_all(&cursor.to_le_bytes())?;
                f.sync_data()
            })
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("cursor")))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = written {
            tracing::warn!(error = %e, "kafka outbox: cannot write the cursor (records may be produced again after a restart)");
            return;
        }
        self.cursor_written = cursor;
        while self.segments.len() > 1 && self.segments.get(1).is_some_and(|(f, _)| *f <= cursor) {
            let (_, path) = self.segments.remove(0);
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!(segment = %path.display(), error = %e, "kafka outbox: cannot delete an acknowledged segment");
            }
        }
    }

    /// Keeps a record Kafka refused for good in `dead/` (synced), for the operator.
    pub fn dead_letter(&self, seq: u64, record: &[u8]) -> std::io::Result<PathBuf> {
        let dir = self.dir.join("dead");
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{seq:020}.rec"));
        let mut bytes = Vec::with_capacity(FRAME_HEAD + record.len());
        frame(seq, record, &mut bytes);
        let mut file = File::create(&path)?;
        file.write_all(&bytes)?;
        file.sync_data()?;
        sync_dir(&dir)?;
        Ok(path)
    }

    /// Segments on disk (the current one included).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("ringmq-outbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn batch(from: u64, n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for seq in from..from + n {
            frame(seq, format!("r{seq}").as_bytes(), &mut out);
        }
        out
    }

    #[test]
    fn records_past_the_cursor_come_back_and_acknowledged_segments_go() {
        let d = dir("cursor");
        let (mut log, rec) = Log::open(&d, 64).unwrap();
        assert_eq!((rec.records.len(), rec.next_seq), (0, 0));
        log.append(0, &batch(0, 5), true).unwrap();
        // Over 64 bytes: the next batch starts a segment.
        log.append(5, &batch(5, 5), true).unwrap();
        assert_eq!(log.segment_count(), 2);
        log.advance(7);
        assert_eq!(
            log.segment_count(),
            1,
            "the first segment is wholly acknowledged"
        );
        drop(log);
        let (log, rec) = Log::open(&d, 64).unwrap();
        let seqs: Vec<u64> = rec.records.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, vec![7, 8, 9]);
        assert_eq!(rec.records[0].1, b"r7");
        assert_eq!(rec.next_seq, 10);
        assert_eq!(log.segment_count(), 2, "a new segment per start");
        let second = Log::open(&d, 64).unwrap_err().to_string();
        assert!(second.contains("in use by another broker"), "{second}");
        drop(log);
        // The cursor lost: sequences still go on from the newest segment's name.
        std::fs::remove_file(d.join("cursor")).unwrap();
        let (_, rec) = Log::open(&d, 64).unwrap();
        assert_eq!(rec.next_seq, 10);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_torn_tail_ends_its_segment_and_the_rest_is_kept() {
        let d = dir("torn");
        let (mut log, _) = Log::open(&d, 1 << 20).unwrap();
        log.append(0, &batch(0, 3), true).unwrap();
        let mut partial = batch(3, 1);
        partial.truncate(partial.len() - 2);
        log.append(3, &partial, true).unwrap();
        drop(log);
        let (_, rec) = Log::open(&d, 1 << 20).unwrap();
        assert_eq!(rec.records.len(), 3);
        assert_eq!(rec.torn, 1);
        assert_eq!(rec.next_seq, 3);
        // A flipped bit: the CRC catches it.
        let _ = std::fs::remove_dir_all(&d);
        let (mut log, _) = Log::open(&d, 1 << 20).unwrap();
        let mut bad = batch(0, 2);
        let last = bad.len() - 1;
        bad[last] ^= 1;
        log.append(0, &bad, true).unwrap();
        drop(log);
        let (_, rec) = Log::open(&d, 1 << 20).unwrap();
        assert_eq!((rec.records.len(), rec.torn), (1, 1));
        let _ = std::fs::remove_dir_all(&d);
    }
}
