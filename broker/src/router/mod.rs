//! The topic tree: which local sessions and which peer shards have subscriptions matching a
//! topic, and the shared-subscription groups among them. Every shard holds its own replica;
//! the shard that owns a subscription adds it as local, and peers learn "shard S has
//! subscribers for filter F" from the mesh (added when F gets its first subscriber on S,
//! removed with its last), so a publish is matched where it arrives and forwarded once per
//! interested shard.
//!
//! Shared subscriptions (`$share/group/filter`) live in the node of `filter` as a group with
//! its local members and the mask of peer shards that have members. A matching publish picks
//! one target per group, round robin over the local members and the peer shards with members
//! (a peer then picks round robin among its own members).
//!
//! Sans-IO: no sockets, no time; tested with tables.

use std::cell::Cell;

use bytestring::ByteString;
use net::codec::{QoS, SubscriptionOptions};
use net::topic::split_shared;
use rustc_hash::FxHashMap;

mod copies;
pub mod filter;
pub use copies::{local_copies, LocalCopy};

use crate::ids::{SessionId, ShardId};

/// A local subscriber matched by a topic: its session, the options of its subscription and
/// the subscription identifier (0: none).
pub type LocalMatch = (SessionId, SubscriptionOptions, u32);

#[derive(Debug)]
struct Group {
    /// The group's full filter, `$share/group/filter`.
    full: ByteString,
    /// The group name.
    name: ByteString,
    local: Vec<LocalMatch>,
    remote: u64,
    /// Round-robin position.
    next: Cell<u32>,
}

#[derive(Debug, Default)]
struct Node {
    /// Children by literal level.
    children: FxHashMap<ByteString, Node>,
    /// The `+` child, kept apart so matching needs no hash lookup for it.
    plus: Option<Box<Node>>,
    /// The `#` child, likewise.
    hash: Option<Box<Node>>,
    local: Vec<LocalMatch>,
    /// Bit per peer shard that has subscribers for the filter ending here.
    remote: u64,
    /// Shared-subscription groups on the filter ending here.
    groups: Vec<Group>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty()
            && self.plus.is_none()
            && self.hash.is_none()
            && self.local.is_empty()
            && self.remote == 0
            && self.groups.is_empty()
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

    fn group_mut(&mut self, full: &str, name: &str) -> Option<&mut Group> {
        let i = match self.groups.iter().position(|g| g.name == name) {
            Some(i) => i,
            None => {
                self.groups.push(Group {
                    full: ByteString::from(full),
                    name: ByteString::from(name),
                    local: Vec::new(),
                    remote: 0,
                    next: Cell::new(0),
                });
                self.groups.len() - 1
            }
        };
        self.groups.get_mut(i)
    }
}

/// Where one message for a shared-subscription group goes.
#[derive(Clone, Debug, PartialEq)]
pub enum SharedPick {
    /// To this local member.
    Local(LocalMatch, ByteString),
    /// To the peer shard, which picks one of its members.
    Remote(ShardId, ByteString),
}

impl SharedPick {
    /// The group's full filter (`$share/g/f`).
    pub fn filter(&self) -> &ByteString {
        match self {
            Self::Local(_, f) | Self::Remote(_, f) => f,
        }
    }
}

/// The replicated route table.
#[derive(Debug, Default)]
pub struct Router {
    root: Node,
    filters: usize,
}

struct Collect<'a> {
    out: &'a mut Vec<LocalMatch>,
    /// `None`: shared groups are not wanted (the message came from a peer, which picked).
    shared: Option<&'a mut Vec<SharedPick>>,
    remote: u64,
    /// This shard's bit: never picked as a remote target.
    own: u64,
}

impl Collect<'_> {
    fn node(&mut self, node: &Node) {
        self.out.extend_from_slice(&node.local);
        self.remote |= node.remote;
        if let Some(shared) = self.shared.as_deref_mut() {
            for g in &node.groups {
                if let Some(pick) = pick(g, self.own) {
                    shared.push(pick);
                }
            }
        }
    }
}

