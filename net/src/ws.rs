//! MQTT over WebSocket (RFC 6455), the server's side, sans-IO: the HTTP/1.1 upgrade request
//! and its answer ([`parse_upgrade`], [`accept_response`], [`reject_response`]), and the
//! frame codec ([`FrameDecoder`], [`encode_frame`]).
//!
//! MQTT rides in binary frames only; a frame may hold part of a packet or several, so the
//! decoder streams payload bytes out as they arrive (nothing is buffered per frame but the
//! header and a control frame's ≤125 bytes). Every rule a client can break is an error
//! carrying the close code to answer with; nothing panics on any input (a property test and
//! the `ws_frames` fuzz target check it).

use base64::Engine;
use bytes::{BufMut, BytesMut};
use sha1::{Digest, Sha1};

/// Headers looked at in an upgrade request; more is refused.
const HEADERS_MAX: usize = 32;
/// RFC 6455's GUID for `Sec-WebSocket-Accept`.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// A parsed upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The request path (query included).
    pub path: String,
    /// `Sec-WebSocket-Key`.
    pub key: String,
    /// The subprotocol chosen among those offered (`mqtt`, else `mqttv3.1`); `None` when the
    /// client offered none.
    pub protocol: Option<&'static str>,
}

/// Why an upgrade request was refused: the HTTP status to answer with and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket upgrade refused ({status}): {reason}")]
pub struct UpgradeError {
    /// HTTP status (400, 404, 426, 431).
    pub status: u16,
    /// What was wrong.
    pub reason: &'static str,
}

fn refuse(status: u16, reason: &'static str) -> UpgradeError {
    UpgradeError { status, reason }
}

/// Parses the upgrade request at the head of `buf`: `Ok(None)` while it is incomplete (and
/// shorter than `max` bytes), else the request and the bytes it took. `path`, if given, is the
/// only path accepted (a query string is ignored).
pub fn parse_upgrade(
    buf: &[u8],
    max: usize,
    path: Option<&str>,
) -> Result<Option<(Upgrade, usize)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() < max => return Ok(None),
        Ok(httparse::Status::Partial) => {
            return Err(refuse(431, "upgrade request larger than its limit"))
        }
        Err(httparse::Error::TooManyHeaders) => return Err(refuse(431, "too many headers")),
        Err(_) => return Err(refuse(400, "not an HTTP request")),
    };
    if used > max {
        return Err(refuse(431, "upgrade request larger than its limit"));
    }
    if req.method != Some("GET") {
        return Err(refuse(400, "not a GET request"));
    }
    let target = req.path.unwrap_or("");
    if let Some(want) = path {
        if target.split('?').next() != Some(want) {
            return Err(refuse(404, "path not served (ws_path)"));
        }
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(refuse(426, "not a WebSocket upgrade request"));
    }
    if header("sec-websocket-version") != Some("13") {
        return Err(refuse(426, "WebSocket version 13 required"));
    }
    let key = match header("sec-websocket-key") {
        Some(k) if k.len() == 24 => k.to_owned(),
        _ => return Err(refuse(400, "missing or bad Sec-WebSocket-Key")),
    };
    let offered = req
        .headers
        .iter()
        .any(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"));
    let protocol = if has_token("sec-websocket-protocol", "mqtt") {
        Some("mqtt")
    } else if has_token("sec-websocket-protocol", "mqttv3.1") {
        Some("mqttv3.1")
    } else if offered {
        return Err(refuse(400, "subprotocol mqtt not offered"));
    } else {
        None
    };
    Ok(Some((
        Upgrade {
            path: target.to_owned(),
            key,
            protocol,
        },
        used,
    )))
}

