//! Searches eight bytes at a time (SWAR: one `u64` holds eight bytes) for the bytes that end
//! a JSON string's plain run (a quote, a backslash, a control byte), noticing non-ASCII bytes
//! on the way; shared by the tape's reader and the one-pass check.

const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte of a word.
pub const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `x` that is zero, exact up to the first such byte (a borrow
/// may mark bytes after it).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The high bit of each quote, backslash or control byte of `x`, exact up to the first.
pub fn special_bytes(x: u64) -> u64 {
    zero_bytes(x ^ (ONES * u64::from(b'"')))
        | zero_bytes(x ^ (ONES * u64::from(b'\\')))
        | (x.wrapping_sub(ONES * 0x20) & !x & HIGHS)
}

/// The first quote, backslash or control byte of `bytes` (None: none), eight bytes at a
/// time (the lowest marked byte of a word is exact), and the bytes before it (all of them if
/// none) or-ed together: their high bit says one of them is not ASCII.
pub fn special_in(bytes: &[u8]) -> (Option<usize>, u64) {
    let mut high = 0u64;
    let mut words = bytes.chunks_exact(8);
    for (i, word) in words.by_ref().enumerate() {
        let x = u64::from_le_bytes(word.try_into().unwrap_or_default());
        let marks = special_bytes(x);
        if marks != 0 {
            let n = (marks.trailing_zeros() / 8) as usize;
            // The bytes before the mark (n < 8, so the shift is in range).
            return (Some(i * 8 + n), high | (x & ((1u64 << (n * 8)) - 1)));
        }
        high |= x;
    }
    let done = bytes.len() - words.remainder().len();
    for (i, &b) in words.remainder().iter().enumerate() {
        if b == b'"' || b == b'\\' || b < 0x20 {
            return (Some(done + i), high);
        }
        high |= u64::from(b);
    }
    (None, high)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
    /// The word-at-a-time search finds the first quote, backslash or control byte, and
    /// whether a byte before it is not ASCII.
    #[test]
    fn special_in_finds_the_first_special_byte(bytes in prop::collection::vec(
        prop_oneof![Just(b'"'), Just(b'\\'), 0u8..0x20, 0x20u8..=0xff, Just(b'a')], 0..40)) {
        let naive = bytes.iter().position(|&b| b == b'"' || b == b'\\' || b < 0x20);
        let (at, high) = special_in(&bytes);
        prop_assert_eq!(at, naive);
        let before = bytes.get(..naive.unwrap_or(bytes.len())).unwrap_or_default();
        let non_ascii = before.iter().any(|b| *b >= 0x80);
        prop_assert_eq!(high & HIGHS != 0, non_ascii);
    }
    }
}
