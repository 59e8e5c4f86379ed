//! Unit tests of `owners.rs`: claims, notices and checks driven by hand through a handle with
//! no threads behind it.

use net::codec::{Packet, ProtocolVersion, ReasonCode};
use storage::record::{Record, StoredMessage};
use storage::redis::load::LoadedSession;
use storage::redis::owners::{Claimed, Notice};

use super::tests::{conn, connect_packet, memory_core, output};
use super::Core;
use crate::owners::{for_tests, Event, Request};

const V5: ProtocolVersion = ProtocolVersion::V5;

fn shared_core() -> (
    Core,
    std::sync::mpsc::Receiver<Request>,
    std::sync::Arc<crate::owners::Inbox>,
) {
    let mut core = memory_core();
    let (shared, rx, inbox) = for_tests("me");
    core.share_sessions(shared);
    (core, rx, inbox)
}

/// Opens connection `slot`, sends a persistent CONNECT for `client`: it is parked, its claim
/// asked for.
fn park(core: &mut Core, rx: &std::sync::mpsc::Receiver<Request>, slot: u32, client: &str) {
    core.open_link(conn(slot));
    core.packet(
        conn(slot),
        Packet::Connect(connect_packet(client, V5, false)),
    );
    assert!(core.claiming(conn(slot)));
    assert!(
        output(core, slot).is_empty(),
        "no CONNACK before the claim answers"
    );
    match rx.try_recv() {
        Ok(Request::Claim { claim, .. }) => assert_eq!(claim.client, client),
        other => panic!("expected a claim, got {other:?}"),
    }
}

fn answer(
    core: &mut Core,
    inbox: &crate::owners::Inbox,
    slot: u32,
    client: &str,
    epoch: u64,
    previous: Option<(&str, u64)>,
    session: Option<LoadedSession>,
) {
    // The hold's start: before any epoch held here (one unbroken hold).
    answer_held_since(core, inbox, slot, client, (epoch, 0), previous, session);
}

/// `answer`, with the first epoch of this broker's unbroken hold as Redis says (`held.1`).
fn answer_held_since(
    core: &mut Core,
    inbox: &crate::owners::Inbox,
    slot: u32,
    client: &str,
    (epoch, held_since): (u64, u64),
    previous: Option<(&str, u64)>,
    session: Option<LoadedSession>,
) {
    let claim = storage::redis::owners::Claim {
        client: client.into(),
        data: true,
        persistent: true,
    };
    let claimed = Claimed {
        client: client.into(),
        epoch,
        previous: previous.map(|(b, e)| (b.to_string(), e)),
        held_since,
        session,
        skipped: 0,
    };
    inbox
        .push(Event::Claimed {
            conn: conn(slot),
            claim,
            result: Ok(Box::new(claimed)),
        })
        .unwrap();
    core.poll_owners();
}

fn notice(core: &mut Core, inbox: &crate::owners::Inbox, client: &str, broker: &str, epoch: u64) {
    inbox
        .push(Event::Taken(Notice {
            epoch,
            broker: broker.into(),
            client: client.into(),
        }))
        .unwrap();
    core.poll_owners();
}

fn connack_code(packets: &[Packet]) -> (u8, bool) {
    match packets.first() {
        Some(Packet::ConnAck(a)) => (a.code.0, a.session_present),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn a_session_another_broker_had_is_imported_with_its_queue() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    let message = StoredMessage {
        topic: "t/1".into(),
        payload: b"queued".to_vec(),
        qos: 1,
        retain: false,
        properties: Vec::new(),
        expires_at_ms: 0,
    };
    let loaded = LoadedSession {
        client: "dev".into(),
        expiry: 3600,
        qos2: false,
        records: vec![
            Record::Session {
                client: "dev".into(),
                expiry: 3600,
            },
            Record::Enqueue {
                client: "dev".into(),
                seq: 7,
                message,
            },
        ],
        epoch: 0,
    };
    answer(
        &mut core,
        &inbox,
        1,
        "dev",
        20,
        Some(("other", 10)),
        Some(loaded),
    );
    let out = output(&mut core, 1);
    assert_eq!(connack_code(&out), (0, true));
    match out.get(1) {
        Some(Packet::Publish(p)) => assert_eq!(&p.payload[..], b"queued"),
        other => panic!("expected the queued message, got {other:?}"),
    }
    assert!(!core.claiming(conn(1)));
}

#[test]
fn a_newer_claim_elsewhere_closes_the_connection_with_0x8e() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    answer(&mut core, &inbox, 1, "dev", 20, None, None);
    assert_eq!(connack_code(&output(&mut core, 1)), (0, false));
    // An older notice (and this broker's own) change nothing.
    notice(&mut core, &inbox, "dev", "other", 19);
    assert!(output(&mut core, 1).is_empty());
    notice(&mut core, &inbox, "dev", "other", 21);
    match output(&mut core, 1).first() {
        Some(Packet::Disconnect(d)) => assert_eq!(d.reason, ReasonCode::SESSION_TAKEN_OVER),
        other => panic!("expected DISCONNECT 0x8E, got {other:?}"),
    }
    assert!(!core.by_client.contains_key("dev"), "forgotten here");
}

