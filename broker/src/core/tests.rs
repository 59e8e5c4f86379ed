//! Packet handling driven without a ring: packets in, output bytes, effects and store records
//! out. A test store ([`HeldStore`]) keeps records and makes them durable only when the test
//! lands a batch, so held acknowledgements are exercised through the [`Store`] trait; a test
//! sink ([`TestSink`]) holds acknowledgements and backpressure through the [`Sink`] trait.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use bytestring::ByteString;
use net::codec::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, Publish, QoS,
    ReasonCode, Subscribe, SubscriptionOptions, Unsubscribe, Will,
};
use storage::record::Record;
use storage::store::{IoDone, IoRequest, Landed, Store};

use super::{Core, Effect};
use crate::auth::Auth;
use crate::config::{Config, Durability};
use crate::durable::recover::Recovered;
use crate::ids::{home_shard, ConnId, ShardId};
use crate::metrics::Metrics;
use crate::session::Message;
use crate::sink::{Offer, Sink};

/// A store that keeps what it is given and makes it durable only when a batch lands
/// (`io_done`), or refuses it when told to fail.
#[derive(Debug, Default)]
struct HeldStore {
    records: Arc<Mutex<Vec<Record>>>,
    appended: u64,
    fail: bool,
}

impl Store for HeldStore {
    fn persistent(&self) -> bool {
        true
    }
    fn append(&mut self, record: &Record) -> Result<(), storage::Error> {
        self.records.lock().unwrap().push(record.clone());
        self.appended += 1;
        Ok(())
    }
    fn appended(&self) -> u64 {
        self.appended
    }
    fn failing(&self) -> bool {
        self.fail
    }
    fn next_io(&mut self, _now: Instant) -> Option<IoRequest> {
        None
    }
    fn io_done(&mut self, _done: IoDone) -> Option<Landed> {
        Some(Landed {
            durable: self.appended,
            ..Landed::default()
        })
    }
    fn maintain(&mut self, _budget: u64) -> Result<(), storage::Error> {
        Ok(())
    }
}

/// A sink that wants `sink/#`, holds every token it is given until `confirm`, and is full
/// while `full` is set.
#[derive(Debug, Default)]
struct TestSink {
    state: Arc<Mutex<SinkState>>,
}

#[derive(Debug, Default)]
struct SinkState {
    taken: Vec<String>,
    pending: Vec<u64>,
    confirm: bool,
    full: bool,
}

impl Sink for TestSink {
    fn name(&self) -> &str {
        "test"
    }
    fn wants(&self, topic: &str) -> bool {
        topic.starts_with("sink/")
    }
    fn offer(&mut self, message: &Message, _publisher: &str, token: Option<u64>, _: u64) -> Offer {
        let mut s = self.state.lock().unwrap();
        s.taken.push(message.topic.to_string());
        match token {
            Some(t) => {
                s.pending.push(t);
                Offer::Pending
            }
            None => Offer::Taken,
        }
    }
    fn full(&self) -> bool {
        self.state.lock().unwrap().full
    }
    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>) {
        let mut s = self.state.lock().unwrap();
        if s.confirm {
            out.extend(s.pending.drain(..).map(|t| (t, true)));
        }
    }
}

/// Lands the test store's batch: everything appended so far becomes durable.
fn land(core: &mut Core) {
    core.store_io_done(IoDone {
        op: 0,
        result: 0,
        buf: None,
    });
}

pub(super) fn config(durability: Durability, shards: usize) -> Config {
    Config {
        shards,
        durability,
        ..Config::default()
    }
}

pub(super) fn core_with(config: Config, store: Box<dyn Store + Send>) -> Core {
    let auth = Arc::new(Auth::load(&config).unwrap());
    let metrics = Arc::new(Metrics::new(config.shards));
    let recovered = Recovered {
        store,
        state: None,
        retained: Vec::new(),
        retain_version: 0,
        cluster_retained: Vec::new(),
        remote_routes: Vec::new(),
        epochs: Vec::new(),
    };
    Core::new(ShardId(0), config, auth, metrics, recovered, Instant::now())
}

