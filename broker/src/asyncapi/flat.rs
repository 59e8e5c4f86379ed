//! Payloads checked against flat object schemas in one pass over their bytes: no tape, no
//! `serde_json::Value`, no call into `jsonschema`. A schema becomes a [`Flat`] only when every
//! keyword in it is one this module checks exactly as the `jsonschema` crate does: an object
//! (`properties`, `required`, `additionalProperties` true or false) whose properties are
//! strings (`minLength`, `maxLength`, string `enum` / `const`, a `pattern` jsonschema
//! decides with its ASCII sequence matcher, used here too), numbers or integers (`minimum`, `maximum` and their
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

use jsonschema_regex::Sequence;
use regex::Regex;
use serde_json::{Map, Number, Value};

use super::tape::{float_of, special_at};

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
}

#[derive(Debug)]
struct Prop {
    name: Box<[u8]>,
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
    },
    /// A string.
    Str(StrCheck),
}

/// A string's checks.
#[derive(Debug)]
pub struct StrCheck {
    min_chars: Option<u64>,
    max_chars: Option<u64>,
    one_of: Option<Vec<Box<str>>>,
    /// The pattern as jsonschema decides it: its ASCII sequence matcher, and the regex it
    /// falls back on for what the matcher leaves (a pattern that is no such sequence is
    /// decided by jsonschema's other engine: not taken here).
    pattern: Option<(Sequence, Regex)>,
}

