//! The retained scenario: store many retained messages, then measure what a broker does with
//! them. Phases, each against one broker process:
//! 1. store: `count` retained QoS 1 messages (`ret/<i % branches>/<i / branches>`, payload
//!    `payload_bytes`) from `publishers` connections, each with a window in flight; rate and
//!    broker CPU per message;
//! 2. memory: the broker's RSS once stored (and before, for the difference);
//! 3. a new subscriber to `#` at each QoS asked: time from CONNECT to the last retained
//!    message, every topic counted once (QoS 1 acknowledged as it arrives);
//! 4. narrow: a new subscriber to `ret/7/+` (one branch) `rounds` times: time from SUBSCRIBE
//!    to the last message of the branch, and the broker CPU it cost.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{BufMut, BytesMut};
use net::codec::{
    Decoder, Packet, PacketId, ProtocolVersion, PubResp, PubRespKind, QoS, Subscribe,
    SubscriptionOptions,
};
use serde::Serialize;

use super::layers::Layers;
use super::wire::{handshake, Hello};
use crate::procstat;

/// Retained scenario settings.
#[derive(Debug, Clone)]
pub struct RetainedLoad {
    /// Broker address.
    pub addr: SocketAddr,
    /// Retained messages to store.
    pub count: u32,
    /// Payload bytes of each.
    pub payload_bytes: usize,
    /// Level-2 branches of the topic space (`ret/<branch>/<n>`).
    pub branches: u32,
    /// Storing connections.
    pub publishers: u32,
    /// QoS 1 publishes each storing connection keeps in flight.
    pub window: u32,
    /// QoS of the `#` subscribers (one run each).
    pub subscribe_qos: Vec<QoS>,
    /// Narrow subscriptions measured.
    pub rounds: u32,
    /// The broker's pid (CPU and memory).
    pub broker_pid: Option<u32>,
    /// Client id prefix.
    pub prefix: String,
}

/// One `#` subscriber's result.
#[derive(Debug, Clone, Serialize)]
pub struct FullSubscribe {
    /// QoS asked.
    pub qos: u8,
    /// Distinct topics received.
    pub received: u64,
    /// Messages received in all (repeats included).
    pub deliveries: u64,
    /// Seconds from CONNECT to the last message.
    pub seconds: f64,
    /// Broker CPU seconds over the phase.
    pub broker_cpu_seconds: Option<f64>,
    /// Broker peak RSS during the phase (VmHWM after it).
    pub broker_peak_rss_bytes: Option<u64>,
}

/// What the scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct RetainedReport {
    /// Retained messages stored.
    pub count: u32,
    /// Payload bytes each.
    pub payload_bytes: usize,
    /// Seconds to store them all (every PUBACK in).
    pub store_seconds: f64,
    /// Stored per second.
    pub store_per_second: f64,
    /// Broker CPU microseconds per stored message.
    pub store_cpu_us: Option<f64>,
    /// Broker RSS before storing.
    pub rss_before_bytes: Option<u64>,
    /// Broker RSS once stored.
    pub rss_stored_bytes: Option<u64>,
    /// `#` subscribers.
    pub full: Vec<FullSubscribe>,
    /// Matches of the narrow filter.
    pub narrow_matches: u64,
    /// Narrow subscribe times (SUBSCRIBE to the last match), microseconds, sorted.
    pub narrow_us: Vec<f64>,
    /// Broker CPU microseconds per narrow subscribe (mean over the rounds, connection set-up
    /// included).
    pub narrow_cpu_us: Option<f64>,
}

impl RetainedReport {
    /// A plain-text table.
    pub fn table(&self) -> String {
        let mb = |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1}", b as f64 / 1e6));
        let mut s = format!(
            "stored {} x {} B in {:.2} s: {:.0}/s, broker {} us/msg; RSS {} -> {} MB\n",
            self.count,
            self.payload_bytes,
            self.store_seconds,
            self.store_per_second,
            self.store_cpu_us.map_or("-".into(), |c| format!("{c:.2}")),
            mb(self.rss_before_bytes),
            mb(self.rss_stored_bytes),
        );
        for f in &self.full {
            s += &format!(
                "'#' at QoS {}: {} of {} in {:.2} s ({} deliveries), broker CPU {} s, peak RSS {} MB\n",
                f.qos,
                f.received,
                self.count,
                f.seconds,
                f.deliveries,
                f.broker_cpu_seconds.map_or("-".into(), |c| format!("{c:.2}")),
                mb(f.broker_peak_rss_bytes),
            );
        }
        if let (Some(first), Some(last)) = (self.narrow_us.first(), self.narrow_us.last()) {
            let mid = self
                .narrow_us
                .get(self.narrow_us.len() / 2)
                .unwrap_or(first);
            s += &format!(
                "'ret/7/+' ({} matches): min {first:.0} us, median {mid:.0} us, max {last:.0} us; broker CPU {} us per subscribe\n",
                self.narrow_matches,
                self.narrow_cpu_us.map_or("-".into(), |c| format!("{c:.0}")),
            );
        }
        s
    }
}

