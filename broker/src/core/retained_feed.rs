//! Paced retained delivery: the retained messages a new subscription receives are streamed,
//! never queued all at once. Each subscription that wants them becomes a stream on its
//! session's feed; a stream asks each shard in turn (the owners of the topic partitions,
//! this one directly, peers through the mesh) for a page of matches after its cursor, and
//! hands the page to the session only while the connection can take it (nothing queued,
//! room in the outbox and, for QoS 1/2, in the inflight window). It asks for the next page
//! when the last one is delivered (a peer's while half of it is left), so a subscriber is
//! fed as fast as it reads and a queue bound is never what decides how many it gets. A
//! stream holds at most about one and a half pages, and none while its session is offline.
//!
//! A feed belongs to the session: a persistent session that disconnects mid-stream resumes
//! its streams when it reconnects, from the first match it had not been given (what was in
//! flight unacknowledged is resent as any other message). A feed is not durable: after a
//! broker restart the remainder is not sent. Subscribing again to a filter restarts its
//! stream; unsubscribing ends it; the session's end ends its feed.
//!
//! A retained PUBLISH delivered live to the session while a stream is running marks its topic
//! on the stream (up to [`LIVE_TOPICS_MAX`] topics), and the stream then skips that topic: the
//! subscriber already has a newer retained message of it than the page may hold.
//!
//! Work per call is bounded: a local page that finds nothing to deliver (a sparse filter over
//! a large partition) ends the pump, and the feed is pumped again on the next loop pass
//! ([`Core::pump_due_feeds`]).
//!
//! Invariants: only the first stream of a feed is active; at most one page request of a
//! stream is out at a time (`asked`), answered with the stream's token (answers for a stream
//! that ended or was parked are ignored); the local shard's pages are read directly.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use bytestring::ByteString;
use net::codec::QoS;
use rustc_hash::{FxBuildHasher, FxHashSet};

use super::link::lookup;
use super::peer::ShardMsg;
use super::{Core, RetainedWanted};
use crate::ids::{SessionId, ShardId};
use crate::retained::{Cursor, Key};
use crate::session::{Message, SubIds};

/// Topics a stream remembers as delivered live (beyond, it stops remembering).
pub const LIVE_TOPICS_MAX: usize = 65_536;

/// A session's retained streams, first active.
#[derive(Debug, Default)]
pub(crate) struct Feed {
    streams: VecDeque<Stream>,
    /// In `Core::feeds_due`.
    due: bool,
}

/// The retained messages of one new subscription still to deliver.
#[derive(Debug)]
struct Stream {
    token: u64,
    filter: ByteString,
    qos: QoS,
    sub_id: u32,
    /// The shard whose partition is being paged; `shards` once all have been.
    owner: usize,
    cursor: Cursor,
    /// Matches received, not yet delivered, with the shard each came from.
    page: VecDeque<(u16, Message)>,
    /// A page request is out.
    asked: bool,
    /// Hashes of topics a retained PUBLISH was delivered live on since the stream began.
    live: FxHashSet<u64>,
}

impl Stream {
    /// Takes a page of `owner`'s that ended at `cursor`.
    fn paged(&mut self, owner: u16, messages: impl IntoIterator<Item = Message>, cursor: Cursor) {
        self.page.extend(messages.into_iter().map(|m| (owner, m)));
        if cursor == Cursor::Done {
            self.owner += 1;
            self.cursor = Cursor::Start;
        } else {
            self.cursor = cursor;
        }
    }
}

fn topic_hash(topic: &str) -> u64 {
    FxBuildHasher.hash_one(topic)
}

impl Core {
    /// Starts streaming the retained messages the new subscriptions in `wanted` receive
    /// (after their SUBACK) [MQTT-3.3.1-9].
    pub(super) fn send_retained(&mut self, sid: SessionId, wanted: RetainedWanted) {
        if wanted.is_empty() {
            return;
        }
        let feed = self.feeds.entry(sid).or_default();
        for (filter, options, sub_id) in wanted {
            feed.streams.retain(|s| s.filter != filter);
            self.next_feed_token += 1;
            feed.streams.push_back(Stream {
                token: self.next_feed_token,
                filter,
                qos: options.qos,
                sub_id,
                owner: 0,
                cursor: Cursor::Start,
                page: VecDeque::new(),
                asked: false,
                live: FxHashSet::default(),
            });
        }
        self.pump_retained(sid);
    }

    /// Ends the stream of `filter` (unsubscribed).
    pub(super) fn end_retained(&mut self, sid: SessionId, filter: &str) {
        if let Some(feed) = self.feeds.get_mut(&sid) {
            feed.streams.retain(|s| s.filter != filter);
        }
    }

    /// `sid` went offline: its streams give back what they hold and will start again from
    /// the first match not delivered (a page asked for meanwhile is ignored).
    pub(crate) fn park_retained(&mut self, sid: SessionId) {
        let Some(feed) = self.feeds.get_mut(&sid) else {
            return;
        };
        for stream in &mut feed.streams {
            if let Some((owner, first)) = stream.page.front() {
                stream.owner = usize::from(*owner);
                let mut key = String::new();
                crate::retained::scan::key_of(&first.topic, &mut key);
                stream.cursor = Cursor::From(Key::from(key));
            }
            stream.page = VecDeque::new();
            if stream.asked {
                stream.asked = false;
                self.next_feed_token += 1;
                stream.token = self.next_feed_token;
            }
        }
    }

