//! ringmq broker: config, shards, sessions, routing and the QoS flows.
//!
//! # Layout
//! - [`config`]: the TOML file and CLI flags, validated at start.
//! - [`shard`]: one shard per core, its io_uring loop, its connections, and the mesh of SPSC
//!   queues to its peers.
//! - [`session`]: the sans-IO session state machine (inflight window, packet ids, queue).
//! - [`router`]: the topic tree, the replicated route table and shared-subscription groups.
//! - [`retained`]: the retained-message replica of each shard.
//! - [`auth`]: anonymous access, the password file and the ACL.
//! - [`metrics`]: counters, the latency histogram, `$SYS` topics and `/metrics`.
//! - [`handle`]: one file per packet kind.
//! - [`ids`]: identifier newtypes and the home-shard hash.
//! - [`broker`](crate::run): starting the shards and stopping them on a signal.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod handle;
pub mod ids;
pub mod metrics;
pub mod retained;
pub mod router;
pub mod session;
pub mod shard;

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
    mesh: Arc<MeshShared>,
    threads: Vec<std::thread::JoinHandle<anyhow::Result<shard::Stats>>>,
}

/// Opens every shard's log (sync and batch modes), replays it, and prepares what each shard
/// starts from: its sessions, the retained messages merged from all logs, and its peers'
/// recovered routes. Refuses a data directory written with another shard count (sessions are
/// homed by `hash(client id) % shards`).
fn recover(config: &Config) -> anyhow::Result<Vec<Option<shard::Recovered>>> {
    let shards = config.shards;
    if config.durability == config::Durability::Memory {
        return Ok((0..shards).map(|_| None).collect());
    }
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("config key `data_dir`: {}: {e}", dir.display()))?;
    let meta = dir.join("shards");
    match std::fs::read_to_string(&meta) {
        Ok(text) => {
            let written: usize = text.trim().parse().unwrap_or(0);
            if written != shards {
                anyhow::bail!(
                    "{} was written by a broker with {written} shards; start with --shards {written} (sessions are homed by shard)",
                    dir.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&meta, format!("{shards}\n"))
                .map_err(|e| anyhow::anyhow!("{}: {e}", meta.display()))?;
        }
        Err(e) => anyhow::bail!("{}: {e}", meta.display()),
    }
    let mut opened = Vec::with_capacity(shards);
    for i in 0..shards {
        let (log, recovery) =
            storage::log::Log::open(storage::log::LogConfig::new(dir.join(format!("shard-{i}"))))?;
        if let Some((path, offset)) = &recovery.truncated {
            tracing::warn!(path = %path.display(), offset, "torn tail of the log truncated to the last valid record");
        }
        tracing::info!(
            shard = i,
            records = recovery.records,
            segments = recovery.segments,
            "log replayed"
        );
        let state = log.state().clone();
        opened.push((log, state));
    }
    let mut retained: std::collections::BTreeMap<String, (storage::record::StoredMessage, u64)> =
        std::collections::BTreeMap::new();
    for (_, state) in &opened {
        for (topic, (m, v)) in &state.retained {
            if retained.get(topic).is_none_or(|(_, have)| have < v) {
                retained.insert(topic.clone(), (m.clone(), *v));
            }
        }
    }
    let retained: Vec<_> = retained.into_values().collect();
    let filters: Vec<Vec<String>> = opened
        .iter()
        .map(|(_, state)| {
            let mut f: Vec<String> = state
                .sessions
                .values()
                .flat_map(|s| s.subscriptions.keys().cloned())
                .collect();
            f.sort();
            f.dedup();
            f
        })
        .collect();
    Ok(opened
        .into_iter()
        .enumerate()
        .map(|(i, (log, state))| {
            let remote_routes = filters
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(j, fs)| fs.iter().map(move |f| (f.clone(), ShardId(j as u16))))
                .collect();
            Some(shard::Recovered {
                log,
                state,
                retained: retained.clone(),
                remote_routes,
            })
        })
        .collect())
}

/// Starts one pinned shard thread per configured shard (after recovering the logs); returns
/// once every shard listens.
pub fn run(config: Config) -> anyhow::Result<Broker> {
    let shards = config.shards;
    let mesh = MeshShared::new(
        shards,
        config.peer_queue_count_max,
        config.peer_queue_bytes_max,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let auth = Arc::new(auth::Auth::load(&config)?);
    let metrics = Arc::new(metrics::Metrics::new(shards));
    if let Some(addr) = config.metrics_listen {
        let bound = metrics::http::serve(addr, metrics.clone())?;
        tracing::info!(%bound, "Prometheus metrics at /metrics");
    }
    retained::start_clock();
    let mut recovered = recover(&config)?.into_iter();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut threads = Vec::with_capacity(shards);
    for i in 0..shards {
        let config = config.clone();
        let mesh = Mesh::new(mesh.clone(), ShardId(i as u16));
        let stop = stop.clone();
        let auth = auth.clone();
        let metrics = metrics.clone();
        let recovered = recovered.next().flatten();
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
                    Ok(shard) => {
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
    let broker = Broker {
        stop,
        mesh,
        threads,
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
    Ok(broker)
}

impl Broker {
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
        for t in self.threads {
            let s = t
                .join()
                .map_err(|_| anyhow::anyhow!("a shard thread panicked"))??;
            total.publishes_in += s.publishes_in;
            total.publishes_out += s.publishes_out;
            total.forwarded += s.forwarded;
            total.dropped += s.dropped;
            total.accepted += s.accepted;
            total.protocol_errors += s.protocol_errors;
            total.bytes_in += s.bytes_in;
            total.bytes_out += s.bytes_out;
            total.auth_denied += s.auth_denied;
        }
        Ok(total)
    }
}