/// The next target of a group, round robin over its local members then its peer shards.
fn pick(g: &Group, own: u64) -> Option<SharedPick> {
    let remote = g.remote & !own;
    let count = g.local.len() + remote.count_ones() as usize;
    if count == 0 {
        return None;
    }
    let n = g.next.get();
    g.next.set(n.wrapping_add(1));
    let i = n as usize % count;
    if let Some(m) = g.local.get(i) {
        return Some(SharedPick::Local(*m, g.full.clone()));
    }
    let mut mask = remote;
    for _ in 0..(i - g.local.len()) {
        mask &= mask - 1;
    }
    Some(SharedPick::Remote(
        ShardId(mask.trailing_zeros() as u16),
        g.full.clone(),
    ))
}

/// A topic's (or filter's) first level and what follows its `/` (`None`: it was the last
/// level). A byte
/// scan: levels are short, and `str::split_once` pays for setting up a searcher at each one
/// (about 90 instructions per level of a routed message).
#[inline]
fn first_level(topic: &str) -> (&str, Option<&str>) {
    match topic.bytes().position(|b| b == b'/') {
        // `/` is ASCII: both sides of it are char boundaries.
        Some(at) => (topic.get(..at).unwrap_or(topic), topic.get(at + 1..)),
        None => (topic, None),
    }
}

impl Router {
    /// Adds or replaces `session`'s subscription to `filter` (shared or not). Returns true
    /// when this is the filter's (or group's) first local subscriber: peers must learn of it.
    pub fn subscribe(
        &mut self,
        filter: &str,
        session: SessionId,
        options: SubscriptionOptions,
        sub_id: u32,
    ) -> bool {
        let (node_filter, group) = match split_shared(filter) {
            Some((group, inner)) => (inner, Some(group)),
            None => (filter, None),
        };
        let node = Self::node_mut(&mut self.root, node_filter);
        let list = match group {
            Some(name) => match node.group_mut(filter, name) {
                Some(g) => &mut g.local,
                None => return false,
            },
            None => &mut node.local,
        };
        let first = list.is_empty();
        match list.iter_mut().find(|(s, _, _)| *s == session) {
            Some(entry) => *entry = (session, options, sub_id),
            None => list.push((session, options, sub_id)),
        }
        if first {
            self.filters += 1;
        }
        first
    }

    /// Removes `session`'s subscription to `filter`. `None` if it had none; `Some(true)` when
    /// it was the filter's (or group's) last local subscriber: peers must forget it.
    pub fn unsubscribe(&mut self, filter: &str, session: SessionId) -> Option<bool> {
        let mut removed = None;
        let (node_filter, group) = match split_shared(filter) {
            Some((group, inner)) => (inner, Some(group)),
            None => (filter, None),
        };
        Self::update(&mut self.root, node_filter, &mut |node| {
            let list = match group {
                Some(name) => match node.groups.iter_mut().find(|g| g.name == name) {
                    Some(g) => &mut g.local,
                    None => return,
                },
                None => &mut node.local,
            };
            if let Some(i) = list.iter().position(|(s, _, _)| *s == session) {
                list.swap_remove(i);
                removed = Some(list.is_empty());
            }
            node.groups.retain(|g| !g.local.is_empty() || g.remote != 0);
        });
        if removed == Some(true) {
            self.filters -= 1;
        }
        removed
    }

    /// The local subscribers of `filter` (a group's members for `$share/g/f`).
    pub fn local_of(&self, filter: &str) -> &[LocalMatch] {
        match split_shared(filter) {
            Some((name, inner)) => Self::node(&self.root, inner)
                .and_then(|n| n.groups.iter().find(|g| g.name == name))
                .map_or(&[], |g| &g.local[..]),
            None => Self::node(&self.root, filter).map_or(&[], |n| &n.local[..]),
        }
    }

    /// Peer `shard` has subscribers for `filter` (or members in its group).
    pub fn add_remote(&mut self, filter: &str, shard: ShardId) {
        match split_shared(filter) {
            Some((name, inner)) => {
                if let Some(g) = Self::node_mut(&mut self.root, inner).group_mut(filter, name) {
                    g.remote |= shard.bit();
                }
            }
            None => Self::node_mut(&mut self.root, filter).remote |= shard.bit(),
        }
    }

    /// Peer `shard` has no more subscribers for `filter` (or members in its group).
    pub fn remove_remote(&mut self, filter: &str, shard: ShardId) {
        match split_shared(filter) {
            Some((name, inner)) => Self::update(&mut self.root, inner, &mut |node| {
                for g in node.groups.iter_mut().filter(|g| g.name == name) {
                    g.remote &= !shard.bit();
                }
                node.groups.retain(|g| !g.local.is_empty() || g.remote != 0);
            }),
            None => Self::update(&mut self.root, filter, &mut |node| {
                node.remote &= !shard.bit()
            }),
        }
    }

