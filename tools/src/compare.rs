//! The comparison runner: starts each broker in turn on 127.0.0.1 pinned to one core, drives
//! the same scenario matrix against it from another core, stops it, and writes the results
//! (JSON), SVG charts and BENCHMARKS.md with ratios ringmq/peer and the project's targets.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Instant;

use net::codec::ProtocolVersion;
use serde::{Deserialize, Serialize};

pub use crate::brokers::Broker;
use crate::brokers::{available, free_port, start, Transport, KAFKA_OUT_TOPIC, WS_PATH};
use crate::certs::ServerCerts;
use crate::limits::limited_by;
use crate::loadgen::conn::{run_conn, ConnLoad};
use crate::loadgen::kafka::KafkaIn;
use crate::loadgen::layers::Layers;
use crate::loadgen::{run, Load};
use crate::matrix::{matrix, Cell, Work};
use crate::plot::short;
use crate::report::{ConnReport, Report};
use crate::results::{Results, Run};

/// Matrix size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Three cells, a few seconds each: under two minutes, for development.
    Quick,
    /// QoS x payload x load shape, fan-in/out, persistent sessions, connections.
    Full,
}

/// Runner settings.
#[derive(Debug, Clone)]
pub struct CompareConfig {
    /// Matrix size.
    pub mode: Mode,
    /// Where results, charts and the report go (BENCHMARKS.md is written to `report`).
    pub out: PathBuf,
    /// The markdown report to write.
    pub report: PathBuf,
    /// The ringmq binary.
    pub ringmq: PathBuf,
    /// This binary (for the relay).
    pub bench: PathBuf,
    /// Core the brokers are pinned to.
    pub broker_core: usize,
    /// Core the load generator is pinned to.
    pub load_core: usize,
    /// Only these cells (ids) are run; their results replace the same cells' in the
    /// existing `results.json` and the report is written again from the merge. Empty: all.
    pub only: Vec<String>,
    /// Rounds per (cell, broker); the brokers alternate within each round of a cell. Tables
    /// and charts show the median round, tables the spread.
    pub rounds: u32,
}

/// One measurement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Cell id.
    pub cell: String,
    /// Broker.
    pub broker: String,
    /// Message scenario result.
    pub report: Option<Report>,
    /// Connection scenario result.
    pub conn: Option<ConnReport>,
    /// Why there is no result.
    pub error: Option<String>,
    /// Which round of the (cell, broker) this is, from 0.
    #[serde(default)]
    pub round: u32,
}

/// Runs the matrix and writes the report.
pub fn compare(cfg: &CompareConfig) -> anyhow::Result<Vec<Outcome>> {
    std::fs::create_dir_all(&cfg.out)?;
    if let Some(core) = core_affinity::get_core_ids().and_then(|c| c.get(cfg.load_core).copied()) {
        core_affinity::set_for_current(core);
    }
    let brokers = available(cfg.mode);
    let tansu = crate::brokers::has_tansu();
    let named: Vec<Cell> = matrix(cfg.mode)
        .into_iter()
        .filter(|c| cfg.only.is_empty() || cfg.only.contains(&c.id))
        .collect();
    if named.is_empty() {
        anyhow::bail!("no cell of the matrix is named {:?}", cfg.only);
    }
    let cells: Vec<Cell> = named
        .into_iter()
        .filter(|c| {
            let needs = c.kafka() || c.cluster_nodes().is_some();
            if needs && !tansu {
                eprintln!("skipping {}: it needs tansu (cargo install tansu --locked --features dynostore,libsql)", c.id);
            }
            tansu || !needs
        })
        .collect();
    if cells.is_empty() {
        anyhow::bail!("every cell named needs tansu, which does not run here");
    }
    // One throwaway CA and server certificate for every TLS cell of the run.
    let certs_dir = std::env::temp_dir().join(format!("ringmq-bench-certs-{}", std::process::id()));
    let certs = if cells.iter().any(|c| c.transport == Transport::Tls) {
        match crate::certs::make(&certs_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&certs_dir);
                return Err(e);
            }
        }
    } else {
        None
    };
    let outcomes = run_cells(cfg, &cells, &brokers, certs.as_ref());
    let _ = std::fs::remove_dir_all(&certs_dir);
    let (outcomes, took) = outcomes?;
    save(cfg, &cells, &brokers, outcomes, took)
}

