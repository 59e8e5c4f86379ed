//! TLS to Redis (`rediss://`): the client configuration (the CA that signed Redis's
//! certificate, and a client certificate when Redis asks for one, as its default
//! `tls-auth-clients yes` does), a blocking handshake bounded by the connect timeout, and the
//! blocking stream the start-up load, the lock and the claims use. The store's own
//! connections run their TLS session over the shard's ring (`node.rs`): records encrypted
//! into the send buffer, received records decrypted into the reply buffer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// Where certificates are read from when `redis_tls_ca` is not set (Debian's CA bundle).
pub const SYSTEM_CA: &str = "/etc/ssl/certs/ca-certificates.crt";

/// TLS settings of the connections to Redis.
#[derive(Clone, Debug)]
pub struct Tls {
    config: Arc<ClientConfig>,
    /// The name every node's certificate is checked against (the URL's host).
    name: ServerName<'static>,
}

fn certificates(path: &Path, key: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

impl Tls {
    /// Settings for a Redis at `host` whose certificate chains to the CAs in `ca` (PEM),
    /// presenting `cert` and `key` (PEM) if given. Errors name the config key.
    pub fn new(
        host: &str,
        ca: &Path,
        cert: Option<&Path>,
        key: Option<&Path>,
    ) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = RootCertStore::empty();
        for c in certificates(ca, "redis_tls_ca")? {
            roots
                .add(c)
                .map_err(|e| format!("redis_tls_ca {}: {e}", ca.display()))?;
        }
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots);
        let config = match (cert, key) {
            (Some(cert), Some(key)) => {
                let chain = certificates(cert, "redis_tls_cert")?;
                let key = PrivateKeyDer::from_pem_file(key)
                    .map_err(|e| format!("redis_tls_key {}: {e}", key.display()))?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| format!("redis_tls_cert / redis_tls_key: {e}"))?
            }
            (None, None) => builder.with_no_client_auth(),
            _ => return Err("redis_tls_cert and redis_tls_key go together".into()),
        };
        let name = ServerName::try_from(host.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|e| format!("redis_url: host {host}: {e}"))?
            .to_owned();
        Ok(Self {
            config: Arc::new(config),
            name,
        })
    }

    /// A client session, not started.
    fn session(&self) -> std::io::Result<ClientConnection> {
        ClientConnection::new(self.config.clone(), self.name.clone()).map_err(std::io::Error::other)
    }

    /// Runs the handshake on `tcp` (blocking, the whole of it bounded by `timeout`); the
    /// session, ready for application data. The socket's timeouts are cleared afterwards.
    pub fn handshake(
        &self,
        tcp: &mut TcpStream,
        timeout: Duration,
    ) -> std::io::Result<ClientConnection> {
        let mut session = self.session()?;
        let mut io = Deadline {
            tcp: &mut *tcp,
            deadline: std::time::Instant::now() + timeout,
        };
        while session.is_handshaking() {
            session
                .complete_io(&mut io)
                .map_err(|e| std::io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        }
        tcp.set_read_timeout(None)?;
        tcp.set_write_timeout(None)?;
        Ok(session)
    }
}

/// A socket whose every read and write waits at most until `deadline` (a handshake bounded
/// as a whole, however its bytes trickle in).
struct Deadline<'a> {
    tcp: &'a mut TcpStream,
    deadline: std::time::Instant,
}

impl Deadline<'_> {
    fn left(&self) -> std::io::Result<Duration> {
        self.deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    }
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.tcp.set_read_timeout(Some(self.left()?))?;
        self.tcp.read(buf)
    }
}

impl Write for Deadline<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tcp.set_write_timeout(Some(self.left()?))?;
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.tcp.flush()
    }
}

/// A blocking connection to Redis, in the clear or over TLS.
#[derive(Debug)]
pub enum Stream {
    /// `redis://`.
    Plain(TcpStream),
    /// `rediss://`.
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Stream {
    /// `tcp`, with TLS when `tls` is set (its handshake bounded by `timeout`).
    pub fn over(tcp: TcpStream, tls: Option<&Tls>, timeout: Duration) -> std::io::Result<Self> {
        match tls {
            None => Ok(Self::Plain(tcp)),
            Some(tls) => {
                let mut tcp = tcp;
                let session = tls.handshake(&mut tcp, timeout)?;
                Ok(Self::Tls(Box::new(StreamOwned::new(session, tcp))))
            }
        }
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Self::Plain(s) => s,
            Self::Tls(s) => &s.sock,
        }
    }

    /// See [`TcpStream::set_read_timeout`].
    pub fn set_read_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_read_timeout(d)
    }

    /// See [`TcpStream::set_write_timeout`].
    pub fn set_write_timeout(&self, d: Option<Duration>) -> std::io::Result<()> {
        self.tcp().set_write_timeout(d)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.read(buf),
            Self::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Plain(s) => s.write(buf),
            Self::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Plain(s) => s.flush(),
            Self::Tls(s) => s.flush(),
        }
    }
}
