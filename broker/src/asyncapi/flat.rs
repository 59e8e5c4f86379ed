//! Payloads checked against flat object schemas in one pass over their bytes: no tape, no
//! `serde_json::Value`, no call into `jsonschema`. A schema becomes a [`Flat`] only when every
//! keyword in it is one this module checks exactly as the `jsonschema` crate does: an object
//! (`properties`, `required`, `additionalProperties` true or false) whose properties are
//! strings (`minLength`, `maxLength`, string `enum` / `const`, a `pattern` jsonschema
//! decides with its ASCII sequence matcher, used here too, or, for ASCII strings against a
//! pattern of class runs, `flat/runs.rs`), numbers or integers (`minimum`, `maximum` and their
//! exclusive forms), booleans, nulls, or anything (`{}`); annotations (`title`, `x-...`) are
//! ignored as jsonschema ignores them. Any other keyword keeps the schema on the tape path.
//!
//! Like the tape, this is a fast path for valid payloads: [`Flat::accepts`] is true only for a
//! payload the schema accepts, and false for anything it is not sure of (an invalid payload,
//! a `\` escape in a checked string or a key, `\u` anywhere, a duplicate property, a number it
//! does not compare exactly as jsonschema would (an integer of over 15 digits against a bound),
//! nesting past [`DEPTH_MAX`]); the caller then goes on to the tape
//! and `serde_json`, which decide and word the reason. The verdicts are tested against the
//! `jsonschema` crate's on generated payloads (`tests.rs`).
//!
//! A compiled [`Flat`] also remembers the member order of the last valid payload whose
//! order differed (relaxed atomics shared by the shards; a payload of over 63 members is
//! not remembered), and whether a payload in that order had whitespace between its
//! tokens. A payload in that order is checked by the quick path (`flat/quick.rs`: the
//! members taken in that order, no search); any other by the full scan (`flat/scan.rs`), which guesses each
//! member's name from the same order. Only the speed depends on it, never a verdict.

use jsonschema_regex::Sequence;
use regex::Regex;
use serde_json::{Map, Number, Value};

use scan::{Quoted, Scan};

/// Properties a flat schema may declare (one bit each in a `u64`).
const PROPERTIES_MAX: usize = 64;

/// Nesting skipped inside a property checked as "anything" (serde_json refuses past 128).
const DEPTH_MAX: usize = 64;

/// Integers of at most this many digits convert to `f64` exactly (10^15 < 2^53).
const EXACT_DIGITS_MAX: usize = 15;

/// The powers of ten up to 10^15, exact as `f64`s.
const POW10: [f64; 16] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
];

/// Keywords that only annotate: validation ignores them.
const ANNOTATIONS: &[&str] = &[
    "title",
    "description",
    "$comment",
    "examples",
    "default",
    "readOnly",
    "writeOnly",
    "deprecated",
    "discriminator",
    "externalDocs",
];

/// `$schema` dialects in which the keywords checked here mean what they mean in draft 7 (as
/// jsonschema knows them; another URI is a dialect of its own to it).
const DIALECTS: &[&str] = &[
    "http://json-schema.org/draft-06/schema",
    "http://json-schema.org/draft-06/schema#",
    "http://json-schema.org/draft-07/schema",
    "http://json-schema.org/draft-07/schema#",
    "https://json-schema.org/draft/2019-09/schema",
    "https://json-schema.org/draft/2020-12/schema",
];

/// A [`Flat::slots`] entry several property names share.
const SHARED: u8 = u8::MAX;

/// Where a property name goes in [`Flat::slots`]: its length and first and last bytes.
fn slot_of(name: &[u8]) -> usize {
    let first = name.first().copied().unwrap_or(0);
    let last = name.last().copied().unwrap_or(0);
    usize::from(first.wrapping_mul(31) ^ last.wrapping_mul(7) ^ (name.len() as u8).wrapping_mul(97))
}

