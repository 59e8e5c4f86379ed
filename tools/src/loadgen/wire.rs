//! Client-side wire helpers: the blocking MQTT handshake used during set-up, and the PUBLISH
//! writer whose payload carries the publisher, sequence number and send time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context};

use super::layers::{ClientLink, Layers};
use bytes::{BufMut, BytesMut};
use net::codec::{
    Connect, Decoder, Packet, PacketId, Properties, ProtocolVersion, QoS, Subscribe,
    SubscriptionOptions,
};

/// Keep alive announced in CONNECT (some brokers refuse 0); clients ping at half of it.
pub const KEEP_ALIVE_SECS: u16 = 60;

/// Bytes at the start of every payload: publisher index (u32), sequence number (u32), send
/// time in ns since the run started (u64).
pub const PAYLOAD_HEADER_BYTES: usize = 16;

/// The largest payload a run may use.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// How a client connects.
#[derive(Debug, Clone)]
pub struct Hello<'a> {
    /// Client identifier.
    pub client_id: &'a str,
    /// Protocol version.
    pub version: ProtocolVersion,
    /// Clean start / clean session.
    pub clean: bool,
    /// MQTT 5 session expiry when not clean (MQTT 3 ignores it).
    pub session_expiry: u32,
    /// A subscription to make after CONNACK.
    pub subscribe: Option<(&'a str, QoS)>,
    /// TLS / WebSocket.
    pub layers: &'a Layers,
}

