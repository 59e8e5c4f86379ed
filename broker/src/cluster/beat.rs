//! A cluster node's heartbeat record in the routes topic (key: the node id): the writer's
//! wall clock while it is live, `left <ms>` when it stopped cleanly; how old one is.

/// A heartbeat record's value: the writer's wall clock (milliseconds of the Unix epoch) while
/// live, `left <ms>` at a clean stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Beat {
    /// Live, written at this time.
    Live(i64),
    /// Left at a clean stop, at this time; `None`: unknown (a bare `0`, as written before the
    /// time was added, or a value not understood: read as `0` by every version).
    Left(Option<i64>),
}

impl Beat {
    pub(super) fn parse(payload: Option<&[u8]>) -> Self {
        let text = payload
            .and_then(|p| std::str::from_utf8(p).ok())
            .unwrap_or("");
        if let Some(at) = text.strip_prefix("left ") {
            return Self::Left(at.parse().ok().filter(|t: &i64| *t > 0));
        }
        match text.parse::<i64>() {
            Ok(t) if t > 0 => Self::Live(t),
            _ => Self::Left(None),
        }
    }

    /// The value a node stopping cleanly writes (versions before it read it as `0`).
    pub(super) fn left_now() -> String {
        format!("left {}", crate::kafka::now_millis())
    }

    /// How long ago it was written by the writer's clock (a clock ahead of this one counts as
    /// now); `None`: unknown.
    pub(super) fn age_ms(self) -> Option<u64> {
        let (Self::Live(at) | Self::Left(Some(at))) = self else {
            return None;
        };
        Some(u64::try_from(crate::kafka::now_millis().saturating_sub(at)).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::Beat;

    #[test]
    fn heartbeats_say_when_they_were_written_or_when_their_node_left() {
        let now = crate::kafka::now_millis();
        let live = now.to_string();
        assert_eq!(Beat::parse(Some(live.as_bytes())), Beat::Live(now));
        let left = Beat::left_now();
        assert!(matches!(Beat::parse(Some(left.as_bytes())), Beat::Left(Some(t)) if t >= now));
        // Written by earlier versions, or not understood: left, time unknown.
        for old in [&b"0"[..], b"", b"left", b"left x", b"-5", b"\xff"] {
            assert_eq!(Beat::parse(Some(old)), Beat::Left(None), "{old:?}");
        }
        assert_eq!(Beat::parse(None), Beat::Left(None));
        assert_eq!(Beat::Left(None).age_ms(), None);
        // A writer's clock ahead of this one counts as now.
        assert_eq!(Beat::Live(now + 60_000).age_ms(), Some(0));
        assert!(Beat::Live(now - 5_000).age_ms().is_some_and(|a| a >= 5_000));
        // What an earlier version makes of "left <ms>": not a number, so `0` (left).
        assert!(left.parse::<i64>().is_err());
    }
}
