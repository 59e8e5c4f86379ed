//! What limited a measured run, from the CPU it recorded: the broker's core full, the
//! generator's core full (with the servers pinned beside it: tansu, Redis), both, or
//! neither (the publishers' windows and round trips); or nothing, when a paced run delivered
//! what was offered. The report's "limited by" column.

use crate::brokers::Broker;
use crate::report::Report;

/// A core counts as full when at least this share of it was busy over the window (CPU time
/// from /proc, which does not see the hypervisor's steal).
pub(crate) const FULL: f64 = 0.85;

/// Busy shares of the two cores over a run's window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Busy {
    /// The broker's core: the broker process and, in a cluster, its other nodes.
    pub broker: f64,
    /// The generator's core: the generator process and the servers beside it.
    pub generator: f64,
}

/// How busy each core was in `r`, the helpers named in order by `helpers` (a name starting
/// with "node" is another broker node on the broker's core; others are servers on the
/// generator's).
pub(crate) fn busy(r: &Report, helpers: &[&str]) -> Option<Busy> {
    if r.window_seconds <= 0.0 {
        return None;
    }
    let mut b = Busy {
        broker: r.broker_cpu_seconds.unwrap_or(0.0) / r.window_seconds,
        generator: r.loadgen_cpu_seconds / r.window_seconds,
    };
    for ((_, us), name) in r.others_cpu_us_per_message.iter().zip(helpers) {
        let share = us * r.delivered_per_second / 1e6;
        if name.starts_with("node") {
            b.broker += share;
        } else {
            b.generator += share;
        }
    }
    Some(b)
}

/// A paced run delivered (nearly) what was offered: the offered PUBLISH rate times the
/// copies each message had (distinct deliveries over the run per PUBLISH sent).
fn kept_up(r: &Report) -> bool {
    let copies = if r.sent > 0 {
        r.delivered as f64 / r.sent as f64
    } else {
        1.0
    };
    let offered = r.rate_per_publisher * r.publishers as f64 * copies;
    r.rate_per_publisher > 0.0 && r.delivered_per_second >= 0.9 * offered
}

/// What limited `r`, run by `broker` with `helpers` beside it, in a few words.
pub(crate) fn limited_by(r: &Report, broker: Broker, helpers: &[&str]) -> String {
    let Some(b) = busy(r, helpers) else {
        return "-".into();
    };
    let pct = |v: f64| format!("{:.0}%", v * 100.0);
    // The servers measured beside the generator (a helper without a figure is not named).
    let servers: Vec<&str> = (helpers.iter().zip(&r.others_cpu_us_per_message))
        .map(|(h, _)| *h)
        .filter(|h| !h.starts_with("node"))
        .collect();
    let beside: String = servers.iter().map(|h| format!(" + {h}")).collect();
    let shares = format!(
        "broker {}, generator{beside} {}",
        pct(b.broker),
        pct(b.generator)
    );
    if kept_up(r) {
        // Nothing held it below what was offered, however busy a core was.
        return format!("offered load ({shares})");
    }
    if broker == Broker::Ringmq2 {
        // Its shards run on both cores, one of them the generator's.
        let both = (b.broker + b.generator) / 2.0;
        return if both >= FULL {
            format!("both cores ({shares})")
        } else {
            format!("windows ({shares})")
        };
    }
    match (b.broker >= FULL, b.generator >= FULL) {
        (true, true) => format!("both cores ({shares})"),
        (true, false) => format!("broker core ({shares})"),
        (false, true) => format!("generator core ({shares})"),
        (false, false) => format!("windows ({shares})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(broker_cpu: f64, loadgen_cpu: f64, rate: f64) -> Report {
        Report {
            window_seconds: 2.0,
            delivered_per_second: 100_000.0,
            broker_cpu_seconds: Some(broker_cpu),
            loadgen_cpu_seconds: loadgen_cpu,
            rate_per_publisher: rate,
            publishers: 100,
            ..Default::default()
        }
    }

    /// The full core is named; servers beside the generator and other nodes beside the
    /// broker count on their cores; a paced run that delivered what was offered is the offered load.
    #[test]
    fn the_full_core_is_named() {
        let r = report(1.9, 1.0, 0.0);
        assert!(limited_by(&r, Broker::Ringmq1, &[]).starts_with("broker core (broker 95%"));
        let r = report(1.0, 1.9, 0.0);
        assert!(limited_by(&r, Broker::Ringmq1, &[]).starts_with("generator core"));
        let paced = report(0.4, 0.6, 300.0);
        assert!(limited_by(&paced, Broker::Ringmq1, &[]).starts_with("offered load"));
        // Offered 200k, delivered 100k, neither core full: not the offered load.
        let behind = report(0.4, 0.6, 2000.0);
        assert!(limited_by(&behind, Broker::Ringmq1, &["Redis"])
            .starts_with("windows (broker 20%, generator 30%)"));
        assert!(limited_by(&report(0.4, 0.6, 0.0), Broker::Ringmq1, &[]).starts_with("windows"));
        // tansu at 8 us x 100k msg/s = 80% of the generator's core, plus its own 10%.
        let mut k = report(1.0, 0.2, 0.0);
        k.others_cpu_us_per_message = vec![(1, 8.0)];
        let said = limited_by(&k, Broker::Ringmq1, &["tansu"]);
        assert_eq!(said, "generator core (broker 50%, generator + tansu 90%)");
        // Node a on the broker's core.
        let mut c = report(1.0, 0.2, 0.0);
        c.others_cpu_us_per_message = vec![(1, 1.0), (2, 5.0)];
        let b = busy(&c, &["tansu", "node a"]).expect("busy");
        assert!((b.broker - 1.0).abs() < 1e-9 && (b.generator - 0.2).abs() < 1e-9);
        // Two shards over both cores: 90% and 80% busy, 85% together.
        let r = report(1.8, 1.6, 0.0);
        assert!(limited_by(&r, Broker::Ringmq2, &[]).starts_with("both cores"));
    }
}
