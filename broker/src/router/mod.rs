//! The topic tree: which local sessions and which peer shards have subscriptions matching a
//! topic. Every shard holds its own replica; the shard that owns a subscription adds it as
//! local, and peers learn "shard S has subscribers for filter F" from the mesh (added when F
//! gets its first subscriber on S, removed with its last), so a publish is matched where it
//! arrives and forwarded once per interested shard.
//!
//! Sans-IO: no sockets, no time; tested with tables.

use bytestring::ByteString;
use net::codec::{QoS, SubscriptionOptions};
use rustc_hash::FxHashMap;

use crate::ids::{SessionId, ShardId};

#[derive(Debug, Default)]
struct Node {
    /// Children by literal level.
    children: FxHashMap<ByteString, Node>,
    /// The `+` child, kept apart so matching needs no hash lookup for it.
    plus: Option<Box<Node>>,
    /// The `#` child, likewise.
    hash: Option<Box<Node>>,
    local: Vec<(SessionId, SubscriptionOptions)>,
    /// Bit per peer shard that has subscribers for the filter ending here.
    remote: u64,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.local.is_empty()
            && self.remote == 0
    }

    fn child_mut(&mut self, level: &str) -> Option<&mut Node> {
        match level {
            "+" => self.plus.as_deref_mut(),
            "#" => self.hash.as_deref_mut(),
            _ => self.children.get_mut(level),
        }
    }

    fn child_or_insert(&mut self, level: &str) -> &mut Node {
        match level {
            "+" => self.plus.get_or_insert_with(Box::default),
            "#" => self.hash.get_or_insert_with(Box::default),
            _ => self.children.entry(ByteString::from(level)).or_default(),
        }
    }

    fn remove_child(&mut self, level: &str) {
        match level {
            "+" => self.plus = None,
            "#" => self.hash = None,
            _ => {
                self.children.remove(level);
            }
        }
    }
}

/// A local subscriber matched by a topic, with the options of its subscription.
pub type LocalMatch = (SessionId, SubscriptionOptions);

