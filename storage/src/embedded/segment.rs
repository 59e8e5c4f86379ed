//! Appending to a segment with group commit, sans-IO: records are framed into a buffer whose
//! start is block-aligned (for O_DIRECT), and [`Appender::take_flight`] hands the aligned
//! bytes to write, and where, to whoever writes them. The last partial block is written
//! again by the next commit, with more records in it, so every write is whole blocks at a block-aligned offset.
//! Each write puts the segment's end marker ([`frame::end_marker`]) right after its records:
//! on disk, the records a segment holds are always followed by it.

use super::frame;
use crate::record::Record;

/// O_DIRECT alignment of buffers, offsets and lengths.
pub const BLOCK: usize = 4096;

fn round_up(n: usize) -> usize {
    n.div_ceil(BLOCK) * BLOCK
}

/// Bytes whose start is aligned to [`BLOCK`]: the data is `raw[off..]`, so records are
/// framed straight into it (safe code: over-allocate and start at the first aligned byte).
/// Invariant, kept by [`AlignedBuf::settle`] after every append: `raw`'s allocation starts
/// `off` bytes before an aligned address and has room to pad the data to whole blocks.
#[derive(Debug)]
struct AlignedBuf {
    raw: Vec<u8>,
    off: usize,
}

impl AlignedBuf {
    fn with_capacity(cap: usize) -> Self {
        Self::reuse(Vec::with_capacity(round_up(cap.max(BLOCK)) + 2 * BLOCK))
    }

    /// An empty buffer in `raw`'s allocation (one handed back by a writer). The bytes before
    /// the aligned start are never written anywhere: a reused buffer keeps them as they are
    /// (only a new allocation has them zeroed, once).
    fn reuse(mut raw: Vec<u8>) -> Self {
        let off = raw.as_ptr().align_offset(BLOCK);
        if raw.capacity() < off + 2 * BLOCK {
            return Self::with_capacity(1 << 20);
        }
        if raw.len() >= off {
            raw.truncate(off);
        } else {
            raw.clear();
            raw.resize(off, 0);
        }
        Self { raw, off }
    }

    fn len(&self) -> usize {
        self.raw.len() - self.off
    }

    fn data(&self) -> &[u8] {
        self.raw.get(self.off..).unwrap_or(&[])
    }

    /// After `raw` grew: if it moved to an address that breaks the alignment, or has no room
    /// left to pad to whole blocks, the data moves to a fresh buffer of twice its size (rare:
    /// buffers are reused, so this happens only while they grow).
    #[inline]
    fn settle(&mut self) {
        let aligned = self.raw.as_ptr().align_offset(BLOCK) == self.off;
        if aligned && self.raw.capacity() >= self.off + round_up(self.len() + frame::END_BYTES) {
            return;
        }
        self.grow();
    }

    #[cold]
    #[inline(never)]
    fn grow(&mut self) {
        let mut bigger = Self::with_capacity(self.len() * 2);
        bigger.raw.extend_from_slice(self.data());
        *self = bigger;
        debug_assert!(self.raw.capacity() >= self.off + round_up(self.len() + frame::END_BYTES));
    }

    fn extend(&mut self, bytes: &[u8]) {
        self.raw.extend_from_slice(bytes);
        self.settle();
    }

    /// Puts the end marker of `seed`'s segment after the records, zeroes the rest of the
    /// last block (one more block when the marker does not fit) and gives the buffer and its
    /// whole blocks away.
    fn into_blocks(mut self, seed: u32) -> (Vec<u8>, std::ops::Range<usize>) {
        let end = self.off + round_up(self.len() + frame::END_BYTES);
        debug_assert!(self.raw.capacity() >= end);
        if seed != frame::LEGACY {
            // (A legacy segment stays in its format: zeros after its records.)
            self.raw.extend_from_slice(&frame::end_marker(seed));
        }
        self.raw.resize(end, 0);
        (self.raw, self.off..end)
    }
}