/// A flat object schema, compiled.
#[derive(Debug)]
pub struct Flat {
    props: Vec<Prop>,
    /// Property index + 1 by [`slot_of`] a name (0: none; [`SHARED`]: several, look them
    /// through).
    slots: Box<[u8; 256]>,
    /// One bit per property of `props` that must be present.
    required: u64,
    /// Properties not in `props` are allowed (any value).
    additional: bool,
    /// The member order of the last valid payload whose order differed: the quick path's
    /// and the scan's guess.
    order: quick::Order,
}

#[derive(Debug)]
struct Prop {
    name: Box<[u8]>,
    quoted: Option<Quoted>,
    token: quick::Token,
    /// This property's bit in a set of seen ones (`1 << index`).
    bit: u64,
    check: Check,
}

/// What one property (or one topic level) must be.
#[derive(Debug)]
pub enum Check {
    /// Anything.
    Any,
    /// Never present (the schema `false`).
    Never,
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number (an integer if `integer`) within the bounds.
    Number {
        /// Integers only.
        integer: bool,
        /// `minimum`, `exclusiveMinimum`, `maximum`, `exclusiveMaximum`.
        bounds: [Option<f64>; 4],
        /// The same bounds as one inclusive range (an exclusive bound moved to the next
        /// `f64` inward: `v > m` exactly when `v >= m.next_up()`), infinite where none.
        range: [f64; 2],
    },
    /// A string.
    Str(StrCheck),
}

/// A string's checks.
#[derive(Debug)]
pub struct StrCheck {
    min_chars: Option<u64>,
    max_chars: Option<u64>,
    /// `min_chars` and `max_chars` as the bounds of an ASCII string's length (0 and
    /// `u64::MAX` where none).
    ascii_len: [u64; 2],
    one_of: Option<Vec<Box<str>>>,
    /// The pattern as jsonschema decides it: its ASCII sequence matcher, and the regex it
    /// falls back on for what the matcher leaves (a pattern that is no such sequence is
    /// decided by jsonschema's other engine: not taken here).
    pattern: Option<(Sequence, Regex)>,
    /// The pattern as runs of disjoint classes, when it is one (ASCII strings only).
    runs: Option<runs::Runs>,
}

impl StrCheck {
    /// A string that is not all ASCII has as many characters as `minLength` / `maxLength`
    /// ask: at most as many as bytes and at least a quarter as many, counted only when
    /// that does not decide.
    fn counts_chars(&self, s: &[u8]) -> bool {
        let bytes = s.len() as u64;
        let undecided = self.max_chars.is_some_and(|m| bytes > m)
            || self.min_chars.is_some_and(|m| bytes / 4 < m);
        if !undecided {
            return true;
        }
        // Characters are the bytes that do not continue one.
        let n = s.iter().filter(|&&b| (b as i8) >= -0x40).count() as u64;
        !(self.min_chars.is_some_and(|m| n < m) || self.max_chars.is_some_and(|m| n > m))
    }

    /// `s` (valid UTF-8; `ascii` if all of it is ASCII) passes.
    #[inline(always)]
    fn accepts(&self, s: &[u8], ascii: bool) -> bool {
        debug_assert!(std::str::from_utf8(s).is_ok() && ascii == s.is_ascii());
        let bytes = s.len() as u64;
        if ascii {
            // As many characters as bytes.
            let [least, most] = self.ascii_len;
            if bytes < least || bytes > most {
                return false;
            }
        } else if !self.counts_chars(s) {
            return false;
        }
        if let Some(one_of) = &self.one_of {
            if !one_of.iter().any(|v| same(v.as_bytes(), s)) {
                return false;
            }
        }
        match (&self.runs, ascii) {
            (Some(runs), true) => runs.is_match(s),
            _ => self
                .pattern
                .as_ref()
                .is_none_or(|(sequence, regex)| pattern_matches(sequence, regex, s)),
        }
    }
}

/// `s` matches a pattern, decided as jsonschema decides it (its sequence matcher, the regex
/// for what that leaves).
#[inline(never)]
fn pattern_matches(sequence: &Sequence, regex: &Regex, s: &[u8]) -> bool {
    sequence.is_match(s).unwrap_or_else(|| {
        let Ok(s) = std::str::from_utf8(s) else {
            return false;
        };
        // As jsonschema does: a panic inside the regex crate (its issue 1344) is no
        // verdict; here, "not sure".
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| regex.is_match(s)))
            .unwrap_or(false)
    })
}

