//! Which nodes are live, from their heartbeats in the routes topic: this node's own heartbeat
//! (with its incarnation, `mqtt.cluster.started`), each node's liveness and keepability in the
//! table, a node restarted (a new incarnation: the sessions claimed from it meanwhile have
//! their copies read by the salvage thread), nodes dead long enough forgotten, and a stall of
//! this thread counted for no node.

use std::time::{Duration, Instant};

use rdkafka::message::{BorrowedMessage, Header, Headers, Message as _, OwnedHeaders};

use super::Routes;

/// The header of a heartbeat naming its writer's incarnation: when it started (milliseconds
/// since the epoch).
pub(super) const STARTED_HEADER: &str = "mqtt.cluster.started";

/// The incarnation a heartbeat `record` names, if any.
pub(super) fn started_of(record: &BorrowedMessage<'_>) -> Option<i64> {
    let headers = record.headers()?;
    let value = headers.iter().find(|h| h.key == STARTED_HEADER)?.value?;
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The headers of this node's heartbeats: its incarnation (once its shards run) and whether
/// its downlink is congested.
pub(super) fn beat_headers(started_ms: Option<i64>, congested: bool) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new();
    if let Some(started) = started_ms {
        let value = started.to_string();
        headers = headers.insert(Header {
            key: STARTED_HEADER,
            value: Some(value.as_bytes()),
        });
    }
    headers.insert(Header {
        key: super::congestion::CONGESTED_HEADER,
        value: Some(if congested { &b"1"[..] } else { &b"0"[..] }),
    })
}

impl Routes {
    /// A heartbeat under this node's own id: another incarnation's, written after this one
    /// started, means another process runs with the same `node_id` (both would read the same
    /// downlink: every copy delivered twice, offsets committed by both). The newer one wins,
    /// as a restarted node should over a paused old one: this process stops (SIGTERM to
    /// itself: a clean stop) when the other started later; it logs the other otherwise (that
    /// one stops when it reads this one's heartbeats). Incarnations are wall clocks: with
    /// clocks apart, the wrong one may stop, but one does.
    pub(super) fn heard_own_beat(&mut self, beat: super::Beat, started: Option<i64>) {
        let Some(started) = started.filter(|&s| s != self.started_ms) else {
            return;
        };
        let super::Beat::Live(written) = beat else {
            return;
        };
        if written <= self.started_ms || std::mem::replace(&mut self.duplicate_seen, true) {
            return;
        }
        let node = self.config.node_id.as_str();
        if started > self.started_ms {
            tracing::error!(
                node,
                "cluster: another process runs as this node_id (it started later): this one stops"
            );
            if let Err(e) = signal_hook::low_level::raise(signal_hook::consts::SIGTERM) {
                tracing::error!("cluster: cannot stop this process: {e}");
            }
        } else {
            tracing::error!(
                node,
                "cluster: another process runs as this node_id (it started earlier): it stops once it reads this one's heartbeats"
            );
        }
    }

    /// Node `node`'s heartbeat named incarnation `started`: another than the last one read
    /// means it restarted (it may have been down for less than `cluster.node_timeout_ms`,
    /// never seen dead): the salvage thread hears of it.
    pub(super) fn heard_incarnation(&mut self, node: &str, started: Option<i64>) {
        let Some(started) = started else {
            return;
        };
        // Any other value (an older one too: a clock set back, a stale process) counts: a
        // restart taken for one costs a read of the node's downlink, one missed a loss.
        let before = self.incarnations.insert(node.to_string(), started);
        if before.is_some_and(|b| b != started) && self.caught_up {
            tracing::info!(
                node,
                "cluster: node restarted (a heartbeat of a new incarnation)"
            );
            self.feed.claims.restarted(node);
        }
    }

    /// Whether node `index` may be forgotten: another node, dead for longer than
    /// `cluster.node_keep_ms` (by its last heartbeat; once the topic was read to its end, a
    /// node with no heartbeat at all too).
    pub(super) fn forgettable(&self, index: usize) -> bool {
        let keep = Duration::from_millis(self.config.node_keep_ms);
        let heard = self.heard & (1u64 << index) != 0;
        index != self.table.own()
            && self.table.node(index).is_some()
            && (self.caught_up || heard)
            && self.seen.get(&index).is_none_or(|t| t.elapsed() >= keep)
    }

