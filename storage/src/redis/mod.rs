//! The Redis store: persistent sessions, their queued messages, QoS 2 state and retained
//! messages kept in Redis instead of the embedded log, written in batches across clients.
//!
//! Sans-IO like every [`Store`]: records become commands ([`layout::Encoder`]) appended to one
//! pipeline buffer; once per loop pass (when the previous batch answered) the whole buffer
//! goes out as one send on the shard's own io_uring ([`IoRequest::Send`]) and the replies come
//! back through [`IoRequest::Recv`]. When every command of a batch answered without an error
//! its records are durable (as durable as Redis's `appendonly` / `appendfsync` make them).
//!
//! A lost connection (or an error reply: OOM, READONLY, ...) keeps the batch: every command
//! is idempotent, so it is sent again, whole, once a connection is back (reconnecting with
//! backoff). Meanwhile acknowledgements stay held (publishers slow down); after
//! `redis_hold_ms` the held ones are refused and so are new durable publishes
//! ([`Store::failing`]) until a batch lands again.
//!
//! # Layout
//! - `mod.rs`: [`RedisStore`] (batches, the connection's state, backoff).
//! - [`resp`]: the protocol.
//! - [`layout`]: keys, values, records as commands.
//! - [`load`]: the blocking start-up load of every session and retained message.
//! - [`lock`]: one broker per Redis database.

pub mod layout;
pub mod load;
pub mod lock;
pub mod resp;

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::compact::MessageRef;
use crate::record::Record;
use crate::store::{IoDone, IoRequest, Landed, Store};
use crate::Error;

/// Where Redis is and how the store treats it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, as configured (for log lines).
    pub url: String,
    /// `host:port`.
    pub addr: String,
    /// Database number (`SELECT`).
    pub db: u32,
    /// ACL user (None: `default`).
    pub user: Option<String>,
    /// Password (None: no `AUTH`).
    pub password: Option<String>,
    /// Longest wait for a connection (blocking, on the shard's thread).
    pub connect_timeout: Duration,
    /// How long acknowledgements stay held while Redis is unreachable before they are
    /// refused.
    pub hold: Duration,
    /// Bytes of commands waiting for Redis beyond which durable publishes are refused.
    pub pending_bytes_max: usize,
}

impl RedisConfig {
    /// Parses `url` (`redis://[[user]:password@]host[:port][/db]`); the other fields from the
    /// arguments.
    pub fn parse(
        url: &str,
        connect_timeout: Duration,
        hold: Duration,
        pending_bytes_max: usize,
    ) -> Result<Self, String> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or("must start with redis:// (rediss:// needs TLS, not built yet)")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let (hostport, db) = match rest.split_once('/') {
            Some((h, "")) => (h, 0),
            Some((h, db)) => (h, db.parse().map_err(|_| "the database must be a number")?),
            None => (rest, 0),
        };
        if hostport.is_empty() {
            return Err("no host".into());
        }
        let addr = if hostport
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            hostport.to_string()
        } else {
            format!("{hostport}:6379")
        };
        let (user, password) = match auth {
            None => (None, None),
            Some(a) => match a.split_once(':') {
                Some(("", p)) => (None, Some(p.to_string())),
                Some((u, p)) => (Some(u.to_string()), Some(p.to_string())),
                None => (None, Some(a.to_string())),
            },
        };
        Ok(Self {
            url: redact(url),
            addr,
            db,
            user,
            password,
            connect_timeout,
            hold,
            pending_bytes_max,
        })
    }

    /// A connection, authenticated and on the right database (blocking, bounded by
    /// `connect_timeout` per step).
    pub fn connect(&self) -> std::io::Result<TcpStream> {
        let addrs: Vec<_> = self.addr.to_socket_addrs()?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => return self.handshake(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn handshake(&self, mut stream: TcpStream) -> std::io::Result<TcpStream> {
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(self.connect_timeout))?;
        stream.set_write_timeout(Some(self.connect_timeout))?;
        let mut out = Vec::new();
        let mut replies = 0;
        if let Some(password) = &self.password {
            let user = self.user.as_deref().unwrap_or("default");
            out.extend(resp::command(&[
                b"AUTH",
                user.as_bytes(),
                password.as_bytes(),
            ]));
            replies += 1;
        }
        if self.db != 0 {
            out.extend(resp::command(&[b"SELECT", self.db.to_string().as_bytes()]));
            replies += 1;
        }
        out.extend(resp::command(&[b"PING"]));
        replies += 1;
        stream.write_all(&out)?;
        let mut rx = Vec::new();
        let mut buf = [0u8; 4096];
        let mut done = 0;
        let mut at = 0;
        while done < replies {
            match resp::parse(rx.get(at..).unwrap_or_default()).map_err(std::io::Error::other)? {
                Some((reply, used)) => {
                    if let Some(e) = reply.error() {
                        return Err(std::io::Error::other(format!("Redis refused: {e}")));
                    }
                    at += used;
                    done += 1;
                }
                None => {
                    let n = stream.read(&mut buf)?;
                    if n == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                    rx.extend_from_slice(buf.get(..n).unwrap_or_default());
                }
            }
        }
        stream.set_read_timeout(None)?;
        stream.set_write_timeout(None)?;
        Ok(stream)
    }
}

