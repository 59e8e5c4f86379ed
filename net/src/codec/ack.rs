//! PUBACK, PUBREC, PUBREL and PUBCOMP ([MQTT-3.4] to [MQTT-3.7]): one shape, four types.

use bytes::{BufMut, BytesMut};

use super::control::{
    decode_reason_and_properties, reason_and_properties_len, write_reason_and_properties,
};
use super::error::{DecodeError, EncodeError};
use super::properties::{self, BoxedProperties};
use super::reason::{self, ReasonCode};
use super::wire::Reader;
use super::{PacketId, PacketType, ProtocolVersion};

/// Which of the four publish responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PubRespKind {
    /// QoS 1 acknowledgement.
    PubAck,
    /// QoS 2, part 1.
    PubRec,
    /// QoS 2, part 2.
    PubRel,
    /// QoS 2, part 3.
    PubComp,
}

impl PubRespKind {
    /// The packet type this kind is sent as.
    pub fn packet_type(self) -> PacketType {
        match self {
            Self::PubAck => PacketType::PubAck,
            Self::PubRec => PacketType::PubRec,
            Self::PubRel => PacketType::PubRel,
            Self::PubComp => PacketType::PubComp,
        }
    }
}

/// A publish response. In MQTT 3 the reason is always success and there are no properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PubResp {
    /// PUBACK, PUBREC, PUBREL or PUBCOMP.
    pub kind: PubRespKind,
    /// The PUBLISH (or PUBREL) being answered.
    pub packet_id: PacketId,
    /// MQTT 5 reason code.
    pub reason: ReasonCode,
    /// MQTT 5 properties (reason string, user properties).
    pub properties: BoxedProperties,
}

impl PubResp {
    /// A successful response without properties: the common case.
    pub fn new(kind: PubRespKind, packet_id: PacketId) -> Self {
        Self {
            kind,
            packet_id,
            reason: ReasonCode::SUCCESS,
            properties: BoxedProperties::default(),
        }
    }

    pub(crate) fn decode(
        kind: PubRespKind,
        r: &mut Reader,
        version: ProtocolVersion,
    ) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() {
            return Ok(Self::new(kind, packet_id));
        }
        let codes = match kind {
            PubRespKind::PubAck | PubRespKind::PubRec => reason::PUBACK_PUBREC,
            PubRespKind::PubRel | PubRespKind::PubComp => reason::PUBREL_PUBCOMP,
        };
        let (reason, properties) = decode_reason_and_properties(r, codes, properties::ACK)?;
        Ok(Self {
            kind,
            packet_id,
            reason,
            properties,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + reason_and_properties_len(self.reason, &self.properties)
        } else {
            2
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            write_reason_and_properties(self.reason, &self.properties, out)?;
        }
        Ok(())
    }
}
