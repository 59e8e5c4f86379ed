//! Sessions shared by several brokers on one Redis database (`redis_shared`): what carries
//! claims and notices between the shards and two broker-wide threads ([`threads`]) that hold
//! blocking Redis connections — the claimer (a CONNECT's claim of its client id, with the
//! session's keys read in the same pipeline; re-checks of who owns the sessions held here)
//! and the watcher (other brokers' claims, heard on `ringmq:owners`).
//!
//! These are control-path round trips, one per CONNECT, batched across the CONNECTs that
//! wait at once; the data path (every shard's writes) stays on the shards' own rings. The
//! shard side of the protocol is `crate::core::owners`.

pub mod threads;

use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;
use storage::redis::owners::{Claim, Claimed, Notice};

use crate::ids::ConnId;
use crate::kafka::Bell;

/// Notices a shard's inbox holds beyond its share of claims (the watcher waits for room).
pub const NOTICES_MAX: usize = 4096;

/// Client ids per ownership check (one pipeline each).
pub const CHECK_CHUNK: usize = 1000;

/// A check's answer for one client id: the id, the epoch asked about, the owner now (broker
/// id and epoch).
pub type Found = (String, u64, Option<(String, u64)>);

/// What a shard asks of the claimer.
#[derive(Debug)]
pub enum Request {
    /// Claim a client id for a waiting CONNECT.
    Claim {
        /// The asking shard.
        shard: usize,
        /// The connection waiting.
        conn: ConnId,
        /// What to claim.
        claim: Claim,
    },
    /// Who owns these client ids now (with the epochs the shard holds them under).
    Check {
        /// The asking shard.
        shard: usize,
        /// Client ids and epochs.
        held: Vec<(String, u64)>,
    },
}

/// What reaches a shard.
#[derive(Debug)]
pub enum Event {
    /// A claim's outcome.
    Claimed {
        /// The connection waiting.
        conn: ConnId,
        /// What was claimed.
        claim: Claim,
        /// What it found, or why it failed.
        result: Result<Box<Claimed>, String>,
    },
    /// Another broker claimed a client id.
    Taken(Notice),
    /// The watcher (re)subscribed: notices may have been missed; check every session held.
    Missed,
    /// A check could not be answered (Redis failed): ask again later.
    CheckFailed,
    /// A check's outcome: per client id, the epoch asked about and the owner now.
    Checked(Vec<Found>),
}

/// A shard's inbox: events from the threads, and its doorbell.
#[derive(Debug)]
pub struct Inbox {
    queue: ArrayQueue<Event>,
    bell: Bell,
}

impl Inbox {
    /// An inbox of `capacity` events ringing `doorbell` (the shard's eventfd).
    pub fn new(capacity: usize, doorbell: std::fs::File) -> Self {
        Self {
            queue: ArrayQueue::new(capacity.max(1)),
            bell: Bell::new(doorbell),
        }
    }

    /// Pushes `event` and wakes the shard; the event back if the inbox is full.
    pub fn push(&self, event: Event) -> Result<(), Event> {
        let r = self.queue.push(event);
        self.bell.ring();
        r
    }

    /// Pushes `event`, waiting while the inbox is full (a watcher's notice must not be lost);
    /// gives up when `stop` is set.
    pub fn push_waiting(&self, mut event: Event, stop: &std::sync::atomic::AtomicBool) {
        loop {
            match self.push(event) {
                Ok(()) => return,
                Err(back) if !stop.load(std::sync::atomic::Ordering::Relaxed) => {
                    event = back;
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
    }
}

/// A shard's handle: where it sends requests, where its events arrive.
#[derive(Debug)]
pub struct Shared {
    /// This broker's id (`redis_broker_id`).
    pub broker: Arc<str>,
    /// This shard's index.
    pub shard: usize,
    requests: SyncSender<Request>,
    inbox: Arc<Inbox>,
}

impl Shared {
    /// Hands `request` to the claimer; why not if `redis_claims_max` requests wait already or
    /// the claimer is gone.
    pub fn request(&self, request: Request) -> Result<(), &'static str> {
        match self.requests.try_send(request) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                Err("redis_claims_max CONNECTs wait for their claim in Redis")
            }
            Err(TrySendError::Disconnected(_)) => Err("the Redis claims thread is gone"),
        }
    }

    /// The next event, if any (call [`Shared::answered`] before a round of these).
    pub fn next_event(&self) -> Option<Event> {
        self.inbox.queue.pop()
    }

    /// The shard is about to look at its inbox.
    pub fn answered(&self) {
        self.inbox.bell.answered();
    }
}

/// A handle with no threads behind it, for unit tests: its requests arrive on the returned
/// receiver; events pushed into the returned inbox reach the shard.
#[cfg(test)]
pub fn for_tests(broker: &str) -> (Shared, std::sync::mpsc::Receiver<Request>, Arc<Inbox>) {
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .expect("/dev/null");
    let inbox = Arc::new(Inbox::new(64, devnull));
    let shared = Shared {
        broker: broker.into(),
        shard: 0,
        requests: tx,
        inbox: inbox.clone(),
    };
    (shared, rx, inbox)
}

/// The shards' handles and the threads' join handles.
#[derive(Debug)]
pub struct Started {
    /// One per shard, in shard order.
    pub shards: Vec<Shared>,
    /// The claimer and the watcher.
    pub threads: Vec<std::thread::JoinHandle<()>>,
}

/// Starts the claimer and the watcher for `shards` shards whose doorbells are `doorbells`.
pub fn start(
    config: &crate::config::Config,
    doorbells: Vec<std::fs::File>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<Started> {
    let redis = config
        .redis()
        .map_err(|e| anyhow::anyhow!("config key `redis_url`: {e}"))?;
    let broker: Arc<str> = config.redis_broker_id.as_str().into();
    let shards = doorbells.len();
    let per_shard = config.redis_claims_max + NOTICES_MAX;
    let inboxes: Arc<Vec<Arc<Inbox>>> = Arc::new(
        doorbells
            .into_iter()
            .map(|bell| Arc::new(Inbox::new(per_shard, bell)))
            .collect(),
    );
    let (tx, rx) = std::sync::mpsc::sync_channel(config.redis_claims_max);
    let claimer = threads::Claimer::new(redis.clone(), broker.clone(), inboxes.clone());
    let stop_c = stop.clone();
    let mut threads = vec![std::thread::Builder::new()
        .name("redis-claims".into())
        .spawn(move || claimer.run(&rx, &stop_c))?];
    let watcher = threads::Watcher::new(redis, broker.clone(), inboxes.clone());
    threads.push(
        std::thread::Builder::new()
            .name("redis-owners".into())
            .spawn(move || watcher.run(&stop))?,
    );
    let shards = (0..shards)
        .filter_map(|i| {
            Some(Shared {
                broker: broker.clone(),
                shard: i,
                requests: tx.clone(),
                inbox: inboxes.get(i)?.clone(),
            })
        })
        .collect();
    Ok(Started { shards, threads })
}
