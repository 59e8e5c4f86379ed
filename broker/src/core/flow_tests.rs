//! Backpressure driven without a ring: congested sessions pause and resume their publishers
//! (here and across the mesh), the queue policies, stuck consumers.

use std::time::Duration;

use net::codec::{Packet, PubResp, PubRespKind, QoS, ReasonCode, Subscribe, SubscriptionOptions};

use super::flow::{Publisher, PublisherRef};
use super::peer::{AckRef, ShardMsg};
use super::tests::{
    acks, closes, config, conn, connect, connect_packet, core_with, disconnect_reason, output, pid,
    publish, subscribe,
};
use super::{Core, Effect};
use crate::config::{Config, Durability, QueueFullPolicy};
use crate::ids::{home_shard, ShardId};
use crate::session::Message;
use net::codec::ProtocolVersion::{V311, V5};

fn flow_config(shards: usize) -> Config {
    Config {
        inflight_count_max: 1,
        session_queue_count_max: 10,
        session_queue_high_watermark: 3,
        session_queue_low_watermark: 1,
        ..config(Durability::Memory, shards)
    }
}

fn core(config: Config) -> Core {
    core_with(config, Box::new(storage::store::MemoryStore::default()))
}

fn paused(core: &Core, slot: u32) -> bool {
    core.effects
        .iter()
        .any(|e| matches!(e, Effect::Pause(id) if *id == conn(slot)))
}

fn resumed(core: &Core, slot: u32) -> bool {
    core.effects
        .iter()
        .any(|e| matches!(e, Effect::Resume(id) if *id == conn(slot)))
}

/// The subscriber on `slot` acknowledges every PUBLISH it was sent; returns how many.
fn ack_all(core: &mut Core, slot: u32) -> usize {
    let mut n = 0;
    loop {
        let out = output(core, slot);
        let ids: Vec<_> = out
            .iter()
            .filter_map(|p| match p {
                Packet::Publish(p) => p.packet_id,
                _ => None,
            })
            .collect();
        if ids.is_empty() {
            return n;
        }
        for id in ids {
            n += 1;
            core.packet(
                conn(slot),
                Packet::PubResp(PubResp::new(PubRespKind::PubAck, id)),
            );
        }
    }
}

#[test]
fn a_congested_session_pauses_its_publisher_only_and_loses_nothing() {
    let mut core = core(flow_config(1));
    connect(&mut core, 1, connect_packet("slow", V311, true));
    subscribe(&mut core, 1, "slow", QoS::AtLeastOnce);
    connect(&mut core, 2, connect_packet("pub", V311, true));
    connect(&mut core, 3, connect_packet("fastsub", V311, true));
    subscribe(&mut core, 3, "fast", QoS::AtLeastOnce);
    connect(&mut core, 4, connect_packet("fastpub", V311, true));
    // One in the window, then the queue: the third queued message reaches the watermark.
    for i in 1..=3 {
        core.packet(conn(2), publish("slow", QoS::AtLeastOnce, i));
    }
    assert!(!paused(&core, 2));
    core.packet(conn(2), publish("slow", QoS::AtLeastOnce, 4));
    assert!(paused(&core, 2), "{:?}", core.effects);
    assert_eq!(core.conn_mut(conn(2)).unwrap().held_by, 1);
    // What was already read still lands, past the queue bound, and is acknowledged.
    for i in 5..=20 {
        core.packet(conn(2), publish("slow", QoS::AtLeastOnce, i));
    }
    assert_eq!(acks(&output(&mut core, 2)).len(), 20);
    assert_eq!(core.stats.dropped_queue_full, 0);
    assert_eq!(core.stats.publisher_pauses, 1, "paused once per episode");
    // Another publisher to a healthy subscriber is not held.
    core.packet(conn(4), publish("fast", QoS::AtLeastOnce, 1));
    assert!(!paused(&core, 4));
    assert_eq!(acks(&output(&mut core, 4)).len(), 1);
    assert_eq!(ack_all(&mut core, 3), 1);
    // The slow subscriber catches up: every message arrives, the publisher resumes once.
    assert!(!resumed(&core, 2));
    assert_eq!(ack_all(&mut core, 1), 20);
    assert!(resumed(&core, 2));
    assert_eq!(core.conn_mut(conn(2)).unwrap().held_by, 0);
    assert!(core.congested.is_empty());
}

