//! The two broker-wide threads of `redis_shared`: the claimer (claims and ownership checks,
//! batched, over one blocking connection per Redis master) and the watcher (a `SUBSCRIBE` to
//! `ringmq:owners`, each notice handed to its client's home shard).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use storage::redis::cluster::Topology;
use storage::redis::layout::{client_key, OWNER};
use storage::redis::load::{self, Client};
use storage::redis::owners::{self, Claim, CHANNEL};
use storage::redis::resp::{self, Reply};
use storage::redis::tls::Stream;
use storage::redis::RedisConfig;

use super::{Event, Inbox, Request, CHECK_CHUNK};

/// Requests served per pipeline round.
const BATCH_MAX: usize = 256;

/// How often a thread waiting for work or for Redis looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(200);

/// Backoff of the watcher's reconnections: first, and at most.
const BACKOFF_MIN: Duration = Duration::from_millis(50);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// A subscription that lasted this long resets the backoff.
const LASTED: Duration = Duration::from_secs(5);

/// The claimer thread's state.
#[derive(Debug)]
pub struct Claimer {
    redis: RedisConfig,
    broker: Arc<str>,
    inboxes: Arc<Vec<Arc<Inbox>>>,
    topology: Option<Topology>,
    /// The masters last known (seeds when the slot map is read again).
    known: Vec<String>,
    conns: HashMap<String, Client>,
    failing: bool,
}

impl Claimer {
    /// A claimer for broker `broker` answering into `inboxes`.
    pub fn new(redis: RedisConfig, broker: Arc<str>, inboxes: Arc<Vec<Arc<Inbox>>>) -> Self {
        Self {
            redis,
            broker,
            inboxes,
            topology: None,
            known: Vec::new(),
            conns: HashMap::new(),
            failing: false,
        }
    }

