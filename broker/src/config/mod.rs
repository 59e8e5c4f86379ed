//! The broker's configuration: one TOML file (`--config FILE`), every key also a CLI flag
//! (flags win), validated at start with an error naming the bad key. Each shard gets its own
//! read-only copy.
//!
//! Every key is listed once, in the `config_keys!` invocation below (name, type, default, and
//! the README's default and meaning text). It generates [`Config`], its `Default`, the flags
//! ([`ConfigFlags`]) and the documentation table [`KEYS`]; a test checks the README's
//! "Configuration" table against [`KEYS`].

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

/// Where persistent sessions, their messages and retained messages are kept.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// The embedded log in `data_dir` (one per shard).
    #[default]
    Embedded,
    /// Redis at `redis_url` (see ARCHITECTURE.md, "The Redis store").
    Redis,
}

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event (colours only when stderr is a terminal).
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// What an MQTT 5 QoS 0 PUBLISH the AsyncAPI document refuses meets.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InvalidQos0 {
    /// DISCONNECT with the reason (0x99 payload format invalid, 0x90, 0x87), as Zilla does.
    #[default]
    Disconnect,
    /// Not delivered; counted.
    Drop,
}

/// What an MQTT 3 PUBLISH the AsyncAPI document refuses meets (MQTT 3 has no reason codes).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum InvalidMqtt3 {
    /// Acknowledged, not delivered; counted.
    #[default]
    Drop,
    /// The connection is closed.
    Close,
}

/// What a message meets when a session's queue is at `session_queue_count_max` or
/// `session_queue_bytes_max` (see ARCHITECTURE.md, "Backpressure").
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum QueueFullPolicy {
    /// The oldest queued message is dropped (counted) to make room.
    #[default]
    DropOldest,
    /// The new message is dropped (counted).
    DropNewest,
    /// The publish is refused: PUBACK / PUBREC 0x97 to an MQTT 5 publisher; dropped (counted)
    /// for an MQTT 3 publisher or the broker's own messages, which cannot be told.
    Refuse,
}

/// Whether TLS listeners ask for client certificates.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum TlsClientAuth {
    /// Not asked for.
    #[default]
    None,
    /// Asked for and verified when given; clients without one still connect.
    Optional,
    /// The handshake fails without a certificate chaining to `tls_ca`.
    Required,
}

/// One configuration key, as documented in the README's "Configuration" table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyDoc {
    /// The key: TOML name, `Config` field, and (with `-` for `_`) the `--flag`.
    pub key: &'static str,
    /// The default, as the README shows it (markdown).
    pub default: &'static str,
    /// What the key does, as the README says it (markdown).
    pub meaning: &'static str,
}

