//! The broker's configuration: one TOML file (`--config FILE`), every key also a CLI flag
//! (flags win), validated at start with an error naming the bad key. Each shard gets its own
//! read-only copy.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

/// How acknowledged messages are kept (see ARCHITECTURE.md, "Durability contract").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// PUBACK / PUBREC only once the records are on disk (write + fdatasync, group commit).
    #[default]
    Sync,
    /// Acknowledge at once; write and fdatasync every `fsync_interval_ms`.
    Batch,
    /// No disk: sessions live in memory only.
    Memory,
}

/// Every setting, with its documented default (see README, "Configuration").
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address every shard listens on (SO_REUSEPORT). Default 127.0.0.1:1883.
    pub listen: SocketAddr,
    /// Shards (threads, one per core). 0 means one per available core. At most 64.
    pub shards: usize,
    /// Largest packet accepted from a client, fixed header included. Default 1 MiB.
    pub packet_bytes_max: usize,
    /// Outbound QoS 1/2 messages in flight per session when the client sets no receive
    /// maximum, and the receive maximum announced to MQTT 5 clients. Default 1000.
    pub inflight_count_max: u16,
    /// Messages queued per session (offline, or beyond the inflight window). Default 10,000.
    /// When offline the oldest is dropped (counted); when connected the client is
    /// disconnected for not keeping up.
    pub session_queue_count_max: usize,
    /// Topic and payload bytes queued per session, with the same policy. Default 64 MiB.
    pub session_queue_bytes_max: usize,
    /// Encoded bytes waiting to be written per connection; QoS 0 messages past it are
    /// dropped (counted). Default 4 MiB.
    pub outbox_bytes_max: usize,
    /// A connection that has not sent CONNECT within this many milliseconds is closed.
    /// Default 10,000.
    pub connect_timeout_ms: u64,
    /// Connections per shard; further accepts are closed at once. Default 10,000.
    pub connections_per_shard_max: usize,
    /// Capacity, in messages, of each shard-to-shard queue. Default 65,536.
    pub peer_queue_count_max: usize,
    /// Payload and topic bytes one shard-to-shard queue may hold. Default 16 MiB.
    pub peer_queue_bytes_max: usize,
    /// Messages taken from all peer queues per loop pass. Default 4096.
    pub peer_drain_count_max: usize,
    /// Provided receive buffers per shard (a power of two). Default 1024.
    pub recv_buffer_count: u16,
    /// Bytes per receive buffer. Default 16 KiB.
    pub recv_buffer_bytes: u32,
    /// A shard's loop waits for this many completions (or `wait_timeout_us`) before
    /// running a pass: more than 1 trades up to `wait_timeout_us` of latency for fewer
    /// wake-ups at moderate load. Default 1 (wake on every completion).
    pub wait_completions_min: u32,
    /// The most a loop pass waits for `wait_completions_min` completions, in microseconds.
    /// Default 100; used only when `wait_completions_min` > 1.
    pub wait_timeout_us: u64,
    /// Log filter (tracing EnvFilter syntax); RUST_LOG overrides it. Default "info".
    pub log: String,
    /// Highest QoS the broker accepts and grants (0, 1 or 2), announced to MQTT 5 clients.
    /// A PUBLISH above it is refused (0x9B); subscriptions are granted at most this.
    /// Default 2.
    pub qos_max: u8,
    /// Retained messages are stored and announced as available. When false, a PUBLISH with
    /// RETAIN is refused (0x9A). Default true.
    pub retain_available: bool,
    /// Retained messages kept (per shard replica). Past it, new retained topics are not
    /// stored (counted, logged at debug). Default 100,000.
    pub retained_count_max: usize,
    /// Topic and payload bytes of retained messages kept. Default 256 MiB.
    pub retained_bytes_max: usize,
    /// Topic aliases a client may use towards the broker (announced as topic alias maximum).
    /// 0 disables them. Default 64.
    pub topic_alias_max: u16,
    /// Longest keep alive, in seconds, a client may ask for. An MQTT 5 client asking for
    /// more (or for 0) is told this value (server keep alive); an MQTT 3 client asking for
    /// more is refused (identifier rejected), as Mosquitto does. Default 65,535 (no limit).
    pub keep_alive_max_secs: u16,
    /// Levels (`/`-separated parts) in a topic name or filter. Default 128.
    pub topic_levels_max: usize,
    /// Subscriptions per session; past it a subscription is refused (0x97 quota exceeded).
    /// Default 10,000.
    pub subscriptions_per_session_max: usize,
    /// PUBLISH packets per second one client may send (a token bucket holding one second's
    /// worth). A client over it is disconnected (0x96 message rate too high). 0 = no limit.
    /// Default 0.
    pub publish_rate_max: u32,
    /// Clients without a user name are allowed. Default true.
    pub allow_anonymous: bool,
    /// Password file (`user:$argon2id$...` lines, written by `ringmq passwd`). When set,
    /// a client giving a user name must give its password. Default none.
    pub password_file: Option<PathBuf>,
    /// ACL file (see README, "Auth and ACL"). When set, publish and subscribe are denied
    /// unless a rule allows them. Default none.
    pub acl_file: Option<PathBuf>,
    /// Seconds between `$SYS/broker/...` publishes. 0 = off. Default 10.
    pub sys_interval_secs: u64,
    /// Address of the Prometheus `/metrics` HTTP endpoint. Default none (off).
    pub metrics_listen: Option<SocketAddr>,
    /// Durability mode: sync, batch or memory. Default sync.
    pub durability: Durability,
    /// Directory of the embedded log (one subdirectory per shard). Default `./data`.
    pub data_dir: PathBuf,
    /// In batch mode, the longest time between fdatasyncs (the loss window). Default 100.
    pub fsync_interval_ms: u64,
    /// Background compaction budget: bytes of live records rewritten per second per shard.
    /// Default 16 MiB.
    pub compaction_bytes_per_second: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 1883)),
            shards: 0,
            packet_bytes_max: 1 << 20,
            inflight_count_max: 1000,
            session_queue_count_max: 10_000,
            session_queue_bytes_max: 64 << 20,
            outbox_bytes_max: 4 << 20,
            connect_timeout_ms: 10_000,
            connections_per_shard_max: 10_000,
            peer_queue_count_max: 65_536,
            peer_queue_bytes_max: 16 << 20,
            peer_drain_count_max: 4096,
            recv_buffer_count: 1024,
            recv_buffer_bytes: 16 * 1024,
            wait_completions_min: 1,
            wait_timeout_us: 100,
            log: "info".into(),
            qos_max: 2,
            retain_available: true,
            retained_count_max: 100_000,
            retained_bytes_max: 256 << 20,
            topic_alias_max: 64,
            keep_alive_max_secs: u16::MAX,
            topic_levels_max: 128,
            subscriptions_per_session_max: 10_000,
            publish_rate_max: 0,
            allow_anonymous: true,
            password_file: None,
            acl_file: None,
            sys_interval_secs: 10,
            metrics_listen: None,
            durability: Durability::Sync,
            data_dir: PathBuf::from("./data"),
            fsync_interval_ms: 100,
            compaction_bytes_per_second: 16 << 20,
        }
    }
}