    /// Serves requests until every shard is gone or `stop` is set.
    pub fn run(mut self, rx: &Receiver<Request>, stop: &AtomicBool) {
        let mut batch = Vec::with_capacity(BATCH_MAX);
        loop {
            match rx.recv_timeout(STOP_POLL) {
                Ok(r) => batch.push(r),
                Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
                Err(_) => return,
            }
            while batch.len() < BATCH_MAX {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.serve(&mut batch, stop);
        }
    }

    /// Serves `batch` (emptied): claims grouped by master, one pipeline each; checks in
    /// chunks. A failed round is tried once more on fresh connections and a fresh slot map.
    fn serve(&mut self, batch: &mut Vec<Request>, stop: &AtomicBool) {
        let mut claims: Vec<(usize, crate::ids::ConnId, Claim)> = Vec::new();
        let mut checks = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Claim { shard, conn, claim } => claims.push((shard, conn, claim)),
                Request::Check { shard, held } => checks.push((shard, held)),
            }
        }
        // CONNECTs wait on claims: they go first, the sweeps of checks after.
        if !claims.is_empty() {
            self.serve_claims(claims, stop);
        }
        for (shard, held) in checks {
            self.check(shard, held, stop);
        }
    }

    /// One round of claims, grouped by master.
    fn serve_claims(&mut self, claims: Vec<(usize, crate::ids::ConnId, Claim)>, stop: &AtomicBool) {
        let mut results = None;
        let mut why = String::new();
        for _ in 0..2 {
            match self.claim_all(&claims) {
                Ok(r) => {
                    results = Some(r);
                    break;
                }
                Err(e) => {
                    why = e.to_string();
                    self.topology = None;
                    self.conns.clear();
                }
            }
        }
        match &results {
            Some(_) if self.failing => {
                tracing::info!(url = %self.redis.url, "claims of client ids in Redis work again");
                self.failing = false;
            }
            None if !self.failing => {
                tracing::error!(url = %self.redis.url, error = %why, "claims of client ids in Redis fail: CONNECTs are refused (0x88) until Redis answers");
                self.failing = true;
            }
            _ => {}
        }
        let mut results = results.map(Vec::into_iter);
        for (shard, conn, claim) in claims {
            let result = match &mut results {
                Some(r) => r
                    .next()
                    .unwrap_or_else(|| Err(std::io::Error::other("no reply")))
                    .map(Box::new)
                    .map_err(|e| e.to_string()),
                None => Err(why.clone()),
            };
            if let Some(inbox) = self.inboxes.get(shard) {
                inbox.push_waiting(
                    Event::Claimed {
                        conn,
                        claim,
                        result,
                    },
                    stop,
                );
            }
        }
    }

    /// The masters (discovered once, again after a failure).
    fn topology(&mut self) -> std::io::Result<&Topology> {
        if self.topology.is_none() {
            // A cluster's masters last known are asked too (the seed may be the one down).
            let topology = if self.redis.cluster {
                Topology::discover(&self.redis, &self.known)?
            } else {
                load::topology(&self.redis)?
            };
            self.known.clone_from(&topology.nodes);
            self.topology = Some(topology);
        }
        self.topology
            .as_ref()
            .ok_or_else(|| std::io::Error::other("no topology"))
    }

    /// The indexes of `clients`, grouped by the master holding each one's owner key.
    fn by_master<'a>(
        &mut self,
        clients: impl Iterator<Item = &'a str>,
    ) -> std::io::Result<Vec<(String, Vec<usize>)>> {
        let topology = self.topology()?;
        let mut by_node: Vec<(String, Vec<usize>)> = Vec::new();
        for (i, client) in clients.enumerate() {
            let key = client_key(client, OWNER);
            let addr = topology
                .nodes
                .get(topology.node_of(&key))
                .cloned()
                .unwrap_or_default();
            match by_node.iter_mut().find(|(a, _)| *a == addr) {
                Some((_, list)) => list.push(i),
                None => by_node.push((addr, vec![i])),
            }
        }
        Ok(by_node)
    }

    /// A connection to master `addr`.
    fn conn(&mut self, addr: &str) -> std::io::Result<&mut Client> {
        if !self.conns.contains_key(addr) {
            let mut c = Client::connect_to(&self.redis, addr)?;
            c.set_timeout(self.redis.hold.max(Duration::from_secs(1)))?;
            self.conns.insert(addr.to_string(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| std::io::Error::other("no connection"))
    }

    /// Every claim's result, in order; an error if a master could not be asked (a claim that
    /// Redis refused is that claim's error, unless it is a redirection: then all fail).
    fn claim_all(
        &mut self,
        claims: &[(usize, crate::ids::ConnId, Claim)],
    ) -> std::io::Result<Vec<std::io::Result<owners::Claimed>>> {
        let by_node = self.by_master(claims.iter().map(|(_, _, c)| c.client.as_str()))?;
        let mut results: Vec<Option<std::io::Result<owners::Claimed>>> =
            claims.iter().map(|_| None).collect();
        for (addr, list) in by_node {
            let these: Vec<Claim> = list
                .iter()
                .filter_map(|&i| claims.get(i).map(|(_, _, c)| c.clone()))
                .collect();
            let broker = self.broker.clone();
            let out = owners::claim(self.conn(&addr)?, &these, &broker)?;
            for (i, r) in list.into_iter().zip(out) {
                if let Err(e) = &r {
                    let text = e.to_string();
                    if text.contains("MOVED") || text.contains("ASK") {
                        return Err(std::io::Error::other(text));
                    }
                }
                if let Some(slot) = results.get_mut(i) {
                    *slot = Some(r);
                }
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(std::io::Error::other("no reply"))))
            .collect())
    }

    /// Who owns `held`'s client ids: the answer to `shard` (nothing if Redis cannot say: the
    /// next watcher resubscription asks again).
    fn check(&mut self, shard: usize, held: Vec<(String, u64)>, stop: &AtomicBool) {
        for chunk in held.chunks(CHECK_CHUNK) {
            match self.owners_of(chunk) {
                Ok(found) => {
                    if let Some(inbox) = self.inboxes.get(shard) {
                        inbox.push_waiting(Event::Checked(found), stop);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "checking who owns this broker's sessions in Redis failed (asked again in a second)");
                    self.topology = None;
                    self.conns.clear();
                    if let Some(inbox) = self.inboxes.get(shard) {
                        inbox.push_waiting(Event::CheckFailed, stop);
                    }
                    return;
                }
            }
        }
    }

    /// The owner of each of `chunk`'s client ids, one pipeline per master.
    fn owners_of(&mut self, chunk: &[(String, u64)]) -> std::io::Result<Vec<super::Found>> {
        let mut found = Vec::with_capacity(chunk.len());
        for (addr, list) in self.by_master(chunk.iter().map(|(c, _)| c.as_str()))? {
            let held: Vec<&(String, u64)> = list.iter().filter_map(|&i| chunk.get(i)).collect();
            let clients: Vec<String> = held.iter().map(|(c, _)| c.clone()).collect();
            let owners = owners::owners(self.conn(&addr)?, &clients)?;
            for ((client, epoch), owner) in held.into_iter().zip(owners) {
                found.push((client.clone(), *epoch, owner));
            }
        }
        Ok(found)
    }
}

/// The watcher thread's state.
#[derive(Debug)]
pub struct Watcher {
    redis: RedisConfig,
    broker: Arc<str>,
    inboxes: Arc<Vec<Arc<Inbox>>>,
}

impl Watcher {
    /// A watcher for broker `broker` handing notices to `inboxes`.
    pub fn new(redis: RedisConfig, broker: Arc<str>, inboxes: Arc<Vec<Arc<Inbox>>>) -> Self {
        Self {
            redis,
            broker,
            inboxes,
        }
    }