#[test]
fn a_claim_older_than_a_notice_that_came_first_loses() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    // Another broker claimed it after this claim, but its notice arrives first.
    notice(&mut core, &inbox, "dev", "other", 30);
    answer(&mut core, &inbox, 1, "dev", 20, None, None);
    assert_eq!(
        connack_code(&output(&mut core, 1)).0,
        ReasonCode::SERVER_UNAVAILABLE.0
    );
    assert!(!core.by_client.contains_key("dev"));
}

#[test]
fn a_check_forgets_only_what_another_broker_owns() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "a");
    answer(&mut core, &inbox, 1, "a", 5, None, None);
    park(&mut core, &rx, 2, "b");
    answer(&mut core, &inbox, 2, "b", 6, None, None);
    let _ = (output(&mut core, 1), output(&mut core, 2));
    inbox.push(Event::Missed).unwrap();
    core.poll_owners();
    match rx.try_recv() {
        Ok(Request::Check { mut held, .. }) => {
            held.sort();
            assert_eq!(held, vec![("a".to_string(), 5), ("b".to_string(), 6)]);
        }
        other => panic!("expected a check, got {other:?}"),
    }
    // "a": no owner key (expired) stays ours; "b": another broker's now.
    inbox
        .push(Event::Checked(vec![
            ("a".into(), 5, None),
            ("b".into(), 6, Some(("other".into(), 9))),
        ]))
        .unwrap();
    core.poll_owners();
    assert!(output(&mut core, 1).is_empty());
    assert!(matches!(
        output(&mut core, 2).first(),
        Some(Packet::Disconnect(_))
    ));
    assert!(core.by_client.contains_key("a") && !core.by_client.contains_key("b"));
}

#[test]
fn a_failed_claim_refuses_with_0x88_and_a_client_without_an_id_is_claimed_too() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    let claim = storage::redis::owners::Claim {
        client: "dev".into(),
        data: true,
        persistent: true,
    };
    inbox
        .push(Event::Claimed {
            conn: conn(1),
            claim,
            result: Err("Connection refused".into()),
        })
        .unwrap();
    core.poll_owners();
    assert_eq!(connack_code(&output(&mut core, 1)).0, 0x88);
    // No id: one is assigned here, claimed, and told to the client.
    core.open_link(conn(2));
    core.packet(conn(2), Packet::Connect(connect_packet("", V5, true)));
    let Ok(Request::Claim { claim, .. }) = rx.try_recv() else {
        panic!("a claim");
    };
    assert!(claim.client.starts_with("ringmq-"));
    answer(&mut core, &inbox, 2, &claim.client, 3, None, None);
    match output(&mut core, 2).first() {
        Some(Packet::ConnAck(a)) => assert_eq!(
            a.properties.assigned_client_identifier.as_deref(),
            Some(claim.client.as_str())
        ),
        other => panic!("expected CONNACK, got {other:?}"),
    }
}

#[test]
fn a_claim_out_when_notices_may_have_been_missed_is_checked_once_accepted() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    inbox.push(Event::Missed).unwrap();
    core.poll_owners();
    // Nothing is held yet: no sweep ...
    assert!(rx.try_recv().is_err());
    answer(&mut core, &inbox, 1, "dev", 20, None, None);
    // ... then, once accepted, the claim's own client under its new epoch.
    match rx.try_recv() {
        Ok(Request::Check { held, .. }) => assert_eq!(held, vec![("dev".to_string(), 20)]),
        other => panic!("expected a check of dev, got {other:?}"),
    }
    // A later epoch of this broker's own (a claim whose CONNECT was refused) is still ours.
    inbox
        .push(Event::Checked(vec![(
            "dev".into(),
            20,
            Some(("me".into(), 25)),
        )]))
        .unwrap();
    core.poll_owners();
    assert!(core.by_client.contains_key("dev"));
}

