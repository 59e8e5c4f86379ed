//! Start-up recovery: every shard's store opened and replayed before any connection is
//! accepted, retained messages merged across shards (newest version per topic), and each
//! shard told which routes its peers' recovered sessions hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use storage::embedded::log::LogConfig;
use storage::embedded::EmbeddedStore;
use storage::record::StoredMessage;
use storage::state::State;
use storage::store::{MemoryStore, Store};

use crate::config::{Config, Durability};
use crate::ids::ShardId;

/// What a shard starts from: its store, the state replayed from it, the retained messages
/// merged from every shard's store, and the routes of the peers' recovered sessions.
#[derive(Debug)]
pub struct Recovered {
    /// The shard's store, replayed.
    pub store: Box<dyn Store + Send>,
    /// The durable state of this shard's sessions (None: nothing kept, memory).
    pub state: Option<State>,
    /// Retained messages of all shards, newest version per topic.
    pub retained: Vec<(StoredMessage, u64)>,
    /// (filter, peer shard) of the peers' recovered subscriptions.
    pub remote_routes: Vec<(String, ShardId)>,
}

impl Recovered {
    /// A shard with the memory store: nothing to recover.
    pub fn memory() -> Self {
        Self {
            store: Box::new(MemoryStore::default()),
            state: None,
            retained: Vec::new(),
            remote_routes: Vec::new(),
        }
    }
}

/// Opens every shard's log (sync and batch modes), replays it, and prepares what each shard
/// starts from: its sessions, the retained messages merged from all logs, and its peers'
/// recovered routes. A data directory written with another shard count is re-sharded first
/// (`reshard.rs`).
pub fn recover(config: &Config) -> anyhow::Result<Vec<Recovered>> {
    let shards = config.shards;
    if config.durability == Durability::Memory {
        return Ok((0..shards).map(|_| Recovered::memory()).collect());
    }
    let commit_interval = match config.durability {
        Durability::Batch => Duration::from_millis(config.fsync_interval_ms),
        _ => Duration::ZERO,
    };
    let now = Instant::now();
    let dir = &config.data_dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("config key `data_dir`: {}: {e}", dir.display()))?;
    super::reshard::prepare(dir, shards)?;
    let mut opened = Vec::with_capacity(shards);
    for i in 0..shards {
        let (store, recovery, state) = EmbeddedStore::open(
            LogConfig::new(dir.join(format!("shard-{i}"))),
            commit_interval,
            now,
        )?;
        if let Some((path, offset)) = &recovery.truncated {
            tracing::warn!(path = %path.display(), offset, "torn tail of the log truncated to the last valid record");
        }
        tracing::info!(
            shard = i,
            records = recovery.records,
            segments = recovery.segments,
            "log replayed"
        );
        opened.push((store, state));
    }
    let mut retained: BTreeMap<String, (StoredMessage, u64)> = BTreeMap::new();
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
        .map(|(i, (store, state))| {
            let remote_routes = filters
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(j, fs)| fs.iter().map(move |f| (f.clone(), ShardId(j as u16))))
                .collect();
            Recovered {
                store: Box::new(store),
                state: Some(state),
                retained: retained.clone(),
                remote_routes,
            }
        })
        .collect())
}
