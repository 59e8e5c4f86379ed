//! Sinks: outbound targets other than local sessions and peer shards (the Kafka bridge, then
//! cluster downlinks). A message published on a shard is offered to every sink that wants its
//! topic, once, on the shard where it was published (never again on the peers it is forwarded
//! to). A sink has the two hooks a session has:
//!
//! - **durable acknowledgement**: offered a message with a token, a sink may answer
//!   [`Offer::Pending`]; the publisher's PUBACK / PUBREC then waits on the ack ledger until the
//!   sink reports the token confirmed (or refused: the publisher gets 0x97);
//! - **backpressure**: while a sink says it is [`Sink::full`], the shard stops reading from
//!   its clients (their receives are not re-armed) until it drains; a sink whose target is
//!   congested (a cluster node too far behind) confirms the tokens of copies for it only
//!   once it caught up, so their publishers' in-flight windows hold them back.
//!
//! Sinks run on the shard thread and must not block; one that talks to a library with its
//! own threads (rdkafka) hands messages over through a bounded queue and collects the
//! confirmations it gets back in [`Sink::confirmed`], which the reactor calls every pass.

use crate::session::Message;

/// A sink's answer to an offered message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offer {
    /// Taken; nothing to wait for (no token given, or the message is safe already).
    Taken,
    /// Taken; the token will be confirmed (or refused) later through [`Sink::confirmed`].
    Pending,
}

/// A sink's running totals, read on the shard's tick for the metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SinkCounts {
    /// Messages the target acknowledged.
    pub delivered: u64,
    /// Messages that failed (not taken, or not acknowledged in time).
    pub failed: u64,
    /// Messages handed over and not reported yet.
    pub in_flight: u64,
    /// Time from hand-over to the target's acknowledgement, per message.
    pub latency: crate::metrics::Histogram,
    /// Messages taken and not acknowledged by the target yet, kept by the broker (the Kafka
    /// outbox of `ack = "local"` rules), and their bytes.
    pub backlog: u64,
    /// The backlog's bytes.
    pub backlog_bytes: u64,
    /// Producers that failed for good and were replaced.
    pub replaced: u64,
    /// Messages the target refused for themselves, set aside by the broker.
    pub dead: u64,
    /// Tokens whose confirmation waited for a congested target (a cluster node whose
    /// downlink is too far behind) to catch up.
    pub delayed: u64,
}

/// An outbound target registered on a shard.
pub trait Sink: std::fmt::Debug {
    /// A short name for logs and metrics.
    fn name(&self) -> &str;
    /// True when the sink takes messages published on `topic`.
    fn wants(&self, topic: &str) -> bool;
    /// Takes `message`, published by client `publisher` (empty for the broker's own). With
    /// `token`, the publisher's acknowledgement may wait for it: answer [`Offer::Pending`] and
    /// report the token later. `retain_version`: a retained message's last-writer-wins
    /// version (as the retained store has it; 0 when not retained).
    fn offer(
        &mut self,
        message: &Message,
        publisher: &str,
        token: Option<u64>,
        retain_version: u64,
    ) -> Offer;
    /// Produces `message` again for session `client`, which moved to node `node` (the
    /// cluster sink alone; others take nothing); `seq`: its sequence number in the session's
    /// store (0: none). With `token`, answer [`Offer::Pending`] and report it once the copy
    /// is safe.
    fn forward(
        &mut self,
        _message: &Message,
        _token: Option<u64>,
        _node: &str,
        _client: &str,
        _seq: u64,
    ) -> Offer {
        Offer::Taken
    }
    /// Client `client`'s will is `will` (with its delay, seconds) while it is connected or
    /// its delay runs, or gone (`None`: published, cancelled, or the session moved): a
    /// cluster sink keeps it in the node's wills topic, so another node publishes it if this
    /// node dies. Others take nothing.
    fn note_will(&mut self, _client: &str, _will: Option<(&Message, u32)>) {}
    /// Session `client` was resumed here after node `node` had it: its will record there is
    /// cleared (a delayed will is not sent once its session resumed).
    fn clear_will_of(&mut self, _node: &str, _client: &str) {}
    /// Above the sink's high watermark: the shard pauses its clients' input.
    fn full(&self) -> bool;
    /// Tokens confirmed (true) or refused (false) since the last call, appended to `out`.
    fn confirmed(&mut self, out: &mut Vec<(u64, bool)>);
    /// Running totals (none by default).
    fn counts(&self) -> SinkCounts {
        SinkCounts::default()
    }
}