/// `a == b` for the short byte strings of property names and enum values, without a call to
/// `memcmp` (whose fixed cost is most of such a comparison).
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// The keys of `schema` are all in `known`, annotations or `x-` extensions.
fn keywords_known(schema: &Map<String, Value>, known: &[&str]) -> bool {
    schema.keys().all(|k| {
        known.contains(&k.as_str()) || ANNOTATIONS.contains(&k.as_str()) || k.starts_with("x-")
    })
}

/// A bound as an `f64` that compares exactly as jsonschema compares the number.
fn exact_f64(n: &Number) -> Option<f64> {
    const EXACT: u64 = 1 << 53;
    if let Some(u) = n.as_u64() {
        (u <= EXACT).then_some(u as f64)
    } else if let Some(i) = n.as_i64() {
        (i.unsigned_abs() <= EXACT).then_some(i as f64)
    } else {
        n.as_f64().filter(|f| f.is_finite())
    }
}

impl Check {
    /// The check of a property schema, if it is one checked here.
    pub fn compile(schema: &Value) -> Option<Self> {
        let map = match schema {
            Value::Bool(true) => return Some(Check::Any),
            Value::Bool(false) => return Some(Check::Never),
            Value::Object(map) => map,
            _ => return None,
        };
        let known = [
            "type",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "pattern",
            "enum",
            "const",
        ];
        if !keywords_known(map, &known) {
            return None;
        }
        let Some(kind) = map.get("type") else {
            // No type: only a schema with no checks at all.
            return map
                .keys()
                .all(|k| !known.contains(&k.as_str()))
                .then_some(Check::Any);
        };
        let has_enum = map.contains_key("enum") || map.contains_key("const");
        match kind.as_str()? {
            "null" if !has_enum => Some(Check::Null),
            "boolean" if !has_enum => Some(Check::Bool),
            kind @ ("number" | "integer") if !has_enum => {
                let mut bounds = [None; 4];
                for (slot, key) in bounds.iter_mut().zip([
                    "minimum",
                    "exclusiveMinimum",
                    "maximum",
                    "exclusiveMaximum",
                ]) {
                    if let Some(v) = map.get(key) {
                        *slot = Some(exact_f64(v.as_number()?)?);
                    }
                }
                let [min, xmin, max, xmax] = bounds;
                let low = [min, xmin.map(f64::next_up)];
                let high = [max, xmax.map(f64::next_down)];
                Some(Check::Number {
                    integer: kind == "integer",
                    bounds,
                    range: [
                        low.into_iter().flatten().fold(f64::NEG_INFINITY, f64::max),
                        high.into_iter().flatten().fold(f64::INFINITY, f64::min),
                    ],
                })
            }
            "string" => {
                let count = |key: &str| match map.get(key) {
                    None => Some(None),
                    Some(v) => v.as_u64().map(Some),
                };
                let one_of = match (map.get("enum"), map.get("const")) {
                    (None, None) => None,
                    (Some(Value::Array(items)), None) => Some(
                        items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(Box::from)
                            .collect(),
                    ),
                    // A non-string constant: no string equals it.
                    (None, Some(c)) => Some(c.as_str().map(Box::from).into_iter().collect()),
                    _ => return None,
                };
                let (pattern, runs) = match map.get("pattern") {
                    None => (None, None),
                    Some(p) => {
                        let p = p.as_str()?;
                        if !jsonschema_regex::is_valid_ecma_regex(p) {
                            return None;
                        }
                        let translated = jsonschema_regex::to_rust_regex(p).ok()?;
                        let pattern = (
                            Sequence::compile(&translated)?,
                            Regex::new(&translated).ok()?,
                        );
                        (Some(pattern), runs::Runs::compile(&translated))
                    }
                };
                let (min_chars, max_chars) = (count("minLength")?, count("maxLength")?);
                Some(Check::Str(StrCheck {
                    min_chars,
                    max_chars,
                    ascii_len: [min_chars.unwrap_or(0), max_chars.unwrap_or(u64::MAX)],
                    one_of,
                    pattern,
                    runs,
                }))
            }
            _ => None,
        }
    }

