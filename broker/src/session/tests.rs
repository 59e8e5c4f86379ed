//! Session state machine tests: windows, queues, QoS 2 flows, resume, expiry, aliases.
use super::*;
use bytes::Bytes;
use net::codec::Decoder;

fn message(n: u8) -> Message {
    Message::new(
        "t".into(),
        Bytes::from(vec![n]),
        QoS::ExactlyOnce,
        false,
        Default::default(),
        now(),
    )
}

fn now() -> Instant {
    Instant::now()
}

fn g(qos: QoS) -> Grant {
    Grant::qos(qos)
}

fn packets(out: &mut BytesMut) -> Vec<Packet> {
    let d = Decoder {
        version: ProtocolVersion::V311,
        packet_bytes_max: 1 << 20,
    };
    let mut v = Vec::new();
    while let Some(p) = d.decode(out).unwrap() {
        v.push(p);
    }
    v
}

fn session(window: usize, queue_max: usize) -> Session {
    let mut s = Session::new(
        "c".into(),
        ProtocolVersion::V311,
        SessionLimits::new(window, queue_max, usize::MAX),
    );
    s.conn = Some(ConnId {
        slot: 0,
        generation: 0,
    });
    s
}

#[test]
fn window_queue_and_acks() {
    let mut s = session(2, 10);
    let mut out = BytesMut::new();
    for n in 0..4 {
        let d = s.deliver(
            &message(n),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false,
        );
        assert_eq!(
            d,
            if n < 2 {
                Delivery::Sent
            } else {
                Delivery::Queued
            }
        );
    }
    let sent = packets(&mut out);
    assert_eq!(sent.len(), 2);
    let Packet::Publish(p) = &sent[0] else {
        panic!()
    };
    assert!(s.on_puback(p.packet_id.unwrap(), now(), &mut out));
    assert!(
        !s.on_puback(p.packet_id.unwrap(), now(), &mut out),
        "second ack is unknown"
    );
    let next = packets(&mut out);
    let Packet::Publish(p) = &next[0] else {
        panic!()
    };
    assert_eq!(&p.payload[..], &[2]);
    assert_eq!((s.inflight_len(), s.queued_len()), (2, 1));
}

#[test]
fn qos2_outbound_flow_and_resume_with_dup() {
    let mut s = session(10, 10);
    let mut out = BytesMut::new();
    s.deliver(
        &message(1),
        g(QoS::ExactlyOnce),
        now(),
        Some(&mut out),
        false,
    );
    s.deliver(
        &message(2),
        g(QoS::ExactlyOnce),
        now(),
        Some(&mut out),
        false,
    );
    let sent = packets(&mut out);
    let Packet::Publish(first) = &sent[0] else {
        panic!()
    };
    assert!(s.on_pubrec(
        &PubResp::new(PubRespKind::PubRec, first.packet_id.unwrap()),
        now(),
        &mut out
    ));
    assert!(matches!(&packets(&mut out)[0], Packet::PubResp(r) if r.kind == PubRespKind::PubRel));
    // The client goes away and comes back: PUBREL for the first, DUP PUBLISH for the second.
    s.resume(now(), &mut out);
    let again = packets(&mut out);
    assert!(matches!(&again[0], Packet::PubResp(r) if r.kind == PubRespKind::PubRel));
    let Packet::Publish(p) = &again[1] else {
        panic!()
    };
    assert!(p.dup);
    assert_eq!(&p.payload[..], &[2]);
    assert!(s.on_pubcomp(first.packet_id.unwrap(), now(), &mut out));
}

#[test]
fn full_queue_drops_oldest_by_default_connected_or_not() {
    let mut s = session(1, 2);
    s.conn = None;
    for n in 0..3 {
        s.deliver(&message(n), g(QoS::AtLeastOnce), now(), None, false);
    }
    assert_eq!((s.queued_len(), s.dropped), (2, 1));
    assert_eq!(s.drops.by_reason, [0, 1, 0, 0]);
    s.conn = Some(ConnId {
        slot: 0,
        generation: 0,
    });
    let mut out = BytesMut::new();
    s.resume(now(), &mut out);
    let Packet::Publish(p) = &packets(&mut out)[0] else {
        panic!()
    };
    assert_eq!(&p.payload[..], &[1], "oldest was dropped");
    s.deliver(
        &message(9),
        g(QoS::AtLeastOnce),
        now(),
        Some(&mut out),
        false,
    );
    s.deliver(
        &message(10),
        g(QoS::AtLeastOnce),
        now(),
        Some(&mut out),
        false,
    );
    assert_eq!(
        s.deliver(
            &message(11),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false
        ),
        Delivery::Queued
    );
    assert_eq!((s.queued_len(), s.dropped), (2, 3));
}

