//! Codec properties: every packet of every version round-trips; arbitrary and mutated bytes
//! never panic and never consume past the input; table tests of the spec rules.

use std::num::{NonZeroU16, NonZeroU32};

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

use super::properties::{self, Allowed};
use super::reason::{self, ReasonSet};
use super::*;
use crate::limits::PACKET_BYTES_MAX;

const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V31,
    ProtocolVersion::V311,
    ProtocolVersion::V5,
];

fn arb_version() -> impl Strategy<Value = ProtocolVersion> {
    prop::sample::select(VERSIONS.to_vec())
}

fn arb_str() -> impl Strategy<Value = ByteString> {
    "[^\u{0}]{0,12}".prop_map(ByteString::from)
}

fn arb_topic() -> impl Strategy<Value = ByteString> {
    "[a-z0-9/ $\u{e9}\u{1F600}]{1,24}".prop_map(ByteString::from)
}

fn arb_filter() -> impl Strategy<Value = ByteString> {
    let level = prop::sample::select(vec!["a", "bc", "+", "", "d e", "$SYS", "\u{e9}"]);
    (vec(level, 1..5), any::<bool>(), option::of("[a-z]{1,4}")).prop_map(|(levels, hash, share)| {
        let mut f = levels.join("/");
        if hash {
            f.push_str(if f.is_empty() { "#" } else { "/#" });
        }
        if f.is_empty() {
            f.push('x');
        }
        match share {
            Some(group) => ByteString::from(format!("$share/{group}/{f}")),
            None => ByteString::from(f),
        }
    })
}

fn arb_bytes() -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..48).prop_map(Bytes::from)
}

fn arb_qos() -> impl Strategy<Value = QoS> {
    prop::sample::select(vec![QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce])
}

fn arb_packet_id() -> impl Strategy<Value = PacketId> {
    (1u16..).prop_map(|id| PacketId::new(id).unwrap())
}

fn arb_reason(set: ReasonSet) -> impl Strategy<Value = ReasonCode> {
    prop::sample::select(set.members().collect::<Vec<_>>()).prop_map(ReasonCode)
}

/// Any combination of every property, then restricted to what `allowed` permits.
fn arb_properties(allowed: Allowed) -> impl Strategy<Value = Properties> {
    let flags = (
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(any::<bool>()),
        option::of(prop::sample::select(vec![
            QoS::AtMostOnce,
            QoS::AtLeastOnce,
        ])),
    );
    let numbers = (
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of(any::<u32>()),
        option::of((1u32..).prop_map(|v| NonZeroU32::new(v).unwrap())),
        option::of(any::<u16>()),
        option::of(any::<u16>()),
        option::of((1u16..).prop_map(|v| NonZeroU16::new(v).unwrap())),
        option::of((1u16..).prop_map(|v| NonZeroU16::new(v).unwrap())),
    );
    let strings = (
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_str()),
        option::of(arb_bytes()),
        option::of(arb_bytes()),
        vec(1u32..=crate::limits::VARINT_MAX, 0..3),
        vec((arb_str(), arb_str()), 0..3),
    );
    (flags, numbers, strings).prop_map(move |(f, n, s)| {
        let mut p = Properties {
            payload_format_indicator: f.0,
            request_problem_information: f.1,
            request_response_information: f.2,
            retain_available: f.3,
            wildcard_subscription_available: f.4,
            subscription_identifier_available: f.5,
            shared_subscription_available: f.6,
            maximum_qos: f.7,
            message_expiry_interval: n.0,
            session_expiry_interval: n.1,
            will_delay_interval: n.2,
            maximum_packet_size: n.3,
            server_keep_alive: n.4,
            topic_alias_maximum: n.5,
            receive_maximum: n.6,
            topic_alias: n.7,
            content_type: s.0,
            response_topic: s.1,
            assigned_client_identifier: s.2,
            authentication_method: s.3,
            response_information: s.4,
            server_reference: s.5,
            reason_string: s.6,
            correlation_data: s.7,
            authentication_data: s.8,
            subscription_identifiers: s.9,
            user_properties: s.10,
        };
        p.retain(allowed);
        p
    })
}