#[test]
fn a_client_feeding_its_own_subscription_is_not_paused_by_it() {
    let mut core = core(flow_config(1));
    connect(&mut core, 1, connect_packet("echo", V311, true));
    subscribe(&mut core, 1, "echo", QoS::AtLeastOnce);
    for i in 1..=20 {
        core.packet(conn(1), publish("echo", QoS::AtLeastOnce, i));
    }
    assert!(!paused(&core, 1));
    // Bounded by the queue, under the default policy.
    assert_eq!(core.stats.dropped_queue_full, 20 - 1 - 10);
}

#[test]
fn publishers_on_other_shards_are_paused_and_resumed_through_the_mesh() {
    let mut core = core(flow_config(2));
    let remote = Publisher {
        shard: ShardId(1),
        conn: conn(77),
        v5: false,
    };
    let client = (0..)
        .map(|i| format!("slow{i}"))
        .find(|c| home_shard(c.as_bytes(), 2) == ShardId(0))
        .unwrap();
    connect(&mut core, 1, connect_packet(&client, V311, true));
    // The SUBACK waits for the peer to confirm the route: answer its barrier.
    core.packet(
        conn(1),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![("slow".into(), SubscriptionOptions::qos(QoS::AtLeastOnce))],
        }),
    );
    let barriers: Vec<u64> = core
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Peer(_, ShardMsg::Barrier(t)) => Some(*t),
            _ => None,
        })
        .collect();
    for t in barriers {
        core.on_peer(ShardId(1), ShardMsg::BarrierAck(t));
    }
    assert!(matches!(
        output(&mut core, 1).as_slice(),
        [Packet::SubAck(_)]
    ));
    core.effects.clear();
    let message = || {
        Message::new(
            "slow".into(),
            bytes::Bytes::from_static(b"x"),
            QoS::AtLeastOnce,
            false,
            Default::default(),
            core_now(),
        )
    };
    for _ in 0..6 {
        core.on_peer(
            ShardId(1),
            ShardMsg::Publish(message(), AckRef::NONE, PublisherRef::new(Some(remote))),
        );
    }
    let pauses = core
        .effects
        .iter()
        .filter(|e| matches!(e, Effect::Peer(ShardId(1), ShardMsg::Pause(c)) if *c == conn(77)))
        .count();
    assert_eq!(pauses, 1);
    assert_eq!(ack_all(&mut core, 1), 6);
    assert!(core
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Peer(ShardId(1), ShardMsg::Resume(c)) if *c == conn(77))));
    // The receiving side counts holds: two sessions pause it, both must let go.
    connect(&mut core, 2, connect_packet("pub", V311, true));
    core.effects.clear();
    core.on_peer(ShardId(1), ShardMsg::Pause(conn(2)));
    core.on_peer(ShardId(1), ShardMsg::Pause(conn(2)));
    assert!(paused(&core, 2));
    core.on_peer(ShardId(1), ShardMsg::Resume(conn(2)));
    assert!(!resumed(&core, 2));
    core.on_peer(ShardId(1), ShardMsg::Resume(conn(2)));
    assert!(resumed(&core, 2));
}

fn core_now() -> std::time::Instant {
    std::time::Instant::now()
}

