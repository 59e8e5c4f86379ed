//! ringmq broker: config, shards, sessions, routing and the QoS flows.
//!
//! # Layout
//! - [`config`]: the TOML file and CLI flags (one table of keys), validated at start.
//! - [`shard`]: the reactor: one shard per core, its io_uring loop, its sockets, the mesh of
//!   SPSC queues to its peers; applies what the core decides.
//! - [`core`]: the sans-IO core of a shard: packet handling (one file per packet kind),
//!   routing, sessions' life cycle; state and packets in, output and effects out.
//! - [`durable`]: the shard's store and the ledger of acknowledgements waiting for it;
//!   recovery at start.
//! - [`sink`]: outbound targets other than sessions and peers.
//! - [`source`]: inbound feeds other than clients.
//! - [`kafka`]: the Kafka bridge: MQTT -> Kafka (a sink per shard), Kafka -> MQTT (a
//!   consumer per group feeding a source per shard), rdkafka.
//! - [`cluster`]: several nodes over one Kafka: the routes thread, the route table, the
//!   per-shard downlink sink.
//! - [`session`]: the sans-IO session state machine (inflight window, packet ids, queue).
//! - [`router`]: the topic tree, the replicated route table and shared-subscription groups.
//! - [`retained`]: retained messages, partitioned across shards by topic, paged by filter.
//! - [`auth`]: anonymous access, the password file and the ACL.
//! - [`asyncapi`]: topics, permissions and payload schemas from an AsyncAPI document.
//! - [`metrics`]: counters, the latency histogram, `$SYS` topics and `/metrics`.
//! - [`ids`]: identifier newtypes and the home-shard hash.
//! - [`broker`](crate::run): starting the shards and stopping them on a signal.
#![forbid(unsafe_code)]

pub mod asyncapi;
pub mod auth;
pub mod capacity;
pub mod cluster;
pub mod config;
pub mod core;
pub mod durable;
pub mod ids;
pub mod kafka;
pub mod metrics;
pub mod owners;
pub mod retained;
pub mod router;
pub mod session;
pub mod shard;
pub mod sink;
pub mod source;
pub mod transport;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use config::Config;
use ids::ShardId;
use shard::mesh::{Mesh, MeshShared};
use shard::Shard;

/// A running broker: its shard threads and the flag that stops them.
#[derive(Debug)]
pub struct Broker {
    stop: Arc<AtomicBool>,
    auth: Arc<auth::reload::Reloadable>,
    config: Config,
    mesh: Arc<MeshShared>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<shard::Stats>>>,
    /// Kafka -> MQTT consumer threads (none without `[[kafka.to_mqtt]]` or a cluster).
    consumers: kafka::consumer::Consumers,
    /// The cluster's routes thread (`[cluster]`).
    cluster: Option<cluster::routes::Node>,
    /// The claimer and the watcher (`redis_shared`).
    owner_threads: Vec<std::thread::JoinHandle<()>>,
    /// The Kafka outbox (`ack = "local"` rules).
    outbox: Option<kafka::outbox::Outbox>,
}

/// Every shard listens with SO_REUSEPORT, so a second broker on the same address would start
/// and the kernel would split new clients between the two. A probe bind without SO_REUSEPORT
/// fails while anyone listens there (SO_REUSEADDR only lets it past connections in
/// TIME_WAIT); the probe never listens, so no client connects to it (a client connecting
/// before the shards listen is refused, never accepted and then reset).
fn refuse_shared_port(addr: std::net::SocketAddr) -> anyhow::Result<()> {
    if addr.port() == 0 {
        return Ok(());
    }
    match net::uring::probe_bind(addr) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(anyhow::anyhow!(
            "listen on {addr}: another process already listens on this address (is another \
             ringmq running?); refusing to share it"
        )),
        Err(e) => Err(anyhow::anyhow!("listen on {addr}: {e}")),
    }
}

