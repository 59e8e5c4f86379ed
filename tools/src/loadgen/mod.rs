//! The load generator's engine: one thread, one io_uring, many MQTT connections.
//!
//! Connections are set up with plain blocking sockets (CONNECT, SUBSCRIBE; not measured),
//! then handed to the ring: every connection gets a multishot receive into provided buffers
//! and at most one send in flight carrying everything queued for it, so a loop pass costs one
//! `io_uring_enter` however many connections are busy. Payloads carry the publisher, its
//! sequence number and the send time, so the subscriber side measures end-to-end latency and
//! exact loss per (subscriber group, publisher) pair.
//!
//! # Layout
//! - `wire.rs`: set-up handshake, the PUBLISH writer, payload stamps.
//! - `topology.rs`: scenarios as publishers, subscribers and expected pairs.
//! - `conn.rs`: the connection-rate scenario.
//! - `layers.rs`: TLS and WebSocket on the client side.
//! - `offline.rs`: persistent subscribers going offline and coming back.

pub mod conn;
pub mod kafka;
pub mod layers;
mod offline;
pub mod retained;
pub mod topology;
pub mod wire;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::bail;
use bytes::{Buf, BufMut, BytesMut};
use hdrhistogram::Histogram;
use net::codec::{Decoder, Packet, ProtocolVersion, PubResp, PubRespKind, QoS};
use net::uring::{Completion, Ring, RingConfig};
use rustc_hash::FxHashMap;

use crate::accounting::PairAccount;
use crate::procstat;
use crate::report::{Percentiles, Report};
use topology::Topology;
use wire::{
    handshake_all, put_publish, PublishShape, Stamp, KEEP_ALIVE_SECS, PAYLOAD_BYTES_MAX,
    PAYLOAD_HEADER_BYTES,
};

/// How hard and how long to drive a topology.
#[derive(Debug, Clone)]
pub struct Load {
    /// Broker address.
    pub addr: SocketAddr,
    /// Where the publishers connect, if not `addr` (another node of a cluster).
    pub pub_addr: Option<SocketAddr>,
    /// The nodes of a cluster the clients spread over (empty: `addr` and `pub_addr`):
    /// publisher i connects to node i mod n and subscriber i to node i + 1 mod n, so in P2P
    /// every message crosses from one node to another.
    pub nodes: Vec<SocketAddr>,
    /// Other processes whose CPU per delivered message is reported (the other cluster
    /// nodes, Kafka).
    pub other_pids: Vec<u32>,
    /// QoS of publishes and subscriptions.
    pub qos: QoS,
    /// Payload bytes (16 to 16 MiB).
    pub payload_bytes: usize,
    /// Payloads are a 10-field JSON object (see `wire::JSON_FIELDS`), for validating brokers.
    pub json: bool,
    /// Messages per second per publisher; 0 for as fast as the window allows.
    pub rate: f64,
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
    /// Subscribers use persistent sessions (clean session 0 / session expiry 1 h).
    pub persistent: bool,
    /// With `persistent`: subscribers disconnect at the start of the measurement window and
    /// come back after this long; the broker must queue for them.
    pub offline: Option<Duration>,
    /// The publishers are Kafka keys (`kafka-in`): a producer thread writes the stamped
    /// records to Kafka instead of MQTT clients publishing.
    pub kafka_in: Option<kafka::KafkaIn>,
    /// The subscriber is a Kafka consumer (`kafka-out`): the broker produces the run's
    /// publishes to Kafka and a consumer thread accounts for them.
    pub kafka_out: Option<kafka::KafkaOut>,
    /// TLS / WebSocket between the clients and the broker.
    pub layers: layers::Layers,
}

const KIND_RECV: u64 = 1;
const KIND_SEND: u64 = 2;
const KIND_TIMER: u64 = 3;

fn token(kind: u64, index: usize) -> u64 {
    kind << 56 | index as u64
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Publisher(u32),
    Subscriber { index: u32, group: u32 },
}

struct Client {
    fd: Option<OwnedFd>,
    role: Role,
    decoder: Decoder,
    rbuf: BytesMut,
    out: BytesMut,
    spare: Option<BytesMut>,
    sending: bool,
    dirty: bool,
    recv_armed: bool,
    topic: Vec<u8>,
    next_seq: u32,
    unacked: usize,
    acked: u64,
    next_pid: u16,
    sent_at: Vec<u64>,
    tokens: f64,
    link: Option<Box<layers::ClientLink>>,
}

