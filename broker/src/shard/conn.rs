//! The reactor's side of one client connection: its socket, the read buffer packets are
//! decoded from, and the state of its in-flight operations. At most one send is in flight per
//! connection; it carries everything queued since the last. The protocol side is
//! `core::link::Link`.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Instant;

use bytes::BytesMut;

use net::codec::Connect;

use crate::ids::{ConnId, ShardId};
use crate::transport::Transport;

/// Whether a receive is armed on the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvState {
    /// None in flight.
    Idle,
    /// One-shot (before CONNECT, so the socket can move to its home shard cleanly).
    Single,
    /// Multishot (after CONNECT).
    Multi,
}

/// Where a connection is in a lingering close (see `shard::linger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Linger {
    /// Closes at once when its operations end.
    No,
    /// The broker closes it with something still to say: once that is sent, linger.
    Wanted,
    /// Write side shut; input read and discarded until the client closes, `until`, or
    /// `left` bytes more.
    Active {
        /// Deadline.
        until: Instant,
        /// Input bytes still to discard before giving up.
        left: usize,
    },
    /// Over: the socket closes when its operations end.
    Done,
}

/// A connection's I/O state.
#[derive(Debug)]
pub struct Conn {
    /// Slot and generation.
    pub id: ConnId,
    /// The socket (taken when the connection moves to its home shard).
    pub fd: Option<OwnedFd>,
    /// Received bytes not yet decoded.
    pub rbuf: BytesMut,
    /// A buffer returned by a finished send, reused for the next output.
    pub spare: Option<BytesMut>,
    /// Receive state.
    pub recv: RecvState,
    /// Closing: no more input is processed; the socket closes when no operation is in flight.
    pub closing: bool,
    /// The receive was cancelled because input is paused (a peer queue or a sink is full).
    pub recv_paused: bool,
    /// Bytes of the send in flight (0: none).
    pub sending: usize,
    /// Paused by a congested session (the core's `Link::held_by` is above zero): nothing
    /// more is decoded and the receive is not re-armed.
    pub held: bool,
    /// Its output was abandoned (a client taking nothing): a short send is not continued.
    pub aborted: bool,
    /// The client closed its side or the socket failed: nothing lingers.
    pub peer_gone: bool,
    /// Lingering close state.
    pub linger: Linger,
    /// TLS / WebSocket layers (`crate::transport`); none for plain TCP.
    pub transport: Option<Box<Transport>>,
    /// A hand-over to the home shard waiting for the send in flight to finish.
    pub handoff: Option<(ShardId, Box<Connect>)>,
}

impl Conn {
    /// A connection for a freshly accepted (or adopted) socket.
    pub fn new(id: ConnId, fd: OwnedFd) -> Self {
        Self {
            id,
            fd: Some(fd),
            rbuf: BytesMut::new(),
            spare: None,
            recv: RecvState::Idle,
            closing: false,
            recv_paused: false,
            sending: 0,
            held: false,
            aborted: false,
            peer_gone: false,
            linger: Linger::No,
            transport: None,
            handoff: None,
        }
    }

    /// The raw socket, or -1 once it has moved away.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// True when no operation references the socket any more.
    pub fn idle(&self) -> bool {
        self.recv == RecvState::Idle && self.sending == 0
    }
}
