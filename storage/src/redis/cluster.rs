//! Redis Cluster: which master owns a key (CRC16 of its hash tag, 16,384 slots), the slot map
//! read with `CLUSTER SLOTS`, and splitting a pipeline into one per master. A single Redis is
//! the one-node case: every slot on node 0, nothing split.

use super::config::RedisConfig;
use super::load::Client;
use super::resp::{self, Reply};

/// Slots in a Redis Cluster.
pub const SLOTS: usize = 16_384;

/// CRC16/XMODEM (polynomial 0x1021), as Redis Cluster hashes keys.
pub fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &b in data {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of `key`: of its hash tag (between the first `{` and the next `}`) if that is not
/// empty, else of the whole key.
pub fn key_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = key.get(open + 1..)?;
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| rest.get(..close)).flatten()
    });
    crc16(tagged.unwrap_or(key)) % SLOTS as u16
}

/// The masters and which one owns each slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Topology {
    /// `host:port` of each master.
    pub nodes: Vec<String>,
    /// Index in `nodes` of each slot's master.
    slots: Vec<u8>,
}

impl Topology {
    /// One Redis: every slot on it.
    pub fn single(addr: &str) -> Self {
        Self {
            nodes: vec![addr.to_string()],
            slots: vec![0; SLOTS],
        }
    }

    /// The node that owns `key`.
    pub fn node_of(&self, key: &[u8]) -> usize {
        if self.nodes.len() == 1 {
            return 0;
        }
        usize::from(
            self.slots
                .get(usize::from(key_slot(key)))
                .copied()
                .unwrap_or(0),
        )
    }

