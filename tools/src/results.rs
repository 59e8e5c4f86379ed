//! `bench-results/results.json`: the raw numbers of a comparison run, kept so the report and
//! its charts can be written again without measuring — every round of every (cell, broker),
//! and the run's method facts (machine, versions, mode, duration, notes), which belong to the
//! run and not to whoever renders it later.

use std::path::Path;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::compare::Outcome;
use crate::report::Report;

/// The facts of a run the report's method section states.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Run {
    /// CPUs, memory, kernel.
    pub machine: String,
    /// ringmq (commit) and the peers' versions.
    pub versions: String,
    /// `quick` or `full`.
    pub mode: String,
    /// Rounds per (cell, broker) (0: not recorded).
    pub rounds: u32,
    /// Wall time of the whole run, seconds (0: not recorded).
    pub took_seconds: f64,
    /// Anything else a reader must know (cells re-run later, and where).
    #[serde(default)]
    pub notes: Vec<String>,
}

/// What results.json holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// The run's facts.
    pub run: Run,
    /// Every measurement, each round its own entry.
    pub outcomes: Vec<Outcome>,
}

impl Results {
    /// Reads `path`; a file from before the run's facts were kept (a bare list) reads with
    /// empty facts.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        let parse = || format!("parse {}", path.display());
        if text.trim_start().starts_with('[') {
            let outcomes: Vec<Outcome> = serde_json::from_str(&text).with_context(parse)?;
            return Ok(Self {
                run: Run::default(),
                outcomes,
            });
        }
        serde_json::from_str(&text).with_context(parse)
    }

    /// Writes `path`.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("write {}", path.display()))
    }
}

/// The rate a round is ranked by: delivered msg/s, or connections per second.
fn rate(o: &Outcome) -> Option<f64> {
    o.report
        .as_ref()
        .map(|r| r.delivered_per_second)
        .or_else(|| o.conn.as_ref().map(|c| c.per_second))
}

/// The median round of one (cell, broker) by its rate (with an even count, the lower of the
/// two middle ones), among the rounds that measured something; the first failure if none did.
pub fn median<'a>(outcomes: &'a [Outcome], cell: &str, broker: &str) -> Option<&'a Outcome> {
    let rounds: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| o.cell == cell && o.broker == broker)
        .collect();
    let mut measured: Vec<(f64, &Outcome)> =
        rounds.iter().filter_map(|o| Some((rate(o)?, *o))).collect();
    if measured.is_empty() {
        return rounds.first().copied();
    }
    measured.sort_by(|a, b| a.0.total_cmp(&b.0));
    measured.get((measured.len() - 1) / 2).map(|(_, o)| *o)
}

/// How many rounds of (cell, broker) failed, of how many.
pub fn failed(outcomes: &[Outcome], cell: &str, broker: &str) -> (usize, usize) {
    let rounds = outcomes
        .iter()
        .filter(|o| o.cell == cell && o.broker == broker);
    rounds.fold((0, 0), |(f, n), o| {
        (f + usize::from(rate(o).is_none()), n + 1)
    })
}

/// The median round's message report of (cell, broker).
pub fn report<'a>(outcomes: &'a [Outcome], cell: &str, broker: &str) -> Option<&'a Report> {
    median(outcomes, cell, broker).and_then(|o| o.report.as_ref())
}

/// The smallest and largest of `f` over the rounds of (cell, broker) that have a report.
pub fn spread(
    outcomes: &[Outcome],
    cell: &str,
    broker: &str,
    f: &dyn Fn(&Report) -> Option<f64>,
) -> Option<(f64, f64, usize)> {
    let values: Vec<f64> = outcomes
        .iter()
        .filter(|o| o.cell == cell && o.broker == broker)
        .filter_map(|o| o.report.as_ref().and_then(f))
        .collect();
    let lo = values.iter().copied().reduce(f64::min)?;
    let hi = values.iter().copied().reduce(f64::max)?;
    Some((lo, hi, values.len()))
}

/// CPUs, memory and kernel of this machine.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        .unwrap_or_default();
    // Count from /proc: this thread is pinned, so available_parallelism would say 1.
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!("{cores} x {cpu}, {mem} GiB, Linux {}", kernel.trim())
}

/// The first line `cmd args` prints, or "CMD not installed".
pub fn version_of(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{cmd} not installed"))
}

/// ringmq's version and commit and the peers' versions, as the method section states them.
pub fn versions() -> String {
    format!(
        "ringmq {} ({}), {}, {}, {}",
        env!("CARGO_PKG_VERSION"),
        version_of("git", &["rev-parse", "--short", "HEAD"]),
        version_of("mosquitto", &["-h"]),
        version_of("rumqttd", &["--version"]),
        version_of(
            &crate::brokers::tansu_bin().to_string_lossy(),
            &["--version"]
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(broker: &str, tput: Option<f64>) -> Outcome {
        Outcome {
            round: 0,
            cell: "c".into(),
            broker: broker.into(),
            report: tput.map(|t| Report {
                delivered_per_second: t,
                broker_cpu_us_per_message: Some(1e6 / t),
                ..Default::default()
            }),
            conn: None,
            error: tput.is_none().then(|| "failed".into()),
        }
    }

    #[test]
    fn the_median_round_and_the_spread() {
        let o = vec![
            outcome("a", Some(3.0)),
            outcome("a", Some(1.0)),
            outcome("b", None),
            outcome("a", Some(2.0)),
            outcome("a", None),
        ];
        let m = median(&o, "c", "a").unwrap();
        assert_eq!(m.report.as_ref().unwrap().delivered_per_second, 2.0);
        assert!(
            median(&o, "c", "b").unwrap().error.is_some(),
            "a failure shows"
        );
        assert!(median(&o, "c", "z").is_none());
        assert_eq!(failed(&o, "c", "a"), (1, 4));
        let (lo, hi, n) = spread(&o, "c", "a", &|r| Some(r.delivered_per_second)).unwrap();
        assert_eq!((lo, hi, n), (1.0, 3.0, 3));
    }

    #[test]
    fn a_bare_list_reads_with_empty_facts() {
        let dir = std::env::temp_dir().join(format!("ringmq-results-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("results.json");
        let list = vec![outcome("a", Some(1.0))];
        std::fs::write(&path, serde_json::to_string(&list).unwrap()).unwrap();
        let r = Results::load(&path).unwrap();
        assert_eq!((r.outcomes.len(), r.run.machine.as_str()), (1, ""));
        // A broken file of the current shape says what is wrong with it.
        std::fs::write(&path, r#"{"run": {"rounds": "x"}, "outcomes": []}"#).unwrap();
        let e = format!("{:#}", Results::load(&path).unwrap_err());
        assert!(e.contains("rounds") || e.contains("invalid type"), "{e}");
        let r = Results {
            run: Run {
                machine: "m".into(),
                rounds: 3,
                ..Default::default()
            },
            outcomes: list,
        };
        r.save(&path).unwrap();
        let back = Results::load(&path).unwrap();
        assert_eq!((back.run.machine.as_str(), back.run.rounds), ("m", 3));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
