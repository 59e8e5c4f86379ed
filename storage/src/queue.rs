//! A session's unacknowledged messages by sequence number, as the state keeps them: in
//! sequence order, appended at the back (the broker gives increasing numbers), removed
//! anywhere by a binary search and a tombstone (acknowledgements arrive nearly in order, so
//! the front empties as they come). Cheaper than a B-tree on the hot path; equal to another
//! queue when the live entries are.

use std::collections::VecDeque;

use crate::state::MessageState;

/// Unacknowledged messages in sequence order.
#[derive(Clone, Debug, Default)]
pub struct Queue {
    /// (seq, message); `None` for one that is done. The front is always live.
    entries: VecDeque<(u64, Option<MessageState>)>,
    live: usize,
}

impl PartialEq for Queue {
    fn eq(&self, other: &Self) -> bool {
        self.live == other.live && self.iter().eq(other.iter())
    }
}

impl Eq for Queue {}

impl Queue {
    /// Live messages.
    pub fn len(&self) -> usize {
        self.live
    }

    /// True when no message is held.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn find(&self, seq: u64) -> Result<usize, usize> {
        // Acknowledgements come nearly in order: the front first.
        if self.entries.front().is_some_and(|(s, _)| *s == seq) {
            return Ok(0);
        }
        self.entries.binary_search_by_key(&seq, |(s, _)| *s)
    }

    /// Adds (or replaces) message `seq`; the message it replaced, if any.
    pub fn insert(&mut self, seq: u64, message: MessageState) -> Option<MessageState> {
        if self.entries.back().is_none_or(|(last, _)| *last < seq) {
            self.entries.push_back((seq, Some(message)));
            self.live += 1;
            return None;
        }
        match self.find(seq) {
            Ok(i) => {
                let slot = &mut self.entries.get_mut(i)?.1;
                if slot.is_none() {
                    self.live += 1;
                }
                slot.replace(message)
            }
            Err(i) => {
                self.entries.insert(i, (seq, Some(message)));
                self.live += 1;
                None
            }
        }
    }

    /// Message `seq`, if held.
    pub fn get_mut(&mut self, seq: u64) -> Option<&mut MessageState> {
        let i = self.find(seq).ok()?;
        self.entries.get_mut(i)?.1.as_mut()
    }

    /// Removes message `seq`: the message, if it was held.
    pub fn remove(&mut self, seq: u64) -> Option<MessageState> {
        if self.entries.front().is_some_and(|(s, _)| *s == seq) {
            // The usual case (acknowledgements come in order): the front goes, with the
            // tombstones behind it; no tombstone is added.
            let removed = self.entries.pop_front().and_then(|(_, m)| m);
            debug_assert!(removed.is_some(), "the front is always live");
            if removed.is_some() {
                self.live -= 1;
            }
            while self.entries.front().is_some_and(|(_, m)| m.is_none()) {
                self.entries.pop_front();
            }
            return removed;
        }
        let i = self.find(seq).ok()?;
        let removed = self.entries.get_mut(i).and_then(|(_, slot)| slot.take());
        if removed.is_some() {
            self.live -= 1;
            while self.entries.front().is_some_and(|(_, m)| m.is_none()) {
                self.entries.pop_front();
            }
            while self.entries.back().is_some_and(|(_, m)| m.is_none()) {
                self.entries.pop_back();
            }
            // Tombstones never outnumber the live entries for long.
            if self.entries.len() > 64 && self.entries.len() > 2 * self.live {
                self.entries.retain(|(_, m)| m.is_some());
            }
        }
        debug_assert!(self.entries.front().is_none_or(|(_, m)| m.is_some()));
        removed
    }

    /// Live messages in sequence order, to change in place.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u64, &mut MessageState)> {
        self.entries
            .iter_mut()
            .filter_map(|(s, m)| m.as_mut().map(|m| (*s, m)))
    }

    /// Live messages in sequence order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &MessageState)> {
        self.entries
            .iter()
            .filter_map(|(s, m)| m.as_ref().map(|m| (*s, m)))
    }
}

impl IntoIterator for Queue {
    type Item = (u64, MessageState);
    type IntoIter = std::iter::FilterMap<
        std::collections::vec_deque::IntoIter<(u64, Option<MessageState>)>,
        fn((u64, Option<MessageState>)) -> Option<(u64, MessageState)>,
    >;

    fn into_iter(self) -> Self::IntoIter {
        self.entries
            .into_iter()
            .filter_map(|(s, m)| m.map(|m| (s, m)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::BTreeMap;

    fn m(n: u64) -> MessageState {
        MessageState {
            body: crate::bodies::Bodies::default().add(b"body"),
            qos: 1,
            retain: false,
            packet_id: Some(n as u16),
            released: false,
        }
    }

    #[test]
    fn behaves_as_an_ordered_map() {
        let mut q = Queue::default();
        let mut model = BTreeMap::new();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let seq = x % 300;
            match x % 5 {
                0..=2 => {
                    assert_eq!(q.insert(seq, m(x)), model.insert(seq, m(x)));
                }
                _ => assert_eq!(q.remove(seq), model.remove(&seq)),
            }
            assert_eq!(q.len(), model.len());
        }
        assert!(q.iter().map(|(s, m)| (s, m.clone())).eq(model.clone()));
        assert!(q.into_iter().eq(model));
    }
}