/// Generates everything derived from the key list: the [`Config`] struct and its `Default`,
/// the [`ConfigFlags`] command-line flags with [`ConfigFlags::apply`], and [`KEYS`].
///
/// Each entry: `key: Type = default_expr, "README default", "README meaning";`. A key of
/// type `Option<T>` (unset by default) takes `--key T` on the command line.
macro_rules! config_keys {
    // Normalise each entry to (key, type, flag type, wrap, default, default text, meaning),
    // where `wrap` turns a flag value into the key's value.
    (@munch [$($done:tt)*]) => {
        config_keys!(@emit $($done)*);
    };
    (@munch [$($done:tt)*]
        $key:ident: Option<$inner:ty> = $default:expr, $text:literal, $meaning:literal;
        $($rest:tt)*
    ) => {
        config_keys!(@munch [$($done)*
            ($key, Option<$inner>, $inner, Some, $default, $text, $meaning)
        ] $($rest)*);
    };
    (@munch [$($done:tt)*]
        $key:ident: $ty:ty = $default:expr, $text:literal, $meaning:literal;
        $($rest:tt)*
    ) => {
        config_keys!(@munch [$($done)*
            ($key, $ty, $ty, ::std::convert::identity, $default, $text, $meaning)
        ] $($rest)*);
    };
    (@emit $((
        $key:ident, $ty:ty, $flag:ty, $wrap:path, $default:expr, $text:literal, $meaning:literal
    ))*) => {
        /// Every setting, with its documented default (see README, "Configuration", and
        /// [`KEYS`]).
        #[derive(Clone, Debug, Deserialize, PartialEq)]
        #[serde(default, deny_unknown_fields)]
        pub struct Config {
            $(
                #[doc = $meaning]
                #[doc = ""]
                #[doc = concat!("Default: ", $text, ".")]
                pub $key: $ty,
            )*
            /// The `[kafka]` table (file only; README "Kafka"): the MQTT -> Kafka bridge.
            pub kafka: Option<crate::kafka::config::KafkaConfig>,
            /// The `[cluster]` table (file only; README "Cluster"): this node in a cluster
            /// over Kafka.
            pub cluster: Option<crate::cluster::config::ClusterConfig>,
        }

        impl Default for Config {
            fn default() -> Self {
                Self {
                    $( $key: $default, )*
                    kafka: None,
                    cluster: None,
                }
            }
        }

        /// The command-line flags: `--key VALUE` for every configuration key (booleans take a
        /// value too: `--allow-anonymous false`). Flags given override the file.
        #[derive(Clone, Debug, Default, clap::Args)]
        pub struct ConfigFlags {
            $(
                #[arg(long, help = concat!($meaning, " [default: ", $text, "]"))]
                $key: Option<$flag>,
            )*
        }

        impl ConfigFlags {
            /// Sets every key given on the command line in `config`.
            pub fn apply(self, config: &mut Config) {
                $(
                    if let Some(v) = self.$key {
                        config.$key = $wrap(v);
                    }
                )*
            }
        }

        /// Every key, in order, with the README's default and meaning text.
        pub const KEYS: &[KeyDoc] = &[
            $(
                KeyDoc {
                    key: stringify!($key),
                    default: $text,
                    meaning: $meaning,
                },
            )*
        ];
    };
    ($($entries:tt)*) => {
        config_keys!(@munch [] $($entries)*);
    };
}

