//! The load generator's engine: one thread, one io_uring, many MQTT connections.
//!
//! Connections are set up with plain blocking sockets (CONNECT, SUBSCRIBE; not measured),
//! then handed to the ring: every connection gets a multishot receive into provided buffers
//! and at most one send in flight carrying everything queued for it, so a loop pass costs one
//! `io_uring_enter` however many connections are busy. Payloads carry the publisher's
//! sequence number and send time, so the subscriber side measures end-to-end latency and
//! exact loss.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use net::codec::{
    Connect, Decoder, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, QoS, Subscribe,
    SubscriptionOptions,
};
use net::uring::{Completion, Ring, RingConfig};

use crate::accounting::PairAccount;
use crate::procstat;
use crate::report::{Percentiles, Report};

/// Keep alive announced in CONNECT (some brokers refuse 0); every client sends PINGREQ at
/// half this interval.
const KEEP_ALIVE_SECS: u16 = 60;

/// The largest payload a run may use.
pub const PAYLOAD_BYTES_MAX: usize = 16 << 20;

/// Bytes at the start of every payload: sequence number and send time (ns since start).
pub const PAYLOAD_HEADER_BYTES: usize = 16;

/// A point-to-point run: publisher i publishes to its own topic, subscribed by subscriber i.
#[derive(Debug, Clone)]
pub struct P2p {
    /// Broker address.
    pub addr: SocketAddr,
    /// Publisher/subscriber pairs.
    pub pairs: usize,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload bytes (at least 16).
    pub payload_bytes: usize,
    /// Messages per second per publisher; 0 for as fast as the window allows.
    pub rate: u64,
    /// Unacknowledged messages per publisher (QoS 1/2), or messages per send (QoS 0).
    pub inflight: usize,
    /// Not measured.
    pub warmup: Duration,
    /// Measured.
    pub duration: Duration,
    /// Time allowed after publishing stops for the last deliveries.
    pub drain: Duration,
    /// MQTT 3.1.1 or 5.
    pub version: ProtocolVersion,
    /// The broker's pid, for CPU and memory.
    pub broker_pid: Option<u32>,
    /// Client id prefix (runs against one broker must not collide).
    pub client_prefix: String,
}

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_TIMER: u64 = 3;

fn token(kind: u64, index: usize) -> u64 {
    kind << 56 | index as u64
}

struct Client {
    fd: OwnedFd,
    subscriber: bool,
    pair: usize,
    decoder: Decoder,
    rbuf: BytesMut,
    out: BytesMut,
    spare: Option<BytesMut>,
    sending: bool,
    dirty: bool,
    recv_armed: bool,
    // Publisher state.
    topic: Vec<u8>,
    next_seq: u64,
    unacked: usize,
    acked: u64,
    next_pid: u16,
    sent_at: Vec<u64>,
    tokens: f64,
}

