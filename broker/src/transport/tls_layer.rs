//! One connection's TLS, on rustls' unbuffered API: received bytes are decrypted in a buffer
//! the shard shares between its connections (thread-local scratch), and only an incomplete
//! record is kept per connection, in a buffer allocated while it is incomplete. An idle TLS
//! connection therefore keeps rustls' state and keys, not a receive buffer (the buffered
//! `ServerConnection` keeps 4 KiB each). Handshake flights and encrypted output are written
//! straight into the connection's wire output.

use std::cell::RefCell;

use bytes::BytesMut;
use rustls::pki_types::CertificateDer;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};

/// Most received bytes kept while a record is incomplete: a handshake message joined across
/// records (rustls' buffered API allows 64 KiB) and one more record.
const PENDING_MAX: usize = 0x1_0000 + 0x4800;

/// Capacity the shared scratch keeps between calls.
const SCRATCH_KEPT_MAX: usize = 256 * 1024;

/// Room for one record's header, nonce, tag and content type (at most 29 bytes in TLS 1.2
/// and 1.3 with the `ring` suites).
const RECORD_OVERHEAD: usize = 64;

/// Largest TLS plaintext fragment.
const FRAGMENT_MAX: usize = 16 * 1024;

thread_local! {
    /// Where a connection's received records are decrypted when it has nothing pending.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// One connection's TLS state.
pub struct TlsLayer {
    conn: UnbufferedServerConnection,
    /// Received bytes not consumed yet (an incomplete record, a handshake message being
    /// joined); unallocated when empty.
    pending: Vec<u8>,
    peer_closed: bool,
    /// A TLS error happened: nothing more is read or encrypted.
    failed: bool,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.conn.is_handshaking())
            .field("pending", &self.pending.len())
            .field("peer_closed", &self.peer_closed)
            .field("failed", &self.failed)
            .finish()
    }
}

