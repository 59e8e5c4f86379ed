//! The cluster's route table: which nodes have subscribers for which filters (and members in
//! which shared groups), and which nodes are live. Built by the routes thread from the
//! compacted routes topic; the shards read immutable snapshots of it (no lock on the publish
//! path). Nodes are numbered in the order the table first saw them, at most [`NODES_MAX`].

use rustc_hash::FxHashMap;

use crate::router::filter;

/// Nodes a cluster may have (a node set is a `u64` mask).
pub const NODES_MAX: usize = 64;

/// A level of the filter tree: the nodes whose filter ends here, the nodes with `#` here.
#[derive(Clone, Debug, Default)]
struct Level {
    ends: u64,
    hash: u64,
    plus: Option<Box<Level>>,
    children: FxHashMap<Box<str>, Level>,
}

impl Level {
    fn is_empty(&self) -> bool {
        self.ends == 0 && self.hash == 0 && self.plus.is_none() && self.children.is_empty()
    }

    /// Sets (or clears) `bit` for `levels` below this level; true when this level is empty
    /// afterwards (the caller removes it).
    fn set(&mut self, levels: &[&str], bit: u64, on: bool) -> bool {
        match levels.split_first() {
            None => apply(&mut self.ends, bit, on),
            Some((&"#", _)) => apply(&mut self.hash, bit, on),
            Some((&"+", rest)) => {
                let plus = self.plus.get_or_insert_with(Box::default);
                if plus.set(rest, bit, on) {
                    self.plus = None;
                }
            }
            Some((name, rest)) => {
                let child = self.children.entry((*name).into()).or_default();
                if child.set(rest, bit, on) {
                    self.children.remove(*name);
                }
            }
        }
        self.is_empty()
    }

    /// The nodes with a filter matching the rest of a topic (`levels`).
    fn matching(&self, levels: &[&str]) -> u64 {
        let mut mask = self.hash;
        match levels.split_first() {
            None => mask |= self.ends,
            Some((name, rest)) => {
                if let Some(p) = &self.plus {
                    mask |= p.matching(rest);
                }
                if let Some(c) = self.children.get(*name) {
                    mask |= c.matching(rest);
                }
            }
        }
        mask
    }
}

fn apply(mask: &mut u64, bit: u64, on: bool) {
    if on {
        *mask |= bit;
    } else {
        *mask &= !bit;
    }
}

/// Where a published message goes beyond this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Destinations {
    /// Nodes with a matching subscription (or picked for a shared group), this one excluded.
    pub nodes: u64,
    /// The shared groups (`$share/g/f`) each node was picked for: there, a message from
    /// another node reaches only the groups it was picked for.
    pub shared: Vec<(usize, String)>,
}

impl Destinations {
    /// The shared groups node `index` was picked for, NUL-separated (the downlink record's
    /// `mqtt.cluster.shared` header).
    pub fn shared_of(&self, index: usize) -> String {
        let mut out = String::new();
        for (_, full) in self.shared.iter().filter(|(n, _)| *n == index) {
            if !out.is_empty() {
                out.push('\0');
            }
            out.push_str(full);
        }
        out
    }
}

/// One snapshot of the cluster's routes.
#[derive(Clone, Debug, Default)]
pub struct RouteTable {
    /// Node ids by index.
    nodes: Vec<Box<str>>,
    /// This node's index.
    own: usize,
    /// Nodes whose last heartbeat is recent (this one always).
    live: u64,
    root: Level,
    /// The routes kept while their node is dead (persistent sessions subscribe).
    kept: Level,
    /// Dead nodes whose kept routes still count (dead for less than `node_keep_ms`).
    keepable: u64,
    /// Shared groups: (group, inner filter) -> nodes with members.
    shared: Vec<(Box<str>, Box<str>, u64)>,
}

impl RouteTable {
    /// An empty table for node `own`.
    pub fn new(own: &str) -> Self {
        let mut t = Self::default();
        t.own = t.index(own).unwrap_or(0);
        t.live = 1 << t.own;
        t
    }

