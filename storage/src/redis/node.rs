//! One Redis connection of a shard's store (one per master): the part of the batch it
//! carries, its send and receive on the shard's ring, and its replies, counted. With
//! `rediss://` the connection's TLS session is run here: the handshake blocking at connect
//! (bounded by `redis_connect_timeout_ms`), then a part's commands encrypted into its send
//! buffer and received records decrypted into the reply buffer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use rustls::ClientConnection;

use super::config::RedisConfig;
use super::resp;
use crate::store::{IoDone, IoRequest};

/// Operation kinds (the low 2 bits of an `op`; the node's index and the connection's
/// generation above them).
pub(super) const OP_SEND: u32 = 0;
pub(super) const OP_RECV: u32 = 1;
pub(super) const OP_WAKE: u32 = 2;
/// A receive of TLS records (into the records buffer, not the reply buffer).
pub(super) const OP_RECV_TLS: u32 = 3;

/// Bytes of the receive buffer at first, and at most (write replies are a few bytes each).
const RX_BYTES: usize = 64 << 10;
const RX_BYTES_MAX: usize = 16 << 20;

/// Backoff between connection attempts: first, and at most.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// `op` for a request of `kind` on node `index`, connection `generation`.
pub(super) fn op(kind: u32, index: usize, generation: u32) -> u32 {
    kind | ((index as u32 & 0xff) << 2) | (generation << 10)
}

/// The node and generation of an `op`.
pub(super) fn op_target(op: u32) -> (usize, u32) {
    (((op >> 2) & 0xff) as usize, op >> 10)
}

/// Makes room at the end of the reply buffer `rx` (`len` bytes in it, `parsed` of them
/// counted): what was counted moved out, else the buffer doubled up to its bound; false if it
/// is full (a reply larger than any write gets: not Redis).
fn make_room(rx: &mut Vec<u8>, len: &mut usize, parsed: &mut usize) -> bool {
    if *len == rx.len() {
        if *parsed > 0 {
            rx.copy_within(*parsed..*len, 0);
            *len -= *parsed;
            *parsed = 0;
        } else if rx.len() < RX_BYTES_MAX {
            rx.resize(rx.len() * 2, 0);
        }
    }
    *len < rx.len()
}

/// A connection: its socket, and its TLS session with `rediss://`.
pub(super) type Conn = (TcpStream, Option<ClientConnection>);

/// Bytes of a TLS connection's receive buffer (records, decrypted into the reply buffer).
const TLS_RX_BYTES: usize = 64 << 10;

/// A node's part of the batch out: its commands until every reply is counted.
#[derive(Debug, Default)]
pub(super) struct Part {
    /// The bytes to send (None while the kernel holds the buffer for a send): the commands,
    /// or with TLS their records.
    pub buf: Option<Vec<u8>>,
    /// With TLS, once encrypted: the commands themselves (what a retry sends again).
    pub plain: Option<Vec<u8>>,
    pub len: usize,
    pub commands: usize,
    sent: usize,
    replies: usize,
    send_out: bool,
    recv_out: bool,
    /// The first error reply.
    pub error: Option<String>,
    /// The connection broke under it.
    pub broken: bool,
    /// The handshake ahead of the batch's commands (commands, bytes): not part of a retry.
    pub prefix: (usize, usize),
}

impl Part {
    /// `commands` commands in `buf`.
    pub fn new(buf: Vec<u8>, commands: usize) -> Self {
        Self {
            len: buf.len(),
            buf: Some(buf),
            commands,
            ..Self::default()
        }
    }

    /// Nothing of it is in flight.
    pub fn idle(&self) -> bool {
        !self.send_out && !self.recv_out
    }

    /// Nothing of it is in flight and it has all its replies or broke.
    pub fn over(&self) -> bool {
        self.idle() && (self.broken || (self.sent == self.len && self.replies == self.commands))
    }
}

