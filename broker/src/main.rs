//! The `ringmq` binary: parse the configuration, start the shards, stop on SIGINT/SIGTERM.

use std::path::PathBuf;

use clap::Parser;

use broker::config::Config;

/// ringmq: a thread-per-core MQTT broker on io_uring.
///
/// Every configuration key can be set in the TOML file given with --config and overridden by
/// the flag of the same name.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on (every shard binds it with SO_REUSEPORT).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Shards (threads); 0 = one per core.
    #[arg(long)]
    shards: Option<usize>,
    /// Largest packet accepted from a client, in bytes.
    #[arg(long)]
    packet_bytes_max: Option<usize>,
    /// Outbound QoS 1/2 window per session, and the receive maximum announced.
    #[arg(long)]
    inflight_count_max: Option<u16>,
    /// Messages queued per session.
    #[arg(long)]
    session_queue_count_max: Option<usize>,
    /// Topic and payload bytes queued per session.
    #[arg(long)]
    session_queue_bytes_max: Option<usize>,
    /// Bytes waiting to be written per connection before QoS 0 messages are dropped.
    #[arg(long)]
    outbox_bytes_max: Option<usize>,
    /// Milliseconds a new connection has to send CONNECT.
    #[arg(long)]
    connect_timeout_ms: Option<u64>,
    /// Connections per shard.
    #[arg(long)]
    connections_per_shard_max: Option<usize>,
    /// Capacity of each shard-to-shard queue, in messages.
    #[arg(long)]
    peer_queue_count_max: Option<usize>,
    /// Payload and topic bytes each shard-to-shard queue may hold.
    #[arg(long)]
    peer_queue_bytes_max: Option<usize>,
    /// Messages taken from peer queues per loop pass.
    #[arg(long)]
    peer_drain_count_max: Option<usize>,
    /// Provided receive buffers per shard (power of two).
    #[arg(long)]
    recv_buffer_count: Option<u16>,
    /// Bytes per receive buffer.
    #[arg(long)]
    recv_buffer_bytes: Option<u32>,
    /// Completions a loop pass waits for (1 = wake on every completion).
    #[arg(long)]
    wait_completions_min: Option<u32>,
    /// Longest wait for those completions, in microseconds.
    #[arg(long)]
    wait_timeout_us: Option<u64>,
    /// Log filter, e.g. "info" or "broker=debug".
    #[arg(long)]
    log: Option<String>,
    /// Highest QoS accepted and granted (0, 1 or 2).
    #[arg(long)]
    qos_max: Option<u8>,
    /// Store retained messages (true/false).
    #[arg(long)]
    retain_available: Option<bool>,
    /// Retained messages kept.
    #[arg(long)]
    retained_count_max: Option<usize>,
    /// Topic and payload bytes of retained messages kept.
    #[arg(long)]
    retained_bytes_max: Option<usize>,
    /// Topic aliases a client may use (0 = none).
    #[arg(long)]
    topic_alias_max: Option<u16>,
    /// Longest keep alive a client may ask for, in seconds.
    #[arg(long)]
    keep_alive_max_secs: Option<u16>,
    /// Levels in a topic name or filter.
    #[arg(long)]
    topic_levels_max: Option<usize>,
    /// Subscriptions per session.
    #[arg(long)]
    subscriptions_per_session_max: Option<usize>,
    /// PUBLISH packets per second per client (0 = no limit).
    #[arg(long)]
    publish_rate_max: Option<u32>,
    /// Allow clients without a user name (true/false).
    #[arg(long)]
    allow_anonymous: Option<bool>,
    /// Password file written by `ringmq passwd`.
    #[arg(long)]
    password_file: Option<PathBuf>,
    /// ACL file.
    #[arg(long)]
    acl_file: Option<PathBuf>,
    /// Seconds between $SYS publishes (0 = off).
    #[arg(long)]
    sys_interval_secs: Option<u64>,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long)]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Durability mode: sync (ack after fdatasync), batch (fdatasync every
    /// fsync_interval_ms) or memory (no disk).
    #[arg(long, value_enum)]
    durability: Option<broker::config::Durability>,
    /// Directory of the embedded log.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Batch mode: longest time between fdatasyncs, in milliseconds.
    #[arg(long)]
    fsync_interval_ms: Option<u64>,
    /// Background compaction: live bytes rewritten per second per shard.
    #[arg(long)]
    compaction_bytes_per_second: Option<u64>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Adds or replaces a user in a password file (argon2id hash). The password is read
    /// from the first line of standard input unless --password is given.
    Passwd {
        /// The password file (created if missing).
        file: PathBuf,
        /// The user name.
        user: String,
        /// The password (visible in the process list: prefer standard input).
        #[arg(long)]
        password: Option<String>,
    },
}

macro_rules! override_keys {
    ($cli:ident, $config:ident, $($key:ident),*) => {
        $( if let Some(v) = $cli.$key { $config.$key = v; } )*
    };
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmq: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Passwd {
        file,
        user,
        password,
    }) = &cli.command
    {
        let password = match password {
            Some(p) => p.clone(),
            None => {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                line.trim_end_matches(['\r', '\n']).to_string()
            }
        };
        broker::auth::passwd::add_user(file, user, &password)?;
        println!("user {user} written to {}", file.display());
        return Ok(());
    }
    let mut config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    override_keys!(
        cli,
        config,
        listen,
        shards,
        packet_bytes_max,
        inflight_count_max,
        session_queue_count_max,
        session_queue_bytes_max,
        outbox_bytes_max,
        connect_timeout_ms,
        connections_per_shard_max,
        peer_queue_count_max,
        peer_queue_bytes_max,
        peer_drain_count_max,
        recv_buffer_count,
        recv_buffer_bytes,
        wait_completions_min,
        wait_timeout_us,
        log,
        qos_max,
        retain_available,
        retained_count_max,
        retained_bytes_max,
        topic_alias_max,
        keep_alive_max_secs,
        topic_levels_max,
        subscriptions_per_session_max,
        publish_rate_max,
        allow_anonymous,
        sys_interval_secs,
        durability,
        data_dir,
        fsync_interval_ms,
        compaction_bytes_per_second
    );
    if let Some(v) = cli.password_file {
        config.password_file = Some(v);
    }
    if let Some(v) = cli.acl_file {
        config.acl_file = Some(v);
    }
    if let Some(v) = cli.metrics_listen {
        config.metrics_listen = Some(v);
    }
    let config = config.validate()?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .map_err(|e| anyhow::anyhow!("config key `log`: {e}"))?;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let broker = broker::run(config.clone())?;
    tracing::info!(listen = %config.listen, shards = config.shards, "ringmq listening");
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    broker.stop();
    let stats = broker.join()?;
    tracing::info!(?stats, "stopped");
    Ok(())
}
