//! The mesh: one bounded lock-free SPSC queue per ordered pair of shards, and the eventfd
//! each shard sleeps on. A producer pushes during its loop pass and wakes each peer it pushed
//! to at most once per pass (and only if that peer has not been woken since it last drained),
//! through a write on the producer's own ring.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::core::peer::ShardMsg;
use crate::ids::ShardId;

/// A shard's end of the mesh wake-up: its eventfd and the "already woken" flag.
#[derive(Debug)]
pub struct Doorbell {
    /// The eventfd the shard keeps a read armed on.
    pub fd: OwnedFd,
    /// Set by the first producer to ring since the shard last drained.
    pub rung: AtomicBool,
}

/// Bytes this message holds on to while queued (payload and topic; a fixed overhead for
/// the rest), for the per-queue byte bound.
fn weight(msg: &ShardMsg) -> u64 {
    const OVERHEAD: u64 = 64;
    match msg {
        ShardMsg::Publish(m, ..) => OVERHEAD + (m.topic.len() + m.payload.len()) as u64,
        ShardMsg::SharedPublish { message: m, .. }
        | ShardMsg::Retain { message: m, .. }
        | ShardMsg::ForClient { message: m, .. } => {
            OVERHEAD + (m.topic.len() + m.payload.len()) as u64
        }
        ShardMsg::Adopt { rest, .. } => OVERHEAD + rest.len() as u64,
        ShardMsg::RetainedPage { messages, .. } => messages
            .iter()
            .map(|m| OVERHEAD + (m.topic.len() + m.payload.len()) as u64)
            .sum::<u64>()
            .max(OVERHEAD),
        _ => OVERHEAD,
    }
}

/// One direction between two shards: a bounded SPSC queue (in messages) and the bytes its
/// consumer has taken so far, published once per drain so the producer can bound the bytes
/// queued without a shared counter written per message.
#[derive(Debug)]
struct PeerQueue {
    queue: ArrayQueue<ShardMsg>,
    consumed_bytes: AtomicU64,
    /// Set by a producer that found the queue full; the consumer rings the producer's
    /// doorbell after draining, so a paused shard resumes as soon as there is room.
    producer_waiting: AtomicBool,
}

/// Everything the shards share: built once, read-only afterwards (queues are internally
/// synchronised; every other field is immutable).
#[derive(Debug)]
pub struct MeshShared {
    /// `queues[from][to]`; `None` on the diagonal.
    queues: Vec<Vec<Option<PeerQueue>>>,
    /// Bytes (by [`weight`]) one queue may hold.
    queue_bytes_max: u64,
    /// One doorbell per shard.
    pub doorbells: Vec<Doorbell>,
}

impl MeshShared {
    /// Queues of `capacity` messages and `bytes_max` bytes between every ordered pair of
    /// `shards` shards.
    pub fn new(shards: usize, capacity: usize, bytes_max: usize) -> std::io::Result<Arc<Self>> {
        let queues = (0..shards)
            .map(|from| {
                (0..shards)
                    .map(|to| {
                        (from != to).then(|| PeerQueue {
                            queue: ArrayQueue::new(capacity),
                            consumed_bytes: AtomicU64::new(0),
                            producer_waiting: AtomicBool::new(false),
                        })
                    })
                    .collect()
            })
            .collect();
        let doorbells = (0..shards)
            .map(|_| {
                Ok(Doorbell {
                    fd: net::uring::eventfd()?,
                    rung: AtomicBool::new(false),
                })
            })
            .collect::<std::io::Result<_>>()?;
        Ok(Arc::new(Self {
            queues,
            queue_bytes_max: bytes_max as u64,
            doorbells,
        }))
    }

    /// A duplicate of every shard's doorbell eventfd, in shard order, for a thread outside
    /// the shards (the Kafka consumer) to wake them with.
    pub fn doorbell_files(&self) -> std::io::Result<Vec<std::fs::File>> {
        self.doorbells
            .iter()
            .map(|bell| Ok(std::fs::File::from(bell.fd.try_clone()?)))
            .collect()
    }

    /// Shards in the mesh.
    pub fn shards(&self) -> usize {
        self.doorbells.len()
    }

    fn queue(&self, from: usize, to: usize) -> Option<&PeerQueue> {
        self.queues
            .get(from)
            .and_then(|q| q.get(to))
            .and_then(Option::as_ref)
    }
}

/// One shard's view of the mesh.
#[derive(Debug)]
pub struct Mesh {
    shared: Arc<MeshShared>,
    me: ShardId,
    /// Peers pushed to during this pass, to wake at its end.
    to_wake: u64,
    /// Bytes pushed to each peer's queue, ever (producer side).
    pushed_bytes: Vec<u64>,
    /// Bytes taken from each peer's queue, ever (consumer side).
    drained_bytes: Vec<u64>,
}

