//! MQTT 5 properties ([MQTT-2.2.2]): every property with its type, and which packet may carry
//! which. A property outside a packet's allowed set, or a single-valued property present twice,
//! is a protocol error; an unknown identifier is a malformed packet.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::error::{DecodeError, EncodeError};
use super::wire::{binary_len, put_binary, put_varint, varint_len, Reader};
use super::QoS;
use crate::limits::VARINT_MAX;

/// The value types of [MQTT-2.2.2.2], read and written the same way wherever they appear.
trait PropValue: Sized {
    fn read(r: &mut Reader) -> Result<Self, DecodeError>;
    fn wire_len(&self) -> usize;
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError>;
}

impl PropValue for bool {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::InvalidPropertyValue),
        }
    }
    fn wire_len(&self) -> usize {
        1
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(u8::from(*self));
        Ok(())
    }
}

impl PropValue for u16 {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u16()
    }
    fn wire_len(&self) -> usize {
        2
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(*self);
        Ok(())
    }
}

impl PropValue for NonZeroU16 {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        NonZeroU16::new(r.u16()?).ok_or(DecodeError::InvalidPropertyValue)
    }
    fn wire_len(&self) -> usize {
        2
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u16(self.get());
        Ok(())
    }
}

impl PropValue for u32 {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        r.u32()
    }
    fn wire_len(&self) -> usize {
        4
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u32(*self);
        Ok(())
    }
}

impl PropValue for NonZeroU32 {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        NonZeroU32::new(r.u32()?).ok_or(DecodeError::InvalidPropertyValue)
    }
    fn wire_len(&self) -> usize {
        4
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u32(self.get());
        Ok(())
    }
}

/// Maximum QoS in CONNACK: 0 or 1 only (2 is expressed by leaving the property out).
impl PropValue for QoS {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        match r.u8()? {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            _ => Err(DecodeError::InvalidPropertyValue),
        }
    }
    fn wire_len(&self) -> usize {
        1
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        out.put_u8(*self as u8);
        Ok(())
    }
}

impl PropValue for ByteString {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        r.string()
    }
    fn wire_len(&self) -> usize {
        binary_len(self.as_bytes())
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        put_binary(out, self.as_bytes())
    }
}

impl PropValue for Bytes {
    fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        r.binary()
    }
    fn wire_len(&self) -> usize {
        binary_len(self)
    }
    fn write(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        put_binary(out, self)
    }
}

/// A bit per property identifier (all identifiers are below 64).
pub(crate) type PropertySet = u64;

// Only evaluated in consts: an out-of-range index is a compile error, not a runtime panic.
#[allow(clippy::indexing_slicing)]
const fn set(ids: &[u8]) -> PropertySet {
    let mut bits = 0u64;
    let mut i = 0;
    while i < ids.len() {
        bits |= 1 << ids[i];
        i += 1;
    }
    bits
}

