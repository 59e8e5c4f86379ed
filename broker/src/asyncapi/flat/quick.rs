//! The quick path of [`Flat::accepts`]: a payload with its members in the order of the last
//! payload the full scan accepted whose order differed ([`Order`]) is checked member by
//! member against that order: per member one byte (`{` or `,`), the name and colon as one or
//! two word compares, a seen bit, and the value read and checked inline. If the payloads in
//! that order were written as compactly as JSON allows, whitespace is not expected (the lead
//! byte and the name are then one compare); if one had whitespace between tokens
//! (`json.dumps`'s `", "` and `": "`, pretty-printing), whitespace is skipped around each
//! member's lead byte and after its colon. Anything else (another order, a space before a
//! colon, an escape, a long number, a nested value, an invalid payload) makes it give up,
//! and the full scan (`scan.rs`) decides: this path only ever says "valid" for a payload the
//! full scan accepts, and says nothing otherwise.
//!
//! The order is a code byte per member in relaxed atomics shared by the shards (at most
//! [`ORDER_MAX`] members; a longer payload's order is not remembered). A read
//! racing another shard's write can mix two orders; each code is still checked against the
//! payload's bytes (a property's name, a member once, every required one present), so only
//! the speed depends on the order, never a verdict.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::scan::Quoted;
use super::{Check, Flat, EXACT_DIGITS_MAX, POW10};
use crate::asyncapi::swar::{special_bytes, HIGHS};

/// Words of an [`Order`].
const ORDER_WORDS: usize = 8;

/// Members an [`Order`] holds (a code byte each; its last byte is always [`END`]).
pub(super) const ORDER_MAX: usize = ORDER_WORDS * 8 - 1;

/// The code after the last member.
const END: u8 = 0;

/// The code of a member the schema does not name (an additional property).
pub(super) const UNKNOWN: u8 = u8::MAX;

/// The member order the quick path expects, a code byte per member: a property's index + 1,
/// [`UNKNOWN`], then [`END`].
#[derive(Debug, Default)]
pub(super) struct Order {
    words: [AtomicU64; ORDER_WORDS],
    /// A payload in this order had whitespace between its tokens (see [`Order::learn`]): the
    /// quick path skips whitespace around each member (else it expects none, a little
    /// faster).
    spaced: AtomicBool,
}

impl Order {
    /// The code of member `k` (the full scan's guess of its name).
    pub(super) fn code(&self, k: usize) -> u8 {
        self.words
            .get(k / 8)
            .map_or(END, |w| (w.load(Ordering::Relaxed) >> (k % 8 * 8)) as u8)
    }

