//! Codec errors. A [`DecodeError`] is a small `Copy` value naming the spec rule it enforces and
//! the MQTT 5 reason code the broker sends for it (in CONNACK or DISCONNECT, or by closing the
//! connection for MQTT 3).

use super::reason::ReasonCode;

macro_rules! decode_errors {
    ($( $(#[$doc:meta])* $name:ident => $rule:literal, $code:ident, $msg:literal; )*) => {
        /// Why a packet could not be decoded. Every variant names the rule of the MQTT 5.0 (or
        /// 3.1.1) specification it enforces; see [`DecodeError::rule`] and
        /// [`DecodeError::reason_code`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum DecodeError {
            $( $(#[$doc])* $name, )*
        }

        impl DecodeError {
            /// The spec rule this error enforces, e.g. `"MQTT-3.3.2-2"`.
            pub const fn rule(self) -> &'static str {
                match self { $( Self::$name => $rule, )* }
            }

            /// The reason code to send to the peer (MQTT 5 CONNACK or DISCONNECT).
            pub const fn reason_code(self) -> ReasonCode {
                match self { $( Self::$name => ReasonCode::$code, )* }
            }

            const fn message(self) -> &'static str {
                match self { $( Self::$name => $msg, )* }
            }
        }
    };
}

decode_errors! {
    /// A variable byte integer longer than four bytes or not minimally encoded.
    MalformedVarint => "MQTT-1.5.5-1", MALFORMED_PACKET, "malformed variable byte integer";
    /// The declared packet size exceeds the configured maximum.
    PacketTooLarge => "MQTT-3.1.2-24", PACKET_TOO_LARGE, "packet exceeds the maximum packet size";
    /// Packet type 0, or AUTH (15) before MQTT 5.
    ReservedPacketType => "MQTT-2.1.2", MALFORMED_PACKET, "reserved packet type";
    /// Fixed header flags that the packet type reserves.
    InvalidHeaderFlags => "MQTT-2.1.3-1", MALFORMED_PACKET, "invalid fixed header flags";
    /// A length field runs past the end of the packet.
    Overrun => "MQTT-1.5", MALFORMED_PACKET, "a length runs past the end of the packet";
    /// Bytes left over after the packet's last field.
    TrailingBytes => "MQTT-2.1.4", MALFORMED_PACKET, "unexpected bytes after the last field";
    /// A UTF-8 string that is not valid UTF-8 (including encoded surrogates).
    InvalidUtf8 => "MQTT-1.5.4-1", MALFORMED_PACKET, "string is not valid UTF-8";
    /// A UTF-8 string containing U+0000.
    NullCharacter => "MQTT-1.5.4-2", MALFORMED_PACKET, "string contains U+0000";
    /// QoS 3 in a PUBLISH, will or subscription.
    InvalidQos => "MQTT-3.3.1-4", MALFORMED_PACKET, "QoS 3 is not a valid QoS";
    /// DUP set on a QoS 0 PUBLISH.
    DupWithQos0 => "MQTT-3.3.1-2", MALFORMED_PACKET, "DUP must be 0 for QoS 0";
    /// A topic name with `+` or `#`.
    WildcardInTopicName => "MQTT-3.3.2-2", TOPIC_NAME_INVALID, "topic name contains a wildcard";
    /// An empty topic name without a topic alias.
    EmptyTopicName => "MQTT-4.7.3-1", PROTOCOL_ERROR, "topic name is empty";
    /// A topic filter that breaks the wildcard rules or is empty.
    InvalidTopicFilter => "MQTT-4.7.1-1", TOPIC_FILTER_INVALID, "invalid topic filter";
    /// A `$share` filter without a valid group and filter.
    InvalidSharedSubscription => "MQTT-4.8.2-1", TOPIC_FILTER_INVALID,
        "invalid shared subscription filter";
    /// No Local set on a shared subscription.
    NoLocalOnSharedSubscription => "MQTT-3.8.3-4", PROTOCOL_ERROR,
        "no local on a shared subscription";
    /// Packet identifier 0 where a non-zero one is required.
    PacketIdZero => "MQTT-2.2.1-3", PROTOCOL_ERROR, "packet identifier must be non-zero";
    /// SUBSCRIBE or UNSUBSCRIBE without topic filters, SUBACK/UNSUBACK without reason codes.
    EmptyPayload => "MQTT-3.8.3-3", PROTOCOL_ERROR, "the packet must carry at least one entry";
    /// Reserved bits of subscription options set.
    InvalidSubscriptionOptions => "MQTT-3.8.3-5", MALFORMED_PACKET,
        "reserved subscription option bits set";
    /// Retain Handling 3.
    InvalidRetainHandling => "MQTT-3.8.3.1", PROTOCOL_ERROR, "retain handling 3 is not valid";
    /// CONNECT with a protocol name other than `MQTT` / `MQIsdp`.
    InvalidProtocolName => "MQTT-3.1.2-1", UNSUPPORTED_PROTOCOL_VERSION, "unknown protocol name";
    /// CONNECT with a protocol level this broker does not speak.
    UnsupportedProtocolVersion => "MQTT-3.1.2-2", UNSUPPORTED_PROTOCOL_VERSION,
        "unsupported protocol level";
    /// The reserved bit of the CONNECT flags set.
    ConnectReservedFlag => "MQTT-3.1.2-3", MALFORMED_PACKET, "CONNECT reserved flag set";
    /// Will QoS or Will Retain set without the Will flag.
    InvalidWillFlags => "MQTT-3.1.2-11", MALFORMED_PACKET, "will QoS/retain set without a will";
    /// MQTT 3: a password without a user name.
    PasswordWithoutUsername => "MQTT-3.1.2-22", MALFORMED_PACKET,
        "password flag set without user name flag";
    /// A property identifier that MQTT 5 does not define.
    UnknownProperty => "MQTT-2.2.2", MALFORMED_PACKET, "unknown property identifier";
    /// A property this packet may not carry.
    PropertyNotAllowed => "MQTT-2.2.2", PROTOCOL_ERROR, "property not allowed in this packet";
    /// A property present twice that may appear once.
    DuplicateProperty => "MQTT-2.2.2", PROTOCOL_ERROR, "property included more than once";
    /// A property value out of its range (0 where it must be non-zero, a flag not 0 or 1).
    InvalidPropertyValue => "MQTT-2.2.2", PROTOCOL_ERROR, "property value out of range";
    /// A reason code this packet may not carry.
    InvalidReasonCode => "MQTT-2.4", MALFORMED_PACKET, "reason code not valid for this packet";
    /// CONNACK acknowledge flags with reserved bits set.
    InvalidConnAckFlags => "MQTT-3.2.2-1", MALFORMED_PACKET, "CONNACK reserved flags set";
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{}] {}", self.rule(), self.message())
    }
}

impl std::error::Error for DecodeError {}

/// Why a packet could not be encoded. These are caller mistakes (a field too long for the wire
/// format), never the peer's; the output buffer is left as it was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The packet's remaining length exceeds 268,435,455 bytes.
    #[error("packet too large to encode")]
    PacketTooLarge,
    /// A string or binary field longer than 65,535 bytes.
    #[error("string or binary field longer than 65535 bytes")]
    FieldTooLong,
    /// A packet that does not exist in the target protocol version (AUTH before MQTT 5).
    #[error("packet type not available in this protocol version")]
    NotInVersion,
}