macro_rules! properties {
    ($( $(#[$doc:meta])* $id:literal $const_name:ident $field:ident: $ty:ty; )*) => {
        /// Property identifiers ([MQTT-2.2.2.2]).
        pub mod id {
            $( #[allow(missing_docs)] pub const $const_name: u8 = $id; )*
            #[allow(missing_docs)]
            pub const SUBSCRIPTION_IDENTIFIER: u8 = 0x0B;
            #[allow(missing_docs)]
            pub const USER_PROPERTY: u8 = 0x26;
        }

        /// The properties of one MQTT 5 packet (or of a will). Which fields a packet may
        /// carry is checked on decode; absent fields are `None` or empty. MQTT 3 packets
        /// always carry `Properties::default()`.
        #[derive(Clone, Debug, Default, PartialEq, Eq)]
        pub struct Properties {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
            /// 0x0B, PUBLISH (several, server to client) and SUBSCRIBE (one): 1..=268,435,455.
            pub subscription_identifiers: Vec<u32>,
            /// 0x26, any packet, any number, order kept.
            pub user_properties: Vec<(ByteString, ByteString)>,
        }

        impl Properties {
            /// No property at all.
            pub const EMPTY: Properties = Properties {
                $( $field: None, )*
                subscription_identifiers: Vec::new(),
                user_properties: Vec::new(),
            };

            /// True when no property is present (encodes as a zero property length).
            pub fn is_empty(&self) -> bool {
                $( self.$field.is_none() && )*
                    self.subscription_identifiers.is_empty() && self.user_properties.is_empty()
            }

            fn decode_value(&mut self, id: u8, r: &mut Reader) -> Result<(), DecodeError> {
                match id {
                    $( $id => self.$field = Some(<$ty as PropValue>::read(r)?), )*
                    id::SUBSCRIPTION_IDENTIFIER => {
                        let value = r.varint()?;
                        if value == 0 || value > VARINT_MAX {
                            return Err(DecodeError::InvalidPropertyValue);
                        }
                        self.subscription_identifiers.push(value);
                    }
                    id::USER_PROPERTY => {
                        let key = r.string()?;
                        let value = r.string()?;
                        self.user_properties.push((key, value));
                    }
                    _ => return Err(DecodeError::UnknownProperty),
                }
                Ok(())
            }

            /// Bytes of the property block, without its length prefix.
            pub(crate) fn content_len(&self) -> usize {
                let mut n = 0;
                $( if let Some(v) = &self.$field { n += 1 + v.wire_len(); } )*
                for v in &self.subscription_identifiers {
                    n += 1 + varint_len(*v as usize);
                }
                for (k, v) in &self.user_properties {
                    n += 1 + binary_len(k.as_bytes()) + binary_len(v.as_bytes());
                }
                n
            }

            fn write_content(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
                $( if let Some(v) = &self.$field { out.put_u8($id); v.write(out)?; } )*
                for v in &self.subscription_identifiers {
                    out.put_u8(id::SUBSCRIPTION_IDENTIFIER);
                    put_varint(out, *v as usize)?;
                }
                for (k, v) in &self.user_properties {
                    out.put_u8(id::USER_PROPERTY);
                    put_binary(out, k.as_bytes())?;
                    put_binary(out, v.as_bytes())?;
                }
                Ok(())
            }

            /// Drops every property `allowed` does not permit (test generators).
            #[cfg(test)]
            pub(crate) fn retain(&mut self, allowed: Allowed) {
                $( if allowed.set & (1 << $id) == 0 { self.$field = None; } )*
                if allowed.set & (1 << id::SUBSCRIPTION_IDENTIFIER) == 0 {
                    self.subscription_identifiers.clear();
                } else if !allowed.many_subscription_ids {
                    self.subscription_identifiers.truncate(1);
                }
                if allowed.set & (1 << id::USER_PROPERTY) == 0 {
                    self.user_properties.clear();
                }
            }
        }

        const KNOWN: PropertySet =
            set(&[$( $id, )* id::SUBSCRIPTION_IDENTIFIER, id::USER_PROPERTY]);
    };
}

properties! {
    /// 0x01, PUBLISH and will: 0 unspecified bytes, 1 UTF-8 payload.
    0x01 PAYLOAD_FORMAT_INDICATOR payload_format_indicator: bool;
    /// 0x02, PUBLISH and will: seconds the message may live.
    0x02 MESSAGE_EXPIRY_INTERVAL message_expiry_interval: u32;
    /// 0x03, PUBLISH and will.
    0x03 CONTENT_TYPE content_type: ByteString;
    /// 0x08, PUBLISH and will.
    0x08 RESPONSE_TOPIC response_topic: ByteString;
    /// 0x09, PUBLISH and will.
    0x09 CORRELATION_DATA correlation_data: Bytes;
    /// 0x11, CONNECT, CONNACK, DISCONNECT: seconds.
    0x11 SESSION_EXPIRY_INTERVAL session_expiry_interval: u32;
    /// 0x12, CONNACK.
    0x12 ASSIGNED_CLIENT_IDENTIFIER assigned_client_identifier: ByteString;
    /// 0x13, CONNACK: seconds.
    0x13 SERVER_KEEP_ALIVE server_keep_alive: u16;
    /// 0x15, CONNECT, CONNACK, AUTH.
    0x15 AUTHENTICATION_METHOD authentication_method: ByteString;
    /// 0x16, CONNECT, CONNACK, AUTH.
    0x16 AUTHENTICATION_DATA authentication_data: Bytes;
    /// 0x17, CONNECT.
    0x17 REQUEST_PROBLEM_INFORMATION request_problem_information: bool;
    /// 0x18, will: seconds.
    0x18 WILL_DELAY_INTERVAL will_delay_interval: u32;
    /// 0x19, CONNECT.
    0x19 REQUEST_RESPONSE_INFORMATION request_response_information: bool;
    /// 0x1A, CONNACK.
    0x1A RESPONSE_INFORMATION response_information: ByteString;
    /// 0x1C, CONNACK, DISCONNECT.
    0x1C SERVER_REFERENCE server_reference: ByteString;
    /// 0x1F, CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, AUTH.
    0x1F REASON_STRING reason_string: ByteString;
    /// 0x21, CONNECT, CONNACK: non-zero.
    0x21 RECEIVE_MAXIMUM receive_maximum: NonZeroU16;
    /// 0x22, CONNECT, CONNACK.
    0x22 TOPIC_ALIAS_MAXIMUM topic_alias_maximum: u16;
    /// 0x23, PUBLISH: non-zero.
    0x23 TOPIC_ALIAS topic_alias: NonZeroU16;
    /// 0x24, CONNACK: 0 or 1.
    0x24 MAXIMUM_QOS maximum_qos: QoS;
    /// 0x25, CONNACK.
    0x25 RETAIN_AVAILABLE retain_available: bool;
    /// 0x27, CONNECT, CONNACK: non-zero bytes.
    0x27 MAXIMUM_PACKET_SIZE maximum_packet_size: NonZeroU32;
    /// 0x28, CONNACK.
    0x28 WILDCARD_SUBSCRIPTION_AVAILABLE wildcard_subscription_available: bool;
    /// 0x29, CONNACK.
    0x29 SUBSCRIPTION_IDENTIFIER_AVAILABLE subscription_identifier_available: bool;
    /// 0x2A, CONNACK.
    0x2A SHARED_SUBSCRIPTION_AVAILABLE shared_subscription_available: bool;
}

static EMPTY: Properties = Properties::EMPTY;

/// The properties of a packet, kept out of line so that packets stay small (a PUBLISH is moved
/// through the decoder, the router and the outbox by value): no properties costs no allocation,
/// any property one `Box`. Reads go through `Deref` to [`Properties`]; the first write through
/// `DerefMut` allocates.
#[derive(Clone, Default)]
pub struct BoxedProperties(Option<Box<Properties>>);

impl BoxedProperties {
    /// The PUBLISH properties as on the wire (property length first), for storage; empty
    /// for none.
    pub fn to_publish_wire(&self) -> Vec<u8> {
        if self.is_empty() {
            return Vec::new();
        }
        let mut out = BytesMut::with_capacity(self.encoded_len());
        if self.encode(&mut out).is_err() {
            return Vec::new();
        }
        out.to_vec()
    }

    /// Reads PUBLISH properties stored with [`BoxedProperties::to_publish_wire`].
    pub fn from_publish_wire(bytes: &[u8]) -> Result<Self, DecodeError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        let mut r = Reader::new(bytes::Bytes::copy_from_slice(bytes));
        let p = Properties::decode(&mut r, PUBLISH)?;
        if !r.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(p)
    }

    /// True when no property is present. Inherent (not through `Deref`) so the common empty
    /// case is one branch rather than a look at every field.
    pub fn is_empty(&self) -> bool {
        self.0.as_deref().is_none_or(Properties::is_empty)
    }

    /// Bytes of the property length prefix plus the block.
    pub(crate) fn encoded_len(&self) -> usize {
        self.0.as_deref().map_or(1, Properties::encoded_len)
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        match self.0.as_deref() {
            None => {
                out.put_u8(0);
                Ok(())
            }
            Some(p) => p.encode(out),
        }
    }

    /// Takes the properties out, leaving none.
    pub fn take(&mut self) -> Properties {
        self.0.take().map(|b| *b).unwrap_or_default()
    }
}

impl std::ops::Deref for BoxedProperties {
    type Target = Properties;
    fn deref(&self) -> &Properties {
        self.0.as_deref().unwrap_or(&EMPTY)
    }
}

impl std::ops::DerefMut for BoxedProperties {
    fn deref_mut(&mut self) -> &mut Properties {
        self.0.get_or_insert_with(Default::default)
    }
}

impl From<Properties> for BoxedProperties {
    fn from(p: Properties) -> Self {
        if p.is_empty() {
            Self(None)
        } else {
            Self(Some(Box::new(p)))
        }
    }
}

impl PartialEq for BoxedProperties {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl Eq for BoxedProperties {}

impl std::fmt::Debug for BoxedProperties {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            f.write_str("Properties {}")
        } else {
            (**self).fmt(f)
        }
    }
}

/// Which properties each packet may carry ([MQTT-2.2.2.2], the table of property identifiers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Allowed {
    pub(crate) set: PropertySet,
    /// PUBLISH may carry several subscription identifiers; SUBSCRIBE only one.
    pub(crate) many_subscription_ids: bool,
}

