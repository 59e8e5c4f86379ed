//! One client connection on a shard: its socket, the read buffer packets are decoded from,
//! the output buffer packets are encoded into, and the state of its in-flight operations.
//! At most one send is in flight per connection; it carries everything queued since the last.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use net::codec::Decoder;

use crate::ids::{ConnId, SessionId};

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

/// A connection.
#[derive(Debug)]
pub struct Conn {
    /// Slot and generation.
    pub id: ConnId,
    /// The socket (taken when the connection moves to its home shard).
    pub fd: Option<OwnedFd>,
    /// Received bytes not yet decoded.
    pub rbuf: BytesMut,
    /// The connection's decoder (protocol version set by CONNECT).
    pub decoder: Decoder,
    /// Encoded packets waiting for the next send.
    pub out: BytesMut,
    /// A buffer returned by a finished send, reused for `out`.
    pub spare: Option<BytesMut>,
    /// Bytes of the send in flight (0: none).
    pub sending: usize,
    /// Receive state.
    pub recv: RecvState,
    /// The session, once CONNECT was accepted.
    pub session: Option<SessionId>,
    /// Keep alive deadline span (1.5 x the client's keep alive), if any.
    pub keep_alive: Option<Duration>,
    /// Last time a packet arrived.
    pub last_seen: Instant,
    /// When the socket was accepted (CONNECT timeout).
    pub accepted_at: Instant,
    /// Closing: no more input is processed; the socket closes when no operation is in flight.
    pub closing: bool,
    /// Queued in the shard's flush list.
    pub dirty: bool,
    /// The receive was cancelled because input is paused (peer queue full).
    pub recv_paused: bool,
    /// Topic aliases the client set (client to server), indexed by alias - 1; at most
    /// `topic_alias_max`.
    pub aliases_in: Vec<Option<ByteString>>,
    /// The client allows reason strings and user properties on errors (MQTT 5 request
    /// problem information, default true).
    pub problem_info: bool,
    /// Publish rate limit: tokens left and when they were last refilled.
    pub rate_tokens: f64,
    /// Last refill of `rate_tokens`.
    pub rate_at: Instant,
}

impl Conn {
    /// A connection for a freshly accepted (or adopted) socket.
    pub fn new(id: ConnId, fd: OwnedFd, packet_bytes_max: usize, now: Instant) -> Self {
        Self {
            id,
            fd: Some(fd),
            rbuf: BytesMut::new(),
            decoder: Decoder::new(packet_bytes_max),
            out: BytesMut::new(),
            spare: None,
            sending: 0,
            recv: RecvState::Idle,
            session: None,
            keep_alive: None,
            last_seen: now,
            accepted_at: now,
            closing: false,
            dirty: false,
            recv_paused: false,
            aliases_in: Vec::new(),
            problem_info: true,
            rate_tokens: 0.0,
            rate_at: now,
        }
    }

    /// The raw socket, or -1 once it has moved away.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Takes one token from the publish rate bucket (`rate` per second, holding at most one
    /// second's worth); false when the client is over its rate.
    pub fn take_publish_token(&mut self, rate: u32, now: Instant) -> bool {
        let rate = f64::from(rate);
        let elapsed = now.saturating_duration_since(self.rate_at).as_secs_f64();
        self.rate_at = now;
        self.rate_tokens = (self.rate_tokens + elapsed * rate).min(rate);
        if self.rate_tokens >= 1.0 {
            self.rate_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Bytes queued or being sent.
    pub fn outbox_bytes(&self) -> usize {
        self.out.len() + self.sending
    }

    /// True when no operation references the socket any more.
    pub fn idle(&self) -> bool {
        self.recv == RecvState::Idle && self.sending == 0
    }
}
