//! Start-up recovery with the Redis store: every session (with `redis_shared`, every session
//! this broker owns, with its epoch) and retained message loaded from
//! Redis (retrying an unreachable Redis for `redis_start_wait_secs`), each session given to
//! its client's home shard and each retained message to its topic's owner, and one Redis
//! connection opened per shard for its store.

use std::time::{Duration, Instant};

use storage::redis::cluster::Topology;
use storage::redis::load::{self, Loaded};
use storage::redis::RedisStore;
use storage::state::State;
use storage::store::Store;

use super::recover::{assemble, Recovered, Retained};
use crate::config::Config;

/// Loads everything from Redis and prepares what each shard starts from.
pub fn recover(config: &Config) -> anyhow::Result<Vec<Recovered>> {
    let shards = config.shards;
    let redis = config
        .redis()
        .map_err(|e| anyhow::anyhow!("config key `redis_url`: {e}"))?;
    let started = Instant::now();
    let wait = Duration::from_secs(config.redis_start_wait_secs);
    let mut said = false;
    // Where the data is (one Redis, or a cluster's masters), then one broker per database
    // (with `redis_shared`: one process per broker id): wait for a live holder of the lock,
    // take a dead one's; then load (with `redis_shared`, the sessions this broker owns; it
    // claims the others' on CONNECT). An unreachable Redis is retried meanwhile.
    let shared = config
        .redis_shared
        .then_some(config.redis_broker_id.as_str());
    let lock = storage::redis::lock::value();
    let lock_name = String::from_utf8_lossy(&redis.lock_key).into_owned();
    let (what, rule) = if shared.is_some() {
        ("uses this broker id", "one process per `redis_broker_id`")
    } else {
        ("holds this Redis database", "one broker per Redis database")
    };
    let mut holder_said = false;
    let (topology, loaded): (Topology, Loaded) = loop {
        let attempt = load::topology(&redis).and_then(|topology| {
            Ok(match load::lock(&redis, &topology, &lock)? {
                None => Ok((load::load(&redis, &topology, shared)?, topology)),
                Some(holder) => Err(holder),
            })
        });
        match attempt {
            Ok(Ok((loaded, topology))) => break (topology, loaded),
            Ok(Err(holder)) if started.elapsed() < wait => {
                if !holder_said && !holder.is_empty() {
                    tracing::warn!(url = %redis.url, %holder, lock = %lock_name, wait_secs = config.redis_start_wait_secs, "another ringmq broker {what}; waiting");
                    holder_said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Ok(Err(holder)) => anyhow::bail!(
                "another ringmq broker ({holder}) uses the Redis store at {} (key {lock_name}): {rule} (waited {} s, `redis_start_wait_secs`)",
                redis.url,
                config.redis_start_wait_secs
            ),
            Err(e) if started.elapsed() < wait => {
                if !said {
                    tracing::warn!(url = %redis.url, error = %e, wait_secs = config.redis_start_wait_secs, "Redis unreachable at start; retrying");
                    said = true;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => anyhow::bail!(
                "the Redis store at {} is unreachable: {e} (retried for {} s, `redis_start_wait_secs`)",
                redis.url,
                config.redis_start_wait_secs
            ),
        }
    };
    tracing::info!(
        url = %redis.url,
        sessions = loaded.sessions.len(),
        retained = loaded.retained.len(),
        masters = topology.nodes.len(),
        skipped = loaded.skipped,
        millis = started.elapsed().as_millis() as u64,
        "sessions loaded from Redis"
    );
    let now = Instant::now();
    let mut states: Vec<State> = (0..shards).map(|_| State::default()).collect();
    let mut epochs: Vec<Vec<(String, u64)>> = (0..shards).map(|_| Vec::new()).collect();
    let mut stores: Vec<RedisStore> = (0..shards)
        .map(|_| RedisStore::new(redis.clone(), topology.clone(), lock.clone(), now))
        .collect();
    for session in loaded.sessions {
        let home = crate::ids::home_shard(session.client.as_bytes(), shards).index();
        let (Some(state), Some(store)) = (states.get_mut(home), stores.get_mut(home)) else {
            continue;
        };
        for record in &session.records {
            state.apply(record);
        }
        if session.qos2 {
            store.loaded_qos2(&session.client);
        }
        if let Some(broker) = shared {
            store.session_owned(&session.client, broker, session.epoch);
            if let Some(e) = epochs.get_mut(home) {
                e.push((session.client.clone(), session.epoch));
            }
        }
        // Offline from now until its client connects: its keys expire with it.
        if session.expiry != u32::MAX {
            store.session_offline(&session.client, session.expiry);
        }
    }
    let mut retained: Vec<Vec<Retained>> = (0..shards).map(|_| Vec::new()).collect();
    let mut retain_version = 0;
    for (message, version) in loaded.retained {
        retain_version = retain_version.max(version);
        let owner = crate::retained::owner(&message.topic, shards).index();
        if let Some(r) = retained.get_mut(owner) {
            r.push((message, version));
        }
    }
    let parts = stores
        .into_iter()
        .zip(states)
        .zip(retained)
        .map(|((store, state), retained)| {
            (Box::new(store) as Box<dyn Store + Send>, state, retained)
        })
        .collect();
    let mut recovered = assemble(parts, retain_version);
    for (r, e) in recovered.iter_mut().zip(epochs) {
        r.epochs = e;
    }
    Ok(recovered)
}