/// One connection and what it carries.
#[derive(Debug)]
pub(super) struct Node {
    pub addr: String,
    index: usize,
    conn: Option<TcpStream>,
    /// The connection's TLS session (`rediss://`).
    tls: Option<ClientConnection>,
    /// With TLS: the buffer records are received into (None while the kernel holds it).
    crx: Option<Vec<u8>>,
    /// A broken connection, shut down but kept open until its part has nothing in flight:
    /// a request queued on the ring but not submitted yet still names this fd, which must
    /// not be reused meanwhile.
    closing: Option<TcpStream>,
    /// Bumped per connection: a completion of an older one only returns its buffer.
    generation: u32,
    /// A part answered without error on this connection (its `AUTH` / `SELECT` went
    /// through); until then each part starts with them.
    pub handshaken: bool,
    rx: Option<Vec<u8>>,
    rx_len: usize,
    rx_parsed: usize,
    pub part: Option<Part>,
    pub next_attempt: Instant,
    backoff: Duration,
    pub last_error: String,
}

impl Node {
    /// Starts `commands` commands of `buf` on this connection, behind the handshake while it
    /// has not gone through.
    pub fn start(&mut self, buf: Vec<u8>, commands: usize, config: &RedisConfig) {
        let (mut first, n) = if self.handshaken {
            (Vec::new(), 0)
        } else {
            config.handshake_commands()
        };
        let part = if n == 0 {
            Part::new(buf, commands)
        } else {
            let prefix_bytes = first.len();
            first.extend_from_slice(&buf);
            let mut part = Part::new(first, commands + n);
            part.prefix = (n, prefix_bytes);
            part
        };
        self.part = Some(part);
    }

    /// Node `index` at `addr`, with a connection if one is given.
    pub fn new(addr: String, index: usize, conn: Option<Conn>, now: Instant) -> Self {
        // A connection carried over from an older slot map sends its handshake again.
        let handshaken = conn.is_none();
        let (conn, tls) = match conn {
            Some((c, t)) => (Some(c), t),
            None => (None, None),
        };
        Self {
            addr,
            index,
            conn,
            crx: tls.as_ref().map(|_| vec![0; TLS_RX_BYTES]),
            tls,
            closing: None,
            generation: 0,
            handshaken,
            rx: Some(vec![0; RX_BYTES]),
            rx_len: 0,
            rx_parsed: 0,
            part: None,
            next_attempt: now,
            backoff: BACKOFF_MIN,
            last_error: String::new(),
        }
    }

    pub fn connected(&self) -> bool {
        self.conn.is_some()
    }

    /// Takes the connection (to hand it to a node of a new topology).
    pub fn take_conn(&mut self) -> Option<Conn> {
        Some((self.conn.take()?, self.tls.take()))
    }

    /// Closes a broken connection once nothing of its part is in flight.
    pub fn release_closing(&mut self) {
        if self.part.as_ref().is_none_or(Part::idle) {
            self.closing = None;
        }
    }

    /// True while its part has a send or a receive out.
    pub fn in_flight(&self) -> bool {
        self.part.as_ref().is_some_and(|p| !p.idle())
    }

    /// Tries to connect if due; true if connected now.
    pub fn connect(&mut self, config: &RedisConfig, now: Instant) -> bool {
        if self.conn.is_some() {
            return true;
        }
        self.release_closing();
        if now < self.next_attempt {
            return false;
        }
        // TCP (bounded by `redis_connect_timeout_ms`; at once on a local host): the Redis
        // handshake goes ahead of the next part, so a Redis that accepts and then stays
        // silent does not block the shard. With TLS, the TLS handshake does block it, for
        // at most `redis_connect_timeout_ms` per attempt (backoff between attempts).
        let connected = config.connect_tcp(&self.addr).and_then(|mut conn| {
            // TLS: the handshake now, blocking (bounded by the connect timeout).
            let tls = match &config.tls {
                Some(tls) => Some(tls.handshake(&mut conn, config.connect_timeout)?),
                None => None,
            };
            Ok((conn, tls))
        });
        match connected {
            Ok((conn, tls)) => {
                tracing::info!(url = %config.url, node = %self.addr, "Redis connected");
                self.conn = Some(conn);
                if tls.is_some() && self.crx.is_none() {
                    self.crx = Some(vec![0; TLS_RX_BYTES]);
                }
                self.tls = tls;
                self.handshaken = false;
                self.generation = self.generation.wrapping_add(1) & 0x3f_ffff;
                self.backoff = BACKOFF_MIN;
                true
            }
            Err(e) => {
                self.last_error = e.to_string();
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                false
            }
        }
    }

