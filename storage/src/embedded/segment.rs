//! Appending to a segment with group commit, sans-IO: records are framed into a buffer whose
//! start is block-aligned (for O_DIRECT), and [`Appender::take_flight`] hands the aligned
//! bytes to write, and where, to whoever writes them. The last partial block is written
//! again by the next commit, with more records in it, so every write is whole blocks at a block-aligned offset.

use super::frame;
use crate::record::Record;

/// O_DIRECT alignment of buffers, offsets and lengths.
pub const BLOCK: usize = 4096;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Bytes whose start is aligned to [`BLOCK`], zero past `len` (safe code: over-allocate and
/// start at the first aligned byte).
#[derive(Debug)]
struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
    len: usize,
}

impl AlignedBuf {
    fn with_capacity(cap: usize) -> Self {
        let raw = vec![0u8; round_up(cap.max(BLOCK)) + BLOCK];
        let off = raw.as_ptr().align_offset(BLOCK);
        Self { raw, off, len: 0 }
    }

    fn capacity(&self) -> usize {
        self.raw.len() - self.off
    }

    fn data(&self) -> &[u8] {
        self.raw.get(self.off..self.off + self.len).unwrap_or(&[])
    }

    fn extend(&mut self, bytes: &[u8]) {
        let need = self.len + bytes.len();
        if round_up(need) > self.capacity() {
            let mut bigger = Self::with_capacity(need * 2);
            bigger.extend(self.data());
            *self = bigger;
        }
        if let Some(dst) = self.raw.get_mut(self.off + self.len..self.off + need) {
            dst.copy_from_slice(bytes);
        }
        self.len = need;
    }

    /// Keeps only the bytes from `from` on, moved to the front; the rest is zeroed.
    fn keep_from(&mut self, from: usize) {
        let (off, len) = (self.off, self.len);
        self.raw.copy_within(off + from..off + len, off);
        self.len = len - from;
        if let Some(rest) = self.raw.get_mut(off + self.len..off + len) {
            rest.fill(0);
        }
    }
}

/// A commit handed to an asynchronous writer (the shard's io_uring): write
/// `buf[range]` at `offset` then fdatasync; give `buf` back with [`Appender::land`].
#[derive(Debug)]
pub struct Flight {
    /// The buffer (block aligned at `range.start`), owned by the writer until it lands.
    pub buf: Vec<u8>,
    /// The bytes to write: whole blocks.
    pub range: std::ops::Range<usize>,
    /// Block-aligned file offset.
    pub offset: u64,
    /// Durable up to here once written and synced.
    pub end: u64,
}

/// The appending end of one segment.
#[derive(Debug)]
pub struct Appender {
    buf: AlignedBuf,
    /// File offset of the buffer's first byte (block aligned).
    base: u64,
    /// Records up to here are durable.
    durable: u64,
    scratch: Vec<u8>,
    /// A flight is out: `buf.raw` is with the writer; records go to `spare` meanwhile.
    flying: bool,
    spare: Vec<u8>,
}

impl Appender {
    /// Continues a segment whose valid records end at `len`; `tail` is the content of its last
    /// partial block (`len % BLOCK` bytes), which the next write rewrites.
    pub fn new(len: u64, tail: &[u8]) -> Self {
        let mut buf = AlignedBuf::with_capacity(1 << 20);
        buf.extend(tail);
        Self {
            buf,
            base: len - tail.len() as u64,
            durable: len,
            scratch: Vec::new(),
            flying: false,
            spare: Vec::new(),
        }
    }

    /// Frames a record into the batch; returns its framed size.
    pub fn push(&mut self, record: &Record) -> Result<usize, crate::Error> {
        self.scratch.clear();
        frame::encode(record, &mut self.scratch)?;
        if self.flying {
            self.spare.extend_from_slice(&self.scratch);
        } else {
            self.buf.extend(&self.scratch);
        }
        Ok(self.scratch.len())
    }