/// One block that holds only `seed`'s end marker, aligned for O_DIRECT (the buffer and the
/// block's range in it): written at the start of a recycled file before it takes records, so
/// the segment is empty, not torn, until its first commit lands.
pub fn marker_block(seed: u32) -> (Vec<u8>, std::ops::Range<usize>) {
    AlignedBuf::with_capacity(BLOCK).into_blocks(seed)
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

/// The appending end of one segment. Double-buffered: while a flight is out, records are
/// framed into a second buffer that starts with a copy of the flight's last partial block
/// (rewritten by the next flight), so a record is framed once, in place (copied again only
/// when a buffer grows or a failed flight's records are put back), and nothing is zeroed but
/// the padding of a flight's last block.
#[derive(Debug)]
pub struct Appender {
    /// Records from `base` on, framed in place.
    buf: AlignedBuf,
    /// File offset of the buffer's first byte (block aligned).
    base: u64,
    /// Records up to here are durable.
    durable: u64,
    /// The flight out, if any: its file offset and its data length (to take it back if it
    /// fails).
    flight: Option<(u64, usize)>,
    /// A landed flight's buffer, reused by the next flight.
    idle: Option<Vec<u8>>,
    /// The segment's checksum seed ([`frame::seed_of`] its id, or [`frame::LEGACY`]).
    seed: u32,
}

impl Appender {
    /// Continues a segment whose valid records end at `len`; `tail` is the content of its last
    /// partial block (`len % BLOCK` bytes), which the next write rewrites; its frames are
    /// sealed with `seed`.
    pub fn new(len: u64, tail: &[u8], seed: u32) -> Self {
        let mut buf = AlignedBuf::with_capacity(1 << 20);
        buf.extend(tail);
        Self {
            buf,
            base: len - tail.len() as u64,
            durable: len,
            flight: None,
            idle: None,
            seed,
        }
    }

    /// Frames a record into the batch; returns its framed size.
    pub fn push(&mut self, record: &Record) -> Result<usize, crate::Error> {
        let start = self.buf.len();
        let framed = frame::encode(record, &mut self.buf.raw, self.seed);
        self.buf.settle();
        framed?;
        Ok(self.buf.len() - start)
    }

    /// Frames a compact record whose payload `put` appends to the batch buffer it is given
    /// (after the frame header; its length counts from the buffer's start, not the frame's:
    /// use differences of it); returns the framed record.
    pub fn push_with(&mut self, put: impl FnOnce(&mut Vec<u8>)) -> Result<&[u8], crate::Error> {
        let start = self.buf.len();
        let framed = frame::encode_with(&mut self.buf.raw, self.seed, put);
        self.buf.settle();
        framed?;
        Ok(self.buf.data().get(start..).unwrap_or(&[]))
    }

    /// Bytes appended but not durable yet.
    pub fn pending(&self) -> u64 {
        self.end() - self.durable
    }

    /// Where the segment's records end (durable or not).
    pub fn end(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// True while a flight is out.
    pub fn flying(&self) -> bool {
        self.flight.is_some()
    }

    /// Hands everything appended so far to an asynchronous writer, unless nothing is pending
    /// or a flight is already out. Records appended meanwhile wait for the next flight.
    pub fn take_flight(&mut self) -> Option<Flight> {
        if self.flight.is_some() || self.pending() == 0 {
            return None;
        }
        let end = self.end();
        let len = self.buf.len();
        let whole = len / BLOCK * BLOCK;
        let mut next = match self.idle.take() {
            Some(raw) => AlignedBuf::reuse(raw),
            None => AlignedBuf::with_capacity(len.max(1 << 20)),
        };
        next.extend(self.buf.data().get(whole..).unwrap_or(&[]));
        let flown = std::mem::replace(&mut self.buf, next);
        let offset = self.base;
        self.base += whole as u64;
        self.flight = Some((offset, len));
        let (buf, range) = flown.into_blocks(self.seed);
        Some(Flight {
            buf,
            range,
            offset,
            end,
        })
    }

    /// The flight's buffer is back. `durable_to`: `Some(end)` if it was written and synced,
    /// `None` if it failed (the records stay pending for the next flight).
    pub fn land(&mut self, buf: Vec<u8>, durable_to: Option<u64>) {
        let Some((offset, len)) = self.flight.take() else {
            debug_assert!(false, "a landing without a flight");
            return;
        };
        if let Some(end) = durable_to {
            self.durable = self.durable.max(end);
            self.idle = Some(buf);
            return;
        }
        // Failed: the flight's records are pending again, ahead of what came meanwhile (the
        // current buffer starts with a copy of the flight's last partial block).
        let mut raw = buf;
        let off = raw.as_ptr().align_offset(BLOCK);
        debug_assert!(raw.len() >= off + len);
        raw.truncate(off + len);
        let mut again = AlignedBuf { raw, off };
        again.settle();
        again.extend(self.buf.data().get(len % BLOCK..).unwrap_or(&[]));
        let meanwhile = std::mem::replace(&mut self.buf, again);
        self.base = offset;
        self.idle = Some(meanwhile.raw);
    }

    /// Bytes known durable.
    pub fn durable(&self) -> u64 {
        self.durable
    }

    /// Takes the framed records not yet durable (none may be in flight): they move to the
    /// next segment when this one rolls.
    pub fn take_pending(&mut self) -> Vec<u8> {
        debug_assert!(self.flight.is_none());
        let durable = usize::try_from(self.durable.saturating_sub(self.base)).unwrap_or(0);
        let pending = self.buf.data().get(durable..).unwrap_or(&[]).to_vec();
        self.buf
            .raw
            .truncate(self.buf.off + durable.min(self.buf.len()));
        pending
    }

    /// Appends already framed records, sealing them with this segment's seed.
    pub fn push_framed(&mut self, bytes: &[u8]) {
        let start = self.buf.len();
        self.buf.extend(bytes);
        if let Some(moved) = self.buf.raw.get_mut(self.buf.off + start..) {
            frame::reseal(moved, self.seed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_aligned_and_rewrite_the_partial_block() {
        let mut a = Appender::new(0, &[], frame::seed_of(1));
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
            let scan = frame::scan(&file, 1);
            assert_eq!(scan.end, frame::End::Clean);
            assert_eq!(scan.valid_len, e);
        }
    }

    fn write(file: &mut Vec<u8>, f: &Flight, blocks: usize) {
        let bytes = &f.buf[f.range.clone()];
        assert_eq!(f.offset % BLOCK as u64, 0);
        assert_eq!(bytes.len() % BLOCK, 0);
        assert_eq!(bytes.as_ptr().align_offset(BLOCK), 0);
        let bytes = &bytes[..bytes.len().min(blocks.saturating_mul(BLOCK))];
        let end = f.offset as usize + bytes.len();
        if file.len() < end {
            file.resize(end, 0);
        }
        file[f.offset as usize..end].copy_from_slice(bytes);
    }

    /// Records appended while a flight is out, flights that fail (after writing some of
    /// their blocks, or none), buffers that must grow past their first size: every landing
    /// leaves a file that scans clean up to what is durable, and in the end the file holds
    /// every record in order.
    #[test]
    fn flights_that_land_or_fail_keep_every_record_in_order() {
        let mut a = Appender::new(0, &[], frame::seed_of(1));
        let mut file = Vec::new();
        let mut pushed = Vec::new();
        let mut out: Option<Flight> = None;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for seq in 0..4_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 8 {
                0..=3 => {
                    let len = if x.is_multiple_of(151) {
                        (1 << 20) + (x % 9_000) as usize
                    } else {
                        (x % 300 + 1) as usize
                    };
                    let r = Record::Done {
                        client: "c".repeat(len),
                        seq,
                    };
                    let before = a.end();
                    let n = a.push(&r).unwrap();
                    assert_eq!(a.end(), before + n as u64);
                    pushed.push(r);
                }
                4 | 5 => {
                    if out.is_none() {
                        out = a.take_flight();
                    }
                }
                6 => {
                    if let Some(f) = out.take() {
                        write(&mut file, &f, usize::MAX);
                        let e = f.end;
                        a.land(f.buf, Some(e));
                        assert_eq!(a.durable(), e);
                        let scan = frame::scan(&file, 1);
                        assert_eq!(scan.end, frame::End::Clean);
                        assert_eq!(scan.valid_len, e);
                    }
                }
                _ => {
                    if let Some(f) = out.take() {
                        let blocks = (x >> 8) as usize % (f.range.len() / BLOCK + 1);
                        write(&mut file, &f, blocks);
                        let durable = a.durable();
                        a.land(f.buf, None);
                        assert_eq!(a.durable(), durable);
                    }
                }
            }
        }
        if let Some(f) = out.take() {
            write(&mut file, &f, usize::MAX);
            a.land(f.buf, Some(f.end));
        }
        while let Some(f) = a.take_flight() {
            write(&mut file, &f, usize::MAX);
            a.land(f.buf, Some(f.end));
        }
        assert_eq!(a.pending(), 0);
        let scan = frame::scan(&file, 1);
        assert_eq!(scan.end, frame::End::Clean);
        assert_eq!(scan.valid_len, a.end());
        let got: Vec<Record> = scan.records.into_iter().map(|(_, r)| r).collect();
        assert_eq!(got.len(), pushed.len());
        assert!(got == pushed);
    }
}