/// How the clients of a cell over `transport` reach the broker.
fn layers(transport: Transport, certs: Option<&ServerCerts>) -> anyhow::Result<Layers> {
    Ok(match (transport, certs) {
        (Transport::Tcp, _) => Layers::none(),
        (Transport::Tls, Some(c)) => Layers {
            tls: Some(Layers::tls_config(&c.ca, false)?),
            ws_path: None,
        },
        (Transport::Tls, None) => anyhow::bail!("a TLS cell without certificates"),
        (Transport::Ws, _) => Layers {
            tls: None,
            ws_path: Some(WS_PATH.to_string()),
        },
    })
}

/// Runs every (cell, broker, round): the outcomes and the seconds they took.
fn run_cells(
    cfg: &CompareConfig,
    cells: &[Cell],
    brokers: &[Broker],
    certs: Option<&ServerCerts>,
) -> anyhow::Result<(Vec<Outcome>, f64)> {
    let rounds = cfg.rounds.max(1);
    let total = cells.len() * brokers.len() * rounds as usize;
    let started = Instant::now();
    let mut outcomes = Vec::new();
    let mut done = 0;
    for cell in cells {
        let layers = layers(cell.transport, certs)?;
        for (round, &broker) in (0..rounds).flat_map(|r| brokers.iter().map(move |b| (r, b))) {
            done += 1;
            let setup = cell.setup(certs);
            if !broker.runs_in(&setup) || (round > 0 && cell.first_round_only()) {
                continue;
            }
            eprintln!(
                "[{done}/{total} {:>4.0}s] {} on {} (round {})",
                started.elapsed().as_secs_f64(),
                cell.id,
                broker.name(),
                round + 1
            );
            let port = free_port();
            let outcome = match start(cfg, broker, port, setup) {
                Err(e) => Outcome {
                    cell: cell.id.clone(),
                    broker: broker.name().into(),
                    report: None,
                    conn: None,
                    error: Some(format!("{e:#}")),
                    round,
                },
                Ok(mut running) => {
                    let pid = running.pid();
                    let addr = SocketAddr::from(([127, 0, 0, 1], port));
                    let result = match &cell.work {
                        Work::Messages(topology, load) => {
                            let mut load = Load {
                                addr,
                                broker_pid: pid,
                                other_pids: running.helper_pids(),
                                pub_addr: running.pub_addr(),
                                nodes: running.node_addrs(),
                                layers: layers.clone(),
                                ..(**load).clone()
                            };
                            if broker == Broker::KafkaDirect {
                                // The publishers are the generator's own Kafka producer,
                                // writing where the bridge would, as far ahead of Kafka's
                                // answers as the MQTT publishers' windows let them be.
                                let window = load.inflight * topology.publishers.len();
                                load.kafka_in = Some(KafkaIn {
                                    brokers: String::new(),
                                    topic: KAFKA_OUT_TOPIC.into(),
                                    like_bridge: true,
                                    ahead_max: Some(window as u64),
                                });
                            }
                            // The Kafka started beside this broker.
                            let kafka = running.kafka_brokers().unwrap_or_default();
                            for brokers in [
                                load.kafka_in.as_mut().map(|k| &mut k.brokers),
                                load.kafka_out.as_mut().map(|k| &mut k.brokers),
                            ]
                            .into_iter()
                            .flatten()
                            {
                                brokers.clone_from(&kafka);
                            }
                            run(topology, &load).map(|r| (Some(r), None))
                        }
                        Work::Connections(n) => run_conn(&ConnLoad {
                            addr,
                            clients: *n,
                            workers: 4,
                            version: ProtocolVersion::V311,
                            broker_pid: pid,
                            prefix: "cmp".into(),
                            layers: layers.clone(),
                            settle: std::time::Duration::from_millis(300),
                        })
                        .map(|r| (None, Some(r))),
                    };
                    // A broker that died during the run: the error says so, not only what
                    // the generator saw.
                    let result = match (result, running.exited()) {
                        (Err(e), Some(how)) => Err(e.context(format!(
                            "{} or a server beside it exited during the run ({how})",
                            broker.name()
                        ))),
                        (result, _) => result,
                    };
                    running.stop();
                    match result {
                        Ok((report, conn)) => Outcome {
                            cell: cell.id.clone(),
                            broker: broker.name().into(),
                            report,
                            conn,
                            error: None,
                            round,
                        },
                        Err(e) => Outcome {
                            cell: cell.id.clone(),
                            broker: broker.name().into(),
                            report: None,
                            conn: None,
                            error: Some(format!("{e:#}")),
                            round,
                        },
                    }
                }
            };
            if let Some(e) = &outcome.error {
                eprintln!("    {}: {e}", broker.name());
            }
            outcomes.push(outcome);
        }
    }
    Ok((outcomes, started.elapsed().as_secs_f64()))
}

