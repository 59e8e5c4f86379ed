//! SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK ([MQTT-3.8] to [MQTT-3.11]).

use bytes::{BufMut, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::properties::{self, BoxedProperties, Properties};
use super::reason::{self, ReasonCode};
use super::wire::{binary_len, put_binary, Reader};
use super::{PacketId, ProtocolVersion, QoS};
use crate::topic::{is_shared, validate_topic_filter};

/// Retain Handling of a subscription ([MQTT-3.8.3.1]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum RetainHandling {
    /// 0: send retained messages at the time of the subscribe.
    #[default]
    OnSubscribe,
    /// 1: send them only if the subscription did not exist.
    OnNewSubscription,
    /// 2: do not send them.
    Never,
}

/// Subscription options. MQTT 3 carries only the QoS; the rest keep their defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// Maximum QoS granted for the subscription.
    pub qos: QoS,
    /// Do not deliver the client's own publishes back to it.
    pub no_local: bool,
    /// Keep the RETAIN flag as published when forwarding.
    pub retain_as_published: bool,
    /// When to send retained messages.
    pub retain_handling: RetainHandling,
}

impl SubscriptionOptions {
    /// Options with only a QoS, as MQTT 3 subscribes.
    pub const fn qos(qos: QoS) -> Self {
        Self {
            qos,
            no_local: false,
            retain_as_published: false,
            retain_handling: RetainHandling::OnSubscribe,
        }
    }

    /// The options from their MQTT 5 wire byte (as the broker stores them).
    pub fn from_byte(byte: u8) -> Result<Self, DecodeError> {
        Self::decode(byte, ProtocolVersion::V5)
    }

    /// The options as their MQTT 5 wire byte (every option kept).
    pub fn to_byte(self) -> u8 {
        self.encode(ProtocolVersion::V5)
    }

    fn decode(byte: u8, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let qos = QoS::from_bits(byte & 0x03).ok_or(DecodeError::InvalidQos)?;
        if !version.is_v5() {
            if byte & 0xFC != 0 {
                return Err(DecodeError::InvalidSubscriptionOptions);
            }
            return Ok(Self::qos(qos));
        }
        if byte & 0xC0 != 0 {
            return Err(DecodeError::InvalidSubscriptionOptions);
        }
        let retain_handling = match (byte >> 4) & 0x03 {
            0 => RetainHandling::OnSubscribe,
            1 => RetainHandling::OnNewSubscription,
            2 => RetainHandling::Never,
            _ => return Err(DecodeError::InvalidRetainHandling),
        };
        Ok(Self {
            qos,
            no_local: byte & 0x04 != 0,
            retain_as_published: byte & 0x08 != 0,
            retain_handling,
        })
    }

    fn encode(self, version: ProtocolVersion) -> u8 {
        let mut byte = self.qos as u8;
        if version.is_v5() {
            byte |= u8::from(self.no_local) << 2
                | u8::from(self.retain_as_published) << 3
                | (self.retain_handling as u8) << 4;
        }
        byte
    }
}

/// SUBSCRIBE: at least one topic filter with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties: at most one subscription identifier, user properties.
    pub properties: BoxedProperties,
    /// Valid topic filters (shared ones included) with their options.
    pub filters: Vec<(ByteString, SubscriptionOptions)>,
}

/// SUBACK: one reason code per filter of the SUBSCRIBE, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubAck {
    /// Packet identifier of the SUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties: reason string, user properties.
    pub properties: BoxedProperties,
    /// Granted QoS or failure, per filter (MQTT 3: 0, 1, 2 or 0x80).
    pub reasons: Vec<ReasonCode>,
}

/// UNSUBSCRIBE: at least one topic filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unsubscribe {
    /// Packet identifier.
    pub packet_id: PacketId,
    /// MQTT 5 properties: user properties.
    pub properties: BoxedProperties,
    /// Valid topic filters.
    pub filters: Vec<ByteString>,
}