use id::*;

const fn allowed(ids: &[u8]) -> Allowed {
    Allowed {
        set: set(ids) | (1 << USER_PROPERTY),
        many_subscription_ids: false,
    }
}

pub(crate) const CONNECT: Allowed = allowed(&[
    SESSION_EXPIRY_INTERVAL,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    REQUEST_PROBLEM_INFORMATION,
    REQUEST_RESPONSE_INFORMATION,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    MAXIMUM_PACKET_SIZE,
]);
pub(crate) const WILL: Allowed = allowed(&[
    PAYLOAD_FORMAT_INDICATOR,
    MESSAGE_EXPIRY_INTERVAL,
    CONTENT_TYPE,
    RESPONSE_TOPIC,
    CORRELATION_DATA,
    WILL_DELAY_INTERVAL,
]);
pub(crate) const CONNACK: Allowed = allowed(&[
    SESSION_EXPIRY_INTERVAL,
    ASSIGNED_CLIENT_IDENTIFIER,
    SERVER_KEEP_ALIVE,
    AUTHENTICATION_METHOD,
    AUTHENTICATION_DATA,
    RESPONSE_INFORMATION,
    SERVER_REFERENCE,
    REASON_STRING,
    RECEIVE_MAXIMUM,
    TOPIC_ALIAS_MAXIMUM,
    MAXIMUM_QOS,
    RETAIN_AVAILABLE,
    MAXIMUM_PACKET_SIZE,
    WILDCARD_SUBSCRIPTION_AVAILABLE,
    SUBSCRIPTION_IDENTIFIER_AVAILABLE,
    SHARED_SUBSCRIPTION_AVAILABLE,
]);
pub(crate) const PUBLISH: Allowed = Allowed {
    set: allowed(&[
        PAYLOAD_FORMAT_INDICATOR,
        MESSAGE_EXPIRY_INTERVAL,
        CONTENT_TYPE,
        RESPONSE_TOPIC,
        CORRELATION_DATA,
        SUBSCRIPTION_IDENTIFIER,
        TOPIC_ALIAS,
    ])
    .set,
    many_subscription_ids: true,
};
/// PUBACK, PUBREC, PUBREL, PUBCOMP, SUBACK, UNSUBACK.
pub(crate) const ACK: Allowed = allowed(&[REASON_STRING]);
pub(crate) const SUBSCRIBE: Allowed = allowed(&[SUBSCRIPTION_IDENTIFIER]);
pub(crate) const UNSUBSCRIBE: Allowed = allowed(&[]);
pub(crate) const DISCONNECT: Allowed =
    allowed(&[SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING]);
