//! DISCONNECT ([MQTT-3.14]) and AUTH ([MQTT-3.15]), and the optional "reason code then
//! properties" tail they share with the publish responses: both omitted on the wire when they
//! are "success, no properties".

use bytes::{BufMut, BytesMut};

use super::error::{DecodeError, EncodeError};
use super::properties::{self, Allowed, BoxedProperties, Properties};
use super::reason::{self, ReasonCode, ReasonSet};
use super::wire::Reader;
use super::ProtocolVersion;

/// DISCONNECT. MQTT 3 DISCONNECT has no body: reason success, no properties.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Disconnect {
    /// MQTT 5 reason code (0x00 normal, 0x04 with will, errors).
    pub reason: ReasonCode,
    /// MQTT 5 properties (session expiry interval, reason string, server reference).
    pub properties: BoxedProperties,
}

/// AUTH (MQTT 5 only): enhanced authentication exchange.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Auth {
    /// 0x00 success, 0x18 continue authentication, 0x19 re-authenticate.
    pub reason: ReasonCode,
    /// Authentication method and data, reason string, user properties.
    pub properties: BoxedProperties,
}

impl Default for ReasonCode {
    fn default() -> Self {
        Self::SUCCESS
    }
}

/// Reads the optional reason code and properties shared by DISCONNECT and AUTH.
pub(crate) fn decode_reason_and_properties(
    r: &mut Reader,
    codes: ReasonSet,
    allowed: Allowed,
) -> Result<(ReasonCode, BoxedProperties), DecodeError> {
    if r.is_empty() {
        return Ok((ReasonCode::SUCCESS, BoxedProperties::default()));
    }
    let code = r.u8()?;
    if !codes.contains(code) {
        return Err(DecodeError::InvalidReasonCode);
    }
    let props = if r.is_empty() {
        BoxedProperties::default()
    } else {
        Properties::decode(r, allowed)?
    };
    Ok((ReasonCode(code), props))
}

pub(crate) fn reason_and_properties_len(reason: ReasonCode, props: &Properties) -> usize {
    if !props.is_empty() {
        1 + props.encoded_len()
    } else if reason != ReasonCode::SUCCESS {
        1
    } else {
        0
    }
}

pub(crate) fn write_reason_and_properties(
    reason: ReasonCode,
    props: &Properties,
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    if !props.is_empty() {
        out.put_u8(reason.0);
        props.encode(out)?;
    } else if reason != ReasonCode::SUCCESS {
        out.put_u8(reason.0);
    }
    Ok(())
}

impl Disconnect {
    pub(crate) fn decode(r: &mut Reader, version: ProtocolVersion) -> Result<Self, DecodeError> {
        if !version.is_v5() {
            return Ok(Self::default());
        }
        let (reason, properties) =
            decode_reason_and_properties(r, reason::DISCONNECT_V5, properties::DISCONNECT)?;
        Ok(Self { reason, properties })
    }

    pub(crate) fn remaining_len(&self, version: ProtocolVersion) -> usize {
        if version.is_v5() {
            reason_and_properties_len(self.reason, &self.properties)
        } else {
            0
        }
    }

    pub(crate) fn write(
        &self,
        version: ProtocolVersion,
        out: &mut BytesMut,
    ) -> Result<(), EncodeError> {
        if version.is_v5() {
            write_reason_and_properties(self.reason, &self.properties, out)?;
        }
        Ok(())
    }
}

impl Auth {
    pub(crate) fn decode(r: &mut Reader) -> Result<Self, DecodeError> {
        let (reason, properties) =
            decode_reason_and_properties(r, reason::AUTH_V5, properties::AUTH)?;
        Ok(Self { reason, properties })
    }

    pub(crate) fn remaining_len(&self) -> usize {
        reason_and_properties_len(self.reason, &self.properties)
    }

    pub(crate) fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        write_reason_and_properties(self.reason, &self.properties, out)
    }
}
