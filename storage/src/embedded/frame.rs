//! Framing of records in a segment: `[length u32 LE][crc32c u32 LE][payload]`, the payload
//! rkyv bytes, or a compact record ([`crate::compact`]) when the length's top bit is set; and
//! the scan that recovery runs over a segment: every valid frame, and where and why it stopped.
//!
//! The checksum is seeded ([`seed_of`] the segment's id: `crc32c_append(seed, payload)`), so a
//! recycled segment file's previous life (frames seeded with another id) never passes for
//! records of this one; and every write puts the segment's [`end_marker`] after its records,
//! so a seeded segment's end is told from damage without a search (its previous life, after
//! the marker, is never read). Segments written before seeding have seed [`LEGACY`] (plain
//! crc32c); the scan tells which from the first frame, and such a segment is never recycled.

use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

use crate::compact;
use crate::record::Record;

/// Bytes before each record's payload.
pub const HEADER_BYTES: usize = 8;
/// The largest record accepted (a message is bounded by the MQTT packet size, 256 MiB).
pub const RECORD_BYTES_MAX: usize = 260 << 20;

/// The seed of segments written before seeding: their checksums are plain crc32c.
pub const LEGACY: u32 = 0;

/// Bytes from a damaged frame of a seeded segment searched for a later valid compact frame
/// (besides the frame where the damaged one's header says the next starts): beyond it, a
/// recycled file holds its previous life.
pub const SEARCH_BYTES: usize = 1 << 20;

/// Bytes of the end marker after a write's records.
pub const END_BYTES: usize = 8;

/// The checksum seed of segment `id`'s frames: never [`LEGACY`] (ids start at 1), distinct
/// for ids below 2^32 (a multiplication by an odd number is a bijection of `u32`).
pub fn seed_of(id: u64) -> u32 {
    match (id as u32).wrapping_mul(0x9e37_79b1) {
        LEGACY => 1,
        seed => seed,
    }
}

/// What follows a seeded segment's records on disk: a frame header of length 0 (never a
/// frame's) with a check word of the seed, which a zeroed or foreign block does not have.
pub fn end_marker(seed: u32) -> [u8; END_BYTES] {
    let mut m = [0u8; END_BYTES];
    let (_, check) = m.split_at_mut(4);
    check.copy_from_slice(&(seed ^ 0xe0d0_e0d0).rotate_left(7).to_le_bytes());
    m
}

