//! AsyncAPI-defined topics (`asyncapi = FILE`): the document (`doc.rs`, its `$ref`s to
//! itself and to other files resolved by `refs.rs`) compiled once into
//! topic patterns with their parameter checks, who may publish or subscribe, and JSON Schema
//! validators of the payloads clients publish; checked on the shard that receives the
//! PUBLISH or SUBSCRIBE. Held by [`crate::auth::Auth`], so a SIGHUP reloads it with the
//! password and ACL files (a document that fails to load keeps the old settings).
//!
//! A topic belongs to the channel whose address has its shape (same number of levels, literal
//! levels equal; a `{parameter}` level is one whole level), the one with the most literal
//! levels if several do; its parameters must then satisfy their schemas. A payload is valid if it satisfies one of the channel's messages:
//! the MQTT 5 content type, when the publisher sets one, equals the message's `contentType`;
//! a payload format indicator of 1 means UTF-8; a JSON Schema (drafts 7 and 2020-12) applies
//! to the payload parsed as JSON when the message's content type is JSON or not given: valid
//! payloads are decided in one pass over the payload when the schema is a flat object schema
//! (`flat.rs`), else on a tape read from the payload (`tape.rs`), the rest through
//! `serde_json::Value`; a message with an Avro schema takes the payload as an Avro binary
//! datum (`avro.rs`). Refusals are counted per channel (shared by the shards, carried over a
//! reload). `kafka.rs` turns the document's Kafka bindings into the Kafka bridge's rules (read
//! at start by `Config::validate`).

mod avro;
pub mod doc;
pub mod flat;
pub mod kafka;
mod refs;
mod swar;
pub mod tape;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tape::TapeJson;

/// What a PUBLISH meets.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Valid,
    /// The topic matches no channel and `asyncapi_strict` is on (MQTT 5: 0x90).
    NoChannel,
    /// The topic has a channel's shape but a parameter fails its schema (MQTT 5: 0x90).
    BadParameter(String),
    /// The channel has no operation that lets clients publish (MQTT 5: 0x87).
    NotAllowed(String),
    /// The payload matches none of the channel's messages (MQTT 5: 0x99).
    Invalid(String),
}

/// What a SUBSCRIBE filter meets.
#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeVerdict {
    /// Allowed.
    Allowed,
    /// Matches no channel and `asyncapi_strict` is on (MQTT 5: 0x8F).
    NoChannel,
    /// It can match a channel clients may not subscribe to (MQTT 5: 0x87).
    NotAllowed,
}

#[derive(Debug)]
enum Level {
    Literal(String),
    /// A parameter: its name, its schema, and the same schema over the tape's string node
    /// (checked first: no allocation), checked before both by `quick` when the schema is one
    /// [`flat::Check`] takes.
    Param {
        name: String,
        schema: jsonschema::Validator,
        tape_schema: jsonschema::Validator<TapeJson>,
        quick: Option<Box<flat::Check>>,
    },
}

#[derive(Debug)]
struct Message {
    name: String,
    content_type: Option<String>,
    schema: Option<jsonschema::Validator>,
    /// The same schema over a payload read into a tape ([`tape`]): valid payloads are decided
    /// without building a `serde_json::Value`.
    tape_schema: Option<jsonschema::Validator<TapeJson>>,
    /// The same schema checked in one pass over the payload ([`flat`]), tried first, when it
    /// is a flat object schema.
    flat: Option<flat::Flat>,
    /// An Avro schema instead (`schema`, `tape_schema` and `flat` are None).
    avro: Option<avro::AvroSchema>,
}

#[derive(Debug)]
struct Channel {
    name: String,
    address: String,
    levels: Vec<Level>,
    /// How many of `levels` are literal (of two channels a topic fits, the one with more
    /// wins).
    literals: usize,
    /// Some parameter's schema can refuse a level (not every one takes any string: `{}`,
    /// `true`, annotations only, or a `type: string` with no checks): the topic's levels are
    /// looked at again once the channel is found.
    params_checked: bool,
    publish: bool,
    subscribe: bool,
    messages: Vec<Message>,
}

