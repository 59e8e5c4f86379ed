//! One broker per Redis database: the `ringmq:lock` key names the broker that writes there
//! (host, pid, start time), with a short TTL every shard's store renews (taking it again if it
//! expired meanwhile). A second broker waits for it (`redis_start_wait_secs`) and then
//! refuses to start; a lock left by a broker of this host that is gone (SIGKILL) is taken at
//! once. A store that finds the lock held by another broker (which could take it during an
//! outage longer than the TTL) stops writing for good: it is *fenced*, durable publishes are
//! refused, and the log says to restart it.

use super::load::Client;
use super::resp::{self, Reply};

/// The lock key.
pub const KEY: &[u8] = b"ringmq:lock";

/// With several brokers on the database (`redis_shared`): the lock of broker id `broker`
/// (one process per broker id).
pub fn key_of(broker: &str) -> Vec<u8> {
    [KEY, b":", broker.as_bytes()].concat()
}
/// Its TTL; each store renews it every [`RENEW_EVERY_MS`].
pub const TTL_MS: u64 = 5000;
/// How often a store renews the lock.
pub const RENEW_EVERY_MS: u64 = 1000;
/// Marks the error a renewal gets once another broker holds the lock.
pub const LOST: &str = "RINGMQ-LOCK-LOST";

/// Renews the lock if it is still `ARGV[1]`'s, takes it again if it expired (an outage, a
/// long start-up load, a Redis restarted without persistence), else fails with [`LOST`].
pub const RENEW: &[u8] = b"local v = redis.call('get', KEYS[1]) \
if v == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end \
if not v then return redis.call('set', KEYS[1], ARGV[1], 'PX', ARGV[2]) end \
return redis.error_reply('RINGMQ-LOCK-LOST another broker holds ringmq:lock')";

/// Takes the lock if it is still `ARGV[1]` (a stale holder), for `ARGV[3]` ms.
const STEAL: &[u8] = b"if redis.call('get', KEYS[1]) == ARGV[1] then \
return redis.call('set', KEYS[1], ARGV[2], 'PX', ARGV[3]) end return false";

/// This broker's lock value: host, pid, start time.
pub fn value() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{host} {} {nanos}", std::process::id())
}

/// A holder on this host whose process is gone.
fn stale(holder: &str) -> bool {
    let mut parts = holder.split(' ');
    let (Some(host), Some(pid)) = (parts.next(), parts.next()) else {
        return false;
    };
    let ours = value();
    let our_host = ours.split(' ').next().unwrap_or_default();
    host == our_host
        && pid.parse::<u32>().is_ok_and(|pid| {
            pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        })
}

/// Tries to take the lock with `value`: `Ok(None)` when taken, `Ok(Some(holder))` when
/// another live broker holds it.
/// The lock's key is `key` ([`KEY`], or a shared database's per-broker key: [`key_of`]).
pub(super) fn acquire(
    client: &mut Client,
    key: &[u8],
    value: &str,
) -> std::io::Result<Option<String>> {
    let ttl = TTL_MS.to_string();
    let set = resp::command(&[b"SET", key, value.as_bytes(), b"NX", b"PX", ttl.as_bytes()]);
    if matches!(client.pipeline(&[set])?.pop(), Some(Reply::Status(_))) {
        return Ok(None);
    }
    let holder = match client.pipeline(&[resp::command(&[b"GET", key])])?.pop() {
        Some(Reply::Bulk(Some(h))) => String::from_utf8_lossy(&h).into_owned(),
        // Expired meanwhile: try again.
        _ => return Ok(Some(String::new())),
    };
    if holder == value {
        // Ours already (a retried start).
        return Ok(None);
    }
    if stale(&holder) {
        let steal = resp::command(&[
            b"EVAL",
            STEAL,
            b"1",
            key,
            holder.as_bytes(),
            value.as_bytes(),
            ttl.as_bytes(),
        ]);
        if matches!(client.pipeline(&[steal])?.pop(), Some(Reply::Status(_))) {
            tracing::warn!(%holder, "took the Redis lock of a broker of this host that is gone");
            return Ok(None);
        }
    }
    Ok(Some(holder))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_gone_process_of_this_host_is_stale() {
        let ours = value();
        let host = ours.split(' ').next().unwrap();
        assert!(!stale(&ours), "this process is alive");
        assert!(stale(&format!("{host} 4000000000 1")));
        assert!(!stale("another-host 4000000000 1"));
        assert!(!stale("garbage"));
    }
}
