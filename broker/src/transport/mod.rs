//! The layers between a connection's socket and the MQTT codec, sans-IO: TLS (rustls'
//! `ServerConnection` over the bytes the ring received and will send), WebSocket (the HTTP
//! upgrade, then binary frames; `net::ws`), or both (secure WebSocket: TLS outside). The
//! reactor feeds a connection's received bytes through [`Transport::input`] into the read
//! buffer the codec decodes, and wraps the core's output with [`Transport::wrap`]; everything
//! runs on the shard owning the connection, and moves with it to its home shard after
//! CONNECT. Plain TCP connections have no `Transport` at all.
//!
//! [`tls`]: the rustls configuration and client certificate names.

pub mod tls;

use std::io::{IoSlice, Read, Write};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use net::ws::{self, Control, FrameDecoder};

/// Capacity the TLS-to-WebSocket scratch buffer may keep between uses.
const MID_KEPT_MAX: usize = 32 * 1024;

/// What a listener speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over TLS.
    Tls,
    /// MQTT over WebSocket.
    Ws,
    /// MQTT over WebSocket over TLS.
    Wss,
}

impl Kind {
    /// The config key of its listener.
    pub fn key(self) -> &'static str {
        match self {
            Kind::Tcp => "listen",
            Kind::Tls => "tls_listen",
            Kind::Ws => "ws_listen",
            Kind::Wss => "wss_listen",
        }
    }
}

/// The layers' settings (read once at start).
#[derive(Debug, Clone)]
pub struct LayerSettings {
    /// The only WebSocket path accepted, if set.
    pub path: Option<String>,
    /// Largest WebSocket frame payload.
    pub frame_max: usize,
    /// Largest upgrade request.
    pub request_max: usize,
    /// Most bytes the layers' own answers (handshake, pongs, alerts) may keep waiting while
    /// the peer does not read them (`outbox_bytes_max`).
    pub output_max: usize,
}

