//! The store boundary: what the broker's shards write durable records through, whatever keeps
//! them (the embedded segment log, later Redis).
//!
//! A store is sans-IO. The shard appends records; the store groups them and asks for the I/O
//! to perform next ([`Store::next_io`], e.g. a write linked to an fdatasync on the shard's own
//! io_uring); the shard performs it and hands each completion back ([`Store::io_done`]); when a
//! batch lands the store says how far records are durable ([`Landed`]). Positions count
//! records in append order: [`Store::appended`] is a position to wait for, and a landed
//! batch makes every record up to [`Landed::durable`] durable. A store whose I/O is a socket
//! (Redis: requests to send, replies to read) asks for other [`IoRequest`] kinds through the
//! same two calls.

use std::ops::Range;
use std::os::fd::RawFd;
use std::time::Instant;

use crate::compact::MessageRef;
use crate::record::Record;
use crate::Error;

/// I/O a store asks the shard to perform; each operation completes with an [`IoDone`]
/// carrying the `op` number given here.
#[derive(Debug)]
#[non_exhaustive]
pub enum IoRequest {
    /// Write `buf[range]` at `offset` of `fd` durably, as a write followed by an fdatasync of
    /// `fd` (the shard's ring does it as one `RWF_DSYNC` write; the sync's completion is 0 only
    /// once the whole write is durable). `buf` comes back with the write's completion.
    WriteAndSync {
        /// The file.
        fd: RawFd,
        /// The bytes (owned by the operation until it completes).
        buf: Vec<u8>,
        /// The part of `buf` to write.
        range: Range<usize>,
        /// File offset.
        offset: u64,
        /// `op` of the write's completion.
        write_op: u32,
        /// `op` of the sync's completion.
        sync_op: u32,
    },
    /// Send `buf[range]` on socket `fd` (all of it, or a short count the store goes on
    /// from); `buf` comes back with the completion.
    Send {
        /// The socket.
        fd: RawFd,
        /// The bytes (owned by the operation until it completes).
        buf: Vec<u8>,
        /// The part of `buf` to send.
        range: Range<usize>,
        /// `op` of the completion.
        op: u32,
    },
    /// Receive into `buf[range]` from socket `fd` (the result: bytes received, 0 at end of
    /// stream); `buf` comes back with the completion.
    Recv {
        /// The socket.
        fd: RawFd,
        /// The buffer (owned by the operation until it completes).
        buf: Vec<u8>,
        /// Where in `buf` to receive.
        range: Range<usize>,
        /// `op` of the completion.
        op: u32,
    },
    /// Complete at once with `op` (the store has something to report, e.g. a refusal once
    /// its backend stayed away too long, and no other I/O to report it through).
    Wake {
        /// `op` of the completion.
        op: u32,
    },
}

/// One completed operation of an [`IoRequest`].
#[derive(Debug)]
pub struct IoDone {
    /// Which operation (the number the request gave it).
    pub op: u32,
    /// The kernel's result (negative errno on failure).
    pub result: i32,
    /// The buffer the operation owned, if it had one.
    pub buf: Option<Vec<u8>>,
}

/// A batch landed.
#[derive(Debug, Default)]
pub struct Landed {
    /// Every record up to this position is durable.
    pub durable: u64,
    /// The batch could not be written: what waits for records after `durable` is refused
    /// (the records stay pending and are written by a later retry).
    pub failed: Option<std::io::Error>,
    /// The batch is durable but the maintenance after it (segment roll, compaction) failed.
    pub maintenance: Option<Error>,
}