/// The URL without its password, for log lines.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(a)) if a > s => format!("{}***{}", &url[..s + 3], &url[a..]),
        _ => url.to_string(),
    }
}

/// Operation numbers of the requests (the low bits; a connection generation above them).
const OP_SEND: u32 = 0;
const OP_RECV: u32 = 1;
const OP_WAKE: u32 = 2;

/// Bytes of the receive buffer at first, and at most (write replies are a few bytes each).
const RX_BYTES: usize = 64 << 10;
const RX_BYTES_MAX: usize = 16 << 20;

/// Backoff between connection attempts: first, and at most.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// One pipeline sent to Redis, until all its replies are read.
#[derive(Debug, Default)]
struct Batch {
    /// The commands (None while the kernel holds the buffer for a send).
    buf: Option<Vec<u8>>,
    len: usize,
    commands: usize,
    /// Records up to here are durable once every reply came without error.
    end: u64,
    sent: usize,
    replies: usize,
    /// The first error reply.
    error: Option<String>,
    send_out: bool,
    recv_out: bool,
    /// The connection broke under this batch: it goes again, whole.
    broken: bool,
}

/// A shard's store in Redis (one connection per shard).
#[derive(Debug)]
pub struct RedisStore {
    config: RedisConfig,
    encoder: layout::Encoder,
    conn: Option<TcpStream>,
    /// Commands not sent yet (the encoder counts them).
    pending: Vec<u8>,
    /// Records whose commands were all elided, landed without I/O (reported by a wake).
    landed_empty: Option<u64>,
    appended: u64,
    durable: u64,
    batch: Option<Batch>,
    /// A batch that did not land, to send again (whole) once connected.
    retry: Option<Batch>,
    rx: Option<Vec<u8>>,
    rx_len: usize,
    rx_parsed: usize,
    /// Since when batches do not land (connection lost, error replies).
    down_since: Option<Instant>,
    next_attempt: Instant,
    backoff: Duration,
    /// The hold ran out: held acks were refused, durable publishes are.
    refused: bool,
    /// Records appended up to the last refusal (later ones wait for the next).
    refused_upto: u64,
    wake_out: bool,
    last_error: String,
    /// Bumped per connection: a completion of an older one only returns its buffer.
    generation: u32,
    /// This broker's value of the database's lock, and when this store last renewed it.
    lock: String,
    renewed: Instant,
    /// Another broker took the lock: nothing is written any more.
    fenced: bool,
}

impl RedisStore {
    /// A store that writes to Redis; connected already (the load's connection is not reused:
    /// this one is the shard's).
    pub fn new(config: RedisConfig, conn: TcpStream, lock: String, now: Instant) -> Self {
        Self {
            config,
            encoder: layout::Encoder::default(),
            conn: Some(conn),
            pending: Vec::new(),
            landed_empty: None,
            appended: 0,
            durable: 0,
            batch: None,
            retry: None,
            rx: Some(vec![0; RX_BYTES]),
            rx_len: 0,
            rx_parsed: 0,
            down_since: None,
            next_attempt: now,
            backoff: BACKOFF_MIN,
            refused: false,
            refused_upto: 0,
            wake_out: false,
            last_error: String::new(),
            generation: 0,
            lock,
            renewed: now,
            fenced: false,
        }
    }