#[test]
fn a_claim_without_an_answer_in_time_is_refused() {
    let (mut core, rx, _inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    core.now += std::time::Duration::from_secs(600);
    core.tick();
    assert_eq!(connack_code(&output(&mut core, 1)).0, 0x88);
    assert!(!core.claiming(conn(1)));
}

#[test]
fn a_session_another_cluster_node_took_is_followed_and_its_routes_held_a_while() {
    use crate::cluster::RouteState;
    use net::codec::{QoS, Subscribe, SubscriptionOptions};
    let (mut core, rx, inbox) = shared_core();
    let cluster = crate::cluster::config::ClusterConfig {
        node_id: "me".into(),
        ..Default::default()
    };
    let bell = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let feed = std::sync::Arc::new(crate::cluster::feed::Feed::new(vec![bell], &cluster));
    core.join_cluster(feed.clone());
    park(&mut core, &rx, 1, "dev");
    answer(&mut core, &inbox, 1, "dev", 20, None, None);
    let filters = ["t/#", "$share/g/s"].map(|f| {
        let options = SubscriptionOptions::qos(QoS::AtLeastOnce);
        (bytestring::ByteString::from(f), options)
    });
    core.packet(
        conn(1),
        Packet::Subscribe(Subscribe {
            packet_id: super::tests::pid(1),
            properties: Default::default(),
            filters: filters.to_vec(),
        }),
    );
    let mut routes = feed.take_routes();
    routes.sort();
    assert_eq!(
        routes,
        [
            ("$share/g/s".into(), RouteState::Live),
            ("t/#".into(), RouteState::Live)
        ]
    );
    // Node "other" claimed it: followed there; the shared group's route goes at once, the
    // session's own filter stays for the grace (other nodes may not have read its new one).
    notice(&mut core, &inbox, "dev", "other", 21);
    assert!(!core.by_client.contains_key("dev"));
    assert_eq!(feed.handovers.len(), 1);
    // A copy another shard routed here before it looked into the table goes on to node
    // "other"; not one routed after it looked, nor a QoS 0 one.
    let message = |qos| {
        crate::session::Message::new(
            "t/x".into(),
            bytes::Bytes::from_static(b"m"),
            qos,
            false,
            Default::default(),
            core.now,
        )
    };
    let seen = feed.handovers.noted();
    assert_eq!(
        core.moved_away_since(&message(QoS::AtLeastOnce), seen - 1),
        [("dev".into(), "other".into())]
    );
    assert!(core
        .moved_away_since(&message(QoS::AtLeastOnce), seen)
        .is_empty());
    assert!(core
        .moved_away_since(&message(QoS::AtMostOnce), seen - 1)
        .is_empty());
    // What a peer shard read reaches this one before its publishes, once per change.
    let mut marks = super::handover::Marks::default();
    let peer = crate::ids::ShardId(1);
    assert_eq!(marks.tell(peer, 0), None);
    assert_eq!(marks.tell(peer, seen), Some(seen));
    assert_eq!(marks.tell(peer, seen), None);
    assert_eq!(core.handover_marks.heard(peer), 0);
    core.on_peer(peer, super::peer::ShardMsg::HandoversSeen(seen));
    assert_eq!(core.handover_marks.heard(peer), seen);
    assert_eq!(
        feed.take_routes(),
        [("$share/g/s".into(), RouteState::None)]
    );
    core.tick();
    assert!(feed.take_routes().is_empty(), "held");
    core.now += feed.handovers.grace();
    core.tick();
    assert_eq!(feed.take_routes(), [("t/#".into(), RouteState::None)]);
    // Coming back here ends the following.
    park(&mut core, &rx, 2, "dev");
    answer(&mut core, &inbox, 2, "dev", 22, Some(("other", 21)), None);
    assert!(feed.handovers.is_empty());
}

#[test]
fn a_hold_another_broker_interrupted_unseen_here_loads_the_stored_session() {
    let (mut core, rx, inbox) = shared_core();
    park(&mut core, &rx, 1, "dev");
    answer(&mut core, &inbox, 1, "dev", 10, None, None);
    assert_eq!(connack_code(&output(&mut core, 1)), (0, false));
    // Another broker took it (its notice missed here), then a claim of this broker ran in
    // Redis but its answer was lost: Redis names this broker (epoch 20) but its hold began
    // at 20, after the epoch 10 held here. The session here is stale: the stored one counts.
    park(&mut core, &rx, 2, "dev");
    let loaded = LoadedSession {
        client: "dev".into(),
        expiry: 3600,
        qos2: false,
        records: vec![
            Record::Session {
                client: "dev".into(),
                expiry: 3600,
            },
            Record::Enqueue {
                client: "dev".into(),
                seq: 7,
                message: StoredMessage {
                    topic: "t/1".into(),
                    payload: b"from the other broker".to_vec(),
                    qos: 1,
                    retain: false,
                    properties: Vec::new(),
                    expires_at_ms: 0,
                },
            },
        ],
        epoch: 0,
    };
    answer_held_since(
        &mut core,
        &inbox,
        2,
        "dev",
        (30, 20),
        Some(("me", 20)),
        Some(loaded),
    );
    let out = output(&mut core, 2);
    assert_eq!(connack_code(&out), (0, true));
    assert!(
        out.iter()
            .any(|p| matches!(p, Packet::Publish(p) if &p.payload[..] == b"from the other broker")),
        "the stored session was loaded: {out:?}"
    );
}