/// Starts one pinned shard thread per configured shard (after recovering the logs); returns
/// once every shard listens.
pub fn run(config: Config) -> anyhow::Result<Broker> {
    let shards = config.shards;
    // Large buffers (read buffers grown by big packets, outboxes) go back to the kernel
    // when freed (`crate::capacity`).
    net::uring::set_mmap_threshold(256 << 10);
    let mesh = MeshShared::new(
        shards,
        config.peer_queue_count_max,
        config.peer_queue_bytes_max,
    )?;
    refuse_shared_port(config.listen)?;
    let stop = Arc::new(AtomicBool::new(false));
    let auth = Arc::new(auth::reload::Reloadable::new(auth::Auth::load(&config)?));
    let metrics = Arc::new(metrics::Metrics::new(shards));
    let reloadable = auth.clone();
    metrics.set_channel_counts(Box::new(move || {
        let auth = reloadable.current();
        let per_channel = auth.api.as_ref().map(|api| api.refusals());
        let per_channel = per_channel.into_iter().flatten();
        per_channel
            .map(|(c, n)| (c.map(str::to_string), n))
            .collect()
    }));
    if let Some(addr) = config.metrics_listen {
        let bound = metrics::http::serve(addr, metrics.clone())?;
        tracing::info!(%bound, "Prometheus metrics at /metrics");
    }
    retained::start_clock();
    let mut groups = Vec::new();
    let mut sources: source::PerShard = (0..shards).map(|_| Vec::new()).collect();
    let mut node = None;
    if let Some(kafka) = &config.kafka {
        let record = kafka::record_bytes_max(config.packet_bytes_max);
        let mut conflicts = kafka::check::Report::default();
        kafka::check::conflicts(kafka, &mut conflicts);
        for finding in &conflicts.findings {
            if finding.level == kafka::check::Level::Error {
                tracing::error!(
                    "{} (the broker starts anyway; `ringmq kafka check` lists every finding)",
                    finding.text
                );
            } else {
                tracing::warn!(
                    "{} (`ringmq kafka check` lists every finding)",
                    finding.text
                );
            }
        }
        kafka::create_topics(kafka, &kafka::rules(kafka)?, record)?;
        // A cluster node consumes its downlink like a Kafka -> MQTT rule.
        let mut downlink = Vec::new();
        if let Some(c) = &config.cluster {
            let bells = mesh.doorbell_files()?;
            let started = cluster::routes::Node::start(kafka, c, record, bells)?;
            let feed = Some(started.feed.clone());
            let (facts_feed, node_id) = (started.feed.clone(), c.node_id.clone());
            metrics.set_cluster_facts(Box::new(move || metrics::cluster::Facts {
                node: node_id.clone(),
                peers: facts_feed.peers().to_vec(),
            }));
            downlink.push(kafka::to_mqtt::Route::downlink(
                &c.downlink(),
                &c.group(),
                feed,
            ));
            node = Some(started);
        }
        if !kafka.to_mqtt.is_empty() || !downlink.is_empty() {
            let bells = mesh.doorbell_files()?;
            (groups, sources) = kafka::consumer::prepare(
                kafka,
                downlink,
                &bells,
                config.topic_levels_max,
                config.packet_bytes_max,
            )?;
        }
    }
    let mut sources = sources.into_iter();
    let mut recovered = durable::recover::recover(&config)?;
    // A cluster node keeps the retained messages the cluster kept while it was away.
    if let (Some(kafka), Some(c)) = (&config.kafka, &config.cluster) {
        cluster::retained::catch_up(kafka, c, &config, &mut recovered)?;
    }
    let mut recovered = recovered.into_iter();
    // `ack = "local"` rules: the outbox reads back what Kafka has not acknowledged before any
    // shard takes a new message, so those are produced first (it locks its own directory).
    let local_rules = config
        .kafka
        .as_ref()
        .is_some_and(|k| k.to_kafka.iter().any(|r| r.ack == "local"));
    let outbox = if local_rules {
        Some(kafka::outbox::Outbox::start(
            &config,
            mesh.doorbell_files()?,
        )?)
    } else {
        None
    };
    // Brokers sharing a Redis database: the claimer and the watcher, after the start-up load.
    let owners::Started {
        shards: shared,
        threads: owner_threads,
    } = if config.redis_shared {
        owners::start(&config, mesh.doorbell_files()?, stop.clone())?
    } else {
        owners::Started {
            shards: Vec::new(),
            threads: Vec::new(),
        }
    };
    let mut shared = shared.into_iter();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    for i in 0..shards {
        let config = config.clone();
        let mesh = Mesh::new(mesh.clone(), ShardId(i as u16));
        let stop = stop.clone();
        let auth = auth.clone();
        let metrics = metrics.clone();
        let recovered = recovered
            .next()
            .unwrap_or_else(durable::recover::Recovered::memory);
        let shard_sources = sources.next().unwrap_or_default();
        let shard_shared = shared.next();
        let shard_cluster = node.as_ref().map(|n| (n.table.clone(), n.feed.clone()));
        let shard_outbox = outbox.as_ref().map(|o| o.shared.clone());
        let core = cores.get(i % cores.len().max(1)).copied();
        let ready = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("shard-{i}"))
            .spawn(move || {
                if let Some(core) = core {
                    core_affinity::set_for_current(core);
                }
                match Shard::new(
                    ShardId(i as u16),
                    config,
                    mesh,
                    stop,
                    auth,
                    metrics,
                    recovered,
                ) {
                    Ok(mut shard) => {
                        if let Err(e) = shard.add_kafka_sink(shard_outbox) {
                            let msg = e.to_string();
                            let _ = ready.send(Err(e));
                            return Err(anyhow::anyhow!(msg));
                        }
                        if let Some(shared) = shard_shared {
                            shard.share_sessions(shared);
                        }
                        for s in shard_sources {
                            shard.add_source(s);
                        }
                        if let Some((table, feed)) = shard_cluster {
                            if let Err(e) = shard.join_cluster(table, feed) {
                                let msg = e.to_string();
                                let _ = ready.send(Err(e));
                                return Err(anyhow::anyhow!(msg));
                            }
                        }
                        let _ = ready.send(Ok(()));
                        shard.run()
                    }
                    Err(e) => {
                        let msg = e.to_string();
                        let _ = ready.send(Err(e));
                        Err(anyhow::anyhow!(msg))
                    }
                }
            })?;
        threads.push(thread);
    }
    drop(ready_tx);
    let mut broker = Broker {
        stop,
        auth,
        config,
        mesh,
        threads,
        consumers: kafka::consumer::Consumers::default(),
        cluster: node,
        owner_threads,
        outbox,
    };
    for _ in 0..shards {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                broker.stop();
                return Err(e);
            }
            Err(_) => {
                broker.stop();
                anyhow::bail!("a shard thread died during start-up");
            }
        }
    }
    if let Some(node) = &broker.cluster {
        node.shards_ready();
    }
    // Records flow once every shard runs.
    match kafka::consumer::start(groups) {
        Ok(consumers) => broker.consumers = consumers,
        Err(e) => {
            broker.stop();
            return Err(e);
        }
    }
    Ok(broker)
}

