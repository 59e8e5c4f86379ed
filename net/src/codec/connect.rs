//! CONNECT ([MQTT-3.1]) and CONNACK ([MQTT-3.2]).

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::properties::{self, BoxedProperties, Properties};
use super::reason::{self, ReasonCode};
use super::wire::{binary_len, put_binary, Reader};
use super::{ProtocolVersion, QoS};
use crate::topic::validate_topic_name;

/// CONNECT. The protocol version is the packet's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connect {
    /// From the protocol name and level.
    pub version: ProtocolVersion,
    /// Clean Session (3.x) / Clean Start (5.0).
    pub clean_start: bool,
    /// Keep alive in seconds; 0 disables it.
    pub keep_alive: u16,
    /// MQTT 5 CONNECT properties.
    pub properties: BoxedProperties,
    /// May be empty (3.1.1 with clean session, 5.0); the broker decides whether to accept it.
    pub client_id: ByteString,
    /// The will message, if the Will flag is set.
    pub will: Option<Will>,
    /// User name, if its flag is set.
    pub username: Option<ByteString>,
    /// Password, if its flag is set.
    pub password: Option<Bytes>,
    /// The protocol level had its top bit set: a broker bridging to this one (Mosquitto's
    /// `try_private`), speaking the version in the low bits.
    pub bridge: bool,
}

/// The will message of a CONNECT.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Will {
    /// Will QoS.
    pub qos: QoS,
    /// Will Retain.
    pub retain: bool,
    /// MQTT 5 will properties (will delay interval, message expiry, ...).
    pub properties: BoxedProperties,
    /// Will topic: a valid, non-empty topic name.
    pub topic: ByteString,
    /// Will payload.
    pub payload: Bytes,
}

const FLAG_RESERVED: u8 = 0x01;
const FLAG_CLEAN: u8 = 0x02;
const FLAG_WILL: u8 = 0x04;
const FLAG_WILL_RETAIN: u8 = 0x20;
const FLAG_PASSWORD: u8 = 0x40;
const FLAG_USERNAME: u8 = 0x80;

