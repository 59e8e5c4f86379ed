//! Avro payload schemas (`schemaFormat: application/vnd.apache.avro[+json|+yaml];version=...`):
//! the schema compiled once into a tree ([`AvroSchema`]; named types expanded where they are
//! referenced, recursive types refused, nesting at most [`DEPTH_MAX`] and [`NODES_MAX`] nodes
//! in all, counted after expansion; fields that take no bytes dropped), and a payload checked
//! as one Avro binary datum of it ([`AvroSchema::check`]): the
//! binary encoding of the Avro specification with no container-file header and no schema id
//! in front, every byte read, every value in range (ints and enum indexes as 5-byte varints
//! within 32 bits, union indexes, UTF-8 strings, lengths and block counts within the
//! payload), nothing allocated. Logical types are checked as the type they annotate.

use std::collections::HashMap;

use serde_json::{Map, Value};

/// Nesting of a schema (records, arrays, maps, unions) the broker compiles.
const DEPTH_MAX: usize = 64;

/// Nodes of a compiled schema, named types expanded (bounds what references can multiply).
const NODES_MAX: usize = 10_000;

/// A compiled Avro schema.
#[derive(Debug, Clone)]
pub struct AvroSchema {
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    Str,
    Fixed(usize),
    /// The number of symbols.
    Enum(usize),
    /// Items, and whether they take no bytes at all (then a block's count is not walked).
    Array(Box<Node>, bool),
    Map(Box<Node>),
    Union(Vec<Node>),
    /// Field names and types, in order.
    Record(Vec<(String, Node)>),
}

impl Node {
    /// Encodes in no bytes whatever its value (null, fixed 0, a record of such).
    fn empty(&self) -> bool {
        match self {
            Node::Null => true,
            Node::Fixed(n) => *n == 0,
            Node::Record(fields) => fields.iter().all(|(_, f)| f.empty()),
            _ => false,
        }
    }
}

/// Compiling: named types defined so far, those being defined, nodes made.
struct Compiler {
    named: HashMap<String, Node>,
    defining: Vec<String>,
    nodes: usize,
}

fn primitive(name: &str) -> Option<Node> {
    Some(match name {
        "null" => Node::Null,
        "boolean" => Node::Boolean,
        "int" => Node::Int,
        "long" => Node::Long,
        "float" => Node::Float,
        "double" => Node::Double,
        "bytes" => Node::Bytes,
        "string" => Node::Str,
        _ => return None,
    })
}

/// A name's full name in `namespace`.
fn full_name(name: &str, namespace: Option<&str>) -> String {
    match namespace {
        Some(ns) if !name.contains('.') && !ns.is_empty() => format!("{ns}.{name}"),
        _ => name.to_string(),
    }
}

impl AvroSchema {
    /// Compiles the schema at `pointer` of the document (errors name the pointer).
    pub fn compile(schema: &Value, pointer: &str) -> Result<Self, String> {
        let mut c = Compiler {
            named: HashMap::new(),
            defining: Vec::new(),
            nodes: 0,
        };
        let root = c.node(schema, None, pointer, 0)?;
        Ok(Self { root })
    }

    /// The payload is one datum of the schema; otherwise why not.
    pub fn check(&self, payload: &[u8]) -> Result<(), String> {
        let mut r = Datum { b: payload, pos: 0 };
        r.value(&self.root)?;
        match payload.len() - r.pos {
            0 => Ok(()),
            1 => Err("1 byte after the datum".to_string()),
            n => Err(format!("{n} bytes after the datum")),
        }
    }
}

impl Compiler {
    fn node(
        &mut self,
        v: &Value,
        namespace: Option<&str>,
        pointer: &str,
        depth: usize,
    ) -> Result<Node, String> {
        if depth > DEPTH_MAX {
            return Err(format!("{pointer}: nested deeper than {DEPTH_MAX}"));
        }
        self.nodes += 1;
        if self.nodes > NODES_MAX {
            return Err(format!(
                "{pointer}: more than {NODES_MAX} types once named types are expanded"
            ));
        }
        match v {
            Value::String(name) => self.reference(name, namespace, pointer, depth),
            Value::Array(variants) => {
                let mut out = Vec::new();
                for (i, variant) in variants.iter().enumerate() {
                    let at = format!("{pointer}/{i}");
                    if variant.is_array() {
                        return Err(format!("{at}: a union cannot hold a union"));
                    }
                    out.push(self.node(variant, namespace, &at, depth + 1)?);
                }
                if out.is_empty() {
                    return Err(format!("{pointer}: an empty union"));
                }
                Ok(Node::Union(out))
            }
            Value::Object(map) => self.complex(map, namespace, pointer, depth),
            _ => Err(format!(
                "{pointer}: an Avro schema is a type name, an object or a union"
            )),
        }
    }

