//! Why a session dropped messages: [`DropReason`], and the [`Drops`] a session counts until
//! the core moves them into the shard's counters (one Prometheus series per reason).

/// Why a message offered to (or held by) a session was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// QoS 0 with the connection's outbox full, or the client offline.
    Outbox,
    /// The session queue was at its bound (`session_queue_full_policy` chose a drop).
    QueueFull,
    /// Its message expiry interval passed before it could be sent.
    Expired,
    /// Larger than the client's maximum packet size.
    TooLarge,
}

impl DropReason {
    /// Every reason, in [`Drops`] order.
    pub const ALL: [DropReason; 4] = [
        DropReason::Outbox,
        DropReason::QueueFull,
        DropReason::Expired,
        DropReason::TooLarge,
    ];

    /// The reason as logs and metrics name it.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Outbox => "outbox_full",
            DropReason::QueueFull => "queue_full",
            DropReason::Expired => "expired",
            DropReason::TooLarge => "too_large",
        }
    }
}

/// Drops counted by a session since the core last took them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drops {
    /// Per reason, in [`DropReason::ALL`] order.
    pub by_reason: [u32; 4],
    /// The sum of `by_reason` (a fast "anything?" check).
    pub total: u32,
}

impl Drops {
    /// Counts one drop.
    pub fn count(&mut self, reason: DropReason) {
        let i = reason as usize;
        if let Some(n) = self.by_reason.get_mut(i) {
            *n = n.saturating_add(1);
        }
        self.total = self.total.saturating_add(1);
    }

    /// The reason with the most drops (for a log line).
    pub fn main_reason(&self) -> DropReason {
        let mut best = DropReason::Outbox;
        let mut most = 0;
        for (reason, &n) in DropReason::ALL.iter().zip(&self.by_reason) {
            if n > most {
                (best, most) = (*reason, n);
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_reason() {
        let mut d = Drops::default();
        d.count(DropReason::Expired);
        d.count(DropReason::QueueFull);
        d.count(DropReason::QueueFull);
        assert_eq!(d.by_reason, [0, 2, 1, 0]);
        assert_eq!(d.total, 3);
        assert_eq!(d.main_reason(), DropReason::QueueFull);
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
    }
}
