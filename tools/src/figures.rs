//! Which charts BENCHMARKS.md shows, drawn from the outcomes of a run (or of `results.json`,
//! so they can be redrawn without measuring again): the headline, one figure per scenario
//! family (P2P by payload at each QoS, latency percentile curves of the paced cells, broker
//! memory over time in the long cells, the other topologies, and TLS, WebSocket, JSON, Kafka
//! and clusters at max rate and paced), each written as an SVG next to `results.json`.

use std::fmt::Write as _;
use std::path::Path;

use crate::compare::{find, Broker, CompareConfig, Outcome};
use crate::plot::{bars, panels, timeline, Bar, Panel, Series, Trace};
use crate::report::Report;

/// Payloads of the P2P matrix, with their labels.
const PAYLOADS: [(usize, &str); 4] = [
    (16, "16 B"),
    (64, "64 B"),
    (1024, "1 KiB"),
    (16384, "16 KiB"),
];

/// The paced cells whose latency distributions are drawn, with their titles.
const PACED: [(&str, &str); 3] = [
    ("p2p-30k", "100 pairs, 30k msg/s"),
    ("p2p-1000-qos0", "1000 pairs QoS 0, 20k msg/s"),
    ("p2p-5000", "5000 pairs, 150k msg/s"),
];

/// The paced cells beyond plain P2P whose latency distributions are drawn.
const PACED_BEYOND: [(&str, &str); 6] = [
    ("p2p-30k-tls", "TLS, 30k msg/s"),
    ("p2p-30k-ws", "WebSocket, 30k msg/s"),
    ("p2p-30k-json", "JSON validated, 30k msg/s"),
    ("kafka-out-30k", "MQTT -> Kafka, 30k msg/s"),
    ("kafka-in-30k", "Kafka -> MQTT, 30k msg/s"),
    ("cluster-2-10k", "two nodes, 10k msg/s"),
];

/// The max-rate cells beyond plain P2P, drawn side by side.
const BEYOND: [(&str, &str); 8] = [
    ("p2p-max", "TCP"),
    ("p2p-max-tls", "TLS"),
    ("p2p-max-ws", "WS"),
    ("p2p-max-json", "JSON"),
    ("kafka-out-max", "out"),
    ("kafka-in-max", "in"),
    ("cluster-2-max", "2n"),
    ("cluster-3-max", "3n"),
];

/// The long cells whose broker memory is drawn over time, with their titles.
const LONG: [(&str, &str); 1] = [(
    "soak-5000",
    "5000 persistent device pairs, 10 msg/s each: broker RSS over the run",
)];

/// The other topologies, drawn side by side.
const TOPOLOGIES: [(&str, &str); 6] = [
    ("p2p-max", "p2p"),
    ("fan-in", "fan-in"),
    ("fan-in-1000", "fan-in 1000"),
    ("fan-in-shared", "shared"),
    ("fan-out", "fan-out"),
    ("p2p-persistent", "persistent"),
];

/// One series per broker over `cells`, valued by `f`.
fn series(
    outcomes: &[Outcome],
    brokers: &[Broker],
    cells: &[String],
    f: &dyn Fn(&Report) -> Option<f64>,
) -> Vec<Series> {
    brokers
        .iter()
        .map(|&b| Series {
            name: b.name().into(),
            values: cells
                .iter()
                .map(|c| find(outcomes, c, b).and_then(f))
                .collect(),
        })
        .collect()
}

fn has_data(panels: &[Panel]) -> bool {
    panels
        .iter()
        .flat_map(|p| &p.series)
        .flat_map(|s| s.values.iter().flatten())
        .any(|v| *v > 0.0)
}

/// The figure of `panels` written as `file` (nothing if no panel has a point); the markdown
/// that shows it.
fn figure(
    cfg: &CompareConfig,
    file: &str,
    title: &str,
    unit: &str,
    p: &[Panel],
    lines: bool,
) -> anyhow::Result<String> {
    if !has_data(p) {
        return Ok(String::new());
    }
    write(cfg, file, &panels(title, unit, p, lines)?)
}

/// A report's peak RSS in MiB.
fn rss_mib(r: &Report) -> Option<f64> {
    r.broker_peak_rss_bytes.map(|b| b as f64 / 1048576.0)
}

/// Writes `svg` as `file` next to the results; the markdown that shows it.
fn write(cfg: &CompareConfig, file: &str, svg: &str) -> anyhow::Result<String> {
    std::fs::write(cfg.out.join(file), svg)?;
    let base = cfg.report.parent().unwrap_or(Path::new("."));
    let path = cfg.out.join(file);
    let rel = path
        .strip_prefix(base)
        .unwrap_or(&path)
        .display()
        .to_string();
    Ok(format!("![{file}]({rel})\n\n"))
}