/// The replicated route table.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
    filters: usize,
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter`. Returns true when this is the
    /// filter's first local subscriber (peers must learn of it).
    pub fn subscribe(
        &mut self,
        filter: &str,
        session: SessionId,
        options: SubscriptionOptions,
    ) -> bool {
        let node = Self::node_mut(&mut self.root, filter);
        let first = node.local.is_empty();
        match node.local.iter_mut().find(|(s, _)| *s == session) {
            Some(entry) => entry.1 = options,
            None => node.local.push((session, options)),
        }
        if first {
            self.filters += 1;
        }
        first
    }

    /// Removes `session`'s subscription to `filter`. `None` if it had none; `Some(true)` when
    /// it was the filter's last local subscriber (peers must forget it).
    pub fn unsubscribe(&mut self, filter: &str, session: SessionId) -> Option<bool> {
        let mut removed = None;
        Self::update(&mut self.root, filter, &mut |node| {
            if let Some(i) = node.local.iter().position(|(s, _)| *s == session) {
                node.local.swap_remove(i);
                removed = Some(node.local.is_empty());
            }
        });
        if removed == Some(true) {
            self.filters -= 1;
        }
        removed
    }

    /// Peer `shard` has subscribers for `filter`.
    pub fn add_remote(&mut self, filter: &str, shard: ShardId) {
        Self::node_mut(&mut self.root, filter).remote |= shard.bit();
    }

    /// Peer `shard` has no more subscribers for `filter`.
    pub fn remove_remote(&mut self, filter: &str, shard: ShardId) {
        Self::update(&mut self.root, filter, &mut |node| {
            node.remote &= !shard.bit()
        });
    }

    /// Distinct filters with local subscribers.
    pub fn local_filter_count(&self) -> usize {
        self.filters
    }

    /// Collects the local subscribers matching `topic` into `out` (one entry per session, with
    /// the highest QoS of its matching subscriptions) and returns the mask of peer shards with
    /// matching subscriptions. `$`-topics are not matched by filters starting with a wildcard.
    pub fn matches(&self, topic: &str, out: &mut Vec<LocalMatch>) -> u64 {
        out.clear();
        let mut remote = 0;
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, topic, true, dollar, out, &mut remote);
        if out.len() > 1 {
            out.sort_unstable_by_key(|(s, _)| *s);
            out.dedup_by(|later, kept| {
                if later.0 == kept.0 {
                    if later.1.qos > kept.1.qos {
                        kept.1.qos = later.1.qos;
                    }
                    kept.1.retain_as_published |= later.1.retain_as_published;
                    true
                } else {
                    false
                }
            });
        }
        remote
    }

    fn walk(
        node: &Node,
        rest: &str,
        at_root: bool,
        dollar: bool,
        out: &mut Vec<LocalMatch>,
        remote: &mut u64,
    ) {
        let wildcards = !(at_root && dollar);
        if wildcards {
            if let Some(hash) = node.hash.as_deref() {
                out.extend_from_slice(&hash.local);
                *remote |= hash.remote;
            }
        }
        let (level, next) = match rest.split_once('/') {
            Some((level, next)) => (level, Some(next)),
            None => (rest, None),
        };
        let mut visit = |child: &Node| match next {
            Some(next) => Self::walk(child, next, false, dollar, out, remote),
            None => {
                out.extend_from_slice(&child.local);
                *remote |= child.remote;
                // "a/#" also matches "a".
                if let Some(hash) = child.hash.as_deref() {
                    out.extend_from_slice(&hash.local);
                    *remote |= hash.remote;
                }
            }
        };
        if let Some(child) = node.children.get(level) {
            visit(child);
        }
        if wildcards {
            if let Some(child) = node.plus.as_deref() {
                visit(child);
            }
        }
    }

    fn node_mut<'a>(root: &'a mut Node, filter: &str) -> &'a mut Node {
        filter
            .split('/')
            .fold(root, |node, level| node.child_or_insert(level))
    }

    /// Applies `f` to the node of `filter` if it exists, then prunes empty nodes on the way
    /// back up so the tree's size follows the live subscriptions.
    fn update(node: &mut Node, filter: &str, f: &mut dyn FnMut(&mut Node)) {
        let (level, rest) = match filter.split_once('/') {
            Some((level, rest)) => (level, Some(rest)),
            None => (filter, None),
        };
        let Some(child) = node.child_mut(level) else {
            return;
        };
        match rest {
            Some(rest) => Self::update(child, rest, f),
            None => f(child),
        }
        if child.is_empty() {
            node.remove_child(level);
        }
    }
}

/// The QoS a subscriber receives: the publish's, capped by the subscription's.
pub fn granted(publish: QoS, subscription: QoS) -> QoS {
    publish.min(subscription)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(qos: QoS) -> SubscriptionOptions {
        SubscriptionOptions::qos(qos)
    }

    fn sessions(r: &Router, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        r.matches(topic, &mut out);
        let mut ids: Vec<u32> = out.iter().map(|(s, _)| s.0).collect();
        ids.sort();
        ids
    }

    #[test]
    fn matching_table() {
        let filters = [
            "a/b/c", "a/+/c", "a/#", "#", "+/b/c", "a/b", "+", "$SYS/#", "$SYS/+", "/x", "+/+",
            "a/b/c/#",
        ];
        let mut r = Router::default();
        for (i, f) in filters.iter().enumerate() {
            assert!(r.subscribe(f, SessionId(i as u32), opts(QoS::AtLeastOnce)));
        }
        let table: &[(&str, &[u32])] = &[
            ("a/b/c", &[0, 1, 2, 3, 4, 11]),
            ("a/b", &[2, 3, 5, 10]),
            ("a", &[2, 3, 6]),
            ("b", &[3, 6]),
            ("a/x/c", &[1, 2, 3]),
            ("a/b/c/d", &[2, 3, 11]),
            ("$SYS/uptime", &[7, 8]),
            ("$SYS", &[7]),
            ("/x", &[3, 9, 10]),
            ("x/b/c", &[3, 4]),
        ];
        for (topic, want) in table {
            assert_eq!(sessions(&r, topic), *want, "{topic}");
        }
    }

    #[test]
    fn overlapping_subscriptions_deliver_once_with_the_highest_qos() {
        let mut r = Router::default();
        r.subscribe("a/#", SessionId(1), opts(QoS::AtMostOnce));
        r.subscribe("a/+", SessionId(1), opts(QoS::ExactlyOnce));
        let mut out = Vec::new();
        r.matches("a/b", &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.qos, QoS::ExactlyOnce);
    }

    #[test]
    fn first_and_last_subscriber_and_pruning() {
        let mut r = Router::default();
        assert!(r.subscribe("a/b", SessionId(1), opts(QoS::AtMostOnce)));
        assert!(!r.subscribe("a/b", SessionId(2), opts(QoS::AtMostOnce)));
        assert!(
            !r.subscribe("a/b", SessionId(2), opts(QoS::AtLeastOnce)),
            "resubscribe replaces"
        );
        assert_eq!(r.unsubscribe("a/b", SessionId(3)), None);
        assert_eq!(r.unsubscribe("a/b", SessionId(1)), Some(false));
        assert_eq!(r.unsubscribe("a/b", SessionId(2)), Some(true));
        assert!(r.root.is_empty(), "empty nodes are pruned");
        assert_eq!(r.local_filter_count(), 0);
    }

    #[test]
    fn remote_shards() {
        let mut r = Router::default();
        r.add_remote("a/+", ShardId(1));
        r.add_remote("a/#", ShardId(3));
        let mut out = Vec::new();
        assert_eq!(r.matches("a/b", &mut out), 0b1010);
        assert!(out.is_empty());
        r.remove_remote("a/+", ShardId(1));
        assert_eq!(r.matches("a/b", &mut out), 0b1000);
        r.remove_remote("a/#", ShardId(3));
        assert!(r.root.is_empty());
    }
}