pub(crate) const AUTH: Allowed =
    allowed(&[AUTHENTICATION_METHOD, AUTHENTICATION_DATA, REASON_STRING]);

impl Properties {
    /// Reads a property length and the block it covers, enforcing `allowed`. An empty block
    /// (the common case) allocates nothing.
    pub(crate) fn decode(r: &mut Reader, allowed: Allowed) -> Result<BoxedProperties, DecodeError> {
        let len = r.varint()?;
        if len == 0 {
            return Ok(BoxedProperties::default());
        }
        let mut props = Properties::default();
        let mut block = r.sub(len as usize)?;
        let mut seen: PropertySet = 0;
        while !block.is_empty() {
            let raw_id = block.varint()?;
            let Ok(id) = u8::try_from(raw_id) else {
                return Err(DecodeError::UnknownProperty);
            };
            let bit = 1u64.checked_shl(u32::from(id)).unwrap_or(0);
            if bit & KNOWN == 0 {
                return Err(DecodeError::UnknownProperty);
            }
            if bit & allowed.set == 0 {
                return Err(DecodeError::PropertyNotAllowed);
            }
            let repeatable = id == USER_PROPERTY
                || (id == SUBSCRIPTION_IDENTIFIER && allowed.many_subscription_ids);
            if seen & bit != 0 && !repeatable {
                return Err(DecodeError::DuplicateProperty);
            }
            seen |= bit;
            props.decode_value(id, &mut block)?;
        }
        Ok(BoxedProperties(Some(Box::new(props))))
    }