/// Why a transport gave up on its connection (what to answer was queued already).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The TLS handshake or a record failed (an alert was queued).
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The TLS layer's I/O over memory failed.
    #[error("TLS: {0}")]
    Io(#[from] std::io::Error),
    /// A bad upgrade request (the HTTP error was queued).
    #[error("{0}")]
    Upgrade(#[from] ws::UpgradeError),
    /// A broken frame rule (a close frame was queued).
    #[error("{0}")]
    Frame(#[from] ws::FrameError),
    /// The peer does not read the layers' answers (pongs...) while sending more.
    #[error("over outbox_bytes_max of TLS / WebSocket answers waiting: the peer does not read")]
    Backlog,
}

#[derive(Debug)]
enum WsState {
    /// Waiting for the whole upgrade request.
    Upgrade(BytesMut),
    /// Upgraded: frames.
    Open(FrameDecoder),
    /// A close frame was exchanged or a rule broken: input is ignored.
    Closed,
}

/// One connection's layers.
#[derive(Debug)]
pub struct Transport {
    /// Boxed: a WebSocket-only connection does not carry its ~1.2 KB.
    tls: Option<Box<rustls::ServerConnection>>,
    ws: Option<WsState>,
    settings: Arc<LayerSettings>,
    /// Wire bytes waiting to be sent.
    out: BytesMut,
    /// TLS plaintext on its way to the WebSocket layer (secure WebSocket only).
    mid: BytesMut,
    /// The handshakes (TLS, upgrade) are done.
    established: bool,
    /// The peer ended the stream cleanly (TLS close_notify, a WebSocket close frame).
    peer_closed: bool,
    /// Output could not be wrapped (the connection must close: bytes were lost).
    failed: bool,
}

impl Transport {
    /// The layers of a connection accepted on a `kind` listener.
    pub fn new(
        kind: Kind,
        tls: Option<&Arc<rustls::ServerConfig>>,
        settings: &Arc<LayerSettings>,
    ) -> Result<Self, TransportError> {
        let tls = match (kind, tls) {
            (Kind::Tls | Kind::Wss, Some(config)) => {
                let mut c = rustls::ServerConnection::new(config.clone())?;
                // The core bounds what it queues; TLS keeps nothing back.
                c.set_buffer_limit(None);
                Some(Box::new(c))
            }
            (Kind::Tls | Kind::Wss, None) => {
                return Err(rustls::Error::General("no TLS configuration".into()).into())
            }
            _ => None,
        };
        let ws = matches!(kind, Kind::Ws | Kind::Wss).then(|| WsState::Upgrade(BytesMut::new()));
        Ok(Self {
            tls,
            ws,
            settings: settings.clone(),
            failed: false,
            out: BytesMut::new(),
            mid: BytesMut::new(),
            established: false,
            peer_closed: false,
        })
    }

    /// The handshakes are done: MQTT bytes flow.
    pub fn established(&self) -> bool {
        self.established
    }

    /// The peer ended its stream cleanly.
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// Wire bytes are waiting to be sent.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The socket failed or the output was abandoned: nothing waiting will be sent.
    pub fn discard_output(&mut self) {
        self.out = BytesMut::new();
    }

    /// MQTT output could not be wrapped: the connection must close.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The verified client certificate's name (`tls::client_name`), once established.
    pub fn client_name(&self) -> Option<String> {
        let cert = self.tls.as_ref()?.peer_certificates()?.first()?;
        tls::client_name(cert)
    }

    /// Bytes received from the socket: the MQTT bytes they carry are appended to `plain`;
    /// answers (handshake, pong, close) are queued. On error, what to tell the peer (an
    /// alert, an HTTP error, a close frame) is queued and the connection should close.
    pub fn input(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        let mut result = self.input_inner(wire, plain);
        // Established once the TLS handshake and the upgrade are done (and stays so).
        let tls_done = self.tls.as_ref().is_none_or(|t| !t.is_handshaking());
        let upgraded = self
            .ws
            .as_ref()
            .is_none_or(|s| matches!(s, WsState::Open(_)));
        self.established |= tls_done && upgraded;
        if let (Some(state), Err(TransportError::Frame(_) | TransportError::Upgrade(_))) =
            (&mut self.ws, &result)
        {
            *state = WsState::Closed;
        }
        self.drain_tls();
        // After the handshake (whose flight may exceed a small bound on its own).
        if result.is_ok() && self.established && self.out.len() > self.settings.output_max {
            result = Err(TransportError::Backlog);
        }
        if self.mid.capacity() > MID_KEPT_MAX {
            self.mid = BytesMut::new();
        }
        result
    }

    fn input_inner(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        let Some(tls) = self.tls.as_mut() else {
            let mut reply = BytesMut::new();
            let result = self.ws_input(wire, plain, &mut reply);
            self.out.extend_from_slice(&reply);
            return result;
        };
        let mut rest = wire;
        while !rest.is_empty() {
            // 0: nothing more is read (after the peer's close_notify, whatever follows it is
            // ignored).
            if tls.read_tls(&mut rest)? == 0 {
                break;
            }
            let state = match tls.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // The alert goes out before the close.
                    self.drain_tls();
                    return Err(e.into());
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let target = if self.ws.is_some() {
                    &mut self.mid
                } else {
                    &mut *plain
                };
                let from = target.len();
                target.resize(from + n, 0);
                if let Some(dst) = target.get_mut(from..) {
                    tls.reader().read_exact(dst)?;
                }
            }
            if state.peer_has_closed() {
                self.peer_closed = true;
                break;
            }
        }
        if self.ws.is_some() && !self.mid.is_empty() {
            let mid = std::mem::take(&mut self.mid);
            let mut reply = BytesMut::new();
            let result = self.ws_input(&mid, plain, &mut reply);
            self.mid = mid;
            self.mid.clear();
            if !reply.is_empty() {
                if let Some(tls) = self.tls.as_mut() {
                    tls.writer().write_all(&reply)?;
                }
            }
            result?;
        }
        Ok(())
    }

    /// The WebSocket layer: the upgrade, then frames.
    fn ws_input(
        &mut self,
        bytes: &[u8],
        plain: &mut BytesMut,
        reply: &mut BytesMut,
    ) -> Result<(), TransportError> {
        let settings = &self.settings;
        let Some(state) = self.ws.as_mut() else {
            plain.extend_from_slice(bytes);
            return Ok(());
        };
        let mut bytes = bytes;
        if let WsState::Upgrade(request) = state {
            let first = request.is_empty();
            let from = request.len().saturating_sub(3);
            request.extend_from_slice(bytes);
            // Parsed on the first bytes (not HTTP at all: refused at once), then once the
            // blank line ending the headers is in or at the limit: a request sent a byte at
            // a time is not parsed again for each.
            let tail = request.get(from..).unwrap_or(&[]);
            // The blank line: CRLF CRLF, or the bare-LF forms httparse accepts too.
            let ended =
                tail.windows(2).any(|w| w == b"\n\n") || tail.windows(3).any(|w| w == b"\n\r\n");
            if !first && !ended && request.len() < settings.request_max {
                return Ok(());
            }
            let parsed = ws::parse_upgrade(request, settings.request_max, settings.path.as_deref());
            match parsed {
                Ok(None) => return Ok(()),
                Ok(Some((upgrade, used))) => {
                    ws::accept_response(&upgrade, reply);
                    let after = request.split_off(used);
                    *state = WsState::Open(FrameDecoder::new(settings.frame_max));
                    if after.is_empty() {
                        return Ok(());
                    }
                    // Frames sent right behind the request.
                    return self.frames(&after, plain, reply);
                }
                Err(e) => {
                    ws::reject_response(&e, reply);
                    return Err(e.into());
                }
            }
        }
        if matches!(state, WsState::Closed) {
            bytes = &[];
        }
        self.frames(bytes, plain, reply)
    }

    fn frames(
        &mut self,
        bytes: &[u8],
        plain: &mut BytesMut,
        reply: &mut BytesMut,
    ) -> Result<(), TransportError> {
        let Some(WsState::Open(decoder)) = self.ws.as_mut() else {
            return Ok(());
        };
        let mut closed = None;
        let result = decoder.decode(bytes, plain, &mut |control| match control {
            Control::Ping(payload) => ws::encode_frame(ws::opcode::PONG, &payload, reply),
            Control::Close(code) => closed = Some(code),
        });
        if let Err(e) = &result {
            ws::encode_close(e.code, reply);
        }
        if closed.is_some() {
            ws::encode_close(ws::close::NORMAL, reply);
            self.peer_closed = true;
            if let Some(state) = self.ws.as_mut() {
                *state = WsState::Closed;
            }
        }
        Ok(result?)
    }

    /// Wraps MQTT output (`plain`, if any) for the wire and returns everything waiting to be
    /// sent; `spare` gives and takes back buffer allocations.
    pub fn wrap(
        &mut self,
        plain: Option<BytesMut>,
        spare: &mut Option<BytesMut>,
    ) -> Option<BytesMut> {
        if let Some(mut plain) = plain {
            // After a failed write nothing more is wrapped (the connection is closing; bytes
            // after a gap must not reach the peer).
            if self.failed {
                plain.clear();
            } else if let Err(e) = self.output(&plain) {
                tracing::warn!(error = %e, "TLS write failed; the connection closes");
                self.failed = true;
            }
            plain.clear();
            if spare.is_none() {
                *spare = Some(plain);
            }
        }
        if self.out.is_empty() {
            return None;
        }
        let fresh = spare.take().unwrap_or_default();
        Some(std::mem::replace(&mut self.out, fresh))
    }

    fn output(&mut self, plain: &[u8]) -> std::io::Result<()> {
        match (&mut self.tls, &self.ws) {
            (None, None) => self.out.extend_from_slice(plain),
            (None, Some(_)) => ws::encode_frame(ws::opcode::BINARY, plain, &mut self.out),
            (Some(tls), None) => tls.writer().write_all(plain)?,
            (Some(tls), Some(_)) => {
                // The frame header and the payload in one write: one run of records, no copy.
                let (header, n) = ws::frame_header(ws::opcode::BINARY, plain.len());
                let parts = [
                    IoSlice::new(header.get(..n).unwrap_or(&[])),
                    IoSlice::new(plain),
                ];
                let written = tls.writer().write_vectored(&parts)?;
                if written != n + plain.len() {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
            }
        }
        self.drain_tls();
        Ok(())
    }

    /// Moves the TLS layer's records into the wire output.
    fn drain_tls(&mut self) {
        let Some(tls) = self.tls.as_mut() else {
            return;
        };
        let mut w = (&mut self.out).writer();
        while tls.wants_write() {
            match tls.write_tls(&mut w) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests;