struct Run<'t> {
    load: Load,
    topology: &'t Topology,
    ring: Ring,
    clients: Vec<Client>,
    accounts: FxHashMap<u64, PairAccount>,
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
    /// The Kafka producer standing for the publishers (`Load::kafka_in`).
    producing: Option<kafka::Producing>,
    /// The Kafka consumer standing for the subscribers (`Load::kafka_out`).
    consuming: Option<kafka::Consuming>,
}

fn account_key(group: u32, publisher: u32) -> u64 {
    u64::from(group) << 32 | u64::from(publisher)
}

impl Run<'_> {
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
        let shape = PublishShape {
            version: self.load.version,
            qos: self.load.qos,
            payload_bytes: self.load.payload_bytes,
            json: self.load.json,
        };
        let window = self.load.inflight.max(1);
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        let Role::Publisher(publisher) = c.role else {
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
        put_publish(
            &mut c.out,
            shape,
            &c.topic,
            pid,
            Stamp {
                publisher,
                seq: c.next_seq,
                sent_ns: now,
            },
        );
        c.next_seq = c.next_seq.wrapping_add(1);
        if shape.qos == QoS::AtMostOnce {
            c.acked += 1;
        } else {
            c.unacked += 1;
        }
        self.sent += 1;
        self.mark(i);
    }

    /// Max-rate publishing: keep the window full (QoS 1/2), or one batch per send (QoS 0).
    fn top_up(&mut self, i: usize) {
        if !self.publishing || self.load.rate > 0.0 {
            return;
        }
        let Some(c) = self.clients.get(i) else { return };
        if !matches!(c.role, Role::Publisher(_)) || c.fd.is_none() {
            return;
        }
        let room = if self.load.qos == QoS::AtMostOnce {
            if c.sending || !c.out.is_empty() {
                0
            } else {
                self.load.inflight
            }
        } else {
            self.load.inflight.saturating_sub(c.unacked)
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
                if let Some(c) = self.clients.get_mut(i).filter(|c| c.fd.is_some()) {
                    c.out.put_slice(&[0xC0, 0x00]);
                    self.mark(i);
                }
            }
        }
        if !self.publishing || self.load.rate <= 0.0 {
            return;
        }
        let rate = self.load.rate;
        let cap = (rate * 0.005).max(1.0);
        let window = self.load.inflight;
        let qos0 = self.load.qos == QoS::AtMostOnce;
        for i in 0..self.clients.len() {
            let Some(c) = self.clients.get_mut(i) else {
                continue;
            };
            if !matches!(c.role, Role::Publisher(_)) {
                continue;
            }
            c.tokens = (c.tokens + rate * dt).min(cap);
            while let Some(c) = self.clients.get_mut(i) {
                if c.tokens < 1.0 || (!qos0 && c.unacked >= window) {
                    break;
                }
                c.tokens -= 1.0;
                self.publish_one(i);
            }
        }
    }

    fn arm_recv(&mut self, i: usize) {
        if let Some(c) = self.clients.get_mut(i) {
            if let (false, Some(fd)) = (c.recv_armed, c.fd.as_ref()) {
                c.recv_armed = true;
                self.ring.recv_multi(fd.as_raw_fd(), token(KIND_RECV, i));
            }
        }
    }

    fn on_recv(&mut self, i: usize, c: &Completion) {
        let Some(client) = self.clients.get_mut(i) else {
            return;
        };
        let (rbuf, link) = (&mut client.rbuf, &mut client.link);
        self.ring.received(c, |bytes| match link {
            None => rbuf.extend_from_slice(bytes),
            Some(l) => {
                if let Err(e) = l.input(bytes, rbuf) {
                    eprintln!("ringmq-bench: connection {i}: {e}");
                }
            }
        });
        if !c.more() {
            client.recv_armed = false;
        }
        if c.result <= 0 && c.result != -libc::ENOBUFS {
            // Closed (by us, going offline, or by the broker): no re-arm.
            return;
        }
        self.process_input(i);
        self.arm_recv(i);
    }

    /// Decodes and handles every whole packet in client `i`'s read buffer.
    fn process_input(&mut self, i: usize) {
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
    }

    fn on_packet(&mut self, i: usize, packet: Packet) {
        let now = self.now_ns();
        let version = self.load.version;
        let measuring = self.measuring;
        let Some(c) = self.clients.get_mut(i) else {
            return;
        };
        match (packet, c.role) {
            (Packet::Publish(p), Role::Subscriber { group, .. }) => {
                if let Some(stamp) = Stamp::read(&p.payload) {
                    self.accounts
                        .entry(account_key(group, stamp.publisher))
                        .or_default()
                        .record(u64::from(stamp.seq));
                    if let Some(producing) = &self.producing {
                        producing.delivered_one();
                    }
                    if measuring {
                        self.window_delivered += 1;
                        let _ = self
                            .latency
                            .record(now.saturating_sub(stamp.sent_ns).max(1));
                    }
                }
                let reply = match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => Some(PubResp::new(PubRespKind::PubAck, id)),
                    (QoS::ExactlyOnce, Some(id)) => Some(PubResp::new(PubRespKind::PubRec, id)),
                    _ => None,
                };
                if let (Some(r), Some(c)) = (reply, self.clients.get_mut(i)) {
                    let _ = Packet::PubResp(r).encode(version, &mut c.out);
                    self.mark(i);
                }
            }
            (Packet::PubResp(r), _) => match r.kind {
                PubRespKind::PubRel | PubRespKind::PubRec => {
                    let kind = if r.kind == PubRespKind::PubRel {
                        PubRespKind::PubComp
                    } else {
                        PubRespKind::PubRel
                    };
                    let _ = Packet::PubResp(PubResp::new(kind, r.packet_id))
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
            },
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
            let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
                c.out.clear();
                continue;
            };
            if !c.sending && !c.out.is_empty() {
                let fresh = c.spare.take().unwrap_or_default();
                let mut buf = std::mem::replace(&mut c.out, fresh);
                if let Some(link) = c.link.as_mut() {
                    let mut wire = BytesMut::with_capacity(buf.len() + 64);
                    if let Err(e) = link.wrap(&buf, &mut wire) {
                        // Not a silent truncation: the run reports the connection.
                        eprintln!("ringmq-bench: connection {i}: TLS write: {e}");
                    }
                    buf.clear();
                    c.out = buf;
                    buf = wire;
                }
                c.sending = true;
                self.ring.send(fd, buf, token(KIND_SEND, i));
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
        let Some(fd) = client.fd.as_ref().map(|f| f.as_raw_fd()) else {
            return;
        };
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
            self.ring.send(fd, buf, token(KIND_SEND, i));
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

/// Drives `topology` with `load`; returns what was measured.
pub fn run(topology: &Topology, load: &Load) -> anyhow::Result<Report> {
    if load.payload_bytes < PAYLOAD_HEADER_BYTES || load.payload_bytes > PAYLOAD_BYTES_MAX {
        bail!("payload must be between {PAYLOAD_HEADER_BYTES} bytes (publisher, sequence, timestamp) and {PAYLOAD_BYTES_MAX}");
    }
    if load.json && load.payload_bytes < wire::JSON_FIXED_BYTES {
        bail!(
            "a JSON payload is at least {} bytes",
            wire::JSON_FIXED_BYTES
        );
    }
    if load.offline.is_some() && !load.persistent {
        bail!("--offline needs --persistent");
    }
    let window = load.inflight.clamp(1, 65_535);
    let mut clients = Vec::with_capacity(topology.publishers.len() + topology.subscribers.len());
    let decoder = Decoder {
        version: load.version,
        packet_bytes_max: 1 << 25,
    };
    let blank = |fd: OwnedFd, role: Role, topic: Vec<u8>, link| Client {
        fd: Some(fd),
        role,
        decoder,
        rbuf: BytesMut::new(),
        out: BytesMut::new(),
        spare: None,
        sending: false,
        dirty: false,
        recv_armed: false,
        topic,
        next_seq: 0,
        unacked: 0,
        acked: 0,
        next_pid: 1,
        sent_at: if matches!(role, Role::Publisher(_)) {
            vec![0; window + 1]
        } else {
            Vec::new()
        },
        tokens: 0.0,
        link,
    };
    // Subscribers first (all subscribed before anyone publishes), then publishers.
    let subscribers = topology.subscribers.iter().enumerate();
    for ((index, s), (stream, _, _, link)) in
        subscribers.zip(handshake_all(&load.subscriber_hellos(topology))?)
    {
        let (index, group) = (index as u32, s.group);
        clients.push(blank(
            stream.into(),
            Role::Subscriber { index, group },
            Vec::new(),
            link,
        ));
    }
    let mqtt_publishers = if load.kafka_in.is_some() {
        &[][..]
    } else {
        &topology.publishers[..]
    };
    for ((index, p), (stream, _, _, link)) in (mqtt_publishers.iter().enumerate())
        .zip(handshake_all(&load.publisher_hellos(mqtt_publishers))?)
    {
        let (role, topic) = (Role::Publisher(index as u32), p.topic.clone().into_bytes());
        clients.push(blank(stream.into(), role, topic, link));
    }
    let entries = (clients.len() as u32 * 4)
        .next_power_of_two()
        .clamp(4096, 1 << 20);
    let ring = Ring::new(RingConfig {
        sq_entries: 4096,
        cq_entries: entries,
        recv_buffer_count: 4096,
        recv_buffer_bytes: 16 * 1024,
    })?;
    let mut run = Run {
        load: Load {
            inflight: window,
            ..load.clone()
        },
        topology,
        ring,
        clients,
        accounts: FxHashMap::default(),
        start: Instant::now(),
        publishing: true,
        measuring: false,
        window_delivered: 0,
        sent: 0,
        latency: Histogram::new_with_bounds(1, 600_000_000_000, 3)?,
        ack_latency: Histogram::new_with_bounds(1, 600_000_000_000, 3)?,
        dirty: Vec::new(),
        last_tick: Instant::now(),
        last_ping: Instant::now(),
        producing: None,
        consuming: None,
    };
    if let Some(source) = &load.kafka_out {
        run.consuming = Some(kafka::consume(source, run.start)?);
    }
    if let Some(target) = &load.kafka_in {
        run.producing = Some(kafka::start(
            target,
            topology.publishers.len(),
            load.rate,
            load.payload_bytes,
            run.start,
            topology.subscribers.len() as u64,
        )?);
    }
    for i in 0..run.clients.len() {
        run.arm_recv(i);
        run.top_up(i);
    }
    let tick = if load.rate > 0.0 {
        Duration::from_millis(1)
    } else {
        Duration::from_millis(10)
    };
    run.ring.timer(tick, token(KIND_TIMER, 0));

    let warm_end = run.start + load.warmup;
    let measure_end = warm_end + load.duration;
    let back_online = load.offline.map(|d| warm_end + d);
    let hard_end = measure_end.max(back_online.unwrap_or(measure_end)) + load.drain;
    let (mut broker_before, mut self_before, mut broker_after, mut self_after) =
        (None, None, None, None);
    let (mut others_before, mut others_after): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    let mut rss = load
        .broker_pid
        .map(|pid| procstat::RssTrace::new(pid, run.start));
    let mut window_started = None;
    let mut window_seconds = 0.0;
    let mut offline = false;
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
        if let Some(t) = &mut rss {
            t.tick(now);
        }
        if window_started.is_none() && now >= warm_end {
            run.measuring = true;
            window_started = Some(now);
            broker_before = load.broker_pid.and_then(procstat::sample);
            others_before = load
                .other_pids
                .iter()
                .map(|p| procstat::sample(*p))
                .collect();
            self_before = procstat::sample(std::process::id());
            run.latency.reset();
            run.ack_latency.reset();
            if let Some(c) = &run.consuming {
                c.measuring
                    .store(true, std::sync::atomic::Ordering::Release);
            }
            if load.offline.is_some() {
                run.subscribers_offline();
                offline = true;
            }
        }
        if offline && back_online.is_some_and(|t| now >= t) {
            offline = false;
            run.subscribers_online()?;
        }
        if run.measuring && now >= measure_end {
            run.measuring = false;
            run.publishing = false;
            if let Some(p) = &run.producing {
                p.stop();
            }
            if let Some(c) = &run.consuming {
                c.measuring
                    .store(false, std::sync::atomic::Ordering::Release);
            }
            window_seconds = window_started.map_or(0.0, |s| now.duration_since(s).as_secs_f64());
            broker_after = load.broker_pid.and_then(procstat::sample);
            others_after = load
                .other_pids
                .iter()
                .map(|p| procstat::sample(*p))
                .collect();
            self_after = procstat::sample(std::process::id());
        }
        if !run.publishing && !offline {
            let unacked: usize = run.clients.iter().map(|c| c.unacked).sum();
            let flushed = run.producing.as_ref().is_none_or(|p| p.finished());
            let delivered = match &run.consuming {
                Some(c) => {
                    c.distinct.load(std::sync::atomic::Ordering::Acquire)
                        >= acked_per_publisher(&run).iter().sum::<u64>()
                }
                None => all_delivered(&run),
            };
            if (unacked == 0 && flushed && delivered) || now >= hard_end {
                break;
            }
        }
    }
    if let Some(c) = run.consuming.take() {
        let consumed = c.finish()?;
        run.accounts = consumed.accounts;
        run.latency = consumed.latency;
        run.window_delivered = consumed.window;
    }
    let acknowledged: u64 = acked_per_publisher(&run).iter().sum();
    if let Some(p) = &run.producing {
        run.sent = p.sent.load(std::sync::atomic::Ordering::Relaxed);
    }
    let lost = missing(&run);
    if let (true, Some(source)) = (lost > 0, &load.kafka_out) {
        let why = kafka::explain_losses(source, &acked_per_publisher(&run), &run.accounts);
        eprintln!("ringmq-bench: {lost} acknowledged records not consumed: {why}");
    }
    let delivered: u64 = run
        .accounts
        .values()
        .map(|a| a.received - a.duplicates)
        .sum();
    let broker_cpu = match (broker_before, broker_after) {
        (Some(b), Some(a)) => Some(a.cpu_seconds - b.cpu_seconds),
        _ => None,
    };
    let others_cpu_us_per_message = load
        .other_pids
        .iter()
        .zip(others_before.iter().zip(&others_after))
        .filter_map(|(pid, (b, a))| {
            let cpu = a.as_ref()?.cpu_seconds - b.as_ref()?.cpu_seconds;
            (run.window_delivered > 0).then(|| (*pid, cpu * 1e6 / run.window_delivered as f64))
        })
        .collect();
    let loadgen_cpu = match (self_before, self_after) {
        (Some(b), Some(a)) => a.cpu_seconds - b.cpu_seconds,
        _ => 0.0,
    };
    Ok(Report {
        scenario: topology.name.clone(),
        publishers: topology.publishers.len(),
        subscribers: topology.subscribers.len(),
        qos: load.qos as u8,
        payload_bytes: load.payload_bytes,
        mqtt_version: load.version.level(),
        rate_per_publisher: load.rate,
        persistent: load.persistent,
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
        duplicated: run.accounts.values().map(|a| a.duplicates).sum(),
        out_of_order: run.accounts.values().map(|a| a.out_of_order).sum(),
        latency: Percentiles::from_histogram(&run.latency),
        ack_latency: Percentiles::from_histogram(&run.ack_latency),
        broker_cpu_seconds: broker_cpu,
        others_cpu_us_per_message,
        broker_cpu_us_per_message: broker_cpu
            .filter(|_| run.window_delivered > 0)
            .map(|cpu| cpu * 1e6 / run.window_delivered as f64),
        broker_peak_rss_bytes: broker_after.map(|s| s.peak_rss_bytes),
        broker_rss_mib: rss.map(procstat::RssTrace::into_points).unwrap_or_default(),
        loadgen_cpu_seconds: loadgen_cpu,
    })
}

fn acked_per_publisher(run: &Run<'_>) -> Vec<u64> {
    if let Some(p) = &run.producing {
        return p
            .acked
            .iter()
            .map(|a| a.load(std::sync::atomic::Ordering::Relaxed))
            .collect();
    }
    let mut acked = vec![0; run.topology.publishers.len()];
    for c in &run.clients {
        if let Role::Publisher(p) = c.role {
            if let Some(slot) = acked.get_mut(p as usize) {
                *slot = c.acked;
            }
        }
    }
    acked
}

/// Cheap end-of-run check: every expected pair has as many distinct messages as were acked.
fn all_delivered(run: &Run<'_>) -> bool {
    let acked = acked_per_publisher(run);
    run.topology.expected.iter().all(|&(group, publisher)| {
        let want = acked.get(publisher as usize).copied().unwrap_or(0);
        run.accounts
            .get(&account_key(group, publisher))
            .map_or(want == 0, |a| a.distinct() >= want)
    })
}

/// Acknowledged messages never delivered, over every expected (group, publisher) pair.
fn missing(run: &Run<'_>) -> u64 {
    let acked = acked_per_publisher(run);
    run.topology
        .expected
        .iter()
        .map(|&(group, publisher)| {
            let acked = acked.get(publisher as usize).copied().unwrap_or(0);
            match run.accounts.get(&account_key(group, publisher)) {
                Some(a) => a.missing_below(acked),
                None => acked,
            }
        })
        .sum()
}
