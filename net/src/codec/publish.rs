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

    pub(crate) fn header_flags(&self) -> u8 {
        u8::from(self.dup) << 3 | (self.qos as u8) << 1 | u8::from(self.retain)
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        let mut n = binary_len(self.topic.as_bytes()) + self.payload.len();
        if self.packet_id.is_some() {
            n += 2;
        }
        if version.is_v5() {
            n += self.properties.encoded_len();
        }
        n
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        debug_assert_eq!(self.packet_id.is_some(), self.qos != QoS::AtMostOnce);
        put_binary(out, self.topic.as_bytes())?;
        if let Some(id) = self.packet_id {
            out.put_u16(id.get());
        }
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        out.put_slice(&self.payload);
        Ok(())
    }
}
