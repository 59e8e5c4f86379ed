//! Between the shards and the cluster's routes thread (`routes.rs`): the shards' route
//! changes and SUBACK barriers in, in order; barriers answered out (each shard woken through
//! its doorbell); the node counts for the metrics; the sessions that moved away
//! (`handover.rs`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crossbeam_queue::SegQueue;

use super::table::RouteTable;
use super::RouteState;
use crate::ids::ShardId;

/// What a shard tells the routes thread, in order.
#[derive(Debug)]
pub(super) enum Change {
    /// A filter's state on the shard changed (or may have).
    Route(u16, String, RouteState),
    /// A SUBACK waits (its barrier token) until every route record written before it is
    /// acknowledged by Kafka.
    Barrier(u16, u64),
}

/// Between the shards and the routes thread: the shards' route changes and SUBACK barriers
/// in, barriers answered out (each shard woken through its doorbell).
#[derive(Debug)]
pub struct Feed {
    pub(super) changes: SegQueue<Change>,
    /// Per shard: barrier tokens answered, and its doorbell.
    pub(super) answers: Vec<(SegQueue<u64>, crate::kafka::Bell)>,
    /// Live nodes, this one included (for the metrics).
    live: AtomicU64,
    /// Nodes with a number (not forgotten), this one included (for the metrics).
    known: AtomicU64,
    /// Live nodes whose downlink is congested, this one included (for the metrics).
    congested: AtomicU64,
    /// How far this node's downlink consumer is behind (set by it, read by the routes
    /// thread for this node's congestion).
    pub downlink_behind: std::sync::Arc<crate::kafka::behind::Behind>,
    /// The other numbered nodes and whether each is live (for the metrics).
    peers: arc_swap::ArcSwap<Vec<(Box<str>, bool)>>,
    /// Routes producers replaced after failing for good (for the metrics).
    pub(super) routes_replaced: AtomicU64,
    /// Sessions that moved to other nodes, followed for the copies still coming here.
    pub handovers: super::handover::Handovers,
    /// Sessions this node took from other nodes, for the salvage thread (`salvage.rs`).
    pub claims: super::salvage::Claims,
    /// Dead nodes whose clients' wills this node publishes (`wills.rs`).
    pub wills: super::wills::WillJobs,
    /// Until when (Kafka's clock) this node's copies name it (`mqtt.cluster.from`): a node a
    /// session moved here from reads that header only for copies produced within
    /// `node_timeout_ms` of the move ([`super::handover`]); `i64::MIN`: no session came.
    names_sender_until: AtomicI64,
    /// `cluster.node_timeout_ms`.
    grace_ms: i64,
}

/// How long past a session's arrival plus `node_timeout_ms` this node's copies still name it
/// (the node it left may hear of the move that much later).
const NAMES_SENDER_MARGIN_MS: i64 = 60_000;

impl Feed {
    /// A feed for shards woken through `doorbells` (eventfds, in shard order).
    pub fn new(doorbells: Vec<std::fs::File>, config: &super::config::ClusterConfig) -> Self {
        Self {
            changes: SegQueue::new(),
            answers: doorbells
                .into_iter()
                .map(|d| (SegQueue::new(), crate::kafka::Bell::new(d)))
                .collect(),
            live: AtomicU64::new(0),
            known: AtomicU64::new(0),
            peers: arc_swap::ArcSwap::default(),
            congested: AtomicU64::new(0),
            downlink_behind: std::sync::Arc::default(),
            routes_replaced: AtomicU64::new(0),
            handovers: super::handover::Handovers::new(config),
            claims: super::salvage::Claims::default(),
            wills: super::wills::WillJobs::default(),
            names_sender_until: AtomicI64::new(i64::MIN),
            grace_ms: i64::try_from(config.node_timeout_ms).unwrap_or(i64::MAX),
        }
    }

    /// A session came to this node from another one (claimed there before).
    pub fn session_arrived(&self) {
        let until = crate::kafka::now_millis()
            .saturating_add(self.grace_ms)
            .saturating_add(NAMES_SENDER_MARGIN_MS);
        self.names_sender_until.fetch_max(until, Ordering::AcqRel);
    }

    /// This node's copies name it now (a session came here lately).
    pub fn names_sender(&self) -> bool {
        let until = self.names_sender_until.load(Ordering::Acquire);
        until != i64::MIN && crate::kafka::now_millis() <= until
    }

    /// Live nodes, this one included.
    pub fn nodes_live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// Nodes known (with a number in the route table: live, or dead for less than
    /// `cluster.node_keep_ms`), this one included.
    pub fn nodes_known(&self) -> u64 {
        self.known.load(Ordering::Relaxed)
    }

    /// Live nodes whose downlink is congested, this one included.
    pub fn nodes_congested(&self) -> u64 {
        self.congested.load(Ordering::Relaxed)
    }

    /// Routes producers replaced after failing for good (librdkafka's fatal errors).
    pub fn routes_producers_replaced(&self) -> u64 {
        self.routes_replaced.load(Ordering::Relaxed)
    }

    /// The metrics' node counts, from a new snapshot of the table.
    pub(super) fn nodes(&self, table: &RouteTable) {
        self.live
            .store(u64::from(table.live().count_ones()), Ordering::Relaxed);
        self.known.store(table.known() as u64, Ordering::Relaxed);
        self.congested
            .store(u64::from(table.congested().count_ones()), Ordering::Relaxed);
        let peers = table.peers();
        if **self.peers.load() != peers {
            self.peers.store(std::sync::Arc::new(peers));
        }
    }

    /// The other nodes with a number (live, or dead for less than `cluster.node_keep_ms`),
    /// sorted by id, and whether each is live.
    pub fn peers(&self) -> std::sync::Arc<Vec<(Box<str>, bool)>> {
        self.peers.load_full()
    }

    /// Shard `shard`'s SUBACK barrier `token` is answered once the route records written so
    /// far are acknowledged (at most one per SUBSCRIBE waits here).
    pub fn barrier(&self, shard: ShardId, token: u64) {
        self.changes.push(Change::Barrier(shard.0, token));
    }

    /// A barrier of shard `shard` answered since the last call.
    pub fn answered(&self, shard: ShardId) -> Option<u64> {
        let (queue, bell) = self.answers.get(shard.index())?;
        bell.answered();
        queue.pop()
    }

    /// `filter`'s subscribers on `shard` now ask for `state`. Each change stands for a
    /// SUBSCRIBE, UNSUBSCRIBE or session end, drained every pass (at least every 20 ms).
    pub fn changed(&self, shard: ShardId, filter: &str, state: RouteState) {
        self.changes
            .push(Change::Route(shard.0, filter.to_string(), state));
    }
}

#[cfg(test)]
impl Feed {
    /// The route changes reported so far, taken (the shards' side in unit tests).
    pub fn take_routes(&self) -> Vec<(String, RouteState)> {
        let mut out = Vec::new();
        while let Some(change) = self.changes.pop() {
            if let Change::Route(_, filter, state) = change {
                out.push((filter, state));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Feed;

    #[test]
    fn copies_name_their_node_only_after_a_session_came() {
        let feed = Feed::new(Vec::new(), &super::super::config::ClusterConfig::default());
        assert!(!feed.names_sender());
        feed.session_arrived();
        assert!(feed.names_sender());
    }
}