    /// The connection failed: close it (so operations on it complete), back off; true if it
    /// was open.
    pub fn broken(&mut self, why: String, now: Instant) -> bool {
        self.last_error = why;
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        if let Some(p) = &mut self.part {
            p.broken = true;
        }
        self.rx_len = 0;
        self.rx_parsed = 0;
        self.tls = None;
        match self.conn.take() {
            Some(conn) => {
                // Operations out on it complete now; the fd stays ours until they did.
                let _ = conn.shutdown(std::net::Shutdown::Both);
                self.closing = Some(conn);
                true
            }
            None => false,
        }
    }

    /// The next request its part needs (the rest of the send, a receive), if any.
    pub fn request(&mut self) -> Option<IoRequest> {
        let fd = self.conn.as_ref()?.as_raw_fd();
        let op_of = |kind| op(kind, self.index, self.generation);
        let (send_op, recv_op, recv_tls_op) = (op_of(OP_SEND), op_of(OP_RECV), op_of(OP_RECV_TLS));
        let part = self.part.as_mut().filter(|p| !p.broken)?;
        if let (Some(tls), None) = (&mut self.tls, &part.plain) {
            // The part's commands become records once, on this connection.
            let plain = part.buf.take()?;
            let mut records = Vec::with_capacity(plain.len() + plain.len() / 64 + 64);
            // A slice at a time: the session buffers a bounded amount of records.
            let mut encrypted = Ok(());
            let mut at = 0;
            while at < plain.len() {
                let wrote = tls
                    .writer()
                    .write(plain.get(at..).unwrap_or_default())
                    .and_then(|n| {
                        while tls.wants_write() {
                            tls.write_tls(&mut records)?;
                        }
                        Ok(n)
                    });
                match wrote {
                    Ok(0) => {
                        encrypted = Err(std::io::Error::other("no progress encrypting"));
                        break;
                    }
                    Ok(n) => at += n,
                    Err(e) => {
                        encrypted = Err(e);
                        break;
                    }
                }
            }
            part.plain = Some(plain);
            part.len = records.len();
            part.buf = Some(records);
            if let Err(e) = encrypted {
                self.broken(format!("TLS: {e}"), Instant::now());
                return None;
            }
            return self.request();
        }
        if !part.send_out && part.sent < part.len {
            let buf = part.buf.take()?;
            part.send_out = true;
            return Some(IoRequest::Send {
                fd,
                buf,
                range: part.sent..part.len,
                op: send_op,
            });
        }
        if part.recv_out || part.replies == part.commands {
            return None;
        }
        if self.tls.is_some() {
            let crx = self.crx.take()?;
            part.recv_out = true;
            let range = 0..crx.len();
            return Some(IoRequest::Recv {
                fd,
                buf: crx,
                range,
                op: recv_tls_op,
            });
        }
        let mut rx = self.rx.take()?;
        if !make_room(&mut rx, &mut self.rx_len, &mut self.rx_parsed) {
            // A reply larger than any write gets: not Redis.
            self.rx = Some(rx);
            self.broken("reply too large".into(), Instant::now());
            return None;
        }
        part.recv_out = true;
        let range = self.rx_len..rx.len();
        Some(IoRequest::Recv {
            fd,
            buf: rx,
            range,
            op: recv_op,
        })
    }

