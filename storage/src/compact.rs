//! The hand-encoded records of the hot path: a queued message written once with its first
//! recipient ([`Record::Message`]), each further recipient on the shard as a reference to it
//! ([`Record::Ref`]), and a session's acknowledgements as one batch ([`Record::Acked`]).
//! They are written straight from the received packet's slices (no owned copy, no rkyv
//! buffer) with varint lengths, and framed like every other record with the length's top bit
//! set ([`COMPACT`]); the rest of the records stay rkyv.
//!
//! A message *body* (topic, properties, expiry, payload) is shared by every recipient: the
//! state keeps it once ([`crate::bodies`]), as the bytes encoded here.

use crate::record::{Record, StoredMessage};

/// Flag in a frame's length word: the payload is a compact record, not rkyv.
pub const COMPACT: u32 = 1 << 31;

const MESSAGE: u8 = 1;
const REF: u8 = 2;
const ACKED: u8 = 3;

/// `b` is the kind byte a compact record starts with (a cheap test before a checksum).
pub fn is_kind(b: u8) -> bool {
    (MESSAGE..=ACKED).contains(&b)
}

/// A message body as the broker hands it over: borrowed from the received packet.
#[derive(Clone, Copy, Debug)]
pub struct MessageRef<'a> {
    /// Topic name.
    pub topic: &'a str,
    /// MQTT 5 properties as on the wire (property length included); empty for none.
    pub properties: &'a [u8],
    /// Absolute expiry, milliseconds of the Unix epoch; 0 for none.
    pub expires_at_ms: u64,
    /// Payload.
    pub payload: &'a [u8],
}

/// Appends `v` as LEB128.
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Reads a LEB128 value at the front of `buf`, advancing it.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn bytes<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = usize::try_from(varint(buf)?).ok()?;
    let (head, rest) = (buf.get(..len)?, buf.get(len..)?);
    *buf = rest;
    Some(head)
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends a message body.
pub fn put_body(out: &mut Vec<u8>, m: &MessageRef<'_>) {
    put_bytes(out, m.topic.as_bytes());
    put_bytes(out, m.properties);
    put_varint(out, m.expires_at_ms);
    out.extend_from_slice(m.payload);
}

/// The body of a stored message: topic, properties, expiry and payload, encoded.
pub fn body_of(m: &StoredMessage) -> Vec<u8> {
    let mut out = Vec::with_capacity(m.topic.len() + m.payload.len() + m.properties.len() + 8);
    put_body(
        &mut out,
        &MessageRef {
            topic: &m.topic,
            properties: &m.properties,
            expires_at_ms: m.expires_at_ms,
            payload: &m.payload,
        },
    );
    out
}

/// Reads a body back.
pub fn parse_body(mut buf: &[u8]) -> Option<MessageRef<'_>> {
    let topic = std::str::from_utf8(bytes(&mut buf)?).ok()?;
    let properties = bytes(&mut buf)?;
    let expires_at_ms = varint(&mut buf)?;
    Some(MessageRef {
        topic,
        properties,
        expires_at_ms,
        payload: buf,
    })
}

/// A body as a stored message going out with `qos` and `retain`.
pub fn stored(body: &[u8], qos: u8, retain: bool) -> Option<StoredMessage> {
    let m = parse_body(body)?;
    Some(StoredMessage {
        topic: m.topic.to_string(),
        payload: m.payload.to_vec(),
        qos,
        retain,
        properties: m.properties.to_vec(),
        expires_at_ms: m.expires_at_ms,
    })
}

fn flags(qos: u8, retain: bool) -> u8 {
    (qos & 3) | (u8::from(retain) << 2)
}

/// The part `Message` and `Ref` share: kind, id, recipient, its QoS and retain flag.
fn put_head(out: &mut Vec<u8>, kind: u8, client: &str, id: u64, qos: u8, retain: bool) {
    out.push(kind);
    put_varint(out, id);
    put_bytes(out, client.as_bytes());
    out.push(flags(qos, retain));
}

/// Appends the payload of a [`Record::Message`] built from borrowed parts; where in `out`
/// its body starts.
pub fn put_message(
    out: &mut Vec<u8>,
    client: &str,
    id: u64,
    qos: u8,
    retain: bool,
    m: &MessageRef<'_>,
) -> usize {
    put_head(out, MESSAGE, client, id, qos, retain);
    let body_at = out.len();
    put_body(out, m);
    body_at
}

/// Appends the payload of a compact record (`Message`, `Ref` or `Acked`); false for any
/// other record.
pub fn put_record(out: &mut Vec<u8>, record: &Record) -> bool {
    match record {
        Record::Message {
            client,
            id,
            qos,
            retain,
            body,
        } => {
            put_head(out, MESSAGE, client, *id, *qos, *retain);
            out.extend_from_slice(body);
        }
        Record::Ref {
            client,
            id,
            qos,
            retain,
        } => {
            put_head(out, REF, client, *id, *qos, *retain);
        }
        Record::Acked { client, seqs } => put_acked(out, client, seqs),
        _ => return false,
    }
    true
}

