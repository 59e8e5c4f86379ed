//! The primitive data types of [MQTT-1.5]: bounds-checked readers over a frozen packet body and
//! writers into a `BytesMut`. Strings and binary data are read as `Bytes` slices of the packet
//! (no copy).

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::PacketId;
use crate::limits::{STRING_BYTES_MAX, VARINT_MAX};

/// A checked cursor over one packet's body. Every read fails with [`DecodeError::Overrun`]
/// instead of reading past the end.
#[derive(Debug)]
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Self { buf }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.buf.try_get_u8().map_err(|_| DecodeError::Overrun)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.buf.try_get_u16().map_err(|_| DecodeError::Overrun)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.buf.try_get_u32().map_err(|_| DecodeError::Overrun)
    }

    pub(crate) fn packet_id(&mut self) -> Result<PacketId, DecodeError> {
        PacketId::new(self.u16()?).ok_or(DecodeError::PacketIdZero)
    }

    /// A variable byte integer: at most four bytes, minimally encoded ([MQTT-1.5.5-1]).
    pub(crate) fn varint(&mut self) -> Result<u32, DecodeError> {
        let mut value = 0u32;
        for i in 0..4 {
            let byte = self.u8()?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::MalformedVarint);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVarint)
    }

    /// The next `len` bytes as a slice of the packet.
    pub(crate) fn take(&mut self, len: usize) -> Result<Bytes, DecodeError> {
        if len > self.buf.len() {
            return Err(DecodeError::Overrun);
        }
        Ok(self.buf.split_to(len))
    }

    /// A sub-reader over the next `len` bytes (a property block).
    pub(crate) fn sub(&mut self, len: usize) -> Result<Reader, DecodeError> {
        self.take(len).map(Reader::new)
    }

    /// Binary data: a two-byte length then that many bytes.
    pub(crate) fn binary(&mut self) -> Result<Bytes, DecodeError> {
        let len = self.u16()?;
        self.take(usize::from(len))
    }

    /// A UTF-8 encoded string: valid UTF-8 (which excludes surrogates) without U+0000.
    pub(crate) fn string(&mut self) -> Result<ByteString, DecodeError> {
        let raw = self.binary()?;
        let s = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)?;
        if min_byte(s.as_bytes()) == 0 {
            return Err(DecodeError::NullCharacter);
        }
        Ok(s)
    }

    /// Everything left (a PUBLISH payload).
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Asserts the packet has been read to its end.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// The smallest byte of a slice (0xFF for an empty one). A branch-free fold that the compiler
/// vectorises: one pass answers "is there a U+0000" and, for topics, "is there anything below
/// `,`" (which covers `#` and `+`), far cheaper than a search per character on short strings.
pub(crate) fn min_byte(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0xFF, |m, &b| m.min(b))
}

/// The fixed header of a packet found at the front of a read buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedHeader {
    /// The first byte: packet type in the high nibble, flags in the low nibble.
    pub first_byte: u8,
    /// Bytes taken by the fixed header itself (2 to 5).
    pub header_bytes: usize,
    /// The declared remaining length.
    pub remaining_bytes: usize,
}

impl FixedHeader {
    /// Parses the fixed header at the front of `buf` without consuming anything. `Ok(None)`
    /// means more bytes are needed to know the packet's length.
    pub fn parse(buf: &[u8]) -> Result<Option<Self>, DecodeError> {
        let Some(&first_byte) = buf.first() else {
            return Ok(None);
        };
        let mut remaining = 0usize;
        for i in 0..4 {
            let Some(&byte) = buf.get(1 + i) else {
                return Ok(None);
            };
            remaining |= usize::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::MalformedVarint);
                }
                return Ok(Some(Self {
                    first_byte,
                    header_bytes: 2 + i,
                    remaining_bytes: remaining,
                }));
            }
        }
        Err(DecodeError::MalformedVarint)
    }

    /// The whole packet's size on the wire.
    pub fn packet_bytes(&self) -> usize {
        self.header_bytes + self.remaining_bytes
    }
}

/// Bytes a variable byte integer takes.
pub(crate) const fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(out: &mut BytesMut, value: usize) -> Result<(), EncodeError> {
    if value > VARINT_MAX as usize {
        return Err(EncodeError::PacketTooLarge);
    }
    let mut v = value;
    loop {
        let mut byte = (v & 0x7F) as u8;
        v >>= 7;
        if v > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if v == 0 {
            return Ok(());
        }
    }
}

/// Writes binary data or a string: two-byte length, then the bytes.
pub(crate) fn put_binary(out: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong)?;
    debug_assert!(data.len() <= STRING_BYTES_MAX);
    out.put_u16(len);
    out.put_slice(data);
    Ok(())
}

/// Encoded size of a string or binary field.
pub(crate) const fn binary_len(data: &[u8]) -> usize {
    2 + data.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_and_limits() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            268_435_455,
        ] {
            let mut out = BytesMut::new();
            put_varint(&mut out, v).unwrap();
            assert_eq!(out.len(), varint_len(v));
            let mut r = Reader::new(out.freeze());
            assert_eq!(r.varint().unwrap() as usize, v);
            assert!(r.is_empty());
        }
        assert_eq!(
            put_varint(&mut BytesMut::new(), 268_435_456),
            Err(EncodeError::PacketTooLarge)
        );
    }

    #[test]
    fn varint_rejects_five_bytes_and_non_minimal() {
        let mut r = Reader::new(Bytes::from_static(&[0xFF, 0xFF, 0xFF, 0xFF, 0x7F]));
        assert_eq!(r.varint(), Err(DecodeError::MalformedVarint));
        let mut r = Reader::new(Bytes::from_static(&[0x80, 0x00]));
        assert_eq!(r.varint(), Err(DecodeError::MalformedVarint));
        let mut r = Reader::new(Bytes::from_static(&[0x80]));
        assert_eq!(r.varint(), Err(DecodeError::Overrun));
    }

    #[test]
    fn strings_are_checked() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28]));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        // U+D800 encoded as CESU bytes ED A0 80 is not UTF-8.
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]));
        assert_eq!(r.string(), Err(DecodeError::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(&[0, 2, b'a', 0]));
        assert_eq!(r.string(), Err(DecodeError::NullCharacter));
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a']));
        assert_eq!(r.string(), Err(DecodeError::Overrun));
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xE2, 0x82, 0xAC]));
        assert_eq!(&*r.string().unwrap(), "\u{20AC}");
    }

    #[test]
    fn fixed_header() {
        assert_eq!(FixedHeader::parse(&[]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30]), Ok(None));
        assert_eq!(FixedHeader::parse(&[0x30, 0x80]), Ok(None));
        let h = FixedHeader::parse(&[0x30, 0x80, 0x01]).unwrap().unwrap();
        assert_eq!((h.header_bytes, h.remaining_bytes), (3, 128));
        assert_eq!(
            FixedHeader::parse(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF]),
            Err(DecodeError::MalformedVarint)
        );
    }
}