fn retry<T>(mut f: impl FnMut() -> std::io::Result<T>) -> std::io::Result<T> {
    loop {
        match f() {
            // A thread that has owned an io_uring may see EINTR (task work) on blocking calls.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// What a handshake leaves: the socket, whether the broker had a session, bytes already read
/// past the acknowledgements (a resumed session's first deliveries), and the TLS / WebSocket
/// layers (none for plain TCP).
pub type Handshaken = (TcpStream, bool, BytesMut, Option<Box<ClientLink>>);

/// Handshakes at once at most: the set-up of a run (not measured) overlaps this many, so a
/// broker that answers each connection late (mosquitto's WebSocket listener, serviced on its
/// main loop's tick) does not cost a round trip per client in a row.
pub const HANDSHAKES_AT_ONCE: usize = 16;

/// [`handshake`] for each of `hellos`, up to [`HANDSHAKES_AT_ONCE`] at a time, the results
/// in the same order; the first failure fails them all.
pub fn handshake_all(hellos: &[(SocketAddr, Hello<'_>)]) -> anyhow::Result<Vec<Handshaken>> {
    let per_thread = hellos.len().div_ceil(HANDSHAKES_AT_ONCE).max(1);
    std::thread::scope(|scope| {
        let threads: Vec<_> = hellos
            .chunks(per_thread)
            .map(|chunk| {
                scope.spawn(move || {
                    chunk
                        .iter()
                        .map(|(addr, hello)| handshake(*addr, hello))
                        .collect::<anyhow::Result<Vec<_>>>()
                })
            })
            .collect();
        let mut all = Vec::with_capacity(hellos.len());
        for t in threads {
            let done = t
                .join()
                .map_err(|_| anyhow::anyhow!("a handshake thread panicked"))??;
            all.extend(done);
        }
        Ok(all)
    })
}

/// Connects, sends CONNECT (and SUBSCRIBE), waits for CONNACK (and SUBACK).
pub fn handshake(addr: SocketAddr, hello: &Hello<'_>) -> anyhow::Result<Handshaken> {
    let mut s = retry(|| TcpStream::connect(addr)).with_context(|| format!("connect {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut link = ClientLink::open(&mut s, hello.layers, addr)?;
    let version = hello.version;
    let mut properties = Properties::default();
    if version.is_v5() && !hello.clean {
        properties.session_expiry_interval = Some(hello.session_expiry);
    }
    let connect = Connect {
        version,
        clean_start: hello.clean,
        keep_alive: KEEP_ALIVE_SECS,
        properties: properties.into(),
        client_id: hello.client_id.into(),
        will: None,
        username: None,
        password: None,
        bridge: false,
    };
    let mut out = BytesMut::new();
    Packet::Connect(Box::new(connect)).encode(version, &mut out)?;
    if let Some((filter, qos)) = hello.subscribe {
        let sub = Subscribe {
            packet_id: PacketId::new(1).context("packet id")?,
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        };
        Packet::Subscribe(sub).encode(version, &mut out)?;
    }
    if let Some(link) = link.as_mut() {
        link.write_all(&mut s, &out)?;
    }
    let mut rest: &[u8] = if link.is_some() { &[] } else { &out };
    while !rest.is_empty() {
        let n = retry(|| s.write(rest))?;
        rest = rest.get(n..).unwrap_or(&[]);
    }
    let decoder = Decoder {
        version,
        packet_bytes_max: 1 << 24,
    };
    let mut buf = BytesMut::new();
    let mut session_present = false;
    let mut want = if hello.subscribe.is_some() { 2 } else { 1 };
    while want > 0 {
        // Look before consuming: anything after the acknowledgements belongs to the run.
        let before = buf.clone();
        match decoder.decode(&mut buf)? {
            Some(Packet::ConnAck(a)) if a.code.is_success() => {
                session_present = a.session_present;
                want -= 1;
            }
            Some(Packet::ConnAck(a)) => bail!("{}: CONNACK {:#x}", hello.client_id, a.code.0),
            Some(Packet::SubAck(a)) if a.reasons.iter().all(|r| r.0 <= 2) => want -= 1,
            Some(Packet::SubAck(a)) => bail!(
                "{}: subscription refused ({:#x})",
                hello.client_id,
                a.reasons.first().map_or(0, |r| r.0)
            ),
            // A resumed session delivers right after CONNACK: hand it to the run, unread.
            Some(Packet::Publish(_)) if !hello.clean => {
                buf = before;
                break;
            }
            Some(other) => bail!("{}: unexpected {other:?} during set-up", hello.client_id),
            None if link.is_some() => {
                if link.as_mut().map_or(Ok(0), |l| l.read(&mut s, &mut buf))? == 0 {
                    bail!(
                        "{}: broker closed the connection during set-up",
                        hello.client_id
                    );
                }
            }
            None => {
                let mut chunk = [0u8; 4096];
                let n = retry(|| s.read(&mut chunk))?;
                if n == 0 {
                    bail!(
                        "{}: broker closed the connection during set-up",
                        hello.client_id
                    );
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
            }
        }
    }
    Ok((s, session_present, buf, link))
}

/// The fixed shape of the PUBLISHes a run sends.
#[derive(Debug, Clone, Copy)]
pub struct PublishShape {
    /// Protocol version (MQTT 5 adds an empty property block).
    pub version: ProtocolVersion,
    /// QoS.
    pub qos: QoS,
    /// Payload bytes (at least [`PAYLOAD_HEADER_BYTES`], or [`JSON_FIXED_BYTES`] as JSON).
    pub payload_bytes: usize,
    /// The payload is a 10-field JSON object ([`JSON_HEAD`]) carrying the stamp in hex, for
    /// brokers that validate payloads (AsyncAPI).
    pub json: bool,
}

/// The start of a JSON payload; 32 hex digits of the stamp follow.
pub const JSON_HEAD: &str = r#"{"s":""#;

/// The rest of a JSON payload, before the padding and the closing `"}`.
pub const JSON_FIELDS: &str = r#"","id":"device-000042","t":21.5,"h":40.25,"p":101325,"unit":"C","ok":true,"seq":7,"ts":1764580000000,"site":"plant-7","note":""#;

/// The smallest JSON payload (no padding).
pub const JSON_FIXED_BYTES: usize = JSON_HEAD.len() + 32 + JSON_FIELDS.len() + 2;

/// What a payload says about its message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Publisher index.
    pub publisher: u32,
    /// Sequence number within the publisher.
    pub seq: u32,
    /// Send time, ns since the run started.
    pub sent_ns: u64,
}

impl Stamp {
    /// Reads the stamp at the start of a payload (binary, or hex in a JSON payload).
    pub fn read(payload: &[u8]) -> Option<Self> {
        if let Some(hex) = payload.strip_prefix(JSON_HEAD.as_bytes()) {
            let hex = std::str::from_utf8(hex.get(..32)?).ok()?;
            let word = |r: std::ops::Range<usize>| u64::from_str_radix(hex.get(r)?, 16).ok();
            return Some(Self {
                publisher: u32::try_from(word(0..8)?).ok()?,
                seq: u32::try_from(word(8..16)?).ok()?,
                sent_ns: word(16..32)?,
            });
        }
        let b = payload.get(..PAYLOAD_HEADER_BYTES)?;
        Some(Self {
            publisher: u32::from_be_bytes(b.get(0..4)?.try_into().ok()?),
            seq: u32::from_be_bytes(b.get(4..8)?.try_into().ok()?),
            sent_ns: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

/// Appends one PUBLISH whose payload starts with `stamp`, zero-padded.
pub fn put_publish(out: &mut BytesMut, shape: PublishShape, topic: &[u8], pid: u16, stamp: Stamp) {
    let PublishShape {
        version,
        qos,
        payload_bytes,
        json,
    } = shape;
    let least = if json {
        JSON_FIXED_BYTES
    } else {
        PAYLOAD_HEADER_BYTES
    };
    let payload_bytes = payload_bytes.clamp(least, PAYLOAD_BYTES_MAX);
    let mut remaining = 2 + topic.len() + payload_bytes;
    if qos != QoS::AtMostOnce {
        remaining += 2;
    }
    if version.is_v5() {
        remaining += 1;
    }
    out.reserve(5 + remaining);
    out.put_u8(0x30 | (qos as u8) << 1);
    // Payloads are clamped to PAYLOAD_BYTES_MAX, far below what a remaining length can express.
    let _ = net::codec::put_variable_int(out, remaining);
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    if qos != QoS::AtMostOnce {
        out.put_u16(pid);
    }
    if version.is_v5() {
        out.put_u8(0);
    }
    if json {
        let hex = format!(
            "{:08x}{:08x}{:016x}",
            stamp.publisher, stamp.seq, stamp.sent_ns
        );
        out.put_slice(JSON_HEAD.as_bytes());
        out.put_slice(hex.as_bytes());
        out.put_slice(JSON_FIELDS.as_bytes());
        out.put_bytes(b'x', payload_bytes - JSON_FIXED_BYTES);
        out.put_slice(b"\"}");
        return;
    }
    out.put_u32(stamp.publisher);
    out.put_u32(stamp.seq);
    out.put_u64(stamp.sent_ns);
    out.put_bytes(0, payload_bytes - PAYLOAD_HEADER_BYTES);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_encoding_decodes() {
        for (version, json) in [
            (ProtocolVersion::V311, false),
            (ProtocolVersion::V5, false),
            (ProtocolVersion::V311, true),
        ] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut out = BytesMut::new();
                let stamp = Stamp {
                    publisher: 3,
                    seq: 42,
                    sent_ns: 99,
                };
                put_publish(
                    &mut out,
                    PublishShape {
                        version,
                        qos,
                        payload_bytes: 200,
                        json,
                    },
                    b"a/b",
                    7,
                    stamp,
                );
                let d = Decoder {
                    version,
                    packet_bytes_max: 1 << 20,
                };
                let Some(Packet::Publish(p)) = d.decode(&mut out).unwrap() else {
                    panic!()
                };
                assert!(out.is_empty());
                assert_eq!((&*p.topic, p.qos, p.payload.len()), ("a/b", qos, 200));
                assert_eq!(
                    p.packet_id.map(|id| id.get()),
                    (qos != QoS::AtMostOnce).then_some(7)
                );
                assert_eq!(Stamp::read(&p.payload), Some(stamp));
                if json {
                    let v: serde_json::Value = serde_json::from_slice(&p.payload).unwrap();
                    assert_eq!(v["unit"], "C");
                }
            }
        }
    }
}
