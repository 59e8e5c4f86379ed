//! The MQTT codec: one version-neutral [`Packet`] for MQTT 3.1, 3.1.1 and 5.0.
//!
//! Decoding is streaming and zero-copy: [`Decoder::decode`] looks at the fixed header at the
//! front of a `BytesMut` read buffer, rejects a declared size above the configured maximum
//! before the body is buffered, returns `Ok(None)` (nothing consumed) until the whole packet
//! is there, then splits it off; topics, payloads, client ids and binary properties are `Bytes`
//! slices of that buffer. Encoding appends to a caller-provided `BytesMut`, so many packets can
//! share one write buffer; [`Packet::encoded_len`] sizes a packet without allocating.
//!
//! # Layout
//! - `wire`: primitive types (varints, strings, binary) and the fixed header.
//! - `properties`: MQTT 5 properties and which packet may carry which.
//! - `reason`: reason codes and the sets each packet allows.
//! - `connect`, `publish`, `ack`, `subscribe`, `control`: one module per packet family.
//! - `error`: [`DecodeError`] (names the spec rule and the reason code) and [`EncodeError`].

mod ack;
mod connect;
mod control;
mod error;
mod properties;
mod publish;
mod reason;
mod subscribe;
mod wire;

#[cfg(test)]
mod tests;

use std::num::NonZeroU16;

use bytes::{Buf, BufMut, BytesMut};

pub use ack::{PubResp, PubRespKind};
pub use connect::{ConnAck, Connect, Will};
pub use control::{Auth, Disconnect};
pub use error::{DecodeError, EncodeError};
pub use properties::{id as property_id, BoxedProperties, Properties};
pub use publish::{Publish, PublishRef};
pub use reason::ReasonCode;
pub use subscribe::{
    RetainHandling, SubAck, Subscribe, SubscriptionOptions, UnsubAck, Unsubscribe,
};
pub use wire::FixedHeader;

/// Appends a variable byte integer (at most 268,435,455) to `out`: for tools that write packet
/// headers by hand.
pub fn put_variable_int(out: &mut BytesMut, value: usize) -> Result<(), EncodeError> {
    put_varint(out, value)
}

pub(crate) use wire::min_byte;
use wire::{put_varint, varint_len, Reader};

/// The protocol version a connection speaks, fixed by its CONNECT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProtocolVersion {
    /// MQTT 3.1: protocol name `MQIsdp`, level 3.
    V31,
    /// MQTT 3.1.1: protocol name `MQTT`, level 4.
    V311,
    /// MQTT 5.0: protocol name `MQTT`, level 5.
    V5,
}

impl ProtocolVersion {
    /// The protocol level byte of CONNECT.
    pub const fn level(self) -> u8 {
        match self {
            Self::V31 => 3,
            Self::V311 => 4,
            Self::V5 => 5,
        }
    }

    /// The protocol name of CONNECT.
    pub const fn protocol_name(self) -> &'static str {
        match self {
            Self::V31 => "MQIsdp",
            Self::V311 | Self::V5 => "MQTT",
        }
    }

    /// True for MQTT 5.0 (properties, reason codes, AUTH).
    pub const fn is_v5(self) -> bool {
        matches!(self, Self::V5)
    }
}

/// Quality of service ([MQTT-4.3]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum QoS {
    /// At most once.
    AtMostOnce = 0,
    /// At least once.
    AtLeastOnce = 1,
    /// Exactly once.
    ExactlyOnce = 2,
}