/// `topic` has the shape of `levels`: as many levels, the literal ones equal.
fn fits(levels: &[Level], topic: &str) -> bool {
    let mut rest = topic.as_bytes();
    let mut left = levels.len();
    for l in levels {
        left -= 1;
        let (level, more) = match rest.iter().position(|&b| b == b'/') {
            Some(slash) => (rest.get(..slash), rest.get(slash + 1..)),
            None => (Some(rest), None),
        };
        if let (Level::Literal(lit), Some(level)) = (l, level) {
            if !flat::same(lit.as_bytes(), level) {
                return false;
            }
        }
        match more {
            Some(more) if left > 0 => rest = more,
            Some(_) => return false,
            None => return left == 0,
        }
    }
    // A channel of no levels (none is compiled so).
    false
}

/// A compiled document.
#[derive(Debug)]
pub struct Api {
    version: String,
    channels: Vec<Channel>,
    strict: bool,
    /// PUBLISHes (and wills) refused per channel, then those matching no channel (strict);
    /// shared by the shards (a refusal is one relaxed add).
    refused: Vec<AtomicU64>,
}

/// A JSON Schema compiled for instances in representation `F` (`serde_json::Value`, or the
/// [`tape`]): draft 7 (AsyncAPI's schema dialect) unless `$schema` says which.
fn compile_for<F: jsonschema::json::Json>(
    schema: &Value,
    pointer: &str,
) -> Result<jsonschema::Validator<F>, String> {
    let options = jsonschema::options_for::<F>();
    let compiled = if schema.get("$schema").is_some() {
        options.build(schema)
    } else {
        options.with_draft(jsonschema::Draft::Draft7).build(schema)
    };
    compiled.map_err(|e| format!("{pointer}: invalid JSON Schema: {e}"))
}

/// [`compile_for`] `serde_json::Value`s.
fn compile(schema: &Value, pointer: &str) -> Result<jsonschema::Validator, String> {
    compile_for::<jsonschema::json::SerdeJson>(schema, pointer)
}

/// [`compile_for`] payloads read into a tape.
fn compile_fast(schema: &Value, pointer: &str) -> Result<jsonschema::Validator<TapeJson>, String> {
    compile_for::<TapeJson>(schema, pointer)
}

/// The media type of a content type (`application/json; charset=utf-8` -> `application/json`).
fn media_type(content_type: &str) -> &str {
    content_type.split(';').next().unwrap_or("").trim()
}

/// A JSON media type: `application/json`, `text/json` or a `+json` suffix.
fn is_json(media: &str) -> bool {
    let m = media.to_ascii_lowercase();
    m == "application/json" || m == "text/json" || m.ends_with("+json")
}

/// A reason string kept short: within a PUBACK and any client's maximum packet size.
const REASON_BYTES_MAX: usize = 256;

fn shorten(mut why: String) -> String {
    if why.len() > REASON_BYTES_MAX {
        let mut end = REASON_BYTES_MAX - 3;
        while !why.is_char_boundary(end) {
            end -= 1;
        }
        why.truncate(end);
        why.push_str("...");
    }
    why
}

