//! Patterns that are start-anchored runs of ASCII classes (`$` optional), each class
//! disjoint from the next and each run taking at least one character
//! (`^[a-z]+-[0-9]{1,4}$`), matched in one greedy
//! pass over an ASCII string. Greedy is exact for them: a run can never leave a character to
//! the next run (the next class does not hold it) nor stop early (the next run would then
//! start on a character of this run's class). Built from the same translated pattern
//! jsonschema's matcher is, so an ASCII string gets jsonschema's verdict; another string
//! goes to that matcher (`flat.rs`).

use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Runs a pattern may have.
const RUNS_MAX: usize = 32;

/// A pattern as runs.
#[derive(Debug)]
pub struct Runs {
    runs: Vec<Run>,
    /// `$`: the last run ends the string.
    anchored_end: bool,
}

#[derive(Debug)]
struct Run {
    /// Bit `b` of the class's ASCII members (bytes 0-63 in the first word, 64-127 in the
    /// second).
    bits: [u64; 2],
    min: u32,
    max: u32,
}

impl Run {
    fn new(class: u128, min: u32, max: u32) -> Self {
        Self {
            bits: [class as u64, (class >> 64) as u64],
            min,
            max,
        }
    }

    #[inline(always)]
    fn has(&self, b: u8) -> bool {
        let [low, high] = self.bits;
        let word = if b < 64 { low } else { high };
        b < 128 && word >> (b & 63) & 1 == 1
    }
}

/// The items of a concatenation, captures opened.
fn flatten<'h>(hir: &'h Hir, items: &mut Vec<&'h Hir>) {
    match hir.kind() {
        HirKind::Concat(subs) => subs.iter().for_each(|sub| flatten(sub, items)),
        HirKind::Capture(capture) => flatten(&capture.sub, items),
        HirKind::Empty => {}
        _ => items.push(hir),
    }
}

/// The ASCII members of a class or of a one-character literal.
fn class_of(hir: &Hir) -> Option<u128> {
    match hir.kind() {
        HirKind::Class(Class::Unicode(class)) => {
            let mut members = 0u128;
            for range in class.ranges() {
                for c in range.start() as u32..=(range.end() as u32).min(127) {
                    members |= 1 << c;
                }
            }
            Some(members)
        }
        HirKind::Literal(literal) => match literal.0.as_ref() {
            [b] if b.is_ascii() => Some(1 << b),
            _ => None,
        },
        _ => None,
    }
}

impl Runs {
    /// The pattern (as `jsonschema_regex::to_rust_regex` translated it) as runs, if it is
    /// such a pattern.
    pub fn compile(translated: &str) -> Option<Self> {
        let hir = regex_syntax::Parser::new().parse(translated).ok()?;
        let mut items = Vec::new();
        flatten(&hir, &mut items);
        let (first, rest) = items.split_first()?;
        if !matches!(first.kind(), HirKind::Look(Look::Start)) {
            return None;
        }
        let (anchored_end, middle) = match rest.split_last() {
            Some((last, middle)) if matches!(last.kind(), HirKind::Look(Look::End)) => {
                (true, middle)
            }
            _ => (false, rest),
        };
        let mut runs: Vec<Run> = Vec::new();
        for item in middle {
            let run = match item.kind() {
                HirKind::Repetition(r) => {
                    Run::new(class_of(&r.sub)?, r.min, r.max.unwrap_or(u32::MAX))
                }
                HirKind::Literal(literal) => {
                    // A literal of several characters: a run of one byte each.
                    for &b in literal.0.iter() {
                        if !b.is_ascii() {
                            return None;
                        }
                        runs.push(Run::new(1 << b, 1, 1));
                    }
                    continue;
                }
                _ => Run::new(class_of(item)?, 1, 1),
            };
            runs.push(run);
        }
        let exact = runs.iter().all(|r| r.min >= 1 && r.bits != [0, 0])
            && runs.windows(2).all(|w| match w {
                [a, b] => a.bits[0] & b.bits[0] == 0 && a.bits[1] & b.bits[1] == 0,
                _ => true,
            });
        (exact && !runs.is_empty() && runs.len() <= RUNS_MAX).then_some(Self { runs, anchored_end })
    }

    /// The ASCII string `s` matches.
    pub fn is_match(&self, s: &[u8]) -> bool {
        debug_assert!(s.is_ascii());
        let mut rest = s;
        for run in &self.runs {
            let n = rest
                .iter()
                .take(run.max as usize)
                .take_while(|&&b| run.has(b))
                .count();
            if n < run.min as usize {
                return false;
            }
            rest = rest.get(n..).unwrap_or_default();
        }
        !self.anchored_end || rest.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn takes_only_runs_it_matches_exactly() {
        for p in [
            "^[a-z]+-[0-9]+$",
            "^[a-z]{2,3}[0-9]{1,4}$",
            "^ab[0-9]+",
            "^(dev)-[0-9A-F]+$",
        ] {
            assert!(Runs::compile(p).is_some(), "{p}");
        }
        for p in [
            "^[a-z]*-[0-9]+$",
            "^[a-z]+[a-z0-9]+$",
            "^a?b$",
            "[a-z]+$",
            "^a|b$",
            "^(ab)+$",
        ] {
            assert!(Runs::compile(p).is_none(), "{p}");
        }
    }

    proptest! {
        /// The greedy pass decides as the regex crate does.
        #[test]
        fn runs_match_as_the_regex_does(
            pattern in prop::sample::select(vec![
                "^[a-z]+-[0-9]+$", "^[a-z]{2,3}[0-9]{1,4}$", "^ab[0-9]+", "^(dev)-[0-9A-F]+$",
                "^x{2}y{1,2}z$",
            ]),
            text in "[a-z0-9A-Fxyz-]{0,10}",
        ) {
            let runs = Runs::compile(pattern).expect("runs");
            let regex = regex::Regex::new(pattern).expect("a regex");
            prop_assert_eq!(runs.is_match(text.as_bytes()), regex.is_match(&text), "{} {}", pattern, text);
        }

        /// Generated patterns (classes that may overlap, any quantifier, a case-insensitive
        /// flag, with and without `$`): whenever one compiles as runs, they decide as the
        /// regex crate and jsonschema's sequence matcher do.
        #[test]
        fn generated_runs_decide_as_the_regex_does(
            parts in prop::collection::vec((
                prop::sample::select(vec!["[a-z]", "[0-9]", "[A-F]", "-", "x", "[a-c]", "[xyz]",
                    "[^a-z]", "\\d", "(?i:a)"]),
                prop::sample::select(vec!["", "+", "*", "?", "{2}", "{1,3}", "{2,}"]),
            ), 1..5),
            end in any::<bool>(),
            texts in prop::collection::vec("[a-dA-Fx-z0-9_-]{0,9}", 8),
        ) {
            let body: String = parts.iter().map(|(class, q)| format!("{class}{q}")).collect();
            let pattern = format!("^{body}{}", if end { "$" } else { "" });
            let Some(runs) = Runs::compile(&pattern) else {
                return Ok(());
            };
            let regex = regex::Regex::new(&pattern).expect("a regex");
            let sequence = jsonschema_regex::Sequence::compile(&pattern);
            for text in &texts {
                let want = regex.is_match(text);
                prop_assert_eq!(runs.is_match(text.as_bytes()), want, "{} {}", pattern, text);
                if let Some(sequence) = &sequence {
                    prop_assert_eq!(sequence.is_match(text.as_bytes()), Some(want), "{} {}", pattern, text);
                }
            }
        }
    }
}