    /// Bytes of the property length prefix plus the block.
    pub(crate) fn encoded_len(&self) -> usize {
        let n = self.content_len();
        varint_len(n) + n
    }

    pub(crate) fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        put_varint(out, self.content_len())?;
        self.write_content(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &'static [u8], allowed: Allowed) -> Result<BoxedProperties, DecodeError> {
        Properties::decode(&mut Reader::new(Bytes::from_static(bytes)), allowed)
    }

    #[test]
    fn forbidden_duplicate_unknown() {
        // Topic alias in CONNECT: not allowed.
        assert_eq!(
            decode(&[3, 0x23, 0, 1], CONNECT),
            Err(DecodeError::PropertyNotAllowed)
        );
        // Session expiry twice.
        assert_eq!(
            decode(&[10, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2], CONNECT),
            Err(DecodeError::DuplicateProperty)
        );
        // Unknown identifier 0x04.
        assert_eq!(
            decode(&[2, 0x04, 0], PUBLISH),
            Err(DecodeError::UnknownProperty)
        );
        // Receive maximum 0.
        assert_eq!(
            decode(&[3, 0x21, 0, 0], CONNECT),
            Err(DecodeError::InvalidPropertyValue)
        );
        // Request problem information 2.
        assert_eq!(
            decode(&[2, 0x17, 2], CONNECT),
            Err(DecodeError::InvalidPropertyValue)
        );
        // Subscription identifier 0.
        assert_eq!(
            decode(&[2, 0x0B, 0], SUBSCRIBE),
            Err(DecodeError::InvalidPropertyValue)
        );
        // Two subscription identifiers: fine in PUBLISH, not in SUBSCRIBE.
        assert_eq!(
            decode(&[4, 0x0B, 1, 0x0B, 2], PUBLISH)
                .unwrap()
                .subscription_identifiers,
            vec![1, 2]
        );
        assert_eq!(
            decode(&[4, 0x0B, 1, 0x0B, 2], SUBSCRIBE),
            Err(DecodeError::DuplicateProperty)
        );
        // Length that overruns.
        assert_eq!(decode(&[5, 0x11, 0], CONNECT), Err(DecodeError::Overrun));
        // Value that overruns the block but not the packet.
        assert_eq!(
            Properties::decode(
                &mut Reader::new(Bytes::from_static(&[2, 0x11, 0, 0, 0, 0])),
                CONNECT
            ),
            Err(DecodeError::Overrun)
        );
    }

    #[test]
    fn user_properties_repeat_in_order() {
        let p = decode(&[12, 0x26, 0, 1, b'a', 0, 0, 0x26, 0, 1, b'a', 0, 0], ACK).unwrap();
        assert_eq!(p.user_properties.len(), 2);
    }
}