/// Appends the payload of a [`Record::Acked`]; `seqs` is sorted here (a set, any order).
pub fn put_acked(out: &mut Vec<u8>, client: &str, seqs: &[u64]) {
    out.push(ACKED);
    put_bytes(out, client.as_bytes());
    put_varint(out, seqs.len() as u64);
    let mut prev = 0u64;
    let owned;
    let seqs = if seqs.is_sorted() {
        seqs
    } else {
        let mut v = seqs.to_vec();
        v.sort_unstable();
        owned = v;
        &owned[..]
    };
    for &s in seqs {
        put_varint(out, s - prev);
        prev = s;
    }
}

/// Decodes a compact record's payload (`None`: damaged).
pub fn parse(buf: &[u8]) -> Option<Record> {
    let (&kind, mut rest) = buf.split_first()?;
    match kind {
        MESSAGE | REF => {
            let id = varint(&mut rest)?;
            let client = std::str::from_utf8(bytes(&mut rest)?).ok()?.to_string();
            let (&f, rest) = rest.split_first()?;
            let (qos, retain) = (f & 3, f & 4 != 0);
            if kind == REF {
                return rest.is_empty().then_some(Record::Ref {
                    client,
                    id,
                    qos,
                    retain,
                });
            }
            parse_body(rest)?;
            Some(Record::Message {
                client,
                id,
                qos,
                retain,
                body: rest.to_vec(),
            })
        }
        ACKED => {
            let client = std::str::from_utf8(bytes(&mut rest)?).ok()?.to_string();
            let n = usize::try_from(varint(&mut rest)?).ok()?;
            let mut seqs = Vec::with_capacity(n.min(rest.len()));
            let mut prev = 0u64;
            for _ in 0..n {
                prev = prev.checked_add(varint(&mut rest)?)?;
                seqs.push(prev);
            }
            rest.is_empty().then_some(Record::Acked { client, seqs })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn compact_records_round_trip() {
        let m = MessageRef {
            topic: "a/b",
            properties: &[3, 1, 1, 0],
            expires_at_ms: 1_700_000_000_000,
            payload: b"hello",
        };
        let mut out = Vec::new();
        let body_at = put_message(&mut out, "c1", 300, 2, true, &m);
        let mut body = Vec::new();
        put_body(&mut body, &m);
        assert_eq!(out[body_at..], body[..]);
        let Some(Record::Message {
            client,
            id,
            qos,
            retain,
            body,
        }) = parse(&out)
        else {
            panic!("a message");
        };
        assert_eq!((client.as_str(), id, qos, retain), ("c1", 300, 2, true));
        let back = stored(&body, qos, retain).unwrap();
        assert_eq!(back.topic, "a/b");
        assert_eq!(back.payload, b"hello");
        assert_eq!(back.properties, vec![3, 1, 1, 0]);
        assert_eq!(back.expires_at_ms, 1_700_000_000_000);
        for r in [
            Record::Ref {
                client: "x".into(),
                id: u64::MAX,
                qos: 1,
                retain: false,
            },
            Record::Acked {
                client: "y".into(),
                seqs: vec![1, 5, 5, 1 << 40, u64::MAX],
            },
        ] {
            let mut out = Vec::new();
            assert!(put_record(&mut out, &r));
            assert_eq!(parse(&out), Some(r));
        }
        let mut out = Vec::new();
        put_acked(&mut out, "z", &[9, 3, 7]);
        assert_eq!(
            parse(&out),
            Some(Record::Acked {
                client: "z".into(),
                seqs: vec![3, 7, 9]
            })
        );
        // The encoding, byte for byte, for short and long fields, with and without properties.
        let long_topic = "t/".repeat(100);
        let long_client = "c".repeat(300);
        for (topic, client, properties, expires_at_ms, id) in [
            ("a", "c", &[][..], 0, 0),
            (
                long_topic.as_str(),
                long_client.as_str(),
                &[2, 1, 1][..],
                u64::MAX,
                u64::MAX,
            ),
            ("x/y", "dev-1", &[][..], 1 << 35, 1 << 21),
        ] {
            let m = MessageRef {
                topic,
                properties,
                expires_at_ms,
                payload: b"pp",
            };
            let mut want = vec![MESSAGE];
            put_varint(&mut want, id);
            put_bytes(&mut want, client.as_bytes());
            want.push(flags(1, true));
            put_bytes(&mut want, topic.as_bytes());
            put_bytes(&mut want, properties);
            put_varint(&mut want, expires_at_ms);
            want.extend_from_slice(b"pp");
            let mut out = vec![9];
            put_message(&mut out, client, id, 1, true, &m);
            assert_eq!(out[1..], want[..]);
        }
        // Truncations never decode as something else.
        let mut out = Vec::new();
        put_message(&mut out, "c1", 300, 1, false, &m);
        for cut in 0..out.len() - m.payload.len() {
            assert!(parse(&out[..cut]).is_none(), "cut {cut}");
        }
    }
}