    /// A completion of one of its operations (`generation` it was issued under); the reason
    /// if it broke the connection.
    pub fn done(
        &mut self,
        kind: u32,
        generation: u32,
        done: IoDone,
        now: Instant,
    ) -> Option<String> {
        let current = generation == self.generation && self.conn.is_some();
        let why = match kind {
            OP_SEND => {
                let part = self.part.as_mut()?;
                part.send_out = false;
                part.buf = done.buf;
                if !current || part.broken {
                    None
                } else if done.result < 0 {
                    Some(format!(
                        "send: {}",
                        std::io::Error::from_raw_os_error(-done.result)
                    ))
                } else {
                    part.sent += done.result as usize;
                    None
                }
            }
            OP_RECV | OP_RECV_TLS => {
                let part = self.part.as_mut()?;
                part.recv_out = false;
                let skip = !current || part.broken;
                // The reply buffer, or with TLS the records buffer, back from the kernel.
                let (mut records, n) = (None, usize::try_from(done.result).unwrap_or(0));
                if kind == OP_RECV {
                    self.rx = done.buf;
                } else {
                    records = done.buf;
                }
                let why = if skip {
                    None
                } else if done.result <= 0 {
                    Some(if done.result == 0 {
                        "closed by Redis".to_string()
                    } else {
                        format!("recv: {}", std::io::Error::from_raw_os_error(-done.result))
                    })
                } else if let Some(r) = &records {
                    self.decrypt(r.get(..n).unwrap_or_default())
                } else {
                    self.rx_len += n;
                    self.parse_replies()
                };
                if records.is_some() {
                    self.crx = records;
                }
                why
            }
            _ => None,
        };
        let why = why?;
        self.broken(why.clone(), now).then_some(why)
    }

    /// Takes received TLS records: decrypted into the reply buffer, replies counted; a reason
    /// if the connection must break.
    fn decrypt(&mut self, mut records: &[u8]) -> Option<String> {
        while !records.is_empty() {
            let tls = self.tls.as_mut()?;
            match tls.read_tls(&mut records) {
                Ok(0) => return Some("TLS: no progress on received records".into()),
                Ok(_) => {}
                Err(e) => return Some(format!("TLS: {e}")),
            }
            if let Err(e) = tls.process_new_packets() {
                return Some(format!("TLS: {e}"));
            }
            if let Some(why) = self.take_plaintext() {
                return Some(why);
            }
        }
        None
    }

    /// Moves what the TLS session decrypted into the reply buffer (compacted, grown up to its
    /// bound as needed) and counts the replies.
    fn take_plaintext(&mut self) -> Option<String> {
        loop {
            let mut rx = self.rx.take()?;
            if !make_room(&mut rx, &mut self.rx_len, &mut self.rx_parsed) {
                self.rx = Some(rx);
                return Some("reply too large".into());
            }
            let read = match (self.tls.as_mut(), rx.get_mut(self.rx_len..)) {
                (Some(tls), Some(free)) => tls.reader().read(free),
                _ => Ok(0),
            };
            self.rx = Some(rx);
            match read {
                Ok(0) => return Some("closed by Redis (TLS close_notify)".into()),
                Ok(n) => {
                    self.rx_len += n;
                    if let Some(why) = self.parse_replies() {
                        return Some(why);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(format!("TLS: {e}")),
            }
        }
    }

    /// Counts the replies that arrived (the first error kept); a reason if the stream is not
    /// Redis's.
    fn parse_replies(&mut self) -> Option<String> {
        let (Some(part), Some(rx)) = (&mut self.part, &self.rx) else {
            return None;
        };
        let mut malformed = None;
        while part.replies < part.commands {
            let window = rx.get(self.rx_parsed..self.rx_len).unwrap_or_default();
            match resp::skip(window) {
                Ok(Some((error, used))) => {
                    if error && part.error.is_none() {
                        let text = resp::parse(window)
                            .ok()
                            .flatten()
                            .and_then(|(r, _)| r.error().map(str::to_string))
                            .unwrap_or_default();
                        part.error = Some(text);
                    }
                    self.rx_parsed += used;
                    part.replies += 1;
                }
                Ok(None) => break,
                Err(e) => {
                    malformed = Some(e.to_string());
                    break;
                }
            }
        }
        if self.rx_parsed == self.rx_len {
            self.rx_parsed = 0;
            self.rx_len = 0;
        }
        malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ops_carry_kind_node_and_generation() {
        let o = op(OP_RECV, 7, 0x3f_ffff);
        assert_eq!(o & 3, OP_RECV);
        assert_eq!(op_target(o), (7, 0x3f_ffff));
    }
}
