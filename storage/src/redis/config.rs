//! Where Redis is ([`RedisConfig`]: a URL, or seed nodes of a Redis Cluster) and the blocking
//! connection set-up (connect, `AUTH`, `SELECT`, `PING`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use super::resp;
use super::tls::{Stream, Tls};

/// Where Redis is and how the store treats it.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, as configured (for log lines).
    pub url: String,
    /// `host:port`.
    pub addr: String,
    /// The URL's host (what Redis's certificate must name, with `rediss://`).
    pub host: String,
    /// `rediss://`: connections use TLS (set up with [`RedisConfig::tls`]).
    pub tls_wanted: bool,
    /// TLS settings (`rediss://`).
    pub tls: Option<Tls>,
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
    /// `addr` is a seed node of a Redis Cluster: the store finds the masters and writes each
    /// key to its slot's master.
    pub cluster: bool,
    /// Several brokers share the database (`redis_shared`).
    pub shared: bool,
    /// With `shared`: a session's writes are guarded by its owner's epoch (`redis_fenced`,
    /// [`super::layout::GUARD`]).
    pub fenced: bool,
    /// The key of this broker's lock: the database's ([`super::lock::KEY`]), or with
    /// `redis_shared` its broker id's ([`super::lock::key_of`]).
    pub lock_key: Vec<u8>,
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
        let (rest, tls_wanted) = match (url.strip_prefix("redis://"), url.strip_prefix("rediss://"))
        {
            (Some(rest), _) => (rest, false),
            (_, Some(rest)) => (rest, true),
            _ => return Err("must start with redis:// or rediss:// (TLS)".into()),
        };
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
        let (addr, host) = match hostport.rsplit_once(':') {
            Some((h, p)) if p.parse::<u16>().is_ok() => (hostport.to_string(), h.to_string()),
            _ => (format!("{hostport}:6379"), hostport.to_string()),
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
            host,
            tls_wanted,
            tls: None,
            db,
            user,
            password,
            connect_timeout,
            hold,
            pending_bytes_max,
            cluster: false,
            shared: false,
            fenced: false,
            lock_key: super::lock::KEY.to_vec(),
        })
    }

    /// A connection, authenticated and on the right database (blocking, bounded by
    /// `connect_timeout` per step).
    pub fn connect(&self) -> std::io::Result<Stream> {
        self.connect_to(&self.addr)
    }

    /// A connection to `addr` (a cluster node), set up as [`RedisConfig::connect`]'s.
    pub fn connect_to(&self, addr: &str) -> std::io::Result<Stream> {
        let tcp = self.connect_tcp(addr)?;
        self.handshake(Stream::over(tcp, self.tls.as_ref(), self.connect_timeout)?)
    }

    /// A TCP connection to `addr` with no Redis handshake (the store sends
    /// [`RedisConfig::handshake_commands`] ahead of its first batch on it).
    pub fn connect_tcp(&self, addr: &str) -> std::io::Result<TcpStream> {
        let addrs: Vec<_> = addr.to_socket_addrs()?.collect();
        let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, "no address");
        for addr in addrs {
            match TcpStream::connect_timeout(&addr, self.connect_timeout) {
                Ok(stream) => {
                    stream.set_nodelay(true)?;
                    return Ok(stream);
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// `AUTH` and `SELECT` as the configuration needs them, and how many commands.
    pub fn handshake_commands(&self) -> (Vec<u8>, usize) {
        let mut out = Vec::new();
        let mut commands = 0;
        if let Some(password) = &self.password {
            let user = self.user.as_deref().unwrap_or("default");
            out.extend(resp::command(&[
                b"AUTH",
                user.as_bytes(),
                password.as_bytes(),
            ]));
            commands += 1;
        }
        if self.db != 0 && !self.cluster {
            out.extend(resp::command(&[b"SELECT", self.db.to_string().as_bytes()]));
            commands += 1;
        }
        (out, commands)
    }

    fn handshake(&self, stream: Stream) -> std::io::Result<Stream> {
        let mut stream = stream;
        stream.set_read_timeout(Some(self.connect_timeout))?;
        stream.set_write_timeout(Some(self.connect_timeout))?;
        let (mut out, mut replies) = self.handshake_commands();
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
                    let n = match stream.read(&mut buf) {
                        // A signal (SIGSTOP / SIGCONT of the process): read again.
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                        r => r?,
                    };
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
