//! The load generator's TLS and WebSocket client side (`--tls`, `--ws`): the set-up is
//! blocking (TLS handshake, HTTP upgrade), then the same sans-IO layers run inside the ring
//! loop: received bytes through [`ClientLink::input`] into the read buffer, queued MQTT
//! bytes through [`ClientLink::wrap`] into the send buffer (rustls' `ClientConnection`,
//! masked WebSocket frames from `net::ws`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use bytes::BytesMut;
use net::ws::{self, FrameDecoder};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// How clients reach the broker.
#[derive(Debug, Clone, Default)]
pub struct Layers {
    /// TLS with this configuration.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// WebSocket on this path.
    pub ws_path: Option<String>,
}

impl Layers {
    /// Plain TCP.
    pub fn none() -> Self {
        Self::default()
    }

    /// A TLS client configuration trusting the CA certificates in `ca` (PEM); `resume`:
    /// reuse sessions (tickets) across connections, else every handshake is full.
    pub fn tls_config(ca: &Path, resume: bool) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca).with_context(|| ca.display().to_string())? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"mqtt".to_vec()];
        if !resume {
            config.resumption = rustls::client::Resumption::disabled();
        }
        Ok(Arc::new(config))
    }

    /// `tcp`, `tls`, `ws` or `wss`.
    pub fn name(&self) -> &'static str {
        match (self.tls.is_some(), self.ws_path.is_some()) {
            (false, false) => "tcp",
            (true, false) => "tls",
            (false, true) => "ws",
            (true, true) => "wss",
        }
    }
}

/// One connection's client-side layers.
#[derive(Debug)]
pub struct ClientLink {
    tls: Option<rustls::ClientConnection>,
    /// The WebSocket decoder, once upgraded.
    ws: Option<FrameDecoder>,
    /// WebSocket is used (upgraded or not yet).
    websocket: bool,
    /// TLS plaintext before the upgrade answer is complete / on its way to the decoder.
    mid: BytesMut,
    /// Frame scratch.
    frame: BytesMut,
    mask: u32,
}

