//! The cluster's route table: which nodes have subscribers for which filters (and members in
//! which shared groups), and which nodes are live. Built by the routes thread from the
//! compacted routes topic; the shards read immutable snapshots of it (no lock on the publish
//! path). Nodes are numbered in the order the table first saw them, at most [`NODES_MAX`] at a
//! time: a node forgotten (dead for longer than `cluster.node_keep_ms`) gives its number back
//! and its routes are taken out ([`RouteTable::forget`]).

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

    /// The filters below this level (`path`: the levels above) that `bit` subscribes to,
    /// appended to `out`.
    fn filters<'a>(&'a self, bit: u64, path: &mut Vec<&'a str>, out: &mut Vec<String>) {
        if self.ends & bit != 0 {
            out.push(path.join("/"));
        }
        if self.hash & bit != 0 {
            path.push("#");
            out.push(path.join("/"));
            path.pop();
        }
        if let Some(plus) = &self.plus {
            path.push("+");
            plus.filters(bit, path, out);
            path.pop();
        }
        for (name, child) in &self.children {
            path.push(name);
            child.filters(bit, path, out);
            path.pop();
        }
    }

    /// How many filters below this level `bit` subscribes to.
    fn filters_of(&self, bit: u64) -> usize {
        usize::from(self.ends & bit != 0)
            + usize::from(self.hash & bit != 0)
            + self.plus.as_ref().map_or(0, |p| p.filters_of(bit))
            + self
                .children
                .values()
                .map(|c| c.filters_of(bit))
                .sum::<usize>()
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
    /// Node ids by index (`None`: the free number of a forgotten node).
    nodes: Vec<Option<Box<str>>>,
    /// This node's index.
    own: usize,
    /// Nodes whose last heartbeat is recent (this one always).
    live: u64,
    root: Level,
    /// The routes kept while their node is dead (persistent sessions subscribe).
    kept: Level,
    /// Dead nodes whose kept routes still count (dead for less than `node_keep_ms`).
    keepable: u64,
    /// Nodes whose last heartbeat said their downlink is congested (this one: its own state).
    congested: u64,
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

    /// The index of node `id`, numbered now if new (a forgotten node's number first); `None`
    /// when [`NODES_MAX`] nodes have one.
    pub fn index(&mut self, id: &str) -> Option<usize> {
        if let Some(i) = self.find(id) {
            return Some(i);
        }
        if let Some(i) = self.nodes.iter().position(Option::is_none) {
            if let Some(slot) = self.nodes.get_mut(i) {
                *slot = Some(id.into());
            }
            return Some(i);
        }
        if self.nodes.len() >= NODES_MAX {
            return None;
        }
        self.nodes.push(Some(id.into()));
        Some(self.nodes.len() - 1)
    }

    /// The index of node `id`, if it has one.
    pub fn find(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.as_deref() == Some(id))
    }

    /// The id of node `index` (`None`: no such number, or a free one).
    pub fn node(&self, index: usize) -> Option<&str> {
        self.nodes.get(index)?.as_deref()
    }

    /// Nodes with a number (not forgotten), this one included.
    pub fn known(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_some()).count()
    }

    /// The other nodes with a number (live, or dead for less than `node_keep_ms`), by id, and
    /// whether each is live.
    pub fn peers(&self) -> Vec<(Box<str>, bool)> {
        let mut peers: Vec<(Box<str>, bool)> = (0..self.nodes.len())
            .filter(|&i| i != self.own)
            .filter_map(|i| Some((self.node(i)?.into(), self.live & (1u64 << i) != 0)))
            .collect();
        peers.sort_unstable();
        peers
    }

    /// The numbers given so far (some may be free): every node's index is below it.
    pub fn numbered(&self) -> usize {
        self.nodes.len()
    }

    /// Forgets node `index` (never this node): its routes and shared-group memberships leave
    /// the table and are returned (the filter and its state; `$share/g/f` for a group), it is
    /// neither live nor keepable, and its number is free for another node.
    pub fn forget(&mut self, index: usize) -> Vec<(String, super::RouteState)> {
        use super::RouteState;
        if index == self.own || self.node(index).is_none() {
            return Vec::new();
        }
        let bit = 1u64 << index;
        let mut live = Vec::new();
        let mut kept = Vec::new();
        self.root.filters(bit, &mut Vec::new(), &mut live);
        self.kept.filters(bit, &mut Vec::new(), &mut kept);
        let kept: rustc_hash::FxHashSet<String> = kept.into_iter().collect();
        let mut routes: Vec<(String, RouteState)> = live
            .into_iter()
            .map(|f| {
                let state = if kept.contains(&f) {
                    RouteState::Kept
                } else {
                    RouteState::Live
                };
                (f, state)
            })
            .collect();
        routes.extend(
            self.shared
                .iter()
                .filter(|(_, _, mask)| mask & bit != 0)
                .map(|(g, f, _)| (format!("$share/{g}/{f}"), RouteState::Live)),
        );
        for (filter, _) in &routes {
            self.set_state(index, filter, RouteState::None);
        }
        apply(&mut self.live, bit, false);
        apply(&mut self.congested, bit, false);
        apply(&mut self.keepable, bit, false);
        if let Some(slot) = self.nodes.get_mut(index) {
            *slot = None;
        }
        debug_assert!(self.root.filters_of(bit) == 0 && self.kept.filters_of(bit) == 0);
        routes
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

    /// Node `index` says its downlink is congested (`on`) or not; whether that changed.
    pub fn set_congested(&mut self, index: usize, on: bool) -> bool {
        let Some(bit) = 1u64.checked_shl(u32::try_from(index).unwrap_or(u32::MAX)) else {
            return false;
        };
        let before = self.congested;
        apply(&mut self.congested, bit, on);
        before != self.congested
    }

    /// The live nodes whose downlink is congested (this one included when it is).
    pub fn congested(&self) -> u64 {
        self.congested & self.live
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

    #[test]
    fn a_forgotten_node_gives_back_its_routes_and_its_number() {
        use crate::cluster::RouteState;
        let mut t = table();
        let mut pick = 0;
        let routes = [
            ("k/#", RouteState::Kept),
            ("s/+/t", RouteState::Live),
            ("/lead", RouteState::Live),
            ("#", RouteState::Live),
            ("$share/g/s/#", RouteState::Live),
        ];
        for (f, state) in routes {
            t.set_state(1, f, state);
        }
        t.set_state(2, "s/+/t", RouteState::Live);
        t.set_keepable(1, true);
        let before = t.destinations("s/x/t", false, &mut pick).nodes;
        let mut back = t.forget(1);
        back.sort();
        let mut want: Vec<(String, RouteState)> =
            routes.iter().map(|(f, s)| (f.to_string(), *s)).collect();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(t.node(1), None);
        assert_eq!(t.live() & 0b010, 0);
        assert_eq!(t.keepable(), 0);
        assert_eq!(t.root.filters_of(0b010), 0);
        assert!(t.shared.is_empty());
        assert_eq!(t.destinations("s/x/t", false, &mut pick).nodes, 0b100);
        assert!(t.forget(0).is_empty(), "never this node");
        // Back under the same number (the first free one), its routes as they were.
        assert_eq!(t.index("b"), Some(1));
        t.set_live(1, true);
        for (f, state) in back {
            t.set_state(1, &f, state);
        }
        assert_eq!(t.destinations("s/x/t", false, &mut pick).nodes, before);
        t.set_live(1, false);
        t.set_keepable(1, true);
        assert_eq!(t.destinations("k/1", false, &mut pick).nodes, 0b010);
    }

    #[test]
    fn past_the_node_limit_a_new_node_takes_a_forgotten_ones_number() {
        let mut t = RouteTable::new("n0");
        for i in 1..NODES_MAX {
            assert_eq!(t.index(&format!("n{i}")), Some(i));
        }
        assert_eq!(t.index("late"), None);
        t.set(5, "a/b", true);
        t.forget(5);
        assert_eq!(t.index("late"), Some(5));
        assert_eq!(t.node(5), Some("late"));
        assert_eq!(t.index("n5"), None, "the forgotten one waits for a number");
        assert_eq!(t.numbered(), NODES_MAX);
    }
}