impl Api {
    /// Reads and compiles the document at `path`.
    pub fn load(path: &Path, strict: bool) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("config key `asyncapi`: {}: {e}", path.display()))?;
        Self::from_spec(doc::parse_at(&text, Some(path)), strict)
            .map_err(|e| anyhow::anyhow!("config key `asyncapi`: {}: {e}", path.display()))
    }

    /// Compiles a document's text (local `$ref`s only).
    pub fn from_text(text: &str, strict: bool) -> Result<Self, String> {
        Self::from_spec(doc::parse(text), strict)
    }

    /// Compiles a parsed document.
    fn from_spec(spec: Result<doc::Spec, String>, strict: bool) -> Result<Self, String> {
        let spec = spec?;
        let mut channels = Vec::new();
        for c in spec.channels {
            let mut levels = Vec::new();
            for level in c.address.split('/') {
                match level.strip_prefix('{').and_then(|l| l.strip_suffix('}')) {
                    Some(name) => {
                        let schema = c
                            .parameters
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(serde_json::json!({ "type": "string" }), |(_, s)| s.clone());
                        let pointer = format!("/channels/{}/parameters/{name}", c.name);
                        levels.push(Level::Param {
                            name: name.to_string(),
                            schema: compile(&schema, &pointer)?,
                            tape_schema: compile_fast(&schema, &pointer)?,
                            quick: flat::Check::compile(&schema).map(Box::new),
                        });
                    }
                    None if level.contains(['{', '}', '+', '#']) => {
                        return Err(format!(
                            "/channels/{}: address level `{level}`: a parameter must be a whole level, and + and # are not topic characters",
                            c.name
                        ))
                    }
                    None => levels.push(Level::Literal(level.to_string())),
                }
            }
            let mut messages = Vec::new();
            for m in c.messages {
                if m.avro {
                    if let Some(ct) = m.content_type.as_deref().filter(|t| is_json(media_type(t))) {
                        return Err(format!(
                            "{}: an Avro schema for content type {ct}: Avro's JSON encoding is not validated (binary datums are)",
                            m.pointer
                        ));
                    }
                    let avro = m
                        .schema
                        .as_ref()
                        .map(|s| avro::AvroSchema::compile(s, &m.pointer))
                        .transpose()?;
                    messages.push(Message {
                        name: m.name,
                        content_type: m.content_type,
                        schema: None,
                        tape_schema: None,
                        flat: None,
                        avro,
                    });
                    continue;
                }
                let json = m.schema.as_ref();
                messages.push(Message {
                    schema: json.map(|s| compile(s, &m.pointer)).transpose()?,
                    tape_schema: json.map(|s| compile_fast(s, &m.pointer)).transpose()?,
                    flat: json.and_then(flat::Flat::compile),
                    avro: None,
                    name: m.name,
                    content_type: m.content_type,
                });
            }
            channels.push(Channel {
                name: c.name,
                address: c.address,
                literals: levels
                    .iter()
                    .filter(|l| matches!(l, Level::Literal(_)))
                    .count(),
                params_checked: levels.iter().any(|l| {
                    matches!(l, Level::Param { quick, .. }
                        if !quick.as_ref().is_some_and(|q| q.takes_every_level()))
                }),
                levels,
                publish: c.publish,
                subscribe: c.subscribe,
                messages,
            });
        }
        Ok(Self {
            version: spec.version,
            refused: (0..=channels.len()).map(|_| AtomicU64::new(0)).collect(),
            channels,
            strict,
        })
    }

    /// A line for the log: version, channels, strictness.
    pub fn describe(&self) -> String {
        format!(
            "AsyncAPI {} with {} channels{}",
            self.version,
            self.channels.len(),
            if self.strict { ", strict" } else { "" }
        )
    }

    /// The topic map, one line per channel (`ringmq asyncapi check`).
    pub fn topic_map(&self) -> String {
        let mut s = String::new();
        for c in &self.channels {
            let pattern: Vec<String> = c
                .levels
                .iter()
                .map(|l| match l {
                    Level::Literal(t) => t.clone(),
                    Level::Param { .. } => "+".to_string(),
                })
                .collect();
            let who = match (c.publish, c.subscribe) {
                (true, true) => "publish, subscribe",
                (true, false) => "publish",
                (false, true) => "subscribe",
                (false, false) => "none",
            };
            let messages: Vec<String> = c
                .messages
                .iter()
                .map(|m| {
                    format!(
                        "{}{}{}",
                        m.name,
                        m.content_type
                            .as_deref()
                            .map(|t| format!(" ({t})"))
                            .unwrap_or_default(),
                        match (&m.schema, &m.flat, &m.avro) {
                            (Some(_), Some(_), _) => " [schema, one pass]",
                            (Some(_), None, _) => " [schema]",
                            (_, _, Some(_)) => " [Avro schema]",
                            _ => "",
                        }
                    )
                })
                .collect();
            s += &format!(
                "{}  topic {}  clients may: {who}  messages: {}\n",
                c.address,
                pattern.join("/"),
                if messages.is_empty() {
                    "any".to_string()
                } else {
                    messages.join(", ")
                }
            );
        }
        s
    }

    /// The channel a topic has the shape of, with its parameter verdict.
    fn channel_of(&self, topic: &str) -> Option<(usize, &Channel, Result<(), String>)> {
        // Of the channels with the topic's shape, the one with the most literal levels (the
        // last of equals).
        let mut best: Option<(usize, &Channel)> = None;
        for (i, c) in self.channels.iter().enumerate() {
            if best.is_some_and(|(_, b)| c.literals < b.literals) {
                continue;
            }
            if fits(&c.levels, topic) {
                best = Some((i, c));
            }
        }
        let (at, c) = best?;
        if !c.params_checked {
            return Some((at, c, Ok(())));
        }
        for (l, t) in c.levels.iter().zip(topic.split('/')) {
            if let Level::Param {
                name,
                schema: v,
                tape_schema,
                quick,
            } = l
            {
                if quick.as_ref().is_some_and(|q| q.accepts_level(t)) {
                    continue;
                }
                // The level as a string on the tape (no allocation).
                if tape::with_str(t, |level| tape_schema.is_valid(level)) == Some(true) {
                    continue;
                }
                let level = Value::String(t.to_string());
                // A level is text; a parameter typed as a number or boolean gets it parsed.
                let parsed = serde_json::from_str::<Value>(t)
                    .ok()
                    .filter(|p| p.is_number() || p.is_boolean());
                if !v.is_valid(&level) && !parsed.is_some_and(|p| v.is_valid(&p)) {
                    let why = v
                        .iter_errors(&level)
                        .next()
                        .map(|e| e.to_string())
                        .unwrap_or_default();
                    return Some((at, c, Err(format!("topic level {name} = {t:?}: {why}"))));
                }
            }
        }
        Some((at, c, Ok(())))
    }

    /// Checks a PUBLISH: its topic, the publisher's content type and payload format
    /// indicator (MQTT 5), and its payload.
    pub fn check_publish(
        &self,
        topic: &str,
        payload: &[u8],
        content_type: Option<&str>,
        utf8: bool,
    ) -> Verdict {
        let (at, verdict) = self.verdict(topic, payload, content_type, utf8);
        if verdict != Verdict::Valid {
            let counter = at.map_or(self.channels.len(), |i| i);
            if let Some(n) = self.refused.get(counter) {
                n.fetch_add(1, Ordering::Relaxed);
            }
        }
        verdict
    }

    /// Refusals so far per channel name, then `(None, n)` for topics matching no channel.
    pub fn refusals(&self) -> Vec<(Option<&str>, u64)> {
        let names = self.channels.iter().map(|c| Some(c.name.as_str()));
        names
            .chain(std::iter::once(None))
            .zip(&self.refused)
            .map(|(name, n)| (name, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// Carries the counts of a document this one replaces (SIGHUP), by channel name.
    pub fn carry_counts(&self, old: &Api) {
        for (name, n) in old.refusals() {
            let at = match name {
                Some(name) => self.channels.iter().position(|c| c.name == name),
                None => Some(self.channels.len()),
            };
            if let Some(counter) = at.and_then(|i| self.refused.get(i)) {
                counter.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The verdict and the index of the channel it concerns (None: no channel).
    fn verdict(
        &self,
        topic: &str,
        payload: &[u8],
        content_type: Option<&str>,
        utf8: bool,
    ) -> (Option<usize>, Verdict) {
        let Some((at, c, params)) = self.channel_of(topic) else {
            let v = if self.strict {
                Verdict::NoChannel
            } else {
                Verdict::Valid
            };
            return (None, v);
        };
        (
            Some(at),
            self.channel_verdict(c, params, payload, content_type, utf8),
        )
    }

    fn channel_verdict(
        &self,
        c: &Channel,
        params: Result<(), String>,
        payload: &[u8],
        content_type: Option<&str>,
        utf8: bool,
    ) -> Verdict {
        if let Err(why) = params {
            return Verdict::BadParameter(shorten(format!("channel {}: {why}", c.name)));
        }
        if !c.publish {
            return Verdict::NotAllowed(format!(
                "channel {} has no operation clients publish with",
                c.name
            ));
        }
        if utf8 && std::str::from_utf8(payload).is_err() {
            return Verdict::Invalid(format!(
                "channel {}: payload format indicator says UTF-8, the payload is not",
                c.name
            ));
        }
        if c.messages.is_empty() {
            return Verdict::Valid;
        }
        let mut first_failure = None;
        let mut parsed: Option<Result<Value, String>> = None;
        let mut unread = false;
        for m in &c.messages {
            if let (Some(theirs), Some(ours)) = (content_type, m.content_type.as_deref()) {
                if !media_type(theirs).eq_ignore_ascii_case(media_type(ours)) {
                    first_failure.get_or_insert_with(|| {
                        format!("message {}: content type {theirs}, expected {ours}", m.name)
                    });
                    continue;
                }
            }
            if let Some(schema) = &m.avro {
                match schema.check(payload) {
                    Ok(()) => return Verdict::Valid,
                    Err(why) => {
                        first_failure.get_or_insert_with(|| {
                            format!("message {}: not an Avro datum of its schema: {why}", m.name)
                        });
                        continue;
                    }
                }
            }
            // A schema applies to JSON payloads (no content type, or a JSON one).
            let json = m
                .content_type
                .as_deref()
                .is_none_or(|t| is_json(media_type(t)));
            let Some(schema) = m.schema.as_ref().filter(|_| json) else {
                return Verdict::Valid;
            };
            // A valid payload is decided in one pass or on the tape; anything else (invalid,
            // or not read by either) goes through `serde_json::Value`, which also words the
            // reason.
            if m.flat.as_ref().is_some_and(|f| f.accepts(payload)) {
                return Verdict::Valid;
            }
            if let Some(tape_schema) = m.tape_schema.as_ref().filter(|_| !unread) {
                match tape::with_payload(payload, |root| tape_schema.is_valid(root)) {
                    Some(true) => return Verdict::Valid,
                    Some(false) => {}
                    // Not for the tape: not read again for the channel's other messages.
                    None => unread = true,
                }
            }
            let value = parsed.get_or_insert_with(|| {
                serde_json::from_slice::<Value>(payload)
                    .map_err(|e| format!("payload is not JSON: {e}"))
            });
            match value {
                // The fast check first; the errors (for the reason string) only on failure.
                Ok(v) if schema.is_valid(v) => return Verdict::Valid,
                Ok(v) => match schema.iter_errors(v).next() {
                    None => return Verdict::Valid,
                    Some(e) => {
                        first_failure.get_or_insert_with(|| {
                            format!(
                                "message {}: {e} at {} (schema {})",
                                m.name,
                                e.instance_path(),
                                e.schema_path()
                            )
                        });
                    }
                },
                Err(why) => {
                    first_failure.get_or_insert_with(|| format!("message {}: {why}", m.name));
                }
            }
        }
        Verdict::Invalid(shorten(format!(
            "channel {}: {}",
            c.name,
            first_failure.unwrap_or_default()
        )))
    }

    /// [`Api::check_publish`] with the content type and payload format indicator taken from
    /// a PUBLISH's (or a will's) MQTT 5 properties.
    pub fn check_message(
        &self,
        topic: &str,
        payload: &[u8],
        properties: &net::codec::Properties,
    ) -> Verdict {
        self.check_publish(
            topic,
            payload,
            properties.content_type.as_deref(),
            properties.payload_format_indicator == Some(true),
        )
    }

    /// Checks a SUBSCRIBE filter against the channels it can match: every one of them must
    /// let clients subscribe (messages are not checked again on delivery, so `#` is refused
    /// while any channel is publish-only); in strict mode it must match one.
    pub fn check_subscribe(&self, filter_text: &str) -> SubscribeVerdict {
        let f: Vec<&str> = filter_text.split('/').collect();
        let mut matched = false;
        for c in &self.channels {
            if intersects(&f, &c.levels) {
                if !c.subscribe {
                    return SubscribeVerdict::NotAllowed;
                }
                matched = true;
            }
        }
        // `$SYS/...` and other `$` filters are the broker's, not the document's.
        if matched || !self.strict || filter_text.starts_with('$') {
            SubscribeVerdict::Allowed
        } else {
            SubscribeVerdict::NoChannel
        }
    }
}

/// True when some topic matches both the filter and the channel's shape.
fn intersects(filter_levels: &[&str], channel: &[Level]) -> bool {
    for (i, f) in filter_levels.iter().enumerate() {
        if *f == "#" {
            return true;
        }
        let Some(level) = channel.get(i) else {
            return false;
        };
        let ok = match level {
            Level::Param { .. } => true,
            Level::Literal(lit) => *f == "+" || f == lit,
        };
        if !ok {
            return false;
        }
    }
    filter_levels.len() == channel.len()
}

#[cfg(test)]
mod tests;