/// The sinks of one shard.
#[derive(Debug, Default)]
pub struct Sinks {
    list: Vec<Box<dyn Sink>>,
}

impl Sinks {
    /// Registers a sink.
    pub fn add(&mut self, sink: Box<dyn Sink>) {
        tracing::info!(sink = sink.name(), "sink registered");
        self.list.push(sink);
    }

    /// No sink registered (the publish path skips them).
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Some sink is above its high watermark.
    pub fn any_full(&self) -> bool {
        self.list.iter().any(|s| s.full())
    }

    /// Tells every sink that `client`'s will on node `node` is void ([`Sink::clear_will_of`]).
    pub fn clear_will_of(&mut self, node: &str, client: &str) {
        for sink in &mut self.list {
            sink.clear_will_of(node, client);
        }
    }

    /// Tells every sink about `client`'s will ([`Sink::note_will`]).
    pub fn note_will(&mut self, client: &str, will: Option<(&Message, u32)>) {
        for sink in &mut self.list {
            sink.note_will(client, will);
        }
    }

    /// Offers `message` to every sink that wants it (of those named `only`, if given); how
    /// many will confirm `token` later.
    pub fn offer(
        &mut self,
        message: &Message,
        publisher: &str,
        token: Option<u64>,
        only: Option<&str>,
        retain_version: u64,
    ) -> usize {
        let mut pending = 0;
        for sink in &mut self.list {
            if only.is_some_and(|name| sink.name() != name) {
                continue;
            }
            if sink.wants(&message.topic)
                && sink.offer(message, publisher, token, retain_version) == Offer::Pending
            {
                debug_assert!(
                    token.is_some(),
                    "a sink waits only for a token it was given"
                );
                pending += usize::from(token.is_some());
            }
        }
        pending
    }

    /// Forwards `message` to session `client` on node `node` through every sink that can
    /// ([`Sink::forward`]); how many will confirm `token` later.
    pub fn forward(
        &mut self,
        message: &Message,
        token: Option<u64>,
        node: &str,
        client: &str,
        seq: u64,
    ) -> usize {
        let mut pending = 0;
        for sink in &mut self.list {
            if sink.forward(message, token, node, client, seq) == Offer::Pending {
                pending += usize::from(token.is_some());
            }
        }
        pending
    }

    /// The totals of the sinks named `name`, summed.
    pub fn counts(&self, name: &str) -> SinkCounts {
        let named = self.list.iter().filter(|s| s.name() == name);
        named.fold(SinkCounts::default(), |a, s| {
            let c = s.counts();
            let mut latency = a.latency;
            latency.add(&c.latency);
            SinkCounts {
                delivered: a.delivered + c.delivered,
                failed: a.failed + c.failed,
                in_flight: a.in_flight + c.in_flight,
                latency,
                backlog: a.backlog + c.backlog,
                backlog_bytes: a.backlog_bytes + c.backlog_bytes,
                replaced: a.replaced + c.replaced,
                dead: a.dead + c.dead,
                delayed: a.delayed + c.delayed,
            }
        })
    }

    /// Every sink's confirmations since the last call.
    pub fn confirmed(&mut self) -> Vec<(u64, bool)> {
        let mut out = Vec::new();
        for sink in &mut self.list {
            sink.confirmed(&mut out);
        }
        out
    }
}