/// UNSUBACK. MQTT 3 carries only the packet identifier (`reasons` empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubAck {
    /// Packet identifier of the UNSUBSCRIBE.
    pub packet_id: PacketId,
    /// MQTT 5 properties: reason string, user properties.
    pub properties: BoxedProperties,
    /// MQTT 5: one reason code per filter.
    pub reasons: Vec<ReasonCode>,
}

fn decode_filter(r: &mut Reader) -> Result<ByteString, DecodeError> {
    let filter = r.string()?;
    validate_topic_filter(&filter)?;
    Ok(filter)
}

fn v5_properties(
    r: &mut Reader,
    version: ProtocolVersion,
    allowed: properties::Allowed,
) -> Result<BoxedProperties, DecodeError> {
    if version.is_v5() {
        Properties::decode(r, allowed)
    } else {
        Ok(BoxedProperties::default())
    }
}

fn v5_properties_len(props: &Properties, version: ProtocolVersion) -> usize {
    if version.is_v5() {
        props.encoded_len()
    } else {
        0
    }
}

/// Reads reason codes to the end of the packet: at least one, each in `codes`.
fn decode_reasons(
    r: &mut Reader,
    codes: reason::ReasonSet,
) -> Result<Vec<ReasonCode>, DecodeError> {
    let raw = r.rest();
    if raw.is_empty() {
        return Err(DecodeError::EmptyPayload);
    }
    raw.iter()
        .map(|&c| {
            if codes.contains(c) {
                Ok(ReasonCode(c))
            } else {
                Err(DecodeError::InvalidReasonCode)
            }
        })
        .collect()
}

impl Subscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = v5_properties(r, version, properties::SUBSCRIBE)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            let filter = decode_filter(r)?;
            let options = SubscriptionOptions::decode(r.u8()?, version)?;
            if options.no_local && is_shared(&filter) {
                return Err(DecodeError::NoLocalOnSharedSubscription);
            }
            filters.push((filter, options));
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyPayload);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + v5_properties_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|(f, _)| binary_len(f.as_bytes()) + 1)
                .sum::<usize>()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        for (filter, options) in &self.filters {
            put_binary(out, filter.as_bytes())?;
            out.put_u8(options.encode(version));
        }
        Ok(())
    }
}

impl SubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = v5_properties(r, version, properties::ACK)?;
        let codes = if version.is_v5() {
            reason::SUBACK_V5
        } else {
            reason::SUBACK_V3
        };
        let reasons = decode_reasons(r, codes)?;
        Ok(Self {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + v5_properties_len(&self.properties, version) + self.reasons.len()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        for reason in &self.reasons {
            out.put_u8(reason.0);
        }
        Ok(())
    }
}

impl Unsubscribe {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        let properties = v5_properties(r, version, properties::UNSUBSCRIBE)?;
        let mut filters = Vec::new();
        while !r.is_empty() {
            filters.push(decode_filter(r)?);
        }
        if filters.is_empty() {
            return Err(DecodeError::EmptyPayload);
        }
        Ok(Self {
            packet_id,
            properties,
            filters,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + v5_properties_len(&self.properties, version)
            + self
                .filters
                .iter()
                .map(|f| binary_len(f.as_bytes()))
                .sum::<usize>()
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u16(self.packet_id.get());
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        for filter in &self.filters {
            put_binary(out, filter.as_bytes())?;
        }
        Ok(())
    }
}

impl UnsubAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let packet_id = r.packet_id()?;
        if !version.is_v5() {
            return Ok(Self {
                packet_id,
                properties: BoxedProperties::default(),
                reasons: Vec::new(),
            });
        }
        let properties = Properties::decode(r, properties::ACK)?;
        let reasons = decode_reasons(r, reason::UNSUBACK_V5)?;
        Ok(Self {
            packet_id,
            properties,
            reasons,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            2 + self.properties.encoded_len() + self.reasons.len()
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
            self.properties.encode(out)?;
            for reason in &self.reasons {
                out.put_u8(reason.0);
            }
        }
        Ok(())
    }
}