fn props_for(version: ProtocolVersion, allowed: Allowed) -> BoxedStrategy<BoxedProperties> {
    if version.is_v5() {
        arb_properties(allowed)
            .prop_map(BoxedProperties::from)
            .boxed()
    } else {
        Just(BoxedProperties::default()).boxed()
    }
}

fn arb_connect(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let will = (
        arb_qos(),
        any::<bool>(),
        props_for(version, properties::WILL),
        arb_topic(),
        arb_bytes(),
    )
        .prop_map(|(qos, retain, properties, topic, payload)| Will {
            qos,
            retain,
            properties,
            topic,
            payload,
        });
    (
        any::<bool>(),
        any::<u16>(),
        props_for(version, properties::CONNECT),
        arb_str(),
        option::of(will),
        option::of(arb_str()),
        option::of(arb_bytes()),
    )
        .prop_map(
            move |(
                clean_start,
                keep_alive,
                properties,
                client_id,
                will,
                mut username,
                password,
            )| {
                if !version.is_v5() && password.is_some() && username.is_none() {
                    username = Some(ByteString::from_static("u"));
                }
                Packet::Connect(Box::new(Connect {
                    version,
                    clean_start,
                    keep_alive,
                    properties,
                    client_id,
                    will,
                    username,
                    password,
                    // Exercise the bridge bit of the protocol level too.
                    bridge: keep_alive % 7 == 0,
                }))
            },
        )
}

fn arb_publish(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    (
        arb_qos(),
        any::<bool>(),
        any::<bool>(),
        arb_topic(),
        arb_packet_id(),
        props_for(version, properties::PUBLISH),
        arb_bytes(),
        any::<bool>(),
    )
        .prop_map(
            move |(qos, dup, retain, mut topic, id, properties, payload, empty_topic)| {
                if version.is_v5() && properties.topic_alias.is_some() && empty_topic {
                    topic = ByteString::new();
                }
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    properties,
                    payload,
                })
            },
        )
}

fn arb_pubresp(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let kind = prop::sample::select(vec![
        PubRespKind::PubAck,
        PubRespKind::PubRec,
        PubRespKind::PubRel,
        PubRespKind::PubComp,
    ]);
    (
        kind,
        arb_packet_id(),
        arb_reason(reason::PUBACK_PUBREC),
        arb_reason(reason::PUBREL_PUBCOMP),
        props_for(version, properties::ACK),
    )
        .prop_map(move |(kind, packet_id, r1, r2, properties)| {
            let mut resp = PubResp::new(kind, packet_id);
            if version.is_v5() {
                resp.reason = match kind {
                    PubRespKind::PubAck | PubRespKind::PubRec => r1,
                    _ => r2,
                };
                resp.properties = properties;
            }
            Packet::PubResp(resp)
        })
}

fn arb_subscribe(version: ProtocolVersion) -> impl Strategy<Value = Packet> {
    let retain_handling = prop::sample::select(vec![
        RetainHandling::OnSubscribe,
        RetainHandling::OnNewSubscription,
        RetainHandling::Never,
    ]);
    let options = (arb_qos(), any::<bool>(), any::<bool>(), retain_handling).prop_map(
        move |(qos, no_local, retain_as_published, retain_handling)| {
            if version.is_v5() {
                SubscriptionOptions {
                    qos,
                    no_local,
                    retain_as_published,
                    retain_handling,
                }
            } else {
                SubscriptionOptions::qos(qos)
            }
        },
    );
    (
        arb_packet_id(),
        props_for(version, properties::SUBSCRIBE),
        vec((arb_filter(), options), 1..5),
    )
        .prop_map(|(packet_id, properties, mut filters)| {
            for (filter, options) in &mut filters {
                if crate::topic::is_shared(filter) {
                    options.no_local = false;
                }
            }
            Packet::Subscribe(Subscribe {
                packet_id,
                properties,
                filters,
            })
        })
}