/// Writes `results.json` (merged into the last run's with `--only`), the charts and the
/// report.
fn save(
    cfg: &CompareConfig,
    cells: &[Cell],
    brokers: &[Broker],
    outcomes: Vec<Outcome>,
    took: f64,
) -> anyhow::Result<Vec<Outcome>> {
    let rounds = cfg.rounds.max(1);
    let path = cfg.out.join("results.json");
    if !cfg.only.is_empty() {
        // Merge into the last full run: replace these cells' outcomes for the brokers run.
        let mut merged = Results::load(&path)?;
        merged.outcomes.retain(|o| {
            !outcomes
                .iter()
                .any(|n| n.cell == o.cell && n.broker == o.broker)
        });
        merged.outcomes.extend(outcomes.iter().cloned());
        merged.run.notes.push(format!(
            "Cells {} were measured again later (`--only`, {rounds} rounds) on {}, with {}.",
            cfg.only.join(", "),
            crate::results::machine(),
            crate::results::versions()
        ));
        merged.save(&path)?;
        render(cfg)?;
        return Ok(outcomes);
    }
    let results = Results {
        run: Run {
            machine: crate::results::machine(),
            versions: crate::results::versions(),
            mode: if cfg.mode == Mode::Full {
                "full"
            } else {
                "quick"
            }
            .into(),
            rounds,
            took_seconds: took,
            notes: Vec::new(),
        },
        outcomes,
    };
    results.save(&path)?;
    let md = write_report(cfg, cells, brokers, &results)?;
    crate::report::write_keeping_hand_run(&cfg.report, &md)?;
    Ok(results.outcomes)
}

/// Writes the report and charts again from `out/results.json` (no measurement).
pub fn render(cfg: &CompareConfig) -> anyhow::Result<()> {
    let results = Results::load(&cfg.out.join("results.json"))?;
    let outcomes = &results.outcomes;
    let mode = if outcomes.iter().any(|o| o.cell == "conn-5000") {
        Mode::Full
    } else {
        Mode::Quick
    };
    let cfg = CompareConfig {
        mode,
        ..cfg.clone()
    };
    let brokers: Vec<Broker> = Broker::ALL
        .into_iter()
        .filter(|b| outcomes.iter().any(|o| o.broker == b.name()))
        .collect();
    let md = write_report(&cfg, &matrix(mode), &brokers, &results)?;
    crate::report::write_keeping_hand_run(&cfg.report, &md)?;
    Ok(())
}

/// The CPU per message of the processes measured beside the broker (its redis-server, tansu,
/// a cluster's other node), named in order by `what`, as " + N what" (empty when none).
fn helpers_cpu(r: &Report, what: &[&str]) -> String {
    // No broker (`rdkafka-direct`): only the servers' figures.
    let mut out =
        if r.broker_cpu_us_per_message.is_none() && !r.others_cpu_us_per_message.is_empty() {
            " (no broker)".to_string()
        } else {
            String::new()
        };
    for ((_, v), name) in r.others_cpu_us_per_message.iter().zip(what) {
        let _ = write!(out, " + {v:.2} {name}");
    }
    out
}