    /// `v` (not NaN) is within a number's inclusive `range`.
    #[inline(always)]
    fn within(range: &[f64; 2], v: f64) -> bool {
        debug_assert!(!v.is_nan());
        let [low, high] = *range;
        low <= v && v <= high
    }

    /// Every topic level passes (anything, or a string with no checks).
    pub fn takes_every_level(&self) -> bool {
        match self {
            Check::Any => true,
            Check::Str(s) => {
                s.min_chars.is_none()
                    && s.max_chars.is_none()
                    && s.one_of.is_none()
                    && s.pattern.is_none()
            }
            _ => false,
        }
    }

    /// A topic level (a parameter's value, always a string) passes: true only if it does.
    pub fn accepts_level(&self, level: &str) -> bool {
        match self {
            Check::Any => true,
            Check::Str(s) => s.accepts(level.as_bytes(), level.is_ascii()),
            _ => false,
        }
    }
}

impl Flat {
    /// The schema compiled, if it is a flat object schema checked here.
    pub fn compile(schema: &Value) -> Option<Self> {
        let map = schema.as_object()?;
        let known = [
            "$schema",
            "type",
            "properties",
            "required",
            "additionalProperties",
        ];
        if !keywords_known(map, &known) {
            return None;
        }
        if let Some(dialect) = map.get("$schema") {
            let dialect = dialect.as_str()?;
            if !DIALECTS.contains(&dialect) {
                return None;
            }
        }
        if map
            .get("type")
            .is_some_and(|t| t.as_str() != Some("object"))
        {
            return None;
        }
        let mut props = Vec::new();
        if let Some(properties) = map.get("properties") {
            for (i, (name, schema)) in properties.as_object()?.iter().enumerate() {
                props.push(Prop {
                    bit: 1u64.checked_shl(u32::try_from(i).ok()?).unwrap_or(0),
                    name: name.as_bytes().into(),
                    quoted: Quoted::of(name.as_bytes()),
                    token: quick::Token::of(name.as_bytes()),
                    check: Check::compile(schema)?,
                });
            }
        }
        if props.len() > PROPERTIES_MAX {
            return None;
        }
        let mut required = 0u64;
        if let Some(names) = map.get("required") {
            for name in names.as_array()? {
                let name = name.as_str()?.as_bytes();
                let at = props.iter().position(|p| p.name.as_ref() == name)?;
                required |= 1 << at;
            }
        }
        let additional = match map.get("additionalProperties") {
            None => true,
            Some(v) => v.as_bool()?,
        };
        let mut slots = Box::new([0u8; 256]);
        for (i, p) in props.iter().enumerate() {
            if let Some(slot) = slots.get_mut(slot_of(&p.name)) {
                *slot = if *slot == 0 { i as u8 + 1 } else { SHARED };
            }
        }
        Some(Self {
            props,
            slots,
            required,
            additional,
            order: quick::Order::default(),
        })
    }

    /// The index of the property named `key`.
    fn find(&self, key: &[u8]) -> Option<usize> {
        match self.slots.get(slot_of(key)).copied().unwrap_or(SHARED) {
            0 => None,
            SHARED => self.props.iter().position(|p| same(&p.name, key)),
            i => {
                let at = usize::from(i - 1);
                same(&self.props.get(at)?.name, key).then_some(at)
            }
        }
    }

    /// The payload is valid: true only if the schema accepts it (false: not sure).
    pub fn accepts(&self, payload: &[u8]) -> bool {
        if quick::accepts(self, payload) {
            return true;
        }
        let mut r = Scan::new(payload);
        let mut order = quick::Recorded::default();
        let valid = r.object(self, &mut order).is_some() && {
            r.space();
            r.pos == r.src.len()
        };
        if valid {
            order.spaced = r.spaced;
            self.order.learn(&order);
        }
        valid
    }
}

mod quick;
mod runs;
mod scan;
#[cfg(test)]
mod tests;