pub(super) fn memory_core() -> Core {
    core_with(
        config(Durability::Memory, 1),
        Box::new(storage::store::MemoryStore::default()),
    )
}

pub(super) fn conn(slot: u32) -> ConnId {
    ConnId {
        slot,
        generation: 0,
    }
}

pub(super) fn pid(n: u16) -> PacketId {
    PacketId::new(n).unwrap()
}

pub(super) fn connect_packet(client: &str, version: ProtocolVersion, clean: bool) -> Box<Connect> {
    Box::new(Connect {
        version,
        clean_start: clean,
        keep_alive: 60,
        properties: Default::default(),
        client_id: ByteString::from(client),
        will: None,
        username: None,
        password: None,
        bridge: false,
    })
}

/// Opens connection `slot` and sends `connect`; returns the CONNACK.
pub(super) fn connect(core: &mut Core, slot: u32, c: Box<Connect>) -> Packet {
    core.open_link(conn(slot));
    core.packet(conn(slot), Packet::Connect(c));
    let mut out = output(core, slot);
    assert!(!out.is_empty(), "a CONNACK");
    out.remove(0)
}

/// Decodes (and clears) what the core wrote to connection `slot`.
pub(super) fn output(core: &mut Core, slot: u32) -> Vec<Packet> {
    let Some(link) = core.conn_mut(conn(slot)) else {
        return Vec::new();
    };
    let mut decoder = Decoder::new(1 << 20);
    decoder.version = link.decoder.version;
    let mut buf: BytesMut = std::mem::take(&mut link.out);
    let mut packets = Vec::new();
    while let Some(p) = decoder.decode(&mut buf).unwrap() {
        packets.push(p);
    }
    assert!(buf.is_empty());
    packets
}

pub(super) fn publish(topic: &str, qos: QoS, id: u16) -> Packet {
    Packet::Publish(Publish {
        dup: false,
        qos,
        retain: false,
        topic: ByteString::from(topic),
        packet_id: (qos != QoS::AtMostOnce).then(|| pid(id)),
        properties: Default::default(),
        payload: Bytes::from_static(b"hello"),
    })
}

pub(super) fn subscribe(core: &mut Core, slot: u32, filter: &str, qos: QoS) {
    core.packet(
        conn(slot),
        Packet::Subscribe(Subscribe {
            packet_id: pid(1),
            properties: Default::default(),
            filters: vec![(ByteString::from(filter), SubscriptionOptions::qos(qos))],
        }),
    );
    let out = output(core, slot);
    assert!(matches!(out.as_slice(), [Packet::SubAck(_)]), "{out:?}");
}

pub(super) fn closes(core: &mut Core, slot: u32) -> bool {
    core.effects
        .iter()
        .any(|e| matches!(e, Effect::Close(id) if *id == conn(slot)))
}

pub(super) fn disconnect_reason(packets: &[Packet]) -> Option<ReasonCode> {
    packets.iter().find_map(|p| match p {
        Packet::Disconnect(d) => Some(d.reason),
        _ => None,
    })
}

pub(super) fn acks(packets: &[Packet]) -> Vec<(PubRespKind, u16, u8)> {
    packets
        .iter()
        .filter_map(|p| match p {
            Packet::PubResp(r) => Some((r.kind, r.packet_id.get(), r.reason.0)),
            _ => None,
        })
        .collect()
}

#[test]
fn connect_is_answered_with_the_brokers_capabilities() {
    let mut core = memory_core();
    let Packet::ConnAck(ack) =
        connect(&mut core, 1, connect_packet("a", ProtocolVersion::V5, true))
    else {
        panic!("not a CONNACK");
    };
    assert_eq!(ack.code, ReasonCode::SUCCESS);
    assert!(!ack.session_present);
    assert_eq!(ack.properties.receive_maximum.map(|n| n.get()), Some(1000));
    assert_eq!(ack.properties.shared_subscription_available, Some(true));
    assert!(core.effects.is_empty());
}

