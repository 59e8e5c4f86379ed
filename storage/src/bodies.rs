//! The message bodies the durable state keeps for compaction, copied into shared chunks
//! instead of one allocation each: a body is appended to the chunk being filled (one copy, no
//! allocation), each recipient holding it counts as a reference on its chunk, and a chunk is
//! given back (its buffer kept for reuse, up to [`SPARE_CHUNKS`]) when its last reference
//! goes. A body larger than a quarter of a chunk gets a chunk of its own. A full chunk is
//! sealed (shared, read-only), so cloning the bodies (the broker's copy of the recovered
//! state) copies at most the chunk being filled.
//!
//! A chunk lives while any of its bodies is held: one long-held message keeps its whole chunk.
//! Compaction bounds that: it rewrites the sessions whose records are in the oldest segment
//! and moves their bodies to the chunk being filled ([`Bodies::rehome`]), so the chunks held
//! cover at most the bodies written in the log's live segments.

use std::sync::Arc;

use rustc_hash::FxHashMap;

/// Bytes of a chunk.
pub const CHUNK_BYTES: usize = 64 << 10;

/// The bodies one compaction step moved: old reference -> new, each new one held once more
/// by the map until [`Bodies::forget_moves`] (so the recipients of one message rewritten in
/// the same step go on sharing one copy).
pub type Moves = FxHashMap<BodyRef, BodyRef>;

/// Emptied chunk buffers kept for reuse (the rest are freed).
pub const SPARE_CHUNKS: usize = 8;

/// A body in a [`Bodies`]: its chunk and place. Holding one counts as a reference on the
/// chunk: give it back with [`Bodies::release`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyRef {
    chunk: u32,
    at: u32,
    len: u32,
}

#[derive(Clone, Debug, Default)]
struct Chunk {
    /// The bytes once sealed (`None` while it is the chunk being filled, or given back).
    sealed: Option<Arc<Vec<u8>>>,
    /// References held on this chunk's bodies.
    refs: u32,
}

/// The chunks of bodies.
#[derive(Debug, Default)]
pub struct Bodies {
    chunks: Vec<Chunk>,
    /// Ids of chunks given back.
    free: Vec<u32>,
    /// The chunk being filled: its id and bytes (capacity [`CHUNK_BYTES`], never grown).
    current: Option<u32>,
    filling: Vec<u8>,
    /// Emptied chunk buffers for reuse.
    spare: Vec<Vec<u8>>,
}

/// Shares the sealed chunks (their bytes are not copied) and copies the one being filled.
impl Clone for Bodies {
    fn clone(&self) -> Self {
        let mut filling = Vec::with_capacity(self.filling.capacity());
        filling.extend_from_slice(&self.filling);
        Self {
            chunks: self.chunks.clone(),
            free: self.free.clone(),
            current: self.current,
            filling,
            spare: Vec::new(),
        }
    }
}