    /// A type written by name: a primitive or a named type defined before.
    fn reference(
        &mut self,
        name: &str,
        namespace: Option<&str>,
        pointer: &str,
        depth: usize,
    ) -> Result<Node, String> {
        if let Some(p) = primitive(name) {
            return Ok(p);
        }
        let full = full_name(name, namespace);
        for candidate in [full.as_str(), name] {
            if self.defining.iter().any(|d| d == candidate) {
                return Err(format!(
                    "{pointer}: `{name}` refers to itself (recursive Avro types are not validated: a payload could nest them without bound)"
                ));
            }
            if let Some(node) = self.named.get(candidate) {
                let node = node.clone();
                if depth + height(&node) > DEPTH_MAX {
                    return Err(format!(
                        "{pointer}: nested deeper than {DEPTH_MAX} once `{name}` is expanded"
                    ));
                }
                self.nodes += count(&node);
                if self.nodes > NODES_MAX {
                    return Err(format!(
                        "{pointer}: more than {NODES_MAX} types once named types are expanded"
                    ));
                }
                return Ok(node);
            }
        }
        Err(format!(
            "{pointer}: unknown type `{name}` (a named type must be defined before it is used)"
        ))
    }

    fn complex(
        &mut self,
        map: &Map<String, Value>,
        namespace: Option<&str>,
        pointer: &str,
        depth: usize,
    ) -> Result<Node, String> {
        let kind = match map.get("type") {
            Some(Value::String(kind)) => kind.as_str(),
            // `{"type": {...}}` or `{"type": [...]}`: the inner schema.
            Some(inner) => {
                return self.node(inner, namespace, &format!("{pointer}/type"), depth + 1)
            }
            None => return Err(format!("{pointer}/type: missing")),
        };
        let text = |key: &str| -> Result<&str, String> {
            map.get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{pointer}/{key}: a string is required"))
        };
        match kind {
            "record" | "error" | "enum" | "fixed" => {
                // Only named types have a namespace of their own.
                let own_namespace = map.get("namespace").and_then(Value::as_str).or(namespace);
                let name = text("name")?;
                let full = full_name(name, own_namespace);
                let inner_namespace = full.rsplit_once('.').map(|(ns, _)| ns.to_string());
                self.defining.push(full.clone());
                let node = match kind {
                    "enum" => {
                        let symbols = map
                            .get("symbols")
                            .and_then(Value::as_array)
                            .filter(|s| !s.is_empty() && s.iter().all(Value::is_string))
                            .ok_or_else(|| {
                                format!("{pointer}/symbols: a non-empty list of names")
                            })?;
                        Ok(Node::Enum(symbols.len()))
                    }
                    "fixed" => map
                        .get("size")
                        .and_then(Value::as_u64)
                        .and_then(|n| usize::try_from(n).ok())
                        .map(Node::Fixed)
                        .ok_or_else(|| format!("{pointer}/size: a non-negative integer")),
                    _ => self.fields(map, inner_namespace.as_deref(), pointer, depth),
                };
                self.defining.pop();
                let node = node?;
                if self.named.insert(full.clone(), node.clone()).is_some() {
                    return Err(format!("{pointer}/name: `{full}` is defined twice"));
                }
                Ok(node)
            }
            "array" => {
                let at = format!("{pointer}/items");
                let items = map.get("items").ok_or_else(|| format!("{at}: missing"))?;
                let items = self.node(items, namespace, &at, depth + 1)?;
                let empty = items.empty();
                Ok(Node::Array(Box::new(items), empty))
            }
            "map" => {
                let at = format!("{pointer}/values");
                let values = map.get("values").ok_or_else(|| format!("{at}: missing"))?;
                Ok(Node::Map(Box::new(self.node(
                    values,
                    namespace,
                    &at,
                    depth + 1,
                )?)))
            }
            // A primitive with attributes (a logical type: checked as the type it annotates),
            // or a named type.
            name => match primitive(name) {
                Some(p) => Ok(p),
                None => self.reference(name, namespace, &format!("{pointer}/type"), depth),
            },
        }
    }

    fn fields(
        &mut self,
        map: &Map<String, Value>,
        namespace: Option<&str>,
        pointer: &str,
        depth: usize,
    ) -> Result<Node, String> {
        let fields = map
            .get("fields")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{pointer}/fields: a list of fields"))?;
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            let at = format!("{pointer}/fields/{i}");
            let name = f
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{at}/name: a string is required"))?;
            let kind = f.get("type").ok_or_else(|| format!("{at}/type: missing"))?;
            let node = self.node(kind, namespace, &format!("{at}/type"), depth + 1)?;
            // A field of no bytes cannot fail: not walked for each datum.
            if !node.empty() {
                out.push((name.to_string(), node));
            }
        }
        // A record of no bytes is as cheap to check as a null.
        Ok(if out.is_empty() {
            Node::Null
        } else {
            Node::Record(out)
        })
    }
}