#[test]
fn a_second_connect_is_a_protocol_error() {
    let mut core = memory_core();
    connect(&mut core, 1, connect_packet("a", ProtocolVersion::V5, true));
    core.packet(
        conn(1),
        Packet::Connect(connect_packet("a", ProtocolVersion::V5, true)),
    );
    let out = output(&mut core, 1);
    assert_eq!(disconnect_reason(&out), Some(ReasonCode::PROTOCOL_ERROR));
    assert!(closes(&mut core, 1));
    assert_eq!(core.stats.protocol_errors, 1);
}

#[test]
fn a_packet_before_connect_closes_without_an_answer() {
    let mut core = memory_core();
    core.open_link(conn(1));
    core.packet(conn(1), Packet::PingReq);
    assert!(output(&mut core, 1).is_empty());
    assert!(closes(&mut core, 1));
}

#[test]
fn a_subscriber_gets_what_is_published_and_the_publisher_its_puback() {
    let mut core = memory_core();
    connect(
        &mut core,
        1,
        connect_packet("sub", ProtocolVersion::V311, true),
    );
    subscribe(&mut core, 1, "t/+", QoS::AtLeastOnce);
    connect(
        &mut core,
        2,
        connect_packet("pub", ProtocolVersion::V311, true),
    );
    core.packet(conn(2), publish("t/1", QoS::AtLeastOnce, 7));
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubAck, 7, 0)]
    );
    let out = output(&mut core, 1);
    let [Packet::Publish(p)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!((&*p.topic, p.qos), ("t/1", QoS::AtLeastOnce));
    assert_eq!(core.stats.publishes_in, 1);
    assert_eq!(core.stats.publishes_out, 1);
}

#[test]
fn qos1_to_an_offline_persistent_session_is_logged_and_acked_once_durable() {
    let store = HeldStore::default();
    let records = store.records.clone();
    let mut core = core_with(config(Durability::Sync, 1), Box::new(store));
    connect(
        &mut core,
        1,
        connect_packet("sub", ProtocolVersion::V311, false),
    );
    subscribe(&mut core, 1, "t", QoS::AtLeastOnce);
    core.close(conn(1), None, "test: subscriber goes away");
    core.close_link(conn(1));
    // Everything so far is durable.
    land(&mut core);
    let before = records.lock().unwrap().len();
    connect(
        &mut core,
        2,
        connect_packet("pub", ProtocolVersion::V311, true),
    );
    core.packet(conn(2), publish("t", QoS::AtLeastOnce, 9));
    let logged: Vec<Record> = records.lock().unwrap()[before..].to_vec();
    assert!(
        matches!(logged.as_slice(), [Record::Message { client, .. }] if client == "sub"),
        "{logged:?}"
    );
    assert!(acks(&output(&mut core, 2)).is_empty(), "held until durable");
    land(&mut core);
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubAck, 9, 0)]
    );
}

#[test]
fn acks_leave_in_publish_order_behind_a_held_one() {
    let store = HeldStore::default();
    let mut core = core_with(config(Durability::Sync, 1), Box::new(store));
    connect(
        &mut core,
        1,
        connect_packet("sub", ProtocolVersion::V311, false),
    );
    subscribe(&mut core, 1, "durable", QoS::AtLeastOnce);
    core.close(conn(1), None, "test");
    core.close_link(conn(1));
    connect(
        &mut core,
        2,
        connect_packet("pub", ProtocolVersion::V311, true),
    );
    core.packet(conn(2), publish("durable", QoS::AtLeastOnce, 1));
    // Nothing to log for this one, but it must not overtake the first.
    core.packet(conn(2), publish("nobody", QoS::AtLeastOnce, 2));
    assert!(acks(&output(&mut core, 2)).is_empty());
    land(&mut core);
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubAck, 1, 0), (PubRespKind::PubAck, 2, 0)]
    );
}

#[test]
fn a_failing_store_refuses_durable_publishes_with_0x97() {
    let store = HeldStore {
        fail: true,
        ..HeldStore::default()
    };
    let mut core = core_with(config(Durability::Sync, 1), Box::new(store));
    connect(
        &mut core,
        1,
        connect_packet("pub", ProtocolVersion::V5, true),
    );
    core.packet(conn(1), publish("t", QoS::AtLeastOnce, 3));
    assert_eq!(
        acks(&output(&mut core, 1)),
        vec![(PubRespKind::PubAck, 3, ReasonCode::QUOTA_EXCEEDED.0)]
    );
    // QoS 0 carries on.
    core.packet(conn(1), publish("t", QoS::AtMostOnce, 0));
    assert!(!closes(&mut core, 1));
}

