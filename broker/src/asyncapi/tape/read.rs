//! Reading a payload into the tape (`super`): JSON's grammar exactly as `serde_json` reads
//! it, or [`Unread`]: strings found eight bytes at a time, simple escapes decoded, `\u` left
//! to serde_json; plain integers converted here, other numbers as correctly rounded `f64`s
//! (serde_json is built with `float_roundtrip`), over 19 significant digits left to it;
//! duplicate keys, more than [`MEMBERS_MAX`] members and nesting past [`DEPTH_MAX`] left to it.

use serde_json::Number;

use super::{Slot, Tape, Unread};
use crate::asyncapi::swar;

/// Nesting the tape reads (serde_json refuses past 127).
const DEPTH_MAX: usize = 100;

/// Members of one object the tape reads (its duplicate-key check is quadratic).
const MEMBERS_MAX: usize = 32;

/// A payload being read into a tape.
pub(super) struct Reader<'t> {
    pub(super) src: &'t [u8],
    pub(super) pos: usize,
    pub(super) tape: &'t mut Tape,
}

impl Reader<'_> {
    pub(super) fn document(mut self) -> Result<(), Unread> {
        self.value(0)?;
        self.space();
        if self.pos == self.src.len() {
            Ok(())
        } else {
            Err(Unread)
        }
    }

    fn space(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.src.get(self.pos).copied()
    }

    fn literal(&mut self, word: &[u8], slot: Slot) -> Result<(), Unread> {
        if self.src.get(self.pos..self.pos + word.len()) != Some(word) {
            return Err(Unread);
        }
        self.pos += word.len();
        self.tape.slots.push(slot);
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), Unread> {
        self.space();
        match self.peek().ok_or(Unread)? {
            b'n' => self.literal(b"null", Slot::Null),
            b't' => self.literal(b"true", Slot::Bool(true)),
            b'f' => self.literal(b"false", Slot::Bool(false)),
            b'"' => self.string(),
            b'[' => self.array(depth + 1),
            b'{' => self.object(depth + 1),
            b'-' | b'0'..=b'9' => self.number(),
            _ => Err(Unread),
        }
    }

    fn digits(&mut self) -> usize {
        let from = self.pos;
        while let Some(b'0'..=b'9') = self.peek() {
            self.pos += 1;
        }
        self.pos - from
    }

    /// JSON's number grammar; plain integers converted here, the rest by `serde_json`.
    fn number(&mut self) -> Result<(), Unread> {
        let from = self.pos;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.pos += 1;
        }
        let int_from = self.pos;
        let int_len = self.digits();
        if int_len == 0 || (int_len > 1 && self.src.get(int_from) == Some(&b'0')) {
            return Err(Unread);
        }
        let mut plain = true;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(Unread);
            }
            plain = false;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(Unread);
            }
            plain = false;
        }
        let token = self.src.get(from..self.pos).ok_or(Unread)?;
        let digits = self.src.get(int_from..int_from + int_len).ok_or(Unread)?;
        let number = match (plain, int_len <= 18) {
            (true, true) => {
                let n = digits
                    .iter()
                    .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
                match (negative, n) {
                    (false, n) => Number::from(n.unsigned_abs()),
                    // `-0` is a float to serde_json.
                    (true, 0) => Number::from_f64(-0.0).ok_or(Unread)?,
                    (true, n) => Number::from(-n),
                }
            }
            _ => {
                let text = std::str::from_utf8(token).map_err(|_| Unread)?;
                let integer = match (plain, negative) {
                    (true, false) => text.parse::<u64>().ok().map(Number::from),
                    (true, true) => text.parse::<i64>().ok().map(Number::from),
                    (false, _) => None,
                };
                match integer {
                    Some(n) => n,
                    None => Number::from_f64(float_of(text).ok_or(Unread)?).ok_or(Unread)?,
                }
            }
        };
        self.tape.slots.push(Slot::Num(number));
        Ok(())
    }

    /// A string; simple escapes decoded into the tape's own buffer, `\u` left to serde_json.
    fn string(&mut self) -> Result<(), Unread> {
        self.pos += 1;
        let from = self.pos;
        let rest = self.src.get(from..).ok_or(Unread)?;
        let n = swar::special_in(rest).0.ok_or(Unread)?;
        self.pos = from + n;
        match rest.get(n) {
            Some(b'"') => {}
            Some(b'\\') => return self.escaped(from),
            _ => return Err(Unread),
        }
        let slot = Slot::Str {
            at: u32::try_from(from).map_err(|_| Unread)?,
            len: u32::try_from(n).map_err(|_| Unread)?,
            decoded: false,
            hash: 0,
        };
        self.pos += 1;
        self.tape.slots.push(slot);
        Ok(())
    }

    fn escaped(&mut self, from: usize) -> Result<(), Unread> {
        let start = self.tape.decoded.len();
        let head = std::str::from_utf8(self.src.get(from..self.pos).ok_or(Unread)?);
        self.tape.decoded.push_str(head.map_err(|_| Unread)?);
        loop {
            let b = self.peek().ok_or(Unread)?;
            self.pos += 1;
            let c = match b {
                b'"' => break,
                b'\\' => match self.peek().ok_or(Unread)? {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => return Err(Unread),
                },
                0..=0x1f => return Err(Unread),
                _ => {
                    // One UTF-8 character (the payload is valid UTF-8).
                    let rest = self.src.get(self.pos - 1..).ok_or(Unread)?;
                    let width = utf8_width(b);
                    let ch = std::str::from_utf8(rest.get(..width).ok_or(Unread)?)
                        .map_err(|_| Unread)?;
                    self.tape.decoded.push_str(ch);
                    self.pos += width - 1;
                    continue;
                }
            };
            self.pos += 1;
            self.tape.decoded.push(c);
        }
        let len = self.tape.decoded.len() - start;
        self.tape.slots.push(Slot::Str {
            at: u32::try_from(start).map_err(|_| Unread)?,
            len: u32::try_from(len).map_err(|_| Unread)?,
            decoded: true,
            hash: 0,
        });
        Ok(())
    }

    fn array(&mut self, depth: usize) -> Result<(), Unread> {
        if depth > DEPTH_MAX {
            return Err(Unread);
        }
        self.pos += 1;
        let at = self.tape.slots.len();
        self.tape.slots.push(Slot::Arr { len: 0, end: 0 });
        let mut len = 0u32;
        self.space();
        if self.peek() == Some(b']') {
            self.pos += 1;
        } else {
            loop {
                self.value(depth)?;
                len += 1;
                self.space();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b']') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Unread),
                }
            }
        }
        let end = u32::try_from(self.tape.slots.len()).map_err(|_| Unread)?;
        if let Some(slot) = self.tape.slots.get_mut(at) {
            *slot = Slot::Arr { len, end };
        }
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), Unread> {
        if depth > DEPTH_MAX {
            return Err(Unread);
        }
        self.pos += 1;
        let at = self.tape.slots.len();
        self.tape.slots.push(Slot::Obj { len: 0, end: 0 });
        let mut keys: [(u32, usize); MEMBERS_MAX] = [(0, 0); MEMBERS_MAX];
        let mut len = 0usize;
        self.space();
        if self.peek() == Some(b'}') {
            self.pos += 1;
        } else {
            loop {
                self.space();
                if self.peek() != Some(b'"') {
                    return Err(Unread);
                }
                let key_at = self.tape.slots.len();
                self.string()?;
                let hash = key_hash(self.key(key_at));
                if let Some(Slot::Str { hash: h, .. }) = self.tape.slots.get_mut(key_at) {
                    *h = hash;
                }
                // A duplicate key (serde_json keeps the last value) is left to serde_json.
                let earlier = keys.get(..len).ok_or(Unread)?;
                if earlier
                    .iter()
                    .any(|(h, k)| *h == hash && self.key(*k) == self.key(key_at))
                {
                    return Err(Unread);
                }
                *keys.get_mut(len).ok_or(Unread)? = (hash, key_at);
                len += 1;
                self.space();
                if self.peek() != Some(b':') {
                    return Err(Unread);
                }
                self.pos += 1;
                self.value(depth)?;
                self.space();
                match self.peek() {
                    Some(b',') => self.pos += 1,
                    Some(b'}') => {
                        self.pos += 1;
                        break;
                    }
                    _ => return Err(Unread),
                }
            }
        }
        let end = u32::try_from(self.tape.slots.len()).map_err(|_| Unread)?;
        let len = u32::try_from(len).map_err(|_| Unread)?;
        if let Some(slot) = self.tape.slots.get_mut(at) {
            *slot = Slot::Obj { len, end };
        }
        Ok(())
    }

    /// The text of the key at slot `at`.
    fn key(&self, at: usize) -> &[u8] {
        match self.tape.slots.get(at) {
            Some(Slot::Str {
                at, len, decoded, ..
            }) => {
                let (at, len) = (*at as usize, *len as usize);
                let bytes = if *decoded {
                    self.tape.decoded.as_bytes()
                } else {
                    self.src
                };
                bytes.get(at..at + len).unwrap_or_default()
            }
            _ => &[],
        }
    }
}