/// Where a shard's durable records go.
pub trait Store: std::fmt::Debug {
    /// Keeps records at all (false for the memory store: the broker need not build them).
    fn persistent(&self) -> bool;
    /// Appends one record; it is durable once a later [`Landed`] covers its position.
    fn append(&mut self, record: &Record) -> Result<(), Error>;
    /// Appends a [`Record::Message`] given by parts (a store may encode it straight from
    /// them; by default it builds the record).
    fn append_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        let mut body = Vec::new();
        crate::compact::put_body(&mut body, message);
        self.append(&Record::Message {
            client: client.to_string(),
            id,
            qos,
            retain,
            body,
        })
    }
    /// Appends a [`Record::Acked`] given by parts.
    fn append_acked(&mut self, client: &str, seqs: &[u64]) -> Result<(), Error> {
        self.append(&Record::Acked {
            client: client.to_string(),
            seqs: seqs.to_vec(),
        })
    }
    /// Records appended so far: the position the last append must reach to be durable.
    fn appended(&self) -> u64;
    /// The last write failed and no retry has succeeded yet: refuse what needs durability.
    fn failing(&self) -> bool;
    /// Another process took this store's place (its lock): nothing it writes lands any more;
    /// false by default.
    fn fenced(&self) -> bool {
        false
    }
    /// Nothing is waiting to be written or out (besides records: commands a store sends on
    /// its own, e.g. TTL changes); a shutdown waits for it. True by default.
    fn idle(&self) -> bool {
        true
    }
    /// Writes land (false during an outage, before refusals start too); by default, not
    /// [`Store::failing`].
    fn available(&self) -> bool {
        !self.failing()
    }
    /// The next I/O to perform, if a batch is due (at most one batch is out at a time).
    fn next_io(&mut self, now: Instant) -> Option<IoRequest>;
    /// More I/O for the batch out, asked for after [`Store::next_io`] and after each
    /// completion (a socket store's receive, the rest of a short send); none by default.
    fn continue_io(&mut self) -> Option<IoRequest> {
        None
    }
    /// One completion of the I/O asked for; a [`Landed`] once the batch is complete.
    fn io_done(&mut self, done: IoDone) -> Option<Landed>;
    /// A persistent session's client connected (a store that expires sessions by itself
    /// stops doing so); nothing by default.
    fn session_online(&mut self, _client: &str) {}
    /// A persistent session's client went away: the session may be forgotten `expiry`
    /// seconds from now (`u32::MAX`: never); nothing by default (the broker ends sessions).
    fn session_offline(&mut self, _client: &str, _expiry: u32) {}
    /// A session read from the store while running (claimed from another broker), with
    /// outbound QoS 2 state if `qos2`; nothing by default.
    fn session_loaded(&mut self, _client: &str, _qos2: bool) {}
    /// The session is another broker's now, or ended here: forget what is kept about it,
    /// write nothing; nothing by default.
    fn session_forgotten(&mut self, _client: &str) {}
    /// This broker (`broker`) owns the session under `epoch` (brokers sharing the store):
    /// its later writes are applied only while that holds; nothing by default.
    fn session_owned(&mut self, _client: &str, _broker: &str, _epoch: u64) {}
    /// Background work (compaction) within `budget` bytes; called on the shard's tick.
    fn maintain(&mut self, budget: u64) -> Result<(), Error>;
}

/// The `memory` store: nothing is kept, so every record is durable at once (acknowledgements
/// still go through the same ledger as with a disk).
#[derive(Debug, Default)]
pub struct MemoryStore {
    appended: u64,
}

impl Store for MemoryStore {
    fn persistent(&self) -> bool {
        false
    }

    fn append(&mut self, _record: &Record) -> Result<(), Error> {
        self.appended += 1;
        Ok(())
    }

    fn append_message(
        &mut self,
        _client: &str,
        _id: u64,
        _qos: u8,
        _retain: bool,
        _message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        self.appended += 1;
        Ok(())
    }

    fn append_acked(&mut self, _client: &str, _seqs: &[u64]) -> Result<(), Error> {
        self.appended += 1;
        Ok(())
    }

    fn appended(&self) -> u64 {
        self.appended
    }

    fn failing(&self) -> bool {
        false
    }

    fn next_io(&mut self, _now: Instant) -> Option<IoRequest> {
        None
    }

    fn io_done(&mut self, _done: IoDone) -> Option<Landed> {
        None
    }

    fn maintain(&mut self, _budget: u64) -> Result<(), Error> {
        Ok(())
    }
}
