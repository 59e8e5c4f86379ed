//! Walking the retained store in key order for one topic filter: a skip-scan over the sorted
//! keys that jumps over every branch the filter cannot match, so `a/+/c` visits one key per
//! `a/X` branch (plus the matches) and `ret/7/+` only the keys under `ret/7`.
//!
//! Keys are topic names with each `/` replaced by a zero byte (topics cannot contain U+0000
//! [MQTT-4.7.3-2]): with the separator below every other byte, key order is level-by-level
//! order and every branch (`a/X` and everything under it) is one contiguous range.

/// The level separator inside keys.
pub const SEP: u8 = 0;

/// The key of a topic name (still UTF-8: only ASCII bytes are swapped).
pub fn key_of(topic: &str, out: &mut String) {
    out.clear();
    out.extend(topic.chars().map(|c| if c == '/' { '\0' } else { c }));
}

/// The topic name of a key.
pub fn topic_of(key: &str) -> String {
    key.replace('\0', "/")
}

/// What to do after looking at one key.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// The key matches the filter.
    Match,
    /// No match; the next key may.
    Next,
    /// No match; no key below this one can match (it is greater than the current key). Made
    /// of whole levels of keys and filter, and ASCII bytes: UTF-8.
    To(Vec<u8>),
    /// No later key can match.
    Done,
}

/// The smallest key that skips the whole branch `key[..end]` (`end` at a level boundary).
fn past_branch(key: &[u8], end: usize) -> Step {
    let Some(branch) = key.get(..end) else {
        return Step::Done;
    };
    let mut k = branch.to_vec();
    k.push(SEP + 1);
    Step::To(k)
}

/// Decides, for a filter split into levels, what `key` means for the scan.
pub fn step(filter: &[&str], key: &[u8]) -> Step {
    if key.first() == Some(&b'$') && matches!(filter.first(), Some(&"+" | &"#")) {
        // Wildcards at the first level do not match `$` topics [MQTT-4.7.2-1]; they are one
        // contiguous range, skipped at once.
        return Step::To(vec![b'$' + 1]);
    }
    // Byte offset of the start of level `i` in `key`; `None` once the key has no more levels.
    let mut start = Some(0usize);
    // End offset (exclusive) of the last level matched by `+`.
    let mut last_plus: Option<usize> = None;
    for (i, f) in filter.iter().enumerate() {
        let Some(s) = start else {
            // The key has fewer levels than the filter: keys in its branch may match.
            return match *f {
                "#" => Step::Match,
                "+" => Step::Next,
                literal => {
                    let mut k = key.to_vec();
                    k.push(SEP);
                    k.extend_from_slice(literal.as_bytes());
                    Step::To(k)
                }
            };
        };
        if *f == "#" {
            return Step::Match;
        }
        let rest = key.get(s..).unwrap_or_default();
        let end = rest
            .iter()
            .position(|&b| b == SEP)
            .map_or(key.len(), |p| s + p);
        let level = rest.get(..end - s).unwrap_or_default();
        match *f {
            "+" => last_plus = Some(end),
            literal if level == literal.as_bytes() => {}
            literal if level < literal.as_bytes() => {
                let mut k = key.get(..s).unwrap_or_default().to_vec();
                k.extend_from_slice(literal.as_bytes());
                return Step::To(k);
            }
            _ => {
                return match last_plus {
                    Some(e) => past_branch(key, e),
                    None => Step::Done,
                }
            }
        }
        start = (end < key.len()).then_some(end + 1);
        if i + 1 == filter.len() {
            return match start {
                None => Step::Match,
                // The key is deeper than the filter: skip everything under this level.
                Some(_) => past_branch(key, end),
            };
        }
    }
    Step::Done
}

