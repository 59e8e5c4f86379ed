//! Identifier newtypes.

/// A shard's number, 0..shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub u16);

impl ShardId {
    /// This shard's bit in a u64 shard mask.
    pub fn bit(self) -> u64 {
        1u64.checked_shl(u32::from(self.0)).unwrap_or(0)
    }

    /// The shard as an index.
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// A session's slot on its home shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u32);

/// A connection's slot and generation on its shard (the generation tells a reused slot apart).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConnId {
    /// Index in the shard's connection slab.
    pub slot: u32,
    /// Incremented each time the slot is reused.
    pub generation: u32,
}

/// The home shard of a client id: FNV-1a of its bytes, modulo the shard count.
pub fn home_shard(client_id: &[u8], shards: usize) -> ShardId {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in client_id {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    ShardId((h % shards.max(1) as u64) as u16)
}
