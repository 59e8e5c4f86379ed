//! The mesh: one bounded lock-free SPSC queue per ordered pair of shards, and the eventfd
//! each shard sleeps on. A producer pushes during its loop pass and wakes each peer it pushed
//! to at most once per pass (and only if that peer has not been woken since it last drained),
//! through a write on the producer's own ring.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use bytestring::ByteString;
use crossbeam_queue::ArrayQueue;
use net::codec::Connect;

use crate::ids::ShardId;
use crate::session::Message;

/// What shards tell each other.
#[derive(Debug)]
pub enum ShardMsg {
    /// A publish matched subscriptions on the receiving shard.
    Publish(Message),
    /// The sender now has subscribers for this filter.
    RouteAdd(ByteString),
    /// The sender has no more subscribers for this filter.
    RouteRemove(ByteString),
    /// A connection whose CONNECT arrived on the sender but whose session lives on the
    /// receiver: the socket, the decoded CONNECT and whatever was read after it.
    Adopt {
        /// The client's socket, now owned by the receiver.
        fd: OwnedFd,
        /// Its CONNECT.
        connect: Box<Connect>,
        /// Bytes received after the CONNECT.
        rest: BytesMut,
    },
}

/// A shard's end of the mesh wake-up: its eventfd and the "already woken" flag.
#[derive(Debug)]
pub struct Doorbell {
    /// The eventfd the shard keeps a read armed on.
    pub fd: OwnedFd,
    /// Set by the first producer to ring since the shard last drained.
    pub rung: AtomicBool,
}

/// Everything the shards share: built once, read-only afterwards (queues are internally
/// synchronised; every other field is immutable).
#[derive(Debug)]
pub struct MeshShared {
    /// `queues[from][to]`; `None` on the diagonal.
    queues: Vec<Vec<Option<ArrayQueue<ShardMsg>>>>,
    /// One doorbell per shard.
    pub doorbells: Vec<Doorbell>,
}

impl MeshShared {
    /// Queues of `capacity` messages between every ordered pair of `shards` shards.
    pub fn new(shards: usize, capacity: usize) -> std::io::Result<Arc<Self>> {
        let queues = (0..shards)
            .map(|from| {
                (0..shards)
                    .map(|to| (from != to).then(|| ArrayQueue::new(capacity)))
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
        Ok(Arc::new(Self { queues, doorbells }))
    }

    /// Shards in the mesh.
    pub fn shards(&self) -> usize {
        self.doorbells.len()
    }
}

/// One shard's view of the mesh.
#[derive(Debug)]
pub struct Mesh {
    shared: Arc<MeshShared>,
    me: ShardId,
    /// Peers pushed to during this pass, to wake at its end.
    to_wake: u64,
}

impl Mesh {
    /// Shard `me`'s view.
    pub fn new(shared: Arc<MeshShared>, me: ShardId) -> Self {
        Self {
            shared,
            me,
            to_wake: 0,
        }
    }

    /// Shards in the mesh.
    pub fn shards(&self) -> usize {
        self.shared.shards()
    }

    /// This shard's eventfd.
    pub fn doorbell_fd(&self) -> RawFd {
        self.shared
            .doorbells
            .get(self.me.index())
            .map_or(-1, |d| d.fd.as_raw_fd())
    }

    /// Pushes to `peer`'s queue; gives the message back when the queue is full.
    pub fn push(&mut self, peer: ShardId, msg: ShardMsg) -> Result<(), ShardMsg> {
        let Some(Some(queue)) = self
            .shared
            .queues
            .get(self.me.index())
            .and_then(|q| q.get(peer.index()))
        else {
            return Err(msg);
        };
        queue.push(msg)?;
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
            bell.rung.store(false, Ordering::Release);
        }
    }

    /// Pops up to `budget` messages from the peers' queues, in shard order.
    pub fn drain(&self, budget: usize, mut f: impl FnMut(ShardId, ShardMsg)) -> usize {
        let mut taken = 0;
        let shards = self.shards();
        for from in 0..shards {
            let Some(Some(queue)) = self
                .shared
                .queues
                .get(from)
                .and_then(|q| q.get(self.me.index()))
            else {
                continue;
            };
            while taken < budget {
                let Some(msg) = queue.pop() else { break };
                f(ShardId(from as u16), msg);
                taken += 1;
            }
        }
        taken
    }
}