#[test]
fn full_queue_policies_drop_newest_or_refuse() {
    for (policy, expected, dropped) in [
        (QueueFullPolicy::DropNewest, Delivery::Dropped, 1),
        (QueueFullPolicy::Refuse, Delivery::Full, 0),
    ] {
        let mut s = session(1, 2);
        let mut limits = SessionLimits::new(1, 2, usize::MAX);
        limits.full_policy = policy;
        s.set_limits(limits);
        s.conn = None;
        for n in 0..2 {
            s.deliver(&message(n), g(QoS::AtLeastOnce), now(), None, false);
        }
        let got = s.deliver(&message(2), g(QoS::AtLeastOnce), now(), None, false);
        assert_eq!((got, s.dropped), (expected, dropped), "{policy:?}");
        assert_eq!(s.queued_len(), 2);
        let mut out = BytesMut::new();
        s.conn = Some(ConnId {
            slot: 0,
            generation: 0,
        });
        s.resume(now(), &mut out);
        let Packet::Publish(p) = &packets(&mut out)[0] else {
            panic!()
        };
        assert_eq!(&p.payload[..], &[0], "{policy:?} keeps the oldest");
    }
}

#[test]
fn queue_is_bounded_in_bytes_too() {
    let mut s = session(1, 1000);
    s.set_limits(SessionLimits::new(1, 1000, 10));
    s.conn = None;
    // Each message weighs 2 bytes (topic "t" + 1 byte payload): 5 fit in 10 bytes.
    for n in 0..8 {
        s.deliver(&message(n), g(QoS::AtLeastOnce), now(), None, false);
    }
    assert_eq!((s.queued_len(), s.dropped), (5, 3));
    s.conn = Some(ConnId {
        slot: 0,
        generation: 0,
    });
    let mut out = BytesMut::new();
    s.resume(now(), &mut out);
    assert_eq!(s.queued_len(), 4, "one moved into the window");
    assert_eq!(
        s.deliver(
            &message(9),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false
        ),
        Delivery::Queued
    );
    assert_eq!(
        s.deliver(
            &message(10),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false
        ),
        Delivery::Queued,
        "the oldest makes room"
    );
    assert_eq!(s.queued_len(), 5);
}

#[test]
fn qos2_inbound_dedup() {
    let mut s = session(1, 1);
    let id = PacketId::new(5).unwrap();
    assert!(s.inbound_qos2_begin(id));
    assert!(!s.inbound_qos2_begin(id));
    assert!(s.inbound_qos2_release(id));
    assert!(!s.inbound_qos2_release(id));
}

#[test]
fn expired_messages_are_dropped_and_the_rest_carry_what_is_left() {
    let mut s = session(10, 10);
    s.version = ProtocolVersion::V5;
    let start = now();
    let mut m = message(1);
    m.expires_at = Some(start + std::time::Duration::from_secs(10));
    let grant = Grant {
        sub_ids: super::SubIds::one(3),
        ..g(QoS::AtLeastOnce)
    };
    let mut out = BytesMut::new();
    assert_eq!(
        s.deliver(
            &m,
            grant.clone(),
            start + std::time::Duration::from_secs(4),
            Some(&mut out),
            false
        ),
        Delivery::Sent
    );
    let d = Decoder {
        version: ProtocolVersion::V5,
        packet_bytes_max: 1 << 20,
    };
    let Some(Packet::Publish(p)) = d.decode(&mut out).unwrap() else {
        panic!()
    };
    assert_eq!(p.properties.message_expiry_interval, Some(6));
    assert_eq!(p.properties.subscription_identifiers, vec![3]);
    assert_eq!(
        s.deliver(
            &m,
            grant,
            start + std::time::Duration::from_secs(11),
            Some(&mut out),
            false
        ),
        Delivery::Dropped
    );
}