impl Connect {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let name = r.binary()?;
        let level = r.u8()?;
        let bridge = level & 0x80 != 0;
        let level = level & 0x7F;
        let version = match (&name[..], level) {
            (b"MQIsdp", 3) => ProtocolVersion::V31,
            (b"MQTT", 4) => ProtocolVersion::V311,
            (b"MQTT", 5) => ProtocolVersion::V5,
            (b"MQTT" | b"MQIsdp", _) => return Err(DecodeError::UnsupportedProtocolVersion),
            _ => return Err(DecodeError::InvalidProtocolName),
        };
        let flags = r.u8()?;
        if flags & FLAG_RESERVED != 0 {
            return Err(DecodeError::ConnectReservedFlag);
        }
        let has_will = flags & FLAG_WILL != 0;
        let will_qos = QoS::from_bits((flags >> 3) & 0x03).ok_or(DecodeError::InvalidQos)?;
        let will_retain = flags & FLAG_WILL_RETAIN != 0;
        if !has_will && (will_qos != QoS::AtMostOnce || will_retain) {
            return Err(DecodeError::InvalidWillFlags);
        }
        let has_password = flags & FLAG_PASSWORD != 0;
        let has_username = flags & FLAG_USERNAME != 0;
        if !version.is_v5() && has_password && !has_username {
            return Err(DecodeError::PasswordWithoutUsername);
        }
        let keep_alive = r.u16()?;
        let properties = if version.is_v5() {
            Properties::decode(r, properties::CONNECT)?
        } else {
            BoxedProperties::default()
        };
        let client_id = r.string()?;
        let will = if has_will {
            let properties = if version.is_v5() {
                Properties::decode(r, properties::WILL)?
            } else {
                BoxedProperties::default()
            };
            let topic = r.string()?;
            if topic.is_empty() {
                return Err(DecodeError::EmptyTopicName);
            }
            validate_topic_name(&topic)?;
            let payload = r.binary()?;
            Some(Will {
                qos: will_qos,
                retain: will_retain,
                properties,
                topic,
                payload,
            })
        } else {
            None
        };
        let username = if has_username {
            Some(r.string()?)
        } else {
            None
        };
        let password = if has_password {
            Some(r.binary()?)
        } else {
            None
        };
        Ok(Self {
            version,
            clean_start: flags & FLAG_CLEAN != 0,
            keep_alive,
            properties,
            client_id,
            will,
            username,
            password,
            bridge,
        })
    }

    fn flags(&self) -> u8 {
        let mut flags = 0;
        if self.clean_start {
            flags |= FLAG_CLEAN;
        }
        if let Some(will) = &self.will {
            flags |= FLAG_WILL | (will.qos as u8) << 3;
            if will.retain {
                flags |= FLAG_WILL_RETAIN;
            }
        }
        if self.password.is_some() {
            flags |= FLAG_PASSWORD;
        }
        if self.username.is_some() {
            flags |= FLAG_USERNAME;
        }
        flags
    }

    pub(crate) fn remaining_len(&self) -> usize {
        let v5 = self.version.is_v5();
        let mut n = binary_len(self.version.protocol_name().as_bytes()) + 1 + 1 + 2;
        if v5 {
            n += self.properties.encoded_len();
        }
        n += binary_len(self.client_id.as_bytes());
        if let Some(will) = &self.will {
            if v5 {
                n += will.properties.encoded_len();
            }
            n += binary_len(will.topic.as_bytes()) + binary_len(&will.payload);
        }
        if let Some(u) = &self.username {
            n += binary_len(u.as_bytes());
        }
        if let Some(p) = &self.password {
            n += binary_len(p);
        }
        n
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let v5 = self.version.is_v5();
        put_binary(out, self.version.protocol_name().as_bytes())?;
        out.put_u8(self.version.level() | if self.bridge { 0x80 } else { 0 });
        out.put_u8(self.flags());
        out.put_u16(self.keep_alive);
        if v5 {
            self.properties.encode(out)?;
        }
        put_binary(out, self.client_id.as_bytes())?;
        if let Some(will) = &self.will {
            if v5 {
                will.properties.encode(out)?;
            }
            put_binary(out, will.topic.as_bytes())?;
            put_binary(out, &will.payload)?;
        }
        if let Some(u) = &self.username {
            put_binary(out, u.as_bytes())?;
        }
        if let Some(p) = &self.password {
            put_binary(out, p)?;
        }
        Ok(())
    }
}

/// CONNACK. For MQTT 3 the code is the return code (0-5, see [`ReasonCode::v3_connack`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnAck {
    /// Session Present (always false in MQTT 3.1, which has no such flag).
    pub session_present: bool,
    /// Reason code (5.0) or return code (3.x).
    pub code: ReasonCode,
    /// MQTT 5 CONNACK properties.
    pub properties: BoxedProperties,
}

impl ConnAck {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        let flags = r.u8()?;
        if flags & 0xFE != 0 {
            return Err(DecodeError::InvalidConnAckFlags);
        }
        let code = r.u8()?;
        let allowed = if version.is_v5() {
            reason::CONNACK_V5
        } else {
            reason::CONNACK_V3
        };
        if !allowed.contains(code) {
            return Err(DecodeError::InvalidReasonCode);
        }
        let properties = if version.is_v5() {
            Properties::decode(r, properties::CONNACK)?
        } else {
            BoxedProperties::default()
        };
        Ok(Self {
            session_present: flags & 1 != 0,
            code: ReasonCode(code),
            properties,
        })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        2 + if version.is_v5() {
            self.properties.encoded_len()
        } else {
            0
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        out.put_u8(u8::from(self.session_present));
        out.put_u8(self.code.0);
        if version.is_v5() {
            self.properties.encode(out)?;
        }
        Ok(())
    }
}