/// The headline figure: P2P QoS 1 64 B at max rate, delivered msg/s and broker CPU per
/// message, one bar per broker (relay last: it is the floor, not a broker).
pub fn headline(
    cfg: &CompareConfig,
    brokers: &[Broker],
    outcomes: &[Outcome],
) -> anyhow::Result<Option<String>> {
    // ringmq-sync and the Redis-backed brokers run only the cells with persistent sessions.
    let mut order: Vec<Broker> = brokers
        .iter()
        .copied()
        .filter(|b| *b != Broker::Relay && !b.persistent_only())
        .collect();
    if brokers.contains(&Broker::Relay) {
        order.push(Broker::Relay);
    }
    let bar = |f: &dyn Fn(&Report) -> Option<f64>| -> Vec<Bar> {
        order
            .iter()
            .map(|&b| Bar {
                name: b.name().into(),
                value: find(outcomes, "p2p-max", b).and_then(f),
            })
            .collect()
    };
    let tput = bar(&|r| Some(r.delivered_per_second));
    if tput.iter().all(|b| b.value.is_none()) {
        return Ok(None);
    }
    let title = format!(
        "P2P, 100 pairs, QoS 1, 64 B, max rate (broker on core {}; ringmq-2shards on both cores)",
        cfg.broker_core
    );
    let svg = bars(
        &title,
        &[
            ("delivered msg/s (more is better)", "msg/s", tput),
            (
                "broker CPU per message (less is better)",
                "us",
                bar(&|r| r.broker_cpu_us_per_message),
            ),
        ],
    )?;
    write(cfg, "headline.svg", &svg).map(Some)
}

/// The figures of every scenario family the outcomes have, as markdown (charts written).
pub fn families(
    cfg: &CompareConfig,
    brokers: &[Broker],
    outcomes: &[Outcome],
) -> anyhow::Result<String> {
    let mut md = String::new();
    // P2P by payload, a panel per QoS: max rate throughput and CPU, p99 at 30k offered.
    let by_payload = |kind: &str, f: &dyn Fn(&Report) -> Option<f64>| -> Vec<Panel> {
        (0..3u8)
            .map(|q| {
                let cells: Vec<String> = PAYLOADS
                    .iter()
                    .map(|(p, _)| crate::matrix::grid_id(kind, q, *p))
                    .collect();
                Panel {
                    title: format!("QoS {q}"),
                    x_labels: PAYLOADS.iter().map(|(_, l)| (*l).to_string()).collect(),
                    series: series(outcomes, brokers, &cells, f),
                }
            })
            .collect()
    };
    let figures: [(&str, &str, &str, Vec<Panel>); 3] = [
        (
            "p2p-throughput-by-payload.svg",
            "P2P, 100 pairs, max rate: delivered msg/s by payload",
            "msg/s",
            by_payload("max", &|r| Some(r.delivered_per_second)),
        ),
        (
            "p2p-cpu-by-payload.svg",
            "P2P, 100 pairs, max rate: broker CPU per message by payload",
            "us per message",
            by_payload("max", &|r| r.broker_cpu_us_per_message),
        ),
        (
            "p2p-p99-by-payload.svg",
            "P2P, 100 pairs, 30k msg/s offered: p99 latency by payload",
            "ms",
            by_payload("30k", &|r| Some(r.latency.p99_us / 1000.0)),
        ),
    ];
    for (file, title, unit, p) in figures {
        md.push_str(&figure(cfg, file, title, unit, &p, true)?);
    }
    // The TBMQ shape: phases of rising offered load.
    let phases: Vec<String> = crate::matrix::TBMQ_PHASES
        .iter()
        .map(|(label, _)| format!("tbmq-{label}"))
        .collect();
    let offered: Vec<String> = crate::matrix::TBMQ_PHASES
        .iter()
        .map(|(label, _)| (*label).to_string())
        .collect();
    let phase = |title: &str, f: &dyn Fn(&Report) -> Option<f64>| Panel {
        title: title.into(),
        x_labels: offered.clone(),
        series: series(outcomes, brokers, &phases, f),
    };
    let p = [
        phase("delivered msg/s", &|r| Some(r.delivered_per_second)),
        phase("p99 latency, ms", &|r| Some(r.latency.p99_us / 1000.0)),
        phase("broker CPU, % of one core", &|r| {
            Some(r.broker_cpu_seconds? / r.window_seconds * 100.0)
        }),
        phase("broker peak RSS, MiB", &rss_mib),
    ];
    let title = "TBMQ shape: 5,000 persistent device pairs, QoS 1, 64 B, by offered msg/s";
    md.push_str(&figure(cfg, "tbmq-phases.svg", title, "", &p, true)?);
    let title =
        "Publish-to-delivery latency percentiles at fixed offered rates (QoS 1 unless said)";
    md.push_str(&percentiles(
        cfg,
        brokers,
        outcomes,
        &PACED,
        "latency-percentiles.svg",
        title,
    )?);
    let title =
        "Latency percentiles over TLS, WebSocket, JSON validated, Kafka and a cluster (QoS 1)";
    let file = "latency-percentiles-beyond.svg";
    md.push_str(&percentiles(
        cfg,
        brokers,
        outcomes,
        &PACED_BEYOND,
        file,
        title,
    )?);
    // Memory over time in the long cells: each broker's median round.
    for (cell, title) in LONG {
        let traces: Vec<Trace> = brokers
            .iter()
            .filter_map(|&b| {
                let r = find(outcomes, cell, b)?;
                (!r.broker_rss_mib.is_empty()).then(|| Trace {
                    name: b.name().into(),
                    points: r.broker_rss_mib.clone(),
                })
            })
            .collect();
        if !traces.is_empty() {
            let svg = timeline(title, "MiB", &traces)?;
            md.push_str(&write(cfg, &format!("{cell}-rss.svg"), &svg)?);
        }
    }
    // The other topologies, and P2P beyond plain TCP: points only (the x positions are not
    // an order).
    let title = "Topologies (see the tables for each cell's load)";
    md.push_str(&points(
        cfg,
        brokers,
        outcomes,
        &TOPOLOGIES,
        "topologies.svg",
        title,
    )?);
    let title = "Max rate: P2P over TCP, TLS, WebSocket, JSON validated; MQTT -> Kafka (out), Kafka -> MQTT (in); 2 and 3 nodes (2n, 3n)";
    md.push_str(&points(
        cfg,
        brokers,
        outcomes,
        &BEYOND,
        "beyond.svg",
        title,
    )?);
    if md.is_empty() {
        let _ = writeln!(md, "(no chart: no cell with results)\n");
    }
    Ok(md)
}

