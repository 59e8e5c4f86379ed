//! Giving memory back after a peak. Slab-like containers (connection slots, links, sessions)
//! and the per-shard work lists grow to the peak load and Rust never shrinks them on its
//! own, so after a burst of connections a shard would keep the burst's memory forever.
//!
//! The policy, applied by each shard at its tick ([`SHRINK_EVERY`]):
//! - a free slot is always the lowest one ([`FreeSlots`]), so live entries pack at the
//!   front and the free tail of a slab can be cut off;
//! - a container whose capacity exceeds four times what it holds (and [`KEEP`] entries) is
//!   shrunk to twice what it holds (at least [`KEEP`]); growing back needs a doubling, so a
//!   steady load never oscillates;
//! - after each pass, free heap memory is returned to the kernel (`net::uring::trim_heap`,
//!   glibc `malloc_trim`), and allocations of 256 KiB and more are mapped on their own so
//!   they go back when freed (`net::uring::set_mmap_threshold`, set at start).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash};

/// Entries a container keeps however empty it gets.
pub const KEEP: usize = 256;

/// Shards run the shrink pass every this many ticks (250 ms each: every 5 s).
pub const SHRINK_EVERY: u32 = 20;

/// The capacity to shrink to, if `capacity` is oversized for `len` entries.
fn target(len: usize, capacity: usize) -> Option<usize> {
    let keep = (2 * len).max(KEEP);
    (capacity > (4 * len).max(KEEP) && capacity > keep).then_some(keep)
}

/// Shrinks a vector per the policy; true if it did.
pub fn shrink_vec<T>(v: &mut Vec<T>) -> bool {
    let Some(to) = target(v.len(), v.capacity()) else {
        return false;
    };
    v.shrink_to(to);
    true
}

/// Shrinks a deque per the policy; true if it did.
pub fn shrink_deque<T>(v: &mut VecDeque<T>) -> bool {
    let Some(to) = target(v.len(), v.capacity()) else {
        return false;
    };
    v.shrink_to(to);
    true
}

/// Shrinks a hash map per the policy; true if it did.
pub fn shrink_map<K: Eq + Hash, V, S: BuildHasher>(m: &mut HashMap<K, V, S>) -> bool {
    let Some(to) = target(m.len(), m.capacity()) else {
        return false;
    };
    m.shrink_to(to);
    true
}

/// Cuts the free tail off a slab (`None` entries at the end), removing those slots from
/// `free`, then shrinks it per the policy; true if its capacity shrank.
pub fn shrink_slab<T>(slots: &mut Vec<Option<T>>, free: &mut FreeSlots) -> bool {
    let live_end = slots.iter().rposition(Option::is_some).map_or(0, |i| i + 1);
    if live_end < slots.len() {
        slots.truncate(live_end);
        free.forget_from(live_end as u32);
    }
    shrink_vec(slots) | free.shrink()
}

/// The free slots of a slab, lowest first.
#[derive(Debug, Default)]
pub struct FreeSlots(BinaryHeap<Reverse<u32>>);

impl FreeSlots {
    /// The lowest free slot, taken.
    pub fn take(&mut self) -> Option<u32> {
        self.0.pop().map(|Reverse(slot)| slot)
    }

    /// `slot` is free again.
    pub fn put(&mut self, slot: u32) {
        self.0.push(Reverse(slot));
    }

    /// Forgets the slots at or above `end` (the slab was cut there).
    fn forget_from(&mut self, end: u32) {
        self.0.retain(|Reverse(slot)| *slot < end);
    }

    fn shrink(&mut self) -> bool {
        let Some(to) = target(self.0.len(), self.0.capacity()) else {
            return false;
        };
        self.0.shrink_to(to);
        true
    }

    /// How many slots are free.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when no slot is free.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_slot_is_reused_and_the_free_tail_is_cut() {
        let mut slots: Vec<Option<u32>> = Vec::new();
        let mut free = FreeSlots::default();
        for i in 0..10_000 {
            slots.push(Some(i));
        }
        for i in (0..10_000).rev() {
            slots[i] = None;
            free.put(i as u32);
        }
        // Two survivors near the front.
        for want in [0, 1] {
            let slot = free.take().unwrap();
            assert_eq!(slot, want);
            slots[slot as usize] = Some(slot);
        }
        assert!(shrink_slab(&mut slots, &mut free));
        assert_eq!(slots.len(), 2);
        assert!(slots.capacity() <= KEEP);
        assert!(free.is_empty());
        assert_eq!(free.take(), None);
        assert!(
            !shrink_slab(&mut slots, &mut free),
            "nothing more to give back"
        );
    }

    #[test]
    fn a_steady_load_is_not_shrunk() {
        let mut v: Vec<u8> = Vec::with_capacity(4096);
        v.resize(1500, 0);
        assert!(!shrink_vec(&mut v));
        v.truncate(900);
        assert!(shrink_vec(&mut v));
        assert_eq!(v.capacity(), 1800);
    }
}