impl ClientLink {
    /// Sets up the layers on a connected socket (blocking): the TLS handshake, the upgrade.
    /// `None` for plain TCP.
    pub fn open(
        s: &mut TcpStream,
        layers: &Layers,
        addr: SocketAddr,
    ) -> anyhow::Result<Option<Box<Self>>> {
        if layers.tls.is_none() && layers.ws_path.is_none() {
            return Ok(None);
        }
        let tls = match &layers.tls {
            Some(config) => {
                let name = ServerName::IpAddress(addr.ip().into());
                let mut c = rustls::ClientConnection::new(config.clone(), name)?;
                // A whole batch is written at once (the default limit is 64 KiB).
                c.set_buffer_limit(None);
                while c.is_handshaking() {
                    c.complete_io(s).context("TLS handshake")?;
                }
                Some(c)
            }
            None => None,
        };
        let mut link = Box::new(Self {
            tls,
            ws: None,
            websocket: layers.ws_path.is_some(),
            mid: BytesMut::new(),
            frame: BytesMut::new(),
            mask: u32::from(addr.port()) << 16 | 0x9E37,
        });
        if let Some(path) = &layers.ws_path {
            let request = format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
            );
            link.write_raw(s, request.as_bytes())?;
            let mut plain = BytesMut::new();
            while link.ws.is_none() {
                if link.read(s, &mut plain)? == 0 {
                    bail!("the broker closed the connection during the WebSocket upgrade");
                }
            }
            if !plain.is_empty() {
                bail!("MQTT bytes before CONNECT");
            }
        }
        Ok(Some(link))
    }

    /// Wire bytes received: the MQTT bytes they carry are appended to `plain`.
    pub fn input(&mut self, wire: &[u8], plain: &mut BytesMut) -> anyhow::Result<()> {
        let Some(tls) = self.tls.as_mut() else {
            return self.ws_input(wire, plain);
        };
        let mut rest = wire;
        // Plaintext straight into `plain` over TLS; through the frame decoder over WSS.
        let mut clear = BytesMut::new();
        let target = if self.websocket {
            &mut clear
        } else {
            &mut *plain
        };
        while !rest.is_empty() {
            if tls.read_tls(&mut rest)? == 0 {
                break;
            }
            let state = tls.process_new_packets()?;
            let n = state.plaintext_bytes_to_read();
            let from = target.len();
            target.resize(from + n, 0);
            if let Some(dst) = target.get_mut(from..) {
                tls.reader().read_exact(dst)?;
            }
            if state.peer_has_closed() {
                break;
            }
        }
        if self.websocket {
            self.ws_input(&clear, plain)?;
        }
        Ok(())
    }

    fn ws_input(&mut self, bytes: &[u8], plain: &mut BytesMut) -> anyhow::Result<()> {
        if !self.websocket {
            plain.extend_from_slice(bytes);
            return Ok(());
        }
        if self.ws.is_none() {
            self.mid.extend_from_slice(bytes);
            let Some(end) = self.mid.windows(4).position(|w| w == b"\r\n\r\n") else {
                return Ok(());
            };
            if !self.mid.starts_with(b"HTTP/1.1 101 ") {
                bail!(
                    "WebSocket upgrade refused: {}",
                    String::from_utf8_lossy(&self.mid)
                );
            }
            self.ws = Some(FrameDecoder::for_client(1 << 26));
            let rest = self.mid.split_off(end + 4);
            self.mid = BytesMut::new();
            return self.frames(&rest, plain);
        }
        self.frames(bytes, plain)
    }

    fn frames(&mut self, bytes: &[u8], plain: &mut BytesMut) -> anyhow::Result<()> {
        if let Some(decoder) = self.ws.as_mut() {
            decoder.decode(bytes, plain, &mut |_| {})?;
        }
        Ok(())
    }

    /// Appends the wire form of `plain` (MQTT bytes) to `out`.
    pub fn wrap(&mut self, plain: &[u8], out: &mut BytesMut) -> std::io::Result<()> {
        let framed: &[u8] = if self.websocket {
            self.mask = self.mask.rotate_left(7) ^ 0x5bd1_e995;
            self.frame.clear();
            ws::encode_masked_frame(
                ws::opcode::BINARY,
                plain,
                self.mask.to_be_bytes(),
                &mut self.frame,
            );
            &self.frame
        } else {
            plain
        };
        match self.tls.as_mut() {
            None => out.extend_from_slice(framed),
            Some(tls) => {
                tls.writer().write_all(framed)?;
                let mut w = bytes::BufMut::writer(&mut *out);
                while tls.wants_write() {
                    tls.write_tls(&mut w)?;
                }
            }
        }
        Ok(())
    }

    /// Blocking: sends `plain` (MQTT bytes).
    pub fn write_all(&mut self, s: &mut TcpStream, plain: &[u8]) -> anyhow::Result<()> {
        let mut out = BytesMut::new();
        self.wrap(plain, &mut out)?;
        s.write_all(&out)?;
        Ok(())
    }

    /// Blocking: bytes before WebSocket framing (the upgrade request).
    fn write_raw(&mut self, s: &mut TcpStream, bytes: &[u8]) -> anyhow::Result<()> {
        match self.tls.as_mut() {
            None => s.write_all(bytes)?,
            Some(tls) => {
                tls.writer().write_all(bytes)?;
                while tls.wants_write() {
                    tls.write_tls(s)?;
                }
            }
        }
        Ok(())
    }

    /// Blocking: reads once; the MQTT bytes are appended to `plain`; 0 when the socket
    /// closed.
    pub fn read(&mut self, s: &mut TcpStream, plain: &mut BytesMut) -> anyhow::Result<usize> {
        let mut chunk = [0u8; 16 * 1024];
        let n = loop {
            match s.read(&mut chunk) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => break r?,
            }
        };
        self.input(chunk.get(..n).unwrap_or(&[]), plain)?;
        Ok(n)
    }
}