/// The seconds each cell measured (the median of its runs' windows, rounded), cells of the
/// same length together, longest first; the QoS x payload cells named as one family.
fn windows_said(cells: &[Cell], outcomes: &[Outcome]) -> String {
    let mut by_seconds: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
    let mut grid_seen = std::collections::BTreeSet::new();
    for cell in cells {
        let mut seconds: Vec<f64> = outcomes
            .iter()
            .filter(|o| o.cell == cell.id)
            .filter_map(|o| o.report.as_ref().map(|r| r.window_seconds))
            .collect();
        seconds.sort_by(f64::total_cmp);
        let Some(median) = seconds.get(seconds.len() / 2) else {
            continue;
        };
        let s = median.round() as u64;
        let name = if cell.in_grid() {
            if !grid_seen.insert(s) {
                continue;
            }
            "the QoS x payload cells (`p2p-max-qQ-B`, `p2p-30k-qQ-B`)".to_string()
        } else {
            format!("`{}`", cell.id)
        };
        by_seconds.entry(s).or_default().push(name);
    }
    let said: Vec<String> = (by_seconds.iter().rev())
        .map(|(s, names)| format!("{s} s: {}", names.join(", ")))
        .collect();
    if said.is_empty() {
        "none recorded".into()
    } else {
        said.join("; ")
    }
}

/// The median round's report of (cell, broker).
pub(crate) fn find<'a>(outcomes: &'a [Outcome], cell: &str, broker: Broker) -> Option<&'a Report> {
    crate::results::report(outcomes, cell, broker.name())
}

/// The median round of (cell, broker), or its failure.
fn outcome<'a>(outcomes: &'a [Outcome], cell: &str, broker: Broker) -> Option<&'a Outcome> {
    crate::results::median(outcomes, cell, broker.name())
}