    /// Remembers that a loaded session has outbound QoS 2 state.
    pub fn loaded_qos2(&mut self, client: &str) {
        self.encoder.has_qos2(client);
    }

    fn op(&self, kind: u32) -> u32 {
        kind | (self.generation << 2)
    }

    /// The connection failed: close it (so operations on it complete), back off.
    fn broken(&mut self, why: String, now: Instant) {
        if let Some(conn) = self.conn.take() {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            if self.down_since.is_none() {
                tracing::warn!(url = %self.config.url, error = %why, "Redis connection lost; acknowledgements held, reconnecting");
            }
        }
        self.last_error = why;
        self.down_since.get_or_insert(now);
        self.next_attempt = now + self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        if let Some(b) = &mut self.batch {
            b.broken = true;
        }
        self.rx_len = 0;
        self.rx_parsed = 0;
    }

    fn try_connect(&mut self, now: Instant) {
        match self.config.connect() {
            Ok(conn) => {
                tracing::info!(url = %self.config.url, "Redis connected");
                self.conn = Some(conn);
                self.generation = self.generation.wrapping_add(1) & 0x3fff_ffff;
                self.backoff = BACKOFF_MIN;
            }
            Err(e) => {
                self.last_error = e.to_string();
                self.next_attempt = now + self.backoff;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            }
        }
    }

    fn hold_over(&self, now: Instant) -> bool {
        self.fenced
            || self
                .down_since
                .is_some_and(|since| now.duration_since(since) >= self.config.hold)
    }

