//! Exact delivery accounting for one publisher -> subscriber pair: which sequence numbers
//! arrived (a bitset), so lost and duplicated counts are exact, and how many arrived after a
//! higher one (out of order).

/// Sequence accounting of one pair.
#[derive(Debug, Default, Clone)]
pub struct PairAccount {
    seen: Vec<u64>,
    /// Highest sequence number received + 1.
    next_expected: u64,
    /// Messages received (duplicates included).
    pub received: u64,
    /// Receptions of a sequence number already seen.
    pub duplicates: u64,
    /// Receptions of a new sequence number lower than one already seen.
    pub out_of_order: u64,
}

impl PairAccount {
    /// Records the arrival of `seq`; returns true if it was new.
    pub fn record(&mut self, seq: u64) -> bool {
        self.received += 1;
        let word = (seq / 64) as usize;
        let bit = 1u64 << (seq % 64);
        if word >= self.seen.len() {
            self.seen.resize(word + 1, 0);
        }
        let Some(w) = self.seen.get_mut(word) else {
            return false;
        };
        if *w & bit != 0 {
            self.duplicates += 1;
            return false;
        }
        *w |= bit;
        if seq < self.next_expected {
            self.out_of_order += 1;
        } else {
            self.next_expected = seq + 1;
        }
        true
    }

    /// Distinct sequence numbers received.
    pub fn distinct(&self) -> u64 {
        self.received - self.duplicates
    }

    /// Whether `seq` arrived.
    pub fn has(&self, seq: u64) -> bool {
        self.seen
            .get((seq / 64) as usize)
            .is_some_and(|w| w & (1 << (seq % 64)) != 0)
    }

    /// How many of the sequence numbers in `0..count` never arrived.
    pub fn missing_below(&self, count: u64) -> u64 {
        (0..count).filter(|s| !self.has(*s)).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_counts() {
        let mut a = PairAccount::default();
        for seq in [0, 1, 2, 4, 3, 3, 200] {
            a.record(seq);
        }
        assert_eq!((a.received, a.duplicates, a.out_of_order), (7, 1, 1));
        assert_eq!(a.missing_below(5), 0);
        assert_eq!(a.missing_below(201), 195);
        assert!(a.has(200) && !a.has(199));
    }
}