fn arb_packet(version: ProtocolVersion) -> BoxedStrategy<Packet> {
    let v5 = version.is_v5();
    let connack_codes = if v5 {
        reason::CONNACK_V5
    } else {
        reason::CONNACK_V3
    };
    let suback_codes = if v5 {
        reason::SUBACK_V5
    } else {
        reason::SUBACK_V3
    };
    let mut options = vec![
        arb_connect(version).boxed(),
        (
            any::<bool>(),
            arb_reason(connack_codes),
            props_for(version, properties::CONNACK),
        )
            .prop_map(|(session_present, code, properties)| {
                Packet::ConnAck(ConnAck {
                    session_present,
                    code,
                    properties,
                })
            })
            .boxed(),
        arb_publish(version).boxed(),
        arb_pubresp(version).boxed(),
        arb_subscribe(version).boxed(),
        (
            arb_packet_id(),
            props_for(version, properties::ACK),
            vec(arb_reason(suback_codes), 1..5),
        )
            .prop_map(|(packet_id, properties, reasons)| {
                Packet::SubAck(SubAck {
                    packet_id,
                    properties,
                    reasons,
                })
            })
            .boxed(),
        (
            arb_packet_id(),
            props_for(version, properties::UNSUBSCRIBE),
            vec(arb_filter(), 1..5),
        )
            .prop_map(|(packet_id, properties, filters)| {
                Packet::Unsubscribe(Unsubscribe {
                    packet_id,
                    properties,
                    filters,
                })
            })
            .boxed(),
        (
            arb_packet_id(),
            props_for(version, properties::ACK),
            vec(arb_reason(reason::UNSUBACK_V5), 1..5),
        )
            .prop_map(move |(packet_id, properties, reasons)| {
                let reasons = if v5 { reasons } else { Vec::new() };
                Packet::UnsubAck(UnsubAck {
                    packet_id,
                    properties,
                    reasons,
                })
            })
            .boxed(),
        Just(Packet::PingReq).boxed(),
        Just(Packet::PingResp).boxed(),
        (
            arb_reason(reason::DISCONNECT_V5),
            props_for(version, properties::DISCONNECT),
        )
            .prop_map(move |(reason, properties)| {
                Packet::Disconnect(if v5 {
                    Disconnect { reason, properties }
                } else {
                    Disconnect::default()
                })
            })
            .boxed(),
    ];
    if v5 {
        options.push(
            (
                arb_reason(reason::AUTH_V5),
                props_for(version, properties::AUTH),
            )
                .prop_map(|(reason, properties)| Packet::Auth(Auth { reason, properties }))
                .boxed(),
        );
    }
    prop::strategy::Union::new(options).boxed()
}

fn arb_versioned_packet() -> impl Strategy<Value = (ProtocolVersion, Packet)> {
    arb_version().prop_flat_map(|v| arb_packet(v).prop_map(move |p| (v, p)))
}

fn decoder(version: ProtocolVersion) -> Decoder {
    Decoder {
        version,
        packet_bytes_max: PACKET_BYTES_MAX,
    }
}

fn encode(version: ProtocolVersion, packet: &Packet) -> BytesMut {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).unwrap();
    buf
}