/// The `f64` serde_json makes of a JSON number token, where this is sure to be the same: it is
/// built with `float_roundtrip` here (jsonschema asks for it), so its floats are correctly
/// rounded, as `str::parse` is. None (left to serde_json) out of range (an error to it), on
/// underflow, and past 19 significant digits, which it rounds its own way (trailing integer
/// zeros past 768 digits round up).
pub(in crate::asyncapi) fn float_of(token: &str) -> Option<f64> {
    let significant = token.bytes().take_while(|b| !matches!(b, b'e' | b'E'));
    if significant.filter(u8::is_ascii_digit).count() > 19 {
        return None;
    }
    let f = token.parse::<f64>().ok()?;
    // A significand that is not zero read as zero (the exponent's digits do not count).
    let mut significand = token.bytes().take_while(|b| !matches!(b, b'e' | b'E'));
    let underflow = f == 0.0 && significand.any(|d| (b'1'..=b'9').contains(&d));
    (f.is_finite() && !underflow).then_some(f)
}

/// An object key's hash (FNV-1a; never 0, which marks a string that is no key).
pub(super) fn key_hash(key: &[u8]) -> u32 {
    let h = key.iter().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    });
    h.max(1)
}

/// Bytes of the UTF-8 character starting with `b`.
fn utf8_width(b: u8) -> usize {
    match b {
        0xf0.. => 4,
        0xe0.. => 3,
        0xc0.. => 2,
        _ => 1,
    }
}
