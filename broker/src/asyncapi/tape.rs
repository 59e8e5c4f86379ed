//! A JSON payload read into a flat tape that the `jsonschema` crate validates in place (its
//! custom-representation interface): one reusable buffer per thread, strings borrowed from the
//! payload, no allocation per message, where `serde_json::Value` allocates per string, object
//! and array. The tape is a fast path for payloads that are valid: anything it does not read
//! exactly as `serde_json` would (a `\u` escape, a duplicate key, nesting past 100, more than
//! 32 members in an object, over 19 significant digits, any syntax error) is [`Unread`]
//! (`read.rs`), and the caller falls back to `serde_json::Value`, which also words the
//! errors. Numbers are `serde_json::Number`s as serde_json makes them:
//! integers that fit as `u64` / `i64`, the rest as correctly rounded `f64`s (serde_json is
//! built with `float_roundtrip` here).

use std::borrow::Cow;
use std::cell::RefCell;

use jsonschema::json::{Array, Json, Node, NodeIdentity, Object};
use jsonschema::JsonType;
use serde_json::{Number, Value};

mod read;

pub(super) use read::float_of;
use read::{key_hash, Reader};

/// Slots a tape keeps between payloads.
const SLOTS_KEPT_MAX: usize = 4096;

/// Bytes of decoded (escaped) strings a tape keeps between payloads.
const DECODED_KEPT_MAX: usize = 64 * 1024;

/// The payload is not read by the tape (the caller parses it with `serde_json`).
#[derive(Debug, PartialEq, Eq)]
pub struct Unread;

/// One value on the tape. A container is followed by its children (an object's as key, value,
/// key, value...); `end` is the index after its last descendant.
#[derive(Debug, Clone)]
enum Slot {
    Null,
    Bool(bool),
    Num(Number),
    /// A byte range of the payload, or of the decoded strings when `decoded`; an object key
    /// carries its [`key_hash`] (0 otherwise).
    Str {
        at: u32,
        len: u32,
        decoded: bool,
        hash: u32,
    },
    Arr {
        len: u32,
        end: u32,
    },
    Obj {
        len: u32,
        end: u32,
    },
}

/// A tape's storage, reused between payloads.
#[derive(Debug, Default)]
struct Tape {
    slots: Vec<Slot>,
    decoded: String,
}

thread_local! {
    static TAPE: RefCell<Tape> = RefCell::new(Tape::default());
}

/// Reads `payload` into this thread's tape and runs `f` on its root (None: [`Unread`]).
pub fn with_payload<T>(payload: &[u8], f: impl FnOnce(TapeNode<'_>) -> T) -> Option<T> {
    let text = std::str::from_utf8(payload).ok()?;
    TAPE.with(|cell| {
        let mut tape = cell.try_borrow_mut().ok()?;
        tape.slots.clear();
        tape.decoded.clear();
        let read = Reader {
            src: text.as_bytes(),
            pos: 0,
            tape: &mut tape,
        }
        .document();
        let result = read.ok().map(|()| {
            let doc = Doc {
                slots: &tape.slots,
                src: text,
                decoded: &tape.decoded,
            };
            f(TapeNode { doc: &doc, at: 0 })
        });
        if tape.slots.capacity() > SLOTS_KEPT_MAX || tape.decoded.capacity() > DECODED_KEPT_MAX {
            *tape = Tape::default();
        }
        result
    })
}

/// Runs `f` on a string node holding `text` (a topic level checked against a parameter);
/// None for a text over 4 GiB.
pub fn with_str<T>(text: &str, f: impl FnOnce(TapeNode<'_>) -> T) -> Option<T> {
    let slots = [Slot::Str {
        at: 0,
        len: u32::try_from(text.len()).ok()?,
        decoded: false,
        hash: 0,
    }];
    let doc = Doc {
        slots: &slots,
        src: text,
        decoded: "",
    };
    Some(f(TapeNode { doc: &doc, at: 0 }))
}

/// Characters (code points) of `text`: its bytes that do not continue a character.
fn chars(text: &str) -> u64 {
    text.bytes().filter(|b| (b & 0xc0) != 0x80).count() as u64
}

/// A read tape: its slots and the texts they point into.
#[derive(Debug)]
pub struct Doc<'a> {
    slots: &'a [Slot],
    src: &'a str,
    decoded: &'a str,
}

impl<'a> Doc<'a> {
    fn slot(&self, at: usize) -> &'a Slot {
        self.slots.get(at).unwrap_or(&Slot::Null)
    }

    fn text(&self, at: usize) -> &'a str {
        match self.slot(at) {
            Slot::Str {
                at, len, decoded, ..
            } => {
                let (at, len) = (*at as usize, *len as usize);
                let text = if *decoded { self.decoded } else { self.src };
                text.get(at..at + len).unwrap_or_default()
            }
            _ => "",
        }
    }

    /// The index after the value at `at` and its descendants.
    fn after(&self, at: usize) -> usize {
        match self.slot(at) {
            Slot::Arr { end, .. } | Slot::Obj { end, .. } => *end as usize,
            _ => at + 1,
        }
    }
}