    /// The batch has nothing in flight any more: how it ended.
    fn finish(&mut self, now: Instant) -> Landed {
        let Some(mut batch) = self.batch.take() else {
            return Landed {
                durable: self.durable,
                ..Landed::default()
            };
        };
        if !batch.broken && batch.error.is_none() {
            self.durable = batch.end;
            self.down_since = None;
            self.refused = false;
            // Its buffer serves the next batch.
            if let Some(mut buf) = batch.buf.take() {
                if self.pending.is_empty() {
                    buf.clear();
                    self.pending = buf;
                }
            }
            return Landed {
                durable: self.durable,
                ..Landed::default()
            };
        }
        if batch
            .error
            .as_deref()
            .is_some_and(|e| e.starts_with(lock::LOST))
            && !self.fenced
        {
            tracing::error!(url = %self.config.url, "another broker took this Redis database's lock (ringmq:lock): this broker writes nothing more there and refuses durable publishes; restart it");
            self.fenced = true;
            self.refused_upto = 0;
            self.down_since.get_or_insert(now);
        }
        if let Some(e) = batch.error.take() {
            // Redis answered but refused a command: the batch goes again after a backoff.
            if self.down_since.is_none() {
                tracing::warn!(url = %self.config.url, error = %e, "Redis refused a write; acknowledgements held, retrying");
            }
            self.last_error = e;
            self.down_since.get_or_insert(now);
            self.next_attempt = now + self.backoff;
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
        batch.sent = 0;
        batch.replies = 0;
        batch.broken = false;
        self.retry = Some(batch);
        self.landed_nothing(now)
    }

    /// Nothing new landed: a refusal once the hold is over.
    fn landed_nothing(&mut self, now: Instant) -> Landed {
        let failed = if self.hold_over(now) && self.durable < self.appended {
            // The broker logs the refusal (once per streak).
            self.refused = true;
            self.refused_upto = self.appended;
            Some(std::io::Error::other(format!(
                "Redis {} unavailable for over {} ms: {}",
                self.config.url,
                self.config.hold.as_millis(),
                self.last_error
            )))
        } else {
            None
        };
        Landed {
            durable: self.durable,
            failed,
            maintenance: None,
        }
    }

    /// Reads the replies that arrived (counted; the first error kept).
    fn parse_replies(&mut self, now: Instant) {
        let (Some(batch), Some(rx)) = (&mut self.batch, &self.rx) else {
            return;
        };
        let mut malformed = None;
        while batch.replies < batch.commands {
            let window = rx.get(self.rx_parsed..self.rx_len).unwrap_or_default();
            match resp::skip(window) {
                Ok(Some((error, used))) => {
                    if error && batch.error.is_none() {
                        let text = resp::parse(window)
                            .ok()
                            .flatten()
                            .and_then(|(r, _)| r.error().map(str::to_string))
                            .unwrap_or_default();
                        batch.error = Some(text);
                    }
                    self.rx_parsed += used;
                    batch.replies += 1;
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
        if let Some(why) = malformed {
            self.broken(why, now);
        }
    }

    fn recv_request(&mut self) -> Option<IoRequest> {
        let fd = self.conn.as_ref()?.as_raw_fd();
        let mut rx = self.rx.take()?;
        if self.rx_len == rx.len() {
            if self.rx_parsed > 0 {
                rx.copy_within(self.rx_parsed..self.rx_len, 0);
                self.rx_len -= self.rx_parsed;
                self.rx_parsed = 0;
            } else if rx.len() < RX_BYTES_MAX {
                rx.resize(rx.len() * 2, 0);
            }
        }
        if self.rx_len == rx.len() {
            // A reply larger than any write gets: not Redis.
            self.rx = Some(rx);
            self.broken("reply too large".into(), Instant::now());
            return None;
        }
        let range = self.rx_len..rx.len();
        Some(IoRequest::Recv {
            fd,
            buf: rx,
            range,
            op: self.op(OP_RECV),
        })
    }
}

impl Store for RedisStore {
    fn persistent(&self) -> bool {
        true
    }

    fn append(&mut self, record: &Record) -> Result<(), Error> {
        self.encoder.record(&mut self.pending, record);
        self.appended += 1;
        Ok(())
    }

    fn append_message(
        &mut self,
        client: &str,
        id: u64,
        qos: u8,
        retain: bool,
        message: &MessageRef<'_>,
    ) -> Result<(), Error> {
        self.encoder
            .message(&mut self.pending, client, id, qos, retain, message);
        self.appended += 1;
        Ok(())
    }

    fn append_acked(&mut self, client: &str, seqs: &[u64]) -> Result<(), Error> {
        self.encoder.acked(&mut self.pending, client, seqs);
        self.appended += 1;
        Ok(())
    }

    fn session_online(&mut self, client: &str) {
        self.encoder.online(&mut self.pending, client);
    }

    fn session_offline(&mut self, client: &str, expiry: u32) {
        let deadline = (expiry != u32::MAX).then(|| {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64);
            now + u64::from(expiry) * 1000
        });
        self.encoder.offline(&mut self.pending, client, deadline);
    }

    fn appended(&self) -> u64 {
        self.appended
    }

    fn failing(&self) -> bool {
        self.fenced || self.refused || self.pending.len() > self.config.pending_bytes_max
    }

    fn next_io(&mut self, now: Instant) -> Option<IoRequest> {
        if self.batch.is_some() || self.wake_out {
            return None;
        }
        if self.fenced {
            return self.wake_to_refuse(now);
        }
        if self.conn.is_none() && now >= self.next_attempt {
            self.try_connect(now);
        }
        let retry_due = self.retry.is_some() && now >= self.next_attempt;
        let Some(fd) = self.conn.as_ref().map(AsRawFd::as_raw_fd) else {
            return self.wake_to_refuse(now);
        };
        let batch = match self.retry.take() {
            Some(b) if retry_due => b,
            Some(b) => {
                self.retry = Some(b);
                return self.wake_to_refuse(now);
            }
            None if self.appended == self.durable && self.encoder.commands() == 0 => return None,
            None => {
                let commands = self.encoder.take(&mut self.pending);
                if commands == 0 {
                    // Every record's commands were elided: landed, nothing to send.
                    self.pending.clear();
                    self.durable = self.appended;
                    self.landed_empty = Some(self.appended);
                    self.wake_out = true;
                    return Some(IoRequest::Wake {
                        op: self.op(OP_WAKE),
                    });
                }
                let buf = std::mem::take(&mut self.pending);
                Batch {
                    len: buf.len(),
                    buf: Some(buf),
                    commands,
                    end: self.appended,
                    ..Batch::default()
                }
            }
        };
        self.batch = Some(batch);
        self.send_request(fd)
    }

    fn continue_io(&mut self) -> Option<IoRequest> {
        let fd = self.conn.as_ref()?.as_raw_fd();
        let batch = self.batch.as_ref()?;
        if batch.broken {
            return None;
        }
        if !batch.send_out && batch.sent < batch.len {
            return self.send_request(fd);
        }
        if !batch.recv_out && batch.replies < batch.commands {
            let request = self.recv_request();
            if let Some(b) = &mut self.batch {
                b.recv_out = request.is_some();
            }
            return request;
        }
        None
    }

    fn io_done(&mut self, done: IoDone) -> Option<Landed> {
        let now = Instant::now();
        let current = done.op >> 2 == self.generation;
        match done.op & 3 {
            OP_WAKE => {
                self.wake_out = false;
                if let Some(durable) = self.landed_empty.take() {
                    return Some(Landed {
                        durable,
                        ..Landed::default()
                    });
                }
                // Always a landing (maybe of nothing): it ends what `next_io` started.
                return Some(self.landed_nothing(now));
            }
            OP_SEND => {
                let batch = self.batch.as_mut()?;
                batch.send_out = false;
                batch.buf = done.buf;
                if !current || batch.broken {
                } else if done.result < 0 {
                    let e = std::io::Error::from_raw_os_error(-done.result);
                    self.broken(format!("send: {e}"), now);
                } else {
                    batch.sent += done.result as usize;
                }
            }
            OP_RECV => {
                self.rx = done.buf;
                let batch = self.batch.as_mut()?;
                batch.recv_out = false;
                if !current || batch.broken {
                } else if done.result <= 0 {
                    let why = if done.result == 0 {
                        "closed by Redis".to_string()
                    } else {
                        format!("recv: {}", std::io::Error::from_raw_os_error(-done.result))
                    };
                    self.broken(why, now);
                } else {
                    self.rx_len += done.result as usize;
                    self.parse_replies(now);
                }
            }
            _ => return None,
        }
        let batch = self.batch.as_ref()?;
        let answered = batch.replies == batch.commands && batch.sent == batch.len;
        if batch.send_out || batch.recv_out || !(answered || batch.broken) {
            return None;
        }
        Some(self.finish(now))
    }

    fn maintain(&mut self, _budget: u64) -> Result<(), Error> {
        // Renews the database's lock (a command in the next batch; a reply of `LOST`
        // fences this store).
        let now = Instant::now();
        if !self.fenced
            && now.duration_since(self.renewed) >= Duration::from_millis(lock::RENEW_EVERY_MS)
        {
            self.renewed = now;
            self.encoder.renew_lock(&mut self.pending, &self.lock);
        }
        Ok(())
    }
}

impl RedisStore {
    /// Once the hold is over, records appended since the last refusal are refused too: a
    /// completion at once reports it (nothing else would while Redis is away).
    fn wake_to_refuse(&mut self, now: Instant) -> Option<IoRequest> {
        if self.hold_over(now) && self.appended > self.refused_upto.max(self.durable) {
            self.wake_out = true;
            return Some(IoRequest::Wake {
                op: self.op(OP_WAKE),
            });
        }
        None
    }

    fn send_request(&mut self, fd: i32) -> Option<IoRequest> {
        let batch = self.batch.as_mut()?;
        let buf = batch.buf.take()?;
        batch.send_out = true;
        let range = batch.sent..batch.len;
        Some(IoRequest::Send {
            fd,
            buf,
            range,
            op: OP_SEND | (self.generation << 2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_auth_port_and_database() {
        let d = Duration::from_millis(1);
        let c = RedisConfig::parse("redis://u:p@127.0.0.1:7000/3", d, d, 1).unwrap();
        assert_eq!(
            (
                c.addr.as_str(),
                c.db,
                c.user.as_deref(),
                c.password.as_deref()
            ),
            ("127.0.0.1:7000", 3, Some("u"), Some("p"))
        );
        assert_eq!(c.url, "redis://***@127.0.0.1:7000/3");
        let c = RedisConfig::parse("redis://:pw@host", d, d, 1).unwrap();
        assert_eq!(
            (c.addr.as_str(), c.user, c.password.as_deref()),
            ("host:6379", None, Some("pw"))
        );
        assert!(RedisConfig::parse("http://x", d, d, 1).is_err());
        assert!(RedisConfig::parse("redis://h:1/x", d, d, 1).is_err());
    }
}
