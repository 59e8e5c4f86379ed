//! A trivial MQTT relay: the floor the brokers are measured against. One thread, one
//! io_uring, exact-topic routing only, every PUBLISH forwarded to the
//! connections subscribed to its topic and acknowledged at once; no sessions, no queues, no
//! limits; PUBLISH is decoded and re-encoded as is (same QoS, same packet id). It answers CONNECT, SUBSCRIBE, PINGREQ and the QoS 2 handshakes just enough for
//! clients (and ringmq-bench) to run against it. Not a broker: never expose it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use net::codec::{
    ConnAck, Decoder, FixedHeader, Packet, PubResp, PubRespKind, QoS, ReasonCode, SubAck,
};
use net::uring::{Ring, RingConfig};

const KIND_ACCEPT: u64 = 1;
const KIND_RECV: u64 = 2;
const KIND_SEND: u64 = 3;
const KIND_TIMER: u64 = 4;

struct Conn {
    fd: OwnedFd,
    decoder: Decoder,
    rbuf: BytesMut,
    out: BytesMut,
    sending: bool,
    dirty: bool,
    open: bool,
}

/// Runs the relay on `addr` until `stop` is set (checked every 100 ms).
pub fn run(addr: SocketAddr, stop: Arc<AtomicBool>) -> anyhow::Result<()> {
    let listener = net::uring::reuseport_listener(addr, 4096)?;
    let mut ring = Ring::new(RingConfig {
        sq_entries: 4096,
        cq_entries: 65_536,
        recv_buffer_count: 4096,
        recv_buffer_bytes: 16 * 1024,
    })?;
    ring.accept_multi(listener.as_raw_fd(), KIND_ACCEPT << 56);
    ring.timer(std::time::Duration::from_millis(100), KIND_TIMER << 56);
    let mut conns: Vec<Conn> = Vec::new();
    let mut routes: HashMap<Vec<u8>, Vec<usize>> = HashMap::new();
    let mut dirty: Vec<usize> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        ring.submit_and_wait(1)?;
        let mut completions = ring.completions();
        for c in completions.drain(..) {
            let i = (c.token & 0x00FF_FFFF_FFFF_FFFF) as usize;
            match c.token >> 56 {
                KIND_ACCEPT => {
                    if c.result >= 0 {
                        let fd = net::uring::adopt_fd(c.result);
                        let _ = net::uring::set_nodelay(&fd);
                        let index = conns.len();
                        ring.recv_multi(fd.as_raw_fd(), KIND_RECV << 56 | index as u64);
                        conns.push(Conn {
                            fd,
                            decoder: Decoder::new(1 << 25),
                            rbuf: BytesMut::new(),
                            out: BytesMut::new(),
                            sending: false,
                            dirty: false,
                            open: true,
                        });
                    }
                    if !c.more() {
                        ring.accept_multi(listener.as_raw_fd(), KIND_ACCEPT << 56);
                    }
                }
                KIND_RECV => {
                    let Some(conn) = conns.get_mut(i) else {
                        continue;
                    };
                    ring.received(&c, |bytes| conn.rbuf.extend_from_slice(bytes));
                    if c.result <= 0 && c.result != -libc::ENOBUFS {
                        conn.open = false;
                        continue;
                    }
                    if !c.more() {
                        ring.recv_multi(conn.fd.as_raw_fd(), KIND_RECV << 56 | i as u64);
                    }
                    handle_input(i, &mut conns, &mut routes, &mut dirty);
                }
                KIND_SEND => {
                    if let (Some(conn), Some(mut buf)) = (conns.get_mut(i), c.send_buf) {
                        conn.sending = false;
                        let sent = usize::try_from(c.result).unwrap_or(0);
                        if c.result > 0 && sent < buf.len() {
                            buf.advance(sent);
                            conn.sending = true;
                            ring.send(conn.fd.as_raw_fd(), buf, KIND_SEND << 56 | i as u64);
                        } else if !conn.out.is_empty() && !conn.dirty {
                            conn.dirty = true;
                            dirty.push(i);
                        }
                    }
                }
                _ => {}
            }
        }
        ring.return_completions(completions);
        for i in dirty.drain(..) {
            let Some(conn) = conns.get_mut(i) else {
                continue;
            };
            conn.dirty = false;
            if conn.open && !conn.sending && !conn.out.is_empty() {
                conn.sending = true;
                let buf = conn.out.split();
                ring.send(conn.fd.as_raw_fd(), buf, KIND_SEND << 56 | i as u64);
            }
        }
    }
    Ok(())
}