impl Broker {
    /// Reads the password and ACL files again (SIGHUP). Shards take the new settings on their
    /// next tick; on an error the old ones stay. Logs one line either way.
    pub fn reload_auth(&self) {
        match self.auth.reload(&self.config) {
            Ok(change) => {
                tracing::info!("reloaded the password, ACL and TLS certificate files: {change}")
            }
            Err(e) => {
                tracing::error!("reload failed, keeping the previous password, ACL and TLS certificate files: {e:#}")
            }
        }
    }

    /// Asks every shard to close its clients and stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for bell in &self.mesh.doorbells {
            use std::os::fd::AsRawFd;
            let _ = net::uring::signal_eventfd(bell.fd.as_raw_fd());
        }
    }

    /// Waits for every shard to finish; the summed counters.
    pub fn join(self) -> anyhow::Result<shard::Stats> {
        let mut total = shard::Stats::default();
        let consumers = self.consumers;
        let mut failed = None;
        for t in self.threads {
            match t.join() {
                Ok(Ok(s)) => total.add(&s),
                Ok(Err(e)) => failed = failed.or(Some(e)),
                Err(_) => failed = failed.or(Some(anyhow::anyhow!("a shard thread panicked"))),
            }
        }
        // After the shards (even a failed one): what they reported handed on is committed.
        consumers.stop_and_join();
        if let Some(node) = self.cluster {
            node.stop_and_join();
        }
        // The shards are gone: the claimer sees its queue closed, the watcher the stop flag.
        self.stop.store(true, Ordering::SeqCst);
        for t in self.owner_threads {
            let _ = t.join();
        }
        // Everything the shards handed over is logged; Kafka gets a moment for the rest.
        if let Some(mut outbox) = self.outbox {
            outbox.stop();
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(total),
        }
    }
}