#[test]
fn takeover_closes_the_old_connection_with_0x8e_and_publishes_its_will() {
    let mut core = memory_core();
    connect(
        &mut core,
        1,
        connect_packet("watcher", ProtocolVersion::V5, true),
    );
    subscribe(&mut core, 1, "will/#", QoS::AtMostOnce);
    let mut first = connect_packet("dev", ProtocolVersion::V5, true);
    first.will = Some(Will {
        qos: QoS::AtMostOnce,
        retain: false,
        properties: Default::default(),
        topic: ByteString::from("will/dev"),
        payload: Bytes::from_static(b"gone"),
    });
    connect(&mut core, 2, first);
    connect(
        &mut core,
        3,
        connect_packet("dev", ProtocolVersion::V5, true),
    );
    assert_eq!(
        disconnect_reason(&output(&mut core, 2)),
        Some(ReasonCode::SESSION_TAKEN_OVER)
    );
    assert!(closes(&mut core, 2));
    let out = output(&mut core, 1);
    assert!(
        matches!(out.as_slice(), [Packet::Publish(p)] if &*p.topic == "will/dev" && &p.payload[..] == b"gone"),
        "{out:?}"
    );
}

#[test]
fn a_qos2_retransmission_is_acknowledged_but_not_delivered_again() {
    let mut core = memory_core();
    connect(
        &mut core,
        1,
        connect_packet("sub", ProtocolVersion::V311, true),
    );
    subscribe(&mut core, 1, "q2", QoS::AtMostOnce);
    connect(
        &mut core,
        2,
        connect_packet("pub", ProtocolVersion::V311, true),
    );
    core.packet(conn(2), publish("q2", QoS::ExactlyOnce, 5));
    core.packet(conn(2), publish("q2", QoS::ExactlyOnce, 5));
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubRec, 5, 0), (PubRespKind::PubRec, 5, 0)]
    );
    assert_eq!(output(&mut core, 1).len(), 1, "delivered once");
    core.packet(
        conn(2),
        Packet::PubResp(PubResp::new(PubRespKind::PubRel, pid(5))),
    );
    assert_eq!(
        acks(&output(&mut core, 2)),
        vec![(PubRespKind::PubComp, 5, 0)]
    );
}

#[test]
fn a_publish_above_qos_max_is_refused_with_0x9b() {
    let mut core = core_with(
        Config {
            qos_max: 1,
            ..config(Durability::Memory, 1)
        },
        Box::new(storage::store::MemoryStore::default()),
    );
    connect(
        &mut core,
        1,
        connect_packet("pub", ProtocolVersion::V5, true),
    );
    core.packet(conn(1), publish("t", QoS::ExactlyOnce, 1));
    assert_eq!(
        disconnect_reason(&output(&mut core, 1)),
        Some(ReasonCode::QOS_NOT_SUPPORTED)
    );
    assert!(closes(&mut core, 1));
}

#[test]
fn an_unknown_topic_alias_is_a_protocol_error() {
    let mut core = memory_core();
    connect(
        &mut core,
        1,
        connect_packet("pub", ProtocolVersion::V5, true),
    );
    let Packet::Publish(mut p) = publish("", QoS::AtMostOnce, 0) else {
        unreachable!()
    };
    p.properties.topic_alias = std::num::NonZeroU16::new(3);
    core.packet(conn(1), Packet::Publish(p));
    assert_eq!(
        disconnect_reason(&output(&mut core, 1)),
        Some(ReasonCode::PROTOCOL_ERROR)
    );
}

#[test]
fn unsubscribing_a_filter_never_subscribed_says_so() {
    let mut core = memory_core();
    connect(&mut core, 1, connect_packet("c", ProtocolVersion::V5, true));
    core.packet(
        conn(1),
        Packet::Unsubscribe(Unsubscribe {
            packet_id: pid(4),
            properties: Default::default(),
            filters: vec![ByteString::from("never")],
        }),
    );
    let out = output(&mut core, 1);
    let [Packet::UnsubAck(a)] = out.as_slice() else {
        panic!("{out:?}");
    };
    assert_eq!(a.reasons, vec![ReasonCode::NO_SUBSCRIPTION_EXISTED]);
}

