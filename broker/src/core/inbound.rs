//! Messages from sources (Kafka -> MQTT, a cluster node's downlink): taken from each source a
//! bounded batch per loop pass, published like a client's PUBLISH (retained to its owner
//! shard, routed to sessions, shared groups and peers; never offered back to the Kafka sink;
//! a Kafka record offered to the cluster sink, a downlink's message to no sink; paused by
//! congested subscribers like a client publisher), and reported to the source
//! when the broker took responsibility: the moment a client's PUBACK would leave, through the
//! same ack ledger, in each lane's order (a lane is a connection on the ledger). A downlink
//! record for a session that moved to another node is forwarded there too (`handover.rs`);
//! one forwarded here for one session goes to it alone.

use net::codec::{PacketId, PubResp, PubRespKind, QoS};

use super::flow::Publisher;
use super::{Core, Origin};
use crate::source::{Inbound, Sources};

impl Core {
    /// Takes and publishes what the sources have, at most `consume_batch_max` per source.
    /// Called by the reactor once per loop pass while its input is not paused.
    pub fn poll_sources(&mut self) {
        if self.sources.is_empty() {
            return;
        }
        let max = self
            .config
            .kafka
            .as_ref()
            .map_or(512, |k| k.consume_batch_max);
        let mut batch = std::mem::take(&mut self.inbound_scratch);
        for index in 0..self.sources.len() {
            if self.durable.failing() || !self.durable.available() || self.sources.input_held() {
                // QoS 1/2 messages need the store; a congested subscriber holds the sources
                // back as it would a publisher: they wait in the source (bounded there).
                break;
            }
            self.sources.take(index, max, &mut batch);
            for inbound in batch.drain(..) {
                self.publish_inbound(index, inbound);
            }
        }
        self.inbound_scratch = batch;
    }

    fn publish_inbound(&mut self, index: usize, inbound: Inbound) {
        let Inbound {
            lane,
            seq,
            mut message,
            shared_only,
            retain_version,
            stamp_ms,
            for_client,
            sent_to,
        } = inbound;
        // The broker's own limits apply as to a client's PUBLISH.
        message.qos = message.qos.min(self.config.max_qos());
        message.retain &= self.config.retain_available;
        let before = self.durable.appended();
        if let Some((client, copy_seq)) = for_client {
            // A copy forwarded for one session that moved here: to it alone (or on to the
            // node it moved to since: the report waits for that copy too).
            let token = (message.qos != QoS::AtMostOnce).then(|| self.durable.next_token());
            self.refused = false;
            let peers = self.publish_for_client(client, copy_seq, message, token);
            // Refused while its session's claim is out here: the source reads it again.
            let refused = std::mem::take(&mut self.refused);
            return self.hand_on(index, lane, seq, before, token, peers, refused);
        }
        let retained_elsewhere =
            message.retain && crate::retained::owner(&message.topic, self.shards) != self.id;
        // A Kafka -> MQTT record may be copied to other nodes (the cluster sink): its report
        // waits for Kafka to have those copies. A downlink record for sessions that moved to
        // other nodes is produced again for them: its report waits for those copies.
        let to_nodes = shared_only.is_none() && !self.sinks.is_empty();
        self.handover_marks.seen = Some(self.handovers_noted());
        let moved = if shared_only.is_some() {
            self.moved_targets(&message, stamp_ms, sent_to.as_deref())
        } else {
            Vec::new()
        };
        let holds = message.qos != QoS::AtMostOnce
            && (self.durable.holds_acks() || retained_elsewhere || to_nodes || !moved.is_empty());
        let token = holds.then(|| self.durable.next_token());
        let mut peers = 0;
        if !moved.is_empty() {
            peers += self.forward_moved(&message, stamp_ms, token, &moved);
        }
        // The sources publish as one pseudo connection: a congested subscriber (here or on a
        // peer) pauses them like a client publisher (`Sources::PUBLISHER`).
        self.publisher = Some(Publisher {
            shard: self.id,
            conn: Sources::PUBLISHER,
            v5: false,
        });
        self.refused = false;
        self.shared_only = shared_only;
        self.carried_retain_version = retain_version;
        peers += self.publish(message, Origin::Source(token));
        self.carried_retain_version = None;
        self.handover_marks.seen = None;
        self.shared_only = None;
        self.publisher = None;
        self.refused = false;
        self.hand_on(index, lane, seq, before, token, peers, false);
    }

    /// Reports source `index`'s message (`lane`, `seq`) handed on (or `refused`: read again)
    /// once what it caused is durable, in its lane's order: the records appended here since
    /// `before`, and `peers` confirmations of `token`.
    #[allow(clippy::too_many_arguments)]
    fn hand_on(
        &mut self,
        index: usize,
        lane: u32,
        seq: i64,
        before: u64,
        token: Option<u64>,
        peers: usize,
        refused: bool,
    ) {
        let conn = self.sources.hold(index, lane, seq);
        let Some(id) = PacketId::new(1) else {
            return;
        };
        let mut ack = PubResp::new(PubRespKind::PubAck, id);
        if refused {
            ack.reason = net::codec::ReasonCode::QUOTA_EXCEEDED;
        }
        self.ack_when_durable(conn, ack, before, token, peers);
    }
}