#[test]
fn topic_aliases_and_client_packet_size() {
    let mut s = session(10, 10);
    s.version = ProtocolVersion::V5;
    let mut limits = SessionLimits::new(10, 10, usize::MAX);
    limits.alias_max = 1;
    limits.packet_bytes_max = Some(64);
    s.set_limits(limits);
    let mut out = BytesMut::new();
    let d = Decoder {
        version: ProtocolVersion::V5,
        packet_bytes_max: 1 << 20,
    };
    for _ in 0..2 {
        s.deliver(
            &message(1),
            g(QoS::AtMostOnce),
            now(),
            Some(&mut out),
            false,
        );
    }
    let Some(Packet::Publish(first)) = d.decode(&mut out).unwrap() else {
        panic!()
    };
    let Some(Packet::Publish(second)) = d.decode(&mut out).unwrap() else {
        panic!()
    };
    assert_eq!(
        (
            &first.topic[..],
            first.properties.topic_alias.map(|a| a.get())
        ),
        ("t", Some(1))
    );
    assert_eq!(
        (
            &second.topic[..],
            second.properties.topic_alias.map(|a| a.get())
        ),
        ("", Some(1))
    );
    let mut big = message(1);
    big.payload = Bytes::from(vec![0u8; 100]);
    assert_eq!(
        s.deliver(&big, g(QoS::AtLeastOnce), now(), Some(&mut out), false),
        Delivery::Dropped
    );
    assert_eq!(
        s.inflight_len(),
        0,
        "a dropped message takes no window slot"
    );
}

#[test]
fn unfinished_shared_messages_are_handed_back() {
    let mut s = session(1, 10);
    let mut out = BytesMut::new();
    for n in 0..3 {
        let grant = Grant {
            shared: (n != 1).then(|| "$share/g/t".into()),
            ..g(QoS::AtLeastOnce)
        };
        s.deliver(&message(n), grant, now(), Some(&mut out), false);
    }
    let taken: Vec<u8> = s
        .take_shared_unfinished()
        .iter()
        .map(|(g, m)| {
            assert_eq!(g, "$share/g/t");
            m.payload[0]
        })
        .collect();
    assert_eq!(taken, vec![0, 2]);
    assert_eq!((s.inflight_len(), s.queued_len()), (0, 1));
}

#[test]
fn packet_ids_wrap_around_an_id_still_in_flight() {
    let mut s = session(2, 10);
    let mut out = BytesMut::new();
    s.deliver(
        &message(0),
        g(QoS::AtLeastOnce),
        now(),
        Some(&mut out),
        false,
    );
    let Packet::Publish(first) = &packets(&mut out)[0] else {
        panic!()
    };
    let held = first.packet_id.unwrap();
    // The first stays unacknowledged while 70,000 others come and go: its id is skipped.
    for n in 0..70_000u32 {
        s.deliver(
            &message(n as u8),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false,
        );
        let Packet::Publish(p) = &packets(&mut out)[0] else {
            panic!()
        };
        let id = p.packet_id.unwrap();
        assert_ne!(id, held, "allocation {n} reused an id in flight");
        assert!(s.on_puback(id, now(), &mut out));
    }
    assert!(s.on_puback(held, now(), &mut out));
}

#[test]
fn packet_ids_stay_unique_with_two_ids_stuck_a_cycle_apart() {
    let mut s = session(4, 10);
    let mut out = BytesMut::new();
    let mut stuck = Vec::new();
    let mut others = std::collections::VecDeque::new();
    // Two messages stay unacknowledged, given a cycle of ids apart; up to two more are in
    // flight at any time, acknowledged newest first; an id in flight never comes back.
    for n in 0..200_000u32 {
        s.deliver(
            &message(n as u8),
            g(QoS::AtLeastOnce),
            now(),
            Some(&mut out),
            false,
        );
        for p in packets(&mut out) {
            let Packet::Publish(p) = p else { continue };
            let id = p.packet_id.unwrap();
            assert!(
                !stuck.contains(&id) && !others.contains(&id),
                "allocation {n} reused id {id:?} in flight"
            );
            // The first sticks early; the second is the id just before it, a cycle later.
            let second = stuck.len() == 1
                && stuck
                    .first()
                    .is_some_and(|f: &PacketId| u32::from(f.get()) == u32::from(id.get()) + 1);
            if (n == 5 && stuck.is_empty()) || second {
                stuck.push(id);
            } else {
                others.push_back(id);
            }
        }
        while others.len() > 1 {
            let id = if n % 3 == 0 {
                others.pop_back()
            } else {
                others.pop_front()
            };
            assert!(s.on_puback(id.unwrap(), now(), &mut out));
        }
    }
    assert_eq!(stuck.len(), 2);
}