/// The tape as a `jsonschema` instance representation.
#[derive(Debug)]
pub struct TapeJson;

impl Json for TapeJson {
    type Node<'a> = TapeNode<'a>;
    /// The name and its [`key_hash`].
    type PreparedKey = (u32, String);
    type StringBuffer = String;

    // A lookup is a scan of the members: a pass over them is worth it early.
    const KEYS_PER_LOOKUP: usize = 4;
    const ACYCLIC: bool = true;

    fn prepare_key(key: &str) -> (u32, String) {
        (key_hash(key.as_bytes()), key.to_owned())
    }

    fn with_string_node<T>(
        buffer: &mut String,
        string: &str,
        f: impl FnOnce(TapeNode<'_>) -> T,
    ) -> T {
        buffer.clear();
        buffer.push_str(string);
        let slots = [Slot::Str {
            at: 0,
            len: u32::try_from(buffer.len()).unwrap_or(0),
            decoded: true,
            hash: 0,
        }];
        let doc = Doc {
            slots: &slots,
            src: "",
            decoded: buffer,
        };
        f(TapeNode { doc: &doc, at: 0 })
    }
}

/// One value of a read tape.
#[derive(Clone, Copy, Debug)]
pub struct TapeNode<'a> {
    doc: &'a Doc<'a>,
    at: usize,
}

impl<'a> TapeNode<'a> {
    fn slot(&self) -> &'a Slot {
        self.doc.slot(self.at)
    }
}

impl<'a> Node<'a, TapeJson> for TapeNode<'a> {
    type Object = TapeObject<'a>;
    type Array = TapeArray<'a>;
    type Number = &'a Number;

    fn as_object(&self) -> Option<TapeObject<'a>> {
        match self.slot() {
            Slot::Obj { len, .. } => Some(TapeObject {
                doc: self.doc,
                at: self.at,
                len: *len as usize,
                hint: std::cell::Cell::new((0, self.at + 1)),
            }),
            _ => None,
        }
    }

    fn as_array(&self) -> Option<TapeArray<'a>> {
        match self.slot() {
            Slot::Arr { len, .. } => Some(TapeArray {
                doc: self.doc,
                at: self.at,
                len: *len as usize,
            }),
            _ => None,
        }
    }

    fn as_string(&self) -> Option<Cow<'a, str>> {
        matches!(self.slot(), Slot::Str { .. }).then(|| Cow::Borrowed(self.doc.text(self.at)))
    }

    fn as_number(&self) -> Option<&'a Number> {
        match self.slot() {
            Slot::Num(n) => Some(n),
            _ => None,
        }
    }

    fn as_boolean(&self) -> Option<bool> {
        match self.slot() {
            Slot::Bool(b) => Some(*b),
            _ => None,
        }
    }

    fn is_null(&self) -> bool {
        matches!(self.slot(), Slot::Null)
    }

    fn string_length(&self) -> Option<u64> {
        matches!(self.slot(), Slot::Str { .. }).then(|| chars(self.doc.text(self.at)))
    }

    fn string_length_within(&self, min: u64, max: u64) -> Option<bool> {
        if !matches!(self.slot(), Slot::Str { .. }) {
            return None;
        }
        // A character is one to four bytes: the byte count often decides alone.
        let text = self.doc.text(self.at);
        let bytes = text.len() as u64;
        if bytes < min || bytes.div_ceil(4) > max {
            return Some(false);
        }
        if min <= bytes.div_ceil(4) && bytes <= max {
            return Some(true);
        }
        Some((min..=max).contains(&chars(text)))
    }

    fn json_type(&self) -> JsonType {
        match self.slot() {
            Slot::Null => JsonType::Null,
            Slot::Bool(_) => JsonType::Boolean,
            Slot::Num(_) => JsonType::Number,
            Slot::Str { .. } => JsonType::String,
            Slot::Arr { .. } => JsonType::Array,
            Slot::Obj { .. } => JsonType::Object,
        }
    }

    fn equals_value(&self, expected: &Value) -> bool {
        // Scalars without building a `Value` (`enum` and `const` of strings are common).
        match (self.slot(), expected) {
            (Slot::Str { .. }, Value::String(s)) => self.doc.text(self.at) == s,
            (Slot::Str { .. }, _) => false,
            (Slot::Bool(b), Value::Bool(e)) => b == e,
            (Slot::Null, Value::Null) => true,
            (Slot::Num(n), Value::Number(e)) => jsonschema::json::cmp::equal_numbers(n, e),
            (Slot::Num(_) | Slot::Bool(_) | Slot::Null, _) => false,
            // Containers member by member (no `Value` built: an enum of arrays against a
            // large payload array costs its length check).
            (Slot::Arr { len, .. }, Value::Array(items)) => {
                *len as usize == items.len()
                    && self
                        .as_array()
                        .is_some_and(|a| a.elements().zip(items).all(|(x, e)| x.equals_value(e)))
            }
            (Slot::Obj { len, .. }, Value::Object(members)) => {
                *len as usize == members.len()
                    && self.as_object().is_some_and(|o| {
                        o.members()
                            .all(|(k, v)| members.get(k).is_some_and(|e| v.equals_value(e)))
                    })
            }
            (Slot::Arr { .. } | Slot::Obj { .. }, _) => false,
        }
    }

    fn to_value(&self) -> Cow<'a, Value> {
        Cow::Owned(match self.slot() {
            Slot::Null => Value::Null,
            Slot::Bool(b) => Value::Bool(*b),
            Slot::Num(n) => Value::Number(n.clone()),
            Slot::Str { .. } => Value::String(self.doc.text(self.at).to_string()),
            Slot::Arr { .. } => Value::Array(
                self.as_array()
                    .into_iter()
                    .flat_map(|a| a.elements())
                    .map(|e| e.to_value().into_owned())
                    .collect(),
            ),
            Slot::Obj { .. } => Value::Object(
                self.as_object()
                    .into_iter()
                    .flat_map(|o| o.members())
                    .map(|(k, v)| (k.to_string(), v.to_value().into_owned()))
                    .collect(),
            ),
        })
    }

    fn identity(&self) -> Option<NodeIdentity> {
        let doc = std::ptr::from_ref::<Doc<'a>>(self.doc) as usize;
        Some(NodeIdentity::tagged(doc, u32::try_from(self.at).ok()?))
    }
}

