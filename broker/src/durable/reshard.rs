//! Re-sharding a data directory at start. Sessions are homed by `hash(client id) % shards`
//! and each shard has its own log (`shard-<i>/`), so a directory written with N shards
//! cannot be read by M. Before recovery, [`prepare`] rewrites it: every old log is replayed,
//! each session (subscriptions, unacknowledged messages, in-flight and inbound QoS 2 state)
//! and each retained message is written to the log of its new home in a staging directory,
//! and the new layout replaces the old.
//!
//! Crash safety, in steps (the data directory's `lock` file is held throughout):
//! 1. `reshard.new/shard-<i>/` written and synced. A start that finds `reshard.new` without
//!    `reshard.commit` deletes it: the old layout is untouched (roll back).
//! 2. `reshard.commit` (the new shard count) written atomically: the commit point.
//! 3. Each `shard-<i>` replaced by `reshard.new/shard-<i>`, old shards past the new count
//!    deleted, `shards` rewritten, `reshard.new` and then `reshard.commit` removed. A start
//!    that finds `reshard.commit` redoes step 3 (each part is idempotent: roll forward).
//!
//! Nothing acknowledged is lost at any point: until the commit, the old logs are the truth;
//! after it, the staged logs are complete and durable (segments, their directories and the
//! staging directory synced before the commit file is written).
//!
//! Memory: the whole durable state is held twice during a re-shard (the old logs' replayed
//! states, from which each session is written, and the staged logs' states); retained
//! messages a third time (merged across the old logs).

use std::collections::hash_map::Entry;
use std::path::Path;
use std::time::Instant;

use anyhow::Context;
use storage::embedded::log::{Log, LogConfig};
use storage::record::Record;
use storage::state::State;

use crate::ids::home_shard;

const STAGING: &str = "reshard.new";
const COMMIT: &str = "reshard.commit";
const COUNT: &str = "shards";
/// Bytes appended to a staged log between two commits.
const BATCH_BYTES: u64 = 8 << 20;

/// Makes `dir` a layout of `shards` shards: finishes or rolls back an interrupted re-shard,
/// records the count of a new directory, re-shards one written with another count.
pub fn prepare(dir: &Path, shards: usize) -> anyhow::Result<()> {
    let Some(lock) =
        storage::dir::try_lock(dir).with_context(|| dir.join("lock").display().to_string())?
    else {
        anyhow::bail!("{}: locked by another broker", dir.display())
    };
    if let Some(to) = read_count(&dir.join(COMMIT))? {
        tracing::warn!(dir = %dir.display(), shards = to, "finishing an interrupted re-shard");
        finish(dir, to)?;
    } else if dir.join(STAGING).exists() {
        tracing::warn!(dir = %dir.display(), "rolling back an interrupted re-shard");
        std::fs::remove_dir_all(dir.join(STAGING))?;
    }
    match read_count(&dir.join(COUNT))? {
        Some(n) if n == shards => {}
        Some(n) => reshard(dir, n, shards)?,
        None => write_atomic(dir, COUNT, shards)?,
    }
    // Held until the process exits: no other broker may re-shard the directory under this
    // one between here and the shard logs' own locks.
    std::mem::forget(lock);
    Ok(())
}

/// The shard count in `path`, if the file exists.
fn read_count(path: &Path) -> anyhow::Result<Option<usize>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let n: usize = text
                .trim()
                .parse()
                .with_context(|| format!("{}: not a shard count: {text:?}", path.display()))?;
            anyhow::ensure!(n > 0, "{}: shard count 0", path.display());
            Ok(Some(n))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| path.display().to_string()),
    }
}

