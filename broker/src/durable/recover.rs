//! Start-up recovery: every shard's store opened and replayed before any connection is
//! accepted, retained messages merged across shards (newest version per topic) and given to
//! the shard that owns each topic, and each
//! shard told which routes its peers' recovered sessions hold.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use storage::embedded::log::{Log, LogConfig};
use storage::embedded::EmbeddedStore;
use storage::record::{Record, StoredMessage};
use storage::state::State;
use storage::store::{MemoryStore, Store};

use crate::config::{Config, Durability, StoreKind};
use crate::ids::ShardId;

/// What a shard starts from: its store, the state replayed from it, the retained messages it
/// owns (merged from every shard's store), and the routes of the peers' recovered sessions.
#[derive(Debug)]
pub struct Recovered {
    /// The shard's store, replayed.
    pub store: Box<dyn Store + Send>,
    /// The durable state of this shard's sessions (None: nothing kept, memory).
    pub state: Option<State>,
    /// The retained messages of the topics this shard owns, newest version of each.
    pub retained: Vec<(StoredMessage, u64)>,
    /// The highest retained version in any log: every shard versions its sets above it.
    pub retain_version: u64,
    /// Retained messages (and clears) of this shard's topics that a cluster's retained topic
    /// holds (`cluster::retained::catch_up`): applied after the log's, logged when they win.
    pub cluster_retained: Vec<(crate::session::Message, u64)>,
    /// (filter, peer shard) of the peers' recovered subscriptions.
    pub remote_routes: Vec<(String, ShardId)>,
    /// With `redis_shared`: the client ids of the recovered sessions and the epochs this
    /// broker owns them under.
    pub epochs: Vec<(String, u64)>,
}

impl Recovered {
    /// A shard with the memory store: nothing to recover.
    pub fn memory() -> Self {
        Self {
            store: Box::new(MemoryStore::default()),
            state: None,
            retained: Vec::new(),
            retain_version: 0,
            cluster_retained: Vec::new(),
            remote_routes: Vec::new(),
            epochs: Vec::new(),
        }
    }
}

/// Opens every shard's log (sync and batch modes), replays it, and prepares what each shard
/// starts from: its sessions, the retained messages of the topics it owns, and its peers'
/// recovered routes. A data directory written with another shard count is re-sharded first
/// (`reshard.rs`).
pub fn recover(config: &Config) -> anyhow::Result<Vec<Recovered>> {
    let shards = config.shards;
    if config.durability == Durability::Memory {
        return Ok((0..shards).map(|_| Recovered::memory()).collect());
    }
    if config.store == StoreKind::Redis {
        return super::recover_redis::recover(config);
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
        let log_config = LogConfig {
            recycle_max: config.segments_recycled,
            segment_bytes_max: config.segment_bytes,
            compact_bytes_min: config.segment_bytes,
            ..LogConfig::new(dir.join(format!("shard-{i}")))
        };
        let (log, recovery) = Log::open(log_config)?;
        if let Some((path, offset)) = &recovery.truncated {
            tracing::warn!(path = %path.display(), offset, "torn tail of the log truncated to the last valid record");
        }
        tracing::info!(
            shard = i,
            records = recovery.records,
            segments = recovery.segments,
            "log replayed"
        );
        opened.push(log);
    }
    let retain_version = own_retained(&mut opened, shards)?;
    // Each log now holds the retained messages of the topics its shard owns, and only those:
    // they move out of the state copy the shard starts from.
    let (opened, owned): (Vec<(EmbeddedStore, State)>, Vec<Vec<Retained>>) = opened
        .into_iter()
        .map(|log| {
            let mut state = log.state().clone();
            let retained = std::mem::take(&mut state.retained).into_values().collect();
            (
                (EmbeddedStore::new(log, commit_interval, now), state),
                retained,
            )
        })
        .unzip();
    let parts = opened
        .into_iter()
        .zip(owned)
        .map(|((store, state), retained)| {
            (Box::new(store) as Box<dyn Store + Send>, state, retained)
        })
        .collect();
    Ok(assemble(parts, retain_version))
}

/// What each shard starts from, given its store, state and retained messages: adds the routes
/// of its peers' recovered subscriptions.
pub(super) fn assemble(
    parts: Vec<(Box<dyn Store + Send>, State, Vec<Retained>)>,
    retain_version: u64,
) -> Vec<Recovered> {
    let remote = remote_routes(&parts.iter().map(|(_, state, _)| state).collect::<Vec<_>>());
    parts
        .into_iter()
        .zip(remote)
        .map(|((store, state, retained), remote_routes)| Recovered {
            store,
            state: Some(state),
            retained,
            retain_version,
            cluster_retained: Vec::new(),
            remote_routes,
            epochs: Vec::new(),
        })
        .collect()
}

/// For each shard, the (filter, peer) routes of its peers' recovered subscriptions.
fn remote_routes(states: &[&State]) -> Vec<Vec<(String, ShardId)>> {
    let filters: Vec<Vec<String>> = states
        .iter()
        .map(|state| {
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
    (0..states.len())
        .map(|i| {
            filters
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .flat_map(|(j, fs)| fs.iter().map(move |f| (f.clone(), ShardId(j as u16))))
                .collect()
        })
        .collect()
}

/// A retained message as recovered, with its version.
pub(super) type Retained = (StoredMessage, u64);

/// Makes each retained message live in its owner shard's log only. A directory written when
/// every shard kept a replica has topics in logs that do not own them: the owner's log gets
/// the newest version if it lacks it (committed first), then the other logs get a clear of
/// the topic (committed), so an owner's later clear cannot be undone by an old copy and a
/// crash in between loses nothing. Returns the highest retained version in any log (every
/// shard versions its sets above it).
fn own_retained(logs: &mut [Log], shards: usize) -> anyhow::Result<u64> {
    let owner_of = |topic: &str| crate::retained::owner(topic, shards).index();
    let mut max = 0;
    let mut strays = false;
    for (i, log) in logs.iter().enumerate() {
        for (topic, (_, v)) in &log.state().retained {
            strays |= owner_of(topic) != i;
            max = max.max(*v);
        }
    }
    if !strays {
        // The usual start: nothing to move, nothing copied.
        return Ok(max);
    }
    let mut newest: BTreeMap<String, (StoredMessage, u64)> = BTreeMap::new();
    for log in logs.iter() {
        for (topic, (m, v)) in &log.state().retained {
            if newest.get(topic).is_none_or(|(_, have)| have < v) {
                newest.insert(topic.clone(), (m.clone(), *v));
            }
        }
    }
    let (mut moved, mut cleared) = (0usize, 0usize);
    for (topic, (m, v)) in &newest {
        let Some(log) = logs.get_mut(owner_of(topic)) else {
            continue;
        };
        if log
            .state()
            .retained
            .get(topic)
            .is_none_or(|(_, have)| have < v)
        {
            log.append(&Record::Retain {
                message: m.clone(),
                version: *v,
            })?;
            moved += 1;
        }
    }
    for log in logs.iter_mut() {
        log.commit()?;
    }
    for (i, log) in logs.iter_mut().enumerate() {
        let strays: Vec<String> = log
            .state()
            .retained
            .keys()
            .filter(|t| owner_of(t) != i)
            .cloned()
            .collect();
        for topic in strays {
            log.append(&Record::RetainClear {
                topic,
                version: u64::MAX,
            })?;
            cleared += 1;
        }
        log.commit()?;
    }
    tracing::info!(
        moved,
        cleared,
        "retained messages moved to the shards that own their topics"
    );
    Ok(max)
}