fn handle_input(
    i: usize,
    conns: &mut [Conn],
    routes: &mut HashMap<Vec<u8>, Vec<usize>>,
    dirty: &mut Vec<usize>,
) {
    let mark = |dirty: &mut Vec<usize>, conns: &mut [Conn], j: usize| {
        if let Some(c) = conns.get_mut(j) {
            if !c.dirty {
                c.dirty = true;
                dirty.push(j);
            }
        }
    };
    loop {
        let Some(conn) = conns.get_mut(i) else { return };
        let Ok(Some(header)) = FixedHeader::parse(&conn.rbuf) else {
            return;
        };
        if conn.rbuf.len() < header.packet_bytes() {
            return;
        }
        let decoder = conn.decoder;
        let Ok(Some(packet)) = decoder.decode(&mut conn.rbuf) else {
            conn.open = false;
            return;
        };
        let v = conn.decoder.version;
        let reply = |conns: &mut [Conn], p: Packet| {
            if let Some(c) = conns.get_mut(i) {
                let _ = p.encode(v, &mut c.out);
            }
        };
        match packet {
            Packet::Connect(c) => {
                if let Some(conn) = conns.get_mut(i) {
                    conn.decoder.version = c.version;
                }
                let ack = ConnAck {
                    session_present: false,
                    code: ReasonCode::SUCCESS,
                    properties: Default::default(),
                };
                if let Some(conn) = conns.get_mut(i) {
                    let _ = Packet::ConnAck(ack).encode(c.version, &mut conn.out);
                }
            }
            Packet::Subscribe(s) => {
                for (filter, _) in &s.filters {
                    routes
                        .entry(filter.as_bytes().to_vec())
                        .or_default()
                        .push(i);
                }
                let reasons = s
                    .filters
                    .iter()
                    .map(|(_, o)| ReasonCode(o.qos as u8))
                    .collect();
                reply(
                    conns,
                    Packet::SubAck(SubAck {
                        packet_id: s.packet_id,
                        properties: Default::default(),
                        reasons,
                    }),
                );
            }
            Packet::Publish(p) => {
                if let Some(subs) = routes.get(p.topic.as_bytes().as_ref()) {
                    let forward = Packet::Publish(p.clone());
                    for &j in subs {
                        if let Some(c) = conns.get_mut(j) {
                            let _ = forward.encode(c.decoder.version, &mut c.out);
                        }
                        mark(dirty, conns, j);
                    }
                }
                match (p.qos, p.packet_id) {
                    (QoS::AtLeastOnce, Some(id)) => reply(
                        conns,
                        Packet::PubResp(PubResp::new(PubRespKind::PubAck, id)),
                    ),
                    (QoS::ExactlyOnce, Some(id)) => reply(
                        conns,
                        Packet::PubResp(PubResp::new(PubRespKind::PubRec, id)),
                    ),
                    _ => {}
                }
            }
            Packet::PubResp(r) => match r.kind {
                PubRespKind::PubRel => reply(
                    conns,
                    Packet::PubResp(PubResp::new(PubRespKind::PubComp, r.packet_id)),
                ),
                PubRespKind::PubRec => reply(
                    conns,
                    Packet::PubResp(PubResp::new(PubRespKind::PubRel, r.packet_id)),
                ),
                _ => {}
            },
            Packet::PingReq => reply(conns, Packet::PingResp),
            _ => {}
        }
        mark(dirty, conns, i);
    }
}