impl TlsLayer {
    /// A server-side TLS connection.
    pub fn new(config: std::sync::Arc<rustls::ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            pending: Vec::new(),
            peer_closed: false,
            failed: false,
        })
    }

    /// A TLS error ended the connection (its alert was queued).
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The handshake is not finished.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// The peer sent its close_notify (what follows it is ignored).
    pub fn peer_closed(&self) -> bool {
        self.peer_closed
    }

    /// The verified client certificate chain, leaf first.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.conn.peer_certificates()
    }

    /// Received bytes: each decrypted record's plaintext goes to `plaintext`, handshake
    /// flights (and on error, the alert) to `out`.
    pub fn input(
        &mut self,
        wire: &[u8],
        out: &mut BytesMut,
        plaintext: &mut dyn FnMut(&[u8]),
    ) -> Result<(), rustls::Error> {
        if self.failed || self.peer_closed {
            return Ok(());
        }
        if !self.pending.is_empty() {
            let mut pending = std::mem::take(&mut self.pending);
            pending.extend_from_slice(wire);
            return self.process_owned(pending, out, plaintext);
        }
        SCRATCH.with(|cell| {
            let Ok(mut scratch) = cell.try_borrow_mut() else {
                // Not re-entered in practice; a buffer of its own is as correct.
                return self.process_owned(wire.to_vec(), out, plaintext);
            };
            scratch.clear();
            scratch.extend_from_slice(wire);
            let (used, result) = self.process(&mut scratch, out, plaintext);
            let rest = scratch.get(used..).unwrap_or(&[]).to_vec();
            trim(&mut scratch);
            self.keep(rest, result)
        })
    }

    /// Processes a buffer of the connection's own and keeps what is left of it, shrunk.
    fn process_owned(
        &mut self,
        mut buf: Vec<u8>,
        out: &mut BytesMut,
        plaintext: &mut dyn FnMut(&[u8]),
    ) -> Result<(), rustls::Error> {
        let (used, result) = self.process(&mut buf, out, plaintext);
        buf.drain(..used.min(buf.len()));
        if buf.capacity() > 2 * buf.len() + 1024 {
            buf.shrink_to_fit();
        }
        self.keep(buf, result)
    }

    /// Keeps the unconsumed bytes (none after the peer's close_notify or an error), at most
    /// [`PENDING_MAX`].
    fn keep(
        &mut self,
        rest: Vec<u8>,
        result: Result<(), rustls::Error>,
    ) -> Result<(), rustls::Error> {
        if rest.len() > PENDING_MAX && result.is_ok() {
            self.failed = true;
            self.pending = Vec::new();
            return Err(rustls::Error::General(format!(
                "over {PENDING_MAX} bytes of an incomplete TLS record or handshake message"
            )));
        }
        self.pending = if rest.is_empty() || self.peer_closed || self.failed {
            Vec::new()
        } else {
            rest
        };
        result
    }

    /// Runs rustls over `buf` until it needs more bytes; returns how many it consumed.
    fn process(
        &mut self,
        buf: &mut [u8],
        out: &mut BytesMut,
        plaintext: &mut dyn FnMut(&[u8]),
    ) -> (usize, Result<(), rustls::Error>) {
        let mut used = 0;
        // Each pass consumes a record, moves a queued flight out or ends: records are at
        // least 5 bytes, flights are few.
        let passes_max = 64 + buf.len() / 5 * 2;
        for _ in 0..passes_max {
            let rest = buf.get_mut(used..).unwrap_or_default();
            let status = self.conn.process_tls_records(rest);
            let mut discard = status.discard;
            let state = match status.state {
                Ok(state) => state,
                Err(e) => {
                    used += discard;
                    self.failed = true;
                    self.flush_alert(buf, &mut used, out);
                    return (used, Err(e));
                }
            };
            let mut more = true;
            match state {
                ConnectionState::ReadTraffic(mut records) => {
                    while let Some(record) = records.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plaintext(record.payload);
                            }
                            Err(e) => {
                                self.failed = true;
                                return (used + discard, Err(e));
                            }
                        }
                    }
                }
                ConnectionState::ReadEarlyData(mut records) => {
                    // Not offered (no max_early_data_size): read like any data if it comes.
                    while let Some(Ok(record)) = records.next_record() {
                        discard += record.discard;
                        plaintext(record.payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut flight) => {
                    if let Err(e) = append(out, 1024, |b| flight.encode(b).map_err(encode_need)) {
                        self.failed = true;
                        return (used + discard, Err(e));
                    }
                }
                ConnectionState::TransmitTlsData(sent) => sent.done(),
                ConnectionState::PeerClosed => {
                    self.peer_closed = true;
                    more = false;
                }
                // Needs more bytes, or nothing left to read.
                _ => more = false,
            }
            used += discard;
            if !more {
                return (used, Ok(()));
            }
        }
        self.failed = true;
        (
            used,
            Err(rustls::Error::General(
                "TLS processing did not settle".into(),
            )),
        )
    }

    /// After an error: the alert rustls queued goes out (popped before any more input is
    /// looked at, which would fail again).
    fn flush_alert(&mut self, buf: &mut [u8], used: &mut usize, out: &mut BytesMut) {
        for _ in 0..8 {
            if !self.conn.wants_write() {
                return;
            }
            let rest = buf.get_mut(*used..).unwrap_or_default();
            let status = self.conn.process_tls_records(rest);
            *used += status.discard;
            let Ok(ConnectionState::EncodeTlsData(mut flight)) = status.state else {
                return;
            };
            if append(out, 64, |b| flight.encode(b).map_err(encode_need)).is_err() {
                return;
            }
        }
    }

    /// Encrypts application data (the parts joined into one run of records) into `out`;
    /// flights rustls queued meanwhile (session tickets, a key update) go first.
    pub fn encrypt(&mut self, parts: &[&[u8]], out: &mut BytesMut) -> Result<(), rustls::Error> {
        if self.failed {
            return Err(rustls::Error::General("write after a TLS error".into()));
        }
        let result = match parts {
            [one] => self.encrypt_one(one, out),
            _ => SCRATCH.with(|cell| match cell.try_borrow_mut() {
                Ok(mut scratch) => {
                    scratch.clear();
                    parts.iter().for_each(|p| scratch.extend_from_slice(p));
                    let result = self.encrypt_one(&scratch, out);
                    trim(&mut scratch);
                    result
                }
                Err(_) => self.encrypt_one(&parts.concat(), out),
            }),
        };
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn encrypt_one(&mut self, data: &[u8], out: &mut BytesMut) -> Result<(), rustls::Error> {
        // The pending input goes along unchanged: it holds no complete record (input
        // consumed those), and rustls' joining state refers to it.
        let mut pending = std::mem::take(&mut self.pending);
        let mut result = Err(rustls::Error::General("TLS output did not settle".into()));
        for _ in 0..16 {
            let status = self.conn.process_tls_records(&mut pending);
            let discard = status.discard;
            let done = match status.state {
                Err(e) => Some(Err(e)),
                Ok(ConnectionState::EncodeTlsData(mut flight)) => {
                    append(out, 1024, |b| flight.encode(b).map_err(encode_need))
                        .err()
                        .map(Err)
                }
                Ok(ConnectionState::TransmitTlsData(sent)) => {
                    sent.done();
                    None
                }
                Ok(ConnectionState::WriteTraffic(mut writer)) => {
                    let records = data.len() / FRAGMENT_MAX + 1;
                    let guess = data.len() + records * RECORD_OVERHEAD;
                    Some(append(out, guess, |b| {
                        writer.encrypt(data, b).map_err(encrypt_need)
                    }))
                }
                Ok(state) => Some(Err(rustls::Error::General(format!(
                    "TLS output in state {state:?}"
                )))),
            };
            debug_assert_eq!(discard, 0, "input left a complete record behind");
            pending.drain(..discard.min(pending.len()));
            if let Some(done) = done {
                result = done;
                break;
            }
        }
        self.pending = pending;
        result
    }
}

/// Empties the shared scratch, dropping it when it grew past [`SCRATCH_KEPT_MAX`].
fn trim(scratch: &mut Vec<u8>) {
    scratch.clear();
    if scratch.capacity() > SCRATCH_KEPT_MAX {
        *scratch = Vec::new();
    }
}

/// The size a too small buffer needed (None: a failure that room does not fix).
fn encode_need(e: EncodeError) -> Option<usize> {
    match e {
        EncodeError::InsufficientSize(need) => Some(need.required_size),
        _ => None,
    }
}

fn encrypt_need(e: EncryptError) -> Option<usize> {
    match e {
        EncryptError::InsufficientSize(need) => Some(need.required_size),
        _ => None,
    }
}

/// Appends what `write` writes into a buffer of `guess` bytes (again with the size it asks
/// for if that was too small).
fn append(
    out: &mut BytesMut,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Option<usize>>,
) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = guess;
    for _ in 0..2 {
        out.resize(start + room, 0);
        match write(out.get_mut(start..).unwrap_or_default()) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Some(need)) if need > room => room = need,
            Err(_) => break,
        }
    }
    out.truncate(start);
    Err(rustls::Error::EncryptError)
}