/// Levels of a compiled tree.
fn height(node: &Node) -> usize {
    1 + match node {
        Node::Array(n, _) | Node::Map(n) => height(n),
        Node::Union(v) => v.iter().map(height).max().unwrap_or(0),
        Node::Record(f) => f.iter().map(|(_, n)| height(n)).max().unwrap_or(0),
        _ => 0,
    }
}

/// Nodes in a compiled tree.
fn count(node: &Node) -> usize {
    1 + match node {
        Node::Array(n, _) | Node::Map(n) => count(n),
        Node::Union(v) => v.iter().map(count).sum(),
        Node::Record(f) => f.iter().map(|(_, n)| count(n)).sum(),
        _ => 0,
    }
}

/// A payload being checked.
struct Datum<'p> {
    b: &'p [u8],
    pos: usize,
}

impl Datum<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|end| *end <= self.b.len())
            .ok_or_else(|| format!("{n} bytes needed, {} left", self.b.len() - self.pos))?;
        let bytes = self.b.get(self.pos..end).unwrap_or_default();
        self.pos = end;
        Ok(bytes)
    }

    /// A zig-zag varint `long`.
    fn long(&mut self) -> Result<i64, String> {
        self.varint(10)
    }

    /// A zig-zag varint `int`: at most 5 bytes, within 32 bits.
    fn int(&mut self) -> Result<i32, String> {
        let n = self.varint(5)?;
        i32::try_from(n).map_err(|_| format!("int {n} out of range"))
    }

    /// A zig-zag varint of at most `bytes` bytes (10: a long, whose 10th byte holds bit 63).
    fn varint(&mut self, bytes: usize) -> Result<i64, String> {
        let mut n: u64 = 0;
        for i in 0..bytes {
            let byte = *self.take(1)?.first().unwrap_or(&0);
            n |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                if i == 9 && byte > 1 {
                    break;
                }
                return Ok((n >> 1) as i64 ^ -((n & 1) as i64));
            }
        }
        Err(format!("a varint over {bytes} bytes or past 64 bits"))
    }

    /// A length: a `long` from 0 to what is left of the payload.
    fn length(&mut self) -> Result<usize, String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("a negative length {n}"))?;
        if n > self.b.len() - self.pos {
            return Err(format!("length {n} past the payload's end"));
        }
        Ok(n)
    }

    fn value(&mut self, node: &Node) -> Result<(), String> {
        match node {
            Node::Null => Ok(()),
            Node::Boolean => match self.take(1)? {
                [0 | 1] => Ok(()),
                _ => Err("a boolean that is not 0 or 1".to_string()),
            },
            Node::Int => self.int().map(|_| ()),
            Node::Long => self.long().map(|_| ()),
            Node::Float => self.take(4).map(|_| ()),
            Node::Double => self.take(8).map(|_| ()),
            Node::Bytes => {
                let n = self.length()?;
                self.take(n).map(|_| ())
            }
            Node::Str => {
                let n = self.length()?;
                std::str::from_utf8(self.take(n)?)
                    .map(|_| ())
                    .map_err(|_| "a string that is not UTF-8".to_string())
            }
            Node::Fixed(n) => self.take(*n).map(|_| ()),
            Node::Enum(symbols) => {
                let i = self.int()?;
                usize::try_from(i)
                    .ok()
                    .filter(|i| i < symbols)
                    .map(|_| ())
                    .ok_or_else(|| format!("enum index {i} of {symbols} symbols"))
            }
            Node::Union(variants) => {
                let i = self.long()?;
                let variant = usize::try_from(i)
                    .ok()
                    .and_then(|i| variants.get(i))
                    .ok_or_else(|| format!("union index {i} of {} types", variants.len()))?;
                self.value(variant)
            }
            Node::Record(fields) => {
                for (name, f) in fields {
                    self.value(f).map_err(|e| format!("field {name}: {e}"))?;
                }
                Ok(())
            }
            Node::Array(items, empty) => self.blocks(|d| d.value(items), *empty),
            Node::Map(values) => self.blocks(
                |d| {
                    d.value(&Node::Str)?;
                    d.value(values)
                },
                false,
            ),
        }
    }

    /// An array's or map's blocks: a count (negative: its size in bytes follows), the items,
    /// until a count of 0. A count is at most what is left of the payload (each item takes a
    /// byte at least, unless `empty`: such items are not walked).
    fn blocks(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
        empty: bool,
    ) -> Result<(), String> {
        loop {
            let count = self.long()?;
            if count == 0 {
                return Ok(());
            }
            if count < 0 {
                let size = self.length()?;
                if empty && size != 0 {
                    return Err(format!("a block of items of no bytes says {size} bytes"));
                }
            }
            // Items of no bytes too: a count past what is left is refused (a reader building
            // the array would hang or run out of memory on it).
            let count = count.unsigned_abs();
            if count > (self.b.len() - self.pos) as u64 {
                return Err(format!("{count} items past the payload's end"));
            }
            if empty {
                continue;
            }
            for _ in 0..count {
                item(self)?;
            }
        }
    }
}

#[cfg(test)]
mod tests;