    /// A retained PUBLISH on `topic` was delivered live to `sid`: its running streams
    /// matching the topic skip it from now on.
    pub(super) fn note_live_retained(&mut self, sid: SessionId, topic: &str) {
        let Some(feed) = self.feeds.get_mut(&sid) else {
            return;
        };
        for stream in &mut feed.streams {
            if stream.live.len() < LIVE_TOPICS_MAX
                && crate::router::filter::matches(&stream.filter, topic)
            {
                stream.live.insert(topic_hash(topic));
            }
        }
    }

    /// Pumps the feeds whose last pump stopped on a page with nothing to deliver.
    pub fn pump_due_feeds(&mut self) {
        for sid in std::mem::take(&mut self.feeds_due) {
            if let Some(feed) = self.feeds.get_mut(&sid) {
                feed.due = false;
                self.pump_retained(sid);
            }
        }
    }

    /// Some feed waits for the next loop pass: the reactor should not block.
    pub fn feeds_due(&self) -> bool {
        !self.feeds_due.is_empty()
    }

    /// Delivers what `sid`'s feed holds while its connection can take it, asking for the
    /// next page when the current one is delivered.
    pub(crate) fn pump_retained(&mut self, sid: SessionId) {
        let online = self
            .sessions
            .get(sid.0 as usize)
            .and_then(Option::as_ref)
            .is_some_and(|s| s.conn.is_some());
        if !online {
            return;
        }
        let publisher = self.publisher.take();
        let mut found = std::mem::take(&mut self.retained_found);
        while let Some(feed) = self.feeds.get_mut(&sid) {
            let Some(stream) = feed.streams.front_mut() else {
                self.feeds.remove(&sid);
                break;
            };
            // A peer's next page is asked for while half of this one is left, so the
            // subscriber does not wait for the round trip.
            let owner = ShardId(stream.owner as u16);
            let half = self.config.retained_page_max / 2;
            let remote = stream.owner < self.shards && owner != self.id;
            if remote && !stream.asked && stream.page.len() <= half {
                stream.asked = true;
                let query = ShardMsg::RetainedQuery {
                    sid,
                    token: stream.token,
                    filter: stream.filter.clone(),
                    cursor: stream.cursor.clone(),
                };
                self.send_to_peer(owner, query);
                continue;
            }
            if let Some((_, m)) = stream.page.front() {
                if !stream.live.is_empty() && stream.live.contains(&topic_hash(&m.topic)) {
                    stream.page.pop_front();
                    continue;
                }
                let qos = crate::router::granted(m.qos, stream.qos);
                let (subscription_qos, sub_id) = (stream.qos, stream.sub_id);
                if !self.feed_ready(sid, qos) {
                    break;
                }
                let Some((_, m)) = self
                    .feeds
                    .get_mut(&sid)
                    .and_then(|f| f.streams.front_mut())
                    .and_then(|s| s.page.pop_front())
                else {
                    break;
                };
                let log_id = self.durable.next_message_id();
                self.deliver(
                    sid,
                    &m,
                    subscription_qos,
                    SubIds::one(sub_id),
                    true,
                    None,
                    log_id,
                );
                continue;
            }
            if stream.asked {
                break;
            }
            if stream.owner >= self.shards {
                feed.streams.pop_front();
                continue;
            }
            let (limit, bytes) = (
                self.config.retained_page_max,
                self.config.retained_page_bytes_max,
            );
            let cursor = self.retained.page(
                &stream.filter,
                &stream.cursor,
                limit,
                bytes,
                self.now,
                &mut found,
            );
            let empty = found.is_empty() && cursor != Cursor::Done;
            stream.paged(self.id.0, found.drain(..), cursor);
            if empty {
                // Nothing found in this page's keys: the rest waits for the next pass.
                if !feed.due {
                    feed.due = true;
                    self.feeds_due.push(sid);
                }
                break;
            }
        }
        self.retained_found = found;
        self.publisher = publisher;
    }

    /// A peer asks for a page of this shard's retained matches.
    pub(super) fn on_retained_query(
        &mut self,
        from: ShardId,
        sid: SessionId,
        token: u64,
        filter: ByteString,
        cursor: Cursor,
    ) {
        let mut messages = Vec::new();
        let (limit, bytes) = (
            self.config.retained_page_max,
            self.config.retained_page_bytes_max,
        );
        let cursor = self
            .retained
            .page(&filter, &cursor, limit, bytes, self.now, &mut messages);
        self.send_to_peer(
            from,
            ShardMsg::RetainedPage {
                sid,
                token,
                messages,
                cursor,
            },
        );
    }

    /// A page peer `from` answered with.
    pub(super) fn on_retained_page(
        &mut self,
        from: ShardId,
        sid: SessionId,
        token: u64,
        messages: Vec<Message>,
        cursor: Cursor,
    ) {
        let Some(stream) = self
            .feeds
            .get_mut(&sid)
            .and_then(|f| f.streams.front_mut())
            .filter(|s| s.token == token && s.asked)
        else {
            // The stream ended (unsubscribed, session gone) or was parked while its page
            // was asked for.
            return;
        };
        stream.asked = false;
        stream.paged(from.0, messages, cursor);
        self.pump_retained(sid);
    }

    /// `sid` is connected and would send a message of `qos` now rather than queue it.
    fn feed_ready(&mut self, sid: SessionId, qos: QoS) -> bool {
        let max = self.config.outbox_bytes_max;
        let Some(Some(session)) = self.sessions.get(sid.0 as usize) else {
            return false;
        };
        let Some(id) = session.conn else {
            return false;
        };
        let open = session.queued_len() == 0 && (qos == QoS::AtMostOnce || session.window_open());
        open && lookup(&mut self.links, id).is_some_and(|c| !c.closing && c.outbox_bytes() < max)
    }
}