/// The key the scan starts from: the filter's levels before its first wildcard.
pub fn first_key(filter: &[&str]) -> Vec<u8> {
    let mut k = Vec::new();
    for (i, f) in filter.iter().enumerate() {
        if *f == "+" || *f == "#" {
            break;
        }
        if i > 0 {
            k.push(SEP);
        }
        k.extend_from_slice(f.as_bytes());
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::ops::Bound;

    /// Every key the skip-scan reports, and how many keys it looked at.
    fn scan(keys: &BTreeSet<Vec<u8>>, filter: &str) -> (Vec<String>, usize) {
        let levels: Vec<&str> = filter.split('/').collect();
        let mut lower = Bound::Included(first_key(&levels));
        let (mut out, mut visited) = (Vec::new(), 0);
        'outer: loop {
            for k in keys.range((lower.clone(), Bound::Unbounded)) {
                visited += 1;
                match step(&levels, k) {
                    Step::Match => out.push(topic_of(std::str::from_utf8(k).unwrap())),
                    Step::Next => {}
                    Step::To(to) => {
                        assert!(&to > k, "{filter}: a jump must move forward");
                        lower = Bound::Included(to);
                        continue 'outer;
                    }
                    Step::Done => break 'outer,
                }
            }
            break;
        }
        (out, visited)
    }

    fn brute(keys: &BTreeSet<Vec<u8>>, filter: &str) -> Vec<String> {
        keys.iter()
            .map(|k| topic_of(std::str::from_utf8(k).unwrap()))
            .filter(|t| crate::router::filter::matches(filter, t))
            .collect()
    }

    fn set(topics: &[&str]) -> BTreeSet<Vec<u8>> {
        let mut k = String::new();
        topics
            .iter()
            .map(|t| {
                key_of(t, &mut k);
                k.clone().into_bytes()
            })
            .collect()
    }

    #[test]
    fn the_scan_finds_exactly_what_the_filter_matches() {
        let topics = [
            "a", "a/b", "a/b/c", "a/b/c/d", "a/b-x/c", "a/b.y", "a/bb/c", "a/c", "a/c/c", "a//c",
            "a/", "/", "//", "/a", "b", "b/c", "$SYS/x", "$SYS/x/y", "a-b/c", "a.b", "ab/c", "c/a",
            "c/b/c", "x/y/z/c", "x/y/c", "a/c-/c", "a/c/", "a/c/c/c",
        ];
        let keys = set(&topics);
        let filters = [
            "#",
            "+",
            "+/+",
            "a/#",
            "a/+",
            "a/+/c",
            "a/+/+",
            "+/b/c",
            "+/+/c",
            "a/b",
            "a/b/#",
            "+/#",
            "$SYS/#",
            "$SYS/+",
            "/#",
            "/+",
            "+/",
            "a/",
            "a//c",
            "a/+/c/#",
            "x/+/+/c",
            "nothing/#",
            "+/c/+",
            "c/+",
        ];
        for f in filters {
            let (got, _) = scan(&keys, f);
            assert_eq!(got, brute(&keys, f), "filter {f}");
        }
    }

    #[test]
    fn random_topics_against_random_filters() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % n
        };
        let words = ["a", "b", "ab", "a-", "a.", "", "z", "$x", "b0"];
        for _ in 0..200 {
            let mut topics = Vec::new();
            for _ in 0..60 {
                let levels = 1 + next(4);
                let t: Vec<&str> = (0..levels)
                    .map(|_| words[next(words.len() as u64) as usize])
                    .collect();
                topics.push(t.join("/"));
            }
            let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
            let keys = set(&refs);
            for _ in 0..20 {
                let levels = 1 + next(4);
                let mut f: Vec<&str> = (0..levels)
                    .map(|_| match next(4) {
                        0 => "+",
                        _ => words[next(words.len() as u64) as usize],
                    })
                    .collect();
                if next(3) == 0 {
                    f.push("#");
                }
                let f = f.join("/");
                let (got, _) = scan(&keys, &f);
                assert_eq!(got, brute(&keys, &f), "filter {f} over {topics:?}");
            }
        }
    }

    #[test]
    fn a_narrow_filter_visits_only_its_branch() {
        let topics: Vec<String> = (0..100)
            .flat_map(|n| (0..100).map(move |i| format!("ret/{n}/{i}")))
            .collect();
        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        let keys = set(&refs);
        let (got, visited) = scan(&keys, "ret/7/+");
        assert_eq!(got.len(), 100);
        assert!(visited <= 101, "visited {visited}");
        // A few keys per `ret/N` branch (the jump to `ret/N/42`, the key after it), plus the
        // matches.
        let (got, visited) = scan(&keys, "ret/+/42");
        assert_eq!(got.len(), 100);
        assert!(visited <= 300, "visited {visited}");
    }
}
