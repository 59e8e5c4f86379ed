//! Downlink congestion between nodes: a node whose downlink is more than
//! `cluster.downlink_behind_max` records behind (not handed on yet: its subscribers, store or
//! CPU cannot keep up) says so in its heartbeats (`mqtt.cluster.congested: 1`, written at
//! once when the state changes), until it is at `cluster.downlink_behind_resume` or less
//! again. The other nodes mark it in their route table; the acknowledgement of a message
//! with a copy for a congested node waits until that node is not congested any more
//! (`ClusterSink`'s `Delayed`), so publishers' in-flight windows slow them down instead of
//! an unbounded backlog growing in Kafka.

use rdkafka::message::{BorrowedMessage, Headers, Message as _};

use super::Routes;

/// The heartbeat header saying whether its writer's downlink is congested (`1`) or not (`0`).
pub(super) const CONGESTED_HEADER: &str = "mqtt.cluster.congested";

/// Whether a heartbeat `record` says its writer is congested (`None`: it does not say: an
/// earlier version, or not a heartbeat).
pub(super) fn congested_of(record: &BorrowedMessage<'_>) -> Option<bool> {
    let headers = record.headers()?;
    let value = headers.iter().find(|h| h.key == CONGESTED_HEADER)?.value?;
    Some(value == b"1")
}

/// The next state of this node given how far its downlink is behind: congested above `max`
/// (0: never), and until at `resume` or below.
pub(super) fn next_state(congested: bool, behind: u64, max: u64, resume: u64) -> bool {
    max != 0
        && if congested {
            behind > resume
        } else {
            behind > max
        }
}

impl Routes {
    /// Judges this node's own congestion from its downlink's backlog; a change is written at
    /// once (a heartbeat now) and logged.
    pub(super) fn judge_congestion(&mut self) {
        let behind = self.feed.downlink_behind.get();
        let config = &self.config;
        let next = next_state(
            self.congested,
            behind,
            config.downlink_behind_max,
            config.downlink_behind_resume,
        );
        if next == self.congested {
            return;
        }
        self.congested = next;
        if next {
            tracing::warn!(
                behind,
                max = config.downlink_behind_max,
                "cluster: this node's downlink is congested: the nodes producing to it hold their publishers' acknowledgements"
            );
        } else {
            tracing::info!(behind, "cluster: this node's downlink caught up");
        }
        let own = self.table.own();
        if self.table.set_congested(own, next) {
            self.changed = true;
        }
        self.last_beat = None; // the heartbeat saying so goes now
    }

    /// Node `index`'s heartbeat said whether it is congested.
    pub(super) fn heard_congestion(&mut self, index: usize, congested: Option<bool>) {
        if self.table.set_congested(index, congested.unwrap_or(false)) {
            self.changed = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::next_state;

    #[test]
    fn congested_above_the_max_until_back_at_resume() {
        assert!(!next_state(false, 100, 100, 10));
        assert!(next_state(false, 101, 100, 10));
        assert!(next_state(true, 11, 100, 10));
        assert!(!next_state(true, 10, 100, 10));
        assert!(!next_state(false, u64::MAX, 0, 0), "0: never");
    }
}