    /// Frames a compact record whose payload `put` writes (into a cleared buffer, after the
    /// frame header); returns the framed record.
    pub fn push_with(&mut self, put: impl FnOnce(&mut Vec<u8>)) -> Result<&[u8], crate::Error> {
        self.scratch.clear();
        frame::encode_with(&mut self.scratch, put)?;
        if self.flying {
            self.spare.extend_from_slice(&self.scratch);
        } else {
            self.buf.extend(&self.scratch);
        }
        Ok(&self.scratch)
    }

    /// Bytes appended but not durable yet.
    pub fn pending(&self) -> u64 {
        self.end() - self.durable
    }

    /// Where the segment's records end (durable or not).
    pub fn end(&self) -> u64 {
        self.base + (self.buf.len + self.spare.len()) as u64
    }

    /// True while a flight is out.
    pub fn flying(&self) -> bool {
        self.flying
    }

    /// Hands everything appended so far to an asynchronous writer, unless nothing is pending
    /// or a flight is already out. Records appended meanwhile wait for the next flight.
    pub fn take_flight(&mut self) -> Option<Flight> {
        if self.flying || self.pending() == 0 {
            return None;
        }
        let end = self.end();
        let len = round_up(self.buf.len);
        let buf = std::mem::take(&mut self.buf.raw);
        self.flying = true;
        Some(Flight {
            range: self.buf.off..self.buf.off + len,
            buf,
            offset: self.base,
            end,
        })
    }

    /// The flight's buffer is back. `durable_to`: `Some(end)` if it was written and synced,
    /// `None` if it failed (the records stay pending for the next flight).
    pub fn land(&mut self, buf: Vec<u8>, durable_to: Option<u64>) {
        self.buf.raw = buf;
        self.flying = false;
        if let Some(end) = durable_to {
            self.written(end);
        }
        // The spare buffer keeps its capacity for the next flight.
        let spare = std::mem::take(&mut self.spare);
        self.buf.extend(&spare);
        self.spare = spare;
        self.spare.clear();
    }

    /// Bytes known durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Takes the framed records not yet durable (none may be in flight): they move to the
    /// next segment when this one rolls.
    pub fn take_pending(&mut self) -> Vec<u8> {
        debug_assert!(!self.flying);
        let durable = usize::try_from(self.durable - self.base).unwrap_or(0);
        let pending = self.buf.data().get(durable..).unwrap_or(&[]).to_vec();
        let (off, len) = (self.buf.off, self.buf.len);
        if let Some(rest) = self.buf.raw.get_mut(off + durable..off + len) {
            rest.fill(0);
        }
        self.buf.len = durable;
        pending
    }

    /// Appends already framed records.
    pub fn push_framed(&mut self, bytes: &[u8]) {
        if self.flying {
            self.spare.extend_from_slice(bytes);
        } else {
            self.buf.extend(bytes);
        }
    }

    /// A write and fdatasync completed: durable up to `end`; whole blocks leave the buffer,
    /// the last partial block stays to be rewritten.
    fn written(&mut self, end: u64) {
        self.durable = self.durable.max(end);
        let settled = usize::try_from(end.saturating_sub(self.base)).unwrap_or(0);
        let whole = settled / BLOCK * BLOCK;
        if whole > 0 {
            self.buf.keep_from(whole);
            self.base += whole as u64;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_aligned_and_rewrite_the_partial_block() {
        let mut a = Appender::new(0, &[]);
        let mut file = vec![0u8; 0];
        for round in 0..50u64 {
            for i in 0..(round % 7 + 1) {
                a.push(&Record::Done {
                    client: "c".repeat(100),
                    seq: round * 10 + i,
                })
                .unwrap();
            }
            let f = a.take_flight().unwrap();
            let bytes = &f.buf[f.range.clone()];
            assert_eq!(f.offset % BLOCK as u64, 0);
            assert_eq!(bytes.len() % BLOCK, 0);
            assert_eq!(bytes.as_ptr().align_offset(BLOCK), 0);
            let end = f.offset as usize + bytes.len();
            if file.len() < end {
                file.resize(end, 0);
            }
            file[f.offset as usize..end].copy_from_slice(bytes);
            let e = f.end;
            a.land(f.buf, Some(e));
            let scan = frame::scan(&file);
            assert_eq!(scan.end, frame::End::Clean);
            assert_eq!(scan.valid_len, e);
        }
    }
}
