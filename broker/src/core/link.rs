//! The protocol side of one client connection, owned by the core: the decoder (its
//! protocol version), the output buffer packets are encoded into, the session it serves, keep
//! alive, topic aliases, the publish rate bucket. The reactor's side (socket, read buffer,
//! armed operations) is `shard::conn::Conn`; both are found by the same [`ConnId`].

use std::time::{Duration, Instant};

use bytes::BytesMut;
use bytestring::ByteString;
use net::codec::Decoder;

use crate::ids::{ConnId, SessionId};

/// A connection as the core sees it.
#[derive(Debug)]
pub struct Link {
    /// Slot and generation (shared with the reactor's connection).
    pub id: ConnId,
    /// The connection's decoder (protocol version set by CONNECT).
    pub decoder: Decoder,
    /// Encoded packets waiting for the next send.
    pub out: BytesMut,
    /// Bytes of the send in flight (0: none); set by the reactor.
    pub sending: usize,
    /// The session, once CONNECT was accepted.
    pub session: Option<SessionId>,
    /// Keep alive deadline span (1.5 x the client's keep alive), if any.
    pub keep_alive: Option<Duration>,
    /// Last time bytes arrived (set by the reactor).
    pub last_seen: Instant,
    /// When the socket was accepted (CONNECT timeout).
    pub accepted_at: Instant,
    /// Closing: no more input is handled; nothing more is delivered to it.
    pub closing: bool,
    /// Queued in the core's list of connections with new output.
    pub dirty: bool,
    /// Topic aliases the client set (client to server), indexed by alias - 1; at most
    /// `topic_alias_max`.
    pub aliases_in: Vec<Option<ByteString>>,
    /// The client allows reason strings and user properties on errors (MQTT 5 request
    /// problem information, default true).
    pub problem_info: bool,
    /// Publish rate limit: tokens left.
    pub rate_tokens: f64,
    /// Last refill of `rate_tokens`.
    pub rate_at: Instant,
    /// A broker bridging to this one (protocol level with the top bit set): its
    /// subscriptions are no local and retain as published, so its own publications do not
    /// come back to it.
    pub bridge: bool,
    /// Congested sessions holding this publisher paused (0: read normally).
    pub held_by: u32,
    /// Last time the client took output (a send made progress), or had none waiting.
    pub last_progress: Instant,
    /// A TLS or WebSocket handshake is under way (`handshake_timeout_ms` applies).
    pub handshaking: bool,
    /// The verified client certificate's name, when it is the user name
    /// (`tls_cert_as_username`); taken by CONNECT.
    pub cert_user: Option<Box<str>>,
}

impl Link {
    /// A link for a freshly accepted (or adopted) connection.
    pub fn new(id: ConnId, packet_bytes_max: usize, now: Instant) -> Self {
        Self {
            id,
            decoder: Decoder::new(packet_bytes_max),
            out: BytesMut::new(),
            sending: 0,
            session: None,
            keep_alive: None,
            last_seen: now,
            accepted_at: now,
            closing: false,
            dirty: false,
            aliases_in: Vec::new(),
            problem_info: true,
            rate_tokens: 0.0,
            rate_at: now,
            bridge: false,
            held_by: 0,
            last_progress: now,
            handshaking: false,
            cert_user: None,
        }
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
}

/// The live link `id` in `links` (slot and generation match). A free function so callers can
/// borrow the links apart from the rest of the core.
pub(crate) fn lookup(links: &mut [Option<Link>], id: ConnId) -> Option<&mut Link> {
    links
        .get_mut(id.slot as usize)
        .and_then(Option::as_mut)
        .filter(|c| c.id == id)
}