impl QoS {
    /// The QoS for its two-bit value; `None` for the invalid 3.
    pub const fn from_bits(bits: u8) -> Option<Self> {
        match bits {
            0 => Some(Self::AtMostOnce),
            1 => Some(Self::AtLeastOnce),
            2 => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// A packet identifier: non-zero by construction ([MQTT-2.2.1-3]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PacketId(NonZeroU16);

impl PacketId {
    /// `None` for 0.
    pub const fn new(id: u16) -> Option<Self> {
        match NonZeroU16::new(id) {
            Some(id) => Some(Self(id)),
            None => None,
        }
    }

    /// The identifier's value.
    pub const fn get(self) -> u16 {
        self.0.get()
    }
}

/// Control packet types ([MQTT-2.1.2]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
#[allow(missing_docs)]
pub enum PacketType {
    Connect = 1,
    ConnAck = 2,
    Publish = 3,
    PubAck = 4,
    PubRec = 5,
    PubRel = 6,
    PubComp = 7,
    Subscribe = 8,
    SubAck = 9,
    Unsubscribe = 10,
    UnsubAck = 11,
    PingReq = 12,
    PingResp = 13,
    Disconnect = 14,
    Auth = 15,
}

/// One MQTT control packet, whatever the protocol version.
#[derive(Clone, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum Packet {
    Connect(Box<Connect>),
    ConnAck(ConnAck),
    Publish(Publish),
    /// PUBACK, PUBREC, PUBREL or PUBCOMP, told apart by [`PubResp::kind`].
    PubResp(PubResp),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(UnsubAck),
    PingReq,
    PingResp,
    Disconnect(Disconnect),
    Auth(Auth),
}

impl Packet {
    /// The packet's type.
    pub fn packet_type(&self) -> PacketType {
        match self {
            Packet::Connect(_) => PacketType::Connect,
            Packet::ConnAck(_) => PacketType::ConnAck,
            Packet::Publish(_) => PacketType::Publish,
            Packet::PubResp(p) => p.kind.packet_type(),
            Packet::Subscribe(_) => PacketType::Subscribe,
            Packet::SubAck(_) => PacketType::SubAck,
            Packet::Unsubscribe(_) => PacketType::Unsubscribe,
            Packet::UnsubAck(_) => PacketType::UnsubAck,
            Packet::PingReq => PacketType::PingReq,
            Packet::PingResp => PacketType::PingResp,
            Packet::Disconnect(_) => PacketType::Disconnect,
            Packet::Auth(_) => PacketType::Auth,
        }
    }

    /// The first byte of the fixed header: type and flags.
    fn first_byte(&self) -> u8 {
        let flags = match self {
            Packet::Publish(p) => p.header_flags(),
            Packet::PubResp(p) if p.kind == PubRespKind::PubRel => 0b0010,
            Packet::Subscribe(_) | Packet::Unsubscribe(_) => 0b0010,
            _ => 0,
        };
        (self.packet_type() as u8) << 4 | flags
    }

    /// The remaining length (everything after the fixed header). CONNECT carries its own
    /// version; `version` applies to every other packet.
    pub fn remaining_len(&self, version: ProtocolVersion) -> usize {
        match self {
            Packet::Connect(p) => p.remaining_len(),
            Packet::ConnAck(p) => p.remaining_len(version),
            Packet::Publish(p) => p.remaining_len(version),
            Packet::PubResp(p) => p.remaining_len(version),
            Packet::Subscribe(p) => p.remaining_len(version),
            Packet::SubAck(p) => p.remaining_len(version),
            Packet::Unsubscribe(p) => p.remaining_len(version),
            Packet::UnsubAck(p) => p.remaining_len(version),
            Packet::PingReq | Packet::PingResp => 0,
            Packet::Disconnect(p) => p.remaining_len(version),
            Packet::Auth(p) => p.remaining_len(),
        }
    }

    /// The packet's full size on the wire, computed without allocating.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + varint_len(remaining) + remaining
    }

    /// Appends the encoded packet to `out`. On error `out` is left as it was.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        if matches!(self, Packet::Auth(_)) && !version.is_v5() {
            return Err(EncodeError::NotInVersion);
        }
        let remaining = self.remaining_len(version);
        let start = out.len();
        out.reserve(1 + varint_len(remaining) + remaining);
        out.put_u8(self.first_byte());
        let result = put_varint(out, remaining).and_then(|()| self.write_body(version, out));
        if result.is_err() {
            out.truncate(start);
        } else {
            debug_assert_eq!(out.len() - start, self.encoded_len(version));
        }
        result
    }

    fn write_body(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Packet::Connect(p) => p.write(out),
            Packet::ConnAck(p) => p.write(version, out),
            Packet::Publish(p) => p.write(version, out),
            Packet::PubResp(p) => p.write(version, out),
            Packet::Subscribe(p) => p.write(version, out),
            Packet::SubAck(p) => p.write(version, out),
            Packet::Unsubscribe(p) => p.write(version, out),
            Packet::UnsubAck(p) => p.write(version, out),
            Packet::PingReq | Packet::PingResp => Ok(()),
            Packet::Disconnect(p) => p.write(version, out),
            Packet::Auth(p) => p.write(out),
        }
    }
}

