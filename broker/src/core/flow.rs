//! Backpressure: a connected session whose queue passes `session_queue_high_watermark`
//! pauses the connections publishing to it (the reactor stops reading them, so TCP pushes
//! back on the clients) until its queue falls to `session_queue_low_watermark`; a publisher
//! on another shard is paused through the mesh. A publisher paused by several sessions
//! resumes when the last lets it go. Also: drops moved from sessions into the counters (one
//! log line per session per episode), and clients that take nothing for
//! `slow_consumer_timeout_ms` while messages wait (disconnected, MQTT 5: 0x97).
//!
//! Invariant: every pause a session sends is matched by exactly one resume (when it drains,
//! disconnects or ends); a link counts the sessions holding it (`Link::held_by`).

use std::time::Duration;

use net::codec::ReasonCode;
use rustc_hash::FxHashSet;

use super::peer::ShardMsg;
use super::{Core, Effect};
use crate::ids::{ConnId, SessionId, ShardId};
use crate::session::DropReason;

/// The connection a message being routed came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Publisher {
    /// The shard it is connected to.
    pub shard: ShardId,
    /// Its connection there.
    pub conn: ConnId,
    /// MQTT 5: a publish can be refused with a reason code.
    pub v5: bool,
}

/// A [`Publisher`] packed in one word for the mesh messages (0: none): present bit 63, MQTT 5
/// bit 62, shard bits 48..62, generation bits 24..48, slot bits 0..24 (slots stay below
/// `connections_per_shard_max`, at most 2^24; generations are kept to 24 bits).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PublisherRef(u64);

impl PublisherRef {
    /// No publisher (the broker's own message).
    pub const NONE: PublisherRef = PublisherRef(0);

    /// Packs `p`, if any.
    pub fn new(p: Option<Publisher>) -> Self {
        let Some(p) = p else {
            return Self::NONE;
        };
        debug_assert!(p.conn.slot < 1 << 24 && p.conn.generation < 1 << 24);
        Self(
            1 << 63
                | u64::from(p.v5) << 62
                | (u64::from(p.shard.0) & 0x3FFF) << 48
                | (u64::from(p.conn.generation) & 0xFF_FFFF) << 24
                | (u64::from(p.conn.slot) & 0xFF_FFFF),
        )
    }

    /// The publisher, if any.
    pub fn get(self) -> Option<Publisher> {
        (self.0 >> 63 == 1).then_some(Publisher {
            shard: ShardId(((self.0 >> 48) & 0x3FFF) as u16),
            conn: ConnId {
                slot: (self.0 & 0xFF_FFFF) as u32,
                generation: ((self.0 >> 24) & 0xFF_FFFF) as u32,
            },
            v5: (self.0 >> 62) & 1 == 1,
        })
    }
}

/// The publishers a congested session has paused.
pub(crate) type Paused = FxHashSet<Publisher>;

#[cfg(test)]
#[test]
fn publisher_refs_round_trip() {
    assert_eq!(PublisherRef::new(None).get(), None);
    for (shard, slot, generation, v5) in
        [(0, 0, 0, false), (63, (1 << 24) - 1, (1 << 24) - 1, true)]
    {
        let p = Publisher {
            shard: ShardId(shard),
            conn: ConnId { slot, generation },
            v5,
        };
        assert_eq!(PublisherRef::new(Some(p)).get(), Some(p));
    }
}

impl Core {
    /// A message was queued for the connected session `sid` on behalf of `self.publisher`:
    /// over the high watermark, that publisher is paused (once per episode). A client
    /// feeding its own subscription is never paused by it (it could not read its acks).
    pub(super) fn queued_for(&mut self, sid: SessionId) {
        let Some(publisher) = self.publisher else {
            return;
        };
        let high = self.config.session_queue_high_watermark;
        let high_bytes = self.config.session_queue_bytes_max / 2;
        let Some(session) = self.sessions.get(sid.0 as usize).and_then(Option::as_ref) else {
            return;
        };
        let Some(own) = session.conn else {
            return;
        };
        if session.queued_len() < high && session.queued_bytes() < high_bytes {
            return;
        }
        if publisher.shard == self.id && publisher.conn == own {
            return;
        }
        if !self.congested.entry(sid).or_default().insert(publisher) {
            return;
        }
        if self.congested.get(&sid).is_some_and(|p| p.len() == 1) {
            let (client, queued) = (session.client_id.clone(), session.queued_len());
            tracing::debug!(shard = self.id.0, client = %client, queued, "session over its high watermark: pausing its publishers");
        }
        if publisher.shard == self.id {
            self.hold_link(publisher.conn, true);
        } else {
            self.send_to_peer(publisher.shard, ShardMsg::Pause(publisher.conn));
        }
    }

