//! Topic names and topic filters: the syntax rules of [MQTT-4.7] and shared subscriptions
//! ([MQTT-4.8.2]). Matching filters against names belongs to the broker's router; this module
//! only says whether a string is well formed, so the codec can reject bad packets early.

use crate::codec::DecodeError;

/// The prefix of a shared subscription filter: `$share/{group}/{filter}`.
pub const SHARE_PREFIX: &str = "$share/";

/// Checks a topic name as carried by PUBLISH or a will: no `+` or `#` ([MQTT-3.3.2-2]).
/// Emptiness is checked by the caller, because MQTT 5 allows an empty name with a topic alias.
pub fn validate_topic_name(name: &str) -> Result<(), DecodeError> {
    // Fast path: '#' (0x23) and '+' (0x2B) are both below ',' (0x2C); most topics have no byte
    // that low at all.
    if crate::codec::min_byte(name.as_bytes()) >= b',' {
        return Ok(());
    }
    if name.bytes().any(|b| b == b'+' || b == b'#') {
        return Err(DecodeError::WildcardInTopicName);
    }
    Ok(())
}

/// Checks a topic filter: non-empty ([MQTT-4.7.3-1]), `#` alone in the last level
/// ([MQTT-4.7.1-1]), `+` alone in its level ([MQTT-4.7.1-2]), and for `$share/group/filter` a
/// non-empty group without wildcards or `/` followed by a valid filter ([MQTT-4.8.2-1/2]).
pub fn validate_topic_filter(filter: &str) -> Result<(), DecodeError> {
    match split_shared(filter) {
        Some((group, inner)) => {
            if group.is_empty() || group.bytes().any(|b| b == b'+' || b == b'#') {
                return Err(DecodeError::InvalidSharedSubscription);
            }
            if inner.is_empty() {
                return Err(DecodeError::InvalidSharedSubscription);
            }
            validate_plain_filter(inner)
        }
        None if filter.starts_with("$share") && filter.len() <= SHARE_PREFIX.len() => {
            // "$share" or "$share/" with nothing after is a shared filter missing its parts.
            Err(DecodeError::InvalidSharedSubscription)
        }
        None => validate_plain_filter(filter),
    }
}

fn validate_plain_filter(filter: &str) -> Result<(), DecodeError> {
    if filter.is_empty() {
        return Err(DecodeError::InvalidTopicFilter);
    }
    let mut levels = filter.split('/').peekable();
    while let Some(level) = levels.next() {
        let last = levels.peek().is_none();
        match level {
            "#" if last => {}
            "+" => {}
            _ if level.bytes().any(|b| b == b'+' || b == b'#') => {
                return Err(DecodeError::InvalidTopicFilter);
            }
            _ => {}
        }
    }
    Ok(())
}

/// Splits `$share/group/filter` into `(group, filter)`; `None` for a non-shared filter.
/// A `$share/group` without a second `/` returns an empty filter, which validation rejects.
pub fn split_shared(filter: &str) -> Option<(&str, &str)> {
    let rest = filter.strip_prefix(SHARE_PREFIX)?;
    Some(match rest.split_once('/') {
        Some((group, inner)) => (group, inner),
        None => (rest, ""),
    })
}

/// True when the filter is a shared subscription (`$share/...`).
pub fn is_shared(filter: &str) -> bool {
    filter.starts_with(SHARE_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "a/b", "/", "a//b", "$SYS/x", " ", "a/b/"] {
            assert_eq!(validate_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in ["a/+", "#", "a/#", "a+b", "x#"] {
            assert_eq!(
                validate_topic_name(bad),
                Err(DecodeError::WildcardInTopicName),
                "{bad}"
            );
        }
    }

    #[test]
    fn topic_filters() {
        let table: &[(&str, Result<(), DecodeError>)] = &[
            ("a", Ok(())),
            ("#", Ok(())),
            ("+", Ok(())),
            ("a/+/c", Ok(())),
            ("a/#", Ok(())),
            ("+/+/#", Ok(())),
            ("/", Ok(())),
            ("a//b", Ok(())),
            ("$SYS/#", Ok(())),
            ("$share/g/a/+", Ok(())),
            ("$share/g/#", Ok(())),
            ("$shared/x", Ok(())),
            ("", Err(DecodeError::InvalidTopicFilter)),
            ("a/#/b", Err(DecodeError::InvalidTopicFilter)),
            ("a#", Err(DecodeError::InvalidTopicFilter)),
            ("a/b#", Err(DecodeError::InvalidTopicFilter)),
            ("a+/b", Err(DecodeError::InvalidTopicFilter)),
            ("a/+b", Err(DecodeError::InvalidTopicFilter)),
            ("##", Err(DecodeError::InvalidTopicFilter)),
            ("$share/g", Err(DecodeError::InvalidSharedSubscription)),
            ("$share/g/", Err(DecodeError::InvalidSharedSubscription)),
            ("$share//a", Err(DecodeError::InvalidSharedSubscription)),
            ("$share/+/a", Err(DecodeError::InvalidSharedSubscription)),
            ("$share/", Err(DecodeError::InvalidSharedSubscription)),
            ("$share", Err(DecodeError::InvalidSharedSubscription)),
            ("$share/g/a#", Err(DecodeError::InvalidTopicFilter)),
        ];
        for (filter, want) in table {
            assert_eq!(validate_topic_filter(filter), *want, "{filter:?}");
        }
    }

    #[test]
    fn shared_split() {
        assert_eq!(split_shared("$share/g/a/b"), Some(("g", "a/b")));
        assert_eq!(split_shared("a/b"), None);
        assert!(is_shared("$share/g/x"));
    }
}
