//! PUBLISH ([MQTT-3.3]).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::properties::{self, BoxedProperties, Properties};
use super::wire::{binary_len, put_binary, Reader};
use super::{PacketId, ProtocolVersion, QoS};
use crate::topic::validate_topic_name;

/// PUBLISH. `topic` and `payload` are slices of the read buffer the packet was decoded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publish {
    /// DUP: a redelivery (never set with QoS 0).
    pub dup: bool,
    /// QoS of this transmission.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic name: no wildcards; empty only in MQTT 5 with a topic alias.
    pub topic: ByteString,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 PUBLISH properties.
    pub properties: BoxedProperties,
    /// Application message.
    pub payload: Bytes,
}

impl Publish {
    pub(crate) fn decode(
        flags: u8,
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let qos = QoS::from_bits((flags >> 1) & 0x03).ok_or(DecodeError::InvalidQos)?;
        let dup = flags & 0x08 != 0;
        if dup && qos == QoS::AtMostOnce {
            return Err(DecodeError::DupWithQos0);
        }
        let topic = r.string()?;
        validate_topic_name(&topic)?;
        let packet_id = if qos == QoS::AtMostOnce {
            None
        } else {
            Some(r.packet_id()?)
        };
        let properties = if version.is_v5() {
            Properties::decode(r, properties::PUBLISH)?
        } else {
            BoxedProperties::default()
        };
        if topic.is_empty() && properties.topic_alias.is_none() {
            return Err(DecodeError::EmptyTopicName);
        }
        Ok(Self {
            dup,
            qos,
            retain: flags & 0x01 != 0,
            topic,
            packet_id,
            properties,
            payload: r.rest(),
        })
    }

    /// A borrowed view for encoding.
    pub fn as_ref(&self) -> PublishRef<'_> {
        PublishRef {
            dup: self.dup,
            qos: self.qos,
            retain: self.retain,
            topic: &self.topic,
            packet_id: self.packet_id,
            properties: &self.properties,
            payload: &self.payload,
        }
    }

    pub(crate) fn header_flags(&self) -> u8 {
        self.as_ref().header_flags()
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        self.as_ref().remaining_len(version)
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        self.as_ref().write(version, out)
    }
}

/// A PUBLISH to encode from borrowed parts: a broker forwarding a message encodes it once per
/// subscriber without taking a reference count on its topic and payload each time.
#[derive(Clone, Copy, Debug)]
pub struct PublishRef<'a> {
    /// DUP.
    pub dup: bool,
    /// QoS of this transmission.
    pub qos: QoS,
    /// RETAIN.
    pub retain: bool,
    /// Topic name (empty with a topic alias).
    pub topic: &'a str,
    /// Present exactly when `qos` is 1 or 2.
    pub packet_id: Option<PacketId>,
    /// MQTT 5 properties (ignored for MQTT 3).
    pub properties: &'a BoxedProperties,
    /// Application message.
    pub payload: &'a [u8],
}

impl PublishRef<'_> {
    fn header_flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = binary_len(self.topic.as_bytes()) + self.payload.len();
        if self.packet_id.is_some() {
            n += 2;
        }
        if version.is_v5() {
            n += self.properties.encoded_len();
        }
        n
    }

    /// The packet's full size on the wire.
    pub fn encoded_len(&self, version: ProtocolVersion) -> usize {
        let remaining = self.remaining_len(version);
        1 + super::wire::varint_len(remaining) + remaining
    }

    fn write(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        debug_assert_eq!(self.packet_id.is_some(), self.qos != QoS::AtMostOnce);
        put_binary(out, self.topic.as_bytes())?;
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        out.put_slice(self.payload);
        Ok(())
    }

    /// Appends the encoded PUBLISH to `out`, byte for byte what `Packet::Publish` encodes.
    /// On error `out` is left as it was.
    pub fn encode(&self, version: ProtocolVersion, out: &mut BytesMut) -> Result<(), EncodeError> {
        let remaining = self.remaining_len(version);
        let start = out.len();
        out.reserve(1 + super::wire::varint_len(remaining) + remaining);
        out.put_u8((super::PacketType::Publish as u8) << 4 | self.header_flags());
        let result =
            super::wire::put_varint(out, remaining).and_then(|()| self.write(version, out));
        if result.is_err() {
            out.truncate(start);
        }
        result
    }
}