    /// Distinct filters (and shared groups) with local subscribers.
    pub fn local_filter_count(&self) -> usize {
        self.filters
    }

    /// Collects the local subscriptions matching `topic` into `out` (sorted by session and
    /// subscription identifier; `local_copies` makes them the copies to send), one pick
    /// per matching shared group into `shared` (when given), and returns the mask of peer shards with
    /// matching (non-shared) subscriptions. `$`-topics are not matched by filters starting
    /// with a wildcard. `own` is this shard's id (never picked as a peer).
    pub fn matches(
        &self,
        topic: &str,
        own: ShardId,
        out: &mut Vec<LocalMatch>,
        shared: Option<&mut Vec<SharedPick>>,
    ) -> u64 {
        out.clear();
        let dollar = topic.starts_with('$');
        let mut c = Collect {
            out,
            shared,
            remote: 0,
            own: own.bit(),
        };
        Self::walk(&self.root, topic, true, dollar, &mut c);
        let out = c.out;
        if out.len() > 1 {
            out.sort_unstable_by_key(|(s, _, id)| (*s, *id));
        }
        c.remote
    }

    /// For a message a peer sent to shared group `full`: one of this shard's members (round
    /// robin), or, if it has none any more, another peer with members (not `from`).
    pub fn pick_member(&self, full: &str, own: ShardId, from: ShardId) -> Option<SharedPick> {
        let (name, inner) = split_shared(full)?;
        let node = Self::node(&self.root, inner)?;
        let g = node.groups.iter().find(|g| g.name == name)?;
        if g.local.is_empty() {
            return pick(g, own.bit() | from.bit());
        }
        pick(g, u64::MAX)
    }

    fn walk(node: &Node, rest: &str, at_root: bool, dollar: bool, c: &mut Collect) {
        let wildcards = !(at_root && dollar);
        if wildcards {
            if let Some(hash) = node.hash.as_deref() {
                c.node(hash);
            }
        }
        let (level, next) = first_level(rest);
        let visit = |child: &Node, c: &mut Collect| match next {
            Some(next) => Self::walk(child, next, false, dollar, c),
            None => {
                c.node(child);
                // "a/#" also matches "a".
                if let Some(hash) = child.hash.as_deref() {
                    c.node(hash);
                }
            }
        };
        if let Some(child) = node.children.get(level) {
            visit(child, c);
        }
        if wildcards {
            if let Some(child) = node.plus.as_deref() {
                visit(child, c);
            }
        }
    }

