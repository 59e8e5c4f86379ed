//! The one pass over a payload's bytes for [`Flat::accepts`]: the object's members read in
//! order, each value checked as it is read. Strings are searched eight bytes at a time for
//! their end (a quote, a backslash, a control byte) and for non-ASCII bytes; only a string
//! holding some is checked as UTF-8, so an ASCII payload is never validated twice. Every byte
//! outside strings is matched as JSON's grammar (ASCII), so a payload passes only if all of
//! it is valid UTF-8, as serde_json requires.
//!
//! A member's name and colon are first compared, in one or two words (a byte compare past 16
//! bytes), with the name at the same place in the remembered order (`quick.rs`): payloads
//! of one channel mostly come in one order. The scan records the order it reads, which
//! [`Flat::accepts`] remembers when the payload is valid.

use super::quick::{Recorded, UNKNOWN};
use super::{same, Check, Flat, DEPTH_MAX, EXACT_DIGITS_MAX, POW10};
use crate::asyncapi::swar::{special_bytes, special_in, HIGHS};
use crate::asyncapi::tape::float_of;

/// A property's name as a payload writes it, quotes and colon included (`"name":`), when it
/// needs no escape: the guessed next member is one or two word compares.
#[derive(Debug)]
pub(super) struct Quoted {
    pub(super) bytes: Box<[u8]>,
    /// The first sixteen bytes of `bytes` as two little-endian words (zero-padded), and the
    /// masks of the bytes that are `bytes`'.
    pub(super) words: [u64; 2],
    pub(super) masks: [u64; 2],
}

impl Quoted {
    pub(super) fn of(name: &[u8]) -> Option<Self> {
        if name.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        let bytes: Box<[u8]> = [b"\"", name, b"\":"].concat().into();
        let mut word = [0u8; 16];
        let mut mask = [0u8; 16];
        for (i, b) in bytes.iter().take(16).enumerate() {
            if let (Some(w), Some(m)) = (word.get_mut(i), mask.get_mut(i)) {
                *w = *b;
                *m = 0xff;
            }
        }
        let half = |b: &[u8; 16], i: usize| {
            let mut h = [0u8; 8];
            h.copy_from_slice(b.get(i..i + 8).unwrap_or(&[0; 8]));
            u64::from_le_bytes(h)
        };
        Some(Self {
            words: [half(&word, 0), half(&word, 8)],
            masks: [half(&mask, 0), half(&mask, 8)],
            bytes,
        })
    }
}

/// A string's body as read: where it ends, and whether it is all ASCII.
struct Body {
    /// Its first byte (after the opening quote).
    from: usize,
    /// Its closing quote.
    end: usize,
    /// No byte of it is over 0x7f.
    ascii: bool,
}

/// A payload being checked.
pub(super) struct Scan<'p> {
    pub(super) src: &'p [u8],
    pub(super) pos: usize,
    /// Whitespace was skipped somewhere.
    pub(super) spaced: bool,
}

impl<'p> Scan<'p> {
    pub(super) fn new(src: &'p [u8]) -> Self {
        Self {
            src,
            pos: 0,
            spaced: false,
        }
    }

    pub(super) fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
            self.spaced = true;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> Option<()> {
        (self.peek()? == b).then(|| self.pos += 1)
    }

    /// `b` next, after any whitespace.
    fn expect(&mut self, b: u8) -> Option<()> {
        if self.peek() != Some(b) {
            self.space();
        }
        self.eat(b)
    }