fn reshard(dir: &Path, from: usize, to: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    tracing::info!(dir = %dir.display(), from, to, "re-sharding the data directory");
    // Every old log, replayed (and kept open, so locked, until the new layout is in place).
    let mut old = Vec::with_capacity(from);
    // Which log each session is taken from (its records are written from that log's state,
    // whose bodies its messages refer to), and the newest version of each retained message.
    let mut chosen: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut all = State::default();
    for i in 0..from {
        let (log, _) = Log::open(LogConfig::new(dir.join(format!("shard-{i}"))))?;
        let state = log.state();
        for client in state.sessions.keys() {
            // A client id in two logs (a session left on another shard than its home, as
            // older versions assigned ids): the copy on its home shard is the live one.
            let home = home_shard(client.as_bytes(), from).0 as usize == i;
            match chosen.entry(client.clone()) {
                Entry::Vacant(e) => {
                    e.insert(i);
                }
                Entry::Occupied(mut e) => {
                    tracing::warn!(
                        client,
                        shard = i,
                        "client id in two shards' logs: keeping its home shard's session"
                    );
                    if home {
                        e.insert(i);
                    }
                }
            }
        }
        for (topic, (message, version)) in &state.retained {
            if all
                .retained
                .get(topic)
                .is_none_or(|(_, have)| have < version)
            {
                all.retained
                    .insert(topic.clone(), (message.clone(), *version));
            }
        }
        old.push(log);
    }
    let staging = dir.join(STAGING);
    let mut logs = (0..to)
        .map(|i| Log::open(LogConfig::new(staging.join(format!("shard-{i}")))).map(|(log, _)| log))
        .collect::<Result<Vec<_>, _>>()?;
    let mut records = Vec::new();
    let mut write = |home: usize, records: &mut Vec<Record>| -> anyhow::Result<()> {
        let log = logs.get_mut(home).context("home shard out of range")?;
        for r in records.drain(..) {
            log.append(&r)?;
        }
        if log.pending() >= BATCH_BYTES {
            log.commit()?;
        }
        Ok(())
    };
    let (mut sessions, mut messages) = (0, 0);
    for (i, log) in old.iter().enumerate() {
        let state = log.state();
        for (client, session) in &state.sessions {
            if chosen.get(client) != Some(&i) {
                continue;
            }
            sessions += 1;
            messages += session.messages.len();
            state.session_records(client, &mut records);
            write(home_shard(client.as_bytes(), to).0 as usize, &mut records)?;
        }
    }
    for topic in all.retained.keys() {
        all.retained_record(topic, &mut records);
        write(home_shard(topic.as_bytes(), to).0 as usize, &mut records)?;
    }
    for log in &mut logs {
        log.commit()?;
    }
    drop(logs);
    for i in 0..to {
        sync_dir(&staging.join(format!("shard-{i}")))?;
    }
    sync_dir(&staging)?;
    crash_point("staged");
    write_atomic(dir, COMMIT, to)?;
    crash_point("committed");
    finish(dir, to)?;
    drop(old);
    tracing::info!(
        dir = %dir.display(),
        from,
        to,
        sessions,
        messages,
        retained = all.retained.len(),
        ms = started.elapsed().as_millis() as u64,
        "re-sharded the data directory"
    );
    Ok(())
}

/// Step 3: the staged logs replace the old ones (idempotent).
fn finish(dir: &Path, to: usize) -> anyhow::Result<()> {
    let staging = dir.join(STAGING);
    for i in 0..to {
        let new = staging.join(format!("shard-{i}"));
        if new.exists() {
            let old = dir.join(format!("shard-{i}"));
            if old.exists() {
                std::fs::remove_dir_all(&old).with_context(|| old.display().to_string())?;
            }
            std::fs::rename(&new, &old).with_context(|| new.display().to_string())?;
            sync_dir(dir)?;
            crash_point("moved");
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let index = name
            .to_str()
            .and_then(|n| n.strip_prefix("shard-"))
            .and_then(|n| n.parse::<usize>().ok());
        if index.is_some_and(|i| i >= to) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    write_atomic(dir, COUNT, to)?;
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::remove_file(dir.join(COMMIT)).or_else(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Ok(())
        } else {
            Err(e)
        }
    })?;
    sync_dir(dir)
}

/// Writes `name` in `dir` as a whole or not at all (temporary file, sync, rename, sync).
fn write_atomic(dir: &Path, name: &str, count: usize) -> anyhow::Result<()> {
    use std::io::Write;
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).with_context(|| tmp.display().to_string())?;
    writeln!(f, "{count}")?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    storage::dir::sync(dir).with_context(|| dir.display().to_string())
}

/// Test hook: `RINGMQ_RESHARD_CRASH_AT=<point>` aborts the process there (as a kill would),
/// so tests can check that the next start completes or rolls back the re-shard.
fn crash_point(point: &str) {
    if std::env::var("RINGMQ_RESHARD_CRASH_AT").is_ok_and(|p| p == point) {
        eprintln!("RINGMQ_RESHARD_CRASH_AT={point}: aborting");
        std::process::abort();
    }
}