#[test]
fn a_connect_for_another_shard_is_handed_over() {
    let mut core = core_with(
        config(Durability::Memory, 2),
        Box::new(storage::store::MemoryStore::default()),
    );
    let client = (0..)
        .map(|i| format!("c{i}"))
        .find(|c| home_shard(c.as_bytes(), 2) == ShardId(1))
        .unwrap();
    core.open_link(conn(1));
    core.packet(
        conn(1),
        Packet::Connect(connect_packet(&client, ProtocolVersion::V311, true)),
    );
    assert!(
        output(&mut core, 1).is_empty(),
        "answered by the home shard"
    );
    assert!(
        matches!(core.effects.front(), Some(Effect::Handoff { conn: c, home, .. }) if *c == conn(1) && *home == ShardId(1)),
        "{:?}",
        core.effects
    );
}

#[test]
fn a_sink_holds_the_puback_until_it_confirms_and_pauses_input_when_full() {
    let mut core = memory_core();
    let sink = TestSink::default();
    let state = sink.state.clone();
    core.sinks.add(Box::new(sink));
    connect(
        &mut core,
        1,
        connect_packet("pub", ProtocolVersion::V311, true),
    );
    core.packet(conn(1), publish("sink/a", QoS::AtLeastOnce, 1));
    core.packet(conn(1), publish("other", QoS::AtLeastOnce, 2));
    core.packet(conn(1), publish("sink/b", QoS::AtMostOnce, 0));
    assert_eq!(state.lock().unwrap().taken, vec!["sink/a", "sink/b"]);
    core.poll_sinks();
    assert!(acks(&output(&mut core, 1)).is_empty(), "waits for the sink");
    state.lock().unwrap().confirm = true;
    core.poll_sinks();
    assert_eq!(
        acks(&output(&mut core, 1)),
        vec![(PubRespKind::PubAck, 1, 0), (PubRespKind::PubAck, 2, 0)]
    );
    assert!(!core.input_paused());
    state.lock().unwrap().full = true;
    assert!(core.input_paused());
}

/// A source that gives what `queue` holds and records the reports.
#[derive(Debug, Default)]
struct TestSource {
    state: Arc<Mutex<SourceState>>,
}

#[derive(Debug, Default)]
struct SourceState {
    queue: Vec<crate::source::Inbound>,
    done: Vec<(u32, i64, bool)>,
}

impl crate::source::Source for TestSource {
    fn name(&self) -> &str {
        "test"
    }
    fn take(&mut self, max: usize, out: &mut Vec<crate::source::Inbound>) {
        let mut s = self.state.lock().unwrap();
        let n = max.min(s.queue.len());
        out.extend(s.queue.drain(..n));
    }
    fn done(&mut self, lane: u32, seq: i64, ok: bool) {
        self.state.lock().unwrap().done.push((lane, seq, ok));
    }
    fn counts(&self) -> crate::source::SourceCounts {
        crate::source::SourceCounts::default()
    }
}