impl Mesh {
    /// Shard `me`'s view.
    pub fn new(shared: Arc<MeshShared>, me: ShardId) -> Self {
        let shards = shared.shards();
        Self {
            shared,
            me,
            to_wake: 0,
            pushed_bytes: vec![0; shards],
            drained_bytes: vec![0; shards],
        }
    }

    /// Shards in the mesh.
    pub fn shards(&self) -> usize {
        self.shared.shards()
    }

    /// This shard's eventfd.
    /// A duplicate of this shard's doorbell eventfd, for a library thread (rdkafka's) to wake
    /// the shard with (writing 1 as a native-endian u64).
    pub fn doorbell_file(&self) -> std::io::Result<std::fs::File> {
        let bell = self
            .shared
            .doorbells
            .get(self.me.index())
            .ok_or_else(|| std::io::Error::other("no doorbell"))?;
        Ok(std::fs::File::from(bell.fd.try_clone()?))
    }

    pub fn doorbell_fd(&self) -> RawFd {
        self.shared
            .doorbells
            .get(self.me.index())
            .map_or(-1, |d| d.fd.as_raw_fd())
    }

    /// Pushes to `peer`'s queue; gives the message back when the queue is full (in messages,
    /// or in bytes unless it is empty). The message comes back by value on purpose: the
    /// queue's slots hold it by value too (no allocation per forwarded publish).
    #[allow(clippy::result_large_err)]
    pub fn push(&mut self, peer: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        let Some(pq) = self.shared.queue(self.me.index(), peer.index()) else {
            return Err(msg);
        };
        let Some(pushed) = self.pushed_bytes.get_mut(peer.index()) else {
            return Err(msg);
        };
        let weight = weight(&msg);
        let fits = |pushed: u64| {
            let queued = pushed.saturating_sub(pq.consumed_bytes.load(Ordering::SeqCst));
            queued == 0 || queued + weight <= self.shared.queue_bytes_max
        };
        let msg = if fits(*pushed) {
            match pq.queue.push(msg) {
                Ok(()) => {
                    *pushed += weight;
                    self.to_wake |= peer.bit();
                    return Ok(());
                }
                Err(msg) => msg,
            }
        } else {
            msg
        };
        // Full: ask the consumer for a wake-up, then look once more, in case it drained
        // between the first look and the request.
        pq.producer_waiting.store(true, Ordering::SeqCst);
        if !fits(*pushed) {
            return Err(msg);
        }
        pq.queue.push(msg)?;
        *pushed += weight;
        self.to_wake |= peer.bit();
        Ok(())
    }

    /// Peers to wake now (each once), as eventfds: those pushed to this pass that nobody has
    /// woken since they last drained.
    pub fn take_wakes(&mut self, out: &mut Vec<RawFd>) {
        let mut mask = std::mem::take(&mut self.to_wake);
        while mask != 0 {
            let peer = mask.trailing_zeros() as usize;
            mask &= mask - 1;
            if let Some(bell) = self.shared.doorbells.get(peer) {
                if !bell.rung.swap(true, Ordering::AcqRel) {
                    out.push(bell.fd.as_raw_fd());
                }
            }
        }
    }

    /// Called when this shard's eventfd read completes, before draining: a producer that
    /// pushes after this will ring again.
    pub fn doorbell_answered(&self) {
        if let Some(bell) = self.shared.doorbells.get(self.me.index()) {
            // A read-modify-write, not a store: a producer's `swap(true)` either sees this
            // false (and rings) or is ordered before it, and then its push is visible to
            // the drain that follows.
            bell.rung.swap(false, Ordering::AcqRel);
        }
    }

    /// Pops up to `budget` messages from the peers' queues, in shard order, and publishes
    /// the bytes taken so producers see the room.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(ShardId, ShardMsg)) -> usize {
        let mut taken = 0;
        let me = self.me.index();
        for (from, drained) in self.drained_bytes.iter_mut().enumerate() {
            let Some(pq) = self.shared.queue(from, me) else {
                continue;
            };
            let before = *drained;
            while taken < budget {
                let Some(msg) = pq.queue.pop() else { break };
                *drained += weight(&msg);
                f(ShardId(from as u16), msg);
                taken += 1;
            }
            if *drained != before {
                pq.consumed_bytes.store(*drained, Ordering::SeqCst);
                if pq.producer_waiting.swap(false, Ordering::SeqCst) {
                    self.to_wake |= 1u64.checked_shl(from as u32).unwrap_or(0);
                }
            }
        }
        taken
    }
}