/// Latency percentile curves (p50 to max) of `cells`, a panel each (p99.99 only where the
/// results have it: runs before it was kept do not); markdown, empty when none has data.
fn percentiles(
    cfg: &CompareConfig,
    brokers: &[Broker],
    outcomes: &[Outcome],
    cells: &[(&str, &str)],
    file: &str,
    title: &str,
) -> anyhow::Result<String> {
    let p9999 = cells.iter().any(|(cell, _)| {
        brokers
            .iter()
            .any(|&b| find(outcomes, cell, b).is_some_and(|r| r.latency.p9999_us > 0.0))
    });
    let quantiles: Vec<&str> = ["p50", "p90", "p99", "p99.9", "p99.99", "max"]
        .into_iter()
        .filter(|q| p9999 || *q != "p99.99")
        .collect();
    let curve = |r: &Report| -> Vec<Option<f64>> {
        let l = &r.latency;
        [
            l.p50_us, l.p90_us, l.p99_us, l.p999_us, l.p9999_us, l.max_us,
        ]
        .iter()
        .enumerate()
        .filter(|(i, _)| p9999 || *i != 4)
        .map(|(_, us)| Some(us / 1000.0))
        .collect()
    };
    let p: Vec<Panel> = cells
        .iter()
        .map(|(cell, title)| Panel {
            title: (*title).into(),
            x_labels: quantiles.iter().map(|q| (*q).to_string()).collect(),
            series: brokers
                .iter()
                .map(|&b| Series {
                    name: b.name().into(),
                    values: find(outcomes, cell, b).map_or(vec![None; quantiles.len()], &curve),
                })
                .collect(),
        })
        .filter(|p| has_data(std::slice::from_ref(p)))
        .collect();
    figure(cfg, file, title, "ms", &p, true)
}

/// Delivered msg/s, broker CPU per message and peak RSS of `cells` side by side, a point
/// per broker; markdown, empty when none has data.
fn points(
    cfg: &CompareConfig,
    brokers: &[Broker],
    outcomes: &[Outcome],
    cells: &[(&str, &str)],
    file: &str,
    title: &str,
) -> anyhow::Result<String> {
    let ids: Vec<String> = cells.iter().map(|(c, _)| (*c).to_string()).collect();
    let labels: Vec<String> = cells.iter().map(|(_, l)| (*l).to_string()).collect();
    let panel = |title: &str, f: &dyn Fn(&Report) -> Option<f64>| Panel {
        title: title.into(),
        x_labels: labels.clone(),
        series: series(outcomes, brokers, &ids, f),
    };
    let p = [
        panel("delivered msg/s", &|r| Some(r.delivered_per_second)),
        panel("broker CPU us per message", &|r| {
            r.broker_cpu_us_per_message
        }),
        panel("broker peak RSS, MiB", &rss_mib),
    ];
    figure(cfg, file, title, "", &p, false)
}
