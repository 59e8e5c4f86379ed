//! CRC-32C (Castagnoli) of the log's frames, continuing from a seed. On x86-64 with SSE 4.2
//! (every x86-64 CPU since 2008) it is the CPU's `crc32` instruction, eight bytes at a time
//! with no alignment prologue: a frame is about 100 bytes, where the `crc32c` crate's
//! prologue, table-combined stripes and feature check cost more than the bytes (about 170
//! instructions per frame against about 70). Elsewhere, the `crc32c` crate. This module
//! holds the crate's only `unsafe`: the call of the SSE 4.2 function once the CPU is known to
//! have it.

/// The CRC-32C of `data` continuing `crc` (as `crc32c::crc32c_append`: 0 starts a plain one).
#[inline]
pub fn append(crc: u32, data: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("sse4.2") {
            // SAFETY: the CPU has SSE 4.2, the only requirement of `sse42`.
            #[allow(unsafe_code)]
            return unsafe { sse42(crc, data) };
        }
    }
    crc32c::crc32c_append(crc, data)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn sse42(crc: u32, data: &[u8]) -> u32 {
    use std::arch::x86_64::{_mm_crc32_u64, _mm_crc32_u8};
    let mut words = data.chunks_exact(8);
    let mut c = u64::from(!crc);
    for w in words.by_ref() {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        c = _mm_crc32_u64(c, u64::from_le_bytes(b));
    }
    let mut c = c as u32;
    for &b in words.remainder() {
        c = _mm_crc32_u8(c, b);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equals_the_crc32c_crate_for_every_length_and_seed() {
        let data: Vec<u8> = (0..600u32).map(|i| (i * 7919 % 251) as u8).collect();
        for seed in [0, 1, 0x5eed_0007, u32::MAX] {
            for len in 0..data.len() {
                for start in [0, 1, 3] {
                    let d = &data[start..len.max(start)];
                    assert_eq!(append(seed, d), crc32c::crc32c_append(seed, d));
                }
            }
        }
        // The check value of CRC-32C.
        assert_eq!(append(0, b"123456789"), 0xe306_9283);
    }
}