/// Splits whole packets off a read buffer. `version` is the connection's protocol version
/// (set it from the CONNECT; before that, any value: CONNECT carries its own). `packet_bytes_max`
/// is the largest whole packet accepted, fixed header included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoder {
    /// The connection's protocol version.
    pub version: ProtocolVersion,
    /// The largest whole packet accepted, in bytes.
    pub packet_bytes_max: usize,
}

impl Decoder {
    /// A decoder for a connection that has not sent CONNECT yet.
    pub const fn new(packet_bytes_max: usize) -> Self {
        Self {
            version: ProtocolVersion::V311,
            packet_bytes_max,
        }
    }

    /// Decodes the packet at the front of `buf`. `Ok(None)`: more bytes are needed and nothing
    /// was consumed. `Ok(Some)`: exactly that packet's bytes were split off the front. `Err`:
    /// the connection must be closed (after a CONNACK or DISCONNECT with the error's reason
    /// code where the protocol allows one); the buffer's state is then unspecified.
    pub fn decode(&self, buf: &mut BytesMut) -> Result<Option<Packet>, DecodeError> {
        let Some(header) = FixedHeader::parse(buf)? else {
            return Ok(None);
        };
        if header.packet_bytes() > self.packet_bytes_max {
            return Err(DecodeError::PacketTooLarge);
        }
        if buf.len() < header.packet_bytes() {
            return Ok(None);
        }
        let mut frame = buf.split_to(header.packet_bytes()).freeze();
        frame.advance(header.header_bytes);
        decode_body(header.first_byte, Reader::new(frame), self.version).map(Some)
    }
}

fn decode_body(
    first_byte: u8,
    mut r: Reader,
    version: ProtocolVersion,
) -> Result<Packet, DecodeError> {
    let flags = first_byte & 0x0F;
    let expect_flags = |want: u8| {
        if flags == want {
            Ok(())
        } else {
            Err(DecodeError::InvalidHeaderFlags)
        }
    };
    let packet = match first_byte >> 4 {
        1 => {
            expect_flags(0)?;
            Packet::Connect(Box::new(Connect::decode(&mut r)?))
        }
        2 => {
            expect_flags(0)?;
            Packet::ConnAck(ConnAck::decode(&mut r, version)?)
        }
        3 => Packet::Publish(Publish::decode(flags, &mut r, version)?),
        4 => {
            expect_flags(0)?;
            Packet::PubResp(PubResp::decode(PubRespKind::PubAck, &mut r, version)?)
        }
        5 => {
            expect_flags(0)?;
            Packet::PubResp(PubResp::decode(PubRespKind::PubRec, &mut r, version)?)
        }
        6 => {
            expect_flags(0b0010)?;
            Packet::PubResp(PubResp::decode(PubRespKind::PubRel, &mut r, version)?)
        }
        7 => {
            expect_flags(0)?;
            Packet::PubResp(PubResp::decode(PubRespKind::PubComp, &mut r, version)?)
        }
        8 => {
            expect_flags(0b0010)?;
            Packet::Subscribe(Subscribe::decode(&mut r, version)?)
        }
        9 => {
            expect_flags(0)?;
            Packet::SubAck(SubAck::decode(&mut r, version)?)
        }
        10 => {
            expect_flags(0b0010)?;
            Packet::Unsubscribe(Unsubscribe::decode(&mut r, version)?)
        }
        11 => {
            expect_flags(0)?;
            Packet::UnsubAck(UnsubAck::decode(&mut r, version)?)
        }
        12 => {
            expect_flags(0)?;
            Packet::PingReq
        }
        13 => {
            expect_flags(0)?;
            Packet::PingResp
        }
        14 => {
            expect_flags(0)?;
            Packet::Disconnect(Disconnect::decode(&mut r, version)?)
        }
        15 if version.is_v5() => {
            expect_flags(0)?;
            Packet::Auth(Auth::decode(&mut r)?)
        }
        _ => return Err(DecodeError::ReservedPacketType),
    };
    r.finish()?;
    Ok(packet)
}