/// The `Sec-WebSocket-Accept` value for a client's key.
pub fn accept_key(key: &str) -> String {
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(ACCEPT_GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Appends the `101 Switching Protocols` answer to `out`.
pub fn accept_response(upgrade: &Upgrade, out: &mut BytesMut) {
    out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n");
    out.extend_from_slice(b"Connection: Upgrade\r\nSec-WebSocket-Accept: ");
    out.extend_from_slice(accept_key(&upgrade.key).as_bytes());
    if let Some(p) = upgrade.protocol {
        out.extend_from_slice(b"\r\nSec-WebSocket-Protocol: ");
        out.extend_from_slice(p.as_bytes());
    }
    out.extend_from_slice(b"\r\n\r\n");
}

/// Appends an HTTP error answer for a refused upgrade to `out`.
pub fn reject_response(e: &UpgradeError, out: &mut BytesMut) {
    let status = match e.status {
        404 => "404 Not Found",
        426 => "426 Upgrade Required",
        431 => "431 Request Header Fields Too Large",
        _ => "400 Bad Request",
    };
    let body = e.reason;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\nConnection: close\r\nSec-WebSocket-Version: 13\r\n");
    out.extend_from_slice(b"Content-Type: text/plain\r\nContent-Length: ");
    out.extend_from_slice((body.len() + 1).to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out.extend_from_slice(b"\n");
}

/// Frame opcodes.
pub mod opcode {
    /// A continuation of a fragmented message.
    pub const CONTINUATION: u8 = 0x0;
    /// Text (not allowed for MQTT).
    pub const TEXT: u8 = 0x1;
    /// Binary: MQTT bytes.
    pub const BINARY: u8 = 0x2;
    /// Close.
    pub const CLOSE: u8 = 0x8;
    /// Ping.
    pub const PING: u8 = 0x9;
    /// Pong.
    pub const PONG: u8 = 0xA;
}

/// Close codes.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data of a type not accepted (text frames).
    pub const UNSUPPORTED: u16 = 1003;
    /// A message too big to process.
    pub const TOO_BIG: u16 = 1009;
}

/// A broken frame rule: the close code to answer with and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("WebSocket frame refused ({code}): {reason}")]
pub struct FrameError {
    /// The close code.
    pub code: u16,
    /// What was wrong.
    pub reason: &'static str,
}

fn bad(code: u16, reason: &'static str) -> FrameError {
    FrameError { code, reason }
}

/// A control frame the peer sent, to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Ping with its payload (answer with a pong carrying it).
    Ping(Vec<u8>),
    /// The peer closes, with its close code if it gave one.
    Close(Option<u16>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a header (`have` of its bytes are in `header`).
    Header { have: usize },
    /// Reading a payload.
    Payload {
        opcode: u8,
        fin: bool,
        left: u64,
        mask: [u8; 4],
        /// Payload bytes already unmasked (the mask's phase).
        at: usize,
    },
}

/// The streaming decoder of a client's frames.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    state: State,
    header: [u8; 14],
    /// Largest payload of one frame.
    frame_max: u64,
    /// Inside a fragmented binary message.
    fragmented: bool,
    /// Frames must be masked (a server reading a client); a client reading a server
    /// refuses masked ones.
    masked: bool,
    /// A control frame's payload so far.
    control: Vec<u8>,
}

impl FrameDecoder {
    /// A decoder refusing frames with a payload over `frame_max` bytes.
    pub fn new(frame_max: usize) -> Self {
        Self {
            state: State::Header { have: 0 },
            header: [0; 14],
            frame_max: frame_max as u64,
            fragmented: false,
            masked: true,
            control: Vec::new(),
        }
    }

    /// A client's decoder of a server's (unmasked) frames.
    pub fn for_client(frame_max: usize) -> Self {
        Self {
            masked: false,
            ..Self::new(frame_max)
        }
    }

    /// Decodes all of `input`: binary payload bytes are appended to `data`, control frames
    /// passed to `on_control` in order. After an error the decoder must not be fed again.
    pub fn decode(
        &mut self,
        mut input: &[u8],
        data: &mut BytesMut,
        on_control: &mut dyn FnMut(Control),
    ) -> Result<(), FrameError> {
        while !input.is_empty() {
            match self.state {
                State::Header { have } => {
                    let need = self.header_len(have);
                    let take = need.saturating_sub(have).min(input.len());
                    let (head, rest) = input.split_at(take);
                    if let Some(dst) = self.header.get_mut(have..have + take) {
                        dst.copy_from_slice(head);
                    }
                    input = rest;
                    let have = have + take;
                    let need = self.header_len(have);
                    if have < need {
                        self.state = State::Header { have };
                        continue;
                    }
                    self.start_frame(need, on_control)?;
                }
                State::Payload {
                    opcode,
                    fin,
                    left,
                    mask,
                    at,
                } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    let (chunk, rest) = input.split_at(take);
                    input = rest;
                    if opcode >= opcode::CLOSE {
                        let from = self.control.len();
                        self.control.extend_from_slice(chunk);
                        if let Some(dst) = self.control.get_mut(from..) {
                            unmask(dst, mask, at);
                        }
                    } else {
                        let from = data.len();
                        data.extend_from_slice(chunk);
                        if let Some(dst) = data.get_mut(from..) {
                            unmask(dst, mask, at);
                        }
                    }
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = State::Payload {
                            opcode,
                            fin,
                            left,
                            mask,
                            at: (at + take) % 4,
                        };
                        continue;
                    }
                    self.state = State::Header { have: 0 };
                    if opcode >= opcode::CLOSE {
                        self.end_control(opcode, on_control)?;
                    }
                }
            }
        }
        // A frame with an empty payload ends at its header.
        Ok(())
    }

    /// The header's length once `have` bytes are known (2 until the length byte is read).
    fn header_len(&self, have: usize) -> usize {
        if have < 2 {
            return 2;
        }
        let b1 = self.header.get(1).copied().unwrap_or(0);
        let ext = match b1 & 0x7F {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        // An unmasked frame is refused as soon as its second byte is read.
        let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn start_frame(
        &mut self,
        len: usize,
        on_control: &mut dyn FnMut(Control),
    ) -> Result<(), FrameError> {
        let b0 = self.header.first().copied().unwrap_or(0);
        let b1 = self.header.get(1).copied().unwrap_or(0);
        let fin = b0 & 0x80 != 0;
        let opcode = b0 & 0x0F;
        if b0 & 0x70 != 0 {
            return Err(bad(
                close::PROTOCOL,
                "reserved bits set (no extension agreed)",
            ));
        }
        if b1 & 0x80 == 0 && self.masked {
            return Err(bad(close::PROTOCOL, "unmasked client frame"));
        }
        if b1 & 0x80 != 0 && !self.masked {
            return Err(bad(close::PROTOCOL, "masked server frame"));
        }
        let mask_len = if self.masked { 4 } else { 0 };
        let ext = self.header.get(2..len - mask_len).unwrap_or(&[]);
        let payload = match b1 & 0x7F {
            126 => u64::from(u16::from_be_bytes([
                ext.first().copied().unwrap_or(0),
                ext.get(1).copied().unwrap_or(0),
            ])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(ext.get(..8).unwrap_or(&[0; 8]));
                let n = u64::from_be_bytes(b);
                if n >> 63 != 0 {
                    return Err(bad(close::PROTOCOL, "payload length's top bit set"));
                }
                n
            }
            n => u64::from(n),
        };
        let mut mask = [0u8; 4];
        if self.masked {
            mask.copy_from_slice(self.header.get(len - 4..len).unwrap_or(&[0; 4]));
        }
        match opcode {
            opcode::BINARY if self.fragmented => {
                return Err(bad(close::PROTOCOL, "new message inside a fragmented one"))
            }
            opcode::BINARY => self.fragmented = !fin,
            opcode::CONTINUATION if !self.fragmented => {
                return Err(bad(close::PROTOCOL, "continuation without a message"))
            }
            opcode::CONTINUATION => self.fragmented = !fin,
            opcode::TEXT => {
                return Err(bad(
                    close::UNSUPPORTED,
                    "text frame (MQTT needs binary frames)",
                ))
            }
            opcode::CLOSE | opcode::PING | opcode::PONG => {
                if !fin || payload > 125 {
                    return Err(bad(
                        close::PROTOCOL,
                        "control frame fragmented or over 125 bytes",
                    ));
                }
                self.control.clear();
            }
            _ => return Err(bad(close::PROTOCOL, "unknown opcode")),
        }
        if payload > self.frame_max {
            return Err(bad(close::TOO_BIG, "frame larger than ws_frame_bytes_max"));
        }
        if payload == 0 {
            self.state = State::Header { have: 0 };
            if opcode >= opcode::CLOSE {
                self.end_control(opcode, on_control)?;
            }
            return Ok(());
        }
        self.state = State::Payload {
            opcode,
            fin,
            left: payload,
            mask,
            at: 0,
        };
        Ok(())
    }

    fn end_control(
        &mut self,
        opcode: u8,
        on_control: &mut dyn FnMut(Control),
    ) -> Result<(), FrameError> {
        match opcode {
            opcode::PING => on_control(Control::Ping(std::mem::take(&mut self.control))),
            opcode::CLOSE => {
                let code = match self.control.as_slice() {
                    [] => None,
                    [a, b, ..] => Some(u16::from_be_bytes([*a, *b])),
                    [_] => return Err(bad(close::PROTOCOL, "close frame of one byte")),
                };
                on_control(Control::Close(code));
            }
            // Pongs need no answer.
            _ => {}
        }
        Ok(())
    }
}

/// XORs `buf` with `mask`, starting at phase `at`.
fn unmask(buf: &mut [u8], mask: [u8; 4], at: usize) {
    if mask == [0; 4] {
        return;
    }
    let mut key = [0u8; 8];
    for (i, k) in key.iter_mut().enumerate() {
        *k = mask.get((at + i) % 4).copied().unwrap_or(0);
    }
    let word = u64::from_ne_bytes(key);
    let mut chunks = buf.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ word).to_ne_bytes());
    }
    for (b, k) in chunks.into_remainder().iter_mut().zip(key) {
        *b ^= k;
    }
}