/// Blocking MQTT handshake helper for set-up.
fn handshake(
    addr: SocketAddr,
    version: ProtocolVersion,
    client_id: &str,
    subscribe: Option<(&str, QoS)>,
) -> anyhow::Result<TcpStream> {
    let mut s = loop {
        match TcpStream::connect(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r.with_context(|| format!("connect {addr}"))?,
        }
    };
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut out = BytesMut::new();
    let connect = Connect {
        version,
        clean_start: true,
        keep_alive: KEEP_ALIVE_SECS,
        properties: Default::default(),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
    };
    Packet::Connect(Box::new(connect)).encode(version, &mut out)?;
    if let Some((filter, qos)) = subscribe {
        let sub = Subscribe {
            packet_id: PacketId::new(1).context("packet id")?,
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        };
        Packet::Subscribe(sub).encode(version, &mut out)?;
    }
    write_all_retrying(&mut s, &out)?;
    let decoder = Decoder {
        version,
        packet_bytes_max: 1 << 20,
    };
    let mut buf = BytesMut::new();
    let mut want = if subscribe.is_some() { 2 } else { 1 };
    while want > 0 {
        match decoder.decode(&mut buf)? {
            Some(Packet::ConnAck(a)) if a.code.is_success() => want -= 1,
            Some(Packet::SubAck(a)) if a.reasons.iter().all(|r| r.0 <= 2) => want -= 1,
            Some(other) => bail!("{client_id}: unexpected {other:?} during set-up"),
            None => {
                let mut chunk = [0u8; 4096];
                // A thread that has owned an io_uring may see EINTR (task work) on blocking calls.
                let n = match s.read(&mut chunk) {
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    r => r?,
                };
                if n == 0 {
                    bail!("{client_id}: broker closed the connection during set-up");
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
            }
        }
    }
    Ok(s)
}

fn write_all_retrying(s: &mut TcpStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match s.write(bytes) {
            Ok(n) => bytes = bytes.get(n..).unwrap_or(&[]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The fixed shape of the PUBLISHes a run sends.
#[derive(Debug, Clone, Copy)]
pub struct PublishShape {
    /// Protocol version (MQTT 5 adds an empty property block).
    pub version: ProtocolVersion,
    /// QoS.
    pub qos: QoS,
    /// Payload bytes (at least [`PAYLOAD_HEADER_BYTES`]).
    pub payload_bytes: usize,
}

/// Appends one PUBLISH whose payload starts with `seq` and `sent_ns`, zero-padded.
pub fn put_publish(
    out: &mut BytesMut,
    shape: PublishShape,
    topic: &[u8],
    pid: u16,
    seq: u64,
    sent_ns: u64,
) {
    let PublishShape {
        version,
        qos,
        payload_bytes,
    } = shape;
    let payload_bytes = payload_bytes.max(PAYLOAD_HEADER_BYTES);
    let mut remaining = 2 + topic.len() + payload_bytes;
    if qos != QoS::AtMostOnce {
        remaining += 2;
    }
    if version.is_v5() {
        remaining += 1;
    }
    out.reserve(5 + remaining);
    out.put_u8(0x30 | (qos as u8) << 1);
    // run_p2p caps payloads at PAYLOAD_BYTES_MAX, far below what a remaining length can express.
    let _ = net::codec::put_variable_int(out, remaining);
    out.put_u16(topic.len() as u16);
    out.put_slice(topic);
    if qos != QoS::AtMostOnce {
        out.put_u16(pid);
    }
    if version.is_v5() {
        out.put_u8(0);
    }
    out.put_u64(seq);
    out.put_u64(sent_ns);
    out.put_bytes(0, payload_bytes - PAYLOAD_HEADER_BYTES);
}

struct Run {
    cfg: P2p,
    ring: Ring,
    clients: Vec<Client>,
    accounts: Vec<PairAccount>,
    start: Instant,
    publishing: bool,
    measuring: bool,
    window_delivered: u64,
    sent: u64,
    latency: Histogram<u64>,
    ack_latency: Histogram<u64>,
    dirty: Vec<usize>,
    last_tick: Instant,
    last_ping: Instant,
}

impl Run {
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    fn mark(&mut self, i: usize) {
        if let Some(c) = self.clients.get_mut(i) {
            if !c.dirty {
                c.dirty = true;
                self.dirty.push(i);
            }
        }
    }

    fn publish_one(&mut self, i: usize) {
        let now = self.now_ns();
        let (version, qos, payload) = (self.cfg.version, self.cfg.qos, self.cfg.payload_bytes);
        let window = self.cfg.inflight.max(1);
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let pid = c.next_pid;
        c.next_pid = if usize::from(c.next_pid) >= window {
            1
        } else {
            c.next_pid + 1
        };
        if let Some(slot) = c.sent_at.get_mut(usize::from(pid)) {
            *slot = now;
        }
        let shape = PublishShape {
            version,
            qos,
            payload_bytes: payload,
        };
        put_publish(&mut c.out, shape, &c.topic, pid, c.next_seq, now);
        c.next_seq += 1;
        if qos == QoS::AtMostOnce {
            c.acked += 1;
        } else {
            c.unacked += 1;
        }
        self.sent += 1;
        self.mark(i);
    }

    /// Max-rate publishing: keep the window full (QoS 1/2), or one batch per send (QoS 0).
    fn top_up(&mut self, i: usize) {
        if !self.publishing || self.cfg.rate > 0 {
            return;
        }
        let Some(c) = self.clients.get(i) else { return };
        if c.subscriber {
            return;
        }
        let room = if self.cfg.qos == QoS::AtMostOnce {
            if c.sending || !c.out.is_empty() {
                0
            } else {
                self.cfg.inflight
            }
        } else {
            self.cfg.inflight.saturating_sub(c.unacked)
        };
        for _ in 0..room {
            self.publish_one(i);
        }
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        let dt = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        if now.duration_since(self.last_ping) >= Duration::from_secs(u64::from(KEEP_ALIVE_SECS / 2))
        {
            self.last_ping = now;
            for i in 0..self.clients.len() {
                if let Some(c) = self.clients.get_mut(i) {
                    c.out.put_slice(&[0xC0, 0x00]);
                }
                self.mark(i);
            }
        }
        if !self.publishing || self.cfg.rate == 0 {
            return;
        }
        let rate = self.cfg.rate as f64;
        let cap = (rate * 0.005).max(1.0);
        for i in 0..self.clients.len() {
            let Some(c) = self.clients.get_mut(i) else {
                continue;
            };
            if c.subscriber {
                continue;
            }
            c.tokens = (c.tokens + rate * dt).min(cap);
            while let Some(c) = self.clients.get_mut(i) {
                if c.tokens < 1.0
                    || (self.cfg.qos != QoS::AtMostOnce && c.unacked >= self.cfg.inflight)
                {
                    break;
                }
                c.tokens -= 1.0;
                self.publish_one(i);
            }
        }
    }

    fn on_recv(&mut self, i: usize, c: &Completion) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        if let Some(bid) = c.buffer_id() {
            if c.result > 0 {
                client
                    .rbuf
                    .extend_from_slice(self.ring.buffer(bid, c.result as usize));
            }
            self.ring.recycle(bid);
        }
        if !c.more() {
            client.recv_armed = false;
        }
        if c.result == 0 {
            return;
        }
        loop {
            let Some(client) = self.clients.get_mut(i) else {
                return;
            };
            let decoder = client.decoder;
            let packet = match decoder.decode(&mut client.rbuf) {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    eprintln!("ringmq-bench: connection {i}: {e}");
                    return;
                }
            };
            self.on_packet(i, packet);
        }
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        if !client.recv_armed && c.result != 0 {
            client.recv_armed = true;
            self.ring
                .recv_multi(client.fd.as_raw_fd(), token(KIND_RECV, i));
        }
    }

    fn on_packet(&mut self, i: usize, packet: Packet) {
        let now = self.now_ns();
        let version = self.cfg.version;
        let measuring = self.measuring;
        match packet {
            Packet::Publish(mut p) => {
                let Some(c) = self.clients.get_mut(i) else {
                    return;
                };
                let pair = c.pair;
                if p.payload.len() >= PAYLOAD_HEADER_BYTES {
                    let seq = p.payload.get_u64();
                    let sent = p.payload.get_u64();
                    if let Some(a) = self.accounts.get_mut(pair) {
                        a.record(seq);
                    }
                    if measuring {
                        self.window_delivered += 1;
                        let _ = self.latency.record(now.saturating_sub(sent).max(1));
                    }
                }
                let Some(c) = self.clients.get_mut(i) else {
                    return;
                };
                let reply = match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(PubResp::new(PubRespKind::PubAck, id)),
                    (QoS::ExactlyOnce, Some(id)) => Some(PubResp::new(PubRespKind::PubRec, id)),
                    _ => None,
                };
                if let Some(r) = reply {
                    let _ = Packet::PubResp(r).encode(version, &mut c.out);
                    self.mark(i);
                }
            }
            Packet::PubResp(r) => {
                let Some(c) = self.clients.get_mut(i) else {
                    return;
                };
                match r.kind {
                    PubRespKind::PubRel => {
                        let _ = Packet::PubResp(PubResp::new(PubRespKind::PubComp, r.packet_id))
                            .encode(version, &mut c.out);
                        self.mark(i);
                    }
                    PubRespKind::PubRec => {
                        let _ = Packet::PubResp(PubResp::new(PubRespKind::PubRel, r.packet_id))
                            .encode(version, &mut c.out);
                        self.mark(i);
                    }
                    PubRespKind::PubAck | PubRespKind::PubComp => {
                        c.unacked = c.unacked.saturating_sub(1);
                        c.acked += 1;
                        if measuring {
                            if let Some(sent) = c.sent_at.get(usize::from(r.packet_id.get())) {
                                let _ = self.ack_latency.record(now.saturating_sub(*sent).max(1));
                            }
                        }
                        self.top_up(i);
                    }
                }
            }
            _ => {}
        }
    }

    fn flush(&mut self) {
        let dirty = std::mem::take(&mut self.dirty);
        for &i in &dirty {
            let Some(c) = self.clients.get_mut(i) else {
                continue;
            };
            c.dirty = false;
            if !c.sending && !c.out.is_empty() {
                let fresh = c.spare.take().unwrap_or_default();
                let buf = std::mem::replace(&mut c.out, fresh);
                c.sending = true;
                self.ring.send(c.fd.as_raw_fd(), buf, token(KIND_SEND, i));
            }
        }
        self.dirty = dirty;
        self.dirty.clear();
    }

    fn on_send(&mut self, i: usize, c: Completion) {
        let Some(mut buf) = c.send_buf else { return };
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        client.sending = false;
        if c.result < 0 {
            eprintln!(
                "ringmq-bench: send on connection {i}: {}",
                std::io::Error::from_raw_os_error(-c.result)
            );
            return;
        }
        let sent = c.result as usize;
        if sent < buf.len() {
            buf.advance(sent);
            client.sending = true;
            self.ring
                .send(client.fd.as_raw_fd(), buf, token(KIND_SEND, i));
            return;
        }
        buf.clear();
        client.spare = Some(buf);
        if !client.out.is_empty() {
            self.mark(i);
        }
        self.top_up(i);
    }
}

/// Runs the P2P scenario.
pub fn run_p2p(cfg: P2p) -> anyhow::Result<Report> {
    if cfg.payload_bytes < PAYLOAD_HEADER_BYTES {
        bail!(
            "payload must be at least {PAYLOAD_HEADER_BYTES} bytes (sequence number and timestamp)"
        );
    }
    let window = cfg.inflight.clamp(1, 65_535);
    let mut clients = Vec::with_capacity(cfg.pairs * 2);
    for pair in 0..cfg.pairs {
        let topic = format!("rb/p2p/{pair}");
        let s = handshake(
            cfg.addr,
            cfg.version,
            &format!("{}-sub-{pair}", cfg.client_prefix),
            Some((&topic, cfg.qos)),
        )?;
        clients.push((s, true, pair, topic));
    }
    for pair in 0..cfg.pairs {
        let topic = format!("rb/p2p/{pair}");
        let s = handshake(
            cfg.addr,
            cfg.version,
            &format!("{}-pub-{pair}", cfg.client_prefix),
            None,
        )?;
        clients.push((s, false, pair, topic));
    }
    let ring = Ring::new(RingConfig {
        sq_entries: 4096,
        cq_entries: 32_768,
        recv_buffer_count: 4096,
        recv_buffer_bytes: 16 * 1024,
    })?;
    let clients = clients
        .into_iter()
        .map(|(stream, subscriber, pair, topic)| Client {
            fd: OwnedFd::from(stream),
            subscriber,
            pair,
            decoder: Decoder {
                version: cfg.version,
                packet_bytes_max: 1 << 24,
            },
            rbuf: BytesMut::new(),
            out: BytesMut::new(),
            spare: None,
            sending: false,
            dirty: false,
            recv_armed: false,
            topic: topic.into_bytes(),
            next_seq: 0,
            unacked: 0,
            acked: 0,
            next_pid: 1,
            sent_at: if subscriber {
                Vec::new()
            } else {
                vec![0; window + 1]
            },
            tokens: 0.0,
        })
        .collect();
    let mut run = Run {
        cfg: P2p {
            inflight: window,
            ..cfg.clone()
        },
        ring,
        clients,
        accounts: vec![PairAccount::default(); cfg.pairs],
        start: Instant::now(),
        publishing: true,
        measuring: false,
        window_delivered: 0,
        sent: 0,
        latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        ack_latency: Histogram::new_with_bounds(1, 60_000_000_000, 3)?,
        dirty: Vec::new(),
        last_tick: Instant::now(),
        last_ping: Instant::now(),
    };
    for i in 0..run.clients.len() {
        if let Some(c) = run.clients.get_mut(i) {
            c.recv_armed = true;
            let fd = c.fd.as_raw_fd();
            run.ring.recv_multi(fd, token(KIND_RECV, i));
        }
        run.top_up(i);
    }
    let tick = if cfg.rate > 0 {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(10)
    };
    run.ring.timer(tick, token(KIND_TIMER, 0));

    let warm_end = run.start + cfg.warmup;
    let measure_end = warm_end + cfg.duration;
    let hard_end = measure_end + cfg.drain;
    let mut broker_before = None;
    let mut self_before = None;
    let mut broker_after = None;
    let mut self_after = None;
    let mut window_started = None;
    let mut window_seconds = 0.0;
    loop {
        run.ring.submit_and_wait(1)?;
        let mut completions = run.ring.completions();
        for c in completions.drain(..) {
            let i = (c.token & 0x00FF_FFFF_FFFF_FFFF) as usize;
            match c.token >> 56 {
                KIND_RECV => run.on_recv(i, &c),
                KIND_SEND => run.on_send(i, c),
                KIND_TIMER => run.on_tick(),
                _ => {}
            }
        }
        run.ring.return_completions(completions);
        run.flush();
        let now = Instant::now();
        if !run.measuring && window_started.is_none() && now >= warm_end {
            run.measuring = true;
            window_started = Some(now);
            broker_before = cfg.broker_pid.and_then(procstat::sample);
            self_before = procstat::sample(std::process::id());
            run.latency.reset();
            run.ack_latency.reset();
        }
        if run.measuring && now >= measure_end {
            run.measuring = false;
            run.publishing = false;
            window_seconds = window_started.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            broker_after = cfg.broker_pid.and_then(procstat::sample);
            self_after = procstat::sample(std::process::id());
        }
        if !run.publishing {
            let acked: u64 = run
                .clients
                .iter()
                .filter(|c| !c.subscriber)
                .map(|c| c.acked)
                .sum();
            let unacked: usize = run.clients.iter().map(|c| c.unacked).sum();
            let delivered: u64 = run.accounts.iter().map(|a| a.received - a.duplicates).sum();
            if (unacked == 0 && delivered >= acked) || now >= hard_end {
                break;
            }
        }
    }
    let acknowledged: u64 = run
        .clients
        .iter()
        .filter(|c| !c.subscriber)
        .map(|c| c.acked)
        .sum();
    let mut lost = 0;
    for c in run.clients.iter().filter(|c| !c.subscriber) {
        if let Some(a) = run.accounts.get(c.pair) {
            lost += a.missing_below(c.acked);
        }
    }
    let delivered: u64 = run.accounts.iter().map(|a| a.received - a.duplicates).sum();
    let broker_cpu = match (broker_before, broker_after) {
        (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
        _ => None,
    };
    let loadgen_cpu = match (self_before, self_after) {
        (Some(b), Some(a)) => a.cpu_seconds - b.cpu_seconds,
        _ => 0.0,
    };
    Ok(Report {
        scenario: "p2p".into(),
        pairs: cfg.pairs,
        qos: cfg.qos as u8,
        payload_bytes: cfg.payload_bytes,
        mqtt_version: cfg.version.level(),
        rate_per_publisher: cfg.rate,
        window_seconds,
        delivered_per_second: if window_seconds > 0.0 {
            run.window_delivered as f64 / window_seconds
        } else {
            0.0
        },
        sent: run.sent,
        acknowledged,
        delivered,
        lost,
        duplicated: run.accounts.iter().map(|a| a.duplicates).sum(),
        out_of_order: run.accounts.iter().map(|a| a.out_of_order).sum(),
        latency: Percentiles::from_histogram(&run.latency),
        ack_latency: Percentiles::from_histogram(&run.ack_latency),
        broker_cpu_seconds: broker_cpu,
        broker_cpu_us_per_message: broker_cpu
            .filter(|_| run.window_delivered > 0)
            .map(|cpu| cpu * 1e6 / run.window_delivered as f64),
        broker_peak_rss_bytes: broker_after.map(|s| s.peak_rss_bytes),
        loadgen_cpu_seconds: loadgen_cpu,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_encoding_decodes() {
        for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
            for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
                let mut out = BytesMut::new();
                put_publish(
                    &mut out,
                    PublishShape {
                        version,
                        qos,
                        payload_bytes: 200,
                    },
                    b"a/b",
                    7,
                    42,
                    99,
                );
                let d = Decoder {
                    version,
                    packet_bytes_max: 1 << 20,
                };
                let Some(Packet::Publish(mut p)) = d.decode(&mut out).unwrap() else {
                    panic!()
                };
                assert!(out.is_empty());
                assert_eq!((&*p.topic, p.qos, p.payload.len()), ("a/b", qos, 200));
                assert_eq!(
                    p.packet_id.map(|id| id.get()),
                    (qos != QoS::AtMostOnce).then_some(7)
                );
                assert_eq!((p.payload.get_u64(), p.payload.get_u64()), (42, 99));
            }
        }
    }
}