    /// Forgets every node that may be: its routes go aside, its number is free.
    pub(super) fn forget_dead(&mut self) {
        for index in 0..self.table.numbered() {
            if !self.forgettable(index) {
                continue;
            }
            let node = self.table.node(index).unwrap_or("?").to_string();
            let routes = self.table.forget(index);
            tracing::info!(
                node,
                routes = routes.len(),
                "cluster: node dead for longer than cluster.node_keep_ms: forgotten (its persistent sessions' routes no longer count; its number is free)"
            );
            self.incarnations.remove(&node);
            if !routes.is_empty() {
                self.aside.insert(node, routes.into_iter().collect());
            }
            self.seen.remove(&index);
            self.left.remove(&index);
            self.heard &= !(1u64 << index);
            self.changed = true;
            // A node short of a number is logged again.
            self.over_nodes_logged = false;
        }
    }

    /// A gap of more than `heartbeat_ms` since liveness was last judged (the process was
    /// stopped, or this thread starved or blocked): what is beyond `heartbeat_ms` counts for
    /// no node (the heartbeats sent meanwhile were not read yet), so no node is judged dead
    /// for it.
    pub(super) fn discount_stall(&mut self) {
        let now = Instant::now();
        let gap = self.judged.replace(now).map_or(Duration::ZERO, |t| now - t);
        // A pass may take up to a heartbeat interval: only what is beyond counts as a stall
        // (a thread that keeps taking longer still judges nodes dead, only later).
        let Some(stall) = gap.checked_sub(Duration::from_millis(self.config.heartbeat_ms)) else {
            return;
        };
        if stall.is_zero() || !self.caught_up {
            return;
        }
        for t in self.seen.values_mut() {
            *t = (*t + stall).min(now);
        }
        tracing::info!(
            ms = stall.as_millis() as u64,
            "cluster: no heartbeat read for a while (this node was stopped or starved): that time counts for no node"
        );
    }

    pub(super) fn beat(&mut self) {
        let every = Duration::from_millis(self.config.heartbeat_ms);
        if self.last_beat.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last_beat = Some(Instant::now());
        let now = crate::kafka::now_millis().to_string();
        self.send(&self.config.node_id.clone(), Some(now.as_bytes()));
    }

    pub(super) fn liveness(&mut self) {
        self.discount_stall();
        self.forget_dead();
        let timeout = Duration::from_millis(self.config.node_timeout_ms);
        let keep = Duration::from_millis(self.config.node_keep_ms);
        let own = self.table.own();
        for i in 0..self.table.numbered() {
            let Some(node) = self.table.node(i) else {
                continue;
            };
            let since = self.seen.get(&i).map(Instant::elapsed);
            let keepable = i != own && since.is_some_and(|t| t < keep);
            let live = i == own || (!self.left.contains(&i) && since.is_some_and(|t| t < timeout));
            let was_keepable = self.table.keepable() & (1u64 << i) != 0;
            let was_live = self.table.live() & (1u64 << i) != 0;
            if live != was_live {
                tracing::info!(
                    node,
                    live,
                    "cluster: node {}",
                    if live {
                        "live"
                    } else {
                        "dead (no heartbeat within cluster.node_timeout_ms) or left"
                    }
                );
            }
            let died = was_live && !live && !self.left.contains(&i) && self.caught_up;
            let dead_id = died.then(|| node.to_string());
            if keepable != was_keepable || live != was_live {
                self.table.set_keepable(i, keepable);
                self.table.set_live(i, live);
                self.changed = true;
            }
            // Died (not left cleanly: that one published its clients' wills itself).
            if let Some(dead) = dead_id {
                let own_id = self.config.node_id.as_str();
                if super::super::wills::is_publisher(&self.table, own_id, &dead) {
                    self.feed.wills.dead(&dead);
                }
            }
        }
    }
}