    /// The index of node `id`, numbered now if new; `None` past [`NODES_MAX`].
    pub fn index(&mut self, id: &str) -> Option<usize> {
        if let Some(i) = self.nodes.iter().position(|n| &**n == id) {
            return Some(i);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        self.nodes.push(id.into());
        Some(self.nodes.len() - 1)
    }

    /// The id of node `index`.
    pub fn node(&self, index: usize) -> Option<&str> {
        self.nodes.get(index).map(|n| &**n)
    }

    /// This node's index.
    pub fn own(&self) -> usize {
        self.own
    }

    /// Node `index`'s subscribers of `filter` ask for `state` (a `$share/g/f` filter: members
    /// of group g, routed while live only).
    pub fn set_state(&mut self, index: usize, filter_text: &str, state: super::RouteState) {
        use super::RouteState;
        self.set(index, filter_text, state != RouteState::None);
        if !net::topic::is_shared(filter_text) {
            let levels: Vec<&str> = filter_text.split('/').collect();
            self.kept
                .set(&levels, 1u64 << index, state == RouteState::Kept);
        }
    }

    /// Node `index` has (`on`) or no longer has subscribers for `filter` (a `$share/g/f`
    /// filter: members of group g).
    pub fn set(&mut self, index: usize, filter_text: &str, on: bool) {
        debug_assert!(index < NODES_MAX);
        let bit = 1u64 << index;
        match net::topic::split_shared(filter_text) {
            Some((group, inner)) => {
                match self
                    .shared
                    .iter_mut()
                    .find(|(g, f, _)| &**g == group && &**f == inner)
                {
                    Some((_, _, mask)) => apply(mask, bit, on),
                    None if on => self.shared.push((group.into(), inner.into(), bit)),
                    None => {}
                }
                self.shared.retain(|(_, _, m)| *m != 0);
            }
            None => {
                let levels: Vec<&str> = filter_text.split('/').collect();
                self.root.set(&levels, bit, on);
            }
        }
    }

    /// Node `index` is live (`on`) or not.
    pub fn set_live(&mut self, index: usize, on: bool) {
        if index != self.own {
            apply(&mut self.live, 1u64 << index, on);
        }
    }

    /// Node `index`'s kept routes count while it is dead (`on`), or no longer.
    pub fn set_keepable(&mut self, index: usize, on: bool) {
        apply(&mut self.keepable, 1u64 << index, on);
    }

    /// The dead nodes whose kept routes count.
    pub fn keepable(&self) -> u64 {
        self.keepable
    }

    /// The live nodes.
    pub fn live(&self) -> u64 {
        self.live
    }

    /// True when no other node is live or keeps routes while dead (nothing leaves this
    /// node).
    pub fn alone(&self) -> bool {
        let own = 1u64 << self.own;
        self.live & !own == 0 && self.keepable & !self.live & !own == 0
    }

    /// The other live nodes a message on `topic` goes to: those with a matching subscription;
    /// for each matching shared group without members here, one live node with members
    /// (`pick` chooses among them, rotating); every other live node for a retained message
    /// (each keeps it), which delivers it to the shared groups it was picked for only. `$`
    /// topics stay on their node.
    pub fn destinations(&self, topic: &str, retain: bool, pick: &mut u64) -> Destinations {
        let own = 1u64 << self.own;
        let others = self.live & !own;
        if self.alone() || topic.starts_with('$') {
            return Destinations::default();
        }
        let levels: Vec<&str> = topic.split('/').collect();
        let dead = !self.live & self.keepable;
        let mut nodes =
            (self.root.matching(&levels) & others) | (self.kept.matching(&levels) & dead);
        let mut shared = Vec::new();
        for (group, inner, mask) in &self.shared {
            if mask & own != 0 || mask & others == 0 || !filter::matches(inner, topic) {
                continue;
            }
            *pick = pick.wrapping_add(1);
            let members = mask & others;
            let n = members.count_ones() as u64;
            let mut skip = *pick % n;
            let mut m = members;
            while skip > 0 {
                m &= m - 1;
                skip -= 1;
            }
            let picked = m & m.wrapping_neg();
            nodes |= picked;
            shared.push((
                picked.trailing_zeros() as usize,
                format!("$share/{group}/{inner}"),
            ));
        }
        if retain {
            nodes |= others;
        }
        Destinations { nodes, shared }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let mut t = RouteTable::new("a");
        for n in ["b", "c"] {
            let i = t.index(n).unwrap();
            t.set_live(i, true);
        }
        t
    }

    #[test]
    fn subscriptions_route_to_their_nodes_only_while_live() {
        let mut t = table();
        let mut pick = 0;
        t.set(1, "s/+/t", true);
        t.set(2, "s/#", true);
        t.set(0, "s/x/t", true);
        assert_eq!(t.destinations("s/x/t", false, &mut pick).nodes, 0b110);
        assert_eq!(t.destinations("s", false, &mut pick).nodes, 0b100);
        assert_eq!(t.destinations("q", false, &mut pick).nodes, 0);
        t.set_live(2, false);
        assert_eq!(t.destinations("s/x/t", false, &mut pick).nodes, 0b010);
        t.set(1, "s/+/t", false);
        assert_eq!(t.destinations("s/x/t", false, &mut pick).nodes, 0);
        assert!(t.root.children.get("s").is_some_and(|l| l.plus.is_none()));
    }

    #[test]
    fn a_dead_node_keeps_the_routes_of_its_persistent_sessions() {
        use crate::cluster::RouteState;
        let mut t = table();
        let mut pick = 0;
        t.set_state(1, "k/#", RouteState::Kept);
        t.set_state(2, "k/#", RouteState::Live);
        t.set_live(1, false);
        t.set_live(2, false);
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0);
        t.set_keepable(1, true);
        t.set_keepable(2, true);
        assert!(!t.alone());
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0b010);
        assert_eq!(
            t.destinations("k/1", true, &mut pick).nodes,
            0b010,
            "a retained message too"
        );
        t.set_state(1, "k/#", RouteState::Live);
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0);
        t.set_live(1, true);
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0b010);
        t.set_state(1, "k/#", RouteState::None);
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0);
    }

    #[test]
    fn retained_goes_to_every_other_live_node_and_dollar_topics_stay() {
        let mut t = table();
        let mut pick = 0;
        assert_eq!(t.destinations("x", true, &mut pick).nodes, 0b110);
        t.set(1, "#", true);
        assert_eq!(t.destinations("$SYS/x", false, &mut pick).nodes, 0);
    }

    #[test]
    fn a_shared_group_is_served_here_when_it_has_members_here_else_by_one_node() {
        let mut t = table();
        let mut pick = 0;
        t.set(1, "$share/g/s/#", true);
        t.set(2, "$share/g/s/#", true);
        let mut seen = 0;
        for _ in 0..4 {
            let dest = t.destinations("s/1", false, &mut pick);
            assert_eq!(
                dest.nodes.count_ones(),
                1,
                "one member node: {:b}",
                dest.nodes
            );
            let node = dest.nodes.trailing_zeros() as usize;
            assert_eq!(dest.shared_of(node), "$share/g/s/#");
            assert_eq!(dest.shared_of(3 - node), "");
            seen |= dest.nodes;
        }
        assert_eq!(seen, 0b110, "the pick rotates");
        t.set(0, "$share/g/s/#", true);
        assert_eq!(t.destinations("s/1", false, &mut pick).nodes, 0);
        t.set(0, "$share/g/s/#", false);
        t.set(1, "$share/g/s/#", false);
        t.set(2, "$share/g/s/#", false);
        assert!(t.shared.is_empty());
    }
}