/// Appends one framed record to `out`, its checksum seeded with `seed`.
pub fn encode(record: &Record, out: &mut Vec<u8>, seed: u32) -> Result<(), crate::Error> {
    if matches!(
        record,
        Record::Message { .. } | Record::Ref { .. } | Record::Acked { .. }
    ) {
        return encode_with(out, seed, |out| {
            compact::put_record(out, record);
        });
    }
    let bytes =
        rkyv::to_bytes::<RkyvError>(record).map_err(|e| crate::Error::Encode(e.to_string()))?;
    let len =
        u32::try_from(bytes.len()).map_err(|_| crate::Error::Encode("record too large".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crate::checksum::append(seed, &bytes).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Appends one compact frame whose payload `put` writes straight into `out` (no
/// intermediate buffer), its checksum seeded with `seed`.
pub fn encode_with(
    out: &mut Vec<u8>,
    seed: u32,
    put: impl FnOnce(&mut Vec<u8>),
) -> Result<(), crate::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    put(out);
    let payload = out.get(start + HEADER_BYTES..).unwrap_or(&[]);
    let len = payload.len();
    if len == 0 || len > RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(crate::Error::Encode("record too large".into()));
    }
    let crc = crate::checksum::append(seed, payload);
    let word = len as u32 | compact::COMPACT;
    if let Some(h) = out.get_mut(start..start + HEADER_BYTES) {
        let (w, c) = h.split_at_mut(4);
        w.copy_from_slice(&word.to_le_bytes());
        c.copy_from_slice(&crc.to_le_bytes());
    }
    Ok(())
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let b: [u8; 4] = buf.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(b))
}

/// Re-seals whole frames (`bytes` starts at a frame and ends at one) with another seed: the
/// records not yet durable when a segment rolls move to the next one.
pub fn reseal(bytes: &mut [u8], seed: u32) {
    let mut at = 0;
    while at + HEADER_BYTES <= bytes.len() {
        let len = claimed_len(bytes, at);
        let body = at + HEADER_BYTES..at + HEADER_BYTES + len;
        let Some(crc) = bytes.get(body).map(|p| crate::checksum::append(seed, p)) else {
            debug_assert!(false, "reseal: a partial frame at {at}");
            return;
        };
        if let Some(c) = bytes.get_mut(at + 4..at + HEADER_BYTES) {
            c.copy_from_slice(&crc.to_le_bytes());
        }
        at += HEADER_BYTES + len;
    }
}

/// The length a frame header at `at` claims (0: none).
fn claimed_len(buf: &[u8], at: usize) -> usize {
    read_u32(buf, at).map_or(0, |w| (w & !compact::COMPACT) as usize)
}

/// A valid compact frame at `at` within `buf` under one of `seeds`, its header and kind byte
/// looked at before its checksum: the bytes of a recycled file's previous life are mostly
/// refused without one.
fn compact_frame_at(buf: &[u8], at: usize, seeds: &[u32]) -> bool {
    let Some(word) = read_u32(buf, at) else {
        return false;
    };
    let len = (word & !compact::COMPACT) as usize;
    word & compact::COMPACT != 0
        && len > 0
        && at + HEADER_BYTES + len <= buf.len()
        && buf
            .get(at + HEADER_BYTES)
            .is_some_and(|&k| compact::is_kind(k))
        && seeds.iter().any(|&seed| frame_at(buf, at, seed).is_some())
}

/// A valid frame after the damaged one at `at` of a seeded segment's last write (or of a
/// segment whose seed is not known yet): where its header says the next frame starts (any
/// frame), or a compact frame starting within [`SEARCH_BYTES`] (an rkyv frame there is
/// found only at the first place: the hot-path records are compact).
fn seeded_later(buf: &[u8], at: usize, seeds: &[u32]) -> bool {
    let claimed = claimed_len(buf, at);
    let next = at + HEADER_BYTES + claimed;
    if claimed > 0
        && seeds
            .iter()
            .any(|&seed| frame_at(buf, next, seed).is_some())
    {
        return true;
    }
    let starts = buf
        .len()
        .min(at + SEARCH_BYTES)
        .saturating_sub(HEADER_BYTES);
    (at + 1..starts).any(|o| compact_frame_at(buf, o, seeds))
}

/// The frame at `at`, if it is whole, its checksum (seeded with `seed`) matches and it
/// decodes: (record, size).
fn frame_at(buf: &[u8], at: usize, seed: u32) -> Option<(Record, usize)> {
    let word = read_u32(buf, at)?;
    let len = (word & !compact::COMPACT) as usize;
    if len == 0 || len > RECORD_BYTES_MAX {
        return None;
    }
    let crc = read_u32(buf, at + 4)?;
    let payload = buf.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    if crate::checksum::append(seed, payload) != crc {
        return None;
    }
    if word & compact::COMPACT != 0 {
        return Some((compact::parse(payload)?, HEADER_BYTES + len));
    }
    let mut aligned = AlignedVec::<16>::with_capacity(payload.len());
    aligned.extend_from_slice(payload);
    let record = rkyv::from_bytes::<Record, RkyvError>(&aligned).ok()?;
    Some((record, HEADER_BYTES + len))
}

/// How a scan ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// At the end of the data (what follows is zero padding or nothing, or a seeded
    /// segment's [`end_marker`]).
    Clean,
    /// A partial or damaged last frame at this offset, with no valid frame after it (in a
    /// seeded segment: none where its header says the next starts, no compact one within
    /// [`SEARCH_BYTES`]): a write the crash interrupted. Truncate here.
    TornTail(u64),
    /// A damaged frame at this offset with valid frames after it: acknowledged data is
    /// damaged. Never skipped.
    Corrupt(u64),
}

/// The valid frames of a segment, in order, with their offsets, and how the scan ended.
#[derive(Debug)]
pub struct Scan {
    /// (offset, record) of each valid frame.
    pub records: Vec<(u64, Record)>,
    /// Bytes of valid frames from the start.
    pub valid_len: u64,
    /// How it ended.
    pub end: End,
    /// The seed of its frames: [`seed_of`] its id, or [`LEGACY`].
    pub seed: u32,
}

