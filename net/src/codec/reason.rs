//! MQTT 5 reason codes ([MQTT-2.4]) and the sets each packet may carry. MQTT 3.1/3.1.1 return
//! codes (CONNACK 0-5, SUBACK 0/1/2/0x80) travel in the same newtype.

/// A reason code byte. MQTT 3 CONNACK return codes and SUBACK return codes use it too; the
/// `v3_*` helpers translate the MQTT 5 codes the broker decides on into what a v3 client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReasonCode(pub u8);

#[allow(missing_docs)]
impl ReasonCode {
    pub const SUCCESS: Self = Self(0x00);
    pub const NORMAL_DISCONNECTION: Self = Self(0x00);
    pub const GRANTED_QOS_0: Self = Self(0x00);
    pub const GRANTED_QOS_1: Self = Self(0x01);
    pub const GRANTED_QOS_2: Self = Self(0x02);
    pub const DISCONNECT_WITH_WILL_MESSAGE: Self = Self(0x04);
    pub const NO_MATCHING_SUBSCRIBERS: Self = Self(0x10);
    pub const NO_SUBSCRIPTION_EXISTED: Self = Self(0x11);
    pub const CONTINUE_AUTHENTICATION: Self = Self(0x18);
    pub const REAUTHENTICATE: Self = Self(0x19);
    pub const UNSPECIFIED_ERROR: Self = Self(0x80);
    pub const MALFORMED_PACKET: Self = Self(0x81);
    pub const PROTOCOL_ERROR: Self = Self(0x82);
    pub const IMPLEMENTATION_SPECIFIC_ERROR: Self = Self(0x83);
    pub const UNSUPPORTED_PROTOCOL_VERSION: Self = Self(0x84);
    pub const CLIENT_IDENTIFIER_NOT_VALID: Self = Self(0x85);
    pub const BAD_USER_NAME_OR_PASSWORD: Self = Self(0x86);
    pub const NOT_AUTHORIZED: Self = Self(0x87);
    pub const SERVER_UNAVAILABLE: Self = Self(0x88);
    pub const SERVER_BUSY: Self = Self(0x89);
    pub const BANNED: Self = Self(0x8A);
    pub const SERVER_SHUTTING_DOWN: Self = Self(0x8B);
    pub const BAD_AUTHENTICATION_METHOD: Self = Self(0x8C);
    pub const KEEP_ALIVE_TIMEOUT: Self = Self(0x8D);
    pub const SESSION_TAKEN_OVER: Self = Self(0x8E);
    pub const TOPIC_FILTER_INVALID: Self = Self(0x8F);
    pub const TOPIC_NAME_INVALID: Self = Self(0x90);
    pub const PACKET_IDENTIFIER_IN_USE: Self = Self(0x91);
    pub const PACKET_IDENTIFIER_NOT_FOUND: Self = Self(0x92);
    pub const RECEIVE_MAXIMUM_EXCEEDED: Self = Self(0x93);
    pub const TOPIC_ALIAS_INVALID: Self = Self(0x94);
    pub const PACKET_TOO_LARGE: Self = Self(0x95);
    pub const MESSAGE_RATE_TOO_HIGH: Self = Self(0x96);
    pub const QUOTA_EXCEEDED: Self = Self(0x97);
    pub const ADMINISTRATIVE_ACTION: Self = Self(0x98);
    pub const PAYLOAD_FORMAT_INVALID: Self = Self(0x99);
    pub const RETAIN_NOT_SUPPORTED: Self = Self(0x9A);
    pub const QOS_NOT_SUPPORTED: Self = Self(0x9B);
    pub const USE_ANOTHER_SERVER: Self = Self(0x9C);
    pub const SERVER_MOVED: Self = Self(0x9D);
    pub const SHARED_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0x9E);
    pub const CONNECTION_RATE_EXCEEDED: Self = Self(0x9F);
    pub const MAXIMUM_CONNECT_TIME: Self = Self(0xA0);
    pub const SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED: Self = Self(0xA1);
    pub const WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED: Self = Self(0xA2);

    /// MQTT 3 SUBACK failure return code.
    pub const V3_SUBACK_FAILURE: Self = Self(0x80);

    /// True for codes below 0x80 ([MQTT-2.4]: success or a normal outcome).
    pub fn is_success(self) -> bool {
        self.0 < 0x80
    }

    /// The MQTT 3.1/3.1.1 CONNACK return code closest to this MQTT 5 CONNACK reason code.
    pub fn v3_connack(self) -> Self {
        Self(match self.0 {
            0x00 => 0,
            0x84 => 1,
            0x85 => 2,
            0x88 | 0x89 | 0x8A | 0x9C | 0x9D | 0x9F => 3,
            0x86 | 0x8C => 4,
            0x87 => 5,
            _ => 3,
        })
    }

    /// The MQTT 3.1.1 SUBACK return code for this MQTT 5 SUBACK reason code.
    pub fn v3_suback(self) -> Self {
        if self.0 <= 2 {
            self
        } else {
            Self::V3_SUBACK_FAILURE
        }
    }
}