fn cpu(pid: Option<u32>) -> Option<f64> {
    pid.and_then(procstat::sample).map(|s| s.cpu_seconds)
}

fn rss(pid: Option<u32>) -> Option<u64> {
    pid.and_then(procstat::sample).map(|s| s.rss_bytes)
}

fn write_all(s: &mut TcpStream, out: &mut BytesMut) -> anyhow::Result<()> {
    s.write_all(out)?;
    out.clear();
    Ok(())
}

/// Reads what is there into `buf`; false on EOF.
fn fill(s: &mut TcpStream, buf: &mut BytesMut, chunk: &mut [u8]) -> anyhow::Result<bool> {
    match s.read(chunk) {
        Ok(0) => Ok(false),
        Ok(n) => {
            buf.extend_from_slice(chunk.get(..n).unwrap_or(&[]));
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// One storing connection: messages `first, first + step, ..` below `count`.
fn store(load: &RetainedLoad, who: u32) -> anyhow::Result<()> {
    let id = format!("{}-store-{who}", load.prefix);
    let hello = Hello {
        client_id: &id,
        version: ProtocolVersion::V311,
        clean: true,
        session_expiry: 0,
        subscribe: None,
        layers: &Layers::none(),
    };
    let (mut s, _, mut buf, _) = handshake(load.addr, &hello)?;
    let decoder = Decoder::new(1 << 20);
    let (mut out, mut chunk) = (BytesMut::new(), vec![0u8; 1 << 16]);
    let mut next = who;
    let (mut inflight, mut pid) = (0u32, 0u16);
    let payload = vec![b'x'; load.payload_bytes];
    loop {
        while inflight < load.window && next < load.count {
            let topic = format!("ret/{}/{}", next % load.branches, next / load.branches);
            pid = pid.checked_add(1).unwrap_or(1);
            let remaining = 2 + topic.len() + 2 + payload.len();
            out.put_u8(0x30 | 1 << 1 | 1);
            net::codec::put_variable_int(&mut out, remaining)?;
            out.put_u16(topic.len() as u16);
            out.put_slice(topic.as_bytes());
            out.put_u16(pid);
            out.put_slice(&payload);
            inflight += 1;
            next += load.publishers;
        }
        if !out.is_empty() {
            write_all(&mut s, &mut out)?;
        }
        if inflight == 0 {
            return Ok(());
        }
        while inflight > 0 {
            match decoder.decode(&mut buf)? {
                Some(Packet::PubResp(r)) if r.kind == PubRespKind::PubAck => inflight -= 1,
                Some(other) => bail!("{id}: unexpected {other:?}"),
                None => break,
            }
        }
        let wait = inflight >= load.window / 2 || next >= load.count;
        if wait && !fill(&mut s, &mut buf, &mut chunk)? {
            bail!("{id}: the broker closed the connection");
        }
    }
}

/// Subscribes to `filter` at `qos` on a new connection and takes retained messages until
/// `expect` distinct topics arrived (or 10 s pass with none): (distinct, deliveries,
/// seconds from the start to the last message).
fn subscribe_all(
    load: &RetainedLoad,
    id: &str,
    filter: &str,
    qos: QoS,
    expect: u64,
) -> anyhow::Result<(u64, u64, Duration)> {
    let started = Instant::now();
    let hello = Hello {
        client_id: id,
        version: ProtocolVersion::V311,
        clean: true,
        session_expiry: 0,
        subscribe: None,
        layers: &Layers::none(),
    };
    let (mut s, _, mut buf, _) = handshake(load.addr, &hello)?;
    let mut out = BytesMut::new();
    Packet::Subscribe(Subscribe {
        packet_id: PacketId::new(1).context("packet id")?,
        properties: Default::default(),
        filters: vec![(filter.into(), SubscriptionOptions::qos(qos))],
    })
    .encode(ProtocolVersion::V311, &mut out)?;
    let sent = Instant::now();
    write_all(&mut s, &mut out)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let decoder = Decoder::new(1 << 24);
    let mut chunk = vec![0u8; 1 << 18];
    let mut seen = rustc_hash::FxHashSet::default();
    let (mut deliveries, mut last) = (0u64, sent);
    while (seen.len() as u64) < expect {
        match decoder.decode(&mut buf)? {
            Some(Packet::Publish(p)) => {
                deliveries += 1;
                last = Instant::now();
                seen.insert(p.topic.to_string());
                if let Some(pid) = p.packet_id {
                    Packet::PubResp(PubResp::new(PubRespKind::PubAck, pid))
                        .encode(ProtocolVersion::V311, &mut out)?;
                }
            }
            Some(Packet::SubAck(_)) => {}
            Some(other) => bail!("{id}: unexpected {other:?}"),
            None => {
                if !out.is_empty() {
                    write_all(&mut s, &mut out)?;
                }
                match fill(&mut s, &mut buf, &mut chunk) {
                    Ok(true) => {}
                    Ok(false) => bail!("{id}: the broker closed the connection"),
                    Err(_) => break,
                }
            }
        }
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    let from = if filter == "#" { started } else { sent };
    Ok((seen.len() as u64, deliveries, last.duration_since(from)))
}

/// Runs the phases.
pub fn run_retained(load: &RetainedLoad) -> anyhow::Result<RetainedReport> {
    let pid = load.broker_pid;
    let rss_before = rss(pid);
    let cpu_before = cpu(pid);
    let started = Instant::now();
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..load.publishers)
            .map(|who| scope.spawn(move || store(load, who)))
            .collect();
        for h in handles {
            h.join()
                .unwrap_or_else(|_| Err(anyhow::anyhow!("a storing thread panicked")))?;
        }
        Ok(())
    })?;
    let store_seconds = started.elapsed().as_secs_f64();
    let store_cpu_us = match (cpu_before, cpu(pid)) {
        (Some(b), Some(a)) => Some((a - b) * 1e6 / f64::from(load.count.max(1))),
        _ => None,
    };
    // Let the broker settle before reading its memory.
    std::thread::sleep(Duration::from_secs(2));
    let rss_stored = rss(pid);
    let mut full = Vec::new();
    for (i, &qos) in load.subscribe_qos.iter().enumerate() {
        let before = cpu(pid);
        let id = format!("{}-all-{i}", load.prefix);
        let (received, deliveries, took) =
            subscribe_all(load, &id, "#", qos, u64::from(load.count))?;
        full.push(FullSubscribe {
            qos: qos as u8,
            received,
            deliveries,
            seconds: took.as_secs_f64(),
            broker_cpu_seconds: match (before, cpu(pid)) {
                (Some(b), Some(a)) => Some(a - b),
                _ => None,
            },
            broker_peak_rss_bytes: pid.and_then(procstat::sample).map(|s| s.peak_rss_bytes),
        });
        std::thread::sleep(Duration::from_millis(500));
    }
    let matches = u64::from(load.count / load.branches + u32::from(7 < load.count % load.branches));
    let mut narrow_us = Vec::new();
    // CPU is read in clock ticks (10 ms): once around all the rounds, not per round.
    let before = cpu(pid);
    for round in 0..load.rounds {
        let id = format!("{}-narrow-{round}", load.prefix);
        let (received, _, took) = subscribe_all(load, &id, "ret/7/+", QoS::AtMostOnce, matches)?;
        if received != matches {
            bail!("narrow subscribe: {received} of {matches}");
        }
        narrow_us.push(took.as_secs_f64() * 1e6);
    }
    let narrow_cpu = match (before, cpu(pid)) {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    narrow_us.sort_by(f64::total_cmp);
    Ok(RetainedReport {
        count: load.count,
        payload_bytes: load.payload_bytes,
        store_seconds,
        store_per_second: f64::from(load.count) / store_seconds.max(1e-9),
        store_cpu_us,
        rss_before_bytes: rss_before,
        rss_stored_bytes: rss_stored,
        full,
        narrow_matches: matches,
        narrow_us,
        narrow_cpu_us: narrow_cpu.map(|c| c * 1e6 / f64::from(load.rounds.max(1))),
    })
}