// The single list of keys. The default and meaning strings are the README table's cells,
// verbatim (markdown); `tests::readme_table_matches_keys` checks that they agree.
config_keys! {
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 1883)),
        "`127.0.0.1:1883`",
        "address every shard listens on (SO_REUSEPORT)";
    tls_listen: Option<SocketAddr> = None,
        "none (off)",
        "MQTT over TLS (1.2 and 1.3, e.g. `0.0.0.0:8883`); needs `tls_cert` and `tls_key`";
    ws_listen: Option<SocketAddr> = None,
        "none (off)",
        "MQTT over WebSocket (e.g. `0.0.0.0:8083`)";
    wss_listen: Option<SocketAddr> = None,
        "none (off)",
        "MQTT over secure WebSocket (e.g. `0.0.0.0:8084`); needs `tls_cert` and `tls_key`";
    tls_cert: Option<PathBuf> = None,
        "none",
        "the server's certificate chain (PEM, leaf first); reloaded on SIGHUP";
    tls_key: Option<PathBuf> = None,
        "none",
        "the server's private key (PEM: PKCS#8, PKCS#1 or SEC1); reloaded on SIGHUP";
    tls_ca: Option<PathBuf> = None,
        "none",
        "CA certificates (PEM) client certificates must chain to; needed by \
        `tls_client_auth` `optional` / `required`";
    tls_client_auth: TlsClientAuth = TlsClientAuth::None,
        "`none`",
        "client certificates: `none` (not asked for), `optional` (verified when given), \
        `required` (the handshake fails without a valid one)";
    tls_cert_as_username: bool = false,
        "false",
        "a verified client certificate's subject CN (else its first DNS SAN) is the client's \
        user name for the ACL, its CONNECT user name and password ignored; without \
        `password_file`, a client without a certificate may not give a user name (CONNACK 0x86)";
    ws_path: Option<String> = None,
        "none (any)",
        "the only request path WebSocket upgrades are accepted on (commonly `/mqtt`); others get \
        HTTP 404";
    ws_frame_bytes_max: usize = 1 << 20,
        "1 MiB",
        "largest WebSocket frame payload accepted; larger: close 1009";
    handshake_bytes_max: usize = 8192,
        "8192",
        "largest WebSocket upgrade request; larger: HTTP 431";
    handshake_timeout_ms: u64 = 10_000,
        "10,000",
        "a TLS or WebSocket connection whose handshake has not finished by then is closed \
        (`connect_timeout_ms` still applies from the accept)";
    shards: usize = 0,
        "`0` (= cores)",
        "shard threads, at most 64";
    packet_bytes_max: usize = 1 << 20,
        "1 MiB",
        "largest packet accepted; larger ones get DISCONNECT 0x95 before their body is read";
    inflight_count_max: u16 = 1000,
        "1000",
        "outbound QoS 1/2 window per session (unless the client's receive maximum is given); the \
        receive maximum announced to MQTT 5 clients";
    session_queue_count_max: usize = 10_000,
        "10,000",
        "messages queued per session; at it `session_queue_full_policy` applies (a connected \
        session queues past it what its paused publishers had already sent)";
    session_queue_bytes_max: usize = 64 << 20,
        "64 MiB",
        "topic and payload bytes queued per session, same policy as the count";
    session_queue_full_policy: QueueFullPolicy = QueueFullPolicy::DropOldest,
        "`drop-oldest`",
        "at the queue bound: `drop-oldest`, `drop-newest` (both counted) or `refuse` (PUBACK / \
        PUBREC 0x97 to MQTT 5 publishers; dropped and counted for MQTT 3 ones)";
    session_queue_high_watermark: usize = 1000,
        "1000",
        "a connected session with this many messages queued (or half of \
        `session_queue_bytes_max`) pauses the connections publishing to it: their input is not \
        read";
    session_queue_low_watermark: usize = 100,
        "100",
        "paused publishers resume once every session they fed is at or below this (and an \
        eighth of `session_queue_bytes_max`)";
    slow_consumer_timeout_ms: u64 = 30_000,
        "30,000",
        "a connected client that takes nothing (no bytes sent to it) for this long while messages \
        wait for it is disconnected (MQTT 5: 0x97); `0`: never";
    linger_close_ms: u64 = 2000,
        "2,000",
        "when the broker closes a connection with something still to say (a DISCONNECT reason, \
        a CONNACK refusal), it sends it, shuts its side, and reads and discards the client's \
        input for up to this long (or until the client closes) so the kernel does not reset the \
        connection over unread input and lose the last packet; `0`: close at once";
    linger_close_bytes: usize = 1 << 20,
        "1 MiB",
        "input read and discarded during a lingering close before the socket is closed anyway";
    outbox_bytes_max: usize = 4 << 20,
        "4 MiB",
        "encoded bytes waiting per connection; QoS 0 messages past it are dropped (counted), QoS \
        1/2 wait in the session queue";
    connect_timeout_ms: u64 = 10_000,
        "10,000",
        "a connection without CONNECT is closed after this";
    connections_per_shard_max: usize = 10_000,
        "10,000",
        "further connections are closed at accept";
    peer_queue_count_max: usize = 65_536,
        "65,536",
        "messages in one shard-to-shard queue";
    peer_queue_bytes_max: usize = 16 << 20,
        "16 MiB",
        "payload bytes in one shard-to-shard queue; when a queue is full the shard stops reading \
        from its clients until it drains (nothing is dropped)";
    peer_drain_count_max: usize = 4096,
        "4096",
        "messages a shard takes from its peers per loop pass";
    recv_buffer_count: u16 = 256,
        "256",
        "provided receive buffers per shard (power of two); the pool (count x \
        `recv_buffer_bytes`, 4 MiB by default) is resident from the start";
    recv_buffer_bytes: u32 = 16 * 1024,
        "16 KiB",
        "bytes per receive buffer";
    wait_completions_min: u32 = 1,
        "1",
        "completions a loop pass waits for (more trades up to `wait_timeout_us` of latency for \
        fewer wake-ups)";
    wait_timeout_us: u64 = 100,
        "100",
        "the longest such wait";
    log: String = "info".into(),
        "`info`",
        "tracing filter (`RUST_LOG` wins)";
    log_format: LogFormat = LogFormat::Text,
        "`text`",
        "`text` (colours only on a terminal) or `json` (one object per line)";
    qos_max: u8 = 2,
        "2",
        "highest QoS accepted and granted; a PUBLISH above it gets DISCONNECT 0x9B; announced as \
        maximum QoS when below 2";
    retain_available: bool = true,
        "true",
        "store retained messages; when false a retained PUBLISH gets DISCONNECT 0x9A";
    retained_count_max: usize = 2_000_000,
        "2,000,000",
        "retained messages the node keeps (topics are partitioned across shards; each shard \
        holds at most its share, rounded up)";
    retained_bytes_max: usize = 1 << 30,
        "1 GiB",
        "topic + payload bytes of retained messages the node keeps (each shard its share)";
    retained_page_max: usize = 256,
        "256",
        "retained messages one page of a new subscription's matches holds: matches are paged \
        from each shard's store as the subscriber drains them, never queued all at once";
    retained_page_bytes_max: usize = 256 << 10,
        "256 KiB",
        "payload bytes after which a page of retained matches ends";
    topic_alias_max: u16 = 64,
        "64",
        "topic aliases a client may set (0: none); alias 0 or above it: DISCONNECT 0x94";
    keep_alive_max_secs: u16 = u16::MAX,
        "65,535",
        "longest keep alive; MQTT 5 clients asking for more (or 0) are told this (server keep \
        alive); MQTT 3 clients asking for more are refused (return code 2)";
    topic_levels_max: usize = 128,
        "128",
        "levels in a topic or filter; PUBLISH over it: PUBACK 0x90, SUBSCRIBE: SUBACK 0x8F";
    subscriptions_per_session_max: usize = 10_000,
        "10,000",
        "a subscription past it: SUBACK 0x97 (MQTT 3: 0x80)";
    publish_rate_max: u32 = 0,
        "0 (off)",
        "PUBLISH packets per second per client (token bucket of one second); over it: DISCONNECT \
        0x96";
    allow_anonymous: bool = true,
        "true",
        "clients without a user name may connect";
    password_file: Option<PathBuf> = None,
        "none",
        "`ringmq passwd` file; when set, a user name needs its password";
    acl_file: Option<PathBuf> = None,
        "none",
        "ACL file (above); when set, what it does not allow is denied";
    asyncapi: Option<PathBuf> = None,
        "none",
        "AsyncAPI 3.0 or 2.6 document (YAML or JSON): its channels' parameters, operations and \
        payload schemas are enforced on PUBLISH and SUBSCRIBE; reloaded on SIGHUP; its Kafka bindings add Kafka bridge rules (read at start only)";
    asyncapi_strict: bool = false,
        "false",
        "refuse topics and filters that match no channel (MQTT 5: PUBACK 0x90 / SUBACK 0x8F; \
        MQTT 3: dropped and counted / SUBACK 0x80)";
    asyncapi_invalid_qos0: InvalidQos0 = InvalidQos0::Disconnect,
        "`disconnect`",
        "an MQTT 5 QoS 0 PUBLISH the document refuses: `disconnect` (DISCONNECT 0x99, or the \
        topic's reason code) or `drop` (counted)";
    asyncapi_invalid_mqtt3: InvalidMqtt3 = InvalidMqtt3::Drop,
        "`drop`",
        "an MQTT 3 PUBLISH the document refuses: `drop` (acknowledged, not delivered, counted) \
        or `close` (the connection)";
    sys_interval_secs: u64 = 10,
        "10",
        "`$SYS` publish interval (0: off)";
    metrics_listen: Option<SocketAddr> = None,
        "none (off)",
        "address of the Prometheus `/metrics` endpoint, e.g. `127.0.0.1:9883`";
    durability: Durability = Durability::Sync,
        "`sync`",
        "`sync`: PUBACK/PUBREC after the records are on disk (fdatasync, group commit); `batch`: \
        ack at once, fdatasync every `fsync_interval_ms`; `memory`: no disk. See \
        ARCHITECTURE.md, \"Durability contract\"";
    data_dir: PathBuf = PathBuf::from("./data"),
        "`./data`",
        "the embedded log (one directory per shard, a lock file against a second broker); a \
        directory written with another `shards` count is re-sharded at start (crash-safe)";
    fsync_interval_ms: u64 = 100,
        "100",
        "`batch` mode: longest time between fdatasyncs (the loss window)";
    compaction_bytes_per_second: u64 = 16 << 20,
        "16 MiB",
        "background compaction budget per shard: live records rewritten out of the oldest segment \
        (and never more, since the shard started, than it wrote besides, plus the log's size)";
    segment_bytes: u64 = 64 << 20,
        "64 MiB",
        "a shard's log segment rolls past this size, and compaction works while the log holds \
        more than this (64 KiB to 1 GiB)";
    segments_recycled: usize = 2,
        "2",
        "files of deleted log segments (about `segment_bytes` each) kept per shard for the next segments \
        to reuse: a write over blocks already on disk is issued inline, an extending one by a \
        kernel worker thread (about 0.5 ms of CPU per commit); 0 deletes them (at most 64)";
    store: StoreKind = StoreKind::Embedded,
        "`embedded`",
        "`embedded`: the log in `data_dir`; `redis`: sessions, queued messages, QoS 2 state and \
        retained messages in Redis at `redis_url`, written in batches across clients (needs \
        `durability` `sync` or `batch`)";
    redis_url: String = "redis://127.0.0.1:6379".to_string(),
        "`redis://127.0.0.1:6379`",
        "`redis://[[user]:password@]host[:port][/db]` of the Redis store (`rediss://` for TLS)";
    redis_cluster: bool = false,
        "false",
        "`redis_url` is a seed node of a Redis Cluster: the masters are read with `CLUSTER \
        SLOTS` and each key goes to its slot's master (one connection per master per shard)";
    redis_connect_timeout_ms: u64 = 1000,
        "1000",
        "longest wait for one connection to Redis (a shard waits for it when reconnecting)";
    redis_start_wait_secs: u64 = 30,
        "30",
        "at start, how long to retry an unreachable Redis before giving up with an error";
    redis_hold_ms: u64 = 5000,
        "5000",
        "while Redis is unreachable or refusing writes, acknowledgements are held this long; \
        then they and new durable publishes are refused (0x97; MQTT 3: the connection closes) \
        until writes land again";
    redis_pending_bytes_max: usize = 64 << 20,
        "64 MiB",
        "commands per shard waiting for Redis beyond which durable publishes are refused";
    redis_tls_ca: Option<PathBuf> = None,
        "`/etc/ssl/certs/ca-certificates.crt`",
        "`rediss://`: the CA certificates (PEM) Redis's certificate must chain to; it must \
        name the URL's host (for every node of a cluster)";
    redis_tls_cert: Option<PathBuf> = None,
        "none",
        "`rediss://`: this broker's client certificate chain (PEM), for a Redis that asks for \
        one (`tls-auth-clients yes`, Redis's default); with `redis_tls_key`";
    redis_tls_key: Option<PathBuf> = None,
        "none",
        "`rediss://`: the private key (PEM) of `redis_tls_cert`";
    redis_shared: bool = false,
        "false",
        "several brokers share the Redis database (no database lock): each CONNECT claims its \
        client id in Redis (owner and epoch), loads the session if another broker had it, and \
        the broker that had it closes its connection with 0x8E and forgets it; at start only \
        the sessions this broker owns are loaded (needs `redis_broker_id`)";
    redis_broker_id: String = String::new(),
        "empty",
        "this broker's name among those sharing the Redis database (`redis_shared`; stable \
        across restarts: its sessions are found by it; one process per id, a second is \
        refused; letters, digits, `-`, `_`, `.`, `:`; a cluster node's is its \
        `cluster.node_id`, another value is refused at start)";
    redis_fenced: bool = true,
        "true",
        "`redis_shared`: every write of a session goes through a Lua guard that applies it only \
        while this broker still owns the session (owner key and epoch), so a paused or \
        partitioned broker that lost a session writes nothing into it; false: plain commands \
        (Redis spends about a third of the CPU per write) and such a broker's late writes land \
        in the session's keys";
    redis_claims_max: usize = 4096,
        "4096",
        "`redis_shared`: CONNECTs waiting for their claim in Redis, per broker, beyond which a \
        CONNECT is refused (0x89 server busy)";
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
    /// The Redis store's settings, from `redis_url` and the `redis_*` keys.
    pub fn redis(&self) -> Result<storage::redis::RedisConfig, String> {
        let mut redis = storage::redis::RedisConfig::parse(
            &self.redis_url,
            std::time::Duration::from_millis(self.redis_connect_timeout_ms),
            std::time::Duration::from_millis(self.redis_hold_ms),
            self.redis_pending_bytes_max,
        )?;
        if self.redis_cluster && redis.db != 0 {
            return Err("a Redis Cluster has only database 0".into());
        }
        redis.cluster = self.redis_cluster;
        redis.shared = self.redis_shared;
        redis.fenced = self.redis_shared && self.redis_fenced;
        if self.redis_shared {
            redis.lock_key = storage::redis::lock::key_of(&self.redis_broker_id);
        }
        if redis.tls_wanted {
            let ca = self
                .redis_tls_ca
                .clone()
                .unwrap_or_else(|| PathBuf::from(storage::redis::tls::SYSTEM_CA));
            redis.tls = Some(storage::redis::tls::Tls::new(
                &redis.host,
                &ca,
                self.redis_tls_cert.as_deref(),
                self.redis_tls_key.as_deref(),
            )?);
        } else if self.redis_tls_ca.is_some() || self.redis_tls_cert.is_some() {
            return Err(
                "redis_tls_ca / redis_tls_cert are set but the URL is redis://, not rediss://"
                    .into(),
            );
        }
        Ok(redis)
    }

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
        if self.session_queue_high_watermark == 0
            || self.session_queue_high_watermark > self.session_queue_count_max
        {
            return Err(bad(
                "session_queue_high_watermark",
                "must be between 1 and session_queue_count_max",
            ));
        }
        if self.session_queue_low_watermark >= self.session_queue_high_watermark {
            return Err(bad(
                "session_queue_low_watermark",
                "must be below session_queue_high_watermark",
            ));
        }
        if self.retained_page_max == 0 || self.retained_page_bytes_max == 0 {
            return Err(bad(
                "retained_page_max",
                "retained_page_max and retained_page_bytes_max must be at least 1",
            ));
        }
        if self.outbox_bytes_max < 1024 {
            return Err(bad("outbox_bytes_max", "must be at least 1024"));
        }
        if self.connect_timeout_ms == 0 {
            return Err(bad("connect_timeout_ms", "must be at least 1"));
        }
        // Slot 2^24 - 1 stands for the shard's sources as a publisher (`Sources::PUBLISHER`).
        if self.connections_per_shard_max == 0 || self.connections_per_shard_max >= 1 << 24 {
            return Err(bad(
                "connections_per_shard_max",
                "must be between 1 and 16777215",
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
        if !(64 << 10..=1 << 30).contains(&self.segment_bytes) {
            return Err(bad("segment_bytes", "must be from 64 KiB to 1 GiB"));
        }
        if self.segments_recycled > 64 {
            return Err(bad("segments_recycled", "must be at most 64"));
        }
        if self.compaction_bytes_per_second < 4096 {
            return Err(bad("compaction_bytes_per_second", "must be at least 4096"));
        }
        if self.store == StoreKind::Redis {
            if self.durability == Durability::Memory {
                return Err(bad(
                    "store",
                    "`redis` needs `durability` `sync` or `batch` (memory keeps nothing)",
                ));
            }
            if let Err(e) = self.redis() {
                return Err(bad("redis_url", e));
            }
        }
        if self.redis_shared {
            if self.store != StoreKind::Redis {
                return Err(bad("redis_shared", "needs `store` `redis`"));
            }
            // A cluster node shares sessions under its node id: the other nodes find where a
            // session went by it.
            if let Some(cluster) = &self.cluster {
                if self.redis_broker_id.is_empty() {
                    self.redis_broker_id.clone_from(&cluster.node_id);
                } else if self.redis_broker_id != cluster.node_id {
                    return Err(bad(
                        "redis_broker_id",
                        "a cluster node's is its cluster.node_id (leave it unset)",
                    ));
                }
            }
            let id = &self.redis_broker_id;
            if id.is_empty()
                || id.len() > 128
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
            {
                return Err(bad(
                    "redis_broker_id",
                    "`redis_shared` needs a broker id of 1 to 128 letters, digits, `-`, `_`, `.` or `:`",
                ));
            }
            if self.redis_claims_max == 0 || self.redis_claims_max > 1 << 20 {
                return Err(bad("redis_claims_max", "must be between 1 and 1048576"));
            }
        }
        // The AsyncAPI document's Kafka bindings join the `[kafka]` rules before their check.
        if let Some(path) = &self.asyncapi {
            let mapping =
                crate::asyncapi::kafka::Mapping::load(path).map_err(|e| bad("asyncapi", e))?;
            if !mapping.is_empty() {
                let Some(kafka) = self.kafka.as_mut() else {
                    return Err(bad(
                        "asyncapi",
                        "the document binds channels to Kafka (bindings.kafka) but there is no [kafka] section",
                    ));
                };
                mapping.merge_into(kafka).map_err(|e| bad("asyncapi", e))?;
            }
        }
        if let Some(kafka) = &self.kafka {
            if let Err(e) = kafka.check() {
                return Err(bad("kafka", e));
            }
            // A cluster node uses Kafka without rules of its own.
            if kafka.to_kafka.is_empty() && kafka.to_mqtt.is_empty() && self.cluster.is_none() {
                return Err(bad(
                    "kafka",
                    "kafka: no [[kafka.to_kafka]] or [[kafka.to_mqtt]] rule",
                ));
            }
        }
        if let Some(cluster) = &self.cluster {
            cluster.check().map_err(|e| bad("cluster", e))?;
            if self.kafka.is_none() {
                return Err(bad(
                    "cluster",
                    "a cluster node needs the [kafka] section (the nodes share its routes and downlink topics)",
                ));
            }
        }
        if self.redis_connect_timeout_ms == 0 || self.redis_connect_timeout_ms > 60_000 {
            return Err(bad(
                "redis_connect_timeout_ms",
                "must be between 1 and 60000",
            ));
        }
        if self.redis_hold_ms > 3_600_000 {
            return Err(bad("redis_hold_ms", "must be at most 3600000"));
        }
        if self.redis_pending_bytes_max < 1 << 20 {
            return Err(bad("redis_pending_bytes_max", "must be at least 1048576"));
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
        if let Err((key, e)) = crate::transport::tls::check(&self) {
            return Err(bad(key, &e));
        }
        if self.ws_frame_bytes_max < 1024 || self.handshake_bytes_max < 1024 {
            return Err(bad(
                "ws_frame_bytes_max",
                "ws_frame_bytes_max and handshake_bytes_max must be at least 1024",
            ));
        }
        if self.handshake_timeout_ms == 0 {
            return Err(bad("handshake_timeout_ms", "must be at least 1"));
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
mod tests;