impl Bodies {
    /// Copies `body` in; the reference returned is held once.
    pub fn add(&mut self, body: &[u8]) -> BodyRef {
        if body.len() > CHUNK_BYTES / 4 {
            let chunk = self.new_chunk(Some(Arc::new(body.to_vec())));
            return self.held(chunk, 0, body.len());
        }
        let chunk = match self.current {
            Some(c) if self.filling.capacity() - self.filling.len() >= body.len() => c,
            _ => {
                self.seal();
                let c = self.new_chunk(None);
                self.current = Some(c);
                self.filling = self
                    .spare
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(CHUNK_BYTES));
                c
            }
        };
        let at = self.filling.len();
        debug_assert!(
            self.filling.capacity() - at >= body.len(),
            "a chunk never grows"
        );
        self.filling.extend_from_slice(body);
        self.held(chunk, at, body.len())
    }

    /// One more reference on `r`'s body (another recipient).
    pub fn share(&mut self, r: BodyRef) -> BodyRef {
        if let Some(c) = self.chunks.get_mut(r.chunk as usize) {
            c.refs += 1;
        }
        r
    }

    /// Gives back one reference on `r`'s body.
    pub fn release(&mut self, r: BodyRef) {
        let Some(c) = self.chunks.get_mut(r.chunk as usize) else {
            debug_assert!(false, "a body of no chunk");
            return;
        };
        if c.refs == 0 {
            // Released more often than held: ignored (retiring the chunk twice would hand
            // its id out twice).
            debug_assert!(false, "a body released more often than held");
            return;
        }
        c.refs -= 1;
        if c.refs == 0 && self.current != Some(r.chunk) {
            self.retire(r.chunk);
        }
    }

    /// The bytes of `r`'s body.
    pub fn get(&self, r: BodyRef) -> &[u8] {
        let bytes = if self.current == Some(r.chunk) {
            Some(self.filling.as_slice())
        } else {
            self.chunks
                .get(r.chunk as usize)
                .and_then(|c| c.sealed.as_deref())
                .map(Vec::as_slice)
        };
        let (at, len) = (r.at as usize, r.len as usize);
        bytes.and_then(|b| b.get(at..at + len)).unwrap_or_default()
    }

    /// `r`'s body in the chunk being filled (compaction moves the bodies it rewrites, so old
    /// chunks can go): copied there the first time this step moves it (`moves`), shared after;
    /// the new reference, the old one released. A body with a chunk of its own stays.
    pub fn rehome(&mut self, r: BodyRef, moves: &mut Moves) -> BodyRef {
        if self.current == Some(r.chunk) || r.len as usize > CHUNK_BYTES / 4 {
            return r;
        }
        let moved = match moves.get(&r) {
            Some(&m) => self.share(m),
            None => {
                let body = self.get(r).to_vec();
                let m = self.add(&body);
                moves.insert(r, self.share(m));
                m
            }
        };
        self.release(r);
        moved
    }

    /// Ends a compaction step: the references `moves` held are given back.
    pub fn forget_moves(&mut self, moves: &mut Moves) {
        for (_, m) in moves.drain() {
            self.release(m);
        }
    }

    /// Bytes allocated for bodies (what they cost in memory; sealed chunks shared with a
    /// clone count in both).
    pub fn allocated(&self) -> usize {
        self.chunks
            .iter()
            .filter_map(|c| c.sealed.as_ref())
            .map(|d| d.capacity())
            .sum::<usize>()
            + self.filling.capacity()
            + self.spare.iter().map(Vec::capacity).sum::<usize>()
    }

    /// Chunks holding bodies (the one being filled included).
    pub fn chunks_held(&self) -> usize {
        self.chunks.len() - self.free.len()
    }

    fn held(&mut self, chunk: u32, at: usize, len: usize) -> BodyRef {
        if let Some(c) = self.chunks.get_mut(chunk as usize) {
            c.refs += 1;
        }
        BodyRef {
            chunk,
            at: at as u32,
            len: len as u32,
        }
    }

    /// Seals the chunk being filled (given back at once if nothing holds it).
    fn seal(&mut self) {
        let Some(id) = self.current.take() else {
            return;
        };
        let data = std::mem::take(&mut self.filling);
        if let Some(c) = self.chunks.get_mut(id as usize) {
            c.sealed = Some(Arc::new(data));
            if c.refs == 0 {
                self.retire(id);
            }
        }
    }

    /// A new chunk with no reference yet.
    fn new_chunk(&mut self, sealed: Option<Arc<Vec<u8>>>) -> u32 {
        let chunk = Chunk { sealed, refs: 0 };
        match self.free.pop() {
            Some(id) => {
                if let Some(slot) = self.chunks.get_mut(id as usize) {
                    *slot = chunk;
                }
                id
            }
            None => {
                self.chunks.push(chunk);
                u32::try_from(self.chunks.len() - 1).unwrap_or(u32::MAX)
            }
        }
    }

    fn retire(&mut self, id: u32) {
        let Some(c) = self.chunks.get_mut(id as usize) else {
            return;
        };
        // Its buffer is reused unless a clone still shares it.
        if let Some(mut data) = c.sealed.take().and_then(|d| Arc::try_unwrap(d).ok()) {
            if data.capacity() == CHUNK_BYTES && self.spare.len() < SPARE_CHUNKS {
                data.clear();
                self.spare.push(data);
            }
        }
        self.free.push(id);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bodies_read_back_and_chunks_go_with_their_last_reference() {
        let mut b = Bodies::default();
        let mut held = Vec::new();
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for i in 0..20_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = match x % 100 {
                0 => CHUNK_BYTES / 4 + 1 + (x % 3000) as usize,
                _ => (x % 300) as usize,
            };
            let body: Vec<u8> = (0..len).map(|j| (i as usize + j) as u8).collect();
            let r = b.add(&body);
            let mut refs = vec![r];
            if x.is_multiple_of(7) {
                refs.push(b.share(r));
            }
            for r in refs {
                held.push((r, body.clone()));
            }
            // Release about as many as are added, in a scrambled order.
            while held.len() > 500 || (x.is_multiple_of(3) && !held.is_empty()) {
                let (r, want) = held.swap_remove((x as usize >> 8) % held.len());
                assert_eq!(b.get(r), want.as_slice());
                b.release(r);
                x = x.rotate_left(5);
            }
            if x.is_multiple_of(11) && !held.is_empty() {
                let k = (x as usize >> 16) % held.len();
                let (r, want) = held[k].clone();
                let mut moves = Moves::default();
                let moved = b.rehome(r, &mut moves);
                assert_eq!(b.get(moved), want.as_slice());
                held[k].0 = moved;
                // Another holder of the same body, moved in the same step, shares the copy.
                if let Some(j) = held.iter().position(|(o, _)| *o == r) {
                    let again = b.rehome(r, &mut moves);
                    assert_eq!(again, moved);
                    held[j].0 = again;
                }
                b.forget_moves(&mut moves);
            }
        }
        for (r, want) in held.drain(..) {
            assert_eq!(b.get(r), want.as_slice());
            b.release(r);
        }
        // Everything released: only the chunk being filled is left.
        assert!(b.chunks_held() <= 1);
        assert!(b.allocated() <= (SPARE_CHUNKS + 1) * CHUNK_BYTES);
    }

    #[test]
    fn a_held_body_keeps_only_its_own_chunk() {
        let mut b = Bodies::default();
        let kept = b.add(b"kept");
        for _ in 0..10_000 {
            let r = b.add(&[7u8; 100]);
            b.release(r);
        }
        assert_eq!(b.get(kept), b"kept");
        assert_eq!(
            b.chunks_held(),
            2,
            "the kept body's chunk and the one being filled"
        );
        let mut moves = Moves::default();
        let kept = b.rehome(kept, &mut moves);
        b.forget_moves(&mut moves);
        assert_eq!(b.chunks_held(), 1);
        assert_eq!(b.get(kept), b"kept");
    }

    #[test]
    fn a_clone_reads_the_same_bodies_and_goes_its_own_way() {
        let mut b = Bodies::default();
        let refs: Vec<BodyRef> = (0..3_000u32).map(|i| b.add(&i.to_le_bytes())).collect();
        let big = b.add(&vec![9u8; CHUNK_BYTES]);
        let mut c = b.clone();
        // The original goes on: releases everything, fills new chunks.
        for r in &refs {
            b.release(*r);
        }
        b.release(big);
        for i in 0..5_000u32 {
            let r = b.add(&(i + 1_000_000).to_le_bytes());
            assert_eq!(b.get(r), (i + 1_000_000).to_le_bytes());
        }
        // The clone still reads every body it holds.
        for (i, r) in refs.iter().enumerate() {
            assert_eq!(c.get(*r), (i as u32).to_le_bytes());
        }
        assert_eq!(c.get(big).len(), CHUNK_BYTES);
        let more = c.add(b"after");
        assert_eq!(c.get(more), b"after");
        for r in refs {
            c.release(r);
        }
        c.release(big);
        assert_eq!(c.chunks_held(), 1);
    }
}
