//! CPU time and memory of a process (the broker under test), read from /proc: samples, and
//! its resident memory over a run ([`RssTrace`]).

use std::fs;
use std::time::{Duration, Instant};

/// How often an [`RssTrace`] samples.
pub const TRACE_EVERY: Duration = Duration::from_millis(500);

/// Points an [`RssTrace`] keeps at most (an hour at [`TRACE_EVERY`]).
pub const TRACE_MAX: usize = 7_200;

/// A sample of a process's resource use.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcSample {
    /// User + system CPU seconds so far.
    pub cpu_seconds: f64,
    /// Resident set size now, in bytes.
    pub rss_bytes: u64,
    /// Peak resident set size so far (VmHWM), in bytes.
    pub peak_rss_bytes: u64,
}

/// Reads `/proc/PID/stat` and `/proc/PID/status`; `None` if the process is gone.
pub fn sample(pid: u32) -> Option<ProcSample> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime, stime: fields 14 and 15 of stat; 12 and 13 after the command name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = clock_ticks_per_second();
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb = |key: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcSample {
        cpu_seconds: ticks as f64 / hz,
        rss_bytes: kb("VmRSS:") * 1024,
        peak_rss_bytes: kb("VmHWM:") * 1024,
    })
}

/// A process's resident memory over a run: (seconds since the start, MiB) every
/// [`TRACE_EVERY`], at most [`TRACE_MAX`] points.
#[derive(Debug)]
pub struct RssTrace {
    pid: u32,
    start: Instant,
    next: Instant,
    points: Vec<(f64, f64)>,
}

impl RssTrace {
    /// A trace of `pid` from `start` (sampled at the first [`RssTrace::tick`]).
    pub fn new(pid: u32, start: Instant) -> Self {
        Self {
            pid,
            start,
            next: start,
            points: Vec::new(),
        }
    }

    /// Samples if the next point is due (cheap otherwise: one comparison).
    pub fn tick(&mut self, now: Instant) {
        if now < self.next || self.points.len() >= TRACE_MAX {
            return;
        }
        self.next = now + TRACE_EVERY;
        if let Some(s) = sample(self.pid) {
            let at = now.duration_since(self.start).as_secs_f64();
            self.points.push((at, s.rss_bytes as f64 / 1_048_576.0));
        }
    }

    /// The points taken.
    pub fn into_points(self) -> Vec<(f64, f64)> {
        self.points
    }
}

#[allow(unsafe_code)]
fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 {
        hz as f64
    } else {
        100.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_own_process() {
        let s = super::sample(std::process::id()).unwrap();
        assert!(s.rss_bytes > 0 && s.peak_rss_bytes >= s.rss_bytes / 2);
    }

    #[test]
    fn a_trace_samples_when_due_and_only_then() {
        let start = std::time::Instant::now();
        let mut t = super::RssTrace::new(std::process::id(), start);
        t.tick(start);
        t.tick(start + super::TRACE_EVERY / 2);
        t.tick(start + super::TRACE_EVERY);
        let points = t.into_points();
        assert_eq!(points.len(), 2);
        assert!(points.iter().all(|(_, mib)| *mib > 0.0));
        assert!(points[1].0 >= super::TRACE_EVERY.as_secs_f64());
    }
}