/// An object of a read tape.
#[derive(Clone, Debug)]
pub struct TapeObject<'a> {
    doc: &'a Doc<'a>,
    at: usize,
    len: usize,
    /// Where the last lookup ended (member index, key slot): schemas list properties in the
    /// order payloads usually have them, so the next lookup starts there.
    hint: std::cell::Cell<(usize, usize)>,
}

/// Its members in document order.
#[derive(Debug)]
pub struct Members<'a> {
    doc: &'a Doc<'a>,
    next: usize,
    left: usize,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a str, TapeNode<'a>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let (key, value) = (self.next, self.next + 1);
        self.next = self.doc.after(value);
        Some((
            self.doc.text(key),
            TapeNode {
                doc: self.doc,
                at: value,
            },
        ))
    }
}

impl<'a> Object<'a, TapeJson> for TapeObject<'a> {
    type Node = TapeNode<'a>;
    type MemberName = &'a str;
    type MembersIter = Members<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, key: &(u32, String)) -> Option<TapeNode<'a>> {
        let (hash, name) = key;
        // From the hint to the end, then from the start: every member once.
        let (mut index, mut at) = self.hint.get();
        for _ in 0..self.len {
            if index == self.len {
                (index, at) = (0, self.at + 1);
            }
            let value = at + 1;
            let next = self.doc.after(value);
            if let Slot::Str { hash: h, .. } = self.doc.slot(at) {
                if h == hash && self.doc.text(at) == name {
                    self.hint.set((index + 1, next));
                    return Some(TapeNode {
                        doc: self.doc,
                        at: value,
                    });
                }
            }
            (index, at) = (index + 1, next);
        }
        None
    }

    fn members(&self) -> Members<'a> {
        Members {
            doc: self.doc,
            next: self.at + 1,
            left: self.len,
        }
    }
}

/// An array of a read tape.
#[derive(Clone, Copy, Debug)]
pub struct TapeArray<'a> {
    doc: &'a Doc<'a>,
    at: usize,
    len: usize,
}

/// Its elements in order.
#[derive(Debug)]
pub struct Elements<'a> {
    doc: &'a Doc<'a>,
    next: usize,
    left: usize,
}

impl<'a> Iterator for Elements<'a> {
    type Item = TapeNode<'a>;

    fn next(&mut self) -> Option<TapeNode<'a>> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let at = self.next;
        self.next = self.doc.after(at);
        Some(TapeNode { doc: self.doc, at })
    }
}

impl<'a> Array<'a, TapeJson> for TapeArray<'a> {
    type Node = TapeNode<'a>;
    type ElementsIter = Elements<'a>;

    fn len(&self) -> usize {
        self.len
    }

    fn elements(&self) -> Elements<'a> {
        Elements {
            doc: self.doc,
            next: self.at + 1,
            left: self.len,
        }
    }
}

/// Reads numbers the way the representation reports them (for tests).
#[cfg(test)]
pub fn number_of(payload: &str) -> Option<f64> {
    with_payload(payload.as_bytes(), |n| {
        n.as_number().and_then(|n| n.as_f64())
    })
    .flatten()
}

#[cfg(test)]
mod tests;