/// A configuration value that is out of range; names the key.
#[derive(Debug, thiserror::Error)]
#[error("config key `{key}`: {problem}")]
pub struct ConfigError {
    /// The offending key.
    pub key: &'static str,
    /// What is wrong with it.
    pub problem: String,
}

fn bad(key: &'static str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        problem: problem.into(),
    }
}

/// Shards are numbered by a u64 bit mask in the route table.
pub const SHARDS_MAX: usize = 64;

impl Config {
    /// Reads a TOML file; unknown keys are errors.
    pub fn from_file(path: &PathBuf) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    /// Resolves `shards = 0` and checks every range.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        if self.shards == 0 {
            self.shards = std::thread::available_parallelism().map_or(1, |n| n.get());
        }
        self.shards = self.shards.min(SHARDS_MAX);
        if self.packet_bytes_max < 64 || self.packet_bytes_max > net::limits::PACKET_BYTES_MAX {
            return Err(bad("packet_bytes_max", "must be between 64 and 268435460"));
        }
        if self.inflight_count_max == 0 {
            return Err(bad("inflight_count_max", "must be at least 1"));
        }
        if self.session_queue_count_max == 0 {
            return Err(bad("session_queue_count_max", "must be at least 1"));
        }
        if self.session_queue_bytes_max < 1024 {
            return Err(bad("session_queue_bytes_max", "must be at least 1024"));
        }
        if self.outbox_bytes_max < 1024 {
            return Err(bad("outbox_bytes_max", "must be at least 1024"));
        }
        if self.connect_timeout_ms == 0 {
            return Err(bad("connect_timeout_ms", "must be at least 1"));
        }
        if self.connections_per_shard_max == 0 || self.connections_per_shard_max > 1 << 24 {
            return Err(bad(
                "connections_per_shard_max",
                "must be between 1 and 16777216",
            ));
        }
        if self.peer_queue_count_max < 16 {
            return Err(bad("peer_queue_count_max", "must be at least 16"));
        }
        if self.peer_queue_bytes_max < 64 * 1024 {
            return Err(bad("peer_queue_bytes_max", "must be at least 65536"));
        }
        if self.peer_drain_count_max == 0 {
            return Err(bad("peer_drain_count_max", "must be at least 1"));
        }
        if !self.recv_buffer_count.is_power_of_two() || self.recv_buffer_count > 32_768 {
            return Err(bad(
                "recv_buffer_count",
                "must be a power of two, at most 32768",
            ));
        }
        if self.recv_buffer_bytes < 512 || self.recv_buffer_bytes > 1 << 20 {
            return Err(bad("recv_buffer_bytes", "must be between 512 and 1048576"));
        }
        if self.wait_completions_min == 0 || self.wait_completions_min > 4096 {
            return Err(bad("wait_completions_min", "must be between 1 and 4096"));
        }
        if self.wait_timeout_us == 0 || self.wait_timeout_us > 1_000_000 {
            return Err(bad("wait_timeout_us", "must be between 1 and 1000000"));
        }
        if self.compaction_bytes_per_second < 4096 {
            return Err(bad("compaction_bytes_per_second", "must be at least 4096"));
        }
        if self.fsync_interval_ms == 0 || self.fsync_interval_ms > 60_000 {
            return Err(bad("fsync_interval_ms", "must be between 1 and 60000"));
        }
        if self.qos_max > 2 {
            return Err(bad("qos_max", "must be 0, 1 or 2"));
        }
        if self.keep_alive_max_secs == 0 {
            return Err(bad("keep_alive_max_secs", "must be at least 1"));
        }
        if self.topic_levels_max == 0 {
            return Err(bad("topic_levels_max", "must be at least 1"));
        }
        if self.subscriptions_per_session_max == 0 {
            return Err(bad("subscriptions_per_session_max", "must be at least 1"));
        }
        Ok(self)
    }

    /// The configured maximum QoS.
    pub fn max_qos(&self) -> net::codec::QoS {
        match self.qos_max {
            0 => net::codec::QoS::AtMostOnce,
            1 => net::codec::QoS::AtLeastOnce,
            _ => net::codec::QoS::ExactlyOnce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_errors_name_the_key() {
        let c = Config::default().validate().unwrap();
        assert!(c.shards >= 1);
        let e = Config {
            recv_buffer_count: 1000,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert_eq!(e.key, "recv_buffer_count");
        let e = Config {
            packet_bytes_max: 1,
            ..Config::default()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("packet_bytes_max"));
    }

    #[test]
    fn toml_rejects_unknown_keys() {
        let c: Config = toml::from_str("listen = \"127.0.0.1:1999\"\nshards = 2").unwrap();
        assert_eq!((c.listen.port(), c.shards), (1999, 2));
        assert!(toml::from_str::<Config>("no_such_key = 1").is_err());
    }
}
