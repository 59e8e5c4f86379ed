//! Test harness: the real `ringmq` binary on a free loopback port with 2 shards, a raw MQTT
//! client built on the project's codec (for exact bytes and bad input), and helpers to pick
//! client ids homed on a given shard.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::ids::{home_shard, ShardId};
use bytes::BytesMut;
use net::codec::{
    ConnAck, Connect, Decoder, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, Publish,
    QoS, Subscribe, SubscriptionOptions,
};

pub const SHARDS: usize = 2;

/// A broker process, stopped with SIGTERM on drop.
pub struct Broker {
    pub child: Child,
    pub addr: SocketAddr,
}

/// A loopback port free at the time of asking.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether something listens on `addr`. A connection that reached itself does not count:
/// `free_port` hands out ports of the ephemeral range, and a connect to such a port with
/// nothing listening can be given that very port as its source and meet itself (TCP
/// simultaneous open), which would pass for a listener that is not there yet.
pub fn accepts(addr: impl std::net::ToSocketAddrs) -> bool {
    TcpStream::connect(addr).is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
}

/// Every listening TCP socket on `port` is process `pid`'s (/proc/net/tcp's LISTEN rows and
/// the process's socket descriptors), and there is one: the listener that answered is this
/// process's, not another test's server that took the same free port in between.
pub fn listens_on(pid: u32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = u16::from_str_radix(f.get(1)?.rsplit(':').next()?, 16).ok()?;
            let inode = f.get(9)?;
            (local_port == port && *f.get(3)? == "0A").then(|| format!("socket:[{inode}]"))
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    let own: Vec<std::path::PathBuf> = fds
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .collect();
    !inodes.is_empty()
        && inodes
            .iter()
            .all(|i| own.iter().any(|target| target.as_os_str() == i.as_str()))
}

/// Runs the binary with `--listen 127.0.0.1:0` and `args` until it exits (it must refuse to
/// start); its stderr.
pub fn refused_start(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ringmq"))
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "the broker started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The body (with the headers) of an HTTP GET of `path` at `addr`.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text
}

/// The sum of the Prometheus samples at `addr` (a `--metrics-listen` address) whose line
/// starts with `series` (a name and `{`, or a name with its labels).
pub fn metric(addr: &str, series: &str) -> u64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.starts_with(series))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

impl Broker {
    pub fn start(extra: &[&str]) -> Self {
        Self::start_with(None, extra)
    }

    /// Starts the broker with its open-file limit set to `nofile` (through prlimit).
    pub fn start_limited(nofile: u32, extra: &[&str]) -> Self {
        Self::start_with(Some(nofile), extra)
    }

    /// Starts the broker on a given data directory (kept after the broker stops).
    pub fn start_in(dir: &std::path::Path, extra: &[&str]) -> Self {
        let mut args = vec!["--data-dir", dir.to_str().unwrap()];
        args.extend_from_slice(extra);
        Self::start_with(None, &args)
    }

    fn start_with(nofile: Option<u32>, extra: &[&str]) -> Self {
        // A free port can be taken by another test between the probe and the broker's bind
        // (the broker then exits): try again on another.
        for _ in 0..5 {
            if let Some(broker) = Self::try_start(nofile, extra) {
                return broker;
            }
        }
        panic!("ringmq did not start on any of 5 free ports");
    }

