//! A record for Kafka as the outbox keeps it: the rendered Kafka topic, the key, the headers
//! and the payload in one byte string (built on the shard from the MQTT message, written to
//! the log as is, read back when it is produced).
//!
//! Layout (little-endian): the topic (`u16` length, bytes); a key flag `u8` (0: none) and
//! the key (`u32` length, bytes); a header count `u16` and each header's name (`u16` length,
//! bytes) and value (`u32` length, bytes); the payload (`u32` length, bytes).

/// A record read back from its bytes (borrowing them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordRef<'a> {
    /// The Kafka topic.
    pub topic: &'a str,
    /// The record key, if any.
    pub key: Option<&'a [u8]>,
    /// The encoded headers (read with [`RecordRef::headers`]).
    headers: &'a [u8],
    /// How many headers.
    header_count: u16,
    /// The payload.
    pub payload: &'a [u8],
}

/// Appends one record to `out`. `each_header` calls its argument once per header. Lengths
/// over the fields' widths are cut (topics and header names are short by construction; the
/// payload is bounded by `packet_bytes_max`).
pub fn encode(
    topic: &str,
    key: Option<&[u8]>,
    each_header: impl FnOnce(&mut dyn FnMut(&str, &[u8])),
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    put16(out, topic.as_bytes());
    match key {
        Some(k) => {
            out.push(1);
            put32(out, k);
        }
        None => out.push(0),
    }
    let count_at = out.len();
    out.extend_from_slice(&[0, 0]);
    let mut count = 0u16;
    each_header(&mut |name: &str, value: &[u8]| {
        if count < u16::MAX {
            put16(out, name.as_bytes());
            put32(out, value);
            count += 1;
        }
    });
    if let Some(slot) = out.get_mut(count_at..count_at + 2) {
        slot.copy_from_slice(&count.to_le_bytes());
    }
    put32(out, payload);
}

fn put16(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_le_bytes());
    out.extend_from_slice(b.get(..n).unwrap_or_default());
}

fn put32(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len().min(u32::MAX as usize);
    out.extend_from_slice(&(n as u32).to_le_bytes());
    out.extend_from_slice(b.get(..n).unwrap_or_default());
}

/// A cursor over encoded bytes; every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_le_bytes([*b.first()?, *b.get(1)?]) as usize)
    }

    fn u32(&mut self) -> Option<usize> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_le_bytes(b) as usize)
    }

    fn bytes16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }

    fn bytes32(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.take(n)
    }
}

impl<'a> RecordRef<'a> {
    /// Reads a record written by [`encode`]; `None` if the bytes are not one.
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        let mut r = Reader(bytes);
        let topic = std::str::from_utf8(r.bytes16()?).ok()?;
        let key = match r.take(1)?.first()? {
            0 => None,
            _ => Some(r.bytes32()?),
        };
        let header_count = u16::try_from(r.u16()?).ok()?;
        let start = r.0;
        for _ in 0..header_count {
            std::str::from_utf8(r.bytes16()?).ok()?;
            r.bytes32()?;
        }
        let headers = start.get(..start.len() - r.0.len())?;
        let payload = r.bytes32()?;
        if !r.0.is_empty() {
            return None;
        }
        Some(Self {
            topic,
            key,
            headers,
            header_count,
            payload,
        })
    }

    /// Calls `f` with each header's name and value, in order.
    pub fn headers(&self, mut f: impl FnMut(&'a str, &'a [u8])) {
        let mut r = Reader(self.headers);
        for _ in 0..self.header_count {
            // Checked by `decode`.
            let (Some(name), Some(value)) = (r.bytes16(), r.bytes32()) else {
                return;
            };
            f(std::str::from_utf8(name).unwrap_or_default(), value);
        }
    }

    /// How many headers.
    pub fn header_count(&self) -> usize {
        self.header_count as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let mut out = Vec::new();
        encode(
            "telemetry",
            Some(b"dev-1"),
            |f| {
                f("mqtt.topic", b"d/1");
                f("site", b"");
            },
            b"payload",
            &mut out,
        );
        let r = RecordRef::decode(&out).unwrap();
        assert_eq!(r.topic, "telemetry");
        assert_eq!(r.key, Some(&b"dev-1"[..]));
        assert_eq!(r.payload, b"payload");
        let mut seen = Vec::new();
        r.headers(|n, v| seen.push((n.to_string(), v.to_vec())));
        assert_eq!(
            seen,
            vec![
                ("mqtt.topic".to_string(), b"d/1".to_vec()),
                ("site".to_string(), Vec::new())
            ]
        );
        let mut none = Vec::new();
        encode("t", None, |_| {}, b"", &mut none);
        let r = RecordRef::decode(&none).unwrap();
        assert_eq!((r.key, r.header_count(), r.payload), (None, 0, &b""[..]));
    }

    #[test]
    fn truncated_or_padded_bytes_are_not_a_record() {
        let mut out = Vec::new();
        encode("t", Some(b"k"), |f| f("h", b"v"), b"p", &mut out);
        for cut in 0..out.len() {
            assert!(RecordRef::decode(&out[..cut]).is_none(), "cut at {cut}");
        }
        out.push(0);
        assert!(RecordRef::decode(&out).is_none());
    }
}