/// Decodes repeatedly, checking that each step consumes exactly one declared packet (never
/// more than the input) and that "need more" consumes nothing.
fn decode_all(version: ProtocolVersion, input: &[u8]) {
    let mut buf = BytesMut::from(input);
    for _ in 0..input.len() + 1 {
        let before = buf.len();
        let header = FixedHeader::parse(&buf);
        match decoder(version).decode(&mut buf) {
            Ok(Some(_)) => {
                let header = header.unwrap().unwrap();
                assert!(header.packet_bytes() <= before);
                assert_eq!(before - buf.len(), header.packet_bytes());
            }
            Ok(None) => {
                assert_eq!(buf.len(), before);
                return;
            }
            Err(e) => {
                assert!(!e.rule().is_empty());
                assert!(buf.len() <= before);
                return;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn round_trip((version, packet) in arb_versioned_packet()) {
        let mut buf = encode(version, &packet);
        prop_assert_eq!(buf.len(), packet.encoded_len(version));
        // Trailing bytes of a next packet must stay in the buffer.
        buf.extend_from_slice(&[0xC0, 0x00]);
        let decoded = decoder(version).decode(&mut buf).unwrap().unwrap();
        prop_assert_eq!(&decoded, &packet);
        prop_assert_eq!(&buf[..], &[0xC0, 0x00][..]);
        // The borrowed PUBLISH encoder writes the same bytes.
        if let Packet::Publish(p) = &packet {
            let mut borrowed = BytesMut::new();
            p.as_ref().encode(version, &mut borrowed).unwrap();
            prop_assert_eq!(&borrowed[..], &encode(version, &packet)[..]);
            prop_assert_eq!(p.as_ref().encoded_len(version), borrowed.len());
        }
    }

    #[test]
    fn split_input_needs_more_then_decodes((version, packet) in arb_versioned_packet(), cut in any::<prop::sample::Index>()) {
        let full = encode(version, &packet);
        let cut = cut.index(full.len());
        let mut buf = BytesMut::from(&full[..cut]);
        prop_assert_eq!(decoder(version).decode(&mut buf).unwrap(), None);
        prop_assert_eq!(buf.len(), cut);
        buf.extend_from_slice(&full[cut..]);
        prop_assert_eq!(decoder(version).decode(&mut buf).unwrap(), Some(packet));
    }

    #[test]
    fn arbitrary_bytes_never_panic(version in arb_version(), input in vec(any::<u8>(), 0..300)) {
        decode_all(version, &input);
    }

    #[test]
    fn mutated_packets_never_panic(
        (version, packet) in arb_versioned_packet(),
        mutations in vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode(version, &packet).to_vec();
        for (at, value, how) in mutations {
            if bytes.is_empty() {
                bytes.push(value);
                continue;
            }
            let i = at.index(bytes.len());
            match how {
                0 => bytes[i] = value,
                1 => bytes[i] ^= 1 << (value % 8),
                _ => { bytes.truncate(i); }
            }
        }
        decode_all(version, &bytes);
    }
}

#[test]
fn oversized_is_rejected_before_the_body_arrives() {
    // PUBLISH declaring 1 MiB: rejected from its 5-byte header alone.
    let mut buf = BytesMut::from(&[0x30, 0x80, 0x80, 0x40][..]);
    let d = Decoder {
        version: ProtocolVersion::V311,
        packet_bytes_max: 1024,
    };
    assert_eq!(d.decode(&mut buf), Err(DecodeError::PacketTooLarge));
    assert_eq!(
        DecodeError::PacketTooLarge.reason_code(),
        ReasonCode::PACKET_TOO_LARGE
    );
}

#[test]
fn spec_rules_table() {
    use DecodeError::*;
    use ProtocolVersion::*;
    let cases: &[(&str, ProtocolVersion, &[u8], DecodeError)] = &[
        ("reserved type 0", V311, &[0x00, 0x00], ReservedPacketType),
        ("AUTH before v5", V311, &[0xF0, 0x00], ReservedPacketType),
        (
            "PUBREL flags",
            V311,
            &[0x60, 0x02, 0x00, 0x01],
            InvalidHeaderFlags,
        ),
        (
            "SUBSCRIBE flags",
            V311,
            &[0x80, 0x06, 0, 1, 0, 1, b'a', 0],
            InvalidHeaderFlags,
        ),
        ("PINGREQ flags", V311, &[0xC1, 0x00], InvalidHeaderFlags),
        (
            "PINGREQ with body",
            V311,
            &[0xC0, 0x01, 0x00],
            TrailingBytes,
        ),
        (
            "QoS 3 publish",
            V311,
            &[0x36, 0x05, 0, 1, b'a', 0, 1],
            InvalidQos,
        ),
        (
            "DUP with QoS 0",
            V311,
            &[0x38, 0x03, 0, 1, b'a'],
            DupWithQos0,
        ),
        (
            "wildcard topic",
            V311,
            &[0x30, 0x03, 0, 1, b'#'],
            WildcardInTopicName,
        ),
        (
            "plus topic",
            V5,
            &[0x30, 0x05, 0, 2, b'a', b'+', 0],
            WildcardInTopicName,
        ),
        ("empty topic v4", V311, &[0x30, 0x02, 0, 0], EmptyTopicName),
        (
            "empty topic v5 without alias",
            V5,
            &[0x30, 0x03, 0, 0, 0],
            EmptyTopicName,
        ),
        (
            "topic alias 0",
            V5,
            &[0x30, 0x06, 0, 0, 3, 0x23, 0, 0],
            InvalidPropertyValue,
        ),
        (
            "packet id 0",
            V311,
            &[0x32, 0x05, 0, 1, b'a', 0, 0],
            PacketIdZero,
        ),
        ("PUBACK id 0", V311, &[0x40, 0x02, 0, 0], PacketIdZero),
        ("topic overruns", V311, &[0x30, 0x03, 0, 5, b'a'], Overrun),
        (
            "bad UTF-8 topic",
            V311,
            &[0x30, 0x04, 0, 2, 0xC3, 0x28],
            InvalidUtf8,
        ),
        (
            "surrogate topic",
            V311,
            &[0x30, 0x05, 0, 3, 0xED, 0xA0, 0x80],
            InvalidUtf8,
        ),
        (
            "NUL in topic",
            V311,
            &[0x30, 0x04, 0, 2, b'a', 0],
            NullCharacter,
        ),
        (
            "PUBACK v4 with reason",
            V311,
            &[0x40, 0x03, 0, 1, 0],
            TrailingBytes,
        ),
        (
            "PUBACK v5 bad reason",
            V5,
            &[0x40, 0x03, 0, 1, 0x92],
            InvalidReasonCode,
        ),
        (
            "PUBREL v5 bad reason",
            V5,
            &[0x62, 0x03, 0, 1, 0x10],
            InvalidReasonCode,
        ),
        (
            "SUBSCRIBE no filters",
            V311,
            &[0x82, 0x02, 0, 1],
            EmptyPayload,
        ),
        (
            "SUBSCRIBE bad filter",
            V311,
            &[0x82, 0x07, 0, 1, 0, 2, b'a', b'#', 0],
            InvalidTopicFilter,
        ),
        (
            "SUBSCRIBE # not last",
            V311,
            &[0x82, 0x08, 0, 1, 0, 3, b'#', b'/', b'a', 0],
            InvalidTopicFilter,
        ),
        (
            "SUBSCRIBE v4 reserved option bits",
            V311,
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x04],
            InvalidSubscriptionOptions,
        ),
        (
            "SUBSCRIBE QoS 3",
            V311,
            &[0x82, 0x06, 0, 1, 0, 1, b'a', 0x03],
            InvalidQos,
        ),
        (
            "SUBSCRIBE v5 reserved bits",
            V5,
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x40],
            InvalidSubscriptionOptions,
        ),
        (
            "SUBSCRIBE v5 retain handling 3",
            V5,
            &[0x82, 0x07, 0, 1, 0, 0, 1, b'a', 0x30],
            InvalidRetainHandling,
        ),
        (
            "SUBSCRIBE v5 no local shared",
            V5,
            &[
                0x82, 0x0F, 0, 1, 0, 0, 9, b'$', b's', b'h', b'a', b'r', b'e', b'/', b'g', b'/',
                0x04,
            ],
            InvalidSharedSubscription,
        ),
        (
            "SUBSCRIBE v5 two sub ids",
            V5,
            &[0x82, 0x0A, 0, 1, 4, 0x0B, 1, 0x0B, 2, 0, 1, b'a', 0],
            DuplicateProperty,
        ),
        (
            "UNSUBSCRIBE no filters",
            V311,
            &[0xA2, 0x02, 0, 1],
            EmptyPayload,
        ),
        (
            "SUBACK bad v4 code",
            V311,
            &[0x90, 0x03, 0, 1, 0x87],
            InvalidReasonCode,
        ),
        (
            "CONNACK reserved flags",
            V311,
            &[0x20, 0x02, 0x02, 0x00],
            InvalidConnAckFlags,
        ),
        (
            "CONNACK v4 code 6",
            V311,
            &[0x20, 0x02, 0x00, 0x06],
            InvalidReasonCode,
        ),
        (
            "DISCONNECT v4 body",
            V311,
            &[0xE0, 0x01, 0x00],
            TrailingBytes,
        ),
        (
            "DISCONNECT v5 bad reason",
            V5,
            &[0xE0, 0x01, 0x01],
            InvalidReasonCode,
        ),
        (
            "DISCONNECT v5 topic alias",
            V5,
            &[0xE0, 0x05, 0x00, 0x03, 0x23, 0, 1],
            PropertyNotAllowed,
        ),
        (
            "AUTH bad reason",
            V5,
            &[0xF0, 0x01, 0x01],
            InvalidReasonCode,
        ),
        (
            "unknown property",
            V5,
            &[0xE0, 0x03, 0x00, 0x01, 0x7F],
            UnknownProperty,
        ),
        (
            "five-byte length",
            V311,
            &[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            MalformedVarint,
        ),
    ];
    for (name, version, bytes, want) in cases {
        let mut buf = BytesMut::from(*bytes);
        assert_eq!(decoder(*version).decode(&mut buf), Err(*want), "{name}");
    }
}

#[test]
fn no_local_on_shared_subscription_is_a_protocol_error() {
    let mut buf = BytesMut::new();
    // Filter "$share/g/a" with No Local.
    let filter = b"$share/g/a";
    buf.extend_from_slice(&[
        0x82,
        (2 + 1 + 2 + filter.len() + 1) as u8,
        0,
        1,
        0,
        0,
        filter.len() as u8,
    ]);
    buf.extend_from_slice(filter);
    buf.extend_from_slice(&[0x04]);
    assert_eq!(
        decoder(ProtocolVersion::V5).decode(&mut buf),
        Err(DecodeError::NoLocalOnSharedSubscription)
    );
}

fn connect_bytes(name: &[u8], level: u8, flags: u8, rest: &[u8]) -> BytesMut {
    let mut body = vec![0, name.len() as u8];
    body.extend_from_slice(name);
    body.extend_from_slice(&[level, flags, 0, 60]);
    body.extend_from_slice(rest);
    let mut buf = BytesMut::from(&[0x10, body.len() as u8][..]);
    buf.extend_from_slice(&body);
    buf
}

#[test]
fn connect_rules() {
    use DecodeError::*;
    let cid: &[u8] = &[0, 1, b'c'];
    let d = decoder(ProtocolVersion::V311);
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 6, 0x02, cid)),
        Err(UnsupportedProtocolVersion)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTX", 4, 0x02, cid)),
        Err(InvalidProtocolName)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQIsdp", 4, 0x02, cid)),
        Err(UnsupportedProtocolVersion)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 4, 0x03, cid)),
        Err(ConnectReservedFlag)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 4, 0x08, cid)),
        Err(InvalidWillFlags)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 4, 0x20, cid)),
        Err(InvalidWillFlags)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 4, 0x1C, cid)),
        Err(InvalidQos)
    );
    assert_eq!(
        d.decode(&mut connect_bytes(
            b"MQTT",
            4,
            0x42,
            &[0, 1, b'c', 0, 1, b'p']
        )),
        Err(PasswordWithoutUsername)
    );
    // v5 allows a password without a user name (and has a property length).
    let p = d
        .decode(&mut connect_bytes(
            b"MQTT",
            5,
            0x42,
            &[0, 0, 1, b'c', 0, 1, b'p'],
        ))
        .unwrap()
        .unwrap();
    let Packet::Connect(c) = p else { panic!() };
    assert_eq!(
        (c.version, c.password.as_deref()),
        (ProtocolVersion::V5, Some(&b"p"[..]))
    );
    // A will with a wildcard topic.
    let will = [0, 1, b'c', 0, 1, b'#', 0, 0];
    assert_eq!(
        d.decode(&mut connect_bytes(b"MQTT", 4, 0x06, &will)),
        Err(WildcardInTopicName)
    );
    // MQTT 3.1.
    let p = d
        .decode(&mut connect_bytes(b"MQIsdp", 3, 0x02, cid))
        .unwrap()
        .unwrap();
    let Packet::Connect(c) = p else { panic!() };
    assert_eq!(c.version, ProtocolVersion::V31);
    // Encoding a v3.1 CONNECT writes MQIsdp and level 3.
    let mut out = BytesMut::new();
    Packet::Connect(c)
        .encode(ProtocolVersion::V311, &mut out)
        .unwrap();
    assert_eq!(&out[..], &connect_bytes(b"MQIsdp", 3, 0x02, cid)[..]);
}