    /// Skips whitespace when the next byte is some.
    fn maybe_space(&mut self) {
        if let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.space();
        }
    }

    /// The name of `flat.props[at]` and its colon are next (`"name":`), and are taken.
    fn take_name(&mut self, flat: &Flat, at: usize) -> bool {
        let Some(q) = flat.props.get(at).and_then(|p| p.quoted.as_ref()) else {
            return false;
        };
        let len = q.bytes.len();
        let word = |from: usize| {
            self.src
                .get(from..from + 8)
                .map(|w| u64::from_le_bytes(w.try_into().unwrap_or_default()))
        };
        let hit = match (len, word(self.pos)) {
            (..=8, Some(a)) => a & q.masks[0] == q.words[0],
            (..=16, Some(a)) => {
                a == q.words[0] && word(self.pos + 8).is_some_and(|b| b & q.masks[1] == q.words[1])
            }
            _ => self
                .src
                .get(self.pos..self.pos + len)
                .is_some_and(|s| same(s, &q.bytes)),
        };
        if hit {
            self.pos += len;
        }
        hit
    }

    /// The top-level object, each property checked, its members' order recorded in
    /// `order`.
    pub(super) fn object(&mut self, flat: &Flat, order: &mut Recorded) -> Option<()> {
        self.space();
        self.eat(b'{')?;
        self.space();
        if self.eat(b'}').is_some() {
            return (flat.required == 0).then_some(());
        }
        let mut seen = 0u64;
        // Members read so far: the next one's name is guessed from the remembered order.
        let mut k = 0;
        loop {
            let guess = usize::from(flat.order.code(k));
            k += 1;
            let at = match guess.checked_sub(1) {
                Some(at) if self.take_name(flat, at) => Some(at),
                _ => {
                    let key = self.key()?;
                    let at = flat.find(key);
                    self.expect(b':')?;
                    at
                }
            };
            self.maybe_space();
            match at {
                Some(at) => {
                    let bit = 1u64 << at;
                    if seen & bit != 0 {
                        return None;
                    }
                    seen |= bit;
                    order.push(at as u8 + 1);
                    self.value(&flat.props.get(at)?.check)?;
                }
                None if flat.additional => {
                    order.push(UNKNOWN);
                    self.skip(1)?;
                }
                None => return None,
            }
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => break,
                _ => {
                    self.space();
                    match self.peek()? {
                        b',' => self.pos += 1,
                        b'}' => break,
                        _ => return None,
                    }
                }
            }
            self.maybe_space();
        }
        self.pos += 1;
        (seen & flat.required == flat.required).then_some(())
    }

    /// [`Scan::string`] for the common short string: all ASCII, nothing special, its closing
    /// quote within the eight bytes after the opening one.
    #[inline(always)]
    fn string(&mut self, escapes: bool) -> Option<Body> {
        if let (Some(b'"'), Some(w)) = (
            self.src.get(self.pos),
            self.src.get(self.pos + 1..self.pos + 9),
        ) {
            let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
            let marks = special_bytes(x);
            let n = (marks.trailing_zeros() / 8) as usize;
            // `n < 8`: a mark; the bytes before it (the shift then in range) are ASCII.
            if n < 8 && x & ((1u64 << (n * 8)) - 1) & HIGHS == 0 {
                let from = self.pos + 1;
                let end = from + n;
                if self.src.get(end) == Some(&b'"') {
                    self.pos = end + 1;
                    return Some(Body {
                        from,
                        end,
                        ascii: true,
                    });
                }
            }
        }
        self.long_string(escapes)
    }

    /// The string the scan is at (its opening quote), read up to its closing quote (None: a
    /// control byte, invalid UTF-8 or the end first, or an escape unless `escapes`; `\u`
    /// never, left to serde_json).
    #[inline(never)]
    fn long_string(&mut self, escapes: bool) -> Option<Body> {
        self.eat(b'"')?;
        let from = self.pos;
        let mut at = from;
        let mut high = 0u64;
        loop {
            let (n, bits) = special_in(self.src.get(at..)?);
            high |= bits;
            at += n?;
            match *self.src.get(at)? {
                b'"' => break,
                b'\\' if escapes => {
                    match self.src.get(at + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => at += 2,
                        _ => return None,
                    }
                    continue;
                }
                _ => return None,
            }
        }
        let ascii = high & HIGHS == 0;
        if !ascii {
            // Escapes are ASCII: the raw bytes are UTF-8 exactly when the string is.
            std::str::from_utf8(self.src.get(from..at)?).ok()?;
        }
        self.pos = at + 1;
        Some(Body {
            from,
            end: at,
            ascii,
        })
    }

    /// A property name without escapes (the scan is at its opening quote).
    fn key(&mut self) -> Option<&'p [u8]> {
        let b = self.string(false)?;
        self.src.get(b.from..b.end)
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
            Check::Str(s) => {
                let b = self.string(false)?;
                s.accepts(self.src.get(b.from..b.end)?, b.ascii)
                    .then_some(())
            }
            Check::Number {
                integer,
                bounds,
                range,
            } => {
                let from = self.pos;
                if let Some((v, integral)) = self.short_number() {
                    if integral || !*integer {
                        return Check::within(range, v).then_some(());
                    }
                    self.pos = from;
                }
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
                Check::within(range, v).then_some(())
            }
        }
    }

    /// A number of at most [`EXACT_DIGITS_MAX`] digits in all and no exponent, taken only if
    /// it is one: its value (exact for an integer, else the correctly rounded `f64`, as
    /// `str::parse` makes it: the digits as an integer below 2^53 over a power of ten below
    /// 2^53, both exact, one division: Clinger's fast path) and whether it has no fraction.
    /// Otherwise the scan stays where it was.
    pub(super) fn short_number(&mut self) -> Option<(f64, bool)> {
        let negative = self.src.get(self.pos) == Some(&b'-');
        let first = self.pos + usize::from(negative);
        let (digits, mut value) = self.digit_run(first, EXACT_DIGITS_MAX, 0);
        if digits == 0 || (digits > 1 && self.src.get(first) == Some(&b'0')) {
            return None;
        }
        let mut at = first + digits;
        let mut scale = 0;
        if self.src.get(at) == Some(&b'.') {
            at += 1;
            (scale, value) = self.digit_run(at, EXACT_DIGITS_MAX - digits, value);
            if scale == 0 {
                return None;
            }
            at += scale;
        }
        // More digits, an exponent, or the end: not for this path.
        if matches!(
            self.src.get(at),
            Some(b'.' | b'e' | b'E' | b'0'..=b'9') | None
        ) {
            return None;
        }
        let v = value as f64 / *POW10.get(scale)?;
        self.pos = at;
        Some((if negative { -v } else { v }, scale == 0))
    }

    /// At most `max` digits at `from`: how many, and `value` with them appended (no overflow
    /// for `max` of at most [`EXACT_DIGITS_MAX`] in all).
    fn digit_run(&self, from: usize, max: usize, mut value: i64) -> (usize, i64) {
        let mut n = 0;
        for &d in self.src.get(from..).unwrap_or_default().iter().take(max) {
            let digit = d.wrapping_sub(b'0');
            if digit > 9 {
                break;
            }
            value = value * 10 + i64::from(digit);
            n += 1;
        }
        (n, value)
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
    pub(super) fn number(&mut self) -> Option<Num> {
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
        // As the tape: what serde_json might read otherwise is left to it (a number's bytes
        // are ASCII).
        let text = std::str::from_utf8(self.src.get(from..self.pos)?).ok()?;
        Some(Num {
            plain,
            digits,
            int: 0,
            float: Some(float_of(text)?),
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
            b'"' => self.string(true).map(|_| ()),
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
                        self.string(true)?;
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
}

/// A number read by [`Scan::number`].
pub(super) struct Num {
    /// No fraction, no exponent.
    pub(super) plain: bool,
    /// Digits of the integer part.
    pub(super) digits: usize,
    /// The value of a plain integer of at most [`EXACT_DIGITS_MAX`] digits.
    pub(super) int: i64,
    /// The value otherwise.
    pub(super) float: Option<f64>,
}