    /// Reads the slot map from the cluster (`CLUSTER SLOTS` through `seed`, else through the
    /// configured address). Every slot must be served.
    pub fn discover(config: &RedisConfig, seeds: &[String]) -> std::io::Result<Self> {
        let mut last = std::io::Error::other("no seed");
        let own = [config.addr.clone()];
        for seed in seeds.iter().chain(own.iter()) {
            let reply = Client::connect_to(config, seed)
                .and_then(|mut c| c.pipeline(&[resp::command(&[b"CLUSTER", b"SLOTS"])]));
            match reply.map(|mut r| r.pop()) {
                Ok(Some(reply)) => match Self::from_reply(reply) {
                    Ok(t) => return Ok(t),
                    Err(e) => last = std::io::Error::other(e),
                },
                Ok(None) => {}
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The map from a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id], replicas...]]`.
    fn from_reply(reply: Reply) -> Result<Self, String> {
        let Reply::Array(Some(ranges)) = reply else {
            return Err(match reply {
                Reply::Error(e) => format!("CLUSTER SLOTS: {e}"),
                _ => "CLUSTER SLOTS: not an array".into(),
            });
        };
        let mut nodes: Vec<String> = Vec::new();
        let mut slots = vec![u8::MAX; SLOTS];
        for range in ranges {
            let Reply::Array(Some(fields)) = range else {
                return Err("CLUSTER SLOTS: bad range".into());
            };
            let mut it = fields.into_iter();
            let (Some(Reply::Int(start)), Some(Reply::Int(end)), Some(Reply::Array(Some(master)))) =
                (it.next(), it.next(), it.next())
            else {
                return Err("CLUSTER SLOTS: bad range".into());
            };
            let mut m = master.into_iter();
            let (Some(Reply::Bulk(Some(host))), Some(Reply::Int(port))) = (m.next(), m.next())
            else {
                return Err("CLUSTER SLOTS: bad node".into());
            };
            let addr = format!("{}:{port}", String::from_utf8_lossy(&host));
            let index = match nodes.iter().position(|n| *n == addr) {
                Some(i) => i,
                None => {
                    nodes.push(addr);
                    nodes.len() - 1
                }
            };
            let index = u8::try_from(index).map_err(|_| "more than 255 masters")?;
            let (start, end) = (
                usize::try_from(start).map_err(|_| "bad slot")?,
                usize::try_from(end).map_err(|_| "bad slot")?,
            );
            for slot in slots.get_mut(start..=end).ok_or("bad slot range")? {
                *slot = index;
            }
        }
        if let Some(slot) = slots.iter().position(|&n| n == u8::MAX) {
            return Err(format!("slot {slot} has no master (cluster not ready)"));
        }
        Ok(Self { nodes, slots })
    }
}

/// The bytes of one command at the start of `buf` and its key (the first key: `EVAL`'s is
/// its fourth argument); None if `buf` does not start with a whole command.
fn command_key(buf: &[u8]) -> Option<(usize, &[u8])> {
    fn line(buf: &[u8], at: usize) -> Option<(usize, usize)> {
        let rest = buf.get(at..)?;
        let end = rest.windows(2).position(|w| w == b"\r\n")?;
        let n = std::str::from_utf8(rest.get(1..end)?).ok()?.parse().ok()?;
        Some((n, at + end + 2))
    }
    let (args, mut at) = line(buf, 0)?;
    let mut key: &[u8] = &[];
    let mut name: &[u8] = &[];
    for i in 0..args {
        let (len, start) = line(buf, at)?;
        let arg = buf.get(start..start + len)?;
        match i {
            0 => name = arg,
            1 if !name.eq_ignore_ascii_case(b"EVAL") => key = arg,
            3 if name.eq_ignore_ascii_case(b"EVAL") => key = arg,
            _ => {}
        }
        at = start + len + 2;
    }
    Some((at, key))
}

/// Appends each command of `buf` (a pipeline) to its key's master's part (`parts[node]`:
/// bytes and command count). Order is kept per master. Returns how many commands it routed
/// (it stops at bytes that are not a whole command).
pub fn route(buf: &[u8], topology: &Topology, parts: &mut [(Vec<u8>, usize)]) -> usize {
    let mut at = 0;
    let mut routed = 0;
    while at < buf.len() {
        let rest = buf.get(at..).unwrap_or_default();
        let Some((len, key)) = command_key(rest) else {
            return routed;
        };
        if let Some((part, n)) = parts.get_mut(topology.node_of(key)) {
            part.extend_from_slice(rest.get(..len).unwrap_or_default());
            *n += 1;
            routed += 1;
        }
        at += len;
    }
    routed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_redis_cluster() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(key_slot(b"foo"), 12182);
        assert_eq!(key_slot(b"{user1000}.following"), key_slot(b"user1000"));
        assert_eq!(key_slot(b"foo{}{bar}"), key_slot(b"foo{}{bar}"));
        assert_eq!(key_slot(b"foo{{bar}}zap"), key_slot(b"{bar"));
        assert_eq!(key_slot(b"ringmq:{dev-1}:q"), key_slot(b"ringmq:{dev-1}:s"));
    }

    #[test]
    fn a_pipeline_splits_by_master_keeping_order() {
        let topology = Topology {
            nodes: vec!["a:1".into(), "b:1".into()],
            slots: (0..SLOTS).map(|s| u8::from(s >= SLOTS / 2)).collect(),
        };
        let key = |i: u8| format!("ringmq:{{c{i}}}:q").into_bytes();
        let mut buf = Vec::new();
        for i in 0..50u8 {
            buf.extend(resp::command(&[b"HSET", &key(i), &[i], b"v"]));
        }
        buf.extend(resp::command(&[b"EVAL", b"return 1", b"1", &key(3), b"x"]));
        let mut parts = vec![(Vec::new(), 0), (Vec::new(), 0)];
        assert_eq!(route(&buf, &topology, &mut parts), 51);
        assert_eq!(parts[0].1 + parts[1].1, 51);
        assert!(
            parts[0].1 > 5 && parts[1].1 > 5,
            "both masters get commands"
        );
        for (node, (part, n)) in parts.iter().enumerate() {
            let mut rest = &part[..];
            let mut last = None;
            for _ in 0..*n {
                let (Reply::Array(Some(args)), used) = resp::parse(rest).unwrap().unwrap() else {
                    panic!("not a command");
                };
                let arg = |i: usize| match &args[i] {
                    Reply::Bulk(Some(b)) => b.clone(),
                    other => panic!("{other:?}"),
                };
                if arg(0) == b"HSET" {
                    assert_eq!(topology.node_of(&arg(1)), node);
                    let i = arg(2)[0];
                    assert!(last < Some(i), "order kept within a master");
                    last = Some(i);
                } else {
                    assert_eq!(topology.node_of(&arg(3)), node, "EVAL goes by its key");
                }
                rest = &rest[used..];
            }
            assert!(rest.is_empty());
        }
    }
}