    fn node<'a>(root: &'a Node, filter: &str) -> Option<&'a Node> {
        filter.split('/').try_fold(root, |node, level| match level {
            "+" => node.plus.as_deref(),
            "#" => node.hash.as_deref(),
            _ => node.children.get(level),
        })
    }

    fn node_mut<'a>(root: &'a mut Node, filter: &str) -> &'a mut Node {
        filter
            .split('/')
            .fold(root, |node, level| node.child_or_insert(level))
    }

    /// Applies `f` to the node of `filter` if it exists, then prunes empty nodes on the way
    /// back up so the tree's size follows the live subscriptions.
    fn update(node: &mut Node, filter: &str, f: &mut dyn FnMut(&mut Node)) {
        let (level, rest) = first_level(filter);
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

    #[test]
    fn a_topic_splits_at_its_first_slash() {
        assert_eq!(first_level("a/b/c"), ("a", Some("b/c")));
        assert_eq!(first_level("a"), ("a", None));
        assert_eq!(first_level(""), ("", None));
        assert_eq!(first_level("/x"), ("", Some("x")));
        assert_eq!(first_level("a/"), ("a", Some("")));
        assert_eq!(first_level("é/ü/ß"), ("é", Some("ü/ß")));
    }

    fn sessions(r: &Router, topic: &str) -> Vec<u32> {
        let mut out = Vec::new();
        r.matches(topic, ShardId(0), &mut out, None);
        let mut ids: Vec<u32> = out.iter().map(|(s, _, _)| s.0).collect();
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
            assert!(r.subscribe(f, SessionId(i as u32), opts(QoS::AtLeastOnce), 0));
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
        r.subscribe("a/#", SessionId(1), opts(QoS::AtMostOnce), 0);
        r.subscribe("a/+", SessionId(1), opts(QoS::ExactlyOnce), 0);
        let mut out = Vec::new();
        r.matches("a/b", ShardId(0), &mut out, None);
        assert_eq!(out.len(), 2, "both subscriptions match");
        let mut copies = Vec::new();
        local_copies(&out, None, false, |c| copies.push(c));
        assert_eq!(copies.len(), 1);
        assert_eq!(copies[0].qos, QoS::ExactlyOnce);
    }

    #[test]
    fn first_and_last_subscriber_and_pruning() {
        let mut r = Router::default();
        assert!(r.subscribe("a/b", SessionId(1), opts(QoS::AtMostOnce), 0));
        assert!(!r.subscribe("a/b", SessionId(2), opts(QoS::AtMostOnce), 0));
        assert!(
            !r.subscribe("a/b", SessionId(2), opts(QoS::AtLeastOnce), 0),
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
        assert_eq!(r.matches("a/b", ShardId(0), &mut out, None), 0b1010);
        assert!(out.is_empty());
        r.remove_remote("a/+", ShardId(1));
        assert_eq!(r.matches("a/b", ShardId(0), &mut out, None), 0b1000);
        r.remove_remote("a/#", ShardId(3));
        assert!(r.root.is_empty());
    }

    #[test]
    fn overlapping_subscriptions_with_different_identifiers_deliver_each() {
        let mut r = Router::default();
        r.subscribe("a/#", SessionId(1), opts(QoS::AtMostOnce), 7);
        r.subscribe("a/+", SessionId(1), opts(QoS::AtLeastOnce), 9);
        let mut out = Vec::new();
        r.matches("a/b", ShardId(0), &mut out, None);
        let ids: Vec<u32> = out.iter().map(|m| m.2).collect();
        assert_eq!(ids, vec![7, 9]);
    }

    #[test]
    fn shared_groups_round_robin_over_local_members_and_peers() {
        let mut r = Router::default();
        assert!(r.subscribe("$share/g/a/+", SessionId(1), opts(QoS::AtLeastOnce), 0));
        assert!(!r.subscribe("$share/g/a/+", SessionId(2), opts(QoS::AtLeastOnce), 0));
        assert!(r.subscribe("$share/h/a/b", SessionId(3), opts(QoS::AtLeastOnce), 0));
        r.add_remote("$share/g/a/+", ShardId(1));
        r.add_remote("$share/g/a/+", ShardId(0)); // own bit: ignored
        let mut out = Vec::new();
        let mut shared = Vec::new();
        let mut seen = Vec::new();
        for _ in 0..6 {
            shared.clear();
            let remote = r.matches("a/b", ShardId(0), &mut out, Some(&mut shared));
            assert_eq!(remote, 0, "shared members are not normal routes");
            assert!(out.is_empty());
            assert_eq!(shared.len(), 2, "one pick per group");
            for p in &shared {
                match p {
                    SharedPick::Local((s, _, _), f) if f == "$share/g/a/+" => seen.push(s.0),
                    SharedPick::Remote(shard, f) if f == "$share/g/a/+" => {
                        seen.push(100 + u32::from(shard.0))
                    }
                    SharedPick::Local((s, _, _), f) => {
                        assert_eq!((s.0, f.as_ref()), (3, "$share/h/a/b"))
                    }
                    other => panic!("{other:?}"),
                }
            }
        }
        assert_eq!(seen, vec![1, 2, 101, 1, 2, 101]);
        // A peer whose last member left passes the message on to another peer.
        r.unsubscribe("$share/g/a/+", SessionId(1));
        r.unsubscribe("$share/g/a/+", SessionId(2));
        r.add_remote("$share/g/a/+", ShardId(2));
        assert_eq!(
            r.pick_member("$share/g/a/+", ShardId(0), ShardId(1)),
            Some(SharedPick::Remote(ShardId(2), "$share/g/a/+".into()))
        );
        r.remove_remote("$share/g/a/+", ShardId(1));
        r.remove_remote("$share/g/a/+", ShardId(2));
        r.remove_remote("$share/g/a/+", ShardId(0));
        r.unsubscribe("$share/h/a/b", SessionId(3));
        assert!(r.root.is_empty());
    }
}
