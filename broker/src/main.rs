//! The `ringmq` binary: parse the configuration, start the shards, stop on SIGINT/SIGTERM.

use std::path::PathBuf;

use clap::Parser;

use broker::config::{Config, ConfigFlags};

/// ringmq: a thread-per-core MQTT broker on io_uring.
///
/// Every configuration key can be set in the TOML file given with --config and overridden by
/// the flag of the same name.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    // One `--key VALUE` flag per configuration key (see `broker::config::KEYS`).
    #[command(flatten)]
    keys: ConfigFlags,
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
    /// AsyncAPI documents.
    Asyncapi {
        #[command(subcommand)]
        action: AsyncapiAction,
    },
    /// The Kafka bridge.
    Kafka {
        #[command(subcommand)]
        action: KafkaAction,
    },
}

#[derive(Debug, clap::Subcommand)]
enum KafkaAction {
    /// Checks the configuration's `[kafka]` rules before a start: rules an earlier one hides
    /// or overlaps, whether the Kafka brokers answer (within kafka.timeout_ms), and whether
    /// each topic a rule names exists (or will be created) with the partitions asked for.
    /// Prints one line per finding, naming the rule; fails if any is an error.
    Check,
}

#[derive(Debug, clap::Subcommand)]
enum AsyncapiAction {
    /// Loads a document as the broker would and prints its topic map, who may publish or
    /// subscribe, and each channel's messages; a bad document gives one error naming the
    /// JSON pointer of what is wrong.
    Check {
        /// The document (YAML or JSON).
        file: PathBuf,
    },
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
    if let Some(Command::Asyncapi {
        action: AsyncapiAction::Check { file },
    }) = &cli.command
    {
        let api = broker::asyncapi::Api::load(file, false)?;
        let kafka = broker::asyncapi::kafka::Mapping::load(file)
            .map_err(|e| anyhow::anyhow!("asyncapi check: {e}"))?;
        println!("{}", api.describe());
        print!("{}", api.topic_map());
        print!("{}", kafka.describe());
        return Ok(());
    }
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
    cli.keys.apply(&mut config);
    let config = config.validate()?;
    if let Some(Command::Kafka {
        action: KafkaAction::Check,
    }) = &cli.command
    {
        let kafka = config.kafka.as_ref().ok_or_else(|| {
            anyhow::anyhow!("kafka check: the configuration has no [kafka] table")
        })?;
        let report = broker::kafka::check::run(kafka, config.cluster.as_ref());
        print!("{}", report.render());
        if report.errors() > 0 {
            anyhow::bail!("kafka check: {} errors", report.errors());
        }
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log))
        .map_err(|e| anyhow::anyhow!("config key `log`: {e}"))?;
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        broker::config::LogFormat::Json => logs.json().init(),
        broker::config::LogFormat::Text => {
            use std::io::IsTerminal;
            logs.with_ansi(std::io::stderr().is_terminal()).init();
        }
    }

    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ])?;
    let broker = broker::run(config.clone())?;
    let also = [
        ("tls", config.tls_listen),
        ("ws", config.ws_listen),
        ("wss", config.wss_listen),
    ]
    .iter()
    .filter_map(|(name, addr)| addr.map(|a| format!(" {name}={a}")))
    .collect::<String>();
    tracing::info!(listen = %config.listen, shards = config.shards, "ringmq listening{also}");
    for sig in signals.forever() {
        if sig == signal_hook::consts::SIGHUP {
            broker.reload_auth();
            continue;
        }
        tracing::info!(signal = sig, "shutting down");
        break;
    }
    broker.stop();
    let stats = broker.join()?;
    tracing::info!(
        "stopped: {} clients accepted, {} messages received, {} sent, {} forwarded between \
         shards, {} dropped, {} refused, {} protocol errors",
        stats.accepted,
        stats.publishes_in,
        stats.publishes_out,
        stats.forwarded,
        stats.dropped_outbox
            + stats.dropped_queue_full
            + stats.dropped_expired
            + stats.dropped_too_large
            + stats.dropped_no_subscriber,
        stats.refused_queue_full,
        stats.protocol_errors,
    );
    Ok(())
}
