//! One filter against one topic, without the tree: for retained messages (a new subscription
//! against stored topics) and ACL patterns (a pattern against a topic or a filter).

/// True when topic filter `filter` matches topic name `topic` ([MQTT-4.7]); filters starting
/// with a wildcard do not match `$` topics ([MQTT-4.7.2-1]).
pub fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when every topic `filter` can match is also matched by `pattern`: a subscription to
/// `filter` asks for nothing `pattern` does not allow. Wildcards in `filter` count as
/// wildcards, so `a/+` is covered by `a/+` or `a/#` but not by `a/b`.
pub fn covers(pattern: &str, filter: &str) -> bool {
    if filter.starts_with('$') != pattern.starts_with('$')
        && !(pattern.starts_with('#') || pattern.starts_with('+'))
    {
        return false;
    }
    let mut p = pattern.split('/');
    let mut f = filter.split('/');
    loop {
        match (p.next(), f.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(level)) if level != "#" => {}
            (Some(a), Some(b)) if a == b && a != "+" && a != "#" => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// True when some topic matches both filters (as [`matches`] matches: a filter starting with a
/// wildcard takes no `$` topic, so it never meets one starting with `$`).
pub fn overlap(a: &str, b: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (wild(a) && b.starts_with('$')) || (wild(b) && a.starts_with('$')) {
        return false;
    }
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (None, Some(_)) | (Some(_), None) => return false,
            (Some(x), Some(y)) => {
                if x != y && x != "+" && y != "+" {
                    return false;
                }
            }
        }
    }
}

/// True when every topic `later` matches is matched by `earlier` too (as [`matches`] matches
/// topics): a rule with filter `later` after one with `earlier` never takes a message.
pub fn hides(earlier: &str, later: &str) -> bool {
    let wild = |f: &str| f.starts_with('+') || f.starts_with('#');
    if wild(earlier) && later.starts_with('$') {
        return false;
    }
    covers(earlier, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_matching() {
        let yes = [
            ("a/b", "a/b"),
            ("a/+", "a/b"),
            ("a/#", "a"),
            ("a/#", "a/b/c"),
            ("#", "a/b"),
            ("+/+", "/x"),
            ("$SYS/#", "$SYS/broker/uptime"),
        ];
        for (f, t) in yes {
            assert!(matches(f, t), "{f} {t}");
        }
        let no = [
            ("a/b", "a"),
            ("a", "a/b"),
            ("a/+", "a/b/c"),
            ("#", "$SYS/x"),
            ("+/x", "$SYS/x"),
        ];
        for (f, t) in no {
            assert!(!matches(f, t), "{f} {t}");
        }
    }

    #[test]
    fn pattern_coverage() {
        assert!(covers("a/#", "a/+/c"));
        assert!(covers("a/+", "a/+"));
        assert!(covers("a/+", "a/b"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("a/+", "a/#"));
        assert!(covers("#", "x/#"));
        assert!(!covers("a/b", "a/b/c"));
        assert!(covers("a/b", "a/b"));
    }
}