    /// Subscribes, hands notices on, resubscribes after a failure (telling every shard that
    /// notices may have been missed), until `stop` is set. Failures back off (50 ms doubling
    /// to 2 s; back to 50 ms after a subscription that lasted).
    pub fn run(self, stop: &AtomicBool) {
        let mut backoff = BACKOFF_MIN;
        let mut lost = false;
        // A cluster's masters, tried when the seed does not answer.
        let nodes = if self.redis.cluster {
            Topology::discover(&self.redis, &[])
                .map(|t| t.nodes)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        while !stop.load(Ordering::Relaxed) {
            match self.subscribe(&nodes) {
                Ok((stream, rx)) => {
                    if lost {
                        tracing::info!(url = %self.redis.url, "listening to other brokers' claims again (ringmq:owners)");
                        lost = false;
                    }
                    // Subscribed (confirmed): what was claimed before is checked now.
                    for inbox in self.inboxes.iter() {
                        inbox.push_waiting(Event::Missed, stop);
                    }
                    let since = std::time::Instant::now();
                    if let Err(e) = self.listen(stream, rx, stop) {
                        tracing::warn!(url = %self.redis.url, error = %e, "lost the subscription to other brokers' claims (ringmq:owners): resubscribing; sessions held here are checked again then");
                        lost = true;
                        if since.elapsed() > LASTED {
                            backoff = BACKOFF_MIN;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                    }
                }
                Err(e) => {
                    if !lost {
                        tracing::warn!(url = %self.redis.url, error = %e, "cannot subscribe to other brokers' claims (ringmq:owners): retrying");
                        lost = true;
                    }
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// A connection subscribed to the notices (the seed, else a master of `nodes`), the
    /// subscription confirmed.
    fn subscribe(&self, nodes: &[String]) -> std::io::Result<(Stream, Vec<u8>)> {
        let mut last = std::io::Error::other("no node");
        let seed = [self.redis.addr.clone()];
        for addr in seed
            .iter()
            .chain(nodes.iter().filter(|n| **n != self.redis.addr))
        {
            match self.subscribe_at(addr) {
                Ok(stream) => return Ok(stream),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// The stream and what came after the confirmation.
    fn subscribe_at(&self, addr: &str) -> std::io::Result<(Stream, Vec<u8>)> {
        let mut stream = self.redis.connect_to(addr)?;
        stream.write_all(&resp::command(&[b"SUBSCRIBE", CHANNEL]))?;
        stream.set_read_timeout(Some(self.redis.connect_timeout))?;
        // The confirmation: ["subscribe", channel, 1] (an error: no right to the channel).
        let mut rx = Vec::new();
        let mut buf = [0u8; 512];
        let reply = loop {
            if let Some((reply, used)) = resp::parse(&rx).map_err(std::io::Error::other)? {
                rx.drain(..used);
                break reply;
            }
            let n = match stream.read(&mut buf) {
                // A signal (SIGSTOP / SIGCONT of the process): read again.
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                r => r?,
            };
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            rx.extend_from_slice(buf.get(..n).unwrap_or_default());
        };
        if let Some(e) = reply.error() {
            return Err(std::io::Error::other(format!("Redis: {e}")));
        }
        stream.set_read_timeout(Some(STOP_POLL))?;
        Ok((stream, rx))
    }

    /// Reads notices until the connection fails or `stop` is set.
    fn listen(
        &self,
        mut stream: Stream,
        mut rx: Vec<u8>,
        stop: &AtomicBool,
    ) -> std::io::Result<()> {
        let shards = self.inboxes.len();
        let mut buf = vec![0u8; 64 << 10];
        while !stop.load(Ordering::Relaxed) {
            match stream.read(&mut buf) {
                Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => rx.extend_from_slice(buf.get(..n).unwrap_or_default()),
                // Interrupted: a signal (SIGSTOP / SIGCONT of the process), not a lost
                // connection.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
            let mut at = 0;
            while let Some((reply, used)) =
                resp::parse(rx.get(at..).unwrap_or_default()).map_err(std::io::Error::other)?
            {
                at += used;
                if let Some(e) = reply.error() {
                    return Err(std::io::Error::other(format!("Redis: {e}")));
                }
                let Reply::Array(Some(items)) = reply else {
                    continue;
                };
                let (Some(Reply::Bulk(Some(kind))), Some(Reply::Bulk(Some(payload)))) =
                    (items.first(), items.get(2))
                else {
                    continue;
                };
                if kind != b"message" {
                    continue;
                }
                let Some(notice) = owners::notice_of(payload) else {
                    tracing::warn!("a notice on ringmq:owners does not read: ignored");
                    continue;
                };
                if *notice.broker == *self.broker {
                    continue;
                }
                let home = crate::ids::home_shard(notice.client.as_bytes(), shards).index();
                if let Some(inbox) = self.inboxes.get(home) {
                    inbox.push_waiting(Event::Taken(notice), stop);
                }
            }
            rx.drain(..at);
            if rx.len() > 16 << 20 {
                return Err(std::io::Error::other("a notice larger than 16 MiB"));
            }
        }
        Ok(())
    }
}