/// An offline persistent session with a full queue (2 messages), and two publishers.
fn full_offline_queue(policy: QueueFullPolicy) -> Core {
    let mut core = core(Config {
        session_queue_count_max: 2,
        session_queue_high_watermark: 2,
        session_queue_full_policy: policy,
        ..flow_config(1)
    });
    connect(&mut core, 1, connect_packet("offline", V311, false));
    subscribe(&mut core, 1, "q", QoS::AtLeastOnce);
    core.close(conn(1), None, "test: client goes away");
    connect(&mut core, 2, connect_packet("pub5", V5, true));
    connect(&mut core, 3, connect_packet("pub3", V311, true));
    for i in 1..=2 {
        core.packet(conn(2), publish("q", QoS::AtLeastOnce, i));
    }
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubAck, 1, 0), (PubRespKind::PubAck, 2, 0)]
    );
    core
}

#[test]
fn offline_queue_policies_answer_and_count_as_configured() {
    // refuse: MQTT 5 gets 0x97, MQTT 3 a plain PUBACK and a counted drop; QoS 2 too.
    let mut core = full_offline_queue(QueueFullPolicy::Refuse);
    core.packet(conn(2), publish("q", QoS::AtLeastOnce, 3));
    core.packet(conn(2), publish("q", QoS::ExactlyOnce, 4));
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![
            (PubRespKind::PubAck, 3, 0x97),
            (PubRespKind::PubRec, 4, 0x97)
        ]
    );
    core.packet(conn(3), publish("q", QoS::AtLeastOnce, 5));
    assert_eq!(
        acks(&output(&mut core, 3)),
        vec![(PubRespKind::PubAck, 5, 0)]
    );
    assert_eq!(
        (core.stats.refused_queue_full, core.stats.dropped_queue_full),
        (2, 1)
    );
    assert!(!closes(&mut core, 3));

    // drop-newest and drop-oldest: acknowledged, counted.
    for policy in [QueueFullPolicy::DropNewest, QueueFullPolicy::DropOldest] {
        let mut core = full_offline_queue(policy);
        core.packet(conn(2), publish("q", QoS::AtLeastOnce, 3));
        core.packet(conn(3), publish("q", QoS::AtLeastOnce, 4));
        assert_eq!(
            acks(&output(&mut core, 2)),
            vec![(PubRespKind::PubAck, 3, 0)]
        );
        assert_eq!(
            acks(&output(&mut core, 3)),
            vec![(PubRespKind::PubAck, 4, 0)]
        );
        assert_eq!(
            (core.stats.refused_queue_full, core.stats.dropped_queue_full),
            (0, 2)
        );
    }
}

#[test]
fn a_consumer_that_takes_nothing_is_disconnected_and_its_publishers_resume() {
    let mut core = core(Config {
        slow_consumer_timeout_ms: 1000,
        ..flow_config(1)
    });
    connect(&mut core, 1, connect_packet("stuck", V5, true));
    subscribe(&mut core, 1, "s", QoS::AtLeastOnce);
    connect(&mut core, 2, connect_packet("pub", V311, true));
    for i in 1..=5 {
        core.packet(conn(2), publish("s", QoS::AtLeastOnce, i));
    }
    assert!(paused(&core, 2));
    assert_eq!(acks(&output(&mut core, 2)).len(), 5);
    core.effects.clear();
    core.tick();
    assert!(!closes(&mut core, 1), "not yet");
    core.now += Duration::from_millis(1500);
    core.tick();
    assert!(closes(&mut core, 1));
    assert!(core
        .effects
        .iter()
        .any(|e| matches!(e, Effect::Abort(id) if *id == conn(1))));
    assert!(resumed(&core, 2));
    let out = output(&mut core, 1);
    assert_eq!(disconnect_reason(&out), Some(ReasonCode::QUOTA_EXCEEDED));
    assert_eq!(core.stats.slow_consumers, 1);
    // A healthy idle subscriber is left alone.
    connect(&mut core, 3, connect_packet("idle", V5, true));
    subscribe(&mut core, 3, "nothing", QoS::AtLeastOnce);
    core.now += Duration::from_secs(10);
    core.effects.clear();
    core.tick();
    assert!(!closes(&mut core, 3));
}