fn write_report(
    cfg: &CompareConfig,
    cells: &[Cell],
    brokers: &[Broker],
    results: &Results,
) -> anyhow::Result<String> {
    let (run, outcomes) = (&results.run, results.outcomes.as_slice());
    let known = |v: &str| {
        if v.is_empty() {
            "not recorded".to_string()
        } else {
            v.to_string()
        }
    };
    let mut md = String::new();
    let _ = writeln!(md, "# ringmq benchmarks\n");
    let took = if run.took_seconds > 0.0 {
        format!(" ({:.0} s)", run.took_seconds)
    } else {
        String::new()
    };
    let flag = if cfg.mode == Mode::Full {
        " --full"
    } else {
        ""
    };
    let rounds = match run.rounds {
        0 => String::new(),
        n => format!(" --rounds {n}"),
    };
    let _ = writeln!(
        md,
        "Written by `ringmq-bench compare{flag}{rounds}`{took}. Regenerate: `cargo build --release -p ringmq -p ringmq-tools && target/release/ringmq-bench compare{flag}`; redraw from `bench-results/results.json` without measuring: `ringmq-bench compare --render-only`.\n"
    );
    for note in &run.notes {
        let _ = writeln!(md, "{note}\n");
    }
    let _ = writeln!(md, "## Method\n");
    let _ = writeln!(md, "- Machine: {}. Loopback only.", known(&run.machine));
    let _ = writeln!(
        md,
        "- Each broker runs alone, pinned to core {} (`taskset`); the load generator (one thread, io_uring) is pinned to core {}. `ringmq-2shards` uses both cores and so shares the generator's.",
        cfg.broker_core, cfg.load_core
    );
    let _ = writeln!(md, "- Versions: {}.", known(&run.versions));
    let most = outcomes.iter().map(|o| o.round + 1).max().unwrap_or(1);
    let rounds_said = match run.rounds {
        0 => "not recorded (one)".to_string(),
        n if most > n => {
            format!("{n} (cells measured again later: up to {most}, see the notes above)")
        }
        n => n.to_string(),
    };
    let _ = writeln!(md, "- Rounds: {rounds_said} per (cell, broker), the brokers alternating within each round of a cell; tables and charts show the median round by delivered msg/s (with an even count, the lower of the two middle ones), tables also the lowest and highest of the rounds (min-max) and how many failed when there are several.{}", if cells.iter().any(Cell::first_round_only) { " The long run (`soak-5000`, memory over time) runs in the first round only." } else { "" });
    let _ = writeln!(md, "- Measured windows (after the warm-up), as the runs recorded them: {}. In the message cells the clients connect (not measured) 16 at a time, subscribers before publishers.", windows_said(cells, outcomes));
    let _ = writeln!(md, "- Brokers run with their defaults except: listen on 127.0.0.1; mosquitto `max_queued_messages 100000`; rumqttd 10,010 connections, 100 inflight; ringmq `session_queue_count_max 100000`, `durability memory` (no disk, like the others' defaults).");
    let _ = writeln!(md, "- Each payload carries publisher, sequence number and send time: delivered msg/s counts deliveries inside the measurement window (after a warm-up: 1 s; 3 s in the cluster and Kafka -> MQTT cells, 4 s in the MQTT -> Kafka ones); latency is publish-to-delivery (HDR histogram); lost and duplicated are exact per (subscriber, publisher) for QoS 1/2; CPU is the broker process's user+system time over the window from /proc, divided by deliveries in the window; RSS is its peak (VmHWM).");
    let _ = writeln!(md, "- `ringmq-sync` is ringmq on one shard with `durability sync` (a PUBACK leaves once the persistent subscribers' copies are on disk, fdatasync through io_uring with group commit), run only in the cells with persistent sessions (the TBMQ phases, the long run `soak-5000` and `p2p-persistent`): the durable cost beside the in-memory brokers.");
    let _ = writeln!(md, "- `ringmq-redis` is ringmq on one shard with its Redis store (`--store redis`: sessions, queued and in-flight messages in Redis; a PUBACK leaves once Redis answered the write), and `aedes-redis` is aedes with aedes-persistence-redis (Node.js, `tools/peers/aedes`, where `npm ci` installs it; run when installed): each with a fresh redis-server (`--appendonly yes --appendfsync always`, no snapshots) pinned to the load generator's core, only in the cells with persistent sessions. Their CPU column adds the redis-server's CPU per message over the same window (\"+ N Redis\"; absent in rows measured before it was counted); the ratios use the broker's alone.");
    let _ = writeln!(md, "- `ringmq-asyncapi` is ringmq on one shard validating every payload against `benches/asyncapi/p2p.yaml` (AsyncAPI 3.0, a 10-field object schema; `--asyncapi`), run only in the cells with JSON payloads (`p2p-*-json`, where every broker carries the same 200-byte JSON object): its CPU per message over `ringmq-1shard`'s in the same cell is what validation costs.");
    let _ = writeln!(md, "- The cells over TLS (`*-tls`) and WebSocket (`*-ws`): ringmq with `--tls-listen` / `--ws-listen` (`--ws-path {WS_PATH}`), mosquitto with `certfile`/`keyfile` / `protocol websockets`, rumqttd with `[v4.1.tls]` `certpath`/`keypath` (rustls, no client certificates) / a `[ws.1]` listener (its default features); a P-256 server certificate for 127.0.0.1 from a throwaway CA made with `openssl` for the run; the generator's clients use rustls (TLS 1.3 negotiated, no session resumption: every connection a full handshake). The relay and the persistent-only brokers are not run in them (this runner sets up no TLS or WebSocket listener for them).");
    let _ = writeln!(md, "- The Kafka cells (`kafka-*`) run ringmq-1shard (the only broker here with a Kafka bridge; in `kafka-out-*` also `ringmq-kafka-local` and `rdkafka-direct`, below) with a fresh tansu (in memory) pinned to the generator's core and the rules `[[kafka.to_kafka]] filter = \"rb/kout/+\"`, `topic = \"rb-out\"`, `key = \"client_id\"` (PUBACK once Kafka acknowledged the record) and `[[kafka.to_mqtt]] topic = \"rb-in\"`, `mqtt_topic = \"rb/kafka/{{key}}\"`, `qos = 1`: in `kafka-out-*` 10 MQTT publishers and a Kafka consumer (rdkafka, `fetch.wait.max.ms` 1) reading every partition from the end (latency is publish -> consumed); in `kafka-in-*` a Kafka producer (rdkafka, acks = all, 10 keys) and one MQTT subscriber (latency is produce -> delivered; in `kafka-in-max*` the producer goes as fast as librdkafka takes records while no more than 50,000 (5,000 a key on average) are ahead of the subscriber, the MQTT publishers' window in Kafka's terms). `ringmq-kafka-local` (`kafka-out-*` only) is ringmq-1shard with the same rule but `ack = \"local\"` and `durability sync`: the PUBACK leaves once the record is in the broker's local log on disk, and the bridge produces it to Kafka from there. Their CPU column adds tansu's CPU per message (\" + N tansu\"), which includes serving the generator's Kafka clients. `rdkafka-direct` (MQTT -> Kafka cells only) is no broker: the generator's own rdkafka producer (acks = all, idempotent) writes the same stamped records, 10 keys at the same rate (at max rate no more than the MQTT publishers' windows, 10 x 1,000, ahead of Kafka's answers), straight to `rb-out` for the same consumer, with the bridge's producer settings (`linger.ms` 5, lz4, 1 MiB batches): the other way users get device data into Kafka, and the floor for latency; it has no broker CPU (the producer's is the generator's).");
    let _ = writeln!(md, "- The cluster cells (`cluster-*`): `ringmq-cluster-2nodes` is two ringmq nodes clustered over a fresh tansu (`[kafka] partitions = 4, linger_ms = 1`, `[cluster] node_id` a and b), both on the broker core with one shard each, tansu on the generator's core; the publishers connect to node a, the subscribers to node b, so every message crosses Kafka. Its CPU column is node b's, then tansu's and node a's (\" + N tansu + N node a\"). `ringmq-cluster-3nodes` (`cluster-3-*`) is three such nodes, publisher i on node i mod 3 and its subscriber on the next node, so every message crosses; its CPU column is node a's + tansu's + node b's + node c's. `ringmq-1shard` beside them is one node carrying both sides.");
    let _ = writeln!(md, "- `relay` is `ringmq-bench relay`: a trivial single-threaded io_uring MQTT relay (exact topics, acks at once, no sessions). It is the floor for latency and a reference for what the generator and this machine's kernel sustain (a reference, not a hard ceiling: ringmq exceeds it slightly in some cells).");
    let _ = writeln!(md, "- These 2-vCPU machines are noisy (hypervisor steal); compare within one run, as ratios.\n");

    // Targets, from the P2P cells.
    let a = |b| find(outcomes, "p2p-max", b);
    let fixed = |b| find(outcomes, "p2p-30k", b);
    let _ = writeln!(
        md,
        "## Targets (P2P, 100 pairs, 64 B, QoS 1, ringmq on one core)\n"
    );
    let _ = writeln!(md, "| target | measured | met |\n|---|---|---|");
    let cpu = |r: Option<&Report>| r.and_then(|r| r.broker_cpu_us_per_message);
    let tput = |r: Option<&Report>| r.map(|r| r.delivered_per_second);
    let p99 = |r: Option<&Report>| r.map(|r| r.latency.p99_us);
    let us = |v: f64| format!("{v:.2} us");
    let rate = |v: f64| format!("{} msg/s", short(v));
    let ratio = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) if y > 0.0 => Some(x / y),
        _ => None,
    };
    // (what, ringmq's figure, the peer's figure, unit, the ratio that meets the target)
    type Check<'a> = (
        &'a str,
        Option<f64>,
        Option<f64>,
        &'a dyn Fn(f64) -> String,
        &'a dyn Fn(f64) -> bool,
    );
    let checks: [Check<'_>; 4] = [
        (
            "broker CPU per message <= 1/2 of rumqttd's",
            cpu(a(Broker::Ringmq1)),
            cpu(a(Broker::Rumqttd)),
            &us,
            &|r| r <= 0.5,
        ),
        (
            "broker CPU per message <= 1/10 of Mosquitto's",
            cpu(a(Broker::Ringmq1)),
            cpu(a(Broker::Mosquitto)),
            &us,
            &|r| r <= 0.1,
        ),
        (
            "max delivered msg/s >= 2x rumqttd's",
            tput(a(Broker::Ringmq1)),
            tput(a(Broker::Rumqttd)),
            &rate,
            &|r| r >= 2.0,
        ),
        (
            "p99 at 30k msg/s <= 1.5x the trivial relay's",
            p99(fixed(Broker::Ringmq1)).map(|v| v / 1000.0),
            p99(fixed(Broker::Relay)).map(|v| v / 1000.0),
            &|v| format!("{v:.2} ms"),
            &|r| r <= 1.5,
        ),
    ];
    for (what, ours, theirs, unit, ok) in checks {
        match (ratio(ours, theirs), ours, theirs) {
            (Some(r), Some(o), Some(t)) => {
                let _ = writeln!(
                    md,
                    "| {what} | {r:.3}x ({} vs {}) | {} |",
                    unit(o),
                    unit(t),
                    if ok(r) { "yes" } else { "no" }
                );
            }
            _ => {
                let _ = writeln!(md, "| {what} | not measured | - |");
            }
        }
    }
    match tput(a(Broker::Relay)) {
        Some(v) => {
            let met = if v > 500_000.0 { "yes" } else { "no" };
            let _ = writeln!(md, "| generator sustains > 500k delivered QoS 1 msg/s (against the relay) | {} | {met} |", rate(v));
        }
        None => {
            let _ = writeln!(md, "| generator sustains > 500k delivered QoS 1 msg/s (against the relay) | not measured | - |");
        }
    }
    md.push('\n');

    if let Some(h) = crate::figures::headline(cfg, brokers, outcomes)? {
        md.push_str(&h);
    }
    md.push_str("## Charts\n\n");
    md.push_str("Log scales (the brokers' figures span decades); a point per broker and cell, missing where a broker could not run the cell (its table row says why). Drawn from `bench-results/results.json` by `ringmq-bench compare --render-only` without measuring again.\n\n");
    md.push_str(&crate::figures::families(cfg, brokers, outcomes)?);
    md.push_str(&crate::published::section());
    md.push_str("## Results\n\n");
    // With several rounds: " (min-max)" of a figure; lost and duplicated summed over them.
    let range = |cell: &str,
                 b: Broker,
                 f: &dyn Fn(&Report) -> Option<f64>,
                 show: &dyn Fn(f64) -> String| {
        match crate::results::spread(outcomes, cell, b.name(), f) {
            Some((lo, hi, n)) if n > 1 => format!(" ({}-{})", show(lo), show(hi)),
            _ => String::new(),
        }
    };
    // A broker's name, and how many of its rounds failed if some did.
    let who = |cell: &str, b: Broker| match crate::results::failed(outcomes, cell, b.name()) {
        (0, _) => b.name().to_string(),
        (k, n) => format!("{} ({k} of {n} rounds failed)", b.name()),
    };
    let every = |cell: &str, b: Broker, f: &dyn Fn(&Report) -> u64| -> u64 {
        outcomes
            .iter()
            .filter(|o| o.cell == cell && o.broker == b.name())
            .filter_map(|o| o.report.as_ref().map(f))
            .sum()
    };
    for cell in cells {
        let _ = writeln!(md, "### {}\n", cell.title);
        match &cell.work {
            Work::Connections(_) => {
                let _ = writeln!(md, "| broker | conn/s | CONNACK p50 / p99 us | broker KiB per connection |\n|---|---|---|---|");
                for &b in brokers {
                    let o = outcome(outcomes, &cell.id, b);
                    match o {
                        Some(Outcome { conn: Some(c), .. }) => {
                            let _ = writeln!(
                                md,
                                "| {} | {:.0} | {:.0} / {:.0} | {} |",
                                who(&cell.id, b),
                                c.per_second,
                                c.connack_latency.p50_us,
                                c.connack_latency.p99_us,
                                c.broker_bytes_per_connection
                                    .map_or("-".into(), |v| format!("{:.1}", v / 1024.0))
                            );
                        }
                        Some(Outcome { error: Some(e), .. }) => {
                            let _ = writeln!(
                                md,
                                "| {} | failed: {} | | |",
                                b.name(),
                                e.replace('|', "/")
                            );
                        }
                        _ => {
                            if let Some(why) = b.not_run_because(&cell.setup(None)) {
                                let _ = writeln!(md, "| {} | not run: {why} | | |", b.name());
                            }
                        }
                    }
                }
            }
            Work::Messages(..) => {
                let _ = writeln!(md, "| broker | delivered msg/s | CPU us/msg | p50 / p99 / p99.9 ms | peak RSS MiB | lost / dup (all rounds) | ringmq-1shard CPU ratio | throughput ratio | limited by |\n|---|---|---|---|---|---|---|---|---|");
                let ours = find(outcomes, &cell.id, Broker::Ringmq1);
                for &b in brokers {
                    let o = outcome(outcomes, &cell.id, b);
                    match o {
                        Some(Outcome {
                            report: Some(r), ..
                        }) => {
                            let cpu_ratio = ratio(
                                ours.and_then(|o| o.broker_cpu_us_per_message),
                                r.broker_cpu_us_per_message,
                            );
                            let tput_ratio = ratio(
                                ours.map(|o| o.delivered_per_second),
                                Some(r.delivered_per_second),
                            );
                            let _ = writeln!(
                                md,
                                "| {} | {} | {} | {:.2} / {:.2} / {:.2} | {} | {} / {} | {} | {} | {} |",
                                who(&cell.id, b),
                                short(r.delivered_per_second)
                                    + &range(
                                        &cell.id,
                                        b,
                                        &|r| Some(r.delivered_per_second),
                                        &short
                                    ),
                                r.broker_cpu_us_per_message
                                    .map_or("-".into(), |v| format!("{v:.2}"))
                                    + &range(
                                        &cell.id,
                                        b,
                                        &|r| r.broker_cpu_us_per_message,
                                        &|v| format!("{v:.2}")
                                    )
                                    + &helpers_cpu(r, b.helper_names(cell.kafka())),
                                r.latency.p50_us / 1000.0,
                                r.latency.p99_us / 1000.0,
                                r.latency.p999_us / 1000.0,
                                r.broker_peak_rss_bytes
                                    .map_or("-".into(), |v| format!("{:.0}", v as f64 / 1048576.0)),
                                every(&cell.id, b, &|r| r.lost),
                                every(&cell.id, b, &|r| r.duplicated),
                                cpu_ratio.map_or("-".into(), |v| format!("{v:.2}")),
                                tput_ratio.map_or("-".into(), |v| format!("{v:.2}")),
                                limited_by(r, b, b.helper_names(cell.kafka())),
                            );
                        }
                        Some(Outcome { error: Some(e), .. }) => {
                            let _ = writeln!(
                                md,
                                "| {} | not run: {} | | | | | | | |",
                                b.name(),
                                e.replace('|', "/")
                            );
                        }
                        _ => {
                            if let Some(why) = b.not_run_because(&cell.setup(None)) {
                                let _ =
                                    writeln!(md, "| {} | not run: {why} | | | | | | | |", b.name());
                            }
                        }
                    }
                }
            }
        }
        md.push('\n');
    }
    md.push_str("Ratios are ringmq-1shard divided by the row's broker: below 1 is less CPU per message; above 1 is more throughput.\n");
    let _ = writeln!(md, "\n\"Limited by\" is read from the CPU each run recorded over its window (the median round's): \"offered load\" when a paced cell delivered at least 90% of what was offered (however busy a core was); otherwise \"broker core\" when the broker's core was at least {:.0}% busy (the broker process, and a cluster's other nodes), \"generator core\" when the other core was (the generator process and the servers pinned beside it: tansu, Redis), \"both cores\" for both (and for `ringmq-2shards`, whose shards use both, when the two together were), else \"windows\" (neither core full: the publishers' inflight windows and the round trips held the rate). /proc does not see the hypervisor's steal, so a core shown at 80-85% may have been full.", crate::limits::FULL * 100.0);
    Ok(md)
}
