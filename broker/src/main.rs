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
        log
    );
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
