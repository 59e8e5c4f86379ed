//! The layers between a connection's socket and the MQTT codec, sans-IO: TLS (rustls'
//! unbuffered server connection over the bytes the ring received and will send), WebSocket (the HTTP
//! upgrade, then binary frames; `net::ws`), or both (secure WebSocket: TLS outside). The
//! reactor feeds a connection's received bytes through [`Transport::input`] into the read
//! buffer the codec decodes, and wraps the core's output with [`Transport::wrap`]; everything
//! runs on the shard owning the connection, and moves with it to its home shard after
//! CONNECT. Plain TCP connections have no `Transport` at all.
//!
//! [`tls`]: the rustls configuration and client certificate names; [`tls_layer`]: one
//! connection's TLS records.

pub mod tls;
pub mod tls_layer;

use std::sync::Arc;

use bytes::BytesMut;
use net::ws::{self, Control, FrameDecoder};

use tls_layer::TlsLayer;

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
    /// Boxed: a WebSocket-only connection does not carry it.
    tls: Option<Box<TlsLayer>>,
    ws: Option<WsState>,
    settings: Arc<LayerSettings>,
    /// Wire bytes waiting to be sent.
    out: BytesMut,
    /// The handshakes (TLS, upgrade) are done.
    established: bool,
    /// The peer ended the stream cleanly (a WebSocket close frame).
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
            (Kind::Tls | Kind::Wss, Some(config)) => Some(Box::new(TlsLayer::new(config.clone())?)),
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
        self.peer_closed || self.tls.as_ref().is_some_and(|t| t.peer_closed())
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
        // After the handshake (whose flight may exceed a small bound on its own).
        if result.is_ok() && self.established && self.out.len() > self.settings.output_max {
            result = Err(TransportError::Backlog);
        }
        result
    }

    fn input_inner(&mut self, wire: &[u8], plain: &mut BytesMut) -> Result<(), TransportError> {
        let Self {
            tls,
            ws,
            settings,
            out,
            peer_closed,
            ..
        } = self;
        let Some(tls) = tls.as_mut() else {
            let mut reply = BytesMut::new();
            let result = match ws {
                Some(state) => ws_input(state, settings, wire, plain, &mut reply, peer_closed),
                None => {
                    plain.extend_from_slice(wire);
                    Ok(())
                }
            };
            out.extend_from_slice(&reply);
            return result;
        };
        let Some(state) = ws.as_mut() else {
            // TLS: each record's plaintext is MQTT.
            return Ok(tls.input(wire, out, &mut |bytes| plain.extend_from_slice(bytes))?);
        };
        // Secure WebSocket: each record's plaintext goes through the WebSocket layer, whose
        // answers are encrypted after (the first broken rule ends the reading).
        let mut reply = BytesMut::new();
        let mut ws_result = Ok(());
        let tls_result = tls.input(wire, out, &mut |bytes| {
            if ws_result.is_ok() {
                ws_result = ws_input(state, settings, bytes, plain, &mut reply, peer_closed);
            }
        });
        if !reply.is_empty() && tls_result.is_ok() {
            tls.encrypt(&[&reply], out)?;
        }
        tls_result?;
        ws_result
    }

    /// Wraps MQTT output (`plain`, if any) for the wire and returns everything waiting to be
    /// sent; `spare` gives and takes back buffer allocations.
    pub fn wrap(
        &mut self,
        plain: Option<BytesMut>,
        spare: &mut Option<BytesMut>,
    ) -> Option<BytesMut> {
        if let Some(mut plain) = plain {
            let tls_failed = self.tls.as_ref().is_some_and(|t| t.failed());
            // After a failed write nothing more is wrapped (the connection is closing; bytes
            // after a gap must not reach the peer).
            if self.failed {
                plain.clear();
            } else if let Err(e) = self.output(&plain) {
                // Said once: a connection whose TLS failed on input was logged then.
                if !tls_failed {
                    tracing::warn!(error = %e, "TLS write failed; the connection closes");
                }
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

    fn output(&mut self, plain: &[u8]) -> Result<(), rustls::Error> {
        match (&mut self.tls, &self.ws) {
            (None, None) => self.out.extend_from_slice(plain),
            (None, Some(_)) => ws::encode_frame(ws::opcode::BINARY, plain, &mut self.out),
            (Some(tls), None) => tls.encrypt(&[plain], &mut self.out)?,
            (Some(tls), Some(_)) => {
                // The frame header and the payload in one run of records.
                let (header, n) = ws::frame_header(ws::opcode::BINARY, plain.len());
                let header = header.get(..n).unwrap_or(&[]);
                tls.encrypt(&[header, plain], &mut self.out)?;
            }
        }
        Ok(())
    }
}

/// The WebSocket layer: the upgrade, then frames.
fn ws_input(
    state: &mut WsState,
    settings: &LayerSettings,
    bytes: &[u8],
    plain: &mut BytesMut,
    reply: &mut BytesMut,
    peer_closed: &mut bool,
) -> Result<(), TransportError> {
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
                return frames(state, &after, plain, reply, peer_closed);
            }
            Err(e) => {
                ws::reject_response(&e, reply);
                *state = WsState::Closed;
                return Err(e.into());
            }
        }
    }
    frames(state, bytes, plain, reply, peer_closed)
}

fn frames(
    state: &mut WsState,
    bytes: &[u8],
    plain: &mut BytesMut,
    reply: &mut BytesMut,
    peer_closed: &mut bool,
) -> Result<(), TransportError> {
    let WsState::Open(decoder) = state else {
        // Closed: input is ignored.
        return Ok(());
    };
    let mut closed = None;
    let result = decoder.decode(bytes, plain, &mut |control| match control {
        Control::Ping(payload) => ws::encode_frame(ws::opcode::PONG, &payload, reply),
        Control::Close(code) => closed = Some(code),
    });
    if let Err(e) = &result {
        ws::encode_close(e.code, reply);
        *state = WsState::Closed;
    }
    if closed.is_some() {
        ws::encode_close(ws::close::NORMAL, reply);
        *peer_closed = true;
        *state = WsState::Closed;
    }
    Ok(result?)
}

#[cfg(test)]
mod tests;