impl StrCheck {
    fn accepts(&self, s: &str) -> bool {
        // Characters are at most the bytes and at least a quarter of them: count only when
        // that does not decide.
        let bytes = s.len() as u64;
        let undecided = self.max_chars.is_some_and(|m| bytes > m)
            || self.min_chars.is_some_and(|m| bytes / 4 < m);
        if undecided {
            let n = s.chars().count() as u64;
            if self.min_chars.is_some_and(|m| n < m) || self.max_chars.is_some_and(|m| n > m) {
                return false;
            }
        }
        if let Some(one_of) = &self.one_of {
            if !one_of.iter().any(|v| same(v.as_bytes(), s.as_bytes())) {
                return false;
            }
        }
        self.pattern.as_ref().is_none_or(|(sequence, regex)| {
            sequence.is_match(s.as_bytes()).unwrap_or_else(|| {
                // As jsonschema does: a panic inside the regex crate (its issue 1344) is no
                // verdict; here, "not sure".
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| regex.is_match(s)))
                    .unwrap_or(false)
            })
        })
    }
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
                Some(Check::Number {
                    integer: kind == "integer",
                    bounds,
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
                let pattern = match map.get("pattern") {
                    None => None,
                    Some(p) => {
                        let p = p.as_str()?;
                        if !jsonschema_regex::is_valid_ecma_regex(p) {
                            return None;
                        }
                        let translated = jsonschema_regex::to_rust_regex(p).ok()?;
                        Some((
                            Sequence::compile(&translated)?,
                            Regex::new(&translated).ok()?,
                        ))
                    }
                };
                Some(Check::Str(StrCheck {
                    min_chars: count("minLength")?,
                    max_chars: count("maxLength")?,
                    one_of,
                    pattern,
                }))
            }
            _ => None,
        }
    }

    /// A topic level (a parameter's value, always a string) passes: true only if it does.
    pub fn accepts_level(&self, level: &str) -> bool {
        match self {
            Check::Any => true,
            Check::Str(s) => s.accepts(level),
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
            for (name, schema) in properties.as_object()? {
                props.push(Prop {
                    name: name.as_bytes().into(),
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
        let Ok(text) = std::str::from_utf8(payload) else {
            return false;
        };
        let mut r = Scan {
            src: text.as_bytes(),
            text,
            pos: 0,
        };
        r.object(self).is_some() && {
            r.space();
            r.pos == r.src.len()
        }
    }
}

/// A payload being checked.
struct Scan<'p> {
    src: &'p [u8],
    text: &'p str,
    pos: usize,
}

impl<'p> Scan<'p> {
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// The top-level object, each property checked.
    fn object(&mut self, flat: &Flat) -> Option<()> {
        self.space();
        self.eat(b'{')?;
        self.space();
        let mut seen = 0u64;
        if self.eat(b'}').is_none() {
            loop {
                let key = self.key()?;
                self.space();
                self.eat(b':')?;
                self.space();
                let at = flat.find(key);
                match at {
                    Some(at) => {
                        let bit = 1u64 << at;
                        if seen & bit != 0 {
                            return None;
                        }
                        seen |= bit;
                        let check = &flat.props.get(at)?.check;
                        self.value(check)?;
                    }
                    None if flat.additional => self.skip(1)?,
                    None => return None,
                }
                self.space();
                match self.peek()? {
                    b',' => {
                        self.pos += 1;
                        self.space();
                    }
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (seen & flat.required == flat.required).then_some(())
    }

    /// The closing quote of a string without escapes that starts at `from` (None: an
    /// escape, a control character or the end first). Most strings here are short: the first
    /// [`SHORT`] bytes one at a time, the rest eight at a time.
    fn closing_quote(&self, from: usize) -> Option<usize> {
        const SHORT: usize = 16;
        let mut at = from;
        while at < from + SHORT {
            match *self.src.get(at)? {
                b'"' => return Some(at),
                b'\\' | 0..=0x1f => return None,
                _ => at += 1,
            }
        }
        let n = special_at(self.src.get(at..)?)?;
        (self.src.get(at + n) == Some(&b'"')).then_some(at + n)
    }

    /// A property name without escapes (the scan is at its opening quote).
    fn key(&mut self) -> Option<&'p [u8]> {
        self.eat(b'"')?;
        let from = self.pos;
        let end = self.closing_quote(from)?;
        self.pos = end + 1;
        self.src.get(from..end)
    }

    /// A string without escapes (the scan is at its opening quote), as text.
    fn plain_string(&mut self) -> Option<&'p str> {
        self.eat(b'"')?;
        let from = self.pos;
        let end = self.closing_quote(from)?;
        self.pos = end + 1;
        // Quotes are ASCII: both ends are character boundaries of the valid UTF-8 text.
        self.text.get(from..end)
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        same(self.src.get(self.pos..end)?, word).then(|| self.pos = end)
    }

    fn value(&mut self, check: &Check) -> Option<()> {
        match check {
            Check::Any => self.skip(1),
            Check::Never => None,
            Check::Null => self.literal(b"null"),
            Check::Bool => match self.peek()? {
                b't' => self.literal(b"true"),
                _ => self.literal(b"false"),
            },
            Check::Str(s) => s.accepts(self.plain_string()?).then_some(()),
            Check::Number { integer, bounds } => {
                let n = self.number()?;
                let plain = n.plain && n.digits <= EXACT_DIGITS_MAX;
                // A longer plain integer is an exact u64 / i64 to serde_json, compared exactly
                // by jsonschema; its rounded f64 could pass a bound it does not.
                if n.plain && !plain && bounds.iter().any(Option::is_some) {
                    return None;
                }
                if *integer && !plain {
                    // Integers beyond 2^53 or written as 1.0 / 1e3: left to the slow path
                    // unless unbounded.
                    let unbounded = bounds.iter().all(Option::is_none);
                    return (n.plain && unbounded && n.digits <= 19).then_some(());
                }
                if bounds.iter().all(Option::is_none) {
                    return Some(());
                }
                let v = if plain { n.int as f64 } else { n.float? };
                let [min, xmin, max, xmax] = *bounds;
                let ok = min.is_none_or(|m| v >= m)
                    && xmin.is_none_or(|m| v > m)
                    && max.is_none_or(|m| v <= m)
                    && xmax.is_none_or(|m| v < m);
                ok.then_some(())
            }
        }
    }

    /// Digits from the scan's position: how many, and their value while it stays exact (the
    /// caller looks at the count before using it).
    fn digits(&mut self) -> (usize, i64) {
        let from = self.pos;
        let mut value = 0i64;
        while let Some(&d) = self.src.get(self.pos) {
            if !d.is_ascii_digit() {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(i64::from(d - b'0'));
            self.pos += 1;
        }
        (self.pos - from, value)
    }

    /// A number in JSON's grammar: a plain integer's value (when it has at most
    /// [`EXACT_DIGITS_MAX`] digits) or the correctly rounded `f64` serde_json makes of it
    /// (None where serde_json would refuse it or round it its own way).
    fn number(&mut self) -> Option<Num> {
        let from = self.pos;
        let negative = self.eat(b'-').is_some();
        let int_from = self.pos;
        let (digits, int) = self.digits();
        if digits == 0 || (digits > 1 && self.src.get(int_from) == Some(&b'0')) {
            return None;
        }
        let mut fraction = None;
        if self.eat(b'.').is_some() {
            let (n, value) = self.digits();
            if n == 0 {
                return None;
            }
            fraction = Some((n, value));
        }
        let mut exponent = false;
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits().0 == 0 {
                return None;
            }
            exponent = true;
        }
        let plain = fraction.is_none() && !exponent;
        let sign = if negative { -1 } else { 1 };
        if plain && digits <= EXACT_DIGITS_MAX {
            return Some(Num {
                plain,
                digits,
                int: sign * int,
                float: None,
            });
        }
        // A decimal of at most 15 digits in all, no exponent: its digits as an integer below
        // 2^53 over a power of ten below 2^53, both exact, so the one division is correctly
        // rounded (Clinger's fast path), as `str::parse` would round it.
        if let (Some((n, value)), false) = (fraction, exponent) {
            if digits + n <= EXACT_DIGITS_MAX {
                let scale = *POW10.get(n)?;
                let f = (int * (scale as i64) + value) as f64 / scale;
                return Some(Num {
                    plain,
                    digits,
                    int: 0,
                    float: Some(if negative { -f } else { f }),
                });
            }
        }
        // As the tape: what serde_json might read otherwise is left to it.
        Some(Num {
            plain,
            digits,
            int: 0,
            float: Some(float_of(self.text.get(from..self.pos)?)?),
        })
    }

    /// Any JSON value, checked for grammar only (nested at most [`DEPTH_MAX`] deep).
    fn skip(&mut self, depth: usize) -> Option<()> {
        if depth > DEPTH_MAX {
            return None;
        }
        match self.peek()? {
            b'n' => self.literal(b"null"),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'"' => self.skip_string(),
            b'-' | b'0'..=b'9' => self.number().map(|_| ()),
            open @ (b'[' | b'{') => {
                self.pos += 1;
                self.space();
                let close = if open == b'[' { b']' } else { b'}' };
                if self.eat(close).is_some() {
                    return Some(());
                }
                loop {
                    if open == b'{' {
                        self.skip_string()?;
                        self.space();
                        self.eat(b':')?;
                        self.space();
                    }
                    self.skip(depth + 1)?;
                    self.space();
                    match self.peek()? {
                        b',' => {
                            self.pos += 1;
                            self.space();
                        }
                        b if b == close => {
                            self.pos += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            _ => None,
        }
    }

    /// A string whose escapes are the simple ones (`\u` is left to serde_json).
    fn skip_string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            let n = special_at(self.src.get(self.pos..)?)?;
            self.pos += n;
            match self.peek()? {
                b'"' => {
                    self.pos += 1;
                    return Some(());
                }
                b'\\' => {
                    self.pos += 1;
                    match self.peek()? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.pos += 1,
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }
}

/// A number read by [`Scan::number`].
struct Num {
    /// No fraction, no exponent.
    plain: bool,
    /// Digits of the integer part.
    digits: usize,
    /// The value of a plain integer of at most [`EXACT_DIGITS_MAX`] digits.
    int: i64,
    /// The value otherwise.
    float: Option<f64>,
}

#[cfg(test)]
mod tests;