#[test]
fn encode_errors_leave_the_buffer_alone() {
    let mut out = BytesMut::from(&b"keep"[..]);
    let auth = Packet::Auth(Auth::default());
    assert_eq!(
        auth.encode(ProtocolVersion::V311, &mut out),
        Err(EncodeError::NotInVersion)
    );
    let long = Packet::Publish(Publish {
        dup: false,
        qos: QoS::AtMostOnce,
        retain: false,
        topic: ByteString::from("t".repeat(70_000)),
        packet_id: None,
        properties: Default::default(),
        payload: Bytes::new(),
    });
    assert_eq!(
        long.encode(ProtocolVersion::V311, &mut out),
        Err(EncodeError::FieldTooLong)
    );
    assert_eq!(&out[..], b"keep");
}

#[test]
fn minimal_acks_and_disconnects() {
    let v5 = ProtocolVersion::V5;
    let id = PacketId::new(7).unwrap();
    let ack = Packet::PubResp(PubResp::new(PubRespKind::PubAck, id));
    assert_eq!(&encode(v5, &ack)[..], &[0x40, 0x02, 0, 7]);
    let mut rel = PubResp::new(PubRespKind::PubRel, id);
    rel.reason = ReasonCode::PACKET_IDENTIFIER_NOT_FOUND;
    assert_eq!(
        &encode(v5, &Packet::PubResp(rel))[..],
        &[0x62, 0x03, 0, 7, 0x92]
    );
    assert_eq!(
        &encode(v5, &Packet::Disconnect(Disconnect::default()))[..],
        &[0xE0, 0x00]
    );
    // A v5 peer may send the long form; it decodes to the same value.
    let mut long = BytesMut::from(&[0x40, 0x04, 0, 7, 0, 0][..]);
    assert_eq!(decoder(v5).decode(&mut long).unwrap(), Some(ack));
}

#[test]
fn packets_stay_small() {
    // A PUBLISH moves by value through decoder, router and outbox; properties live out of
    // line so this stays a few cache lines, not the ~400 bytes of a full Properties.
    assert!(
        std::mem::size_of::<Packet>() <= 96,
        "{}",
        std::mem::size_of::<Packet>()
    );
}