/// Scans a whole segment, `id`. Its seed is the one its first frame has ([`seed_of`] `id`
/// for an empty one). A seeded segment ends cleanly at its [`end_marker`] (or zeros to the
/// end of the file). Where a frame fails: a legacy segment is searched to its end for a
/// later valid frame (then it is [`End::Corrupt`], else [`End::TornTail`]); a seeded one
/// where the damaged frame's header says the next one starts, and for a compact frame within
/// [`SEARCH_BYTES`] ([`seeded_later`]), since a recycled file holds its previous life's
/// frames (another seed) past the end of this one's.
pub fn scan(buf: &[u8], id: u64) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    let both = [seed_of(id), LEGACY];
    // The seed, once the first frame told it.
    let mut known: Option<u32> = None;
    loop {
        let seeds: &[u32] = match &known {
            Some(seed) => std::slice::from_ref(seed),
            None => &both,
        };
        let seed = known.unwrap_or(both[0]);
        let rest = buf.get(at..).unwrap_or(&[]);
        if rest.iter().all(|&b| b == 0) {
            return Scan {
                records,
                valid_len: at as u64,
                end: End::Clean,
                seed,
            };
        }
        // A seeded segment's records end at its marker (after it: padding, or a recycled
        // file's previous life).
        if known != Some(LEGACY) && buf.get(at..at + END_BYTES) == Some(&end_marker(seed_of(id))) {
            return Scan {
                records,
                valid_len: at as u64,
                end: End::Clean,
                seed: seed_of(id),
            };
        }
        let found = seeds
            .iter()
            .find_map(|&seed| frame_at(buf, at, seed).map(|f| (seed, f)));
        match found {
            Some((seed, (record, size))) => {
                known = Some(seed);
                records.push((at as u64, record));
                at += size;
            }
            None => {
                // Damaged here. If a later offset holds a valid frame, this is not a torn
                // tail but damage in the middle.
                let later = if known == Some(LEGACY) {
                    (at + 1..buf.len().saturating_sub(HEADER_BYTES))
                        .any(|o| frame_at(buf, o, LEGACY).is_some())
                } else {
                    seeded_later(buf, at, seeds)
                };
                let end = if later {
                    End::Corrupt(at as u64)
                } else {
                    End::TornTail(at as u64)
                };
                return Scan {
                    records,
                    valid_len: at as u64,
                    end,
                    seed,
                };
            }
        }
    }
}