    /// Remembers the order of a payload the full scan accepted, writing only the words that
    /// changed (a store every message would bounce the line between the shards' cores). The
    /// spacing is that of the first payload of a new order, and becomes spaced when a later
    /// payload in the order has whitespace (the spaced check takes compact payloads too), so
    /// a payload in the same order that the quick path left to the scan for another reason
    /// does not flip it.
    pub(super) fn learn(&self, seen: &Recorded) {
        if seen.len > ORDER_MAX {
            return;
        }
        let mut changed = false;
        for (word, &new) in self.words.iter().zip(&seen.words) {
            if word.load(Ordering::Relaxed) != new {
                word.store(new, Ordering::Relaxed);
                changed = true;
            }
        }
        if (changed || seen.spaced) && self.spaced.load(Ordering::Relaxed) != seen.spaced {
            self.spaced.store(seen.spaced, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl Order {
    /// Makes the order `codes` (at most [`ORDER_MAX`]), as a racing write could leave it.
    pub(super) fn store_codes(&self, codes: &[u8], spaced: bool) {
        self.spaced.store(spaced, Ordering::Relaxed);
        for (i, word) in self.words.iter().enumerate() {
            let mut bytes = [END; 8];
            for (to, from) in bytes.iter_mut().zip(codes.iter().skip(i * 8)) {
                *to = *from;
            }
            word.store(u64::from_le_bytes(bytes), Ordering::Relaxed);
        }
    }
}

/// The member order of a payload being scanned.
#[derive(Debug, Default)]
pub(super) struct Recorded {
    words: [u64; ORDER_WORDS],
    /// Members seen (past [`ORDER_MAX`]: too many to remember).
    len: usize,
    /// Whitespace between the payload's tokens (anywhere the scan skipped some).
    pub(super) spaced: bool,
}

impl Recorded {
    pub(super) fn push(&mut self, code: u8) {
        debug_assert_ne!(code, END);
        if self.len < ORDER_MAX {
            if let Some(w) = self.words.get_mut(self.len / 8) {
                *w |= u64::from(code) << (self.len % 8 * 8);
            }
        }
        self.len += 1;
    }
}

/// A property's name as the quick path expects it: the byte before it (`{` or `,`, filled
/// in when compared), the quoted name and its colon; in two words when that fits (names of
/// at most 12 bytes), else the lead byte and a byte compare.
#[derive(Debug)]
pub(super) struct Token {
    /// The first sixteen bytes (the lead byte zero) as little-endian words, zero-padded, and
    /// the masks of the bytes that are the token's.
    words: [u64; 2],
    masks: [u64; 2],
    /// Bytes with the lead (0: the name needs an escape, never taken here).
    len: usize,
    /// `"name":`, for a name too long for the words.
    quoted: Box<[u8]>,
}

impl Token {
    pub(super) fn of(name: &[u8]) -> Self {
        if name.iter().any(|&b| b == b'"' || b == b'\\' || b < 0x20) {
            return Self {
                words: [0; 2],
                masks: [0; 2],
                len: 0,
                quoted: Box::default(),
            };
        }
        let quoted: Box<[u8]> = [b"\"", name, b"\":"].concat().into();
        let mut bytes = [0u8; 16];
        let mut mask = [0u8; 16];
        for (i, b) in std::iter::once(&0)
            .chain(quoted.iter())
            .take(16)
            .enumerate()
        {
            if let (Some(w), Some(m)) = (bytes.get_mut(i), mask.get_mut(i)) {
                *w = *b;
                *m = 0xff;
            }
        }
        let half = |b: &[u8; 16], from: usize| {
            let mut h = [0u8; 8];
            for (to, b) in h.iter_mut().zip(b.iter().skip(from)) {
                *to = *b;
            }
            u64::from_le_bytes(h)
        };
        Self {
            words: [half(&bytes, 0), half(&bytes, 8)],
            masks: [half(&mask, 0), half(&mask, 8)],
            len: quoted.len() + 1,
            quoted,
        }
    }
}

/// Eight bytes of `src` from `at` as a little-endian word, zeros past its end (a zero is a
/// control byte: it ends no name and no string a payload can hold).
#[inline(always)]
fn word(src: &[u8], at: usize) -> u64 {
    let rest = src.get(at..).unwrap_or_default();
    match rest.first_chunk::<8>() {
        Some(w) => u64::from_le_bytes(*w),
        None => {
            let mut w = [0u8; 8];
            for (to, from) in w.iter_mut().zip(rest) {
                *to = *from;
            }
            u64::from_le_bytes(w)
        }
    }
}

/// The payload is valid and in the remembered order and spacing: true only if the full scan
/// accepts it too (false: not decided here). Not inlined: its loop keeps its own registers.
#[inline(never)]
pub(super) fn accepts(flat: &Flat, src: &[u8]) -> bool {
    let mut quick = Quick { src, pos: 0 };
    if flat.order.spaced.load(Ordering::Relaxed) {
        quick.object::<true>(flat).is_some()
    } else {
        quick.object::<false>(flat).is_some()
    }
}

struct Quick<'p> {
    src: &'p [u8],
    pos: usize,
}

impl Quick<'_> {
    #[inline(always)]
    fn byte(&mut self, b: u8) -> Option<()> {
        (self.src.get(self.pos) == Some(&b)).then(|| self.pos += 1)
    }

    /// JSON's whitespace, skipped.
    #[inline(always)]
    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The object in the remembered order, whitespace allowed around its tokens (not
    /// between a name and its colon) if `SPACED`, else none.
    fn object<const SPACED: bool>(&mut self, flat: &Flat) -> Option<()> {
        let mut lead = b'{';
        let mut seen = 0u64;
        let mut words = flat.order.words.iter();
        let (mut codes, mut left) = (0u64, 0);
        loop {
            if left == 0 {
                codes = words.next()?.load(Ordering::Relaxed);
                left = 8;
            }
            let code = codes as u8;
            (codes, left) = (codes >> 8, left - 1);
            match code {
                END => {
                    if SPACED {
                        self.space();
                    }
                    if lead == b'{' {
                        self.byte(b'{')?;
                        if SPACED {
                            self.space();
                        }
                    }
                    self.byte(b'}')?;
                    if SPACED {
                        self.space();
                    }
                    return (self.pos == self.src.len() && seen & flat.required == flat.required)
                        .then_some(());
                }
                UNKNOWN => {
                    if SPACED {
                        self.space();
                    }
                    self.byte(lead)?;
                    if SPACED {
                        self.space();
                    }
                    if !flat.additional {
                        return None;
                    }
                    let (from, end, _) = self.string()?;
                    if flat.find(self.src.get(from..end)?).is_some() {
                        return None;
                    }
                    self.byte(b':')?;
                    if SPACED {
                        self.space();
                    }
                    self.any()?;
                }
                _ => {
                    let prop = flat.props.get(usize::from(code - 1))?;
                    if SPACED {
                        self.space();
                        self.byte(lead)?;
                        self.space();
                        self.quoted(prop.quoted.as_ref()?)?;
                        self.space();
                    } else {
                        self.name(&prop.token, lead)?;
                    }
                    // (Every property has its bit: a schema of over 64 is not flat.)
                    if seen & prop.bit != 0 {
                        return None;
                    }
                    seen |= prop.bit;
                    self.value(&prop.check)?;
                }
            }
            lead = b',';
        }
    }

    /// A property's quoted name and colon.
    #[inline(always)]
    fn quoted(&mut self, q: &Quoted) -> Option<()> {
        let len = q.bytes.len();
        let hit = match len {
            0..=8 => word(self.src, self.pos) & q.masks[0] == q.words[0],
            9..=16 => {
                word(self.src, self.pos) == q.words[0]
                    && word(self.src, self.pos + 8) & q.masks[1] == q.words[1]
            }
            _ => self
                .src
                .get(self.pos..self.pos + len)
                .is_some_and(|s| s == &*q.bytes),
        };
        hit.then(|| self.pos += len)
    }

    /// `lead` and a property's quoted name and colon.
    #[inline(always)]
    fn name(&mut self, t: &Token, lead: u8) -> Option<()> {
        let [w0, w1] = t.words;
        let [m0, m1] = t.masks;
        let first = w0 | u64::from(lead);
        let hit = match t.len {
            0 => false,
            1..=8 => word(self.src, self.pos) & m0 == first,
            9..=16 => word(self.src, self.pos) == first && word(self.src, self.pos + 8) & m1 == w1,
            len => {
                self.src.get(self.pos) == Some(&lead)
                    && self
                        .src
                        .get(self.pos + 1..self.pos + len)
                        .is_some_and(|s| s == &*t.quoted)
            }
        };
        hit.then(|| self.pos += t.len)
    }

    #[inline(always)]
    fn value(&mut self, check: &Check) -> Option<()> {
        match check {
            Check::Str(s) => {
                let (from, end, ascii) = self.string()?;
                s.accepts(self.src.get(from..end)?, ascii).then_some(())
            }
            Check::Number { integer, range, .. } => {
                let v = self.number(*integer)?;
                Check::within(range, v).then_some(())
            }
            Check::Bool => self.boolean(),
            Check::Null => self.literal(b"null"),
            Check::Any => self.any(),
            Check::Never => None,
        }
    }

    /// A value of any type that is not an object or an array.
    #[inline(always)]
    fn any(&mut self) -> Option<()> {
        match *self.src.get(self.pos)? {
            b'"' => self.string().map(|_| ()),
            b'-' | b'0'..=b'9' => self.number(false).map(|_| ()),
            b'n' => self.literal(b"null"),
            _ => self.boolean(),
        }
    }

    fn boolean(&mut self) -> Option<()> {
        match self.src.get(self.pos)? {
            b't' => self.literal(b"true"),
            _ => self.literal(b"false"),
        }
    }

    #[inline(always)]
    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.pos + word.len();
        (self.src.get(self.pos..end)? == word).then(|| self.pos = end)
    }

    /// A string without escapes or control bytes, valid UTF-8 (the scan is at its opening
    /// quote): where its body starts and ends, and whether it is all ASCII.
    #[inline(always)]
    fn string(&mut self) -> Option<(usize, usize, bool)> {
        self.byte(b'"')?;
        let from = self.pos;
        let mut at = from;
        let mut high = 0u64;
        // The first word alone (most strings end in it), then word by word; the last bytes
        // zero-padded (a zero is a control byte, so marked).
        let first = word(self.src, from);
        let (x, marks) = match special_bytes(first) {
            0 => {
                high = first;
                at += 8;
                let mut words = self.src.get(at..)?.chunks_exact(8);
                let mut marked = None;
                for w in words.by_ref() {
                    let x = u64::from_le_bytes(w.try_into().unwrap_or_default());
                    let marks = special_bytes(x);
                    if marks != 0 {
                        marked = Some((x, marks));
                        break;
                    }
                    high |= x;
                    at += 8;
                }
                marked.unwrap_or_else(|| {
                    let x = word(words.remainder(), 0);
                    (x, special_bytes(x))
                })
            }
            marks => (first, marks),
        };
        let n = (marks.trailing_zeros() / 8) as usize;
        // The bytes before the first mark (n < 8: the shift is in range).
        high |= x & ((1u64 << (n * 8)) - 1);
        at += n;
        if self.src.get(at) != Some(&b'"') {
            return None;
        }
        let ascii = high & HIGHS == 0;
        if !ascii {
            std::str::from_utf8(self.src.get(from..at)?).ok()?;
        }
        self.pos = at + 1;
        Some((from, at, ascii))
    }

    /// A number of at most [`EXACT_DIGITS_MAX`] digits and no exponent (a fraction only if
    /// not `integer`): its value, exact for an integer, else the correctly rounded `f64`
    /// (Clinger's fast path, as `str::parse` rounds it).
    #[inline(always)]
    fn number(&mut self, integer: bool) -> Option<f64> {
        let negative = self.src.get(self.pos) == Some(&b'-');
        let first = self.pos + usize::from(negative);
        let (mut at, mut value) = self.digits(first, 0);
        let digits = at - first;
        if digits == 0 || (digits > 1 && self.src.get(first) == Some(&b'0')) {
            return None;
        }
        let mut scale = 0;
        if self.src.get(at) == Some(&b'.') {
            if integer {
                return None;
            }
            let from = at + 1;
            (at, value) = self.digits(from, value);
            scale = at - from;
            if scale == 0 {
                return None;
            }
        }
        if digits + scale > EXACT_DIGITS_MAX || matches!(self.src.get(at), Some(b'e' | b'E')) {
            return None;
        }
        let v = value as f64 / *POW10.get(scale)?;
        self.pos = at;
        Some(if negative { -v } else { v })
    }

    /// The digits from `at`: where they end, and `value` with them appended (wrapping: the
    /// caller refuses more than [`EXACT_DIGITS_MAX`] in all).
    #[inline(always)]
    fn digits(&self, at: usize, mut value: i64) -> (usize, i64) {
        let rest = self.src.get(at..).unwrap_or_default();
        let mut n = 0;
        for &b in rest {
            let d = b.wrapping_sub(b'0');
            if d > 9 {
                break;
            }
            value = value.wrapping_mul(10).wrapping_add(i64::from(d));
            n += 1;
        }
        (at + n, value)
    }
}
