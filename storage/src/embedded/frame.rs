//! Framing of records in a segment: `[length u32 LE][crc32c u32 LE][payload]`, the payload
//! rkyv bytes, or a compact record ([`crate::compact`]) when the length's top bit is set; and
//! the scan that recovery runs over a segment: every valid frame, and where and why it stopped.

use rkyv::rancor::Error as RkyvError;
use rkyv::util::AlignedVec;

use crate::compact;
use crate::record::Record;

/// Bytes before each record's payload.
pub const HEADER_BYTES: usize = 8;
/// The largest record accepted (a message is bounded by the MQTT packet size, 256 MiB).
pub const RECORD_BYTES_MAX: usize = 260 << 20;

/// Appends one framed record to `out`.
pub fn encode(record: &Record, out: &mut Vec<u8>) -> Result<(), crate::Error> {
    if matches!(
        record,
        Record::Message { .. } | Record::Ref { .. } | Record::Acked { .. }
    ) {
        return encode_with(out, |out| {
            compact::put_record(out, record);
        });
    }
    let bytes =
        rkyv::to_bytes::<RkyvError>(record).map_err(|e| crate::Error::Encode(e.to_string()))?;
    let len =
        u32::try_from(bytes.len()).map_err(|_| crate::Error::Encode("record too large".into()))?;
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&bytes).to_le_bytes());
    out.extend_from_slice(&bytes);
    Ok(())
}

/// Appends one compact frame whose payload `put` writes straight into `out` (no
/// intermediate buffer).
pub fn encode_with(out: &mut Vec<u8>, put: impl FnOnce(&mut Vec<u8>)) -> Result<(), crate::Error> {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER_BYTES]);
    put(out);
    let payload = out.get(start + HEADER_BYTES..).unwrap_or(&[]);
    let len = payload.len();
    if len == 0 || len > RECORD_BYTES_MAX {
        out.truncate(start);
        return Err(crate::Error::Encode("record too large".into()));
    }
    let crc = crc32c::crc32c(payload);
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

/// The frame at `at`, if it is whole, its checksum matches and it decodes: (record, size).
fn frame_at(buf: &[u8], at: usize) -> Option<(Record, usize)> {
    let word = read_u32(buf, at)?;
    let len = (word & !compact::COMPACT) as usize;
    if len == 0 || len > RECORD_BYTES_MAX {
        return None;
    }
    let crc = read_u32(buf, at + 4)?;
    let payload = buf.get(at + HEADER_BYTES..at + HEADER_BYTES + len)?;
    if crc32c::crc32c(payload) != crc {
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
    /// At the end of the data (what follows is zero padding or nothing).
    Clean,
    /// A partial or damaged last frame at this offset, with no valid frame after it: a write
    /// the crash interrupted. Truncate here.
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
}

/// Scans a whole segment.
pub fn scan(buf: &[u8]) -> Scan {
    let mut records = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = buf.get(at..).unwrap_or(&[]);
        if rest.iter().all(|&b| b == 0) {
            return Scan {
                records,
                valid_len: at as u64,
                end: End::Clean,
            };
        }
        match frame_at(buf, at) {
            Some((record, size)) => {
                records.push((at as u64, record));
                at += size;
            }
            None => {
                // Damaged here. If any later offset holds a valid frame, this is not a torn
                // tail but damage in the middle.
                let later = (at + 1..buf.len().saturating_sub(HEADER_BYTES))
                    .any(|o| frame_at(buf, o).is_some());
                let end = if later {
                    End::Corrupt(at as u64)
                } else {
                    End::TornTail(at as u64)
                };
                return Scan {
                    records,
                    valid_len: at as u64,
                    end,
                };
            }
        }
    }
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

    fn log(n: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            encode(&rec(i), &mut out).unwrap();
        }
        out
    }

    #[test]
    fn clean_with_padding() {
        let mut buf = log(5);
        let len = buf.len() as u64;
        buf.resize(4096, 0);
        let s = scan(&buf);
        assert_eq!((s.records.len(), s.valid_len, s.end), (5, len, End::Clean));
    }

    #[test]
    fn every_truncation_is_a_torn_tail_keeping_whole_frames() {
        let buf = log(4);
        let ends: Vec<u64> = scan(&buf).records.iter().map(|(o, _)| *o).collect();
        for cut in 0..buf.len() {
            let s = scan(&buf[..cut]);
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
        let second = scan(&buf).records[1].0 as usize;
        buf[second + HEADER_BYTES + 2] ^= 0x10;
        let s = scan(&buf);
        assert_eq!(s.end, End::Corrupt(second as u64));
        assert_eq!(s.records.len(), 1);
        let mut buf = log(6);
        let last = scan(&buf).records[5].0 as usize;
        buf[last + HEADER_BYTES + 1] ^= 0x01;
        assert_eq!(scan(&buf).end, End::TornTail(last as u64));
    }
}