/// A set of allowed reason code bytes.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ReasonSet([u64; 4]);

impl ReasonSet {
    // Only evaluated in consts: an out-of-range index is a compile error, not a runtime panic.
    #[allow(clippy::indexing_slicing)]
    const fn of(codes: &[u8]) -> Self {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < codes.len() {
            let c = codes[i] as usize;
            bits[c / 64] |= 1 << (c % 64);
            i += 1;
        }
        Self(bits)
    }

    pub(crate) fn contains(self, code: u8) -> bool {
        let c = code as usize;
        self.0.get(c / 64).is_some_and(|w| w & (1 << (c % 64)) != 0)
    }

    /// Every member, for property-test generators.
    #[cfg(test)]
    pub(crate) fn members(self) -> impl Iterator<Item = u8> {
        (0..=255u8).filter(move |c| self.contains(*c))
    }
}

pub(crate) const CONNACK_V5: ReasonSet = ReasonSet::of(&[
    0x00, 0x80, 0x81, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89, 0x8A, 0x8C, 0x90, 0x95, 0x97,
    0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9F,
]);
pub(crate) const CONNACK_V3: ReasonSet = ReasonSet::of(&[0, 1, 2, 3, 4, 5]);
pub(crate) const PUBACK_PUBREC: ReasonSet =
    ReasonSet::of(&[0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]);
pub(crate) const PUBREL_PUBCOMP: ReasonSet = ReasonSet::of(&[0x00, 0x92]);
pub(crate) const SUBACK_V5: ReasonSet = ReasonSet::of(&[
    0x00, 0x01, 0x02, 0x80, 0x83, 0x87, 0x8F, 0x91, 0x97, 0x9E, 0xA1, 0xA2,
]);
pub(crate) const SUBACK_V3: ReasonSet = ReasonSet::of(&[0x00, 0x01, 0x02, 0x80]);
pub(crate) const UNSUBACK_V5: ReasonSet =
    ReasonSet::of(&[0x00, 0x11, 0x80, 0x83, 0x87, 0x8F, 0x91]);
pub(crate) const DISCONNECT_V5: ReasonSet = ReasonSet::of(&[
    0x00, 0x04, 0x80, 0x81, 0x82, 0x83, 0x87, 0x89, 0x8B, 0x8D, 0x8E, 0x8F, 0x90, 0x93, 0x94, 0x95,
    0x96, 0x97, 0x98, 0x99, 0x9A, 0x9B, 0x9C, 0x9D, 0x9E, 0x9F, 0xA0, 0xA1, 0xA2,
]);
pub(crate) const AUTH_V5: ReasonSet = ReasonSet::of(&[0x00, 0x18, 0x19]);