/// The header of an unmasked (server) frame with a payload of `len` bytes: the bytes and
/// how many of them are used.
pub fn frame_header(opcode: u8, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    let mut out = &mut h[..];
    out.put_u8(0x80 | (opcode & 0x0F));
    let n = match len {
        n if n < 126 => {
            out.put_u8(n as u8);
            2
        }
        n if n <= 0xFFFF => {
            out.put_u8(126);
            out.put_u16(n as u16);
            4
        }
        n => {
            out.put_u8(127);
            out.put_u64(n as u64);
            10
        }
    };
    (h, n)
}

/// Appends one unmasked (server) frame with `payload` to `out`.
pub fn encode_frame(opcode: u8, payload: &[u8], out: &mut BytesMut) {
    let (header, n) = frame_header(opcode, payload.len());
    out.reserve(payload.len() + n);
    out.extend_from_slice(header.get(..n).unwrap_or(&[]));
    out.extend_from_slice(payload);
}

/// Appends one masked (client) frame with `payload` to `out`.
pub fn encode_masked_frame(opcode: u8, payload: &[u8], mask: [u8; 4], out: &mut BytesMut) {
    let (mut header, n) = frame_header(opcode, payload.len());
    // The mask bit, then the key between the header and the payload.
    if let Some(b1) = header.get_mut(1) {
        *b1 |= 0x80;
    }
    out.reserve(n + 4 + payload.len());
    out.extend_from_slice(header.get(..n).unwrap_or(&[]));
    out.extend_from_slice(&mask);
    let from = out.len();
    out.extend_from_slice(payload);
    if let Some(dst) = out.get_mut(from..) {
        unmask(dst, mask, 0);
    }
}

/// Appends a close frame with `code` to `out`.
pub fn encode_close(code: u16, out: &mut BytesMut) {
    encode_frame(opcode::CLOSE, &code.to_be_bytes(), out);
}

#[cfg(test)]
mod tests;