#[test]
fn source_messages_are_reported_once_durable_in_lane_order_and_not_offered_to_sinks() {
    let store = HeldStore::default();
    let mut core = core_with(config(Durability::Sync, 1), Box::new(store));
    let sink = TestSink::default();
    let taken = sink.state.clone();
    core.sinks.add(Box::new(sink));
    connect(
        &mut core,
        1,
        connect_packet("away", ProtocolVersion::V311, false),
    );
    subscribe(&mut core, 1, "sink/#", QoS::AtLeastOnce);
    core.close(conn(1), None, "test: subscriber goes away");
    core.close_link(conn(1));
    connect(
        &mut core,
        2,
        connect_packet("live", ProtocolVersion::V311, true),
    );
    subscribe(&mut core, 2, "sink/#", QoS::AtLeastOnce);
    land(&mut core);
    let _ = output(&mut core, 2);
    let source = TestSource::default();
    let state = source.state.clone();
    let message = |topic: &str| {
        Message::new(
            ByteString::from(topic),
            Bytes::from_static(b"m"),
            QoS::AtLeastOnce,
            false,
            Default::default(),
            Instant::now(),
        )
    };
    state.lock().unwrap().queue = [(7, 10, "sink/a"), (8, 5, "sink/b"), (7, 11, "sink/c")]
        .into_iter()
        .map(|(lane, seq, topic)| crate::source::Inbound {
            lane,
            seq,
            message: message(topic),
            shared_only: None,
            retain_version: None,
            stamp_ms: None,
            for_client: None,
            sent_to: None,
        })
        .collect();
    core.sources.add(Box::new(source));
    core.poll_sources();
    let delivered = output(&mut core, 2)
        .iter()
        .filter(|p| matches!(p, Packet::Publish(_)))
        .count();
    assert_eq!(delivered, 3, "the connected subscriber has them at once");
    assert!(
        state.lock().unwrap().done.is_empty(),
        "not handed on before the offline session's copies are durable"
    );
    assert!(
        taken.lock().unwrap().taken.is_empty(),
        "a source's message is not offered to the sinks (no loop back to Kafka)"
    );
    land(&mut core);
    let done = state.lock().unwrap().done.clone();
    let lane = |l: u32| -> Vec<(i64, bool)> {
        done.iter()
            .filter(|d| d.0 == l)
            .map(|d| (d.1, d.2))
            .collect()
    };
    assert_eq!(lane(7), vec![(10, true), (11, true)], "in lane order");
    assert_eq!(lane(8), vec![(5, true)]);
}

#[test]
fn a_retained_copy_from_another_node_keeps_its_version() {
    let mut core = core_with(
        config(Durability::Memory, 1),
        Box::new(HeldStore::default()),
    );
    let source = TestSource::default();
    let state = source.state.clone();
    core.sources.add(Box::new(source));
    let now = Instant::now();
    let retained =
        |payload: &'static [u8], version: Option<u64>, seq: i64| crate::source::Inbound {
            lane: 1,
            seq,
            message: Message::new(
                ByteString::from("r/t"),
                Bytes::from_static(payload),
                QoS::AtMostOnce,
                true,
                Default::default(),
                now,
            ),
            // A downlink's copy names the shared groups it may reach (none here).
            shared_only: Some(Vec::new()),
            retain_version: version,
            stamp_ms: None,
            for_client: None,
            sent_to: None,
        };
    let stored = |core: &Core| {
        let mut out = Vec::new();
        let cursor = crate::retained::Cursor::Start;
        core.retained
            .page("r/t", &cursor, 10, 1 << 20, now, &mut out);
        out.iter().map(|m| m.payload.clone()).collect::<Vec<_>>()
    };
    // A set made here, then a copy another node made earlier (its version is older): the
    // copy loses, as it did on that node.
    state.lock().unwrap().queue = [retained(b"here", None, 1)].into();
    core.poll_sources();
    state.lock().unwrap().queue = [retained(b"earlier", Some(64), 2)].into();
    core.poll_sources();
    assert_eq!(stored(&core), [&b"here"[..]]);
    // A copy with a version a day or more ahead is versioned here instead (it would win
    // for good); a set here afterwards still wins over it.
    let ahead = crate::retained::version(now, crate::ids::ShardId(0)) + ((2 * 86_400_000_000) << 6);
    state.lock().unwrap().queue = [retained(b"ahead", Some(ahead), 3)].into();
    core.poll_sources();
    assert_eq!(stored(&core), [&b"ahead"[..]]);
    let plausible = crate::retained::version(now, crate::ids::ShardId(0)) + (3_600_000_000 << 6);
    state.lock().unwrap().queue = [retained(b"next hour", Some(plausible), 4)].into();
    core.poll_sources();
    assert_eq!(stored(&core), [&b"next hour"[..]]);
    state.lock().unwrap().queue = [retained(b"later here", None, 5)].into();
    core.poll_sources();
    assert_eq!(
        stored(&core),
        [&b"later here"[..]],
        "this shard's sets are versioned above a copy it took"
    );
}
