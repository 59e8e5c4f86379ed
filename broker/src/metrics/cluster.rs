//! A cluster node's facts outside the shards' counters: its id, its peers (each live or
//! not), and the cross-node message rates over the last `$SYS` interval, exported as
//! `$SYS/broker/cluster/...` topics and Prometheus series.

use std::fmt::Write;
use std::sync::Mutex;
use std::time::Instant;

/// The node's id and its peers (the other numbered nodes: live, or dead for less than
/// `cluster.node_keep_ms`), sorted by id, each with whether it is live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    pub node: String,
    pub peers: Vec<(Box<str>, bool)>,
}

/// Where the facts are read from (set once at start by a cluster node).
pub type FactsFn = Box<dyn Fn() -> Facts + Send + Sync>;

/// The cross-node counters at the previous `$SYS` publication, for the rates; the peers
/// published then (a peer no longer listed gets its retained topic cleared).
#[derive(Debug, Default)]
pub struct SysState {
    last: Mutex<Option<(Instant, u64, u64)>>,
    peers: Mutex<Vec<Box<str>>>,
}

impl SysState {
    /// The peers published last time that `facts` no longer lists; `facts`' are kept for
    /// the next call.
    pub fn gone_peers(&self, facts: &Facts) -> Vec<Box<str>> {
        let mut last = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        let now: Vec<Box<str>> = facts.peers.iter().map(|(id, _)| id.clone()).collect();
        let gone = last
            .iter()
            .filter(|id| !now.contains(id))
            .cloned()
            .collect();
        *last = now;
        gone
    }

    /// Messages per second out (copies acknowledged by Kafka for other nodes) and in (from
    /// this node's downlink, published here) since the previous call; `None` on the first.
    pub fn per_second(&self, now: Instant, out: u64, into: u64) -> Option<(u64, u64)> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before = last.replace((now, out, into));
        let (then, out0, in0) = before?;
        let secs = now.duration_since(then).as_secs_f64();
        if secs <= 0.0 {
            return None;
        }
        let rate = |a: u64, b: u64| (a.saturating_sub(b) as f64 / secs).round() as u64;
        Some((rate(out, out0), rate(into, in0)))
    }
}

/// The `$SYS` topics: `cluster/node` (this node's id), `cluster/peers` (the live peers'
/// ids, comma-separated, sorted), `cluster/peer/ID` (`live` or `dead`) per numbered peer, an
/// empty value (which clears the retained topic) for each peer in `gone`, and with `rates`
/// `cluster/out_per_second`, `cluster/in_per_second`.
pub fn sys_topics(
    facts: &Facts,
    gone: &[Box<str>],
    rates: Option<(u64, u64)>,
    out: &mut Vec<(String, String)>,
) {
    out.push(("$SYS/broker/cluster/node".into(), facts.node.clone()));
    let live: Vec<&str> = facts
        .peers
        .iter()
        .filter(|(_, live)| *live)
        .map(|(id, _)| &**id)
        .collect();
    out.push(("$SYS/broker/cluster/peers".into(), live.join(",")));
    for (id, live) in &facts.peers {
        let state = if *live { "live" } else { "dead" };
        out.push((
            format!("$SYS/broker/cluster/peer/{}", super::topic_level(id)),
            state.into(),
        ));
    }
    for id in gone {
        out.push((
            format!("$SYS/broker/cluster/peer/{}", super::topic_level(id)),
            String::new(),
        ));
    }
    if let Some((o, i)) = rates {
        out.push(("$SYS/broker/cluster/out_per_second".into(), o.to_string()));
        out.push(("$SYS/broker/cluster/in_per_second".into(), i.to_string()));
    }
}

/// The Prometheus series `ringmq_cluster_peer_live{node="ID"}` (1 or 0) per numbered peer.
pub fn prometheus(facts: &Facts, out: &mut String) {
    let name = "ringmq_cluster_peer_live";
    let _ = writeln!(out, "# HELP {name} 1 while the peer node's heartbeat is recent, 0 once it is dead (listed until forgotten, cluster.node_keep_ms after its last heartbeat).");
    let _ = writeln!(out, "# TYPE {name} gauge");
    for (id, live) in &facts.peers {
        let _ = writeln!(
            out,
            "{name}{{node=\"{}\"}} {}",
            super::label_value(id),
            u8::from(*live)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn facts() -> Facts {
        Facts {
            node: "a".into(),
            peers: vec![
                ("b".into(), true),
                ("c/x".into(), false),
                ("d".into(), true),
            ],
        }
    }

    #[test]
    fn sys_topics_name_the_node_its_live_peers_and_each_peers_state() {
        let mut out = Vec::new();
        sys_topics(&facts(), &["e".into()], Some((10, 20)), &mut out);
        let want: Vec<(String, String)> = [
            ("$SYS/broker/cluster/node", "a"),
            ("$SYS/broker/cluster/peers", "b,d"),
            ("$SYS/broker/cluster/peer/b", "live"),
            ("$SYS/broker/cluster/peer/c%2Fx", "dead"),
            ("$SYS/broker/cluster/peer/d", "live"),
            ("$SYS/broker/cluster/peer/e", ""),
            ("$SYS/broker/cluster/out_per_second", "10"),
            ("$SYS/broker/cluster/in_per_second", "20"),
        ]
        .iter()
        .map(|(t, v)| (t.to_string(), v.to_string()))
        .collect();
        assert_eq!(out, want);
    }

    #[test]
    fn prometheus_has_a_series_per_peer() {
        let mut out = String::new();
        prometheus(&facts(), &mut out);
        assert!(out.contains("ringmq_cluster_peer_live{node=\"b\"} 1\n"));
        assert!(out.contains("ringmq_cluster_peer_live{node=\"c/x\"} 0\n"));
        assert!(out.contains("# TYPE ringmq_cluster_peer_live gauge\n"));
    }

    #[test]
    fn peers_no_longer_listed_are_gone_once() {
        let r = SysState::default();
        assert!(r.gone_peers(&facts()).is_empty());
        let fewer = Facts {
            node: "a".into(),
            peers: vec![("d".into(), true)],
        };
        let gone = r.gone_peers(&fewer);
        assert_eq!(gone, vec![Box::<str>::from("b"), "c/x".into()]);
        assert!(r.gone_peers(&fewer).is_empty());
    }

    #[test]
    fn rates_count_from_the_previous_call() {
        let r = SysState::default();
        let t = Instant::now();
        assert_eq!(r.per_second(t, 100, 50), None);
        let t2 = t + Duration::from_secs(2);
        assert_eq!(r.per_second(t2, 300, 50), Some((100, 0)));
        // A counter that went back (never, but) counts as no messages.
        assert_eq!(
            r.per_second(t2 + Duration::from_secs(1), 0, 60),
            Some((0, 10))
        );
    }
}