/// The segment file `buf` (segment `id`) held an earlier segment: bytes other than zeros
/// after its records and end marker (its previous life).
pub fn holds_a_previous_life(buf: &[u8], id: u64) -> bool {
    let after = scan(buf, id).valid_len as usize + END_BYTES;
    buf.get(after..)
        .is_some_and(|rest| rest.iter().any(|&b| b != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u64) -> Record {
        Record::Done {
            client: format!("c{n}"),
            seq: n,
        }
    }

    /// Segment 7's frames.
    const ID: u64 = 7;

    fn log(n: u64) -> Vec<u8> {
        log_of(n, seed_of(ID), 0)
    }

    fn log_of(n: u64, seed: u32, from: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in from..from + n {
            encode(&rec(i), &mut out, seed).unwrap();
        }
        out
    }

    fn seqs(s: &Scan) -> Vec<u64> {
        s.records
            .iter()
            .map(|(_, r)| match r {
                Record::Done { seq, .. } => *seq,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn clean_with_padding() {
        let mut buf = log(5);
        let len = buf.len() as u64;
        buf.resize(4096, 0);
        let s = scan(&buf, ID);
        assert_eq!((s.records.len(), s.valid_len, s.end), (5, len, End::Clean));
    }

    #[test]
    fn every_truncation_is_a_torn_tail_keeping_whole_frames() {
        let buf = log(4);
        let ends: Vec<u64> = scan(&buf, ID).records.iter().map(|(o, _)| *o).collect();
        for cut in 0..buf.len() {
            let s = scan(&buf[..cut], ID);
            let whole = ends.iter().filter(|&&o| o < cut as u64).count();
            assert!(
                matches!(s.end, End::Clean | End::TornTail(_)),
                "cut {cut}: {:?}",
                s.end
            );
            assert!(s.records.len() == whole || s.records.len() + 1 == whole);
        }
    }

    #[test]
    fn a_flip_in_the_middle_is_corruption_at_the_frame() {
        let mut buf = log(6);
        let second = scan(&buf, ID).records[1].0 as usize;
        buf[second + HEADER_BYTES + 2] ^= 0x10;
        let s = scan(&buf, ID);
        assert_eq!(s.end, End::Corrupt(second as u64));
        assert_eq!(s.records.len(), 1);
        let mut buf = log(6);
        let last = scan(&buf, ID).records[5].0 as usize;
        buf[last + HEADER_BYTES + 1] ^= 0x01;
        assert_eq!(scan(&buf, ID).end, End::TornTail(last as u64));
    }

    #[test]
    fn a_legacy_segment_reads_with_plain_checksums() {
        let mut buf = log_of(5, LEGACY, 0);
        // Plain crc32c is the legacy seed.
        assert_eq!(
            u32::from_le_bytes(buf[4..8].try_into().unwrap()),
            crc32c::crc32c(&buf[HEADER_BYTES..HEADER_BYTES + claimed_len(&buf, 0)])
        );
        let s = scan(&buf, ID);
        assert_eq!((s.records.len(), s.end, s.seed), (5, End::Clean, LEGACY));
        // Damage in a legacy segment is searched for to its end.
        let len = buf.len();
        buf.extend(vec![0xee; 3 * SEARCH_BYTES]);
        buf.extend(log_of(1, LEGACY, 9));
        buf[len] = 1;
        assert_eq!(scan(&buf, ID).end, End::Corrupt(len as u64));
        // A segment's frames never pass for another's.
        let s = scan(&log_of(5, seed_of(ID + 1), 0), ID);
        assert_eq!(
            (s.records.len(), s.end, s.seed),
            (0, End::TornTail(0), seed_of(ID))
        );
    }

    /// A recycled file: this life's frames over the previous life's (another id's seed).
    #[test]
    fn a_recycled_file_ends_where_this_lifes_frames_end() {
        let old = log_of(4_000, seed_of(3), 1_000);
        let mut buf = old.clone();
        let mut new = log(30);
        new.extend_from_slice(&end_marker(seed_of(ID)));
        buf[..new.len()].copy_from_slice(&new);
        let s = scan(&buf, ID);
        assert_eq!(seqs(&s), (0..30).collect::<Vec<_>>());
        let end = (new.len() - END_BYTES) as u64;
        assert_eq!((s.valid_len, s.seed, s.end), (end, seed_of(ID), End::Clean));
        // Another segment's marker (the previous life's) is not this one's end.
        let mut foreign = buf.clone();
        foreign[end as usize..new.len()].copy_from_slice(&end_marker(seed_of(3)));
        assert_eq!(scan(&foreign, ID).end, End::TornTail(end));
        // Nor is a zeroed block.
        let mut zeroed = buf.clone();
        zeroed[end as usize..4096].fill(0);
        assert_eq!(scan(&zeroed, ID).end, End::TornTail(end));
        // Without a marker (a write the crash cut short), the previous life is a torn tail.
        let mut torn = old.clone();
        torn[..new.len() - END_BYTES].copy_from_slice(&new[..new.len() - END_BYTES]);
        assert_eq!(scan(&torn, ID).end, End::TornTail(end));
        // Nothing written in this life yet.
        let s = scan(&old, ID);
        assert_eq!((s.records.len(), s.end), (0, End::TornTail(0)));
        // A flip in this life's frames is corruption.
        let mut flipped = buf.clone();
        let at = scan(&buf, ID).records[10].0 as usize;
        flipped[at + HEADER_BYTES] ^= 0x40;
        let s = scan(&flipped, ID);
        assert_eq!((s.records.len(), s.end), (10, End::Corrupt(at as u64)));
        // Seeds differ for every id below 2^32 and are never the legacy one.
        let seeds: std::collections::HashSet<u32> = (1..100_000).map(seed_of).collect();
        assert_eq!(seeds.len(), 99_999);
        assert!(!seeds.contains(&LEGACY));
    }

    /// A damaged length in a recycled file: a later compact frame within the search says
    /// corruption; the previous life's bytes, however dense, are searched quickly.
    #[test]
    fn a_damaged_length_among_compact_frames_is_corruption() {
        let mut old = Vec::new();
        for i in 0..20_000u64 {
            let r = Record::Acked {
                client: format!("c{i}"),
                seqs: vec![i, i << 20, 7],
            };
            encode(&r, &mut old, seed_of(3)).unwrap();
        }
        let mut new = Vec::new();
        for i in 0..50u64 {
            let r = Record::Acked {
                client: "c".into(),
                seqs: vec![i],
            };
            encode(&r, &mut new, seed_of(ID)).unwrap();
        }
        let mut buf = old;
        buf[..new.len()].copy_from_slice(&new);
        let s = scan(&buf, ID);
        assert_eq!(
            (s.records.len(), s.end),
            (50, End::TornTail(new.len() as u64))
        );
        let at = s.records[20].0 as usize;
        buf[at + 1] ^= 0x08;
        let started = std::time::Instant::now();
        let s = scan(&buf, ID);
        assert_eq!((s.records.len(), s.end), (20, End::Corrupt(at as u64)));
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // A compact frame that starts within the search and ends past it is found.
        let mut big = Vec::new();
        encode(&rec(0), &mut big, seed_of(ID)).unwrap();
        let second = big.len();
        let r = Record::Acked {
            client: "big".into(),
            seqs: (0..300_000u64).map(|i| i << 40).collect(),
        };
        encode(&r, &mut big, seed_of(ID)).unwrap();
        assert!(big.len() - second > SEARCH_BYTES);
        big[1] ^= 0x08;
        let s = scan(&big, ID);
        assert_eq!((s.records.len(), s.end), (0, End::Corrupt(0)));
    }

    #[test]
    fn resealed_frames_read_under_the_new_seed() {
        let mut buf = log_of(6, seed_of(2), 0);
        reseal(&mut buf, seed_of(ID));
        let s = scan(&buf, ID);
        assert_eq!((seqs(&s), s.end), ((0..6).collect::<Vec<_>>(), End::Clean));
        assert_eq!(scan(&buf, 2).records.len(), 0);
    }
}