    fn try_start(nofile: Option<u32>, extra: &[&str]) -> Option<Self> {
        let port = free_port();
        // Every broker gets its own data directory unless the test names one.
        let own_dir;
        let mut extra = extra.to_vec();
        if !extra.contains(&"--data-dir") {
            own_dir = scratch_dir("data");
            extra.extend(["--data-dir", own_dir.to_str().unwrap()]);
        }
        let extra = &extra[..];
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut command = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}:{n}"))
                    .arg(env!("CARGO_BIN_EXE_ringmq"));
                c
            }
            None => Command::new(env!("CARGO_BIN_EXE_ringmq")),
        };
        // `--shards` in `extra` replaces the default count.
        if !extra.contains(&"--shards") {
            command.args(["--shards", &SHARDS.to_string()]);
        }
        // RINGMQ_TEST_LOG raises the brokers' log level when chasing a failure.
        let log = std::env::var("RINGMQ_TEST_LOG").unwrap_or_else(|_| "warn".to_string());
        let mut child = command
            .args(["--listen", &addr.to_string(), "--log", &log])
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("start ringmq");
        // Generous: a start that creates Kafka topics waits for the Kafka-protocol server,
        // which is slow to answer while the whole suite runs (seen once over 10 s).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if child.try_wait().unwrap().is_some() {
                return None;
            }
            // The listener answering must be this broker's (another test's server may have
            // taken the port between the probe and the broker's bind: the broker then exits).
            if accepts(addr) && listens_on(child.id(), port) {
                return Some(Self { child, addr });
            }
            assert!(Instant::now() < deadline, "broker did not start listening");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Resident memory of the broker process, from /proc.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        let kb: u64 = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap();
        kb * 1024
    }

    /// CPU seconds (user + system) the broker has used, from /proc.
    pub fn cpu_seconds(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let after_comm = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after_comm.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of stat, 12 and 13 after the command name.
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        ticks as f64 / 100.0
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(&mut self) -> Option<i32> {
        unsafe_kill(self.child.id(), "TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

impl Drop for Broker {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// A fresh directory under the system temp directory.
pub fn scratch_dir(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "ringmq-test-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// The shard (of [`SHARDS`]) that owns a retained topic (the same hash homes client ids).
#[allow(dead_code)]
pub fn home_shard_of(topic: &str) -> u16 {
    home_shard(topic.as_bytes(), SHARDS).0
}

/// A client id with `prefix` whose session is homed on `shard`.
pub fn id_on(prefix: &str, shard: u16) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}"))
        .find(|id| home_shard(id.as_bytes(), SHARDS) == ShardId(shard))
        .unwrap()
}

/// A raw MQTT client: exact packets in, decoded packets out.
pub struct Raw {
    pub stream: TcpStream,
    pub decoder: Decoder,
    buf: BytesMut,
}

impl Raw {
    pub fn connect_tcp(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        Self {
            stream,
            decoder: Decoder::new(1 << 24),
            buf: BytesMut::new(),
        }
    }

    /// TCP connect, CONNECT, expect a successful CONNACK.
    pub fn connect(
        addr: SocketAddr,
        version: ProtocolVersion,
        client_id: &str,
        clean: bool,
    ) -> (Self, ConnAck) {
        let mut raw = Self::connect_tcp(addr);
        raw.decoder.version = version;
        let connect = Connect {
            version,
            clean_start: clean,
            keep_alive: 60,
            properties: if version.is_v5() && !clean {
                let p = net::codec::Properties {
                    session_expiry_interval: Some(3600),
                    ..Default::default()
                };
                p.into()
            } else {
                Default::default()
            },
            client_id: client_id.into(),
            will: None,
            username: None,
            password: None,
            bridge: false,
        };
        raw.send(&Packet::Connect(Box::new(connect)));
        match raw.recv() {
            Some(Packet::ConnAck(ack)) => {
                assert!(ack.code.is_success(), "CONNACK {:?}", ack.code);
                (raw, ack)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    pub fn send(&mut self, packet: &Packet) {
        let mut out = BytesMut::new();
        packet.encode(self.decoder.version, &mut out).unwrap();
        self.stream.write_all(&out).unwrap();
    }

    pub fn send_bytes(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }

    /// The next packet; `None` when the broker closed the connection.
    pub fn recv(&mut self) -> Option<Packet> {
        loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).unwrap() {
                return Some(p);
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("read: {e}"),
            }
        }
    }

    /// The next PUBLISH, answering PINGs and skipping acks.
    pub fn recv_publish(&mut self) -> Publish {
        loop {
            match self.recv() {
                Some(Packet::Publish(p)) => return p,
                Some(_) => continue,
                None => panic!("connection closed while waiting for a PUBLISH"),
            }
        }
    }

    /// Reads until the broker closes the connection; returns the packets seen on the way.
    pub fn until_closed(&mut self) -> Vec<Packet> {
        let mut seen = Vec::new();
        while let Some(p) = self.recv() {
            seen.push(p);
        }
        seen
    }

    pub fn subscribe(&mut self, filter: &str, qos: QoS) {
        let s = Subscribe {
            packet_id: PacketId::new(1).unwrap(),
            properties: Default::default(),
            filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
        };
        self.send(&Packet::Subscribe(s));
        match self.recv() {
            Some(Packet::SubAck(a)) => assert_eq!(a.reasons[0].0, qos as u8),
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    pub fn publish(&mut self, topic: &str, payload: &[u8], qos: QoS, id: u16) {
        let p = Publish {
            dup: false,
            qos,
            retain: false,
            topic: topic.into(),
            packet_id: (qos != QoS::AtMostOnce).then(|| PacketId::new(id).unwrap()),
            properties: Default::default(),
            payload: bytes::Bytes::copy_from_slice(payload),
        };
        self.send(&Packet::Publish(p));
    }

    pub fn ack(&mut self, kind: PubRespKind, id: PacketId) {
        self.send(&Packet::PubResp(PubResp::new(kind, id)));
    }

    /// Waits for the PUBACK of `id`: its reason code; None if the connection closed or
    /// `wait` passed.
    pub fn puback_within(&mut self, id: u16, wait: Duration) -> Option<u8> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            match self.recv_within(deadline - Instant::now()) {
                Some(Packet::PubResp(r))
                    if r.kind == PubRespKind::PubAck && r.packet_id.get() == id =>
                {
                    return Some(r.reason.0)
                }
                Some(_) => {}
                None => return None,
            }
        }
        None
    }

    /// Publishes QoS 1 and waits for its PUBACK.
    pub fn publish_acked(&mut self, topic: &str, payload: &[u8], id: u16) {
        self.publish(topic, payload, QoS::AtLeastOnce, id);
        loop {
            match self.recv() {
                Some(Packet::PubResp(r))
                    if r.kind == PubRespKind::PubAck && r.packet_id.get() == id =>
                {
                    return
                }
                Some(_) => continue,
                None => panic!("closed while waiting for PUBACK"),
            }
        }
    }
}

/// Gives the broker time to spread a subscription to its peer shards.
pub fn settle() {
    std::thread::sleep(Duration::from_millis(100));
}

/// A CONNECT with everything defaulted but the version and client id.
pub fn connect_packet(version: ProtocolVersion, client_id: &str) -> Connect {
    Connect {
        version,
        clean_start: true,
        keep_alive: 60,
        properties: Default::default(),
        client_id: client_id.into(),
        will: None,
        username: None,
        password: None,
        bridge: false,
    }
}

impl Raw {
    /// TCP connect and send `connect`; returns the client and the broker's answer (a
    /// CONNACK, whatever its code), `None` if it closed without one.
    pub fn connect_with(addr: SocketAddr, connect: Connect) -> (Self, Option<ConnAck>) {
        let mut raw = Self::connect_tcp(addr);
        raw.decoder.version = connect.version;
        raw.send(&Packet::Connect(Box::new(connect)));
        match raw.recv() {
            Some(Packet::ConnAck(ack)) => (raw, Some(ack)),
            None => (raw, None),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// The next packet within `wait`, `None` on timeout or close.
    pub fn recv_within(&mut self, wait: Duration) -> Option<Packet> {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut chunk = [0u8; 65536];
        let got = loop {
            if let Some(p) = self.decoder.decode(&mut self.buf).unwrap() {
                break Some(p);
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => break None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => break None,
            }
        };
        self.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        got
    }

    /// Receives PUBLISHes until `want` arrived or `wait` passed, answering each QoS flow
    /// (PUBACK, PUBREC, and PUBCOMP for a PUBREL).
    pub fn drain_publishes(&mut self, want: usize, wait: Duration) -> Vec<Publish> {
        let deadline = Instant::now() + wait;
        let mut got = Vec::new();
        while got.len() < want && Instant::now() < deadline {
            match self.recv_within(Duration::from_millis(200)) {
                Some(Packet::Publish(p)) => {
                    match p.qos {
                        QoS::AtMostOnce => {}
                        QoS::AtLeastOnce => self.ack(PubRespKind::PubAck, p.packet_id.unwrap()),
                        QoS::ExactlyOnce => self.ack(PubRespKind::PubRec, p.packet_id.unwrap()),
                    }
                    got.push(p);
                }
                Some(Packet::PubResp(PubResp {
                    kind: PubRespKind::PubRel,
                    packet_id,
                    ..
                })) => self.ack(PubRespKind::PubComp, packet_id),
                _ => {}
            }
        }
        got
    }
}

/// A rumqttc client with `options` subscribes to `filter` at QoS 1 and disconnects cleanly
/// (a persistent session left behind when `options` says so).
pub fn rumqttc_subscribe(options: rumqttc::MqttOptions, filter: &str) {
    use rumqttc::{Client, Event, Incoming};
    let (c, mut conn) = Client::new(options, 10);
    c.subscribe(filter, rumqttc::QoS::AtLeastOnce).unwrap();
    for event in conn.iter() {
        if let Ok(Event::Incoming(Incoming::SubAck(_))) = event {
            break;
        }
    }
    c.disconnect().unwrap();
    for event in conn.iter() {
        if event.is_err() {
            break;
        }
    }
}

/// Publishes `from..to` as QoS 1 payloads (their numbers as text) on `topic` through one
/// mosquitto_pub connection.
pub fn mosquitto_publish(port: u16, topic: &str, from: u32, to: u32) {
    let mut child = Command::new("mosquitto_pub")
        .args(["-p", &port.to_string(), "-q", "1", "-t", topic, "-l"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("mosquitto_pub");
    let lines: String = (from..to).map(|i| format!("{i}\n")).collect();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
}