    /// Resumes the publishers `sid` paused once its queue is at or below the low watermark.
    pub(crate) fn relieve(&mut self, sid: SessionId) {
        if !self.congested.contains_key(&sid) {
            return;
        }
        let low = self.config.session_queue_low_watermark;
        let low_bytes = self.config.session_queue_bytes_max / 8;
        let drained = self
            .sessions
            .get(sid.0 as usize)
            .and_then(Option::as_ref)
            .is_none_or(|s| s.queued_len() <= low && s.queued_bytes() <= low_bytes);
        if drained {
            self.release_publishers(sid);
        }
    }

    /// Resumes every publisher `sid` paused (it drained, disconnected or ended).
    pub(crate) fn release_publishers(&mut self, sid: SessionId) {
        let Some(paused) = self.congested.remove(&sid) else {
            return;
        };
        for publisher in paused {
            if publisher.shard == self.id {
                self.hold_link(publisher.conn, false);
            } else {
                self.send_to_peer(publisher.shard, ShardMsg::Resume(publisher.conn));
            }
        }
    }

    /// One more (`pause`) or one fewer session holds the publishing connection `id`; the
    /// reactor stops or resumes reading it when the count leaves or reaches zero.
    pub(crate) fn hold_link(&mut self, id: ConnId, pause: bool) {
        if id == crate::source::Sources::PUBLISHER {
            // The sources: nothing is taken from them while held.
            if !self.sources.hold_input(pause) {
                self.invariant_broken("a resume for the sources no session paused");
            }
            if pause {
                self.stats.publisher_pauses += 1;
            }
            return;
        }
        let now = self.now;
        let Some(link) = self.conn_mut(id) else {
            // Closed meanwhile: nothing to pause or resume.
            return;
        };
        if pause {
            link.held_by += 1;
            if link.held_by == 1 {
                self.stats.publisher_pauses += 1;
                self.effects.push_back(Effect::Pause(id));
            }
        } else if link.held_by == 0 {
            self.invariant_broken("a resume for a connection no session paused");
        } else {
            link.held_by -= 1;
            if link.held_by == 0 {
                // Keep alive counts from here: while held, its input was not read.
                link.last_seen = now;
                self.effects.push_back(Effect::Resume(id));
            }
        }
    }

    /// Moves the drops `sid` counted into the shard's counters; the first of an episode is
    /// logged (the episode ends when the session's queue empties).
    pub(crate) fn take_drops(&mut self, sid: SessionId) {
        let shard = self.id.0;
        let Some(session) = self
            .sessions
            .get_mut(sid.0 as usize)
            .and_then(Option::as_mut)
        else {
            return;
        };
        let drops = std::mem::take(&mut session.drops);
        if drops.total == 0 {
            return;
        }
        for (reason, n) in DropReason::ALL.iter().zip(drops.by_reason) {
            let n = u64::from(n);
            match reason {
                DropReason::Outbox => self.stats.dropped_outbox += n,
                DropReason::QueueFull => self.stats.dropped_queue_full += n,
                DropReason::Expired => self.stats.dropped_expired += n,
                DropReason::TooLarge => self.stats.dropped_too_large += n,
            }
        }
        if !session.drop_logged {
            session.drop_logged = true;
            let reason = drops.main_reason().as_str();
            tracing::info!(shard, client = %session.client_id, reason, queued = session.queued_len(), connected = session.conn.is_some(), "dropping messages for a session (counted in ringmq_messages_dropped_total; logged once until its queue empties)");
        }
    }

    /// Clients that took nothing for `slow_consumer_timeout_ms` while messages waited for
    /// them: disconnected (MQTT 5: 0x97), their output abandoned; the publishers they held
    /// resume and a persistent session queues on under the offline policy.
    pub(super) fn close_stuck_consumers(&mut self) {
        let timeout = self.config.slow_consumer_timeout_ms;
        if timeout == 0 {
            return;
        }
        let timeout = Duration::from_millis(timeout);
        let now = self.now;
        let mut stuck = Vec::new();
        for link in self.links.iter_mut().flatten() {
            let Some(sid) = link.session.filter(|_| !link.closing) else {
                continue;
            };
            let queued = self
                .sessions
                .get(sid.0 as usize)
                .and_then(Option::as_ref)
                .map_or(0, |s| s.queued_len());
            let waiting = link.sending != 0 || !link.out.is_empty() || queued > 0;
            if !waiting {
                link.last_progress = now;
            } else if now.saturating_duration_since(link.last_progress) > timeout {
                stuck.push((link.id, queued));
            }
        }
        for (id, queued) in stuck {
            self.stats.slow_consumers += 1;
            let client = self.client_of(id);
            tracing::info!(shard = self.id.0, client = ?client.as_deref(), queued, "disconnecting a client that took nothing for slow_consumer_timeout_ms while messages waited");
            self.close(
                id,
                Some(ReasonCode::QUOTA_EXCEEDED),
                "slow consumer: nothing taken for slow_consumer_timeout_ms",
            );
            self.effects.push_back(Effect::Abort(id));
        }
    }
}
